"""Congestion control as a pluggable object per connection (RFC 5681, RFC 6582, RFC 9438).

Implements RFC 5681 3.1 (slow start, congestion avoidance, RTO response) and 4.1 (restart
after idle), the window side of RFC 6582 3.2 / RFC 6675 5 (the connection does the
recovery bookkeeping), RFC 3465 (ABC, L = 2*SMSS, L = 1*SMSS in the slow start after an
RTO), RFC 9438 (CUBIC, sections 4.2-4.10 and 5.8) with HyStart++ (RFC 9406 4.2-4.3) in
CUBIC's initial slow start, and the "don't grow an unused window" rule of RFC 7661 4.3 /
RFC 9438 5.8.

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
                                         episode.  in_flight is FlightSize (RFC 5681).
  on_recovery_ack(acked, now)         -- an ACK advanced snd_una during recovery
                                         (optional hook; default: nothing).
  on_recovery_exit(now)               -- recovery ended (snd_una >= recovery point).
  on_rto(now, in_flight)              -- retransmission timeout (RFC 5681 3.1 eq. 4, cwnd =
                                         loss window = 1 SMSS).
  on_idle_restart(now, rto)           -- sending after an idle period > RTO (RFC 5681 4.1).
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

import abc

import logging
from math import cbrt
from typing import Any, Callable

log = logging.getLogger(__name__)

INFINITE_SSTHRESH = 1 << 30   # "arbitrarily high" (RFC 5681 3.1)


def default_initial_window(mss: int) -> int:
    """RFC 6928 2: IW = min(10*MSS, max(2*MSS, 14600)) bytes."""
    return min(10 * mss, max(2 * mss, 14600))


class CongestionControl(abc.ABC):
    """Base class and interface.  Subclasses: NewReno, Cubic."""

    __slots__ = ("mss", "cwnd", "ssthresh", "iw", "_default_iw", "_abc_limit")
    name = "base"

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
    (Figure 2).  RTT is a smoothed RTT kept from the samples on_ack receives (RFC 6298 2.3
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
            self.srtt = rtt if s is None else s + (rtt - s) * 0.125   # RFC 6298 2.3
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


ALGORITHMS: dict[str, Callable[..., CongestionControl]] = {
    "newreno": NewReno, "reno": NewReno, "cubic": Cubic}


def make_congestion_control(name: str, mss: int, now: float) -> CongestionControl:
    """Build the named algorithm ("newreno", "cubic")."""
    try:
        return ALGORITHMS[name.lower()](mss, now)
    except KeyError:
        raise ValueError(f"unknown congestion control {name!r}; known: {sorted(ALGORITHMS)}") from None
