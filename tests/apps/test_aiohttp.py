"""aiohttp, client and server, unmodified: its client against a kernel server, its server
fetched by curl from the kernel, and client and server on two stacks in two namespaces (the
kernels routing between them), where both ends must report the same tcpcrypt session ID."""
from __future__ import annotations

import json

import pytest

from . import harness
from .harness import MB, sha

pytestmark = [pytest.mark.apps, pytest.mark.tun]


async def test_aiohttp_client_against_a_kernel_server(mode, host, procs, tmpdir_shared):
    env_k = harness.env_for("kernel", None)
    server = await harness.start(procs, host.ns, harness.py("aiohttp_server.py", host.server, 8080),
                                 env_k)
    try:
        await server.wait_line(r"^listening on ")
        base = f"http://{host.server}:8080"
        cmd = harness.command(mode, harness.py("aiohttp_get.py", f"{base}/bytes/{MB}",
                                               f"{base}/bytes/{MB}", f"{base}/whoami"),
                              addr=host.stack_net(), tmp=tmpdir_shared)
        out = await harness.run(procs, host.ns, cmd, harness.env_for(mode, host.stack_net()))
    finally:
        await server.stop()
    r1, r2, who = out["responses"]
    assert r1["sha256"] == r2["sha256"] == sha(MB) and r1["bytes"] == MB
    assert who["peername"] == [host.server, 8080]
    me = host.server if mode == "kernel" else host.stack
    assert who["json"] == {"remote": me, "session_id": None}     # the kernel has no TCP-ENO
    assert who["session_id"] is None
    assert server.output.count(f"served /bytes/{MB} {me}") == 2


async def test_aiohttp_server_fetched_by_curl_from_the_kernel(mode, host, procs, tmpdir_shared):
    addr = host.server if mode == "kernel" else host.stack
    cmd = harness.command(mode, harness.py("aiohttp_server.py", addr, 8080),
                          addr=host.stack_net(), tmp=tmpdir_shared)
    server = await harness.start(procs, host.ns, cmd, harness.env_for(mode, host.stack_net()))
    try:
        await server.wait_line(r"^listening on ")
        digest, _ = await harness.curl(host.ns, f"http://{addr}:8080/bytes/{MB}")
        assert digest == sha(MB)
        _, body = await harness.curl(host.ns, f"http://{addr}:8080/whoami")
    finally:
        await server.stop()
    client = host.server if mode == "kernel" else host.kernel_tun
    assert json.loads(body) == {"remote": client, "session_id": None}


async def test_aiohttp_client_and_server_on_two_stacks(mode, two_hosts, procs, tmpdir_shared):
    net = two_hosts
    if mode == "kernel":
        srv, cli_net, srv_net = net.veth_addrs[0], None, None
    else:
        srv, srv_net, cli_net = net.stack_addrs[0], f"{net.stack_addrs[0]}/24", f"{net.stack_addrs[1]}/24"
    cmd = harness.command(mode, harness.py("aiohttp_server.py", srv, 8080), addr=srv_net,
                          tmp=tmpdir_shared)
    server = await harness.start(procs, net.ns[0], cmd, harness.env_for(mode, srv_net))
    try:
        await server.wait_line(r"^listening on ")
        base = f"http://{srv}:8080"
        cmd = harness.command(mode, harness.py("aiohttp_get.py", f"{base}/bytes/{MB}",
                                               f"{base}/whoami"),
                              addr=cli_net, tmp=tmpdir_shared)
        out = await harness.run(procs, net.ns[1], cmd, harness.env_for(mode, cli_net))
        served = await server.wait_line(r"^served /whoami (\S+) (\S+)")
    finally:
        await server.stop()
    data, who = out["responses"]
    assert data["sha256"] == sha(MB)
    me = net.veth_addrs[1] if mode == "kernel" else net.stack_addrs[1]
    assert who["json"]["remote"] == me == served.group(1)
    if mode == "kernel":
        assert who["session_id"] is None and who["json"]["session_id"] is None
    else:
        # RFC 8548 4.1: both ends derive the same session ID; tcpcrypt was negotiated.
        sid = who["session_id"]
        assert sid and len(sid) >= 64, out
        assert who["json"]["session_id"] == served.group(2) == sid
        assert data["session_id"] == sid                      # one kept-alive connection
