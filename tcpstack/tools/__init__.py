"""Tools on top of everything: the command line, the control socket, traces, diagrams, the
pcap writer, the demo.  Nothing below imports them.

Public: PcapWriter (captures Wireshark reads), Tracer (a readable per-segment trace with
state transitions), and the ladder diagrams (Diagram, build, render_text, render_svg).
"""
from __future__ import annotations

from tcpstack._lazy import lazy

__all__ = ["PcapWriter", "read_pcap", "Tracer", "Diagram", "build", "render_text", "render_svg"]

__getattr__ = lazy(__name__, {
    "PcapWriter": "tcpstack.tools.pcap", "read_pcap": "tcpstack.tools.pcap",
    "Tracer": "tcpstack.tools.trace",
    "Diagram": "tcpstack.tools.diagram", "build": "tcpstack.tools.diagram",
    "render_text": "tcpstack.tools.diagram", "render_svg": "tcpstack.tools.diagram",
})
