"""Exceptions of the tcpcrypt package: one base class, specific subclasses.

A connection whose tcpcrypt layer raises one of these is aborted (RST) and the
application receives the exception; no unauthenticated byte is ever delivered.
"""
from __future__ import annotations


class TcpcryptError(ConnectionError):
    """Base class of every tcpcrypt / TCP-ENO exception."""


class ENOError(TcpcryptError):
    """A TCP-ENO option or negotiation is malformed (RFC 8547)."""


class TcpcryptProtocolError(TcpcryptError):
    """A tcpcrypt key-exchange message or frame is malformed or unexpected (RFC 8548)."""


class TcpcryptIntegrityError(TcpcryptError):
    """An encrypted frame failed authentication: forged or corrupted (RFC 8548 4.2)."""


class EncryptionRequiredError(TcpcryptError):
    """The application required encryption but the peer did not negotiate it."""
