"""Per-connection TCP configuration (the knobs of one TCB, tcpstack/tcp/connection.py).

Defaults follow the RFCs where they give a value (RFC 6298 rule (2.1) initial RTO, (2.5) maximum
RTO; RFC 9293 3.8.3 R2 retries; RFC 1122 4.2.3.6 keepalive idle >= 2 h; RFC 9293 3.3.2
MSL) and Linux where the RFC leaves a choice (200 ms minimum RTO, 40 ms delayed ACK, 200 ms
TLP.max_ack_delay and 10 ms PTO floor for RFC 8985 7.2).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tcpstack.tcp.events import SampleObserver, StateObserver


@dataclass
class TCPConfig:
    mss: int = 1460                  # MSS we advertise (stack derives it from MTU)
    # Send buffer: bytes the app may queue, unsent + unacknowledged.  It starts at
    # send_buffer and, with sndbuf_autotune, grows to twice the congestion window, up to
    # send_buffer_max (Linux tcp_sndbuf_expand, tcp_wmem max 4 MB); sndbuf_autotune=False
    # fixes it (like SO_SNDBUF).
    send_buffer: int = 1 << 20
    send_buffer_max: int = 4 << 20
    sndbuf_autotune: bool = True
    # Receive buffer: the window starts at recv_buffer and, with rcvbuf_autotune, grows
    # toward recv_buffer_max as the application consumes faster (dynamic right-sizing, like
    # Linux tcp_rmem 128 KB / 6 MB); rcvbuf_autotune=False fixes it (like SO_RCVBUF).
    recv_buffer: int = 128 << 10
    recv_buffer_max: int = 6 << 20
    rcvbuf_autotune: bool = True
    window_scaling: bool = True      # RFC 7323 2
    timestamps: bool = True          # RFC 7323 3
    sack: bool = True                # RFC 2018
    nodelay: bool = False            # True disables Nagle (RFC 896 / RFC 9293 3.7.4)
    delayed_ack: bool = True         # RFC 9293 3.8.6.3 / RFC 5681 4.2
    delayed_ack_timeout: float = 0.040
    quickacks: int = 16              # after a sign of loss (out-of-order text, a hole filled,
                                     # a duplicate) ACK this many in-order segments at once
                                     # (Linux's quick-ACK mode, TCP_MAX_QUICKACKS); 0: off
    rto_initial: float = 1.0         # RFC 6298 rule (2.1)
    rto_min: float = 0.2             # Linux's minimum; RFC 6298 rule (2.4) says 1 s SHOULD; configurable
    rto_max: float = 60.0            # RFC 6298 rule (2.5)
    syn_retries: int = 6             # then ConnectionTimeoutError
    retries: int = 15                # data retransmissions before ConnectionTimeoutError (RFC 9293 3.8.3 R2)
    user_timeout: float | None = None  # RFC 9293 3.8.3 / RFC 5482: give up after this long without progress
    msl: float = 30.0                # TIME_WAIT lasts 2*msl (RFC 9293 3.6.1)
    fin_wait_2_timeout: float = 60.0
    keepalive: bool = False          # RFC 9293 3.8.4, RFC 1122 4.2.3.6
    keepalive_idle: float = 7200.0
    keepalive_interval: float = 75.0
    keepalive_count: int = 9
    congestion_control: str = "cubic"   # "cubic" (as stock Linux), "newreno" ("reno"), "bbr"
    max_ooo_segments: int = 1024     # bound on out-of-order queue entries (bytes bounded by recv window)
    # --- additions beyond the team contract ---
    challenge_ack_limit: int = 10    # RFC 5961 7: at most this many challenge ACKs ...
    challenge_ack_interval: float = 5.0  # ... per this many seconds (per connection)
    oow_ack_interval: float = 0.5    # min gap between ACKs answering unacceptable pure ACKs
    sws_override: float = 0.2        # RFC 9293 3.8.6.2.1 override timeout (0.1 - 1 s)
    dupthresh: int = 3               # RFC 5681 3.2 / RFC 6675 DupThresh
    ip_header_size: int = 20         # IP header bytes counted by set_path_mtu (40 for IPv6)
    persist_max: float = 60.0        # cap of the persist (zero-window probe) backoff
    rack: bool = True                # RFC 8985 RACK-TLP loss detection (SACK connections);
                                     # False: RFC 6675 IsLost/NextSeg rules 1-4 only
    tlp_max_ack_delay: float = 0.2   # RFC 8985 7.2 TLP.max_ack_delay (peer's delayed ACK budget)
    tlp_min: float = 0.010           # floor of the PTO (sub-ms RTTs; as Linux)
    dsack: bool = True               # RFC 2883: report duplicate segments in D-SACK blocks
    tso_max_size: int = 0            # TSO: largest super-segment payload the link segments
                                     # (0 = off; the TCB does not produce them yet)
    # Pacing: BBR ("bbr") always paces at its own rate; pacing=True paces the other
    # algorithms at 200 % (slow start) / 120 % of cwnd per SRTT (Linux's internal pacing).
    # max_pacing_rate caps the rate, bytes/s (SO_MAX_PACING_RATE; 0: no cap).
    pacing: bool = False
    max_pacing_rate: float = 0.0
    # Called as state_observer(conn, StateChanged, now) on every RFC 9293 state change of a
    # connection (tcpstack.tools.trace.Tracer installs one); None: nobody is watching.
    state_observer: "StateObserver | None" = None
    # Called as sample_observer(conn, CCSample) after every ACK processed and every
    # retransmission timeout (cwnd, ssthresh, pipe, srtt, rto, recovery; tcpstack.tools.plot
    # installs one); None: nobody is watching.
    sample_observer: "SampleObserver | None" = None

    def __post_init__(self) -> None:
        # An algorithm the stack does not have is the caller's error, said at once (it was
        # once a silent NewReno).
        from tcpstack.tcp.congestion import algorithm_name
        try:
            algorithm_name(self.congestion_control)
        except ValueError as e:
            raise ValueError(f"congestion_control={e}") from None
