"""`schedc check` as users run it: exit codes, formats, stdin, encodings.

Most tests call `schedc.cli.main` in-process (fast); a few run the real
process where the process boundary matters (stdin, tracebacks).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from schedc.cli import main

CLEAN = "phase 100 lr 0.1 < free gp.coefficients; init line.amplitude ~ normal(0, 0.1) >\n"
WARN = "let unused = 1\nphase 10 lr 0.1 < free a >\n"
BAD = "phase 100 lr cosin(0.1 -> 0) < free a >\nphase 0 lr -1 < free a >\n"

JSON_KEYS = {"file", "severity", "code", "message", "line", "column", "end_line", "end_column"}
CONCISE = re.compile(r"^(?P<file>[^:]+):(?P<line>\d+):(?P<col>\d+): (?P<severity>error|warning)\[(?P<code>[EW]\d{4})\]: (?P<msg>.+)$")


@pytest.fixture
def write(tmp_path):
    def write(text: str | bytes, name: str = "f.sched"):
        path = tmp_path / name
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
        return str(path)

    return write


def check(capsys, *argv):
    rc = main(["check", *argv])
    out, err = capsys.readouterr()
    return rc, out, err


def test_clean_file_exits_0(capsys, write):
    rc, out, err = check(capsys, write(CLEAN))
    assert rc == 0 and out.strip() == "All checks passed!" and err == ""


def test_errors_exit_1_with_snippets_and_summary(capsys, write):
    path = write(BAD)
    rc, out, _ = check(capsys, path)
    assert rc == 1
    assert f"{path}:1:14: error[E0104]: unknown schedule `cosin`" in out
    assert "^^^^^" in out and "help: did you mean `cosine`?" in out
    assert out.strip().endswith("Found 3 errors in 1 file.")
    assert "\x1b[" not in out  # not a TTY: no colour


def test_warnings_exit_0_unless_strict(capsys, write):
    path = write(WARN)
    assert check(capsys, path)[0] == 0
    rc, out, _ = check(capsys, "--strict", path)
    assert rc == 1 and "Found 1 warning in 1 file." in out


def test_missing_file_exits_2_and_checks_the_others(capsys, write, tmp_path):
    good = write(BAD)
    rc, out, err = check(capsys, str(tmp_path / "nope.sched"), good)
    assert rc == 2
    assert "nope.sched" in err and "cannot read" in err
    assert "E0104" in out  # the readable file was still checked


@pytest.mark.parametrize("make", ["folder", "no permission"])
def test_an_unreadable_file_is_an_error_never_a_pass(capsys, tmp_path, monkeypatch, make):
    path = tmp_path / "s.sched"
    if make == "folder":
        path.mkdir()
    else:  # chmod 000 does not stop root: the read fails as it would for another user
        path.write_text("phase 10 lr 0.1 < free a >\n")
        real_open = open

        def refusing_open(file, *args, **kwargs):
            if str(file) == str(path):
                raise PermissionError(13, "Permission denied", str(file))
            return real_open(file, *args, **kwargs)

        monkeypatch.setattr("builtins.open", refusing_open)
    rc, out, err = check(capsys, str(path))
    assert rc == 2
    assert f"cannot read {path}: " in err and ("Is a directory" in err or "Permission denied" in err)
    assert "All checks passed" not in out and "1 file could not be read" in out


def test_usage_errors_exit_2(capsys):
    assert main(["check"]) == 2
    assert main(["check", "--format", "xml", "f.sched"]) == 2
    capsys.readouterr()


def test_json_shape(capsys, write):
    path = write(BAD)
    rc, out, _ = check(capsys, "--format", "json", path)
    assert rc == 1
    data = json.loads(out)  # only JSON on stdout
    assert isinstance(data, list) and len(data) == 3
    for item in data:
        assert JSON_KEYS <= set(item)
        assert item["file"] == path and item["severity"] == "error"
        assert item["line"] >= 1 and item["column"] >= 1
        assert (item["end_line"], item["end_column"]) > (item["line"], item["column"])
    first = data[0]
    assert (first["code"], first["line"], first["column"], first["end_line"], first["end_column"]) == ("E0104", 1, 14, 1, 19)


def test_json_clean_is_an_empty_list(capsys, write):
    rc, out, _ = check(capsys, "--format", "json", write(CLEAN))
    assert rc == 0 and json.loads(out) == []


def test_concise_lines_are_gnu_style(capsys, write):
    path = write(BAD + "let unused = 2\n")
    rc, out, _ = check(capsys, "--format", "concise", path)
    lines = out.strip().splitlines()
    assert lines[-1] == "Found 3 errors and 1 warning in 1 file."
    parsed = [CONCISE.match(line) for line in lines[:-1]]
    assert all(parsed), lines
    assert [(m["line"], m["col"], m["severity"], m["code"]) for m in parsed] == [
        ("1", "14", "error", "E0104"),
        ("2", "7", "error", "E0203"),
        ("2", "12", "error", "E0204"),
        ("3", "5", "warning", "W0101"),
    ]


def test_github_annotations(capsys, write):
    rc, out, _ = check(capsys, "--format", "github", write(BAD))
    assert rc == 1
    assert out.splitlines()[0].startswith("::error file=") and "title=E0104" in out


def test_several_files_and_summary(capsys, write):
    rc, out, _ = check(capsys, write(CLEAN, "a.sched"), write(CLEAN, "b.sched"))
    assert rc == 0 and out.strip() == "All checks passed (2 files)."


def test_bom_is_accepted(capsys, write):
    rc, out, _ = check(capsys, write(b"\xef\xbb\xbf" + CLEAN.encode()))
    assert rc == 0, out


@pytest.mark.parametrize("data", [b"phase 10 lr 0.1 <\x00\x01\x02 >", b"phase 10 lr \xff\xfe < free a >", b"\x89PNG\r\n\x1a\n\x00\x00"], ids=["nul", "latin1", "png"])
def test_binary_and_undecodable_input_is_e0004(capsys, write, data):
    rc, out, err = check(capsys, "--format", "concise", write(data))
    assert rc == 1
    assert "error[E0004]" in out and "Traceback" not in out + err


def test_design_one_liner_checks_clean(capsys, write):
    rc, out, _ = check(capsys, "--format", "json", write("phase 100 lr 0.1 < free gp.coefficients; init line.amplitude ~ normal(0, 0.1) >"))
    assert rc == 0 and json.loads(out) == []


def test_model_option_calls_binding_lazily(capsys, write, monkeypatch):
    """--model hands the parsed file to schedc.plan.binding.check_against_model (stubbed here: it imports JAX)."""
    import types

    from schedc.lang.diagnostics import Diagnostic
    from schedc.lang.nodes import Span

    calls = []

    def check_against_model(parsed, model_ref, base_dir, **options):  # options: what the driver already knows
        calls.append((model_ref, base_dir))
        return [Diagnostic("W0103", "parameter `b` is never free", Span(1, 1, 1, 6))]

    monkeypatch.setitem(sys.modules, "schedc.plan.binding", types.SimpleNamespace(check_against_model=check_against_model))
    path = write(CLEAN)
    rc, out, _ = check(capsys, "--format", "concise", path, "--model")
    assert rc == 0 and calls[0][0] is None and str(calls[0][1]) == str(__import__("pathlib").Path(path).parent)
    assert f"{path}:1:1: warning[W0103]" in out
    rc, out, _ = check(capsys, "--strict", "--model=m.py:build", path)
    assert rc == 1 and calls[1][0] == "m.py:build"
    rc, _, _ = check(capsys, "--model", path)  # argparse takes the file as the option's value: still a file
    assert rc == 0 and calls[2][0] is None


def test_called_in_process_it_freezes_nothing_of_the_callers(capsys, write):
    """`main(argv)` from other Python code leaves the caller's objects to the cyclic collector
    (only the program, `main()` without argv, freezes its heap before it exits)."""
    import gc

    before = gc.get_freeze_count()
    assert check(capsys, "--no-cache", write(CLEAN))[0] == 0
    assert gc.get_freeze_count() == before and gc.isenabled()


@pytest.mark.parametrize("columns", [None, "57", "200", "", "wide", "-3", "0"])
def test_help_is_as_wide_as_argparse_makes_it(monkeypatch, columns):
    """The CLI's formatter finds the terminal's width without shutil, as argparse's own (with shutil) does."""
    import argparse

    from schedc.cli import _HelpFormatter

    if columns is None:
        monkeypatch.delenv("COLUMNS", raising=False)
    else:
        monkeypatch.setenv("COLUMNS", columns)
    assert _HelpFormatter("schedc")._width == argparse.HelpFormatter("schedc")._width


def test_a_command_line_builds_the_chosen_commands_parser_alone(capsys):
    """`schedc check ...` parses with the check command's parser alone; a word that is no command
    still lists them all."""
    assert main(["check", "--help"]) == 0
    assert capsys.readouterr().out.startswith("usage: schedc check [-h]")
    assert main(["chek", "f.sched"]) == 2
    assert "invalid choice: 'chek' (choose from 'check', 'show', 'plot', 'run', 'fmt', 'lsp')" in capsys.readouterr().err


# ---------------------------------------------------------------- real processes


def run(*args, stdin: bytes = b""):
    return subprocess.run([sys.executable, "-m", "schedc", "check", *args], input=stdin, capture_output=True, timeout=120)


def test_stdin_dash():
    proc = run("--format", "concise", "-", stdin=BAD.encode())
    assert proc.returncode == 1
    assert proc.stdout.decode().startswith("-:1:14: error[E0104]")


def test_as_the_program_it_freezes_its_heap_before_exiting(tmp_path):
    """`main()` without argv (the console script, `python -m schedc`) checks as always and then
    freezes the heap, which keeps the collections at the interpreter's exit from walking it."""
    sched = tmp_path / "f.sched"
    sched.write_text(CLEAN)
    code = "import gc, sys; from schedc.cli import main; sys.argv = ['schedc', 'check', '--no-cache', sys.argv[1]]; rc = main(); print(rc, gc.get_freeze_count() > 1000, gc.isenabled())"
    proc = subprocess.run([sys.executable, "-c", code, str(sched)], capture_output=True, text=True, timeout=120)
    assert proc.stdout.splitlines() == ["All checks passed!", "0 True True"], proc.stderr


@pytest.mark.parametrize(
    "data",
    [b"\xff\xfe\x00p\x00h", b"phase " + b"(" * 5000, b"let x = " + b"-" * 5000 + b"1", b"phase 1" + b"0" * 5000 + b" lr 1e99999 < free a >", b"\x1b[31m<<>>;;"],
    ids=["utf16", "deep-parens", "deep-unary", "huge-numbers", "stray"],
)
def test_malformed_input_never_tracebacks(data):
    proc = run("-", stdin=data)
    assert proc.returncode == 1, proc.stderr
    assert b"Traceback" not in proc.stderr + proc.stdout
    assert re.search(rb"error\[E\d{4}\]", proc.stdout)


MODEL_PY = """
import jax.numpy as jnp

def build():
    return {"gp": {"coefficients": jnp.zeros(3)}, "line": {"amplitude": jnp.zeros(()), "width": jnp.ones(())}}
"""


def test_model_option_against_a_real_model(capsys, tmp_path):
    """End to end with schedc.plan.binding: a pattern that matches nothing is E0401, with the nearest path."""
    (tmp_path / "m.py").write_text(MODEL_PY)
    sched = tmp_path / "f.sched"
    sched.write_text('model "m.py:build"\nphase 10 lr 0.1 < free gp.coefficent, line.* >\n')
    rc, out, _ = check(capsys, "--format", "json", str(sched), "--model")
    found = json.loads(out)
    assert rc == 1
    assert [(d["code"], d["line"], d["column"]) for d in found if d["severity"] == "error"] == [("E0401", 2, 24)]
    sched.write_text('phase 10 lr 0.1 < free gp.coefficients, line.* >\n')
    rc, out, _ = check(capsys, "--format", "json", "--model=m.py:build", str(sched))
    assert rc == 0, out


def test_diagnostics_doc_is_up_to_date():
    """docs/diagnostics.md is generated from CODES with real output (python tools/gen_diagnostics_doc.py)."""
    import importlib.util
    import pathlib

    root = pathlib.Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location("gen_diagnostics_doc", root / "tools" / "gen_diagnostics_doc.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    assert (root / "docs" / "diagnostics.md").read_text() == gen.render(), "docs/diagnostics.md is stale: run `python tools/gen_diagnostics_doc.py`"



@pytest.mark.parametrize("code", sorted(c for c, info in __import__("schedc.lang.diagnostics", fromlist=["CODES"]).CODES.items() if 'model "' not in info.example and info.owner != "schedc.surface.sweep" and c != "E0004"))
def test_each_fix_removes_its_own_diagnostic(code):
    """Each model-free code's example: a diagnostic with a fix (what the language server's quick fix
    writes over its span) is gone once the fix is written there, and nothing new is reported."""
    from schedc.lang.diagnostics import CODES
    from schedc.pipeline import analyse

    text = CODES[code].example
    before = analyse(text, "x.sched", lint=True).diagnostics
    fixes = sorted((d for d in before if d.fix is not None), key=lambda d: d.span.start, reverse=True)
    fixed = text
    for d in fixes:
        fixed = fixed[: d.span.start] + d.fix + fixed[d.span.end :]
    after = analyse(fixed, "x.sched", lint=True).diagnostics
    assert {(d.code, d.message) for d in after} <= {(d.code, d.message) for d in before if d.fix is None}, (text, fixed, after)


def test_fixes_are_the_codes_that_name_a_misspelt_word():
    from schedc.lang.diagnostics import CODES
    from schedc.pipeline import analyse

    fixed = {c: [d.fix for d in analyse(info.example, "x.sched", lint=True).diagnostics if d.fix] for c, info in CODES.items() if 'model "' not in info.example and info.owner != "schedc.surface.sweep" and c != "E0004"}
    assert {c: f for c, f in fixed.items() if f} == {"E0104": ["cosine"], "E0105": ["adam"], "E0106": ["weight_decay"], "E0108": ["loss"], "E0111": ["fixed"], "E0114": ["best"]}
    syntax = analyse("phase 10 lr 0.1 < free a; fre b >\nphse 5 lr 0.1 < free a >", "x.sched", lint=True).diagnostics
    assert [(d.code, d.fix) for d in syntax] == [("E0001", "free")]  # (one syntax error is reported: the first)
    from schedc.lang.diagnostics import Diagnostic

    assert [Diagnostic("E0401", "", help=h).fix for h in ("did you mean `gp.a` or `gp.b`?", "remove it, or use it", None)] == [None, None, None]


def test_a_folder_is_every_sched_file_under_it(capsys, tmp_path):
    """`schedc check .` was "cannot read .: Is a directory" (exit 2), where `schedc fmt .` (and `ruff
    check .`) take the files under it."""
    (tmp_path / "fits" / "deep").mkdir(parents=True)
    (tmp_path / "fits" / "a.sched").write_text(BAD)
    (tmp_path / "fits" / "deep" / "b.sched").write_text(WARN)
    (tmp_path / "fits" / "notes.txt").write_text("phase lr <\n")  # not a schedule: not read
    (tmp_path / "empty").mkdir()
    rc, out, err = check(capsys, str(tmp_path / "fits"), "--format", "concise")
    files = [line.split(":")[0] for line in out.splitlines()[:-1]]
    assert rc == 1 and err == ""
    assert sorted(set(files)) == [str(tmp_path / "fits" / "a.sched"), str(tmp_path / "fits" / "deep" / "b.sched")]
    assert out.splitlines()[-1] == "Found 3 errors and 1 warning in 2 files."
    rc, out, err = check(capsys, str(tmp_path / "empty"))  # (nothing to check is never a pass)
    assert rc == 2 and err == f"schedc check: cannot read {tmp_path / 'empty'}: Is a directory\n" and "1 file could not be read" in out
