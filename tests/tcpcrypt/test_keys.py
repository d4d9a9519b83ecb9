"""Known-answer tests for the primitives and the tcpcrypt key schedule (RFC 8548 3.3-3.5).

RFC 8548 publishes no test vectors.  The expected values below were computed by the slow
reference derivation ``ref_*`` in this file, written straight from the RFC's formulas with
the standard library's hmac/hashlib (never calling tcpcrypt.keys), on FIXED inputs:

  ephemeral keys  the X25519 key pairs of RFC 7748 section 6.1 (Alice = host A, Bob = host B),
                  whose shared secret ES is also given there
  N_A             bytes 0x00..0x1f        N_B   bytes 0x40..0x5f
  eno_transcript  45 03 23 | 45 04 01 23  (A's SYN option: TEP 0x23; B's: global b=1, TEP 0x23)
  Init1           15101a0e 0000004b 01 0001 N_A Pub_A   (75 bytes: one AEAD, AES-128-GCM)
  Init2           097105e0 0000004a 0001 N_B Pub_B      (74 bytes)

and then pinned as hex, so a change in either the module or the reference shows up.
"""
from __future__ import annotations

import hashlib
import hmac
from itertools import count

import pytest
from cryptography.hazmat.primitives.asymmetric import x25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

from tcpcrypt import keys
from tcpcrypt.resumption import SessionCache
from tcpcrypt.suites import AEAD_AES_128_GCM, AEADS, TEP_CURVE25519, TEPS, TcpcryptConfig

from tests.tcpcrypt.sessions import negotiate


# --- reference derivations, from the RFC text only ------------------------------------------

def ref_hmac(key: bytes, msg: bytes) -> bytes:
    return hmac.new(key, msg, hashlib.sha256).digest()


def ref_expand(prk: bytes, const: bytes, length: int) -> bytes:
    """RFC 8548 Figure 1: T(n) = HMAC-Hash(PRK, T(n-1) | CONST | n), OKM = first L octets."""
    t, okm = b"", b""
    for n in count(1):
        if len(okm) >= length:
            return okm[:length]
        t = ref_hmac(prk, t + const + bytes((n,)))
        okm += t


# --- RFC 5869 Appendix A (SHA-256 cases): our Extract and CPRF are HKDF --------------------

HKDF_CASES = [
    ("0b" * 22, "000102030405060708090a0b0c", "f0f1f2f3f4f5f6f7f8f9", 42,
     "077709362c2e32df0ddc3f0dc47bba6390b6c73bb50f9c3122ec844ad7c2b3e5",
     "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"),
    (bytes(range(0x00, 0x50)).hex(), bytes(range(0x60, 0xb0)).hex(), bytes(range(0xb0, 0x100)).hex(), 82,
     "06a6b88c5853361a06104c9ceb35b45cef760014904671014a193f40c15fc244",
     "b11e398dc80327a1c8e7f78c596a49344f012eda2d4efad8a050cc4c19afa97c59045a99cac7827271cb41c65e590e09"
     "da3275600c2f09b8367793a9aca3db71cc30c58179ec3e87c14c01d5c1f3434f1d87"),
    ("0b" * 22, "", "", 42,
     "19ef24a32c717b167f33a91d6f648bdf96596776afdb6377ac434c1c293ccb04",
     "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8"),
]


@pytest.mark.parametrize("ikm,salt,info,length,prk,okm", HKDF_CASES)
def test_hkdf_rfc5869_vectors(ikm, salt, info, length, prk, okm):
    got_prk = keys.extract(bytes.fromhex(salt), bytes.fromhex(ikm))
    assert got_prk.hex() == prk
    assert keys.cprf(got_prk, bytes.fromhex(info), length).hex() == okm
    assert ref_expand(got_prk, bytes.fromhex(info), length).hex() == okm   # the reference too


def test_chacha20_poly1305_rfc8439_vector():
    """RFC 8439 2.8.2, through the same AEAD class the AEAD_CHACHA20_POLY1305 suite uses."""
    pt = (b"Ladies and Gentlemen of the class of '99: If I could offer you only one tip for "
          b"the future, sunscreen would be it.")
    aad = bytes.fromhex("50515253c0c1c2c3c4c5c6c7")
    key = bytes(range(0x80, 0xa0))
    nonce = bytes.fromhex("07000000") + bytes.fromhex("4041424344454647")
    ct = ("d31a8d34648e60db7b86afbc53ef7ec2a4aded51296e08fea9e2b5a736ee62d63dbea45e8ca9671282fafb69da92728b"
          "1a71de0a9e060b2905d6a5b67ecd3b3692ddbd7f2d778b8c9803aee328091b58fab324e4fad675945585808b4831d7bc"
          "3ff4def08e4b7a9de576d26586cec64b6116")
    tag = "1ae10b594f09e26a7e902ecbd0600691"
    suite = AEADS[0x0010]
    assert suite.factory is ChaCha20Poly1305 and suite.key_len == 32 and suite.nonce_len == 12
    out = suite.new(key).encrypt(nonce, pt, aad)
    assert out.hex() == ct + tag
    assert suite.new(key).decrypt(nonce, out, aad) == pt


def test_aead_table3_lengths():
    assert [(s.key_len, s.nonce_len) for s in AEADS.values()] == [(16, 12), (32, 12), (32, 12)]
    assert sorted(AEADS) == [0x0001, 0x0002, 0x0010]
    assert sorted(TEPS) == [0x21, 0x22, 0x23, 0x24]


# --- the fixed handshake ---------------------------------------------------------------------

A_PRIV = bytes.fromhex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
B_PRIV = bytes.fromhex("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb")
PUB_A = bytes.fromhex("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")
PUB_B = bytes.fromhex("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f")
ES = bytes.fromhex("4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742")  # RFC 7748 6.1
N_A = bytes(range(0x00, 0x20))
N_B = bytes(range(0x40, 0x60))
TRANSCRIPT = bytes.fromhex("450323" "45040123")
INIT1 = bytes.fromhex("15101a0e" "0000004b" "01" "0001") + N_A + PUB_A
INIT2 = bytes.fromhex("097105e0" "0000004a" "0001") + N_B + PUB_B

# Pinned outputs of the reference derivation (see module docstring).
PRK = "340e033e443a3338cc33112e62c59d98e2e89e8977667fa0165f1358e79a9e3e"
SS1 = "c3b7ff607e7bc775627c8ce08bd98234f3850b1e48b1588d0a5f8e2c553fd0e1"
MK0 = "2ec1b00eadfc1002a726c08c5b7e08665ae5261ba604dddc580b1cfe14ccce7c"
MK1 = "e91b23eb5f34ea8ce7433d9db6027881662ed75d0934869acdbdbe0e5404c3df"
K_AB0 = "3339f70fb15c89328ccb3c93e712a90c82dc3cc21ba555c68bd19634"
K_BA0 = "883965bcc752c736d4d6da896960c39e8ed9f08a3902e7b19d111202"
SESSION_ID0 = "2388875e444a82f0cc220ce0c822c8ec2cc02640ce9f784fc670ee16e4e5be7da6"
RESUME1 = "2571b72ca64016297c323dd6b0aeb363c815"
# A's first frame, b"hello", at stream offset 75 (= len(Init1), RFC 8548 3.6)
FRAME0 = "000016db203a03cf22b9e83d1ffb6047ff9f0240aa66ca4796"


def ref_schedule():
    """Every value from the RFC formulas, step by step."""
    prk = ref_hmac(N_A, TRANSCRIPT + INIT1 + INIT2 + ES)          # 3.3 Extract(N_A, ...)
    ss1 = ref_expand(prk, b"\x01", 32)                              # ss[1], CONST_NEXTK
    mk0 = ref_expand(prk, b"\x03", 32)                              # mk[0], CONST_REKEY | sn[0]=""
    mk1 = ref_expand(mk0, b"\x03", 32)                              # mk[1]
    kab = ref_expand(mk0, b"\x04", 16 + 12)                         # k_ab[0], CONST_KEY_A
    kba = ref_expand(mk0, b"\x05", 16 + 12)                         # k_ba[0], CONST_KEY_B
    sid = b"\x23" + ref_expand(prk, b"\x02", 32)                    # 3.4, TEP byte v=0
    r1 = ref_expand(ss1, b"\x06", 18)                               # 3.5 resume[1]
    # 4.2: frame = control | clen | AEAD(K, N, flags|data, control|clen); N = frame_ID ^ NR
    nonce = bytes(x ^ y for x, y in zip(kab[16:], (75).to_bytes(12, "big")))
    aad = b"\x00" + (1 + 5 + 16).to_bytes(2, "big")
    frame = aad + AESGCM(kab[:16]).encrypt(nonce, b"\x00hello", aad)
    return dict(prk=prk, ss1=ss1, mk0=mk0, mk1=mk1, kab=kab, kba=kba, sid=sid, r1=r1, frame=frame)


def test_fixed_inputs_are_consistent():
    a = x25519.X25519PrivateKey.from_private_bytes(A_PRIV)
    b = x25519.X25519PrivateKey.from_private_bytes(B_PRIV)
    assert TEPS[TEP_CURVE25519].public_wire(a) == PUB_A
    assert TEPS[TEP_CURVE25519].exchange(b, a.public_key()) == ES
    assert len(INIT1) == 75 and len(INIT2) == 74


def test_reference_matches_pins():
    r = ref_schedule()
    assert [r[k].hex() for k in ("prk", "ss1", "mk0", "mk1", "kab", "kba", "sid", "r1", "frame")] == \
        [PRK, SS1, MK0, MK1, K_AB0, K_BA0, SESSION_ID0, RESUME1, FRAME0]


def test_key_schedule_functions():
    suite = AEADS[AEAD_AES_128_GCM]
    prk = keys.compute_prk(N_A, TRANSCRIPT, INIT1, INIT2, ES)
    assert prk.hex() == PRK
    assert keys.extract(N_A, TRANSCRIPT + INIT1 + INIT2 + ES).hex() == PRK
    assert keys.next_session_secret(prk).hex() == SS1
    mk0 = keys.first_master_key(prk, b"")
    assert mk0.hex() == MK0
    assert keys.next_master_key(mk0).hex() == MK1
    assert keys.traffic_key(mk0, True, suite).hex() == K_AB0
    assert keys.traffic_key(mk0, False, suite).hex() == K_BA0
    assert keys.session_id(0x23, prk, b"").hex() == SESSION_ID0
    assert keys.resume_id(bytes.fromhex(SS1)).hex() == RESUME1
    assert keys.resume_half(bytes.fromhex(RESUME1), "A").hex() == RESUME1[:18]
    assert keys.resume_half(bytes.fromhex(RESUME1), "B").hex() == RESUME1[18:]


def _fixed_rng(*chunks):
    it = iter(chunks)

    def rng(n):
        v = next(it)
        assert len(v) == n
        return v
    return rng


def test_full_session_known_answer(monkeypatch):
    """The sans-IO session, fed the fixed keys and nonces, produces exactly the pinned bytes."""
    ka = TEPS[TEP_CURVE25519]
    privs = iter([x25519.X25519PrivateKey.from_private_bytes(A_PRIV),
                  x25519.X25519PrivateKey.from_private_bytes(B_PRIV)])
    monkeypatch.setattr(type(ka), "generate", lambda self: next(privs))
    cfg = TcpcryptConfig(teps=(TEP_CURVE25519,), aeads=(AEAD_AES_128_GCM,))
    cache_a, cache_b = SessionCache(), SessionCache()
    a, b = negotiate(cfg, cfg, cache_a, cache_b, rng_a=_fixed_rng(N_A), rng_b=_fixed_rng(N_B))
    # the helper's transcript is A's and B's ENO options: the same bytes as TRANSCRIPT
    assert a._transcript == TRANSCRIPT
    assert a.start() == INIT1
    _, init2 = b.receive(INIT1)
    assert init2 == INIT2
    a.receive(init2)
    assert a.session_id.hex() == b.session_id.hex() == SESSION_ID0
    assert a.send(b"hello").hex() == FRAME0
    # both caches hold ss[1] (3.5 SHOULD), with the pinned resume[1]
    for cache, peer, role in ((cache_a, "10.0.0.2", "A"), (cache_b, "10.0.0.1", "B")):
        t = cache.take_for_offer(peer)
        assert t.index == 1 and t.ss.hex() == SS1 and t.rid.hex() == RESUME1
        assert t.original_role == role and t.aead == AEAD_AES_128_GCM and t.tep == TEP_CURVE25519


NONCE_A = bytes.fromhex("a1a2a3a4a5a6a7a8")
NONCE_B = bytes.fromhex("b1b2b3b4b5b6b7b8")


def test_resumed_session_known_answer():
    """3.5: resume[1] halves on the wire, sn[1] = nonce_a | nonce_b, keys from ss[1]."""
    ss1 = bytes.fromhex(SS1)
    sn = NONCE_A + NONCE_B
    mk0 = ref_expand(ss1, b"\x03" + sn, 32)
    kab = ref_expand(mk0, b"\x04", 28)
    kba = ref_expand(mk0, b"\x05", 28)
    sid = bytes((0x23 | 0x80,)) + ref_expand(ss1, b"\x02" + sn, 32)   # v = 1 in B's TEP byte
    ss2 = ref_expand(ss1, b"\x01", 32)
    # pinned (computed by the reference lines above)
    assert sid.hex() == "a3eff98325cc1ce77c912418e1f1aa12c3a084ea8035ab928d91392e61a234b9bd"
    assert mk0.hex() == "f572f389405d74c07aca8e99a69905adf544b20b809af8e1c5b0a4d979fd3f91"
    assert keys.session_id(0xA3, ss1, sn) == sid
    assert keys.first_master_key(ss1, sn) == mk0

    cfg = TcpcryptConfig(teps=(TEP_CURVE25519,), aeads=(AEAD_AES_128_GCM,))
    cache_a, cache_b = SessionCache(), SessionCache()
    # (negotiate() names the peer of its first / second host "10.0.0.2" / "10.0.0.1")
    cache_a.store("10.0.0.1", TEP_CURVE25519, AEAD_AES_128_GCM, "A", ss1, 1)
    cache_b.store("10.0.0.2", TEP_CURVE25519, AEAD_AES_128_GCM, "B", ss1, 1)
    # the host that was "B" originally opens actively now: it is A of this connection, sends
    # the SECOND half and nonce_b; the original "A" host answers with the first half, nonce_a.
    b_now_a, a_now_b = negotiate(cfg, cfg, cache_b, cache_a,
                                 rng_a=_fixed_rng(NONCE_B), rng_b=_fixed_rng(NONCE_A))
    assert b_now_a.role == "A" and b_now_a.resumed and a_now_b.resumed
    assert b_now_a.session_id == a_now_b.session_id == sid
    assert b_now_a.start() == b"" and a_now_b.start() == b""
    # the original "A" host still encrypts with k_ab, at stream offset 0 (no Init message)
    frame = a_now_b.send(b"hi")
    nonce = bytes(x ^ y for x, y in zip(kab[16:], bytes(12)))
    aad = b"\x00\x00\x13"
    assert frame == aad + AESGCM(kab[:16]).encrypt(nonce, b"\x00hi", aad)
    frame = b_now_a.send(b"yo")
    nonce = bytes(x ^ y for x, y in zip(kba[16:], bytes(12)))
    assert frame == aad + AESGCM(kba[:16]).encrypt(nonce, b"\x00yo", aad)
    # both caches moved on to ss[2]
    assert cache_a.take_for_offer("10.0.0.1").ss == ss2
    assert cache_b.take_for_offer("10.0.0.2").ss == ss2
