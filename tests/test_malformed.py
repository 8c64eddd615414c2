"""A corpus of malformed inputs (tests/malformed/): each gives its diagnostic, or none when it is in fact
valid, and never a traceback — through `schedc check` (one process for the whole corpus, JSON and text
output), `schedc fmt --check`, and the library calls.

The corpus is binary-exact (BOMs, NUL bytes, invalid UTF-8, CRLF): files are read as bytes.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from schedc.lang import syntax
from schedc.lang.diagnostics import SchedError
from schedc.tooling.fmt import format_source

CORPUS = Path(__file__).resolve().parent / "malformed"

# file -> the code of its first error (None: the file is valid and checks clean; a warning's code:
# valid, and that warning is all that is said)
EXPECTED = {
    "empty.sched": "W0108",  # no phases: valid, and trains nothing
    "only_comments.sched": "W0108",
    "only_whitespace.sched": "W0108",
    "bom.sched": None,
    "crlf.sched": None,
    "cr_only.sched": None,
    "deep_parens.sched": None,  # parentheses add no depth
    "long_line.sched": None,  # a 50,000-character comment
    "long_name.sched": None,  # a 20,000-character name
    "truncated_phase.sched": "E0003",
    "truncated_header.sched": "E0003",
    "truncated_params.sched": "E0003",
    "truncated_repeat.sched": "E0003",
    "truncated_string.sched": "E0002",
    "binary.sched": "E0004",
    "nul_byte.sched": "E0004",
    "invalid_utf8.sched": "E0004",
    "lone_surrogate.sched": "E0004",
    "latin1_comment.sched": "E0004",
    "deep_unary.sched": "E0005",  # 5,000 unary minus
    "deep_calls.sched": "E0005",  # 3,000 nested calls
    "deep_lists.sched": "E0005",
    "deep_repeats.sched": "E0005",
    "long_sum.sched": "E0005",  # 20,000 terms: a left-nested tree
    "huge_float.sched": "E0210",  # 1e999
    "huge_int.sched": "E0210",  # 5,000 digits
    "huge_percent.sched": "E0210",
    "huge_exponent.sched": "E0210",
    "stray_characters.sched": "E0002",
    "unicode_identifier.sched": None,  # `phase λ 10`: names are Python identifiers, Greek letters included
    "vertical_tab.sched": "E0002",
    "unbalanced_brackets.sched": "E0001",
    "keyword_soup.sched": "E0001",
    "only_semicolons.sched": "E0001",
    "many_errors.sched": "E0215",  # `phase lr < >` parses: steps named `lr`, no learning rate
}
FILES = sorted(CORPUS.glob("*.sched"))
JSON_KEYS = {"file", "severity", "code", "message", "line", "column", "end_line", "end_column"}


def _schedc(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "schedc", *args], capture_output=True, timeout=120, cwd=CORPUS)


def test_every_corpus_file_has_an_expectation():
    assert sorted(p.name for p in FILES) == sorted(EXPECTED)


@pytest.fixture(scope="module")
def checked() -> tuple[subprocess.CompletedProcess, dict[str, list[dict]]]:
    proc = _schedc("check", "--format", "json", *sorted(EXPECTED))
    by_file: dict[str, list[dict]] = {name: [] for name in EXPECTED}
    for d in json.loads(proc.stdout):
        by_file[d["file"]].append(d)
    return proc, by_file


def test_check_exit_status_and_no_traceback(checked):
    proc, _ = checked
    assert proc.returncode == 1
    assert b"Traceback" not in proc.stderr and proc.stderr == b""


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_check_reports_the_expected_diagnostic(checked, name):
    _, by_file = checked
    diagnostics = by_file[name]
    expected = EXPECTED[name]
    if expected is None:
        assert diagnostics == []
        return
    if expected.startswith("W"):
        assert [d["code"] for d in diagnostics] == [expected]
    else:
        assert diagnostics, f"{name}: no diagnostic"
        first = min((d for d in diagnostics if d["severity"] == "error"), key=lambda d: (d["line"], d["column"]))
        assert first["code"] == expected, diagnostics[:3]
    for d in diagnostics:
        assert JSON_KEYS <= set(d)
        assert d["line"] >= 1 and d["column"] >= 1
        assert (d["end_line"], d["end_column"]) >= (d["line"], d["column"])


def test_check_text_format_renders_every_file():
    proc = _schedc("check", *sorted(EXPECTED))
    assert proc.returncode == 1
    assert b"Traceback" not in proc.stderr
    out = proc.stdout.decode("utf-8")
    assert "error[E0004]" in out and "error[E0005]" in out and "error[E0210]" in out


def test_fmt_check_never_crashes():
    proc = _schedc("fmt", "--check", *sorted(EXPECTED))
    assert proc.returncode == 1  # syntax errors and files that would change
    assert b"Traceback" not in proc.stderr and b"E0901" not in proc.stderr


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_library_calls_never_raise(path: Path):
    text, problem = syntax.decode(path.read_bytes())
    if text is None:
        assert problem.code == EXPECTED[path.name] == "E0004"
        return
    result = syntax.parse(text)
    try:
        out = format_source(text)
    except SchedError as err:
        assert not result.ok and all(d.code != "E0901" for d in err.diagnostics)
        return
    assert syntax.parse(out).file == result.file
