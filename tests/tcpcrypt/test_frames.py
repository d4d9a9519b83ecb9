"""Encryption frames (RFC 8548 3.6, 4.2): layout, nonce construction, AAD, sealing without overlap.

Expected ciphertexts are computed here with the AEAD classes directly from the RFC's layout
(control | clen | AEAD(K, frame_ID XOR NR, flags | [urgent |] data, control | clen)).
"""
from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tcpcrypt.errors import TcpcryptIntegrityError
from tcpcrypt.frames import (CONTROL_REKEY, FLAG_FINP, FLAG_URGP, FrameKey, frame_len, open_frame,
                             seal, seal_into)
from tcpcrypt.suites import AEAD_AES_128_GCM, AEAD_AES_256_GCM, AEAD_CHACHA20_POLY1305, AEADS

ALL = (AEAD_AES_128_GCM, AEAD_AES_256_GCM, AEAD_CHACHA20_POLY1305)


def ref_frame(suite, traffic_key: bytes, offset: int, plaintext: bytes, control: int) -> bytes:
    k, nr = traffic_key[:suite.key_len], traffic_key[suite.key_len:]
    frame_id = bytes(suite.nonce_len - 8) + offset.to_bytes(8, "big")          # 4.2.3
    nonce = bytes(x ^ y for x, y in zip(frame_id, nr))                          # 3.6
    aad = bytes((control,)) + (len(plaintext) + 16).to_bytes(2, "big")         # 4.2.2
    return aad + suite.factory(k).encrypt(nonce, plaintext, aad)


@pytest.mark.parametrize("aead", ALL)
@pytest.mark.parametrize("offset", [0, 75, 2**32 + 5, 2**64 - 1])
def test_seal_matches_reference(aead, offset):
    suite = AEADS[aead]
    tk = os.urandom(suite.key_len + suite.nonce_len)
    key = FrameKey(suite, tk, 0)
    assert seal(key, offset, b"data") == ref_frame(suite, tk, offset, b"\x00data", 0)
    assert seal(key, offset, b"", flags=FLAG_FINP, rekey=True) == \
        ref_frame(suite, tk, offset, b"\x01", CONTROL_REKEY)
    assert seal(key, offset, b"u", urgent=0x1234) == ref_frame(suite, tk, offset, b"\x02\x12\x34u", 0)


def test_layout():
    suite = AEADS[AEAD_AES_128_GCM]
    key = FrameKey(suite, bytes(28), 0)
    f = seal(key, 0, b"abc", rekey=True)
    assert f[0] == CONTROL_REKEY and int.from_bytes(f[1:3], "big") == 1 + 3 + 16 == len(f) - 3
    assert frame_len(3) == len(f)
    assert open_frame(key, 0, f) == (CONTROL_REKEY, 0, None, b"abc")
    f = seal(key, 9, b"xyz", flags=FLAG_FINP, urgent=2)
    assert open_frame(key, 9, f) == (0, FLAG_FINP | FLAG_URGP, 2, b"xyz")


def test_wrong_offset_key_or_aad_fails():
    suite = AEADS[AEAD_CHACHA20_POLY1305]
    key = FrameKey(suite, os.urandom(44), 0)
    other = FrameKey(suite, os.urandom(44), 0)
    f = seal(key, 100, b"payload")
    with pytest.raises(TcpcryptIntegrityError):
        open_frame(key, 101, f)
    with pytest.raises(TcpcryptIntegrityError):
        open_frame(other, 100, f)
    g = bytearray(f)
    g[0] ^= 0x80                                      # cres bit: part of the AAD
    with pytest.raises(TcpcryptIntegrityError):
        open_frame(key, 100, bytes(g))


def test_seal_into_packs_several_frames_in_one_buffer():
    suite = AEADS[AEAD_AES_256_GCM]
    tk = os.urandom(44)
    key = FrameKey(suite, tk, 0)
    chunks = [b"a" * 10, b"", b"c" * 1000]
    buf = bytearray(sum(frame_len(len(c)) for c in chunks))
    mv = memoryview(buf)
    pos = 0
    for c in chunks:
        pos = seal_into(key, mv, pos, 500 + pos, memoryview(c))
    assert pos == len(buf)
    expect = b""
    for c in chunks:
        expect += ref_frame(suite, tk, 500 + len(expect), b"\x00" + c, 0)
    assert bytes(buf) == expect


def test_frame_size_limit():
    key = FrameKey(AEADS[AEAD_AES_128_GCM], bytes(28), 0)
    seal(key, 0, bytes(65518))                         # clen = 65535
    with pytest.raises(ValueError):
        seal(key, 0, bytes(65519))


@settings(max_examples=60, deadline=None)
@given(data=st.binary(max_size=300), offset=st.integers(0, 2**64 - 1),
       flags=st.integers(0, 255), urgent=st.none() | st.integers(0, 0xFFFF))
def test_roundtrip_property(data, offset, flags, urgent):
    key = FrameKey(AEADS[AEAD_AES_128_GCM], bytes(range(28)), 3)
    f = seal(key, offset, data, flags=flags, urgent=urgent)
    control, got_flags, got_urgent, got = open_frame(key, offset, f)
    assert got == data and got_urgent == urgent
    assert got_flags & ~FLAG_URGP == flags & ~FLAG_URGP


# --- the contract with the cryptography package --------------------------------------------
# cryptography 51 made AEAD.encrypt_into() refuse overlapping input and output ("data and buf
# must not overlap"); releases 47-50 accepted it, and a frame sealed in place broke every
# encrypted send on a fresh install.  These tests hold the AEAD to 51's rule whatever release
# is installed, so a return to in-place sealing fails here on any machine.

def _spans(b) -> tuple[int, int] | None:
    """(address, length) of a writable buffer's memory; None for a read-only one (an
    immutable bytes object cannot share memory with a writable output)."""
    import ctypes
    mv = memoryview(b).cast("B")
    if mv.readonly:
        return None
    return ctypes.addressof(ctypes.c_char.from_buffer(mv)), mv.nbytes


def _overlap(x, y) -> bool:
    a, b = _spans(x), _spans(y)
    return a is not None and b is not None and a[0] < b[0] + b[1] and b[0] < a[0] + a[1]


class _StrictAEAD:
    """Wraps a real AEAD; refuses overlapping data/out as cryptography >= 51 does."""
    def __init__(self, inner):
        self.inner = inner
        self.calls = 0

    def encrypt_into(self, nonce, data, aad, out):
        if _overlap(data, out):
            raise ValueError("data and buf must not overlap")
        self.calls += 1
        return self.inner.encrypt_into(nonce, data, aad, out)

    def decrypt_into(self, nonce, data, aad, out):
        if _overlap(data, out):
            raise ValueError("data and buf must not overlap")
        return self.inner.decrypt_into(nonce, data, aad, out)


@pytest.mark.parametrize("aead", ALL)
@pytest.mark.parametrize("urgent", [None, 7])
def test_seal_into_never_overlaps_input_and_output(aead, urgent):
    suite = AEADS[aead]
    tk = os.urandom(suite.key_len + suite.nonce_len)
    key = FrameKey(suite, tk, 0)
    key.aead = strict = _StrictAEAD(key.aead)
    chunks = [b"x" * 5, bytes(range(256)) * 40, b""]
    buf = bytearray(sum(frame_len(len(c), urgent is not None) for c in chunks))
    mv = memoryview(buf)
    pos = 0
    for c in chunks:
        start = pos
        # the application's bytes as a view into a mutable buffer, as the session passes them
        pos = seal_into(key, mv, pos, 900 + pos, memoryview(bytearray(c)), urgent=urgent)
        plain = (b"\x02" + urgent.to_bytes(2, "big") if urgent is not None else b"\x00") + c
        assert bytes(buf[start:pos]) == ref_frame(suite, tk, 900 + start, plain, 0)
        assert open_frame(key, 900 + start, buf[start:pos])[3] == c
    assert strict.calls == len(chunks)


def test_the_startup_probe_checks_what_sealing_relies_on(monkeypatch):
    """The probe at key setup exercises encrypt_into/decrypt_into exactly as seal_into and
    open_into call them; an AEAD without them, or one that refuses the calls, fails key setup
    with a clear TcpcryptError naming the installed cryptography, not the first write."""
    import dataclasses

    from tcpcrypt import frames
    from tcpcrypt.errors import TcpcryptError

    class NoInto:          # what cryptography < 47 offers: encrypt()/decrypt() only
        def __init__(self, key):
            self._a = AEADS[AEAD_AES_128_GCM].factory(key)

        def encrypt(self, *a):
            return self._a.encrypt(*a)

    class Refuses(NoInto):
        def encrypt_into(self, *a):
            raise ValueError("data and buf must not overlap")

    for cls, word in ((NoInto, "AttributeError"), (Refuses, "must not overlap")):
        fake = dataclasses.replace(AEADS[AEAD_AES_128_GCM], ident=0x7F00, factory=cls)
        monkeypatch.setattr(frames, "_warm", set())
        with pytest.raises(TcpcryptError, match=r"cryptography \d+.*" + word):
            FrameKey(fake, bytes(28), 0)
