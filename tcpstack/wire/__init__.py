"""Wire formats: IPv4/IPv6, TCP with its options, ICMP, checksums, sequence arithmetic.

Parse and build only; no state.  The lowest layer: imports nothing of tcpstack but errors.
"""
