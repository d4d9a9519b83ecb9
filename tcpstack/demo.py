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
import time
from typing import Any, TextIO

from .streams import MemoryLink, Stack


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


def can_use_tun() -> bool:
    return (os.geteuid() == 0 and os.path.exists("/dev/net/tun") and shutil.which("ip") is not None)


async def main(out: TextIO = sys.stdout) -> int:
    results = []
    if can_use_tun():
        from .demo_tun import tun_demo
        results.append(await tun_demo(out))
    else:
        print("not root (or no /dev/net/tun): running two stacks on the in-memory link", file=out)
    results.append(await memory_demo(out))
    return 0 if all(r["ok"] for r in results) else 1
