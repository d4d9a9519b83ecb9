"""SYN flood over a real TUN device (RFC 4987 3.6 SYN cookies, tcpstack/host/syncookies.py).

A private namespace holds the TUN; the stack (this process) owns 10.231.N.2.  Inside the
namespace one Python process floods the stack with spoofed SYNs through a raw socket
(sources in 198.18.0.0/15, whose SYN-ACKs the namespace's kernel drops: it does not
forward), for as long as 100 kernel TCP clients, 10 at a time, each connect, send a line and read the
answer.  Every client must be served, with the listener's half-open count bounded.
"""
from __future__ import annotations

import asyncio
import json
import sys

import pytest

from tcpstack.host.stack import StackConfig
from tcpstack.aio.streams import Stack
from tun.topology import KernelSide

pytestmark = pytest.mark.tun

FLOOD = 20_000
PEER = r"""
import json, random, socket, sys, threading, time
from concurrent.futures import ThreadPoolExecutor
from tcpstack.wire.segment import SYN, TCPSegment
from tcpstack.wire.tcp import build_ip_tcp

dst, flood = sys.argv[1], int(sys.argv[2])
dpk = socket.inet_aton(dst)
rng = random.Random(4987)
pkts = []
for i in range(flood):
    src = (0xC6120000 | (i % (1 << 17))).to_bytes(4, "big")       # 198.18.0.0/15
    seg = TCPSegment(rng.randrange(1024, 65536), 8080, rng.getrandbits(32), 0, SYN, 64240,
                     mss=1460, wscale=7, sack_permitted=True, tsval=rng.getrandbits(32))
    pkts.append(build_ip_tcp(seg, src, dpk))
raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
sent = 0
stop = threading.Event()
def run_flood():                        # until the clients are done, and at least `flood`
    global sent
    while sent < flood or not stop.is_set():
        for p in pkts:
            try:
                raw.sendto(p, (dst, 0))
                sent += 1
            except OSError:             # ENOBUFS: the TUN queue is full
                time.sleep(0.001)
            if sent % 100 == 0:
                time.sleep(0.01)        # <= 10,000 SYNs/s: queue exhaustion, not CPU
            if sent >= flood and stop.is_set():
                break
flooder = threading.Thread(target=run_flood)
flooder.start()
time.sleep(0.2)                         # the flood first fills the listener's SYN queue
def client(i):
    with socket.create_connection((dst, 8080), timeout=30) as s:
        s.sendall(b"ping %d\n" % i)
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = s.recv(100)
            if not chunk:
                break
            buf += chunk
        return buf == b"pong ping %d\n" % i
t0 = time.monotonic()
with ThreadPoolExecutor(10) as ex:
    ok = sum(ex.map(client, range(100)))
elapsed = time.monotonic() - t0
during = sent
stop.set()
flooder.join()
print(json.dumps({"served": ok, "sent": sent, "sent_while_clients": during, "elapsed": elapsed}))
"""


async def test_syn_flood_over_tun_does_not_starve_100_kernel_clients():
    with KernelSide() as k:
        stack = Stack(k.link(), [k.stack_addr], StackConfig(syn_backlog=256))
        max_half_open = 0

        async def pong(reader, writer):
            line = await reader.readline()
            writer.write(b"pong " + line)
            await writer.drain()
            writer.close()

        server = await stack.start_server(pong, k.stack_addr, 8080, backlog=128)
        lst = next(iter(stack.core._listeners.values()))
        done = asyncio.Event()

        async def watch():
            nonlocal max_half_open
            while not done.is_set():
                max_half_open = max(max_half_open, lst.half_open)
                await asyncio.sleep(0.01)

        watcher = asyncio.create_task(watch())
        try:
            r = await k.run(sys.executable, "-c", PEER, k.stack_addr, str(FLOOD), timeout=100)
        finally:
            done.set()
            await watcher
            server.close()
            stack.close()
        assert r.returncode == 0, r.stderr
        res = json.loads(r.stdout)
        st = stack.core.stats
        print(res, st.syncookies_sent, st.syncookies_ok, max_half_open)
        assert res["served"] == 100
        assert res["sent"] >= FLOOD
        assert st.syncookies_sent > 0 and st.syncookies_ok > 0
        assert max_half_open <= 128
