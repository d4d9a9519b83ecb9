"""TSO send side: GSO frames built by tcpstack.tcp.build_gso_frame, split as the kernel would
(tun.vnet.gso_split), give valid, exact per-MSS segments; the default path is unchanged."""
from __future__ import annotations

import pytest

from tcpstack.segment import ACK, PSH, TCPSegment
from tcpstack.tcp import build_gso_frame, build_ip_tcp, parse_tcp
from tun import vnet

V4 = (bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2]))
V6 = (bytes(15) + b"\x01", bytes(15) + b"\x02")


def _seg(payload: bytes, gso: int) -> TCPSegment:
    s = TCPSegment(40000, 80, 1000, 5000, ACK | PSH, 512, payload, tsval=7, tsecr=9)
    s.gso_size = gso
    return s


@pytest.mark.parametrize("addrs", [V4, V6])
@pytest.mark.parametrize("n", [1449, 1448 * 3, 1448 * 3 + 17, 60000])
def test_gso_frame_splits_into_valid_segments(addrs, n):
    src, dst = addrs
    payload = bytes(i * 7 % 251 for i in range(n))
    frame = build_ip_tcp(_seg(payload, 1448), src, dst, ident=33)
    assert frame[0] == 1                                       # NEEDS_CSUM, not an IP nibble
    hdr, pkt = vnet.parse(frame)
    iph = 20 if len(src) == 4 else 40
    assert hdr.gso_type == (vnet.VIRTIO_NET_HDR_GSO_TCPV4 if iph == 20 else vnet.VIRTIO_NET_HDR_GSO_TCPV6)
    assert (hdr.gso_size, hdr.hdr_len, hdr.csum_start, hdr.csum_offset) == (1448, iph + 32, iph, 16)
    assert hdr.needs_csum
    parts = vnet.gso_split(pkt, hdr)
    assert len(parts) == -(-n // 1448)
    got = b""
    for i, p in enumerate(parts):
        seg = parse_tcp(memoryview(p)[iph:], src, dst)         # verifies the checksum
        assert seg.seq == 1000 + i * 1448
        assert (seg.tsval, seg.tsecr, seg.ack, seg.window) == (7, 9, 5000, 512)
        assert bool(seg.flags & PSH) == (i == len(parts) - 1)  # PSH only on the last
        assert len(seg.payload) == min(1448, n - i * 1448)
        got += bytes(seg.payload)
    assert got == payload


def test_small_or_off_stays_plain_packet():
    src, dst = V4
    plain = build_ip_tcp(_seg(b"x" * 1448, 0), src, dst)
    assert build_ip_tcp(_seg(b"x" * 1448, 1448), src, dst) == plain   # fits one MSS
    assert plain[0] == 0x45
    assert build_gso_frame(_seg(b"x" * 3000, 1448), src, dst)[10] == 0x45
