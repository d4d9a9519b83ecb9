"""Every name a module's `__all__` lists exists, so `from module import *` works (a name
left behind when a class moves, as Impairment and ImpairedLink once were in tun.netns)."""
from __future__ import annotations

import importlib
import pkgutil

import pytest

PACKAGES = ("tcpstack", "tcpcrypt", "tun")


def _modules() -> list[str]:
    names = []
    for pkg in PACKAGES:
        mod = importlib.import_module(pkg)
        names.append(pkg)
        names += [m.name for m in pkgutil.walk_packages(mod.__path__, pkg + ".")]
    return names


@pytest.mark.parametrize("name", _modules())
def test_all_names_exist(name: str) -> None:
    mod = importlib.import_module(name)
    missing = [n for n in getattr(mod, "__all__", ()) if not hasattr(mod, n)]
    assert not missing, f"{name}.__all__ lists names it does not have: {missing}"


def test_star_import_tun_netns() -> None:
    ns: dict[str, object] = {}
    exec("from tun.netns import *", ns)
    assert "NetNS" in ns and "Impairment" not in ns
