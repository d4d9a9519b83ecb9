"""Network impairments applied in userspace on a link's egress/ingress: tun.impaired.ImpairedLink
wraps any link (an AsyncTun, a MemoryLink) and delays, drops, duplicates, corrupts, reorders
and rate-limits its packets as netem would, for kernels without sch_netem.

Each direction is a tcpstack.impairment.Impairment (seconds, bits/s, bytes, probabilities
0..1) applied by the same decision core as the simulator's links (tcpstack.impairment.Impairer):
with the same seed and the same packets, ImpairedLink and tcpstack.sim make the same decisions.
This module only schedules the outcome on the asyncio loop."""
from __future__ import annotations

import asyncio
import heapq
import itertools
import random
from typing import Any, Callable

from tcpstack.impairment import Impairer, Impairment, flip_bit

__all__ = ["ImpairedLink"]


class _Direction:
    __slots__ = ("impairer", "loop", "deliver", "heap", "seq", "timer", "stats")

    def __init__(self, imp: Impairment, rng: random.Random, loop: asyncio.AbstractEventLoop,
                 deliver: Callable[[list[bytes]], None]) -> None:
        self.impairer = Impairer(imp, rng)
        self.loop, self.deliver = loop, deliver
        self.heap: list[tuple[float, int, bytes]] = []   # (due, order, packet)
        self.seq = itertools.count()
        self.timer: asyncio.TimerHandle | None = None
        self.stats = {"packets": 0, "lost": 0, "duplicated": 0, "corrupted": 0, "queue_drops": 0,
                      "reordered": 0}

    def submit(self, packets: list[bytes]) -> None:
        core, st = self.impairer, self.stats
        if core.impairment.passthrough:
            st["packets"] += len(packets)
            self.deliver(packets)
            return
        now = self.loop.time()
        now_out: list[bytes] = []          # due at once (no delay/rate, or netem-style reorder)
        heap, seq = self.heap, self.seq
        for p in packets:
            st["packets"] += 1
            t = core.admit(now, len(p))
            if t is None:
                st["queue_drops"] += 1
                continue
            copies = core.decide(len(p), t)
            if not copies:
                st["lost"] += 1
                continue
            if len(copies) > 1:
                st["duplicated"] += 1
            for arrive, bit, reordered in copies:
                c = p
                if bit >= 0:
                    st["corrupted"] += 1
                    c = flip_bit(p, bit)
                if reordered:
                    st["reordered"] += 1
                if arrive <= now:
                    now_out.append(c)
                else:
                    heapq.heappush(heap, (arrive, next(seq), c))
        if now_out:
            self.deliver(now_out)
        self._arm()

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
            out.append(heapq.heappop(heap)[2])
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
    sends, `ingress` what it receives (tcpstack.impairment.Impairment each; None: untouched).
    For kernels without sch_netem, and for impairments exactly between the stack and the
    kernel.  Random choices come from one Random(seed) that both directions share."""

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
