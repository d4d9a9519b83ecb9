"""Running an unmodified asyncio program three ways (issue 16, "what must be shown"):

- ``kernel``: as it is, on the kernel's TCP (the baseline: the program itself works);
- ``run``: under the process-wide switch, ``tcpstack run --addr ADDR/PREFIX -- COMMAND``;
- ``import``: a copy of the program in which the one line ``import asyncio`` became
  ``from tcpcrypt import asyncio``, with the stack's address in TCPCRYPT_TUN.

Each runs inside a network namespace a test made; under ``run`` and ``import`` the program's
process brings its own TUN device and userspace stack up there (the kernel side of the TUN
takes the prefix's first address).
"""
from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Any, Sequence

from tests.reaper import Procs

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PROGRAMS = os.path.join(ROOT, "tests", "apps", "programs")
BIN = os.path.dirname(sys.executable)             # the venv's scripts: tcpstack, uvicorn
MODES = ("kernel", "run", "import")
LOOPS = ("asyncio", "uvloop")          # tests/apps/loopwrap.py
ONE_LINE = "from tcpcrypt import asyncio"


def program(name: str) -> str:
    return os.path.join(PROGRAMS, name)


def one_line_copy(path: str, dest_dir: str) -> str:
    """A copy of the program at `path` in `dest_dir` with exactly one line changed:
    ``import asyncio`` -> ``from tcpcrypt import asyncio``."""
    with open(path) as f:
        lines = f.read().splitlines(keepends=True)
    hits = [i for i, line in enumerate(lines) if line.rstrip("\n") == "import asyncio"]
    assert len(hits) == 1, f"{path}: expected exactly one 'import asyncio' line, found {len(hits)}"
    lines[hits[0]] = ONE_LINE + "\n"
    out = os.path.join(dest_dir, os.path.basename(path))
    with open(out, "w") as f:
        f.writelines(lines)
    return out


@dataclass
class Launch:
    """How a test starts programs in one mode: `addr` is the stack's ADDR/PREFIX (None for
    the kernel mode), `routes` the destinations outside its subnet sent over the stack
    (`tcpstack run --route`, TCPCRYPT_ROUTE), `tmp` where the one-line copies go."""
    mode: str
    addr: str | None
    tmp: str
    routes: Sequence[str] = ()
    require_encryption: bool = False     # --require-encryption / TCPCRYPT_REQUIRE_ENCRYPTION
    loop: str | None = None              # "asyncio" / "uvloop": run the program through
                                         # tests/apps/loopwrap.py on that loop (None: as it is)

    def __post_init__(self) -> None:
        assert self.mode in MODES, self.mode
        assert (self.addr is None) == (self.mode == "kernel"), (self.mode, self.addr)
        assert self.loop in (None, *LOOPS), self.loop

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TCPCRYPT_")}
        env["PYTHONPATH"] = ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")
        env["PATH"] = BIN + os.pathsep + env.get("PATH", "/usr/bin:/bin")
        env["PYTHONUNBUFFERED"] = "1"
        if self.mode == "import":
            assert self.addr is not None
            env["TCPCRYPT_TUN"] = self.addr
            if self.routes:
                env["TCPCRYPT_ROUTE"] = ",".join(self.routes)
            if self.require_encryption:
                env["TCPCRYPT_REQUIRE_ENCRYPTION"] = "1"
        return env

    def cmd(self, argv: Sequence[str], *, oneline: Sequence[str] | None = None) -> list[str]:
        """The command line that runs `argv` (a program: [python, script, args...], or a
        console script: ["uvicorn", ...]) in this mode.  For a console script, `oneline`
        is the equivalent program form the import mode runs."""
        argv = list(argv)
        if self.mode == "import":
            form = list(oneline) if oneline is not None else argv
            assert form[0] == sys.executable, "the one-line switch needs a program file"
            argv = [form[0], one_line_copy(form[1], self.tmp), *form[2:]]
        if self.loop is not None:
            assert argv[0] == sys.executable, "a loop is chosen for a program file only"
            argv = [argv[0], "-m", "tests.apps.loopwrap", self.loop, *argv[1:]]
        if self.mode != "run":
            return argv
        assert self.addr is not None
        routes = [a for r in self.routes for a in ("--route", r)]
        if self.require_encryption:
            routes.append("--require-encryption")
        if argv[0] == sys.executable:      # `tcpstack run -- script.py ARGS` (or -m
            argv = argv[1:]                # MODULE ARGS): no interpreter before it
        return [os.path.join(BIN, "tcpstack"), "run", "--addr", self.addr, *routes, "--",
                *argv]

    @property
    def loop_line(self) -> str | None:
        """The line tests/apps/loopwrap.py prints for the loop this launch chose: the class
        the program's loop must have (asyncio's selector loop, or uvloop's Loop)."""
        if self.loop is None:
            return None
        cls = "uvloop.Loop" if self.loop == "uvloop" else "asyncio.unix_events._UnixSelectorEventLoop"
        return f"loopwrap: new loop {cls}"


def kernel_env() -> dict[str, str]:
    """The environment of a program that runs on the kernel (a peer, a server)."""
    return Launch("kernel", None, "").env


def py(name: str, *args: Any) -> list[str]:
    return [sys.executable, program(name), *map(str, args)]


def last_json(stdout: str) -> dict[str, Any]:
    for line in reversed(stdout.splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise AssertionError(f"no JSON result line in:\n{stdout[-3000:]}")


@dataclass
class Server:
    """A long-running program whose merged stdout/stderr is collected line by line."""
    proc: asyncio.subprocess.Process
    lines: list[str] = field(default_factory=list)
    _new: asyncio.Event = field(default_factory=asyncio.Event)
    _task: "asyncio.Task[None] | None" = None

    def start_reading(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            self.lines.append(line.decode(errors="replace").rstrip("\n"))
            self._new.set()
        self._new.set()

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    async def wait_line(self, pattern: str, timeout: float = 20.0) -> re.Match[str]:
        """The first output line matching `pattern` (waits for it); fails with the output
        so far if the program exits or the time runs out first."""
        rx = re.compile(pattern)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        seen = 0
        while True:
            for line in self.lines[seen:]:
                if m := rx.search(line):
                    return m
            seen = len(self.lines)
            if self._task is not None and self._task.done():
                await self.proc.wait()
                raise AssertionError(f"exited ({self.proc.returncode}) before printing "
                                     f"{pattern!r}:\n{self.output[-4000:]}")
            left = deadline - loop.time()
            if left <= 0:
                raise AssertionError(f"no line {pattern!r} within {timeout} s:\n{self.output[-4000:]}")
            self._new.clear()
            try:
                await asyncio.wait_for(self._new.wait(), left)
            except asyncio.TimeoutError:
                pass

    async def stop(self) -> None:
        if self.proc.returncode is None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 5)
            except asyncio.TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        if self._task is not None:
            await self._task


async def start(procs: Procs, ns: Any, launch: Launch, argv: Sequence[str], *,
                oneline: Sequence[str] | None = None) -> Server:
    """Start a long-running program (a server) inside `ns` as `launch` says."""
    proc = await procs.exec(*launch.cmd(argv, oneline=oneline), netns=ns, env=launch.env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    s = Server(proc)
    s.start_reading()
    return s


async def run(procs: Procs, ns: Any, launch: Launch, argv: Sequence[str], *,
              timeout: float = 30) -> dict[str, Any]:
    """Run a client program to completion inside `ns` as `launch` says; its JSON result
    line (a failure shows its output)."""
    cmd = launch.cmd(argv)
    p = await procs.exec(*cmd, netns=ns, env=launch.env, stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(p.communicate(), timeout)
    except asyncio.TimeoutError:
        p.kill()
        out, err = await p.communicate()
        raise AssertionError(f"{cmd} timed out after {timeout} s:\n{out.decode()[-3000:]}\n"
                             f"{err.decode()[-3000:]}") from None
    text = out.decode(errors="replace")
    assert p.returncode == 0, (f"{cmd} exited {p.returncode}:\n{text[-3000:]}\n"
                               f"{err.decode(errors='replace')[-4000:]}")
    if launch.loop_line is not None:      # the program really ran on the loop chosen
        lines = [x for x in err.decode(errors="replace").splitlines()
                 if x.startswith("loopwrap: new loop ")]
        assert lines and set(lines) == {launch.loop_line}, (cmd, lines)
    return last_json(text)


def pattern(n: int) -> bytes:
    """The bytes the programs' /bytes/N endpoints serve (aiohttp_server.py, fastapi_app.py)."""
    import hashlib
    block = b"".join(hashlib.sha256(b"%d" % i).digest() for i in range(2048))
    return (block * (n // len(block) + 1))[:n]


def sha(n: int) -> str:
    import hashlib
    return hashlib.sha256(pattern(n)).hexdigest()


MB = 1 << 20


async def curl(ns: Any, url: str, *args: str, timeout: float = 30) -> tuple[str, str]:
    """(sha256 of the body, the body if it is short) fetched by curl inside `ns` (the
    kernel's TCP)."""
    import hashlib
    p = await asyncio.create_subprocess_exec(
        "ip", "netns", "exec", ns.name, "curl", "-sS", "--fail", "--max-time", str(timeout), *args, url,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = await asyncio.wait_for(p.communicate(), timeout + 5)
    assert p.returncode == 0, f"curl {url}: {err.decode(errors='replace')}"
    return hashlib.sha256(out).hexdigest(), out.decode(errors="replace") if len(out) < 4096 else ""
