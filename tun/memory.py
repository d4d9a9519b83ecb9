"""An in-memory point-to-point link between two Stacks on one event loop: the test and
teaching link (a tcpstack.aio.streams.Link, like tun.device.AsyncTun)."""
from __future__ import annotations

import asyncio
from typing import Callable

from tcpstack.wire.buffers import GSOFrame, LinkPacket
from tcpstack.wire.virtio_net import VNET_HDR_LEN

__all__ = ["MemoryLink"]


class MemoryLink:
    """One end of an in-memory point-to-point link between two Stacks on the same loop.

    tso=True makes it a link with offloads, like a vnet TUN device: the sender's TCBs emit
    TSO super-segments (tcp.build_gso) and the receiver gets each whole, as GRO would hand
    it over, with its checksum vouched for (the pseudo-header sum of a TSO frame is only
    completed by a device).  Only the headers are rebuilt; the payload is copied once, as
    the kernel copies it once."""

    def __init__(self, tso: bool = False) -> None:
        self.peer: MemoryLink | None = None
        self._on_packets: Callable[..., None] | None = None
        self._queue: list[bytes] = []
        self._trusted: list[bool] | None = [] if tso else None
        self._scheduled = False
        self.filter: Callable[[bytes], bytes | None] | None = None   # tests: drop/alter packets
        self.closed = False
        # Largest TSO payload (as tun.device.AsyncTun): IPv4 total length minus IP + TCP
        self.tso_max_size = 65535 - 20 - 60 if tso else 0

    @classmethod
    def pair(cls, tso: bool = False) -> tuple["MemoryLink", "MemoryLink"]:
        a, b = cls(tso), cls(tso)
        a.peer, b.peer = b, a
        return a, b

    def start(self, on_packets: Callable[[list[bytes]], None]) -> None:
        self._on_packets = on_packets

    def send(self, packet: LinkPacket) -> None:
        peer = self.peer
        if self.closed or peer is None or peer.closed:
            return
        trusted = False
        if type(packet) is GSOFrame:
            # The super-packet without its virtio_net_hdr: one IP packet, as GRO delivers.
            data = b"".join((memoryview(packet.head)[VNET_HDR_LEN:], *packet.buffers()[1:]))
            trusted = True
        else:
            data = packet
        if self.filter is not None:
            filtered = self.filter(data)
            if filtered is None:
                return
            data = filtered
        peer._queue.append(data)
        if peer._trusted is not None:
            peer._trusted.append(trusted)
        if not peer._scheduled:
            peer._scheduled = True
            asyncio.get_running_loop().call_soon(peer._deliver)

    def _deliver(self) -> None:
        self._scheduled = False
        batch, self._queue = self._queue, []
        trusted = self._trusted
        if trusted is not None:
            self._trusted = []
        if batch and self._on_packets is not None and not self.closed:
            if trusted is not None:
                self._on_packets(batch, trusted)
            else:
                self._on_packets(batch)

    def close(self) -> None:
        self.closed = True
