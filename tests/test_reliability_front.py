"""Regression tests of the adversarial findings in the front end (issue 14): each input once
silently misparsed, raised a traceback, hung, or wrote where it should not."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from schedc.pipeline import check_source
from schedc.lang import syntax
from schedc.lang.diagnostics import Diagnostic, Span, render_github
from schedc.lang.program import MAX_PHASES
from schedc.plan.binding import BindingError, load_entry

SCHEDC = [sys.executable, "-m", "schedc"]


def codes(text: str) -> list[str]:
    return [d.code for d in check_source(text)[1]]


def messages(text: str) -> str:
    return "\n".join(d.message for d in check_source(text)[1])


def schedc(*args, cwd=None, timeout=120, input=None):
    """Run the CLI in a subprocess; the timeout guards against hangs (it is no speed target)."""
    return subprocess.run(SCHEDC + list(args), cwd=cwd, capture_output=True, timeout=timeout, input=input)


# ---- silent misparse: CR-only line endings


CR_ONLY = b"# c\rphase 10 lr 0.1 < free a >\rphase oops <<<\r"


def test_cr_only_comment_ends_at_the_carriage_return(tmp_path):
    path = tmp_path / "cr.sched"
    path.write_bytes(CR_ONLY)
    proc = schedc("check", str(path))
    assert proc.returncode == 1, proc.stdout
    assert b"cr.sched:3:" in proc.stdout  # the error is on the third line, counted as editors count
    parsed = syntax.parse(CR_ONLY.decode())
    assert any(d.code == "E0001" for d in parsed.diagnostics)
    assert len([i for i in parsed.file.items]) == 1  # the first phase is seen


def test_cr_only_file_shows_its_phases(tmp_path):
    path = tmp_path / "cr.sched"
    path.write_bytes(b"# c\rphase 10 lr 0.1 < free a >\rphase 20 lr 0.2 < free b >\r")
    proc = schedc("show", str(path))
    assert proc.returncode == 0, proc.stderr
    assert b"steps      10    20" in proc.stdout, proc.stdout


def test_crlf_comment_does_not_keep_the_carriage_return():
    parsed = syntax.parse("# note\r\nphase 10 lr 0.1 < free a >\r\n")
    assert parsed.ok
    assert [c.text for c in parsed.comments] == ["# note"]


# ---- injection: github annotations


def test_github_format_escapes_file_names_and_messages():
    evil = "a.sched\n::error file=x,line=1::owned,b:c"
    d = Diagnostic("E0001", "bad\nthing %", Span(1, 1, 1, 2), file=evil)
    out = render_github([d])
    assert out.count("\n") == 0
    assert out.startswith("::error file=a.sched%0A%3A%3Aerror file%3Dx%2Cline%3D1%3A%3Aowned%2Cb%3Ac,line=1,") or "%0A" in out
    assert "::owned" not in out
    assert out.endswith("::bad%0Athing %25")


def test_github_format_cli_with_a_newline_in_the_file_name(tmp_path):
    path = tmp_path / "x\n::error::injected.sched"
    path.write_text("phase 10 lr < free a >\n")
    proc = schedc("check", "--format", "github", str(path))
    lines = proc.stdout.decode().splitlines()
    assert not any(line.startswith("::error::injected") for line in lines)
    assert all(line.startswith("::") or line.startswith("Found") or not line for line in lines)


# ---- code execution: lark's parser cache


def test_parser_cache_lives_in_a_private_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    path = syntax._cache_file(False)
    assert path is not None and path.startswith(str(tmp_path / "schedc"))
    assert (os.stat(tmp_path / "schedc").st_mode & 0o077) == 0


def test_parser_cache_refused_in_a_folder_others_can_write(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    (tmp_path / "schedc").mkdir()
    os.chmod(tmp_path / "schedc", 0o777)
    assert syntax._cache_file(False) is None


def test_parser_cache_file_others_can_write_is_not_loaded(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    path = syntax._cache_file(False)
    Path(path).write_bytes(b"planted")
    os.chmod(path, 0o666)
    assert syntax._cache_file(False) is None


def test_a_pickle_planted_in_the_temporary_directory_is_never_loaded(tmp_path):
    marker = tmp_path / "pwned"
    env = dict(os.environ, TMPDIR=str(tmp_path), XDG_CACHE_HOME=str(tmp_path / "cache"))
    # plant a pickle under every name lark's default cache could use
    import pickle

    class Boom:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    payload = b"x\n" + pickle.dumps(Boom())
    for name in ("a", "b"):
        (tmp_path / f".lark_cache_{name}.tmp").write_bytes(payload)
    proc = subprocess.run(SCHEDC + ["check", "-"], input=b"phase 10 lr 0.1 < free a >\n", env=env, capture_output=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert not marker.exists()
    # nothing written to the shared temporary directory: the cache is in the private folder
    assert sorted(p.name for p in tmp_path.iterdir()) == [".lark_cache_a.tmp", ".lark_cache_b.tmp", "cache"]
    assert list((tmp_path / "cache" / "schedc").glob("parser-*.lark"))


# ---- tracebacks: numbers


@pytest.mark.parametrize("digits", [309, 310, 350, 400, 401, 5000])
def test_integer_literals_of_hundreds_of_digits(digits):
    text = f"phase 10 lr {'9' * digits} < free a >\n"
    assert "E0210" in codes(text)
    text = f"let big = {'9' * digits}\nphase big lr 0.1 < free a >\n"
    assert "E0210" in codes(text)


def test_integer_literal_arithmetic_beyond_float_range():
    assert "E0210" in codes(f"phase 10 lr {'9' * 300} * {'9' * 300} < free a >\n")


@pytest.mark.parametrize("command", ["show", "plot"])
def test_big_integer_literal_cli(tmp_path, command):
    path = tmp_path / "big.sched"
    path.write_text(f"phase 10 lr {'9' * 350} < free a >\n")
    proc = schedc(command, str(path), "--out" if command == "plot" else "--model", str(tmp_path / "x.png")) if command == "plot" else schedc(command, str(path))
    assert proc.returncode == 1
    assert b"Traceback" not in proc.stderr and b"E0210" in proc.stderr


def test_division_by_zero_is_named():
    assert "division by zero" in messages("phase 10 lr 1 / 0 < free a >\n")
    assert "division by zero" in messages("let z = 0\nphase 10 lr 0.1 / z < free a >\n")
    assert "zero raised to a negative power" in messages("phase 10 lr 0 ** -1 < free a >\n")


def test_underflowing_literal_is_diagnosed():
    assert "too small" in messages("phase 10 lr 1e-400 < free a >\n")
    assert codes("phase 10 lr 0.0 < free a >\n").count("E0210") == 0
    assert codes("phase 10 lr 0e5 < free a >\n").count("E0210") == 0
    assert "E0210" not in codes("phase 10 lr 1e-300 < free a >\n")


# ---- hangs and memory: lets, repeats, windows, recovery


def doubling_lets(lines: int) -> str:
    return "let x0 = 1\n" + "".join(f"let x{i} = x{i - 1} + x{i - 1}\n" for i in range(1, lines + 1)) + f"phase 10 lr x{lines} < free a >\n"


def test_doubling_lets_are_refused_at_the_let_that_grows_too_large():
    diags = check_source(doubling_lets(20))[1]
    e0005 = [d for d in diags if d.code == "E0005"]
    assert len(e0005) == 1 and e0005[0].span.line == 14  # x13 is 2^14 - 1 = 16383 nodes as a tree
    assert "E0101" not in [d.code for d in diags]


def test_thousands_of_doubling_lets_finish(tmp_path):
    path = tmp_path / "lets.sched"
    path.write_text(doubling_lets(2000))
    proc = schedc("check", "--format", "concise", str(path), timeout=60)
    assert proc.returncode == 1 and b"Traceback" not in proc.stderr
    assert b"E0005" in proc.stdout


def test_large_use_of_many_lets_is_bounded():
    text = "let x0 = 1\n" + "".join(f"let x{i} = x{i - 1} + x{i - 1} + x{i - 1}\n" for i in range(1, 8)) + "phase 10 lr " + " + ".join(["x7"] * 100) + " < free a >\n"
    diags = check_source(text)[1]
    assert any(d.code == "E0005" and "this expression" in d.message for d in diags)


def test_total_phase_cap_counts_all_repeat_levels(tmp_path):
    text = "repeat 100000 < repeat 100000 < phase 1 lr 0.1 < free a > > >\n"
    diags = check_source(text)[1]
    assert [d.code for d in diags if d.is_error] == ["E0211"]
    assert str(MAX_PHASES) in diags[0].message
    path = tmp_path / "rep.sched"
    path.write_text(text)
    for command in ("check", "show"):
        proc = schedc(command, str(path), timeout=60)
        assert proc.returncode == 1 and b"E0211" in proc.stdout + proc.stderr


def test_a_file_past_the_phase_cap_expands_no_phase(monkeypatch):
    """The cap is checked before expanding: no stage builds the phases of a file past it
    (counted, not timed: each ExpandedPhase made is one phase expanded)."""
    from schedc.lang import program
    from schedc.pipeline import analyse

    made = []

    class Counted(program.ExpandedPhase):
        def __init__(self, *args, **kwargs):
            made.append(1)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(program, "ExpandedPhase", Counted)
    over = "repeat 1000 < repeat 100 < phase 1 lr 0.1 < free a > > >\nphase 1 lr 0.1 < free a >\n"
    for lint in (False, True):
        assert "E0211" in [d.code for d in analyse(over, lint=lint).diagnostics]
    assert program.expand(syntax.parse(over).file) is None
    assert made == []
    assert len(program.expand(syntax.parse("repeat 3 < phase 1 lr 0.1 < free a > >").file)) == len(made) == 3


def test_phase_cap_accepts_exactly_the_limit():
    assert "E0211" not in codes("repeat 1000 < repeat 100 < phase 1 lr 0.1 < free a > > >\n")
    assert "E0211" in codes("repeat 1000 < repeat 100 < phase 1 lr 0.1 < free a > > >\nphase 1 lr 0.1 < free a >\n")


@pytest.mark.parametrize("window", ["3000000000", "99999999999999999999"])
def test_stop_window_is_bounded(window):
    text = f"phase 10 lr 0.1 < free a; stop when loss_change < 1e-7 over {window} >\n"
    assert "E0213" in codes(text)


def test_unclosed_repeat_before_many_phases_recovers_in_linear_time(tmp_path):
    text = "repeat 2 <\n" + "phase 10 lr 0.1 < free a >\n" * 1000
    parsed = syntax.parse(text)
    assert [d.code for d in parsed.diagnostics] == ["E0003"]
    path = tmp_path / "rec.sched"
    path.write_text("phase 1 lr 0.1 < free a >\n" + text * 5)
    proc = schedc("check", str(path), timeout=60)
    assert proc.returncode == 1 and b"E0003" in proc.stdout


def test_recovery_keeps_items_around_a_broken_one():
    text = "phase 1 lr 0.1 < free a >\nphase 2 lr 0.1 < free b\nphase 3 lr 0.1 < free c >\nrepeat 2 <\nphase 4 lr 0.1 < free d >\n>\n"
    parsed = syntax.parse(text)
    assert [d.code for d in parsed.diagnostics] == ["E0001"]
    assert len(parsed.file.items) == 3


# ---- the loader's trust model


@pytest.fixture
def project(tmp_path):
    (tmp_path / "outside.py").write_text("def build():\n    return {'a': 1.0}\n")
    inner = tmp_path / "proj"
    inner.mkdir()
    (inner / "m.py").write_text("def build():\n    return {'a': 1.0}\n")
    return inner


@pytest.mark.parametrize("ref", ["../outside.py:build", "sub/../../outside.py:build"])
def test_directive_may_not_leave_the_folder(project, ref):
    with pytest.raises(BindingError, match="outside the folder"):
        load_entry(ref, project, from_file=True)


def test_directive_absolute_path_is_refused(project):
    with pytest.raises(BindingError, match="outside the folder"):
        load_entry(f"{project.parent / 'outside.py'}:build", project, from_file=True)


def test_directive_has_no_current_directory_fallback(project, monkeypatch):
    monkeypatch.chdir(project.parent)
    with pytest.raises(BindingError, match="no such file"):
        load_entry("outside.py:build", project, from_file=True)
    assert load_entry("m.py:build", project, from_file=True)() == {"a": 1.0}


def test_command_line_reference_may_point_anywhere(project):
    assert load_entry(f"{project.parent / 'outside.py'}:build", project)() == {"a": 1.0}


def test_check_model_directive_outside_folder_is_a_diagnostic(project):
    sched = project / "s.sched"
    sched.write_text('model "../outside.py:build"\nphase 10 lr 0.1 < free a >\n')
    proc = schedc("check", str(sched), "--model")
    assert proc.returncode == 1
    assert b"E0406" in proc.stdout and b"outside the folder" in proc.stdout
