"""The ``xgrad`` command line. Each subcommand lives in ``xgrad/commands/<name>.py``."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from xgrad.errors import XgradError

# Subcommand name -> module with HELP, add_arguments(parser) and run(args) -> exit code.
COMMANDS = {
    "backends": "xgrad.commands.backends",
    "train": "xgrad.commands.train",
    "gradcheck": "xgrad.commands.gradcheck",
}


def build_parser() -> argparse.ArgumentParser:
    import xgrad

    parser = argparse.ArgumentParser(prog="xgrad", description=xgrad.__doc__)
    parser.add_argument("--version", action="version", version=f"xgrad {xgrad.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module_name in COMMANDS.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:
                continue  # command not part of this build
            raise
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "_run"):
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt as exc:
        from xgrad._rundir import TrainingInterrupted, signal_of

        # One line: a TrainingInterrupted says where to resume; nothing printed it before.
        text = str(exc) if isinstance(exc, TrainingInterrupted) else "interrupted"
        print(f"xgrad {args.command}: {text}", file=sys.stderr)
        return 128 + signal_of(exc)
    except (XgradError, ValueError, TypeError, ImportError, OSError, RuntimeError) as exc:
        # One clear line, not a traceback: the messages name the argument at fault.
        print(f"xgrad {args.command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
