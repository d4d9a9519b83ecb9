"""The TCB's small parts on their own: receive-buffer auto-tuning (autotune.py), undo of
spurious responses (undo.py), tail loss probes (tlp.py), and the loss-recovery regime
chosen at the handshake (recovery.py)."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from tcpstack.tcp.autotune import ReceiveBufferTuner
from tcpstack.tcp.config import TCPConfig
from tcpstack.tcp.connection import TCPConnection
from tcpstack.tcp.recovery import NewRenoRecovery, RackRecovery, SackRecovery
from tcpstack.tcp.tlp import TailLossProbe
from tcpstack.tcp.undo import SpuriousUndo


# --- receive-buffer auto-tuning

def test_tuner_rtt_from_echoed_timestamps_leans_to_the_minimum():
    t = ReceiveBufferTuner()
    t.measure(tsecr=1000, ts_now=1050, rcv_nxt=0, rcv_adv=0, rcv_mss=1448, now=1.0)
    assert t.rtt == pytest.approx(0.050)
    t.measure(tsecr=2000, ts_now=2030, rcv_nxt=0, rcv_adv=0, rcv_mss=1448, now=2.0)
    assert t.rtt == pytest.approx(0.030)                 # a smaller sample is taken at once
    t.measure(tsecr=3000, ts_now=3110, rcv_nxt=0, rcv_adv=0, rcv_mss=1448, now=3.0)
    assert t.rtt == pytest.approx(0.030 + 0.080 / 8)     # a larger one smoothed by 1/8
    t.measure(tsecr=0, ts_now=9999, rcv_nxt=0, rcv_adv=0, rcv_mss=1448, now=4.0)
    t.measure(tsecr=1, ts_now=1 + 70_000, rcv_nxt=0, rcv_adv=0, rcv_mss=1448, now=4.0)
    assert t.rtt == pytest.approx(0.040)                 # no echo / not ours: no sample


def test_tuner_rtt_without_timestamps_is_the_time_to_receive_a_window():
    t = ReceiveBufferTuner()
    t.measure(0, None, rcv_nxt=1000, rcv_adv=11000, rcv_mss=1000, now=1.0)
    assert (t.rtt_seq, t.rtt_time, t.rtt) == (11000, 1.0, 0.0)
    t.measure(0, None, rcv_nxt=5000, rcv_adv=15000, rcv_mss=1000, now=1.1)
    assert t.rtt == 0.0                                  # the window is not through yet
    t.measure(0, None, rcv_nxt=11000, rcv_adv=21000, rcv_mss=1000, now=1.25)
    assert t.rtt == pytest.approx(0.25) and (t.rtt_seq, t.rtt_time) == (21000, 1.25)


def test_tuner_grows_the_buffer_after_what_the_application_took_per_rtt():
    t = ReceiveBufferTuner()
    rtt = SimpleNamespace(srtt=None)
    t.rtt = 0.1
    assert t.adjust(0, 100_000, 1000, rtt, 1 << 20, now=1.0) == 100_000   # starts measuring
    assert t.space == 10_000
    assert t.adjust(50_000, 100_000, 1000, rtt, 1 << 20, now=1.05) == 100_000  # < 1 RTT
    # 2 x taken + 16 MSS, grown by twice the growth over the last RTT's 10 000 (x 7):
    # a sender in slow start (Linux tcp_rcv_space_adjust)
    want = 2 * 80_000 + 16 * 1000
    assert t.adjust(80_000, 100_000, 1000, rtt, 1 << 30, now=1.1) == want + 2 * (want * 7)
    assert t.space == 80_000 and t.seq == 80_000
    # a slow reader: less taken than the last RTT, no change; never shrinks
    assert t.adjust(90_000, 176_000, 1000, rtt, 1 << 20, now=1.2) == 176_000
    # capped at recv_buffer_max
    assert t.adjust(1_000_000, 176_000, 1000, rtt, 300_000, now=1.3) == 300_000


def test_tuner_waits_for_an_rtt_estimate():
    t = ReceiveBufferTuner()
    rtt = SimpleNamespace(srtt=None)
    t.adjust(0, 100_000, 1000, rtt, 1 << 20, now=1.0)
    assert t.adjust(500_000, 100_000, 1000, rtt, 1 << 20, now=9.0) == 100_000
    rtt.srtt = 0.5                                      # the sender-side estimate stands in
    assert t.adjust(500_000, 100_000, 1000, rtt, 1 << 30, now=9.0) == 1_016_000 * (1 + 2 * 49)


# --- undo (RFC 3522 Eifel, RFC 3708 D-SACK)

def test_undo_eifel_tells_an_ack_of_the_original_from_one_of_the_retransmission():
    u = SpuriousUndo(1000)
    u.begin("cc-before", 20_000, 1000, rto=True)
    assert u.retransmitted(2000) is True and u.retransmitted(3000) is False
    u.ts, u.seq = 500, 2000
    assert u.eifel(499) is True and u.ts is None         # echoes a TSval before RetransmitTS
    u.ts = 500
    assert u.eifel(500) is False and u.ts is None        # the retransmission's own echo
    u.ts = 500
    assert u.eifel(None) is False                        # no timestamp: no verdict, once
    u.ts = 0xFFFFFFF0
    assert u.eifel(0xFFFFFFE0) is True and not SpuriousUndo(0).eifel(5)   # wraps mod 2**32


def test_undo_dsack_needs_every_retransmission_of_the_episode_reported():
    u = SpuriousUndo(1000)
    assert u.dsack(1000, 2000, 1000) is False            # no episode
    u.begin("cc", 20_000, 1000, rto=False)
    u.retransmitted(2000)
    u.retransmitted(3000)
    assert (u.high, u.retrans, u.total) == (3000, 2, 2)
    assert u.dsack(5000, 6000, 1000) is False            # outside the episode's range
    assert u.dsack(1000, 2000, 1000) is False and u.retrans == 1
    assert u.dsack(2000, 3000, 1000) is True             # the last one: all spurious
    u.done()
    assert u.cc_state is None and u.dsack(1000, 2000, 1000) is False



def test_undo_chains_over_an_overlapping_episode_whose_dsacks_come_late():
    # Reordering longer than RACK's window (capped at SRTT, RFC 8985 6.2 step 4): the
    # D-SACKs of episode 1 arrive after episode 2 began.  All retransmissions of both were
    # spurious, so the state from before episode 1 comes back, not the already reduced one
    # from before episode 2.
    u = SpuriousUndo(1000)
    u.begin("cc1", 20_000, 1000, rto=False)
    u.retransmitted(2000)
    u.begin("cc2", 14_000, 5000, rto=False)              # episode 1 still unreported
    u.retransmitted(6000)
    assert u.dsack(1000, 2000, 1000) is False            # episode 1 done; 2 still pending
    assert u.dsack(5000, 6000, 1000) is True
    assert (u.cc_state, u.cwnd) == ("cc1", 20_000)       # before episode 1
    u.done()
    # The other order: episode 2 is undone first (to before 2), then episode 1's D-SACK
    # arrives and takes it back to before episode 1.
    u = SpuriousUndo(1000)
    u.begin("cc1", 20_000, 1000, rto=False)
    u.retransmitted(2000)
    u.begin("cc2", 14_000, 5000, rto=False)
    u.retransmitted(6000)
    assert u.dsack(5000, 6000, 1000) is True and u.cc_state == "cc2"
    u.done()
    assert u.dsack(1000, 2000, 1000) is True and (u.cc_state, u.cwnd) == ("cc1", 20_000)


def test_undo_chain_stops_at_a_genuine_loss_a_timeout_or_a_probe_response():
    u = SpuriousUndo(1000)
    u.begin("cc1", 20_000, 1000, rto=False)
    u.retransmitted(2000)                                # genuine: never D-SACKed
    u.begin("cc2", 14_000, 5000, rto=False)
    u.retransmitted(6000)
    assert u.dsack(5000, 6000, 1000) is True and u.cc_state == "cc2"   # episode 2 only
    for forget in ("rto", "probe"):
        u = SpuriousUndo(1000)
        u.begin("cc1", 20_000, 1000, rto=False)
        u.retransmitted(2000)
        if forget == "rto":
            u.begin("cc2", 14_000, 5000, rto=True)
        else:
            u.forget_older()                             # a TLP-repaired loss's response
            u.begin("cc2", 14_000, 5000, rto=False)
        u.retransmitted(6000)
        assert u.dsack(1000, 2000, 1000) is False
        assert u.dsack(5000, 6000, 1000) is True and u.cc_state == "cc2", forget


# --- tail loss probes (RFC 8985 7)

def test_pto_is_two_srtt_plus_delayed_ack_budget_for_one_segment_capped_by_rto():
    cfg = TCPConfig()
    pto = TailLossProbe.pto_deadline
    assert pto(None, 10_000, 1000, cfg, 5.0, None) == 6.0               # no RTT yet: 1 s
    assert pto(0.1, 10_000, 1000, cfg, 5.0, None) == pytest.approx(5.2)
    assert pto(0.1, 1000, 1000, cfg, 5.0, None) == pytest.approx(5.0 + 0.2 + cfg.tlp_max_ack_delay)
    assert pto(0.001, 10_000, 1000, cfg, 5.0, None) == pytest.approx(5.0 + cfg.tlp_min)
    assert pto(0.1, 10_000, 1000, cfg, 5.0, 5.1) == 5.1                  # RTO earlier


def test_tlp_process_ack_cases():
    p = TailLossProbe()
    assert p.may_probe(3)
    p.sent(5000, is_retrans=True, rtt_samples=3)
    assert not p.may_probe(3) and not p.may_probe(4)     # one outstanding at a time
    assert p.on_ack(6000, 4000, None, False) is True and p.end is None   # repaired a loss
    assert not p.may_probe(3) and p.may_probe(4)          # next one after a new RTT sample
    p.sent(5000, True, 4)
    assert p.on_ack(5000, 4000, (4000, 5000), True) is False and p.end is None  # both arrived
    p.sent(5000, True, 5)
    assert p.on_ack(5000, 5000, None, False) is False and p.end is None  # DupAck, no SACK
    p.sent(5000, True, 6)
    assert p.on_ack(5000, 4000, None, True) is False and p.end == 5000   # undecided yet
    p.sent(5000, False, 7)
    assert p.on_ack(5000, 4000, None, True) is False and p.end is None   # new data delivered


# --- the regime, chosen once at the handshake

def _pair(**cfg):
    a = TCPConnection(1000, 80, iss=100, config=TCPConfig(**cfg), now=0.0)
    b = TCPConnection(80, 1000, iss=9000, config=TCPConfig(), now=0.0)
    assert isinstance(a._recovery, NewRenoRecovery)       # until the handshake says more
    a.connect(0.0)
    [syn] = a.segments_to_send(0.0)
    b.accept_syn(syn, 0.0)
    for s in b.segments_to_send(0.0):
        a.receive(s, 0.0)
    return a


@pytest.mark.parametrize("cfg, regime, cls", [
    ({}, "rack", RackRecovery),
    ({"rack": False}, "sack", SackRecovery),
    ({"sack": False}, "newreno", NewRenoRecovery),
    ({"sack": False, "rack": True}, "newreno", NewRenoRecovery),
])
def test_regime_follows_sack_and_rack(cfg, regime, cls):
    a = _pair(**cfg)
    assert type(a._recovery) is cls and a.loss_recovery == regime
    assert (a._rq is not None) == (regime != "newreno")
    assert (a._tlp_end is None)


def test_newreno_pipe_counts_dupacks_as_left_and_the_lost_range():
    c = SimpleNamespace(snd_una=1000, snd_nxt=11000, snd_mss=1000, dupacks=0, _in_recovery=False,
                        _in_loss=False, _rxt_nxt=1000, _recover=1000)
    r = NewRenoRecovery()
    assert r.pipe(c) == 10_000
    c.dupacks = 3
    assert r.pipe(c) == 7000
    r.on_enter_recovery(c)
    c._in_recovery = True
    assert r.lost_end(c) == 2000 and r.pipe(c) == 10_000 - 3000 - 1000
    c._rxt_nxt = 2000                                     # the fast retransmit went out
    assert r.pipe(c) == 7000
    c._in_recovery, c._in_loss, c._recover, c.dupacks = False, True, 11000, 0
    assert r.lost_end(c) == 11000 and r.pipe(c) == 1000   # after an RTO: all but HighRxt
