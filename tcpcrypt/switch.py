"""The process-wide switch's explicit forms, and the TUN-backed stacks it runs on.

    tcpcrypt.run(main(), addr="10.231.5.2/24")                 # asyncio.run(), switched
    asyncio.Runner(loop_factory=tcpcrypt.loop_factory(addr="10.231.5.2/24"))

Both make a tcpstack.aio.loop.Switch the process's: every event loop in the process
(asyncio's, uvloop's, those libraries make) sends TCP to the routed destinations (the
stack's subnet and `routes`, or "all") over a userspace stack, tcpcrypt (RFC 8548) when
the peer speaks TCP-ENO (RFC 8547).  TunStacks brings the stack's TUN device up (or
attaches to one made beforehand for an unprivileged user); env_switch() is the switch
TCPCRYPT_TUN describes (tcpcrypt.asyncio, whose import installs it).  docs/run.md.
"""
from __future__ import annotations

import asyncio as _asyncio
import atexit
import ipaddress
import os
import re
import threading
from typing import TYPE_CHECKING, Any, Callable, Coroutine, Iterable, TypeVar

from tcpstack.aio import loop as _loop

if TYPE_CHECKING:  # pragma: no cover
    from tcpstack.aio.streams import Stack
    from tun.device import TunDevice

__all__ = ["run", "loop_factory", "TunStacks", "env_switch"]

_T = TypeVar("_T")
IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface


class TunStacks:
    """Stacks on one TUN device, for a tcpstack.aio.loop.Switch: the device is brought up on
    first use (once per process, removed at exit) and each event loop gets its own Stack on
    it (one loop at a time: the Switch sees to that).

    addr: the stack's address with prefix length.  Either a new device (name `dev`, default
    a unique one; needs CAP_NET_ADMIN) whose kernel side is `peer` (default: the prefix's
    first other address), or, attach=True, the existing device `dev` as it was configured
    by its owner (`ip tuntap add dev NAME mode tun user USER` + address + up, once as root):
    then nothing needs privileges.  Offloads (IFF_VNET_HDR, checksum/TSO, GRO) when the
    kernel takes them.  plain: no tcpcrypt.  keylog: a tcpcrypt.keylog writer (default:
    $TCPCRYPT_KEYLOGFILE).  congestion_control: the connections' algorithm ("cubic", the
    default; "newreno"; "bbr"), checked here."""

    def __init__(self, addr: str | IPInterface, *, peer: str | None = None,
                 dev: str | None = None, attach: bool = False, mtu: int = 1500,
                 offload: bool = True, plain: bool = False, keylog: Any = None,
                 congestion_control: str | None = None) -> None:
        self.iface: IPInterface = ipaddress.ip_interface(addr)
        self.config: Any = None
        if congestion_control:
            from tcpstack.host.stack import StackConfig
            from tcpstack.tcp.config import TCPConfig
            # (TCPConfig raises ValueError for an algorithm the stack does not have)
            self.config = StackConfig(tcp=TCPConfig(congestion_control=congestion_control))
        if attach and not dev:
            raise ValueError("TunStacks(attach=True) needs the device's name (dev=)")
        if peer is None and not attach:
            peer = next((str(h) for h in self.iface.network.hosts() if h != self.iface.ip), None)
            if peer is None:
                raise ValueError(f"{self.iface} leaves no address for the kernel side of the "
                                 "TUN device: use a shorter prefix")
        if peer is not None and ipaddress.ip_address(peer) == self.iface.ip:
            raise ValueError(f"{self.iface}: the stack's address is the kernel side's ({peer}); "
                             "pick another")
        self.peer = peer
        self.dev_name = dev
        self.attach = attach
        self.mtu = mtu
        self.offload = offload
        self.plain = plain
        self.keylog = keylog
        self.dev: TunDevice | None = None
        self._lock = threading.Lock()

    def device(self) -> "TunDevice":
        """The TUN device, brought up (or attached to) on first use."""
        with self._lock:
            if self.dev is None or self.dev.closed:
                self.dev = self._attach() if self.attach else self._bring_up()
                atexit.register(self.close)
            return self.dev

    def _bring_up(self) -> "TunDevice":
        from tun.device import bring_up, unique_ifname
        return bring_up(self.dev_name or unique_ifname("tcc"),
                        f"{self.peer}/{self.iface.network.prefixlen}", None, self.mtu,
                        offload=self.offload)

    def _attach(self) -> "TunDevice":
        """The owner's persistent device, unconfigured by us (that needs CAP_NET_ADMIN): the
        offloads are this file descriptor's own (TUNSETOFFLOAD), so they are asked for."""
        from tun.device import STACK_OFFLOADS, TUN_F_CSUM, TunDevice, TunError
        assert self.dev_name is not None
        dev: TunDevice | None = None
        if self.offload:
            try:
                dev = TunDevice(self.dev_name, vnet_hdr=True)
                if not dev.enable_offloads(STACK_OFFLOADS) & TUN_F_CSUM:
                    dev.close()
                    dev = None
            except (TunError, OSError):
                if dev is not None:
                    dev.close()
                dev = None
        if dev is None:
            dev = TunDevice(self.dev_name)
        try:
            with open(f"/sys/class/net/{dev.name}/mtu") as f:
                dev.mtu = int(f.read())
        except (OSError, ValueError):
            pass
        return dev

    def security(self) -> Any:
        if self.plain:
            return None
        if self.keylog is None:
            return "default"
        from tcpcrypt.provider import TcpcryptProvider
        return TcpcryptProvider(keylog=self.keylog)

    def __call__(self, loop: _asyncio.AbstractEventLoop) -> "Stack":
        from tcpstack.aio.streams import Stack
        from tun.device import async_link
        dev = self.device()
        # the device outlives each loop's stack: close_device=False
        return Stack(async_link(dev, loop, close_device=False), [str(self.iface.ip)],
                     self.config, security=self.security(), loop=loop)

    def close(self) -> None:
        """Remove the device (a persistent one, attach=True, is only let go)."""
        with self._lock:
            if self.dev is not None:
                self.dev.close()


def env_switch() -> "_loop.Switch | None":
    """The switch TCPCRYPT_TUN and friends describe, or None without TCPCRYPT_TUN."""
    spec = os.environ.get("TCPCRYPT_TUN")
    if not spec:
        return None
    try:
        iface = ipaddress.ip_interface(spec)
    except ValueError:
        raise RuntimeError(f"TCPCRYPT_TUN={spec}: not an address with a prefix length "
                           "(e.g. 10.231.5.2/24)") from None
    peer = os.environ.get("TCPCRYPT_TUN_PEER") or None
    if peer is not None and ipaddress.ip_address(peer) == iface.ip:
        raise RuntimeError(f"TCPCRYPT_TUN={spec}: the stack's address is the kernel side's "
                           f"({peer}); pick another, or set TCPCRYPT_TUN_PEER")
    if peer is None and iface.ip == next(iface.network.hosts(), None):
        raise RuntimeError(f"TCPCRYPT_TUN={spec}: the stack's address is the kernel side's "
                           f"({iface.ip}); pick another, or set TCPCRYPT_TUN_PEER")
    mtu = int(os.environ.get("TCPCRYPT_TUN_MTU", "1500"))
    plain = bool(os.environ.get("TCPCRYPT_PLAIN"))
    require = bool(os.environ.get("TCPCRYPT_REQUIRE_ENCRYPTION"))
    if plain and require:
        raise RuntimeError("TCPCRYPT_PLAIN and TCPCRYPT_REQUIRE_ENCRYPTION contradict each other")
    try:
        routes = _loop.Routes.parse(re.split(r"[,\s]+", os.environ.get("TCPCRYPT_ROUTE", "")))
    except ValueError as e:
        raise RuntimeError(f"TCPCRYPT_ROUTE: {e}") from None
    try:
        stacks = TunStacks(iface, peer=peer, mtu=mtu, plain=plain,
                           congestion_control=os.environ.get("TCPCRYPT_CC") or None)
    except ValueError as e:
        raise RuntimeError(f"TCPCRYPT_TUN/TCPCRYPT_CC: {e}") from None
    return _loop.Switch(stacks, [iface], routes, require_encryption=require)


# --- the explicit forms --------------------------------------------------------------------

def _switch(stack: "Stack | Callable[[_asyncio.AbstractEventLoop], Stack] | None",
            addr: str | None, routes: Iterable[str], dev: str | None, peer: str | None,
            plain: bool, require_encryption: bool, mtu: int) -> "_loop.Switch":
    if plain and require_encryption:
        raise ValueError("plain=True and require_encryption=True contradict each other")
    if stack is not None and (dev is not None or peer is not None or plain):
        raise ValueError("stack= is a stack already made: dev=, peer= and plain= are for "
                         "bringing one up")
    from tcpstack.aio.streams import Stack
    if isinstance(stack, Stack):
        made = stack
        addresses: list[str] = [addr] if addr else made.addresses
        routes = list(routes)
        if addr is None and not routes:
            # A stack the program made knows no prefix of its own (its addresses are bare):
            # the program asked for this stack, so every destination but loopback uses it.
            routes = ["all"]

        def own(loop: _asyncio.AbstractEventLoop) -> "Stack":
            if loop is not made.loop or made._closed:
                raise RuntimeError(f"the stack given to tcpcrypt (addresses {made.addresses}) "
                                   "lives on another event loop, or is closed")
            return made
        return _loop.Switch(own, addresses, routes, require_encryption=require_encryption)
    if stack is not None:
        if addr is None:
            raise ValueError("stack=<a factory>: give addr= (the stack's address/prefix) too, "
                             "for routing")
        return _loop.Switch(stack, [addr], routes, require_encryption=require_encryption)
    if addr is None:
        raise ValueError("no userspace stack: give addr='10.231.5.2/24' (a TUN device is "
                         "brought up) or stack=")
    return _loop.Switch(TunStacks(addr, peer=peer, dev=dev, mtu=mtu, plain=plain), [addr],
                        routes, require_encryption=require_encryption)


def loop_factory(*, stack: "Stack | Callable[[_asyncio.AbstractEventLoop], Stack] | None" = None,
                 addr: str | None = None, routes: Iterable[str] = (), dev: str | None = None,
                 peer: str | None = None, plain: bool = False, require_encryption: bool = False,
                 mtu: int = 1500,
                 base: Callable[[], _asyncio.AbstractEventLoop] | None = None
                 ) -> Callable[[], _asyncio.AbstractEventLoop]:
    """A loop factory for asyncio.Runner(loop_factory=...) whose switch also becomes the
    process's (so every loop in the process is switched, as with the import):

        with asyncio.Runner(loop_factory=tcpcrypt.loop_factory(addr="10.231.5.2/24")) as r:
            r.run(main())

    stack: a Stack already made (its loop is the one the factory returns; without addr=
    or routes=, every destination but loopback goes over it), or a callable making one for
    a loop (then addr= says its address/prefix).  Else addr= brings a TUN
    device up (as TCPCRYPT_TUN does; dev=, peer=, mtu=, plain=).  routes: destinations
    sent over the stack besides its own subnet (prefixes, or "all").  base: the loop to
    make (default asyncio.new_event_loop; uvloop.new_event_loop works too)."""
    sw = _switch(stack, addr, routes, dev, peer, plain, require_encryption, mtu)
    _loop.set_process_switch(sw)
    from tcpstack.aio.streams import Stack
    if isinstance(stack, Stack):
        given = stack

        def base_given() -> _asyncio.AbstractEventLoop:
            return given.loop
        base = base_given
    return _loop.switched_loop_factory(sw, base)


def run(main: Coroutine[Any, Any, _T], *,
        stack: "Stack | Callable[[_asyncio.AbstractEventLoop], Stack] | None" = None,
        addr: str | None = None, routes: Iterable[str] = (), dev: str | None = None,
        peer: str | None = None, plain: bool = False, require_encryption: bool = False,
        mtu: int = 1500, debug: bool | None = None,
        base: Callable[[], _asyncio.AbstractEventLoop] | None = None) -> _T:
    """asyncio.run(main) with the process switched onto a userspace stack for the run
    (loop_factory's arguments); the TUN device it brought up is removed at the end."""
    previous = _loop.process_switch()
    try:
        factory = loop_factory(stack=stack, addr=addr, routes=routes, dev=dev, peer=peer,
                               plain=plain, require_encryption=require_encryption, mtu=mtu,
                               base=base)
    except BaseException:
        main.close()        # never awaited: no "coroutine was never awaited" warning
        raise
    sw = _loop.process_switch()
    try:
        with _asyncio.Runner(debug=debug, loop_factory=factory) as runner:
            return runner.run(main)
    finally:
        assert sw is not None
        sw.close()
        if isinstance(sw.stack_factory, TunStacks):
            sw.stack_factory.close()
        _loop.set_process_switch(previous)


