"""Delivery-rate sampling (tcpstack/tcp/rate.py; draft-cheng-iccrg-delivery-rate-estimation,
Linux tcp_rate.c) on the sender's per-segment records, from hand-built ACK sequences."""
from __future__ import annotations

from typing import Any

import pytest

from tcpstack.tcp.config import TCPConfig
from tcpstack.tcp.rack import SendQueue
from tcpstack.tcp.rate import RateSample, RateSampler

from tests.tcpstack.harness import Harness

SEG = 1000


def queue(now: float = 0.0) -> tuple[SendQueue, RateSampler]:
    q = SendQueue(lambda t: int(t * 1000))
    q.rate = RateSampler(now)
    return q, q.rate


def send(q: SendQueue, i: int, t: float) -> None:
    q.sent(i * SEG, (i + 1) * SEG, t)


def ack(q: SendQueue, r: RateSampler, upto: int, t: float, sacks: tuple[tuple[int, int], ...] = (),
        prior_in_flight: int = 0, in_flight: int = 0) -> RateSample:
    """One ACK: cumulative up to segment ``upto`` (exclusive), SACK of segment ranges."""
    r.begin_ack(q.lost_bytes)
    q.ack(upto * SEG, t, None)
    if sacks:
        q.sack([(a * SEG, b * SEG) for a, b in sacks], t)
    q.end_ack(t)
    return r.gen(t, q.lost_bytes, prior_in_flight, in_flight)


def test_first_samples_and_flight_chaining() -> None:
    q, r = queue()
    for i in range(10):                                 # one segment every ms from t=0
        send(q, i, i * 0.001)
    rs = ack(q, r, 5, 0.010)
    # newest delivered: segment 4 (sent 0.004, when nothing was delivered yet)
    assert rs.delivered == 5 * SEG and rs.prior_delivered == 0
    assert rs.send_elapsed == pytest.approx(0.004)      # 0.004 - first_sent_time 0
    assert rs.ack_elapsed == pytest.approx(0.010)       # 0.010 - delivered_time 0
    assert rs.interval == pytest.approx(0.010)          # max of the two (draft 3.3)
    assert rs.delivery_rate == pytest.approx(5 * SEG / 0.010)
    assert rs.rtt == pytest.approx(0.006)
    assert rs.acked_sacked == 5 * SEG and not rs.is_app_limited
    assert r.delivered == 5 * SEG and r.delivered_time == 0.010
    assert r.first_sent_time == pytest.approx(0.004)    # the newest delivered's send time
    # A segment sent now carries the state of the last ACK.
    send(q, 10, 0.011)
    rec = q.segs[-1]
    assert (rec.rs_delivered, rec.rs_dtime) == (5 * SEG, 0.010)
    assert rec.rs_first == pytest.approx(0.004)
    rs = ack(q, r, 10, 0.012)
    assert rs.delivered == 10 * SEG                      # prior_delivered 0 again
    assert rs.interval == pytest.approx(0.012)
    rs = ack(q, r, 11, 0.020)
    assert rs.delivered == 6 * SEG and rs.prior_delivered == 5 * SEG
    assert rs.send_elapsed == pytest.approx(0.011 - 0.004)
    assert rs.ack_elapsed == pytest.approx(0.020 - 0.010)
    assert rs.delivery_rate == pytest.approx(6 * SEG / 0.010)


def test_send_into_empty_pipe_restarts_the_clocks() -> None:
    q, r = queue()
    send(q, 0, 0.0)
    ack(q, r, 1, 0.010)
    send(q, 1, 5.0)                                      # after an idle period
    rec = q.first()
    assert rec is not None and rec.rs_dtime == 5.0 and rec.rs_first == 5.0
    rs = ack(q, r, 2, 5.010)
    assert rs.interval == pytest.approx(0.010)           # the idle time is not counted
    assert rs.delivery_rate == pytest.approx(SEG / 0.010)


def test_app_limited_marking_and_its_end() -> None:
    q, r = queue()
    for i in range(4):
        send(q, i, 0.0)
    # The application writes with nothing unsent, the pipe (4 segments) below cwnd (10).
    r.check_app_limited(unsent=0, mss=SEG, pipe=4 * SEG, cwnd=10 * SEG, lost_pending=0)
    assert r.app_limited == 4 * SEG
    for i in range(4, 6):
        send(q, i, 0.001)
    rs = ack(q, r, 4, 0.010)
    assert not rs.is_app_limited                          # sent before the mark
    rs = ack(q, r, 6, 0.011)
    assert rs.is_app_limited                              # sent while app-limited
    assert r.app_limited == 0                             # delivered passed the mark
    send(q, 6, 0.012)
    rs = ack(q, r, 7, 0.022)
    assert not rs.is_app_limited
    # Not app-limited: a full segment unsent, cwnd full, or a lost segment waiting.
    for args in ((SEG, 0, 10), (0, 10, 10), (0, 0, 10)):
        r2 = RateSampler()
        r2.check_app_limited(unsent=args[0], mss=SEG, pipe=args[1] * SEG, cwnd=args[2] * SEG,
                             lost_pending=1 if args == (0, 0, 10) else 0)
        assert r2.app_limited == 0


def test_sack_then_cumulative_ack_uses_each_send_state_once() -> None:
    q, r = queue()
    for i in range(6):
        send(q, i, i * 0.001)
    # Segment 0 is lost; 1..5 are SACKed at t=0.012: the sample is segment 5's.
    rs = ack(q, r, 0, 0.012, sacks=((1, 6),))
    assert rs.acked_sacked == 5 * SEG and rs.delivered == 5 * SEG
    assert rs.rtt == pytest.approx(0.012 - 0.005)
    assert rs.send_elapsed == pytest.approx(0.005)
    # Segment 0 retransmitted at 0.013 (new send state: 5 segments delivered then).
    q.mark_head_lost()
    head = q.first()
    assert head is not None
    q.retransmitted(head, 0.013)
    assert head.rs_delivered == 5 * SEG and head.rs_dtime == 0.012
    # Its ACK covers all six: only segment 0 is newly delivered; the SACKed ones' send
    # state is not reused (Linux zeroes tx.delivered_mstamp).
    rs = ack(q, r, 6, 0.024)
    assert rs.acked_sacked == SEG and rs.delivered == SEG
    assert rs.prior_delivered == 5 * SEG
    assert rs.is_retrans and rs.rtt == -1.0               # no RTT from a retransmission
    assert rs.interval == pytest.approx(0.012)            # ack_elapsed 0.024 - 0.012
    assert r.delivered == 6 * SEG


def test_losses_and_short_interval_discarded() -> None:
    q, r = queue()
    for i in range(4):
        send(q, i, 0.0)
    rs = ack(q, r, 1, 0.010)                              # min RTT 10 ms now
    assert rs.delivery_rate > 0 and r.min_rtt == pytest.approx(0.010)
    r.begin_ack(q.lost_bytes)
    q.mark_lost_below(3 * SEG)                            # segments 1, 2 deemed lost
    q.sack([(3 * SEG, 4 * SEG)], 0.011)
    rs = r.gen(0.011, q.lost_bytes, 0, 0)
    assert rs.losses == 2 * SEG
    assert rs.interval == pytest.approx(0.011) and rs.delivered == 2 * SEG
    # A sample over less than min_rtt is not trusted (tcp_rate_gen): a retransmission
    # (no RTT sample of its own) acknowledged 11 ms after its send state, with a min_rtt
    # of 50 ms on record.
    r.min_rtt = 0.050
    head = q.first()
    assert head is not None
    q.retransmitted(head, 0.012)
    rs = ack(q, r, 3, 0.022)
    assert rs.rtt == -1.0 and rs.delivered > 0
    assert rs.interval == -1.0 and rs.delivery_rate == -1.0


def test_no_delivery_no_sample() -> None:
    q, r = queue()
    send(q, 0, 0.0)
    rs = ack(q, r, 0, 0.005)                              # a duplicate ACK, nothing new
    assert rs.delivered == -1 and rs.delivery_rate == -1.0 and rs.acked_sacked == 0


def test_split_records_keep_the_send_state() -> None:
    q, r = queue()
    q.sent(0, 3 * SEG, 0.0)
    rs = ack(q, r, 0, 0.010, sacks=((1, 2),))              # splits the record in three
    assert rs.acked_sacked == SEG and rs.delivery_rate == pytest.approx(SEG / 0.010)
    rs = ack(q, r, 3, 0.020)
    assert rs.acked_sacked == 2 * SEG and rs.prior_delivered == 0


def test_tcb_keeps_no_rate_state_unless_asked() -> None:
    h = Harness(TCPConfig(congestion_control="cubic"))
    h.established()
    assert h.a._rate is None and h.a._rq is not None and h.a._rq.rate is None
    h = Harness(TCPConfig(congestion_control="bbr"))
    h.established()
    assert h.a._rate is not None and h.a._rq is not None and h.a._rq.rate is h.a._rate


@pytest.mark.parametrize("sack", [True, False])
def test_tcb_rate_samples_on_a_transfer(sack: bool) -> None:
    """Through the TCB (with and without SACK: a connection without SACK keeps records
    for rate sampling alone): C.delivered ends at every byte acknowledged."""
    h = Harness(TCPConfig(congestion_control="bbr", sack=sack), TCPConfig(sack=sack))
    h.established()
    data = bytes(range(256)) * 800
    h.write("a", data)
    h.run()
    assert bytes(h.received["b"]) == data
    a = h.a
    assert a._rate is not None
    assert a._rate.delivered == len(data) and a._rate.samples > 10
    st = a.stats
    assert st.congestion_control == "bbr" and st.pacing_rate > 0 and st.delivery_rate > 0


def test_a_dsack_counts_as_delivered_up_to_what_was_retransmitted() -> None:
    """Linux tcp_dsack_seen: "A spurious retransmission is delivered" -- the D-SACKed
    bytes join C.delivered and the ACK's acked_sacked; a D-SACK beyond every byte ever
    retransmitted (the network duplicated a packet) or larger than the largest window
    ("dubious") is not counted."""
    q, r = queue()
    for i in range(4):
        send(q, i, i * 0.001)
    r.begin_ack(q.lost_bytes)
    q.ack(2 * SEG, 0.010, None)
    assert r.on_dsack(SEG, retransmitted=SEG, max_window=64 * SEG)
    q.end_ack(0.010)
    rs = r.gen(0.010, q.lost_bytes, 0, 0)
    assert r.delivered == 3 * SEG and rs.acked_sacked == 3 * SEG
    assert rs.delivered == 3 * SEG and rs.delivery_rate == pytest.approx(3 * SEG / 0.010)
    # The second D-SACK would take the total past the one segment retransmitted.
    r.begin_ack(q.lost_bytes)
    assert not r.on_dsack(SEG, retransmitted=SEG, max_window=64 * SEG)
    assert r.delivered == 3 * SEG and r.rs.acked_sacked == 0
    # Once more bytes were retransmitted the next D-SACK counts again (the total is
    # compared, as Linux compares dsack_dups with total_retrans).
    assert r.on_dsack(SEG, retransmitted=3 * SEG, max_window=64 * SEG)
    assert r.delivered == 4 * SEG
    # Dubious: a block larger than any window the peer offered; empty blocks.
    assert not r.on_dsack(65 * SEG, retransmitted=10**9, max_window=64 * SEG)
    assert not r.on_dsack(0, retransmitted=10**9, max_window=64 * SEG)
    assert r.delivered == 4 * SEG


def test_tcb_counts_a_dsacked_probe_as_delivered() -> None:
    """Through the TCB: the ACK of a flight is held 300 ms, the tail loss probe's copy of
    the last segment is reported by D-SACK, and C.delivered ends at every byte plus the
    copy: the path carried both (what keeps a rate-based sender's estimate at the path's
    rate when reordering makes it retransmit spuriously)."""
    mss = 1448
    base = 1001
    held: dict[str, int] = {}

    def extra(d: str, s: Any) -> float:
        if d == "b>a" and s.ack == (base + 10 * mss) & 0xFFFFFFFF and not held:
            held["x"] = 1
            return 0.3
        return 0.0
    h = Harness(TCPConfig(congestion_control="bbr", rto_min=1.0), TCPConfig(),
                extra_delay=extra)
    h.established()
    h.write("a", bytes(10 * mss))
    h.run()
    a = h.a
    assert a.stats.tlp_probes == 1 and a.stats.dsacks_in == 1 and a.stats.timeouts == 0
    assert a._rate is not None
    assert a._rate.delivered == 11 * mss and a._rate.dsack_bytes == mss
