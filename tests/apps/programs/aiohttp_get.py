"""Fetch URLs with aiohttp's client (one session, so one kept-alive connection; put a
large body first).

    python aiohttp_get.py URL [URL...]
"""
import asyncio
import hashlib
import json
import sys

import aiohttp


async def main(urls: list) -> None:
    out = {"responses": []}
    transport = None
    async with aiohttp.ClientSession() as session:
        for url in urls:
            async with session.get(url) as resp:
                if resp.connection is not None:   # None once a short body is all read
                    transport = resp.connection.transport
                session_id = transport.get_extra_info("tcpcrypt_session_id")
                body = await resp.read()
                out["responses"].append({
                    "status": resp.status, "bytes": len(body),
                    "sha256": hashlib.sha256(body).hexdigest(),
                    "json": json.loads(body) if resp.content_type == "application/json" else None,
                    "peername": list(transport.get_extra_info("peername"))[:2],
                    "session_id": session_id.hex() if session_id else None})
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
