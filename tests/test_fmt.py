"""`schedc fmt`: golden pairs, idempotence, the same program and the same comments after formatting,
minimal parentheses, its refusal to change meaning, and the CLI's modes and exit codes.

Regenerate the golden outputs (tests/fmt/*.out.sched) after an intended layout change with
`SCHEDC_UPDATE_GOLDENS=1 .venv/bin/pytest -q tests/test_fmt.py`, then review the diff.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from schedc.tooling import fmt

from schedc.lang import syntax
from schedc.lang import nodes as n
from schedc.cli import main
from schedc.lang.diagnostics import SchedError
from schedc.tooling.fmt import format_source, unparse

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = sorted((ROOT / "tests" / "fmt").glob("*.in.sched"))
EXAMPLES = sorted((ROOT / "examples").glob("*.sched"))
ALL_SOURCES = EXAMPLES + GOLDEN + sorted((ROOT / "tests" / "fmt").glob("*.out.sched"))


def _id(path: Path) -> str:
    return str(path.relative_to(ROOT))


def _comments(text: str) -> Counter:
    return Counter(c.text.rstrip() for c in syntax.parse(text).comments)


# ---------------------------------------------------------------- golden pairs and properties


def test_there_are_goldens_and_examples():
    assert len(GOLDEN) >= 3 and len(EXAMPLES) >= 3


@pytest.mark.parametrize("source", GOLDEN, ids=_id)
def test_golden_pair(source: Path):
    expected_path = source.with_name(source.name.replace(".in.sched", ".out.sched"))
    out = format_source(source.read_text(encoding="utf-8"))
    if os.environ.get("SCHEDC_UPDATE_GOLDENS"):
        expected_path.write_text(out, encoding="utf-8")
    assert out == expected_path.read_text(encoding="utf-8")


@pytest.mark.parametrize("source", ALL_SOURCES, ids=_id)
def test_same_program_same_comments_idempotent(source: Path):
    text = source.read_text(encoding="utf-8")
    out = format_source(text)
    assert syntax.parse(out).file == syntax.parse(text).file
    assert _comments(out) == _comments(text)
    assert format_source(out) == out


@pytest.mark.parametrize("example", EXAMPLES, ids=_id)
def test_examples_are_formatted(example: Path):
    text = example.read_text(encoding="utf-8")
    assert format_source(text) == text, f"run `schedc fmt {_id(example)}`"


# ---------------------------------------------------------------- layout decisions


@pytest.mark.parametrize(
    "source, expected",
    [
        ("a + b * c", "a + b * c"),
        ("(a + b) * c", "(a + b) * c"),
        ("a - (b - c)", "a - (b - c)"),
        ("(a - b) - c", "a - b - c"),
        ("a / (b * c)", "a / (b * c)"),
        ("((a))", "a"),
        ("-(a + b)", "-(a + b)"),
        ("-(a * b)", "-(a * b)"),
        ("(-a) * b", "-a * b"),
        ("-(a ** b)", "-a ** b"),
        ("(-a) ** b", "(-a) ** b"),
        ("a ** (b ** c)", "a ** b ** c"),
        ("(a ** b) ** c", "(a ** b) ** c"),
        ("a ** (-b)", "a ** -b"),
        ("a - -b", "a - -b"),
        ("- - a", "--a"),
        ("+a", "+a"),
        ("(a -> b) / 2", "(a -> b) / 2"),
        ("a -> (b / 2)", "a -> b / 2"),
        ("(a -> b) -> c", "(a -> b) -> c"),
        ("(a for 1 then b) -> c", "(a for 1 then b) -> c"),
        ("(a for 1 then b) for 2 then c", "(a for 1 then b) for 2 then c"),
        ("a for (1 -> 2) then b", "a for 1 -> 2 then b"),
        ("a for (1 for 2 then 3) then b", "a for (1 for 2 then 3) then b"),
        ("f(a -> b, k = (c for 5 then d))", "f(a -> b, k=c for 5 then d)"),
        ("[ (1) , {2 : (3)} ]", "[1, {2: 3}]"),
        ('"tab\\t and \\"quote\\""', '"tab\\t and \\"quote\\""'),
        ("10%", "10%"),
        ("1_000", "1_000"),
        ("1E-3", "1E-3"),
        ("$rate * 2", "$rate * 2"),
        ("true", "true"),
    ],
)
def test_expression_parentheses_minimal(source, expected):
    (let,) = syntax.parse(f"let x = {source}").file.items
    assert unparse(let.value) == expected
    (again,) = syntax.parse(f"let x = {expected}").file.items
    assert again.value == let.value


@pytest.mark.parametrize(
    "source, expected",
    [
        ("every  steps", "every step"),  # (a count left out is one, in its unit: found by test_fuzz)
        ("every step", "every step"),
        ("every epochs", "every epoch"),
        ("every 1 steps", "every 1 step"),
        ("every 200 steps", "every 200 steps"),
        ("every 2 epochs", "every 2 epochs"),
    ],
)
def test_an_evaluation_interval_keeps_its_unit(source, expected):
    text = f'eval "m.py:metrics" {source}\n'
    out = format_source(text)
    assert out == f'eval "m.py:metrics" {expected}\n'
    assert syntax.parse(out).file == syntax.parse(text).file


def test_unparse_every_node_kind():
    text = (
        'model "m.py:build"\nseed 1\nlet k = 2\n'
        "phase w 10 lr 0.1 optimizer adam(b1=0.9) <\n  free a, b lr 0.2 optimizer sgd;\n  fix c;\n"
        "  init a ~ normal(0, 1);\n  init b = 1.5;\n  init c = reset;\n  carry state;\n"
        "  stop when loss_change < 1e-6 over 5 after 10;\n>\n"
        "repeat 2 <\n  phase 5 <>\n>\n"
        "params <\n  a: free in 0, w | init value(1) at w;\n>\n"
    )
    file = syntax.parse(text).file
    assert unparse(file) == text
    directive, seed, let, ph, rep, params = file.items
    assert unparse(directive) == 'model "m.py:build"'
    assert unparse(let) == "let k = 2"
    assert unparse(ph.body[0]) == "free a, b lr 0.2 optimizer sgd"
    assert unparse(ph.body[2]) == "init a ~ normal(0, 1)"
    assert unparse(ph.body[4]) == "init c = reset"
    assert unparse(ph.body[5]) == "carry state"
    assert unparse(ph.body[6]) == "stop when loss_change < 1e-6 over 5 after 10"
    assert unparse(ph.body[0].patterns[1]) == "b"
    assert unparse(ph.optimizer.kwargs[0]) == "b1=0.9"
    assert unparse(rep) == "repeat 2 <\n  phase 5 <>\n>"
    entry = params.entries[0]
    assert unparse(entry) == "a: free in 0, w | init value(1) at w"
    assert unparse(entry.specs[1]) == "init value(1) at w"
    assert unparse(entry.specs[0].phases[1]) == "w"
    assert unparse(n.MapEntry(n.Number(1, "1"), n.Percent(0.5, "50%"))) == "1: 50%"


def test_a_name_reset_stays_a_name_after_init():
    tree = n.Init((n.Pattern("a"),), "value", n.BinOp("+", n.Name("reset"), n.Number(1, "1")))
    text = f"phase 1 < {unparse(tree)} >"
    assert syntax.parse(text).file.items[0].body == (tree,)


def test_blank_lines_collapse_and_trim():
    text = "\n\n\nseed 1\n\n\n\nseed 2\nseed 3\n\n\n"
    assert format_source(text) == "seed 1\n\nseed 2\nseed 3\n"
    assert format_source("phase 1 <\n\n  free a;\n\n>\n") == "phase 1 <\n  free a;\n>\n"


def test_empty_and_comment_only_files():
    assert format_source("") == ""
    assert format_source("\n\n") == ""
    assert format_source("# only\n\n\n# comments   \n") == "# only\n\n# comments\n"


def test_crlf_line_endings_are_kept():
    text = "seed 1   # one\r\nphase 1 < free a >\r\n"
    assert format_source(text) == "seed 1  # one\r\nphase 1 <\r\n  free a;\r\n>\r\n"


# ---------------------------------------------------------------- refusing to change meaning


def test_syntax_errors_raise_with_diagnostics():
    with pytest.raises(SchedError) as err:
        format_source("seed 1\nphase 1 < frees a >\n", "bad.sched")
    (d,) = err.value.diagnostics
    assert (d.code, d.span.line, d.file) == ("E0001", 2, "bad.sched")
    assert "bad.sched:2:11: error[E0001]" in str(err.value)


def test_refuses_output_that_changes_the_program(monkeypatch):
    monkeypatch.setattr(fmt, "_statement", lambda stmt: "fix zzz")
    with pytest.raises(SchedError) as err:
        format_source("phase 1 < free a >")
    assert [d.code for d in err.value.diagnostics] == ["E0901"]
    assert "different program" in err.value.diagnostics[0].message


def test_refuses_output_that_loses_a_comment(monkeypatch):
    monkeypatch.setattr(fmt, "_attach", lambda lines, comments, text: None)
    with pytest.raises(SchedError) as err:
        format_source("seed 1  # keep me\n")
    assert "comment" in err.value.diagnostics[0].message


# ---------------------------------------------------------------- the command line


UGLY = "seed   1\nphase 1 < free a >\n"
PRETTY = "seed 1\nphase 1 <\n  free a;\n>\n"


@pytest.fixture
def files(tmp_path):
    ugly, pretty, bad = tmp_path / "ugly.sched", tmp_path / "pretty.sched", tmp_path / "bad.sched"
    ugly.write_text(UGLY)
    pretty.write_text(PRETTY)
    bad.write_text("seed 1\nphase 1 < frees a >\n")
    return ugly, pretty, bad


def test_cli_in_place(files, capsys):
    ugly, pretty, _ = files
    assert main(["fmt", str(ugly), str(pretty)]) == 0
    assert ugly.read_text() == PRETTY and pretty.read_text() == PRETTY
    assert f"reformatted {ugly}" in capsys.readouterr().err


def test_cli_check(files, capsys):
    ugly, pretty, _ = files
    assert main(["fmt", "--check", str(pretty)]) == 0
    assert main(["fmt", "--check", str(ugly), str(pretty)]) == 1
    out = capsys.readouterr().out
    assert f"would reformat {ugly}" in out and str(pretty) not in out
    assert ugly.read_text() == UGLY


def test_cli_diff(files, capsys):
    ugly, pretty, _ = files
    assert main(["fmt", "--diff", str(ugly), str(pretty)]) == 0
    out = capsys.readouterr().out
    assert f"--- {ugly}" in out and "-seed   1" in out and "+seed 1" in out and str(pretty) not in out
    assert ugly.read_text() == UGLY
    assert main(["fmt", "--diff", "--check", str(ugly)]) == 1


def test_cli_syntax_error_leaves_the_file_alone(files, capsys):
    ugly, _, bad = files
    before = bad.read_text()
    assert main(["fmt", str(bad), str(ugly)]) == 1
    err = capsys.readouterr().err
    assert f"{bad}:2:11: error[E0001]" in err and "did you mean `free`?" in err
    assert bad.read_text() == before
    assert ugly.read_text() == PRETTY  # the other file is still formatted


def test_cli_directory_means_its_sched_files(tmp_path, capsys):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.sched").write_text(UGLY)
    (tmp_path / "b.sched").write_text(PRETTY)
    (tmp_path / "notes.txt").write_text(UGLY)
    assert main(["fmt", "--check", str(tmp_path)]) == 1
    assert capsys.readouterr().out == f"would reformat {tmp_path / 'sub' / 'a.sched'}\n"
    assert main(["fmt", str(tmp_path)]) == 0
    assert (tmp_path / "sub" / "a.sched").read_text() == PRETTY
    assert (tmp_path / "notes.txt").read_text() == UGLY


def test_cli_missing_file_is_an_io_error(tmp_path, capsys):
    assert main(["fmt", str(tmp_path / "missing.sched")]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_cli_binary_file(tmp_path, capsys):
    path = tmp_path / "bin.sched"
    path.write_bytes(b"seed \xff\xfe\n")
    assert main(["fmt", str(path)]) == 1
    assert "E0004" in capsys.readouterr().err
    assert path.read_bytes() == b"seed \xff\xfe\n"


def test_cli_keeps_a_byte_order_mark(tmp_path):
    path = tmp_path / "bom.sched"
    path.write_bytes(b"\xef\xbb\xbf" + UGLY.encode())
    assert main(["fmt", str(path)]) == 0
    assert path.read_bytes() == b"\xef\xbb\xbf" + PRETTY.encode()


def test_cli_internal_error_writes_nothing(files, monkeypatch, capsys):
    ugly, _, _ = files
    monkeypatch.setattr(fmt, "_statement", lambda stmt: "fix zzz")
    assert main(["fmt", str(ugly)]) == 123
    assert "E0901" in capsys.readouterr().err
    assert ugly.read_text() == UGLY


class _Stdin:
    def __init__(self, data: bytes):
        self.buffer = io.BytesIO(data)


def test_cli_stdin(monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdin", _Stdin(UGLY.encode()))
    assert main(["fmt", "-"]) == 0
    assert capsys.readouterr().out == PRETTY
    monkeypatch.setattr(sys, "stdin", _Stdin(PRETTY.encode()))
    assert main(["fmt", "-"]) == 0
    assert capsys.readouterr().out == PRETTY
    monkeypatch.setattr(sys, "stdin", _Stdin(UGLY.encode()))
    assert main(["fmt", "--check", "-"]) == 1
    assert capsys.readouterr().out == ""
    monkeypatch.setattr(sys, "stdin", _Stdin(b"phase 1 <"))
    assert main(["fmt", "-"]) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and "-:1:10: error[E0003]" in captured.err


def test_cli_as_a_process():
    proc = subprocess.run(
        [sys.executable, "-m", "schedc", "fmt", "-"], input=UGLY.encode(), capture_output=True, timeout=60
    )
    assert (proc.returncode, proc.stdout.decode(), proc.stderr) == (0, PRETTY, b"")


def test_fmt_imports_no_jax():
    code = (
        "import sys\n"
        "from schedc.cli import main\n"
        f"assert main(['fmt', '--check', {str(EXAMPLES[0])!r}]) == 0\n"
        "assert 'schedc.tooling.fmt' in sys.modules\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('jax', 'jaxlib', 'optax', 'equinox')))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert (proc.returncode, proc.stdout.strip()) == (0, "[]"), proc.stderr
