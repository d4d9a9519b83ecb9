"""TSO send side: GSO frames built by tcpstack.wire.tcp.build_gso_frame, split as the kernel would
(tun.vnet.gso_split), give valid, exact per-MSS segments; the default path is unchanged."""
from __future__ import annotations

import pytest

from tcpstack.wire.segment import ACK, PSH, TCPSegment
from tcpstack.tcp.sndbuf import SendBuffer
from tcpstack.wire.tcp import GSOFrame, build_gso, build_gso_frame, build_ip_tcp, parse_tcp
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


@pytest.mark.parametrize("addrs", [V4, V6])
def test_scatter_frame_is_the_same_frame_without_copying_the_payload(addrs):
    """build_gso (the stack's TSO path, written with writev) gives exactly build_gso_frame's
    bytes, with the payload kept as the send buffer's views of the application's chunks."""
    src, dst = addrs
    a, b = bytes(range(256)) * 150, bytes(reversed(range(256))) * 150     # 38,400 each
    buf = SendBuffer()
    buf.append(a)
    buf.append(b)
    payload = buf.get(1000, 1000 + 1448 * 40, gather=True)              # spans both chunks
    frame = build_gso(_seg(payload, 1448), src, dst, ident=5)
    assert isinstance(frame, GSOFrame)
    parts = frame.buffers()
    assert len(parts) == 3 and parts[1].obj is a and parts[2].obj is b   # views, no copies
    assert len(frame) == sum(map(len, parts))
    assert bytes(frame) == build_gso_frame(_seg(bytes(payload), 1448), src, dst, ident=5)


def test_small_or_off_stays_plain_packet():
    src, dst = V4
    plain = build_ip_tcp(_seg(b"x" * 1448, 0), src, dst)
    assert build_ip_tcp(_seg(b"x" * 1448, 1448), src, dst) == plain   # fits one MSS
    assert plain[0] == 0x45
    assert build_gso_frame(_seg(b"x" * 3000, 1448), src, dst)[10] == 0x45


# --- the TCB with TSO on (tests/tcpstack/harness.py) -------------------------------------

from tcpstack.impairment import Impairment  # noqa: E402
from tcpstack.tcp.config import TCPConfig  # noqa: E402

from .harness import Harness  # noqa: E402

ROOM = 1448          # MSS 1460 minus the timestamps option


def _cut(seg: TCPSegment) -> list[TCPSegment]:
    """What the kernel's GSO makes of a super-segment: gso_size pieces, PSH/FIN on the last."""
    if not seg.gso_size:
        return [seg]
    pl, n, out = bytes(seg.payload), seg.gso_size, []
    for off in range(0, len(pl), n):
        last = off + n >= len(pl)
        f = seg.flags if last else seg.flags & ~(PSH | 0x01)
        out.append(TCPSegment(seg.src_port, seg.dst_port, (seg.seq + off) & 0xFFFFFFFF,
                              seg.ack, f, seg.window, pl[off:off + n], tsval=seg.tsval,
                              tsecr=seg.tsecr, sack_blocks=seg.sack_blocks))
    return out


def _data(h: Harness) -> list[TCPSegment]:
    return [s for s in h.sent("a>b") if s.payload]


def test_tso_off_by_default_sends_mss_segments():
    h = Harness()
    h.established()
    h.write("a", bytes(100_000))
    h.run()
    assert h.received["b"] == bytes(100_000)
    assert all(len(s.payload) <= ROOM and s.gso_size == 0 for s in _data(h))


def test_first_flight_is_one_super_segment_within_cwnd_then_nagle_holds_the_tail():
    h = Harness(TCPConfig(tso_max_size=65000))
    h.established()
    a = h.a
    cwnd = a.cc.cwnd
    h.clear_trace()
    h.write("a", bytes(3 * ROOM + 100))
    segs = _data(h)
    # 3 whole segments in one super-segment; the 100-byte tail waits (Nagle, RFC 9293 3.7.4)
    assert cwnd >= 4 * ROOM
    assert [(len(s.payload), s.gso_size) for s in segs] == [(3 * ROOM, ROOM)]
    assert a.snd_nxt - a.snd_una == 3 * ROOM
    h.run()
    assert [len(s.payload) for s in _data(h)] == [3 * ROOM, 100]
    assert h.received["b"] == bytes(3 * ROOM + 100)


def test_super_segment_bounded_by_cwnd_window_and_tso_max_size():
    h = Harness(TCPConfig(tso_max_size=4 * ROOM + 10))
    h.established()
    cwnd = h.a.cc.cwnd
    h.clear_trace()
    h.write("a", bytes(1_000_000))
    first = [s for s in _data(h)]
    sizes = [len(s.payload) for s in first]
    # whole MSS multiples, at most 4 per super-segment, the flight exactly fills cwnd
    assert all(n % ROOM == 0 and n <= 4 * ROOM for n in sizes)
    assert sum(sizes) == cwnd // ROOM * ROOM
    assert all(s.gso_size == ROOM for s in first if len(s.payload) > ROOM)
    h.run()
    assert h.received["b"] == bytes(1_000_000)
    assert h.a.stats.tso_segments > 0


def test_one_lost_part_of_a_super_segment_is_retransmitted_alone():
    dropped: list[int] = []

    def hook(d, seg):
        parts = _cut(seg) if d == "a>b" else [seg]
        if d == "a>b" and seg.gso_size and not dropped:
            assert seg.gso_size == ROOM and len(parts) >= 3
            victim = parts[2]
            dropped.append(victim.seq)
            return [p for p in parts if p is not victim]
        return parts

    body = bytes(i % 253 for i in range(200_000))
    h = Harness(TCPConfig(tso_max_size=65000), hook=hook)
    h.established()
    h.clear_trace()
    h.write("a", body)
    h.run()
    assert h.received["b"] == body
    # the trace holds what the hook let through (the cut pieces): only the resend is there
    rtx = [s for s in _data(h) if s.seq == dropped[0]]
    assert len(rtx) == 1
    assert len(rtx[0].payload) == ROOM and rtx[0].gso_size == 0
    assert h.a.stats.retransmits == 1


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_bulk_with_loss_and_reordering_delivers_identical_bytes(seed):
    import random
    rng = random.Random(seed)

    def hook(d, seg):
        parts = _cut(seg)
        return [p for p in parts if rng.random() > 0.02]  # each wire segment lost alone

    body = bytes(random.Random(seed).randbytes(1_000_000))
    h = Harness(TCPConfig(tso_max_size=65000), TCPConfig(tso_max_size=65000), hook=hook,
                link=Impairment(delay=0.010, reorder=0.01, reorder_delay=0.02), seed=seed)
    h.established()
    h.write("a", body)
    h.write("b", body[:300_000])
    h.run()
    assert h.received["b"] == body
    assert h.received["a"] == body[:300_000]
    assert h.a.stats.tso_segments > 0


@pytest.mark.parametrize("addrs", [V4, V6])
def test_partial_checksum_completes_per_piece_like_linux_gso(addrs):
    """The TCP checksum field of a GSO frame is the pseudo-header sum over the whole TCP
    length; Linux's tcp_gso_segment swaps that length for each piece's and the device (here
    vnet.complete_checksum) sums the piece onto it.  Each piece must then verify."""
    import struct as _s
    src, dst = addrs
    payload = bytes(i * 13 % 256 for i in range(5 * 1448 + 77))
    frame = build_ip_tcp(_seg(payload, 1448), src, dst)
    hdr, pkt = vnet.parse(frame)
    iph = hdr.csum_start
    stored = _s.unpack_from("!H", pkt, iph + 16)[0]
    full = len(pkt) - iph
    for piece in vnet.gso_split(pkt, hdr):
        p = bytearray(piece)
        plen = len(p) - iph
        c = stored + (~full & 0xFFFF) + plen
        c = (c & 0xFFFF) + (c >> 16)
        c = (c & 0xFFFF) + (c >> 16)
        _s.pack_into("!H", p, iph + 16, c)
        vnet.complete_checksum(p, iph, 16)
        assert bytes(p) == piece                           # same checksum as a full computation
        parse_tcp(memoryview(p)[iph:], src, dst)


def test_pcap_records_a_tso_frame_as_its_ip_super_packet(tmp_path):
    """A capture on the offloaded path (cli --offload --pcap) gets the super-packet without
    the virtio_net_hdr, as tcpdump shows one on an interface with TSO, so it dissects as IP."""
    from tcpstack.tools.pcap import PcapWriter, read_pcap
    src, dst = V4
    frame = build_gso_frame(_seg(bytes(1448 * 3), 1448), src, dst)
    plain = build_ip_tcp(_seg(b"x" * 100, 0), src, dst)
    path = str(tmp_path / "tso.pcap")
    with PcapWriter(path) as w:
        w.write(frame, 1.0)
        w.write(plain, 2.0)
    (_, a), (_, b) = read_pcap(path)
    assert a == frame[10:] and a[0] == 0x45 and int.from_bytes(a[2:4], "big") == len(a)
    assert b == plain
