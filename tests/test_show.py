"""`schedc show`: the phase x parameter table, text and JSON, with and without a model."""

import json
import subprocess
import sys

import pytest

from schedc.cli import main

MODEL = '''
import equinox as eqx
import jax
import jax.numpy as jnp


class Line(eqx.Module):
    amplitude: jax.Array
    width: jax.Array


class Two(eqx.Module):
    line_a: Line
    line_b: Line
    offset: jax.Array


def build():
    width = jnp.asarray(0.1)
    return Two(Line(jnp.ones(()), width), Line(jnp.ones(()), width), jnp.zeros(()))
'''

SCHED = """model "two.py:build"
let base = 0.05
phase warm 100 lr base < free line_a.*; init line_a.amplitude ~ normal(0, 0.1) >
repeat 2 <
  phase alt 50 lr 0.01 < free **; free offset lr 0.1 * base; init offset = 1 >
>
phase 10 lr cosine(base -> base / 10) optimizer sgd < free line_b.amplitude; init line_b.amplitude = reset >
"""


@pytest.fixture()
def sched(tmp_path):
    (tmp_path / "two.py").write_text(MODEL)
    path = tmp_path / "s.sched"
    path.write_text(SCHED)
    return path


def show(capsys, *argv):
    code = main(["show", *map(str, argv)])
    out = capsys.readouterr()
    return code, out.out, out.err


def rows(out):
    return {line.split("  ")[0]: line for line in out.splitlines()}


def test_table_with_the_model(sched, capsys):
    code, out, err = show(capsys, sched, "--model")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["0", "1", "2", "3"]
    assert lines[1].split() == ["parameter", "warm", "alt#1", "alt#2"]
    table = rows(out)
    # a shared copy is shown with its parent
    assert table["line_a.width (= line_b.width)"].split()[3:] == ["free", "free", "free", "."]
    assert table["line_a.amplitude"].split()[1:] == ["free", "~", "free", "free", "."]
    assert table["offset"].split()[1:] == [".", "free", "lr=0.1", "*", "base", "=", "free", "lr=0.1", "*", "base", "=", "."]
    assert table["line_b.amplitude"].split()[-2:] == ["free", "^"]
    assert table["steps"].split() == ["steps", "100", "50", "50", "10"]
    assert "cosine(base -> base / 10)" in table["lr"]
    assert table["optimizer"].split() == ["optimizer", "adam", "adam", "adam", "sgd"]
    assert "~: random init" in out


def test_table_without_a_model_lists_the_patterns(sched, capsys):
    code, out, _ = show(capsys, sched)
    assert code == 0
    lines = out.splitlines()
    assert lines[1].split()[0] == "pattern"
    table = rows(out)
    assert set(table) >= {"line_a.*", "line_a.amplitude", "**", "offset", "line_b.amplitude"}
    assert table["**"].split()[1:] == [".", "free", "free", "."]


def test_json(sched, capsys):
    code, out, _ = show(capsys, sched, "--model", "--format", "json")
    assert code == 0
    data = json.loads(out)
    assert data["model"] is True
    assert [p["display"] for p in data["phases"]] == ["warm", "alt#1", "alt#2", "phase 3"]
    assert data["phases"][3]["lr"] == "cosine(base -> base / 10)" and data["phases"][3]["optimizer"] == "sgd"
    width = next(r for r in data["parameters"] if r["path"] == "line_a.width")
    assert width["shared"] == ["line_b.width"]
    offset = next(r for r in data["parameters"] if r["path"] == "offset")
    assert offset["phases"][1] == {"free": True, "lr": "0.1 * base", "optimizer": None, "init": {"kind": "value", "args": [1.0]}}
    code, out, _ = show(capsys, sched, "--format", "json")
    assert "patterns" in json.loads(out) and json.loads(out)["model"] is False


def test_explicit_model_reference(sched, capsys):
    code, out, _ = show(capsys, sched, f"--model={sched.parent / 'two.py'}:build")
    assert code == 0 and "line_a.width (= line_b.width)" in out


def test_errors_give_no_table(sched, capsys):
    sched.write_text(SCHED.replace("free line_a.*", "free line_c.*"))
    code, out, err = show(capsys, sched, "--model")
    assert code == 1 and out == ""
    assert "error[E0401]" in err and "Traceback" not in err
    sched.write_text("phase 0 lr 0.1 < free a >")
    code, out, err = show(capsys, sched)
    assert code == 1 and "error[E0203]" in err


def test_unreadable_file(tmp_path, capsys):
    code, _, err = show(capsys, tmp_path / "missing.sched")
    assert code == 2 and "cannot read" in err


def test_show_without_a_model_imports_no_jax(sched):
    code = (
        "import sys; from schedc.cli import main; rc = main(['show', sys.argv[1]]); "
        "print(rc, sorted(m for m in sys.modules if m.split('.')[0] in ('jax', 'equinox', 'optax')))"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(sched)], capture_output=True, text=True, timeout=120)
    assert proc.stdout.splitlines()[-1] == "0 []", proc.stderr
