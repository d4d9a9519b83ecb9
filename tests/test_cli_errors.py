"""Every ordinary mistake on the `tcpstack` command line ends in one clear line on stderr
and a non-zero exit status (2 for what was typed, as argparse does; 1 for what was found on
the host or the network), never a traceback; and offloads are on by default.  The commands
run as a user runs them (`python3 -m tcpstack ...` in a subprocess); the ones that need a
TUN device run inside network namespaces of the test's."""
from __future__ import annotations

import itertools
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from typing import Iterator

import pytest

from tests.waiting import wait_for
from tcpstack.tools.diagram import build
from tcpstack.wire.ip import build_ipv4
from tcpstack.wire.segment import ACK, SYN, TCPSegment
from tcpstack.wire.tcp import build_tcp

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
CMD = [sys.executable, "-m", "tcpstack"]
_net = itertools.count()


def subnet() -> int:
    """A third octet for 10.231.N.0/24 (namespaces are private; this only eases reading)."""
    return (os.getpid() + 7 * next(_net)) % 200 + 20


def run(args: list[str], *, ns=None, env: dict | None = None, timeout: float = 60,
        prefix: list[str] | None = None, stdin=subprocess.DEVNULL) -> subprocess.CompletedProcess:
    cmd = (prefix or []) + CMD + args
    if ns is not None:
        return ns.run(cmd, timeout=timeout, env=env or ENV, stdin=stdin)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                          env=env or ENV, stdin=stdin)


def one_line(r: subprocess.CompletedProcess, status: int, *patterns: str) -> str:
    """stderr is exactly one non-empty line matching every pattern; the exit status is `status`."""
    assert "Traceback" not in r.stderr, r.stderr
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert len(lines) == 1, r.stderr
    for pat in patterns:
        assert re.search(pat, lines[0]), lines[0]
    assert r.returncode == status, (r.returncode, r.stderr)
    return lines[0]


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen]]:
    """Subprocesses a test starts: each killed and waited for at the end, pass or fail."""
    started: list[subprocess.Popen] = []
    yield started
    for p in started:
        if p.poll() is None:
            p.kill()
        try:
            p.communicate(timeout=30)
        except (subprocess.TimeoutExpired, ValueError):
            pass




# --- what was typed: exit 2, no root needed (nothing is created) ----------------------------

USAGE = [
    (["up", "--addr", "foo"], r"--addr foo: not an IP address"),
    (["up", "--addr", "10.231.0.0/24"], r"10\.231\.0\.0 is the network address of 10\.231\.0\.0/24"),
    (["up", "--addr", "10.231.0.255/24"], r"broadcast address of 10\.231\.0\.0/24"),
    (["up", "--addr", "fd00:231::/64"], r"subnet-router anycast"),
    (["up", "--addr", "224.0.0.1/24"], r"multicast"),
    (["up", "--addr", "10.231.0.2/32"], r"leaves no address for the kernel side"),
    (["up", "--addr", "10.231.0.2/24", "--peer", "10.232.0.1"], r"outside --addr's subnet"),
    (["up", "--addr", "10.231.0.2/24", "--peer", "10.231.0.2"], r"stack's own address"),
    (["up", "--addr", "10.231.0.2/24", "--route", "10.1.0.5/24"], r"did you mean 10\.1\.0\.0/24"),
    (["up", "--addr", "10.231.0.2/24", "--dev", "no/slash"], r"not a valid interface name"),
    (["up", "--addr", "10.231.0.2/24", "--echo", "99999"], r"99999 is not a port number"),
    (["up", "--addr", "fd00:231::2/64", "--mtu", "1000"], r"IPv6 needs at least 1280"),
    (["up", "--addr", "10.231.0.2/24", "--congestion-control", "vegas"],
     r"'vegas': not one the stack has \(bbr, cubic, newreno, reno\)"),
    (["connect", "10.231.0.1", "80", "--addr", "10.231.0.2/24", "--cc", "westwood"],
     r"'westwood': not one the stack has"),
    (["up"], r"--addr"),
    (["connect", "10.231.0.1", "70000", "--addr", "10.231.0.2/24"], r"70000 is not a port number"),
    (["listen", "0", "--addr", "10.231.0.2/24"], r"0 is not a port number"),
    (["connect", "10.231.0.1", "http", "--addr", "10.231.0.2/24"], r"'http' is not a port number"),
    (["connect", "::1", "80", "--addr", "10.231.0.2/24"], r"IPv6 address but the stack is IPv4"),
    (["connect", "no-such-host.invalid", "80", "--addr", "10.231.0.2/24"],
     r"cannot resolve no-such-host\.invalid"),
    (["ping", "-c", "0", "10.231.0.1", "--addr", "10.231.0.2/24"], r"0 is not a count"),
    (["ping", "-i", "-1", "10.231.0.1", "--addr", "10.231.0.2/24"], r"not a number of seconds"),
]


@pytest.mark.parametrize("args,pattern", USAGE, ids=[" ".join(a) for a, _ in USAGE])
def test_usage_mistakes_get_one_line_and_exit_2(args, pattern):
    one_line(run(args), 2, r"^tcpstack", pattern)


# --- stats / trace against missing, dead and several control sockets -------------------------

def test_stats_and_trace_against_a_missing_socket(tmp_path):
    for cmd in ("stats", "trace"):
        r = run([cmd, "--control", str(tmp_path / "none.sock")])
        one_line(r, 1, r"no control socket at .*none\.sock")


def _dead_socket(path: str) -> None:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(path)                     # bound, never listening, closed: what a SIGKILL leaves
    s.close()


def test_stats_against_a_dead_socket_says_so(tmp_path):
    path = str(tmp_path / "dead.sock")
    _dead_socket(path)
    one_line(run(["stats", "--control", path]), 1, r"nothing answers at .*dead\.sock.*exited")


def test_stats_finds_the_one_live_socket_skips_dead_ones_and_asks_when_several(tmp_path):
    env = dict(ENV, TCPSTACK_RUN_DIR=str(tmp_path))
    one_line(run(["stats"], env=env), 1, r"no running tcpstack found")
    _dead_socket(str(tmp_path / "old.sock"))
    one_line(run(["stats"], env=env), 1, r"no running tcpstack found")
    assert not (tmp_path / "old.sock").exists()          # the stale one is removed
    live = []
    try:
        for name in ("a.sock", "b.sock"):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.bind(str(tmp_path / name))
            s.listen()
            live.append(s)
        line = one_line(run(["stats"], env=env), 1, r"2 tcpstack processes are running; "
                                                     r"pick one with --control")
        assert str(tmp_path / "a.sock") in line and str(tmp_path / "b.sock") in line
    finally:
        for s in live:
            s.close()


# --- small things a user sees --------------------------------------------------------------

def test_ping_times_are_readable_in_microseconds_or_milliseconds():
    from tcpstack.tools.cli import fmt_rtt
    assert fmt_rtt(0.000123) == "123 us"
    assert fmt_rtt(0.0012345) == "1.234 ms" or fmt_rtt(0.0012345) == "1.235 ms"


def test_progress_bar_uses_the_size_of_a_regular_file_on_stdin(tmp_path):
    f = tmp_path / "in.bin"
    f.write_bytes(bytes(3_000_000))
    code = ("import sys; from tcpstack.tools.cli import Progress, stdin_size; n = stdin_size(); "
            "p = Progress(True, n); p.sent = n // 2; print(n); print(p.line())")
    with open(f, "rb") as fin:
        r = subprocess.run([sys.executable, "-c", code], stdin=fin, capture_output=True,
                           text=True, env=ENV, timeout=30)
    n, line = r.stdout.splitlines()
    assert n == "3000000"
    assert "50% sent 1.50 of 3.00 MB" in line
    r = subprocess.run([sys.executable, "-c", "from tcpstack.tools.cli import stdin_size; "
                        "print(stdin_size())"], input="x", capture_output=True, text=True,
                       env=ENV, timeout=30)
    assert r.stdout.strip() == "None"                       # a pipe: size unknown


def test_diagram_times_count_from_the_first_packet():
    a, b = bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2])
    def pkt(src, dst, seg):
        return build_ipv4(src, dst, 6, build_tcp(seg, src, dst))
    t = 1_700_000_000.25                                     # a pcap's wall-clock time
    recs = [(t, "", pkt(a, b, TCPSegment(40000, 80, 100, 0, SYN, 65535))),
            (t + 0.5, "", pkt(b, a, TCPSegment(80, 40000, 900, 101, SYN | ACK, 65535)))]
    d = build(recs)
    assert [x.t for x in d.arrows] == [0.0, 0.5] and d.t0 == t


# --- the host: root, TUN devices, namespaces ----------------------------------------------

def _popen(ns, args: list[str], procs: list, **kw) -> subprocess.Popen:
    kw.setdefault("stdout", subprocess.PIPE)
    p = ns.popen(CMD + args, stderr=subprocess.PIPE, text=True, env=ENV, **kw)
    procs.append(p)
    return p


def _stop(p: subprocess.Popen, sig: int = signal.SIGTERM) -> tuple[str, str]:
    p.send_signal(sig)
    return p.communicate(timeout=30)


DROP_ROOT = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


@pytest.mark.tun
def test_not_root_says_what_is_missing(netns):
    if shutil.which("setpriv") is None:
        pytest.skip("needs setpriv (util-linux)")
    # uid 65534 must be able to read the interpreter and the project: not so for a checkout
    # under a mode-700 /root (Debian's default), where Python cannot even open its venv.
    probe = netns.run([*DROP_ROOT, *CMD[:1], "-c", "import tcpstack"], timeout=30, env=ENV)
    if probe.returncode != 0:
        pytest.skip(f"uid 65534 cannot import tcpstack from here ({probe.stderr.strip()[-80:]})")
    n = subnet()
    r = run(["up", "--addr", f"10.231.{n}.2/24"], ns=netns, prefix=DROP_ROOT)
    one_line(r, 1, r"not root and no CAP_NET_ADMIN \(uid 65534\)")


@pytest.mark.tun
def test_root_without_cap_net_admin_says_so(netns):
    if shutil.which("setpriv") is None:
        pytest.skip("needs setpriv (util-linux)")
    n = subnet()
    r = run(["up", "--addr", f"10.231.{n}.2/24"], ns=netns,
            prefix=["setpriv", "--bounding-set=-net_admin", "--inh-caps=-net_admin"])
    one_line(r, 1, r"root but without CAP_NET_ADMIN")


@pytest.mark.tun
def test_no_dev_net_tun_says_so(netns):
    if shutil.which("unshare") is None:
        pytest.skip("needs unshare (util-linux)")
    n = subnet()
    script = ("mount -t tmpfs none /dev/net && exec " + " ".join(CMD)
              + f" up --addr 10.231.{n}.2/24")
    r = netns.run(["unshare", "--mount", "sh", "-c", script], timeout=60, env=ENV)
    one_line(r, 1, r"no /dev/net/tun")


@pytest.mark.tun
def test_address_subnet_device_and_control_socket_in_use_are_refused_and_sigterm_cleans_up(
        netns, tmp_path, procs):
    n = subnet()
    ctl = str(tmp_path / "first.sock")
    first = _popen(netns, ["up", "--addr", f"10.231.{n}.2", "--echo", "7", "--control", ctl], procs)
    wait_for(lambda: os.path.exists(ctl), what="the first stack's control socket")
    dev = re.search(r"tcs\d+x\d+", netns.run(["ip", "-br", "link"]).stdout).group(0)
    other = str(tmp_path / "second.sock")
    one_line(run(["up", "--addr", f"10.231.{n}.9/24", "--control", other], ns=netns), 1,
             rf"10\.231\.{n}\.0/24 .* is already served by {dev} \(10\.231\.{n}\.1/24\)")
    one_line(run(["up", "--addr", f"10.231.{n}.1/16", "--control", other], ns=netns), 1,
             rf"10\.231\.{n}\.1 is already an address of {dev}")
    one_line(run(["up", "--addr", f"10.231.{n + 1}.2/24", "--dev", dev, "--control", other],
                 ns=netns), 1, rf"device {dev} already exists")
    one_line(run(["up", "--addr", f"10.231.{n + 1}.2/24", "--control", ctl], ns=netns), 1,
             r"control socket .*first\.sock: in use by another running tcpstack")
    assert not os.path.exists(other)
    out, err = _stop(first)
    assert first.returncode == 0 and "Traceback" not in err, err
    # --addr without a prefix: /24, said once
    assert err.splitlines()[0] == f"tcpstack: --addr 10.231.{n}.2 has no prefix length: using 10.231.{n}.2/24"
    assert not os.path.exists(ctl) and "tcs" not in netns.run(["ip", "-br", "link"]).stdout


@pytest.mark.tun
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_listen_stopped_by_a_signal_removes_its_control_socket_and_device(netns, tmp_path, procs, sig):
    n = subnet()
    ctl = str(tmp_path / "l.sock")
    p = _popen(netns, ["listen", "7000", "--addr", f"10.231.{n}.2/24", "--control", ctl], procs,
               stdin=subprocess.PIPE)
    wait_for(lambda: os.path.exists(ctl), what="the control socket")
    _, err = _stop(p, sig)
    assert "Traceback" not in err, err
    assert p.returncode == 128 + sig or (sig == signal.SIGINT and p.returncode == 130), (p.returncode, err)
    assert not os.path.exists(ctl)
    assert "tcs" not in netns.run(["ip", "-br", "link"]).stdout
    one_line(run(["stats", "--control", ctl]), 1, r"no control socket at")


@pytest.mark.tun
def test_connect_says_no_answer_or_unreachable(netns):
    n = subnet()
    netns.sysctl("net.ipv4.ip_forward", 1)
    netns.ip("route", "add", "blackhole", "10.97.0.0/16")      # silently dropped
    netns.ip("route", "add", "unreachable", "10.98.0.0/16")    # ICMP host unreachable
    r = run(["connect", "10.97.0.1", "80", "--addr", f"10.231.{n}.2/24", "--timeout", "1.5"], ns=netns)
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert "Traceback" not in r.stderr and r.returncode == 1, r.stderr
    assert lines[-1] == "tcpstack: no answer from 10.97.0.1:80 after 1.5 s", r.stderr
    r = run(["connect", "10.98.0.1", "80", "--addr", f"10.231.{n}.2/24", "--timeout", "20"], ns=netns)
    assert "Traceback" not in r.stderr and r.returncode == 1, r.stderr
    assert r.stderr.splitlines()[-1] == (f"tcpstack: 10.98.0.1:80 unreachable (ICMP host unreachable "
                                         f"from 10.231.{n}.1)"), r.stderr
    r = run(["connect", f"10.231.{n}.1", "9", "--addr", f"10.231.{n}.2/24"], ns=netns)
    assert r.returncode == 1 and r.stderr.splitlines()[-1] == (
        f"tcpstack: 10.231.{n}.1:9 refused the connection (RST: nothing listening there)"), r.stderr


@pytest.mark.tun
def test_a_trace_client_that_leaves_puts_no_traceback_in_ups_log(netns, tmp_path, procs):
    if shutil.which("curl") is None:
        pytest.skip("needs curl")
    n = subnet()
    ctl = str(tmp_path / "up.sock")
    up = _popen(netns, ["up", "--addr", f"10.231.{n}.2/24", "--http", "80", "--control", ctl], procs)
    wait_for(lambda: os.path.exists(ctl), what="the control socket")
    for how in ("kill", "close"):
        tr = subprocess.Popen(CMD + ["trace", "--control", ctl], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, env=ENV)
        procs.append(tr)
        time.sleep(0.3)
        curl = netns.popen(["curl", "-s", "-o", "/dev/null", f"http://10.231.{n}.2/100000000"])
        procs.append(curl)
        time.sleep(0.5)
        if how == "kill":
            tr.kill()
        else:
            tr.stdout.close()                               # `tcpstack trace | head`
        curl.wait(timeout=60)
        _, terr = tr.communicate(timeout=30)
        assert b"Traceback" not in terr, terr
    _, err = _stop(up)
    assert up.returncode == 0 and "Traceback" not in err and "Exception" not in err, err


@pytest.mark.tun
def test_offloads_are_on_by_default_and_off_with_no_offload(netns, tmp_path, procs):
    n = subnet()
    for flag, want in (([], "offloads on"), (["--no-offload"], "offloads off (--no-offload)"),
                       (["--offload"], "offloads on")):
        ctl = str(tmp_path / f"o{len(flag)}{want[-2:]}.sock")
        p = _popen(netns, ["up", "--addr", f"10.231.{n}.2/24", "--control", ctl] + flag, procs)
        wait_for(lambda: os.path.exists(ctl), what="the control socket")
        dev = re.search(r"tcs\d+x\d+", netns.run(["ip", "-br", "link"]).stdout).group(0)
        flags = int(netns.run(["cat", f"/sys/class/net/{dev}/tun_flags"]).stdout, 16)
        _, err = _stop(p)
        assert p.returncode == 0, err
        assert f", {want})" in err.splitlines()[0], err
        assert bool(flags & 0x4000) == (want == "offloads on")   # IFF_VNET_HDR


@pytest.mark.tun
def test_up_says_which_congestion_control_its_connections_run(netns, tmp_path, procs):
    n = subnet()
    for flag, want in (([], "cubic"), (["--congestion-control", "bbr"], "bbr"),
                       (["--cc", "NewReno"], "newreno")):
        ctl = str(tmp_path / f"c{want}.sock")
        p = _popen(netns, ["up", "--addr", f"10.231.{n}.2/24", "--control", ctl] + flag, procs)
        wait_for(lambda: os.path.exists(ctl), what="the control socket")
        _, err = _stop(p)
        assert p.returncode == 0, err
        assert f"), {want}, control " in err.splitlines()[0], err


@pytest.mark.tun
def test_connect_with_a_file_shows_its_size_and_ping_shows_microseconds(netns, tmp_path, procs):
    a, b = subnet(), subnet()
    netns.sysctl("net.ipv4.ip_forward", 1)                  # the kernel routes between the TUNs
    data = os.urandom(3 << 20)
    src = tmp_path / "in.bin"
    src.write_bytes(data)
    with open(tmp_path / "out.bin", "wb") as out:
        lis = _popen(netns, ["listen", "7000", "--addr", f"10.231.{b}.2/24", "--control",
                             str(tmp_path / "l.sock")], procs, stdin=subprocess.DEVNULL, stdout=out)
    wait_for(lambda: os.path.exists(tmp_path / "l.sock"), what="the listener")
    with open(src, "rb") as fin:
        r = netns.run(CMD + ["connect", f"10.231.{b}.2", "7000", "--addr", f"10.231.{a}.2/24",
                             "--progress", "--control", str(tmp_path / "c.sock")],
                      stdin=fin, timeout=60, env=ENV)
    assert r.returncode == 0, r.stderr
    assert "100% sent 3.15 of 3.15 MB" in r.stderr, r.stderr[-500:]
    assert "tcpcrypt TCPCRYPT_ECDHE_Curve25519 AEAD_AES_128_GCM" in r.stderr
    lis.communicate(timeout=30)
    assert lis.returncode == 0 and (tmp_path / "out.bin").read_bytes() == data
    ping = run(["ping", f"10.231.{b}.1", "--addr", f"10.231.{b}.2/24", "-c", "2", "-i", "0.2"],
               ns=netns)
    assert ping.returncode == 0, ping.stderr
    assert len(re.findall(r"icmp_seq=\d time=(\d+ us|\d+\.\d{3} ms)$", ping.stdout, re.M)) == 2, ping.stdout
