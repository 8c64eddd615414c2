"""The subcommands of `schedc` (see schedc.cli), and what several of them share."""

from __future__ import annotations

import sys

TYPE_CHECKING = False  # (not `typing`'s: `schedc check` answering from its cache imports neither typing nor pathlib)
if TYPE_CHECKING:
    from pathlib import Path


def sched_files(names: list[str], command: str) -> tuple[list[str], int]:
    """(the files named, status): a folder replaced by the `.sched` files under it, in path order
    (`schedc check .` as `ruff check .`); a folder that cannot be listed is said on stderr (status 2),
    not silently skipped. os.path only: `schedc check` answering from its cache imports no pathlib."""
    import os

    out: list[str] = []
    status = 0

    def unreadable(exc: OSError) -> None:
        nonlocal status
        print(f"schedc {command}: cannot read {exc.filename}: {exc.strerror or exc}", file=sys.stderr)
        status = 2

    for name in names:
        if name == "-" or not os.path.isdir(name):
            out.append(name)
            continue
        found = []
        for folder, subfolders, files in os.walk(name, onerror=unreadable):
            subfolders.sort()
            found.extend(os.path.join(folder, f) for f in files if f.endswith(".sched") and os.path.isfile(os.path.join(folder, f)))
        # a folder without one stays: reading it fails as a path that names nothing checkable (exit 2), never a pass
        out.extend(sorted(found, key=lambda p: os.path.normpath(p).split(os.sep)) or [name])
    return out, status


MODEL_HELP = "resolve against the model's parameters; without a value, the file's `model` directive names it"


def add_model_argument(parser, help: str = MODEL_HELP) -> None:
    """`--model [MOD:FN]`: a value names the model factory; none means the file's `model` directive."""
    parser.add_argument("--model", nargs="?", const="", default=None, metavar="MOD:FN", help=help)


def add_set_argument(parser) -> None:
    """`--set NAME=VALUE` (repeatable): a value for the file's `$NAME` placeholder."""
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        type=placeholder_setting,
        metavar="NAME=VALUE",
        help="bind the placeholder $NAME: a number, true/false, or schedule or optimizer text (`cosine(0.1 -> 0)`, `adam`); repeatable",
    )


def placeholder_setting(text: str) -> tuple[str, object]:
    """`NAME=VALUE` -> (NAME, value): an int, a float, a bool, else the text (parsed as one expression when bound)."""
    import argparse

    name, sep, value = text.partition("=")
    name = name.strip().lstrip("$")
    if not sep or not name.isidentifier():
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE (a placeholder's name without `$`), got {text!r}")
    value = value.strip()
    if value in ("true", "false"):
        return name, value == "true"
    for kind in (int, float):
        try:
            return name, kind(value)
        except ValueError:
            pass
    return name, value


SWEEP_HELP = (
    "NAME=V1,V2,...: fit one setting per value of a `$placeholder` or `let` NAME (repeat for more names; "
    "the lists are zipped, so they have one length)"
)


def add_sweep_argument(parser, help: str = SWEEP_HELP) -> None:
    parser.add_argument("--sweep", action="append", default=[], metavar="NAME=V1,V2,...", help=help)


def parse_sweep(specs: list[str], command: str):
    """`["lr=1e-3,3e-3", "wd=0,1e-4"]` -> the swept names and values (`surface.sweep.Swept`), each
    argument its own source (`<--sweep 2>`) for located diagnostics; or, the problem printed on
    stderr, the exit status: 1 for a value that is not a number (E0703), 2 for a spec without
    `=` or a name given twice."""
    from schedc.lang.diagnostics import SchedError
    from schedc.surface.sweep import from_arguments

    try:
        return from_arguments(specs)
    except SchedError as err:
        print(err.render(), file=sys.stderr)
        return 1
    except ValueError as err:
        print(f"schedc {command}: {err}", file=sys.stderr)
        return 2


def sweep_placeholders(swept: list, path: Path) -> dict:
    """The first value of every swept `$placeholder` of the file: what the program is compiled with
    before its settings are resolved (lets need no value: they have their definitions). Nothing
    is read without a sweep; an unreadable file is left for the compile to report."""
    from schedc.lang import nodes as n
    from schedc.pipeline import read

    if not swept:
        return {}
    try:
        parsed = read(path.read_bytes(), str(path)).parsed
    except OSError:
        return {}
    if parsed is None:  # not text: the compile reports it
        return {}
    used = {node.id for node in n.walk(parsed.file) if isinstance(node, n.Placeholder)}
    return {s.name: s.values[0] for s in swept if s.name in used and s.values}


def resolve_file(path: Path, model_ref: str | None, command: str, placeholders: dict | None = None):
    """Read, check and resolve `path` (`schedc.pipeline.analyse`); print any diagnostics on stderr.

    `placeholders`: the `--set` values. `model_ref`: None resolves over the file's pattern texts; "" against the model its `model`
    directive names; `MOD:FN` against that model. Returns the `pipeline.Analysis` (its
    `.plan`, `.parsed`, `.text`, `.tree`), or the exit status: 2 when the file cannot be
    read, 1 when it has errors.
    """
    from schedc.lang.diagnostics import SchedError, Source, render_text
    from schedc.pipeline import FROM_DIRECTIVE, analyse

    try:
        data = path.read_bytes()
    except OSError as exc:
        print(f"schedc {command}: cannot read {path}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    model = None if model_ref is None else (model_ref or FROM_DIRECTIVE)
    try:
        analysis = analyse(data, str(path), model=model, base_dir=path.resolve().parent, placeholders=placeholders)
    except (SchedError, TypeError) as err:  # a --set value that cannot be one
        print(f"schedc {command}: --set: {err}", file=sys.stderr)
        return 1
    if analysis.no_directive:
        print(f"schedc {command}: --model given but the file has no `model` directive; using the patterns as written", file=sys.stderr)
    if analysis.diagnostics:
        print(render_text(analysis.diagnostics, {analysis.name: analysis.source or Source(analysis.name, "")}), file=sys.stderr)
    return 1 if analysis.plan is None else analysis
