"""The overlay node: what `tcpstack up` serves to every program of its host.

- a SOCKS5 proxy (RFC 1928, RFC 1929) on a kernel address: CONNECT goes out through the
  userspace stack (tcpcrypt when the peer speaks TCP-ENO);
- forwards (as ssh -L): a kernel port whose clients are carried over the stack to HOST:HPORT;
- exposes (as ssh -R / tailscale serve): a stack port whose connections are handed to a
  kernel service.

Every carried connection is a tcpstack.overlay.bridge.Bridge, listed by `snapshot()` for
`tcpstack stats`.  The command line and the TOML file are tcpstack.overlay.config.
"""
from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import re
import socket
from typing import Any, Awaitable, Callable, TypeVar

from tcpstack.overlay import socks5
from tcpstack.overlay.bridge import CHUNK, Bridge, Registry, abort_kernel
from tcpstack.overlay.config import Expose, Forward, Listen, NodeConfig, OverlayError

log = logging.getLogger(__name__)

HANDSHAKE_TIMEOUT = 30.0        # a SOCKS5 client has this long to send its request
AUTH_TIMEOUT = 10.0             # a peer has this long to prove membership after tcpcrypt's
LIMIT = CHUNK                   # StreamReader limit: reading pauses above 2 * LIMIT
T = TypeVar("T")


def socks5_reply_for(exc: BaseException) -> int:
    """The RFC 1928 6 REP code for why a CONNECT through the stack failed."""
    name = type(exc).__name__
    if isinstance(exc, ConnectionRefusedError):
        return socks5.REP_CONNECTION_REFUSED          # X'05': the peer answered with a RST
    if name == "HostUnreachableError":
        # the stack's text: "ICMP destination-unreachable/CODE from ..." (tcpstack.wire.icmp
        # describe()); code 0 is "net unreachable" (RFC 792) and "no route to destination"
        # (RFC 4443 3.1) alike
        m = re.search(r"ICMP (destination-unreachable|time-exceeded)/(\d+)", str(exc))
        if m and m.group(1) == "time-exceeded":
            return socks5.REP_TTL_EXPIRED             # X'06'
        if m and m.group(2) == "0":
            return socks5.REP_NETWORK_UNREACHABLE     # X'03'
        return socks5.REP_HOST_UNREACHABLE            # X'04'
    if isinstance(exc, (TimeoutError, socket.gaierror)):
        return socks5.REP_HOST_UNREACHABLE            # X'04': no answer / no such name
    if name in ("EncryptionRequiredError", "MembershipError", "PeerNotMemberError"):
        return socks5.REP_NOT_ALLOWED                 # X'02': refused by this node's rules
    if isinstance(exc, OSError) and exc.errno in (errno.ENETUNREACH,):
        return socks5.REP_NETWORK_UNREACHABLE
    if isinstance(exc, OSError) and exc.errno in (errno.EHOSTUNREACH,):
        return socks5.REP_HOST_UNREACHABLE
    return socks5.REP_GENERAL_FAILURE


class Node:
    """The services of one node over `stack` (a tcpstack.aio.streams.Stack), as `cfg` says;
    `conn_options` are the stack's connection options (encrypt, require_encryption...)."""

    def __init__(self, stack: Any, cfg: NodeConfig, conn_options: dict[str, Any] | None = None,
                 *, members: Any = None) -> None:
        self.stack = stack
        # tcpcrypt.identity.Members of a private stack (membership): reloaded on SIGHUP,
        # and peers that never authenticate are reset (tcpcrypt.membership)
        self.members = members
        self.cfg = cfg
        self.opts = dict(conn_options or {})
        self.registry = Registry()
        self._kernel_servers: list[tuple[str, asyncio.AbstractServer]] = []
        self._stack_servers: list[tuple[str, Any]] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self.socks5_address: tuple[str, int] | None = None   # where it listens (port 0 -> real)
        self.forward_addresses: list[tuple[str, int]] = []
        self.counters = {"socks5_requests": 0, "socks5_refused": 0, "connect_failures": 0}

    # --- starting and stopping -------------------------------------------------------------

    async def _listen_kernel(self, what: str, where: Listen,
                             cb: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
                             ) -> tuple[str, int]:
        try:
            server = await asyncio.start_server(lambda r, w: self._spawn(cb(r, w)),
                                                where.host, where.port, limit=LIMIT)
        except OSError as e:
            why = e.strerror or str(e)
            if e.errno == errno.EADDRINUSE:
                why = "address already in use (another program listens there)"
            elif e.errno == errno.EADDRNOTAVAIL:
                why = "not an address of this host"
            raise OverlayError(f"{what} {where}: cannot listen: {why}", 1) from None
        self._kernel_servers.append((what, server))
        addr = server.sockets[0].getsockname()
        return str(addr[0]), int(addr[1])

    async def start(self) -> list[str]:
        """Open every service; one OverlayError (and nothing left open) if one cannot be."""
        try:
            return await self._start()
        except BaseException:
            await self.close()
            raise

    async def _start(self) -> list[str]:
        cfg = self.cfg
        said = []
        if self.members is not None:
            self._spawn(self._expire_unauthenticated())
            said.append(f"members only ({len(self.members)} in {cfg.peers})")
        if cfg.socks5 is not None:
            self.socks5_address = await self._listen_kernel("--socks5", cfg.socks5, self._socks5_client)
            auth = "username/password (RFC 1929)" if cfg.socks5_users else "no authentication"
            said.append(f"socks5 on {Listen(*self.socks5_address)} ({auth})")
            if not cfg.socks5_users and not ipaddress.ip_address(self.socks5_address[0]).is_loopback:
                log.warning("--socks5 %s listens beyond this host without --socks5-user: anyone "
                            "who reaches it can use the overlay", Listen(*self.socks5_address))
        for fwd in cfg.forwards:
            addr = await self._listen_kernel("--forward", fwd.listen, self._forwarder(fwd))
            self.forward_addresses.append(addr)
            said.append(f"forward {Listen(*addr)} -> {Listen(fwd.host, fwd.port)}")
        for ex in cfg.exposes:
            try:
                server = await self.stack.start_server(
                    lambda r, w, e=ex: self._expose_client(e, r, w), None, ex.port,
                    limit=LIMIT, **self.opts, nodelay=True)
            except (OSError, ValueError) as e:
                raise OverlayError(f"--expose {ex}: cannot listen on the stack: {e}", 1) from None
            self._stack_servers.append((f"expose {ex}", server))
            said.append(f"expose stack port {ex.port} -> {Listen(ex.target_host, ex.target_port)}")
        return said

    async def _expire_unauthenticated(self) -> None:
        """A peer that finishes the key exchange and then never authenticates is reset
        after AUTH_TIMEOUT (tcpcrypt.membership.expire_unauthenticated)."""
        from tcpcrypt.membership import expire_unauthenticated
        while True:
            await asyncio.sleep(1.0)
            for ep in expire_unauthenticated(self.stack, AUTH_TIMEOUT):
                log.info("reset %s: no membership proof within %g s", ep.remote, AUTH_TIMEOUT)

    def reload_members(self) -> str:
        """Re-read the peers file (all or nothing) and reset the connections of peers it no
        longer admits (tcpcrypt.membership.revoke); one line saying what happened."""
        if self.members is None:
            return "no peers file to reload"
        from tcpcrypt.membership import revoke
        try:
            added, removed = self.members.reload()
        except OSError as e:                      # PeersFileError / IdentityError, named
            return f"peers file not reloaded, the old list stays: {e.strerror or e}"
        reset = revoke(self.stack)
        return (f"peers file reloaded: {len(self.members)} members (+{len(added)} "
                f"-{len(removed)}), {len(reset)} connection(s) revoked")

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            log.warning("overlay connection handler failed: %s: %s", type(exc).__name__, exc)

    async def close(self) -> None:
        """Stop listening and abort what is still being carried."""
        for _, s in self._kernel_servers:
            s.close()
        for _, s in self._stack_servers:
            s.close()
        tasks = list(self._tasks)
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        for _, s in self._kernel_servers:
            try:
                await asyncio.wait_for(s.wait_closed(), 2)
            except (asyncio.TimeoutError, OSError):
                pass
        self._kernel_servers.clear()
        self._stack_servers.clear()

    # --- what `stats` shows ---------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        services = [f"socks5 {Listen(*self.socks5_address)}"] if self.socks5_address else []
        services += [f"forward {Listen(*a)}->{Listen(f.host, f.port)}"
                     for a, f in zip(self.forward_addresses, self.cfg.forwards)]
        services += [name for name, _ in self._stack_servers]
        return {"services": services, "bridges": self.registry.snapshot(),
                "totals": {"bridged": self.registry.total, "reset": self.registry.resets,
                           **self.counters}}

    # --- connecting through the stack --------------------------------------------------

    async def _connect(self, host: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.wait_for(
            self.stack.open_connection(host, port, limit=LIMIT, **self.opts, nodelay=True),
            self.cfg.connect_timeout)

    def _versions(self) -> set[int]:
        return {ipaddress.ip_address(a).version for a in self.stack.addresses}

    async def resolve(self, req: socks5.Request) -> str:
        """The stack address a request names: a literal (also one sent as a domain name,
        RFC 1928 5 ATYP 3), or the first address of the stack's family that getaddrinfo
        gives for the name.  Raises Socks5Error with the REP code."""
        versions = self._versions()
        try:
            ip = ipaddress.ip_address(req.host)
        except ValueError:
            ip = None
        if ip is not None:
            if ip.version not in versions:
                # RFC 1928 6: X'08' -- an address of a type this node's stack cannot reach
                raise socks5.Socks5Error(
                    f"{req.host}: the stack has no IPv{ip.version} address",
                    socks5.REP_ADDRESS_TYPE_NOT_SUPPORTED)
            return str(ip)
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(req.host, req.port, type=socket.SOCK_STREAM)
        except socket.gaierror as e:
            raise socks5.Socks5Error(f"cannot resolve {req.host}: {e.strerror}",
                                     socks5.REP_HOST_UNREACHABLE) from None
        except UnicodeError:
            raise socks5.Socks5Error(f"{req.host!r}: not a valid host name",
                                     socks5.REP_HOST_UNREACHABLE) from None
        for fam, *_rest, sa in infos:
            if (fam == socket.AF_INET and 4 in versions) or (fam == socket.AF_INET6 and 6 in versions):
                return str(sa[0]).split("%")[0]
        raise socks5.Socks5Error(f"{req.host} has no address of the stack's family",
                                 socks5.REP_HOST_UNREACHABLE)

    # --- the services -----------------------------------------------------------------

    @staticmethod
    async def _read_msg(r: asyncio.StreamReader, buf: bytearray,
                        parse: Callable[[bytearray], tuple[T, int] | None]) -> T:
        while True:
            got = parse(buf)
            if got is not None:
                value, used = got
                del buf[:used]
                return value
            data = await r.read(4096)
            if not data:
                raise EOFError
            buf += data

    async def _socks5_client(self, kr: asyncio.StreamReader, kw: asyncio.StreamWriter) -> None:
        cfg = self.cfg
        buf = bytearray()
        peer = kw.get_extra_info("peername")
        self.counters["socks5_requests"] += 1
        try:
            async with asyncio.timeout(HANDSHAKE_TIMEOUT):
                methods = await self._read_msg(kr, buf, socks5.parse_greeting)   # RFC 1928 3
                method = socks5.select_method(methods, bool(cfg.socks5_users))
                kw.write(socks5.method_reply(method))
                if method == socks5.METHOD_NONE_ACCEPTABLE:
                    # RFC 1928 3: X'FF' and the client MUST close; so do we
                    raise socks5.Socks5Error(
                        "no acceptable authentication method offered "
                        f"({'username/password required' if cfg.socks5_users else 'only no-auth served'})",
                        None)
                if method == socks5.METHOD_USERPASS:                              # RFC 1929 2
                    user, password = await self._read_msg(kr, buf, socks5.parse_userpass)
                    ok = socks5.check_password(cfg.socks5_users, user, password)
                    kw.write(socks5.userpass_reply(ok))
                    if not ok:
                        # RFC 1929 2: a failure status, and the server MUST close
                        raise socks5.Socks5Error(f"authentication failed for user {user!r}", None)
                req = await self._read_msg(kr, buf, socks5.parse_request)          # RFC 1928 4
                host = await self.resolve(req)
        except socks5.Socks5Error as e:
            self.counters["socks5_refused"] += 1
            log.info("socks5 client %s: %s", peer, e)
            if e.reply is not None:
                kw.write(socks5.reply(e.reply))
            await self._close_kernel(kw)
            return
        except (EOFError, TimeoutError, ConnectionError) as e:
            self.counters["socks5_refused"] += 1
            log.info("socks5 client %s went away or stalled during the handshake (%s)",
                     peer, type(e).__name__)
            await self._close_kernel(kw)
            return
        try:
            sr, sw = await self._connect(host, req.port)
        except (OSError, ValueError) as e:        # TimeoutError, refused, unreachable, ...
            self.counters["connect_failures"] += 1
            rep = socks5_reply_for(e)
            log.info("socks5 client %s: CONNECT %s failed: %s (reply %#04x %s)", peer, req.where,
                     e or type(e).__name__, rep, socks5.REPLY_TEXT[rep])
            kw.write(socks5.reply(rep))
            await self._close_kernel(kw)
            return
        # RFC 1928 6: BND.ADDR/BND.PORT: the address the server uses to reach the target
        kw.write(socks5.reply(socks5.REP_SUCCEEDED, sw.get_extra_info("sockname")))
        if buf:                             # the client did not wait for our reply
            sw.write(bytes(buf))
        b = Bridge("socks5", f"socks5 {Listen(*self.socks5_address)}" if self.socks5_address else "socks5",
                   (kr, kw), (sr, sw), target=req.where)
        b.to_stack += len(buf)
        await self.registry.carry(b)

    @staticmethod
    async def _close_kernel(kw: asyncio.StreamWriter) -> None:
        try:
            kw.close()
            await asyncio.wait_for(kw.wait_closed(), 5)
        except (OSError, asyncio.TimeoutError):
            pass

    def _forwarder(self, fwd: Forward) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter],
                                                   Awaitable[None]]:
        async def client(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            await self._forward_client(fwd, r, w)
        return client

    async def _forward_client(self, fwd: Forward, kr: asyncio.StreamReader,
                              kw: asyncio.StreamWriter) -> None:
        try:
            host = fwd.host
            if not _is_literal(host):
                host = await self.resolve(socks5.Request(socks5.CMD_CONNECT, socks5.ATYP_DOMAIN,
                                                         host, fwd.port))
            sr, sw = await self._connect(host, fwd.port)
        except (OSError, ValueError, socks5.Socks5Error) as e:
            # as ssh -L: the kernel client's connection ends; a RST says it failed
            self.counters["connect_failures"] += 1
            log.warning("forward %s: connect to %s failed: %s", fwd, Listen(fwd.host, fwd.port),
                        e or type(e).__name__)
            abort_kernel(kw)
            return
        await self.registry.carry(Bridge("forward", f"forward {fwd}", (kr, kw), (sr, sw),
                                         target=str(Listen(fwd.host, fwd.port))))

    async def _expose_client(self, ex: Expose, sr: asyncio.StreamReader,
                             sw: asyncio.StreamWriter) -> None:
        where = Listen(ex.target_host, ex.target_port)
        task = asyncio.current_task()
        if task is not None:                  # (the stack's Server made it) close() ends it too
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        try:
            kr, kw = await asyncio.wait_for(
                asyncio.open_connection(ex.target_host, ex.target_port, limit=LIMIT),
                self.cfg.connect_timeout)
        except (OSError, asyncio.TimeoutError) as e:
            # the overlay peer gets a RST: nothing serves there now
            self.counters["connect_failures"] += 1
            log.warning("expose %s: the kernel service %s: %s", ex, where,
                        getattr(e, "strerror", None) or e or type(e).__name__)
            sw.transport.abort()
            return
        await self.registry.carry(Bridge("expose", f"expose {ex}", (kr, kw), (sr, sw),
                                         target=str(where)))


def _is_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


def membership_security(cfg: NodeConfig, args: Any) -> Any | None:
    """The stack's security provider when the node has membership keys (`key`, `peers`):
    tcpcrypt that authenticates every peer against the peers file; None without them (the
    caller's default).  Raises OverlayError when they cannot be honoured: the node never
    runs unauthenticated when membership was asked for."""
    if cfg.key is None and cfg.peers is None:
        return None
    if getattr(args, "plain", False):
        raise OverlayError("--key/--peers with --plain: membership is proven inside tcpcrypt; "
                           "drop --plain", 2)
    if cfg.key is None or cfg.peers is None:
        raise OverlayError(f"membership needs both --key and --peers (got only "
                           f"{'--key' if cfg.key else '--peers'})", 2)
    from tcpcrypt.errors import PeersFileError
    from tcpcrypt.identity import Identity, Members
    from tcpcrypt.provider import TcpcryptProvider
    try:
        identity = Identity.load(cfg.key)
    except OSError as e:                   # IdentityError (an OSError) names the file itself
        raise OverlayError(f"--key: {e.strerror or e}", 1) from None
    try:
        members = Members.load(cfg.peers)
    except PeersFileError as e:            # "FILE:LINE: what": a mistake in the file
        raise OverlayError(str(e), 2) from None
    except OSError as e:
        raise OverlayError(f"--peers: {e.strerror or e}" if e.strerror is None
                           else f"--peers {cfg.peers}: {e.strerror}", 1) from None
    keylog: Any = None
    if getattr(args, "keylog", None):
        from tcpcrypt.keylog import KeyLogFile, KeyLogWriter
        try:
            keylog = KeyLogWriter(KeyLogFile(args.keylog))
        except OSError as e:
            raise OverlayError(f"--keylog {args.keylog}: {e.strerror or e}", 1) from None
    else:
        from tcpcrypt.keylog import keylog_from_env
        keylog = keylog_from_env()
    return TcpcryptProvider(keylog=keylog, identity=identity, members=members)
