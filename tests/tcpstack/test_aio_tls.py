"""TLS over the stack (issue 16): ssl= on create_connection/create_server/open_connection/
start_server, Stack.start_tls(), loop.start_tls() (default loop) and StreamWriter.start_tls(),
with asyncio's SSLProtocol, on the default loop and uvloop; TLS inside tcpcrypt when both are
on.  A self-signed certificate is made here (cryptography's x509)."""
from __future__ import annotations

import asyncio
import datetime
import ipaddress
import ssl

import pytest

from tcpstack.aio.streams import Stack
from tun.memory import MemoryLink

A, B = "10.0.0.1", "10.0.0.2"
NAME = "server.test"


def make_cert(tmp_path, name: str = NAME, ip: str | None = None) -> tuple[str, str]:
    """A self-signed certificate for `name` (and `ip`): (certfile, keyfile)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    sans: list[x509.GeneralName] = [x509.DNSName(name)]
    if ip:
        sans.append(x509.IPAddress(ipaddress.ip_address(ip)))
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    certfile, keyfile = tmp_path / "cert.pem", tmp_path / "key.pem"
    certfile.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    keyfile.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                          serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    return str(certfile), str(keyfile)


def contexts(tmp_path, ip: str | None = None) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    certfile, keyfile = make_cert(tmp_path, ip=ip)
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(certfile, keyfile)
    client = ssl.create_default_context(cafile=certfile)
    return server, client


def make_pair():
    la, lb = MemoryLink.pair()
    return Stack(la, [A]), Stack(lb, [B])


def run_on(loop_kind: str, coro_fn):
    if loop_kind == "uvloop":
        uvloop = pytest.importorskip("uvloop")
        loop = uvloop.new_event_loop()
    else:
        loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(asyncio.wait_for(coro_fn(), 30))
    finally:
        loop.close()


async def echo(reader, writer):
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.close()


@pytest.mark.parametrize("loop_kind", ["asyncio", "uvloop"])
@pytest.mark.parametrize("encrypt", [False, True])
def test_streams_over_tls_both_loops(tmp_path, loop_kind, encrypt):
    sctx, cctx = contexts(tmp_path)

    async def main():
        sa, sb = make_pair()
        server = await sb.start_server(echo, B, 443, ssl=sctx, encrypt=encrypt)
        reader, writer = await sa.open_connection(B, 443, ssl=cctx, server_hostname=NAME,
                                                  encrypt=encrypt)
        blob = bytes(range(256)) * 1000
        writer.write(blob)
        got = await reader.readexactly(len(blob))
        assert got == blob
        sslobj = writer.get_extra_info("ssl_object")
        assert isinstance(sslobj, ssl.SSLObject) and sslobj.server_hostname == NAME
        assert writer.get_extra_info("peercert")["subject"] == ((("commonName", NAME),),)
        assert writer.get_extra_info("cipher")[0]
        assert writer.get_extra_info("sslcontext") is cctx
        # the stack's facts pass through the TLS transport: TLS runs inside tcpcrypt
        sid = writer.get_extra_info("tcpcrypt_session_id")
        assert (sid is not None) == encrypt
        assert writer.get_extra_info("peername") == (B, 443)
        assert writer.get_extra_info("socket").getpeername() == (B, 443)
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()
        sa.close(); sb.close()
    run_on(loop_kind, main)


class Collect(asyncio.Protocol):
    def __init__(self):
        self.data = bytearray()
        self.made = asyncio.get_running_loop().create_future()
        self.lost = asyncio.get_running_loop().create_future()

    def connection_made(self, transport):
        self.transport = transport
        self.made.set_result(transport)

    def data_received(self, data):
        self.data += data

    def connection_lost(self, exc):
        self.lost.set_result(exc)


class TlsEcho(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.transport.write(data)


@pytest.mark.parametrize("loop_kind", ["asyncio", "uvloop"])
def test_create_connection_and_server_with_ssl(tmp_path, loop_kind):
    sctx, cctx = contexts(tmp_path, ip=B)

    async def main():
        sa, sb = make_pair()
        server = await sb.create_server(TlsEcho, B, 443, ssl=sctx)
        # server_hostname defaults to host (an IP address here, in the certificate)
        tr, pr = await sa.create_connection(Collect, B, 443, ssl=cctx)
        assert pr.made.done() and pr.transport is tr
        assert tr.get_extra_info("ssl_object") is not None
        tr.write(b"over TLS")
        while bytes(pr.data) != b"over TLS":
            await asyncio.sleep(0.01)
        tr.close()
        assert await asyncio.wait_for(pr.lost, 5) is None
        server.close()
        sa.close(); sb.close()
    run_on(loop_kind, main)


@pytest.mark.parametrize("loop_kind", ["asyncio", "uvloop"])
def test_a_failed_handshake_raises_and_sends_no_plaintext(tmp_path, loop_kind):
    sctx, cctx = contexts(tmp_path)

    async def main():
        sa, sb = make_pair()
        got = []

        async def handle(reader, writer):   # never reached: the handshake fails
            got.append(await reader.read(100))
        server = await sb.start_server(handle, B, 443, ssl=sctx)
        with pytest.raises(ssl.SSLCertVerificationError):
            await sa.open_connection(B, 443, ssl=cctx, server_hostname="wrong.test")
        with pytest.raises(ssl.SSLCertVerificationError):
            await sa.open_connection(B, 443, ssl=True, server_hostname=NAME)  # default CAs
        await asyncio.sleep(0.05)
        assert got == []
        server.close()
        sa.close(); sb.close()
    handled = []

    async def wrapped():
        asyncio.get_running_loop().set_exception_handler(lambda l, c: handled.append(c))
        await main()
    run_on(loop_kind, wrapped)


@pytest.mark.parametrize("loop_kind", ["asyncio", "uvloop"])
def test_stream_writer_start_tls_starttls_both_loops(tmp_path, loop_kind):
    """STARTTLS: a plain exchange, then StreamWriter.start_tls() on both sides (the server's
    writer is server-side)."""
    sctx, cctx = contexts(tmp_path)

    async def main():
        sa, sb = make_pair()

        async def handle(reader, writer):
            assert await reader.readline() == b"STARTTLS\r\n"
            writer.write(b"220 go ahead\r\n")
            await writer.drain()
            await writer.start_tls(sctx)
            assert writer.get_extra_info("ssl_object").server_side
            line = await reader.readline()
            writer.write(b"secret: " + line)
            await writer.drain()
            writer.close()
        server = await sb.start_server(handle, B, 25)
        reader, writer = await sa.open_connection(B, 25)
        writer.write(b"STARTTLS\r\n")
        assert await reader.readline() == b"220 go ahead\r\n"
        await writer.start_tls(cctx, server_hostname=NAME)
        assert writer.get_extra_info("ssl_object") is not None
        writer.write(b"hello\n")
        assert await reader.readline() == b"secret: hello\n"
        writer.close()
        server.close()
        sa.close(); sb.close()
    run_on(loop_kind, main)


@pytest.mark.parametrize("how", ["stack", "loop"])
@pytest.mark.parametrize("loop_kind", ["asyncio", "uvloop"])
def test_start_tls_on_a_protocol_transport(tmp_path, loop_kind, how):
    """Stack.start_tls() on any loop; the default loop's own loop.start_tls() takes the
    stack's transports too (_start_tls_compatible)."""
    if how == "loop" and loop_kind == "uvloop":
        pytest.skip("uvloop's loop.start_tls() refuses transports it did not make; "
                    "Stack.start_tls() is the way there")
    sctx, cctx = contexts(tmp_path)

    async def main():
        sa, sb = make_pair()
        loop = asyncio.get_running_loop()
        upgraded = []

        class Upgrading(asyncio.Protocol):
            def connection_made(self, transport):
                async def up():
                    app = TlsEcho()
                    starter = sb.start_tls if how == "stack" else loop.start_tls
                    tls = await starter(transport, app, sctx, server_side=True)
                    app.connection_made(tls)
                    upgraded.append(tls)
                loop.create_task(up())
        server = await sb.create_server(Upgrading, B, 5000)
        tr, pr = await sa.create_connection(asyncio.Protocol, B, 5000)
        app = Collect()
        starter = sa.start_tls if how == "stack" else loop.start_tls
        tls = await starter(tr, app, cctx, server_hostname=NAME, ssl_handshake_timeout=5,
                            **({"ssl_shutdown_timeout": 5} if how == "stack" else {}))
        app.connection_made(tls)
        tls.write(b"upgraded")
        while bytes(app.data) != b"upgraded":
            await asyncio.sleep(0.01)
        assert tls.get_extra_info("ssl_object") is not None and upgraded
        tls.close()
        server.close()
        sa.close(); sb.close()
    run_on(loop_kind, main)


async def test_tls_argument_rules_are_asyncios():
    sa, sb = make_pair()
    with pytest.raises(ValueError, match="server_hostname is only meaningful with ssl"):
        await sa.create_connection(asyncio.Protocol, B, 1, server_hostname="x")
    with pytest.raises(ValueError, match="You must set server_hostname"):
        await sa.create_connection(asyncio.Protocol, ssl=True, sock=sa.socket())
    with pytest.raises(TypeError, match="SSLContext"):
        await sb.create_server(asyncio.Protocol, B, 1, ssl=True)
    with pytest.raises(TypeError, match="SSLContext"):
        await sa.start_tls(None, asyncio.Protocol(), "not a context")   # type: ignore[arg-type]
    assert sa.connections() == [] and sb.core._listeners == {}
    sa.close(); sb.close()


@pytest.mark.parametrize("encrypt", [False, True])
async def test_tls_runs_inside_tcpcrypt_on_the_wire(tmp_path, encrypt):
    """TLS bytes are the application's stream: with tcpcrypt on, even the TLS ClientHello
    (whose SNI is in clear in TLS) is tcpcrypt ciphertext on the wire."""
    sctx, cctx = contexts(tmp_path)
    sa, sb = make_pair()
    wire: list[bytes] = []
    sa.core.on_packet = lambda direction, packet, now: wire.append(bytes(packet))
    server = await sb.start_server(echo, B, 443, ssl=sctx)
    reader, writer = await sa.open_connection(B, 443, ssl=cctx, server_hostname=NAME,
                                              encrypt=encrypt)
    writer.write(b"application secret")
    assert await reader.readexactly(18) == b"application secret"
    joined = b"".join(wire)
    assert (NAME.encode() in joined) == (not encrypt)
    assert b"application secret" not in joined
    writer.close()
    server.close()
    sa.close(); sb.close()


async def test_handshake_timeout_and_argument_checks(tmp_path):
    sctx, cctx = contexts(tmp_path)
    sa, sb = make_pair()
    silent = []

    async def never_answers(reader, writer):
        silent.append(writer)                # holds the connection, says nothing
    server = await sb.start_server(never_answers, B, 443)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    with pytest.raises(ConnectionAbortedError, match="SSL handshake is taking longer"):
        await sa.open_connection(B, 443, ssl=cctx, server_hostname=NAME,
                                 ssl_handshake_timeout=0.2)
    assert loop.time() - t0 < 2
    for bad in ({"ssl_handshake_timeout": 0}, {"ssl_shutdown_timeout": -1}):
        with pytest.raises(ValueError):
            await sa.create_connection(asyncio.Protocol, B, 443, ssl=cctx,
                                       server_hostname=NAME, **bad)
    server.close()
    sa.close(); sb.close()


async def test_buffered_protocol_over_tls(tmp_path):
    sctx, cctx = contexts(tmp_path)
    sa, sb = make_pair()
    server = await sb.start_server(echo, B, 443, ssl=sctx)

    class Buf(asyncio.BufferedProtocol):
        def __init__(self):
            self.buf = bytearray(10)
            self.got = bytearray()

        def get_buffer(self, sizehint):
            return self.buf

        def buffer_updated(self, nbytes):
            assert nbytes <= 10
            self.got += self.buf[:nbytes]
    tr, p = await sa.create_connection(Buf, B, 443, ssl=cctx, server_hostname=NAME)
    blob = bytes(range(256)) * 20
    tr.write(blob)
    while len(p.got) < len(blob):
        await asyncio.sleep(0.01)
    assert bytes(p.got) == blob
    tr.close()
    server.close()
    sa.close(); sb.close()
