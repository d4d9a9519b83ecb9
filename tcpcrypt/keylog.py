"""The tcpcrypt key log: what a reader needs to decrypt a captured session (like TLS's SSLKEYLOGFILE).

One line per tcpcrypt session, written once at key setup (RFC 8548 3.3 fresh key exchange,
3.5 resumption), never per frame:

    TCPCRYPT_SESSION <session_id> <aead> <role> <mk0>

  session_id -- the session ID (RFC 8548 3.4) in hex, 33 bytes: the TEP byte B sent, then
                CPRF(ss[i], CONST_SESSID | sn[i], 32); the value get_extra_info(
                "tcpcrypt_session_id") gives, the same at both ends
  aead       -- the negotiated AEAD by its RFC 8548 Table 5 name (AEAD_AES_128_GCM,
                AEAD_AES_256_GCM, AEAD_CHACHA20_POLY1305); parse_line also takes the
                identifier as a number (0x0001)
  role       -- A or B: the logging host's role in the key schedule.  A sends under k_ab[j]
                and receives under k_ba[j]; B the other way round.  For a fresh key exchange
                it is the host's TCP-ENO role (A sent Init1); for a resumed session it is the
                role of the ORIGINAL session (3.5), whatever the roles of this connection
  mk0        -- the first master key mk[0] = CPRF(ss[i], CONST_REKEY | sn[i], 32) in hex

From mk[0] a reader derives every traffic key of the session, both directions, every
generation (3.3, 3.8):

    mk[j]   = CPRF(mk[j-1], CONST_REKEY, 32)
    k_ab[j] = CPRF(mk[j], CONST_KEY_A, ae_key_len + ae_nonce_len)     (A's frames)
    k_ba[j] = CPRF(mk[j], CONST_KEY_B, ae_key_len + ae_nonce_len)     (B's frames)

and nothing else: not ss[i], from which the next session's secret ss[i+1] (3.5
resumption) and the resumption identifiers would follow.  So a key log opens exactly the
sessions it lists.  Both ends of a session log the same session ID and mk[0], with
opposite roles.

This module is sans-IO like the rest of tcpcrypt: the session hands a KeyLogEntry to a
KeyLog object (KeyLogWriter, which formats the line and passes it to an injected writer).
KeyLogFile is such a writer, for a path; keylog_from_env() builds the pair from
TCPCRYPT_KEYLOGFILE, for the asyncio edge to call.  Nothing is logged unless one is given.
"""
from __future__ import annotations

import logging
import os
import stat
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping, Protocol

from . import keys
from .suites import AEADS, K_LEN, AEADSuite

log = logging.getLogger(__name__)

__all__ = ["ENV_VAR", "LABEL", "KeyLogEntry", "KeyLog", "KeyLogWriter", "KeyLogFile",
           "format_line", "parse_line", "parse_keylog", "keylog_from_env"]

ENV_VAR = "TCPCRYPT_KEYLOGFILE"
LABEL = "TCPCRYPT_SESSION"
_AEAD_BY_NAME = {s.name: s.ident for s in AEADS.values()}


@dataclass(frozen=True, slots=True)
class KeyLogEntry:
    """One line of the key log: a session's ID, AEAD, the logging host's key-schedule role, mk[0]."""
    session_id: bytes
    aead: int
    role: str
    mk0: bytes

    @property
    def suite(self) -> AEADSuite:
        return AEADS[self.aead]

    def master_key(self, generation: int) -> bytes:
        """mk[generation] (RFC 8548 3.3, 3.8)."""
        mk = self.mk0
        for _ in range(generation):
            mk = keys.next_master_key(mk)
        return mk

    def traffic_key(self, generation: int, writer_was_a: bool) -> bytes:
        """k_ab[generation] (the frames of host A) or k_ba[generation] (host B's)."""
        return keys.traffic_key(self.master_key(generation), writer_was_a, self.suite)

    def line(self) -> str:
        return format_line(self)


def format_line(entry: KeyLogEntry) -> str:
    """The key log line for `entry`, with its newline."""
    name = AEADS[entry.aead].name if entry.aead in AEADS else f"{entry.aead:#06x}"
    return f"{LABEL} {entry.session_id.hex()} {name} {entry.role} {entry.mk0.hex()}\n"


def parse_line(line: str) -> KeyLogEntry | None:
    """The entry on one line; None for a blank line, a comment (#) or another label.
    Raises ValueError for a malformed TCPCRYPT_SESSION line."""
    fields = line.split()
    if not fields or fields[0].startswith("#") or fields[0] != LABEL:
        return None
    if len(fields) != 5:
        raise ValueError(f"{LABEL} line with {len(fields)} fields, 5 expected: {line.strip()!r}")
    _, sid, aead_s, role, mk0 = fields
    aead = _AEAD_BY_NAME.get(aead_s)
    if aead is None:
        try:
            aead = int(aead_s, 0)
        except ValueError:
            raise ValueError(f"unknown AEAD {aead_s!r} in the key log") from None
    if aead not in AEADS:
        raise ValueError(f"unknown AEAD {aead_s!r} in the key log")
    if role not in ("A", "B"):
        raise ValueError(f"role {role!r} in the key log: A or B expected")
    try:
        entry = KeyLogEntry(bytes.fromhex(sid), aead, role, bytes.fromhex(mk0))
    except ValueError:
        raise ValueError(f"bad hex in the key log line {line.strip()!r}") from None
    if len(entry.mk0) != K_LEN:
        raise ValueError(f"mk0 of {len(entry.mk0)} bytes in the key log, {K_LEN} expected")
    return entry


def parse_keylog(lines: Iterable[str]) -> list[KeyLogEntry]:
    """Every TCPCRYPT_SESSION entry of a key log, duplicates (both ends logging) dropped."""
    out: list[KeyLogEntry] = []
    seen: set[tuple[bytes, int, bytes]] = set()
    for n, line in enumerate(lines, 1):
        try:
            e = parse_line(line)
        except ValueError as exc:
            raise ValueError(f"key log line {n}: {exc}") from None
        if e is not None and (e.session_id, e.aead, e.mk0) not in seen:
            seen.add((e.session_id, e.aead, e.mk0))
            out.append(e)
    return out


class KeyLog(Protocol):
    """What a TcpcryptSession calls, once, when its keys are set up."""
    def log_session(self, entry: KeyLogEntry) -> None: ...


class KeyLogWriter:
    """A KeyLog that formats each entry as a line and hands it to `write` (a callable taking
    the line).  A writer that fails is reported in the log and does not fail the connection."""

    def __init__(self, write: Callable[[str], None]) -> None:
        self.write = write

    def log_session(self, entry: KeyLogEntry) -> None:
        try:
            self.write(format_line(entry))
        except OSError as exc:
            log.warning("tcpcrypt key log: cannot write session %s: %s",
                        entry.session_id.hex()[:16], exc)


class KeyLogFile:
    """A line writer appending to a file: os.open with O_CREAT | O_APPEND and mode 0600, one
    os.write per line (lines from several stacks or processes do not interleave).  A new
    file is created 0600 (less with a stricter umask); an existing file keeps its mode,
    never widened or changed, and a warning is logged when group or others may read it."""

    FLAGS = os.O_WRONLY | os.O_CREAT | os.O_APPEND | getattr(os, "O_CLOEXEC", 0)
    MODE = 0o600

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        fd = os.open(self.path, self.FLAGS, self.MODE)     # created now: errors show at once
        try:
            mode = os.fstat(fd).st_mode
        finally:
            os.close(fd)
        if stat.S_ISREG(mode) and mode & 0o077:
            log.warning("tcpcrypt key log %s is readable or writable by group/others (mode %o): "
                        "anyone who can read it can decrypt the sessions it lists",
                        self.path, stat.S_IMODE(mode))

    def __call__(self, line: str) -> None:
        fd = os.open(self.path, self.FLAGS, self.MODE)
        try:
            os.write(fd, line.encode("ascii"))
        finally:
            os.close(fd)


def keylog_from_env(environ: Mapping[str, str] | None = None) -> KeyLogWriter | None:
    """A KeyLogWriter appending to the file TCPCRYPT_KEYLOGFILE names, or None when unset."""
    path = (os.environ if environ is None else environ).get(ENV_VAR)
    if not path:
        return None
    return KeyLogWriter(KeyLogFile(path))
