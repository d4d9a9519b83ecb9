"""asyncio, with its TCP streams moved onto the userspace stack: the one-import switch.

An unmodified asyncio application changes one line,

    import asyncio                  # before
    from tcpcrypt import asyncio    # after

and everything it uses from asyncio stays the stdlib's (run, sleep, gather, StreamReader,
...) except `open_connection()` and `start_server()`, which now run over a userspace
stack (tcpstack.aio.streams.Stack) and encrypt with tcpcrypt whenever the peer speaks TCP-ENO
(RFC 8547 / RFC 8548); `writer.get_extra_info("tcpcrypt_session_id")` gives the session ID.

The stack is, in this order: one given to tcpcrypt.set_default_stack(); or one brought up on
first use from the environment, on a TUN device of its own in the current network namespace:

    TCPCRYPT_TUN=10.231.5.2/24      the stack's address/prefix; the kernel side of the TUN
                                    takes the prefix's first address (10.231.5.1) and routes
    TCPCRYPT_TUN_PEER=10.231.5.1    ... or this kernel-side address instead
    TCPCRYPT_TUN_MTU=1500
    TCPCRYPT_PLAIN=1                no tcpcrypt (plain TCP on the userspace stack)

The TUN device is removed when the process exits.  Without either, the call raises
RuntimeError saying how to provide a stack.
"""
from __future__ import annotations

import asyncio as _asyncio
import atexit
import ipaddress
import os
from asyncio import *  # noqa: F401,F403  (the rest of asyncio, unchanged)
from typing import Any, Callable

import tcpcrypt as _tcpcrypt

__all__ = list(getattr(_asyncio, "__all__", [])) + ["open_connection", "start_server"]

_env_stack: Any = None


def __getattr__(name: str) -> Any:
    # Anything `from asyncio import *` did not export (asyncio.subprocess, ...).
    return getattr(_asyncio, name)


def _stack_from_env() -> Any:
    """Bring a Stack up on a fresh TUN device as TCPCRYPT_TUN says (once per process)."""
    global _env_stack
    if _env_stack is not None and not _env_stack._closed:
        return _env_stack
    spec = os.environ.get("TCPCRYPT_TUN")
    if not spec:
        raise RuntimeError("tcpcrypt.asyncio: no userspace stack: call "
                           "tcpcrypt.set_default_stack(stack) or set TCPCRYPT_TUN=ADDR/PREFIX "
                           "(e.g. 10.231.5.2/24) to bring one up on a TUN device")
    iface = ipaddress.ip_interface(spec)
    peer = os.environ.get("TCPCRYPT_TUN_PEER") or str(next(iface.network.hosts()))
    if ipaddress.ip_address(peer) == iface.ip:
        raise RuntimeError(f"TCPCRYPT_TUN={spec}: the stack's address is the kernel side's "
                           f"({peer}); pick another, or set TCPCRYPT_TUN_PEER")
    mtu = int(os.environ.get("TCPCRYPT_TUN_MTU", "1500"))
    from tcpstack.aio.streams import Stack       # edge imports: only when really used
    from tun.device import async_link, bring_up, unique_ifname

    # Offloads (IFF_VNET_HDR, checksum/TSO, GRO) when the kernel takes them: the shared
    # bring-up of the command line, with its fallback to none.
    dev = bring_up(unique_ifname("tcc"), f"{peer}/{iface.network.prefixlen}", None, mtu)
    try:
        security: Any = None if os.environ.get("TCPCRYPT_PLAIN") else "default"
        _env_stack = Stack(async_link(dev), [str(iface.ip)], security=security)
    except BaseException:
        dev.close()
        raise
    atexit.register(dev.close)
    return _env_stack


def _stack(kwargs: dict[str, Any]) -> Any:
    """The stack to use.  Every other keyword goes on to Stack.open_connection/start_server,
    which take asyncio's arguments with asyncio's meaning and refuse, before sending
    anything, what they cannot honour (ssl=, sock=, unknown names)."""
    if kwargs.get("stack") is not None or _tcpcrypt._default_stack is not None:
        return kwargs.pop("stack", None)
    kwargs.pop("stack", None)
    return _stack_from_env()


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
