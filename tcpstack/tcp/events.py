"""Application-visible events a TCB (tcpstack/tcp/connection.py) queues for its owner.

RFC 9293 3.9 describes the user interface as calls and "signals"; these are the signals:
the connection became ESTABLISHED, in-order bytes arrived, the peer's FIN arrived in order
(half-close from the peer), and the connection ended (cleanly, or with an exception).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from tcpstack.tcp.connection import TCPConnection, TCPState


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


@dataclass(slots=True)
class StateChanged:
    """The TCB moved from one RFC 9293 3.3.2 state to another (figure 5's arcs), and why
    (the event the RFC names on the arc: "rcv SYN", "CLOSE", "rcv ACK of FIN"...).

    Not queued with the application's events: every change goes through
    TCPConnection._set_state, which hands it to config.state_observer when one is set
    (tcpstack.tools.trace.Tracer sets one), so the observer sees every transition in order,
    including those the owner never samples (FIN-WAIT-2 passed within one input)."""
    old: "TCPState"
    new: "TCPState"
    why: str


StateObserver = Callable[["TCPConnection", StateChanged, float], Any]
"""config.state_observer(conn, change, now): called on every state change of a TCB."""


@dataclass(slots=True)
class CCSample:
    """The sender's congestion state just after an ACK was processed (event "ack") or a
    retransmission timeout fired (event "rto"): what tcpstack/tools/plot.py draws over time.

    Like StateChanged, not queued for the application: TCPConnection hands each one to
    config.sample_observer when one is set (None, the default, costs one test per ACK)."""
    t: float
    event: str                 # "ack" or "rto"
    cwnd: int                  # bytes
    ssthresh: int              # bytes (very large before the first loss)
    pipe: int                  # bytes the sender thinks are in flight (RFC 6675 pipe)
    srtt: float | None         # seconds, None before the first RTT sample
    rto: float                 # seconds, backed off after timeouts
    in_recovery: bool          # fast recovery (RFC 5681 3.2 / RFC 6582 / RFC 6675)
    in_loss: bool              # recovery after a retransmission timeout
    snd_una: int               # unwrapped (the TCB's own, not mod 2**32)


SampleObserver = Callable[["TCPConnection", CCSample], Any]
"""config.sample_observer(conn, sample): called after every ACK a TCB processes and every
retransmission timeout."""

Event = ConnectionEstablished | DataReceived | EndOfStream | ConnectionTerminated
