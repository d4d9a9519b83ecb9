"""`tcpstack run`: run an unmodified Python program with its TCP on a userspace stack.

    tcpstack run --addr 10.77.0.2/24 [--route 10.78.0.0/24 ...] [--plain]
                 [--require-encryption] [--dev NAME] [--keylog FILE] -- COMMAND [ARGS...]

COMMAND is a script path, `-m MODULE`, or a console-script name (an entry point of an
installed distribution, e.g. `uvicorn app:app`; else a Python script found on PATH).  It
runs in this interpreter, with sys.argv as it expects, after the process switch
(tcpstack.aio.loop) is installed: every event loop the program or its libraries make sends
TCP for the routed destinations (the stack's subnet, and --route prefixes, or --route all)
over the stack, and listens on it for servers on the wildcard or the stack's address.  The
program's exit status is this command's.

The stack's TUN device: a new one (needs CAP_NET_ADMIN; removed at exit), or with --dev
NAME an existing one, set up once by root for the user:

    ip tuntap add dev NAME mode tun user USER
    ip addr add 10.77.0.1/24 dev NAME && ip link set NAME up

then `tcpstack run --dev NAME -- ...` needs no privileges (the stack takes the prefix's
first address other than the kernel side's, unless --addr says).
"""
from __future__ import annotations

import argparse
import ipaddress
import json
import os
import re
import runpy
import shutil
import signal
import subprocess
import sys
import traceback
from typing import Any, Callable

from tcpstack.tools.cli import (CliError, Parser, cc_arg, check_dev_name, check_free,
                                check_host, err, linger_arg, mtu_arg, parse_addr, parse_peer)

USAGE = ("tcpstack run [--addr ADDR/PREFIX] [--route PREFIX|all ...] [--plain] "
         "[--require-encryption] [--dev NAME] [--keylog FILE] [--congestion-control ALG] "
         "-- COMMAND [ARGS...]")


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="tcpstack run", usage=USAGE, description=__doc__,
               formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--addr", help="the stack's address with prefix (e.g. 10.77.0.2/24); with "
                   "--dev of an existing device: default the prefix's first free one")
    p.add_argument("--peer", help="the kernel side's address on a new device (default: the "
                   "prefix's first other one)")
    p.add_argument("--dev", help="TUN device: an existing one (created for you by root: no "
                   "privileges needed), or the name for a new one")
    p.add_argument("--mtu", type=mtu_arg, default=1500, help="MTU of a new device")
    p.add_argument("--route", action="append", default=[], metavar="PREFIX",
                   help="also send connections to PREFIX over the stack (repeatable; `all`: "
                        "every destination but loopback).  Routing only: no kernel route "
                        "is added (unlike `tcpstack up --route`)")
    p.add_argument("--no-offload", dest="offload", action="store_false",
                   help="no IFF_VNET_HDR/checksum/TSO offloads")
    p.add_argument("--plain", action="store_true", help="no TCP-ENO/tcpcrypt: plain TCP only")
    p.add_argument("--require-encryption", action="store_true",
                   help="connections and listeners refuse peers without tcpcrypt "
                        "(EncryptionRequiredError), never plaintext")
    p.add_argument("--keylog", metavar="FILE",
                   help="append each tcpcrypt session's keys to FILE (mode 0600) for "
                        "`tcpstack decrypt` (default: $TCPCRYPT_KEYLOGFILE, else none)")
    p.add_argument("--congestion-control", "--cc", type=cc_arg, metavar="ALG",
                   help="the connections' congestion control: cubic (the default, as stock "
                        "Linux), newreno or bbr (BBR v1: for paths with random loss)")
    p.add_argument("--control", metavar="PATH",
                   help="control socket for `tcpstack stats` / `tcpstack trace` (default as "
                        "root: /run/tcpstack/DEV.sock; unprivileged: none unless given)")
    p.add_argument("--trace", action="store_true", help="print the per-segment trace on stderr")
    p.add_argument("--linger", type=linger_arg, default=5.0,
                   help="when a loop closes, wait this long for its sent data to be "
                        "acknowledged (seconds)")
    p.add_argument("-v", "--verbose", action="count", default=0)
    p.add_argument("command", nargs=argparse.REMAINDER,
                   help="the program: SCRIPT.py, -m MODULE, or a console-script name")
    p.set_defaults(offload=True)
    return p


def _device_addresses(dev: str) -> list[Any]:
    """The kernel side's addresses on an existing device (`ip -j addr`, no privileges)."""
    try:
        out = subprocess.run(["ip", "-j", "addr", "show", "dev", dev], capture_output=True,
                             text=True, timeout=10).stdout
        links = json.loads(out or "[]")
    except (OSError, subprocess.SubprocessError, ValueError):
        return []
    found = []
    for link in links:
        for a in link.get("addr_info", []):
            if a.get("family") in ("inet", "inet6") and a.get("scope") != "link":
                found.append(ipaddress.ip_interface(f"{a['local']}/{a['prefixlen']}"))
    return found


def make_switch(args: argparse.Namespace) -> Any:
    """The Switch the options describe (checked, nothing brought up yet: open_device() does
    that; the key log file is opened).  A mistake is one CliError."""
    from tcpcrypt.switch import TunStacks
    from tcpstack.aio.loop import Routes, Switch
    if args.plain and args.require_encryption:
        raise CliError("--plain and --require-encryption contradict each other", 2)
    if args.plain and args.keylog:
        raise CliError("--keylog with --plain: there are no tcpcrypt keys to log", 2)
    keylog = None
    if args.keylog:
        from tcpcrypt.keylog import KeyLogFile, KeyLogWriter
        try:
            keylog = KeyLogWriter(KeyLogFile(args.keylog))
        except OSError as e:
            raise CliError(f"--keylog {args.keylog}: {e.strerror or e}") from None
    check_dev_name(args.dev)
    try:
        routes = Routes.parse(args.route)
    except ValueError as e:
        raise CliError(f"--route: {e}", 2) from None
    existing = bool(args.dev) and os.path.exists(f"/sys/class/net/{args.dev}")
    if existing:
        if not os.path.exists(f"/sys/class/net/{args.dev}/tun_flags"):
            raise CliError(f"--dev {args.dev} exists and is not a TUN device")
        if args.peer:
            raise CliError(f"--peer: device {args.dev} exists, its kernel side is set "
                           "already (ip addr show dev " + args.dev + ")", 2)
        kernel = _device_addresses(args.dev)
        if args.addr:
            iface = parse_addr(args.addr)
            if not any(iface.ip in k.network for k in kernel):
                raise CliError(f"--addr {iface}: not in a subnet of {args.dev} ("
                               + (", ".join(map(str, kernel)) or "it has no address")
                               + "): the kernel would not route to the stack")
        else:
            if not kernel:
                raise CliError(f"--dev {args.dev} has no address: give it one (as root: ip "
                               f"addr add 10.77.0.1/24 dev {args.dev}; ip link set "
                               f"{args.dev} up) or --addr")
            k = kernel[0]
            taken = {x.ip for x in kernel}
            ip = next((h for h in k.network.hosts() if h not in taken), None)
            if ip is None:
                raise CliError(f"--dev {args.dev}: its subnet {k.network} has no free address")
            iface = ipaddress.ip_interface(f"{ip}/{k.network.prefixlen}")
        stacks = TunStacks(iface, dev=args.dev, attach=True, offload=args.offload,
                           plain=args.plain, keylog=keylog,
                           congestion_control=args.congestion_control)
    else:
        if not args.addr:
            raise CliError("no stack configured: give --addr ADDR/PREFIX (a new TUN device, "
                           "needs root) or --dev NAME (a TUN device made for you beforehand)", 2)
        iface = parse_addr(args.addr)
        peer = parse_peer(args.peer, iface)
        if args.dev and os.geteuid() != 0:
            raise CliError(f"--dev {args.dev}: no such device, and creating one needs root "
                           f"(once, as root: ip tuntap add dev {args.dev} mode tun user "
                           f"{os.getuid()}; ip addr add {peer}/{iface.network.prefixlen} dev "
                           f"{args.dev}; ip link set {args.dev} up)")
        check_host()
        check_free(args.dev, iface, peer)
        stacks = TunStacks(iface, peer=str(peer), dev=args.dev, mtu=args.mtu,
                           offload=args.offload, plain=args.plain, keylog=keylog,
                           congestion_control=args.congestion_control)
    return Switch(stacks, [iface], routes, require_encryption=args.require_encryption,
                  linger=args.linger, on_stack=Observer(args.control, args.trace))


class Observer:
    """For each stack the switch brings up (one per event loop): its control socket
    (`tcpstack stats`, `tcpstack trace`) and --trace, as the other commands' Host has."""

    def __init__(self, path: str | None, trace: bool) -> None:
        self.path = path
        self.trace = trace
        self._said = False

    def __call__(self, stack: Any) -> Any:
        from tcpstack.tools.control import ControlServer
        from tcpstack.tools.trace import Tracer
        from tcpstack.wire.virtio_net import VIRTIO_NET_HDR_F_NEEDS_CSUM, VNET_HDR_LEN
        if self.path is None and not self.trace:
            return None
        ctl = ControlServer(stack, self.path) if self.path else None

        def sink(line: str) -> None:
            if self.trace:
                print(line, file=sys.stderr, flush=True)
            if ctl is not None:
                ctl.trace_line(line)
        tracer = Tracer(None, sink)
        core = stack.core

        def on_packet(direction: str, packet: bytes, now: float) -> None:
            if packet[0] == VIRTIO_NET_HDR_F_NEEDS_CSUM:   # a TSO frame: its vnet header first
                packet = packet[VNET_HDR_LEN:]
            tracer.packet(direction, packet, now)

        def update() -> None:
            # packet hooks cost time on every packet: only while someone looks
            tracing = self.trace or bool(ctl is not None and ctl.tracing)
            core.on_service = tracer.on_service if tracing else None
            tracer.watch_states(core, tracing)
            core.on_packet = on_packet if tracing else None
        update()
        if ctl is None:
            return None
        ctl.on_tracing = update

        async def start() -> None:
            try:
                await ctl.start()
            except OSError as e:
                if not self._said:               # once, not for every loop
                    self._said = True
                    err(f"run: control socket {self.path}: {e.strerror or e} (tcpstack stats "
                        "cannot look into this program; --control PATH to choose another)")
        task = stack.loop.create_task(start())

        def close() -> None:
            task.cancel()
            ctl.close()
        return close


def open_device(stacks: Any) -> Any:
    """The TUN device, before the program starts: a failure is one line here rather than a
    traceback from inside the program's first connection."""
    try:
        return stacks.device()
    except OSError as e:
        what = f"--dev {stacks.dev_name}" if stacks.attach else "a TUN device"
        why = e.strerror or str(e)
        if stacks.attach and not os.access("/dev/net/tun", os.R_OK | os.W_OK):
            why = ("/dev/net/tun is not readable and writable for uid "
                   f"{os.getuid()} (distributions make it mode 666; here it is "
                   f"{os.stat('/dev/net/tun').st_mode & 0o777:o})")
        elif stacks.attach:
            why += (f" (is {stacks.dev_name} a TUN device owned by uid {os.getuid()}? as root: "
                    f"ip tuntap add dev {stacks.dev_name} mode tun user {os.getuid()})")
        raise CliError(f"cannot open {what}: {why}") from None


def resolve_program(command: list[str]) -> tuple[Callable[[], Any], list[str]]:
    """What to run, and its sys.argv.  A CliError if it is not a Python program."""
    if command[:1] == ["--"]:
        command = command[1:]
    if not command:
        raise CliError("no program to run: tcpstack run [OPTIONS] -- COMMAND [ARGS...]", 2)
    head, rest = command[0], command[1:]
    if _is_python(head):
        # `tcpstack run -- python3 app.py ARGS` (or `python3 -m mod`, `python3 -c CODE`), as
        # a user types it: the program runs in this interpreter, switched, as without it
        return _interpreter_form(head, rest)
    if head == "-m":
        if not rest:
            raise CliError("-m needs a module name", 2)
        mod = rest[0]
        import importlib.util
        try:
            found = importlib.util.find_spec(mod)
        except (ImportError, ValueError):
            found = None
        if found is None:
            raise CliError(f"-m {mod}: no module named {mod}")

        def run_module() -> Any:
            return runpy.run_module(mod, run_name="__main__", alter_sys=True)
        # runpy puts the module's path in sys.argv[0] (alter_sys), as python -m does
        return run_module, [mod] + rest[1:]
    if os.sep in head or head.endswith(".py") or os.path.isfile(head):
        if not os.path.isfile(head):
            raise CliError(f"{head}: no such file (or a directory on its way is unreadable)")
        if not os.access(head, os.R_OK):
            raise CliError(f"{head}: not readable for uid {os.getuid()}")
        return _script(head), [head] + rest
    from importlib.metadata import entry_points
    eps = entry_points(group="console_scripts", name=head)
    for ep in eps:
        def run_entry_point(ep: Any = ep) -> Any:
            return ep.load()()
        return run_entry_point, [head] + rest
    path = shutil.which(head)
    if path is None:
        raise CliError(f"{head}: not a script, a module (-m) or a command on PATH")
    try:
        with open(path, "rb") as f:
            first = f.readline(256)
    except OSError as e:
        raise CliError(f"{path}: {e.strerror}") from None
    if not (first.startswith(b"#!") and b"python" in first):
        raise CliError(f"{path} is not a Python program (no python #! line): tcpstack run "
                       "switches Python programs only")
    return _script(path), [path] + rest


_PYTHON_NAME = re.compile(r"python(\d+(\.\d+)?)?$")
# interpreter options that change nothing the switch depends on: accepted and applied
# (-u: unbuffered stdio) or without effect here (-B, -s, -E are about start-up, already done)
_HARMLESS_FLAGS = {"-u", "-B", "-s", "-E"}


def _is_python(head: str) -> bool:
    """Is COMMAND's first word a Python interpreter (python, python3, python3.12, a path to
    one, or this very interpreter)?"""
    if _PYTHON_NAME.match(os.path.basename(head)):
        return True
    found = shutil.which(head) if os.sep not in head else head
    return found is not None and os.path.realpath(found) == os.path.realpath(sys.executable)


def _interpreter_form(head: str, rest: list[str]) -> tuple[Callable[[], Any], list[str]]:
    """`python3 [-u] (SCRIPT | -m MODULE | -c CODE) ARGS`: run as `tcpstack run` runs the
    script, module or code, in this interpreter (its version is the one that counts)."""
    rest = list(rest)
    while rest and rest[0].startswith("-") and rest[0] not in ("-m", "-c", "-"):
        flag = rest.pop(0)
        if flag not in _HARMLESS_FLAGS:
            raise CliError(f"{head} {flag}: tcpstack run runs the program in its own "
                           "interpreter and takes only -m, -c and -u there; put other "
                           "interpreter options in PYTHON* environment variables", 2)
        if flag == "-u":
            for stream in (sys.stdout, sys.stderr):
                reconf = getattr(stream, "reconfigure", None)
                if reconf is not None:
                    reconf(line_buffering=True, write_through=True)
    if not rest or rest[0] == "-":
        raise CliError(f"{head}: no program given (a script, -m MODULE or -c CODE; an "
                       "interactive interpreter or a script on stdin is not switched)", 2)
    if rest[0] == "-c":
        if len(rest) < 2:
            raise CliError("-c needs the code to run", 2)
        code = rest[1]

        def run_code() -> Any:
            import __main__
            return exec(compile(code, "<string>", "exec"), vars(__main__))
        return run_code, ["-c"] + rest[2:]
    return resolve_program(rest)


def _script(path: str) -> Callable[[], Any]:
    def run_script() -> Any:
        sys.path.insert(0, os.path.dirname(os.path.abspath(path)))
        return runpy.run_path(path, run_name="__main__")
    return run_script


def _exit_on_signal(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def _exit_status(code: Any) -> int:
    """SystemExit's code as the interpreter turns it into an exit status."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1


def _log_to_stderr(verbose: int) -> None:
    """-v: the stack's own loggers on stderr.  The root logger is the program's: a
    logging.basicConfig() here would make the program's own a no-op."""
    import logging
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    for name in ("tcpstack", "tcpcrypt", "tun"):
        lg = logging.getLogger(name)
        lg.addHandler(handler)
        lg.setLevel(logging.WARNING - 10 * verbose)
        lg.propagate = False


def main(argv: list[str]) -> int:
    parser = build_parser()
    if "--" in argv:                            # options -- the program's own arguments
        i = argv.index("--")
        args = parser.parse_args(argv[:i])      # a usage error: one line, exit 2
        if args.command:
            parser.error(f"unexpected {args.command[0]!r} before --")
        args.command = argv[i + 1:]
    else:
        args = parser.parse_args(argv)
    if args.verbose:
        _log_to_stderr(args.verbose)
    try:
        target, prog_argv = resolve_program(args.command)
        switch = make_switch(args)
        dev = open_device(switch.stack_factory)
        if args.control is None and os.geteuid() == 0:   # as the other commands: by device
            from tcpstack.tools.control import default_path
            switch.on_stack.path = default_path(dev.name)
        if args.verbose:
            err(f"run: stack {switch.addresses[0]} on {dev.name}, routed: "
                f"{', '.join(map(str, switch.routes.prefixes))}"
                + (" and all" if switch.routes.everything else "")
                + f"; control {switch.on_stack.path or '-'}")
    except CliError as e:
        err(f"run: {e}")
        return e.status
    from tcpstack.aio import loop as switch_mod
    switch_mod.install()
    switch_mod.set_process_switch(switch)
    saved_argv = sys.argv
    sys.argv = prog_argv
    # SIGTERM / SIGHUP, where they still have their default action (death, with nothing
    # cleaned up: the control socket would stay), end the program as an exception does,
    # with the status a shell reports for the signal; a program's own handlers replace these.
    saved_handlers = {}
    for sig in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(sig) is signal.SIG_DFL:
            saved_handlers[sig] = signal.signal(sig, _exit_on_signal)
    try:
        try:
            result = target()
        except SystemExit as e:
            return _exit_status(e.code)
        except KeyboardInterrupt:
            return 130
        except BaseException:
            traceback.print_exc()
            return 1
        # a console script's function: its return value is the status (sys.exit(f()))
        return _exit_status(result) if not isinstance(result, dict) else 0
    finally:
        sys.argv = saved_argv
        for sig, handler in saved_handlers.items():
            signal.signal(sig, handler)
        switch.close()
        switch.stack_factory.close()
        sys.stdout.flush()
