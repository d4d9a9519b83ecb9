"""ACK coalescing for one flush of outgoing segments (what Linux gets from GRO): a pure ACK
that a later segment of the same connection in the same flush supersedes is not sent.

The rule (RFC 5681 4.2 / RFC 1122 4.2.3.2 / RFC 9293 3.8.6.3, "an ACK for at least every
second full-sized segment"): a pure ACK (the ACK flag alone, no data) is dropped when a later
segment of the same connection in the same flush carries a strictly greater cumulative ACK
(modulo 2**32) and, by construction, the newer window and SACK state.  So a received batch
gets one ACK instead of one per two segments.  The ACK kept acknowledges every segment of the
batch at the instant the batch was read, so no full-sized segment waits for its ACK; we read
the SHOULD as bounding how long acknowledgement is withheld, not the count of ACK packets, as
Linux does for GRO-merged segments (pinned in tests/tcpstack/test_rfc_rules.py).  The cost
falls on senders that count ACKs rather than bytes.  Only a strictly greater ACK number
supersedes, so duplicate ACKs (equal ACK numbers, RFC 5681 3.2) and window updates with an
unchanged ACK number are kept while the ACK number stands still; when a later segment moves
it on in the same flush, the last pure ACK before it goes (the earlier ones of an equal run
stay).  Anything with data, SYN, FIN or RST is never dropped; a TSO super-segment is never
looked at (it neither drops nor is dropped).

:class:`AckCoalescer` applies the rule as the stack core queues segments, where each
segment's connection is known (StackCore keeps one per flush: packets_to_send()).
:func:`coalesce_acks` applies the same rule to built IP packets, reading their headers (for
captures and tests).
"""
from __future__ import annotations

from typing import Hashable, Sequence

from tcpstack.wire.segment import ACK, RST
from tcpstack.wire.buffers import GSOFrame, LinkPacket

_MASK = 0xFFFFFFFF
_HALF = 0x80000000


class AckCoalescer:
    """The pure ACKs of one flush, per connection: :meth:`note` each TCP segment in the order
    it is queued (its position in the flush, its connection's key); :meth:`take` says which
    positions were superseded and starts the next flush."""

    __slots__ = ("_pending", "_superseded")

    def __init__(self) -> None:
        self._pending: dict[Hashable, tuple[int, int]] = {}  # key -> (index, ack) of its last pure ACK
        self._superseded: list[int] = []

    def note(self, key: Hashable, index: int, flags: int, ack: int, has_data: bool) -> None:
        """Segment number `index` of the flush, of connection `key`, with TCP `flags`, ACK
        number `ack`, and whether it carries data."""
        if flags & RST or not flags & ACK:     # RST, or no ACK field: neither supersedes nor is
            return
        pending = self._pending
        prev = pending.get(key)
        if prev is not None and 0 < ((ack - prev[1]) & _MASK) < _HALF:
            self._superseded.append(prev[0])
            del pending[key]
        if flags == ACK and not has_data:
            pending[key] = (index, ack)

    def take(self) -> list[int]:
        """The positions superseded in this flush (ascending); the next flush starts empty."""
        if self._pending:
            self._pending = {}
        s = self._superseded
        if s:
            self._superseded = []
            s.sort()
        return s


def coalesce_acks(packets: Sequence[LinkPacket]) -> list[LinkPacket]:
    """The rule above over built IPv4/IPv6 packets of one flush, connections told apart by
    their addresses and ports (read in place); the packets not superseded, in order."""
    c = AckCoalescer()
    for i, p in enumerate(packets):
        if type(p) is GSOFrame:
            continue                              # TSO data, never a pure ACK
        v = p[0] >> 4
        if v == 4:
            if p[9] != 6:
                continue
            t = (p[0] & 15) << 2
            key = p[12:20] + p[t:t + 4]
        elif v == 6:
            if p[6] != 6:
                continue
            t = 40
            key = p[8:40] + p[40:44]
        else:
            continue
        if len(p) < t + 20:
            continue
        c.note(key, i, p[t + 13], int.from_bytes(p[t + 8:t + 12], "big"),
               len(p) != t + ((p[t + 12] >> 4) << 2))
    drop = c.take()
    if not drop:
        return list(packets)
    dropped = set(drop)
    return [p for i, p in enumerate(packets) if i not in dropped]
