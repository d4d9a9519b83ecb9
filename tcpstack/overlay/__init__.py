"""The overlay node (`tcpstack up`): SOCKS5, forwards and exposes that carry any program's
connections between kernel sockets and the userspace stack (see docs/overlay.md)."""
from __future__ import annotations

from tcpstack.overlay.bridge import Bridge, Registry
from tcpstack.overlay.config import Expose, Forward, Listen, NodeConfig, OverlayError
from tcpstack.overlay.node import Node

__all__ = ["Bridge", "Expose", "Forward", "Listen", "Node", "NodeConfig", "OverlayError",
           "Registry"]
