"""The congestion-control interface every algorithm implements, and what they share:
RFC 5681 3.1's "arbitrarily high" initial ssthresh and RFC 6928's initial window.
(The call protocol is in the package docstring, tcpstack/tcp/congestion/__init__.py.)"""
from __future__ import annotations

import abc

import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tcpstack.tcp.rate import RateSample

log = logging.getLogger(__name__)

INFINITE_SSTHRESH = 1 << 30   # "arbitrarily high" (RFC 5681 3.1)

# The connection's loss-recovery state, as on_rate_sample() is told (Linux's tcp_ca_state
# order: Open < Recovery < Loss).
CA_OPEN, CA_RECOVERY, CA_LOSS = 0, 3, 4


def default_initial_window(mss: int) -> int:
    """RFC 6928 2: IW = min(10*MSS, max(2*MSS, 14600)) bytes."""
    return min(10 * mss, max(2 * mss, 14600))


class CongestionControl(abc.ABC):
    """Base class and interface.  Subclasses: NewReno, Cubic."""

    __slots__ = ("mss", "cwnd", "ssthresh", "iw", "_default_iw", "_abc_limit", "pacing_rate")
    name = "base"
    # True: the connection keeps delivery-rate state (tcpstack/tcp/rate.py) and calls
    # on_rate_sample() after every ACK; the pacing_rate set here is honoured by the send path.
    wants_rate_samples = False

    def __init__(self, mss: int, now: float, initial_window: int | None = None) -> None:
        self.mss = mss
        self._default_iw = initial_window is None
        # RFC 5681 3.1 / RFC 6928: IW = min(10*MSS, max(2*MSS, 14600)).
        self.iw = default_initial_window(mss) if initial_window is None else initial_window
        self.cwnd = self.iw
        self.ssthresh = INFINITE_SSTHRESH
        # RFC 3465 2.2: slow start grows by at most L = 2*SMSS per ACK; 2.3: L = 1*SMSS in
        # the slow start that follows a retransmission timeout.
        self._abc_limit = 2 * mss
        self.pacing_rate = 0.0   # bytes/s the connection paces at; 0: not set by this algorithm

    def set_mss(self, mss: int) -> None:
        """The effective MSS changed (negotiation, PMTU).  Windows are kept in bytes, so
        only the MSS-derived quantities change: an untouched default initial window is
        recomputed for the new MSS, the ABC limit follows, and the RFC floors hold
        (cwnd >= 1 SMSS, ssthresh >= 2 SMSS)."""
        old = self.mss
        if mss == old or mss <= 0:
            return
        self.mss = mss
        if self._default_iw and self.cwnd == self.iw and self.ssthresh == INFINITE_SSTHRESH:
            self.iw = self.cwnd = default_initial_window(mss)
        self._abc_limit = (2 if self._abc_limit == 2 * old else 1) * mss
        if self.cwnd < mss:
            self.cwnd = mss
        if self.ssthresh < 2 * mss:
            self.ssthresh = 2 * mss

    @property
    def in_slow_start(self) -> bool:
        return self.cwnd < self.ssthresh

    @abc.abstractmethod
    def on_ack(self, acked: int, rtt: float | None, now: float, in_flight: int) -> None:
        ...

    @abc.abstractmethod
    def on_congestion_event(self, now: float, in_flight: int) -> None:
        ...

    def on_recovery_ack(self, acked: int, now: float) -> None:
        pass

    def on_recovery_exit(self, now: float) -> None:
        # RFC 6582 3.2 step 3 (full ACK), option (2): cwnd = ssthresh; the connection's
        # pipe-based sending (RFC 6675) is the burst-avoidance mechanism it asks for.
        self.cwnd = max(self.ssthresh, self.mss)

    def on_rto(self, now: float, in_flight: int) -> None:
        # RFC 5681 3.1 equation (4) and "LW = 1 SMSS".
        self.ssthresh = max(in_flight // 2, 2 * self.mss)
        self.cwnd = self.mss
        self._abc_limit = self.mss

    def on_idle_restart(self, now: float, rto: float) -> None:
        # RFC 2861 3: remember the window in ssthresh, ssthresh = max(ssthresh, 3/4 cwnd),
        # before RFC 5681 4.1: cwnd = RW = min(IW, cwnd).
        cwnd = self.cwnd
        t = (3 * cwnd) // 4
        if t > self.ssthresh:
            self.ssthresh = t
        if self.iw < cwnd:
            self.cwnd = self.iw

    def init_pacing_rate(self, srtt: float | None) -> None:
        """The connection is established (srtt: the handshake's RTT, if measured): set an
        initial pacing rate (algorithms that pace)."""

    def on_rate_sample(self, rs: "RateSample", now: float, ca_state: int) -> bool:
        """After every ACK, when wants_rate_samples: the ACK's delivery-rate sample and the
        connection's loss-recovery state (CA_OPEN, CA_RECOVERY, CA_LOSS).  True: mark the
        connection's sending application-limited from now (what is in flight is delivered
        at a rate the algorithm chose, not the path's)."""
        return False

    def snapshot(self) -> Any:
        return (self.cwnd, self.ssthresh, self._abc_limit)

    def undo(self, state: Any) -> None:
        self.cwnd, self.ssthresh, self._abc_limit = state

    def _slow_start(self, acked: int) -> None:
        # RFC 5681 3.1 eq. (2) with ABC (RFC 3465 2.2/2.3): cwnd += min(N, L).
        limit = self._abc_limit
        self.cwnd += acked if acked < limit else limit
        if self.cwnd >= self.ssthresh:
            self._abc_limit = 2 * self.mss   # the post-RTO slow start is over

    def __repr__(self) -> str:
        return f"<{type(self).__name__} cwnd={self.cwnd} ssthresh={self.ssthresh} mss={self.mss}>"
