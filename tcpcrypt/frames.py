"""tcpcrypt encryption frames (RFC 8548 sections 3.6, 4.2, 4.2.1, 4.2.2, 4.2.3).

    frame     = control(1) | clen(2, big-endian) | ciphertext(clen)
    control   = cres(7 bits, zero when sending, ignored when receiving) | rekey(bit 0)
    plaintext = flags(1) [| urgent(2) when URGp] | data
    flags     = fres(6 bits, zero / ignored) | URGp(bit 1) | FINp(bit 0)
    AAD       = control | clen                                     (4.2.2)
    frame_ID  = zero bytes | offset(8, big-endian), ae_nonce_len long (4.2.3)
    N         = frame_ID XOR NR,  traffic key = K(ae_key_len) | NR(ae_nonce_len)  (3.6, Figure 4)

``offset`` is the byte offset of the frame's first byte in the sender's TCP data stream
(3.6: "the offset in the framing stream, not the plaintext application stream"), i.e. it
counts every byte the host sent on the connection, the Init1/Init2 message included.

The hot path makes one copy of the application's bytes on the way out and none on the way
in: ``seal_into`` lays out a frame's plaintext (flags, urgent pointer, data) in a per-thread
scratch buffer and has the AEAD write the ciphertext straight into the caller's frame buffer
(``encrypt_into``); ``open_into`` decrypts straight into the caller's output buffer
(``decrypt_into``).  Input and output never overlap: cryptography 51 and later refuse an
in-place ``encrypt_into`` ("data and buf must not overlap"), and nothing here relies on it.
``encrypt_into``/``decrypt_into`` exist from cryptography 47 on, the oldest release declared.
"""
from __future__ import annotations

import logging
import os
import struct
import threading

from cryptography.exceptions import InvalidTag

from .errors import TcpcryptError, TcpcryptIntegrityError
from .suites import TAG_LEN, AEADSuite

log = logging.getLogger(__name__)

CONTROL_REKEY = 0x01      # control bit 0 (4.2)
FLAG_FINP = 0x01          # flags bit 0 (4.2.1)
FLAG_URGP = 0x02          # flags bit 1 (4.2.1)
FRAME_HEADER = struct.Struct(">BH")   # 4.2: control | clen (also the AAD, 4.2.2)
FRAME_HEADER_LEN = FRAME_HEADER.size  # 3
MAX_CLEN = 0xFFFF         # 3.6: ciphertext length < 2**16

U16 = struct.Struct(">H")            # a 16-bit field: the urgent pointer (4.2.1)


_U64 = struct.Struct(">Q")
_warm: set[int] = set()         # AEAD identifiers already set up (and checked) in this process
_scratch = threading.local()    # .buf: this thread's plaintext staging buffer for seal_into


def _staging(size: int) -> bytearray:
    """This thread's scratch buffer for one frame's plaintext, at least size bytes long.

    One per thread, grown to the largest frame sealed so far (at most 65,519 bytes: 3.6's clen
    bound), so the copy of the application's bytes always lands in memory that is already hot
    and no connection keeps a buffer of its own (10,000 idle sessions cost nothing here)."""
    buf: bytearray | None = getattr(_scratch, "buf", None)
    if buf is None or len(buf) < size:
        buf = _scratch.buf = bytearray(max(size, 4096))
    return buf


def _warm_up(suite: AEADSuite) -> None:
    """Pay the AEAD's one-time set-up (OpenSSL cipher fetch: ~60 us on the first AES-GCM use
    in a process, ~25 us more for the other key size) at key setup instead of in the first
    frame, and check that the installed ``cryptography`` does exactly what seal_into/open_into
    rely on: ``encrypt_into`` from a memoryview slice of one buffer into a slice of another,
    with the AAD a slice of that other buffer (as seal_into calls it), and ``decrypt_into``
    from a read-only view into a slice of a bytearray, giving back the plaintext.  A throwaway
    random key is used (never a connection's key, so no nonce of a real key is spent).
    Raises TcpcryptError, naming the installed version, when the library behaves otherwise."""
    import cryptography
    key = os.urandom(suite.key_len)
    nonce = bytes(suite.nonce_len)
    plain = b"\x01warm-up"
    try:
        aead = suite.new(key)
        src = memoryview(bytearray(b"??" + plain))[2:]
        dst = bytearray(FRAME_HEADER_LEN + len(plain) + TAG_LEN)
        dmv = memoryview(dst)
        FRAME_HEADER.pack_into(dst, 0, 0, len(plain) + TAG_LEN)
        aead.encrypt_into(nonce, src, dmv[:FRAME_HEADER_LEN], dmv[FRAME_HEADER_LEN:])
        out = bytearray(len(plain) + 1)
        aead.decrypt_into(nonce, memoryview(bytes(dst))[FRAME_HEADER_LEN:], bytes(dst[:FRAME_HEADER_LEN]),
                          memoryview(out)[1:])
        ok = bytes(out[1:]) == plain and dst[FRAME_HEADER_LEN:] == suite.new(key).encrypt(
            nonce, plain, bytes(dst[:FRAME_HEADER_LEN]))
    except (AttributeError, TypeError, ValueError) as e:
        raise TcpcryptError(
            f"cryptography {cryptography.__version__}: {suite.name} cannot seal/open frames as "
            f"tcpcrypt needs ({type(e).__name__}: {e}); cryptography 47 or later is required") from e
    if not ok:
        raise TcpcryptError(f"cryptography {cryptography.__version__}: {suite.name} "
                            "encrypt_into/decrypt_into gave a wrong result")
    _warm.add(suite.ident)


class FrameKey:
    """One traffic key k_ab[j] or k_ba[j]: the AEAD object (built once) and the nonce randomizer."""
    __slots__ = ("aead", "nr_hi", "nr_lo", "generation", "suite", "_nonce", "_lo_at", "_aad")

    def __init__(self, suite: AEADSuite, traffic_key: bytes, generation: int) -> None:
        if len(traffic_key) != suite.key_len + suite.nonce_len:
            raise ValueError("traffic key length does not match the AEAD")
        if suite.ident not in _warm:
            _warm_up(suite)
        self.suite = suite
        self.aead = suite.new(traffic_key[:suite.key_len])
        nr = traffic_key[suite.key_len:]
        # frame_ID is ae_nonce_len - 8 zero bytes then the 8-byte offset: only the low 8 bytes
        # of NR are ever XORed with anything.
        self.nr_hi = nr[:-8]
        self.nr_lo = int.from_bytes(nr[-8:], "big")
        self.generation = generation
        # One nonce buffer and one AAD buffer per key, rewritten in place for every frame
        # (the AEAD reads them synchronously; nothing keeps a reference).
        self._nonce = bytearray(nr)
        self._lo_at = len(nr) - 8
        self._aad = bytearray(FRAME_HEADER_LEN)

    def nonce(self, offset: int) -> bytearray:
        """N = frame_ID XOR NR (3.6), written into this key's nonce buffer (valid until the
        next call)."""
        _U64.pack_into(self._nonce, self._lo_at, self.nr_lo ^ offset)
        return self._nonce


def frame_len(data_len: int, urgent: bool = False) -> int:
    """Bytes on the wire for one frame carrying data_len application bytes."""
    return FRAME_HEADER_LEN + (3 if urgent else 1) + data_len + TAG_LEN


def seal_into(key: FrameKey, buf: memoryview, pos: int, offset: int, data: bytes | memoryview,
              flags: int = 0, rekey: bool = False, urgent: int | None = None) -> int:
    """Write one frame at buf[pos:]; return the position after it.

    buf must be writable and hold frame_len(len(data), urgent is not None) bytes from pos.
    The plaintext is laid out in this thread's scratch buffer (the one copy of data) and the
    AEAD writes its ciphertext and tag straight into buf: input and output never overlap.
    """
    if urgent is not None:
        flags |= FLAG_URGP
        hlen = 3
    else:
        flags &= ~FLAG_URGP
        hlen = 1
    n = len(data)
    plen = hlen + n
    clen = plen + TAG_LEN
    if clen > MAX_CLEN:
        raise ValueError(f"frame too large: clen {clen} must be < 2**16 (RFC 8548 3.6)")
    control = CONTROL_REKEY if rekey else 0
    FRAME_HEADER.pack_into(buf, pos, control, clen)             # 4.2: control | clen, also the AAD (4.2.2)
    p = pos + FRAME_HEADER_LEN
    plain = _staging(plen)
    plain[0] = flags                                    # 4.2.1: flags [| urgent] | data
    if urgent is not None:
        U16.pack_into(plain, 1, urgent)
    plain[hlen:plen] = data
    with memoryview(plain) as pmv:
        key.aead.encrypt_into(key.nonce(offset), pmv[:plen], buf[pos:p], buf[p:p + clen])
    return p + clen


def seal(key: FrameKey, offset: int, data: bytes | memoryview = b"", flags: int = 0,
         rekey: bool = False, urgent: int | None = None) -> bytes:
    """One frame as bytes (convenience form of seal_into)."""
    buf = bytearray(frame_len(len(data), urgent is not None))
    seal_into(key, memoryview(buf), 0, offset, data, flags, rekey, urgent)
    return bytes(buf)


def open_into(key: FrameKey, offset: int, control: int, clen: int, ciphertext: memoryview,
              out: memoryview) -> None:
    """Authenticate and decrypt one frame's ciphertext into out (len clen - TAG_LEN).

    The AAD is rebuilt from the received control byte (reserved bits included, as sent) and
    clen (4.2.2).  A tag failure raises TcpcryptIntegrityError (3.6: abort, error distinct
    from end-of-file); out then holds garbage that the caller must discard.
    """
    try:
        aad = key._aad
        FRAME_HEADER.pack_into(aad, 0, control, clen)
        key.aead.decrypt_into(key.nonce(offset), ciphertext, aad, out)
    except InvalidTag:
        raise TcpcryptIntegrityError(
            f"encryption frame at stream offset {offset} failed authentication "
            f"(generation {key.generation})") from None


def open_frame(key: FrameKey, offset: int, frame: bytes | memoryview) -> tuple[int, int, int | None, bytes]:
    """Decrypt one complete frame: (control, flags, urgent or None, data).  For tests and tools."""
    mv = memoryview(frame)
    control, clen = FRAME_HEADER.unpack_from(mv, 0)
    if len(mv) != FRAME_HEADER_LEN + clen or clen < TAG_LEN + 1:
        raise ValueError("not exactly one well-formed frame")
    out = bytearray(clen - TAG_LEN)
    open_into(key, offset, control, clen, mv[FRAME_HEADER_LEN:], memoryview(out))
    flags = out[0]
    if flags & FLAG_URGP:
        return control, flags, U16.unpack_from(out, 1)[0], bytes(out[3:])
    return control, flags, None, bytes(out[1:])
