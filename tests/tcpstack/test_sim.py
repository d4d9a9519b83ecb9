"""The network simulator (tcpstack/sim.py) with small fake hosts, and a CUBIC fairness
experiment with model flows through a shared bottleneck (reusable: run_fairness)."""
from __future__ import annotations

import itertools
import math
import struct

import pytest

from tcpstack.tcp.congestion import Cubic
from tcpstack.sim import (GilbertElliott, LinkConfig, Network, SimulationError, StackHost,
                          TraceRecorder, jain_index, run_fairness)

A = bytes([10, 0, 0, 1])
B = bytes([10, 0, 0, 2])
C = bytes([10, 0, 0, 3])
D = bytes([10, 0, 0, 4])


def ipv4(src: bytes, dst: bytes, payload: bytes, size: int | None = None) -> bytes:
    """A minimal IPv4-looking packet (only version, total length, src, dst are meaningful);
    ``size`` pads it to that total length."""
    total = size if size is not None else 20 + len(payload)
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, total, 0, 0, 64, 253, 0, src, dst)
    return (hdr + payload).ljust(total, b"\0")


def seq_of(packet: bytes) -> int:
    return struct.unpack_from("!I", packet, 20)[0]


class Host:
    """Fake host: records arrivals; ``send`` queues packets for the simulator; optional
    periodic timer that sends one numbered packet per tick."""

    def __init__(self, addr: bytes, peer: bytes | None = None, *, size: int = 100,
                 tick: float | None = None, count: int = 0, echo: bool = False) -> None:
        self.addr = addr
        self.peer = peer
        self.size = size
        self.received: list[tuple[float, bytes]] = []
        self.out: list[bytes] = []
        self.tick = tick
        self.count = count
        self.next_seq = 0
        self.deadline: float | None = 0.0 if tick is not None and count else None
        self.echo = echo

    def send_seq(self, n: int = 1) -> None:
        for _ in range(n):
            assert self.peer is not None
            self.out.append(ipv4(self.addr, self.peer, struct.pack("!I", self.next_seq), self.size))
            self.next_seq += 1

    # SimHost
    def receive_packet(self, packet: bytes, now: float) -> None:
        self.received.append((now, packet))
        if self.echo:
            self.out.append(ipv4(self.addr, packet[12:16], packet[20:]))

    def packets_to_send(self) -> list[bytes]:
        out, self.out = self.out, []
        return out

    def next_timer(self) -> float | None:
        return self.deadline

    def handle_timer(self, now: float) -> None:
        if self.deadline is not None and now >= self.deadline:
            self.send_seq()
            if self.next_seq < self.count:
                self.deadline = self.deadline + self.tick  # type: ignore[operator]
            else:
                self.deadline = None


def pair(cfg: LinkConfig, seed: int = 1, reverse: LinkConfig | None = None, **kw):
    net = Network(seed=seed)
    ha, hb = Host(A, B, **kw), Host(B, A)
    a = net.add_host(ha, [A], name="a")
    b = net.add_host(hb, [B], name="b")
    link = net.connect(a, b, cfg, reverse)
    return net, ha, hb, link


# ----------------------------------------------------------------------------- timing

def test_delay_exact_arrival_times():
    net, ha, hb, link = pair(LinkConfig(delay=0.010))
    ha.send_seq()
    net.call_at(0.5, lambda now: ha.send_seq())
    assert net.run(until=1.0) == 1.0
    assert [t for t, _ in hb.received] == [0.010, 0.5 + 0.010]
    st = link.stats(0)
    assert (st.sent, st.delivered, st.bytes, st.bytes_delivered) == (2, 2, 200, 200)
    assert net.stats["a->b"] is st


def test_rate_shaping_exact_arrival_times():
    # 1250-byte packets at 1 Mbit/s: 10000 bits -> 10 ms serialization each, back to back;
    # arrival = departure (end of serialization) + 5 ms propagation.
    net, ha, hb, _ = pair(LinkConfig(delay=0.005, rate_bps=1e6), size=1250)
    ha.send_seq(3)
    net.run()
    f1 = 0.0 + 1250 * 8 / 1e6
    f2 = f1 + 1250 * 8 / 1e6
    f3 = f2 + 1250 * 8 / 1e6
    assert [t for t, _ in hb.received] == [f1 + 0.005, f2 + 0.005, f3 + 0.005]
    assert [t for t, _ in hb.received] == pytest.approx([0.015, 0.025, 0.035], abs=1e-15)
    # A packet sent after the queue drained starts at once.
    net.call_at(1.0, lambda now: ha.send_seq())
    net.run()
    assert hb.received[-1][0] == 1.0 + 1250 * 8 / 1e6 + 0.005


def test_queue_overflow_drops_tail():
    # Queue limit 3 packets (bytes queued or in transmission): 5 at once -> 3 pass, 2 dropped.
    net, ha, hb, link = pair(LinkConfig(delay=0.0, rate_bps=1e6, queue_bytes=3 * 1250), size=1250)
    ha.send_seq(5)
    # At 10 ms the first packet has left the queue: of two more, exactly one fits.
    net.call_at(0.010, lambda now: ha.send_seq(2))
    net.run(until=0.005)
    st = link.stats(0)
    assert (st.sent, st.dropped_queue) == (5, 2)                    # the tail was dropped
    net.run()
    assert st.dropped_queue == 3 and [seq_of(p) for _, p in hb.received] == [0, 1, 2, 5]


def test_timers_ping_pong_and_clock():
    net = Network(seed=0)
    ha = Host(A, B, tick=0.1, count=5)
    hb = Host(B, echo=True)
    a = net.add_host(ha, [A], name="a")
    b = net.add_host(hb, [B], name="b")
    net.connect(a, b, LinkConfig(delay=0.010), LinkConfig(delay=0.030))
    end = net.run(until=10.0)
    assert end == 10.0 and net.now == 10.0
    # pings leave at 0.0, 0.1, ..., 0.4; echoes come back 10 + 30 ms later
    times = [t for t, _ in ha.received]
    want = []
    d = 0.0
    for _ in range(5):
        want.append(d + 0.010 + 0.030)
        d += 0.1
    assert times == want
    assert [seq_of(p) for _, p in ha.received] == [0, 1, 2, 3, 4]


def test_run_stop_predicate_and_max_time():
    net, ha, hb, _ = pair(LinkConfig(delay=0.010), tick=0.1, count=100)
    t = net.run(stop=lambda: len(hb.received) >= 3)
    assert len(hb.received) == 3 and t == 0.2 + 0.010
    # max_time caps the virtual time of one run
    t = net.run(max_time=0.5)
    assert t == pytest.approx(0.71) and len(hb.received) == 8    # arrivals 0.31 .. 0.71


def test_unroutable_and_ipv6():
    net = Network()
    a6 = bytes(15) + b"\x01"
    b6 = bytes(15) + b"\x02"
    ha, hb = Host(A), Host(B)
    a = net.add_host(ha, [A, a6])
    b = net.add_host(hb, [B, b6])
    net.connect(a, b, LinkConfig(delay=0.001))
    ha.out.append(ipv4(A, C, b"x"))                               # nobody owns 10.0.0.3
    v6 = struct.pack("!IHBB16s16s", 6 << 28, 4, 59, 64, a6, b6) + b"abcd"
    ha.out.append(v6)
    ha.out.append(b"\x00\x01")                                    # not IP at all
    net.run()
    assert net.unroutable == 2
    assert [p for _, p in hb.received] == [v6]
    with pytest.raises(SimulationError):
        net.add_host(Host(C), [A])                                # address already taken


# ----------------------------------------------------------------------------- impairments

def test_loss_rate_within_statistical_bounds():
    n = 20000
    net, ha, hb, link = pair(LinkConfig(delay=0.001, loss=0.1), seed=3)
    ha.send_seq(n)
    net.run()
    lost = link.stats(0).dropped_loss
    # Binomial(20000, 0.1): mean 2000, sd sqrt(20000*0.1*0.9) = 42.4; allow 5 sd.
    assert abs(lost - 2000) < 5 * math.sqrt(n * 0.1 * 0.9)
    assert len(hb.received) == n - lost == link.stats(0).delivered


def test_gilbert_elliott_burst_loss():
    n = 40000
    ge = GilbertElliott(p=0.01, r=0.25)               # bursts of mean 1/r = 4 packets
    net, ha, hb, link = pair(LinkConfig(delay=0.001, burst_loss=ge), seed=5)
    ha.send_seq(n)
    net.run()
    got = {seq_of(p) for _, p in hb.received}
    lost = [s for s in range(n) if s not in got]
    # stationary P(bad) = p/(p+r) = 0.01/0.26 = 3.85 %
    assert 0.025 < len(lost) / n < 0.055
    bursts, run_len = [], 1
    for x, y in zip(lost, lost[1:]):
        if y == x + 1:
            run_len += 1
        else:
            bursts.append(run_len)
            run_len = 1
    bursts.append(run_len)
    assert 3.0 < sum(bursts) / len(bursts) < 5.0     # mean burst length ~ 4


def test_reordering_reorders():
    net, ha, hb, link = pair(LinkConfig(delay=0.010, reorder=0.2, reorder_delay=0.005),
                             seed=2, tick=0.001, count=1000)
    net.run()
    seqs = [seq_of(p) for _, p in hb.received]
    assert sorted(seqs) == list(range(1000))                      # nothing lost
    held = link.stats(0).reordered
    assert 120 < held < 280                                       # ~ 200
    late = sum(1 for x, y in zip(seqs, seqs[1:]) if y < x)
    assert late > 100                                             # later packets overtook
    # without reordering: exactly in order
    net2, ha2, hb2, _ = pair(LinkConfig(delay=0.010), tick=0.001, count=1000)
    net2.run()
    assert [seq_of(p) for _, p in hb2.received] == list(range(1000))


def test_duplication_duplicates():
    net, ha, hb, link = pair(LinkConfig(delay=0.010, duplicate=0.1), seed=4)
    ha.send_seq(2000)
    net.run()
    seqs = [seq_of(p) for _, p in hb.received]
    dup = link.stats(0).duplicated
    assert 120 < dup < 280
    assert len(seqs) == 2000 + dup == link.stats(0).delivered
    counts: dict[int, int] = {}
    for s in seqs:
        counts[s] = counts.get(s, 0) + 1
    assert set(counts) == set(range(2000))
    assert sum(1 for c in counts.values() if c == 2) == dup and max(counts.values()) == 2


def test_corruption_flips_exactly_one_bit():
    net, ha, hb, link = pair(LinkConfig(delay=0.001, corrupt=1.0), seed=9, size=200)
    ha.send_seq(300)
    sent = list(ha.out)
    net.run()
    assert link.stats(0).corrupted == 300
    positions = set()
    for (_, got), orig in zip(hb.received, sent):
        x = int.from_bytes(got, "big") ^ int.from_bytes(orig, "big")
        assert len(got) == len(orig) and x.bit_count() == 1
        positions.add(x.bit_length())
    assert len(positions) > 100                                   # anywhere in the packet


def test_jitter_bounds_and_order():
    cfg = LinkConfig(delay=0.050, jitter=0.010)
    net, ha, hb, _ = pair(cfg, seed=6, tick=0.001, count=500)
    net.run()
    seqs = [seq_of(p) for _, p in hb.received]
    assert seqs == list(range(500))                               # default: FIFO kept
    for t, p in hb.received:
        sent = seq_of(p) * 0.001
        assert 0.040 - 1e-9 <= t - sent <= 0.060 + 0.001 + 1e-9
    net2, ha2, hb2, _ = pair(LinkConfig(delay=0.050, jitter=0.010, jitter_reorders=True),
                             seed=6, tick=0.001, count=500)
    net2.run()
    seqs2 = [seq_of(p) for _, p in hb2.received]
    assert sorted(seqs2) == list(range(500)) and seqs2 != list(range(500))


def _lossy_run(seed: int) -> list:
    net = Network(seed=seed)
    rec = TraceRecorder()
    net.trace = rec
    ha = Host(A, B, tick=0.002, count=300, size=300)
    hb = Host(B, echo=True)
    a = net.add_host(ha, [A], name="a")
    b = net.add_host(hb, [B], name="b")
    cfg = LinkConfig(delay=0.02, jitter=0.005, rate_bps=2e6, queue_bytes=3000, loss=0.05,
                     reorder=0.1, duplicate=0.05, corrupt=0.05)
    net.connect(a, b, cfg)
    net.run()
    assert "drop_loss" in {r[3] for r in rec.records}
    return rec.records


def test_determinism_same_seed_same_trace():
    r1, r2, r3 = _lossy_run(11), _lossy_run(11), _lossy_run(12)
    assert r1 == r2
    assert r1 != r3
    assert {e for *_, e, _ in r1} >= {"send", "deliver", "drop_loss", "reorder", "duplicate",
                                      "corrupt"}
    text = TraceRecorder.format  # the teaching view renders one line per record
    rec = TraceRecorder()
    rec.records = r1[:3]
    assert len(text(rec).splitlines()) == 3


# ----------------------------------------------------------------------------- bottleneck

def _two_pairs(bn_queue: int):
    net = Network(seed=0)
    bn = net.add_bottleneck(rate_bps=1e6, queue_bytes=bn_queue, name="bn")
    s1, r1, s2, r2 = Host(A, B, size=1250), Host(B), Host(C, D, size=1250), Host(D)
    n1, m1 = net.add_host(s1, [A], name="s1"), net.add_host(r1, [B], name="r1")
    n2, m2 = net.add_host(s2, [C], name="s2"), net.add_host(r2, [D], name="r2")
    l1 = net.connect(n1, m1, LinkConfig(delay=0.005), bottleneck=bn)
    l2 = net.connect(n2, m2, LinkConfig(delay=0.005), bottleneck=bn)
    return net, bn, (s1, r1, l1), (s2, r2, l2)


def test_bottleneck_is_one_fifo_shared_by_two_flows():
    net, bn, (s1, r1, l1), (s2, r2, l2) = _two_pairs(100_000)
    s1.send_seq(2)
    s2.send_seq(2)                 # polled after s1: queued behind s1's two packets
    net.run()
    tx = 1250 * 8 / 1e6            # 10 ms each through the shared 1 Mbit/s port
    assert [t for t, _ in r1.received] == [tx + 0.005, 2 * tx + 0.005]
    assert [t for t, _ in r2.received] == [3 * tx + 0.005, 4 * tx + 0.005]
    assert bn.stats.sent == 4 and bn.stats.delivered == 4 and bn.max_backlog == 5000


def test_bottleneck_shared_queue_overflow():
    net, bn, (s1, r1, l1), (s2, r2, l2) = _two_pairs(3 * 1250)
    s1.send_seq(2)
    s2.send_seq(2)                 # the 4th packet finds the shared queue full
    net.run()
    assert len(r1.received) == 2 and len(r2.received) == 1
    assert bn.stats.dropped_queue == 1
    assert l2.stats(0).dropped_queue == 1 and l1.stats(0).dropped_queue == 0


def test_bottleneck_behind_access_link_rate():
    # s1's own 2 Mbit/s access link feeds the 1 Mbit/s bottleneck: the packet reaches the
    # bottleneck after 5 ms (its access serialization), then takes 10 ms there.
    net2 = Network()
    bn2 = net2.add_bottleneck(1e6, 100_000)
    h1, h2 = Host(A, B, size=1250), Host(B)
    n1, n2 = net2.add_host(h1, [A]), net2.add_host(h2, [B])
    net2.connect(n1, n2, LinkConfig(delay=0.005, rate_bps=2e6), bottleneck=bn2)
    h1.send_seq(2)
    net2.run()
    a1 = 1250 * 8 / 2e6                      # at the bottleneck: 5 ms
    d1 = a1 + 1250 * 8 / 1e6                 # leaves at 15 ms
    a2 = a1 + 1250 * 8 / 2e6                 # second reaches the bottleneck at 10 ms: waits
    d2 = d1 + 1250 * 8 / 1e6                 # leaves at 25 ms
    assert a2 < d1
    assert [t for t, _ in h2.received] == [d1 + 0.005, d2 + 0.005]


# ----------------------------------------------------------------------------- fairness

MODEL_MSS = 1000


class ModelSender:
    """A CUBIC-driven model flow: numbered 1000-byte packets, one ACK per packet, loss
    declared when a packet 3 numbers later is acknowledged first (no retransmission: the
    model measures how the windows share the bottleneck, not reliability), a 1 s RTO."""

    def __init__(self, src: bytes, dst: bytes, start: float, cc_factory=Cubic) -> None:
        self.src, self.dst = src, dst
        self.cc = cc_factory(MODEL_MSS, start)
        self.start = start
        self.started = False
        self.now = start
        self.next_seq = 0
        self.outstanding: dict[int, float] = {}      # seq -> send time, in send order
        self.in_recovery = False
        self.recover = 0
        self.rto_deadline: float | None = None
        self.congestion_events = 0

    def _flight(self) -> int:
        return len(self.outstanding) * MODEL_MSS

    def receive_packet(self, packet: bytes, now: float) -> None:
        self.now = now
        s = seq_of(packet)
        sent = self.outstanding.pop(s, None)
        if sent is None:
            return
        flight_before = self._flight() + MODEL_MSS
        cc = self.cc
        lost = [q for q in self.outstanding if q < s - 3]
        for q in lost:
            del self.outstanding[q]
        if lost and not self.in_recovery and lost[-1] >= self.recover:
            self.congestion_events += 1
            cc.on_congestion_event(now, flight_before)
            self.in_recovery, self.recover = True, self.next_seq
        elif self.in_recovery and s >= self.recover:
            self.in_recovery = False
            cc.on_recovery_exit(now)
        elif self.in_recovery:
            cc.on_recovery_ack(MODEL_MSS, now)
        else:
            cc.on_ack(MODEL_MSS, now - sent, now, flight_before)
        self.rto_deadline = now + 1.0 if self.outstanding else None

    def packets_to_send(self) -> list[bytes]:
        out = []
        if not self.started:
            return out
        while self._flight() + MODEL_MSS <= self.cc.cwnd:
            self.outstanding[self.next_seq] = self.now
            out.append(ipv4(self.src, self.dst, struct.pack("!I", self.next_seq), MODEL_MSS))
            self.next_seq += 1
        if out and self.rto_deadline is None:
            self.rto_deadline = self.now + 1.0
        return out

    def next_timer(self) -> float | None:
        return self.rto_deadline if self.started else self.start

    def handle_timer(self, now: float) -> None:
        self.now = now
        if not self.started:
            self.started = True
            return
        if self.rto_deadline is not None and now >= self.rto_deadline:
            self.cc.on_rto(now, self._flight())
            self.outstanding.clear()
            self.in_recovery, self.recover = False, self.next_seq
            self.rto_deadline = None


class ModelReceiver:
    def __init__(self, addr: bytes) -> None:
        self.addr = addr
        self.bytes = 0
        self.out: list[bytes] = []

    def receive_packet(self, packet: bytes, now: float) -> None:
        self.bytes += len(packet)
        self.out.append(ipv4(self.addr, packet[12:16], packet[20:24]))

    def packets_to_send(self) -> list[bytes]:
        out, self.out = self.out, []
        return out

    def next_timer(self) -> float | None:
        return None

    def handle_timer(self, now: float) -> None:
        pass


BOTTLENECK_BPS = 10e6


def cubic_model_network(starts=(0.0, 2.0), rtts=(0.040, 0.040), bdp_queue: float = 1.0,
                        seed: int = 1, jitter: float = 0.002):
    """A net_factory for run_fairness: len(starts) CUBIC model flows, each over its own
    access link, sharing one 10 Mbit/s drop-tail bottleneck (queue = bdp_queue * BDP of
    the first flow's RTT).  The access links have a little order-keeping jitter: without
    it the deterministic drop-tail queue locks the flows into a phase pattern where one
    keeps losing alone (Floyd & Jacobson, "On traffic phase effects in packet-switched
    gateways", 1992) -- 60/40 splits for 100 s instead of CUBIC's convergence."""
    def factory():
        net = Network(seed=seed)
        q = int(bdp_queue * BOTTLENECK_BPS / 8 * rtts[0])
        bn = net.add_bottleneck(BOTTLENECK_BPS, q, name="bn")
        counters = []
        factory.senders = []
        for i, (start, rtt) in enumerate(zip(starts, rtts)):
            sa, ra = bytes([10, 1, i, 1]), bytes([10, 2, i, 1])
            snd, rcv = ModelSender(sa, ra, start), ModelReceiver(ra)
            ns = net.add_host(snd, [sa], name=f"s{i}")
            nr = net.add_host(rcv, [ra], name=f"r{i}")
            net.connect(ns, nr, LinkConfig(delay=rtt / 2, jitter=jitter),
                        LinkConfig(delay=rtt / 2), bottleneck=bn)
            counters.append(lambda r=rcv: r.bytes)
            factory.senders.append(snd)
        return net, counters
    return factory


def test_cubic_fairness_model():
    factory = cubic_model_network()
    res = run_fairness(factory, duration=40.0, warmup=10.0, bottleneck_bps=BOTTLENECK_BPS,
                       sample_interval=10.0)
    senders = factory.senders
    assert all(s.congestion_events >= 3 for s in senders)     # real AIMD cycles happened
    assert res.utilization is not None and res.utilization > 0.85
    assert res.jain_index > 0.98, res
    # and the second flow, starting 2 s late, caught up: in every 10 s window each flow
    # gets at least a third of the bottleneck
    for window in res.samples:
        assert min(window) > BOTTLENECK_BPS / 3, res.samples


def test_jain_index():
    assert jain_index([1.0, 1.0, 1.0]) == 1.0
    assert jain_index([1.0, 0.0]) == 0.5
    assert jain_index([3.0, 1.0]) == pytest.approx(16 / 20)


# ----------------------------------------------------------------------------- real TCBs

_SEG_KEYS = itertools.count()


class TCBHost:
    """A SimHost around one real TCPConnection (tcpstack/tcp/connection.py).  Until the wire
    codec is in, a segment travels as an IPv4-looking packet of its real size (40 bytes of
    headers + 12 of timestamps + payload) whose first 8 payload bytes index a per-network
    dict of TCPSegment objects (so no corruption on these links)."""

    def __init__(self, addr: bytes, peer: bytes, segs: dict, *, active: bool = False,
                 cc: str = "cubic", data: int = 0) -> None:
        from tcpstack.tcp.config import TCPConfig
        self.addr, self.peer, self.segs = addr, peer, segs
        self.cfg = TCPConfig(congestion_control=cc)
        self.conn = None
        self.now = 0.0
        self.got = 0
        self.pending = data

    def open(self, now: float) -> None:
        from tcpstack.tcp.connection import TCPConnection
        self.now = now
        self.conn = TCPConnection(40000, 80, iss=1000, config=self.cfg, now=now)
        self.conn.connect(now)

    def receive_packet(self, packet: bytes, now: float) -> None:
        from tcpstack.tcp.connection import TCPConnection
        from tcpstack.tcp.events import DataReceived
        self.now = now
        seg = self.segs.pop(struct.unpack_from("!Q", packet, 20)[0])
        if self.conn is None:
            self.conn = TCPConnection(80, 40000, iss=5000, config=self.cfg, now=now)
            self.conn.accept_syn(seg, now)
        else:
            self.conn.receive(seg, now)
        while (ev := self.conn.next_event()) is not None:
            if isinstance(ev, DataReceived):
                self.got += len(ev.data)

    def packets_to_send(self) -> list[bytes]:
        c = self.conn
        if c is None:
            return []
        if self.pending and c.send_buffer_free:
            self.pending -= c.send(bytes(min(self.pending, c.send_buffer_free)))
        out = []
        for seg in c.segments_to_send(self.now):
            key = next(_SEG_KEYS)
            self.segs[key] = seg
            out.append(ipv4(self.addr, self.peer, struct.pack("!Q", key), 52 + len(seg.payload)))
        return out

    def next_timer(self) -> float | None:
        return self.conn.next_timer() if self.conn is not None else None

    def handle_timer(self, now: float) -> None:
        self.now = now
        self.conn.handle_timer(now)  # type: ignore[union-attr]


def tcb_fairness_network(cc: str = "cubic", starts=(0.0, 1.0), rtt: float = 0.040,
                         rate_bps: float = BOTTLENECK_BPS):
    """net_factory for run_fairness: bulk senders over real TCBs through one bottleneck."""
    def factory():
        net = Network(seed=3)
        segs: dict = {}
        bn = net.add_bottleneck(rate_bps, int(rate_bps / 8 * rtt), name="bn")
        counters = []
        for i, start in enumerate(starts):
            sa, ra = bytes([10, 1, i, 1]), bytes([10, 2, i, 1])
            snd = TCBHost(sa, ra, segs, cc=cc, data=10**9)
            rcv = TCBHost(ra, sa, segs)
            ns, nr = net.add_host(snd, [sa], name=f"s{i}"), net.add_host(rcv, [ra], name=f"r{i}")
            net.connect(ns, nr, LinkConfig(delay=rtt / 2, jitter=0.002),
                        LinkConfig(delay=rtt / 2), bottleneck=bn)
            net.call_at(start, snd.open)
            counters.append(lambda r=rcv: r.got)
        return net, counters
    return factory


def test_cubic_fairness_real_tcb():
    # Two CUBIC TCBs (the connection's own loss recovery, receive-buffer auto-tuning on)
    # share a 10 Mbit/s bottleneck with a 1-BDP drop-tail queue; the second starts 1 s later.
    # 40 s: over 20 s, 5-s windows still swing (one flow at 3.2 vs 6.4 Mbit/s in one window
    # with seed 3 -- and 2.9 vs 6.8 with seed 6 with a fixed 1 MB window, so it is CUBIC's
    # convergence time, not auto-tuning); what the issue asks is convergence: whole-run
    # throughputs within 20% of each other, and every 5-s window of the second half fair.
    res = run_fairness(tcb_fairness_network(), duration=40.0, warmup=5.0,
                       bottleneck_bps=BOTTLENECK_BPS, sample_interval=5.0)
    assert res.jain_index > 0.99, res
    assert res.utilization is not None and res.utilization > 0.9, res
    totals = [sum(w[i] for w in res.samples) for i in range(2)]
    assert min(totals) > 0.8 * max(totals), res.samples
    for window in res.samples[len(res.samples) // 2:]:
        assert min(window) > BOTTLENECK_BPS / 3, res.samples


def test_timer_storm_is_reported():
    # A host that never clears a past deadline would spin at one instant forever.
    class Stuck(Host):
        def handle_timer(self, now: float) -> None:
            pass

    net = Network()
    h = Stuck(A)
    h.deadline = 0.5
    net.add_host(h, [A], name="stuck")
    net.TIMER_STORM_LIMIT = 1000
    with pytest.raises(SimulationError, match="timer storm.*stuck"):
        net.run(until=1.0)
    assert net.now == 0.5


# ----------------------------------------------------------------------------- whole stacks

class BulkStack(StackHost):
    """A SimHost: a whole StackCore (tcpstack/host/stack.py: real IP/TCP packets, checksums,
    demultiplexing) that, once connected, keeps ``backlog`` bytes queued for sending --
    or, as a server, counts the bytes it receives."""

    def __init__(self, addr: str, cc: str = "cubic", seed: int = 0,
                 backlog: int = 256 * 1024, **tcp: object) -> None:
        import random

        from tcpstack.tcp.config import TCPConfig
        from tcpstack.host.stack import StackConfig, StackCore
        super().__init__(StackCore([addr], config=StackConfig(
            tcp=TCPConfig(congestion_control=cc, **tcp)),  # type: ignore[arg-type]
            rng=random.Random(seed)))
        self.backlog = backlog
        self.chunk = bytes(backlog)
        self.ep = None
        self.got = 0

    def open(self, peer: str, now: float) -> None:
        self.ep = self.core.connect(peer, 80, now)

    def react(self) -> None:
        from tcpstack.host.endpoint import Data
        for lst in self.core.pop_ready_listeners():
            while lst.accept() is not None:
                pass
        for ep in self.core.pop_ready():
            while (ev := ep.next_event()) is not None:
                if isinstance(ev, Data):
                    self.got += len(ev.data)

    def packets_to_send(self) -> list[bytes]:
        ep = self.ep
        if ep is not None and ep.established:
            room = self.backlog - ep.write_buffer_size
            if room > self.backlog // 2:
                ep.send(self.chunk[:room], self.core.now)
        return self.core.packets_to_send()


def stack_fairness_network(cc: str = "cubic", starts=(0.0, 1.0), rtt: float = 0.040,
                           rate_bps: float = BOTTLENECK_BPS, queue_bdp: float = 1.0,
                           seed: int = 3, receiver_tcp: dict | None = None):
    """net_factory for run_fairness: bulk transfers between whole stacks (one StackCore
    per host, real packets) whose paths share one drop-tail bottleneck."""
    import ipaddress

    def factory():
        net = Network(seed=seed)
        bn = net.add_bottleneck(rate_bps, int(queue_bdp * rate_bps / 8 * rtt), name="bn")
        counters = []
        for i, start in enumerate(starts):
            sa, ra = f"10.1.{i}.1", f"10.2.{i}.1"
            snd = BulkStack(sa, cc, seed + 2 * i)
            rcv = BulkStack(ra, cc, seed + 2 * i + 1, **(receiver_tcp or {}))
            rcv.core.listen(80, ra)
            ns = net.add_host(snd, [ipaddress.ip_address(sa).packed], name=f"s{i}")
            nr = net.add_host(rcv, [ipaddress.ip_address(ra).packed], name=f"r{i}")
            net.connect(ns, nr, LinkConfig(delay=rtt / 2, jitter=0.002),
                        LinkConfig(delay=rtt / 2), bottleneck=bn)
            net.call_at(start, lambda now, s=snd, peer=ra: s.open(peer, now))
            counters.append(lambda r=rcv: r.got)
        return net, counters
    return factory


def test_cubic_fairness_whole_stacks():
    # Two CUBIC connections between four whole stacks share a 10 Mbit/s bottleneck with a
    # 1-BDP drop-tail queue (40 ms RTT); the second starts 1 s later.
    # Seeds 1-6 give Jain 0.992-0.998 over 30 s (and 0.98-0.999 over 20 s: drop-tail phase
    # effects make a 20 s window noisy), utilization 0.965 of the wire rate in TCP payload
    # (1448/1500 bytes is 0.965: the link itself is full).
    res = run_fairness(stack_fairness_network(), duration=30.0, warmup=5.0,
                       bottleneck_bps=BOTTLENECK_BPS, sample_interval=10.0)
    assert res.jain_index > 0.98, res
    assert res.utilization is not None and res.utilization > 0.95, res
    for window in res.samples:
        assert min(window) > BOTTLENECK_BPS / 3, res.samples


def test_hystart_plus_plus_avoids_the_slow_start_overshoot(monkeypatch):
    # One CUBIC transfer between whole stacks, 10 Mbit/s, 100 ms RTT, a 2-BDP drop-tail
    # queue, 5 s.  Classic slow start doubles cwnd until the queue overflows and loses a
    # window's worth (776 drops); HyStart++ (RFC 9406) sees the queue in the RTT, leaves
    # slow start for CSS and then congestion avoidance before that (178 drops, the later
    # ones from CUBIC's convex probing), and moves more data.
    import functools

    from tcpstack.tcp import congestion

    def transfer(hystart: bool) -> tuple[int, int]:
        monkeypatch.setitem(congestion.ALGORITHMS, "cubic",
                            functools.partial(congestion.Cubic, hystart=hystart))
        # The receiver's window must not be what ends slow start, or this compares receive
        # windows, not slow-start algorithms: a fixed 4 MB buffer (auto-tuning would grow
        # it only 2x per RTT behind the delivered rate and so cap the classic overshoot too).
        net, counters = stack_fairness_network(
            starts=(0.0,), rtt=0.100, queue_bdp=2.0,
            receiver_tcp=dict(recv_buffer=4 << 20, rcvbuf_autotune=False))()
        net.run(until=5.0)
        return net.bottlenecks[0].stats.dropped_queue, counters[0]()

    drops_hs, bytes_hs = transfer(True)
    drops_classic, bytes_classic = transfer(False)
    assert drops_hs * 3 < drops_classic, (drops_hs, drops_classic)
    assert bytes_hs > bytes_classic, (bytes_hs, bytes_classic)
