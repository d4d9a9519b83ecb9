"""SYN cookies (RFC 4987 3.6, tcpstack/host/syncookies.py) and per-peer RST / ICMP rate limits,
on the sans-IO StackCore with a virtual clock."""
from __future__ import annotations

import ipaddress
import random

import pytest

from tcpcrypt.provider import TcpcryptProvider
from tcpstack.wire import icmp
from tcpstack.host import syncookies as sc
from tcpstack.tcp.config import TCPConfig
from tcpstack.host.endpoint import Closed, Data, Established
from tcpstack.wire.ip import parse_ip
from tcpstack.wire.segment import ACK, RST, SYN, TCPSegment
from tcpstack.tcp.connection import TCPConnection
from tcpstack.host.stack import StackConfig, StackCore
from tcpstack.wire.tcp import build_ip_tcp, parse_tcp

A = ipaddress.ip_address("10.0.0.1").packed
B = ipaddress.ip_address("10.0.0.2").packed
SECRET = bytes(range(32))


def tcp_of(packet: bytes) -> tuple[bytes, bytes, TCPSegment]:
    hdr, payload = parse_ip(packet)
    return hdr.src, hdr.dst, parse_tcp(payload, hdr.src, hdr.dst)


def pump(a: StackCore, b: StackCore, now: float, rounds: int = 500) -> None:
    """Deliver between a and b at one instant; packets to other addresses are dropped."""
    for _ in range(rounds):
        pa = a.packets_to_send()
        pb = [p for p in b.packets_to_send() if p[16:20] == A]
        if not pa and not pb:
            return
        for p in pa:
            b.receive_packet(p, now)
        for p in pb:
            a.receive_packet(p, now)


def settle(a: StackCore, b: StackCore, now: float, horizon: float = 1.0) -> float:
    """pump, then fire timers (delayed ACKs, Nagle) in virtual time up to now + horizon."""
    pump(a, b, now)
    for _ in range(200):
        ds = [d for d in (a.next_timer(), b.next_timer()) if d is not None and d <= now + horizon]
        if not ds:
            break
        now = max(now, min(ds))
        for t in (a, b):
            d = t.next_timer()
            if d is not None and d <= now:
                t.handle_timer(now)
        pump(a, b, now)
    return now


def spoofed_syn(rng: random.Random, port: int = 80, index: int | None = None) -> bytes:
    """A SYN from a random source in 198.18.0.0/15 (the `index`-th one: all distinct)."""
    host = rng.getrandbits(17) if index is None else index
    src = (0xC6120000 | host).to_bytes(4, "big")
    seg = TCPSegment(rng.randrange(1024, 65536), port, rng.getrandbits(32), 0, SYN, 64240,
                     mss=1460, wscale=7, sack_permitted=True, tsval=rng.getrandbits(32))
    return build_ip_tcp(seg, src, B)


def events(ep) -> list:
    return list(iter(ep.next_event, None))


# --- the cookie itself --------------------------------------------------------------------

@pytest.mark.parametrize("v6", [False, True])
def test_cookie_round_trip_every_mss_index_and_eno_bit(v6):
    la, ra = (A, B) if not v6 else (bytes(15) + b"\1", bytes(15) + b"\2")
    rng = random.Random(4987)
    table = sc.MSS_TABLE_V6 if v6 else sc.MSS_TABLE_V4
    for idx in range(4):
        assert sc.mss_from_index(sc.mss_index(table[idx], v6), v6) == table[idx]
        assert sc.mss_index(table[idx] + 1, v6) == idx
        for eno in (0, sc.DATA_ENO):
            data = idx | eno
            peer_isn = rng.getrandbits(32)
            count = sc.time_slot(rng.uniform(0, 1e6))
            c = sc.make_cookie(SECRET, la, 80, ra, 40000, peer_isn, count, data)
            for age in range(sc.MAX_AGE + 1):
                assert sc.check_cookie(SECRET, la, 80, ra, 40000, peer_isn, c,
                                       count + age) == data
            # too old, wrong secret, 4-tuple, peer ISN or our ISN (the ACK field): rejected
            assert sc.check_cookie(SECRET, la, 80, ra, 40000, peer_isn, c,
                                   count + sc.MAX_AGE + 1) is None
            assert sc.check_cookie(bytes(32), la, 80, ra, 40000, peer_isn, c, count) is None
            assert sc.check_cookie(SECRET, la, 80, ra, 40001, peer_isn, c, count) is None
            assert sc.check_cookie(SECRET, la, 81, ra, 40000, peer_isn, c, count) is None
            assert sc.check_cookie(SECRET, ra, 80, la, 40000, peer_isn, c, count) is None
            assert sc.check_cookie(SECRET, la, 80, ra, 40000, peer_isn + 1, c, count) is None
            assert sc.check_cookie(SECRET, la, 80, ra, 40000, peer_isn, c + 1, count) is None
    # RFC 9293 MUST-16: rounded down, never up; below the table there is no cookie MSS.
    assert sc.mss_index(None, v6) == 0 and sc.mss_index(100, v6) is None
    assert sc.mss_index(9000, v6) == 3
    with pytest.raises(ValueError):
        sc.make_cookie(SECRET, la, 80, ra, 1, 0, 0, sc.DATA_LIMIT)


def test_ts_option_bits_round_trip_and_tsval_never_ahead_of_the_clock():
    rng = random.Random(7323)
    for ws in [None, *range(15), 15]:
        for sack in (False, True):
            bits = sc.encode_ts_options(ws, sack)
            assert bits <= sc.TS_OPT_MASK
            for ts_now in (0, 5, 63, 64, 0xFFFFFFFF, rng.getrandbits(32), rng.getrandbits(32)):
                tsval = sc.cookie_tsval(ts_now, bits)
                assert tsval & sc.TS_OPT_MASK == bits
                assert (ts_now - tsval) & 0xFFFFFFFF < 1 << sc.TS_OPT_BITS   # at most 63 ms old
                assert sc.decode_ts_options(tsval) == (None if ws is None else min(ws, 14), sack)


# --- exact segments through StackCore -------------------------------------------------------

def full_listener(b: StackCore, backlog: int = 2):
    """A listener whose SYN queue is full of spoofed half-open connections."""
    lst = b.listen(80, backlog=backlog)
    rng = random.Random(1)
    for _ in range(backlog):
        b.receive_packet(spoofed_syn(rng), 0.0)
    b.packets_to_send()
    assert lst.half_open == backlog
    return lst


def test_full_queue_gets_exact_cookie_synack_no_state_then_ack_establishes():
    a, b = StackCore(["10.0.0.1"]), StackCore(["10.0.0.2"], secret=SECRET)
    lst = full_listener(b)
    conns_before = len(b._conns)
    ep = a.connect("10.0.0.2", 80, 1.0)
    [syn_pkt] = a.packets_to_send()
    _, _, syn = tcp_of(syn_pkt)
    b.receive_packet(syn_pkt, 1.0)
    [out] = b.packets_to_send()
    src, dst, sa = tcp_of(out)
    assert (src, dst) == (B, A)
    # No TCB, no half-open entry: the SYN left no state behind.
    assert len(b._conns) == conns_before and lst.half_open == 2 and not b._cookie_eno
    assert b.stats.syncookies_sent == 1
    assert sa.flags == SYN | ACK and sa.ack == (syn.seq + 1) & 0xFFFFFFFF
    assert sa.seq == sc.make_cookie(SECRET, B, 80, A, syn.src_port, syn.seq,
                                    sc.time_slot(1.0), sc.mss_index(syn.mss, False))
    assert sa.mss == 1460 and sa.window == 0xFFFF and sa.sack_permitted and sa.eno == ()
    # The same shift a TCB offers (TCPConnection.wscale_for): 7 for the 6 MiB auto-tuning
    # maximum of the default config (RFC 7323 2.3).
    assert sa.wscale == TCPConnection.wscale_for(b.config.tcp) == 7
    assert sa.tsecr == syn.tsval
    assert sc.decode_ts_options(sa.tsval) == (syn.wscale, True)
    # The final ACK creates the connection directly in ESTABLISHED, on the accept queue.
    a.receive_packet(out, 1.01)
    [ack_pkt] = a.packets_to_send()
    b.receive_packet(ack_pkt, 1.01)
    assert b.stats.syncookies_ok == 1 and lst.cookie_open == 0 and lst.half_open == 2
    srv = lst.accept()
    assert srv is not None and srv.conn.state.name == "ESTABLISHED"
    assert isinstance(events(srv)[0], Established)
    c, s = ep.conn, srv.conn
    assert (s.iss, s.irs) == (c.irs, c.iss)
    assert s.snd_wscale == c.rcv_wscale and s.rcv_wscale == c.snd_wscale == 7
    assert s.sack_ok and c.sack_ok and s.ts_ok and c.ts_ok
    assert s.peer_mss == 1460 and s.snd_mss == 1448
    # Data both ways.
    up, down = bytes(range(256)) * 400, b"\x5a" * 70_000
    ep.send(up, 1.02)
    srv.send(down, 1.02)
    settle(a, b, 1.02)
    got_s = b"".join(e.data for e in events(srv) if isinstance(e, Data))
    got_c = b"".join(e.data for e in events(ep) if isinstance(e, Data))
    assert got_s == up and got_c == down


def test_cookie_without_timestamps_offers_no_ws_sack_and_keeps_the_mss_index():
    cfg_a = StackConfig(mtu=1400, tcp=TCPConfig(timestamps=False))
    a, b = StackCore(["10.0.0.1"], cfg_a), StackCore(["10.0.0.2"], StackConfig(syncookies="always"))
    lst = b.listen(80)
    ep = a.connect("10.0.0.2", 80, 0.0)
    b.receive_packet(a.packets_to_send()[0], 0.0)
    [out] = b.packets_to_send()
    _, _, sa = tcp_of(out)
    assert sa.tsval is None and sa.wscale is None and not sa.sack_permitted
    assert lst.half_open == 0 and not b._conns
    a.receive_packet(out, 0.0)
    pump(a, b, 0.0)
    srv = lst.accept()
    assert srv is not None and srv.conn.state.name == "ESTABLISHED"
    s = srv.conn
    assert (s.ts_ok, s.sack_ok, s.snd_wscale, s.rcv_wscale) == (False, False, 0, 0)
    assert ep.conn.snd_wscale == 0 and not ep.conn.sack_ok
    assert s.peer_mss == 1300                 # client MSS 1360 rounds down to the table
    ep.send(b"x" * 50_000, 0.0)
    settle(a, b, 0.0)
    assert sum(len(e.data) for e in events(srv) if isinstance(e, Data)) == 50_000


def test_bogus_ack_to_listener_is_reset_and_creates_nothing():
    b = StackCore(["10.0.0.2"], StackConfig(syncookies="always"), secret=SECRET)
    b.listen(80)
    b.receive_packet(spoofed_syn(random.Random(3)), 0.0)      # cookies recently sent
    b.packets_to_send()
    ack = TCPSegment(40000, 80, 1234, 0xDEADBEEF, ACK, 1000)
    b.receive_packet(build_ip_tcp(ack, A, B), 0.5)
    [out] = b.packets_to_send()
    _, _, rst = tcp_of(out)
    assert rst.flags == RST and rst.seq == 0xDEADBEEF
    assert b.stats.syncookies_failed == 1 and not b._conns


def test_cookie_ack_dropped_when_the_accept_queue_is_full():
    a, b = StackCore(["10.0.0.1"]), StackCore(["10.0.0.2"])
    lst = b.listen(80, backlog=2)
    eps = [a.connect("10.0.0.2", 80, 0.0) for _ in range(4)]
    pump(a, b, 0.0)
    # Two completed normally and fill the accept queue; the other two got cookies, and
    # their ACKs were dropped (not reset): they will retransmit once there is room.
    assert len(lst.accept_queue) == 2 and b.stats.syncookies_sent == 2
    assert b.stats.syncookies_ok == 0 and b.stats.syn_dropped_backlog == 2
    assert len(b._conns) == 2 and all(e.established for e in eps)
    # The application accepts; the clients' data (retransmitted ACKs) then validate.
    assert lst.accept() and lst.accept()
    for e in eps:
        e.send(b"hi", 0.1)
    pump(a, b, 0.1)
    assert b.stats.syncookies_ok == 2 and len(lst.accept_queue) == 2


# --- TCP-ENO / tcpcrypt through a cookie ----------------------------------------------------

def enc_pair(**cfg):
    a = StackCore(["10.0.0.1"], security=TcpcryptProvider())
    b = StackCore(["10.0.0.2"], StackConfig(syncookies="always", **cfg), security=TcpcryptProvider())
    return a, b, b.listen(80)


def test_tcpcrypt_through_a_cookie_same_session_id_both_ends():
    a, b, lst = enc_pair()
    ep = a.connect("10.0.0.2", 80, 0.0)
    b.receive_packet(a.packets_to_send()[0], 0.0)
    [out] = b.packets_to_send()
    _, _, sa = tcp_of(out)
    assert sa.eno and not b._conns and len(b._cookie_eno) == 1   # ENO kept, no TCB
    a.receive_packet(out, 0.0)
    pump(a, b, 0.0)
    srv = lst.accept()
    assert srv is not None and b.stats.syncookies_ok == 1 and not b._cookie_eno
    ev_c, ev_s = events(ep), events(srv)
    assert isinstance(ev_c[0], Established) and isinstance(ev_s[0], Established)
    sid_c, sid_s = ev_c[0].info["tcpcrypt_session_id"], ev_s[0].info["tcpcrypt_session_id"]
    assert sid_c is not None and sid_c == sid_s
    ep.send(b"secret" * 1000, 0.0)
    srv.send(b"reply", 0.0)
    settle(a, b, 0.0)
    assert b"".join(e.data for e in events(srv) if isinstance(e, Data)) == b"secret" * 1000
    assert b"".join(e.data for e in events(ep) if isinstance(e, Data)) == b"reply"


def test_cookie_eno_entry_gone_fails_safe_with_a_reset():
    """Documented choice: the SYN-ACK promised ENO; without its transcript the server can
    neither encrypt nor honestly fall back to plain TCP, so it resets and counts it."""
    a, b, lst = enc_pair(syncookie_eno_entries=1)
    ep = a.connect("10.0.0.2", 80, 0.0)
    b.receive_packet(a.packets_to_send()[0], 0.0)
    synack = b.packets_to_send()[0]
    # Another ENO SYN evicts the only table entry before the ACK comes back.
    other = StackCore(["10.0.0.1"], security=TcpcryptProvider())
    other.connect("10.0.0.2", 80, 0.0, local_port=ep.local[1] + 1)
    b.receive_packet(other.packets_to_send()[0], 0.0)
    b.packets_to_send()
    a.receive_packet(synack, 0.0)
    b.receive_packet(a.packets_to_send()[0], 0.0)
    out = b.packets_to_send()
    assert [tcp_of(p)[2].flags & RST for p in out] == [RST]
    assert b.stats.syncookie_eno_lost == 1 and b.stats.syncookies_ok == 0
    assert not b._conns and lst.accept() is None
    for p in out:
        a.receive_packet(p, 0.0)
    assert any(isinstance(e, Closed) and e.error is not None for e in events(ep))


def test_eno_client_to_plain_cookie_server_claims_no_encryption():
    a = StackCore(["10.0.0.1"], security=TcpcryptProvider())
    b = StackCore(["10.0.0.2"], StackConfig(syncookies="always"))     # no tcpcrypt
    lst = b.listen(80)
    ep = a.connect("10.0.0.2", 80, 0.0)
    pump(a, b, 0.0)
    srv = lst.accept()
    ev_c, ev_s = events(ep), events(srv)
    assert ev_c[0].info.get("tcpcrypt_session_id") is None
    assert ev_s[0].info.get("tcpcrypt_session_id") is None and not ev_s[0].info.get("encrypted")


# --- the demand: a SYN flood does not starve legitimate clients ---------------------

def test_50000_spoofed_syns_while_100_legit_connections_are_all_served():
    a, b = StackCore(["10.0.0.1"]), StackCore(["10.0.0.2"])
    lst = b.listen(80)
    rng = random.Random(50_000)
    flood = [spoofed_syn(rng, index=i) for i in range(50_000)]
    served: dict[int, bytes] = {}
    clients: list = []
    servers: list = []
    max_half_open = 0
    now = 0.0
    per_step = 500                                  # 5,000 spoofed SYNs/s of virtual time
    def apps(now: float) -> None:
        """The applications: clients ping once established, the server answers."""
        for ep in a.pop_ready():
            for e in events(ep):
                i = clients.index(ep)
                if isinstance(e, Established):
                    ep.send(b"ping %d" % i, now)
                elif isinstance(e, Data):
                    served[i] = served.get(i, b"") + e.data
        while (srv := lst.accept()) is not None:
            servers.append(srv)
        for srv in b.pop_ready():
            for e in events(srv):
                if isinstance(e, Data):
                    srv.send(b"pong " + e.data, now)

    for step in range(101):
        now = step * 0.1
        chunk = flood[step * per_step:(step + 1) * per_step]
        # the legit SYN lands mid-flood (in step 0 once the flood has filled the queue)
        where = rng.randrange(lst.backlog if step == 0 else 0, len(chunk)) if chunk else -1
        for i, p in enumerate(chunk):
            b.receive_packet(p, now)
            if i == where:
                clients.append(a.connect("10.0.0.2", 80, now))
                for q in a.packets_to_send():
                    b.receive_packet(q, now)
            max_half_open = max(max_half_open, lst.half_open)
        for t in (a, b):
            if (d := t.next_timer()) is not None and d <= now:
                t.handle_timer(now)
        for _ in range(4):
            pump(a, b, now)
            apps(now)
    assert len(clients) == 100 and len(servers) == 100
    assert served == {i: b"pong ping %d" % i for i in range(100)}
    st = b.stats
    assert st.syncookies_sent == 50_000 - 128 + 100 and st.syncookies_ok == 100
    # Bounded memory: no per-SYN state beyond the listener's queue.
    assert max_half_open <= min(lst.backlog, b.config.syn_backlog)
    assert len(b._conns) <= lst.backlog + 100 and not b._cookie_eno


# --- per-peer RST / ICMP limits -------------------------------------------------------------

def test_noisy_peer_is_rst_limited_while_another_peer_still_gets_its_rst():
    b = StackCore(["10.0.0.2"])
    noisy = ipaddress.ip_address("10.9.9.9").packed
    for i in range(100):
        b.receive_packet(build_ip_tcp(TCPSegment(1000 + i, 9, i, 0, SYN, 1000), noisy, B), 0.0)
    sent = b.packets_to_send()
    burst = int(b.config.rst_peer_rate / 4)
    assert len(sent) == burst == b.stats.rst_sent
    assert b.stats.rst_peer_limited == 100 - burst == b.stats.rst_rate_limited
    b.receive_packet(build_ip_tcp(TCPSegment(5555, 9, 7, 0, SYN, 1000), A, B), 0.0)
    [rst] = b.packets_to_send()
    src, dst, seg = tcp_of(rst)
    assert dst == A and seg.flags == RST | ACK and seg.ack == 8
    # The noisy peer's bucket refills at rst_peer_rate.
    b.receive_packet(build_ip_tcp(TCPSegment(2000, 9, 1, 0, SYN, 1000), noisy, B), 1.0)
    assert len(b.packets_to_send()) == 1


def test_icmp_echo_is_limited_per_peer():
    b = StackCore(["10.0.0.2"])
    noisy = ipaddress.ip_address("10.9.9.9").packed
    for i in range(50):
        b.receive_packet(icmp.build_icmp_echo_request(noisy, B, ident=1, seq=i, data=b"x", v6=False), 0.0)
    assert len(b.packets_to_send()) == int(b.config.icmp_peer_rate / 4)
    b.receive_packet(icmp.build_icmp_echo_request(A, B, ident=2, seq=0, data=b"y", v6=False), 0.0)
    assert len(b.packets_to_send()) == 1
    assert b.stats.icmp_peer_limited == 50 - 5


def test_rate_limit_table_stays_bounded_under_100000_sources_and_global_cap_holds():
    cfg = StackConfig(rate_limit_peers=1000)
    b = StackCore(["10.0.0.2"], cfg)
    seg = TCPSegment(1000, 9, 1, 0, SYN, 1000)
    for i in range(100_000):
        src = (0x0B000000 + i).to_bytes(4, "big")                # 100,000 distinct sources
        b.receive_packet(build_ip_tcp(seg, src, B), i * 1e-5)       # 1 s in all
        assert len(b._rst_limiter.peers) <= 1000
    out = b.packets_to_send()
    # Every source is fresh, so only the global bucket (rst_rate/s plus its burst) limits.
    assert len(out) == b.stats.rst_sent <= cfg.rst_rate * 1.0 + cfg.rst_rate / 10 + 1
    assert b.stats.rst_peer_limited == 0 and b.stats.rst_rate_limited == 100_000 - len(out)
    assert len(b._rst_limiter.peers) == 1000


def test_ipv6_cookie_connection_uses_the_v6_mss_table():
    a = StackCore(["fd00::1"])
    b = StackCore(["fd00::2"], StackConfig(syncookies="always"))
    lst = b.listen(80)
    ep = a.connect("fd00::2", 80, 0.0)
    for _ in range(10):
        pa, pb = a.packets_to_send(), b.packets_to_send()
        if not pa and not pb:
            break
        for p in pa:
            b.receive_packet(p, 0.0)
        for p in pb:
            a.receive_packet(p, 0.0)
    srv = lst.accept()
    assert srv is not None and b.stats.syncookies_ok == 1 and srv.conn.state.name == "ESTABLISHED"
    assert srv.conn.peer_mss == 1440 and ep.conn.peer_mss == 1440    # 1500 - 40 - 20
    assert srv.conn.sack_ok and srv.conn.ts_ok and srv.conn.snd_wscale == ep.conn.rcv_wscale


def test_syncookies_mode_is_validated():
    from tcpstack.errors import TcpStackError
    with pytest.raises(TcpStackError):
        StackCore(["10.0.0.2"], StackConfig(syncookies="sometimes"))


def test_never_mode_drops_syns_when_the_queue_is_full_and_sends_no_cookie():
    b = StackCore(["10.0.0.2"], StackConfig(syncookies="never"))
    lst = b.listen(80, backlog=2)
    rng = random.Random(2)
    for _ in range(5):
        b.receive_packet(spoofed_syn(rng), 0.0)
    assert len(b.packets_to_send()) == 2 and lst.half_open == 2
    assert b.stats.syn_dropped_backlog == 3 and b.stats.syncookies_sent == 0


def test_cookie_answer_declines_resumption_and_runs_a_fresh_key_exchange():
    """The first connection (cookie) caches a resumable secret at both ends; the second
    offers resumption, and the cookie SYN-ACK answers with fresh key exchange (RFC 8548 3.5)
    so that the ACK can rebuild the same ENO transcript."""
    a, b, lst = enc_pair()
    for i in range(3):
        now = i * 1.0
        ep = a.connect("10.0.0.2", 80, now)
        # from the second connection on, the client offers resumption (17 bytes of data)
        assert any(len(o.data) == 17 for o in ep.negotiator.offers) == (i > 0)
        settle(a, b, now)
        srv = lst.accept()
        assert srv is not None, b.stats
        ec, es = events(ep)[0], events(srv)[0]
        assert isinstance(ec, Established) and isinstance(es, Established)
        assert ec.info["tcpcrypt"]["resumed"] is False
        assert ec.info["tcpcrypt_session_id"] == es.info["tcpcrypt_session_id"] is not None
        ep.close(now + 0.5)
        srv.close(now + 0.5)
        settle(a, b, now + 0.5)
    assert b.stats.syncookies_ok == 3 and b.stats.syncookie_eno_lost == 0
