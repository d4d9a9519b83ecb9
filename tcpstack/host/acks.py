"""ACK coalescing for one flush of outgoing segments: a pure ACK that a later segment of the
same connection in the same flush makes redundant is not sent.

The rule (RFC 5681 4.2 / RFC 1122 4.2.3.2 / RFC 9293 3.8.6.3, "an ACK for at least every
second full-sized segment"): a pure ACK (the ACK flag alone, no data) is dropped when a later
segment of the same connection in the same flush carries a strictly greater cumulative ACK
(modulo 2**32), and by construction the newer window and SACK state, AND dropping it leaves no
two consecutive ACKs sent further apart than `span` bytes (two full-sized segments of the
peer's: the TCB's ack_span).  So a window update or hole-filling ACK followed closely by a
newer ACK goes, while the ACKs the TCB builds at least two full-sized segments apart stay,
also when a batch read from the link at one instant is answered in one flush (the TCB sends
a few per batch, after 2, 4, 8 ... segments: one stretch ACK per batch, if lost, hid the
whole batch from the sender, issue 14).  (A GRO super-packet is one
arrival and gets one ACK from the TCB: nothing to coalesce.)  Only a strictly greater ACK
number supersedes, so duplicate ACKs (equal ACK numbers, RFC 5681 3.2) and window updates with
an unchanged ACK number are kept while the ACK number stands still.  Anything with data, SYN,
FIN or RST is never dropped; a TSO super-segment is never looked at (it neither drops nor is
dropped).

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

    __slots__ = ("_state", "_superseded")

    def __init__(self) -> None:
        # key -> (index, ack) of its last pure ACK not yet decided (index -1: none), the ACK
        # number of the last ACK-bearing segment of this flush that is sent (None: none yet),
        # and the flush's first ACK number for the connection
        self._state: dict[Hashable, tuple[int, int, int | None, int]] = {}
        self._superseded: list[int] = []

    def note(self, key: Hashable, index: int, flags: int, ack: int, has_data: bool,
             span: int = 2 * 1460, dsack: bool = False) -> None:
        """Segment number `index` of the flush, of connection `key`, with TCP `flags`, ACK
        number `ack`, whether it carries data, the connection's ack span (bytes of two
        full-sized segments of the peer's), and whether it carries a D-SACK block."""
        if flags & RST or not flags & ACK:     # RST, or no ACK field: neither supersedes nor is
            return
        state = self._state
        p_index, p_ack, kept, first = state.get(key, (-1, 0, None, ack))
        if p_index >= 0:
            ahead = (ack - p_ack) & _MASK
            if 0 < ahead < _HALF:
                # superseded, unless dropping it would leave the ACKs sent more than `span`
                # apart: measured from the last one sent in this flush; before any, from the
                # flush's first pure ACK, strictly (the one sent before the flush is older)
                if kept is None:
                    drop = ((ack - first) & _MASK) < span
                else:
                    drop = ((ack - kept) & _MASK) <= span
                if drop:
                    self._superseded.append(p_index)
                else:
                    kept = p_ack
            else:
                kept = p_ack                     # an equal ACK number never supersedes
        if flags == ACK and not has_data and not dsack:
            state[key] = (index, ack, kept, first)
        else:
            state[key] = (-1, 0, ack, ack)       # sent: data, SYN, FIN or a D-SACK

    def take(self) -> list[int]:
        """The positions superseded in this flush (ascending); the next flush starts empty."""
        if self._state:
            self._state = {}
        s = self._superseded
        if s:
            self._superseded = []
            s.sort()
        return s


def is_dsack(ack: int, blocks: Sequence[tuple[int, int]]) -> bool:
    """RFC 2883 4 (as the sender reads it, RFC 3708 2): the first SACK block is a D-SACK when
    it lies below the cumulative ACK or inside the second block (modulo 2**32)."""
    if not blocks:
        return False
    s0, e0 = blocks[0]
    if ((ack - e0) & _MASK) < _HALF:                       # e0 <= ack
        return True
    if len(blocks) > 1:
        s1, e1 = blocks[1]
        return ((s0 - s1) & _MASK) < _HALF and ((e1 - e0) & _MASK) < _HALF
    return False


def _sack_blocks(opts: bytes | memoryview) -> list[tuple[int, int]]:
    """The SACK blocks of a TCP options field (kind 5), for coalesce_acks."""
    i, n = 0, len(opts)
    while i < n:
        kind = opts[i]
        if kind == 0:
            break
        if kind == 1:
            i += 1
            continue
        if i + 1 >= n or opts[i + 1] < 2:
            break
        length = opts[i + 1]
        if kind == 5:
            return [(int.from_bytes(opts[j:j + 4], "big"), int.from_bytes(opts[j + 4:j + 8], "big"))
                    for j in range(i + 2, i + length - 7, 8)]
        i += length
    return []


def coalesce_acks(packets: Sequence[LinkPacket], span: int = 2 * 1460) -> list[LinkPacket]:
    """The rule above over built IPv4/IPv6 packets of one flush, connections told apart by
    their addresses and ports (read in place); the packets not superseded, in order.  `span`:
    the connections' ack span (two full-sized segments, bytes)."""
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
        hlen = (p[t + 12] >> 4) << 2
        ack = int.from_bytes(p[t + 8:t + 12], "big")
        c.note(key, i, p[t + 13], ack, len(p) != t + hlen, span,
               is_dsack(ack, _sack_blocks(p[t + 20:t + hlen])))
    drop = c.take()
    if not drop:
        return list(packets)
    dropped = set(drop)
    return [p for i, p in enumerate(packets) if i not in dropped]
