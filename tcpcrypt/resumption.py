"""The tcpcrypt session cache for resumption (RFC 8548 section 3.5).

One *chain* per peer host: the session secrets ss[i], ss[i+1], ... derived from one original
PRK (ss[0]), with what resumption needs to reuse them: the TEP and AEAD of the original
session and the role ("A" or "B") this host played in it (which fixes, for every derived
session, the identifier half we send, the nonce slot we fill and the keys we encrypt with).

Rules implemented:
  * single use: a secret is removed from the chain the moment it is proposed (active opener)
    or accepted (passive opener), so it can never secure two connections; "MUST NOT resume
    with a session secret if it has ever enabled encryption in the past with the same
    secret, in either role";
  * lowest unused i: the active opener always proposes the chain's head, and proposing it
    consumes it "successfully or not";
  * the passive opener recognises resume[i] for the next ``lookahead`` secrets (the peer's
    failed proposals may have advanced its copy of the chain past ours) and skips ahead;
  * ss[i+1] is cached as ss[i] is taken (3.5 SHOULD), ss[i] itself is dropped;
  * forget(peer) / forget_chain() / flush() for the application's "flush cache state" (3.5
    last paragraph, draft-ietf-tcpinc-api-06 TCP_CRYPT_CACHE_FLUSH);
  * bounded size (LRU over peers, bounded pending tickets).

Python cannot reliably wipe bytes objects; dropping every reference is the best we can do.
Secrets never leave memory (3.5: "SHOULD NOT write any session secrets to non-volatile storage").
"""
from __future__ import annotations

import itertools
import logging
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Hashable

from .keys import next_session_secret, resume_half, resume_id

log = logging.getLogger(__name__)

_chain_ids = itertools.count(1)


@dataclass(frozen=True, slots=True)
class ResumptionTicket:
    """A session secret taken from the cache for one connection attempt."""
    chain_id: int
    peer: Hashable
    tep: int
    aead: int
    original_role: str     # role this host played in the session with ss[0]
    index: int             # i
    ss: bytes              # ss[i]
    rid: bytes             # resume[i] (18 bytes)

    @property
    def local_half(self) -> bytes:
        return resume_half(self.rid, self.original_role)

    @property
    def peer_half(self) -> bytes:
        return resume_half(self.rid, "B" if self.original_role == "A" else "A")


@dataclass(slots=True)
class _Chain:
    chain_id: int
    peer: Hashable
    tep: int
    aead: int
    original_role: str
    index: int                                        # i of window[0]
    window: list[tuple[bytes, bytes]] = field(default_factory=list)   # (ss[i+k], resume[i+k])

    def fill(self, size: int) -> None:
        while len(self.window) < size:
            ss = next_session_secret(self.window[-1][0])
            self.window.append((ss, resume_id(ss)))

    def take(self, k: int, size: int) -> ResumptionTicket:
        ss, rid = self.window[k]
        ticket = ResumptionTicket(self.chain_id, self.peer, self.tep, self.aead,
                                  self.original_role, self.index + k, ss, rid)
        if k + 1 >= len(self.window):
            self.fill(k + 2)
        del self.window[:k + 1]
        self.index += k + 1
        self.fill(size)
        return ticket


class SessionCache:
    """Per-peer resumption state (RFC 8548 3.5).  ``peer`` is any hashable host identity."""

    def __init__(self, max_peers: int = 1024, lookahead: int = 4, max_pending: int = 1024) -> None:
        if lookahead < 1:
            raise ValueError("lookahead must be >= 1")
        self.max_peers = max_peers
        self.lookahead = lookahead
        self.max_pending = max_pending
        self._chains: OrderedDict[Hashable, _Chain] = OrderedDict()
        self._pending: OrderedDict[tuple[Hashable, int, bytes], ResumptionTicket] = OrderedDict()

    # --- filling -------------------------------------------------------------------------

    def store(self, peer: Hashable, tep: int, aead: int, original_role: str, ss: bytes,
              index: int) -> int:
        """Cache ss[index] (the next unused secret) of a new chain for peer; returns its id.

        Replaces any older chain for the same peer (the most recent session wins).
        """
        if original_role not in ("A", "B"):
            raise ValueError("original_role must be 'A' or 'B'")
        chain = _Chain(next(_chain_ids), peer, tep, aead, original_role, index, [(ss, resume_id(ss))])
        chain.fill(self.lookahead)
        self._chains[peer] = chain
        self._chains.move_to_end(peer)
        while len(self._chains) > self.max_peers:
            old_peer, _ = self._chains.popitem(last=False)
            log.debug("session cache full: evicting %r", old_peer)
        return chain.chain_id

    # --- taking --------------------------------------------------------------------------

    def peek(self, peer: Hashable) -> tuple[int, int, str, int] | None:
        """(tep, aead, original_role, index) of peer's chain, without using it."""
        c = self._chains.get(peer)
        return None if c is None else (c.tep, c.aead, c.original_role, c.index)

    def take_for_offer(self, peer: Hashable, teps: tuple[int, ...] | None = None,
                       keep_chain: bool = True) -> ResumptionTicket | None:
        """Active opener: consume the lowest unused ss[i] for peer (3.5), or None.

        The ticket waits in the pending table until the connection's session claims it.
        keep_chain=False (policy "cache no secrets") drops the rest of the chain.
        """
        chain = self._chains.get(peer)
        if chain is None or (teps is not None and chain.tep not in teps):
            return None
        ticket = chain.take(0, self.lookahead)
        self._after_take(chain, keep_chain)
        self._park(ticket)
        return ticket

    def take_for_answer(self, peer: Hashable, tep: int, peer_half: bytes,
                        keep_chain: bool = True) -> ResumptionTicket | None:
        """Passive opener: the ticket whose resume[i] half, sent by the peer, matches; or None.

        The TEP must be the one of the cached session (3.5).  Secrets before the matched one
        are skipped (they were consumed by the peer's unsuccessful attempts).
        """
        chain = self._chains.get(peer)
        if chain is None or chain.tep != tep:
            return None
        their_role = "B" if chain.original_role == "A" else "A"
        for k, (_, rid) in enumerate(chain.window):
            if resume_half(rid, their_role) == peer_half:
                ticket = chain.take(k, self.lookahead)
                self._after_take(chain, keep_chain)
                self._park(ticket)
                return ticket
        return None

    def claim(self, peer: Hashable, tep: int, local_half: bytes) -> ResumptionTicket | None:
        """The session takes its ticket (by the identifier half this host sent)."""
        return self._pending.pop((peer, tep, bytes(local_half)), None)

    def pending(self, peer: Hashable, tep: int, local_half: bytes) -> ResumptionTicket | None:
        """The ticket waiting under this identifier half, left in place (for validation)."""
        return self._pending.get((peer, tep, bytes(local_half)))

    def _after_take(self, chain: _Chain, keep_chain: bool) -> None:
        if keep_chain:
            self._chains.move_to_end(chain.peer)
        else:
            self._drop_chain(chain.chain_id)

    def _park(self, ticket: ResumptionTicket) -> None:
        self._pending[(ticket.peer, ticket.tep, ticket.local_half)] = ticket
        while len(self._pending) > self.max_pending:
            self._pending.popitem(last=False)

    # --- flushing ------------------------------------------------------------------------

    def _drop_chain(self, chain_id: int) -> None:
        for peer, c in list(self._chains.items()):
            if c.chain_id == chain_id:
                del self._chains[peer]

    def forget_chain(self, chain_id: int) -> None:
        """Drop a chain and every pending ticket from it (3.5: flush state of a connection)."""
        self._drop_chain(chain_id)
        for key, t in list(self._pending.items()):
            if t.chain_id == chain_id:
                del self._pending[key]

    def forget(self, peer: Hashable) -> None:
        """Drop everything cached for peer (e.g. after a session-ID authentication failure)."""
        self._chains.pop(peer, None)
        for key in [k for k in self._pending if k[0] == peer]:
            del self._pending[key]

    def flush(self) -> None:
        """Drop everything (unlinkability: no later connection can be tied to an earlier one)."""
        self._chains.clear()
        self._pending.clear()

    def __len__(self) -> int:
        return len(self._chains)

    def __contains__(self, peer: object) -> bool:
        return peer in self._chains
