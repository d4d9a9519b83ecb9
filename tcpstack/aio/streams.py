"""The asyncio edge: drive a StackCore from a link and the event loop, and give applications
asyncio's own StreamReader/StreamWriter (open_connection / start_server, drop-in).

Nothing here knows TCP rules; it moves packets between a link and the sans-IO core, keeps
one loop timer armed at the core's earliest deadline, and adapts Endpoint events to an
asyncio.Transport so asyncio.StreamReaderProtocol works unchanged (drain() backpressure via
pause_writing/resume_writing, reading flow control via pause_reading/resume_reading).
"""
from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from typing import Any, Callable, Iterable, Literal, Protocol

from tcpstack.aio.reader import ChunkedStreamReader
from tcpstack.host.endpoint import Closed, Data, Endpoint, Eof, Established, SecurityProvider
from tcpstack.host.stack import Listener, StackConfig, StackCore
from tcpstack.wire.buffers import Buffer, LinkPacket

log = logging.getLogger(__name__)

_DEFAULT_LIMIT = 2 ** 16


class Link(Protocol):
    """Where IP packets come from and go to (a TUN device, an in-memory pipe)."""

    def start(self, on_packets: Callable[..., None]) -> None: ...
    # on_packets(packets) or on_packets(packets, checksum_ok) -- see Stack._on_packets
    def send(self, packet: LinkPacket) -> None: ...
    def close(self) -> None: ...


def _refuse_tls(api: str, ssl: Any, server_hostname: str | None,
                ssl_handshake_timeout: float | None, ssl_shutdown_timeout: float | None) -> None:
    """TLS is not available on the stack's streams yet: asking for it raises before a SYN
    leaves, so nothing meant for a TLS channel ever goes out in plaintext."""
    if ssl is not None and ssl is not False:
        raise ValueError(f"{api}(ssl=...): TLS over the userspace stack is not available; "
                         "refusing rather than sending plaintext (tcpcrypt encrypts when the "
                         "peer speaks TCP-ENO: require_encryption=True makes that mandatory)")
    # asyncio's own rules for the TLS-only arguments without ssl=
    if server_hostname is not None:
        raise ValueError("server_hostname is only meaningful with ssl")
    if ssl_handshake_timeout is not None:
        raise ValueError("ssl_handshake_timeout is only meaningful with ssl")
    if ssl_shutdown_timeout is not None:
        raise ValueError("ssl_shutdown_timeout is only meaningful with ssl")


def _check_socket_args(api: str, *, sock: Any, family: int, proto: int, host: Any) -> None:
    """asyncio's socket-level arguments: a kernel socket cannot be carried by the userspace
    stack; family and proto must be ones TCP over IPv4/IPv6 can satisfy."""
    if sock is not None:
        raise ValueError(f"{api}(sock=...): a kernel socket cannot be moved onto the "
                         "userspace stack; pass host and port instead")
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

    # --- applications ----------------------------------------------------------------

    async def open_connection(self, host: str, port: int, *, limit: int = _DEFAULT_LIMIT,
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
        """asyncio.open_connection() over this stack.  With a security provider (the default),
        TCP-ENO is offered and tcpcrypt used when the peer agrees; `require_encryption`
        fails the connect with EncryptionRequiredError instead of falling back.

        asyncio's own keyword arguments are accepted with asyncio's meaning; those this stack
        cannot honour raise before anything is sent: `ssl=` (never plaintext where TLS was
        asked for) and `sock=`.  Other keywords are TCP options (TCPConfig fields, e.g.
        nodelay=True) or the security provider's (resume=False, ...); an unknown name raises
        TypeError, as asyncio does."""
        _refuse_tls("open_connection", ssl, server_hostname, ssl_handshake_timeout,
                    ssl_shutdown_timeout)
        _check_socket_args("open_connection", sock=sock, family=family, proto=proto, host=host)
        loop = self.loop
        opts = dict(options, encrypt=encrypt, require_encryption=require_encryption,
                    app_aware=app_aware)
        self.core.check_options(opts)
        reader = ChunkedStreamReader(limit=limit, loop=loop)
        protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
        ep = self.core.connect(host, port, loop.time(),
                               local_addr=local_addr[0] if local_addr else None,
                               local_port=local_addr[1] if local_addr else 0, options=opts)
        transport = _StreamTransport(self, ep, protocol, views_ok=True)
        self.kick()
        try:
            await transport.wait_connected()
        except BaseException:
            if not ep.closed:
                ep.abort(loop.time())
                self.kick()
            raise
        writer = asyncio.StreamWriter(transport, protocol, reader, loop)
        return reader, writer

    async def start_server(self, client_connected_cb: Callable[..., Any],
                           host: str | None = None, port: int = 0, *,
                           limit: int = _DEFAULT_LIMIT, family: int = 0, flags: int = 0,
                           sock: Any = None, backlog: int = 100, ssl: Any = None,
                           reuse_address: bool | None = None, reuse_port: bool | None = None,
                           keep_alive: bool | None = None,
                           ssl_handshake_timeout: float | None = None,
                           ssl_shutdown_timeout: float | None = None,
                           start_serving: bool = True, encrypt: bool = True,
                           require_encryption: bool = False, app_aware: int = 0,
                           **options: Any) -> "Server":
        """asyncio.start_server() over this stack (the same rules for keywords as
        open_connection; `keep_alive=True` turns on TCP keepalive, RFC 9293 3.8.4)."""
        _refuse_tls("start_server", ssl, None, ssl_handshake_timeout, ssl_shutdown_timeout)
        _check_socket_args("start_server", sock=sock, family=family, proto=0, host=host)
        if reuse_port:
            raise ValueError("start_server(reuse_port=True): the userspace stack has one "
                             "listener per address and port; SO_REUSEPORT load sharing is "
                             "not available")
        # reuse_address: SO_REUSEADDR only concerns binding over TIME-WAIT kernel sockets;
        # this stack's listeners never conflict with TIME-WAIT connections, so it is moot.
        opts = dict(options, encrypt=encrypt, require_encryption=require_encryption,
                    app_aware=app_aware)
        if keep_alive:
            opts["keepalive"] = True
        listener = self.core.listen(port, host, backlog=backlog, options=opts)
        server = Server(self, listener, client_connected_cb, limit)
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


class _StreamTransport(asyncio.Transport):
    """asyncio.Transport over an Endpoint."""

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
        self._connected: asyncio.Future[None] = stack.loop.create_future()
        self._closing = False
        self._lost = False
        self._paused_writing = False
        self._reading = True
        self._high = 64 * 1024
        self._low = 16 * 1024
        ep.handler = self
        self.endpoint_ready()

    async def wait_connected(self) -> None:
        """Until the stream is established (raises what ended it before that)."""
        await self._connected

    def accepted(self) -> None:
        """An accepted endpoint, established already: tell the protocol (connection_made)."""
        if not self._connected.done():
            self._connected.set_result(None)
            self._protocol.connection_made(self)

    # events from the endpoint
    def endpoint_ready(self) -> None:
        """The endpoint has events, or buffer space (Stack._flush, from the core's ready list)."""
        ep = self._ep
        ep.notify = False
        proto = self._protocol
        while True:
            evs = ep.take_events()
            if not evs:
                break
            i, n = 0, len(evs)
            while i < n:
                ev = evs[i]
                i += 1
                if isinstance(ev, Data):
                    if self._closing:
                        continue
                    data = ev.data
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
                        proto.connection_made(self)
                elif isinstance(ev, Eof):
                    if not self._closing:
                        keep_open = proto.eof_received()  # type: ignore[attr-defined]  # as above
                        if not keep_open:
                            self.close()
                elif isinstance(ev, Closed):
                    self._on_closed(ev.error)
        self._check_write_buffer()
        if ep.closed:
            # The endpoint is finished: drop its reference back to this transport (the
            # application may still hold the transport, and the transport the endpoint), so
            # refcounting frees both at once, not the cyclic garbage collector.
            ep.handler = None

    def _on_closed(self, error: BaseException | None) -> None:
        if not self._connected.done():
            self._connected.set_exception(error or ConnectionError(
                f"connection to {self._ep.remote} closed during the handshake"))
            self._connected.exception()  # mark retrieved: open_connection re-raises it
            self._lost = True
            return
        if not self._lost:
            self._lost = True
            # asyncio's connection_lost() takes an Exception: the TCB's and the transform's
            # errors all are (tcpstack.errors, tcpcrypt.errors), though typed BaseException
            assert error is None or isinstance(error, Exception)
            self._protocol.connection_lost(error)

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
        self._closing = True
        if not self._ep.closed:
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
        self._protocol = protocol

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        ep = self._ep
        if name == "peername":
            return ep.remote
        if name == "sockname":
            return ep.local
        if name == "tcp_stats":
            return ep.stats()
        if name == "endpoint":
            return ep
        return ep.info.get(name, default)

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


class Server:
    """What start_server() returns: close(), wait_closed(), serve_forever(), async with."""

    def __init__(self, stack: Stack, listener: Listener, cb: Callable[..., Any], limit: int) -> None:
        self._stack = stack
        self._listener = listener
        self._cb = cb
        self._limit = limit
        self._serving = False
        self._closed = False
        self._closed_fut: asyncio.Future[None] = stack.loop.create_future()
        self._serving_forever: asyncio.Future[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        listener.handler = self

    @property
    def sockets(self) -> tuple[()]:
        return ()

    @property
    def port(self) -> int:
        return self._listener.port

    @property
    def address(self) -> tuple[str | None, int]:
        lst = self._listener
        import ipaddress
        return (str(ipaddress.ip_address(lst.addr)) if lst.addr else None, lst.port)

    def get_loop(self) -> asyncio.AbstractEventLoop:
        return self._stack.loop

    def is_serving(self) -> bool:
        return self._serving and not self._closed

    def begin_serving(self) -> None:
        """start_serving() without awaiting (what start_server(start_serving=True) does)."""
        self._serving = True
        self.accept_ready()

    async def start_serving(self) -> None:
        self.begin_serving()

    def accept_ready(self) -> None:
        """The listener's accept queue has endpoints (Stack._flush): hand them to the
        application's callback."""
        if not self._serving or self._closed:
            return
        loop = self._stack.loop
        while True:
            ep = self._listener.accept()
            if ep is None:
                break
            reader = ChunkedStreamReader(limit=self._limit, loop=loop)
            protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
            transport = _StreamTransport(self._stack, ep, protocol, views_ok=True)
            transport.accepted()
            writer = asyncio.StreamWriter(transport, protocol, reader, loop)
            res = self._cb(reader, writer)
            if asyncio.iscoroutine(res):
                task = loop.create_task(res)
                self._tasks.add(task)
                task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            # As asyncio's start_server: the application's handler failed; that goes to the
            # loop's exception handler (an application may have set its own), not our log.
            self._stack.loop.call_exception_handler({
                "message": "Unhandled exception in client_connected_cb",
                "exception": task.exception(), "task": task})

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._serving = False
        self._listener.close()
        if self._serving_forever is not None and not self._serving_forever.done():
            self._serving_forever.cancel()
        self._closed_fut.set_result(None)
        self._stack.kick()

    def close_clients(self) -> None:
        """Close the connections this server accepted (asyncio 3.13)."""
        for ep in self._listener.endpoints():
            if ep.handler is not None:
                ep.handler.close()

    def abort_clients(self) -> None:
        """Abort the connections this server accepted (asyncio 3.13)."""
        for ep in self._listener.endpoints():
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

