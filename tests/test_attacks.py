"""Blind off-path attacks (RFC 5961) against the sans-IO StackCore with a virtual clock:
10,000 spoofed RSTs / SYNs / data segments with in-window sequence guesses must neither reset
nor corrupt an established connection; the victim answers with (throttled) challenge ACKs."""
from __future__ import annotations

import random

from tcpstack.host.endpoint import Data, Established
from tcpstack.wire.segment import ACK, PSH, RST, SYN, TCPSegment
from tcpstack.host.stack import StackCore
from tcpstack.wire.tcp import build_ip_tcp
from tests.tcpstack.hosts import A, B, established_pair, pump


def test_10000_blind_rst_syn_data_do_not_reset_or_corrupt():
    a, b, ep, srv = established_pair()
    cport = ep.local[1]
    rcv_nxt = srv.conn.rcv_nxt & 0xFFFFFFFF
    rng = random.Random(5961)
    now = 0.0
    for i in range(10_000):
        now += 0.001
        # The attacker knows the 4-tuple and guesses sequence numbers near the window.
        seq = (rcv_nxt + rng.randrange(1, 60000)) & 0xFFFFFFFF
        kind = i % 3
        if kind == 0:
            seg = TCPSegment(cport, 80, seq, 0, RST, 0)
        elif kind == 1:
            seg = TCPSegment(cport, 80, seq, 0, SYN, 65535)
        else:
            seg = TCPSegment(cport, 80, seq, rng.getrandbits(32), ACK | PSH, 65535, payload=b"EVIL")
        b.receive_packet(build_ip_tcp(seg, A, B), now)
        b.packets_to_send()  # challenge ACKs go to the real peer; the attacker never sees them
    assert srv.conn.state.name == "ESTABLISHED"
    assert srv.conn.stats.challenge_acks > 0
    # The connection still carries exactly the real bytes.
    ep.send(b"hello", now)
    pump(a, b, now)
    evs = [e for e in iter(srv.next_event, None) if isinstance(e, Data)]
    assert b"".join(e.data for e in evs) == b"hello"
