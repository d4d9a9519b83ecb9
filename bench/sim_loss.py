"""Loss recovery on the simulator: the impaired-path scenarios of issue 14, seeded.

    python bench/sim_loss.py [--mb 5] [--seed 1] [--only 3pct,burst] [--cc cubic] [--seeds 3]

One stack sends ``--mb`` megabytes to another across a simulated veth-like path: 200 Mbit/s
each way behind a drop-tail queue of 100 packets (150 000 bytes: Impairment.queue_bytes
counts bytes), MTU 1500 (MSS 1460), 0.5 ms one way (about 1 ms RTT, plus queueing), and the
scenario's loss, bursts or reordering on BOTH directions (data and ACKs alike, as netem on
both ends of a veth).  Per scenario it prints the throughput (first SYN to the last byte
acknowledged), the sender's retransmission timeouts, fast recoveries, tail loss probes,
retransmissions and the spurious ones the receiver reported (D-SACK) and the responses
undone.  Everything random comes from the seed: the same seed replays the same run.
"""
from __future__ import annotations

import argparse
import ipaddress
import random
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable

from tcpstack.host.endpoint import Closed, Eof, Established
from tcpstack.host.stack import StackConfig, StackCore
from tcpstack.impairment import GilbertElliott, Impairment
from tcpstack.sim import Network, StackHost, sink
from tcpstack.tcp.config import TCPConfig

CLIENT, SERVER = "10.0.0.1", "10.0.0.2"
RATE = 200e6
QUEUE = 100 * 1500
DELAY = 0.0005


def _path(**kw: Any) -> Impairment:
    base: dict[str, Any] = dict(delay=DELAY, rate_bps=RATE, queue_bytes=QUEUE)
    base.update(kw)
    return Impairment(**base)


# name -> (description, factory of one direction's Impairment); both directions get one each
SCENARIOS: dict[str, tuple[str, Callable[[], Impairment]]] = {
    "clean": ("no impairment", lambda: _path()),
    "1pct": ("1% random loss", lambda: _path(loss=0.01)),
    "3pct": ("3% random loss", lambda: _path(loss=0.03)),
    "10pct": ("10% loss + bottleneck", lambda: _path(loss=0.10)),
    "10pct-nobn": ("10% loss, no bottleneck", lambda: _path(loss=0.10, rate_bps=None,
                                                            queue_bytes=None)),
    # 10 of every 1000 packets, in bursts of 10 on average: P(bad) = p/(p+r) = 1%
    "burst": ("bursts 10/1000", lambda: _path(burst_loss=GilbertElliott(p=0.1 / 99, r=0.1))),
    # impaired.py's burst row exactly: the last 10 of every 1000 packets, by count
    "burst-count": ("bursts 10/1000 by count", lambda: _path(burst_every=(1000, 10))),
    "rtt50": ("50 ms RTT", lambda: _path(delay=0.025)),
    "rtt50-1pct": ("50 ms RTT + 1% loss", lambda: _path(delay=0.025, loss=0.01)),
    "reorder": ("20% reorder +10 ms", lambda: _path(reorder=0.20, reorder_delay=0.010)),
    # A nearly idle flow: the application writes 4 segments every 5 ms (~9 Mbit/s), so
    # each burst of losses meets a short flight with little or no data behind it.
    "idle-burst": ("app-limited + bursts", lambda: _path(
        burst_loss=GilbertElliott(p=0.1 / 99, r=0.1))),
    "idle-3pct": ("app-limited + 3% loss", lambda: _path(loss=0.03)),
    "idle-burst-count": ("app-limited + bursts by count", lambda: _path(burst_every=(1000, 10))),
}
# Scenarios whose sender is application-limited: (bytes per write, seconds between writes).
APP_LIMITED = {"idle-burst": (4 * 1448, 0.005), "idle-3pct": (4 * 1448, 0.005),
               "idle-burst-count": (4 * 1448, 0.005)}


@dataclass
class Result:
    name: str
    seconds: float          # virtual time from the SYN to the last byte acknowledged
    ok: bool                # the receiver got every byte, in order
    stats: Any              # the sender's ConnectionStats
    wall: float

    @property
    def mbps(self) -> float:
        return 0.0 if not self.seconds else self.nbytes * 8 / self.seconds / 1e6

    nbytes: int = 0


def run(name: str, nbytes: int, seed: int, cc: str = "cubic", max_time: float = 600.0,
        tcp: TCPConfig | None = None, observe: Callable[..., None] | None = None,
        rtcp: TCPConfig | None = None, batch: float = 0.0) -> Result:
    """One transfer of ``nbytes`` under scenario ``name``; the same seed, the same run."""
    _desc, factory = SCENARIOS[name]
    data = random.Random(seed).randbytes(nbytes)
    received = bytearray()
    done: list[float] = []
    conns: list[Any] = []

    class Batched(StackHost):
        """With ``batch`` > 0, packets are handed to the core in batches, one every
        ``batch`` seconds at most (as an event loop reading a TUN device does: the core
        then ACKs once per batch, StackCore.receive_packets)."""
        pending: list[bytes]
        flush_at: float | None = None

        def receive_packet(self, packet: bytes, now: float) -> None:
            if not batch:
                super().receive_packet(packet, now)
                return
            if self.flush_at is None:
                self.pending = []
                self.flush_at = now + batch
            self.pending.append(packet)

        def next_timer(self) -> float | None:
            t = self.core.next_timer()
            f = self.flush_at
            return f if t is None or (f is not None and f < t) else t

        def handle_timer(self, now: float) -> None:
            if self.flush_at is not None and now >= self.flush_at:
                self.flush_at = None
                self.core.receive_packets(self.pending, now)
                self.react()
            t = self.core.next_timer()
            if t is not None and t <= now:
                super().handle_timer(now)

    class Sender(Batched):
        def react(self) -> None:
            for ep in self.core.pop_ready():
                while (ev := ep.next_event()) is not None:
                    if isinstance(ev, Established):
                        if name in APP_LIMITED:
                            chunk, every = APP_LIMITED[name]
                            for i, off in enumerate(range(0, len(data), chunk)):
                                def write(now: float, ep: Any = ep, off: int = off) -> None:
                                    ep.send(data[off:off + chunk], now)
                                    if off + chunk >= len(data):
                                        ep.shutdown_write(now)
                                    self.react()
                                net.call_at(self.core.now + i * every, write)
                        else:
                            ep.send(data, self.core.now)
                            ep.shutdown_write(self.core.now)
                    elif isinstance(ev, Eof):
                        ep.close(self.core.now)
                    elif isinstance(ev, Closed):
                        done.append(self.core.now)

    class Receiver(Batched):
        def react(self) -> None:
            sink(self.core, received)

    cfg = tcp or TCPConfig(congestion_control=cc)
    if observe is not None:
        cfg.sample_observer = observe
    client = Sender(StackCore([CLIENT], StackConfig(tcp=cfg), rng=random.Random(seed)))
    server = Receiver(StackCore([SERVER], StackConfig(tcp=rtcp or TCPConfig()),
                                rng=random.Random(seed + 1)))
    net = Network(seed=seed)
    na = net.add_host(client, [ipaddress.ip_address(CLIENT).packed], "sender")
    nb = net.add_host(server, [ipaddress.ip_address(SERVER).packed], "receiver")
    net.connect(na, nb, factory(), reverse=factory())
    server.core.listen(80, SERVER)
    ep = client.core.connect(SERVER, 80, 0.0)
    conns.append(ep.conn)
    client.react()
    conn = ep.conn
    end = [0.0]
    target = nbytes

    def finished() -> bool:
        if not end[0] and conn.stats.bytes_acked >= target:
            end[0] = net.now
        return bool(done) or bool(end[0])

    t0 = time.perf_counter()
    net.run(max_time=max_time, stop=finished)
    wall = time.perf_counter() - t0
    r = Result(name, end[0] or net.now, bytes(received[:nbytes]) == data[:len(received)],
               conn.stats, wall)
    r.nbytes = nbytes
    return r


HEADER = (f"{'scenario':<12} {'Mbit/s':>7} {'of 200':>6} {'RTOs':>5} {'FR':>5} {'TLPs':>5} "
          f"{'TLPfix':>6} {'rexmit':>6} {'rackL':>6} {'DSACK':>5} {'undo':>4} {'secs':>6} "
          f"{'wall':>5}")


def row(r: Result) -> str:
    s = r.stats
    return (f"{r.name:<12} {r.mbps:7.1f} {r.mbps / 200:6.3f} {s.timeouts:5d} {s.recoveries:5d} "
            f"{s.tlp_probes:5d} {s.tlp_recoveries:6d} {s.retransmits:6d} {s.rack_lost:6d} "
            f"{s.dsacks_in:5d} {s.spurious_undos:4d} {r.seconds:6.2f} {r.wall:5.1f}"
            + ("" if r.ok else "  DATA MISMATCH"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=float, default=5.0, help="megabytes per transfer (default 5)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--seeds", type=int, default=1, help="run seeds seed..seed+N-1 and sum")
    ap.add_argument("--cc", default="cubic")
    ap.add_argument("--only", default="", help="comma-separated scenario names (" + ",".join(SCENARIOS) + ")")
    ap.add_argument("--batch", type=float, default=0.0, metavar="SECONDS",
                    help="hand received packets to each stack in batches at most this often "
                         "(an event loop reading a TUN device; 0: one by one)")
    a = ap.parse_args(argv)
    names = [n for n in a.only.split(",") if n] or list(SCENARIOS)
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        ap.error(f"unknown scenario {unknown[0]!r}; known: {', '.join(SCENARIOS)}")
    nbytes = int(a.mb * 1e6)
    print(f"{a.mb:g} MB per transfer, cc={a.cc}, seeds {a.seed}..{a.seed + a.seeds - 1}; "
          f"200 Mbit/s, queue 100 pkts, RTT ~1 ms; impairment on both directions"
          + (f"; receive batches every {a.batch * 1e6:g} us" if a.batch else ""))
    print(HEADER)
    for name in names:
        for seed in range(a.seed, a.seed + a.seeds):
            r = run(name, nbytes, seed, a.cc, batch=a.batch)
            if a.seeds > 1:
                r.name = f"{name}/{seed}"
            print(row(r), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
