"""The sender's per-segment transmit records and RACK time-based loss detection.

RFC 8985 (RACK-TLP) 5.2 per-segment variables (xmit_ts, lost, retransmitted, end_seq), 5.3
per-connection variables, 6.1 (on transmit), 6.2 steps 1-5 (on ACK: min_RTT, RACK.segment,
reordering detection, reordering window with DSACK adaptation, loss detection) and 6.3
(marking on RTO).  It is also the per-segment side of the RFC 6675 scoreboard of a SACK
connection: which segments are SACKed, deemed lost, retransmitted and still in flight, so
that SetPipe() is O(1) (pipe = outstanding - sacked - lost + retransmitted-in-flight, each
kept as a running byte count) and NextSeg() rule 1 is a heap lookup.

Storage: one small ``SentSegment`` (``__slots__``) per transmitted segment, in a list sorted
by sequence number (acknowledged records leave from the front in O(1) amortised), plus a
doubly linked list of the segments in flight ordered by transmission time (RFC 8985 6.2,
"a separate doubly linked list ordered by Segment.xmit_ts"), so RACK's loss scan stops at
the first segment sent after RACK.segment: per-ACK work is proportional to the segments
newly delivered or newly lost, not to the window.

Times are the connection's virtual-clock seconds (floats: finer than the 1/4 min-RTT the RFC
asks for, section 4 item 2).  Sequence numbers are the connection's unwrapped ints.

Choices: RACK_sent_after() breaks timestamp ties with a per-connection transmission counter
(``xmit_no``) instead of the sequence number: the RFC's tie-break assumes segments sent in
the same clock tick went out in sequence order, which is false for a retransmission sent
after new data in the same tick (and a virtual clock has many equal ticks); the counter is
the exact transmission order.  The reordering timer is armed for the *earliest* segment still inside the window
(RFC 8985 6.2 arms it for the latest one): expiry re-runs the same detection, so only the
moment at which each segment is declared lost changes, and it is never later.  min_RTT is a
windowed minimum over ``MIN_RTT_WINDOW`` seconds (6.2 step 1 SHOULD), one slot.
"""
from __future__ import annotations

import heapq
from bisect import bisect_right
from operator import attrgetter
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from tcpstack.tcp.rate import RateSampler

SACKED = 1     # selectively acknowledged
LOST = 2       # deemed lost (RACK or RFC 6675 IsLost); stays set once retransmitted
RTX = 4        # a retransmission of it is in flight (cleared when deemed lost again)
EVER = 8       # Segment.retransmitted (RFC 8985 5.2)
DONE = 16      # cumulatively acknowledged: no longer in the queue
LINKED = 32    # in the transmission-time list (in flight, not SACKed)

MASK = 0xFFFFFFFF
HALF = 0x80000000
MIN_RTT_WINDOW = 300.0    # seconds (Linux's tcp_min_rtt_wlen default)
REO_WND_PERSIST = 16      # RFC 8985 6.2 step 4
EPS = 1e-9                # float-time tolerance for "remaining <= 0"
RTT_TICK = 0.001          # RTT samples come from the 1 ms timestamp clock: min_RTT is
                          # only known to within a tick (6.2 step 2 "rtt < RACK.min_rtt")


# bisect key of the records: their start (a C-level getter: bisects run on every SACK)
_start: "Callable[[SentSegment], int]" = attrgetter("start")


class SentSegment:
    """One transmitted segment [start, end) and the state of its latest transmission."""
    __slots__ = ("start", "end", "xmit_ts", "xmit_no", "flags", "tprev", "tnext",
                 # delivery-rate send state (tcpstack/tcp/rate.py), set only when the
                 # queue has a sampler: P.delivered, P.delivered_time, P.first_sent_time,
                 # P.is_app_limited
                 "rs_delivered", "rs_dtime", "rs_first", "rs_app")
    rs_delivered: int
    rs_dtime: float
    rs_first: float
    rs_app: bool

    def __init__(self, start: int, end: int, xmit_ts: float, xmit_no: int,
                 flags: int = 0) -> None:
        self.start = start
        self.end = end
        self.xmit_ts = xmit_ts
        self.xmit_no = xmit_no        # transmission order (exact tie-break of xmit_ts)
        self.flags = flags
        self.tprev: SentSegment | None = None
        self.tnext: SentSegment | None = None

    def __repr__(self) -> str:
        f = "".join(c for b, c in ((SACKED, "S"), (LOST, "L"), (RTX, "R"), (EVER, "E"),
                                   (DONE, "D")) if self.flags & b)
        return f"<seg {self.start}-{self.end} t={self.xmit_ts:.6f} {f}>"


def sent_after(t1: float, no1: int, t2: float, no2: int) -> bool:
    """RFC 8985 6.2 RACK_sent_after(), ties broken by transmission order."""
    return t1 > t2 or (t1 == t2 and no1 > no2)


class SendQueue:
    """Per-segment records of a SACK connection's outstanding data, and RACK state."""

    __slots__ = ("segs", "head", "sacked_out", "lost_out", "retrans_out", "segs_sacked",
                 "_lostq", "_pending", "_tfirst", "_tlast", "_ts_fn", "_mark_hint",
                 "xmit_ts", "end_seq", "rtt", "min_rtt", "_min_rtt_at", "fack",
                 "reordering_seen", "reo_wnd_mult", "reo_wnd_persist", "dsack_round",
                 "_best_ts", "xmit_no", "_xmit_counter", "rate", "lost_bytes")

    def __init__(self, ts_fn: Callable[[float], int]) -> None:
        self.segs: list[SentSegment] = []
        self.head = 0                 # index of the first live record in segs
        self.sacked_out = 0           # bytes of SACKed records
        self.lost_out = 0             # bytes of LOST records (retransmitted or not)
        self.retrans_out = 0          # bytes of records with a retransmission in flight
        self.segs_sacked = 0          # RACK.segs_sacked
        self._lostq: list[tuple[int, int, SentSegment]] = []   # heap of lost, to resend
        self._pending = 0             # records LOST and not RTX and not SACKed
        self._tfirst: SentSegment | None = None
        self._tlast: SentSegment | None = None
        self._ts_fn = ts_fn           # the connection's timestamp clock (for TSecr checks)
        self._mark_hint = 0           # RFC 6675 IsLost marking already done below this
        # RACK (RFC 8985 5.3)
        self.xmit_ts = -1.0           # RACK.xmit_ts (-1: no segment delivered yet)
        self.end_seq = 0              # RACK.end_seq
        self.xmit_no = -1             # RACK.segment's transmission number
        self._xmit_counter = 0
        self.rtt = 0.0                # RACK.rtt
        self.min_rtt = float("inf")   # RACK.min_RTT
        self._min_rtt_at = 0.0
        self.fack = 0                 # RACK.fack
        self.reordering_seen = False
        self.reo_wnd_mult = 1
        self.reo_wnd_persist = REO_WND_PERSIST
        self.dsack_round: int | None = None
        self._best_ts = -1.0
        # Delivery-rate sampling (tcpstack/tcp/rate.py), only for congestion controls that
        # ask for it; lost_bytes counts every byte ever deemed lost (rate samples' losses).
        self.rate: RateSampler | None = None
        self.lost_bytes = 0

    # ------------------------------------------------------------------ queue basics

    def __len__(self) -> int:
        return len(self.segs) - self.head

    def records(self) -> list[SentSegment]:
        return self.segs[self.head:]

    def first(self) -> SentSegment | None:
        return self.segs[self.head] if self.head < len(self.segs) else None

    def last_unsacked(self) -> SentSegment | None:
        segs = self.segs
        for i in range(len(segs) - 1, self.head - 1, -1):
            if not segs[i].flags & SACKED:
                return segs[i]
        return None

    def find(self, seq: int) -> SentSegment | None:
        """The record containing ``seq``, split so that it starts at ``seq``."""
        segs = self.segs
        i = bisect_right(segs, seq, lo=self.head, key=_start) - 1
        if i < self.head:
            return None
        r = segs[i]
        if seq >= r.end:
            return None
        if r.start < seq:
            return self.split(r, seq, i)
        return r

    def sent(self, start: int, end: int, now: float) -> None:
        """RFC 8985 6.1 RACK_transmit_new_data()."""
        self._xmit_counter += 1
        r = SentSegment(start, end, now, self._xmit_counter, LINKED)
        if self.rate is not None:
            self.rate.on_sent(r, now, self.head >= len(self.segs))
        self.segs.append(r)
        self._link_last(r)

    def retransmitted(self, r: SentSegment, now: float) -> None:
        """RFC 8985 6.1 RACK_retransmit_data() (the record's LOST mark stays: it is counted
        in lost_out and retrans_out, i.e. once in the pipe, as RFC 6675 SetPipe())."""
        f = r.flags
        if not f & RTX:
            self.retrans_out += r.end - r.start
            if f & LOST:
                self._pending -= 1
        if f & LINKED:
            self._unlink(r)
        r.flags = f | RTX | EVER | LINKED
        r.xmit_ts = now
        self._xmit_counter += 1
        r.xmit_no = self._xmit_counter
        self._link_last(r)
        if self.rate is not None:
            self.rate.on_sent(r, now, False)

    def retransmitted_range(self, start: int, end: int, now: float) -> None:
        """[start, end) was retransmitted as a sequence range (a connection without SACK
        that keeps records for rate sampling): mark the records covering it."""
        segs = self.segs
        i = bisect_right(segs, start, lo=self.head, key=_start) - 1
        if i < self.head:
            i = self.head
        while i < len(segs):
            r = segs[i]
            if r.start >= end:
                break
            if r.end <= start:
                i += 1
                continue
            if r.start < start:
                self.split(r, start, i)
                i += 1
                continue
            if r.end > end:
                self.split(r, end, i)
            if not r.flags & SACKED:
                self.retransmitted(r, now)
            i += 1

    def split(self, r: SentSegment, at: int, idx: int | None = None) -> SentSegment:
        """Split record r at ``at`` (start < at < end); returns the upper part.  Byte
        counters are unchanged (both parts keep the flags)."""
        segs = self.segs
        if idx is None:
            idx = bisect_right(segs, r.start, lo=self.head, key=_start) - 1
        n = SentSegment(at, r.end, r.xmit_ts, r.xmit_no, r.flags)
        if self.rate is not None:
            n.rs_delivered = r.rs_delivered
            n.rs_dtime = r.rs_dtime
            n.rs_first = r.rs_first
            n.rs_app = r.rs_app
        r.end = at
        segs.insert(idx + 1, n)
        f = r.flags
        if f & LINKED:
            # Right after r in time order (same xmit_ts, higher end_seq).
            nx = r.tnext
            n.tprev = r
            n.tnext = nx
            r.tnext = n
            if nx is None:
                self._tlast = n
            else:
                nx.tprev = n
        if f & SACKED:
            self.segs_sacked += 1
        if f & LOST and not f & (RTX | SACKED):
            self._pending += 1
            heapq.heappush(self._lostq, (at, id(n), n))
        return n

    # ------------------------------------------------------------------ time-ordered list

    def _link_last(self, r: SentSegment) -> None:
        last = self._tlast
        r.tprev = last
        r.tnext = None
        if last is None:
            self._tfirst = r
        else:
            last.tnext = r
        self._tlast = r

    def _unlink(self, r: SentSegment) -> None:
        p, n = r.tprev, r.tnext
        if p is None:
            self._tfirst = n
        else:
            p.tnext = n
        if n is None:
            self._tlast = p
        else:
            n.tprev = p
        r.tprev = r.tnext = None
        r.flags &= ~LINKED

    # ------------------------------------------------------------------ ACK processing

    def update_min_rtt(self, rtt: float, now: float) -> None:
        """RFC 8985 6.2 step 1: a windowed minimum of the RTT samples."""
        if rtt <= self.min_rtt or now - self._min_rtt_at > MIN_RTT_WINDOW:
            self.min_rtt = rtt
            self._min_rtt_at = now

    def _delivered(self, r: SentSegment, now: float, tsecr: int | None) -> None:
        """RFC 8985 6.2 steps 2 and 3 for one newly (S)ACKed record."""
        f = r.flags
        valid = True
        if f & EVER:
            if tsecr is not None and ((tsecr - self._ts_fn(r.xmit_ts)) & MASK) >= HALF:
                valid = False          # the ACK is for an earlier transmission
            elif now - r.xmit_ts < self.min_rtt - RTT_TICK:
                valid = False          # faster than any RTT seen: the original arrived
        if valid:
            t = r.xmit_ts
            if t > self._best_ts:
                self._best_ts = t
            if sent_after(t, r.xmit_no, self.xmit_ts, self.xmit_no) or (
                    r.xmit_no == self.xmit_no and r.end > self.end_seq):   # split record
                self.xmit_ts = t
                self.xmit_no = r.xmit_no
                self.end_seq = r.end
        end = r.end
        if end > self.fack:
            self.fack = end
        elif end < self.fack and not f & EVER:
            self.reordering_seen = True

    def _drop_counts(self, r: SentSegment, nbytes: int) -> None:
        f = r.flags
        if f & SACKED:
            self.sacked_out -= nbytes
        else:
            if f & LOST:
                self.lost_out -= nbytes
            if f & RTX:
                self.retrans_out -= nbytes

    def _leave_pipe(self, f: int, nbytes: int) -> None:
        """A record not SACKed before (flags ``f``) is delivered, cumulatively or by SACK:
        its bytes leave the lost/retransmitted counts, and a lost one no longer waits."""
        if f & LOST:
            self.lost_out -= nbytes
            if not f & RTX:
                self._pending -= 1
        if f & RTX:
            self.retrans_out -= nbytes

    def ack(self, ack: int, now: float, tsecr: int | None) -> None:
        """The cumulative ACK moved to ``ack``: drop the records below it."""
        segs = self.segs
        i = self.head
        n = len(segs)
        rate = self.rate
        while i < n:
            r = segs[i]
            if r.end <= ack:
                f = r.flags
                nb = r.end - r.start
                if f & SACKED:
                    self.sacked_out -= nb
                    self.segs_sacked -= 1
                else:
                    self._leave_pipe(f, nb)
                    self._delivered(r, now, tsecr)
                    if rate is not None:
                        rate.on_delivered(r, nb, now, bool(f & EVER))
                if f & LINKED:
                    self._unlink(r)
                r.flags |= DONE
                i += 1
                continue
            if r.start < ack:
                # Partially acknowledged (the peer's segmentation differs from ours).
                self._drop_counts(r, ack - r.start)
                if rate is not None and not r.flags & SACKED:
                    rate.add_delivered(ack - r.start)
                r.start = ack
            break
        self.head = i
        if i > 256 and i * 2 > n:
            del segs[:i]
            self.head = 0

    def sack(self, ranges: "list[tuple[int, int]]", now: float) -> None:
        """Newly SACKed ranges (from SackScoreboard.update), ascending."""
        segs = self.segs
        for s, e in ranges:
            i = bisect_right(segs, s, lo=self.head, key=_start) - 1
            if i < self.head:
                i = self.head
            while i < len(segs):
                r = segs[i]
                if r.start >= e:
                    break
                if r.end <= s or r.flags & SACKED:
                    i += 1
                    continue
                if r.start < s:
                    self.split(r, s, i)
                    i += 1
                    continue
                if r.end > e:
                    self.split(r, e, i)
                f = r.flags
                nb = r.end - r.start
                self._leave_pipe(f, nb)
                if f & LINKED:
                    self._unlink(r)
                # No TSecr test for SACKed segments: a receiver echoes TS.Recent, which
                # out-of-order segments do not update (RFC 7323 4.3), so the echo is
                # always older than a SACKed retransmission; the min_RTT test remains.
                self._delivered(r, now, None)
                if self.rate is not None:
                    self.rate.on_delivered(r, nb, now, bool(f & EVER))
                    self.rate.mark_used(r)
                r.flags = (r.flags | SACKED) & ~(LOST | RTX)
                self.sacked_out += nb
                self.segs_sacked += 1
                i += 1

    def end_ack(self, now: float) -> None:
        """After ack()/sack() of one ACK: RACK.rtt from the most recently sent segment
        this ACK delivered (6.2 step 2, "in ascending order of Segment.xmit_ts")."""
        if self._best_ts >= 0:
            self.rtt = now - self._best_ts
            self._best_ts = -1.0

    # ------------------------------------------------------------------ reordering window

    def on_ack_dsack_round(self, snd_una: int, dsack: bool, snd_nxt: int) -> None:
        """RFC 8985 6.2 step 4, first part: grow reo_wnd_mult once per round with DSACK."""
        if self.dsack_round is not None and snd_una >= self.dsack_round:
            self.dsack_round = None
        if self.dsack_round is None and dsack:
            self.dsack_round = snd_nxt
            self.reo_wnd_mult += 1
            self.reo_wnd_persist = REO_WND_PERSIST

    def on_recovery_exit(self) -> None:
        """6.2 step 4: "Else if exiting Fast or RTO recovery"."""
        self.reo_wnd_persist -= 1
        if self.reo_wnd_persist <= 0:
            self.reo_wnd_mult = 1

    def reo_wnd(self, in_recovery: bool, dupthresh: int, srtt: float | None) -> float:
        """6.2 step 4 RACK_update_reo_wnd() (the DSACK part is on_ack_dsack_round)."""
        if not self.reordering_seen:
            if in_recovery or self.segs_sacked >= dupthresh:
                return 0.0
        if self.min_rtt == float("inf"):
            return 0.0 if srtt is None else srtt / 4
        w = self.reo_wnd_mult * self.min_rtt / 4
        if srtt is not None and w > srtt:
            w = srtt
        return w

    # ------------------------------------------------------------------ loss marking

    def _mark_lost(self, r: SentSegment) -> None:
        f = r.flags
        nb = r.end - r.start
        if f & RTX:
            self.retrans_out -= nb           # that retransmission is lost too
        if not f & LOST:
            self.lost_out += nb
            self.lost_bytes += nb
        elif f & RTX:
            self.lost_bytes += nb            # a lost retransmission
        if f & LINKED:
            self._unlink(r)
        r.flags = (f | LOST) & ~(RTX | LINKED)
        self._pending += 1
        heapq.heappush(self._lostq, (r.start, id(r), r))

    def detect_loss(self, now: float, reo_wnd: float) -> tuple[int, float | None]:
        """RFC 8985 6.2 step 5 RACK_detect_loss(): returns (segments newly marked lost,
        deadline of the reordering timer or None)."""
        if self.xmit_ts < 0:
            return 0, None
        rx, rno, rseq, wait = self.xmit_ts, self.xmit_no, self.end_seq, self.rtt + reo_wnd
        n = 0
        r = self._tfirst
        while r is not None:
            t = r.xmit_ts
            if not (rx > t or (rx == t and (rno > r.xmit_no or
                                            (rno == r.xmit_no and rseq > r.end)))):
                break                       # sent after RACK.segment: nothing to infer
            nxt = r.tnext
            remaining = t + wait - now
            if remaining <= EPS:
                self._mark_lost(r)
                n += 1
            else:
                return n, now + remaining
            r = nxt
        return n, None

    def mark_lost_on_rto(self, now: float, snd_una: int, reo_wnd: float) -> int:
        """RFC 8985 6.3 RACK_mark_losses_on_RTO()."""
        n = 0
        wait = self.rtt + reo_wnd
        r = self._tfirst
        while r is not None:
            nxt = r.tnext
            if r.start <= snd_una or r.xmit_ts + wait - now <= EPS:
                self._mark_lost(r)
                n += 1
            r = nxt
        first = self.first()
        if first is not None and not first.flags & (SACKED | LOST):
            self._mark_lost(first)
            n += 1
        return n

    def mark_all_lost(self) -> int:
        """Every unSACKed record not yet deemed lost (after an RTO without RACK, RFC 6675
        5.1 "filling in" the holes; or a smaller path MTU)."""
        n = 0
        for r in self.segs[self.head:]:
            f = r.flags
            if not f & SACKED and (not f & LOST or f & RTX):
                self._mark_lost(r)
                n += 1
        return n

    def mark_lost_below(self, seq: int) -> int:
        """RFC 6675 IsLost() marking: unSACKed, never retransmitted records below ``seq``."""
        lo = self._mark_hint
        if seq <= lo:
            return 0
        segs = self.segs
        i = bisect_right(segs, lo, lo=self.head, key=_start) - 1
        if i < self.head:
            i = self.head
        n = 0
        while i < len(segs):
            r = segs[i]
            if r.start >= seq:
                break
            if r.end > seq:
                self.split(r, seq, i)
            if not r.flags & (SACKED | LOST | EVER):
                self._mark_lost(r)
                n += 1
            i += 1
        self._mark_hint = seq
        return n

    def mark_head_lost(self) -> bool:
        """The segment at SND.UNA is lost (DupThresh reached, or a NewReno-style partial
        ACK without SACK information)."""
        r = self.first()
        if r is None or r.flags & SACKED or (r.flags & LOST and not r.flags & RTX):
            return False
        self._mark_lost(r)
        return True

    def next_lost(self) -> SentSegment | None:
        """NextSeg() rule 1: the lowest-sequence record deemed lost and not yet resent."""
        if not self._pending:
            self._lostq.clear()
            return None
        q = self._lostq
        while q:
            r = q[0][2]
            if r.flags & (DONE | SACKED | RTX) or not r.flags & LOST:
                heapq.heappop(q)
                continue
            return r
        return None

    @property
    def pending_lost(self) -> int:
        return self._pending

    def unmark_lost(self, now: float) -> int:
        """Undo (RFC 4015 / 3708): records deemed lost but not yet retransmitted are in
        flight after all; they re-enter the time list as if just sent."""
        n = 0
        for _, _, r in self._lostq:
            f = r.flags
            if f & LOST and not f & (DONE | SACKED | RTX):
                r.flags = f & ~LOST
                self.lost_out -= r.end - r.start
                r.xmit_ts = now
                self._xmit_counter += 1
                r.xmit_no = self._xmit_counter
                r.flags |= LINKED
                self._link_last(r)
                n += 1
        self._lostq.clear()
        self._pending = 0
        return n

    def clear_sacks(self) -> None:
        """Forget SACK information (RFC 2018 8: the receiver may have reneged); the
        formerly SACKed records are deemed lost (the caller is in RTO recovery)."""
        for r in self.segs[self.head:]:
            if r.flags & SACKED:
                r.flags &= ~SACKED
                self.sacked_out -= r.end - r.start
                self.segs_sacked -= 1
                self._mark_lost(r)
        self.fack = 0
