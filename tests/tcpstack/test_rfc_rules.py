"""The last RFC deviations of issue 11 (item 8), each pinned by the exact packets the stack
core sends, with the rule cited at each test.  Sans-IO: StackCore / TCPConnection driven by
hand-built packets and a virtual clock."""
from __future__ import annotations

import ipaddress
import struct

import pytest

from tests.tcpstack.hosts import pump, ref_checksum
from tcpstack.wire import icmp
from tcpstack.tcp.config import TCPConfig
from tcpstack.tcp.connection import TCPConnection, TCPState
from tcpstack.host.endpoint import Closed, Data, Established
from tcpstack.wire.ip import build_ipv4, build_ipv6, parse_ip
from tcpstack.wire.segment import ACK, FIN, PSH, RST, SYN, TCPSegment
from tcpstack.host.stack import StackConfig, StackCore
from tcpstack.wire.tcp import build_ip_tcp, parse_tcp

A4 = ipaddress.ip_address("10.0.0.1").packed
B4 = ipaddress.ip_address("10.0.0.2").packed
A6 = ipaddress.ip_address("fd00::1").packed
B6 = ipaddress.ip_address("fd00::2").packed
FAMILIES = [pytest.param((A4, B4), id="ipv4"), pytest.param((A6, B6), id="ipv6")]


def tcp_of(packet: bytes) -> TCPSegment:
    hdr, payload = parse_ip(packet)
    return parse_tcp(payload, hdr.src, hdr.dst)


def server(**cfg) -> StackCore:
    return StackCore(["10.0.0.2", "fd00::2"], StackConfig(**cfg))


def handshake(core: StackCore, a: bytes, b: bytes, syn: TCPSegment, now: float = 0.0):
    """Send `syn` from a to the core (address b), return (SYN-ACK, the ACK we answered)."""
    core.receive_packet(build_ip_tcp(syn, a, b), now)
    (synack_pkt,) = core.packets_to_send()
    synack = tcp_of(synack_pkt)
    assert synack.flags == SYN | ACK
    ack = TCPSegment(syn.src_port, syn.dst_port, syn.seq + 1, (synack.seq + 1) & 0xFFFFFFFF,
                     ACK, 65535)
    core.receive_packet(build_ip_tcp(ack, a, b), now)
    return synack, ack


# --- RFC 9293 3.10.7.2 LISTEN "fourth, other text or control" --------------------------

@pytest.mark.parametrize("addrs", FAMILIES)
@pytest.mark.parametrize("flags,payload", [(FIN, b""), (FIN | PSH, b"data"), (PSH, b"text"),
                                           (0, b"")])
def test_listen_drops_segments_without_syn_ack_or_rst_silently(addrs, flags, payload):
    """RFC 9293 3.10.7.2: in LISTEN, after the RST, ACK and SYN checks, "Any other control
    or text-bearing segment (not containing SYN) must have an ACK and thus would be
    discarded by the ACK processing ... drop the segment and return": no RST, no TCB."""
    a, b = addrs
    core = server()
    core.listen(80)
    seg = TCPSegment(40000, 80, 1000, 0, flags, 65535, payload)
    core.receive_packet(build_ip_tcp(seg, a, b), 0.0)
    assert core.packets_to_send() == []
    assert core.endpoints() == []
    assert (core.stats.listen_dropped, core.stats.rst_sent, core.stats.no_connection) == (1, 0, 0)
    # The other LISTEN rules are unchanged: an ACK gets <SEQ=SEG.ACK><CTL=RST> ("second"),
    # a RST is ignored ("first"); to a closed port even a bare FIN is reset (3.10.7.1).
    core.receive_packet(build_ip_tcp(TCPSegment(40000, 80, 1000, 777, ACK, 65535), a, b), 0.1)
    (rst,) = map(tcp_of, core.packets_to_send())
    assert (rst.seq, rst.ack, rst.flags) == (777, 0, RST)
    core.receive_packet(build_ip_tcp(TCPSegment(40000, 80, 1000, 0, RST, 0), a, b), 0.2)
    assert core.packets_to_send() == []
    core.receive_packet(build_ip_tcp(TCPSegment(40000, 81, 1000, 0, FIN, 65535), a, b), 0.3)
    (rst,) = map(tcp_of, core.packets_to_send())
    assert (rst.seq, rst.ack, rst.flags) == (0, 1001, RST | ACK)
    assert core.stats.listen_dropped == 1


# --- RFC 9293 3.7.1 MUST-15: default send MSS -------------------------------------------

@pytest.mark.parametrize("addrs,default_mss", [
    pytest.param((A4, B4), 536, id="ipv4"), pytest.param((A6, B6), 1220, id="ipv6")])
def test_syn_without_mss_option_means_536_for_ipv4_and_1220_for_ipv6(addrs, default_mss):
    """RFC 9293 3.7.1 MUST-15: "If an MSS Option is not received at connection setup, TCP
    implementations MUST assume a default send MSS of 536 (576 - 40) for IPv4 or 1220
    (1280 - 60) for IPv6."  A SYN with no options at all: data segments are exactly the
    default MSS (no timestamps, so no option bytes), the packets 576 / 1280 bytes."""
    a, b = addrs
    core = server()
    lst = core.listen(80)
    handshake(core, a, b, TCPSegment(40000, 80, 1000, 0, SYN, 65535))
    ep = lst.accept()
    assert ep is not None and ep.conn.peer_mss == default_mss
    ep.send(bytes(5 * default_mss + 100), 0.0)
    pkts = core.packets_to_send()
    iph = 20 if len(a) == 4 else 40
    # (the 100-byte tail waits for an ACK: Nagle, RFC 9293 3.7.4)
    assert [len(p) for p in pkts] == [iph + 20 + default_mss] * 5
    assert [len(p) for p in pkts][0] == (576 if len(a) == 4 else 1280)


@pytest.mark.parametrize("ip_header_size,default_mss", [(20, 536), (40, 1220)])
def test_active_open_syn_ack_without_mss_option_uses_the_family_default(ip_header_size,
                                                                         default_mss):
    """The same rule (MUST-15) on the active side: a SYN-ACK without MSS option."""
    cfg = TCPConfig(mss=1500 - ip_header_size - 20, ip_header_size=ip_header_size,
                    timestamps=False)
    c = TCPConnection(40000, 80, iss=1000, config=cfg, now=0.0)
    c.connect(0.0)
    (syn,) = c.segments_to_send(0.0)
    assert syn.mss == cfg.mss
    c.receive(TCPSegment(80, 40000, 5000, 1001, SYN | ACK, 65535), 0.01)
    assert c.state is TCPState.ESTABLISHED and c.peer_mss == default_mss
    c.send(bytes(3 * default_mss))
    out = [s for s in c.segments_to_send(0.01) if s.payload]
    assert [len(s.payload) for s in out] == [default_mss] * 3


# --- RFC 9293 3.7.1 MUST-16 with SYN cookies (RFC 4987 3.6) -----------------------------

@pytest.mark.parametrize("addrs,announced,table_mss", [
    pytest.param((A4, B4), 1000, 536, id="ipv4-1000"),
    pytest.param((A4, B4), 1439, 1300, id="ipv4-1439"),
    pytest.param((A6, B6), 1300, 1220, id="ipv6-1300"),
    pytest.param((A6, B6), 1420, 1400, id="ipv6-1420")])
@pytest.mark.parametrize("ts", [False, True], ids=["no-ts", "ts"])
def test_cookie_connection_never_exceeds_the_announced_mss(addrs, announced, table_mss, ts):
    """RFC 9293 3.7.1 MUST-16: the effective send MSS is at most the MSS the peer announced.
    A SYN cookie keeps only a table index (syncookies.MSS_TABLE_V4 = 536/1300/1440/1460,
    MSS_TABLE_V6 = 1220/1400/1440/1460), so the announced MSS is rounded DOWN to the
    largest table value <= it; every data segment of the connection made from the cookie
    carries at most that much (table_mss - 12 with timestamps, RFC 7323 3.2 / RFC 6691)."""
    a, b = addrs
    core = server(syncookies="always")
    lst = core.listen(80)
    syn = TCPSegment(40000, 80, 1000, 0, SYN, 65535, mss=announced,
                     tsval=777 if ts else None)
    core.receive_packet(build_ip_tcp(syn, a, b), 0.0)
    (synack,) = map(tcp_of, core.packets_to_send())
    assert core.stats.syncookies_sent == 1 and core.endpoints() == []
    ack = TCPSegment(40000, 80, 1001, (synack.seq + 1) & 0xFFFFFFFF, ACK, 65535,
                     tsval=778 if ts else None, tsecr=synack.tsval or 0)
    core.receive_packet(build_ip_tcp(ack, a, b), 0.0)
    assert core.stats.syncookies_ok == 1
    ep = lst.accept()
    assert ep is not None and ep.conn.peer_mss == table_mss <= announced
    ep.send(bytes(20000), 0.0)
    sizes = [len(tcp_of(p).payload) for p in core.packets_to_send()]
    payload = table_mss - (12 if ts else 0)
    assert sizes and max(sizes) <= announced
    assert sizes[:-1] == [payload] * (len(sizes) - 1) and sizes[-1] <= payload


@pytest.mark.parametrize("addrs,announced", [
    pytest.param((A4, B4), 500, id="ipv4-500"), pytest.param((A6, B6), 1200, id="ipv6-1200")])
def test_cookie_syn_with_mss_below_the_table_is_dropped(addrs, announced):
    """MUST-16 again: an MSS below the smallest table entry cannot be kept in a cookie
    (Linux rounds it up to 536, which breaks the rule): no SYN-ACK, no state; the peer's
    retransmitted SYN is answered statefully once the SYN queue has room."""
    a, b = addrs
    core = server(syncookies="always")
    core.listen(80)
    core.receive_packet(build_ip_tcp(TCPSegment(40000, 80, 1000, 0, SYN, 65535,
                                                mss=announced), a, b), 0.0)
    assert core.packets_to_send() == [] and core.endpoints() == []
    assert (core.stats.syncookie_mss_unfit, core.stats.syn_dropped_backlog,
            core.stats.syncookies_sent) == (1, 1, 0)
    # Without cookies the SYN is answered and the TCB keeps to the announced MSS.
    core = server(syncookies="never")
    lst = core.listen(80)
    handshake(core, a, b, TCPSegment(40000, 80, 1000, 0, SYN, 65535, mss=announced))
    ep = lst.accept()
    ep.send(bytes(3000), 0.0)
    assert max(len(tcp_of(p).payload) for p in core.packets_to_send()) == announced


# --- RFC 8201 4 / RFC 1191 3: path MTU floors -------------------------------------------

def pair(a_addr: str, b_addr: str, security=None, **cfg):
    """Client core a and server core b with one established connection (plain unless a
    security provider is given)."""
    a = StackCore([a_addr], StackConfig(**cfg), security=security)
    b = StackCore([b_addr], StackConfig(**cfg), security=security)
    lst = b.listen(80)
    ep = a.connect(b_addr, 80, 0.0)
    pump(a, b, 0.0)
    srv = lst.accept()
    assert isinstance(ep.next_event(), Established) and isinstance(srv.next_event(), Established)
    return a, b, ep, srv


@pytest.mark.parametrize("v6,forged_mtu,floor_packet", [
    pytest.param(False, 68, 552, id="ipv4-frag-needed-68"),
    pytest.param(False, 300, 552, id="ipv4-frag-needed-300"),
    pytest.param(True, 600, 1280, id="ipv6-ptb-600"),
    pytest.param(True, 1279, 1280, id="ipv6-ptb-1279")])
def test_forged_small_mtu_is_floored(v6, forged_mtu, floor_packet):
    """RFC 8201 4: "a node MUST NOT reduce its estimate of the Path MTU below the IPv6
    minimum link MTU" (1280).  IPv4: RFC 1191 3 forbids only going below 68; as Linux's
    min_pmtu, values below 552 count as 552.  One forged ICMP quoting an in-flight segment
    thus cannot cut segments to 68 - 40 - 12 = 16 data bytes: the in-flight data is resent
    in packets of exactly 552 (IPv4: 20 + 20 + 12 TS + 500) / 1280 (IPv6: 40 + 20 + 12 +
    1208) bytes."""
    a_addr, b_addr = ("fd00::1", "fd00::2") if v6 else ("10.0.0.1", "10.0.0.2")
    a, b, ep, srv = pair(a_addr, b_addr)
    ep.send(bytes(20000), 0.01)
    sent = a.packets_to_send()
    assert len(sent[0]) == 1500
    router = ipaddress.ip_address("fd00::99" if v6 else "10.0.0.99").packed
    typ = icmp.ICMP6_PACKET_TOO_BIG if v6 else icmp.ICMP_DEST_UNREACH
    code = 0 if v6 else icmp.UNREACH_FRAG_NEEDED
    forged = icmp.build_icmp_error(sent[0], router, ipaddress.ip_address(a_addr).packed,
                                   v6=v6, type=typ, code=code, mtu=forged_mtu)
    a.receive_packet(forged, 0.02)
    assert a.stats.icmp_errors_in == 1
    assert ep.conn.snd_mss == floor_packet - (40 if v6 else 20) - 20 - 12
    resent = a.packets_to_send()
    # Each 1448-byte segment in flight is resent cut to the new MSS (per-segment records:
    # 500 + 500 + 448, or 1208 + 240), from SND.UNA on, as far as cwnd allows.
    mss, hdrs = ep.conn.snd_mss, floor_packet - ep.conn.snd_mss
    pattern = []
    for p in sent:
        n = len(tcp_of(p).payload)
        pattern += [hdrs + min(mss, n - i) for i in range(0, n, mss)]
    assert resent and [len(p) for p in resent] == pattern[:len(resent)]
    assert max(map(len, resent)) == floor_packet
    assert tcp_of(resent[0]).seq == tcp_of(sent[0]).seq       # go-back from SND.UNA
    # A value above the floor is still honoured (RFC 1191 / RFC 8201 are not disabled).
    if not v6:
        a.receive_packet(icmp.build_icmp_error(resent[0], router,
                                               ipaddress.ip_address(a_addr).packed, v6=False,
                                               type=typ, code=code, mtu=552), 0.03)
        assert ep.conn.snd_mss == 500


# --- RFC 1122 3.2.2.1 / 4.1.3.1, RFC 8200 4: protocol / port unreachable, parameter problem

_csum = ref_checksum        # RFC 1071 by hand (independent of tcpstack.wire.checksum)


def _pseudo(src: bytes, dst: bytes, proto: int, length: int) -> bytes:
    if len(src) == 4:
        return src + dst + struct.pack("!BBH", 0, proto, length)
    return src + dst + struct.pack("!IxxxB", length, proto)


def udp_datagram(src: bytes, dst: bytes, data: bytes, *, checksum: bool = True,
                 corrupt: bool = False) -> bytes:
    n = 8 + len(data)
    udp = struct.pack("!HHHH", 5353, 53, n, 0) + data
    c = _csum(_pseudo(src, dst, 17, n) + udp) if checksum else 0
    c = (c or 0xFFFF) if checksum else 0
    if corrupt:
        c ^= 0x0101
    udp = udp[:6] + struct.pack("!H", c) + udp[8:]
    if len(src) == 4:
        return build_ipv4(src, dst, 17, udp)
    return build_ipv6(src, dst, 17, udp)


def expected_error(original: bytes, src: bytes, dst: bytes, typ: int, code: int,
                   rest: int = 0) -> bytes:
    """The ICMP error built by hand: type, code, checksum, the 32-bit field after it, and
    the quoted datagram cut so the error fits 576 bytes (IPv4, RFC 1812 4.3.2.3) or 1280
    (IPv6, RFC 4443 2.4(c))."""
    v6 = len(src) == 16
    quoted = original[:1280 - 48] if v6 else original[:576 - 28]
    body = struct.pack("!BBHI", typ, code, 0, rest) + quoted
    c = _csum((_pseudo(src, dst, 58, len(body)) if v6 else b"") + body)
    body = body[:2] + struct.pack("!H", c) + body[4:]
    if v6:
        return build_ipv6(src, dst, 58, body)
    return build_ipv4(src, dst, 1, body, df=False)


@pytest.mark.parametrize("size", [20, 1400])
@pytest.mark.parametrize("v6", [False, True], ids=["ipv4", "ipv6"])
def test_udp_gets_port_unreachable_quoting_the_datagram(v6, size):
    """RFC 1122 4.1.3.1: "If a datagram arrives addressed to a UDP port for which there is
    no pending LISTEN call, UDP SHOULD send an ICMP Port Unreachable message" (ICMP 3/3;
    ICMPv6 destination unreachable code 4, RFC 4443 3.1).  The whole datagram is quoted up
    to 576 / 1280 bytes of error."""
    a, b = (A6, B6) if v6 else (A4, B4)
    core = server()
    dgram = udp_datagram(a, b, bytes(range(256)) * (size // 256) + bytes(size % 256))
    core.receive_packet(dgram, 0.0)
    (err,) = core.packets_to_send()
    typ, code = (1, 4) if v6 else (3, 3)
    assert err == expected_error(dgram, b, a, typ, code)
    assert len(err) == (min(len(dgram) + 48, 1280) if v6 else min(len(dgram) + 28, 576))
    assert core.stats.icmp_unreach_sent == 1
    # IPv4 UDP without a checksum (0) is well formed too (RFC 768).
    if not v6:
        plain = udp_datagram(a, b, b"x", checksum=False)
        core.receive_packet(plain, 0.1)
        assert core.packets_to_send() == [expected_error(plain, b, a, 3, 3)]


@pytest.mark.parametrize("v6", [False, True], ids=["ipv4", "ipv6"])
def test_malformed_udp_gets_no_error(v6):
    a, b = (A6, B6) if v6 else (A4, B4)
    core = server()
    core.receive_packet(udp_datagram(a, b, b"bad", corrupt=True), 0.0)
    short = build_ipv6(a, b, 17, b"\0" * 6) if v6 else build_ipv4(a, b, 17, b"\0" * 6)
    core.receive_packet(short, 0.0)
    assert core.packets_to_send() == []
    assert (core.stats.malformed, core.stats.icmp_unreach_sent) == (2, 0)


def test_unknown_ipv4_protocol_gets_protocol_unreachable():
    """RFC 1122 3.2.2.1: code 2 (Protocol Unreachable) "when the designated transport
    protocol is not supported" (here SCTP, 132)."""
    core = server()
    dgram = build_ipv4(A4, B4, 132, b"sctp-ish payload")
    core.receive_packet(dgram, 0.0)
    assert core.packets_to_send() == [expected_error(dgram, B4, A4, 3, 2)]
    assert core.stats.unknown_protocol == 1


@pytest.mark.parametrize("exts,pointer", [
    ((), 6),                                               # the fixed header's Next Header
    (((60, bytes(8)),), 40),                               # destination options
    (((0, bytes(8)), (60, b"\0\1" + bytes(14))), 48),     # hop-by-hop, 16-byte dest. options
    (((44, bytes(8)),), 40)])                              # an atomic fragment (RFC 8200 4.5)
def test_unknown_ipv6_next_header_gets_parameter_problem(exts, pointer):
    """RFC 8200 4: an unrecognized Next Header: "send an ICMP Parameter Problem message to
    the source of the packet, with an ICMP Code value of 1 ... and the ICMP Pointer field
    containing the offset of the unrecognized value within the original packet"."""
    core = server()
    dgram = build_ipv6(A6, B6, 132, b"payload", extensions=exts)
    assert dgram[pointer] == 132
    core.receive_packet(dgram, 0.0)
    assert core.packets_to_send() == [expected_error(dgram, B6, A6, 4, 1, pointer)]


def test_no_next_header_is_not_an_error():
    """RFC 8200 4.7: octets after a Next Header of 59 are ignored, no error."""
    core = server()
    core.receive_packet(build_ipv6(A6, B6, 59, b"ignored"), 0.0)
    assert core.packets_to_send() == [] and core.stats.icmp_unreach_sent == 0


@pytest.mark.parametrize("src,dst", [
    ("224.0.0.1", "10.0.0.2"), ("0.0.0.0", "10.0.0.2"), ("ff02::1", "fd00::2"),
    ("::", "fd00::2"), ("10.0.0.1", "255.255.255.255"), ("10.0.0.1", "224.0.0.251"),
    ("fd00::1", "ff02::fb")])
def test_no_error_about_multicast_broadcast_or_unspecified(src, dst):
    """RFC 1122 3.2.2: no ICMP error about a datagram to a broadcast or multicast address
    or from an address that is not one host's (RFC 4443 2.4(e) for IPv6)."""
    core = server()
    s, d = ipaddress.ip_address(src).packed, ipaddress.ip_address(dst).packed
    core._local.add(d)          # as if the stack had joined the group / took broadcasts
    core.receive_packet(udp_datagram(s, d, b"x"), 0.0)
    core.receive_packet((build_ipv6 if len(s) == 16 else build_ipv4)(s, d, 132, b"x"), 0.0)
    assert core.packets_to_send() == [] and core.stats.icmp_unreach_sent == 0


@pytest.mark.parametrize("v6", [False, True], ids=["ipv4", "ipv6"])
def test_no_error_about_an_icmp_error(v6):
    """RFC 1122 3.2.2 / RFC 4443 2.4(e): an ICMP error never answers an ICMP error, even
    one quoting a UDP datagram or an unknown protocol of ours."""
    a, b = (A6, B6) if v6 else (A4, B4)
    core = server()
    quoted = udp_datagram(b, a, b"x")
    err = expected_error(quoted, a, b, *((1, 4) if v6 else (3, 3)))
    core.receive_packet(err, 0.0)
    assert core.packets_to_send() == [] and core.stats.icmp_unreach_sent == 0


def test_unreachables_are_rate_limited_per_peer_and_globally():
    """The ICMP errors share the echo replies' token buckets: per peer (icmp_peer_rate 20/s,
    burst 5) under a global one (icmp_rate 200/s, burst 20)."""
    core = server()
    for i in range(10):
        core.receive_packet(udp_datagram(A4, B4, bytes([i])), 0.0)
    assert len(core.packets_to_send()) == 5
    assert (core.stats.icmp_unreach_sent, core.stats.icmp_rate_limited,
            core.stats.icmp_peer_limited) == (5, 5, 5)
    # Another peer has its own bucket; echo requests draw from the same one.
    other = ipaddress.ip_address("10.0.0.7").packed
    for i in range(3):
        core.receive_packet(build_ipv4(other, B4, 99, bytes([i])), 0.0)
    assert len(core.packets_to_send()) == 3
    # The global bucket: 20 at one instant from many peers, then silence.
    for i in range(40):
        src = bytes([10, 1, i // 256, i % 256])
        core.receive_packet(build_ipv4(src, B4, 99, b"x"), 0.0)
    assert len(core.packets_to_send()) == 20 - 8
    # The buckets refill with time: 1 s later the first peer gets 5 again.
    for i in range(10):
        core.receive_packet(udp_datagram(A4, B4, bytes([i])), 1.0)
    assert len(core.packets_to_send()) == 5


# --- RFC 1122 4.2.2.13: CLOSE with unread data, or data after CLOSE, resets ----------------

def _security(encrypted: bool):
    if not encrypted:
        return None
    from tcpcrypt.provider import TcpcryptProvider
    return TcpcryptProvider()


@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "tcpcrypt"])
def test_close_with_unread_data_sends_rst_not_fin(encrypted):
    """RFC 1122 4.2.2.13: "If such a host issues a CLOSE call while received data is still
    pending in TCP, or if new data is received after CLOSE is called, its TCP SHOULD send a
    RST to show that data was lost."  Data pending in TCP: held because reading is paused.
    The close is then exactly one RST <SEQ=SND.NXT><CTL=RST> (RFC 9293 3.10.5 ABORT), no
    FIN; with tcpcrypt the same, decided on the decrypted application data."""
    a, b, ep, srv = pair("10.0.0.1", "10.0.0.2", security=_security(encrypted))
    assert srv.info["encrypted"] is encrypted
    srv.pause_reading()
    ep.send(b"never read", 0.1)
    pump(a, b, 0.1)
    assert srv.next_event() is None                  # held in the TCB
    snd_nxt = srv.conn.snd_nxt
    srv.close(0.2)
    (rst,) = map(tcp_of, b.packets_to_send())
    assert (rst.seq, rst.ack, rst.flags, bytes(rst.payload)) == (snd_nxt & 0xFFFFFFFF, 0, RST, b"")
    (ev,) = list(iter(srv.next_event, None))
    assert isinstance(ev, Closed) and "data received after close" in str(ev.error)
    assert srv.conn.is_terminated


@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "tcpcrypt"])
def test_close_after_data_was_handed_over_sends_fin(encrypted):
    """Bytes already handed to the application (a Data event; at the asyncio edge, the
    StreamReader's buffer) count as read, as bytes asyncio recv()ed from a kernel socket:
    the close is a FIN.  Likewise a paused tcpcrypt connection whose only held bytes are the
    peer's FINp frame (RFC 8548 3.7: no application data)."""
    a, b, ep, srv = pair("10.0.0.1", "10.0.0.2", security=_security(encrypted))
    ep.send(b"handed over", 0.1)
    pump(a, b, 0.1)
    assert isinstance(srv.next_event(), Data)
    srv.pause_reading()
    ep.shutdown_write(0.15)                          # tcpcrypt: a FINp frame, then FIN
    pump(a, b, 0.15)
    srv.close(0.2)
    out = [tcp_of(p) for p in b.packets_to_send()]
    assert out and all(not s.flags & RST for s in out)
    assert out[-1].flags & FIN and out[-1].seq + len(out[-1].payload) == srv.conn.snd_nxt - 1
    pump(a, b, 0.2)
    assert not any(isinstance(e, Closed) and e.error for e in iter(srv.next_event, None))


@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "tcpcrypt"])
def test_data_after_close_is_answered_with_rst(encrypted):
    """The second half of RFC 1122 4.2.2.13: new data after CLOSE: RST <SEQ=SND.NXT> (one
    past our FIN)."""
    a, b, ep, srv = pair("10.0.0.1", "10.0.0.2", security=_security(encrypted))
    srv.close(0.1)
    pump(a, b, 0.1)
    assert srv.conn.state is TCPState.FIN_WAIT_2
    ep.send(b"too late", 0.2)
    (data,) = map(tcp_of, a.packets_to_send())
    b.receive_packet(build_ip_tcp(data, A4, B4), 0.2)
    out = [tcp_of(p) for p in b.packets_to_send()]
    assert [(s.seq, s.ack, s.flags) for s in out] == [(srv.conn.snd_nxt & 0xFFFFFFFF, 0, RST)]


async def _streams_close(encrypted: bool, size: int, *, read_first: bool = False):
    """A server that never reads `size` bytes the client sends, then writer.close(); the
    flags of every segment the server sent after that, and what the client's read gives."""
    import asyncio
    from tcpstack.aio.streams import Stack
    from tun.memory import MemoryLink
    la, lb = MemoryLink.pair()
    sec = _security(encrypted) or None
    sa = Stack(la, ["10.0.0.1"], security=sec)
    sb = Stack(lb, ["10.0.0.2"], security=sec)
    flags: list[int] = []
    closing = False

    def watch(packet: bytes) -> bytes:
        if closing:
            flags.append(tcp_of(packet).flags)
        return packet
    lb.filter = watch
    arrived = asyncio.Event()

    async def handler(reader, writer):
        nonlocal closing
        await arrived.wait()
        await asyncio.sleep(0.05)
        closing = True
        writer.close()

    server = await sb.start_server(handler, "10.0.0.2", 7, encrypt=encrypted)
    r, w = await sa.open_connection("10.0.0.2", 7, encrypt=encrypted)
    w.write(bytes(size))
    await asyncio.sleep(0.05)
    arrived.set()
    try:
        got: bytes | BaseException = await asyncio.wait_for(r.read(), 5)
    except ConnectionError as exc:
        got = exc
    server.close()
    sa.close(); sb.close()
    return flags, got


@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "tcpcrypt"])
async def test_streams_close_with_unread_data_held_by_tcp_resets(encrypted):
    """At the asyncio edge (see Endpoint.close): 1 MB the server never reads fills its
    StreamReader (which pauses reading at 2 * limit) and the rest stays in the TCB, pending
    in TCP: writer.close() sends RST (RFC 1122 4.2.2.13), never a FIN, and the client's
    read raises ConnectionResetError."""
    flags, got = await _streams_close(encrypted, 1 << 20)
    assert flags and flags[0] & RST and not any(f & FIN for f in flags)
    assert isinstance(got, ConnectionResetError)


@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "tcpcrypt"])
async def test_streams_close_with_bytes_in_the_stream_reader_sends_fin(encrypted):
    """The gray zone, chosen as asyncio on kernel sockets behaves: 1000 unread bytes that
    already sit in the server's StreamReader were taken from TCP (as asyncio recv()s them
    from the kernel), so writer.close() is a plain FIN and the client reads a clean EOF."""
    flags, got = await _streams_close(encrypted, 1000)
    assert flags and not any(f & RST for f in flags) and any(f & FIN for f in flags)
    assert got == b""


# --- RFC 5681 4.2 / RFC 9293 3.8.6.3: an ACK for at least every second full segment -------

def _flight(n: int):
    a, b, ep, srv = pair("10.0.0.1", "10.0.0.2")
    ep.send(bytes(n * ep.conn.snd_mss), 0.1)
    data = a.packets_to_send()
    assert len(data) == n and all(len(tcp_of(p).payload) == ep.conn.snd_mss for p in data)
    return a, b, ep, srv, data


@pytest.mark.parametrize("n,acked", [(2, [2]), (3, [2]), (4, [2, 4]), (8, [2, 6, 8]), (10, [2, 6, 10])])
def test_a_received_batch_gets_a_few_cumulative_acks(n, acked):
    """RFC 5681 4.2: "an ACK SHOULD be generated for at least every second full-sized
    segment" (RFC 9293 3.8.6.3, RFC 1122 4.2.3.2).  A batch of full-sized segments read from
    the link at one instant (StackCore.receive_packets) gets its first ACK after the second
    segment, then after 4, 8, 16 ... more, and one for the rest when the batch is processed.
    Our reading: within a batch no acknowledgement is withheld in time (as with Linux's GRO,
    which answers up to 64 KB with one ACK), and more than one ACK per batch keeps a lost
    ACK from hiding the whole batch (issue 14: one stretch ACK per batch, lost, cost a 10 ms
    loss probe plus the 40 ms delayed-ACK timer each time at 3% loss), while a long batch
    costs a few ACKs, not one per two segments (that halved the non-offloaded path's
    throughput).  An odd last segment waits for the delayed-ACK timer, as outside a batch.
    The sender side accepts stretch ACKs (RFC 3465 ABC, test_congestion)."""
    a, b, ep, srv, data = _flight(n)
    b.receive_packets(data, 0.11)
    out = [tcp_of(s) for s in b.packets_to_send()]
    ends = [(tcp_of(p).seq + len(tcp_of(p).payload)) & 0xFFFFFFFF for p in data]
    assert [(s.flags, s.ack, len(s.payload)) for s in out] == \
        [(ACK, ends[i - 1], 0) for i in acked]
    if n % 2:
        assert b.next_timer() == pytest.approx(0.11 + 0.040)      # delayed_ack_timeout
        b.handle_timer(0.15)
        assert [tcp_of(p).ack for p in b.packets_to_send()] == [ends[-1]]


def test_a_lost_ack_no_longer_hides_a_whole_batch_from_the_sender():
    """Issue 14's real 3%-loss path, replayed: a flight of 8 full segments read by the
    receiver in one batch.  It used to answer with one stretch ACK; when that ACK was lost the
    sender learnt nothing until its loss probe (10 ms), whose lone segment then waited out the
    receiver's delayed-ACK timer (40 ms).  Now the batch gets ACKs after segments 2, 6 and
    8: with its last ACK lost, the sender still learns of 6 of the 8 segments at once and
    sends on, no probe and no timer involved."""
    a, b, ep, srv, data = _flight(8)
    c = ep.conn
    ep.send(bytes(4 * c.snd_mss), 0.1)              # more to send once the window opens
    a.packets_to_send()
    b.receive_packets(data, 0.11)
    acks = b.packets_to_send()
    assert len(acks) == 3
    una = c.snd_una
    a.receive_packets(acks[:-1], 0.111)              # the last ACK is lost
    assert c.snd_una - una == 6 * c.snd_mss
    new = [tcp_of(p) for p in a.packets_to_send()]
    assert new and all(len(s.payload) == c.snd_mss for s in new)
    assert c.stats.tlp_probes == 0 and c.stats.timeouts == 0


def test_one_segment_alone_waits_for_the_delayed_ack_timer():
    a, b, ep, srv, data = _flight(1)
    b.receive_packets(data, 0.11)
    assert b.packets_to_send() == []
    assert b.next_timer() == pytest.approx(0.11 + 0.040)      # delayed_ack_timeout
    b.handle_timer(0.15)
    (ack,) = map(tcp_of, b.packets_to_send())
    assert ack.ack == (tcp_of(data[0]).seq + len(tcp_of(data[0]).payload)) & 0xFFFFFFFF


def test_segments_one_by_one_get_an_ack_every_second_segment():
    """Outside a batch, each arriving segment is processed and answered on its own: an ACK
    after every second full-sized segment, exactly."""
    a, b, ep, srv, data = _flight(10)
    acks = []
    for i, p in enumerate(data):
        b.receive_packet(p, 0.11)
        acks += [(i, s.ack) for s in map(tcp_of, b.packets_to_send())]
    ends = [(tcp_of(p).seq + len(tcp_of(p).payload)) & 0xFFFFFFFF for p in data]
    assert acks == [(i, ends[i]) for i in range(1, 10, 2)]


@pytest.mark.parametrize("segments", [2, 4, 40])
def test_a_gro_super_packet_counts_as_the_segments_it_carries(segments):
    """A GRO super-packet (checksum vouched for by the link, payload = segments * MSS) is
    acknowledged at once, as its segments arriving together would be."""
    a, b, ep, srv = pair("10.0.0.1", "10.0.0.2")
    c = ep.conn
    seg = TCPSegment(c.local_port, c.remote_port, c.snd_nxt & 0xFFFFFFFF, c.rcv_nxt & 0xFFFFFFFF,
                     ACK, 65535, bytes(segments * 1448), tsval=c._ts(0.1), tsecr=c.ts_recent)
    b.receive_packets([build_ip_tcp(seg, A4, B4)], 0.1, [True])
    (ack,) = map(tcp_of, b.packets_to_send())
    assert ack.flags == ACK and ack.ack == (seg.seq + segments * 1448) & 0xFFFFFFFF
