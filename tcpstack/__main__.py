"""Command-line entry point: `python -m tcpstack` / the `tcpstack` console script."""
from __future__ import annotations

import argparse
import asyncio
import logging
import sys


def _run(coro) -> int:
    try:
        import uvloop  # uvloop by default when installed
        return uvloop.run(coro)
    except ImportError:
        return asyncio.run(coro)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tcpstack", description=__doc__)
    parser.add_argument("-v", "--verbose", action="count", default=0)
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("demo", help="show the stack working (TUN + kernel as root, in-memory otherwise)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING - 10 * args.verbose,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if args.cmd == "demo":
        from .demo import main as demo_main
        return _run(demo_main())
    return 2


if __name__ == "__main__":
    sys.exit(main())
