"""SOCKS5 (RFC 1928) with username/password authentication (RFC 1929): a sans-IO parser of
the client's messages and the builders of the server's replies.

Only what an overlay node needs: CONNECT with IPv4, IPv6 and domain-name addresses
(RFC 1928 4, 5).  BIND and UDP ASSOCIATE are answered with 0x07 "command not supported"
(RFC 1928 6).  The asyncio side (reading these messages from a kernel client, connecting
through the stack, bridging) is tcpstack.overlay.node.
"""
from __future__ import annotations

import hmac
import ipaddress
from dataclasses import dataclass

VERSION = 5                     # RFC 1928 3: VER
AUTH_VERSION = 1                # RFC 1929 2: VER of the sub-negotiation

# RFC 1928 3: METHOD values
METHOD_NO_AUTH = 0x00
METHOD_USERPASS = 0x02
METHOD_NONE_ACCEPTABLE = 0xFF

# RFC 1928 4: CMD
CMD_CONNECT = 0x01
CMD_BIND = 0x02
CMD_UDP_ASSOCIATE = 0x03

# RFC 1928 4/5: ATYP
ATYP_IPV4 = 0x01
ATYP_DOMAIN = 0x03
ATYP_IPV6 = 0x04

# RFC 1928 6: REP
REP_SUCCEEDED = 0x00
REP_GENERAL_FAILURE = 0x01
REP_NOT_ALLOWED = 0x02
REP_NETWORK_UNREACHABLE = 0x03
REP_HOST_UNREACHABLE = 0x04
REP_CONNECTION_REFUSED = 0x05
REP_TTL_EXPIRED = 0x06
REP_COMMAND_NOT_SUPPORTED = 0x07
REP_ADDRESS_TYPE_NOT_SUPPORTED = 0x08

REPLY_TEXT = {
    REP_SUCCEEDED: "succeeded", REP_GENERAL_FAILURE: "general SOCKS server failure",
    REP_NOT_ALLOWED: "connection not allowed by ruleset",
    REP_NETWORK_UNREACHABLE: "network unreachable", REP_HOST_UNREACHABLE: "host unreachable",
    REP_CONNECTION_REFUSED: "connection refused", REP_TTL_EXPIRED: "TTL expired",
    REP_COMMAND_NOT_SUPPORTED: "command not supported",
    REP_ADDRESS_TYPE_NOT_SUPPORTED: "address type not supported",
}


class Socks5Error(Exception):
    """A client message the server must refuse.  `reply` is the RFC 1928 6 REP code to send
    before closing, or None when nothing can be answered (not SOCKS5 at all: the
    connection is just closed)."""

    def __init__(self, msg: str, reply: int | None = REP_GENERAL_FAILURE) -> None:
        super().__init__(msg)
        self.reply = reply


@dataclass(frozen=True)
class Request:
    """A client's request (RFC 1928 4): the command and where to, as sent."""
    cmd: int
    atyp: int
    host: str                   # an address literal (ATYP 1, 4) or the domain name (ATYP 3)
    port: int

    @property
    def where(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_greeting(buf: bytes | bytearray) -> tuple[list[int], int] | None:
    """The version identifier/method selection message (RFC 1928 3):
    VER | NMETHODS | METHODS.  Returns (methods, bytes used), or None if more is needed."""
    if len(buf) < 2:
        return None
    if buf[0] != VERSION:
        # not SOCKS5 (a SOCKS4 client: VER 4; an HTTP client: "G"): no SOCKS5 answer fits
        raise Socks5Error(f"not a SOCKS5 client (version byte {buf[0]:#04x})", None)
    n = buf[1]
    if n == 0:
        raise Socks5Error("SOCKS5 greeting offers no authentication method", None)
    if len(buf) < 2 + n:
        return None
    return list(buf[2:2 + n]), 2 + n


def select_method(methods: list[int], auth_required: bool) -> int:
    """RFC 1928 3: the method the server selects from the client's list; X'FF' (no
    acceptable method) when the list has none the server accepts."""
    want = METHOD_USERPASS if auth_required else METHOD_NO_AUTH
    return want if want in methods else METHOD_NONE_ACCEPTABLE


def method_reply(method: int) -> bytes:
    return bytes((VERSION, method))


def parse_userpass(buf: bytes | bytearray) -> tuple[tuple[bytes, bytes], int] | None:
    """RFC 1929 2: VER(1) | ULEN | UNAME | PLEN | PASSWD.  ((user, password), bytes used),
    or None if more is needed."""
    if len(buf) < 2:
        return None
    if buf[0] != AUTH_VERSION:
        raise Socks5Error(f"username/password sub-negotiation version {buf[0]:#04x} "
                          "(RFC 1929 wants 0x01)", None)
    ulen = buf[1]
    if len(buf) < 2 + ulen + 1:
        return None
    plen = buf[2 + ulen]
    end = 3 + ulen + plen
    if len(buf) < end:
        return None
    return (bytes(buf[2:2 + ulen]), bytes(buf[3 + ulen:end])), end


def userpass_reply(ok: bool) -> bytes:
    """RFC 1929 2: VER | STATUS; 0x00 success, anything else failure (and the server closes)."""
    return bytes((AUTH_VERSION, 0x00 if ok else 0x01))


def check_password(users: dict[bytes, bytes], user: bytes, password: bytes) -> bool:
    """Whether (user, password) is one of `users`, compared in constant time."""
    want = users.get(user)
    ok = hmac.compare_digest(want if want is not None else b"\0" * len(password), password)
    return want is not None and ok


def parse_request(buf: bytes | bytearray) -> tuple[Request, int] | None:
    """RFC 1928 4: VER | CMD | RSV | ATYP | DST.ADDR | DST.PORT.  (request, bytes used), or
    None if more is needed; a malformed request raises Socks5Error with its REP code."""
    if len(buf) < 4:
        return None
    ver, cmd, _rsv, atyp = buf[0], buf[1], buf[2], buf[3]
    if ver != VERSION:
        raise Socks5Error(f"request version {ver:#04x}, not 0x05", REP_GENERAL_FAILURE)
    if atyp == ATYP_IPV4:
        end = 4 + 4
    elif atyp == ATYP_IPV6:
        end = 4 + 16
    elif atyp == ATYP_DOMAIN:
        if len(buf) < 5:
            return None
        end = 5 + buf[4]
    else:
        # RFC 1928 6: X'08' Address type not supported
        raise Socks5Error(f"address type {atyp:#04x} is not one of RFC 1928's (1, 3, 4)",
                          REP_ADDRESS_TYPE_NOT_SUPPORTED)
    if len(buf) < end + 2:
        return None
    port = int.from_bytes(buf[end:end + 2], "big")
    if atyp == ATYP_IPV4:
        host = str(ipaddress.IPv4Address(bytes(buf[4:8])))
    elif atyp == ATYP_IPV6:
        host = str(ipaddress.IPv6Address(bytes(buf[4:20])))
    else:
        raw = bytes(buf[5:end])
        if not raw:
            raise Socks5Error("empty domain name", REP_GENERAL_FAILURE)
        try:
            host = raw.decode("ascii")
        except UnicodeDecodeError:
            # RFC 1928 5: "fully-qualified domain name": IDNA names travel as A-labels
            raise Socks5Error(f"domain name {raw!r} is not ASCII (an IDNA name is sent as "
                              "its xn-- form)", REP_HOST_UNREACHABLE) from None
        if any(c in host for c in "\0/ ") or not host.isprintable():
            raise Socks5Error(f"domain name {raw!r} is not a host name", REP_HOST_UNREACHABLE)
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]         # an IPv6 literal some clients send as a "domain"
    if cmd in (CMD_BIND, CMD_UDP_ASSOCIATE):
        # RFC 1928 6: X'07' Command not supported (a TCP-only overlay node)
        raise Socks5Error(f"{'BIND' if cmd == CMD_BIND else 'UDP ASSOCIATE'} is not supported "
                          "(CONNECT only)", REP_COMMAND_NOT_SUPPORTED)
    if cmd != CMD_CONNECT:
        raise Socks5Error(f"unknown command {cmd:#04x}", REP_COMMAND_NOT_SUPPORTED)
    if port == 0:
        raise Socks5Error("destination port 0", REP_GENERAL_FAILURE)
    return Request(cmd, atyp, host, port), end + 2


def reply(rep: int, bind: tuple[str, int] | None = None) -> bytes:
    """RFC 1928 6: VER | REP | RSV | ATYP | BND.ADDR | BND.PORT.  Failures (and a missing
    bound address) carry 0.0.0.0:0."""
    if bind is None:
        return bytes((VERSION, rep, 0, ATYP_IPV4)) + bytes(6)
    ip = ipaddress.ip_address(bind[0])
    atyp = ATYP_IPV4 if ip.version == 4 else ATYP_IPV6
    return bytes((VERSION, rep, 0, atyp)) + ip.packed + bind[1].to_bytes(2, "big")


def build_request(host: str, port: int, cmd: int = CMD_CONNECT) -> bytes:
    """A client's CONNECT request (tests, the bench): IP literals as ATYP 1/4, names as 3."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raw = host.encode("idna")
        return bytes((VERSION, cmd, 0, ATYP_DOMAIN, len(raw))) + raw + port.to_bytes(2, "big")
    atyp = ATYP_IPV4 if ip.version == 4 else ATYP_IPV6
    return bytes((VERSION, cmd, 0, atyp)) + ip.packed + port.to_bytes(2, "big")
