"""tcpstack.tools.trace: the readable per-segment trace with state transitions."""
from __future__ import annotations

from tcpcrypt.provider import TcpcryptProvider
from tcpstack.wire.segment import ACK, PSH, SYN, TCPSegment
from tcpstack.host.stack import StackCore
from tcpstack.wire.tcp import build_ip_tcp
from tcpstack.tools.trace import Tracer, flag_letters
from tests.tcpstack.hosts import pump

C, S = bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2])


def test_format_packet_relative_numbers_flags_and_options():
    tr = Tracer()
    syn = TCPSegment(40000, 80, 4_294_967_290, 0, SYN, 64240, mss=1460, wscale=7,
                     sack_permitted=True, tsval=5, eno=(bytes([0x01, 0x23]),))
    assert tr.format_packet("out", build_ip_tcp(syn, C, S), 10.0) == (
        "0.000000 out 10.0.0.1:40000 > 10.0.0.2:80 [S] seq 0 win 64240 "
        "<mss 1460,ws 7,sackOK,ts,eno b=1 X25519> len 0")
    synack = TCPSegment(80, 40000, 1000, 4_294_967_291, SYN | ACK, 65535, mss=1400)
    assert tr.format_packet("in", build_ip_tcp(synack, S, C), 10.5) == (
        "0.500000 in  10.0.0.2:80 > 10.0.0.1:40000 [S.] seq 0 ack 1 win 65535 <mss 1400> len 0")
    data = TCPSegment(40000, 80, 4_294_967_291, 1001, PSH | ACK, 502, payload=b"x" * 10,
                      sack_blocks=((1100, 1200),))
    assert tr.format_packet("out", build_ip_tcp(data, C, S), 11.0) == (
        "1.000000 out 10.0.0.1:40000 > 10.0.0.2:80 [P.] seq 1:11 ack 1 win 502 "
        "<sack 100-200> len 10")
    assert "malformed" in tr.format_packet("in", b"\x45\x00", 11.0)
    assert flag_letters(0) == "none"


def test_tracer_on_live_stacks_shows_eno_syn_and_state_transitions():
    a = StackCore(["10.0.0.1"], security=TcpcryptProvider())
    b = StackCore(["10.0.0.2"], security=TcpcryptProvider())
    lines: list[str] = []
    Tracer(a, lines.append)
    b.listen(80, "10.0.0.2")
    ep = a.connect("10.0.0.2", 80, 0.0)
    pump(a, b, 0.0)
    ep.close(0.1)
    pump(a, b, 0.1)
    port = ep.local[1]
    assert lines[0] == f"0.000000 --- 10.0.0.1:{port} 10.0.0.2:80 CLOSED -> SYN-SENT"
    assert lines[1].startswith(f"0.000000 out 10.0.0.1:{port} > 10.0.0.2:80 [S] seq 0 ")
    assert "eno" in lines[1] and "X25519" in lines[1]
    assert any(l.endswith("SYN-SENT -> ESTABLISHED") for l in lines)
    assert any(l.endswith("ESTABLISHED -> FIN-WAIT-1") for l in lines)
