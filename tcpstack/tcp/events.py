"""Application-visible events a TCB (tcpstack/connection.py) queues for its owner.

RFC 9293 3.9 describes the user interface as calls and "signals"; these are the signals:
the connection became ESTABLISHED, in-order bytes arrived, the peer's FIN arrived in order
(half-close from the peer), and the connection ended (cleanly, or with an exception).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class ConnectionEstablished:
    """The three-way handshake completed (ESTABLISHED reached)."""


@dataclass(slots=True)
class DataReceived:
    """In-order bytes for the application: bytes, or a read-only view of the received
    packet's bytes (never of a buffer that can change)."""
    data: bytes | memoryview


@dataclass(slots=True)
class EndOfStream:
    """The peer's FIN arrived in order: it will send no more (half-close from the peer)."""


@dataclass(slots=True)
class ConnectionTerminated:
    """The app-visible end of the connection: error None when closed cleanly in both
    directions, else the exception (ConnectionResetByPeerError, ConnectionTimeoutError...)."""
    error: BaseException | None


Event = ConnectionEstablished | DataReceived | EndOfStream | ConnectionTerminated
