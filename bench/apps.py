"""Real client libraries over the userspace stack, beside the kernel, in one run (issue 16).

    sudo python bench/apps.py [--seconds 3] [--json out.json] [--cases kernel,stack,stack<->stack]

Two network namespaces joined by a veth (tun.topology.TwoHosts, no TUN devices: each switched
process brings its own).  The servers run in the first: an aiohttp application
(tests/apps/programs/aiohttp_server.py) and redis-server, on the kernel's TCP.  The client is
this file's `client` part, a plain asyncio program (aiohttp's client, redis-py's asyncio
client), run in the second namespace three ways:

  kernel        as it is, the kernel's TCP over the veth (the reference line)
  stack         unmodified under `tcpstack run --addr ...`: the userspace stack on a TUN, then
                the same veth; the peer is the kernel, so plain TCP
  stack<->stack the aiohttp server also under `tcpstack run` in the first namespace: both ends
                userspace stacks, tcpcrypt negotiated (HTTP only; redis-server is the kernel's)

and then the other way round, the application as the server (`server` in --cases): the same
aiohttp application in the first namespace on the kernel's TCP, and under `tcpstack run` (its
defaults: a TUN with IFF_VNET_HDR, checksum and TSO offloads), each hit from the second
namespace's kernel by ApacheBench and curl:

  ab -k -n N -c 8     requests/s, 8 kept-alive connections (GET /whoami: a small JSON body)
  ab -n N -c 8        requests/s, one connection per request, 8 at a time
  curl 100 MB         MB/s of one 100 MiB body (the best of two)

with the stack's figure over the kernel's beside each (issue 16's goals: at least 0.7 kept
alive, 0.5 per connection, 0.5 bulk).

Figures (higher is better):
  http 1MB GET      MB/s of 1 MiB bodies fetched one after another on one kept-alive connection
  http small GET    requests/s of 100-byte bodies, 16 concurrent connections
  redis SET+GET     operations/s, one connection, one command at a time (round trips)
  redis pipelined   operations/s, one connection, pipelines of 100 SETs then 100 GETs
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SERVER_PROGRAM = os.path.join(ROOT, "tests", "apps", "programs", "aiohttp_server.py")
MB = 1 << 20


# --- the client: a plain asyncio program (run unmodified on the kernel or under the switch) --

async def http_bulk(url: str, seconds: float) -> dict[str, Any]:
    import aiohttp
    n = 0
    async with aiohttp.ClientSession() as session:
        async with session.get(url) as r:               # warm-up: connect, slow start
            assert r.connection is not None
            sid = r.connection.transport.get_extra_info("tcpcrypt_session_id")
            await r.read()
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            async with session.get(url) as r:
                body = await r.read()
            assert len(body) == MB, len(body)
            n += 1
        dt = time.perf_counter() - t0
    return {"MB/s": n * MB / dt / 1e6, "requests/s": n / dt, "tcpcrypt": sid is not None}


async def http_small(url: str, seconds: float, concurrency: int = 16) -> dict[str, float]:
    import aiohttp
    count = 0
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:
        async def worker(deadline: float) -> None:
            nonlocal count
            while time.perf_counter() < deadline:
                async with session.get(url) as r:
                    assert len(await r.read()) == 100
                count += 1
        await asyncio.gather(*(worker(time.perf_counter() + 0.3) for _ in range(concurrency)))
        count = 0
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(t0 + seconds) for _ in range(concurrency)))
        dt = time.perf_counter() - t0
    return {"requests/s": count / dt}


async def redis_ops(host: str, port: int, seconds: float) -> dict[str, float]:
    import redis.asyncio as redis
    r = redis.Redis(host=host, port=port)
    value = b"v" * 100
    await r.set("warm", value)
    n = 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        await r.set(f"k{n % 1000}", value)
        assert await r.get(f"k{n % 1000}") == value
        n += 2
    single = n / (time.perf_counter() - t0)
    n = 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        async with r.pipeline(transaction=False) as p:
            for i in range(100):
                p.set(f"p{i}", value)
            await p.execute()
        async with r.pipeline(transaction=False) as p:
            for i in range(100):
                p.get(f"p{i}")
            assert (await p.execute())[-1] == value
        n += 200
    piped = n / (time.perf_counter() - t0)
    await r.aclose()
    return {"single ops/s": single, "pipelined ops/s": piped}


async def client(args: argparse.Namespace) -> None:
    out: dict[str, Any] = {}
    if args.http:
        out["http 1MB GET"] = await http_bulk(f"{args.http}/bytes/{MB}", args.seconds)
        out["http small GET"] = await http_small(f"{args.http}/bytes/100", args.seconds)
    if args.redis:
        host, port = args.redis.rsplit(":", 1)
        out["redis"] = await redis_ops(host, int(port), args.seconds)
    print(json.dumps(out), flush=True)


# --- the orchestrator (root: namespaces, servers, the three runs) ----------------------------

def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TCPCRYPT_")}
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "/usr/bin:/bin")
    return env


def _tcpstack_run(addr: str, *routes: str) -> list[str]:
    """`tcpstack run --addr ADDR [--route R ...] --` (the script follows: no interpreter)."""
    return ([os.path.join(os.path.dirname(sys.executable), "tcpstack"), "run", "--addr", addr]
            + [a for r in routes for a in ("--route", r)] + ["--"])


def _wait_listen(ns: Any, addr: str, port: int, proc: subprocess.Popen[Any], what: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if f"{addr}:{port}" in ns.run(["ss", "-Hltn", f"sport = :{port}"]).stdout:
            return
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    raise SystemExit(f"bench/apps.py: {what} did not start listening on {addr}:{port}")


def _wait_line(proc: subprocess.Popen[Any], log: str, prefix: str, what: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with open(log, errors="replace") as f:
            if any(line.startswith(prefix) for line in f):
                return
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    with open(log, errors="replace") as f:
        raise SystemExit(f"bench/apps.py: {what} did not start ({proc.poll()}):\n{f.read()[-3000:]}")


def _client(ns: Any, seconds: float, http: str | None, redis: str | None,
            switch: list[str]) -> dict[str, Any]:
    cmd = switch + ([] if switch else [sys.executable])
    cmd += [os.path.abspath(__file__), "client", "--seconds", str(seconds)]
    cmd += (["--http", http] if http else []) + (["--redis", redis] if redis else [])
    r = ns.run(cmd, timeout=seconds * 8 + 60, env=_env())
    if r.returncode != 0:
        raise SystemExit(f"bench/apps.py: client {' '.join(cmd)} failed:\n{r.stdout}\n{r.stderr}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def _ab(ns: Any, url: str, n: int, keep_alive: bool) -> float:
    """ab's requests/s for `ab [-k] -n N -c 8 URL` from `ns`; every request must succeed."""
    cmd = ["ab", "-q", "-s", "30"] + (["-k"] if keep_alive else []) + ["-n", str(n), "-c", "8", url]
    r = ns.run(cmd, timeout=300)
    out = r.stdout
    failed = re.search(r"^Failed requests:\s+(\d+)", out, re.M)
    rate = re.search(r"^Requests per second:\s+([\d.]+)", out, re.M)
    if r.returncode != 0 or not failed or failed.group(1) != "0" or "Non-2xx" in out or not rate:
        raise SystemExit(f"bench/apps.py: {' '.join(cmd)} failed:\n{out}\n{r.stderr}")
    return float(rate.group(1))


def _curl_mbs(ns: Any, url: str, size: int) -> float:
    """MB/s of one download of `size` bytes by curl from `ns` (the best of two)."""
    best = 0.0
    for _ in range(2):
        r = ns.run(["curl", "-sS", "--fail", "-o", "/dev/null", "-w", "%{size_download} %{time_total}",
                    url], timeout=300)
        got = r.stdout.split()
        if r.returncode != 0 or len(got) != 2 or int(got[0]) != size:
            raise SystemExit(f"bench/apps.py: curl {url} failed ({got}):\n{r.stderr}")
        best = max(best, size / float(got[1]) / 1e6)
    return best


def serve_side(args: argparse.Namespace, srv_ns: Any, cli_ns: Any, kernel_url: str, stack_url: str,
               ) -> dict[str, dict[str, float]]:
    """The aiohttp application as the server, on the kernel and on the stack, under ab/curl."""
    out: dict[str, dict[str, float]] = {}
    for name, base in (("kernel", kernel_url), ("stack", stack_url)):
        print(f"running: server side, {name} ...", file=sys.stderr, flush=True)
        # /whoami: a small JSON body the application makes cheaply (/bytes/N hashes its
        # 64 KB pattern block anew for each request, which would set the pace on both sides)
        out[name] = {"ab -k": _ab(cli_ns, f"{base}/whoami", args.requests, True),
                     "ab": _ab(cli_ns, f"{base}/whoami", args.requests, False),
                     "curl 100 MB": _curl_mbs(cli_ns, f"{base}/bytes/{100 * MB}", 100 * MB)}
    return out


SERVER_ROWS = (("ab -k", "ab -k -n N -c 8, requests/s", 0.7), ("ab", "ab -n N -c 8, requests/s", 0.5),
               ("curl 100 MB", "curl 100 MB, MB/s", 0.5))


def server_table(res: dict[str, dict[str, float]], n: int) -> str:
    lines = [f"server side (the aiohttp app; ab/curl on the kernel), N = {n}",
             f"{'':32}{'kernel':>12}{'stack':>12}{'stack/kernel':>14}{'goal':>8}"]
    for key, label, goal in SERVER_ROWS:
        k, s = res["kernel"][key], res["stack"][key]
        lines.append(f"{label:32}{k:>12,.1f}{s:>12,.1f}{s / k:>14.2f}{goal:>8.1f}"
                     + ("" if s / k >= goal else "  (missed)"))
    return "\n".join(lines)


def orchestrate(args: argparse.Namespace) -> dict[str, Any]:
    sys.path.insert(0, ROOT)
    from tun.topology import TwoHosts

    if os.geteuid() != 0:
        raise SystemExit("bench/apps.py: needs root (network namespaces, TUN devices)")
    redis_bin = shutil.which("redis-server")
    results: dict[str, dict[str, Any]] = {}
    with TwoHosts(tuns=False) as net, tempfile.TemporaryDirectory() as tmp:
        srv_ns, cli_ns = net.ns
        va = net.veth_addrs[0]
        cli_stack = f"{net.stack_addrs[1]}/24"
        procs: list[subprocess.Popen[Any]] = []
        try:
            web = srv_ns.popen([sys.executable, SERVER_PROGRAM, va, "8080"], env=_env(),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            procs.append(web)
            _wait_listen(srv_ns, va, 8080, web, "the aiohttp server")
            redis = None
            if redis_bin:
                rs = srv_ns.popen([redis_bin, "--bind", va, "--port", "6379", "--dir", tmp,
                                   "--save", "", "--appendonly", "no", "--protected-mode", "no"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                procs.append(rs)
                _wait_listen(srv_ns, va, 6379, rs, "redis-server")
                redis = f"{va}:6379"
            else:
                print("redis-server not installed: redis rows skipped", file=sys.stderr)
            http = f"http://{va}:8080"
            for name, switch in (("kernel", []), ("stack", _tcpstack_run(cli_stack, f"{va}/32"))):
                if name in args.cases:
                    print(f"running: {name} ...", file=sys.stderr, flush=True)
                    results[name] = _client(cli_ns, args.seconds, http, redis, switch)
            if not args.cases & {"stack<->stack", "server"}:
                return results
            # the server under the switch too (tcpstack run's defaults: offloads on)
            srv_addr = net.stack_addrs[0]
            log = os.path.join(tmp, "web2.log")
            with open(log, "wb") as out:
                web2 = srv_ns.popen(_tcpstack_run(f"{srv_addr}/24")
                                    + [SERVER_PROGRAM, srv_addr, "8081"],
                                    env=_env(), stdout=out, stderr=subprocess.STDOUT)
            procs.append(web2)
            _wait_line(web2, log, "listening on", "the aiohttp server under tcpstack run")
            if "stack<->stack" in args.cases:   # both ends on stacks: tcpcrypt between them
                print("running: stack<->stack ...", file=sys.stderr, flush=True)
                results["stack<->stack"] = _client(cli_ns, args.seconds, f"http://{srv_addr}:8081",
                                                   None, _tcpstack_run(cli_stack, f"{srv_addr}/32"))
            if "server" in args.cases:
                results["server"] = serve_side(args, srv_ns, cli_ns, http, f"http://{srv_addr}:8081")
        finally:
            for p in procs:
                p.terminate()
            for p in procs:
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
    return results


ROWS = (("http 1MB GET", "MB/s"), ("http 1MB GET", "requests/s"), ("http small GET", "requests/s"),
        ("redis", "single ops/s"), ("redis", "pipelined ops/s"))


def table(results: dict[str, dict[str, Any]]) -> str:
    cols = list(results)
    lines = [f"{'case':32}" + "".join(f"{c:>16}" for c in cols) + f"{'stack/kernel':>14}"]
    enc = ["tcpcrypt" if results[c].get("http 1MB GET", {}).get("tcpcrypt") else "plain" for c in cols]
    lines.append(f"{'(HTTP connection)':32}" + "".join(f"{e:>16}" for e in enc))
    for group, unit in ROWS:
        if not cols:
            break
        vals = [results[c].get(group, {}).get(unit) for c in cols]
        cells = "".join(f"{v:>16,.1f}" if v is not None else f"{'-':>16}" for v in vals)
        k, s = results.get("kernel", {}).get(group, {}).get(unit), results.get("stack", {}).get(group, {}).get(unit)
        ratio = f"{s / k:>14.2f}" if k and s else f"{'-':>14}"
        lines.append(f"{group + ' ' + unit:32}{cells}{ratio}")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("part", nargs="?", choices=("client",), help=argparse.SUPPRESS)
    ap.add_argument("--seconds", type=float, default=3.0, help="per measurement (default 3)")
    ap.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    ap.add_argument("--cases", default="kernel,stack,stack<->stack,server",
                    help="comma-separated subset of kernel,stack,stack<->stack,server (default: all)")
    ap.add_argument("--requests", type=int, default=3000, metavar="N",
                    help="ab's -n for the server side (default 3000)")
    ap.add_argument("--http", help=argparse.SUPPRESS)
    ap.add_argument("--redis", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.seconds <= 0:
        ap.error("--seconds must be positive")
    args.cases = set(args.cases.split(","))
    known = {"kernel", "stack", "stack<->stack", "server"}
    if not args.cases <= known:
        ap.error(f"--cases: unknown {', '.join(sorted(args.cases - known))}")
    if args.requests < 8:  # ab: -n below -c is refused
        ap.error("--requests must be at least 8 (ab -c 8)")
    if args.part == "client":
        asyncio.run(client(args))
        return
    t0 = time.perf_counter()
    results = orchestrate(args)
    server = results.pop("server", None)
    if results:
        print(table(results))
    if server is not None:
        print(server_table(server, args.requests))
        results["server"] = server
    print(f"total {time.perf_counter() - t0:.1f} s, python {sys.version.split()[0]}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"python": sys.version.split()[0], "seconds": args.seconds,
                       "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
