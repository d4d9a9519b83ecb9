"""Two userspace stacks in two network namespaces, each on its own TUN device, the kernel
routing between them over a veth pair: the private encrypted overlay (issues 3 and 4)."""
from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import subprocess
import time

import pytest

from tcpstack.aio.streams import Stack
from tcpstack.impairment import Impairment
from tun.topology import TwoHosts

pytestmark = pytest.mark.tun

MB20 = 20 << 20


def pattern(n: int, seed: bytes) -> bytes:
    out = bytearray()
    i = 0
    while len(out) < n:
        out += hashlib.sha256(seed + i.to_bytes(8, "big")).digest() * 64
        i += 1
    return bytes(out[:n])


async def transfer_both_ways(s1: Stack, s2: Stack, addr2: str, up: bytes, down: bytes,
                             port: int = 443, **conn_kw):
    """s1 uploads `up` then half-closes; s2 answers with `down` after the EOF."""
    server_seen: dict = {}

    async def server(reader, writer):
        server_seen["sid"] = writer.get_extra_info("tcpcrypt_session_id")
        data = await reader.read()
        server_seen["up_sha"] = hashlib.sha256(data).digest()
        writer.write(down)
        await writer.drain()
        writer.close()

    srv = await s2.start_server(server, addr2, port)
    reader, writer = await s1.open_connection(addr2, port, **conn_kw)
    writer.write(up)
    await writer.drain()
    writer.write_eof()
    got = await reader.read()
    stats = writer.get_extra_info("tcp_stats")
    sid = writer.get_extra_info("tcpcrypt_session_id")
    writer.close()
    srv.close()
    return got, sid, server_seen, stats


class Capture:
    """tshark on an interface inside a namespace, writing a pcap."""

    def __init__(self, ns, dev: str, path: str, probe: str) -> None:
        if os.path.exists(path):
            os.unlink(path)
        self.proc = ns.popen(["tshark", "-q", "-n", "-i", dev, "-F", "pcap", "-w", path],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # "Capturing on ..." is printed before dumpcap really records: ping the far end of
        # the veth until a packet lands in the file.
        deadline = time.monotonic() + 20
        while not (os.path.exists(path) and os.path.getsize(path) > 100):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("tshark did not start capturing")
            ns.run(["ping", "-c", "1", "-W", "0.2", probe])

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not installed")
@pytest.mark.timeout(300)
async def test_encrypted_20mb_each_way_across_namespaces_same_session_id_no_plaintext(tmp_path):
    up, down = pattern(MB20, b"overlay-up"), pattern(MB20, b"overlay-down")
    with TwoHosts() as net:
        la, lb = net.links()
        s1, s2 = Stack(la, [net.stack_addrs[0]]), Stack(lb, [net.stack_addrs[1]])
        pcap = os.environ.get("OVERLAY_PCAP") or str(tmp_path / "veth.pcap")
        cap = Capture(net.ns[0], net.veth.name_a, pcap, probe=net.veth_addrs[1])
        try:
            got, sid, seen, stats = await asyncio.wait_for(
                transfer_both_ways(s1, s2, net.stack_addrs[1], up, down,
                                   require_encryption=True), 240)
        finally:
            await asyncio.sleep(0.2)
            cap.stop()
            s1.close(); s2.close()
    assert seen["up_sha"] == hashlib.sha256(up).digest()
    assert hashlib.sha256(got).digest() == hashlib.sha256(down).digest()
    assert sid is not None and sid == seen["sid"]          # both ends read the same session ID
    # option 69 in the SYN and the SYN-ACK, seen on the wire between the hosts
    r = subprocess.run(["tshark", "-n", "-r", pcap, "-Y", "tcp.flags.syn == 1 && tcp.option_kind == 69",
                        "-T", "fields", "-e", "tcp.flags.ack"], capture_output=True, text=True)
    assert sorted(r.stdout.split()) == ["0", "1"], r.stdout + r.stderr
    # none of the plaintext appears in any payload: look for every 64-byte-aligned chunk of a
    # sample of both streams in the raw capture
    raw = open(pcap, "rb").read()
    assert len(raw) > 2 * MB20
    for data in (up, down):
        for off in range(0, len(data), len(data) // 257):
            assert data[off:off + 32] not in raw


@pytest.mark.timeout(400)
async def test_netem_1pct_loss_20ms_rtt_20mb_recovered_by_fast_retransmit():
    data = pattern(MB20, b"lossy")
    with TwoHosts() as net:
        # each direction 10 ms and 1% loss: RTT 20 ms.  netem on the veth when the kernel has
        # sch_netem; otherwise (this CI's VM kernel has none) the same faults in userspace on
        # each stack's egress, the packets still crossing TUN, kernel routing and veth.
        kind = net.impair(Impairment(delay=0.010, loss=0.01))
        la, lb = net.links()
        s1, s2 = Stack(la, [net.stack_addrs[0]]), Stack(lb, [net.stack_addrs[1]])
        try:
            got, sid, seen, stats = await asyncio.wait_for(
                transfer_both_ways(s1, s2, net.stack_addrs[1], data, b"ok", encrypt=False), 360)
            server_stats = [ep.stats() for ep in s2.connections()]
        finally:
            s1.close(); s2.close()
    assert seen["up_sha"] == hashlib.sha256(data).digest() and got == b"ok"
    assert stats["retransmits"] > 0
    # recovery was done by fast retransmit / SACK, not only by timeouts
    assert stats["fast_retransmits"] + stats["sack_retransmits"] > stats["timeouts"], stats
    print(f"\n1% loss ({kind}), 20 ms RTT: retransmits={stats['retransmits']} "
          f"fast={stats['fast_retransmits']} sack={stats['sack_retransmits']} "
          f"timeouts={stats['timeouts']} cwnd={stats['cwnd']} srtt={stats['srtt']}")


@pytest.mark.timeout(300)
async def test_encrypted_20mb_each_way_with_tun_offloads_travel_as_super_segments():
    """TwoHosts(offload=True): both TUNs with IFF_VNET_HDR and TSO; the stacks send 64 KB
    GSO frames (tcpcrypt inside), which the kernels forward over the veth unsegmented and
    hand to the other stack whole.  Exact bytes, same session ID."""
    up, down = pattern(MB20, b"gso-up"), pattern(MB20, b"gso-down")
    with TwoHosts(offload=True) as net:
        la, lb = net.links()
        s1, s2 = Stack(la, [net.stack_addrs[0]]), Stack(lb, [net.stack_addrs[1]])
        try:
            got, sid, seen, stats = await asyncio.wait_for(
                transfer_both_ways(s1, s2, net.stack_addrs[1], up, down,
                                   require_encryption=True), 240)
            tx = [l.stats.tx_gso for l in (la, lb)]
            rx = [l.stats for l in (la, lb)]
        finally:
            s1.close(); s2.close()
    assert seen["up_sha"] == hashlib.sha256(up).digest()
    assert hashlib.sha256(got).digest() == hashlib.sha256(down).digest()
    assert sid is not None and sid == seen["sid"]
    assert stats["tso_segments"] > 0
    # Super-segments really went out of both stacks (far fewer frames than 20 MB / MSS).
    assert min(tx) > 20, (tx, rx)
    # ... and arrived whole at the other stack: 20 MB + ACKs in a few hundred reads, where
    # MSS-sized packets would be more than 14,000.
    assert max(r.rx_packets for r in rx) < 2000, rx
    print(f"\noffload overlay: tx_gso={tx} rx={rx}")
