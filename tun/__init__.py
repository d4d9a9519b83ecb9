"""tun: the links a stack runs on: Linux TUN devices (python-pytun) with offloads, an
in-memory link, a userspace impairment wrapper, and network-namespace helpers.

    from tun import bring_up, async_link        # a TUN device, fast by default
    from tun import MemoryLink                  # two stacks in one process
"""
from __future__ import annotations

from tcpstack._lazy import lazy

__all__ = [
    "TunDevice", "AsyncTun", "TunError", "bring_up", "async_link", "unique_ifname",
    "MemoryLink", "ImpairedLink", "Impairment",
    "NetNS", "VethPair", "TunInNamespace", "Netem", "netem_available",
    "KernelSide", "TwoHosts", "RoutedHosts",
]

__getattr__ = lazy(__name__, {
    **dict.fromkeys(["TunDevice", "AsyncTun", "TunError", "bring_up", "async_link",
                     "unique_ifname"], "tun.device"),
    "MemoryLink": "tun.memory",
    "ImpairedLink": "tun.impaired", "Impairment": "tcpstack.impairment",
    **dict.fromkeys(["NetNS", "VethPair", "TunInNamespace", "Netem", "netem_available"], "tun.netns"),
    "KernelSide": "tun.topology", "TwoHosts": "tun.topology",
    "RoutedHosts": "tun.topology",
})
