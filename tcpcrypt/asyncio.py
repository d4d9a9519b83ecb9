"""asyncio, with its TCP moved onto the userspace stack: the one-import switch.

An unmodified asyncio application changes one line,

    import asyncio                  # before
    from tcpcrypt import asyncio    # after

and everything it uses from asyncio stays the stdlib's (run, sleep, gather, StreamReader,
...).  Importing this module switches the whole process (tcpstack.aio.loop): every event
loop, asyncio's and uvloop's, including those libraries make themselves, sends TCP to the
routed destinations over a userspace stack (tcpstack.aio.streams.Stack), encrypted with
tcpcrypt whenever the peer speaks TCP-ENO (RFC 8547 / RFC 8548);
`writer.get_extra_info("tcpcrypt_session_id")` gives the session ID.  This module's own
`open_connection()` and `start_server()` always use the stack, whatever the destination.

The stack is, in this order: one given to tcpcrypt.set_default_stack() (this module's two
functions only); or one brought up on first use from the environment, on a TUN device of
its own in the current network namespace:

    TCPCRYPT_TUN=10.231.5.2/24      the stack's address/prefix; the kernel side of the TUN
                                    takes the prefix's first address (10.231.5.1) and routes
    TCPCRYPT_TUN_PEER=10.231.5.1    ... or this kernel-side address instead
    TCPCRYPT_TUN_MTU=1500
    TCPCRYPT_PLAIN=1                no tcpcrypt (plain TCP on the userspace stack)
    TCPCRYPT_ROUTE=10.231.6.0/24,.. also send these destinations over the stack (default:
                                    only the stack's own subnet); "all": every destination
                                    but loopback
    TCPCRYPT_REQUIRE_ENCRYPTION=1   refuse peers without tcpcrypt (EncryptionRequiredError)
    TCPCRYPT_CC=bbr                 the connections' congestion control (cubic, the default;
                                    newreno; bbr)

The TUN device is removed when the process exits.  Without either, this module's
open_connection()/start_server() raise RuntimeError saying how to provide a stack, and the
process's other connections stay the kernel's.

tcpcrypt.run(main(), ...) and tcpcrypt.loop_factory(...) are the explicit forms
(tcpcrypt.switch, docs/run.md); `tcpstack run` the form without any edit.
"""
from __future__ import annotations

import asyncio as _asyncio
from asyncio import *  # noqa: F401,F403  (the rest of asyncio, unchanged)
from typing import Any, Callable

import tcpcrypt as _tcpcrypt
from tcpcrypt.switch import env_switch as _env_switch
from tcpstack.aio import loop as _loop

__all__ = list(getattr(_asyncio, "__all__", [])) + ["open_connection", "start_server"]


def __getattr__(name: str) -> Any:
    # Anything `from asyncio import *` did not export (asyncio.subprocess, ...).
    return getattr(_asyncio, name)


def _stack(kwargs: dict[str, Any]) -> Any:
    """The stack to use.  Every other keyword goes on to Stack.open_connection/start_server,
    which take asyncio's arguments with asyncio's meaning (ssl= runs TLS over the stack) and
    refuse, before sending anything, what they cannot honour (a kernel sock=, unknown
    names)."""
    if kwargs.get("stack") is not None or _tcpcrypt._default_stack is not None:
        return kwargs.pop("stack", None)
    kwargs.pop("stack", None)
    loop = _asyncio.get_running_loop()
    sw = _loop.switch_for(loop)
    if sw is None:
        raise RuntimeError("tcpcrypt.asyncio: no userspace stack: call "
                           "tcpcrypt.set_default_stack(stack) or set TCPCRYPT_TUN=ADDR/PREFIX "
                           "(e.g. 10.231.5.2/24) to bring one up on a TUN device")
    for k, v in sw.options().items():
        kwargs.setdefault(k, v)
    return sw.stack_for(loop)


# Both replace the names `from asyncio import *` brought in: that is this module's point.
async def open_connection(host: str | None = None, port: int | None = None,  # type: ignore[no-redef]
                          **kwargs: Any) -> "tuple[_asyncio.StreamReader, _asyncio.StreamWriter]":
    """asyncio.open_connection() over the userspace stack (tcpcrypt when the peer agrees)."""
    stack = _stack(kwargs)
    return await _tcpcrypt.open_connection(host, port, stack=stack, **kwargs)


async def start_server(client_connected_cb: Callable[..., Any], host: str | None = None,  # type: ignore[no-redef]
                       port: int | None = None, **kwargs: Any) -> Any:
    """asyncio.start_server() over the userspace stack."""
    stack = _stack(kwargs)
    return await _tcpcrypt.start_server(client_connected_cb, host, port, stack=stack, **kwargs)


# The switch: importing this module is the whole change an application makes.
_loop.install()
if _loop.process_switch() is None:          # `tcpstack run` set its own already
    _loop.set_process_switch(_env_switch())
