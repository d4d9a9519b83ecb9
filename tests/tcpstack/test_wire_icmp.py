"""ICMP (RFC 792/1191) and ICMPv6 (RFC 4443) messages (tcpstack.wire.icmp)."""
from __future__ import annotations

import ipaddress
import pytest
from hypothesis import given, settings, strategies as st

from tcpstack.wire import icmp
from tcpstack.errors import ParseError
from tcpstack.wire.ip import build_ipv4, build_ipv6, parse_ip
from tcpstack.wire.segment import ACK, SYN, TCPSegment
from tcpstack.wire.tcp import build_ip_tcp

from tests.tcpstack.hosts import ref_checksum

A4 = ipaddress.ip_address("10.77.0.2").packed
B4 = ipaddress.ip_address("10.77.0.1").packed
A6 = ipaddress.ip_address("fd77::2").packed
B6 = ipaddress.ip_address("fd77::1").packed

# Our echo requests, written into a Linux TUN device, and Linux's replies.
REQ4 = bytes.fromhex("4500002900000000400166380a4d00020a4d00010800f0264242000374637063727970742d70696e67")
LINUX_REPLY4 = bytes.fromhex(
    "450000291fd00000400146680a4d00010a4d00020000f8264242000374637063727970742d70696e67")
REQ6 = bytes.fromhex(
    "6000000000153a40fd770000000000000000000000000002fd770000000000000000000000000001"
    "80007ce44242000374637063727970742d70696e67")
LINUX_REPLY6 = bytes.fromhex(
    "6006e3b100153a40fd770000000000000000000000000001fd770000000000000000000000000002"
    "81007be44242000374637063727970742d70696e67")


def test_echo_v4_against_linux() -> None:
    assert icmp.build_icmp_echo_request(A4, B4, ident=0x4242, seq=3, data=b"tcpcrypt-ping",
                                        v6=False) == REQ4
    h, pl = parse_ip(REQ4)
    req = icmp.parse_icmp(pl, h.src, h.dst, v6=False)
    assert (req.type, req.code, req.ident, req.seq, bytes(req.payload)) == \
        (icmp.ICMP_ECHO_REQUEST, 0, 0x4242, 3, b"tcpcrypt-ping")
    reply = icmp.build_icmp_echo_reply(req, h.dst, h.src, v6=False)
    assert reply[20:] == LINUX_REPLY4[20:]          # ICMP part identical to Linux's
    h2, pl2 = parse_ip(LINUX_REPLY4)
    m = icmp.parse_icmp(pl2, h2.src, h2.dst, v6=False)
    assert (m.type, m.ident, m.seq, bytes(m.payload)) == (icmp.ICMP_ECHO_REPLY, 0x4242, 3,
                                                          b"tcpcrypt-ping")
    assert not icmp.is_error(m) and icmp.quoted_tcp_ports_seq(m) is None


def test_echo_v6_against_linux() -> None:
    assert icmp.build_icmp_echo_request(A6, B6, ident=0x4242, seq=3, data=b"tcpcrypt-ping",
                                        v6=True) == REQ6
    h, pl = parse_ip(REQ6)
    # Independent check: ICMPv6 checksum covers the IPv6 pseudo-header (RFC 4443 2.3).
    assert ref_checksum(h.src + h.dst + len(pl).to_bytes(4, "big") + b"\0\0\0\x3a" + bytes(pl)) == 0
    req = icmp.parse_icmp(pl, h.src, h.dst, v6=True)
    assert (req.type, req.ident, req.seq) == (icmp.ICMP6_ECHO_REQUEST, 0x4242, 3)
    reply = icmp.build_icmp_echo_reply(req, h.dst, h.src, v6=True)
    assert reply[40:] == LINUX_REPLY6[40:]
    with pytest.raises(ParseError, match="checksum"):
        icmp.parse_icmp(pl, h.src, h.src, v6=True)     # pseudo-header matters
    with pytest.raises(ParseError, match="checksum"):
        icmp.parse_icmp(pl, h.src, h.dst, v6=False)    # ICMPv4 has none


def _tcp_packet(v6: bool) -> bytes:
    seg = TCPSegment(40000, 443, 0x11223344, 5, ACK, 100, b"x" * 1400, tsval=1, tsecr=2)
    return build_ip_tcp(seg, B6, A6) if v6 else build_ip_tcp(seg, B4, A4)


@pytest.mark.parametrize("v6", [False, True])
def test_frag_needed_and_quote(v6: bool) -> None:
    orig = _tcp_packet(v6)
    src, dst = (A6, B6) if v6 else (A4, B4)       # a router on the path -> our host
    typ = icmp.ICMP6_PACKET_TOO_BIG if v6 else icmp.ICMP_DEST_UNREACH
    code = 0 if v6 else icmp.UNREACH_FRAG_NEEDED
    pkt = icmp.build_icmp_error(orig, src, dst, v6=v6, type=typ, code=code, mtu=1280)
    # RFC 1812 4.3.2.3: the whole error fits in 576 bytes (IPv4); RFC 4443 2.4(c): 1280.
    assert len(pkt) == (1280 if v6 else 576)
    h, pl = parse_ip(pkt)
    m = icmp.parse_icmp(pl, h.src, h.dst, v6=v6)
    assert (m.type, m.code, m.mtu) == (typ, code, 1280)
    assert icmp.is_error(m) and icmp.is_packet_too_big(m) and not icmp.is_hard_error(m)
    assert bytes(m.quoted) == orig[:len(m.quoted)]
    q = icmp.quoted_tcp_ports_seq(m)
    assert q == ((B6, A6) if v6 else (B4, A4)) + (40000, 443, 0x11223344)
    # Round trip: rebuild from the parsed message, byte-identical.
    assert icmp.build_icmp_error(m.quoted, h.src, h.dst, v6=v6, type=m.type, code=m.code,
                                 mtu=m.mtu) == pkt
    # RFC 1191 4: unused(16) next-hop MTU(16); RFC 4443 3.2: MTU(32).  Same bytes for 1280.
    assert pl[4:8] == b"\0\0\x05\x00"


@pytest.mark.parametrize("v6, code, hard", [(False, icmp.UNREACH_PORT, True),
                                            (False, icmp.UNREACH_HOST, False),
                                            (False, icmp.UNREACH_PROTOCOL, True),
                                            (True, icmp.UNREACH6_PORT, True),
                                            (True, icmp.UNREACH6_NO_ROUTE, False)])
def test_unreachable_small_quote(v6: bool, code: int, hard: bool) -> None:
    syn = TCPSegment(1025, 80, 7, 0, SYN, 100, mss=1460)
    orig = build_ip_tcp(syn, B6, A6) if v6 else build_ip_tcp(syn, B4, A4)
    typ = icmp.ICMP6_DEST_UNREACH if v6 else icmp.ICMP_DEST_UNREACH
    pkt = icmp.build_icmp_error(orig, A6 if v6 else A4, B6 if v6 else B4, v6=v6, type=typ, code=code)
    h, pl = parse_ip(pkt)
    assert len(pl) == 8 + len(orig)       # the whole small datagram is quoted
    m = icmp.parse_icmp(pl, h.src, h.dst, v6=v6)
    assert icmp.is_hard_error(m) is hard and not icmp.is_packet_too_big(m) and m.mtu == 0
    assert icmp.quoted_tcp_ports_seq(m) == ((B6, A6) if v6 else (B4, A4)) + (1025, 80, 7)


def test_time_exceeded_and_short_quotes() -> None:
    orig = _tcp_packet(False)
    pkt = icmp.build_icmp_error(orig[:27], A4, B4, v6=False, type=icmp.ICMP_TIME_EXCEEDED, code=0)
    h, pl = parse_ip(pkt)
    m = icmp.parse_icmp(pl, h.src, h.dst, v6=False)
    assert icmp.is_error(m) and not icmp.is_hard_error(m)
    assert icmp.quoted_tcp_ports_seq(m) is None          # fewer than 8 bytes of TCP
    udp = build_ipv4(B4, A4, 17, bytes(8))
    pkt = icmp.build_icmp_error(udp, A4, B4, v6=False, type=3, code=3)
    h, pl = parse_ip(pkt)
    assert icmp.quoted_tcp_ports_seq(icmp.parse_icmp(pl, h.src, h.dst, v6=False)) is None


def test_error_allowed() -> None:
    tcp = _tcp_packet(False)
    assert icmp.error_allowed(tcp)
    err = icmp.build_icmp_error(tcp, A4, B4, v6=False, type=3, code=3)
    assert not icmp.error_allowed(err)                  # never about an ICMP error
    echo = icmp.build_icmp_echo_request(A4, B4, ident=1, seq=1, v6=False)
    assert icmp.error_allowed(echo)
    assert not icmp.error_allowed(build_ipv4(A4, b"\xff\xff\xff\xff", 6, bytes(20)))
    assert not icmp.error_allowed(build_ipv4(A4, bytes([224, 0, 0, 1]), 6, bytes(20)))
    assert not icmp.error_allowed(build_ipv4(A4, B4, 6, bytes(8), frag_offset=8, df=False))
    err6 = icmp.build_icmp_error(_tcp_packet(True), A6, B6, v6=True, type=1, code=4)
    assert not icmp.error_allowed(err6)
    assert icmp.error_allowed(_tcp_packet(True))
    assert not icmp.error_allowed(build_ipv6(A6, b"\xff\x02" + bytes(13) + b"\x01", 6, bytes(20)))
    assert not icmp.error_allowed(b"garbage")


@settings(max_examples=200)
@given(st.booleans(), st.integers(0, 0xFFFF), st.integers(0, 0xFFFF), st.binary(max_size=600))
def test_echo_round_trip(v6: bool, ident: int, seq: int, data: bytes) -> None:
    src, dst = (A6, B6) if v6 else (A4, B4)
    pkt = icmp.build_icmp_echo_request(src, dst, ident=ident, seq=seq, data=data, v6=v6)
    h, pl = parse_ip(pkt)
    m = icmp.parse_icmp(pl, h.src, h.dst, v6=v6)
    assert (m.ident, m.seq, bytes(m.payload), m.v6) == (ident, seq, data, v6)
    assert icmp.build_icmp_echo_request(h.src, h.dst, ident=m.ident, seq=m.seq,
                                        data=bytes(m.payload), v6=v6) == pkt


@settings(max_examples=200)
@given(st.booleans(), st.integers(0, 255), st.integers(0, 255), st.integers(0, 0xFFFF),
       st.binary(max_size=2000))
def test_error_round_trip(v6: bool, typ: int, code: int, mtu: int, quoted: bytes) -> None:
    src, dst = (A6, B6) if v6 else (A4, B4)
    pkt = icmp.build_icmp_error(quoted, src, dst, v6=v6, type=typ, code=code, mtu=mtu)
    h, pl = parse_ip(pkt)
    m = icmp.parse_icmp(pl, h.src, h.dst, v6=v6)
    assert (m.type, m.code) == (typ, code)
    assert icmp.build_icmp_error(m.quoted, src, dst, v6=v6, type=m.type, code=m.code,
                                 mtu=m.mtu) == pkt


def test_malformed() -> None:
    with pytest.raises(ParseError, match="shorter than its 8-byte header"):
        icmp.parse_icmp(b"\x08\x00\x00\x00", A4, B4, v6=False)
    good = bytearray(REQ4[20:])
    good[-1] ^= 1
    with pytest.raises(ParseError, match="bad ICMP checksum"):
        icmp.parse_icmp(bytes(good), A4, B4, v6=False)


@settings(max_examples=400)
@given(st.binary(max_size=100), st.booleans())
def test_random_bytes_only_parse_error(data: bytes, v6: bool) -> None:
    src, dst = (A6, B6) if v6 else (A4, B4)
    try:
        m = icmp.parse_icmp(data, src, dst, v6=v6)
    except ParseError:
        return
    icmp.quoted_tcp_ports_seq(m)
    icmp.describe(m)


@settings(max_examples=300)
@given(st.booleans(), st.binary(max_size=100))
def test_random_quotes(v6: bool, quoted: bytes) -> None:
    # Checksum-valid errors with random quoted data: lookup never raises.
    src, dst = (A6, B6) if v6 else (A4, B4)
    pkt = icmp.build_icmp_error(quoted, src, dst, v6=v6, type=1 if v6 else 3, code=3)
    h, pl = parse_ip(pkt)
    r = icmp.quoted_tcp_ports_seq(icmp.parse_icmp(pl, h.src, h.dst, v6=v6))
    assert r is None or (len(r) == 5 and 0 <= r[2] < 65536 and 0 <= r[4] < 2**32)
