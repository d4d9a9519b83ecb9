"""TCB state machine: handshakes, close sequences, resets, RFC 5961, TIME-WAIT, PAWS, ENO hook.

All sans-IO through tests/tcpstack/harness.py on a virtual clock; segments are asserted
field by field.
"""
from __future__ import annotations

import pytest

from tcpstack.tcp.config import TCPConfig
from tcpstack.tcp.connection import TCPConnection, TCPState
from tcpstack.errors import (ConnectionAbortedLocallyError, ConnectionRefusedByPeerError,
                             ConnectionResetByPeerError, ConnectionTimeoutError,
                             HostUnreachableError)
from tcpstack.tcp.events import (ConnectionEstablished, ConnectionTerminated, DataReceived,
                             EndOfStream)
from tcpstack.wire.segment import ACK, FIN, PSH, RST, SYN, TCPSegment

from .harness import PORT_A, PORT_B, Harness

S = TCPState


def seg(flags, seq, ack=0, *, src=PORT_B, dst=PORT_A, window=65535, payload=b"", **kw):
    return TCPSegment(src, dst, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, flags, window, payload, **kw)


# --------------------------------------------------------------------------- handshake

def test_three_way_handshake_negotiates_mss_ws_sack_ts():
    # A: default buffers (128 KiB now, auto-tuned up to 6 MiB): the shift is chosen for the
    # maximum, 7 (RFC 7323 2.3).  B: a fixed 256 KiB buffer (auto-tuning off, like
    # SO_RCVBUF): shift 3.
    h = Harness(TCPConfig(mss=1460),
                TCPConfig(mss=1400, recv_buffer=1 << 18, rcvbuf_autotune=False),
                ts_offset_a=100, ts_offset_b=7000)
    h.established()
    syn, synack, ack = h.sent()
    assert syn == TCPSegment(PORT_A, PORT_B, 1000, 0, SYN, 65535, mss=1460, wscale=7,
                             sack_permitted=True, tsval=100, tsecr=0)
    assert synack == TCPSegment(PORT_B, PORT_A, 5000, 1001, SYN | ACK, 65535, mss=1400,
                                wscale=3, sack_permitted=True, tsval=7010, tsecr=100)
    # Third segment: window scaled by our shift 7 (128 KiB >> 7), timestamps echo.
    assert ack == TCPSegment(PORT_A, PORT_B, 1001, 5001, ACK, (128 << 10) >> 7, tsval=120,
                             tsecr=7010)
    a, b = h.a, h.b
    assert a.state is S.ESTABLISHED and b.state is S.ESTABLISHED
    assert (a.snd_wscale, a.rcv_wscale) == (3, 7)
    assert (b.snd_wscale, b.rcv_wscale) == (7, 3)
    assert a.sack_ok and b.sack_ok and a.ts_ok and b.ts_ok
    # Effective MSS: min(peer, ours) minus the 12 bytes of the timestamp option.
    assert a.snd_mss == 1400 - 12 and b.snd_mss == 1460 - 12 - 60
    assert a.snd_wnd == 65535 and b.snd_wnd == 128 << 10
    assert h.events["a"] == [ConnectionEstablished()]
    assert h.events["b"] == [ConnectionEstablished()]
    assert a.stats.srtt == pytest.approx(0.020) and b.stats.srtt == pytest.approx(0.020)


def test_handshake_without_options_uses_defaults():
    cfg = TCPConfig(window_scaling=False, sack=False, timestamps=False)
    h = Harness(cfg, TCPConfig())
    h.established()
    syn, synack, ack = h.sent()
    assert syn.wscale is None and not syn.sack_permitted and syn.tsval is None
    # RFC 7323 2.2 / RFC 2018 2: a SYN-ACK only carries what the SYN offered.
    assert synack.wscale is None and not synack.sack_permitted and synack.tsval is None
    assert synack.mss == 1460
    assert not h.b.sack_ok and not h.b.ts_ok and h.b.snd_wscale == 0 and h.b.rcv_wscale == 0
    assert h.b.snd_mss == 1460
    assert ack.window == 65535


def test_peer_mss_defaults_to_536_and_wscale_is_clamped():
    c = TCPConnection(PORT_A, PORT_B, iss=1, config=TCPConfig(), now=0.0)
    c.connect(0.0)
    c.segments_to_send(0.0)
    c.receive(seg(SYN | ACK, 900, 2, wscale=20, sack_permitted=True, tsval=5, tsecr=1), 0.01)
    assert c.state is S.ESTABLISHED
    assert c.peer_mss == 536 and c.snd_mss == 536 - 12
    assert c.snd_wscale == 14          # RFC 7323 2.3


def test_simultaneous_open():
    h = Harness(b_active=True)
    h.a.connect(0.0)
    h.b.connect(0.0)
    h.flush("a")
    h.flush("b")
    h.run()
    assert h.a.state is S.ESTABLISHED and h.b.state is S.ESTABLISHED
    flags = [(d, s.flags) for _, d, s, _ in h.trace]
    # Each SYN crosses; each side answers SYN-ACK (SYN-RECEIVED), then each gets ESTABLISHED.
    assert flags[:2] == [("a>b", SYN), ("b>a", SYN)]
    assert sorted(flags[2:4]) == [("a>b", SYN | ACK), ("b>a", SYN | ACK)]
    assert h.events["a"] == [ConnectionEstablished()] and h.events["b"] == [ConnectionEstablished()]
    h.write("a", b"hello")
    h.write("b", b"world")
    h.run()
    assert bytes(h.received["b"]) == b"hello" and bytes(h.received["a"]) == b"world"


def test_syn_retransmission_backoff_then_timeout():
    cfg = TCPConfig(syn_retries=3, rto_initial=1.0)
    h = Harness(cfg, hook=lambda d, s: [])      # everything is lost
    h.connect()
    h.run()
    times = [t for t, d, s, _ in h.trace if s.flags == SYN]
    assert times == [0.0, 1.0, 3.0, 7.0]
    assert h.now == 15.0
    assert h.a.state is S.CLOSED and h.a.is_terminated
    (term,) = h.terminated("a")
    assert isinstance(term.error, ConnectionTimeoutError)


def test_rst_in_syn_sent_is_connection_refused():
    c = TCPConnection(PORT_A, PORT_B, iss=100, config=TCPConfig(), now=0.0)
    c.connect(0.0)
    c.segments_to_send(0.0)
    # A RST whose ACK does not acknowledge our SYN is ignored (3.10.7.3).
    c.receive(seg(RST | ACK, 0, 5000), 0.01)
    assert c.state is S.SYN_SENT
    c.receive(seg(RST | ACK, 0, 101), 0.01)
    assert c.state is S.CLOSED and c.is_terminated
    ev = c.next_event()
    assert isinstance(ev, ConnectionTerminated)
    assert isinstance(ev.error, ConnectionRefusedByPeerError)


def test_bad_ack_in_syn_sent_gets_reset():
    c = TCPConnection(PORT_A, PORT_B, iss=100, config=TCPConfig(), now=0.0)
    c.connect(0.0)
    c.segments_to_send(0.0)
    c.receive(seg(SYN | ACK, 777, 999), 0.01)
    assert c.segments_to_send(0.01) == [TCPSegment(PORT_A, PORT_B, 999, 0, RST, 0)]
    assert c.state is S.SYN_SENT


def test_syn_ack_retransmitted_when_lost_and_dup_syn_answered():
    lost = {"n": 0}

    def hook(d, s):
        if d == "b>a" and s.flags == SYN | ACK and lost["n"] == 0:
            lost["n"] += 1
            return []
        return None
    h = Harness(TCPConfig(syn_retries=6), TCPConfig(rto_initial=1.0), hook=hook)
    h.established()
    synacks = [t for t, d, s, _ in h.trace if s.flags == SYN | ACK]
    # The server's own retransmission timer fires at 0.01 + 1.0 s; the client's SYN
    # retransmitted at 1.0 s arrives at 1.01 s too and is answered with a SYN-ACK at once.
    assert synacks == [0.01, 1.01, 1.01]
    assert h.a.state is S.ESTABLISHED and h.b.state is S.ESTABLISHED


# --------------------------------------------------------------------------- close

def _established(**kw) -> Harness:
    h = Harness(**kw)
    h.established()
    h.clear_trace()
    return h


def test_active_close_passive_close_and_time_wait_expiry():
    cfg = TCPConfig(msl=30.0)
    h = _established(cfg_a=cfg, cfg_b=cfg)
    t0 = h.now
    h.shutdown("a")
    assert h.a.state is S.FIN_WAIT_1
    h.run_for(0.015)
    assert h.b.state is S.CLOSE_WAIT and h.eof["b"]
    h.run_for(0.2)
    assert h.a.state is S.FIN_WAIT_2
    h.write("b", b"late data")          # half-close: b may still send
    h.run_for(0.1)
    assert bytes(h.received["a"]) == b"late data"
    h.shutdown("b")
    assert h.b.state is S.LAST_ACK
    h.run_for(0.015)
    assert h.a.state is S.TIME_WAIT
    t_tw = h.now - 0.005                # the FIN arrived at +10 ms after b's close
    h.run_for(0.1)
    assert h.b.state is S.CLOSED and h.b.is_terminated
    assert h.terminated("b") == [ConnectionTerminated(None)]
    assert h.terminated("a") == [ConnectionTerminated(None)]
    assert not h.a.is_terminated
    # TIME-WAIT lasts exactly 2*MSL.
    h.run(until=t_tw + 59.999)
    assert h.a.state is S.TIME_WAIT
    assert h.a.next_timer() == pytest.approx(t_tw + 60.0)
    h.run()
    assert h.a.is_terminated and h.now == pytest.approx(t_tw + 60.0)
    flags = [(d, s.flags) for _, d, s, _ in h.trace if s.flags & FIN]
    assert flags == [("a>b", FIN | ACK), ("b>a", FIN | ACK)]
    assert t0 < t_tw


def test_simultaneous_close():
    h = _established()
    h.shutdown("a")
    h.shutdown("b")
    h.run_for(0.015)
    assert h.a.state is S.CLOSING and h.b.state is S.CLOSING
    h.run_for(0.1)
    assert h.a.state is S.TIME_WAIT and h.b.state is S.TIME_WAIT
    assert h.terminated("a") == [ConnectionTerminated(None)]
    h.run()
    assert h.a.is_terminated and h.b.is_terminated


def test_half_close_from_passive_side():
    h = _established()
    h.shutdown("b")
    h.run_for(0.1)
    assert h.a.state is S.CLOSE_WAIT and h.b.state is S.FIN_WAIT_2 and h.eof["a"]
    h.write("a", b"x" * 5000)
    h.run_for(0.5)
    assert bytes(h.received["b"]) == b"x" * 5000
    h.shutdown("a")
    h.run_for(0.5)
    assert h.a.state is S.CLOSED and h.b.state is S.TIME_WAIT


def test_fin_with_data_is_delivered_before_end_of_stream():
    h = _established()
    assert h.a.send(b"abc") == 3          # queued, not yet flushed
    h.a.shutdown_write(h.now)
    h.flush("a")
    (s,) = h.sent("a>b")
    assert s.flags == ACK | PSH | FIN and bytes(s.payload) == b"abc"
    h.run_for(0.1)
    assert h.events["b"][1:] == [DataReceived(b"abc"), EndOfStream()]


def test_send_after_shutdown_raises():
    h = _established()
    h.shutdown("a")
    with pytest.raises(ConnectionError):
        h.a.send(b"x")
    assert h.a.send_buffer_free == 0


def test_fin_wait_2_timeout_only_after_full_close():
    cfg = TCPConfig(fin_wait_2_timeout=10.0)
    h = _established(cfg_a=cfg)
    h.shutdown("a")                      # half-close: may wait for the peer indefinitely
    h.run_for(0.1)
    assert h.a.state is S.FIN_WAIT_2 and h.a.next_timer() is None
    h.run_for(100)
    assert h.a.state is S.FIN_WAIT_2
    t = h.now
    h.a.close(t)                         # now orphaned: FIN-WAIT-2 is bounded
    h.run()
    assert h.a.is_terminated and h.now == pytest.approx(t + 10.0)
    assert isinstance(h.terminated("a")[0].error, ConnectionTimeoutError)


def test_data_after_close_resets():
    h = _established()
    h.a.close(h.now)
    h.flush("a")
    h.run_for(0.1)
    assert h.a.state is S.FIN_WAIT_2
    h.write("b", b"too late")
    h.run_for(0.1)
    assert h.a.is_terminated
    assert isinstance(h.terminated("a")[0].error, ConnectionAbortedLocallyError)
    assert isinstance(h.terminated("b")[0].error, ConnectionResetByPeerError)


def test_time_wait_retransmitted_fin_is_acked_and_restarts_2msl():
    h = _established()
    h.shutdown("a")
    h.run_for(0.1)
    h.shutdown("b")
    h.run_for(0.1)
    assert h.a.state is S.TIME_WAIT
    fin = [s for s in h.sent("b>a") if s.flags & FIN][0]
    h.run_for(10)
    out = h.inject("a", fin)
    assert len(out) == 1 and out[0].flags == ACK and out[0].ack == fin.seq + 1
    assert h.a.next_timer() == pytest.approx(h.now + 60.0)


# --------------------------------------------------------------------------- resets

def _b_rcv_nxt(h: Harness) -> int:
    return h.b.rcv_nxt & 0xFFFFFFFF


def test_exact_rst_resets_connection():
    h = _established()
    rst = TCPSegment(PORT_A, PORT_B, h.a.snd_nxt, 0, RST, 0)
    assert h.inject("b", rst) == []
    assert h.b.state is S.CLOSED and h.b.is_terminated
    (term,) = h.terminated("b")
    assert isinstance(term.error, ConnectionResetByPeerError)


def test_in_window_rst_not_exact_gets_challenge_ack():
    h = _established()
    rst = TCPSegment(PORT_A, PORT_B, h.a.snd_nxt + 100, 0, RST, 0)
    out = h.inject("b", rst)
    assert h.b.state is S.ESTABLISHED
    assert len(out) == 1
    assert out[0].flags == ACK and out[0].seq == h.b.snd_nxt and out[0].ack == h.a.snd_nxt
    assert h.b.stats.challenge_acks == 1
    # Out of window: silently dropped.
    assert h.inject("b", TCPSegment(PORT_A, PORT_B, h.a.snd_nxt + (1 << 30), 0, RST, 0)) == []
    assert h.b.state is S.ESTABLISHED


def test_syn_in_established_gets_challenge_ack_and_throttling():
    h = _established(cfg_b=TCPConfig(challenge_ack_limit=3, challenge_ack_interval=5.0))
    syn = TCPSegment(PORT_A, PORT_B, 123456, 0, SYN, 65535, mss=1460, tsval=10**6)
    replies = [h.inject("b", syn) for _ in range(5)]
    assert [len(r) for r in replies] == [1, 1, 1, 0, 0]
    assert replies[0][0].flags == ACK and replies[0][0].ack == h.a.snd_nxt
    assert h.b.state is S.ESTABLISHED
    assert h.b.stats.challenge_acks == 3 and h.b.stats.challenge_acks_throttled == 2
    h.run_for(5.0)
    assert len(h.inject("b", syn)) == 1


def test_blind_data_injection_with_bad_ack_is_dropped():
    h = _established()
    b = h.b
    # RFC 5961 5.2: SEG.ACK beyond SND.NXT -> ACK and drop (data not delivered).
    bogus = TCPSegment(PORT_A, PORT_B, h.a.snd_nxt, b.snd_nxt + 5000, ACK | PSH, 1000,
                       b"evil", tsval=h.a._ts(h.now), tsecr=0)
    out = h.inject("b", bogus)
    assert len(out) == 1 and out[0].flags == ACK
    assert bytes(h.received["b"]) == b""
    # Too old an ACK (below SND.UNA - MAX.SND.WND) is also dropped.
    bogus.ack = (b.snd_una - b.max_snd_wnd - 10) & 0xFFFFFFFF
    h.inject("b", bogus)
    assert bytes(h.received["b"]) == b""


def test_abort_sends_rst_and_reports():
    h = _established()
    h.a.abort(h.now)
    out = h.a.segments_to_send(h.now)
    assert out == [TCPSegment(PORT_A, PORT_B, h.a.snd_nxt & 0xFFFFFFFF, 0, RST, 0)]
    assert h.a.is_terminated
    h._drain("a")
    assert isinstance(h.terminated("a")[0].error, ConnectionAbortedLocallyError)
    h._transmit("a>b", out[0])
    h.run()
    assert isinstance(h.terminated("b")[0].error, ConnectionResetByPeerError)


def test_hard_icmp_error_in_syn_sent_aborts_soft_is_reported_on_timeout():
    c = TCPConnection(PORT_A, PORT_B, iss=1, config=TCPConfig(), now=0.0)
    c.connect(0.0)
    err = HostUnreachableError("port unreachable")
    c.icmp_error(err, 0.1, hard=True)
    assert c.is_terminated and c.next_event() == ConnectionTerminated(err)

    c = TCPConnection(PORT_A, PORT_B, iss=1, config=TCPConfig(syn_retries=1), now=0.0)
    c.connect(0.0)
    soft = HostUnreachableError("host unreachable")
    c.icmp_error(soft, 0.1, hard=False)
    assert not c.is_terminated
    for t in (1.0, 3.0):
        c.handle_timer(t)
    assert c.is_terminated and c.next_event() == ConnectionTerminated(soft)


# --------------------------------------------------------------------------- timestamps

def test_paws_drops_segment_with_old_timestamp():
    h = _established()
    b = h.b
    a = h.a
    old = TCPSegment(PORT_A, PORT_B, a.snd_nxt, a.rcv_nxt, ACK | PSH, 1000, b"old",
                     tsval=(b.ts_recent - 1000) & 0xFFFFFFFF, tsecr=0)
    out = h.inject("b", old)
    assert len(out) == 1 and out[0].flags == ACK
    assert b.stats.paws_drops == 1 and bytes(h.received["b"]) == b""
    good = TCPSegment(PORT_A, PORT_B, a.snd_nxt, a.rcv_nxt, ACK | PSH, 1000, b"new",
                      tsval=(b.ts_recent + 1) & 0xFFFFFFFF, tsecr=0)
    h.inject("b", good)
    assert bytes(h.received["b"]) == b"new"


def test_segment_without_timestamp_is_dropped_once_negotiated():
    h = _established()
    a = h.a
    s = TCPSegment(PORT_A, PORT_B, a.snd_nxt, a.rcv_nxt, ACK | PSH, 1000, b"nots")
    assert h.inject("b", s) == []
    assert bytes(h.received["b"]) == b""


# --------------------------------------------------------------------------- ENO hook

class FakeENO:
    """Records calls; offers ENO payloads like a TCP-ENO negotiator would."""

    def __init__(self, syn_payload: bytes, stop_after: int = 3, stop_on_nonsyn: bool = False):
        self.active = True
        self.stop_on_nonsyn = stop_on_nonsyn
        self.syn_payload = syn_payload
        self.received: list[tuple[int, tuple[bytes, ...]]] = []
        self.syn_calls = 0
        self.retransmits: list[int] = []
        self.stop_after = stop_after

    def syn_options(self):
        self.syn_calls += 1
        return (self.syn_payload,)

    def nonsyn_options(self):
        if self.stop_on_nonsyn:
            self.active = False      # the active opener is done once its ACK carried ENO
        return (b"",)

    def on_receive(self, flags, eno):
        self.received.append((flags, eno))
        if not self.stop_on_nonsyn and len(self.received) >= self.stop_after:
            self.active = False

    def on_syn_retransmit(self, attempt):
        self.retransmits.append(attempt)


def test_eno_hook_options_and_callbacks():
    ea = FakeENO(b"\x20", stop_on_nonsyn=True)
    eb = FakeENO(b"\x21", stop_after=2)
    h = Harness(eno_a=ea, eno_b=eb)
    h.established()
    syn, synack, ack = h.sent()[:3]
    assert syn.eno == (b"\x20",) and synack.eno == (b"\x21",)
    assert ack.eno == (b"",)                      # third segment carries the non-SYN option
    assert eb.received[0] == (SYN, (b"\x20",))    # passive side saw the SYN before replying
    assert ea.received[0] == (SYN | ACK, (b"\x21",))
    assert eb.received[1] == (ACK, (b"",))
    assert ea.syn_calls == 1 and eb.syn_calls == 1
    assert not ea.active and not eb.active
    # Once inactive, no more ENO options.
    h.clear_trace()
    h.write("a", b"data")
    h.run()
    assert all(s.eno == () for s in h.sent())


def test_eno_syn_retransmit_hook_and_option_space():
    ea = FakeENO(b"\x01" * 20)                    # big ENO payload: TS must go
    h = Harness(TCPConfig(syn_retries=2), eno_a=ea, hook=lambda d, s: [])
    h.connect()
    h.run()
    syns = [s for s in h.sent() if s.flags == SYN]
    assert len(syns) == 3
    assert ea.retransmits == [1, 2] and ea.syn_calls == 3
    for s in syns:
        assert s.eno == (b"\x01" * 20,) and s.tsval is None and s.sack_permitted
        assert s.mss == 1460 and s.wscale == 7     # shift for the 6 MiB auto-tuning maximum


def test_unacceptable_pure_acks_are_answered_at_most_every_half_second():
    h = _established()
    a = h.a
    ts = a._ts(h.now)
    old = TCPSegment(PORT_A, PORT_B, (a.snd_nxt - 5000) & 0xFFFFFFFF, a.rcv_nxt & 0xFFFFFFFF,
                     ACK, 1000, tsval=ts)
    assert len(h.inject("b", old)) == 1
    assert h.inject("b", old) == []
    assert h.b.stats.oow_acks_throttled == 1
    h.run_for(0.5)
    assert len(h.inject("b", old)) == 1
    # Segments with data are always answered (they are not part of an ACK loop).
    data = TCPSegment(PORT_A, PORT_B, (a.snd_nxt - 5000) & 0xFFFFFFFF,
                      a.rcv_nxt & 0xFFFFFFFF, ACK, 1000, b"dup", tsval=ts)
    assert len(h.inject("b", data)) == 1


def test_rst_in_syn_received_ends_passive_connection():
    c = TCPConnection(PORT_B, PORT_A, iss=9000, config=TCPConfig(), now=0.0)
    c.accept_syn(TCPSegment(PORT_A, PORT_B, 100, 0, SYN, 65535, mss=1460), 0.0)
    (synack,) = c.segments_to_send(0.0)
    assert synack.flags == SYN | ACK and synack.ack == 101 and synack.seq == 9000
    assert synack.wscale is None and synack.tsval is None and not synack.sack_permitted
    c.receive(TCPSegment(PORT_A, PORT_B, 101, 0, RST, 0), 0.01)
    assert c.is_terminated
    assert isinstance(c.next_event().error, ConnectionResetByPeerError)


def test_data_and_fin_on_third_segment_and_bad_ack_in_syn_received():
    c = TCPConnection(PORT_B, PORT_A, iss=9000, config=TCPConfig(), now=0.0)
    c.accept_syn(TCPSegment(PORT_A, PORT_B, 100, 0, SYN, 65535, mss=1460), 0.0)
    c.segments_to_send(0.0)
    # An ACK that does not acknowledge our SYN: RST <SEQ=SEG.ACK> (3.10.7.4 fifth).
    c.receive(TCPSegment(PORT_A, PORT_B, 101, 12345, ACK, 65535), 0.01)
    assert c.segments_to_send(0.01) == [TCPSegment(PORT_B, PORT_A, 12345, 0, RST, 0)]
    assert c.state is S.SYN_RECEIVED
    c.receive(TCPSegment(PORT_A, PORT_B, 101, 9001, ACK | PSH | FIN, 65535, b"hi"), 0.02)
    assert c.state is S.CLOSE_WAIT
    assert [c.next_event() for _ in range(3)] == [ConnectionEstablished(), DataReceived(b"hi"),
                                                  EndOfStream()]
    (ack,) = c.segments_to_send(0.02)
    assert ack == TCPSegment(PORT_B, PORT_A, 9001, 104, ACK, 65535)
