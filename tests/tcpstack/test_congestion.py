"""Window arithmetic of tcpstack/tcp/congestion/ on scripted ACK / loss patterns.

Every expected value is derived by hand from the RFC formulas in the comments next to it
(RFC 5681 3.1/3.2/4.1, RFC 3465 2.2/2.3, RFC 6582 3.2, RFC 9438 4.2-4.9).  MSS = 1000 bytes
throughout, so "N segments" is N*1000 bytes and RFC 9438's C = 0.4 segments/s^3 is
400 bytes/s^3.
"""
from __future__ import annotations

from math import cbrt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tcpstack.tcp.congestion import (ALGORITHMS, INFINITE_SSTHRESH, Cubic, NewReno,
                                 default_initial_window, make_congestion_control)

MSS = 1000


# ----------------------------------------------------------------------------- shared

def test_initial_window_rfc6928():
    # IW = min(10*MSS, max(2*MSS, 14600))
    assert default_initial_window(1460) == 14600      # min(14600, max(2920, 14600))
    assert default_initial_window(1000) == 10000      # min(10000, 14600)
    assert default_initial_window(536) == 5360
    assert default_initial_window(9000) == 18000      # min(90000, max(18000, 14600))
    assert NewReno(1460, 0.0).cwnd == 14600
    assert Cubic(1460, 0.0).ssthresh == INFINITE_SSTHRESH


def test_registry():
    assert isinstance(make_congestion_control("cubic", MSS, 0.0), Cubic)
    assert isinstance(make_congestion_control("NewReno", MSS, 0.0), NewReno)
    assert set(ALGORITHMS) >= {"cubic", "newreno", "reno"}
    with pytest.raises(ValueError):
        make_congestion_control("vegas", MSS, 0.0)


@pytest.mark.parametrize("cls", [NewReno, Cubic])
def test_set_mss_recomputes_untouched_iw(cls):
    cc = cls(1460, 0.0)
    cc.set_mss(1448)                 # timestamps negotiated: IW = min(14480, 14600)
    assert cc.cwnd == 14480
    cc.on_ack(1448, 0.1, 0.1, 14480)
    cc.set_mss(1000)                 # no longer the untouched IW: bytes stay bytes
    assert cc.cwnd == 14480 + 1448


# ----------------------------------------------------------------------------- NewReno

def test_newreno_slow_start_abc():
    cc = NewReno(MSS, 0.0)
    assert cc.cwnd == 10000 and cc.in_slow_start
    # RFC 5681 eq. (2) with RFC 3465 ABC, L = 2*SMSS: cwnd += min(N, 2000).
    cc.on_ack(1000, 0.1, 0.1, 10000)
    assert cc.cwnd == 11000
    cc.on_ack(2000, 0.1, 0.1, 11000)
    assert cc.cwnd == 13000
    cc.on_ack(5000, 0.1, 0.1, 13000)       # stretch ACK: capped at L = 2000
    assert cc.cwnd == 15000
    cc.on_ack(300, 0.1, 0.1, 15000)        # a partial segment counts its bytes
    assert cc.cwnd == 15300
    assert cc.ssthresh == INFINITE_SSTHRESH


def test_newreno_congestion_avoidance_and_event():
    cc = NewReno(MSS, 0.0)
    cc.cwnd = 20000
    # RFC 5681 eq. (4): ssthresh = max(FlightSize/2, 2*SMSS) = 10000; RFC 6675: cwnd = ssthresh.
    cc.on_congestion_event(1.0, 20000)
    assert (cc.cwnd, cc.ssthresh) == (10000, 10000)
    cc.on_recovery_ack(1000, 1.1)          # partial ACKs don't touch the windows
    assert (cc.cwnd, cc.ssthresh) == (10000, 10000)
    # RFC 6582 3.2 step 3 option (2): full ACK -> cwnd = ssthresh.
    cc.on_recovery_exit(1.2)
    assert cc.cwnd == 10000 and not cc.in_slow_start
    # RFC 5681 eq. (3), byte counting: +1 SMSS once cwnd (10000) bytes are acked.
    for _ in range(9):
        cc.on_ack(1000, 0.1, 1.3, 10000)
    assert cc.cwnd == 10000
    cc.on_ack(1000, 0.1, 1.3, 10000)
    assert cc.cwnd == 11000
    # next increment needs 11000 bytes: 10 ACKs of 1000 are not enough, the 11th is.
    for _ in range(10):
        cc.on_ack(1000, 0.1, 1.4, 11000)
    assert cc.cwnd == 11000
    cc.on_ack(1000, 0.1, 1.4, 11000)
    assert cc.cwnd == 12000
    # Small flight: ssthresh floor 2*SMSS.
    cc.on_congestion_event(2.0, 3000)      # max(1500, 2000)
    assert (cc.cwnd, cc.ssthresh) == (2000, 2000)


def test_newreno_rto_and_post_rto_slow_start():
    cc = NewReno(MSS, 0.0)
    cc.cwnd = 15000
    # RFC 5681 eq. (4) and LW: ssthresh = max(15000/2, 2000) = 7500, cwnd = 1 SMSS.
    cc.on_rto(3.0, 15000)
    assert (cc.cwnd, cc.ssthresh) == (1000, 7500)
    # RFC 3465 2.3: L = 1*SMSS in the slow start after an RTO (a big cumulative ACK of
    # the retransmission must not burst): cwnd 1000 -> 2000 -> ... -> 8000.
    seq = []
    for _ in range(7):
        cc.on_ack(3000, 0.1, 3.1, cc.cwnd)
        seq.append(cc.cwnd)
    assert seq == [2000, 3000, 4000, 5000, 6000, 7000, 8000]
    assert not cc.in_slow_start            # 8000 >= 7500: congestion avoidance
    for _ in range(7):
        cc.on_ack(1000, 0.1, 3.2, 8000)
    assert cc.cwnd == 8000
    cc.on_ack(1000, 0.1, 3.2, 8000)        # 8000 bytes acked -> +1000
    assert cc.cwnd == 9000
    # The next slow start (after a congestion event, not an RTO) is back to L = 2*SMSS.
    cc.on_congestion_event(4.0, 9000)      # ssthresh = 4500, cwnd = 4500
    cc.ssthresh = 20000
    cc.on_ack(3000, 0.1, 4.1, 4500)
    assert cc.cwnd == 6500


def test_newreno_application_limited_does_not_grow():
    # RFC 7661 4.3: the window is validated only if at least half of it was in use.
    cc = NewReno(MSS, 0.0)
    cc.on_ack(1000, 0.1, 0.1, 4999)        # 2*4999 < 10000: not grown
    assert cc.cwnd == 10000
    cc.on_ack(1000, 0.1, 0.1, 5000)        # half in use: grows
    assert cc.cwnd == 11000


def test_newreno_idle_restart():
    cc = NewReno(MSS, 0.0)
    cc.cwnd, cc.ssthresh = 30000, 20000
    # RFC 2861 3: ssthresh = max(20000, 3/4*30000) = 22500; RFC 5681 4.1: cwnd = min(IW, cwnd).
    cc.on_idle_restart(10.0, 1.0)
    assert (cc.cwnd, cc.ssthresh) == (10000, 22500)
    cc.cwnd = 4000
    cc.on_idle_restart(20.0, 1.0)          # RW = min(IW, cwnd) = 4000; ssthresh kept
    assert (cc.cwnd, cc.ssthresh) == (4000, 22500)


def test_newreno_undo():
    cc = NewReno(MSS, 0.0)
    cc.cwnd = 20000
    state = cc.snapshot()
    cc.on_congestion_event(1.0, 20000)
    assert cc.cwnd == 10000
    cc.undo(state)
    assert (cc.cwnd, cc.ssthresh) == (20000, INFINITE_SSTHRESH)


# ----------------------------------------------------------------------------- CUBIC

def _cubic_after_loss(fast_convergence: bool = True) -> Cubic:
    """cwnd 100 segments, a loss at t=10 with 100 segments in flight, recovery over."""
    cc = Cubic(MSS, 0.0, fast_convergence=fast_convergence)
    cc.cwnd = 100000
    cc.on_congestion_event(10.0, 100000)
    cc.on_recovery_exit(10.5)
    return cc


def test_cubic_multiplicative_decrease():
    cc = _cubic_after_loss()
    # 4.6 Figure 5: ssthresh = 100 * 0.7 = 70 segments; cwnd_prior = 100; cwnd = 70.
    # 4.7: first event (W_max unknown), so W_max = cwnd = 100.
    assert cc.ssthresh == 70000 and cc.cwnd == 70000
    assert cc.cwnd_prior == 100000 and cc.w_max == 100000.0
    # Floors: ssthresh and cwnd >= 2 SMSS.
    c2 = Cubic(MSS, 0.0)
    c2.on_congestion_event(1.0, 2000)      # 2 * 0.7 = 1.4 segments -> 2
    assert (c2.cwnd, c2.ssthresh) == (2000, 2000)


def test_cubic_k_and_w_cubic():
    cc = _cubic_after_loss()
    # First congestion-avoidance ACK at t_current = 11.0 starts the epoch:
    # cwnd_epoch = 70, K = cbrt((W_max - cwnd_epoch)/C) = cbrt(30/0.4) = cbrt(75) = 4.21716...
    cc.on_ack(1000, 0.1, 11.0, 70000)
    assert cc.t_epoch == 11.0 and cc.cwnd_epoch == 70000
    assert cc.k == pytest.approx(4.2171633265087465, abs=1e-12)
    assert cc.k == pytest.approx(cbrt(75), abs=1e-12)
    # Figure 1, W_cubic(t) = 0.4 (t-K)^3 + 100 segments:
    assert cc.w_cubic(0.0) == pytest.approx(70000.0)         # -0.4*75 + 100 = 70
    assert cc.w_cubic(cc.k) == pytest.approx(100000.0)       # plateau at W_max
    assert cc.w_cubic(cc.k + 1) == pytest.approx(100400.0)   # 0.4*1 + 100
    assert cc.w_cubic(cc.k + 2) == pytest.approx(103200.0)   # 0.4*8 + 100
    assert cc.w_cubic(cc.k - 2) == pytest.approx(96800.0)    # -0.4*8 + 100


def test_cubic_first_acks_reno_friendly_then_concave():
    cc = _cubic_after_loss()
    # ACK 1 at t=0 (now 11.0), 1 segment, RTT sample 0.1 -> srtt = 0.1.
    # alpha = 3*0.3/1.7 = 0.5294117647 (W_est = 70 < cwnd_prior = 100).
    # W_est = 70 + 0.5294117647 * 1/70 = 70.0075630 segments = 70007.5630 bytes.
    # W_cubic(0) = 70 < W_est: Reno-friendly region, cwnd = W_est -> 70007 (+0.563 carried).
    cc.on_ack(1000, 0.1, 11.0, 70000)
    assert cc.alpha == pytest.approx(0.5294117647058824)
    assert cc.srtt == 0.1
    assert cc.w_est == pytest.approx(70007.56302521008)
    assert cc.cwnd == 70007
    # ACK 2 at t=1.0 (now 12.0), 1 segment:
    # W_est = 70007.5630 + 0.5294117647*1000*1000/70007 = 70015.1253
    # W_cubic(1.0) = 400*(1 - 4.2171633)^3 + 100000 = 86680.76 > W_est: concave region.
    # target = W_cubic(t + RTT) = W_cubic(1.1) = 400*(-3.1171633)^3 + 100000 = 87884.57,
    #          inside [cwnd, 1.5*cwnd] = [70007, 105010.5].
    # cwnd += (target - cwnd)/cwnd per segment acked (4.4):
    #   70007.5630 + (87884.57 - 70007) * 1000/70007 = 70007.5630 + 255.368 = 70262.93.
    cc.on_ack(1000, None, 12.0, 70007)
    assert cc.w_est == pytest.approx(70015.12529419326)
    assert cc.w_cubic(1.0) == pytest.approx(86680.76383512988)
    assert cc.w_cubic(1.1) == pytest.approx(87884.57465954371)
    assert cc.cwnd == 70262
    assert cc.cwnd < cc.w_max                       # concave: below W_max


def test_cubic_target_upper_bound_is_1_5_cwnd():
    # After an RTO (4.8) K = 0 and W_max = cwnd_epoch, so far into the epoch W_cubic(t+RTT)
    # is huge; the target is clamped to 1.5*cwnd, i.e. cwnd grows by (1.5cwnd - cwnd)/cwnd
    # = 0.5 segment per segment acked -- slower than slow start (4.2, [SXEZ19]).
    cc = Cubic(MSS, 0.0)
    cc.cwnd = 4000
    cc.on_rto(0.0, 4000)                   # ssthresh = max(2.8, 2) segs = 2800, cwnd = 1000
    assert (cc.cwnd, cc.ssthresh, cc.w_max) == (1000, 2800, 0.0)
    cc.on_ack(1000, 0.05, 0.1, 1000)       # slow start: 2000
    cc.on_ack(1000, 0.05, 0.2, 2000)       # slow start: 3000 (>= ssthresh)
    assert cc.cwnd == 3000 and not cc.in_slow_start
    cc.on_ack(1000, 0.05, 1.0, 3000)       # epoch starts: t = 0, K = 0, W_max = 3000
    assert (cc.k, cc.w_max, cc.cwnd_epoch, cc.t_epoch) == (0.0, 3000.0, 3000, 1.0)
    # At t=0: W_est = 3000 + 0.5294*1000*1000/3000 = 3176.47 > W_cubic(0) = 3000:
    # Reno-friendly -> cwnd = 3176 (frac .47).
    assert cc.cwnd == 3176
    # t = 10 s: W_est = 3176.47 + 0.5294*1000*1000/3176 = 3343.17 (Reno-friendly estimate)
    # W_cubic(10) = 400*1000 + 3000 = 403000 > W_est -> cubic region; target clamped to
    # 1.5*3176 = 4764; cwnd = 3176.47 + (4764-3176)*1000/3176 = 3176.47 + 500 = 3676.47.
    cc.on_ack(1000, None, 11.0, 3176)
    assert cc.cwnd == 3676


def test_cubic_reno_friendly_region_takes_over():
    # Small window, short RTT: W_max = 10 segments, a loss with 10 in flight ->
    # cwnd = ssthresh = 7, K = cbrt(3/0.4) = 1.957 s.  One cumulative ACK for the whole
    # window each RTT (0.01 s), so W_est grows by alpha segments per RTT (Figure 4 with
    # segments_acked = cwnd), while W_cubic(t) stays below 7.4 segments for the first 0.1 s:
    # W_cubic(0.07) = 10 - 0.4*(1.957-0.07)^3 = 7.31.
    cc = Cubic(MSS, 0.0)
    cc.cwnd = 10000
    cc.on_congestion_event(0.0, 10000)
    cc.on_recovery_exit(0.0)
    assert cc.cwnd == 7000 and cc.cwnd_prior == 10000
    got = []
    for i in range(8):
        now = 0.01 * i
        cc.on_ack(cc.cwnd, 0.01, now, cc.cwnd)
        assert cc.w_cubic(now) < cc.w_est          # Reno-friendly region every time
        got.append(cc.cwnd)
    assert cc.k == pytest.approx(cbrt(7.5))
    # W_est = 7000 + n * 0.5294117647*1000: 7529.41, 8058.82, 8588.24, 9117.65, 9647.06,
    # 10176.47 -- which reaches cwnd_prior = 10000, so alpha becomes 1 (4.3) and the next
    # RTTs add a full segment each: 11176.47, 12176.47.
    assert got == [7529, 8058, 8588, 9117, 9647, 10176, 11176, 12176]
    assert cc.alpha == 1.0


def test_cubic_fast_convergence():
    cc = _cubic_after_loss()               # W_max = 100 segments
    cc.cwnd = 80000                        # the next loss comes below W_max
    cc.on_congestion_event(20.0, 80000)
    # 4.7: cwnd < W_max -> W_max = cwnd * (1 + 0.7)/2 = 80 * 0.85 = 68 segments.
    assert cc.w_max == pytest.approx(68000.0)
    assert cc.cwnd_prior == 80000 and cc.ssthresh == 56000 and cc.cwnd == 56000
    cc.on_recovery_exit(20.1)
    cc.on_ack(1000, 0.1, 21.0, 56000)
    # K = cbrt((68 - 56)/0.4) = cbrt(30) = 3.1072
    assert cc.k == pytest.approx(cbrt(30.0))

    slow = _cubic_after_loss(fast_convergence=False)
    slow.cwnd = 80000
    slow.on_congestion_event(20.0, 80000)
    assert slow.w_max == 80000.0           # "otherwise, remember cwnd before reduction"
    # A loss above W_max: plain W_max = cwnd in both modes.
    cc.cwnd = 90000
    cc.on_congestion_event(30.0, 90000)
    assert cc.w_max == 90000.0


def test_cubic_timeout():
    cc = _cubic_after_loss()
    cc.cwnd = 50000
    # 4.8: cwnd = 1 SMSS (RFC 5681), ssthresh = flight * beta = 40 * 0.7 = 28 segments.
    cc.on_rto(30.0, 40000)
    assert (cc.cwnd, cc.ssthresh) == (1000, 28000)
    assert cc.cwnd_prior == 50000
    # Slow start at L = 1 SMSS per ACK (RFC 3465 2.3) up to 28000.
    n = 0
    while cc.in_slow_start:
        cc.on_ack(2000, 0.1, 30.1, cc.cwnd)
        n += 1
    assert n == 27 and cc.cwnd == 28000
    # First CA stage after the timeout: K = 0, W_max = W_est = cwnd_epoch = 28 segments.
    cc.on_ack(1000, 0.1, 33.0, 28000)
    assert (cc.k, cc.w_max, cc.cwnd_epoch, cc.t_epoch) == (0.0, 28000.0, 28000, 33.0)
    # W_est = 28000 + 0.5294*1000*1000/28000 = 28018.9 (alpha: W_est < cwnd_prior = 50000).
    assert cc.w_est == pytest.approx(28000 + cc.ALPHA * 1000 * 1000 / 28000)
    assert cc.cwnd == 28018
    # W_cubic(t) = 0.4 t^3 + 28: at t = 2, 31.2 segments.
    assert cc.w_cubic(2.0) == pytest.approx(31200.0)


def test_cubic_undo_spurious_fast_retransmit():
    cc = _cubic_after_loss()
    cc.on_ack(1000, 0.1, 11.0, 70000)
    before = cc.snapshot()
    vals = (cc.cwnd, cc.cwnd_prior, cc.ssthresh, cc.w_max, cc.k, cc.t_epoch, cc.w_est)
    cc.on_congestion_event(12.0, cc.cwnd)
    assert cc.cwnd < cc.cwnd_prior
    # 4.9.2: cwnd < cwnd_prior -> restore cwnd, cwnd_prior, ssthresh, W_max, K, t_epoch, W_est.
    cc.undo(before)
    assert (cc.cwnd, cc.cwnd_prior, cc.ssthresh, cc.w_max, cc.k, cc.t_epoch, cc.w_est) == vals

    # Detected late, after cwnd has grown past cwnd_prior: keep the current values.
    cc2 = _cubic_after_loss()
    st2 = cc2.snapshot()
    cc2.on_congestion_event(12.0, 70000)   # cwnd_prior = 70000, cwnd = 49000
    cc2.cwnd = 75000                       # grew back above cwnd_prior
    cc2.undo(st2)
    assert cc2.cwnd == 75000 and cc2.ssthresh == 49000 and cc2.cwnd_prior == 70000


def test_cubic_idle_and_app_limited_time_excluded():
    cc = _cubic_after_loss()
    cc.on_ack(1000, 0.1, 11.0, 70000)      # epoch starts at 11.0
    cc.on_ack(1000, 0.1, 12.0, 70000)
    assert cc.t_epoch == 11.0
    # Application limited ACKs (flight < cwnd/2) don't grow cwnd and shift the epoch by
    # the time since the previous ACK (4.2: t excludes application-limited periods).
    w = cc.cwnd
    cc.on_ack(1000, 0.1, 12.5, 30000)
    assert cc.cwnd == w and cc.t_epoch == 11.5
    # Idle then restart at 20.0: t_epoch moves by 20.0 - 12.5 = 7.5 -> 19.0; RFC 2861 /
    # RFC 5681 4.1: ssthresh = max(70000, 3/4 * 70262 = 52696) = 70000, cwnd = min(IW, cwnd).
    assert w == 70262
    cc.on_idle_restart(20.0, 1.0)
    assert cc.t_epoch == 19.0
    assert cc.cwnd == 10000 and cc.ssthresh == 70000


def _reference_cubic_segments(events, beta=0.7, c=0.4):
    """An independent transcription of RFC 9438 4.2-4.6 in *segments* (floats), for one
    loss followed by congestion-avoidance ACKs; returns cwnd (segments) after each ACK."""
    cwnd, out = 100.0, []
    w_max = cwnd
    cwnd_prior = cwnd
    cwnd = cwnd * beta
    alpha = 3 * (1 - beta) / (1 + beta)
    t_epoch = None
    srtt = None
    for now, seg_acked, rtt in events:
        if rtt is not None:
            srtt = rtt if srtt is None else srtt + (rtt - srtt) / 8
        if t_epoch is None:
            t_epoch, cwnd_epoch, w_est = now, cwnd, cwnd
            k = cbrt((w_max - cwnd_epoch) / c)
            alpha = 1.0 if w_est >= cwnd_prior else alpha
        w_est += alpha * seg_acked / cwnd
        if w_est >= cwnd_prior:
            alpha = 1.0
        t = now - t_epoch
        if c * (t - k) ** 3 + w_max < w_est:
            cwnd = max(cwnd, w_est)
        else:
            target = min(max(c * (t + (srtt or 0) - k) ** 3 + w_max, cwnd), 1.5 * cwnd)
            cwnd += (target - cwnd) / cwnd * seg_acked
        out.append(cwnd)
    return out


@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(st.floats(0.001, 0.5), st.integers(1, 4),
                          st.one_of(st.none(), st.floats(0.005, 0.3))), min_size=1, max_size=60))
def test_cubic_matches_segment_reference(steps):
    # Bytes implementation == segment-unit transcription of the RFC, within the integer
    # rounding of cwnd in bytes (< 1 byte per step carried in the fraction).
    cc = _cubic_after_loss()
    now = 10.5
    events = []
    for dt, segs, rtt in steps:
        now += dt
        events.append((now, segs, rtt))
    ref = _reference_cubic_segments(events)
    for (t, segs, rtt), want in zip(events, ref):
        cc.on_ack(segs * MSS, rtt, t, cc.cwnd)
        assert abs(cc.cwnd + cc._frac - want * MSS) < 2.0 + 1e-6 * want * MSS


# ----------------------------------------------------------------------------- HyStart++

def _acks(cc: Cubic, n: int, rtt: float | None, now: float = 1.0) -> None:
    """n ACKs of one segment from a cwnd-limited sender (flight before each ACK = cwnd)."""
    for _ in range(n):
        cc.on_ack(MSS, rtt, now, cc.cwnd)


def _into_css() -> Cubic:
    """RFC 9406 4.2 on a scripted initial slow start (IW = 10 segments, one ACK per segment,
    the sender always cwnd-limited, so windowEnd - SND.UNA = cwnd - 1 segment at the ACK
    that starts a round and a round has as many ACKs as cwnd had segments when it began).

    Round 1, ACKs 1-10 (ACK 1 starts it: windowEnd = 1000 + 9000 = 10000):
        RTT 100 ms; cwnd 10000 -> 20000; lastRoundMinRTT still infinite: no check.
    Round 2, ACKs 11-30 (ACK 11, SND.UNA 11000 > 10000: windowEnd = 11000 + 19000 = 30000):
        lastRoundMinRTT = 0.100, RttThresh = max(4 ms, min(100/8 = 12.5 ms, 16 ms)) = 12.5 ms;
        RTT 104 ms < 112.5 ms: no exit; cwnd 20000 -> 40000.
    Round 3 (ACK 31: windowEnd = 31000 + 39000 = 70000): lastRoundMinRTT = 0.104,
        RttThresh = 13 ms; RTT 120 ms for 7 ACKs (fewer than N_RTT_SAMPLE = 8: no check
        yet), then 118 ms: currentRoundMinRTT = 0.118 >= 0.104 + 0.013 -> CSS at the 8th
        ACK of the round (ACK 38) after its growth: cwnd = 40000 + 8*1000 = 48000,
        cssBaselineMinRtt = 0.118."""
    cc = Cubic(MSS, 0.0)
    assert cc.hs_phase == Cubic.HS_SLOW_START
    _acks(cc, 10, 0.100)
    assert cc.cwnd == 20000 and cc.hs_phase == Cubic.HS_SLOW_START
    _acks(cc, 20, 0.104)
    assert cc.cwnd == 40000 and cc.hs_phase == Cubic.HS_SLOW_START
    _acks(cc, 7, 0.120)
    assert cc.cwnd == 47000 and cc.hs_phase == Cubic.HS_SLOW_START
    _acks(cc, 1, 0.118)
    assert cc.cwnd == 48000 and cc.hs_phase == Cubic.HS_CSS
    assert cc.hs_css_baseline == 0.118 and cc.ssthresh == INFINITE_SSTHRESH
    return cc


def test_hystart_delay_increase_enters_css_then_ca():
    cc = _into_css()
    # CSS: cwnd += min(N, L*SMSS) / CSS_GROWTH_DIVISOR = 250 per ACK.  RTT stays 120 ms,
    # never below the baseline.  Round ends (first ACK with SND.UNA > windowEnd):
    #   ACKs 39-70:  48000 + 32*250 = 56000 (rest of round 3, the first CSS round)
    #   ACK 71:      CSS round 1 done; windowEnd = 71000 + 55000 = 126000; 56250
    #   ACKs 72-126: 56250 + 55*250 = 70000
    #   ACK 127:     round 2 done; windowEnd = 127000 + 69000 = 196000; 70250
    #   ACKs 128-196: 70250 + 69*250 = 87500
    #   ACK 197:     round 3 done; windowEnd = 197000 + 86500 = 283500; 87750
    #   ACKs 198-283: 87750 + 86*250 = 109250
    #   ACK 284:     round 4 done; windowEnd = 284000 + 108250 = 392250; 109500
    #   ACKs 285-392: 109500 + 108*250 = 136500
    #   ACK 393:     round 5 done = CSS_ROUNDS: ssthresh = cwnd = 136500 (RFC 9406 4.2),
    #                cwnd_prior = 136500 (RFC 9438 4.10), and the ACK is congestion
    #                avoidance: epoch with K = 0, W_max = cwnd_epoch = 136500, alpha = 1
    #                (W_est >= cwnd_prior); W_est = 136500 + 1000*1000/136500 = 136507.33
    #                > W_cubic(0) = 136500 -> Reno-friendly, cwnd = 136507.
    checkpoints = [(32, 56000, 0), (1, 56250, 1), (55, 70000, 1), (1, 70250, 2),
                   (69, 87500, 2), (1, 87750, 3), (86, 109250, 3), (1, 109500, 4),
                   (108, 136500, 4)]
    for n, cwnd, rounds in checkpoints:
        _acks(cc, n, 0.120)
        assert (cc.cwnd, cc.hs_css_rounds, cc.hs_phase) == (cwnd, rounds, Cubic.HS_CSS)
    _acks(cc, 1, 0.120, now=2.0)
    assert cc.hs_phase == Cubic.HS_OFF
    assert (cc.ssthresh, cc.cwnd_prior) == (136500, 136500)
    assert (cc.k, cc.w_max, cc.cwnd_epoch, cc.t_epoch, cc.alpha) == (0.0, 136500.0, 136500,
                                                                      2.0, 1.0)
    assert cc.w_est == pytest.approx(136500 + 1000 * 1000 / 136500)
    assert cc.cwnd == 136507


def test_hystart_css_resumes_slow_start_when_rtt_falls():
    cc = _into_css()
    _acks(cc, 32, 0.120)                   # rest of round 3: 56000
    # Round 4 starts at ACK 71; its first 8 samples give currentRoundMinRTT = 0.110 <
    # cssBaselineMinRtt = 0.118: the exit was spurious (RFC 9406 4.2), back to slow start
    # after the 8th ACK's CSS growth: 56000 + 8*250 = 58000.
    _acks(cc, 7, 0.110)
    assert cc.hs_phase == Cubic.HS_CSS and cc.cwnd == 57750
    _acks(cc, 1, 0.110)
    assert cc.hs_phase == Cubic.HS_SLOW_START and cc.cwnd == 58000
    assert cc.hs_css_baseline == float("inf")
    _acks(cc, 1, 0.110)                    # slow start again: a full segment per segment
    assert cc.cwnd == 59000


def test_hystart_l_limit_and_loss_ends_it():
    cc = Cubic(MSS, 0.0)
    # RFC 9406 4.3: L = 8 for a non-paced sender: a stretch ACK of 12 segments adds 8.
    cc.on_ack(12000, 0.1, 0.1, 12000)
    assert cc.cwnd == 18000
    # Classic slow start (hystart=False): RFC 3465 L = 2.
    plain = Cubic(MSS, 0.0, hystart=False)
    plain.on_ack(12000, 0.1, 0.1, 12000)
    assert plain.cwnd == 12000 and plain.hs_phase == Cubic.HS_OFF
    # Loss during slow start (4.6 response) ends HyStart++; an undo brings it back.
    state = cc.snapshot()
    cc.on_congestion_event(0.2, 18000)
    assert cc.hs_phase == Cubic.HS_OFF and (cc.cwnd, cc.ssthresh) == (12600, 12600)
    cc.undo(state)
    assert cc.hs_phase == Cubic.HS_SLOW_START and cc.cwnd == 18000
    # After a timeout, slow start is RFC 5681 with L = 1 (RFC 3465 2.3), not HyStart++
    # (RFC 9406 4.3: initial slow start only).
    cc.on_rto(0.3, 18000)
    assert cc.hs_phase == Cubic.HS_OFF and (cc.cwnd, cc.ssthresh) == (1000, 12600)
    cc.on_ack(3000, 0.1, 0.4, 1000)
    assert cc.cwnd == 2000


def test_hystart_rtt_threshold_floor():
    # At a 20 ms path RttThresh = max(4 ms, min(20/8 = 2.5 ms, 16 ms)) = 4 ms.  Rounds of
    # 10, 20, 40, 80, 160 ACKs (cwnd doubles each round, see _into_css), each round's RTT
    # 3.9 ms above the previous one's: never a delay-increase exit, cwnd 10 -> 320 segments.
    cc = Cubic(MSS, 0.0)
    for k, n in enumerate((10, 20, 40, 80, 160)):
        _acks(cc, n, 0.020 + 0.0039 * k)
    assert cc.cwnd == 320000
    assert cc.hs_phase == Cubic.HS_SLOW_START and cc.ssthresh == INFINITE_SSTHRESH
    # A 4.1 ms step: round 2's 8th sample (ACK 18) has currentRoundMinRTT = 24.1 ms >=
    # 20 + 4 ms -> CSS with cwnd = 20000 + 8*1000 = 28000.
    cc = Cubic(MSS, 0.0)
    _acks(cc, 10, 0.020)
    _acks(cc, 7, 0.0241)
    assert cc.hs_phase == Cubic.HS_SLOW_START
    _acks(cc, 1, 0.0241)
    assert cc.hs_phase == Cubic.HS_CSS and cc.cwnd == 28000


def test_an_unknown_algorithm_is_an_error_not_a_silent_newreno() -> None:
    from tcpstack.tcp.config import TCPConfig
    with pytest.raises(ValueError, match=r"congestion_control='vegas': not one the stack has "
                                         r"\(bbr, cubic, newreno, reno\)"):
        TCPConfig(congestion_control="vegas")
    assert TCPConfig(congestion_control="BBR").congestion_control == "BBR"   # any case
    from dataclasses import replace
    with pytest.raises(ValueError):
        replace(TCPConfig(), congestion_control="nope")
