"""tcpstack.tools.diagram: ladder diagrams (text, SVG) of one connection from captured packets."""
from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from tcpstack.tools.diagram import build, main, parse_conn, read_pcap, render_svg, render_text
from tcpstack.errors import ParseError
from tcpstack.tools.pcap import PcapWriter
from tcpstack.wire.segment import ACK, FIN, PSH, SYN, TCPSegment
from tcpstack.wire.tcp import build_ip_tcp

C, S = bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2])
ISN_C, ISN_S = 1_000_000, 4_294_967_000        # the server's wraps: relative numbers must not
ENO_SYN = bytes([0x01, 0x23, 0x21])            # global b=1, X25519, P-256 (RFC 8547 4.2)


def scripted() -> list[tuple[float, str, bytes]]:
    c, s = ISN_C + 1, (ISN_S + 1) & 0xFFFFFFFF
    segs = [
        (0.000, C, S, TCPSegment(40000, 80, ISN_C, 0, SYN, 64240, mss=1460, wscale=7,
                                 sack_permitted=True, tsval=1, eno=(ENO_SYN,))),
        (0.010, S, C, TCPSegment(80, 40000, ISN_S, c, SYN | ACK, 65535, mss=1400,
                                 eno=(bytes([0x23]),))),
        (0.020, C, S, TCPSegment(40000, 80, c, s, ACK, 502)),
        (0.021, C, S, TCPSegment(40000, 80, c, s, PSH | ACK, 502, payload=b"a" * 100)),
        (0.022, C, S, TCPSegment(40000, 80, c + 100, s, PSH | ACK, 502, payload=b"b" * 100)),
        (0.032, S, C, TCPSegment(80, 40000, s, c, ACK, 1000,
                                 sack_blocks=((c + 100, c + 200),))),
        (0.040, C, S, TCPSegment(40000, 80, c, s, PSH | ACK, 502, payload=b"a" * 100)),
        (0.050, S, C, TCPSegment(80, 40000, s, c + 200, ACK, 1000)),
        (0.060, C, S, TCPSegment(40000, 80, c + 200, s, FIN | ACK, 502)),
        (0.070, S, C, TCPSegment(80, 40000, s, c + 201, FIN | ACK, 1000)),
        (0.080, C, S, TCPSegment(40000, 80, c + 201, (s + 1) & 0xFFFFFFFF, ACK, 502)),
    ]
    # Noise from another connection, which the diagram leaves out.
    other = (0.015, S, C, TCPSegment(22, 50000, 7, 0, SYN, 1000))
    segs.insert(2, other)
    return [(t, "out", build_ip_tcp(seg, src, dst)) for t, src, dst, seg in segs]


EXPECTED = """\
      time  10.0.0.1:40000             10.0.0.2:80
  0.000000  |----------------------------------->|  SYN seq=0 len=0 win=64240 <mss 1460,ws 7,sackOK,ts,eno b=1 X25519 P-256>
  0.010000  |<-----------------------------------|  SYN ACK seq=0 ack=1 len=0 win=65535 <mss 1400,eno X25519>
  0.020000  |----------------------------------->|  ACK seq=1 ack=1 len=0 win=502
  0.021000  |----------------------------------->|  PSH ACK seq=1 ack=1 len=100 win=502
  0.022000  |----------------------------------->|  PSH ACK seq=101 ack=1 len=100 win=502
  0.032000  |<-----------------------------------|  ACK seq=1 ack=1 len=0 win=1000 <sack 101-201>
  0.040000  |===================================>|  PSH ACK seq=1 ack=1 len=100 win=502  (retransmission)
  0.050000  |<-----------------------------------|  ACK seq=1 ack=201 len=0 win=1000
  0.060000  |----------------------------------->|  FIN ACK seq=201 ack=1 len=0 win=502
  0.070000  |<-----------------------------------|  FIN ACK seq=1 ack=202 len=0 win=1000
  0.080000  |----------------------------------->|  ACK seq=202 ack=2 len=0 win=502
11 segments, 1 retransmissions
"""


def test_text_ladder_of_a_scripted_connection_is_exact():
    assert render_text(build(scripted())) == EXPECTED


def test_states_are_drawn_on_their_side_and_max_elides():
    d = build(scripted(), states=[(0.0, ("10.0.0.1", 40000), "SYN-SENT"),
                                  (0.020, ("10.0.0.2", 80), "ESTABLISHED")])
    text = render_text(d, max_segments=3)
    lines = text.splitlines()
    assert lines[1] == "  0.000000  [SYN-SENT]" + " " * 27 + "|"   # the right lifeline
    assert len(lines[1]) == len(lines[2].split("|  ")[0]) + 1
    assert lines[4] == "  0.020000  |" + " " * 36 + "[ESTABLISHED]"   # on the right lifeline
    assert "... 8 more segments" in text


def test_svg_is_well_formed_with_one_arrow_per_segment_and_retransmissions_red():
    d = build(scripted(), states=[(0.02, ("10.0.0.2", 80), "ESTABLISHED")])
    root = ET.fromstring(render_svg(d))
    ns = {"s": "http://www.w3.org/2000/svg"}
    arrows = root.findall(".//s:line[@class='arrow']", ns)
    assert len(arrows) == 11
    assert [a.get("stroke") for a in arrows].count("#c00000") == 1
    assert len(root.findall(".//s:g[@class='state']", ns)) == 1
    # Left-to-right arrows start on the left lifeline.
    assert arrows[0].get("x1") == "170" and arrows[1].get("x1") == "730"


def test_pcap_round_trip_and_connection_filter(tmp_path, capsys):
    path = str(tmp_path / "c.pcap")
    w = PcapWriter(path)
    for t, _d, p in scripted():
        w.write(p, t)
    w.close()
    assert [len(p) for _t, _d, p in read_pcap(path)] == [len(p) for _t, _d, p in scripted()]
    assert render_text(build(read_pcap(path))) == EXPECTED
    only = build(read_pcap(path), parse_conn("10.0.0.2:22-10.0.0.1:50000"))
    assert len(only.arrows) == 1 and only.arrows[0].flags == "SYN"
    svg = str(tmp_path / "c.svg")
    assert main([path, "--svg", svg, "--max", "4"]) == 0
    assert "... 7 more segments" in capsys.readouterr().out
    ET.parse(svg)
    with pytest.raises(ParseError):
        build(read_pcap(path), parse_conn("10.9.9.9:1-10.9.9.8:2"))
