"""tcpstack.aio.reader.ChunkedStreamReader behaves exactly like asyncio.StreamReader (same
bytes, same exceptions, same flow control), while handing large pieces out uncopied."""
from __future__ import annotations

import asyncio
import random

from hypothesis import given, settings, strategies as st

from tcpstack.aio.reader import ChunkedStreamReader

OPS = st.lists(st.tuples(st.sampled_from(["read", "readexactly", "readline", "readuntil", "read_all",
                                          "at_eof"]),
                         st.integers(1, 70000)), min_size=1, max_size=25)
PIECES = st.lists(st.integers(1, 70000), min_size=1, max_size=12)


def pieces_data(sizes: list[int], seed: int) -> list[bytes]:
    rng = random.Random(seed)
    out = []
    for n in sizes:
        b = bytearray(rng.randbytes(n))
        for _ in range(n // 5000):              # some separators for readline/readuntil
            b[rng.randrange(n)] = rng.choice(b"\n|")
        out.append(bytes(b))
    return out


async def run_ops(reader: asyncio.StreamReader, ops) -> list:
    results = []
    for op, n in ops:
        try:
            if op == "read":
                r = await reader.read(n)
            elif op == "readexactly":
                r = await reader.readexactly(n)
            elif op == "readline":
                r = await reader.readline()
            elif op == "readuntil":
                r = await reader.readuntil(b"|")
            elif op == "read_all":
                r = await reader.read()
            else:
                r = reader.at_eof()
            results.append(("ok", r))
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as e:
            results.append((type(e).__name__, getattr(e, "partial", None)))
    return results


@settings(max_examples=150, deadline=None)
@given(sizes=PIECES, ops=OPS, seed=st.integers(0, 1000))
def test_same_results_as_asyncio_streamreader(sizes, ops, seed):
    data = pieces_data(sizes, seed)

    async def scenario(cls):
        r = cls(limit=1 << 16)
        for d in data:
            r.feed_data(d)
        r.feed_eof()
        return await run_ops(r, ops)

    ref = asyncio.run(scenario(asyncio.StreamReader))
    got = asyncio.run(scenario(ChunkedStreamReader))
    assert got == ref


@settings(max_examples=150, deadline=None)
@given(sizes=PIECES, ops=OPS, seed=st.integers(0, 1000))
def test_views_of_packets_give_the_same_bytes_as_asyncio(sizes, ops, seed):
    """The TCB hands on read-only views of received packets (bytes): every result is still
    a bytes object equal to asyncio's for the same stream fed as bytes."""
    data = pieces_data(sizes, seed)

    async def scenario(cls, as_views):
        r = cls(limit=1 << 16)
        for d in data:
            r.feed_data(memoryview(b"HDR" + d)[3:] if as_views else d)
        r.feed_eof()
        return await run_ops(r, ops)

    ref = asyncio.run(scenario(asyncio.StreamReader, False))
    got = asyncio.run(scenario(ChunkedStreamReader, True))
    assert got == ref
    assert all(type(v) is bytes for k, v in got if k == "ok" and not isinstance(v, bool))


@settings(max_examples=60, deadline=None)
@given(sizes=PIECES, seed=st.integers(0, 1000), reads=st.lists(st.integers(1, 70000), min_size=1))
def test_interleaved_feeding_and_reading_delivers_the_same_stream(sizes, seed, reads):
    data = pieces_data(sizes, seed)

    async def scenario():
        r = ChunkedStreamReader(limit=1 << 16)

        async def produce():
            for d in data:
                r.feed_data(d)
                await asyncio.sleep(0)
            r.feed_eof()

        async def consume():
            out, i = [], 0
            while True:
                b = await r.read(reads[i % len(reads)])
                i += 1
                if not b:
                    return b"".join(out)
                assert len(b) <= reads[(i - 1) % len(reads)]
                out.append(b)
        _, got = await asyncio.gather(produce(), consume())
        return got

    assert asyncio.run(scenario()) == b"".join(data)


def test_large_pieces_are_handed_out_without_a_copy_and_flow_control_counts_them():
    class Transport:
        paused = 0
        resumed = 0

        def pause_reading(self):
            self.paused += 1

        def resume_reading(self):
            self.resumed += 1

    async def scenario():
        r = ChunkedStreamReader(limit=1 << 16)
        t = Transport()
        r.set_transport(t)
        pieces = [bytes([i]) * 65536 for i in range(3)]
        r.feed_data(pieces[0])
        assert await r.read(1 << 20) is pieces[0]       # the very object: no copy
        for p in pieces[1:]:
            r.feed_data(p)
        r.feed_data(pieces[0])
        assert t.paused == 1                    # 192 KiB queued > 2 * limit
        assert await r.read(65536) is pieces[1] # exactly one piece asked for: no copy
        assert t.resumed == 0                   # 128 KiB still queued > limit
        assert await r.read(65536) is pieces[2]
        assert t.resumed == 1
        r.feed_data(pieces[1])
        assert await r.readexactly(3) == b"\x00" * 3    # a buffer-based read still works
        rest = await r.read(1 << 20)                     # all that is available, as asyncio
        assert rest == b"\x00" * 65533 + b"\x01" * 65536
        assert isinstance(r, asyncio.StreamReader)
    asyncio.run(scenario())
