"""The asyncio edge: Stack (open_connection/start_server over a StackCore), the stream
transport and reader, timers on the loop.  The only place of tcpstack that imports asyncio
(with tools/).
"""
