"""The control channel of a running `tcpstack` process: a unix socket speaking JSON lines.

A client sends one request line and reads the answer:

    {"cmd": "stats"}   -> one JSON line: the stack's counters, its listeners and every
                          connection (state, cwnd, ssthresh, srtt, rto, retransmits, bytes,
                          TEP, AEAD, session ID), and with an overlay node, its
                          services and bridged connections under "overlay"
                          (render_overlay), then the server closes the socket;
    {"cmd": "trace"}   -> text lines, one per segment and state transition
                          (tcpstack.tools.trace), until the client goes away.

`tcpstack stats` / `tcpstack trace` are the clients (tcpstack/tools/cli.py).
"""
from __future__ import annotations

import asyncio
import dataclasses
import errno
import ipaddress
import json
import logging
import os
import socket
from typing import Any, Callable

log = logging.getLogger(__name__)

# where control sockets go by default; TCPSTACK_RUN_DIR moves them (tests, a non-root setup)
DEFAULT_DIR = os.environ.get("TCPSTACK_RUN_DIR") or "/run/tcpstack"


def default_path(dev: str) -> str:
    return os.path.join(DEFAULT_DIR, f"{dev}.sock")


def connection_info(ep: Any) -> dict[str, Any]:
    """One connection as `stats` shows it (JSON-able)."""
    s = ep.conn.stats
    info: dict[str, Any] = {
        "local": f"{ep.local[0]}:{ep.local[1]}", "remote": f"{ep.remote[0]}:{ep.remote[1]}",
        "state": ep.conn.state.value,
        **{k: getattr(s, k) for k in ("cwnd", "ssthresh", "srtt", "rttvar", "rto", "mss",
                                      "retransmits", "fast_retransmits", "sack_retransmits",
                                      "timeouts", "bytes_out", "bytes_in", "bytes_acked",
                                      "bytes_received", "segs_out", "segs_in",
                                      "challenge_acks", "congestion_control")
           if hasattr(s, k)},
    }
    tc = ep.info.get("tcpcrypt") or {}
    sid = ep.info.get("tcpcrypt_session_id")
    info["encrypted"] = bool(ep.info.get("encrypted"))
    info["tep"] = _name("TEPS", tc.get("tep"))
    info["aead"] = _name("AEADS", tc.get("aead"))
    info["session_id"] = sid.hex() if sid else None
    return info


def _name(table: str, ident: int | None) -> str | None:
    if ident is None:
        return None
    try:
        from tcpcrypt import suites
        return getattr(suites, table)[ident].name
    except (ImportError, AttributeError, KeyError):
        return f"{ident:#x}"


def snapshot(stack: Any, sections: dict[str, Callable[[], Any]] | None = None) -> dict[str, Any]:
    core = stack.core
    extra = {name: f() for name, f in (sections or {}).items()}
    return {**extra,
        "addresses": stack.addresses,
        "stack": dataclasses.asdict(core.stats),
        "listeners": [f"{ipaddress.ip_address(l.addr) if l.addr else '*'}:{l.port}"
                      for l in getattr(core, "_listeners", {}).values()],
        "connections": [connection_info(ep) for ep in core.endpoints()],
    }


class ControlServer:
    """Serves the control socket of one Stack; `tracer_lines` is where trace lines are fanned
    out to (the caller wires it to a tcpstack.tools.trace.Tracer's sink)."""

    def __init__(self, stack: Any, path: str) -> None:
        self.stack = stack
        self.path = path
        self._server: asyncio.AbstractServer | None = None
        self._trace_queues: set[asyncio.Queue[str]] = set()
        # called when the first trace client comes or the last one goes (`tracing` changed)
        self.on_tracing: Callable[[], None] | None = None
        # more of the snapshot: name -> a function giving it (the overlay node: "overlay")
        self.sections: dict[str, Callable[[], Any]] = {}

    async def start(self) -> None:
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        if os.path.exists(self.path):
            if is_live(self.path):
                raise OSError(errno.EADDRINUSE, "in use by another running tcpstack "
                              "(give this one another --control)")
            os.unlink(self.path)            # a stale socket of a dead process
        self._server = await asyncio.start_unix_server(self._client, self.path)

    def trace_line(self, line: str) -> None:
        for q in self._trace_queues:
            if q.qsize() < 10_000:          # a slow reader loses lines, never memory
                q.put_nowait(line)

    def _tracing_changed(self) -> None:
        if self.on_tracing is not None and self._server is not None:
            self.on_tracing()

    @property
    def tracing(self) -> bool:
        return bool(self._trace_queues)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # A client may go away at any moment (`tcpstack trace` stopped, a probe that only
        # connects): that ends its service quietly, it is never an error of this process.
        try:
            line = await reader.readline()
            if not line:
                return
            req = json.loads(line)
            cmd = req.get("cmd") if isinstance(req, dict) else None
            if cmd == "stats":
                writer.write(json.dumps(snapshot(self.stack, self.sections)).encode() + b"\n")
                await writer.drain()
            elif cmd == "trace":
                q: asyncio.Queue[str] = asyncio.Queue()
                self._trace_queues.add(q)
                self._tracing_changed()
                try:
                    while not writer.is_closing():
                        writer.write((await q.get() + "\n").encode())
                        await writer.drain()
                finally:
                    self._trace_queues.discard(q)
                    self._tracing_changed()
            else:
                writer.write(json.dumps({"error": f"unknown command {cmd!r}"}).encode() + b"\n")
                await writer.drain()
        except (OSError, ValueError, RuntimeError, asyncio.CancelledError) as exc:
            # RuntimeError: uvloop < 0.21 raises it (not OSError) for a write to a transport
            # the client already closed ("the handler is closed")
            log.debug("control client: %s", exc)
        finally:
            try:
                writer.close()
                # ... and the close's outcome is taken, so a reset the client caused is not
                # left in the stream's "closed" future for asyncio to report as an
                # unretrieved exception when it is collected (seen on Python 3.13)
                await writer.wait_closed()
            except (OSError, RuntimeError, asyncio.CancelledError):  # (the loop may be closing)
                pass

    def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


def is_live(path: str) -> bool:
    """Whether a process listens on the unix socket at `path` (False for a stale one)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(2)
    try:
        sock.connect(path)
        return True
    except OSError:
        return False
    finally:
        sock.close()


async def request(path: str, cmd: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_unix_connection(path)
    writer.write(json.dumps({"cmd": cmd}).encode() + b"\n")
    await writer.drain()
    return reader, writer


def _cell(text: Any, width: int) -> str:
    return f"{str(text):<{width}}"


def render_overlay(section: dict[str, Any]) -> str:
    """The overlay node's part of `tcpstack stats`: its services, then each bridged
    connection on two lines, both of its sides:

        Kind     Kernel side (peer > node)                Stack side (local > remote)          ...
        socks5   127.0.0.1:50312 > 127.0.0.1:1080         10.231.5.2:40001 > 10.231.6.2:8080   ...
                 to stack 123 B, to kernel 20971520 B, open 2.1 s, tcpcrypt session 3f..., peer -

    `peer` is the verified identity of the overlay peer (get_extra_info("tcpcrypt_peer")),
    "-" when there is none."""
    rows = ["overlay: " + ("; ".join(section.get("services", [])) or "no services")]
    tot = section.get("totals", {})
    if tot:
        rows.append("overlay: " + " ".join(f"{k}={v}" for k, v in tot.items()))
    bridges = section.get("bridges", [])
    if not bridges:
        return "\n".join(rows) + "\n"
    rows.append(f"{'Kind':<8} {'Kernel side (peer > node)':<45} {'Stack side (local > remote)':<45} "
                f"{'to stack':>11} {'to kernel':>11}  state")
    for b in bridges:
        k, s = b["kernel"], b["stack"]
        rows.append(f"{b['kind']:<8} {_cell(k['remote'] + ' > ' + k['local'], 45)} "
                    f"{_cell(s['local'] + ' > ' + s['remote'], 45)} {b['bytes_to_stack']:>11} "
                    f"{b['bytes_to_kernel']:>11}  {b['state']}")
        crypt = f"tcpcrypt session {b['session_id']}" if b.get("session_id") else "plain"
        rows.append(f"{'':8} {b['service']}, to {b['target']}, {b['age']:.1f} s, {crypt}, "
                    f"peer {b.get('tcpcrypt_peer') or '-'}")
    return "\n".join(rows) + "\n"
