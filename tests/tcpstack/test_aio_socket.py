"""The stack's socket object (issue 16): get_extra_info("socket") and Server.sockets give a
StackSocket with asyncio's TransportSocket surface; TCP options map onto the connection's
TCB configuration live."""
from __future__ import annotations

import asyncio
import errno
import pickle
import socket

import pytest

from tcpstack.aio.socket import StackSocket
from tcpstack.aio.streams import Stack
from tun.memory import MemoryLink

A, B = "10.0.0.1", "10.0.0.2"


def make_pair():
    la, lb = MemoryLink.pair()
    return Stack(la, [A]), Stack(lb, [B])


class Keep(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport


async def connected():
    sa, sb = make_pair()
    accepted: list[Keep] = []

    def factory():
        p = Keep()
        accepted.append(p)
        return p
    server = await sb.create_server(factory, B, 7)
    tr, _ = await sa.create_connection(Keep, B, 7)
    while not accepted:
        await asyncio.sleep(0.01)
    return sa, sb, server, tr, accepted[0].transport


def test_transport_socket_surface():
    async def main():
        sa, sb, server, tr, peer = await connected()
        s = tr.get_extra_info("socket")
        assert isinstance(s, StackSocket) and s is tr.get_extra_info("socket")
        assert (s.family, s.type, s.proto) == (socket.AF_INET, socket.SOCK_STREAM,
                                               socket.IPPROTO_TCP)
        assert s.fileno() == -1                 # asyncio: -1 without a kernel socket
        assert s.getpeername() == (B, 7) == tr.get_extra_info("peername")
        assert s.getsockname() == tr.get_extra_info("sockname")
        s.settimeout(0)
        s.setblocking(False)
        assert s.gettimeout() == 0
        with pytest.raises(ValueError):
            s.settimeout(1.0)
        with pytest.raises(ValueError):
            s.setblocking(True)
        assert "fd=-1" in repr(s) and "raddr=('10.0.0.2', 7)" in repr(s)
        with pytest.raises(TypeError):
            pickle.dumps(s)
        assert s.getsockopt(socket.SOL_SOCKET, socket.SO_TYPE) == socket.SOCK_STREAM
        assert s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0
        # everything TransportSocket offers (its non-deprecated methods) is here
        import asyncio.trsock
        for name in ("family", "type", "proto", "fileno", "dup", "get_inheritable",
                     "shutdown", "getsockopt", "setsockopt", "getpeername", "getsockname",
                     "settimeout", "gettimeout", "setblocking"):
            assert hasattr(asyncio.trsock.TransportSocket, name) and hasattr(s, name)
        # server sockets: one per listening address, as uvicorn/aiohttp read them
        assert server.sockets[0].getsockname() == (B, 7)
        assert server.sockets[0].getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 1
        with pytest.raises(OSError) as ei:
            server.sockets[0].getpeername()
        assert ei.value.errno == errno.ENOTCONN
        tr.close(); server.close(); sa.close(); sb.close()
    asyncio.run(main())


async def test_options_map_onto_the_tcb_live_and_per_connection():
    sa, sb, server, tr, peer = await connected()
    s = tr.get_extra_info("socket")
    conn = tr.get_extra_info("endpoint").conn
    other = peer.get_extra_info("endpoint").conn
    shared_before = sa.core.config.tcp.nodelay
    assert s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 0
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    assert conn.config.nodelay is True
    assert s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
    assert sa.core.config.tcp.nodelay == shared_before and other.config.nodelay is False
    # keepalive: the timer is armed at once with the idle time set (RFC 9293 3.8.4)
    loop = asyncio.get_running_loop()
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 1)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 2)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 3)
    assert conn._t_keepalive is None
    s.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    assert conn._t_keepalive == pytest.approx(loop.time() + 1, abs=0.1)
    assert [s.getsockopt(socket.IPPROTO_TCP, o) for o in
            (socket.TCP_KEEPIDLE, socket.TCP_KEEPINTVL, socket.TCP_KEEPCNT)] == [1, 2, 3]
    await asyncio.sleep(1.3)
    assert conn.stats.keepalive_probes >= 1      # a probe really left, and was answered
    assert not tr.is_closing()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 0)
    assert conn._t_keepalive is None
    # buffers: SO_RCVBUF fixes the receive buffer (no auto-tuning), SO_SNDBUF the send one
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    assert conn.recv_buffer == 65536 and s.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) == 65536
    assert conn.config.rcvbuf_autotune is False
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, (1 << 16).to_bytes(4, "little"))
    assert conn.config.send_buffer == 65536
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, 30000)
    assert conn.config.user_timeout == 30.0
    # what the stack cannot do: ENOPROTOOPT, as the kernel for an unknown option
    for level, opt in ((socket.IPPROTO_IP, socket.IP_TOS), (socket.SOL_SOCKET, socket.SO_LINGER),
                       (socket.IPPROTO_TCP, socket.TCP_CORK)):
        with pytest.raises(OSError) as ei:
            s.setsockopt(level, opt, 1)
        assert ei.value.errno == errno.ENOPROTOOPT
        with pytest.raises(OSError) as ei:
            s.getsockopt(level, opt)
        assert ei.value.errno == errno.ENOPROTOOPT
    with pytest.raises(OSError) as ei:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 0)
    assert ei.value.errno == errno.EINVAL
    tr.close(); server.close(); sa.close(); sb.close()


async def test_nodelay_set_live_sends_what_nagle_held():
    """RFC 9293 3.7.4 (Nagle): a small segment waits while data is unacknowledged (here the
    peer delays its ACK, 40 ms); setting TCP_NODELAY on the live connection sends it at
    once, as Linux pushes pending data on TCP_NODELAY."""
    sa, sb, server, tr, peer = await connected()
    loop = asyncio.get_running_loop()
    got = bytearray()
    peer.get_protocol().data_received = got.extend
    tr.write(b"a" * 10)
    await asyncio.sleep(0.005)            # out; its ACK is delayed by the peer
    assert len(got) == 10
    tr.write(b"b" * 10)
    for _ in range(5):
        await asyncio.sleep(0)
    assert len(got) == 10                 # Nagle holds it
    t0 = loop.time()
    tr.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    while len(got) < 20:
        await asyncio.sleep(0.001)
    assert loop.time() - t0 < 0.02       # not the delayed ACK's 40 ms
    assert bytes(got) == b"a" * 10 + b"b" * 10
    tr.close(); server.close(); sa.close(); sb.close()


async def test_listening_socket_options_apply_to_accepted_connections():
    sa, sb = make_pair()
    accepted: list[asyncio.Transport] = []

    class P(asyncio.Protocol):
        def connection_made(self, transport):
            accepted.append(transport)
    server = await sb.create_server(P, B, 7)
    ls = server.sockets[0]
    ls.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    assert ls.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
    tr, _ = await sa.create_connection(asyncio.Protocol, B, 7)
    while not accepted:
        await asyncio.sleep(0.01)
    s = accepted[0].get_extra_info("socket")
    assert s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
    assert s.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
    tr.close(); server.close(); sa.close(); sb.close()


async def test_fresh_sockets_bind_and_refuse_what_is_not_theirs():
    sa, sb = make_pair()
    s = sa.socket()
    with pytest.raises(OSError) as ei:
        s.bind(("10.9.9.9", 0))
    assert ei.value.errno == errno.EADDRNOTAVAIL
    s6 = sa.socket(socket.AF_INET6)
    with pytest.raises(OSError) as ei:
        s6.bind((A, 0))
    assert ei.value.errno == errno.EAFNOSUPPORT
    with pytest.raises(OSError) as ei:
        s.getpeername()
    assert ei.value.errno == errno.ENOTCONN
    with pytest.raises(BlockingIOError):
        s.connect((B, 9))                # non-blocking connect: EINPROGRESS
    s.close()                            # aborts the attempt: nothing left behind
    await asyncio.sleep(0)
    assert sa.connections() == []
    sa.close(); sb.close()
