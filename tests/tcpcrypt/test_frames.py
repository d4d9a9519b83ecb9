"""Encryption frames (RFC 8548 3.6, 4.2): layout, nonce construction, AAD, in-place sealing.

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
