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

It never outlives the test (issue 11): `--parent PID` (the pytest process; `ip netns exec`
execs in place, so that is our parent) makes it exit when that process is gone -- at once
through PR_SET_PDEATHSIG (SIGKILL on the parent's death, even a SIGKILLed pytest), and by
polling getppid() besides -- and `--deadline SECONDS` bounds its run time whatever happens
(exit status 3, with a message).
"""
from __future__ import annotations

import argparse
import ctypes
import json
import os
import random
import signal
import socket
import sys
import threading
import time

if __name__ == "__main__":
    # Run as a script, its own directory comes first on sys.path: tests/, whose tests/tcpstack
    # package would shadow the real tcpstack.  Put the project root there instead.
    _here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [os.path.dirname(_here)] + [p for p in sys.path if os.path.abspath(p or ".") != _here]

from tcpstack.wire.segment import ACK, PSH, RST, SYN, TCPSegment  # noqa: E402
from tcpstack.wire.tcp import build_ip_tcp  # noqa: E402


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


PR_SET_PDEATHSIG = 1


def guard(parent: int | None, deadline: float | None) -> None:
    """Exit when `parent` dies or after `deadline` seconds, whichever comes first."""
    if parent is not None:
        try:
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):     # pragma: no cover - not Linux: the poll below
            pass
        if os.getppid() != parent:            # it died before prctl took effect
            os._exit(4)
    end = None if deadline is None else time.monotonic() + deadline

    def watch() -> None:
        while True:
            if parent is not None and os.getppid() != parent:
                os._exit(4)
            if end is not None and time.monotonic() >= end:
                print(f"blind_attacker: deadline of {deadline} s reached, exiting", file=sys.stderr,
                      flush=True)
                os._exit(3)
            time.sleep(0.2)

    threading.Thread(target=watch, daemon=True, name="guard").start()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--parent", type=int, help="exit when this process (our parent) is gone")
    ap.add_argument("--deadline", type=float, help="exit after this many seconds in any case")
    args = ap.parse_args()
    guard(args.parent, args.deadline)
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
