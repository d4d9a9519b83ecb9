"""IP fragment reassembly (RFC 791 3.2, RFC 815; IPv6: RFC 8200 4.5 and RFC 5722), sans-IO
and bounded: an attacker can send fragments, so total memory and each datagram's life are
capped, and overlapping fragments discard the whole datagram (RFC 5722 for IPv6; done for
IPv4 too, as every modern stack does against overlap attacks).
"""
from __future__ import annotations

from typing import Any


class _Datagram:
    __slots__ = ("pieces", "total", "size", "deadline")

    def __init__(self, deadline: float) -> None:
        self.pieces: dict[int, bytes] = {}     # offset -> data
        self.total: int | None = None          # length once the last fragment arrived
        self.size = 0
        self.deadline = deadline


class Reassembler:
    def __init__(self, max_bytes: int = 4 << 20, timeout: float = 30.0) -> None:
        self.max_bytes = max_bytes
        self.timeout = timeout
        self._d: dict[tuple[Any, ...], _Datagram] = {}
        self._bytes = 0
        self.reassembled = 0
        self.dropped_overlap = 0
        self.dropped_memory = 0
        self.timed_out = 0

    def add(self, header: Any, payload: bytes | memoryview, now: float) -> bytes | None:
        """Add one fragment; return the reassembled upper-layer payload when complete."""
        self.expire(now)
        key = (header.src, header.dst, header.proto, header.ident)
        off = header.fragment_offset_bytes
        more = header.more_fragments
        data = bytes(payload)
        if more and len(data) % 8:
            return None      # RFC 791: every fragment but the last carries a multiple of 8
        if off + len(data) > 0xFFFF:
            return None
        if self._bytes + len(data) > self.max_bytes:
            self.dropped_memory += 1
            return None
        d = self._d.get(key)
        if d is None:
            d = self._d[key] = _Datagram(now + self.timeout)
        end = off + len(data)
        for o, p in d.pieces.items():
            if o < end and off < o + len(p):
                if o == off and p == data:
                    return None            # an exact duplicate is harmless
                self.dropped_overlap += 1
                self._drop(key)
                return None
        if not more:
            if d.total is not None and d.total != end:
                self._drop(key)
                return None
            d.total = end
        d.pieces[off] = data
        d.size += len(data)
        self._bytes += len(data)
        if d.total is not None and d.size == d.total:
            out = b"".join(d.pieces[o] for o in sorted(d.pieces))
            self._drop(key)
            self.reassembled += 1
            return out
        return None

    def _drop(self, key: tuple[Any, ...]) -> None:
        d = self._d.pop(key, None)
        if d is not None:
            self._bytes -= d.size

    def expire(self, now: float) -> None:
        if not self._d:
            return
        for key in [k for k, d in self._d.items() if d.deadline <= now]:
            self.timed_out += 1
            self._drop(key)

    @property
    def pending_bytes(self) -> int:
        return self._bytes
