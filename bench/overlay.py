"""The overlay node's bridges against a direct connection on the stack, in one run.

    sudo python bench/overlay.py [--mb 20] [--runs 3] [--seconds 3] [--json out.json]

Two network namespaces A and B joined by a veth pair, the kernels routing between them
(tun.topology.TwoHosts); a `tcpstack up` node process in each:

    node B: --http 80 (the stack itself serves GET /N)  --expose 81:127.0.0.1:8001
    node A: --socks5 1080  --forward 15080:B:80  --forward 15081:B:81
    in B's kernel: a source on 127.0.0.1:8001 (and on the veth, for the kernel reference)
    in A: clients, each its own process: a kernel socket program, a SOCKS5 client, or a
          program with its own userspace stack on its own TUN device (the "direct" path)

Rows (all download N MB with GET /N and check its SHA-256; then connections per second:
8 clients in parallel, each connection GET /1 then close):

    direct            stack (client process) -> stack B                       no bridge
    socks5            kernel client -> node A SOCKS5 -> stack A -> stack B      one bridge (A)
    forward           kernel client -> node A forward -> stack A -> stack B     one bridge (A)
    expose            stack (client process) -> stack B -> node B expose -> kernel   one (B)
    forward+expose    kernel -> A forward -> stacks -> B expose -> kernel       two bridges
    kernel (veth)     Linux TCP A -> B over the veth, no stack: the reference line

Every stack process is Python on a machine whose 2 cores are shared: the figures are
noisy, and the ratio to `direct` in the same run is the one to read.
"""
from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

BLOCK = b"tcpstack" * 8192            # what `tcpstack up --http` sends (GET /N)
SOURCE_PORT, HTTP_PORT, EXPOSE_PORT = 8001, 80, 81
SOCKS_PORT, FWD_HTTP, FWD_EXPOSE = 1080, 15080, 15081


def expected_sha(n: int) -> str:
    h = hashlib.sha256()
    while n:
        k = min(n, len(BLOCK))
        h.update(BLOCK[:k])
        n -= k
    return h.hexdigest()


# --- the kernel source in B (same protocol as the stack's --http) ---------------------------

async def source(port: int) -> None:
    async def serve(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            line = (await r.readline()).split()
            while (await r.readline()).strip():
                pass
            n = int(line[1].strip(b"/"))
            w.write(b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n" % n)
            while n:
                k = min(n, len(BLOCK))
                w.write(BLOCK[:k])
                n -= k
                await w.drain()
            w.close()
        except (OSError, IndexError, ValueError):
            w.close()
    s1 = await asyncio.start_server(serve, "0.0.0.0", port)
    async with s1:
        await s1.serve_forever()


# --- the clients in A -------------------------------------------------------------------

async def socks_connect(proxy: int, host: str, port: int) -> tuple[Any, Any]:
    from tcpstack.overlay.socks5 import build_request
    r, w = await asyncio.open_connection("127.0.0.1", proxy)
    w.write(b"\x05\x01\x00" + build_request(host, port))
    head = await r.readexactly(2 + 4)
    if head[1] != 0 or head[3] != 0:
        raise ConnectionError(f"SOCKS5 reply {head!r}")
    await r.readexactly(6 if head[5] == 1 else 18)
    return r, w


async def get(connect: Any, n: int) -> tuple[int, str]:
    r, w = await connect()
    w.write(b"GET /%d HTTP/1.0\r\n\r\n" % n)
    length = None
    while (line := await r.readline()).strip():
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    h = hashlib.sha256()
    got = 0
    while data := await r.read(1 << 20):
        h.update(data)
        got += len(data)
    w.close()
    if length is not None and got != length:
        raise ConnectionError(f"got {got} of {length} bytes")
    return got, h.hexdigest()


async def client(args: list[str]) -> None:
    """_client KIND TARGET_HOST TARGET_PORT N SECONDS [STACK_ADDR]: one JSON line."""
    kind, host, port, n, seconds = args[0], args[1], int(args[2]), int(args[3]), float(args[4])
    stack = dev = None
    if kind == "stack":
        import ipaddress

        from tcpstack.aio.streams import Stack
        from tun.device import async_link, bring_up, unique_ifname
        iface = ipaddress.ip_interface(args[5])
        peer = next(h for h in iface.network.hosts() if h != iface.ip)
        dev = bring_up(unique_ifname("tcb"), f"{peer}/{iface.network.prefixlen}", None, 1500)
        stack = Stack(async_link(dev), [str(iface.ip)])

        async def connect() -> Any:
            return await stack.open_connection(host, port)
    elif kind == "socks":
        async def connect() -> Any:
            return await socks_connect(SOCKS_PORT, host, port)
    else:
        async def connect() -> Any:
            return await asyncio.open_connection(host, port)
    out: dict[str, Any] = {}
    try:
        await get(connect, 1)                              # warm up: ARP, routes, caches
        if n > 1:
            t0 = time.perf_counter()
            got, sha = await get(connect, n)
            dt = time.perf_counter() - t0
            out.update({"MB/s": got / dt / 1e6, "bytes": got, "sha256": sha})
        count = 0
        end = time.perf_counter() + seconds

        async def worker() -> None:
            nonlocal count
            while time.perf_counter() < end:
                await get(connect, 1)
                count += 1
        if seconds > 0:
            t0 = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(8)))
            out["conn/s"] = count / (time.perf_counter() - t0)
    finally:
        if stack is not None:
            await stack.linger(2)
            stack.close()
        if dev is not None:
            dev.close()
    print(json.dumps(out), flush=True)


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (its node: `ip netns exec` execs the command)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# --- the run ------------------------------------------------------------------------------

def main() -> int:
    if sys.argv[1:2] == ["_source"]:
        asyncio.run(source(int(sys.argv[2])))
        return 0
    if sys.argv[1:2] == ["_client"]:
        asyncio.run(client(sys.argv[2:]))
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mb", type=int, default=20)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=3.0, help="per connection-rate row")
    ap.add_argument("--json", metavar="FILE")
    ap.add_argument("--only", metavar="PATH,...", help="only these rows (direct is always run)")
    ap.add_argument("--profile-node", choices=("a", "b"),
                    help="run that node under cProfile (output: /tmp/overlay-node-X.prof)")
    a = ap.parse_args()
    if os.geteuid() != 0:
        print("bench/overlay.py: needs root (TUN devices, namespaces)", file=sys.stderr)
        return 1
    from tun.topology import TwoHosts
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    n = a.mb << 20
    want = expected_sha(n)
    rows: list[dict[str, Any]] = []
    procs: list[subprocess.Popen[Any]] = []
    tcp = [sys.executable, "-m", "tcpstack"]

    def node_cmd(which: str) -> list[str]:
        if a.profile_node == which:
            return [sys.executable, "-m", "cProfile", "-o", f"/tmp/overlay-node-{which}.prof",
                    "-m", "tcpstack"]
        return tcp
    me = [sys.executable, os.path.abspath(__file__)]
    with TwoHosts(tuns=False) as net:
        na, nb = net.ns
        a_addr, b_addr = net.stack_addrs
        c_idx = (net.a_idx + 120) % 240 + 2      # the direct clients' own subnet in A
        c_addr = f"10.231.{c_idx}.2/24"
        nb.ip("route", "add", f"10.231.{c_idx}.0/24", "via", net.veth_addrs[0])
        try:
            procs.append(nb.popen(me + ["_source", str(SOURCE_PORT)], env=env))
            ctl = f"/run/tcpstack/bench-overlay-{os.getpid()}"
            procs.append(nb.popen(node_cmd("b") + ["up", "--addr", f"{b_addr}/24", "--http", str(HTTP_PORT),
                                         "--expose", f"{EXPOSE_PORT}:127.0.0.1:{SOURCE_PORT}",
                                         "--control", ctl + "b.sock"], env=env))
            procs.append(na.popen(node_cmd("a") + ["up", "--addr", f"{a_addr}/24", "--socks5", str(SOCKS_PORT),
                                         "--forward", f"{FWD_HTTP}:{b_addr}:{HTTP_PORT}",
                                         "--forward", f"{FWD_EXPOSE}:{b_addr}:{EXPOSE_PORT}",
                                         "--control", ctl + "a.sock"], env=env))
            deadline = time.monotonic() + 30
            while not all(os.path.exists(ctl + s) for s in ("a.sock", "b.sock")):
                if time.monotonic() > deadline:
                    raise SystemExit("the nodes did not come up")
                time.sleep(0.1)
            time.sleep(0.5)
            paths = [
                ("direct", ["stack", b_addr, str(HTTP_PORT)], [c_addr]),
                ("socks5", ["socks", b_addr, str(HTTP_PORT)], []),
                ("forward", ["kernel", "127.0.0.1", str(FWD_HTTP)], []),
                ("expose", ["stack", b_addr, str(EXPOSE_PORT)], [c_addr]),
                ("forward+expose", ["kernel", "127.0.0.1", str(FWD_EXPOSE)], []),
                ("kernel (veth)", ["kernel", net.veth_addrs[1], str(SOURCE_PORT)], []),
            ]
            only = set(a.only.split(",")) | {"direct"} if a.only else None
            paths = [p for p in paths if only is None or p[0] in only]
            nodes = {"a": procs[2].pid, "b": procs[1].pid}
            results: dict[str, list[dict[str, Any]]] = {name: [] for name, _, _ in paths}

            def one(name: str, spec: list[str], extra: list[str], nbytes: int,
                    seconds: float) -> dict[str, Any]:
                cpu0 = {k: cpu_seconds(pid) for k, pid in nodes.items()}
                r = na.run(me + ["_client", spec[0], spec[1], spec[2], str(nbytes),
                                 str(seconds)] + extra, env=env, timeout=300)
                cpu = {k: cpu_seconds(pid) - cpu0[k] for k, pid in nodes.items()}
                if r.returncode != 0:
                    raise SystemExit(f"{name}: client failed: {r.stderr.strip()[-400:]}")
                res: dict[str, Any] = json.loads(r.stdout.strip().splitlines()[-1])
                res["cpu"] = cpu
                return res
            # round-robin: every path sees the same moments of a shared machine
            for _ in range(a.runs):
                for name, spec, extra in paths:
                    bulk = one(name, spec, extra, n, 0)
                    if bulk["sha256"] != want:
                        raise SystemExit(f"{name}: SHA-256 mismatch ({bulk['bytes']} bytes)")
                    rate = one(name, spec, extra, 1, a.seconds)
                    results[name].append({"MB/s": bulk["MB/s"], "conn/s": rate["conn/s"],
                                          "cpu_a": bulk["cpu"]["a"], "cpu_b": bulk["cpu"]["b"]})
            for name, _, _ in paths:
                runs = results[name]
                rows.append({"path": name, "MB/s": statistics.median(x["MB/s"] for x in runs),
                             "MB/s runs": [round(x["MB/s"], 1) for x in runs],
                             "conn/s": statistics.median(x["conn/s"] for x in runs),
                             "node A ms/MB": statistics.median(x["cpu_a"] for x in runs) * 1e3 / a.mb,
                             "node B ms/MB": statistics.median(x["cpu_b"] for x in runs) * 1e3 / a.mb})
        finally:
            for p in procs:
                p.terminate()
            for p in procs:
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
    direct = rows[0]
    print(f"overlay bench: {a.mb} MB per download (SHA-256 checked), median of {a.runs}; "
          f"connections: 8 parallel clients, GET /1, {a.seconds:g} s")
    print(f"{'path':<16} {'MB/s':>8} {'x direct':>9} {'conn/s':>8} {'x direct':>9} "
          f"{'A ms/MB':>8} {'B ms/MB':>8}   MB/s of each run")
    for r in rows:
        print(f"{r['path']:<16} {r['MB/s']:8.1f} {r['MB/s'] / direct['MB/s']:9.2f} "
              f"{r['conn/s']:8.0f} {r['conn/s'] / direct['conn/s']:9.2f} "
              f"{r['node A ms/MB']:8.1f} {r['node B ms/MB']:8.1f}   {r['MB/s runs']}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
