"""Tail loss probes (RFC 8985 7): the probe state of one RACK-TLP connection.

When the tail of a flight is lost no ACK comes back to trigger RACK, and only the RTO
would repair it.  A probe timeout (PTO, about 2 SRTT, 7.2) before the RTO sends one
"probe" segment (new data if any fits, else the last unSACKed segment again, 7.3) to
solicit an ACK whose SACK information lets RACK detect the loss.  7.4 then tells from the
ACKs whether the probe itself repaired a single loss (the congestion response is then
still owed) or both copies arrived.

The TCB keeps the PTO timer deadline beside its other timers and sends the probe; this
object keeps TLPRxtOut/TLPHighRxt state (here ``end`` and ``is_retrans``) and decides.
"""
from __future__ import annotations

from typing import Any


class TailLossProbe:
    """RFC 8985 7: the probe in flight (``end`` is TLPHighRxt + 1: SND.NXT when it went out,
    None when no probe is outstanding, TLP_init() 7.1)."""

    __slots__ = ("end", "is_retrans", "samples")

    def __init__(self) -> None:
        self.end: int | None = None
        self.is_retrans = False     # the probe resent old data (else it carried new data)
        self.samples = -1           # RTT sample count when the last probe went out

    def may_probe(self, rtt_samples: int) -> bool:
        """7.3: no probe outstanding, and an RTT sample since the last one (so a probe is
        not followed by another before the network has answered)."""
        return self.end is None and rtt_samples != self.samples

    def sent(self, snd_nxt: int, is_retrans: bool, rtt_samples: int) -> None:
        self.end = snd_nxt
        self.is_retrans = is_retrans
        self.samples = rtt_samples

    @staticmethod
    def pto_deadline(srtt: float | None, flight: int, mss: int, config: Any, now: float,
                     t_rtx: float | None) -> float:
        """7.2 TLP_calc_PTO() as an absolute deadline, capped at the RTO's."""
        if srtt is None:
            pto = 1.0
        else:
            pto = 2 * srtt
            if flight <= mss:
                pto += config.tlp_max_ack_delay
            if pto < config.tlp_min:
                pto = config.tlp_min
        t = now + pto
        if t_rtx is not None and t > t_rtx:
            t = t_rtx
        return t

    def on_ack(self, ack: int, prior_una: int, dsack: tuple[int, int] | None,
               has_sack: bool) -> bool:
        """7.4.2 TLP_process_ack() for an ACK at or above ``end`` (the caller checks);
        True when the probe repaired a single loss: the congestion response is due."""
        end = self.end
        if not self.is_retrans:
            self.end = None                   # a probe of new data was delivered
        elif dsack is not None and dsack[1] == end:
            self.end = None                   # case 1: both copies arrived
        elif end is not None and ack > end:
            self.end = None                   # the probe repaired a single loss
            return True
        elif ack == prior_una and not has_sack:
            self.end = None                   # case 2: a DupAck without SACK
        return False
