"""TCB loss handling: RFC 6298 retransmission timer (backoff, Karn), connection timeout,
fast retransmit (RFC 5681), NewReno (RFC 6582), SACK recovery (RFC 6675), receiver-side
reassembly with SACK blocks (RFC 2018), and a lossy bulk transfer."""
from __future__ import annotations

import random

import pytest

from tcpstack.impairment import Impairment
from tcpstack.tcp.config import TCPConfig
from tcpstack.tcp.connection import TCPState
from tcpstack.errors import ConnectionTimeoutError
from tcpstack.wire.segment import ACK, TCPSegment

from .harness import PORT_A, PORT_B, Harness

S = TCPState
MSS = 1448


def _data(d: str, s: TCPSegment) -> bool:
    return d == "a>b" and len(s.payload) > 0


def drop_data_after(t_from: float, until: float = 1e9):
    box: dict = {}

    def hook(d, s):
        h = box["h"]
        if _data(d, s) and t_from <= h.now < until:
            return []
        return None
    return box, hook


# The RFC 6298 timer tests below run without RACK-TLP: a tail loss probe (RFC 8985 7) would
# go out before each RTO (tests/tcpstack/test_connection_recovery.py covers that sequence).

def test_rto_backoff_doubles_and_karn_ignores_retransmitted_sample():
    cfg = TCPConfig(rto_min=1.0, timestamps=False, rack=False)
    box, hook = drop_data_after(0.0, until=6.5)
    h = Harness(cfg, TCPConfig(timestamps=False), hook=hook)
    box["h"] = h
    h.established()
    srtt = h.a.stats.srtt
    assert h.a.rto == 1.0
    t0 = h.now
    h.write("a", b"x" * 100)
    h.run(until=t0 + 20)
    sends = [t - t0 for t, d, s, _ in h.trace if _data(d, s)]
    # Original, then RTO at +1, +2 (3), +4 (7): the one at +7 gets through.
    assert sends == pytest.approx([0.0, 1.0, 3.0, 7.0])
    assert bytes(h.received["b"]) == b"x" * 100
    st = h.a.stats
    assert st.timeouts == 3 and st.retransmits == 3 and st.fast_retransmits == 0
    # Karn: the ACK of a retransmitted segment gives no sample; the backed-off RTO stays.
    assert st.srtt == srtt
    assert h.a.rto == 8.0
    # A fresh segment gives a sample and ends the backoff.
    h.write("a", b"y" * 10)
    h.run()
    assert h.a.rto == 1.0 and h.a.stats.srtt != srtt


def test_rto_is_capped_at_rto_max():
    cfg = TCPConfig(rto_min=1.0, rto_max=5.0, retries=6, rack=False)
    box, hook = drop_data_after(0.0)
    h = Harness(cfg, hook=hook)
    box["h"] = h
    h.established()
    t0 = h.now
    h.write("a", b"x")
    h.run()
    sends = [round(t - t0, 6) for t, d, s, _ in h.trace if _data(d, s)]
    assert sends == [0.0, 1.0, 3.0, 7.0, 12.0, 17.0, 22.0]


def test_connection_timeout_after_retries():
    cfg = TCPConfig(rto_min=1.0, retries=4, rack=False)
    box, hook = drop_data_after(0.0)
    h = Harness(cfg, hook=hook)
    box["h"] = h
    h.established()
    t0 = h.now
    h.write("a", b"data")
    h.run()
    assert h.a.is_terminated and h.a.state is S.CLOSED
    # 4 retransmissions (at 1, 3, 7, 15), then the 5th expiry (31) gives up.
    assert h.now - t0 == pytest.approx(31.0)
    assert h.a.stats.retransmits == 4
    (term,) = h.terminated("a")
    assert isinstance(term.error, ConnectionTimeoutError)


def test_user_timeout_limits_time_without_progress():
    cfg = TCPConfig(rto_min=1.0, retries=100, user_timeout=10.0)
    box, hook = drop_data_after(0.0)
    h = Harness(cfg, hook=hook)
    box["h"] = h
    h.established()
    t0 = h.now
    h.write("a", b"data")
    h.run()
    assert h.a.is_terminated
    assert h.now - t0 == pytest.approx(10.0)
    assert isinstance(h.terminated("a")[0].error, ConnectionTimeoutError)


def _drop_nth_data(ns: set[int], once: bool = True):
    """Drop the n-th (0-based) new data segment a->b (by sequence order of first sending)."""
    seen: dict[int, int] = {}
    dropped: set[int] = set()

    def hook(d, s):
        if not _data(d, s):
            return None
        if s.seq not in seen:
            seen[s.seq] = len(seen)
        idx = seen[s.seq]
        if idx in ns and (not once or idx not in dropped):
            dropped.add(idx)
            return []
        return None
    return hook, seen


@pytest.mark.parametrize("sack", [True, False])
def test_three_dupacks_trigger_exactly_one_fast_retransmit(sack):
    cfg = TCPConfig(sack=sack, rto_min=1.0)
    hook, seen = _drop_nth_data({1})
    h = Harness(cfg, TCPConfig(sack=sack), hook=hook)
    h.established()
    h.clear_trace()
    data = bytes(random.Random(3).getrandbits(8) for _ in range(8 * MSS))
    h.write("a", data)
    h.run()
    assert bytes(h.received["b"]) == data
    st = h.a.stats
    assert st.fast_retransmits == 1 and st.retransmits == 1 and st.timeouts == 0
    assert st.dupacks_in >= 3
    # The retransmission is the dropped segment, sent right after the third dupack arrived.
    lost_seq = [q for q, i in seen.items() if i == 1][0]
    data_segs = [(t, s) for t, d, s, _ in h.trace if _data(d, s)]
    rtx = [(t, s) for t, s in data_segs if s.seq == lost_seq]
    assert len(rtx) == 2
    acks = [(t, s) for t, d, s, _ in h.trace if d == "b>a" and s.ack == lost_seq]
    assert len(acks) >= 3
    assert rtx[1][0] == acks[2][0] + h.delay      # the 3rd duplicate ACK's arrival time
    if sack:
        assert acks[1][1].sack_blocks            # dupacks carry SACK blocks


def test_sack_recovery_retransmits_only_the_holes():
    cfg = TCPConfig(rto_min=1.0)
    hook, seen = _drop_nth_data({2, 5, 8, 9})
    h = Harness(cfg, TCPConfig(), hook=hook)
    h.established()
    h.clear_trace()
    data = bytes(range(256)) * (20 * MSS // 256 + 1)
    data = data[:20 * MSS]
    h.write("a", data)
    h.run()
    assert bytes(h.received["b"]) == data
    st = h.a.stats
    lost = sorted(q for q, i in seen.items() if i in {2, 5, 8, 9})
    first = {}
    rtx = []
    for t, d, s, _ in h.trace:
        if _data(d, s):
            if s.seq in first:
                rtx.append(s.seq)
            first.setdefault(s.seq, t)
    assert sorted(rtx) == lost
    assert st.timeouts == 0 and st.fast_retransmits == 1 and st.recoveries == 1
    assert st.retransmits == 4 and st.sack_retransmits == 3


def test_newreno_partial_acks_retransmit_each_hole_once():
    cfg = TCPConfig(rto_min=1.0, sack=False)
    hook, seen = _drop_nth_data({2, 5})
    h = Harness(cfg, TCPConfig(sack=False), hook=hook)
    h.established()
    h.clear_trace()
    data = b"z" * (12 * MSS)
    h.write("a", data)
    h.run()
    assert bytes(h.received["b"]) == data
    st = h.a.stats
    assert st.timeouts == 0 and st.fast_retransmits == 1 and st.retransmits == 2
    assert st.recoveries == 1


def test_receiver_reassembles_out_of_order_and_advertises_sack_blocks():
    h = Harness()
    h.established()
    a = h.a
    base = a.snd_nxt
    ts = a._ts(h.now)

    def data(off, n):
        return TCPSegment(PORT_A, PORT_B, (base + off) & 0xFFFFFFFF, a.rcv_nxt & 0xFFFFFFFF,
                          ACK, 1000, bytes([65 + off // 100]) * n, tsval=ts, tsecr=0)
    b_ack = base & 0xFFFFFFFF
    out = h.inject("b", data(100, 100))              # hole [0, 100)
    assert [s.sack_blocks for s in out] == [((b_ack + 100, b_ack + 200),)]
    assert out[0].ack == b_ack
    out = h.inject("b", data(300, 100))
    assert out[0].sack_blocks == ((b_ack + 300, b_ack + 400), (b_ack + 100, b_ack + 200))
    out = h.inject("b", data(500, 100))
    assert out[0].sack_blocks == ((b_ack + 500, b_ack + 600), (b_ack + 300, b_ack + 400),
                                  (b_ack + 100, b_ack + 200))
    out = h.inject("b", data(700, 100))              # only 3 blocks fit with timestamps
    assert out[0].sack_blocks == ((b_ack + 700, b_ack + 800), (b_ack + 500, b_ack + 600),
                                  (b_ack + 300, b_ack + 400))
    out = h.inject("b", data(200, 100))              # joins [100,200) and [300,400)
    assert out[0].sack_blocks == ((b_ack + 100, b_ack + 400), (b_ack + 700, b_ack + 800),
                                  (b_ack + 500, b_ack + 600))
    assert bytes(h.received["b"]) == b""
    out = h.inject("b", data(0, 100))                # fills the first hole: immediate ACK
    assert out[0].ack == b_ack + 400
    assert out[0].sack_blocks == ((b_ack + 700, b_ack + 800), (b_ack + 500, b_ack + 600))
    assert bytes(h.received["b"]) == b"A" * 100 + b"B" * 100 + b"C" * 100 + b"D" * 100
    assert h.b.stats.ooo_segments == 5
    # Overlapping retransmission covering everything.
    full = TCPSegment(PORT_A, PORT_B, base & 0xFFFFFFFF, a.rcv_nxt & 0xFFFFFFFF, ACK, 1000,
                      b"".join(bytes([65 + i]) * 100 for i in range(8)), tsval=ts, tsecr=0)
    out = h.inject("b", full)
    # Its first 400 octets were already delivered: reported once as a D-SACK block
    # (RFC 2883 4.1.1); nothing is out of order any more.
    assert out[0].ack == b_ack + 800 and out[0].sack_blocks == ((b_ack, b_ack + 400),)
    assert h.b.stats.dsacks_out == 1
    assert bytes(h.received["b"]) == b"".join(bytes([65 + i]) * 100 for i in range(8))


def test_ooo_queue_entry_bound():
    h = Harness(cfg_b=TCPConfig(max_ooo_segments=2))
    h.established()
    a = h.a
    base = a.snd_nxt
    ts = a._ts(h.now)
    for off in (100, 300, 500):
        h.inject("b", TCPSegment(PORT_A, PORT_B, (base + off) & 0xFFFFFFFF,
                                 a.rcv_nxt & 0xFFFFFFFF, ACK, 1000, b"q" * 100, tsval=ts))
    assert h.b._ooo.blocks() == [(base + 100, base + 200), (base + 300, base + 400)]


@pytest.mark.parametrize("sack,seed", [(True, 7), (False, 11)])
def test_bulk_transfer_with_loss_and_reordering_delivers_identical_bytes(sack, seed):
    n = 5 * 1024 * 1024 if sack else 1024 * 1024
    data = random.Random(seed).randbytes(n)
    cfg = TCPConfig(sack=sack)
    h = Harness(cfg, TCPConfig(sack=sack),
                link=Impairment(loss=0.05, reorder=0.05, reorder_delay=0.01, duplicate=0.01,
                                delay=0.005, rate_bps=8 * 50e6, queue_bytes=None), seed=seed)
    h.established()
    h.write("a", data)
    h.shutdown("a")
    h.run(stop=lambda: h.eof["b"])
    assert h.eof["b"]
    assert len(h.received["b"]) == n
    assert bytes(h.received["b"]) == data
    st = h.a.stats
    assert st.retransmits > 0 and st.fast_retransmits > 0


@pytest.mark.parametrize("seed", range(12))
def test_random_network_bidirectional_transfer_and_close(seed):
    """Random options, buffers, ISNs across 2**32, loss up to 20%, reordering, duplication,
    a paused reader: both byte streams arrive intact and both sides close cleanly."""
    from tcpstack.tcp.connection import TCPState
    r = random.Random(seed)
    sack, ts, ws, nd = (r.random() < 0.5, r.random() < 0.7, r.random() < 0.7,
                        r.random() < 0.5)

    def cfg():
        return TCPConfig(sack=sack, timestamps=ts, window_scaling=ws, nodelay=nd,
                         recv_buffer=r.choice([8192, 65535, 1 << 20]),
                         send_buffer=r.choice([10000, 1 << 20]))
    h = Harness(cfg(), cfg(),
                link=Impairment(loss=r.choice([0, 0.02, 0.1, 0.2]),
                                reorder=r.choice([0, 0.1, 0.3]), reorder_delay=0.02,
                                duplicate=r.choice([0, 0.05]), delay=r.choice([0.001, 0.02])),
                seed=seed, iss_a=r.getrandbits(32), iss_b=r.getrandbits(32),
                ts_offset_a=r.getrandbits(32), ts_offset_b=r.getrandbits(32))
    da = r.randbytes(r.randint(0, 150000))
    db = r.randbytes(r.randint(0, 50000))
    h.connect()
    h.write("a", da)
    h.run(stop=lambda: h.b is not None and h.b.state is TCPState.ESTABLISHED)
    h.write("b", db)
    paused = r.random() < 0.3
    if paused:
        h.b.pause_reading()
    h.shutdown("a")
    h.shutdown("b")
    h.run(until=h.now + 5)
    if paused:
        h.b.resume_reading()
        h.flush("b")
    h.run(until=h.now + 3000)
    assert bytes(h.received["b"]) == da and bytes(h.received["a"]) == db
    assert h.a.is_terminated and h.b.is_terminated
    assert [e.error for e in h.terminated("a") + h.terminated("b")] == [None, None]
