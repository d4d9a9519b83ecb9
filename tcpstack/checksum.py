"""The Internet checksum (RFC 1071) and the TCP/UDP/ICMPv6 pseudo-header sums
(RFC 9293 3.1 for IPv4, RFC 8200 8.1 for IPv6).

Speed: the one's-complement sum of 16-bit big-endian words equals the whole buffer read as
one big-endian integer modulo 0xFFFF (because 2**16 == 1 mod 0xFFFF), so one
int.from_bytes call and one modulo replace the per-word loop (about 3 us for 1460 bytes).
"""
from __future__ import annotations

_from_bytes = int.from_bytes
_CHUNK = 4096
_CHUNK_MIN = 8192


def ones_sum(data: bytes | bytearray | memoryview, initial: int = 0) -> int:
    """Unfolded partial sum (mod 0xFFFF) of `data` as 16-bit big-endian words plus `initial`."""
    n = len(data)
    if n <= _CHUNK_MIN:
        s = _from_bytes(data, "big")
    else:
        # Big buffers: sum 4 KiB pieces (each an even number of bytes, so 2**(8*4096) == 1
        # mod 0xFFFF and the pieces add like words); the final modulo is then on a small
        # int.  About 1.7x faster than one modulo of a 64 KiB int.
        mv = data if isinstance(data, memoryview) else memoryview(data)
        last = n - ((n - 1) % _CHUNK) - 1
        s = sum([_from_bytes(mv[i:i + _CHUNK], "big") for i in range(0, last, _CHUNK)])
        if n & 1:
            return (s + (_from_bytes(mv[last:], "big") << 8) + initial) % 0xFFFF
        return (s + _from_bytes(mv[last:], "big") + initial) % 0xFFFF
    if n & 1:
        s <<= 8                                    # pad the odd byte with a zero (RFC 1071 4.1)
    return (s + initial) % 0xFFFF


def internet_checksum(data: bytes | bytearray | memoryview, initial: int = 0) -> int:
    """The 16-bit checksum field value: the complement of the one's-complement sum."""
    s = ones_sum(data, initial)
    if s == 0 and (initial or any(data)):
        # In one's complement a non-zero sum that is a multiple of 0xFFFF is "negative zero"
        # (0xFFFF), whose complement is 0x0000; mod arithmetic gives +0 instead.
        return 0
    return ~s & 0xFFFF


def pseudo_header_sum(src: bytes, dst: bytes, proto: int, length: int) -> int:
    """Partial sum of the IPv4 (12-byte) or IPv6 (40-byte) pseudo-header, for `initial`."""
    if len(src) == 4:
        return (_from_bytes(src, "big") + _from_bytes(dst, "big") + proto + length) % 0xFFFF
    return (_from_bytes(src, "big") + _from_bytes(dst, "big") + length + proto) % 0xFFFF


def verify(data: bytes | bytearray | memoryview, initial: int = 0) -> bool:
    """True when `data` (checksum field included) sums to all ones."""
    return ones_sum(data, initial) == 0 and (initial or any(data)) != 0
