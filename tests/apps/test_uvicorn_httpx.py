"""A FastAPI application served by uvicorn (its console script, `uvicorn fastapi_app:app`;
with the one-line import, the same file run as a program that starts uvicorn itself),
fetched by curl from the kernel side and by httpx (anyio underneath, which reads the
transport's socket: get_extra_info("socket").getpeername()) over a second stack; over plain
HTTP and over HTTPS (uvicorn's ssl= server, a self-signed certificate both clients verify)."""
from __future__ import annotations

import json
import os
from dataclasses import replace

import pytest

from . import harness
from .conftest import self_signed
from .harness import MB, sha

pytestmark = [pytest.mark.apps, pytest.mark.tun]


@pytest.mark.parametrize("loop", harness.LOOPS)
@pytest.mark.parametrize("scheme", ["http", "https"])
async def test_uvicorn_fetched_by_curl_and_by_httpx_over_a_stack(scheme, loop, pair, two_hosts,
                                                                 procs, tmpdir_shared):
    """On each loop: uvicorn's console script makes its own (`--loop asyncio|uvloop`, its
    loop factory, no policy asked); the program form (asyncio.run(Server.serve())) and the
    httpx client get theirs from tests/apps/loopwrap.py, which checks the class."""
    srv = pair.server_addr
    console = ["uvicorn", "fastapi_app:app", "--app-dir", harness.PROGRAMS, "--host", srv,
               "--port", "8000", "--loop", loop]
    pair = replace(pair, client=replace(pair.client, loop=loop))
    if pair.server.mode == "import":
        pair = replace(pair, server=replace(pair.server, loop=loop))
    program = harness.py("fastapi_app.py", srv, 8000)     # the import mode's form
    curl_args: list[str] = []
    httpx_args: list[str] = []
    if scheme == "https":
        cert, key = os.path.join(tmpdir_shared, "cert.pem"), os.path.join(tmpdir_shared, "key.pem")
        self_signed(cert, key, srv)
        console += ["--ssl-certfile", cert, "--ssl-keyfile", key]
        program += [cert, key]
        curl_args = ["--cacert", cert]
        httpx_args = ["--cafile", cert]
    server = await harness.start(procs, two_hosts.ns[0], pair.server, console, oneline=program)
    try:
        await server.wait_line(r"Uvicorn running on ")
        if pair.server.loop_line is not None:
            assert pair.server.loop_line in server.lines, server.output[-2000:]
        base = f"{scheme}://{srv}:8000"
        # curl, the kernel's TCP in the server's namespace
        digest, _ = await harness.curl(two_hosts.ns[0], f"{base}/bytes/{MB}", *curl_args)
        assert digest == sha(MB)
        _, body = await harness.curl(two_hosts.ns[0], f"{base}/client", *curl_args)
        assert json.loads(body) == {"client": pair.kernel_side, "server": srv}
        # httpx from the other namespace, on its own stack
        out = await harness.run(procs, two_hosts.ns[1], pair.client,
                                harness.py("httpx_get.py", *httpx_args, f"{base}/bytes/{MB}",
                                           f"{base}/bytes/{MB}", f"{base}/client"))
    finally:
        await server.stop()
    r1, r2, who = out["responses"]
    assert r1["status"] == r2["status"] == who["status"] == 200
    assert r1["sha256"] == r2["sha256"] == sha(MB)
    assert who["json"] == {"client": pair.client_addr, "server": srv}
    # anyio's view of the connection, through the transport's socket object
    assert who["server_addr"] == [srv, 8000]
    assert who["client_addr"][0] == pair.client_addr
    if scheme == "https":
        assert who["tls"] in ("TLSv1.2", "TLSv1.3"), who
