"""IPv4 (RFC 791) and IPv6 (RFC 8200) headers: parse with strict validation, build.

Addresses are packed bytes (4 or 16) everywhere on the per-packet path; ipaddress objects
only at the edges.  parse_ip() returns the header and a memoryview of the upper-layer
payload (no copy), trimmed to the datagram's own length (link padding ignored).
Malformed input raises tcpstack.errors.ParseError.
"""
from __future__ import annotations

import struct

from tcpstack.wire.checksum import internet_checksum, ones_sum
from tcpstack.errors import ParseError

V4_HDR = struct.Struct("!BBHHHBBH4s4s")   # the 20-byte IPv4 header, no options (RFC 791 3.1)
V6_HDR = struct.Struct("!IHBB16s16s")      # the 40-byte IPv6 header (RFC 8200 3)

IPPROTO_UDP = 17                           # RFC 768 (TCP's 6 is tcp.IPPROTO_TCP, ICMP's in icmp)

# IPv6 extension headers walked to find the upper layer (RFC 8200 4.1).
HOP_BY_HOP, ROUTING, FRAGMENT, DEST_OPTS, NO_NEXT, AUTH = 0, 43, 44, 60, 59, 51
_SKIPPABLE = frozenset((HOP_BY_HOP, ROUTING, DEST_OPTS, AUTH))  # AH (RFC 4302 2.2): 4-byte units
_FRAG = struct.Struct("!BBHI")


class IPv4Header:
    __slots__ = ("src", "dst", "proto", "ttl", "tos", "ident", "flags", "frag_offset",
                 "total_length", "header_length", "options")
    version = 4

    def __init__(self, src: bytes, dst: bytes, proto: int, ttl: int = 64, tos: int = 0,
                 ident: int = 0, flags: int = 0x2, frag_offset: int = 0, total_length: int = 0,
                 header_length: int = 20, options: bytes = b"") -> None:
        self.src = src
        self.dst = dst
        self.proto = proto
        self.ttl = ttl
        self.tos = tos
        self.ident = ident
        self.flags = flags              # 3 bits: reserved, DF (0x2), MF (0x1)
        self.frag_offset = frag_offset  # in 8-byte units
        self.total_length = total_length
        self.header_length = header_length
        self.options = options

    @property
    def next_header(self) -> int:
        return self.proto

    @property
    def is_fragment(self) -> bool:
        return bool(self.flags & 0x1) or self.frag_offset != 0

    @property
    def more_fragments(self) -> bool:
        return bool(self.flags & 0x1)

    @property
    def fragment_offset_bytes(self) -> int:
        return self.frag_offset * 8


class IPv6Header:
    __slots__ = ("src", "dst", "next_header", "hop_limit", "traffic_class", "flow_label",
                 "payload_length", "frag_offset", "more_fragments", "frag_ident", "ext_headers")
    version = 6

    def __init__(self, src: bytes, dst: bytes, next_header: int, hop_limit: int = 64,
                 traffic_class: int = 0, flow_label: int = 0, payload_length: int = 0) -> None:
        self.src = src
        self.dst = dst
        self.next_header = next_header          # the upper-layer protocol after extensions
        self.hop_limit = hop_limit
        self.traffic_class = traffic_class
        self.flow_label = flow_label
        self.payload_length = payload_length
        self.frag_offset: int | None = None     # bytes, when a fragment header was present
        self.more_fragments = False
        self.frag_ident = 0
        # Extension headers before the upper layer, as (type, raw bytes of the whole
        # header), in order; build_ipv6(extensions=...) takes the same form.
        self.ext_headers: tuple[tuple[int, bytes], ...] = ()

    @property
    def proto(self) -> int:
        return self.next_header

    @property
    def ttl(self) -> int:
        return self.hop_limit

    @property
    def is_fragment(self) -> bool:
        # RFC 8200 4.5: an "atomic fragment" (offset 0, M=0) is processed as a whole packet.
        return self.frag_offset is not None and (self.frag_offset != 0 or self.more_fragments)

    @property
    def ident(self) -> int:
        return self.frag_ident

    @property
    def fragment_offset_bytes(self) -> int:
        return self.frag_offset or 0


def parse_ip(packet: bytes | bytearray | memoryview) -> tuple[IPv4Header | IPv6Header, memoryview]:
    """Parse an IPv4 or IPv6 datagram; return its header and upper-layer payload."""
    n = len(packet)
    if n < 1:
        raise ParseError("empty packet")
    mv = packet if isinstance(packet, memoryview) else memoryview(packet)
    version = mv[0] >> 4
    if version == 4:
        if n < 20:
            raise ParseError(f"IPv4 packet of {n} bytes is shorter than a header")
        vihl, tos, total, ident, ff, ttl, proto, _csum, src, dst = V4_HDR.unpack_from(mv)
        ihl = (vihl & 0x0F) * 4
        if ihl < 20:
            raise ParseError(f"IPv4 IHL {ihl // 4} is below the minimum of 5")
        if total < ihl or total > n:
            raise ParseError(f"IPv4 total length {total} inconsistent with header {ihl} / packet {n}")
        if ones_sum(mv[:ihl]) != 0:
            raise ParseError("bad IPv4 header checksum")
        h = IPv4Header(src, dst, proto, ttl, tos, ident, ff >> 13, ff & 0x1FFF, total, ihl,
                       bytes(mv[20:ihl]) if ihl > 20 else b"")
        return h, mv[ihl:total]
    if version == 6:
        if n < 40:
            raise ParseError(f"IPv6 packet of {n} bytes is shorter than a header")
        vtf, plen, nh, hlim, src, dst = V6_HDR.unpack_from(mv)
        if 40 + plen > n:
            raise ParseError(f"IPv6 payload length {plen} exceeds the packet ({n - 40} bytes)")
        if plen == 0 and nh == HOP_BY_HOP:
            raise ParseError("IPv6 jumbograms are not supported")
        h6 = IPv6Header(src, dst, nh, hlim, (vtf >> 20) & 0xFF, vtf & 0xFFFFF, plen)
        off, end = 40, 40 + plen
        exts: list[tuple[int, bytes]] = []
        while nh in _SKIPPABLE or nh == FRAGMENT:
            if off + 8 > end:
                raise ParseError(f"truncated IPv6 extension header {nh}")
            if nh == HOP_BY_HOP and off != 40:
                # RFC 8200 4.1: hop-by-hop options only immediately after the IPv6 header.
                raise ParseError("IPv6 hop-by-hop options header not first")
            if nh == FRAGMENT:
                if h6.frag_offset is not None:
                    raise ParseError("more than one IPv6 fragment header")
                # RFC 8200 4.5: next header, reserved, offset(13) res(2) M(1), identification
                nxt, _, offm, ident = _FRAG.unpack_from(mv, off)
                h6.frag_offset = (offm >> 3) * 8
                h6.more_fragments = bool(offm & 1)
                h6.frag_ident = ident
                exts.append((nh, bytes(mv[off:off + 8])))
                nh, off = nxt, off + 8
                if h6.is_fragment:
                    break        # later headers are inside the fragmentable part
            else:
                nxt, hlen = mv[off], mv[off + 1]
                size = (hlen + 2) * 4 if nh == AUTH else (hlen + 1) * 8
                if off + size > end:
                    raise ParseError(f"IPv6 extension header {nh} runs past the payload")
                exts.append((nh, bytes(mv[off:off + size])))
                nh, off = nxt, off + size
        h6.next_header = nh
        if exts:
            h6.ext_headers = tuple(exts)
        return h6, mv[off:end]
    raise ParseError(f"unknown IP version {version}")


def skip_ipv6_extensions(next_header: int, data: bytes | memoryview) -> tuple[int, memoryview]:
    """Walk the extension headers at the start of `data` (the fragmentable part of a
    reassembled IPv6 datagram, RFC 8200 4.5) to the upper layer: (protocol, its bytes).
    A fragment header here (nested fragmentation) is malformed."""
    mv = data if isinstance(data, memoryview) else memoryview(data)
    nh, off, end = next_header, 0, len(mv)
    while nh in _SKIPPABLE:
        if nh == HOP_BY_HOP or off + 8 > end:
            raise ParseError(f"misplaced or truncated IPv6 extension header {nh}")
        size = (mv[off + 1] + 2) * 4 if nh == AUTH else (mv[off + 1] + 1) * 8
        if off + size > end:
            raise ParseError(f"IPv6 extension header {nh} runs past the payload")
        nh, off = mv[off], off + size
    if nh == FRAGMENT:
        raise ParseError("IPv6 fragment header inside a fragmented datagram")
    return nh, mv[off:]


def build_ipv4(src: bytes, dst: bytes, proto: int, payload: bytes | bytearray | memoryview, *,
               ttl: int = 64, ident: int = 0, df: bool = True, tos: int = 0,
               options: bytes = b"", frag_offset: int = 0, more_fragments: bool = False) -> bytes:
    """An IPv4 datagram (RFC 791 3.1).  `frag_offset` is in bytes (a multiple of 8);
    `options` must be padded to a multiple of 4 bytes (at most 40)."""
    olen = len(options)
    if olen & 3 or olen > 40:
        raise ValueError(f"IPv4 options of {olen} bytes (need a multiple of 4, at most 40)")
    if frag_offset & 7 or frag_offset > 0xFFF8:
        raise ValueError(f"IPv4 fragment offset {frag_offset} is not a multiple of 8 below 65536")
    ihl = 20 + olen
    total = ihl + len(payload)
    if total > 0xFFFF:
        raise ValueError(f"IPv4 datagram of {total} bytes is too large")
    ff = (0x4000 if df else 0) | (0x2000 if more_fragments else 0) | (frag_offset >> 3)
    buf = bytearray(total)
    V4_HDR.pack_into(buf, 0, 0x40 | (ihl >> 2), tos, total, ident, ff, ttl, proto, 0, src, dst)
    if olen:
        buf[20:ihl] = options
    csum = internet_checksum(memoryview(buf)[:ihl])
    buf[10] = csum >> 8
    buf[11] = csum & 0xFF
    buf[ihl:] = payload
    return bytes(buf)


def build_ipv6(src: bytes, dst: bytes, next_header: int, payload: bytes | bytearray | memoryview,
               *, hop_limit: int = 64, traffic_class: int = 0, flow_label: int = 0,
               extensions: tuple[tuple[int, bytes], ...] | list[tuple[int, bytes]] = ()) -> bytes:
    """An IPv6 packet (RFC 8200 3).  `extensions` are (type, raw header) pairs as in
    IPv6Header.ext_headers; their Next Header bytes are rewritten to chain correctly and
    `next_header` is the protocol of `payload`."""
    if not extensions:
        if len(payload) > 0xFFFF:
            raise ValueError("IPv6 payload too large (jumbograms unsupported)")
        return V6_HDR.pack((6 << 28) | (traffic_class << 20) | flow_label, len(payload),
                        next_header, hop_limit, src, dst) + bytes(payload)
    chain = bytearray()
    types = [t for t, _ in extensions] + [next_header]
    for i, (typ, raw) in enumerate(extensions):
        size = 8 if typ == FRAGMENT else ((raw[1] + 2) * 4 if typ == AUTH else (raw[1] + 1) * 8) \
            if len(raw) >= 2 else -1
        if size != len(raw):
            raise ValueError(f"IPv6 extension header {typ}: {len(raw)} bytes, length field says {size}")
        chain.append(types[i + 1])
        chain += raw[1:]
    plen = len(chain) + len(payload)
    if plen > 0xFFFF:
        raise ValueError("IPv6 payload too large (jumbograms unsupported)")
    return V6_HDR.pack((6 << 28) | (traffic_class << 20) | flow_label, plen, types[0], hop_limit,
                    src, dst) + bytes(chain) + bytes(payload)
