"""Network-namespace test topologies: namespaces, veth pairs, netem/tbf impairments, TUN devices
created inside a namespace.  Linux only, needs root (CAP_NET_ADMIN + CAP_SYS_ADMIN).

Every helper is a synchronous context manager that removes everything it created on exit,
including on an exception or KeyboardInterrupt; objects still alive at interpreter exit are
removed by an atexit hook, and cleanup_stale() removes leftovers of crashed runs (only names
with our prefix whose creating process is gone).  Closing a namespace ends every process still
inside it (end_processes_in), so a timed-out command cannot outlive its namespace.  Names embed the pid and a counter, so
parallel runs never collide: namespaces "tcpcpy-<pid>-<n>", interfaces "tct<pid>x<n>" (TUN)
and "tcv<pid>x<n>a/b" (veth).

Traffic stays inside namespaces we created: use private test ranges such as 10.231.x.y/24 and
fd00:231:x::/64 there, never the host's addresses.

Kernels without sch_netem (this project's CI VM has none; netem_available() tells) still get
a faulty network: ImpairedLink wraps any link (AsyncTun) and applies netem's impairments in
userspace, per direction, on the asyncio loop, from a seeded RNG.

Entering a namespace from Python (enter_netns) uses setns(2) on the calling thread only
(os.setns on Python 3.12+, libc through ctypes on 3.11) and restores the thread's original
namespace afterwards; file descriptors opened inside (a TUN device, a socket) stay bound to
that namespace and remain usable from the original one.
"""
from __future__ import annotations

import atexit
import contextlib
import errno
import itertools
import logging
import os
import re
import shlex
import signal
import subprocess
import threading
import time
import weakref
from typing import Any, Sequence

from .device import NETNS_DIR, TunDevice, TunError, enter_netns, run_ip, unique_ifname

log = logging.getLogger(__name__)

__all__ = [
    "NetNS", "VethPair", "Netem", "netem", "TunInNamespace", "enter_netns", "cleanup_stale",
    "netem_available", "NetemUnavailable", "netns_pids", "end_processes_in", "NS_PREFIX",
    "IF_PREFIX_TUN", "IF_PREFIX_VETH",
]

NS_PREFIX = "tcpcpy"
IF_PREFIX_TUN = "tct"
IF_PREFIX_VETH = "tcv"

_counter = itertools.count()
_live: "weakref.WeakSet[Any]" = weakref.WeakSet()     # objects to clean at exit
_live_lock = threading.Lock()


class NetemUnavailable(TunError):
    """The running kernel has no sch_netem (CONFIG_NET_SCH_NETEM)."""




def _unique_suffix() -> str:
    return f"{os.getpid()}x{next(_counter)}"


def _register(obj: Any) -> None:
    with _live_lock:
        _live.add(obj)


def _unregister(obj: Any) -> None:
    with _live_lock:
        _live.discard(obj)


@atexit.register
def _cleanup_live() -> None:
    with _live_lock:
        objs = list(_live)
    # Namespaces last: deleting them first would take their interfaces along anyway.
    for obj in sorted(objs, key=lambda o: isinstance(o, NetNS)):
        try:
            obj.close()
        except Exception as e:            # pragma: no cover - best effort at exit
            log.warning("atexit cleanup of %r failed: %s", obj, e)


# --- namespaces -------------------------------------------------------------------------------

def _ns_name(ns: "NetNS | str | None") -> str | None:
    return ns.name if isinstance(ns, NetNS) else ns


class NetNS:
    """A network namespace of our own (`ip netns add`), loopback up; deleted on close/exit.

    run()/popen() execute commands inside it through `ip netns exec`; processes started with
    popen() are terminated on close, and so is any other process still inside it (a run()
    that timed out, an asyncio subprocess, their children): SIGTERM, SIGKILL after a grace.  enter() switches the calling thread into it.
    """

    def __init__(self, name: str | None = None, *, prefix: str = NS_PREFIX,
                 loopback_up: bool = True, ipv6: bool = True) -> None:
        self.name = name or f"{prefix}-{os.getpid()}-{next(_counter)}"
        self._procs: list[subprocess.Popen[Any]] = []
        self._closed = False
        self._created = False
        try:
            run_ip(["netns", "add", self.name])
            self._created = True
            _register(self)
            if loopback_up:
                run_ip(["link", "set", "dev", "lo", "up"], self.name)
            if ipv6:
                self.sysctl("net.ipv6.conf.all.disable_ipv6", "0", check=False)
                self.sysctl("net.ipv6.conf.default.disable_ipv6", "0", check=False)
        except BaseException:
            self.close()
            raise

    def _cmd(self, cmd: str | Sequence[str]) -> list[str]:
        args = shlex.split(cmd) if isinstance(cmd, str) else list(cmd)
        return ["ip", "netns", "exec", self.name] + args

    def run(self, cmd: str | Sequence[str], *, check: bool = False, timeout: float | None = 30,
            **kw: Any) -> subprocess.CompletedProcess[Any]:
        """subprocess.run(cmd) inside the namespace (output captured as text unless overridden)."""
        kw.setdefault("capture_output", "stdout" not in kw and "stderr" not in kw)
        kw.setdefault("text", True)
        return subprocess.run(self._cmd(cmd), check=check, timeout=timeout, **kw)

    def popen(self, cmd: str | Sequence[str], **kw: Any) -> subprocess.Popen[Any]:
        """subprocess.Popen(cmd) inside the namespace; terminated when the namespace closes."""
        p = subprocess.Popen(self._cmd(cmd), **kw)
        self._procs.append(p)
        return p

    def ip(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """`ip -n NAME args...`"""
        return run_ip(list(args), self.name, check=check)

    def sysctl(self, key: str, value: str | int, *, check: bool = True) -> None:
        """Write /proc/sys/<key> inside the namespace."""
        p = self.run(["sysctl", "-q", "-w", f"{key}={value}"])
        if check and p.returncode != 0:
            raise TunError(errno.EIO, f"sysctl {key}={value} in {self.name}: {p.stderr.strip()}")

    def enter(self) -> contextlib.AbstractContextManager[None]:
        """Context manager: the calling thread is inside this namespace for the body."""
        return enter_netns(self.name)

    def exists(self) -> bool:
        return os.path.exists(os.path.join(NETNS_DIR, self.name))

    def close(self) -> None:
        """Terminate our processes and delete the namespace (with every interface in it). Idempotent."""
        if self._closed:
            return
        self._closed = True
        for p in self._procs:
            if p.poll() is None:
                p.terminate()
        for p in self._procs:
            try:
                p.wait(timeout=2)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self._procs.clear()
        if self._created:
            self._end_processes_inside()
            r = run_ip(["netns", "del", self.name], check=False)
            if r.returncode != 0 and self.exists():
                log.warning("ip netns del %s: %s", self.name, r.stderr.strip())
        _unregister(self)

    def pids(self) -> list[int]:
        """Processes whose network namespace this is (`ip netns pids`), not counting ours."""
        return netns_pids(self.name)

    def _end_processes_inside(self) -> None:
        end_processes_in(self.name)

    def __enter__(self) -> "NetNS":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<NetNS {self.name}{' closed' if self._closed else ''}>"


# --- veth -------------------------------------------------------------------------------------

class VethPair:
    """A veth pair with end a in ns_a and end b in ns_b (None: the current namespace — avoid in
    tests), each with its address(es) (with prefix length), MTU, and up.  Deleted on close."""

    def __init__(self, ns_a: NetNS | str | None, ns_b: NetNS | str | None,
                 addr_a: str | Sequence[str] | None, addr_b: str | Sequence[str] | None,
                 mtu: int = 1500, *, names: tuple[str, str] | None = None) -> None:
        suffix = _unique_suffix()
        self.name_a, self.name_b = names or (f"{IF_PREFIX_VETH}{suffix}a", f"{IF_PREFIX_VETH}{suffix}b")
        self.ns_a, self.ns_b = _ns_name(ns_a), _ns_name(ns_b)
        self._closed = False
        self._created = False
        cmd = ["link", "add", self.name_a]
        if self.ns_a:
            cmd += ["netns", self.ns_a]
        cmd += ["mtu", str(mtu), "type", "veth", "peer", "name", self.name_b]
        if self.ns_b:
            cmd += ["netns", self.ns_b]
        cmd += ["mtu", str(mtu)]
        try:
            run_ip(cmd)
            self._created = True
            _register(self)
            for name, ns, addrs in ((self.name_a, self.ns_a, addr_a), (self.name_b, self.ns_b, addr_b)):
                for addr in ([addrs] if isinstance(addrs, str) else list(addrs or [])):
                    run_ip(["addr", "add", addr, "dev", name] + (["nodad"] if ":" in addr else []), ns)
                run_ip(["link", "set", "dev", name, "up"], ns)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Delete the pair (deleting one end removes both).  Idempotent; fine if a namespace
        holding an end is already gone."""
        if self._closed:
            return
        self._closed = True
        if self._created:
            for name, ns in ((self.name_a, self.ns_a), (self.name_b, self.ns_b)):
                if ns and not os.path.exists(os.path.join(NETNS_DIR, ns)):
                    continue
                if run_ip(["link", "del", "dev", name], ns, check=False).returncode == 0:
                    break
        _unregister(self)

    def __enter__(self) -> "VethPair":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<VethPair {self.ns_a}:{self.name_a} <-> {self.ns_b}:{self.name_b}>"


# --- netem ------------------------------------------------------------------------------------

_netem_ok: bool | None = None


def netem_available() -> bool:
    """Whether this kernel has sch_netem (probed once, on a loopback in a throwaway namespace)."""
    global _netem_ok
    if _netem_ok is None:
        with NetNS(prefix=NS_PREFIX + "-probe") as ns:
            r = ns.run(["tc", "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms"])
            _netem_ok = r.returncode == 0
    return _netem_ok


def _netem_args(delay_ms: float, jitter_ms: float, loss_pct: float, reorder_pct: float,
                duplicate_pct: float, corrupt_pct: float, rate: str | int | None,
                limit: int | None) -> list[str]:
    args: list[str] = []
    if limit is not None:
        args += ["limit", str(limit)]
    if delay_ms or jitter_ms or reorder_pct:
        args += ["delay", f"{delay_ms}ms"]
        if jitter_ms:
            args += [f"{jitter_ms}ms"]
    if loss_pct:
        args += ["loss", "random", f"{loss_pct}%"]
    if duplicate_pct:
        args += ["duplicate", f"{duplicate_pct}%"]
    if corrupt_pct:
        args += ["corrupt", f"{corrupt_pct}%"]
    if reorder_pct:
        args += ["reorder", f"{reorder_pct}%"]       # netem: needs a delay to reorder against
    if rate is not None:
        args += ["rate", str(rate) if isinstance(rate, str) else f"{int(rate)}bit"]
    return args


class Netem:
    """`tc qdisc replace dev DEV root netem ...` in namespace ns; close() deletes the root qdisc.

    rate: a tc rate string ("100mbit") or bits per second.  If the kernel has no netem and only
    `rate` is asked for, a tbf qdisc is used instead (`kind` says which); any other impairment
    without netem raises NetemUnavailable.
    """

    def __init__(self, ns: NetNS | str | None, dev: str, *, delay_ms: float = 0, jitter_ms: float = 0,
                 loss_pct: float = 0, reorder_pct: float = 0, duplicate_pct: float = 0,
                 corrupt_pct: float = 0, rate: str | int | None = None, limit: int | None = None) -> None:
        self.ns, self.dev = _ns_name(ns), dev
        self.kind = "netem"
        self._closed = False
        self._applied = False
        self.change(delay_ms=delay_ms, jitter_ms=jitter_ms, loss_pct=loss_pct, reorder_pct=reorder_pct,
                    duplicate_pct=duplicate_pct, corrupt_pct=corrupt_pct, rate=rate, limit=limit)

    def _tc(self, args: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = (["ip", "netns", "exec", self.ns] if self.ns else []) + ["tc"] + args
        p = subprocess.run(cmd, capture_output=True, text=True)
        if check and p.returncode != 0:
            err = p.stderr.strip()
            if "netem" in args and "unknown" in err.lower():
                raise NetemUnavailable(errno.EOPNOTSUPP, f"{' '.join(cmd)}: {err} (no sch_netem in this kernel)")
            raise TunError(errno.EIO, f"{' '.join(cmd)} failed: {err}")
        return p

    def change(self, **kw: Any) -> None:
        """Replace the impairment (same keywords as the constructor)."""
        args = _netem_args(kw.get("delay_ms", 0), kw.get("jitter_ms", 0), kw.get("loss_pct", 0),
                           kw.get("reorder_pct", 0), kw.get("duplicate_pct", 0),
                           kw.get("corrupt_pct", 0), kw.get("rate"), kw.get("limit"))
        base = ["qdisc", "replace", "dev", self.dev, "root"]
        try:
            self._tc(base + ["netem"] + args)
            self.kind = "netem"
        except NetemUnavailable:
            only_rate = kw.get("rate") is not None and not any(
                kw.get(k) for k in ("delay_ms", "jitter_ms", "loss_pct", "reorder_pct",
                                    "duplicate_pct", "corrupt_pct"))
            if not only_rate:
                raise
            rate = kw["rate"]
            rate_s = rate if isinstance(rate, str) else f"{int(rate)}bit"
            self._tc(base + ["tbf", "rate", rate_s, "burst", "64kb", "latency", "100ms"])
            self.kind = "tbf"
        self._applied = True
        _register(self)

    def close(self) -> None:
        """Delete the root qdisc (back to the default).  Idempotent; fine if the device is gone."""
        if self._closed:
            return
        self._closed = True
        if self._applied and (self.ns is None or os.path.exists(os.path.join(NETNS_DIR, self.ns))):
            self._tc(["qdisc", "del", "dev", self.dev, "root"], check=False)
        _unregister(self)

    remove = close

    def __enter__(self) -> "Netem":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def netem(ns: NetNS | str | None, dev: str, *, delay_ms: float = 0, jitter_ms: float = 0,
          loss_pct: float = 0, reorder_pct: float = 0, duplicate_pct: float = 0,
          corrupt_pct: float = 0, rate: str | int | None = None, limit: int | None = None) -> Netem:
    """Apply netem on dev in ns now; the returned Netem removes it on close()/with-exit."""
    return Netem(ns, dev, delay_ms=delay_ms, jitter_ms=jitter_ms, loss_pct=loss_pct,
                 reorder_pct=reorder_pct, duplicate_pct=duplicate_pct, corrupt_pct=corrupt_pct,
                 rate=rate, limit=limit)


# --- TUN inside a namespace -------------------------------------------------------------------

class TunInNamespace:
    """A TUN device created inside namespace ns (opened there via setns, so the kernel end
    lives in ns while the fd is used from here), configured with the kernel-side address(es)
    (e.g. "10.231.1.1/24": the stack then owns 10.231.1.2), routes for peer_prefix, MTU, up.

    `with TunInNamespace(ns, "10.231.1.1/24") as dev:` gives the TunDevice; exit closes it,
    which deletes the device.
    """

    def __init__(self, ns: NetNS | str, address: str | Sequence[str] | None,
                 peer_prefix: str | Sequence[str] | None = None, mtu: int = 1500, *,
                 name: str | None = None, vnet_hdr: bool = False, up: bool = True) -> None:
        self.device = TunDevice(name or unique_ifname(IF_PREFIX_TUN), vnet_hdr=vnet_hdr,
                                netns=_ns_name(ns))
        _register(self)
        try:
            self.device.configure(address, peer_prefix, mtu, up)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        self.device.close()
        _unregister(self)

    def __enter__(self) -> TunDevice:
        return self.device

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- leftovers --------------------------------------------------------------------------------

_PID_RE = re.compile(r"(\d+)[-x]\d+")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def netns_pids(name: str) -> list[int]:
    """Processes in network namespace `name` (`ip netns pids`), not counting this one."""
    out = run_ip(["netns", "pids", name], check=False).stdout.split()
    return [int(p) for p in out if p.isdigit() and int(p) != os.getpid()]


def end_processes_in(name: str, grace: float = 2.0) -> list[int]:
    """SIGTERM, then SIGKILL after `grace`, every process still inside namespace `name`: those
    of a run() that timed out or was cancelled, asyncio subprocesses, their children, or a
    crashed run's orphans.  `ip netns del` only removes the name; they would go on running in
    the unnamed namespace.  Returns the pids found (not reaped: their parents do that)."""
    found = pids = netns_pids(name)
    if not pids:
        return found
    log.warning("namespace %s: ending processes still inside: %s", name, pids)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        deadline = time.monotonic() + grace
        while pids and time.monotonic() < deadline:
            pids = [p for p in pids if _running(p)]
            if pids:
                time.sleep(0.02)
        if not pids:
            break
    return found


def _running(pid: int) -> bool:
    """pid exists and is not a zombie (its parent reaps it; a zombie holds no namespace)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in (b"Z", b"X")


def cleanup_stale(prefix: str = NS_PREFIX, if_prefixes: Sequence[str] = (IF_PREFIX_TUN, IF_PREFIX_VETH),
                  *, include_live: bool = False) -> list[str]:
    """Delete namespaces named `prefix-<pid>-...` and root-namespace interfaces named
    `<if_prefix><pid>x...` whose creating process no longer exists (all of them, even of live
    processes, with include_live=True — never of this process).  Returns what was removed."""
    removed: list[str] = []
    me = os.getpid()

    def stale(rest: str) -> bool:
        m = _PID_RE.match(rest)
        if not m:
            return False
        pid = int(m.group(1))
        return pid != me and (include_live or not _pid_alive(pid))

    try:
        names = os.listdir(NETNS_DIR)
    except FileNotFoundError:
        names = []
    for ns in names:
        if ns.startswith(prefix + "-"):
            rest = ns[len(prefix) + 1:]
            if rest.startswith("probe-"):
                rest = rest[len("probe-"):]
            if stale(rest):
                end_processes_in(ns)
                run_ip(["netns", "del", ns], check=False)
                removed.append(ns)
    links = run_ip(["-o", "link", "show"], check=False).stdout
    for line in links.splitlines():
        parts = line.split(":", 2)
        if len(parts) < 2:
            continue
        ifname = parts[1].strip().split("@", 1)[0]
        for p in if_prefixes:
            if ifname.startswith(p) and stale(ifname[len(p):]):
                run_ip(["link", "del", "dev", ifname], check=False)
                removed.append(ifname)
                break
    if removed:
        log.info("removed stale test objects: %s", ", ".join(removed))
    return removed
