"""tcpstack.wire.checksum against RFC 1071's example and a slow word-by-word reference."""
from __future__ import annotations

import ipaddress
import os

from hypothesis import given, settings, strategies as st

from tcpstack.wire.checksum import internet_checksum, ones_sum, pseudo_header_sum, verify


from tests.tcpstack.hosts import ref_checksum, ref_sum


def test_rfc1071_example() -> None:
    # RFC 1071 3: bytes 00 01 f2 03 f4 f5 f6 f7 sum to ddf2 (after end-around carry).
    data = bytes.fromhex("0001f203f4f5f6f7")
    assert ref_sum(data) == 0xDDF2
    assert ones_sum(data) == 0xDDF2
    assert internet_checksum(data) == 0x220D


def test_known_ipv4_header() -> None:
    # A well-known IPv4 header (192.168.0.1 -> 192.168.0.199, UDP) with checksum b861.
    hdr = bytes.fromhex("450000730000400040110000c0a80001c0a800c7")
    assert internet_checksum(hdr) == 0xB861
    full = hdr[:10] + b"\xb8\x61" + hdr[12:]
    assert verify(full)
    assert ones_sum(full) == 0


def test_odd_lengths_and_chunk_boundaries() -> None:
    for n in [0, 1, 2, 3, 4095, 4096, 4097, 8191, 8192, 8193, 8194, 12289, 65534, 65535]:
        data = os.urandom(n)
        assert internet_checksum(data) == ref_checksum(data), n
        assert internet_checksum(memoryview(data)) == ref_checksum(data), n
        # A memoryview slice that does not start at the beginning of its buffer.
        assert internet_checksum(memoryview(b"x" + data)[1:]) == ref_checksum(data), n


def test_negative_zero() -> None:
    # Words summing to 0xFFFF: the checksum is 0x0000 (complement of 0xFFFF), not 0xFFFF.
    data = bytes.fromhex("ff00 00ff")
    assert ref_checksum(data) == 0
    assert internet_checksum(data) == 0
    assert internet_checksum(b"\0\0\0\0") == 0xFFFF


@settings(max_examples=300)
@given(st.binary(max_size=20000), st.integers(0, 0xFFFF))
def test_matches_reference(data: bytes, initial: int) -> None:
    assert internet_checksum(data) == ref_checksum(data)
    padded = data + b"\0" * (len(data) % 2)
    assert internet_checksum(data, initial) == ref_checksum(padded + initial.to_bytes(2, "big"))


@given(st.binary(min_size=2, max_size=3000).map(lambda b: b if len(b) % 2 == 0 else b + b"\0"))
def test_inserted_checksum_verifies(data: bytes) -> None:
    c = internet_checksum(data)
    assert verify(data + c.to_bytes(2, "big"))


@given(st.sampled_from([4, 16]).flatmap(lambda n: st.tuples(st.binary(min_size=n, max_size=n),
                                                             st.binary(min_size=n, max_size=n))),
       st.integers(0, 255), st.integers(0, 0xFFFF))
def test_pseudo_header(addrs: tuple[bytes, bytes], proto: int, length: int) -> None:
    src, dst = addrs
    if len(src) == 4:   # RFC 9293 3.1: src, dst, zero, PTCL, TCP length
        ph = src + dst + bytes((0, proto)) + length.to_bytes(2, "big")
    else:               # RFC 8200 8.1: src, dst, 32-bit length, 3 zero bytes, next header
        ph = src + dst + length.to_bytes(4, "big") + bytes((0, 0, 0, proto))
    assert pseudo_header_sum(src, dst, proto, length) % 0xFFFF == ref_sum(ph) % 0xFFFF
    payload = os.urandom(length % 300)
    assert internet_checksum(payload, pseudo_header_sum(src, dst, proto, length)) % 0xFFFF == \
        ref_checksum(ph + payload) % 0xFFFF


def test_pseudo_header_real_addresses() -> None:
    src = ipaddress.ip_address("fd77::1").packed
    dst = ipaddress.ip_address("fd77::2").packed
    ph = src + dst + (40).to_bytes(4, "big") + b"\0\0\0\x06"
    assert pseudo_header_sum(src, dst, 6, 40) == ref_sum(ph) % 0xFFFF
