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


# --- TLS, stack sockets, servers on several hosts ------------------------------------------------

def _tls_contexts(tmp_path: Any) -> tuple[Any, Any]:
    """A self-signed certificate for B's address: (server context, client context)."""
    import datetime
    import ipaddress
    import ssl

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "b.example")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.DNSName("b.example"), x509.IPAddress(ipaddress.ip_address(B))]), False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .sign(key, hashes.SHA256()))
    certfile, keyfile = tmp_path / "cert.pem", tmp_path / "key.pem"
    certfile.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    keyfile.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                          serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(certfile, keyfile)
    client = ssl.create_default_context(cafile=str(certfile))
    return server, client


async def _tls_echo_on_b(p: Pair, server_ctx: Any, port: int = 8443) -> Any:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(await reader.read(100))
        await writer.drain()
        writer.close()
    loop = asyncio.get_running_loop()
    switch.switch_for(loop).stack_for(loop)     # type: ignore[union-attr]
    return await p.b.start_server(echo, B, port, ssl=server_ctx)


async def test_tls_over_the_stack_keeps_the_name_for_the_certificate(pair, tmp_path, monkeypatch):
    server_ctx, client_ctx = _tls_contexts(tmp_path)
    await _tls_echo_on_b(pair, server_ctx)
    loop = asyncio.get_running_loop()

    async def getaddrinfo(host: str, port: Any, **kw: Any) -> list[Any]:
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (B, port))]
    monkeypatch.setattr(loop, "getaddrinfo", getaddrinfo)
    # by name: the certificate is checked against "b.example", not the address
    reader, writer = await asyncio.open_connection("b.example", 8443, ssl=client_ctx)
    assert writer.get_extra_info("ssl_object").server_hostname == "b.example"
    writer.write(b"over TLS")
    assert await reader.read(100) == b"over TLS"
    writer.close()


async def test_aiohttp_https_is_handed_over_and_upgraded_on_the_stack(pair, tmp_path):
    """aiohttp: sock_connect, then create_connection(sock=..., ssl=..., server_hostname=...):
    the switch takes the stack connection and runs TLS on it (loop.start_tls)."""
    aiohttp = pytest.importorskip("aiohttp")
    from aiohttp import web
    server_ctx, client_ctx = _tls_contexts(tmp_path)

    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="secret")
    app = web.Application()
    app.router.add_get("/", hello)
    runner = web.AppRunner(app)
    await runner.setup()
    loop = asyncio.get_running_loop()
    switch.switch_for(loop).stack_for(loop)     # type: ignore[union-attr]
    server = await pair.b.create_server(runner.server, B, 8443, ssl=server_ctx)
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"https://{B}:8443/", ssl=client_ctx) as resp:
                assert await resp.text() == "secret"
        assert switch.switch_for(loop).adopted == 1  # type: ignore[union-attr]
    finally:
        server.close()
        await runner.cleanup()


async def test_a_stack_socket_goes_to_its_own_stack_through_the_loop(pair):
    loop = asyncio.get_running_loop()
    await echo_on_b(pair)
    sock = pair.a.socket()
    await loop.sock_connect(sock, (B, 7))
    transport, proto = await loop.create_connection(EchoClient, sock=sock)
    transport.write(b"stack")
    assert await asyncio.wait_for(proto.done, 5) == b"stack"
    transport.close()


async def test_a_server_on_both_the_stack_and_the_kernel_is_refused(pair):
    with pytest.raises(ValueError, match="make one server for each"):
        await asyncio.start_server(lambda r, w: None, [A, "127.0.0.1"], 9000)
    server = await asyncio.start_server(lambda r, w: None, ["127.0.0.1"], 0)
    assert server.sockets                       # the kernel's
    server.close()


@pytest.mark.parametrize("loop_kind", ["asyncio", "uvloop"])
def test_starttls_on_stack_transports_on_either_loop(pair, tmp_path, loop_kind):
    """StreamWriter.start_tls() -> loop.start_tls(): uvloop's own refuses transports it did
    not make; the switch hands the stack's to Stack.start_tls on both loops."""
    server_ctx, client_ctx = _tls_contexts(tmp_path)

    async def main() -> bytes:
        loop = asyncio.get_running_loop()
        switch.switch_for(loop).stack_for(loop)     # type: ignore[union-attr]

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            assert await reader.readline() == b"STARTTLS\n"
            writer.write(b"OK\n")
            await writer.drain()
            await writer.start_tls(server_ctx)
            writer.write(await reader.readexactly(5))
            await writer.drain()
            writer.close()
        server = await pair.b.start_server(handle, B, 8444)
        reader, writer = await asyncio.open_connection(B, 8444)
        writer.write(b"STARTTLS\n")
        assert await reader.readline() == b"OK\n"
        await writer.start_tls(client_ctx, server_hostname="b.example")
        assert writer.get_extra_info("ssl_object") is not None
        writer.write(b"tls!!")
        data = await reader.readexactly(5)
        writer.close()
        server.close()
        return data
    if loop_kind == "uvloop":
        uvloop = pytest.importorskip("uvloop")
        assert uvloop.run(main()) == b"tls!!"
    else:
        assert asyncio.run(main()) == b"tls!!"


def test_tcpcrypt_run_without_a_stack_raises_and_closes_the_coroutine(recwarn):
    async def main() -> None:
        pass
    with pytest.raises(ValueError, match="no userspace stack"):
        tcpcrypt.run(main())
    gc.collect()
    assert not [w for w in recwarn if "never awaited" in str(w.message)]


async def test_what_arrives_before_the_hand_over_is_replayed_to_a_buffered_protocol(pair):
    """A server that speaks first (a banner) between sock_connect() and
    create_connection(sock=...): the bytes wait, and reach the protocol that takes over,
    through get_buffer()/buffer_updated() for a BufferedProtocol."""
    loop = asyncio.get_running_loop()
    switch.switch_for(loop).stack_for(loop)     # type: ignore[union-attr]

    async def banner(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 hello\r\n")
        await writer.drain()
        writer.close()
    server = await pair.b.start_server(banner, B, 25)

    class Buffered(asyncio.BufferedProtocol):
        def __init__(self) -> None:
            self.buf = bytearray(4)             # small: the replay goes in pieces
            self.got = bytearray()
            self.eof = loop.create_future()

        def get_buffer(self, sizehint: int) -> memoryview:
            return memoryview(self.buf)

        def buffer_updated(self, nbytes: int) -> None:
            self.got += self.buf[:nbytes]

        def eof_received(self) -> bool:
            self.eof.set_result(bytes(self.got))
            return False

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    await loop.sock_connect(sock, (B, 25))
    await asyncio.sleep(0.05)                   # the banner and the FIN arrive meanwhile
    transport, proto = await loop.create_connection(Buffered, sock=sock)
    assert await asyncio.wait_for(proto.eof, 5) == b"220 hello\r\n"
    server.close()


def test_tcpcrypt_run_with_a_stack_the_program_made():
    """stack=<a Stack>: its loop is the one the run uses."""
    loop = asyncio.new_event_loop()
    la, lb = MemoryLink.pair()
    a = Stack(la, [A], loop=loop)
    b = Stack(lb, [B], loop=loop)

    async def main() -> bytes:
        assert asyncio.get_running_loop() is loop
        async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(await reader.read(100))
            writer.close()
        await b.start_server(echo, B, 7)
        reader, writer = await asyncio.open_connection(B, 7)   # the stdlib's: switched
        writer.write(b"made!")
        data = await reader.read(100)
        assert writer.get_extra_info("tcpcrypt_session_id")
        writer.close()
        return data
    old = switch.process_switch()
    try:
        assert tcpcrypt.run(main(), stack=a) == b"made!"
        assert a._closed and loop.is_closed()
    finally:
        lb.close()
        b.close()
    assert switch.process_switch() is old


@pytest.mark.parametrize("env,message", [
    ({"TCPCRYPT_TUN": "10.231.5.300/24"}, "TCPCRYPT_TUN=10.231.5.300/24: not an address"),
    ({"TCPCRYPT_TUN": "10.231.5.1/24"}, "the stack's address is the kernel side's"),
    ({"TCPCRYPT_TUN": "10.231.5.2/24", "TCPCRYPT_ROUTE": "10.9.9.9/8"}, "route '10.9.9.9/8'"),
    ({"TCPCRYPT_TUN": "10.231.5.2/24", "TCPCRYPT_PLAIN": "1",
      "TCPCRYPT_REQUIRE_ENCRYPTION": "1"}, "contradict"),
    ({"TCPCRYPT_TUN": "10.231.5.2/24", "TCPCRYPT_CC": "vegas"},
     "TCPCRYPT_TUN/TCPCRYPT_CC: congestion_control='vegas': not one the stack has"),
])
def test_a_bad_environment_fails_the_import_with_one_clear_error(env, message):
    import os
    import subprocess
    import sys
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    base = {k: v for k, v in os.environ.items() if not k.startswith("TCPCRYPT_")}
    r = subprocess.run([sys.executable, "-c", "from tcpcrypt import asyncio"],
                       capture_output=True, text=True, timeout=60,
                       env=dict(base, PYTHONPATH=root, **env))
    assert r.returncode != 0
    assert r.stderr.strip().splitlines()[-1].startswith("RuntimeError: ")
    assert message in r.stderr.strip().splitlines()[-1], r.stderr


def test_the_routing_of_the_environment():
    import os
    import subprocess
    import sys
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    base = {k: v for k, v in os.environ.items() if not k.startswith("TCPCRYPT_")}
    code = ("from tcpcrypt import asyncio\nfrom tcpstack.aio import loop\n"
            "sw = loop.process_switch()\n"
            "print(sw.routed('10.231.5.9'), sw.routed('10.231.6.9'), sw.routed('10.7.0.1'), "
            "sw.routed('10.8.0.1'), sw.require_encryption, sw.stack)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                       env=dict(base, PYTHONPATH=root, TCPCRYPT_TUN="10.231.5.2/24",
                                TCPCRYPT_ROUTE="10.231.6.0/24, 10.7.0.0/16",
                                TCPCRYPT_REQUIRE_ENCRYPTION="1"))
    # nothing brought up at import: the device comes with the first routed connection
    assert r.stdout.split() == ["True", "True", "True", "False", "True", "None"], r.stderr
    # TCPCRYPT_CC: the stacks the switch makes run that congestion control
    code = ("from tcpcrypt import asyncio\nfrom tcpstack.aio import loop\n"
            "print(loop.process_switch().stack_factory.config.tcp.congestion_control)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                       env=dict(base, PYTHONPATH=root, TCPCRYPT_TUN="10.231.5.2/24",
                                TCPCRYPT_CC="bbr"))
    assert r.stdout.split() == ["bbr"], r.stderr
