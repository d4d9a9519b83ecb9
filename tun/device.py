"""A Linux TUN device (layer 3, IFF_TUN|IFF_NO_PI) for the userspace stack, and its asyncio adapter.

TunDevice wraps python-pytun's TunTapDevice: creation by name (or kernel-assigned), optionally
inside a network namespace (the device belongs to the namespace of the opening thread; see
tun.netns), kernel-side configuration through iproute2 (`ip addr/route/link`), a non-blocking
fd, batched reads until EAGAIN, and non-blocking writes that drop (and count) instead of ever
blocking the event loop.

Offloads (linux/if_tun.h, include/uapi/linux/virtio_net.h): with vnet_hdr=True the device is
opened with IFF_VNET_HDR, so every frame read or written starts with a struct virtio_net_hdr
(tun.vnet); enable_offloads() issues TUNSETOFFLOAD and reports which of TUN_F_CSUM/TSO4/TSO6/
TSO_ECN/USO4+USO6 the kernel accepted.  Offloads are only allowed with vnet_hdr: without the
header the kernel could hand up partial-checksum or GSO packets nobody could recognise.

AsyncTun implements tcpstack.aio.streams.Link (start(on_packets), send(packet), close()) on an
asyncio loop (default loop or uvloop) with loop.add_reader; on EAGAIN a bounded queue is
drained from add_writer, beyond the bound packets are dropped and counted.
"""
from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import itertools
import logging
import os
import struct
import subprocess
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Sequence, TypeAlias

import pytun

from tcpstack.wire.buffers import Buffer, GSOFrame, LinkPacket

from . import vnet

if TYPE_CHECKING:
    import asyncio

    from .netns import NetNS

log = logging.getLogger(__name__)

Frame: TypeAlias = Buffer | tuple[Buffer, ...]
"""One frame for the device: a buffer for write(2), or buffers for one writev(2)."""

# --- setns (RFC-free plumbing: the calling thread enters a named network namespace) ---------

NETNS_DIR = "/var/run/netns"     # where `ip netns add` puts its namespaces
CLONE_NEWNET = 0x40000000

_libc: ctypes.CDLL | None = None


def _setns(fd: int) -> None:
    if hasattr(os, "setns"):                      # Python 3.12+
        os.setns(fd, CLONE_NEWNET)
        return
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"setns: {os.strerror(e)}")


@contextlib.contextmanager
def enter_netns(name: str) -> Iterator[None]:
    """Run the body with the calling thread in network namespace `name`, then switch back."""
    orig = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        try:
            target = os.open(os.path.join(NETNS_DIR, name), os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise TunError(errno.ENOENT, f"no network namespace {name!r}") from None
        try:
            _setns(target)
        finally:
            os.close(target)
        try:
            yield
        finally:
            _setns(orig)    # if this failed the thread would stay in the test namespace: let it raise
    finally:
        os.close(orig)

__all__ = [
    "TunError", "TunDevice", "AsyncTun", "TunStats", "unique_ifname", "run_ip",
    "TUN_F_CSUM", "TUN_F_TSO4", "TUN_F_TSO6", "TUN_F_TSO_ECN", "TUN_F_UFO", "TUN_F_USO4",
    "TUN_F_USO6", "ALL_OFFLOADS", "bring_up", "async_link",
]


class TunError(OSError):
    """A TUN device or namespace operation failed (what, on which device/namespace, why)."""


# linux/if_tun.h ioctls: _IOW('T', nr, unsigned int) = 0x40045400 | nr, _IOR = 0x80045400 | nr.
TUNSETIFF = 0x400454CA
TUNGETIFF = 0x800454D2
TUNGETFEATURES = 0x800454CF
TUNSETOFFLOAD = 0x400454D0
TUNGETVNETHDRSZ = 0x800454D7
TUNSETVNETHDRSZ = 0x400454D8

IFF_TUN = pytun.IFF_TUN            # 0x0001
IFF_NO_PI = pytun.IFF_NO_PI        # 0x1000
IFF_VNET_HDR = pytun.IFF_VNET_HDR  # 0x4000

# TUNSETOFFLOAD flags (linux/if_tun.h): what this process accepts from the kernel.
TUN_F_CSUM = 0x01      # packets with a partial checksum (VIRTIO_NET_HDR_F_NEEDS_CSUM)
TUN_F_TSO4 = 0x02      # TCPv4 GSO super-packets
TUN_F_TSO6 = 0x04      # TCPv6 GSO super-packets
TUN_F_TSO_ECN = 0x08   # TSO with CWR set on the first segment
TUN_F_UFO = 0x10       # UDP fragmentation offload (deprecated; kernels reject it)
TUN_F_USO4 = 0x20      # UDP segmentation offload, IPv4 (only together with USO6)
TUN_F_USO6 = 0x40      # UDP segmentation offload, IPv6 (only together with USO4)
ALL_OFFLOADS = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN | TUN_F_USO4 | TUN_F_USO6

# Tried one group at a time, in dependency order: the kernel's tun_set_offload() returns EINVAL
# for any bit it leaves unconsumed (TSO without CSUM, USO4 without USO6, UFO, unknown bits).
_OFFLOAD_GROUPS = (TUN_F_CSUM, TUN_F_TSO4, TUN_F_TSO6, TUN_F_TSO_ECN, TUN_F_USO4 | TUN_F_USO6,
                   TUN_F_UFO)

_MAX_FRAME = 65535      # largest IP packet, also the largest GSO super-packet the kernel sends
_IFNAMSIZ = 16          # including the NUL

_name_counter = itertools.count()


def unique_ifname(prefix: str = "tct") -> str:
    """A device name unique to this process (prefix + pid + 'x' + counter), at most 15 bytes."""
    name = f"{prefix}{os.getpid()}x{next(_name_counter)}"
    if len(name) >= _IFNAMSIZ:
        raise ValueError(f"interface name {name!r} longer than {_IFNAMSIZ - 1} bytes")
    return name


def run_ip(args: Sequence[str], netns: str | None = None, check: bool = True
           ) -> subprocess.CompletedProcess[str]:
    """Run `ip [-n netns] args...`; raise TunError with ip's message when it fails."""
    cmd = ["ip"] + (["-n", netns] if netns else []) + list(args)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise TunError(errno.EIO, f"{' '.join(cmd)} failed: {proc.stderr.strip()}")
    return proc


@dataclass(slots=True)
class TunStats:
    """Counters of one device (frames as read/written, vnet header included if any)."""
    rx_packets: int = 0
    rx_bytes: int = 0
    tx_packets: int = 0
    tx_bytes: int = 0
    tx_dropped: int = 0      # EAGAIN/ENOBUFS on write(), or beyond the AsyncTun queue bound
    tx_errors: int = 0       # other write errors (EIO while down, EINVAL for a malformed frame)
    rx_errors: int = 0       # read errors, undecodable vnet frames
    tx_gso: int = 0          # GSO super-packet frames handed to the kernel (AsyncTun.send)


def _as_list(x: str | Iterable[str] | None) -> list[str]:
    if x is None:
        return []
    if isinstance(x, str):
        return [x]
    return list(x)


class TunDevice:
    """One TUN device, IFF_TUN|IFF_NO_PI (plus IFF_VNET_HDR if vnet_hdr), non-blocking.

    `name=None` (or "") lets the kernel choose (tunN).  `netns` (a tun.netns.NetNS or its name)
    creates the device inside that namespace via setns; configure() then targets it there.
    The device is not persistent, so closing the fd deletes it; close() is idempotent.
    """

    __slots__ = ("_dev", "_fd", "name", "netns", "vnet_hdr", "vnet_hdr_len", "mtu",
                 "offloads", "stats", "_read_size", "_closed", "__weakref__")

    def __init__(self, name: str | None = None, *, vnet_hdr: bool = False,
                 vnet_hdr_len: int = vnet.VNET_HDR_LEN,
                 netns: "NetNS | str | None" = None) -> None:
        self._closed = True
        if name and (len(name.encode()) >= _IFNAMSIZ or "/" in name or " " in name):
            raise ValueError(f"invalid interface name {name!r}")
        if vnet_hdr and vnet_hdr_len not in (vnet.VNET_HDR_LEN, vnet.VNET_HDR_MRG_LEN):
            raise ValueError(f"vnet_hdr_len must be 10 or 12, not {vnet_hdr_len}")
        flags = IFF_TUN | IFF_NO_PI | (IFF_VNET_HDR if vnet_hdr else 0)
        ns_name: str | None = None
        if netns is None:
            self._dev = self._open(name, flags)
        else:
            ns_name = netns if isinstance(netns, str) else netns.name
            with enter_netns(ns_name):        # the device belongs to the opener's netns
                self._dev = self._open(name, flags)
        self._closed = False
        self._fd: int = self._dev.fileno()
        dname = self._dev.name
        self.name: str = dname.decode() if isinstance(dname, bytes) else dname
        self.netns: str | None = ns_name
        self.vnet_hdr = vnet_hdr
        self.vnet_hdr_len = 0
        self.offloads = 0
        self.mtu = 1500
        self.stats = TunStats()
        try:
            fl = fcntl.fcntl(self._fd, fcntl.F_GETFL)
            fcntl.fcntl(self._fd, fcntl.F_SETFL, fl | os.O_NONBLOCK)
            os.set_inheritable(self._fd, False)
            if vnet_hdr:
                if vnet_hdr_len != vnet.VNET_HDR_LEN:
                    fcntl.ioctl(self._fd, TUNSETVNETHDRSZ, struct.pack("i", vnet_hdr_len))
                got = fcntl.ioctl(self._fd, TUNGETVNETHDRSZ, struct.pack("i", 0))
                self.vnet_hdr_len = struct.unpack("i", got)[0]
        except BaseException:
            self.close()
            raise
        self._read_size = _MAX_FRAME + self.vnet_hdr_len
        log.debug("opened TUN %s (netns %s, vnet_hdr %d)", self.name, ns_name, self.vnet_hdr_len)

    @staticmethod
    def _open(name: str | None, flags: int) -> pytun.TunTapDevice:
        try:
            return pytun.TunTapDevice(name=name or "", flags=flags)
        except pytun.Error as e:
            raise TunError(errno.EIO, f"cannot create TUN device {name or '(kernel-named)'}: {e}") from None

    # --- configuration --------------------------------------------------------------------

    def configure(self, address: str | Iterable[str] | None,
                  peer_prefix: str | Iterable[str] | None = None, mtu: int = 1500,
                  up: bool = True, *, netns: str | None = None) -> None:
        """Set the kernel side of the link: MTU, address(es), up, routes.

        address: the kernel's own address(es) with prefix length, e.g. "10.231.1.1/24" (the
        userspace stack then owns e.g. 10.231.1.2) or "fd00:231:1::1/64"; the prefix installs
        the connected route through this device.  IPv6 addresses are added `nodad` so they are
        usable at once.  peer_prefix: extra prefix(es) routed through this device, e.g. a /32
        or /128 for a stack address outside `address`'s subnet.  netns: the namespace the
        device lives in, if it was opened there by other means than the constructor's netns.
        """
        if not 68 <= mtu <= _MAX_FRAME:
            raise ValueError(f"MTU {mtu} out of range 68..65535")
        if netns is not None:
            self.netns = netns
        run_ip(["link", "set", "dev", self.name, "mtu", str(mtu)], self.netns)
        self.mtu = mtu
        for addr in _as_list(address):
            self.add_address(addr)
        if up:
            self.up()
        for prefix in _as_list(peer_prefix):
            run_ip(["-6" if ":" in prefix else "-4", "route", "replace", prefix, "dev", self.name],
                   self.netns)

    def add_address(self, address: str) -> None:
        """Add one more kernel-side address (with prefix length)."""
        run_ip(["addr", "add", address, "dev", self.name] + (["nodad"] if ":" in address else []),
               self.netns)

    def up(self) -> None:
        run_ip(["link", "set", "dev", self.name, "up"], self.netns)

    def down(self) -> None:
        run_ip(["link", "set", "dev", self.name, "down"], self.netns)

    def features(self) -> int:
        """TUNGETFEATURES: the IFF_* flags this kernel's tun driver supports."""
        return struct.unpack("I", fcntl.ioctl(self._fd, TUNGETFEATURES, struct.pack("I", 0)))[0]

    def enable_offloads(self, flags: int = ALL_OFFLOADS) -> int:
        """TUNSETOFFLOAD with as many of `flags` as the kernel accepts; returns the accepted set.

        Groups are added one at a time in dependency order (CSUM before TSO, USO4 with USO6);
        a group the kernel rejects with EINVAL is left out.  Requires vnet_hdr=True.
        enable_offloads(0) turns every offload off.
        """
        if not self.vnet_hdr:
            raise TunError(errno.EINVAL, f"{self.name}: offloads need a device opened with vnet_hdr=True")
        accepted = 0
        for group in _OFFLOAD_GROUPS:
            if flags & group != group:
                continue
            try:
                fcntl.ioctl(self._fd, TUNSETOFFLOAD, accepted | group)
            except OSError as e:
                if e.errno != errno.EINVAL:
                    raise
                log.debug("%s: kernel rejects offload 0x%x", self.name, group)
                continue
            accepted |= group
        fcntl.ioctl(self._fd, TUNSETOFFLOAD, accepted)   # leave exactly the accepted set on
        self.offloads = accepted
        return accepted

    # --- I/O ------------------------------------------------------------------------------

    def fileno(self) -> int:
        return self._fd

    @property
    def closed(self) -> bool:
        return self._closed

    def read_batch(self, max_packets: int = 64, max_bytes: int = 1 << 30) -> list[bytes]:
        """Read up to max_packets frames or about max_bytes, stopping at EAGAIN; [] if none
        is pending."""
        out: list[bytes] = []
        fd, size, read = self._fd, self._read_size, os.read
        nbytes = 0
        try:
            while len(out) < max_packets and nbytes < max_bytes:
                pkt = read(fd, size)
                if not pkt:
                    break
                out.append(pkt)
                nbytes += len(pkt)
        except BlockingIOError:
            pass
        except OSError as e:
            if not self._closed:
                self.stats.rx_errors += 1
                log.warning("%s: read failed: %s", self.name, e)
        st = self.stats
        st.rx_packets += len(out)
        st.rx_bytes += nbytes
        return out

    def try_write(self, packet: Frame) -> bool:
        """Write one frame; False (nothing counted) on EAGAIN/ENOBUFS, for callers that queue.
        A tuple of buffers is one frame written with writev(2) (a TSO frame's headers and
        its payload, not joined in Python).

        Other errors (EIO while the device is down, EINVAL for a malformed frame, EBADF after
        close) are counted in stats.tx_errors and reported as True: retrying cannot help.
        """
        try:
            if isinstance(packet, tuple):
                n = os.writev(self._fd, packet)
            else:
                n = os.write(self._fd, packet)
        except (BlockingIOError, InterruptedError):
            return False
        except OSError as e:
            if e.errno == errno.ENOBUFS:
                return False
            self.stats.tx_errors += 1
            log.debug("%s: write of %d bytes failed: %s", self.name, len(packet), e)
            return True
        st = self.stats
        st.tx_packets += 1
        st.tx_bytes += n
        return True

    def write(self, packet: bytes | bytearray | memoryview) -> bool:
        """Write one frame without blocking; on EAGAIN/ENOBUFS drop it, count it, return False."""
        if self.try_write(packet):
            return True
        self.stats.tx_dropped += 1
        return False

    def close(self) -> None:
        """Close the fd, which deletes the (non-persistent) device.  Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            self._dev.close()
        except Exception as e:     # pragma: no cover - closing a valid fd does not fail
            log.warning("closing TUN %s: %s", self.name, e)
        self._fd = -1

    def __enter__(self) -> "TunDevice":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        if not getattr(self, "_closed", True):
            self.close()

    def __repr__(self) -> str:
        return (f"<TunDevice {getattr(self, 'name', '?')} netns={getattr(self, 'netns', None)} "
                f"vnet_hdr={getattr(self, 'vnet_hdr_len', 0)} closed={self._closed}>")


class AsyncTun:
    """tcpstack.aio.streams.Link over a TunDevice on an asyncio loop (default loop or uvloop).

    start(on_packets) registers loop.add_reader(fd); each readiness callback reads one bounded
    batch (read_batch(max_batch)) and hands it to on_packets.  send() writes directly; on
    EAGAIN it queues at most max_queue packets, drained by an add_writer callback, and drops
    (stats.tx_dropped) beyond the bound.

    With a vnet_hdr device the link carries plain IP packets by default: outgoing packets get
    a zero virtio_net_hdr, incoming ones lose theirs, a partial checksum is completed
    (VIRTIO_NET_HDR_F_NEEDS_CSUM) and TCP/UDP GSO super-packets are split (tun.vnet).
    raw_vnet=True passes frames through unchanged, header included.
    """

    def __init__(self, device: TunDevice, loop: "asyncio.AbstractEventLoop | None" = None, *,
                 max_batch: int = 128, max_queue: int = 4096, raw_vnet: bool = False,
                 close_device: bool = True, gro: bool = False,
                 max_batch_bytes: int = 512 * 1024) -> None:
        import asyncio
        self.device = device
        self.loop = loop or asyncio.get_running_loop()
        self.max_batch = max_batch
        # A batch is processed as one instant: its ACKs leave together at the end, and
        # superseded pure ACKs are dropped (the stack core's ACK coalescing,
        # tcpstack/host/acks.py).  128 GRO frames would be 8 MB between ACKs, stalling the
        # sender; a byte bound keeps the ACK clock (Linux GRO stops at 64 KB per packet for
        # the same reason).
        self.max_batch_bytes = max_batch_bytes
        self.max_queue = max_queue
        self.close_device = close_device
        # on_packets(packets), or with gro on_packets(packets, checksum_ok) (the Link protocol
        # of tcpstack.aio.streams): one callable, two arities, so typed loosely.
        self._on_packets: Callable[..., None] | None = None
        self._queue: deque[Frame] = deque()
        self._writing = False
        self._reading = False
        self._closed = False
        self._hlen = device.vnet_hdr_len
        self._strip = device.vnet_hdr and not raw_vnet
        self._hdr_zero = bytes(self._hlen) if self._strip else b""
        # gro: keep the kernel's TCP GSO super-packets whole and pass, beside each packet,
        # whether its checksum is vouched for (NEEDS_CSUM / DATA_VALID: the kernel made or
        # checked it), so the stack handles one 64 KB segment instead of ~45 and skips the
        # checksum.  Needs a receiver that takes on_packets(packets, checksum_ok).
        self._gro = gro and self._strip

    @property
    def tso_max_size(self) -> int:
        """Largest TCP payload per written GSO frame (tcp.build_gso_frame), 0 when this link
        does not take them: only a GRO (offload) link on a vnet device with TSO offloads on."""
        if self._gro and self.device.offloads & (TUN_F_TSO4 | TUN_F_TSO6):
            return 65535 - 20 - 60          # IPv4 total length bound minus IP + max TCP header
        return 0

    @property
    def stats(self) -> TunStats:
        return self.device.stats

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def dropped(self) -> int:
        return self.device.stats.tx_dropped

    @property
    def queued(self) -> int:
        return len(self._queue)

    def start(self, on_packets: Callable[..., None]) -> None:
        if self._closed:
            raise TunError(errno.EBADF, f"{self.device.name}: link is closed")
        self._on_packets = on_packets
        self.resume_reading()

    def pause_reading(self) -> None:
        if self._reading:
            self.loop.remove_reader(self.device.fileno())
            self._reading = False

    def resume_reading(self) -> None:
        if not self._reading and not self._closed and self._on_packets is not None:
            self.loop.add_reader(self.device.fileno(), self._on_readable)
            self._reading = True

    def _on_readable(self) -> None:
        batch = self.device.read_batch(self.max_batch, self.max_batch_bytes)
        if not batch or self._on_packets is None:
            return
        if self._gro:
            packets, trusted = self._from_vnet_gro(batch)
            if packets:
                self._on_packets(packets, trusted)
            return
        if self._strip:
            batch = self._from_vnet(batch)
            if not batch:
                return
        self._on_packets(batch)

    def _from_vnet_gro(self, frames: list[bytes]) -> tuple[list[bytes | memoryview], list[bool]]:
        packets: list[bytes | memoryview] = []
        trusted: list[bool] = []
        hlen = self._hlen
        for f in frames:
            try:
                hdr, pkt = vnet.parse(f, hlen)
                gso = hdr.gso_type & ~vnet.VIRTIO_NET_HDR_GSO_ECN
                if gso in (vnet.VIRTIO_NET_HDR_GSO_TCPV4, vnet.VIRTIO_NET_HDR_GSO_TCPV6) or (
                        gso == vnet.VIRTIO_NET_HDR_GSO_NONE and hdr.flags & (
                            vnet.VIRTIO_NET_HDR_F_NEEDS_CSUM | vnet.VIRTIO_NET_HDR_F_DATA_VALID)):
                    packets.append(pkt)
                    trusted.append(True)
                else:
                    for p in vnet.to_packets(f, hlen):
                        packets.append(p)
                        trusted.append(False)
            except ValueError as e:
                self.device.stats.rx_errors += 1
                log.debug("%s: dropping bad vnet frame: %s", self.device.name, e)
        return packets, trusted

    def _from_vnet(self, frames: list[bytes]) -> list[bytes]:
        out: list[bytes] = []
        hlen = self._hlen
        for f in frames:
            try:
                out.extend(vnet.to_packets(f, hlen))
            except ValueError as e:
                self.device.stats.rx_errors += 1
                log.debug("%s: dropping bad vnet frame: %s", self.device.name, e)
        return out

    def send(self, packet: LinkPacket) -> None:
        if self._closed:
            return
        frame: Frame
        if type(packet) is GSOFrame:
            # tcp.build_gso: headers (with their own 10-byte virtio_net_hdr) and the payload,
            # written together by writev(2): the payload is never copied in Python.
            frame = packet.buffers()
            if self._hlen != vnet.VNET_HDR_LEN:
                head = packet.head
                frame = (head[:vnet.VNET_HDR_LEN] + bytes(self._hlen - vnet.VNET_HDR_LEN)
                         + head[vnet.VNET_HDR_LEN:], *frame[1:])
            self.device.stats.tx_gso += 1
        elif self._strip:
            if packet[0] == vnet.VIRTIO_NET_HDR_F_NEEDS_CSUM:
                # A GSO frame from tcp.build_gso_frame: its own 10-byte virtio_net_hdr
                # (flags NEEDS_CSUM = 1 where a plain packet has its IP version nibble).
                frame = packet
                if self._hlen != vnet.VNET_HDR_LEN:
                    frame = (packet[:vnet.VNET_HDR_LEN] + bytes(self._hlen - vnet.VNET_HDR_LEN)
                             + packet[vnet.VNET_HDR_LEN:])
                self.device.stats.tx_gso += 1
            else:
                frame = self._hdr_zero + packet
        else:
            frame = packet
        q = self._queue
        if not q and self.device.try_write(frame):
            return
        if len(q) >= self.max_queue:
            self.device.stats.tx_dropped += 1
            return
        q.append(frame)
        if not self._writing:
            self.loop.add_writer(self.device.fileno(), self._on_writable)
            self._writing = True

    def _on_writable(self) -> None:
        q, dev = self._queue, self.device
        while q:
            if not dev.try_write(q[0]):
                return
            q.popleft()
        self.loop.remove_writer(dev.fileno())
        self._writing = False

    def close(self) -> None:
        """Stop reading/writing (queued packets are dropped) and, by default, delete the device."""
        if self._closed:
            return
        self._closed = True
        fd = self.device.fileno()
        if fd >= 0 and not self.loop.is_closed():
            if self._reading:
                self.loop.remove_reader(fd)
            if self._writing:
                self.loop.remove_writer(fd)
        self._reading = self._writing = False
        self.device.stats.tx_dropped += len(self._queue)
        self._queue.clear()
        if self.close_device:
            self.device.close()


# --- the one bring-up used by the command line and by TCPCRYPT_TUN -------------------------

# What a stack on a TUN device asks of the kernel: checksum offload and TSO both ways, so
# 64 KB super-segments cross the device instead of ~45 MTU-sized packets each.
STACK_OFFLOADS = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6


def bring_up(name: str | None, address: str | Iterable[str] | None,
             routes: str | Iterable[str] | None = None, mtu: int = 1500, *,
             offload: bool = True) -> TunDevice:
    """A configured TUN device for a userspace stack, fast by default.

    With offload=True (the default) the device is opened with IFF_VNET_HDR and TUNSETOFFLOAD
    asks for checksum + TSO4/TSO6; if the kernel refuses either step (an old or restricted
    tun driver), the device is reopened without them and one log line (WARNING) says why.
    offload=False opens a plain device.  address/routes/mtu as TunDevice.configure (the
    kernel side's address with prefix length).  The device's `offloads` tells what was
    accepted; async_link() makes the matching AsyncTun.
    """
    dev: TunDevice | None = None
    why = ""
    if offload:
        try:
            dev = TunDevice(name, vnet_hdr=True)
        except TunError as e:
            why = f"IFF_VNET_HDR refused ({e.strerror})"
        else:
            try:
                got = dev.enable_offloads(STACK_OFFLOADS)
            except OSError as e:
                got, why = 0, f"TUNSETOFFLOAD failed ({e.strerror or e})"
            if not got & TUN_F_CSUM:
                why = why or "the kernel accepted no checksum offload"
                dev.close()
                dev = None
    if dev is None:
        dev = TunDevice(name)          # (raises as it would have without offloads)
        if why:
            log.warning("TUN %s: offloads off: %s", dev.name, why)
    try:
        dev.configure(address, routes, mtu)
    except BaseException:
        dev.close()
        raise
    return dev


def async_link(dev: TunDevice, loop: "asyncio.AbstractEventLoop | None" = None,
               **kw: Any) -> AsyncTun:
    """The AsyncTun for a device from bring_up(): GRO (super-packets passed up whole) when
    the device has offloads."""
    return AsyncTun(dev, loop, gro=bool(dev.offloads), **kw)
