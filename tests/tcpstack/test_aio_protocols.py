"""asyncio's protocol API over the stack (issue 16): Stack.create_connection() and
Stack.create_server() with any asyncio.Protocol or asyncio.BufferedProtocol, on the default
loop and on uvloop, as loop.create_connection()/create_server() behave on kernel sockets."""
from __future__ import annotations

import asyncio
import errno
import socket

import pytest

from tcpstack.aio.socket import StackSocket
from tcpstack.aio.streams import Server, Stack
from tun.memory import MemoryLink

A, B = "10.0.0.1", "10.0.0.2"
A6, B6 = "fd00::1", "fd00::2"


def make_pair(addrs_a=(A,), addrs_b=(B,)):
    la, lb = MemoryLink.pair()
    return Stack(la, list(addrs_a)), Stack(lb, list(addrs_b))


class Recorder(asyncio.Protocol):
    """Records every callback, in order."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.data = bytearray()
        self.transport: asyncio.Transport | None = None
        self.lost: asyncio.Future[Exception | None] = asyncio.get_running_loop().create_future()
        self.eof = asyncio.Event()

    def connection_made(self, transport):
        self.calls.append("made")
        self.transport = transport

    def data_received(self, data):
        assert type(data) is bytes          # asyncio gives bytes
        self.data += data

    def eof_received(self):
        self.calls.append("eof")
        self.eof.set()
        return False                        # asyncio: the transport closes itself

    def connection_lost(self, exc):
        self.calls.append("lost")
        if not self.lost.done():
            self.lost.set_result(exc)


class Echo(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.transport.write(data)

    def eof_received(self):
        self.transport.write_eof()
        return True


class SmallBuffers(asyncio.BufferedProtocol):
    """A BufferedProtocol whose buffers are smaller than what arrives: the transport must
    fill each with no more than its size."""

    def __init__(self, size: int = 100) -> None:
        self.size = size
        self.buf = bytearray(size)
        self.got = bytearray()
        self.sizes_asked: list[int] = []
        self.updates: list[int] = []
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport):
        self.transport = transport

    def get_buffer(self, sizehint):
        self.sizes_asked.append(sizehint)
        return self.buf

    def buffer_updated(self, nbytes):
        assert 0 < nbytes <= self.size
        self.updates.append(nbytes)
        self.got += self.buf[:nbytes]

    def eof_received(self):
        return False

    def connection_lost(self, exc):
        if not self.done.done():
            self.done.set_result(None)


async def echo_server(sb: Stack, host=B, port=7) -> Server:
    return await sb.create_server(Echo, host, port)


def run_on(loop_kind: str, coro_fn):
    if loop_kind == "uvloop":
        uvloop = pytest.importorskip("uvloop")
        loop = uvloop.new_event_loop()
    else:
        loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(coro_fn())
    finally:
        loop.close()


@pytest.mark.parametrize("loop_kind", ["asyncio", "uvloop"])
@pytest.mark.parametrize("encrypt", [False, True])
def test_protocol_roundtrip_both_loops(loop_kind, encrypt):
    async def main():
        sa, sb = make_pair()
        server = await echo_server(sb)
        tr, pr = await sa.create_connection(Recorder, B, 7, encrypt=encrypt)
        assert isinstance(pr, Recorder) and pr.transport is tr and pr.calls == ["made"]
        tr.write(b"hello ")
        tr.writelines([b"over ", memoryview(b"the stack")])
        tr.write_eof()
        await asyncio.wait_for(pr.lost, 5)
        assert bytes(pr.data) == b"hello over the stack"
        assert pr.calls == ["made", "eof", "lost"]
        sid = tr.get_extra_info("tcpcrypt_session_id")
        assert (sid is not None) == encrypt
        server.close()
        await server.wait_closed()
        sa.close(); sb.close()
    run_on(loop_kind, main)


@pytest.mark.parametrize("loop_kind", ["asyncio", "uvloop"])
def test_buffered_protocol_gets_at_most_its_buffer(loop_kind):
    payload = bytes(range(256)) * 400          # 102400 bytes, many segments

    async def main():
        sa, sb = make_pair()
        protos: list[SmallBuffers] = []

        def factory():
            p = SmallBuffers(100)
            protos.append(p)
            return p
        server = await sb.create_server(factory, B, 9)
        tr, _ = await sa.create_connection(asyncio.Protocol, B, 9)
        tr.write(payload)
        tr.close()
        while not protos:
            await asyncio.sleep(0.01)
        await asyncio.wait_for(protos[0].done, 10)
        p = protos[0]
        assert bytes(p.got) == payload
        assert max(p.updates) == 100 and len(p.updates) == len(payload) // 100
        assert all(h > 0 for h in p.sizes_asked)
        server.close()
        sa.close(); sb.close()
    run_on(loop_kind, main)


async def test_buffered_protocol_on_the_client_side_and_an_empty_buffer_is_fatal(caplog):
    sa, sb = make_pair()
    server = await sb.create_server(Echo, B, 7)
    tr, p = await sa.create_connection(lambda: SmallBuffers(7), B, 7)
    tr.write(b"x" * 50)
    while len(p.got) < 50:
        await asyncio.sleep(0.01)
    assert bytes(p.got) == b"x" * 50 and max(p.updates) == 7

    class Empty(SmallBuffers):
        def get_buffer(self, sizehint):
            return bytearray()
    handled = []
    asyncio.get_running_loop().set_exception_handler(lambda loop, ctx: handled.append(ctx))
    tr2, p2 = await sa.create_connection(lambda: Empty(7), B, 7)
    tr2.write(b"boom")
    await asyncio.wait_for(p2.done, 5)
    assert isinstance(handled[0]["exception"], RuntimeError)
    assert "empty buffer" in str(handled[0]["exception"])
    assert tr2.is_closing()
    tr.close()
    server.close()
    sa.close(); sb.close()


async def test_a_protocol_exception_is_a_fatal_error_of_that_connection_only():
    sa, sb = make_pair()
    server = await echo_server(sb)

    class Bad(Recorder):
        def data_received(self, data):
            raise ValueError("application bug")
    handled = []
    asyncio.get_running_loop().set_exception_handler(lambda loop, ctx: handled.append(ctx))
    tr, pr = await sa.create_connection(Bad, B, 7)
    tr2, pr2 = await sa.create_connection(Recorder, B, 7)
    tr.write(b"x")
    exc = await asyncio.wait_for(pr.lost, 5)
    assert isinstance(exc, ValueError) and handled[0]["exception"] is exc
    tr2.write(b"still fine")
    while bytes(pr2.data) != b"still fine":
        await asyncio.sleep(0.01)
    tr2.close()
    server.close()
    sa.close(); sb.close()


async def test_open_connection_and_start_server_are_the_protocol_api_underneath():
    from tcpstack.aio.streams import StackStreamWriter
    sa, sb = make_pair()
    seen = []

    async def handle(reader, writer):
        seen.append(writer)
        writer.write(await reader.readline())
        await writer.drain()
        writer.close()
    server = await sb.start_server(handle, B, 7)
    reader, writer = await sa.open_connection(B, 7)
    assert isinstance(writer, asyncio.StreamWriter) and isinstance(writer, StackStreamWriter)
    writer.write(b"line\n")
    assert await reader.readline() == b"line\n"
    assert isinstance(seen[0], StackStreamWriter)
    writer.close()
    await writer.wait_closed()
    server.close()
    await server.wait_closed()
    sa.close(); sb.close()


async def test_names_resolve_through_getaddrinfo_and_addresses_are_tried_in_order(monkeypatch):
    sa, sb = make_pair()
    server = await echo_server(sb)
    loop = asyncio.get_running_loop()
    asked = []

    async def fake_getaddrinfo(host, port, *, family=0, type=0, proto=0, flags=0):
        asked.append((host, port, family, type))
        # first a dead address, then the server's
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.99", port)),
                (socket.AF_INET, socket.SOCK_STREAM, 6, "", (B, port))]
    monkeypatch.setattr(loop, "getaddrinfo", fake_getaddrinfo)
    sb.core.config.tcp.syn_retries = 6
    sa.core.config.tcp.syn_retries = 0     # the dead address fails fast
    sa.core.config.tcp.rto_initial = 0.05
    tr, pr = await sa.create_connection(Recorder, "b.test", 7)
    assert asked == [("b.test", 7, 0, socket.SOCK_STREAM)]
    assert tr.get_extra_info("peername") == (B, 7)
    tr.close()
    server.close()
    sa.close(); sb.close()


async def test_happy_eyeballs_starts_the_next_attempt_after_the_delay():
    """RFC 8305 5: with happy_eyeballs_delay the second address is tried `delay` after the
    first, without waiting for the first to time out; the first to connect wins."""
    sa, sb = make_pair()
    server = await echo_server(sb)
    loop = asyncio.get_running_loop()

    async def fake_getaddrinfo(host, port, **kw):
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.99", port)),
                (socket.AF_INET, socket.SOCK_STREAM, 6, "", (B, port))]
    loop.getaddrinfo = fake_getaddrinfo     # type: ignore[method-assign]
    try:
        t0 = loop.time()
        tr, pr = await sa.create_connection(Recorder, "b.test", 7, happy_eyeballs_delay=0.1)
        took = loop.time() - t0
    finally:
        del loop.getaddrinfo
    assert tr.get_extra_info("peername") == (B, 7)
    assert 0.09 <= took < 0.9        # the dead address's SYN would retry for ~1 s first
    await asyncio.sleep(0)
    assert [ep.remote for ep in sa.connections()] == [(B, 7)]   # the loser was aborted
    tr.close()
    server.close()
    sa.close(); sb.close()


async def test_all_addresses_failing_raises_as_asyncio():
    sa, sb = make_pair()
    with pytest.raises(ConnectionRefusedError):
        await sa.create_connection(Recorder, B, 1)
    loop = asyncio.get_running_loop()

    async def two(host, port, **kw):
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (B, port)),
                (socket.AF_INET6, socket.SOCK_STREAM, 6, "", (B6, port, 0, 0))]
    loop.getaddrinfo = two                  # type: ignore[method-assign]
    try:
        with pytest.raises(OSError, match="Multiple exceptions"):
            await sa.create_connection(Recorder, "b.test", 1)
        with pytest.raises(ExceptionGroup) as ei:
            await sa.create_connection(Recorder, "b.test", 1, all_errors=True)
        assert len(ei.value.exceptions) == 2
    finally:
        del loop.getaddrinfo
    sa.close(); sb.close()


async def test_local_addr_binds_to_a_stack_address_or_raises_eaddrnotavail():
    sa, sb = make_pair(addrs_a=(A, "10.0.0.3"))
    server = await echo_server(sb)
    tr, _ = await sa.create_connection(Recorder, B, 7, local_addr=("10.0.0.3", 40001))
    assert tr.get_extra_info("sockname") == ("10.0.0.3", 40001)
    with pytest.raises(OSError) as ei:
        await sa.create_connection(Recorder, B, 7, local_addr=("10.9.9.9", 0))
    assert ei.value.errno == errno.EADDRNOTAVAIL
    with pytest.raises(OSError) as ei:
        await sa.create_connection(Recorder, B, 7, local_addr=("10.0.0.3", 40001))
    assert ei.value.errno == errno.EADDRINUSE
    tr.close()
    server.close()
    sa.close(); sb.close()


async def test_server_hosts_wildcards_lists_and_sockets():
    la, lb = MemoryLink.pair()
    sa = Stack(la, [A, A6])
    sb = Stack(lb, [B, "10.0.0.3", B6])
    # None: every address, one socket per family, named as a kernel wildcard bind
    s1 = await sb.create_server(Echo, None, 0)
    names = [s.getsockname() for s in s1.sockets]
    port = names[0][1]
    assert names == [("0.0.0.0", port), ("::", port, 0, 0)]
    for dst in (B, "10.0.0.3", B6):
        tr, pr = await sa.create_connection(Recorder, dst, port)
        tr.close()
    s1.close()
    assert s1.sockets == ()
    # "0.0.0.0": the IPv4 addresses only, one listener each, one port
    s2 = await sb.create_server(Echo, "0.0.0.0", 0)
    names = [s.getsockname() for s in s2.sockets]
    port = names[0][1]
    assert names == [(B, port), ("10.0.0.3", port)]
    with pytest.raises(ConnectionRefusedError):
        await sa.create_connection(Recorder, B6, port)
    s2.close()
    # a list of hosts, and "::"
    s3 = await sb.create_server(Echo, ["10.0.0.3", "::"], 8080)
    assert [s.getsockname() for s in s3.sockets] == [("10.0.0.3", 8080), (B6, 8080, 0, 0)]
    assert all(s.family in (socket.AF_INET, socket.AF_INET6) and s.type == socket.SOCK_STREAM
               for s in s3.sockets)
    with pytest.raises(OSError) as ei:
        await sb.create_server(Echo, "10.0.0.3", 8080)
    assert ei.value.errno == errno.EADDRINUSE
    with pytest.raises(OSError) as ei:
        await sb.create_server(Echo, "10.9.9.9", 80)
    assert ei.value.errno == errno.EADDRNOTAVAIL
    s3.close()
    sa.close(); sb.close()


async def test_sock_argument_takes_the_stacks_sockets_only():
    sa, sb = make_pair()
    lsock = sb.socket()
    lsock.bind((B, 0))
    lsock.listen(5)
    server = await sb.create_server(Echo, sock=lsock)
    port = server.sockets[0].getsockname()[1]
    assert port != 0
    s = sa.socket()
    s.bind((A, 45000))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    await sa.sock_connect(s, (B, port))
    assert s.getpeername() == (B, port)
    tr, pr = await sa.create_connection(Recorder, sock=s)
    assert tr.get_extra_info("sockname") == (A, 45000)
    assert tr.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
    tr.write(b"ping")
    while bytes(pr.data) != b"ping":
        await asyncio.sleep(0.01)
    with pytest.raises(ValueError, match="already has a transport"):
        await sa.create_connection(Recorder, sock=s)
    with pytest.raises(ValueError, match="not connected"):
        await sa.create_connection(Recorder, sock=sa.socket())
    with socket.socket() as kernel:
        with pytest.raises(ValueError, match="kernel socket"):
            await sa.create_connection(Recorder, sock=kernel)
        with pytest.raises(ValueError, match="kernel socket"):
            await sb.create_server(Echo, sock=kernel)
    with pytest.raises(ValueError, match="host/port and sock"):
        await sa.create_connection(Recorder, B, port, sock=sa.socket())
    tr.close()
    server.close()
    sa.close(); sb.close()


async def test_extra_info_on_protocol_transports_and_stream_writers_alike():
    sa, sb = make_pair()
    server = await echo_server(sb)
    tr, _ = await sa.create_connection(Recorder, B, 7)
    reader, writer = await sa.open_connection(B, 7)
    for obj in (tr, writer):
        assert obj.get_extra_info("peername") == (B, 7)
        assert obj.get_extra_info("sockname")[0] == A
        assert isinstance(obj.get_extra_info("tcpcrypt_session_id"), bytes)
        assert obj.get_extra_info("tcpcrypt")["role"] == "A"
        assert obj.get_extra_info("ssl_object") is None
        assert obj.get_extra_info("ssl_object", "dflt") == "dflt"
        sock = obj.get_extra_info("socket")
        assert isinstance(sock, StackSocket)
        assert sock.getpeername() == (B, 7) and sock.fileno() == -1
        assert obj.get_extra_info("tcp_stats")["state"] == "ESTABLISHED"
        assert obj.get_extra_info("endpoint") is not None
    tr.close()
    writer.close()
    server.close()
    sa.close(); sb.close()


async def test_stack_of_names_the_stack_of_a_transport():
    from tcpstack.aio.streams import stack_of
    sa, sb = make_pair()
    server = await echo_server(sb)
    tr, _ = await sa.create_connection(Recorder, B, 7)
    assert stack_of(tr) is sa
    assert stack_of(object()) is None and stack_of(None) is None
    tr.close()
    server.close()
    sa.close(); sb.close()


async def test_abort_resets_and_reports_no_error_as_asyncio():
    sa, sb = make_pair()
    seen: list[Recorder] = []

    def factory():
        p = Recorder()
        seen.append(p)
        return p
    server = await sb.create_server(factory, B, 7)
    tr, pr = await sa.create_connection(Recorder, B, 7)
    while not seen:
        await asyncio.sleep(0.01)
    tr.write(b"x" * 10)
    tr.abort()
    assert tr.is_closing()
    assert await asyncio.wait_for(pr.lost, 5) is None        # asyncio: _force_close(None)
    peer_exc = await asyncio.wait_for(seen[0].lost, 5)
    assert isinstance(peer_exc, ConnectionResetError)         # the peer got the RST
    server.close()
    sa.close(); sb.close()


async def test_open_connection_returns_a_writer_when_the_peer_resets_at_once():
    """Established and reset in one batch: connection_made() and connection_lost() run
    before open_connection() returns; it still returns the reader and writer, and the
    reader reports the reset, as asyncio's would."""
    sa, sb = make_pair()

    class Rst(asyncio.Protocol):
        def connection_made(self, transport):
            transport.write(b"hi")
            transport.abort()
    server = await sb.create_server(Rst, B, 7)
    reader, writer = await sa.open_connection(B, 7, encrypt=False)
    assert isinstance(writer, asyncio.StreamWriter)
    with pytest.raises(ConnectionResetError):
        while await reader.read(100):
            pass
    server.close()
    sa.close(); sb.close()


@pytest.mark.parametrize("first", [1, 2, 3])
def test_interleave_orders_addresses_as_asyncio(first):
    from asyncio.base_events import _interleave_addrinfos   # asyncio's own, for reference
    from tcpstack.aio.streams import _interleave
    v4, v6 = socket.AF_INET, socket.AF_INET6
    infos = [(v6, "fd00::1"), (v6, "fd00::2"), (v6, "fd00::3"), (v4, "10.0.0.1"),
             (v4, "10.0.0.2")]
    theirs = _interleave_addrinfos([(f, socket.SOCK_STREAM, 6, "", (a, 1)) for f, a in infos],
                                   first)
    assert _interleave(infos, first) == [(i[0], i[4][0]) for i in theirs]


async def test_a_failing_stream_handler_goes_to_the_exception_handler_and_closes():
    sa, sb = make_pair()
    handled = []
    asyncio.get_running_loop().set_exception_handler(lambda loop, ctx: handled.append(ctx))

    async def handle(reader, writer):
        raise KeyError("handler bug")
    server = await sb.start_server(handle, B, 7)
    reader, writer = await sa.open_connection(B, 7)
    assert await asyncio.wait_for(reader.read(), 5) == b""     # closed by the server
    assert handled[0]["message"] == "Unhandled exception in client_connected_cb"
    assert isinstance(handled[0]["exception"], KeyError)
    writer.close()
    server.close()
    await server.wait_closed()
    sa.close(); sb.close()
