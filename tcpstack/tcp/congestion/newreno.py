"""NewReno window arithmetic: RFC 5681 3.1 slow start and congestion avoidance with
RFC 3465 ABC, RFC 5681 3.2 / RFC 6582 3.2 on a congestion event, RFC 7661 4.3 for an
application-limited sender."""
from __future__ import annotations

import logging
from typing import Any

from tcpstack.tcp.congestion.base import CongestionControl

log = logging.getLogger(__name__)


class NewReno(CongestionControl):
    """RFC 5681 slow start (with RFC 3465 ABC, L=2) and congestion avoidance; RFC 6582 is the
    connection's recovery bookkeeping, this object only sets the windows."""

    __slots__ = ("_ca_acc",)
    name = "newreno"

    def __init__(self, mss: int, now: float, initial_window: int | None = None) -> None:
        super().__init__(mss, now, initial_window)
        self._ca_acc = 0  # bytes acked in congestion avoidance since last cwnd increase

    def on_ack(self, acked: int, rtt: float | None, now: float, in_flight: int) -> None:
        cwnd = self.cwnd
        if 2 * in_flight < cwnd:
            return                    # application limited: RFC 7661 4.3
        if cwnd < self.ssthresh:
            self._slow_start(acked)
        else:
            # RFC 5681 3.1 eq. (3), byte-counting form: +1 SMSS per cwnd bytes acked.
            acc = self._ca_acc + acked
            if acc >= cwnd:
                acc -= cwnd
                self.cwnd = cwnd + self.mss
            self._ca_acc = acc

    def on_congestion_event(self, now: float, in_flight: int) -> None:
        # RFC 5681 3.2 eq. (4) and step 3 (RFC 6582 3.2 step 2, RFC 6675 5 step 4.2):
        # cwnd = ssthresh (pipe-based recovery, no inflation: the connection sends while
        # pipe < cwnd).
        self.ssthresh = max(in_flight // 2, 2 * self.mss)
        self.cwnd = self.ssthresh
        self._ca_acc = 0

    def on_rto(self, now: float, in_flight: int) -> None:
        super().on_rto(now, in_flight)
        self._ca_acc = 0

    def snapshot(self) -> Any:
        return (self.cwnd, self.ssthresh, self._abc_limit, self._ca_acc)

    def undo(self, state: Any) -> None:
        self.cwnd, self.ssthresh, self._abc_limit, self._ca_acc = state
