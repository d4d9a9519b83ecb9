"""Receive-buffer auto-tuning (dynamic right-sizing) on the simulated network, virtual clock:
the window grows with what the application consumes per RTT, up to recv_buffer_max; the
shift in the SYN is chosen for that maximum; the right edge never moves left."""
from __future__ import annotations

import ipaddress
import random

from tcpstack.tcp.config import TCPConfig
from tcpstack.tcp.connection import TCPConnection
from tcpstack.host.endpoint import Data, Eof
from tcpstack.wire.ip import parse_ip
from tcpstack.wire.segment import ACK
from tcpstack.sim import LinkConfig, Network, StackHost
from tcpstack.host.stack import StackConfig, StackCore
from tcpstack.wire.tcp import parse_tcp

A, B = "10.0.0.1", "10.0.0.2"


def test_window_scale_is_chosen_for_the_auto_tuning_maximum():
    # RFC 7323 2.3: the smallest shift for the largest buffer the connection may have.
    assert TCPConnection.wscale_for(TCPConfig()) == 7                              # 6 MiB
    assert TCPConnection.wscale_for(TCPConfig(recv_buffer_max=8 << 20)) == 8      # 65536 << 7 > 8 MiB - 1
    assert TCPConnection.wscale_for(TCPConfig(recv_buffer_max=16 << 20)) == 9
    assert TCPConnection.wscale_for(TCPConfig(recv_buffer=1 << 20, rcvbuf_autotune=False)) == 5
    assert TCPConnection.wscale_for(TCPConfig(recv_buffer=60000, rcvbuf_autotune=False)) == 0
    assert TCPConnection.wscale_for(TCPConfig(recv_buffer_max=1 << 40)) == 14      # capped


class Host(StackHost):
    """A SimHost: a StackCore whose application sends `data` (client) or counts what it
    receives (server); the server's app may stop reading (paused)."""

    def __init__(self, addr: str, tcp: TCPConfig, seed: int) -> None:
        super().__init__(StackCore([addr], config=StackConfig(tcp=tcp), rng=random.Random(seed)))
        self.got = 0
        self.eof = False
        self.ep = None
        self.paused = False

    def react(self) -> None:
        for lst in self.core.pop_ready_listeners():
            while (ep := lst.accept()) is not None:
                self.ep = ep
                if self.paused:
                    ep.pause_reading()
        for ep in self.core.pop_ready():
            while (ev := ep.next_event()) is not None:
                if isinstance(ev, Data):
                    self.got += len(ev.data)
                elif isinstance(ev, Eof):
                    self.eof = True
                    ep.close(self.core.now)


def transfer(server_tcp: TCPConfig, size: int, link: LinkConfig, *, seed: int = 1,
             paused: bool = False, until: float = 120.0, watch=None):
    client = Host(A, TCPConfig(send_buffer=8 << 20), seed)
    server = Host(B, server_tcp, seed + 1)
    server.paused = paused
    if watch is not None:
        server.core.on_packet = watch
    net = Network(seed=seed)
    net.connect(net.add_host(client, [ipaddress.ip_address(A).packed]),
                net.add_host(server, [ipaddress.ip_address(B).packed]), link)
    server.core.listen(80, B)
    data = bytes(size)
    sent = [0]

    def top_up(now: float) -> None:             # keep about 2 MB queued at the client
        ep = client.ep
        if ep is not None and sent[0] < size and ep.conn.state.name == "ESTABLISHED" \
                and ep.conn.send_buffer_free > 0 and len(ep._pending) < (2 << 20):
            chunk = memoryview(data)[sent[0]:sent[0] + (1 << 20)]
            ep.send(chunk, now)
            sent[0] += len(chunk)
            if sent[0] == size:
                ep.shutdown_write(now)
            net.poll()
        if sent[0] < size:
            net.call_at(now + 0.005, top_up)

    client.ep = client.core.connect(B, 80, 0.0)
    net.call_at(0.0, top_up)
    end = net.run(max_time=until, stop=lambda: server.got >= size)
    return client, server, end


HIGH_BDP = LinkConfig(delay=0.040, rate_bps=200e6, queue_bytes=4 << 20)   # BDP 2 MB


def test_high_bdp_path_window_grows_and_throughput_follows():
    size = 40 << 20
    _, srv, t_auto = transfer(TCPConfig(), size, HIGH_BDP)
    _, fixed, t_fixed = transfer(TCPConfig(rcvbuf_autotune=False), size, HIGH_BDP)
    assert srv.got == size and fixed.got == size
    grown = srv.ep.conn.recv_buffer
    # The buffer grew from 128 KiB to at least the path's BDP (2 MB), within the maximum.
    assert 2 << 20 <= grown <= 6 << 20, grown
    assert fixed.ep.conn.recv_buffer == 128 << 10
    # A fixed 128 KiB window caps throughput at 128 KiB per 80 ms RTT (1.6 MB/s); auto-tuned,
    # the transfer is many times faster (the link gives 25 MB/s).
    rate_fixed, rate_auto = size / t_fixed, size / t_auto
    assert rate_fixed < 1.1 * (128 << 10) / 0.080, rate_fixed
    assert rate_auto > 6 * rate_fixed, (rate_auto, rate_fixed)


def test_a_reader_that_does_not_read_keeps_the_initial_buffer():
    # Auto-tuning follows what the application takes, not what arrives: a paused reader's
    # buffer fills to the initial 128 KiB, the window closes, and nothing grows.
    _, srv, _ = transfer(TCPConfig(), 4 << 20, HIGH_BDP, paused=True, until=5.0)
    conn = srv.ep.conn
    assert conn.recv_buffer == 128 << 10
    # Full to within one window-scale unit (2^7: RFC 7323 2.4 rounding), window field 0.
    assert 0 <= (128 << 10) - conn._rbuf_len < 1 << conn.rcv_wscale
    assert conn.rcv_adv - conn.rcv_nxt < 1 << conn.rcv_wscale
    assert srv.got == 0
    # Reading again: the app takes everything at once, and the buffer may grow from there.
    srv.ep.resume_reading(srv.core.now)
    assert srv.ep.conn._rbuf_len == 0


def test_advertised_right_edge_never_moves_left_over_a_lossy_autotuned_transfer():
    edges: list[tuple[int, int]] = []
    state = {}

    def watch(direction: str, packet: bytes, now: float) -> None:
        if direction != "out":
            return
        hdr, payload = parse_ip(packet)
        seg = parse_tcp(payload, hdr.src, hdr.dst, verify_checksum=False)
        if seg.flags & ACK and "shift" in state:
            edges.append((seg.ack, seg.ack + (seg.window << state["shift"])))

    lossy = LinkConfig(delay=0.020, rate_bps=50e6, loss=0.02, reorder=0.05)
    client = None

    def watch_and_learn(direction: str, packet: bytes, now: float) -> None:
        if "shift" not in state and srv_ref and srv_ref[0].ep is not None:
            state["shift"] = srv_ref[0].ep.conn.rcv_wscale
        watch(direction, packet, now)

    srv_ref: list = []
    import tests.tcpstack.test_autotune as me
    orig = me.Host.__init__

    def init(self, addr, tcp, seed):
        orig(self, addr, tcp, seed)
        if addr == B:
            srv_ref.append(self)
    me.Host.__init__ = init
    try:
        _, srv, _ = transfer(TCPConfig(), 8 << 20, lossy, watch=watch_and_learn)
    finally:
        me.Host.__init__ = orig
    del client
    assert srv.got == 8 << 20
    assert srv.ep.conn.recv_buffer > 128 << 10          # it did grow during the transfer
    assert len(edges) > 100
    # The edge shown never moves left by a whole scale unit: RFC 7323 2.4 lets it sit up to
    # 2^shift - 1 octets left of an earlier one (rounding down to the field's granularity
    # instead of creeping past the buffer), never more.
    mask, unit = 0xFFFFFFFF, 1 << state["shift"]
    for (a1, e1), (a2, e2) in zip(edges, edges[1:]):
        back = (e1 - e2) & mask
        assert back == 0 or back >= 1 << 31 or back < unit, (e1 & mask, e2 & mask)


def test_in_order_text_is_taken_even_when_the_out_of_order_queue_is_full():
    # Found by the high-BDP test: with the queue at its entry bound, the segment at RCV.NXT
    # (which does not touch any queued block) was refused, so the hole could never be
    # filled and the sender retransmitted it on every RTO forever.
    from tcpstack.tcp.reassembly import ReassemblyQueue
    q = ReassemblyQueue(max_chunks=4)
    for k in range(4):
        assert q.add(2000 + 200 * k, b"x" * 100) == 100          # four separate blocks
    assert q.add(1500, b"y" * 100) == 0                            # out of order: bounded
    assert q.add(1000, b"z" * 100, force=True) == 100              # at RCV.NXT: always taken
    chunks, nxt = q.pop_ready(1000)
    assert b"".join(chunks) == b"z" * 100 and nxt == 1100


def test_a_window_sized_loss_burst_on_a_high_bdp_path_recovers_without_timeouts():
    # Slow start overshoots a 4 MB queue by thousands of segments; SACK/RACK must repair
    # them all (the queue bound grows with the buffer), not stall on RTOs.
    client, srv, end = transfer(TCPConfig(recv_buffer=6 << 20, rcvbuf_autotune=False), 40 << 20,
                                HIGH_BDP, until=60.0)
    st = client.ep.conn.stats
    assert srv.got == 40 << 20 and end < 10.0, (srv.got, end)
    assert st.timeouts == 0 and st.sack_retransmits > 1000, st


def test_sender_sws_avoidance_waits_for_a_useful_window_or_the_override_timer():
    # RFC 9293 3.8.6.2.1: with data queued beyond a small usable window (less than an MSS and
    # less than half the largest window seen), the sender waits; after the override timeout
    # it sends what the window allows.
    from tcpstack.wire.segment import TCPSegment
    from tests.tcpstack.harness import Harness
    fixed = dict(window_scaling=False, rcvbuf_autotune=False)
    h = Harness(TCPConfig(nodelay=True, **fixed),
                TCPConfig(recv_buffer=10 * 1448, delayed_ack=False, **fixed))
    h.established()
    a, b = h.a, h.b
    b.pause_reading()
    h.write("a", b"d" * (10 * 1448 + 3000))
    h.run_for(0.1)
    # B's buffer is full (all of it acknowledged, window 0); 3000 octets wait at A.
    assert a.snd_una == a.snd_nxt == a.iss + 1 + 10 * 1448 and a.snd_wnd == 0
    h.clear_trace()
    # A peer that (against receiver SWS avoidance) opens its window by 500 octets.
    small = TCPSegment(b.local_port, b.remote_port, b.snd_nxt & 0xFFFFFFFF,
                       a.snd_nxt & 0xFFFFFFFF, ACK, 500, tsval=b._ts(h.now), tsecr=a.ts_recent)
    assert h.inject("a", small) == []                                  # too small: wait
    t0 = h.now
    h.b = None                                  # nothing more from B: only A's timers act
    out = []
    while not out and h.now < t0 + 1.0:
        h.now += 0.01
        a.handle_timer(h.now)
        out = [s for s in a.segments_to_send(h.now) if s.payload]
    assert out and len(out[0].payload) == 500
    assert abs((h.now - t0) - a.config.sws_override) < 0.011


def test_a_sender_in_slow_start_is_not_held_back_by_the_window():
    """The tuner anticipates a doubling sender (Linux tcp_rcv_space_adjust, "Accommodate
    for sender rate increase"): the buffer after an RTT in which twice the bytes of the RTT
    before were taken is (2 x taken + 16 MSS) x 3, not 2 x taken + 16 MSS; a steady reader
    (no growth) gets the plain rule."""
    from tcpstack.tcp.autotune import ReceiveBufferTuner

    class Rtt:
        srtt = 0.05
    mss = 1448
    t = ReceiveBufferTuner()
    assert t.adjust(0, 128 << 10, mss, Rtt(), 6 << 20, 1.0) == 128 << 10
    assert t.space == 10 * mss
    # one RTT later 20 segments were taken: twice the 10 of the initial space
    buf = t.adjust(20 * mss, 128 << 10, mss, Rtt(), 6 << 20, 1.1)
    assert buf == (2 * 20 * mss + 16 * mss) * 3
    # the next RTT, 20 segments again: no growth, nothing to anticipate, no shrinking
    assert t.adjust(40 * mss, buf, mss, Rtt(), 6 << 20, 1.2) == buf
    # 80 segments in the next: (2 x 80 + 16) MSS x (1 + 2 x 3), capped at the maximum
    assert t.adjust(120 * mss, buf, mss, Rtt(), 6 << 20, 1.3) == (2 * 80 + 16) * mss * 7
    assert t.adjust(10**6 + 120 * mss, buf, mss, Rtt(), 6 << 20, 1.4) == 6 << 20
