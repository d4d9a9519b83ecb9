"""tcpcrypt session test helpers shared by the test modules: two sessions wired by hand,
with the ENO result built here (FakeENOResult has the fields of tcpcrypt.eno.ENOResult)."""
from __future__ import annotations

import os
from dataclasses import dataclass


from tcpcrypt.session import TcpcryptSession, make_offers, make_responder
from tcpcrypt.suites import (AEAD_AES_128_GCM, AEAD_AES_256_GCM, AEAD_CHACHA20_POLY1305, TEP_CURVE448, TEP_CURVE25519, TEP_P256, TEP_P521, TcpcryptConfig)

ALL_TEPS = (TEP_P256, TEP_P521, TEP_CURVE25519, TEP_CURVE448)
ALL_AEADS = (AEAD_AES_128_GCM, AEAD_AES_256_GCM, AEAD_CHACHA20_POLY1305)
PEER_OF_A, PEER_OF_B = "10.0.0.2", "10.0.0.1"     # each side's name for the other host



@dataclass(frozen=True)
class FakeENOResult:
    tep: int
    role: str
    local_data: bytes
    peer_data: bytes
    transcript: bytes
    local_app_aware: int = 0
    peer_app_aware: int = 0
    local_offers: tuple = ()
    peer_offers: tuple = ()


def eno_option(offers, passive: bool) -> bytes:
    """An RFC 8547 SYN-form ENO option for these offers (length bytes before v = 1 data)."""
    body = bytearray(b"\x01" if passive else b"")
    for o in offers:
        if o.data:
            body.append(0x80 | len(o.data))         # length byte (4.4): data length of next
            body.append(0x80 | o.tep)
            body += o.data
        else:
            body.append(o.tep)
    return bytes((69, 2 + len(body))) + bytes(body)


def negotiate(cfg_a=None, cfg_b=None, cache_a=None, cache_b=None, rng_a=os.urandom,
              rng_b=os.urandom, transcript_b=None):
    """Run the TCP-ENO part by hand: A's SYN offers, B's answer; return (session A, session B)."""
    cfg_a = cfg_a or TcpcryptConfig()
    cfg_b = cfg_b or TcpcryptConfig()
    offers = tuple(make_offers(cfg_a, cache_a, PEER_OF_A, rng=rng_a))
    answer = tuple(make_responder(cfg_b, cache_b, PEER_OF_B, rng=rng_b)(offers))
    assert answer, "no common TEP"
    chosen = answer[-1]
    a_data = next(o.data for o in offers if o.tep == chosen.tep)
    transcript = eno_option(offers, False) + eno_option(answer, True)
    ra = FakeENOResult(chosen.tep, "A", a_data, chosen.data, transcript,
                       local_offers=offers, peer_offers=answer)
    rb = FakeENOResult(chosen.tep, "B", chosen.data, a_data, transcript_b or transcript,
                       local_offers=answer, peer_offers=offers)
    return (TcpcryptSession(ra, cfg_a, cache_a, PEER_OF_A, rng=rng_a),
            TcpcryptSession(rb, cfg_b, cache_b, PEER_OF_B, rng=rng_b))


def handshake(a: TcpcryptSession, b: TcpcryptSession) -> None:
    w = a.start()
    assert b.start() == b""
    pt, back = b.receive(w)
    assert pt == b""
    pt, out = a.receive(back)
    assert pt == b"" and out == b""
    assert a.established and b.established


def pair(tep=TEP_CURVE25519, aead=AEAD_AES_128_GCM, **kw):
    cfg = TcpcryptConfig(teps=(tep,), aeads=(aead,), **kw)
    a, b = negotiate(cfg, cfg)
    handshake(a, b)
    return a, b


def pump(src: TcpcryptSession, dst: TcpcryptSession, wire: bytes) -> bytes:
    """Deliver wire bytes to dst, bouncing replies until quiet; return dst's plaintext."""
    got = bytearray()
    while wire:
        pt, back = dst.receive(wire)
        got += pt
        wire = b""
        if back:
            pt2, wire = src.receive(back)
            assert pt2 == b""
    return bytes(got)


# --- handshake matrix ------------------------------------------------------------------------

