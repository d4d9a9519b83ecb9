"""The `tcpstack` command (tcpstack.tools.cli has the commands and their description)."""
from __future__ import annotations

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
    from tcpstack.tools.cli import CliError, build_parser, err, run_command
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["diagram"]:
        from tcpstack.tools.diagram import main as diagram_main
        return diagram_main(argv[1:])
    if argv[:1] == ["plot"]:
        from tcpstack.tools.plot import main as plot_main
        return plot_main(argv[1:])
    if argv[:1] == ["run"]:                      # a program, synchronously: its own loops
        from tcpstack.tools.run import main as run_main
        return run_main(argv[1:])
    if argv[:1] == ["decrypt"]:
        from tcpstack.tools.decrypt import main as decrypt_main
        return decrypt_main(argv[1:])
    args = build_parser().parse_args(argv)       # a usage error: one line, exit 2
    logging.basicConfig(level=logging.WARNING - 10 * args.verbose,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        if args.cmd == "demo":
            from tcpstack.tools.demo import main as demo_main
            return _run(demo_main())
        return _run(run_command(args))
    except CliError as e:                        # an ordinary mistake: one line, no traceback
        err(str(e))
        return e.status
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
