"""Node identities (Ed25519 key pairs) and the overlay's membership list (the peers file).

tcpcrypt is unauthenticated by design (RFC 8548 8): it defeats passive eavesdropping, and
leaves authentication to the application, through the session ID (RFC 8547 5.1, RFC 8548
3.4).  An overlay node authenticates its peers by a signature over the session ID made with
a long-term Ed25519 key (draft-ietf-tcpinc-api-06 5.2, signature-based authentication); this
module holds those keys and the list of keys that are members.  The exchange itself is in
tcpcrypt/membership.py.

File formats (one concept each, all text, UTF-8):

Public key, one line (the form ``tcpstack keygen`` prints and the peers file holds)::

    tcpcrypt-ed25519 <base64 of the 32-byte Ed25519 public key, with padding (44 chars)>

  The same shape as an OpenSSH public key (type word, space, base64), so it is easy to copy,
  grep and compare.  :meth:`PublicKey.parse` accepts exactly this and nothing else.

Private key file: PKCS#8 PEM, unencrypted (``-----BEGIN PRIVATE KEY-----``), the format
  ``openssl genpkey -algorithm ed25519`` writes and ``openssl pkey -pubout`` reads.  It is
  created with mode 0600 and O_CREAT|O_EXCL (an existing file is never overwritten), and
  :meth:`Identity.load` refuses a file that is readable or writable by group or others (as
  ssh refuses a private key "too open"), a missing file, or anything but one Ed25519 key.

Peers file (like ssh's authorized_keys), one member a line::

    # comment lines and blank lines are ignored
    tcpcrypt-ed25519 AAAA...=  10.231.6.2                  # alice
    tcpcrypt-ed25519 BBBB...=  10.231.7.0/24, fd00:1::/64  # bob's site
    tcpcrypt-ed25519 CCCC...=                              # carol: any address

  The public key, then the overlay addresses or prefixes that member may connect from or be
  reached at (comma and/or space separated; an address is a /32 or /128), then an optional
  comment that starts with ``#``.  Every word between the key and ``#`` must be an address
  or prefix: a word that is not one is an error (never silently taken as a comment).  A
  member listed without any address is admitted from any address.  A prefix with host bits
  set (10.231.6.1/24) is an error, as is a key listed twice.  Any error raises one
  :class:`PeersFileError` naming the file, the line number and what is wrong.
"""
from __future__ import annotations

import base64
import binascii
import ipaddress
import os
import stat
from dataclasses import dataclass
from typing import Iterator

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .errors import IdentityError, PeersFileError

__all__ = ["PublicKey", "Identity", "Member", "Members", "KEY_TYPE", "PUBLIC_KEY_LEN",
           "SIGNATURE_LEN"]

KEY_TYPE = "tcpcrypt-ed25519"      # the type word of the one-line public key form
PUBLIC_KEY_LEN = 32                # RFC 8032 5.1.5: an Ed25519 public key is 32 bytes
SIGNATURE_LEN = 64                 # RFC 8032 5.1.6: a signature is 64 bytes
MAX_KEY_FILE = 64 * 1024           # a private key file is ~120 bytes; refuse anything huge

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class PublicKey:
    """An Ed25519 public key (32 bytes), compared and hashed by value."""
    raw: bytes

    def __post_init__(self) -> None:
        if len(self.raw) != PUBLIC_KEY_LEN:
            raise IdentityError(f"an Ed25519 public key is {PUBLIC_KEY_LEN} bytes, "
                                f"not {len(self.raw)}")

    @classmethod
    def parse(cls, text: str) -> "PublicKey":
        """The one-line form ``tcpcrypt-ed25519 <base64>`` -> PublicKey (IdentityError if not)."""
        words = text.split()
        if len(words) != 2 or words[0] != KEY_TYPE:
            raise IdentityError(f"not a public key: expected '{KEY_TYPE} <base64>', "
                                f"got {text.strip()[:60]!r}")
        return cls(_b64_key(words[1]))

    def text(self) -> str:
        """The one-line form, ``tcpcrypt-ed25519 <base64>``."""
        return f"{KEY_TYPE} {base64.b64encode(self.raw).decode('ascii')}"

    def short(self) -> str:
        """A short tag for logs: the first 8 base64 characters (not a security check)."""
        return base64.b64encode(self.raw).decode("ascii")[:8]

    def verify(self, signature: bytes, message: bytes) -> bool:
        """True when `signature` is this key's Ed25519 signature of `message`."""
        try:
            key = Ed25519PublicKey.from_public_bytes(self.raw)
            key.verify(signature, message)
        except (InvalidSignature, ValueError):
            return False
        return True

    def __str__(self) -> str:
        return self.text()

    def __repr__(self) -> str:
        return f"PublicKey({self.short()}...)"


def _b64_key(word: str) -> bytes:
    try:
        raw = base64.b64decode(word, validate=True)
    except (binascii.Error, ValueError):
        raise IdentityError(f"public key {word[:60]!r} is not valid base64") from None
    if len(raw) != PUBLIC_KEY_LEN:
        raise IdentityError(f"public key {word[:60]!r} decodes to {len(raw)} bytes, "
                            f"an Ed25519 key is {PUBLIC_KEY_LEN}")
    return raw


class Identity:
    """This node's identity: an Ed25519 private key and its public key."""

    __slots__ = ("_private", "public_key", "path")

    def __init__(self, private: Ed25519PrivateKey, path: str | None = None) -> None:
        self._private = private
        self.public_key = PublicKey(private.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw))
        self.path = path

    @classmethod
    def generate(cls) -> "Identity":
        """A new random identity (not saved: see :meth:`save`)."""
        return cls(Ed25519PrivateKey.generate())

    def sign(self, message: bytes) -> bytes:
        """The 64-byte Ed25519 signature of `message` (RFC 8032 5.1.6)."""
        return self._private.sign(message)

    def private_pem(self) -> bytes:
        return self._private.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption())

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the private key to a NEW file with mode 0600 (O_CREAT|O_EXCL: an existing
        file, or a symlink where the file would be, is refused with IdentityError)."""
        name = os.fspath(path)
        try:
            fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        except FileExistsError:
            raise IdentityError(f"{name}: already exists; refusing to overwrite a key file") from None
        except OSError as e:
            raise IdentityError(f"{name}: cannot create the key file: {e.strerror}") from None
        try:
            # The umask may have taken bits away, never added: make it exactly 0600.
            os.fchmod(fd, 0o600)
            data = self.private_pem()
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        except OSError as e:
            os.close(fd)
            try:
                os.unlink(name)
            except OSError:
                pass
            raise IdentityError(f"{name}: cannot write the key file: {e.strerror}") from None
        os.close(fd)
        self.path = name

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> "Identity":
        """Read a private key file written by :meth:`save` (or openssl genpkey -algorithm
        ed25519).  IdentityError, naming the file, when it is missing, not a regular file,
        readable or writable by group or others, or not exactly one Ed25519 private key."""
        name = os.fspath(path)
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            raise IdentityError(f"{name}: no such private key file "
                                "(make one with `tcpstack keygen --out FILE`)") from None
        except OSError as e:
            raise IdentityError(f"{name}: cannot open the private key file: {e.strerror}") from None
        # (IdentityError is an OSError, via ConnectionError: raised outside the except below)
        try:
            st = os.fstat(fd)
            mode = stat.S_IMODE(st.st_mode)
            data = (os.read(fd, MAX_KEY_FILE + 1)
                    if stat.S_ISREG(st.st_mode) and not mode & 0o077 else b"")
        except OSError as e:
            raise IdentityError(f"{name}: cannot read the private key file: {e.strerror}") from None
        finally:
            os.close(fd)
        if not stat.S_ISREG(st.st_mode):
            raise IdentityError(f"{name}: not a regular file")
        if mode & 0o077:
            # as ssh: "UNPROTECTED PRIVATE KEY FILE! ... are too open"
            raise IdentityError(
                f"{name}: permissions {mode:04o} are too open: a private key file must not "
                f"be readable or writable by group or others (chmod 600 {name})")
        if len(data) > MAX_KEY_FILE:
            raise IdentityError(f"{name}: too large to be a private key file")
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError) as e:
            raise IdentityError(f"{name}: not an unencrypted PEM private key ({e})") from None
        except Exception as e:   # cryptography's UnsupportedAlgorithm and the like
            raise IdentityError(f"{name}: unreadable private key ({e})") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise IdentityError(f"{name}: holds a {type(key).__name__}, not an Ed25519 private key")
        return cls(key, name)

    def __repr__(self) -> str:
        return f"Identity({self.public_key.short()}...{', ' + self.path if self.path else ''})"


@dataclass(frozen=True, slots=True)
class Member:
    """One line of the peers file."""
    public_key: PublicKey
    networks: tuple[Network, ...]    # () = any address
    comment: str = ""
    line: int = 0                     # line number in the peers file (0: not from a file)

    def allows(self, address: str | ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        if not self.networks:
            return True
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip.version == n.version and ip in n for n in self.networks)

    def line_text(self) -> str:
        """The member as a peers-file line."""
        nets = ", ".join(str(n.network_address) if n.prefixlen == n.max_prefixlen else str(n)
                         for n in self.networks)
        parts = [self.public_key.text()] + ([nets] if nets else [])
        if self.comment:
            parts.append(f"# {self.comment}")
        return " ".join(parts)


def parse_peers(text: str, source: str = "<peers>") -> dict[PublicKey, Member]:
    """The members a peers file lists (format in the module docstring), keyed by public key.
    Raises PeersFileError(source, line, what) at the first malformed line."""
    members: dict[PublicKey, Member] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        body, _, comment = line.partition("#")
        words = body.replace(",", " ").split()
        if not words:
            if body.strip():
                raise PeersFileError(source, lineno, "commas without a public key")
            continue                                   # blank or comment line
        if words[0] != KEY_TYPE:
            raise PeersFileError(source, lineno, f"expected a public key '{KEY_TYPE} <base64>' "
                                 f"at the start of the line, got {words[0][:40]!r}")
        if len(words) < 2:
            raise PeersFileError(source, lineno, f"'{KEY_TYPE}' without the base64 key after it")
        try:
            key = PublicKey(_b64_key(words[1]))
        except IdentityError as e:
            raise PeersFileError(source, lineno, str(e)) from None
        nets: list[Network] = []
        for word in words[2:]:
            try:
                nets.append(ipaddress.ip_network(word, strict=True))
            except ValueError as e:
                what = ("has host bits set" if "host bits" in str(e)
                        else "is not an IP address or prefix (a comment starts with '#')")
                raise PeersFileError(source, lineno, f"{word!r} {what}") from None
        if key in members:
            raise PeersFileError(source, lineno, f"duplicate key {key.short()}...: already "
                                 f"listed on line {members[key].line}")
        members[key] = Member(key, tuple(nets), comment.strip(), lineno)
    return members


class Members:
    """The overlay's members, read from a peers file; :meth:`reload` re-reads it atomically."""

    def __init__(self, members: dict[PublicKey, Member] | None = None,
                 path: str | None = None) -> None:
        self._members: dict[PublicKey, Member] = dict(members or {})
        self.path = path

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> "Members":
        """Read a peers file (PeersFileError / IdentityError naming the file on any error)."""
        name = os.fspath(path)
        return cls(_read_peers(name), name)

    @classmethod
    def from_text(cls, text: str, source: str = "<peers>") -> "Members":
        return cls(parse_peers(text, source))

    @classmethod
    def of(cls, *keys: PublicKey | Identity | Member) -> "Members":
        """Members from keys (any address) or Member objects: for tests and programs."""
        out: dict[PublicKey, Member] = {}
        for k in keys:
            m = (k if isinstance(k, Member) else
                 Member(k.public_key if isinstance(k, Identity) else k, ()))
            out[m.public_key] = m
        return cls(out)

    def reload(self) -> tuple[list[Member], list[Member]]:
        """Re-read the peers file.  All or nothing: on any error the old set stays in force
        and the error is raised.  Returns (added, removed) members (a changed address list
        counts as removed + added)."""
        if self.path is None:
            raise IdentityError("these members were not read from a file: nothing to reload")
        new = _read_peers(self.path)
        old = self._members
        removed = [m for k, m in old.items() if new.get(k) is None
                   or new[k].networks != m.networks]
        added = [m for k, m in new.items() if old.get(k) is None
                 or old[k].networks != m.networks]
        self._members = new          # one assignment: readers see the old set or the new
        return added, removed

    def get(self, key: PublicKey) -> Member | None:
        return self._members.get(key)

    def check(self, key: PublicKey, address: str) -> str | None:
        """None when `key` is a member allowed at `address`, else the reason it is not."""
        m = self._members.get(key)
        if m is None:
            return f"key {key.short()}... is not in the peers file"
        if not m.allows(address):
            nets = ", ".join(str(n) for n in m.networks)
            return (f"member {key.short()}...{' (' + m.comment + ')' if m.comment else ''} "
                    f"may not use address {address} (allowed: {nets})")
        return None

    def admits(self, key: PublicKey, address: str) -> bool:
        return self.check(key, address) is None

    def identities(self) -> list[Member]:
        """The members, in peers-file order."""
        return sorted(self._members.values(), key=lambda m: m.line)

    def __iter__(self) -> Iterator[Member]:
        return iter(self.identities())

    def __len__(self) -> int:
        return len(self._members)

    def __contains__(self, key: object) -> bool:
        return key in self._members

    def __repr__(self) -> str:
        return f"Members({len(self._members)} from {self.path or 'memory'})"


def _read_peers(name: str) -> dict[PublicKey, Member]:
    try:
        with open(name, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise IdentityError(f"{name}: no such peers file") from None
    except UnicodeDecodeError as e:
        raise IdentityError(f"{name}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except OSError as e:
        raise IdentityError(f"{name}: cannot read the peers file: {e.strerror}") from None
    return parse_peers(text, name)
