"""The tcpcrypt key schedule (RFC 8548 sections 3.1, 3.3, 3.4, 3.5, 4.3).

    Extract(S, IKM)       = HKDF-Extract-SHA256 = HMAC-SHA256(S, IKM)           (3.1, RFC 5869 2.2)
    CPRF(K, CONST, L)     = HKDF-Expand-SHA256(K, info=CONST, L)                (3.1, section 5)
    PRK                   = Extract(N_A, eno_transcript | Init1 | Init2 | ES)   (3.3)
    ss[0] = PRK,  ss[i]   = CPRF(ss[i-1], CONST_NEXTK, K_LEN)                   (3.3)
    mk[0]                 = CPRF(ss[i], CONST_REKEY | sn[i], K_LEN)             (3.3)
    mk[j]                 = CPRF(mk[j-1], CONST_REKEY, K_LEN)                   (3.3, 3.8)
    k_ab[j] / k_ba[j]     = CPRF(mk[j], CONST_KEY_A / CONST_KEY_B, ae_key_len + ae_nonce_len)
    session_id[i]         = TEP-byte | CPRF(ss[i], CONST_SESSID | sn[i], K_LEN) (3.4)
    resume[i]             = CPRF(ss[i], CONST_RESUME, 18)                        (3.5)
    sn[0] = b"",  sn[i]   = nonce_a | nonce_b                                    (3.3, 3.5)

HMAC-SHA256 is the standard library's one-shot ``hmac.digest`` (OpenSSL underneath); HKDF
(RFC 5869) on top of it is two lines, a fifth of the cost of building a ``cryptography``
HKDFExpand object for every 32-byte output, which matters for handshakes per second.  The
RFC 5869 test vectors in tests/tcpcrypt/test_keys.py pin it.
"""
from __future__ import annotations

import hmac

from .suites import K_LEN, AEADSuite

# RFC 8548 section 4.3, Table 1 (the one-byte CONST_* values).
CONST_NEXTK = b"\x01"
CONST_SESSID = b"\x02"
CONST_REKEY = b"\x03"
CONST_KEY_A = b"\x04"
CONST_KEY_B = b"\x05"
CONST_RESUME = b"\x06"

RESUME_ID_LEN = 18       # 3.5: resume[i] = CPRF(ss[i], CONST_RESUME, 18)
RESUME_HALF_LEN = 9      # 3.5 Figures 2/3: resume[i]{0..8} and resume[i]{9..17}

_digest = hmac.digest
_HASH_LEN = 32


def extract(salt: bytes, ikm: bytes) -> bytes:
    """HKDF-Extract with SHA-256: HMAC-SHA256(salt, IKM) (RFC 8548 Figure 1, RFC 5869 2.2)."""
    return _digest(salt, ikm, "sha256")


def cprf(key: bytes, const: bytes, length: int) -> bytes:
    """CPRF(K, CONST, L) = first L bytes of HKDF-Expand-SHA256(K, CONST) (RFC 8548 Figure 1):
    T(1) = HMAC(K, CONST | 0x01), T(i) = HMAC(K, T(i-1) | CONST | i) (RFC 5869 2.3)."""
    if not 0 < length <= 255 * _HASH_LEN:
        raise ValueError(f"HKDF-Expand length {length} out of range 1..{255 * _HASH_LEN}")
    t = _digest(key, const + b"\x01", "sha256")
    if length <= _HASH_LEN:
        return t[:length]
    out = [t]
    for i in range(2, -(-length // _HASH_LEN) + 1):
        t = _digest(key, t + const + bytes((i,)), "sha256")
        out.append(t)
    return b"".join(out)[:length]


def compute_prk(n_a: bytes, eno_transcript: bytes, init1: bytes, init2: bytes, es: bytes) -> bytes:
    """PRK = Extract(N_A, eno_transcript | Init1 | Init2 | ES) (RFC 8548 3.3)."""
    return _digest(n_a, b"".join((eno_transcript, init1, init2, es)), "sha256")


def next_session_secret(ss: bytes) -> bytes:
    """ss[i] = CPRF(ss[i-1], CONST_NEXTK, K_LEN) (RFC 8548 3.3)."""
    return cprf(ss, CONST_NEXTK, K_LEN)


def first_master_key(ss: bytes, sn: bytes) -> bytes:
    """mk[0] = CPRF(ss[i], CONST_REKEY | sn[i], K_LEN) (RFC 8548 3.3)."""
    return cprf(ss, CONST_REKEY + sn, K_LEN)


def next_master_key(mk: bytes) -> bytes:
    """mk[j] = CPRF(mk[j-1], CONST_REKEY, K_LEN) (RFC 8548 3.3, used by rekeying 3.8)."""
    return cprf(mk, CONST_REKEY, K_LEN)


def traffic_key(mk: bytes, writer_was_a: bool, aead: AEADSuite) -> bytes:
    """k_ab[j] (writer_was_a) or k_ba[j]: ae_key_len bytes of key K then ae_nonce_len bytes NR."""
    return cprf(mk, CONST_KEY_A if writer_was_a else CONST_KEY_B, aead.key_len + aead.nonce_len)


def session_id(tep_byte: int, ss: bytes, sn: bytes) -> bytes:
    """session_id[i] = TEP-byte | CPRF(ss[i], CONST_SESSID | sn[i], K_LEN) (RFC 8548 3.4).

    tep_byte is the suboption byte host B sent: the TEP identifier with the "v" bit (0x80).
    """
    return bytes((tep_byte,)) + cprf(ss, CONST_SESSID + sn, K_LEN)


def resume_id(ss: bytes) -> bytes:
    """resume[i] = CPRF(ss[i], CONST_RESUME, 18) (RFC 8548 3.5)."""
    return cprf(ss, CONST_RESUME, RESUME_ID_LEN)


def resume_half(rid: bytes, original_role: str) -> bytes:
    """The half a host sends: {0..8} if it played "A" with ss[0], {9..17} if "B" (3.5)."""
    return rid[:RESUME_HALF_LEN] if original_role == "A" else rid[RESUME_HALF_LEN:]


def session_nonce(nonce_a: bytes, nonce_b: bytes) -> bytes:
    """sn[i] = nonce_a | nonce_b (RFC 8548 3.5).

    Reading: nonce_a / nonce_b are named by Figures 2 and 3 as the nonces in the suboptions of
    the hosts whose ORIGINAL role (in the session with ss[0]) was "A" / "B", the same roles
    that pick the identifier halves; not the roles of the current connection.
    """
    return nonce_a + nonce_b
