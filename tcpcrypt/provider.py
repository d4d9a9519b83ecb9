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
"""
from __future__ import annotations

import logging
from typing import Any

from .eno import ENONegotiator, TEPOffer
from .errors import EncryptionRequiredError
from .keylog import KeyLog
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
                 cache: SessionCache | None = None, *, keylog: KeyLog | None = None) -> None:
        self.config = config or TcpcryptConfig()
        self.cache = cache if cache is not None else SessionCache()
        self.keylog = keylog

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
            return ENONegotiator(offers, active=True, app_aware=app_aware,
                                 mandatory_app_aware=mandatory_app_aware,
                                 passive_role_bit=passive_role_bit, validate=validate)
        fresh = [TEPOffer(t) for t in cfg.teps]
        return ENONegotiator(fresh, active=False, respond=make_responder(cfg, self.cache, peer),
                             app_aware=app_aware, mandatory_app_aware=mandatory_app_aware,
                             passive_role_bit=passive_role_bit, validate=validate)

    def transform(self, negotiator: ENONegotiator, *, local: Addr, remote: Addr,
                  options: dict[str, Any]) -> TcpcryptSession | None:
        result = negotiator.result
        if result is None:
            if options.get("require_encryption"):
                raise EncryptionRequiredError(
                    f"peer {remote[0]}:{remote[1]} did not negotiate encryption "
                    f"({negotiator.disabled_reason or 'no TCP-ENO'}) and encryption is required")
            return None
        cfg = self._config_for(options)
        if result.tep not in cfg.teps:
            # ENO agreed on a TEP that is not tcpcrypt's: we have no other TEP to run.
            raise EncryptionRequiredError(f"negotiated TEP {result.tep:#x} with {remote} is unsupported")
        return TcpcryptSession(result, cfg, self.cache, remote[0], keylog=self.keylog)
