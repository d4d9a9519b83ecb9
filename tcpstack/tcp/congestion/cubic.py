"""CUBIC (RFC 9438 4.2-4.10, 5.8) with HyStart++ (RFC 9406 4.2-4.3) in its initial slow
start."""
from __future__ import annotations

import logging
from math import cbrt
from typing import Any

from tcpstack.tcp.congestion.base import CongestionControl

log = logging.getLogger(__name__)


class Cubic(CongestionControl):
    """CUBIC, RFC 9438, in bytes: a window W in segments is W*mss bytes here, so C becomes
    C*mss bytes/s^3 and Figure 4's segments_acked/cwnd becomes acked/cwnd (both in bytes).

    Per ACK in congestion avoidance (RFC 9438 4.2-4.5):
      t        = now - t_epoch                           (app-limited time excluded, 5.8)
      W_est   += alpha * mss * acked / cwnd               (Figure 4; alpha -> 1 once
                                                           W_est >= cwnd_prior, 4.3)
      if W_cubic(t) < W_est:  cwnd = W_est                (Reno-friendly region, 4.3)
      else: target = clamp(W_cubic(t + RTT), cwnd, 1.5*cwnd)      (4.2)
            cwnd  += (target - cwnd) * acked / cwnd      (4.4 / 4.5, per mss acked)
    with W_cubic(t) = C*(t - K)^3 + W_max (Figure 1), K = cbrt((W_max - cwnd_epoch)/C)
    (Figure 2).  RTT is a smoothed RTT kept from the samples on_ack receives (RFC 6298 rule (2.3)
    gains).  Two readings, both in the conservative direction, are pinned in the tests:
    the concave/convex increment is applied per SMSS acknowledged (the RFC says "per new
    ACK"; per byte keeps delayed ACKs from halving growth, as Figure 4 does), and the
    Reno-friendly "cwnd = W_est" never lowers cwnd on an ACK (cwnd = max(cwnd, W_est)).
    The epoch (a congestion-avoidance stage) starts at the first congestion-avoidance ACK
    after slow start or recovery; with no W_max known (after a timeout, 4.8, or a HyStart++
    exit, 4.10) or cwnd already above it, K = 0 and W_max = cwnd_epoch.

    Initial slow start is HyStart++ (RFC 9438 4.10 SHOULD, RFC 9406 4.2), only while
    ssthresh is still the initial "arbitrarily high" value (RFC 9406 4.3); every later slow
    start is RFC 5681 + ABC.  Rounds are measured in bytes: this object is told only
    `acked` and the flight before the ACK, so windowEnd = SND.NXT (RFC 9406 4.2) is kept as
    "bytes acknowledged so far + the flight left after the ACK that starts the round": the
    next round starts with the first ACK beyond all that was outstanding when this one
    started -- exact while the flight is SND.NXT - SND.UNA (no SACK holes, as before any
    congestion event).  L = 8 (non-paced sender, RFC 9406 4.3).  Reading pinned
    in the tests: the partial round in which CSS starts counts as one of the CSS_ROUNDS.
    """

    __slots__ = ("fast_convergence", "w_max", "cwnd_prior", "k", "t_epoch", "cwnd_epoch",
                 "w_est", "alpha", "srtt", "_frac", "_last_ack", "_cmss",
                 "hystart", "hs_phase", "_delivered", "_hs_window_end", "_hs_last_min",
                 "_hs_cur_min", "_hs_samples", "hs_css_baseline", "hs_css_rounds")
    name = "cubic"
    C = 0.4                                   # segments / s^3 (4.1.1, 5)
    BETA = 0.7                                # beta_cubic (4.6)
    ALPHA = 3 * (1 - BETA) / (1 + BETA)       # alpha_cubic = 3(1-b)/(1+b) (4.3)

    # HyStart++ (RFC 9406 4.3, the RECOMMENDED values).
    HS_L = 8                                  # segments per ACK, non-paced sender
    HS_MIN_RTT_THRESH = 0.004
    HS_MAX_RTT_THRESH = 0.016
    HS_MIN_RTT_DIVISOR = 8
    HS_N_RTT_SAMPLE = 8
    HS_CSS_GROWTH_DIVISOR = 4
    HS_CSS_ROUNDS = 5
    # hs_phase values
    HS_OFF, HS_SLOW_START, HS_CSS = 0, 1, 2

    def __init__(self, mss: int, now: float, initial_window: int | None = None,
                 fast_convergence: bool = True, hystart: bool = True) -> None:
        super().__init__(mss, now, initial_window)
        self.fast_convergence = fast_convergence   # 4.7 SHOULD
        self.hystart = hystart                      # 4.10 SHOULD (RFC 9406)
        self.hs_phase = self.HS_SLOW_START if hystart else self.HS_OFF
        self._delivered = 0         # bytes acknowledged by on_ack (HyStart++ rounds)
        self._hs_window_end = 0     # windowEnd, in _delivered units
        inf = float("inf")
        self._hs_last_min = inf     # lastRoundMinRTT
        self._hs_cur_min = inf      # currentRoundMinRTT
        self._hs_samples = 0        # rttSampleCount
        self.hs_css_baseline = inf  # cssBaselineMinRtt
        self.hs_css_rounds = 0      # CSS rounds so far (the partial first one included)
        self.w_max = 0.0           # bytes; 0 = unknown (no congestion event yet / after RTO)
        self.cwnd_prior = 0        # bytes; 0 = never set
        self.k = 0.0               # seconds
        self.t_epoch: float | None = None   # None: no congestion-avoidance stage running
        self.cwnd_epoch = 0
        self.w_est = 0.0
        self.alpha = self.ALPHA
        self.srtt: float | None = None
        self._frac = 0.0           # fractional bytes of cwnd growth not yet applied
        self._last_ack = now       # time of the last ACK seen (idle / app-limited time)
        self._cmss = self.C * mss  # C in bytes/s^3

    def set_mss(self, mss: int) -> None:
        super().set_mss(mss)
        self._cmss = self.C * self.mss

    def w_cubic(self, t: float) -> float:
        """Figure 1: W_cubic(t) = C*(t-K)^3 + W_max, in bytes."""
        d = t - self.k
        return self._cmss * d * d * d + self.w_max

    def _start_epoch(self, now: float) -> None:
        cwnd = self.cwnd
        self.t_epoch = now
        self.cwnd_epoch = cwnd
        self.w_est = float(cwnd)                # 4.3: W_est = cwnd_epoch
        self._frac = 0.0
        if self.w_max <= cwnd:
            # 4.8 / 4.10: K = 0 and W_max = cwnd at the start of this stage (also when
            # cwnd already exceeds the old W_max: the curve starts convex at cwnd).
            self.k = 0.0
            self.w_max = float(cwnd)
        else:
            self.k = cbrt((self.w_max - cwnd) / self._cmss)   # Figure 2
        if self.cwnd_prior == 0:
            self.cwnd_prior = cwnd                # 4.10: no earlier reduction
        self.alpha = 1.0 if self.w_est >= self.cwnd_prior else self.ALPHA

    def on_ack(self, acked: int, rtt: float | None, now: float, in_flight: int) -> None:
        if rtt is not None:
            s = self.srtt
            self.srtt = rtt if s is None else s + (rtt - s) * 0.125   # RFC 6298 rule (2.3)
        cwnd = self.cwnd
        if self.hs_phase and cwnd < self.ssthresh:
            if self._hystart(acked, rtt, in_flight):
                self._last_ack = now
                return
            cwnd = self.cwnd                    # CSS over: this ACK is congestion avoidance
        elif 2 * in_flight < cwnd:
            # Application limited (5.8, RFC 7661 4.3): no growth, and t must not include
            # this period (4.2), so the epoch moves forward by the time since the last ACK.
            if self.t_epoch is not None:
                self.t_epoch += now - self._last_ack
            self._last_ack = now
            return
        elif cwnd < self.ssthresh:
            self._last_ack = now
            self._slow_start(acked)             # 4.10: Reno slow start with ABC
            return
        self._last_ack = now
        if self.t_epoch is None:
            self._start_epoch(now)
        # 4.3 Figure 4, in bytes.
        w_est = self.w_est + self.alpha * self.mss * acked / cwnd
        self.w_est = w_est
        if w_est >= self.cwnd_prior:
            self.alpha = 1.0
        t = now - self.t_epoch                  # type: ignore[operator]
        d = t - self.k
        cmss = self._cmss
        if cmss * d * d * d + self.w_max < w_est:
            # Reno-friendly region (4.3): cwnd = W_est (never lowered on an ACK).
            new = w_est if w_est > cwnd + self._frac else cwnd + self._frac
        else:
            # Concave (4.4) / convex (4.5): target = W_cubic(t + RTT) within [cwnd, 1.5 cwnd].
            d += self.srtt or 0.0
            target = cmss * d * d * d + self.w_max
            if target < cwnd:
                target = cwnd
            elif target > 1.5 * cwnd:
                target = 1.5 * cwnd
            new = cwnd + self._frac + (target - cwnd) * acked / cwnd
        n = int(new)
        self._frac = new - n
        self.cwnd = n

    def _hystart(self, acked: int, rtt: float | None, in_flight: int) -> bool:
        """One ACK of the initial slow start, RFC 9406 4.2.  Returns False when this ACK
        completed the CSS_ROUNDS of Conservative Slow Start and ssthresh was set: the
        caller then treats the ACK as the first of congestion avoidance."""
        delivered = self._delivered + acked
        self._delivered = delivered
        phase = self.hs_phase
        if delivered > self._hs_window_end:
            # SND.UNA passed windowEnd: the ACK for a segment sent in the round starts the
            # next round, which ends at today's SND.NXT (bytes acknowledged + the flight
            # that remains after this ACK).
            if phase == self.HS_CSS:
                self.hs_css_rounds += 1
                if self.hs_css_rounds >= self.HS_CSS_ROUNDS:
                    # "enter congestion avoidance by setting ssthresh to the current cwnd";
                    # RFC 9438 4.10: cwnd_prior = cwnd, W_max unknown (K = 0 at the epoch).
                    self.hs_phase = self.HS_OFF
                    self.ssthresh = self.cwnd
                    self.cwnd_prior = self.cwnd
                    self._frac = 0.0
                    log.debug("HyStart++: CSS done, ssthresh = cwnd = %d", self.cwnd)
                    return False
            self._hs_last_min = self._hs_cur_min
            self._hs_cur_min = float("inf")
            self._hs_samples = 0
            rest = in_flight - acked
            self._hs_window_end = delivered + (rest if rest > 0 else 0)
        if 2 * in_flight < self.cwnd:
            return True                         # application limited: no growth (RFC 7661)
        lim = self.HS_L * self.mss
        inc = acked if acked < lim else lim
        if phase == self.HS_SLOW_START:
            self.cwnd += inc
        else:
            grown = self.cwnd + self._frac + inc / self.HS_CSS_GROWTH_DIVISOR
            self.cwnd = int(grown)
            self._frac = grown - self.cwnd
        if rtt is not None:
            if rtt < self._hs_cur_min:
                self._hs_cur_min = rtt
            self._hs_samples += 1
        if self._hs_samples >= self.HS_N_RTT_SAMPLE:
            cur = self._hs_cur_min
            if phase == self.HS_SLOW_START:
                last = self._hs_last_min
                if last != float("inf"):
                    thresh = last / self.HS_MIN_RTT_DIVISOR
                    if thresh > self.HS_MAX_RTT_THRESH:
                        thresh = self.HS_MAX_RTT_THRESH
                    elif thresh < self.HS_MIN_RTT_THRESH:
                        thresh = self.HS_MIN_RTT_THRESH
                    if cur >= last + thresh:
                        # Delay increase: leave slow start for CSS.
                        self.hs_css_baseline = cur
                        self.hs_css_rounds = 0
                        self.hs_phase = self.HS_CSS
                        log.debug("HyStart++: RTT %.4f >= %.4f + %.4f, CSS at cwnd %d",
                                  cur, last, thresh, self.cwnd)
            elif cur < self.hs_css_baseline:
                # The RTT came back down: the exit was spurious, resume slow start.
                self.hs_css_baseline = float("inf")
                self.hs_phase = self.HS_SLOW_START
                self._frac = 0.0
        return True

    def on_recovery_ack(self, acked: int, now: float) -> None:
        self._last_ack = now

    def on_congestion_event(self, now: float, in_flight: int) -> None:
        cwnd = self.cwnd
        # 4.7 fast convergence, before the reduction.
        if self.fast_convergence and cwnd < self.w_max:
            self.w_max = cwnd * (1 + self.BETA) / 2
        else:
            self.w_max = float(cwnd)
        # 4.6 Figure 5: ssthresh = flight_size * beta, cwnd_prior = cwnd, cwnd = ssthresh,
        # both at least 2 SMSS.
        self.cwnd_prior = cwnd
        ssthresh = int(in_flight * self.BETA)
        if ssthresh < 2 * self.mss:
            ssthresh = 2 * self.mss
        self.ssthresh = ssthresh
        self.cwnd = ssthresh
        self.hs_phase = self.HS_OFF             # RFC 9406 4.2: loss ends slow start / CSS
        self.t_epoch = None
        self._frac = 0.0
        self._last_ack = now

    def on_rto(self, now: float, in_flight: int) -> None:
        # 4.8: cwnd as Reno (1 SMSS, RFC 5681 3.1), ssthresh with beta_cubic as in 4.6; the
        # next congestion-avoidance stage uses K = 0 and W_max = cwnd_epoch (w_max = 0 here
        # means "unknown", see _start_epoch).
        self.cwnd_prior = self.cwnd
        ssthresh = int(in_flight * self.BETA)
        if ssthresh < 2 * self.mss:
            ssthresh = 2 * self.mss
        self.ssthresh = ssthresh
        self.cwnd = self.mss
        self._abc_limit = self.mss               # RFC 3465 2.3
        self.hs_phase = self.HS_OFF              # RFC 9406 4.3: initial slow start only
        self.w_max = 0.0
        self.k = 0.0
        self.t_epoch = None
        self._frac = 0.0
        self._last_ack = now

    def on_idle_restart(self, now: float, rto: float) -> None:
        # 4.2 / 5.8: idle time is not part of t: move the epoch forward by the idle time.
        if self.t_epoch is not None and now > self._last_ack:
            self.t_epoch += now - self._last_ack
        self._last_ack = now
        super().on_idle_restart(now, rto)

    def snapshot(self) -> Any:
        # 4.9.2: undo_cwnd, undo_cwnd_prior, undo_ssthresh, undo_W_max, undo_K,
        # undo_t_epoch, undo_W_est (plus this implementation's own bookkeeping).
        return (self.cwnd, self.cwnd_prior, self.ssthresh, self.w_max, self.k, self.t_epoch,
                self.w_est, self.cwnd_epoch, self.alpha, self._frac, self._abc_limit,
                self.hs_phase)

    def undo(self, state: Any) -> None:
        # 4.9.2: restore only "if cwnd < cwnd_prior"; otherwise keep the current values.
        if self.cwnd < self.cwnd_prior:
            (self.cwnd, self.cwnd_prior, self.ssthresh, self.w_max, self.k, self.t_epoch,
             self.w_est, self.cwnd_epoch, self.alpha, self._frac, self._abc_limit,
             self.hs_phase) = state

    def __repr__(self) -> str:
        return (f"<Cubic cwnd={self.cwnd} ssthresh={self.ssthresh} w_max={self.w_max:.0f} "
                f"k={self.k:.3f} t_epoch={self.t_epoch} w_est={self.w_est:.0f}>")
