"""Lazy attributes for a package's public API (PEP 562): `from tcpstack import Stack` works,
while importing a low layer (tcpstack.wire, tcpstack.tcp) never pulls in the asyncio edge."""
from __future__ import annotations

import importlib
from typing import Any, Callable


def lazy(package: str, where: dict[str, str]) -> Callable[[str], Any]:
    """A module __getattr__ that imports where[name] (a module path) on first use."""
    def __getattr__(name: str) -> Any:
        try:
            module = where[name]
        except KeyError:
            raise AttributeError(f"module {package!r} has no attribute {name!r}") from None
        return getattr(importlib.import_module(module), name)
    return __getattr__
