"""The sans-IO stack core: demux, listeners, RST to unknown segments, ICMP, malformed input,
driven packet by packet with a virtual clock (no loop, no sockets)."""
from __future__ import annotations


import pytest
import random
import struct

from tcpstack.wire import icmp
from tcpstack.host.endpoint import Closed, Data, Eof
from tcpstack.wire.ip import build_ipv4, parse_ip
from tcpstack.wire.segment import ACK, FIN, PSH, RST, SYN, TCPSegment
from tcpstack.host.stack import StackConfig, StackCore
from tcpstack.wire.tcp import build_ip_tcp

from tests.tcpstack.hosts import A, B, established_pair, ones_complement_checksum, pump, tcp_of


def test_rst_for_syn_to_closed_port_is_exactly_rfc9293_3_10_7_1():
    b = StackCore(["10.0.0.2"])
    syn = TCPSegment(40000, 9, 1000, 0, SYN, 65535, mss=1460)
    b.receive_packet(build_ip_tcp(syn, A, B), 0.0)
    out = b.packets_to_send()
    assert len(out) == 1
    rst = tcp_of(out[0])
    # ACK bit off in the offending segment: <SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>
    assert (rst.src_port, rst.dst_port, rst.seq, rst.ack, rst.flags) == (9, 40000, 0, 1001, RST | ACK)
    # ACK bit on: <SEQ=SEG.ACK><CTL=RST>
    stray = TCPSegment(40000, 9, 5000, 777, ACK | PSH, 65535, payload=b"abc")
    b.receive_packet(build_ip_tcp(stray, A, B), 0.1)
    rst = tcp_of(b.packets_to_send()[0])
    assert (rst.seq, rst.flags) == (777, RST)
    # A RST is never answered with a RST.
    b.receive_packet(build_ip_tcp(TCPSegment(40000, 9, 1, 0, RST, 0), A, B), 0.2)
    assert b.packets_to_send() == []
    assert b.stats.rst_sent == 2 and b.stats.no_connection == 3
    assert (b.stats.packets_out, b.stats.bytes_out) == (2, 2 * 40)   # two bare IPv4 RSTs


def test_icmp_echo_is_answered_with_the_same_id_seq_and_data():
    b = StackCore(["10.0.0.2"])
    # An echo request built by hand (RFC 792), independent of the module under test.
    body = struct.pack("!BBHHH", 8, 0, 0, 0x1234, 7) + b"ping-data"
    body = body[:2] + struct.pack("!H", ones_complement_checksum(body)) + body[4:]
    req = build_ipv4(A, B, 1, body)
    b.receive_packet(req, 0.0)
    (reply,) = b.packets_to_send()
    hdr, payload = parse_ip(reply)
    assert (hdr.src, hdr.dst) == (B, A)
    msg = icmp.parse_icmp(payload, hdr.src, hdr.dst, v6=False)
    assert (msg.type, msg.ident, msg.seq, bytes(msg.payload)) == (icmp.ICMP_ECHO_REPLY, 0x1234, 7, b"ping-data")


def test_malformed_and_foreign_packets_are_counted_and_dropped():
    b = StackCore(["10.0.0.2"])
    rng = random.Random(5)
    for _ in range(2000):
        b.receive_packet(bytes(rng.randrange(256) for _ in range(rng.randrange(0, 80))), 0.0)
    # a corrupted TCP checksum
    good = bytearray(build_ip_tcp(TCPSegment(1, 2, 3, 4, SYN, 5), A, B))
    good[-1] ^= 0xFF
    b.receive_packet(bytes(good), 0.0)
    # a packet for someone else
    b.receive_packet(build_ip_tcp(TCPSegment(1, 2, 3, 4, SYN, 5), A, A), 0.0)
    s = b.stats
    assert s.packets_in == 2002
    assert s.malformed + s.not_for_us + s.unknown_protocol >= 2000
    assert s.not_for_us >= 1
    # anything the stack answered to that garbage can only be a RST (to stray segments)
    out = b.packets_to_send()
    assert all(tcp_of(p).flags & RST for p in out)
    assert len(out) == s.rst_sent


def test_full_exchange_between_two_cores_plain():
    a, b, ep, server_ep = established_pair()
    assert server_ep.remote == ("10.0.0.1", ep.local[1])
    ep.send(b"GET / HTTP/1.0\r\n\r\n", 0.01)
    ep.shutdown_write(0.01)
    pump(a, b, 0.01)
    evs = [server_ep.next_event(), server_ep.next_event()]
    assert isinstance(evs[0], Data) and evs[0].data == b"GET / HTTP/1.0\r\n\r\n"
    assert isinstance(evs[1], Eof)
    server_ep.send(b"HTTP/1.0 200 OK\r\n\r\nhi", 0.02)
    server_ep.shutdown_write(0.02)
    pump(a, b, 0.02)
    events = list(iter(ep.next_event, None))
    assert [type(e) for e in events] == [Data, Eof, Closed]
    assert events[0].data == b"HTTP/1.0 200 OK\r\n\r\nhi" and events[2].error is None
    # after both FINs the active closer sits in TIME_WAIT, the other side is gone
    assert ep.conn.state.name == "TIME_WAIT"
    assert server_ep.closed


def test_listener_backlog_bounds_unaccepted_connections():
    # Without SYN cookies (tests/tcpstack/test_syncookies.py has the cookie variant).
    a, b = StackCore(["10.0.0.1"]), StackCore(["10.0.0.2"], StackConfig(syncookies="never"))
    lst = b.listen(80, backlog=2)
    eps = [a.connect("10.0.0.2", 80, 0.0) for _ in range(4)]
    pump(a, b, 0.0)
    assert len(lst.accept_queue) == 2
    assert b.stats.syn_dropped_backlog >= 2
    established = [e for e in eps if e.established]
    assert len(established) == 2


def test_ephemeral_ports_are_distinct_and_in_range():
    a = StackCore(["10.0.0.1"])
    ports = {a.connect("10.0.0.2", 80, 0.0).local[1] for _ in range(200)}
    assert len(ports) == 200
    assert all(32768 <= p <= 60999 for p in ports)


def test_isn_is_keyed_per_4tuple_and_advances_with_the_clock():
    a = StackCore(["10.0.0.1"], secret=b"k" * 32)
    same = StackCore(["10.0.0.1"], secret=b"k" * 32)
    other = StackCore(["10.0.0.1"], secret=b"x" * 32)
    args = (A, 1000, B, 80)
    assert a._isn(*args, 0.0) == same._isn(*args, 0.0)
    assert a._isn(*args, 0.0) != other._isn(*args, 0.0)
    assert a._isn(A, 1001, B, 80, 0.0) != a._isn(*args, 0.0)
    # RFC 6528: M is a 4 us timer: one second later the ISN moved by 250000
    assert (a._isn(*args, 1.0) - a._isn(*args, 0.0)) % (1 << 32) == 250_000


def test_fin_flag_constant_sanity():
    assert FIN == 1 and SYN == 2


def test_new_syn_reopens_a_time_wait_connection_through_the_listener():
    """RFC 6191: the server closed first and sits in TIME-WAIT; the client reconnects from
    the same port with newer timestamps, and the listener accepts instead of a 2*MSL wait."""
    a, b = StackCore(["10.0.0.1"]), StackCore(["10.0.0.2"])
    lst = b.listen(80, "10.0.0.2")
    ep = a.connect("10.0.0.2", 80, 0.0, local_port=5000)
    pump(a, b, 0.0)
    server_ep = lst.accept()
    server_ep.shutdown_write(0.1)            # the server closes first ...
    pump(a, b, 0.1)
    ep.shutdown_write(0.2)                   # ... then the client
    pump(a, b, 0.2)
    assert server_ep.conn.state.name == "TIME_WAIT"
    assert ep.closed
    # The client's TCB is gone (it closed second: LAST_ACK -> CLOSED); reuse the port.
    ep2 = a.connect("10.0.0.2", 80, 1.0, local_port=5000)
    pump(a, b, 1.0)
    assert ep2.established
    again = lst.accept()
    assert again is not None and again.remote == ("10.0.0.1", 5000)
    assert again.conn.state.name == "ESTABLISHED"


def test_ping_sends_an_echo_request_and_reports_the_reply():
    a, b = StackCore(["10.0.0.1"]), StackCore(["10.0.0.2"])
    replies = []
    a.on_echo_reply = lambda src, ident, seq, data, now: replies.append((src, ident, seq, data))
    a.ping("10.0.0.2", 0.0, ident=77, seq=3, data=b"hello")
    pump(a, b, 0.0)
    assert replies == [("10.0.0.2", 77, 3, b"hello")]
    assert b.stats.icmp_echo_replies == 1


def test_on_service_sees_every_connection_after_each_input():
    a, b = StackCore(["10.0.0.1"]), StackCore(["10.0.0.2"])
    seen = []
    a.on_service = lambda ep, now: seen.append(ep.conn.state.value)
    b.listen(80, "10.0.0.2")
    a.connect("10.0.0.2", 80, 0.0)
    pump(a, b, 0.0)
    assert seen[0] == "SYN-SENT" and seen[-1] == "ESTABLISHED"


@pytest.mark.error_log_expected
def test_an_internal_error_is_counted_and_logged_apart_from_malformed_input(monkeypatch, caplog):
    """A bug met while handling a packet does not take the host down, but it is never
    mistaken for a malformed packet: internal_errors, not malformed, and an ERROR log
    (which fails any test not marked as expecting it, tests/conftest.py)."""
    from tcpstack.tcp.connection import TCPConnection
    a, b, ep, srv = established_pair()
    def boom(self, seg, now):
        raise ZeroDivisionError("a bug")
    monkeypatch.setattr(TCPConnection, "_receive_other", boom)
    ep.send(b"x", 1.0)
    with caplog.at_level("ERROR", logger="tcpstack"):
        for p in a.packets_to_send():
            b.receive_packet(p, 1.0)
    assert b.stats.internal_errors == 1 and b.stats.malformed == 0
    assert any("internal error" in r.getMessage() and r.exc_info for r in caplog.records)
