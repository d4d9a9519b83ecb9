"""A deterministic network simulator on a virtual clock, for tests, experiments and teaching.

Hosts are sans-IO endpoints (the stack core, tcpstack/host/stack.py, or any object with this
duck-typed interface, see :class:`SimHost`); the simulator moves IP packets between them
over point-to-point links whose two directions each have their own impairments, like
``tc qdisc ... netem`` on each end of a veth pair.  A direction is an
:class:`~tcpstack.impairment.Impairment` (``LinkConfig`` is its name here; seconds, bits/s,
bytes, probabilities 0..1), applied by the decision core the userspace ImpairedLink and the
test harness share (tcpstack/impairment.py), so the same seed makes the same decisions:

    queue + rate (drop-tail FIFO, bytes)  ->  [shared Bottleneck FIFO]  ->  wire:
    burst loss (Gilbert-Elliott) / random loss, duplication, then per copy corruption (one
    random bit flipped), propagation delay + jitter, reordering (held back by reorder_delay).

A packet is routed by its destination address (IPv4 or IPv6, read with struct-free slicing
of the header, nothing else is parsed) to the host that declared that address, over the
link joining the two hosts.  A :class:`Bottleneck` is one rate-limited drop-tail FIFO that
several links' directions share (several host pairs across one router port), e.g. for
fairness experiments (:func:`run_fairness`).

Everything random comes from one ``random.Random(seed)``; events are ordered by (time,
insertion order), so identical runs give identical traces.  The event loop is a heap; the
clock jumps from event to event (no sleeping), so simulated minutes take milliseconds.

Example::

    net = Network(seed=1)
    a = net.add_host(stack_a, addresses=[bytes([10, 0, 0, 1])])
    b = net.add_host(stack_b, addresses=[bytes([10, 0, 0, 2])])
    net.connect(a, b, LinkConfig(delay=0.010, rate_bps=10e6, loss=0.01))
    net.run(until=30.0)
"""
from __future__ import annotations

import dataclasses
import heapq
import itertools
import logging
import random
from dataclasses import dataclass, field, fields
from typing import Any, Callable, Iterable, Protocol, Sequence

from tcpstack.errors import TcpStackError
from tcpstack.impairment import GilbertElliott, Impairer, Impairment, Shaper, flip_bit
from tcpstack.wire.buffers import LinkPacket

log = logging.getLogger(__name__)

__all__ = ["SimHost", "StackHost", "Impairment", "GilbertElliott", "LinkConfig", "DEFAULT_LINK", "LinkStats", "Bottleneck", "Node",
           "Link", "Network", "SimulationError", "TraceRecorder", "FairnessResult",
           "jain_index", "run_fairness"]


class SimulationError(TcpStackError):
    """The simulation cannot go on (an event storm at one instant, a bad topology)."""


class SimHost(Protocol):
    def receive_packet(self, packet: bytes, now: float) -> None: ...   # one IP packet arrives
    def packets_to_send(self) -> list[LinkPacket]: ...                 # drain packets to send now
    def next_timer(self) -> float | None: ...                          # earliest absolute deadline
    def handle_timer(self, now: float) -> None: ...                    # fire due timers


class StackHost:
    """A SimHost around a stack core (tcpstack.host.stack.StackCore): packets and timers go to
    the core, then react() runs so an application can take the core's ready endpoints
    (override it; pop_ready_listeners() / pop_ready() / next_event())."""

    def __init__(self, core: Any) -> None:
        self.core = core

    def react(self) -> None:
        pass

    def receive_packet(self, packet: bytes, now: float) -> None:
        self.core.receive_packet(packet, now)
        self.react()

    def packets_to_send(self) -> list[LinkPacket]:
        return self.core.packets_to_send()

    def next_timer(self) -> float | None:
        return self.core.next_timer()

    def handle_timer(self, now: float) -> None:
        self.core.handle_timer(now)
        self.react()


def sink(core: Any, received: bytearray) -> None:
    """A bulk receiver's react() on a StackHost: accept every ready connection, append what
    arrives to `received`, close at the peer's EOF."""
    from tcpstack.host.endpoint import Data, Eof
    eps = []
    for lst in core.pop_ready_listeners():
        while (ep := lst.accept()) is not None:
            eps.append(ep)
    for ep in eps + list(core.pop_ready()):
        while (ev := ep.next_event()) is not None:
            if isinstance(ev, Data):
                received.extend(ev.data)
            elif isinstance(ev, Eof):
                ep.close(core.now)


# One direction of a simulated link is an Impairment (tcpstack/impairment.py), the model the
# userspace ImpairedLink and the test harness share; LinkConfig is its name here.
LinkConfig = Impairment

# What connect() uses when given no config: 10 ms one way, nothing else.
DEFAULT_LINK = Impairment(delay=0.010)


@dataclass(slots=True)
class LinkStats:
    sent: int = 0             # packets handed to this direction
    delivered: int = 0        # packets (copies included) handed to the receiving host
    dropped_loss: int = 0
    dropped_queue: int = 0    # drop-tail (own queue or the shared bottleneck)
    duplicated: int = 0
    corrupted: int = 0
    reordered: int = 0
    bytes: int = 0            # bytes handed to this direction
    bytes_delivered: int = 0

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


class Bottleneck:
    """One rate-limited drop-tail FIFO shared by every link direction attached to it
    (``Network.connect(..., bottleneck=bn)``): a router's output port."""

    __slots__ = ("name", "_shaper", "stats")

    def __init__(self, rate_bps: float, queue_bytes: int | None, name: str = "bottleneck") -> None:
        self.name = name
        self._shaper = Shaper(rate_bps, queue_bytes)
        self.stats = LinkStats()

    @property
    def rate_bps(self) -> float:
        return self._shaper.rate_bps

    @property
    def backlog(self) -> int:
        return self._shaper.backlog

    @property
    def max_backlog(self) -> int:
        return self._shaper.max_backlog

    def __repr__(self) -> str:
        return f"<Bottleneck {self.name} {self.rate_bps:g} bit/s>"


class Node:
    """A host attached to the network (the handle add_host returns)."""

    __slots__ = ("host", "name", "addresses", "routes", "timer")

    def __init__(self, host: SimHost, name: str, addresses: list[bytes]) -> None:
        self.host = host
        self.name = name
        self.addresses = addresses
        self.routes: dict[Node, _Direction] = {}
        self.timer: float | None = None       # deadline currently scheduled in the heap

    def __repr__(self) -> str:
        return f"<Node {self.name}>"


class _Direction:
    __slots__ = ("link", "index", "src", "dst", "impairer", "stats", "bottleneck", "name")

    def __init__(self, link: Link, index: int, src: Node, dst: Node, config: Impairment,
                 bottleneck: Bottleneck | None, rng: random.Random) -> None:
        self.link = link
        self.index = index
        self.src = src
        self.dst = dst
        self.impairer = Impairer(config, rng)   # the queue/rate and the wire's decisions
        self.stats = LinkStats()
        self.bottleneck = bottleneck
        self.name = f"{src.name}->{dst.name}"

    @property
    def config(self) -> Impairment:
        return self.impairer.impairment


class Link:
    """A point-to-point link; direction 0 is a->b, direction 1 is b->a."""

    __slots__ = ("name", "a", "b", "dirs")

    def __init__(self, a: Node, b: Node, forward: Impairment, reverse: Impairment,
                 bottleneck: Bottleneck | None, reverse_bottleneck: Bottleneck | None,
                 name: str, rng: random.Random) -> None:
        self.name = name
        self.a = a
        self.b = b
        self.dirs = (_Direction(self, 0, a, b, forward, bottleneck, rng),
                     _Direction(self, 1, b, a, reverse, reverse_bottleneck, rng))

    def stats(self, direction: int = 0) -> LinkStats:
        return self.dirs[direction].stats

    def config(self, direction: int = 0) -> Impairment:
        """The (mutable) impairment of one direction; changes apply to later packets."""
        return self.dirs[direction].config

    def __repr__(self) -> str:
        return f"<Link {self.name}>"


TraceFn = Callable[[float, "Link | None", int, bytes, str], None]

_DELIVER, _TIMER, _BOTTLENECK, _CALL = 0, 1, 2, 3


class Network:
    """Hosts, links and a heap of timed events.  ``now`` is the virtual clock (seconds)."""

    def __init__(self, seed: int = 0) -> None:
        self.now = 0.0
        self.rng = random.Random(seed)
        self.nodes: list[Node] = []
        self.links: list[Link] = []
        self.bottlenecks: list[Bottleneck] = []
        self.trace: TraceFn | None = None       # trace(now, link, direction, packet, event)
        self.unroutable = 0
        self.events = 0                         # events processed so far
        self._addr: dict[bytes, Node] = {}
        self._heap: list[tuple[float, int, int, Any, Any]] = []
        self._seq = itertools.count()
        self._storm_at = -1.0                   # instant of the last timer firing ...
        self._storm_n = 0                       # ... and how many fired at that instant

    # A host whose next_timer() keeps returning a deadline handle_timer() does not clear
    # would spin at one instant forever; this many timer firings at one instant is a bug.
    TIMER_STORM_LIMIT = 100_000

    # ------------------------------------------------------------------ topology

    def add_host(self, host: SimHost, addresses: Iterable[bytes] = (),
                 name: str | None = None) -> Node:
        """Attach a host owning ``addresses`` (packed, 4 or 16 bytes)."""
        node = Node(host, name or f"h{len(self.nodes)}", [bytes(a) for a in addresses])
        for a in node.addresses:
            if len(a) not in (4, 16):
                raise SimulationError(f"address {a!r} of {node.name} is not 4 or 16 bytes")
            if a in self._addr:
                raise SimulationError(f"address {a.hex()} already belongs to {self._addr[a].name}")
            self._addr[a] = node
        self.nodes.append(node)
        return node

    def add_address(self, node: Node, address: bytes) -> None:
        address = bytes(address)
        if address in self._addr:
            raise SimulationError(f"address {address.hex()} already belongs to {self._addr[address].name}")
        node.addresses.append(address)
        self._addr[address] = node

    def add_bottleneck(self, rate_bps: float, queue_bytes: int | None = 1_500_000,
                       name: str | None = None) -> Bottleneck:
        bn = Bottleneck(rate_bps, queue_bytes, name or f"bottleneck{len(self.bottlenecks)}")
        self.bottlenecks.append(bn)
        return bn

    def connect(self, a: Node, b: Node, config: Impairment | None = None,
                reverse: Impairment | None = None, *, bottleneck: Bottleneck | None = None,
                reverse_bottleneck: Bottleneck | None = None, name: str | None = None) -> Link:
        """Join a and b.  ``config`` is the a->b direction (default :data:`DEFAULT_LINK`,
        10 ms); ``reverse`` the b->a direction (default: an independent copy of ``config``).  ``bottleneck`` / ``reverse_bottleneck``
        put that direction through a shared FIFO (after the direction's own queue/rate)."""
        if a is b:
            raise SimulationError("a link needs two different hosts")
        if b in a.routes:
            raise SimulationError(f"{a.name} and {b.name} are already connected")
        fwd = config if config is not None else dataclasses.replace(DEFAULT_LINK)
        rev = reverse if reverse is not None else dataclasses.replace(fwd)
        link = Link(a, b, fwd, rev, bottleneck, reverse_bottleneck, name or f"{a.name}-{b.name}",
                    self.rng)
        a.routes[b] = link.dirs[0]
        b.routes[a] = link.dirs[1]
        self.links.append(link)
        return link

    @property
    def stats(self) -> dict[str, LinkStats]:
        """Per link direction, keyed "src->dst" by host names."""
        return {d.name: d.stats for link in self.links for d in link.dirs}

    # ------------------------------------------------------------------ driving

    def call_at(self, when: float, fn: Callable[[float], Any]) -> None:
        """Run ``fn(now)`` at virtual time ``when`` (e.g. an application writes data); every
        host is polled afterwards."""
        heapq.heappush(self._heap, (max(when, self.now), next(self._seq), _CALL, fn, None))

    def poll(self, node: Node | None = None) -> None:
        """Collect packets and timers of one host (or all) after something outside the
        simulator changed it (an application call between runs).  run() does this for all
        hosts when it starts."""
        for n in ([node] if node is not None else self.nodes):
            self._service(n)

    def run(self, until: float | None = None, max_time: float = 60.0,
            stop: Callable[[], bool] | None = None, max_events: int = 50_000_000) -> float:
        """Process events in time order until ``stop()`` is true (checked after each event),
        the absolute time ``until``, ``max_time`` seconds of virtual time from now, or no
        events are left.  Returns the virtual time reached (the clock is advanced to the
        time limit when one is reached with events still pending, or to ``until``)."""
        limit = self.now + max_time
        if until is not None and until < limit:
            limit = until
        self.poll()
        if stop is not None and stop():
            return self.now
        heap = self._heap
        pop = heapq.heappop
        deliver = self._deliver
        n = 0
        stopped = False
        while heap:
            ev = heap[0]
            if ev[0] > limit:
                break
            pop(heap)
            self.now = ev[0]
            kind = ev[2]
            if kind == _DELIVER:
                deliver(ev[3], ev[4])
            elif kind == _TIMER:
                node = ev[3]
                if node.timer == ev[4]:
                    node.timer = None
                    if self.now == self._storm_at:
                        self._storm_n += 1
                        if self._storm_n > self.TIMER_STORM_LIMIT:
                            self.events += n
                            raise SimulationError(
                                f"timer storm: {self._storm_n} timer firings at t={self.now:.6f}"
                                f" (last: {node.name}, next_timer() {ev[4]!r} not cleared?)")
                    else:
                        self._storm_at = self.now
                        self._storm_n = 1
                    node.host.handle_timer(self.now)
                    self._service(node)
            elif kind == _BOTTLENECK:
                self._through_bottleneck(ev[3], ev[4], self.now)
            else:
                ev[3](self.now)
                self.poll()
            n += 1
            if stop is not None and stop():
                stopped = True
                break
            if n >= max_events:
                self.events += n
                raise SimulationError(f"more than {max_events} events by t={self.now:.6f}")
        if not stopped and (heap or until is not None) and self.now < limit < float("inf"):
            self.now = limit
        self.events += n
        return self.now

    def run_for(self, seconds: float, stop: Callable[[], bool] | None = None) -> float:
        return self.run(until=self.now + seconds, max_time=seconds, stop=stop)

    # ------------------------------------------------------------------ internals

    def _service(self, node: Node) -> None:
        host = node.host
        pkts = host.packets_to_send()
        if pkts:
            for p in pkts:
                self._emit(node, p)
        t = host.next_timer()
        if t is None:
            node.timer = None
        elif t != node.timer:
            node.timer = t
            heapq.heappush(self._heap, (t if t > self.now else self.now, next(self._seq),
                                        _TIMER, node, t))

    def _emit(self, node: Node, packet: LinkPacket) -> None:
        if not isinstance(packet, bytes):
            packet = bytes(packet)
        v = packet[0] >> 4 if packet else 0
        if v == 4 and len(packet) >= 20:
            dst = packet[16:20]
        elif v == 6 and len(packet) >= 40:
            dst = packet[24:40]
        else:
            dst = b""
        dn = self._addr.get(dst)
        d = node.routes.get(dn) if dn is not None else None
        if d is None:
            self.unroutable += 1
            log.debug("%s: no route to %s, packet dropped", node.name, dst.hex())
            if self.trace is not None:
                self.trace(self.now, None, -1, packet, "unroutable")
            return
        now = self.now
        st = d.stats
        st.sent += 1
        size = len(packet)
        st.bytes += size
        trace = self.trace
        if trace is not None:
            trace(now, d.link, d.index, packet, "send")
        t = d.impairer.admit(now, size)
        if t is None:
            st.dropped_queue += 1
            if trace is not None:
                trace(now, d.link, d.index, packet, "drop_queue")
            return
        if d.bottleneck is not None:
            if t > now:
                heapq.heappush(self._heap, (t, next(self._seq), _BOTTLENECK, d, packet))
                return
            self._through_bottleneck(d, packet, t)
            return
        self._wire(d, packet, t)

    def _through_bottleneck(self, d: _Direction, packet: bytes, now: float) -> None:
        bn = d.bottleneck
        assert bn is not None
        bst = bn.stats
        size = len(packet)
        bst.sent += 1
        bst.bytes += size
        t = bn._shaper.admit(now, size)
        if t is None:
            bst.dropped_queue += 1
            d.stats.dropped_queue += 1
            if self.trace is not None:
                self.trace(now, d.link, d.index, packet, "drop_queue")
            return
        bst.delivered += 1
        bst.bytes_delivered += size
        self._wire(d, packet, t)

    def _wire(self, d: _Direction, packet: bytes, t: float) -> None:
        """The wire after the queue (the shared decision core, tcpstack/impairment.py);
        schedules the arrival(s)."""
        st = d.stats
        trace = self.trace
        copies = d.impairer.decide(len(packet), t)
        if not copies:
            st.dropped_loss += 1
            if trace is not None:
                trace(self.now, d.link, d.index, packet, "drop_loss")
            return
        heap = self._heap
        if len(copies) > 1:
            st.duplicated += 1
            if trace is not None:
                trace(self.now, d.link, d.index, packet, "duplicate")
        for arrive, bit, reordered in copies:
            p = packet
            if bit >= 0:
                p = flip_bit(packet, bit)
                st.corrupted += 1
                if trace is not None:
                    trace(self.now, d.link, d.index, p, "corrupt")
            if reordered:
                st.reordered += 1
                if trace is not None:
                    trace(self.now, d.link, d.index, p, "reorder")
            heapq.heappush(heap, (arrive, next(self._seq), _DELIVER, d, p))

    def _deliver(self, d: _Direction, packet: bytes) -> None:
        st = d.stats
        st.delivered += 1
        st.bytes_delivered += len(packet)
        if self.trace is not None:
            self.trace(self.now, d.link, d.index, packet, "deliver")
        node = d.dst
        node.host.receive_packet(packet, self.now)
        self._service(node)


class TraceRecorder:
    """A ready-made ``Network.trace``: records (time, link name, direction, event, packet)
    tuples; ``format()`` renders them one line each (for teaching and debugging)."""

    __slots__ = ("records", "keep_packets")

    def __init__(self, keep_packets: bool = True) -> None:
        self.records: list[tuple[float, str, int, str, bytes | int]] = []
        self.keep_packets = keep_packets

    def __call__(self, now: float, link: Link | None, direction: int, packet: bytes,
                 event: str) -> None:
        self.records.append((now, link.name if link is not None else "-", direction, event,
                             packet if self.keep_packets else len(packet)))

    def format(self) -> str:
        lines = []
        for now, name, direction, event, p in self.records:
            size = p if isinstance(p, int) else len(p)
            arrow = "->" if direction == 0 else "<-" if direction == 1 else "??"
            lines.append(f"{now:12.6f} {name:>16} {arrow} {event:<11} {size:5d} B")
        return "\n".join(lines)


# ---------------------------------------------------------------------- fairness experiments

@dataclass
class FairnessResult:
    throughputs_bps: list[float]          # per flow, over the measurement interval
    jain_index: float                     # (sum x)^2 / (n * sum x^2): 1 = perfectly fair
    utilization: float | None = None      # sum of throughputs / bottleneck rate
    duration: float = 0.0
    samples: list[list[float]] = field(default_factory=list)   # per-interval throughputs


def jain_index(xs: Sequence[float]) -> float:
    """Jain's fairness index (R. Jain, D. Chiu, W. Hawe, DEC-TR-301, 1984)."""
    s = sum(xs)
    q = sum(x * x for x in xs)
    return (s * s) / (len(xs) * q) if q > 0 else 1.0


def run_fairness(net_factory: Callable[[], tuple[Network, Sequence[Callable[[], int]]]],
                 duration: float, warmup: float = 0.0, *, bottleneck_bps: float | None = None,
                 sample_interval: float | None = None) -> FairnessResult:
    """Run the flows ``net_factory()`` builds and measure how they share the path.

    ``net_factory`` returns the network (hosts, links, a shared :class:`Bottleneck`, the
    flows already started or scheduled with ``call_at``) and, per flow, a callable giving
    the bytes delivered to that flow's receiver so far.  After ``warmup`` seconds the
    counters are read, the network runs ``duration`` more seconds, and the throughput of
    each flow over that interval gives Jain's index (and the utilization of
    ``bottleneck_bps`` if given).  Works unchanged for model flows and real TCP stacks."""
    net, counters = net_factory()
    if not counters:
        raise SimulationError("run_fairness needs at least one flow")
    inf = float("inf")
    t0 = net.now + warmup
    net.run(until=t0, max_time=inf)
    start = [c() for c in counters]
    samples: list[list[float]] = []
    if sample_interval:
        prev = list(start)
        t = t0
        while t + sample_interval <= t0 + duration + 1e-12:
            t += sample_interval
            net.run(until=t, max_time=inf)
            cur = [c() for c in counters]
            samples.append([(b - a) * 8 / sample_interval for a, b in zip(prev, cur)])
            prev = cur
    net.run(until=t0 + duration, max_time=inf)
    end = [c() for c in counters]
    tput = [(b - a) * 8 / duration for a, b in zip(start, end)]
    util = sum(tput) / bottleneck_bps if bottleneck_bps else None
    return FairnessResult(tput, jain_index(tput), util, duration, samples)
