"""A small aiohttp web application.

    python aiohttp_server.py HOST PORT [CERT KEY]                     (HTTPS with these)
    python -m aiohttp.web -H HOST -P PORT aiohttp_server:init_app     (aiohttp's own runner)

GET /bytes/N   N deterministic bytes
GET /whoami    the client's address and the connection's session ID (if any), as JSON
"""
import asyncio
import hashlib
import ssl
import sys

from aiohttp import web


def pattern(n: int) -> bytes:
    block = b"".join(hashlib.sha256(b"%d" % i).digest() for i in range(2048))   # 64 KB
    return (block * (n // len(block) + 1))[:n]


async def data(request: web.Request) -> web.Response:
    print("served", request.path, request.remote, flush=True)
    return web.Response(body=pattern(int(request.match_info["n"])),
                        content_type="application/octet-stream")


async def whoami(request: web.Request) -> web.Response:
    session_id = request.transport.get_extra_info("tcpcrypt_session_id")
    print("served", request.path, request.remote, session_id.hex() if session_id else None, flush=True)
    return web.json_response({"remote": request.remote,
                              "session_id": session_id.hex() if session_id else None})


def init_app(argv: list = None) -> web.Application:
    app = web.Application()
    app.add_routes([web.get("/bytes/{n}", data), web.get("/whoami", whoami)])
    return app


async def main(host: str, port: int, cert: str = None, key: str = None) -> None:
    context = None
    if cert:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
    runner = web.AppRunner(init_app())
    await runner.setup()
    await web.TCPSite(runner, host, port, ssl_context=context).start()
    print(f"listening on {'https' if cert else 'http'}://{host}:{port}", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), *sys.argv[3:5]))
