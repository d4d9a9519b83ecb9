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
    if n <= 64:                                     # headers: the plain big-endian form
        if n & 1:
            return ((_from_bytes(data, "big") << 8) + initial) % 0xFFFF  # RFC 1071 4.1 pad
        return (_from_bytes(data, "big") + initial) % 0xFFFF
    # Payloads: sum little-endian words and swap the bytes of the result (RFC 1071 2(B),
    # byte-order independence); int.from_bytes is faster little-endian, and an odd last
    # byte lands in the low half of its word, which the swap turns into the zero-padded
    # high half.
    if n <= _CHUNK_MIN:
        s = _from_bytes(data, "little") % 0xFFFF
    else:
        # Big buffers: sum 4 KiB pieces (even lengths at even offsets, so they add like
        # words); the modulo is then on a small int.  1.7x faster than one modulo of 64 KiB.
        mv = data if isinstance(data, memoryview) else memoryview(data)
        s = sum([_from_bytes(mv[i:i + _CHUNK], "little") for i in range(0, n, _CHUNK)]) % 0xFFFF
    return (((s & 0xFF) << 8 | s >> 8) + initial) % 0xFFFF


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
