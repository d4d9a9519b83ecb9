"""Send messages to a websockets echo server and check they come back.

    python websockets_client.py URI [COUNT]
"""
import asyncio
import hashlib
import json
import sys

from websockets.asyncio.client import connect


async def main(uri: str, count: int) -> None:
    async with connect(uri, max_size=2**22) as ws:
        server_says = await ws.recv()
        mine = ws.transport.get_extra_info("tcpcrypt_session_id")
        sent, got = hashlib.sha256(), hashlib.sha256()
        for i in range(count):
            message = hashlib.sha256(b"%d" % i).digest() * (1 + 1000 * i)   # up to ~1 MB
            await ws.send(message)
            sent.update(message)
            got.update(await ws.recv())
    print(json.dumps({"messages": count, "echo_ok": sent.digest() == got.digest(),
                      "sha256": got.hexdigest(), "server_session_id": server_says,
                      "session_id": mine.hex() if mine else None}), flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 30))
