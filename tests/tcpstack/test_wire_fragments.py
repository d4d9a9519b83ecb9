"""IP fragment reassembly (tcpstack.host.fragments) on fragments parsed by tcpstack.wire.ip."""
from __future__ import annotations

import ipaddress
import os
import random
import struct

from hypothesis import given, settings, strategies as st

from tcpstack.host.fragments import FRAGMENT_OVERHEAD, Reassembler
from tcpstack.wire.ip import build_ipv4, build_ipv6, parse_ip

A4 = ipaddress.ip_address("10.0.0.1").packed
B4 = ipaddress.ip_address("10.0.0.2").packed
A6 = ipaddress.ip_address("fd00::1").packed
B6 = ipaddress.ip_address("fd00::2").packed


def frag4(data: bytes, off: int, more: bool, ident: int = 1, src: bytes = A4) -> tuple:
    return parse_ip(build_ipv4(src, B4, 6, data,
                               ident=ident, df=False, frag_offset=off, more_fragments=more))


def fragments4(payload: bytes, size: int, ident: int = 1) -> list[tuple]:
    out = []
    for off in range(0, len(payload), size):
        chunk = payload[off:off + size]
        out.append(frag4(chunk, off, off + size < len(payload), ident))
    return out


def fragments6(payload: bytes, size: int, ident: int = 7) -> list[tuple]:
    out = []
    for off in range(0, len(payload), size):
        chunk = payload[off:off + size]
        more = off + size < len(payload)
        fh = struct.pack("!BBHI", 0, 0, off | int(more), ident)
        out.append(parse_ip(build_ipv6(A6, B6, 6, chunk, extensions=[(44, fh)])))
    return out


def feed(r: Reassembler, frags: list[tuple], now: float = 0.0) -> list[bytes]:
    return [res for h, pl in frags if (res := r.add(h, pl, now)) is not None]


def test_in_order_v4() -> None:
    payload = os.urandom(4000)
    frags = fragments4(payload, 1480)
    assert all(h.is_fragment for h, _ in frags)
    r = Reassembler()
    assert feed(r, frags) == [payload]
    assert r.reassembled == 1 and r.pending_bytes == 0 and r.pending_datagrams == 0


def test_out_of_order_v6() -> None:
    payload = os.urandom(5000)
    frags = fragments6(payload, 1232)
    assert all(h.is_fragment and h.next_header == 6 for h, _ in frags)
    r = Reassembler()
    assert feed(r, frags[::-1]) == [payload]
    frags = fragments6(payload, 1232, ident=8)
    random.Random(1).shuffle(frags)
    assert feed(r, frags) == [payload]
    assert r.reassembled == 2


def test_interleaved_datagrams_and_sources() -> None:
    p1, p2 = os.urandom(3000), os.urandom(3000)
    f1, f2 = fragments4(p1, 1000, ident=5), fragments4(p2, 1000, ident=6)
    f3 = [frag4(bytes(pl), h.fragment_offset_bytes, h.more_fragments, 5, src=B4) for h, pl in f1]
    r = Reassembler()
    got = feed(r, [x for trio in zip(f1, f2, f3) for x in trio])
    assert got == [p1, p2, p1]


def test_duplicates_ignored() -> None:
    payload = os.urandom(2000)
    frags = fragments4(payload, 800)
    r = Reassembler()
    assert feed(r, [frags[0], frags[0], frags[1], frags[1], frags[2]]) == [payload]
    assert r.duplicates == 2


def test_overlap_drops_datagram() -> None:
    payload = os.urandom(2400)
    r = Reassembler()
    assert r.add(*frag4(payload[:1600], 0, True), 0.0) is None
    # Overlapping [800, 2400) with different content: RFC 5722 discards everything.
    assert r.add(*frag4(payload[800:], 800, False), 0.0) is None
    assert r.dropped_overlap == 1 and r.pending_datagrams == 0 and r.pending_bytes == 0
    # Later fragments of that datagram start a fresh (incomplete) one; nothing is delivered.
    assert r.add(*frag4(payload[1600:], 1600, False), 0.0) is None
    assert r.pending_datagrams == 1


def test_overlap_v6_tiny() -> None:
    r = Reassembler()
    for h, pl in fragments6(bytes(64), 16)[:2]:
        r.add(h, pl, 0.0)
    fh = struct.pack("!BBHI", 0, 0, 8 | 1, 7)      # offset 8 overlaps [0, 16)
    h, pl = parse_ip(build_ipv6(A6, B6, 6, b"\xee" * 16, extensions=[(44, fh)]))
    assert r.add(h, pl, 0.0) is None and r.dropped_overlap == 1


def test_invalid_fragments() -> None:
    r = Reassembler()
    # Not a multiple of 8 with more fragments following (RFC 791 3.2, RFC 8200 4.5).
    assert r.add(*frag4(b"x" * 10, 0, True), 0.0) is None
    # Beyond 65535 bytes.
    assert r.add(*frag4(b"x" * 16, 65528, False), 0.0) is None
    assert r.dropped_invalid == 2 and r.pending_datagrams == 0
    # Two different ends.
    r.add(*frag4(b"a" * 8, 8, False), 0.0)
    assert r.add(*frag4(b"b" * 8, 24, False), 0.0) is None
    assert r.dropped_invalid == 3 and r.pending_datagrams == 0
    # Data past the end already known.
    r.add(*frag4(b"a" * 8, 8, False), 0.0)
    assert r.add(*frag4(b"b" * 8, 16, True), 0.0) is None
    assert r.dropped_invalid == 4


def test_timeout() -> None:
    payload = os.urandom(3000)
    frags = fragments4(payload, 1000)
    r = Reassembler(timeout=30.0)
    r.add(*frags[0], 0.0)
    r.add(*frags[1], 10.0)
    assert r.next_deadline() == 30.0
    r.expire(29.9)
    assert r.pending_datagrams == 1
    r.expire(30.0)
    assert r.pending_datagrams == 0 and r.timed_out == 1 and r.pending_bytes == 0
    # The late last fragment alone does not complete anything.
    assert r.add(*frags[2], 31.0) is None
    # A datagram completed within its time works.
    frags = fragments4(payload, 1000, ident=2)
    assert feed(r, frags, 40.0) == [payload]


def test_memory_bound_evicts_oldest() -> None:
    cost = 1000 + FRAGMENT_OVERHEAD
    r = Reassembler(max_bytes=3 * cost)
    firsts = [frag4(b"x" * 1000, 0, True, ident=i) for i in range(5)]
    for i, (h, pl) in enumerate(firsts):
        r.add(h, pl, float(i))
        assert r.pending_bytes <= r.max_bytes
    assert r.pending_datagrams == 3 and r.dropped_memory == 2
    # The newest datagrams survive and can complete; the evicted ones cannot.
    assert r.add(*frag4(b"y" * 8, 1000, False, ident=4), 5.0) == b"x" * 1000 + b"y" * 8
    assert r.add(*frag4(b"y" * 8, 1000, False, ident=0), 5.0) is None
    # A single fragment larger than the whole budget is refused.
    small = Reassembler(max_bytes=500)
    assert small.add(*frag4(b"z" * 1000, 0, True), 0.0) is None
    assert small.pending_bytes == 0 and small.dropped_memory == 1


def test_flood_of_tiny_fragments_is_bounded() -> None:
    r = Reassembler(max_bytes=64 * 1024)
    for i in range(20000):
        r.add(*frag4(b"t" * 8, 0, True, ident=i & 0xFFFF, src=bytes((10, 1, i >> 8 & 255, i & 255))),
              i * 1e-4)
        assert r.pending_bytes <= 64 * 1024
    assert r.pending_datagrams == 64 * 1024 // (8 + FRAGMENT_OVERHEAD)


def test_max_fragments_per_datagram() -> None:
    r = Reassembler(max_fragments=4)
    frags = fragments4(bytes(80), 8)
    assert feed(r, frags) == []
    # Fragment 5 drops the datagram; 6..9 start it again, 10 drops it again.
    assert r.dropped_too_many == 2 and r.pending_datagrams == 0


@settings(max_examples=150)
@given(st.integers(1, 6000), st.integers(1, 200).map(lambda n: n * 8), st.randoms(),
       st.booleans())
def test_any_order_reassembles(size: int, frag: int, rnd: random.Random, v6: bool) -> None:
    payload = rnd.randbytes(size)
    frags = fragments6(payload, frag) if v6 else fragments4(payload, frag)
    rnd.shuffle(frags)
    if len(frags) > 1:
        i = rnd.randrange(len(frags) - 1)
        frags.insert(i + 1, frags[i])     # a duplicate, before the datagram is complete
    r = Reassembler(max_fragments=1000)
    assert feed(r, frags) == [payload]
    assert r.pending_bytes == 0


def test_v6_extension_headers_in_fragmentable_part() -> None:
    # Destination options (8 bytes) + 100 bytes of TCP data, fragmented after the fragment
    # header: the reassembler walks the options and reports TCP as the upper layer.
    body = bytes([6, 0, 1, 4, 0, 0, 0, 0]) + os.urandom(100)
    out = []
    for off in range(0, len(body), 64):
        more = off + 64 < len(body)
        fh = struct.pack("!BBHI", 0, 0, off | int(more), 99)
        out.append(parse_ip(build_ipv6(A6, B6, 60, body[off:off + 64], extensions=[(44, fh)])))
    assert all(h.next_header == 60 for h, _ in out)
    r = Reassembler()
    assert r.add(*out[0], 0.0) is None
    h, pl = out[1]
    assert r.add(h, pl, 0.0) == body[8:]
    assert h.next_header == 6 and h.proto == 6
    # A nested fragment header is malformed: dropped.
    bad = struct.pack("!BBHI", 6, 0, 0, 1) + bytes(16)
    fh = struct.pack("!BBHI", 0, 0, 1, 5)
    r.add(*parse_ip(build_ipv6(A6, B6, 44, bad[:16], extensions=[(44, fh)])), 0.0)
    fh = struct.pack("!BBHI", 0, 0, 16, 5)
    assert r.add(*parse_ip(build_ipv6(A6, B6, 44, bad[16:], extensions=[(44, fh)])), 0.0) is None
    assert r.dropped_invalid == 1


def test_v6_next_header_taken_from_offset_zero_fragment() -> None:
    # RFC 8200 4.5: Next Header values in the fragment headers of one datagram may differ;
    # only the offset-zero fragment's counts, and the key is (src, dst, identification).
    payload = os.urandom(96)
    first, last = fragments6(payload, 48, ident=42)
    h, pl = parse_ip(build_ipv6(A6, B6, 17, payload[48:],          # later fragment says UDP
                                extensions=[(44, struct.pack("!BBHI", 0, 0, 48, 42))]))
    assert h.next_header == 17
    r = Reassembler()
    assert r.add(h, pl, 0.0) is None                # out of order: the non-zero one first
    h0, pl0 = first
    assert r.add(h0, pl0, 0.0) == payload
    assert h0.next_header == 6 and r.pending_datagrams == 0
    r = Reassembler()
    assert r.add(*first, 0.0) is None
    assert r.add(h, pl, 0.0) == payload
    assert h.next_header == 6                       # the completing header reports TCP
    assert last[0].next_header == 6
