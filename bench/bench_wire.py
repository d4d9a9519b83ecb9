"""Wire-format throughput: build_ip_tcp, parse_ip + parse_tcp (checksum verified) and the bare
checksum, for a 1460-byte (Ethernet MSS) and a 64 KB (GSO/TSO-sized) data segment, IPv4
and IPv6.  Run: python bench/bench_wire.py [seconds-per-case]
"""
from __future__ import annotations

import ipaddress
import os
import sys
import time
from typing import Callable

from tcpstack.wire.checksum import internet_checksum
from tcpstack.sansio import parse_ip
from tcpstack.wire.segment import ACK, PSH, TCPSegment
from tcpstack.wire.tcp import build_ip_tcp, parse_tcp

ADDRS = {
    "v4": (ipaddress.ip_address("10.0.0.1").packed, ipaddress.ip_address("10.0.0.2").packed),
    "v6": (ipaddress.ip_address("fd00::1").packed, ipaddress.ip_address("fd00::2").packed),
}


def rate(fn: Callable[[], object], seconds: float) -> float:
    """Calls per second of fn, measured over about `seconds`."""
    n, batch = 0, 16
    start = time.perf_counter()
    while True:
        for _ in range(batch):
            fn()
        n += batch
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return n / elapsed
        batch = min(batch * 2, 4096)


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 0.5
    print(f"{'case':34} {'segments/s':>12} {'MB/s':>9}")
    for size in (1460, 65000):
        payload = os.urandom(size)
        for fam, (src, dst) in ADDRS.items():
            seg = TCPSegment(40000, 443, 123456789, 987654321, ACK | PSH, 512, payload,
                             tsval=1000, tsecr=2000)
            pkt = build_ip_tcp(seg, src, dst)

            def build() -> bytes:
                return build_ip_tcp(seg, src, dst)

            def parse() -> TCPSegment:
                h, pl = parse_ip(pkt)
                return parse_tcp(pl, h.src, h.dst)

            def csum() -> int:
                return internet_checksum(payload)

            for name, fn in (("build_ip_tcp", build), ("parse_ip+parse_tcp", parse),
                             ("internet_checksum(payload)", csum)):
                r = rate(fn, seconds)
                print(f"{name + f' {fam} {size}B':34} {r:12,.0f} {r * size / 1e6:9.1f}")


if __name__ == "__main__":
    main()
