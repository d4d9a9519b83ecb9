"""What the layers hand each other: a segment's payload and a packet on a link.

    Payload     a TCP segment's payload: bytes, a memoryview (parse_tcp's slice of the
                received packet, the send buffer's view of the application's bytes), or a
                Gather of views (a TSO super-segment's payload still in pieces).
    LinkPacket  what a link's send() takes and the stack core's packets_to_send() returns:
                one IP packet as bytes, or a GSOFrame (a TSO frame for an IFF_VNET_HDR TUN
                device, written with writev(2)).

Gather and GSOFrame are final (never subclassed), so `type(p) is GSOFrame` narrows both
ways for the type checker, as it does at run time.  They are here, beside the aliases they belong to; tcpstack.wire.tcp builds
the frames (build_gso) and re-exports both classes.
"""
from __future__ import annotations

from typing import TypeAlias, final

__all__ = ["Gather", "GSOFrame", "Payload", "LinkPacket", "Buffer"]

Buffer: TypeAlias = bytes | bytearray | memoryview
"""One contiguous buffer, as os.write/os.writev and the checksum functions take it."""


@final
class Gather:
    """A payload in several pieces (views of consecutive send-buffer chunks), for a TSO
    frame written with writev(2) so the pieces are never joined in Python.  Sized like the
    bytes it stands for; bytes(g) joins them (for captures and tests)."""
    __slots__ = ("parts", "n")

    def __init__(self, parts: list[Buffer], n: int) -> None:
        self.parts = parts
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __bytes__(self) -> bytes:
        return b"".join(self.parts)

    def __getitem__(self, i: int | slice) -> int | bytes:
        return bytes(self)[i]

    def __eq__(self, other: object) -> bool:
        return bytes(self) == other

    __hash__ = None  # type: ignore[assignment]  # equal to bytes, yet mutable parts: unhashable


# What a TCP segment's payload may be: bytes or a view (received data, a send-buffer slice),
# an owned bytearray (a tcpcrypt frame buffer the send buffer keeps by reference, never
# written again), or a Gather of views (a TSO frame straddling two writes).
Payload: TypeAlias = bytes | bytearray | memoryview | Gather


@final
class GSOFrame:
    """A TSO frame as buffers for one writev(2): `head` (virtio_net_hdr + IP + TCP headers,
    see tcpstack.wire.tcp.build_gso) and `payload` (the segment's payload as the send buffer
    handed it over: a view of the application's bytes, or a Gather of views; never copied in
    Python, the kernel checksums and segments it).  bytes(frame) gives the contiguous frame
    build_gso_frame returns."""
    __slots__ = ("head", "payload")

    def __init__(self, head: bytearray, payload: Payload) -> None:
        self.head = head
        self.payload = payload

    def __len__(self) -> int:
        return len(self.head) + len(self.payload)

    def __bytes__(self) -> bytes:
        p = self.payload
        if type(p) is Gather:
            return b"".join((self.head, *p.parts))
        return b"".join((self.head, p))

    def buffers(self) -> tuple[Buffer, ...]:
        """The frame as buffers for writev(2): headers, then the payload's pieces."""
        p = self.payload
        if type(p) is Gather:
            return (self.head, *p.parts)
        return (self.head, p)

    def __repr__(self) -> str:
        return f"GSOFrame({len(self.head)} + {len(self.payload)} bytes)"


LinkPacket: TypeAlias = bytes | GSOFrame
