"""The asyncio edge: Stack (asyncio's create_connection/create_server/start_tls and
open_connection/start_server over a StackCore; streams.py), the transport and reader, the
socket object (socket.py), TLS with asyncio's SSLProtocol (tls.py), timers on the loop.
The only place of tcpstack that imports asyncio (with tools/).
"""
