"""Congestion control as a pluggable object per connection (RFC 5681, RFC 6582, RFC 9438).

The connection (tcpstack/connection.py) owns loss *detection* and recovery bookkeeping
(dupacks, SACK scoreboard, recovery point, pipe); a CongestionControl object owns only the
window arithmetic: cwnd and ssthresh, and how they react to ACKs, congestion events and
timeouts.  All sizes are bytes; times are the connection's virtual-clock seconds.

Call protocol (what the connection promises):
  on_ack(acked, rtt, now, in_flight)  -- cumulative ACK advanced snd_una by `acked` bytes of
                                         new data while NOT in loss recovery; rtt is a valid
                                         RTT sample (Karn) or None; in_flight is the bytes
                                         outstanding before this ACK.
  on_congestion_event(now, in_flight) -- loss detected (3 dupacks / SACK / RACK): entering
                                         recovery.  Sets ssthresh and cwnd (RFC 5681 3.2
                                         step 2, RFC 9438 4.6).  Called once per recovery
                                         episode.
  on_recovery_ack(acked, now)         -- an ACK advanced snd_una during recovery
                                         (optional hook; default: nothing).
  on_recovery_exit(now)               -- recovery ended (snd_una >= recovery point).
  on_rto(now, in_flight)              -- retransmission timeout (RFC 5681 3.1 eq. 4, cwnd =
                                         loss window = 1 SMSS).
  on_idle_restart(now, rto)           -- sending after an idle period > RTO (RFC 5681 4.1).
  undo(state)                         -- a congestion response proved spurious; restore the
                                         state returned by snapshot() taken before it.
"""
from __future__ import annotations

from typing import Any, Callable


class CongestionControl:
    """Base class and interface.  Subclasses: NewReno, Cubic."""

    name = "base"

    def __init__(self, mss: int, now: float, initial_window: int | None = None) -> None:
        self.mss = mss
        # RFC 5681 3.1 / RFC 6928: IW = min(10*MSS, max(2*MSS, 14600)).
        self.cwnd = initial_window if initial_window is not None else min(10 * mss, max(2 * mss, 14600))
        self.ssthresh = 1 << 30  # "arbitrarily high" (RFC 5681 3.1)

    def set_mss(self, mss: int) -> None:
        """The effective MSS changed (negotiation, PMTU): rescale windows kept in segments."""
        self.mss = mss

    @property
    def in_slow_start(self) -> bool:
        return self.cwnd < self.ssthresh

    def on_ack(self, acked: int, rtt: float | None, now: float, in_flight: int) -> None:
        raise NotImplementedError

    def on_congestion_event(self, now: float, in_flight: int) -> None:
        raise NotImplementedError

    def on_recovery_ack(self, acked: int, now: float) -> None:
        pass

    def on_recovery_exit(self, now: float) -> None:
        self.cwnd = max(self.ssthresh, self.mss)

    def on_rto(self, now: float, in_flight: int) -> None:
        # RFC 5681 3.1 equation (4) and "LW = 1 SMSS".
        self.ssthresh = max(in_flight // 2, 2 * self.mss)
        self.cwnd = self.mss

    def on_idle_restart(self, now: float, rto: float) -> None:
        # RFC 5681 4.1: RW = min(IW, cwnd).
        self.cwnd = min(self.cwnd, min(10 * self.mss, max(2 * self.mss, 14600)))

    def snapshot(self) -> Any:
        return (self.cwnd, self.ssthresh)

    def undo(self, state: Any) -> None:
        self.cwnd, self.ssthresh = state


class NewReno(CongestionControl):
    """RFC 5681 slow start (with RFC 3465 ABC, L=2) and congestion avoidance; RFC 6582 is the
    connection's recovery bookkeeping, this object only sets the windows."""

    name = "newreno"

    def __init__(self, mss: int, now: float, initial_window: int | None = None) -> None:
        super().__init__(mss, now, initial_window)
        self._ca_acc = 0  # bytes acked in congestion avoidance since last cwnd increase

    def on_ack(self, acked: int, rtt: float | None, now: float, in_flight: int) -> None:
        if self.cwnd < self.ssthresh:
            # RFC 5681 3.1 eq. (2) with ABC limit L = 2*SMSS (RFC 3465 2.2).
            self.cwnd += min(acked, 2 * self.mss)
        else:
            # RFC 5681 3.1 eq. (3), byte-counting form: +1 SMSS per cwnd bytes acked.
            self._ca_acc += acked
            if self._ca_acc >= self.cwnd:
                self._ca_acc -= self.cwnd
                self.cwnd += self.mss

    def on_congestion_event(self, now: float, in_flight: int) -> None:
        # RFC 5681 3.2 eq. (4) and step 3 (RFC 6582 3.2 step 2): cwnd = ssthresh (pipe-based
        # recovery, no inflation: the connection sends while pipe < cwnd, RFC 6675).
        self.ssthresh = max(in_flight // 2, 2 * self.mss)
        self.cwnd = self.ssthresh
        self._ca_acc = 0


ALGORITHMS: dict[str, Callable[..., CongestionControl]] = {"newreno": NewReno, "reno": NewReno}


def make_congestion_control(name: str, mss: int, now: float) -> CongestionControl:
    """Build the named algorithm ("newreno", "cubic")."""
    try:
        return ALGORITHMS[name.lower()](mss, now)
    except KeyError:
        raise ValueError(f"unknown congestion control {name!r}; known: {sorted(ALGORITHMS)}") from None
