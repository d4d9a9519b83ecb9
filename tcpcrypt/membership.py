"""Overlay membership bound to the tcpcrypt session ID: an authentication exchange inside the
encrypted stream, before any application byte, as a sans-IO wrapper of TcpcryptSession.

Why.  tcpcrypt is unauthenticated (RFC 8548 8): a man in the middle can run one tcpcrypt
session with each end and relay.  The two sessions then have different session IDs (RFC 8548
3.4; unique over all time, RFC 8547 5.1), so each end signing its own session ID and ENO role
with a long-term key -- RFC 8547 5.1: applications "SHOULD ... authenticate the TCP endpoints
by incorporating the values of the session ID and TCP-ENO role (A or B) into higher-layer
authentication mechanisms"; draft-ietf-tcpinc-api-06 5.2, signature-based authentication --
catches the relay: it holds no member's private key and cannot make the session IDs equal.

The application-aware bit, and how we read RFC 8547 4.2 and 8.4.
  4.2 defines "a" as "an out-of-band signal through which higher-layer protocols can enable
  ENO-specific updates that would otherwise not be backwards compatible", and requires a
  "mandatory application-aware mode in which TCP-ENO is automatically disabled if the remote
  host does not set a = 1".  8.4: software implementing the enhancement "always sets a = 1
  in its own global suboption, but only activates the new behavior when the other end of
  the connection also sets a = 1"; the mandatory mode "sets a = 1 ... but also disables
  TCP-ENO entirely in the event that the other side has not also set a = 1".
  Our authentication message is exactly such a non-backwards-compatible update: it is
  application-layer bytes at the start of the stream that a legacy application would take
  as its own data (draft-ietf-tcpinc-api-06 5: check the peer's bit "before attempting to
  send authenticators that would otherwise be misinterpreted as application data").  So:
    * a private node (a provider with an identity) sets a = 1 in every SYN / SYN-ACK;
    * it runs in mandatory application-aware mode: a peer whose SYN has a = 0 (or no global
      suboption, implicitly 0x00) gets TCP-ENO disabled (RFC 8547 4.6 rule 3);
    * and, unlike 8.4's "legacy application-layer encryption" case where the fallback is
      plain TCP carrying the application's own encryption, the overlay has no encryption of
      its own, so a disabled ENO is never a fallback: encryption is required (draft-ietf-
      tcpinc-api-06 TCP_ENO_TEP_MANDATORY), the connection is reset and not one application
      byte is sent or delivered in the clear (draft-ietf-tcpinc-api-06 6: "must either fail
      or fall back to application-layer encryption").
  "a = 1 from the peer" alone proves nothing (an active attacker sets any bit); it only
  says "this peer will speak the authentication exchange".  Membership comes from the
  signature check below; the bit only prevents confusing a legacy peer with auth bytes.

The exchange (after tcpcrypt key setup, RFC 8548 3.3 or 3.5).  Each side sends, as the first
application-layer bytes of its direction of the encrypted stream (inside frames, RFC 8548
3.6), one authentication message, as soon as its keys exist (it does not wait for the
peer's), and verifies the peer's:

    offset size  field
      0     4    magic "TCMA" (0x54 0x43 0x4d 0x41)
      4     1    version = 1
      5     1    key type = 1 (Ed25519)
      6    32    the sender's Ed25519 public key (RFC 8032 5.1.5)
     38    64    Ed25519 signature (RFC 8032 5.1.6) by that key of:
                   CONTEXT | bytes 0..37 of this message | role | session ID
                 CONTEXT = b"tcpcrypt-py overlay membership v1\\0" (domain separation,
                 draft-ietf-tcpinc-api-06 5.2); role | session ID is the sender's
                 TCP_ENO_SELF_NAME (draft-ietf-tcpinc-api-06 2.1): one byte, 0 for ENO role A
                 and 1 for B (RFC 8547 4.3), then the whole session ID (RFC 8548 3.4),
                 first byte included (RFC 8547 5.1).
    = 102 bytes.

The receiver checks the magic, version and key type, the signature against TCP_ENO_PEER_NAME
(the other role's byte with its own session ID: a message reflected back to its sender
fails, its role byte being the wrong one), then ``members.check(key, peer IP address)``.  Any
failure raises PeerAuthenticationError: the endpoint resets the connection (RFC 8548 3.6
style abort), and the session's resumption chain is forgotten (draft-ietf-tcpinc-api-06 1:
after a session authentication failure "it may be prudent to purge cached session keys").

Application bytes.  ``established`` becomes True only when our message is sent and the
peer's verified; the endpoint (tcpstack/host/endpoint.py) reports a connection to the
application only then.  Bytes the application writes before that are held UNSENT, as
plaintext in this object (not encrypted, not in TCP's send buffer), and go out right after
verification; received bytes after the peer's message are delivered only after it verified.
A connection refused before verification sends nothing but key exchange, our own
authentication message and a RST.

Revocation (:func:`revoke`): after the peers file is reloaded, connections whose verified
peer is no longer admitted (removed, or its address no longer allowed) are reset, as
WireGuard drops the sessions of a removed peer; connections still authenticating are
checked against the new list when the peer's message arrives.

Silent peers (:func:`expire_unauthenticated`): a client's wait is bounded by its connect
timeout; a server's half-authenticated connections are reset by this periodic sweep.
"""
from __future__ import annotations

import logging
import struct
from typing import Any, Iterable

from tcpstack.wire.buffers import Buffer

from .errors import PeerAuthenticationError, TcpcryptError
from .identity import PUBLIC_KEY_LEN, SIGNATURE_LEN, Identity, Members, PublicKey
from .session import TcpcryptSession

__all__ = ["AUTH_MAGIC", "AUTH_VERSION", "AUTH_LEN", "CONTEXT", "build_auth_message",
           "verify_auth_message", "MemberSession", "revoke", "expire_unauthenticated"]

log = logging.getLogger(__name__)

AUTH_MAGIC = b"TCMA"
AUTH_VERSION = 1
KEY_TYPE_ED25519 = 1
CONTEXT = b"tcpcrypt-py overlay membership v1\x00"
_HEADER = struct.Struct("!4sBB")
_SIGNED_LEN = _HEADER.size + PUBLIC_KEY_LEN             # bytes 0..37, covered by the signature
AUTH_LEN = _SIGNED_LEN + SIGNATURE_LEN                   # 102


def _name(role: str, session_id: bytes) -> bytes:
    """draft-ietf-tcpinc-api-06 2.1 TCP_ENO_SELF_NAME: TCP_ENO_ROLE (0 = A, 1 = B) | session ID."""
    if role not in ("A", "B"):
        raise ValueError(f"bad ENO role {role!r}")
    return (b"\x00" if role == "A" else b"\x01") + session_id


def build_auth_message(identity: Identity, role: str, session_id: bytes) -> bytes:
    """Our authentication message for a connection where we hold ENO `role` (RFC 8547 4.3)."""
    head = _HEADER.pack(AUTH_MAGIC, AUTH_VERSION, KEY_TYPE_ED25519) + identity.public_key.raw
    return head + identity.sign(CONTEXT + head + _name(role, session_id))


def verify_auth_message(message: bytes, peer_role: str, session_id: bytes) -> PublicKey:
    """The public key that signed `message` for the peer holding `peer_role` on the session
    `session_id`; PeerAuthenticationError if malformed or the signature does not verify."""
    if len(message) != AUTH_LEN:
        raise PeerAuthenticationError(f"authentication message of {len(message)} bytes, "
                                      f"not {AUTH_LEN}")
    magic, version, ktype = _HEADER.unpack_from(message)
    if magic != AUTH_MAGIC:
        raise PeerAuthenticationError(
            f"no membership authentication message (starts {bytes(message[:4])!r}, not "
            f"{AUTH_MAGIC!r}): not an overlay member")
    if version != AUTH_VERSION:
        raise PeerAuthenticationError(f"authentication message version {version}, we speak "
                                      f"{AUTH_VERSION}")
    if ktype != KEY_TYPE_ED25519:
        raise PeerAuthenticationError(f"authentication key type {ktype} unknown (1: Ed25519)")
    key = PublicKey(bytes(message[_HEADER.size:_SIGNED_LEN]))
    signed = CONTEXT + bytes(message[:_SIGNED_LEN]) + _name(peer_role, session_id)
    if not key.verify(bytes(message[_SIGNED_LEN:]), signed):
        raise PeerAuthenticationError(
            f"bad signature by key {key.short()}... over this connection's session ID and "
            f"role {peer_role} (a man in the middle, a reflected or replayed message)")
    return key


class MemberSession:
    """A TcpcryptSession whose stream starts with the membership exchange (module docstring).

    The endpoint's StreamTransform: ``established`` is True once both authentication
    messages are through on our side: ours sent, the peer's verified and its key admitted.
    (Whether the peer admits us is known only by its next bytes or its RST: as with TLS 1.3
    client authentication, the client may see its connection open and then be reset; the
    server's application only ever sees verified clients.)"""

    def __init__(self, session: TcpcryptSession, identity: Identity, members: Members,
                 peer_address: str, peer_port: int | None = None) -> None:
        self.session = session
        self.identity = identity
        self.members = members
        self.peer_address = peer_address
        self.peer_port = peer_port
        self.peer: PublicKey | None = None       # the verified peer key
        self.peer_comment = ""
        # StreamTransform's attributes: both False until the peer is verified
        self.established = False
        self.eof_received = False
        self._verified = False
        self._auth_sent = False
        self._rx = bytearray()                   # the peer's message, until complete
        self._held: list[bytes] = []             # application bytes written before verification
        self._close_requested = False
        self._dead: TcpcryptError | None = None
        self.first_seen_unauthenticated: float | None = None   # expire_unauthenticated()

    # --- StreamTransform -----------------------------------------------------------------

    def start(self) -> bytes:
        self._check()
        out = self.session.start()
        return out + self._auth() if self.session.established else out   # resumption: keys now

    def send(self, data: Buffer) -> bytes | bytearray:
        if self._verified:
            return self.session.send(data)
        self._check()
        if self._close_requested:
            raise TcpcryptError("send() after close()")
        if data:
            self._held.append(bytes(data))        # held unsent, in plaintext, until verified
        return b""

    def close(self) -> bytes | bytearray:
        if self._verified:
            return self.session.close()
        self._check()
        self._close_requested = True              # FINp after our message and held bytes
        return b""

    def receive(self, data: bytes | memoryview) -> tuple[bytes, bytes | bytearray]:
        if self._verified:
            got = self.session.receive(data)
            self.eof_received = self.session.eof_received
            return got
        self._check()
        try:
            plaintext, out = self.session.receive(data)
            parts: list[bytes | bytearray] = [out] if out else []
            if self.session.established and not self._auth_sent:
                parts.append(self._auth())
            if plaintext:
                self._rx += plaintext
            rest = b""
            if len(self._rx) >= AUTH_LEN:
                self._verify(bytes(self._rx[:AUTH_LEN]))
                rest = bytes(self._rx[AUTH_LEN:])
                self._rx = bytearray()
                held, self._held = b"".join(self._held), []
                if held:
                    parts.append(self.session.send(held))
                if self._close_requested:
                    parts.append(self.session.close())
                self.eof_received = self.session.eof_received
            else:
                head = bytes(self._rx[:len(AUTH_MAGIC)])
                if not AUTH_MAGIC.startswith(head):      # fail at once, not after 102 bytes
                    raise PeerAuthenticationError(
                        f"no membership authentication message (starts {head!r}, not "
                        f"{AUTH_MAGIC!r}): not an overlay member")
                if self.session.eof_received:
                    raise PeerAuthenticationError("peer ended its stream (FINp) before its "
                                                  "authentication message was complete")
        except TcpcryptError as exc:
            self._fail(exc)
            raise
        return rest, (b"".join(parts) if len(parts) != 1 else parts[0])

    def peer_fin(self) -> None:
        if not self._verified:
            self._check()
            exc = PeerAuthenticationError("peer closed the connection (TCP FIN) before "
                                          "authenticating")
            self._fail(exc)
            raise exc
        self.session.peer_fin()

    def info(self) -> dict[str, Any]:
        d = self.session.info()
        d["peer"] = self.peer.text() if self.peer is not None else None
        d["peer_comment"] = self.peer_comment
        d["identity"] = self.identity.public_key.text()
        return d

    # --- the rest of TcpcryptSession's surface --------------------------------------------

    def rekey(self) -> bytes | bytearray:
        if not self._verified:   # no frame of ours may come before our auth message
            raise TcpcryptError("rekey() before the peer is authenticated")
        return self.session.rekey()

    def keepalive(self) -> bytes | bytearray:
        return self.rekey()          # RFC 8548 3.9: keep-alive is a rekey

    def forget(self) -> None:
        self.session.forget()

    def __getattr__(self, name: str) -> Any:     # session_id, role, aead, urgent_index, ...
        if name == "session":
            raise AttributeError(name)
        return getattr(self.session, name)

    # --- internals -----------------------------------------------------------------------

    def _check(self) -> None:
        if self._dead is not None:
            raise self._dead

    def _peer_role(self) -> str:
        return "B" if self.session.role == "A" else "A"

    def _auth(self) -> bytes | bytearray:
        """Our message, sealed as the first frame of our direction (keys exist)."""
        self._auth_sent = True
        sid = self.session.session_id
        assert sid is not None, "a session ID once keys exist (RFC 8548 3.4)"
        return self.session.send(build_auth_message(self.identity, self.session.role, sid))

    def _where(self) -> str:
        return (f"{self.peer_address}:{self.peer_port}" if self.peer_port is not None
                else self.peer_address)

    def _verify(self, message: bytes) -> None:
        sid = self.session.session_id
        assert sid is not None
        key = verify_auth_message(message, self._peer_role(), sid)
        reason = self.members.check(key, self.peer_address)
        if reason is not None:
            raise PeerAuthenticationError(f"peer {self._where()} not admitted: {reason}",
                                          key=key)
        member = self.members.get(key)
        self.peer = key
        self.peer_comment = member.comment if member is not None else ""
        self._verified = self.established = True
        log.info("admitted member %s%s from %s (tcpcrypt role %s, session %s...)",
                 key.text(), f" ({self.peer_comment})" if self.peer_comment else "",
                 self._where(), self.session.role, sid.hex()[:16])

    def _fail(self, exc: TcpcryptError) -> None:
        if self._dead is not None:
            return
        self._dead = exc
        self._held.clear()
        self._rx = bytearray()
        self.session.forget()      # draft-ietf-tcpinc-api-06 1: purge cached session keys
        key = getattr(exc, "key", None)
        log.warning("refused peer %s%s: %s", self._where(),
                    f" key {key.text()}" if key is not None else "", exc)

    def __repr__(self) -> str:
        who = self.peer.short() + "..." if self.peer else "unverified"
        return f"<MemberSession {self.session.role} {self._where()} {who}>"


def _endpoints_and_now(target: Any, now: float | None) -> tuple[list[Any], float | None]:
    core = getattr(target, "core", None)
    if core is not None:
        eps: Iterable[Any] = core.endpoints()
    elif hasattr(target, "endpoints"):
        eps = target.endpoints()
    else:
        eps = target
    if now is None:
        loop = getattr(target, "loop", None)
        now = loop.time() if loop is not None else getattr(core or target, "now", None)
    return list(eps), now


def _host_port(addr: Any) -> str:
    """(host, port) as host:port ([host]:port for IPv6), for log lines."""
    try:
        host, port = addr[0], addr[1]
    except (TypeError, IndexError):
        return str(addr)
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"


def _kick(target: Any, reset: list[Any]) -> None:
    kick = getattr(target, "kick", None)
    if reset and callable(kick):
        kick()       # the asyncio Stack sends the RSTs on its next flush


def expire_unauthenticated(target: Any, timeout: float, *, now: float | None = None
                           ) -> list[Any]:
    """Reset connections whose TCP (and tcpcrypt) handshake is over but whose peer has not
    completed the membership exchange within `timeout` seconds; returns them.

    A sans-IO transform has no clock, so the caller calls this periodically (e.g. every
    second): the first call that sees a connection unauthenticated stamps it, a later call
    at least `timeout` after the stamp resets it (so the bound is timeout + the period).  It
    keeps a peer that completes the key exchange and then stays silent from holding the
    connection (memory, a port) forever; the server's application never saw it.  `target`
    and `now` as for :func:`revoke`."""
    eps, now = _endpoints_and_now(target, now)
    reset: list[Any] = []
    for ep in eps:
        tr = getattr(ep, "transform", None)
        if not isinstance(tr, MemberSession) or tr.established or ep.closed:
            continue
        t = now if now is not None else ep.core.now
        if tr.first_seen_unauthenticated is None:
            tr.first_seen_unauthenticated = t
            continue
        if t - tr.first_seen_unauthenticated < timeout:
            continue
        exc = PeerAuthenticationError(
            f"peer {tr._where()} did not authenticate within {timeout:g} s")
        tr._fail(exc)
        ep.abort(t, exc)
        reset.append(ep)
    _kick(target, reset)
    return reset


def revoke(target: Any, members: Members | None = None, *, now: float | None = None
           ) -> list[Any]:
    """Reset (RST) the open connections whose verified peer `members` no longer admits.

    Call after ``members.reload()`` (SIGHUP).  Policy: a connection of a member that was
    removed, or whose address is no longer allowed for its key, is aborted with a
    PeerAuthenticationError given to its application, as WireGuard drops a removed peer's
    sessions; the others are untouched.  `target`: a tcpstack.aio.streams.Stack (its loop
    gives the time and it is kicked to send the RSTs), a StackCore, or endpoints.
    `members`: default, each connection's own list (the provider's, normally the one just
    reloaded).  Returns the endpoints reset."""
    eps, now = _endpoints_and_now(target, now)
    reset: list[Any] = []
    for ep in eps:
        tr = getattr(ep, "transform", None)
        if not isinstance(tr, MemberSession) or tr.peer is None or ep.closed:
            continue
        reason = (members if members is not None else tr.members).check(tr.peer, tr.peer_address)
        if reason is None:
            continue
        t = now if now is not None else ep.core.now
        log.warning("revoking connection %s -> %s of %s: %s", _host_port(ep.local),
                    _host_port(ep.remote), tr.peer.text(), reason)
        ep.abort(t, PeerAuthenticationError(f"membership revoked: {reason}", key=tr.peer))
        reset.append(ep)
    _kick(target, reset)
    return reset
