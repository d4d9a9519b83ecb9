"""What an overlay node serves, from the command line and a TOML file (tomllib).

    --socks5 [BIND:]PORT                    SOCKS5 proxy on a kernel address (default 127.0.0.1)
    --forward [BIND:]PORT:HOST:HPORT        as ssh -L: kernel BIND:PORT -> stack -> HOST:HPORT
    --expose PORT:TARGET_HOST:TARGET_PORT   as ssh -R: stack PORT -> kernel TARGET_HOST:TARGET_PORT

An IPv6 address is written in brackets ([::1]:1080).  The file's keys are the options'
names (see KEYS); an option given on the command line overrides the file's key, a
repeatable one replaces the file's whole list.
"""
from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from dataclasses import dataclass, field
from typing import Any

DEFAULT_BIND = "127.0.0.1"


class OverlayError(Exception):
    """A node's configuration or service cannot be used: one line for the user, and the
    exit status (2: what was typed or written in the file; 1: what was found on the host)."""

    def __init__(self, msg: str, status: int = 1) -> None:
        super().__init__(msg)
        self.status = status


@dataclass(frozen=True)
class Listen:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class Forward:
    """--forward: kernel clients of `listen` are carried over the stack to host:port."""
    listen: Listen
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.listen}->{Listen(self.host, self.port)}"


@dataclass(frozen=True)
class Expose:
    """--expose: the stack listens on `port`; each connection goes to the kernel service
    target_host:target_port."""
    port: int
    target_host: str
    target_port: int

    def __str__(self) -> str:
        return f"{self.port}->{Listen(self.target_host, self.target_port)}"


@dataclass
class NodeConfig:
    socks5: Listen | None = None
    socks5_users: dict[bytes, bytes] = field(default_factory=dict)
    forwards: list[Forward] = field(default_factory=list)
    exposes: list[Expose] = field(default_factory=list)
    key: str | None = None          # membership: this node's identity key (path)
    peers: str | None = None        # membership: the peers file (path)
    connect_timeout: float = 30.0


def _fields(spec: str) -> list[str]:
    """spec split at ':' outside brackets; bracketed parts lose their brackets."""
    out: list[str] = []
    cur, depth = "", 0
    for c in spec:
        if c == "[":
            depth += 1
            if depth > 1:
                raise ValueError("nested '['")
            continue
        if c == "]":
            depth -= 1
            if depth < 0:
                raise ValueError("']' without '['")
            continue
        if c == ":" and depth == 0:
            out.append(cur)
            cur = ""
        else:
            cur += c
    if depth:
        raise ValueError("'[' without ']'")
    out.append(cur)
    return out


def _port(text: str, what: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise ValueError(f"{what} {text!r} is not a port number (1-65535)")
    return int(text)


def _host(text: str, what: str) -> str:
    if not text:
        raise ValueError(f"{what} is empty")
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        pass
    if not re.fullmatch(r"[A-Za-z0-9_]([A-Za-z0-9_.-]*[A-Za-z0-9_.])?", text) or len(text) > 253:
        raise ValueError(f"{what} {text!r} is neither an IP address nor a host name")
    return text


def _bind(text: str) -> str:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        if text == "localhost":
            return DEFAULT_BIND
        if text in ("*", ""):
            return "0.0.0.0"
        raise ValueError(f"bind address {text!r} is not an IP address (or localhost, *)") from None


def parse_listen(spec: str) -> Listen:
    """[BIND:]PORT"""
    f = _fields(spec)
    if len(f) == 1:
        return Listen(DEFAULT_BIND, _port(f[0], "port"))
    if len(f) == 2:
        return Listen(_bind(f[0]), _port(f[1], "port"))
    raise ValueError("expected [BIND:]PORT")


def parse_forward(spec: str) -> Forward:
    """[BIND:]PORT:HOST:HPORT"""
    f = _fields(spec)
    if len(f) == 3:
        bind, (port, host, hport) = DEFAULT_BIND, f
    elif len(f) == 4:
        bind, port, host, hport = _bind(f[0]), f[1], f[2], f[3]
    else:
        raise ValueError("expected [BIND:]PORT:HOST:HPORT (an IPv6 address in brackets)")
    return Forward(Listen(bind, _port(port, "port")), _host(host, "HOST"), _port(hport, "HPORT"))


def parse_expose(spec: str) -> Expose:
    """PORT:TARGET_HOST:TARGET_PORT"""
    f = _fields(spec)
    if len(f) != 3:
        raise ValueError("expected PORT:TARGET_HOST:TARGET_PORT (an IPv6 address in brackets)")
    return Expose(_port(f[0], "PORT"), _host(f[1], "TARGET_HOST"), _port(f[2], "TARGET_PORT"))


def parse_user(spec: str) -> tuple[bytes, bytes]:
    """USER:PASSWORD (RFC 1929 2: each 1-255 bytes)."""
    user, sep, password = spec.partition(":")
    if not sep or not user or not password:
        raise ValueError("expected USER:PASSWORD")
    u, p = user.encode(), password.encode()
    if len(u) > 255 or len(p) > 255:
        raise ValueError("user and password are at most 255 bytes each (RFC 1929 2)")
    return u, p


def read_users(path: str) -> dict[bytes, bytes]:
    """A users file: USER:PASSWORD a line; blank lines and # comments ignored."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError as e:
        raise OverlayError(f"--socks5-users {path}: {e.strerror or e}", 1) from None
    except UnicodeDecodeError:
        raise OverlayError(f"--socks5-users {path}: not UTF-8 text", 2) from None
    users: dict[bytes, bytes] = {}
    for n, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            u, p = parse_user(line)
        except ValueError as e:
            raise OverlayError(f"{path}:{n}: {e}", 2) from None
        users[u] = p
    if not users:
        raise OverlayError(f"--socks5-users {path}: no USER:PASSWORD line", 2)
    return users


# --- the file --------------------------------------------------------------------------

# key -> (type, the `up` option it stands for)
KEYS: dict[str, tuple[type | tuple[type, ...], str]] = {
    "address": (str, "--addr"), "peer": (str, "--peer"), "device": (str, "--dev"),
    "mtu": (int, "--mtu"), "routes": (list, "--route"), "offload": (bool, "--no-offload"),
    "plain": (bool, "--plain"), "require_encryption": (bool, "--require-encryption"),
    "congestion_control": (str, "--congestion-control"),
    "pcap": (str, "--pcap"), "keylog": (str, "--keylog"), "control": (str, "--control"),
    "socks5": ((str, int), "--socks5"), "socks5_users": (list, "--socks5-user"),
    "socks5_users_file": (str, "--socks5-users"),
    "forwards": (list, "--forward"), "exposes": (list, "--expose"),
    "key": (str, "--key"), "peers": (str, "--peers"),
    "connect_timeout": ((int, float), "--connect-timeout"),
    "echo": (int, "--echo"), "discard": (int, "--discard"), "http": (int, "--http"),
}


PATH_KEYS = ("pcap", "keylog", "control", "socks5_users_file", "key", "peers")


def _line_of(text: str, key: str) -> int | None:
    m = re.search(rf"^[ \t]*{re.escape(key)}[ \t]*=", text, re.M)
    return text.count("\n", 0, m.start()) + 1 if m else None


def load_file(path: str) -> tuple[dict[str, Any], str]:
    """The TOML file's table (keys checked against KEYS) and its text."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise OverlayError(f"--config {path}: {e.strerror or e}", 1) from None
    try:
        text = raw.decode("utf-8")
        data = tomllib.loads(text)
    except UnicodeDecodeError:
        raise OverlayError(f"{path}: not UTF-8 text (TOML files are UTF-8)", 2) from None
    except tomllib.TOMLDecodeError as e:
        # tomllib's message ends "(at line L, column C)" or "(at end of document)"
        m = re.search(r"\(at line (\d+), column (\d+)\)", str(e))
        what = re.sub(r"\s*\(at (line \d+, column \d+|end of document)\)", "", str(e))
        if m:
            where = f"{path}:{m.group(1)}:{m.group(2)}"
        elif "end of document" in str(e):
            last = raw.count(b"\n") + (not raw.endswith(b"\n"))
            where = f"{path}:{last}: at the end"
        else:
            where = path
        raise OverlayError(f"{where}: not valid TOML: {what}", 2) from None
    for key, value in data.items():
        line = _line_of(text, key)
        where = f"{path}:{line}" if line else path
        if key not in KEYS:
            raise OverlayError(f"{where}: unknown key {key!r} (known: {', '.join(sorted(KEYS))})", 2)
        kind = KEYS[key][0]
        if isinstance(value, bool) and kind is not bool:
            ok = False
        else:
            ok = isinstance(value, kind)
        if not ok:
            names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
            raise OverlayError(f"{where}: {key} = {value!r}: expected {names} "
                               f"(as {KEYS[key][1]})", 2)
        if kind is list and not all(isinstance(v, str) for v in value):
            raise OverlayError(f"{where}: {key}: every item must be a string", 2)
    return data, text


def merge(args: Any) -> NodeConfig:
    """Fill the `up` arguments from --config FILE where the command line left them unset,
    and parse the node's own options.  Raises OverlayError (one line)."""
    data: dict[str, Any] = {}
    text = ""
    path = getattr(args, "config", None)
    if path:
        data, text = load_file(path)

    # paths in the file are relative to the file's directory (a service's working
    # directory is not the administrator's)
    base = os.path.dirname(os.path.abspath(path)) if path else ""
    for key in PATH_KEYS:
        if isinstance(data.get(key), str) and data[key] and not os.path.isabs(data[key]):
            data[key] = os.path.join(base, data[key])

    def where(key: str) -> str:
        line = _line_of(text, key)
        return f"{path}:{line}: {key}" if line else f"{path}: {key}"

    # the link options Host reads from args
    for key, dest in (("address", "addr"), ("peer", "peer"), ("device", "dev"), ("mtu", "mtu"),
                      ("pcap", "pcap"), ("keylog", "keylog"), ("control", "control"),
                      ("echo", "echo"), ("discard", "discard"), ("http", "http"),
                      ("key", "key"), ("peers", "peers"),
                      ("connect_timeout", "connect_timeout"),
                      ("congestion_control", "congestion_control")):
        if getattr(args, dest, None) is None and key in data:
            setattr(args, dest, data[key])
    if not getattr(args, "route", None):
        args.route = list(data.get("routes", []))
    if getattr(args, "offload", None) is None:
        args.offload = bool(data.get("offload", True))
    for key in ("plain", "require_encryption"):
        if not getattr(args, key, False) and data.get(key):
            setattr(args, key, True)
    if args.mtu is None:
        args.mtu = 1500
    if args.addr is None:
        raise OverlayError("no address for the stack: give --addr or `address` in --config", 2)
    for key, lo, hi in (("mtu", 68, 65535), ("echo", 1, 65535), ("discard", 1, 65535),
                        ("http", 1, 65535)):
        v = getattr(args, key, None)
        if key in data and v == data[key] and v is not None and not lo <= v <= hi:
            raise OverlayError(f"{where(key)} = {v}: not in {lo}-{hi}", 2)
    cc = getattr(args, "congestion_control", None)
    if "congestion_control" in data and cc == data["congestion_control"]:
        from tcpstack.tcp.congestion import algorithm_name
        try:
            args.congestion_control = algorithm_name(cc)
        except ValueError as bad:
            raise OverlayError(f"{where('congestion_control')} = {bad}", 2) from None
    if getattr(args, "connect_timeout", None) is None:
        args.connect_timeout = 30.0
    if args.connect_timeout <= 0:
        raise OverlayError(f"connect timeout {args.connect_timeout}: must be above 0", 2)

    cfg = NodeConfig(key=getattr(args, "key", None), peers=getattr(args, "peers", None),
                     connect_timeout=float(args.connect_timeout))

    def parse(spec: Any, parser: Any, opt: str, key: str, from_file: bool) -> Any:
        try:
            return parser(str(spec))
        except ValueError as e:
            head = where(key) if from_file else opt
            raise OverlayError(f"{head} {spec}: {e}", 2) from None

    s5 = getattr(args, "socks5", None)
    if s5 is not None:
        cfg.socks5 = parse(s5, parse_listen, "--socks5", "socks5", False)
    elif "socks5" in data:
        cfg.socks5 = parse(data["socks5"], parse_listen, "--socks5", "socks5", True)
    fw = getattr(args, "forward", None)
    cfg.forwards = ([parse(s, parse_forward, "--forward", "forwards", False) for s in fw] if fw
                    else [parse(s, parse_forward, "--forward", "forwards", True)
                          for s in data.get("forwards", [])])
    ex = getattr(args, "expose", None)
    cfg.exposes = ([parse(s, parse_expose, "--expose", "exposes", False) for s in ex] if ex
                   else [parse(s, parse_expose, "--expose", "exposes", True)
                         for s in data.get("exposes", [])])
    users = getattr(args, "socks5_user", None)
    users_file = getattr(args, "socks5_users", None)
    if users or users_file:
        cfg.socks5_users = {}
        for u in users or []:
            cfg.socks5_users.update([parse(u, parse_user, "--socks5-user", "socks5_users", False)])
        if users_file:
            cfg.socks5_users.update(read_users(users_file))
    else:
        for u in data.get("socks5_users", []):
            cfg.socks5_users.update([parse(u, parse_user, "--socks5-user", "socks5_users", True)])
        if "socks5_users_file" in data:
            cfg.socks5_users.update(read_users(data["socks5_users_file"]))
    if cfg.socks5_users and cfg.socks5 is None:
        raise OverlayError("--socks5-user/--socks5-users without --socks5", 2)
    seen: dict[tuple[str, int], str] = {}
    kernel_listens = ([("--socks5", cfg.socks5)] if cfg.socks5 else []) + \
        [("--forward", f.listen) for f in cfg.forwards]
    for opt, l in kernel_listens:
        k = (l.host, l.port)
        if k in seen:
            raise OverlayError(f"{opt} {l}: the same kernel address as {seen[k]}", 2)
        seen[k] = f"{opt} {l}"
    ports: dict[int, str] = {}
    for e in cfg.exposes:
        if e.port in ports:
            raise OverlayError(f"--expose {e}: stack port {e.port} is already {ports[e.port]}", 2)
        ports[e.port] = f"--expose {e}"
    for opt in ("echo", "discard", "http"):
        p = getattr(args, opt, None)
        if p and p in ports:
            raise OverlayError(f"--{opt} {p}: stack port {p} is already {ports[p]}", 2)
        if p:
            ports[p] = f"--{opt} {p}"
    for key in ("key", "peers"):
        v = getattr(cfg, key)
        if v is not None and not os.path.exists(v):
            raise OverlayError(f"--{key} {v}: no such file", 1)
    return cfg
