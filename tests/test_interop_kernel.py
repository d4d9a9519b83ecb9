"""Interop with the Linux kernel's own TCP over a real TUN device (issue: core stack).

Topology, per test: a fresh network namespace holding a TUN device.  The kernel side of the
TUN has 10.231.N.1/24; the userspace stack (in this process, reading the TUN fd) owns
10.231.N.2.  Kernel-side programs (curl, python3 -m http.server, ping, a small Python peer)
run inside the namespace, so every packet stays inside namespaces these tests made.
"""
from __future__ import annotations

import asyncio
import hashlib
import os
import subprocess
import sys
import tempfile

import pytest

from tcpstack.tools.pcap import PcapWriter
from tcpstack.aio.streams import Stack

from tun.topology import KernelSide, wait_for_port

pytestmark = pytest.mark.tun

MB20 = 20 << 20


def pattern(n: int, seed: bytes) -> bytes:
    """Deterministic incompressible bytes (SHA-256 in counter mode) of length n."""
    out = bytearray()
    i = 0
    while len(out) < n:
        out += hashlib.sha256(seed + i.to_bytes(8, "big")).digest() * 64  # 2 KB blocks
        i += 1
    return bytes(out[:n])


@pytest.fixture
async def kernel():
    with KernelSide() as k:
        stack = Stack(k.link(), [k.stack_addr])
        k.stack = stack
        yield k
        stack.close()


async def test_ping_gets_replies(kernel):
    r = await kernel.run("ping", "-c", "3", "-i", "0.2", "-W", "2", kernel.stack_addr)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "3 received" in r.stdout
    assert kernel.stack.core.stats.icmp_echo_replies == 3


async def test_curl_downloads_20mb_from_an_http_server_on_the_stack(kernel):
    body = pattern(MB20, b"curl")

    async def http(reader, writer):
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(body))
        writer.write(body)
        await writer.drain()
        writer.close()

    server = await kernel.stack.start_server(http, kernel.stack_addr, 8080)
    r = await kernel.run("sh", "-c", f"curl -sS --max-time 120 http://{kernel.stack_addr}:8080/ | sha256sum")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split()[0] == hashlib.sha256(body).hexdigest()
    ep_stats = kernel.stack.core.stats
    assert ep_stats.malformed == 0
    server.close()


async def test_stack_downloads_from_kernel_http_server(kernel, tmp_path, procs):
    body = pattern(MB20, b"http.server")
    (tmp_path / "big.bin").write_bytes(body)
    # adopted: ended by the fixture even if the test times out before its finally
    proc = procs.adopt(await kernel.spawn(sys.executable, "-m", "http.server", "8000", "--bind",
                                          kernel.kernel_addr, "--directory", str(tmp_path)))
    try:
        await wait_for_port(kernel, kernel.kernel_addr, 8000)
        reader, writer = await kernel.stack.open_connection(kernel.kernel_addr, 8000)
        assert writer.get_extra_info("tcpcrypt_session_id") is None   # kernel has no ENO
        writer.write(b"GET /big.bin HTTP/1.0\r\nHost: x\r\n\r\n")
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.0 200")
        data = await reader.read()
        assert hashlib.sha256(data).digest() == hashlib.sha256(body).digest()
        writer.close()
    finally:
        proc.terminate()
        await proc.wait()


PEER = r"""
import hashlib, socket, sys
addr, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((addr, port)); s.listen(1)
print("ready", flush=True)
c, _ = s.accept()
h = hashlib.sha256(); total = 0
while True:
    d = c.recv(1 << 20)
    if not d:
        break                       # the stack half-closed: we still send
    h.update(d); total += len(d)
out = b"".join(hashlib.sha256(b"kernel" + i.to_bytes(8, "big")).digest() * 64 for i in range(n // 2048 + 1))[:n]
c.sendall(out)
c.shutdown(socket.SHUT_WR)          # our half-close
assert c.recv(1) == b""
print(total, h.hexdigest(), hashlib.sha256(out).hexdigest(), flush=True)
"""


async def test_20mb_both_directions_with_half_close_against_kernel(kernel):
    up = pattern(MB20, b"up")
    proc = await kernel.spawn(sys.executable, "-c", PEER, kernel.kernel_addr, "9000", str(MB20),
                              stdout=subprocess.PIPE)
    try:
        assert (await asyncio.wait_for(proc.stdout.readline(), 10)).strip() == b"ready"
        reader, writer = await kernel.stack.open_connection(kernel.kernel_addr, 9000)
        writer.write(up)
        await writer.drain()
        writer.write_eof()                          # half-close: the kernel sees EOF...
        down = await asyncio.wait_for(reader.read(), 120)   # ...and keeps sending to us
        total, up_hash, down_hash = (await asyncio.wait_for(proc.stdout.readline(), 30)).split()
        assert int(total) == MB20 and up_hash.decode() == hashlib.sha256(up).hexdigest()
        assert len(down) == MB20 and hashlib.sha256(down).hexdigest() == down_hash.decode()
        stats = writer.get_extra_info("tcp_stats")
        assert stats["sack_ok"] and stats["ts_ok"] and stats["wscale_snd"] > 0
        writer.close()
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()


@pytest.mark.skipif(not os.path.exists("/usr/bin/tshark"), reason="tshark not installed")
async def test_tshark_finds_no_malformed_or_bad_checksum_packets(kernel, tmp_path):
    pcap = tmp_path / "transfer.pcap"
    writer_ = PcapWriter(str(pcap))
    kernel.stack.core.on_packet = writer_
    body = pattern(2 << 20, b"tshark")

    async def http(reader, writer):
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(body))
        writer.write(body)
        await writer.drain()
        writer.close()

    await kernel.stack.start_server(http, kernel.stack_addr, 8081)
    r = await kernel.run("sh", "-c", f"curl -sS http://{kernel.stack_addr}:8081/ | sha256sum")
    assert r.stdout.split()[0] == hashlib.sha256(body).hexdigest()
    await kernel.run("ping", "-c", "1", kernel.stack_addr)
    kernel.stack.core.on_packet = None
    writer_.close()
    assert writer_.count > 1000
    base = ["tshark", "-n", "-r", str(pcap), "-o", "tcp.check_checksum:TRUE",
            "-o", "ip.check_checksum:TRUE"]
    # One exception, for the kernel's packets only: a TCP checksum field of 0xFFFF.  It is
    # "negative zero", equivalent to 0x0000 in one's complement and accepted by every
    # receiver (RFC 1624 3; the kernel's incremental updates produce it now and then), but
    # Wireshark flags it.  The stack's own packets get no such exception.
    kernel_ffff = f"(ip.src == {kernel.kernel_addr} && tcp.checksum == 0xffff)"
    bad = subprocess.run(base + ["-Y", f"(_ws.malformed || _ws.expert.severity >= error || "
                                 f"tcp.checksum.status == 0 || ip.checksum.status == 0) "
                                 f"&& !{kernel_ffff}"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 0, bad.stderr
    assert bad.stdout.strip() == "", bad.stdout[:2000]
    # and the capture really holds the transfer: both directions, good checksums
    good = subprocess.run(base + ["-Y", "tcp.checksum.status == 1", "-T", "fields", "-e", "ip.src"],
                          capture_output=True, text=True, timeout=120)
    srcs = set(good.stdout.split())
    assert {kernel.kernel_addr, kernel.stack_addr} <= srcs


async def test_offload_kernel_gso_super_packets_upload_20mb_intact():
    """IFF_VNET_HDR + TUNSETOFFLOAD (csum, TSO4/6): the kernel hands the stack GSO
    super-packets (up to 64 KB); the stack takes each as one TCP segment, trusting the
    kernel-made checksum (NEEDS_CSUM), and the bytes still arrive exactly."""
    body = pattern(MB20, b"gso")
    with KernelSide(offload=True) as k:
        assert k.offloads_accepted & 0x3 == 0x3          # csum + TSO4 accepted
        stack = Stack(k.link(), [k.stack_addr])
        sizes: list[int] = []
        orig = stack.core.receive_packet

        def spy(packet, now, *, checksum_ok=False):
            sizes.append(len(packet))
            orig(packet, now, checksum_ok=checksum_ok)
        stack.core.receive_packet = spy

        async def sink(reader, writer):
            head = await reader.readuntil(b"\r\n\r\n")
            n = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
            digest = hashlib.sha256(await reader.readexactly(n)).hexdigest()
            writer.write(b"HTTP/1.0 200 OK\r\n\r\n" + digest.encode())
            writer.close()

        await stack.start_server(sink, k.stack_addr, 8080)
        path = os.path.join(tempfile.mkdtemp(), "up.bin")
        with open(path, "wb") as f:
            f.write(body)
        r = await k.run("curl", "-sS", "-H", "Expect:", "--data-binary", f"@{path}",
                        f"http://{k.stack_addr}:8080/")
        os.unlink(path)
        stack.close()
    assert r.stdout == hashlib.sha256(body).hexdigest(), r.stderr
    assert max(sizes) > 3 * 1500                         # super-packets really arrived
    assert stack.core.stats.malformed == 0


async def test_require_encryption_against_the_kernel_fails_with_a_clear_error(kernel, tmp_path, procs):
    from tcpcrypt.errors import EncryptionRequiredError
    # adopted: ended by the fixture even if the test times out before its finally
    proc = procs.adopt(await kernel.spawn(sys.executable, "-m", "http.server", "8001", "--bind",
                                          kernel.kernel_addr, "--directory", str(tmp_path)))
    try:
        await wait_for_port(kernel, kernel.kernel_addr, 8001)
        with pytest.raises(EncryptionRequiredError, match="did not negotiate encryption"):
            await kernel.stack.open_connection(kernel.kernel_addr, 8001, require_encryption=True)
    finally:
        proc.terminate()
        await proc.wait()


async def test_offload_stack_tso_download_20mb_intact_via_gso_frames():
    """Send-side TSO: on an offload link the stack writes TCP super-segments as virtio_net_hdr
    GSO frames (partial checksum, gso_size = MSS); the kernel cuts and checksums them and a
    kernel-side curl receives the 20 MB exactly."""
    body = pattern(MB20, b"tso")
    with KernelSide(offload=True) as k:
        link = k.link()
        assert link.tso_max_size > 0
        stack = Stack(link, [k.stack_addr])
        assert stack.core.config.tcp.tso_max_size == link.tso_max_size

        async def source(reader, writer):
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
            await writer.drain()
            writer.close()

        await stack.start_server(source, k.stack_addr, 8080)
        r = await k.run("sh", "-c", f"curl -sS http://{k.stack_addr}:8080/ | sha256sum")
        stack.close()
    assert r.stdout.split()[0] == hashlib.sha256(body).hexdigest(), r.stderr
    assert link.stats.tx_gso > 20                        # GSO frames really went out
