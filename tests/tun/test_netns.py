"""Network-namespace helpers on the real kernel (all marked `tun`): namespaces and their cleanup
(also on exceptions and KeyboardInterrupt), setns into a namespace from Python, veth pairs
that ping, netem/tbf qdiscs applied and removed, and removal of leftovers of dead runs."""
from __future__ import annotations

import errno
import os
import re
import socket
import subprocess

import pytest

from tun.device import TunError
from tun.netns import (NetNS, Netem, NetemUnavailable, VethPair, cleanup_stale, enter_netns,
                       netem, netem_available)

pytestmark = pytest.mark.tun


def netns_list() -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def this_netns_inode() -> int:
    return os.stat("/proc/thread-self/ns/net").st_ino


def test_netns_lifecycle():
    ns = NetNS()
    try:
        assert ns.name in netns_list() and ns.exists()
        assert re.fullmatch(rf"tcpcpy-{os.getpid()}-\d+", ns.name)
        lo = ns.run(["ip", "-o", "link", "show", "dev", "lo"])
        assert lo.returncode == 0 and "LOOPBACK,UP" in lo.stdout
        assert ns.run("ping -c1 -W1 127.0.0.1").returncode == 0
        assert ns.run(["sh", "-c", "exit 3"]).returncode == 3
        with pytest.raises(subprocess.CalledProcessError):
            ns.run(["false"], check=True)
    finally:
        ns.close()
    ns.close()
    assert ns.name not in netns_list() and not ns.exists()


def test_two_namespaces_have_distinct_names():
    with NetNS() as a, NetNS() as b:
        assert a.name != b.name


@pytest.mark.parametrize("exc", [RuntimeError, KeyboardInterrupt])
def test_everything_removed_on_exception(exc):
    seen = {}
    with pytest.raises(exc):
        with NetNS() as a, NetNS() as b, VethPair(a, b, "10.231.240.1/24", "10.231.240.2/24") as v:
            seen.update(a=a.name, b=b.name, va=v.name_a)
            p = a.popen(["sleep", "30"])
            seen["proc"] = p
            raise exc()
    assert seen["a"] not in netns_list() and seen["b"] not in netns_list()
    assert seen["proc"].poll() is not None                 # popen'd process terminated
    assert seen["va"] not in subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout


def test_close_ends_processes_it_did_not_start_and_their_children(procs):
    """A command run inside by other means (an asyncio subprocess, a run() that timed out)
    and the children it forked are ended when the namespace closes, not left running in an
    unnamed namespace."""
    with NetNS() as ns:
        sh = procs.popen(["ip", "netns", "exec", ns.name, "sh", "-c",
                          "trap '' TERM; sleep 300 & echo $!; wait"],
                         stdout=subprocess.PIPE, text=True)
        child = int(sh.stdout.readline())
        assert set(ns.pids()) == {sh.pid, child}
    assert sh.wait(timeout=10) is not None                  # ended (SIGKILL: it ignored TERM)
    st = open(f"/proc/{child}/stat").read().rsplit(")", 1)[1].split() if os.path.exists(
        f"/proc/{child}/stat") else ["gone"]
    assert st[0] in ("gone", "Z")                            # its child too (a zombie until reaped)


def test_enter_switches_thread_namespace_and_restores():
    outside = this_netns_inode()
    with NetNS() as ns:
        ns.ip("addr", "add", "10.231.241.1/32", "dev", "lo")
        with ns.enter():
            inside = this_netns_inode()
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        assert inside != outside and this_netns_inode() == outside
        with s:
            s.bind(("10.231.241.1", 0))                    # the socket stays in ns
            r = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            with pytest.raises(OSError) as ei:
                r.bind(("10.231.241.1", 0))                # but this thread is back outside
            assert ei.value.errno == errno.EADDRNOTAVAIL
            r.close()
        with enter_netns(ns.name):
            assert this_netns_inode() == inside
            with pytest.raises(ValueError):
                raise ValueError("body error")             # restored even on error
        assert this_netns_inode() == outside
    with pytest.raises(TunError) as ei2:
        with enter_netns("tcpcpy-does-not-exist"):
            pass
    assert ei2.value.errno == errno.ENOENT
    assert this_netns_inode() == outside


def test_veth_pair_pings_ipv4_and_ipv6():
    with NetNS() as a, NetNS() as b:
        with VethPair(a, b, ["10.231.242.1/24", "fd00:231:f2::1/64"],
                      ["10.231.242.2/24", "fd00:231:f2::2/64"], mtu=1400) as v:
            assert "mtu 1400" in a.ip("link", "show", "dev", v.name_a).stdout
            assert "mtu 1400" in b.ip("link", "show", "dev", v.name_b).stdout
            r4 = a.run("ping -c1 -W2 10.231.242.2")
            assert r4.returncode == 0, r4.stdout + r4.stderr
            r6 = b.run("ping -6 -c1 -W2 fd00:231:f2::1")
            assert r6.returncode == 0, r6.stdout + r6.stderr
        assert a.ip("link", "show", "dev", v.name_a, check=False).returncode != 0
        assert b.ip("link", "show", "dev", v.name_b, check=False).returncode != 0
        v.close()                                          # idempotent


def _qdisc(ns: NetNS, dev: str) -> str:
    return ns.run(["tc", "qdisc", "show", "dev", dev]).stdout


def test_netem_applies_and_removes_qdisc():
    if not netem_available():
        pytest.skip("kernel without sch_netem (CONFIG_NET_SCH_NETEM)")
    with NetNS() as a, NetNS() as b, VethPair(a, b, "10.231.243.1/24", "10.231.243.2/24") as v:
        with netem(a, v.name_a, delay_ms=30, loss_pct=0, duplicate_pct=1, limit=5000) as q:
            shown = _qdisc(a, v.name_a)
            assert "netem" in shown and "delay 30ms" in shown and "duplicate 1%" in shown
            out = a.run("ping -c1 -W2 10.231.243.2").stdout
            rtt = float(re.search(r"time=([\d.]+) ms", out).group(1))
            assert rtt >= 29.0
            q.change(delay_ms=5, jitter_ms=1, loss_pct=2, reorder_pct=10, corrupt_pct=0.5, rate="50mbit")
            shown = _qdisc(a, v.name_a)
            assert "loss 2%" in shown and "reorder 10%" in shown and "corrupt 0.5%" in shown
            assert "rate 50Mbit" in shown
        assert "netem" not in _qdisc(a, v.name_a)


def test_rate_only_works_without_netem_via_tbf():
    with NetNS() as a, NetNS() as b, VethPair(a, b, "10.231.244.1/24", "10.231.244.2/24") as v:
        q = netem(a, v.name_a, rate=10_000_000)
        try:
            shown = _qdisc(a, v.name_a)
            assert q.kind in ("netem", "tbf") and q.kind in shown
            assert "10Mbit" in shown
            assert a.run("ping -c1 -W2 10.231.244.2").returncode == 0
        finally:
            q.close()
        q.close()
        assert q.kind not in _qdisc(a, v.name_a)


def test_netem_unavailable_is_reported():
    if netem_available():
        pytest.skip("this kernel has netem")
    with NetNS() as a:
        with pytest.raises(NetemUnavailable, match="sch_netem"):
            Netem(a, "lo", delay_ms=10)
        assert "netem" not in _qdisc(a, "lo")


def test_cleanup_stale_removes_only_dead_runs():
    p = subprocess.Popen(["true"])
    p.wait()
    dead = p.pid
    prefix = "tcpcpytest"
    stale = NetNS(f"{prefix}-{dead}-0")
    live = NetNS(f"{prefix}-{os.getppid()}-0")      # a living process's namespace: kept
    mine = NetNS(f"{prefix}-{os.getpid()}-0")       # ours: never touched
    other = NetNS(f"other{prefix}-{dead}-0")        # not our prefix: kept
    try:
        removed = cleanup_stale(prefix, if_prefixes=())
        assert removed == [stale.name]
        names = netns_list()
        assert stale.name not in names
        assert live.name in names and mine.name in names and other.name in names
        removed = cleanup_stale(prefix, if_prefixes=(), include_live=True)
        assert removed == [live.name] and mine.name in netns_list()
    finally:
        for ns in (stale, live, mine, other):
            ns.close()
    assert not {stale.name, live.name, mine.name, other.name} & set(netns_list())
