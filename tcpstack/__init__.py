"""tcpstack: a userspace TCP/IP stack (RFC 9293 and the extensions every modern stack has),
a sans-IO core on a virtual clock, asyncio at the edge.

The public API is ``__all__``: what applications use.  A stack on a link::

    from tcpstack import Stack
    from tun import MemoryLink                    # or tun.AsyncTun on a TUN device
    stack = Stack(link, ["10.231.0.2"])
    reader, writer = await stack.open_connection("10.231.0.1", 80)

The sans-IO objects for tests, experiments and teaching (the stack core, a TCB, segments,
the simulator) are declared in :mod:`tcpstack.sansio`; the tools (pcap writer, tracer,
diagrams, the CLI) in :mod:`tcpstack.tools`.  The layers, lowest first: ``wire`` (formats),
``tcp`` (the TCB), ``host`` (the stack core), ``aio`` (the asyncio edge), ``tools``;
tests/test_layers.py keeps imports flowing one way.
"""
from __future__ import annotations

from tcpstack._lazy import lazy
from tcpstack.errors import (ConnectionAbortedLocallyError, ConnectionRefusedByPeerError,
                             ConnectionResetByPeerError, ConnectionTimeoutError,
                             HostUnreachableError, ParseError, TcpStackError)

__all__ = [
    "Stack", "Server", "Link", "StackSocket", "StackStreamWriter", "StackConfig", "TCPConfig",
    "TcpStackError", "ParseError", "ConnectionTimeoutError", "ConnectionResetByPeerError",
    "ConnectionRefusedByPeerError", "ConnectionAbortedLocallyError", "HostUnreachableError",
]

__getattr__ = lazy(__name__, {
    "Stack": "tcpstack.aio.streams", "Server": "tcpstack.aio.streams", "Link": "tcpstack.aio.streams",
    "StackSocket": "tcpstack.aio.socket", "StackStreamWriter": "tcpstack.aio.streams",
    "StackConfig": "tcpstack.host.stack", "TCPConfig": "tcpstack.tcp.config",
})
