"""TUN device tests: real devices in private namespaces (marked `tun`), talking to the kernel
with packets built here by hand (struct, independent of tcpstack's wire module), plus plain
unit tests of the virtio_net_hdr codec, checksum completion, GSO splitting and AsyncTun's
bounded write queue."""
from __future__ import annotations

import asyncio
import errno
import ipaddress
import os
import select
import socket
import struct
import subprocess
import time
from typing import Callable

import pytest

from tun import vnet
from tun.device import (ALL_OFFLOADS, TUN_F_CSUM, TUN_F_TSO4, TUN_F_TSO6, TUN_F_USO4,
                        TUN_F_USO6, AsyncTun, TunDevice, TunError, TunStats)
from tun.netns import NetNS, TunInNamespace

# --- packets by hand ------------------------------------------------------------------------


def ref_checksum(data: bytes, initial: int = 0) -> int:
    """RFC 1071 the slow obvious way (a reference for the fast code under test)."""
    if len(data) % 2:
        data += b"\0"
    s = initial + sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def ip4(src: str, dst: str, proto: int, payload: bytes, ident: int = 0x4242, ttl: int = 64) -> bytes:
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), ident, 0x4000, ttl, proto, 0,
                      socket.inet_aton(src), socket.inet_aton(dst))
    return hdr[:10] + struct.pack("!H", ref_checksum(hdr)) + hdr[12:] + payload


def ip6(src: str, dst: str, nh: int, payload: bytes, hlim: int = 64) -> bytes:
    return (struct.pack("!IHBB", 6 << 28, len(payload), nh, hlim)
            + socket.inet_pton(socket.AF_INET6, src) + socket.inet_pton(socket.AF_INET6, dst) + payload)


def pseudo4(src: str, dst: str, proto: int, length: int) -> bytes:
    return socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!BBH", 0, proto, length)


def pseudo6(src: str, dst: str, nh: int, length: int) -> bytes:
    return (socket.inet_pton(socket.AF_INET6, src) + socket.inet_pton(socket.AF_INET6, dst)
            + struct.pack("!IxxxB", length, nh))


def icmp4_echo(src: str, dst: str, ident: int, seq: int, data: bytes) -> bytes:
    msg = struct.pack("!BBHHH", 8, 0, 0, ident, seq) + data
    msg = msg[:2] + struct.pack("!H", ref_checksum(msg)) + msg[4:]
    return ip4(src, dst, 1, msg)


def icmp6_echo(src: str, dst: str, ident: int, seq: int, data: bytes) -> bytes:
    msg = struct.pack("!BBHHH", 128, 0, 0, ident, seq) + data
    c = ref_checksum(pseudo6(src, dst, 58, len(msg)) + msg)
    return ip6(src, dst, 58, msg[:2] + struct.pack("!H", c) + msg[4:])


def tcp4(src: str, dst: str, sport: int, dport: int, seq: int, ack: int, flags: int,
         window: int = 65535, options: bytes = b"", payload: bytes = b"") -> bytes:
    off = (20 + len(options)) // 4
    seg = struct.pack("!HHIIBBHHH", sport, dport, seq, ack, off << 4, flags, window, 0, 0) + options + payload
    c = ref_checksum(pseudo4(src, dst, 6, len(seg)) + seg)
    return ip4(src, dst, 6, seg[:16] + struct.pack("!H", c) + seg[18:])


def l4_checksum_ok(pkt: bytes) -> bool:
    """Does the IPv4/IPv6 packet's TCP/UDP/ICMPv6 checksum verify (and the IPv4 header's)?"""
    if pkt[0] >> 4 == 4:
        ihl = (pkt[0] & 15) * 4
        if ref_checksum(pkt[:ihl]) != 0:
            return False
        proto, l4 = pkt[9], pkt[ihl:struct.unpack_from("!H", pkt, 2)[0]]
        ph = b"" if proto == 1 else pseudo4(socket.inet_ntoa(pkt[12:16]), socket.inet_ntoa(pkt[16:20]),
                                            proto, len(l4))
    else:
        proto, l4 = pkt[6], pkt[40:40 + struct.unpack_from("!H", pkt, 4)[0]]
        ph = pseudo6(str(ipaddress.IPv6Address(pkt[8:24])), str(ipaddress.IPv6Address(pkt[24:40])),
                     proto, len(l4))
    return ref_checksum(ph + l4) == 0


def read_until(dev: TunDevice, pred: Callable[[bytes], bool], timeout: float = 3.0,
               hdr_len: int = 0) -> bytes:
    """The first frame from dev whose packet (after hdr_len bytes) satisfies pred."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("expected packet did not arrive")
        select.select([dev.fileno()], [], [], left)
        for f in dev.read_batch():
            if pred(f[hdr_len:]):
                return f


def is_echo_reply4(ident: int) -> Callable[[bytes], bool]:
    return lambda p: (len(p) >= 28 and p[0] >> 4 == 4 and p[9] == 1 and p[20] == 0
                      and struct.unpack_from("!H", p, 24)[0] == ident)


def is_echo_reply6(ident: int) -> Callable[[bytes], bool]:
    return lambda p: (len(p) >= 48 and p[0] >> 4 == 6 and p[6] == 58 and p[40] == 129
                      and struct.unpack_from("!H", p, 44)[0] == ident)


def link_names(ns: str | None) -> str:
    cmd = ["ip"] + (["-n", ns] if ns else []) + ["-o", "link", "show"]
    return subprocess.run(cmd, capture_output=True, text=True).stdout


# --- real devices ---------------------------------------------------------------------------

tun = pytest.mark.tun


@tun
def test_icmp_echo_ipv4_roundtrip(kernel_tun):
    k = kernel_tun
    data = os.urandom(56)
    assert k.dev.write(icmp4_echo(k.stack4, k.kernel4, 0x7A01, 1, data))
    reply = read_until(k.dev, is_echo_reply4(0x7A01))
    assert reply[12:16] == socket.inet_aton(k.kernel4) and reply[16:20] == socket.inet_aton(k.stack4)
    assert struct.unpack_from("!HH", reply, 24) == (0x7A01, 1)
    assert reply[28:] == data
    assert l4_checksum_ok(reply) and ref_checksum(reply[20:]) == 0
    st = k.dev.stats
    assert st.tx_packets == 1 and st.tx_bytes == 84 and st.rx_packets >= 1 and st.tx_dropped == 0


@tun
def test_read_batch_stops_at_its_byte_bound(kernel_tun):
    """AsyncTun bounds a batch by bytes as well as packets (a batch's ACKs leave together):
    read_batch stops at the first frame that reaches max_bytes, and loses nothing."""
    k = kernel_tun
    for seq in range(10):
        assert k.dev.write(icmp4_echo(k.stack4, k.kernel4, 0x7A03, seq, bytes(56)))
    time.sleep(0.2)                                   # the kernel's replies are queued
    first = k.dev.read_batch(64, max_bytes=200)
    assert sum(map(len, first[:-1])) < 200 <= sum(map(len, first))
    frames = first + k.dev.read_batch(64)
    replies = [f for f in frames if is_echo_reply4(0x7A03)(f)]
    assert sorted(struct.unpack_from("!H", f, 26)[0] for f in replies) == list(range(10))


@tun
def test_icmp_echo_ipv6_roundtrip(kernel_tun):
    k = kernel_tun
    data = os.urandom(40)
    assert k.dev.write(icmp6_echo(k.stack6, k.kernel6, 0x7A02, 9, data))
    reply = read_until(k.dev, is_echo_reply6(0x7A02))
    assert reply[8:24] == socket.inet_pton(socket.AF_INET6, k.kernel6)
    assert reply[24:40] == socket.inet_pton(socket.AF_INET6, k.stack6)
    assert struct.unpack_from("!HH", reply, 44) == (0x7A02, 9) and reply[48:] == data
    assert l4_checksum_ok(reply)


@tun
def test_device_configuration_visible_in_namespace(kernel_tun):
    k = kernel_tun
    out = k.ns.ip("-o", "addr", "show", "dev", k.dev.name).stdout
    assert f"{k.kernel4}/24" in out and f"{k.kernel6}/64" in out
    link = k.ns.ip("-o", "link", "show", "dev", k.dev.name).stdout
    assert "mtu 1500" in link and ",UP" in link
    assert k.dev.name not in link_names(None)          # it lives in the namespace only
    assert k.dev.read_batch(max_packets=0) == []


@tun
def test_configure_mtu_and_peer_prefix(netns):
    with TunInNamespace(netns, "10.231.251.1/24", peer_prefix=["10.232.0.0/16", "fd00:232::/64"],
                        mtu=1280) as dev:
        assert dev.mtu == 1280
        assert "mtu 1280" in netns.ip("link", "show", "dev", dev.name).stdout
        assert f"10.232.0.0/16 dev {dev.name}" in netns.ip("-4", "route").stdout
        assert f"fd00:232::/64 dev {dev.name}" in netns.ip("-6", "route").stdout
        with pytest.raises(ValueError):
            dev.configure(None, mtu=40)


@tun
def test_kernel_named_device_and_close_deletes(netns):
    dev = TunDevice(None, netns=netns)
    assert dev.name.startswith("tun") and dev.netns == netns.name
    assert dev.name in link_names(netns.name)
    dev.close()
    dev.close()                                        # idempotent
    assert dev.closed and dev.fileno() == -1
    assert dev.name not in link_names(netns.name)


@tun
def test_write_errors_never_raise(netns):
    with TunInNamespace(netns, "10.231.252.1/24", up=False) as dev:
        ok = dev.write(icmp4_echo("10.231.252.2", "10.231.252.1", 1, 1, b"x"))  # down: EIO
        assert ok and dev.stats.tx_errors == 1 and dev.stats.tx_packets == 0


@tun
def test_device_and_namespace_gone_when_body_raises():
    names = {}
    with pytest.raises(RuntimeError, match="boom"):
        with NetNS() as ns, TunInNamespace(ns, "10.231.253.1/24") as dev:
            names.update(ns=ns.name, dev=dev.name)
            assert dev.name in link_names(ns.name)
            raise RuntimeError("boom")
    assert names["ns"] not in subprocess.run(["ip", "netns", "list"], capture_output=True,
                                             text=True).stdout
    assert not os.path.exists(f"/var/run/netns/{names['ns']}")
    assert names["dev"] not in link_names(None)


async def _async_echo(k, loop: asyncio.AbstractEventLoop) -> list[bytes]:
    got: list[bytes] = []
    done = loop.create_future()

    def on_packets(pkts: list[bytes]) -> None:
        assert isinstance(pkts, list)
        got.extend(pkts)
        if sum(is_echo_reply4(0x7A03)(p) for p in got) >= 3 and not done.done():
            done.set_result(None)

    link = AsyncTun(k.dev, loop, close_device=False)
    link.start(on_packets)
    for seq in range(3):
        link.send(icmp4_echo(k.stack4, k.kernel4, 0x7A03, seq, b"async"))
    try:
        await asyncio.wait_for(done, 3)
    finally:
        link.close()
    assert link.closed and not k.dev.closed           # close_device=False keeps the device
    return [p for p in got if is_echo_reply4(0x7A03)(p)]


@tun
@pytest.mark.parametrize("loop_kind", ["asyncio", "uvloop"])
def test_async_tun_on_loop(kernel_tun, loop_kind):
    if loop_kind == "uvloop":
        uvloop = pytest.importorskip("uvloop")
        loop = uvloop.new_event_loop()
    else:
        loop = asyncio.new_event_loop()
    try:
        replies = loop.run_until_complete(_async_echo(kernel_tun, loop))
    finally:
        loop.close()
    assert sorted(struct.unpack_from("!H", r, 26)[0] for r in replies) == [0, 1, 2]
    assert all(r[28:] == b"async" and l4_checksum_ok(r) for r in replies)


@tun
async def test_async_tun_default_loop_closes_device(kernel_tun):
    loop = asyncio.get_running_loop()
    link = AsyncTun(kernel_tun.dev)
    got = loop.create_future()
    link.start(lambda ps: [got.set_result(p) for p in ps if is_echo_reply4(0x7A04)(p) and not got.done()])
    link.send(icmp4_echo(kernel_tun.stack4, kernel_tun.kernel4, 0x7A04, 5, b"default"))
    reply = await asyncio.wait_for(got, 3)
    assert reply.endswith(b"default")
    link.close()
    link.close()
    link.send(b"ignored after close")
    assert kernel_tun.dev.closed
    assert kernel_tun.dev.name not in link_names(kernel_tun.ns.name)


@tun
@pytest.mark.parametrize("hdr_len", [10, 12])
def test_vnet_header_roundtrip(netns, hdr_len):
    with TunInNamespace(netns, "10.231.254.1/24", vnet_hdr=True) as dev:
        assert dev.vnet_hdr_len == 10                  # default size
    with TunDevice(None, vnet_hdr=True, vnet_hdr_len=hdr_len, netns=netns) as dev:
        dev.configure("10.231.254.1/24")
        assert dev.vnet_hdr_len == hdr_len
        req = icmp4_echo("10.231.254.2", "10.231.254.1", 0x7A05, 3, b"vnet" * 10)
        assert dev.write(vnet.pack(vnet.ZERO_HDR, hdr_len) + req)
        frame = read_until(dev, is_echo_reply4(0x7A05), hdr_len=hdr_len)
        hdr, pkt = vnet.parse(frame, hdr_len)
        assert hdr.gso_type == vnet.VIRTIO_NET_HDR_GSO_NONE and not hdr.is_gso
        assert not hdr.needs_csum                      # no TUN_F_CSUM: the kernel completed it
        pkt = bytes(pkt)
        assert struct.unpack_from("!HH", pkt, 24) == (0x7A05, 3) and pkt[28:] == b"vnet" * 10
        assert l4_checksum_ok(pkt)


@tun
def test_offload_flags_accepted(netns):
    with TunDevice(None, vnet_hdr=True, netns=netns) as dev:
        with pytest.raises(TunError):
            TunDevice(None, netns=netns).enable_offloads(TUN_F_CSUM)
        assert dev.enable_offloads(TUN_F_TSO4) == 0          # TSO needs CSUM: EINVAL, dropped
        acc = dev.enable_offloads(ALL_OFFLOADS)
        assert acc & (TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6) == TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6
        assert acc & ~ALL_OFFLOADS == 0 and dev.offloads == acc
        uso = acc & (TUN_F_USO4 | TUN_F_USO6)
        assert uso in (0, TUN_F_USO4 | TUN_F_USO6)           # both or neither
        assert dev.enable_offloads(TUN_F_CSUM | TUN_F_USO4) == TUN_F_CSUM   # USO4 alone: refused
        assert dev.enable_offloads(0) == 0
        assert dev.features() & 0x4000                        # IFF_VNET_HDR supported


@tun
def test_plain_device_refuses_offloads(netns):
    with TunDevice(None, netns=netns) as dev:
        with pytest.raises(TunError) as ei:
            dev.enable_offloads()
        assert ei.value.errno == errno.EINVAL


@tun
def test_udp_gso_and_partial_checksum_from_kernel(netns):
    """With CSUM (+USO if the kernel has it) a kernel UDP sender using UDP_SEGMENT hands up one
    GSO_UDP_L4 super-packet with a partial checksum; to_packets() gives valid datagrams."""
    with TunDevice(None, vnet_hdr=True, netns=netns) as dev:
        acc = dev.enable_offloads(ALL_OFFLOADS)
        dev.configure("10.231.249.1/24")
        with netns.enter():
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with s:
            payload = bytes(range(256)) * 15 + b"tail"       # 3844 bytes -> 4 segments of 1000
            s.setsockopt(socket.SOL_UDP, 103, 1000)          # UDP_SEGMENT
            s.sendto(payload, ("10.231.249.2", 9999))
            single = b"single datagram"
            s.sendto(single, ("10.231.249.2", 9998))         # not GSO: partial checksum only
        frames, deadline = [], time.monotonic() + 3
        datagrams: list[bytes] = []
        while time.monotonic() < deadline and sum(len(d) - 28 for d in datagrams) < len(payload) + len(single):
            select.select([dev.fileno()], [], [], 0.2)
            for f in dev.read_batch():
                p = f[10:]
                if p[0] >> 4 == 4 and p[9] == 17:
                    frames.append(f)
                    datagrams.extend(vnet.to_packets(f))
        hdrs = [vnet.parse(f)[0] for f in frames]
        if acc & TUN_F_USO4:
            gso = [h for h in hdrs if h.gso_type == vnet.VIRTIO_NET_HDR_GSO_UDP_L4]
            assert len(gso) == 1 and gso[0].gso_size == 1000 and gso[0].needs_csum
        assert any(h.needs_csum and not h.is_gso for h in hdrs)
        assert len(datagrams) == 5
        for d in datagrams:
            assert l4_checksum_ok(d), d[:40].hex()
        to9999 = [d for d in datagrams if struct.unpack_from("!H", d, 22)[0] == 9999]
        assert [len(d) - 28 for d in to9999] == [1000, 1000, 1000, 844]
        assert b"".join(d[28:] for d in to9999) == payload
        assert {struct.unpack_from("!H", d, 4)[0] for d in to9999}.__len__() == 4   # distinct IDs


@tun
def test_tcp_tso_super_packet_from_kernel(netns):
    """A kernel TCP sender on a TSO-enabled TUN hands up TCPV4 GSO super-packets; gso_split
    yields MSS-sized segments with contiguous sequence numbers and valid checksums."""
    k4, s4 = "10.231.248.1", "10.231.248.2"
    with TunDevice(None, vnet_hdr=True, netns=netns) as dev:
        assert dev.enable_offloads(TUN_F_CSUM | TUN_F_TSO4) == TUN_F_CSUM | TUN_F_TSO4
        dev.configure(f"{k4}/24")
        with netns.enter():
            lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        with lsock:
            lsock.bind((k4, 0))
            lsock.listen(1)
            port = lsock.getsockname()[1]
            z = vnet.pack()
            mss_opt = struct.pack("!BBH", 2, 4, 1000)
            assert dev.write(z + tcp4(s4, k4, 40000, port, 1000, 0, 0x02, options=mss_opt))
            synack = vnet.to_packets(read_until(dev, lambda p: p[9] == 6 and p[33] == 0x12,
                                                hdr_len=10))[0]
            assert l4_checksum_ok(synack)
            isn = struct.unpack_from("!I", synack, 24)[0]
            assert dev.write(z + tcp4(s4, k4, 40000, port, 1001, isn + 1, 0x10))
            lsock.settimeout(3)
            conn, _ = lsock.accept()
            with conn:
                data = os.urandom(8000)
                conn.sendall(data)
                frames: list[bytes] = []
                got = 0
                deadline = time.monotonic() + 3
                while got < len(data) and time.monotonic() < deadline:
                    select.select([dev.fileno()], [], [], 0.2)
                    for f in dev.read_batch():
                        p = f[10:]
                        if p[9] == 6 and len(p) > 40:
                            frames.append(f)
                            got += len(p) - 40
        hdrs = [vnet.parse(f)[0] for f in frames]
        assert any(h.gso_type == vnet.VIRTIO_NET_HDR_GSO_TCPV4 and h.gso_size == 1000 for h in hdrs)
        segs = [s for f in frames for s in vnet.to_packets(f)]
        seqs = [struct.unpack_from("!I", s, 24)[0] for s in segs]
        assert seqs == [(isn + 1 + 1000 * i) & 0xFFFFFFFF for i in range(8)]
        assert all(len(s) - 40 == 1000 and l4_checksum_ok(s) for s in segs)
        assert b"".join(s[40:] for s in segs) == data
        assert len({struct.unpack_from("!H", s, 4)[0] for s in segs}) == 8


# --- unit tests, no device ------------------------------------------------------------------

def test_vnet_pack_parse():
    h = vnet.VirtioNetHdr(1, 4, 60, 1440, 40, 16, 1)
    assert len(vnet.pack(h)) == 10 and len(vnet.pack(h, 12)) == 12
    frame = vnet.pack(h, 12) + b"IP"
    got, rest = vnet.parse(frame, 12)
    assert got == h and bytes(rest) == b"IP" and got.needs_csum and got.is_gso
    got10, _ = vnet.parse(vnet.pack(h) + b"x")
    assert got10 == h._replace(num_buffers=0)
    assert struct.unpack("=BBHHHH", vnet.pack(h)) == (1, 4, 60, 1440, 40, 16)
    with pytest.raises(ValueError):
        vnet.parse(b"short")
    with pytest.raises(ValueError):
        vnet.pack(h, 11)
    assert not vnet.VirtioNetHdr(gso_type=vnet.VIRTIO_NET_HDR_GSO_ECN).is_gso


@pytest.mark.parametrize("data", [b"", b"\x01", b"\xff\xff", b"\x00\x01\xf2\x03\xf4\xf5\xf6\xf7",
                                  os.urandom(1), os.urandom(1501), b"\xff" * 64, bytes(70)])
def test_inet_checksum_matches_reference(data):
    assert vnet.inet_checksum(data) == ref_checksum(data)
    assert vnet.inet_checksum(data, 0x1234) == ref_checksum(data, 0x1234)


def _partial(pkt: bytes, csum_at: int, pseudo: bytes) -> bytearray:
    """What the kernel hands up with NEEDS_CSUM: the L4 checksum field holds the folded
    (non-inverted) pseudo-header sum."""
    b = bytearray(pkt)
    b[csum_at:csum_at + 2] = struct.pack("!H", ~ref_checksum(pseudo) & 0xFFFF)
    return b


def test_complete_checksum_tcp_and_udp():
    seg = tcp4("10.0.0.1", "10.0.0.2", 1, 2, 3, 4, 0x18, payload=b"hello world")
    b = _partial(seg, 36, pseudo4("10.0.0.1", "10.0.0.2", 6, len(seg) - 20))
    vnet.complete_checksum(b, 20, 16)
    assert bytes(b) == seg
    frame = vnet.pack(vnet.VirtioNetHdr(flags=vnet.VIRTIO_NET_HDR_F_NEEDS_CSUM, csum_start=20,
                                        csum_offset=16)) + bytes(_partial(seg, 36, pseudo4(
                                            "10.0.0.1", "10.0.0.2", 6, len(seg) - 20)))
    assert vnet.to_packets(frame) == [seg]
    with pytest.raises(ValueError):
        vnet.complete_checksum(bytearray(30), 20, 16)


def _tcp_super(n_payload: int, flags: int = 0x18 | 0x01 | 0x80) -> bytes:
    payload = bytes(i & 0xFF for i in range(n_payload))
    return tcp4("10.0.0.1", "10.0.0.2", 5000, 80, 0xFFFFFF00, 77, flags,
                options=b"\x01\x01\x08\x0a" + struct.pack("!II", 1, 2), payload=payload)


def test_gso_split_tcp4_fields():
    sup = _tcp_super(2500)
    hdr = vnet.VirtioNetHdr(vnet.VIRTIO_NET_HDR_F_NEEDS_CSUM,
                            vnet.VIRTIO_NET_HDR_GSO_TCPV4 | vnet.VIRTIO_NET_HDR_GSO_ECN, 52, 1000, 20, 16)
    segs = vnet.gso_split(sup, hdr)
    assert [len(s) - 52 for s in segs] == [1000, 1000, 500]
    for i, s in enumerate(segs):
        assert l4_checksum_ok(s)
        assert struct.unpack_from("!H", s, 2)[0] == len(s)
        assert struct.unpack_from("!H", s, 4)[0] == 0x4242 + i
        assert struct.unpack_from("!I", s, 24)[0] == (0xFFFFFF00 + 1000 * i) & 0xFFFFFFFF  # wraps
        assert s[32] == sup[32] and s[34:36] == sup[34:36] and s[38:52] == sup[38:52]  # doff, window, urg, options
    assert [s[33] for s in segs] == [0x80 | 0x10, 0x10, 0x10 | 0x08 | 0x01]  # CWR first, PSH/FIN last
    assert b"".join(s[52:] for s in segs) == sup[52:]


def test_gso_split_tcp6_and_udp6():
    src, dst = "fd00:231::1", "fd00:231::2"
    payload = os.urandom(3000)
    seg = struct.pack("!HHIIBBHHH", 1, 2, 10, 20, 5 << 4, 0x10, 100, 0, 0) + payload
    c = ref_checksum(pseudo6(src, dst, 6, len(seg)) + seg)
    sup = ip6(src, dst, 6, seg[:16] + struct.pack("!H", c) + seg[18:])
    out = vnet.gso_split(sup, vnet.VirtioNetHdr(0, vnet.VIRTIO_NET_HDR_GSO_TCPV6, 60, 1400, 40, 16))
    assert [len(s) - 60 for s in out] == [1400, 1400, 200]
    assert all(l4_checksum_ok(s) and struct.unpack_from("!H", s, 4)[0] == len(s) - 40 for s in out)
    assert [struct.unpack_from("!I", s, 44)[0] for s in out] == [10, 1410, 2810]
    udp = struct.pack("!HHHH", 7, 8, 8 + 2500, 0) + payload[:2500]
    sup = ip6(src, dst, 17, udp)
    out = vnet.gso_split(sup, vnet.VirtioNetHdr(1, vnet.VIRTIO_NET_HDR_GSO_UDP_L4, 48, 1200, 40, 6))
    assert [struct.unpack_from("!H", s, 44)[0] for s in out] == [1208, 1208, 108]
    assert all(l4_checksum_ok(s) for s in out)
    assert b"".join(s[48:] for s in out) == payload[:2500]


def test_gso_split_rejects_garbage():
    with pytest.raises(ValueError):
        vnet.gso_split(b"\x45" + bytes(10), vnet.VirtioNetHdr(0, 1, 40, 1000))
    with pytest.raises(ValueError):
        vnet.gso_split(_tcp_super(100), vnet.VirtioNetHdr(0, 1, 40, 0))          # gso_size 0
    with pytest.raises(ValueError):
        vnet.gso_split(_tcp_super(100), vnet.VirtioNetHdr(0, vnet.VIRTIO_NET_HDR_GSO_UDP, 40, 100))
    with pytest.raises(ValueError):
        vnet.gso_split(_tcp_super(100), vnet.VirtioNetHdr(0, vnet.VIRTIO_NET_HDR_GSO_UDP_L4, 40, 100))


class _FakeDevice:
    """Stands in for TunDevice to drive AsyncTun's EAGAIN path: try_write fails while
    `blocked`; fileno is a socket, so add_writer fires at once."""

    def __init__(self) -> None:
        self.a, self.b = socket.socketpair()
        self.blocked = True
        self.written: list[bytes] = []
        self.stats = TunStats()
        self.vnet_hdr, self.vnet_hdr_len, self.closed, self.name = False, 0, False, "fake0"

    def fileno(self) -> int:
        return self.a.fileno()

    def try_write(self, p: bytes) -> bool:
        if self.blocked:
            return False
        self.written.append(p)
        return True

    def read_batch(self, n: int, max_bytes: int = 1 << 30) -> list[bytes]:
        return []

    def close(self) -> None:
        self.closed = True
        self.a.close()
        self.b.close()


async def test_async_tun_bounded_queue_on_eagain():
    dev = _FakeDevice()
    link = AsyncTun(dev, max_queue=3)  # type: ignore[arg-type]
    link.start(lambda ps: None)
    for i in range(5):
        link.send(bytes([i]))
    assert link.queued == 3 and dev.stats.tx_dropped == 2 and dev.written == []
    dev.blocked = False
    link.send(b"\x05")                                  # queued behind the others: order kept
    assert link.queued == 3 and dev.stats.tx_dropped == 3
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert dev.written == [b"\x00", b"\x01", b"\x02"] and link.queued == 0
    link.send(b"\x06")                                  # queue empty: written directly
    assert dev.written[-1] == b"\x06"
    link.close()
    assert dev.closed


async def test_async_tun_close_drops_queue_and_removes_writer():
    dev = _FakeDevice()
    link = AsyncTun(dev, close_device=False)  # type: ignore[arg-type]
    link.start(lambda ps: None)
    link.send(b"a")
    link.send(b"b")
    link.close()
    assert dev.stats.tx_dropped == 2 and not dev.closed
    await asyncio.sleep(0)
    assert dev.written == []
    with pytest.raises(TunError):
        link.start(lambda ps: None)
    dev.close()


# --- ImpairedLink (userspace netem) -----------------------------------------------------------

class _RecordingLink:
    def __init__(self) -> None:
        self.sent: list[tuple[float, bytes]] = []
        self.on_packets: Callable[[list[bytes]], None] | None = None
        self.closed = False

    def start(self, on_packets: Callable[[list[bytes]], None]) -> None:
        self.on_packets = on_packets

    def send(self, packet: bytes) -> None:
        self.sent.append((asyncio.get_running_loop().time(), packet))

    def close(self) -> None:
        self.closed = True


async def test_impaired_link_rate_delay_and_order():
    from tcpstack.impairment import Impairment
    from tun.impaired import ImpairedLink
    inner = _RecordingLink()
    loop = asyncio.get_running_loop()
    link = ImpairedLink(inner, egress=Impairment(delay=0.020, rate_bps=1_000_000))
    link.start(lambda ps: None)
    t0 = loop.time()
    for i in range(5):
        link.send(bytes([i]) * 1250)                  # 10 ms each at 1 Mbit/s
    assert inner.sent == []
    await asyncio.sleep(0.1)
    assert [p[0] for _, p in inner.sent] == [0, 1, 2, 3, 4]
    for i, (t, _) in enumerate(inner.sent):
        assert t - t0 >= 0.020 + 0.010 * (i + 1) - 0.002
    link.close()
    assert inner.closed


async def test_impaired_link_loss_duplicate_corrupt_are_seeded():
    from tcpstack.impairment import Impairment
    from tun.impaired import ImpairedLink

    async def run(seed: int) -> tuple[list[bytes], dict]:
        inner = _RecordingLink()
        got: list[bytes] = []
        link = ImpairedLink(inner, ingress=Impairment(loss=0.30, duplicate=0.20, corrupt=0.10),
                            seed=seed)
        link.start(got.extend)
        inner.on_packets([i.to_bytes(2, "big") * 10 for i in range(200)])
        await asyncio.sleep(0)
        link.close()
        return got, link.stats()["ingress"]

    a, sa = await run(7)
    b, sb = await run(7)
    assert a == b and sa == sb                       # same seed, same faults
    assert sa["packets"] == 200 and 30 < sa["lost"] < 90 and 15 < sa["duplicated"] < 60
    assert len(a) == 200 - sa["lost"] + sa["duplicated"]
    clean = {i.to_bytes(2, "big") * 10 for i in range(200)}
    bad = [p for p in a if p not in clean]
    assert len(bad) == sa["corrupted"] > 0
    for p in bad:                                    # exactly one bit flipped
        best = min(sum(bin(x ^ y).count("1") for x, y in zip(p, c)) for c in clean)
        assert best == 1


async def test_impaired_link_queue_overflow_and_reorder():
    from tcpstack.impairment import Impairment
    from tun.impaired import ImpairedLink
    inner = _RecordingLink()
    link = ImpairedLink(inner, egress=Impairment(rate_bps=8_000, queue_bytes=3 * 10))
    link.start(lambda ps: None)
    for i in range(6):
        link.send(bytes([i]) * 10)                   # 10 ms each; FIFO holds 3
    assert link.stats()["egress"]["queue_drops"] == 3
    link.close()
    assert inner.sent == []                          # in flight at close: dropped
    inner2 = _RecordingLink()
    link2 = ImpairedLink(inner2, egress=Impairment(delay=0.030, reorder=0.50, reorder_delay=None), seed=3)
    link2.start(lambda ps: None)
    for i in range(20):
        link2.send(bytes([i]))
    await asyncio.sleep(0.06)
    order = [p[0] for _, p in inner2.sent]
    assert sorted(order) == list(range(20)) and order != list(range(20))
    n = link2.stats()["egress"]["reordered"]
    assert order[:n] == sorted(order[:n])            # the undelayed ones first, in order
    link2.close()


@tun
async def test_impaired_link_over_real_tun(kernel_tun):
    from tcpstack.impairment import Impairment
    from tun.impaired import ImpairedLink
    k = kernel_tun
    loop = asyncio.get_running_loop()
    replies: list[tuple[float, bytes]] = []
    link = ImpairedLink(AsyncTun(k.dev), egress=Impairment(delay=0.040),
                        ingress=Impairment(duplicate=1.0))
    link.start(lambda ps: replies.extend((loop.time(), p) for p in ps if is_echo_reply4(0x7A06)(p)))
    t0 = loop.time()
    link.send(icmp4_echo(k.stack4, k.kernel4, 0x7A06, 1, b"slow"))
    for _ in range(100):
        await asyncio.sleep(0.01)
        if len(replies) >= 2:
            break
    assert len(replies) == 2 and replies[0][1] == replies[1][1]      # duplicated on the way in
    assert replies[0][0] - t0 >= 0.039
    link.close()
    assert k.dev.closed
