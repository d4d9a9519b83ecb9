"""The `tcpstack` command line: bring a userspace stack up on a TUN device and use it.

    tcpstack up      --addr 10.77.0.2/24 [--route 10.78.0.0/24] [--echo 7] [--http 80]
                     [--socks5 1080] [--forward [B:]P:HOST:HP] [--expose P:HOST:HP] [--config F]
                     (the host's overlay node: tcpstack.overlay, docs/overlay.md)
    tcpstack listen  PORT      --addr 10.77.0.2/24       (netcat-like: stdin -> peer -> stdout)
    tcpstack connect HOST PORT --addr 10.78.0.2/24
    tcpstack ping    HOST      --addr 10.77.0.2/24 [-c 3]
    tcpstack stats   [--control PATH] [--json]            (an `ss -ti`-like view of a running one)
    tcpstack trace   [--control PATH]                     (its live per-segment trace)
    tcpstack diagram FILE.pcap [--svg OUT.svg]            (a ladder diagram of a capture)
    tcpstack plot    FILE.pcap -o OUT.svg|png             (its time-sequence graph; --sim: cwnd...)
    tcpstack decrypt FILE.pcap --keylog KEYS -o PLAIN.pcap (tcpcrypt frames -> plaintext)
    tcpstack run     --addr 10.77.0.2/24 -- PROG [ARGS]   (a Python program, its TCP on the stack)

up/listen/connect/ping create a TUN device in the current network namespace: the kernel side
gets --peer (default: the first other address of --addr's prefix) and the stack owns --addr;
--route adds kernel routes through the device.  tcpcrypt is on by default (--plain turns it
off, --require-encryption refuses plain peers, --keylog FILE appends each session's keys to
FILE for `decrypt`).  --pcap FILE captures every packet, --trace prints the trace on stderr,
and a control socket (--control, default /run/tcpstack/DEV.sock) serves `stats` and `trace`.
"""
from __future__ import annotations

import argparse
import asyncio
import errno
import ipaddress
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from typing import Any

from tcpstack.tools import control, keygen
from tcpstack.wire.tcp import IPPROTO_TCP
from tcpstack.wire.virtio_net import VIRTIO_NET_HDR_F_NEEDS_CSUM, VNET_HDR_LEN

IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# --addr without a prefix length gets these (said once on stderr): a /24 or /64 subnet
# leaves room for the kernel side and for --peer.
DEFAULT_PREFIX = {4: 24, 6: 64}
CAP_NET_ADMIN = 12              # linux/capability.h


class CliError(Exception):
    """An ordinary mistake: one line for the user and an exit status (2: what was typed,
    as argparse does; 1: what was found on this host or on the network)."""

    def __init__(self, msg: str, status: int = 1) -> None:
        super().__init__(msg)
        self.status = status


class Parser(argparse.ArgumentParser):
    """argparse, with a usage error in one line (usage: `--help`), exit status 2."""

    def error(self, message: str) -> Any:
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def _bounded(kind: type, lo: float, hi: float | None, what: str) -> Any:
    def conv(text: str) -> Any:
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        if v < lo or (hi is not None and v > hi) or v != v:
            raise argparse.ArgumentTypeError(f"{text} is not {what}")
        return v
    conv.__name__ = what
    return conv


port_arg = _bounded(int, 1, 65535, "a port number (1-65535)")
mtu_arg = _bounded(int, 68, 65535, "an MTU (68-65535)")
count_arg = _bounded(int, 1, None, "a count of 1 or more")
seconds_arg = _bounded(float, 0.001, None, "a number of seconds above 0")
linger_arg = _bounded(float, 0, None, "a number of seconds (0 or more)")


def cc_arg(v: str) -> str:
    """--congestion-control: an algorithm the stack has."""
    from tcpstack.tcp.congestion import algorithm_name
    try:
        return algorithm_name(v)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def stack_config(args: argparse.Namespace) -> Any:
    """The StackConfig the link options ask for (None: the defaults)."""
    cc = getattr(args, "congestion_control", None)
    if not cc:
        return None
    from tcpstack.host.stack import StackConfig
    from tcpstack.tcp.config import TCPConfig
    return StackConfig(tcp=TCPConfig(congestion_control=cc))


def add_link_options(p: argparse.ArgumentParser, addr_required: bool = True) -> None:
    g = p.add_argument_group("the TUN device and the stack")
    g.add_argument("--addr", required=addr_required,
                   help="the stack's address with prefix, e.g. 10.77.0.2/24 (no prefix: /24 "
                        "for IPv4, /64 for IPv6)")
    g.add_argument("--peer", help="the kernel side's address (default: the prefix's first other one)")
    g.add_argument("--dev", help="TUN device name (default: tcs<pid>x<n>)")
    g.add_argument("--mtu", type=mtu_arg, default=1500)
    g.add_argument("--route", action="append", default=[], metavar="CIDR",
                   help="also route CIDR through the TUN device (repeatable)")
    g.add_argument("--no-offload", dest="offload", action="store_false",
                   help="no IFF_VNET_HDR/checksum/TSO offloads (they are on by default when "
                        "the kernel accepts them: 64 KB super-segments)")
    g.add_argument("--offload", dest="offload", action="store_true",
                   help=argparse.SUPPRESS)          # the default now; kept for old scripts
    g.add_argument("--plain", action="store_true", help="no TCP-ENO/tcpcrypt: plain TCP only")
    g.add_argument("--congestion-control", "--cc", type=cc_arg, metavar="ALG",
                   help="the connections' congestion control: cubic (the default, as stock "
                        "Linux), newreno or bbr (BBR v1: for paths with random loss)")
    g.add_argument("--pcap", metavar="FILE", help="capture every packet sent and received")
    g.add_argument("--keylog", metavar="FILE",
                   help="append each tcpcrypt session's keys to FILE (mode 0600) for "
                        "`tcpstack decrypt` (default: $TCPCRYPT_KEYLOGFILE, else none)")
    g.add_argument("--trace", action="store_true", help="print the per-segment trace on stderr")
    g.add_argument("--control", metavar="PATH", help="control socket (default /run/tcpstack/DEV.sock)")
    p.set_defaults(offload=True)


def add_overlay_options(p: argparse.ArgumentParser) -> None:
    """`up`'s overlay options (tcpstack.overlay.config parses them and --config FILE)."""
    p.set_defaults(mtu=None, offload=None)   # unset: --config FILE or the default
    g = p.add_argument_group("the overlay node (docs/overlay.md)")
    g.add_argument("--config", metavar="FILE",
                   help="TOML node config (its keys: address, device, mtu, routes, socks5, "
                        "forwards, exposes, key, peers...); options given here override it")
    g.add_argument("--socks5", metavar="[BIND:]PORT",
                   help="SOCKS5 proxy (RFC 1928) on a kernel address (default 127.0.0.1)")
    g.add_argument("--socks5-user", action="append", metavar="USER:PASSWORD",
                   help="require RFC 1929 username/password (repeatable)")
    g.add_argument("--socks5-users", metavar="FILE", help="USER:PASSWORD lines, as --socks5-user")
    g.add_argument("--forward", action="append", metavar="[BIND:]PORT:HOST:HPORT",
                   help="as ssh -L: kernel clients of BIND:PORT are carried over the stack to "
                        "HOST:HPORT (repeatable)")
    g.add_argument("--expose", action="append", metavar="PORT:TARGET_HOST:TARGET_PORT",
                   help="as ssh -R: the stack listens on PORT and hands each connection to the "
                        "kernel service TARGET_HOST:TARGET_PORT (repeatable)")
    g.add_argument("--require-encryption", action="store_true", default=None,
                   help="refuse peers that do not negotiate tcpcrypt")
    g.add_argument("--connect-timeout", type=seconds_arg, metavar="SEC",
                   help="connects through the stack give up after SEC (default 30)")
    g.add_argument("--key", metavar="FILE",
                   help="membership: this node's identity key (tcpstack keygen); with --peers, "
                        "only members connect (docs/membership.md)")
    g.add_argument("--peers", metavar="FILE",
                   help="membership: the peers file (SIGHUP re-reads it)")


def err(msg: str) -> None:
    print(f"tcpstack: {msg}", file=sys.stderr, flush=True)


def hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


# --- checking what was typed (exit 2) ----------------------------------------------------

def parse_addr(text: str) -> IPInterface:
    """--addr: a unicast host address with a prefix length; without one, DEFAULT_PREFIX
    (said on stderr).  The network and broadcast addresses of a subnet are refused."""
    try:
        if "/" in text:
            iface = ipaddress.ip_interface(text)
        else:
            ip = ipaddress.ip_address(text)
            iface = ipaddress.ip_interface(f"{ip}/{DEFAULT_PREFIX[ip.version]}")
            err(f"--addr {text} has no prefix length: using {iface}")
    except ValueError:
        raise CliError(f"--addr {text}: not an IP address with a prefix length "
                       "(e.g. 10.77.0.2/24 or fd00:77::2/64)", 2) from None
    ip, net = iface.ip, iface.network
    if ip.is_multicast or ip.is_unspecified or ip.is_loopback:
        kind = "multicast" if ip.is_multicast else "unspecified" if ip.is_unspecified else "loopback"
        raise CliError(f"--addr {text}: {ip} is a {kind} address; the stack needs a unicast one", 2)
    hostbits = net.max_prefixlen - net.prefixlen
    if hostbits >= 2 and ip == net.network_address:
        what = "network address" if ip.version == 4 else "subnet-router anycast address (RFC 4291 2.6.1)"
        raise CliError(f"--addr {text}: {ip} is the {what} of {net}; pick a host address "
                       f"such as {net.network_address + 2}/{net.prefixlen}", 2)
    if hostbits >= 2 and ip.version == 4 and ip == net.broadcast_address:
        raise CliError(f"--addr {text}: {ip} is the broadcast address of {net}; pick a host "
                       f"address such as {net.network_address + 2}/{net.prefixlen}", 2)
    return iface


def parse_peer(text: str | None, iface: IPInterface) -> IPAddress:
    net = iface.network
    if text is None:
        peer = next((h for h in net.hosts() if h != iface.ip), None)
        if peer is None:
            raise CliError(f"--addr {iface} leaves no address for the kernel side: use a "
                           f"shorter prefix (e.g. /{DEFAULT_PREFIX[iface.version]}) or --peer", 2)
        return peer
    try:
        peer = ipaddress.ip_address(text)
    except ValueError:
        raise CliError(f"--peer {text}: not an IP address", 2) from None
    if peer.version != iface.version:
        raise CliError(f"--peer {text} is IPv{peer.version} but --addr {iface} is IPv{iface.version}", 2)
    if peer == iface.ip:
        raise CliError(f"--peer {text} is the stack's own address (--addr); the kernel side needs another", 2)
    if peer not in net:
        raise CliError(f"--peer {text} is outside --addr's subnet {net}", 2)
    return peer


def parse_routes(texts: list[str]) -> list[str]:
    out = []
    for t in texts:
        try:
            out.append(str(ipaddress.ip_network(t)))
        except ValueError as e:
            hint = ""
            try:
                hint = f"; did you mean {ipaddress.ip_network(t, strict=False)}?"
            except ValueError:
                pass
            raise CliError(f"--route {t}: {e}{hint}", 2) from None
    return out


def check_dev_name(name: str | None) -> None:
    # linux/net/core/dev.c dev_valid_name(): 1..15 bytes, no '/', ':' or white space
    if name is None:
        return
    if not name or len(name.encode()) > 15 or name in (".", "..") or any(
            c in name for c in "/: \t\n"):
        raise CliError(f"--dev {name!r}: not a valid interface name (1-15 characters, "
                       "no '/', ':' or spaces)", 2)


def resolve(host: str, version: int) -> str:
    """HOST as an address of the stack's family: a literal, or a name looked up with the
    system resolver (getaddrinfo, as netcat does)."""
    try:
        ip = ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        pass
    else:
        if ip.version != version:
            raise CliError(f"{host} is an IPv{ip.version} address but the stack is IPv{version} "
                           "(--addr)", 2)
        return str(ip)
    family = socket.AF_INET if version == 4 else socket.AF_INET6
    try:
        infos = socket.getaddrinfo(host, None, family, socket.SOCK_STREAM)
    except socket.gaierror as e:
        other = ""
        if e.errno in (socket.EAI_NODATA if hasattr(socket, "EAI_NODATA") else -5,
                       socket.EAI_ADDRFAMILY if hasattr(socket, "EAI_ADDRFAMILY") else -9,
                       socket.EAI_NONAME):
            try:
                socket.getaddrinfo(host, None, socket.AF_INET6 if version == 4 else socket.AF_INET)
                other = f" (it has IPv{10 - version} addresses only; the stack is IPv{version})"
            except socket.gaierror:
                pass
        raise CliError(f"cannot resolve {host}: {e.strerror}{other}", 2) from None
    except UnicodeError:
        raise CliError(f"cannot resolve {host!r}: not a valid host name", 2) from None
    return str(infos[0][4][0]).split("%")[0]


# --- checking this host (exit 1) ---------------------------------------------------------

def _capabilities() -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return int(line.split()[1], 16)
    except OSError:
        pass
    return None


def check_privileges() -> None:
    """Creating a TUN device and configuring it needs CAP_NET_ADMIN (root has it, unless a
    container took it away)."""
    caps = _capabilities()
    if caps is not None and caps & (1 << CAP_NET_ADMIN):
        return
    if caps is None and os.geteuid() == 0:
        return
    if os.geteuid() != 0:
        raise CliError(f"not root and no CAP_NET_ADMIN (uid {os.getuid()}): creating a TUN "
                       "device needs one of them (run it with sudo)")
    raise CliError("root but without CAP_NET_ADMIN (a restricted container?): cannot create a "
                   "TUN device")


def check_host() -> None:
    check_privileges()
    if not os.path.exists("/dev/net/tun"):
        raise CliError("no /dev/net/tun: this kernel has no TUN driver loaded (modprobe tun), "
                       "or the device node is missing (mknod /dev/net/tun c 10 200)")
    if shutil.which("ip") is None:
        raise CliError("no `ip` command: install iproute2")


def host_addresses() -> list[tuple[str, IPInterface]]:
    """(interface, address/prefix) of every interface in the current network namespace."""
    try:
        out = subprocess.run(["ip", "-j", "addr", "show"], capture_output=True, text=True,
                             timeout=10).stdout
        links = json.loads(out or "[]")
    except (OSError, subprocess.SubprocessError, ValueError):
        return []
    found = []
    for link in links:
        for a in link.get("addr_info", []):
            try:
                found.append((link.get("ifname", "?"),
                              ipaddress.ip_interface(f"{a['local']}/{a['prefixlen']}")))
            except (KeyError, ValueError):
                continue
    return found


def check_free(dev: str | None, iface: IPInterface, peer: IPAddress) -> None:
    """Refuse a device name, address or subnet already used on this host (in this network
    namespace): a second stack on them would start, and nothing would reach it."""
    if dev and os.path.exists(f"/sys/class/net/{dev}"):
        raise CliError(f"device {dev} already exists on this host (--dev): pick another name")
    for ifname, other in host_addresses():
        if other.version != iface.version:
            continue
        if iface.ip == other.ip:
            raise CliError(f"{iface.ip} is already an address of {ifname} on this host: "
                           "pick another --addr")
        if iface.network.overlaps(other.network):
            raise CliError(f"{iface.network} (--addr {iface}) is already served by {ifname} "
                           f"({other}) on this host: pick another subnet")
        if peer == other.ip:
            raise CliError(f"{peer} (the kernel side, --peer) is already an address of "
                           f"{ifname} on this host: pick another")


class Host:
    """A TUN device + Stack + capture/trace/control, as the command line options say.
    Everything checkable is checked before anything is created: a mistake is one CliError."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        iface = parse_addr(args.addr)
        peer = parse_peer(args.peer, iface)
        self.routes = parse_routes(args.route)
        check_dev_name(args.dev)
        if iface.version == 6 and args.mtu < 1280:
            raise CliError(f"--mtu {args.mtu}: IPv6 needs at least 1280 (RFC 8200 5)", 2)
        self.iface = iface
        self.version = iface.version
        self.addr = str(iface.ip)
        self.peer = str(peer)
        self.prefixlen = iface.network.prefixlen
        self.dev: Any = None
        self.stack: Any = None
        self.control: control.ControlServer | None = None
        self._pcap: Any = None
        self._tracer: Any = None
        self._tracing = False
        self.watch: Any = None          # connect()'s ICMP watcher
        # seconds to wait at exit for unacknowledged data (see Stack.linger)
        self.linger: float = getattr(args, "linger", 10.0)

    async def __aenter__(self) -> "Host":
        a = self.args
        check_host()
        check_free(a.dev, self.iface, ipaddress.ip_address(self.peer))
        from tun.device import async_link, bring_up, unique_ifname

        from tcpstack.tools.pcap import PcapWriter
        from tcpstack.aio.streams import Stack
        from tcpstack.tools.trace import Tracer
        if a.pcap:
            try:
                open(a.pcap, "ab").close()
            except OSError as e:
                raise CliError(f"--pcap {a.pcap}: {e.strerror}") from None
        try:
            self.dev = bring_up(a.dev or unique_ifname("tcs"), f"{self.peer}/{self.prefixlen}",
                                self.routes or None, a.mtu, offload=a.offload)
        except OSError as e:
            raise CliError(f"cannot bring the TUN device up: {e.strerror or e}") from None
        try:
            loop = asyncio.get_running_loop()
            self.stack = Stack(async_link(self.dev), [self.addr], stack_config(a),
                               security=self._security())
            if a.pcap:
                self._pcap = PcapWriter(a.pcap, clock_offset=time.time() - loop.time())
            path = a.control or control.default_path(self.dev.name)
            self.control = control.ControlServer(self.stack, path)
            try:
                await self.control.start()
            except OSError as e:
                self.control = None
                raise CliError(f"control socket {path}: {e.strerror or e}") from None
            ctl = self.control

            def sink(line: str) -> None:
                if a.trace:
                    print(line, file=sys.stderr, flush=True)
                ctl.trace_line(line)
            self._tracer = Tracer(None, sink)
            ctl.on_tracing = self.update_hooks
            self.update_hooks()
        except BaseException:
            await self.__aexit__(*sys.exc_info())
            raise
        return self

    def _security(self) -> Any:
        """The stack's security provider: none with --plain; with --keylog, tcpcrypt telling
        that file each session's keys; else the default (which reads TCPCRYPT_KEYLOGFILE)."""
        a = self.args
        if a.plain:
            return None
        if not getattr(a, "keylog", None):
            return "default"
        from tcpcrypt.keylog import KeyLogFile, KeyLogWriter
        from tcpcrypt.provider import TcpcryptProvider
        try:
            return TcpcryptProvider(keylog=KeyLogWriter(KeyLogFile(a.keylog)))
        except OSError as e:
            raise CliError(f"--keylog {a.keylog}: {e.strerror or e}") from None

    # Packet hooks cost time on every packet (a 64 KB TSO frame is copied to be shown), so
    # they are set only while someone looks: --pcap, --trace, a `tcpstack trace` client,
    # or connect() watching for ICMP errors.
    def update_hooks(self) -> None:
        core = self.stack.core
        tracing = bool(self.args.trace or (self.control and self.control.tracing))
        self._tracing = tracing
        core.on_service = self._tracer.on_service if tracing else None
        self._tracer.watch_states(core, tracing)
        want = tracing or self._pcap is not None or self.watch is not None
        core.on_packet = self._on_packet if want else None

    def _on_packet(self, direction: str, packet: bytes, now: float) -> None:
        tso = packet[0] == VIRTIO_NET_HDR_F_NEEDS_CSUM  # a TSO frame: virtio_net_hdr before the IP header
        if self._pcap is not None:
            for p in wire_packets(packet, direction):
                self._pcap(direction, p, now)
        if tso:
            packet = packet[VNET_HDR_LEN:]
        if self._tracing:
            self._tracer.packet(direction, packet, now)
        if self.watch is not None:
            self.watch(direction, packet, now)

    async def __aexit__(self, *exc: object) -> None:
        if self.control is not None:
            self.control.close()
        if self.stack is not None:
            if exc[0] is None:
                # What the application wrote must still reach the peer after it is done:
                # the stack dies with this process (a kernel would keep sending).
                await self.stack.linger(self.linger)
            self.stack.close()
        if self._pcap is not None:
            self._pcap.close()
        if self.dev is not None:
            self.dev.close()

    def describe(self) -> str:
        if self.dev.offloads:
            off = "offloads on"
        else:
            off = "offloads off" + (" (--no-offload)" if not self.args.offload else "")
        cc = self.stack.core.config.tcp.congestion_control if self.stack is not None else "cubic"
        return (f"stack {self.addr} on {self.dev.name} (kernel side {self.peer}/{self.prefixlen}, "
                f"MTU {self.args.mtu}, {off}), {cc}, "
                f"control {self.control.path if self.control else '-'}")

    def conn_options(self) -> dict[str, Any]:
        a = self.args
        return {"encrypt": not a.plain,
                "require_encryption": bool(getattr(a, "require_encryption", False))}


def session_line(writer: asyncio.StreamWriter) -> str:
    ep = writer.get_extra_info("endpoint")
    info = control.connection_info(ep)
    head = f"connected {info['local']} <-> {info['remote']}"
    if info["session_id"]:
        return (f"{head}, tcpcrypt {info['tep']} {info['aead']}, "
                f"session ID {info['session_id']}")
    return f"{head}, plain TCP (the peer did not negotiate TCP-ENO)"


def wire_packets(packet: bytes, direction: str) -> list[bytes]:
    """A packet as StackCore.on_packet hands it, as it is on the wire, for a capture: a TSO
    frame (virtio_net_hdr first) cut into its segments with their checksums; a GRO
    super-packet from the kernel with its partial checksum (only the pseudo-header sum,
    VIRTIO_NET_HDR_F_NEEDS_CSUM) completed, so Wireshark does not flag it."""
    from tun import vnet

    from tcpstack.wire.checksum import internet_checksum, ones_sum, pseudo_header_sum
    if packet[0] == VIRTIO_NET_HDR_F_NEEDS_CSUM:
        return vnet.to_packets(packet)
    if direction != "in" or len(packet) < 40:
        return [packet]
    v4 = packet[0] >> 4 == 4
    if v4:
        ihl, proto = (packet[0] & 15) * 4, packet[9]
        src, dst = packet[12:16], packet[16:20]
        total = int.from_bytes(packet[2:4], "big")
    else:
        ihl, proto = 40, packet[6]
        src, dst = packet[8:24], packet[24:40]
        total = 40 + int.from_bytes(packet[4:6], "big")
    if proto != IPPROTO_TCP or total > len(packet) or total < ihl + 20:
        return [packet]
    seg = memoryview(packet)[ihl:total]
    pseudo = pseudo_header_sum(src, dst, IPPROTO_TCP, len(seg))
    if ones_sum(seg, pseudo) == 0:
        return [packet]                               # a complete, correct checksum
    field = int.from_bytes(seg[16:18], "big")
    if field not in (pseudo, ~pseudo & 0xFFFF):       # not a partial one: show it as it is
        return [packet]
    buf = bytearray(packet)
    buf[ihl + 16:ihl + 18] = b"\0\0"
    c = internet_checksum(memoryview(buf)[ihl:total], pseudo)
    buf[ihl + 16:ihl + 18] = c.to_bytes(2, "big")
    return [bytes(buf)]


def stdin_size() -> int | None:
    """Bytes left to read on stdin when it is a regular file (`< file.bin`), else None."""
    try:
        fd = sys.stdin.fileno()
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return None
        return max(st.st_size - os.lseek(fd, 0, os.SEEK_CUR), 0)
    except (OSError, ValueError, AttributeError):
        return None


class Progress:
    """Bytes both ways and the rate, redrawn in place on stderr; with the input's size
    known (`total`), the bar and a percentage show how much of it is sent."""

    def __init__(self, enabled: bool, total: int | None = None) -> None:
        self.enabled = enabled
        self.total = total
        self.sent = self.received = 0
        self.t0 = time.monotonic()
        self._last = 0.0

    def line(self, now: float | None = None) -> str:
        el = max((now or time.monotonic()) - self.t0, 1e-6)
        moved = self.sent + self.received
        if self.total:
            frac = min(self.sent / self.total, 1.0)
            bar = "#" * int(30 * frac)
            head = f"[{bar:<30}] {100 * frac:3.0f}% sent {self.sent / 1e6:.2f} of {self.total / 1e6:.2f} MB"
        else:
            bar = "#" * (int(moved / (1 << 20)) % 31)
            head = f"[{bar:<30}] sent {self.sent / 1e6:9.2f} MB"
        return f"{head}  received {self.received / 1e6:9.2f} MB  {moved / el / 1e6:8.2f} MB/s"

    def update(self, force: bool = False) -> None:
        now = time.monotonic()
        if not self.enabled or (not force and now - self._last < 0.25):
            return
        self._last = now
        sys.stderr.write("\r" + self.line(now))
        sys.stderr.flush()

    def done(self) -> None:
        if self.enabled:
            self.update(force=True)
            sys.stderr.write("\n")


def _stdin_chunks(loop: asyncio.AbstractEventLoop) -> asyncio.Queue[bytes]:
    """stdin read by a daemon thread (works for pipes, files and terminals alike; a blocked
    read never holds the process at exit).  b"" marks EOF."""
    q: asyncio.Queue[bytes] = asyncio.Queue(maxsize=16)
    fd = sys.stdin.fileno()

    def reader() -> None:
        while True:
            try:
                chunk = os.read(fd, 1 << 16)
            except OSError:
                chunk = b""
            try:
                asyncio.run_coroutine_threadsafe(q.put(chunk), loop).result()
            except (RuntimeError, asyncio.CancelledError):
                return                      # the loop is gone: the process is exiting
            if not chunk:
                return
    threading.Thread(target=reader, name="stdin", daemon=True).start()
    return q


async def netcat(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 progress: Progress) -> None:
    """stdin -> connection (half-close at EOF), connection -> stdout, until both are done."""
    loop = asyncio.get_running_loop()
    out = sys.stdout.buffer

    async def up() -> None:
        q = _stdin_chunks(loop)
        while chunk := await q.get():
            writer.write(chunk)
            progress.sent += len(chunk)
            progress.update()
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()

    async def down() -> None:
        while data := await reader.read(1 << 16):
            out.write(data)
            progress.received += len(data)
            progress.update()
        out.flush()

    up_task = asyncio.create_task(up())
    try:
        await down()
        await up_task
    except ConnectionError as exc:
        raise CliError(f"connection lost: {exc or type(exc).__name__}") from None
    finally:
        up_task.cancel()
        progress.done()
        writer.close()


# ICMP destination unreachable codes (RFC 792, RFC 1812 5.2.7.1; RFC 4443 3.1), as ping says them
_UNREACH4 = {0: "net unreachable", 1: "host unreachable", 2: "protocol unreachable",
             3: "port unreachable", 4: "fragmentation needed", 5: "source route failed",
             6: "destination net unknown", 7: "destination host unknown",
             9: "net administratively prohibited", 10: "host administratively prohibited",
             11: "net unreachable for TOS", 12: "host unreachable for TOS",
             13: "communication administratively prohibited"}
_UNREACH6 = {0: "no route to destination", 1: "communication administratively prohibited",
             2: "beyond scope of source address", 3: "address unreachable", 4: "port unreachable",
             5: "source address failed ingress/egress policy", 6: "reject route to destination"}


def icmp_unreachable(packet: bytes, dst: str, port: int) -> str | None:
    """"ICMP host unreachable from 10.0.0.1" when `packet` is an ICMP destination
    unreachable (or time exceeded) quoting one of our segments to dst:port, else None."""
    from tcpstack.wire import icmp
    from tcpstack.wire.ip import IPv4Header, parse_ip
    try:
        hdr, payload = parse_ip(packet)
        v6 = not isinstance(hdr, IPv4Header)
        if (hdr.next_header if v6 else hdr.proto) != (icmp.IPPROTO_ICMPV6 if v6 else icmp.IPPROTO_ICMP):
            return None
        msg = icmp.parse_icmp(payload, hdr.src, hdr.dst, v6=v6)
        quoted = icmp.quoted_tcp_ports_seq(msg)
    except (ValueError, IndexError):
        return None
    if quoted is None or str(ipaddress.ip_address(quoted[1])) != dst or quoted[3] != port:
        return None
    if msg.type == (icmp.ICMP6_DEST_UNREACH if v6 else icmp.ICMP_DEST_UNREACH):
        what = (_UNREACH6 if v6 else _UNREACH4).get(msg.code, f"destination unreachable code {msg.code}")
    elif msg.type == (icmp.ICMP6_TIME_EXCEEDED if v6 else icmp.ICMP_TIME_EXCEEDED):
        what = "time exceeded"
    else:
        return None
    return f"ICMP {what} from {ipaddress.ip_address(hdr.src)}"


async def connect(host: Host, dst: str, port: int, timeout: float
                  ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """open_connection with what a user needs to hear when it fails.  Like connect(2) on
    Linux, an ICMP destination unreachable for our SYN ends the attempt at once (RFC 1122
    4.2.3.9 calls it a soft error; the stack itself only reports it on timeout)."""
    loop = asyncio.get_running_loop()
    unreachable: asyncio.Future[str] = loop.create_future()

    def watch(direction: str, packet: bytes, now: float) -> None:
        if direction == "in" and not unreachable.done() and len(packet) > 40 and \
                packet[9 if packet[0] >> 4 == 4 else 6] in (1, 58):     # ICMP, ICMPv6
            why = icmp_unreachable(packet, dst, port)
            if why:
                unreachable.set_result(why)
    host.watch = watch
    host.update_hooks()
    t0 = loop.time()
    task = asyncio.ensure_future(host.stack.open_connection(dst, port, **host.conn_options()))
    try:
        done, _ = await asyncio.wait({task, unreachable}, timeout=timeout,
                                     return_when=asyncio.FIRST_COMPLETED)
    finally:
        host.watch = None
        host.update_hooks()
    where = hostport(dst, port)
    if task in done:
        try:
            return task.result()
        except ConnectionRefusedError:
            raise CliError(f"{where} refused the connection (RST: nothing listening there)") from None
        except TimeoutError:
            raise CliError(f"no answer from {where} after {loop.time() - t0:.0f} s") from None
        except Exception as exc:            # HostUnreachableError, EncryptionRequiredError, ...
            name = type(exc).__name__
            if name == "HostUnreachableError":
                raise CliError(f"{where} unreachable ({exc})") from None
            if name == "EncryptionRequiredError":
                raise CliError(f"{where} did not negotiate tcpcrypt and --require-encryption "
                               "is set") from None
            raise CliError(f"connect to {where} failed: {exc or name}") from None
    task.cancel()
    try:
        await task
    except BaseException:
        pass
    if unreachable.done():
        raise CliError(f"{where} unreachable ({unreachable.result()})")
    raise CliError(f"no answer from {where} after {timeout:g} s")


async def cmd_connect(args: argparse.Namespace) -> int:
    host = Host(args)
    dst = resolve(args.host, host.version)
    async with host:
        err(host.describe())
        reader, writer = await connect(host, dst, args.port, args.timeout)
        err(session_line(writer))
        await netcat(reader, writer, Progress(args.progress or sys.stderr.isatty(), stdin_size()))
    return 0


async def cmd_listen(args: argparse.Namespace) -> int:
    async with Host(args) as host:
        accepted: asyncio.Future[tuple[Any, Any]] = asyncio.get_running_loop().create_future()

        async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            if accepted.done():              # netcat serves one peer
                writer.close()
                return
            accepted.set_result((reader, writer))
            await done

        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        server = await host.stack.start_server(on_client, host.addr, args.port, **host.conn_options())
        err(f"{host.describe()}; listening on {host.addr}:{args.port}")
        reader, writer = await accepted
        server.close()
        err(session_line(writer))
        try:
            await netcat(reader, writer, Progress(args.progress or sys.stderr.isatty(), stdin_size()))
        finally:
            done.set_result(None)
    return 0


def fmt_rtt(seconds: float) -> str:
    """An RTT a person can read: "87 us" below a millisecond, "1.234 ms" above."""
    us = seconds * 1e6
    return f"{us:.0f} us" if us < 1000 else f"{us / 1000:.3f} ms"


async def cmd_ping(args: argparse.Namespace) -> int:
    host = Host(args)
    dst = resolve(args.host, host.version)
    async with host:
        core = host.stack.core
        loop = asyncio.get_running_loop()
        sent: dict[int, float] = {}
        got: list[float] = []
        replied = asyncio.Event()
        ident = os.getpid() & 0xFFFF

        def on_reply(src: str, rid: int, seq: int, data: bytes, now: float) -> None:
            if rid == ident and seq in sent:
                rtt = now - sent.pop(seq)          # `now`: when the batch was read
                got.append(rtt)
                print(f"{len(data)} bytes from {src}: icmp_seq={seq} time={fmt_rtt(rtt)}", flush=True)
                replied.set()
        core.on_echo_reply = on_reply
        print(f"PING {args.host}" + (f" ({dst})" if dst != args.host else "")
              + f" from {host.addr}", flush=True)
        for seq in range(1, args.count + 1):
            replied.clear()
            sent[seq] = loop.time()
            core.ping(dst, loop.time(), ident=ident, seq=seq, data=bytes(56))
            host.stack.kick()
            try:
                await asyncio.wait_for(replied.wait(), args.interval)
            except asyncio.TimeoutError:
                pass
            if seq < args.count and replied.is_set():
                await asyncio.sleep(args.interval)
        loss = 100.0 * (args.count - len(got)) / args.count
        print(f"--- {args.host} ping statistics ---\n{args.count} packets transmitted, "
              f"{len(got)} received, {loss:.0f}% packet loss", flush=True)
        if got:
            ms = [g * 1e3 for g in got]
            print(f"rtt min/avg/max = {min(ms):.3f}/{sum(ms) / len(ms):.3f}/{max(ms):.3f} ms")
        return 0 if got else 1


# --- up: keep serving --------------------------------------------------------------------

async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(1 << 16):
        writer.write(data)
        await writer.drain()
    writer.close()


async def _discard(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while await reader.read(1 << 20):
        pass
    writer.close()


def _http_handler(host: Host) -> Any:
    async def http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """HTTP/1.0: GET /N sends N bytes; GET / a small page with the connection's
        tcpcrypt state (plain for a kernel client)."""
        try:
            line = (await reader.readline()).decode("latin-1").split()
            while (await reader.readline()).strip():
                pass
            path = line[1] if len(line) > 1 else "/"
            if path.strip("/").isdigit():
                n = int(path.strip("/"))
                writer.write(b"HTTP/1.0 200 OK\r\nContent-Type: application/octet-stream\r\n"
                             + f"Content-Length: {n}\r\n\r\n".encode())
                block = b"tcpstack" * 8192
                while n:
                    k = min(n, len(block))
                    writer.write(block[:k])
                    n -= k
                    await writer.drain()
            else:
                body = (json.dumps(control.connection_info(writer.get_extra_info("endpoint")),
                                   indent=1) + "\n").encode()
                writer.write(b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n"
                             + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
            await writer.drain()
        finally:
            writer.close()
    return http


async def cmd_up(args: argparse.Namespace) -> int:
    """The host's overlay node: the stack, its own services (echo, discard, http) and the
    overlay's (SOCKS5, forwards, exposes: tcpstack.overlay.node), until a signal."""
    from tcpstack.overlay.config import OverlayError, merge
    from tcpstack.overlay.node import Node, membership_security
    try:
        cfg = merge(args)                   # --config FILE under the command line
        security = membership_security(cfg, args)
    except OverlayError as e:
        raise CliError(str(e), e.status) from None
    host = Host(args)
    if security is not None:
        host._security = lambda: security   # type: ignore[method-assign]
    async with host:
        opts = host.conn_options()
        servers = []
        for port, cb in ((args.echo, _echo), (args.discard, _discard),
                         (args.http, _http_handler(host))):
            if port:
                servers.append(await host.stack.start_server(cb, None, port, **opts))
        node = Node(host.stack, cfg, opts,
                    members=security.members if security is not None else None)
        try:
            said = await node.start()
        except OverlayError as e:
            raise CliError(str(e), e.status) from None
        if host.control is not None and said:   # (a node with overlay services)
            host.control.sections["overlay"] = node.snapshot
        err(f"up: {host.describe()}"
            + "".join(f"; {name} on port {p}" for name, p in
                      (("echo", args.echo), ("discard", args.discard), ("http", args.http)) if p)
            + "".join(f"; {s}" for s in said))
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            loop.add_signal_handler(sig, stop.set)
        if node.members is not None:        # a member node: SIGHUP re-reads the peers file
            loop.add_signal_handler(signal.SIGHUP, lambda: err(node.reload_members()))
        try:
            await stop.wait()
        finally:
            await node.close()
            for s in servers:
                s.close()
        err("down")
    return 0


# --- clients of a running process ----------------------------------------------------------

def _probe(path: str) -> str:
    """"live", "dead" (a socket nobody listens on: a process that was killed), "missing",
    or why it cannot be opened."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(2)
    try:
        sock.connect(path)
        return "live"
    except FileNotFoundError:
        return "missing"
    except ConnectionRefusedError:
        return "dead"
    except OSError as e:
        if e.errno == errno.ENOTSOCK or e.errno == errno.ECONNREFUSED:
            return "dead"
        return e.strerror or str(e)
    finally:
        sock.close()


def _find_control(path: str | None) -> str:
    """The control socket to talk to: --control, else the one live socket in
    control.DEFAULT_DIR (dead ones, left by killed processes, are removed)."""
    if path:
        state = _probe(path)
        if state == "live":
            return path
        if state == "missing":
            raise CliError(f"no control socket at {path}: is the tcpstack process running "
                           "(and was it given this --control)?")
        if state == "dead":
            raise CliError(f"nothing answers at {path}: the tcpstack process that made it "
                           "has exited")
        raise CliError(f"cannot open {path}: {state}")
    try:
        names = sorted(f for f in os.listdir(control.DEFAULT_DIR) if f.endswith(".sock"))
    except FileNotFoundError:
        names = []
    except OSError as e:
        raise CliError(f"cannot list {control.DEFAULT_DIR}: {e.strerror}") from None
    live = []
    for name in names:
        p = os.path.join(control.DEFAULT_DIR, name)
        state = _probe(p)
        if state == "live":
            live.append(p)
        elif state == "dead":
            try:
                os.unlink(p)                 # a stale socket of a killed process
            except OSError:
                pass
    if len(live) == 1:
        return live[0]
    if not live:
        raise CliError(f"no running tcpstack found (no live control socket in "
                       f"{control.DEFAULT_DIR}); give --control PATH if it uses another")
    raise CliError(f"{len(live)} tcpstack processes are running; pick one with --control: "
                   + ", ".join(live))


async def _request(args: argparse.Namespace, cmd: str
                   ) -> tuple[str, asyncio.StreamReader, asyncio.StreamWriter]:
    path = _find_control(args.control)
    try:
        reader, writer = await control.request(path, cmd)
    except OSError as e:
        raise CliError(f"cannot talk to {path}: {e.strerror or e}") from None
    return path, reader, writer


def render_stats(snap: dict[str, Any]) -> str:
    """An `ss -ti`-like table."""
    rows = [f"stack {', '.join(snap['addresses'])}; listening: "
            f"{', '.join(snap['listeners']) or '-'}"]
    hdr = (f"{'State':<12} {'Local':<22} {'Remote':<22} {'cwnd':>8} {'ssthresh':>10} "
           f"{'srtt ms':>8} {'rto ms':>7} {'retrans':>7} {'bytes out':>11} {'bytes in':>11}  tcpcrypt")
    rows.append(hdr)
    for c in snap["connections"]:
        ssth = c.get("ssthresh")
        ssth_s = "inf" if ssth is None or ssth >= 1 << 30 else str(ssth)
        srtt = c.get("srtt")
        crypt = f"{c['tep']} {c['aead']}" if c.get("session_id") else "plain"
        rows.append(f"{c['state']:<12} {c['local']:<22} {c['remote']:<22} {c.get('cwnd', 0):>8} "
                    f"{ssth_s:>10} {srtt * 1e3 if srtt is not None else float('nan'):>8.2f} "
                    f"{c.get('rto', 0) * 1e3:>7.0f} {c.get('retransmits', 0):>7} "
                    f"{c.get('bytes_out', 0):>11} {c.get('bytes_in', 0):>11}  {crypt}")
        rows.append(f"{'':12} fast {c.get('fast_retransmits', 0)} sack "
                    f"{c.get('sack_retransmits', 0)} timeouts {c.get('timeouts', 0)} "
                    f"{c.get('congestion_control', '')}"
                    + (f" session {c['session_id']}" if c.get("session_id") else ""))
    st = snap["stack"]
    rows.append("stack: " + " ".join(f"{k}={v}" for k, v in st.items() if v))
    return "\n".join(rows) + "\n" + (control.render_overlay(snap["overlay"]) if "overlay" in snap else "")


async def cmd_stats(args: argparse.Namespace) -> int:
    path, reader, writer = await _request(args, "stats")
    try:
        line = await reader.readline()
    except OSError as e:
        raise CliError(f"{path}: {e.strerror or e}") from None
    finally:
        writer.close()
    try:
        snap = json.loads(line)
    except ValueError:
        raise CliError(f"{path} closed without an answer (the process is exiting?)") from None
    if args.json:
        print(json.dumps(snap, indent=1))
    else:
        sys.stdout.write(render_stats(snap))
    return 0


async def cmd_trace(args: argparse.Namespace) -> int:
    path, reader, writer = await _request(args, "trace")
    n = 0
    try:
        while line := await reader.readline():
            sys.stdout.write(line.decode())
            sys.stdout.flush()
            n += 1
            if args.count and n >= args.count:
                return 0
    except BrokenPipeError:                 # `tcpstack trace | head`: the reader is done
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except ConnectionError:
        pass
    finally:
        writer.close()
    err(f"{path}: the traced process has exited")
    return 0


async def cmd_wireshark_plugin(args: argparse.Namespace) -> int:
    """Print the shipped Wireshark dissector's path; with --install, copy it where Wireshark
    loads personal Lua plugins (tcpstack/tools/wireshark)."""
    from tcpstack.tools import wireshark
    if not args.install:
        print(wireshark.plugin_path())
        return 0
    try:
        dest = wireshark.install(args.dir)
    except OSError as e:
        raise CliError(f"cannot install the Wireshark plugin: {e}") from None
    print(dest)
    err(f"installed; Wireshark and tshark load it at start-up (check: tshark -G plugins | grep {wireshark.PLUGIN_NAME})")
    return 0

DESCRIPTION = """tcpstack: a userspace TCP/IP stack on a TUN device that encrypts by default (TCP-ENO +
tcpcrypt).  `tcpstack demo` shows it working; `up`, `connect`, `listen`, `ping` bring a
stack up on a new TUN device in the current network namespace; `stats` and `trace` look
into a running one; `diagram` draws a captured connection; `decrypt` turns a capture's
tcpcrypt connections into plaintext with a key log."""


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="tcpstack", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="count", default=0)
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("demo", help="show the stack working (TUN + kernel as root, in-memory otherwise)")
    p = sub.add_parser("up", help="bring the host's overlay node up (a TUN interface, a stack, "
                       "SOCKS5/forwards/exposes) and keep serving")
    add_link_options(p, addr_required=False)
    add_overlay_options(p)
    p.add_argument("--echo", type=port_arg, metavar="PORT", help="serve echo on PORT")
    p.add_argument("--discard", type=port_arg, metavar="PORT", help="serve discard on PORT")
    p.add_argument("--http", type=port_arg, metavar="PORT", help="serve HTTP on PORT (GET /N: N bytes)")
    for name, helptext in (("connect", "netcat-like client"), ("listen", "netcat-like server")):
        p = sub.add_parser(name, help=helptext)
        if name == "connect":
            p.add_argument("host")
        p.add_argument("port", type=port_arg)
        add_link_options(p)
        p.add_argument("--require-encryption", action="store_true",
                       help="fail instead of falling back to plain TCP")
        p.add_argument("--progress", action="store_true", help="progress bar on stderr (default: when a TTY)")
        p.add_argument("--timeout", type=seconds_arg, default=30.0, help="connect timeout, seconds")
        p.add_argument("--linger", type=linger_arg, default=10.0,
                       help="at exit, wait this long for sent data to be acknowledged (seconds)")
    p = sub.add_parser("ping", help="ICMP echo from the userspace stack")
    p.add_argument("host")
    p.add_argument("-c", "--count", type=count_arg, default=3)
    p.add_argument("-i", "--interval", type=seconds_arg, default=1.0)
    add_link_options(p)
    p = sub.add_parser("stats", help="connections of a running tcpstack (like ss -ti)")
    p.add_argument("--control", metavar="PATH")
    p.add_argument("--json", action="store_true")
    p = sub.add_parser("trace", help="live per-segment trace of a running tcpstack")
    p.add_argument("--control", metavar="PATH")
    p.add_argument("-n", "--count", type=_bounded(int, 0, None, "a count (0: no limit)"), default=0,
                   help="stop after N lines")
    p = sub.add_parser("diagram", help="ladder diagram of a pcap (text, --svg)", add_help=False)
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p = sub.add_parser("wireshark-plugin", help="the Wireshark dissector for TCP-ENO and tcpcrypt: print its path, --install it")
    p.add_argument("--install", action="store_true",
                   help="copy it into Wireshark's personal Lua plugins folder (tshark -G folders)")
    p.add_argument("--dir", metavar="DIR", help="with --install: copy it into DIR instead")
    p = sub.add_parser("plot", help="time-sequence graph of a pcap; --sim: cwnd, rto... of "
                       "simulated transfers (SVG/PNG, needs matplotlib)", add_help=False)
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p = sub.add_parser("run", help="run a Python program with its TCP on a userspace stack "
                       "(tcpstack run --addr A/P -- PROG ARGS; see docs/run.md)", add_help=False)
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p = sub.add_parser("decrypt", help="decrypt a capture's tcpcrypt connections with a key log",
                       add_help=False)
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p = sub.add_parser("keygen", help="make a node identity: private key file (0600), public key on stdout")
    keygen.add_arguments(p)
    return parser


async def run_command(args: argparse.Namespace) -> int:
    """One command, with SIGTERM and SIGHUP stopping it as Ctrl-C does: everything it made
    (TUN device, control socket, capture) is removed on the way out."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    caught: list[signal.Signals] = []

    def on_signal(sig: signal.Signals) -> None:
        caught.append(sig)
        if task is not None:
            task.cancel()
    for sig in (signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        return await COMMANDS[args.cmd](args) or 0
    except asyncio.CancelledError:
        if caught:
            err(f"stopped by {caught[0].name}")
            return 128 + int(caught[0])
        raise
    finally:
        for sig in (signal.SIGTERM, signal.SIGHUP):
            loop.remove_signal_handler(sig)


COMMANDS = {"up": cmd_up, "connect": cmd_connect, "listen": cmd_listen, "ping": cmd_ping,
            "stats": cmd_stats, "trace": cmd_trace, "wireshark-plugin": cmd_wireshark_plugin,
            "keygen": keygen.cmd_keygen}
