"""Snapshot of `schedc check --format json` over every .sched file under tests/ and examples/.

    python tools/diagnostics_snapshot.py > snapshot.json          # write
    python tools/diagnostics_snapshot.py --compare snapshot.json   # exit 1 on any difference

Each file is checked on its own (paths relative to the repository root, the command run in
this process: the same `schedc.cli.main` as the `schedc` script), and files whose `model`
directive names a model are checked again with `--model`. A refactoring of the front
end must leave this output byte-identical; tests/test_snapshot.py compares it with the
committed tests/data/diagnostics_snapshot.json.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODEL_DIRECTIVE = re.compile(rb"^\s*model\s+\"", re.MULTILINE)


def sched_files() -> list[Path]:
    return sorted(p for d in ("tests", "examples") for p in (ROOT / d).rglob("*.sched"))


def check_json(path: Path, with_model: bool) -> list[dict]:
    """`schedc check --format json FILE [--model]`, run in this process from the repository root."""
    from schedc.cli import main

    rel = path.relative_to(ROOT).as_posix()
    argv = ["check", "--format", "json", rel] + (["--model"] if with_model else [])
    out, err = io.StringIO(), io.StringIO()
    with contextlib.chdir(ROOT), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(argv)
    try:  # absolute paths in notes ("no such file: ...") are made relative to the checkout
        return json.loads(out.getvalue().replace(str(ROOT), "<root>"))
    except json.JSONDecodeError:
        return [{"unparsable_output": out.getvalue(), "stderr": err.getvalue()[-2000:], "rc": rc}]


def snapshot() -> dict[str, list[dict]]:
    result: dict[str, list[dict]] = {}
    for path in sched_files():
        rel = path.relative_to(ROOT).as_posix()
        result[rel] = check_json(path, with_model=False)
        if MODEL_DIRECTIVE.search(path.read_bytes()):
            result[rel + " --model"] = check_json(path, with_model=True)
    return result


def differences(stored: dict, current: dict) -> list[str]:
    """The entries (files, or `file --model`) whose diagnostics differ, or that only one side has."""
    return sorted(k for k in set(stored) | set(current) if stored.get(k) != current.get(k))


def main(argv: list[str]) -> int:
    current = snapshot()
    if len(argv) == 2 and argv[0] == "--compare":
        changed = differences(json.loads(Path(argv[1]).read_text()), current)
        for key in changed:
            print(f"differs: {key}", file=sys.stderr)
        return 1 if changed else 0
    json.dump(current, sys.stdout, indent=1, ensure_ascii=False, sort_keys=True)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
