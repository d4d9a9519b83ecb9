"""Ending what tests start, and finding what they left (issue 11: tests leave nothing behind,
even when they fail).  Linux only (reads /proc).

- `Procs` starts subprocesses, each in a session (process group) of its own, and ends them
  all on close(): SIGTERM to the group, SIGKILL after a short grace, then reaps them.  The
  `procs` fixture (tests/conftest.py) closes one after every test, also when the test failed
  or timed out (pytest-timeout's signal method raises in the test; fixture teardown runs).
  Processes started elsewhere (NetNS.popen, KernelSide.spawn) can be adopted.
- `end_process()` is that sequence for one process.
- `become_subreaper()` makes the pytest process a child subreaper (PR_SET_CHILD_SUBREAPER):
  a grandchild whose parent died is re-parented to pytest, not to init, so it can still be
  found -- and ended -- at the end of the session.
- `Leftovers` is the session-end check: live descendants of the pytest process, network
  namespaces and root-namespace interfaces named with its pid (tun.netns: "tcpcpy-<pid>-<n>",
  "tct<pid>x<n>", "tcv<pid>x<n>a/b"), tun.netns objects never closed, TUN file descriptors
  still open.  `sweep()` reports each and removes it.
"""
from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import re
import signal
import subprocess
import sys
import time
from typing import Any, Sequence, Union

__all__ = ["Procs", "end_process", "become_subreaper", "children", "descendants", "Leftovers"]

Process = Union[subprocess.Popen, asyncio.subprocess.Process]

GRACE = 2.0            # seconds between SIGTERM and SIGKILL
PR_SET_CHILD_SUBREAPER = 36


# --- /proc ------------------------------------------------------------------------------------

def _stat(pid: int) -> tuple[str, int, int, int] | None:
    """(state, ppid, pgrp, session) of pid, or None if there is no such process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read().decode(errors="replace")
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    fields = data.rsplit(")", 1)[1].split()       # the comm may hold spaces and parentheses
    return fields[0], int(fields[1]), int(fields[2]), int(fields[3])


def _alive(pid: int) -> bool:
    """Running (or stopped), not gone and not a zombie."""
    st = _stat(pid)
    return st is not None and st[0] not in ("Z", "X")


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            raw = f.read()
    except OSError:
        return "?"
    return " ".join(a.decode(errors="replace") for a in raw.split(b"\0") if a) or "?"


def children(pid: int | None = None) -> list[int]:
    """Direct children of pid (default: this process), from every thread's children list."""
    pid = os.getpid() if pid is None else pid
    out: list[int] = []
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return out
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out += [int(x) for x in f.read().split()]
        except FileNotFoundError:             # pragma: no cover - thread gone, or no CONFIG_PROC_CHILDREN
            continue
    return sorted(set(out))


def _all_stats() -> dict[int, tuple[str, int, int, int]]:
    out = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            st = _stat(int(name))
            if st is not None:
                out[int(name)] = st
    return out


def descendants(pid: int | None = None) -> list[int]:
    """Every process below pid (default: this process), parents before children."""
    pid = os.getpid() if pid is None else pid
    by_parent: dict[int, list[int]] = {}
    for p, st in _all_stats().items():
        by_parent.setdefault(st[1], []).append(p)
    out: list[int] = []
    todo = sorted(by_parent.get(pid, []))
    while todo:
        p = todo.pop(0)
        out.append(p)
        todo += sorted(by_parent.get(p, []))
    return out


def become_subreaper() -> bool:
    """Make this process a child subreaper; False where prctl is unavailable."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):        # pragma: no cover - not Linux
        return False


# --- ending processes -------------------------------------------------------------------------

def _signal(pid: int, sig: int, group: bool) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if group:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)


def _group_left(pgid: int) -> list[int]:
    """Live members of process group pgid (its leader may be gone)."""
    return [p for p, st in _all_stats().items() if st[2] == pgid and st[0] not in ("Z", "X")]


def end_process(p: Process | int, grace: float = GRACE) -> None:
    """End p and its process group (when p leads one: started with start_new_session=True):
    SIGTERM, SIGKILL after `grace` seconds, then reap it.  Fine if it has already exited."""
    pid = p if isinstance(p, int) else p.pid
    st = _stat(pid)
    # Signal the group only while its leader (zombie or not) still holds the pid, so the id
    # cannot have been reused by another group.
    group = st is not None and st[2] == pid and pid != os.getpgid(0)
    if _alive(pid) or (group and _group_left(pid)):
        _signal(pid, signal.SIGTERM, group)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and (_alive(pid) or (group and _group_left(pid))):
            time.sleep(0.02)
        if group and _stat(pid) is not None:
            _signal(pid, signal.SIGKILL, True)
        elif _alive(pid):
            _signal(pid, signal.SIGKILL, False)
    _reap(p, pid)


def _reap(p: Process | int, pid: int) -> None:
    if isinstance(p, subprocess.Popen):
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:    # pragma: no cover - SIGKILL not delivered (D state)
            pass
        return
    # An asyncio process is reaped by the loop's child watcher (a thread on 3.11; the loop may
    # be closed already): give it a moment, then reap it here.
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline and _stat(pid) is not None and _stat(pid)[0] == "Z":
        time.sleep(0.01)
    st = _stat(pid)
    if st is not None and st[0] == "Z" and st[1] == os.getpid():
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)


def _netns_cmd(netns: Any, cmd: Sequence[str]) -> list[str]:
    if netns is None:
        return list(cmd)
    name = getattr(netns, "name", netns)
    return ["ip", "netns", "exec", str(name)] + list(cmd)


class Procs:
    """The processes of one test; close() ends every one of them (see end_process)."""

    def __init__(self, grace: float = GRACE) -> None:
        self.grace = grace
        self._procs: list[Process] = []

    def adopt(self, p: Process) -> Process:
        """Track a process started elsewhere, to be ended on close()."""
        self._procs.append(p)
        return p

    def popen(self, cmd: Sequence[str], *, netns: Any = None, **kw: Any) -> subprocess.Popen:
        """subprocess.Popen(cmd) in a new session (inside namespace `netns` if given)."""
        kw.setdefault("start_new_session", True)
        p = subprocess.Popen(_netns_cmd(netns, cmd), **kw)
        self._procs.append(p)
        return p

    async def exec(self, *cmd: str, netns: Any = None, **kw: Any) -> asyncio.subprocess.Process:
        """asyncio.create_subprocess_exec(*cmd) in a new session (inside `netns` if given)."""
        kw.setdefault("start_new_session", True)
        p = await asyncio.create_subprocess_exec(*_netns_cmd(netns, cmd), **kw)
        self._procs.append(p)
        return p

    async def run(self, *cmd: str, netns: Any = None, input: bytes | None = None,
                  timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run cmd to completion without blocking the loop; on a timeout or a cancellation it
        is ended (its whole group) before the exception goes on."""
        p = await self.exec(*cmd, netns=netns, stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            out, err = await asyncio.wait_for(p.communicate(input), timeout)
        except BaseException:
            end_process(p, self.grace)
            raise
        return subprocess.CompletedProcess(list(cmd), p.returncode or 0, out.decode(errors="replace"),
                                           err.decode(errors="replace"))

    @property
    def running(self) -> list[Process]:
        return [p for p in self._procs if _alive(p.pid)]

    def close(self) -> None:
        """End every process (and its group), SIGTERM first, SIGKILL after the grace."""
        procs, self._procs = self._procs, []
        live = [p for p in procs if _alive(p.pid) or _stat(p.pid) is not None]
        for p in live:                           # SIGTERM to all first: one grace period, not n
            st = _stat(p.pid)
            if st is not None and st[0] not in ("Z", "X"):
                _signal(p.pid, signal.SIGTERM, st[2] == p.pid and p.pid != os.getpgid(0))
        for p in procs:
            end_process(p, self.grace)

    def __enter__(self) -> "Procs":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- the session-end check --------------------------------------------------------------------

# Long-lived helpers Python itself may start and that end with the interpreter, not a test's doing.
_LEGIT = re.compile(r"multiprocessing\.(resource_tracker|forkserver)")


class Leftovers:
    """What this pytest process started and did not end.  Create one at session start (it
    notes the children already there, which are not the tests' doing), call note_after_test()
    after each test to remember which test first left a process, and sweep() at the end."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.preexisting = {p: _start_time(p) for p in children()}
        self.first_seen: dict[tuple[int, int], str] = {}

    def note_after_test(self, nodeid: str) -> None:
        for p in children():
            key = (p, _start_time(p))
            if key not in self.first_seen and self.preexisting.get(p) != key[1]:
                self.first_seen[key] = nodeid

    def _who(self, pid: int) -> str:
        """Which test the process (or its nearest noted ancestor) first outlived."""
        p = pid
        while p > 1 and p != self.pid:
            test = self.first_seen.get((p, _start_time(p)))
            if test:
                return f" (still running after {test})"
            st = _stat(p)
            p = st[1] if st else 0
        return ""

    def processes(self) -> list[tuple[int, str]]:
        """Live descendants not there at session start (zombies are reaped, not reported)."""
        out = []
        for p in descendants(self.pid):
            st = _stat(p)
            if st is None:
                continue
            if st[0] == "Z":
                if st[1] == self.pid:
                    with contextlib.suppress(ChildProcessError):
                        os.waitpid(p, os.WNOHANG)
                continue
            if self.preexisting.get(p) == _start_time(p) or _LEGIT.search(cmdline(p)):
                continue
            out.append((p, f"process {p}: {cmdline(p)}{self._who(p)}"))
        return out

    def namespaces(self) -> list[str]:
        from tun.netns import NETNS_DIR, NS_PREFIX
        pat = re.compile(rf"{re.escape(NS_PREFIX)}-(probe-)?{self.pid}-\d+$")
        try:
            return sorted(n for n in os.listdir(NETNS_DIR) if pat.match(n))
        except FileNotFoundError:
            return []

    def interfaces(self) -> list[str]:
        from tun.device import run_ip
        from tun.netns import IF_PREFIX_TUN, IF_PREFIX_VETH
        pat = re.compile(rf"({IF_PREFIX_TUN}|{IF_PREFIX_VETH}){self.pid}x\d+[ab]?$")
        out = []
        for line in run_ip(["-o", "link", "show"], check=False).stdout.splitlines():
            parts = line.split(":", 2)
            if len(parts) >= 2:
                name = parts[1].strip().split("@", 1)[0]
                if pat.match(name):
                    out.append(name)
        return out

    def unclosed_objects(self) -> list[Any]:
        mod = sys.modules.get("tun.netns")
        if mod is None:
            return []
        with mod._live_lock:
            return list(mod._live)

    def tun_fds(self) -> list[tuple[int, str]]:
        out = []
        for fd in os.listdir("/proc/self/fd"):
            with contextlib.suppress(OSError):
                if os.readlink(f"/proc/self/fd/{fd}") == "/dev/net/tun":
                    iff = "?"
                    with open(f"/proc/self/fdinfo/{fd}") as f:
                        for line in f:
                            if line.startswith("iff:"):
                                iff = line.split(":", 1)[1].strip()
                    out.append((int(fd), iff))
        return out

    def sweep(self, *, tun: bool = True) -> list[str]:
        """Report and remove everything left; [] when nothing was.  tun=False skips the
        namespace and interface checks (no root, no `ip`).  All is looked at before
        anything is removed (removing one thing can take another along)."""
        import gc
        gc.collect()                          # objects only garbage may still hold fds
        report: list[str] = []
        procs = self.processes()
        report += [msg for _, msg in procs]
        objs: list[Any] = []
        namespaces: list[tuple[str, list[str]]] = []
        interfaces: list[str] = []
        if tun:
            from tun.device import run_ip
            objs = self.unclosed_objects()
            report += [f"never closed: {obj!r}" for obj in objs]
            for ns in self.namespaces():
                pids = run_ip(["netns", "pids", ns], check=False).stdout.split()
                namespaces.append((ns, pids))
                report.append(f"network namespace {ns}"
                              + (f" (processes {', '.join(pids)} inside)" if pids else ""))
            interfaces = self.interfaces()
            report += [f"interface {name}" for name in interfaces]
        fds = self.tun_fds()
        report += [f"TUN device {iff} (fd {fd} still open)" for fd, iff in fds]

        for p, _ in procs:                    # SIGTERM them all, then end each
            _signal(p, signal.SIGTERM, False)
        for p, _ in procs:
            end_process(p, grace=1.0)
        for obj in objs:
            with contextlib.suppress(Exception):
                obj.close()
        for ns, pids in namespaces:
            for pid in pids:
                end_process(int(pid), grace=1.0)
            run_ip(["netns", "del", ns], check=False)
        for name in interfaces:
            run_ip(["link", "del", "dev", name], check=False)
        for fd, _ in fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        return report


def _start_time(pid: int) -> int:
    """Field 22 of /proc/pid/stat (start time in clock ticks): pid + this names one process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return int(f.read().rsplit(b")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return -1
