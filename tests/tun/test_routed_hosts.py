"""tun.topology.RoutedHosts (bench/impaired.py's path): two hosts through a router namespace,
routed both ways, veth offloads off, everything removed on exit."""
from __future__ import annotations

import shutil
import subprocess

import pytest

from tun.topology import RoutedHosts

pytestmark = [pytest.mark.tun,
              pytest.mark.skipif(shutil.which("ethtool") is None, reason="needs ethtool")]


def netns_list() -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def test_routed_hosts_route_through_the_router_without_offloads():
    with RoutedHosts() as net:
        names = [ns.name for ns in (*net.hosts, net.router)]
        a, b = net.hosts
        for target in (net.host_addrs[1], net.kernel_addrs[1]):
            r = a.run(["ping", "-c1", "-W2", target])
            assert r.returncode == 0, r.stdout + r.stderr
        assert b.run(["ping", "-c1", "-W2", net.kernel_addrs[0]]).returncode == 0
        # host A reaches host B via the router
        tr = a.run(["ip", "route", "get", net.host_addrs[1]]).stdout
        assert f"via {net.router_addrs[0]}" in tr
        for ns, dev in net.veth_ends():
            k = ns.run(["ethtool", "-k", dev]).stdout
            assert "tcp-segmentation-offload: off" in k and "generic-receive-offload: off" in k
        assert [d.name for d in net.devices] and len(net.router_ifs) == 2
    left = netns_list()
    assert not any(n in left for n in names)
