"""Loss recovery: one object per regime, chosen once when the handshake completes.

Three regimes, after gVisor netstack's lossRecovery interface (reno_recovery.go,
sack_recovery.go) and aioquic's QuicPacketRecovery, each an object the TCB calls instead
of branching on SACK/RACK flags:

* :class:`NewRenoRecovery`, connections without SACK: RFC 5681 3.2 fast retransmit after
  DupThresh duplicate ACKs, RFC 6582 NewReno partial ACKs (the "Impatient" timer variant,
  3.2 step 3), after an RTO go-back-N from SND.UNA; the lost range is a sequence interval.
* :class:`SackRecovery`, SACK connections without RACK (config.rack False): RFC 6675 over
  per-segment records (tcpstack/tcp/rack.py SendQueue): IsLost() (DupThresh SACKed
  segments above), NextSeg() rules 1-4, SetPipe().
* :class:`RackRecovery`, SACK connections with config.rack: RFC 8985 RACK time-based loss
  detection with its reordering timer and tail loss probes (tcpstack/tcp/tlp.py); NextSeg()
  rule 1 over what RACK marked lost.

What stays in the TCB because every regime shares it: the RFC 5681/6675 recovery variables
(``_in_recovery``, ``_in_loss`` after an RTO, ``_recover`` = RecoveryPoint, ``dupacks``,
``_rxt_nxt`` = HighRxt + 1, ``_fast_pending``), entering/leaving recovery
(TCPConnection._enter_recovery/_enter_loss), the congestion controller and the per-segment
records (``_rq``, ``_sb``) as data.  A regime object holds only its own state and never a
reference to the TCB (that would be a reference cycle for every connection): each method
takes the TCB, ``c``.
"""
from __future__ import annotations

import abc

from typing import TYPE_CHECKING

from tcpstack.tcp.rack import LOST, RTX, SACKED, SendQueue, SentSegment, sent_after
from tcpstack.tcp.tlp import TailLossProbe

if TYPE_CHECKING:
    from tcpstack.tcp.connection import TCPConnection
    from tcpstack.wire.segment import TCPSegment


class LossRecovery(abc.ABC):
    """What differs between the regimes (the base does nothing; see the module docstring).
    Called by the TCB: per ACK (:meth:`on_cumulative_ack`, :meth:`on_ack_done`), per sent
    segment (:meth:`pipe`), per send opportunity (:meth:`retransmit`, :meth:`after_new_data`,
    :meth:`arm_timers`), and on the rarer events (duplicate ACK, partial ACK, RTO...)."""

    __slots__ = ()
    name = "none"

    @abc.abstractmethod
    def pipe(self, c: "TCPConnection") -> int:
        """RFC 6675 SetPipe(): octets estimated in flight."""

    def on_enter_recovery(self, c: "TCPConnection") -> None:
        """Fast recovery begins (TCPConnection._enter_recovery did the common part)."""

    def on_cumulative_ack(self, c: "TCPConnection", ack: int, rtt: float | None,
                          tsecr: int | None, now: float) -> None:
        """SND.UNA advanced to `ack` (before undo detection and the recovery decisions)."""

    def on_partial_ack(self, c: "TCPConnection", ack: int, acked: int) -> bool:
        """RFC 6582 3.2 step 3: an ACK below the recovery point in fast recovery.  Returns
        whether the retransmission timer restarts."""
        return True

    def on_recovery_exit(self, c: "TCPConnection") -> None:
        """Fast recovery or the loss state ended (a full ACK)."""

    def on_dupack(self, c: "TCPConnection", seg: "TCPSegment", now: float) -> None:
        """A duplicate ACK (c.dupacks counted it) outside recovery, above the last
        recovery point: enter fast recovery when the regime says the head is lost."""

    def on_ack_done(self, c: "TCPConnection", seg: "TCPSegment", ack: int, prior_una: int,
                    new_ranges: list[tuple[int, int]] | None,
                    dsack: tuple[int, int] | None, now: float) -> None:
        """After the cumulative ACK and duplicate ACK rules: SACK records, loss detection."""

    @abc.abstractmethod
    def on_rto(self, c: "TCPConnection", now: float, flight: int) -> None:
        """RFC 6298 rules (5.4)-(5.6) after the common part of the timeout (backoff count, cwnd):
        decide what is lost, enter the loss state, retransmit the first lost segment and
        restart the timer."""

    def retransmit(self, c: "TCPConnection", out: list["TCPSegment"], now: float) -> bool:
        """NextSeg() rule 1: retransmit what is deemed lost while cwnd allows (the fast
        retransmit regardless).  True if anything was sent."""
        return False

    def after_new_data(self, c: "TCPConnection", out: list["TCPSegment"], now: float) -> bool:
        """In fast recovery, after new data went out: more retransmissions (NextSeg() rules
        3 and 4).  True if anything was sent."""
        return False

    def arm_timers(self, c: "TCPConnection", now: float) -> None:
        """Data is in flight after sending: arm the regime's own timers (the PTO)."""

    def detect_losses(self, c: "TCPConnection", now: float) -> None:
        """The regime's loss detection (RACK's reordering timer fired)."""

    def on_tlp_timer(self, c: "TCPConnection", now: float) -> None:
        """The probe timeout fired (RFC 8985 7.3)."""

    def on_spurious(self, c: "TCPConnection", rto_episode: bool) -> None:
        """The episode's retransmissions were spurious (undo, RFC 4015)."""

    def unmark_lost(self, c: "TCPConnection", now: float) -> None:
        """After an undo: what was only deemed lost is no longer retransmitted."""

    def on_pmtu_drop(self, c: "TCPConnection") -> None:
        """The path MTU fell below what is in flight: everything in flight is lost."""


class NewRenoRecovery(LossRecovery):
    """RFC 5681 3.2 / RFC 6582 (connections without SACK).  The lost range is
    [SND.UNA, lost_floor) in fast recovery (one segment, moved up by partial ACKs) and
    [SND.UNA, RecoveryPoint) after a timeout; HighRxt tracks what was resent."""

    __slots__ = ("lost_floor", "first_partial")
    name = "newreno"

    def __init__(self) -> None:
        self.lost_floor = 0          # octets below this are deemed lost in fast recovery
        self.first_partial = True    # the first partial ACK of the episode is still to come

    def pipe(self, c: "TCPConnection") -> int:
        flight = c.snd_nxt - c.snd_una
        if not (c._in_recovery or c._in_loss or c.dupacks):
            return flight
        snd_una = c.snd_una
        lost_end = self.lost_end(c)
        lost = min(lost_end, c.snd_nxt) - snd_una if lost_end > snd_una else 0
        rxt = c._rxt_nxt - snd_una if c._rxt_nxt > snd_una else 0
        sacked = c.dupacks * c.snd_mss      # each dupack: a segment left the network
        if sacked > flight - lost:
            sacked = flight - lost
        pipe = flight - sacked - lost + rxt
        return pipe if pipe > 0 else 0

    def lost_end(self, c: "TCPConnection") -> int:
        """Every octet below this is deemed lost (in fast recovery / after an RTO)."""
        if c._in_loss:
            return c._recover
        if c._in_recovery:
            return self.lost_floor
        return c.snd_una

    def on_enter_recovery(self, c: "TCPConnection") -> None:
        self.first_partial = True
        self.lost_floor = c.snd_una + c.snd_mss

    def on_cumulative_ack(self, c: "TCPConnection", ack: int, rtt: float | None,
                          tsecr: int | None, now: float) -> None:
        rq = c._rq
        if rq is not None:                     # records kept for rate sampling only
            rq.ack(ack, now, tsecr)

    def on_partial_ack(self, c: "TCPConnection", ack: int, acked: int) -> bool:
        # RFC 6582 3.2 step 3: the segment after the partial ACK is lost; deflate the
        # duplicate-ACK count by what the ACK covered, and restart the timer only on the
        # first partial ACK ("Impatient", RFC 6582 3.2 step 3 / RFC 6298 rule (5.3)).
        self.lost_floor = ack + c.snd_mss
        c._rxt_nxt = ack
        segs = acked // c.snd_mss
        c.dupacks = max(0, c.dupacks - max(0, segs - 1))
        restart = self.first_partial
        self.first_partial = False
        return restart

    def on_dupack(self, c: "TCPConnection", seg: "TCPSegment", now: float) -> None:
        if c.dupacks >= c.config.dupthresh:            # RFC 5681 3.2 step 2
            c._enter_recovery(now)

    def on_rto(self, c: "TCPConnection", now: float, flight: int) -> None:
        # RFC 6675 5.1 / RFC 5681 3.1: leave fast recovery, RecoveryPoint = HighData (the
        # scoreboard is empty without SACK).
        c._enter_loss()
        c._rtt_seq = None                      # Karn
        c._karn_mark(now)
        c._rtt.back_off()                      # RFC 6298 rule (5.5)
        # RFC 6298 rule (5.4): retransmit the earliest unacknowledged segment now.
        a = c.snd_una
        room = c._seg_payload_room()
        lim = a + room if room < flight else c.snd_nxt
        c._out.append(c._segment_for(a, lim, now, rtx=True))
        if c._rq is not None:
            c._rq.retransmitted_range(a, lim, now)
        st = c._stats
        st.retransmits += 1
        st.retransmitted_bytes += lim - a
        c._rxt_nxt = lim
        c._restart_rto_after_timeout(now)      # RFC 6298 rule (5.6)

    def retransmit(self, c: "TCPConnection", out: list["TCPSegment"], now: float) -> bool:
        if not (c._in_recovery or c._in_loss):
            return False
        sent = False
        mss = c.snd_mss
        st = c._stats
        while True:
            # NextSeg() rule 1 on the lost range (and the hole-filling after an RTO, 5.1).
            lo = c._rxt_nxt if c._rxt_nxt > c.snd_una else c.snd_una
            hi = self.lost_end(c)
            if hi > c.snd_nxt:
                hi = c.snd_nxt
            if lo >= hi:
                break
            if not c._fast_pending and c.cc.cwnd - self.pipe(c) < mss:
                break
            a, b = lo, hi
            room = c._seg_payload_room()
            lim = a + room if a + room < b else b
            out.append(c._segment_for(a, lim, now, rtx=True))
            if c._rq is not None:
                c._rq.retransmitted_range(a, lim, now)
            sent = True
            st.retransmits += 1
            st.retransmitted_bytes += lim - a
            if c._fast_pending:
                st.fast_retransmits += 1
                c._fast_pending = False
            c._rxt_nxt = lim
            c._rtt_seq = None            # Karn
            c._karn_mark(now)
        return sent


class SackRecovery(LossRecovery):
    """RFC 6675 on per-segment records (the SendQueue it is given) and the SACK scoreboard (c._sb)."""

    __slots__ = ("rescue_rxt", "rq")
    name = "sack"

    def __init__(self, rq: SendQueue) -> None:
        self.rescue_rxt: int | None = None   # RFC 6675 RescueRxt (None: undefined)
        self.rq = rq                         # the per-segment records (the TCB's c._rq)

    def pipe(self, c: "TCPConnection") -> int:
        # Per-segment SetPipe(): an unSACKed octet counts once unless deemed lost, once
        # more while a retransmission of it is in flight.
        rq = self.rq
        pipe = c.snd_nxt - c.snd_una - rq.sacked_out - rq.lost_out + rq.retrans_out
        return pipe if pipe > 0 else 0

    def on_enter_recovery(self, c: "TCPConnection") -> None:
        self.rescue_rxt = None

    def on_cumulative_ack(self, c: "TCPConnection", ack: int, rtt: float | None,
                          tsecr: int | None, now: float) -> None:
        rq = self.rq
        if rtt is not None:
            rq.update_min_rtt(rtt, now)        # RFC 8985 6.2 step 1
        rq.ack(ack, now, tsecr)
        if c._sb:
            c._sb.advance(ack)

    def on_partial_ack(self, c: "TCPConnection", ack: int, acked: int) -> bool:
        if not c._sb:
            # No SACK information at all (stripped by a middlebox?): NewReno's partial-ACK
            # rule, the next segment is lost -- unless it was itself retransmitted after
            # the latest segment this ACK delivered: that retransmission's ACK may be the
            # next to come (RFC 8985 6.2's time order; e.g. a rescue retransmission, RFC
            # 6675 NextSeg() rule 4, sent just after the one now acknowledged).
            rq = self.rq
            head = rq.first()
            if head is not None and head.flags & RTX and rq.xmit_ts >= 0 and \
                    sent_after(head.xmit_ts, head.xmit_no, rq.xmit_ts, rq.xmit_no):
                return True
            rq.mark_head_lost()
        return True

    def on_recovery_exit(self, c: "TCPConnection") -> None:
        self.rq.on_recovery_exit()

    def on_dupack(self, c: "TCPConnection", seg: "TCPSegment", now: float) -> None:
        # RFC 6675 5 step (1): DupAcks >= DupThresh marks the head lost (the loss detection
        # after this ACK then enters recovery).
        if c.dupacks >= c.config.dupthresh:
            self.rq.mark_head_lost()

    def on_ack_done(self, c: "TCPConnection", seg: "TCPSegment", ack: int, prior_una: int,
                    new_ranges: list[tuple[int, int]] | None,
                    dsack: tuple[int, int] | None, now: float) -> None:
        rq = self.rq
        if new_ranges:
            new_ranges.sort()
            rq.sack(new_ranges, now)
        rq.end_ack(now)
        self.on_ack_records(c, seg, ack, prior_una, dsack, now)
        if dsack is not None:
            c._dsack_undo(dsack, now)
        self.after_undo_check(c, seg, ack, prior_una, dsack, now)
        self.detect_losses(c, now)

    def on_ack_records(self, c: "TCPConnection", seg: "TCPSegment", ack: int, prior_una: int,
                       dsack: tuple[int, int] | None, now: float) -> None:
        """Hook before D-SACK undo (RACK: the D-SACK round of RFC 8985 6.2 step 4)."""

    def after_undo_check(self, c: "TCPConnection", seg: "TCPSegment", ack: int, prior_una: int,
                         dsack: tuple[int, int] | None, now: float) -> None:
        """Hook after D-SACK undo (RACK: TLP_process_ack)."""

    def mark_losses(self, c: "TCPConnection", now: float) -> None:
        """RFC 6675 IsLost(): every unSACKed segment below the DupThresh'th SACKed one."""
        if c._sb:
            b = c._sb.lost_boundary(c.config.dupthresh, c.snd_mss)
            if b is not None:
                self.rq.mark_lost_below(b)

    def detect_losses(self, c: "TCPConnection", now: float) -> None:
        """Mark lost segments, and enter fast recovery when some are (RFC 6675 5 step 4 /
        RFC 8985 6.2 step 4)."""
        self.mark_losses(c, now)
        if self.rq.pending_lost and not (c._in_recovery or c._in_loss) \
                and c.snd_una >= c._recover and c.state in c._SEND_STATES:
            c._enter_recovery(now)

    def rto_mark_lost(self, c: "TCPConnection", now: float) -> None:
        self.rq.mark_all_lost()                  # RFC 6675 5.1 "filling in" the holes

    def on_rto(self, c: "TCPConnection", now: float, flight: int) -> None:
        rq = self.rq
        head = rq.first()
        if c._rtx_count > 1 or (head is not None and head.flags & SACKED):
            # RFC 2018 8 / RFC 6675 5.1: SACK information is kept across a timeout unless
            # the receiver seems to have reneged (the segment at SND.UNA was SACKed) or the
            # timeout repeats; then it is expunged.
            c._sb.clear()
            rq.clear_sacks()
        self.rto_mark_lost(c, now)
        c._enter_loss()
        c._rtt.back_off()                      # RFC 6298 rule (5.5)
        r = rq.next_lost()
        if r is not None:                      # RFC 6298 rule (5.4)
            self.retransmit_record(c, r, c._out, now)
        c._restart_rto_after_timeout(now)      # RFC 6298 rule (5.6)

    def retransmit(self, c: "TCPConnection", out: list["TCPSegment"], now: float) -> bool:
        # RFC 6675 NextSeg() rule 1 (what RACK or IsLost() marked, lowest first).
        rq = self.rq
        mss = c.snd_mss
        sent = False
        while True:
            r = rq.next_lost()
            if r is None:
                break
            if not c._fast_pending and c.cc.cwnd - self.pipe(c) < mss:
                break
            self.retransmit_record(c, r, out, now)
            sent = True
        return sent

    def retransmit_record(self, c: "TCPConnection", r: SentSegment, out: list["TCPSegment"],
                          now: float, *, tail: bool = False) -> SentSegment:
        """Retransmit record r (split to one segment's payload room first: its head, or
        with ``tail`` its last piece); returns the record actually sent."""
        rq = self.rq
        room = c._seg_payload_room()
        fin = 1 if c._fin_queued and r.start <= c._fin_seq < r.end else 0
        if r.end - r.start - fin > room:
            if tail:
                r = rq.split(r, r.end - fin - room)
            else:
                rq.split(r, r.start + room)
        a, b = r.start, r.end
        out.append(c._segment_for(a, b, now, rtx=True))
        rq.retransmitted(r, now)
        st = c._stats
        st.retransmits += 1
        st.retransmitted_bytes += b - a - fin
        if c._fast_pending:
            st.fast_retransmits += 1
            c._fast_pending = False
            self.rescue_rxt = b                # RFC 6675 5 (4.3)
        elif c._in_recovery:
            st.sack_retransmits += 1
        if c._rxt_nxt < b and not tail:
            c._rxt_nxt = b                     # HighRxt (C.2)
        c._note_retransmit(a, b, now)
        return r

    def after_new_data(self, c: "TCPConnection", out: list["TCPSegment"], now: float) -> bool:
        """RFC 6675 NextSeg() rule 3 (an unSACKed segment above HighRxt and below the
        highest SACKed octet, though not yet deemed lost) and rule 4 (one "rescue"
        retransmission of the highest unSACKed segment per recovery episode), while
        cwnd - pipe >= 1 SMSS, once no new data can go (nothing unsent, or the peer's
        window is full).  They keep the ACK clock going when the tail is lost."""
        if c._has_unsent() and c.snd_una + c.snd_wnd > c.snd_nxt:
            return False
        rq = self.rq
        sb = c._sb
        mss = c.snd_mss
        sent = False
        while c.cc.cwnd - self.pipe(c) >= mss and rq.next_lost() is None:
            hi = sb.highest
            lo = c._rxt_nxt if c._rxt_nxt > c.snd_una else c.snd_una
            r = None
            while hi is not None and lo < hi:
                hole = sb.next_hole(lo, hi)
                if hole is None:
                    break
                r = rq.find(hole[0])
                if r is not None and not r.flags & (SACKED | LOST | RTX):
                    break
                lo = r.end if r is not None else hole[1]
                r = None
            if r is not None:                               # rule 3
                self.retransmit_record(c, r, out, now)
                sent = True
                continue
            if self.rescue_rxt is None or c.snd_una >= self.rescue_rxt:
                r = rq.last_unsacked()                      # rule 4
                if r is not None and not r.flags & RTX:     # (not if already resent)
                    self.retransmit_record(c, r, out, now, tail=True)
                    c._stats.rescue_retransmits += 1
                    self.rescue_rxt = c._recover + 1        # once per episode
                    sent = True
            break
        return sent

    def unmark_lost(self, c: "TCPConnection", now: float) -> None:
        self.rq.unmark_lost(now)

    def on_pmtu_drop(self, c: "TCPConnection") -> None:
        self.rq.mark_all_lost()


class RackRecovery(SackRecovery):
    """RFC 8985 RACK-TLP on SACK connections: losses by time (RACK.xmit_ts + RTT +
    reo_wnd), the reordering timer (c._t_rack), tail loss probes (``tlp``, c._t_tlp)."""

    __slots__ = ("tlp",)
    name = "rack"

    def __init__(self, rq: SendQueue) -> None:
        super().__init__(rq)
        self.tlp = TailLossProbe()

    def on_enter_recovery(self, c: "TCPConnection") -> None:
        self.rescue_rxt = None
        self.tlp.end = None                    # RFC 8985 7.1 TLP_init()

    def on_partial_ack(self, c: "TCPConnection", ack: int, acked: int) -> bool:
        return True

    def on_dupack(self, c: "TCPConnection", seg: "TCPSegment", now: float) -> None:
        # DupThresh only when the ACKs carry no SACK blocks: RACK's own rule covers SACKed
        # segments (RFC 8985 6.2 step 4).
        if c.dupacks >= c.config.dupthresh and not seg.sack_blocks:
            self.rq.mark_head_lost()

    def on_ack_done(self, c: "TCPConnection", seg: "TCPSegment", ack: int, prior_una: int,
                    new_ranges: list[tuple[int, int]] | None,
                    dsack: tuple[int, int] | None, now: float) -> None:
        # SackRecovery.on_ack_done with RACK's hooks written out (once per ACK: calls count)
        rq = self.rq
        if prior_una == c.snd_nxt and not new_ranges and dsack is None \
                and self.tlp.end is None and rq.head == len(rq.segs):
            # Nothing was in flight (a receive-only connection's every ACK): no record to
            # (S)ACK or deem lost, no probe to settle, no DSACK round to start (one ended at
            # or below SND.UNA counts as none, 6.2 step 4); RACK_detect_loss() would only
            # find the reordering timer unneeded (6.2 step 5).
            c._t_rack = None
            return
        if new_ranges:
            new_ranges.sort()
            rq.sack(new_ranges, now)
        rq.end_ack(now)
        rq.on_ack_dsack_round(c.snd_una, dsack is not None, c.snd_nxt)   # RFC 8985 6.2 step 4
        if dsack is not None:
            c._dsack_undo(dsack, now)
        if self.tlp.end is not None and ack >= self.tlp.end:
            self.after_undo_check(c, seg, ack, prior_una, dsack, now)
        self.detect_losses(c, now)

    def detect_losses(self, c: "TCPConnection", now: float) -> None:
        rq = self.rq
        reo = rq.reo_wnd(c._in_recovery or c._in_loss, c.config.dupthresh, c._rtt.srtt)
        n, deadline = rq.detect_loss(now, reo)             # RFC 8985 6.2 step 5
        c._t_rack = deadline
        if n:
            c._stats.rack_lost += n
        if rq.pending_lost and not (c._in_recovery or c._in_loss) \
                and c.snd_una >= c._recover and c.state in c._SEND_STATES:
            c._enter_recovery(now)

    def on_ack_records(self, c: "TCPConnection", seg: "TCPSegment", ack: int, prior_una: int,
                       dsack: tuple[int, int] | None, now: float) -> None:
        self.rq.on_ack_dsack_round(c.snd_una, dsack is not None, c.snd_nxt)

    def after_undo_check(self, c: "TCPConnection", seg: "TCPSegment", ack: int, prior_una: int,
                         dsack: tuple[int, int] | None, now: float) -> None:
        tlp = self.tlp
        if tlp.end is not None and ack >= tlp.end:
            if tlp.on_ack(ack, prior_una, dsack, bool(seg.sack_blocks)):
                # RFC 8985 7.4.2: the probe repaired a single loss; the congestion
                # response is still owed, if no recovery episode took care of it.
                c._stats.tlp_recoveries += 1
                if not (c._in_recovery or c._in_loss):
                    c._undo.forget_older()       # a response no episode can undo
                    c.cc.on_congestion_event(now, c._flight_size(prior_una))
                    c.cc.on_recovery_exit(now)

    def mark_losses(self, c: "TCPConnection", now: float) -> None:
        """RFC 8985 6.2 step 5: RACK_detect_loss(), arming the reordering timer."""
        rq = self.rq
        reo = rq.reo_wnd(c._in_recovery or c._in_loss, c.config.dupthresh, c._rtt.srtt)
        n, deadline = rq.detect_loss(now, reo)
        c._t_rack = deadline
        if n:
            c._stats.rack_lost += n

    def rto_mark_lost(self, c: "TCPConnection", now: float) -> None:
        rq = self.rq
        reo = rq.reo_wnd(True, c.config.dupthresh, c._rtt.srtt)
        c._stats.rack_lost += rq.mark_lost_on_rto(now, c.snd_una, reo)   # RFC 8985 6.3

    def on_rto(self, c: "TCPConnection", now: float, flight: int) -> None:
        self.tlp.end = None                    # RFC 8985 7.1
        super().on_rto(c, now, flight)

    def after_new_data(self, c: "TCPConnection", out: list["TCPSegment"], now: float) -> bool:
        return False                           # RACK's timers do NextSeg() rules 3-4's job

    def arm_timers(self, c: "TCPConnection", now: float) -> None:
        """RFC 8985 7.2: arm the PTO after sending, unless recovery, the persist state, the
        reordering timer or SACKed data make a probe pointless.

        One exception (a choice beyond RFC 8985 7.2, which leaves fast recovery to "the
        RACK reordering timer"): in fast recovery with no reordering timer pending, RACK
        has nothing left to act on -- a retransmission lost again (or the ACKs of the last
        segments lost) is detected by RACK's rule (6.2 step 5) only once a segment sent
        after it is delivered, and with cwnd full nothing is sent.  There the PTO, restarted
        by every ACK, sends one probe after 2 SRTT of silence: its SACK lets RACK mark the
        lost retransmission instead of the RTO."""
        if (c._in_loss or c._persisting or c._t_rack is not None
                or (self.rq.segs_sacked and not c._in_recovery)):
            c._t_tlp = None
        elif c._in_recovery:
            # (only while a probe may go: otherwise the timer would only wake to skip it)
            c._t_tlp = (self.tlp.pto_deadline(c._rtt.srtt, c.snd_nxt - c.snd_una, c.snd_mss,
                                              c.config, now, c._t_rtx)
                        if self.tlp.may_probe(c._rtt.samples) else None)
        elif c._tlp_rearm:
            c._t_tlp = self.tlp.pto_deadline(c._rtt.srtt, c.snd_nxt - c.snd_una, c.snd_mss,
                                             c.config, now, c._t_rtx)

    def on_tlp_timer(self, c: "TCPConnection", now: float) -> None:
        """RFC 8985 7.3 TLP_send_probe(): new data if the peer's window allows (cwnd not
        consulted), else the last unSACKed segment again."""
        if c.state not in c._SEND_STATES or c.snd_nxt <= c.snd_una or c._in_loss:
            return
        tlp = self.tlp
        if tlp.may_probe(c._rtt.samples):
            is_retrans = False
            start = c.snd_nxt
            sent = c._send_new_probe(now)
            if sent and c.snd_nxt - start >= c.snd_mss:
                # Two full segments of new data where there are (RFC 8985 7.3 says one):
                # a receiver answers a second full-sized segment at once (RFC 5681 4.2),
                # while a lone one waits for its delayed-ACK timer (40 ms on Linux and here,
                # up to 200 ms elsewhere) -- that wait, after a probe whose flight had lost
                # its last ACK, was a 50 ms stall per lost ACK at 3% loss (issue 14).
                c._send_new_probe(now)
            if not sent:
                r = self.rq.last_unsacked()
                if r is not None:
                    self.retransmit_record(c, r, c._out, now, tail=True)
                    is_retrans = sent = True
            if sent:
                tlp.sent(c.snd_nxt, is_retrans, c._rtt.samples)
                c._stats.tlp_probes += 1
                c._t_rtx = now + c._rtt.rto
        if c._t_rtx is None:
            c._t_rtx = now + c._rtt.rto

    def on_spurious(self, c: "TCPConnection", rto_episode: bool) -> None:
        if not rto_episode:
            self.rq.reordering_seen = True       # the "lost" segment was only reordered
