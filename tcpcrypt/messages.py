"""tcpcrypt key-exchange messages Init1 and Init2: encode, parse, validate (RFC 8548 4.1, 3.3).

    Init1 = INIT1_MAGIC(4) | message_len(4) | nciphers(1) | sym_cipher[K](2 each) | N_A | Pub_A | ignored
    Init2 = INIT2_MAGIC(4) | message_len(4) | sym_cipher(2)                       | N_B | Pub_B | ignored

message_len is the length of the whole message, big-endian.  We build messages with an empty
"ignored" field and accept (and ignore) trailing bytes up to message_len (4.1).  The whole
transmitted encoding, ignored bytes included, feeds the PRK (3.3), so parsers keep it.
"""
from __future__ import annotations

import logging
import struct
from dataclasses import dataclass

from .errors import TcpcryptProtocolError
from .suites import AEADS, N_A_LEN, N_B_LEN, KeyAgreement

log = logging.getLogger(__name__)

INIT1_MAGIC = 0x15101A0E   # RFC 8548 4.3
INIT2_MAGIC = 0x097105E0   # RFC 8548 4.3
HEADER_LEN = 8             # magic + message_len

# RFC 8548 does not bound message_len; a peer could announce up to 4 GiB of "ignored" bytes
# that we would have to buffer.  We refuse messages larger than this (local DoS policy).
MAX_INIT_LEN = 1 << 16

_HDR = struct.Struct(">II")


@dataclass(frozen=True, slots=True)
class Init1:
    sym_ciphers: tuple[int, ...]
    n_a: bytes
    pub_a: bytes          # wire form (NIST curves: with the two-byte length prefix)
    raw: bytes = b""      # the transmitted encoding (after parse or encode)

    def encode(self) -> bytes:
        k = len(self.sym_ciphers)
        if not 1 <= k <= 255:
            raise ValueError("Init1 needs 1..255 sym_ciphers")
        body = struct.pack(f">B{k}H", k, *self.sym_ciphers) + self.n_a + self.pub_a
        return _HDR.pack(INIT1_MAGIC, HEADER_LEN + len(body)) + body


@dataclass(frozen=True, slots=True)
class Init2:
    sym_cipher: int
    n_b: bytes
    pub_b: bytes
    raw: bytes = b""

    def encode(self) -> bytes:
        body = struct.pack(">H", self.sym_cipher) + self.n_b + self.pub_b
        return _HDR.pack(INIT2_MAGIC, HEADER_LEN + len(body)) + body


def build_init1(sym_ciphers: tuple[int, ...], n_a: bytes, pub_a: bytes) -> Init1:
    m = Init1(tuple(sym_ciphers), n_a, pub_a)
    return Init1(m.sym_ciphers, n_a, pub_a, m.encode())


def build_init2(sym_cipher: int, n_b: bytes, pub_b: bytes) -> Init2:
    m = Init2(sym_cipher, n_b, pub_b)
    return Init2(sym_cipher, n_b, pub_b, m.encode())


def message_length(buf: bytes | bytearray | memoryview, magic: int, ka: KeyAgreement) -> int | None:
    """Length of the Init message starting at buf[0], or None while fewer than 8 bytes are known.

    Checks the magic as soon as its 4 bytes are there (early rejection of a peer that is not
    speaking tcpcrypt) and bounds message_len below by the fixed part of the message for this
    TEP and above by MAX_INIT_LEN.
    """
    n = len(buf)
    have = min(n, 4)
    if bytes(buf[:have]) != magic.to_bytes(4, "big")[:have]:
        name = "INIT1" if magic == INIT1_MAGIC else "INIT2"
        raise TcpcryptProtocolError(f"bad {name}_MAGIC: {bytes(buf[:have]).hex()}")
    if n < HEADER_LEN:
        return None
    _, mlen = _HDR.unpack_from(buf, 0)
    if magic == INIT1_MAGIC:
        minimum = HEADER_LEN + 1 + 2 + N_A_LEN + ka.pub_wire_len   # at least one sym_cipher
    else:
        minimum = HEADER_LEN + 2 + N_B_LEN + ka.pub_wire_len
    if mlen < minimum:
        raise TcpcryptProtocolError(f"Init message_len {mlen} shorter than the {minimum}-byte minimum")
    if mlen > MAX_INIT_LEN:
        raise TcpcryptProtocolError(f"Init message_len {mlen} exceeds our limit {MAX_INIT_LEN}")
    return mlen


def parse_init1(raw: bytes, ka: KeyAgreement) -> Init1:
    """Parse a complete Init1 (exactly message_len bytes).  Validates structure, not the key."""
    magic, mlen = _HDR.unpack_from(raw, 0)
    if magic != INIT1_MAGIC:
        raise TcpcryptProtocolError(f"bad INIT1_MAGIC {magic:#010x}")
    if mlen != len(raw):
        raise TcpcryptProtocolError(f"Init1 message_len {mlen} != {len(raw)} bytes given")
    k = raw[HEADER_LEN]
    if k == 0:
        raise TcpcryptProtocolError("Init1 offers no sym_cipher (nciphers = 0)")
    off = HEADER_LEN + 1 + 2 * k
    end = off + N_A_LEN + ka.pub_wire_len
    if end > mlen:
        raise TcpcryptProtocolError(f"Init1 too short: {mlen} bytes for {k} ciphers and {ka.name}")
    ciphers = struct.unpack_from(f">{k}H", raw, HEADER_LEN + 1)
    n_a = raw[off:off + N_A_LEN]
    pub = raw[off + N_A_LEN:end]
    if end != mlen:
        log.debug("Init1: ignoring %d trailing bytes (RFC 8548 4.1)", mlen - end)
    return Init1(ciphers, n_a, pub, raw)


def parse_init2(raw: bytes, ka: KeyAgreement) -> Init2:
    """Parse a complete Init2 (exactly message_len bytes).  Validates structure, not the key."""
    magic, mlen = _HDR.unpack_from(raw, 0)
    if magic != INIT2_MAGIC:
        raise TcpcryptProtocolError(f"bad INIT2_MAGIC {magic:#010x}")
    if mlen != len(raw):
        raise TcpcryptProtocolError(f"Init2 message_len {mlen} != {len(raw)} bytes given")
    off = HEADER_LEN + 2
    end = off + N_B_LEN + ka.pub_wire_len
    if end > mlen:
        raise TcpcryptProtocolError(f"Init2 too short: {mlen} bytes for {ka.name}")
    (cipher,) = struct.unpack_from(">H", raw, HEADER_LEN)
    n_b = raw[off:off + N_B_LEN]
    pub = raw[off + N_B_LEN:end]
    if end != mlen:
        log.debug("Init2: ignoring %d trailing bytes (RFC 8548 4.1)", mlen - end)
    return Init2(cipher, n_b, pub, raw)


def choose_aead(offered: tuple[int, ...], preference: tuple[int, ...]) -> int:
    """Host B's choice (3.3): our most preferred AEAD (preference is increasing) that A offered.

    Unknown identifiers in A's list are skipped (Table 5 may grow).  No common AEAD: abort.
    """
    for ident in reversed(preference):
        if ident in offered and ident in AEADS:
            return ident
    raise TcpcryptProtocolError(
        f"no acceptable AEAD in Init1 (offered {[hex(c) for c in offered]}, "
        f"we accept {[hex(c) for c in preference]})")
