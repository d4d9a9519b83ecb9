"""A small key-value service written against plain asyncio, switched onto the encrypted
userspace overlay by changing ONE import (the line marked below).

    server:  TCPCRYPT_TUN=10.231.6.2/24 python3 examples/overlay_kv.py serve 7070
    client:  TCPCRYPT_TUN=10.231.5.2/24 python3 examples/overlay_kv.py client 10.231.6.2 7070

Protocol: one request per line, "SET key value" -> "OK", "GET key" -> the value or "-",
"QUIT".  The server prints each client's tcpcrypt session ID; so does the client (with
stdlib asyncio both print "None").  See docs/overlay.md for the two-host set-up.
"""
from __future__ import annotations

import sys

from tcpcrypt import asyncio   # the one change: was `import asyncio`


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    store: dict[str, str] = handle.store  # type: ignore[attr-defined]
    sid = writer.get_extra_info("tcpcrypt_session_id")
    print(f"server: client {writer.get_extra_info('peername')} session ID "
          f"{sid.hex() if sid else None}", flush=True)
    while line := await reader.readline():
        cmd, _, rest = line.decode().strip().partition(" ")
        if cmd == "SET":
            key, _, value = rest.partition(" ")
            store[key] = value
            writer.write(b"OK\n")
        elif cmd == "GET":
            writer.write((store.get(rest, "-") + "\n").encode())
        elif cmd == "QUIT":
            break
        else:
            writer.write(b"ERR\n")
        await writer.drain()
    writer.close()


handle.store = {}  # type: ignore[attr-defined]


async def serve(port: int) -> None:
    server = await asyncio.start_server(handle, None, port)
    print(f"server: listening on port {port}", flush=True)
    async with server:
        await server.serve_forever()


async def client(host: str, port: int, n: int) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    sid = writer.get_extra_info("tcpcrypt_session_id")
    print(f"client: session ID {sid.hex() if sid else None}", flush=True)
    for i in range(n):
        writer.write(f"SET k{i} value-{i * i}\n".encode())
        assert await reader.readline() == b"OK\n"
    bad = 0
    for i in range(n):
        writer.write(f"GET k{i}\n".encode())
        if await reader.readline() != f"value-{i * i}\n".encode():
            bad += 1
    writer.write(b"QUIT\n")
    await writer.drain()
    await reader.read()
    writer.close()
    print(f"client: {n} keys set and read back, {bad} wrong", flush=True)


def main(argv: list[str]) -> int:
    if len(argv) >= 2 and argv[0] == "serve":
        asyncio.run(serve(int(argv[1])))
    elif len(argv) >= 3 and argv[0] == "client":
        asyncio.run(client(argv[1], int(argv[2]), int(argv[3]) if len(argv) > 3 else 100))
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
