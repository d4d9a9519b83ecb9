"""The process-wide switch: every asyncio event loop in the process, its TCP moved onto a
userspace Stack for the destinations a routing option selects.

install() patches the loop classes themselves, so it reaches loops made by anyone: asyncio's
SelectorEventLoop (asyncio.run, asyncio.Runner, new_event_loop) and uvloop's Loop (uvloop.run,
uvicorn's loop="auto", which builds its loops with its own factory).  An event loop policy
alone would miss the loops such factories make.  Patched, per loop:

    create_connection   to a routed destination: over the stack (host names are resolved
                        first, with the loop's getaddrinfo, to decide); sock= a socket that
                        sock_connect() connected over the stack: that stack connection
    create_server       host None / "" / 0.0.0.0 / :: or one of the stack's addresses: a
                        listener on the stack (only there: see docs/run.md)
    start_tls           a transport of the stack, or TLS over one (streams.stack_of): TLS
                        on top of it (Stack.start_tls; uvloop's own refuses such transports)
    sock_connect        a kernel TCP socket to a routed destination: the stack connects
                        instead, and the connection waits, recorded against the socket
                        (weakly), for create_connection(sock=...) to take it: what aiohttp
                        (aiohappyeyeballs, RFC 8305 happy eyeballs) does.  The kernel
                        socket is closed then; a losing attempt's socket, once collected,
                        resets its stack connection.
    close               a loop owning a stack lingers for its unacknowledged data (at most
                        Switch.linger seconds), then closes the stack (not the device)

Everything else (Unix sockets, other destinations, UDP, subprocesses, kernel sockets handed
over with sock=) stays the kernel's, through the original methods.

Which switch a loop uses: the one bound to it (bind(), the loop factories) or else the
process's (set_process_switch()).  Without either, every method is the original.  A Switch
brings its stack up lazily, on the first routed call, for the loop making it: a Stack lives
on one loop, so a switch serves ONE loop at a time; when that loop is closed (asyncio.run
returning, say) the next loop to need the stack gets a fresh one on the same link.  A
second loop needing it while the first is still running (another thread) gets a clear
RuntimeError.
"""
from __future__ import annotations

import asyncio
import functools
import ipaddress
import logging
import socket
import ssl as _ssl
import threading
import weakref
from asyncio import base_events, selector_events, unix_events
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence

if TYPE_CHECKING:  # pragma: no cover
    from tcpstack.aio.streams import Stack

log = logging.getLogger(__name__)

__all__ = ["Routes", "Switch", "install", "uninstall", "installed", "set_process_switch",
           "process_switch", "bind", "switch_for", "switched_loop_factory"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface
StackFactory = Callable[[asyncio.AbstractEventLoop], "Stack"]

_WILDCARDS = ("", "0.0.0.0", "::")


class Routes:
    """Which destinations go over the stack: prefixes, or "all" (every address of the
    stack's IP versions).  Loopback, unspecified and multicast destinations never do: the
    kernel answers those itself."""

    def __init__(self, prefixes: Iterable[str | IPNetwork] = (), *, everything: bool = False) -> None:
        self.prefixes: list[IPNetwork] = [ipaddress.ip_network(p) for p in prefixes]
        self.everything = everything

    @classmethod
    def parse(cls, texts: Iterable[str]) -> "Routes":
        """From --route / TCPCRYPT_ROUTE values: prefixes (10.78.0.0/24) or "all".  A bad
        one raises ValueError saying which."""
        prefixes: list[IPNetwork] = []
        everything = False
        for t in texts:
            t = t.strip()
            if not t:
                continue
            if t.lower() == "all":
                everything = True
                continue
            try:
                prefixes.append(ipaddress.ip_network(t))
            except ValueError as e:
                raise ValueError(f"route {t!r}: {e} (a prefix such as 10.78.0.0/24, or all)") from None
        return cls(prefixes, everything=everything)

    def covers(self, ip: IPAddress) -> bool:
        if ip.is_loopback or ip.is_unspecified or ip.is_multicast:
            return False
        return self.everything or any(ip in p for p in self.prefixes)

    def __repr__(self) -> str:
        return "Routes(all)" if self.everything else f"Routes({[str(p) for p in self.prefixes]})"


def _literal(host: Any) -> IPAddress | None:
    if not isinstance(host, str):
        return None
    try:
        return ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None


class Switch:
    """One userspace stack for the process's event loops, and which destinations use it.

    stack_factory(loop) makes the Stack for a loop (on the same link each time: see
    tcpcrypt.switch.TunStacks).  addresses: the stack's own address(es) with prefix length;
    routed are their subnets and `routes` (Routes, or prefixes/"all" as text).
    require_encryption: every connection and listener of the switch refuses peers that do
    not negotiate tcpcrypt (EncryptionRequiredError), never plaintext.  linger: at loop
    close, seconds to wait for unacknowledged data (the stack dies with its loop).
    on_stack(stack), if given, is called on each stack brought up, on its loop, and may
    return a function called before that stack closes (a control socket, say)."""

    def __init__(self, stack_factory: StackFactory, addresses: Iterable[str | IPInterface],
                 routes: "Routes | Iterable[str]" = (), *, require_encryption: bool = False,
                 linger: float = 5.0,
                 on_stack: "Callable[[Stack], Callable[[], None] | None] | None" = None) -> None:
        self.stack_factory = stack_factory
        self.addresses: list[IPInterface] = [ipaddress.ip_interface(a) for a in addresses]
        if not self.addresses:
            raise ValueError("Switch: the stack needs at least one address")
        extra = routes if isinstance(routes, Routes) else Routes.parse(routes)
        self.routes = Routes([a.network for a in self.addresses] + extra.prefixes,
                             everything=extra.everything)
        self.versions = {a.version for a in self.addresses}
        self.require_encryption = require_encryption
        self.linger = linger
        # connections sock_connect() made over the stack and create_connection(sock=)
        # took (aiohttp's way): a count, for tests and curiosity
        self.adopted = 0
        self.on_stack = on_stack
        self._on_close: Callable[[], None] | None = None
        self._lock = threading.Lock()
        self._stack: Stack | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # --- routing ---------------------------------------------------------------------------

    def routed(self, ip: IPAddress | str) -> bool:
        """True if a connection to `ip` goes over the stack."""
        addr = ipaddress.ip_address(ip) if isinstance(ip, str) else ip
        return addr.version in self.versions and self.routes.covers(addr)

    def is_own(self, host: Any) -> bool:
        """True if a listener on `host` belongs on the stack: a wildcard or the stack's own."""
        if host is None or (isinstance(host, str) and host in _WILDCARDS):
            return True
        ip = _literal(host)
        return ip is not None and any(ip == a.ip for a in self.addresses)

    async def destination(self, loop: asyncio.AbstractEventLoop, host: Any, port: Any,
                          family: int = 0) -> str | None:
        """The address to connect to over the stack, or None for the kernel.  A name is
        resolved (the loop's getaddrinfo, i.e. the system resolver) and the first routed
        address in its answer taken."""
        if host is None or not isinstance(host, str):
            return None
        ip = _literal(host)
        if ip is not None:
            return str(ip) if self.routed(ip) else None
        infos = await loop.getaddrinfo(host, port, family=family, type=socket.SOCK_STREAM)
        for fam, _, _, _, sa in infos:
            if fam in (socket.AF_INET, socket.AF_INET6):
                cand = _literal(sa[0])
                if cand is not None and self.routed(cand):
                    return str(cand)
        return None

    # --- the stack, per loop ---------------------------------------------------------------

    @property
    def stack(self) -> "Stack | None":
        """The stack now up (for the loop that made it), if any."""
        return self._stack

    def stack_for(self, loop: asyncio.AbstractEventLoop) -> "Stack":
        """The stack for `loop`, brought up on first use.  One loop at a time: the stack of
        a closed (or no longer running) loop is closed and replaced."""
        with self._lock:
            stack, owner = self._stack, self._loop
            if stack is not None and owner is loop and not stack._closed:
                return stack
            if stack is not None and owner is not loop and not stack._closed:
                if owner is not None and owner.is_running() and not owner.is_closed():
                    raise RuntimeError(
                        "the userspace stack is in use by another running event loop (another "
                        "thread?): one stack serves one running loop at a time")
                self._drop()
            stack = self._stack = self.stack_factory(loop)
            self._loop = loop
            log.debug("stack %s up on loop %r", stack.addresses, loop)
            if self.on_stack is not None:
                self._on_close = self.on_stack(stack)
            return stack

    def _closing(self) -> None:
        on_close, self._on_close = self._on_close, None
        if on_close is not None:
            try:
                on_close()
            except Exception as e:
                log.debug("on_stack's closing function: %r", e)

    def _drop(self) -> None:
        self._closing()
        stack, self._stack, self._loop = self._stack, None, None
        if stack is not None and not stack._closed:
            try:
                stack.close()
            except Exception as e:          # a loop closed under it: nothing left to flush to
                log.debug("closing the stack of a finished loop: %r", e)

    def release(self, loop: asyncio.AbstractEventLoop) -> None:
        """`loop` is closing: if it owns the stack, let the stack's data go out (at most
        `linger` seconds) and close the stack, running the stopped loop for that, so the
        last segments (FINs, RSTs) leave while it still can."""
        if self._loop is not loop or self._stack is None:
            return
        stack = self._stack
        if not stack._closed and not loop.is_running() and not loop.is_closed():
            async def finish() -> None:
                if self.linger > 0:
                    await stack.linger(self.linger)
                self._closing()
                stack.close()
                await asyncio.sleep(0)
            try:
                loop.run_until_complete(finish())
            except Exception as e:
                log.debug("closing the stack at loop close: %r", e)
        with self._lock:
            if self._loop is loop:
                self._drop()

    def close(self) -> None:
        with self._lock:
            self._drop()

    def options(self) -> dict[str, Any]:
        """Keywords for every stack connection/listener this switch makes."""
        return {"require_encryption": True} if self.require_encryption else {}


# --- which switch a loop uses ---------------------------------------------------------------

_process_switch: Switch | None = None
_bound: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Switch]" = weakref.WeakKeyDictionary()


def set_process_switch(switch: Switch | None) -> Switch | None:
    """The switch of every loop with none bound (None: the kernel's); returns the previous."""
    global _process_switch
    old, _process_switch = _process_switch, switch
    return old


def process_switch() -> Switch | None:
    return _process_switch


def bind(loop: asyncio.AbstractEventLoop, switch: Switch | None) -> None:
    """Give `loop` its own switch (before the process's); None removes the binding."""
    if switch is None:
        _bound.pop(loop, None)
    else:
        _bound[loop] = switch


def switch_for(loop: asyncio.AbstractEventLoop) -> Switch | None:
    return _bound.get(loop) or _process_switch


def switched_loop_factory(switch: Switch,
                          base: Callable[[], asyncio.AbstractEventLoop] | None = None
                          ) -> Callable[[], asyncio.AbstractEventLoop]:
    """A loop factory for asyncio.Runner(loop_factory=...) / asyncio.run(loop_factory=...)
    (3.12): each loop it makes (from `base`, default asyncio.new_event_loop) uses `switch`.
    Installs the patches."""
    install()
    make = base or asyncio.new_event_loop

    def factory() -> asyncio.AbstractEventLoop:
        loop = make()
        bind(loop, switch)
        return loop
    return factory


# --- stack calls (the Stack's asyncio-shaped API) ---------------------------------------------

async def _stack_connect(stack: "Stack", switch: Switch, protocol_factory: Callable[[], Any],
                         host: str, port: int, kw: dict[str, Any]) -> tuple[Any, Any]:
    kw = dict(kw, **switch.options())
    return await stack.create_connection(protocol_factory, host, port, **kw)


async def _stack_serve(stack: "Stack", switch: Switch, protocol_factory: Callable[[], Any],
                       host: Any, port: Any, kw: dict[str, Any]) -> Any:
    kw = dict(kw, **switch.options())
    if isinstance(host, str) and host in _WILDCARDS:
        host = None
    return await stack.create_server(protocol_factory, host, port, **kw)


def _stack_of_socket(sock: Any) -> "Stack | None":
    """The stack of a socket of the stack (tcpstack.aio.socket.StackSocket: Stack.socket(),
    get_extra_info("socket")), or None for anything else (a kernel socket)."""
    if sock is None or isinstance(sock, socket.socket):
        return None
    from tcpstack.aio.streams import Stack
    stack = getattr(sock, "_stack", None)
    return stack if isinstance(stack, Stack) else None


# --- sock_connect -> create_connection(sock=...) ------------------------------------------------

class _Parked(asyncio.Protocol):
    """Holds a stack connection sock_connect() made until create_connection(sock=...)
    takes it: reading is paused at once; what arrived before that is kept and replayed."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.data: list[bytes] = []
        self.eof = False
        self.lost = False
        self.exc: Exception | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.pause_reading()

    def data_received(self, data: bytes) -> None:
        self.data.append(bytes(data))

    def eof_received(self) -> bool:
        self.eof = True
        return True                       # keep it open: the real protocol decides

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost, self.exc = True, exc

    def hand_over(self, protocol: asyncio.BaseProtocol) -> None:
        """The real protocol takes the connection as if it had been there all along."""
        transport = self.transport
        assert transport is not None
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        for d in self.data:
            if isinstance(protocol, asyncio.BufferedProtocol):
                from asyncio.protocols import _feed_data_to_buffered_proto  # type: ignore[attr-defined]
                _feed_data_to_buffered_proto(protocol, d)
            else:
                protocol.data_received(d)  # type: ignore[attr-defined]
        self.data = []
        if self.lost:
            protocol.connection_lost(self.exc)
            return
        if self.eof and not protocol.eof_received():  # type: ignore[attr-defined]
            transport.close()
            return
        transport.resume_reading()


class _Pending:
    """A stack connection made by sock_connect() for a kernel socket, not yet taken."""

    def __init__(self, switch: Switch, transport: asyncio.Transport, parked: _Parked,
                 finalizer: "weakref.finalize[Any, Any]") -> None:
        self.switch = switch
        self.transport = transport
        self.parked = parked
        self.finalizer = finalizer


_pending: "weakref.WeakKeyDictionary[socket.socket, _Pending]" = weakref.WeakKeyDictionary()


def _abandoned(transport: asyncio.Transport) -> None:
    """The kernel socket a stack connection waited for is gone (a happy-eyeballs loser):
    reset the connection."""
    if not transport.is_closing():
        try:
            transport.abort()
        except Exception:      # its loop is closed: nothing to reset on
            pass


async def _adopt(loop: asyncio.AbstractEventLoop, pending: _Pending, sock: socket.socket,
                 protocol_factory: Callable[[], Any], kw: dict[str, Any]) -> tuple[Any, Any]:
    pending.finalizer.detach()
    pending.switch.adopted += 1
    transport, parked = pending.transport, pending.parked
    sock.close()                         # never connected: the stack carries the connection
    sslctx = kw.get("ssl")
    server_hostname = kw.get("server_hostname")
    if not sslctx:
        for name in ("server_hostname", "ssl_handshake_timeout", "ssl_shutdown_timeout"):
            if kw.get(name) is not None:
                transport.abort()
                raise ValueError(f"{name} is only meaningful with ssl")
    protocol = protocol_factory()
    if not sslctx:
        parked.hand_over(protocol)
        return transport, protocol
    if server_hostname is None:          # asyncio's rule for sock= with ssl=
        transport.abort()
        raise ValueError("You must set server_hostname when using ssl without a host")
    if parked.data or parked.lost or parked.eof:
        transport.abort()
        raise ConnectionError(f"{transport.get_extra_info('peername')}: the peer sent data or "
                              "closed before the TLS handshake")
    if sslctx is True:
        sslctx = _ssl.create_default_context()
    # As asyncio's create_connection(ssl=...) does on a fresh transport: SSLProtocol between
    # the transport and the application's protocol, whose connection_made() comes once the
    # handshake is done.  Nothing the application writes leaves before that.
    from asyncio import sslproto
    waiter = loop.create_future()
    make: Any = sslproto.SSLProtocol
    sslp = make(loop, protocol, sslctx, waiter, False, server_hostname,
                ssl_handshake_timeout=kw.get("ssl_handshake_timeout"),
                ssl_shutdown_timeout=kw.get("ssl_shutdown_timeout"))
    transport.set_protocol(sslp)
    sslp.connection_made(transport)
    transport.resume_reading()
    try:
        await waiter
    except BaseException:
        transport.close()
        raise
    return sslp._app_transport, protocol


# --- the patches ---------------------------------------------------------------------------------

_originals: dict[tuple[type, str], Any] = {}
_install_lock = threading.Lock()


def _make_create_connection(orig: Any) -> Any:
    @functools.wraps(orig)
    async def create_connection(self: Any, protocol_factory: Callable[[], Any],
                                host: Any = None, port: Any = None, **kw: Any) -> Any:
        sock = kw.get("sock")
        own = _stack_of_socket(sock)
        if own is not None:                  # a socket of a stack: that stack's, always
            return await own.create_connection(protocol_factory, host, port, **kw)
        sw = switch_for(self)
        if sw is None:
            return await orig(self, protocol_factory, host, port, **kw)
        if sock is not None:
            pending = _pending.pop(sock, None) if isinstance(sock, socket.socket) else None
            if pending is None:            # a kernel socket: the kernel's connection
                return await orig(self, protocol_factory, host, port, **kw)
            if host is not None or port is not None:
                pending.transport.abort()
                raise ValueError("host/port and sock can not be specified at the same time")
            kw.pop("sock")
            return await _adopt(self, pending, sock, protocol_factory, kw)
        dest = await sw.destination(self, host, port, kw.get("family", 0))
        if dest is None:
            return await orig(self, protocol_factory, host, port, **kw)
        if kw.get("ssl") and kw.get("server_hostname") is None:
            kw["server_hostname"] = host   # asyncio's default: the name asked for, not the IP
        stack = sw.stack_for(self)
        return await _stack_connect(stack, sw, protocol_factory, dest, port, kw)
    return create_connection


def _make_create_server(orig: Any) -> Any:
    @functools.wraps(orig)
    async def create_server(self: Any, protocol_factory: Callable[[], Any], host: Any = None,
                            port: Any = None, **kw: Any) -> Any:
        stack_sock = _stack_of_socket(kw.get("sock"))
        if stack_sock is not None:
            return await stack_sock.create_server(protocol_factory, host, port, **kw)
        sw = switch_for(self)
        if sw is None or kw.get("sock") is not None:
            return await orig(self, protocol_factory, host, port, **kw)
        if isinstance(host, (list, tuple)):
            mine = [sw.is_own(h) for h in host]
            if not any(mine):
                return await orig(self, protocol_factory, host, port, **kw)
            if not all(mine):
                raise ValueError(f"create_server(host={host!r}): some of these are the userspace "
                                 "stack's and some the kernel's; make one server for each")
            host = None if any(h is None or h in _WILDCARDS for h in host) else (
                host[0] if len(host) == 1 else list(host))
        elif not sw.is_own(host):
            return await orig(self, protocol_factory, host, port, **kw)
        stack = sw.stack_for(self)
        return await _stack_serve(stack, sw, protocol_factory, host, port, kw)
    return create_server


def _make_start_tls(orig: Any) -> Any:
    @functools.wraps(orig)
    async def start_tls(self: Any, transport: Any, protocol: Any, sslcontext: Any,
                        **kw: Any) -> Any:
        from tcpstack.aio.streams import stack_of
        stack = stack_of(transport)         # the stack's transports, and TLS over them
        if stack is None:
            return await orig(self, transport, protocol, sslcontext, **kw)
        return await stack.start_tls(transport, protocol, sslcontext, **kw)
    return start_tls


def _make_sock_connect(orig: Any) -> Any:
    @functools.wraps(orig)
    async def sock_connect(self: Any, sock: socket.socket, address: Any) -> Any:
        own = _stack_of_socket(sock)
        if own is not None:
            return await own.sock_connect(sock, address)  # type: ignore[arg-type]
        sw = switch_for(self)
        if (sw is None or sock.family not in (socket.AF_INET, socket.AF_INET6)
                or sock.type != socket.SOCK_STREAM or not isinstance(address, tuple)
                or len(address) < 2):
            return await orig(self, sock, address)
        host, port = address[0], address[1]
        fam = socket.AF_INET if sock.family == socket.AF_INET else socket.AF_INET6
        dest = await sw.destination(self, host, port, fam)
        if dest is None:
            return await orig(self, sock, address)
        stack = sw.stack_for(self)
        parked = _Parked()
        transport, _ = await _stack_connect(stack, sw, lambda: parked, dest, port, {})
        fin = weakref.finalize(sock, _abandoned, transport)
        _pending[sock] = _Pending(sw, transport, parked, fin)
        return None
    return sock_connect


def _make_close(orig: Any) -> Any:
    @functools.wraps(orig)
    def close(self: Any) -> Any:
        for sw in {id(s): s for s in (_bound.get(self), _process_switch) if s is not None}.values():
            sw.release(self)
        return orig(self)
    return close


_PATCHES: dict[str, Callable[[Any], Any]] = {
    "create_connection": _make_create_connection, "create_server": _make_create_server,
    "start_tls": _make_start_tls, "sock_connect": _make_sock_connect, "close": _make_close,
}


def _targets() -> list[tuple[type, Sequence[str]]]:
    """The classes to patch, each with the methods it defines (a subclass's override would
    hide a patch made on its base)."""
    out: list[tuple[type, Sequence[str]]] = [
        (base_events.BaseEventLoop, ("create_connection", "create_server", "start_tls")),
        (selector_events.BaseSelectorEventLoop, ("sock_connect",)),
        (unix_events.SelectorEventLoop, ("close",)),
    ]
    try:
        import uvloop
    except ImportError:
        pass
    else:
        # uvloop.Loop is a Python subclass of the compiled loop: its attributes can be set
        out.append((uvloop.Loop, ("create_connection", "create_server", "start_tls",
                                  "sock_connect", "close")))
    return out


def install() -> None:
    """Patch the loop classes (idempotent).  Loops without a switch are unaffected."""
    with _install_lock:
        for cls, names in _targets():
            for name in names:
                if (cls, name) in _originals:
                    continue
                orig = getattr(cls, name)
                _originals[(cls, name)] = cls.__dict__.get(name, _MISSING)
                setattr(cls, name, _PATCHES[name](orig))


_MISSING = object()


def uninstall() -> None:
    """Undo install() (tests)."""
    with _install_lock:
        for (cls, name), orig in _originals.items():
            if orig is _MISSING:
                delattr(cls, name)
            else:
                setattr(cls, name, orig)
        _originals.clear()


def installed() -> bool:
    return bool(_originals)
