"""TCP header and options (tcpstack.wire.tcp): Linux captures, round trips, strict validation."""
from __future__ import annotations

import ipaddress
import struct

import pytest
from hypothesis import given, settings, strategies as st

from tcpstack.errors import ParseError, TcpStackError
from tcpstack.wire.ip import build_ipv4, build_ipv6, parse_ip
from tcpstack.wire.segment import ACK, FIN, PSH, SYN, TCPSegment
from tcpstack.wire.tcp import build_ip_tcp, build_tcp, options_length, parse_tcp

from tests.tcpstack.hosts import ref_checksum

A4 = ipaddress.ip_address("10.77.0.1").packed
B4 = ipaddress.ip_address("10.77.0.2").packed
A6 = ipaddress.ip_address("fd77::1").packed
B6 = ipaddress.ip_address("fd77::2").packed

# Captured from Linux 6.x through a TUN device (connect() to 10.77.0.2:80 / [fd77::2]:80),
# and the ACK Linux sent in reply to a SYN-ACK built by build_ip_tcp (so Linux accepted our
# checksums and options).
LINUX_SYN4 = bytes.fromhex(
    "4500003ce1c64000400644590a4d00010a4d0002a8720050f6d6ea3900000000a002faf0da210000"
    "020405b40402080a2ca7a7d3000000000103030a")
LINUX_ACK4 = bytes.fromhex(
    "45000034e1c74000400644600a4d00010a4d0002a8720050f6d6ea3a000003e98010003fcf700000"
    "0101080a2ca7a7d300003039")
LINUX_SYN6 = bytes.fromhex(
    "600abbcc00280640fd770000000000000000000000000001fd770000000000000000000000000002"
    "e3480050352f0ed400000000a002fd20ee110000020405a00402080a54b4e59b000000000103030a")


def pseudo4(src: bytes, dst: bytes, length: int) -> bytes:
    return src + dst + b"\0\x06" + length.to_bytes(2, "big")


def pseudo6(src: bytes, dst: bytes, length: int) -> bytes:
    return src + dst + length.to_bytes(4, "big") + b"\0\0\0\x06"


def test_linux_syn_v4() -> None:
    h, pl = parse_ip(LINUX_SYN4)
    # Independent check of the captured checksum with the slow reference.
    assert ref_checksum(pseudo4(h.src, h.dst, len(pl)) + bytes(pl)) == 0
    seg = parse_tcp(pl, h.src, h.dst)
    assert seg == TCPSegment(43122, 80, 4141279801, 0, SYN, 64240, mss=1460, sack_permitted=True,
                             tsval=749184979, tsecr=0, wscale=10)
    assert isinstance(seg.payload, memoryview) and len(seg.payload) == 0
    # Our builder lays the options out exactly as Linux does.
    assert build_ip_tcp(seg, h.src, h.dst, ident=h.ident, ttl=h.ttl) == LINUX_SYN4
    assert build_tcp(seg, h.src, h.dst) == bytes(pl)
    assert options_length(seg) == 20


def test_linux_ack_v4() -> None:
    h, pl = parse_ip(LINUX_ACK4)
    seg = parse_tcp(pl, h.src, h.dst)
    assert seg == TCPSegment(43122, 80, 4141279802, 1001, ACK, 63, tsval=749184979, tsecr=12345)
    assert build_ip_tcp(seg, h.src, h.dst, ident=h.ident) == LINUX_ACK4
    assert options_length(seg) == 12


def test_linux_syn_v6() -> None:
    h, pl = parse_ip(LINUX_SYN6)
    assert ref_checksum(pseudo6(h.src, h.dst, len(pl)) + bytes(pl)) == 0
    seg = parse_tcp(pl, h.src, h.dst)
    assert seg == TCPSegment(58184, 80, 892276436, 0, SYN, 64800, mss=1440, sack_permitted=True,
                             tsval=1421141403, tsecr=0, wscale=10)
    assert build_ip_tcp(seg, h.src, h.dst, ttl=h.hop_limit, flow_label=h.flow_label) == LINUX_SYN6


def test_hand_built_syn_checksum() -> None:
    # A SYN assembled by hand, checksum computed by the slow reference.
    hdr = struct.pack("!HHIIHHHH", 1234, 80, 1, 0, (6 << 12) | SYN, 65535, 0, 0) + \
        bytes.fromhex("020405b4")
    csum = ref_checksum(pseudo4(A4, B4, len(hdr)) + hdr)
    wire = hdr[:16] + csum.to_bytes(2, "big") + hdr[18:]
    assert build_tcp(TCPSegment(1234, 80, 1, 0, SYN, 65535, mss=1460), A4, B4) == wire
    assert parse_tcp(wire, A4, B4) == TCPSegment(1234, 80, 1, 0, SYN, 65535, mss=1460)


def test_data_segment_payload_is_view() -> None:
    data = bytes(range(256)) * 6
    seg = TCPSegment(5, 6, 100, 200, ACK | PSH, 1000, data, tsval=1, tsecr=2)
    for src, dst in ((A4, B4), (A6, B6)):
        pkt = build_ip_tcp(seg, src, dst)
        h, pl = parse_ip(pkt)
        got = parse_tcp(pl, h.src, h.dst)
        assert got == seg
        assert isinstance(got.payload, memoryview) and got.payload.obj is pkt   # no copy
        assert build_ip_tcp(got, src, dst) == pkt
        wrap = build_ipv4(src, dst, 6, build_tcp(seg, src, dst)) if len(src) == 4 else \
            build_ipv6(src, dst, 6, build_tcp(seg, src, dst))
        assert wrap == pkt


def test_syn_layouts() -> None:
    # SYN without timestamps: MSS | NOP NOP SACKOK | NOP WS (Linux).
    seg = TCPSegment(1, 2, 3, 0, SYN, 100, mss=1460, sack_permitted=True, wscale=7)
    raw = build_tcp(seg, A4, B4)
    assert raw[20:] == bytes.fromhex("020405b4" "01010402" "01030307")
    # Timestamps without SACK: NOP NOP TS.
    seg = TCPSegment(1, 2, 3, 0, SYN, 100, tsval=7, tsecr=0)
    assert build_tcp(seg, A4, B4)[20:] == bytes.fromhex("0101080a0000000700000000")
    # ENO (RFC 8547): kind 69, padded with NOPs; an empty ENO is just kind+length.
    seg = TCPSegment(1, 2, 3, 0, SYN, 100, eno=(b"\x20\x21", b""))
    assert build_tcp(seg, A4, B4)[20:] == bytes.fromhex("45042021" "45020101")
    # Non-SYN with SACK blocks after timestamps.
    seg = TCPSegment(1, 2, 3, 4, ACK, 100, tsval=1, tsecr=2, sack_blocks=((10, 20), (30, 40)))
    raw = build_tcp(seg, A4, B4)
    assert raw[20:] == bytes.fromhex("0101080a0000000100000002" "0101" "0512"
                                     "0000000a00000014" "0000001e00000028")
    assert (raw[12] >> 4) * 4 == 20 + 32 == 20 + options_length(seg)


def test_option_space_limit() -> None:
    seg = TCPSegment(1, 2, 3, 4, ACK, 100, tsval=1, tsecr=2,
                     sack_blocks=((1, 2), (3, 4), (5, 6), (7, 8)))
    assert options_length(seg) == 48
    with pytest.raises(TcpStackError):
        build_tcp(seg, A4, B4)
    with pytest.raises(TcpStackError):
        build_ip_tcp(seg, A4, B4)
    with pytest.raises(TcpStackError):
        build_tcp(TCPSegment(1, 2, 3, 4, ACK, 1, eno=(bytes(300),)), A4, B4)
    seg.sack_blocks = seg.sack_blocks[:3]
    assert options_length(seg) == 40 and len(build_tcp(seg, A4, B4)) == 60


def test_parse_with_eol_and_odd_padding() -> None:
    # MSS, EOL, garbage after EOL is ignored (RFC 9293 3.2: end of option list).
    opts = bytes.fromhex("020405b4" "00ffffff")
    hdr = struct.pack("!HHIIHHHH", 1, 2, 3, 0, (7 << 12) | SYN, 5, 0, 0) + opts
    seg = parse_tcp(hdr, A4, B4, verify_checksum=False)
    assert seg.mss == 1460 and seg.eno == () and seg.unknown_options == ()
    # Unknown option kept; ENO of several kinds and lengths kept in order.
    opts = bytes.fromhex("1e0401ff" "4503aa" "4502" "450500bbcc" "0000")
    hdr = struct.pack("!HHIIHHHH", 1, 2, 3, 0, (9 << 12) | ACK, 5, 0, 0) + opts
    seg = parse_tcp(hdr + b"data", A4, B4, verify_checksum=False)
    assert seg.unknown_options == ((30, b"\x01\xff"),)
    assert seg.eno == (b"\xaa", b"", b"\x00\xbb\xcc")
    assert bytes(seg.payload) == b"data"


def _raw(opts: bytes, *, doff: int | None = None, extra: bytes = b"") -> bytes:
    doff = (20 + len(opts)) // 4 if doff is None else doff
    return struct.pack("!HHIIHHHH", 1, 2, 3, 4, (doff << 12) | ACK, 5, 0, 0) + opts + extra


@pytest.mark.parametrize("data, msg", [
    (bytes(19), "shorter than a header"),
    (_raw(b"", doff=4), "data offset 4 is below"),
    (_raw(b"", doff=6), "runs past the segment"),
    (_raw(b"\x02\x04\x05"), None),   # not a multiple of 4: doff covers only 20 + 0
    (_raw(b"\x01\x01\x01\x02"), "has no length byte"),
    (_raw(b"\x1e\x01\x01\x01"), "bad length 1"),
    (_raw(b"\x1e\x00\x01\x01"), "bad length 0"),
    (_raw(b"\x1e\x06\x01\x01"), "bad length 6"),
    (_raw(b"\x02\x03\x05\x01"), "MSS option length 3"),
    (_raw(b"\x03\x04\x07\x01"), "window scale option length 4"),
    (_raw(b"\x04\x03\x00\x01"), "SACK-permitted option length 3"),
    (_raw(b"\x01\x05\x0b" + bytes(9)), "SACK option length 11"),
    (_raw(b"\x01\x01\x05\x02"), "SACK option length 2"),
    (_raw(b"\x08\x0c" + bytes(10)), "timestamps option length 12"),
])
def test_malformed(data: bytes, msg: str | None) -> None:
    if msg is None:
        assert parse_tcp(data, A4, B4, verify_checksum=False).mss is None
        return
    with pytest.raises(ParseError, match=msg):
        parse_tcp(data, A4, B4, verify_checksum=False)


def test_bad_checksum() -> None:
    raw = bytearray(build_tcp(TCPSegment(1, 2, 3, 4, ACK, 5, b"hello"), A4, B4))
    parse_tcp(bytes(raw), A4, B4)
    with pytest.raises(ParseError, match="checksum"):
        parse_tcp(bytes(raw), A4, A4)              # wrong pseudo-header
    raw[-1] ^= 0x40
    with pytest.raises(ParseError, match="bad TCP checksum"):
        parse_tcp(bytes(raw), A4, B4)
    assert bytes(parse_tcp(bytes(raw), A4, B4, verify_checksum=False).payload) == b"hello"[:4] + b"/"


u32 = st.integers(0, 2**32 - 1)
unknown_kinds = st.integers(6, 254).filter(lambda k: k not in (8, 69))


@st.composite
def segments(draw: st.DrawFn) -> TCPSegment:
    syn = draw(st.booleans())
    flags = draw(st.integers(0, 255)) | (SYN if syn else 0)
    seg = TCPSegment(draw(st.integers(0, 65535)), draw(st.integers(0, 65535)), draw(u32), draw(u32),
                     flags, draw(st.integers(0, 65535)), draw(st.binary(max_size=300)),
                     urg_ptr=draw(st.integers(0, 65535)))
    if draw(st.booleans()):
        seg.mss = draw(st.integers(0, 65535))
    if draw(st.booleans()):
        seg.wscale = draw(st.integers(0, 255))
    seg.sack_permitted = draw(st.booleans())
    if draw(st.booleans()):
        seg.tsval, seg.tsecr = draw(u32), draw(u32)
    seg.sack_blocks = tuple(draw(st.lists(st.tuples(u32, u32), max_size=4)))
    seg.eno = tuple(draw(st.lists(st.binary(max_size=12), max_size=3)))
    seg.unknown_options = tuple(draw(st.lists(st.tuples(unknown_kinds, st.binary(max_size=8)),
                                              max_size=2)))
    return seg


@settings(max_examples=400)
@given(segments(), st.booleans())
def test_round_trip(seg: TCPSegment, v6: bool) -> None:
    src, dst = (A6, B6) if v6 else (A4, B4)
    n = options_length(seg)
    if n > 40:
        with pytest.raises(TcpStackError):
            build_tcp(seg, src, dst)
        return
    raw = build_tcp(seg, src, dst)
    assert len(raw) == 20 + n + len(seg.payload)
    pseudo = (pseudo6 if v6 else pseudo4)(src, dst, len(raw))
    assert ref_checksum(pseudo + raw) == 0
    got = parse_tcp(raw, src, dst)
    assert got == seg
    assert build_tcp(got, src, dst) == raw
    pkt = build_ip_tcp(seg, src, dst)
    h, pl = parse_ip(pkt)
    assert bytes(pl) == raw and parse_tcp(pl, h.src, h.dst) == seg


@settings(max_examples=500)
@given(st.binary(max_size=80))
def test_random_bytes_only_parse_error(data: bytes) -> None:
    for blob in (data, _raw(b"", doff=15) + data, _raw(data[:40].ljust(40, b"\0"))):
        try:
            parse_tcp(blob, A4, B4, verify_checksum=False)
        except ParseError:
            pass
        try:
            parse_tcp(blob, A6, B6)
        except ParseError:
            pass


def test_flags_and_fin() -> None:
    seg = TCPSegment(1, 2, 3, 4, FIN | ACK | 0x80 | 0x40, 9)
    assert parse_tcp(build_tcp(seg, A4, B4), A4, B4).flags == FIN | ACK | 0xC0


@settings(max_examples=300)
@given(st.integers(0, 3), st.booleans(), st.binary(max_size=1500), st.booleans(),
       st.integers(0, 65535), st.integers(0, 255))
def test_per_segment_layouts(nblocks: int, ts: bool, payload: bytes, v6: bool, ident: int,
                             tos: int) -> None:
    """The options of every non-SYN segment ("NOP NOP TS", then "NOP NOP SACK") and the
    packet around them, which build_ip_tcp and _parse_options take shortcuts for: the same
    bytes as build_tcp's layout, both checksums valid, parsed back whole."""
    src, dst = (A6, B6) if v6 else (A4, B4)
    blocks = tuple((0xFFFFFF00 + 7 * i, 0x10 + 9 * i) for i in range(nblocks))
    seg = TCPSegment(40000, 443, 0xFFFFFFF0, 12345, ACK | PSH, 0xFFFF, payload,
                     sack_blocks=blocks)
    if ts:
        seg.tsval, seg.tsecr = 0xFFFFFFFF, 1
    raw = build_tcp(seg, src, dst)
    assert raw[20:20 + 12 * ts + (4 + 8 * nblocks if nblocks else 0)] == (
        (b"\x01\x01\x08\x0a" + b"\xff\xff\xff\xff\x00\x00\x00\x01" if ts else b"")
        + (bytes((1, 1, 5, 2 + 8 * nblocks)) if nblocks else b"")
        + b"".join(struct.pack("!II", l, r) for l, r in blocks))
    pkt = build_ip_tcp(seg, src, dst, ident=ident, tos=tos)
    h, pl = parse_ip(pkt)                  # (verifies the IPv4 header checksum)
    assert bytes(pl) == raw
    assert ref_checksum((pseudo6 if v6 else pseudo4)(src, dst, len(raw)) + raw) == 0
    got = parse_tcp(pl, h.src, h.dst)
    assert got == seg and got.sack_blocks == blocks
