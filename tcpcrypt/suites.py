"""tcpcrypt algorithm suites and configuration: TEPs (key agreement) and AEADs.

Implements RFC 8548:
  section 5  key-agreement schemes: ECDHE-P256/P521 (compressed points with a two-byte length
             prefix, validated), X25519/X448 (raw keys, all-zero shared secret rejected);
             N_A_LEN = N_B_LEN = K_LEN = 32, CPRF = HKDF-Expand-SHA256
  section 6  AEAD algorithms and their ae_key_len / ae_nonce_len (Table 3)
  section 7  TEP identifiers (Table 4) and AEAD identifiers (Table 5)
and the per-connection knobs of RFC 8548 3.3/3.5 and draft-ietf-tcpinc-api-06 section 3
(TCP_CRYPT_ACONF / BCONF: offered AEADs and their order of preference).

Every primitive comes from the ``cryptography`` package; nothing is hand-rolled.
"""
from __future__ import annotations

import abc

import logging
from dataclasses import dataclass
from typing import Any, Callable

from cryptography.hazmat.primitives.asymmetric import ec, x448, x25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from .errors import TcpcryptProtocolError

log = logging.getLogger(__name__)

# --- RFC 8548 section 7, Table 4: TEP identifiers ------------------------------------------
TEP_P256 = 0x21        # TCPCRYPT_ECDHE_P256        (OPTIONAL)
TEP_P521 = 0x22        # TCPCRYPT_ECDHE_P521        (OPTIONAL)
TEP_CURVE25519 = 0x23  # TCPCRYPT_ECDHE_Curve25519  (REQUIRED)
TEP_CURVE448 = 0x24    # TCPCRYPT_ECDHE_Curve448    (RECOMMENDED)

# --- RFC 8548 section 7, Table 5: AEAD identifiers (two-byte sym_cipher values) ------------
AEAD_AES_128_GCM = 0x0001
AEAD_AES_256_GCM = 0x0002
AEAD_CHACHA20_POLY1305 = 0x0010

# --- RFC 8548 section 5: lengths common to the four TEPs -----------------------------------
N_A_LEN = 32
N_B_LEN = 32
K_LEN = 32
TAG_LEN = 16           # all three AEADs of section 6 have a 16-byte tag (RFC 5116 5.1/5.2, RFC 8439 2.8)


@dataclass(frozen=True, slots=True)
class AEADSuite:
    """One row of RFC 8548 Table 3."""
    ident: int
    name: str
    key_len: int       # ae_key_len
    nonce_len: int     # ae_nonce_len
    factory: Callable[[bytes], Any]

    def new(self, key: bytes) -> Any:
        """The AEAD object for one traffic key (construct once per key, reuse per frame)."""
        return self.factory(key)


AEADS: dict[int, AEADSuite] = {
    AEAD_AES_128_GCM: AEADSuite(AEAD_AES_128_GCM, "AEAD_AES_128_GCM", 16, 12, AESGCM),
    AEAD_AES_256_GCM: AEADSuite(AEAD_AES_256_GCM, "AEAD_AES_256_GCM", 32, 12, AESGCM),
    AEAD_CHACHA20_POLY1305: AEADSuite(AEAD_CHACHA20_POLY1305, "AEAD_CHACHA20_POLY1305", 32, 12,
                                      ChaCha20Poly1305),
}


class KeyAgreement(abc.ABC):
    """One TEP's key-agreement scheme (RFC 8548 section 5).

    ``pub_wire_len`` is the number of bytes Pub_A / Pub_B occupy in Init1 / Init2, including
    the two-byte length prefix for the NIST curves.
    """
    __slots__ = ("tep", "name", "pub_wire_len")

    tep: int
    name: str
    pub_wire_len: int

    @abc.abstractmethod
    def generate(self) -> Any:
        ...

    @abc.abstractmethod
    def public_wire(self, private_key: Any) -> bytes:
        ...

    @abc.abstractmethod
    def parse_public(self, wire: bytes) -> Any:
        """Decode and validate a peer public key; TcpcryptProtocolError if invalid."""
        ...

    @abc.abstractmethod
    def exchange(self, private_key: Any, peer_public: Any) -> bytes:
        """ES (RFC 8548 3.3); TcpcryptProtocolError when key validation fails (section 5)."""
        ...


class _NistCurve(KeyAgreement):
    """ECDHE over P-256 / P-521: ECSVDP-DH (IEEE 1363), points in compressed form (section 5)."""
    __slots__ = ("curve", "point_len", "field_p")

    def __init__(self, tep: int, name: str, curve: ec.EllipticCurve, coord_len: int, p: int) -> None:
        self.tep, self.name, self.curve = tep, name, curve
        self.point_len = 1 + coord_len           # compressed: 0x02/0x03 || x
        self.pub_wire_len = 2 + self.point_len    # two-byte big-endian pubkey_len prefix
        self.field_p = p

    def generate(self) -> ec.EllipticCurvePrivateKey:
        return ec.generate_private_key(self.curve)

    def public_wire(self, private_key: ec.EllipticCurvePrivateKey) -> bytes:
        point = private_key.public_key().public_bytes(Encoding.X962, PublicFormat.CompressedPoint)
        return self.point_len.to_bytes(2, "big") + point

    def parse_public(self, wire: bytes) -> ec.EllipticCurvePublicKey:
        # Section 5: "MUST encode these pubkey values in compressed format" and "MUST validate
        # these pubkey values according to ... A.16.10 of [IEEE-1363]": we accept exactly a
        # compressed point whose x is a field element and which decodes onto the curve
        # (OpenSSL checks the curve equation; cofactor 1, so every such point has order n).
        if len(wire) != self.pub_wire_len:
            raise TcpcryptProtocolError(f"{self.name}: public key field has {len(wire)} bytes")
        # pubkey_len: the figure of section 5 numbers the structure's bytes 0 .. L-1, which
        # would make L the length of the whole structure (prefix included), while the prose
        # ("prefixed by a two-byte length") and the field's name read L as the length of the
        # point.  We send the point's length (the prose reading) and accept both: for a
        # given curve a compressed point has one fixed length, so point_len and
        # point_len + 2 cannot be confused, and the field length is fixed either way.
        plen = int.from_bytes(wire[:2], "big")
        if plen != self.point_len and plen != self.pub_wire_len:
            raise TcpcryptProtocolError(
                f"{self.name}: pubkey_len {plen}; a compressed point has {self.point_len} "
                f"bytes ({self.pub_wire_len} with the length prefix)")
        point = bytes(wire[2:])
        if point[0] not in (2, 3):
            raise TcpcryptProtocolError(f"{self.name}: public key is not a compressed point")
        if int.from_bytes(point[1:], "big") >= self.field_p:
            raise TcpcryptProtocolError(f"{self.name}: public key x coordinate out of range")
        try:
            return ec.EllipticCurvePublicKey.from_encoded_point(self.curve, point)
        except ValueError as exc:
            raise TcpcryptProtocolError(f"{self.name}: invalid public key ({exc})") from None

    def exchange(self, private_key: ec.EllipticCurvePrivateKey,
                 peer_public: ec.EllipticCurvePublicKey) -> bytes:
        try:
            return private_key.exchange(ec.ECDH(), peer_public)   # x coordinate, field-size octets
        except ValueError as exc:
            raise TcpcryptProtocolError(f"{self.name}: key agreement failed ({exc})") from None


class _Montgomery(KeyAgreement):
    """ECDHE with X25519 / X448 (RFC 7748), raw public keys without length prefix (section 5)."""
    __slots__ = ("priv_cls", "pub_cls")

    def __init__(self, tep: int, name: str, priv_cls: Any, pub_cls: Any, klen: int) -> None:
        self.tep, self.name = tep, name
        self.priv_cls, self.pub_cls = priv_cls, pub_cls
        self.pub_wire_len = klen

    def generate(self) -> Any:
        return self.priv_cls.generate()

    def public_wire(self, private_key: Any) -> bytes:
        return private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    def parse_public(self, wire: bytes) -> Any:
        if len(wire) != self.pub_wire_len:
            raise TcpcryptProtocolError(f"{self.name}: public key has {len(wire)} bytes")
        return self.pub_cls.from_public_bytes(bytes(wire))

    def exchange(self, private_key: Any, peer_public: Any) -> bytes:
        # Section 5: "MUST check whether the computed Diffie-Hellman shared secret is the
        # all-zero value and abort if so" (RFC 7748 section 6).  OpenSSL already refuses it;
        # the explicit check keeps the rule visible and independent of the backend.
        try:
            es = private_key.exchange(peer_public)
        except ValueError as exc:
            raise TcpcryptProtocolError(f"{self.name}: key agreement failed ({exc})") from None
        if not any(es):
            raise TcpcryptProtocolError(f"{self.name}: all-zero shared secret")
        return es


_P256_P = 2**256 - 2**224 + 2**192 + 2**96 - 1
_P521_P = 2**521 - 1

TEPS: dict[int, KeyAgreement] = {
    TEP_P256: _NistCurve(TEP_P256, "TCPCRYPT_ECDHE_P256", ec.SECP256R1(), 32, _P256_P),
    TEP_P521: _NistCurve(TEP_P521, "TCPCRYPT_ECDHE_P521", ec.SECP521R1(), 66, _P521_P),
    TEP_CURVE25519: _Montgomery(TEP_CURVE25519, "TCPCRYPT_ECDHE_Curve25519",
                                x25519.X25519PrivateKey, x25519.X25519PublicKey, 32),
    TEP_CURVE448: _Montgomery(TEP_CURVE448, "TCPCRYPT_ECDHE_Curve448",
                              x448.X448PrivateKey, x448.X448PublicKey, 56),
}


def is_tcpcrypt_tep(tep: int) -> bool:
    return tep in TEPS


# Largest application chunk per frame: clen = len(plaintext) + TAG_LEN must be < 2**16
# (RFC 8548 3.6), plaintext = flags(1) + data (we never send URGp).
MAX_FRAME_DATA = (1 << 16) - 1 - TAG_LEN - 1


@dataclass(frozen=True)
class TcpcryptConfig:
    """Per-connection tcpcrypt policy.

    teps  -- TEPs to offer / accept, in INCREASING order of priority (the ENO convention:
             RFC 8547 makes the last acceptable TEP win).  Default: X25519 first choice (the
             REQUIRED TEP, section 8.3: constant-time implementations, no point validation
             pitfalls, fastest), X448 next (RECOMMENDED, larger security margin), then the
             OPTIONAL NIST curves, P-256 (faster, more widely deployed) above P-521.
    aeads -- AEADs to offer in Init1 (role A, TCP_CRYPT_ACONF) and the INCREASING order of
             preference used to pick one from Init1 (role B, TCP_CRYPT_BCONF).  Default:
             AES-128-GCM highest (fastest with AES-NI, REQUIRED, so universally available),
             then AES-256-GCM, then ChaCha20-Poly1305 (faster only without AES hardware).
    resumption      -- offer and accept session resumption (3.5 policy 1 when False)
    cache_secrets   -- cache ss[i+1] for later resumption (3.5 policy 2 when False)
    nonce_len       -- resumption nonce length, 0..8; 8 by default (3.5: MUST default to
                       eight bytes when reuse of session secrets cannot be prohibited)
    frame_size      -- maximum application bytes per encryption frame; by default the largest
                       the 16-bit clen allows (3.6, 4.2): one frame per application write
                       up to 64 KiB (a longer write is cut into equal frames), so the per-frame
                       cost (header, tag, one AEAD call) is paid as rarely as possible
    rekey_after_frames / rekey_after_bytes -- AEAD usage limits per key set: reaching either
                       makes the next frame start a new generation (3.8).  RFC 8446 5.5 allows
                       AES-GCM ~2**24.5 full TLS records (2**14 bytes) per key, ~2**38.5 bytes:
                       2**38 bytes, and 2**24 frames, stay under it whatever the frame size.
    """
    teps: tuple[int, ...] = (TEP_P521, TEP_P256, TEP_CURVE448, TEP_CURVE25519)
    aeads: tuple[int, ...] = (AEAD_CHACHA20_POLY1305, AEAD_AES_256_GCM, AEAD_AES_128_GCM)
    resumption: bool = True
    cache_secrets: bool = True
    nonce_len: int = 8
    frame_size: int = MAX_FRAME_DATA
    rekey_after_frames: int | None = 1 << 24
    rekey_after_bytes: int | None = 1 << 38

    def __post_init__(self) -> None:
        if not self.teps or any(t not in TEPS for t in self.teps) or len(set(self.teps)) != len(self.teps):
            raise ValueError(f"teps must be distinct tcpcrypt TEPs from {sorted(TEPS)}: {self.teps}")
        if not self.aeads or any(a not in AEADS for a in self.aeads) or len(set(self.aeads)) != len(self.aeads):
            raise ValueError(f"aeads must be distinct identifiers from {sorted(AEADS)}: {self.aeads}")
        if len(self.aeads) > 255:
            raise ValueError("at most 255 AEADs fit in Init1's nciphers byte")
        if not 0 <= self.nonce_len <= 8:
            raise ValueError("nonce_len must be 0..8 (RFC 8548 3.5)")
        if not 1 <= self.frame_size <= MAX_FRAME_DATA:
            raise ValueError(f"frame_size must be 1..{MAX_FRAME_DATA} (RFC 8548 3.6: clen < 2**16)")
        for name in ("rekey_after_frames", "rekey_after_bytes"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise ValueError(f"{name} must be positive or None")
