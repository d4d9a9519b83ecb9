"""Wireshark's dissectors as an independent judge: every packet our builders emit must
dissect with good IP/TCP/ICMP checksums, nothing malformed, no expert warning or error.
Skipped when tshark is not installed."""
from __future__ import annotations

import ipaddress
import shutil
import subprocess
from pathlib import Path

import pytest

from tcpstack.wire import icmp
from tcpstack.wire.ip import build_ipv4, build_ipv6
from tcpstack.tools.pcap import PcapWriter
from tcpstack.wire.segment import ACK, FIN, PSH, RST, SYN, TCPSegment
from tcpstack.wire.tcp import build_ip_tcp

TSHARK = shutil.which("tshark")
pytestmark = pytest.mark.skipif(TSHARK is None, reason="tshark not installed")

A4 = ipaddress.ip_address("10.0.0.1").packed
B4 = ipaddress.ip_address("10.0.0.2").packed
A6 = ipaddress.ip_address("fd00::1").packed
B6 = ipaddress.ip_address("fd00::2").packed
WARNING = 0x00600000          # Wireshark expert severity PI_WARN; PI_ERROR is 0x00800000


def packets() -> list[tuple[str, bytes]]:
    out: list[tuple[str, bytes]] = []
    for a, b in ((A4, B4), (A6, B6)):
        v6 = len(a) == 16
        syn = build_ip_tcp(TCPSegment(40000, 80, 1000, 0, SYN, 65535, mss=1460, sack_permitted=True,
                                      tsval=1, tsecr=0, wscale=7, eno=(b"\x20\x21",)), a, b)
        out += [
            ("tcp", syn),
            ("tcp", build_ip_tcp(TCPSegment(80, 40000, 5000, 1001, SYN | ACK, 65535, mss=1400,
                                            sack_permitted=True, wscale=7, eno=(b"\x20",)), b, a)),
            ("tcp", build_ip_tcp(TCPSegment(40000, 80, 1001, 5001, ACK, 512, eno=(b"",)), a, b)),
            ("tcp", build_ip_tcp(TCPSegment(40000, 80, 1001, 5001, ACK | PSH, 512,
                                            bytes(range(256)) * 5 + b"odd", tsval=2, tsecr=1), a, b)),
            ("tcp", build_ip_tcp(TCPSegment(80, 40000, 5001, 1001, ACK, 512, tsval=3, tsecr=2,
                                            sack_blocks=((2401, 3801), (5201, 6601), (7001, 8001))),
                                 b, a)),
            ("tcp", build_ip_tcp(TCPSegment(40000, 80, 2284, 5001, FIN | ACK, 512), a, b)),
            ("tcp", build_ip_tcp(TCPSegment(80, 40000, 5001, 0, RST, 0), b, a)),
            ("icmp", icmp.build_icmp_echo_request(a, b, ident=1, seq=2, data=b"ping", v6=v6)),
            ("icmp", icmp.build_icmp_error(syn, b, a, v6=v6, type=2 if v6 else 3,
                                           code=0 if v6 else 4, mtu=1280)),
            ("icmp", icmp.build_icmp_error(syn, b, a, v6=v6, type=1 if v6 else 3, code=4 if v6 else 3)),
        ]
    tcp6 = build_ip_tcp(TCPSegment(1, 2, 3, 4, ACK, 5, b"ext"), A6, B6)[40:]
    pad = bytes([0, 0, 1, 4, 0, 0, 0, 0])        # Next Header, Hdr Ext Len 0, PadN(4)
    out.append(("tcp", build_ipv6(A6, B6, 6, tcp6, extensions=[(0, pad), (60, pad)])))
    out.append(("ip", build_ipv4(A4, B4, 253, b"experimental", options=b"\x01\x01\x01\x00")))
    return out


def test_tshark_dissects_cleanly(tmp_path: Path) -> None:
    pkts = packets()
    pcap = tmp_path / "wire.pcap"
    w = PcapWriter(str(pcap))
    for i, (_, p) in enumerate(pkts):
        w.write(p, 1000.0 + i)
    w.close()
    res = subprocess.run(
        [TSHARK or "tshark", "-r", str(pcap), "-o", "tcp.check_checksum:TRUE",
         "-o", "ip.check_checksum:TRUE", "-T", "fields", "-E", "separator=|",
         "-e", "frame.number", "-e", "_ws.malformed", "-e", "ip.checksum.status",
         "-e", "tcp.checksum.status", "-e", "icmp.checksum.status", "-e", "icmpv6.checksum.status",
         "-e", "_ws.expert.severity", "-e", "_ws.expert.message", "-e", "tcp.option_kind"],
        capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    rows = [line.split("|") for line in res.stdout.splitlines()]
    assert len(rows) == len(pkts)
    for (kind, pkt), row in zip(pkts, rows):
        num, malformed, ip_ok, tcp_ok, icmp_ok, icmp6_ok, sev, msg, opts = row
        where = f"frame {num} ({kind}): {row}"
        assert malformed == "", where
        if pkt[0] >> 4 == 4:
            assert ip_ok.split(",")[0] == "1", where                 # 1 = Good
        if kind == "tcp":
            assert tcp_ok.split(",")[0] == "1", where
        if kind == "icmp":
            assert (icmp6_ok if pkt[0] >> 4 == 6 else icmp_ok).split(",")[0] == "1", where
            assert all(s == "1" for s in tcp_ok.split(",") if s), where   # quoted SYN intact
        # Wireshark flags every RST as a warning ("Connection reset"); nothing else may be.
        for s, m in zip(sev.split(","), msg.split(",")):
            assert not s or int(s) < WARNING or m == "Connection reset (RST)", where
    # The ENO option (kind 69) is on the wire where we put it.
    assert "69" in rows[0][8].split(",") and "69" in rows[2][8].split(",")
