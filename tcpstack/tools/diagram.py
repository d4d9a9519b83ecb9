"""Sequence (ladder) diagrams of a TCP connection, from captured packets: text and SVG.

Input is what the stack captures: (time, direction, IP packet) records from
StackCore.on_packet, or a pcap file (LINKTYPE_RAW as tcpstack/tools/pcap.py writes it; Ethernet and
Linux "cooked" captures from tcpdump/tshark too).  One connection (4-tuple) is drawn: two
lifelines, one arrow per segment in time order, labelled with its flags, sequence and
acknowledgment numbers relative to each side's ISN (as Wireshark shows them), length, window
and options: MSS, window scale, SACK-permitted and SACK blocks (RFC 2018), timestamps
(RFC 7323), TCP-ENO (RFC 8547, kind 69) with its TEPs named (RFC 8548 section 7).
Retransmissions (a segment whose sequence space was sent before) are marked; state
transitions given by the caller are drawn on the lifelines.

    python3 -m tcpstack.tools.diagram capture.pcap [--svg out.svg] [--conn A:P-B:Q] [--max N]
                                      [--keylog FILE]   (notes on what tcpcrypt segments carry)
"""
from __future__ import annotations

import argparse
import ipaddress
import sys
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence
from xml.sax.saxutils import escape

from tcpstack.errors import ParseError
from tcpstack.wire.ip import IPv4Header, parse_ip
from tcpstack.wire.segment import ACK, FIN, PSH, RST, SYN, TCPSegment
from tcpstack.wire.tcp import IPPROTO_TCP, parse_tcp
from tcpstack.tools.pcap import read_capture

Endpoint = tuple[str, int]
Record = tuple[float, str, bytes]          # (time, "in"/"out"/"", IP packet)


@dataclass(slots=True)
class Arrow:
    """One segment of the connection as drawn."""
    t: float
    left_to_right: bool
    flags: str                 # "SYN", "SYN ACK", "ACK", "PSH ACK", "FIN ACK", "RST" ...
    seq: int                   # relative to the sender's ISN
    ack: int | None            # relative to the receiver's ISN; None without ACK
    length: int
    window: int
    options: str               # "" or "<mss 1460,ws 7,sackOK,ts,eno X25519 P-256>"
    retransmission: bool = False
    note: str = ""             # the caller's remark, e.g. "lost" (drawn after the label)


@dataclass
class Diagram:
    left: Endpoint
    right: Endpoint
    arrows: list[Arrow] = field(default_factory=list)
    states: list[tuple[float, bool, str]] = field(default_factory=list)   # (t, left?, label)
    t0: float = 0.0            # the time of the first packet; arrow and state times count from it


# --- input -----------------------------------------------------------------------------------

def read_pcap(path: str) -> list[Record]:
    """(time, "", packet) records of a pcap file (pcap.read_capture: either byte order, µs or
    ns stamps, raw IP, Ethernet or Linux cooked)."""
    return [(t, "", pkt) for t, pkt in read_capture(path)]


def _tcp(pkt: bytes) -> tuple[Endpoint, Endpoint, TCPSegment] | None:
    try:
        hdr, payload = parse_ip(pkt)
        if (hdr.proto if isinstance(hdr, IPv4Header) else hdr.next_header) != IPPROTO_TCP:
            return None
        seg = parse_tcp(payload, hdr.src, hdr.dst, verify_checksum=False)
    except (ParseError, AttributeError, ValueError):
        return None
    return ((str(ipaddress.ip_address(hdr.src)), seg.src_port),
            (str(ipaddress.ip_address(hdr.dst)), seg.dst_port), seg)


def parse_conn(spec: str) -> tuple[Endpoint, Endpoint]:
    """"10.0.0.1:40000-10.0.0.2:80" -> the two endpoints ([v6]:port also accepted)."""
    def one(s: str) -> Endpoint:
        host, _, port = s.strip().rpartition(":")
        return host.strip("[]"), int(port)
    a, _, b = spec.partition("-")
    return one(a), one(b)


# --- options ---------------------------------------------------------------------------------

def _tep_name(tep: int) -> str:
    try:
        from tcpcrypt import suites        # the names are RFC 8548 7's; optional at this layer
        names = {suites.TEP_P256: "P-256", suites.TEP_P521: "P-521",
                 suites.TEP_CURVE25519: "X25519", suites.TEP_CURVE448: "X448"}
    except ImportError:                    # pragma: no cover
        names = {}
    return names.get(tep, f"{tep:#04x}")


def describe_eno(payload: bytes) -> str:
    """One ENO option (RFC 8547 4.1): "eno b=1 X25519 P-256" (SYN form) or "eno" (empty)."""
    if not payload:
        return "eno"
    try:
        from tcpcrypt.eno import parse_syn_option
        glob, teps = parse_syn_option(payload)
    except Exception:                      # malformed, or tcpcrypt absent: show the bytes
        return f"eno {payload.hex()}"
    parts = ["eno"]
    if glob is not None and (glob.a or glob.b):
        parts.append(f"a={glob.a},b={glob.b}" if glob.a else f"b={glob.b}")
    parts += [_tep_name(t.tep) + ("+data" if t.data else "") for t in teps]
    return " ".join(parts)


def describe_options(seg: TCPSegment, peer_isn: int | None) -> str:
    o: list[str] = []
    if seg.mss is not None:
        o.append(f"mss {seg.mss}")
    if seg.wscale is not None:
        o.append(f"ws {seg.wscale}")
    if seg.sack_permitted:
        o.append("sackOK")
    if seg.tsval is not None:
        o.append("ts")
    for left, right in seg.sack_blocks:
        base = peer_isn or 0
        o.append(f"sack {(left - base) & 0xFFFFFFFF}-{(right - base) & 0xFFFFFFFF}")
    o += [describe_eno(p) for p in seg.eno]
    return "<" + ",".join(o) + ">" if o else ""


def _flags(f: int) -> str:
    names = [n for bit, n in ((SYN, "SYN"), (FIN, "FIN"), (RST, "RST"), (PSH, "PSH"), (ACK, "ACK"))
             if f & bit]
    return " ".join(names) or "-"


# --- building --------------------------------------------------------------------------------

def build(records: Iterable[Record], conn: tuple[Endpoint, Endpoint] | None = None,
          states: Sequence[tuple[float, Endpoint, str]] = (),
          notes: Callable[[Endpoint, Endpoint, TCPSegment], str] | None = None) -> Diagram:
    """The diagram of one connection in `records`: `conn` or else the first one seen (its
    active opener, when the SYN is captured, on the left).  `notes(src, dst, segment)`, when
    given, annotates each arrow (decrypt.notes_for: what a tcpcrypt segment carries)."""
    segs: list[tuple[float, Endpoint, Endpoint, TCPSegment]] = []
    for t, _dir, pkt in records:
        r = _tcp(pkt)
        if r is not None:
            segs.append((t, *r))
    if not segs:
        raise ParseError("no TCP segment in the capture")
    if conn is None:
        syn = next((s for s in segs if s[3].flags & (SYN | ACK) == SYN), segs[0])
        conn = (syn[1], syn[2])
    want = {conn, (conn[1], conn[0])}
    segs = [s for s in segs if (s[1], s[2]) in want]
    if not segs:
        raise ParseError(f"no segment of {conn[0][0]}:{conn[0][1]}-{conn[1][0]}:{conn[1][1]}")
    first_syn = next((s for s in segs if s[3].flags & (SYN | ACK) == SYN), None)
    left = first_syn[1] if first_syn else segs[0][1]
    right = conn[1] if conn[0] == left else conn[0]
    # Times are shown relative to the connection's first packet (a pcap's are wall-clock
    # seconds since 1970); Diagram.t0 keeps the absolute start.
    t0 = segs[0][0]
    d = Diagram(left, right, t0=t0)
    isn: dict[Endpoint, int] = {}
    high: dict[Endpoint, int] = {}         # highest relative sequence end sent, per side
    for t, src, dst, seg in segs:
        if src not in isn:
            isn[src] = seg.seq if seg.flags & SYN else (seg.seq - 1) & 0xFFFFFFFF
        rel = (seg.seq - isn[src]) & 0xFFFFFFFF
        length = len(seg.payload)
        space = length + (1 if seg.flags & SYN else 0) + (1 if seg.flags & FIN else 0)
        rtx = space > 0 and src in high and rel < high[src]
        if space:
            high[src] = max(high.get(src, 0), rel + space)
        ack = None
        if seg.flags & ACK:
            ack = (seg.ack - isn[dst]) & 0xFFFFFFFF if dst in isn else seg.ack
        d.arrows.append(Arrow(t - t0, src == left, _flags(seg.flags), rel, ack, length, seg.window,
                              describe_options(seg, isn.get(dst)), rtx,
                              notes(src, dst, seg) if notes is not None else ""))
    d.states = [(t - t0, ep == left, label) for t, ep, label in states]
    return d


# --- rendering -------------------------------------------------------------------------------

def _label(a: Arrow) -> str:
    s = f"{a.flags} seq={a.seq}"
    if a.ack is not None:
        s += f" ack={a.ack}"
    s += f" len={a.length} win={a.window}"
    if a.options:
        s += " " + a.options
    return s


def render_text(d: Diagram, *, max_segments: int | None = None, width: int = 36) -> str:
    """The ladder as text: one line per segment (time, arrow, label), states on their side."""
    lname, rname = f"{d.left[0]}:{d.left[1]}", f"{d.right[0]}:{d.right[1]}"
    # Names over their lifelines: the left one from the left edge, the right one ending at
    # the right edge of the arrows (width + 2 columns).
    lines = [f"{'time':>10}  {lname}{rname.rjust(max(width + 2 - len(lname), len(rname) + 1))}"]
    # (time, 0 for a state / 1 for an arrow, the state's (left?, label) or the arrow)
    events: list[tuple[float, int, tuple[bool, str] | Arrow]] = [(a.t, 1, a) for a in d.arrows]
    events += [(t, 0, (left, label)) for t, left, label in d.states]
    events.sort(key=lambda e: (e[0], e[1]))
    shown = 0
    total = len(d.arrows)
    for t, kind, obj in events:
        if isinstance(obj, tuple):
            left, label = obj
            mark = f"[{label}]"
            lines.append(f"{t:10.6f}  " + (f"{mark}{' ' * max(width + 1 - len(mark), 1)}|"
                                             if left else f"|{' ' * width}{mark}"))
            continue
        if max_segments is not None and shown >= max_segments:
            continue
        a = obj
        shaft = "=" if a.retransmission else "-"
        body = shaft * (width - 1)
        arrow = f"|{body}>|" if a.left_to_right else f"|<{body}|"
        lines.append(f"{a.t:10.6f}  {arrow}  {_label(a)}"
                     + ("  (retransmission)" if a.retransmission else "")
                     + (f"  ({a.note})" if a.note else ""))
        shown += 1
    if shown < total:
        lines.append(f"{'':10}  ... {total - shown} more segments")
    n_rtx = sum(a.retransmission for a in d.arrows)
    lines.append(f"{total} segments, {n_rtx} retransmissions")
    return "\n".join(lines) + "\n"


def render_svg(d: Diagram, *, max_segments: int | None = None, row: int = 34,
               slant: int = 18) -> str:
    """The ladder as a standalone SVG document: time flows down, each segment a slanted
    arrow from the sender's lifeline to the receiver's (retransmissions in red), its label
    above; state transitions as boxes on the lifelines."""
    arrows = d.arrows if max_segments is None else d.arrows[:max_segments]
    xl, xr, top = 170, 730, 70
    events: list[tuple[float, int, tuple[bool, str] | Arrow]] = [(a.t, 1, a) for a in arrows]
    events += [(t, 0, (left, label)) for t, left, label in d.states]
    events.sort(key=lambda e: (e[0], e[1]))
    height = top + row * (len(events) + 1) + 40
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="900" height="{height}" '
           f'viewBox="0 0 900 {height}" font-family="monospace" font-size="11">',
           '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" '
           'markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" '
           'fill="context-stroke"/></marker></defs>',
           '<rect width="100%" height="100%" fill="white"/>']
    for x, ep in ((xl, d.left), (xr, d.right)):
        out.append(f'<text x="{x}" y="30" text-anchor="middle" font-weight="bold">'
                   f'{escape(f"{ep[0]}:{ep[1]}")}</text>')
        out.append(f'<line x1="{x}" y1="40" x2="{x}" y2="{height - 30}" stroke="#444" '
                   f'stroke-width="2"/>')
    y = top
    for t, kind, obj in events:
        if isinstance(obj, tuple):
            left, label = obj
            x = xl if left else xr
            w = 8 * len(label) + 12
            out.append(f'<g class="state"><rect x="{x - w / 2}" y="{y - 12}" width="{w}" '
                       f'height="18" rx="4" fill="#e8f0ff" stroke="#4060a0"/>'
                       f'<text x="{x}" y="{y + 1}" text-anchor="middle">{escape(label)}</text></g>')
            y += row
            continue
        a = obj
        x1, x2 = (xl, xr) if a.left_to_right else (xr, xl)
        color = "#c00000" if a.retransmission else "#000000"
        out.append(f'<g class="segment"><title>{escape(f"{a.t:.6f} s {_label(a)}")}</title>'
                   f'<text x="{xl - 10}" y="{y + 4}" text-anchor="end" fill="#666">'
                   f'{a.t:.6f}</text>'
                   f'<line class="arrow" x1="{x1}" y1="{y}" x2="{x2}" y2="{y + slant}" '
                   f'stroke="{color}" stroke-width="1.5" marker-end="url(#arrow)"/>'
                   f'<text x="{(xl + xr) / 2}" y="{y + slant / 2 - 4}" text-anchor="middle" '
                   f'fill="{color}">{escape(_label(a)[:90] + (f" ({a.note})" if a.note else ""))}'
                   f'</text></g>')
        y += row
    if len(arrows) < len(d.arrows):
        out.append(f'<text x="450" y="{y}" text-anchor="middle">... '
                   f'{len(d.arrows) - len(arrows)} more segments</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="tcpstack diagram", description=__doc__.split("\n")[0])
    p.add_argument("pcap")
    p.add_argument("--svg", help="also write an SVG picture here")
    p.add_argument("--conn", help="the connection, e.g. 10.0.0.1:40000-10.0.0.2:80 "
                                  "(default: the first one in the capture)")
    p.add_argument("--max", type=int, default=None, help="draw at most N segments")
    p.add_argument("--keylog", metavar="FILE",
                   help="a tcpcrypt key log: note on each segment the Init message, the "
                        "plaintext length of the frames ending in it, rekeys, FINp, URGp")
    args = p.parse_args(argv)
    try:
        records = read_pcap(args.pcap)
        notes = None
        if args.keylog:
            from tcpstack.tools.decrypt import analyse, notes_for
            from tcpcrypt.keylog import parse_keylog
            with open(args.keylog) as f:
                entries = parse_keylog(f)
            conns = analyse([pkt for _t, _d, pkt in records], entries)
            for c in conns:
                if c.eno and not c.decrypted:
                    print(f"tcpstack diagram: {c.summary()}", file=sys.stderr)
            notes = notes_for(conns)
        d = build(records, parse_conn(args.conn) if args.conn else None, notes=notes)
    except (OSError, ParseError, ValueError) as e:
        print(f"tcpstack diagram: {e}", file=sys.stderr)
        return 1
    sys.stdout.write(render_text(d, max_segments=args.max))
    if args.svg:
        with open(args.svg, "w") as f:
            f.write(render_svg(d, max_segments=args.max))
    return 0


if __name__ == "__main__":
    sys.exit(main())
