"""One TCP connection (a TCB) as a sans-IO state machine.

Implements RFC 9293 3.3-3.10 (all eleven states, the OPEN/SEND/CLOSE/ABORT calls, SEGMENT
ARRIVES 3.10.7 with the acceptability table of 3.10.7.4, timeouts 3.10.8), RFC 7323 (window
scaling 2, timestamps/RTTM/PAWS 3-5), RFC 2018 (SACK), RFC 5961 (challenge ACKs for RST 3.2,
SYN 4 and blind data injection 5, throttled per 7), RFC 6298 (retransmission timer, Karn),
RFC 5681 / RFC 6582 / RFC 6675 (fast retransmit, NewReno and SACK-based loss recovery with a
pipe estimate, NextSeg() rules 1-4; the window arithmetic lives in tcpstack/tcp/congestion/),
RFC 8985 (RACK-TLP on SACK connections: time-based loss detection over per-segment records,
tcpstack/tcp/rack.py, reordering timer, tail loss probes), RFC 2883 (D-SACK, both sides), RFC
3522 / RFC 3708 / RFC 4015 (detection of and response to spurious retransmissions: undo),
RFC 6191 (TIME-WAIT ended by a newer SYN: ``reopen_syn``), RFC 3042 (limited
transmit, through the pipe estimate), RFC 9293 3.7.4 (Nagle), 3.8.6 (SWS avoidance on both
sides, persist timer, delayed ACKs), 3.8.4 / RFC 1122 4.2.3.6 (keepalive), RFC 1122 4.2.3.9
(ICMP errors), RFC 8547 (TCP-ENO options carried for a negotiator; never interpreted here).

Nothing here touches a socket or a clock: the owner feeds segments, application calls and
the time ``now``; it drains segments (:meth:`segments_to_send`), events (:meth:`next_event`)
and asks for the next deadline (:meth:`next_timer`).

Sequence numbers are kept *unwrapped* (see tcpstack/wire/seqnum.py): snd_una, snd_nxt,
rcv_nxt... are plain ints that grow past 2**32, so every comparison is an ordinary ``<``;
wire values are ``v & 0xFFFFFFFF``.  A received 32-bit number is unwrapped against a nearby
reference with seqnum.unwrap; on the per-segment path (SEG.SEQ, SEG.ACK, SACK edges, TSval
comparisons) the same expression is written inline, as a function call there costs
measurably (bench/), and each such place says so.  Option sizes come from
tcpstack/wire/tcp.py, which lays the options out.  ``snd_nxt`` is the
highest sequence number sent plus one (it never moves back; retransmissions are tracked with
``_rxt_nxt``, RFC 6675's HighRxt + 1).

Deviations / choices: CLOSE is split in two calls: shutdown_write() (half-close, FIN after
the queued data; FIN-WAIT-2 may last as long as the peer keeps the connection open) and
close() (the application is gone: data arriving later is answered with RST per RFC 1122
4.2.2.13 and FIN-WAIT-2 is bounded by config.fin_wait_2_timeout, as Linux does for orphans).
A zero window is probed with one octet of new data (RFC 9293 3.8.6.1) on the persist timer,
whose probes never count as retransmissions while the peer answers them.  ACKs answering
unacceptable segments without data are rate limited (config.oow_ack_interval).

Loss recovery choices: SACK connections keep per-segment records (tcpstack/tcp/rack.py) and use
RACK-TLP (config.rack) or, without it, RFC 6675 IsLost() with NextSeg() rules 3 and 4;
connections without SACK keep RFC 5681 / RFC 6582 (DupThresh, partial ACKs).  SACK
information is kept across a first RTO (RFC 6675 5.1 allows it) and expunged on a repeated
one or when the segment at SND.UNA was SACKed (reneging, RFC 2018 8).  The congestion
response uses min(FlightSize, cwnd) (see _flight_size).  When a newer SYN ends TIME-WAIT the
TCB terminates and leaves the SYN in ``reopen_syn`` for its owner to hand to a listener.

Option-space choice (RFC 9293 3.1 allows 40 option bytes): a SYN carries MSS, SACK-permitted,
timestamps, window scale and the ENO negotiator's payloads.  If they do not fit, timestamps
are dropped first, then SACK-permitted, then window scaling (ENO, the reason the option space
ran out, is kept: encryption matters more than these optimisations).
"""
from __future__ import annotations

import enum
import logging
from collections import deque
from dataclasses import dataclass
from typing import Protocol, cast

from tcpstack.tcp.config import TCPConfig
from tcpstack.tcp.congestion import (CA_LOSS, CA_OPEN, CA_RECOVERY, CongestionControl,
                                     make_congestion_control)
from tcpstack.errors import (ConnectionAbortedLocallyError, ConnectionRefusedByPeerError,
                     ConnectionResetByPeerError, ConnectionTimeoutError)
from tcpstack.tcp.events import (ConnectionEstablished, ConnectionTerminated, DataReceived, EndOfStream,
                     CCSample, Event, StateChanged)
from tcpstack.tcp.autotune import ReceiveBufferTuner
from tcpstack.tcp.reassembly import ReassemblyQueue
from tcpstack.tcp.rack import SendQueue
from tcpstack.tcp.rate import RateSampler
from tcpstack.tcp.recovery import LossRecovery, NewRenoRecovery, RackRecovery, SackRecovery
from tcpstack.tcp.rtt import RTTEstimator
from tcpstack.tcp.sack import SackScoreboard
from tcpstack.wire.buffers import Payload
from tcpstack.wire.segment import ACK, FIN, PSH, RST, SYN, TCPSegment
from tcpstack.wire.seqnum import seq_lt, unwrap
from tcpstack.wire.tcp import (MAX_OPTION_SPACE, SACK_BLOCK_SPACE, SACK_OPTION_BASE,
                               TS_OPTION_SPACE, eno_option_space, sack_blocks_fitting,
                               syn_option_space)
from tcpstack.tcp.sndbuf import SendBuffer, immutable
from tcpstack.tcp.undo import SpuriousUndo

log = logging.getLogger(__name__)

MASK = 0xFFFFFFFF
HALF = 0x80000000
TS_OVERHEAD = TS_OPTION_SPACE   # what timestamps cost every segment (RFC 7323 3.2)
DEFAULT_PEER_MSS = 536    # RFC 9293 3.7.1 / RFC 1122 4.2.2.6 when no MSS option arrives
DEFAULT_PEER_MSS_V6 = 1220  # RFC 9293 3.7.1 MUST-15: 1280 - 60 for IPv6
IPV6_MIN_MTU = 1280       # RFC 8200 5 / RFC 8201 4: a path MTU is never taken below this
IPV4_MIN_PMTU = 552       # floor for ICMP "fragmentation needed" values (Linux min_pmtu)
PAWS_IDLE = 24 * 86400.0  # RFC 7323 5.5: TS.Recent is invalid after 24 days idle
MIN_MSS = 64


class ENOHandshake(Protocol):
    """What the TCB needs of a TCP-ENO negotiator (RFC 8547; tcpcrypt/eno.py implements it)."""

    active: bool

    def syn_options(self) -> tuple[bytes, ...]: ...
    def nonsyn_options(self) -> tuple[bytes, ...]: ...
    def on_receive(self, flags: int, eno: tuple[bytes, ...]) -> None: ...
    def on_syn_retransmit(self, attempt: int) -> None: ...


class TCPState(enum.Enum):
    """RFC 9293 3.3.2."""
    CLOSED = "CLOSED"
    LISTEN = "LISTEN"
    SYN_SENT = "SYN-SENT"
    SYN_RECEIVED = "SYN-RECEIVED"
    ESTABLISHED = "ESTABLISHED"
    FIN_WAIT_1 = "FIN-WAIT-1"
    FIN_WAIT_2 = "FIN-WAIT-2"
    CLOSE_WAIT = "CLOSE-WAIT"
    CLOSING = "CLOSING"
    LAST_ACK = "LAST-ACK"
    TIME_WAIT = "TIME-WAIT"

    # Members compare by identity, so identity hashing is consistent; Enum's own __hash__
    # is Python code, and `state in {...}` runs on every segment.
    __hash__ = object.__hash__


CLOSED = TCPState.CLOSED
LISTEN = TCPState.LISTEN
SYN_SENT = TCPState.SYN_SENT
SYN_RECEIVED = TCPState.SYN_RECEIVED
ESTABLISHED = TCPState.ESTABLISHED
FIN_WAIT_1 = TCPState.FIN_WAIT_1
FIN_WAIT_2 = TCPState.FIN_WAIT_2
CLOSE_WAIT = TCPState.CLOSE_WAIT
CLOSING = TCPState.CLOSING
LAST_ACK = TCPState.LAST_ACK
TIME_WAIT = TCPState.TIME_WAIT

# States in which we may send data / in which received text is processed (RFC 9293 3.10.7.4).
_SEND_STATES = frozenset({ESTABLISHED, CLOSE_WAIT, FIN_WAIT_1, CLOSING, LAST_ACK})
_RECV_TEXT_STATES = frozenset({ESTABLISHED, FIN_WAIT_1, FIN_WAIT_2})
_SYNCHRONIZED = frozenset({ESTABLISHED, FIN_WAIT_1, FIN_WAIT_2, CLOSE_WAIT, CLOSING, LAST_ACK,
                           TIME_WAIT})
_APP_SEND_STATES = frozenset({SYN_SENT, SYN_RECEIVED, ESTABLISHED, CLOSE_WAIT})


@dataclass(slots=True)
class ConnectionStats:
    """Counters and gauges of one connection (gauges refreshed when ``conn.stats`` is read)."""
    segs_in: int = 0
    segs_out: int = 0
    bytes_in: int = 0            # payload octets received (including duplicates)
    bytes_out: int = 0           # payload octets sent (including retransmissions)
    retransmits: int = 0         # segments retransmitted, for any reason
    fast_retransmits: int = 0    # RFC 5681 3.2 fast retransmits (one per recovery episode)
    timeouts: int = 0            # RTO expirations (RFC 6298 rules (5.4)-(5.6))
    sack_retransmits: int = 0    # retransmissions chosen from the SACK scoreboard (RFC 6675)
    retransmitted_bytes: int = 0
    dupacks_in: int = 0
    ooo_segments: int = 0        # segments queued out of order
    bytes_acked: int = 0         # our octets the peer acknowledged
    bytes_received: int = 0      # in-order octets delivered (RCV.NXT advance)
    dropped_segments: int = 0    # unacceptable / invalid segments dropped
    paws_drops: int = 0
    challenge_acks: int = 0
    challenge_acks_throttled: int = 0
    oow_acks_throttled: int = 0  # ACKs not sent for unacceptable pure ACKs (rate limit)
    rst_in: int = 0
    rst_out: int = 0
    zero_window_probes: int = 0
    keepalive_probes: int = 0
    recoveries: int = 0          # fast-recovery episodes
    rack_lost: int = 0           # segments RACK deemed lost (RFC 8985 6.2 step 5, 6.3)
    reorder_timeouts: int = 0    # RACK reordering timer expirations
    tso_segments: int = 0        # TSO super-segments sent (each counted once in segs_out)
    tlp_probes: int = 0          # tail loss probes sent (RFC 8985 7.3)
    tlp_recoveries: int = 0      # single losses repaired by a probe (RFC 8985 7.4.2)
    rescue_retransmits: int = 0  # RFC 6675 NextSeg() rule 4
    dsacks_in: int = 0           # D-SACK blocks received (RFC 2883 4)
    dsacks_out: int = 0          # D-SACK blocks sent (RFC 2883 4.1)
    spurious_undos: int = 0      # congestion responses undone (RFC 3522 / RFC 3708, RFC 4015)
    srtt: float | None = None
    rttvar: float | None = None
    rto: float = 0.0
    cwnd: int = 0
    ssthresh: int = 0
    pipe: int = 0
    snd_wnd: int = 0
    rcv_wnd: int = 0
    mss: int = 0
    peer_mss: int = 0
    wscale_snd: int = 0
    wscale_rcv: int = 0
    sack_ok: bool = False
    ts_ok: bool = False
    congestion_control: str = ""
    pacing_rate: float = 0.0     # bytes/s the sender paces at (0: not pacing; tcp_info's)
    delivery_rate: float = 0.0   # bytes/s, the latest delivery-rate sample (0: none kept)


PACING_CREDIT = 0.002   # seconds of sending a late pacing wake-up may catch up on


class TCPConnection:
    """A TCB.  See the module docstring; public methods are the team contract."""

    _SEND_STATES = _SEND_STATES     # for the loss-recovery regimes (tcpstack/tcp/recovery.py)

    def __init__(self, local_port: int, remote_port: int, *, iss: int, config: TCPConfig,
                 now: float, eno: "ENOHandshake | None" = None, ts_offset: int = 0) -> None:
        self.local_port = local_port
        self.remote_port = remote_port
        self.config = config
        self.eno = eno
        self.state = CLOSED
        # Told of every state change (see _set_state); the tracer may set it on a live TCB.
        self.state_observer = config.state_observer
        # Told of the congestion state after every ACK and RTO (see _sample).
        self.sample_observer = config.sample_observer
        self._now = now
        self._ts_offset = ts_offset & MASK
        self._stats = ConnectionStats()
        self._events: deque[Event] = deque()
        self._out: list[TCPSegment] = []
        self._terminated = False
        self._terminal_error: BaseException | None = None
        self._terminated_reported = False
        self._passive = False

        # --- send sequence space (RFC 9293 3.3.1), unwrapped ---
        iss &= MASK
        self.iss = iss
        self.snd_una = iss
        self.snd_nxt = iss
        self.snd_wnd = 0
        self.snd_wl1 = 0
        self.snd_wl2 = iss
        self.max_snd_wnd = 0
        self.snd_wscale = 0          # shift applied to the peer's window field
        # --- receive sequence space ---
        self.irs = 0
        self.rcv_nxt = 0
        self.rcv_adv = 0             # right edge we advertised: never moves left (3.8.6.2.2)
        self.rcv_wscale = 0          # our shift (what we sent in the SYN)
        # Receive buffer (the window's ceiling), auto-tuned per connection by _tuner
        # (tcpstack/tcp/autotune.py) unless fixed (None).
        self._rcv_buf = config.recv_buffer
        self._tuner: ReceiveBufferTuner | None = (
            ReceiveBufferTuner() if config.rcvbuf_autotune
            and config.recv_buffer_max > config.recv_buffer else None)
        self._rcv_wscale_offer = self.wscale_for(config) if config.window_scaling else None
        # Send buffer (what the application may queue, unacknowledged + unsent): starts at
        # config.send_buffer and, with sndbuf_autotune, follows twice the congestion window
        # up to send_buffer_max (Linux tcp_sndbuf_expand, tcp_wmem max 4 MB), so a window
        # larger than the initial buffer is never starved by it; a SO_SNDBUF fixes it.
        self._snd_limit = config.send_buffer
        self._snd_auto = config.sndbuf_autotune and config.send_buffer_max > config.send_buffer

        # --- negotiated options ---
        self.peer_mss = DEFAULT_PEER_MSS
        self._pmtu_mss: int | None = None
        self.sack_ok = False
        self.ts_ok = False
        self.ts_recent = 0
        self._ts_recent_age = now
        self.last_ack_sent = 0
        self._syn_opts: tuple[bool, bool, bool] = (False, False, False)  # (ws, sackok, ts) sent
        self._syn_want: tuple[bool, bool, bool] = (False, False, False)
        self._negotiated = False
        self._syn_window = 0
        self._eno_extra = 4
        self._mss_hdr = config.mss   # max TCP payload + options per segment
        self.snd_mss = config.mss    # payload bytes per full segment (without TS)
        self._rcv_mss = min(config.mss, DEFAULT_PEER_MSS)

        # --- send buffer: octets from _buf_seq on (unacked then unsent) ---
        self._sndbuf = SendBuffer()
        self._buf_seq = iss + 1
        self._fin_queued = False     # CLOSE called: FIN after the queued data
        self._fin_seq = -1           # sequence number of our FIN once queued
        self._write_shut = False
        self._orphaned = False       # close() called: nobody reads any more
        self._reset_on_data = True   # ... and data arriving then resets (RFC 1122 4.2.2.13)

        # --- receive side ---
        self._ooo = ReassemblyQueue(config.max_ooo_segments)
        self._rcv_fin_seq: int | None = None   # a FIN seen out of order at this seq
        self._fin_received = False
        self._paused = False
        self._rbuf: list[bytes | memoryview] = []
        self._rbuf_len = 0
        self._eof_deferred = False
        self._ack_now = False
        self._quickacks = 0          # in-order segments still to ACK at once (after a loss sign)
        self._ack_burst_t = -1.0     # the instant of the last every-second-segment ACK ...
        self._ack_burst_n = 0        # ... and how many were built at that instant (one batch)
        self._unacked_bytes = 0      # in-order octets received since our last ACK

        # --- RTT / RTO (RFC 6298) and congestion control ---
        self._rtt = RTTEstimator(config.rto_initial, config.rto_min, config.rto_max)
        self.cc: CongestionControl = self._make_cc(config.mss, now)
        self._rtt_seq: int | None = None   # Karn timing of one segment (no timestamps)
        self._ts_karn: int | None = None   # Karn for timestamps (see _karn_mark)
        self._ts_karn_until = iss
        self._rtt_time = 0.0
        self._rtx_count = 0          # consecutive RTO expirations without progress
        self._syn_attempts = 0
        self._syn_time = now
        self._stall_since = now
        self._last_send = now
        self._last_recv = now

        # --- loss recovery (RFC 5681, 6582, 6675) ---
        self.dupacks = 0
        self._in_recovery = False    # fast recovery
        self._in_loss = False        # recovery after an RTO (go-back-N over the holes)
        self._recover = iss          # RecoveryPoint (RFC 6675) / recover (RFC 6582), +1
        self._rxt_nxt = iss          # one past the highest retransmitted octet (HighRxt+1)
        self._fast_pending = False   # the next retransmission is the fast retransmit
        self._sb = SackScoreboard()
        self._rq: SendQueue | None = None   # per-segment records (SACK connections, and
                                            # any whose congestion control samples rates)
        self._rate: RateSampler | None = None   # delivery-rate sampling (cc.wants_rate_samples)
        # The regime's decisions (tcpstack/tcp/recovery.py): NewReno until the handshake
        # shows SACK (then RFC 6675, or RACK-TLP per config.rack; _finish_negotiation).
        self._recovery: LossRecovery = NewRenoRecovery()
        # RACK-TLP timers (RFC 8985 6.2 reordering, 7.2 PTO); the probe state is the
        # RackRecovery's (tcpstack/tcp/tlp.py).
        self._t_rack: float | None = None
        self._t_tlp: float | None = None
        self._tlp_rearm = False      # data sent or acknowledged since the PTO was armed
        # Undo of spurious congestion responses (RFC 3522 Eifel, RFC 3708, RFC 4015).
        self._undo = SpuriousUndo(iss)
        self._dsack: tuple[int, int] | None = None   # receiver: D-SACK block to report
        self.reopen_syn: TCPSegment | None = None  # RFC 6191: new SYN that ended TIME-WAIT

        # --- timers: absolute deadlines or None ---
        self._t_rtx: float | None = None
        self._t_persist: float | None = None
        self._t_delack: float | None = None
        self._t_keepalive: float | None = None
        self._t_close: float | None = None     # TIME_WAIT 2*MSL or FIN_WAIT_2 timeout
        self._t_sws: float | None = None
        # Pacing (tcpstack/tcp/rate.py's consumer BBR sets cc.pacing_rate; config.pacing
        # for the others): the earliest time the next data may leave, and its timer.
        self._pace_next = 0.0
        self._t_pace: float | None = None
        self._pace_held = False      # data waited for the pacing time (a late wake-up may
                                     # then catch up, PACING_CREDIT; after idle it may not)
        self._persisting = False
        self._persist_backoff = 0
        self._persist_unanswered = 0
        self._sws_force = False
        self._ka_probes = 0
        self._soft_error: BaseException | None = None
        self._chack_count = 0
        self._chack_start = -1e18
        self._last_oow_ack = -1e18

    # ------------------------------------------------------------------ helpers

    @staticmethod
    def wscale_for(config: TCPConfig) -> int:
        """RFC 7323 2.3: the smallest shift (<= 14) that lets the largest buffer the
        connection may have be advertised: the auto-tuning maximum, so growth is never
        capped by the shift chosen in the SYN."""
        biggest = config.recv_buffer
        if config.rcvbuf_autotune and config.recv_buffer_max > biggest:
            biggest = config.recv_buffer_max
        shift = 0
        while (biggest >> shift) > 0xFFFF and shift < 14:
            shift += 1
        return shift

    def _make_cc(self, mss: int, now: float) -> CongestionControl:
        # (TCPConfig checked the name)
        return make_congestion_control(self.config.congestion_control, mss, now)

    def _ts(self, now: float) -> int:
        """RFC 7323 5.4 / 7.1: 1 ms timestamp clock with a per-connection offset."""
        return (int(now * 1000) + self._ts_offset) & MASK

    def __repr__(self) -> str:
        return (f"<TCPConnection {self.local_port}->{self.remote_port} {self.state.name} "
                f"una={self.snd_una & MASK} nxt={self.snd_nxt & MASK} rcv={self.rcv_nxt & MASK}>")

    @property
    def stats(self) -> ConnectionStats:
        s = self._stats
        r = self._rtt
        s.srtt = r.srtt
        s.rttvar = r.rttvar
        s.rto = r.rto
        s.cwnd = self.cc.cwnd
        s.ssthresh = self.cc.ssthresh
        s.pipe = self._pipe()
        s.snd_wnd = self.snd_wnd
        s.rcv_wnd = max(0, self.rcv_adv - self.rcv_nxt)
        s.mss = self.snd_mss
        s.peer_mss = self.peer_mss
        s.wscale_snd = self.snd_wscale
        s.wscale_rcv = self.rcv_wscale
        s.sack_ok = self.sack_ok
        s.ts_ok = self.ts_ok
        s.congestion_control = self.cc.name
        prate = self.cc.pacing_rate
        if not prate and self.config.pacing:
            prate = self._internal_pacing_rate()
        cap = self.config.max_pacing_rate
        s.pacing_rate = cap if cap and prate > cap else prate
        s.delivery_rate = self._rate.delivery_rate if self._rate is not None else 0.0
        return s

    @property
    def rto(self) -> float:
        return self._rtt.rto

    @property
    def ack_span(self) -> int:
        """Bytes of two full-sized segments from the peer: the most an ACK may leave
        unacknowledged (RFC 5681 4.2), for the stack's ACK coalescing (host/acks.py)."""
        return 2 * self._rcv_mss

    @property
    def is_terminated(self) -> bool:
        return self._terminated

    @property
    def send_buffer_used(self) -> int:
        return len(self._sndbuf)

    @property
    def send_buffer_free(self) -> int:
        if self._write_shut or self.state not in _APP_SEND_STATES:
            return 0
        free = self._snd_limit - len(self._sndbuf)
        return free if free > 0 else 0

    @property
    def in_recovery(self) -> bool:
        return self._in_recovery or self._in_loss

    @property
    def loss_recovery(self) -> str:
        """The loss-recovery regime: "newreno", "sack" (RFC 6675) or "rack" (RFC 8985)."""
        return self._recovery.name

    # The undo and probe state by their former names (tests look at them).
    @property
    def _undo_cc(self) -> object | None:
        return self._undo.cc_state

    @property
    def _undo_cwnd(self) -> int:
        return self._undo.cwnd

    @property
    def _tlp_end(self) -> int | None:
        tlp = getattr(self._recovery, "tlp", None)
        return tlp.end if tlp is not None else None

    # ------------------------------------------------------------------ user calls

    def connect(self, now: float) -> None:
        """Active OPEN (RFC 9293 3.10.1): send SYN, enter SYN-SENT."""
        if self.state is not CLOSED or self._terminated:
            raise ConnectionAbortedLocallyError("connect() on a connection that is not fresh")
        self._now = now
        self._set_state(SYN_SENT, "active OPEN, snd SYN")
        self._choose_syn_options(peer=None)
        self.snd_nxt = self.iss + 1
        self._syn_time = now
        self._emit_syn(now)
        self._t_rtx = now + self._rtt.rto

    def accept_syn(self, syn: TCPSegment, now: float) -> None:
        """Passive OPEN: this SYN arrived for a listener (RFC 9293 3.10.7.2)."""
        if self.state not in (CLOSED, LISTEN) or self._terminated:
            raise ConnectionAbortedLocallyError("accept_syn() on a connection that is not fresh")
        self._now = now
        self._passive = True
        self._stats.segs_in += 1
        self._last_recv = now
        self.irs = syn.seq & MASK
        self.rcv_nxt = self.irs + 1
        self.peer_mss = syn.mss if syn.mss else self._default_send_mss()   # MUST-15
        if syn.tsval is not None:
            self.ts_recent = syn.tsval
            self._ts_recent_age = now
        if self.eno is not None and self.eno.active:
            # Before building the SYN-ACK, so it can depend on the peer's SYN (RFC 8547).
            self.eno.on_receive(syn.flags, syn.eno)
        self._choose_syn_options(peer=syn)
        self._set_state(SYN_RECEIVED, "rcv SYN, snd SYN,ACK")
        self.snd_nxt = self.iss + 1
        self._syn_time = now
        self._emit_syn(now)                       # fixes the options we offer ...
        self._finish_negotiation(syn)             # ... so the outcome is known now
        self._t_rtx = now + self._rtt.rto

    def accept_cookie(self, syn: TCPSegment, syn_opts: tuple[bool, bool, bool],
                      syn_window: int, now: float) -> None:
        """Passive OPEN completed statelessly (SYN cookie, RFC 4987 3.6): rebuild the
        SYN-RECEIVED state that our cookie SYN-ACK (ISN = self.iss, WS/SACK/TS offered =
        `syn_opts`, window `syn_window`) implied, sending nothing.  `syn` is the peer's
        SYN as recovered from the cookie; the caller then hands the ACK to receive()."""
        if self.state not in (CLOSED, LISTEN) or self._terminated:
            raise ConnectionAbortedLocallyError("accept_cookie() on a connection that is not fresh")
        self._now = now
        self._passive = True
        self.irs = syn.seq & MASK
        self.rcv_nxt = self.irs + 1
        if self.eno is not None and self.eno.active:
            self.eno.on_receive(syn.flags, syn.eno)
        self._syn_want = self._syn_opts = syn_opts
        self._set_state(SYN_RECEIVED, "SYN cookie validated")
        self.snd_nxt = self.iss + 1
        self._syn_time = now
        self._syn_attempts = -1    # the SYN-ACK's send time is unknown: no clock RTT sample
        self.rcv_adv = self.rcv_nxt + syn_window
        self.last_ack_sent = self.rcv_nxt
        self._finish_negotiation(syn)
        self._t_rtx = now + self._rtt.rto

    def send(self, data: bytes | bytearray | memoryview, owned: bool = False) -> int:
        """SEND (RFC 9293 3.10.2): queue up to send_buffer_free octets; returns how many.
        owned: the caller hands the buffer over and will not change it, so a mutable one is
        kept by reference too (see SendBuffer.append)."""
        if self._write_shut or self.state not in _APP_SEND_STATES:
            err = self._terminal_error
            if isinstance(err, ConnectionError):
                raise type(err)(f"cannot send: {err}")
            raise ConnectionAbortedLocallyError(
                f"cannot send on {self.local_port}->{self.remote_port}: "
                + ("writing was shut down" if self._write_shut else f"state {self.state.name}"))
        n = len(data)
        rate = self._rate
        if rate is not None and n:
            # draft-cheng-iccrg-delivery-rate-estimation 3.4: is this write app-limited?
            rq = self._rq
            rate.check_app_limited(self._buf_seq + len(self._sndbuf) - self.snd_nxt,
                                   self.snd_mss, self._pipe(), self.cc.cwnd,
                                   rq.pending_lost if rq is not None else 0)
        free = self._snd_limit - len(self._sndbuf)
        if n > free:
            n = free if free > 0 else 0
            if n == 0:
                return 0
            data = memoryview(data)[:n]
        self._sndbuf.append(data, owned)
        return n

    def shutdown_write(self, now: float) -> None:
        """CLOSE (RFC 9293 3.10.4): FIN after everything queued; half-close."""
        self._now = now
        if self._write_shut:
            return
        st = self.state
        if st in (CLOSED, LISTEN):
            return
        self._write_shut = True
        self._fin_queued = True
        self._fin_seq = self._buf_seq + len(self._sndbuf)
        if st is ESTABLISHED:
            self._set_state(FIN_WAIT_1, "CLOSE, snd FIN")
        elif st is CLOSE_WAIT:
            self._set_state(LAST_ACK, "CLOSE, snd FIN")
        # SYN-SENT / SYN-RECEIVED: the FIN waits for ESTABLISHED (3.10.4; for SYN-SENT we
        # keep the connection instead of deleting it, so queued data still goes out).

    def close(self, now: float, *, reset_on_data: bool = True) -> None:
        """Full CLOSE: the application will neither write nor read any more.  Like
        shutdown_write(), plus: unread data, or data arriving later, resets the connection
        (RFC 1122 4.2.2.13), and FIN-WAIT-2 is bounded by config.fin_wait_2_timeout.
        reset_on_data=False: the layer above still takes what arrives and decides itself
        (tcpcrypt: the peer's FINp frame is stream bytes but not application data)."""
        self._now = now
        self._orphaned = True
        self._reset_on_data = reset_on_data
        if reset_on_data and self._rbuf and self.state in _SYNCHRONIZED:
            self.abort(now)
            return
        self.shutdown_write(now)
        if self.state is FIN_WAIT_2 and self._t_close is None:
            self._t_close = now + self.config.fin_wait_2_timeout

    def abort(self, now: float, *, data_after_close: bool = False) -> None:
        """ABORT (RFC 9293 3.10.5): RST if synchronized, CLOSED.  data_after_close: the
        RFC 1122 4.2.2.13 reset decided by the layer above (tcpcrypt) after the TCB already
        took the peer's FIN along with that data, so also from CLOSING / LAST-ACK /
        TIME-WAIT, as the TCB itself would have reset before taking the FIN."""
        self._now = now
        if self._terminated:
            return
        if self.state in (SYN_RECEIVED, ESTABLISHED, FIN_WAIT_1, FIN_WAIT_2, CLOSE_WAIT) or (
                data_after_close and self.state in _SYNCHRONIZED):
            self._send_rst(self.snd_nxt, now)
        self._terminate(ConnectionAbortedLocallyError(
            f"connection {self.local_port}->{self.remote_port} aborted locally"), "ABORT")

    def pause_reading(self) -> None:
        self._paused = True

    @property
    def reading_paused(self) -> bool:
        """Received data is held (not handed on as events) until resume_reading()."""
        return self._paused

    def resume_reading(self) -> None:
        if not self._paused:
            return
        self._paused = False
        if self._rbuf:
            data = b"".join(self._rbuf) if len(self._rbuf) > 1 else self._rbuf[0]
            self._rbuf = []
            self._rbuf_len = 0
            self._events.append(DataReceived(data))
        if self._eof_deferred:
            self._eof_deferred = False
            self._events.append(EndOfStream())
        if self._tuner is not None:
            self._rcv_space_adjust(self._now)
        # RFC 9293 3.8.6.2.2: a window update once the window opens by >= min(buf/2, MSS).
        if self.state in _SYNCHRONIZED and self.state is not TIME_WAIT:
            edge = self.rcv_nxt + self._rcv_buf
            if edge - self.rcv_adv >= min(self._rcv_buf // 2, self._rcv_mss):
                self._ack_now = True

    def next_event(self) -> Event | None:
        return self._events.popleft() if self._events else None

    def icmp_error(self, error: BaseException, now: float, *, hard: bool) -> None:
        """RFC 1122 4.2.3.9 / RFC 5461: a hard error during SYN-SENT aborts; otherwise the
        error is remembered and reported if the connection later times out."""
        self._now = now
        if self._terminated:
            return
        if hard and self.state is SYN_SENT:
            self._terminate(error)
        else:
            self._soft_error = error

    def set_path_mtu(self, mtu: int) -> None:
        """PMTUD (RFC 1191 / RFC 8201): lower the effective MSS; resend what was in flight
        at the new size (not a congestion signal).

        Floors, so that one forged ICMP cannot shrink segments to a few bytes: IPv6 never
        goes below the minimum link MTU, 1280 (RFC 8201 4: "a node MUST NOT reduce its
        estimate of the Path MTU below the IPv6 minimum link MTU"; a smaller PTB value is
        taken as 1280).  IPv4: RFC 1191 3 only forbids going below 68; like Linux
        (net.ipv4.route.min_pmtu) we take values below 552 as 552, i.e. an MSS of 512.
        Unlike Linux we keep DF set then, so a real path below 552 bytes stays unusable."""
        v6 = self.config.ip_header_size >= 40
        floor = IPV6_MIN_MTU if v6 else IPV4_MIN_PMTU
        if mtu < floor:
            mtu = floor
        mss = mtu - self.config.ip_header_size - 20
        if mss < MIN_MSS:
            mss = MIN_MSS
        if self._pmtu_mss is not None and mss >= self._pmtu_mss:
            return
        old = self._mss_hdr
        self._pmtu_mss = mss
        self._update_mss()
        if self._mss_hdr < old and self.snd_nxt > self.snd_una and self.state in _SEND_STATES:
            self._recovery.on_pmtu_drop(self)
            self._in_recovery = False
            self._in_loss = True
            self._recover = self.snd_nxt
            self._rxt_nxt = self.snd_una
            self._rtt_seq = None

    # ------------------------------------------------------------------ option negotiation

    def _choose_syn_options(self, peer: TCPSegment | None) -> None:
        """Which of WS / SACK-permitted / TS go in our SYN or SYN-ACK (RFC 7323 2.2, 3.2;
        RFC 2018 2: in a SYN-ACK only if the peer's SYN carried them)."""
        cfg = self.config
        ws = cfg.window_scaling and (peer is None or peer.wscale is not None)
        sackok = cfg.sack and (peer is None or peer.sack_permitted)
        ts = cfg.timestamps and (peer is None or peer.tsval is not None)
        self._syn_want = (ws, sackok, ts)
        self._syn_opts = (ws, sackok, ts)

    # The SYN's option bytes as tcpstack/wire/tcp.py lays them out (kept under this name
    # for the stack core's SYN-cookie path).
    _syn_option_len = staticmethod(syn_option_space)

    def _fit_syn_options(self, ws: bool, sackok: bool, ts: bool,
                         eno: tuple[bytes, ...]) -> tuple[bool, bool, bool]:
        # Drop order when over 40 bytes: TS, then SACK-permitted, then WS (module docstring).
        if syn_option_space(ws, sackok, ts, eno) > MAX_OPTION_SPACE:
            ts = False
        if syn_option_space(ws, sackok, ts, eno) > MAX_OPTION_SPACE:
            sackok = False
        if syn_option_space(ws, sackok, ts, eno) > MAX_OPTION_SPACE:
            ws = False
        return ws, sackok, ts

    def _default_send_mss(self) -> int:
        """RFC 9293 3.7.1 MUST-15: the send MSS assumed when the peer's SYN has no MSS option,
        536 (576 - 40) for IPv4 or 1220 (1280 - 60) for IPv6; the family is read from
        config.ip_header_size (40 for IPv6, set by the stack)."""
        return DEFAULT_PEER_MSS_V6 if self.config.ip_header_size >= 40 else DEFAULT_PEER_MSS

    def _finish_negotiation(self, syn: TCPSegment) -> None:
        """Both SYNs known: fix WS / SACK / TS / MSS for the connection's life."""
        self._negotiated = True
        ws, sackok, ts = self._syn_opts
        cfg = self.config
        if ws and syn.wscale is not None:
            self.snd_wscale = min(syn.wscale, 14)       # RFC 7323 2.3
            self.rcv_wscale = self._rcv_wscale_offer or 0
        else:
            self.snd_wscale = 0
            self.rcv_wscale = 0
        self.sack_ok = sackok and syn.sack_permitted and cfg.sack
        if self.sack_ok:
            # The queue gets the timestamp clock as a function of the offset only: a bound
            # method would make a reference cycle (TCB -> queue -> TCB), leaving every closed
            # connection to the cyclic garbage collector.
            off = self._ts_offset
            self._rq = SendQueue(lambda now: (int(now * 1000) + off) & MASK)
            # RFC 8985 4: RACK-TLP requires SACK; else RFC 6675 on the same records.
            self._recovery = RackRecovery(self._rq) if cfg.rack else SackRecovery(self._rq)
        self.ts_ok = ts and syn.tsval is not None and cfg.timestamps
        if self.ts_ok:
            self.ts_recent = syn.tsval or 0
            self._ts_recent_age = self._now
        self.peer_mss = syn.mss if syn.mss else self._default_send_mss()   # MUST-15
        self._update_mss()
        self._rcv_mss = min(self.config.mss - (TS_OVERHEAD if self.ts_ok else 0),
                            DEFAULT_PEER_MSS)

    def _update_mss(self) -> None:
        # RFC 9293 3.7.1: Eff.snd.MSS = min(SendMSS, MMS_S) minus the TCP options we carry.
        m = min(self.peer_mss, self.config.mss)
        if self._pmtu_mss is not None and self._pmtu_mss < m:
            m = self._pmtu_mss
        if m < MIN_MSS:
            m = MIN_MSS
        self._mss_hdr = m
        self.snd_mss = max(m - (TS_OVERHEAD if self.ts_ok else 0), 1)
        self.cc.set_mss(self.snd_mss)

    # ------------------------------------------------------------------ segment building

    def _window_field(self) -> int:
        """The window to advertise (scaled field), applying receiver SWS avoidance (RFC 9293
        3.8.6.2.2) and never moving the right edge left by a whole scale unit (3.8.6.2.2,
        RFC 7323 2.4)."""
        rcv_nxt = self.rcv_nxt
        free = self._rcv_buf - self._rbuf_len
        edge = rcv_nxt + (free if free > 0 else 0)
        adv = self.rcv_adv
        if adv < rcv_nxt:
            adv = rcv_nxt
        if edge > adv:
            buf = self._rcv_buf
            thresh = self._rcv_mss if self._rcv_mss < buf >> 1 else buf >> 1
            if edge - adv >= thresh:
                adv = edge
        shift = self.rcv_wscale
        wnd = adv - rcv_nxt
        # Rounded down to the scale's granularity: the edge shown may sit up to 2^shift - 1
        # octets left of an earlier one (RFC 7323 2.4 allows exactly this), while rcv_adv
        # keeps the furthest edge ever offered and every segment inside it is still accepted
        # (2.4 receiver rules 1 and 2).  Rounding up instead would creep past the buffer by
        # up to 2^shift - 1 octets per ACK while the application is not reading.
        field = wnd >> shift
        if field > 0xFFFF:
            field = 0xFFFF
        edge2 = rcv_nxt + (field << shift)
        self.rcv_adv = edge2 if edge2 > self.rcv_adv else self.rcv_adv
        return field

    def _build(self, seq: int, flags: int, payload: Payload = b"", *,
               now: float, syn: bool = False) -> TCPSegment:
        tsval = None
        tsecr = 0
        mss = None
        wscale = None
        sackok = False
        sack: tuple[tuple[int, int], ...] = ()
        eno: tuple[bytes, ...] = ()
        ack = 0
        if syn:
            if self.eno is not None and self.eno.active:
                eno = self.eno.syn_options()
            if not self._negotiated:
                self._syn_opts = self._fit_syn_options(*self._syn_want, eno)
            ws, sackok, ts = self._syn_opts
            mss = self.config.mss
            if ws:
                wscale = self._rcv_wscale_offer
            if ts:
                tsval = self._ts(now)
                tsecr = self.ts_recent if flags & ACK else 0
            free = self._rcv_buf - self._rbuf_len
            window = free if free < 0xFFFF else 0xFFFF     # RFC 7323 2.2: never scaled in SYNs
            if flags & ACK:
                self.rcv_adv = max(self.rcv_adv, self.rcv_nxt + window)
            else:
                self._syn_window = window
        else:
            window = self._window_field() if flags & ACK else 0
            if self.ts_ok:
                tsval = self._ts(now)
                tsecr = self.ts_recent
            if self.eno is not None and self.eno.active:
                eno = self.eno.nonsyn_options()
                self._eno_extra = eno_option_space(eno)
            if self.sack_ok and flags & ACK and (self._ooo or self._dsack is not None):
                room = MAX_OPTION_SPACE - (TS_OVERHEAD if self.ts_ok else 0) \
                    - eno_option_space(eno)
                n = min(sack_blocks_fitting(room), 4)
                if n > 0:
                    blocks = []
                    if self._dsack is not None:
                        # RFC 2883 4: the D-SACK block first, in this one ACK only.
                        blocks.append(self._dsack)
                        self._dsack = None
                        self._stats.dsacks_out += 1
                    if self._ooo and n > len(blocks):
                        blocks += self._ooo.sack_blocks(n - len(blocks))
                    sack = tuple((s & MASK, e & MASK) for s, e in blocks)
        if flags & ACK:
            ack = self.rcv_nxt & MASK
            self.last_ack_sent = self.rcv_nxt
            self._ack_now = False
            self._t_delack = None
            self._unacked_bytes = 0
        st = self._stats
        st.segs_out += 1
        if payload:
            st.bytes_out += len(payload)
            self._last_send = now
        if syn or eno:
            return TCPSegment(self.local_port, self.remote_port, seq & MASK, ack, flags, window,
                              payload, mss=mss, wscale=wscale, sack_permitted=sackok,
                              sack_blocks=sack, tsval=tsval, tsecr=tsecr, eno=eno)
        # (the per-segment path: the SYN-only options keep their defaults)
        return TCPSegment(self.local_port, self.remote_port, seq & MASK, ack, flags, window,
                          payload, sack_blocks=sack, tsval=tsval, tsecr=tsecr)

    def _emit_syn(self, now: float) -> None:
        flags = SYN | ACK if self.state is SYN_RECEIVED else SYN
        self._out.append(self._build(self.iss, flags, now=now, syn=True))

    def _send_ack(self, now: float) -> None:
        self._out.append(self._build(self.snd_nxt, ACK, now=now))

    def _challenge_ack(self, now: float) -> None:
        """RFC 5961 3.2 / 4.2 / 5.2 challenge ACK, throttled per RFC 5961 7."""
        cfg = self.config
        if now - self._chack_start >= cfg.challenge_ack_interval:
            self._chack_start = now
            self._chack_count = 0
        if self._chack_count >= cfg.challenge_ack_limit:
            self._stats.challenge_acks_throttled += 1
            return
        self._chack_count += 1
        self._stats.challenge_acks += 1
        self._send_ack(now)

    def _oow_ack(self, now: float, seglen: int) -> None:
        """The ACK answering an unacceptable segment (3.10.7.4).  For segments without
        data it is rate limited (as Linux's tcp_invalid_ratelimit), so two stacks cannot
        ping-pong ACKs and a reordered pure ACK does not become a spurious duplicate ACK."""
        if seglen == 0:
            if now - self._last_oow_ack < self.config.oow_ack_interval:
                self._stats.oow_acks_throttled += 1
                return
            self._last_oow_ack = now
        self._send_ack(now)

    def _send_rst(self, seq: int, now: float) -> None:
        self._out.append(TCPSegment(self.local_port, self.remote_port, seq & MASK, 0, RST, 0))
        self._stats.rst_out += 1
        self._stats.segs_out += 1

    # ------------------------------------------------------------------ termination

    def _terminate(self, error: BaseException | None, why: str = "") -> None:
        if self._terminated:
            return
        self._set_state(CLOSED, why or (type(error).__name__ if error is not None else "closed"))
        self._terminated = True
        self._terminal_error = error
        self._t_rtx = self._t_persist = self._t_delack = self._t_keepalive = None
        self._t_close = self._t_sws = self._t_rack = self._t_tlp = None
        self._ack_now = False
        if not self._terminated_reported:
            self._terminated_reported = True
            self._events.append(ConnectionTerminated(error))

    def _set_state(self, new: TCPState, why: str) -> None:
        """Every state change goes through here (the arcs of RFC 9293 3.3.2 figure 5; `why`
        names the arc's event), so the state observer (config.state_observer, or one set on
        this TCB), when there is one, sees each one."""
        old = self.state
        if old is new:
            return
        self.state = new
        observer = self.state_observer
        if observer is not None:
            observer(self, StateChanged(old, new, why), self._now)

    def _report_closed(self) -> None:
        """Both directions closed cleanly (entering TIME-WAIT, or LAST-ACK -> CLOSED)."""
        if not self._terminated_reported:
            self._terminated_reported = True
            self._events.append(ConnectionTerminated(None))

    def _enter_time_wait(self, now: float, why: str) -> None:
        self._set_state(TIME_WAIT, why)
        self._t_rtx = self._t_persist = self._t_keepalive = self._t_sws = None
        self._t_rack = self._t_tlp = None
        self._t_close = now + 2 * self.config.msl      # RFC 9293 3.6.1
        self._report_closed()

    def _timeout_error(self, what: str) -> BaseException:
        if self._soft_error is not None:
            return self._soft_error
        return ConnectionTimeoutError(
            f"connection {self.local_port}->{self.remote_port} timed out ({what})")

    # ------------------------------------------------------------------ SEGMENT ARRIVES

    def receive(self, seg: TCPSegment, now: float) -> None:
        """RFC 9293 3.10.7: process one arriving segment, whatever the state."""
        self._now = now
        st = self._stats
        st.segs_in += 1
        plen = len(seg.payload)
        if plen:
            st.bytes_in += plen
        state = self.state
        if state is CLOSED or state is LISTEN:
            # 3.10.7.1: a segment for a closed TCB is answered with a reset.
            st.dropped_segments += 1
            if not seg.flags & RST and state is CLOSED:
                self._reset_for(seg)
            return
        # Malformed or unacceptable input is counted and dropped inside; an exception from
        # here is a bug of this code and propagates (the stack core counts it as an
        # internal error, logs it at ERROR and drops the packet: tests see it).
        if state is SYN_SENT:
            self._receive_syn_sent(seg, now)
        else:
            self._receive_other(seg, now)

    def _reset_for(self, seg: TCPSegment) -> None:
        if seg.flags & ACK:
            self._out.append(TCPSegment(self.local_port, self.remote_port, seg.ack, 0, RST, 0))
        else:
            self._out.append(TCPSegment(self.local_port, self.remote_port, 0,
                                        (seg.seq + seg.seg_len) & MASK, RST | ACK, 0))
        self._stats.rst_out += 1

    def _receive_syn_sent(self, seg: TCPSegment, now: float) -> None:
        """RFC 9293 3.10.7.3, SEGMENT ARRIVES in SYN-SENT, in the RFC's order."""
        st = self._stats
        flags = seg.flags
        ack_ok = False
        ack = 0
        # "first, check the ACK bit": it must acknowledge our SYN (ISS < SEG.ACK =< SND.NXT).
        if flags & ACK:
            ack = unwrap(seg.ack, self.snd_una)
            if ack <= self.iss or ack > self.snd_nxt:
                st.dropped_segments += 1
                if not flags & RST:
                    self._send_rst(seg.ack, now)
                return
            ack_ok = True
        # "second, check the RST bit": a reset of our SYN (RFC 5961 3.2 leaves SYN-SENT's
        # rule as it is: only with an acceptable ACK).
        if flags & RST:
            st.rst_in += 1
            if ack_ok:
                self._terminate(ConnectionRefusedByPeerError(
                    f"connection {self.local_port}->{self.remote_port} refused"), "rcv RST,ACK")
            else:
                st.dropped_segments += 1
            return
        # "third, check the security": no IP security compartments here, nothing to check.
        # "fourth, check the SYN bit"; "fifth, if neither of the SYN or RST bits is set
        # then drop the segment and return".
        if not flags & SYN:
            st.dropped_segments += 1
            return
        self._last_recv = now
        self.irs = seg.seq & MASK
        self.rcv_nxt = self.irs + 1
        self._finish_negotiation(seg)
        self._negotiated = True
        self.rcv_adv = self.rcv_nxt + self._syn_window
        if self.eno is not None and self.eno.active:
            self.eno.on_receive(flags, seg.eno)
        if ack_ok:
            # Our SYN is acknowledged: ESTABLISHED.
            self.snd_una = ack
            self._handshake_rtt(seg, now)
            self.snd_wnd = seg.window            # RFC 7323 2.2: the SYN-ACK window is unscaled
            self.max_snd_wnd = self.snd_wnd
            self.snd_wl1 = self.irs
            self.snd_wl2 = ack
            self._t_rtx = None
            self._rtx_count = 0
            self._established(now, "rcv SYN,ACK, snd ACK")
            self._send_ack(now)                  # the third segment (ENO options ride on it)
            if seg.payload or flags & FIN:
                # Data (or FIN) on a SYN-ACK: process it as text (3.10.7.3, "sixth").
                self._process_text(seg, self.irs, now)
        else:
            # Simultaneous open (3.10.7.3): SYN-RECEIVED, send SYN-ACK.
            self._set_state(SYN_RECEIVED, "simultaneous open: rcv SYN, snd SYN,ACK")
            self.snd_wnd = seg.window
            self.snd_wl1 = self.irs
            self.snd_wl2 = self.snd_una
            self._emit_syn(now)
            self._t_rtx = now + self._rtt.rto

    def _reopen_ok(self, syn: TCPSegment, seq: int) -> bool:
        """RFC 6191 2: with timestamps on both the old connection and the SYN, the SYN's
        TSval must exceed TS.Recent; otherwise (RFC 1122 4.2.2.13) its sequence number
        must exceed RCV.NXT."""
        if self.ts_ok and syn.tsval is not None:
            return seq_lt(self.ts_recent, syn.tsval)    # timestamps compare mod 2**32 too
        return seq > self.rcv_nxt

    def _handshake_rtt(self, seg: TCPSegment, now: float) -> None:
        if self.ts_ok and seg.tsecr:
            r = ((self._ts(now) - seg.tsecr) & MASK) / 1000.0
            if r < 600:
                self._rtt.sample(r)
                return
        if self._syn_attempts == 0:              # Karn: only an unretransmitted SYN
            self._rtt.sample(now - self._syn_time)
        elif self._syn_attempts > 0:             # (< 0: SYN cookie, keep the initial RTO)
            # RFC 6298 rule (5.7): the SYN timed out and no sample: RTO = 3 s for the data phase.
            self._rtt.reset_to(max(3.0, self.config.rto_min))

    def _established(self, now: float, why: str) -> None:
        self._set_state(ESTABLISHED, why)
        self.cc = cc = self._make_cc(self.snd_mss, now)
        if cc.wants_rate_samples:
            # Delivery-rate sampling on the per-segment records (a connection without SACK
            # keeps them for this alone), and the initial pacing rate (BBR).
            if self._rq is None:
                off = self._ts_offset
                self._rq = SendQueue(lambda now: (int(now * 1000) + off) & MASK)
            self._rate = self._rq.rate = RateSampler(now)
            cc.init_pacing_rate(self._rtt.srtt)
        self._stall_since = now
        self._recover = self.snd_una
        self._rxt_nxt = self.snd_una
        self._events.append(ConnectionEstablished())
        if self._fin_queued:
            self._set_state(FIN_WAIT_1, "CLOSE called before ESTABLISHED: snd FIN")
        if self.config.keepalive:
            self._t_keepalive = now + self.config.keepalive_idle

    def _receive_other(self, seg: TCPSegment, now: float) -> None:
        """RFC 9293 3.10.7.4, SEGMENT ARRIVES in SYN-RECEIVED and the synchronized states,
        step by step in the RFC's order ("first" ... "eighth", each marked below).  The
        common case (an acceptable ACK, with or without text) runs inline; the rarer
        outcomes of a step are methods named after it."""
        st = self._stats
        flags = seg.flags
        state = self.state
        rcv_nxt = self.rcv_nxt
        seq = rcv_nxt + (((seg.seq - rcv_nxt) + HALF) & MASK) - HALF    # seqnum.unwrap, inline
        payload = seg.payload
        plen = len(payload)
        seglen = plen + (1 if flags & SYN else 0) + (1 if flags & FIN else 0)   # SEG.LEN

        if state is TIME_WAIT and flags & (SYN | ACK | RST) == SYN and self._reopen_ok(seg, seq):
            # RFC 6191 2 / RFC 1122 4.2.2.13: a new SYN that is provably newer (timestamp,
            # else sequence number) ends TIME-WAIT; the owner hands it to the listener.
            self.reopen_syn = seg
            self._terminate(None, "rcv newer SYN (RFC 6191)")
            return

        # Before "first": RFC 7323 5.3 R1, PAWS; and RFC 7323 3.2: once timestamps are in
        # use, a non-RST segment without one is dropped.
        if self.ts_ok and not flags & RST:
            tsval = seg.tsval
            if tsval is None or ((tsval - self.ts_recent) & MASK >= HALF
                                 and tsval != self.ts_recent):
                if not self._disordered_ack(seg, tsval, seq, plen) \
                        and self._paws_reject(tsval, seq, plen, seglen, now):
                    return

        # "fourth, check the SYN bit", taken ahead of "first" as RFC 5961 4.2 requires: a
        # SYN in a synchronized state gets a challenge ACK whatever its sequence number.
        if flags & SYN and self._check_syn(seg, state, now):
            return

        # "first, check sequence number": the acceptability table (four cases by SEG.LEN
        # and RCV.WND).
        wnd = self.rcv_adv - rcv_nxt
        if wnd < 0:
            wnd = 0
        if seglen == 0:
            ok = seq == rcv_nxt if wnd == 0 else rcv_nxt <= seq < rcv_nxt + wnd
        elif wnd == 0:
            ok = False
        else:
            end = seq + seglen - 1
            ok = (rcv_nxt <= seq < rcv_nxt + wnd) or (rcv_nxt <= end < rcv_nxt + wnd)
        zero_window_allowance = False
        if not ok:
            if wnd == 0 and seq == rcv_nxt and not flags & RST:
                # "special allowance ... to accept valid ACKs, URGs, and RSTs": process the
                # ACK field, drop the text (a zero-window probe), answer with an ACK.
                zero_window_allowance = True
            else:
                self._unacceptable(seg, seq, plen, seglen, state, now)
                return

        # "second, check the RST bit" (with RFC 5961 3.2).
        if flags & RST:
            self._check_rst(seq, state, now)
            return

        # "third, check security": no IP security compartments here, nothing to check.

        # The segment is acceptable: the peer is alive (keepalive, 3.8.4), TS.Recent
        # follows it (RFC 7323 4.3), the ENO negotiator sees its options (RFC 8547).
        self._last_recv = now
        self._ka_probes = 0
        if self._t_keepalive is not None:
            self._t_keepalive = now + self.config.keepalive_idle
        if self.ts_ok and seg.tsval is not None and seq <= self.last_ack_sent:
            if (seg.tsval - self.ts_recent) & MASK < HALF:
                self.ts_recent = seg.tsval
                self._ts_recent_age = now
        if self.eno is not None and self.eno.active:
            self.eno.on_receive(flags, seg.eno)

        # "fifth, check the ACK field": "if the ACK bit is off, drop the segment".
        if not flags & ACK:
            st.dropped_segments += 1
            return
        snd_una = self.snd_una
        ack = snd_una + (((seg.ack - snd_una) + HALF) & MASK) - HALF    # seqnum.unwrap, inline
        if state is SYN_RECEIVED:
            if not self._ack_of_syn(seg, seq, ack, now):
                return
            state = self.state
        else:
            # RFC 5961 5.2: (SND.UNA - MAX.SND.WND) <= SEG.ACK <= SND.NXT, else ACK and drop.
            if ack > self.snd_nxt or ack < snd_una - self.max_snd_wnd:
                st.dropped_segments += 1
                self._oow_ack(now, seglen)
                return
            # ESTABLISHED and on: SND.UNA, retransmission, congestion control, window update,
            # and FIN-WAIT-1/CLOSING/LAST-ACK when our FIN is acknowledged.
            self._process_ack(seg, seq, ack, plen, now)
            if self._terminated:
                return
            state = self.state

        # "sixth, check the URG bit": urgent data is delivered inline (RFC 6093); nothing
        # to do beyond accepting the pointer.

        # "seventh, process the segment text" and "eighth, check the FIN bit"
        # (_process_text, _receive_fin).
        if zero_window_allowance:
            if plen or flags & FIN:
                self._send_ack(now)
            return
        if state is TIME_WAIT:
            if flags & FIN:
                # "eighth", TIME-WAIT: a retransmitted FIN: acknowledge it and restart the
                # 2 MSL timeout.
                self._send_ack(now)
                self._t_close = now + 2 * self.config.msl
            return
        if plen or flags & FIN:
            if state in _RECV_TEXT_STATES:
                self._process_text(seg, seq, now)
            elif plen:
                # "seventh", CLOSE-WAIT, CLOSING, LAST-ACK: text after the peer's FIN is
                # ignored.
                st.dropped_segments += 1

    def _disordered_ack(self, seg: TCPSegment, tsval: int | None, seq: int,
                        plen: int) -> bool:
        """A pure ACK that was merely overtaken by later ACKs (ACK reordering): PAWS (RFC
        7323 5.3 R1) would drop it, and with it the SACK and D-SACK blocks that loss
        detection and undo need (RFC 2883, RFC 3708), though it can do no harm: it carries
        no data, moves neither SND.UNA nor the window, and its TSval is not used (TS.Recent
        is only advanced, 4.3).  Accepted as Linux's tcp_disordered_ack() does (relaxed to
        ACKs below SND.UNA, whose only use here is their SACK information), provided the
        TSval lies within one RTO of TS.Recent (1 ms ticks assumed)."""
        if tsval is None or plen or seg.flags & (SYN | FIN | RST | ACK) != ACK \
                or seq != self.rcv_nxt or not self.sack_ok:
            return False
        snd_una = self.snd_una
        ack = snd_una + (((seg.ack - snd_una) + HALF) & MASK) - HALF
        if ack > snd_una or ack < snd_una - self.max_snd_wnd:
            return False
        if ack == snd_una and (seg.window << self.snd_wscale) != self.snd_wnd:
            return False                     # it could update the window: not harmless
        return (self.ts_recent - tsval) & MASK <= max(1, int(self._rtt.rto * 1000))

    def _paws_reject(self, tsval: int | None, seq: int, plen: int, seglen: int,
                     now: float) -> bool:
        """RFC 7323 5.3 R1 (and 3.2) for a segment without a timestamp or with one older
        than TS.Recent: True when it is dropped (answered with an ACK, R1)."""
        st = self._stats
        if tsval is None:
            st.dropped_segments += 1
            return True
        if now - self._ts_recent_age > PAWS_IDLE:
            self.ts_recent = tsval          # R1: TS.Recent too old to trust (5.5)
            return False
        st.paws_drops += 1
        st.dropped_segments += 1
        if plen and seq < self.rcv_nxt:
            self._note_duplicate(seq, min(seq + plen, self.rcv_nxt))
        self._oow_ack(now, seglen)
        return True

    def _check_syn(self, seg: TCPSegment, state: TCPState, now: float) -> bool:
        """3.10.7.4 "fourth" with RFC 5961 4.2: True when the SYN was dealt with (our
        SYN-ACK again for a retransmitted SYN in SYN-RECEIVED, else a challenge ACK); a
        SYN with RST goes on to the RST check."""
        flags = seg.flags
        if state is SYN_RECEIVED and seg.seq & MASK == self.irs and not flags & (ACK | RST):
            self._emit_syn(now)
            return True
        if not flags & RST:
            self._stats.dropped_segments += 1
            self._challenge_ack(now)
            return True
        return False

    def _unacceptable(self, seg: TCPSegment, seq: int, plen: int, seglen: int,
                      state: TCPState, now: float) -> None:
        """3.10.7.4 "first": "If an incoming segment is not acceptable, an acknowledgment
        should be sent in reply (unless the RST bit is set ...)" and the segment dropped."""
        self._stats.dropped_segments += 1
        if not seg.flags & RST:
            if plen and seq < self.rcv_nxt:
                self._note_duplicate(seq, min(seq + plen, self.rcv_nxt))   # RFC 2883 4.1.1
            self._oow_ack(now, seglen)
            if state is TIME_WAIT and seg.flags & FIN:
                # The peer's FIN again: ACK it and restart 2 MSL (3.10.7.4 "eighth").
                self._t_close = now + 2 * self.config.msl

    def _check_rst(self, seq: int, state: TCPState, now: float) -> None:
        """3.10.7.4 "second" with RFC 5961 3.2: a RST exactly at RCV.NXT resets the
        connection; one elsewhere in the window gets a challenge ACK."""
        self._stats.rst_in += 1
        if seq != self.rcv_nxt:
            self._challenge_ack(now)
            return
        if state is SYN_RECEIVED:
            if self._passive:
                self._terminate(ConnectionResetByPeerError(
                    f"connection {self.local_port}->{self.remote_port} reset in SYN-RECEIVED"),
                    "rcv RST")
            else:
                self._terminate(ConnectionRefusedByPeerError(
                    f"connection {self.local_port}->{self.remote_port} refused"), "rcv RST")
        elif state is TIME_WAIT:
            self._terminate(None, "rcv RST")
        else:
            self._terminate(ConnectionResetByPeerError(
                f"connection {self.local_port}->{self.remote_port} reset by peer"), "rcv RST")

    def _ack_of_syn(self, seg: TCPSegment, seq: int, ack: int, now: float) -> bool:
        """3.10.7.4 "fifth", SYN-RECEIVED: "If SND.UNA < SEG.ACK =< SND.NXT, then enter
        ESTABLISHED state and continue processing" (with SND.WND, SND.WL1, SND.WL2 set);
        otherwise a reset.  True to continue with the segment."""
        if not (self.snd_una < ack <= self.snd_nxt):
            self._stats.dropped_segments += 1
            self._send_rst(seg.ack, now)
            return False
        self.snd_una = ack
        self._handshake_rtt(seg, now)
        self.snd_wnd = seg.window << self.snd_wscale
        self.max_snd_wnd = self.snd_wnd
        self.snd_wl1 = seq
        self.snd_wl2 = ack
        self._t_rtx = None
        self._rtx_count = 0
        self._established(now, "rcv ACK of SYN")
        return True

    # ------------------------------------------------------------------ ACK processing

    def _process_ack(self, seg: TCPSegment, seq: int, ack: int, plen: int, now: float) -> None:
        snd_una = self.snd_una
        st = self._stats
        rec = self._recovery
        window = seg.window << self.snd_wscale
        newly_sacked = 0
        dsack: tuple[int, int] | None = None
        new_ranges: list[tuple[int, int]] | None = None
        tsecr = seg.tsecr if self.ts_ok and seg.tsval is not None else None
        rate = self._rate
        if rate is not None:
            prior_pipe = self._pipe()
            rate.begin_ack(self._rq.lost_bytes)           # type: ignore[union-attr]
        if self.sack_ok and seg.sack_blocks:
            # seqnum.unwrap of each edge, inline (per-ACK path)
            blocks = [(snd_una + (((s - snd_una) + HALF) & MASK) - HALF,
                       snd_una + (((e - snd_una) + HALF) & MASK) - HALF)
                      for s, e in seg.sack_blocks]
            # RFC 2883 4 / RFC 3708 2: the first block is a D-SACK if it lies below the
            # cumulative ACK or inside the second block.
            s0, e0 = blocks[0]
            if e0 <= ack or (len(blocks) > 1 and blocks[1][0] <= s0 and e0 <= blocks[1][1]):
                dsack = (s0, e0)
                del blocks[0]
                st.dsacks_in += 1
                if rate is not None:
                    # a spurious retransmission is delivered (tcpstack/tcp/rate.py on_dsack)
                    rate.on_dsack(e0 - s0, st.retransmitted_bytes, self.max_snd_wnd)
            new_ranges = []                   # (sack_ok: the connection keeps records)
            newly_sacked = self._sb.update(blocks, snd_una, self.snd_nxt, new_ranges)
        flight = self.snd_nxt - snd_una
        if self._persisting or self._persist_unanswered:
            self._persist_unanswered = 0
        if ack > snd_una:
            acked = ack - snd_una
            pipe_before = self._pipe()
            st.bytes_acked += acked
            # Drop acknowledged octets from the send buffer.
            buf_end = self._buf_seq + len(self._sndbuf)
            upto = ack if ack < buf_end else buf_end
            n = upto - self._buf_seq
            if n > 0:
                self._sndbuf.consume(n)
                self._buf_seq = upto
            self.snd_una = ack
            self._rtx_count = 0
            self._stall_since = now
            self._tlp_rearm = True
            # RTT measurement: RFC 7323 4 (timestamps) else Karn's timed segment.
            rtt = None
            if self.ts_ok and seg.tsecr:
                mark = self._ts_karn
                if mark is not None and ack >= self._ts_karn_until:
                    self._ts_karn = None
                if mark is None or (seg.tsecr - mark) & MASK < HALF:
                    r = ((self._ts(now) - seg.tsecr) & MASK) / 1000.0
                    if r < 600:
                        rtt = r
            elif self._rtt_seq is not None and ack > self._rtt_seq:
                rtt = now - self._rtt_time
                self._rtt_seq = None
            if rtt is not None:
                self._rtt.sample(rtt)
            rec.on_cumulative_ack(self, ack, rtt, tsecr, now)
            # RFC 3522 Eifel detection: the first ACK for the episode's first
            # retransmission echoes a timestamp older than that retransmission.
            undo = self._undo
            if undo.ts is not None and ack >= undo.seq and undo.eifel(tsecr):
                self._spurious(now, tsecr)
            restart_timer = True
            if self._in_recovery:
                if ack >= self._recover:
                    # RFC 6582 3.2 step 3 / RFC 6675 5 (A): full ACK ends recovery.
                    self._in_recovery = False
                    self.dupacks = 0
                    self.cc.on_recovery_exit(now)
                    rec.on_recovery_exit(self)
                else:
                    # Partial ACK (RFC 6582 3.2 step 3).
                    self.cc.on_recovery_ack(acked, now)
                    restart_timer = rec.on_partial_ack(self, ack, acked)
            else:
                self.dupacks = 0
                self.cc.on_ack(acked, rtt, now, pipe_before)
                if self._in_loss and ack >= self._recover:
                    self._in_loss = False
                    rec.on_recovery_exit(self)
            if self._rxt_nxt < ack:
                self._rxt_nxt = ack
            if self._snd_auto:
                # send-buffer auto-tuning (see __init__): room for one window in flight
                # and one more queued behind it
                want = 2 * self.cc.cwnd
                if want > self._snd_limit:
                    self._snd_limit = min(want, self.config.send_buffer_max)
            # RFC 6298 rules (5.2) / (5.3).
            if self.snd_una >= self.snd_nxt:
                self._t_rtx = self._t_tlp = self._t_rack = None
            elif restart_timer:
                self._t_rtx = now + self._rtt.rto
            self._fin_acked_transitions(now)
        elif ack == snd_una and flight > 0:
            # Duplicate ACK? RFC 5681 2 (no SACK) / RFC 6675 2 (SACK: new SACK information).
            if self.sack_ok and seg.sack_blocks:
                dup = newly_sacked > 0
            else:
                # (also SACK connections whose ACKs arrive without SACK blocks, e.g. a
                # middlebox strips them: fall back to the RFC 5681 definition)
                dup = (plen == 0 and not seg.flags & (SYN | FIN) and window == self.snd_wnd
                       and window > 0 and not self._persisting)   # not a zero-window probe's ACK
            if dup:
                st.dupacks_in += 1
                self.dupacks += 1
                if not (self._in_recovery or self._in_loss or snd_una < self._recover):
                    rec.on_dupack(self, seg, now)     # RFC 5681 3.2 / RFC 6675 5 (1)
        # SACK records, D-SACK undo, TLP, loss detection (RFC 6675 5, RFC 8985 6.2, 7.4).
        rec.on_ack_done(self, seg, ack, snd_una, new_ranges, dsack, now)
        if rate is not None:
            self._rate_sample(rate, prior_pipe, now)
        # Window update (3.10.7.4 "fifth", ESTABLISHED): SND.WL1/WL2 rule.
        if self.snd_wl1 < seq or (self.snd_wl1 == seq and self.snd_wl2 <= ack):
            if ack >= self.snd_una:
                self.snd_wnd = window
                if window > self.max_snd_wnd:
                    self.max_snd_wnd = window
                self.snd_wl1 = seq
                self.snd_wl2 = ack
                if window and self._persisting:
                    self._persisting = False
                    self._t_persist = None
                    self._persist_backoff = 0
                    if self.snd_nxt > self.snd_una:
                        self._t_rtx = now + self._rtt.rto
        if self.sample_observer is not None:
            self._sample("ack", now)

    def _rate_sample(self, rate: RateSampler, prior_pipe: int, now: float) -> None:
        """The ACK's delivery-rate sample to the congestion control (Linux tcp_rate_gen,
        then cong_control), with the loss-recovery state."""
        pipe = self._pipe()
        rs = rate.gen(now, self._rq.lost_bytes, prior_pipe, pipe)  # type: ignore[union-attr]
        rs.srtt = self._rtt.srtt
        if self.cc.on_rate_sample(rs, now, CA_LOSS if self._in_loss else
                                  CA_RECOVERY if self._in_recovery else CA_OPEN):
            rate.app_limited = (rate.delivered + pipe) or 1

    def _sample(self, event: str, now: float) -> None:
        """Hand the congestion state to the sample observer (config.sample_observer)."""
        observer = self.sample_observer
        if observer is not None:
            cc = self.cc
            observer(self, CCSample(now, event, cc.cwnd, cc.ssthresh, self._pipe(),
                                    self._rtt.srtt, self._rtt.rto, self._in_recovery,
                                    self._in_loss, self.snd_una))

    # ------------------------------------------------------------------ loss recovery
    # common to every regime (the regimes' own parts: tcpstack/tcp/recovery.py), and undo
    # of spurious responses (RFC 3522 / RFC 3708 / RFC 4015, tcpstack/tcp/undo.py)

    def _begin_episode(self, rto: bool) -> None:
        """Remember the congestion state before a loss response, for undo (RFC 4015)."""
        if self._in_recovery or self._in_loss:
            self._undo.rto |= rto
            return                                # the episode under way keeps its state
        self._undo.begin(self.cc.snapshot(), self.cc.cwnd, self.snd_una, rto)

    def _note_retransmit(self, start: int, end: int, now: float) -> None:
        """Bookkeeping common to every retransmission: Karn, and the undo episode."""
        self._rtt_seq = None                      # Karn
        self._karn_mark(now)
        undo = self._undo
        if undo.cc_state is not None and (self._in_recovery or self._in_loss):
            if undo.retransmitted(end) and self.ts_ok:
                undo.ts = self._ts(now)           # RFC 3522 2 RetransmitTS
                undo.seq = end

    def _dsack_undo(self, dsack: tuple[int, int], now: float) -> None:
        """RFC 3708 2-3: when every retransmission of the episode is reported as a
        duplicate by D-SACK, the retransmissions (and the cwnd reduction) were spurious."""
        if self._undo.dsack(dsack[0], dsack[1], self.snd_mss):
            self._spurious(now, None)

    def _spurious(self, now: float, tsecr: int | None) -> None:
        """RFC 4015 response to a spurious retransmission (detected by Eifel, RFC 3522, or
        D-SACK, RFC 3708): restore cwnd/ssthresh from before the episode and stop
        retransmitting what was only deemed lost."""
        st = self._stats
        st.spurious_undos += 1
        undo = self._undo
        state = undo.cc_state
        if state is not None and self.cc.cwnd < undo.cwnd:
            self.cc.undo(state)
        undo.done()
        self._recovery.on_spurious(self, undo.rto)
        if self._in_loss:
            # A spurious timeout (delay spike): back off no further, and adopt the RTT of
            # the original transmission the ACK echoes (RFC 4015 4).
            self._in_loss = False
            self._rtt.backoff = 0
            if tsecr is not None:
                r = ((self._ts(now) - tsecr) & MASK) / 1000.0
                if r < 600:
                    self._rtt.sample(r)
        elif self._in_recovery:
            self._in_recovery = False
        else:
            return
        self.dupacks = 0
        self._recover = self.snd_una
        self._fast_pending = False
        self._recovery.unmark_lost(self, now)

    def _karn_mark(self, now: float) -> None:
        """Karn's rule for timestamp RTTM: after a retransmission, an ACK whose TSecr
        echoes a transmission from *before* the latest retransmission (the receiver's
        TS.Recent does not move for a duplicate, RFC 7323 4.3, so a stale TSecr can come
        back many RTOs later) says nothing about the current RTT; ignore such samples until
        everything then outstanding is acked."""
        self._ts_karn = self._ts(now)     # the latest retransmission is the reference
        self._ts_karn_until = self.snd_nxt

    def _enter_recovery(self, now: float) -> None:
        """RFC 5681 3.2 steps 2-4 / RFC 6582 3.2 step 2 / RFC 6675 5 (4.1-4.3)."""
        self._begin_episode(False)
        self._in_recovery = True
        self._t_tlp = None                        # RFC 8985 7.1 TLP_init()
        self._recover = self.snd_nxt
        self.cc.on_congestion_event(now, self._flight_size(self.snd_una))
        self._rxt_nxt = self.snd_una
        self._recovery.on_enter_recovery(self)    # RescueRxt, TLP state, lost range
        self._fast_pending = True
        self._rtt_seq = None
        self._stats.recoveries += 1

    def _flight_size(self, snd_una: int) -> int:
        """FlightSize for the congestion response (RFC 5681 3.2 eq. 4), bounded by cwnd:
        with SACK, data above a long-standing hole keeps being sent as it is SACKed, so
        SND.NXT - SND.UNA can far exceed what the network holds; halving that would
        *raise* cwnd.  The bound keeps the response a reduction (as Linux, which uses
        cwnd), the FlightSize keeps an application-limited cwnd from counting."""
        flight = self.snd_nxt - snd_una
        cwnd = self.cc.cwnd
        return flight if flight < cwnd else cwnd

    def _fin_acked_transitions(self, now: float) -> None:
        if not self._fin_queued or self.snd_una <= self._fin_seq:
            return
        state = self.state
        if state is FIN_WAIT_1:
            self._set_state(FIN_WAIT_2, "rcv ACK of FIN")
            if self._orphaned:
                # Only an orphaned connection (close(), not shutdown_write()) is bounded in
                # FIN-WAIT-2: a half-closed application may wait for the peer indefinitely.
                self._t_close = now + self.config.fin_wait_2_timeout
        elif state is CLOSING:
            self._enter_time_wait(now, "rcv ACK of FIN")
        elif state is LAST_ACK:
            self._terminate(None, "rcv ACK of FIN")

    # ------------------------------------------------------------------ receive text

    def _process_text(self, seg: TCPSegment, seq: int, now: float) -> None:
        """3.10.7.4 "seventh" and "eighth": queue/deliver text, then the FIN."""
        st = self._stats
        # A received segment's payload is bytes or a view of the packet, never a Gather
        # (that is a send-side TSO payload).
        payload = cast("bytes | memoryview", seg.payload)
        plen = len(payload)
        fin = bool(seg.flags & FIN)
        if seg.flags & SYN:
            seq += 1
        rcv_nxt = self.rcv_nxt
        right = self.rcv_adv if self.rcv_adv > rcv_nxt else rcv_nxt
        # Trim to the window: octets below RCV.NXT and beyond the right edge.
        start = 0
        if seq < rcv_nxt:
            start = rcv_nxt - seq
            if start > plen:
                start = plen
        end = plen
        if seq + plen > right:
            end = right - seq
            if end < start:
                end = start
            fin = False                 # the FIN lies beyond the window: not accepted
        fin_seq = seq + plen
        if start:
            self._note_duplicate(seq, seq + start)     # RFC 2883 4.1.1
        if start or end != plen:
            payload = memoryview(payload)[start:end]
            seq += start
        n = end - start
        if self._fin_received:
            n = 0
            fin = False
        immediate = False
        if n and self._orphaned and self._reset_on_data:
            # RFC 1122 4.2.2.13: data after CLOSE cannot be delivered: reset.
            self._send_rst(self.snd_nxt, now)
            self._terminate(ConnectionAbortedLocallyError(
                f"connection {self.local_port}->{self.remote_port}: data received after close"))
            return
        if n:
            if n > self._rcv_mss:
                # The peer's full-sized segment (for the every-second-segment ACK rule): at
                # most our MSS less the timestamp option it carries, so that a GRO
                # super-packet of 2 full segments counts as 2 (RFC 5681 4.2).
                self._rcv_mss = min(n, self.config.mss - (TS_OVERHEAD if self.ts_ok else 0))
            # Receiver RTT for auto-tuning: one sample per distinct echoed timestamp (a burst
            # of data echoes the same TSval); every segment without timestamps.
            tuner = self._tuner
            if tuner is not None and (seg.tsecr != tuner.tsecr or not self.ts_ok):
                tuner.tsecr = seg.tsecr
                tuner.measure(seg.tsecr, self._ts(now) if self.ts_ok else None, self.rcv_nxt,
                              self.rcv_adv, self._rcv_mss, now)
            if seq == rcv_nxt:
                if self._ooo:
                    immediate = True            # filling (part of) a hole: ACK now (RFC 5681 4.2)
                    self._ooo.add(seq, payload, force=True)
                    chunks, new_nxt = self._ooo.pop_ready(rcv_nxt)
                    self._deliver_chunks(chunks)
                    st.bytes_received += new_nxt - rcv_nxt
                    self.rcv_nxt = new_nxt
                else:
                    self._deliver(payload)
                    st.bytes_received += n
                    self.rcv_nxt = rcv_nxt + n
                    self._unacked_bytes += n
                if tuner is not None and (not tuner.time or now - tuner.time >= tuner.rtt):
                    self._rcv_space_adjust(now)     # (the filter: not within the RTT yet)
            else:
                # Out of order: queue, and send an immediate (duplicate) ACK with SACK
                # blocks (RFC 5681 4.2, RFC 2018 4).
                st.ooo_segments += 1
                if self._ooo.covers(seq, seq + n):
                    self._note_duplicate(seq, seq + n)  # RFC 2883 4.1.2
                self._ooo.add(seq, payload)
                immediate = True
        elif plen and not fin:
            # Entirely duplicate text: ACK at once (it may be a lost-ACK retransmission).
            immediate = True
        if fin:
            if self._rcv_fin_seq is None or fin_seq < self._rcv_fin_seq:
                self._rcv_fin_seq = fin_seq
        if self._rcv_fin_seq is not None and self.rcv_nxt == self._rcv_fin_seq \
                and not self._fin_received:
            self._ooo.clear()
            self._receive_fin(now)
            immediate = True
        elif fin:
            immediate = True
        if self._dsack is not None:
            immediate = True                    # the D-SACK goes out now (RFC 2883 4)
        if immediate:
            if n or plen:
                # A sign of loss (out-of-order text, a hole filled, a duplicate): the sender
                # is recovering, with a small window.  ACK the next in-order segments at
                # once too (Linux's quick-ACK mode), so that one lost ACK does not hide a
                # whole flight from it and an odd last segment does not wait for the
                # delayed-ACK timer (RFC 5681 4.2 lets a receiver ACK more often).
                self._quickacks = self.config.quickacks
            self._out.append(self._build(self.snd_nxt, ACK, now=now))
        elif self._unacked_bytes and self._quickacks > 0:
            # Quick-ACK mode: each in-order segment gets its ACK as it is processed, also
            # inside a batch (the core's coalescing keeps one every second segment of a flush)
            self._quickacks -= 1
            if n > self._rcv_mss:
                self._ack_now = True
            else:
                self._out.append(self._build(self.snd_nxt, ACK, now=now))
        elif self._unacked_bytes:
            # Delayed ACK (RFC 9293 3.8.6.3, RFC 5681 4.2): ACK at least every second
            # full-sized segment, and within delayed_ack_timeout.  Counted in bytes.  Each
            # second full-sized segment gets its ACK as it is processed, also inside a batch
            # read from the link at one instant (StackCore.receive_packets), as Linux does
            # without GRO: one stretch ACK per batch, if lost, hid the whole batch from the
            # sender, whose loss probe then sat out our delayed-ACK timer (issue 14: 50 ms
            # stalls at 3% loss).  A GRO super-packet (n above the full-sized segment: the
            # link merged it) is one arrival and gets one ACK, after the batch.
            # Inside one batch (segments processed at the same instant) the spacing doubles
            # after each such ACK -- 2, 4, 8 ... segments, the rest acknowledged when the
            # batch is done -- so a long batch costs a few ACKs, not one per two segments
            # (that halved the non-offloaded path's throughput), and a lost ACK still hides
            # at most the last part of it: the others are cumulative.  Our reading of the
            # SHOULD: within a batch no ACK is withheld in time, as with Linux's GRO.
            span = 2 * self._rcv_mss
            if not self.config.delayed_ack or self._unacked_bytes >= span:
                if n > self._rcv_mss:
                    self._ack_now = True
                else:
                    k = self._ack_burst_n if now == self._ack_burst_t else 0
                    if self._unacked_bytes >= span << (k if k < 6 else 6):
                        self._out.append(self._build(self.snd_nxt, ACK, now=now))
                        self._ack_burst_t = now
                        self._ack_burst_n = k + 1
                    else:
                        self._ack_now = True     # the rest: once the batch is processed
            elif self._t_delack is None:
                self._t_delack = now + self.config.delayed_ack_timeout

    def _note_duplicate(self, start: int, end: int) -> None:
        """RFC 2883 4: report a duplicate segment in the first SACK block of the next ACK
        (only the latest duplicate: one D-SACK block per ACK)."""
        if self.sack_ok and self.config.dsack and end > start:
            self._dsack = (start, end)

    # ------------------------------------------------------------------ receive buffer

    def _rcv_space_adjust(self, now: float) -> None:
        """Receive-buffer auto-tuning (tcpstack/tcp/autotune.py): the tuner decides the
        size from what the application took; the out-of-order queue's entry bound follows
        the window it must hold (its bytes are bounded by the window anyway; the bound
        stops tiny segments)."""
        tuner = self._tuner
        assert tuner is not None
        old = self._rcv_buf
        buf = tuner.adjust(self.rcv_nxt - self._rbuf_len, old, self._rcv_mss, self._rtt,
                           self.config.recv_buffer_max, now)
        if buf != old:
            self._rcv_buf = buf
            segs = 2 * buf // (self._rcv_mss if self._rcv_mss > 536 else 536)
            if segs > self._ooo.max_chunks:
                self._ooo.max_chunks = segs

    @property
    def recv_buffer(self) -> int:
        """The receive buffer now: the most the window may offer (auto-tuned or fixed)."""
        return self._rcv_buf

    def reconfigure(self, now: float, **changes: object) -> None:
        """Change TCPConfig fields of this live connection (the socket options of the
        asyncio edge: TCP_NODELAY, SO_KEEPALIVE, TCP_KEEPIDLE, SO_RCVBUF, ...).  The TCB
        gets a config of its own (configs are shared between connections), and what was
        fixed from the old one follows: the keepalive timer (RFC 9293 3.8.4) is armed,
        re-armed with the new idle time, or stopped; a new recv_buffer fixes the receive
        buffer (auto-tuning off, as SO_RCVBUF does on Linux) -- the window scale sent in
        the SYN stays (RFC 7323 2.2), so a larger buffer is advertised within it; a new
        send_buffer fixes the send buffer the same way (SO_SNDBUF)."""
        from dataclasses import replace
        self.config = cfg = replace(self.config, **changes)  # type: ignore[arg-type]
        if {"keepalive", "keepalive_idle"} & changes.keys():
            if cfg.keepalive and self.state in (ESTABLISHED, CLOSE_WAIT, FIN_WAIT_2):
                self._t_keepalive = now + cfg.keepalive_idle
            elif not cfg.keepalive:
                self._t_keepalive = None
        if "recv_buffer" in changes:
            self._rcv_buf = cfg.recv_buffer
            self._tuner = None
        if "send_buffer" in changes:
            # a new send_buffer fixes the send buffer (auto-tuning off, as SO_SNDBUF on
            # Linux); what is already queued beyond it stays and drains
            self._snd_limit = cfg.send_buffer
            self._snd_auto = False

    def _deliver(self, data: bytes | memoryview) -> None:
        # A view of an immutable packet (bytes) is handed on as it is: the copy into bytes is
        # made once, where the application takes the data (tcpstack/aio/reader.py joins views
        # straight into what read() returns).  A view of a mutable buffer is copied now.
        if type(data) is not bytes and not immutable(data):
            data = bytes(data)
        if self._paused:
            self._rbuf.append(data)
            self._rbuf_len += len(data)
        else:
            self._events.append(DataReceived(data))

    def _deliver_chunks(self, chunks: list[bytes]) -> None:
        if not chunks:
            return
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        self._deliver(data)

    def _receive_fin(self, now: float) -> None:
        """3.10.7.4 "eighth, check the FIN bit"."""
        self._fin_received = True
        self.rcv_nxt += 1
        if self._paused and self._rbuf:
            self._eof_deferred = True
        else:
            self._events.append(EndOfStream())
        state = self.state
        if state is ESTABLISHED or state is SYN_RECEIVED:
            self._set_state(CLOSE_WAIT, "rcv FIN, snd ACK")
        elif state is FIN_WAIT_1:
            if self._fin_queued and self.snd_una > self._fin_seq:
                self._enter_time_wait(now, "rcv FIN (our FIN acknowledged), snd ACK")
            else:
                self._set_state(CLOSING, "rcv FIN, snd ACK")
        elif state is FIN_WAIT_2:
            self._enter_time_wait(now, "rcv FIN, snd ACK")

    # ------------------------------------------------------------------ sending

    def _pipe(self) -> int:
        """RFC 6675 SetPipe(): octets estimated in flight (the regime's estimate)."""
        return self._recovery.pipe(self)

    def _send_new_probe(self, now: float) -> bool:
        """A loss probe of previously unsent data, if any fits the peer's window
        (congestion window not consulted, RFC 8985 7.3; the probe's state is RackRecovery's)."""
        rq = self._rq
        assert rq is not None
        snd_nxt = self.snd_nxt
        unsent = self._buf_seq + len(self._sndbuf) - snd_nxt
        fin_pending = self._fin_queued and snd_nxt <= self._fin_seq
        wnd_room = self.snd_una + self.snd_wnd - snd_nxt
        if unsent > 0 and wnd_room > 0:
            room = self._seg_payload_room()
            n = min(room, unsent, wnd_room)
            limit = snd_nxt + n
            if fin_pending and limit == self._fin_seq:
                limit += 1
        elif unsent <= 0 and fin_pending and snd_nxt == self._fin_seq:
            limit = snd_nxt + 1
        else:
            return False
        self._out.append(self._segment_for(snd_nxt, limit, now, rtx=False))
        rq.sent(snd_nxt, limit, now)
        self.snd_nxt = limit
        return True

    def _segment_for(self, seq: int, limit: int, now: float, *, rtx: bool,
                     gather: bool = False) -> TCPSegment:
        """Build the segment carrying [seq, limit) (data and possibly our FIN).  `gather`:
        a TSO super-segment, whose payload may stay in pieces (sndbuf.Gather)."""
        buf_seq = self._buf_seq
        data_end = buf_seq + len(self._sndbuf)
        flags = ACK
        dend = limit if limit < data_end else data_end
        if dend > seq:
            payload = self._sndbuf.get(seq - buf_seq, dend - buf_seq, gather)
        else:
            payload = b""
        if self._fin_queued and limit > self._fin_seq and seq <= self._fin_seq:
            flags |= FIN
        if dend >= data_end and payload:
            flags |= PSH
        return self._build(seq, flags, payload, now=now)

    def _seg_payload_room(self) -> int:
        """Payload room of a data segment given the options it will carry."""
        room = self.snd_mss
        # ENO options are not asked for here (the negotiator may count calls): assume the
        # size of the last non-SYN ENO options sent (normally one empty option, 4 bytes).
        extra = self._eno_extra if self.eno is not None and self.eno.active else 0
        if self.sack_ok and (self._ooo or self._dsack is not None):
            base = MAX_OPTION_SPACE - (TS_OVERHEAD if self.ts_ok else 0) - extra
            n = min(len(self._ooo) + (self._dsack is not None), 4, sack_blocks_fitting(base))
            if n > 0:
                extra += SACK_OPTION_BASE + SACK_BLOCK_SPACE * n
        room -= extra
        return room if room > 1 else 1

    def segments_to_send(self, now: float) -> list[TCPSegment]:
        """Everything to transmit now: queued control segments, retransmissions, new data
        (within min(cwnd, snd_wnd) by pipe, RFC 6675 5), FIN, and a pending ACK."""
        self._now = now
        out = self._out
        self._out = []
        if self.state in _SEND_STATES and not self._terminated:
            self._send_data(out, now)
        if self._ack_now and not self._terminated and self.state in _SYNCHRONIZED:
            out.append(self._build(self.snd_nxt, ACK, now=now))
        return out

    def _send_data(self, out: list[TCPSegment], now: float) -> None:
        cfg = self.config
        snd_una = self.snd_una
        if (self.snd_nxt == snd_una and self._buf_seq + len(self._sndbuf) <= snd_una
                and not (self._fin_queued and snd_una <= self._fin_seq)
                and not self._in_recovery and not self.cc.pacing_rate and not cfg.pacing):
            # Nothing in flight, nothing to send, no pacing (a receive-only connection's
            # every segment): what the full pass below comes to.
            self._stall_since = now
            self._recovery.retransmit(self, out, now)     # (finds nothing deemed lost)
            self._sws_force = False
            self._t_rtx = self._t_rack = self._t_tlp = None
            self._tlp_rearm = False
            return
        st = self._stats
        sent_any = False
        if self.snd_nxt == snd_una and now - self._last_send > self._rtt.rto \
                and self.state is not SYN_RECEIVED:
            # RFC 5681 4.1: restart window after an idle period longer than the RTO.
            if self._has_unsent():
                self._undo.forget_older()         # (older episodes' cwnd is stale now)
                self.cc.on_idle_restart(now, self._rtt.rto)
        if self.snd_nxt == snd_una:
            self._stall_since = now
        rec = self._recovery
        pipe = rec.pipe
        rq = self._rq
        # --- pacing: at most a quantum of data per tick, at the pacing rate ---
        prate = self.cc.pacing_rate
        if not prate and cfg.pacing:
            prate = self._internal_pacing_rate()
        budget = 1 << 62
        if prate > 0:
            cap = cfg.max_pacing_rate
            if cap and prate > cap:
                prate = cap
            budget, nxt0, rxb0 = self._pacing_budget(prate, now), self.snd_nxt, st.retransmitted_bytes
        # --- retransmissions (fast recovery / SACK holes / after RTO: NextSeg() rule 1) ---
        if budget > 0 and rec.retransmit(self, out, now):
            sent_any = True
        # --- new data ---
        fin_queued = self._fin_queued
        paced_out = False
        while True:
            snd_nxt = self.snd_nxt
            data_end = self._buf_seq + len(self._sndbuf)
            unsent = data_end - snd_nxt
            fin_pending = fin_queued and snd_nxt <= self._fin_seq
            if unsent <= 0:
                if fin_pending and snd_nxt == self._fin_seq:
                    # FIN alone (all data already sent).
                    if self.cc.cwnd - pipe(self) <= 0 and snd_nxt > self.snd_una:
                        break
                    out.append(self._segment_for(snd_nxt, snd_nxt + 1, now, rtx=False))
                    self.snd_nxt = snd_nxt + 1
                    if rq is not None:
                        rq.sent(snd_nxt, snd_nxt + 1, now)
                    self._tlp_rearm = True
                    sent_any = True
                break
            if prate > 0:
                left = budget - (snd_nxt - nxt0) - (st.retransmitted_bytes - rxb0)
                if left <= 0:
                    paced_out = True            # the rest waits for the pacing timer
                    break
            wnd_room = self.snd_una + self.snd_wnd - snd_nxt
            if wnd_room <= 0:
                break
            room = self._seg_payload_room()
            seglen = room if room < unsent else unsent
            if seglen > wnd_room:
                seglen = wnd_room
            cw_room = self.cc.cwnd - pipe(self)
            if seglen > cw_room:
                break                           # congestion-window limited: wait for ACKs
            if seglen < room:
                # Less than a full segment: Nagle (3.7.4) and sender SWS (3.8.6.2.1).
                if seglen == unsent:
                    # Everything queued fits: (b) "pushed" data; Nagle holds it while
                    # data is unacknowledged, unless nodelay or the FIN follows it.
                    if (snd_nxt > self.snd_una and not cfg.nodelay and not fin_queued
                            and not self._sws_force):
                        break
                elif not (seglen >= self.max_snd_wnd // 2 and self.max_snd_wnd > 0) \
                        and not self._sws_force:
                    # Window-limited small segment: wait (override timer, 3.8.6.2.1).
                    if self._t_sws is None:
                        self._t_sws = now + cfg.sws_override
                    break
            gso = 0
            if seglen == room and cfg.tso_max_size >= 2 * room:
                # TSO: several full segments in one super-segment the link cuts into
                # `room`-byte pieces.  Only whole segments, each within the window and cwnd
                # as if sent one by one; a short tail stays separate for Nagle/SWS above.
                k = cfg.tso_max_size // room
                for lim in (unsent, wnd_room, cw_room, budget if prate <= 0 else left):
                    if lim // room < k:
                        k = lim // room
                if k > 1:
                    seglen = k * room
                    gso = room
            end = snd_nxt + seglen
            with_fin = fin_pending and end == self._fin_seq
            seg = self._segment_for(snd_nxt, end + (1 if with_fin else 0), now, rtx=False,
                                    gather=gso > 0)
            if gso:
                seg.gso_size = gso
                st.tso_segments += 1
            out.append(seg)
            sent_any = True
            if self._rtt_seq is None and not self.ts_ok:
                self._rtt_seq = snd_nxt            # time this segment (RFC 6298 / Karn)
                self._rtt_time = now
            self.snd_nxt = end + (1 if with_fin else 0)
            if rq is not None:
                rq.sent(snd_nxt, self.snd_nxt, now)
            self._tlp_rearm = True
            if with_fin:
                break
        # --- more retransmissions in fast recovery (RFC 6675 NextSeg() rules 3 and 4) ---
        if self._in_recovery and not paced_out and budget > 0 and rec.after_new_data(self, out, now):
            sent_any = True
        if prate > 0:
            self._pace_sent(prate, (self.snd_nxt - nxt0) + (st.retransmitted_bytes - rxb0),
                            paced_out or (budget <= 0 and (
                                self._in_recovery or self._in_loss
                                or (rq is not None and rq.pending_lost > 0))), now)
        self._sws_force = False
        if sent_any:
            self._t_sws = None
            self._t_delack = None
        # --- timers (RFC 6298 rule (5.1); persist 3.8.6.1; RFC 8985 7.2 and 8) ---
        if self.snd_nxt > self.snd_una:
            if self._t_rtx is None and not self._persisting:
                self._t_rtx = now + self._rtt.rto
            rec.arm_timers(self, now)             # RFC 8985 7.2 PTO
        else:
            self._t_rtx = self._t_rack = self._t_tlp = None
        self._tlp_rearm = False
        if (self.snd_wnd == 0 and self.snd_nxt == self.snd_una and self._has_unsent()
                and not self._persisting):
            self._persisting = True
            self._persist_backoff = 0
            self._t_persist = now + self._persist_interval()

    # ------------------------------------------------------------------ pacing

    def _internal_pacing_rate(self) -> float:
        """config.pacing for an algorithm that sets no rate (Linux tcp_update_pacing_rate):
        200 % of cwnd per SRTT in slow start below ssthresh/2, else 120 %."""
        srtt = self._rtt.srtt
        if not srtt:
            return 0.0
        cc = self.cc
        ratio = 2.0 if cc.cwnd < cc.ssthresh // 2 else 1.2
        return ratio * cc.cwnd / srtt

    def _pacing_budget(self, prate: float, now: float) -> int:
        """Bytes that may leave now: 0 before the next send time, else a quantum (about
        1 ms at the pacing rate, at least 2 segments, at most 64 KB: Linux
        tcp_tso_autosize, sk_pacing_shift 10, min_tso_segs 2) plus, when data was waiting
        for the pacing time, what the rate allowed since then if this wake-up is late, up
        to PACING_CREDIT (an event loop's timers are coarse -- uvloop's are whole
        milliseconds --: without the credit the rate achieved would fall below the pacing
        rate, and BBR's estimate with it)."""
        nxt = self._pace_next
        if now < nxt - 1e-9:
            return 0
        q = prate * 0.001
        room = 2 * self.snd_mss
        if q < room:
            q = room
        elif q > 65536:
            q = 65536
        if not self._pace_held:
            return int(q)
        late = now - nxt
        return int(q + (late if late < PACING_CREDIT else PACING_CREDIT) * prate)

    def _pace_sent(self, prate: float, nbytes: int, blocked: bool, now: float) -> None:
        """Advance the next send time by the bytes sent this tick (earliest departure
        time, as Linux's tcp_wstamp_ns: from now, or after a wait for the pacing time from
        at most PACING_CREDIT in the past).  Arm the pacing timer when data waits for it."""
        if nbytes > 0:
            base = self._pace_next
            floor = now - PACING_CREDIT if self._pace_held else now
            if base < floor:
                base = floor
            self._pace_next = base + nbytes / prate
        self._pace_held = blocked
        if blocked:
            self._t_pace = self._pace_next if self._pace_next > now else now

    def _has_unsent(self) -> bool:
        if self._buf_seq + len(self._sndbuf) > self.snd_nxt:
            return True
        return self._fin_queued and self.snd_nxt <= self._fin_seq

    def _persist_interval(self) -> float:
        t = self._rtt.rto * (1 << min(self._persist_backoff, 20))
        return t if t < self.config.persist_max else self.config.persist_max

    # ------------------------------------------------------------------ timers

    def next_timer(self) -> float | None:
        best: float | None = None
        for t in (self._t_rtx, self._t_persist, self._t_delack, self._t_keepalive,
                  self._t_close, self._t_sws, self._t_rack, self._t_tlp, self._t_pace):
            if t is not None and (best is None or t < best):
                best = t
        return best

    def handle_timer(self, now: float) -> None:
        """Fire every timer whose deadline is <= now (RFC 9293 3.10.8 and friends)."""
        self._now = now
        if self._terminated:
            return
        if self._t_close is not None and now >= self._t_close:
            self._t_close = None
            if self.state is TIME_WAIT:
                self._terminate(None, "timeout=2MSL")
                return
            if self.state is FIN_WAIT_2:
                deadline = self._last_recv + self.config.fin_wait_2_timeout
                if deadline <= now:
                    self._terminate(self._timeout_error("FIN-WAIT-2"))
                    return
                self._t_close = deadline
        if self._t_rack is not None and now >= self._t_rack:
            self._t_rack = None
            self._stats.reorder_timeouts += 1
            if self.state in _SEND_STATES:
                self._recovery.detect_losses(self, now)   # RFC 8985 6.2 reordering timer
        if self._t_tlp is not None and now >= self._t_tlp:
            self._t_tlp = None
            self._recovery.on_tlp_timer(self, now)  # RFC 8985 7.3 (before an RTO due now)
        if self._t_rtx is not None and now >= self._t_rtx:
            self._t_rtx = None
            self._on_rto(now)
            if self._terminated:
                return
        if self._t_persist is not None and now >= self._t_persist:
            self._t_persist = None
            self._on_persist(now)
            if self._terminated:
                return
        if self._t_delack is not None and now >= self._t_delack:
            self._t_delack = None
            if self._unacked_bytes:
                self._ack_now = True
        if self._t_sws is not None and now >= self._t_sws:
            self._t_sws = None
            self._sws_force = True
        if self._t_pace is not None and now >= self._t_pace:
            self._t_pace = None                 # the next segments_to_send() sends
        if self._t_keepalive is not None and now >= self._t_keepalive:
            self._on_keepalive(now)

    def _enter_loss(self) -> None:
        """RTO: leave fast recovery, enter the loss state, RecoveryPoint = HighData
        (RFC 6675 5.1, RFC 5681 3.1), resend from SND.UNA."""
        self._in_recovery = False
        self._fast_pending = False
        self._in_loss = True
        self._recover = self.snd_nxt
        self._rxt_nxt = self.snd_una
        self.dupacks = 0

    def _on_rto(self, now: float) -> None:
        st = self._stats
        cfg = self.config
        state = self.state
        if state is SYN_SENT or state is SYN_RECEIVED:
            if self._syn_attempts >= cfg.syn_retries:
                self._terminate(self._timeout_error(f"no answer to SYN after {self._syn_attempts} retries"))
                return
            self._syn_attempts += 1
            st.timeouts += 1
            st.retransmits += 1
            self._rtt.back_off()
            if state is SYN_SENT and self.eno is not None:
                self.eno.on_syn_retransmit(self._syn_attempts)
            self._emit_syn(now)
            self._t_rtx = now + self._rtt.rto
            return
        if self.snd_nxt <= self.snd_una or state not in _SEND_STATES:
            return
        if self.snd_wnd == 0 and self.snd_nxt - self.snd_una <= 1:
            # Zero window: this is the persist timer's job (3.8.6.1).
            self._persisting = True
            self._t_persist = now
            return
        if self._rtx_count >= cfg.retries or (
                cfg.user_timeout is not None and now - self._stall_since >= cfg.user_timeout):
            self._terminate(self._timeout_error(f"{self._rtx_count} retransmissions unanswered"))
            return
        self._rtx_count += 1
        st.timeouts += 1
        flight = self.snd_nxt - self.snd_una
        self._begin_episode(True)
        if self._rtx_count == 1:
            # RFC 5681 3.1 eq. (4): only for the first timeout of this segment.
            self.cc.on_rto(now, self._pipe() or flight)
        self._t_rack = self._t_tlp = None
        # What is lost, the loss state, the retransmission and the timer: the regime's.
        self._recovery.on_rto(self, now, flight)
        if self.sample_observer is not None:
            self._sample("rto", now)

    def _restart_rto_after_timeout(self, now: float) -> None:
        """RFC 6298 rule (5.6): the timer restarts with the backed-off RTO (bounded by the user
        timeout, RFC 9293 3.8.3 / RFC 5482)."""
        cfg = self.config
        t = now + self._rtt.rto
        if cfg.user_timeout is not None:
            t = min(t, self._stall_since + cfg.user_timeout)
        self._t_rtx = t

    def _on_persist(self, now: float) -> None:
        """3.8.6.1: probe a zero window with one octet (new, or the one already probed)."""
        if self.state not in _SEND_STATES or not self._persisting:
            self._persisting = False
            return
        if self.snd_wnd > 0:
            self._persisting = False
            return
        if self._persist_unanswered >= self.config.retries:
            self._terminate(self._timeout_error("zero-window probes unanswered"))
            return
        a = self.snd_una
        if self.snd_nxt == a:
            if not self._has_unsent():
                self._persisting = False
                return
            self.snd_nxt = a + 1
            if self._rq is not None:
                self._rq.sent(a, a + 1, now)
        self._out.append(self._segment_for(a, a + 1, now, rtx=False))
        self._stats.zero_window_probes += 1
        self._persist_unanswered += 1
        self._persist_backoff += 1
        self._t_persist = now + self._persist_interval()

    def _on_keepalive(self, now: float) -> None:
        """RFC 9293 3.8.4 / RFC 1122 4.2.3.6: probe an idle connection."""
        cfg = self.config
        if self.state not in (ESTABLISHED, CLOSE_WAIT, FIN_WAIT_2) or not cfg.keepalive:
            self._t_keepalive = None
            return
        if self.snd_nxt > self.snd_una or self._has_unsent():
            # Not idle: retransmission handles a dead peer.
            self._t_keepalive = now + cfg.keepalive_idle
            return
        if self._ka_probes >= cfg.keepalive_count:
            self._terminate(self._timeout_error(f"{self._ka_probes} keepalive probes unanswered"))
            return
        self._ka_probes += 1
        self._stats.keepalive_probes += 1
        # SEG.SEQ = SND.NXT - 1, no data: the peer must answer with an ACK.
        self._out.append(self._build(self.snd_nxt - 1, ACK, now=now))
        self._t_keepalive = now + cfg.keepalive_interval
