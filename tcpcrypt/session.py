"""The tcpcrypt session: a sans-IO transform of one connection's byte stream (RFC 8548).

Bytes in, bytes out; no sockets, no clock.  Implements:
  3.2  negotiation results from TCP-ENO: fresh key exchange (B sent the TEP with v = 0) or
       resumption (B sent v = 1 and both hosts sent matching identifier halves); the offers
       an active opener makes (make_offers) and a passive opener's answer (make_responder),
       including 3.5's "v = 1 with less than 9 bytes of data is a fresh offer"
  3.3  Init1 / Init2 exchange, ES, PRK = Extract(N_A, eno_transcript | Init1 | Init2 | ES),
       B's AEAD choice, A's check that B chose an offered AEAD, key validation failures abort
  3.4  session ID
  3.5  resumption with a cached ss[i] (keys of the ORIGINAL role, sn[i] = nonce_a | nonce_b),
       caching ss[i+1], cache policies, forget()
  3.6  encryption frames; frame offsets count the whole TCP data stream (Init message included)
  3.7  FINp: end-of-file only on an authenticated FINp; a TCP FIN without it is an error;
       URGp is parsed (the urgent index is recorded, the data delivered in line)
  3.8  rekeying: local/remote generations, rekey = 1 on the first frame of a new local
       generation, the mandatory immediate answer to rekey = 1, one empty-frame rekey at a time,
       automatic rekey at the configured AEAD usage limits; old keys are dropped at once (we
       encrypt every byte exactly once: the TCP layer retransmits the bytes we produced)
  3.9  keep-alive through rekeying (keepalive())
A key log (tcpcrypt/keylog.py), when given, is told mk[0] once at key setup (_install).
After any error the session is dead: every later call raises the same error.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any, Callable, Hashable, Protocol, Sequence

from tcpstack.wire.buffers import Buffer

from . import keys
from .eno import V_BIT, TEPOffer
from .errors import TcpcryptError, TcpcryptProtocolError
from .keylog import KeyLog, KeyLogEntry
from .frames import (CONTROL_REKEY, FLAG_FINP, FLAG_URGP, FRAME_HEADER, FRAME_HEADER_LEN, U16,
                     FrameKey, frame_len, open_into, seal_into)
from .messages import (INIT1_MAGIC, INIT2_MAGIC, build_init1, build_init2, choose_aead,
                       message_length, parse_init1, parse_init2)
from .resumption import ResumptionTicket, SessionCache
from .suites import AEADS, N_A_LEN, N_B_LEN, TAG_LEN, TEPS, AEADSuite, TcpcryptConfig

log = logging.getLogger(__name__)

_FRAME_OVERHEAD = frame_len(0)   # control, clen, flags, tag: 20 bytes a frame (4.2, 4.2.1)
_MIN_RESUME_DATA = keys.RESUME_HALF_LEN          # 3.5: fewer bytes => a fresh offer
_MAX_RESUME_DATA = keys.RESUME_HALF_LEN + 8      # identifier half + nonce of 0..8 bytes


class ENOResultLike(Protocol):
    """What tcpcrypt needs from tcpcrypt.eno.ENOResult (read only: ENOResult is frozen)."""
    @property
    def tep(self) -> int: ...
    @property
    def role(self) -> str: ...
    @property
    def local_data(self) -> bytes: ...
    @property
    def peer_data(self) -> bytes: ...
    @property
    def transcript(self) -> bytes: ...
    @property
    def local_offers(self) -> tuple[Any, ...]: ...
    @property
    def peer_offers(self) -> tuple[Any, ...]: ...


# --- what goes into the SYNs (3.2, 3.5) ------------------------------------------------------

def make_offers(config: TcpcryptConfig, cache: SessionCache | None, peer: Hashable,
                *, rng: Callable[[int], bytes] = os.urandom) -> list[TEPOffer]:
    """The TEP suboptions of an active opener's SYN, in increasing order of priority.

    One v = 0 suboption per configured TEP.  When resumption is allowed and the cache holds a
    secret for this peer (same TEP and AEAD still acceptable), that TEP's suboption becomes a
    resumption suboption (identifier half of our ORIGINAL role + a fresh nonce, Figures 2/3)
    and moves to the end (highest priority): resuming costs no public-key operation, and a
    resumption suboption also offers fresh key exchange with its TEP (3.2).  Proposing
    consumes the secret, successful or not (3.5: lowest unused i).
    """
    offers = [TEPOffer(t) for t in config.teps]
    if not (config.resumption and cache is not None):
        return offers
    head = cache.peek(peer)
    if head is None or head[0] not in config.teps or head[1] not in config.aeads:
        return offers
    ticket = cache.take_for_offer(peer, config.teps, keep_chain=config.cache_secrets)
    if ticket is None:
        return offers
    nonce = rng(config.nonce_len)
    offers = [o for o in offers if o.tep != ticket.tep]
    offers.append(TEPOffer(ticket.tep, ticket.local_half + nonce))
    log.debug("offering resumption of ss[%d] (TEP %#x) to %r", ticket.index, ticket.tep, peer)
    return offers


def make_responder(config: TcpcryptConfig, cache: SessionCache | None, peer: Hashable,
                   *, rng: Callable[[int], bytes] = os.urandom
                   ) -> Callable[[Sequence[Any]], list[TEPOffer]]:
    """A passive opener's answer to the active opener's TEP suboptions (3.2, 3.5).

    Resume when a suboption of ours carries an identifier half naming a cached secret with the
    same TEP (answer with the other half and our nonce); otherwise answer with the single
    most preferred TEP (ours, increasing order) that the peer offered, with v = 0.  A v = 1
    suboption with less than 9 bytes of data counts as a fresh offer of its TEP (3.5).
    Returns [] when nothing is acceptable.
    """
    def respond(peer_offers: Sequence[Any]) -> list[TEPOffer]:
        if config.resumption and cache is not None:
            head = cache.peek(peer)
            if head is not None and head[1] in config.aeads:
                for o in reversed(tuple(peer_offers)):
                    data = bytes(o.data)
                    if (o.tep in config.teps and o.tep == head[0]
                            and _MIN_RESUME_DATA <= len(data) <= _MAX_RESUME_DATA):
                        ticket = cache.take_for_answer(peer, o.tep, data[:_MIN_RESUME_DATA],
                                                       keep_chain=config.cache_secrets)
                        if ticket is not None:
                            log.debug("accepting resumption of ss[%d] (TEP %#x) from %r",
                                      ticket.index, o.tep, peer)
                            return [TEPOffer(o.tep, ticket.local_half + rng(config.nonce_len))]
        offered = {o.tep for o in peer_offers}
        for tep in reversed(config.teps):
            if tep in offered:
                return [TEPOffer(tep)]
        return []
    return respond


def make_validator(config: TcpcryptConfig, cache: SessionCache | None, peer: Hashable
                   ) -> Callable[[Any, Any], bool]:
    """TCP-ENO's validate(a_sub, b_sub) hook (RFC 8547 4.5 rules 2-3) for tcpcrypt TEPs.

    A pair where host B sent v = 0 is fresh key exchange: valid.  A pair where B sent a
    resumption suboption is valid only if A sent one too (9..17 bytes each) and the two
    identifier halves are the halves of the resume[i] this host holds a ticket for (taken by
    make_offers or make_responder).  3.5: an active opener that receives "an identifier-half
    that does not match ... MUST ignore that suboption".
    """
    def validate(a_sub: Any, b_sub: Any) -> bool:
        b_data = bytes(b_sub.data)
        if a_sub.tep != b_sub.tep or b_sub.tep not in TEPS:
            return a_sub.tep == b_sub.tep
        if not b_data:
            return True
        a_data = bytes(a_sub.data)
        if cache is None or not (_MIN_RESUME_DATA <= len(a_data) <= _MAX_RESUME_DATA
                                 and _MIN_RESUME_DATA <= len(b_data) <= _MAX_RESUME_DATA):
            return False
        a_half, b_half = a_data[:_MIN_RESUME_DATA], b_data[:_MIN_RESUME_DATA]
        for mine, theirs in ((a_half, b_half), (b_half, a_half)):
            t = cache.pending(peer, b_sub.tep, mine)
            if t is not None and t.peer_half == theirs:
                return True
        return False
    return validate


# --- the session -----------------------------------------------------------------------------

_WAIT_INIT1 = "wait-init1"
_WAIT_INIT2 = "wait-init2"
_OPEN = "open"


class TcpcryptSession:
    """One tcpcrypt connection as a transform between TCP's byte stream and the application."""

    def __init__(self, result: ENOResultLike, config: TcpcryptConfig,
                 cache: SessionCache | None = None, peer: Hashable = None, *,
                 rng: Callable[[int], bytes] = os.urandom, keylog: KeyLog | None = None) -> None:
        if result.tep not in TEPS:
            raise TcpcryptProtocolError(f"TEP {result.tep:#x} is not a tcpcrypt TEP")
        if result.role not in ("A", "B"):
            raise TcpcryptProtocolError(f"bad ENO role {result.role!r}")
        self.role: str = result.role
        self.tep: int = result.tep
        self.config = config
        self.cache = cache
        self.peer = peer
        self._rng = rng
        self._keylog = keylog      # tcpcrypt/keylog.py: told mk[0] once, at key setup
        self._ka = TEPS[result.tep]
        self._transcript = bytes(result.transcript)

        self.established = False
        self.eof_received = False
        self.session_id: bytes | None = None
        self.aead: int | None = None
        self.resumed = False
        self.urgent_index: int | None = None   # last URGp: index of the last urgent app byte (3.7)

        self._dead: TcpcryptError | None = None
        self._started = False
        self._state = _OPEN
        self._rx = bytearray()
        self._rx_need = 0          # length of the partial frame held in _rx, 0 if not known
        self._rx_offset = 0        # TCP stream offset of the next unprocessed received byte
        self._tx_offset = 0        # TCP stream offset of the next byte we emit (3.6)
        self._app_rx = 0           # application bytes delivered so far
        self._held: list[bytes] = []
        self._close_requested = False
        self._fin_sent = False
        self._chain_id: int | None = None
        self._private: Any = None
        self._init1: Any = None
        self._writer_was_a = self.role == "A"
        self._mk: dict[int, bytes] = {}
        self._local_gen = 0
        self._remote_gen = 0
        self._tx_key: FrameKey | None = None
        self._rx_key: FrameKey | None = None
        self._tx_rekey = False     # the next frame is the first of a new local generation
        self._tx_frames = 0        # frames / bytes sealed under the current local generation
        self._tx_bytes = 0
        self.frames_sent = 0
        self.frames_received = 0

        local_data = bytes(result.local_data)
        peer_data = bytes(result.peer_data)
        # 3.4: the session ID starts with the byte B sent: TEP identifier and "v" bit.
        b_data = local_data if self.role == "B" else peer_data
        tep_byte = getattr(result, "tep_byte", -1)
        self._tep_byte = tep_byte if tep_byte >= 0 else self.tep | (V_BIT if b_data else 0)

        # Claim every ticket our own SYN proposed (3.5): one may be used now, the others are
        # consumed anyway ("used (successfully or not)").
        tickets: dict[int, ResumptionTicket] = {}
        if cache is not None:
            for o in getattr(result, "local_offers", ()) or ():
                d = bytes(o.data)
                if len(d) >= _MIN_RESUME_DATA:
                    t = cache.claim(peer, o.tep, d[:_MIN_RESUME_DATA])
                    if t is not None:
                        tickets[o.tep] = t
            if len(local_data) >= _MIN_RESUME_DATA and self.tep not in tickets:
                t = cache.claim(peer, self.tep, local_data[:_MIN_RESUME_DATA])
                if t is not None:
                    tickets[self.tep] = t

        if b_data:
            self._start_resumed(tickets.get(self.tep), local_data, peer_data)
        else:
            self._state = _WAIT_INIT2 if self.role == "A" else _WAIT_INIT1

    # --- setup ---------------------------------------------------------------------------

    def _start_resumed(self, ticket: ResumptionTicket | None, local_data: bytes,
                       peer_data: bytes) -> None:
        """3.5: B answered with a resumption suboption; derive keys from the cached ss[i]."""
        if ticket is None or len(local_data) < _MIN_RESUME_DATA:
            raise TcpcryptProtocolError(
                f"peer {self.peer!r} answered with resumption (TEP {self.tep:#x}) but we "
                f"hold no matching session secret")
        for d in (local_data, peer_data):
            if not _MIN_RESUME_DATA <= len(d) <= _MAX_RESUME_DATA:
                raise TcpcryptProtocolError(f"resumption suboption data of {len(d)} bytes")
        if peer_data[:_MIN_RESUME_DATA] != ticket.peer_half:
            # 3.5: an identifier half that does not match ours must not be resumed from.
            raise TcpcryptProtocolError(
                f"peer {self.peer!r} resumption identifier half does not match ours")
        if ticket.aead not in AEADS:
            raise TcpcryptProtocolError(f"cached AEAD {ticket.aead:#x} unknown")
        ours, theirs = local_data[_MIN_RESUME_DATA:], peer_data[_MIN_RESUME_DATA:]
        if ticket.original_role == "A":
            sn = keys.session_nonce(ours, theirs)
        else:
            sn = keys.session_nonce(theirs, ours)
        self.resumed = True
        self._chain_id = ticket.chain_id
        # 3.3/3.5: keys follow the role of the ORIGINAL session, whatever our role now.
        self._writer_was_a = ticket.original_role == "A"
        self._install(ticket.ss, sn, ticket.aead)
        # ss[i+1] was cached when ss[i] was taken (or the chain dropped, policy 2).

    def _install(self, ss: bytes, sn: bytes, aead_id: int) -> None:
        suite = AEADS[aead_id]
        self.aead = aead_id
        self.session_id = keys.session_id(self._tep_byte, ss, sn)
        mk0 = keys.first_master_key(ss, sn)
        self._mk = {0: mk0}
        if self._keylog is not None:
            self._keylog.log_session(KeyLogEntry(self.session_id, aead_id,
                                                 "A" if self._writer_was_a else "B", mk0))
        self._tx_key = FrameKey(suite, keys.traffic_key(mk0, self._writer_was_a, suite), 0)
        self._rx_key = FrameKey(suite, keys.traffic_key(mk0, not self._writer_was_a, suite), 0)
        self._state = _OPEN
        self.established = True
        log.debug("tcpcrypt %s established with %r: TEP %#x AEAD %#x%s", self.role, self.peer,
                  self.tep, aead_id, " (resumed)" if self.resumed else "")

    def _complete_fresh(self, init1: bytes, init2: bytes, n_a: bytes, es: bytes, aead_id: int) -> None:
        prk = keys.compute_prk(n_a, self._transcript, init1, init2, es)   # = ss[0]
        self._install(prk, b"", aead_id)
        if self.cache is not None and self.config.cache_secrets:
            self._chain_id = self.cache.store(self.peer, self.tep, aead_id, self.role,
                                              keys.next_session_secret(prk), 1)
        self._private = None

    # --- public API ----------------------------------------------------------------------

    def start(self) -> bytes:
        """Bytes to send first: Init1 for a fresh host A, else nothing (plus held frames)."""
        self._check()
        if self._started:
            return b""
        self._started = True
        if self._state != _WAIT_INIT2:
            return b""
        try:
            ka = self._ka
            self._private = ka.generate()
            n_a = self._rng(N_A_LEN)
            if len(n_a) != N_A_LEN:
                raise TcpcryptProtocolError("random source returned a short nonce")
            self._init1 = build_init1(self.config.aeads, n_a, ka.public_wire(self._private))
        except TcpcryptError as exc:
            self._die(exc)
            raise
        self._tx_offset = len(self._init1.raw)
        return self._init1.raw

    def send(self, data: Buffer) -> bytes | bytearray:
        """Application plaintext -> encryption frames (held until keys exist), in a new buffer
        the caller owns."""
        self._check()
        if self._close_requested:
            raise TcpcryptError("send() after close()")
        if not data:
            return b""
        if not self.established:
            self._held.append(bytes(data))
            return b""
        return self._seal(data)

    def close(self) -> bytes | bytearray:
        """The last frame, with FINp (3.7).  After it send() raises."""
        self._check()
        if self._close_requested:
            return b""
        self._close_requested = True
        if not self.established:
            return b""
        return self._seal(b"", fin=True)

    def rekey(self) -> bytes | bytearray:
        """Initiate rekeying (3.8): an empty frame of the next generation with rekey = 1.

        Returns b"" when a rekey we initiated is still unanswered (3.8: at most one
        empty-frame rekey while the remote generation is behind ours) or after FINp.
        """
        self._check()
        if not self.established:
            raise TcpcryptError("rekey() before the session is established")
        if self._fin_sent or self._local_gen > self._remote_gen:
            return b""
        self._bump_local()
        return self._seal(b"", empty_ok=True)

    def keepalive(self) -> bytes | bytearray:
        """Verified liveness probe (3.9): rekey; the peer must answer with a fresh frame."""
        return self.rekey()

    def receive(self, data: bytes | memoryview) -> tuple[bytes, bytes | bytearray]:
        """Wire bytes from the peer -> (application plaintext, wire bytes to send back)."""
        if self._dead is not None:
            raise self._dead
        rx = self._rx
        if rx and len(rx) + len(data) < self._rx_need:
            # Fast path for segments smaller than frames: the held frame is still incomplete
            # (_rx_need is only set in the open state, once its header is known).
            rx += data
            return b"", b""
        try:
            return self._receive(data)
        except TcpcryptError as exc:
            self._die(exc)
            raise

    def peer_fin(self) -> None:
        """TCP FIN arrived.  3.7: without a FINp frame this is an error, not end-of-file."""
        self._check()
        if not self.eof_received:
            what = ("a truncated frame" if self._rx else
                    "before the key exchange completed" if not self.established else "no FINp frame")
            exc = TcpcryptProtocolError(
                f"peer {self.peer!r} sent TCP FIN with {what}: stream truncated")
            self._die(exc)
            raise exc

    def forget(self) -> None:
        """Flush cache state used in or resulting from this connection (3.5 last paragraph)."""
        if self.cache is not None and self._chain_id is not None:
            self.cache.forget_chain(self._chain_id)
        self._chain_id = None

    def info(self) -> dict[str, Any]:
        return {"session_id": self.session_id, "tep": self.tep, "aead": self.aead,
                "role": self.role, "resumed": self.resumed}

    @property
    def local_generation(self) -> int:
        return self._local_gen

    @property
    def remote_generation(self) -> int:
        return self._remote_gen

    # --- internals: errors ---------------------------------------------------------------

    def _check(self) -> None:
        if self._dead is not None:
            raise self._dead

    def _die(self, exc: TcpcryptError) -> None:
        if self._dead is None:
            self._dead = exc
            log.info("tcpcrypt session with %r failed: %s", self.peer, exc)
        self._held.clear()
        self._rx = bytearray()
        self._tx_key = self._rx_key = None
        self._mk.clear()
        self._private = None

    # --- internals: key exchange ---------------------------------------------------------

    def _receive(self, data: bytes | memoryview) -> tuple[bytes, bytes | bytearray]:
        out: list[bytes | bytearray] = []
        if self._state != _OPEN:
            if not self._started:
                out.append(self.start())
            self._rx += data
            magic = INIT1_MAGIC if self._state == _WAIT_INIT1 else INIT2_MAGIC
            mlen = message_length(self._rx, magic, self._ka)
            if mlen is None or len(self._rx) < mlen:
                return b"", b"".join(out)
            raw = bytes(self._rx[:mlen])
            del self._rx[:mlen]
            self._rx_offset = mlen
            if self._state == _WAIT_INIT1:
                out.append(self._on_init1(raw))
            else:
                self._on_init2(raw)
            if self._held or self._close_requested:
                held = b"".join(self._held)
                self._held.clear()
                out.append(self._seal(held, fin=self._close_requested))
            data = b""
        plaintext = self._open_frames(data, out)
        return plaintext, b"".join(out) if len(out) != 1 else out[0]

    def _on_init1(self, raw: bytes) -> bytes:
        """Host B: parse Init1, choose the AEAD, answer Init2, derive keys (3.3)."""
        ka = self._ka
        init1 = parse_init1(raw, ka)
        pub_a = ka.parse_public(init1.pub_a)
        aead_id = choose_aead(init1.sym_ciphers, self.config.aeads)
        private = ka.generate()
        es = ka.exchange(private, pub_a)
        n_b = self._rng(N_B_LEN)
        if len(n_b) != N_B_LEN:
            raise TcpcryptProtocolError("random source returned a short nonce")
        init2 = build_init2(aead_id, n_b, ka.public_wire(private))
        self._tx_offset = len(init2.raw)
        self._complete_fresh(raw, init2.raw, init1.n_a, es, aead_id)
        return init2.raw

    def _on_init2(self, raw: bytes) -> None:
        """Host A: parse Init2, check the AEAD is one we offered, derive keys (3.3)."""
        ka = self._ka
        init2 = parse_init2(raw, ka)
        if init2.sym_cipher not in self._init1.sym_ciphers:
            raise TcpcryptProtocolError(
                f"peer {self.peer!r} chose AEAD {init2.sym_cipher:#06x}, not in our Init1 list")
        pub_b = ka.parse_public(init2.pub_b)
        es = ka.exchange(self._private, pub_b)
        self._complete_fresh(self._init1.raw, raw, self._init1.n_a, es, init2.sym_cipher)
        self._init1 = None

    # --- internals: generations (3.8) ----------------------------------------------------

    def _master_key(self, gen: int) -> bytes:
        mk = self._mk
        top = max(mk)
        while top < gen:
            mk[top + 1] = keys.next_master_key(mk[top])
            top += 1
        return mk[gen]

    def _prune(self) -> None:
        low = min(self._local_gen, self._remote_gen)
        for g in [g for g in self._mk if g < low]:
            del self._mk[g]

    def _bump_local(self) -> None:
        self._local_gen += 1
        suite = self._suite()
        mk = self._master_key(self._local_gen)
        self._tx_key = FrameKey(suite, keys.traffic_key(mk, self._writer_was_a, suite), self._local_gen)
        self._tx_rekey = True
        self._tx_frames = self._tx_bytes = 0
        self._prune()
        log.debug("local generation -> %d", self._local_gen)

    def _suite(self) -> AEADSuite:
        """The negotiated AEAD (set by the key exchange, before any frame or rekey)."""
        assert self.aead is not None, "no AEAD before the key exchange"
        return AEADS[self.aead]

    def _next_rx_key(self) -> FrameKey:
        gen = self._remote_gen + 1
        suite = self._suite()
        mk = self._master_key(gen)
        return FrameKey(suite, keys.traffic_key(mk, not self._writer_was_a, suite), gen)

    # --- internals: frames (3.6, 4.2) ----------------------------------------------------

    def _seal(self, data: Buffer, fin: bool = False,
              empty_ok: bool = False) -> bytes | bytearray:
        """Application bytes -> frames, in one new buffer that the caller owns.

        A write longer than frame_size is cut into equal frames (no runt frame after full
        ones: 65536 bytes with frame_size 65518 make two 32 KiB frames, not 65518 + 18).
        """
        if self._fin_sent:
            raise TcpcryptError("no frame may follow the FINp frame (RFC 8548 3.7)")
        mv = memoryview(data)
        n = len(mv)
        nframes = -(-n // self.config.frame_size)
        if nframes == 0:
            if not (fin or empty_ok):
                return b""
            nframes = 1
        size, bigger = divmod(n, nframes)      # the first `bigger` frames carry size + 1
        buf = bytearray(n + nframes * _FRAME_OVERHEAD)
        bmv = memoryview(buf)
        base = self._tx_offset
        lim_frames = self.config.rekey_after_frames
        lim_bytes = self.config.rekey_after_bytes
        pos = 0
        start = 0
        try:
            for i in range(nframes):
                k = size + 1 if i < bigger else size
                if ((lim_frames is not None and self._tx_frames >= lim_frames)
                        or (lim_bytes is not None and self._tx_bytes >= lim_bytes)):
                    self._bump_local()          # 3.8: AEAD usage limit reached
                rekey = self._tx_rekey
                self._tx_rekey = False
                flags = FLAG_FINP if (fin and i == nframes - 1) else 0
                key = self._tx_key
                assert key is not None, "no traffic key: before the key exchange or after FINp"
                pos = seal_into(key, bmv, pos, base + pos,
                                mv[start:start + k], flags, rekey)
                start += k
                self._tx_frames += 1
                self._tx_bytes += k
        finally:
            bmv.release()
            mv.release()
        self._tx_offset = base + pos
        self.frames_sent += nframes
        if fin:
            self._fin_sent = True
            self._tx_key = None
        return buf

    def _open_frames(self, data: bytes | memoryview, out: list[bytes | bytearray]) -> bytes:
        """Decrypt every complete frame in (held partial frame + data); hold the partial tail.

        Copies are kept to what AEAD needs, one contiguous ciphertext per frame: only a frame
        that straddles two calls is assembled in self._rx; frames wholly inside `data` are
        decrypted straight from it into one plaintext buffer.  Nothing is returned, and the
        session dies, when any frame fails authentication (3.6).
        """
        n = len(data)
        rx = self._rx
        if rx and not n:
            # What the key exchange left behind its Init message (_receive): any number of
            # frames.  Treated as new data, so that rx only ever holds one partial frame.
            data = bytes(rx)
            n = len(data)
            rx = self._rx = bytearray()
        if self.eof_received and (n or rx):
            raise TcpcryptProtocolError("data after the FINp frame (RFC 8548 3.7)")
        unpack = FRAME_HEADER.unpack_from
        with memoryview(data) as mv:
            pos = 0                         # bytes of data consumed
            held = 0                        # length of the completed frame in rx, if any
            if rx:
                have = len(rx)
                if have < FRAME_HEADER_LEN:
                    pos = min(FRAME_HEADER_LEN - have, n)
                    rx += mv[:pos]
                    have += pos
                    if have < FRAME_HEADER_LEN:
                        self._rx_need = 0
                        return b""
                clen = unpack(rx, 0)[1]
                if clen <= TAG_LEN:
                    raise TcpcryptProtocolError(f"frame clen {clen} too short for any plaintext")
                need = FRAME_HEADER_LEN + clen - have
                if n - pos < need:          # the held frame is still incomplete
                    rx += mv[pos:] if pos else data
                    self._rx_need = FRAME_HEADER_LEN + clen
                    return b""
                rx += mv[pos:pos + need]
                pos += need
                held = len(rx)
            # Walk the headers first: nothing to allocate or decrypt until a frame is complete.
            end = pos
            while n - end >= FRAME_HEADER_LEN:
                clen = unpack(mv, end)[1]
                if clen <= TAG_LEN:
                    raise TcpcryptProtocolError(f"frame clen {clen} too short for any plaintext")
                if end + FRAME_HEADER_LEN + clen > n:
                    break
                end += FRAME_HEADER_LEN + clen
            if held == 0 and end == 0:
                self._rx = bytearray(data)
                self._rx_need = FRAME_HEADER_LEN + clen if n >= FRAME_HEADER_LEN else 0
                return b""
            # Plaintext is never longer than the ciphertext; one byte of headroom lets each
            # frame decrypt so that its flags byte lands on the byte before its data.
            res = bytearray(held + end - pos + 1)
            with memoryview(res) as omv:
                w = 1
                base = self._rx_offset
                if held:
                    with memoryview(rx) as rmv:
                        w = self._open_run(rmv, 0, held, base, res, omv, w, out)
                    base += held
                    self._rx = bytearray()
                if end > pos:
                    w = self._open_run(mv, pos, end, base - pos, res, omv, w, out)
            self._rx_offset = base + end - pos
            if end < n:
                self._rx = bytearray(mv[end:])
                # the walk above stopped at this partial frame, its clen already checked
                self._rx_need = FRAME_HEADER_LEN + clen if n - end >= FRAME_HEADER_LEN else 0
        if self.eof_received and self._rx:
            raise TcpcryptProtocolError("data after the FINp frame (RFC 8548 3.7)")
        if w == 1:
            return b""
        # bytes, not the bytearray itself: the edge's reader (tcpstack/aio/reader.py) passes large
        # bytes pieces to read() as they are, so this one copy is the only one to the app.
        with memoryview(res) as m:
            return bytes(m[1:w])

    def _open_run(self, src: memoryview, pos: int, end: int, base: int, res: bytearray,
                  omv: memoryview, w: int, out: list[bytes | bytearray]) -> int:
        """Open the complete frames src[pos:end] (src[i] is at stream offset base + i) into
        res from w - 1 on; return the new w.  3.6 / 4.2: AAD = control | clen as received."""
        unpack = FRAME_HEADER.unpack_from
        while pos < end:
            if self.eof_received:
                raise TcpcryptProtocolError("data after the FINp frame (RFC 8548 3.7)")
            control, clen = unpack(src, pos)
            nxt = pos + FRAME_HEADER_LEN + clen
            rekey = control & CONTROL_REKEY    # cres bits: ignored, but authenticated as sent
            key = self._next_rx_key() if rekey else self._rx_key
            assert key is not None, "no traffic key: before the key exchange"
            plen = clen - TAG_LEN
            saved = res[w - 1]
            open_into(key, base + pos, control, clen,
                      src[pos + FRAME_HEADER_LEN:nxt], omv[w - 1:w - 1 + plen])
            flags = res[w - 1]
            res[w - 1] = saved
            if flags & FLAG_URGP:
                if plen < 3:
                    raise TcpcryptProtocolError("URGp frame without an urgent field")
                urgent = U16.unpack_from(res, w)[0]
                dlen = plen - 3
                res[w:w + dlen] = res[w + 2:w + 2 + dlen]
                # 3.7: offset from the frame's beginning; recorded against the app stream.
                self.urgent_index = self._app_rx + urgent
            else:
                dlen = plen - 1
            w += dlen
            self._app_rx += dlen
            pos = nxt
            self.frames_received += 1
            if rekey:
                self._on_peer_rekey(key, out)
            if flags & FLAG_FINP:
                self.eof_received = True
        return w

    def _on_peer_rekey(self, key: FrameKey, out: list[bytes | bytearray]) -> None:
        """3.8: a frame with rekey = 1 authenticated: advance the remote generation and, if it
        passed ours, catch up and answer at once with a rekey = 1 frame (unless FIN sent)."""
        self._remote_gen = key.generation
        self._rx_key = key
        if self._remote_gen > self._local_gen:
            self._bump_local()
            if not self._fin_sent and not self._close_requested:
                out.append(self._seal(b"", empty_ok=True))
        self._prune()
