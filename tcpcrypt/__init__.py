"""tcpcrypt: TCP-ENO (RFC 8547) negotiation and tcpcrypt (RFC 8548) as sans-IO transforms,
plus asyncio-style entry points over a userspace stack.

    import tcpcrypt
    tcpcrypt.set_default_stack(stack)                 # a tcpstack.aio.streams.Stack
    reader, writer = await tcpcrypt.open_connection("10.231.1.2", 7)
    writer.get_extra_info("tcpcrypt_session_id")

open_connection() and start_server() take asyncio's arguments (host, port, limit, ...),
plus `stack=` (default: the one given to set_default_stack) and the tcpcrypt policies
(encrypt, require_encryption, app_aware, resume, cache_secrets, passive_role_bit).

The whole process, every event loop in it, switched onto a userspace stack (docs/run.md):

    tcpcrypt.run(main(), addr="10.231.5.2/24")           # asyncio.run(), switched
    asyncio.Runner(loop_factory=tcpcrypt.loop_factory(addr="10.231.5.2/24"))

(tcpcrypt.switch; `from tcpcrypt import asyncio` alone switches from the environment).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from tcpcrypt.errors import (ENOError, EncryptionRequiredError, TcpcryptError,
                             TcpcryptIntegrityError, TcpcryptProtocolError)
from tcpstack._lazy import lazy

if TYPE_CHECKING:  # pragma: no cover
    import asyncio

    from tcpstack.aio.streams import Server, Stack

__all__ = [
    "open_connection", "start_server", "set_default_stack",
    "TcpcryptConfig", "TcpcryptProvider", "SessionCache", "TEPS", "AEADS",
    "TcpcryptError", "ENOError", "TcpcryptProtocolError", "TcpcryptIntegrityError",
    "EncryptionRequiredError", "run", "loop_factory",
]

__getattr__ = lazy(__name__, {
    "TcpcryptConfig": "tcpcrypt.suites", "TcpcryptProvider": "tcpcrypt.provider",
    "SessionCache": "tcpcrypt.resumption", "TEPS": "tcpcrypt.suites", "AEADS": "tcpcrypt.suites",
    # the process-wide switch (tcpcrypt.switch: imported only when used)
    "run": "tcpcrypt.switch", "loop_factory": "tcpcrypt.switch",
})

_default_stack: "Stack | None" = None


def set_default_stack(stack: "Stack | None") -> None:
    """The stack open_connection()/start_server() use when none is passed."""
    global _default_stack
    _default_stack = stack


def _stack(stack: "Stack | None") -> "Stack":
    s = stack if stack is not None else _default_stack
    if s is None:
        raise RuntimeError("no userspace stack: pass stack=... or call tcpcrypt.set_default_stack()")
    return s


async def open_connection(host: str | None = None, port: int | None = None, *,
                          stack: "Stack | None" = None, **kwargs: Any
                          ) -> "tuple[asyncio.StreamReader, asyncio.StreamWriter]":
    """Like asyncio.open_connection(), over a userspace stack, tcpcrypt when the peer agrees."""
    if host is None or port is None:
        raise ValueError("host and port are required")
    return await _stack(stack).open_connection(host, port, **kwargs)


async def start_server(client_connected_cb: Callable[..., Any], host: str | None = None,
                       port: int | None = None, *, stack: "Stack | None" = None,
                       **kwargs: Any) -> "Server":
    """Like asyncio.start_server(), over a userspace stack."""
    return await _stack(stack).start_server(client_connected_cb, host, port or 0, **kwargs)
