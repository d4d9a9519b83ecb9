"""The TCP connection (TCB) as a sans-IO state machine and its parts (RFC 9293): send
buffer, reassembly, RTT/RTO, SACK scoreboard, RACK-TLP, congestion control.

Imports wire/ and errors only.  No asyncio, no clock but the one passed in.
"""
