"""A userspace netem: impair the packets a stack sends through a real link (e.g. a TUN device).

For kernels without sch_netem (tc-netem(8)) — such as minimal VM kernels with no modules —
this wraps any tcpstack.streams Link and applies, on egress, seeded delay, jitter, loss,
reordering, duplication, corruption and a rate limit, scheduled on the asyncio loop clock.
The packets still cross the real kernel path (TUN, routing, veth) afterwards, so a test
exercises the real network with netem-like faults.
"""
from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass
from typing import Any, Callable


@dataclass
class Impairment:
    delay: float = 0.0          # seconds, one way
    jitter: float = 0.0         # seconds, uniform +-jitter (order kept unless reorder)
    loss: float = 0.0           # probability
    reorder: float = 0.0        # probability a packet skips the delay (netem's "reorder")
    duplicate: float = 0.0      # probability
    corrupt: float = 0.0        # probability of one flipped bit
    rate_bps: float | None = None


class ImpairedLink:
    """Link wrapper: start/close pass through; send() goes through the impairment."""

    def __init__(self, link: Any, impairment: Impairment, *, seed: int = 1,
                 loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.link = link
        self.imp = impairment
        self.rng = random.Random(seed)
        self.loop = loop or asyncio.get_running_loop()
        self._last_due = 0.0
        self._tx_free = 0.0
        self.stats = {"sent": 0, "lost": 0, "duplicated": 0, "corrupted": 0, "reordered": 0}

    def start(self, on_packets: Callable[[list[bytes]], None]) -> None:
        self.link.start(on_packets)

    def close(self) -> None:
        self.link.close()

    def send(self, packet: bytes) -> None:
        imp, rng = self.imp, self.rng
        self.stats["sent"] += 1
        if imp.loss and rng.random() < imp.loss:
            self.stats["lost"] += 1
            return
        copies = 2 if imp.duplicate and rng.random() < imp.duplicate else 1
        if copies == 2:
            self.stats["duplicated"] += 1
        for _ in range(copies):
            p = packet
            if imp.corrupt and rng.random() < imp.corrupt:
                b = bytearray(p)
                bit = rng.randrange(len(b) * 8)
                b[bit >> 3] ^= 1 << (bit & 7)
                p = bytes(b)
                self.stats["corrupted"] += 1
            self._schedule(p)

    def _schedule(self, p: bytes) -> None:
        imp, rng = self.imp, self.rng
        now = self.loop.time()
        start = now
        if imp.rate_bps:
            start = max(now, self._tx_free)
            self._tx_free = start + len(p) * 8 / imp.rate_bps
        if imp.reorder and rng.random() < imp.reorder:
            self.stats["reordered"] += 1
            due = start                                   # jumps ahead of delayed packets
        else:
            due = start + imp.delay + (rng.uniform(-imp.jitter, imp.jitter) if imp.jitter else 0.0)
            due = max(due, self._last_due)                # keep order among delayed packets
            self._last_due = due
        if due <= now:
            self.link.send(p)
        else:
            self.loop.call_at(due, self.link.send, p)
