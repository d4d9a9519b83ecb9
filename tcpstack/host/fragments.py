"""IP fragment reassembly (RFC 791 3.2, RFC 815; IPv6: RFC 8200 4.5 and RFC 5722), sans-IO.

Bounded, because anyone can send fragments:
  * memory: every held fragment is charged its length plus a fixed overhead, and the total
    stays under ``max_bytes``; when a new fragment would exceed it the oldest incomplete
    datagrams are evicted (an attacker then has to keep sending to hold memory, as in Linux);
  * time: a datagram not completed ``timeout`` seconds after its first fragment is dropped
    (RFC 791 uses a timer, RFC 8200 4.5 says 60 s; the caller chooses);
  * fragments per datagram: at most ``max_fragments`` (so overlap checks stay cheap).
Overlapping fragments discard the whole datagram: mandatory for IPv6 (RFC 5722 3), and done
for IPv4 too, as modern stacks do against overlap attacks; exact duplicates are ignored.
Every fragment but the last must carry a multiple of 8 bytes (RFC 791 3.2, RFC 8200 4.5).

The key is (src, dst, protocol, identification) for IPv4 (RFC 791 3.2) and (src, dst,
identification) for IPv6 (RFC 8200 4.5: the fragment headers' Next Header values may
differ between fragments; only the offset-zero fragment's value is used).  ``add`` returns
the reassembled upper-layer payload.  For IPv6, extension headers at the start of the
fragmentable part are skipped and the completing fragment's header gets the real
upper-layer protocol in ``next_header`` (so read ``hdr.proto`` after ``add``).
"""
from __future__ import annotations

import logging
from typing import Any

from tcpstack.errors import ParseError
from tcpstack.wire.ip import AUTH, DEST_OPTS, FRAGMENT, HOP_BY_HOP, ROUTING, skip_ipv6_extensions

log = logging.getLogger(__name__)

FRAGMENT_OVERHEAD = 64          # bytes charged per held fragment besides its data
_MAX_DATAGRAM = 0xFFFF
_IPV6_EXT = frozenset((HOP_BY_HOP, ROUTING, DEST_OPTS, AUTH, FRAGMENT))


class _Datagram:
    __slots__ = ("pieces", "total", "size", "charged", "deadline", "first_next_header")

    def __init__(self, deadline: float) -> None:
        self.pieces: dict[int, bytes] = {}     # offset -> data
        self.total: int | None = None          # length, once the last fragment arrived
        self.size = 0                          # data bytes held
        self.charged = 0                       # bytes charged against max_bytes
        self.deadline = deadline
        self.first_next_header: int | None = None  # IPv6: Next Header of the offset-0 fragment


class Reassembler:
    """Sans-IO reassembly of IPv4/IPv6 fragments (headers from tcpstack.wire.ip.parse_ip)."""

    def __init__(self, max_bytes: int = 4 << 20, timeout: float = 30.0,
                 max_fragments: int = 64) -> None:
        self.max_bytes = max_bytes
        self.timeout = timeout
        self.max_fragments = max_fragments
        # Insertion order == creation order == deadline order (the clock never goes back),
        # so expiry only looks at the front.
        self._d: dict[tuple[Any, ...], _Datagram] = {}
        self._bytes = 0
        # Counters.
        self.fragments = 0
        self.reassembled = 0
        self.duplicates = 0
        self.dropped_overlap = 0
        self.dropped_invalid = 0
        self.dropped_memory = 0          # datagrams evicted or fragments refused for memory
        self.dropped_too_many = 0
        self.timed_out = 0

    def add(self, header: Any, payload: bytes | memoryview, now: float) -> bytes | None:
        """Add one fragment; return the reassembled upper-layer payload when complete."""
        self.fragments += 1
        self.expire(now)
        off = header.fragment_offset_bytes
        more = header.more_fragments
        n = len(payload)
        end = off + n
        if (more and (n == 0 or n & 7)) or end > _MAX_DATAGRAM:
            self.dropped_invalid += 1
            return None
        v6 = header.version == 6
        key = (header.src, header.dst, header.ident) if v6 else \
            (header.src, header.dst, header.proto, header.ident)
        d = self._d.get(key)
        if d is None:
            d = self._d[key] = _Datagram(now + self.timeout)
        for o, p in d.pieces.items():
            if o < end and off < o + len(p):
                if o == off and p == payload:
                    self.duplicates += 1       # an exact duplicate is harmless
                    return None
                self.dropped_overlap += 1      # RFC 5722 3: discard the whole datagram
                log.debug("overlapping fragment, dropping datagram %r", key)
                self._drop(key)
                return None
        if not more:
            if (d.total is not None and d.total != end) or any(o + len(p) > end
                                                               for o, p in d.pieces.items()):
                self.dropped_invalid += 1      # two different ends, or data past the end
                self._drop(key)
                return None
            d.total = end
        elif d.total is not None and end > d.total:
            self.dropped_invalid += 1          # data past the known end
            self._drop(key)
            return None
        if len(d.pieces) >= self.max_fragments:
            self.dropped_too_many += 1
            self._drop(key)
            return None
        cost = n + FRAGMENT_OVERHEAD
        if cost > self.max_bytes:
            self.dropped_memory += 1
            self._drop(key)
            return None
        while self._bytes + cost > self.max_bytes:
            oldest = next(iter(self._d))       # evict the oldest incomplete datagram
            self.dropped_memory += 1
            self._drop(oldest)
            if oldest == key:
                return None
        d.pieces[off] = bytes(payload)
        if v6 and off == 0:
            d.first_next_header = header.next_header
        d.size += n
        d.charged += cost
        self._bytes += cost
        if d.total is not None and d.size == d.total:
            # No overlaps and size == total: the pieces tile [0, total) exactly.
            out = b"".join([d.pieces[o] for o in sorted(d.pieces)])
            self._drop(key)
            if v6:
                # RFC 8200 4.5: the offset-zero fragment's Next Header names the
                # fragmentable part, which may start with more extension headers: walk
                # them, and tell the caller the real upper-layer protocol.
                nh = d.first_next_header
                assert nh is not None           # complete => the offset-0 piece is held
                if nh in _IPV6_EXT:
                    try:
                        nh, rest = skip_ipv6_extensions(nh, out)
                    except ParseError:
                        self.dropped_invalid += 1
                        return None
                    out = bytes(rest)
                header.next_header = nh
            self.reassembled += 1
            return out
        return None

    def _drop(self, key: tuple[Any, ...]) -> None:
        d = self._d.pop(key, None)
        if d is not None:
            self._bytes -= d.charged

    def expire(self, now: float) -> None:
        """Drop datagrams whose reassembly time ran out (RFC 791 3.2 timer)."""
        dgs = self._d
        while dgs:
            key = next(iter(dgs))
            if dgs[key].deadline > now:
                return
            self.timed_out += 1
            self._drop(key)

    def next_deadline(self) -> float | None:
        """When the next expiry is due (for the caller's timer), or None."""
        for d in self._d.values():
            return d.deadline
        return None

    @property
    def pending_bytes(self) -> int:
        """Bytes currently charged (data plus per-fragment overhead)."""
        return self._bytes

    @property
    def pending_datagrams(self) -> int:
        return len(self._d)
