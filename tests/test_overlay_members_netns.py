"""Overlay membership (docs/overlay.md "Membership", docs/membership.md) with real member
nodes in four network namespaces, each node a `python -m tcpstack up` process:

        A (member) ==veth== M ==veth== B (member)
                            ||
                          veth
                            ||
                       X (intruder)

- A and B are member nodes: each has its own key (`tcpstack keygen`) and a peers file that
  lists the other with its overlay address.  B runs a kernel HTTP server (a 20 MB random
  file) and a kernel echo service, both on 127.0.0.1 and both logging every connection and
  request to one file; B's node exposes them (overlay ports 80 and 9000).  A's node serves
  SOCKS5 and forwards a kernel port to B's port 9000.
- X is an intruder: a node with its own key, which no peers file lists (X's own peers file
  lists B, so it is B that must refuse X).
- M is the router between the three hosts' overlay subnets (each host's default route goes
  to M).  For the man-in-the-middle test, M also runs two userspace stacks on two TUN devices
  of its own: one impersonating B's overlay address towards A (policy routing sends what
  arrives from A for B's address into it), one with M's own address that connects to the
  real B.  Both speak tcpcrypt with a = 1 (RFC 8547 4.2) but hold no member key; M copies
  the bytes between the two legs and counts them.

The tests: a member fetches 20 MB through SOCKS5 and reaches the echo service through a
forward (the verified keys in `tcpstack stats`); the intruder is refused before anything
reaches B's services; the relay is caught (both legs reset, not one application byte
relayed); removing A from B's peers file and SIGHUP revokes A's open connection and refuses
its new ones; and bad membership input is one clear line with a non-zero status.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.test_overlay_node import CMD, ENV, listening, stats
from tests.waiting import wait_for
from tun.device import unique_ifname
from tun.netns import NetNS, VethPair

HTTP, ECHO = 8000, 9001                 # B's kernel services (127.0.0.1)
SOCKS, FWD = 1080, 15000                # A's (and X's) SOCKS5 and forward (127.0.0.1)
MITM_TABLE = "100"                      # M's policy-routing table for A's traffic to B
AUTH_LEN = 102                          # one membership message (docs/membership.md)
SIZE = 20 << 20

pytestmark = [pytest.mark.tun, pytest.mark.slow]

# B's kernel services: an HTTP server on the www directory and an echo service; every
# connection (when accepted) and every request goes to the log file, a line each.
SERVICES = textwrap.dedent("""
    import functools, http.server, socket, socketserver, sys, threading
    http_port, echo_port, www, log_path = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
    lock = threading.Lock()

    def log(line):
        with lock, open(log_path, "a") as f:
            f.write(line + "\\n")

    class Handler(http.server.SimpleHTTPRequestHandler):
        protocol_version = "HTTP/1.0"
        def setup(self):
            log(f"http connection from {self.client_address[0]}:{self.client_address[1]}")
            super().setup()
        def log_message(self, fmt, *args):
            log("http request: " + fmt % args)

    class Echo(socketserver.BaseRequestHandler):
        def handle(self):
            log(f"echo connection from {self.client_address[0]}:{self.client_address[1]}")
            n = 0
            try:
                while data := self.request.recv(65536):
                    n += len(data)
                    self.request.sendall(data)
                self.request.shutdown(socket.SHUT_WR)
                log(f"echo: {n} bytes, then EOF")
            except OSError as e:
                log(f"echo: {n} bytes, then {e}")

    class Server(socketserver.ThreadingTCPServer):
        allow_reuse_address = True
        daemon_threads = True

    web = http.server.ThreadingHTTPServer(
        ("127.0.0.1", http_port), functools.partial(Handler, directory=www))
    web.daemon_threads = True
    threading.Thread(target=web.serve_forever, daemon=True).start()
    Server(("127.0.0.1", echo_port), Echo).serve_forever()
""")

# The man in the middle (runs in M's namespace): stack 1 on TUN 1 owns B's overlay address
# and accepts A's connections on B's ports; for each, stack 2 on TUN 2 (M's own address)
# connects to the real B on the same port; the bytes of each leg are written to the other.
# Both stacks speak tcpcrypt with a = 1 (RFC 8547 4.2: the members' mandatory
# application-aware mode admits them) and have no membership key.  Legs are not closed or
# reset by M: each ends only as its far end decides.  What happened is in a JSON file.
MITM = textwrap.dedent("""
    import asyncio, json, os, sys
    from tcpstack.aio.streams import Stack
    from tun.device import async_link, bring_up

    dev1, kern1, addr1, dev2, kern2, addr2, target, ports, out = sys.argv[1:]
    OPTS = dict(app_aware=1)
    conns = []
    tasks = set()

    def save():
        with open(out + ".tmp", "w") as f:
            json.dump(conns, f)
        os.replace(out + ".tmp", out)

    class Leg(asyncio.Protocol):
        def __init__(self, rec, name):
            self.rec, self.name = rec, name
            self.transport = None
            self.other = None
            self.held = bytearray()
        def connection_made(self, transport):
            self.transport = transport
            self.rec[self.name] = "open"
            save()
        def relay(self, data):
            o = self.other
            if o is not None and o.transport is not None and not o.transport.is_closing():
                o.transport.write(data)
                self.rec["relayed_from_" + self.name] += len(data)
            else:
                self.held += data
        def data_received(self, data):
            self.rec["from_" + self.name] += len(data)
            self.relay(bytes(data))
            save()
        def eof_received(self):
            self.rec[self.name] = "eof"
            save()
            return True
        def connection_lost(self, exc):
            if self.rec[self.name] == "open":
                self.rec[self.name] = ("reset" if isinstance(exc, ConnectionResetError)
                                       else "closed" if exc is None else "error")
                self.rec[self.name + "_why"] = f"{type(exc).__name__}: {exc}"
            save()

    async def main():
        s1 = Stack(async_link(bring_up(dev1, kern1)), [addr1])
        s2 = Stack(async_link(bring_up(dev2, kern2)), [addr2])

        def accepted(port):
            rec = {"port": port, "a": "new", "b": "new", "from_a": 0, "from_b": 0,
                   "relayed_from_a": 0, "relayed_from_b": 0}
            conns.append(rec)
            leg_a, leg_b = Leg(rec, "a"), Leg(rec, "b")
            leg_a.other, leg_b.other = leg_b, leg_a

            async def second_leg():
                try:
                    await s2.create_connection(lambda: leg_b, target, port, **OPTS)
                except Exception as e:
                    rec["b"] = f"connect failed: {type(e).__name__}: {e}"
                    save()
                    return
                if leg_a.held:
                    data, leg_a.held = bytes(leg_a.held), bytearray()
                    leg_a.relay(data)
                    save()
            t = asyncio.ensure_future(second_leg())
            tasks.add(t)
            t.add_done_callback(tasks.discard)
            return leg_a

        for p in ports.split(","):
            await s1.create_server(lambda p=int(p): accepted(p), None, int(p), **OPTS)
        save()
        print("ready", flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())
""")

# A kernel client that holds a connection through a forward open: it checks the echo, says
# so, then reports how the connection ended.
HOLD = textwrap.dedent("""
    import socket, sys
    c = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=60)
    c.sendall(b"ping")
    got = b""
    while len(got) < 4:
        more = c.recv(4 - len(got))
        if not more:
            break
        got += more
    print("echoed", got.decode(), flush=True)
    try:
        print("eof" if c.recv(100) == b"" else "data", flush=True)
    except ConnectionResetError:
        print("reset", flush=True)
""")


def keygen(path: Path) -> str:
    r = subprocess.run(CMD + ["keygen", "--out", str(path)], capture_output=True, text=True,
                       env=ENV, timeout=30)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


class FourHosts:
    """Namespaces A, B, X joined to M by a veth each; M routes between the overlay subnets
    10.231.{A,B,X,M}.0/24 (each host's default route goes to M).  The hosts' nodes bring
    their own TUN devices up; the kernel side of each takes the subnet's first address."""

    def __init__(self) -> None:
        base = (os.getpid() * 4) % 240 + 2          # four /24s: base .. base+3
        self.idx = {"a": base, "b": base + 1, "x": base + 2, "m": base + 3}
        self.addr = {h: f"10.231.{i}.2" for h, i in self.idx.items()}
        self.ns: dict[str, NetNS] = {}
        self.veths: dict[str, VethPair] = {}

    def __enter__(self) -> "FourHosts":
        try:
            for h in ("a", "b", "x", "m"):
                self.ns[h] = NetNS()
            m = self.ns["m"]
            m.sysctl("net.ipv4.ip_forward", 1)
            for conf in ("all", "default"):           # M's TUN 1 sends as B's address
                m.sysctl(f"net.ipv4.conf.{conf}.rp_filter", 0)
            base = self.idx["a"]
            for n, h in enumerate(("a", "b", "x")):
                host_ip, m_ip = f"10.232.{base}.{4 * n + 1}", f"10.232.{base}.{4 * n + 2}"
                self.veths[h] = VethPair(self.ns[h], m, f"{host_ip}/30", f"{m_ip}/30")
                self.ns[h].sysctl("net.ipv4.ip_forward", 1)
                self.ns[h].ip("route", "add", "default", "via", m_ip)
                m.ip("route", "add", f"10.231.{self.idx[h]}.0/24", "via", host_ip)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def m_if(self, h: str) -> str:
        """M's interface towards host h."""
        return self.veths[h].name_b

    def __exit__(self, *exc: object) -> None:
        for v in self.veths.values():
            v.close()
        for ns in self.ns.values():
            ns.close()


class World:
    def __init__(self, net: FourHosts, tmp: Path, procs: Any) -> None:
        self.net, self.tmp, self.procs = net, tmp, procs
        self.ns = net.ns
        self.addr = net.addr
        self.pub: dict[str, str] = {}
        self.ctl = {h: str(tmp / f"{h}.sock") for h in ("a", "b", "x")}
        self.nodes: dict[str, subprocess.Popen[Any]] = {}
        self.service_log = tmp / "services.log"
        self.data = b""

    def log(self, h: str) -> str:
        return (self.tmp / f"{h}.log").read_text()

    def logs(self) -> str:
        return "".join(f"\n--- node {h.upper()}:\n{self.log(h)}" for h in self.nodes) + \
            f"\n--- services:\n{self.services()}"

    def services(self) -> str:
        return self.service_log.read_text() if self.service_log.exists() else ""

    def start_node(self, h: str, *args: str) -> None:
        with open(self.tmp / f"{h}.log", "w") as log:      # (the node has its own copy)
            self.nodes[h] = self.procs.popen(
                CMD + ["up", "--addr", f"{self.addr[h]}/24", "--control", self.ctl[h],
                       "--key", str(self.tmp / f"{h}.key"), "--peers", str(self.tmp / f"peers-{h}"),
                       *args], netns=self.ns[h], env=ENV, stderr=log)

    def curl(self, h: str, url: str, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return self.ns[h].run(["curl", "-sS", "--max-time", str(timeout), "--socks5-hostname",
                               f"127.0.0.1:{SOCKS}", url, *args], timeout=timeout + 10)

    def socat(self, h: str, data: bytes, t: float = 20) -> subprocess.CompletedProcess[bytes]:
        """A kernel client through h's forward: sends `data`, half-closes, reads for up to
        t seconds more (socat -t).  socat (1.7.4) reports a reset as a warning, with -d, and
        still exits with 0: a reset is `b"Connection reset by peer" in r.stderr`."""
        return subprocess.run(["ip", "netns", "exec", self.ns[h].name, "socat", "-d", "-t", str(t),
                               "-", f"TCP:127.0.0.1:{FWD}"], input=data, capture_output=True,
                              timeout=t + 30)


@pytest.fixture
def world(tmp_path: Path, procs: Any) -> Iterator[World]:
    """The four hosts; nodes A, B (members) and X (intruder) running; B's services up."""
    if not shutil.which("socat") or not shutil.which("curl"):
        pytest.skip("needs socat and curl")
    with FourHosts() as net:
        w = World(net, tmp_path, procs)
        for h in ("a", "b", "x"):
            w.pub[h] = keygen(tmp_path / f"{h}.key")
        a, b = w.addr["a"], w.addr["b"]
        (tmp_path / "peers-a").write_text(f"{w.pub['b']} {b}  # node B\n")
        (tmp_path / "peers-b").write_text(f"# B's members\n{w.pub['a']} {a}  # node A\n")
        (tmp_path / "peers-x").write_text(f"{w.pub['b']} {b}  # X knows B; B does not know X\n")
        www = tmp_path / "www"
        www.mkdir()
        w.data = os.urandom(SIZE)
        (www / "big.bin").write_bytes(w.data)
        (www / "index.html").write_text("members only\n")
        procs.popen([sys.executable, "-c", SERVICES, str(HTTP), str(ECHO), str(www),
                     str(w.service_log)], netns=net.ns["b"], stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL)
        w.start_node("b", "--expose", f"80:127.0.0.1:{HTTP}", "--expose", f"9000:127.0.0.1:{ECHO}")
        for h in ("a", "x"):
            w.start_node(h, "--socks5", str(SOCKS), "--forward", f"{FWD}:{b}:9000")
        try:
            for h, ctl in w.ctl.items():
                wait_for(lambda: os.path.exists(ctl) or w.nodes[h].poll() is not None,
                         timeout=30, what=f"node {h}'s control socket")
                assert w.nodes[h].poll() is None, w.logs()
            wait_for(lambda: listening(net.ns["a"], SOCKS) and listening(net.ns["x"], SOCKS)
                     and listening(net.ns["b"], HTTP) and listening(net.ns["b"], ECHO),
                     what="the services")
        except TimeoutError:
            raise AssertionError(w.logs()) from None
        try:
            yield w
            # the nodes are other processes: the autouse ERROR check cannot see their logs
            bad = [ln for h in w.nodes for ln in w.log(h).splitlines()
                   if re.search(r" (ERROR|CRITICAL) |^Traceback", ln)]
            assert not bad, w.logs()
        finally:
            print(w.logs())
            procs.close()          # the nodes (and their TUN devices) before the namespaces


def bridges(ctl: str) -> list[dict[str, Any]]:
    return list(stats(ctl)["overlay"]["bridges"])


def test_member_fetches_20mb_through_socks5_and_stats_show_the_peers(world: World,
                                                                     tmp_path: Path) -> None:
    w = world
    a, b = w.addr["a"], w.addr["b"]
    out = tmp_path / "got.bin"
    # a rate limit keeps the bridges open long enough to read both nodes' stats
    curl = w.procs.popen(["curl", "-sS", "--max-time", "60", "--limit-rate", "3M",
                          "--socks5-hostname", f"127.0.0.1:{SOCKS}", f"http://{b}/big.bin",
                          "-o", str(out)], netns=w.ns["a"], stderr=subprocess.PIPE, text=True)
    try:
        ba = wait_for(lambda: [x for x in bridges(w.ctl["a"])
                               if x["kind"] == "socks5" and x["stack"]["remote"] == f"{b}:80"],
                      what="A's bridge")[0]
        bb = wait_for(lambda: [x for x in bridges(w.ctl["b"])
                               if x["stack"]["remote"] == ba["stack"]["local"]],
                      what="B's bridge")[0]
    except TimeoutError:
        raise AssertionError(w.logs()) from None
    # each node names the other's verified key on the bridged connection
    assert ba["tcpcrypt_peer"] == w.pub["b"] and bb["tcpcrypt_peer"] == w.pub["a"], (ba, bb)
    assert ba["encrypted"] and bb["encrypted"] and ba["session_id"] == bb["session_id"]
    assert bb["kind"] == "expose" and bb["stack"]["local"] == f"{b}:80"
    assert ba["stack"]["local"].startswith(f"{a}:")
    _, err = curl.communicate(timeout=90)
    assert curl.returncode == 0, (err, w.logs())
    assert hashlib.sha256(out.read_bytes()).hexdigest() == hashlib.sha256(w.data).hexdigest()
    log = w.services()
    assert log.count("http connection from 127.0.0.1:") == 1, log
    assert '"GET /big.bin HTTP/1.1" 200' in log, log


def test_member_reaches_the_exposed_echo_service_through_a_forward(world: World) -> None:
    w = world
    data = os.urandom(2 << 20)
    r = w.socat("a", data)
    assert r.returncode == 0, (r.stderr, w.logs())
    assert len(r.stdout) == len(data) and r.stdout == data      # every byte, both ways
    wait_for(lambda: f"echo: {len(data)} bytes, then EOF" in w.services(), what="the echo log")
    assert w.services().count("echo connection from 127.0.0.1:") == 1, w.services()
    tot = stats(w.ctl["b"])["overlay"]["totals"]
    assert tot["bridged"] == 1 and tot["connect_failures"] == 0, tot


def test_intruder_is_refused_and_nothing_reaches_the_services(world: World) -> None:
    w = world
    b, x = w.addr["b"], w.addr["x"]
    # SOCKS5: X's node verifies B (X lists B) but B does not admit X: B resets the
    # connection during the membership exchange, before (X'01', curl 97) or just after X's
    # SOCKS5 reply (curl 52/55/56: empty reply, send or receive failure)
    r = w.curl("x", f"http://{b}/index.html")
    assert r.returncode in (52, 55, 56, 97) and r.stdout == "", (r.returncode, r.stderr, w.logs())
    if r.returncode == 97:
        assert r.stderr.rstrip().endswith("(1)"), r.stderr       # X'01' general failure
    # the forward: the kernel client's connection is reset
    r2 = w.socat("x", b"let me in\n")
    assert b"Connection reset by peer" in r2.stderr, (r2, w.logs())
    assert r2.stdout == b""
    # B's node says whom it refused: X's key and X's address, for both connections
    wait_for(lambda: w.log("b").count(f"refused peer {x}:") >= 2, what="B's warnings")
    lines = [ln for ln in w.log("b").splitlines() if f"refused peer {x}:" in ln]
    assert all(w.pub["x"] in ln and "not admitted" in ln for ln in lines), lines
    assert w.services() == ""                    # nothing reached B's kernel services
    assert not [br for br in bridges(w.ctl["b"])]
    assert stats(w.ctl["b"])["overlay"]["totals"]["bridged"] == 0


def test_man_in_the_middle_is_caught_and_relays_no_application_byte(world: World,
                                                                    tmp_path: Path) -> None:
    w = world
    net = w.net
    m = w.ns["m"]
    a, b, maddr = w.addr["a"], w.addr["b"], w.addr["m"]
    dev1, dev2 = unique_ifname("tct"), unique_ifname("tct")
    report = tmp_path / "mitm.json"
    mitm = w.procs.popen([sys.executable, "-c", MITM, dev1, f"10.233.{net.idx['m']}.1/30", b,
                          dev2, f"10.231.{net.idx['m']}.1/24", maddr, b, "80,9000", str(report)],
                         netns=m, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    assert mitm.stdout is not None
    line = mitm.stdout.readline()
    assert line == "ready\n", (line, mitm.stderr.read() if mitm.poll() is not None else "")
    # what A sends to B's overlay address goes into M's TUN 1 (its stack 1 owns that
    # address); M's stack 2 reaches the real B through M's main table
    m.ip("rule", "add", "iif", net.m_if("a"), "lookup", MITM_TABLE, "priority", "100")
    m.ip("route", "add", f"{b}/32", "dev", dev1, "table", MITM_TABLE)

    def conns() -> list[dict[str, Any]]:
        return json.loads(report.read_text()) if report.exists() else []

    def ended(c: dict[str, Any]) -> bool:
        return c["a"] not in ("new", "open") and c["b"] not in ("new", "open")

    # SOCKS5 (curl) and the forward (socat, which writes at once): both through M
    r = w.curl("a", f"http://{b}/index.html")
    r2 = w.socat("a", b"GET /secret HTTP/1.0\r\n\r\n" * 10, t=30)
    try:
        got = wait_for(lambda: len(conns()) == 2 and all(ended(c) for c in conns()) and conns(),
                       what="both connections through M to end")
    except TimeoutError:
        raise AssertionError((conns(), w.logs())) from None
    # A's node detected the relay before it reported a connection: SOCKS5 X'01', curl 97
    assert r.returncode == 97 and r.stderr.rstrip().endswith("(1)"), (r.stderr, w.logs())
    assert r.stdout == ""
    assert b"Connection reset by peer" in r2.stderr, (r2, w.logs())
    assert r2.stdout == b""
    for c in got:
        # both legs were reset by their far ends (A's node and B's node), M reset nothing
        assert c["a"] == "reset" and c["b"] == "reset", c
        # each end sent its 102-byte membership message and nothing else: beyond the two
        # authentication messages, not one application byte crossed M in either direction
        assert c["from_a"] == c["relayed_from_a"] == AUTH_LEN, c
        assert c["from_b"] == c["relayed_from_b"] == AUTH_LEN, c
    assert sorted(c["port"] for c in got) == [80, 9000]
    assert w.services() == ""                    # nothing reached B's kernel services
    # both members name the relay: a signature over another session ID
    for h, peer in (("a", f"refused peer {b}:"), ("b", f"refused peer {maddr}:")):
        lines = [ln for ln in w.log(h).splitlines() if peer in ln]
        assert len(lines) == 2 and all("bad signature" in ln for ln in lines), (h, w.logs())
    for h in ("a", "b"):
        assert stats(w.ctl[h])["overlay"]["totals"]["bridged"] == 0


def test_removed_member_is_revoked_on_sighup(world: World, tmp_path: Path) -> None:
    w = world
    a, b = w.addr["a"], w.addr["b"]
    node_b = w.nodes["b"]
    peers_b = tmp_path / "peers-b"
    hold = w.procs.popen([sys.executable, "-c", HOLD, str(FWD)], netns=w.ns["a"],
                         stdout=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: [x for x in bridges(w.ctl["b"]) if x["bytes_to_stack"] == 4],
                 what="the held connection's echo")
    except TimeoutError:
        raise AssertionError(w.logs()) from None
    # a malformed peers file: all or nothing, the old list stays, the node says why
    good = peers_b.read_text()
    peers_b.write_text(good + "tcpcrypt-ed25519 AAAA 10.0.0.1\n")
    node_b.send_signal(signal.SIGHUP)
    wait_for(lambda: "peers file not reloaded" in w.log("b"), what="B's refusal to reload")
    assert (f"peers file not reloaded, the old list stays: {peers_b}:3: " in w.log("b")), w.logs()
    assert hold.poll() is None and node_b.poll() is None
    r = w.curl("a", f"http://{b}/index.html")
    assert r.stdout == "members only\n", (r.stderr, w.logs())
    # A removed: SIGHUP re-reads the file and resets A's open connection (revoke)
    peers_b.write_text(f"# nobody but B itself\n{w.pub['b']} 10.0.0.9\n")
    node_b.send_signal(signal.SIGHUP)
    wait_for(lambda: "peers file reloaded" in w.log("b"), what="B's reload")
    assert "peers file reloaded: 1 members (+1 -1), 1 connection(s) revoked" in w.log("b"), w.logs()
    assert hold.communicate(timeout=30)[0].split("\n") == ["echoed ping", "reset", ""], w.logs()
    assert [ln for ln in w.log("b").splitlines() if f"revoking connection {b}:9000 -> {a}:" in ln
            and f"of {w.pub['a']}: " in ln], w.logs()
    seen = w.services()
    # new connections from A are refused: SOCKS5 and the forward
    r = w.curl("a", f"http://{b}/index.html")
    assert r.returncode in (52, 55, 56, 97) and r.stdout == "", (r.returncode, r.stderr, w.logs())
    if r.returncode == 97:
        assert r.stderr.rstrip().endswith("(1)"), r.stderr       # X'01' general failure
    r2 = w.socat("a", b"ping")
    assert b"Connection reset by peer" in r2.stderr, (r2, w.logs())
    wait_for(lambda: w.log("b").count(f"refused peer {a}:") >= 2, what="B's warnings")
    assert all(w.pub["a"] in ln and "not admitted" in ln
               for ln in w.log("b").splitlines() if f"refused peer {a}:" in ln)
    time.sleep(0.5)
    assert w.services() == seen                  # nothing new reached B's services
    assert node_b.poll() is None                 # SIGHUP did not stop the member node


def test_bad_membership_input_is_one_line(tmp_path: Path) -> None:
    """What tests/test_overlay_node.py's test_cli_mistakes_are_one_line does not cover
    (it has: both files missing, --key without --peers, --plain, a key readable by others
    (0644), a peers file whose first line is not a key)."""
    def up(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(CMD + ["up", "--addr", "10.9.0.2/24", *args], capture_output=True,
                              text=True, env=ENV, timeout=60)

    key, peers = tmp_path / "node.key", tmp_path / "peers"
    pub = keygen(key)
    other = keygen(tmp_path / "other.key")
    files = ["--key", str(key), "--peers", str(peers)]
    # a missing peers file (the key is fine): status 1, the file named
    r = up(*files)
    assert (r.returncode, r.stderr) == (1, f"tcpstack: --peers {peers}: no such file\n")
    # malformed lines further down: the file and the line
    for text, line in [
        (f"# members\n{other} 10.231.6.2\n{pub} 10.0.0.1/24  # host bits\n",
         f"tcpstack: {peers}:3: '10.0.0.1/24' has host bits set"),
        (f"{other} 10.231.6.2\n\n{other} 10.231.7.2\n",
         f"tcpstack: {peers}:3: duplicate key"),
        (f"{other} 10.231.6.2 nodeb\n", f"tcpstack: {peers}:1: 'nodeb'"),
        (f"{other.split()[0]} AAAA 10.231.6.2\n", f"tcpstack: {peers}:1: public key 'AAAA'"),
    ]:
        peers.write_text(text)
        r = up(*files)
        assert r.returncode == 2 and r.stderr.startswith(line) and r.stderr.count("\n") == 1, \
            (text, r.stderr)
    peers.write_text(f"{other} 10.231.6.2\n")
    # a key file only the group may read is still too open (as ssh); so is one others may write
    for mode in (0o640, 0o602):
        key.chmod(mode)
        r = up(*files)
        assert r.returncode == 1 and r.stderr.startswith(
            f"tcpstack: --key: {key}: permissions {mode:04o} are too open") \
            and r.stderr.count("\n") == 1, r.stderr
    key.chmod(0o600)
    # not a key, a directory
    bad = tmp_path / "bad.key"
    bad.write_text("not a key\n")
    bad.chmod(0o600)
    r = up("--key", str(bad), "--peers", str(peers))
    assert r.returncode == 1 and r.stderr.startswith(f"tcpstack: --key: {bad}: ") \
        and r.stderr.count("\n") == 1, r.stderr
    d = tmp_path / "keydir"
    d.mkdir(mode=0o700)
    r = up("--key", str(d), "--peers", str(peers))
    assert r.returncode == 1 and r.stderr.startswith(f"tcpstack: --key: {d}: ") \
        and r.stderr.count("\n") == 1, r.stderr
    # the same mistakes from a config file: relative paths are the file's directory's
    conf_dir = tmp_path / "etc"
    conf_dir.mkdir()
    conf = conf_dir / "overlay.toml"
    conf.write_text('address = "10.9.0.2/24"\nkey = "node.key"\npeers = "peers"\n')
    r = subprocess.run(CMD + ["up", "--config", str(conf)], capture_output=True, text=True,
                       env=ENV, timeout=60)
    assert (r.returncode, r.stderr) == (1, f"tcpstack: --key {conf_dir / 'node.key'}: no such file\n")
    shutil.copy(key, conf_dir / "node.key")
    (conf_dir / "peers").write_text(f"{other} 10.231.6.2\n{other}\n")
    r = subprocess.run(CMD + ["up", "--config", str(conf)], capture_output=True, text=True,
                       env=ENV, timeout=60)
    assert r.returncode == 2 and r.stderr.startswith(f"tcpstack: {conf_dir / 'peers'}:2: duplicate key") \
        and r.stderr.count("\n") == 1, r.stderr
