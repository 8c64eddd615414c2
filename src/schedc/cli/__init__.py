"""The `schedc` command line: a table of subcommands, each in its own module.

Every command module (schedc.cli.commands.NAME) has `add_arguments(parser)` and
`run(args) -> int`; it is imported only when its command runs, so `schedc check`
never pays for (or imports) JAX. Exit codes: 0 clean, 1 problems found,
2 usage or I/O error.
"""

from __future__ import annotations

import argparse
import gc
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


# True while `main()` runs as the program (the console script, `python -m schedc`: no `argv`
# given), not called by other Python code: the interpreter, and every object in it, is then the
# command's own until the process exits.
whole_process = False


def main(argv: list[str] | None = None) -> int:
    global whole_process
    if argv is not None:
        return _main(argv)
    whole_process = True
    try:
        return _main(sys.argv[1:])
    finally:
        # The process exits next: the cyclic collector's passes at the interpreter's exit would
        # walk every object made (modules, a kept parser, trees): ~30 M instructions, ~7% of a
        # fresh `schedc check` (docs/performance.md). Frozen, they are skipped; reference counting
        # still frees, finalizers and atexit handlers still run.
        gc.freeze()


def _main(argv: list[str]) -> int:
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
