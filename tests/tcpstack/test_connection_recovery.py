"""TCB loss recovery, phase 2: RFC 6675 NextSeg() rules 3 and 4, RACK-TLP (RFC 8985), undo
of spurious retransmissions (Eifel RFC 3522, D-SACK RFC 2883 / RFC 3708, response RFC 4015),
RFC 6191 TIME-WAIT reopen, RSTs without timestamps (RFC 7323 3.2), and lossy bulk transfers.

Everything runs on the two-TCB harness's virtual clock (one-way delay 10 ms unless said):
segment times below are exact.
"""
from __future__ import annotations

import random

import pytest
from hypothesis import given, settings, strategies as st

from tcpstack.impairment import Impairment
from tcpstack.tcp.config import TCPConfig
from tcpstack.tcp.connection import TCPState
from tcpstack.errors import ConnectionResetByPeerError
from tcpstack.tcp.rack import DONE, EVER, LINKED, LOST, RTX, SACKED, SendQueue
from tcpstack.wire.segment import ACK, FIN, RST, SYN, TCPSegment

from .harness import PORT_A, PORT_B, Harness

S = TCPState
MSS = 1448
BASE = 1001           # a's first data sequence number (iss_a = 1000)


def drop_first(idxs: set[int], times: int = 1):
    """Drop the first ``times`` transmissions of the idx-th new data segment a->b."""
    seen: dict[int, int] = {}
    count: dict[int, int] = {}

    def hook(d, s):
        if d != "a>b" or not s.payload:
            return None
        i = seen.setdefault(s.seq, len(seen))
        if i in idxs and count.get(i, 0) < times:
            count[i] = count.get(i, 0) + 1
            return []
        return None
    return hook


def data_sent(h: Harness) -> list[tuple[float, int, bool]]:
    """(time, segment index, delivered) of every data segment a->b."""
    return [(round(t, 6), (s.seq - BASE) // MSS, ok) for t, d, s, ok in h.trace
            if d == "a>b" and s.payload]


def counters(c) -> dict:
    st_ = c.stats
    return {k: getattr(st_, k) for k in (
        "timeouts", "fast_retransmits", "sack_retransmits", "retransmits",
        "rescue_retransmits", "tlp_probes", "tlp_recoveries", "recoveries", "spurious_undos")}


def run10(cfg_a: TCPConfig, drop: set[int], *, cfg_b: TCPConfig | None = None,
          times: int = 1, nseg: int = 10) -> Harness:
    h = Harness(cfg_a, cfg_b or TCPConfig(), hook=drop_first(drop, times))
    h.established()
    h.clear_trace()
    data = random.Random(5).randbytes(nseg * MSS)
    h.write("a", data)
    h.run()
    assert bytes(h.received["b"]) == data
    return h


# --------------------------------------------------------------------------- TLP


def test_lost_tail_is_recovered_by_a_loss_probe_not_an_rto():
    # Segments 8 and 9 of a 10-segment flight are lost.  The ACK of 0-7 arrives at 0.05;
    # the PTO (2*SRTT = 40 ms, RFC 8985 7.2) fires at 0.09 and retransmits the last
    # segment (nothing new to send, 7.3); its SACK (at 0.11) lets RACK deem segment 8
    # lost (sent long before the delivered probe): fast recovery, no RTO.
    h = run10(TCPConfig(rto_min=1.0), {8, 9})
    sent = data_sent(h)
    assert sent[:10] == [(0.03, i, i < 8) for i in range(10)]
    assert sent[10:] == [(0.09, 9, True), (0.11, 8, True)]
    assert counters(h.a) == dict(timeouts=0, fast_retransmits=1, sack_retransmits=0,
                                 retransmits=2, rescue_retransmits=0, tlp_probes=1,
                                 tlp_recoveries=0, recoveries=1, spurious_undos=0)
    assert h.a.stats.rack_lost == 1


def test_without_rack_the_same_tail_loss_waits_for_the_rto():
    h = run10(TCPConfig(rto_min=1.0, rack=False), {9})
    # The delayed ACK of segment 8 arrives at 0.09 (40 ms delayed-ACK timer) and restarts
    # the 1 s RTO (RFC 6298 rule (5.3)).
    assert data_sent(h)[10:] == [(1.09, 9, True)]
    assert h.a.stats.timeouts == 1 and h.a.stats.tlp_probes == 0


def test_single_lost_tail_segment_repaired_by_probe_triggers_congestion_response():
    # RFC 8985 7.4.2: the probe repairs the only loss; the ACK covering TLP.end_seq looks
    # like an ordinary cumulative ACK.  Once an ACK goes beyond TLP.end_seq the loss is
    # presumed and cwnd is reduced (once).
    h = run10(TCPConfig(rto_min=1.0), {9})
    # The ACK of 0-8 arrives at 0.09 (delayed ACK); with one segment in flight the PTO is
    # 2*SRTT + TLP.max_ack_delay = 0.04 + 0.2 (7.2).
    assert data_sent(h)[10:] == [(0.34, 9, True)]
    a = h.a
    assert a.stats.tlp_probes == 1 and a.stats.timeouts == 0 and a._tlp_end is not None
    assert a.stats.tlp_recoveries == 0
    cwnd = a.cc.cwnd
    h.write("a", b"m" * 100)
    h.run()
    assert a.stats.tlp_recoveries == 1 and a._tlp_end is None
    assert a.cc.cwnd < cwnd and a.cc.ssthresh == a.cc.cwnd


def test_spurious_probe_is_recognised_by_dsack_and_costs_no_window():
    # The ACK of the whole flight is delayed 300 ms: the probe goes out, the receiver
    # reports it as a duplicate (D-SACK, RFC 2883), and TLP case 1 (7.4.2) ends the
    # episode without any congestion response.
    first = {}

    def extra(d, s):
        if d == "b>a" and s.ack == (BASE + 10 * MSS) & 0xFFFFFFFF and "x" not in first:
            first["x"] = 1
            return 0.3
        return 0.0
    h = Harness(TCPConfig(rto_min=1.0), TCPConfig(), extra_delay=extra)
    h.established()
    h.clear_trace()
    h.write("a", bytes(10 * MSS))
    h.run()
    a = h.a
    cwnd, ssthresh = a.cc.cwnd, a.cc.ssthresh
    probe = [s for t, d, s, _ in h.trace if d == "a>b" and s.payload][10:]
    assert [(s.seq - BASE) // MSS for s in probe] == [9]
    dsack_acks = [s for t, d, s, _ in h.trace if d == "b>a" and s.sack_blocks]
    assert dsack_acks[0].sack_blocks == (((BASE + 9 * MSS) & 0xFFFFFFFF,
                                          (BASE + 10 * MSS) & 0xFFFFFFFF),)
    assert a.stats.dsacks_in == 1 and h.b.stats.dsacks_out == 1
    assert a._tlp_end is None and a.stats.tlp_recoveries == 0
    assert a.stats.timeouts == 0 and a.stats.recoveries == 0
    assert (a.cc.cwnd, a.cc.ssthresh) == (cwnd, ssthresh)


def test_pto_is_capped_by_the_rto_and_a_probe_precedes_the_rto():
    # One segment in flight, no answer ever: PTO = 2*SRTT + max_ack_delay = 0.24 s, then
    # the RTO (1 s) is re-armed from the probe (7.3), then RTOs back off as usual.
    box = {}

    def hook(d, s):
        return [] if d == "a>b" and s.payload and box.get("on") else None
    h = Harness(TCPConfig(rto_min=1.0, retries=2), hook=hook)
    h.established()
    box["on"] = True
    t0 = h.now
    h.write("a", b"x" * 100)
    h.run()
    times = [round(t - t0, 6) for t, d, s, _ in h.trace if d == "a>b" and s.payload]
    assert times == [0.0, 0.24, 1.24, 3.24]
    assert h.a.stats.tlp_probes == 1 and h.a.stats.timeouts == 2


# --------------------------------------------------------------------------- RACK


def test_rack_detects_a_lost_retransmission_without_rto():
    # Segment 2 is lost twice.  The second loss is found by RACK: segments sent after the
    # retransmission are SACKed while it is not (RFC 8985 3.1), so it is resent again.
    h = run10(TCPConfig(rto_min=1.0), {2}, times=2, nseg=40)
    idx = [i for _, i, _ in data_sent(h)]
    assert idx.count(2) == 3
    st_ = h.a.stats
    assert st_.timeouts == 0 and st_.retransmits == 2 and st_.rack_lost == 2


def test_without_rack_a_lost_retransmission_needs_the_rto():
    h = run10(TCPConfig(rto_min=1.0, rack=False), {2}, times=2, nseg=40)
    assert [i for _, i, _ in data_sent(h)].count(2) == 3
    assert h.a.stats.timeouts == 1


def test_short_reordering_within_the_reo_wnd_causes_no_retransmission():
    # Segment 8 of 10 is late by 4 ms; only one segment is SACKed above it, so RACK waits
    # min_RTT/4 = 5 ms (RFC 8985 6.2 step 4) and the late segment arrives first.
    late = {}

    def extra(d, s):
        if d == "a>b" and s.seq == (BASE + 8 * MSS) and "x" not in late:
            late["x"] = 1
            return 0.004
        return 0.0
    h = Harness(TCPConfig(rto_min=1.0), extra_delay=extra)
    h.established()
    h.write("a", bytes(10 * MSS))
    h.run()
    assert h.a.stats.retransmits == 0 and h.a.stats.reorder_timeouts == 0
    assert h.a._rq.reordering_seen                   # step 3: delivered below RACK.fack


def _late_segment(ts: bool) -> Harness:
    """Segment 2 of 10 is delayed 15 ms: 7 segments are SACKed above it, so RACK (reo_wnd
    = 0 with >= DupThresh SACKed) retransmits it, spuriously."""
    late = {}

    def extra(d, s):
        if d == "a>b" and s.payload and "x" not in late and \
                (s.seq - h.a.iss - 1) & 0xFFFFFFFF == 2 * h.a.snd_mss:
            late["x"] = 1
            return 0.015
        return 0.0
    h = Harness(TCPConfig(rto_min=1.0, timestamps=ts), TCPConfig(timestamps=ts),
                extra_delay=extra)
    h.established()
    h.clear_trace()
    h.write("a", bytes(10 * MSS))
    return h


def test_spurious_fast_retransmit_undone_by_eifel_timestamps():
    h = _late_segment(ts=True)
    a = h.a
    h.run(until=0.05)            # first ACK grew cwnd; the dupacks are being processed
    h.run(stop=lambda: a.in_recovery)
    before = (a._undo_cwnd, a._undo_cc)           # the state before the reduction
    assert a.cc.cwnd < a._undo_cwnd and a.cc.ssthresh < before[1][2]
    h.run()
    assert a.stats.fast_retransmits == 1 and a.stats.retransmits == 1
    # RFC 3522: the ACK that covers the retransmission echoes the original's timestamp.
    assert a.stats.spurious_undos == 1
    assert a.cc.cwnd == before[0] and a.cc.ssthresh == before[1][2]
    assert a._rq.reordering_seen and not a.in_recovery
    assert a.stats.dsacks_in == 1                     # and the duplicate is D-SACKed


def test_spurious_fast_retransmit_undone_by_dsack_without_timestamps():
    h = _late_segment(ts=False)
    a = h.a
    h.run(stop=lambda: a.in_recovery)
    cwnd0, ssthresh0 = a._undo_cwnd, a._undo_cc[2]
    h.run()
    # RFC 3708: the only retransmission of the episode was reported by a D-SACK.
    assert a.stats.retransmits == 1 and a.stats.dsacks_in == 1
    assert a.stats.spurious_undos == 1
    assert a.cc.ssthresh == ssthresh0 and a.cc.cwnd >= cwnd0


def test_spurious_rto_after_a_delay_spike_is_undone():
    # The ACK of a single segment is held 1.005 s: the RTO (1 s) fires at 1.03 and
    # retransmits.  The retransmission reaches b as an old duplicate (which does not move
    # TS.Recent, RFC 7323 4.3), so b's answer (a D-SACK, at 1.05) echoes the original's
    # TSval: Eifel says spurious (RFC 3522); RFC 4015: cwnd/ssthresh restored, no more
    # backoff, and the RTT of the original (1.02 s) is sampled.
    held = {}

    def extra(d, s):
        if d == "b>a" and s.ack != 5001 and "x" not in held and s.ack > 1001:
            held["x"] = 1
            return 1.005
        return 0.0
    h = Harness(TCPConfig(rto_min=1.0, rack=False), TCPConfig(delayed_ack=False),
                extra_delay=extra)
    h.established()
    a = h.a
    cwnd, ssthresh = a.cc.cwnd, a.cc.ssthresh
    h.write("a", bytes(MSS))
    h.run()
    assert [round(t, 6) for t, _, _ in data_sent(h)] == [0.03, 1.03]
    assert a.stats.timeouts == 1 and a.stats.spurious_undos == 1
    assert (a.cc.cwnd, a.cc.ssthresh) == (cwnd, ssthresh)
    assert not a.in_recovery and a._rtt.backoff == 0
    assert a.stats.srtt == pytest.approx(0.02 * 7 / 8 + 1.02 / 8)


# --------------------------------------------------------------------------- RFC 6675


def test_nextseg_rule_3_retransmits_a_hole_not_yet_deemed_lost():
    # Without RACK: 3 and 8 lost.  Segment 3 is deemed lost (IsLost) and fast
    # retransmitted; 8 has a single SACKed segment above it, so only rule 3 sends it.
    h = run10(TCPConfig(rto_min=1.0, rack=False), {3, 8})
    assert data_sent(h)[10:] == [(0.05, 3, True), (0.05, 8, True)]
    assert counters(h.a) == dict(timeouts=0, fast_retransmits=1, sack_retransmits=1,
                                 retransmits=2, rescue_retransmits=0, tlp_probes=0,
                                 tlp_recoveries=0, recoveries=1, spurious_undos=0)


def test_nextseg_rule_4_rescue_retransmission_saves_a_lost_tail():
    # Without RACK: 3 lost, and the tail (8, 9).  After the partial ACK (no SACK left)
    # segment 8 is the next hole; rule 4 sends the highest unSACKed segment (9) once.
    h = run10(TCPConfig(rto_min=1.0, rack=False), {3, 8, 9})
    assert data_sent(h)[10:] == [(0.05, 3, True), (0.07, 8, True), (0.07, 9, True)]
    assert counters(h.a)["timeouts"] == 0
    assert h.a.stats.rescue_retransmits == 1


def test_sack_and_rack_off_tail_loss_still_recovers_exactly():
    h = run10(TCPConfig(rto_min=1.0, sack=False), {8, 9})
    assert h.a._rq is None
    assert h.a.stats.timeouts == 1          # classic NewReno: the tail costs an RTO


# --------------------------------------------------------------------------- D-SACK out


def test_receiver_reports_duplicates_in_dsack_blocks():
    h = Harness()
    h.established()
    a = h.a
    base = a.snd_nxt
    ts = a._ts(h.now)

    def data(off, n, tsv=ts):
        return TCPSegment(PORT_A, PORT_B, (base + off) & 0xFFFFFFFF, a.rcv_nxt & 0xFFFFFFFF,
                          ACK, 1000, b"d" * n, tsval=tsv, tsecr=0)
    w = lambda x: (base + x) & 0xFFFFFFFF
    h.inject("b", data(0, 100))
    out = h.inject("b", data(0, 100))                # entirely old: RFC 2883 4.1.1
    assert out[0].ack == w(100) and out[0].sack_blocks == ((w(0), w(100)),)
    out = h.inject("b", data(300, 100))
    assert out[0].sack_blocks == ((w(300), w(400)),)
    out = h.inject("b", data(300, 100))              # duplicate above a hole: 4.1.2
    assert out[0].sack_blocks == ((w(300), w(400)), (w(300), w(400)))
    out = h.inject("b", data(50, 100))               # partly old: the old part reported
    assert out[0].ack == w(150)
    assert out[0].sack_blocks == ((w(50), w(100)), (w(300), w(400)))
    out = h.inject("b", data(150, 50))               # nothing duplicate: plain SACK
    assert out[0].sack_blocks == ((w(300), w(400)),)
    assert h.b.stats.dsacks_out == 3
    # With dsack=False only the ordinary blocks.
    h2 = Harness(cfg_b=TCPConfig(dsack=False))
    h2.established()
    h2.inject("b", TCPSegment(PORT_A, PORT_B, h2.a.snd_nxt, h2.a.rcv_nxt, ACK, 1000, b"x",
                              tsval=h2.a._ts(h2.now)))
    out = h2.inject("b", TCPSegment(PORT_A, PORT_B, h2.a.snd_nxt, h2.a.rcv_nxt, ACK, 1000,
                                    b"x", tsval=h2.a._ts(h2.now)))
    assert out[0].sack_blocks == ()


# --------------------------------------------------------------------------- TIME-WAIT, RST


def _time_wait(ts: bool = True) -> Harness:
    h = Harness(TCPConfig(timestamps=ts), TCPConfig(timestamps=ts))
    h.established()
    h.shutdown("a")
    h.run(until=h.now + 0.1)
    h.shutdown("b")
    h.run(until=h.now + 0.1)
    assert h.a.state is S.TIME_WAIT
    return h


def test_time_wait_reopened_by_syn_with_newer_timestamp():
    h = _time_wait()
    a = h.a
    newer = TCPSegment(PORT_B, PORT_A, 77, 0, SYN, 65535, mss=1460,
                       tsval=(a.ts_recent + 5) & 0xFFFFFFFF)
    out = h.inject("a", newer)
    assert out == [] and a.reopen_syn is newer and a.is_terminated
    assert [e.error for e in h.terminated("a")] == [None]


def test_time_wait_syn_with_old_timestamp_gets_challenge_ack():
    h = _time_wait()
    a = h.a
    old = TCPSegment(PORT_B, PORT_A, 77, 0, SYN, 65535, tsval=(a.ts_recent - 5) & 0xFFFFFFFF)
    out = h.inject("a", old)
    assert a.reopen_syn is None and a.state is S.TIME_WAIT
    assert len(out) == 1 and out[0].flags == ACK


def test_time_wait_without_timestamps_reopens_on_higher_sequence_number():
    h = _time_wait(ts=False)
    a = h.a
    out = h.inject("a", TCPSegment(PORT_B, PORT_A, (a.rcv_nxt - 10) & 0xFFFFFFFF, 0, SYN,
                                   65535))
    assert a.reopen_syn is None and a.state is S.TIME_WAIT and out[0].flags == ACK
    syn = TCPSegment(PORT_B, PORT_A, (a.rcv_nxt + 100000) & 0xFFFFFFFF, 0, SYN, 65535)
    h.inject("a", syn)
    assert a.reopen_syn is syn and a.is_terminated


def test_rst_without_timestamp_is_accepted_but_data_without_is_dropped():
    # RFC 7323 3.2: once TS is negotiated, non-RST segments without it SHOULD be dropped;
    # an RST may come without (and is checked per RFC 5961 3.2 as usual).
    h = Harness()
    h.established()
    b = h.b
    seq = b.rcv_nxt
    h.inject("b", TCPSegment(PORT_A, PORT_B, seq & 0xFFFFFFFF, b.snd_nxt & 0xFFFFFFFF, ACK,
                             1000, b"no ts"))
    assert bytes(h.received["b"]) == b"" and b.stats.dropped_segments == 1
    h.inject("b", TCPSegment(PORT_A, PORT_B, seq & 0xFFFFFFFF, 0, RST, 0))
    assert b.is_terminated
    assert isinstance(h.terminated("b")[0].error, ConnectionResetByPeerError)


# --------------------------------------------------------------------------- bulk


def _bulk(loss: float, seed: int, **kw) -> tuple[Harness, float]:
    n = 5 * 1024 * 1024
    data = random.Random(seed).randbytes(n)
    h = Harness(TCPConfig(**kw), TCPConfig(**kw),
                link=Impairment(delay=0.005, loss=loss, rate_bps=8 * 50e6, queue_bytes=None),
                seed=seed)
    h.established()
    t0 = h.now
    h.write("a", data)
    h.shutdown("a")
    h.run(stop=lambda: h.eof["b"])
    assert bytes(h.received["b"]) == data
    return h, h.now - t0


@pytest.mark.parametrize("seed", [7, 1])
def test_bulk_5mb_at_2_percent_loss_recovers_without_timeouts(seed):
    h, elapsed = _bulk(0.02, seed)
    st_ = h.a.stats
    print(f"2% loss seed {seed}: {counters(h.a)} rack_lost={st_.rack_lost} "
          f"time={elapsed:.2f}s")
    assert st_.timeouts <= 2
    assert st_.fast_retransmits + st_.sack_retransmits >= 20 * max(1, st_.timeouts)
    assert st_.fast_retransmits + st_.sack_retransmits + st_.tlp_probes >= \
        st_.retransmits - st_.timeouts


def test_bulk_5mb_at_5_percent_loss_has_few_timeouts():
    h, elapsed = _bulk(0.05, 7)
    st_ = h.a.stats
    print(f"5% loss: {counters(h.a)} time={elapsed:.2f}s")
    assert st_.timeouts <= 3 and st_.retransmits >= 150


# --------------------------------------------------------------------------- SendQueue


def _check_invariants(q: SendQueue) -> None:
    recs = q.records()
    assert all(r.end > r.start for r in recs)
    assert all(a.end <= b.start for a, b in zip(recs, recs[1:]))
    assert q.sacked_out == sum(r.end - r.start for r in recs if r.flags & SACKED)
    assert q.lost_out == sum(r.end - r.start for r in recs
                             if r.flags & LOST and not r.flags & SACKED)
    assert q.retrans_out == sum(r.end - r.start for r in recs
                                if r.flags & RTX and not r.flags & SACKED)
    assert q.segs_sacked == sum(1 for r in recs if r.flags & SACKED)
    assert q.pending_lost == sum(1 for r in recs
                                 if r.flags & LOST and not r.flags & (RTX | SACKED))
    linked = []
    r = q._tfirst
    while r is not None:
        linked.append(r)
        r = r.tnext
    assert set(map(id, linked)) == {id(r) for r in recs if r.flags & LINKED}
    assert all(not r.flags & (SACKED | DONE) for r in linked)
    assert [r.xmit_no for r in linked] == sorted(r.xmit_no for r in linked)
    nl = q.next_lost()
    pend = [r for r in recs if r.flags & LOST and not r.flags & (RTX | SACKED)]
    assert (nl is None) == (not pend)
    if nl is not None:
        assert nl in pend


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.sampled_from("sackrlmuRtp"), st.integers(0, 10 ** 6),
                          st.integers(1, 5000)), max_size=60))
def test_send_queue_counters_and_lists_stay_consistent(ops):
    q = SendQueue(lambda t: int(t * 1000))
    nxt = una = 1000
    now = 0.0
    for op, x, n in ops:
        now += 0.001
        if op == "s":
            q.sent(nxt, nxt + n, now)
            nxt += n
        elif op == "a" and nxt > una:
            una = una + x % (nxt - una + 1)
            q.ack(una, now, None)
        elif op == "c" and nxt > una:                 # a SACK range
            s = una + x % (nxt - una)
            q.sack([(s, min(nxt, s + n))], now)
        elif op == "k":
            q.end_ack(now)
            q.detect_loss(now, 0.0)
        elif op == "r":
            r = q.next_lost()
            if r is not None:
                if r.end - r.start > 700:
                    q.split(r, r.start + 700)
                q.retransmitted(r, now)
        elif op == "l":
            q.mark_lost_below(una + x % (nxt - una + 1))
        elif op == "m":
            q.mark_all_lost()
        elif op == "u":
            q.unmark_lost(now)
        elif op == "R":
            q.mark_lost_on_rto(now, una, 0.0)
        elif op == "t":
            q.clear_sacks()
        elif op == "p":
            q.mark_head_lost()
        _check_invariants(q)
    if nxt > una:
        q.ack(nxt, now, None)
        _check_invariants(q)
        assert len(q) == 0 and q.sacked_out == q.lost_out == q.retrans_out == 0


# --------------------------------------------------------------------------- reordered ACKs

def _reordered_dsack_ack(h_hold: dict) -> Harness:
    """Segment 2 of 40 is delayed 15 ms (RACK retransmits it, spuriously); the ACK with the
    D-SACK for the late original is itself held 15 ms, so ACKs sent after it, with newer
    TSvals, overtake it."""
    def extra(d, s):
        if d == "a>b" and s.payload and "seg" not in h_hold and \
                (s.seq - h.a.iss - 1) & 0xFFFFFFFF == 2 * h.a.snd_mss:
            h_hold["seg"] = 1
            return 0.015
        if d == "b>a" and s.sack_blocks and "ack" not in h_hold and h.b is not None:
            s0, e0 = s.sack_blocks[0]
            if (e0 - s.ack) & 0xFFFFFFFF == 0 or (s.ack - e0) & 0xFFFFFFFF < 0x80000000:
                h_hold["ack"] = s.tsval
                return 0.015                  # the D-SACK ACK: overtaken by later ACKs
        return 0.0
    h = Harness(TCPConfig(rto_min=1.0), TCPConfig(), extra_delay=extra)
    h.established()
    h.clear_trace()
    h.write("a", bytes(40 * MSS))
    h.run()
    return h


def test_reordered_pure_ack_with_old_timestamp_keeps_its_dsack():
    # RFC 7323 5.3 R1 (PAWS) would drop the overtaken ACK, its TSval being older than
    # TS.Recent, and with it the D-SACK (RFC 2883) that undo and RACK's reordering window
    # (RFC 8985 6.2 step 4) need.  A pure ACK that moves neither SND.UNA nor the window is
    # accepted, as Linux's tcp_disordered_ack() does.
    hold: dict = {}
    h = _reordered_dsack_ack(hold)
    a = h.a
    assert "ack" in hold and a.stats.retransmits == 1
    late = [s for t, d, s, _ in h.trace if d == "b>a" and s.tsval == hold["ack"]
            and s.sack_blocks]
    assert late and any(((s.ack - h.a.iss) & 0xFFFFFFFF) > 0 for s in late)
    assert a.stats.paws_drops == 0
    assert a.stats.dsacks_in == 1 and h.b.stats.dsacks_out == 1


def test_paws_still_drops_an_old_segment_that_is_not_a_harmless_pure_ack():
    h = Harness()
    h.established()
    a, b = h.a, h.b
    h.write("a", bytes(MSS))
    h.run()
    una, win = a.snd_una, h.sent("b>a")[-1].window     # b's last window field
    for kw in ({"payload": b"x"},                                   # data
               {"tsval_back": 10_000},                              # older than one RTO
               {"ack": una - 1, "flags": ACK | FIN}):               # a FIN
        payload = kw.get("payload", b"")
        flags = kw.get("flags", ACK)
        seg = TCPSegment(PORT_B, PORT_A, b.snd_nxt, kw.get("ack", una) & 0xFFFFFFFF,
                         flags, win, payload,
                         tsval=(a.ts_recent - kw.get("tsval_back", 5)) & 0xFFFFFFFF,
                         tsecr=0)
        before = a.stats.paws_drops
        h.inject("a", seg)
        assert a.stats.paws_drops == before + 1, kw
    # ... while the same pure ACK, 5 ms old, is accepted.
    seg = TCPSegment(PORT_B, PORT_A, b.snd_nxt, una & 0xFFFFFFFF, ACK, win,
                     b"", tsval=(a.ts_recent - 5) & 0xFFFFFFFF, tsecr=0)
    before = a.stats.paws_drops
    h.inject("a", seg)
    assert a.stats.paws_drops == before


# --------------------------------------------------------------------------- quick ACKs

def _hole_then_two_lost_acks(quickacks: int) -> Harness:
    """20 segments; segment 3 lost.  The ACK of the retransmission that fills the hole is
    lost, and so is the first ACK covering the two new segments (18, 19) sent after it."""
    seen: dict[int, int] = {}
    dropped: set = set()

    def hook(d, s):
        if d == "a>b" and s.payload:
            i = seen.setdefault(s.seq, len(seen))
            if i == 3 and 3 not in dropped:
                dropped.add(3)
                return []
        if d == "b>a" and not s.payload:
            acked = (s.ack - BASE) & 0xFFFFFFFF
            for k in (18, 19):
                if ("ack", k) not in dropped and k * MSS <= acked < 0x80000000:
                    dropped.add(("ack", k))
                    return []
        return None
    h = Harness(TCPConfig(), TCPConfig(quickacks=quickacks), hook=hook)
    h.established()
    h.clear_trace()
    data = random.Random(5).randbytes(20 * MSS)
    h.write("a", data)
    h.run()
    assert bytes(h.received["b"]) == data
    return h


def test_quick_acks_after_a_hole_keep_one_lost_ack_from_stalling_the_sender():
    # Delayed ACKs (RFC 5681 4.2): after the hole is filled the receiver ACKs 18 and 19
    # together; that one ACK lost, the sender -- still in recovery -- has nothing left to
    # learn from but a probe (test_probe_in_fast_recovery_...) or, before, its RTO.
    h = _hole_then_two_lost_acks(0)
    assert [((s.ack - BASE) & 0xFFFFFFFF) // MSS for t, d, s, ok in h.trace
            if d == "b>a" and 0.075 < t < 0.085] == [20]
    assert counters(h.a)["tlp_probes"] == 1 and h.now > 0.12
    # Quick-ACK mode (Linux's; RFC 5681 4.2 lets a receiver ACK more often than every
    # second segment): after the hole, every in-order segment is ACKed at once, so the
    # ACK of 19 survives the loss of the one of 18 and the transfer ends in one recovery.
    h = _hole_then_two_lost_acks(16)
    assert [(((s.ack - BASE) & 0xFFFFFFFF) // MSS, ok) for t, d, s, ok in h.trace
            if d == "b>a" and 0.075 < t < 0.085] == [(19, False), (20, True)]
    assert counters(h.a) == dict(timeouts=0, fast_retransmits=1, sack_retransmits=0,
                                 retransmits=1, rescue_retransmits=0, tlp_probes=0,
                                 tlp_recoveries=0, recoveries=1, spurious_undos=0)
    assert h.now < 0.1


def test_probe_in_fast_recovery_when_rack_has_nothing_to_act_on():
    # The same path without quick ACKs: the ACK of 18 and 19 is lost, the sender is still
    # in fast recovery (SND.UNA below the recovery point), cwnd is full and no reordering
    # timer is pending.  RFC 8985 7.2 arms no PTO in recovery, so this used to end in the
    # RTO (segment 3 again at 0.25 s, 1 timeout).  The PTO, restarted by each ACK, now
    # probes with the highest segment 2 SRTT after the last ACK (RFC 8985 7.3); its SACK
    # ends the recovery without a timeout.
    h = _hole_then_two_lost_acks(0)
    assert data_sent(h)[-3:] == [(0.07, 18, True), (0.07, 19, True), (0.11, 19, True)]
    assert counters(h.a) == dict(timeouts=0, fast_retransmits=1, sack_retransmits=1,
                                 retransmits=2, rescue_retransmits=0, tlp_probes=1,
                                 tlp_recoveries=0, recoveries=1, spurious_undos=0)
    assert not h.a.in_recovery and h.now == pytest.approx(0.13)


def test_quick_acks_run_out_and_delayed_acks_resume():
    h = _hole_then_two_lost_acks(2)
    b = h.b
    assert b._quickacks == 0
    h.write("a", bytes(8 * MSS))
    h.run()
    acks = [((s.ack - BASE) & 0xFFFFFFFF) // MSS for t, d, s, ok in h.trace
            if d == "b>a" and t > 0.095]
    assert acks == [22, 24, 26, 28]              # every second segment again


def test_no_probe_timer_in_recovery_while_a_probe_is_out():
    # RFC 8985 7.3: one probe at a time; the recovery PTO is not re-armed (it would only
    # wake to skip the probe) until the outstanding one is answered.
    seen: dict[int, int] = {}
    state = {"drop3": True, "acks": 0}

    def hook(d, s):
        if d == "a>b" and s.payload:
            i = seen.setdefault(s.seq, len(seen))
            if i == 3 and state["drop3"]:
                state["drop3"] = False
                return []
        if d == "b>a" and not s.payload and ((s.ack - BASE) & 0xFFFFFFFF) >= 18 * MSS:
            return []                                   # every ACK from the hole on: lost
        return None
    h = Harness(TCPConfig(), TCPConfig(quickacks=0), hook=hook)
    h.established()
    h.clear_trace()
    h.write("a", bytes(20 * MSS))
    a = h.a
    h.run(stop=lambda: a.stats.tlp_probes == 1)
    assert a.in_recovery and a._t_tlp is None and a._t_rtx is not None
    h.run(until=h.now + 0.1)                             # its answer is lost too
    assert a.stats.tlp_probes == 1 and a._t_tlp is None


def test_a_probe_of_new_data_is_two_segments_so_its_ack_does_not_wait():
    """Issue 14: every ACK of a flight lost, the sender's loss probe sends new data.  One
    segment alone would sit out the receiver's delayed-ACK timer (40 ms here and on Linux,
    up to 200 ms elsewhere) before its ACK freed the sender; two full segments are answered
    at once (RFC 5681 4.2's every-second-segment rule), a departure from RFC 8985 7.3's one
    segment that costs one segment of window."""
    end_first = BASE + 10 * MSS

    def hook(d, s):                        # every ACK of the first 10-segment flight is lost
        if d == "b>a" and not s.payload and BASE < s.ack <= end_first:
            return []
        return None
    h = Harness(TCPConfig(rto_min=1.0), TCPConfig(), hook=hook)
    h.established()
    h.clear_trace()
    data = random.Random(7).randbytes(16 * MSS)
    h.write("a", data)
    h.run()
    assert bytes(h.received["b"]) == data
    sent = data_sent(h)
    assert sent[:10] == [(0.03, i, True) for i in range(10)]
    # the PTO (2 * SRTT) fires 40 ms after the flight: segments 10 and 11 as the probe
    assert sent[10:12] == [(0.07, 10, True), (0.07, 11, True)]
    # ... answered at once (0.07 + 20 ms round trip), so the rest follows at 0.09, not
    # 40 ms later
    assert [t for t, i, _ in sent[12:]] == [0.09] * 4
    assert h.a.stats.tlp_probes == 1 and h.a.stats.timeouts == 0
