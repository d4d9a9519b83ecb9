"""pcap capture of everything a stack sends and receives (libpcap format, LINKTYPE_RAW).

LINKTYPE_RAW (101) records start directly with the IPv4 or IPv6 header, which is exactly
what a TUN device carries, so Wireshark/tshark dissect the stack's packets (ENO option
kind 69 included) without a fake link layer.  Timestamps are the stack's clock shifted to
wall-clock time by `clock_offset` (the asyncio edge passes time.time() - loop.time()).
"""
from __future__ import annotations

import struct
from typing import BinaryIO

from tcpstack.errors import ParseError

from tcpstack.wire.virtio_net import VIRTIO_NET_HDR_F_NEEDS_CSUM, VNET_HDR_LEN

LINKTYPE_RAW = 101
_GLOBAL = struct.Struct("<IHHiIII")
_RECORD = struct.Struct("<IIII")


class PcapWriter:
    """Write packets to a pcap file; usable as StackCore.on_packet."""

    def __init__(self, f: BinaryIO | str, *, clock_offset: float = 0.0, snaplen: int = 262144) -> None:
        self._own = isinstance(f, str)
        self._f: BinaryIO = open(f, "wb") if isinstance(f, str) else f
        self.clock_offset = clock_offset
        self.snaplen = snaplen
        self.count = 0
        # magic, version 2.4, thiszone, sigfigs, snaplen, network
        self._f.write(_GLOBAL.pack(0xA1B2C3D4, 2, 4, 0, 0, snaplen, LINKTYPE_RAW))

    def __call__(self, direction: str, packet: bytes, now: float) -> None:
        self.write(packet, now)

    def write(self, packet: bytes, now: float) -> None:
        if packet and packet[0] == VIRTIO_NET_HDR_F_NEEDS_CSUM:
            # A TSO frame (tcp.build_gso_frame): drop its 10-byte virtio_net_hdr and record
            # the super-packet, as tcpdump shows one on an interface with TSO.  Its TCP
            # checksum is the partial (pseudo-header) sum the kernel completes per segment.
            packet = packet[VNET_HDR_LEN:]
        t = now + self.clock_offset
        sec = int(t)
        usec = int((t - sec) * 1_000_000)
        data = packet[: self.snaplen]
        self._f.write(_RECORD.pack(sec, usec, len(data), len(packet)))
        self._f.write(data)
        self.count += 1

    def flush(self) -> None:
        self._f.flush()

    def close(self) -> None:
        if self._own:
            self._f.close()
        else:
            self._f.flush()

    def __enter__(self) -> "PcapWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_pcap(f: BinaryIO | str) -> list[tuple[float, bytes]]:
    """Read back (timestamp, packet) records of a pcap file written by PcapWriter."""
    fh = open(f, "rb") if isinstance(f, str) else f
    try:
        hdr = fh.read(_GLOBAL.size)
        magic, _, _, _, _, _, linktype = _GLOBAL.unpack(hdr)
        if magic != 0xA1B2C3D4 or linktype != LINKTYPE_RAW:
            raise ValueError("not a LINKTYPE_RAW little-endian pcap file")
        out = []
        while rec := fh.read(_RECORD.size):
            sec, usec, incl, _orig = _RECORD.unpack(rec)
            out.append((sec + usec / 1e6, fh.read(incl)))
        return out
    finally:
        if isinstance(f, str):
            fh.close()


_LINK_SKIP = {LINKTYPE_RAW: 0, 228: 0, 229: 0, 1: 14, 113: 16}   # RAW, IPV4, IPV6, ETHERNET, LINUX_SLL


def read_capture(path: str) -> list[tuple[float, bytes]]:
    """(time, IP packet) records of a pcap file: either byte order, µs or ns stamps, link
    types raw IP, Ethernet or Linux cooked (the link header dropped).  ParseError when not."""
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 24:
        raise ParseError(f"{path}: too short for a pcap file")
    magic = data[:4]
    for order, frac in (("<", 1e-6), (">", 1e-6)):
        m = struct.unpack(order + "I", magic)[0]
        if m in (0xA1B2C3D4, 0xA1B23C4D):
            break
    else:
        raise ParseError(f"{path}: not a pcap file (pcapng: convert with `editcap -F pcap`)")
    if m == 0xA1B23C4D:
        frac = 1e-9
    linktype = struct.unpack_from(order + "I", data, 20)[0] & 0x0FFFFFFF
    if linktype not in _LINK_SKIP:
        raise ParseError(f"{path}: link type {linktype} not supported")
    skip = _LINK_SKIP[linktype]
    rec = struct.Struct(order + "IIII")
    out: list[tuple[float, bytes]] = []
    off = 24
    while off + 16 <= len(data):
        sec, sub, incl, _ = rec.unpack_from(data, off)
        off += 16
        out.append((sec + sub * frac, data[off + skip:off + incl]))
        off += incl
    return out
