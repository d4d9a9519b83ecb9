"""BBR v1 congestion control (draft-cardwell-iccrg-bbr-congestion-control-00, "the draft";
the behaviour of Linux net/ipv4/tcp_bbr.c), in bytes and seconds.

BBR builds a model of the path from the connection's delivery-rate samples
(tcpstack/tcp/rate.py): BtlBw, a windowed maximum of the delivery rate over 10 round trips
(draft 4.1.1), and RTprop, a windowed minimum of the RTT over 10 s (draft 4.1.2).  It paces
at pacing_gain * BtlBw (draft 4.2.1) and bounds the data in flight by
cwnd = cwnd_gain * BDP + allowance for quantization (draft 4.2.3), where BDP = BtlBw * RTprop.
The state machine (draft 4.3): STARTUP (gain 2/ln 2 until the bandwidth stops growing by 25 %
for 3 rounds), DRAIN (the inverse gain until in flight <= BDP), PROBE_BW (gain cycling
1.25, 0.75, then six rounds at 1; cwnd_gain 2) and PROBE_RTT (cwnd 4 segments for 200 ms
and a round, when RTprop was not refreshed for 10 s).

Loss (draft 4.2.3.4, Linux bbr_set_cwnd_to_recover_or_restore): entering fast recovery
saves cwnd and starts one round of packet conservation (cwnd = in flight + newly delivered);
after it cwnd grows toward the target again; leaving recovery (or the loss state after a
timeout) restores max(cwnd, the saved cwnd).  Bytes newly deemed lost are taken off cwnd.
A timeout sets cwnd to one segment (the connection's loss state) and restarts the full
bandwidth detection, as Linux's TCP_CA_Loss.

As Linux (and the draft's 4.2.3.2 "quantization budget"), the cwnd target adds three send
bursts (a burst: about 1 ms at the pacing rate, 2 segments at least, 64 KB at most -- the
quantum the connection's pacer sends at once), and the ACK-aggregation allowance of Linux
4.20+ (bbr_update_ack_aggregation): the largest excess of data acknowledged over what
BtlBw predicts within an "ACK epoch", windowed over 5-10 rounds, capped at 100 ms of
BtlBw and at cwnd.  Both matter where the path's own BDP is tiny and ACKs come in bursts
(a Python receiver behind an event loop, delayed ACKs).

Not implemented (known gaps against Linux v1): the long-term ("policer") bandwidth
estimate (lt_bw), is_ack_delayed on min_rtt samples.  BBR does not use ssthresh except to report it (set at the end of STARTUP as
Linux does).
"""
from __future__ import annotations

import logging
import random
from typing import TYPE_CHECKING, Any

from tcpstack.tcp.congestion.base import CA_LOSS, CA_OPEN, CA_RECOVERY, CongestionControl

if TYPE_CHECKING:
    from tcpstack.tcp.rate import RateSample

log = logging.getLogger(__name__)

STARTUP, DRAIN, PROBE_BW, PROBE_RTT = 0, 1, 2, 3
MODE_NAMES = ("STARTUP", "DRAIN", "PROBE_BW", "PROBE_RTT")

HIGH_GAIN = 2885 / 1000               # 2/ln(2), draft 4.3.1.1 (Linux BBR_UNIT*2885/1000+1)
DRAIN_GAIN = 1000 / 2885              # its inverse, draft 4.3.2
CWND_GAIN = 2.0                       # draft 4.3.3 (PROBE_BW cwnd_gain)
PACING_GAIN_CYCLE = (1.25, 0.75, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0)   # draft 4.3.3
CYCLE_RAND = 7                        # random start phase in [2, 8) (Linux bbr_cycle_rand)
BW_FILTER_ROUNDS = 10                 # draft 4.1.1 BtlBwFilterLen
MIN_RTT_WINDOW = 10.0                 # draft 4.1.2 RTpropFilterLen, seconds
PROBE_RTT_TIME = 0.200                # draft 4.3.4 ProbeRTTDuration
CWND_MIN_SEGS = 4                     # draft 4.2.3.3 BBRMinPipeCwnd
FULL_BW_THRESH = 1.25                 # draft 4.3.1.2: growth below 25 % ...
FULL_BW_COUNT = 3                     # ... for 3 rounds: the pipe is full
PACING_MARGIN = 0.99                  # Linux bbr_pacing_margin_percent = 1
QUANTIZATION_BURSTS = 3               # Linux bbr_quantization_budget: 3 * tso_segs_goal
BURST_TIME = 0.001                    # a send burst: ~1 ms at the pacing rate (Linux
BURST_MAX = 65536                     # tcp_tso_autosize, sk_pacing_shift 10; GSO max)
MIN_TSO_RATE = 1_200_000 / 8          # below 1.2 Mbit/s bursts of 1 segment (bbr_min_tso_rate)
INIT_RTT = 0.001                      # Linux: 1 ms when no RTT sample yet
EXTRA_ACKED_WIN_ROUNDS = 5            # Linux bbr_extra_acked_win_rtts
EXTRA_ACKED_MAX_TIME = 0.100          # Linux bbr_extra_acked_max_us


class WindowedMax:
    """Kathleen Nichols' windowed running maximum over three samples (Linux lib/minmax.c),
    time measured in round trips here."""

    __slots__ = ("t", "v")

    def __init__(self) -> None:
        self.t = [0, 0, 0]
        self.v = [0.0, 0.0, 0.0]

    def get(self) -> float:
        return self.v[0]

    def reset(self, t: int, v: float) -> float:
        self.t = [t, t, t]
        self.v = [v, v, v]
        return v

    def update(self, win: int, t: int, v: float) -> float:
        ts, vs = self.t, self.v
        if v >= vs[0] or t - ts[2] > win:
            return self.reset(t, v)             # new maximum, or nothing left in the window
        if v >= vs[1]:
            ts[1] = ts[2] = t
            vs[1] = vs[2] = v
        elif v >= vs[2]:
            ts[2] = t
            vs[2] = v
        # minmax_subwin_update
        dt = t - ts[0]
        if dt > win:
            ts[0], vs[0] = ts[1], vs[1]
            ts[1], vs[1] = ts[2], vs[2]
            ts[2], vs[2] = t, v
            if t - ts[0] > win:
                ts[0], vs[0] = ts[1], vs[1]
                ts[1], vs[1] = ts[2], vs[2]
                ts[2], vs[2] = t, v
        elif ts[1] == ts[0] and dt > win / 4:
            ts[1] = ts[2] = t
            vs[1] = vs[2] = v
        elif ts[2] == ts[1] and dt > win / 2:
            ts[2] = t
            vs[2] = v
        return vs[0]


class BBR(CongestionControl):
    """BBR v1 (see the module docstring).  Driven by on_rate_sample() (the connection calls
    it after every ACK, wants_rate_samples); pacing_rate is honoured by the send path."""

    __slots__ = ("mode", "bw", "min_rtt", "min_rtt_stamp", "probe_rtt_done_stamp",
                 "probe_rtt_round_done", "round_count", "next_round_delivered", "round_start",
                 "full_bw", "full_bw_count", "full_bw_reached", "cycle_idx", "cycle_stamp",
                 "pacing_gain", "cwnd_gain", "prior_cwnd", "packet_conservation",
                 "prev_ca_state", "idle_restart", "has_seen_rtt", "_rng", "_delivered",
                 "extra_acked", "extra_acked_idx", "extra_acked_rounds", "ack_epoch_stamp",
                 "ack_epoch_acked")
    name = "bbr"
    wants_rate_samples = True

    def __init__(self, mss: int, now: float, initial_window: int | None = None,
                 seed: int | None = None) -> None:
        super().__init__(mss, now, initial_window)
        self.bw = WindowedMax()             # BtlBw filter, bytes/s over round counts
        self.min_rtt = float("inf")         # RTprop (draft 4.1.2)
        self.min_rtt_stamp = now
        self.probe_rtt_done_stamp = 0.0     # 0: not yet timing PROBE_RTT
        self.probe_rtt_round_done = False
        self.round_count = 0                # draft 4.1.1.3 round counting
        self.next_round_delivered = 0
        self.round_start = False
        self.full_bw = 0.0                  # draft 4.3.1.2
        self.full_bw_count = 0
        self.full_bw_reached = False
        self.cycle_idx = 0
        self.cycle_stamp = now
        self.prior_cwnd = 0
        self.packet_conservation = False
        self.prev_ca_state = CA_OPEN
        self.idle_restart = False
        self.has_seen_rtt = False
        self._delivered = 0                 # the connection's C.delivered at the last sample
        self.extra_acked = [0, 0]           # ACK aggregation, two windows (Linux)
        self.extra_acked_idx = 0
        self.extra_acked_rounds = 0
        self.ack_epoch_stamp = now
        self.ack_epoch_acked = 0
        self._rng = random.Random(seed if seed is not None else int(now * 1e6) ^ mss)
        self.mode = STARTUP
        self.pacing_gain = HIGH_GAIN
        self.cwnd_gain = HIGH_GAIN
        self._init_pacing(None)

    # ------------------------------------------------------------------ model helpers

    @property
    def btl_bw(self) -> float:
        """BtlBw, bytes/s (draft 4.1.1)."""
        return self.bw.get()

    def bdp(self, bw: float, gain: float) -> int:
        """gain * BDP in bytes (draft 4.2.3.2); the initial window while RTprop is unknown."""
        if self.min_rtt == float("inf"):
            return self.iw
        return int(gain * bw * self.min_rtt + 0.999999)

    def burst(self) -> int:
        """Bytes the connection sends at once at this pacing rate (Linux
        bbr_tso_segs_goal): ~1 ms worth, whole segments, 2 at least (1 below 1.2 Mbit/s),
        64 KB at most."""
        mss = self.mss
        b = int(min(self.pacing_rate * BURST_TIME, BURST_MAX)) // mss
        floor = 1 if self.pacing_rate < MIN_TSO_RATE else 2
        return (b if b > floor else floor) * mss

    def quantization_budget(self, cwnd: int) -> int:
        """draft 4.2.3.2 / Linux bbr_quantization_budget: room for the send bursts."""
        cwnd += QUANTIZATION_BURSTS * self.burst()
        if self.mode == PROBE_BW and self.cycle_idx == 0:
            cwnd += 2 * self.mss                # Linux: a little more while probing
        return cwnd

    def inflight(self, bw: float, gain: float) -> int:
        """bdp plus the quantization allowance (Linux bbr_inflight)."""
        return self.quantization_budget(self.bdp(bw, gain))

    def aggregation_cwnd(self) -> int:
        """Linux bbr_ack_aggregation_cwnd: the ACK-aggregation allowance, once the pipe
        is full, at most 100 ms at BtlBw."""
        if not self.full_bw_reached:
            return 0
        extra = self.extra_acked[0] if self.extra_acked[0] > self.extra_acked[1] \
            else self.extra_acked[1]
        cap = int(self.bw.get() * EXTRA_ACKED_MAX_TIME)
        return extra if extra < cap else cap

    def _update_ack_aggregation(self, rs: "RateSample", now: float) -> None:
        """Linux bbr_update_ack_aggregation: how much more was acknowledged in this ACK
        epoch than BtlBw predicts (ACKs arriving in bursts)."""
        acked = rs.acked_sacked
        if acked <= 0 or rs.delivered < 0 or rs.interval <= 0:
            return
        if self.round_start:
            self.extra_acked_rounds += 1
            if self.extra_acked_rounds >= EXTRA_ACKED_WIN_ROUNDS:
                self.extra_acked_rounds = 0
                self.extra_acked_idx ^= 1
                self.extra_acked[self.extra_acked_idx] = 0
        expected = self.bw.get() * (now - self.ack_epoch_stamp)
        if self.ack_epoch_acked <= expected or \
                self.ack_epoch_acked + acked >= (1 << 20) * self.mss:
            # The ACK rate fell to the expected one (or the epoch is very old): new epoch.
            self.ack_epoch_acked = 0
            self.ack_epoch_stamp = now
            expected = 0.0
        self.ack_epoch_acked += acked
        extra = int(self.ack_epoch_acked - expected)
        if extra > self.cwnd:
            extra = self.cwnd
        if extra > self.extra_acked[self.extra_acked_idx]:
            self.extra_acked[self.extra_acked_idx] = extra

    def _init_pacing(self, srtt: float | None) -> None:
        # draft 4.2.1 BBRInitPacingRate: nominal bandwidth = InitialCwnd / (SRTT or 1 ms).
        rtt = srtt if srtt else INIT_RTT
        self.pacing_rate = self.pacing_gain * self.cwnd / rtt

    def init_pacing_rate(self, srtt: float | None) -> None:
        if srtt:
            self.has_seen_rtt = True
        self._init_pacing(srtt)

    def _set_pacing_rate(self, bw: float, gain: float, srtt: float | None) -> None:
        """draft 4.2.1 BBRSetPacingRateWithGain: pace at gain * BtlBw (1 % below, Linux),
        never lower before the pipe is full."""
        if not self.has_seen_rtt and srtt:
            self.has_seen_rtt = True
            self._init_pacing(srtt)
        rate = gain * bw * PACING_MARGIN
        if rate > 0 and (self.full_bw_reached or rate > self.pacing_rate):
            self.pacing_rate = rate

    # ------------------------------------------------------------------ per ACK

    def on_rate_sample(self, rs: "RateSample", now: float, ca_state: int) -> bool:
        """Linux bbr_main: update the model, then the pacing rate and cwnd.  True while in
        PROBE_RTT: the connection then marks its sending application-limited (Linux sets
        tp->app_limited), so the low delivery rate of this mode never lowers BtlBw."""
        self._update_model(rs, now)
        bw = self.bw.get()
        self._set_pacing_rate(bw, self.pacing_gain, rs.srtt)
        self._set_cwnd(rs, rs.acked_sacked, bw, self.cwnd_gain, ca_state)
        return self.mode == PROBE_RTT

    def _update_model(self, rs: "RateSample", now: float) -> None:
        self._update_bw(rs)
        self._update_ack_aggregation(rs, now)
        if self.mode == PROBE_BW and self._is_next_cycle_phase(rs, now):
            self._advance_cycle_phase(now)     # draft 4.3.3
        self._check_full_bw_reached(rs)
        self._check_drain(rs, now)
        self._update_min_rtt(rs, now)
        self._update_gains()

    def _update_bw(self, rs: "RateSample") -> None:
        """draft 4.1.1.3 (round counting), 4.1.1.4-4.1.1.5 (BtlBw filter update)."""
        self.round_start = False
        if rs.delivered < 0 or rs.interval <= 0:
            return
        delivered = rs.prior_delivered + rs.delivered     # C.delivered now
        self._delivered = delivered
        if rs.prior_delivered >= self.next_round_delivered:
            self.next_round_delivered = delivered
            self.round_count += 1
            self.round_start = True
            self.packet_conservation = False
        bw = rs.delivery_rate
        # An application-limited sample only counts if it raises the estimate (4.1.1.4).
        if not rs.is_app_limited or bw >= self.bw.get():
            self.bw.update(BW_FILTER_ROUNDS, self.round_count, bw)

    def _is_next_cycle_phase(self, rs: "RateSample", now: float) -> bool:
        """draft 4.3.3 BBRIsNextCyclePhase."""
        full_length = now - self.cycle_stamp > self.min_rtt
        gain = self.pacing_gain
        if gain == 1.0:
            return full_length
        inflight = rs.prior_in_flight
        if gain > 1.0:
            # Probe until a round of at least 1.25 BDP in flight, or a loss.
            return full_length and (rs.losses > 0 or inflight >= self.inflight(self.bw.get(), gain))
        # Drain: one RTprop, or earlier once in flight is down to the BDP.
        return full_length or inflight <= self.inflight(self.bw.get(), 1.0)

    def _advance_cycle_phase(self, now: float) -> None:
        self.cycle_idx = (self.cycle_idx + 1) % len(PACING_GAIN_CYCLE)
        self.cycle_stamp = now

    def _check_full_bw_reached(self, rs: "RateSample") -> None:
        """draft 4.3.1.2: the pipe is full after 3 rounds of < 25 % bandwidth growth
        (rounds whose sample was not application-limited)."""
        if self.full_bw_reached or not self.round_start or rs.is_app_limited:
            return
        bw = self.bw.get()
        if bw >= self.full_bw * FULL_BW_THRESH:
            self.full_bw = bw
            self.full_bw_count = 0
            return
        self.full_bw_count += 1
        self.full_bw_reached = self.full_bw_count >= FULL_BW_COUNT
        if self.full_bw_reached:
            log.debug("BBR: full bandwidth %.0f B/s reached (round %d)", bw, self.round_count)

    def _check_drain(self, rs: "RateSample", now: float) -> None:
        """draft 4.3.2: STARTUP -> DRAIN once the pipe is full; DRAIN -> PROBE_BW once in
        flight is down to the BDP."""
        if self.mode == STARTUP and self.full_bw_reached:
            self.mode = DRAIN
            self.ssthresh = self.inflight(self.bw.get(), 1.0)    # (Linux reports it so)
        if self.mode == DRAIN and rs.in_flight <= self.inflight(self.bw.get(), 1.0):
            self._enter_probe_bw(now)

    def _enter_probe_bw(self, now: float) -> None:
        """draft 4.3.3 BBREnterProbeBW: a random phase other than the 0.75 one."""
        self.mode = PROBE_BW
        self.cycle_idx = len(PACING_GAIN_CYCLE) - 1 - self._rng.randrange(CYCLE_RAND)
        self._advance_cycle_phase(now)

    def _reset_mode(self, now: float) -> None:
        if not self.full_bw_reached:
            self.mode = STARTUP
        else:
            self._enter_probe_bw(now)

    def _update_min_rtt(self, rs: "RateSample", now: float) -> None:
        """draft 4.1.2.3 (RTprop filter) and 4.3.4 (PROBE_RTT)."""
        expired = now - self.min_rtt_stamp > MIN_RTT_WINDOW
        if rs.rtt >= 0 and (rs.rtt < self.min_rtt or expired):
            self.min_rtt = rs.rtt
            self.min_rtt_stamp = now
        if expired and not self.idle_restart and self.mode != PROBE_RTT:
            self.mode = PROBE_RTT               # draft 4.3.4 (BBRCheckProbeRTT)
            self._save_cwnd()
            self.probe_rtt_done_stamp = 0.0
        if self.mode == PROBE_RTT:
            # (on_rate_sample's True makes the connection mark its sending app-limited.)
            if not self.probe_rtt_done_stamp and rs.in_flight <= CWND_MIN_SEGS * self.mss:
                self.probe_rtt_done_stamp = now + PROBE_RTT_TIME
                self.probe_rtt_round_done = False
                self.next_round_delivered = self._delivered
            elif self.probe_rtt_done_stamp:
                if self.round_start:
                    self.probe_rtt_round_done = True
                if self.probe_rtt_round_done and now > self.probe_rtt_done_stamp:
                    # draft 4.3.4 (BBRExitProbeRTT)
                    self.min_rtt_stamp = now
                    self.cwnd = max(self.cwnd, self.prior_cwnd)
                    self._reset_mode(now)
        if rs.delivered > 0:
            self.idle_restart = False

    def _update_gains(self) -> None:
        mode = self.mode
        if mode == STARTUP:
            self.pacing_gain = self.cwnd_gain = HIGH_GAIN
        elif mode == DRAIN:
            self.pacing_gain = DRAIN_GAIN
            self.cwnd_gain = HIGH_GAIN
        elif mode == PROBE_BW:
            self.pacing_gain = PACING_GAIN_CYCLE[self.cycle_idx]
            self.cwnd_gain = CWND_GAIN
        else:
            self.pacing_gain = self.cwnd_gain = 1.0

    def _save_cwnd(self) -> None:
        """draft 4.2.3.4 BBRSaveCwnd: the last cwnd known good, before recovery/PROBE_RTT."""
        if self.prev_ca_state < CA_RECOVERY and self.mode != PROBE_RTT:
            self.prior_cwnd = self.cwnd
        elif self.cwnd > self.prior_cwnd:
            self.prior_cwnd = self.cwnd

    def _set_cwnd(self, rs: "RateSample", acked: int, bw: float, gain: float,
                  ca_state: int) -> None:
        """draft 4.2.3 (Linux bbr_set_cwnd)."""
        mss = self.mss
        cwnd = self.cwnd
        if acked > 0:
            done = False
            # draft 4.2.3.4 / Linux bbr_set_cwnd_to_recover_or_restore
            if rs.losses > 0:
                cwnd = max(cwnd - rs.losses, mss)
            if ca_state == CA_RECOVERY and self.prev_ca_state != CA_RECOVERY:
                # Entering fast recovery: packet conservation for one round.
                self.packet_conservation = True
                self.next_round_delivered = self._delivered
                cwnd = rs.in_flight + acked
            elif self.prev_ca_state >= CA_RECOVERY and ca_state < CA_RECOVERY:
                cwnd = max(cwnd, self.prior_cwnd)   # leaving recovery: restore
                self.packet_conservation = False
            self.prev_ca_state = ca_state
            if self.packet_conservation:
                cwnd = max(cwnd, rs.in_flight + acked)
                done = True
            if not done:
                target = self.quantization_budget(self.bdp(bw, gain) + self.aggregation_cwnd())
                if self.full_bw_reached:
                    # draft 4.2.3.6: grow toward the target, never past it.
                    cwnd = min(cwnd + acked, target)
                elif cwnd < target or self._delivered < self.iw:
                    cwnd += acked                   # STARTUP: grow by what was delivered
                if cwnd < CWND_MIN_SEGS * mss:
                    cwnd = CWND_MIN_SEGS * mss
        if self.mode == PROBE_RTT and cwnd > CWND_MIN_SEGS * mss:
            cwnd = CWND_MIN_SEGS * mss           # draft 4.2.3.5
        self.cwnd = cwnd

    # ------------------------------------------------------------------ connection events

    def on_ack(self, acked: int, rtt: float | None, now: float, in_flight: int) -> None:
        pass                                    # everything happens in on_rate_sample

    def on_congestion_event(self, now: float, in_flight: int) -> None:
        # Linux bbr_ssthresh: save cwnd; the reduction is packet conservation at the next
        # rate sample (the ACK that entered recovery), ssthresh untouched.
        self._save_cwnd()

    def on_recovery_exit(self, now: float) -> None:
        pass                                    # the next rate sample restores (4.2.3.4)

    def on_rto(self, now: float, in_flight: int) -> None:
        # Linux: tcp_enter_loss -> cwnd = in flight (everything is lost) + 1 segment;
        # bbr_set_state(TCP_CA_Loss): restart full-bandwidth detection, a round starts.
        self._save_cwnd()
        self.prev_ca_state = CA_LOSS
        self.full_bw = 0.0
        self.full_bw_count = 0
        self.round_start = True
        self.packet_conservation = False
        self.cwnd = self.mss

    def on_idle_restart(self, now: float, rto: float) -> None:
        # Linux bbr_cwnd_event(CA_EVENT_TX_START): restarting from idle; in PROBE_BW pace
        # at BtlBw (gain 1).  cwnd is kept (the model, not the window, limits the burst).
        self.idle_restart = True
        self.ack_epoch_stamp = now
        self.ack_epoch_acked = 0
        if self.mode == PROBE_BW:
            self._set_pacing_rate(self.bw.get(), 1.0, None)

    def snapshot(self) -> Any:
        return (self.cwnd, self.prior_cwnd)

    def undo(self, state: Any) -> None:
        # Linux bbr_undo_cwnd: the loss was spurious; restart full-bandwidth detection,
        # cwnd back to what it was.
        self.full_bw = 0.0
        self.full_bw_count = 0
        cwnd, prior = state
        if cwnd > self.cwnd:
            self.cwnd = cwnd
        self.prior_cwnd = max(prior, cwnd)

    def __repr__(self) -> str:
        return (f"<BBR {MODE_NAMES[self.mode]} cwnd={self.cwnd} bw={self.bw.get() * 8e-6:.1f}Mbit/s "
                f"min_rtt={self.min_rtt * 1e3:.3f}ms pacing={self.pacing_rate * 8e-6:.1f}Mbit/s "
                f"gain={self.pacing_gain:.2f}>")
