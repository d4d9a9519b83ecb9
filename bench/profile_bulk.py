"""Profile a bulk transfer between two Stacks on the in-memory link (cProfile, top entries by
own time).  Run: python bench/profile_bulk.py [plain|aes128|aes256|chacha|tun] [MB] [--sort tottime|cumtime]"""
from __future__ import annotations

import asyncio
import cProfile
import os
import pstats
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from run import ALL_AEADS, Bench, bulk, provider  # noqa: E402

from tcpstack.streams import MemoryLink, Stack  # noqa: E402


async def main(kind: str, mb: int) -> None:
    if kind == "tun":          # kernel->stack and stack->kernel over TUN (KernelSide)
        b = Bench(quick=True, loop="asyncio")
        await b.kernel_tun({"bulk"})
        return
    la, lb = MemoryLink.pair()
    if kind == "plain":
        sa = sb = None
    else:
        aead = {"aes128": ALL_AEADS[0], "aes256": ALL_AEADS[1], "chacha": ALL_AEADS[2]}[kind]
        sa, sb = provider(aeads=(aead,)), provider(aeads=(aead,))
    s1, s2 = Stack(la, ["10.9.0.1"], security=sa), Stack(lb, ["10.9.0.2"], security=sb)
    r = await bulk(s1, s2, "10.9.0.2", 5000, mb << 20, kind != "plain")
    print(f"{kind}: {r['MB/s']:.1f} MB/s (under the profiler)")


if __name__ == "__main__":
    kind = sys.argv[1] if len(sys.argv) > 1 else "plain"
    mb = int(sys.argv[2]) if len(sys.argv) > 2 else 32
    sort = sys.argv[4] if len(sys.argv) > 4 and sys.argv[3] == "--sort" else "tottime"
    prof = cProfile.Profile()
    prof.enable()
    asyncio.run(main(kind, mb))
    prof.disable()
    pstats.Stats(prof).sort_stats(sort).print_stats(30)
