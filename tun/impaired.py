"""Network impairments applied in userspace on a link's egress/ingress: tun.impaired.ImpairedLink
wraps any link (an AsyncTun, a MemoryLink) and delays, drops, duplicates, corrupts, reorders
and rate-limits its packets as netem would, for kernels without sch_netem."""
from __future__ import annotations

import asyncio
import heapq
import itertools
import random
from dataclasses import dataclass
from typing import Any, Callable

__all__ = ["Impairment", "ImpairedLink"]


# --- userspace netem --------------------------------------------------------------------------

@dataclass
class Impairment:
    """netem-like impairments of one direction, applied in this order: loss, duplication,
    corruption (one random bit flipped), rate (serialisation at rate_bps through a FIFO of at
    most queue_packets, overflow dropped), then delay +- uniform jitter; reorder_pct of the
    packets skip the delay (netem's `reorder`)."""
    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    loss_pct: float = 0.0
    duplicate_pct: float = 0.0
    corrupt_pct: float = 0.0
    reorder_pct: float = 0.0
    rate_bps: float | None = None
    queue_packets: int = 1000

    @property
    def passthrough(self) -> bool:
        return not (self.delay_ms or self.jitter_ms or self.loss_pct or self.duplicate_pct
                    or self.corrupt_pct or self.reorder_pct or self.rate_bps)


class _Direction:
    __slots__ = ("imp", "rng", "loop", "deliver", "heap", "seq", "timer", "busy_until",
                 "in_queue", "stats")

    def __init__(self, imp: Impairment, rng: random.Random, loop: asyncio.AbstractEventLoop,
                 deliver: Callable[[list[bytes]], None]) -> None:
        self.imp, self.rng, self.loop, self.deliver = imp, rng, loop, deliver
        self.heap: list[tuple[float, int, float, bytes]] = []   # (due, order, dequeue time, packet)
        self.seq = itertools.count()
        self.timer: asyncio.TimerHandle | None = None
        self.busy_until = 0.0
        self.in_queue: list[float] = []      # serialisation end times of queued packets (a heap)
        self.stats = {"packets": 0, "lost": 0, "duplicated": 0, "corrupted": 0, "queue_drops": 0,
                      "reordered": 0}

    def submit(self, packets: list[bytes]) -> None:
        imp, rng, st = self.imp, self.rng, self.stats
        if imp.passthrough:
            st["packets"] += len(packets)
            self.deliver(packets)
            return
        now = self.loop.time()
        now_out: list[bytes] = []          # due at once (no delay/rate, or netem-style reorder)
        for p in packets:
            st["packets"] += 1
            if imp.loss_pct and rng.random() * 100 < imp.loss_pct:
                st["lost"] += 1
                continue
            copies = [p]
            if imp.duplicate_pct and rng.random() * 100 < imp.duplicate_pct:
                st["duplicated"] += 1
                copies.append(p)
            for c in copies:
                if imp.corrupt_pct and c and rng.random() * 100 < imp.corrupt_pct:
                    st["corrupted"] += 1
                    b = bytearray(c)
                    i = rng.randrange(len(b) * 8)
                    b[i >> 3] ^= 1 << (i & 7)
                    c = bytes(b)
                self._schedule(c, now, now_out)
        if now_out:
            self.deliver(now_out)
        self._arm()

    def _schedule(self, p: bytes, now: float, now_out: list[bytes]) -> None:
        imp, rng = self.imp, self.rng
        t = now
        if imp.rate_bps:
            q = self.in_queue
            while q and q[0] <= now:
                heapq.heappop(q)
            if len(q) >= imp.queue_packets:
                self.stats["queue_drops"] += 1
                return
            t = max(now, self.busy_until) + len(p) * 8 / imp.rate_bps
            self.busy_until = t
            heapq.heappush(q, t)
        if imp.reorder_pct and rng.random() * 100 < imp.reorder_pct:
            self.stats["reordered"] += 1
        else:
            d = imp.delay_ms
            if imp.jitter_ms:
                d += rng.uniform(-imp.jitter_ms, imp.jitter_ms)
            t += max(0.0, d) / 1000.0
        if t <= now:
            now_out.append(p)
            return
        heapq.heappush(self.heap, (t, next(self.seq), now, p))

    def _arm(self) -> None:
        if not self.heap:
            return
        due = self.heap[0][0]
        if self.timer is not None:
            if self.timer.when() <= due:
                return
            self.timer.cancel()
        self.timer = self.loop.call_at(due, self._fire)

    def _fire(self) -> None:
        self.timer = None
        now = self.loop.time()
        heap, out = self.heap, []
        while heap and heap[0][0] <= now:
            out.append(heapq.heappop(heap)[3])
        if out:
            self.deliver(out)
        self._arm()

    def close(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.heap.clear()


class ImpairedLink:
    """A tcpstack.aio.streams.Link wrapping another (an AsyncTun): `egress` impairs what the stack
    sends, `ingress` what it receives.  For kernels without sch_netem, and for impairments
    exactly between the stack and the kernel.  Random choices come from Random(seed)."""

    def __init__(self, link: Any, *, egress: Impairment | None = None,
                 ingress: Impairment | None = None, seed: int = 0,
                 loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.link = link
        self.loop = loop or asyncio.get_running_loop()
        rng = random.Random(seed)
        self.egress = _Direction(egress or Impairment(), rng, self.loop, self._send_batch)
        self.ingress = _Direction(ingress or Impairment(), rng, self.loop, self._receive_batch)
        self._on_packets: Callable[[list[bytes]], None] | None = None
        self._closed = False

    def start(self, on_packets: Callable[[list[bytes]], None]) -> None:
        self._on_packets = on_packets
        self.link.start(self.ingress.submit)

    def send(self, packet: bytes) -> None:
        if not self._closed:
            self.egress.submit([packet])

    def _send_batch(self, packets: list[bytes]) -> None:
        send = self.link.send
        for p in packets:
            send(p)

    def _receive_batch(self, packets: list[bytes]) -> None:
        if self._on_packets is not None and not self._closed:
            self._on_packets(packets)

    def stats(self) -> dict[str, dict[str, int]]:
        return {"egress": dict(self.egress.stats), "ingress": dict(self.ingress.stats)}

    def close(self) -> None:
        """Drop packets still in flight and close the wrapped link.  Idempotent."""
        if self._closed:
            return
        self._closed = True
        self.egress.close()
        self.ingress.close()
        self.link.close()
