"""Tests of tcpcrypt/eno.py: TCP-ENO (RFC 8547) option codec and handshake negotiator.

The negotiation tests drive two ENONegotiator objects through a tiny fake TCB: each
"segment" is (flags, eno option contents), built and delivered in exactly the order a
TCB would call syn_options / nonsyn_options / on_receive.
"""
from __future__ import annotations

import pytest
from hypothesis import assume, given, strategies as st

from tcpcrypt.eno import (ENO_KIND, ENONegotiator, ENOResult, GlobalSuboption, TEPOffer,
                          encode_syn_option, must_discard_syn_data, option_bytes,
                          parse_syn_option, transcript)
from tcpcrypt.errors import ENOError, TcpcryptError
from tcpstack.wire.segment import ACK, PSH, RST, SYN

# Symbolic TEPs of RFC 8547 section 6 instantiated with concrete identifiers.  The RFC
# leaves X, Y, Z abstract; any ids in 0x20-0x6f do.  We use tcpcrypt's (RFC 8548 7, table
# 4): X = 0x21 (ECDHE-P256), Y = 0x23 (ECDHE-Curve25519), Z = 0x24 (ECDHE-Curve448).
X, Y, Z = 0x21, 0x23, 0x24

Seg = tuple[int, tuple[bytes, ...]]


# --- fake TCB -------------------------------------------------------------------------------

def syn(n: ENONegotiator) -> Seg:
    return (SYN, n.syn_options())


def synack(n: ENONegotiator) -> Seg:
    return (SYN | ACK, n.syn_options())


def ack(n: ENONegotiator, flags: int = ACK) -> Seg:
    return (flags, n.nonsyn_options() if n.active else ())


def deliver(n: ENONegotiator, seg: Seg) -> None:
    if n.active:                       # the TCB only calls us while active
        n.on_receive(*seg)


def three_way(a: ENONegotiator, b: ENONegotiator) -> tuple[Seg, Seg, Seg]:
    """SYN, SYN-ACK, ACK between active opener `a` and passive opener `b`."""
    s1 = syn(a)
    deliver(b, s1)
    s2 = synack(b)
    deliver(a, s2)
    s3 = ack(a)
    deliver(b, s3)
    return s1, s2, s3


def pair(a_offers=(X, Y), b_offers=(X, Y), **kw) -> tuple[ENONegotiator, ENONegotiator]:
    a = ENONegotiator([TEPOffer(t) for t in a_offers], active=True, **kw.get("a", {}))
    b = ENONegotiator([TEPOffer(t) for t in b_offers], active=False, **kw.get("b", {}))
    return a, b


# --- option format: RFC 8547 4.1, 4.2, 4.4 and the IANA tables --------------------------------

def test_table2_option_kind_is_69() -> None:
    # Table 2: kind 69, length N (the whole option: kind + length + contents, figure 1).
    assert ENO_KIND == 69
    assert option_bytes(b"") == b"\x45\x02"              # figure 3 with N = 0
    assert option_bytes(bytes([X, Y])) == b"\x45\x04\x21\x23"


@pytest.mark.parametrize("byte,expect", [
    # Figure 4 / table 1: v (bit 7) and glt (bits 6..0).
    (0x00, (GlobalSuboption(), ())),                     # glt 0x00-0x1f, v=0: global suboption
    (0x1F, (GlobalSuboption(b=1, a=1, z=7), ())),        # highest global suboption value
    (0x20, (None, (TEPOffer(0x20),))),                   # glt 0x20-0x7f, v=0: TEP, no data
    (0x7F, (None, (TEPOffer(0x7F),))),                   # reserved extended id: still a TEP id
    (0xA0, (None, (TEPOffer(0x20, b"", v=True),))),      # glt>=0x20, v=1, last: data to end (0 B)
    (0xFF, (None, (TEPOffer(0x7F, b"", v=True),))),
])
def test_table1_initial_suboption_bytes(byte: int, expect) -> None:
    assert parse_syn_option(bytes([byte])) == expect


@pytest.mark.parametrize("byte", range(0x80, 0xA0))
def test_table1_length_bytes_alone_are_ill_formed(byte: int) -> None:
    # glt 0x00-0x1f with v=1 is a length byte (table 1); alone, it announces data beyond the
    # end of the option (4.4 rule 1).
    with pytest.raises(ENOError):
        parse_syn_option(bytes([byte]))


def test_figure5_global_suboption_bits() -> None:
    # Figure 5: 0 0 0 z1 z2 z3 a b.
    assert GlobalSuboption(b=1).byte == 0x01
    assert GlobalSuboption(a=1).byte == 0x02
    assert GlobalSuboption(b=1, a=1).byte == 0x03
    # z bits are received and ignored (kept only for logs): 0x1d = 000 111 0 1.
    g = GlobalSuboption.from_byte(0x1D)
    assert (g.b, g.a, g.z) == (1, 0, 7)
    # ... and MUST be zero when sent.
    with pytest.raises(ValueError):
        encode_syn_option(GlobalSuboption(z=1), [TEPOffer(X)])


def test_global_suboption_only_first_counts() -> None:
    # 4.2: "A receiver MUST ignore all but the first suboption in this range".
    g, teps = parse_syn_option(bytes([0x01, X, 0x02, Y, 0x00]))
    assert g == GlobalSuboption(b=1)
    assert teps == (TEPOffer(X), TEPOffer(Y))


def test_figure6_7_length_byte() -> None:
    # Figure 6: length byte = 100nnnnn with nnnnn = len - 1; figure 7: length byte, TEP byte
    # with v=1 (0x80 | 0x21 = 0xa1), then nnnnn+1 data bytes.  A suboption with data that is
    # not last needs it (4.4); the last one's data runs to the end of the option.
    teps = [TEPOffer(X, b"abc"), TEPOffer(Y, b"zz")]
    wire = encode_syn_option(None, teps)
    assert wire == bytes([0x80 | (3 - 1), 0x80 | X]) + b"abc" + bytes([0x80 | Y]) + b"zz"
    assert wire == bytes.fromhex("82a1616263a37a7a")
    assert parse_syn_option(wire) == (None, tuple(teps))
    # A last suboption introduced by a length byte (not the compact form) parses the same.
    assert parse_syn_option(bytes.fromhex("82a1616263")) == (None, (TEPOffer(X, b"abc"),))
    # Length-byte limits: 1..32 bytes.
    assert encode_syn_option(None, [TEPOffer(X, b"\x07" * 32), TEPOffer(Y)])[:2] == b"\x9f\xa1"
    with pytest.raises(ValueError):
        encode_syn_option(None, [TEPOffer(X, b"\x07" * 33), TEPOffer(Y)])
    with pytest.raises(ValueError):        # v=1 with no data cannot be announced by a length byte
        encode_syn_option(None, [TEPOffer(X, v=True), TEPOffer(Y)])
    # The last suboption may exceed 32 bytes (4.4): 36 bytes of data + TEP byte.
    big = TEPOffer(X, bytes(range(36)))
    assert parse_syn_option(encode_syn_option(GlobalSuboption(), [big])) == (GlobalSuboption(), (big,))
    with pytest.raises(ValueError):        # but not beyond the 40-byte TCP option space
        encode_syn_option(GlobalSuboption(), [TEPOffer(X, bytes(37))])


@pytest.mark.parametrize("payload,why", [
    (bytes([0x80]), "length byte ends the option"),
    (bytes([0x81, 0xA1, 0x00]), "2 data bytes announced, 1 present (4.4 rule 1)"),
    (bytes([0x9F, 0xA1]) + bytes(31), "32 announced, 31 present"),
    (bytes([0x80, X, 0x00]), "followed by a TEP byte with v=0 (4.4 rule 2)"),
    (bytes([0x80, 0x01, 0x00]), "followed by a global suboption (0x00-0x1f)"),
    (bytes([0x80, 0x85, 0xA1, 0x00]), "followed by another length byte (0x80-0x9f)"),
    (bytes([X, 0x80, 0x9F, 0x00]), "length byte after a valid TEP, then 0x9f"),
])
def test_ill_formed_options_raise(payload: bytes, why: str) -> None:
    with pytest.raises(ENOError) as ei:
        parse_syn_option(payload)
    assert isinstance(ei.value, TcpcryptError)


def test_vacuous_and_empty_options() -> None:
    assert parse_syn_option(b"") == (None, ())                      # implicit global 0x00
    assert parse_syn_option(b"\x01") == (GlobalSuboption(b=1), ())  # vacuous B option
    assert encode_syn_option(None, []) == b""


def test_tep_offer_validation() -> None:
    with pytest.raises(ValueError):
        TEPOffer(0x1F)
    with pytest.raises(ValueError):
        TEPOffer(0x80)
    assert TEPOffer(X, b"d").v is True and TEPOffer(X, b"d").byte == 0xA1
    assert TEPOffer(X) == TEPOffer(X, b"") and TEPOffer(X).byte == X


_tep_ids = st.integers(0x20, 0x7F)


@st.composite
def _options(draw):
    """Encodable (global, teps): non-last data 1..32 bytes, last anything, total <= 38."""
    g = draw(st.none() | st.builds(GlobalSuboption, b=st.integers(0, 1), a=st.integers(0, 1)))
    n = draw(st.integers(0, 6))
    teps = []
    for i in range(n):
        tep = draw(_tep_ids)
        if i == n - 1:
            data = draw(st.binary(max_size=12))
            v = bool(data) or draw(st.booleans())
        else:
            data = draw(st.one_of(st.just(b""), st.binary(min_size=1, max_size=5)))
            v = bool(data)
        teps.append(TEPOffer(tep, data, v))
    # RFC 8547 4.4 sizes: a global byte; per non-last TEP 1 byte, or 2 + data with a length
    # byte; the last TEP 1 + data.  The option body holds at most 38 bytes.
    size = (g is not None) + sum(1 + (1 + len(t.data) if t.data else 0) for t in teps[:-1]) \
        + (1 + len(teps[-1].data) if teps else 0)
    assume(size <= 38)
    return g, tuple(teps)


@given(_options())
def test_roundtrip_encode_parse(opt) -> None:
    g, teps = opt
    wire = encode_syn_option(g, teps)
    assert parse_syn_option(wire) == (g, teps)
    # and the canonical encoding is reproduced from the parse
    assert encode_syn_option(*parse_syn_option(wire)) == wire


@given(st.binary(max_size=40))
def test_parse_arbitrary_bytes_never_crashes(payload: bytes) -> None:
    try:
        g, teps = parse_syn_option(payload)
    except ENOError:
        return
    assert all(0x20 <= t.tep <= 0x7F for t in teps)
    assert g is None or 0 <= g.byte < 0x20


# --- RFC 8547 section 6 examples, byte for byte ------------------------------------------------

def test_figure9_three_way_handshake_success() -> None:
    # (1) A -> B SYN ENO<X,Y>   (2) B -> A SYN-ACK ENO<b=1,Y>   (3) A -> B ACK ENO<>
    a, b = pair(a_offers=(X, Y), b_offers=(Y,))
    s1, s2, s3 = three_way(a, b)
    # A sends no explicit global suboption (implicit 0x00, b = 0): contents X Y.
    assert s1 == (SYN, (bytes([X, Y]),))
    # B: global suboption b=1 (0x01), then its single chosen TEP Y.
    assert s2 == (SYN | ACK, (bytes([0x01, Y]),))
    # Third segment: one empty non-SYN-form option (figure 3, N = 0).
    assert s3 == (ACK, (b"",))
    # Transcript (4.8) = A's option 45 04 21 23, then B's 45 04 01 23.
    expect = bytes.fromhex("45042123" "45040123")
    for n, role in ((a, "A"), (b, "B")):
        r = n.result
        assert r is not None and n.done
        assert (r.tep, r.role, r.transcript) == (Y, role, expect)
        assert r.tep_byte == Y
    assert a.result.local_offers == (TEPOffer(X), TEPOffer(Y)) == b.result.peer_offers
    assert b.result.local_offers == (TEPOffer(Y),) == a.result.peer_offers
    # B received a non-SYN segment: done.  A keeps ENO in its segments until it receives one
    # (4.6), and its result is available already.
    assert not b.active
    assert a.active and a.nonsyn_options() == (b"",)
    deliver(a, (ACK | PSH, ()))       # B's first data segment: no ENO needed any more
    assert not a.active and a.nonsyn_options() == ()
    assert a.result.tep == Y


def test_default_passive_choice_is_highest_priority_common_tep() -> None:
    # B's offers are in increasing priority; A's order does not influence the choice (4.5).
    a, b = pair(a_offers=(Z, X, Y), b_offers=(Y, X, 0x22))
    s1, s2, _ = three_way(a, b)
    assert s2[1] == (bytes([0x01, X]),)          # 4.5: B SHOULD include only one TEP
    assert a.result.tep == b.result.tep == X


@pytest.mark.parametrize("case", ["no_eno_peer", "no_common_tep", "aa_mandatory", "stripped"])
def test_figure10_11_failed_negotiations(case: str) -> None:
    # Figure 10: (1) SYN ENO<X,Y>  (2) SYN-ACK  (3) ACK: plain TCP.
    if case == "no_eno_peer":                    # 1. B does not support TCP-ENO
        a, _ = pair()
        s1 = syn(a)
        s2: Seg = (SYN | ACK, ())
        deliver(a, s2)
        assert a.disabled_reason == "peer's SYN carries no ENO option"
        assert ack(a) == (ACK, ())
    else:
        if case == "no_common_tep":              # 2. no TEP in common: no ENO in SYN-ACK
            a, b = pair(a_offers=(X, Y), b_offers=(Z,))
        elif case == "aa_mandatory":             # 3. B in mandatory application-aware mode
            a, b = pair(b={"mandatory_app_aware": True})
        else:                                    # figure 11: B answers, the path strips it
            a, b = pair(a_offers=(X, Y), b_offers=(X,))
        s1 = syn(a)
        deliver(b, s1)
        s2 = synack(b)
        if case == "stripped":
            assert s2 == (SYN | ACK, (bytes([0x01, X]),))
            s2 = (SYN | ACK, ())
        else:
            assert s2 == (SYN | ACK, ()) and b.result is None and not b.active
        deliver(a, s2)
        s3 = ack(a)
        assert s3 == (ACK, ())                   # A omits ENO from segment 3 ...
        deliver(b, s3)                           # ... which tells B negotiation failed
        assert b.result is None and b.done and not b.active
        assert b.disabled_reason
        if case == "stripped":
            assert "first ACK" in b.disabled_reason
    assert a.result is None and a.done and not a.active and a.syn_options() == ()
    assert "no ENO" in a.disabled_reason


def test_disabled_reasons_are_specific() -> None:
    a, b = pair(a_offers=(X,), b_offers=(Z,))
    deliver(b, syn(a))
    assert "no TEP in common" in b.disabled_reason
    a, b = pair(b={"mandatory_app_aware": True})
    deliver(b, syn(a))
    assert "application-aware" in b.disabled_reason


def test_mandatory_app_aware_both_sides_set_a() -> None:
    a, b = pair(a={"app_aware": 1}, b={"mandatory_app_aware": True})
    s1, s2, _ = three_way(a, b)
    assert s1[1] == (bytes([0x02, X, Y]),)       # explicit global: a=1, b=0
    assert s2[1] == (bytes([0x03, Y]),)          # mandatory mode sets our a=1 too (8.4)
    assert (a.result.local_app_aware, a.result.peer_app_aware) == (1, 1)
    assert (b.result.local_app_aware, b.result.peer_app_aware) == (1, 1)


def test_mandatory_app_aware_on_active_side() -> None:
    a, b = pair(a={"mandatory_app_aware": True})
    s1, s2, s3 = three_way(a, b)
    assert s2[1] == (bytes([0x01, Y]),)          # B's a = 0
    assert a.result is None and "application-aware" in a.disabled_reason
    assert s3 == (ACK, ()) and b.result is None


def test_figure12_simultaneous_open_b_bit_roles() -> None:
    # (1) A -> B SYN ENO<Y,X>          (2) B -> A SYN ENO<b=1,X,Y,Z>
    # (3) A -> B SYN-ACK ENO<Y,X>      (4) B -> A SYN-ACK ENO<b=1,X,Y,Z>
    a = ENONegotiator([TEPOffer(Y), TEPOffer(X)], active=True)
    b = ENONegotiator([TEPOffer(X), TEPOffer(Y), TEPOffer(Z)], active=True, passive_role_bit=1)
    s1, s2 = syn(a), syn(b)
    assert s1 == (SYN, (bytes([Y, X]),))
    assert s2 == (SYN, (bytes([0x01, X, Y, Z]),))
    deliver(b, s1)
    deliver(a, s2)
    s3, s4 = synack(a), synack(b)
    # 4.6: a SYN-ACK repeats the host's SYN-form option unchanged.
    assert s3 == (SYN | ACK, s1[1]) and s4 == (SYN | ACK, s2[1])
    assert not a.done and not b.done             # nothing final before the first ACK
    deliver(b, s3)
    deliver(a, s4)
    # Last valid TEP in B's option: Z is not A's, so Y.  Transcript: A's option, then B's.
    expect = bytes([69, 4, Y, X, 69, 6, 0x01, X, Y, Z])
    assert (a.result.role, b.result.role) == ("A", "B")
    assert a.result.tep == b.result.tep == Y
    assert a.result.transcript == b.result.transcript == expect
    # Both keep sending ENO until a non-SYN segment arrives (4.6).
    s5, s6 = ack(a), ack(b)
    assert s5 == s6 == (ACK, (b"",))
    deliver(a, s6)
    deliver(b, s5)
    assert not a.active and not b.active and a.result.tep == Y


@pytest.mark.parametrize("bit", [0, 1])
def test_simultaneous_open_same_b_disables(bit: int) -> None:
    a = ENONegotiator([TEPOffer(X)], active=True, passive_role_bit=bit)
    b = ENONegotiator([TEPOffer(X)], active=True, passive_role_bit=bit)
    s1, s2 = syn(a), syn(b)
    deliver(b, s1)
    deliver(a, s2)
    for n in (a, b):
        assert n.result is None and not n.active
        assert f"both hosts set b = {bit}" in n.disabled_reason
        # 4.6 second exception: the SYN-ACK of a simultaneous open may carry no ENO.
        assert synack(n) == (SYN | ACK, ())


def test_active_opener_with_b1_to_passive_opener_fails() -> None:
    # 4.3: an active opener configured with b = 1 meeting a passive opener: plain TCP.
    a, b = pair(a={"passive_role_bit": 1})
    s1, s2, s3 = three_way(a, b)
    assert s1[1] == (bytes([0x01, X, Y]),)
    assert s2 == (SYN | ACK, ()) and s3 == (ACK, ())
    assert a.result is None and b.result is None
    assert "b = 1" in b.disabled_reason


def test_middlebox_echoing_syn_option_disables() -> None:
    # 8.1: a load balancer echoing A's SYN option back: same b, role negotiation fails.
    a, _ = pair()
    s1 = syn(a)
    deliver(a, (SYN | ACK, s1[1]))
    assert a.result is None and "both hosts set b = 0" in a.disabled_reason


def test_multiple_tep_in_synack_last_valid_wins() -> None:
    # 4.5: negotiated TEP = last valid TEP id in B's SYN-form option.  B = 01 X Y Z 22 with
    # A offering X, Y only: Z and 0x22 are not A's, so Y.
    a, _ = pair(a_offers=(X, Y))
    syn(a)
    deliver(a, (SYN | ACK, (bytes([0x01, X, Y, Z, 0x22]),)))
    assert a.result.tep == Y and a.result.role == "A"
    # Respond with several TEPs through respond(): B computes the same.
    b = ENONegotiator([TEPOffer(X)], active=False,
                      respond=lambda peer: [TEPOffer(Y), TEPOffer(X), TEPOffer(Z)])
    deliver(b, (SYN, (bytes([X, Y]),)))
    assert synack(b) == (SYN | ACK, (bytes([0x01, Y, X, Z]),))
    deliver(b, (ACK, (b"",)))
    assert b.result.tep == X


def test_multiple_eno_options_in_syn_treated_as_none() -> None:
    # 4.1: more than one ENO option in a SYN: behave as if none, disable encryption.
    _, b = pair()
    deliver(b, (SYN, (bytes([X]), bytes([Y]))))
    assert b.result is None and not b.active and synack(b) == (SYN | ACK, ())
    assert "2 ENO options" in b.disabled_reason
    a, _ = pair()
    syn(a)
    deliver(a, (SYN | ACK, (bytes([0x01, X]), bytes([0x01, X]))))
    assert a.result is None and ack(a) == (ACK, ())


def test_multiple_eno_options_in_nonsyn_count_as_one() -> None:
    a, b = pair()
    deliver(b, syn(a))
    synack(b)
    deliver(b, (ACK, (b"", b"\x99")))
    assert b.result is not None and b.result.tep == Y


def test_ill_formed_syn_option_disables() -> None:
    _, b = pair()
    deliver(b, (SYN, (bytes([X, 0x80]),)))
    assert b.result is None and "ill-formed" in b.disabled_reason
    assert synack(b) == (SYN | ACK, ())
    a, _ = pair()
    syn(a)
    deliver(a, (SYN | ACK, (bytes([0x01, 0x81, 0xA3, 0x00]),)))
    assert a.result is None and "ill-formed" in a.disabled_reason and ack(a) == (ACK, ())


def test_vacuous_option_from_peer_disables() -> None:
    a, b = pair()
    deliver(b, (SYN, (b"",)))              # A's vacuous option: no valid TEP (4.6)
    assert b.result is None and "vacuous" in b.disabled_reason
    syn(a)
    deliver(a, (SYN | ACK, (b"\x01",)))    # B's vacuous option (with b = 1)
    assert a.result is None and "vacuous" in a.disabled_reason


def test_eno_stripped_from_third_segment_b_disables() -> None:
    a, b = pair()
    s1 = syn(a)
    deliver(b, s1)
    deliver(a, synack(b))
    assert a.result is not None            # A's outcome is final at the SYN-ACK (4.6)
    s3 = ack(a)
    assert s3 == (ACK, (b"",))
    deliver(b, (ACK, ()))                  # middlebox removed it
    assert b.result is None and not b.active
    assert b.disabled_reason == "peer's first ACK segment carries no ENO option (RFC 8547 4.6)"


def test_lost_third_segment_data_segment_carries_eno() -> None:
    # A keeps ENO in every segment until it receives a non-SYN one, so its first data
    # segment also carries ENO and B can conclude from it.
    a, b = pair()
    deliver(b, syn(a))
    deliver(a, synack(b))
    ack(a)                                 # lost
    deliver(b, ack(a, ACK | PSH))
    assert b.result is not None and b.result.tep == a.result.tep == Y


def test_nonsyn_option_contents_ignored() -> None:
    # 4.1: non-SYN-form contents MUST be ignored (a TEP may give them meaning).
    a, b = pair()
    deliver(b, syn(a))
    synack(b)
    deliver(b, (ACK, (b"tep-specific",)))
    assert b.result is not None


def test_respond_callback() -> None:
    # tcpcrypt answers a resumption suboption with its own (RFC 8548 3.5).
    seen = []

    def respond(peer):
        seen.append(peer)
        return [TEPOffer(X, b"B-half-and-nonce")]

    a = ENONegotiator([TEPOffer(Y), TEPOffer(X, b"A-half-nonce")], active=True)
    b = ENONegotiator([], active=False, respond=respond)
    s1, s2, _ = three_way(a, b)
    assert seen == [(TEPOffer(Y), TEPOffer(X, b"A-half-nonce"))]
    assert s1[1] == (bytes([Y, 0x80 | X]) + b"A-half-nonce",)
    assert s2[1] == (bytes([0x01, 0x80 | X]) + b"B-half-and-nonce",)
    for n in (a, b):
        assert n.result.tep == X and n.result.tep_byte == 0xA1   # 5.1: B's v bit kept
    assert (a.result.local_data, a.result.peer_data) == (b"A-half-nonce", b"B-half-and-nonce")
    assert (b.result.local_data, b.result.peer_data) == (b"B-half-and-nonce", b"A-half-nonce")
    assert a.result.transcript == b.result.transcript == option_bytes(s1[1][0]) + option_bytes(s2[1][0])


def test_respond_declines() -> None:
    b = ENONegotiator([], active=False, respond=lambda peer: [])
    deliver(b, (SYN, (bytes([X]),)))
    assert synack(b) == (SYN | ACK, ()) and b.result is None
    # responding only with TEPs the peer never sent is declining too
    b = ENONegotiator([], active=False, respond=lambda peer: [TEPOffer(Z)])
    deliver(b, (SYN, (bytes([X]),)))
    assert synack(b) == (SYN | ACK, ()) and b.result is None


def test_validate_callback_skips_invalid_pairs() -> None:
    # 4.5 rule 2: B's Y suboption carries data that A's TEP rules reject (e.g. RFC 8548 3.5:
    # a resumption half that does not match): ignored, so the next valid one, X, wins.
    def validate(a_sub: TEPOffer, b_sub: TEPOffer) -> bool:
        return b_sub.data != b"bad"
    a = ENONegotiator([TEPOffer(X), TEPOffer(Y)], active=True, validate=validate)
    syn(a)
    deliver(a, (SYN | ACK, (bytes([0x01, X, 0x80 | Y]) + b"bad",)))
    assert a.result.tep == X and a.result.tep_byte == X
    a = ENONegotiator([TEPOffer(Y)], active=True, validate=validate)
    syn(a)
    deliver(a, (SYN | ACK, (bytes([0x01, 0x80 | Y]) + b"bad",)))
    assert a.result is None and "no valid TEP" in a.disabled_reason


def test_v_bit_without_data_goes_into_tep_byte() -> None:
    # B's last suboption 0xa3 with zero data bytes: v = 1 counts for the session ID (5.1).
    a = ENONegotiator([TEPOffer(Y)], active=True)
    syn(a)
    deliver(a, (SYN | ACK, (bytes([0x01, 0xA3]),)))
    assert a.result.tep == Y and a.result.tep_byte == 0xA3 and a.result.peer_data == b""


def test_enoresult_tep_byte_default_derivation() -> None:
    kw = dict(tep=X, transcript=b"", local_app_aware=0, peer_app_aware=0,
              local_offers=(), peer_offers=())
    assert ENOResult(role="A", local_data=b"", peer_data=b"d", **kw).tep_byte == 0xA1
    assert ENOResult(role="B", local_data=b"", peer_data=b"d", **kw).tep_byte == X


@pytest.mark.parametrize("n,expected", [(None, [True] * 6), (0, [True] + [False] * 5),
                                        (2, [True, True, True, False, False, False])])
def test_drop_eno_after_n_syn_retransmits(n, expected) -> None:
    # 4.6: an active opener MAY remove ENO between SYN-only retransmissions.  Policy: the
    # original SYN and the first n retransmissions carry it.
    a = ENONegotiator([TEPOffer(X)], active=True, drop_after_syn_retransmits=n)
    carried = [bool(syn(a)[1])]
    for attempt in range(1, 6):
        a.on_syn_retransmit(attempt)
        carried.append(bool(syn(a)[1]))
    assert carried == expected
    if n is not None:
        assert a.result is None and "retransmission" in a.disabled_reason
        # a late SYN-ACK answering an earlier ENO SYN no longer enables ENO (not active)
        deliver(a, (SYN | ACK, (bytes([0x01, X]),)))
        assert a.result is None and ack(a) == (ACK, ())


def test_default_retransmit_policy_is_two() -> None:
    a = ENONegotiator([TEPOffer(X)], active=True)
    assert a.drop_after_syn_retransmits == 2


def test_syn_option_unchanged_across_retransmissions() -> None:
    a, b = pair()
    first = syn(a)
    a.on_syn_retransmit(1)
    assert syn(a) == first
    deliver(b, first)
    sa = synack(b)
    b.on_syn_retransmit(1)                 # passive SYN-ACK retransmission: never altered
    assert synack(b) == sa


def test_passive_retransmitted_syn() -> None:
    # Identical retransmitted SYN: fine.  Altered one (MUST NOT, 4.6): disable.
    a, b = pair()
    s1 = syn(a)
    deliver(b, s1)
    deliver(b, s1)
    assert b.active and not b.done
    deliver(b, (SYN, (bytes([X]),)))
    assert b.result is None and "altered" in b.disabled_reason
    # A retransmitted SYN without ENO (active opener dropped it): disable as well.
    a, b = pair()
    deliver(b, syn(a))
    deliver(b, (SYN, ()))
    assert b.result is None and synack(b) == (SYN | ACK, ())


def test_late_altered_synack_after_success_is_ignored() -> None:
    a, b = pair()
    deliver(b, syn(a))
    deliver(a, synack(b))
    r = a.result
    deliver(a, (SYN | ACK, (bytes([0x01, X]),)))   # duplicate SYN-ACK, different contents
    assert a.result is r and a.active


def test_rst_is_ignored() -> None:
    a, _ = pair()
    syn(a)
    deliver(a, (RST | ACK, ()))
    assert a.active and not a.done


def test_constructor_validation() -> None:
    with pytest.raises(ValueError):
        ENONegotiator([TEPOffer(X)], active=False, passive_role_bit=0)   # 4.2 MUST be 1
    with pytest.raises(ValueError):
        ENONegotiator([TEPOffer(X)], active=True, app_aware=2)           # one "a" bit
    with pytest.raises(ValueError):
        ENONegotiator([TEPOffer(X)], active=True, drop_after_syn_retransmits=-1)
    # No TEP configured: ENO off from the start (api-06 TCP_ENO_TEPS empty).
    a = ENONegotiator([], active=True)
    assert not a.active and a.syn_options() == () and a.nonsyn_options() == ()
    assert "no TEP configured" in a.disabled_reason


def test_passive_always_sends_explicit_global_and_active_omits_zero() -> None:
    # 4.2: A SYN without global suboption has implicit 0x00; passive openers MUST send one.
    a = ENONegotiator([TEPOffer(X)], active=True)
    assert a.syn_options() == (bytes([X]),)
    b = ENONegotiator([TEPOffer(X)], active=False)
    deliver(b, (SYN, (bytes([X]),)))
    assert b.syn_options() == (bytes([0x01, X]),)


def test_transcript_helper() -> None:
    assert transcript(b"\x21", b"\x01\x21") == b"\x45\x03\x21\x45\x04\x01\x21"


def test_syn_data_rule() -> None:
    # 4.7: no TEP here defines SYN data: discard the data of any SYN with an ENO option.
    assert must_discard_syn_data((bytes([X]),)) is True
    assert must_discard_syn_data(()) is False


@pytest.mark.parametrize("options,keeps", [({}, False), ({"require_encryption": True}, True),
                                           ({"mandatory_app_aware": True}, True)])
def test_provider_keeps_eno_in_every_syn_when_it_cannot_do_without(options, keeps) -> None:
    """RFC 8547 4.6's first exception (drop ENO from later SYN retransmissions) only ever
    leads to plain TCP: the provider keeps ENO in every SYN when encryption is required or
    application-aware mode is mandatory (issue 14: three SYNs lost at 10% loss made a
    fourth, ENO-less, SYN that could only fail), and drops it as before otherwise."""
    from tcpcrypt.provider import TcpcryptProvider
    a = TcpcryptProvider().negotiator(active=True, local=("10.0.0.1", 4000),
                                      remote=("10.0.0.2", 80), options=options)
    for attempt in range(1, 6):
        a.on_syn_retransmit(attempt)
    assert bool(syn(a)[1]) is keeps
