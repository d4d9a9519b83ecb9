"""Out-of-order reassembly queue of the receive side (RFC 9293 3.10.7.4 "seventh, process
the segment text": segments beyond RCV.NXT are held until the gap is filled) and the SACK
blocks it yields for outgoing ACKs (RFC 2018 4).

Sequence numbers are the connection's unwrapped ints (tcpstack/wire/seqnum.py).  Memory is
bounded: bytes by the receive window (the connection only inserts in-window data) and
entries by ``max_chunks``.  Overlapping data is trimmed so each octet is stored once.
"""
from __future__ import annotations

from bisect import bisect_left, bisect_right


class _Block:
    __slots__ = ("start", "end", "chunks")

    def __init__(self, start: int, end: int, chunks: list[bytes]) -> None:
        self.start = start
        self.end = end
        self.chunks = chunks


class ReassemblyQueue:
    """Sorted, non-overlapping, non-adjacent blocks of received out-of-order octets."""

    __slots__ = ("_blocks", "_starts", "_recent", "max_chunks", "nchunks", "nbytes")

    def __init__(self, max_chunks: int = 1024) -> None:
        self._blocks: list[_Block] = []
        self._starts: list[int] = []
        self._recent: list[_Block] = []   # most recently changed first (RFC 2018 4)
        self.max_chunks = max_chunks
        self.nchunks = 0
        self.nbytes = 0

    def __bool__(self) -> bool:
        return bool(self._blocks)

    def __len__(self) -> int:
        return len(self._blocks)

    def blocks(self) -> list[tuple[int, int]]:
        return [(b.start, b.end) for b in self._blocks]

    @property
    def highest(self) -> int | None:
        return self._blocks[-1].end if self._blocks else None

    def add(self, start: int, data: bytes | memoryview, *, force: bool = False) -> int:
        """Store ``data`` at ``start``; returns the number of octets that were new
        (0 for a full duplicate or when the entry bound is reached).  ``force``: in-order
        text at RCV.NXT, which is about to leave the queue, is never refused by the bound
        (refusing it would leave the hole unfillable for as long as the queue stays full)."""
        end = start + len(data)
        if end <= start:
            return 0
        blocks = self._blocks
        starts = self._starts
        # Blocks that overlap or touch [start, end).
        i = bisect_left(starts, start)
        if i and blocks[i - 1].end == start and (i == len(blocks) or starts[i] > end):
            # The common case of a lossy path: the next segment after a block, touching
            # nothing else.  The block grows in place (the general merge below would copy
            # its whole chunk list: quadratic in the segments held behind a hole).
            if self.nchunks >= self.max_chunks and not force:
                return 0
            blk = blocks[i - 1]
            blk.chunks.append(bytes(data))
            blk.end = end
            self.nchunks += 1
            self.nbytes += end - start
            self._touch(blk, ())
            return end - start
        if i > 0 and blocks[i - 1].end >= start:
            i -= 1
        j = bisect_right(starts, end)
        touched = blocks[i:j]
        # Pieces of [start, end) not yet held.
        pieces: list[tuple[int, bytes]] = []
        pos = start
        mv = memoryview(data)
        for b in touched:
            if b.start > pos:
                pieces.append((pos, bytes(mv[pos - start:b.start - start])))
            if b.end > pos:
                pos = b.end
        if pos < end:
            pieces.append((pos, bytes(mv[pos - start:])))
        new = sum(len(p[1]) for p in pieces)
        if not touched:
            if self.nchunks >= self.max_chunks and not force:
                return 0
            blk = _Block(start, end, [bytes(mv)])
            blocks.insert(i, blk)
            starts.insert(i, start)
            self.nchunks += 1
            self.nbytes += end - start
            self._touch(blk, ())
            return end - start
        if new == 0:
            # Duplicate: still the "most recent" block for SACK purposes (RFC 2018 4).
            self._touch(touched[0], ())
            return 0
        if self.nchunks + len(pieces) > self.max_chunks and not force:
            return 0
        # Merge everything in [min(start, first.start), max(end, last.end)) into one block.
        merged: list[bytes] = []
        k = 0
        for b in touched:
            while k < len(pieces) and pieces[k][0] < b.start:
                merged.append(pieces[k][1])
                k += 1
            merged.extend(b.chunks)
        while k < len(pieces):
            merged.append(pieces[k][1])
            k += 1
        blk = _Block(min(start, touched[0].start), max(end, touched[-1].end), merged)
        blocks[i:j] = [blk]
        starts[i:j] = [blk.start]
        self.nchunks += len(pieces)
        self.nbytes += new
        self._touch(blk, touched)
        return new

    def _touch(self, blk: _Block, gone: "list[_Block] | tuple[()]") -> None:
        recent = self._recent
        for g in gone:
            try:
                recent.remove(g)
            except ValueError:
                pass
        if blk in recent:
            recent.remove(blk)
        recent.insert(0, blk)

    def covers(self, start: int, end: int) -> bool:
        """True if [start, end) is already held entirely (a duplicate, RFC 2883 4.1.2)."""
        i = bisect_right(self._starts, start) - 1
        return i >= 0 and self._blocks[i].end >= end

    def pop_ready(self, rcv_nxt: int) -> tuple[list[bytes], int]:
        """Remove the blocks that now start at or below ``rcv_nxt``; returns their octets
        beyond ``rcv_nxt`` (in order) and the new RCV.NXT."""
        out: list[bytes] = []
        blocks = self._blocks
        while blocks and blocks[0].start <= rcv_nxt:
            b = blocks.pop(0)
            self._starts.pop(0)
            self.nchunks -= len(b.chunks)
            self.nbytes -= b.end - b.start
            try:
                self._recent.remove(b)
            except ValueError:
                pass
            if b.end <= rcv_nxt:
                continue
            skip = rcv_nxt - b.start
            for c in b.chunks:
                if skip >= len(c):
                    skip -= len(c)
                    continue
                out.append(c[skip:] if skip else c)
                skip = 0
            rcv_nxt = b.end
        return out, rcv_nxt

    def sack_blocks(self, n: int) -> list[tuple[int, int]]:
        """Up to ``n`` blocks, the most recently changed first (RFC 2018 4)."""
        return [(b.start, b.end) for b in self._recent[:n]]

    def clear(self) -> None:
        self._blocks.clear()
        self._starts.clear()
        self._recent.clear()
        self.nchunks = 0
        self.nbytes = 0
