"""Fetch URLs with httpx (anyio underneath; one client, so one kept-alive connection) and
say where each went.

    python httpx_get.py [--cafile FILE] URL [URL...]
"""
import asyncio
import hashlib
import json
import ssl
import sys

import httpx


async def main(urls: list, cafile: str = None) -> None:
    out = {"responses": []}
    verify = ssl.create_default_context(cafile=cafile) if cafile else True
    async with httpx.AsyncClient(verify=verify) as client:
        for url in urls:
            resp = await client.get(url)
            stream = resp.extensions["network_stream"]
            is_json = resp.headers.get("content-type") == "application/json"
            out["responses"].append({
                "status": resp.status_code, "bytes": len(resp.content),
                "sha256": hashlib.sha256(resp.content).hexdigest(),
                "json": resp.json() if is_json else None,
                "server_addr": list(stream.get_extra_info("server_addr"))[:2],
                "client_addr": list(stream.get_extra_info("client_addr"))[:2],
                "tls": stream.get_extra_info("ssl_object").version()
                if url.startswith("https:") else None})
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "--cafile":
        asyncio.run(main(sys.argv[3:], sys.argv[2]))
    else:
        asyncio.run(main(sys.argv[1:]))
