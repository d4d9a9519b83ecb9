"""aiohttp, client and server, unmodified: its client against a kernel server, its server
fetched by curl from the kernel, and client and server on two stacks in two namespaces (the
kernels routing between them), where both ends must report the same tcpcrypt session ID."""
from __future__ import annotations

import json
import os
import subprocess

import pytest

from . import harness
from .conftest import self_signed
from .harness import MB, Launch, sha

pytestmark = [pytest.mark.apps, pytest.mark.tun]


async def test_aiohttp_client_against_a_kernel_server(client, host, procs):
    # The server listens on every kernel address; a switched client reaches it at the
    # kernel side of its own TUN (in the stack's subnet: routed over the stack by default).
    server = await harness.start(procs, host.ns, Launch("kernel", None, ""),
                                 harness.py("aiohttp_server.py", "0.0.0.0", 8080))
    target = host.server if client.mode == "kernel" else host.kernel_tun
    try:
        await server.wait_line(r"^listening on ")
        base = f"http://{target}:8080"
        out = await harness.run(procs, host.ns, client,
                                harness.py("aiohttp_get.py", f"{base}/bytes/{MB}",
                                           f"{base}/bytes/{MB}", f"{base}/whoami"))
    finally:
        await server.stop()
    r1, r2, who = out["responses"]
    assert r1["sha256"] == r2["sha256"] == sha(MB) and r1["bytes"] == MB
    assert who["peername"] == [target, 8080]
    me = host.server if client.mode == "kernel" else host.stack
    assert who["json"] == {"remote": me, "session_id": None}     # the kernel has no TCP-ENO
    assert who["session_id"] is None
    assert server.output.count(f"served /bytes/{MB} {me}") == 2


async def test_aiohttp_server_fetched_by_curl_from_the_kernel(client, host, procs):
    addr = host.server if client.mode == "kernel" else host.stack
    server = await harness.start(procs, host.ns, client, harness.py("aiohttp_server.py", addr, 8080))
    try:
        await server.wait_line(r"^listening on ")
        digest, _ = await harness.curl(host.ns, f"http://{addr}:8080/bytes/{MB}")
        assert digest == sha(MB)
        _, body = await harness.curl(host.ns, f"http://{addr}:8080/whoami")
    finally:
        await server.stop()
    me = host.server if client.mode == "kernel" else host.kernel_tun
    assert json.loads(body) == {"remote": me, "session_id": None}


@pytest.mark.parametrize("scheme", ["http", "https"])
async def test_aiohttp_client_and_server_on_two_stacks(scheme, pair, two_hosts, procs,
                                                       tmpdir_shared):
    """Over HTTPS too: aiohttp's server with an ssl_context (create_server(ssl=)) and its
    client verifying the certificate (create_connection(ssl=, sock=) after
    aiohappyeyeballs' own connect): TLS inside tcpcrypt."""
    server_args: list[str] = []
    client_args: list[str] = []
    if scheme == "https":
        cert, key = os.path.join(tmpdir_shared, "cert.pem"), os.path.join(tmpdir_shared, "key.pem")
        self_signed(cert, key, pair.server_addr)
        server_args, client_args = [cert, key], ["--cafile", cert]
    server = await harness.start(procs, two_hosts.ns[0], pair.server,
                                 harness.py("aiohttp_server.py", pair.server_addr, 8080, *server_args))
    try:
        await server.wait_line(r"^listening on ")
        base = f"{scheme}://{pair.server_addr}:8080"
        out = await harness.run(procs, two_hosts.ns[1], pair.client,
                                harness.py("aiohttp_get.py", *client_args, f"{base}/bytes/{MB}",
                                           f"{base}/whoami"))
        served = await server.wait_line(r"^served /whoami (\S+) (\S+)")
    finally:
        await server.stop()
    data, who = out["responses"]
    assert data["sha256"] == sha(MB)
    assert who["json"]["remote"] == pair.client_addr == served.group(1)
    if scheme == "https":
        assert who["tls"] in ("TLSv1.2", "TLSv1.3"), who
    if pair.client.mode == "kernel":
        assert who["session_id"] is None and who["json"]["session_id"] is None
    else:
        # RFC 8548 4.1: both ends derive the same session ID; tcpcrypt was negotiated.
        sid = who["session_id"]
        assert sid and len(sid) >= 64, out
        assert who["json"]["session_id"] == served.group(2) == sid
        assert data["session_id"] == sid                      # one kept-alive connection


@pytest.mark.parametrize("mode", ["kernel", "run"])
async def test_aiohttp_web_module_runner(mode, host, procs, tmpdir_shared):
    """`python -m aiohttp.web ... module:init_func` (aiohttp's own runner, web.run_app):
    under the switch as `tcpstack run -- -m aiohttp.web ...` (no file of the user's to edit,
    so no one-line variant)."""
    addr = host.server if mode == "kernel" else host.stack
    launch = Launch(mode, None if mode == "kernel" else host.stack_net(), tmpdir_shared)
    env = dict(launch.env)
    env["PYTHONPATH"] = harness.PROGRAMS + os.pathsep + env["PYTHONPATH"]
    cmd = launch.cmd([harness.sys.executable, "-m", "aiohttp.web", "-H", addr, "-P", "8080",
                      "aiohttp_server:init_app"])
    proc = await procs.exec(*cmd, netns=host.ns, env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    server = harness.Server(proc)
    server.start_reading()
    try:
        await server.wait_line(r"Running on http://")
        digest, _ = await harness.curl(host.ns, f"http://{addr}:8080/bytes/{MB}")
        _, body = await harness.curl(host.ns, f"http://{addr}:8080/whoami")
    finally:
        await server.stop()
    assert digest == sha(MB)
    me = host.server if mode == "kernel" else host.kernel_tun
    assert json.loads(body) == {"remote": me, "session_id": None}
