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
"""
from __future__ import annotations

MASK = 0xFFFFFFFF
HALF = 0x80000000


class SpuriousUndo:
    """The undo state of one connection's current loss-recovery episode."""

    __slots__ = ("cc_state", "cwnd", "marker", "high", "retrans", "total", "ts", "rto", "seq")

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

    def begin(self, cc_state: object, cwnd: int, snd_una: int, rto: bool) -> None:
        """A new episode: remember the congestion state before its response (RFC 4015)."""
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
        if self.cc_state is None or self.total == 0 or self.retrans <= 0:
            return False
        if start < self.marker or end > self.high:
            return False
        self.retrans -= max(1, (end - start + mss // 2) // mss)
        return self.retrans <= 0

    def done(self) -> None:
        """The response was undone: nothing left to undo in this episode."""
        self.cc_state = None
        self.ts = None
