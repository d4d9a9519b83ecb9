"""Shared pytest configuration.

- The `tun` marker (pyproject.toml) is skipped automatically where real TUN devices and
  network namespaces are unavailable (not root, no /dev/net/tun, no `ip`).
- Fixtures for tests on real topologies (tun.netns): `netns` (a fresh namespace) and
  `kernel_tun` (a TUN device inside it, kernel side 10.231.N.1 / fd00:231:N::1).
- Tests leave nothing behind, even when they fail (tests/reaper.py): the `procs` fixture
  starts subprocesses in process groups of their own and ends them after the test (SIGTERM,
  SIGKILL after a grace, reaped); pytest is made a child subreaper so orphaned grandchildren
  stay findable; and at the end of the session anything still there -- a live descendant
  process, a namespace or interface named with this pid, an unclosed tun.netns object, an
  open TUN fd -- is named, removed, and fails the run.
"""
from __future__ import annotations

import itertools
import logging
import os
import shutil
import traceback
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterator

import pytest

from .reaper import Leftovers, Procs, become_subreaper

if TYPE_CHECKING:
    from tun.device import TunDevice
    from tun.netns import NetNS


def _tun_unavailable() -> str | None:
    """Why `tun` tests cannot run here, or None if they can."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "needs root"
    if not os.path.exists("/dev/net/tun"):
        return "needs /dev/net/tun"
    if shutil.which("ip") is None:
        return "needs iproute2 (ip)"
    return None


TUN_SKIP_REASON = _tun_unavailable()


_leftovers_key = pytest.StashKey[Leftovers]()
_report_key = pytest.StashKey["list[str]"]()


def pytest_sessionstart(session: pytest.Session) -> None:
    if TUN_SKIP_REASON is None:
        from tun.netns import cleanup_stale
        cleanup_stale()          # leftovers of crashed runs: our prefix, dead pids only
    become_subreaper()           # orphaned grandchildren are re-parented to us, not to init
    session.config.stash[_leftovers_key] = Leftovers()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None):
    try:
        return (yield)
    finally:
        lo = item.config.stash.get(_leftovers_key, None)
        if lo is not None:
            lo.note_after_test(item.nodeid)     # which test a leftover process outlived first


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the run if the tests left anything behind (after removing it)."""
    lo = session.config.stash.get(_leftovers_key, None)
    if lo is None:
        return
    report = lo.sweep(tun=TUN_SKIP_REASON is None)
    session.config.stash[_report_key] = report
    if report:
        if session.exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
        if session.config.pluginmanager.get_plugin("terminalreporter") is None:
            print(_leftovers_text(report), file=sys.stderr)


def _leftovers_text(report: list[str]) -> str:
    return ("LEFTOVERS: the tests left these behind (now removed; the run fails):\n"
            + "\n".join(f"  {r}" for r in report))


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    report = config.stash.get(_report_key, None)
    if report:
        terminalreporter.section("leftovers", sep="=", red=True, bold=True)
        terminalreporter.line(_leftovers_text(report), red=True)


@pytest.fixture
def procs() -> Iterator[Procs]:
    """Start a test's subprocesses with procs.popen(...) / await procs.exec(...) /
    await procs.run(...), or procs.adopt(p); every one, with its process group, is ended
    after the test, whatever its outcome."""
    with Procs() as p:
        yield p


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if TUN_SKIP_REASON is None:
        return
    skip = pytest.mark.skip(reason=f"tun test: {TUN_SKIP_REASON}")
    for item in items:
        if item.get_closest_marker("tun") is not None:
            item.add_marker(skip)


class _ErrorRecords(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


_WATCHED_LOGGERS = ("tcpstack", "tcpcrypt", "tun")


@pytest.fixture(autouse=True)
def no_internal_errors(request: pytest.FixtureRequest) -> Iterator[None]:
    """Failures are never silent in tests: an ERROR (or worse) logged by the project's own
    code during a test -- an internal error met on a packet, a transform that raised for no
    protocol reason -- fails that test, even though the stack itself carried on.  A test
    that provokes one on purpose says so with @pytest.mark.error_log_expected."""
    handler = _ErrorRecords()
    loggers = [logging.getLogger(n) for n in _WATCHED_LOGGERS]
    for lg in loggers:
        lg.addHandler(handler)
    try:
        yield
    finally:
        for lg in loggers:
            lg.removeHandler(handler)
    if handler.records and request.node.get_closest_marker("error_log_expected") is None:
        lines = []
        for r in handler.records[:5]:
            lines.append(f"{r.name}: {r.getMessage()}")
            if r.exc_info:
                lines.append("".join(traceback.format_exception(*r.exc_info)).rstrip())
        pytest.fail("the project logged at ERROR during this test:\n" + "\n".join(lines),
                    pytrace=False)


@pytest.fixture
def netns() -> Iterator["NetNS"]:
    """A fresh network namespace (loopback up), deleted after the test."""
    from tun.netns import NetNS
    with NetNS() as ns:
        yield ns


@dataclass
class KernelTun:
    ns: "NetNS"
    dev: "TunDevice"
    kernel4: str      # the kernel's address on the TUN link
    stack4: str       # the address the userspace side uses
    kernel6: str
    stack6: str


_subnets = itertools.count()


def subnet_index() -> int:
    """A per-process-varying third octet in 1..250 for 10.231.N.0/24 (namespaces are private,
    so collisions across processes are harmless; this only eases reading captures)."""
    return (os.getpid() + next(_subnets)) % 250 + 1


@pytest.fixture
def kernel_tun(netns: "NetNS") -> Iterator[KernelTun]:
    """A TUN device inside `netns`, MTU 1500, up: kernel side 10.231.N.1/24 and
    fd00:231:N::1/64, the userspace side owns .2 / ::2.  Closed (deleted) after the test."""
    from tun.netns import TunInNamespace
    n = subnet_index()
    k4, s4, k6, s6 = f"10.231.{n}.1", f"10.231.{n}.2", f"fd00:231:{n:x}::1", f"fd00:231:{n:x}::2"
    with TunInNamespace(netns, [f"{k4}/24", f"{k6}/64"]) as dev:
        yield KernelTun(netns, dev, k4, s4, k6, s6)
