"""The send buffer (tcpstack/tcp/sndbuf.py): chunks kept by reference, views out, joined only
across chunks; checked against a plain bytes model."""
from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from tcpstack.tcp.sndbuf import Gather, SendBuffer, immutable

ops = st.lists(st.one_of(
    st.tuples(st.just("append"), st.integers(0, 9000), st.sampled_from(["bytes", "bytearray", "view"])),
    st.tuples(st.just("consume"), st.integers(0, 12000), st.just("")),
    st.tuples(st.just("get"), st.integers(0, 20000), st.integers(1, 70000)),
), max_size=60)


@settings(max_examples=300, deadline=None)
@given(ops)
def test_matches_a_bytes_model(program):
    buf, model, counter = SendBuffer(), bytearray(), 0
    for op, a, b in program:
        if op == "append":
            data = bytes((counter + i) % 251 for i in range(a))
            counter += a
            src = {"bytes": data, "bytearray": bytearray(data),
                   "view": memoryview(b"\0" + data)[1:]}[b]
            buf.append(src)
            model += data
        elif op == "consume":
            n = min(a, len(model))
            buf.consume(n)
            del model[:n]
        elif model:
            off = a % len(model)
            end = min(len(model), off + b)
            got = buf.get(off, end)
            assert bytes(got) == model[off:end]
            g = buf.get(off, end, gather=True)
            assert len(g) == end - off and bytes(g) == model[off:end]
        assert len(buf) == len(model)


def test_large_bytes_are_kept_by_reference_and_a_segment_is_a_view():
    big = bytes(range(256)) * 64                     # 16 KiB
    buf = SendBuffer()
    buf.append(big)
    whole = buf.get(0, len(big))
    assert whole is big                              # no copy at all
    part = buf.get(100, 1548)
    assert isinstance(part, memoryview) and part.obj is big and bytes(part) == big[100:1548]


def test_a_mutable_buffer_is_copied_so_later_changes_do_not_leak():
    data = bytearray(b"a" * 5000)
    small = bytearray(b"b" * 10)
    buf = SendBuffer()
    buf.append(data)
    buf.append(small)
    data[:] = b"x" * 5000
    small[:] = b"y" * 10
    assert bytes(buf.get(0, 5010)) == b"a" * 5000 + b"b" * 10
    ro = memoryview(bytearray(b"c" * 3000)).toreadonly()
    assert not immutable(ro)                          # read-only view of a bytearray
    assert immutable(memoryview(b"d" * 3000)[5:])


def test_small_writes_share_chunks_and_a_straddling_range_can_stay_in_pieces():
    buf = SendBuffer()
    for i in range(1000):
        buf.append(bytes([i % 256]))
    big = b"z" * 10000
    buf.append(big)
    assert len(buf._chunks) == 2                     # 1000 one-byte writes: one chunk
    g = buf.get(500, 7000, gather=True)
    assert isinstance(g, Gather) and len(g.parts) == 2 and g.parts[1].obj is big
    assert bytes(g) == bytes(i % 256 for i in range(500, 1000)) + b"z" * 6000
    buf.consume(10500)
    assert len(buf) == 500 and bytes(buf.get(0, 500)) == b"z" * 500


def test_an_owned_buffer_is_kept_by_reference():
    """tcpcrypt frames are a bytearray the endpoint owns (StreamTransform contract): the
    send buffer keeps it without the copy a caller's mutable buffer gets."""
    frames = bytearray(b"f" * 9000)
    buf = SendBuffer()
    buf.append(frames, owned=True)
    view = buf.get(0, 9000)
    assert view is frames or view.obj is frames
