"""The tcpcrypt bulk data path (RFC 8548 3.6, 4.2): frame sizing on the sender, and every way
a receiver's segments can cut the frame stream -- a frame straddling calls (assembled), frames
wholly inside one call (decrypted straight from it), a header cut anywhere, many small
segments before a frame completes (the fast path) -- with tampering in each position.
"""
from __future__ import annotations

import os
import random
import struct

import pytest

from tcpcrypt.errors import TcpcryptIntegrityError
from tcpcrypt.frames import FRAME_HEADER_LEN, FrameKey, open_frame, seal
from tcpcrypt.suites import (AEAD_AES_128_GCM, AEAD_CHACHA20_POLY1305, AEADS, MAX_FRAME_DATA,
                             TAG_LEN, TcpcryptConfig)

from tests.tcpcrypt.sessions import negotiate, pair


def frames_of(wire: bytes) -> list[tuple[int, int]]:
    """(control, clen) of each frame in a run of whole frames."""
    out, pos = [], 0
    while pos < len(wire):
        control, clen = struct.unpack_from(">BH", wire, pos)
        out.append((control, clen))
        pos += FRAME_HEADER_LEN + clen
    assert pos == len(wire)
    return out


def test_default_frame_size_is_the_largest_clen_allows():
    assert TcpcryptConfig().frame_size == MAX_FRAME_DATA == 65518      # 1 + 65518 + 16 = 65535
    a, b = pair()
    wire = a.send(bytes(65518))
    assert frames_of(wire) == [(0, 65535)]


@pytest.mark.parametrize("n, frame_size, sizes", [
    (65536, MAX_FRAME_DATA, [32768, 32768]),      # not 65518 + a runt of 18
    (10, 4, [4, 3, 3]),
    (12, 4, [4, 4, 4]),
    (1 << 20, MAX_FRAME_DATA, [61681] * 16 + [61680]),   # 17 frames: 17 * 61680 + 16
])
def test_long_writes_are_cut_into_equal_frames(n, frame_size, sizes):
    a, b = pair(frame_size=frame_size)
    msg = os.urandom(n)
    wire = a.send(msg)
    got = [clen - TAG_LEN - 1 for _, clen in frames_of(wire)]
    assert got == sizes and sum(got) == n
    assert all(s <= frame_size for s in got)
    pt, out = b.receive(wire)
    assert pt == msg and out == b""


def test_sealed_frames_are_a_buffer_the_caller_owns():
    a, b = pair()
    w1 = a.send(b"one")
    w2 = a.send(b"two")
    assert w1 is not w2 and bytes(w1) != bytes(w2)
    assert b.receive(w1)[0] == b"one" and b.receive(w2)[0] == b"two"


def stream(frame_size: int, writes: list[int], aead=AEAD_AES_128_GCM):
    a, b = pair(aead=aead, frame_size=frame_size)
    msgs = [os.urandom(n) for n in writes]
    wire = b"".join(bytes(a.send(m)) for m in msgs)
    return a, b, b"".join(msgs), wire


@pytest.mark.parametrize("seed", range(12))
def test_any_cut_of_large_frames(seed):
    """Cuts much smaller than, around, and larger than frames, and cuts inside headers: the
    plaintext is the same, always bytes, and each piece comes out once its tag verified."""
    rng = random.Random(seed)
    a, b, msg, wire = stream(rng.choice([700, 4096, 65518]),
                             [rng.choice([1, 3, 700, 5000, 65536, 100_000]) for _ in range(8)])
    got, pos = bytearray(), 0
    while pos < len(wire):
        step = rng.choice([1, 2, 3, 4, 1448, 7000, 65483, 200_000])
        pt, out = b.receive(wire[pos:pos + step])
        assert type(pt) is bytes and out == b""
        got += pt
        pos += step
    assert bytes(got) == msg
    assert b.frames_received == a.frames_sent


def test_header_cut_at_every_position_of_a_straddling_frame():
    first = FRAME_HEADER_LEN + 1 + 1000 + TAG_LEN
    for cut in range(first - 2, first + FRAME_HEADER_LEN + 2):
        a, b = pair(frame_size=1000)
        msgs = [os.urandom(1000) for _ in range(3)]
        wire = b"".join(bytes(a.send(m)) for m in msgs)
        pt1, _ = b.receive(wire[:cut])
        pt2, _ = b.receive(wire[cut:cut + 2])      # header bytes may be split 1 + 2 or 2 + 1
        pt3, _ = b.receive(wire[cut + 2:])
        assert pt1 + pt2 + pt3 == b"".join(msgs)


def test_frames_after_the_init_message_in_one_segment():
    """Host B wrote before Init1 arrived: Init2 and many frames reach A in one segment, then
    one with the rest of a cut frame (3.3, 3.6)."""
    cfg = TcpcryptConfig(aeads=(AEAD_CHACHA20_POLY1305,), frame_size=5)
    a, b = negotiate(cfg, cfg)
    init1 = a.start()
    msg = os.urandom(103)
    assert b.send(msg) == b""
    _, back = b.receive(init1)
    cut = len(back) - 7                              # inside the last frame
    pt1, out = a.receive(back[:cut])
    pt2, _ = a.receive(back[cut:])
    assert out == b"" and pt1 + pt2 == msg and len(pt1) == 103 - 4    # 19 x 5 + 2 x 4 bytes
    assert a.frames_received == 21


def test_many_small_segments_then_a_bad_tag_release_nothing():
    """The fast path (segments that complete no frame) never returns plaintext, and the last
    segment of a forged frame kills the session with an integrity error (3.6)."""
    a, b = pair()
    good = bytes(a.send(os.urandom(40_000)))
    bad = bytearray(a.send(os.urandom(40_000)))
    bad[-1] ^= 0x01                                   # the tag
    assert b.receive(good)[0] != b""
    for i in range(0, len(bad) - 1448, 1448):
        assert b.receive(bad[i:i + 1448]) == (b"", b"")
    with pytest.raises(TcpcryptIntegrityError):
        b.receive(bad[(len(bad) - 1) // 1448 * 1448:])
    with pytest.raises(TcpcryptIntegrityError):
        b.receive(b"")                                # dead: the same error again


@pytest.mark.parametrize("where", ["held", "inside", "tail"])
def test_one_forged_frame_in_a_call_releases_nothing_of_that_call(where):
    """A call that completes a held frame, opens whole frames in its data and keeps a tail:
    whichever frame is forged, the call returns nothing (3.6: abort, nothing unauthenticated,
    and not even the authentic frames of the same call are released)."""
    a, b = pair(frame_size=1000)
    frames = [bytearray(a.send(os.urandom(1000))) for _ in range(5)]
    lens = [len(f) for f in frames]
    victim = {"held": 0, "inside": 2, "tail": 3}[where]
    frames[victim][FRAME_HEADER_LEN + 10] ^= 0x80
    wire = b"".join(bytes(f) for f in frames)
    first_cut = lens[0] // 2                          # frame 0 straddles the two calls
    second_cut = sum(lens[:4]) - 100                  # frame 3 straddles the next
    assert b.receive(wire[:first_cut]) == (b"", b"")
    if where == "tail":
        pt, _ = b.receive(wire[first_cut:second_cut])  # frames 0..2 authentic: released
        assert len(pt) == 3000
        with pytest.raises(TcpcryptIntegrityError):
            b.receive(wire[second_cut:])
    else:
        with pytest.raises(TcpcryptIntegrityError):
            b.receive(wire[first_cut:second_cut])


def test_one_frame_key_for_many_offsets():
    """The nonce buffer is rewritten per frame: frames sealed at scattered offsets under one
    key all open at their own offset and at no other (3.6: N = frame_ID XOR NR)."""
    suite = AEADS[AEAD_AES_128_GCM]
    tk = os.urandom(suite.key_len + suite.nonce_len)
    k = FrameKey(suite, tk, 0)
    offsets = [0, 1, 2**32, 2**63 - 1, 77, 2**64 - 1]
    frames = [seal(k, off, off.to_bytes(8, "big")) for off in offsets]
    for off, fr in zip(offsets, frames):
        assert open_frame(k, off, fr)[3] == off.to_bytes(8, "big")
        with pytest.raises(TcpcryptIntegrityError):
            open_frame(k, off ^ 1, fr)


def test_each_aead_is_set_up_at_key_setup_not_in_the_first_frame():
    from tcpcrypt import frames
    for ident, suite in AEADS.items():
        FrameKey(suite, os.urandom(suite.key_len + suite.nonce_len), 0)
        assert ident in frames._warm
