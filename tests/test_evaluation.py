"""Evaluation inside the compiled chunk (compiler.evaluate) against the semantics the host applied
when it evaluated between chunks: the same evaluation steps, metric values, stop steps and
reasons, kept weights, NaN handling and threshold comparisons; and a chunk no longer ends at an
evaluation."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from test_data import PATIENT_KEEP_BEST, X, Y, assert_resumed_as_whole, linear, mse

import schedc
from schedc.runtime.runner import Runner

# ---------------------------------------------------------------- the host's rules, as they were


def host_rules(values: list[float], rules: list[tuple], keep: tuple | None):
    """What the host applied after each evaluation (runtime.evaluation before the rules moved into
    the program), on a sequence of metric values: (evaluations taken, stop reason or None, index of
    the kept evaluation or None). `rules`: ("below", threshold) or ("patience", N, maximise);
    `keep`: (maximise,) or None. NaN never improves and is beaten by anything."""
    best: dict = {}

    def improves(key, maximise, value, index):
        previous = best.get(key)
        better = not math.isnan(value) and (previous is None or math.isnan(previous[0]) or (value > previous[0] if maximise else value < previous[0]))
        if better or previous is None:
            best[key] = (value, index)
        return better

    kept = None
    for index, value in enumerate(values):
        reason = None
        for rule in rules:
            if rule[0] == "below" and value < rule[1]:
                reason = reason or f"val.m < {rule[1]:g}"
            elif rule[0] == "patience":
                improves("stop", rule[2], value, index)
                if index - best["stop"][1] >= rule[1]:
                    reason = reason or "val.m stopped improving"
        if keep is not None and improves("keep", keep[0], value, index):
            kept = index
        if reason:
            return index + 1, reason, kept
    return len(values), None, kept


# ---------------------------------------------------------------- a scripted metric

EVERY = 2


def counter():
    return {"t": jnp.zeros(())}


def count_up(m):  # sgd at lr 1 on -t: t counts the steps done, exactly
    return -m["t"]


def scripted(sequence):
    """A metrics function returning `sequence[k]` (float32) at the k-th evaluation (every EVERY steps)."""
    table = jnp.asarray(np.asarray(sequence, np.float32))

    def metrics(m):
        return {"m": table[jnp.round(m["t"]).astype(jnp.int32) // EVERY - 1]}

    return metrics


NAN = float("nan")
SEQUENCES = {
    "falling then flat": [5.0, 4.0, 3.0, 3.0, 3.0, 3.0, 3.0, 2.0, 1.0, 1.0],
    "nan first": [NAN, 4.0, 4.0, 4.0, 4.0, 4.0, 4.0, 4.0, 4.0, 4.0],
    "nan between": [3.0, NAN, 2.0, NAN, NAN, NAN, 1.0, 1.0, 1.0, 1.0],
    "all nan": [NAN] * 10,
    "rising": [0.1, 0.2, 0.3, 0.3, 0.25, 0.35, 0.35, 0.35, 0.35, 0.35],
}
RULESETS = {
    "patience 3": ("stop when val.m stops improving for 3 evals", [("patience", 3, False)], None),
    "patience 2 max, keep max": ("stop when val.m stops increasing for 2 evals; keep highest val.m", [("patience", 2, True)], (True,)),
    "below and patience, keep": ("stop when val.m < 1.5; stop when val.m stops improving for 4 evals; keep best val.m", [("below", 1.5), ("patience", 4, False)], (False,)),
    "keep only": ("keep best val.m", [], (False,)),
}


@pytest.mark.parametrize("sequence", SEQUENCES)
@pytest.mark.parametrize("ruleset", RULESETS)
def test_rules_in_the_program_apply_the_hosts_semantics(sequence, ruleset):
    values = SEQUENCES[sequence]
    text, rules, keep = RULESETS[ruleset]
    steps = EVERY * len(values)
    source = f'eval "m.py:f" every {EVERY} steps\noptimizer sgd\nphase {steps} lr 1 < free **; {text} >'
    program = schedc.compile(source, counter())
    (phase,) = program.run(count_up, quiet=True, metrics=scripted(values)).phases
    taken, reason, kept = host_rules(values, rules, keep)
    assert phase.eval_steps.tolist() == [EVERY * (k + 1) for k in range(taken)]
    np.testing.assert_array_equal(phase.metrics["m"], np.asarray(values[:taken], np.float32))
    assert phase.stop_reason == (reason or "completed") and phase.steps_run == EVERY * taken
    assert phase.best_step == (None if kept is None else EVERY * (kept + 1))
    # the kept weights are those of that evaluation: t counts the steps done
    assert float(phase.model["t"]) == (phase.steps_run if kept is None else EVERY * (kept + 1))


def test_a_threshold_compares_a_float32_value_with_the_float64_number_written():
    """float32(0.7) is below the float64 0.7 (the host compared float(value) < 0.7), though not
    below 0.7 rounded to float32: the program compares as the host did."""
    low = float(np.float32(0.7))
    assert low < 0.7 and not np.float32(low) < np.float32(0.7)
    for threshold, stops in ((0.7, True), (repr(low), False)):
        source = f'eval "m.py:f" every 2 steps\noptimizer sgd\nphase 8 lr 1 < free **; stop when val.m < {threshold} >'
        program = schedc.compile(source, counter())
        (phase,) = program.run(count_up, quiet=True, metrics=scripted([0.7] * 4)).phases
        assert (phase.steps_run, phase.stop_reason) == ((2, "val.m < 0.7") if stops else (8, "completed"))


def test_a_thresholds_runtime_number_follows_x64_switched_on_between_runs():
    """`limits` is cached per phase: a phase planned with float32 values and run again under
    `jax.enable_x64` gets its threshold rounded for float64, not the cached float32 one."""
    from schedc.compiler import evaluate as E

    source = 'eval "m.py:f" every 2 steps\noptimizer sgd\nphase 8 lr 1 < free **; stop when val.m < 0.7 >'
    (phase,) = schedc.compile(source, counter()).plan.phases
    assert E.limits(phase)["below"].dtype == np.float32
    with jax.enable_x64(True):
        below = E.limits(phase)["below"]
    assert below.dtype == np.float64 and float(below[0]) == float(np.nextafter(0.7, -np.inf))
    assert E.limits(phase)["below"].dtype == np.float32


# ---------------------------------------------------------------- real training

def gap(m, x, y):  # passes its minimum on the way from w0 = 0 to the fitted 1.0
    return {"gap": (m["w"][0] - 0.4) ** 2, "loss": mse(m, x, y)}


def test_metric_values_and_kept_weights_are_those_of_the_models_at_each_evaluation():
    """Against models trained separately for each evaluation's step count (sgd at a constant lr,
    minibatches keyed by seed, phase and epoch: the first s steps of any phase are the same):
    the weights match bit for bit, and so do the metric values against the metrics function
    jitted on its own (on XLA:CPU; XLA may fuse a metrics function inside the loop differently
    from the same function compiled alone, which could move a value's last bit: docs/data.md)."""
    text = 'seed 4\nbatch 8\neval "m.py:f" every 3 steps\noptimizer sgd\nphase 30 lr 0.05 < free **; keep best val.gap >'
    (phase,) = schedc.compile(text, linear()).run(mse, X, Y, quiet=True, validation=(X, Y), metrics=gap).phases
    models = {int(s): schedc.compile("seed 4\nbatch 8\noptimizer sgd\nphase $n lr 0.05 < free ** >", linear(), n=int(s)).run(mse, X, Y, quiet=True).model for s in phase.eval_steps}
    measured = jax.jit(gap)
    for j, s in enumerate(phase.eval_steps):
        expected = jax.device_get(measured(models[int(s)], X, Y))
        for name in ("gap", "loss"):
            np.testing.assert_array_equal(phase.metrics[name][j], expected[name])
    best = int(np.argmin(phase.metrics["gap"]))
    assert 0 < best < len(phase.eval_steps) - 1 and phase.best_step == phase.eval_steps[best]
    for name in ("w", "b"):
        np.testing.assert_array_equal(phase.model[name], models[phase.best_step][name])


def test_a_chunk_no_longer_ends_at_an_evaluation(monkeypatch):
    calls = []
    absorb = Runner._absorb

    def counted(self, *args):
        calls.append(1)
        return absorb(self, *args)

    monkeypatch.setattr(Runner, "_absorb", counted)
    program = schedc.compile('batch 8\neval "m.py:f" every 1 step\nphase 2 epochs lr 0.05 < free ** >', linear())
    res = program.run(mse, X, Y, quiet=True, validation=(X, Y), metrics=gap)
    assert res.eval_steps.tolist() == [1, 2, 3, 4, 5, 6] and len(calls) == 1


# ---------------------------------------------------------------- checkpoints of the host's design


def test_a_checkpoint_written_when_the_rules_ran_on_the_host_resumes_as_an_uninterrupted_run(tmp_path):
    """tests/data/checkpoint_host_evals: written by schedc before evaluation moved into the program
    (the run below killed in its chunk of steps 6-7, with `chunk=2`): its record of evaluations
    (steps, values, each rule's best, the kept weights) becomes the carried state. Its fingerprint
    is made this run's (the plan's hash moves with any change to the plan's fields)."""
    import json
    import shutil
    from pathlib import Path

    from schedc.runtime.checkpoint import _sha256, fingerprint

    text = PATIENT_KEEP_BEST
    evaluation = dict(validation=(X, Y), metrics=lambda m, x, y: {"gap": (m["w"][0] - 0.4) ** 2}, chunk=2)
    program = schedc.compile(text, linear())
    directory = tmp_path / "run"
    shutil.copytree(Path(__file__).parent / "data" / "checkpoint_host_evals", directory)
    path = directory / "checkpoint-4.json"
    body = json.loads(path.read_text())["body"]
    assert body["in_phase"]["evals"]["best"] == {"val.gap#stop": [0.007530982606112957, 1], "val.gap": [0.007530982606112957, 1]}
    body["fingerprint"] = fingerprint(program.plan, program.tree, program.model, program.key)
    path.write_text(json.dumps({"body": body, "sha256": _sha256(json.dumps(body, sort_keys=True).encode())}))
    whole = program.run(mse, X, Y, quiet=True, **evaluation)
    resumed = program.run(mse, X, Y, quiet=True, checkpoint=directory, **evaluation)
    assert (whole.phases[0].steps_run, whole.phases[0].stop_reason, whole.phases[0].best_step) == (12, "val.gap stopped improving", 4)
    assert_resumed_as_whole(resumed, whole)


def test_a_checkpoint_writes_the_carried_rules_as_the_host_recorded_them(tmp_path):
    """Killed mid-phase: each checkpoint's record holds the evaluations so far, each tracker's best
    (the stop rule's under `val.M#stop`, `keep`'s under `val.M`: [value, evaluation index]) and
    the kept step, as the host-side design wrote them (the fixture above)."""
    import json

    from conftest import interrupted_on_call

    text = PATIENT_KEEP_BEST
    evaluation = dict(validation=(X, Y), metrics=lambda m, x, y: {"gap": (m["w"][0] - 0.4) ** 2}, chunk=2)
    program = schedc.compile(text, linear())
    with pytest.raises(BaseException):
        program.run(interrupted_on_call(mse, 9), X, Y, quiet=True, checkpoint=tmp_path, checkpoint_every=1, **evaluation)
    records = [json.loads(p.read_text())["body"]["in_phase"] for p in tmp_path.glob("checkpoint-*.json")]
    assert records
    for record in records:
        evals = record["evals"]
        assert evals["steps"] == list(range(2, record["step0"] + 1, 2))
        gaps = [v["gap"] for v in evals["values"]]
        best = int(np.argmin(gaps))
        assert evals["best"] == ({"val.gap#stop": [gaps[best], best], "val.gap": [gaps[best], best]} if gaps else {})
        assert evals["kept_step"] == (evals["steps"][best] if gaps else None)
