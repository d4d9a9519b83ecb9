"""The sans-IO objects, declared for tests, experiments and teaching: drive a stack core or a
single TCB by hand on a virtual clock, parse and build packets, run the simulator.

    from tcpstack.sansio import StackCore, Network, LinkConfig, StackHost
"""
from __future__ import annotations

from tcpstack.host.endpoint import Closed, Data, Endpoint, Eof, Established
from tcpstack.host.stack import StackConfig, StackCore
from tcpstack.impairment import GilbertElliott, Impairment
from tcpstack.sim import Bottleneck, LinkConfig, Network, SimHost, StackHost
from tcpstack.tcp.config import TCPConfig
from tcpstack.tcp.connection import TCPConnection, TCPState
from tcpstack.wire.ip import parse_ip
from tcpstack.wire.segment import ACK, FIN, PSH, RST, SYN, TCPSegment
from tcpstack.wire.tcp import GSOFrame, build_ip_tcp, parse_tcp

__all__ = [
    "StackCore", "StackConfig", "Endpoint", "Established", "Data", "Eof", "Closed",
    "TCPConnection", "TCPState", "TCPConfig", "TCPSegment", "SYN", "ACK", "FIN", "RST", "PSH",
    "parse_ip", "parse_tcp", "build_ip_tcp", "GSOFrame",
    "Network", "LinkConfig", "Bottleneck", "SimHost", "StackHost", "Impairment", "GilbertElliott",
]
