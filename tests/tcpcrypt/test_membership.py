"""Overlay membership bound to the tcpcrypt session ID (tcpcrypt/membership.py), in memory.

Two (or four) Stacks on MemoryLinks: members connect and see each other's key; a non-member,
a member at an address it may not use, a relaying man in the middle, a peer without TCP-ENO,
a peer with a = 0 and a reflected authentication message are all reset with nothing of the
application delivered; revoke() after a reload.  Sans-IO pairs (tests/tcpcrypt/sessions.py)
pin the message format, the held application bytes and RFC 8547 4.2 / 8.4 as we read them.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from tcpcrypt.eno import ENONegotiator, parse_syn_option
from tcpcrypt.errors import EncryptionRequiredError, PeerAuthenticationError, TcpcryptError
from tcpcrypt.identity import Identity, Members
from tcpcrypt.membership import (AUTH_LEN, AUTH_MAGIC, CONTEXT, MemberSession,
                                 build_auth_message, expire_unauthenticated, revoke,
                                 verify_auth_message)
from tcpcrypt.provider import TcpcryptProvider
from tcpcrypt.session import TcpcryptSession
from tcpstack.aio.streams import Stack
from tcpstack.wire.ip import parse_ip
from tcpstack.wire.segment import SYN
from tcpstack.wire.tcp import parse_tcp
from tun.memory import MemoryLink

from .sessions import PEER_OF_A, PEER_OF_B, pair

A, B = "10.0.0.1", "10.0.0.2"
PORT = 7


def seg_of(packet: bytes) -> Any:
    hdr, payload = parse_ip(packet)
    return hdr, parse_tcp(payload, hdr.src, hdr.dst)


class Capture:
    """Every packet a link sends (its filter), parsed."""

    def __init__(self, link: MemoryLink) -> None:
        self.segments: list[Any] = []
        link.filter = self._see

    def _see(self, packet: bytes) -> bytes:
        self.segments.append(seg_of(packet)[1])
        return packet

    def payload_bytes(self) -> int:
        return sum(len(s.payload) for s in self.segments)


class Server:
    """A server that records every connection its application sees and every byte."""

    def __init__(self) -> None:
        self.peers: list[Any] = []
        self.got: list[bytes] = []
        self.errors: list[BaseException] = []
        self.writers: list[asyncio.StreamWriter] = []

    async def echo(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.peers.append(writer.get_extra_info("tcpcrypt_peer"))
        self.writers.append(writer)
        try:
            while data := await reader.read(65536):
                self.got.append(data)
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError) as exc:
            self.errors.append(exc)
        writer.close()


def private(link: MemoryLink, addr: str, ident: Identity, members: Members) -> Stack:
    return Stack(link, [addr], security=TcpcryptProvider(identity=ident, members=members))


def peers_text(*entries: tuple[Identity, str]) -> str:
    return "".join(f"{i.public_key.text()} {addrs}\n" for i, addrs in entries)


async def settle(n: int = 20) -> None:
    for _ in range(n):
        await asyncio.sleep(0)
    await asyncio.sleep(0.01)


@pytest.fixture
def ids() -> tuple[Identity, Identity]:
    return Identity.generate(), Identity.generate()


# --- members -----------------------------------------------------------------------------

async def test_members_connect_and_see_each_others_key(ids, caplog) -> None:
    ia, ib = ids
    members = Members.from_text(peers_text((ia, A + " # alpha"), (ib, B)))
    la, lb = MemoryLink.pair()
    sa, sb = private(la, A, ia, members), private(lb, B, ib, members)
    srv = Server()
    await sb.start_server(srv.echo, B, PORT)
    with caplog.at_level(logging.INFO, logger="tcpcrypt.membership"):
        r, w = await sa.open_connection(B, PORT)
        assert w.get_extra_info("tcpcrypt_peer") == ib.public_key.text()
        info = w.get_extra_info("tcpcrypt")
        assert info["peer"] == ib.public_key.text()
        assert info["identity"] == ia.public_key.text()
        ep = w.get_extra_info("endpoint")
        assert isinstance(ep.transform, MemberSession)
        assert ep.transform.session.session_id == w.get_extra_info("tcpcrypt_session_id")
        payload = bytes(range(256)) * 800
        w.write(payload)
        w.write_eof()
        assert await r.read() == payload
    assert srv.peers == [ia.public_key.text()]
    admitted = [r for r in caplog.records if r.levelno == logging.INFO and "admitted" in r.message]
    assert len(admitted) == 2
    assert any(f"from {A}:" in r.message and "(alpha)" in r.message for r in admitted)
    w.close()
    sa.close(); sb.close()


async def test_private_syns_carry_a_1_rfc8547_4_2_and_non_private_has_no_wrapper(ids) -> None:
    """RFC 8547 4.2 / 8.4 as we read them: a private node sets a = 1 in its SYN and SYN-ACK;
    a stack without an identity keeps the plain TcpcryptSession (no per-byte cost)."""
    ia, ib = ids
    members = Members.of(ia, ib)
    la, lb = MemoryLink.pair()
    ca, cb = Capture(la), Capture(lb)
    sa, sb = private(la, A, ia, members), private(lb, B, ib, members)
    srv = Server()
    await sb.start_server(srv.echo, B, PORT)
    r, w = await sa.open_connection(B, PORT)
    syns = [s for s in ca.segments + cb.segments if s.flags & SYN]
    assert len(syns) == 2
    for s in syns:
        assert len(s.eno) == 1
        glob, _ = parse_syn_option(s.eno[0])
        assert glob is not None and glob.a == 1
    w.close(); sa.close(); sb.close()

    la, lb = MemoryLink.pair()
    sa, sb = Stack(la, [A]), Stack(lb, [B])
    await sb.start_server(Server().echo, B, PORT)
    r, w = await sa.open_connection(B, PORT, require_encryption=True)
    assert type(w.get_extra_info("endpoint").transform) is TcpcryptSession
    assert w.get_extra_info("tcpcrypt_peer") is None
    w.close(); sa.close(); sb.close()


async def test_resumed_connection_is_authenticated_again(ids) -> None:
    ia, ib = ids
    members = Members.of(ia, ib)
    la, lb = MemoryLink.pair()
    sa, sb = private(la, A, ia, members), private(lb, B, ib, members)
    srv = Server()
    await sb.start_server(srv.echo, B, PORT)
    sids = []
    for _ in range(2):
        r, w = await sa.open_connection(B, PORT)
        sids.append(w.get_extra_info("tcpcrypt_session_id"))
        w.write(b"ping")
        assert await r.readexactly(4) == b"ping"
        assert w.get_extra_info("tcpcrypt_peer") == ib.public_key.text()
        resumed = w.get_extra_info("tcpcrypt")["resumed"]
        w.close()
        await settle()
    assert resumed and sids[0] != sids[1]
    assert srv.peers == [ia.public_key.text()] * 2
    sa.close(); sb.close()


# --- refusals ----------------------------------------------------------------------------

async def _refused_client(client: Stack, server_stack: Stack, srv: Server,
                          capture: Capture) -> BaseException:
    """The client's view of a refused connection: connect may succeed (the client verified
    the server first), then its connection is reset; the server app saw nothing."""
    err: BaseException | None = None
    try:
        r, w = await client.open_connection(B, PORT)
        w.write(b"secret application bytes")
        await r.read()
    except (ConnectionError, OSError) as exc:
        err = exc
    await settle()
    assert srv.peers == [] and srv.got == []          # the server's application saw nothing
    assert not any(lst.accept_queue for lst in server_stack.core._listeners.values())
    assert capture.segments and any(s.flags & 0x04 for s in capture.segments)   # a RST
    assert err is not None, "the refused client's connection must fail"
    return err


async def test_non_member_is_reset_and_server_app_sees_nothing(ids, caplog) -> None:
    ia, ib = ids
    stranger = Identity.generate()
    la, lb = MemoryLink.pair()
    cap_b = Capture(lb)
    sa = private(la, A, stranger, Members.of(ib))        # the stranger trusts the server
    sb = private(lb, B, ib, Members.of(ia))               # the server does not know it
    srv = Server()
    await sb.start_server(srv.echo, B, PORT)
    with caplog.at_level(logging.WARNING):
        err = await _refused_client(sa, sb, srv, cap_b)
    assert isinstance(err, ConnectionResetError)
    refused = [r for r in caplog.records if r.name == "tcpcrypt.membership"
               and r.levelno == logging.WARNING]
    assert refused and "not in the peers file" in refused[0].message
    assert A in refused[0].message and stranger.public_key.text() in refused[0].message
    sa.close(); sb.close()


async def test_member_at_an_address_not_listed_is_reset(ids, caplog) -> None:
    ia, ib = ids
    listed = Members.from_text(peers_text((ia, "10.0.0.99, 10.9.0.0/16"), (ib, B)))
    la, lb = MemoryLink.pair()
    cap_b = Capture(lb)
    sa, sb = private(la, A, ia, listed), private(lb, B, ib, listed)
    srv = Server()
    await sb.start_server(srv.echo, B, PORT)
    with caplog.at_level(logging.WARNING):
        await _refused_client(sa, sb, srv, cap_b)
    assert any(f"may not use address {A}" in r.message for r in caplog.records
               if r.name == "tcpcrypt.membership")
    sa.close(); sb.close()


async def test_client_refuses_a_server_that_is_not_a_member(ids) -> None:
    ia, ib = ids
    la, lb = MemoryLink.pair()
    sa = private(la, A, ia, Members.of(ia))              # the server's key is unknown here
    sb = private(lb, B, ib, Members.of(ia, ib))
    srv = Server()
    await sb.start_server(srv.echo, B, PORT)
    with pytest.raises(PeerAuthenticationError, match="not in the peers file"):
        await sa.open_connection(B, PORT)
    await settle()
    assert srv.peers == []
    sa.close(); sb.close()


async def test_man_in_the_middle_relay_is_caught_on_both_legs(ids) -> None:
    """client 10.9.0.1 <-> [relay 10.9.0.2 | relay 10.9.1.1] <-> server 10.9.1.2, as in
    examples/session_auth.py: the relay terminates tcpcrypt on both legs (it sets a = 1 so
    both private ends accept ENO with it) and copies bytes, auth messages included.  Each
    message is signed over its own leg's session ID, so both checks fail."""
    ic, isrv = ids
    members = Members.of(ic, isrv)                        # any address: the signature decides
    l1, l2 = MemoryLink.pair()
    l3, l4 = MemoryLink.pair()
    cap_client = Capture(l1)
    client = private(l1, "10.9.0.1", ic, members)
    front, back = Stack(l2, ["10.9.0.2"]), Stack(l3, ["10.9.1.1"])
    server = private(l4, "10.9.1.2", isrv, members)
    srv = Server()
    await server.start_server(srv.echo, "10.9.1.2", PORT)
    leg_errors: list[BaseException] = []
    relayed: list[int] = []

    async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        ur, uw = await back.open_connection("10.9.1.2", PORT, app_aware=1)

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    relayed.append(len(data))
                    dst.write(data)
            except (ConnectionError, OSError) as exc:
                leg_errors.append(exc)
            dst.close()
        await asyncio.gather(pump(reader, uw), pump(ur, writer))

    await front.start_server(relay, "10.9.0.2", PORT, app_aware=1)
    with pytest.raises(PeerAuthenticationError, match="bad signature"):
        await asyncio.wait_for(client.open_connection("10.9.0.2", PORT), 5)
    await settle(50)
    assert srv.peers == [] and srv.got == []
    assert len(leg_errors) == 2, leg_errors           # both legs were reset
    assert all(isinstance(e, ConnectionError) for e in leg_errors)
    assert set(relayed) == {AUTH_LEN}                 # only the two auth messages ever moved
    assert any(s.flags & 0x04 for s in cap_client.segments)
    for s in (client, front, back, server):
        s.close()


async def test_peer_without_eno_is_refused_and_no_plaintext_is_sent(ids, caplog) -> None:
    ia, ib = ids
    members = Members.of(ia, ib)
    # a plain client (encrypt=False) to a private server: reset, the server sends no byte
    la, lb = MemoryLink.pair()
    cap_b = Capture(lb)
    sa, sb = Stack(la, [A]), private(lb, B, ib, members)
    srv = Server()
    await sb.start_server(srv.echo, B, PORT)
    with caplog.at_level(logging.WARNING):
        r, w = await sa.open_connection(B, PORT, encrypt=False)
        w.write(b"plain hello")
        with pytest.raises(ConnectionResetError):
            await r.read()
    await settle()
    assert srv.peers == [] and srv.got == []
    assert cap_b.payload_bytes() == 0
    assert any("refused peer" in r.message and "no ENO option" in r.message
               for r in caplog.records)
    sa.close(); sb.close()

    # a private client to a server without TCP-ENO: EncryptionRequiredError, nothing sent
    la, lb = MemoryLink.pair()
    cap_a = Capture(la)
    sa, sb = private(la, A, ia, members), Stack(lb, [B], security=None)
    srv = Server()
    await sb.start_server(srv.echo, B, PORT)
    with pytest.raises(EncryptionRequiredError):
        await sa.open_connection(B, PORT)
    await settle()
    assert cap_a.payload_bytes() == 0
    sa.close(); sb.close()


async def test_peer_with_eno_but_a_0_is_refused_both_ways_rfc8547_4_6(ids) -> None:
    """RFC 8547 4.6 rule 3 in mandatory application-aware mode: a = 0 disables ENO, and the
    private node requires encryption, so the connection is reset (never plain TCP)."""
    ia, ib = ids
    members = Members.of(ia, ib)
    la, lb = MemoryLink.pair()
    cap_b = Capture(lb)
    sa, sb = Stack(la, [A]), private(lb, B, ib, members)   # ENO with a = 0 (the default)
    srv = Server()
    await sb.start_server(srv.echo, B, PORT)
    r, w = await sa.open_connection(B, PORT)
    assert not w.get_extra_info("encrypted")             # the server's SYN-ACK had no ENO
    w.write(b"x")
    with pytest.raises(ConnectionResetError):
        await r.read()
    await settle()
    assert srv.peers == [] and cap_b.payload_bytes() == 0
    sa.close(); sb.close()

    la, lb = MemoryLink.pair()
    cap_a = Capture(la)
    sa, sb = private(la, A, ia, members), Stack(lb, [B])
    await sb.start_server(Server().echo, B, PORT)
    with pytest.raises(EncryptionRequiredError, match="a = 0"):
        await sa.open_connection(B, PORT)
    assert cap_a.payload_bytes() == 0
    sa.close(); sb.close()


async def test_aware_peer_without_an_identity_is_refused(ids) -> None:
    """a = 1 proves nothing: a peer that sets it but sends application bytes instead of an
    authentication message is reset at the first bytes (the magic)."""
    ia, ib = ids
    la, lb = MemoryLink.pair()
    sa, sb = Stack(la, [A]), private(lb, B, ib, Members.of(ia, ib))
    srv = Server()
    await sb.start_server(srv.echo, B, PORT)
    r, w = await sa.open_connection(B, PORT, app_aware=1, require_encryption=True)
    first = await r.readexactly(AUTH_LEN)                # the server's message is readable
    assert first.startswith(AUTH_MAGIC) and first[6:38] == ib.public_key.raw
    w.write(b"GET / HTTP/1.0\r\n\r\n")
    with pytest.raises(ConnectionResetError):
        await r.read()
    await settle()
    assert srv.peers == []
    sa.close(); sb.close()


async def test_reflected_auth_message_fails(ids, caplog) -> None:
    """An attacker that terminates tcpcrypt with the server sends the server's own message
    back: signed for role B, checked as role A's -- a bad signature."""
    ia, ib = ids
    la, lb = MemoryLink.pair()
    sa, sb = Stack(la, [A]), private(lb, B, ib, Members.of(ia, ib))
    srv = Server()
    await sb.start_server(srv.echo, B, PORT)
    r, w = await sa.open_connection(B, PORT, app_aware=1, require_encryption=True)
    theirs = await r.readexactly(AUTH_LEN)
    with caplog.at_level(logging.WARNING):
        w.write(theirs)
        with pytest.raises(ConnectionResetError):
            await r.read()
        await settle()
    assert srv.peers == []
    assert any("bad signature" in r.message for r in caplog.records
               if r.name == "tcpcrypt.membership")
    sa.close(); sb.close()


# --- revocation --------------------------------------------------------------------------

async def test_revoke_after_reload_resets_removed_members_only(tmp_path, ids) -> None:
    ia, ib = ids
    ic = Identity.generate()
    path = tmp_path / "peers"
    path.write_text(peers_text((ia, A), (ic, "10.0.0.3"), (ib, B)))
    server_members = Members.load(path)
    la, lb = MemoryLink.pair()
    sa = private(la, A, ia, Members.of(ib))
    sb = private(lb, B, ib, server_members)
    srv = Server()
    await sb.start_server(srv.echo, B, PORT)
    r, w = await sa.open_connection(B, PORT)
    w.write(b"hi")
    assert await r.readexactly(2) == b"hi"
    assert revoke(sb) == []                               # nothing changed yet

    path.write_text(peers_text((ic, "10.0.0.3"), (ib, B)))   # a removed
    added, removed = server_members.reload()
    assert [m.public_key for m in removed] == [ia.public_key] and added == []
    reset = revoke(sb)
    assert len(reset) == 1 and reset[0].remote[0] == A
    with pytest.raises(ConnectionResetError):
        await r.read()
    await settle()
    assert len(srv.errors) == 1 and isinstance(srv.errors[0], PeerAuthenticationError)
    assert "revoked" in str(srv.errors[0])
    # a new connection from the removed member is refused too
    with pytest.raises((ConnectionResetError, PeerAuthenticationError)):
        r2, w2 = await sa.open_connection(B, PORT)
        await r2.read()
    sa.close(); sb.close()


async def test_revoke_keeps_members_still_admitted(ids) -> None:
    ia, ib = ids
    members = Members.of(ia, ib)
    la, lb = MemoryLink.pair()
    sa, sb = private(la, A, ia, members), private(lb, B, ib, members)
    await sb.start_server(Server().echo, B, PORT)
    r, w = await sa.open_connection(B, PORT)
    assert revoke(sb) == [] and revoke(sa) == []
    w.write(b"still")
    assert await r.readexactly(5) == b"still"
    w.close(); sa.close(); sb.close()


async def test_silent_peer_is_expired_by_the_sweep(ids) -> None:
    """A peer that completes the key exchange (a = 1) and never authenticates holds a server
    connection only until expire_unauthenticated() finds it twice, `timeout` apart."""
    ia, ib = ids
    la, lb = MemoryLink.pair()
    sa, sb = Stack(la, [A]), private(lb, B, ib, Members.of(ia, ib))
    srv = Server()
    await sb.start_server(srv.echo, B, PORT)
    r, w = await sa.open_connection(B, PORT, app_aware=1, require_encryption=True)
    assert len(await r.readexactly(AUTH_LEN)) == AUTH_LEN        # silent from here on
    assert expire_unauthenticated(sb, 0.05) == []                # stamped
    assert expire_unauthenticated(sb, 0.05) == []                # not yet
    await asyncio.sleep(0.06)
    gone = expire_unauthenticated(sb, 0.05)
    assert len(gone) == 1 and gone[0].remote[0] == A
    with pytest.raises(ConnectionResetError):
        await r.read()
    assert srv.peers == []
    sa.close(); sb.close()


async def test_sweep_leaves_authenticated_connections(ids) -> None:
    ia, ib = ids
    members = Members.of(ia, ib)
    la, lb = MemoryLink.pair()
    sa, sb = private(la, A, ia, members), private(lb, B, ib, members)
    await sb.start_server(Server().echo, B, PORT)
    r, w = await sa.open_connection(B, PORT)
    w.write(b"x")
    assert await r.readexactly(1) == b"x"
    for _ in range(2):
        assert expire_unauthenticated(sb, 0) == [] and expire_unauthenticated(sa, 0) == []
    w.close(); sa.close(); sb.close()


# --- provider policy ---------------------------------------------------------------------

async def test_private_stack_refuses_options_that_turn_it_off(ids) -> None:
    ia, ib = ids
    la, lb = MemoryLink.pair()
    sa = private(la, A, ia, Members.of(ib))
    with pytest.raises(ValueError, match="private"):
        await sa.open_connection(B, PORT, encrypt=False)
    with pytest.raises(ValueError, match="private"):
        await sa.open_connection(B, PORT, mandatory_app_aware=False)
    with pytest.raises(ValueError, match="private"):
        await sa.start_server(Server().echo, A, PORT, encrypt=False)
    with pytest.raises(ValueError, match="both"):
        TcpcryptProvider(identity=ia)
    with pytest.raises(ValueError, match="both"):
        TcpcryptProvider(members=Members.of(ib))
    sa.close()


def test_private_negotiator_sets_a_1_in_mandatory_mode_rfc8547_8_4(ids) -> None:
    """RFC 8547 4.2 / 8.4: the provider forces a = 1 and mandatory mode whatever the edge
    passed (app_aware=0 is the edge's default)."""
    ia, ib = ids
    prov = TcpcryptProvider(identity=ia, members=Members.of(ib))
    for active in (True, False):
        neg = prov.negotiator(active=active, local=(A, 1), remote=(B, 2),
                              options={"app_aware": 0, "require_encryption": False})
        assert isinstance(neg, ENONegotiator)
        assert neg.app_aware == 1 and neg.mandatory_app_aware


# --- sans-IO: the message and the held bytes ---------------------------------------------

def wrap(a: TcpcryptSession, b: TcpcryptSession, ia: Identity, ib: Identity,
         members: Members) -> tuple[MemberSession, MemberSession]:
    return (MemberSession(a, ia, members, PEER_OF_A), MemberSession(b, ib, members, PEER_OF_B))


def test_message_format_and_signature_input(ids) -> None:
    ia, _ = ids
    sid = bytes(range(33))
    msg = build_auth_message(ia, "A", sid)
    assert len(msg) == AUTH_LEN == 102
    assert msg[:6] == b"TCMA\x01\x01" and msg[6:38] == ia.public_key.raw
    # the signature covers CONTEXT | header and key | TCP_ENO_SELF_NAME (role 0 = A | sid)
    assert ia.public_key.verify(msg[38:], CONTEXT + msg[:38] + b"\x00" + sid)
    assert verify_auth_message(msg, "A", sid) == ia.public_key
    with pytest.raises(PeerAuthenticationError, match="bad signature"):
        verify_auth_message(msg, "B", sid)                      # reflected: role B's check
    with pytest.raises(PeerAuthenticationError, match="bad signature"):
        verify_auth_message(msg, "A", bytes(33))                # another session
    with pytest.raises(PeerAuthenticationError, match="version"):
        verify_auth_message(msg[:4] + b"\x02" + msg[5:], "A", sid)
    with pytest.raises(PeerAuthenticationError, match="not an overlay member"):
        verify_auth_message(b"XXXX" + msg[4:], "A", sid)
    with pytest.raises(PeerAuthenticationError, match="101 bytes"):
        verify_auth_message(msg[:-1], "A", sid)


def test_application_bytes_are_held_unsent_until_the_peer_is_verified(ids) -> None:
    ia, ib = ids
    a0, b0 = pair()                                            # keys in place, nothing sent
    a, b = wrap(a0, b0, ia, ib, Members.of(ia, ib))
    wa = a.start()
    wb = b.start()                                             # keys exist: auth messages
    assert not a.established and not b.established
    with pytest.raises(TcpcryptError, match="before the peer is authenticated"):
        a.rekey()
    assert a.send(b"early bytes from A") == b""                # held unsent
    assert a.close() == b""                                    # FINp deferred too
    assert a0.frames_sent == 1 and b0.frames_sent == 1         # only the auth messages
    pt, out = b.receive(wa)                                    # B verifies A
    assert b.established and pt == b"" and out == b""
    assert b.send(b"reply") != b""                             # B is free to send now
    pt, out = a.receive(wb)                                    # A verifies B: held bytes go
    assert a.established and pt == b""
    assert a0.frames_sent == 3                                 # held data + FINp
    got, _ = b.receive(out)
    assert got == b"early bytes from A" and b.eof_received
    assert b.rekey() != b""                                    # verified: rekeying is fine
    assert a.peer == ib.public_key and b.peer == ia.public_key
    assert a.info()["peer"] == ib.public_key.text()


def test_nothing_is_delivered_before_verification_and_failure_kills(ids) -> None:
    ia, ib = ids
    a0, b0 = pair()
    a, b = wrap(a0, b0, ia, ib, Members.of(ib))                # A is not a member
    wa, wb = a.start(), b.start()
    wa += a0.send(b"app bytes hidden behind the auth message")  # as if unwrapped
    with pytest.raises(PeerAuthenticationError, match="not in the peers file") as ei:
        b.receive(wa)
    assert ei.value.key == ia.public_key
    with pytest.raises(PeerAuthenticationError):                # dead from now on
        b.send(b"x")
    with pytest.raises(PeerAuthenticationError):
        b.receive(b"")
    assert not b.established and b.peer is None


def test_fin_before_auth_is_an_authentication_error(ids) -> None:
    ia, ib = ids
    a0, b0 = pair()
    a, b = wrap(a0, b0, ia, ib, Members.of(ia, ib))
    b.start()
    with pytest.raises(PeerAuthenticationError, match="FIN"):
        b.peer_fin()
    a0b, b0b = pair()
    a, b = wrap(a0b, b0b, ia, ib, Members.of(ia, ib))
    b.start()
    with pytest.raises(PeerAuthenticationError, match="FINp"):
        b.receive(a0b.send(b"TCM") + a0b.close())                # half a message, then FINp


def test_auth_message_split_across_segments(ids) -> None:
    ia, ib = ids
    a0, b0 = pair()
    a, b = wrap(a0, b0, ia, ib, Members.of(ia, ib))
    wa = a.start()
    b.start()
    for i in range(len(wa)):
        pt, _ = b.receive(wa[i:i + 1])
        assert pt == b""
    assert b.established

