"""The send buffer: the octets from SND.UNA on (sent and unacknowledged, then unsent).

A list of immutable chunks rather than one bytearray, so the bulk path copies nothing in
Python: a large `bytes` write is kept as it is (a reference, as asyncio's own transports
keep it), a segment's payload is a memoryview slice of one chunk, and an ACK drops whole
chunks from the front.  Only a segment straddling two chunks is joined (one copy).  Small
writes are gathered in a bytearray tail, frozen into a chunk when a segment first reaches
into it, so a stream of one-byte writes does not become a list of one-byte chunks.

Offsets in the API are relative to the first octet held (the connection's buffer sequence
number); internally each chunk has an absolute start position, found by bisection.
"""
from __future__ import annotations

from bisect import bisect_right

from tcpstack.wire.buffers import Buffer, Gather, Payload

# Writes at least this long are kept by reference (or copied once if mutable); shorter
# ones are appended to the tail.
_BIG = 2048


def immutable(data: object) -> bool:
    """bytes, or a view of bytes: safe to keep by reference (a bytearray, or a read-only
    view of one, may still change after the caller's write() returns)."""
    return type(data) is bytes or (type(data) is memoryview and type(data.obj) is bytes)


class SendBuffer:
    __slots__ = ("_chunks", "_starts", "_first", "_base", "_frozen_end", "_tail")

    def __init__(self) -> None:
        self._chunks: list[Buffer] = []
        self._starts: list[int] = []     # absolute position of each chunk's first octet
        self._first = 0                  # index of the first chunk still (partly) held
        self._base = 0                   # absolute position of the first octet held
        self._frozen_end = 0             # absolute end of the chunks (the tail follows)
        self._tail = bytearray()

    def __len__(self) -> int:
        return self._frozen_end + len(self._tail) - self._base

    def append(self, data: bytes | bytearray | memoryview, owned: bool = False) -> None:
        """Queue data at the end.  owned: the caller gives the buffer up (a tcpcrypt frame
        buffer), so even a mutable one is kept by reference."""
        n = len(data)
        if n >= _BIG:
            if self._tail:
                self._freeze()
            # Keep immutable bytes (or a read-only view of them) by reference; a mutable
            # buffer may change after write() returns, so it is copied (once), as
            # asyncio's transports do.
            chunk = data if owned or immutable(data) else bytes(data)
            self._chunks.append(chunk)
            self._starts.append(self._frozen_end)
            self._frozen_end += n
        elif n:
            self._tail += data

    def _freeze(self) -> None:
        tail = self._tail
        self._chunks.append(bytes(tail))
        self._starts.append(self._frozen_end)
        self._frozen_end += len(tail)
        self._tail = bytearray()

    def get(self, off: int, end: int, gather: bool = False) -> Payload:
        """Octets [off, end) as a bytes-like object (a zero-copy view when they lie in one
        chunk; else joined, or with `gather` a Gather of views).  The caller keeps
        0 <= off < end <= len(self)."""
        a = self._base + off
        b = self._base + end
        if b > self._frozen_end:
            self._freeze()
        chunks, starts = self._chunks, self._starts
        i = bisect_right(starts, a, self._first) - 1
        c = chunks[i]
        cs = starts[i]
        ce = cs + len(c)
        if b <= ce:
            if a == cs and b == ce:
                return c
            return memoryview(c)[a - cs:b - cs]
        parts: list[Buffer] = [memoryview(c)[a - cs:]]
        while True:
            i += 1
            c = chunks[i]
            cs = starts[i]
            ce = cs + len(c)
            if b <= ce:
                parts.append(memoryview(c)[:b - cs])
                return Gather(parts, b - a) if gather else b"".join(parts)
            parts.append(c)

    def consume(self, n: int) -> None:
        """Drop the first n octets (acknowledged)."""
        if n <= 0:
            return
        base = self._base + n
        self._base = base
        if base >= self._frozen_end:
            # Everything frozen is gone; part of the tail may be too.
            cut = base - self._frozen_end
            if cut:
                del self._tail[:cut]
                self._frozen_end = base
            self._chunks.clear()
            self._starts.clear()
            self._first = 0
            return
        chunks, starts = self._chunks, self._starts
        first = self._first
        while starts[first] + len(chunks[first]) <= base:
            first += 1
        if first > 32 and first * 2 > len(chunks):
            del chunks[:first]
            del starts[:first]
            first = 0
        self._first = first
