"""The stack's security provider: TCP-ENO negotiators for handshakes, tcpcrypt sessions after.

tcpstack's StackCore asks a provider for an ENO negotiator when a connection opens (RFC 8547
4.6: ENO travels in the SYNs) and, when the handshake is over, for the stream transform the
negotiated TEP calls for (RFC 8547 4.5).  This provider offers the tcpcrypt TEPs (RFC 8548
3.2), answers resumption suboptions from its session cache (RFC 8548 3.5), and enforces the
per-connection policies of draft-ietf-tcpinc-api-06: require encryption, application-aware
bits, no resumption, no caching.

Per-connection options (from open_connection / start_server keyword arguments):
  encrypt            -- False: do not offer ENO at all (plain TCP)
  require_encryption -- fail with EncryptionRequiredError instead of falling back
  app_aware          -- the application-aware "a" bit of the global suboption (RFC 8547 4.2)
  mandatory_app_aware-- disable ENO unless the peer set a = 1 (RFC 8547 4.6 rule 3)
  resume             -- False: neither offer nor accept resumption (RFC 8548 3.5 policy 1)
  cache_secrets      -- False: cache no session secret from this connection (policy 2)
  passive_role_bit   -- the ENO "b" bit (RFC 8547 4.3), for simultaneous open

keylog (constructor): a tcpcrypt.keylog.KeyLog every session tells its key material once, at
key setup (the key log, docs/teaching.md); None, the default, logs nothing.  The asyncio edge
passes keylog_from_env() (TCPCRYPT_KEYLOGFILE) for the provider it makes by default.

identity + members (constructor, together): a PRIVATE stack, an overlay node that admits
only its members (tcpcrypt/membership.py).  Every connection then sets a = 1 in mandatory
application-aware mode (RFC 8547 4.2, 8.4; our reading is in tcpcrypt/membership.py) and
requires encryption: a peer without TCP-ENO, or with a = 0, is reset, never served in plain
TCP.  After key setup each side proves its identity over the session ID; the transform is a
MemberSession, whose info() carries "peer" (the verified key, one-line form), which the
endpoint publishes as get_extra_info("tcpcrypt_peer").  A per-connection option that would
turn it off raises ValueError before anything is sent: encrypt=False, mandatory_app_aware=False
(check_options, called by StackCore.check_options).  app_aware and require_encryption are
forced to 1 / True instead: the asyncio edge always passes app_aware=0 and
require_encryption=False as its defaults, which cannot be told from explicit values.
"""
from __future__ import annotations

import logging
from typing import Any

from .eno import ENONegotiator, TEPOffer
from .errors import EncryptionRequiredError
from .identity import Identity, Members
from .keylog import KeyLog
from .membership import MemberSession
from .resumption import SessionCache
from .session import TcpcryptSession, make_offers, make_responder, make_validator
from .suites import TcpcryptConfig

log = logging.getLogger(__name__)

Addr = tuple[str, int]


class TcpcryptProvider:
    """Hands out ENONegotiator objects and TcpcryptSession transforms."""

    # The per-connection options listed in the module docstring ("encrypt" is the stack's).
    option_names = frozenset({"require_encryption", "app_aware", "mandatory_app_aware", "resume",
                              "cache_secrets", "passive_role_bit"})

    def __init__(self, config: TcpcryptConfig | None = None,
                 cache: SessionCache | None = None, *, keylog: KeyLog | None = None,
                 identity: Identity | None = None, members: Members | None = None) -> None:
        if (identity is None) != (members is None):
            raise ValueError("TcpcryptProvider(identity=..., members=...): a private stack "
                             "needs both its identity and the members it admits")
        self.config = config or TcpcryptConfig()
        self.cache = cache if cache is not None else SessionCache()
        self.keylog = keylog
        self.identity = identity
        self.members = members

    @property
    def private(self) -> bool:
        """Every connection is encrypted and limited to members (identity and members set)."""
        return self.identity is not None

    def check_options(self, options: dict[str, Any], api: str = "open_connection") -> None:
        """Refuse, before anything is sent, a per-connection option that would make a
        connection of a private stack less than private (StackCore.check_options calls this)."""
        if not self.private:
            return
        why = ("this stack is private (an identity and a peers file): every connection is "
               "encrypted, application-aware (RFC 8547 8.4) and limited to members")
        if options.get("encrypt") is False:
            raise ValueError(f"{api}(encrypt=False): {why}")
        if "mandatory_app_aware" in options and not options["mandatory_app_aware"]:
            raise ValueError(f"{api}(mandatory_app_aware=False): {why}")

    def _private_options(self, options: dict[str, Any]) -> dict[str, Any]:
        # RFC 8547 8.4: a = 1 and mandatory application-aware mode; encryption required.
        return dict(options, app_aware=1, mandatory_app_aware=True, require_encryption=True)

    def _config_for(self, options: dict[str, Any]) -> TcpcryptConfig:
        cfg = self.config
        changes: dict[str, Any] = {}
        if options.get("resume") is False and cfg.resumption:
            changes["resumption"] = False
        if options.get("cache_secrets") is False and cfg.cache_secrets:
            changes["cache_secrets"] = False
        if not changes:
            return cfg
        from dataclasses import replace
        return replace(cfg, **changes)

    def negotiator(self, *, active: bool, local: Addr, remote: Addr,
                   options: dict[str, Any]) -> ENONegotiator:
        if self.private:
            self.check_options(options, "connect" if active else "listen")
            options = self._private_options(options)
        cfg = self._config_for(options)
        peer = remote[0]
        app_aware = int(options.get("app_aware", 0))
        mandatory_app_aware = bool(options.get("mandatory_app_aware", False))
        # validate: RFC 8548 3.5 -- an active opener MUST ignore a resumption suboption whose
        # identifier half does not match the one it proposed.
        validate = make_validator(cfg, self.cache, peer)
        # RFC 8547 4.3/8.3: an application expecting simultaneous open sets b = 1 on one
        # side so the two hosts still get distinct roles (None: the default for the role).
        role_bit = options.get("passive_role_bit")
        passive_role_bit = None if role_bit is None else int(role_bit)
        if active:
            offers = make_offers(cfg, self.cache, peer)
            # RFC 8547 4.6 lets an active opener drop ENO from later SYN retransmissions (to
            # pass middleboxes that drop unknown options).  Not when the connection cannot
            # do without it: a SYN without ENO can only end in plain TCP, which encryption
            # required (or mandatory application-aware mode) refuses anyway -- so three
            # lost SYNs would fail a connection a fourth SYN with ENO would have made.
            keep_eno = bool(options.get("require_encryption")) or mandatory_app_aware
            return ENONegotiator(offers, active=True, app_aware=app_aware,
                                 mandatory_app_aware=mandatory_app_aware,
                                 passive_role_bit=passive_role_bit, validate=validate,
                                 **({"drop_after_syn_retransmits": None} if keep_eno else {}))
        fresh = [TEPOffer(t) for t in cfg.teps]
        return ENONegotiator(fresh, active=False, respond=make_responder(cfg, self.cache, peer),
                             app_aware=app_aware, mandatory_app_aware=mandatory_app_aware,
                             passive_role_bit=passive_role_bit, validate=validate)

    def transform(self, negotiator: ENONegotiator, *, local: Addr, remote: Addr,
                  options: dict[str, Any]) -> TcpcryptSession | MemberSession | None:
        result = negotiator.result
        if self.private:
            options = self._private_options(options)
        if result is None:
            if self.private:
                log.warning("refused peer %s:%d: %s (this stack is private: members only, "
                            "encrypted)", remote[0], remote[1],
                            negotiator.disabled_reason or "no TCP-ENO")
            if options.get("require_encryption"):
                raise EncryptionRequiredError(
                    f"peer {remote[0]}:{remote[1]} did not negotiate encryption "
                    f"({negotiator.disabled_reason or 'no TCP-ENO'}) and encryption is required")
            return None
        cfg = self._config_for(options)
        if result.tep not in cfg.teps:
            # ENO agreed on a TEP that is not tcpcrypt's: we have no other TEP to run.
            raise EncryptionRequiredError(f"negotiated TEP {result.tep:#x} with {remote} is unsupported")
        session = TcpcryptSession(result, cfg, self.cache, remote[0], keylog=self.keylog)
        if self.identity is None or self.members is None:
            return session                    # not private: no wrapper, no per-byte cost
        return MemberSession(session, self.identity, self.members, remote[0], remote[1])
