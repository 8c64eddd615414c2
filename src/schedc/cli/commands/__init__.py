"""The subcommands of `schedc` (see schedc.cli), and what several of them share."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

MODEL_HELP = "resolve against the model's parameters; without a value, the file's `model` directive names it"


def add_model_argument(parser, help: str = MODEL_HELP) -> None:
    """`--model [MOD:FN]`: a value names the model factory; none means the file's `model` directive."""
    parser.add_argument("--model", nargs="?", const="", default=None, metavar="MOD:FN", help=help)


@dataclass
class Resolved:
    """A file read, checked and resolved into a Plan (against the model, or over its pattern texts)."""

    plan: object
    parsed: object
    text: str
    with_model: bool


def resolve_file(path: Path, model_ref: str | None, command: str) -> Resolved | int:
    """Read, check and resolve `path`; print any diagnostics on stderr.

    Returns the Resolved file, or the exit status: 2 when the file cannot be
    read, 1 when it has errors.
    """
    from schedc.check.checker import check_bytes
    from schedc.lang.diagnostics import Source, has_errors, render_text, sort_key

    try:
        data = path.read_bytes()
    except OSError as exc:
        print(f"schedc {command}: cannot read {path}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    parsed, diags, text = check_bytes(data, str(path))
    plan, with_model = None, False
    if parsed is not None and not has_errors(diags):
        plan, found, with_model = _resolve(parsed, model_ref, path, command)
        known = {(d.code, d.span) for d in diags}
        diags = sorted(diags + [d.in_file(str(path)) for d in found if (d.code, d.span) not in known], key=sort_key)
    if diags:
        print(render_text(diags, {str(path): Source(str(path), text or "")}), file=sys.stderr)
    if plan is None or has_errors(diags):
        return 1
    return Resolved(plan, parsed, text, with_model)


def _resolve(parsed, model_ref: str | None, path: Path, command: str):
    """(plan, diagnostics, with a model?): against the model when asked for, else over the pattern texts."""
    from schedc.plan.resolve import resolve

    if model_ref is None:
        return (*resolve(parsed.file, None, source=str(path)), False)
    from schedc.plan.binding import bind_model, resolve_checked

    bound, problems = bind_model(parsed.file, model_ref or None, path.resolve().parent)
    if problems:
        return None, problems, True
    if bound is None:
        print(f"schedc {command}: --model given but the file has no `model` directive; using the patterns as written", file=sys.stderr)
        return (*resolve(parsed.file, None, source=str(path)), False)
    return (*resolve_checked(parsed, bound[1], source=str(path)), True)
