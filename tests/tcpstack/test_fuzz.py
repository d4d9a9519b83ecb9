"""Fuzz the packet input path of a LIVE StackCore (established connection present): mutated
real IPv4/TCP packets and random bytes into receive_packet.  No exception may escape, output
stays bounded, and the established connection keeps working.  FUZZ_SEGMENTS=1000000 for the
long run (default 20,000)."""
from __future__ import annotations

import os
import random

from tcpstack.endpoint import Data, Established
from tcpstack.segment import ACK, FIN, PSH, RST, SYN, TCPSegment
from tcpstack.stack import StackCore
from tcpstack.tcp import build_ip_tcp
from tests.tcpstack.test_stack import A, B, established_pair, ones_complement_checksum, pump

N = int(os.environ.get("FUZZ_SEGMENTS", "20000"))


def fuzz_one(core: StackCore, data: bytes, now: float) -> None:
    """Atheris-compatible body: feed one input, drain output."""
    core.receive_packet(data, now)
    core.packets_to_send()


def test_fuzz_live_stack():
    a, b, ep, srv = established_pair()
    cport = ep.local[1]
    rng = random.Random(1)
    base = srv.conn.rcv_nxt & 0xFFFFFFFF
    flags = [ACK, SYN, RST, FIN | ACK, PSH | ACK, SYN | ACK, 0, 0xFF]
    templates = [build_ip_tcp(TCPSegment(rng.choice([cport, 1234]), rng.choice([80, 81]),
                                         (base + rng.randrange(-70000, 70000)) & 0xFFFFFFFF,
                                         rng.getrandbits(32), f, rng.getrandbits(16),
                                         payload=b"x" * rng.randrange(0, 64)), A, B)
                 for f in flags for _ in range(8)]
    now = 0.0
    for i in range(N):
        now += 0.0001
        pkt = bytearray(rng.choice(templates))
        for _ in range(rng.randrange(1, 6)):
            pkt[rng.randrange(len(pkt))] = rng.getrandbits(8)
        if i % 2 and len(pkt) >= 40:
            # Half the inputs get a valid TCP checksum so they reach the TCB, not just the parser.
            pkt[36:38] = b"\0\0"
            seglen = len(pkt) - 20
            c = ones_complement_checksum(A + B + bytes([0, 6]) + seglen.to_bytes(2, "big") + bytes(pkt[20:]))
            pkt[36:38] = c.to_bytes(2, "big")
        elif i % 7 == 0:
            pkt = pkt[: rng.randrange(len(pkt) + 1)]
        if i % 11 == 0:
            pkt = bytearray(rng.randbytes(rng.randrange(0, 80)))
        fuzz_one(b, bytes(pkt), now)
        if i % 1000 == 0:
            b.handle_timer(now)
    assert len(b.endpoints()) < 200
    assert srv.conn.state.name == "ESTABLISHED"
    ep.send(b"still alive", now)
    pump(a, b, now)
    got = b"".join(e.data for e in iter(srv.next_event, None) if isinstance(e, Data))
    assert got == b"still alive"
