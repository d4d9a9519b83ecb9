"""Decrypt a capture with a tcpcrypt key log: every tcpcrypt connection's frames replaced by
their plaintext, so Wireshark's own dissectors see the application protocol inside.

    tcpstack decrypt CAPTURE.pcap --keylog FILE -o PLAIN.pcap

The key log (tcpcrypt/keylog.py, docs/teaching.md) gives mk[0] per session; from it come
k_ab[j] and k_ba[j] for every generation (RFC 8548 3.3, 3.8).  For each TCP connection in
the capture (the SYN must be in it: the ISNs anchor the stream offsets):

  1. both directions' byte streams are reassembled from the segments (retransmissions and
     overlaps once; a hole stops the stream there);
  2. a connection whose SYN and SYN-ACK both carry TCP-ENO (RFC 8547, option 69) is taken as
     tcpcrypt; its streams start with Init1 / Init2 after a fresh key exchange (RFC 8548 4.1)
     or directly with frames after resumption (3.5);
  3. the key log's entries are tried on each direction's first frame (the AEAD tag says
     which key is right: no guessing), k_ab and k_ba both, since a resumed session keeps
     the roles of the original one; then every frame is opened (frames.open_frame) with the
     key of its generation, a frame with rekey = 1 starting the next (3.8);
  4. every segment is rebuilt: its payload becomes the plaintext of the frames that END in
     it (a frame's data appears where a receiver could first read it), the Init message
     becomes nothing, and sequence, acknowledgment and SACK numbers are renumbered to the
     plaintext streams; IP length and checksum and TCP checksum recomputed.

A stream offset o (bytes after the ISN's SYN) maps to P(o) = the application bytes of the
frames ending at or before o; past the end of the stream (the FIN) it runs on one for one.
The same wire bytes always map to the same plaintext, so retransmissions stay retransmissions.

Init1/Init2 and rekeys are reported one line each on stdout, then one line per connection.
A tcpcrypt connection that no key opens (or whose capture has holes) is left as it is and
named; the exit status is then 1 (0 when every tcpcrypt connection was decrypted).  The
output is LINKTYPE_RAW whatever the input's link type.
"""
from __future__ import annotations

import argparse
import bisect
import ipaddress
import struct
import sys
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence, TextIO

from tcpcrypt.eno import parse_syn_option
from tcpcrypt.errors import TcpcryptError
from tcpcrypt.frames import (CONTROL_REKEY, FLAG_FINP, FLAG_URGP, FRAME_HEADER, FRAME_HEADER_LEN,
                             FrameKey, open_frame)
from tcpcrypt.keylog import KeyLogEntry, parse_keylog
from tcpcrypt.messages import (HEADER_LEN, INIT1_MAGIC, INIT2_MAGIC, MAX_INIT_LEN, parse_init1,
                               parse_init2)
from tcpcrypt.suites import AEADS, TEPS
from tcpstack.errors import ParseError
from tcpstack.tools.pcap import PcapWriter, read_capture
from tcpstack.wire.checksum import internet_checksum, pseudo_header_sum
from tcpstack.wire.ip import IPv4Header, parse_ip
from tcpstack.wire.segment import ACK, SYN, TCPSegment
from tcpstack.wire.tcp import IPPROTO_TCP, parse_tcp

__all__ = ["Connection", "Direction", "Frame", "analyse", "rewrite", "decrypt", "segment_notes",
           "notes_for", "main"]

Endpoint = tuple[str, int]
_MASK = 0xFFFFFFFF
_U32 = struct.Struct("!I")


def _ep(e: Endpoint) -> str:
    return f"[{e[0]}]:{e[1]}" if ":" in e[0] else f"{e[0]}:{e[1]}"


@dataclass(slots=True)
class Frame:
    """One encryption frame of a direction: where it lies in the stream and what it carried."""
    start: int                 # stream offset of its first byte (the nonce's offset, 3.6)
    end: int                   # stream offset after it
    generation: int
    rekey: bool
    flags: int
    urgent: int | None
    data: bytes


@dataclass
class Direction:
    """One direction of a connection: src -> dst."""
    src: Endpoint
    dst: Endpoint
    isn: int | None = None
    pieces: dict[int, bytes] = field(default_factory=dict)    # stream offset -> bytes seen
    stream: bytes = b""        # the contiguous prefix of the stream
    hole: int | None = None    # stream offset of the first missing byte before later data
    init: str = ""             # "Init1" / "Init2" when the stream starts with one
    init_len: int = 0
    frames: list[Frame] = field(default_factory=list)
    writer_was_a: bool | None = None
    _ends: list[int] = field(default_factory=list)
    _cum: list[int] = field(default_factory=list)             # plaintext bytes up to frame k
    plain: bytes = b""

    def offset(self, seq: int) -> int:
        """The stream offset of sequence number seq (the ISN is -1)."""
        assert self.isn is not None
        o = (seq - self.isn - 1) & _MASK
        return o - (1 << 32) if o >= 1 << 31 else o

    def plain_offset(self, o: int) -> int:
        """P(o): application bytes of the frames ending at or before stream offset o."""
        if o <= 0:
            return o
        end = len(self.stream)
        if o > end:
            return self.plain_offset(end) + (o - end)
        k = bisect.bisect_right(self._ends, o)
        return self._cum[k - 1] if k else 0

    def index(self) -> None:
        self._ends = [f.end for f in self.frames]
        total = 0
        self._cum = []
        for f in self.frames:
            total += len(f.data)
            self._cum.append(total)
        self.plain = b"".join(f.data for f in self.frames)


@dataclass
class Connection:
    """A TCP connection of the capture, from its SYN: a (active opener) and b."""
    a: Endpoint
    b: Endpoint
    dirs: dict[tuple[Endpoint, Endpoint], Direction]
    eno: bool = False
    tep: int | None = None
    entry: KeyLogEntry | None = None
    problem: str = ""          # why a tcpcrypt connection was not decrypted
    report: list[str] = field(default_factory=list)   # Init1/Init2/rekey lines, in order

    @property
    def name(self) -> str:
        return f"{_ep(self.a)}-{_ep(self.b)}"

    @property
    def decrypted(self) -> bool:
        return self.eno and self.entry is not None and not self.problem

    def summary(self) -> str:
        if not self.eno:
            return f"plain {self.name}: no TCP-ENO in its SYNs, copied as it is"
        if not self.decrypted:
            return f"NOT DECRYPTED {self.name}: {self.problem}; left encrypted"
        assert self.entry is not None
        parts = []
        for d in self.dirs.values():
            parts.append(f"{_ep(d.src)} -> {_ep(d.dst)} {len(d.frames)} frames, "
                         f"{len(d.plain)} bytes")
        return (f"decrypted {self.name}: session {self.entry.session_id.hex()} "
                f"{self.entry.suite.name}: " + "; ".join(parts))

    def direction(self, src: Endpoint, dst: Endpoint) -> Direction | None:
        return self.dirs.get((src, dst))


# --- reading the capture ---------------------------------------------------------------------

@dataclass(slots=True)
class _Seg:
    """A captured TCP segment: where its IP and TCP headers lie in the packet."""
    src: Endpoint
    dst: Endpoint
    seg: TCPSegment
    ip_len: int                # bytes of IP header (with IPv6 extension headers) before TCP
    tcp_hlen: int


def _segment(pkt: bytes) -> _Seg | None:
    try:
        hdr, payload = parse_ip(pkt)
        if hdr.proto != IPPROTO_TCP or hdr.is_fragment:
            return None
        seg = parse_tcp(payload, hdr.src, hdr.dst, verify_checksum=False)
    except (ParseError, ValueError):
        return None
    if isinstance(hdr, IPv4Header):
        ip_len = hdr.header_length
    else:
        ip_len = 40 + hdr.payload_length - len(payload)
    return _Seg((str(ipaddress.ip_address(hdr.src)), seg.src_port),
                (str(ipaddress.ip_address(hdr.dst)), seg.dst_port),
                seg, ip_len, len(payload) - len(seg.payload))


def _eno_teps(seg: TCPSegment) -> list[int] | None:
    """The TEP identifiers of a SYN's ENO options (None: no ENO option)."""
    if not seg.eno:
        return None
    teps: list[int] = []
    for payload in seg.eno:
        try:
            teps += [t.tep for t in parse_syn_option(bytes(payload))[1]]
        except (TcpcryptError, ValueError):
            pass
    return teps


def _connections(segs: Sequence[_Seg | None]) -> dict[frozenset[Endpoint], Connection]:
    conns: dict[frozenset[Endpoint], Connection] = {}
    syn_teps: dict[frozenset[Endpoint], list[int] | None] = {}
    for s in segs:
        if s is None:
            continue
        key = frozenset((s.src, s.dst))
        f = s.seg.flags
        if f & SYN and not f & ACK and key not in conns:
            conns[key] = Connection(s.src, s.dst, {(s.src, s.dst): Direction(s.src, s.dst),
                                                   (s.dst, s.src): Direction(s.dst, s.src)})
            syn_teps[key] = _eno_teps(s.seg)
        c = conns.get(key)
        if c is None:
            continue                               # no SYN captured: nothing to anchor on
        d = c.dirs[(s.src, s.dst)]
        if f & SYN:
            if d.isn is None:
                d.isn = s.seg.seq
                if f & ACK and s.src == c.b:
                    answer = _eno_teps(s.seg)
                    offered = syn_teps.get(key)
                    if answer is not None and offered is not None:
                        common = [t for t in answer if t in offered and t in TEPS]
                        c.eno = True
                        c.tep = common[-1] if common else None
            continue
        if d.isn is None or not s.seg.payload:
            continue
        o = d.offset(s.seg.seq)
        data = bytes(s.seg.payload)
        if o < 0:                                  # a segment from before the ISN: ignore
            continue
        if len(data) > len(d.pieces.get(o, b"")):
            d.pieces[o] = data
    for c in conns.values():
        for d in c.dirs.values():
            buf = bytearray()
            for o in sorted(d.pieces):
                piece = d.pieces[o]
                if o > len(buf):
                    d.hole = len(buf)
                    break
                if o + len(piece) > len(buf):
                    buf += piece[len(buf) - o:]
            d.stream = bytes(buf)
            d.pieces = {}
    return conns


# --- decrypting ------------------------------------------------------------------------------

def _read_init(c: Connection, d: Direction) -> None:
    s = d.stream
    if len(s) < HEADER_LEN:
        return
    magic, mlen = struct.unpack_from("!II", s, 0)
    if magic not in (INIT1_MAGIC, INIT2_MAGIC) or not HEADER_LEN <= mlen <= MAX_INIT_LEN:
        return
    d.init = "Init1" if magic == INIT1_MAGIC else "Init2"
    d.init_len = mlen
    what = f"{d.init} {_ep(d.src)} -> {_ep(d.dst)}: {mlen} bytes"
    ka = TEPS.get(c.tep) if c.tep is not None else None
    if ka is not None and len(s) >= mlen:
        try:
            if magic == INIT1_MAGIC:
                m1 = parse_init1(s[:mlen], ka)
                names = " ".join(AEADS[a].name if a in AEADS else f"{a:#06x}" for a in m1.sym_ciphers)
                what += f", TEP {ka.name}, offers {names}"
            else:
                m2 = parse_init2(s[:mlen], ka)
                name = AEADS[m2.sym_cipher].name if m2.sym_cipher in AEADS else f"{m2.sym_cipher:#06x}"
                what += f", TEP {ka.name}, chooses {name}"
        except TcpcryptError as e:
            what += f" (malformed: {e})"
    c.report.append(what)


def _frame_at(s: bytes, pos: int) -> tuple[int, int] | None:
    """(control, end) of the complete frame at s[pos:], or None."""
    if len(s) - pos < FRAME_HEADER_LEN:
        return None
    control, clen = FRAME_HEADER.unpack_from(s, pos)
    end = pos + FRAME_HEADER_LEN + clen
    return (control, end) if end <= len(s) else None


class _Keys:
    """FrameKeys of one entry, built once per (generation, direction)."""
    def __init__(self, entry: KeyLogEntry) -> None:
        self.entry = entry
        self._cache: dict[tuple[int, bool], FrameKey] = {}

    def get(self, generation: int, writer_was_a: bool) -> FrameKey:
        k = self._cache.get((generation, writer_was_a))
        if k is None:
            k = FrameKey(self.entry.suite, self.entry.traffic_key(generation, writer_was_a), generation)
            self._cache[(generation, writer_was_a)] = k
        return k


def _opens(keys: _Keys, writer_was_a: bool, d: Direction) -> bool:
    """Does this key open d's first frame?"""
    first = _frame_at(d.stream, d.init_len)
    if first is None:
        return False
    control, end = first
    gen = 1 if control & CONTROL_REKEY else 0
    try:
        open_frame(keys.get(gen, writer_was_a), d.init_len, d.stream[d.init_len:end])
    except (TcpcryptError, ValueError):
        return False
    return True


def _decrypt_direction(c: Connection, d: Direction, keys: _Keys) -> str:
    """Open every frame of d; "" or what went wrong."""
    assert d.writer_was_a is not None
    pos, gen = d.init_len, 0
    s = d.stream
    while (fr := _frame_at(s, pos)) is not None:
        control, end = fr
        rekey = bool(control & CONTROL_REKEY)
        if rekey:
            gen += 1
        try:
            _, flags, urgent, data = open_frame(keys.get(gen, d.writer_was_a), pos, s[pos:end])
        except (TcpcryptError, ValueError) as e:
            return f"{_ep(d.src)} -> {_ep(d.dst)}: frame at stream offset {pos}: {e}"
        d.frames.append(Frame(pos, end, gen, rekey, flags, urgent, data))
        if rekey:
            c.report.append(f"rekey {_ep(d.src)} -> {_ep(d.dst)}: generation {gen} from frame "
                            f"{len(d.frames)} at stream offset {pos}")
        pos = end
    if pos < len(s):
        c.report.append(f"{_ep(d.src)} -> {_ep(d.dst)}: the capture ends inside a frame at "
                        f"stream offset {pos} ({len(s) - pos} bytes not decrypted)")
    d.index()
    return ""


def _decrypt_connection(c: Connection, entries: Sequence[KeyLogEntry]) -> None:
    if any(d.isn is None for d in c.dirs.values()):
        c.problem = "the handshake is not in the capture"
        return
    for d in c.dirs.values():
        _read_init(c, d)
    holes = [d for d in c.dirs.values() if d.hole is not None]
    if holes:
        c.problem = "; ".join(f"the capture misses {_ep(d.src)} -> {_ep(d.dst)} bytes at stream "
                              f"offset {d.hole}" for d in holes)
        return
    with_frames = [d for d in c.dirs.values() if _frame_at(d.stream, d.init_len) is not None]
    if not with_frames:
        c.problem = "no complete encryption frame in the capture"
        return
    probe = with_frames[0]
    for entry in entries:
        if entry.aead not in AEADS:
            continue
        keys = _Keys(entry)
        for writer_was_a in (True, False):
            if _opens(keys, writer_was_a, probe):
                c.entry = entry
                probe.writer_was_a = writer_was_a
                break
        if c.entry is not None:
            break
    if c.entry is None:
        c.problem = f"no key in the key log opens its frames ({len(entries)} sessions tried)"
        return
    keys = _Keys(c.entry)
    for d in c.dirs.values():
        if d is not probe:
            d.writer_was_a = not probe.writer_was_a
    errors = [e for d in c.dirs.values() if (e := _decrypt_direction(c, d, keys))]
    if errors:
        c.problem = "; ".join(errors)


def analyse(packets: Iterable[bytes], entries: Sequence[KeyLogEntry]) -> list[Connection]:
    """The TCP connections of a capture (in order of their SYNs), tcpcrypt ones decrypted
    when a key log entry opens them."""
    segs = [_segment(p) for p in packets]
    conns = list(_connections(segs).values())
    for c in conns:
        if c.eno:
            _decrypt_connection(c, entries)
    return conns


# --- rewriting -------------------------------------------------------------------------------

def _patch_sack(opts: bytearray, mapper: Direction) -> None:
    """Renumber the SACK blocks (kind 5) in raw TCP options to the plaintext stream."""
    i = 0
    while i < len(opts):
        kind = opts[i]
        if kind == 0:
            return
        if kind == 1:
            i += 1
            continue
        if i + 1 >= len(opts) or opts[i + 1] < 2:
            return
        length = opts[i + 1]
        if kind == 5:
            for j in range(i + 2, min(i + length, len(opts)) - 3, 4):
                edge = _U32.unpack_from(opts, j)[0]
                assert mapper.isn is not None
                new = (mapper.isn + 1 + mapper.plain_offset(mapper.offset(edge))) & _MASK
                _U32.pack_into(opts, j, new)
        i += length


def _rebuild(pkt: bytes, s: _Seg, c: Connection) -> bytes:
    d = c.dirs[(s.src, s.dst)]
    peer = c.dirs[(s.dst, s.src)]
    seg = s.seg
    tcp_off = s.ip_len
    header = bytearray(pkt[tcp_off:tcp_off + s.tcp_hlen])
    payload = b""
    if not seg.flags & SYN:
        o1 = d.offset(seg.seq)
        p1 = d.plain_offset(o1)
        p2 = d.plain_offset(o1 + len(seg.payload))
        payload = d.plain[p1:p2] if p1 >= 0 else b""
        assert d.isn is not None
        _U32.pack_into(header, 4, (d.isn + 1 + p1) & _MASK)
    if seg.flags & ACK and peer.isn is not None:
        _U32.pack_into(header, 8, (peer.isn + 1 + peer.plain_offset(peer.offset(seg.ack))) & _MASK)
    opts = header[20:]
    _patch_sack(opts, peer)
    header[20:] = opts
    header[16:18] = b"\0\0"
    tcp = header + payload
    hdr, _ = parse_ip(pkt)
    csum = internet_checksum(tcp, pseudo_header_sum(hdr.src, hdr.dst, IPPROTO_TCP, len(tcp)))
    tcp[16:18] = csum.to_bytes(2, "big")
    ip = bytearray(pkt[:tcp_off])
    if isinstance(hdr, IPv4Header):
        ip[2:4] = (len(ip) + len(tcp)).to_bytes(2, "big")
        ip[10:12] = b"\0\0"
        ip[10:12] = internet_checksum(ip).to_bytes(2, "big")
    else:
        ip[4:6] = (len(ip) - 40 + len(tcp)).to_bytes(2, "big")
    return bytes(ip + tcp)


def rewrite(packets: Iterable[bytes], conns: Sequence[Connection]) -> list[bytes]:
    """The packets with every decrypted connection's segments rebuilt on its plaintext."""
    by_key = {frozenset((c.a, c.b)): c for c in conns if c.decrypted}
    out = []
    for pkt in packets:
        s = _segment(pkt) if by_key else None
        c = by_key.get(frozenset((s.src, s.dst))) if s is not None else None
        out.append(_rebuild(pkt, s, c) if s is not None and c is not None else pkt)
    return out


def decrypt(capture: str, keylog_lines: Iterable[str], output: str, *,
            out: TextIO | None = None) -> list[Connection]:
    """Read capture, write the plaintext capture to output, report on out (stdout)."""
    out = out if out is not None else sys.stdout
    records = read_capture(capture)
    entries = parse_keylog(keylog_lines)
    packets = [p for _, p in records]
    conns = analyse(packets, entries)
    for c in conns:
        for line in c.report:
            print(line, file=out)
        print(c.summary(), file=out)
    with PcapWriter(output) as w:
        for (t, _), pkt in zip(records, rewrite(packets, conns)):
            w.write(pkt, t)
    return conns


# --- the diagram's notes ---------------------------------------------------------------------

def segment_notes(conn: Connection, src: Endpoint, dst: Endpoint, seg: TCPSegment) -> str:
    """What a segment carries inside tcpcrypt: the Init message, the plaintext length of the
    frames that end in it, rekeys (with the new generation), FINp, URGp."""
    d = conn.direction(src, dst)
    if d is None or d.isn is None or seg.flags & SYN or not seg.payload or not conn.decrypted:
        return ""
    o1 = d.offset(seg.seq)
    o2 = o1 + len(seg.payload)
    notes = []
    if d.init and o1 < d.init_len <= o2:
        notes.append(d.init)
    done = [f for f in d.frames if o1 < f.end <= o2]
    if done:
        notes.append(f"plain {sum(len(f.data) for f in done)} in {len(done)} frame"
                     + ("s" if len(done) > 1 else ""))
    for f in done:
        if f.rekey:
            notes.append(f"rekey gen {f.generation}")
        if f.flags & FLAG_URGP:
            notes.append(f"URGp {f.urgent}")
        if f.flags & FLAG_FINP:
            notes.append("FINp")
    return ", ".join(notes)


def notes_for(conns: Sequence[Connection]) -> Callable[[Endpoint, Endpoint, TCPSegment], str]:
    """segment_notes over every decrypted connection of `conns`: the diagram's build(notes=)."""
    by_key = {frozenset((c.a, c.b)): c for c in conns if c.decrypted}

    def notes(src: Endpoint, dst: Endpoint, seg: TCPSegment) -> str:
        c = by_key.get(frozenset((src, dst)))
        return segment_notes(c, src, dst, seg) if c is not None else ""
    return notes


# --- the command -----------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="tcpstack decrypt",
                                description="decrypt the tcpcrypt connections of a capture "
                                            "with a key log (TCPCRYPT_KEYLOGFILE)")
    p.add_argument("capture", help="the pcap file (raw IP, Ethernet or Linux cooked)")
    p.add_argument("--keylog", required=True, metavar="FILE", help="the key log")
    p.add_argument("-o", "--output", required=True, metavar="PLAIN.pcap",
                   help="the plaintext capture to write (LINKTYPE_RAW)")
    args = p.parse_args(argv)
    try:
        with open(args.keylog) as f:
            lines = f.readlines()
        conns = decrypt(args.capture, lines, args.output)
    except (OSError, ParseError, ValueError) as e:
        print(f"tcpstack decrypt: {e}", file=sys.stderr)
        return 2
    return 1 if any(c.eno and not c.decrypted for c in conns) else 0


if __name__ == "__main__":
    sys.exit(main())
