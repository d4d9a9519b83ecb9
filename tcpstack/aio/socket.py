"""The stack's socket object: what get_extra_info("socket") and Server.sockets give.

asyncio hands protocols an asyncio.trsock.TransportSocket, a restricted view of the kernel
socket under a transport ("Transports" in the asyncio docs: get_extra_info('socket'), and
Server.sockets).  A connection of this userspace stack has no kernel socket, so StackSocket
offers the same surface over the stack's own objects:

- family, type (SOCK_STREAM), proto (IPPROTO_TCP), getsockname(), getpeername();
- setsockopt()/getsockopt() for TCP_NODELAY, SO_KEEPALIVE, TCP_KEEPIDLE, TCP_KEEPINTVL,
  TCP_KEEPCNT, TCP_USER_TIMEOUT, SO_RCVBUF, SO_SNDBUF, mapped onto the connection's TCB
  configuration (tcpstack.tcp.config.TCPConfig) *live*; on a listening socket they apply
  to the connections it accepts from then on; any other option raises
  OSError(ENOPROTOOPT), as the kernel does for an option it does not know;
- fileno() is -1: asyncio documents -1 for a transport with no file descriptor, and there
  is none here;
- settimeout(0)/setblocking(False)/gettimeout() as TransportSocket allows (a transport
  socket is non-blocking; anything else raises ValueError).

A StackSocket is also what `Stack.socket()` makes: bind() it to one of the stack's
addresses, start the connection with connect() / `await Stack.sock_connect()`, and give it
to `create_connection(sock=...)` (or listen() it and give it to `create_server(sock=...)`),
as asyncio takes a kernel socket.

SO_RCVBUF / SO_SNDBUF: the value set is the buffer in bytes (Linux doubles it for its own
bookkeeping; there is none here, so getsockopt returns what the TCB uses).  Setting
SO_RCVBUF fixes the receive buffer (no auto-tuning), as on Linux.
"""
from __future__ import annotations

import errno
import ipaddress
import socket as _socket
import struct
from typing import TYPE_CHECKING, Any

from tcpstack.errors import TcpStackError

if TYPE_CHECKING:
    from tcpstack.aio.streams import Stack
    from tcpstack.host.endpoint import Endpoint
    from tcpstack.host.stack import Listener

__all__ = ["StackSocket"]

SOL_SOCKET = _socket.SOL_SOCKET
SOL_TCP = _socket.IPPROTO_TCP

_MS = 1000.0


def _flag(v: int) -> bool:
    return bool(v)


def _ival(lo: int, hi: int, name: str) -> Any:
    def conv(v: int) -> int:
        if not lo <= v <= hi:
            raise OSError(errno.EINVAL, f"setsockopt({name}, {v}): must be {lo}..{hi}")
        return v
    return conv


def _user_timeout(v: int) -> float | None:
    if v < 0:
        raise OSError(errno.EINVAL, f"setsockopt(TCP_USER_TIMEOUT, {v}): must be >= 0")
    return v / _MS if v else None


def _bufsize(minimum: int) -> Any:
    def conv(v: int) -> int:
        return max(v, minimum)
    return conv


# (level, option) -> (TCPConfig field, value -> config, config -> value)
_OPTIONS: dict[tuple[int, int], tuple[str, Any, Any]] = {
    (SOL_TCP, _socket.TCP_NODELAY): ("nodelay", _flag, int),
    (SOL_SOCKET, _socket.SO_KEEPALIVE): ("keepalive", _flag, int),
    # Linux's ranges (net/ipv4/tcp.c: MAX_TCP_KEEPIDLE, MAX_TCP_KEEPINTVL, MAX_TCP_KEEPCNT)
    (SOL_TCP, getattr(_socket, "TCP_KEEPIDLE", 4)): ("keepalive_idle",
                                                     _ival(1, 32767, "TCP_KEEPIDLE"), int),
    (SOL_TCP, getattr(_socket, "TCP_KEEPINTVL", 5)): ("keepalive_interval",
                                                      _ival(1, 32767, "TCP_KEEPINTVL"), int),
    (SOL_TCP, getattr(_socket, "TCP_KEEPCNT", 6)): ("keepalive_count",
                                                    _ival(1, 127, "TCP_KEEPCNT"), int),
    # RFC 5482 / RFC 9293 3.8.3 user timeout, in milliseconds as Linux's option; 0: none
    (SOL_TCP, getattr(_socket, "TCP_USER_TIMEOUT", 18)): (
        "user_timeout", _user_timeout, lambda t: 0 if t is None else int(t * _MS)),
    # Linux's minimums (SOCK_MIN_RCVBUF / SOCK_MIN_SNDBUF)
    (SOL_SOCKET, _socket.SO_RCVBUF): ("recv_buffer", _bufsize(2304), int),
    (SOL_SOCKET, _socket.SO_SNDBUF): ("send_buffer", _bufsize(4608), int),
}

def _decode(value: Any) -> int:
    if isinstance(value, (bytes, bytearray, memoryview)):
        b = bytes(value)
        if len(b) < 4:
            raise OSError(errno.EINVAL, "setsockopt(): option value too short")
        return int(struct.unpack("i", b[:4])[0])
    if value is None:
        raise OSError(errno.EINVAL, "setsockopt(): a value is needed")
    return int(value)


class StackSocket:
    """A socket of the userspace stack (see the module docstring), usable where asyncio
    gives a TransportSocket.  States: fresh (bound or not), connecting/connected (an
    Endpoint), listening (one Listener of a Server)."""

    def __init__(self, stack: "Stack", family: int = _socket.AF_INET, *,
                 endpoint: "Endpoint | None" = None, listener: "Listener | None" = None,
                 sockname: tuple[Any, ...] | None = None) -> None:
        if family not in (_socket.AF_INET, _socket.AF_INET6):
            raise ValueError(f"StackSocket(family={family!r}): the stack speaks IPv4 and "
                             "IPv6 only")
        self._stack = stack
        self._family = _socket.AddressFamily(family)
        self._ep = endpoint
        self._listener = listener
        self._sockname = sockname          # bound address (fresh), or a listener's
        self._options: dict[str, Any] = {}   # set before there is a TCB (fresh sockets)
        self._backlog: int | None = None   # listen() called
        self._reuseaddr = 0
        self._closed = False
        self.has_transport = False         # a transport owns the connection

    # --- what TransportSocket has -------------------------------------------------------

    @property
    def family(self) -> _socket.AddressFamily:
        return self._family

    @property
    def type(self) -> _socket.SocketKind:
        return _socket.SOCK_STREAM

    @property
    def proto(self) -> int:
        return _socket.IPPROTO_TCP

    def fileno(self) -> int:
        """-1: no file descriptor (asyncio: "-1 if the transport has no socket")."""
        return -1

    def dup(self) -> "StackSocket":
        raise OSError(errno.EOPNOTSUPP, "a userspace stack socket has no descriptor to dup")

    def get_inheritable(self) -> bool:
        return False

    def shutdown(self, how: int) -> None:
        """As TransportSocket.shutdown(): half-close (SHUT_WR) or close the connection."""
        ep = self._ep
        if ep is None:
            raise OSError(errno.ENOTCONN, "socket is not connected")
        now = self._stack.loop.time()
        if how in (_socket.SHUT_WR, _socket.SHUT_RDWR):
            ep.shutdown_write(now)
            self._stack.kick()

    def getsockname(self) -> tuple[Any, ...]:
        if self._ep is not None:
            return self._ep.local
        if self._sockname is not None:
            return self._sockname
        return ("0.0.0.0", 0) if self._family == _socket.AF_INET else ("::", 0, 0, 0)

    def getpeername(self) -> tuple[Any, ...]:
        if self._ep is None:
            raise OSError(errno.ENOTCONN, "Transport endpoint is not connected")
        return self._ep.remote

    def settimeout(self, value: float | None) -> None:
        if value == 0:
            return
        raise ValueError("settimeout(): only 0 timeout is allowed on transport sockets")

    def gettimeout(self) -> float:
        return 0

    def setblocking(self, flag: bool) -> None:
        if not flag:
            return
        raise ValueError("setblocking(): transport sockets cannot be blocking")

    def getsockopt(self, level: int, optname: int, buflen: int | None = None) -> Any:
        key = (level, optname)
        if key in _OPTIONS:
            field, _to, from_cfg = _OPTIONS[key]
            value = int(from_cfg(self._get(field)))
        elif key == (SOL_SOCKET, _socket.SO_TYPE):
            value = int(_socket.SOCK_STREAM)
        elif key == (SOL_SOCKET, _socket.SO_ERROR):
            value = 0
        elif key == (SOL_SOCKET, getattr(_socket, "SO_DOMAIN", 39)):
            value = int(self._family)
        elif key == (SOL_SOCKET, getattr(_socket, "SO_PROTOCOL", 38)):
            value = _socket.IPPROTO_TCP
        elif key == (SOL_SOCKET, getattr(_socket, "SO_ACCEPTCONN", 30)):
            value = int(self._listener is not None)
        elif key == (SOL_SOCKET, _socket.SO_REUSEADDR):
            value = self._reuseaddr
        else:
            raise OSError(errno.ENOPROTOOPT,
                          f"getsockopt(level={level}, option={optname}): "
                          "Protocol not available on the userspace stack")
        if buflen is not None:
            return struct.pack("i", value)[:buflen]
        return value

    def setsockopt(self, level: int, optname: int, value: Any, optlen: int | None = None) -> None:
        key = (level, optname)
        if key == (SOL_SOCKET, _socket.SO_REUSEADDR):
            # moot: the stack's listeners never conflict with TIME-WAIT connections
            self._reuseaddr = int(bool(_decode(value)))
            return
        if key not in _OPTIONS:
            raise OSError(errno.ENOPROTOOPT,
                          f"setsockopt(level={level}, option={optname}): "
                          "Protocol not available on the userspace stack")
        field, to_cfg, _from = _OPTIONS[key]
        self._set(field, to_cfg(_decode(value)))

    def _get(self, field: str) -> Any:
        ep = self._ep
        if ep is not None:
            if field == "recv_buffer":
                return ep.conn.recv_buffer        # auto-tuned or fixed: the buffer now
            return getattr(ep.conn.config, field)
        opts = self._listener.options if self._listener is not None else self._options
        if field in opts:
            return opts[field]
        return getattr(self._stack.core.config.tcp, field)

    def _set(self, field: str, value: Any) -> None:
        ep = self._ep
        changes: dict[str, Any] = {field: value}
        if field == "recv_buffer":
            changes["rcvbuf_autotune"] = False    # SO_RCVBUF fixes the buffer (Linux)
        if ep is not None:
            if ep.closed:
                raise OSError(errno.EBADF, "setsockopt() on a closed connection")
            cfg = ep.conn.config
            if all(getattr(cfg, k) == v for k, v in changes.items()):
                return                            # as it is already (no copy, no service)
            now = self._stack.loop.time()
            ep.conn.reconfigure(now, **changes)
            ep.options.update(changes)
            # service the TCB now when it matters: the keepalive timer is rescheduled, and
            # with TCP_NODELAY what Nagle held goes out (as Linux pushes pending data on
            # TCP_NODELAY); with nothing unsent, the next write or timer is soon enough
            if field != "nodelay" or ep.conn.send_buffer_used:
                self._stack.core.app_input(ep, now)
                self._stack.kick()
            return
        opts = self._listener.options if self._listener is not None else self._options
        opts.update(changes)

    # --- a fresh socket: bind, connect, listen ------------------------------------------

    def bind(self, address: tuple[Any, ...]) -> None:
        """Bind to one of the stack's addresses (or the wildcard) and a port (0: chosen at
        connect).  An address the stack does not have: OSError(EADDRNOTAVAIL)."""
        if self._ep is not None or self._listener is not None or self._sockname is not None:
            raise OSError(errno.EINVAL, "socket is already bound")
        host, port = address[0], int(address[1])
        if host in ("", None):
            host = "0.0.0.0" if self._family == _socket.AF_INET else "::"
        ip = ipaddress.ip_address(host)
        if (ip.version == 4) != (self._family == _socket.AF_INET):
            raise OSError(errno.EAFNOSUPPORT, f"bind({host!r}): not of family {self._family.name}")
        if not ip.is_unspecified and ip not in self._stack.core.addresses:
            raise OSError(errno.EADDRNOTAVAIL,
                          f"bind(({host!r}, {port})): cannot assign requested address "
                          f"(the stack's addresses are {self._stack.addresses})")
        self._sockname = (str(ip), port) if ip.version == 4 else (str(ip), port, 0, 0)

    def connect(self, address: tuple[Any, ...]) -> None:
        """Start the active open to (IP address, port), as connect() on a non-blocking socket
        does; it raises BlockingIOError(EINPROGRESS) as that does.  `await
        Stack.sock_connect(sock, address)` waits for the connection."""
        err = self.connect_ex(address)
        if err == errno.EINPROGRESS:
            raise BlockingIOError(errno.EINPROGRESS, "Operation now in progress")

    def connect_ex(self, address: tuple[Any, ...]) -> int:
        if self._closed:
            raise OSError(errno.EBADF, "Bad file descriptor")
        if self._ep is not None:
            return errno.EISCONN if self._ep.established else errno.EALREADY
        if self._listener is not None or self._backlog is not None:
            raise OSError(errno.EINVAL, "connect() on a listening socket")
        host, port = str(address[0]), int(address[1])
        ip = ipaddress.ip_address(host)      # a name: resolve it first (getaddrinfo)
        if (ip.version == 4) != (self._family == _socket.AF_INET):
            raise OSError(errno.EAFNOSUPPORT, f"connect({host!r}): not of family {self._family.name}")
        self._ep = self._stack._start_endpoint(host, port, self._sockname, dict(self._options))
        return errno.EINPROGRESS

    def listen(self, backlog: int = 100) -> None:
        """Mark the socket for listening: create_server(sock=...) starts the listener."""
        if self._ep is not None:
            raise OSError(errno.EINVAL, "listen() on a connected socket")
        self._backlog = backlog

    def close(self) -> None:
        """Abort a connection not handed to a transport (a transport owns it otherwise);
        a listening socket's listener closes with its Server."""
        if self._closed:
            return
        self._closed = True
        if self._ep is not None and not self.has_transport and not self._ep.closed:
            self._ep.abort(self._stack.loop.time())
            self._stack.kick()

    def __enter__(self) -> "StackSocket":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __getstate__(self) -> Any:
        raise TypeError(f"Cannot serialize {self.__class__.__name__} object")

    def __repr__(self) -> str:
        s = (f"<tcpstack.StackSocket fd=-1, family={self._family!s}, "
             f"type={_socket.SOCK_STREAM!s}, proto={_socket.IPPROTO_TCP}")
        try:
            s += f", laddr={self.getsockname()}"
        except OSError:
            pass
        if self._ep is not None:
            s += f", raddr={self._ep.remote}"
        if self._listener is not None:
            s += ", listening"
        return s + ">"


def tcpstack_error_to_oserror(exc: TcpStackError, what: str) -> OSError:
    """The core's refusals as the OSError a kernel socket call raises."""
    msg = str(exc)
    if "in use" in msg:
        return OSError(errno.EADDRINUSE, f"{what}: address already in use ({msg})")
    if "not an address of this stack" in msg or "no local IPv" in msg:
        return OSError(errno.EADDRNOTAVAIL, f"{what}: cannot assign requested address ({msg})")
    if "no free ephemeral port" in msg:
        return OSError(errno.EADDRNOTAVAIL, f"{what}: {msg}")
    return OSError(errno.EINVAL, f"{what}: {msg}")
