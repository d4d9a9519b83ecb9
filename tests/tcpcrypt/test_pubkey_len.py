"""RFC 8548 section 5: the two-byte pubkey_len prefix of the P-256 / P-521 public keys.

The section's figure numbers the structure's bytes 0 .. L-1 (so L would count the whole
structure, prefix included), while its prose ("prefixed by a two-byte length") and the
field's name read L as the length of the point.  We send the point's length and accept both
readings on receipt: a compressed point has one fixed length per curve (1 + the coordinate
length: 33 bytes for P-256, 67 for P-521), so point_len and point_len + 2 can never be
confused, and the field occupies pub_wire_len bytes either way.
"""
from __future__ import annotations

import pytest

from tcpcrypt.errors import TcpcryptProtocolError
from tcpcrypt.suites import TEP_P256, TEP_P521, TEPS

# (TEP, compressed point length, whole structure length)
CURVES = [(TEP_P256, 33, 35), (TEP_P521, 67, 69)]


@pytest.mark.parametrize("tep,point_len,wire_len", CURVES)
def test_we_send_the_points_length(tep, point_len, wire_len):
    ka = TEPS[tep]
    assert (ka.point_len, ka.pub_wire_len) == (point_len, wire_len)
    wire = ka.public_wire(ka.generate())
    assert len(wire) == wire_len
    assert int.from_bytes(wire[:2], "big") == point_len    # the prose reading of L
    assert wire[2] in (2, 3)                                # compressed (section 5 MUST)


@pytest.mark.parametrize("tep,point_len,wire_len", CURVES)
def test_both_readings_of_pubkey_len_are_accepted_and_mean_the_same_key(tep, point_len,
                                                                        wire_len):
    ka = TEPS[tep]
    a, b = ka.generate(), ka.generate()
    wire = ka.public_wire(a)
    as_point = ka.parse_public(wire)                                  # L = point length
    as_struct = ka.parse_public(wire_len.to_bytes(2, "big") + wire[2:])  # L = whole structure
    assert as_point.public_numbers() == as_struct.public_numbers()
    assert ka.exchange(b, as_point) == ka.exchange(b, as_struct) == \
        ka.exchange(a, ka.parse_public(ka.public_wire(b)))


@pytest.mark.parametrize("tep,point_len,wire_len", CURVES)
@pytest.mark.parametrize("delta", [-2, -1, 1, 3, 4])
def test_other_pubkey_len_values_are_rejected(tep, point_len, wire_len, delta):
    ka = TEPS[tep]
    wire = ka.public_wire(ka.generate())
    with pytest.raises(TcpcryptProtocolError):
        ka.parse_public((point_len + delta).to_bytes(2, "big") + wire[2:])
    with pytest.raises(TcpcryptProtocolError):
        ka.parse_public(b"\x00\x00" + wire[2:])
