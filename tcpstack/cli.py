"""The `tcpstack` command line: bring a userspace stack up on a TUN device and use it.

    tcpstack up      --addr 10.77.0.2/24 [--route 10.78.0.0/24] [--echo 7] [--http 80]
    tcpstack listen  PORT      --addr 10.77.0.2/24       (netcat-like: stdin -> peer -> stdout)
    tcpstack connect HOST PORT --addr 10.78.0.2/24
    tcpstack ping    HOST      --addr 10.77.0.2/24 [-c 3]
    tcpstack stats   [--control PATH] [--json]            (an `ss -ti`-like view of a running one)
    tcpstack trace   [--control PATH]                     (its live per-segment trace)
    tcpstack diagram FILE.pcap [--svg OUT.svg]            (a ladder diagram of a capture)

up/listen/connect/ping create a TUN device in the current network namespace: the kernel side
gets --peer (default: the first other address of --addr's prefix) and the stack owns --addr;
--route adds kernel routes through the device.  tcpcrypt is on by default (--plain turns it
off, --require-encryption refuses plain peers).  --pcap FILE captures every packet, --trace
prints the trace on stderr, and a control socket (--control, default /run/tcpstack/DEV.sock)
serves `stats` and `trace`.
"""
from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import os
import signal
import sys
import threading
import time
from typing import Any

from . import control


def add_link_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("the TUN device and the stack")
    g.add_argument("--addr", required=True, help="the stack's address with prefix, e.g. 10.77.0.2/24")
    g.add_argument("--peer", help="the kernel side's address (default: the prefix's first other one)")
    g.add_argument("--dev", help="TUN device name (default: tcs<pid>x<n>)")
    g.add_argument("--mtu", type=int, default=1500)
    g.add_argument("--route", action="append", default=[], metavar="CIDR",
                   help="also route CIDR through the TUN device (repeatable)")
    g.add_argument("--offload", action="store_true",
                   help="IFF_VNET_HDR with checksum/TSO offloads (64 KB super-segments)")
    g.add_argument("--plain", action="store_true", help="no TCP-ENO/tcpcrypt: plain TCP only")
    g.add_argument("--pcap", metavar="FILE", help="capture every packet sent and received")
    g.add_argument("--trace", action="store_true", help="print the per-segment trace on stderr")
    g.add_argument("--control", metavar="PATH", help="control socket (default /run/tcpstack/DEV.sock)")


def err(msg: str) -> None:
    print(f"tcpstack: {msg}", file=sys.stderr, flush=True)


class Host:
    """A TUN device + Stack + capture/trace/control, as the command line options say."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        iface = ipaddress.ip_interface(args.addr)
        self.addr = str(iface.ip)
        if args.peer:
            peer = ipaddress.ip_address(args.peer)
        else:
            peer = next(h for h in iface.network.hosts() if h != iface.ip)
        self.peer = str(peer)
        self.prefixlen = iface.network.prefixlen
        self.dev: Any = None
        self.stack: Any = None
        self.control: control.ControlServer | None = None
        self._pcap: Any = None
        # seconds to wait at exit for unacknowledged data (see Stack.linger)
        self.linger: float = getattr(args, "linger", 10.0)

    async def __aenter__(self) -> "Host":
        from tun.device import TUN_F_CSUM, TUN_F_TSO4, TUN_F_TSO6, AsyncTun, TunDevice, unique_ifname

        from .pcap import PcapWriter
        from .streams import Stack
        from .trace import Tracer
        a = self.args
        self.dev = TunDevice(a.dev or unique_ifname("tcs"), vnet_hdr=a.offload)
        try:
            self.dev.configure(f"{self.peer}/{self.prefixlen}", a.route or None, a.mtu)
            if a.offload:
                self.dev.enable_offloads(TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6)
            loop = asyncio.get_running_loop()
            self.stack = Stack(AsyncTun(self.dev, gro=a.offload), [self.addr],
                               security=None if a.plain else "default")
            core = self.stack.core
            if a.pcap:
                self._pcap = PcapWriter(a.pcap, clock_offset=time.time() - loop.time())
                core.on_packet = self._pcap
            self.control = control.ControlServer(self.stack, a.control or control.default_path(self.dev.name))
            await self.control.start()
            ctl = self.control

            def sink(line: str) -> None:
                if a.trace:
                    print(line, file=sys.stderr, flush=True)
                ctl.trace_line(line)
            Tracer(core, sink)
        except BaseException:
            await self.__aexit__()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.control is not None:
            self.control.close()
        if self.stack is not None:
            if exc[0] is None:
                # What the application wrote must still reach the peer after it is done:
                # the stack dies with this process (a kernel would keep sending).
                await self.stack.linger(self.linger)
            self.stack.close()
        if self._pcap is not None:
            self._pcap.close()
        if self.dev is not None:
            self.dev.close()

    def describe(self) -> str:
        return (f"stack {self.addr} on {self.dev.name} (kernel side {self.peer}/{self.prefixlen}, "
                f"MTU {self.args.mtu}{', offloads' if self.args.offload else ''}), "
                f"control {self.control.path if self.control else '-'}")

    def conn_options(self) -> dict[str, Any]:
        a = self.args
        return {"encrypt": not a.plain,
                "require_encryption": bool(getattr(a, "require_encryption", False))}


def session_line(writer: asyncio.StreamWriter) -> str:
    ep = writer.get_extra_info("endpoint")
    info = control.connection_info(ep)
    head = f"connected {info['local']} <-> {info['remote']}"
    if info["session_id"]:
        return (f"{head}, tcpcrypt {info['tep']} {info['aead']}, "
                f"session ID {info['session_id']}")
    return f"{head}, plain TCP (the peer did not negotiate TCP-ENO)"


class Progress:
    """Bytes both ways and the rate, redrawn in place on stderr."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.sent = self.received = 0
        self.t0 = time.monotonic()
        self._last = 0.0

    def update(self, force: bool = False) -> None:
        now = time.monotonic()
        if not self.enabled or (not force and now - self._last < 0.25):
            return
        self._last = now
        el = max(now - self.t0, 1e-6)
        total = self.sent + self.received
        bar = "#" * min(30, int(total / (1 << 20)) % 31)
        sys.stderr.write(f"\r[{bar:<30}] sent {self.sent / 1e6:9.2f} MB  received "
                         f"{self.received / 1e6:9.2f} MB  {total / el / 1e6:8.2f} MB/s")
        sys.stderr.flush()

    def done(self) -> None:
        if self.enabled:
            self.update(force=True)
            sys.stderr.write("\n")


def _stdin_chunks(loop: asyncio.AbstractEventLoop) -> asyncio.Queue[bytes]:
    """stdin read by a daemon thread (works for pipes, files and terminals alike; a blocked
    read never holds the process at exit).  b"" marks EOF."""
    q: asyncio.Queue[bytes] = asyncio.Queue(maxsize=16)
    fd = sys.stdin.fileno()

    def reader() -> None:
        while True:
            try:
                chunk = os.read(fd, 1 << 16)
            except OSError:
                chunk = b""
            asyncio.run_coroutine_threadsafe(q.put(chunk), loop).result()
            if not chunk:
                return
    threading.Thread(target=reader, name="stdin", daemon=True).start()
    return q


async def netcat(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 progress: Progress) -> None:
    """stdin -> connection (half-close at EOF), connection -> stdout, until both are done."""
    loop = asyncio.get_running_loop()
    out = sys.stdout.buffer

    async def up() -> None:
        q = _stdin_chunks(loop)
        while chunk := await q.get():
            writer.write(chunk)
            progress.sent += len(chunk)
            progress.update()
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()

    async def down() -> None:
        while data := await reader.read(1 << 16):
            out.write(data)
            progress.received += len(data)
            progress.update()
        out.flush()

    up_task = asyncio.create_task(up())
    try:
        await down()
        await up_task
    finally:
        up_task.cancel()
        progress.done()
        writer.close()


async def cmd_connect(args: argparse.Namespace) -> int:
    async with Host(args) as host:
        err(host.describe())
        try:
            reader, writer = await asyncio.wait_for(
                host.stack.open_connection(args.host, args.port, **host.conn_options()), args.timeout)
        except Exception as exc:          # refused, reset, timed out, encryption required
            err(f"connect to {args.host}:{args.port} failed: {exc or type(exc).__name__}")
            return 1
        err(session_line(writer))
        await netcat(reader, writer, Progress(args.progress or sys.stderr.isatty()))
    return 0


async def cmd_listen(args: argparse.Namespace) -> int:
    async with Host(args) as host:
        accepted: asyncio.Future[tuple[Any, Any]] = asyncio.get_running_loop().create_future()

        async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            if accepted.done():              # netcat serves one peer
                writer.close()
                return
            accepted.set_result((reader, writer))
            await done

        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        server = await host.stack.start_server(on_client, host.addr, args.port, **host.conn_options())
        err(f"{host.describe()}; listening on {host.addr}:{args.port}")
        reader, writer = await accepted
        server.close()
        err(session_line(writer))
        try:
            await netcat(reader, writer, Progress(args.progress or sys.stderr.isatty()))
        finally:
            done.set_result(None)
    return 0


async def cmd_ping(args: argparse.Namespace) -> int:
    async with Host(args) as host:
        core = host.stack.core
        loop = asyncio.get_running_loop()
        sent: dict[int, float] = {}
        got: list[float] = []
        replied = asyncio.Event()
        ident = os.getpid() & 0xFFFF

        def on_reply(src: str, rid: int, seq: int, data: bytes, now: float) -> None:
            if rid == ident and seq in sent:
                rtt = (loop.time() - sent.pop(seq)) * 1e3
                got.append(rtt)
                print(f"{len(data)} bytes from {src}: icmp_seq={seq} time={rtt:.3f} ms", flush=True)
                replied.set()
        core.on_echo_reply = on_reply
        print(f"PING {args.host} from {host.addr}", flush=True)
        for seq in range(1, args.count + 1):
            replied.clear()
            sent[seq] = loop.time()
            core.ping(args.host, loop.time(), ident=ident, seq=seq, data=bytes(56))
            host.stack._kick()
            try:
                await asyncio.wait_for(replied.wait(), args.interval)
            except asyncio.TimeoutError:
                pass
            if seq < args.count and replied.is_set():
                await asyncio.sleep(args.interval)
        loss = 100.0 * (args.count - len(got)) / args.count
        print(f"--- {args.host} ping statistics ---\n{args.count} packets transmitted, "
              f"{len(got)} received, {loss:.0f}% packet loss", flush=True)
        if got:
            print(f"rtt min/avg/max = {min(got):.3f}/{sum(got) / len(got):.3f}/{max(got):.3f} ms")
        return 0 if got else 1


# --- up: keep serving --------------------------------------------------------------------

async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(1 << 16):
        writer.write(data)
        await writer.drain()
    writer.close()


async def _discard(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while await reader.read(1 << 20):
        pass
    writer.close()


def _http_handler(host: Host) -> Any:
    async def http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """HTTP/1.0: GET /N sends N bytes; GET / a small page with the connection's
        tcpcrypt state (plain for a kernel client)."""
        try:
            line = (await reader.readline()).decode("latin-1").split()
            while (await reader.readline()).strip():
                pass
            path = line[1] if len(line) > 1 else "/"
            if path.strip("/").isdigit():
                n = int(path.strip("/"))
                writer.write(b"HTTP/1.0 200 OK\r\nContent-Type: application/octet-stream\r\n"
                             + f"Content-Length: {n}\r\n\r\n".encode())
                block = b"tcpstack" * 8192
                while n:
                    k = min(n, len(block))
                    writer.write(block[:k])
                    n -= k
                    await writer.drain()
            else:
                body = (json.dumps(control.connection_info(writer.get_extra_info("endpoint")),
                                   indent=1) + "\n").encode()
                writer.write(b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n"
                             + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
            await writer.drain()
        finally:
            writer.close()
    return http


async def cmd_up(args: argparse.Namespace) -> int:
    async with Host(args) as host:
        opts = host.conn_options()
        servers = []
        for port, cb in ((args.echo, _echo), (args.discard, _discard),
                         (args.http, _http_handler(host))):
            if port:
                servers.append(await host.stack.start_server(cb, None, port, **opts))
        err(f"up: {host.describe()}"
            + "".join(f"; {name} on port {p}" for name, p in
                      (("echo", args.echo), ("discard", args.discard), ("http", args.http)) if p))
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        for s in servers:
            s.close()
        err("down")
    return 0


# --- clients of a running process ----------------------------------------------------------

def _find_control(path: str | None) -> str:
    if path:
        return path
    try:
        socks = sorted(f for f in os.listdir(control.DEFAULT_DIR) if f.endswith(".sock"))
    except FileNotFoundError:
        socks = []
    if len(socks) != 1:
        raise SystemExit(f"tcpstack: {len(socks)} control sockets in {control.DEFAULT_DIR}; "
                         "say which with --control PATH")
    return os.path.join(control.DEFAULT_DIR, socks[0])


def render_stats(snap: dict[str, Any]) -> str:
    """An `ss -ti`-like table."""
    rows = [f"stack {', '.join(snap['addresses'])}; listening: "
            f"{', '.join(snap['listeners']) or '-'}"]
    hdr = (f"{'State':<12} {'Local':<22} {'Remote':<22} {'cwnd':>8} {'ssthresh':>10} "
           f"{'srtt ms':>8} {'rto ms':>7} {'retrans':>7} {'bytes out':>11} {'bytes in':>11}  tcpcrypt")
    rows.append(hdr)
    for c in snap["connections"]:
        ssth = c.get("ssthresh")
        ssth_s = "inf" if ssth is None or ssth >= 1 << 30 else str(ssth)
        srtt = c.get("srtt")
        crypt = f"{c['tep']} {c['aead']}" if c.get("session_id") else "plain"
        rows.append(f"{c['state']:<12} {c['local']:<22} {c['remote']:<22} {c.get('cwnd', 0):>8} "
                    f"{ssth_s:>10} {srtt * 1e3 if srtt is not None else float('nan'):>8.2f} "
                    f"{c.get('rto', 0) * 1e3:>7.0f} {c.get('retransmits', 0):>7} "
                    f"{c.get('bytes_out', 0):>11} {c.get('bytes_in', 0):>11}  {crypt}")
        rows.append(f"{'':12} fast {c.get('fast_retransmits', 0)} sack "
                    f"{c.get('sack_retransmits', 0)} timeouts {c.get('timeouts', 0)} "
                    f"{c.get('congestion_control', '')}"
                    + (f" session {c['session_id']}" if c.get("session_id") else ""))
    st = snap["stack"]
    rows.append("stack: " + " ".join(f"{k}={v}" for k, v in st.items() if v))
    return "\n".join(rows) + "\n"


async def cmd_stats(args: argparse.Namespace) -> int:
    reader, writer = await control.request(_find_control(args.control), "stats")
    snap = json.loads(await reader.readline())
    writer.close()
    if args.json:
        print(json.dumps(snap, indent=1))
    else:
        sys.stdout.write(render_stats(snap))
    return 0


async def cmd_trace(args: argparse.Namespace) -> int:
    reader, writer = await control.request(_find_control(args.control), "trace")
    n = 0
    try:
        while line := await reader.readline():
            sys.stdout.write(line.decode())
            sys.stdout.flush()
            n += 1
            if args.count and n >= args.count:
                break
    finally:
        writer.close()
    return 0


def build_parser() -> argparse.ArgumentParser:
    from .__main__ import __doc__ as main_doc
    parser = argparse.ArgumentParser(prog="tcpstack", description=main_doc,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="count", default=0)
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("demo", help="show the stack working (TUN + kernel as root, in-memory otherwise)")
    p = sub.add_parser("up", help="bring a TUN interface and a stack up and keep serving")
    add_link_options(p)
    p.add_argument("--echo", type=int, metavar="PORT", help="serve echo on PORT")
    p.add_argument("--discard", type=int, metavar="PORT", help="serve discard on PORT")
    p.add_argument("--http", type=int, metavar="PORT", help="serve HTTP on PORT (GET /N: N bytes)")
    for name, helptext in (("connect", "netcat-like client"), ("listen", "netcat-like server")):
        p = sub.add_parser(name, help=helptext)
        if name == "connect":
            p.add_argument("host")
        p.add_argument("port", type=int)
        add_link_options(p)
        p.add_argument("--require-encryption", action="store_true",
                       help="fail instead of falling back to plain TCP")
        p.add_argument("--progress", action="store_true", help="progress bar on stderr (default: when a TTY)")
        p.add_argument("--timeout", type=float, default=30.0, help="connect timeout, seconds")
        p.add_argument("--linger", type=float, default=10.0,
                       help="at exit, wait this long for sent data to be acknowledged (seconds)")
    p = sub.add_parser("ping", help="ICMP echo from the userspace stack")
    p.add_argument("host")
    p.add_argument("-c", "--count", type=int, default=3)
    p.add_argument("-i", "--interval", type=float, default=1.0)
    add_link_options(p)
    p = sub.add_parser("stats", help="connections of a running tcpstack (like ss -ti)")
    p.add_argument("--control", metavar="PATH")
    p.add_argument("--json", action="store_true")
    p = sub.add_parser("trace", help="live per-segment trace of a running tcpstack")
    p.add_argument("--control", metavar="PATH")
    p.add_argument("-n", "--count", type=int, default=0, help="stop after N lines")
    p = sub.add_parser("diagram", help="ladder diagram of a pcap (text, --svg)", add_help=False)
    p.add_argument("rest", nargs=argparse.REMAINDER)
    return parser


COMMANDS = {"up": cmd_up, "connect": cmd_connect, "listen": cmd_listen, "ping": cmd_ping,
            "stats": cmd_stats, "trace": cmd_trace}
