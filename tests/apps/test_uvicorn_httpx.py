"""A FastAPI application served by uvicorn (its console script, `uvicorn fastapi_app:app`;
with the one-line import, the same file run as a program that starts uvicorn itself),
fetched by curl from the kernel side and by httpx (anyio underneath, which reads the
transport's socket: get_extra_info("socket").getpeername()) over a second stack; over plain
HTTP and over HTTPS (uvicorn's ssl= server, a self-signed certificate both clients verify)."""
from __future__ import annotations

import json
import os

import pytest

from . import harness
from .conftest import self_signed
from .harness import MB, sha

pytestmark = [pytest.mark.apps, pytest.mark.tun]


def uvicorn_cmd(mode: str, addr: str, net: str | None, tmp: str,
                tls: tuple[str, str] | None) -> list[str]:
    console = ["uvicorn", "fastapi_app:app", "--app-dir", harness.PROGRAMS, "--host", addr,
               "--port", "8000"]
    program = harness.py("fastapi_app.py", addr, 8000)
    if tls:
        console += ["--ssl-certfile", tls[0], "--ssl-keyfile", tls[1]]
        program += list(tls)
    return harness.command(mode, console, addr=net, tmp=tmp, oneline=program)


@pytest.mark.parametrize("scheme", ["http", "https"])
async def test_uvicorn_fetched_by_curl_and_by_httpx_over_a_stack(scheme, mode, two_hosts, procs,
                                                                 tmpdir_shared):
    net = two_hosts
    if mode == "kernel":
        srv, srv_net, cli_net = net.veth_addrs[0], None, None
    else:
        srv, srv_net, cli_net = net.stack_addrs[0], f"{net.stack_addrs[0]}/24", f"{net.stack_addrs[1]}/24"
    tls = None
    curl_args: list[str] = []
    httpx_args: list[str] = []
    if scheme == "https":
        tls = (os.path.join(tmpdir_shared, "cert.pem"), os.path.join(tmpdir_shared, "key.pem"))
        self_signed(*tls, srv)
        curl_args = ["--cacert", tls[0]]
        httpx_args = ["--cafile", tls[0]]
    server = await harness.start(procs, net.ns[0], uvicorn_cmd(mode, srv, srv_net, tmpdir_shared, tls),
                                 harness.env_for(mode, srv_net))
    try:
        await server.wait_line(r"Uvicorn running on ")
        base = f"{scheme}://{srv}:8000"
        # curl, the kernel's TCP in the server's namespace
        digest, _ = await harness.curl(net.ns[0], f"{base}/bytes/{MB}", *curl_args)
        assert digest == sha(MB)
        _, body = await harness.curl(net.ns[0], f"{base}/client", *curl_args)
        kernel_side = net.veth_addrs[0] if mode == "kernel" else net.kernel_addrs[0]
        assert json.loads(body) == {"client": kernel_side, "server": srv}
        # httpx from the other namespace, on its own stack
        cmd = harness.command(mode, harness.py("httpx_get.py", *httpx_args, f"{base}/bytes/{MB}",
                                               f"{base}/bytes/{MB}", f"{base}/client"),
                              addr=cli_net, tmp=tmpdir_shared)
        out = await harness.run(procs, net.ns[1], cmd, harness.env_for(mode, cli_net))
    finally:
        await server.stop()
    r1, r2, who = out["responses"]
    assert r1["status"] == r2["status"] == who["status"] == 200
    assert r1["sha256"] == r2["sha256"] == sha(MB)
    me = net.veth_addrs[1] if mode == "kernel" else net.stack_addrs[1]
    assert who["json"] == {"client": me, "server": srv}
    # anyio's view of the connection, through the transport's socket object
    assert who["server_addr"] == [srv, 8000]
    assert who["client_addr"][0] == me
    if scheme == "https":
        assert who["tls"] in ("TLSv1.2", "TLSv1.3"), who
