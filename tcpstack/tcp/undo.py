"""Undo of spurious congestion responses: detection by Eifel (RFC 3522) and by D-SACK
(RFC 3708), and the state to restore (RFC 4015 response).

A loss-recovery episode (fast recovery, or recovery after a timeout) starts with a
congestion response; this object remembers the congestion state from before it
(:meth:`begin`), counts the episode's retransmissions (:meth:`retransmitted`), and says when
they all turn out to have been unnecessary:

* Eifel (RFC 3522 2): the first ACK covering the episode's first retransmission echoes a
  timestamp older than that retransmission (RetransmitTS), so it acknowledges the original.
* D-SACK (RFC 3708 2-3): every retransmission of the episode is reported as a duplicate.

The TCB then undoes the response (TCPConnection._spurious, RFC 4015).

Overlapping episodes (a choice beyond RFC 3708, which looks at one episode): with reordering
longer than RACK's reordering window (RFC 8985 6.2 step 4 caps it at SRTT), the D-SACKs for
one episode's spurious retransmissions arrive only after the next spurious episode has begun.
Forgetting the older episode then makes every reduction stick and cwnd ratchets down to its
floor.  So an episode still awaiting D-SACKs when a new one begins is kept (``older``, at
most ``MAX_OLDER``); D-SACKs are counted against the episode whose range holds them, and
when the newest episode and an unbroken run of episodes before it have *all* been reported
spurious, the state from before the oldest of that run is restored.  A genuine loss in
between (never D-SACKed) stops the run there, and any reduction outside an episode (a
timeout, a TLP-repaired loss) forgets the older episodes, so nothing genuine is undone.
"""
from __future__ import annotations

MASK = 0xFFFFFFFF
HALF = 0x80000000
MAX_OLDER = 8         # older episodes still awaiting D-SACKs, kept for a chained undo


class _Episode:
    """An older episode awaiting D-SACKs: its range, the state from before it, and how many
    of its retransmissions are still unreported."""
    __slots__ = ("cc_state", "cwnd", "marker", "high", "retrans")

    def __init__(self, cc_state: object, cwnd: int, marker: int, high: int,
                 retrans: int) -> None:
        self.cc_state = cc_state
        self.cwnd = cwnd
        self.marker = marker
        self.high = high
        self.retrans = retrans


class SpuriousUndo:
    """The undo state of one connection's current loss-recovery episode."""

    __slots__ = ("cc_state", "cwnd", "marker", "high", "retrans", "total", "ts", "rto", "seq",
                 "older", "chainable")

    def __init__(self, snd_una: int) -> None:
        self.cc_state: object | None = None   # cc.snapshot() before the episode's reduction
        self.cwnd = 0                         # cwnd before it
        self.marker = snd_una                 # SND.UNA when the episode began
        self.high = snd_una                   # one past the highest octet retransmitted in it
        self.retrans = 0                      # its retransmissions not yet reported by D-SACK
        self.total = 0                        # all its retransmissions
        self.ts: int | None = None            # RetransmitTS (RFC 3522 2): first retransmission
        self.rto = False                      # the episode included a timeout
        self.seq = snd_una                    # ... end of the first retransmission
        self.older: list[_Episode] = []       # earlier fast-recovery episodes, oldest first
        self.chainable = False                # this episode may join a chained undo

    def begin(self, cc_state: object, cwnd: int, snd_una: int, rto: bool) -> None:
        """A new episode: remember the congestion state before its response (RFC 4015).
        A fast-recovery episode whose retransmissions still await their D-SACKs is kept for
        a chained undo; a timeout forgets them all."""
        if rto:
            self.older.clear()
        elif (self.chainable and self.cc_state is not None and not self.rto and self.total
              and self.retrans > 0):
            self.older.append(_Episode(self.cc_state, self.cwnd, self.marker, self.high,
                                       self.retrans))
            if len(self.older) > MAX_OLDER:
                del self.older[0]
        elif self.cc_state is not None or not self.chainable:
            self.older.clear()                # a broken run: nothing before it chains
        # (else the previous episode was undone: neutral, the run goes on through it)
        self.chainable = True
        self.rto = rto
        self.cc_state = cc_state
        self.cwnd = cwnd
        self.marker = snd_una
        self.high = snd_una
        self.retrans = 0
        self.total = 0
        self.ts = None

    def retransmitted(self, end: int) -> bool:
        """One more retransmission of the episode, ending at `end`; True for its first (the
        caller then records RetransmitTS and `seq`, when timestamps are in use)."""
        self.retrans += 1
        self.total += 1
        if end > self.high:
            self.high = end
        return self.total == 1

    def eifel(self, tsecr: int | None) -> bool:
        """RFC 3522 2: the first ACK at or above `seq` (the caller checks) echoes `tsecr`:
        True when it is older than RetransmitTS, i.e. the retransmission was spurious.
        Either way the test is made once per episode."""
        rts = self.ts
        self.ts = None
        return rts is not None and tsecr is not None and (tsecr - rts) & MASK >= HALF

    def dsack(self, start: int, end: int, mss: int) -> bool:
        """RFC 3708 2-3: a D-SACK block [start, end) arrived; True when it was the last of
        the episode's retransmissions still unreported, all of them spurious."""
        n = max(1, (end - start + mss // 2) // mss)
        current = self.cc_state is not None and self.total > 0
        if not current or start < self.marker:
            # An older episode's retransmission (see the module docstring).
            for ep in reversed(self.older):
                if ep.marker <= start and end <= ep.high:
                    if ep.retrans > 0:
                        ep.retrans -= n
                        if ep.retrans <= 0 and self.cc_state is None:
                            return self._chain()      # the newest episode was undone already
                    break
            return False
        if self.retrans <= 0 or end > self.high:
            return False
        self.retrans -= n
        if self.retrans <= 0:
            self._chain()
            return True
        return False

    def _chain(self) -> bool:
        """The newest episode is spurious: extend the undo over the unbroken run of older
        spurious episodes before it (their state replaces the one to restore)."""
        older = self.older
        found = False
        while older and older[-1].retrans <= 0:
            ep = older.pop()
            self.cc_state = ep.cc_state
            self.cwnd = ep.cwnd
            found = True
        return found

    def forget_older(self) -> None:
        """A congestion response outside any episode (a TLP-repaired loss): the older
        episodes' state is no longer the one to return to."""
        self.older.clear()
        self.chainable = False

    def done(self) -> None:
        """The response was undone: nothing left to undo in this episode."""
        self.cc_state = None
        self.ts = None
