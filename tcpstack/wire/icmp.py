"""ICMP (RFC 792, RFC 1191) and ICMPv6 (RFC 4443): echo and the errors a TCP cares about.

parse_icmp() validates the checksum (ICMPv6's covers the IPv6 pseudo-header, RFC 4443 2.3)
and, for errors, keeps the quoted original datagram so the stack can find the connection
(quoted_tcp_ports_seq).  Builders make echo replies and destination-unreachable errors that
quote the offending datagram within the size limits of RFC 1812 4.3.2.3 / RFC 4443 2.4(c).
"""
from __future__ import annotations

import struct

from tcpstack.wire.checksum import internet_checksum, ones_sum, pseudo_header_sum
from tcpstack.errors import ParseError

ICMP_ECHO_REPLY = 0
ICMP_DEST_UNREACH = 3
ICMP_ECHO_REQUEST = 8
ICMP_TIME_EXCEEDED = 11
ICMP6_DEST_UNREACH = 1
ICMP6_PACKET_TOO_BIG = 2
ICMP6_TIME_EXCEEDED = 3
ICMP6_PARAM_PROBLEM = 4
PARAM6_UNKNOWN_NEXT_HEADER = 1   # RFC 4443 3.4 code 1: unrecognized Next Header type
ICMP6_ECHO_REQUEST = 128
ICMP6_ECHO_REPLY = 129
IPPROTO_ICMP = 1
IPPROTO_ICMPV6 = 58

# Destination-unreachable codes.
UNREACH_NET, UNREACH_HOST, UNREACH_PROTOCOL, UNREACH_PORT, UNREACH_FRAG_NEEDED = 0, 1, 2, 3, 4
UNREACH6_NO_ROUTE, UNREACH6_ADMIN, UNREACH6_ADDR, UNREACH6_PORT = 0, 1, 3, 4

_HDR = struct.Struct("!BBHHH")


class ICMPMessage:
    __slots__ = ("type", "code", "ident", "seq", "mtu", "payload", "v6")

    def __init__(self, type: int, code: int, ident: int = 0, seq: int = 0, mtu: int = 0,
                 payload: bytes | memoryview = b"", v6: bool = False) -> None:
        self.type = type
        self.code = code
        self.ident = ident       # echo identifier
        self.seq = seq           # echo sequence number
        self.mtu = mtu           # next-hop MTU (v4 frag needed) / MTU (v6 packet too big)
        self.payload = payload   # echo data, or the quoted datagram of an error
        self.v6 = v6

    @property
    def quoted(self) -> bytes | memoryview:
        return self.payload

    def __repr__(self) -> str:
        return f"<ICMP{'v6' if self.v6 else ''} {describe(self)} len={len(self.payload)}>"


def parse_icmp(data: bytes | memoryview, src: bytes, dst: bytes, *, v6: bool) -> ICMPMessage:
    n = len(data)
    if n < 8:
        raise ParseError(f"ICMP message of {n} bytes is shorter than its 8-byte header")
    mv = data if isinstance(data, memoryview) else memoryview(data)
    initial = pseudo_header_sum(src, dst, IPPROTO_ICMPV6, n) if v6 else 0
    if ones_sum(mv, initial) != 0:
        raise ParseError("bad ICMP checksum")
    typ, code, _c, a, b = _HDR.unpack_from(mv)
    msg = ICMPMessage(typ, code, payload=mv[8:], v6=v6)
    echo = (ICMP6_ECHO_REQUEST, ICMP6_ECHO_REPLY) if v6 else (ICMP_ECHO_REQUEST, ICMP_ECHO_REPLY)
    if typ in echo:
        msg.ident, msg.seq = a, b
    elif v6 and typ == ICMP6_PACKET_TOO_BIG:
        msg.mtu = (a << 16) | b
    elif not v6 and typ == ICMP_DEST_UNREACH and code == UNREACH_FRAG_NEEDED:
        msg.mtu = b               # RFC 1191 4: next-hop MTU in the low 16 bits
    return msg


def _build(typ: int, code: int, a: int, b: int, body: bytes | memoryview, src: bytes, dst: bytes,
           v6: bool) -> bytes:
    msg = bytearray(_HDR.pack(typ, code, 0, a, b)) + bytes(body)
    initial = pseudo_header_sum(src, dst, IPPROTO_ICMPV6, len(msg)) if v6 else 0
    c = internet_checksum(msg, initial)
    msg[2] = c >> 8
    msg[3] = c & 0xFF
    return bytes(msg)


def _ip(src: bytes, dst: bytes, proto: int, payload: bytes, ttl: int) -> bytes:
    from tcpstack.wire.ip import build_ipv4, build_ipv6
    if len(src) == 4:
        return build_ipv4(src, dst, proto, payload, ttl=ttl, df=False)
    return build_ipv6(src, dst, proto, payload, hop_limit=ttl)


def build_icmp_echo_reply(request: ICMPMessage, src: bytes, dst: bytes, *, v6: bool,
                          ttl: int = 64) -> bytes:
    """The whole IP packet answering an echo request (RFC 792 / RFC 4443 4.2)."""
    typ = ICMP6_ECHO_REPLY if v6 else ICMP_ECHO_REPLY
    body = _build(typ, 0, request.ident, request.seq, request.payload, src, dst, v6)
    return _ip(src, dst, IPPROTO_ICMPV6 if v6 else IPPROTO_ICMP, body, ttl)


def build_icmp_echo_request(src: bytes, dst: bytes, *, ident: int, seq: int, data: bytes = b"",
                            v6: bool, ttl: int = 64) -> bytes:
    typ = ICMP6_ECHO_REQUEST if v6 else ICMP_ECHO_REQUEST
    body = _build(typ, 0, ident, seq, data, src, dst, v6)
    return _ip(src, dst, IPPROTO_ICMPV6 if v6 else IPPROTO_ICMP, body, ttl)


def build_icmp_error(original: bytes | memoryview, src: bytes, dst: bytes, *, v6: bool,
                     type: int, code: int, mtu: int = 0, pointer: int = 0,
                     ttl: int = 64) -> bytes:
    """An ICMP error quoting `original` (the offending IP datagram): as much as fits in 576
    bytes for IPv4 (RFC 1812 4.3.2.3) and in the minimum MTU 1280 for IPv6 (RFC 4443 2.4c).
    `mtu`: of a fragmentation-needed / packet-too-big error; `pointer`: of an ICMPv6
    parameter problem (RFC 4443 3.4, the offset of the offending octet)."""
    limit = (1280 - 48) if v6 else (576 - 28)
    quoted = bytes(original[:limit])
    if v6:
        if type == ICMP6_PACKET_TOO_BIG:
            a, b = mtu >> 16, mtu & 0xFFFF
        elif type == ICMP6_PARAM_PROBLEM:
            a, b = pointer >> 16, pointer & 0xFFFF
        else:
            a, b = 0, 0
    else:
        a, b = (0, mtu) if type == ICMP_DEST_UNREACH and code == UNREACH_FRAG_NEEDED else (0, 0)
    body = _build(type, code, a, b, quoted, src, dst, v6)
    return _ip(src, dst, IPPROTO_ICMPV6 if v6 else IPPROTO_ICMP, body, ttl)


def is_error(msg: ICMPMessage) -> bool:
    if msg.v6:
        return msg.type < 128
    return msg.type in (ICMP_DEST_UNREACH, ICMP_TIME_EXCEEDED, 4, 5, 12)


def is_packet_too_big(msg: ICMPMessage) -> bool:
    if msg.v6:
        return msg.type == ICMP6_PACKET_TOO_BIG
    return msg.type == ICMP_DEST_UNREACH and msg.code == UNREACH_FRAG_NEEDED


def is_hard_error(msg: ICMPMessage) -> bool:
    """RFC 1122 4.2.3.9 / RFC 5461 4: protocol and port unreachable are hard errors (abort);
    net/host unreachable, time exceeded etc. are soft (reported only on timeout)."""
    if msg.v6:
        return msg.type == ICMP6_DEST_UNREACH and msg.code in (UNREACH6_PORT, UNREACH6_ADMIN)
    return msg.type == ICMP_DEST_UNREACH and msg.code in (UNREACH_PROTOCOL, UNREACH_PORT)


def describe(msg: ICMPMessage) -> str:
    names4 = {0: "echo-reply", 3: "destination-unreachable", 8: "echo-request", 11: "time-exceeded"}
    names6 = {1: "destination-unreachable", 2: "packet-too-big", 3: "time-exceeded",
              4: "parameter-problem",
              128: "echo-request", 129: "echo-reply"}
    name = (names6 if msg.v6 else names4).get(msg.type, f"type-{msg.type}")
    return f"{name}/{msg.code}" + (f" mtu={msg.mtu}" if msg.mtu else "")


def quoted_tcp_ports_seq(msg: ICMPMessage) -> tuple[bytes, bytes, int, int, int] | None:
    """For an error quoting a TCP segment we sent: (src, dst, sport, dport, seq) of it."""
    if not is_error(msg):
        return None
    q = msg.payload
    if msg.v6:
        if len(q) < 48 or q[6] != 6:       # fixed header + 8 bytes of TCP; next header TCP
            return None
        src, dst = bytes(q[8:24]), bytes(q[24:40])
        off = 40
    else:
        if len(q) < 28 or q[0] >> 4 != 4 or q[9] != 6:
            return None
        off = (q[0] & 0x0F) * 4
        if off < 20 or len(q) < off + 8:
            return None
        src, dst = bytes(q[12:16]), bytes(q[16:20])
    sport, dport, seq = struct.unpack_from("!HHI", q, off)
    return src, dst, sport, dport, seq


def error_allowed(packet: bytes | memoryview) -> bool:
    """Whether an ICMP error may be sent about `packet` (a whole IP datagram): never about
    an ICMP error, a non-initial fragment, or a multicast/broadcast/unspecified source or
    multicast/broadcast destination (RFC 1122 3.2.2, RFC 1812 4.3.2.7, RFC 4443 2.4(e))."""
    from tcpstack.wire.ip import parse_ip
    try:
        hdr, payload = parse_ip(packet)
    except ParseError:
        return False
    if hdr.version == 4:
        if hdr.frag_offset:
            return False
        if hdr.dst == b"\xff\xff\xff\xff" or 224 <= hdr.dst[0] <= 239 or hdr.src[0] >= 224 \
                or hdr.src == b"\0\0\0\0":
            return False
        proto, err = IPPROTO_ICMP, (lambda t: t not in (ICMP_ECHO_REQUEST, ICMP_ECHO_REPLY, 13, 14))
    else:
        if hdr.frag_offset:
            return False
        if hdr.dst[0] == 0xFF or hdr.src[0] == 0xFF or hdr.src == bytes(16):
            return False
        proto, err = IPPROTO_ICMPV6, (lambda t: t < 128)
    if hdr.proto == proto and (len(payload) < 1 or err(payload[0])):
        return False
    return True
