"""`tcpstack run` and the one-line import, on real TUN devices in namespaces: one small
UNMODIFIED asyncio program (loop.create_connection with a Protocol, asyncio.open_connection,
an aiohttp client) fetched from

  - a kernel HTTP server on the TUN's kernel side (the stack's own subnet: routed by
    default): the server sees the stack's address as the client, so it came over the TUN;
  - another userspace stack (`tcpstack up --http`, in the other host, --route'd): both ends
    report the same tcpcrypt session ID (RFC 8548 4.1);
  - a kernel server on the other host's veth address (not routed): the kernel's own
    connection, from the veth address, no session ID.

Then a uvicorn app served under `tcpstack run` and fetched by curl from the kernel side,
unprivileged use on a device made beforehand for uid 65534, and the CLI's one-line errors.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.waiting import wait_for
from tun.topology import TwoHosts

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
for _k in [k for k in ENV if k.startswith("TCPCRYPT_")]:
    del ENV[_k]
TCPSTACK = [sys.executable, "-m", "tcpstack"]
DROP_ROOT = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]

CLIENT = '''\
"""A small asyncio program that knows nothing of tcpstack: GET / three ways."""
import json
import sys

import asyncio   # THE LINE

import aiohttp

REQ = b"GET / HTTP/1.0\\r\\nHost: x\\r\\n\\r\\n"


class Fetch(asyncio.Protocol):
    def __init__(self, done):
        self.done, self.buf = done, bytearray()

    def connection_made(self, transport):
        transport.write(REQ)

    def data_received(self, data):
        self.buf += data

    def connection_lost(self, exc):
        if not self.done.done():
            self.done.set_result(bytes(self.buf))


def body(raw):
    return json.loads(raw.split(b"\\r\\n\\r\\n", 1)[1])


def sid(transport):
    s = transport.get_extra_info("tcpcrypt_session_id")
    return s.hex() if s else None


async def fetch(host, port):
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    t, _ = await loop.create_connection(lambda: Fetch(done), host, port)
    out = [dict(how="protocol", local=t.get_extra_info("sockname")[0], sid=sid(t),
                seen=body(await done))]
    r, w = await asyncio.open_connection(host, port)
    w.write(REQ)
    raw = await r.read()
    out.append(dict(how="streams", local=w.get_extra_info("sockname")[0], sid=sid(w),
                    seen=body(raw)))
    w.close()
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://{host}:{port}/") as resp:
            seen = json.loads(await resp.read())
    # (the connection is gone by now: the server's view tells where it came from)
    out.append(dict(how="aiohttp", local=None, sid=None, seen=seen))
    return out


async def main():
    res = []
    for target in sys.argv[1:]:
        host, port = target.rsplit(":", 1)
        res += [dict(r, target=target) for r in await fetch(host, int(port))]
    print(json.dumps(res), flush=True)


asyncio.run(main())
sys.exit(3)     # the exit status passes through
'''

KERNEL_SERVER = '''\
import http.server, json, sys

class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"remote": "%s:%d" % self.client_address[:2], "session_id": None}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass

http.server.ThreadingHTTPServer(("0.0.0.0", int(sys.argv[1])), H).serve_forever()
'''

ASGI_APP = '''\
import asyncio

async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    loop = type(asyncio.get_running_loop()).__module__      # uvicorn's own loop factory's
    body = ("hello from uvicorn on %s; client %s:%d" % (loop, *scope["client"])).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": body})
'''


def _need(module: str) -> None:
    pytest.importorskip(module)


@pytest.fixture
def net(procs: Any, tmp_path: Path) -> Iterator[tuple[TwoHosts, dict[str, str]]]:
    """Two hosts; in the second a userspace stack serving HTTP (`tcpstack up --http 8080`)
    and a kernel HTTP server on port 8000 (on every address); in the first a kernel HTTP
    server on port 8000 as well.  The first host's stack is the program's (not up yet)."""
    _need("aiohttp")
    (tmp_path / "kserver.py").write_text(KERNEL_SERVER)
    with TwoHosts(tuns=False) as hosts:
        a_stack, b_stack = hosts.stack_addrs
        procs.popen([*TCPSTACK, "up", "--addr", f"{b_stack}/24", "--http", "8080",
                     "--control", str(tmp_path / "b.sock")], netns=hosts.ns[1].name, env=ENV,
                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        for ns in hosts.ns:
            procs.popen([sys.executable, str(tmp_path / "kserver.py"), "8000"], netns=ns.name,
                        env=ENV)
        # up: the stack answers ICMP echo, the kernel servers accept
        wait_for(lambda: hosts.ns[0].run(["ping", "-c1", "-W1", b_stack]).returncode == 0,
                 30, "the peer stack to come up")
        for ns in hosts.ns:
            wait_for(lambda ns=ns: ns.run(["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/8000"]
                                          ).returncode == 0, 30, "a kernel server")
        yield hosts, {"a_stack": a_stack, "b_stack": b_stack, "a_kernel": hosts.kernel_addrs[0],
                      "b_veth": hosts.veth_addrs[1], "a_veth": hosts.veth_addrs[0],
                      "b_subnet": f"{b_stack.rsplit('.', 1)[0]}.0/24"}


def _check(r: subprocess.CompletedProcess[str], a: dict[str, str], *,
           streams_always_stack: bool = False) -> None:
    """streams_always_stack: the program's asyncio.open_connection is tcpcrypt.asyncio's,
    which uses the stack whatever the destination (the one-line import's own names)."""
    assert r.returncode == 3, r.stdout + r.stderr
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert len(res) == 9 and {x["how"] for x in res} == {"protocol", "streams", "aiohttp"}
    for x in res:
        host = x["target"].rsplit(":", 1)[0]
        seen = x["seen"]["remote"].rsplit(":", 1)[0]
        client_view = x["how"] != "aiohttp"     # aiohttp's connection is gone: the server's view
        if host == a["b_stack"]:
            # over the stack, to the other stack: tcpcrypt, the same session ID at both ends
            assert seen == a["a_stack"] and x["seen"]["session_id"], x
            if client_view:
                assert x["local"] == a["a_stack"] and x["sid"] == x["seen"]["session_id"], x
        elif host == a["a_kernel"]:
            # over the stack to the kernel behind the TUN: it saw the stack's address
            assert seen == a["a_stack"], x
            if client_view:
                assert x["local"] == a["a_stack"] and x["sid"] is None, x
        elif streams_always_stack and x["how"] == "streams":
            # tcpcrypt.asyncio.open_connection: the stack's, the kernels route it on
            assert host == a["b_veth"] and seen == a["a_stack"] == x["local"], x
            assert x["sid"] is None, x
        else:
            # not routed: the kernel's own connection, from the veth address
            assert host == a["b_veth"] and seen == a["a_veth"], x
            if client_view:
                assert x["local"] == a["a_veth"] and x["sid"] is None, x


def _targets(a: dict[str, str]) -> list[str]:
    return [f"{a['a_kernel']}:8000", f"{a['b_stack']}:8080", f"{a['b_veth']}:8000"]


@pytest.mark.tun
@pytest.mark.slow
def test_tcpstack_run_switches_an_unmodified_program(net, tmp_path):
    hosts, a = net
    (tmp_path / "client.py").write_text(CLIENT)
    keys = tmp_path / "keys.log"
    r = hosts.ns[0].run([*TCPSTACK, "run", "--addr", f"{a['a_stack']}/24",
                         "--route", a["b_subnet"], "--keylog", str(keys), "--",
                         str(tmp_path / "client.py"), *_targets(a)], env=ENV, timeout=90)
    _check(r, a)
    # the three connections to the other stack were tcpcrypt: their keys are in the log
    sids = {x["seen"]["session_id"] for x in json.loads(r.stdout.strip().splitlines()[-1])
            if x["seen"]["session_id"]}
    assert len(sids) == 3 and all(sid in keys.read_text() for sid in sids), keys.read_text()
    assert keys.stat().st_mode & 0o777 == 0o600
    # everything removed: no TUN device left in the namespace
    links = hosts.ns[0].run(["ip", "-o", "link", "show", "type", "tun"]).stdout
    assert links.strip() == "", links


@pytest.mark.tun
@pytest.mark.slow
def test_the_one_line_import_switches_the_whole_process(net, tmp_path):
    """aiohttp imports asyncio itself: it is switched too."""
    hosts, a = net
    (tmp_path / "client.py").write_text(CLIENT.replace(
        "import asyncio   # THE LINE", "from tcpcrypt import asyncio   # THE LINE"))
    env = dict(ENV, TCPCRYPT_TUN=f"{a['a_stack']}/24", TCPCRYPT_ROUTE=a["b_subnet"])
    r = hosts.ns[0].run([sys.executable, str(tmp_path / "client.py"), *_targets(a)],
                        env=env, timeout=90)
    _check(r, a, streams_always_stack=True)


@pytest.mark.tun
@pytest.mark.slow
def test_require_encryption_refuses_the_kernel_peer(net, tmp_path):
    hosts, a = net
    prog = tmp_path / "strict.py"
    prog.write_text(textwrap.dedent(f'''\
        import asyncio
        async def main():
            r, w = await asyncio.open_connection("{a['b_stack']}", 8080)   # tcpcrypt peer: fine
            assert w.get_extra_info("tcpcrypt_session_id")
            w.close()
            try:
                await asyncio.open_connection("{a['a_kernel']}", 8000)     # the kernel: no ENO
            except Exception as e:
                print(type(e).__name__, e)
        asyncio.run(main())
        '''))
    r = hosts.ns[0].run([*TCPSTACK, "run", "--addr", f"{a['a_stack']}/24", "--route",
                         a["b_subnet"], "--require-encryption", "--", str(prog)], env=ENV,
                        timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.startswith("EncryptionRequiredError"), r.stdout + r.stderr


@pytest.mark.tun
@pytest.mark.slow
def test_uvicorn_under_tcpstack_run_is_reachable_over_the_stack(netns, procs, tmp_path):
    _need("uvicorn")
    _need("uvloop")
    if shutil.which("curl") is None:
        pytest.skip("needs curl")
    from tests.conftest import subnet_index
    n = subnet_index()
    (tmp_path / "asgiapp.py").write_text(ASGI_APP)
    # uvicorn's console script, its loop="auto" (uvloop, from its own factory)
    ctl = str(tmp_path / "run.sock")
    p = procs.popen([*TCPSTACK, "run", "--addr", f"10.231.{n}.2/24", "--control", ctl,
                     "--", "uvicorn",
                     "asgiapp:app", "--app-dir", str(tmp_path), "--host", "0.0.0.0",
                     "--port", "8000"], netns=netns.name, env=ENV, text=True,
                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    got: list[str] = []

    def fetched() -> bool:
        r = netns.run(["curl", "-sS", "--max-time", "2", f"http://10.231.{n}.2:8000/"])
        got[:] = [r.stdout + r.stderr]
        return r.returncode == 0
    wait_for(fetched, 60, "uvicorn over the stack")
    # uvicorn's loop="auto" made a uvloop loop with its own factory: switched all the same;
    # the kernel (curl) reached the app at the stack's address, through the TUN device
    assert got[0] == (f"hello from uvicorn on uvloop; client 10.231.{n}.1:"
                      + got[0].rsplit(":", 1)[1]), got[0]
    # `tcpstack stats` looks into the program's stack: uvicorn's listener is there, and the
    # curl connections came in through the TUN device
    st = netns.run([*TCPSTACK, "stats", "--control", ctl, "--json"], env=ENV)
    assert st.returncode == 0, st.stderr
    snap = json.loads(st.stdout)
    assert snap["addresses"] == [f"10.231.{n}.2"] and snap["listeners"] == ["*:8000"], snap
    assert snap["stack"]["connections_accepted"] >= 1 and snap["stack"]["packets_in"] >= 3
    # nothing on the kernel's own sockets: the wildcard listens on the stack only
    ss = netns.run(["ss", "-Htln", "sport = :8000"]).stdout
    assert ss.strip() == "", ss
    p.terminate()
    out, _ = p.communicate(timeout=30)
    assert "Uvicorn running on http://0.0.0.0:8000" in out, out
    # uvicorn's graceful exit, passed through: 0, or (uvicorn >= 0.29) the SIGTERM it caught
    # raised again once shut down, which `tcpstack run` turns into exit(128 + SIGTERM) after
    # removing what it made (the control socket)
    assert p.returncode in (0, 128 + signal.SIGTERM), out
    assert not os.path.exists(ctl)


@pytest.mark.tun
@pytest.mark.slow
def test_unprivileged_on_a_device_made_beforehand(netns, procs, tmp_path, request):
    """Once, as root: `ip tuntap add dev NAME mode tun user 65534` + address + up.  Then
    uid 65534 runs `tcpstack run --dev NAME` with no privileges at all."""
    if shutil.which("setpriv") is None:
        pytest.skip("needs setpriv (util-linux)")
    probe = netns.run([*DROP_ROOT, sys.executable, "-c", "import tcpstack, aiohttp"],
                      timeout=30, env=ENV)
    if probe.returncode != 0:
        pytest.skip(f"uid 65534 cannot import tcpstack/aiohttp from here "
                    f"({probe.stderr.strip()[-80:]})")
    from tests.conftest import subnet_index
    n = subnet_index()
    dev = f"tcpcpy-u{n}"
    netns.ip("tuntap", "add", "dev", dev, "mode", "tun", "user", "65534")
    try:
        netns.ip("addr", "add", f"10.231.{n}.1/24", "dev", dev)
        netns.ip("link", "set", dev, "up")
        (tmp_path / "kserver.py").write_text(KERNEL_SERVER)
        procs.popen([sys.executable, str(tmp_path / "kserver.py"), "8000"], netns=netns.name,
                    env=ENV)
        wait_for(lambda: netns.run(["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/8000"]
                                   ).returncode == 0, 30, "the kernel server")
        # where uid 65534 can read it (pytest's tmp_path is root's, mode 700)
        shared = Path(tempfile.mkdtemp(prefix="tcpcpy-run-"))
        request.addfinalizer(lambda: shutil.rmtree(shared, ignore_errors=True))
        os.chmod(shared, 0o755)
        client = shared / "client.py"
        client.write_text(CLIENT)
        os.chmod(client, 0o644)
        cmd = [*DROP_ROOT, *TCPSTACK, "run", "--dev", dev, "--", str(client),
               f"10.231.{n}.1:8000"]
        if os.stat("/dev/net/tun").st_mode & 0o006 != 0o006:
            # as it is here: one clear line, before the program starts
            r = netns.run(cmd, env=ENV, timeout=60)
            assert r.returncode == 1 and r.stdout == "", r.stdout + r.stderr
            assert r.stderr.count("\n") == 1 and re.match(
                rf"tcpstack: run: cannot open --dev {dev}: /dev/net/tun is not readable and "
                r"writable for uid 65534", r.stderr), r.stderr
            # Distributions ship /dev/net/tun mode 666 (the device's owner check is the
            # kernel's, TUNSETIFF); this host's is not: a node of mode 666 is bind-mounted
            # over it in a mount namespace of the command's own.
            node = shared / "tun"
            if subprocess.run(["mknod", str(node), "c", "10", "200"]).returncode != 0:
                pytest.skip("/dev/net/tun is not mode 666 here and mknod is refused")
            os.chmod(node, 0o666)
            cmd = ["unshare", "-m", "sh", "-c", 'mount --bind "$0" /dev/net/tun && exec "$@"',
                   str(node), *cmd]
        r = netns.run(cmd, env=ENV, timeout=60)
        assert r.returncode == 3, r.stdout + r.stderr
        res = json.loads(r.stdout.strip().splitlines()[-1])
        # the stack took the subnet's first free address: 10.231.n.2
        assert [x["local"] for x in res] == [f"10.231.{n}.2"] * 2 + [None], res
        assert all(x["seen"]["remote"].startswith(f"10.231.{n}.2:") for x in res), res
        # the persistent device is let go, not removed
        assert netns.run(["ip", "link", "show", dev]).returncode == 0
    finally:
        netns.ip("tuntap", "del", "dev", dev, "mode", "tun", check=False)


# --- one clear line ---------------------------------------------------------------------------

def _one_line(r: subprocess.CompletedProcess[str], status: int, pattern: str) -> None:
    assert r.returncode == status, r.stdout + r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and re.search(pattern, lines[0]), r.stderr


def test_no_stack_configured_is_one_line(tmp_path):
    prog = tmp_path / "p.py"
    prog.write_text("print('ran')\n")
    r = subprocess.run([*TCPSTACK, "run", "--", str(prog)], capture_output=True, text=True,
                       env=ENV, timeout=60)
    _one_line(r, 2, r"^tcpstack: run: no stack configured: give --addr .* or --dev NAME")
    assert "ran" not in r.stdout


@pytest.mark.parametrize("args,status,pattern", [
    (["--addr", "10.231.9.2/24", "--", "/nonexistent/prog.py"], 1, r"no such file"),
    (["--addr", "10.231.9.2/24", "--", "no-such-command-xyz"], 1,
     r"not a script, a module \(-m\) or a command on PATH"),
    (["--addr", "10.231.9.2/24", "--", "-m", "no_such_module_xyz"], 1, r"no module named"),
    (["--addr", "10.231.9.2/24", "--", "ls"], 1, r"is not a Python program"),
    (["--addr", "10.231.9.2/24"], 2, r"no program to run"),
    (["--addr", "10.231.9.2/24", "--route", "10.1.1.1/8", "--", "-m", "json.tool"], 2,
     r"--route: route '10.1.1.1/8'"),
    (["--addr", "10.231.9.2/24", "--plain", "--require-encryption", "--", "-m", "json.tool"], 2,
     r"contradict"),
    (["--addr", "10.231.9.2/24", "--congestion-control", "vegas", "--", "-m", "json.tool"], 2,
     r"'vegas': not one the stack has \(bbr, cubic, newreno, reno\)"),
])
def test_mistakes_are_one_line(args, status, pattern):
    r = subprocess.run([*TCPSTACK, "run", *args], capture_output=True, text=True, env=ENV,
                       timeout=60)
    if r.returncode == 1 and ("root" in r.stderr or "CAP_NET_ADMIN" in r.stderr
                              or "already" in r.stderr):
        pytest.skip(f"this host cannot create a TUN device: {r.stderr.strip()}")
    _one_line(r, status, pattern)


def test_help_lists_run():
    r = subprocess.run([*TCPSTACK, "--help"], capture_output=True, text=True, env=ENV, timeout=60)
    assert r.returncode == 0 and "run" in r.stdout and "docs/run.md" in r.stdout.replace("\n", " ")


# --- what COMMAND is -------------------------------------------------------------------------

def test_a_module_a_console_script_and_a_path_script_are_found(tmp_path, monkeypatch):
    from tcpstack.tools.run import resolve_program
    run, argv = resolve_program(["--", "-m", "json.tool", "--help"])
    assert argv == ["json.tool", "--help"]
    run, argv = resolve_program(["tcpstack", "stats", "--json"])    # an entry point
    assert argv == ["tcpstack", "stats", "--json"]
    script = tmp_path / "tool"
    script.write_text("#!/usr/bin/env python3\nimport sys\nsys.exit(int(sys.argv[1]))\n")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    run, argv = resolve_program(["tool", "4"])
    assert argv == [str(script), "4"]


def test_the_interpreter_form_runs_the_script_module_or_code(tmp_path, capsys):
    """`tcpstack run -- python3 app.py ARGS`, as users type it: the interpreter word is
    taken off and the program runs here, switched (-m and -c too; -u is honoured)."""
    from tcpstack.tools.run import resolve_program
    script = tmp_path / "app.py"
    script.write_text("import sys\nprint('ran', sys.argv[1:])\n")
    for interp in ("python3", "python", sys.executable, "/usr/bin/python3.11"):
        run, argv = resolve_program(["--", interp, str(script), "a", "b"])
        assert argv == [str(script), "a", "b"]
    run, argv = resolve_program(["python3", "-u", "-m", "json.tool", "--help"])
    assert argv == ["json.tool", "--help"]
    run, argv = resolve_program(["python3", "-c", "print('code ran')", "x"])
    assert argv == ["-c", "x"]
    run()
    assert "code ran" in capsys.readouterr().out


@pytest.mark.parametrize("cmd,msg", [
    (["python3"], "no program given"),
    (["python3", "-"], "no program given"),
    (["python3", "-O", "app.py"], "takes only -m, -c and -u"),
    (["python3", "-c"], "-c needs the code"),
])
def test_the_interpreter_form_says_what_it_cannot_do(cmd, msg):
    from tcpstack.tools.cli import CliError
    from tcpstack.tools.run import resolve_program
    with pytest.raises(CliError, match=msg):
        resolve_program(cmd)


@pytest.mark.tun
def test_the_programs_exit_status_and_argv_pass_through(netns, tmp_path):
    prog = tmp_path / "p.py"
    prog.write_text("import sys\nprint(sys.argv)\nsys.exit(int(sys.argv[1]))\n")
    from tests.conftest import subnet_index
    r = netns.run([*TCPSTACK, "run", "--addr", f"10.231.{subnet_index()}.2/24", "--",
                   str(prog), "7", "x"], env=ENV, timeout=60)
    assert r.returncode == 7, r.stderr
    assert r.stdout.strip() == repr([str(prog), "7", "x"])
    # the device it brought up is gone with it
    assert netns.run(["ip", "-o", "link", "show", "type", "tun"]).stdout.strip() == ""


CC_PROGRAM = """
import asyncio, socket, sys, threading
kernel = sys.argv[1]
srv = socket.socket()
srv.bind((kernel, 0))
srv.listen()
def serve():
    c, _ = srv.accept()
    while c.recv(65536):
        pass
    c.close()
threading.Thread(target=serve, daemon=True).start()
async def main():
    r, w = await asyncio.open_connection(kernel, srv.getsockname()[1])
    w.write(bytes(200_000))
    await w.drain()
    s = w.get_extra_info("tcp_stats")
    print(s["congestion_control"], s["pacing_rate"] > 0, w.get_extra_info("sockname")[0])
    w.close()
    await w.wait_closed()
asyncio.run(main())
"""


@pytest.mark.tun
@pytest.mark.parametrize("cc,paced", [("bbr", True), (None, False)])
def test_the_congestion_control_option_reaches_the_connections(netns, tmp_path, cc, paced):
    """`tcpstack run --congestion-control bbr`: the program's connections over the stack
    run BBR (paced); without the option, CUBIC, the default (not paced)."""
    prog = tmp_path / "p.py"
    prog.write_text(CC_PROGRAM)
    from tests.conftest import subnet_index
    n = subnet_index()
    r = netns.run([*TCPSTACK, "run", "--addr", f"10.231.{n}.2/24",
                   *(["--congestion-control", cc] if cc else []), "--",
                   str(prog), f"10.231.{n}.1"], env=ENV, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == [cc or "cubic", str(paced), f"10.231.{n}.2"], r.stdout


@pytest.mark.tun
def test_each_asyncio_run_gets_the_stack_on_the_same_device(netns, procs, tmp_path):
    """A program that runs two event loops one after the other (asyncio.run twice, the
    second a uvloop one): each gets a stack on the one TUN device of the process."""
    _need("uvloop")
    from tests.conftest import subnet_index
    n = subnet_index()
    (tmp_path / "kserver.py").write_text(KERNEL_SERVER)
    prog = tmp_path / "twice.py"
    prog.write_text(textwrap.dedent(f'''\
        import asyncio, json, uvloop
        async def get():
            r, w = await asyncio.open_connection("10.231.{n}.1", 8000)
            w.write(b"GET / HTTP/1.0\\r\\n\\r\\n")
            raw = await r.read()
            w.close()
            return json.loads(raw.split(b"\\r\\n\\r\\n", 1)[1])["remote"].split(":")[0]
        print(asyncio.run(get()), uvloop.run(get()), asyncio.run(get()))
        '''))
    # the kernel server (on 0.0.0.0: the TUN's kernel side too, once the device is up)
    procs.popen([sys.executable, str(tmp_path / "kserver.py"), "8000"], netns=netns.name,
                env=ENV)
    wait_for(lambda: netns.run(["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/8000"]
                               ).returncode == 0, 30, "the kernel server")
    p = procs.popen([*TCPSTACK, "run", "--addr", f"10.231.{n}.2/24", "--trace", "--",
                     str(prog)], netns=netns.name, env=ENV, text=True,
                    stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 0, out + err
    assert out.split() == [f"10.231.{n}.2"] * 3, out + err
    # --trace: each loop's stack traced, three SYNs out to the kernel server
    syns = [l for l in err.splitlines() if " out " in l and f"> 10.231.{n}.1:8000 [S] " in l]
    assert len(syns) == 3, err


@pytest.mark.tun
def test_tcpcrypt_run_with_addr_brings_a_device_up_and_removes_it(netns, procs, tmp_path):
    from tests.conftest import subnet_index
    n = subnet_index()
    (tmp_path / "kserver.py").write_text(KERNEL_SERVER)
    procs.popen([sys.executable, str(tmp_path / "kserver.py"), "8000"], netns=netns.name,
                env=ENV)
    wait_for(lambda: netns.run(["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/8000"]
                               ).returncode == 0, 30, "the kernel server")
    prog = tmp_path / "explicit.py"
    prog.write_text(textwrap.dedent(f'''\
        import asyncio, json, subprocess
        import tcpcrypt

        async def main():
            r, w = await asyncio.open_connection("10.231.{n}.1", 8000)
            w.write(b"GET / HTTP/1.0\\r\\n\\r\\n")
            raw = await r.read()
            w.close()
            return json.loads(raw.split(b"\\r\\n\\r\\n", 1)[1])["remote"].split(":")[0]

        print(tcpcrypt.run(main(), addr="10.231.{n}.2/24"))
        print(subprocess.run(["ip", "-o", "link", "show", "type", "tun"], capture_output=True,
                             text=True).stdout.strip() or "no tun")
        '''))
    r = netns.run([sys.executable, str(prog)], env=ENV, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.split("\n")[:2] == [f"10.231.{n}.2", "no tun"], r.stdout + r.stderr


@pytest.mark.tun
def test_sigterm_ends_the_program_and_removes_what_run_made(netns, procs, tmp_path):
    from tests.conftest import subnet_index
    prog = tmp_path / "sleeper.py"
    prog.write_text("import asyncio\n"
                    "async def main():\n"
                    "    await asyncio.start_server(lambda r, w: None, None, 7070)  # the stack's\n"
                    "    print('ready', flush=True)\n"
                    "    await asyncio.sleep(60)\n"
                    "asyncio.run(main())\n")
    ctl = tmp_path / "run.sock"
    p = procs.popen([*TCPSTACK, "run", "--addr", f"10.231.{subnet_index()}.2/24",
                     "--control", str(ctl), "--", str(prog)], netns=netns.name, env=ENV,
                    text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert p.stdout.readline() == "ready\n"
    wait_for(ctl.exists, 10, "the control socket")
    p.terminate()
    out, err = p.communicate(timeout=30)
    assert p.returncode == 128 + signal.SIGTERM, err
    assert not ctl.exists()
    assert netns.run(["ip", "-o", "link", "show", "type", "tun"]).stdout.strip() == ""
