"""Profile a handshake loop between two Stacks on the in-memory link (cProfile, top entries).
Run: python bench/profile_handshake.py [plain|x25519|resumed] [seconds] [--sort tottime|cumtime]"""
from __future__ import annotations

import asyncio
import cProfile
import os
import pstats
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from run import TEP_CURVE25519, handshakes, provider  # noqa: E402

from tcpstack import Stack  # noqa: E402
from tun import MemoryLink  # noqa: E402


async def main(kind: str, secs: float) -> None:
    la, lb = MemoryLink.pair()
    if kind == "plain":
        sa = sb = None
    else:
        res = kind == "resumed"
        sa = provider(teps=(TEP_CURVE25519,), resumption=res)
        sb = provider(teps=(TEP_CURVE25519,), resumption=res)
    s1, s2 = Stack(la, ["10.9.0.1"], security=sa), Stack(lb, ["10.9.0.2"], security=sb)
    r = await handshakes(s1, s2, "10.9.0.2", 5000, secs, kind != "plain",
                         concurrency=1 if kind == "resumed" else 16)
    s1.close(); s2.close()
    print(f"{kind}: {r['per_s']:.0f}/s (under the profiler), resumed {r['resumed']}/{r['count']}")


if __name__ == "__main__":
    kind = sys.argv[1] if len(sys.argv) > 1 else "plain"
    secs = float(sys.argv[2]) if len(sys.argv) > 2 else 2.0
    sort = sys.argv[4] if len(sys.argv) > 4 and sys.argv[3] == "--sort" else "tottime"
    prof = cProfile.Profile()
    prof.enable()
    asyncio.run(main(kind, secs))
    prof.disable()
    pstats.Stats(prof).sort_stats(sort).print_stats(25)
