"""Run an unmodified program on a chosen event loop, and say which loop it got.

    python -m tests.apps.loopwrap asyncio|uvloop PROGRAM.py [ARGS...]

Installs the event loop policy for the loop (asyncio's default, or uvloop's), whose
new_event_loop() is what asyncio.run / asyncio.Runner / new_event_loop call, then runs the
program as __main__ (runpy, sys.argv as it expects).  Each loop the policy makes is named on
stderr, "loopwrap: new loop MODULE.CLASS", so a test can check the loop the program really
ran on (under `tcpstack run` too: the switch patches the loop classes, not the policy).
"""
from __future__ import annotations

import asyncio
import runpy
import sys
from typing import Any

LOOPS = ("asyncio", "uvloop")


def _policy(kind: str) -> asyncio.AbstractEventLoopPolicy:
    base: Any
    if kind == "uvloop":
        import uvloop
        base = uvloop.EventLoopPolicy
    else:
        base = asyncio.DefaultEventLoopPolicy

    class Policy(base):
        def new_event_loop(self) -> asyncio.AbstractEventLoop:
            loop: asyncio.AbstractEventLoop = super().new_event_loop()
            cls = type(loop)
            print(f"loopwrap: new loop {cls.__module__}.{cls.__qualname__}", file=sys.stderr,
                  flush=True)
            return loop
    return Policy()


def main() -> None:
    if len(sys.argv) < 3 or sys.argv[1] not in LOOPS:
        raise SystemExit("usage: python -m tests.apps.loopwrap asyncio|uvloop PROGRAM.py [ARGS...]")
    asyncio.set_event_loop_policy(_policy(sys.argv[1]))
    path = sys.argv[2]
    sys.argv = sys.argv[2:]
    runpy.run_path(path, run_name="__main__")


if __name__ == "__main__":
    main()
