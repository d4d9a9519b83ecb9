"""Session resumption (RFC 8548 3.5) and the session cache."""
from __future__ import annotations

import pytest

from tcpcrypt.errors import TcpcryptProtocolError
from tcpcrypt.resumption import SessionCache
from tcpcrypt.session import TcpcryptSession, TEPOffer, make_offers, make_responder
from tcpcrypt.suites import (AEAD_AES_256_GCM, AEAD_CHACHA20_POLY1305, TEP_CURVE448, TEP_CURVE25519,
                             TEP_P256, TEPS, TcpcryptConfig)

from tests.tcpcrypt.sessions import PEER_OF_A, PEER_OF_B, FakeENOResult, handshake, negotiate, pump

CFG = TcpcryptConfig()


def fresh_pair(cfg=CFG, cfg_b=None):
    ca, cb = SessionCache(), SessionCache()
    a, b = negotiate(cfg, cfg_b or cfg, ca, cb)
    handshake(a, b)
    return a, b, ca, cb


def no_keygen(monkeypatch):
    def boom(self):
        raise AssertionError("resumption must not generate an ephemeral key")
    for ka in TEPS.values():
        monkeypatch.setattr(type(ka), "generate", boom)


def test_second_session_resumes_without_key_exchange(monkeypatch):
    a1, b1, ca, cb = fresh_pair()
    no_keygen(monkeypatch)
    a2, b2 = negotiate(CFG, CFG, ca, cb)
    assert a2.resumed and b2.resumed and a2.established and b2.established
    assert a2.start() == b"" and b2.start() == b""        # no Init1 / Init2
    assert a2.session_id == b2.session_id != a1.session_id
    assert a2.session_id[0] == TEP_CURVE25519 | 0x80       # 3.5: v = 1 in the ID's first byte
    assert a2.aead == b2.aead == a1.aead                   # the cached session's AEAD
    assert pump(a2, b2, a2.send(b"0-RTT data")) == b"0-RTT data"
    assert pump(b2, a2, b2.send(b"reply")) == b"reply"
    r = a2.rekey()
    _, reply = b2.receive(r)
    a2.receive(reply)
    assert pump(a2, b2, a2.send(b"after rekey") + a2.close()) == b"after rekey" and b2.eof_received
    # the chain continues: a third session uses ss[2]
    a3, b3 = negotiate(CFG, CFG, ca, cb)
    assert a3.resumed and len({a1.session_id, a2.session_id, a3.session_id}) == 3
    assert pump(a3, b3, a3.send(b"3")) == b"3"


def test_suboption_layout():
    a1, b1, ca, cb = fresh_pair(TcpcryptConfig(nonce_len=5))
    t = ca.peek(PEER_OF_A)
    assert t == (TEP_CURVE25519, a1.aead, "A", 1)
    offers = make_offers(TcpcryptConfig(nonce_len=5), ca, PEER_OF_A)
    assert [o.tep for o in offers][-1] == TEP_CURVE25519    # resumption offer last (priority)
    assert sum(1 for o in offers if o.tep == TEP_CURVE25519) == 1
    res = offers[-1]
    assert len(res.data) == 9 + 5
    answer = make_responder(CFG, cb, PEER_OF_B)(offers)
    assert len(answer) == 1 and answer[0].tep == TEP_CURVE25519 and len(answer[0].data) == 9 + 8
    # halves: the original "A" host sends resume[i]{0..8}, the original "B" host {9..17}
    ta = ca.claim(PEER_OF_A, TEP_CURVE25519, res.data[:9])
    tb = cb.claim(PEER_OF_B, TEP_CURVE25519, answer[0].data[:9])
    assert ta.rid == tb.rid and res.data[:9] == ta.rid[:9] and answer[0].data[:9] == ta.rid[9:]


def test_identifier_never_accepted_twice():
    a1, b1, ca, cb = fresh_pair()
    offers = make_offers(CFG, ca, PEER_OF_A)
    respond = make_responder(CFG, cb, PEER_OF_B)
    first = respond(offers)
    assert first[0].data                                    # resumption accepted
    again = respond(offers)                                 # replayed SYN
    assert again == [TEPOffer(TEP_CURVE25519)]              # fresh key exchange only


def test_proposal_consumes_the_secret_even_when_declined():
    """3.5: the active opener uses the lowest i not already used, successfully or not."""
    a1, b1, ca, cb = fresh_pair()
    cb.flush()                                              # B lost its cache
    assert ca.peek(PEER_OF_A)[3] == 1
    a2, b2 = negotiate(CFG, CFG, ca, cb)
    assert not a2.resumed and not b2.resumed                # declined: fresh exchange
    handshake(a2, b2)
    assert a2.session_id == b2.session_id
    # the fresh session replaced the chain; its ss[1] is next
    assert ca.peek(PEER_OF_A)[3] == 1 and cb.peek(PEER_OF_B)[3] == 1
    a3, b3 = negotiate(CFG, CFG, ca, cb)
    assert a3.resumed and a3.session_id == b3.session_id


def test_lost_syn_skips_ahead():
    """A proposed ss[1] in a SYN that never reached B; B recognises ss[2] next time."""
    a1, b1, ca, cb = fresh_pair()
    make_offers(CFG, ca, PEER_OF_A)                         # lost SYN: ss[1] consumed at A
    assert ca.peek(PEER_OF_A)[3] == 2
    a2, b2 = negotiate(CFG, CFG, ca, cb)
    assert a2.resumed and b2.resumed and a2.session_id == b2.session_id
    assert cb.peek(PEER_OF_B)[3] == 3                       # B skipped ss[1] too


def test_either_host_may_initiate_resumption():
    a1, b1, ca, cb = fresh_pair()
    # the original B host connects to the original A host: peers swap names in negotiate()
    cb2, ca2 = SessionCache(), SessionCache()
    tb = cb.peek(PEER_OF_B)
    assert tb[2] == "B"
    ta_t = ca.take_for_offer(PEER_OF_A)
    tb_t = cb.take_for_offer(PEER_OF_B)
    ca2.store(PEER_OF_B, ta_t.tep, ta_t.aead, "A", ta_t.ss, ta_t.index)
    cb2.store(PEER_OF_A, tb_t.tep, tb_t.aead, "B", tb_t.ss, tb_t.index)
    x, y = negotiate(CFG, CFG, cb2, ca2)                    # x: original B, now role A
    assert x.role == "A" and x.resumed and y.resumed and x.session_id == y.session_id
    assert pump(x, y, x.send(b"from old B")) == b"from old B"
    assert pump(y, x, y.send(b"from old A")) == b"from old A"


def test_policy_no_resumption():
    a1, b1, ca, cb = fresh_pair()
    off = TcpcryptConfig(resumption=False)
    assert make_offers(off, ca, PEER_OF_A) == [TEPOffer(t) for t in off.teps]
    offers = make_offers(CFG, ca, PEER_OF_A)
    assert offers[-1].data
    assert make_responder(off, cb, PEER_OF_B)(offers) == [TEPOffer(TEP_CURVE25519)]
    assert cb.peek(PEER_OF_B)[3] == 1                       # B's secret untouched


def test_policy_no_caching():
    nocache = TcpcryptConfig(cache_secrets=False)
    a1, b1, ca, cb = fresh_pair(nocache)
    assert len(ca) == 0 and len(cb) == 0
    # resuming under policy 2 uses the cached secret but leaves nothing behind
    a1, b1, ca, cb = fresh_pair()
    a2, b2 = negotiate(nocache, nocache, ca, cb)
    assert a2.resumed and a2.session_id == b2.session_id
    assert len(ca) == 0 and len(cb) == 0


def test_forget_flushes_connection_state():
    a1, b1, ca, cb = fresh_pair()
    a1.forget()
    assert PEER_OF_A not in ca and PEER_OF_B in cb
    a2, b2 = negotiate(CFG, CFG, ca, cb)
    assert not a2.resumed
    handshake(a2, b2)
    a3, b3 = negotiate(CFG, CFG, ca, cb)
    assert a3.resumed
    b3.forget()                                             # flush the resumed chain at B
    assert PEER_OF_B not in cb
    a4, b4 = negotiate(CFG, CFG, ca, cb)
    assert not a4.resumed


def test_tep_must_match_cached_session():
    a1, b1, ca, cb = fresh_pair()
    t = ca.take_for_offer(PEER_OF_A)
    respond = make_responder(CFG, cb, PEER_OF_B)
    # the right identifier half but under another TEP: no resumption
    assert respond([TEPOffer(TEP_CURVE448, t.local_half + b"n")]) == [TEPOffer(TEP_CURVE448)]


def test_cached_aead_must_still_be_allowed():
    a1, b1, ca, cb = fresh_pair()
    only256 = TcpcryptConfig(aeads=(AEAD_AES_256_GCM,))
    assert a1.aead != AEAD_AES_256_GCM                      # default pick: AES-128-GCM
    assert all(not o.data for o in make_offers(only256, ca, PEER_OF_A))


def test_mismatched_identifier_half_from_b_is_rejected():
    a1, b1, ca, cb = fresh_pair()
    offers = tuple(make_offers(CFG, ca, PEER_OF_A))
    forged = (TEPOffer(TEP_CURVE25519, bytes(9) + b"nonce"),)
    r = FakeENOResult(TEP_CURVE25519, "A", offers[-1].data, forged[0].data, b"t",
                      local_offers=offers, peer_offers=forged)
    with pytest.raises(TcpcryptProtocolError):
        TcpcryptSession(r, CFG, ca, PEER_OF_A)


def test_resumption_answer_without_our_offer_is_rejected():
    r = FakeENOResult(TEP_CURVE25519, "A", b"", bytes(12), b"t",
                      local_offers=(TEPOffer(TEP_CURVE25519),), peer_offers=())
    with pytest.raises(TcpcryptProtocolError):
        TcpcryptSession(r, CFG, SessionCache(), PEER_OF_A)


def test_b_answering_fresh_to_a_resumption_offer():
    """3.2: B may answer a resumption suboption with v = 0 for the same TEP: fresh exchange."""
    a1, b1, ca, cb = fresh_pair()
    offers = tuple(make_offers(CFG, ca, PEER_OF_A))
    answer = (TEPOffer(TEP_CURVE25519),)
    ra = FakeENOResult(TEP_CURVE25519, "A", offers[-1].data, b"", b"t", local_offers=offers,
                       peer_offers=answer)
    rb = FakeENOResult(TEP_CURVE25519, "B", b"", offers[-1].data, b"t", local_offers=answer,
                       peer_offers=offers)
    a, b = TcpcryptSession(ra, CFG, ca, PEER_OF_A), TcpcryptSession(rb, CFG, cb, PEER_OF_B)
    handshake(a, b)
    assert not a.resumed and a.session_id == b.session_id and a.session_id[0] == TEP_CURVE25519


def test_zero_length_nonce():
    cfg = TcpcryptConfig(nonce_len=0)
    a1, b1, ca, cb = fresh_pair(cfg)
    a2, b2 = negotiate(cfg, cfg, ca, cb)
    assert a2.resumed and a2.session_id == b2.session_id
    assert pump(a2, b2, a2.send(b"ok")) == b"ok"


def test_cache_is_bounded():
    c = SessionCache(max_peers=3, max_pending=2)
    for i in range(5):
        c.store(f"h{i}", TEP_P256, AEAD_CHACHA20_POLY1305, "A", bytes(32), 1)
    assert len(c) == 3 and "h0" not in c and "h4" in c
    for i in (2, 3, 4):
        assert c.take_for_offer(f"h{i}") is not None
    assert len(c._pending) == 2
    c.flush()
    assert len(c) == 0 and not c._pending


# --- with the real TCP-ENO negotiator (RFC 8547) ---------------------------------------------

def eno_connect(cfg, ca, cb, tamper=None):
    """Three-way handshake of two ENONegotiators, then the two tcpcrypt sessions (or None)."""
    from tcpcrypt.eno import ENONegotiator
    from tcpcrypt.session import make_validator
    from tcpstack.wire.segment import ACK, SYN
    na = ENONegotiator(make_offers(cfg, ca, PEER_OF_A), active=True,
                       validate=make_validator(cfg, ca, PEER_OF_A))
    nb = ENONegotiator([TEPOffer(t) for t in cfg.teps], active=False,
                       respond=make_responder(cfg, cb, PEER_OF_B),
                       validate=make_validator(cfg, cb, PEER_OF_B))
    nb.on_receive(SYN, na.syn_options())
    synack = nb.syn_options()
    if tamper:
        synack = tamper(synack)
    na.on_receive(SYN | ACK, synack)
    nb.on_receive(ACK, na.nonsyn_options())
    if na.result is None or nb.result is None:
        return None, None
    return (TcpcryptSession(na.result, cfg, ca, PEER_OF_A),
            TcpcryptSession(nb.result, cfg, cb, PEER_OF_B))


def test_fresh_then_resumed_through_eno():
    ca, cb = SessionCache(), SessionCache()
    a, b = eno_connect(CFG, ca, cb)
    assert a.role == "A" and b.role == "B" and not a.resumed
    handshake(a, b)
    assert a.session_id == b.session_id and a.session_id[0] == TEP_CURVE25519
    a2, b2 = eno_connect(CFG, ca, cb)
    assert a2.resumed and b2.resumed and a2.session_id == b2.session_id
    assert a2.session_id[0] == TEP_CURVE25519 | 0x80
    assert pump(a2, b2, a2.send(b"resumed via ENO")) == b"resumed via ENO"


def test_mismatched_half_disables_eno():
    """3.5: A MUST ignore a resumption suboption whose identifier half does not match; here
    it was the only suboption, so TCP-ENO and tcpcrypt are disabled."""
    ca, cb = SessionCache(), SessionCache()
    handshake(*eno_connect(CFG, ca, cb))

    def tamper(opts):
        (payload,) = opts
        p = bytearray(payload)
        p[-10] ^= 1                      # inside the 9-byte identifier half (8-byte nonce after)
        return (bytes(p),)
    a, b = eno_connect(CFG, ca, cb, tamper)
    assert a is None
