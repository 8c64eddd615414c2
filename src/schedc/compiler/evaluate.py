"""Evaluation inside the chunk program: `eval "m.py:metrics" every N steps | every epoch`.

After step i of a phase with `(i + 1) % every == 0` (`every epoch`: every = steps per epoch; a
runtime number, `limits`), the chunk calls the metrics function under `lax.cond` on the model
assembled from the carried free values (and the carried model state) and the validation data,
writes the values into the chunk's evaluation log (`empty_log`: read by the host after the call, with the losses), and applies the
phase's rules on metrics to the evaluation state it carries (`initial_carry`):

* `stop when val.M < X`: `value <= below`, `below` the largest value of the metrics' dtype under
  X, precomputed on the host (`limits`), so a float32 value is compared with the float64
  threshold exactly as `float(value) < X` compares them;
* `stop when val.M stops improving for N evals` and `keep best val.M`: a best value and the index
  of its evaluation per tracker (as the host tracked them: NaN never improves and is beaten by
  anything), patience `evaluations since the best >= N`; `keep` copies the free values (and the
  model state) into the carry under a `lax.cond` at each improving evaluation;
* `lr E * plateau(on=val.M)`: optax's own reduce_on_plateau update, fed M (compiler.optimizers).

The first rule that fires (in the phase's order) ends the phase after that evaluation. Nothing
else of the training moves (the schedules' clock; the optimizer state, but for the plateaus that
follow a metric), so a run with evaluations takes exactly the steps of one without. The values are carried in the widest float
the process allows (float32, float64 under jax_enable_x64), which holds a float32 metric exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable

import numpy as np

from schedc.check.catalog import METRIC_PREFIX
from schedc.plan import resolve as P


@dataclass(frozen=True)
class Rule:
    """A rule on an evaluation metric as the chunk applies it."""

    kind: str  # "metric" (stop below a threshold), "plateau" (stop after `patience` evaluations without a new best) or "keep"
    metric: str  # the name the metrics function returns (without `val.`)
    tracker: int  # the best-so-far it updates (-1: none)
    maximise: bool = False


@dataclass(frozen=True)
class Evaluation:
    """What shapes a phase's evaluation in its program (a part of its PhaseSignature)."""

    metrics: Callable  # (model, *validation) -> {name: scalar}; (model, state, *validation) with a model state
    validation: Any  # the chunk.Layout of the validation data (its arrays are a chunk argument)
    rules: tuple[Rule, ...]  # the stop rules on metrics in the phase's order, then `keep`
    keys: tuple[str, ...]  # each tracker's name in a checkpoint's record (`val.M#stop` for a stop rule, `val.M` for `keep`)

    @property
    def keeps(self) -> bool:
        return any(r.kind == "keep" for r in self.rules)


def metric_rules(phase: P.PhasePlan) -> list[P.StopRule]:
    """The phase's stop rules on evaluation metrics, in its order (the others watch the loss)."""
    return [r for r in phase.stop if not r.on_loss]


@lru_cache(maxsize=1024)
def lower(phase: P.PhasePlan, metrics: Callable, validation) -> Evaluation:
    """The evaluation part of `phase`'s signature (its thresholds and patience are `limits`)."""
    keys: list[str] = []
    rules = []

    def tracker(key: str) -> int:
        if key not in keys:
            keys.append(key)
        return keys.index(key)

    for rule in metric_rules(phase):
        name = rule.metric.removeprefix(METRIC_PREFIX)
        rules.append(Rule(rule.kind, name, tracker(rule.metric + "#stop") if rule.kind == "plateau" else -1, rule.maximise))
    if phase.keep is not None:
        rules.append(Rule("keep", phase.keep.metric.removeprefix(METRIC_PREFIX), tracker(phase.keep.metric), phase.keep.maximise))
    return Evaluation(metrics, validation, tuple(rules), tuple(keys))


def value_dtype():
    """The dtype evaluation values are carried in: the widest float the process allows."""
    import jax.numpy as jnp

    return np.dtype(jnp.result_type(float))


def below(threshold: float, dtype) -> np.ndarray:
    """The largest `dtype` value strictly below `threshold`: for any x of `dtype`, `float(x) < threshold`
    exactly when `x <= below` (NaN, never true, for a threshold of -inf or NaN)."""
    if math.isnan(threshold) or threshold == -math.inf:
        return np.asarray(np.nan, dtype)
    nearest = np.asarray(threshold, dtype)
    return nearest if float(nearest) < threshold else np.nextafter(nearest, np.asarray(-np.inf, dtype))


def limits(phase: P.PhasePlan) -> dict[str, np.ndarray]:
    """The runtime numbers of a phase's evaluation: per rule of `lower`, each threshold's `below`
    (NaN for the other kinds) and each patience; and the interval `every` (steps): not part of
    the program, so phases and runs that differ only in the interval share one."""
    return _limits(phase, value_dtype())


@lru_cache(maxsize=1024)
def _limits(phase: P.PhasePlan, dtype: np.dtype) -> dict[str, np.ndarray]:
    # Keyed on the dtype too: x64 can be switched on between runs (`jax.enable_x64`), and a
    # threshold's `below` rounded for float32 is not the float64 one.
    rules = metric_rules(phase) + ([None] if phase.keep is not None else [])
    out = {
        "below": np.asarray([below(r.threshold, dtype) if r is not None and r.kind == "metric" else np.nan for r in rules], dtype),
        "patience": np.asarray([r.patience if r is not None else 0 for r in rules], np.int32),
        "every": np.asarray(phase.eval_every, np.int32),
    }
    for array in out.values():  # cached: shared by every run of the phase
        array.setflags(write=False)
    return out


def initial_carry(evaluation: Evaluation, free, model_state, count: int = 0, best: dict | None = None, kept=None, kept_step: int | None = None) -> dict:
    """The evaluation state a phase's chunks carry: evaluations so far, each tracker's best value and
    the index of its evaluation (NaN and 0 before the first: beaten by any number), the rule that
    stopped the phase (-1), and with `keep` the kept free values and model state (`free` and
    `model_state` until an evaluation improves) with their step (-1: none). A resumed phase gives
    the count, the best of each tracker (by key) and the kept values of its checkpoint."""
    best = best or {}
    carry = {
        "count": np.int32(count),
        "best": np.asarray([best.get(key, (np.nan, 0))[0] for key in evaluation.keys], value_dtype()),
        "best_at": np.asarray([best.get(key, (np.nan, 0))[1] for key in evaluation.keys], np.int32),
        "rule": np.int32(-1),
    }
    if evaluation.keeps:
        carry["kept"] = kept if kept is not None else (free, model_state)
        carry["kept_step"] = np.int32(-1 if kept_step is None else kept_step)
    return carry


def empty_log(names, slots: int) -> dict:
    """An evaluation log (traceable): each metric's value and the steps done at each of at most
    `slots` evaluations, and how many were taken. A program's log has a slot per step it may run
    (a step evaluates at most once): the interval is a number of `limits`, so one program serves
    every interval, for a few bytes per metric and step (a chunk of 16384 steps: 64 KB per float32
    metric, and as much for the steps)."""
    import jax.numpy as jnp

    return {
        "values": {name: jnp.full((slots,), jnp.nan, value_dtype()) for name in names},
        "steps": jnp.zeros((slots,), jnp.int32),
        "count": jnp.int32(0),
    }


def call_metrics(metrics: Callable, validation_layout, model, model_state, validation_arrays):
    """What the metrics function returns for `model` (traceable): `metrics(model, *validation)`, or
    `metrics(model, state, *validation)` with a model state; a dict's names made strings."""
    validation = validation_layout.rebuild(validation_arrays)
    out = metrics(model, *validation) if model_state is None else metrics(model, model_state, *validation)
    return {str(name): value for name, value in out.items()} if isinstance(out, dict) else out


def metric_values(evaluation: Evaluation, model, model_state, validation_arrays) -> dict:
    """The metrics of `model` (traceable), each cast to `value_dtype`."""
    import jax.numpy as jnp

    out = call_metrics(evaluation.metrics, evaluation.validation, model, model_state, validation_arrays)
    return {name: jnp.asarray(value).astype(value_dtype()) for name, value in out.items()}


def evaluate(evaluation: Evaluation, groups, limits, values: dict, carry: dict, log: dict, opt_state, free, model_state, done):
    """One evaluation after `done` phase steps with its metric `values` (traceable): logged, the
    rules applied, the plateaus on metrics stepped. Returns (opt_state, carry, log, whether a rule fired)."""
    import jax
    import jax.numpy as jnp

    from schedc.compiler import optimizers as O

    index = carry["count"]  # this evaluation's index in the phase
    slot = log["count"]
    log = {
        "values": {name: log["values"][name].at[slot].set(values[name]) for name in log["values"]},
        "steps": log["steps"].at[slot].set(done),
        "count": slot + 1,
    }
    best, best_at = carry["best"], carry["best_at"]
    fired = jnp.int32(-1)
    kept_improves = None
    for r, rule in enumerate(evaluation.rules):
        value = values[rule.metric]
        if rule.kind == "metric":
            fires = value <= limits["below"][r]
        else:
            previous = best[rule.tracker]
            better = ~jnp.isnan(value) & (jnp.isnan(previous) | (value > previous if rule.maximise else value < previous))
            best = best.at[rule.tracker].set(jnp.where(better, value, previous))
            best_at = best_at.at[rule.tracker].set(jnp.where(better, index, best_at[rule.tracker]))
            if rule.kind == "keep":
                kept_improves = better
                continue
            fires = index - best_at[rule.tracker] >= limits["patience"][r]
        fired = jnp.where((fired < 0) & fires, jnp.int32(r), fired)
    carry = dict(carry, count=index + 1, best=best, best_at=best_at, rule=fired)
    if kept_improves is not None:
        carry["kept"], carry["kept_step"] = jax.lax.cond(
            kept_improves, lambda: ((free, model_state), jnp.asarray(done, jnp.int32)), lambda: (carry["kept"], carry["kept_step"])
        )
    plateaus = [g for g in groups if g.plateau is not None]
    if any(g.plateau_on is not None for g in plateaus):
        fed = tuple(None if g.plateau_on is None else values[g.plateau_on.removeprefix(METRIC_PREFIX)] for g in plateaus)
        opt_state = O.step_plateaus(opt_state, tuple(g.plateau for g in plateaus), fed)
    return opt_state, carry, log, fired >= 0
