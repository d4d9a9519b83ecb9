"""asyncio streams over two stacks joined by an in-memory link: the drop-in API.

These run on the real event loop (the link delivers with call_soon, so no real delay);
protocol timing is tested on the sans-IO core with the virtual clock elsewhere.
"""
from __future__ import annotations

import asyncio
import hashlib
import os

import pytest

from tcpstack.errors import ConnectionRefusedByPeerError
from tcpstack.host.stack import StackCore
from tcpstack.aio.streams import Stack
from tun.memory import MemoryLink

A, B = "10.0.0.1", "10.0.0.2"


def make_pair(security_a="default", security_b="default"):
    la, lb = MemoryLink.pair()
    return Stack(la, [A], security=security_a), Stack(lb, [B], security=security_b), la, lb


async def echo_server(stack, port=7):
    async def handle(reader, writer):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.close()
        await writer.wait_closed()
    return await stack.start_server(handle, B, port)


@pytest.mark.parametrize("encrypted", [False, True])
async def test_echo_roundtrip_and_extra_info(encrypted):
    sa, sb, *_ = make_pair()
    server = await echo_server(sb)
    reader, writer = await sa.open_connection(B, 7, encrypt=encrypted)
    assert writer.get_extra_info("peername") == (B, 7)
    host, port = writer.get_extra_info("sockname")
    assert host == A and 32768 <= port <= 60999
    sid = writer.get_extra_info("tcpcrypt_session_id")
    if encrypted:
        assert isinstance(sid, bytes) and len(sid) >= 33
        info = writer.get_extra_info("tcpcrypt")
        assert info["role"] == "A"
    else:
        assert sid is None
    writer.write(b"hello, world\n")
    assert await reader.readline() == b"hello, world\n"
    writer.close()
    await writer.wait_closed()
    server.close()
    await server.wait_closed()
    sa.close(); sb.close()


@pytest.mark.parametrize("encrypted", [False, True])
async def test_bulk_both_directions_with_half_close(encrypted):
    """2 MB each way; the client half-closes, the server keeps sending, then closes."""
    sa, sb, *_ = make_pair()
    up = os.urandom(2 << 20)
    down = os.urandom(2 << 20)
    got_up = asyncio.get_running_loop().create_future()

    async def handle(reader, writer):
        data = await reader.read()            # until the client's EOF (half-close)
        got_up.set_result(data)
        writer.write(down)                    # still writable after the peer's FIN
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    server = await sb.start_server(handle, B, 8080)
    reader, writer = await sa.open_connection(B, 8080, encrypt=encrypted)
    writer.write(up)
    await writer.drain()
    writer.write_eof()
    received = await reader.read()
    assert hashlib.sha256(await got_up).digest() == hashlib.sha256(up).digest()
    assert hashlib.sha256(received).digest() == hashlib.sha256(down).digest()
    writer.close()
    await writer.wait_closed()
    server.close()
    sa.close(); sb.close()


@pytest.mark.parametrize("encrypted", [False, True])
async def test_bulk_over_a_link_with_offloads_uses_super_segments(encrypted):
    """MemoryLink(tso=True): TSO frames go over whole (as GRO hands them over), so 4 MB each
    way are exact in far fewer packets than MSS-sized segments would take."""
    la, lb = MemoryLink.pair(tso=True)
    sa, sb = Stack(la, [A]), Stack(lb, [B])
    assert sa.core.config.tcp.tso_max_size == la.tso_max_size > 60000
    up, down = os.urandom(4 << 20), os.urandom(4 << 20)

    async def handle(reader, writer):
        got = await reader.readexactly(len(up))
        writer.write(down)
        writer.write(hashlib.sha256(got).digest())
        await writer.drain()
        writer.close()

    server = await sb.start_server(handle, B, 8081)
    reader, writer = await sa.open_connection(B, 8081, encrypt=encrypted,
                                              require_encryption=encrypted)
    writer.write(up)
    received = await reader.read()
    assert received[:len(down)] == down
    assert received[len(down):] == hashlib.sha256(up).digest()
    st = writer.get_extra_info("tcp_stats")
    assert st["tso_segments"] > 0
    assert sa.core.stats.packets_out < (4 << 20) // 1448 // 4     # super-segments, not MSS
    writer.close()
    server.close()
    sa.close(); sb.close()


async def test_connection_refused_on_closed_port():
    sa, sb, *_ = make_pair()
    with pytest.raises(ConnectionRefusedError) as ei:
        await sa.open_connection(B, 9)
    assert isinstance(ei.value, ConnectionRefusedByPeerError)
    assert sb.core.stats.rst_sent == 1
    sa.close(); sb.close()


async def test_drain_applies_backpressure_when_peer_does_not_read():
    sa, sb, *_ = make_pair()
    readers = []

    async def handle(reader, writer):
        readers.append((reader, writer))       # never reads

    server = await sb.start_server(handle, B, 5000)
    reader, writer = await sa.open_connection(B, 5000, encrypt=False)
    chunk = b"x" * 65536
    sent = 0
    with pytest.raises(asyncio.TimeoutError):
        async with asyncio.timeout(0.5):
            while True:
                writer.write(chunk)
                sent += len(chunk)
                await writer.drain()
    # The peer's window and our buffers are bounded: drain() must have blocked well before
    # an unbounded amount was accepted.
    assert sent < 16 << 20
    assert writer.transport.get_write_buffer_size() > 0
    writer.transport.abort()
    server.close()
    sa.close(); sb.close()


async def test_server_context_manager_and_serve_forever_cancel():
    sa, sb, *_ = make_pair()
    async with await echo_server(sb, 7) as server:
        task = asyncio.ensure_future(server.serve_forever())
        await asyncio.sleep(0)
        assert server.is_serving()
        r, w = await sa.open_connection(B, 7)
        w.write(b"ping")
        assert await r.readexactly(4) == b"ping"
        w.close()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert not server.is_serving()
    sa.close(); sb.close()


async def test_require_encryption_against_plain_peer_fails_clearly():
    from tcpcrypt.errors import EncryptionRequiredError
    sa, sb, *_ = make_pair(security_b=None)      # B speaks no ENO: plain TCP only
    await echo_server(sb)
    with pytest.raises(EncryptionRequiredError, match="did not negotiate"):
        await sa.open_connection(B, 7, require_encryption=True)
    # without the requirement the same peer gives a plain connection
    r, w = await sa.open_connection(B, 7)
    assert w.get_extra_info("tcpcrypt_session_id") is None
    w.write(b"x")
    assert await r.readexactly(1) == b"x"
    w.close()
    sa.close(); sb.close()


async def test_uvloop_runs_the_same_exchange():
    uvloop = pytest.importorskip("uvloop")

    async def main():
        sa, sb, *_ = make_pair()
        await echo_server(sb)
        r, w = await sa.open_connection(B, 7)
        w.write(b"over uvloop")
        data = await r.readexactly(11)
        sid = w.get_extra_info("tcpcrypt_session_id")
        w.close()
        sa.close(); sb.close()
        return data, sid

    loop = uvloop.new_event_loop()
    try:
        data, sid = await asyncio.get_running_loop().run_in_executor(
            None, lambda: loop.run_until_complete(main()))
    finally:
        loop.close()
    assert data == b"over uvloop" and sid is not None


async def test_per_connection_tcp_options_nodelay_and_congestion_control():
    sa, sb, *_ = make_pair()
    await echo_server(sb)
    r, w = await sa.open_connection(B, 7, nodelay=True, congestion_control="newreno")
    conn = w.get_extra_info("endpoint").conn
    assert conn.config.nodelay is True
    assert w.get_extra_info("tcp_stats")["congestion_control"] == "newreno"
    r2, w2 = await sa.open_connection(B, 7)
    assert w2.get_extra_info("endpoint").conn.config.nodelay is False
    assert w2.get_extra_info("tcp_stats")["congestion_control"] == "cubic"
    w.close(); w2.close()
    sa.close(); sb.close()


async def test_timeouts_surface_as_timeout_errors_to_the_application():
    from tcpstack.tcp.config import TCPConfig
    from tcpstack.errors import ConnectionTimeoutError
    from tcpstack.host.stack import StackConfig
    fast = StackConfig(tcp=TCPConfig(syn_retries=2, retries=3, rto_initial=0.02, rto_min=0.02,
                                     rto_max=0.1))
    la, lb = MemoryLink.pair()
    sa = Stack(la, [A], config=fast, security=None)
    sb = Stack(lb, [B], config=fast, security=None)
    await echo_server(sb)
    # 1. a SYN into the void: connect fails after syn_retries with TimeoutError
    la.filter = lambda p: None
    with pytest.raises(TimeoutError) as ei:
        await asyncio.wait_for(sa.open_connection(B, 7), 10)
    assert isinstance(ei.value, ConnectionTimeoutError)
    # 2. an established connection whose peer vanishes: the reader gets TimeoutError
    la.filter = None
    r, w = await sa.open_connection(B, 7)
    la.filter = lambda p: None
    w.write(b"are you there?")
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(r.read(), 10)
    stats = w.get_extra_info("tcp_stats")
    assert stats["timeouts"] >= 3
    sa.close(); sb.close()


@pytest.mark.parametrize("encrypted", [False, True])
async def test_closed_connections_are_freed_by_refcount_not_the_cycle_collector(encrypted):
    """No reference cycle survives a finished connection (TCB <-> RACK queue, endpoint <->
    transport): each closed connection is freed at once, and the garbage collector has no
    per-connection work (it was about 36 objects per connection, a quarter of handshake time)."""
    import gc
    sa, sb, *_ = make_pair()

    async def handle(reader, writer):
        await reader.read()
        writer.close()

    server = await sb.start_server(handle, B, 8082)
    gc.collect()
    gc.disable()
    try:
        for _ in range(20):
            _, writer = await sa.open_connection(B, 8082, encrypt=encrypted,
                                                 require_encryption=encrypted)
            writer.close()
            await writer.wait_closed()
        for _ in range(20):
            await asyncio.sleep(0)
        gc.set_debug(gc.DEBUG_SAVEALL)
        gc.collect()
        leaked = [type(o).__name__ for o in gc.garbage
                  if type(o).__name__ in ("TCPConnection", "Endpoint", "_StreamTransport",
                                          "TcpcryptSession", "SendQueue")]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
    assert leaked == []
    server.close()
    sa.close(); sb.close()


async def test_writes_in_one_loop_turn_leave_as_full_segments_autocork():
    """Autocorking: ten 1000-byte writes made without yielding, even with TCP_NODELAY, go
    out as full segments (6 x MSS + the rest) once the loop turns, not as ten small ones;
    the sans-IO core itself (cork_writes off) still sends at each call."""
    sa, sb, *_ = make_pair(None, None)
    got = asyncio.get_running_loop().create_future()

    async def handle(reader, writer):
        got.set_result(await reader.readexactly(10_000))

    server = await sb.start_server(handle, B, 8083)
    reader, writer = await sa.open_connection(B, 8083, nodelay=True)
    sizes = []
    sa.core.on_packet = lambda d, p, now: sizes.append(len(p) - 52) if len(p) > 52 else None
    for i in range(10):
        writer.write(bytes([i]) * 1000)
    assert sizes == []                            # nothing built yet: corked
    assert await got == b"".join(bytes([i]) * 1000 for i in range(10))
    mss = sizes[0]
    assert mss > 1000 and sizes == [mss] * (10_000 // mss) + [10_000 % mss]
    assert not StackCore(["10.0.0.9"]).cork_writes
    writer.close()
    server.close()
    sa.close(); sb.close()


def test_received_data_from_a_mutable_packet_buffer_is_copied():
    """A link may hand the core a bytearray it reuses (recv_into): the TCB keeps views only
    of immutable packets, so data already delivered cannot change afterwards."""
    from tcpstack.tcp.connection import TCPConnection
    from tcpstack.tcp.config import TCPConfig
    from tcpstack.tcp.events import DataReceived
    from tcpstack.wire.segment import ACK, SYN, TCPSegment
    c = TCPConnection(80, 4000, iss=1000, config=TCPConfig(), now=0.0)
    c.accept_syn(TCPSegment(4000, 80, 5000, 0, SYN, 65535, mss=1460), 0.0)
    c.segments_to_send(0.0)
    c.receive(TCPSegment(4000, 80, 5001, 1001, ACK, 65535), 0.0)
    packet = bytearray(b"hello world")
    c.receive(TCPSegment(4000, 80, 5001, 1001, ACK, 65535, memoryview(packet)), 0.0)
    immutable_pkt = b"XXimmutable"
    c.receive(TCPSegment(4000, 80, 5012, 1001, ACK, 65535, memoryview(immutable_pkt)[2:]), 0.0)
    packet[:] = b"overwritten"
    events = iter(c.next_event, None)
    data = [e.data for e in events if isinstance(e, DataReceived)]
    assert [bytes(d) for d in data] == [b"hello world", b"immutable"]
    assert type(data[0]) is bytes and type(data[1]) is memoryview   # the view is kept


async def test_linger_waits_until_everything_sent_is_acknowledged():
    """Stack.linger(): a process about to exit waits for its queued data and FIN to be
    acknowledged (the stack dies with the process; a kernel would keep sending).  A peer
    that does not read makes it give up at the timeout."""
    sa, sb, *_ = make_pair(None, None)
    readers = []

    async def handle(reader, writer):
        readers.append((reader, writer))          # (a dropped writer closes the transport)

    server = await sb.start_server(handle, B, 8084)
    reader, writer = await sa.open_connection(B, 8084)
    writer.write(bytes(3 << 20))                   # more than the peer's window holds
    writer.close()
    assert not await sa.linger(0.3)                # the peer reads nothing: not all acked
    conn = sa.connections()[0].conn
    assert conn.snd_nxt != conn.snd_una or conn.send_buffer_used
    got = 0

    async def drain_peer():
        nonlocal got
        while b := await readers[0][0].read(1 << 20):
            got += len(b)

    task = asyncio.create_task(drain_peer())
    assert await sa.linger(10.0)
    assert all(ep.conn.snd_una == ep.conn.snd_nxt for ep in sa.connections())
    await task
    assert got == 3 << 20
    server.close()
    sa.close(); sb.close()


async def test_abort_drops_what_was_pending_and_the_buffer_size_says_so():
    sa, sb, *_ = make_pair(None, None)
    held = []

    async def handle(reader, writer):
        held.append(writer)                       # never reads

    server = await sb.start_server(handle, B, 8085)
    reader, writer = await sa.open_connection(B, 8085)
    writer.write(bytes(3 << 20))                  # beyond the TCB's 1 MiB send buffer
    assert writer.transport.get_write_buffer_size() > 0
    writer.transport.abort()
    assert writer.transport.get_write_buffer_size() == 0
    server.close()
    sa.close(); sb.close()
