"""A two-TCB test harness: two TCPConnection objects joined by an in-memory link with a
virtual clock (no sleeps, no sockets).

Side "a" is the active opener (port 40000), side "b" the passive one (port 80), created
from the first SYN that reaches it (like a listener would) unless ``b_active`` asks for a
second active opener (simultaneous open).  Segments travel as TCPSegment objects over a
path described by ``link`` (a->b) and ``reverse`` (b->a, default: the same), each a
tcpstack.impairment.Impairment (default 10 ms one way, nothing lost) applied by the decision
core the simulator and ImpairedLink share, from one Random(seed): queue and rate (a segment
counts as its payload + 52 bytes of headers), loss, burst loss, duplication, delay, jitter,
reordering.  Corruption needs bytes; the harness has segment objects, so it refuses it.
``hook(direction, seg)`` can inspect, drop (return []), duplicate or replace segments, and
``extra_delay(direction, seg)`` can hold one back for a while (a delay spike, reordering).
Everything sent is recorded in ``trace`` as (time, direction, segment, delivered).
"""
from __future__ import annotations

import dataclasses
import heapq
import itertools
import random
from typing import Any, Callable

from tcpstack.impairment import Impairer, Impairment, ImpairmentError
from tcpstack.tcp.config import TCPConfig
from tcpstack.tcp.connection import TCPConnection
from tcpstack.tcp.events import ConnectionTerminated, DataReceived, EndOfStream
from tcpstack.wire.segment import ACK, RST, SYN, TCPSegment

PORT_A = 40000
PORT_B = 80


class Harness:
    def __init__(self, cfg_a: TCPConfig | None = None, cfg_b: TCPConfig | None = None, *,
                 iss_a: int = 1000, iss_b: int = 5000,
                 eno_a: Any = None, eno_b: Any = None, ts_offset_a: int = 0,
                 ts_offset_b: int = 0, link: Impairment | None = None,
                 reverse: Impairment | None = None, seed: int = 1,
                 start: float = 0.0, b_active: bool = False,
                 hook: Callable[[str, TCPSegment], list[TCPSegment] | None] | None = None,
                 extra_delay: Callable[[str, TCPSegment], float] | None = None) -> None:
        self.now = start
        fwd = link if link is not None else Impairment(delay=0.010)
        rev = reverse if reverse is not None else dataclasses.replace(fwd)
        for imp in (fwd, rev):
            if imp.corrupt:
                raise ImpairmentError("the harness carries TCPSegment objects and cannot corrupt them; "
                                 "use tcpstack.sim for corruption")
        self.cfg_b = cfg_b or TCPConfig()
        self.iss_b = iss_b
        self.eno_b = eno_b
        self.ts_offset_b = ts_offset_b
        self.rng = random.Random(seed)
        self.paths = {"a>b": Impairer(fwd, self.rng), "b>a": Impairer(rev, self.rng)}
        self.hook = hook
        self.extra_delay = extra_delay
        self.a = TCPConnection(PORT_A, PORT_B, iss=iss_a, config=cfg_a or TCPConfig(),
                               now=start, eno=eno_a, ts_offset=ts_offset_a)
        self.b: TCPConnection | None = None
        if b_active:
            self.b = TCPConnection(PORT_B, PORT_A, iss=iss_b, config=self.cfg_b, now=start,
                                   eno=eno_b, ts_offset=ts_offset_b)
        self._queue: list[tuple[float, int, str, TCPSegment]] = []
        self._counter = itertools.count()
        self.trace: list[tuple[float, str, TCPSegment, bool]] = []
        self.events: dict[str, list[Any]] = {"a": [], "b": []}
        self.received: dict[str, bytearray] = {"a": bytearray(), "b": bytearray()}
        self.app_out: dict[str, bytearray] = {"a": bytearray(), "b": bytearray()}
        self.eof: dict[str, bool] = {"a": False, "b": False}
        self.shutdown_pending: dict[str, bool] = {"a": False, "b": False}
        self.auto_read = True

    # --- access ----------------------------------------------------------------------

    @property
    def delay(self) -> float:
        """The one-way delay a->b."""
        return self.paths["a>b"].impairment.delay

    def conn(self, side: str) -> TCPConnection:
        c = self.a if side == "a" else self.b
        assert c is not None, f"side {side} does not exist yet"
        return c

    def sent(self, direction: str | None = None) -> list[TCPSegment]:
        """Segments sent (before loss), optionally only 'a>b' or 'b>a'."""
        return [s for _, d, s, _ in self.trace if direction is None or d == direction]

    def clear_trace(self) -> None:
        self.trace.clear()

    def terminated(self, side: str) -> list[ConnectionTerminated]:
        return [e for e in self.events[side] if isinstance(e, ConnectionTerminated)]

    # --- driving ---------------------------------------------------------------------

    def connect(self) -> None:
        self.a.connect(self.now)
        self.flush("a")

    def write(self, side: str, data: bytes) -> None:
        self.app_out[side] += data
        self._feed(side)
        self.flush(side)

    def shutdown(self, side: str) -> None:
        """Application CLOSE once all its pending writes reached the TCB."""
        self.shutdown_pending[side] = True
        self._feed(side)
        self.flush(side)

    def inject(self, side: str, seg: TCPSegment) -> list[TCPSegment]:
        """Hand a crafted segment straight to ``side``; returns what it sends in reply
        (those replies are recorded in the trace but not delivered)."""
        c = self.conn(side)
        c.receive(seg, self.now)
        self._drain(side)
        out = c.segments_to_send(self.now)
        d = "a>b" if side == "a" else "b>a"
        for s in out:
            self.trace.append((self.now, d, s, False))
        return out

    def flush(self, side: str) -> None:
        c = self.a if side == "a" else self.b
        if c is None:
            return
        d = "a>b" if side == "a" else "b>a"
        for seg in c.segments_to_send(self.now):
            self._transmit(d, seg)
        self._drain(side)

    def _transmit(self, d: str, seg: TCPSegment) -> None:
        segs: list[TCPSegment] = [seg]
        if self.hook is not None:
            r = self.hook(d, seg)
            if r is not None:
                segs = r
        if not segs:
            self.trace.append((self.now, d, seg, False))
            return
        path = self.paths[d]
        for s in segs:
            size = len(s.payload) + 52
            t = path.admit(self.now, size)
            copies = path.decide(size, t) if t is not None else []
            if not copies:
                self.trace.append((self.now, d, s, False))
                continue
            self.trace.append((self.now, d, s, True))
            extra = self.extra_delay(d, s) if self.extra_delay is not None else 0.0
            for arrive, _bit, _reordered in copies:
                heapq.heappush(self._queue, (arrive + extra, next(self._counter), d, s))

    def _feed(self, side: str) -> None:
        c = self.a if side == "a" else self.b
        if c is None:
            return
        buf = self.app_out[side]
        if buf and c.send_buffer_free:
            n = c.send(bytes(buf[:c.send_buffer_free]))
            del buf[:n]
        if self.shutdown_pending[side] and not buf:
            self.shutdown_pending[side] = False
            c.shutdown_write(self.now)

    def _drain(self, side: str) -> None:
        c = self.a if side == "a" else self.b
        if c is None:
            return
        while True:
            ev = c.next_event()
            if ev is None:
                break
            self.events[side].append(ev)
            if isinstance(ev, DataReceived):
                self.received[side] += ev.data
            elif isinstance(ev, EndOfStream):
                self.eof[side] = True

    def next_time(self) -> float | None:
        cands = []
        if self._queue:
            cands.append(self._queue[0][0])
        for c in (self.a, self.b):
            if c is not None and not c.is_terminated:
                t = c.next_timer()
                if t is not None:
                    cands.append(t)
        return min(cands) if cands else None

    def step(self) -> bool:
        """Advance to the next delivery or timer and process it; False if idle."""
        t = self.next_time()
        if t is None:
            return False
        if t > self.now:
            self.now = t
        if self._queue and self._queue[0][0] <= self.now:
            _, _, d, seg = heapq.heappop(self._queue)
            dst = "b" if d == "a>b" else "a"
            c = self.a if dst == "a" else self.b
            if c is None:
                if seg.flags & (SYN | ACK | RST) == SYN:
                    self.b = c = TCPConnection(PORT_B, PORT_A, iss=self.iss_b, config=self.cfg_b,
                                               now=self.now, eno=self.eno_b,
                                               ts_offset=self.ts_offset_b)
                    c.accept_syn(seg, self.now)
                else:
                    return True
            elif c.is_terminated:
                return True
            else:
                c.receive(seg, self.now)
            self._after(dst)
        else:
            for side, c in (("a", self.a), ("b", self.b)):
                if c is not None and not c.is_terminated:
                    tt = c.next_timer()
                    if tt is not None and tt <= self.now:
                        c.handle_timer(self.now)
                        self._after(side)
        return True

    def _after(self, side: str) -> None:
        self._drain(side)
        self._feed(side)
        self.flush(side)

    def run(self, until: float | None = None, *, max_steps: int = 10_000_000,
            stop: Callable[[], bool] | None = None) -> None:
        """Process events until idle, until virtual time ``until`` (events at exactly
        ``until`` are processed) or until ``stop()`` is true."""
        for _ in range(max_steps):
            if stop is not None and stop():
                return
            t = self.next_time()
            if t is None or (until is not None and t > until):
                if until is not None and until > self.now:
                    self.now = until
                return
            self.step()
        raise AssertionError("harness did not settle")

    def run_for(self, dt: float, **kw: Any) -> None:
        self.run(self.now + dt, **kw)

    def established(self) -> None:
        """Connect and run until both sides are ESTABLISHED (delivering nothing else)."""
        from tcpstack.tcp.connection import TCPState
        self.connect()
        self.run(stop=lambda: self.b is not None and self.a.state is TCPState.ESTABLISHED
                 and self.b.state is TCPState.ESTABLISHED and not self._queue)
