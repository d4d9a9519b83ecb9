"""Pictures of TCP at work: a tcptrace-style time-sequence graph of a captured connection,
and the sender's own congestion state over time (cwnd, ssthresh, pipe, srtt, rto, recovery
episodes), which no capture can show, from the TCB itself on the simulated network.

Data and drawing are apart.  The data are plain series any test can check:

* :func:`time_sequence` reads a capture (pcap records, tcpstack/tools/diagram.py's reader
  and parser) and returns, for one direction of one connection, the data segments as
  (t, first, end) sequence ranges relative to the sender's ISN (retransmissions, whose range
  starts below the highest sequence already sent, on their own), the receiver's cumulative
  ACK and the right edge of its window (ACK + window << the shift from its SYN, RFC 7323
  2.3) as (t, value) steps, and its SACK blocks (RFC 2018) as (t, left, right).
* :class:`CCRecorder` is a ``TCPConfig.sample_observer``: the TCB hands it a
  :class:`~tcpstack.tcp.events.CCSample` after every ACK it processes and every
  retransmission timeout; :class:`CCSeries` turns them into (t, value) series and recovery
  episodes.  :func:`run_sim` runs one bulk transfer on the simulator (tcpstack/sim.py) with
  a chosen congestion control and a lossy path and returns both kinds of data.

Drawing (:func:`draw_time_sequence`, :func:`draw_cc`) uses matplotlib, an optional extra
(``pip install 'tcpcrypt-py[plot]'``), imported only when a picture is drawn; the figures are
standalone ``matplotlib.figure.Figure`` objects (no pyplot, no global backend), saved as SVG
or PNG by the file name's suffix.

    tcpstack plot CAPTURE.pcap [--conn A:P-B:Q] [--time T0:T1] -o out.svg|out.png
    tcpstack plot --sim --cc newreno,cubic --loss 0.01 [--rate 20e6 --delay 0.02
                  --bytes N --seed S] [--pcap-dir DIR] -o out.png
"""
from __future__ import annotations

import argparse
import ipaddress
import random
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable, Sequence

from tcpstack.errors import ParseError, TcpStackError
from tcpstack.tcp.congestion.base import INFINITE_SSTHRESH
from tcpstack.tcp.events import CCSample
from tcpstack.tools.diagram import Endpoint, Record, _tcp, parse_conn, read_pcap
from tcpstack.wire.segment import ACK, SYN

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from tcpstack.tcp.connection import TCPConnection

MASK = 0xFFFFFFFF

__all__ = ["PlotError", "TimeSequence", "time_sequence", "CCRecorder", "CCSeries", "SimRun",
           "run_sim", "draw_time_sequence", "draw_cc", "main"]


class PlotError(TcpStackError):
    """Nothing to draw, or no way to draw it (matplotlib missing)."""


# --- the time-sequence graph of a capture -----------------------------------------------------

@dataclass
class TimeSequence:
    """One direction of one connection, as tcptrace draws it.  Times in seconds from the
    connection's first captured packet; sequence numbers relative to the sender's ISN (the
    first data octet is 1, as Wireshark shows it)."""
    sender: Endpoint
    receiver: Endpoint
    t0: float                                            # absolute time of the first packet
    data: list[tuple[float, int, int]] = field(default_factory=list)             # (t, first, end)
    retransmissions: list[tuple[float, int, int]] = field(default_factory=list)  # (t, first, end)
    acks: list[tuple[float, int]] = field(default_factory=list)                  # (t, ack)
    window: list[tuple[float, int]] = field(default_factory=list)               # (t, ack + wnd)
    sacks: list[tuple[float, int, int]] = field(default_factory=list)            # (t, left, right)
    wscale: int | None = None      # the shift applied to the receiver's window, None: no SYNs seen


def time_sequence(records: Iterable[Record], conn: tuple[Endpoint, Endpoint] | None = None
                  ) -> TimeSequence:
    """The time-sequence data of one direction of a connection in `records` ((time, _, IP
    packet), as diagram.read_pcap returns or StackCore.on_packet gives).  `conn` is
    (sender, receiver); without it, the first connection seen, in the direction that
    carried more payload."""
    segs = []
    for t, _dir, pkt in records:
        r = _tcp(pkt)
        if r is not None:
            segs.append((t, *r))
    if not segs:
        raise PlotError("no TCP segment in the capture")
    if conn is None:
        syn = next((s for s in segs if s[3].flags & (SYN | ACK) == SYN), segs[0])
        a, b = syn[1], syn[2]
        sent = {a: 0, b: 0}
        for _t, src, dst, seg in segs:
            if {src, dst} == {a, b}:
                sent[src] += len(seg.payload)
        conn = (a, b) if sent[a] >= sent[b] else (b, a)
    sender, receiver = conn
    segs = [s for s in segs if (s[1], s[2]) in (conn, (receiver, sender))]
    if not segs:
        raise PlotError(f"no segment of {sender[0]}:{sender[1]}-{receiver[0]}:{receiver[1]}")
    ts = TimeSequence(sender, receiver, segs[0][0])
    # RFC 7323 2.2: the shift applies only when both SYNs carried the option, and never to
    # the window field of a SYN itself.
    syn_ws: dict[Endpoint, int | None] = {}
    for _t, src, _dst, seg in segs:
        if seg.flags & SYN and src not in syn_ws:
            syn_ws[src] = seg.wscale
    if len(syn_ws) == 2:
        ws_r, ws_s = syn_ws[receiver], syn_ws[sender]
        ts.wscale = min(ws_r, 14) if ws_r is not None and ws_s is not None else 0
    shift = ts.wscale or 0
    isn: int | None = None
    high = 0                       # one past the highest relative sequence sent
    for t, src, _dst, seg in segs:
        t -= ts.t0
        if src == sender:
            if isn is None:
                isn = seg.seq if seg.flags & SYN else (seg.seq - 1) & MASK
            n = len(seg.payload)
            if n:
                first = (seg.seq - isn) & MASK
                rng = (t, first, first + n)
                (ts.retransmissions if first < high else ts.data).append(rng)
                if first + n > high:
                    high = first + n
        elif seg.flags & ACK and isn is not None:
            ack = (seg.ack - isn) & MASK
            ts.acks.append((t, ack))
            ts.window.append((t, ack + (seg.window if seg.flags & SYN else seg.window << shift)))
            for left, right in seg.sack_blocks:
                ts.sacks.append((t, (left - isn) & MASK, (right - isn) & MASK))
    return ts


# --- the sender's state over time, from the TCB ----------------------------------------------

class CCRecorder:
    """A ``TCPConfig.sample_observer``: keeps every CCSample, per connection."""

    def __init__(self) -> None:
        self.samples: dict["TCPConnection", list[CCSample]] = {}

    def __call__(self, conn: "TCPConnection", sample: CCSample) -> None:
        lst = self.samples.get(conn)
        if lst is None:
            lst = self.samples[conn] = []
        lst.append(sample)


@dataclass
class CCSeries:
    """The samples of one connection, as series to draw."""
    samples: list[CCSample]

    def series(self, name: str) -> list[tuple[float, Any]]:
        """(t, value) of one CCSample field ("cwnd", "ssthresh", "pipe", "srtt", "rto",
        "snd_una"...) in sample order; ssthresh before the first loss response (RFC 5681's
        "arbitrarily high" value) and srtt before the first RTT sample are left out."""
        out = []
        for s in self.samples:
            v = getattr(s, name)
            if v is None or (name == "ssthresh" and v >= INFINITE_SSTHRESH):
                continue
            out.append((s.t, v))
        return out

    def recoveries(self) -> list[tuple[float, float, str]]:
        """(start, end, kind) of each recovery episode, kind "fast" (fast retransmit and
        recovery) or "rto" (after a retransmission timeout): from the first sample in the
        state to the first sample out of it (or the last sample, when still in it)."""
        out: list[tuple[float, float, str]] = []
        cur: str | None = None
        start = 0.0
        for s in self.samples:
            kind = "rto" if s.in_loss else "fast" if s.in_recovery else None
            if kind != cur:
                if cur is not None:
                    out.append((start, s.t, cur))
                cur, start = kind, s.t
        if cur is not None and self.samples:
            out.append((start, self.samples[-1].t, cur))
        return out


@dataclass
class SimRun:
    """One bulk transfer on the simulator: what the sender's TCB went through, and the
    capture at the sender (data as sent, ACKs as received)."""
    cc: str
    series: CCSeries
    records: list[Record]
    mss: int
    duration: float               # virtual seconds from the SYN to the last byte acknowledged
    nbytes: int
    delivered: bool               # the receiver got exactly the bytes sent
    stats: Any                    # the sender's ConnectionStats at the end
    path: str                     # "1% loss, 20 Mbit/s, 40 ms RTT"


CLIENT, SERVER = "10.0.0.1", "10.0.0.2"


def run_sim(cc: str, *, loss: float = 0.01, rate_bps: float = 20e6, delay: float = 0.020,
            nbytes: int = 2_000_000, seed: int = 1, max_time: float = 600.0) -> SimRun:
    """Send `nbytes` from a client to a server on the simulated network, with congestion
    control `cc` ("newreno", "cubic") at the sender, `loss` (independent, 0..1) on the data
    direction only (the ACK path is clean), `rate_bps` each way and `delay` one way; the
    same seed makes the same run.  Plain TCP (no tcpcrypt), SACK and timestamps on."""
    from tcpstack.host.endpoint import Closed, Eof, Established
    from tcpstack.host.stack import StackConfig, StackCore
    from tcpstack.sim import LinkConfig, Network, StackHost, sink
    from tcpstack.tcp.config import TCPConfig

    recorder = CCRecorder()
    data = random.Random(seed).randbytes(nbytes)
    records: list[Record] = []
    received = bytearray()
    done: list[float] = []

    class Sender(StackHost):
        def react(self) -> None:
            for ep in self.core.pop_ready():
                while (ev := ep.next_event()) is not None:
                    if isinstance(ev, Established):
                        ep.send(data, self.core.now)
                        ep.shutdown_write(self.core.now)
                    elif isinstance(ev, Eof):
                        ep.close(self.core.now)
                    elif isinstance(ev, Closed):
                        done.append(self.core.now)

    class Receiver(StackHost):
        def react(self) -> None:
            sink(self.core, received)

    tcp = TCPConfig(congestion_control=cc, sample_observer=recorder)
    client = Sender(StackCore([CLIENT], StackConfig(tcp=tcp), rng=random.Random(seed)))
    server = Receiver(StackCore([SERVER], rng=random.Random(seed + 1)))
    client.core.on_packet = lambda _direction, packet, now: records.append((now, "", packet))
    net = Network(seed=seed)
    na = net.add_host(client, [ipaddress.ip_address(CLIENT).packed], "sender")
    nb = net.add_host(server, [ipaddress.ip_address(SERVER).packed], "receiver")
    net.connect(na, nb, LinkConfig(delay=delay, rate_bps=rate_bps, loss=loss),
                reverse=LinkConfig(delay=delay, rate_bps=rate_bps))
    server.core.listen(80, SERVER)
    ep = client.core.connect(SERVER, 80, 0.0)
    client.react()
    net.run(max_time=max_time, stop=lambda: bool(done))
    conn = ep.conn
    samples = recorder.samples.get(conn, [])
    acked = [s.t for s in samples if s.snd_una - conn.iss > nbytes]
    path = (f"{loss * 100:g}% loss, {rate_bps / 1e6:g} Mbit/s, "
            f"{2 * delay * 1000:g} ms RTT")
    return SimRun(conn.cc.name, CCSeries(samples), records, conn.snd_mss,
                  acked[0] if acked else net.now, nbytes, bytes(received) == data,
                  conn.stats, path)


# --- drawing ---------------------------------------------------------------------------------

def _figure(width: float, height: float) -> "Figure":
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise PlotError("matplotlib is not installed: pip install 'tcpcrypt-py[plot]'") from None
    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _in(window: tuple[float, float] | None, t: float) -> bool:
    return window is None or window[0] <= t <= window[1]


def draw_time_sequence(ts: TimeSequence, *, window: tuple[float, float] | None = None,
                       title: str | None = None) -> "Figure":
    """tcptrace's picture: each data segment a vertical bar over its sequence range at its
    send time (black; retransmissions red), the receiver's cumulative ACK (green) and the
    right edge of its advertised window (gold) as steps, SACK blocks as purple bars.
    `window` = (t0, t1) zooms in on that time span."""
    from matplotlib.ticker import EngFormatter
    fig = _figure(10, 5.6)
    ax = fig.add_subplot()
    data = [d for d in ts.data if _in(window, d[0])]
    rtx = [d for d in ts.retransmissions if _in(window, d[0])]
    sacks = [d for d in ts.sacks if _in(window, d[0])]
    acks = [a for a in ts.acks if _in(window, a[0])]
    wnd = [w for w in ts.window if _in(window, w[0])]
    if wnd:
        ax.step([w[0] for w in wnd], [w[1] for w in wnd], where="post", color="#d4a000",
                lw=1, label="receive window (ACK + window)")
    if acks:
        ax.step([a[0] for a in acks], [a[1] for a in acks], where="post", color="#1a9641",
                lw=1.2, label="ACK")
    if sacks:
        ax.vlines([s[0] for s in sacks], [s[1] for s in sacks], [s[2] for s in sacks],
                  color="#8e44ad", lw=2.5, alpha=0.6, label="SACK blocks")
    if data:
        ax.vlines([d[0] for d in data], [d[1] for d in data], [d[2] for d in data],
                  color="black", lw=1.2, label="data segment")
    if rtx:
        ax.vlines([d[0] for d in rtx], [d[1] for d in rtx], [d[2] for d in rtx],
                  color="#d7191c", lw=2.5, label="retransmission", zorder=5)
        ax.plot([d[0] for d in rtx], [d[2] for d in rtx], "v", color="#d7191c", ms=6,
                zorder=5)
    if window is not None:
        ax.set_xlim(*window)
        ys = ([d[1] for d in data + rtx] + [d[2] for d in data + rtx] + [a[1] for a in acks]
              + [w[1] for w in wnd])
        if ys:
            pad = (max(ys) - min(ys)) * 0.05 + 1
            ax.set_ylim(min(ys) - pad, max(ys) + pad)
    ax.yaxis.set_major_formatter(EngFormatter(unit="B"))
    ax.set_xlabel("time (s)")
    ax.set_ylabel("sequence number (relative to the ISN)")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    s, r = ts.sender, ts.receiver
    ax.set_title(title or f"{s[0]}:{s[1]} -> {r[0]}:{r[1]}: {len(ts.data)} segments, "
                          f"{len(ts.retransmissions)} retransmissions", fontsize=10)
    return fig


def _shade(ax: "Axes", episodes: Sequence[tuple[float, float, str]], legend: bool) -> None:
    seen: set[str] = set()
    for start, end, kind in episodes:
        label = None
        if legend and kind not in seen:
            label = "fast recovery" if kind == "fast" else "RTO recovery"
            seen.add(kind)
        ax.axvspan(start, max(end, start + 1e-3), color="#fdae61" if kind == "fast" else "#d7191c",
                   alpha=0.35, lw=0, label=label)


def draw_cc(runs: Sequence[SimRun], *, window: tuple[float, float] | None = None) -> "Figure":
    """One column per run: cwnd, ssthresh and pipe (in segments); srtt and rto (ms); bytes
    acknowledged (MB); recovery episodes shaded on each.  Rows share their y axis, so
    columns compare directly.  `window` = (t0, t1) zooms in on that time span."""
    fig = _figure(5.2 * len(runs) + 0.6, 8.2)
    axes = fig.subplots(3, len(runs), sharex="col", sharey="row", squeeze=False)
    for col, run in enumerate(runs):
        s = run.series
        mss = run.mss
        ep = s.recoveries()
        a0, a1, a2 = axes[0][col], axes[1][col], axes[2][col]
        for ax in (a0, a1, a2):
            _shade(ax, ep, ax is a0)
            ax.grid(True, alpha=0.3)

        def xy(name: str, scale: float) -> tuple[list[float], list[float]]:
            pts = s.series(name)
            return [p[0] for p in pts], [p[1] / scale for p in pts]
        a0.step(*xy("pipe", mss), where="post", color="#2c7bb6", lw=0.6, alpha=0.6, label="pipe")
        a0.step(*xy("cwnd", mss), where="post", color="black", lw=1.2, label="cwnd")
        a0.step(*xy("ssthresh", mss), where="post", color="#d7191c", lw=1.2, ls="--",
                label="ssthresh")
        a1.step(*xy("srtt", 1e-3), where="post", color="#1a9641", lw=1.2, label="srtt")
        a1.step(*xy("rto", 1e-3), where="post", color="#7b3294", lw=1.2, label="rto")
        base = (s.samples[0].snd_una - 1) / 1e6 if s.samples else 0.0   # the SYN's octet
        t, una = xy("snd_una", 1e6)
        a2.plot(t, [u - base for u in una], color="black", lw=1.2, label="acknowledged")
        st = run.stats
        goodput = run.nbytes * 8 / run.duration / 1e6 if run.duration else 0.0
        a0.set_title(f"{run.cc}: {run.path}\n{st.recoveries} fast recoveries, {st.timeouts} "
                     f"timeouts, {st.retransmits} retransmissions, {goodput:.2f} Mbit/s",
                     fontsize=9)
        a2.set_xlabel("time (s)")
        if window is not None:
            a2.set_xlim(*window)
        if col == 0:
            a0.set_ylabel("segments")
            a1.set_ylabel("ms")
            a2.set_ylabel("MB acknowledged")
            for ax in (a0, a1, a2):
                ax.legend(loc="upper left", fontsize=7)
    return fig


def save(fig: "Figure", path: str) -> None:
    """SVG or PNG (or any format matplotlib knows) by the file name's suffix."""
    fig.savefig(path)


# --- the command -----------------------------------------------------------------------------

def _span(s: str) -> tuple[float, float]:
    a, sep, b = s.partition(":")
    try:
        t0, t1 = float(a), float(b)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a time span T0:T1 (seconds): {s!r}") from None
    if not sep or t1 <= t0:
        raise argparse.ArgumentTypeError(f"not a time span T0:T1 with T0 < T1: {s!r}")
    return t0, t1


def _fraction(s: str) -> float:
    try:
        v = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {s!r}") from None
    if not 0 <= v < 1:
        raise argparse.ArgumentTypeError(f"a loss probability is in [0, 1): {s!r}")
    return v


def _positive(kind: type) -> Any:
    def conv(s: str) -> Any:
        try:
            v = kind(float(s)) if kind is int else kind(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {s!r}") from None
        if v <= 0:
            raise argparse.ArgumentTypeError(f"must be positive: {s!r}")
        return v
    return conv


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="tcpstack plot", description="Draw TCP at work: a time-sequence graph of a "
        "capture, or (--sim) the congestion state of simulated transfers side by side.")
    p.add_argument("pcap", nargs="?", help="a capture (pcap) to draw as a time-sequence graph")
    p.add_argument("-o", "--output", required=True, help="the picture: .svg or .png")
    p.add_argument("--conn", help="SENDER:PORT-RECEIVER:PORT (default: the first connection, "
                                  "in the direction that carried more data)")
    p.add_argument("--time", type=_span, metavar="T0:T1", help="zoom in on this time span (s)")
    g = p.add_argument_group("simulation (--sim)")
    g.add_argument("--sim", action="store_true", help="run transfers on the simulator and draw "
                   "cwnd, ssthresh, pipe, srtt, rto and recovery episodes, one column each")
    g.add_argument("--cc", default="newreno,cubic", help="congestion controls, comma-separated")
    g.add_argument("--loss", type=_fraction, default=0.01, help="loss on the data path (0..1)")
    g.add_argument("--rate", type=_positive(float), default=20e6, help="bits per second each way")
    g.add_argument("--delay", type=_positive(float), default=0.020, help="one-way delay (s)")
    g.add_argument("--bytes", type=_positive(int), default=2_000_000, help="bytes to send")
    g.add_argument("--seed", type=int, default=1)
    g.add_argument("--pcap-dir", metavar="DIR",
                   help="also write each run's capture at the sender as DIR/CC.pcap")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.sim:
            if args.pcap:
                raise PlotError("give a capture or --sim, not both")
            return _main_sim(args)
        if not args.pcap:
            raise PlotError("give a capture to draw, or --sim")
        conn = parse_conn(args.conn) if args.conn else None
        ts = time_sequence(read_pcap(args.pcap), conn)
        save(draw_time_sequence(ts, window=args.time), args.output)
    except (OSError, ParseError, PlotError, ValueError) as e:
        print(f"tcpstack plot: {e}", file=sys.stderr)
        return 1
    return 0


def _main_sim(args: argparse.Namespace) -> int:
    import os
    from tcpstack.tcp.congestion import make_congestion_control
    names = [c.strip() for c in args.cc.split(",") if c.strip()]
    if not names:
        raise PlotError("--cc names no congestion control")
    for n in names:
        make_congestion_control(n, 1460, 0.0)        # ValueError: unknown name
    _figure(1, 1)                                     # matplotlib missing: say so before running
    runs = []
    for n in names:
        run = run_sim(n, loss=args.loss, rate_bps=args.rate, delay=args.delay,
                      nbytes=args.bytes, seed=args.seed)
        if not run.delivered:
            raise PlotError(f"{n}: the transfer did not complete")
        runs.append(run)
        if args.pcap_dir:
            from tcpstack.tools.pcap import PcapWriter
            with PcapWriter(os.path.join(args.pcap_dir, f"{n}.pcap")) as w:
                for t, _d, pkt in run.records:
                    w.write(pkt, t)
    save(draw_cc(runs, window=args.time), args.output)
    for run in runs:
        st = run.stats
        print(f"{run.cc}: {run.duration:.2f} s, {st.recoveries} fast recoveries, "
              f"{st.timeouts} timeouts, {st.retransmits} retransmissions")
    return 0


if __name__ == "__main__":
    sys.exit(main())
