"""A websockets echo server that also tells each client its session ID.

    python websockets_server.py HOST PORT
"""
import asyncio
import sys

from websockets.asyncio.server import serve


async def echo(ws) -> None:
    session_id = ws.transport.get_extra_info("tcpcrypt_session_id")
    print("client", ws.remote_address[0], session_id.hex() if session_id else None, flush=True)
    await ws.send(session_id.hex() if session_id else "none")
    async for message in ws:
        await ws.send(message)


async def main(host: str, port: int) -> None:
    async with serve(echo, host, port, max_size=2**22) as server:
        print(f"listening on ws://{host}:{port}", flush=True)
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
