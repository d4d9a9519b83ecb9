"""Fetch URLs with httpx (anyio underneath; one client, so one kept-alive connection) and
say where each went.

    python httpx_get.py URL [URL...]
"""
import asyncio
import hashlib
import json
import sys

import httpx


async def main(urls: list) -> None:
    out = {"responses": []}
    async with httpx.AsyncClient() as client:
        for url in urls:
            resp = await client.get(url)
            stream = resp.extensions["network_stream"]
            is_json = resp.headers.get("content-type") == "application/json"
            out["responses"].append({
                "status": resp.status_code, "bytes": len(resp.content),
                "sha256": hashlib.sha256(resp.content).hexdigest(),
                "json": resp.json() if is_json else None,
                "server_addr": list(stream.get_extra_info("server_addr"))[:2],
                "client_addr": list(stream.get_extra_info("client_addr"))[:2]})
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
