"""SYN cookies: stateless SYN-ACKs when a listener's SYN queue is full (RFC 4987 3.6, App. A).

Pure functions, no state beyond the stack secret the caller passes in.

The cookie is our ISN, laid out as Linux's ``secure_tcp_syn_cookie`` (RFC 4987 App. A
describes the same idea)::

    ISN = H1(4-tuple) + peer_ISN + (count mod 256) << 24 + (H2(4-tuple, count, data) << 3 | data)

``count`` is the time slot (``now // COOKIE_SLOT``; the secret in H2 is thereby rotated
every slot), H1/H2 are keyed BLAKE2s over the 4-tuple (H2 also over the slot and the data;
21 bits of it are kept), ``data`` (3 bits) holds the MSS index (2 bits,
:data:`MSS_TABLE_V4` / :data:`MSS_TABLE_V6`) and whether the SYN-ACK promised TCP-ENO.  A
returning ACK validates when its slot is at most :data:`MAX_AGE` slots old and H2 over the
data it carries matches.  Unlike Linux's additive data, changing any bit of the cookie or
of the peer's ISN is caught (a blind guess succeeds with probability ``3/256 * 2**-21``).

RFC 4987 3.6 notes the cost of cookies: the TCP options of the SYN are lost.  As Linux
does (``cookie_init_timestamp``), when the peer sent timestamps we keep its window-scale
shift and SACK-permitted in the low :data:`TS_OPT_BITS` bits of our SYN-ACK's TSval, which
the peer echoes in TSecr; without timestamps the SYN-ACK offers neither (the caller clears
them), and the connection runs without WS / SACK / TS.
"""
from __future__ import annotations

import hashlib

MASK = 0xFFFFFFFF
COOKIE_SLOT = 64.0            # seconds per time slot (Linux: 64 s of jiffies, 2**6)
MAX_AGE = 2                   # slots a cookie stays valid after the one it was made in
# Linux's msstab (net/ipv4/syncookies.c, net/ipv6/syncookies.c): common MSS values, rounded
# down from the peer's advertised MSS.
MSS_TABLE_V4 = (536, 1300, 1440, 1460)
MSS_TABLE_V6 = (1220, 1400, 1440, 1460)
DATA_ENO = 4                  # data bit: the SYN-ACK carried an ENO option (RFC 8547)
DATA_LIMIT = 8                # data values (2 MSS bits + the ENO bit): 3 low bits
_H2_MASK = (1 << 21) - 1      # the MAC bits between the data and the slot

TS_OPT_BITS = 6               # low TSval bits carrying options (as Linux, TS_OPT_BITS)
TS_OPT_MASK = (1 << TS_OPT_BITS) - 1
_WS_NONE = 0xF                # no window scaling (shift values are 0..14, RFC 7323 2.3)
_TS_SACK = 0x10


def _h(secret: bytes, person: bytes, laddr: bytes, lport: int, raddr: bytes, rport: int,
       count: int | None = None, data: int = 0) -> int:
    msg = laddr + raddr + lport.to_bytes(2, "big") + rport.to_bytes(2, "big")
    if count is not None:
        msg += count.to_bytes(4, "big") + bytes((data,))
    return int.from_bytes(hashlib.blake2s(msg, key=secret, person=person,
                                          digest_size=4).digest(), "big")


def time_slot(now: float) -> int:
    """The cookie counter for time `now` (seconds)."""
    return int(now // COOKIE_SLOT) & MASK


def mss_index(peer_mss: int | None, v6: bool) -> int | None:
    """Index of the largest table MSS not above the peer's, or None when even the smallest
    is above it.

    RFC 9293 3.7.1 MUST-16: we never send a segment larger than the MSS the peer announced,
    so the table value is rounded *down*; a SYN without MSS option stands for the MUST-15
    default, 536 (IPv4) or 1220 (IPv6), both table entries.  An announced MSS below the
    smallest entry cannot be kept in a cookie: the caller drops such a SYN (the peer
    retries and is answered statefully once the SYN queue has room), where Linux would
    round it *up* to 536."""
    table = MSS_TABLE_V6 if v6 else MSS_TABLE_V4
    mss = peer_mss if peer_mss else (1220 if v6 else 536)
    for i in range(len(table) - 1, -1, -1):
        if mss >= table[i]:
            return i
    return None


def mss_from_index(index: int, v6: bool) -> int:
    return (MSS_TABLE_V6 if v6 else MSS_TABLE_V4)[index]


def make_cookie(secret: bytes, laddr: bytes, lport: int, raddr: bytes, rport: int,
                peer_isn: int, count: int, data: int) -> int:
    """The ISN of a cookie SYN-ACK (see the module docstring); 0 <= data < DATA_LIMIT."""
    if not 0 <= data < DATA_LIMIT:
        raise ValueError(f"cookie data {data} outside 0..{DATA_LIMIT - 1}")
    h1 = _h(secret, b"syncook1", laddr, lport, raddr, rport)
    h2 = _h(secret, b"syncook2", laddr, lport, raddr, rport, count, data) & _H2_MASK
    return (h1 + peer_isn + ((count & 0xFF) << 24) + (h2 << 3 | data)) & MASK


def check_cookie(secret: bytes, laddr: bytes, lport: int, raddr: bytes, rport: int,
                 peer_isn: int, cookie: int, count: int, max_age: int = MAX_AGE) -> int | None:
    """The data of a valid cookie made at most `max_age` slots before `count`, else None.

    `peer_isn` is the returning ACK's SEG.SEQ - 1 and `cookie` its SEG.ACK - 1."""
    h1 = _h(secret, b"syncook1", laddr, lport, raddr, rport)
    diff = (cookie - h1 - peer_isn) & MASK
    made = diff >> 24
    age = (count - made) & 0xFF
    if age > max_age:
        return None
    made = (count - age) & MASK          # the full slot number the 8 bits stand for
    data = diff & (DATA_LIMIT - 1)
    h2 = _h(secret, b"syncook2", laddr, lport, raddr, rport, made, data) & _H2_MASK
    return data if (diff >> 3) & _H2_MASK == h2 else None


def encode_ts_options(wscale: int | None, sack_permitted: bool) -> int:
    """Option bits for the low TSval bits: the peer's WS shift (clamped to 14) and SACK."""
    bits = _WS_NONE if wscale is None else min(wscale, 14)
    if sack_permitted:
        bits |= _TS_SACK
    return bits


def decode_ts_options(tsecr: int) -> tuple[int | None, bool]:
    """(peer's window-scale shift or None, SACK-permitted) from an echoed TSval."""
    ws = tsecr & 0xF
    return (None if ws == _WS_NONE else ws), bool(tsecr & _TS_SACK)


def cookie_tsval(ts_now: int, bits: int) -> int:
    """Our TSval with `bits` in the low bits, never ahead of our clock `ts_now` (as Linux:
    the peer's PAWS and our RTT measurement both want a TSval not from the future)."""
    ts = ((ts_now & ~TS_OPT_MASK) | bits) & MASK
    if (ts - ts_now) & MASK and ((ts - ts_now) & MASK) < (1 << 31):
        ts = (ts - (1 << TS_OPT_BITS)) & MASK
    return ts
