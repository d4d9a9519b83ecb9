"""Exceptions of the tcpstack package: one base class, specific subclasses.

Every exception raised by tcpstack derives from :class:`TcpStackError`; the ones an
application sees from a stream also derive from the built-in exception asyncio code
already catches (ConnectionResetError, TimeoutError, ...), so the streams stay drop-in.
"""
from __future__ import annotations


class TcpStackError(Exception):
    """Base class of every tcpstack exception."""


class ParseError(TcpStackError, ValueError):
    """A packet, header or option is malformed.  The stack counts and drops it."""


class ConnectionTimeoutError(TcpStackError, TimeoutError):
    """The peer stopped acknowledging: too many retransmissions (RFC 9293 3.8.3 R2)."""


class ConnectionResetByPeerError(TcpStackError, ConnectionResetError):
    """The peer reset the connection (an acceptable RST arrived)."""


class ConnectionRefusedByPeerError(TcpStackError, ConnectionRefusedError):
    """The peer answered our SYN with a RST (nothing listening)."""


class ConnectionAbortedLocallyError(TcpStackError, ConnectionAbortedError):
    """The connection was aborted on this side (abort(), stack shut down, keepalive failure)."""


class HostUnreachableError(TcpStackError, OSError):
    """An ICMP destination-unreachable made the connection fail."""
