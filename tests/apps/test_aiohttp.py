"""aiohttp, client and server, unmodified: its client against a kernel server, its server
fetched by curl from the kernel, and client and server on two stacks in two namespaces (the
kernels routing between them), where both ends must report the same tcpcrypt session ID."""
from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import subprocess
import sys
from dataclasses import replace
from typing import Any

import pytest

from . import harness
from .conftest import need, self_signed, serve
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


# --- the server on the stack under load (ab) and over HTTPS (curl -k); both loops ------------

async def ab(ns: Any, url: str, *args: str, timeout: float = 60) -> str:
    """ApacheBench's report for `ab ARGS URL` run inside `ns` (the kernel's TCP)."""
    p = await asyncio.create_subprocess_exec(
        "ip", "netns", "exec", ns.name, "ab", "-s", "20", *args, url,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = await asyncio.wait_for(p.communicate(), timeout)
    text = out.decode(errors="replace")
    assert p.returncode == 0, f"ab {args} {url}: {text[-3000:]}\n{err.decode(errors='replace')}"
    return text


def ab_field(report: str, name: str) -> str:
    m = re.search(rf"^{re.escape(name)}:\s+(.*?)\s*$", report, re.M)
    assert m, f"no {name!r} in ab's report:\n{report}"
    return m.group(1)


@pytest.mark.parametrize("loop", harness.LOOPS)
@pytest.mark.parametrize("mode", ["run", "import"])
async def test_aiohttp_server_on_the_stack_under_ab(mode, loop, host, procs, tmpdir_shared):
    """ab from the kernel side: 2000 requests, 8 at a time, first one connection per request,
    then kept-alive connections; every one a 200 with the exact body length."""
    need("ab")
    launch = Launch(mode, host.stack_net(), tmpdir_shared, loop=loop)
    server = await harness.start(procs, host.ns, launch,
                                 harness.py("aiohttp_server.py", host.stack, 8080))
    try:
        await server.wait_line(r"^listening on ")
        assert launch.loop_line in server.lines, server.output[-2000:]
        url = f"http://{host.stack}:8080/bytes/1000"
        reports = {"close": await ab(host.ns, url, "-n", "2000", "-c", "8"),
                   "keep-alive": await ab(host.ns, url, "-k", "-n", "2000", "-c", "8")}
    finally:
        await server.stop()
    for kind, report in reports.items():
        assert ab_field(report, "Complete requests") == "2000", report
        assert ab_field(report, "Failed requests") == "0", report
        assert "Non-2xx responses" not in report, report
        assert ab_field(report, "Document Length") == "1000 bytes", report
        assert ab_field(report, "Total transferred").split()[0] != "0", report
        keep_alive = ab_field(report, "Keep-Alive requests") if kind == "keep-alive" else "0"
        assert keep_alive == ("2000" if kind == "keep-alive" else "0"), report
    assert server.output.count(f"served /bytes/1000 {host.kernel_tun}") == 4000


async def test_aiohttp_server_over_https_fetched_by_curl(client, host, procs, tmpdir_shared):
    """The same application with an ssl context (TCPSite(ssl_context=)): curl -k gets the
    exact bodies over TLS (a plain-HTTP answer would fail curl's handshake)."""
    addr = host.server if client.mode == "kernel" else host.stack
    cert, key = os.path.join(tmpdir_shared, "cert.pem"), os.path.join(tmpdir_shared, "key.pem")
    self_signed(cert, key, addr)
    server = await harness.start(procs, host.ns, client,
                                 harness.py("aiohttp_server.py", addr, 8443, cert, key))
    try:
        await server.wait_line(r"^listening on https://")
        digest, _ = await harness.curl(host.ns, f"https://{addr}:8443/bytes/{MB}", "-k")
        _, body = await harness.curl(host.ns, f"https://{addr}:8443/whoami", "-k")
    finally:
        await server.stop()
    assert digest == sha(MB)
    me = host.server if client.mode == "kernel" else host.kernel_tun
    assert json.loads(body) == {"remote": me, "session_id": None}


# --- aiohttp's and httpx's clients on the stack: 20 MB from a kernel HTTP server ---------------

# http.server's file handler speaking HTTP/1.1 (its default, HTTP/1.0, closes the connection
# after the body, and httpx_get.py asks the open connection for its addresses afterwards)
HTTP_SERVER = """import http.server as h, sys
class H(h.SimpleHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def __init__(self, *a, **k):
        super().__init__(*a, directory=sys.argv[1], **k)
h.ThreadingHTTPServer((sys.argv[2], 8000), H).serve_forever()
"""


@pytest.mark.parametrize("loop", harness.LOOPS)
@pytest.mark.parametrize("program", ["aiohttp_get.py", "httpx_get.py"])
async def test_client_fetches_20mb_from_a_kernel_http_server(program, loop, client, host, procs,
                                                             tmpdir_shared):
    """Python's http.server (a file handler) on the kernel (host.server, routed over the stack for a switched
    client) serving a 20 MB random file; the client's SHA-256 of the body is the file's, and
    the server logs the request from the stack's address."""
    size = 20 * MB
    blob = os.urandom(size)
    root = os.path.join(tmpdir_shared, "www")
    os.mkdir(root)
    with open(os.path.join(root, "blob"), "wb") as f:
        f.write(blob)
    log = os.path.join(tmpdir_shared, "http.server.log")
    async for _ in serve(procs, host.ns, [sys.executable, "-c", HTTP_SERVER, root, host.server],
                         host.server, 8000, log, "http.server"):
        out = await harness.run(procs, host.ns, replace(client, loop=loop),
                                harness.py(program, f"http://{host.server}:8000/blob"),
                                timeout=60)
    (r,) = out["responses"]
    assert r["status"] == 200 and r["bytes"] == size
    assert r["sha256"] == hashlib.sha256(blob).hexdigest()
    me = host.server if client.mode == "kernel" else host.stack
    with open(log, errors="replace") as f:
        assert re.search(rf'^{re.escape(me)} .*"GET /blob HTTP/1\.1" 200', f.read(), re.M)
