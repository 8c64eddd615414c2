"""`schedc run`: entry points from the file's directives, the summary, saved results, the compile cache, exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

MODEL = '''
import equinox as eqx
import jax
import jax.numpy as jnp


class Line(eqx.Module):
    slope: jax.Array
    intercept: jax.Array


def build():
    return Line(jnp.asarray(0.0), jnp.asarray(0.0))


def data():
    x = jnp.linspace(-1.0, 1.0, 20)
    return x, 2.0 * x + 0.5


def loss(model, x, y):
    return jnp.mean((model.slope * x + model.intercept - y) ** 2)


def bad_loss(model, x, y):
    return jnp.log(model.slope - 10.0)  # nan from the first step
'''

SCHED = """
model "line.py:build"
loss "line.py:loss"
data "line.py:data"
optimizer sgd
phase slope 40 lr 0.3 < free slope >
phase both 60 lr 0.3 < free ** >
"""


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    folder = tmp_path_factory.mktemp("project")
    (folder / "line.py").write_text(textwrap.dedent(MODEL))
    (folder / "fit.sched").write_text(SCHED)
    return folder


def schedc(*args, cwd):
    return subprocess.run([sys.executable, "-m", "schedc", "run", *args], capture_output=True, text=True, cwd=cwd, timeout=300)


def test_run_prints_the_summary_saves_results_and_fills_the_compile_cache(project, tmp_path):
    cache, out = tmp_path / "cache", tmp_path / "out"
    first = schedc("fit.sched", "--out", str(out), "--compile-cache", str(cache), cwd=project)
    assert first.returncode == 0, first.stderr
    assert "Traceback" not in first.stderr
    assert "phase 0 (slope)" in first.stdout and "60/60" in first.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert [p["steps_run"] for p in summary] == [40, 60] and summary[1]["final_loss"] < 1e-3
    losses = np.load(out / "losses.npz")
    assert losses["phase_0"].shape == (40,) and losses["phase_1"].shape == (60,)
    assert np.load(out / "hyperparams.npz")["learning_rate"].shape == (100,)
    assert (out / "model.eqx").stat().st_size > 0
    assert any(cache.iterdir())  # the executables were kept for the next process
    second = schedc("fit.sched", "--out", str(out), "--compile-cache", str(cache), "--force", cwd=project)  # --force: replace the first results
    assert second.returncode == 0, second.stderr
    again = json.loads((out / "summary.json").read_text())
    assert [p["final_loss"] for p in again] == [p["final_loss"] for p in summary]


def strict_json(path):
    """JSON as strict readers (jq, JavaScript) read it: no NaN or Infinity."""
    return json.loads(path.read_text(), parse_constant=lambda word: pytest.fail(f"{path.name} holds {word}, which is not JSON"))


def test_a_non_finite_loss_exits_1_and_names_the_phase(project, tmp_path):
    result = schedc("fit.sched", "--loss", "line.py:bad_loss", "--compile-cache", "none", "--out", str(tmp_path), cwd=project)
    assert result.returncode == 1
    assert "non-finite loss" in result.stderr and "phase 0 (slope)" in result.stderr
    assert "Traceback" not in result.stderr
    assert (tmp_path / "model.eqx").exists()  # the last completed model (here: the initial one) is saved
    assert [p["final_loss"] for p in strict_json(tmp_path / "summary.json")] == [None]  # (was NaN: not JSON)


def test_schedule_errors_exit_1_and_missing_files_exit_2(project, tmp_path):
    (tmp_path / "bad.sched").write_text("phase 10 lr cosin(1 -> 0) < free slope >\n")
    bad = schedc(str(tmp_path / "bad.sched"), "--model", f"{project / 'line.py'}:build", "--compile-cache", "none", cwd=project)
    assert bad.returncode == 1 and "E0104" in bad.stderr and "Traceback" not in bad.stderr
    missing = schedc("nowhere.sched", cwd=project)
    assert missing.returncode == 2 and "no such file" in missing.stderr
    no_loss = project / "noloss.sched"  # a directive names files inside the .sched file's folder
    no_loss.write_text('model "line.py:build"\nphase 10 lr 0.1 < free slope >\n')
    result = schedc(str(no_loss), "--compile-cache", "none", cwd=project)
    assert result.returncode == 2 and "no loss given" in result.stderr


SWEEP_SCHED = """
model "line.py:build"
loss "line.py:loss"
data "line.py:data"
optimizer sgd
let rate = 0.3
phase 40 lr rate < free slope >
phase 60 lr rate * $shrink < free ** >
"""


def test_sweep_prints_the_settings_best_first_and_saves_each(project, tmp_path):
    (project / "sweep.sched").write_text(SWEEP_SCHED)
    out = tmp_path / "out"
    result = schedc("sweep.sched", "--sweep", "rate=0.01,0.3,30", "--sweep", "$shrink=1,0.5,1", "--out", str(out), "--quiet", cwd=project)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split()[:3] == ["setting", "rate", "shrink"]
    assert lines[2].split()[:4] == ["*", "1", "0.3", "0.5"]  # the larger rate fits better
    assert lines[4].split()[-2:] == ["non-finite", "loss"]  # the largest diverges, and the others are kept
    summary = strict_json(out / "sweep.json")
    assert summary["best"] == 1 and summary["settings"] == [{"rate": 0.01, "shrink": 1}, {"rate": 0.3, "shrink": 0.5}, {"rate": 30, "shrink": 1}]
    assert (out / "setting_0" / "model.eqx").is_file() and (out / "setting_1" / "losses.npz").is_file()
    assert summary["final_losses"][1] < summary["final_losses"][0] and summary["final_losses"][2] is None  # (was NaN: not JSON)
    assert strict_json(out / "setting_2" / "summary.json")[0]["final_loss"] is None


@pytest.mark.parametrize(
    "sweep, status, words",
    [
        # located in the `--sweep` argument itself: <--sweep I>:line:column
        (["--sweep", "rate=0.1,0.2", "--sweep", "shrink=1"], 1, "<--sweep 2>:1:8: error[E0702]: `shrink` has 1 values and `rate` 2"),
        (["--sweep", "speed=0.1", "--sweep", "shrink=1"], 1, "<--sweep 1>:1:1: error[E0701]: `speed` is neither a `$placeholder` nor a `let`"),
        (["--sweep", "rate=0.1,fast"], 1, "<--sweep 1>:1:10: error[E0703]: the values of `rate` are numbers, got 'fast'"),
        (["--sweep", "rate"], 2, "NAME=V1,V2"),
        (["--sweep", "rate=0.1,-0.2", "--sweep", "shrink=1,1"], 1, "E0204"),
    ],
)
def test_bad_sweeps_are_reported_without_a_traceback(project, sweep, status, words):
    (project / "sweep.sched").write_text(SWEEP_SCHED)
    result = schedc("sweep.sched", *sweep, "--quiet", cwd=project)
    assert result.returncode == status, result.stderr
    assert words in result.stderr and "Traceback" not in result.stderr


EVAL_SWEEP_SCHED = """
model "line.py:build"
loss "line.py:loss"
data "line.py:data"
validation "line.py:val"
eval "line.py:METRICS" every 5 steps
optimizer sgd
let rate = 0.3
phase 40 lr rate < free slope; stop when val.loss < 0.5 >
phase 60 lr rate < free **; stop when val.loss stops improving for 2 evals; keep best val.score >
"""

EVAL_MODEL = '''

def val():
    x = jnp.linspace(-0.9, 0.9, 7)
    return x, 2.0 * x + 0.6


def metrics(model, x, y):
    error = model.slope * x + model.intercept - y
    return {"loss": jnp.mean(error ** 2), "score": -jnp.mean(jnp.abs(error))}


def vector_metrics(model, x, y):
    return {"loss": model.slope * x, "score": 0.0}
'''


def test_an_evaluated_sweep_ranks_its_settings_by_a_metric(project, tmp_path):
    (project / "evaluated.py").write_text(textwrap.dedent(MODEL) + EVAL_MODEL)
    (project / "eval_sweep.sched").write_text(EVAL_SWEEP_SCHED.replace("line.py", "evaluated.py").replace("METRICS", "metrics"))
    out = tmp_path / "out"
    result = schedc("eval_sweep.sched", "--sweep", "rate=0.01,0.1,0.3", "--best-by", "val.score", "--out", str(out), "--quiet", cwd=project)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["setting", "rate", "final", "loss", "val.loss", "val.score", "steps", "stop"]
    assert lines[2].split()[:3] == ["*", "2", "0.3"] and "val.loss < 0.5,val.loss stopped improving" in lines[2]
    summary = json.loads((out / "sweep.json").read_text())
    scores = summary["metrics"]["val.score"]
    assert summary["best_by"] == "val.score" and summary["best"] == int(np.argmax(scores)) == 2
    assert json.loads((out / "setting_0" / "summary.json").read_text())[1]["stop_reason"] in ("completed", "val.loss stopped improving")
    unknown = schedc("eval_sweep.sched", "--sweep", "rate=0.01,0.1", "--best-by", "val.accuracy", "--quiet", cwd=project)
    assert unknown.returncode == 2 and "--best-by val.accuracy: expected `loss` or a metric of the metrics function, which returns val.loss, val.score" in unknown.stderr
    (project / "eval_sweep_bad.sched").write_text(EVAL_SWEEP_SCHED.replace("line.py", "evaluated.py").replace("METRICS", "vector_metrics"))
    bad = schedc("eval_sweep_bad.sched", "--sweep", "rate=0.01,0.1", "--quiet", cwd=project)
    assert bad.returncode == 1 and "the metrics function's `loss` has shape (7,) in phase 0; expected a scalar" in bad.stderr
    assert "Traceback" not in unknown.stderr + bad.stderr


def test_ranking_by_a_metric_that_never_came_due_keeps_the_fits(project, tmp_path):
    """`--best-by val.score` where no setting reached an evaluation (the interval is longer than the
    phases): said without a traceback, exit 1, every setting's results saved, unranked."""
    (project / "evaluated.py").write_text(textwrap.dedent(MODEL) + EVAL_MODEL)
    head = EVAL_SWEEP_SCHED.split("phase")[0].replace("line.py", "evaluated.py").replace("METRICS", "metrics").replace("every 5 steps", "every 500 steps")
    (project / "never_due.sched").write_text(head + "phase 40 lr rate < free slope >\n")  # (no rule on a metric: the check refuses one never evaluated)
    out = tmp_path / "out"
    result = schedc("never_due.sched", "--sweep", "rate=0.01,0.1", "--best-by", "val.score", "--out", str(out), "--quiet", cwd=project)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "--best-by val.score: sweep: no setting evaluated `val.score`; the sweep evaluated nothing (no `eval` / metrics=, or no evaluation came due)" in result.stderr
    assert result.stdout.splitlines()[0].split() == ["setting", "rate", "final", "loss", "steps", "stop"]  # listed by the final loss
    summary = json.loads((out / "sweep.json").read_text())
    assert (summary["best_by"], summary["best"], summary["metrics"]) == ("val.score", None, {})
    assert all((out / f"setting_{i}" / "summary.json").is_file() for i in range(2))


def test_run_called_in_process_leaves_the_jax_configuration_as_it_found_it(project, tmp_path):
    """The compile cache is the command's: `cli.main(["run", ...])` called from Python sets it for
    the run, then gives the caller's settings back (later compiles are not written there)."""
    import jax
    import jax.numpy as jnp

    from schedc.cli import main

    cache, threshold = tmp_path / "cache", jax.config.jax_persistent_cache_min_compile_time_secs
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)  # (the caller's: any compile would be kept, were a folder set)
    try:
        before = (jax.config.jax_compilation_cache_dir, 0.0)
        assert main(["run", str(project / "fit.sched"), "--quiet", "--compile-cache", str(cache)]) == 0
        assert (jax.config.jax_compilation_cache_dir, jax.config.jax_persistent_cache_min_compile_time_secs) == before
        kept = sorted(cache.iterdir())
        assert kept  # the run's executables were written there
        jax.block_until_ready(jax.jit(lambda x: jnp.sin(x) * 3.25 + jnp.arange(7.0))(1.0))  # a program no one compiled before
        assert sorted(cache.iterdir()) == kept
    finally:
        jax.config.update("jax_persistent_cache_min_compile_time_secs", threshold)


@pytest.mark.parametrize(
    "arguments, status, words",
    [
        (["--log", "{file}"], 2, "--log {file} is a file, not a folder"),
        (["--chunk", "0"], 2, "argument --chunk: expected a whole number >= 1, got '0'"),
        (["--chunk", "2.5"], 2, "argument --chunk: expected a whole number >= 1, got '2.5'"),
        (["--checkpoint-every", "-1"], 2, "argument --checkpoint-every: expected a whole number >= 0, got '-1'"),
        (["--seed", str(2**63)], 2, f"an int seed is a signed 64-bit integer (-{2**63} to {2**63 - 1}), got {2**63}"),
        (["--set", "rate=0.1"], 2, "a value was given for `$rate`, which is not a placeholder of this program (its placeholders: none)"),
        (["--compile-cache", "{file}"], 0, "warning: compiling without a cache: --compile-cache {file} is a file, not a folder"),
    ],
)
def test_bad_options_are_said_before_any_training_without_a_traceback(project, tmp_path, capsys, arguments, status, words):
    """Each was a traceback (`--log` at a file, a seed past int64), silently another value (`--chunk
    0`, a misspelt `--set`), or silently nothing (`--compile-cache` at a file)."""
    from schedc.cli import main

    file = tmp_path / "a_file"
    file.write_text("")
    arguments = [a.format(file=file) for a in arguments]
    try:
        got = main(["run", str(project / "fit.sched"), "--quiet", "--compile-cache", "none", *arguments])
    except SystemExit as exit:  # (argparse's own errors)
        got = exit.code
    err = capsys.readouterr().err
    assert got == status and words.format(file=file) in err and "Traceback" not in err


def test_set_values_that_do_not_fit_their_placeholder_are_said(project, tmp_path, capsys):
    from schedc.cli import main

    sched = tmp_path / "opt.sched"
    sched.write_text(f'model "{project / "line.py"}:build"\nloss "{project / "line.py"}:loss"\ndata "{project / "line.py"}:data"\nphase 10 lr 0.1 optimizer $opt < free ** >\n')
    for value, shown in (("adam(b1=)", "'adam(b1=)'"), ("3", "3")):
        assert main(["run", str(sched), "--quiet", "--compile-cache", "none", "--set", f"opt={value}"]) == 2
        err = capsys.readouterr().err
        assert "placeholder $opt stands after `optimizer` or in `chain(...)`: expected an optax GradientTransformation" in err and err.rstrip().endswith(f"got {shown}")


def test_the_files_warnings_are_printed_before_the_run_and_do_not_stop_it(project, capsys):
    """`schedc run` printed nothing of a file's warnings: a parameter never freed, a `let` never used
    or a file without a phase (which trains nothing) ran in silence."""
    from schedc.cli import main

    (project / "warned.sched").write_text(SCHED.replace("optimizer sgd", "optimizer sgd\nlet unused = 2").replace("free ** >", "free slope >"))
    assert main(["run", str(project / "warned.sched"), "--quiet", "--compile-cache", "none"]) == 0
    captured = capsys.readouterr()
    assert "warning[W0101]: `unused` is never used" in captured.err and "warning[W0103]: 1 parameter is never free and never named: `intercept`" in captured.err
    assert "6 | let unused = 2" in captured.err  # rendered with its source line, as `schedc check` does
    assert "60/60" in captured.out  # and the run went on

    (project / "empty.sched").write_text('model "line.py:build"\nloss "line.py:loss"\ndata "line.py:data"\n')
    assert main(["run", str(project / "empty.sched"), "--quiet", "--compile-cache", "none"]) == 0
    err = capsys.readouterr().err
    assert "warning[W0108]: the schedule has no phases: running it trains nothing" in err and "SchedWarning" not in err  # (said once, rendered)


def test_a_failing_or_wrongly_shaped_metrics_function_is_named(project, capsys):
    """A metrics function that raised was reported as "the loss failed while training"; one that
    returned a bare scalar as "returned ShapeDtypeStruct"."""
    from schedc.cli import main

    (project / "judged.py").write_text(
        textwrap.dedent(MODEL) + EVAL_MODEL + "\n\ndef broken(model, x, y):\n    raise RuntimeError('metrics broke')\n\n\ndef bare(model, x, y):\n    return jnp.mean(x)\n"
    )
    for name, words in (
        ("broken", f"schedc run: training stopped: RuntimeError: metrics broke (in `broken`, at {project / 'judged.py'}:"),
        ("bare", "error: the metrics function returned an array of shape () in phase 0; expected a dict {name: scalar}"),
    ):
        (project / f"judged_{name}.sched").write_text(EVAL_SWEEP_SCHED.replace("line.py", "judged.py").replace("METRICS", name))
        assert main(["run", str(project / f"judged_{name}.sched"), "--quiet", "--compile-cache", "none"]) == 1
        err = capsys.readouterr().err
        assert words in err and "Traceback" not in err
