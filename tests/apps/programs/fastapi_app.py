"""A FastAPI application, served by uvicorn.

    uvicorn fastapi_app:app --host HOST --port PORT     (the console script)
    python fastapi_app.py HOST PORT                     (uvicorn from a program)
"""
import asyncio
import hashlib
import sys

import uvicorn
from fastapi import FastAPI, Request, Response

app = FastAPI()


@app.get("/bytes/{n}")
async def data(n: int) -> Response:
    block = b"".join(hashlib.sha256(b"%d" % i).digest() for i in range(2048))   # 64 KB
    return Response((block * (n // len(block) + 1))[:n], media_type="application/octet-stream")


@app.get("/client")
async def client(request: Request) -> dict:
    return {"client": request.client.host, "server": request.scope["server"][0]}


if __name__ == "__main__":
    config = uvicorn.Config(app, host=sys.argv[1], port=int(sys.argv[2]))
    asyncio.run(uvicorn.Server(config).serve())
