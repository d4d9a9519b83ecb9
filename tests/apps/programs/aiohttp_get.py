"""Fetch URLs with aiohttp's client (one session, so one kept-alive connection; put a
large body first).

    python aiohttp_get.py [--cafile FILE] URL [URL...]
"""
import asyncio
import hashlib
import json
import ssl
import sys

import aiohttp


async def main(urls: list, cafile: str = None) -> None:
    out = {"responses": []}
    transport = None
    context = ssl.create_default_context(cafile=cafile) if cafile else None
    async with aiohttp.ClientSession() as session:
        for url in urls:
            async with session.get(url, ssl=context) as resp:
                if resp.connection is not None:   # None once a short body is all read
                    transport = resp.connection.transport
                session_id = transport.get_extra_info("tcpcrypt_session_id")
                body = await resp.read()
                out["responses"].append({
                    "status": resp.status, "bytes": len(body),
                    "sha256": hashlib.sha256(body).hexdigest(),
                    "json": json.loads(body) if resp.content_type == "application/json" else None,
                    "peername": list(transport.get_extra_info("peername"))[:2],
                    "session_id": session_id.hex() if session_id else None,
                    "tls": transport.get_extra_info("ssl_object").version()
                    if url.startswith("https:") else None})
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "--cafile":
        asyncio.run(main(sys.argv[3:], sys.argv[2]))
    else:
        asyncio.run(main(sys.argv[1:]))
