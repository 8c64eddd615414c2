"""`schedc check FILE...`: lint schedule files; with `--model`, against the model's parameters too.

Without --model, a file's diagnostics are kept in a result cache and reused while neither
its bytes nor schedc change (schedc.cli.result_cache; `--no-cache` or SCHEDC_NO_CACHE=1 turn it
off); a hit imports neither the parser nor the checks, and a hit without diagnostics not even
the diagnostics module (nor dataclasses, typing or pathlib): there is nothing to render.

Exit status: 0 clean (warnings allowed unless --strict), 1 problems found,
2 usage or I/O problem (a file that cannot be read is reported on stderr and
the other files are still checked). Without --model this never imports JAX.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import sys

from schedc import cli
from schedc.cli import result_cache
from schedc.cli.commands import add_model_argument, sched_files

TYPE_CHECKING = False
if TYPE_CHECKING:
    import pathlib

    from schedc.lang.diagnostics import Diagnostic, Source

FORMATS = ("text", "concise", "json", "github")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # "*", not "+": `--model FILE` takes the file as the option's value, and run() gives it back
    parser.add_argument("files", nargs="*", metavar="FILE", help="schedule files to check (a folder: every *.sched under it; `-` reads standard input)")
    parser.add_argument("--format", choices=FORMATS, default="text", help="text (default): snippets and carets; concise: one `file:line:col: severity[CODE]: message` line each; json: a list of objects; github: Actions annotations")
    parser.add_argument("--strict", action="store_true", help="treat warnings as errors (exit 1 when there are any)")
    parser.add_argument("--no-cache", action="store_true", help="check every file afresh: neither read nor write the result cache (SCHEDC_NO_CACHE=1 does the same)")
    add_model_argument(
        parser,
        "also check against the model's parameter tree; without a value, the file's `model` directive names it (put --model after the files, or write --model=MOD:FN)",
    )


def run(args: argparse.Namespace) -> int:
    files = list(args.files)
    model_ref = args.model
    if model_ref and ":" not in model_ref and model_ref.endswith(".sched"):
        # `schedc check --model a.sched`: argparse took the file for the option's value
        files.insert(0, model_ref)
        model_ref = ""
    if not files:
        print("schedc check: error: no FILE given (`-` reads standard input)", file=sys.stderr)
        return 2
    files, listing = sched_files(files, "check")
    diagnostics: list[Diagnostic] = []
    sources: dict[str, Source] = {}
    unreadable = 0
    for name in files:
        data = _read(name)
        if data is None:
            unreadable += 1
            continue
        source, found = _check(name, data, model_ref, cached=not args.no_cache and model_ref is None and name != "-" and result_cache.enabled())
        if source is not None:
            sources[name] = source
        diagnostics.extend(found)
    failed = False
    if diagnostics:  # (a clean run, most often answered from the cache, imports no diagnostics module)
        from schedc.lang.diagnostics import has_errors, sort_key

        diagnostics.sort(key=sort_key)
        failed = has_errors(diagnostics, args.strict)
    _emit(diagnostics, sources, args.format, len(files) - unreadable, unreadable)
    if unreadable or listing:
        return 2
    return 1 if failed else 0


def _check(name: str, data: bytes, model_ref: str | None, cached: bool) -> tuple[Source | None, list[Diagnostic]]:
    """One file's source (None when it is not text) and diagnostics: from the result cache when
    `cached` and it holds them for these bytes, else analysed (and then kept when `cached`)."""
    if cached:
        found = result_cache.load(name, data)
        if found == []:  # nothing to render: no source needed
            return None, found
        if found is not None:
            from schedc.lang.diagnostics import Source
            from schedc.lang.text import decode

            return Source(name, decode(data)[0]), found
    with _paused_gc():
        from schedc.pipeline import analyse  # (imports, and the parser unpickled, allocate as much as a parse)

        base_dir = _base_dir(name) if model_ref is not None else None  # (no model: no pathlib, ~3 ms)
        analysis = analyse(data, name, model=_model(model_ref), base_dir=base_dir, lint=True)
    if cached and analysis.source is not None:
        result_cache.store(name, data, analysis.diagnostics)
    return analysis.source, analysis.diagnostics


@contextlib.contextmanager
def _paused_gc():
    """Parsing allocates hundreds of thousands of small acyclic objects; the cyclic collector
    scanning them again and again doubled the time of checking a large file, and a
    short-lived command has nothing for it to reclaim. Importing the front end and loading
    the parser allocate tens of thousands more (~5-10 ms of collections in a fresh check).

    In a process of its own (`schedc.cli.whole_process`), what was allocated meanwhile is frozen
    before the collector resumes (`gc.freeze`, as `schedc.cli.main` does at the end): the
    collection that resuming triggers would walk all of it once more, ~9 M instructions, for a
    process about to exit. Called from other Python code, nothing of the caller's is frozen."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            if cli.whole_process:
                gc.freeze()
            gc.enable()


def _read(name: str) -> bytes | None:
    """The file's bytes (stdin for `-`), or None after a message on stderr."""
    try:
        if name == "-":
            return sys.stdin.buffer.read()
        with open(name, "rb") as file:
            return file.read()
    except OSError as exc:
        print(f"schedc check: cannot read {name}: {exc.strerror or exc}", file=sys.stderr)
        return None


def _model(model_ref: str | None):
    """What `analyse` checks against: no model, the file's `model` directive (`--model`), or `--model=MOD:FN`."""
    from schedc.pipeline import FROM_DIRECTIVE

    if model_ref is None:
        return None
    return model_ref or FROM_DIRECTIVE


def _base_dir(name: str) -> pathlib.Path:
    """Where the file's relative model reference is found (its folder; the cwd for standard input)."""
    import pathlib

    return pathlib.Path.cwd() if name == "-" else pathlib.Path(name).resolve().parent


def _emit(diagnostics: list[Diagnostic], sources: dict[str, Source], fmt: str, files: int, unreadable: int) -> None:
    out = sys.stdout
    if not diagnostics:  # a clean run (most often answered from the cache): no renderer needed
        print("[]" if fmt == "json" else summary_line(diagnostics, files, unreadable), file=out)
        return
    from schedc.lang.diagnostics import RENDERERS, render_text

    if fmt == "json":
        print(RENDERERS["json"](diagnostics, sources), file=out)
        return
    if fmt == "text":
        body = render_text(diagnostics, sources, color=out.isatty() and not os.environ.get("NO_COLOR"))
    else:
        body = RENDERERS[fmt](diagnostics, sources)
    if body:
        print(body + ("\n" if fmt == "text" else ""), file=out)
    print(summary_line(diagnostics, files, unreadable), file=out)


def summary_line(diagnostics: list[Diagnostic], files: int, unreadable: int = 0) -> str:
    """The last line of `schedc check`: what was found in the `files` checked, and how many
    more could not be read (then it never says that all checks passed)."""
    errors = sum(d.is_error for d in diagnostics)
    warnings = len(diagnostics) - errors
    not_read = f"{unreadable} file{'s' * (unreadable != 1)} could not be read"
    if not diagnostics and unreadable:
        return f"No problems found in {files} file{'s' * (files != 1)} checked; {not_read}."
    if not diagnostics:
        return "All checks passed!" if files == 1 else f"All checks passed ({files} files)."
    parts = []
    if errors:
        parts.append(f"{errors} error{'s' * (errors != 1)}")
    if warnings:
        parts.append(f"{warnings} warning{'s' * (warnings != 1)}")
    found = f"Found {' and '.join(parts)} in {files} file{'s' * (files != 1)}"
    return found + (f"; {not_read}." if unreadable else ".")
