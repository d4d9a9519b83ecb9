"""TLS on the stack's transports, with asyncio's own machinery.

asyncio runs TLS as a protocol between the transport and the application's protocol:
asyncio.sslproto.SSLProtocol (a BufferedProtocol) on the transport, and the application's
protocol on the SSL transport it makes.  BaseEventLoop.start_tls() and
create_connection(ssl=...) do exactly that; start_tls() below is BaseEventLoop.start_tls()
line for line, but on the stack's own transports and whatever the loop is (uvloop's
start_tls() refuses transports it did not make).  The stack's transports carry
`_start_tls_compatible = True`, so the default loop's loop.start_tls() takes them too.

TLS bytes are the application's stream for the stack: under tcpcrypt (RFC 8548) when the
peer speaks TCP-ENO, TLS runs inside it.  Nothing is ever sent in plaintext when ssl= was
given: SSLProtocol holds the application's writes until the handshake is done, and a
failed handshake raises (create_connection) or closes the connection (servers).
"""
from __future__ import annotations

import asyncio
import ssl as _ssl
from asyncio import sslproto
from typing import Any

__all__ = ["start_tls", "check_tls_args", "ssl_protocol"]


def check_tls_args(api: str, ssl: Any, *, server_hostname: str | None = None,
                   ssl_handshake_timeout: float | None = None,
                   ssl_shutdown_timeout: float | None = None, server: bool = False) -> None:
    """asyncio's checks of the TLS arguments (base_events.create_connection/create_server)."""
    if ssl is not None and ssl is not False and not isinstance(ssl, _ssl.SSLContext):
        if server or ssl is not True:
            raise TypeError(f"{api}(): ssl argument must be an SSLContext or None"
                            + ("" if server else " or True"))
    if server and ssl is True:
        raise TypeError(f"{api}(): ssl argument must be an SSLContext or None")
    if server_hostname is not None and not ssl:
        raise ValueError("server_hostname is only meaningful with ssl")
    if ssl_handshake_timeout is not None and not ssl:
        raise ValueError("ssl_handshake_timeout is only meaningful with ssl")
    if ssl_shutdown_timeout is not None and not ssl:
        raise ValueError("ssl_shutdown_timeout is only meaningful with ssl")


def ssl_protocol(loop: asyncio.AbstractEventLoop, app_protocol: asyncio.BaseProtocol,
                 ssl: Any, waiter: asyncio.Future[Any] | None, *, server_side: bool,
                 server_hostname: str | None, ssl_handshake_timeout: float | None,
                 ssl_shutdown_timeout: float | None,
                 call_connection_made: bool = True) -> sslproto.SSLProtocol:
    """asyncio's SSLProtocol for `app_protocol` (ssl=True: SSLProtocol makes the default
    context, as asyncio's create_connection(ssl=True) does)."""
    context: Any = None if ssl is True else ssl
    make: Any = sslproto.SSLProtocol      # (typeshed: context and waiter not Optional)
    proto: sslproto.SSLProtocol = make(
        loop, app_protocol, context, waiter, server_side, server_hostname,
        call_connection_made=call_connection_made, ssl_handshake_timeout=ssl_handshake_timeout,
        ssl_shutdown_timeout=ssl_shutdown_timeout)
    return proto


async def start_tls(loop: asyncio.AbstractEventLoop, transport: asyncio.BaseTransport,
                    protocol: asyncio.BaseProtocol, sslcontext: _ssl.SSLContext, *,
                    server_side: bool = False, server_hostname: str | None = None,
                    ssl_handshake_timeout: float | None = None,
                    ssl_shutdown_timeout: float | None = None) -> asyncio.Transport:
    """Upgrade `transport` to TLS (asyncio's loop.start_tls(), BaseEventLoop's code): returns
    the SSL transport; `protocol` gets its data from then on.  The handshake's failure
    closes the transport and raises."""
    if not isinstance(sslcontext, _ssl.SSLContext):
        raise TypeError(f"sslcontext is expected to be an instance of ssl.SSLContext, "
                        f"got {sslcontext!r}")
    if not getattr(transport, "_start_tls_compatible", False):
        raise TypeError(f"transport {transport!r} is not supported by start_tls()")
    waiter = loop.create_future()
    ssl_proto = ssl_protocol(loop, protocol, sslcontext, waiter, server_side=server_side,
                             server_hostname=server_hostname,
                             ssl_handshake_timeout=ssl_handshake_timeout,
                             ssl_shutdown_timeout=ssl_shutdown_timeout,
                             call_connection_made=False)
    # Pause early so that "ssl_protocol.data_received()" doesn't have a chance to get
    # called before "ssl_protocol.connection_made()" (asyncio's comment).
    rt: Any = transport
    rt.pause_reading()
    transport.set_protocol(ssl_proto)
    conmade_cb = loop.call_soon(ssl_proto.connection_made, transport)
    resume_cb = loop.call_soon(rt.resume_reading)
    try:
        await waiter
    except BaseException:
        transport.close()
        conmade_cb.cancel()
        resume_cb.cancel()
        raise
    app_transport: asyncio.Transport = ssl_proto._app_transport
    return app_transport
