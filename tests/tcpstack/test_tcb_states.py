"""Every TCB state change goes through TCPConnection._set_state and reaches the state
observer (a StateChanged report), so the tracer shows each RFC 9293 3.3.2 state a
connection passes through, FIN-WAIT-2 and TIME-WAIT included."""
from __future__ import annotations

from tcpstack.host.stack import StackCore
from tcpstack.tcp.config import TCPConfig
from tcpstack.tcp.connection import TCPConnection, TCPState
from tcpstack.tcp.events import StateChanged
from tcpstack.tools.trace import Tracer
from tests.tcpstack.hosts import pump


def _transitions(lines: list[str], port: int, remote: str) -> list[str]:
    return [l.split(" ", 4)[4] for l in lines if f" --- 10.0.0.1:{port} {remote} " in l
            or f" --- 10.0.0.2:80 10.0.0.1:{port} " in l]


def _close_both_sides(simultaneous: bool) -> tuple[list[str], list[str], int]:
    a, b = StackCore(["10.0.0.1"]), StackCore(["10.0.0.2"])
    la: list[str] = []
    lb: list[str] = []
    Tracer(a, la.append)
    Tracer(b, lb.append)
    lst = b.listen(80, "10.0.0.2")
    ep = a.connect("10.0.0.2", 80, 0.0)
    pump(a, b, 0.0)
    srv = lst.accept()
    assert srv is not None
    if simultaneous:
        ep.close(1.0)
        srv.close(1.0)                # both FINs cross on the wire
    else:
        ep.close(1.0)
        pump(a, b, 1.0)
        srv.close(1.1)
    pump(a, b, 1.1)
    for core in (a, b):
        while (nt := core.next_timer()) is not None and nt < 1000.0:   # TIME-WAIT's 2 MSL
            core.handle_timer(nt)
    assert ep.conn.is_terminated and srv.conn.is_terminated
    port = ep.local[1]
    return (_transitions(la, port, "10.0.0.2:80"), _transitions(lb, port, ""), port)


def states(transitions: list[str]) -> list[str]:
    out = [transitions[0].split(" -> ")[0]]
    for tr in transitions:
        old, new = tr.split(" -> ")
        assert old == out[-1], transitions          # each line starts where the last ended
        out.append(new)
    return out


def test_full_close_shows_every_state_on_both_sides():
    client, server, _ = _close_both_sides(simultaneous=False)
    assert states(client) == ["CLOSED", "SYN-SENT", "ESTABLISHED", "FIN-WAIT-1",
                              "FIN-WAIT-2", "TIME-WAIT", "CLOSED"]
    assert states(server) == ["CLOSED", "SYN-RECEIVED", "ESTABLISHED", "CLOSE-WAIT",
                              "LAST-ACK", "CLOSED"]


def test_simultaneous_close_shows_closing():
    client, server, _ = _close_both_sides(simultaneous=True)
    assert states(client) == ["CLOSED", "SYN-SENT", "ESTABLISHED", "FIN-WAIT-1", "CLOSING",
                              "TIME-WAIT", "CLOSED"]
    assert states(server) == ["CLOSED", "SYN-RECEIVED", "ESTABLISHED", "FIN-WAIT-1", "CLOSING",
                              "TIME-WAIT", "CLOSED"]


def test_fin_wait_2_passed_within_one_segment_is_reported():
    """The peer's ACK of our FIN and its own FIN in one segment: FIN-WAIT-1 -> FIN-WAIT-2
    -> TIME-WAIT inside one receive(); a state sampled between inputs would never show
    FIN-WAIT-2, the observer does."""
    seen: list[tuple[TCPState, TCPState, str]] = []
    cfg = TCPConfig(state_observer=lambda conn, ch, now: seen.append((ch.old, ch.new, ch.why)))
    a = TCPConnection(1000, 80, iss=100, config=cfg, now=0.0)
    b = TCPConnection(80, 1000, iss=5000, config=TCPConfig(), now=0.0)
    a.connect(0.0)
    [syn] = a.segments_to_send(0.0)
    b.accept_syn(syn, 0.0)
    for s in b.segments_to_send(0.0):
        a.receive(s, 0.0)
    for s in a.segments_to_send(0.0):
        b.receive(s, 0.0)
    a.shutdown_write(1.0)
    [fin] = a.segments_to_send(1.0)
    b.receive(fin, 1.0)
    b.segments_to_send(1.0)            # its ACK of our FIN is lost ...
    b.shutdown_write(1.0)
    [finack] = b.segments_to_send(1.0)  # ... the FIN carries the same ACK
    a.receive(finack, 1.0)
    assert [(o.value, n.value) for o, n, _ in seen] == [
        ("CLOSED", "SYN-SENT"), ("SYN-SENT", "ESTABLISHED"), ("ESTABLISHED", "FIN-WAIT-1"),
        ("FIN-WAIT-1", "FIN-WAIT-2"), ("FIN-WAIT-2", "TIME-WAIT")]
    assert [w for _, _, w in seen][3:] == ["rcv ACK of FIN", "rcv FIN, snd ACK"]
    assert isinstance(StateChanged(TCPState.CLOSED, TCPState.LISTEN, "x"), StateChanged)


def test_tracer_picks_up_a_connection_opened_before_it_watched():
    a, b = StackCore(["10.0.0.1"]), StackCore(["10.0.0.2"])
    b.listen(80, "10.0.0.2")
    ep = a.connect("10.0.0.2", 80, 0.0)
    pump(a, b, 0.0)
    lines: list[str] = []
    tr = Tracer(None, lines.append)
    a.on_service = tr.on_service
    ep.close(1.0)
    pump(a, b, 1.0)
    port = ep.local[1]
    assert [l.split(" ", 4)[4] for l in lines if "---" in l][:2] == [
        "FIN-WAIT-1 (open before tracing began)", "FIN-WAIT-1 -> FIN-WAIT-2"]
    assert all(f"10.0.0.1:{port}" in l for l in lines)
