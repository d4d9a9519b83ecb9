"""A live, readable per-segment trace of a stack, with connection state transitions.

One line per packet, tcpdump-like but with sequence numbers relative to each side's ISN
(as Wireshark shows them) and the options decoded (tcpstack.tools.diagram.describe_options: MSS,
window scale, SACK, timestamps, TCP-ENO kind 69 with its TEPs), and one line per state
change of a connection (RFC 9293 3.3.2 names; the event that caused it is in the
StateChanged report, ``why``):

    0.000123 out 10.0.0.2:40000 > 10.0.0.1:80 [S] seq 0 win 65535 <mss 1460,...,eno X25519>
    0.010456 --- 10.0.0.2:40000 10.0.0.1:80 SYN-SENT -> ESTABLISHED

    tracer = Tracer(core, sink=print)   # hooks core.on_packet, core.on_service and the
                                        # TCBs' state observer (watch_states)

State lines come from the TCBs' own StateChanged reports (tcpstack/tcp/events.py), not from
comparing states between inputs, so a state passed through within one input (FIN-WAIT-2
when the peer's ACK and FIN arrive together) is shown too.  A TCB reports to the observer
in its configuration; the tracer gives the core a configuration with its observer
(watch_states), keeps each report until the core services that connection (on_service,
which knows the addresses), and prints them then, before the segments that input produced.
"""
from __future__ import annotations

import ipaddress
from dataclasses import replace
from typing import Any, Callable

from tcpstack.tools.diagram import describe_options
from tcpstack.errors import ParseError
from tcpstack.tcp.events import StateChanged
from tcpstack.wire.icmp import IPPROTO_ICMP, IPPROTO_ICMPV6
from tcpstack.wire.ip import IPv4Header, parse_ip
from tcpstack.wire.segment import ACK, CWR, ECE, FIN, PSH, RST, SYN, URG
from tcpstack.wire.tcp import IPPROTO_TCP, parse_tcp

_FLAG_CHARS = ((SYN, "S"), (FIN, "F"), (RST, "R"), (PSH, "P"), (URG, "U"), (ECE, "E"),
               (CWR, "W"), (ACK, "."))


def flag_letters(flags: int) -> str:
    """tcpdump's notation: [S], [S.], [P.], [F.], [R], [.] ..."""
    return "".join(c for bit, c in _FLAG_CHARS if flags & bit) or "none"


class Tracer:
    """Formats everything a StackCore sends and receives, plus state transitions, and hands
    each line to `sink`.  ISNs are remembered per direction of each 4-tuple (bounded)."""

    def __init__(self, core: Any = None, sink: Callable[[str], None] | None = None,
                 *, max_flows: int = 4096) -> None:
        self.sink = sink or (lambda line: None)
        self.max_flows = max_flows
        self._isn: dict[tuple[str, int, str, int], int] = {}
        # State changes reported by TCBs, waiting for the core to service the connection.
        self._pending: dict[Any, list[tuple[float, StateChanged]]] = {}
        self.t0: float | None = None
        if core is not None:
            self.attach(core)

    def attach(self, core: Any) -> None:
        prev = core.on_packet
        def on_packet(direction: str, packet: bytes, now: float) -> None:
            if prev is not None:
                prev(direction, packet, now)
            self.packet(direction, packet, now)
        core.on_packet = on_packet
        core.on_service = self._on_service
        self.watch_states(core)

    def watch_states(self, core: Any, on: bool = True) -> None:
        """Make every connection `core` opens from now on report its state changes to this
        tracer (on=False: stop).  The core gets a copy of its configuration with the
        observer set (TCPConfig.state_observer), so another core sharing the original
        configuration is not affected."""
        tcp = core.config.tcp
        want = self.state_changed if on else None
        if tcp.state_observer != want:
            core.config = replace(core.config, tcp=replace(tcp, state_observer=want))

    def state_changed(self, conn: Any, change: StateChanged, now: float) -> None:
        """The TCB state observer (TCPConfig.state_observer): keep the change for on_service."""
        pending = self._pending
        changes = pending.get(conn)
        if changes is None:
            if len(pending) >= self.max_flows:
                pending.clear()
            changes = pending[conn] = []
        changes.append((now, change))

    def packet(self, direction: str, packet: bytes, now: float) -> None:
        """One packet sent ("out") or received ("in"): its line to the sink."""
        self.sink(self.format_packet(direction, packet, now))

    def on_service(self, ep: Any, now: float) -> None:
        """For StackCore.on_service: a line per state transition of a connection."""
        self._on_service(ep, now)

    def _t(self, now: float) -> float:
        if self.t0 is None:
            self.t0 = now
        return now - self.t0

    def _on_service(self, ep: Any, now: float) -> None:
        conn = ep.conn
        changes = self._pending.pop(conn, None)
        (la, lp), (ra, rp) = ep.local, ep.remote
        if changes is None:
            if conn.state_observer is None and not conn.is_terminated:
                # Open before the tracer watched its core: its changes from now on.
                conn.state_observer = self.state_changed
                self.sink(f"{self._t(now):.6f} --- {la}:{lp} {ra}:{rp} {conn.state.value} "
                          "(open before tracing began)")
            return
        for t, ch in changes:
            self.sink(f"{self._t(t):.6f} --- {la}:{lp} {ra}:{rp} {ch.old.value} -> {ch.new.value}")

    def format_packet(self, direction: str, packet: bytes, now: float) -> str:
        t = f"{self._t(now):.6f} {direction:3}"
        try:
            hdr, payload = parse_ip(packet)
        except ParseError as exc:
            return f"{t} malformed IP packet ({len(packet)} bytes): {exc}"
        src = str(ipaddress.ip_address(hdr.src))
        dst = str(ipaddress.ip_address(hdr.dst))
        proto = hdr.proto if isinstance(hdr, IPv4Header) else hdr.next_header
        if proto in (IPPROTO_ICMP, IPPROTO_ICMPV6):
            kind = payload[0] if len(payload) else -1
            code = payload[1] if len(payload) > 1 else -1
            return f"{t} {src} > {dst} ICMP type {kind} code {code} len {len(payload)}"
        if proto != IPPROTO_TCP:
            return f"{t} {src} > {dst} protocol {proto} len {len(payload)}"
        try:
            seg = parse_tcp(payload, hdr.src, hdr.dst, verify_checksum=False)
        except ParseError as exc:
            return f"{t} {src} > {dst} malformed TCP ({exc})"
        key = (src, seg.src_port, dst, seg.dst_port)
        rkey = (dst, seg.dst_port, src, seg.src_port)
        isn = self._isn
        if seg.flags & SYN or key not in isn:
            if len(isn) >= self.max_flows:
                isn.clear()
            isn[key] = seg.seq if seg.flags & SYN else (seg.seq - 1) & 0xFFFFFFFF
        rel = (seg.seq - isn[key]) & 0xFFFFFFFF
        n = len(seg.payload)
        line = f"{t} {src}:{seg.src_port} > {dst}:{seg.dst_port} [{flag_letters(seg.flags)}] seq {rel}"
        if n:
            line += f":{(rel + n) & 0xFFFFFFFF}"
        peer = isn.get(rkey)
        if seg.flags & ACK:
            line += f" ack {(seg.ack - peer) & 0xFFFFFFFF if peer is not None else seg.ack}"
        line += f" win {seg.window}"
        opts = describe_options(seg, peer)
        if opts:
            line += f" {opts}"
        return line + f" len {n}"
