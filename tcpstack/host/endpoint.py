"""One application-facing stream endpoint: a TCP connection plus an optional stream transform.

The transform is what TCP-ENO negotiated (RFC 8547 section 4.5): when a TEP is agreed, the
byte stream between the TCB and the application is handed to that TEP (tcpcrypt, RFC 8548),
otherwise it stays plain.  This module only knows the transform through the small
:class:`StreamTransform` protocol below, so the TCP layers never import tcpcrypt.

Sans-IO: an Endpoint never touches a socket or a clock; the stack core calls it with ``now``
and collects the segments its connection wants to send.  Application-visible happenings are
queued as events (:class:`Established`, :class:`Data`, :class:`Eof`, :class:`Closed`) that
the asyncio edge (tcpstack/aio/streams.py) or a test drains with :meth:`Endpoint.next_event`.
"""
from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from tcpstack.tcp.sndbuf import immutable
from tcpstack.errors import ConnectionAbortedLocallyError, TcpStackError
from tcpstack.tcp.events import ConnectionEstablished, ConnectionTerminated, DataReceived, EndOfStream
from tcpstack.wire.buffers import Buffer

if TYPE_CHECKING:
    from tcpstack.tcp.connection import TCPConnection
    from tcpstack.host.stack import Listener, StackCore

log = logging.getLogger(__name__)


def _hostport(addr: tuple[str, int]) -> str:
    """host:port, [v6]:port, as logs name a connection's ends."""
    host, port = addr[0], addr[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class StreamTransform(Protocol):
    """A TEP's view of the byte stream (tcpcrypt.session.TcpcryptSession implements it)."""

    established: bool
    eof_received: bool

    def start(self) -> bytes: ...
    # send/close/receive return buffers the endpoint then owns: the transform never touches
    # them again, so the TCB's send buffer keeps even a bytearray by reference.
    def send(self, data: Buffer) -> bytes | bytearray: ...
    def close(self) -> bytes | bytearray: ...
    def receive(self, data: bytes | memoryview) -> tuple[bytes, bytes | bytearray]: ...
    def peer_fin(self) -> None: ...
    def info(self) -> dict[str, Any]: ...


class SecurityProvider(Protocol):
    """Hands the stack ENO negotiators and, once the handshake is over, stream transforms.

    ``option_names``: the per-connection options (open_connection / start_server keyword
    arguments) the provider understands; the stack refuses any other name with TypeError."""

    option_names: frozenset[str]

    def negotiator(self, *, active: bool, local: tuple[str, int], remote: tuple[str, int],
                   options: dict[str, Any]) -> Any: ...

    def transform(self, negotiator: Any, *, local: tuple[str, int], remote: tuple[str, int],
                  options: dict[str, Any]) -> StreamTransform | None: ...


# --- application events ------------------------------------------------------------------

@dataclass(slots=True)
class Established:
    """The stream is ready: TCP handshake done and, when encrypted, keys in place."""
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Data:
    """Bytes for the application: bytes, or (plain TCP) the TCB's read-only view of the
    received packet's bytes (tcpstack.tcp.events.DataReceived)."""
    data: bytes | memoryview


@dataclass(slots=True)
class Eof:
    """The peer will send no more (TCP FIN; with tcpcrypt, a frame with FINp, RFC 8548 3.7)."""


@dataclass(slots=True)
class Closed:
    """The end of the endpoint for the application; error is None for a clean close."""
    error: BaseException | None


Event = Established | Data | Eof | Closed


class Endpoint:
    """An application's stream over one TCP connection (and, maybe, a transform)."""

    def __init__(self, core: "StackCore", conn: "TCPConnection", local: tuple[str, int],
                 remote: tuple[str, int], *, negotiator: Any = None,
                 options: dict[str, Any] | None = None, listener: "Listener | None" = None,
                 key: tuple[bytes, int, bytes, int] | None = None) -> None:
        self.core = core
        self.conn = conn
        self.local = local
        self.remote = remote
        # the core's demultiplexing key: (local address, local port, remote address, remote
        # port), addresses packed (given by the core that makes the endpoint)
        self.key = key if key is not None else (b"", local[1], b"", remote[1])
        self.negotiator = negotiator
        self.options = options or {}
        self.listener = listener          # the listener that opened it, until it is ready
        self.accepted_by: Listener | None = None  # ... and from then on (Listener.endpoints)
        self.transform: StreamTransform | None = None
        # a list, not a deque: an empty deque costs ~760 bytes per idle connection; the edge
        # takes the whole list at once (take_events)
        self.events: list[Event] = []
        self.handler: Any = None          # set by the asyncio edge; gets ready notifications
        self.write_low_water: int | None = None  # set while the edge waits for buffer space
        self.notify = False               # the edge should look at this endpoint (writable)
        self.in_ready = False             # queued in the core's ready list
        # bytes for the TCB that did not fit its send buffer: the application's own buffers
        # (by reference, as the TCB's send buffer keeps them) or owned ones, in order
        self._pending: deque[Buffer] = deque()
        self._pending_len = 0
        self._plain_hold = bytearray()    # app bytes written before ENO's outcome was known
        self._eof_requested = False       # the application shut down writing
        self._close_requested = False     # ... and will not read either (full close)
        self._fin_queued = False          # shutdown_write() reached the TCB
        self._established = False
        self._eof_emitted = False
        self._closed = False
        self.info: dict[str, Any] = {"encrypted": False, "tcpcrypt_session_id": None,
                                     "tcpcrypt": None}

    # --- application side ------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def established(self) -> bool:
        return self._established

    @property
    def write_buffer_size(self) -> int:
        """Bytes accepted from the application that the TCB has not taken yet."""
        return self._pending_len

    @property
    def fin_queued(self) -> bool:
        """shutdown_write() or close() has reached the TCB: every byte the application wrote
        is in the TCB, and the FIN is queued behind them."""
        return self._fin_queued

    @property
    def all_sent_acknowledged(self) -> bool:
        """Everything the application gave is sent and acknowledged by the peer, and the FIN
        too once sent (or the connection is gone): nothing is lost if the process exits now
        (Stack.linger)."""
        conn = self.conn
        return conn.is_terminated or not (self._pending_len or conn.send_buffer_used
                                          or conn.snd_nxt != conn.snd_una)

    def send(self, data: Buffer, now: float) -> None:
        """Queue application bytes (plaintext).  Never blocks; the edge applies backpressure
        with :attr:`write_buffer_size`."""
        if self._closed:
            raise ConnectionAbortedLocallyError(f"connection to {self.remote} is closed")
        if self._eof_requested:
            raise TcpStackError(f"cannot write to {self.remote} after write_eof()")
        if not data:
            return
        if self.transform is not None:
            # the transform's frames are ours (StreamTransform)
            self._queue(self.transform.send(data), True)
        elif self.negotiator is not None and not self._established:
            # ENO still negotiating: whether these bytes go out plain or through a TEP is
            # only known at the end of the handshake (RFC 8547 4.6).  Keep them aside.
            self._plain_hold += data
            return
        else:
            self._queue(data)
        self.core.app_input(self, now, write=True)

    def shutdown_write(self, now: float) -> None:
        """Half-close: everything queued is sent, then FIN (tcpcrypt: a FINp frame first)."""
        if self._eof_requested or self._closed:
            return
        self._eof_requested = True
        if self.transform is not None:
            self._queue(self.transform.close(), True)
        self._flush(now)
        self.core.app_input(self, now)

    def close(self, now: float) -> None:
        """Full close: like shutdown_write(), and the application reads no more either, so the
        TCB may reset on later data and bounds FIN-WAIT-2.

        RFC 1122 4.2.2.13: "If such a host issues a CLOSE call while received data is still
        pending in TCP, or if new data is received after CLOSE is called, its TCP SHOULD
        send a RST to show that data was lost."  Pending in TCP means here: held by the TCB
        because reading is paused (the asyncio edge pauses when the StreamReader's buffer
        is full, as asyncio's socket transports stop recv() and leave the data in the
        kernel).  Those bytes, and any application data arriving later, make the close a
        RST <SEQ=SND.NXT> (RFC 9293 3.10.5) instead of a FIN -- for tcpcrypt after
        decryption, so only real application data counts, not the peer's FINp frame.
        Bytes already handed to the application (Data events, a StreamReader's buffer)
        count as read, exactly as bytes asyncio has recv()ed from a kernel socket."""
        if self._closed or self._close_requested:
            return
        self._close_requested = True
        conn = self.conn
        if conn.reading_paused:
            # The held bytes come out as events now; _on_data resets on application data.
            conn.resume_reading()
            self.process(now)
            if self._closed:
                self.core.app_input(self, now)
                return
        if self._fin_queued:
            self.conn.close(now, reset_on_data=self.transform is None)
            self.core.app_input(self, now)
        else:
            self.shutdown_write(now)

    def abort(self, now: float, error: BaseException | None = None) -> None:
        """RST the connection (RFC 9293 3.10.5 ABORT) and report `error` (or an abort)."""
        if self._closed:
            return
        self.conn.abort(now)
        self.mark_closed(error if error is not None else
                          ConnectionAbortedLocallyError(f"connection to {self.remote} aborted"))
        self.core.app_input(self, now)

    def pause_reading(self) -> None:
        self.conn.pause_reading()

    def resume_reading(self, now: float) -> None:
        self.conn.resume_reading()
        self.core.app_input(self, now)

    def next_event(self) -> Event | None:
        return self.events.pop(0) if self.events else None

    def take_events(self) -> list[Event]:
        """All queued application events, oldest first (the edge's batch form of next_event)."""
        evs = self.events
        if evs:
            self.events = []
        return evs

    def stats(self) -> dict[str, Any]:
        s = self.conn.stats
        d = {k: getattr(s, k) for k in s.__dataclass_fields__} if hasattr(s, "__dataclass_fields__") \
            else dict(vars(s))
        d["state"] = self.conn.state.name
        d["local"] = self.local
        d["remote"] = self.remote
        d.update({k: v for k, v in self.info.items() if k != "tcpcrypt"})
        if self.info.get("tcpcrypt"):
            d.update({f"tcpcrypt_{k}": v for k, v in self.info["tcpcrypt"].items()})
        return d

    # --- stack side ------------------------------------------------------------------

    def _queue(self, data: bytes | bytearray | memoryview, owned: bool = False) -> None:
        """Hand bytes to the TCB, keeping what its send buffer cannot take yet.  owned: a
        buffer given up by its maker (tcpcrypt frames), kept by reference even if mutable."""
        if not data:
            return
        if not self._pending:
            n = self.conn.send(data, owned)
            if n == len(data):
                return
            data = memoryview(data)[n:]
        if not owned and not immutable(data):
            data = bytes(data)      # a mutable buffer may change after write() returns
        self._pending.append(data)
        self._pending_len += len(data)

    def _flush(self, now: float) -> None:
        """Move pending bytes into the TCB's send buffer; queue FIN when all is in."""
        pending = self._pending
        send = self.conn.send
        while pending:
            head = pending[0]
            n = send(head, True)    # immutable, copied, or owned: see _queue
            self._pending_len -= n
            if n < len(head):
                if n:
                    pending[0] = memoryview(head)[n:]
                break
            pending.popleft()
        if (self._eof_requested and not pending and not self._fin_queued
                and (self.transform is None or self.transform.established)):
            self._fin_queued = True
            if self._close_requested:
                self.conn.close(now, reset_on_data=self.transform is None)
            else:
                self.conn.shutdown_write(now)

    def process(self, now: float) -> None:
        """Translate the TCB's events into application events (the stack core calls this
        after each input to the connection)."""
        conn = self.conn
        while True:
            ev = conn.next_event()
            if ev is None:
                break
            if self._closed:
                continue
            if isinstance(ev, DataReceived):
                self._on_data(ev.data, now)
            elif isinstance(ev, ConnectionEstablished):
                self._on_tcp_established(now)
            elif isinstance(ev, EndOfStream):
                self._on_peer_fin(now)
            elif isinstance(ev, ConnectionTerminated):
                self.mark_closed(ev.error)
        if not self._closed and conn.send_buffer_free:
            if self._pending or (self._eof_requested and not self._fin_queued):
                self._flush(now)                # (else it has nothing to do)
            low = self.write_low_water
            if low is not None and self._pending_len <= low:
                self.write_low_water = None
                self.notify = True

    def _on_tcp_established(self, now: float) -> None:
        if self.negotiator is not None:
            try:
                security = self.core.security
                assert security is not None       # it made the negotiator (StackCore._negotiator)
                self.transform = security.transform(
                    self.negotiator, local=self.local, remote=self.remote, options=self.options)
            except Exception as exc:  # EncryptionRequiredError and friends: fail loudly
                self._internal_error(exc, "setting up the stream transform")
                self._fail(exc, now)
                return
            if self.transform is not None:
                self.info["encrypted"] = True
                self._queue(self.transform.start())
            held = self._plain_hold
            if held:
                self._plain_hold = bytearray()
                # the transform's frames, or the hold buffer just replaced: ours either way
                self._queue(self.transform.send(bytes(held)) if self.transform else held, True)
            if self.transform is not None and not self.transform.established:
                return
        self._mark_established()

    def _mark_established(self) -> None:
        self._established = True
        if self.transform is not None:
            tinfo = dict(self.transform.info())
            self.info["tcpcrypt_session_id"] = tinfo.get("session_id")
            self.info["tcpcrypt_peer"] = tinfo.get("peer")   # a member's verified key (tcpcrypt/membership.py)
            self.info["tcpcrypt"] = tinfo
        self.events.append(Established(dict(self.info)))
        if self.listener is not None:
            self.listener.endpoint_established(self)

    def _on_data(self, data: bytes | memoryview, now: float) -> None:
        tr = self.transform
        if tr is None:
            if self._close_requested:
                self._data_after_close(now)   # see close(); the TCB may not be closed yet
                return
            self.events.append(Data(data))
            return
        try:
            plaintext, out = tr.receive(data)
        except Exception as exc:
            # RFC 8548 3.6: a forged or corrupt frame aborts the connection (RST) and the
            # application gets the error; nothing unauthenticated is delivered.  Any other
            # exception is a bug: the connection is aborted all the same, and counted.
            self._internal_error(exc, "decrypting")
            self._fail(exc, now)
            return
        if out:
            self._queue(out, True)
        if not self._established and tr.established:
            self._mark_established()
        if plaintext:
            if self._close_requested:
                # Application data after a full close (RFC 1122 4.2.2.13): nobody will read
                # it, so reset -- as the TCB does itself for a plain connection.  Frames that
                # carry none (the FINp frame) are not data and pass.
                self._data_after_close(now)
                return
            self.events.append(Data(plaintext))
        if tr.eof_received and not self._eof_emitted:
            self._eof_emitted = True
            self.events.append(Eof())
        if self._eof_requested and not self._fin_queued:
            self._flush(now)

    def _internal_error(self, exc: BaseException, doing: str) -> None:
        """The stream transform raised: a protocol verdict on the peer's bytes (a
        ConnectionError such as TcpcryptIntegrityError or EncryptionRequiredError) is the
        peer's doing; anything else is a bug of ours, counted and logged at ERROR."""
        if isinstance(exc, ConnectionError):
            return
        self.core.stats.internal_errors += 1
        log.error("internal error %s on %s -> %s", doing, _hostport(self.local),
                  _hostport(self.remote),
                  exc_info=exc)

    def _data_after_close(self, now: float) -> None:
        """RFC 1122 4.2.2.13: application data nobody will read (see close()): reset."""
        self.conn.abort(now, data_after_close=True)
        self.mark_closed(ConnectionAbortedLocallyError(
            f"connection {self.local} -> {self.remote}: data received after close"))

    def _on_peer_fin(self, now: float) -> None:
        tr = self.transform
        if tr is not None:
            try:
                tr.peer_fin()
            except Exception as exc:
                self._internal_error(exc, "at the peer's FIN")
                self._fail(exc, now)
                return
        if not self._eof_emitted:
            self._eof_emitted = True
            self.events.append(Eof())

    def _fail(self, exc: BaseException, now: float) -> None:
        log.warning("aborting connection %s -> %s: %s", _hostport(self.local),
                    _hostport(self.remote), exc)
        self.conn.abort(now)
        self.mark_closed(exc)

    def mark_closed(self, error: BaseException | None) -> None:
        """The end of the endpoint for the application (a Closed event), once; the stack core
        calls it when the TCB is gone without saying so (error None: a clean close)."""
        if self._closed:
            return
        self._closed = True
        self._pending.clear()
        self._pending_len = 0
        self.events.append(Closed(error))
        if self.listener is not None:
            self.listener.endpoint_closed(self)
