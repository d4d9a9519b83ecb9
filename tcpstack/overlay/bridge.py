"""One connection carried between a kernel socket and the userspace stack: bytes both ways,
half-close, backpressure and resets, and what `tcpstack stats` shows of it.

- Half-close (RFC 9293 3.6): an EOF read on one side is a write_eof() on the other (a FIN
  there); the other direction goes on until its own EOF.
- Backpressure: the two transports are joined (_Relay): each one's data is written to the
  other, and a write buffer over WRITE_HIGH pauses the reading of the side that fills it
  until it drains (asyncio's pause_writing/resume_writing -> pause_reading/resume_reading):
  a slow side slows the other down, and memory stays bounded whatever the rates.  (The
  fallback, the stream loops, is one read -> write -> drain() loop a direction: bounded
  the same way.)
- Resets (RFC 9293 3.10.7.x, RFC 1122 4.2.2.13): a side that ends with an error (RST
  received, a timeout, an abort) aborts the other side: the stack side with a RST, the
  kernel socket with SO_LINGER 0 (close(2) then sends a RST), never with a clean FIN.
"""
from __future__ import annotations

import asyncio
import itertools
import logging
import socket
import struct
import time
from typing import Any

log = logging.getLogger(__name__)

CHUNK = 256 * 1024              # one read of a direction
WRITE_HIGH = 4 * CHUNK          # a writer's buffer above this: drain() waits (down to 1/4)
_ids = itertools.count(1)

Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]


def _addr(sockaddr: Any) -> str:
    if not sockaddr:
        return "-"
    host, port = sockaddr[0], sockaddr[1]
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"


def _identity(value: Any) -> str | None:
    """The verified peer identity as text (another layer sets `tcpcrypt_peer`: a name, a
    key, or an object with a name)."""
    if value is None:
        return None
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    for attr in ("name", "fingerprint"):
        v = getattr(value, attr, None)
        if isinstance(v, str):
            return v
    return str(value)


def abort_kernel(writer: asyncio.StreamWriter) -> None:
    """Abort a kernel stream with a RST (SO_LINGER on, 0 seconds: close(2) resets)."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass                    # already closed: nothing left to reset
    writer.transport.abort()


class Bridge:
    """A kernel stream and a stack stream joined.  `kind` says which service made it
    (socks5, forward, expose); `target` what the client asked for."""

    def __init__(self, kind: str, service: str, kernel: Streams, stack: Streams,
                 target: str = "") -> None:
        self.id = next(_ids)
        self.kind = kind
        self.service = service
        self.target = target
        self.kr, self.kw = kernel
        self.sr, self.sw = stack
        for w in (self.kw, self.sw):
            # fewer, larger drain() cycles than asyncio's 64 KB default: each one is a wake-up
            w.transport.set_write_buffer_limits(high=WRITE_HIGH)
        self.to_stack = 0           # bytes kernel -> stack
        self.to_kernel = 0          # bytes stack -> kernel
        self.eof_from_kernel = False
        self.eof_from_stack = False
        self.error: str | None = None
        self.started = time.monotonic()
        self.state = "open"
        self.mode = "relay"             # "streams" when run() falls back to the stream loops
        sw = self.sw
        # stack-side facts read once: they stay valid after the connection has ended
        self.stack_local = _addr(sw.get_extra_info("sockname"))
        self.stack_remote = _addr(sw.get_extra_info("peername"))
        self.kernel_local = _addr(self.kw.get_extra_info("sockname"))
        self.kernel_remote = _addr(self.kw.get_extra_info("peername"))

    # --- what `stats` shows ---------------------------------------------------------------

    def info(self) -> dict[str, Any]:
        sw = self.sw
        sid = sw.get_extra_info("tcpcrypt_session_id")
        return {
            "id": self.id, "kind": self.kind, "service": self.service, "target": self.target,
            "state": self.state, "mode": self.mode,
            "kernel": {"local": self.kernel_local, "remote": self.kernel_remote},
            "stack": {"local": self.stack_local, "remote": self.stack_remote},
            "bytes_to_stack": self.to_stack, "bytes_to_kernel": self.to_kernel,
            "eof_from_kernel": self.eof_from_kernel, "eof_from_stack": self.eof_from_stack,
            "encrypted": bool(sw.get_extra_info("encrypted")),
            "session_id": bytes(sid).hex() if sid else None,
            "tcpcrypt_peer": _identity(sw.get_extra_info("tcpcrypt_peer")),
            "age": round(time.monotonic() - self.started, 3),
            "buffered": self.buffered(),
        }

    def buffered(self) -> int:
        """Bytes this bridge holds right now: both readers' buffers and both writers'
        transport buffers (what backpressure keeps bounded)."""
        n = 0
        for r in (self.kr, self.sr):
            n += len(getattr(r, "_buffer", b"")) + getattr(r, "_chunk_len", 0)
        for w in (self.kw, self.sw):
            try:
                n += w.transport.get_write_buffer_size()
            except (AttributeError, RuntimeError):
                pass
        return n

    # --- carrying ------------------------------------------------------------------------

    async def _pump(self, r: asyncio.StreamReader, w: asyncio.StreamWriter, to_stack: bool) -> None:
        while True:
            data = await r.read(CHUNK)
            if not data:
                break
            w.write(data)
            if to_stack:
                self.to_stack += len(data)
            else:
                self.to_kernel += len(data)
            await w.drain()
        # EOF: carry the half-close (a FIN on the other side), the other direction goes on
        if to_stack:
            self.eof_from_kernel = True
        else:
            self.eof_from_stack = True
        self.state = "half-closed" if not (self.eof_from_kernel and self.eof_from_stack) else "closing"
        if not w.is_closing() and w.can_write_eof():
            w.write_eof()
        await w.drain()

    async def run(self) -> None:
        """Carry both ways until both directions are done (then close both sides), or
        until one side fails (then abort the other).

        Normally the two transports are joined directly (_Relay: each one's data_received
        writes to the other, pause_writing pauses the other's reading): no stream buffers,
        no task per direction.  A side that has already seen its EOF or an error when the
        bridge starts is carried by the stream loops instead (_run_streams)."""
        kr, kw, sr, sw = self.kr, self.kw, self.sr, self.sw
        if any(getattr(r, "_eof", True) or r.exception() is not None for r in (kr, sr)) or \
                kw.transport.is_closing() or sw.transport.is_closing():
            self.mode = "streams"
            await self._run_streams()
            return
        # what the readers hold already goes first (nothing runs in between: the reads
        # below do not wait, and the protocols are swapped before the next loop turn)
        held_k = await _take_buffered(kr)
        held_s = await _take_buffered(sr)
        loop = asyncio.get_running_loop()
        self._done: asyncio.Future[BaseException | None] = loop.create_future()
        ks, ss = _Relay(self, kw.transport, True), _Relay(self, sw.transport, False)
        ks.peer, ss.peer = ss, ks
        kw.transport.set_protocol(ks)
        sw.transport.set_protocol(ss)
        transports: list[Any] = [kw.transport, sw.transport]
        for tr in transports:
            if not tr.is_reading():                 # a reader had paused it
                tr.resume_reading()
        if held_k:
            ks.data_received(held_k)
        if held_s:
            ss.data_received(held_s)
        failed: BaseException | None = None
        try:
            failed = await self._done
        except asyncio.CancelledError:
            failed = ConnectionAbortedError("the node is shutting down")
            raise
        finally:
            self._end(failed)

    def _end(self, failed: BaseException | None) -> None:
        kw, sw = self.kw, self.sw
        if failed is not None:
            self.state = "reset"
            self.error = f"{type(failed).__name__}: {failed}"
            log.info("%s bridge %s: %s: aborting both sides", self.kind, self.id, self.error)
            abort_kernel(kw)
            sw.transport.abort()
        else:
            self.state = "closed"
            kw.close()                      # (flushes what is buffered first)
            sw.close()

    def _relay_eof(self, side: "_Relay") -> None:
        """EOF from one side: the half-close goes to the other (a FIN there)."""
        if side.to_stack:
            self.eof_from_kernel = True
        else:
            self.eof_from_stack = True
        self.state = "half-closed" if not (self.eof_from_kernel and self.eof_from_stack) else "closing"
        other = side.peer.transport
        if not other.is_closing() and other.can_write_eof():
            other.write_eof()
        if self.eof_from_kernel and self.eof_from_stack:
            self._finish(None)

    def _relay_lost(self, side: "_Relay", exc: BaseException | None) -> None:
        if exc is not None:
            self._finish(exc)               # a RST, a timeout, an abort: abort the other
        elif not (side.eof_from_me):
            # closed without an EOF first (the transport's own close): as an EOF, then done
            side.eof_from_me = True
            self._relay_eof(side)
            self._finish(None)

    def _finish(self, exc: BaseException | None) -> None:
        if not self._done.done():
            self._done.set_result(exc)

    async def _run_streams(self) -> None:
        kr, kw, sr, sw = self.kr, self.kw, self.sr, self.sw
        pumps = {asyncio.ensure_future(self._pump(kr, sw, True)),
                 asyncio.ensure_future(self._pump(sr, kw, False))}
        # a side that is reset while nothing flows is seen through its close waiter
        watch = {asyncio.ensure_future(kw.wait_closed()), asyncio.ensure_future(sw.wait_closed())}
        failed: BaseException | None = None
        try:
            pending = pumps | watch
            while pumps & pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for t in done:
                    if not t.cancelled() and t.exception() is not None:
                        failed = t.exception()
                if failed is not None:
                    break
        except asyncio.CancelledError:
            failed = ConnectionAbortedError("the node is shutting down")
            raise
        finally:
            for t in pumps | watch:
                if not t.done():
                    t.cancel()
            await asyncio.gather(*(pumps | watch), return_exceptions=True)
            self._end(failed)


async def _take_buffered(r: asyncio.StreamReader) -> bytes:
    """What a StreamReader holds now, without waiting (asyncio's buffer, and the stack's
    ChunkedStreamReader's queued pieces)."""
    n = len(getattr(r, "_buffer", b"")) + getattr(r, "_chunk_len", 0)
    parts = []
    while n > 0:
        data = await r.read(n)
        if not data:
            break
        parts.append(data)
        n -= len(data)
    return b"".join(parts)


class _Relay(asyncio.Protocol):
    """One side of a running bridge: what its transport receives is written to the other
    side's transport; when the other side's write buffer is over its high-water mark, this
    side stops reading (backpressure, as asyncio's flow control intends)."""

    def __init__(self, bridge: Bridge, transport: Any, to_stack: bool) -> None:
        self.bridge = bridge
        self.transport = transport
        self.to_stack = to_stack            # the kernel side: its bytes go to the stack
        self.peer: _Relay
        self.eof_from_me = False

    def data_received(self, data: bytes | memoryview) -> None:
        other = self.peer.transport
        if other.is_closing():
            return                          # the bridge is ending: a RST follows
        other.write(data)
        if self.to_stack:
            self.bridge.to_stack += len(data)
        else:
            self.bridge.to_kernel += len(data)

    def eof_received(self) -> bool:
        if not self.eof_from_me:
            self.eof_from_me = True
            self.bridge._relay_eof(self)
        return True                         # keep the transport open: half-close

    def connection_lost(self, exc: Exception | None) -> None:
        self.bridge._relay_lost(self, exc)

    def pause_writing(self) -> None:
        # this side's buffer is full: stop reading from the side that fills it
        if not self.peer.transport.is_closing():
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        if not self.peer.transport.is_closing():
            self.peer.transport.resume_reading()


class Registry:
    """The bridges of one node, for `stats`."""

    def __init__(self) -> None:
        self.live: dict[int, Bridge] = {}
        self.total = 0
        self.resets = 0
        self.stream_loops = 0           # bridges carried by the stream loops (see Bridge.run)

    async def carry(self, bridge: Bridge) -> None:
        self.live[bridge.id] = bridge
        self.total += 1
        try:
            await bridge.run()
        finally:
            del self.live[bridge.id]
            if bridge.state == "reset":
                self.resets += 1
            if bridge.mode == "streams":
                self.stream_loops += 1

    def snapshot(self) -> list[dict[str, Any]]:
        return [b.info() for b in self.live.values()]
