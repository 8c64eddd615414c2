"""Evaluation in batched fits and sweeps: each dataset and each setting evaluates, stops on its
metrics, keeps its best weights and steps its plateaus as it would run alone; its rules are the
host's semantics (scripted metrics, exact); ranking a sweep by a metric; bad metrics are errors
naming the phase."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_evaluation import EVERY, RULESETS, SEQUENCES, counter, host_rules, scripted

import schedc
from schedc.runtime.evaluation import EvalError

# ---------------------------------------------------------------- scripted metrics: the rules per item, exactly


def count_up(m, d):  # sgd at lr 1 on -t: t counts the steps done (the data only gives the datasets' axis)
    return -m["t"] + 0.0 * jnp.sum(d)


def looked_up(m, table):
    """The k-th evaluation (every EVERY steps) returns `table[k]`: each dataset its own sequence."""
    return {"m": table[jnp.round(m["t"]).astype(jnp.int32) // EVERY - 1]}


@pytest.mark.parametrize("ruleset", RULESETS)
def test_each_dataset_applies_the_rules_to_its_own_metrics(ruleset):
    """Every scripted sequence a dataset (its validation data the sequence): what each dataset's
    phase took, why it stopped and what it kept are the host's rules on its sequence."""
    text, rules, keep = RULESETS[ruleset]
    sequences = list(SEQUENCES.values())
    steps = EVERY * len(sequences[0])
    source = f'eval "m.py:f" every {EVERY} steps\noptimizer sgd\nphase {steps} lr 1 < free **; {text} >'
    program = schedc.compile(source, counter())
    tables = jnp.asarray(np.asarray(sequences, np.float32))
    (phase,) = program.run_batched(count_up, jnp.zeros((len(sequences), 1)), metrics=looked_up, validation=(tables,)).phases
    for i, values in enumerate(sequences):
        taken, reason, kept = host_rules(values, rules, keep)
        assert phase.eval_steps[i].tolist() == [EVERY * (k + 1) for k in range(taken)]
        np.testing.assert_array_equal(phase.metrics[i]["m"], np.asarray(values[:taken], np.float32))
        assert (phase.stop_reasons[i], int(phase.steps_run[i])) == (reason or "completed", EVERY * taken)
        assert phase.best_steps[i] == (None if kept is None else EVERY * (kept + 1))
        assert float(phase.model["t"][i]) == (EVERY * taken if kept is None else EVERY * (kept + 1))  # the kept weights


def test_each_setting_applies_its_own_thresholds_and_patience():
    """A sweep of a threshold and a patience on one scripted sequence: each setting stops where
    the host's rules with its numbers stop, and keeps what they keep."""
    values = SEQUENCES["falling then flat"]
    text = f'eval "m.py:f" every {EVERY} steps\noptimizer sgd\nphase {EVERY * len(values)} lr 1 < free **; stop when val.m < $x; stop when val.m stops improving for $p evals; keep best val.m >'
    grid = dict(x=[1.5, 3.5, -1.0, 0.0], p=[4, 2, 1, 3])
    sweep = schedc.compile(text, counter(), x=0.0, p=1).sweep(**grid)
    (phase,) = sweep.run(count_up, jnp.zeros(1), metrics=scripted(values)).phases
    for i, (x, p) in enumerate(zip(grid["x"], grid["p"])):
        taken, reason, kept = host_rules(values, [("below", x), ("patience", p, False)], (False,))
        assert (phase.stop_reasons[i], int(phase.steps_run[i]), phase.best_steps[i]) == (reason or "completed", EVERY * taken, EVERY * (kept + 1))
        np.testing.assert_array_equal(phase.metrics[i]["m"], np.asarray(values[:taken], np.float32))
    assert len(set(phase.stop_reasons)) > 1 and len(set(phase.steps_run.tolist())) > 1


# ---------------------------------------------------------------- real training: each item as it runs alone

X = jnp.asarray(np.random.default_rng(0).normal(size=(24, 3)), jnp.float32)
Y = jnp.asarray(X @ np.array([1.0, -2.0, 0.5], np.float32) + 0.3, jnp.float32)
XV = jnp.asarray(np.random.default_rng(1).normal(size=(12, 3)), jnp.float32)
YV = jnp.asarray(XV @ np.array([1.1, -1.8, 0.4], np.float32) + 0.2, jnp.float32)


def linear():
    return {"w": jnp.zeros(3), "b": jnp.zeros(())}


def mse(m, x, y):
    return jnp.mean((x @ m["w"] + m["b"] - y) ** 2)


def metrics(m, x, y):
    error = x @ m["w"] + m["b"] - y
    return {"loss": jnp.mean(error**2), "score": -jnp.mean(jnp.abs(jnp.tanh(error)))}


# phase 0: a threshold and a plateau on a metric; phase 1: patience and keep best (on another metric)
TEXT = """let base = 0.05
eval "m.py:metrics" every 4 steps
optimizer sgd
phase 60 lr base * plateau(on=val.loss, patience=1, factor=0.5) < free w; stop when val.loss < $target >
phase 80 lr base < free **; stop when val.loss stops improving for $patience evals; keep best val.score >"""
# The largest rate stays below sgd's stability limit on this problem (2 / the loss's largest
# curvature: 0.68 for phase 1's `free **`): at 0.9 phase 1 diverges, and a diverging trajectory
# multiplies the rounding by which vmapped arithmetic differs from unbatched (past rtol 2e-5 on
# an AMD EPYC).
GRID = dict(base=[0.02, 0.1, 0.4, 0.6], target=[0.0, 2.0, 0.0, 0.0], patience=[3, 2, 1, 2])


def assert_alike(mine, alone) -> None:
    """An item of a batched fit or sweep against the same fit run alone: the same steps, stops,
    evaluations and kept step; losses, metrics and weights to rounding (vmapped arithmetic),
    as tests/test_sweep.py and tests/test_batched.py compare them."""
    assert [p.steps_run for p in mine.phases] == [p.steps_run for p in alone.phases]
    assert mine.stop_reasons == alone.stop_reasons
    assert [p.best_step for p in mine.phases] == [p.best_step for p in alone.phases]
    np.testing.assert_array_equal(mine.eval_steps, alone.eval_steps)
    assert list(mine.metrics) == list(alone.metrics)
    for name, values in alone.metrics.items():
        np.testing.assert_allclose(mine.metrics[name], values, rtol=2e-5, atol=1e-7)
    np.testing.assert_allclose(mine.loss_history, alone.loss_history, rtol=2e-5, atol=1e-7)
    np.testing.assert_array_equal(mine.hyperparams["plateau_scale"], alone.hyperparams["plateau_scale"])
    for name in ("w", "b"):
        np.testing.assert_allclose(mine.model[name], alone.model[name], rtol=2e-5, atol=1e-6)


@pytest.fixture(scope="module")
def swept():
    sweep = schedc.compile(TEXT, linear(), target=0.0, patience=1).sweep(**GRID)
    return sweep, sweep.run(mse, X, Y, metrics=metrics, validation=(XV, YV))


def test_every_setting_evaluates_as_it_runs_alone(swept):
    sweep, result = swept
    for i, setting in enumerate(sweep.settings):
        program = schedc.compile(TEXT.replace("let base = 0.05", "let base = $base"), linear(), **setting)
        assert_alike(result.setting(i), program.run(mse, X, Y, quiet=True, metrics=metrics, validation=(XV, YV)))
    # what the settings exercise: a threshold stop (setting 1), patience per setting, a kept
    # evaluation before the last, a plateau that lowered the rate
    assert result.stop_reasons[0][1] == "val.loss < 2" and result.stop_reasons[0].count("completed") == 3
    assert result.stop_reasons[1][1:] == ["val.loss stopped improving"] * 3 and len(set(result.phases[1].steps_run.tolist())) == 4
    assert any(p.best_step < p.steps_run for p in (result.setting(i).phases[1] for i in range(len(sweep))))
    assert np.nanmin(result.phases[0].hyperparams["plateau_scale"]) < 1


def test_every_dataset_evaluates_on_its_own_validation_data_as_it_runs_alone():
    shift = jnp.asarray([0.0, 0.5, 2.0])[:, None]
    xs, ys = jnp.stack([X, X[::-1], X * 2]), jnp.stack([Y, Y[::-1], Y * 2])
    xv, yv = jnp.stack([XV] * 3), YV + shift
    text = TEXT.replace("let base = 0.05", "let base = 0.1").replace("$target", "0.5").replace("$patience", "2")
    program = schedc.compile(text, linear())
    batched = program.run_batched(mse, xs, ys, metrics=metrics, validation=(xv, yv))
    for i in range(3):
        assert_alike(batched.dataset(i), program.run(mse, xs[i], ys[i], quiet=True, metrics=metrics, validation=(xv[i], yv[i])))
    assert len(set(batched.phases[0].steps_run.tolist())) > 1  # the datasets stop apart


def test_the_evaluation_is_a_conditional_in_the_vmapped_program(swept, monkeypatch):
    """Under vmap a cond on a per-item predicate becomes a select computing both branches: the
    metrics would be computed at every step. The program evaluates under a cond whose predicate
    is one scalar for all items (some item is due), and computes the metrics nowhere else."""
    from schedc.runtime import batch

    calls = []
    vmapped = batch._vmapped

    def recorded(fns, axis):
        init, chunk = vmapped(fns, axis)
        return init, lambda *args: calls.append((chunk, args)) or chunk(*args)

    monkeypatch.setattr(batch, "_vmapped", recorded)
    sweep, _ = swept
    sweep.run(mse, X, Y, metrics=metrics, validation=(XV, YV))
    chunk, args = calls[0]
    jaxpr = chunk.jaxpr(*args).jaxpr

    found = []  # for each tanh (the metrics function's): whether it is inside a cond on a scalar

    def walk(jaxpr, inside):
        for eqn in jaxpr.eqns:
            if eqn.primitive.name == "tanh":
                found.append(inside)
            scalar_cond = eqn.primitive.name == "cond" and eqn.invars[0].aval.shape == ()
            for value in eqn.params.values():
                for sub in value if isinstance(value, (tuple, list)) else (value,):
                    sub = getattr(sub, "jaxpr", sub)
                    if hasattr(sub, "eqns"):
                        walk(sub, inside or scalar_cond)

    walk(jaxpr, False)
    assert found and all(found)


def test_a_watched_sweep_shows_its_mean_loss_and_metrics_and_fits_the_same(swept, monkeypatch):
    """In a terminal a sweep draws the progress bar `run` draws: each phase's bar moved to its end,
    showing the mean over the settings of the last loss and of each one's latest evaluation; the
    results are those of the unwatched sweep. `quiet` is the runner's, not the loss's."""
    import sys

    from schedc.runtime import runner

    sweep, quiet = swept
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    shown = {}
    original_advance = runner._Progress.advance
    monkeypatch.setattr(runner._Progress, "advance", lambda self, task, *a: (shown.__setitem__(task, a), original_advance(self, task, *a))[1])
    watched = sweep.run(mse, X, Y, metrics=metrics, validation=(XV, YV))
    assert len(shown) == len(watched.phases)
    for (done, loss, evaluation), phase in zip(shown.values(), watched.phases):
        assert done == phase.steps_run.max()
        assert f"{loss:.4g}" == f"{np.nanmean(phase.losses[:, -1]):.4g}"
        latest = {name: np.mean([values[name][-1] for values in phase.metrics]) for name in ("loss", "score")}
        assert evaluation == f"val.loss {latest['loss']:.4g} val.score {latest['score']:.4g}"
    np.testing.assert_array_equal(watched.phases[-1].losses, quiet.phases[-1].losses)
    np.testing.assert_array_equal(watched.metric("loss"), quiet.metric("loss"))
    assert sweep.run(mse, X, Y, quiet=True, metrics=metrics, validation=(XV, YV)).stop_reasons == quiet.stop_reasons
    two = schedc.compile(TEXT, linear(), target=0.0, patience=1).run_batched(mse, jnp.stack([X, X]), jnp.stack([Y, Y]), quiet=True, metrics=metrics, validation=(jnp.stack([XV, XV]), jnp.stack([YV, YV])))
    np.testing.assert_array_equal(two.dataset(0).loss_history, two.dataset(1).loss_history)


# ---------------------------------------------------------------- ranking a sweep by a metric


def test_a_sweep_ranks_its_settings_by_a_metric_in_its_direction(swept):
    sweep, result = swept
    score, loss = result.metric("val.score"), result.metric("loss")  # (`val.` may be left out)
    for i in range(len(sweep)):  # the metric of the model each setting returns: its last phase kept its best score
        alone = result.setting(i).phases[1]
        kept = list(alone.eval_steps).index(alone.best_step)
        np.testing.assert_array_equal(score[i], alone.metrics["score"][kept])
        assert loss[i] == alone.metrics["loss"][kept]  # every metric at the evaluation kept, not at the last
    assert result.best(by="val.score") == int(np.argmax(score))  # a score: higher is better
    assert result.best(by="val.loss") == int(np.argmin(loss))  # a loss: lower is better
    assert result.best() == int(np.nanargmin(result.final_losses))
    table = result.summary(by="val.score").splitlines()
    assert table[0].split()[-4:] == ["val.loss", "val.score", "steps", "stop"]
    assert table[2].split()[:2] == ["*", str(result.best(by="val.score"))]
    with pytest.raises(ValueError, match=r"no setting evaluated `val.accuracy`; the metrics evaluated are `val.loss`, `val.score`"):
        result.best(by="val.accuracy")


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "bad, words",
    [
        (lambda m, x, y: {"los": jnp.mean(x)}, r"phase 0 uses `val.loss` but the metrics function returned `val.los`"),
        (lambda m, x, y: {"loss": x @ m["w"], "score": 0.0}, r"the metrics function's `loss` has shape \(12,\) in phase 0; expected a scalar"),
    ],
)
def test_bad_metrics_are_errors_naming_the_phase(swept, bad, words):
    sweep, _ = swept
    with pytest.raises(EvalError, match=words):
        sweep.run(mse, X, Y, metrics=bad, validation=(XV, YV))
    program = schedc.compile(TEXT.replace("$target", "0.5").replace("$patience", "2"), linear())
    with pytest.raises(EvalError, match=words):
        program.run_batched(mse, jnp.stack([X, X]), jnp.stack([Y, Y]), metrics=bad, validation=(jnp.stack([XV, XV]), jnp.stack([YV, YV])))


def test_a_sweep_evaluating_every_epoch_is_refused(swept):
    from schedc.runtime.sweep import SweepError

    sweep, _ = swept
    with pytest.raises(SweepError, match=r"eval_every=\"epoch\": sweeps take phases counted in steps"):
        sweep.run(mse, X, Y, metrics=metrics, validation=(XV, YV), eval_every="epoch")


def test_a_batched_fits_validation_data_needs_the_datasets_axis():
    program = schedc.compile(TEXT.replace("$target", "0.5").replace("$patience", "2"), linear())
    with pytest.raises(ValueError, match=r"every validation array needs the leading axis of the 2 datasets .* found shapes \[\(12, 3\), \(12,\)\]"):
        program.run_batched(mse, jnp.stack([X, X]), jnp.stack([Y, Y]), metrics=metrics, validation=(XV, YV))


def test_metrics_that_would_never_run_and_empty_batches_are_refused_at_once():
    """Metrics given where no phase evaluates ran the fit and returned no metrics, silently; a
    metrics value that is no function was never noticed; zero datasets were an IndexError."""
    program = schedc.compile("phase 5 lr 0.1 < free ** >", linear())
    with pytest.raises(EvalError, match=r"metrics were given, but no phase evaluates: say how often with eval_every=N"):
        program.run(mse, X, Y, metrics=metrics, validation=(XV, YV))
    with pytest.raises(EvalError, match="no phase evaluates"):
        program.run_batched(mse, jnp.stack([X, X]), jnp.stack([Y, Y]), metrics=metrics, validation=(jnp.stack([XV, XV]), jnp.stack([YV, YV])))
    with pytest.raises(TypeError, match=r"metrics must be a function, metrics\(model, \*validation\) -> \{name: scalar\}, got dict"):
        program.run(mse, X, Y, metrics={"loss": 1.0}, eval_every=2)
    with pytest.raises(ValueError, match="the data arrays' leading dataset axis is empty: there is no dataset to fit"):
        program.run_batched(mse, X[None, :0].reshape(0, 24, 3), Y.reshape(1, 24)[:0])
    with pytest.raises(TypeError, match="logger must be a schedc.runtime.log.RunLog"):
        program.run(mse, X, Y, logger="logs/")


def test_a_model_with_leaves_that_are_not_arrays_evaluates_per_dataset():
    """An equinox MLP holds its activation as a leaf: the metrics are traced on dataset 0's arrays, the rest as it is."""
    import equinox as eqx

    def loss(m, x, y):
        return jnp.mean((jax.vmap(m)(x) - y) ** 2)

    def metrics(m, x, y):
        return {"loss": loss(m, x, y)}

    program = schedc.compile('eval "m.py:metrics" every 5 steps\nphase 10 lr 0.01 < free **; keep best val.loss >', eqx.nn.MLP(3, "scalar", 4, 1, key=jax.random.key(0)))
    batched = program.run_batched(loss, jnp.stack([X, X]), jnp.stack([Y, -Y]), metrics=metrics, validation=(jnp.stack([XV, XV]), jnp.stack([YV, -YV])))
    assert [batched.dataset(i).eval_steps.tolist() for i in range(2)] == [[5, 10], [5, 10]]
    assert batched.phases[0].metrics[0]["loss"][0] != batched.phases[0].metrics[1]["loss"][0]


def test_the_bars_mean_over_items_skips_stopped_ones_and_warns_of_nothing():
    """The bar's loss and metrics are the mean over the items with a value; when none has one
    (every item stopped, or a metric NaN in all) it is NaN, without numpy's "Mean of empty slice"
    warning, which an `np.errstate` does not silence."""
    import warnings

    from schedc.runtime.evaluation import mean_over_items

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert mean_over_items(np.asarray([1.0, np.nan, 3.0])) == 2.0
        assert np.isnan(mean_over_items(np.asarray([np.nan, np.nan])))
