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


class IdentityError(TcpcryptError):
    """A node identity (private key file) or public key is missing, unsafe or malformed
    (tcpcrypt/identity.py); the message names the file."""


class PeersFileError(IdentityError):
    """A line of a peers file is malformed: names the file, the line number and the fault."""

    def __init__(self, path: str, line: int, what: str) -> None:
        super().__init__(f"{path}:{line}: {what}")
        self.path = path
        self.line = line
        self.what = what


class PeerAuthenticationError(TcpcryptError):
    """The peer did not prove membership of the overlay (tcpcrypt/membership.py): no or a
    malformed authentication message, a bad signature over the session ID, a key not in the
    peers file, or an address that key may not use.  The connection is reset and no
    application byte is delivered in either direction.  ``key``: the peer's public key
    (tcpcrypt.identity.PublicKey) when its message was readable, else None."""

    def __init__(self, message: str, *, key: object = None) -> None:
        super().__init__(message)
        self.key = key
