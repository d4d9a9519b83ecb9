"""tcpcrypt sessions end to end (RFC 8548 3.2-3.9), sans-IO: two sessions wired by hand.

The ENO result is built here (FakeENOResult has the fields of tcpcrypt.eno.ENOResult), so
these tests do not depend on the TCP-ENO module.
"""
from __future__ import annotations

import itertools
import os
import struct
from dataclasses import replace

import pytest

from tcpcrypt import keys
from tcpcrypt.errors import TcpcryptError, TcpcryptIntegrityError, TcpcryptProtocolError
from tcpcrypt.frames import FrameKey, open_frame, seal
from tcpcrypt.messages import INIT1_MAGIC, INIT2_MAGIC
from tcpcrypt.resumption import SessionCache
from tcpcrypt.session import TEPOffer, make_offers, make_responder
from tcpcrypt.suites import (AEAD_AES_128_GCM, AEAD_AES_256_GCM, AEAD_CHACHA20_POLY1305, AEADS,
                             TEP_CURVE448, TEP_CURVE25519, TEP_P256, TEP_P521, TEPS, TcpcryptConfig)



from tests.tcpcrypt.sessions import (ALL_AEADS, ALL_TEPS, handshake, negotiate, pair, pump)


@pytest.mark.parametrize("tep", ALL_TEPS)
@pytest.mark.parametrize("aead", ALL_AEADS)
def test_fresh_handshake_data_close(tep, aead):
    a, b = pair(tep, aead)
    assert a.session_id == b.session_id
    assert a.session_id[0] == tep and len(a.session_id) == 33      # 3.4: TEP byte, v = 0
    assert a.aead == b.aead == aead and not a.resumed and not b.resumed
    assert a.info()["session_id"] == a.session_id
    msg_a = os.urandom(50_000)                                       # several frames
    assert pump(a, b, a.send(msg_a)) == msg_a
    assert pump(b, a, b.send(b"pong")) == b"pong"
    # close: FINp frame; EOF only when it is received (3.7)
    assert not b.eof_received
    fin = a.close()
    with pytest.raises(TcpcryptError):
        a.send(b"late")
    assert a.close() == b""
    pt, out = b.receive(fin)
    assert pt == b"" and out == b"" and b.eof_received
    b.peer_fin()                                                     # TCP FIN after FINp: fine
    assert pump(b, a, b.send(b"half-closed still works") + b.close()) == b"half-closed still works"
    assert a.eof_received
    a.peer_fin()


def test_session_ids_differ_between_connections():
    a1, b1 = pair()
    a2, b2 = pair()
    assert a1.session_id != a2.session_id


def test_wire_layout_of_init_messages():
    cfg = TcpcryptConfig(teps=(TEP_P256,), aeads=(AEAD_AES_128_GCM, AEAD_CHACHA20_POLY1305))
    a, b = negotiate(cfg, cfg)
    init1 = a.start()
    magic, mlen, k = struct.unpack_from(">IIB", init1)
    assert magic == INIT1_MAGIC and mlen == len(init1) and k == 2
    assert struct.unpack_from(">2H", init1, 9) == (AEAD_AES_128_GCM, AEAD_CHACHA20_POLY1305)
    pub = init1[13 + 32:]
    assert struct.unpack_from(">H", pub)[0] == 33 and pub[2] in (2, 3) and len(pub) == 35
    _, init2 = b.receive(init1)
    magic, mlen, cipher = struct.unpack_from(">IIH", init2)
    assert magic == INIT2_MAGIC and mlen == len(init2) == 8 + 2 + 32 + 35
    assert cipher == AEAD_CHACHA20_POLY1305          # B picks the LAST (most preferred) of its list


def test_b_chooses_by_its_preference():
    cfg_a = TcpcryptConfig(aeads=ALL_AEADS)
    cfg_b = TcpcryptConfig(aeads=(AEAD_AES_128_GCM, AEAD_CHACHA20_POLY1305))
    a, b = negotiate(cfg_a, cfg_b)
    handshake(a, b)
    assert a.aead == b.aead == AEAD_CHACHA20_POLY1305


def test_resegmentation_byte_by_byte():
    cfg = TcpcryptConfig(teps=(TEP_CURVE448,), frame_size=7)
    a, b = negotiate(cfg, cfg)
    init1 = a.start()
    held = a.send(b"early data from A")              # before keys: held
    assert held == b""
    back = bytearray()
    for i in range(len(init1)):
        pt, out = b.receive(init1[i:i + 1])
        assert pt == b""
        back += out
    assert b.established
    back += b.send(b"and B replies")
    got, wire = bytearray(), bytearray()
    for i in range(len(back)):
        pt, out = a.receive(back[i:i + 1])
        got += pt
        wire += out
    assert bytes(got) == b"and B replies"
    got = bytearray()
    for i in range(len(wire)):
        got += b.receive(memoryview(wire)[i:i + 1])[0]
    assert bytes(got) == b"early data from A"


def test_b_data_and_close_before_init1_are_flushed_with_init2():
    a, b = negotiate()
    init1 = a.start()
    assert b.send(b"hello from B") == b"" and b.close() == b""
    _, back = b.receive(init1)
    pt, _ = a.receive(back)
    assert pt == b"hello from B" and a.eof_received


def test_frame_offsets_count_the_init_message():
    """3.6: frame ID offset = position in the TCP data stream, Init1/Init2 included."""
    a, b = negotiate(TcpcryptConfig(aeads=(AEAD_AES_128_GCM,)), TcpcryptConfig())
    init1 = a.start()
    _, init2 = b.receive(init1)
    a.receive(init2)
    frame = a.send(b"x")
    kab = keys.traffic_key(a._mk[0], True, AEADS[AEAD_AES_128_GCM])
    k = FrameKey(AEADS[AEAD_AES_128_GCM], kab, 0)
    assert open_frame(k, len(init1), frame)[3] == b"x"
    with pytest.raises(TcpcryptIntegrityError):
        open_frame(k, 0, frame)
    second = a.send(b"y")
    assert open_frame(k, len(init1) + len(frame), second)[3] == b"y"


def test_transcript_mismatch_fails_first_frame():
    """3.3: the ENO transcript is in the PRK, so tampering with SYN options breaks the keys."""
    a, b = negotiate(transcript_b=b"\x45\x03\x23\x45\x04\x01\x22")
    _, init2 = b.receive(a.start())
    a.receive(init2)
    assert a.session_id != b.session_id
    with pytest.raises(TcpcryptIntegrityError):
        b.receive(a.send(b"secret"))


# --- key-exchange validation -----------------------------------------------------------------

def test_bad_magic_rejected_early():
    a, b = negotiate()
    init1 = bytearray(a.start())
    init1[0] ^= 0x40
    with pytest.raises(TcpcryptProtocolError):
        b.receive(bytes(init1[:2]))                  # rejected on the first bytes
    with pytest.raises(TcpcryptProtocolError):
        b.receive(b"")                               # dead from now on
    a2, b2 = negotiate()
    _, init2 = b2.receive(a2.start())
    with pytest.raises(TcpcryptProtocolError):
        a2.receive(bytes([init2[0] ^ 1]) + init2[1:])


def test_truncated_init_messages():
    a, b = negotiate()
    init1 = a.start()
    for cut in (3, 8, len(init1) - 1):
        _, b2 = negotiate()
        assert b2.receive(init1[:cut]) == (b"", b"")
        assert not b2.established
        with pytest.raises(TcpcryptProtocolError):
            b2.peer_fin()                            # stream ended inside Init1
    # message_len claiming fewer bytes than the fixed fields is rejected outright
    short = bytearray(init1)
    struct.pack_into(">I", short, 4, len(init1) - 1)
    with pytest.raises(TcpcryptProtocolError):
        b.receive(bytes(short))
    a3, b3 = negotiate()
    _, init2 = b3.receive(a3.start())
    assert a3.receive(init2[:-1]) == (b"", b"")
    with pytest.raises(TcpcryptProtocolError):
        a3.peer_fin()
    a4, b4 = negotiate()
    _, init2 = b4.receive(a4.start())
    short2 = bytearray(init2)
    struct.pack_into(">I", short2, 4, 8 + 2 + 32 + 10)
    with pytest.raises(TcpcryptProtocolError):
        a4.receive(bytes(short2))
    # nciphers = 0
    a5, b5 = negotiate()
    init1 = bytearray(a5.start())
    k = init1[8]
    bad = init1[:8] + b"\x00" + init1[9 + 2 * k:]
    struct.pack_into(">I", bad, 4, len(bad))
    with pytest.raises(TcpcryptProtocolError):
        b5.receive(bytes(bad))


def test_ignored_trailing_bytes_accepted_and_authenticated():
    """4.1: receivers permit and ignore bytes after Pub_A; they are part of Init1 in the PRK."""
    from tcpcrypt.messages import Init1
    a, b = negotiate()
    init1 = bytearray(a.start()) + b"trailing junk"
    struct.pack_into(">I", init1, 4, len(init1))
    a._init1 = Init1(a._init1.sym_ciphers, a._init1.n_a, a._init1.pub_a, bytes(init1))
    a._tx_offset = len(init1)
    _, init2 = b.receive(bytes(init1))
    a.receive(init2)
    assert a.session_id == b.session_id
    assert pump(a, b, a.send(b"ok")) == b"ok"
    # the same trailing bytes but not in A's view of Init1: keys differ
    a2, b2 = negotiate()
    init1 = bytearray(a2.start()) + b"x"
    struct.pack_into(">I", init1, 4, len(init1))
    _, init2 = b2.receive(bytes(init1))
    a2.receive(init2)
    assert a2.session_id != b2.session_id


def _init1_with_pub(tep, pub_wire: bytes) -> bytes:
    body = struct.pack(">BH", 1, AEAD_AES_128_GCM) + os.urandom(32) + pub_wire
    return struct.pack(">II", INIT1_MAGIC, 8 + len(body)) + body


@pytest.mark.parametrize("tep,pub", [
    (TEP_CURVE25519, bytes(32)),                                   # all-zero shared secret
    (TEP_CURVE25519, (1).to_bytes(32, "little")),                  # small-order point u = 1
    (TEP_CURVE448, bytes(56)),
    (TEP_P256, b"\x00\x21" + b"\x02" + (2**256 - 2**224 + 2**192 + 2**96).to_bytes(32, "big")),  # x = p
    (TEP_P256, b"\x00\x21\x04" + bytes(32)),                       # not a compressed point
    (TEP_P256, b"\x00\x41" + b"\x02" + bytes(32)),                 # wrong pubkey_len
    (TEP_P521, b"\x00\x43" + b"\x02" + b"\xff" * 66),              # x >= p
])
def test_invalid_public_keys_abort(tep, pub):
    cfg = TcpcryptConfig(teps=(tep,), aeads=(AEAD_AES_128_GCM,))
    _, b = negotiate(cfg, cfg)
    if len(pub) != TEPS[tep].pub_wire_len:
        pub = pub[:TEPS[tep].pub_wire_len].ljust(TEPS[tep].pub_wire_len, b"\0")
    with pytest.raises(TcpcryptProtocolError):
        b.receive(_init1_with_pub(tep, pub))
    assert not b.established


def test_p256_point_not_on_curve_rejected():
    """A compressed x with no square root of x^3 - 3x + b mod p is not on P-256."""
    from cryptography.hazmat.primitives.asymmetric import ec
    cfg = TcpcryptConfig(teps=(TEP_P256,), aeads=(AEAD_AES_128_GCM,))
    for x in itertools.count(1):
        try:
            ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b"\x02" + x.to_bytes(32, "big"))
        except ValueError:
            break
    _, b = negotiate(cfg, cfg)
    with pytest.raises(TcpcryptProtocolError):
        b.receive(_init1_with_pub(TEP_P256, b"\x00\x21\x02" + x.to_bytes(32, "big")))


def test_a_aborts_when_b_picks_an_aead_not_offered():
    cfg_a = TcpcryptConfig(aeads=(AEAD_AES_128_GCM,))
    a, b = negotiate(cfg_a, TcpcryptConfig())
    _, init2 = b.receive(a.start())
    forged = bytearray(init2)
    struct.pack_into(">H", forged, 8, AEAD_CHACHA20_POLY1305)
    with pytest.raises(TcpcryptProtocolError, match="not in our Init1"):
        a.receive(bytes(forged))
    with pytest.raises(TcpcryptProtocolError):
        a.send(b"x")


def test_b_aborts_without_common_aead():
    a, b = negotiate(TcpcryptConfig(aeads=(AEAD_AES_256_GCM,)),
                     TcpcryptConfig(aeads=(AEAD_AES_128_GCM,)))
    with pytest.raises(TcpcryptProtocolError, match="no acceptable AEAD"):
        b.receive(a.start())


def test_b_skips_unknown_aead_ids():
    a, b = negotiate(TcpcryptConfig(aeads=(AEAD_AES_256_GCM,)), TcpcryptConfig())
    init1 = bytearray(a.start())
    struct.pack_into(">H", init1, 9, 0x7777)          # unknown id only
    with pytest.raises(TcpcryptProtocolError):
        b.receive(bytes(init1))


# --- frames: integrity, FINp, errors ---------------------------------------------------------

def _flip_results(make, frame_of, positions):
    for pos in positions:
        a, b = make()
        frame = bytearray(frame_of(a))
        frame[pos // 8] ^= 1 << (pos % 8)
        try:
            pt, _ = b.receive(bytes(frame))
        except (TcpcryptIntegrityError, TcpcryptProtocolError):
            with pytest.raises(TcpcryptError):
                b.receive(b"")                       # dead after an error
            continue
        # clen grew: the frame looks incomplete, nothing delivered; FIN then reports truncation
        assert pt == b"", pos
        with pytest.raises(TcpcryptProtocolError):
            b.peer_fin()


def test_every_single_bit_flip_of_a_small_frame_is_detected():
    frame_len = len(pair()[0].send(b"hi!"))
    _flip_results(pair, lambda a: a.send(b"hi!"), range(frame_len * 8))


@pytest.mark.parametrize("aead", ALL_AEADS)
def test_sampled_bit_flips_of_a_large_frame(aead):
    data = os.urandom(4000)
    mk = lambda: pair(aead=aead)
    n = len(mk()[0].send(data)) * 8
    positions = list(range(0, 48)) + list(range(48, n, 397)) + list(range(n - 200, n))
    _flip_results(mk, lambda a: a.send(data), positions)


def test_tampered_frame_yields_no_plaintext_even_after_good_frames():
    a, b = pair()
    good = a.send(b"good")
    bad = bytearray(a.send(b"evil"))
    bad[-1] ^= 1
    with pytest.raises(TcpcryptIntegrityError):
        b.receive(good + bytes(bad))


def test_replayed_or_reordered_frame_fails():
    a, b = pair()
    f1, f2 = a.send(b"one"), a.send(b"two")
    with pytest.raises(TcpcryptIntegrityError):
        b.receive(f2 + f1)                           # offsets are implicit: reorder breaks them
    a, b = pair()
    f1 = a.send(b"one")
    b.receive(f1)
    with pytest.raises(TcpcryptIntegrityError):
        b.receive(f1)


def test_fin_without_finp_is_an_error_not_eof():
    a, b = pair()
    b.receive(a.send(b"data"))
    with pytest.raises(TcpcryptProtocolError):
        b.peer_fin()
    assert not b.eof_received
    with pytest.raises(TcpcryptProtocolError):
        b.receive(b"")


def test_truncated_frame_at_eof():
    a, b = pair()
    wire = a.send(b"data") + a.close()
    pt, _ = b.receive(wire[:-1])
    assert pt == b"data" and not b.eof_received
    with pytest.raises(TcpcryptProtocolError):
        b.peer_fin()


def test_data_after_finp_is_an_error():
    a, b = pair()
    b.receive(a.close())
    with pytest.raises(TcpcryptProtocolError):
        b.receive(b"\x00\x00\x11" + bytes(17))


def test_reserved_bits_ignored_on_receive():
    """4.2 / 4.2.1: cres and fres bits are ignored by receivers (but authenticated as sent)."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    a, b = pair()
    kab = keys.traffic_key(a._mk[0], True, AEADS[AEAD_AES_128_GCM])
    off = a._tx_offset
    nonce = bytes(x ^ y for x, y in zip(kab[16:], off.to_bytes(12, "big")))
    pt = b"\xfc" + b"reserved"                        # fres bits set, URGp = FINp = 0
    aad = bytes((0xFE,)) + (len(pt) + 16).to_bytes(2, "big")   # cres bits set, rekey = 0
    frame = aad + AESGCM(kab[:16]).encrypt(nonce, pt, aad)
    pt, _ = b.receive(frame)
    assert pt == b"reserved" and not b.eof_received and b.remote_generation == 0


def test_urgent_frames_parsed():
    a, b = pair()
    suite = AEADS[AEAD_AES_128_GCM]
    kab = FrameKey(suite, keys.traffic_key(a._mk[0], True, suite), 0)
    b.receive(a.send(b"0123"))
    off = a._tx_offset
    pt, _ = b.receive(seal(kab, off, b"urgent!", urgent=6))
    assert pt == b"urgent!" and b.urgent_index == 4 + 6


def test_session_is_dead_after_error():
    a, b = pair()
    with pytest.raises(TcpcryptIntegrityError):
        b.receive(b"\x00\x00\x25" + bytes(0x25))
    for call in (lambda: b.send(b"x"), b.close, b.rekey, b.peer_fin, lambda: b.receive(b"")):
        with pytest.raises(TcpcryptIntegrityError):
            call()


def test_clen_too_small_is_protocol_error():
    a, b = pair()
    with pytest.raises(TcpcryptProtocolError):
        b.receive(b"\x00\x00\x10" + bytes(16))


# --- rekeying (3.8) and keep-alive (3.9) -----------------------------------------------------

@pytest.mark.parametrize("aead", ALL_AEADS)
def test_rekey_both_directions_with_mandatory_reply(aead):
    a, b = pair(aead=aead)
    r = a.rekey()
    assert r[0] & 1 == 1 and a.local_generation == 1 and a.remote_generation == 0
    assert a.rekey() == b""                          # one empty-frame rekey at a time
    pt, reply = b.receive(r)
    assert pt == b"" and reply and reply[0] & 1     # MUST answer at once with rekey = 1
    assert b.local_generation == b.remote_generation == 1
    assert a.receive(reply) == (b"", b"")            # remote caught up: no further reply
    assert a.remote_generation == 1
    assert pump(a, b, a.send(b"gen1 a")) == b"gen1 a"
    assert pump(b, a, b.send(b"gen1 b")) == b"gen1 b"
    # now B initiates
    r = b.rekey()
    pt, reply = a.receive(r + b.send(b"after"))
    assert pt == b"after" and reply[0] & 1
    b.receive(reply)
    assert a.local_generation == b.local_generation == 2
    assert set(a._mk) == {2}                         # old master keys forgotten
    assert pump(a, b, a.send(b"x" * 40000)) == b"x" * 40000


def test_keepalive_is_answered_by_an_authenticated_frame():
    a, b = pair()
    probe = a.keepalive()
    _, answer = b.receive(probe)
    assert answer
    a.receive(answer)                               # authenticates: peer alive
    assert a.remote_generation == 1


def test_simultaneous_rekey_needs_no_extra_reply():
    a, b = pair()
    ra, rb = a.rekey(), b.rekey()
    assert b.receive(ra) == (b"", b"")
    assert a.receive(rb) == (b"", b"")
    assert a.local_generation == b.local_generation == 1


def test_rekey_with_frames_in_flight():
    a, b = pair()
    from_b = b.send(b"old generation data")         # B still in generation 0
    r = a.rekey() + a.send(b"new gen")
    assert a.receive(from_b)[0] == b"old generation data"
    pt, reply = b.receive(r)
    assert pt == b"new gen"
    assert a.receive(reply + b.send(b"ok"))[0] == b"ok"


def test_no_rekey_reply_after_close():
    a, b = pair()
    fin = b.close()
    _, reply = b.receive(a.rekey())
    assert reply == b""
    a.receive(fin)
    assert a.eof_received


def test_automatic_rekey_at_usage_limit():
    a, b = pair(rekey_after_frames=3, frame_size=100)
    data = os.urandom(1000)                           # 10 frames: generations 0,0,0,1,1,1,2,...
    got = pump(a, b, a.send(data))
    assert got == data
    assert a.local_generation == 3 and b.remote_generation == 3 and b.local_generation == 3
    a2, b2 = pair(rekey_after_bytes=250, frame_size=100)
    assert pump(a2, b2, a2.send(data)) == data
    assert a2.local_generation == 3


def test_forged_rekey_bit_is_detected():
    a, b = pair()
    f = bytearray(a.send(b"data"))
    f[0] |= 1
    with pytest.raises(TcpcryptIntegrityError):
        b.receive(bytes(f))


# --- negotiation helpers (3.2, 3.5) ----------------------------------------------------------

def test_offers_are_plain_teps_without_cache():
    cfg = TcpcryptConfig()
    assert make_offers(cfg, None, "x") == [TEPOffer(t) for t in cfg.teps]
    assert make_offers(cfg, SessionCache(), "x") == [TEPOffer(t) for t in cfg.teps]


def test_responder_picks_our_most_preferred_common_tep():
    cfg = TcpcryptConfig()
    respond = make_responder(cfg, SessionCache(), "x")
    assert respond([TEPOffer(TEP_P256), TEPOffer(TEP_CURVE25519)]) == [TEPOffer(TEP_CURVE25519)]
    assert respond([TEPOffer(TEP_P521), TEPOffer(TEP_P256)]) == [TEPOffer(TEP_P256)]
    assert respond([TEPOffer(0x7e)]) == []
    # 3.5: v = 1 with fewer than 9 bytes of data is an offer of fresh key exchange
    assert make_responder(TcpcryptConfig(teps=(TEP_CURVE448,)), SessionCache(), "x")(
        [TEPOffer(TEP_CURVE448, b"12345678")]) == [TEPOffer(TEP_CURVE448)]
    # an unknown identifier half: fresh answer with that TEP
    assert make_responder(TcpcryptConfig(teps=(TEP_CURVE448,)), SessionCache(), "x")(
        [TEPOffer(TEP_CURVE448, os.urandom(17))]) == [TEPOffer(TEP_CURVE448)]


def test_config_validation():
    with pytest.raises(ValueError):
        TcpcryptConfig(nonce_len=9)
    with pytest.raises(ValueError):
        TcpcryptConfig(teps=(0x20,))
    with pytest.raises(ValueError):
        TcpcryptConfig(aeads=(3,))
    with pytest.raises(ValueError):
        TcpcryptConfig(frame_size=65519)
    a, b = pair(frame_size=65518)                    # clen = 1 + 65518 + 16 = 65535 < 2**16
    big = os.urandom(65518)
    f = a.send(big)
    assert len(f) == 3 + 65535 and pump(a, b, f) == big
    replace(TcpcryptConfig(), resumption=False)


# --- property: any resegmentation of the stream yields the same plaintext ---------------------

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=40, deadline=None)
@given(writes=st.lists(st.binary(max_size=700), min_size=1, max_size=6),
       cuts=st.lists(st.integers(1, 300), min_size=1, max_size=40),
       rekey_at=st.integers(0, 6), early=st.integers(0, 6))
def test_any_resegmentation(writes, cuts, rekey_at, early):
    """Writes before keys exist (held, then flushed), a rekey, FINp: split anywhere."""
    cfg = TcpcryptConfig(teps=(TEP_CURVE25519,), aeads=(AEAD_CHACHA20_POLY1305,), frame_size=200)
    a, b = negotiate(cfg, cfg)
    cut = iter(itertools.cycle(cuts))

    def deliver(dst, wire):
        got, back, pos = bytearray(), bytearray(), 0
        while pos < len(wire):
            step = next(cut)
            pt, out = dst.receive(bytes(wire[pos:pos + step]))
            got += pt
            back += out
            pos += step
        return bytes(got), bytes(back)

    wire = bytearray(a.start())
    for w in writes[:early]:
        wire += a.send(w)                              # held: A has no keys yet
    got, init2 = deliver(b, wire)
    assert got == b""
    got, back = deliver(a, init2)
    wire = bytearray(back)                             # the held writes, now framed
    for i, w in enumerate(writes[early:]):
        if i == rekey_at:
            wire += a.rekey()
        wire += a.send(w)
    wire += a.close()
    got, replies = deliver(b, wire)
    assert got == b"".join(writes)
    assert b.eof_received
    b.peer_fin()
    assert deliver(a, replies) == (b"", b"")
    assert a.remote_generation == a.local_generation
