"""TCP header and options on the wire (RFC 9293 3.1-3.2): parse with strict validation, build.

Options: EOL(0), NOP(1), MSS(2, RFC 9293 3.7.1), Window Scale(3, RFC 7323 2), SACK-permitted
(4) and SACK(5) (RFC 2018), Timestamps(8, RFC 7323 3), TCP-ENO (69, RFC 8547 4.1: payload kept
opaque, possibly empty, possibly several), unknown kinds kept as (kind, data).

Build layout follows Linux so middleboxes see familiar shapes and sizes are predictable
(the connection counts on them when it fills option space):
  SYN:     MSS(4) | SACKOK+TS (12) or NOP NOP TS (12) or NOP NOP SACKOK (4) | NOP WS (4) | ENO...
  non-SYN: NOP NOP TS (12) | ENO... | NOP NOP SACK (4 + 8n)
  each ENO option is padded with NOPs to a multiple of 4.

Hot path: build_ip_tcp() sums both checksums from the header fields and the payload, packs
the headers and joins them with the payload (one copy); parse_tcp() returns the payload as a memoryview.
"""
from __future__ import annotations

import struct

from tcpstack.wire.buffers import Gather, GSOFrame  # GSOFrame also re-exported (its home before buffers.py)
from tcpstack.wire.checksum import internet_checksum, ones_sum, pseudo_header_sum
from tcpstack.errors import ParseError, TcpStackError
from tcpstack.wire.ip import V4_HDR, V6_HDR
from tcpstack.wire.segment import TCPSegment
from tcpstack.wire.virtio_net import (VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_TCPV4,
                                      VIRTIO_NET_HDR_GSO_TCPV6, VNET_HDR_LEN)
from tcpstack.wire.virtio_net import HDR as _VNET

_HDR = struct.Struct("!HHIIHHHH")
_from_bytes = int.from_bytes
_TS = struct.Struct("!BBBBII")         # NOP NOP kind=8 len=10 tsval tsecr
_MSS = struct.Struct("!BBH")
_SACK_EDGE = struct.Struct("!II")
IPPROTO_TCP = 6
ENO_KIND = 69                          # the TCP-ENO option (RFC 8547 11, table 2); tcpcrypt.eno's

_TS_BYTES = b"\x01\x01\x08\x0a"
_SACK_NOPS = b"\x01\x01\x05"          # NOP NOP kind=5 (SACK, RFC 2018 3)
# "NOP NOP kind=5 len" of a SACK option with n blocks (RFC 2018 3), by n
_SACK_HEAD = tuple(bytes((1, 1, 5, 2 + 8 * n)) for n in range(5))


class OptionSpaceError(TcpStackError, ValueError):
    """The options of a segment do not fit in the 40 bytes TCP allows."""


def _r4(n: int) -> int:
    return (n + 3) & ~3


# The option layout's sizes, the one place the connection (tcpstack/tcp/connection.py) reads
# them from when it fills option space (RFC 9293 3.1: at most 40 option bytes).
MAX_OPTION_SPACE = 40
MSS_OPTION_SPACE = 4          # MSS(4), SYNs only
WSCALE_OPTION_SPACE = 4       # NOP WS(3), SYNs only
SACKOK_OPTION_SPACE = 4       # NOP NOP SACKOK(2), SYNs without timestamps (else it shares TS's)
TS_OPTION_SPACE = 12          # NOP NOP TS(10) (or SACKOK TS in a SYN): every segment once in use
SACK_OPTION_BASE = 4          # NOP NOP kind len, then ...
SACK_BLOCK_SPACE = 8          # ... 8 bytes a block


def eno_option_space(eno: tuple[bytes, ...]) -> int:
    """Bytes ENO options take (each padded with NOPs to a multiple of 4)."""
    n = 0
    for e in eno:
        n += _r4(2 + len(e))
    return n


def syn_option_space(ws: bool, sackok: bool, ts: bool, eno: tuple[bytes, ...]) -> int:
    """Bytes the options of a SYN or SYN-ACK take: MSS, then WS / SACK-permitted / TS as
    chosen, then the ENO options."""
    n = MSS_OPTION_SPACE + (WSCALE_OPTION_SPACE if ws else 0) + (
        TS_OPTION_SPACE if ts else (SACKOK_OPTION_SPACE if sackok else 0))
    return n + eno_option_space(eno)


def sack_blocks_fitting(room: int) -> int:
    """How many SACK blocks fit in `room` option bytes (RFC 2018 3; at most 4 in 40)."""
    return (room - SACK_OPTION_BASE) // SACK_BLOCK_SPACE


def options_length(seg: TCPSegment) -> int:
    """Bytes the segment's options take on the wire (padded to 4), as build_tcp lays them out."""
    n = 0
    if seg.mss is not None:
        n += MSS_OPTION_SPACE
    if seg.tsval is not None:
        n += TS_OPTION_SPACE
    elif seg.sack_permitted:
        n += SACKOK_OPTION_SPACE
    if seg.wscale is not None:
        n += WSCALE_OPTION_SPACE
    n += eno_option_space(seg.eno)
    if seg.sack_blocks:
        n += SACK_OPTION_BASE + SACK_BLOCK_SPACE * len(seg.sack_blocks)
    for kind, data in seg.unknown_options:
        n += _r4(2 + len(data))
    return n


def _options(seg: TCPSegment) -> bytes:
    """Encode the segment's options (padded to a multiple of 4)."""
    tsval = seg.tsval
    if seg.mss is None and seg.wscale is None and not seg.sack_permitted and not seg.eno \
            and not seg.unknown_options:
        # Fast path (every non-SYN segment): "NOP NOP TS", then "NOP NOP SACK" if any --
        # the same bytes as the general encoding below, without its list of parts.
        blocks = seg.sack_blocks
        if not blocks:
            return b"" if tsval is None else _TS.pack(1, 1, 8, 10, tsval, seg.tsecr)
        if tsval is not None and len(blocks) <= 3:
            return _TS.pack(1, 1, 8, 10, tsval, seg.tsecr) + _SACK_HEAD[len(blocks)] + \
                b"".join([_SACK_EDGE.pack(l, r) for l, r in blocks])
    parts = []
    if seg.mss is not None:
        parts.append(_MSS.pack(2, 4, seg.mss))
    if seg.tsval is not None:
        if seg.sack_permitted:
            parts.append(b"\x04\x02\x08\x0a" + struct.pack("!II", seg.tsval, seg.tsecr))
        else:
            parts.append(_TS.pack(1, 1, 8, 10, seg.tsval, seg.tsecr))
    elif seg.sack_permitted:
        parts.append(b"\x01\x01\x04\x02")
    if seg.wscale is not None:
        parts.append(bytes((1, 3, 3, seg.wscale)))
    for e in seg.eno:
        if len(e) > 38:
            raise OptionSpaceError(f"ENO option of {2 + len(e)} bytes cannot fit in 40")
        opt = bytes((ENO_KIND, 2 + len(e))) + e
        parts.append(opt + b"\x01" * (_r4(len(opt)) - len(opt)))
    for kind, data in seg.unknown_options:
        if len(data) > 38:
            raise OptionSpaceError(f"option {kind} of {2 + len(data)} bytes cannot fit in 40")
        opt = bytes((kind, 2 + len(data))) + data
        parts.append(opt + b"\x01" * (_r4(len(opt)) - len(opt)))
    if seg.sack_blocks:
        blocks = seg.sack_blocks
        parts.append(bytes((1, 1, 5, 2 + 8 * len(blocks))) +
                     b"".join(_SACK_EDGE.pack(l, r) for l, r in blocks))
    out = b"".join(parts)
    if len(out) > 40:
        raise OptionSpaceError(f"TCP options need {len(out)} bytes, at most 40 fit: {seg!r}")
    return out


def _write_tcp(buf: bytearray, off: int, seg: TCPSegment, opts: bytes) -> int:
    """Write header + options + payload at buf[off:]; return the TCP length."""
    hlen = 20 + len(opts)
    _HDR.pack_into(buf, off, seg.src_port, seg.dst_port, seg.seq, seg.ack,
                   ((hlen >> 2) << 12) | seg.flags, seg.window, 0, seg.urg_ptr)
    if opts:
        buf[off + 20:off + hlen] = opts
    payload = seg.payload
    if payload:
        if type(payload) is Gather:     # a TSO segment that fits one segment after all
            payload = bytes(payload)
        buf[off + hlen:off + hlen + len(payload)] = payload
    return hlen + len(payload)


def build_tcp(seg: TCPSegment, src: bytes, dst: bytes) -> bytes:
    """Header + options + payload with the checksum over the IPv4 or IPv6 pseudo-header."""
    opts = _options(seg)
    buf = bytearray(20 + len(opts) + len(seg.payload))
    length = _write_tcp(buf, 0, seg, opts)
    csum = internet_checksum(buf, pseudo_header_sum(src, dst, IPPROTO_TCP, length))
    buf[16] = csum >> 8
    buf[17] = csum & 0xFF
    return bytes(buf)


def build_ip_tcp(seg: TCPSegment, src: bytes, dst: bytes, *, ttl: int = 64, ident: int = 0,
                 tos: int = 0, flow_label: int = 0) -> bytes:
    """The whole IP packet for `seg`: one buffer, both checksums (the send hot path).

    IPv4 (by 4-byte addresses): DF set, no options; `ttl`, `ident`, `tos`.  IPv6: `ttl` is
    the hop limit, `tos` the traffic class, `flow_label` (RFC 6437) the flow label.

    A segment with gso_size > 0 and more payload than that becomes a GSO frame instead (see
    build_gso_frame): the caller must hand it to a link that accepts them."""
    if seg.gso_size and len(seg.payload) > seg.gso_size:
        return build_gso_frame(seg, src, dst, ttl=ttl, ident=ident, tos=tos, flow_label=flow_label)
    opts = _options(seg)
    payload = seg.payload
    if type(payload) is Gather:         # a TSO segment that fits one segment after all
        payload = bytes(payload)
    thl = 20 + len(opts)
    tcp_len = thl + len(payload)
    off_flags = ((thl >> 2) << 12) | seg.flags
    sport, dport, sseq, sack, window, urg = (seg.src_port, seg.dst_port, seg.seq, seg.ack,
                                             seg.window, seg.urg_ptr)
    # The TCP checksum (RFC 9293 3.1) summed by parts, mod 0xFFFF as in checksum.ones_sum:
    # a 32-bit field is congruent to the sum of its two 16-bit words (2**16 == 1), the
    # address words likewise; the options are a multiple of 4 bytes, so the payload starts
    # at an even offset and its own (zero-padded) sum adds like the rest.  A zero sum
    # becomes 0x0000, never 0xFFFF, as internet_checksum does (the header is never all zero).
    addr = _from_bytes(src, "big") + _from_bytes(dst, "big")
    s = (sport + dport + sseq + sack + off_flags + window + urg + addr + IPPROTO_TCP + tcp_len
         + (_from_bytes(opts, "big") if opts else 0)
         + (ones_sum(payload) if payload else 0)) % 0xFFFF
    csum = ~s & 0xFFFF if s else 0
    tcp_hdr = _HDR.pack(sport, dport, sseq, sack, off_flags, window, csum, urg)
    if len(src) == 4:
        # RFC 791 3.1 header checksum, by fields: version/IHL/TOS, total length, ident,
        # DF, TTL/protocol, the addresses (the checksum field itself counts as 0).
        total = 20 + tcp_len
        h = ((0x4500 | tos) + total + ident + 0x4000 + ((ttl << 8) | IPPROTO_TCP)
             + addr) % 0xFFFF
        ip_hdr = V4_HDR.pack(0x45, tos, total, ident, 0x4000, ttl, IPPROTO_TCP,
                             ~h & 0xFFFF if h else 0, src, dst)
    else:
        ip_hdr = V6_HDR.pack((6 << 28) | (tos << 20) | flow_label, tcp_len, IPPROTO_TCP, ttl,
                             src, dst)
    # One copy of the payload, into the packet.
    return b"".join((ip_hdr, tcp_hdr, opts, payload)) if payload else ip_hdr + tcp_hdr + opts




def build_gso_frame(seg: TCPSegment, src: bytes, dst: bytes, *, ttl: int = 64, ident: int = 0,
                    tos: int = 0, flow_label: int = 0) -> bytes:
    """A 10-byte virtio_net_hdr + one IP/TCP super-packet for TSO on an IFF_VNET_HDR device,
    as one bytes object (build_gso gives the same frame as two buffers, without the copy).

    Header: VIRTIO_NET_HDR_F_NEEDS_CSUM with csum_start/csum_offset at the TCP checksum,
    gso_type TCPV4/TCPV6, gso_size = seg.gso_size, hdr_len = IP + TCP headers.  The TCP
    checksum field holds the pseudo-header sum (folded, not complemented) over the whole
    TCP length, as Linux's tcp_v4_send_check does for CHECKSUM_PARTIAL: the kernel's GSO
    swaps that length term for each segment's and completes the sum.  The IPv4 total length and header
    checksum describe the super-packet; the kernel rewrites both per segment.  The frame's
    first byte is the header's flags (1), never an IP version nibble, so a link can tell it
    from a plain packet."""
    return bytes(build_gso(seg, src, dst, ttl=ttl, ident=ident, tos=tos, flow_label=flow_label))


def build_gso(seg: TCPSegment, src: bytes, dst: bytes, *, ttl: int = 64, ident: int = 0,
              tos: int = 0, flow_label: int = 0) -> GSOFrame:
    """build_gso_frame's frame as a GSOFrame: the headers built here, the payload by
    reference (the TSO send hot path: nothing of the payload is read or copied)."""
    opts = _options(seg)
    thl = 20 + len(opts)
    payload = seg.payload
    tcp_len = thl + len(payload)
    if len(src) == 4:
        iph = 20
        buf = bytearray(VNET_HDR_LEN + iph + thl)
        V4_HDR.pack_into(buf, VNET_HDR_LEN, 0x45, tos, (iph + tcp_len) & 0xFFFF, ident, 0x4000,
                      ttl, IPPROTO_TCP, 0, src, dst)
        c = internet_checksum(memoryview(buf)[VNET_HDR_LEN:VNET_HDR_LEN + 20])
        buf[VNET_HDR_LEN + 10] = c >> 8
        buf[VNET_HDR_LEN + 11] = c & 0xFF
        gso_type = VIRTIO_NET_HDR_GSO_TCPV4
    else:
        iph = 40
        buf = bytearray(VNET_HDR_LEN + iph + thl)
        V6_HDR.pack_into(buf, VNET_HDR_LEN, (6 << 28) | (tos << 20) | flow_label, tcp_len & 0xFFFF,
                      IPPROTO_TCP, ttl, src, dst)
        gso_type = VIRTIO_NET_HDR_GSO_TCPV6
    _VNET.pack_into(buf, 0, VIRTIO_NET_HDR_F_NEEDS_CSUM, gso_type, iph + thl, seg.gso_size, iph, 16)
    off = VNET_HDR_LEN + iph
    _HDR.pack_into(buf, off, seg.src_port, seg.dst_port, seg.seq, seg.ack,
                   ((thl >> 2) << 12) | seg.flags, seg.window, 0, seg.urg_ptr)
    if opts:
        buf[off + 20:off + thl] = opts
    # Partial checksum: pseudo-header only (RFC 9293 3.1 / RFC 8200 8.1 for the fields).
    p = pseudo_header_sum(src, dst, IPPROTO_TCP, tcp_len)
    p = (p & 0xFFFF) + (p >> 16)
    p = (p & 0xFFFF) + (p >> 16)
    buf[off + 16] = p >> 8
    buf[off + 17] = p & 0xFF
    return GSOFrame(buf, payload)


def parse_tcp(data: bytes | bytearray | memoryview, src: bytes, dst: bytes, *,
              verify_checksum: bool = True) -> TCPSegment:
    """Parse a TCP segment (header, options, payload as a memoryview slice)."""
    n = len(data)
    if n < 20:
        raise ParseError(f"TCP segment of {n} bytes is shorter than a header")
    mv = data if isinstance(data, memoryview) else memoryview(data)
    sport, dport, seq, ack, off_flags, window, _csum, urg = _HDR.unpack_from(mv)
    hlen = (off_flags >> 12) * 4
    if hlen < 20:
        raise ParseError(f"TCP data offset {hlen // 4} is below the minimum of 5")
    if hlen > n:
        raise ParseError(f"TCP data offset {hlen // 4} runs past the segment ({n} bytes)")
    # (pseudo_header_sum inline: the addresses' words, protocol and TCP length, RFC 9293 3.1)
    if verify_checksum and ones_sum(mv, (_from_bytes(src, "big") + _from_bytes(dst, "big")
                                         + IPPROTO_TCP + n) % 0xFFFF) != 0:
        raise ParseError("bad TCP checksum")
    seg = TCPSegment(sport, dport, seq, ack, off_flags & 0xFF, window, mv[hlen:], urg_ptr=urg)
    if hlen > 20:
        _parse_options(seg, mv[20:hlen])
    return seg


def _parse_options(seg: TCPSegment, opts: memoryview) -> None:
    # Fast path: the common "NOP NOP TS" alone (every data segment with timestamps).
    n = len(opts)
    if n == 12 and opts[:4] == _TS_BYTES:
        seg.tsval, seg.tsecr = struct.unpack_from("!II", opts, 4)
        return
    # Fast path: "NOP NOP TS" then "NOP NOP SACK" with 1-3 blocks exactly filling the
    # options (the ACKs of a lossy path, as _options writes them); parsed as below.
    if n >= 24 and opts[15] == n - 14 and opts[12:15] == _SACK_NOPS \
            and opts[:4] == _TS_BYTES and not (n - 16) % 8:
        seg.tsval, seg.tsecr = struct.unpack_from("!II", opts, 4)
        seg.sack_blocks = tuple(_SACK_EDGE.unpack_from(opts, j) for j in range(16, n, 8))
        return
    i = 0
    eno: list[bytes] = []
    unknown: list[tuple[int, bytes]] = []
    while i < n:
        kind = opts[i]
        if kind == 0:               # EOL: the rest is padding
            break
        if kind == 1:               # NOP
            i += 1
            continue
        if i + 1 >= n:
            raise ParseError(f"TCP option {kind} has no length byte")
        length = opts[i + 1]
        if length < 2 or i + length > n:
            raise ParseError(f"TCP option {kind} has bad length {length}")
        if kind == 2:
            if length != 4:
                raise ParseError(f"MSS option length {length} != 4")
            seg.mss = (opts[i + 2] << 8) | opts[i + 3]
        elif kind == 3:
            if length != 3:
                raise ParseError(f"window scale option length {length} != 3")
            seg.wscale = opts[i + 2]
        elif kind == 4:
            if length != 2:
                raise ParseError(f"SACK-permitted option length {length} != 2")
            seg.sack_permitted = True
        elif kind == 5:
            if (length - 2) % 8 or length < 10:
                raise ParseError(f"SACK option length {length} is not 2 + 8n")
            seg.sack_blocks = tuple(_SACK_EDGE.unpack_from(opts, j) for j in range(i + 2, i + length, 8))
        elif kind == 8:
            if length != 10:
                raise ParseError(f"timestamps option length {length} != 10")
            seg.tsval, seg.tsecr = struct.unpack_from("!II", opts, i + 2)
        elif kind == ENO_KIND:
            eno.append(bytes(opts[i + 2:i + length]))
        else:
            unknown.append((kind, bytes(opts[i + 2:i + length])))
        i += length
    if eno:
        seg.eno = tuple(eno)
    if unknown:
        seg.unknown_options = tuple(unknown)
