"""The one impairment model (tcpstack/impairment.py): its checks, its decision core, and that
the simulator, the userspace ImpairedLink and the two-TCB harness, given the same seeded
Impairment and the same packets, make the same decisions."""
from __future__ import annotations

import heapq
import random
from typing import Callable

import pytest

from tcpstack.impairment import (GilbertElliott, Impairer, Impairment, ImpairmentError,
                                 flip_bit)
from tcpstack.sim import Network
from tcpstack.wire.segment import ACK, TCPSegment
from tun.impaired import ImpairedLink

from .harness import Harness

A, B = bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2])


def packet(i: int, size: int) -> bytes:
    """A minimal IPv4-looking packet A -> B (the simulator routes on the destination)."""
    head = bytes([0x45]) + bytes(11) + A + B
    return head + i.to_bytes(4, "big") + bytes(size - 24)


def schedule(n: int = 400, seed: int = 99) -> list[tuple[float, bytes]]:
    """(send time, packet): bursts that fill the queue, gaps that drain it, mixed sizes."""
    r = random.Random(seed)
    t, out = 0.0, []
    for i in range(n):
        t += r.choice([0.0, 0.0, 0.0005, 0.002, 0.02])
        out.append((t, packet(i, r.choice([40, 60, 576, 1500]))))
    return out


EVERYTHING = Impairment(delay=0.010, jitter=0.003, rate_bps=2e6, queue_bytes=6000, loss=0.05,
                        burst_loss=GilbertElliott(p=0.03, r=0.3), duplicate=0.1, corrupt=0.1,
                        reorder=0.15, reorder_delay=0.004)


# --- the model ---------------------------------------------------------------------------

@pytest.mark.parametrize("kw", [dict(loss=1.5), dict(duplicate=-0.1), dict(delay=-1.0),
                                dict(rate_bps=0), dict(queue_bytes=-1), dict(reorder_delay=-0.1)])
def test_impossible_impairments_are_refused(kw):
    with pytest.raises(ImpairmentError):
        Impairment(**kw)
    with pytest.raises(ValueError):                  # also a ValueError
        Impairment(**kw)


def test_gilbert_elliott_probabilities_are_checked():
    with pytest.raises(ImpairmentError, match="GilbertElliott.r"):
        GilbertElliott(p=0.1, r=2.0)


def test_default_is_a_perfect_wire():
    imp = Impairment()
    assert imp.passthrough
    core = Impairer(imp, random.Random(1))
    assert core.admit(3.0, 1500) == 3.0
    assert core.decide(1500, 3.0) == [(3.0, -1, False)]
    assert not Impairment(reorder=0.1).passthrough


@pytest.mark.parametrize("bad", [(0, 0), (10, 11), (10, -1), (10.0, 1)])
def test_counted_bursts_are_checked(bad):
    with pytest.raises(ImpairmentError, match="burst_every"):
        Impairment(burst_every=bad)


def test_counted_bursts_drop_the_last_of_every_n_packets_from_a_random_phase():
    """burst_every=(EVERY, BURST), nft's `numgen inc mod EVERY >= EVERY - BURST drop`: the
    same BURST packets in a row of every EVERY, whatever their size or time; the count
    starts at a phase drawn from the Impairer's random source."""
    imp = Impairment(burst_every=(20, 3))
    assert not imp.passthrough and Impairment(burst_every=(20, 0)).passthrough
    core = Impairer(imp, random.Random(7))
    phase = random.Random(7).randrange(20)
    lost = [i for i in range(100) if core.decide(1500 if i % 2 else 40, i * 0.001) == []]
    want = [i for i in range(100) if (phase + i) % 20 >= 17]
    assert lost == want and len(lost) == 15


def test_netem_style_reorder_skips_the_delay():
    core = Impairer(Impairment(delay=0.030, reorder=1.0, reorder_delay=None), random.Random(1))
    assert core.decide(100, 1.0) == [(1.0, -1, True)]
    core = Impairer(Impairment(delay=0.030, reorder=1.0), random.Random(1))
    [(t, _, r)] = core.decide(100, 1.0)
    assert r and t == pytest.approx(1.035)


def test_flip_bit():
    assert flip_bit(b"\x00\x00", 0) == b"\x01\x00"
    assert flip_bit(b"\x00\x00", 15) == b"\x00\x80"


# --- one model, three drivers --------------------------------------------------------------

class _Recorder:
    def __init__(self) -> None:
        self.out: list[bytes] = []
        self.received: list[tuple[float, bytes]] = []

    def receive_packet(self, p: bytes, now: float) -> None:
        self.received.append((now, p))

    def packets_to_send(self) -> list[bytes]:
        out, self.out = self.out, []
        return out

    def next_timer(self) -> float | None:
        return None

    def handle_timer(self, now: float) -> None:
        pass


def run_simulator(imp: Impairment, seed: int, sched: list[tuple[float, bytes]]):
    net = Network(seed=seed)
    ha, hb = _Recorder(), _Recorder()
    a, b = net.add_host(ha, [A]), net.add_host(hb, [B])
    link = net.connect(a, b, imp, Impairment())
    for t, p in sched:
        net.call_at(t, lambda now, p=p: ha.out.append(p))
    net.run(max_time=1e6)
    return hb.received, link.stats(0)


class _VirtualLoop:
    """Just enough of an event loop for ImpairedLink (time, call_at), on a virtual clock."""

    class _Handle:
        def __init__(self, when: float, fn: Callable[[], None]) -> None:
            self._when, self.fn, self.cancelled = when, fn, False

        def when(self) -> float:
            return self._when

        def cancel(self) -> None:
            self.cancelled = True

    def __init__(self) -> None:
        self.now = 0.0
        self._timers: list[tuple[float, int, _VirtualLoop._Handle]] = []
        self._n = 0

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, fn: Callable[[], None]) -> "_VirtualLoop._Handle":
        h = self._Handle(when, fn)
        self._n += 1
        heapq.heappush(self._timers, (when, self._n, h))
        return h

    def advance(self, until: float) -> None:
        while self._timers and self._timers[0][0] <= until:
            when, _, h = heapq.heappop(self._timers)
            if not h.cancelled:
                self.now = max(self.now, when)
                h.fn()
        self.now = max(self.now, until)


class _Sink:
    def __init__(self, loop: _VirtualLoop) -> None:
        self.loop = loop
        self.sent: list[tuple[float, bytes]] = []

    def start(self, on_packets: Callable[[list[bytes]], None]) -> None:
        pass

    def send(self, p: bytes) -> None:
        self.sent.append((self.loop.time(), p))

    def close(self) -> None:
        pass


def run_impaired_link(imp: Impairment, seed: int, sched: list[tuple[float, bytes]]):
    loop = _VirtualLoop()
    sink = _Sink(loop)
    link = ImpairedLink(sink, egress=imp, seed=seed, loop=loop)  # type: ignore[arg-type]
    link.start(lambda ps: None)
    for t, p in sched:
        loop.advance(t)
        link.send(p)
    loop.advance(float("inf"))
    return sink.sent, link.stats()["egress"]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_simulator_and_impaired_link_make_the_same_decisions(seed):
    """Same seed, same Impairment, same packets at the same times: the simulator's link and
    ImpairedLink (on a virtual loop) drop, duplicate, corrupt, delay and reorder the same
    packets, delivering the same bytes at the same instants in the same order."""
    sched = schedule()
    sim_got, sim_st = run_simulator(EVERYTHING, seed, sched)
    link_got, link_st = run_impaired_link(EVERYTHING, seed, sched)
    assert sim_got == link_got
    assert (sim_st.sent, sim_st.dropped_loss, sim_st.dropped_queue, sim_st.duplicated,
            sim_st.corrupted, sim_st.reordered) == \
        (link_st["packets"], link_st["lost"], link_st["queue_drops"], link_st["duplicated"],
         link_st["corrupted"], link_st["reordered"])
    # every kind of decision was exercised
    assert min(sim_st.dropped_loss, sim_st.dropped_queue, sim_st.duplicated, sim_st.corrupted,
               sim_st.reordered) > 0
    arrivals = [t for t, _ in sim_got]
    assert arrivals == sorted(arrivals)
    seqs = [int.from_bytes(p[20:24], "big") for _, p in sim_got]
    assert seqs != sorted(seqs)                       # reordered on the way
    # a different seed decides differently
    assert run_simulator(EVERYTHING, seed + 100, sched)[0] != sim_got


def test_harness_makes_the_same_decisions_as_the_simulator():
    """The harness carries segments, not bytes (a segment counts as payload + 52 bytes):
    without corruption, the same seed gives the same deliveries at the same times."""
    import dataclasses
    imp = dataclasses.replace(EVERYTHING, corrupt=0.0)
    sched = [(t, p) for t, p in schedule() if len(p) > 52]
    sim_got, _ = run_simulator(imp, 5, sched)
    h = Harness(link=imp, reverse=Impairment(), seed=5)
    by_seq = {}
    for t, p in sched:
        i = int.from_bytes(p[20:24], "big")
        seg = TCPSegment(40000, 80, i, 0, ACK, 1000, bytes(len(p) - 52))
        by_seq[id(seg)] = i
        h.now = t
        h._transmit("a>b", seg)
    got = sorted((t, c, by_seq[id(s)]) for t, c, d, s in h._queue)
    want = [(t, int.from_bytes(p[20:24], "big")) for t, p in sim_got]
    assert [(t, i) for t, _, i in got] == want
