"""The subcommands of `schedc` (see schedc.cli), and what several of them share."""

from __future__ import annotations

import sys
from pathlib import Path

MODEL_HELP = "resolve against the model's parameters; without a value, the file's `model` directive names it"


def add_model_argument(parser, help: str = MODEL_HELP) -> None:
    """`--model [MOD:FN]`: a value names the model factory; none means the file's `model` directive."""
    parser.add_argument("--model", nargs="?", const="", default=None, metavar="MOD:FN", help=help)


def resolve_file(path: Path, model_ref: str | None, command: str):
    """Read, check and resolve `path` (`schedc.pipeline.analyse`); print any diagnostics on stderr.

    `model_ref`: None resolves over the file's pattern texts; "" against the model its `model`
    directive names; `MOD:FN` against that model. Returns the `pipeline.Analysis` (its
    `.plan`, `.parsed`, `.text`, `.tree`), or the exit status: 2 when the file cannot be
    read, 1 when it has errors.
    """
    from schedc.lang.diagnostics import Source, render_text
    from schedc.pipeline import FROM_DIRECTIVE, analyse

    try:
        data = path.read_bytes()
    except OSError as exc:
        print(f"schedc {command}: cannot read {path}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    model = None if model_ref is None else (model_ref or FROM_DIRECTIVE)
    analysis = analyse(data, str(path), model=model, base_dir=path.resolve().parent)
    if analysis.no_directive:
        print(f"schedc {command}: --model given but the file has no `model` directive; using the patterns as written", file=sys.stderr)
    if analysis.diagnostics:
        print(render_text(analysis.diagnostics, {analysis.name: analysis.source or Source(analysis.name, "")}), file=sys.stderr)
    return 1 if analysis.plan is None else analysis
