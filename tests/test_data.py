"""Training on data: minibatches drawn on the device per epoch, epochs as lengths and durations,
per-step keys, (loss, aux) metrics, evaluation at boundaries, rules on evaluation metrics,
`keep best`, resuming mid-epoch, and the errors bad data gets."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import interrupted_on_call, on_host_devices

import schedc
from schedc.compiler import minibatch
from schedc.runtime.data import DataError
from schedc.runtime.evaluation import EvalError

N = 30  # examples; with batch 8: 3 steps per epoch, 6 examples sit out each epoch
X = np.random.default_rng(0).normal(size=(N, 3)).astype(np.float32)
Y = (X @ np.array([1.0, -2.0, 0.5], np.float32) + 0.3).astype(np.float32)


def linear():
    return {"w": jnp.zeros(3), "b": jnp.zeros(())}


def mse(m, x, y):
    return jnp.mean((x @ m["w"] + m["b"] - y) ** 2)


def fit(text, loss=mse, *data, model=None, **kwargs):
    program = schedc.compile(text, linear() if model is None else model)
    return program, program.run(loss, *(data or (X, Y)), quiet=True, **kwargs)


# ---------------------------------------------------------------- minibatches


@pytest.fixture(scope="module")
def two_epochs():
    return fit("seed 5\nbatch 8\noptimizer sgd\nphase 2 epochs lr 0.05 < free ** >", chunk=4)


def test_minibatches_match_a_hand_written_loop_over_per_epoch_permutations(two_epochs):
    program, res = two_epochs
    assert program.phases[0].steps == 2 and res.phases[0].steps_run == 6 and res.phases[0].steps_per_epoch == 3
    data_key, _ = minibatch.phase_keys(jax.random.key(5), 0)
    m, tx = linear(), optax.sgd(0.05)
    state, expected = tx.init(m), []
    for epoch in range(2):
        order = np.asarray(jax.random.permutation(jax.random.fold_in(data_key, epoch), N))
        for j in range(3):
            rows = order[j * 8 : (j + 1) * 8]
            loss, grads = jax.value_and_grad(mse)(m, X[rows], Y[rows])
            updates, state = tx.update(grads, state, m)
            m = optax.apply_updates(m, updates)
            expected.append(float(loss))
    np.testing.assert_allclose(res.loss_history, expected, rtol=1e-5)
    np.testing.assert_allclose(res.model["w"], m["w"], rtol=1e-5)


def test_each_epoch_uses_every_example_at_most_once_and_reshuffles():
    # loss = mean over the batch of w[example]: sgd with lr = batch lowers w by 1 at each example used
    eye = np.eye(N, dtype=np.float32)

    def count(m, rows):
        return jnp.mean(rows @ m["w"])

    used = []
    for epochs in (1, 2):
        _, res = fit(f"batch 8\noptimizer sgd\nphase {epochs} epochs lr 8 < free w >", count, eye, model={"w": jnp.zeros(N)})
        used.append(-np.asarray(res.model["w"]))
    first, both = used
    assert sorted(np.round(first).tolist()) == [0.0] * 6 + [1.0] * 24  # 24 examples once, 6 dropped
    second = both - first
    assert sorted(np.round(second).tolist()) == [0.0] * 6 + [1.0] * 24
    assert not np.array_equal(np.round(first), np.round(second))  # a fresh permutation


def test_results_do_not_depend_on_the_chunk_length(two_epochs):
    _, res = two_epochs
    _, other = fit("seed 5\nbatch 8\noptimizer sgd\nphase 2 epochs lr 0.05 < free ** >", chunk=5)
    np.testing.assert_array_equal(res.loss_history, other.loss_history)


def test_epoch_durations_become_steps_of_the_phase():
    program, res = fit("batch 8\nphase 4 epochs lr warmup_cosine(0 -> 0.1 -> 0, 1 epoch) < free ** >")
    (phase,) = program.plan_for((X, Y)).phases
    assert (phase.steps, phase.epochs, phase.steps_per_epoch) == (12, 4, 3)
    lr = res.hyperparams["learning_rate"]
    assert lr[0] == 0 and lr[3] == pytest.approx(0.1) and lr[2] < 0.1
    # without data an epoch counts as one step (what `schedc show` and the checker see)
    assert program.phases[0].steps == 4 and program.phases[0].steps_per_epoch is None


def test_a_schedule_stepped_per_epoch_is_constant_within_each_epoch():
    _, res = fit("batch 8\nphase 4 epochs lr stepwise(linear(0.4 -> 0), 1 epoch) < free ** >")
    lr = res.hyperparams["learning_rate"]  # 12 steps: the linear schedule at steps 0, 3, 6, 9
    np.testing.assert_allclose(lr, np.repeat([0.4, 0.3, 0.2, 0.1], 3), rtol=1e-6)


def test_a_batch_per_phase_overrides_the_directive():
    program, res = fit("batch 8\nphase 1 epochs lr 0.01 < free ** >\nphase 1 epoch batch 15 lr 0.01 < free ** >")
    assert [p.steps_run for p in res.phases] == [3, 2]


# ---------------------------------------------------------------- keys and aux


def test_a_loss_taking_key_gets_one_key_per_step_from_seed_phase_and_step():
    def noise(m, x, key):
        return jax.random.uniform(key) + 0.0 * jnp.sum(m["w"])

    _, res = fit("seed 9\noptimizer sgd\nphase 4 lr 0 < free w >\nphase 3 lr 0 < free w >", noise, X)
    for index, phase in enumerate(res.phases):
        _, loss_key = minibatch.phase_keys(jax.random.key(9), index)
        expected = [float(jax.random.uniform(jax.random.fold_in(loss_key, i))) for i in range(phase.steps_run)]
        np.testing.assert_allclose(phase.losses, expected, rtol=1e-6)


def test_aux_metrics_are_logged_as_means_per_chunk():
    def with_aux(m, x, y):
        loss = mse(m, x, y)
        return loss, {"twice": 2 * loss}

    _, res = fit("phase 10 lr 0.01 < free ** >", with_aux, chunk=4)
    phase = res.phases[0]
    assert phase.aux_steps.tolist() == [4, 8, 10]
    chunks = np.split(2 * phase.losses, [4, 8])
    np.testing.assert_allclose(phase.aux["twice"], [c.mean() for c in chunks], rtol=1e-5)
    assert set(res.aux) == {"twice"}


def test_aux_must_hold_scalars():
    with pytest.raises(TypeError, match="aux metric `per_example` has shape"):
        fit("phase 3 lr 0.01 < free ** >", lambda m, x, y: (mse(m, x, y), {"per_example": x @ m["w"]}))


# ---------------------------------------------------------------- evaluation


def val_metrics(m, x, y):
    return {"loss": mse(m, x, y), "w0": m["w"][0]}


EVAL = dict(validation=(X, Y), metrics=val_metrics)


def test_evaluations_never_change_the_training():
    text = "batch 8\nphase 4 epochs lr warmup_cosine(0 -> 0.1 -> 0, 1 epoch) < free ** >"
    _, plain = fit(text)
    _, evaluated = fit(text, eval_every=2, **EVAL)
    np.testing.assert_array_equal(plain.loss_history, evaluated.loss_history)
    np.testing.assert_array_equal(plain.model["w"], evaluated.model["w"])
    assert evaluated.eval_steps.tolist() == [2, 4, 6, 8, 10, 12]
    assert evaluated.metrics["loss"][-1] == pytest.approx(float(mse(evaluated.model, X, Y)), rel=1e-5)


def test_eval_every_epoch_from_the_file_and_steps_across_phases():
    text = 'batch 8\neval "m.py:metrics" every epoch\nphase 2 epochs lr 0.05 < free ** >\nphase 1 epoch lr 0.01 < free ** >'
    _, res = fit(text, **EVAL)
    assert res.phases[0].eval_steps.tolist() == [3, 6] and res.phases[1].eval_steps.tolist() == [3]
    assert res.eval_steps.tolist() == [3, 6, 9] and len(res.metrics["w0"]) == 3


def test_eval_every_epoch_from_python_in_a_file_counting_steps():
    _, res = fit("batch 8\nphase 9 lr 0.01 < free ** >", eval_every="epoch", **EVAL)
    assert res.phases[0].steps_per_epoch == 3 and res.eval_steps.tolist() == [3, 6, 9]


def test_stop_when_a_metric_falls_below_a_threshold_names_it():
    _, res = fit('eval "m.py:f" every 5 steps\nphase 200 lr 0.05 < free **; stop when val.loss < 0.5 >', **EVAL)
    (phase,) = res.phases
    assert phase.stop_reason == "val.loss < 0.5"
    assert phase.metrics["loss"][-1] < 0.5 <= phase.metrics["loss"][-2]
    assert phase.steps_run == phase.eval_steps[-1] < 200


def test_stop_when_a_metric_stops_improving_counts_evaluations():
    def flat(m, x, y):
        return {"accuracy": jnp.where(jnp.sum(m["w"]) > -1e9, 0.5, 0.0)}

    text = 'eval "m.py:f" every 2 steps\nphase 100 lr 0.05 < free **; stop when val.accuracy stops improving for 3 evals >'
    _, res = fit(text, validation=(X, Y), metrics=flat)
    (phase,) = res.phases
    assert phase.stop_reason == "val.accuracy stopped improving"
    assert phase.eval_steps.tolist() == [2, 4, 6, 8] and phase.steps_run == 8


def test_keep_best_restores_the_weights_of_the_best_evaluation():
    def distance(m, x, y):  # passes its minimum on the way from w0 = 0 to the fitted 1.0
        return {"gap": (m["w"][0] - 0.4) ** 2}

    text = 'eval "m.py:f" every 3 steps\noptimizer sgd\nphase 120 lr 0.05 < free **; keep best val.gap >'
    _, res = fit(text, validation=(X, Y), metrics=distance)
    (phase,) = res.phases
    best = int(np.argmin(phase.metrics["gap"]))
    assert 0 < best < len(phase.eval_steps) - 1 and phase.best_step == phase.eval_steps[best]
    assert float(distance(res.model, X, Y)["gap"]) == pytest.approx(phase.metrics["gap"][best], rel=1e-5)
    assert phase.steps_run == 120  # keeping the best ends nothing early


def test_directions_are_inferred_from_metric_names():
    from schedc.check.catalog import maximised

    assert maximised("val.accuracy") and maximised("val.top1_acc") and maximised("val.f1")
    assert not maximised("val.loss") and not maximised("val.error") and not maximised("val.nll")
    assert maximised("val.loss", stated=True)


# ---------------------------------------------------------------- bad data, bad metrics


def test_mismatched_leading_axes_name_the_phase_and_the_shapes():
    with pytest.raises(DataError, match=r"phase 1 .*leading axes differ .*argument 0: \(30, 3\), argument 1: \(20,\)") as err:
        program = schedc.compile("phase 5 lr 0.01 < free ** >\nphase 5 batch 4 lr 0.01 < free ** >", linear())
        program.run(lambda m, x, y: mse(m, x, y[:1].repeat(30)), X, Y[:20], quiet=True)
    assert len(err.value.result.phases) == 1  # the completed phase is kept


def test_a_batch_larger_than_the_data_is_refused():
    with pytest.raises(DataError, match=r"phase 0 has `batch 64` but the data holds only 30 examples"):
        fit("batch 64\nphase 5 lr 0.01 < free ** >")


def test_metrics_returning_a_non_scalar_are_refused():
    with pytest.raises(EvalError, match=r"`w` has shape \(3,\) in phase 0; expected a scalar"):
        fit('eval "m.py:f" every 2 steps\nphase 5 lr 0.01 < free ** >', validation=(X, Y), metrics=lambda m, x, y: {"w": m["w"]})


def test_unknown_metric_names_in_rules_are_refused_with_what_was_returned():
    steps = []

    def counting(m, x, y):
        jax.debug.callback(lambda _: steps.append(1), m["b"])
        return mse(m, x, y)

    with pytest.raises(EvalError, match=r"phase 0 uses `val.accuracy` but the metrics function returned `val.loss`, `val.w0`"):
        fit('eval "m.py:f" every 2 steps\nphase 5 lr 0.01 < free **; keep best val.accuracy >', counting, **EVAL)
    assert steps == []  # found by tracing the metrics function before the phase trains


def test_metrics_that_are_not_numbers_are_refused():
    for value, kind in (("high", "str"), (None, "NoneType"), (jnp.complex64(1j), "complex64 value")):
        with pytest.raises(EvalError, match=rf"`a` is a {kind} in phase 0; expected a scalar number"):
            fit("phase 4 lr 0.01 < free ** >", eval_every=2, validation=(X, Y), metrics=lambda m, x, y, v=value: {"a": v})


def test_a_bfloat16_metric_is_a_number():
    """(numpy reads bfloat16 as of kind "V", not a float)"""
    _, res = fit("phase 4 lr 0.01 < free ** >", eval_every=2, validation=(X, Y), metrics=lambda m, x, y: {"a": mse(m, x, y).astype(jnp.bfloat16)})
    _, f32 = fit("phase 4 lr 0.01 < free ** >", eval_every=2, validation=(X, Y), metrics=lambda m, x, y: {"a": mse(m, x, y)})
    assert res.metrics["a"].tolist() == [float(jnp.bfloat16(v)) for v in f32.metrics["a"]]


def test_rules_on_metrics_need_an_evaluation_that_happens():
    with pytest.raises(schedc.SchedError, match=r"E0222.*`val.loss` is never evaluated: this phase runs 5 steps and the `eval` directive evaluates every 50 steps"):
        fit('eval "m.py:f" every 50 steps\nphase 5 lr 0.01 < free **; keep best val.loss >', **EVAL)  # model-free: `schedc check` says so
    with pytest.raises(EvalError, match=r"evaluates every 50 steps and runs only 5"):
        fit('eval "m.py:f" every 2 steps\nphase 5 lr 0.01 < free **; keep best val.loss >', eval_every=50, **EVAL)  # set from Python: at run time
    with pytest.raises(EvalError, match=r"has no evaluation; expected a metrics function"):
        fit('eval "m.py:f" every 5 steps\nphase 5 lr 0.01 < free **; keep best val.loss >')


def test_a_duration_in_epochs_too_long_for_its_phase_in_steps_names_the_phase_and_the_epoch():
    program = schedc.compile("batch 8\nphase 2 lr 0.01 < free ** >\nphase 10 lr warmup_cosine(0 -> 0.1 -> 0, 4 epochs) < free ** >", linear())
    with pytest.raises(schedc.SchedError) as err:  # 4 epochs of 3 steps: 12 steps, past the 10-step phase
        program.run(mse, X, Y, quiet=True)
    assert "E0207" in str(err.value) and "(12 steps) is not shorter than the span (10 steps)" in str(err.value)
    assert err.value.__notes__ == ["in phase 1, counted in steps of this data", "the data holds 30 examples: an epoch is 3 steps with `batch 8`"]


# ---------------------------------------------------------------- resuming mid-epoch


# a phase that stops on patience and keeps its best evaluation (w passes 0.4 at step 4, then moves on)
PATIENT_KEEP_BEST = 'seed 1\nbatch 8\neval "m.py:f" every 2 steps\noptimizer sgd\nphase 120 lr 0.05 < free **; stop when val.gap stops improving for 4 evals; keep best val.gap >'


def assert_resumed_as_whole(resumed, whole) -> None:
    """A resumed run's first phase (steps, stop, best step, evaluations, losses) and model are the whole run's, bit for bit."""
    a, b = whole.phases[0], resumed.phases[0]
    assert (b.steps_run, b.stop_reason, b.best_step) == (a.steps_run, a.stop_reason, a.best_step)
    np.testing.assert_array_equal(b.eval_steps, a.eval_steps)
    np.testing.assert_array_equal(b.metrics["gap"], a.metrics["gap"])
    np.testing.assert_array_equal(b.losses, a.losses)
    for name in ("w", "b"):
        np.testing.assert_array_equal(resumed.model[name], whole.model[name])


def test_a_run_resumed_mid_epoch_sees_the_same_batches(tmp_path):
    text = "seed 2\nbatch 8\noptimizer sgd\nphase 4 epochs lr 0.05 < free ** >"
    _, whole = fit(text, chunk=2)
    fragile = interrupted_on_call(mse, 5)  # mid-epoch: step 4 of 12 (epoch 1, batch 1)
    program = schedc.compile(text, linear())
    with pytest.raises(Exception):
        program.run(fragile, X, Y, quiet=True, chunk=2, checkpoint=tmp_path, checkpoint_every=1)
    resumed = program.run(mse, X, Y, quiet=True, chunk=2, checkpoint=tmp_path)
    assert len(resumed.loss_history) == 12
    np.testing.assert_array_equal(resumed.loss_history[4:], whole.loss_history[4:])
    np.testing.assert_array_equal(resumed.model["w"], whole.model["w"])


def test_a_run_resumed_mid_phase_keeps_its_evaluations_patience_and_best_weights(tmp_path):
    """Killed after the best evaluation (step 4) and before patience runs out (step 12): the resumed
    run must count patience from the saved best and restore the saved weights, as the whole run does."""

    def gap(m, x, y):  # passes its minimum at step 4 on the way from w0 = 0 to the fitted 1.0
        return {"gap": (m["w"][0] - 0.4) ** 2}

    text = PATIENT_KEEP_BEST
    evaluation = dict(validation=(X, Y), metrics=gap, chunk=2)
    _, whole = fit(text, **evaluation)
    assert whole.phases[0].best_step == 4 and whole.phases[0].steps_run == 12
    fragile = interrupted_on_call(mse, 7)  # in the chunk of steps 6-7: the checkpoint holds evaluations at 2, 4, 6
    program = schedc.compile(text, linear())
    with pytest.raises(Exception):
        program.run(fragile, X, Y, quiet=True, checkpoint=tmp_path, checkpoint_every=1, **evaluation)
    resumed = program.run(mse, X, Y, quiet=True, checkpoint=tmp_path, **evaluation)
    assert_resumed_as_whole(resumed, whole)


def test_a_resumed_phase_keeps_the_aux_metrics_of_the_chunks_before(tmp_path):
    def with_aux(m, x, y):
        jax.debug.callback(interrupt, m["b"])
        value = mse(m, x, y)
        return value, {"twice": 2 * value}

    calls = [0]

    def interrupt(_):
        calls[0] += 1
        if calls[0] == 7:
            raise KeyboardInterrupt

    program = schedc.compile("batch 8\noptimizer sgd\nphase 12 lr 0.05 < free ** >", linear())
    with pytest.raises(Exception):
        program.run(with_aux, X, Y, quiet=True, chunk=2, checkpoint=tmp_path, checkpoint_every=1)
    calls[0] = -(10**9)  # no interruption this time
    resumed = program.run(with_aux, X, Y, quiet=True, chunk=2, checkpoint=tmp_path)
    phase = resumed.phases[0]
    assert phase.aux_steps[0] == 2 and phase.aux_steps[-1] == 12  # the chunks before the kill are kept
    starts = np.concatenate([[0], phase.aux_steps[:-1]])
    np.testing.assert_allclose(phase.aux["twice"], [2 * np.mean(phase.losses[a:b]) for a, b in zip(starts, phase.aux_steps)], rtol=1e-5)


# ---------------------------------------------------------------- show and plot


EPOCHS_FILE = "batch 8\nphase warm 3 epochs lr warmup_cosine(0 -> 0.1 -> 0, 1 epoch) < free w >\nphase 20 lr 0.01 < free w >\n"


def test_show_displays_epochs_and_batches(tmp_path, capsys):
    import json

    from schedc.cli import main

    path = tmp_path / "e.sched"
    path.write_text(EPOCHS_FILE)
    assert main(["show", str(path)]) == 0
    table = capsys.readouterr().out
    assert "3 epochs" in table and "batch" in table
    assert main(["show", str(path), "--format", "json"]) == 0
    phases = json.loads(capsys.readouterr().out)["phases"]
    assert [(p["epochs"], p["batch"], p["steps"]) for p in phases] == [(3, 8, 3), (None, 8, 20)]


def test_plot_draws_epochs_at_a_given_resolution(tmp_path):
    from schedc.cli.commands import plot
    from schedc.pipeline import analyse

    analysis = analyse(EPOCHS_FILE)
    plan, label = plot._with_epochs(analysis, 50)
    assert [p.steps for p in plan.phases] == [150, 20] and "1 epoch = 50 steps" in label
    data = plot.curves(plan)
    lr = np.asarray(data.values["learning_rate"])
    assert lr[0] == 0 and lr[50] == pytest.approx(0.1)  # the warmup is one epoch of 50 steps


# ---------------------------------------------------------------- logging


def test_a_run_logs_steps_aux_and_evaluations_per_phase(tmp_path):
    import csv
    import json

    from schedc.runtime.log import RunLog

    def with_aux(m, x, y):
        loss = mse(m, x, y)
        return loss, {"twice": 2 * loss}

    text = 'batch 8\neval "m.py:f" every epoch\nphase 2 epochs lr 0.05 < free ** >\nphase 4 lr 0.01 < free ** >'
    _, res = fit(text, with_aux, chunk=3, logger=RunLog(tmp_path), **EVAL)
    records = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    steps = [r for r in records if r["kind"] == "step"]
    assert [r["step"] for r in steps] == list(range(10)) and [r["loss"] for r in steps] == pytest.approx(res.loss_history.tolist())
    assert steps[0]["learning_rate"] == pytest.approx(0.05) and steps[-1]["phase"] == "phase 1"
    assert [r["step"] for r in records if r["kind"] == "eval"] == res.eval_steps.tolist() == [3, 6, 9]
    assert [r["twice"] for r in records if r["kind"] == "aux"] == pytest.approx(res.aux["twice"].tolist())
    assert [r["stop_reason"] for r in records if r["kind"] == "phase"] == ["completed", "completed"]
    rows = list(csv.DictReader(open(tmp_path / "steps.csv")))
    assert len(rows) == 10 and float(rows[7]["learning_rate"]) == pytest.approx(0.01)
    assert list(tmp_path.glob("events.out.tfevents.*"))  # tensorboardX is in the test extra


def test_steps_csv_has_each_column_once_and_a_column_a_later_phase_adds(tmp_path):
    """Every row has the header's fields: `learning_rate` once (it was once per step of the
    first phase), and `b1`, logged from the second phase on, empty in the rows before."""
    import csv

    from schedc.runtime.log import RunLog

    text = "phase 4 lr 0.05 < free ** >\nphase 3 lr 0.01 optimizer adam(b1 = linear(0.9 -> 0.5)) < free ** >"
    _, res = fit(text, mse, logger=RunLog(tmp_path))
    with open(tmp_path / "steps.csv", newline="") as f:
        header, *rows = list(csv.reader(f))
    assert header == ["step", "phase", "loss", "learning_rate", "b1"]
    assert all(len(row) == len(header) for row in rows) and len(rows) == 7
    assert [row[4] for row in rows[:4]] == [""] * 4 and [float(row[4]) for row in rows[4:]] == pytest.approx(res.hyperparams["b1"][4:].tolist())
    assert [float(row[2]) for row in rows] == pytest.approx(res.loss_history.tolist())


# ---------------------------------------------------------------- data parallel

DATA_PARALLEL = r"""
import json, jax, jax.numpy as jnp, numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
import schedc
assert len(jax.devices()) == 8, jax.devices()
X = jax.random.normal(jax.random.key(0), (512, 16))
Y = X @ jnp.arange(16.0) / 16 + 0.3
def loss(m, x, y):
    return jnp.mean((x @ m["w"] + m["b"] - y) ** 2)
program = schedc.compile("seed 3\nbatch 64\nphase 3 epochs lr 0.05 < free w, b >", {"w": jnp.zeros(16), "b": jnp.zeros(())})
one = program.run(loss, X, Y, quiet=True)
rows = NamedSharding(Mesh(np.array(jax.devices()), ("data",)), P("data"))
spread = program.run(loss, jax.device_put(X, rows), jax.device_put(Y, rows), quiet=True)
print(json.dumps({"one": one.loss_history.tolist(), "spread": spread.loss_history.tolist()}))
"""


def test_minibatches_of_data_sharded_over_eight_devices_give_one_devices_losses():
    losses = on_host_devices(DATA_PARALLEL)
    assert len(losses["one"]) == 24  # 3 epochs of 8 minibatches
    np.testing.assert_allclose(losses["spread"], losses["one"], rtol=1e-5)
