"""IPv4/IPv6 headers: round trips, extension headers, strict validation (tcpstack.wire.ip)."""
from __future__ import annotations

import ipaddress
import struct

import pytest
from hypothesis import given, settings, strategies as st

from tcpstack.errors import ParseError
from tcpstack.wire.ip import IPv4Header, IPv6Header, build_ipv4, build_ipv6, parse_ip

from tests.tcpstack.hosts import ref_checksum

A4 = ipaddress.ip_address("10.0.0.1").packed
B4 = ipaddress.ip_address("10.0.0.2").packed
A6 = ipaddress.ip_address("fd00::1").packed
B6 = ipaddress.ip_address("fd00::2").packed

addr4 = st.binary(min_size=4, max_size=4)
addr6 = st.binary(min_size=16, max_size=16)
payloads = st.binary(max_size=2000)


def _ext(typ: int, body_len8: int, fill: int) -> tuple[int, bytes]:
    """A generic extension header of (body_len8 + 1) * 8 bytes (next header rewritten later)."""
    size = (body_len8 + 1) * 8
    return typ, bytes((0, body_len8)) + bytes([fill]) * (size - 2)


ext_headers = st.lists(
    st.tuples(st.sampled_from([43, 60]), st.integers(0, 3), st.integers(0, 255)).map(
        lambda t: _ext(*t)), max_size=3)


@given(addr4, addr4, st.integers(0, 255), payloads, st.integers(1, 255), st.integers(0, 0xFFFF),
       st.booleans(), st.integers(0, 255),
       st.integers(0, 10).map(lambda n: bytes([1] * (4 * n))))
def test_ipv4_round_trip(src: bytes, dst: bytes, proto: int, payload: bytes, ttl: int, ident: int,
                         df: bool, tos: int, options: bytes) -> None:
    pkt = build_ipv4(src, dst, proto, payload, ttl=ttl, ident=ident, df=df, tos=tos, options=options)
    h, pl = parse_ip(pkt)
    assert isinstance(h, IPv4Header) and h.version == 4
    assert (h.src, h.dst, h.proto, h.ttl, h.ident, h.tos) == (src, dst, proto, ttl, ident, tos)
    assert h.flags == (0x2 if df else 0) and h.frag_offset == 0 and not h.is_fragment
    assert h.options == options and h.header_length == 20 + len(options)
    assert h.total_length == len(pkt)
    assert isinstance(pl, memoryview) and bytes(pl) == payload
    assert build_ipv4(h.src, h.dst, h.proto, pl, ttl=h.ttl, ident=h.ident, df=bool(h.flags & 2),
                      tos=h.tos, options=h.options) == pkt
    assert ref_checksum(pkt[:h.header_length]) == 0


@given(addr6, addr6, st.integers(0, 255).filter(lambda n: n not in (0, 43, 44, 51, 60)), payloads,
       st.integers(0, 255), st.integers(0, 255), st.integers(0, 0xFFFFF), ext_headers,
       st.booleans())
def test_ipv6_round_trip(src: bytes, dst: bytes, nh: int, payload: bytes, hlim: int, tc: int,
                         flow: int, exts: list[tuple[int, bytes]], hbh: bool) -> None:
    if hbh:
        exts = [_ext(0, 0, 1)] + exts
    pkt = build_ipv6(src, dst, nh, payload, hop_limit=hlim, traffic_class=tc, flow_label=flow,
                     extensions=exts)
    h, pl = parse_ip(pkt)
    assert isinstance(h, IPv6Header) and h.version == 6
    assert (h.src, h.dst, h.next_header, h.proto, h.hop_limit, h.traffic_class, h.flow_label) == \
        (src, dst, nh, nh, hlim, tc, flow)
    assert [t for t, _ in h.ext_headers] == [t for t, _ in exts]
    assert bytes(pl) == payload and not h.is_fragment
    assert build_ipv6(h.src, h.dst, h.next_header, pl, hop_limit=h.hop_limit,
                      traffic_class=h.traffic_class, flow_label=h.flow_label,
                      extensions=h.ext_headers) == pkt


def test_ipv6_known_bytes() -> None:
    # Hand-assembled: version 6, tc 0, flow 0xabbcc, plen 4, nh 6, hlim 64.
    pkt = bytes.fromhex("600abbcc" "0004" "06" "40") + A6 + B6 + b"abcd"
    assert build_ipv6(A6, B6, 6, b"abcd", flow_label=0xABBCC) == pkt
    h, pl = parse_ip(pkt + b"\0\0")         # link padding is ignored
    assert bytes(pl) == b"abcd" and h.payload_length == 4


def test_ipv4_link_padding_trimmed() -> None:
    pkt = build_ipv4(A4, B4, 6, b"xyz")
    h, pl = parse_ip(pkt + b"\0" * 7)
    assert bytes(pl) == b"xyz"


def test_ipv4_fragment_fields() -> None:
    pkt = build_ipv4(A4, B4, 17, b"x" * 16, ident=77, df=False, frag_offset=1480,
                     more_fragments=True)
    h, pl = parse_ip(pkt)
    assert isinstance(h, IPv4Header)
    assert h.is_fragment and h.more_fragments and h.fragment_offset_bytes == 1480
    assert h.frag_offset == 185 and h.flags == 0x1 and h.ident == 77
    last = build_ipv4(A4, B4, 17, b"y", ident=77, df=False, frag_offset=8)
    h2, _ = parse_ip(last)
    assert h2.is_fragment and not h2.more_fragments


def test_ipv6_fragment_header() -> None:
    frag = struct.pack("!BBHI", 0, 0, (1232 >> 3) << 3 | 1, 0xDEADBEEF)
    pkt = build_ipv6(A6, B6, 6, b"z" * 8, extensions=[(60, bytes(8)), (44, frag)])
    h, pl = parse_ip(pkt)
    assert isinstance(h, IPv6Header)
    assert h.is_fragment and h.more_fragments and h.fragment_offset_bytes == 1232
    assert h.ident == 0xDEADBEEF and h.next_header == 6 and bytes(pl) == b"z" * 8
    # An atomic fragment (offset 0, M=0; RFC 8200 4.5) is a whole packet: walk on to TCP.
    atomic = build_ipv6(A6, B6, 6, b"tcp!", extensions=[(44, struct.pack("!BBHI", 0, 0, 0, 9)),
                                                          (60, bytes(8))])
    h, pl = parse_ip(atomic)
    assert not h.is_fragment and h.next_header == 6 and bytes(pl) == b"tcp!"
    # Non-initial fragment: headers behind the fragment header are not walked.
    later = build_ipv6(A6, B6, 60, bytes(8), extensions=[(44, struct.pack("!BBHI", 0, 0, 8, 9))])
    h, pl = parse_ip(later)
    assert h.is_fragment and h.next_header == 60 and len(pl) == 8


def _v4(**kw: int) -> bytearray:
    pkt = bytearray(build_ipv4(A4, B4, 6, b"p" * 20))
    for k, v in kw.items():
        if k == "vihl":
            pkt[0] = v
        elif k == "total":
            struct.pack_into("!H", pkt, 2, v)
    struct.pack_into("!H", pkt, 10, 0)
    struct.pack_into("!H", pkt, 10, ref_checksum(bytes(pkt[:(pkt[0] & 15) * 4 or 20])))
    return pkt


@pytest.mark.parametrize("pkt, msg", [
    (b"", "empty"),
    (bytes([0x45]) + bytes(10), "shorter than a header"),
    (bytes(_v4(vihl=0x44)), "IHL 4 is below"),
    (bytes(_v4(vihl=0x55)), "unknown IP version 5"),
    (bytes(_v4(total=19)), "total length 19 inconsistent"),
    (bytes(_v4(total=500)), "total length 500 inconsistent"),
    (bytes(_v4(vihl=0x4F)), "inconsistent"),
    (bytes([0x75]) + bytes(50), "unknown IP version 7"),
    (bytes([0x60]) + bytes(20), "IPv6 packet of 21 bytes"),
    (build_ipv6(A6, B6, 6, b"abc")[:42], "payload length 3 exceeds"),
])
def test_malformed(pkt: bytes, msg: str) -> None:
    with pytest.raises(ParseError, match=msg):
        parse_ip(pkt)


def test_bad_ipv4_checksum() -> None:
    pkt = bytearray(build_ipv4(A4, B4, 6, b"data"))
    pkt[8] ^= 1                                   # TTL changed, checksum not updated
    with pytest.raises(ParseError, match="checksum"):
        parse_ip(bytes(pkt))


def test_ipv6_malformed_extensions() -> None:
    # Extension header claims more bytes than the payload has.
    bad = bytearray(build_ipv6(A6, B6, 6, b"", extensions=[(60, bytes(8))]))
    bad[41] = 5
    with pytest.raises(ParseError, match="runs past"):
        parse_ip(bytes(bad))
    # Truncated: payload too short for an extension header.
    short = build_ipv6(A6, B6, 60, b"\x06\x00\x00")
    with pytest.raises(ParseError, match="truncated"):
        parse_ip(short)
    # Hop-by-hop not first (RFC 8200 4.1).
    with pytest.raises(ParseError, match="hop-by-hop"):
        parse_ip(build_ipv6(A6, B6, 6, b"", extensions=[(60, bytes(8)), (0, bytes(8))]))
    # Two fragment headers.
    f = struct.pack("!BBHI", 0, 0, 0, 1)
    with pytest.raises(ParseError, match="more than one"):
        parse_ip(build_ipv6(A6, B6, 6, b"", extensions=[(44, f), (44, f)]))
    # Jumbogram (payload length 0 with hop-by-hop) is refused.
    jumbo = bytearray(build_ipv6(A6, B6, 6, b"", extensions=[(0, bytes(8))]))
    jumbo[4:6] = b"\0\0"
    with pytest.raises(ParseError, match="jumbogram"):
        parse_ip(bytes(jumbo))


def test_build_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError):
        build_ipv4(A4, B4, 6, bytes(65535 - 19))
    with pytest.raises(ValueError):
        build_ipv4(A4, B4, 6, b"", options=b"\x01\x01")
    with pytest.raises(ValueError):
        build_ipv6(A6, B6, 6, bytes(65536))
    with pytest.raises(ValueError):
        build_ipv6(A6, B6, 6, b"", extensions=[(60, bytes(7))])


@settings(max_examples=500)
@given(st.binary(max_size=120))
def test_random_bytes_only_parse_error(data: bytes) -> None:
    for pkt in (data, bytes([0x45]) + data, bytes([0x60]) + data):
        try:
            parse_ip(pkt)
        except ParseError:
            pass


@settings(max_examples=300)
@given(st.sampled_from(["v4", "v6"]), st.lists(st.tuples(st.integers(0, 200), st.integers(0, 255)),
                                               max_size=6), st.integers(0, 200))
def test_mutated_packets_only_parse_error(kind: str, flips: list[tuple[int, int]], cut: int) -> None:
    if kind == "v4":
        pkt = bytearray(build_ipv4(A4, B4, 6, b"q" * 40, options=b"\x01" * 8))
    else:
        pkt = bytearray(build_ipv6(A6, B6, 6, b"q" * 40, extensions=[(0, bytes(8)), _ext(60, 1, 0),
                                                                    (44, bytes(8))]))
    for pos, val in flips:
        if pos < len(pkt):
            pkt[pos] = val
    try:
        h, pl = parse_ip(bytes(pkt[:len(pkt) - cut % len(pkt)]))
    except ParseError:
        return
    assert len(pl) <= len(pkt)
