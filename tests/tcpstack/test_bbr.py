"""BBR v1 (tcpstack/tcp/congestion/bbr.py) and pacing in the TCB: the model and state
machine on synthetic rate samples, pacing on the two-TCB harness, and whole transfers on
the simulator (tcpstack/sim.py) at 200 Mbit/s with random loss."""
from __future__ import annotations

import ipaddress
import random
from typing import Any

import pytest

from tcpstack.host.endpoint import Closed, Eof, Established
from tcpstack.host.stack import StackConfig, StackCore
from tcpstack.impairment import Impairment
from tcpstack.sim import Network, StackHost, sink
from tcpstack.tcp.config import TCPConfig
from tcpstack.tcp.congestion import (BBR, CA_LOSS, CA_OPEN, CA_RECOVERY, Cubic,
                                     make_congestion_control)
from tcpstack.tcp.congestion.bbr import (DRAIN, HIGH_GAIN, PROBE_BW, PROBE_RTT, STARTUP,
                                         WindowedMax)
from tcpstack.tcp.rate import RateSample

from .harness import Harness

MSS = 1000


def sample(delivered: int, prior_delivered: int, interval: float, rtt: float, *,
           acked: int = MSS, in_flight: int = 10 * MSS, prior_in_flight: int = 10 * MSS,
           app_limited: bool = False, losses: int = 0) -> RateSample:
    rs = RateSample()
    rs.delivered = delivered
    rs.prior_delivered = prior_delivered
    rs.interval = interval
    rs.delivery_rate = delivered / interval if interval > 0 else -1.0
    rs.rtt = rtt
    rs.acked_sacked = acked
    rs.in_flight = in_flight
    rs.prior_in_flight = prior_in_flight
    rs.is_app_limited = app_limited
    rs.losses = losses
    return rs


def target(bbr: BBR, bw: float, gain: float = 2.0) -> int:
    """The cwnd BBR grows toward (Linux bbr_set_cwnd): gain * BDP + the ACK-aggregation
    allowance + three send bursts (the quantization budget)."""
    return bbr.quantization_budget(bbr.bdp(bw, gain) + bbr.aggregation_cwnd())


class Feeder:
    """Drives a BBR object with one sample per round trip at a fixed delivery rate."""

    def __init__(self, bbr: BBR, rtt: float = 0.010) -> None:
        self.bbr = bbr
        self.rtt = rtt
        self.now = 0.0
        self.delivered = 0
        self.app_limited = False

    def round(self, rate: float, *, in_flight: int | None = None, ca: int = CA_OPEN,
              losses: int = 0, app_limited: bool = False, rtt: float | None = None) -> None:
        """One round trip: everything in flight at its start is delivered."""
        prior = self.delivered
        amount = int(rate * self.rtt)
        self.now += self.rtt
        self.delivered += amount
        flight = in_flight if in_flight is not None else self.bbr.cwnd
        rs = sample(amount, prior, self.rtt, rtt if rtt is not None else self.rtt,
                    acked=amount, in_flight=flight, prior_in_flight=flight,
                    app_limited=app_limited or self.app_limited, losses=losses)
        # (the connection marks its sending app-limited when BBR asks: PROBE_RTT)
        self.app_limited = self.bbr.on_rate_sample(rs, self.now, ca)


def test_registered_and_opt_in() -> None:
    assert isinstance(make_congestion_control("bbr", 1448, 0.0), BBR)
    assert isinstance(make_congestion_control("BBR", 1448, 0.0), BBR)
    assert TCPConfig().congestion_control == "cubic"        # the default stays CUBIC
    assert TCPConfig().pacing is False
    assert not Cubic(1448, 0.0).wants_rate_samples and Cubic(1448, 0.0).pacing_rate == 0.0
    b = BBR(1448, 0.0)
    assert b.wants_rate_samples and b.mode == STARTUP
    # draft 4.2.1: initial pacing rate = high_gain * IW / (SRTT or 1 ms)
    assert b.pacing_rate == pytest.approx(HIGH_GAIN * b.iw / 0.001)
    b.init_pacing_rate(0.050)
    assert b.pacing_rate == pytest.approx(HIGH_GAIN * b.iw / 0.050)


def test_windowed_max_expires_after_the_window() -> None:
    f = WindowedMax()
    f.update(10, 1, 100.0)
    for t in range(2, 11):
        assert f.update(10, t, 50.0) == 100.0
    # the maximum leaves the filter once it is more than 10 rounds old
    assert f.update(10, 12, 50.0) == 50.0
    assert f.update(10, 13, 70.0) == 70.0


def test_startup_drain_probe_bw() -> None:
    """draft 4.3.1-4.3.3: STARTUP while the bandwidth grows >= 25 % per round; three rounds
    without that growth -> DRAIN (in flight above the BDP) -> PROBE_BW once it is down."""
    bbr = BBR(MSS, 0.0, seed=1)
    f = Feeder(bbr)
    rate = 100_000.0
    for _ in range(6):                       # doubling every round: still STARTUP
        f.round(rate)
        rate *= 2
        assert bbr.mode == STARTUP and not bbr.full_bw_reached
    assert bbr.pacing_gain == pytest.approx(HIGH_GAIN)
    top = rate / 2
    for _ in range(3):
        f.round(top, in_flight=10 * int(top * f.rtt))
    assert bbr.full_bw_reached and bbr.mode == DRAIN
    assert bbr.btl_bw == pytest.approx(top)
    assert bbr.pacing_gain < 1                                    # draining
    bdp = int(top * f.rtt)
    # ssthresh reported as the BDP plus three bursts at the rate of the moment (Linux)
    assert bdp + 3 * 2 * MSS <= bbr.ssthresh <= bdp + 3 * 64 * MSS
    f.round(top, in_flight=bdp)                                   # queue drained
    assert bbr.mode == PROBE_BW
    assert bbr.cycle_idx != 1 or bbr.pacing_gain == 0.75
    assert bbr.cwnd_gain == 2.0
    # PROBE_BW: pacing at gain * BtlBw (1 % margin), cwnd toward 2 BDP + 3 segments
    for _ in range(20):
        f.round(top)                                          # cwnd full
        assert bbr.pacing_rate == pytest.approx(bbr.pacing_gain * top * 0.99)
    assert bbr.cwnd <= target(bbr, top)
    assert bbr.cwnd >= 2 * bdp
    # a burst: whole segments of 1 ms at the pacing rate (2 at least)
    assert bbr.burst() == max(2, int(bbr.pacing_rate * 0.001) // MSS) * MSS
    # the gains cycle through 1.25, 0.75 and 1 (draft 4.3.3), one RTprop each at least
    gains = []
    for _ in range(24):
        f.round(top)
        gains.append(bbr.pacing_gain)
    assert set(gains) == {1.25, 0.75, 1.0}
    i = gains.index(1.25)
    assert gains[i + 1:i + 3] in ([1.25, 0.75], [0.75, 1.0])
    # 1.25 lasts only while in flight stays below 1.25 BDP (and one RTprop at least)
    while bbr.pacing_gain != 1.25:
        f.round(top)
    f.round(top, in_flight=bdp)
    f.round(top, in_flight=bdp)
    f.round(top, in_flight=bdp)
    assert bbr.pacing_gain == 1.25


def test_app_limited_samples_do_not_lower_btlbw() -> None:
    bbr = BBR(MSS, 0.0, seed=1)
    f = Feeder(bbr)
    f.round(1_000_000.0)
    f.round(100_000.0, app_limited=True)
    assert bbr.btl_bw == pytest.approx(1_000_000.0)
    f.round(2_000_000.0, app_limited=True)                   # but may raise it
    assert bbr.btl_bw == pytest.approx(2_000_000.0)


def full_pipe(seed: int = 1) -> tuple[BBR, Feeder]:
    bbr = BBR(MSS, 0.0, seed=seed)
    f = Feeder(bbr)
    for r in (1e5, 2e5, 4e5, 8e5, 1e6, 1e6, 1e6, 1e6):
        f.round(r, in_flight=int(r * f.rtt))
    assert bbr.mode == PROBE_BW
    return bbr, f


def test_probe_rtt_after_ten_seconds_without_a_lower_rtt() -> None:
    """draft 4.3.4: min_rtt not refreshed for 10 s -> PROBE_RTT: cwnd 4 segments for at
    least 200 ms and a round trip, then back to PROBE_BW with the saved cwnd."""
    bbr, f = full_pipe()
    cwnd = bbr.cwnd
    while f.now < 10.05:
        f.round(1e6, rtt=0.012, in_flight=10 * MSS)            # RTT above the 10 ms min
        if bbr.mode == PROBE_RTT:
            break
    assert bbr.mode == PROBE_RTT and bbr.cwnd == 4 * MSS
    assert f.app_limited                                      # asks to mark app-limited
    assert bbr.min_rtt == pytest.approx(0.012)                # the expired filter took it
    f.round(1e6, in_flight=4 * MSS)                           # in flight down: 200 ms start
    assert bbr.probe_rtt_done_stamp == pytest.approx(f.now + 0.200)
    t_end = bbr.probe_rtt_done_stamp
    while f.now <= t_end:
        f.round(4 * MSS / f.rtt, in_flight=4 * MSS)
        if f.now <= t_end:
            assert bbr.mode == PROBE_RTT and bbr.cwnd == 4 * MSS
    assert bbr.mode == PROBE_BW
    assert bbr.btl_bw == pytest.approx(1e6)                   # kept: app-limited samples
    # the saved cwnd is restored (then bounded by the PROBE_BW target, as Linux)
    assert bbr.cwnd == min(cwnd + 4 * MSS, target(bbr, 1e6))
    assert bbr.min_rtt_stamp == pytest.approx(f.now)


def test_packet_conservation_in_recovery_then_restore() -> None:
    """Linux bbr_set_cwnd_to_recover_or_restore (draft 4.2.3.4): entering recovery, cwnd =
    in flight + delivered for a round; leaving it, max(cwnd, the saved cwnd)."""
    bbr, f = full_pipe()
    for _ in range(10):
        f.round(1e6, in_flight=10 * MSS)
    before = bbr.cwnd
    bbr.on_congestion_event(f.now, 10 * MSS)                 # the connection enters recovery
    assert bbr.prior_cwnd == before
    rs = sample(MSS, f.delivered, f.rtt, f.rtt, acked=MSS, in_flight=3 * MSS, losses=2 * MSS)
    f.delivered += MSS
    f.now += 0.001
    bbr.on_rate_sample(rs, f.now, CA_RECOVERY)
    assert bbr.packet_conservation and bbr.cwnd == 3 * MSS + MSS
    # during the round: cwnd never below in flight + delivered
    rs = sample(MSS, f.delivered - MSS, f.rtt, f.rtt, acked=2 * MSS, in_flight=5 * MSS)
    f.delivered += MSS
    bbr.on_rate_sample(rs, f.now + 0.001, CA_RECOVERY)
    assert bbr.cwnd == 5 * MSS + 2 * MSS
    # leaving recovery restores the cwnd saved on entry (then bounded by the target)
    f.round(1e6, in_flight=5 * MSS, ca=CA_OPEN)
    assert bbr.cwnd == min(before + 10 * MSS, target(bbr, 1e6))
    assert bbr.cwnd > 2 * 10 * MSS and not bbr.packet_conservation


def test_rto_cuts_cwnd_and_restarts_full_bw_detection() -> None:
    bbr, f = full_pipe()
    before = bbr.cwnd
    bbr.on_rto(f.now, 10 * MSS)
    assert bbr.cwnd == MSS and bbr.prior_cwnd == before
    assert bbr.full_bw == 0.0 and bbr.full_bw_count == 0
    f.round(1e6, in_flight=MSS, ca=CA_LOSS)                   # grows again by what is delivered
    assert bbr.cwnd > MSS
    f.round(1e6, in_flight=MSS, ca=CA_OPEN)                   # the loss state ended: restore
    assert bbr.cwnd == min(before + 10 * MSS, target(bbr, 1e6))


def test_undo_restores_cwnd() -> None:
    bbr, f = full_pipe()
    state = bbr.snapshot()
    before = bbr.cwnd
    bbr.on_rto(f.now, 10 * MSS)
    bbr.undo(state)
    assert bbr.cwnd == before and bbr.full_bw == 0.0


# ---------------------------------------------------------------- pacing on the harness

def data_times(h: Harness) -> list[float]:
    return [t for t, d, s, _ in h.trace if d == "a>b" and s.payload]


def test_bbr_paces_a_flight_and_next_timer_honours_it() -> None:
    h = Harness(TCPConfig(congestion_control="bbr"), link=Impairment(delay=0.010))
    h.established()
    a = h.a
    assert isinstance(a.cc, BBR)
    srtt = a._rtt.srtt
    assert srtt is not None
    assert a.cc.pacing_rate == pytest.approx(HIGH_GAIN * a.cc.cwnd / srtt)
    h.clear_trace()
    h.write("a", b"x" * 200_000)
    first = data_times(h)
    # Not the whole initial window at once: one quantum (>= 2 segments), then the timer.
    assert 2 <= len(first) < 10
    deadline = a.next_timer()
    assert deadline is not None and deadline > h.now
    assert deadline == a._t_pace == pytest.approx(a._pace_next)
    assert a.segments_to_send(h.now) == []                    # nothing before the deadline
    h.run(until=h.now + 0.015)
    times = data_times(h)
    # The initial window went out spread over time at about the pacing rate.
    iw_times = times[:10]
    assert iw_times[-1] - iw_times[0] > 0.5 * (a.cc.iw - 2 * a.snd_mss) / a.cc.pacing_rate
    assert len(set(times)) > 3
    h.run()
    assert bytes(h.received["b"]) == b"x" * 200_000


def test_cubic_does_not_pace_unless_asked() -> None:
    h = Harness(TCPConfig(), link=Impairment(delay=0.010))
    h.established()
    h.clear_trace()
    h.write("a", b"x" * 200_000)
    assert len(data_times(h)) == 10 and h.a._t_pace is None   # the initial window at once
    h = Harness(TCPConfig(pacing=True), link=Impairment(delay=0.010))
    h.established()
    h.clear_trace()
    h.write("a", b"x" * 200_000)
    assert 2 <= len(data_times(h)) < 10 and h.a._t_pace is not None
    h.run()
    assert bytes(h.received["b"]) == b"x" * 200_000


def test_max_pacing_rate_caps_the_rate() -> None:
    cap = 100_000.0                                           # bytes/s
    h = Harness(TCPConfig(congestion_control="bbr", max_pacing_rate=cap),
                link=Impairment(delay=0.001))
    h.established()
    h.clear_trace()
    t0 = h.now
    h.write("a", b"y" * 50_000)
    h.run()
    assert bytes(h.received["b"]) == b"y" * 50_000
    times = data_times(h)
    # 50 kB at <= 100 kB/s: at least about half a second, less the first quantum
    assert times[-1] - t0 >= (50_000 - 2 * h.a.snd_mss) / cap * 0.95


# ---------------------------------------------------------------- the simulator

RATE = 200e6


def sim_transfer(cc: str, loss: float, nbytes: int = 3_000_000, seed: int = 1,
                 delay: float = 0.0005,
                 sent: list[tuple[float, int]] | None = None) -> tuple[float, bool, Any]:
    """bench/sim_loss.py's path: 200 Mbit/s each way behind 100 packets of queue, the
    loss on both directions.  Returns (Mbit/s, data intact, sender's stats); ``sent``
    collects (time, IP packet length) of every packet the sender sends."""
    data = random.Random(seed).randbytes(nbytes)
    received = bytearray()

    def path() -> Impairment:
        return Impairment(delay=delay, rate_bps=RATE, queue_bytes=150_000, loss=loss)

    class Sender(StackHost):
        def react(self) -> None:
            for ep in self.core.pop_ready():
                while (ev := ep.next_event()) is not None:
                    if isinstance(ev, Established):
                        ep.send(data, self.core.now)
                        ep.shutdown_write(self.core.now)
                    elif isinstance(ev, Eof):
                        ep.close(self.core.now)
                    elif isinstance(ev, Closed):
                        pass

    class Receiver(StackHost):
        def react(self) -> None:
            sink(self.core, received)

    client = Sender(StackCore(["10.0.0.1"], StackConfig(tcp=TCPConfig(congestion_control=cc)),
                              rng=random.Random(seed)))
    server = Receiver(StackCore(["10.0.0.2"], StackConfig(tcp=TCPConfig()),
                                rng=random.Random(seed + 1)))
    if sent is not None:
        client.core.on_packet = lambda d, p, t: sent.append((t, len(p))) if d == "out" else None
    net = Network(seed=seed)
    na = net.add_host(client, [ipaddress.ip_address("10.0.0.1").packed], "sender")
    nb = net.add_host(server, [ipaddress.ip_address("10.0.0.2").packed], "receiver")
    net.connect(na, nb, path(), reverse=path())
    server.core.listen(80, "10.0.0.2")
    ep = client.core.connect("10.0.0.2", 80, 0.0)
    client.react()
    conn = ep.conn
    end = [0.0]

    def finished() -> bool:
        if not end[0] and conn.stats.bytes_acked >= nbytes:
            end[0] = net.now
        return bool(end[0])

    net.run(max_time=120.0, stop=finished)
    net.run_for(1.0)                                          # let the tail arrive
    ok = bytes(received[:nbytes]) == data and len(received) == nbytes
    return nbytes * 8 / end[0] / 1e6, ok, conn.stats


def test_sim_clean_path_reaches_the_bottleneck() -> None:
    """STARTUP may overflow the 100-packet queue once, as Linux's BBR v1 does on this
    path (its cwnd target adds three 1 ms send bursts at 2.89 x BtlBw to 2.89 BDP: about
    190 packets against 19 of BDP + 100 of queue; the kernel's BBR retransmits hundreds of
    segments per 10 MB on bench/impaired.py's bottleneck row).  Until the receive window
    grew as Linux's does (autotune.py) it held the flight below that and hid the overshoot.
    After STARTUP nothing is lost: a transfer three times longer loses no more."""
    mbps, ok, st = sim_transfer("bbr", 0.0)
    assert ok
    assert mbps > 0.9 * 200                                   # 193 Mbit/s of goodput max
    assert st.congestion_control == "bbr"
    assert st.timeouts == 0 and st.recoveries <= 1            # one overshoot at most
    assert st.retransmits <= 20
    assert 0.9 * 25e6 < st.pacing_rate < 1.3 * 25e6           # paces at about BtlBw
    _, ok3, st3 = sim_transfer("bbr", 0.0, nbytes=9_000_000)
    assert ok3 and st3.retransmits == st.retransmits and st3.recoveries == st.recoveries


@pytest.mark.parametrize("loss,floor", [(0.03, 0.85), (0.10, 0.70)])
def test_sim_random_loss_keeps_most_of_the_rate(loss: float, floor: float) -> None:
    """BBR v1 does not treat random loss as congestion: at 3 % loss it keeps most of the
    bottleneck (CUBIC: about a third), at 10 % still most of it (CUBIC: a few %).  The
    median of five seeds: a retransmission lost at the very tail of a transfer, during
    recovery, costs a seed a 200 ms RTO (loss recovery, not BBR: RFC 8985 7.2 sends no
    probe in recovery, and nothing sent later can show the loss).  At 10 % loss, with the
    receive window that grows as Linux's (autotune.py), seeds 1 and 2 of 12 meet it, as
    seed 9 did before; CUBIC has 14 RTOs over the same 12 seeds."""
    seeds = (1, 2, 3, 4, 5)
    runs = [sim_transfer("bbr", loss, seed=seed) for seed in seeds]
    assert all(ok for _, ok, _ in runs)
    mbps = sorted(m for m, _, _ in runs)[2]
    assert mbps > floor * 200
    cubic = sorted(sim_transfer("cubic", loss, seed=seed)[0] for seed in seeds)[2]
    assert mbps > 1.5 * cubic


def test_sim_pacing_spreads_the_initial_window() -> None:
    """On the simulator (50 ms RTT): BBR's initial window leaves in small bursts at
    high_gain * IW / SRTT (about 0.8 MB/s: 2 segments per tick, draft 4.2.1), the stack's
    timer wakes the connection for each; CUBIC without pacing sends it in one instant."""
    def first_flight(cc: str) -> list[float]:
        sent: list[tuple[float, int]] = []
        sim_transfer(cc, 0.0, nbytes=200_000, delay=0.025, sent=sent)
        data = [t for t, n in sent if n > 1000]
        return [t for t in data if t < data[0] + 0.045]      # before the first ACK returns
    cubic = first_flight("cubic")
    assert len(cubic) == 10 and cubic[-1] == cubic[0]
    bbr = first_flight("bbr")
    assert len(bbr) >= 10
    ticks: dict[float, int] = {}
    for t in bbr:
        ticks[t] = ticks.get(t, 0) + 1
    assert max(ticks.values()) <= 2                            # a quantum: 2 segments
    assert len(ticks) >= 5
    # 10 segments (14.5 kB) at about 0.8 MB/s: some 15 ms
    assert bbr[9] - bbr[0] > 0.010


def test_an_app_limited_flow_under_counted_bursts_never_times_out() -> None:
    """bench/impaired.py's burst row on an application-limited flow (4 segments every 5 ms),
    in the simulator (sim_loss.py idle-burst-count: nft's count, the last 10 of every 1000
    packets, each direction).  When the ACK direction's window lands on the flow, every ACK
    of a few flights is lost; a sender whose cwnd holds fewer segments than those flights
    stalls, sends its one loss probe (RFC 8985 7.3), and then can only time out: each RTO
    elicits one ACK, which moves the count on by one, with the timer doubling each time
    (RFC 6298 rule (5.5)) -- up to 10 RTOs for one window.  CUBIC, app-limited, cannot grow its
    cwnd (RFC 9438 5.8) and meets it on every seed; BBR's cwnd comes from its model (the
    flights' delivery rate times its gain, plus three send bursts: about 100 segments
    here), not from losses, so its flow never stalls."""
    from bench.sim_loss import run
    for seed in (1, 2, 3):
        r = run("idle-burst-count", 2_000_000, seed, cc="bbr")
        assert r.ok and r.stats.timeouts == 0, seed
    assert sum(run("idle-burst-count", 2_000_000, s, cc="cubic").stats.timeouts
               for s in (1, 2, 3)) > 0                   # the scenario bites
