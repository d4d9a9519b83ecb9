"""Edge ACK coalescing (tcpstack.aio.streams.coalesce_acks): a pure ACK superseded by a later
segment of the same connection with a greater cumulative ACK in the same flush is dropped;
duplicate ACKs, data, FIN/RST and other connections are kept."""
from __future__ import annotations

import ipaddress

from tcpstack.wire.segment import ACK, FIN, PSH, RST, TCPSegment
from tcpstack.host.acks import coalesce_acks
from tcpstack.wire.tcp import build_ip_tcp

A4, B4 = ipaddress.ip_address("10.0.0.1").packed, ipaddress.ip_address("10.0.0.2").packed
A6, B6 = ipaddress.ip_address("fd00::1").packed, ipaddress.ip_address("fd00::2").packed


def seg(ack: int, flags: int = ACK, data: bytes = b"", sport: int = 1000, src=A4, dst=B4) -> bytes:
    return build_ip_tcp(TCPSegment(sport, 80, 5000, ack, flags, 1000, data, tsval=1, tsecr=2),
                        src, dst)


def test_older_pure_acks_dropped_newest_kept():
    p = [seg(100), seg(200), seg(300)]
    assert coalesce_acks(p) == [p[2]]


def test_ipv6_too():
    p = [seg(100, src=A6, dst=B6), seg(200, src=A6, dst=B6)]
    assert coalesce_acks(p) == [p[1]]


def test_duplicate_acks_are_kept():
    p = [seg(100), seg(100), seg(100)]
    assert coalesce_acks(p) == p


def test_data_segment_supersedes_but_is_kept_and_never_dropped():
    p = [seg(100), seg(200, ACK | PSH, b"x" * 10), seg(300, ACK | PSH, b"y")]
    assert coalesce_acks(p) == [p[1], p[2]]


def test_fin_and_rst_kept():
    p = [seg(100, ACK | FIN), seg(200, ACK | RST), seg(300)]
    assert coalesce_acks(p) == p


def test_other_connections_and_wraparound():
    a1, b1 = seg(0xFFFFFFF0), seg(100, sport=2000)
    a2 = seg(0x10)                      # greater than 0xFFFFFFF0 modulo 2**32
    older = seg(50, sport=2000)         # smaller: not superseding b1
    p = [a1, b1, a2, older]
    assert coalesce_acks(p) == [b1, a2, older]


def sack_seg(ack: int, blocks, sport: int = 1000) -> bytes:
    return build_ip_tcp(TCPSegment(sport, 80, 5000, ack, ACK, 1000, b"", tsval=1, tsecr=2,
                                   sack_blocks=tuple(blocks)), A4, B4)


def test_an_ack_carrying_a_dsack_is_never_dropped():
    """RFC 2883 4: a D-SACK is reported in one ACK only, and the sender's undo counts them
    (RFC 3708): an ACK carrying one is sent even when a newer ACK follows in the flush."""
    below = sack_seg(1000, [(500, 600)])                  # first block below the ACK
    inside = sack_seg(1200, [(2000, 2100), (1500, 3000)])  # first block inside the second
    plain = sack_seg(1400, [(2000, 2100)])                 # an ordinary SACK block
    p = [below, seg(1100), inside, seg(1300), plain, seg(1500)]
    assert coalesce_acks(p) == [below, inside, p[5]]


def test_acks_stay_within_two_full_segments_of_each_other():
    """RFC 5681 4.2: dropping an ACK never leaves two sent ACKs more than `span` apart."""
    p = [seg(1000), seg(1000 + 2896), seg(1000 + 2 * 2896)]
    assert coalesce_acks(p, span=2896) == p
    # one segment apart: every other one goes; the first is measured from the flush's first
    q = [seg(1000), seg(1000 + 1448), seg(1000 + 2896), seg(1000 + 4344)]
    assert coalesce_acks(q, span=2896) == [q[1], q[3]]
