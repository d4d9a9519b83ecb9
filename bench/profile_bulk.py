"""Profile a bulk transfer between two Stacks (cProfile, top entries by own time).

    python bench/profile_bulk.py [plain|aes128|aes256|chacha|tun] [MB] [--sort tottime|cumtime]
        in-memory link (or kernel<->stack over TUN for "tun"), one process, under the profiler
    python bench/profile_bulk.py tso [plain|aes128|aes256|chacha] [MB] [--runs N] [--profile]
        [--frame-size N]
        stack->stack across two namespaces, each Stack in its own process, TSO/GRO TUNs (the
        "2 netns 2 processes TSO/GRO" row of bench/run.py) with a bigger transfer; prints MB/s
        per run, and with --profile the sender's and the receiver's profiles (needs root).
"""
from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import os
import pstats
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from run import ALL_AEADS, Bench, bulk, provider, send_bytes  # noqa: E402

from tcpcrypt import TcpcryptProvider  # noqa: E402
from tcpcrypt.suites import TcpcryptConfig  # noqa: E402
from tcpstack import Stack  # noqa: E402
from tun import MemoryLink  # noqa: E402

KINDS = {"aes128": ALL_AEADS[0], "aes256": ALL_AEADS[1], "chacha": ALL_AEADS[2]}


async def main(kind: str, mb: int) -> None:
    if kind == "tun":          # kernel->stack and stack->kernel over TUN (KernelSide)
        b = Bench(quick=True, loop="asyncio")
        await b.kernel_tun({"bulk"})
        return
    la, lb = MemoryLink.pair()
    if kind == "plain":
        sa = sb = None
    else:
        aead = KINDS[kind]
        sa, sb = provider(aeads=(aead,)), provider(aeads=(aead,))
    s1, s2 = Stack(la, ["10.9.0.1"], security=sa), Stack(lb, ["10.9.0.2"], security=sb)
    r = await bulk(s1, s2, "10.9.0.2", 5000, mb << 20, kind != "plain")
    print(f"{kind}: {r['MB/s']:.1f} MB/s (under the profiler)")


def _security(kind: str, frame_size: int | None) -> TcpcryptProvider | None:
    if kind == "plain":
        return None
    kw = {"aeads": (KINDS[kind],)}
    if frame_size:
        kw["frame_size"] = frame_size   # type: ignore[assignment]
    return TcpcryptProvider(TcpcryptConfig(**kw))  # type: ignore[arg-type]


def _stats(prof: cProfile.Profile, sort: str, n: int = 25) -> str:
    s = io.StringIO()
    pstats.Stats(prof, stream=s).sort_stats(sort).print_stats(n)
    return s.getvalue()


def _spread(xs: list[float]) -> str:
    """min / median / max: on a shared machine the least-disturbed run is the min CPU."""
    xs = sorted(xs)
    return f"min {xs[0]:.2f} median {xs[len(xs) // 2]:.2f} max {xs[-1]:.2f}"


def tso(kind: str, mb: int, runs: int, profile: bool, frame_size: int | None, sort: str) -> None:
    """Two processes, TSO/GRO TUNs; the child is the receiving host."""
    from tun import AsyncTun
    from tun.topology import TwoHosts
    import uvloop
    port = 31500
    with TwoHosts(offload=True) as net:
        rfd, wfd = os.pipe()
        prfd, pwfd = os.pipe()
        pid = os.fork()
        if pid == 0:                                     # the receiver host
            try:
                os.close(rfd)
                os.close(prfd)
                prof = cProfile.Profile() if profile else None

                async def serve() -> None:
                    st = Stack(AsyncTun(net.devices[1], close_device=False, gro=True),
                               [net.stack_addrs[1]], security=_security(kind, frame_size))
                    left = runs
                    cpus: list[float] = []

                    async def sink(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
                        nonlocal left
                        c0 = time.process_time()
                        if prof:
                            prof.enable()
                        while await reader.read(1 << 20):
                            pass
                        if prof:
                            prof.disable()
                        cpus.append((time.process_time() - c0) / mb * 1e3)
                        writer.close()
                        left -= 1
                        if left == 0:
                            report = f"receiver CPU {_spread(cpus)} ms/MiB\n"
                            if prof:
                                report += _stats(prof, sort)
                            os.write(pwfd, report.encode())
                            os.close(pwfd)

                    await st.start_server(sink, net.stack_addrs[1], port, backlog=16,
                                          encrypt=kind != "plain")
                    os.write(wfd, b"r")
                    await asyncio.sleep(3600)

                uvloop.run(serve())
            finally:
                os._exit(0)
        os.close(wfd)
        os.close(pwfd)
        try:
            os.read(rfd, 1)
            prof = cProfile.Profile() if profile else None
            rates: list[float] = []
            cpus: list[float] = []

            async def send_all() -> None:
                st = Stack(AsyncTun(net.devices[0], close_device=False, gro=True),
                           [net.stack_addrs[0]], security=_security(kind, frame_size))
                enc = kind != "plain"
                for _ in range(runs):
                    t0 = time.perf_counter()
                    r, w = await st.open_connection(net.stack_addrs[1], port, encrypt=enc,
                                                    require_encryption=enc)
                    c0 = time.process_time()
                    if prof:
                        prof.enable()
                    await send_bytes(w, mb << 20)
                    await asyncio.wait_for(r.read(), 120)
                    if prof:
                        prof.disable()
                    cpus.append((time.process_time() - c0) / mb * 1e3)
                    el = time.perf_counter() - t0
                    rates.append((mb << 20) / el / 1e6)
                    print(f"tso {kind} frame_size={frame_size or 'default'}: {rates[-1]:.1f} MB/s",
                          flush=True)
                    w.close()
                    await asyncio.sleep(0.05)
                st.close()

            uvloop.run(send_all())
            print(f"tso {kind}: {_spread(rates)} MB/s over {runs} runs")
            print(f"sender CPU {_spread(cpus)} ms/MiB")
            if prof:
                print("=== sender ===")
                print(_stats(prof, sort))
                print("=== receiver ===")
            with os.fdopen(prfd, "rb", closefd=False) as f:
                print(f.read().decode())
        finally:
            os.kill(pid, 15)
            os.waitpid(pid, 0)
            os.close(rfd)
            os.close(prfd)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "tso":
        ap = argparse.ArgumentParser()
        ap.add_argument("mode")
        ap.add_argument("kind", nargs="?", default="aes128")
        ap.add_argument("mb", nargs="?", type=int, default=128)
        ap.add_argument("--runs", type=int, default=3)
        ap.add_argument("--profile", action="store_true")
        ap.add_argument("--frame-size", type=int)
        ap.add_argument("--sort", default="tottime")
        a = ap.parse_args()
        tso(a.kind, a.mb, a.runs, a.profile, a.frame_size, a.sort)
        sys.exit(0)
    kind = sys.argv[1] if len(sys.argv) > 1 else "plain"
    mb = int(sys.argv[2]) if len(sys.argv) > 2 else 32
    sort = sys.argv[4] if len(sys.argv) > 4 and sys.argv[3] == "--sort" else "tottime"
    prof = cProfile.Profile()
    prof.enable()
    asyncio.run(main(kind, mb))
    prof.disable()
    pstats.Stats(prof).sort_stats(sort).print_stats(30)
