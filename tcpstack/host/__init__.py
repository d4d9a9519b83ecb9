"""The host: StackCore (demultiplexing, listeners, SYN cookies, ISNs, RST/ICMP answers,
rate limits, IP reassembly) and the Endpoint between a TCB and an application.  Sans-IO.

Imports tcp/, wire/ and errors.
"""
