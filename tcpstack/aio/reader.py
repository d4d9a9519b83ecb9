"""A StreamReader that hands large received pieces to read() without copying them.

asyncio.StreamReader keeps everything in one bytearray: feed_data() copies each piece in and
read() copies it out again (`bytes(memoryview(buffer)[:n])`).  With 64 KB GRO super-segments
and 16 KB tcpcrypt frames, those two copies are a quarter of a bulk receiver's time.  This
subclass keeps large pieces (bytes objects, or read-only views of the received packets'
bytes: immutable either way) in a queue of their own: read(n) returns exactly what
asyncio's would (min(n, all available)), made with one copy (the join, or bytes() of one
view), or when that is one whole queued bytes piece -- a reader keeping up with tcpcrypt
frames -- the piece itself.

Everything else is asyncio's: the moment readline(), readuntil(), readexactly() or at_eof()
is used, queued pieces move into the ordinary buffer first (and stay there while such a call
waits), so the semantics, including flow control against `limit`, are the base class's.
It is still an asyncio.StreamReader (isinstance holds), as the drop-in promise requires.
"""
from __future__ import annotations

import asyncio
import sys
from collections import deque
from typing import TYPE_CHECKING, Any, Awaitable, Iterable, SupportsIndex, TypeVar

if TYPE_CHECKING:
    from asyncio.streams import _ReaduntilBuffer    # typeshed's type of readuntil()'s separator

_LARGE = 16384          # pieces at least this big are queued whole
_T = TypeVar("_T")


class ChunkedStreamReader(asyncio.StreamReader):
    # asyncio.StreamReader's own state, which this subclass shares; typeshed does not
    # declare it (annotations only: nothing is defined or overridden at run time)
    _buffer: bytearray
    _eof: bool
    _limit: int
    _exception: Exception | None
    _transport: asyncio.ReadTransport | None    # the base calls pause/resume_reading() on it
    _paused: bool
    if TYPE_CHECKING:
        def _wakeup_waiter(self) -> None: ...
        async def _wait_for_data(self, func_name: str) -> None: ...

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._chunks: deque[bytes | memoryview] = deque()
        self._chunk_len = 0
        self._flat = 0                  # > 0 while a buffer-based read is in progress

    def _flatten(self) -> None:
        chunks = self._chunks
        if chunks:
            buf = self._buffer
            while chunks:
                buf.extend(chunks.popleft())
            self._chunk_len = 0

    # --- the protocol side --------------------------------------------------------------

    def feed_data(self, data: Iterable[SupportsIndex]) -> None:
        # (the supertype's parameter type; what arrives is bytes or a read-only memoryview)
        if self._eof:
            raise AssertionError("feed_data after feed_eof")
        if not data:
            return
        if not self._flat and (type(data) is bytes or (
                type(data) is memoryview and type(data.obj) is bytes)) and (
                self._chunks or (len(data) >= _LARGE and not self._buffer)):
            self._chunks.append(data)   # behind whatever is queued: order is kept
            self._chunk_len += len(data)
        else:
            if self._chunks:
                self._flatten()
            self._buffer.extend(data)
        self._wakeup_waiter()
        if (self._transport is not None and not self._paused
                and len(self._buffer) + self._chunk_len > 2 * self._limit):
            try:
                self._transport.pause_reading()
            except NotImplementedError:
                self._transport = None
            else:
                self._paused = True

    def _maybe_resume_transport(self) -> None:
        if self._paused and len(self._buffer) + self._chunk_len <= self._limit:
            self._paused = False
            assert self._transport is not None     # paused only with a transport (feed_data)
            self._transport.resume_reading()

    # --- the application side -----------------------------------------------------------

    async def read(self, n: int = -1) -> bytes:
        if self._exception is not None:
            raise self._exception
        if n == 0 or n < 0:
            return await super().read(n)          # (n < 0 calls read(limit) until EOF)
        if not self._buffer and not self._chunks and not self._eof:
            await self._wait_for_data("read")
        chunks = self._chunks
        if chunks:                      # (then the ordinary buffer is empty)
            # Exactly what asyncio returns -- min(n, all that is available) -- but a single
            # queued piece that is all of it goes out as the very object, with no copy.
            c = chunks[0]
            if len(c) == n or (len(c) < n and len(chunks) == 1):
                chunks.popleft()
                self._chunk_len -= len(c)
                self._maybe_resume_transport()
                return c if type(c) is bytes else bytes(c)
            parts: list[bytes | memoryview] = []
            need = n
            while chunks and need:
                c = chunks[0]
                if len(c) <= need:
                    parts.append(chunks.popleft())
                    need -= len(c)
                else:
                    mv = memoryview(c)              # split without copying either part
                    parts.append(mv[:need])
                    chunks[0] = mv[need:]
                    need = 0
            self._chunk_len -= n - need
            self._maybe_resume_transport()
            return b"".join(parts)
        return await super().read(n)

    async def readline(self) -> bytes:
        return await self._flat_call(super().readline())

    if sys.version_info >= (3, 13):              # typeshed's signatures, version by version
        async def readuntil(self, separator: _ReaduntilBuffer | tuple[_ReaduntilBuffer, ...]
                            = b"\n") -> bytes:
            return await self._flat_call(super().readuntil(separator))
    else:
        async def readuntil(self, separator: _ReaduntilBuffer = b"\n") -> bytes:
            return await self._flat_call(super().readuntil(separator))

    async def readexactly(self, n: int) -> bytes:
        return await self._flat_call(super().readexactly(n))

    async def _flat_call(self, coro: Awaitable[_T]) -> _T:
        self._flatten()
        self._flat += 1
        try:
            return await coro
        finally:
            self._flat -= 1

    def at_eof(self) -> bool:
        return self._eof and not self._buffer and not self._chunks

    def __repr__(self) -> str:
        return super().__repr__()[:-1] + f" queued={self._chunk_len}>"
