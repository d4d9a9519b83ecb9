"""The stack core: one host's TCP/IP above a link, sans-IO (no sockets, no clock, no loop).

Implements:
  - demultiplexing by 4-tuple, listeners with a bounded accept backlog and a bound on
    half-open connections (RFC 9293 3.10.7.2, RFC 4987 3.1);
  - SYN cookies when a listener's SYN queue is full (RFC 4987 3.6; tcpstack/host/syncookies.py),
    with TCP-ENO kept through a small bounded table (see :meth:`StackCore._send_cookie`);
  - segments to no connection answered with RST (RFC 9293 3.10.7.1), rate limited per peer
    address (bounded table) and globally, like ICMP replies;
  - ISNs per RFC 6528 (keyed hash of the 4-tuple plus a 4 us clock), timestamp offsets
    per connection (RFC 7323 5.4 / 7.1), ephemeral ports (RFC 6056 "algorithm 1"-like);
  - ICMP/ICMPv6 echo reply, and ICMP errors routed to their connection
    (RFC 1122 4.2.3.9, RFC 5927, RFC 1191 / RFC 8201 PMTU); protocol / port unreachable and
    ICMPv6 parameter problem for protocols the stack does not speak (RFC 1122 3.2.2.1,
    4.1.3.1, RFC 8200 4; :meth:`StackCore._unreachable`);
  - a timer heap so the earliest deadline over all connections is O(log n) to find;
  - ACK coalescing per flush: a pure ACK that a later segment of its connection supersedes
    is not sent (RFC 5681 4.2 as read in tcpstack/host/acks.py), for every driver alike.

A driver (the asyncio edge, the simulator, a test) feeds :meth:`receive_packet`, calls
:meth:`handle_timer` at :meth:`next_timer`, and sends what :meth:`packets_to_send` returns.
This is exactly the SimHost interface of tcpstack/sim.py.
"""
from __future__ import annotations

import functools
import hashlib
import heapq
import ipaddress
import itertools
import logging
import os
import random
from collections import deque
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterable

from tcpstack.wire import icmp as icmp_mod
from tcpstack.wire.checksum import ones_sum, pseudo_header_sum
from tcpstack.tcp.config import TCPConfig
from tcpstack.tcp.connection import TCPConnection
from tcpstack.host.acks import AckCoalescer
from tcpstack.host.endpoint import Endpoint, SecurityProvider
from tcpstack.errors import HostUnreachableError, ParseError, TcpStackError
from tcpstack.host.fragments import Reassembler
from tcpstack.wire.buffers import LinkPacket
from tcpstack.wire.icmp import IPPROTO_ICMP, IPPROTO_ICMPV6
from tcpstack.wire.ip import IPPROTO_UDP, IPv4Header, parse_ip
from tcpstack.wire.segment import ACK, RST, SYN, TCPSegment
from tcpstack.host import syncookies as sc
from tcpstack.wire.tcp import IPPROTO_TCP, GSOFrame, build_gso, build_ip_tcp, parse_tcp

log = logging.getLogger(__name__)


Addr = tuple[str, int]
_counter = itertools.count()   # tie-breaker for the timer heap
_TCP_FIELDS = frozenset(TCPConfig.__dataclass_fields__) - {"mss", "ip_header_size"}
# Per-connection options the core itself reads; a security provider adds its own names.
_CORE_OPTIONS = frozenset({"encrypt", "require_encryption", "app_aware"})


@dataclass
class StackConfig:
    mtu: int = 1500
    ttl: int = 64
    tcp: TCPConfig = field(default_factory=TCPConfig)
    ephemeral_ports: tuple[int, int] = (32768, 60999)   # Linux's default range
    syn_backlog: int = 1024          # half-open connections per listener (RFC 4987 3.1)
    rst_rate: float = 200.0          # RSTs per second to unknown segments (token bucket)
    icmp_rate: float = 200.0         # ICMP messages per second
    rst_peer_rate: float = 20.0      # ... and per peer address (burst rate/4)
    icmp_peer_rate: float = 20.0
    rate_limit_peers: int = 4096     # bound of the per-peer bucket table (oldest evicted)
    syncookies: str = "auto"         # "auto": when the SYN queue is full; "always"; "never"
    syncookie_eno_entries: int = 4096  # SYN ENO options kept for cookie SYN-ACKs (bounded)
    answer_ping: bool = True
    reassembly_bytes: int = 4 << 20  # memory for IP fragments awaiting reassembly
    reassembly_timeout: float = 30.0 # RFC 791 suggests 15 s; Linux uses 30 s


@dataclass
class StackStats:
    packets_in: int = 0
    packets_out: int = 0             # packets handed to the driver (packets_to_send)
    bytes_in: int = 0
    bytes_out: int = 0
    malformed: int = 0               # failed to parse (counted, dropped)
    internal_errors: int = 0         # a bug of ours met while handling a packet (logged at ERROR)
    not_for_us: int = 0              # destination address is not ours
    unknown_protocol: int = 0
    no_connection: int = 0           # TCP segment matching no TCB nor listener
    listen_dropped: int = 0          # to a listener without SYN, ACK or RST: dropped silently
    rst_sent: int = 0
    rst_rate_limited: int = 0
    syn_dropped_backlog: int = 0     # SYN (or cookie ACK) dropped: listener's queues full
    syncookies_sent: int = 0         # cookie SYN-ACKs (no state kept)
    syncookies_ok: int = 0           # ACKs that validated as a cookie: connection created
    syncookies_failed: int = 0       # ACKs to a listener that did not validate (then RST)
    syncookie_eno_lost: int = 0      # cookie ACK whose ENO entry was gone: reset (fail safe)
    syncookie_mss_unfit: int = 0     # of syn_dropped_backlog: MSS below the cookie table's
    rst_peer_limited: int = 0        # of rst_rate_limited: the peer's own bucket was empty
    icmp_peer_limited: int = 0
    icmp_echo_replies: int = 0
    icmp_errors_in: int = 0
    icmp_rate_limited: int = 0
    icmp_unreach_sent: int = 0       # protocol / port unreachable, ICMPv6 parameter problem
    connections_opened: int = 0
    connections_accepted: int = 0
    acks_coalesced: int = 0          # pure ACKs superseded in their flush, never sent (acks.py)


class _TokenBucket:
    __slots__ = ("rate", "burst", "tokens", "last")

    def __init__(self, rate: float, burst: float | None = None) -> None:
        self.rate = rate
        self.burst = burst if burst is not None else max(rate / 10, 1.0)
        self.tokens = self.burst
        self.last = 0.0

    def take(self, now: float) -> bool:
        self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
        self.last = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class _PeerLimiter:
    """Token buckets per peer address in a table of at most `max_peers` entries (the least
    recently used is evicted, so many spoofed sources cannot grow memory), under one global
    bucket.  take() -> 0 allowed, 1 the peer's bucket is empty, 2 the global one is."""

    __slots__ = ("global_", "peer_rate", "peer_burst", "max_peers", "peers")

    def __init__(self, rate: float, peer_rate: float, max_peers: int) -> None:
        self.global_ = _TokenBucket(rate)
        self.peer_rate = peer_rate
        self.peer_burst = max(peer_rate / 4, 1.0)
        self.max_peers = max(1, max_peers)
        self.peers: dict[bytes, _TokenBucket] = {}

    def take(self, addr: bytes, now: float) -> int:
        peers = self.peers
        b = peers.pop(addr, None)
        if b is None:
            if len(peers) >= self.max_peers:
                del peers[next(iter(peers))]         # least recently used
            b = _TokenBucket(self.peer_rate, self.peer_burst)
            b.last = now
        peers[addr] = b                              # most recently used last
        if not b.take(now):
            return 1
        return 0 if self.global_.take(now) else 2


class Listener:
    """A passive OPEN on (address, port): the accept queue of established endpoints."""

    def __init__(self, core: "StackCore", addr: bytes | None, port: int, backlog: int,
                 options: dict[str, Any]) -> None:
        self.core = core
        self.addr = addr                  # packed address, or None for every address
        self.port = port
        self.backlog = max(1, backlog)
        self.options = options
        self.accept_queue: deque[Endpoint] = deque()
        self.half_open = 0                # handshakes (TCP or tcpcrypt) not finished yet
        self.cookie_eps: set[int] = set() # id() of cookie endpoints not yet ready (tcpcrypt)
        self.last_cookie = -1e18          # when we last sent a cookie SYN-ACK
        self.handler: Any = None          # the edge's server object (gets ready notices)
        self.closed = False

    def accept(self) -> Endpoint | None:
        return self.accept_queue.popleft() if self.accept_queue else None

    def endpoints(self) -> list[Endpoint]:
        """The open connections this listener has put in its accept queue (taken by accept()
        or not): a server's own clients, as asyncio's Server.close_clients() means them."""
        return [ep for ep in self.core.endpoints() if ep.accepted_by is self]

    def close(self) -> None:
        """Stop listening; endpoints not yet accepted are reset (like close(2) on a socket)."""
        if self.closed:
            return
        self.closed = True
        self.core.remove_listener(self)
        while self.accept_queue:
            ep = self.accept_queue.popleft()
            ep.abort(self.core.now)

    # --- told by the endpoints it opens (Endpoint.listener) ---------------------------

    def endpoint_established(self, ep: Endpoint) -> None:
        """`ep`, opened by this listener, is ready for the application: queue it."""
        self._done_opening(ep)
        ep.listener = None
        if self.closed:
            ep.abort(self.core.now)
            return
        ep.accepted_by = self
        self.accept_queue.append(ep)
        self.core.stats.connections_accepted += 1
        self.core.listener_ready(self)

    def endpoint_closed(self, ep: Endpoint) -> None:
        """`ep`, opened by this listener, ended before it was ready."""
        self._done_opening(ep)
        ep.listener = None

    @property
    def cookie_open(self) -> int:
        """Connections made from a SYN cookie whose endpoint is not ready yet (tcpcrypt
        handshake running); they count against the backlog, not against syn_backlog."""
        return len(self.cookie_eps)

    def _done_opening(self, ep: Endpoint) -> None:
        key = id(ep)
        if key in self.cookie_eps:
            self.cookie_eps.discard(key)
        else:
            self.half_open -= 1


class StackCore:
    """A host: addresses, connections, listeners.  Sans-IO."""

    def __init__(self, addresses: Iterable[str], config: StackConfig | None = None, *,
                 security: SecurityProvider | None = None, now: float = 0.0,
                 secret: bytes | None = None, rng: random.Random | None = None) -> None:
        self.config = config or StackConfig()
        if self.config.syncookies not in ("auto", "always", "never"):
            raise TcpStackError(f"StackConfig.syncookies must be 'auto', 'always' or 'never', "
                                f"not {self.config.syncookies!r}")
        self.addresses = [ipaddress.ip_address(a) for a in addresses]
        self._local = {a.packed for a in self.addresses}
        self.security = security
        self.now = now
        self._secret = secret if secret is not None else os.urandom(32)   # RFC 6528 3
        self._rng = rng or random.Random(int.from_bytes(os.urandom(8), "big"))
        self._conns: dict[tuple[bytes, int, bytes, int], Endpoint] = {}
        self._listeners: dict[tuple[bytes | None, int], Listener] = {}
        self._out: list[LinkPacket] = []
        # ACK coalescing over each flush (packets_to_send): a pure ACK superseded by a later
        # segment of its connection is not sent (tcpstack/host/acks.py for the rule).
        self.coalesce_acks = True
        self._acks = AckCoalescer()
        self._tcp_configs: dict[int, tuple[TCPConfig, TCPConfig]] = {}
        self._batch: dict[int, Endpoint] | None = None    # endpoints touched by this batch
        self._timers: list[tuple[float, int, Endpoint]] = []
        self._timer_of: dict[int, float] = {}            # id(endpoint) -> deadline in heap
        self._ready: list[Endpoint] = []                 # endpoints with new app events
        self._ready_listeners: list[Listener] = []
        # Autocorking: application writes wait for uncork() (the asyncio edge calls it once
        # per loop turn, before collecting packets).  Off for direct sans-IO use, where a
        # write is serviced at once.
        self.cork_writes = False
        self._corked: dict[int, Endpoint] = {}
        cfg = self.config
        self._rst_limiter = _PeerLimiter(cfg.rst_rate, cfg.rst_peer_rate, cfg.rate_limit_peers)
        self._icmp_limiter = _PeerLimiter(cfg.icmp_rate, cfg.icmp_peer_rate, cfg.rate_limit_peers)
        # Cookie SYN-ACKs that carried ENO: 4-tuple -> (cookie, SYN's ENO, SYN-ACK's ENO).
        self._cookie_eno: dict[tuple[bytes, int, bytes, int], tuple[int, bytes, bytes]] = {}
        self.stats = StackStats()
        self.on_packet: Callable[[str, bytes, float], None] | None = None   # capture hook
        # After every input to a connection (tracing state transitions; see tcpstack.tools.trace).
        self.on_service: Callable[[Endpoint, float], None] | None = None
        # ICMP echo replies to our ping(): (source, ident, seq, data, now).
        self.on_echo_reply: Callable[[str, int, int, bytes, float], None] | None = None
        self.ident = self._rng.randrange(1 << 16)
        # RFC 791 / RFC 8200 4.5 reassembly, bounded (an attacker can send fragments).
        self._reassembler = Reassembler(max_bytes=self.config.reassembly_bytes,
                                        timeout=self.config.reassembly_timeout)

    # --- driver interface (SimHost) ------------------------------------------------------

    def packets_to_send(self) -> list[LinkPacket]:
        """Everything queued since the last call, in order: one flush.  Pure ACKs that a
        later segment of their connection in the flush supersedes are left out (see
        coalesce_acks)."""
        out, self._out = self._out, []
        superseded = self._acks.take()
        if superseded:
            n = len(superseded)
            self.stats.acks_coalesced += n
            self.stats.packets_out -= n
            if n == 1:
                del out[superseded[0]]
            else:
                drop = set(superseded)
                out = [p for i, p in enumerate(out) if i not in drop]
        if out:
            self.stats.bytes_out += sum(map(len, out))
        if self.on_packet is not None:
            for p in out:
                self.on_packet("out", bytes(p) if type(p) is GSOFrame else p, self.now)
        return out

    def next_timer(self) -> float | None:
        heap = self._timers
        frag = self._reassembler.next_deadline()
        while heap:
            deadline, _, ep = heap[0]
            if self._timer_of.get(id(ep)) == deadline:
                return deadline if frag is None else min(deadline, frag)
            heapq.heappop(heap)       # stale entry
        return frag

    def handle_timer(self, now: float) -> None:
        self.now = now
        self._reassembler.expire(now)
        heap = self._timers
        while heap and heap[0][0] <= now:
            deadline, _, ep = heapq.heappop(heap)
            if self._timer_of.get(id(ep)) != deadline:
                continue
            del self._timer_of[id(ep)]
            ep.conn.handle_timer(now)
            self._service(ep, now)

    def receive_packets(self, packets: list[Any], now: float,
                        checksum_ok: list[bool] | None = None) -> None:
        """A batch read from the link at one instant.  Each connection is serviced once after
        the whole batch (one ACK, one segments_to_send, one timer update for all its
        segments), as Linux does for a GRO-merged batch."""
        self._batch = {}
        try:
            if checksum_ok is None:
                for p in packets:
                    self.receive_packet(p, now)
            else:
                for p, ok in zip(packets, checksum_ok):
                    self.receive_packet(p, now, checksum_ok=ok)
        finally:
            batch, self._batch = self._batch, None
            for ep in batch.values():
                self._service(ep, now)

    def receive_packet(self, packet: bytes | memoryview, now: float, *,
                       checksum_ok: bool = False) -> None:
        """One IP datagram from the link.  Malformed input is counted and dropped.
        checksum_ok: the link vouches for the TCP checksum (TUN checksum/GSO offload), which
        is then not recomputed; TCP segments may then exceed the MSS (GSO super-packets)."""
        self.now = now
        st = self.stats
        st.packets_in += 1
        st.bytes_in += len(packet)
        if self.on_packet is not None:
            self.on_packet("in", bytes(packet), now)
        payload: bytes | memoryview      # a view of the packet, or a reassembled datagram
        try:
            hdr, payload = parse_ip(packet)
        except ParseError as exc:
            st.malformed += 1
            log.debug("dropping malformed IP packet: %s", exc)
            return
        if hdr.dst not in self._local:
            st.not_for_us += 1
            return
        v4 = isinstance(hdr, IPv4Header)
        try:
            if hdr.is_fragment:
                whole = self._reassembler.add(hdr, payload, now)
                if whole is None:
                    return
                payload = whole
            proto = hdr.proto if v4 else hdr.next_header   # after reassembly (IPv6 ext hdrs)
            if proto == IPPROTO_TCP:
                self._receive_tcp(hdr, payload, now, checksum_ok)
            elif proto == (IPPROTO_ICMP if v4 else IPPROTO_ICMPV6):
                self._receive_icmp(hdr, payload, now, v6=not v4)
            else:
                st.unknown_protocol += 1
                if not hdr.is_fragment:
                    self._unreachable(hdr, packet, payload, proto, now)
        except ParseError as exc:
            st.malformed += 1
            log.debug("dropping malformed packet from %s: %s", _fmt(hdr.src), exc)
        except Exception:
            # Not the peer's fault: a bug here.  Never raise on peer input (one packet must
            # not take the host down), but never hide it either: counted apart from malformed
            # input and logged at ERROR, which fails any test that meets it.
            st.internal_errors += 1
            log.error("internal error on a packet from %s", _fmt(hdr.src), exc_info=True)

    # --- application interface -----------------------------------------------------------

    def link_tso(self, tso_max_size: int) -> None:
        """The link segments TCP super-packets up to `tso_max_size` payload bytes (TSO, e.g. a
        vnet TUN device): let the TCBs emit them, unless the configuration already sets a
        size.  Call it before any connection exists, so every TCB sees it."""
        cfg = self.config
        if tso_max_size and not cfg.tcp.tso_max_size:
            self.config = replace(cfg, tcp=replace(cfg.tcp, tso_max_size=tso_max_size))

    def check_options(self, options: dict[str, Any], api: str = "open_connection") -> None:
        """Refuse what cannot be honoured, before anything is sent (nothing is silently
        dropped): an option name that neither TCP (a TCPConfig field), the stack nor its
        security provider knows raises TypeError, as a misspelled keyword does in asyncio;
        asking for encryption that cannot happen raises ValueError."""
        sec = self.security
        known = _TCP_FIELDS | _CORE_OPTIONS | getattr(sec, "option_names", frozenset())
        unknown = options.keys() - known
        if unknown:
            raise TypeError(f"{api}() got an unexpected keyword argument {min(unknown)!r}")
        if options.get("require_encryption"):
            if sec is None:
                raise ValueError(f"{api}(require_encryption=True): this stack has no security "
                                 "provider (it was made with security=None), so nothing can "
                                 "be encrypted")
            if options.get("encrypt") is False:
                raise ValueError(f"{api}(): require_encryption=True contradicts encrypt=False")
        provider_check = getattr(sec, "check_options", None)
        if provider_check is not None:
            provider_check(options, api)        # e.g. a private tcpcrypt stack refuses encrypt=False
        if sec is None and options.get("app_aware"):
            raise ValueError(f"{api}(app_aware=...): this stack has no security provider "
                             "(security=None), so there is no TCP-ENO to carry the a bit")

    def listen(self, port: int, addr: str | None = None, *, backlog: int = 128,
               options: dict[str, Any] | None = None) -> Listener:
        if options:
            self.check_options(options, "start_server")
        packed = ipaddress.ip_address(addr).packed if addr else None
        if packed is not None and packed not in self._local:
            raise TcpStackError(f"cannot listen on {addr}: not an address of this stack")
        if port == 0:
            port = self._free_port(None, None)
        key = (packed, port)
        if key in self._listeners:
            raise TcpStackError(f"address already in use: {addr or '*'}:{port}")
        lst = Listener(self, packed, port, backlog, options or {})
        self._listeners[key] = lst
        return lst

    def connect(self, host: str, port: int, now: float, *, local_addr: str | None = None,
                local_port: int = 0, options: dict[str, Any] | None = None) -> Endpoint:
        """Active OPEN (RFC 9293 3.10.1): returns the endpoint; its SYN is queued."""
        if options:
            self.check_options(options)
        self.now = now
        raddr = _ip(host)
        laddr = _ip(local_addr) if local_addr else self._source_for(raddr)
        rp, lp = raddr.packed, laddr.packed
        if not local_port:
            local_port = self._free_port(lp, (rp, port))
        elif (lp, local_port, rp, port) in self._conns:
            raise TcpStackError(f"address in use: {laddr}:{local_port} -> {raddr}:{port}")
        options = options or {}
        local, remote = (str(laddr), local_port), (str(raddr), port)
        negotiator = self._negotiator(True, local, remote, options)
        conn = TCPConnection(local_port, port, iss=self._isn(lp, local_port, rp, port, now),
                             config=self._tcp_config(laddr, options), now=now, eno=negotiator,
                             ts_offset=self._ts_offset(lp, local_port, rp, port))
        ep = Endpoint(self, conn, local, remote, negotiator=negotiator, options=options,
                      key=(lp, local_port, rp, port))
        self._conns[ep.key] = ep
        self.stats.connections_opened += 1
        conn.connect(now)
        self._service(ep, now)
        return ep

    def ping(self, host: str, now: float, *, ident: int, seq: int, data: bytes = b"") -> None:
        """Send one ICMP/ICMPv6 echo request (RFC 792, RFC 4443 4.1); replies go to
        on_echo_reply."""
        self.now = now
        dst = ipaddress.ip_address(host)
        src = self._source_for(dst)
        self._out.append(icmp_mod.build_icmp_echo_request(src.packed, dst.packed, ident=ident,
                                                          seq=seq, data=data,
                                                          v6=dst.version == 6,
                                                          ttl=self.config.ttl))
        self.stats.packets_out += 1

    def pop_ready(self) -> list[Endpoint]:
        """Endpoints that queued application events since the last call."""
        r, self._ready = self._ready, []
        for ep in r:
            ep.in_ready = False
        return r

    def pop_ready_listeners(self) -> list[Listener]:
        r, self._ready_listeners = self._ready_listeners, []
        return r

    def endpoints(self) -> list[Endpoint]:
        return list(self._conns.values())

    def unacknowledged(self) -> list[Endpoint]:
        """The connections that still have something the peer has not acknowledged: bytes
        the application gave that are not sent or not acknowledged yet, or a FIN sent and
        not acknowledged (Endpoint.all_sent_acknowledged)."""
        return [ep for ep in self._conns.values() if not ep.all_sent_acknowledged]

    def close(self, now: float) -> None:
        """Abort every connection and stop listening."""
        for lst in list(self._listeners.values()):
            lst.close()
        for ep in list(self._conns.values()):
            ep.abort(now)

    # --- told by endpoints and listeners ---------------------------------------------

    def app_input(self, ep: Endpoint, now: float, *, write: bool = False) -> None:
        """The application acted on `ep` (wrote, closed, aborted, resumed reading): service
        the connection now, or for a write while cork_writes is on, at uncork()."""
        self.now = now
        if write and self.cork_writes:
            # Autocorking (as Linux tcp_autocork): an application write is only queued; the
            # connection is serviced once, at uncork(), for all the writes made until then,
            # so consecutive writes leave as full (TSO) segments instead of one flight per
            # write with a short remainder.
            self._corked[id(ep)] = ep
            return
        self._service(ep, now)

    def listener_ready(self, lst: Listener) -> None:
        """`lst` has a new endpoint in its accept queue (pop_ready_listeners)."""
        self._ready_listeners.append(lst)

    def remove_listener(self, lst: Listener) -> None:
        """Stop demultiplexing to `lst` (Listener.close)."""
        if self._listeners.get((lst.addr, lst.port)) is lst:
            del self._listeners[(lst.addr, lst.port)]

    def uncork(self, now: float) -> None:
        """Service the connections written to since the last call (see cork_writes)."""
        if self._corked:
            self.now = now
            corked, self._corked = self._corked, {}
            for ep in corked.values():
                self._service(ep, now)

    # --- internals -----------------------------------------------------------------------

    def _service(self, ep: Endpoint, now: float) -> None:
        """After any input to a connection: app events, outgoing segments, its timer."""
        conn = ep.conn
        ep.process(now)
        if self.on_service is not None:
            self.on_service(ep, now)
        segs = conn.segments_to_send(now)
        if segs:
            key = ep.key
            lp, rp = key[0], key[2]
            ttl = self.config.ttl
            out = self._out
            acks = self._acks if self.coalesce_acks else None
            for seg in segs:
                if seg.gso_size and len(seg.payload) > seg.gso_size:
                    out.append(build_gso(seg, lp, rp, ttl=ttl))      # TSO: payload not copied
                    continue                                         # (and never a pure ACK)
                if acks is not None:
                    acks.note(key, len(out), seg.flags, seg.ack, bool(seg.payload))
                out.append(build_ip_tcp(seg, lp, rp, ttl=ttl))
            self.stats.packets_out += len(segs)
        if (ep.events or ep.notify) and not ep.in_ready:
            ep.in_ready = True
            self._ready.append(ep)
        if conn.is_terminated:
            self._conns.pop(ep.key, None)
            self._timer_of.pop(id(ep), None)
            if not ep.closed:
                ep.mark_closed(None)
                if not ep.in_ready:
                    ep.in_ready = True
                    self._ready.append(ep)
            return
        deadline = conn.next_timer()
        eid = id(ep)
        if deadline is None:
            self._timer_of.pop(eid, None)
        elif self._timer_of.get(eid) != deadline:
            self._timer_of[eid] = deadline
            heapq.heappush(self._timers, (deadline, next(_counter), ep))

    def _receive_tcp(self, hdr: Any, payload: bytes | memoryview, now: float,
                     checksum_ok: bool = False) -> None:
        seg = parse_tcp(payload, hdr.src, hdr.dst, verify_checksum=not checksum_ok)
        key = (hdr.dst, seg.dst_port, hdr.src, seg.src_port)
        ep = self._conns.get(key)
        if ep is not None:
            conn = ep.conn
            conn.receive(seg, now)
            reopen = conn.reopen_syn
            if reopen is None:
                batch = self._batch
                if batch is not None:
                    batch[id(ep)] = ep        # serviced once at the end of the batch
                else:
                    self._service(ep, now)
                return
            self._service(ep, now)
            # RFC 6191: a new SYN ended TIME-WAIT; _service() removed the old TCB, so the
            # SYN now goes to the listener like any other.
            conn.reopen_syn = None
            seg = reopen
        flags = seg.flags
        lst = self._listeners.get((hdr.dst, seg.dst_port)) or self._listeners.get((None, seg.dst_port))
        if lst is not None:
            ctl = flags & (SYN | ACK | RST)
            if ctl == SYN:
                self._accept_syn(lst, hdr, seg, now)
                return
            if not ctl:
                # RFC 9293 3.10.7.2 (LISTEN) "fourth, other data or control": a segment
                # with neither SYN, ACK nor RST (a bare FIN, text without ACK) is dropped
                # without a reply.  (An ACK gets the RST of "second", below; SYN|ACK too.)
                self.stats.listen_dropped += 1
                return
            # RFC 4987 3.6: an ACK matching no TCB may complete a cookie handshake; only
            # checked while cookies were recently sent (as Linux), so ACK floods cost little.
            if (ctl == ACK and self.config.syncookies != "never"
                    and now - lst.last_cookie <= (sc.MAX_AGE + 1) * sc.COOKIE_SLOT
                    and self._cookie_ack(lst, hdr, seg, now)):
                return
        self.stats.no_connection += 1
        if not flags & RST:
            self._send_rst_for(hdr, seg, now)

    def _accept_syn(self, lst: Listener, hdr: Any, seg: TCPSegment, now: float) -> None:
        # RFC 9293 3.10.7.2 (LISTEN, SYN).  Bounded queues (RFC 4987 3.1): as in BSD, the
        # backlog covers handshakes in progress plus connections not yet accepted, and
        # half-open connections are capped separately.  A dropped SYN is retransmitted by
        # the client, by which time the application may have accepted.
        # With SYN cookies (RFC 4987 3.6, Linux's policy): a full SYN queue (the half-open
        # cap, or handshakes + unaccepted connections reaching the backlog) gets a cookie
        # SYN-ACK and keeps no state; only a full accept queue drops the SYN.
        queued = len(lst.accept_queue)
        mode = self.config.syncookies
        if queued >= lst.backlog:
            self.stats.syn_dropped_backlog += 1
            return
        if (mode == "always" or lst.half_open + queued + lst.cookie_open >= lst.backlog
                or lst.half_open >= self.config.syn_backlog):
            if mode != "never":
                self._send_cookie(lst, hdr, seg, now)
            else:
                self.stats.syn_dropped_backlog += 1
            return
        local = (_fmt(hdr.dst), seg.dst_port)
        remote = (_fmt(hdr.src), seg.src_port)
        negotiator = self._negotiator(False, local, remote, lst.options)
        lp, rp = hdr.dst, hdr.src
        conn = TCPConnection(seg.dst_port, seg.src_port,
                             iss=self._isn(lp, seg.dst_port, rp, seg.src_port, now),
                             config=self._tcp_config(_ip(lp), lst.options), now=now,
                             eno=negotiator,
                             ts_offset=self._ts_offset(lp, seg.dst_port, rp, seg.src_port))
        ep = Endpoint(self, conn, local, remote, negotiator=negotiator,
                      options=dict(lst.options), listener=lst,
                      key=(lp, seg.dst_port, rp, seg.src_port))
        self._conns[ep.key] = ep
        lst.half_open += 1
        conn.accept_syn(seg, now)
        self._service(ep, now)

    def _send_cookie(self, lst: Listener, hdr: Any, seg: TCPSegment, now: float) -> None:
        """A stateless SYN-ACK whose ISN is a SYN cookie (RFC 4987 3.6).

        Options: our MSS; the peer's MSS is rounded down to a table value kept in the cookie
        (RFC 9293 MUST-16; a SYN whose MSS is below every table value is dropped, see
        syncookies.mss_index).
        WS and SACK-permitted are offered only when the peer sent timestamps, and are kept
        in the low bits of our TSval (as Linux); without timestamps none of the three.

        TCP-ENO (RFC 8547): the session ID of tcpcrypt (RFC 8548 4.2 / RFC 8547 4.8) covers
        the negotiation transcript, i.e. the SYN's and the SYN-ACK's ENO options, which the
        final ACK does not repeat.  So when the SYN-ACK answers ENO, both option contents
        go into a bounded table (``syncookie_eno_entries``, oldest evicted) under the
        4-tuple with the cookie as check value, and the cookie says "ENO promised".  If the
        entry is gone when the ACK arrives, a plain connection would contradict the
        SYN-ACK (and an encrypted one cannot rebuild the transcript): we reset it and count
        ``syncookie_eno_lost``; the client retries.  No ENO in the SYN-ACK means plain.
        The SYN-ACK's ENO option must come out the same when the ACK rebuilds it, so a
        cookie answer declines session resumption (RFC 8548 3.5 lets B answer a resumption
        offer with fresh key exchange): answering it takes a one-time ticket from the
        session cache, which the ACK could not take again.
        """
        lp, rp, lport, rport = hdr.dst, hdr.src, seg.dst_port, seg.src_port
        v6 = len(lp) == 16
        st = self.stats
        mss_index = sc.mss_index(seg.mss, v6)
        if mss_index is None:
            # RFC 9293 MUST-16: a cookie could only promise a table MSS above the peer's.
            st.syncookie_mss_unfit += 1
            st.syn_dropped_backlog += 1
            return
        cfg = self._tcp_config(ipaddress.ip_address(lp), lst.options)
        ts = cfg.timestamps and seg.tsval is not None
        ws = ts and cfg.window_scaling and seg.wscale is not None
        sackok = ts and cfg.sack and seg.sack_permitted
        eno: tuple[bytes, ...] = ()
        if seg.eno and self.security is not None:
            neg = self._negotiator(False, (_fmt(lp), lport), (_fmt(rp), rport),
                                   _cookie_options(lst.options))
            if neg is not None:
                neg.on_receive(SYN, seg.eno)
                eno = neg.syn_options()
        if eno and TCPConnection._syn_option_len(ws, sackok, ts, eno) > 40:
            ts = ws = sackok = False      # no room for TS: no room to remember WS / SACK
        data = mss_index | (sc.DATA_ENO if eno else 0)
        cookie = sc.make_cookie(self._secret, lp, lport, rp, rport, seg.seq,
                                sc.time_slot(now), data)
        if eno:
            key = (lp, lport, rp, rport)
            table = self._cookie_eno
            table.pop(key, None)
            if len(table) >= self.config.syncookie_eno_entries:
                del table[next(iter(table))]
            table[key] = (cookie, seg.eno[0], eno[0])
        tsval = None
        if ts:
            ts_now = (int(now * 1000) + self._ts_offset(lp, lport, rp, rport)) & 0xFFFFFFFF
            tsval = sc.cookie_tsval(ts_now, sc.encode_ts_options(seg.wscale if ws else None,
                                                                 sackok))
        wscale = TCPConnection.wscale_for(cfg) if ws else None   # as a TCB would offer
        synack = TCPSegment(lport, rport, cookie, (seg.seq + 1) & 0xFFFFFFFF, SYN | ACK,
                            min(cfg.recv_buffer, 0xFFFF), mss=cfg.mss, wscale=wscale,
                            sack_permitted=sackok, tsval=tsval,
                            tsecr=seg.tsval if ts and seg.tsval is not None else 0, eno=eno)
        if self.coalesce_acks:        # (a SYN-ACK may supersede a TIME-WAIT ACK of this 4-tuple)
            self._acks.note((lp, lport, rp, rport), len(self._out), synack.flags, synack.ack, False)
        self._out.append(build_ip_tcp(synack, lp, rp, ttl=self.config.ttl))
        lst.last_cookie = now
        st.syncookies_sent += 1
        st.packets_out += 1

    def _cookie_ack(self, lst: Listener, hdr: Any, seg: TCPSegment, now: float) -> bool:
        """An ACK to a listener: if it returns a valid cookie, create the connection (in
        SYN-RECEIVED, then the ACK makes it ESTABLISHED).  False: not a cookie (RST it)."""
        lp, rp, lport, rport = hdr.dst, hdr.src, seg.dst_port, seg.src_port
        peer_isn = (seg.seq - 1) & 0xFFFFFFFF
        iss = (seg.ack - 1) & 0xFFFFFFFF
        data = sc.check_cookie(self._secret, lp, lport, rp, rport, peer_isn, iss,
                               sc.time_slot(now))
        st = self.stats
        if data is None:
            st.syncookies_failed += 1
            return False
        if len(lst.accept_queue) + lst.cookie_open >= lst.backlog:
            st.syn_dropped_backlog += 1   # accept queue full: drop, the peer retransmits
            return True
        key = (lp, lport, rp, rport)
        laddr = ipaddress.ip_address(lp)
        local, remote = (str(laddr), lport), (_fmt(rp), rport)
        negotiator = None
        eno: tuple[bytes, ...] = ()
        sent: bytes | None = None
        if data & sc.DATA_ENO:
            entry = self._cookie_eno.pop(key, None)
            if entry is not None and entry[0] == iss:
                negotiator = self._negotiator(False, local, remote, _cookie_options(lst.options))
                eno, sent = (entry[1],), entry[2]
            if negotiator is None:
                st.syncookie_eno_lost += 1
                self._send_rst_for(hdr, seg, now)
                return True
        cfg = self._tcp_config(laddr, lst.options)
        ts = seg.tsval is not None and cfg.timestamps
        ws, sackok = sc.decode_ts_options(seg.tsecr) if ts else (None, False)
        if not cfg.window_scaling:
            ws = None
        sackok = sackok and cfg.sack
        syn = TCPSegment(rport, lport, peer_isn, 0, SYN, 0,
                         mss=sc.mss_from_index(data & 3, len(lp) == 16), wscale=ws,
                         sack_permitted=sackok, tsval=seg.tsval if ts else None, eno=eno)
        conn = TCPConnection(lport, rport, iss=iss, config=cfg, now=now, eno=negotiator,
                             ts_offset=self._ts_offset(lp, lport, rp, rport))
        conn.accept_cookie(syn, (ws is not None, sackok, ts), min(cfg.recv_buffer, 0xFFFF), now)
        if negotiator is not None and negotiator.syn_options() != (sent,):
            # The rebuilt negotiation would not match the SYN-ACK we sent: fail safe.
            st.syncookie_eno_lost += 1
            self._send_rst_for(hdr, seg, now)
            return True
        ep = Endpoint(self, conn, local, remote, negotiator=negotiator,
                      options=dict(lst.options), listener=lst, key=key)
        self._conns[key] = ep
        lst.cookie_eps.add(id(ep))
        st.syncookies_ok += 1
        conn.receive(seg, now)
        self._service(ep, now)
        return True

    def _send_rst_for(self, hdr: Any, seg: TCPSegment, now: float) -> None:
        """RFC 9293 3.10.7.1: the reset for a segment that matches no connection."""
        limited = self._rst_limiter.take(hdr.src, now)
        if limited:
            self.stats.rst_rate_limited += 1
            if limited == 1:
                self.stats.rst_peer_limited += 1
            return
        if seg.flags & ACK:
            rst = TCPSegment(seg.dst_port, seg.src_port, seg.ack, 0, RST, 0)
        else:
            rst = TCPSegment(seg.dst_port, seg.src_port, 0, (seg.seq + seg.seg_len) & 0xFFFFFFFF,
                             RST | ACK, 0)
        self._out.append(build_ip_tcp(rst, hdr.dst, hdr.src, ttl=self.config.ttl))
        self.stats.rst_sent += 1
        self.stats.packets_out += 1

    def _receive_icmp(self, hdr: Any, payload: bytes | memoryview, now: float, *, v6: bool) -> None:
        msg = icmp_mod.parse_icmp(payload, hdr.src, hdr.dst, v6=v6)
        echo_request = icmp_mod.ICMP6_ECHO_REQUEST if v6 else icmp_mod.ICMP_ECHO_REQUEST
        if msg.type == echo_request:
            if not self.config.answer_ping:
                return
            limited = self._icmp_limiter.take(hdr.src, now)
            if limited:
                self.stats.icmp_rate_limited += 1
                if limited == 1:
                    self.stats.icmp_peer_limited += 1
                return
            self._out.append(icmp_mod.build_icmp_echo_reply(msg, hdr.dst, hdr.src, v6=v6,
                                                            ttl=self.config.ttl))
            self.stats.icmp_echo_replies += 1
            self.stats.packets_out += 1
            return
        if msg.type == (icmp_mod.ICMP6_ECHO_REPLY if v6 else icmp_mod.ICMP_ECHO_REPLY):
            if self.on_echo_reply is not None:
                self.on_echo_reply(_fmt(hdr.src), msg.ident, msg.seq, bytes(msg.payload), now)
            return
        quoted = icmp_mod.quoted_tcp_ports_seq(msg)
        if quoted is None:
            return
        self.stats.icmp_errors_in += 1
        src, dst, sport, dport, seq = quoted
        ep = self._conns.get((src, sport, dst, dport))
        if ep is None:
            return
        conn = ep.conn
        # RFC 5927 4.1 / RFC 5961-style check: the quoted sequence number must be in flight.
        if not _seq_in(seq, conn.snd_una, conn.snd_nxt):
            return
        if icmp_mod.is_packet_too_big(msg):
            if msg.mtu:
                conn.set_path_mtu(msg.mtu)
        else:
            hard = icmp_mod.is_hard_error(msg)
            conn.icmp_error(HostUnreachableError(
                f"ICMP {icmp_mod.describe(msg)} from {_fmt(hdr.src)} for {ep.remote}"), now, hard=hard)
        self._service(ep, now)

    def _unreachable(self, hdr: Any, packet: bytes | memoryview, payload: bytes | memoryview,
                     proto: int, now: float) -> None:
        """The ICMP error for a datagram to us whose protocol we do not speak:

        - RFC 1122 4.1.3.1: UDP to a port nobody listens on (here: every port) SHOULD get
          port unreachable: ICMP 3/3, ICMPv6 1/4 (RFC 4443 3.1).  A malformed UDP datagram
          (short, bad length or checksum) is counted and dropped, as Linux does.
        - RFC 1122 3.2.2.1: another transport protocol gets protocol unreachable (3/2).
        - RFC 8200 4: an unrecognized Next Header gets an ICMPv6 parameter problem, code 1,
          the pointer at the offending Next Header field (6 in the fixed header, else the
          first octet of the last extension header).  No Next Header (59) is not an error.

        Never about an ICMP error, a multicast/broadcast destination or a non-unicast
        source (RFC 1122 3.2.2, RFC 4443 2.4(e); icmp.error_allowed), and under the same
        per-peer and global ICMP rate limits as echo replies (RFC 1812 4.3.2.8, RFC 4443
        2.4(f)).  Reassembled datagrams get none (we keep no copy of the first fragment;
        RFC 1122 3.2.2 only requires silence for the non-initial ones)."""
        st = self.stats
        v6 = hdr.version == 6
        if proto == IPPROTO_UDP:
            if not _udp_ok(payload, hdr.src, hdr.dst, v6):
                st.malformed += 1
                return
            typ, code = ((icmp_mod.ICMP6_DEST_UNREACH, icmp_mod.UNREACH6_PORT) if v6 else
                         (icmp_mod.ICMP_DEST_UNREACH, icmp_mod.UNREACH_PORT))
        elif not v6:
            typ, code = icmp_mod.ICMP_DEST_UNREACH, icmp_mod.UNREACH_PROTOCOL
        elif proto == 59:        # RFC 8200 4.7: No Next Header; the rest is ignored
            return
        else:
            typ, code = icmp_mod.ICMP6_PARAM_PROBLEM, icmp_mod.PARAM6_UNKNOWN_NEXT_HEADER
        original = packet[:40 + hdr.payload_length] if v6 else packet[:hdr.total_length]
        if not icmp_mod.error_allowed(original):
            return
        limited = self._icmp_limiter.take(hdr.src, now)
        if limited:
            st.icmp_rate_limited += 1
            if limited == 1:
                st.icmp_peer_limited += 1
            return
        pointer = 0
        if typ == icmp_mod.ICMP6_PARAM_PROBLEM:
            exts = hdr.ext_headers
            pointer = 40 + sum(len(raw) for _, raw in exts[:-1]) if exts else 6
        self._out.append(icmp_mod.build_icmp_error(original, hdr.dst, hdr.src, v6=v6, type=typ,
                                                   code=code, pointer=pointer,
                                                   ttl=self.config.ttl))
        st.icmp_unreach_sent += 1
        st.packets_out += 1

    def _negotiator(self, active: bool, local: Addr, remote: Addr, options: dict[str, Any]) -> Any:
        if self.security is None or options.get("encrypt") is False:
            return None
        return self.security.negotiator(active=active, local=local, remote=remote, options=options)

    def _tcp_config(self, laddr: Any, options: dict[str, Any] | None = None) -> TCPConfig:
        """The TCP configuration for a connection from `laddr`: MSS = MTU - IP header - TCP
        header (RFC 9293 3.7.1; 20-byte IPv4, 40-byte IPv6 header, RFC 8200), with the
        connection's own TCP options (any TCPConfig field given to open_connection /
        start_server, e.g. nodelay=True, congestion_control="newreno", keepalive=True)."""
        cached = self._tcp_configs.get(laddr.version)
        if cached is None or cached[0] is not self.config.tcp:
            iph = 20 if laddr.version == 4 else 40
            cfg = replace(self.config.tcp, mss=self.config.mtu - iph - 20, ip_header_size=iph)
            cached = self._tcp_configs[laddr.version] = (self.config.tcp, cfg)
        cfg = cached[1]
        if options:
            keys = _TCP_FIELDS.intersection(options)   # set operation in C: per-SYN path
            if keys:
                cfg = replace(cfg, **{k: options[k] for k in keys})
        return cfg

    def _isn(self, lp: bytes, lport: int, rp: bytes, rport: int, now: float) -> int:
        # RFC 6528 3: ISN = M + F(localip, localport, remoteip, remoteport, secretkey),
        # M a 4-microsecond timer, F a keyed PRF (BLAKE2s keyed with the stack secret).
        f = hashlib.blake2s(lp + lport.to_bytes(2, "big") + rp + rport.to_bytes(2, "big"),
                            key=self._secret, digest_size=4).digest()
        return (int(now * 250_000) + int.from_bytes(f, "big")) & 0xFFFFFFFF

    def _ts_offset(self, lp: bytes, lport: int, rp: bytes, rport: int) -> int:
        # RFC 7323 7.1: a per-connection random offset for TSval (here a keyed hash).
        f = hashlib.blake2s(b"ts" + lp + lport.to_bytes(2, "big") + rp + rport.to_bytes(2, "big"),
                            key=self._secret, digest_size=4).digest()
        return int.from_bytes(f, "big")

    def _free_port(self, lp: bytes | None, remote: tuple[bytes, int] | None) -> int:
        lo, hi = self.config.ephemeral_ports
        n = hi - lo + 1
        start = self._rng.randrange(n)
        for i in range(n):
            port = lo + (start + i) % n
            if remote is None:
                if (None, port) not in self._listeners and not any(
                        k[1] == port for k in self._listeners):
                    return port
            elif (lp, port, remote[0], remote[1]) not in self._conns and \
                    (None, port) not in self._listeners and (lp, port) not in self._listeners:
                return port
        raise TcpStackError("no free ephemeral port")

    def _source_for(self, raddr: Any) -> Any:
        for a in self.addresses:
            if a.version == raddr.version:
                return a
        raise TcpStackError(f"no local IPv{raddr.version} address to reach {raddr}")


def _cookie_options(options: dict[str, Any]) -> dict[str, Any]:
    """Listener options for a cookie handshake's ENO negotiator: no resumption (stateless,
    deterministic answer; see StackCore._send_cookie)."""
    return dict(options, resume=False)


def _udp_ok(udp: bytes | memoryview, src: bytes, dst: bytes, v6: bool) -> bool:
    """A well-formed UDP datagram (RFC 768; RFC 8200 8.1: the checksum is mandatory over
    IPv6, optional (0) over IPv4)."""
    n = len(udp)
    if n < 8 or int.from_bytes(udp[4:6], "big") != n:
        return False
    if not v6 and udp[6] == 0 and udp[7] == 0:
        return True
    return ones_sum(udp, pseudo_header_sum(src, dst, IPPROTO_UDP, n)) == 0


def _seq_in(seq: int, lo: int, hi: int) -> bool:
    """lo <= seq < hi modulo 2**32, or seq == lo when nothing is in flight."""
    return (seq - lo) & 0xFFFFFFFF <= (hi - lo) & 0xFFFFFFFF


def _fmt(packed: bytes) -> str:
    # Cached: every SYN and connect formats both addresses (ipaddress costs ~3 us each).
    return _fmt_cached(packed if type(packed) is bytes else bytes(packed))


@functools.lru_cache(maxsize=4096)
def _fmt_cached(packed: bytes) -> str:
    return str(ipaddress.ip_address(packed))


# Parsed addresses (immutable objects), cached: connect() and every SYN parse one or two.
_ip = functools.lru_cache(maxsize=4096)(ipaddress.ip_address)

