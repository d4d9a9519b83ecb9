"""Sequence-number arithmetic modulo 2**32 (RFC 9293 3.4).

The connection keeps its sequence variables *unwrapped*: plain, ever-increasing Python
ints (snd_una starts at ISS, rcv_nxt at IRS+1, and they grow past 2**32 without wrapping).
That makes every comparison an ordinary ``<``.  Wire values are ``v & MASK``; a received
32-bit number is unwrapped relative to a nearby reference with :func:`unwrap`, the usual
"closest to the reference" reading of RFC 9293 3.4 (valid while the two are within 2**31).
"""
from __future__ import annotations

MASK = 0xFFFFFFFF
HALF = 0x80000000


def unwrap(value: int, ref: int) -> int:
    """The unwrapped number congruent to 32-bit ``value`` closest to unwrapped ``ref``."""
    return ref + ((value - ref + HALF) & MASK) - HALF


def seq_lt(a: int, b: int) -> bool:
    """a < b in 32-bit sequence space (RFC 9293 3.4)."""
    return 0 < ((b - a) & MASK) < HALF


def seq_le(a: int, b: int) -> bool:
    return ((b - a) & MASK) < HALF


def seq_gt(a: int, b: int) -> bool:
    return seq_lt(b, a)


def seq_ge(a: int, b: int) -> bool:
    return seq_le(b, a)


def seq_diff(a: int, b: int) -> int:
    """a - b as a signed distance in 32-bit sequence space."""
    return ((a - b + HALF) & MASK) - HALF
