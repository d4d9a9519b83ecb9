"""One model of a faulty network path, shared by the simulator (tcpstack/sim.py), the
userspace impaired link (tun/impaired.py) and the two-TCB test harness
(tests/tcpstack/harness.py), with one random-decision core, so that a seeded impairment
makes the same decisions on all of them.

Units, everywhere: seconds, bits per second, bytes; probabilities are fractions 0..1.

:class:`Impairment` describes one direction of a path, like ``tc qdisc ... netem`` on one
end of a veth pair.  :class:`Impairer` applies it to packets: one direction's state (the
drop-tail queue, the Gilbert-Elliott state, the last arrival time) and a ``random.Random``
(which the caller may share between directions).  A packet goes through, in this order:

1. the queue and the rate (:meth:`Impairer.admit`): serialisation at ``rate_bps`` behind a
   drop-tail FIFO of ``queue_bytes``; a packet that does not fit is dropped;
2. the wire (:meth:`Impairer.decide`), its random draws always in this order, each only
   when its probability is not zero:
     counted bursts (``burst_every``: no draw, a packet count), burst loss
     (Gilbert-Elliott: the state moves, then the packet may be lost),
     random loss, duplication (a second copy), then for each copy: corruption (the bit to
     flip), jitter, reordering.
   The arrival of a copy is its departure + ``delay`` +- uniform ``jitter`` (never before
   the departure; never before the previous arrival unless ``jitter_reorders``); a
   reordered copy is held back ``reorder_delay`` more so later packets overtake it, or, with
   ``reorder_delay=None``, skips delay and jitter and goes at once, overtaking the packets
   sent before it (netem's ``reorder``, which needs a delay to reorder against).

Nothing here does I/O or reads a clock: the caller says when a packet departs and schedules
the arrivals the core computes (a heap of events in the simulator, timers on the asyncio
loop in ImpairedLink, the harness's queue).
"""
from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass

from tcpstack.errors import TcpStackError

__all__ = ["ImpairmentError", "GilbertElliott", "Impairment", "Shaper", "Impairer", "flip_bit"]


class ImpairmentError(TcpStackError, ValueError):
    """An impairment that cannot be: a probability outside 0..1, a negative delay, a rate <= 0."""


def _check_probability(owner: str, name: str, p: float) -> None:
    if not 0.0 <= p <= 1.0:
        raise ImpairmentError(f"{owner}.{name} is a probability (0..1), got {p!r}")


@dataclass(slots=True)
class GilbertElliott:
    """Two-state burst loss (netem ``loss gemodel p r 1-h 1-k``): per packet the state
    moves good->bad with probability p and bad->good with probability r, then the packet
    is lost with probability loss_bad (bad) or loss_good (good).  Mean burst length is
    1/r packets; stationary P(bad) = p/(p+r)."""
    p: float
    r: float
    loss_bad: float = 1.0
    loss_good: float = 0.0

    def __post_init__(self) -> None:
        for name in ("p", "r", "loss_bad", "loss_good"):
            _check_probability("GilbertElliott", name, getattr(self, name))


@dataclass(slots=True)
class Impairment:
    """The impairments of one direction of a path.  Seconds, bits/s, bytes; probabilities
    0..1.  The defaults are a perfect wire (no delay, no rate limit, nothing lost).  The
    object may be changed later; changes apply to later packets (except ``rate_bps`` and
    ``queue_bytes``, read when an Impairer is made)."""
    delay: float = 0.0                 # one-way propagation delay
    jitter: float = 0.0                # + uniform(-jitter, +jitter), never before departure
    jitter_reorders: bool = False      # False: jitter keeps FIFO order (arrival >= previous)
    rate_bps: float | None = None      # serialisation rate; None = infinitely fast
    queue_bytes: int | None = 1_500_000  # drop-tail limit on bytes queued or in transmission
    loss: float = 0.0                  # independent loss probability per packet
    burst_loss: GilbertElliott | None = None
    # Counted bursts, as nft's `numgen inc mod EVERY >= EVERY - BURST drop` on a router
    # (bench/impaired.py's burst row): (EVERY, BURST) drops the last BURST of every EVERY
    # packets that leave the queue; the count starts at a random phase (one draw when the
    # Impairer is made), as the real counter has seen other traffic before a transfer.
    burst_every: tuple[int, int] | None = None
    duplicate: float = 0.0             # probability a second copy is delivered
    corrupt: float = 0.0               # probability (per copy) one random bit is flipped
    reorder: float = 0.0               # probability (per copy) a packet is reordered ...
    reorder_delay: float | None = 0.005  # ... held back this much longer; None: sent at once

    def __post_init__(self) -> None:
        for name in ("loss", "duplicate", "corrupt", "reorder"):
            _check_probability("Impairment", name, getattr(self, name))
        if self.delay < 0 or self.jitter < 0 or (self.reorder_delay or 0.0) < 0:
            raise ImpairmentError(f"delays cannot be negative: delay={self.delay!r} "
                                  f"jitter={self.jitter!r} reorder_delay={self.reorder_delay!r}")
        if self.rate_bps is not None and not self.rate_bps > 0:
            raise ImpairmentError(f"rate_bps must be positive or None, got {self.rate_bps!r}")
        if self.queue_bytes is not None and self.queue_bytes < 0:
            raise ImpairmentError(f"queue_bytes cannot be negative, got {self.queue_bytes!r}")
        if self.burst_every is not None:
            every, burst = self.burst_every
            if not (isinstance(every, int) and isinstance(burst, int) and 0 <= burst <= every
                    and every > 0):
                raise ImpairmentError(f"burst_every must be (EVERY, BURST) with 0 <= BURST <= "
                                      f"EVERY, got {self.burst_every!r}")

    @property
    def passthrough(self) -> bool:
        """True if packets go through untouched and at once."""
        return not (self.delay or self.jitter or self.rate_bps or self.loss or self.burst_loss
                    or (self.burst_every and self.burst_every[1]) or self.duplicate or self.corrupt or self.reorder)


class Shaper:
    """A FIFO transmitter: serialisation at ``rate_bps`` behind a drop-tail byte queue."""

    __slots__ = ("rate_bps", "queue_bytes", "busy_until", "backlog", "_q", "max_backlog")

    def __init__(self, rate_bps: float, queue_bytes: int | None) -> None:
        if not rate_bps > 0:
            raise ImpairmentError(f"rate must be positive, got {rate_bps}")
        self.rate_bps = float(rate_bps)
        self.queue_bytes = queue_bytes
        self.busy_until = 0.0
        self.backlog = 0                       # bytes not yet fully transmitted
        self._q: deque[tuple[float, int]] = deque()
        self.max_backlog = 0

    def admit(self, now: float, size: int) -> float | None:
        """Enqueue a packet at ``now``: its departure (end of serialisation) time, or None
        if the queue is full (drop-tail)."""
        q = self._q
        while q and q[0][0] <= now:
            self.backlog -= q.popleft()[1]
        backlog = self.backlog + size
        if self.queue_bytes is not None and backlog > self.queue_bytes:
            return None
        start = self.busy_until if self.busy_until > now else now
        finish = start + size * 8 / self.rate_bps
        self.busy_until = finish
        q.append((finish, size))
        self.backlog = backlog
        if backlog > self.max_backlog:
            self.max_backlog = backlog
        return finish


# One copy of a packet on its way: (arrival time, bit to flip or -1, reordered?)
Copy = tuple[float, int, bool]


class Impairer:
    """One direction of an impaired path: the :class:`Impairment`, a random source and the
    state the model keeps between packets.  Drivers call :meth:`admit` then :meth:`decide`
    for each packet and deliver the copies it returns at their arrival times."""

    __slots__ = ("impairment", "rng", "shaper", "ge_bad", "last_arrival", "count")

    def __init__(self, impairment: Impairment, rng: random.Random) -> None:
        self.impairment = impairment
        self.rng = rng
        self.shaper = (Shaper(impairment.rate_bps, impairment.queue_bytes)
                       if impairment.rate_bps else None)
        self.ge_bad = False                     # Gilbert-Elliott state
        self.last_arrival = 0.0                 # for FIFO jitter
        # burst_every's packet counter, from a random phase
        self.count = rng.randrange(impairment.burst_every[0]) if impairment.burst_every else 0

    def admit(self, now: float, size: int) -> float | None:
        """Queue and rate: the packet's departure time onto the wire, or None if the
        drop-tail queue is full."""
        shaper = self.shaper
        return now if shaper is None else shaper.admit(now, size)

    def decide(self, size: int, departure: float) -> list[Copy]:
        """The wire's verdict on a packet of ``size`` bytes leaving at ``departure``: no
        copies (lost), one, or two (duplicated), each ``(arrival, bit, reordered)`` where
        ``bit`` is the bit to flip (:func:`flip_bit`) or -1."""
        imp = self.impairment
        rng = self.rng
        counted = imp.burst_every
        if counted is not None:
            n = self.count
            self.count = n + 1
            if n % counted[0] >= counted[0] - counted[1]:
                return []
        ge = imp.burst_loss
        if ge is not None:
            if self.ge_bad:
                if rng.random() < ge.r:
                    self.ge_bad = False
            elif rng.random() < ge.p:
                self.ge_bad = True
            lp = ge.loss_bad if self.ge_bad else ge.loss_good
            if lp and rng.random() < lp:
                return []
        if imp.loss and rng.random() < imp.loss:
            return []
        if imp.duplicate and rng.random() < imp.duplicate:
            return [self._copy(imp, rng, size, departure), self._copy(imp, rng, size, departure)]
        return [self._copy(imp, rng, size, departure)]

    def _copy(self, imp: Impairment, rng: random.Random, size: int, departure: float) -> Copy:
        """One copy's draws: corruption, jitter, reordering."""
        bit = -1
        if imp.corrupt and size and rng.random() < imp.corrupt:
            bit = rng.randrange(size * 8)
        arrive = departure + imp.delay
        jitter = imp.jitter
        if jitter:
            arrive += rng.uniform(-jitter, jitter)
            if arrive < departure:
                arrive = departure
            if not imp.jitter_reorders and arrive < self.last_arrival:
                arrive = self.last_arrival
        if arrive > self.last_arrival:
            self.last_arrival = arrive
        if imp.reorder and rng.random() < imp.reorder:
            rd = imp.reorder_delay
            return (departure if rd is None else arrive + rd), bit, True
        return arrive, bit, False


def flip_bit(packet: bytes, bit: int) -> bytes:
    """``packet`` with bit number ``bit`` flipped (bit 0 is the lowest bit of byte 0)."""
    buf = bytearray(packet)
    buf[bit >> 3] ^= 1 << (bit & 7)
    return bytes(buf)
