"""The sender's SACK scoreboard (RFC 6675 2-4; RFC 2018 for the option itself).

Holds the SACKed ranges above SND.UNA (the connection's unwrapped sequence numbers), merged
and sorted, and answers the questions RFC 6675 asks of it: how many octets are SACKed,
IsLost (section 4), where the holes are (for NextSeg), and how many hole octets lie in a
range (for SetPipe).  Per-ACK cost is O(number of blocks), which is small: it is bounded by
the number of holes in the receiver's queue.
"""
from __future__ import annotations

from bisect import bisect_left, bisect_right


class SackScoreboard:
    __slots__ = ("starts", "ends", "sacked")

    def __init__(self) -> None:
        self.starts: list[int] = []
        self.ends: list[int] = []
        self.sacked = 0          # octets SACKed above SND.UNA

    def __bool__(self) -> bool:
        return bool(self.starts)

    def blocks(self) -> list[tuple[int, int]]:
        return list(zip(self.starts, self.ends))

    @property
    def highest(self) -> int | None:
        """One past the highest SACKed octet (RFC 6675's HighSACKed + 1), or None."""
        return self.ends[-1] if self.ends else None

    def clear(self) -> None:
        self.starts.clear()
        self.ends.clear()
        self.sacked = 0

    def update(self, blocks: "list[tuple[int, int]]", snd_una: int, snd_max: int,
               new_ranges: "list[tuple[int, int]] | None" = None) -> int:
        """RFC 6675 Update(): record SACK blocks (already unwrapped).  Blocks that are not
        within (SND.UNA, SND.MAX] are ignored (D-SACK, stale or forged).  Returns the number
        of octets newly SACKed; if ``new_ranges`` is given, the newly SACKed ranges are
        appended to it (so per-segment records are only visited once, when first SACKed)."""
        new = 0
        starts, ends = self.starts, self.ends
        for s, e in blocks:
            if s < snd_una:
                s = snd_una
            if e > snd_max:
                e = snd_max
            if e <= s:
                continue
            i = bisect_left(ends, s)          # first block ending at/after s
            if i < len(ends) and starts[i] <= s and e <= ends[i]:
                continue                      # already held (the older blocks of an ACK)
            j = bisect_right(starts, e)       # blocks starting after e are untouched
            if i == j:
                starts.insert(i, s)
                ends.insert(i, e)
                new += e - s
                if new_ranges is not None:
                    new_ranges.append((s, e))
                continue
            old = 0
            pos = s
            for k in range(i, j):
                old += ends[k] - starts[k]
                if new_ranges is not None:
                    if starts[k] > pos:
                        new_ranges.append((pos, starts[k]))
                    if ends[k] > pos:
                        pos = ends[k]
            if new_ranges is not None and e > pos:
                new_ranges.append((pos, e))
            ns = min(s, starts[i])
            ne = max(e, ends[j - 1])
            starts[i:j] = [ns]
            ends[i:j] = [ne]
            new += (ne - ns) - old
        self.sacked += new
        return new

    def advance(self, snd_una: int) -> None:
        """The cumulative ACK moved: forget what lies below SND.UNA."""
        starts, ends = self.starts, self.ends
        while starts and ends[0] <= snd_una:
            self.sacked -= ends[0] - starts[0]
            del starts[0]
            del ends[0]
        if starts and starts[0] < snd_una:
            self.sacked -= snd_una - starts[0]
            starts[0] = snd_una

    def is_sacked(self, seq: int) -> bool:
        i = bisect_right(self.starts, seq) - 1
        return i >= 0 and seq < self.ends[i]

    def lost_boundary(self, dupthresh: int, mss: int) -> int | None:
        """RFC 6675 4 IsLost(): every unSACKed octet below the returned sequence number is
        lost (DupThresh discontiguous SACKed blocks, or more than (DupThresh-1)*SMSS SACKed
        octets, above it); None if no octet is lost."""
        acc = 0
        n = 0
        limit = (dupthresh - 1) * mss
        starts, ends = self.starts, self.ends
        for k in range(len(starts) - 1, -1, -1):
            acc += ends[k] - starts[k]
            n += 1
            if n >= dupthresh or acc > limit:
                return starts[k]
        return None

    def hole_bytes(self, lo: int, hi: int) -> int:
        """Unsacked octets in [lo, hi)."""
        if hi <= lo:
            return 0
        total = hi - lo
        starts, ends = self.starts, self.ends
        i = bisect_right(ends, lo)
        for k in range(i, len(starts)):
            s = starts[k]
            if s >= hi:
                break
            e = ends[k]
            total -= (e if e < hi else hi) - (s if s > lo else lo)
        return total

    def next_hole(self, seq: int, limit: int) -> tuple[int, int] | None:
        """The first unsacked range [a, b) with seq <= a < limit (b <= limit), or None."""
        starts, ends = self.starts, self.ends
        i = bisect_right(starts, seq) - 1
        if i >= 0 and seq < ends[i]:
            seq = ends[i]
        i += 1
        if seq >= limit:
            return None
        end = starts[i] if i < len(starts) and starts[i] < limit else limit
        return seq, end
