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
import os
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
    """The command line's parser: every command's (`only` None), or the command `only` names alone
    (its module alone imported: each parser argparse makes costs ~1 M instructions), or, for
    `only=""`, every command listed and none with its arguments (for usage errors)."""
    parser = argparse.ArgumentParser(prog="schedc", description="A schedule language and compiler for phased JAX optimisation.", formatter_class=_HelpFormatter)
    parser.add_argument("--version", action="version", version=f"schedc {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, help in COMMANDS.items():
        if only in (None, "", name):
            p = sub.add_parser(name, help=help, description=help, formatter_class=_HelpFormatter)
            if only is None or only == name:
                _command(name).add_arguments(p)
    return parser


class _HelpFormatter(argparse.HelpFormatter):
    """argparse's formatter, as wide as the terminal (`shutil.get_terminal_size`'s rules) without
    importing `shutil`: argparse makes a formatter for every `add_argument`, and imported shutil
    (with zlib, bz2 and lzma: ~8 M instructions, 2% of a fresh `schedc check`) for its width."""

    def __init__(self, prog: str, indent_increment: int = 2, max_help_position: int = 24, width: int | None = None) -> None:
        super().__init__(prog, indent_increment, max_help_position, _columns() - 2 if width is None else width)


def _columns() -> int:
    """The terminal's width as `shutil.get_terminal_size().columns` finds it: $COLUMNS, else the
    width of standard output's terminal, else 80."""
    try:
        columns = int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns
        except (AttributeError, ValueError, OSError):
            columns = 0
    return columns if columns > 0 else 80


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
        # still frees, and atexit handlers still run, but an object kept alive only by a reference
        # cycle is never finalized (its `__del__` does not run): every file a command writes is
        # closed by the time it returns (`with` blocks, tooling.files.atomic_write).
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
