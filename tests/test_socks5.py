"""SOCKS5 (RFC 1928, RFC 1929) on the overlay node, in memory: the parser's verdict on every
kind of malformed message, and the node answering a kernel client on loopback with the
right reply code while nothing reaches the stack (two Stacks over tun.memory.MemoryLink)."""
from __future__ import annotations

import asyncio
import struct

import pytest

from tcpstack.aio.streams import Stack
from tcpstack.overlay import socks5
from tcpstack.overlay.config import Listen, NodeConfig
from tcpstack.overlay.node import Node, socks5_reply_for
from tcpstack.overlay.socks5 import Socks5Error, parse_greeting, parse_request, parse_userpass
from tun.memory import MemoryLink

A, B = "10.0.0.1", "10.0.0.2"


# --- the parser ---------------------------------------------------------------------------

def test_greeting():
    assert parse_greeting(b"\x05") is None
    assert parse_greeting(b"\x05\x02\x00") is None            # one method still to come
    assert parse_greeting(b"\x05\x02\x00\x02rest") == ([0, 2], 4)
    with pytest.raises(Socks5Error) as e:
        parse_greeting(b"\x04\x01\x00\x50")                   # SOCKS4
    assert e.value.reply is None
    with pytest.raises(Socks5Error) as e:
        parse_greeting(b"GET / HTTP/1.1\r\n")
    assert e.value.reply is None
    with pytest.raises(Socks5Error):
        parse_greeting(b"\x05\x00")                           # no method at all
    assert socks5.select_method([0], False) == 0
    assert socks5.select_method([2], False) == 0xFF           # RFC 1928 3: X'FF'
    assert socks5.select_method([0], True) == 0xFF            # password required
    assert socks5.select_method([0, 2], True) == 2


def test_userpass():
    assert parse_userpass(b"\x01\x05alice\x06") is None
    assert parse_userpass(b"\x01\x05alice\x06secret") == ((b"alice", b"secret"), 14)
    with pytest.raises(Socks5Error):
        parse_userpass(b"\x05\x05alice\x06secret")            # RFC 1929 2: VER is 1
    users = {b"alice": b"secret"}
    assert socks5.check_password(users, b"alice", b"secret")
    assert not socks5.check_password(users, b"alice", b"secreT")
    assert not socks5.check_password(users, b"bob", b"secret")


@pytest.mark.parametrize("msg, rep", [
    (b"\x04\x01\x00\x01\x0a\x00\x00\x02\x00\x50", socks5.REP_GENERAL_FAILURE),     # VER 4
    (b"\x05\x02\x00\x01\x0a\x00\x00\x02\x00\x50", socks5.REP_COMMAND_NOT_SUPPORTED),  # BIND
    (b"\x05\x03\x00\x01\x0a\x00\x00\x02\x00\x50", socks5.REP_COMMAND_NOT_SUPPORTED),  # UDP
    (b"\x05\x09\x00\x01\x0a\x00\x00\x02\x00\x50", socks5.REP_COMMAND_NOT_SUPPORTED),  # unknown
    (b"\x05\x01\x00\x02\x0a\x00\x00\x02\x00\x50", socks5.REP_ADDRESS_TYPE_NOT_SUPPORTED),
    (b"\x05\x01\x00\x05" + bytes(18), socks5.REP_ADDRESS_TYPE_NOT_SUPPORTED),
    (b"\x05\x01\x00\x03\x00\x00\x50", socks5.REP_GENERAL_FAILURE),                  # empty name
    (b"\x05\x01\x00\x03\x03\xff\xfe\xfd\x00\x50", socks5.REP_HOST_UNREACHABLE),     # not ASCII
    (b"\x05\x01\x00\x03\x03a/b\x00\x50", socks5.REP_HOST_UNREACHABLE),
    (b"\x05\x01\x00\x01\x0a\x00\x00\x02\x00\x00", socks5.REP_GENERAL_FAILURE),     # port 0
])
def test_malformed_request_reply_code(msg, rep):
    with pytest.raises(Socks5Error) as e:
        parse_request(msg)
    assert e.value.reply == rep


def test_request_forms():
    assert parse_request(b"\x05\x01\x00\x01\x0a\x00\x00") is None
    r, n = parse_request(b"\x05\x01\x00\x01\x0a\x00\x00\x02\x1f\x90xyz")
    assert (r.host, r.port, n) == ("10.0.0.2", 8080, 10)
    r, _ = parse_request(b"\x05\x01\x00\x04" + bytes(15) + b"\x01\x00\x16")
    assert (r.host, r.port, r.atyp) == ("::1", 22, socks5.ATYP_IPV6)
    r, _ = parse_request(socks5.build_request("example.org", 443))
    assert (r.host, r.port, r.atyp) == ("example.org", 443, socks5.ATYP_DOMAIN)
    r, _ = parse_request(b"\x05\x01\x00\x03\x05[::1]\x00\x16")
    assert r.host == "::1"
    assert parse_request(b"\x05\x01\x00\x03\x0bexample.org\x01") is None
    assert socks5.reply(0, ("10.0.0.1", 4000)) == b"\x05\x00\x00\x01\x0a\x00\x00\x01\x0f\xa0"
    assert socks5.reply(5) == b"\x05\x05\x00\x01" + bytes(6)
    assert socks5.reply(0, ("fd00::1", 1))[3] == socks5.ATYP_IPV6


def test_reply_for_errors():
    from tcpstack.errors import ConnectionRefusedByPeerError, HostUnreachableError
    assert socks5_reply_for(ConnectionRefusedByPeerError()) == 0x05
    # the stack's wording (tcpstack/host/stack.py, icmp.describe)
    hu = "ICMP destination-unreachable/1 from 10.0.0.1 for ('10.0.0.2', 80)"
    assert socks5_reply_for(HostUnreachableError(hu)) == 0x04
    assert socks5_reply_for(HostUnreachableError(hu.replace("/1", "/0"))) == 0x03
    assert socks5_reply_for(HostUnreachableError(hu.replace("destination-unreachable/1",
                                                            "time-exceeded/0"))) == 0x06
    from tcpcrypt.errors import EncryptionRequiredError
    assert socks5_reply_for(EncryptionRequiredError("plain peer")) == 0x02
    assert socks5_reply_for(TimeoutError()) == 0x04
    assert socks5_reply_for(OSError("?")) == 0x01


# --- the node, in memory ------------------------------------------------------------------

async def _node(users=None):
    la, lb = MemoryLink.pair()
    sa, sb = Stack(la, [A]), Stack(lb, [B])
    reached = []

    async def on_b(r, w):                  # B's service on the stack: echo
        reached.append(w.get_extra_info("peername"))
        while data := await r.read(65536):
            w.write(data)
            await w.drain()
        w.close()
    await sb.start_server(on_b, None, 7)
    node = Node(sa, NodeConfig(socks5=Listen("127.0.0.1", 0), socks5_users=users or {},
                               connect_timeout=2.0))
    await node.start()
    return node, sa, sb, reached


def w_sid(stack):
    """The session ID of the stack's one connection (the far end of the bridge)."""
    (ep,) = [e for e in stack.core.endpoints() if e.established]
    return ep.info["tcpcrypt_session_id"].hex()


async def _exchange(node, *msgs, read=None):
    r, w = await asyncio.open_connection(*node.socks5_address)
    for m in msgs:
        w.write(m)
    await w.drain()
    try:
        got = await asyncio.wait_for(r.read(read or 4096) if read else r.read(), 5)
        if not read:
            return got
        return got
    finally:
        w.close()


@pytest.mark.parametrize("request_, rep", [
    (b"\x05\x02\x00\x01\x0a\x00\x00\x02\x00\x07", 0x07),     # BIND
    (b"\x05\x03\x00\x01\x0a\x00\x00\x02\x00\x07", 0x07),     # UDP ASSOCIATE
    (b"\x05\x01\x00\x07\x0a\x00\x00\x02\x00\x07", 0x08),     # ATYP 7
    (b"\x05\x01\x00\x04" + bytes(15) + b"\x01\x00\x07", 0x08),   # IPv6 on an IPv4 stack
    (b"\x05\x01\x00\x03\x00\x00\x07", 0x01),                 # empty domain name
    (socks5.build_request("no-such-host.invalid", 7), 0x04),
    (socks5.build_request(B, 9), 0x05),                      # nothing listens: RST
])
async def test_node_refuses_with_reply_code_and_forwards_nothing(request_, rep):
    node, sa, sb, reached = await _node()
    try:
        got = await _exchange(node, b"\x05\x01\x00", request_)
        assert got[:2] == b"\x05\x00"                         # no-auth selected
        assert got[2:] == socks5.reply(rep)                   # then the REP code, and EOF
        assert reached == []
        assert node.registry.total == 0
    finally:
        await node.close()
        sa.close()
        sb.close()


async def test_node_no_acceptable_method_and_bad_password():
    node, sa, sb, reached = await _node({b"alice": b"secret"})
    try:
        assert await _exchange(node, b"\x05\x01\x00") == b"\x05\xff"
        got = await _exchange(node, b"\x05\x01\x02", b"\x01\x05alice\x05wrong",
                              socks5.build_request(B, 7))
        assert got == b"\x05\x02\x01\x01"                     # RFC 1929: status 1, closed
        assert await _exchange(node, b"\x04\x01\x00\x07\x0a\x00\x00\x02\x00") == b""
        assert reached == [] and node.registry.total == 0
        # the right password: CONNECT, then the echo service through the stack
        r, w = await asyncio.open_connection(*node.socks5_address)
        w.write(b"\x05\x01\x02" + b"\x01\x05alice\x06secret" + socks5.build_request(B, 7)
                + b"early data")                              # sent before the reply
        assert await r.readexactly(4) == b"\x05\x02\x01\x00"
        head = await r.readexactly(10)
        assert head[:4] == b"\x05\x00\x00\x01" and head[4:8] == bytes([10, 0, 0, 1])
        assert await r.readexactly(10) == b"early data"
        w.close()
    finally:
        await node.close()
        sa.close()
        sb.close()


async def test_node_connect_by_domain_name_literal_and_stats():
    node, sa, sb, reached = await _node()
    try:
        r, w = await asyncio.open_connection(*node.socks5_address)
        w.write(b"\x05\x01\x00" + socks5.build_request("localhost", 7)[:4]
                + b"\x08" + B.encode() + struct.pack("!H", 7))
        assert await r.readexactly(2) == b"\x05\x00"
        assert (await r.readexactly(10))[1] == 0
        w.write(b"ping")
        assert await r.readexactly(4) == b"ping"
        snap = node.snapshot()
        assert snap["services"] == [f"socks5 127.0.0.1:{node.socks5_address[1]}"]
        (b,) = snap["bridges"]
        assert b["kind"] == "socks5" and b["target"] == f"{B}:7"
        assert b["stack"]["remote"] == f"{B}:7" and b["stack"]["local"].startswith(f"{A}:")
        assert b["kernel"]["local"] == f"127.0.0.1:{node.socks5_address[1]}"
        assert b["kernel"]["remote"] == "127.0.0.1:%d" % w.get_extra_info("sockname")[1]
        assert b["bytes_to_stack"] == 4 and b["bytes_to_kernel"] == 4
        assert b["encrypted"] and b["session_id"] == w_sid(sb)
        assert b["tcpcrypt_peer"] is None
        w.close()
    finally:
        await node.close()
        sa.close()
        sb.close()


async def test_node_connect_ipv6_literal():
    la, lb = MemoryLink.pair()
    sa, sb = Stack(la, ["fd00::1"]), Stack(lb, ["fd00::2"])

    async def on_b(r, w):
        w.write(await r.read(100))
        w.close()
    await sb.start_server(on_b, None, 7)
    node = Node(sa, NodeConfig(socks5=Listen("127.0.0.1", 0)))
    await node.start()
    try:
        r, w = await asyncio.open_connection(*node.socks5_address)
        w.write(b"\x05\x01\x00" + socks5.build_request("fd00::2", 7) + b"six")   # ATYP 4
        assert await r.readexactly(2) == b"\x05\x00"
        head = await r.readexactly(22)
        assert head[:4] == b"\x05\x00\x00\x04"                  # BND.ADDR is IPv6
        assert await r.read() == b"six"
        w.close()
        # an IPv4 address on an IPv6-only stack: X'08'
        got = await _exchange(node, b"\x05\x01\x00", socks5.build_request("10.0.0.2", 7))
        assert got == b"\x05\x00" + socks5.reply(socks5.REP_ADDRESS_TYPE_NOT_SUPPORTED)
    finally:
        await node.close()
        sa.close()
        sb.close()
