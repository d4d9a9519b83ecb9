"""The in-memory form of one TCP segment (RFC 9293 section 3.1), shared by every layer.

This module only defines the data object.  Parsing and building the wire form live in
tcpstack/wire/tcp.py; the connection state machine (tcpstack/tcp/connection.py) consumes and
produces these objects.  Per-packet object: __slots__, plain ints, no properties on the
hot path.

Sequence and acknowledgment numbers are raw 32-bit unsigned ints (arithmetic modulo 2**32
is the connection's job).  ``window`` is the raw 16-bit header field, NOT scaled.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tcpstack.wire.buffers import Payload

# Control bits (RFC 9293 3.1, RFC 3168 for ECE/CWR).
FIN = 0x01
SYN = 0x02
RST = 0x04
PSH = 0x08
ACK = 0x10
URG = 0x20
ECE = 0x40
CWR = 0x80

_FLAG_NAMES = ((CWR, "CWR"), (ECE, "ECE"), (URG, "URG"), (ACK, "ACK"), (PSH, "PSH"),
               (RST, "RST"), (SYN, "SYN"), (FIN, "FIN"))


def flags_str(flags: int) -> str:
    """'SYN|ACK' style rendering of the control bits, for traces and errors."""
    return "|".join(name for bit, name in reversed(_FLAG_NAMES) if flags & bit) or "-"


class TCPSegment:
    """One TCP segment: header fields, options, payload.

    Options (each None/empty when absent):
      mss            -- MSS option value (kind 2), SYN only
      wscale         -- window-scale shift count (kind 3), as sent (may exceed 14; the
                        connection clamps it per RFC 7323 2.3)
      sack_permitted -- SACK-permitted option present (kind 4)
      sack_blocks    -- tuple of (left_edge, right_edge) pairs from a SACK option (kind 5)
      tsval, tsecr   -- timestamps option (kind 8); tsval is None when absent
      eno            -- tuple of the payloads (bytes after kind and length) of every ENO
                        option (kind 69, RFC 8547) in the segment, in order; () when none.
                        b"" is an empty (non-SYN-form) ENO option.
      unknown_options -- tuple of (kind, data) for options this stack does not interpret,
                        kept so a segment round-trips.
    """

    __slots__ = ("src_port", "dst_port", "seq", "ack", "flags", "window", "urg_ptr",
                 "mss", "wscale", "sack_permitted", "sack_blocks", "tsval", "tsecr",
                 "eno", "unknown_options", "payload", "gso_size")

    def __init__(self, src_port: int, dst_port: int, seq: int, ack: int, flags: int,
                 window: int, payload: Payload = b"", *, urg_ptr: int = 0,
                 mss: int | None = None, wscale: int | None = None,
                 sack_permitted: bool = False,
                 sack_blocks: tuple[tuple[int, int], ...] = (),
                 tsval: int | None = None, tsecr: int = 0,
                 eno: tuple[bytes, ...] = (),
                 unknown_options: tuple[tuple[int, bytes], ...] = ()) -> None:
        self.src_port = src_port
        self.dst_port = dst_port
        self.seq = seq
        self.ack = ack
        self.flags = flags
        self.window = window
        self.urg_ptr = urg_ptr
        self.mss = mss
        self.wscale = wscale
        self.sack_permitted = sack_permitted
        self.sack_blocks = sack_blocks
        self.tsval = tsval
        self.tsecr = tsecr
        self.eno = eno
        self.unknown_options = unknown_options
        self.payload = payload
        # TSO: > 0 asks the link to cut the payload into gso_size-byte segments
        # (tcp.build_ip_tcp then emits a virtio_net_hdr GSO frame); 0 = an ordinary segment.
        self.gso_size = 0

    @property
    def seg_len(self) -> int:
        """SEG.LEN of RFC 9293 3.4: payload octets plus one each for SYN and FIN."""
        return len(self.payload) + (self.flags & SYN and 1) + (self.flags & FIN and 1)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TCPSegment):
            return NotImplemented
        return all(getattr(self, s) == getattr(other, s) for s in self.__slots__ if s != "payload") \
            and bytes(self.payload) == bytes(other.payload)

    __hash__ = None  # type: ignore[assignment]  # __eq__ by value on a mutable object: unhashable

    def __repr__(self) -> str:
        opts = []
        if self.mss is not None:
            opts.append(f"mss={self.mss}")
        if self.wscale is not None:
            opts.append(f"ws={self.wscale}")
        if self.sack_permitted:
            opts.append("sackOK")
        if self.sack_blocks:
            opts.append("sack=" + ",".join(f"{l}-{r}" for l, r in self.sack_blocks))
        if self.tsval is not None:
            opts.append(f"ts={self.tsval}/{self.tsecr}")
        if self.eno:
            opts.append("eno=" + ",".join(e.hex() or "''" for e in self.eno))
        for kind, data in self.unknown_options:
            opts.append(f"opt{kind}={data.hex()}")
        return (f"<TCP {self.src_port}>{self.dst_port} [{flags_str(self.flags)}] seq={self.seq} "
                f"ack={self.ack} win={self.window} len={len(self.payload)}"
                + (" " + " ".join(opts) if opts else "") + ">")
