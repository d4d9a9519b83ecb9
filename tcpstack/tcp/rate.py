"""Delivery-rate estimation (draft-cheng-iccrg-delivery-rate-estimation-02; the behaviour of
Linux's net/ipv4/tcp_rate.c), for congestion controls that ask for it (BBR).

Per connection (draft 3.1.1, "C."): ``delivered`` (bytes delivered so far: cumulatively
acknowledged or SACKed), ``delivered_time`` (when ``delivered`` last grew),
``first_sent_time`` (send time of the first segment of the current flight) and
``app_limited`` (0, or the ``delivered`` value at which the current application-limited
period ends).  Per transmission (draft 3.1.2 "P.", recorded as 3.2 says): the same values as they were when the
segment was (re)sent, kept on the sender's per-segment records
(tcpstack/tcp/rack.py ``SentSegment`` slots ``rs_delivered``, ``rs_dtime``, ``rs_first``,
``rs_app``) -- written only when a sampler is attached to the SendQueue, so a connection
whose congestion control does not ask for rate samples pays one ``is None`` test per
record.

Per ACK (draft 3.3): every newly delivered record updates the sample from the most recently
sent one among them (``rs_delivered`` largest); at the end of the ACK :meth:`gen` makes the
sample: delivered = C.delivered - P.delivered over interval = max(send_elapsed, ack_elapsed)
(draft 3.3 "the max of the send and ACK intervals", against ACK compression), and
delivery_rate = delivered / interval.  A sample whose interval is shorter than min_rtt is
discarded (Linux: "Normally we expect interval_us >= min-rtt"; such samples come from
ACKs of segments sent before the flight's first send time, e.g. retransmissions).

A D-SACK counts as delivery (Linux tcp_dsack_seen, "A spurious retransmission is
delivered"): the D-SACKed bytes are added to ``delivered`` and to the ACK's
``acked_sacked`` (:meth:`on_dsack`), unless the D-SACKed total would exceed what the sender
ever retransmitted (Linux: "Skip the DSACK if dup segs weren't retransmitted by sender").
Without it a path that reorders beyond RACK's window (RFC 8985 6.2: at most SRTT) has every
late segment retransmitted, the copies take link capacity the samples never show, and a
rate-based sender (BBR) paces at its goodput, which then falls by the share of spurious
copies: on the simulator with 20 % of packets 10 ms late, BBR's estimate sat near 160 of the
path's 200 Mbit/s.

Application-limited marking (draft 3.4, :meth:`check_app_limited`): when the application
writes while nothing unsent is queued, the flight is below cwnd and no lost segment waits
for retransmission, the sending is application-limited until what is now in flight is
delivered (C.app_limited = C.delivered + in flight); samples taken from segments sent in
that period carry is_app_limited.

Units: bytes and seconds (the connection's virtual clock); rates in bytes per second.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tcpstack.tcp.rack import SentSegment

__all__ = ["RateSample", "RateSampler"]

MIN_RTT_WINDOW = 300.0    # seconds (Linux's tcp_min_rtt_wlen default)


class RateSample:
    """One ACK's delivery-rate sample (draft 3.1.3, Linux struct rate_sample).  Invalid
    fields are -1 (as Linux): ``delivery_rate``/``interval`` when no valid sample,
    ``rtt`` when the newest delivered segment was a retransmission."""

    __slots__ = ("delivery_rate", "interval", "delivered", "prior_delivered", "prior_time",
                 "send_elapsed", "ack_elapsed", "rtt", "is_app_limited", "is_retrans",
                 "acked_sacked", "losses", "prior_in_flight", "in_flight", "srtt",
                 "_newest_xmit")

    def __init__(self) -> None:
        self.delivery_rate = -1.0     # bytes/s
        self.interval = -1.0          # seconds
        self.delivered = -1           # bytes delivered over the interval
        self.prior_delivered = -1     # C.delivered when the newest delivered segment was sent
        self.prior_time = 0.0         # C.delivered_time then
        self.send_elapsed = 0.0
        self.ack_elapsed = 0.0
        self.rtt = -1.0               # RTT of the newest delivered (never retransmitted) segment
        self.is_app_limited = False
        self.is_retrans = False
        self.acked_sacked = 0         # bytes newly delivered by this ACK
        self.losses = 0               # bytes newly deemed lost while processing this ACK
        self.prior_in_flight = 0      # pipe before the ACK
        self.in_flight = 0            # pipe after it
        self.srtt: float | None = None   # the connection's smoothed RTT (RFC 6298)
        self._newest_xmit = -1.0

    def __repr__(self) -> str:
        return (f"<RateSample rate={self.delivery_rate:.0f}B/s interval={self.interval:.6f} "
                f"delivered={self.delivered} rtt={self.rtt:.6f} app={self.is_app_limited} "
                f"acked={self.acked_sacked} lost={self.losses}>")


class RateSampler:
    """The connection's side of delivery-rate estimation (see the module docstring)."""

    __slots__ = ("delivered", "delivered_time", "first_sent_time", "app_limited", "rs",
                 "_lost_mark", "samples", "min_rtt", "_min_rtt_at", "delivery_rate",
                 "dsack_bytes")

    def __init__(self, now: float = 0.0) -> None:
        self.delivered = 0            # C.delivered (bytes)
        self.delivered_time = now     # C.delivered_time
        self.first_sent_time = now    # C.first_sent_time
        self.app_limited = 0          # C.app_limited (0: not application-limited)
        self.rs = RateSample()        # the sample being built for the current ACK
        self._lost_mark = 0           # SendQueue.lost_bytes at the start of this ACK
        self.samples = 0              # valid samples produced (statistics)
        self.delivery_rate = 0.0      # the latest valid sample's rate (statistics)
        self.min_rtt = float("inf")   # windowed minimum of the samples' rtt (Linux tcp_min_rtt)
        self._min_rtt_at = now
        self.dsack_bytes = 0          # bytes reported by D-SACKs so far (Linux dsack_dups)

    # ------------------------------------------------------------------ send side

    def on_sent(self, r: "SentSegment", now: float, flight_empty: bool) -> None:
        """Draft 3.2 "upon each packet transmission" (Linux tcp_rate_skb_sent): a send
        into an empty pipe starts a new flight (its first send time and delivered time are
        now, so idle time is not counted as delivery time)."""
        if flight_empty:
            self.first_sent_time = now
            self.delivered_time = now
        r.rs_delivered = self.delivered
        r.rs_dtime = self.delivered_time
        r.rs_first = self.first_sent_time
        r.rs_app = self.app_limited != 0

    def check_app_limited(self, unsent: int, mss: int, pipe: int, cwnd: int,
                          lost_pending: int) -> None:
        """Draft 3.4 (Linux tcp_rate_check_app_limited), at an application write: the
        sender is application-limited if it has less than a segment unsent, the pipe is
        below cwnd and nothing deemed lost waits for retransmission."""
        if unsent < mss and pipe < cwnd and not lost_pending:
            self.app_limited = (self.delivered + pipe) or 1

    # ------------------------------------------------------------------ ACK side

    def begin_ack(self, lost_bytes: int) -> None:
        rs = self.rs
        rs.prior_delivered = -1
        rs.acked_sacked = 0
        rs.rtt = -1.0
        rs._newest_xmit = -1.0
        self._lost_mark = lost_bytes

    def on_delivered(self, r: "SentSegment", nbytes: int, now: float, retrans: bool) -> None:
        """Draft 3.3 "upon receiving an ACK", per newly (S)ACKed record (Linux
        tcp_rate_skb_delivered).  ``nbytes``: what of it is newly delivered."""
        self.delivered += nbytes
        rs = self.rs
        rs.acked_sacked += nbytes
        dtime = r.rs_dtime
        if dtime < 0:
            return                    # its send state was already used (SACKed earlier)
        if r.rs_delivered > rs.prior_delivered or (
                r.rs_delivered == rs.prior_delivered and r.xmit_ts > rs._newest_xmit):
            # The most recently sent segment delivered by this ACK defines the sample.
            rs.prior_delivered = r.rs_delivered
            rs.prior_time = dtime
            rs.is_app_limited = r.rs_app
            rs.is_retrans = retrans
            rs.send_elapsed = r.xmit_ts - r.rs_first
            rs._newest_xmit = r.xmit_ts
            rs.rtt = -1.0 if retrans else now - r.xmit_ts
            # The next flight's first send time: this segment's (draft 3.3).
            self.first_sent_time = r.xmit_ts

    def on_dsack(self, nbytes: int, retransmitted: int, max_window: int) -> bool:
        """A D-SACK of ``nbytes`` on this ACK: a spurious retransmission is delivered (Linux
        tcp_dsack_seen), so the copy's bytes count as delivered for the rate sample and the
        ACK's acked_sacked.  Not counted: a block larger than the largest window the peer
        offered ("dubious"), or one that takes the D-SACKed total past ``retransmitted``
        (the bytes the sender ever retransmitted).  True when counted."""
        if nbytes <= 0 or nbytes > max_window:
            return False
        self.dsack_bytes += nbytes
        if self.dsack_bytes > retransmitted:
            return False
        self.add_delivered(nbytes)
        return True

    def add_delivered(self, nbytes: int) -> None:
        """Bytes delivered on this ACK that no record's send state describes (a D-SACKed
        copy, the acknowledged head of a record split by the peer's segmentation): they
        count toward C.delivered and the ACK's acked_sacked, not toward the sample's
        choice of send state."""
        self.delivered += nbytes
        self.rs.acked_sacked += nbytes

    def mark_used(self, r: "SentSegment") -> None:
        """A SACKed record stays in the queue until cumulatively acknowledged: its send
        state is not to be used again then (Linux zeroes tx.delivered_mstamp)."""
        r.rs_dtime = -1.0

    def gen(self, now: float, lost_bytes: int, prior_in_flight: int,
            in_flight: int) -> RateSample:
        """Draft 3.3 end of ACK processing (Linux tcp_rate_gen): the sample of this ACK."""
        rs = self.rs
        if self.app_limited and self.delivered > self.app_limited:
            self.app_limited = 0      # the application-limited period is over (draft 3.4)
        if rs.acked_sacked:
            self.delivered_time = now
        rs.losses = lost_bytes - self._lost_mark
        rs.prior_in_flight = prior_in_flight
        rs.in_flight = in_flight
        rtt = rs.rtt
        if rtt >= 0 and (rtt <= self.min_rtt or now - self._min_rtt_at > MIN_RTT_WINDOW):
            self.min_rtt = rtt
            self._min_rtt_at = now
        if rs.prior_delivered < 0:
            rs.delivered = -1
            rs.interval = rs.delivery_rate = -1.0
            return rs
        rs.delivered = self.delivered - rs.prior_delivered
        rs.ack_elapsed = now - rs.prior_time
        interval = rs.send_elapsed if rs.send_elapsed > rs.ack_elapsed else rs.ack_elapsed
        rs.interval = interval
        # Linux: "Normally we expect interval_us >= min-rtt.  Note that rate may still be
        # over-estimated when a spuriously retransmitted skb was first (s)acked".
        if interval <= 0 or (interval < self.min_rtt - 1e-9 and self.min_rtt != float("inf")):
            rs.interval = rs.delivery_rate = -1.0
            return rs
        rs.delivery_rate = self.delivery_rate = rs.delivered / interval
        self.samples += 1
        return rs
