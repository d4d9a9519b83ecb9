"""Property tests of the TCB's parts: reassembly queue, SACK scoreboard, RTT estimator,
sequence arithmetic."""
from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from tcpstack.tcp.reassembly import ReassemblyQueue
from tcpstack.tcp.rtt import RTTEstimator
from tcpstack.tcp.sack import SackScoreboard
from tcpstack.wire.seqnum import seq_diff, seq_lt, unwrap

BASE = (1 << 32) - 500        # exercise unwrapped values across 2**32


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3000), st.integers(1, 400)), min_size=1, max_size=40))
def test_reassembly_delivers_exact_stream(pieces):
    stream = bytes((i * 7 + 3) & 0xFF for i in range(3400))
    q = ReassemblyQueue(10_000)
    rcv_nxt = BASE
    out = bytearray()
    for off, n in pieces + [(0, 3400)]:
        start = BASE + off
        data = stream[off:off + n]
        if start + len(data) <= rcv_nxt:
            continue
        if start < rcv_nxt:                       # the connection trims below RCV.NXT
            data = data[rcv_nxt - start:]
            start = rcv_nxt
        q.add(start, data)
        chunks, rcv_nxt = q.pop_ready(rcv_nxt)
        out += b"".join(chunks)
        # Invariants: sorted, disjoint, non-adjacent, byte count consistent.
        blocks = q.blocks()
        assert all(a[1] < b[0] for a, b in zip(blocks, blocks[1:]))
        assert q.nbytes == sum(e - s for s, e in blocks)
        assert all(s > rcv_nxt for s, _ in blocks)
    assert bytes(out) == stream
    assert not q and q.nbytes == 0 and q.nchunks == 0


def test_reassembly_sack_order_most_recent_first():
    q = ReassemblyQueue()
    q.add(100, b"a" * 10)
    q.add(200, b"b" * 10)
    q.add(300, b"c" * 10)
    assert q.sack_blocks(4) == [(300, 310), (200, 210), (100, 110)]
    q.add(110, b"x" * 90)                          # merges 100..210
    assert q.sack_blocks(4) == [(100, 210), (300, 310)]
    assert q.add(150, b"y" * 10) == 0              # duplicate
    assert q.sack_blocks(1) == [(100, 210)]


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5000), st.integers(1, 600)), max_size=30),
       st.integers(0, 5000))
def test_scoreboard_matches_bitmap(blocks, advance):
    una, nxt = BASE, BASE + 5000
    sb = SackScoreboard()
    bitmap = [False] * 5000
    total_new = 0
    for s, n in blocks:
        total_new += sb.update([(BASE + s, BASE + s + n)], una, nxt)
        for i in range(s, min(s + n, 5000)):
            bitmap[i] = True
    assert sb.sacked == sum(bitmap) == total_new
    for probe in range(0, 5000, 97):
        assert sb.is_sacked(BASE + probe) == bitmap[probe]
        hi = min(probe + 700, 5000)
        assert sb.hole_bytes(BASE + probe, BASE + hi) == sum(not b for b in bitmap[probe:hi])
        h = sb.next_hole(BASE + probe, BASE + hi)
        holes = [i for i in range(probe, hi) if not bitmap[i]]
        if not holes:
            assert h is None
        else:
            a = holes[0]
            e = a
            while e < hi and not bitmap[e]:
                e += 1
            assert h == (BASE + a, BASE + e)
    sb.advance(BASE + advance)
    assert sb.sacked == sum(bitmap[advance:])


def test_scoreboard_is_lost_rule():
    mss = 1000
    sb = SackScoreboard()
    sb.update([(2000, 4000)], 0, 10000)            # 2 segments SACKed above the hole
    assert sb.lost_boundary(3, mss) is None
    sb.update([(5000, 5500)], 0, 10000)            # 2.5 segments: > 2*SMSS octets
    assert sb.lost_boundary(3, mss) == 2000
    sb2 = SackScoreboard()
    sb2.update([(2000, 2100), (3000, 3100), (4000, 4100)], 0, 10000)   # 3 discontiguous
    assert sb2.lost_boundary(3, mss) == 2000
    sb.update([(100, 50000)], 0, 10000)            # clipped to SND.MAX
    assert sb.highest == 10000


def test_rtt_estimator_rfc6298():
    r = RTTEstimator(1.0, 0.2, 60.0)
    assert r.rto == 1.0
    r.sample(0.1)
    assert r.srtt == 0.1 and r.rttvar == 0.05 and r.rto == pytest.approx(0.3)
    r.sample(0.2)
    assert r.rttvar == pytest.approx(0.75 * 0.05 + 0.25 * 0.1)
    assert r.srtt == pytest.approx(0.875 * 0.1 + 0.125 * 0.2)
    base = r.rto
    r.back_off()
    r.back_off()
    assert r.rto == pytest.approx(4 * base)
    for _ in range(20):
        r.back_off()
    assert r.rto == 60.0
    r.sample(0.1)
    assert r.backoff == 0 and r.rto < 1.0


def test_seqnum_helpers():
    assert unwrap(5, (1 << 32) - 10) == (1 << 32) + 5
    assert unwrap((1 << 32) - 10, 5 + (1 << 32)) == (1 << 32) - 10
    assert seq_lt(0xFFFFFFF0, 5) and not seq_lt(5, 0xFFFFFFF0)
    assert seq_diff(5, 0xFFFFFFF0) == 21


def test_reassembly_block_grows_in_place_behind_a_hole():
    """Segments following a block (the usual arrivals behind a loss) extend it, one chunk
    each, most recent first for SACK; the entry bound still refuses them unless forced."""
    q = ReassemblyQueue(max_chunks=4)
    assert q.add(1000, b"a" * 10) == 10
    assert q.add(2000, b"z" * 10) == 10
    for k in range(1, 3):
        assert q.add(1000 + 10 * k, bytes([97 + k]) * 10) == 10
    assert q.blocks() == [(1000, 1030), (2000, 2010)]
    assert q.sack_blocks(4) == [(1000, 1030), (2000, 2010)]
    assert (q.nchunks, q.nbytes) == (4, 40)
    assert q.add(1030, b"d" * 10) == 0                   # the bound: 4 chunks held
    assert q.add(1030, b"d" * 10, force=True) == 10
    assert q.add(1040, b"e" * 10) == 0
    chunks, nxt = q.pop_ready(990)
    assert (chunks, nxt) == ([], 990)
    assert q.add(990, b"0" * 10, force=True) == 10
    chunks, nxt = q.pop_ready(990)
    assert b"".join(chunks) == b"0" * 10 + b"a" * 10 + b"b" * 10 + b"c" * 10 + b"d" * 10
    assert nxt == 1040 and q.blocks() == [(2000, 2010)] and (q.nchunks, q.nbytes) == (1, 10)


def test_scoreboard_blocks_already_held_add_nothing():
    sb = SackScoreboard()
    una, nxt = BASE, BASE + 10_000
    new: list[tuple[int, int]] = []
    assert sb.update([(BASE + 100, BASE + 300), (BASE + 500, BASE + 600)], una, nxt, new) == 300
    assert new == [(BASE + 100, BASE + 300), (BASE + 500, BASE + 600)]
    new.clear()
    # The usual ACK during recovery: the first block grew, the others are repeats.
    assert sb.update([(BASE + 100, BASE + 400), (BASE + 500, BASE + 600),
                      (BASE + 150, BASE + 250)], una, nxt, new) == 100
    assert new == [(BASE + 300, BASE + 400)]
    assert sb.blocks() == [(BASE + 100, BASE + 400), (BASE + 500, BASE + 600)]
    assert sb.sacked == 400
