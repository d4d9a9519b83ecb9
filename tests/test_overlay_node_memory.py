"""Bridges of the overlay node, in one process: two Stacks over tun.memory.MemoryLink, node A
forwarding a loopback kernel port to B's stack port, node B exposing that port to a loopback
kernel service.  Bytes intact, half-close both ways, resets both ways, bounded memory with a
slow reader, and stats."""
from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import struct

import pytest

from tcpstack.aio.streams import Stack
from tcpstack.overlay.bridge import CHUNK, WRITE_HIGH
from tcpstack.overlay.config import Expose, Forward, Listen, NodeConfig
from tcpstack.overlay.node import LIMIT, Node
from tcpstack.tools import control
from tun.memory import MemoryLink

A, B = "10.0.0.1", "10.0.0.2"
EXPOSED = 9000


class Pair:
    """Kernel client -> A's forward -> stack A -> stack B -> B's expose -> kernel `service`."""

    def __init__(self, service) -> None:
        self.service = service

    async def __aenter__(self) -> "Pair":
        la, lb = MemoryLink.pair(tso=True)
        self.sa, self.sb = Stack(la, [A]), Stack(lb, [B])
        self.server = await asyncio.start_server(self.service, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        self.b = Node(self.sb, NodeConfig(exposes=[Expose(EXPOSED, "127.0.0.1", port)]))
        await self.b.start()
        self.a = Node(self.sa, NodeConfig(forwards=[Forward(Listen("127.0.0.1", 0), B, EXPOSED)]))
        await self.a.start()
        self.fwd = self.a.forward_addresses[0]
        return self

    async def __aexit__(self, *exc) -> None:
        await self.a.close()
        await self.b.close()
        self.server.close()
        self.sa.close()
        self.sb.close()


def rst(writer: asyncio.StreamWriter) -> None:
    writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                               struct.pack("ii", 1, 0))
    writer.transport.abort()


async def test_forward_to_expose_20mb_both_ways_with_half_close_and_stats():
    up, down = os.urandom(20 << 20), os.urandom(3 << 20)
    seen = {}

    async def service(r, w):
        data = await r.read()                    # to EOF: the client's half-close
        seen["up"] = hashlib.sha256(data).hexdigest()
        w.write(down)                            # the reply after the half-close
        await w.drain()
        w.close()

    async with Pair(service) as p:
        r, w = await asyncio.open_connection(*p.fwd)
        w.write(up)
        await w.drain()
        await asyncio.sleep(0.05)
        snap_a, snap_b = p.a.snapshot(), p.b.snapshot()
        (ba,), (bb,) = snap_a["bridges"], snap_b["bridges"]
        assert ba["kind"] == "forward" and bb["kind"] == "expose"
        assert ba["mode"] == bb["mode"] == "relay"
        assert ba["stack"]["local"] == bb["stack"]["remote"]       # the same connection
        assert ba["stack"]["remote"] == bb["stack"]["local"] == f"{B}:{EXPOSED}"
        assert ba["session_id"] == bb["session_id"] and ba["encrypted"]
        assert ba["kernel"]["local"] == f"127.0.0.1:{p.fwd[1]}"
        text = control.render_overlay(snap_a)
        assert f"forward 127.0.0.1:{p.fwd[1]}->{B}:{EXPOSED}" in text
        assert f"{ba['stack']['local']} > {B}:{EXPOSED}" in text
        assert f"tcpcrypt session {ba['session_id']}, peer -" in text
        w.write_eof()                            # half-close: the reply still comes back
        got = await asyncio.wait_for(r.read(), 60)
        assert hashlib.sha256(got).digest() == hashlib.sha256(down).digest()
        assert seen["up"] == hashlib.sha256(up).hexdigest()
        w.close()
        for _ in range(100):
            if not p.a.registry.live and not p.b.registry.live:
                break
            await asyncio.sleep(0.02)
        assert p.a.registry.total == p.b.registry.total == 1
        assert p.a.registry.resets == p.b.registry.resets == 0


async def test_service_half_closes_first():
    async def service(r, w):
        w.write(b"banner\n")
        w.write_eof()                            # the service is done sending, still reads
        data = await r.read()
        w.close()
        seen.append(data)
    seen: list[bytes] = []
    async with Pair(service) as p:
        r, w = await asyncio.open_connection(*p.fwd)
        assert await asyncio.wait_for(r.read(), 10) == b"banner\n"   # EOF carried
        w.write(b"after the peer's FIN")
        w.write_eof()
        await asyncio.sleep(0.2)
        assert seen == [b"after the peer's FIN"]
        w.close()


@pytest.mark.parametrize("who", ["service", "client"])
async def test_reset_is_carried_not_a_fin(who):
    got: asyncio.Future = asyncio.get_running_loop().create_future()

    async def service(r, w):
        if who == "service":
            await r.readexactly(5)
            rst(w)
            return
        try:
            data = await r.read()
            got.set_result(("eof", data))
        except ConnectionResetError as e:
            got.set_result(("reset", e))

    async with Pair(service) as p:
        r, w = await asyncio.open_connection(*p.fwd)
        w.write(b"hello")
        await w.drain()
        if who == "service":
            with pytest.raises(ConnectionResetError):
                await asyncio.wait_for(r.read(), 10)
        else:
            await asyncio.sleep(0.2)
            rst(w)
            kind, _ = await asyncio.wait_for(got, 10)
            assert kind == "reset"
        for _ in range(100):
            if p.a.registry.resets and p.b.registry.resets:
                break
            await asyncio.sleep(0.02)
        assert p.a.registry.resets == p.b.registry.resets == 1


async def test_expose_target_down_resets_and_forward_target_down_resets():
    async with Pair(lambda r, w: None) as p:
        p.server.close()
        await p.server.wait_closed()             # the kernel service is gone
        r, w = await asyncio.open_connection(*p.fwd)
        with pytest.raises(ConnectionResetError):
            await asyncio.wait_for(r.read(), 10)
        assert p.b.counters["connect_failures"] == 1


async def test_slow_reader_keeps_memory_bounded():
    """48 MB towards a service that reads 256 KB every 10 ms: the sender is slowed down (what
    is in flight is bounded by socket buffers and windows, not by the amount sent), and no
    bridge ever holds more than a receive window and a few of its buffers."""
    total = 48 << 20
    received = 0

    async def service(r, w):
        nonlocal received
        try:
            while data := await r.read(256 << 10):
                received += len(data)
                await asyncio.sleep(0.01)
        except asyncio.CancelledError:           # the test is over
            pass
        w.close()

    async with Pair(service) as p:
        p.server.sockets[0].setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, p.fwd)
        r, w = await asyncio.open_connection(sock=sock)
        peak = 0

        async def sample():
            nonlocal peak
            while True:
                for node in (p.a, p.b):
                    for b in node.registry.live.values():
                        peak = max(peak, b.buffered())
                await asyncio.sleep(0.005)
        sampler = asyncio.ensure_future(sample())
        block = b"x" * (1 << 20)
        sent = 0
        ahead = 0
        try:
            for _ in range(total // len(block)):
                w.write(block)
                await w.drain()
                sent += len(block)
                ahead = max(ahead, sent - received)
                if ahead > 24 << 20:
                    break                        # not slowed: fails below
        finally:
            sampler.cancel()
            w.close()
        # kernel buffers of the node's two sockets (autotuned, up to tcp_rmem/tcp_wmem max)
        # and the stacks' windows: well under what was sent
        assert ahead < 24 << 20, (sent, received)
        # Per bridge: a side stops reading while the other's write buffer is above
        # WRITE_HIGH (1 MB); but a stack transport resumed after a pause hands over in one
        # piece what its TCB held meanwhile, at most the receive window (the stack's
        # tcp_rmem-like 6 MB maximum, tcpstack/tcp/config.py).  (The readers' 2 * limit
        # counts for the stream loops only.)
        bound = (6 << 20) + 2 * 2 * LIMIT + 2 * WRITE_HIGH + CHUNK
        assert 0 < peak < bound, (peak, bound)


async def test_node_close_resets_what_it_carries():
    async def service(r, w):
        try:
            await r.read()
        except ConnectionResetError:
            pass
        w.close()

    async with Pair(service) as p:
        r, w = await asyncio.open_connection(*p.fwd)
        w.write(b"x")
        await w.drain()
        for _ in range(100):
            if p.a.registry.live and p.b.registry.live:
                break
            await asyncio.sleep(0.01)
        await p.b.close()                         # B stops: its bridge is aborted...
        assert not p.b._tasks
        with pytest.raises(ConnectionResetError):  # ...and the reset reaches A's client
            await asyncio.wait_for(r.read(), 10)
        w.close()


async def test_stream_loops_when_a_side_is_done_before_the_bridge_starts():
    """A side already at EOF when its bridge starts (here: a SOCKS5 client that sent its
    request, data and FIN at once) is carried by the stream loops: the data and the
    half-close still arrive."""
    from tcpstack.overlay import socks5
    from tcpstack.overlay.config import NodeConfig as NC
    got: asyncio.Future = asyncio.get_running_loop().create_future()

    async def service(r, w):
        got.set_result(await r.read())
        w.write(b"bye")
        w.close()
    async with Pair(service) as p:
        node = Node(p.sa, NC(socks5=Listen("127.0.0.1", 0)))
        await node.start()
        try:
            r, w = await asyncio.open_connection(*node.socks5_address)
            w.write(b"\x05\x01\x00" + socks5.build_request(B, EXPOSED) + b"all at once")
            w.write_eof()
            assert (await asyncio.wait_for(r.read(), 10))[12:] == b"bye"
            assert await asyncio.wait_for(got, 10) == b"all at once"
            w.close()
            for _ in range(100):
                if not node.registry.live:
                    break
                await asyncio.sleep(0.01)
            assert node.registry.total == node.registry.stream_loops == 1
        finally:
            await node.close()
