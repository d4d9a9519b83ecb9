"""Host-level test helpers shared by the test modules (one place, not imported from other
test modules): addresses, reference checksums, packet helpers, two stack cores pumped by hand."""
from __future__ import annotations

import ipaddress

from tcpstack.host.endpoint import Endpoint, Established
from tcpstack.host.stack import StackCore
from tcpstack.wire.ip import parse_ip
from tcpstack.wire.segment import TCPSegment
from tcpstack.wire.tcp import parse_tcp


def ref_sum(data: bytes) -> int:
    """RFC 1071 4.1 literally: add 16-bit words, fold the carries, end-around."""
    if len(data) % 2:
        data += b"\0"
    total = 0
    for i in range(0, len(data), 2):
        total += (data[i] << 8) | data[i + 1]
        total = (total & 0xFFFF) + (total >> 16)
    return total


def ref_checksum(data: bytes) -> int:
    return ~ref_sum(data) & 0xFFFF


A = ipaddress.ip_address("10.0.0.1").packed
B = ipaddress.ip_address("10.0.0.2").packed


ones_complement_checksum = ref_checksum     # the name older tests use


def tcp_of(packet: bytes) -> TCPSegment:
    hdr, payload = parse_ip(packet)
    return parse_tcp(payload, hdr.src, hdr.dst)


def pump(a: StackCore, b: StackCore, now: float, rounds: int = 50) -> None:
    for _ in range(rounds):
        pa, pb = a.packets_to_send(), b.packets_to_send()
        if not pa and not pb:
            return
        for p in pa:
            b.receive_packet(p, now)
        for p in pb:
            a.receive_packet(p, now)


def established_pair() -> tuple[StackCore, StackCore, "Endpoint", "Endpoint"]:
    """Two cores with one established plain connection: (client core, server core,
    client endpoint, server endpoint), their Established events consumed."""
    a, b = StackCore(["10.0.0.1"]), StackCore(["10.0.0.2"])
    lst = b.listen(80, "10.0.0.2")
    ep = a.connect("10.0.0.2", 80, 0.0)
    pump(a, b, 0.0)
    assert isinstance(ep.next_event(), Established)
    srv = lst.accept()
    assert srv is not None and isinstance(srv.next_event(), Established)
    return a, b, ep, srv
