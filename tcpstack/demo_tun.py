"""The demo's real half: the userspace stack on a TUN device, the Linux kernel as its peer.

Everything happens inside a private network namespace the demo creates and removes: the
kernel side of the TUN is 10.231.N.1, the stack owns 10.231.N.2.
  1. kernel -> stack: curl (kernel TCP) downloads from an HTTP server on the userspace stack;
  2. stack -> kernel: the stack's open_connection() fetches from python3 -m http.server;
  3. ping of the stack's address.
"""
from __future__ import annotations

import asyncio
import hashlib
import os
import sys
import tempfile
import time
from typing import Any, TextIO

from tun.topology import KernelSide, wait_for_port

from .demo import _describe
from .streams import Stack


async def tun_demo(out: TextIO = sys.stdout, size: int = 8 << 20) -> dict[str, Any]:
    ok = True
    body = os.urandom(size)
    digest = hashlib.sha256(body).hexdigest()
    with KernelSide(offload=True) as k:   # fast by default (falls back without offloads)
        stack = Stack(k.link(), [k.stack_addr])
        print(f"TUN device {k.dev.name} in namespace {k.name}: kernel {k.kernel_addr}, "
              f"userspace stack {k.stack_addr}, MTU {k.mtu}, "
              f"offloads {'on (TSO/GRO)' if k.offload else 'off'}", file=out)

        seen: dict[str, str] = {}

        async def http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readuntil(b"\r\n\r\n")
            seen["conn"] = _describe(writer)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % size)
            writer.write(body)
            await writer.drain()
            writer.close()

        server = await stack.start_server(http, k.stack_addr, 8080)
        t0 = time.perf_counter()
        r = await k.run("sh", "-c", f"curl -sS http://{k.stack_addr}:8080/ | sha256sum")
        dt = time.perf_counter() - t0
        good = r.returncode == 0 and r.stdout.split()[0] == digest
        ok &= good
        print(f"1. kernel curl -> stack HTTP server: {size} bytes in {dt:.2f} s "
              f"({size / dt / 1e6:.1f} MB/s), SHA-256 {'matches' if good else 'DIFFERS'}", file=out)
        print(f"   the stack's view of that connection: {seen.get('conn')}", file=out)
        server.close()

        with tempfile.TemporaryDirectory() as d:
            with open(os.path.join(d, "file.bin"), "wb") as f:
                f.write(body)
            proc = await k.spawn(sys.executable, "-m", "http.server", "8000", "--bind",
                                 k.kernel_addr, "--directory", d)
            try:
                await wait_for_port(k, k.kernel_addr, 8000)
                t0 = time.perf_counter()
                reader, writer = await stack.open_connection(k.kernel_addr, 8000)
                print(f"2. stack -> kernel python3 -m http.server: connected: {_describe(writer)}",
                      file=out)
                writer.write(b"GET /file.bin HTTP/1.0\r\n\r\n")
                await reader.readuntil(b"\r\n\r\n")
                data = await reader.read()
                dt = time.perf_counter() - t0
                good = hashlib.sha256(data).hexdigest() == digest
                ok &= good
                print(f"   downloaded {len(data)} bytes in {dt:.2f} s ({len(data) / dt / 1e6:.1f} MB/s), "
                      f"SHA-256 {'matches' if good else 'DIFFERS'}", file=out)
                writer.close()
            finally:
                proc.terminate()
                await proc.wait()

        r = await k.run("ping", "-c", "3", "-i", "0.2", k.stack_addr)
        line = [l for l in r.stdout.splitlines() if "packets transmitted" in l]
        ok &= r.returncode == 0
        print(f"3. ping {k.stack_addr}: {line[0] if line else r.stderr.strip()}", file=out)
        s = stack.core.stats
        print(f"   stack counters: {s.packets_in} packets in, {s.packets_out} out, "
              f"{s.malformed} malformed, {s.rst_sent} RSTs sent", file=out)
        stack.close()
    return {"ok": ok}
