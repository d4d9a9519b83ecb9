"""Shared pytest configuration.

- The `tun` marker (pyproject.toml) is skipped automatically where real TUN devices and
  network namespaces are unavailable (not root, no /dev/net/tun, no `ip`).
- Fixtures for tests on real topologies (tun.netns): `netns` (a fresh namespace) and
  `kernel_tun` (a TUN device inside it, kernel side 10.231.N.1 / fd00:231:N::1).
"""
from __future__ import annotations

import itertools
import os
import shutil
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterator

import pytest

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


def pytest_sessionstart(session: pytest.Session) -> None:
    if TUN_SKIP_REASON is None:
        from tun.netns import cleanup_stale
        cleanup_stale()          # leftovers of crashed runs: our prefix, dead pids only


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if TUN_SKIP_REASON is None:
        return
    skip = pytest.mark.skip(reason=f"tun test: {TUN_SKIP_REASON}")
    for item in items:
        if item.get_closest_marker("tun") is not None:
            item.add_marker(skip)


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
