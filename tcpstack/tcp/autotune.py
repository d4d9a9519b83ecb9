"""Receive-buffer auto-tuning of one connection (dynamic right-sizing, as Linux
tcp_rcv_space_adjust / tcp_rcv_rtt_measure).

Once per receiver RTT the tuner looks at the bytes the application took in that RTT; the
receive buffer (the window's ceiling, RFC 9293 3.8.6) follows twice that plus room for 16
segments of cwnd growth, scaled up by twice the growth since the RTT before (a sender in
slow start), up to config.recv_buffer_max.  It follows consumption, not
arrival: a slow reader keeps a small window.  The buffer never shrinks, so the advertised
right edge never moves left (RFC 7323 2.4).

The receiver's RTT comes from the echoed timestamp of data segments (RFC 7323 4: TSecr is
the TSval of the ACK that released the data) or, without timestamps, from the time it takes
to receive one window's worth of data (an upper bound).  The TCB owns the buffer size and
the sequence numbers; this object only keeps the measurement state and decides.
"""
from __future__ import annotations

from typing import Any


class ReceiveBufferTuner:
    """The auto-tuning state of one connection (the TCB keeps one when
    config.rcvbuf_autotune and recv_buffer_max > recv_buffer)."""

    __slots__ = ("space", "seq", "time", "rtt", "rtt_seq", "rtt_time", "tsecr")

    def __init__(self) -> None:
        self.space = 0          # bytes taken in the last measured RTT
        self.seq = 0            # "taken" mark (rcv_nxt - buffered) when that RTT started
        self.time = 0.0         # when it started; 0: not started
        self.rtt = 0.0          # the receiver's RTT estimate (s); 0: none yet
        self.rtt_seq = 0        # without timestamps: the sequence number ending one window
        self.rtt_time = 0.0     # ... and when its measurement started
        self.tsecr = -1         # the echoed timestamp last sampled

    def measure(self, tsecr: int, ts_now: int | None, rcv_nxt: int, rcv_adv: int,
                rcv_mss: int, now: float) -> None:
        """A data segment arrived (echoing `tsecr`; `ts_now` is our timestamp clock when
        timestamps are in use, else None): take an RTT sample from it if it gives one."""
        if ts_now is not None:
            if tsecr:
                delta = (ts_now - tsecr) & 0xFFFFFFFF
                if delta < 60_000:                   # ms; anything larger is not ours
                    self.sample((delta if delta else 1) / 1000.0)
            return
        if self.rtt_time and rcv_nxt >= self.rtt_seq:
            if now > self.rtt_time:
                self.sample(now - self.rtt_time)
            self.rtt_time = 0.0
        if not self.rtt_time:
            wnd = rcv_adv - rcv_nxt
            self.rtt_seq = rcv_nxt + (wnd if wnd > rcv_mss else rcv_mss)
            self.rtt_time = now

    def sample(self, sample: float) -> None:
        # Leaning to the minimum (queueing only inflates samples), smoothed by 1/8 upward.
        r = self.rtt
        self.rtt = sample if (not r or sample < r) else r + (sample - r) / 8

    def adjust(self, taken: int, rcv_buf: int, rcv_mss: int, rtt_estimator: Any,
               cap: int, now: float) -> int:
        """The application has taken everything below sequence number `taken`: the receive
        buffer size to use from now on (`rcv_buf` when unchanged; never smaller, at most
        `cap`).  `rtt_estimator` (its srtt) stands in until the receiver has an RTT."""
        if not self.time:
            self.time = now
            self.seq = taken
            self.space = min(rcv_buf, 10 * rcv_mss)
            return rcv_buf
        rtt = self.rtt or rtt_estimator.srtt or 0.0
        if not rtt or now - self.time < rtt:
            return rcv_buf
        copied = taken - self.seq
        if copied > self.space:
            want = 2 * copied + 16 * rcv_mss
            # A sender in slow start doubles its window every RTT, and the window this
            # ACK opens is for the next RTT: grow by twice the measured growth (Linux
            # tcp_rcv_space_adjust, "Accommodate for sender rate increase"), so a doubling
            # sender sees about six times what arrived in the last RTT, not twice.
            want += 2 * (want * (copied - self.space) // self.space)
            if want > rcv_buf:
                rcv_buf = want if want < cap else cap
            self.space = copied
        self.seq = taken
        self.time = now
        return rcv_buf
