"""Found while porting real fits: step counts as integer constant expressions, `$placeholders` as
typed unknowns in `schedc check` and bound by `--set` in run/show/plot, a saved spectracles model
read back, `adamW` -> `adamw`."""

from __future__ import annotations

import json
import textwrap

import jax.numpy as jnp
import numpy as np
import pytest

import schedc
from schedc.cli import main
from schedc.lang.syntax import parse
from schedc.tooling.fmt import format_source

MODEL = {"a": jnp.array(0.0), "b": jnp.zeros(2)}


def test_step_counts_are_integer_constant_expressions():
    program = schedc.compile("let M = 20\nphase fit 10 * M lr 0.1 < free a >\nrepeat 2 * 2 < phase M - 14 lr 0.1 < free b > >", MODEL)
    assert [p.steps for p in program.phases] == [200, 6, 6, 6, 6]
    assert format_source("phase fit 10*M lr 0.1 <free a>\n").startswith("phase fit 10 * M lr 0.1")
    with pytest.raises(schedc.SchedError) as err:
        schedc.compile("let M = 3\nphase M / 2 lr 0.1 < free a >", MODEL)
    assert [d.code for d in err.value.diagnostics] == ["E0203"]  # 1.5 steps
    # no parentheses or calls in a count: `phase warm (10)` would read as a call of `warm`
    assert parse("phase warm (10) lr 0.1 < free a >").diagnostics


@pytest.fixture()
def project(tmp_path):
    (tmp_path / "m.py").write_text(
        textwrap.dedent(
            """
            import jax.numpy as jnp

            def build():
                return {"a": jnp.array(0.0), "b": jnp.zeros(2)}

            def loss(m):
                return (m["a"] - 3.0) ** 2 + jnp.sum((m["b"] - 1.0) ** 2)
            """
        )
    )
    (tmp_path / "f.sched").write_text('model "m.py:build"\nloss "m.py:loss"\nphase fit 10 * $k lr $lr optimizer $opt < free a; init b = $b0 >\n')
    return tmp_path


def test_check_treats_placeholders_as_unknowns_and_set_binds_them(project, capsys):
    sched = str(project / "f.sched")
    assert main(["check", sched]) == 0 and main(["check", "--model", "", sched]) == 0
    capsys.readouterr()
    sets = ["--set", "k=3", "--set", "lr=cosine(0.1 -> 0.01)", "--set", "opt=sgd(momentum=0.9)", "--set", "b0=0.5"]
    assert main(["show", sched, "--format", "json", *sets]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["phases"][0]["steps"] == 30
    assert main(["run", sched, "--quiet", "--compile-cache", "none", "--out", str(project / "out"), *sets]) == 0
    losses = np.load(project / "out" / "losses.npz")["phase_0"]
    assert len(losses) == 30 and losses[-1] < losses[0]
    capsys.readouterr()
    assert main(["run", sched, "--quiet", "--compile-cache", "none", *sets[:6], "--set", "b0=x +"]) == 1
    assert "placeholder `$b0`" in capsys.readouterr().err
    assert main(["show", sched, *sets[:2], "--set", "lr=0.1", "--set", "opt=adamW", "--set", "b0=1"]) == 1
    err = capsys.readouterr().err
    assert "E0105" in err and "did you mean `adamw`?" in err


def test_adamw_is_suggested_for_adamW():
    with pytest.raises(schedc.SchedError, match=r"did you mean `adamw`\?"):
        schedc.compile("phase 10 lr 0.1 optimizer adamW < free a >", MODEL)


def test_a_saved_spectracles_model_reads_back(tmp_path):
    pytest.importorskip("spectracles")
    (tmp_path / "m.py").write_text(
        textwrap.dedent(
            """
            import equinox as eqx
            import jax.numpy as jnp
            from spectracles import Parameter, build_model

            class Line(eqx.Module):
                a: Parameter
                b: Parameter
                c: Parameter

                def __call__(self, x):
                    return self.a.val * x + self.b.val + self.c.val

            def build():
                tied = Parameter(initial=0.0)
                return build_model(Line, Parameter(initial=0.2), tied, tied)

            X = jnp.linspace(-1, 1, 20)

            def loss(m):
                return jnp.mean((m(X) - (1.5 * X - 0.4)) ** 2)
            """
        )
    )
    (tmp_path / "f.sched").write_text('model "m.py:build"\nloss "m.py:loss"\nphase 50 lr 0.1 < free a, b >\n')
    assert main(["run", str(tmp_path / "f.sched"), "--quiet", "--compile-cache", "none", "--out", str(tmp_path / "out")]) == 0
    import importlib.util

    spec = importlib.util.spec_from_file_location("saved_line_model", tmp_path / "m.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    locked = schedc.read_model(tmp_path / "out" / "model.eqx", module.build()).get_locked_model()
    assert float(locked.b.val[0]) == float(locked.c.val[0]) != 0.0  # the tied copy follows its parent
    assert abs(float(locked.a.val[0]) - 0.2) > 0.1
