"""`schedc fmt FILE...`: rewrite .sched files in the canonical layout (schedc.tooling.fmt).

Exit status: 0 done (or, with --check, nothing would change); 1 a file would
change (--check) or has syntax errors (printed as `schedc check` prints them;
the file is left alone); 2 usage or I/O error; 123 internal error (the
formatter's output would not mean the same program, so nothing was written).
"""

from __future__ import annotations

import difflib
import sys
from pathlib import Path

from schedc.cli.commands import sched_files
from schedc.lang.diagnostics import SchedError, render_text
from schedc.lang.text import decode

INTERNAL_ERROR = 123


def add_arguments(parser) -> None:
    parser.add_argument(
        "files", nargs="+", metavar="FILE", help="files to format in place (a directory: every *.sched under it); `-` formats stdin to stdout"
    )
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if any file would change")
    parser.add_argument("--diff", action="store_true", help="write nothing; print a unified diff of the changes")


def _read(name: str) -> bytes:
    if name == "-":
        return sys.stdin.buffer.read()
    return Path(name).read_bytes()


def _format(name: str, data: bytes) -> tuple[str | None, str | None, int]:
    """(original text, formatted text, status): status 0 formatted, 1 the input has errors, 123 internal error."""
    from schedc.tooling.fmt import (
        format_source,  # after argument parsing: `schedc fmt --help` stays fast
    )

    text, problem = decode(data)
    if problem is not None:
        print(render_text([problem.in_file(name)]), file=sys.stderr)
        return None, None, 1
    try:
        return text, format_source(text, name), 0
    except SchedError as err:
        print(err.render(), file=sys.stderr)
        internal = any(d.code == "E0901" for d in err.diagnostics)
        return text, None, INTERNAL_ERROR if internal else 1


def _diff(name: str, old: str, new: str) -> str:
    return "".join(difflib.unified_diff(old.splitlines(True), new.splitlines(True), name, name))


def run(args) -> int:
    names, status = sched_files(args.files, "fmt")
    for name in names:
        try:
            data = _read(name)
        except OSError as exc:
            print(f"schedc fmt: cannot read {name}: {exc.strerror or exc}", file=sys.stderr)
            status = max(status, 2)
            continue
        old, new, result = _format(name, data)
        status = max(status, result)
        if new is None:
            continue
        if args.diff and new != old:
            sys.stdout.write(_diff(name, old, new))
        if args.check:
            if new != old:
                status = max(status, 1)
                print(f"would reformat {name}", file=sys.stderr if name == "-" or args.diff else sys.stdout)
        elif args.diff:
            continue
        elif name == "-":
            sys.stdout.write(new)
        elif new != old:
            status = max(status, _write(name, new, bom=data.startswith(b"\xef\xbb\xbf")))
    return status


def _write(name: str, text: str, bom: bool) -> int:
    """Write `text` (keeping a byte-order mark the file had) atomically; 0, or 2 on an I/O error
    (the file is then unchanged)."""
    from schedc.tooling.files import atomic_write

    try:
        atomic_write(name, (b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8"))
    except OSError as exc:
        print(f"schedc fmt: cannot write {name}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    print(f"reformatted {name}", file=sys.stderr)
    return 0
