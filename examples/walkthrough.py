"""A guided walk through one TCP connection on the simulated network (virtual clock, seeded:
the same output every run, except the session ID, which comes from fresh ECDHE keys).
Four chapters:

  1. the three-way handshake, with TCP-ENO (RFC 8547) offering tcpcrypt in the SYN;
  2. the tcpcrypt key exchange (RFC 8548): Init1 / Init2, the agreed TEP and AEAD, the
     session ID, equal at both ends;
  3. loss recovery: two data segments are dropped on purpose; duplicate ACKs with SACK
     blocks (RFC 2018) drive a fast retransmit (RFC 5681 3.2, RFC 6675) of just the holes;
  4. the close: FIN in each direction, TIME-WAIT for 2 MSL on the side that closed first.

    python3 examples/walkthrough.py [--chapter N] [--svg DIR]
"""
from __future__ import annotations

import argparse
import ipaddress
import os
import random
import sys

from tcpcrypt import AEADS, TEPS, TcpcryptProvider
from tcpstack.tools import Diagram, build, render_svg, render_text
from tcpstack.sansio import (Closed, Data, Eof, Established, LinkConfig, Network, StackCore,
                             StackHost, parse_ip, parse_tcp)

CLIENT, SERVER, PORT = "10.0.0.1", "10.0.0.2", 443
DROP = (40, 41)           # the client's 40th and 41st data segments are lost


class Host(StackHost):
    """A SimHost: a StackCore and its application, which records what it sees.  The
    client's egress can lose chosen data segments (the network "breaks on purpose")."""

    def __init__(self, name: str, addr: str, seed: int, drop: tuple[int, ...] = ()) -> None:
        self.name, self.addr = name, addr
        super().__init__(StackCore([addr], security=TcpcryptProvider(), rng=random.Random(seed)))
        self.ep = None
        self.received = bytearray()
        self.events: list[str] = []
        self.drop, self.data_segments, self.dropped = set(drop), 0, []
        self.states: list[tuple[float, tuple[str, int], str]] = []
        self._state: str | None = None

    def react(self) -> None:
        for lst in self.core.pop_ready_listeners():
            while (ep := lst.accept()) is not None:
                self.ep = ep
        for ep in self.core.pop_ready():
            while (ev := ep.next_event()) is not None:
                if isinstance(ev, Established):
                    self.events.append("established")
                elif isinstance(ev, Data):
                    self.received += ev.data
                elif isinstance(ev, Eof):
                    self.events.append("eof")
                    ep.close(self.core.now)
                elif isinstance(ev, Closed):
                    self.events.append("closed")
        self._note_state()

    def _note_state(self) -> None:
        ep = self.ep
        if ep is not None and ep.conn.state.value != self._state:
            self._state = ep.conn.state.value
            self.states.append((self.core.now, ep.local, self._state))

    def packets_to_send(self) -> list[bytes]:
        out = self.core.packets_to_send()
        self._note_state()
        if not self.drop:
            return out
        kept = []
        for p in out:
            hdr, payload = parse_ip(p)
            seg = parse_tcp(payload, hdr.src, hdr.dst, verify_checksum=False)
            if len(seg.payload):
                self.data_segments += 1
                if self.data_segments in self.drop:
                    self.dropped.append(p)       # captured as sent, then lost on the wire
                    continue
            kept.append(p)
        return kept


def _named(key: str, value: object) -> object:
    """TEP and AEAD identifiers by their RFC 8548 names (section 7, Tables 4 and 5)."""
    table = {"tep": TEPS, "aead": AEADS}.get(key)
    if table is not None and value in table:
        return table[value].name
    return value


def heading(n: int, title: str) -> None:
    print(f"\n=== Chapter {n}: {title} ===\n")


def show(d: Diagram, first: int, last: int, svg_dir: str | None, name: str) -> None:
    part = Diagram(d.left, d.right, d.arrows[first:last],
                   [s for s in d.states if d.arrows[first].t <= s[0] <= d.arrows[last - 1].t])
    print(render_text(part), end="")
    if svg_dir:
        path = os.path.join(svg_dir, f"{name}.svg")
        with open(path, "w") as f:
            f.write(render_svg(part))
        print(f"(picture: {path})")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--chapter", type=int, choices=(1, 2, 3, 4))
    ap.add_argument("--svg", metavar="DIR", help="write one SVG ladder per chapter here")
    args = ap.parse_args(argv)
    if args.svg:
        os.makedirs(args.svg, exist_ok=True)
    want = (lambda n: args.chapter in (None, n))

    client = Host("client", CLIENT, seed=1, drop=DROP)
    server = Host("server", SERVER, seed=2)
    records: list[tuple[float, str, bytes]] = []
    client.core.on_packet = lambda direction, p, t: records.append((t, direction, p))
    net = Network(seed=7)
    link = LinkConfig(delay=0.010, rate_bps=20e6)          # 20 Mbit/s, 20 ms round trip
    net.connect(net.add_host(client, [ipaddress.ip_address(CLIENT).packed], "client"),
                net.add_host(server, [ipaddress.ip_address(SERVER).packed], "server"), link)
    server.core.listen(PORT, SERVER)
    client.ep = client.core.connect(SERVER, PORT, 0.0)
    client._note_state()

    # 1 + 2: handshake, then the tcpcrypt key exchange in the first bytes of the stream.
    net.run(max_time=5, stop=lambda: "established" in client.events and "established" in server.events)
    n_setup = len(records)
    d = build(records, states=client.states + server.states)
    if want(1):
        heading(1, "the three-way handshake, with TCP-ENO in the SYN")
        show(d, 0, 3, args.svg, "1-handshake")
        syn = d.arrows[0]
        print(f"\nThe SYN offers tcpcrypt through ENO (option kind 69): {syn.options}.")
        print("Each TEP is a key-agreement suite of RFC 8548 section 5; the SYN-ACK picks one,\n"
              "and the 'b' bit decides which end plays host B (RFC 8547 4.2-4.3).")
    info = client.ep.info.get("tcpcrypt", {})
    sid_c = client.ep.info.get("tcpcrypt_session_id")
    sid_s = server.ep.info.get("tcpcrypt_session_id") if server.ep else None
    if want(2):
        heading(2, "the tcpcrypt key exchange")
        show(d, 3, n_setup, args.svg, "2-key-exchange")
        print(f"\nInit1 (host A to B) and Init2 (B to A) carry the ECDHE public keys and nonces\n"
              f"(RFC 8548 4.1); both ends then derive the same keys (3.3) with HKDF.")
        print(f"agreed: {', '.join(f'{k}={_named(k, v)}' for k, v in info.items() if k != 'session_id')}")
        print(f"client session ID: {sid_c.hex() if sid_c else None}")
        print(f"server session ID: {sid_s.hex() if sid_s else None}")
        print(f"session IDs match: {sid_c == sid_s and sid_c is not None}")

    # 3: a bulk transfer with two segments lost.
    payload = bytes(random.Random(3).randbytes(200_000))
    st0 = client.ep.conn.stats
    before = (st0.cwnd, st0.ssthresh)
    client.ep.send(payload, net.now)
    net.poll()
    net.run(max_time=30, stop=lambda: len(server.received) >= len(payload))
    st = client.ep.conn.stats
    d = build(records, states=client.states + server.states)
    lost = {id(p) for p in client.dropped}
    for a, (_t, _d, p) in zip(d.arrows, records):
        if id(p) in lost:
            a.note = "lost in the network"
    if want(3):
        heading(3, "loss recovery: two segments lost on purpose")
        lost_i = [i for i, (_t, _d, p) in enumerate(records) if id(p) in lost]
        rtx = [i for i, a in enumerate(d.arrows) if a.retransmission]
        print("The two segments leave the client and are lost:")
        show(d, lost_i[0] - 1, lost_i[-1] + 2, None, "")
        print("\nThe server ACKs the last byte it has in order, again and again (duplicate ACKs),\n"
              "with a SACK block for what arrived beyond the hole; the third one triggers the\n"
              "fast retransmit of the first hole (RFC 5681 3.2, RFC 6675 5):")
        show(d, rtx[0] - 6, rtx[0] + 1, args.svg, "3-loss-recovery")
        print("\n... and the SACK scoreboard then resends the second hole, nothing else:")
        show(d, rtx[1] - 1, rtx[1] + 2, None, "")
        rel = [a.seq for a in d.arrows if a.retransmission]
        print(f"\nretransmitted (relative seq): {rel}")
        print(f"duplicate ACKs received: {st.dupacks_in}; fast retransmits: {st.fast_retransmits}; "
              f"SACK retransmits: {st.sack_retransmits}; timeouts: {st.timeouts}")
        print(f"cwnd/ssthresh before: {before[0]}/{before[1] if before[1] < 1 << 30 else 'inf'}; "
              f"after recovery: {st.cwnd}/{st.ssthresh} (CUBIC, RFC 9438 4.6: beta 0.7)")
        print(f"delivered intact: {bytes(server.received) == payload}")

    # 4: the close.
    client.ep.shutdown_write(net.now)
    net.poll()
    net.run(max_time=5, stop=lambda: "closed" in server.events)
    fin_t = net.now
    net.run(max_time=600, stop=lambda: client.ep.conn.state.value == "CLOSED")
    d = build(records, states=client.states + server.states)
    fin = next(i for i, a in enumerate(d.arrows) if "FIN" in a.flags)
    if want(4):
        heading(4, "the close")
        show(d, fin, len(d.arrows), args.svg, "4-close")
        tw = next(t for t, ep, s in client.states if s == "TIME-WAIT")
        end = next(t for t, ep, s in client.states if s == "CLOSED")
        print(f"\nThe client closed first, so it stays in TIME-WAIT for 2 MSL (RFC 9293 3.6, here\n"
              f"MSL = {client.ep.conn.config.msl:g} s) in case its last ACK is lost: from t={tw:.3f} s "
              f"to t={end:.3f} s.\nThe server went through LAST-ACK to CLOSED at t={fin_t:.3f} s.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
