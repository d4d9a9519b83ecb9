"""A FastAPI application, served by uvicorn.

    uvicorn fastapi_app:app --host HOST --port PORT     (the console script)
    python fastapi_app.py HOST PORT [CERT KEY]          (uvicorn from a program; HTTPS with
                                                        a certificate and key)
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
    tls = dict(ssl_certfile=sys.argv[3], ssl_keyfile=sys.argv[4]) if len(sys.argv) > 4 else {}
    config = uvicorn.Config(app, host=sys.argv[1], port=int(sys.argv[2]), **tls)
    asyncio.run(uvicorn.Server(config).serve())
