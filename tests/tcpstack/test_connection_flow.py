"""TCB flow control and timers: zero window / persist probes / window update, receiver SWS
avoidance and non-shrinking window, delayed ACKs, Nagle vs nodelay, keepalive."""
from __future__ import annotations

import pytest

from tcpstack.tcp.config import TCPConfig
from tcpstack.tcp.connection import TCPState
from tcpstack.errors import ConnectionTimeoutError
from tcpstack.tcp.events import DataReceived
from tcpstack.wire.segment import ACK, PSH

from .harness import Harness

S = TCPState
MSS = 1448


def _established(**kw) -> Harness:
    h = Harness(**kw)
    h.established()
    h.clear_trace()
    return h


def test_zero_window_persist_probes_then_window_update():
    cfg_b = TCPConfig(recv_buffer=16 * 1024, window_scaling=False)
    h = _established(cfg_a=TCPConfig(rto_min=1.0), cfg_b=cfg_b)
    h.b.pause_reading()
    data = bytes(range(256)) * 160                     # 40 KiB
    h.write("a", data)
    h.run_for(0.5)
    assert len(h.received["b"]) == 0
    assert h.b._rbuf_len == 16 * 1024
    assert h.a.snd_wnd == 0 and h.a._persisting
    last_ack = [s for s in h.sent("b>a")][-1]
    assert last_ack.window == 0
    t_zero = h.now
    h.run_for(20)
    probes = [(t, s) for t, d, s, _ in h.trace if d == "a>b" and t > t_zero]
    assert all(len(s.payload) == 1 for _, s in probes)
    gaps = [round(b[0] - a[0], 6) for a, b in zip(probes, probes[1:])]
    assert gaps[:3] == [2.0, 4.0, 8.0]                # exponential backoff
    assert h.a.stats.zero_window_probes == len(probes)
    # Every probe was answered with a zero window: the connection is alive.
    assert h.a.state is S.ESTABLISHED and not h.a.is_terminated
    # The application reads: window update, transfer completes.
    h.b.resume_reading()
    h.flush("b")
    upd = h.sent("b>a")[-1]
    assert upd.window > 0
    h.run(stop=lambda: len(h.received["b"]) == len(data))
    assert bytes(h.received["b"]) == data
    assert not h.a._persisting


def test_lost_window_update_recovered_by_persist_probe():
    cfg_b = TCPConfig(recv_buffer=8192, window_scaling=False)
    drop = {"on": False}

    def hook(d, s):
        if drop["on"] and d == "b>a" and s.window > 0:
            drop["on"] = False
            return []
        return None
    h = _established(cfg_a=TCPConfig(rto_min=1.0), cfg_b=cfg_b, hook=hook)
    h.b.pause_reading()
    data = b"w" * 20000
    h.write("a", data)
    h.run_for(0.5)
    assert h.a.snd_wnd == 0
    drop["on"] = True
    h.b.resume_reading()
    h.flush("b")                                      # this window update is lost
    assert not drop["on"]
    h.run(stop=lambda: len(h.received["b"]) == len(data))
    assert bytes(h.received["b"]) == data


def test_advertised_window_never_shrinks_and_sws_avoidance():
    cfg_b = TCPConfig(recv_buffer=10 * MSS, window_scaling=False, delayed_ack=False)
    h = _established(cfg_b=cfg_b)
    b = h.b
    b.pause_reading()
    edges = []
    for i in range(12):
        h.write("a", b"p" * 100)
        h.run_for(0.05)
    for t, d, s, _ in h.trace:
        if d == "b>a":
            edges.append(s.ack + s.window)
    assert edges == sorted(edges)                     # right edge never moves left
    # With 1200 octets held, SWS avoidance keeps the edge fixed until it may move by a MSS.
    assert len(set(edges)) == 1


def test_delayed_ack_timer_and_every_second_segment():
    h = _established(cfg_a=TCPConfig(nodelay=True))
    t0 = h.now
    h.write("a", b"x" * 100)
    h.run_for(0.2)
    acks = [(round(t - t0, 6), s) for t, d, s, _ in h.trace if d == "b>a"]
    # Data arrives at +10 ms, the ACK leaves 40 ms later.
    assert [t for t, _ in acks] == [0.05]
    assert acks[0][1].ack == (h.a.snd_nxt & 0xFFFFFFFF)
    h.clear_trace()
    t0 = h.now
    h.write("a", b"y" * (2 * MSS))
    h.run_for(0.2)
    acks = [round(t - t0, 6) for t, d, s, _ in h.trace if d == "b>a"]
    assert acks == [0.01]                              # two full segments: ACK at once


def test_delayed_ack_disabled_acks_every_segment():
    h = _established(cfg_a=TCPConfig(nodelay=True), cfg_b=TCPConfig(delayed_ack=False))
    t0 = h.now
    h.write("a", b"x" * 100)
    h.run_for(0.2)
    acks = [round(t - t0, 6) for t, d, s, _ in h.trace if d == "b>a"]
    assert acks == [0.01]


def test_nagle_coalesces_small_writes():
    h = _established()
    for c in b"abcde":
        h.write("a", bytes([c]) * 10)
    segs = h.sent("a>b")
    assert [bytes(s.payload) for s in segs] == [b"a" * 10]   # the rest waits for the ACK
    h.run()
    payloads = [bytes(s.payload) for s in h.sent("a>b") if s.payload]
    assert payloads == [b"a" * 10, b"b" * 10 + b"c" * 10 + b"d" * 10 + b"e" * 10]
    assert bytes(h.received["b"]) == b"a" * 10 + b"b" * 10 + b"c" * 10 + b"d" * 10 + b"e" * 10


def test_nodelay_sends_each_write_at_once():
    h = _established(cfg_a=TCPConfig(nodelay=True))
    for c in b"abcde":
        h.write("a", bytes([c]) * 10)
    segs = h.sent("a>b")
    assert [bytes(s.payload) for s in segs] == [bytes([c]) * 10 for c in b"abcde"]
    assert all(s.flags == ACK | PSH for s in segs)


def test_nagle_still_sends_full_segments():
    h = _established()
    h.write("a", b"a" * 10)
    h.write("a", b"b" * (MSS + 10))
    segs = h.sent("a>b")
    assert [len(s.payload) for s in segs] == [10, MSS]


def test_keepalive_kills_dead_peer():
    cfg = TCPConfig(keepalive=True, keepalive_idle=10.0, keepalive_interval=2.0,
                    keepalive_count=3)
    dead = {"on": False}
    h = _established(cfg_a=cfg, hook=lambda d, s: [] if dead["on"] and d == "b>a" else None)
    t0 = h.now
    # While the peer answers, probes keep the connection alive.
    h.run(until=t0 + 25)
    probes = [round(t - t0, 6) for t, d, s, _ in h.trace if d == "a>b"]
    # Idle is counted from the last segment received (the SYN-ACK, 10 ms before t0).
    assert probes == [9.99, 20.01]
    assert all(s.seq == (h.a.snd_nxt - 1) & 0xFFFFFFFF and not s.payload for s in h.sent("a>b"))
    dead["on"] = True
    h.clear_trace()
    t1 = h.now
    h.run()
    probes = [round(t - t1, 6) for t, d, s, _ in h.trace if d == "a>b"]
    # Next probe 10 s after the last answer (probe at t0+20.01 answered 20 ms later), then every 2 s; gives up
    # 2 s after the 3rd unanswered probe.
    assert probes == pytest.approx([5.03, 7.03, 9.03])
    assert h.a.is_terminated and h.now - t1 == pytest.approx(11.03)
    assert isinstance(h.terminated("a")[0].error, ConnectionTimeoutError)
    assert h.a.stats.keepalive_probes == 5


def test_pause_reading_buffers_and_resume_delivers():
    h = _established()
    h.b.pause_reading()
    h.write("a", b"hello")
    h.run()
    assert not [e for e in h.events["b"] if isinstance(e, DataReceived)]
    h.b.resume_reading()
    h._drain("b")
    assert bytes(h.received["b"]) == b"hello"


def test_send_buffer_limits_accepted_bytes():
    # a fixed send buffer (sndbuf_autotune=False, what SO_SNDBUF sets)
    h = _established(cfg_a=TCPConfig(send_buffer=10000, sndbuf_autotune=False))
    assert h.a.send(b"x" * 25000) == 10000
    assert h.a.send_buffer_free == 0 and h.a.send_buffer_used == 10000
    h.flush("a")
    h.run()
    assert h.a.send_buffer_free == 10000 and h.a.send_buffer_used == 0


def test_send_buffer_grows_to_twice_the_window_up_to_its_maximum():
    """Send-buffer auto-tuning (Linux tcp_sndbuf_expand): the buffer starts at send_buffer
    and follows 2 x cwnd as ACKs come, never past send_buffer_max, never shrinking; a
    SO_SNDBUF-style reconfigure fixes it."""
    h = _established(cfg_a=TCPConfig(send_buffer=10000, send_buffer_max=100_000))
    assert h.a.send(b"x" * 25000) == 10000
    h.flush("a")
    h.run()
    cwnd = h.a.cc.cwnd
    assert 2 * cwnd > 10000
    assert h.a.send_buffer_free == min(2 * cwnd, 100_000)
    # A long transfer: cwnd grows past half the maximum; the buffer stops at it.
    data = b"y" * 400_000
    sent = 0
    while sent < len(data):
        sent += h.a.send(data[sent:])
        h.flush("a")
        h.run()
        assert h.a.send_buffer_free + h.a.send_buffer_used <= 100_000
    assert bytes(h.received["b"]).endswith(data) and h.a.cc.cwnd > 50_000
    assert h.a.send_buffer_free == 100_000
    # SO_SNDBUF: fixed from now on, whatever cwnd does.
    h.a.reconfigure(h.now, send_buffer=20000)
    assert h.a.send_buffer_free == 20000
    h.a.send(b"z" * 20000)
    h.flush("a")
    h.run()
    assert h.a.send_buffer_free == 20000


def test_the_send_buffer_is_never_what_limits_a_long_fat_path(monkeypatch):
    """50 ms round trip, 200 Mbit/s and a deep queue (a BDP of 1.25 MB, above the initial
    1 MB send buffer): on the simulator the window is never short of queued data for lack
    of buffer -- the transfer is as fast as with a buffer fixed at 4 MB from the start, and
    faster than with the initial 1 MB fixed."""
    from bench import sim_loss
    monkeypatch.setitem(sim_loss.SCENARIOS, "fat", (
        "50 ms, deep queue", lambda: sim_loss._path(delay=0.025, queue_bytes=4 << 20)))
    for cc in ("cubic", "bbr"):
        auto = sim_loss.run("fat", 10_000_000, 1, tcp=TCPConfig(congestion_control=cc))
        fixed = sim_loss.run("fat", 10_000_000, 1, tcp=TCPConfig(
            congestion_control=cc, send_buffer=4 << 20, sndbuf_autotune=False))
        small = sim_loss.run("fat", 10_000_000, 1, tcp=TCPConfig(
            congestion_control=cc, send_buffer=1 << 20, sndbuf_autotune=False))
        assert auto.ok and fixed.ok and small.ok
        assert auto.seconds <= fixed.seconds * 1.01, cc
        assert small.seconds > auto.seconds * 1.05, cc


def test_path_mtu_lowers_segment_size():
    h = _established()
    h.a.set_path_mtu(1000)
    assert h.a.snd_mss == 1000 - 40 - 12
    h.write("a", b"m" * 5000)
    h.run()
    assert max(len(s.payload) for s in h.sent("a>b")) == 948
    assert bytes(h.received["b"]) == b"m" * 5000
