"""Congestion control as a pluggable object per connection (RFC 5681, RFC 6582, RFC 9438).

Implements RFC 5681 3.1 (slow start, congestion avoidance, RTO response) and 4.1 (restart
after idle), the window side of RFC 6582 3.2 / RFC 6675 5 (the connection does the
recovery bookkeeping), RFC 3465 (ABC, L = 2*SMSS, L = 1*SMSS in the slow start after an
RTO), RFC 9438 (CUBIC, sections 4.2-4.10 and 5.8) with HyStart++ (RFC 9406 4.2-4.3) in
CUBIC's initial slow start, and the "don't grow an unused window" rule of RFC 7661 4.3 /
RFC 9438 5.8.

The connection (tcpstack/tcp/connection.py) owns loss *detection* and recovery bookkeeping
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
                                         episode.  in_flight is FlightSize (RFC 5681).
  on_recovery_ack(acked, now)         -- an ACK advanced snd_una during recovery
                                         (optional hook; default: nothing).
  on_recovery_exit(now)               -- recovery ended (snd_una >= recovery point).
  on_rto(now, in_flight)              -- retransmission timeout (RFC 5681 3.1 eq. 4, cwnd =
                                         loss window = 1 SMSS).
  on_idle_restart(now, rto)           -- sending after an idle period > RTO (RFC 5681 4.1).
  on_rate_sample(rs, now, ca_state)   -- only for algorithms with wants_rate_samples (BBR):
                                         after every ACK, the delivery-rate sample
                                         (tcpstack/tcp/rate.py) and the recovery state;
                                         such an algorithm sets pacing_rate (bytes/s),
                                         which the send path honours.
  snapshot() / undo(state)            -- a congestion response proved spurious; restore the
                                         state returned by snapshot() taken before it
                                         (RFC 9438 4.9; CUBIC restores only while
                                         cwnd < cwnd_prior).

Application-limited senders: a window that is not being used is not validated by the
network, so neither algorithm grows cwnd on an ACK when the data in flight before it was
less than half of cwnd (RFC 7661 4.3 "validated phase": pipeACK >= cwnd/2; RFC 9438 5.8
"CUBIC does not increase its congestion window if a flow is application limited"); CUBIC
also keeps such periods out of its elapsed time t (RFC 9438 4.2).
"""
from __future__ import annotations

from typing import Callable

from tcpstack.tcp.congestion.base import (CA_LOSS, CA_OPEN, CA_RECOVERY, INFINITE_SSTHRESH,
                                          CongestionControl, default_initial_window)
from tcpstack.tcp.congestion.bbr import BBR
from tcpstack.tcp.congestion.cubic import Cubic
from tcpstack.tcp.congestion.newreno import NewReno

__all__ = ["CongestionControl", "NewReno", "Cubic", "BBR", "ALGORITHMS", "algorithm_name",
           "make_congestion_control", "INFINITE_SSTHRESH", "default_initial_window",
           "CA_OPEN", "CA_RECOVERY", "CA_LOSS"]


ALGORITHMS: dict[str, Callable[..., CongestionControl]] = {
    "newreno": NewReno, "reno": NewReno, "cubic": Cubic, "bbr": BBR}


def algorithm_name(name: object) -> str:
    """The name of an algorithm the stack has, lower-cased (the one check every way of
    choosing one goes through: TCPConfig, the command line, the overlay config);
    ValueError "'vegas': not one the stack has (bbr, cubic, newreno, reno)" otherwise."""
    if isinstance(name, str) and name.lower() in ALGORITHMS:
        return name.lower()
    raise ValueError(f"{name!r}: not one the stack has ({', '.join(sorted(ALGORITHMS))})")


def make_congestion_control(name: str, mss: int, now: float) -> CongestionControl:
    """Build the named algorithm ("newreno", "cubic", "bbr")."""
    try:
        return ALGORITHMS[name.lower()](mss, now)
    except KeyError:
        raise ValueError(f"unknown congestion control {name!r}; known: {sorted(ALGORITHMS)}") from None
