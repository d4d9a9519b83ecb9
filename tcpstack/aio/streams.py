"""The asyncio edge: drive a StackCore from a link and the event loop, and give applications
asyncio's own StreamReader/StreamWriter (open_connection / start_server, drop-in).

Nothing here knows TCP rules; it moves packets between a link and the sans-IO core, keeps
one loop timer armed at the core's earliest deadline, and adapts Endpoint events to an
asyncio.Transport so asyncio.StreamReaderProtocol works unchanged (drain() backpressure via
pause_writing/resume_writing, reading flow control via pause_reading/resume_reading).
"""
from __future__ import annotations

import asyncio
import errno
import ipaddress
import itertools
import logging
import socket
import ssl as _ssl
from typing import Any, Callable, Iterable, Literal, NoReturn, Protocol, Sequence

from tcpstack.aio.reader import ChunkedStreamReader
from tcpstack.aio.socket import StackSocket, tcpstack_error_to_oserror
from tcpstack.aio.tls import check_tls_args, ssl_protocol, start_tls
from tcpstack.errors import TcpStackError
from tcpstack.host.endpoint import Closed, Data, Endpoint, Eof, Established, SecurityProvider
from tcpstack.host.stack import Listener, StackConfig, StackCore
from tcpstack.wire.buffers import Buffer, LinkPacket

__all__ = ["Stack", "Server", "Link", "StackStreamWriter", "StackStreamProtocol", "stack_of"]

log = logging.getLogger(__name__)

_DEFAULT_LIMIT = 2 ** 16
_AI_PASSIVE = socket.AI_PASSIVE     # (Stack.socket() hides the module in the class body)
_AF_UNSPEC = socket.AF_UNSPEC


class Link(Protocol):
    """Where IP packets come from and go to (a TUN device, an in-memory pipe)."""

    def start(self, on_packets: Callable[..., None]) -> None: ...
    # on_packets(packets) or on_packets(packets, checksum_ok) -- see Stack._on_packets
    def send(self, packet: LinkPacket) -> None: ...
    def close(self) -> None: ...


def _check_socket_args(api: str, *, family: int, proto: int, host: Any) -> None:
    """asyncio's socket-level arguments: family and proto must be ones TCP over IPv4/IPv6
    can satisfy."""
    if family not in (0, socket.AF_INET, socket.AF_INET6):
        raise ValueError(f"{api}(family={family!r}): the stack speaks IPv4 and IPv6 only")
    if proto not in (0, socket.IPPROTO_TCP):
        raise ValueError(f"{api}(proto={proto!r}): the stack's streams are TCP")
    if family and isinstance(host, str):
        try:
            version = ipaddress.ip_address(host).version
        except ValueError:
            return
        if (version == 4) != (family == socket.AF_INET):
            raise ValueError(f"{api}(): host {host} is not of family {socket.AddressFamily(family).name}")


def _stack_socket(api: str, sock: Any) -> StackSocket:
    """sock=: the stack's own socket (Stack.socket()); a kernel socket cannot be carried."""
    if isinstance(sock, socket.socket):
        raise ValueError(f"{api}(sock=...): a kernel socket cannot be moved onto the "
                         "userspace stack; pass host and port, or a socket made by "
                         "Stack.socket()")
    if not isinstance(sock, StackSocket):
        raise ValueError(f"{api}(sock={sock!r}): not a socket of this stack "
                         "(make one with Stack.socket())")
    return sock


def _interleave(infos: list[tuple[int, str]], first_family_count: int) -> list[tuple[int, str]]:
    """asyncio's _interleave_addrinfos: alternate address families, the first family's
    first `first_family_count` addresses first (RFC 8305 4)."""
    by_family: dict[int, list[tuple[int, str]]] = {}
    for info in infos:
        by_family.setdefault(info[0], []).append(info)
    lists = list(by_family.values())
    out: list[tuple[int, str]] = []
    if first_family_count > 1:
        out.extend(lists[0][:first_family_count - 1])
        del lists[0][:first_family_count - 1]
    for group in itertools.zip_longest(*lists):
        out.extend(a for a in group if a is not None)
    return out


def _raise_connect_errors(exceptions: list[BaseException], all_errors: bool) -> NoReturn:
    """asyncio's create_connection: one error as it is; several with the same text, the
    first; otherwise one OSError naming them all (or an ExceptionGroup: all_errors)."""
    if all_errors:
        raise ExceptionGroup("create_connection failed", [
            e if isinstance(e, Exception) else RuntimeError(repr(e)) for e in exceptions])
    if len(exceptions) == 1:
        raise exceptions[0]
    model = str(exceptions[0])
    if all(str(exc) == model for exc in exceptions):
        raise exceptions[0]
    raise OSError("Multiple exceptions: {}".format(", ".join(str(exc) for exc in exceptions)))


class Stack:
    """A userspace TCP/IP host on an asyncio loop.

    >>> stack = Stack(link, ["10.0.0.2"])
    >>> reader, writer = await stack.open_connection("10.0.0.1", 80)
    """

    def __init__(self, link: Link, addresses: Iterable[str], config: StackConfig | None = None,
                 *, security: SecurityProvider | None | Literal["default"] = "default",
                 loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.loop = loop or asyncio.get_running_loop()
        if security == "default":
            from tcpcrypt.keylog import keylog_from_env
            from tcpcrypt.provider import TcpcryptProvider   # the default: encrypt when possible
            # TCPCRYPT_KEYLOGFILE: the key log (docs/teaching.md), read here at the edge
            security = TcpcryptProvider(keylog=keylog_from_env())
        self.core = StackCore(addresses, config, security=security,
                              now=self.loop.time())
        self.core.cork_writes = True     # writes in one loop turn leave together (_flush)
        tso = getattr(link, "tso_max_size", 0)
        if tso:
            self.core.link_tso(tso)      # the link segments TCP super-packets
        self.link = link
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._flush_scheduled = False
        self._closed = False
        link.start(self._on_packets)

    @property
    def addresses(self) -> list[str]:
        return [str(a) for a in self.core.addresses]

    # --- applications: asyncio's API ---------------------------------------------------

    async def create_connection(
            self, protocol_factory: Callable[[], asyncio.BaseProtocol],
            host: str | None = None, port: int | None = None, *, ssl: Any = None,
            family: int = 0, proto: int = 0, flags: int = 0, sock: Any = None,
            local_addr: tuple[str, int] | None = None, server_hostname: str | None = None,
            ssl_handshake_timeout: float | None = None,
            ssl_shutdown_timeout: float | None = None,
            happy_eyeballs_delay: float | None = None, interleave: int | None = None,
            all_errors: bool = False, **stack_options: Any
            ) -> tuple[asyncio.Transport, asyncio.BaseProtocol]:
        """loop.create_connection() over this stack: (transport, protocol), with asyncio's
        semantics (asyncio docs, "Opening network connections").

        `protocol_factory` makes an asyncio.Protocol or asyncio.BufferedProtocol (its
        get_buffer()/buffer_updated() are used, within the size of the buffer it returns).
        `host` is an IP address or a name resolved with the loop's getaddrinfo(); the
        addresses are tried in order, or with `happy_eyeballs_delay` (RFC 8305) started
        that many seconds apart, `interleave` reordering them by family as asyncio does.
        `local_addr` binds to one of the stack's addresses (OSError EADDRNOTAVAIL
        otherwise).  `sock` is a socket of this stack (Stack.socket(), connect()ed),
        never a kernel socket (ValueError).

        `ssl` (an SSLContext, or True for the default context) runs TLS over the
        connection with asyncio's SSLProtocol; inside tcpcrypt when both are on.  A
        failed handshake raises; nothing is sent in plaintext.

        Other keywords (`stack_options`) are TCP options (TCPConfig fields, e.g.
        nodelay=True) or the security provider's (encrypt=False, require_encryption=True,
        resume=False, ...); an unknown name raises TypeError as a misspelled asyncio
        keyword does."""
        return await self._create_connection(
            protocol_factory, host, port, ssl=ssl, family=family, proto=proto, flags=flags,
            sock=sock, local_addr=local_addr, server_hostname=server_hostname,
            ssl_handshake_timeout=ssl_handshake_timeout,
            ssl_shutdown_timeout=ssl_shutdown_timeout,
            happy_eyeballs_delay=happy_eyeballs_delay, interleave=interleave,
            all_errors=all_errors, options=stack_options, views_ok=False)

    async def _create_connection(
            self, protocol_factory: Callable[[], asyncio.BaseProtocol], host: str | None,
            port: int | None, *, ssl: Any, family: int, proto: int, flags: int, sock: Any,
            local_addr: tuple[str, int] | None, server_hostname: str | None,
            ssl_handshake_timeout: float | None, ssl_shutdown_timeout: float | None,
            happy_eyeballs_delay: float | None, interleave: int | None, all_errors: bool,
            options: dict[str, Any], views_ok: bool, api: str = "create_connection"
            ) -> tuple[asyncio.Transport, asyncio.BaseProtocol]:
        # asyncio's checks, in asyncio's order (base_events.create_connection)
        check_tls_args(api, ssl, server_hostname=server_hostname,
                       ssl_handshake_timeout=ssl_handshake_timeout,
                       ssl_shutdown_timeout=ssl_shutdown_timeout)
        if server_hostname is None and ssl:
            if not host:
                raise ValueError("You must set server_hostname when using ssl without a host")
            server_hostname = host
        _check_socket_args(api, family=family, proto=proto, host=host)
        if sock is not None:
            _stack_socket(api, sock)
        self.core.check_options(options, api)
        if happy_eyeballs_delay is not None and interleave is None:
            interleave = 1          # asyncio: happy eyeballs interleaves by default
        if host is not None or port is not None:
            if sock is not None:
                raise ValueError("host/port and sock can not be specified at the same time")
            if host is None:
                raise ValueError(f"{api}(): host is needed (the stack has no loopback)")
            if port is None:
                raise ValueError(f"{api}(): port is needed")
            infos = await self._resolve(host, port, family, proto, flags)
            locals_ = await self._resolve_local(local_addr, family, api) if local_addr else None
            if interleave:
                infos = _interleave(infos, interleave)
            ep = await self._connect_addresses(infos, int(port), locals_, options,
                                               happy_eyeballs_delay, all_errors)
        else:
            if sock is None:
                raise ValueError("host and port was not specified and no sock specified")
            ssock = _stack_socket(api, sock)
            if ssock._ep is None:
                raise ValueError(f"{api}(sock=...): the socket is not connected (connect() "
                                 "it, or await Stack.sock_connect())")
            if ssock.has_transport:
                raise ValueError(f"{api}(sock=...): the socket already has a transport")
            ep = ssock._ep
            ssock.has_transport = True      # this call owns the connection from now on
            try:
                await self._established(ep)
            except BaseException:
                self._abort(ep)
                raise
        transport, protocol = await self._make_transport(
            ep, protocol_factory, views_ok, ssl, server_hostname, ssl_handshake_timeout,
            ssl_shutdown_timeout)
        if sock is not None:
            raw: Any = transport if not ssl else transport.get_extra_info("_stack_transport")
            raw._sock = sock                # get_extra_info("socket") is the caller's
        return transport, protocol

    async def _resolve(self, host: str, port: int | None, family: int, proto: int,
                       flags: int) -> list[tuple[int, str]]:
        """(family, address) of `host`: an IP address as it is, a name through the loop's
        getaddrinfo() (asyncio's own resolution)."""
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            pass
        else:
            return [(socket.AF_INET if ip.version == 4 else socket.AF_INET6, str(ip))]
        infos = await self.loop.getaddrinfo(host, port, family=family, type=socket.SOCK_STREAM,
                                            proto=proto, flags=flags)
        if not infos:
            raise OSError("getaddrinfo() returned empty list")
        out: list[tuple[int, str]] = []
        for fam, _type, _proto, _cname, sa in infos:
            if fam in (socket.AF_INET, socket.AF_INET6) and (fam, sa[0]) not in out:
                out.append((fam, str(sa[0])))
        if not out:
            raise OSError(errno.EAFNOSUPPORT, f"{host!r} has no IPv4 or IPv6 address")
        return out

    async def _resolve_local(self, local_addr: tuple[str, int], family: int,
                             api: str) -> list[tuple[int, tuple[Any, ...]]]:
        """local_addr=(address, port): the stack's addresses it names (EADDRNOTAVAIL for
        an address the stack does not have, as bind(2))."""
        host, lport = local_addr[0], int(local_addr[1])
        if not host:
            addrs = [a for a in self.core.addresses
                     if not family or (a.version == 4) == (family == socket.AF_INET)]
            return [(socket.AF_INET if a.version == 4 else socket.AF_INET6, (str(a), lport))
                    for a in addrs]
        out: list[tuple[int, tuple[Any, ...]]] = []
        for fam, addr in await self._resolve(host, lport, family, 0, 0):
            ip = ipaddress.ip_address(addr)
            if ip not in self.core.addresses:
                raise OSError(errno.EADDRNOTAVAIL,
                              f"{api}(local_addr={local_addr!r}): cannot assign requested "
                              f"address: {addr} is not an address of the stack "
                              f"({', '.join(self.addresses)})")
            out.append((fam, (addr, lport)))
        return out

    async def _connect_addresses(self, infos: list[tuple[int, str]], port: int,
                                 locals_: list[tuple[int, tuple[Any, ...]]] | None,
                                 port_opts: dict[str, Any], delay: float | None,
                                 all_errors: bool) -> Endpoint:
        """One established endpoint to the first address that answers: one after another,
        or (delay set) RFC 8305 5's staggered attempts: the next starts `delay` seconds
        after the previous one, or at once when it fails; the first established wins and
        the others are aborted."""
        attempts: list[tuple[str, tuple[Any, ...] | None]] = []
        errors: list[BaseException] = []
        for fam, addr in infos:
            if locals_ is None:
                attempts.append((addr, None))
                continue
            same = [la for lfam, la in locals_ if lfam == fam]
            if not same:
                errors.append(OSError(errno.EADDRNOTAVAIL,
                                      f"no matching local address with family={fam} found"))
            attempts.extend((addr, la) for la in same)
        if not attempts:
            _raise_connect_errors(errors, all_errors)

        async def attempt(addr: str, local: tuple[Any, ...] | None) -> Endpoint:
            ep = self._start_endpoint(addr, port, local, dict(port_opts))
            try:
                await self._established(ep)
            except BaseException:
                self._abort(ep)
                raise
            return ep

        if delay is None:
            for addr, local in attempts:
                try:
                    return await attempt(addr, local)
                except OSError as exc:
                    errors.append(exc)
            _raise_connect_errors(errors, all_errors)
        # RFC 8305 5: staggered attempts
        loop = self.loop
        pending: dict[asyncio.Task[Endpoint], int] = {}
        results: dict[int, Endpoint] = {}
        failed: dict[int, BaseException] = {}
        nxt = 0
        start_next = True
        try:
            while True:
                if nxt < len(attempts) and (not pending or start_next):
                    addr, local = attempts[nxt]
                    pending[loop.create_task(attempt(addr, local))] = nxt
                    nxt += 1
                if not pending:
                    break
                done, _ = await asyncio.wait(
                    pending, timeout=delay if nxt < len(attempts) else None,
                    return_when=asyncio.FIRST_COMPLETED)
                start_next = not done      # the delay passed: start the next one
                for task in done:
                    i = pending.pop(task)
                    error = task.exception()
                    if error is None:
                        results[i] = task.result()
                    else:
                        failed[i] = error
                        start_next = True  # a failure starts the next attempt at once
                if results:
                    break
        finally:
            for task in pending:
                task.cancel()
            if pending:
                for late in await asyncio.gather(*pending, return_exceptions=True):
                    if isinstance(late, Endpoint):
                        self._abort(late)   # connected as it was cancelled: not kept
        if results:
            best = min(results)
            for i, ep in results.items():
                if i != best:
                    self._abort(ep)
            return results[best]
        errors.extend(failed[i] for i in sorted(failed))
        _raise_connect_errors(errors, all_errors)

    def _start_endpoint(self, host: str, port: int, local: tuple[Any, ...] | None,
                        options: dict[str, Any]) -> Endpoint:
        """Active OPEN towards (host, port) from `local` (None: the stack's address of the
        family; port 0: an ephemeral one); the SYN leaves at the next flush."""
        laddr = local[0] if local else None
        if laddr is not None and ipaddress.ip_address(laddr).is_unspecified:
            laddr = None
        try:
            ep = self.core.connect(host, port, self.loop.time(), local_addr=laddr,
                                   local_port=int(local[1]) if local else 0, options=options)
        except TcpStackError as exc:
            raise tcpstack_error_to_oserror(exc, f"connect to {host}:{port}") from exc
        self.kick()
        return ep

    async def _established(self, ep: Endpoint) -> None:
        """Until `ep` is established (raises what ended it before that).  Its events stay
        queued for the transport made next."""
        if ep.handler is None or not isinstance(ep.handler, _Establishing):
            ep.handler = _Establishing(self.loop, ep)
            ep.handler.endpoint_ready()
        await ep.handler.done

    def _abort(self, ep: Endpoint) -> None:
        if not ep.closed:
            ep.abort(self.loop.time())
            self.kick()

    async def _make_transport(self, ep: Endpoint,
                              protocol_factory: Callable[[], asyncio.BaseProtocol],
                              views_ok: bool, ssl: Any, server_hostname: str | None,
                              ssl_handshake_timeout: float | None,
                              ssl_shutdown_timeout: float | None
                              ) -> tuple[asyncio.Transport, asyncio.BaseProtocol]:
        """The transport on an established endpoint (asyncio's
        _create_connection_transport): the protocol's connection_made() has run when this
        returns; with ssl, once the TLS handshake is done."""
        try:
            protocol = protocol_factory()
        except BaseException:
            self._abort(ep)
            raise
        if not ssl:
            return _StreamTransport(self, ep, protocol, views_ok=views_ok), protocol
        waiter = self.loop.create_future()
        sslp = ssl_protocol(self.loop, protocol, ssl, waiter, server_side=False,
                            server_hostname=server_hostname,
                            ssl_handshake_timeout=ssl_handshake_timeout,
                            ssl_shutdown_timeout=ssl_shutdown_timeout)
        transport = _StreamTransport(self, ep, sslp)
        try:
            await waiter
        except BaseException:
            transport.close()
            raise
        app_transport: asyncio.Transport = sslp._app_transport
        return app_transport, protocol

    async def create_server(
            self, protocol_factory: Callable[[], asyncio.BaseProtocol],
            host: str | Sequence[str] | None = None, port: int | None = None, *,
            family: int = _AF_UNSPEC, flags: int = _AI_PASSIVE, sock: Any = None,
            backlog: int = 100, ssl: Any = None, reuse_address: bool | None = None,
            reuse_port: bool | None = None, keep_alive: bool | None = None,
            ssl_handshake_timeout: float | None = None,
            ssl_shutdown_timeout: float | None = None, start_serving: bool = True,
            **stack_options: Any) -> "Server":
        """loop.create_server() over this stack (asyncio docs, "Creating network servers"):
        a Server listening on `host` -- None or "" every address of the stack, "0.0.0.0"
        / "::" every IPv4 / IPv6 one, an address, a name (getaddrinfo), or a sequence of
        them -- and `port` (0 or None: an ephemeral port, the same on every address).
        Each accepted connection gets protocol_factory()'s protocol (asyncio.Protocol or
        BufferedProtocol); with `ssl` (an SSLContext) behind a TLS server handshake.
        `sock` is a socket of this stack (Stack.socket(), bound), never a kernel one.
        `keep_alive=True` turns on TCP keepalive (RFC 9293 3.8.4); `reuse_address` is
        moot (the stack's listeners never meet TIME-WAIT conflicts); `reuse_port=True`
        raises (no SO_REUSEPORT load sharing)."""
        return await self._create_server(
            protocol_factory, host, port, family=family, flags=flags, sock=sock,
            backlog=backlog, ssl=ssl, reuse_port=reuse_port, keep_alive=keep_alive,
            ssl_handshake_timeout=ssl_handshake_timeout,
            ssl_shutdown_timeout=ssl_shutdown_timeout, start_serving=start_serving,
            options=stack_options, views_ok=False)

    async def _create_server(
            self, protocol_factory: Callable[[], asyncio.BaseProtocol],
            host: str | Sequence[str] | None, port: int | None, *, family: int, flags: int,
            sock: Any, backlog: int, ssl: Any, reuse_port: bool | None,
            keep_alive: bool | None, ssl_handshake_timeout: float | None,
            ssl_shutdown_timeout: float | None, start_serving: bool, options: dict[str, Any],
            views_ok: bool, api: str = "create_server") -> "Server":
        check_tls_args(api, ssl, ssl_handshake_timeout=ssl_handshake_timeout,
                       ssl_shutdown_timeout=ssl_shutdown_timeout, server=True)
        _check_socket_args(api, family=family, proto=0,
                           host=host if isinstance(host, str) else None)
        if sock is not None:
            _stack_socket(api, sock)
        if reuse_port:
            raise ValueError(f"{api}(reuse_port=True): the userspace stack has one "
                             "listener per address and port; SO_REUSEPORT load sharing is "
                             "not available")
        # reuse_address: SO_REUSEADDR only concerns binding over TIME-WAIT kernel sockets;
        # this stack's listeners never conflict with TIME-WAIT connections, so it is moot.
        opts = dict(options)
        if keep_alive:
            opts["keepalive"] = True
        self.core.check_options(opts, api)
        if host is not None or port is not None:
            if sock is not None:
                raise ValueError("host/port and sock can not be specified at the same time")
            hosts: list[str | None]
            if host is None or isinstance(host, str):
                hosts = [host]
            else:
                hosts = list(host)
            addrs: list[str | None] = []
            for h in hosts:
                for a in await self._listen_addresses(h, port, family, flags, api):
                    if a not in addrs:
                        addrs.append(a)
            lport = int(port or 0)
        else:
            if sock is None:
                raise ValueError("Neither host/port nor sock were specified")
            ssock = _stack_socket(api, sock)
            if ssock._ep is not None or ssock._listener is not None:
                raise ValueError(f"{api}(sock=...): the socket is connected or listening "
                                 "already")
            name = ssock.getsockname()
            opts = {**ssock._options, **opts}
            addrs = await self._listen_addresses(name[0], name[1], ssock.family, 0, api)
            lport = int(name[1])
            if ssock._backlog is not None:
                backlog = ssock._backlog
        listeners: list[Listener] = []
        try:
            for a in addrs:
                try:
                    lst = self.core.listen(lport, a, backlog=backlog, options=dict(opts))
                except TcpStackError as exc:
                    raise tcpstack_error_to_oserror(
                        exc, f"error while attempting to bind on address {(a or '*', lport)!r}"
                    ) from exc
                lport = lst.port       # port 0: the first listener's choice, for all
                listeners.append(lst)
        except BaseException:
            for lst in listeners:
                lst.close()
            raise
        server = Server(self, listeners, protocol_factory, ssl=ssl,
                        ssl_handshake_timeout=ssl_handshake_timeout,
                        ssl_shutdown_timeout=ssl_shutdown_timeout, views_ok=views_ok)
        if start_serving:
            server.begin_serving()
        return server

    async def _listen_addresses(self, host: str | None, port: int | None, family: int,
                                flags: int, api: str) -> list[str | None]:
        """The addresses a listen on `host` covers: [None] (every address, one listener)
        for None or "" without a family; the stack's addresses of a family for the
        wildcard of that family; otherwise the named ones, each the stack's own."""
        v4: list[str | None] = [str(a) for a in self.core.addresses if a.version == 4]
        v6: list[str | None] = [str(a) for a in self.core.addresses if a.version == 6]
        if host is None or host == "":
            if not family:
                return [None]
            picked = v4 if family == socket.AF_INET else v6
        elif host == "0.0.0.0":
            picked = v4
        elif host == "::":
            picked = v6
        else:
            picked = []
            for _fam, addr in await self._resolve(host, port, family, 0, flags):
                if ipaddress.ip_address(addr) not in self.core.addresses:
                    raise OSError(errno.EADDRNOTAVAIL,
                                  f"error while attempting to bind on address "
                                  f"{(addr, port or 0)!r}: cannot assign requested address "
                                  f"(the stack's addresses are {', '.join(self.addresses)})")
                picked.append(addr)
            return picked
        if not picked:
            raise OSError(errno.EADDRNOTAVAIL,
                          f"{api}(host={host!r}): the stack has no address of that family "
                          f"({', '.join(self.addresses)})")
        return list(picked)

    async def start_tls(self, transport: asyncio.BaseTransport, protocol: asyncio.BaseProtocol,
                        sslcontext: _ssl.SSLContext, *, server_side: bool = False,
                        server_hostname: str | None = None,
                        ssl_handshake_timeout: float | None = None,
                        ssl_shutdown_timeout: float | None = None) -> asyncio.Transport:
        """loop.start_tls() for the stack's transports, on any loop (uvloop's own refuses
        transports it did not make): asyncio's SSLProtocol put between `transport` and
        `protocol`; returns the TLS transport once the handshake is done (see
        tcpstack/aio/tls.py)."""
        return await start_tls(self.loop, transport, protocol, sslcontext,
                               server_side=server_side, server_hostname=server_hostname,
                               ssl_handshake_timeout=ssl_handshake_timeout,
                               ssl_shutdown_timeout=ssl_shutdown_timeout)

    def socket(self, family: int = socket.AF_INET) -> StackSocket:
        """A fresh socket of this stack, for create_connection(sock=...) (bind(), then
        connect() or `await sock_connect()`) or create_server(sock=...) (bind())."""
        return StackSocket(self, family)

    async def sock_connect(self, sock: StackSocket, address: tuple[Any, ...]) -> None:
        """loop.sock_connect() for a socket of this stack: until it is connected to
        (IP address, port), raising what ended the attempt."""
        ssock = _stack_socket("sock_connect", sock)
        ssock.connect_ex(address)
        assert ssock._ep is not None
        try:
            await self._established(ssock._ep)
        except BaseException:
            self._abort(ssock._ep)
            raise

    # --- asyncio's streams, as thin wrappers over the above ----------------------------

    async def open_connection(self, host: str | None = None, port: int | None = None, *,
                              limit: int = _DEFAULT_LIMIT,
                              ssl: Any = None, family: int = 0, proto: int = 0, flags: int = 0,
                              sock: Any = None, local_addr: tuple[str, int] | None = None,
                              server_hostname: str | None = None,
                              ssl_handshake_timeout: float | None = None,
                              ssl_shutdown_timeout: float | None = None,
                              happy_eyeballs_delay: float | None = None,
                              interleave: int | None = None, all_errors: bool = False,
                              encrypt: bool = True, require_encryption: bool = False,
                              app_aware: int = 0, **options: Any
                              ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """asyncio.open_connection() over this stack (create_connection() with a
        StreamReaderProtocol).  With a security provider (the default), TCP-ENO is
        offered and tcpcrypt used when the peer agrees; `require_encryption` fails the
        connect with EncryptionRequiredError instead of falling back.  asyncio's keyword
        arguments have asyncio's meaning (ssl= runs TLS, see create_connection); other
        keywords are TCP options (TCPConfig fields, e.g. nodelay=True) or the security
        provider's (resume=False, ...); an unknown name raises TypeError, as asyncio
        does.  The writer is a StackStreamWriter (an asyncio.StreamWriter whose
        start_tls() works on any loop)."""
        loop = self.loop
        opts = dict(options, encrypt=encrypt, require_encryption=require_encryption,
                    app_aware=app_aware)
        reader = ChunkedStreamReader(limit=limit, loop=loop)
        made: list[StackStreamWriter] = []     # (the protocol may lose the connection
        protocol = StackStreamProtocol(         # before this call returns)
            reader, self, on_connect=lambda r, w: made.append(w))
        await self._create_connection(
            lambda: protocol, host, port, ssl=ssl, family=family, proto=proto, flags=flags,
            sock=sock, local_addr=local_addr, server_hostname=server_hostname,
            ssl_handshake_timeout=ssl_handshake_timeout,
            ssl_shutdown_timeout=ssl_shutdown_timeout,
            happy_eyeballs_delay=happy_eyeballs_delay, interleave=interleave,
            all_errors=all_errors, options=opts, views_ok=True, api="open_connection")
        return reader, made[0]              # made in connection_made()

    async def start_server(self, client_connected_cb: Callable[..., Any],
                           host: str | Sequence[str] | None = None, port: int | None = None,
                           *, limit: int = _DEFAULT_LIMIT, family: int = 0,
                           flags: int = _AI_PASSIVE, sock: Any = None,
                           backlog: int = 100, ssl: Any = None,
                           reuse_address: bool | None = None, reuse_port: bool | None = None,
                           keep_alive: bool | None = None,
                           ssl_handshake_timeout: float | None = None,
                           ssl_shutdown_timeout: float | None = None,
                           start_serving: bool = True, encrypt: bool = True,
                           require_encryption: bool = False, app_aware: int = 0,
                           **options: Any) -> "Server":
        """asyncio.start_server() over this stack (create_server() with a
        StreamReaderProtocol per connection; the same rules for keywords as
        open_connection; `keep_alive=True` turns on TCP keepalive, RFC 9293 3.8.4)."""
        loop = self.loop
        opts = dict(options, encrypt=encrypt, require_encryption=require_encryption,
                    app_aware=app_aware)
        server: Server | None = None

        def factory() -> StackStreamProtocol:
            assert server is not None
            return StackStreamProtocol(ChunkedStreamReader(limit=limit, loop=loop), self,
                                       on_connect=server._client_connected, server_side=True)

        server = await self._create_server(
            factory, host, port, family=family, flags=flags, sock=sock, backlog=backlog,
            ssl=ssl, reuse_port=reuse_port, keep_alive=keep_alive,
            ssl_handshake_timeout=ssl_handshake_timeout,
            ssl_shutdown_timeout=ssl_shutdown_timeout, start_serving=False, options=opts,
            views_ok=True, api="start_server")
        server._cb = client_connected_cb
        if start_serving:
            server.begin_serving()
        return server

    def connections(self) -> list[Endpoint]:
        return self.core.endpoints()

    def stats(self) -> dict[str, Any]:
        return dict(vars(self.core.stats))

    async def linger(self, timeout: float = 10.0) -> bool:
        """Wait until every connection has had all it was given to send, and its FIN if it
        closed, acknowledged by the peer (or is gone), at most `timeout` seconds; True if
        so.  A process about to exit calls this before close(): a kernel keeps sending
        after close(2), but this stack dies with its process (cf. SO_LINGER)."""
        deadline = self.loop.time() + timeout
        while True:
            if not self.core.unacknowledged():
                return True
            if self.loop.time() >= deadline:
                return False
            await asyncio.sleep(0.01)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.core.close(self.loop.time())
        self._flush()
        if self._timer is not None:
            self._timer.cancel()
        self.link.close()

    # --- driving the core ----------------------------------------------------------------

    def _on_packets(self, packets: list[bytes], checksum_ok: list[bool] | None = None) -> None:
        """A batch from the link.  `checksum_ok[i]` True: the link vouches for packet i's
        checksums (TUN offload: made or verified by the kernel), so they are not recomputed."""
        self.core.receive_packets(packets, self.loop.time(), checksum_ok)
        self._flush()

    def kick(self) -> None:
        """Something changed from the application side: flush soon (coalesces writes)."""
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        core = self.core
        # Application events may trigger more output (e.g. a callback writing), so loop.
        for _ in range(64):
            core.uncork(self.loop.time())
            ready = core.pop_ready()
            listeners = core.pop_ready_listeners()
            for ep in ready:
                tr = ep.handler
                if tr is not None:
                    tr.endpoint_ready()
            for lst in listeners:
                if lst.handler is not None:
                    lst.handler.accept_ready()
            packets = core.packets_to_send()
            if packets:
                send = self.link.send
                for p in packets:
                    send(p)
            if not ready and not listeners and not packets:
                break
        self._arm_timer()

    def _arm_timer(self) -> None:
        deadline = self.core.next_timer()
        if deadline == self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = deadline
        if deadline is not None and not self._closed:
            self._timer = self.loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        self.core.handle_timer(self.loop.time())
        self._flush()


def stack_of(transport: Any) -> "Stack | None":
    """The Stack whose connection `transport` is (one of its transports, or a TLS
    transport over one), else None: what a loop-level switch needs to route
    loop.start_tls(transport, ...) to Stack.start_tls()."""
    if isinstance(transport, _StreamTransport):
        return transport._stack
    get = getattr(transport, "get_extra_info", None)
    raw = get("_stack_transport") if get is not None else None
    return raw._stack if isinstance(raw, _StreamTransport) else None


class _Establishing:
    """The endpoint's handler while nobody has a transport on it yet (create_connection
    waiting for the handshake): notes Established or Closed, leaving every event queued
    for the transport that takes the endpoint over."""

    def __init__(self, loop: asyncio.AbstractEventLoop, ep: Endpoint) -> None:
        self.ep = ep
        self.done: asyncio.Future[None] = loop.create_future()

    def endpoint_ready(self) -> None:
        ep = self.ep
        ep.notify = False
        if self.done.done():
            return
        for ev in ep.events:
            if isinstance(ev, Established):
                self.done.set_result(None)
                return
            if isinstance(ev, Closed):
                self.done.set_exception(ev.error or ConnectionError(
                    f"connection to {ep.remote} closed during the handshake"))
                return


class _StreamTransport(asyncio.Transport):
    """asyncio.Transport over an Endpoint, for any asyncio.Protocol or BufferedProtocol
    (asyncio's selector transports are the model: the same callbacks in the same order,
    a protocol's exception is a fatal error of the connection)."""

    # loop.start_tls() of the default loop takes transports that say so (base_events)
    _start_tls_compatible = True

    def __init__(self, stack: Stack, ep: Endpoint, protocol: asyncio.BaseProtocol, *,
                 views_ok: bool = False) -> None:
        super().__init__()
        # views_ok: the protocol feeds a ChunkedStreamReader, which takes read-only views of
        # received packets and makes the one copy when read() returns.  Any other protocol
        # gets bytes, as asyncio always gives data_received().
        self._views_ok = views_ok
        self._stack = stack
        self._ep = ep
        self._protocol = protocol
        self._buffered = isinstance(protocol, asyncio.BufferedProtocol)
        self._connected: asyncio.Future[None] = stack.loop.create_future()
        self._closing = False
        self._lost = False
        self._paused_writing = False
        self._reading = True
        self._high = 64 * 1024
        self._low = 16 * 1024
        self._sock: StackSocket | None = None
        self._aborted = False
        ep.handler = self
        self.endpoint_ready()

    def __repr__(self) -> str:
        ep = self._ep
        state = "closed" if ep.closed else "closing" if self._closing else "open"
        return f"<_StreamTransport {state} {ep.local} -> {ep.remote}>"

    async def wait_connected(self) -> None:
        """Until the stream is established (raises what ended it before that)."""
        await self._connected

    def accepted(self) -> None:
        """An accepted endpoint, established already: tell the protocol (connection_made)."""
        if not self._connected.done():
            self._connected.set_result(None)
            self._connection_made()

    def _connection_made(self) -> None:
        try:
            self._protocol.connection_made(self)
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._fatal_error(exc, "Fatal error: protocol.connection_made() call failed.")

    # events from the endpoint
    def endpoint_ready(self) -> None:
        """The endpoint has events, or buffer space (Stack._flush, from the core's ready list)."""
        ep = self._ep
        ep.notify = False
        while True:
            evs = ep.take_events()
            if not evs:
                break
            try:
                self._deliver(evs)
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:
                # as asyncio's transports: the protocol failed; the connection is aborted
                # and the protocol told (connection_lost(exc)), the loop's handler too
                self._fatal_error(exc, "Fatal error: protocol callback failed.")
        self._check_write_buffer()
        if ep.closed:
            # The endpoint is finished: drop its reference back to this transport (the
            # application may still hold the transport, and the transport the endpoint), so
            # refcounting frees both at once, not the cyclic garbage collector.
            ep.handler = None

    def _deliver(self, evs: list[Any]) -> None:
        proto = self._protocol
        i, n = 0, len(evs)
        while i < n:
            ev = evs[i]
            i += 1
            if isinstance(ev, Data):
                if self._closing:
                    continue
                data = ev.data
                if self._buffered:
                    # the run of pieces received together goes into as few buffers as the
                    # protocol's sizes allow (one get_buffer()/buffer_updated() per buffer)
                    pieces = [data]
                    while i < n and isinstance(evs[i], Data):
                        pieces.append(evs[i].data)
                        i += 1
                    self._feed_buffer(pieces)
                    continue
                if i < n and isinstance(evs[i], Data) and len(data) < 8192:
                    # a received batch of small pieces (MSS-sized segments): hand the run
                    # over in one call (one StreamReader append and wake-up instead of one
                    # per segment).  Large pieces (GRO super-segments, tcpcrypt frames) go
                    # one by one: joining them would cost a copy of every byte.
                    parts = [data]
                    while i < n:
                        nxt = evs[i]
                        if not isinstance(nxt, Data):
                            break
                        parts.append(nxt.data)
                        i += 1
                    data = b"".join(parts)
                elif type(data) is not bytes and not self._views_ok:
                    data = bytes(data)
                # a stream protocol (asyncio.Protocol); the transport API types it BaseProtocol
                proto.data_received(data)  # type: ignore[attr-defined]
            elif isinstance(ev, Established):
                if not self._connected.done():
                    self._connected.set_result(None)
                    self._connection_made()
                    proto = self._protocol
            elif isinstance(ev, Eof):
                if not self._closing:
                    keep_open = proto.eof_received()  # type: ignore[attr-defined]  # as above
                    if not keep_open:
                        self.close()
            elif isinstance(ev, Closed):
                self._on_closed(ev.error)

    def _feed_buffer(self, pieces: list[bytes | memoryview]) -> None:
        """asyncio.BufferedProtocol: copy into the buffers get_buffer() returns, no more
        than each holds, buffer_updated() after each (asyncio docs, "Buffered Streaming
        Protocols"); the one copy of every byte is into the protocol's buffer."""
        proto: Any = self._protocol
        remaining = 0
        for p in pieces:
            remaining += len(p)
        j = 0
        cur = memoryview(pieces[0])
        off = 0
        while remaining:
            dst = memoryview(proto.get_buffer(remaining)).cast("B")
            size = len(dst)
            if not size:
                raise RuntimeError("get_buffer() returned an empty buffer")
            filled = 0
            while filled < size and remaining:
                k = len(cur) - off
                if k > size - filled:
                    k = size - filled
                dst[filled:filled + k] = cur[off:off + k]
                filled += k
                off += k
                remaining -= k
                if off == len(cur) and remaining:
                    j += 1
                    cur = memoryview(pieces[j])
                    off = 0
            proto.buffer_updated(filled)
            if self._closing:
                return

    def _fatal_error(self, exc: BaseException, message: str) -> None:
        """asyncio's _SelectorTransport._fatal_error: an OSError is the connection's
        own end; anything else goes to the loop's exception handler too."""
        if not isinstance(exc, OSError):
            self._stack.loop.call_exception_handler({
                "message": message, "exception": exc, "transport": self,
                "protocol": self._protocol})
        self._force_close(exc)

    def _force_close(self, exc: BaseException | None) -> None:
        """Abort the connection and report `exc` to the protocol's connection_lost()
        (asyncio's _force_close; asyncio.sslproto.SSLProtocol calls it on a TLS error)."""
        if self._lost:
            return
        self._closing = True
        ep = self._ep
        if not ep.closed:
            ep.abort(self._stack.loop.time(), exc)
            self._stack.kick()
        else:
            self._lost = True
            lost: Any = self._protocol.connection_lost
            self._stack.loop.call_soon(lost, exc)

    def _on_closed(self, error: BaseException | None) -> None:
        if not self._connected.done():
            self._connected.set_exception(error or ConnectionError(
                f"connection to {self._ep.remote} closed during the handshake"))
            self._connected.exception()  # mark retrieved: open_connection re-raises it
            self._lost = True
            return
        if not self._lost:
            self._lost = True
            if self._aborted:
                error = None            # our own abort(): not an error (asyncio)
            # asyncio's connection_lost() takes an Exception: the TCB's and the transform's
            # errors all are (tcpstack.errors, tcpcrypt.errors), though typed BaseException;
            # a protocol's own failure (_fatal_error) is passed on as asyncio does
            self._protocol.connection_lost(error)  # type: ignore[arg-type]

    def _check_write_buffer(self) -> None:
        size = self._ep.write_buffer_size
        if not self._paused_writing and size > self._high:
            self._paused_writing = True
            self._ep.write_low_water = self._low     # ask the core to tell us when it drains
            self._protocol.pause_writing()
        elif self._paused_writing and size <= self._low:
            self._paused_writing = False
            self._protocol.resume_writing()
        if self._closing and not self._lost and size == 0 and self._ep.fin_queued:
            self._lost = True
            self._stack.loop.call_soon(self._protocol.connection_lost, None)

    # asyncio.WriteTransport
    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._closing:
            raise RuntimeError("write() after close()")
        if self._ep.closed:
            return  # like asyncio's socket transports: writes after a reset are dropped
        self._ep.send(data, self._stack.loop.time())
        self._check_write_buffer()
        self._stack.kick()

    def writelines(self, list_of_data: Iterable[Buffer]) -> None:
        self.write(b"".join(list_of_data))

    def write_eof(self) -> None:
        self._ep.shutdown_write(self._stack.loop.time())
        self._stack.kick()

    def can_write_eof(self) -> bool:
        return True

    def get_write_buffer_size(self) -> int:
        return self._ep.write_buffer_size

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return (self._low, self._high)

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        if high is None:
            high = 64 * 1024 if low is None else 4 * low
        if low is None:
            low = high // 4
        if not high >= low >= 0:
            raise ValueError(f"high ({high!r}) must be >= low ({low!r}) must be >= 0")
        self._high, self._low = high, low
        self._check_write_buffer()

    def abort(self) -> None:
        """RST the connection (RFC 9293 3.10.5 ABORT) at once, dropping what is buffered;
        the protocol's connection_lost() gets None, as asyncio's transports give after
        abort() (_force_close(None))."""
        self._closing = True
        if not self._ep.closed:
            self._aborted = True
            self._ep.abort(self._stack.loop.time())
        self._stack.kick()

    # asyncio.BaseTransport
    def close(self) -> None:
        """Flush what is buffered, then FIN (tcpcrypt: FINp frame first); the TCB finishes the
        close on its own, like the kernel does after close(2).

        RFC 1122 4.2.2.13: a RST instead of the FIN when received data is still pending in
        TCP, i.e. held by the TCB while reading is paused (the StreamReader's buffer is
        over 2 * limit), or when application data arrives later.  Bytes already in the
        StreamReader's buffer count as read by the application, exactly as with asyncio
        over a kernel socket, where they have been recv()ed (see Endpoint.close)."""
        if self._closing:
            return
        self._closing = True
        ep = self._ep
        if ep.closed:
            if not self._lost:
                self._lost = True
                self._stack.loop.call_soon(self._protocol.connection_lost, None)
            return
        ep.close(self._stack.loop.time())
        self._check_write_buffer()
        self._stack.kick()

    def is_closing(self) -> bool:
        return self._closing or self._ep.closed

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._protocol

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        # as asyncio's transports: a BufferedProtocol is fed through get_buffer()
        self._protocol = protocol
        self._buffered = isinstance(protocol, asyncio.BufferedProtocol)
        self._views_ok = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        """asyncio's names -- "peername", "sockname", "socket" (a StackSocket: no kernel
        socket here) -- and the stack's: "tcpcrypt_session_id" (RFC 8548 3.8; None when
        not encrypted), "tcpcrypt" (the session's facts), "encrypted", "tcp_stats",
        "endpoint".  TLS names ("ssl_object", "peercert", "cipher", "sslcontext") are the
        TLS transport's (start_tls / ssl=); here they are `default`."""
        ep = self._ep
        if name == "peername":
            return ep.remote
        if name == "sockname":
            return ep.local
        if name == "socket":
            if self._sock is None:
                fam = socket.AF_INET6 if ":" in ep.local[0] else socket.AF_INET
                self._sock = StackSocket(self._stack, fam, endpoint=ep)
                self._sock.has_transport = True
            return self._sock
        if name == "tcp_stats":
            return ep.stats()
        if name == "endpoint":
            return ep
        if name == "_stack_transport":
            return self
        value = ep.info.get(name, default)
        return default if value is None else value

    # asyncio.ReadTransport
    def is_reading(self) -> bool:
        return self._reading

    def pause_reading(self) -> None:
        if self._reading:
            self._reading = False
            self._ep.pause_reading()

    def resume_reading(self) -> None:
        if not self._reading:
            self._reading = True
            self._ep.resume_reading(self._stack.loop.time())
            self._stack.kick()


class StackStreamWriter(asyncio.StreamWriter):
    """asyncio.StreamWriter on the stack's transports, whose start_tls() works on any loop:
    asyncio's goes through loop.start_tls(), which uvloop refuses for transports it did
    not make; this one goes through Stack.start_tls() (the same SSLProtocol)."""

    def __init__(self, transport: asyncio.WriteTransport, protocol: asyncio.BaseProtocol,
                 reader: asyncio.StreamReader | None, loop: asyncio.AbstractEventLoop,
                 stack: Stack, server_side: bool = False) -> None:
        super().__init__(transport, protocol, reader, loop)
        self._stack = stack
        self._server_side = server_side

    async def start_tls(self, sslcontext: _ssl.SSLContext, *,
                        server_hostname: str | None = None,
                        ssl_handshake_timeout: float | None = None,
                        ssl_shutdown_timeout: float | None = None) -> None:
        """asyncio's StreamWriter.start_tls(): upgrade the stream to TLS (STARTTLS); the
        reader reads the decrypted stream afterwards."""
        me: Any = self
        protocol = me._protocol
        await self.drain()
        new_transport = await self._stack.start_tls(
            me._transport, protocol, sslcontext, server_side=self._server_side,
            server_hostname=server_hostname, ssl_handshake_timeout=ssl_handshake_timeout,
            ssl_shutdown_timeout=ssl_shutdown_timeout)
        me._transport = new_transport
        if hasattr(protocol, "_replace_transport"):     # Python 3.13's name
            protocol._replace_transport(new_transport)
        else:
            protocol._replace_writer(self)


class StackStreamProtocol(asyncio.StreamReaderProtocol):
    """asyncio.StreamReaderProtocol making StackStreamWriters: open_connection's and
    start_server's protocol (on_connect: the server's callback, called with the reader and
    writer once the connection -- and its TLS handshake, with ssl= -- is up)."""

    def __init__(self, reader: asyncio.StreamReader, stack: Stack, *,
                 on_connect: Callable[[asyncio.StreamReader, StackStreamWriter], None]
                 | None = None, server_side: bool = False) -> None:
        super().__init__(reader, loop=stack.loop)
        self._stack = stack
        self._on_connect = on_connect
        self._server_side = server_side
        self._reader_ref: asyncio.StreamReader | None = reader   # until connection_made
        self.writer: StackStreamWriter | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        reader, self._reader_ref = self._reader_ref, None
        me: Any = self
        self.writer = StackStreamWriter(transport, self, reader,  # type: ignore[arg-type]
                                        self._stack.loop, self._stack, self._server_side)
        me._stream_writer = self.writer
        on_connect, self._on_connect = self._on_connect, None
        if on_connect is not None and reader is not None:
            on_connect(reader, self.writer)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self.writer = None          # (the writer refers to this protocol: no cycle left)


class Server(asyncio.AbstractServer):
    """What create_server() and start_server() return (asyncio.Server's API): sockets,
    close(), wait_closed(), serve_forever(), start_serving(), async with."""

    def __init__(self, stack: Stack, listeners: list[Listener],
                 protocol_factory: Callable[[], asyncio.BaseProtocol], *, ssl: Any = None,
                 ssl_handshake_timeout: float | None = None,
                 ssl_shutdown_timeout: float | None = None, views_ok: bool = False) -> None:
        self._stack = stack
        self._listeners = listeners
        self._factory = protocol_factory
        self._ssl = ssl
        self._ssl_handshake_timeout = ssl_handshake_timeout
        self._ssl_shutdown_timeout = ssl_shutdown_timeout
        self._views_ok = views_ok
        self._cb: Callable[..., Any] | None = None        # start_server's callback
        self._serving = False
        self._closed = False
        self._closed_fut: asyncio.Future[None] = stack.loop.create_future()
        self._serving_forever: asyncio.Future[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        socks: list[StackSocket] = []
        for lst in listeners:
            lst.handler = self
            if lst.addr is not None:
                ip = ipaddress.ip_address(lst.addr)
                fam = socket.AF_INET if ip.version == 4 else socket.AF_INET6
                name: tuple[Any, ...] = (str(ip), lst.port) if ip.version == 4 else \
                    (str(ip), lst.port, 0, 0)
                socks.append(StackSocket(stack, fam, listener=lst, sockname=name))
                continue
            # every address of the stack: one socket per family, named as the kernel names
            # a wildcard bind (0.0.0.0 / ::)
            versions = sorted({a.version for a in stack.core.addresses})
            for v in versions:
                socks.append(StackSocket(
                    stack, socket.AF_INET if v == 4 else socket.AF_INET6, listener=lst,
                    sockname=("0.0.0.0", lst.port) if v == 4 else ("::", lst.port, 0, 0)))
        self._sockets = tuple(socks)

    @property
    def _listener(self) -> Listener:
        return self._listeners[0]

    @property
    def sockets(self) -> tuple[StackSocket, ...]:
        """One StackSocket per listening address (asyncio: "List of socket-like objects,
        asyncio.trsock.TransportSocket"); empty once closed, as asyncio's."""
        return () if self._closed else self._sockets

    @property
    def port(self) -> int:
        return self._listener.port

    @property
    def address(self) -> tuple[str | None, int]:
        lst = self._listener
        return (str(ipaddress.ip_address(lst.addr)) if lst.addr else None, lst.port)

    def get_loop(self) -> asyncio.AbstractEventLoop:
        return self._stack.loop

    def is_serving(self) -> bool:
        return self._serving and not self._closed

    def begin_serving(self) -> None:
        """start_serving() without awaiting (what create_server(start_serving=True) does)."""
        if self._closed:
            return
        self._serving = True
        self.accept_ready()

    async def start_serving(self) -> None:
        self.begin_serving()

    def accept_ready(self) -> None:
        """A listener's accept queue has endpoints (Stack._flush): a protocol and transport
        for each (asyncio's _accept_connection2; with ssl, behind a TLS server
        handshake)."""
        if not self._serving or self._closed:
            return
        stack = self._stack
        loop = stack.loop
        for lst in self._listeners:
            while True:
                ep = lst.accept()
                if ep is None:
                    break
                try:
                    protocol = self._factory()
                except Exception as exc:
                    # asyncio: an error making the protocol closes the connection and goes
                    # to the loop's exception handler
                    loop.call_exception_handler({
                        "message": "Error on transport creation for incoming connection",
                        "exception": exc})
                    stack._abort(ep)
                    continue
                if self._ssl:
                    protocol = ssl_protocol(loop, protocol, self._ssl, None, server_side=True,
                                            server_hostname=None,
                                            ssl_handshake_timeout=self._ssl_handshake_timeout,
                                            ssl_shutdown_timeout=self._ssl_shutdown_timeout)
                    transport = _StreamTransport(stack, ep, protocol)
                else:
                    transport = _StreamTransport(stack, ep, protocol, views_ok=self._views_ok)
                transport.accepted()

    def _client_connected(self, reader: asyncio.StreamReader, writer: StackStreamWriter) -> None:
        """start_server's callback, for a connection up (and through TLS, with ssl=)."""
        assert self._cb is not None
        res = self._cb(reader, writer)
        if asyncio.iscoroutine(res):
            task = self._stack.loop.create_task(res)
            self._tasks.add(task)
            task.add_done_callback(lambda t: self._task_done(t, writer))

    def _task_done(self, task: asyncio.Task[Any], writer: StackStreamWriter) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            # As asyncio's start_server: the application's handler failed; that goes to the
            # loop's exception handler (an application may have set its own), not our log,
            # and the connection is closed.
            self._stack.loop.call_exception_handler({
                "message": "Unhandled exception in client_connected_cb",
                "exception": task.exception(), "task": task,
                "transport": writer.transport})
            writer.transport.close()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._serving = False
        for lst in self._listeners:
            lst.close()
        if self._serving_forever is not None and not self._serving_forever.done():
            self._serving_forever.cancel()
        self._closed_fut.set_result(None)
        self._stack.kick()

    def _own_endpoints(self) -> list[Endpoint]:
        return [ep for lst in self._listeners for ep in lst.endpoints()]

    def close_clients(self) -> None:
        """Close the connections this server accepted (asyncio 3.13)."""
        for ep in self._own_endpoints():
            if ep.handler is not None:
                ep.handler.close()

    def abort_clients(self) -> None:
        """Abort the connections this server accepted (asyncio 3.13)."""
        for ep in self._own_endpoints():
            if ep.handler is not None:
                ep.handler.abort()

    async def wait_closed(self) -> None:
        await asyncio.shield(self._closed_fut)
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def serve_forever(self) -> None:
        if self._serving_forever is not None:
            raise RuntimeError("serve_forever() is already running")
        if self._closed:
            raise RuntimeError("server is closed")
        self.begin_serving()
        self._serving_forever = self._stack.loop.create_future()
        try:
            await self._serving_forever
        except asyncio.CancelledError:
            try:
                self.close()
                await self.wait_closed()
            finally:
                raise
        finally:
            self._serving_forever = None

    async def __aenter__(self) -> "Server":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        self.close()
        await self.wait_closed()

    def __repr__(self) -> str:
        return f"<tcpstack Server sockets={self.sockets!r}>"
