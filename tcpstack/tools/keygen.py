"""`tcpstack keygen`: make an overlay node's identity (an Ed25519 key pair, tcpcrypt/identity.py).

    tcpstack keygen [--out FILE]     write a new private key to FILE (default ./tcpstack.key),
                                     created with mode 0600, never overwriting; print the
                                     public key, one line, on stdout
    tcpstack keygen --public FILE    print the public key of an existing private key file
                                     (like `wg pubkey`; the file must be mode 0600 or stricter)

The public key line ("tcpcrypt-ed25519 <base64>") is what goes in the peers file of every
other member (tcpcrypt/identity.py documents both file formats).  Errors are one line on
stderr, exit status 1.
"""
from __future__ import annotations

import argparse
import sys

__all__ = ["DEFAULT_KEY_FILE", "add_arguments", "keygen", "cmd_keygen"]

DEFAULT_KEY_FILE = "tcpstack.key"


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("--out", metavar="FILE", default=None,
                   help=f"write the new private key here (mode 0600, never overwritten; "
                        f"default ./{DEFAULT_KEY_FILE})")
    g.add_argument("--public", metavar="FILE",
                   help="print the public key of this existing private key file instead")


def keygen(out: str | None = None, public: str | None = None) -> str:
    """The public key line; writes a new key to `out` unless `public` names an existing one.
    Raises tcpcrypt.errors.IdentityError (a message naming the file)."""
    from tcpcrypt.identity import Identity
    if public is not None:
        return Identity.load(public).public_key.text()
    ident = Identity.generate()
    ident.save(out if out is not None else DEFAULT_KEY_FILE)
    return ident.public_key.text()


async def cmd_keygen(args: argparse.Namespace) -> int:
    from tcpcrypt.errors import IdentityError
    try:
        line = keygen(args.out, args.public)
    except IdentityError as e:
        print(f"tcpstack: keygen: {e}", file=sys.stderr, flush=True)
        return 1
    print(line, flush=True)
    if args.public is None:
        print(f"tcpstack: wrote the private key to {args.out or DEFAULT_KEY_FILE} (mode 0600); "
              "the line above is its public key, for the peers file of every other member",
              file=sys.stderr, flush=True)
    return 0
