"""The front end's work per keystroke, counted rather than timed: what the language server runs
for one edit (`pipeline.analyse(..., lint=True)`, then the model stage for a file naming a
model), over the documents of bench/bench_lsp.py.

    .venv/bin/python bench/bench_front_work.py [--long 100] [--baseline OTHER/src ...]

Reported per document and build: the Python function calls of one edit's analysis (cProfile;
the model loaded beforehand, as the server caches it) and how often each stage and program
fact ran (parse, check_file, resolve, expand, env_of). Call counts do not depend on the
machine's load, so two builds compare exactly where wall and CPU times are noisy (a shared
2-core VM). `--baseline` runs the same measurement in a subprocess importing `schedc` from
another checkout's `src` (`git worktree add --detach /tmp/old COMMIT`).
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import subprocess
import sys
from pathlib import Path

from bench_lsp import documents

ROOT = Path(__file__).resolve().parent.parent
COUNTED = ("parse", "check_file", "resolve", "expand", "env_of")


def measure(long_phases: int) -> dict:
    """{document: {"calls": N, stage: times run, ...}} for the `schedc` this process imports."""
    from schedc.pipeline import FROM_DIRECTIVE, analyse

    folder = ROOT / "examples"  # the model file the example names is there
    name = str(folder / "bench.sched")

    def edit(text: str, with_model: bool):
        analysis = analyse(text, name, lint=True)
        return analysis.with_model(FROM_DIRECTIVE, base_dir=folder, lint=True) if with_model else analysis

    out = {}
    for label, text, with_model in documents(long_phases):
        edit(text, with_model)  # the model loaded and every lazy import done, as in a running server
        profile = cProfile.Profile()
        profile.enable()
        edit(text, with_model)
        profile.disable()
        stats = pstats.Stats(profile).stats
        row = {"calls": sum(nc for _, nc, _, _, _ in stats.values())}
        for (file, _, function), (_, nc, _, _, _) in stats.items():
            if function in COUNTED and "schedc" in file:
                row[function] = row.get(function, 0) + nc
        out[label] = row
    return out


def _label(src: Path) -> str:
    head = subprocess.run(["git", "-C", str(src), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return head.stdout.strip() if head.returncode == 0 else src.resolve().parent.name


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--long", type=int, default=100, help="phases appended for the long documents")
    parser.add_argument("--baseline", type=Path, action="append", default=[], metavar="SRC")
    parser.add_argument("--json", action="store_true", help="print this build's counts as JSON (what a baseline run returns)")
    args = parser.parse_args(argv)
    if args.json:
        print(json.dumps(measure(args.long)))
        return 0
    results = {"this checkout": measure(args.long)}
    for src in args.baseline:
        env = dict(os.environ, PYTHONPATH=str(src.resolve()))  # ahead of the installed schedc
        done = subprocess.run([sys.executable, __file__, "--json", "--long", str(args.long)], env=env, capture_output=True, text=True, check=True)
        results[_label(src)] = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"{'document':42} {'build':14} {'calls':>9} " + " ".join(f"{s:>10}" for s in COUNTED))
    for document in next(iter(results.values())):
        for build, rows in results.items():
            row = rows[document]
            print(f"{document:42} {build:14} {row['calls']:9d} " + " ".join(f"{row.get(s, 0):10d}" for s in COUNTED))
    return 0


if __name__ == "__main__":
    sys.exit(main())
