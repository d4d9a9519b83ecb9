"""No option is ever silently dropped (issue 11): the public API refuses, before a single
packet leaves, what it cannot honour.

- `ssl=` (TLS) is honoured (tests/tcpstack/test_aio_tls.py): what leaves is a TLS handshake,
  and when the peer does not speak TLS the call raises; plaintext where TLS was asked for is
  the one thing that must never happen.  asyncio's TLS-only arguments without ssl= raise as
  asyncio's do.
- A misspelled keyword (`requir_encryption=True`) raises TypeError, as asyncio does.
- Asking for encryption a stack cannot give (no security provider, or encrypt=False)
  raises ValueError.
Each test also checks that the peer saw nothing: no SYN on the wire, no connection accepted.
"""
from __future__ import annotations

import asyncio
import select
import socket
import ssl as ssl_mod

import pytest

import tcpcrypt
import tcpcrypt.asyncio as tasyncio
from tcpstack.aio.streams import Stack
from tun.memory import MemoryLink

A, B = "10.0.0.1", "10.0.0.2"


class CountingLink(MemoryLink):
    """A MemoryLink that counts the packets its stack sends."""
    sent = 0

    def send(self, packet):               # type: ignore[override]
        self.sent += 1
        return super().send(packet)


def pair():
    la, lb = CountingLink(), MemoryLink()
    la.peer, lb.peer = lb, la
    return Stack(la, [A]), Stack(lb, [B]), la


async def served(sb):
    accepted = []

    async def handle(reader, writer):
        accepted.append(await reader.read(100))
        writer.close()
    return await sb.start_server(handle, B, 7), accepted


async def nothing_happened(la, accepted):
    await asyncio.sleep(0.05)            # let any queued packet cross the link
    assert la.sent == 0, "a packet left the stack"
    assert accepted == []


async def plain_recorder(sb):
    """A plain TCP server on B that records what it receives, then closes."""
    got = []

    async def handle(reader, writer):
        got.append(await reader.read(65536))
        writer.close()
    return await sb.start_server(handle, B, 7), got


@pytest.mark.parametrize("ssl", [True, ssl_mod.create_default_context()])
async def test_open_connection_with_ssl_sends_a_tls_handshake_and_raises_against_plain_tcp(ssl):
    """ssl= used to raise before sending anything; now TLS is run: the peer (plain TCP) gets
    a TLS ClientHello, never application bytes, and the call raises when the peer is not a
    TLS server."""
    sa, sb, la = pair()
    server, got = await plain_recorder(sb)
    with pytest.raises(OSError):
        await sa.open_connection(B, 7, ssl=ssl, server_hostname="b.test",
                                 ssl_handshake_timeout=5)
    tcpcrypt.set_default_stack(sa)
    try:
        with pytest.raises(OSError):
            await tcpcrypt.open_connection(B, 7, ssl=ssl, server_hostname="b.test")
        with pytest.raises(OSError):
            await tasyncio.open_connection(B, 7, ssl=ssl, server_hostname="x")
    finally:
        tcpcrypt.set_default_stack(None)
    assert len(got) == 3
    for record in got:
        assert record[:1] == b"\x16" and record[5:6] == b"\x01"   # handshake: ClientHello
    server.close()


async def test_ssl_false_and_none_mean_plain_as_in_asyncio():
    sa, sb, la = pair()
    server, accepted = await served(sb)
    for ssl in (None, False):
        reader, writer = await sa.open_connection(B, 7, ssl=ssl)
        writer.write(b"hi")
        assert await reader.read() == b""
        writer.close()
    assert accepted == [b"hi", b"hi"]
    assert la.sent > 0                   # the counting link does count
    server.close()


async def test_tls_only_arguments_without_ssl_raise_as_asyncio_does():
    sa, sb, la = pair()
    server, accepted = await served(sb)
    for kw in ({"server_hostname": "example"}, {"ssl_handshake_timeout": 5.0},
               {"ssl_shutdown_timeout": 5.0}):
        with pytest.raises(ValueError, match="only meaningful with ssl"):
            await sa.open_connection(B, 7, **kw)
    await nothing_happened(la, accepted)
    server.close()


async def test_start_server_with_bad_ssl_or_reuse_port_raises_and_listens_on_nothing():
    sa, sb, la = pair()
    with pytest.raises(TypeError, match="SSLContext"):      # as asyncio's create_server
        await sb.start_server(lambda r, w: None, B, 443, ssl=True)
    with pytest.raises(ValueError, match="reuse_port"):
        await sb.start_server(lambda r, w: None, B, 443, reuse_port=True)
    assert sb.core._listeners == {}
    with pytest.raises(ConnectionRefusedError):
        await sa.open_connection(B, 443)


@pytest.mark.parametrize("api", ["stack", "tcpcrypt", "tcpcrypt.asyncio"])
async def test_a_misspelled_keyword_raises_type_error_and_sends_nothing(api):
    sa, sb, la = pair()
    server, accepted = await served(sb)
    tcpcrypt.set_default_stack(sa)
    try:
        opener = {"stack": sa.open_connection, "tcpcrypt": tcpcrypt.open_connection,
                  "tcpcrypt.asyncio": tasyncio.open_connection}[api]
        with pytest.raises(TypeError, match=r"open_connection\(\) got an unexpected keyword argument 'requir_encryption'"):
            await opener(B, 7, requir_encryption=True)
    finally:
        tcpcrypt.set_default_stack(None)
    await nothing_happened(la, accepted)
    with pytest.raises(TypeError, match=r"start_server\(\) got an unexpected keyword argument 'nodelya'"):
        await sb.start_server(lambda r, w: None, B, 8, nodelya=True)
    server.close()


async def test_known_options_are_still_taken():
    """TCP options (TCPConfig fields), the provider's policies and asyncio's socket-only
    arguments that mean nothing here (family matching the host, flags, happy eyeballs) are
    accepted; keep_alive=True turns TCP keepalive on."""
    sa, sb, la = pair()
    kept = []

    async def handle(reader, writer):
        kept.append(writer.get_extra_info("tcp_stats"))
        writer.close()
    server = await sb.start_server(handle, B, 9, keep_alive=True, reuse_address=True)
    assert server._listener.options["keepalive"] is True
    reader, writer = await sa.open_connection(
        B, 9, nodelay=True, congestion_control="newreno", resume=False, family=socket.AF_INET,
        proto=socket.IPPROTO_TCP, flags=0, happy_eyeballs_delay=0.25, interleave=1)
    assert await reader.read() == b""
    writer.close()
    server.close()


async def test_family_that_does_not_match_the_host_raises():
    sa, sb, la = pair()
    with pytest.raises(ValueError, match="not of family AF_INET6"):
        await sa.open_connection(B, 7, family=socket.AF_INET6)
    with pytest.raises(ValueError, match="kernel socket"):
        await sa.open_connection(B, 7, sock=socket.socket())
    assert la.sent == 0


async def test_encryption_that_cannot_happen_raises():
    la, lb = MemoryLink.pair()
    plain = Stack(la, [A], security=None)
    Stack(lb, [B])
    with pytest.raises(ValueError, match="no security provider"):
        await plain.open_connection(B, 7, require_encryption=True)
    with pytest.raises(ValueError, match="no security provider"):
        await plain.open_connection(B, 7, app_aware=1)
    sa = Stack(*MemoryLink.pair()[:1], [A])
    with pytest.raises(ValueError, match="contradicts encrypt=False"):
        await sa.open_connection(B, 7, require_encryption=True, encrypt=False)
    with pytest.raises(ValueError, match="no security provider"):
        await plain.start_server(lambda r, w: None, A, 7, require_encryption=True)


@pytest.mark.tun
async def test_a_kernel_listener_never_receives_plaintext_when_tls_is_asked():
    """The scenario of the issue: a kernel listener used to receive `my secret password`
    in clear from open_connection(..., ssl=ctx).  Now TLS runs: the plain kernel listener
    receives a TLS ClientHello and nothing else, and the call raises when it closes."""
    from tun.netns import enter_netns
    from tun.topology import KernelSide
    with KernelSide() as k:
        stack = Stack(k.link(), [k.stack_addr])
        with enter_netns(k.ns.name):
            lsock = socket.socket()
        try:
            lsock.bind((k.kernel_addr, 4433))
            lsock.listen(2)
            lsock.setblocking(False)
            ctx = ssl_mod.create_default_context()
            loop = asyncio.get_running_loop()
            for opener in (stack.open_connection, tasyncio.open_connection):
                async def client():
                    kw = {"stack": stack} if opener is tasyncio.open_connection else {}
                    reader, writer = await opener(k.kernel_addr, 4433, ssl=ctx, **kw)
                    writer.write(b"my secret password")       # never reached
                task = asyncio.ensure_future(client())
                conn, _ = await asyncio.wait_for(loop.sock_accept(lsock), 10)
                data = await asyncio.wait_for(loop.sock_recv(conn, 65536), 10)
                assert data[:1] == b"\x16" and data[5:6] == b"\x01"   # a ClientHello
                conn.close()
                with pytest.raises(OSError):
                    await asyncio.wait_for(task, 10)
                assert b"secret" not in data
        finally:
            lsock.close()
            stack.close()
