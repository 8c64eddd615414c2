"""The `schedc` command line: a table of subcommands, each in its own module.

Every command module (schedc.cli.commands.NAME) has `add_arguments(parser)` and
`run(args) -> int`; it is imported only when its command runs, so `schedc check`
never pays for (or imports) JAX. Exit codes: 0 clean, 1 problems found,
2 usage or I/O error.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from schedc import __version__

COMMANDS = {
    "check": "lint .sched files (syntax, names, values; against the model with --model)",
    "show": "print the phase x parameter table of a schedule",
    "plot": "plot every scheduled value over the whole run",
    "run": "run a schedule: fit the model the file names",
    "fmt": "format .sched files",
    "lsp": "start the language server (stdio)",
}


def _command(name: str):
    return importlib.import_module(f"schedc.cli.commands.{name}")


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="schedc", description="A schedule language and compiler for phased JAX optimisation.")
    parser.add_argument("--version", action="version", version=f"schedc {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, help in COMMANDS.items():
        p = sub.add_parser(name, help=help, description=help)
        if only is None or name == only:  # only the chosen command's module is imported
            _command(name).add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    chosen = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(chosen if chosen in COMMANDS else "")
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: 2 on usage errors, 0 for --help
        return int(exc.code or 0)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return _command(args.command).run(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
