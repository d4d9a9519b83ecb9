"""The kernel's TCP beside the stack on a real impaired path, in one run (issue 14 item 1).

    sudo python bench/impaired.py [--quick] [--rows bneck,loss1,...] [--mb N] [--json out.json]
                                  [--kernel-cc cubic,default] [--stack-cc cubic] [--repeat N]

Topology (tun.topology.RoutedHosts): host A and host B, each a network namespace with a TUN
device for a userspace Stack, joined through a router namespace by two veth pairs; MTU 1500
and no offloads anywhere (veth TSO/GSO/GRO/checksum off, TUNs without IFF_VNET_HDR).  The
impairments are all on the router, the same in both directions (data and ACKs):

  bottleneck   tbf 200 Mbit/s on each router egress, with a 100-packet pfifo as its queue
  random loss  iptables -m statistic --mode random --probability P -j DROP (FORWARD)
  burst loss   nft: numgen inc mod 1000 >= 990 drop, one counter per input interface
               (10 consecutive packets of every 1000, per direction)
  delay,       an NFQUEUE program (python NetfilterQueue, COPY_META) in the router: holds
  reordering   each packet and accepts it after the one-way delay; reordering = a fraction
               held that much longer (the others pass at once)

Per row, the same transfers with the kernel's TCP (a small Python socket sender/receiver in
the host namespaces, host A's veth address to host B's) and with the stack (a Stack in each
host namespace, one forked process per host, over the TUNs), plain and tcpcrypt: N MB
A->B then N MB B->A (20 MB, --quick 4 MB), every transfer SHA-256 checked at the receiver and
capped at 120 s (reported as "hung", not waited on).  MB/s is the two directions' bytes over
their two durations (connect until the receiver has seen EOF and said so); ratio = stack MB/s
over kernel MB/s in the same run; RTOs are the senders' retransmission timeouts summed over
the two directions: the kernel's TcpExtTCPTimeouts delta in the sender's namespace, the
stack's connection stats ("timeouts").  cpu= (per row and mode, in the progress lines and
the JSON's cpu_busiest): the busier stack process's CPU time over a transfer's duration,
the largest of the four (two hosts, two directions); near 100 % the stack was CPU-bound,
not waiting on the path.  --stack-cc sets the stack connections' congestion
control (TCPConfig.congestion_control: cubic, newreno, bbr), --kernel-cc the kernel's.

--repeat N runs every row N times, round-robin (all rows, then all rows again), and the table
gives per cell the median MB/s of the runs that finished, the median and mean RTOs per
transfer pair, and how many runs hung.  Single runs of the lossy rows swing several-fold on
both sides (one RTO with backoff more or less decides a 10 MB transfer), so the medians are
the figures to compare.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.run import forked_server, provider  # noqa: E402
from tcpstack import Stack, StackConfig, TCPConfig  # noqa: E402

CAP_S = 120.0          # a transfer still running after this is reported as hung
STACK_CC = "cubic"     # the stack connections' congestion control (--stack-cc)


def stack_config() -> StackConfig:
    return StackConfig(tcp=TCPConfig(congestion_control=STACK_CC))
SEED = 14
NFQ_NUM = 14


@dataclass(frozen=True)
class Row:
    key: str
    label: str
    bottleneck: bool = True
    loss: float = 0.0                  # random loss probability, per packet, each direction
    burst: int = 0                     # packets dropped in a row out of every `every`
    every: int = 1000
    delay_ms: float = 0.0              # one way (the round trip is twice this)
    reorder: float = 0.0               # fraction of packets held reorder_ms longer
    reorder_ms: float = 0.0


ROWS = [
    Row("bneck", "bottleneck only"),
    Row("loss1", "1% random loss + bottleneck", loss=0.01),
    Row("loss3", "3% random loss + bottleneck", loss=0.03),
    Row("loss10", "10% random loss + bottleneck", loss=0.10),
    Row("loss10nb", "10% random loss, no bottleneck", bottleneck=False, loss=0.10),
    Row("burst", "bursts: 10 of every 1000 packets + bottleneck", burst=10, every=1000),
    Row("delay", "50 ms delay round trip + bottleneck", delay_ms=25.0),
    Row("reorder", "20% reordering (+10 ms) + bottleneck", reorder=0.20, reorder_ms=10.0),
]

# --- the router's impairments ----------------------------------------------------------------

NFQ_PROG = r"""
import heapq, random, select, sys, time
from netfilterqueue import NetfilterQueue, COPY_META
qnum, delay, frac, extra = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
rng = random.Random(int(sys.argv[5]))
heap = []; n = 0; now = time.monotonic
def cb(pkt):
    global n
    d = delay + (extra if frac and rng.random() < frac else 0.0)
    if d <= 0:
        pkt.accept(); return
    n += 1
    heapq.heappush(heap, (now() + d, n, pkt))
q = NetfilterQueue()
q.bind(qnum, cb, max_len=65536, mode=COPY_META, range=0, sock_len=16 << 20)
fd = q.get_fd()
print("ready", flush=True)
while True:
    t = now()
    while heap and heap[0][0] <= t:
        heapq.heappop(heap)[2].accept()
    timeout = max(0.0, heap[0][0] - t) if heap else 0.5
    if select.select([fd], [], [], timeout)[0]:
        q.run(block=False)
"""


class Router:
    """Applies one Row's impairments in the router namespace; clear() takes them all off."""

    def __init__(self, net: Any) -> None:
        self.net = net
        self.ns = net.router
        self.nfq: subprocess.Popen[str] | None = None

    def sh(self, *cmd: str) -> str:
        r = self.ns.run(list(cmd))
        if r.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} in the router: {r.stderr.strip()}")
        return r.stdout

    def apply(self, row: Row) -> None:
        self.clear()
        if row.bottleneck:
            for dev in self.net.router_ifs:
                self.sh("tc", "qdisc", "replace", "dev", dev, "root", "handle", "1:", "tbf",
                        "rate", "200mbit", "burst", "64kb", "latency", "1s")
                self.sh("tc", "qdisc", "replace", "dev", dev, "parent", "1:1", "handle", "10:",
                        "pfifo", "limit", "100")
        if row.loss:
            self.sh("iptables", "-w", "-A", "FORWARD", "-m", "statistic", "--mode", "random",
                    "--probability", f"{row.loss}", "-j", "DROP")
        if row.burst:
            # the last `burst` of every `every` (not the first: those would be the SYNs)
            rules = "".join(f"    iifname {dev} numgen inc mod {row.every} >= "
                            f"{row.every - row.burst} "
                            "counter drop\n" for dev in self.net.router_ifs)
            r = self.ns.run(["nft", "-f", "-"], input=(
                "table inet impbench {\n  chain forward_burst {\n"
                "    type filter hook forward priority 0; policy accept;\n"
                f"{rules}  }}\n}}\n"))
            if r.returncode != 0:
                raise RuntimeError(f"nft in the router: {r.stderr.strip()}")
        if row.delay_ms or row.reorder:
            self.nfq = self.ns.popen(
                [sys.executable, "-c", NFQ_PROG, str(NFQ_NUM), str(row.delay_ms / 1e3),
                 str(row.reorder), str(row.reorder_ms / 1e3), str(SEED)],
                stdout=subprocess.PIPE, text=True)
            assert self.nfq.stdout is not None
            if self.nfq.stdout.readline().strip() != "ready":
                raise RuntimeError("the NFQUEUE program did not start")
            self.sh("iptables", "-w", "-A", "FORWARD", "-j", "NFQUEUE", "--queue-num",
                    str(NFQ_NUM))

    def counters(self) -> dict[str, Any]:
        """What the router dropped/queued so far (a check that the impairments act)."""
        out: dict[str, Any] = {}
        r = self.ns.run(["iptables", "-w", "-nvxL", "FORWARD"])
        for line in r.stdout.splitlines():
            f = line.split()
            if len(f) > 2 and f[2] in ("DROP", "NFQUEUE"):
                out[f"iptables_{f[2].lower()}"] = int(f[0])
        r = self.ns.run(["nft", "list", "table", "inet", "impbench"])
        if r.returncode == 0:
            out["nft_drop"] = sum(int(w.split()[0])
                                  for w in r.stdout.split("counter packets ")[1:])
        for dev in self.net.router_ifs:
            r = self.ns.run(["tc", "-s", "qdisc", "show", "dev", dev])
            st = r.stdout.split("dropped ")          # the first: the root (tbf) qdisc
            if " tbf " in r.stdout and len(st) > 1:
                out["tbf_drops"] = out.get("tbf_drops", 0) + int(st[1].split(",")[0])
        return out

    def clear(self) -> None:
        # the NFQUEUE rule goes before its program (no rule: packets no longer wait for it)
        self.ns.run(["iptables", "-w", "-F", "FORWARD"])
        self.ns.run(["nft", "delete", "table", "inet", "impbench"])
        if self.nfq is not None:
            self.nfq.terminate()
            try:
                self.nfq.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.nfq.kill()
                self.nfq.wait()
            self.nfq = None
        for dev in self.net.router_ifs:
            self.ns.run(["tc", "qdisc", "del", "dev", dev, "root"])


# --- the kernel's TCP ------------------------------------------------------------------------

# send: connect, send n seeded bytes, half-close, wait for the receiver's close; prints the
# seconds, TcpExtTCPTimeouts before/after in this namespace, tcpi_total_retrans and the
# sender's last srtt/rttvar/cwnd/ssthresh (bytes) from TCP_INFO.
# recv: listen, print "ready", take one connection, read to EOF, print bytes and SHA-256.
KERNEL_PROG = r"""
import hashlib, json, random, socket, struct, sys, time
def timeouts():
    with open("/proc/net/netstat") as f:
        lines = f.read().splitlines()
    for names, values in zip(lines[::2], lines[1::2]):
        if names.startswith("TcpExt:"):
            return int(dict(zip(names.split(), values.split()))["TCPTimeouts"])
mode, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
if mode == "send":
    n, seed, cc = int(sys.argv[4]), int(sys.argv[5]), sys.argv[6]
    data = memoryview(random.Random(seed).randbytes(n))
    t_before = timeouts()
    t0 = time.perf_counter()
    s = socket.socket()
    if cc != "default":
        # per socket (root may pick any available algorithm; the namespace's default
        # may only be set to an "allowed" one)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, cc.encode())
    s.connect((host, port))
    used = s.getsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, 16).split(b"\0")[0].decode()
    s.sendall(data)
    s.shutdown(socket.SHUT_WR)
    while s.recv(65536): pass
    el = time.perf_counter() - t0
    info = s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
    # struct tcp_info: tcpi_rtt (us) at 68, tcpi_snd_ssthresh 76, tcpi_snd_cwnd 80 (segments),
    # tcpi_snd_mss 16, tcpi_total_retrans 100 -- the same fields as the stack's sender stats
    rtt, rttvar, ssthresh, cwnd = struct.unpack_from("IIII", info, 68)
    mss = struct.unpack_from("I", info, 16)[0]
    print(json.dumps({"seconds": el, "rtos": timeouts() - t_before, "cc": used,
                      "retrans": struct.unpack_from("I", info, 100)[0],
                      "sender": {"srtt": rtt / 1e6, "rttvar": rttvar / 1e6,
                                 "cwnd": cwnd * mss, "ssthresh": ssthresh * mss}}),
          flush=True)
else:
    l = socket.socket(); l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    l.bind((host, port)); l.listen(1); print("ready", flush=True)
    c, _ = l.accept(); h = hashlib.sha256(); got = 0
    while True:
        b = c.recv(1 << 20)
        if not b: break
        got += len(b); h.update(b)
    c.close(); print(json.dumps({"bytes": got, "sha256": h.hexdigest()}), flush=True)
"""


async def kernel_transfer(net: Any, src: int, port: int, n: int, sha: str,
                          cc: str = "default") -> dict[str, Any]:
    """Kernel TCP from host `src` to the other host, n bytes, congestion control `cc`
    ("default": the namespace's, i.e. the host's tcp_congestion_control); capped at CAP_S."""
    dst = 1 - src
    rcv = await asyncio.create_subprocess_exec(
        "ip", "netns", "exec", net.hosts[dst].name, sys.executable, "-c", KERNEL_PROG, "recv",
        net.host_addrs[dst], str(port), stdout=subprocess.PIPE)
    snd = None
    try:
        assert rcv.stdout is not None
        await asyncio.wait_for(rcv.stdout.readline(), 10)
        snd = await asyncio.create_subprocess_exec(
            "ip", "netns", "exec", net.hosts[src].name, sys.executable, "-c", KERNEL_PROG,
            "send", net.host_addrs[dst], str(port), str(n), str(SEED), cc, stdout=subprocess.PIPE)
        out, _ = await asyncio.wait_for(snd.communicate(), CAP_S)
        got = json.loads(await asyncio.wait_for(rcv.stdout.readline(), 10))
        r = json.loads(out)
        return {"seconds": r["seconds"], "rtos": r["rtos"], "retrans": r["retrans"], "cc": r["cc"],
                "sender": r.get("sender"), "ok": got["bytes"] == n and got["sha256"] == sha,
                "bytes": got["bytes"]}
    except asyncio.TimeoutError:
        return {"hung": True, "ok": False}
    finally:
        for p in (snd, rcv):
            if p is not None and p.returncode is None:
                p.kill()
                await p.wait()


# --- the stack --------------------------------------------------------------------------------

def sha256(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


async def send_data(writer: asyncio.StreamWriter, data: bytes) -> None:
    for i in range(0, len(data), 1 << 16):
        writer.write(data[i:i + (1 << 16)])
        await writer.drain()
    writer.write_eof()


SENDER_STATS = ("recoveries", "fast_retransmits", "sack_retransmits", "rack_lost", "tlp_probes",
                "tlp_recoveries", "dsacks_in", "spurious_undos", "dupacks_in", "segs_in",
                "srtt", "rttvar", "rto", "cwnd", "ssthresh")


def sender_stats(s: Any) -> dict[str, Any]:
    """The sending connection's loss-recovery counters and its last RTT/cwnd (for the JSON)."""
    return {k: s.get(k) for k in SENDER_STATS}


def stack_host_b(net: Any, data: bytes,
                 port: int) -> Callable[[socket.socket], Awaitable[None]]:
    """The serve() of host B's forked process: for each of plain (port, port+1) and tcpcrypt
    (port+2, port+3) a sink (reads to EOF, answers a JSON line: bytes, SHA-256) and a source
    (sends `data`, half-closes, waits for the peer's close, then reports its own connection
    stats on the control socket)."""
    from tun import AsyncTun

    async def serve(ctl: socket.socket) -> None:
        st = Stack(AsyncTun(net.devices[1], close_device=False), [net.stack_addrs[1]],
                   stack_config(), security=provider())

        async def sink(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            c0 = time.process_time()
            h = hashlib.sha256()
            got = 0
            while b := await reader.read(1 << 20):
                got += len(b)
                h.update(b)
            writer.write(json.dumps({"bytes": got, "sha256": h.hexdigest(),
                                     "cpu": time.process_time() - c0}).encode() + b"\n")
            writer.write_eof()
            with contextlib.suppress(Exception):
                await reader.read()
            writer.close()

        async def source(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                c0 = time.process_time()
                await send_data(writer, data)
                await reader.read()
                cpu = time.process_time() - c0
                s = writer.get_extra_info("tcp_stats") or {}
                rep = {"rtos": s.get("timeouts"), "retrans": s.get("retransmits"),
                       "sender": sender_stats(s), "cpu": cpu}
            except Exception as e:  # noqa: BLE001 - reported, the parent decides
                rep = {"error": repr(e)}
            ctl.sendall(json.dumps(rep).encode() + b"\n")
            writer.close()

        for enc in (False, True):
            await st.start_server(sink, net.stack_addrs[1], port + 2 * enc, encrypt=enc)
            await st.start_server(source, net.stack_addrs[1], port + 2 * enc + 1, encrypt=enc)
        ctl.sendall(b"ready\n")
        await asyncio.sleep(3600)

    return serve


class CtlLines:
    """Lines from host B's control socket, read on the event loop (a blocked executor
    thread would keep asyncio.run from returning after a hung transfer)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""
        sock.setblocking(False)

    async def readline(self) -> bytes:
        loop = asyncio.get_running_loop()
        while b"\n" not in self.buf:
            b = await loop.sock_recv(self.sock, 4096)
            if not b:
                raise ConnectionError("host B's process is gone")
            self.buf += b
        line, self.buf = self.buf.split(b"\n", 1)
        return line


async def stack_pair(net: Any, ctl: CtlLines, port: int, data: bytes, sha: str,
                     enc: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    """Host A's side: A->B into the sink, then B->A from the source; each capped at CAP_S."""
    from tun import AsyncTun
    n = len(data)
    base = port + 2 * enc
    res = []
    for direction in ("a->b", "b->a"):
        st = Stack(AsyncTun(net.devices[0], close_device=False), [net.stack_addrs[0]],
                   stack_config(), security=provider() if enc else None)
        w = None
        try:
            async def one() -> dict[str, Any]:
                nonlocal w
                t0 = time.perf_counter()
                c0 = time.process_time()
                r, w = await st.open_connection(net.stack_addrs[1],
                                                base + (direction == "b->a"),
                                                encrypt=enc, require_encryption=enc)
                if direction == "a->b":
                    await send_data(w, data)
                    got = json.loads(await r.readline())
                    el = time.perf_counter() - t0
                    cpu_a = time.process_time() - c0
                    s = w.get_extra_info("tcp_stats") or {}
                    return {"seconds": el, "rtos": s.get("timeouts"),
                            "cpu_a": cpu_a, "cpu_b": got.get("cpu"),
                            "retrans": s.get("retransmits"), "bytes": got["bytes"],
                            "sender": sender_stats(s),
                            "ok": got["bytes"] == n and got["sha256"] == sha}
                h = hashlib.sha256()
                got_n = 0
                while b := await r.read(1 << 20):
                    got_n += len(b)
                    h.update(b)
                el = time.perf_counter() - t0
                cpu_a = time.process_time() - c0
                w.write_eof()
                rep = json.loads(await ctl.readline())
                return {"seconds": el, "rtos": rep.get("rtos"), "retrans": rep.get("retrans"),
                        "cpu_a": cpu_a, "cpu_b": rep.get("cpu"),
                        "sender": rep.get("sender"),
                        "bytes": got_n, "ok": got_n == n and h.hexdigest() == sha,
                        **({"error": rep["error"]} if "error" in rep else {})}

            res.append(await asyncio.wait_for(one(), CAP_S))
        except asyncio.TimeoutError:
            res.append({"hung": True, "ok": False})
        except Exception as e:  # noqa: BLE001 - a failed transfer is a result too
            res.append({"error": repr(e), "ok": False})
        finally:
            if w is not None:
                w.close()
            await asyncio.sleep(0.05)
            st.close()
        if res[-1].get("hung") or res[-1].get("error"):
            # host B's reports may now be out of step (or its stack wedged): stop this mode
            res.append({"skipped": True, "ok": False})
            break
    return res[0], res[1]


# --- the run ----------------------------------------------------------------------------------

def combine(a: dict[str, Any], b: dict[str, Any], n: int) -> dict[str, Any]:
    if a.get("hung") or b.get("hung"):
        status = "hung"
    elif not (a.get("ok") and b.get("ok")):
        status = "FAILED"
    else:
        status = "ok"
    r: dict[str, Any] = {"status": status, "a->b": a, "b->a": b}
    if status == "ok":
        r["MB/s"] = 2 * n / (a["seconds"] + b["seconds"]) / 1e6
        r["rtos"] = (a.get("rtos") or 0) + (b.get("rtos") or 0)
        r["retrans"] = (a.get("retrans") or 0) + (b.get("retrans") or 0)
        if "cc" in a:
            r["cc"] = a["cc"]
        busy = [x[k] / x["seconds"] for x in (a, b) for k in ("cpu_a", "cpu_b")
                if x.get(k) is not None and x["seconds"] > 0]
        if busy:
            # the busier of the two stack processes, as a share of one core: near 100 %
            # the stack is CPU-bound, not waiting on the path
            r["cpu_busiest"] = max(busy)
    return r


def run_row(net: Any, router: Router, row: Row, data: bytes, sha: str,
            port: int, kernel_ccs: list[str]) -> dict[str, Any]:
    n = len(data)
    router.apply(row)
    try:
        out: dict[str, Any] = {"row": row.key, "label": row.label}

        async def kernel() -> None:
            # "kernel": the reference for the ratios, the first algorithm asked for (cubic
            # by default: the stack's own default, so the loss recovery is compared under
            # the same congestion response); "kernel/<cc>": the others, for comparison
            for i, cc in enumerate(kernel_ccs):
                a = await kernel_transfer(net, 0, port, n, sha, cc)
                b = await kernel_transfer(net, 1, port + 1, n, sha, cc)
                out["kernel" if i == 0 else f"kernel/{cc}"] = combine(a, b, n)

        asyncio.run(kernel())
        for enc in (False, True):        # a fresh host B process per mode
            with forked_server(stack_host_b(net, data, port)) as (ctl_sock, _):
                async def stack() -> None:
                    a, b = await stack_pair(net, CtlLines(ctl_sock), port, data, sha, enc)
                    out["tcpcrypt" if enc else "plain"] = combine(a, b, n)
                asyncio.run(stack())
        out["router"] = router.counters()
        return out
    finally:
        router.clear()


def fmt(r: dict[str, Any], kernel: dict[str, Any] | None = None) -> list[str]:
    if r["status"] != "ok":
        return [f"over {CAP_S:.0f} s" if r["status"] == "hung" else r["status"]] + (["-"] if kernel is not None else []) + ["-"]
    cpu = f" ({r['cpu_busiest']:.0%} cpu)" if "cpu_busiest" in r else ""
    cells = [f"{r['MB/s']:.1f}{cpu}"]
    if kernel is not None:
        cells.append(f"{r['MB/s'] / kernel['MB/s']:.2f}" if kernel.get("status") == "ok" else "-")
    cells.append(str(r["rtos"]))
    return cells


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Several runs of one cell (same row, same side) -> medians, for --repeat."""
    import statistics
    ok = [r for r in runs if r["status"] == "ok"]
    out: dict[str, Any] = {"runs": len(runs), "ok": len(ok),
                           "hung": sum(r["status"] == "hung" for r in runs),
                           "failed": sum(r["status"] == "FAILED" for r in runs)}
    out["status"] = "FAILED" if out["failed"] else ("ok" if ok else "hung")
    if ok:
        out["MB/s"] = statistics.median(r["MB/s"] for r in ok)
        out["rtos"] = statistics.median(r["rtos"] for r in ok)
        out["rtos_mean"] = statistics.mean(r["rtos"] for r in ok)
        out["rtos_all"] = [r["rtos"] for r in ok]
        out["MB/s_all"] = [round(r["MB/s"], 2) for r in ok]
        busy = [r["cpu_busiest"] for r in ok if "cpu_busiest" in r]
        if busy:
            out["cpu_busiest"] = statistics.median(busy)
        # the senders' smoothed RTT at the end of each transfer (kernel: TCP_INFO)
        rtts = [d["sender"]["srtt"] for r in ok for d in (r["a->b"], r["b->a"])
                if (d.get("sender") or {}).get("srtt")]
        if rtts:
            out["srtt_ms_median"] = 1e3 * statistics.median(rtts)
    return out


def fmt_summary(r: dict[str, Any], kernel: dict[str, Any] | None = None) -> list[str]:
    hung = f", {r['hung']}/{r['runs']} over {CAP_S:.0f} s" if r["hung"] else ""
    if r["status"] == "FAILED":
        return ["FAILED"] + (["-"] if kernel is not None else []) + ["-"]
    if not r["ok"]:
        return [f"over {CAP_S:.0f} s"] + (["-"] if kernel is not None else []) + ["-"]
    cpu = f" ({r['cpu_busiest']:.0%} cpu)" if "cpu_busiest" in r else ""
    cells = [f"{r['MB/s']:.1f}{cpu}{hung}"]
    if kernel is not None:
        cells.append(f"{r['MB/s'] / kernel['MB/s']:.2f}" if kernel.get("ok") else "-")
    cells.append(f"{r['rtos']:g} ({r['rtos_mean']:.1f})")
    return cells


def table(rows: list[dict[str, Any]], mb: float, kernel_ccs: list[str], n: int = 1) -> str:
    """The markdown table: one row per result (n == 1) or per row's summary (--repeat n)."""
    cell = fmt if n == 1 else fmt_summary
    ref = kernel_ccs[0]
    head = ["path (router, both directions)", f"kernel ({ref}) MB/s", "kernel RTOs",
            f"stack ({STACK_CC}) plain MB/s", "ratio", "RTOs", "stack tcpcrypt MB/s", "ratio",
            "RTOs"]
    for cc in kernel_ccs[1:]:
        head += [f"kernel ({cc}) MB/s", "RTOs"]
    lines = ["| " + " | ".join(head) + " |",
             "|---|" + "---:|" * (len(head) - 1)]
    for r in rows:
        k = r["kernel"]
        cells = [r["label"]] + cell(k) + cell(r["plain"], k) + cell(r["tcpcrypt"], k)
        for cc in kernel_ccs[1:]:
            cells += cell(r[f"kernel/{cc}"])
        lines.append("| " + " | ".join(cells) + " |")
    if n == 1:
        return "\n".join(lines) + f"\n\n({mb:g} MB each way per cell, MTU 1500, no offloads)"
    return "\n".join(lines) + (f"\n\n(medians of {n} runs per cell, {mb:g} MB each way; RTOs: "
                               "median (mean) per transfer pair; MTU 1500, no offloads)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="4 MB each way instead of 20")
    ap.add_argument("--mb", type=float, help="MB each way (overrides --quick)")
    ap.add_argument("--rows", help="comma-separated subset of " + ",".join(r.key for r in ROWS))
    ap.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    ap.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    ap.add_argument("--kernel-cc", default="cubic,default", metavar="CC[,CC...]",
                    help="the kernel's congestion control per transfer (TCP_CONGESTION), the "
                         "first one the reference for the ratios; 'default' is the host's "
                         "net.ipv4.tcp_congestion_control (default: cubic,default: cubic is "
                         "the stack's own default)")
    ap.add_argument("--stack-cc", default="cubic", metavar="CC",
                    help="the stack connections' congestion control (TCPConfig."
                         "congestion_control: cubic, newreno, bbr; default cubic)")
    ap.add_argument("--repeat", type=int, default=1, metavar="N",
                    help="run every row N times, round-robin, and report medians (default 1)")
    args = ap.parse_args()
    if args.repeat < 1:
        sys.exit("--repeat: must be at least 1")
    from tcpstack.tcp.congestion import algorithm_name
    global STACK_CC
    try:
        STACK_CC = algorithm_name(args.stack_cc)
    except ValueError as e:
        sys.exit(f"--stack-cc: {e}")
    if os.geteuid() != 0:
        sys.exit("impaired.py needs root (namespaces, TUN, tc, iptables, nft, NFQUEUE)")
    rows = ROWS
    if args.rows:
        want = args.rows.split(",")
        bad = [w for w in want if w not in {r.key for r in ROWS}]
        if bad:
            sys.exit(f"unknown rows: {','.join(bad)}")
        rows = [r for r in ROWS if r.key in want]
    if args.loop == "uvloop":
        try:
            import uvloop
            asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
        except ImportError:
            args.loop = "asyncio"
    with open("/proc/sys/net/ipv4/tcp_congestion_control") as f:
        host_cc = f.read().strip()
    with open("/proc/sys/net/ipv4/tcp_available_congestion_control") as f:
        available = f.read().split()
    kernel_ccs: list[str] = []
    for cc in args.kernel_cc.split(","):
        cc = host_cc if cc == "default" else cc
        if cc not in available:
            sys.exit(f"--kernel-cc: {cc} is not available here (available: {' '.join(available)})")
        if cc not in kernel_ccs:
            kernel_ccs.append(cc)
    print(f"kernel congestion control: {', '.join(kernel_ccs)} (host default {host_cc}); "
          f"the stack: {STACK_CC}", flush=True)
    mb = args.mb or (4 if args.quick else 20)
    n = int(mb * 1e6)
    data = random.Random(SEED).randbytes(n)      # the kernel sender makes the same bytes
    sha = sha256(data)
    # SIGTERM unwinds like ^C, so the namespaces and processes are removed
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    from tun.topology import RoutedHosts
    results: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    with RoutedHosts() as net:
        router = Router(net)
        for i, row in enumerate([r for _ in range(args.repeat) for r in rows]):
            # ports move on with every run: no TIME-WAIT or late segment of an earlier run
            r = run_row(net, router, row, data, sha, 40000 + 10 * i, kernel_ccs)
            results.append(r)
            brief = "  ".join(
                f"{k} {r[k]['MB/s']:.1f} MB/s rtos={r[k]['rtos']}"
                + (f" cpu={r[k]['cpu_busiest']:.0%}" if "cpu_busiest" in r[k] else "")
                if r[k]["status"] == "ok"
                else f"{k} {r[k]['status']}"
                for k in ("kernel", *(f"kernel/{cc}" for cc in kernel_ccs[1:]), "plain", "tcpcrypt"))
            print(f"{row.label:48} {brief}  router={r['router']}", flush=True)
    print()
    summary: list[dict[str, Any]] = []
    if args.repeat > 1:
        cells = ("kernel", *(f"kernel/{cc}" for cc in kernel_ccs[1:]), "plain", "tcpcrypt")
        for row in rows:
            mine = [r for r in results if r["row"] == row.key]
            summary.append({"row": row.key, "label": row.label,
                            **{c: summarize([r[c] for r in mine]) for c in cells}})
        print(table(summary, mb, kernel_ccs, args.repeat))
    else:
        print(table(results, mb, kernel_ccs))
    print(f"\ntotal {time.perf_counter() - t0:.0f} s, loop={args.loop}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"mb_each_way": mb, "loop": args.loop, "python": sys.version.split()[0],
                       "kernel_cc": kernel_ccs, "stack_cc": STACK_CC, "repeat": args.repeat,
                       "results": results, "summary": summary}, f, indent=1)


if __name__ == "__main__":
    main()
