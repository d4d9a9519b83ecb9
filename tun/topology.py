"""Topologies for running the stack against the Linux kernel: a private network namespace
holding a TUN device whose kernel side is the peer (tests, the demo, benchmarks).

    with KernelSide() as k:          # netns + TUN (kernel 10.231.N.1, stack 10.231.N.2)
        stack = Stack(k.link(), [k.stack_addr])
        r = await k.run("curl", ...) # runs inside the namespace

Everything is removed on exit, also on error.
"""
from __future__ import annotations

import asyncio
import itertools
import logging
import os
import subprocess
import time
from typing import Any

from tcpstack.impairment import Impairment, ImpairmentError

from .device import TUN_F_CSUM, TUN_F_TSO4, TUN_F_TSO6, AsyncTun, TunDevice
from .impaired import ImpairedLink
from .netns import Netem, NetemUnavailable, NetNS, TunInNamespace, VethPair

log = logging.getLogger(__name__)
_n = itertools.count(1)


class KernelSide:
    def __init__(self, mtu: int = 1500, *, offload: bool = False) -> None:
        idx = (os.getpid() + next(_n)) % 250 + 1
        self.offload = offload                 # IFF_VNET_HDR + checksum/TSO offloads, GRO link
        self.offloads_accepted = 0
        self.kernel_addr = f"10.231.{idx}.1"
        self.stack_addr = f"10.231.{idx}.2"
        self.mtu = mtu
        self.ns: NetNS | None = None
        self._tun: TunInNamespace | None = None
        self.dev: TunDevice | None = None
        self._link: AsyncTun | None = None
        self.stack: Any = None

    @property
    def name(self) -> str:
        assert self.ns is not None
        return self.ns.name

    def __enter__(self) -> "KernelSide":
        self.ns = NetNS()
        try:
            if self.offload:
                # As tun.device.bring_up: offloads when the kernel takes them, else a plain
                # device and one warning saying why.
                why = ""
                try:
                    self._tun = TunInNamespace(self.ns, f"{self.kernel_addr}/24", mtu=self.mtu,
                                               vnet_hdr=True)
                    self.offloads_accepted = self._tun.device.enable_offloads(
                        TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6)
                    if not self.offloads_accepted & TUN_F_CSUM:
                        why = "the kernel accepted no checksum offload"
                except OSError as e:
                    why = f"{e.strerror or e}"
                if why:
                    log.warning("TUN in %s: offloads off: %s", self.ns.name, why)
                    if self._tun is not None:
                        self._tun.close()
                        self._tun = None
                    self.offload = False
                    self.offloads_accepted = 0
            if self._tun is None:
                self._tun = TunInNamespace(self.ns, f"{self.kernel_addr}/24", mtu=self.mtu)
            self.dev = self._tun.device
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def link(self) -> AsyncTun:
        assert self.dev is not None
        self._link = AsyncTun(self.dev, gro=self.offload)
        return self._link

    async def run(self, *cmd: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        """Run a command inside the namespace without blocking the loop."""
        proc = await asyncio.create_subprocess_exec(
            "ip", "netns", "exec", self.name, *cmd,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
        return subprocess.CompletedProcess(cmd, proc.returncode or 0, out.decode(), err.decode())

    async def spawn(self, *cmd: str, **kw: Any) -> asyncio.subprocess.Process:
        kw.setdefault("stdout", subprocess.DEVNULL)
        kw.setdefault("stderr", subprocess.DEVNULL)
        return await asyncio.create_subprocess_exec("ip", "netns", "exec", self.name, *cmd, **kw)

    def __exit__(self, *exc: object) -> None:
        if self._link is not None:
            self._link.close()
        if self._tun is not None:
            self._tun.close()
        if self.ns is not None:
            self.ns.close()


class TwoHosts:
    """Two hosts, each a network namespace with a TUN device and a userspace stack's address,
    joined by a veth pair; the kernels route between them (the private encrypted overlay):

        stack1 10.231.A.2 -- tun -- [ns1 kernel 10.231.A.1] == veth 10.232.P.0/30 ==
                             [ns2 kernel 10.231.B.1] -- tun -- stack2 10.231.B.2

    `impair(Impairment(...))` puts netem on both veth ends (delay, jitter, loss, reorder,
    duplicate, corrupt, rate), or the same in userspace when the kernel has no sch_netem.
    """

    def __init__(self, mtu: int = 1500, *, tuns: bool = True, offload: bool = False) -> None:
        # tuns=False: the namespaces, veth and routes only; programs run inside the
        # namespaces bring their own TUN devices up (the CLI, tcpcrypt.asyncio).
        base = (os.getpid() * 2 + 2 * next(_n)) % 240 + 2
        self.a_idx, self.b_idx = base, base + 1
        self.stack_addrs = (f"10.231.{self.a_idx}.2", f"10.231.{self.b_idx}.2")
        self.kernel_addrs = (f"10.231.{self.a_idx}.1", f"10.231.{self.b_idx}.1")
        self.veth_addrs = (f"10.232.{base}.1", f"10.232.{base}.2")
        self.mtu = mtu
        self.ns: list[NetNS] = []
        self._tuns: list[TunInNamespace] = []
        self.veth: VethPair | None = None
        self._netems: list[Netem] = []
        self._links: list[AsyncTun] = []
        self._userspace: Impairment | None = None
        self.impairment_kind: str | None = None
        self.with_tuns = tuns
        # IFF_VNET_HDR + checksum/TSO offloads on both TUNs: 64 KB super-segments travel
        # stack -> TUN -> routing -> veth -> routing -> TUN -> stack unsegmented (GSO).
        self.offload = offload
        self.offloads_accepted: list[int] = []

    def __enter__(self) -> "TwoHosts":
        offload_on = self.offload
        try:
            self.ns = [NetNS(), NetNS()]
            for ns, k in zip(self.ns, self.kernel_addrs):
                if self.with_tuns:
                    t = TunInNamespace(ns, f"{k}/24", mtu=self.mtu, vnet_hdr=offload_on)
                    self._tuns.append(t)
                    if offload_on:
                        self.offloads_accepted.append(
                            t.device.enable_offloads(TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6))
                ns.sysctl("net.ipv4.ip_forward", 1)
            va, vb = self.veth_addrs
            self.veth = VethPair(self.ns[0], self.ns[1], f"{va}/30", f"{vb}/30", mtu=self.mtu)
            self.ns[0].ip("route", "add", f"10.231.{self.b_idx}.0/24", "via", vb)
            self.ns[1].ip("route", "add", f"10.231.{self.a_idx}.0/24", "via", va)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    @property
    def devices(self) -> list[TunDevice]:
        return [t.device for t in self._tuns]

    def links(self) -> tuple[Any, Any]:
        """The two stacks' links (AsyncTun; wrapped in ImpairedLink under a userspace
        impairment)."""
        self._links = [AsyncTun(t.device, gro=self.offload) for t in self._tuns]
        if self._userspace is not None:
            a, b = self._links
            return (ImpairedLink(a, egress=self._userspace, seed=1),
                    ImpairedLink(b, egress=self._userspace, seed=2))
        return self._links[0], self._links[1]

    def impair(self, impairment: Impairment) -> str:
        """Apply the same impairment in both directions: netem on both veth ends when the
        kernel has sch_netem, otherwise the userspace equivalent (ImpairedLink, the
        simulator's decision core) on each stack's egress (call before links()).  Returns
        "netem" (or "tbf" for a rate alone without netem) or "userspace".

        Only what both can do is accepted, so a test means the same on either kernel: no
        burst loss (Netem here has no gemodel), and reordering the netem way
        (``reorder_delay=None``: a reordered packet skips the delay).  With jitter, netem
        may reorder whatever ``jitter_reorders`` says."""
        assert self.veth is not None
        imp = impairment
        if imp.burst_loss is not None:
            raise ImpairmentError("TwoHosts.impair: burst loss has no netem equivalent here")
        if imp.reorder and imp.reorder_delay is not None:
            raise ImpairmentError("TwoHosts.impair: reorder the netem way, reorder_delay=None "
                                  "(a reordered packet skips the delay)")
        kw: dict[str, Any] = dict(delay_ms=imp.delay * 1000, jitter_ms=imp.jitter * 1000,
                                  loss_pct=imp.loss * 100, reorder_pct=imp.reorder * 100,
                                  duplicate_pct=imp.duplicate * 100,
                                  corrupt_pct=imp.corrupt * 100)
        if imp.rate_bps:
            kw["rate"] = int(imp.rate_bps)
            if imp.queue_bytes is not None:     # netem's limit counts packets
                kw["limit"] = max(1, -(-imp.queue_bytes // self.mtu))
        for n in self._netems:
            n.close()
        self._netems = []
        try:
            self._netems = [Netem(self.ns[0], self.veth.name_a, **kw),
                            Netem(self.ns[1], self.veth.name_b, **kw)]
            self.impairment_kind = self._netems[0].kind     # "tbf" for a rate alone without netem
        except NetemUnavailable:
            for n in self._netems:
                n.close()
            self._netems = []
            self._userspace = imp
            self.impairment_kind = "userspace"
        return self.impairment_kind

    def __exit__(self, *exc: object) -> None:
        for link in self._links:
            link.close()
        for n in self._netems:
            n.close()
        if self.veth is not None:
            self.veth.close()
        for t in self._tuns:
            t.close()
        for ns in self.ns:
            ns.close()


class RoutedHosts:
    """Two hosts joined through a third, router namespace (where a bench puts its impairments:
    qdiscs on the router's egress, iptables/nft rules in its FORWARD hook, NFQUEUE):

        stack1 10.231.A.2 -- tun -- [host A 10.231.A.1] == veth 10.234.P.1|.2 == [router]
        [router] == veth 10.234.P.5|.6 == [host B 10.231.B.1] -- tun -- stack2 10.231.B.2

    Each host routes everything via the router; the router routes the two TUN subnets back
    to the hosts.  host_addrs are the hosts' own (kernel) addresses on the veths, for
    kernel-TCP traffic over the same path; stack_addrs the userspace stacks' addresses.
    offload=False (the default) turns every veth offload off (ethtool: TSO, GSO, GRO,
    checksums) and opens the TUNs without IFF_VNET_HDR: MTU-sized packets end to end, for
    the kernel's TCP and the stacks alike.  Everything is removed on exit, also on error.
    """

    def __init__(self, mtu: int = 1500, *, offload: bool = False) -> None:
        base = (os.getpid() * 2 + 2 * next(_n)) % 240 + 2
        self.a_idx, self.b_idx = base, base + 1
        self.stack_addrs = (f"10.231.{self.a_idx}.2", f"10.231.{self.b_idx}.2")
        self.kernel_addrs = (f"10.231.{self.a_idx}.1", f"10.231.{self.b_idx}.1")
        self.host_addrs = (f"10.234.{base}.1", f"10.234.{base}.6")
        self.router_addrs = (f"10.234.{base}.2", f"10.234.{base}.5")
        self.mtu = mtu
        self.offload = offload
        self.hosts: list[NetNS] = []
        self.router: NetNS | None = None
        self._tuns: list[TunInNamespace] = []
        self.veths: list[VethPair] = []

    def __enter__(self) -> "RoutedHosts":
        try:
            self.hosts = [NetNS(), NetNS()]
            self.router = NetNS()
            for ns, k in zip(self.hosts, self.kernel_addrs):
                self._tuns.append(TunInNamespace(ns, f"{k}/24", mtu=self.mtu))
            for ns in (*self.hosts, self.router):
                ns.sysctl("net.ipv4.ip_forward", 1)
            ha, hb = self.host_addrs
            ra, rb = self.router_addrs
            self.veths = [VethPair(self.hosts[0], self.router, f"{ha}/30", f"{ra}/30", mtu=self.mtu),
                          VethPair(self.router, self.hosts[1], f"{rb}/30", f"{hb}/30", mtu=self.mtu)]
            self.hosts[0].ip("route", "add", "default", "via", ra)
            self.hosts[1].ip("route", "add", "default", "via", rb)
            self.router.ip("route", "add", f"10.231.{self.a_idx}.0/24", "via", ha)
            self.router.ip("route", "add", f"10.231.{self.b_idx}.0/24", "via", hb)
            if not self.offload:
                for ns, dev in self.veth_ends():
                    ns.run(["ethtool", "-K", dev, "tso", "off", "gso", "off", "gro", "off",
                            "tx", "off", "rx", "off"], check=True)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def veth_ends(self) -> list[tuple[NetNS, str]]:
        """(namespace, interface) of all four veth ends."""
        a, b = self.veths
        assert self.router is not None
        return [(self.hosts[0], a.name_a), (self.router, a.name_b),
                (self.router, b.name_a), (self.hosts[1], b.name_b)]

    @property
    def router_ifs(self) -> tuple[str, str]:
        """The router's interfaces towards host A and towards host B."""
        return self.veths[0].name_b, self.veths[1].name_a

    @property
    def devices(self) -> list[TunDevice]:
        return [t.device for t in self._tuns]

    def __exit__(self, *exc: object) -> None:
        for v in self.veths:
            v.close()
        for t in self._tuns:
            t.close()
        for ns in (*self.hosts, *([self.router] if self.router else [])):
            ns.close()


async def wait_for_port(k: KernelSide, addr: str, port: int, timeout: float = 10.0) -> None:
    """Wait until a kernel-side server listens on addr:port (polls `ss` in the namespace)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = await k.run("ss", "-Hltn", f"sport = :{port}")
        if addr in r.stdout:
            return
        await asyncio.sleep(0.05)
    raise TimeoutError(f"nothing listens on {addr}:{port} in {k.name}")


class Attacker:
    """A third host, off the path between the two stacks of a TwoHosts: a namespace joined
    by its own veth to host A's router namespace, default route through it, and reverse-path
    filtering off in the routers so that its spoofed sources (either stack's address) are
    forwarded to both stacks.  Blind: it never sees the traffic between A and B.

        with TwoHosts() as net, Attacker(net) as att:
            att.ns.run([...raw socket sender...])
    """

    def __init__(self, net: TwoHosts) -> None:
        self.net = net
        idx = net.a_idx
        self.addr, self.router_addr = f"10.233.{idx}.1", f"10.233.{idx}.2"
        self.ns: NetNS | None = None
        self.veth: VethPair | None = None

    def __enter__(self) -> "Attacker":
        try:
            self.ns = NetNS()
            self.veth = VethPair(self.ns, self.net.ns[0], f"{self.addr}/30",
                                 f"{self.router_addr}/30", mtu=self.net.mtu)
            self.ns.ip("route", "add", "default", "via", self.router_addr)
            for ns in self.net.ns:
                for conf in ("all", "default"):
                    ns.sysctl(f"net.ipv4.conf.{conf}.rp_filter", 0)
            self.net.ns[0].sysctl(f"net.ipv4.conf.{self.veth.name_b}.rp_filter", 0)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        if self.veth is not None:
            self.veth.close()
        if self.ns is not None:
            self.ns.close()
