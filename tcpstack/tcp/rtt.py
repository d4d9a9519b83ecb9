"""Round-trip time estimation and the retransmission timeout (RFC 6298).

RFC 6298 rules (2.1)-(2.5): SRTT/RTTVAR with alpha = 1/8, beta = 1/4, K = 4, RTO = SRTT +
max(G, K*RTTVAR), clamped to [rto_min, rto_max].  (5.5): exponential backoff (doubling,
capped at rto_max) kept until a valid sample arrives (Karn's algorithm: the caller only
passes samples from segments that were not retransmitted, or from timestamps, RFC 7323 4).
"""
from __future__ import annotations

ALPHA = 0.125
BETA = 0.25
K = 4
G = 0.001   # clock granularity: the 1 ms timestamp tick


class RTTEstimator:
    __slots__ = ("srtt", "rttvar", "rto_min", "rto_max", "backoff", "_base", "samples")

    def __init__(self, rto_initial: float, rto_min: float, rto_max: float) -> None:
        self.srtt: float | None = None
        self.rttvar: float | None = None
        self.rto_min = rto_min
        self.rto_max = rto_max
        self.backoff = 0           # number of doublings (RFC 6298 rule (5.5))
        self._base = rto_initial   # RFC 6298 rule (2.1)
        self.samples = 0

    def sample(self, r: float) -> None:
        """A valid RTT measurement R (seconds)."""
        if r < 0:
            return
        if self.srtt is None:
            # RFC 6298 rule (2.2)
            self.srtt = r
            self.rttvar = r / 2
        else:
            # RFC 6298 rule (2.3) (RTTVAR first, with the old SRTT)
            assert self.rttvar is not None
            self.rttvar = (1 - BETA) * self.rttvar + BETA * abs(self.srtt - r)
            self.srtt = (1 - ALPHA) * self.srtt + ALPHA * r
        self._base = self.srtt + max(G, K * self.rttvar)
        self.backoff = 0           # a fresh sample ends the backoff (Karn)
        self.samples += 1

    @property
    def rto(self) -> float:
        """The current RTO including backoff, clamped (RFC 6298 rules (2.4), (2.5), (5.5))."""
        base = self._base if self._base > self.rto_min else self.rto_min
        r = base * (1 << self.backoff) if self.backoff < 32 else self.rto_max
        return r if r < self.rto_max else self.rto_max

    def back_off(self) -> None:
        """RFC 6298 rule (5.5): RTO <- RTO * 2 (the cap applies in :attr:`rto`)."""
        if self.backoff < 32:
            self.backoff += 1

    def reset_to(self, base: float) -> None:
        """RFC 6298 rule (5.7): re-initialise the RTO (3 s after a SYN timed out), no samples."""
        if self.srtt is None:
            self._base = base
        self.backoff = 0
