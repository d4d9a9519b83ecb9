"""struct virtio_net_hdr, the per-frame header of a TUN device opened with IFF_VNET_HDR: parse and pack.

The layout and constants are tcpstack.wire.virtio_net's (the TSO frames the stack builds
use them too), re-exported here.

Also here, for links that hand plain IP packets to the stack: completing a partial checksum
(what a NIC does for NEEDS_CSUM) and splitting TCP (RFC 9293 3.1 header fields: sequence
number, flags) and UDP GSO super-packets into gso_size segments, each with its own IPv4
total length / identification / header checksum or IPv6 payload length and its own L4
checksum (RFC 9293 3.1 pseudo-header; RFC 8200 8.1 for IPv6).
"""
from __future__ import annotations

import struct
from typing import NamedTuple

from tcpstack.wire.checksum import internet_checksum, ones_sum
from tcpstack.wire.ip import IPPROTO_UDP
from tcpstack.wire.segment import CWR, FIN, PSH
from tcpstack.wire.tcp import IPPROTO_TCP
from tcpstack.wire.virtio_net import (
    HDR, HDR_MRG, VIRTIO_NET_HDR_F_DATA_VALID, VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_F_RSC_INFO,
    VIRTIO_NET_HDR_GSO_ECN, VIRTIO_NET_HDR_GSO_NONE, VIRTIO_NET_HDR_GSO_TCPV4, VIRTIO_NET_HDR_GSO_TCPV6,
    VIRTIO_NET_HDR_GSO_UDP, VIRTIO_NET_HDR_GSO_UDP_L4, VNET_HDR_LEN, VNET_HDR_MRG_LEN)

__all__ = [
    "VirtioNetHdr", "VNET_HDR_LEN", "VNET_HDR_MRG_LEN", "pack", "parse", "to_packets",
    "complete_checksum", "gso_split", "inet_checksum",
    "VIRTIO_NET_HDR_F_NEEDS_CSUM", "VIRTIO_NET_HDR_F_DATA_VALID", "VIRTIO_NET_HDR_F_RSC_INFO",
    "VIRTIO_NET_HDR_GSO_NONE", "VIRTIO_NET_HDR_GSO_TCPV4", "VIRTIO_NET_HDR_GSO_UDP",
    "VIRTIO_NET_HDR_GSO_TCPV6", "VIRTIO_NET_HDR_GSO_UDP_L4", "VIRTIO_NET_HDR_GSO_ECN",
]

_H = struct.Struct("!H")
_I = struct.Struct("!I")


class VirtioNetHdr(NamedTuple):
    flags: int = 0
    gso_type: int = VIRTIO_NET_HDR_GSO_NONE
    hdr_len: int = 0
    gso_size: int = 0
    csum_start: int = 0
    csum_offset: int = 0
    num_buffers: int = 0      # only meaningful in the 12-byte header

    @property
    def needs_csum(self) -> bool:
        return bool(self.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM)

    @property
    def is_gso(self) -> bool:
        return (self.gso_type & ~VIRTIO_NET_HDR_GSO_ECN) != VIRTIO_NET_HDR_GSO_NONE


ZERO_HDR = VirtioNetHdr()


def pack(hdr: VirtioNetHdr = ZERO_HDR, length: int = VNET_HDR_LEN) -> bytes:
    """The `length`-byte (10 or 12) wire form of hdr."""
    if length == VNET_HDR_LEN:
        return HDR.pack(*hdr[:6])
    if length == VNET_HDR_MRG_LEN:
        return HDR_MRG.pack(*hdr)
    raise ValueError(f"virtio_net_hdr length must be 10 or 12, not {length}")


def parse(frame: bytes | bytearray | memoryview, length: int = VNET_HDR_LEN
          ) -> tuple[VirtioNetHdr, memoryview]:
    """Split a frame read from an IFF_VNET_HDR device into its header and the IP packet."""
    if len(frame) < length:
        raise ValueError(f"frame of {len(frame)} bytes shorter than its {length}-byte virtio_net_hdr")
    if length == VNET_HDR_LEN:
        hdr = VirtioNetHdr(*HDR.unpack_from(frame, 0))
    elif length == VNET_HDR_MRG_LEN:
        hdr = VirtioNetHdr(*HDR_MRG.unpack_from(frame, 0))
    else:
        raise ValueError(f"virtio_net_hdr length must be 10 or 12, not {length}")
    return hdr, memoryview(frame)[length:]


inet_checksum = internet_checksum      # the Internet checksum (RFC 1071): tcpstack.wire.checksum's


def complete_checksum(packet: bytearray, csum_start: int, csum_offset: int) -> None:
    """Do what a NIC does for VIRTIO_NET_HDR_F_NEEDS_CSUM: the field at csum_start+csum_offset
    holds the folded pseudo-header sum; replace it by ~sum(packet[csum_start:])."""
    at = csum_start + csum_offset
    if csum_start < 0 or at + 2 > len(packet):
        raise ValueError(f"csum_start {csum_start}/csum_offset {csum_offset} outside a "
                         f"{len(packet)}-byte packet")
    _H.pack_into(packet, at, internet_checksum(memoryview(packet)[csum_start:]))


def _pseudo_sum(pkt: bytes | bytearray | memoryview, v6: bool, proto: int, l4_len: int) -> int:
    # RFC 9293 3.1 (IPv4 pseudo-header), RFC 8200 8.1 (IPv6 pseudo-header): the source and
    # destination addresses are adjacent in both headers, summed as one run of words
    if v6:
        return ones_sum(pkt[8:40], l4_len + proto)
    return ones_sum(pkt[12:20], l4_len + proto)


def gso_split(packet: bytes | bytearray | memoryview, hdr: VirtioNetHdr) -> list[bytes]:
    """Split a TCP or UDP (UDP_L4) GSO super-packet into hdr.gso_size-payload segments with
    correct lengths, IPv4 IDs and checksums.  (GSO_UDP, i.e. UFO IP fragmentation, is not
    supported: the kernel no longer offers it to tun.)"""
    gso = hdr.gso_type & ~VIRTIO_NET_HDR_GSO_ECN
    mv = memoryview(packet)
    if len(mv) < 20:
        raise ValueError(f"GSO packet of {len(mv)} bytes has no IP header")
    version = mv[0] >> 4
    if version == 4:
        ihl = (mv[0] & 0x0F) * 4
        v6, proto = False, mv[9]
    elif version == 6:
        ihl, v6, proto = 40, True, mv[6]     # extension headers before L4 are not supported
    else:
        raise ValueError(f"GSO packet with IP version {version}")
    if gso in (VIRTIO_NET_HDR_GSO_TCPV4, VIRTIO_NET_HDR_GSO_TCPV6):
        if proto != IPPROTO_TCP or len(mv) < ihl + 20:
            raise ValueError(f"TCP GSO packet carries protocol {proto}")
        l4h = (mv[ihl + 12] >> 4) * 4
    elif gso == VIRTIO_NET_HDR_GSO_UDP_L4:
        if proto != IPPROTO_UDP:
            raise ValueError(f"UDP GSO packet carries protocol {proto}")
        l4h = 8
    else:
        raise ValueError(f"unsupported gso_type 0x{hdr.gso_type:x}")
    hl = ihl + l4h
    mss = hdr.gso_size
    if mss <= 0 or len(mv) < hl:
        raise ValueError(f"bad GSO packet: gso_size {mss}, {len(mv)} bytes, headers {hl}")
    headers = bytes(mv[:hl])
    payload = mv[hl:]
    tcp = l4h != 8
    seq = _I.unpack_from(headers, ihl + 4)[0] if tcp else 0
    ip_id = 0 if v6 else _H.unpack_from(headers, 4)[0]
    flags = headers[ihl + 13] if tcp else 0
    out: list[bytes] = []
    n = len(payload)
    count = max(1, -(-n // mss))
    for i in range(count):
        off = i * mss
        chunk = payload[off:off + mss]
        seg = bytearray(headers)
        seg += chunk
        l4_len = l4h + len(chunk)
        if v6:
            _H.pack_into(seg, 4, l4_len)
        else:
            _H.pack_into(seg, 2, ihl + l4_len)
            _H.pack_into(seg, 4, (ip_id + i) & 0xFFFF)
            _H.pack_into(seg, 10, 0)
            _H.pack_into(seg, 10, internet_checksum(memoryview(seg)[:ihl]))
        if tcp:
            _I.pack_into(seg, ihl + 4, (seq + off) & 0xFFFFFFFF)
            f = flags
            if i:
                f &= ~CWR                     # CWR only on the first segment
            if i != count - 1:
                f &= ~(FIN | PSH)        # FIN/PSH only on the last
            seg[ihl + 13] = f
            csum_at = ihl + 16
        else:
            _H.pack_into(seg, ihl + 4, l4_len)
            csum_at = ihl + 6
        _H.pack_into(seg, csum_at, 0)
        c = internet_checksum(memoryview(seg)[ihl:], _pseudo_sum(seg, v6, proto, l4_len))
        if not tcp and c == 0:
            c = 0xFFFF                             # RFC 768: a computed zero is sent as all ones
        _H.pack_into(seg, csum_at, c)
        out.append(bytes(seg))
    return out


def to_packets(frame: bytes, length: int = VNET_HDR_LEN) -> list[bytes]:
    """Plain IP packets from one frame read from an IFF_VNET_HDR device: the header removed,
    a partial checksum completed, a GSO super-packet split."""
    hdr, pkt = parse(frame, length)
    if hdr.is_gso:
        return gso_split(pkt, hdr)
    if hdr.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM:
        buf = bytearray(pkt)
        complete_checksum(buf, hdr.csum_start, hdr.csum_offset)
        return [bytes(buf)]
    return [frame[length:]]
