"""The process-wide switch (tcpstack.aio.loop), on in-memory links: unmodified asyncio code
(loop.create_connection with a Protocol, asyncio.open_connection/start_server, aiohttp's
sock_connect + create_connection(sock=...)) reaches a peer stack when the destination is
routed, and the kernel otherwise; on asyncio's loop and uvloop's, loops made by anyone.

Each test's switch makes, for the loop that asks, a stack "A" (the switch's) joined by a
MemoryLink to a peer stack "B" (10.0.0.2, the test's server side)."""
from __future__ import annotations

import asyncio
import gc
import socket
import threading
from typing import Any, Iterator

import pytest

import tcpcrypt
from tcpcrypt.errors import EncryptionRequiredError
from tcpstack.aio import loop as switch
from tcpstack.aio.streams import Stack
from tun.memory import MemoryLink

A, B = "10.0.0.1", "10.0.0.2"


class Pair:
    """A stack factory for a Switch: stack A for the loop, with its peer B."""

    def __init__(self, *, plain_peer: bool = False) -> None:
        self.plain_peer = plain_peer
        self.made: list[tuple[Stack, Stack]] = []

    def __call__(self, loop: asyncio.AbstractEventLoop) -> Stack:
        la, lb = MemoryLink.pair()
        a = Stack(la, [A], loop=loop)
        b = Stack(lb, [B], loop=loop, security=None if self.plain_peer else "default")
        self.made.append((a, b))
        return a

    @property
    def a(self) -> Stack:
        return self.made[-1][0]

    @property
    def b(self) -> Stack:
        return self.made[-1][1]


@pytest.fixture
def pair() -> Iterator[Pair]:
    yield from _switched(Pair())


def _switched(p: Pair, **kw: Any) -> Iterator[Pair]:
    was = switch.installed()
    switch.install()
    sw = switch.Switch(p, [f"{A}/24"], **kw)
    old = switch.set_process_switch(sw)
    try:
        yield p
    finally:
        switch.set_process_switch(old)
        _close(p, sw)
        if not was:
            switch.uninstall()


def _close(p: Pair, sw: switch.Switch | None = None) -> None:
    """Close the peer stacks and the switch's (outside their loops: the links first, so
    closing sends nothing into a loop that no longer runs)."""
    for a, b in p.made:
        a.link.close()
        b.link.close()
        b.close()
    if sw is not None:
        sw.close()


async def echo_on_b(p: Pair, port: int = 7) -> Any:
    """An echo server on the peer stack B (explicitly B's, not through the switch)."""
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.close()
    loop = asyncio.get_running_loop()
    switch.switch_for(loop).stack_for(loop)     # type: ignore[union-attr]  (A, and B with it)
    return await p.b.start_server(echo, B, port)


async def kernel_echo() -> tuple[asyncio.Server, int]:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(await reader.read(100))
        await writer.drain()
        writer.close()
    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


# --- routing ---------------------------------------------------------------------------------

def test_routes_default_is_the_stacks_subnet_plus_the_given_prefixes():
    sw = switch.Switch(Pair(), ["10.77.0.2/24"], ["10.78.0.0/16"])
    assert sw.routed("10.77.0.1") and sw.routed("10.77.0.200") and sw.routed("10.78.5.5")
    assert not sw.routed("10.79.0.1") and not sw.routed("192.0.2.1")
    assert not sw.routed("127.0.0.1")           # never loopback
    assert not sw.routed("fd00::1")             # a family the stack has no address of
    every = switch.Switch(Pair(), ["10.77.0.2/24"], ["all"])
    assert every.routed("192.0.2.1") and every.routed("8.8.8.8")
    assert not every.routed("127.0.0.1") and not every.routed("0.0.0.0")
    assert not every.routed("224.0.0.1")


def test_a_bad_route_is_one_clear_error():
    with pytest.raises(ValueError, match=r"route '10.0.0.1/8'.*prefix such as"):
        switch.Routes.parse(["10.0.0.1/8"])
    with pytest.raises(ValueError, match=r"route 'nonsense'"):
        switch.Routes.parse(["nonsense"])


def test_listeners_on_wildcards_and_the_stacks_address_belong_to_the_stack():
    sw = switch.Switch(Pair(), ["10.77.0.2/24"])
    for host in (None, "", "0.0.0.0", "::", "10.77.0.2"):
        assert sw.is_own(host), host
    for host in ("127.0.0.1", "10.77.0.1", "localhost", "::1"):
        assert not sw.is_own(host), host


# --- the patched loops -------------------------------------------------------------------------

class EchoClient(asyncio.Protocol):
    def __init__(self) -> None:
        self.got = bytearray()
        self.done = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.got += data
        if len(self.got) >= 5 and not self.done.done():
            self.done.set_result(bytes(self.got))

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_exception(exc or ConnectionError("lost"))


async def test_create_connection_with_a_protocol_goes_over_the_stack(pair):
    loop = asyncio.get_running_loop()
    await echo_on_b(pair)
    transport, proto = await loop.create_connection(EchoClient, B, 7)
    transport.write(b"hello")
    assert await asyncio.wait_for(proto.done, 5) == b"hello"
    assert transport.get_extra_info("peername")[:2] == (B, 7)
    assert transport.get_extra_info("tcpcrypt_session_id")      # tcpcrypt with the peer stack
    assert [ep.remote[0] for ep in pair.a.connections()] == [B]
    transport.close()


async def test_open_connection_goes_over_the_stack_and_loopback_stays_the_kernels(pair):
    await echo_on_b(pair)
    reader, writer = await asyncio.open_connection(B, 7)
    writer.write(b"ping!")
    assert await reader.readexactly(5) == b"ping!"
    assert writer.get_extra_info("tcpcrypt_session_id")
    writer.close()
    server, port = await kernel_echo()
    async with server:
        r2, w2 = await asyncio.open_connection("127.0.0.1", port)
        assert w2.get_extra_info("socket") is not None and w2.get_extra_info("tcpcrypt_session_id") is None
        w2.write(b"kernel")
        assert await r2.read(100) == b"kernel"
        w2.close()
    assert len(pair.made) == 1                  # the loopback connection made no stack


async def test_start_server_on_the_wildcard_listens_on_the_stack(pair):
    got = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        got.append((await reader.read(100), writer.get_extra_info("peername")[0]))
        writer.close()
    server = await asyncio.start_server(handle, None, 8080)
    # the peer stack B connects to the switch's stack A
    reader, writer = await pair.b.open_connection(A, 8080)
    writer.write(b"to A")
    await writer.drain()
    assert await reader.read() == b""
    assert got == [(b"to A", B)]
    writer.close()
    server.close()
    await server.wait_closed()


async def test_a_server_on_a_kernel_address_stays_the_kernels(pair):
    server, port = await kernel_echo()
    async with server:
        assert server.sockets and server.sockets[0].getsockname()[0] == "127.0.0.1"
    assert pair.made == []


async def test_a_routed_name_is_resolved_first(pair, monkeypatch):
    await echo_on_b(pair)
    loop = asyncio.get_running_loop()

    async def getaddrinfo(host: str, port: Any, **kw: Any) -> list[Any]:
        assert host == "b.example"
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (B, port))]
    monkeypatch.setattr(loop, "getaddrinfo", getaddrinfo)
    reader, writer = await asyncio.open_connection("b.example", 7)
    assert writer.get_extra_info("peername")[0] == B
    writer.close()


async def test_sock_connect_then_create_connection_sock_takes_the_stack_connection(pair):
    """What aiohttp (aiohappyeyeballs) does: a kernel socket, sock_connect, then
    create_connection(sock=...).  The stack carries it; the kernel socket is closed."""
    loop = asyncio.get_running_loop()
    await echo_on_b(pair)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    await loop.sock_connect(sock, (B, 7))
    assert [ep.remote[0] for ep in pair.a.connections()] == [B]
    transport, proto = await loop.create_connection(EchoClient, sock=sock)
    assert switch.switch_for(loop).adopted == 1  # type: ignore[union-attr]
    assert sock.fileno() == -1                  # the unused kernel socket is closed
    transport.write(b"adopt")
    assert await asyncio.wait_for(proto.done, 5) == b"adopt"
    assert transport.get_extra_info("tcpcrypt_session_id")
    transport.close()


async def test_a_happy_eyeballs_loser_socket_resets_its_stack_connection(pair):
    loop = asyncio.get_running_loop()
    await echo_on_b(pair)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    await loop.sock_connect(sock, (B, 7))
    ep = pair.a.connections()[0]
    sock.close()
    del sock
    gc.collect()
    for _ in range(100):
        if ep.closed:
            break
        await asyncio.sleep(0.01)
    assert ep.closed


async def test_create_connection_with_a_kernel_socket_stays_the_kernels(pair):
    loop = asyncio.get_running_loop()
    server, port = await kernel_echo()
    async with server:
        sock = socket.create_connection(("127.0.0.1", port))
        sock.setblocking(False)
        transport, proto = await loop.create_connection(EchoClient, sock=sock)
        assert transport.get_extra_info("socket").fileno() == sock.fileno()
        transport.write(b"kern!")
        assert await asyncio.wait_for(proto.done, 5) == b"kern!"
        transport.close()
    assert pair.made == []


async def test_aiohttp_unmodified_reaches_a_server_on_the_peer_stack(pair):
    aiohttp = pytest.importorskip("aiohttp")
    from aiohttp import web

    async def hello(request: web.Request) -> web.Response:
        sid = request.transport.get_extra_info("tcpcrypt_session_id") if request.transport else None
        return web.Response(text=f"hello {request.remote} {sid.hex() if sid else None}")
    app = web.Application()
    app.router.add_get("/", hello)
    runner = web.AppRunner(app)
    await runner.setup()
    loop = asyncio.get_running_loop()
    switch.switch_for(loop).stack_for(loop)     # type: ignore[union-attr]  (B exists)
    # the server side: aiohttp's own server on stack B, through B's create_server
    server = await pair.b.create_server(runner.server, B, 8081)
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://{B}:8081/") as resp:
                text = await resp.text()
        assert text.startswith(f"hello {A} ")
        assert not text.endswith("None")        # tcpcrypt between the stacks
        # aiohttp connected a kernel socket with sock_connect; the stack took over
        assert switch.switch_for(loop).adopted == 1  # type: ignore[union-attr]
    finally:
        server.close()
        await runner.cleanup()


async def test_require_encryption_refuses_a_plain_peer(request):
    gen = _switched(Pair(plain_peer=True), require_encryption=True)
    p = next(gen)
    request.addfinalizer(lambda: next(gen, None))
    loop = asyncio.get_running_loop()
    switch.switch_for(loop).stack_for(loop)     # type: ignore[union-attr]
    await echo_on_b(p)
    with pytest.raises(EncryptionRequiredError):
        await asyncio.open_connection(B, 7)


# --- loops made by anyone, one at a time ----------------------------------------------------------

def _client(port: int = 7) -> Any:
    async def main() -> bytes:
        loop = asyncio.get_running_loop()
        sw = switch.switch_for(loop)
        assert sw is not None
        await echo_on_b(sw.stack_factory, port)  # type: ignore[arg-type]
        reader, writer = await asyncio.open_connection(B, port)
        writer.write(b"loop!")
        data = await reader.readexactly(5)
        writer.close()
        return data
    return main()


def test_every_asyncio_run_gets_a_fresh_stack_and_the_old_one_is_closed(pair):
    assert asyncio.run(_client()) == b"loop!"
    first = pair.a
    assert first._closed                         # closed with its loop
    assert asyncio.run(_client()) == b"loop!"
    assert pair.a is not first and pair.a._closed
    assert len(pair.made) == 2


def test_uvloop_loops_are_switched_too(pair):
    uvloop = pytest.importorskip("uvloop")
    assert uvloop.run(_client()) == b"loop!"
    # a factory's loop, as uvicorn's loop="auto" makes them
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        assert runner.run(_client()) == b"loop!"
    assert len(pair.made) == 2


def test_a_second_running_loop_gets_a_clear_error(pair):
    started, release = threading.Event(), threading.Event()

    async def hold() -> None:
        loop = asyncio.get_running_loop()
        switch.switch_for(loop).stack_for(loop)    # type: ignore[union-attr]
        started.set()
        while not release.is_set():
            await asyncio.sleep(0.01)
    t = threading.Thread(target=asyncio.run, args=(hold(),))
    t.start()
    try:
        assert started.wait(10)
        with pytest.raises(RuntimeError, match="another running event loop"):
            asyncio.run(asyncio.open_connection(B, 7))
    finally:
        release.set()
        t.join(10)


def test_uninstall_restores_the_original_methods():
    was = switch.installed()
    orig = asyncio.base_events.BaseEventLoop.create_connection
    switch.install()
    assert switch.installed()
    if not was:
        assert asyncio.base_events.BaseEventLoop.create_connection is not orig
        switch.uninstall()
        assert asyncio.base_events.BaseEventLoop.create_connection is orig


# --- the explicit forms ----------------------------------------------------------------------------

def test_tcpcrypt_run_with_a_stack_factory():
    p = Pair()
    old = switch.process_switch()
    try:
        assert tcpcrypt.run(_client(), stack=p, addr=f"{A}/24") == b"loop!"
        assert p.a._closed
    finally:
        _close(p)
    assert switch.process_switch() is old


def test_a_loop_factory_for_asyncio_runner():
    p = Pair()
    old = switch.process_switch()
    try:
        with asyncio.Runner(loop_factory=tcpcrypt.loop_factory(stack=p, addr=f"{A}/24")) as r:
            assert r.run(_client()) == b"loop!"
            assert switch.switch_for(r.get_loop()).stack_factory is p  # type: ignore[union-attr]
    finally:
        switch.set_process_switch(old)
        _close(p)


def test_the_explicit_forms_say_what_is_missing():
    with pytest.raises(ValueError, match="no userspace stack: give addr="):
        tcpcrypt.loop_factory()
    with pytest.raises(ValueError, match="give addr="):
        tcpcrypt.loop_factory(stack=Pair())
    with pytest.raises(ValueError, match="contradict"):
        tcpcrypt.loop_factory(addr="10.9.0.2/24", plain=True, require_encryption=True)
