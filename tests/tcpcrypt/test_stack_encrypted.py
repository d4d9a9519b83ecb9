"""tcpcrypt through the whole stack (ENO in the SYNs, frames in the TCP stream), in memory.

Covers issue 3's "what must be shown" on the in-memory link: every TEP x AEAD, tampering on
the wire, resumption, simultaneous open roles by the b bit, fallback to plain TCP.
"""
from __future__ import annotations

import asyncio
import hashlib
import os

import pytest

from tcpcrypt.eno import parse_syn_option
from tcpcrypt.errors import TcpcryptError
from tcpcrypt.provider import TcpcryptProvider
from tcpcrypt.suites import AEADS, TEPS, TcpcryptConfig
from tcpstack.wire.ip import parse_ip
from tcpstack.wire.segment import SYN, ACK
from tcpstack.aio.streams import Stack
from tun.memory import MemoryLink
from tcpstack.wire.tcp import build_ip_tcp, parse_tcp

A, B = "10.0.0.1", "10.0.0.2"


def seg_of(packet: bytes):
    hdr, payload = parse_ip(packet)
    return hdr, parse_tcp(payload, hdr.src, hdr.dst)


async def echo(reader, writer):
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.close()


@pytest.mark.parametrize("aead", sorted(AEADS))
@pytest.mark.parametrize("tep", sorted(TEPS))
async def test_every_tep_and_aead_negotiates_and_moves_data(tep, aead):
    cfg = TcpcryptConfig(teps=(tep,), aeads=(aead,))
    la, lb = MemoryLink.pair()
    sa = Stack(la, [A], security=TcpcryptProvider(cfg))
    sb = Stack(lb, [B], security=TcpcryptProvider(cfg))
    await sb.start_server(echo, B, 7)
    r, w = await sa.open_connection(B, 7, require_encryption=True)
    info = w.get_extra_info("tcpcrypt")
    assert (info["tep"], info["aead"], info["role"], info["resumed"]) == (tep, aead, "A", False)
    sid = w.get_extra_info("tcpcrypt_session_id")
    assert sid[0] & 0x7F == tep       # RFC 8548 3.4: the first byte is the TEP identifier
    payload = os.urandom(200_000)
    w.write(payload)
    w.write_eof()
    assert await r.read() == payload
    w.close()
    sa.close(); sb.close()


async def collecting_pair():
    """Two stacks in memory, a server on B:7 that collects what it reads (and the error that
    ends its reading), and a client connection to it: (links, stacks, client reader/writer,
    got, errors, done)."""
    la, lb = MemoryLink.pair()
    sa, sb = Stack(la, [A]), Stack(lb, [B])
    got: list[bytes] = []
    errors: list[BaseException] = []
    done = asyncio.get_running_loop().create_future()

    async def server(reader, writer):
        try:
            while data := await reader.read(65536):
                got.append(data)
        except BaseException as exc:
            errors.append(exc)
        done.set_result(None)

    await sb.start_server(server, B, 7)
    r, w = await sa.open_connection(B, 7)
    return la, lb, sa, sb, r, w, got, errors, done


@pytest.mark.parametrize("offset", [0, 1, 2, 3, 10, 100, -17, -1])
async def test_flipping_a_bit_of_a_frame_on_the_wire_aborts_and_delivers_nothing(offset):
    """The TCP checksum is recomputed after the flip, so only tcpcrypt can notice."""
    la, lb, sa, sb, r, w, got, errors, done = await collecting_pair()
    assert w.get_extra_info("tcpcrypt_session_id") is not None
    flipped = []

    def tamper(packet: bytes) -> bytes:
        hdr, seg = seg_of(packet)
        if flipped or not len(seg.payload):
            return packet
        data = bytearray(seg.payload)
        data[offset] ^= 0x10
        seg.payload = bytes(data)
        flipped.append(offset)
        return build_ip_tcp(seg, hdr.src, hdr.dst, ttl=hdr.ttl)

    la.filter = tamper
    w.write(b"attack at dawn" * 100)
    w.write_eof()
    await asyncio.wait_for(done, 10)
    assert flipped
    assert got == []                                   # zero forged (or any) bytes delivered
    assert len(errors) == 1 and isinstance(errors[0], TcpcryptError), errors
    # the server reset the connection: the client sees it too
    with pytest.raises(ConnectionError):
        await asyncio.wait_for(r.read(), 10)
    sa.close(); sb.close()


@pytest.mark.parametrize("which", [0, 5, -1])
async def test_a_frame_spanning_many_segments_releases_nothing_before_its_tag(which):
    """One 16 KiB write, one 16 KiB frame, spans about a dozen segments.  A bit flipped
    in its first, a middle or its last segment (the tag) aborts the connection, and none of
    the frame's octets -- not even those of the untouched earlier segments -- reach the
    application: a frame is released only after its tag verifies (RFC 8548 4.2.2)."""
    la, lb, sa, sb, r, w, got, errors, done = await collecting_pair()
    held: list[bytes] = []                           # the frame's segments, as sent

    def tamper(packet: bytes):
        hdr, seg = seg_of(packet)
        if not len(seg.payload):
            return packet
        held.append(packet)
        return None                                  # hold them all: tamper, then release

    la.filter = tamper
    w.write(os.urandom(16384))
    await asyncio.sleep(0.05)
    la.filter = None
    assert 10 <= len(held) <= 14, len(held)          # one frame, about a dozen segments
    k = which if which >= 0 else len(held) + which
    hdr, seg = seg_of(held[k])
    data = bytearray(seg.payload)
    data[len(data) // 2] ^= 0x01
    seg.payload = bytes(data)
    held[k] = build_ip_tcp(seg, hdr.src, hdr.dst, ttl=hdr.ttl)
    for p in held:
        la.send(p)
    await asyncio.wait_for(done, 10)
    assert got == []                                   # not one octet of the frame
    assert len(errors) == 1 and isinstance(errors[0], TcpcryptError), errors
    sa.close(); sb.close()


async def test_resumption_skips_ecdhe_gives_a_fresh_session_id_and_is_single_use():
    la, lb = MemoryLink.pair()
    sa, sb = Stack(la, [A]), Stack(lb, [B])
    await sb.start_server(echo, B, 7)
    synacks: list[bytes] = []
    client_syns: list[bytes] = []

    def watch_b(packet: bytes) -> bytes:
        _, seg = seg_of(packet)
        if seg.flags & (SYN | ACK) == SYN | ACK:
            synacks.append(seg.eno[0] if seg.eno else b"")
        return packet

    def watch_a(packet: bytes) -> bytes:
        _, seg = seg_of(packet)
        if seg.flags & (SYN | ACK) == SYN:
            client_syns.append(packet)
        return packet

    lb.filter, la.filter = watch_b, watch_a
    sids = []
    for i in range(3):
        r, w = await sa.open_connection(B, 7)
        info = w.get_extra_info("tcpcrypt")
        assert info["resumed"] == (i > 0), (i, info)
        sids.append(w.get_extra_info("tcpcrypt_session_id"))
        w.write(b"x%d" % i)
        assert await r.readexactly(2) == b"x%d" % i
        w.close()
        await asyncio.sleep(0)
    assert len(set(sids)) == 3                       # a fresh session ID every time
    _, teps = parse_syn_option(synacks[1])
    assert teps[-1].data                             # B answered with a resumption suboption
    # Replaying the SYN that carried a resumption identifier, from a new port: B must not
    # resume with the same secret again (RFC 8548 3.5: a session secret secures one
    # connection); it answers with fresh key exchange (v = 0, no data) or no ENO at all.
    hdr, seg = seg_of(client_syns[1])
    seg.src_port = (seg.src_port + 1) | 1024
    synacks.clear()
    sb._on_packets([build_ip_tcp(seg, hdr.src, hdr.dst)])
    await asyncio.sleep(0.01)
    assert len(synacks) == 1
    if synacks[0]:
        _, teps = parse_syn_option(synacks[0])
        assert all(not t.data for t in teps)
    sa.close(); sb.close()


async def _simultaneous_open(b_bits: tuple[int | None, int | None]):
    la, lb = MemoryLink.pair()
    sa, sb = Stack(la, [A]), Stack(lb, [B])
    loop = asyncio.get_running_loop()
    ta = loop.create_task(sa.open_connection(B, 5001, local_addr=(A, 5000),
                                             passive_role_bit=b_bits[0]))
    tb = loop.create_task(sb.open_connection(A, 5000, local_addr=(B, 5001),
                                             passive_role_bit=b_bits[1]))
    (ra, wa), (rb, wb) = await asyncio.wait_for(asyncio.gather(ta, tb), 10)
    # both SYNs crossed: neither side ever saw a LISTEN state
    wa.write(b"from a")
    wb.write(b"from b")
    assert await ra.readexactly(6) == b"from b" and await rb.readexactly(6) == b"from a"
    out = (wa.get_extra_info("tcpcrypt"), wb.get_extra_info("tcpcrypt"),
           wa.get_extra_info("tcpcrypt_session_id"), wb.get_extra_info("tcpcrypt_session_id"))
    wa.close(); wb.close()
    sa.close(); sb.close()
    return out


async def test_simultaneous_open_roles_follow_the_b_bit():
    ia, ib, sida, sidb = await _simultaneous_open((0, 1))
    assert (ia["role"], ib["role"]) == ("A", "B")      # RFC 8547 4.3: b = 1 plays B
    assert sida == sidb is not None
    ia, ib, sida, sidb = await _simultaneous_open((1, 0))
    assert (ia["role"], ib["role"]) == ("B", "A")


async def test_simultaneous_open_with_the_same_b_bit_falls_back_to_plain_tcp():
    # RFC 8547 4.6 rule 3: both hosts set the same b: ENO is disabled, TCP carries on.
    ia, ib, sida, sidb = await _simultaneous_open((None, None))
    assert ia is None and ib is None and sida is None and sidb is None


async def test_plain_peer_gives_plain_tcp_with_no_session_id():
    la, lb = MemoryLink.pair()
    sa, sb = Stack(la, [A]), Stack(lb, [B], security=None)
    await sb.start_server(echo, B, 7)
    r, w = await sa.open_connection(B, 7)
    assert w.get_extra_info("tcpcrypt_session_id") is None
    assert w.get_extra_info("tcpcrypt") is None
    data = hashlib.sha256(b"x").digest() * 1000
    w.write(data)
    w.write_eof()
    assert await r.read() == data
    sa.close(); sb.close()


async def test_module_level_open_connection_and_start_server_mirror_asyncio():
    import tcpcrypt
    la, lb = MemoryLink.pair()
    sa, sb = Stack(la, [A]), Stack(lb, [B])
    server = await tcpcrypt.start_server(echo, B, 7, stack=sb)
    tcpcrypt.set_default_stack(sa)
    try:
        r, w = await tcpcrypt.open_connection(B, 7)
        w.write(b"ping")
        assert await r.readexactly(4) == b"ping"
        assert w.get_extra_info("tcpcrypt_session_id") is not None
        w.close()
    finally:
        tcpcrypt.set_default_stack(None)
    with pytest.raises(RuntimeError, match="no userspace stack"):
        await tcpcrypt.open_connection(B, 7)
    server.close()
    sa.close(); sb.close()


@pytest.mark.parametrize("late", [b"", b"late application data"])
async def test_a_fully_closed_peer_takes_the_finp_frame_but_resets_on_application_data(late):
    """RFC 1122 4.2.2.13 resets a connection when data arrives after the application closed
    it.  With tcpcrypt the peer's half-close itself carries a frame (the FINp frame, RFC 8548
    3.7, no application data): that must not count as data, or every "server closes first"
    exchange ends in a RST, and a client that has not read the reply yet loses it (asyncio's
    reader raises the reset before returning buffered bytes)."""
    la, lb = MemoryLink.pair()
    sa, sb = Stack(la, [A]), Stack(lb, [B])
    reply = os.urandom(100_000)
    rsts: list[int] = []

    def watch(packet: bytes) -> bytes:
        if seg_of(packet)[1].flags & 0x04:
            rsts.append(1)
        return packet
    lb.filter = watch

    async def server(reader, writer):
        writer.write(reply)
        writer.close()                           # full close, before the client's EOF

    await sb.start_server(server, B, 7)
    r, w = await sa.open_connection(B, 7, require_encryption=True)
    await asyncio.sleep(0.05)                    # the reply and the server's FIN are here
    if late:
        w.write(late)
    w.write_eof()                                # (late data,) the FINp frame, FIN
    await asyncio.sleep(0.05)                    # ... and whatever the server answers
    if not late:
        assert rsts == []
        assert await asyncio.wait_for(r.read(), 10) == reply    # all of it, then EOF
    else:
        # Application data after close: still a reset (RFC 1122 4.2.2.13), as for plain TCP.
        # (It meets the client in LAST-ACK, where a RST just closes, RFC 9293 3.10.7.4, and
        # the reply with its EOF had already arrived.)
        assert rsts
        assert await asyncio.wait_for(r.read(), 10) == reply
    w.close()
    sa.close(); sb.close()
