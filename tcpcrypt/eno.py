"""TCP-ENO, the TCP Encryption Negotiation Option (RFC 8547), as a sans-IO negotiator.

Implements RFC 8547 sections 4.1-4.8: the SYN-form and non-SYN-form option contents (4.1),
the global suboption with its "b" and "a" bits (4.2), the A/B roles (4.3), length bytes
(4.4), the negotiated TEP (4.5), the handshake rules (4.6), the SYN-data rule (4.7, see
:func:`must_discard_syn_data`) and the negotiation transcript (4.8).  The API knobs follow
draft-ietf-tcpinc-api-06 section 2.1 (TCP_ENO_TEPS -> ``offers``, TCP_ENO_SELF_GOPT ->
``app_aware``/``passive_role_bit``, TCP_ENO_AA_MANDATORY -> ``mandatory_app_aware``; the
read-only ones are fields of :class:`ENOResult`).

The TCP connection drives an :class:`ENONegotiator` (it never parses ENO itself):

* ``syn_options()`` for every SYN / SYN-ACK it builds (retransmissions included);
* ``nonsyn_options()`` for every non-SYN segment it builds while ``active``;
* ``on_receive(flags, eno)`` for every acceptable segment while ``active`` (for a SYN,
  before building the SYN-ACK);
* ``on_syn_retransmit(attempt)`` before retransmitting a SYN.

Outcome timing.  ``result`` / ``disabled_reason`` are final as soon as ``done`` is True,
which happens when the first ACK segment is received (RFC 8547 4.6: after that, nothing
can disable ENO any more) or when ENO is disabled.  ``active`` may stay True a little
longer: 4.6 requires a host to keep putting ENO in every segment until it receives a
non-SYN segment, so an active opener keeps adding an empty non-SYN ENO option to its
segments (and the TCB keeps calling us) until the peer's first non-SYN segment arrives.
The TCB/endpoint must therefore look at ``result`` when TCP reaches ESTABLISHED, not wait
for ``active`` to fall: host A (normally the client) speaks first in tcpcrypt.

Data in SYN segments (4.7): this stack never sends data in a SYN (it has no API for it,
which satisfies "MUST disable the use of data in SYN-only segments by default"), and no
TEP we implement (tcpcrypt, RFC 8548) defines SYN data, so data received in any SYN that
carries an ENO option MUST be discarded and not acknowledged; see
:func:`must_discard_syn_data`, which the TCB consults.

SYN retransmissions (4.6 first exception): an active opener MAY remove ENO between SYN
retransmissions, to get through middleboxes that drop segments with unknown options.
Policy knob ``drop_after_syn_retransmits`` (default 2): the original SYN and the first N
retransmissions carry ENO; from retransmission N+1 on ENO is disabled (plain TCP).
``None`` never drops it; 0 sends ENO only in the original SYN.

The "a" bit: RFC 8547 defines ONE application-aware bit (figure 5: 000 z1 z2 z3 a b), so
``app_aware`` is 0 or 1.  (Earlier drafts had a two-bit "aa" field; the RFC is the
authority here.)  The z bits are sent as 0 and ignored on receipt (reported in
:class:`GlobalSuboption` for logs only).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Sequence

from tcpstack.wire.segment import ACK, RST, SYN
from tcpstack.wire.tcp import ENO_KIND     # 69, RFC 8547 11 table 2: the wire layer parses the option

from .errors import ENOError

log = logging.getLogger(__name__)

TEP_MIN = 0x20                # RFC 8547 3 / 4.1 table 1: TEP identifiers are 0x20-0x7f
TEP_MAX = 0x7F
TEP_EXPERIMENTAL = 0x20       # RFC 8547 11, table 3
TEP_RESERVED_EXTENDED = range(0x70, 0x80)   # RFC 8547 11, table 3: reserved for extended ids
MAX_LENGTH_BYTE_DATA = 32     # RFC 8547 4.4: a length byte designates 1..32 bytes
MAX_SYN_PAYLOAD = 38          # 40 bytes of TCP option space minus kind and length (4.4)

V_BIT = 0x80                  # the "v" bit of an initial suboption byte (figure 4)
_LEN_BASE = 0x80              # length byte: 100nnnnn (figure 6)


@dataclass(frozen=True)
class GlobalSuboption:
    """The global suboption byte, RFC 8547 4.2 figure 5: ``000 z1 z2 z3 a b``.

    ``z`` holds the three reserved bits (z1 z2 z3 as bits 2..0 of a 3-bit value); they MUST
    be zero when sent and are ignored when received (kept here only for logs).
    """
    b: int = 0
    a: int = 0
    z: int = 0

    def __post_init__(self) -> None:
        if self.b not in (0, 1) or self.a not in (0, 1) or not 0 <= self.z <= 7:
            raise ValueError(f"invalid global suboption fields b={self.b} a={self.a} z={self.z}")

    @property
    def byte(self) -> int:
        return (self.z << 2) | (self.a << 1) | self.b

    @classmethod
    def from_byte(cls, value: int) -> "GlobalSuboption":
        if not 0 <= value < TEP_MIN:
            raise ValueError(f"{value:#04x} is not a global suboption byte (0x00-0x1f)")
        return cls(b=value & 1, a=(value >> 1) & 1, z=(value >> 2) & 7)


IMPLICIT_GLOBAL = GlobalSuboption()   # RFC 8547 4.2: no explicit global suboption = 0x00


@dataclass(frozen=True)
class TEPOffer:
    """One TEP suboption: identifier ``tep`` (0x20-0x7f) and its suboption data.

    ``v`` is the suboption's "v" bit (RFC 8547 4.1 figure 4); it is forced to True when
    ``data`` is non-empty.  ``v=True`` with empty data only exists as the LAST suboption of
    an option (4.4: its data extends to the end of the option, here zero bytes); it matters
    because the session ID's first byte repeats B's "v" bit (5.1).
    """
    tep: int
    data: bytes = b""
    v: bool = False

    def __post_init__(self) -> None:
        if not TEP_MIN <= self.tep <= TEP_MAX:
            raise ValueError(f"TEP identifier {self.tep:#x} outside 0x20-0x7f (RFC 8547 4.1)")
        if not isinstance(self.data, bytes):
            object.__setattr__(self, "data", bytes(self.data))
        if self.data and not self.v:
            object.__setattr__(self, "v", True)

    @property
    def byte(self) -> int:
        """The initial suboption byte: ``v | glt``."""
        return self.tep | V_BIT if self.v else self.tep


# --- option contents: RFC 8547 4.1, 4.2, 4.4 -----------------------------------------------

def encode_syn_option(global_: GlobalSuboption | None, teps: Sequence[TEPOffer]) -> bytes:
    """Contents (after kind and length) of a SYN-form ENO option (RFC 8547 4.1 figure 2).

    The global suboption, when given, goes first; ``None`` leaves the implicit 0x00 (4.2).
    A suboption with data that is not last gets a length byte (4.4 figure 6/7); the last
    one's data runs to the end of the option.  Raises ValueError for what cannot be encoded
    (data over 32 bytes or an empty-data v=1 suboption not in last position, reserved z
    bits set, or contents over the 38 bytes a TCP header can hold).
    """
    out = bytearray()
    if global_ is not None:
        if global_.z:
            raise ValueError("global suboption z bits MUST be zero when sent (RFC 8547 4.2)")
        out.append(global_.byte)
    last = len(teps) - 1
    for i, sub in enumerate(teps):
        if not sub.v:
            out.append(sub.tep)
        elif i == last:
            out.append(sub.tep | V_BIT)
            out += sub.data
        else:
            n = len(sub.data)
            if not 1 <= n <= MAX_LENGTH_BYTE_DATA:
                raise ValueError(f"TEP {sub.tep:#x}: {n} data bytes cannot be encoded with a "
                                 "length byte (1..32, RFC 8547 4.4); put it last")
            out.append(_LEN_BASE | (n - 1))
            out.append(sub.tep | V_BIT)
            out += sub.data
    if len(out) > MAX_SYN_PAYLOAD:
        raise ValueError(f"ENO option contents of {len(out)} bytes exceed the {MAX_SYN_PAYLOAD} "
                         "bytes of TCP option space")
    return bytes(out)


def parse_syn_option(payload: bytes) -> tuple[GlobalSuboption | None, tuple[TEPOffer, ...]]:
    """Parse SYN-form ENO option contents (RFC 8547 4.1-4.4).

    Returns the FIRST global suboption (None if there is none: the implicit 0x00 applies;
    later ones are ignored, 4.2) and the TEP suboptions in order.  TEP identifiers this
    host does not know (including the reserved 0x70-0x7f) are returned as they are; they
    simply never become valid.  Raises ENOError for an ill-formed option (4.4): a length
    byte whose data would run past the end of the option, or a length byte not followed by
    an octet >= 0xa0 (a TEP identifier with v = 1).
    """
    mv = memoryview(payload)
    n = len(mv)
    global_: GlobalSuboption | None = None
    teps: list[TEPOffer] = []
    i = 0
    while i < n:
        c = mv[i]
        if c < TEP_MIN:                       # v=0, glt 0x00-0x1f: global suboption (4.2)
            if global_ is None:
                global_ = GlobalSuboption.from_byte(c)
            i += 1
        elif c < V_BIT:                          # v=0, glt >= 0x20: TEP without data
            teps.append(TEPOffer(c))
            i += 1
        elif c < V_BIT | TEP_MIN:                # v=1, glt < 0x20: length byte (4.4)
            length = (c & 0x1F) + 1
            if i + 1 >= n:
                raise ENOError(f"ENO length byte {c:#04x} at offset {i} ends the option "
                               "(RFC 8547 4.4)")
            t = mv[i + 1]
            if t < V_BIT | TEP_MIN:
                raise ENOError(f"ENO length byte {c:#04x} at offset {i} is followed by {t:#04x}, "
                               "not a TEP identifier with v = 1 (RFC 8547 4.4 rule 2)")
            end = i + 2 + length
            if end > n:
                raise ENOError(f"ENO length byte {c:#04x} at offset {i}: {length} data bytes run "
                               f"past the end of the {n}-byte option (RFC 8547 4.4 rule 1)")
            teps.append(TEPOffer(t & 0x7F, bytes(mv[i + 2:end]), True))
            i = end
        else:                                 # v=1, glt >= 0x20: data to the end of option
            teps.append(TEPOffer(c & 0x7F, bytes(mv[i + 1:]), True))
            i = n
    return global_, tuple(teps)


def option_bytes(payload: bytes) -> bytes:
    """The whole TCP option as it appears in the header: kind 69, length, contents (fig 1)."""
    return bytes((ENO_KIND, len(payload) + 2)) + payload


def transcript(a_payload: bytes, b_payload: bytes) -> bytes:
    """RFC 8547 4.8: host A's ENO option then host B's, each with kind and length bytes."""
    return option_bytes(a_payload) + option_bytes(b_payload)


def must_discard_syn_data(eno: tuple[bytes, ...]) -> bool:
    """RFC 8547 4.7: must the payload of a received SYN carrying these ENO options be dropped?

    The data of a SYN+ENO segment may only be kept when its SYN TEP becomes the negotiated
    TEP AND that TEP defines SYN data.  No TEP of this stack (tcpcrypt) defines SYN data,
    so any SYN with an ENO option has its data discarded, even when ENO is disabled by
    configuration: acknowledge only the ISN and process data from non-SYN segments only.
    """
    return bool(eno)


# --- the negotiation ---------------------------------------------------------------------

@dataclass(frozen=True)
class ENOResult:
    """What a successful TCP-ENO negotiation yields (RFC 8547 4, 4.5, 4.8)."""
    tep: int                 # negotiated TEP: last valid TEP identifier in B's SYN-form option
    role: str                # "A" or "B" (4.3)
    local_data: bytes        # our suboption data for the negotiated TEP (b"" if none)
    peer_data: bytes         # the peer's suboption data for the negotiated TEP
    transcript: bytes        # 4.8: A's ENO option then B's, with kind and length bytes
    local_app_aware: int     # our "a" bit (4.2)
    peer_app_aware: int      # the peer's "a" bit (0 if it sent no global suboption)
    local_offers: tuple[TEPOffer, ...]
    peer_offers: tuple[TEPOffer, ...]
    # The byte B sent for the negotiated TEP, "v" bit included: first byte of the session
    # ID (5.1; draft-ietf-tcpinc-api-06 TCP_ENO_NEGTEP).  -1 = derive from B's data.
    tep_byte: int = -1

    def __post_init__(self) -> None:
        if self.tep_byte < 0:
            b_data = self.local_data if self.role == "B" else self.peer_data
            object.__setattr__(self, "tep_byte", self.tep | V_BIT if b_data else self.tep)


Respond = Callable[[tuple[TEPOffer, ...]], Sequence[TEPOffer]]
Validate = Callable[[TEPOffer, TEPOffer], bool]


@dataclass(slots=True)
class _Pending:
    tep: int
    a_sub: TEPOffer
    b_sub: TEPOffer


class ENONegotiator:
    """One connection's TCP-ENO handshake (RFC 8547 4.6), driven by the TCB.

    offers            -- this host's TEP suboptions, in order of increasing priority
                         (draft-ietf-tcpinc-api-06 TCP_ENO_TEPS; empty = ENO disabled)
    active            -- True for an active opener (connect), False for a passive one
    app_aware         -- our "a" bit, 0 or 1 (RFC 8547 4.2)
    mandatory_app_aware -- disable ENO unless the peer sets a = 1 (4.2, 4.6 rule 3); sets
                         our own a = 1 (8.4)
    passive_role_bit  -- the "b" bit; default 0 for active openers, 1 for passive ones, which
                         MUST use 1 (4.2, 4.3).  Set 1 on one side of a simultaneous open.
    respond           -- passive opener only: called with the TEP suboptions of the peer's
                         SYN, returns the suboptions for our SYN-ACK (increasing priority);
                         empty = decline.  Default: the highest-priority offer the peer also
                         sent, alone (4.5 SHOULD).
    validate          -- validate(a_sub, b_sub): are host A's suboption a_sub and host B's
                         b_sub (same TEP id) valid together for the TEP (4.5 rules 2 and 3,
                         e.g. RFC 8548 3.5 "MUST ignore" a mismatched resumption suboption)?
                         Default: always valid.
    drop_after_syn_retransmits -- see the module docstring (4.6 first exception).
    """

    __slots__ = ("offers", "is_active_opener", "app_aware", "mandatory_app_aware", "b",
                 "respond", "validate", "drop_after_syn_retransmits",
                 "active", "done", "result", "disabled_reason",
                 "local_payload", "peer_payload", "peer_global", "peer_offers",
                 "_pending", "_received_ack")

    def __init__(self, offers: Sequence[TEPOffer], *, active: bool, app_aware: int = 0,
                 mandatory_app_aware: bool = False, passive_role_bit: int | None = None,
                 respond: Respond | None = None, validate: Validate | None = None,
                 drop_after_syn_retransmits: int | None = 2) -> None:
        if app_aware not in (0, 1):
            raise ValueError(f"app_aware must be 0 or 1 (RFC 8547 4.2 has one 'a' bit), "
                             f"not {app_aware!r}")
        if passive_role_bit is None:
            passive_role_bit = 0 if active else 1
        if passive_role_bit not in (0, 1):
            raise ValueError(f"passive_role_bit must be 0 or 1, not {passive_role_bit!r}")
        if not active and passive_role_bit != 1:
            raise ValueError("a passive opener MUST set b = 1 (RFC 8547 4.2)")
        if drop_after_syn_retransmits is not None and drop_after_syn_retransmits < 0:
            raise ValueError("drop_after_syn_retransmits must be None or >= 0")
        self.offers: tuple[TEPOffer, ...] = tuple(offers)
        self.is_active_opener = active
        self.mandatory_app_aware = mandatory_app_aware
        self.app_aware = 1 if mandatory_app_aware else app_aware     # RFC 8547 8.4
        self.b = passive_role_bit
        self.respond = respond
        self.validate = validate
        self.drop_after_syn_retransmits = drop_after_syn_retransmits

        self.active = True                  # ENO options still to be sent / segments examined
        self.done = False                   # outcome (result or disabled_reason) is final
        self.result: ENOResult | None = None
        self.disabled_reason: str | None = None
        self.local_payload: bytes | None = None   # our SYN-form option contents
        self.peer_payload: bytes | None = None    # the peer's SYN-form option contents
        self.peer_global: GlobalSuboption | None = None   # TCP_ENO_PEER_GOPT
        self.peer_offers: tuple[TEPOffer, ...] = ()
        self._pending: _Pending | None = None
        self._received_ack = False

        if not self.offers and not (respond is not None and not active):
            self._disable("no TEP configured (draft-ietf-tcpinc-api-06 TCP_ENO_TEPS empty)")
        elif active:
            self.local_payload = encode_syn_option(self._local_global(), self.offers)

    # --- helpers ---------------------------------------------------------------------

    def _local_global(self) -> GlobalSuboption | None:
        g = GlobalSuboption(b=self.b, a=self.app_aware)
        # RFC 8547 4.2: an absent global suboption means 0x00; passive openers MUST send it.
        return None if g.byte == 0 and self.is_active_opener else g

    def _disable(self, reason: str) -> None:
        """RFC 8547 4.6: disable encryption, send no further ENO option, plain TCP."""
        if self.done:
            return
        log.info("TCP-ENO disabled: %s", reason)
        self.disabled_reason = reason
        self.result = None
        self.active = False
        self.done = True

    def _valid(self, a_sub: TEPOffer, b_sub: TEPOffer) -> bool:
        return a_sub.tep == b_sub.tep and (self.validate is None or self.validate(a_sub, b_sub))

    def _negotiate(self, a_teps: Sequence[TEPOffer], b_teps: Sequence[TEPOffer]) -> _Pending | None:
        """RFC 8547 4.5: the last valid TEP identifier in B's SYN-form option.

        Valid = both sides sent a suboption for it (rule 1) and ``validate`` accepts the pair
        (rules 2, 3).  Among several A suboptions with that id, the last valid one is used.
        """
        for b_sub in reversed(b_teps):
            for a_sub in reversed(a_teps):
                if self._valid(a_sub, b_sub):
                    return _Pending(b_sub.tep, a_sub, b_sub)
        return None

    def _default_response(self, peer_teps: tuple[TEPOffer, ...]) -> tuple[TEPOffer, ...]:
        for mine in reversed(self.offers):           # highest priority first
            for theirs in reversed(peer_teps):
                if self._valid(theirs, mine):
                    return (mine,)
        return ()

    # --- the TCB interface -----------------------------------------------------------

    def syn_options(self) -> tuple[bytes, ...]:
        """ENO option contents for the SYN or SYN-ACK about to be sent (4.6: never altered
        between retransmissions, nor between SYN and SYN-ACK of a simultaneous open)."""
        if not self.active or self.local_payload is None:
            return ()
        return (self.local_payload,)

    def nonsyn_options(self) -> tuple[bytes, ...]:
        """One empty non-SYN-form ENO option (4.1 figure 3) while 4.6 requires one."""
        return (b"",) if self.active else ()

    def on_syn_retransmit(self, attempt: int) -> None:
        """The TCB is about to retransmit its SYN for the `attempt`-th time (1 = first)."""
        if (self.active and self.is_active_opener and self.peer_payload is None
                and self.drop_after_syn_retransmits is not None
                and attempt > self.drop_after_syn_retransmits):
            # RFC 8547 4.6: an active opener MAY disable ENO between SYN-only retransmissions.
            self._disable(f"ENO removed from SYN retransmission {attempt} (policy: after "
                          f"{self.drop_after_syn_retransmits} retransmissions, RFC 8547 4.6)")

    def on_receive(self, flags: int, eno: tuple[bytes, ...]) -> None:
        """An acceptable segment with these control bits and ENO option contents arrived."""
        if not self.active or flags & RST:
            return                  # a reset ends the connection: nothing to negotiate
        if flags & SYN:
            self._on_syn(eno)
            if flags & ACK and not self.done:
                self._on_first_ack()
            return
        if not self._received_ack and not eno:
            # 4.6 rule 1: every segment up to and including the first received ACK.
            self._disable("peer's first ACK segment carries no ENO option (RFC 8547 4.6)")
            return
        if self.peer_payload is None:
            self._disable("non-SYN segment before the peer's SYN (RFC 8547 4.6)")
            return
        # 4.1: the contents of non-SYN-form options are ignored by ENO itself.
        if flags & ACK:
            self._on_first_ack()
        # 4.6: ENO goes in every segment we send until we receive a non-SYN segment.
        if self.done:
            self.active = False

    def _on_syn(self, eno: tuple[bytes, ...]) -> None:
        if self.done:
            # Outcome already final (e.g. a retransmitted SYN-ACK after we ACKed it).
            if self.result is not None and eno != (self.peer_payload,):
                log.warning("ignoring altered ENO option in a late SYN segment (RFC 8547 4.6)")
            return
        if len(eno) != 1:
            self._disable("peer's SYN carries no ENO option" if not eno else
                          f"peer's SYN carries {len(eno)} ENO options: treated as none "
                          "(RFC 8547 4.1)")
            return
        payload = eno[0]
        if self.peer_payload is not None:
            if payload != self.peer_payload:
                self._disable("peer altered its SYN-form ENO option between SYN segments "
                              "(RFC 8547 4.6)")
            return
        try:
            peer_global, peer_teps = parse_syn_option(payload)
        except ENOError as exc:
            self._disable(f"ill-formed SYN-form ENO option: {exc}")
            return
        self.peer_payload = payload
        self.peer_global = peer_global
        self.peer_offers = peer_teps
        g = peer_global or IMPLICIT_GLOBAL
        if g.b == self.b:
            # 4.6 rule 3 / 4.3 (also catches middleboxes echoing our own option, 8.1).
            self._disable(f"both hosts set b = {self.b}: no A/B roles (RFC 8547 4.3)")
            return
        if self.mandatory_app_aware and not g.a:
            self._disable("mandatory application-aware mode and the peer set a = 0 "
                          "(RFC 8547 4.2, 4.6 rule 3)")
            return
        if not peer_teps:
            self._disable("peer sent a vacuous ENO option: no valid TEP (RFC 8547 4.6)")
            return
        we_are_b = self.b == 1
        if not self.is_active_opener:
            # Passive opener (always B): choose now, before the SYN-ACK is built (4.5).
            response = (tuple(self.respond(peer_teps)) if self.respond is not None
                        else self._default_response(peer_teps))
            pending = self._negotiate(peer_teps, response) if response else None
            if pending is None:
                # Figure 10 case 2: no common TEP, so no ENO option in the SYN-ACK.
                self._disable("no TEP in common with the peer's SYN (RFC 8547 4.6 rule 2)")
                return
            self.local_payload = encode_syn_option(self._local_global(), response)
            self.offers = response
        elif self.local_payload is None:
            self._disable("peer's SYN arrived before we had an ENO option to send")
            return
        else:
            # Active opener: SYN-ACK of a normal open, or SYN of a simultaneous open.
            pending = (self._negotiate(self.offers, peer_teps) if not we_are_b
                       else self._negotiate(peer_teps, self.offers))
            if pending is None:
                self._disable("no valid TEP in common (RFC 8547 4.5, 4.6 rule 2)")
                return
        self._pending = pending

    def _on_first_ack(self) -> None:
        """The first received ACK segment carried ENO: the outcome is now final (4.6)."""
        if self._received_ack:
            return
        self._received_ack = True
        p = self._pending
        if p is None or self.local_payload is None or self.peer_payload is None:
            self._disable("peer's first ACK segment arrived before a complete SYN exchange")
            return
        role = "B" if self.b else "A"
        a_payload, b_payload = ((self.local_payload, self.peer_payload) if role == "A"
                                else (self.peer_payload, self.local_payload))
        local_sub, peer_sub = (p.a_sub, p.b_sub) if role == "A" else (p.b_sub, p.a_sub)
        pg = self.peer_global or IMPLICIT_GLOBAL
        self.result = ENOResult(
            tep=p.tep, role=role, local_data=local_sub.data, peer_data=peer_sub.data,
            transcript=transcript(a_payload, b_payload), local_app_aware=self.app_aware,
            peer_app_aware=pg.a, local_offers=self.offers, peer_offers=self.peer_offers,
            tep_byte=p.b_sub.byte)
        self.done = True
        log.debug("TCP-ENO negotiated TEP %#04x, role %s", p.tep, role)

    def __repr__(self) -> str:
        state = ("negotiating" if not self.done else
                 f"tep={self.result.tep:#04x} role={self.result.role}" if self.result else
                 f"disabled ({self.disabled_reason})")
        return f"<ENONegotiator {'active' if self.is_active_opener else 'passive'} {state}>"
