"""The README's main job: show the stack working, and say what happened.

As root (with /dev/net/tun and `ip netns`): a TUN device inside a private network namespace
(so every packet stays inside namespaces this demo made); the kernel's TCP (curl, and
python3 -m http.server) talks to the userspace stack in both directions.  Without root: two
userspace stacks on the in-memory link, encrypted with tcpcrypt.  Either way it prints the
handshake, the options negotiated and the bytes moved.
"""
from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import sys
import tempfile
import time
from typing import Any, TextIO

from tcpstack.aio.streams import Stack
from tun.memory import MemoryLink
from tun.topology import KernelSide, wait_for_port


def _describe(writer: asyncio.StreamWriter) -> str:
    s = writer.get_extra_info("tcp_stats") or {}
    parts = [f"state={s.get('state')}", f"mss={s.get('mss')}"]
    if s.get("wscale_snd") is not None:
        parts.append(f"wscale={s.get('wscale_snd')}/{s.get('wscale_rcv')}")
    parts.append(f"sack={'on' if s.get('sack_ok') else 'off'}")
    parts.append(f"timestamps={'on' if s.get('ts_ok') else 'off'}")
    info = writer.get_extra_info("tcpcrypt")
    if info:
        from tcpcrypt.suites import AEADS, TEPS
        tep, aead = TEPS.get(info.get("tep")), AEADS.get(info.get("aead"))
        parts.append(f"tcpcrypt tep={tep.name if tep else info.get('tep')} "
                     f"aead={aead.name if aead else info.get('aead')} "
                     f"role={info.get('role')} resumed={info.get('resumed')}")
        parts.append(f"session-id={writer.get_extra_info('tcpcrypt_session_id').hex()}")
    else:
        parts.append("tcpcrypt=off (plain TCP)")
    return " ".join(parts)


async def memory_demo(out: TextIO = sys.stdout, size: int = 4 << 20) -> dict[str, Any]:
    """Two stacks on an in-memory link: an encrypted upload and echo of `size` bytes."""
    la, lb = MemoryLink.pair()
    client = Stack(la, ["10.231.0.1"])
    server_stack = Stack(lb, ["10.231.0.2"])
    server_side: dict[str, Any] = {}

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        server_side["sid"] = writer.get_extra_info("tcpcrypt_session_id")
        data = await reader.read()
        writer.write(hashlib.sha256(data).digest())
        await writer.drain()
        writer.close()

    server = await server_stack.start_server(handle, "10.231.0.2", 4433)
    print("in-memory link: client 10.231.0.1 -> server 10.231.0.2:4433", file=out)
    t0 = time.perf_counter()
    reader, writer = await client.open_connection("10.231.0.2", 4433)
    print(f"  handshake done in {1000 * (time.perf_counter() - t0):.1f} ms: {_describe(writer)}",
          file=out)
    payload = os.urandom(size)
    t0 = time.perf_counter()
    writer.write(payload)
    await writer.drain()
    writer.write_eof()
    digest = await reader.read()
    dt = time.perf_counter() - t0
    ok = digest == hashlib.sha256(payload).digest()
    same_sid = server_side.get("sid") == writer.get_extra_info("tcpcrypt_session_id")
    print(f"  sent {size} bytes in {dt:.2f} s ({size / dt / 1e6:.1f} MB/s); server's SHA-256 "
          f"{'matches' if ok else 'DIFFERS'}; both ends read the same session ID: {same_sid}",
          file=out)
    writer.close()
    server.close()
    client.close()
    server_stack.close()
    return {"ok": ok and same_sid, "bytes": size, "seconds": dt}


# --- the real half: the userspace stack on a TUN device, the Linux kernel as its peer ------
# Everything happens inside a private network namespace the demo creates and removes: the
# kernel side of the TUN is 10.231.N.1, the stack owns 10.231.N.2.
#   1. kernel -> stack: curl (kernel TCP) downloads from an HTTP server on the userspace stack;
#   2. stack -> kernel: the stack's open_connection() fetches from python3 -m http.server;
#   3. ping of the stack's address.

async def tun_demo(out: TextIO = sys.stdout, size: int = 8 << 20) -> dict[str, Any]:
    ok = True
    body = os.urandom(size)
    digest = hashlib.sha256(body).hexdigest()
    with KernelSide(offload=True) as k:   # fast by default (falls back without offloads)
        link = k.link()
        stack = Stack(link, [k.stack_addr])
        print(f"TUN device {link.device.name} in namespace {k.name}: kernel {k.kernel_addr}, "
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


def can_use_tun() -> bool:
    return (os.geteuid() == 0 and os.path.exists("/dev/net/tun") and shutil.which("ip") is not None)


async def main(out: TextIO = sys.stdout) -> int:
    results = []
    if can_use_tun():
        try:
            results.append(await tun_demo(out))
        except OSError as e:                # one clear line; the in-memory half still runs
            print(f"the TUN half failed: {e}", file=out)
            results.append({"ok": False})
    else:
        print("not root (or no /dev/net/tun): running two stacks on the in-memory link", file=out)
    results.append(await memory_demo(out))
    return 0 if all(r["ok"] for r in results) else 1
