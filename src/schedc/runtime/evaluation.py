"""Evaluation during a phase, the host's side: `eval "m.py:metrics" every N steps | every epoch`.

The chunk program evaluates inside its loop (compiler.evaluate: the metrics, the rules on them,
`keep best` and the plateaus that follow a metric all run on the device, in the carry) and
returns each chunk's evaluations in a log; the host reads it after each chunk, with the losses,
into `PhaseEvals` (the histories, the progress bar, the log and `Result.metrics` come from it),
words the rule that ended a phase, restores the kept weights at the phase end, and converts
the carried state to and from a checkpoint's record (the record schedc wrote when the rules
ran on the host, so those checkpoints keep loading).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from schedc.check.catalog import METRIC_PREFIX
from schedc.compiler import chunk as C
from schedc.compiler import evaluate as E
from schedc.plan import resolve as P
from schedc.runtime.dtypes import is_number


class EvalError(ValueError):
    """A metrics function or an evaluation rule that cannot work: it names the phase and what was expected."""


# (metrics function, layout of (model, state), layout of the validation data) -> the names it returns:
# traced once per model structure in the process, as the chunk executables are compiled once
_NAMES: dict = {}


class Evaluator:
    """The metrics function of a run and its validation data (split into arrays and layout once:
    the arrays are an argument of every evaluated chunk, the layout part of its program's key)."""

    def __init__(self, metrics: Callable, validation: tuple = ()):
        if not callable(metrics):
            raise TypeError(f"metrics must be a function, metrics(model, *validation) -> {{name: scalar}}, got {type(metrics).__name__}")
        self.metrics = metrics
        self.validation_arrays, self.validation_layout = C.split(tuple(validation))

    def check_due(self, plan: P.Plan) -> None:
        """EvalError when no phase of `plan` evaluates: a metrics function given and never called
        would look like a run that evaluated and found nothing."""
        if all(phase.eval_every is None for phase in plan.phases):
            raise EvalError(
                "metrics were given, but no phase evaluates: say how often with eval_every=N (steps) or eval_every=\"epoch\", "
                "or with an `eval \"file.py:metrics\" every N steps` directive"
            )

    def lowered(self, phase: P.PhasePlan) -> E.Evaluation | None:
        """The evaluation part of `phase`'s program signature (compiler.evaluate), or None for a
        phase that does not evaluate."""
        return E.lower(phase, self.metrics, self.validation_layout) if phase.eval_every is not None else None

    def names(self, model, phase: P.PhasePlan, state=None, validation_arrays=None) -> list[str]:
        """The names the metrics function returns for this model, found by tracing it (nothing
        runs); EvalError unless it returns {name: scalar}. `state`: the model state, in a run with
        one (the function gets `metrics(model, state, *validation)` and puts the model in inference
        mode itself: `eqx.nn.inference_mode(model)`, as equinox's own evaluation does).
        `validation_arrays`: what it is traced on, when not the run's (one dataset's of a batched fit)."""
        arrays, layout = C.split((model, state))
        key = (self.metrics, layout, self.validation_layout)
        if key not in _NAMES:
            _NAMES[key] = self._trace(layout, arrays, phase, self.validation_arrays if validation_arrays is None else validation_arrays)
        return _NAMES[key]

    def _trace(self, layout, arrays, phase: P.PhasePlan, validation_arrays) -> list[str]:
        import equinox as eqx

        metrics, validation_layout = self.metrics, self.validation_layout

        def call(arrays, validation_arrays):
            model, state = layout.rebuild(arrays)
            return E.call_metrics(metrics, validation_layout, model, state, validation_arrays)

        out = eqx.filter_eval_shape(call, arrays, validation_arrays)
        _check_output(out, phase)
        return list(out)


def _check_output(out, phase: P.PhasePlan) -> None:
    """EvalError unless the metrics function's output (shapes) is a dict of scalar numbers."""
    import jax

    if not isinstance(out, dict):
        got = f"an array of shape {out.shape}" if isinstance(out, jax.ShapeDtypeStruct) else type(out).__name__  # (traced: arrays are shapes)
        raise EvalError(f"the metrics function returned {got} in {phase.label}; expected a dict {{name: scalar}}")
    for name, value in out.items():
        # traced: an array is a ShapeDtypeStruct; anything else came back as the function returned it
        dtype = np.dtype(type(value)) if isinstance(value, (int, float)) else value.dtype if isinstance(value, (jax.ShapeDtypeStruct, np.ndarray, np.generic)) else None
        if dtype is None or not is_number(dtype):
            what = type(value).__name__ if dtype is None else f"{dtype} value"
            raise EvalError(f"the metrics function's `{name}` is a {what} in {phase.label}; expected a scalar number")
        if np.shape(value) != ():
            raise EvalError(f"the metrics function's `{name}` has shape {np.shape(value)} in {phase.label}; expected a scalar")


@dataclass
class PhaseEvals:
    """One phase's evaluations as the host keeps them: when they fell and what they found (read
    from each chunk's log), the rule that ended the phase, and the carried rule state (`carry`)."""

    phase: P.PhasePlan
    evaluator: Evaluator | None
    steps: list[int] = field(default_factory=list)  # phase-local steps done at each evaluation
    values: list[dict] = field(default_factory=list)
    best: dict = field(default_factory=dict)  # of a resumed phase: tracker key -> (best value, evaluation index)
    kept: Any = None  # of a resumed phase: (free values, model state or None) kept for `keep`
    kept_step: int | None = None  # the step of the kept weights (of the phase, once it ended)
    reason: str | None = None  # the rule on an evaluation that ended the phase
    state: dict | None = None  # the evaluation state the chunks carry (compiler.evaluate), after the latest chunk

    def __post_init__(self):
        self.rules = E.metric_rules(self.phase)
        # the metrics its rules, `keep` and plateaus name
        self.needs = needs = [r.metric for r in self.rules] + ([self.phase.keep.metric] if self.phase.keep else []) + self.phase.plateau_metrics
        if not needs:
            return
        every = self.phase.eval_every
        if self.evaluator is None or every is None:
            raise EvalError(f"{self.phase.label} uses `{needs[0]}` but the run has no evaluation; expected a metrics function (`eval \"file.py:metrics\" every ...`, or `metrics=` from Python)")
        if every > self.phase.steps:
            raise EvalError(f"{self.phase.label} uses `{needs[0]}` but evaluates every {every} steps and runs only {self.phase.steps}; expected an interval of at most {self.phase.steps} steps")

    @property
    def active(self) -> bool:
        return self.evaluator is not None and self.phase.eval_every is not None

    @property
    def evaluation(self) -> E.Evaluation:
        """The evaluation part of the phase's program signature (as `Runner.prepare_phase` puts it there)."""
        return self.evaluator.lowered(self.phase)

    def arguments(self) -> tuple:
        """The chunk's `evaluation` argument: (validation arrays, the rules' limits), or () without evaluation."""
        return (self.evaluator.validation_arrays, E.limits(self.phase)) if self.active else ()

    def check_names(self, model, state=None) -> None:
        """Before the phase trains: the metrics function returns {name: scalar}, and every metric its
        rules name is one it returns (traced, not run), so a misspelt name fails now, not in the program."""
        self._check_needs(self.evaluator.names(model, self.phase, state))

    def _check_needs(self, names: list[str]) -> None:
        """EvalError unless every metric the phase's rules, `keep` and plateaus name is in `names`."""
        returned = dict.fromkeys(names)
        for metric in self.needs:
            if metric.removeprefix(METRIC_PREFIX) not in returned:
                listed = ", ".join(f"`{METRIC_PREFIX}{k}`" for k in returned) or "nothing"
                raise EvalError(f"{self.phase.label} uses `{metric}` but the metrics function returned {listed}; expected a `{metric.removeprefix(METRIC_PREFIX)}` entry")

    def carry(self, free, model_state) -> dict:
        """The evaluation state the phase's first chunk takes: fresh, or a resumed checkpoint's."""
        return E.initial_carry(self.evaluation, free, model_state, len(self.steps), self.best, self.kept, self.kept_step)

    def absorb(self, log: dict, stop: dict) -> None:
        """Take one chunk's evaluations (its log, read in one transfer) and, when a rule on them
        ended the phase, its words (`val.loss < 0.1`, `val.accuracy stopped improving`)."""
        import jax

        self.state = stop["eval"]
        log, rule = jax.device_get((log, stop["eval"]["rule"]))
        self.steps += _logged_steps(log)
        self.values += _logged_values(log)
        if int(np.asarray(stop["reason"])) == C.STOP_EVAL:
            self.reason = _reason(self.rules[int(rule)])

    def take(self, log: dict, start: int, end: int) -> None:
        """The evaluations `start` .. `end - 1` of a log read to the host: a fused call's part for
        this phase (its log holds the evaluations of every phase it ran, in order)."""
        part = {"count": end - start, "steps": log["steps"][start:end], "values": {name: v[start:end] for name, v in log["values"].items()}}
        self.steps += _logged_steps(part)
        self.values += _logged_values(part)

    def stopped_by(self, rule: int) -> None:
        """The rule on metrics (its index in the phase's order) that ended the phase, in words."""
        self.reason = _reason(self.rules[rule])

    def final_weights(self, free, model_state):
        """At the phase end: the (free values, model state) the phase ends with: `keep best`'s of
        the best evaluation (setting `kept_step`), else `free` and `model_state` (no `keep`, or no
        evaluation improved).

        (A fused segment restores them on the device instead, in the phase's branch, since the
        next phase starts from them inside the same call. A phase run alone restores them here:
        its end may be known only to the host (a one-shot iterator of batches running out between
        chunks), and handing back the carried arrays costs nothing, where a select on the device
        would cost the boundary a dispatch per leaf. Both leave the chunks' carry as it was, so a
        mid-phase checkpoint holds the best weights so far either way.)"""
        import jax

        if self.state is None or "kept" not in self.state:
            return free, model_state
        step = int(jax.device_get(self.state["kept_step"]))
        if step < 0:
            return free, model_state
        self.kept_step = step
        return self.state["kept"]

    def report(self, result) -> None:
        """Write the phase's evaluations into its result: the metrics with their steps, the step of
        the kept weights and the rule that ended it."""
        result.eval_steps, result.metrics = self.history()
        result.best_step = self.kept_step
        if self.reason:
            result.stop_reason = self.reason

    def snapshot(self) -> tuple[dict, Any]:
        """What a mid-phase checkpoint keeps of the evaluations so far: (a JSON-able record, the
        free values kept for `keep best` or None): the record schedc wrote when the rules ran on
        the host, the best of each tracker read from the carry. Floats go through JSON as `repr`
        writes them, which reads back to the same bits, so a resumed phase compares later
        evaluations exactly as an uninterrupted one does."""
        import jax

        best, kept, kept_step = {}, None, None
        if self.state is not None:
            state = jax.device_get({k: v for k, v in self.state.items() if k != "kept"})
            if self.steps:  # (before the first evaluation no tracker has a best)
                best = {key: [float(state["best"][t]), int(state["best_at"][t])] for t, key in enumerate(self.evaluation.keys)}
            if "kept" in self.state and int(state["kept_step"]) >= 0:
                kept, kept_step = self.state["kept"], int(state["kept_step"])
        record = {"steps": self.steps, "values": self.values, "best": best, "kept_step": kept_step}
        return record, kept

    def resume(self, record: dict, kept) -> None:
        """Take up the evaluations of a checkpoint's `snapshot()` (its kept values rebuilt by the caller):
        `carry` then gives the chunks the state they carried."""
        self.steps = [int(s) for s in record["steps"]]
        self.values = [{k: float(v) for k, v in values.items()} for values in record["values"]]
        self.best = {k: (float(v), int(i)) for k, (v, i) in record["best"].items()}
        self.kept, self.kept_step = kept, record["kept_step"]

    def last(self) -> str:
        """The latest evaluation as the progress bar shows it: `val.accuracy 0.953 val.loss 0.14`."""
        return shown(self.values[-1]) if self.values else ""

    def history(self) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """(steps, {name: values}) of the phase's evaluations."""
        return np.asarray(self.steps, np.int64), _history(self.values)


def mean_over_items(values: np.ndarray) -> float:
    """What a progress bar shows for many fits' values of one quantity: their mean over the items
    that have a finite one (a stopped item's is NaN), NaN when none has."""
    return float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")


def shown(values: dict) -> str:
    """Metrics as the progress bar (and a phase's line in a log) shows them: `val.accuracy 0.953 val.loss 0.14`."""
    return " ".join(f"{METRIC_PREFIX}{k} {v:.4g}" for k, v in values.items())


def _logged_steps(log: dict) -> list[int]:
    """The phase steps done at each evaluation of a chunk's log (read on the host)."""
    return [int(s) for s in log["steps"][: int(log["count"])]]


def _logged_values(log: dict) -> list[dict]:
    """The metrics of each evaluation of a chunk's log (read on the host)."""
    return [{name: float(v[j]) for name, v in log["values"].items()} for j in range(int(log["count"]))]


def _reason(rule: P.StopRule) -> str:
    """The stop reason of a rule on a metric that ended a phase: `val.loss < 0.1`, `val.accuracy stopped improving`."""
    return f"{rule.metric} < {rule.threshold:g}" if rule.kind == "metric" else f"{rule.metric} stopped improving"


@dataclass
class ItemEvals(PhaseEvals):
    """The evaluations of a phase run for many fits at once (a batched fit's datasets, a sweep's
    settings: the chunk vmapped over the items), one history per item.

    `item_phases[i]` is item i's phase (a sweep's setting may have its own thresholds and
    patience: the rules' limits are stacked per item); `per_item_validation`: the validation
    arrays have the items axis (a batched fit's datasets each have their own), else every item is
    evaluated on the same data (a sweep's settings). The carried state has the items axis; the
    rules fire per item, and an item that stopped sits still while the others go on."""

    item_phases: list = field(default_factory=list)
    per_item_validation: bool = False
    item_steps: list = field(init=False)  # per item: the phase steps done at each evaluation
    item_values: list = field(init=False)  # per item: each evaluation's metrics
    reasons: list = field(init=False)  # per item: the rule on an evaluation that ended its phase, or None
    kept_steps: list = field(init=False)  # per item: the step of its kept weights, or None
    # (the four above: one entry per item, made by __post_init__ from `item_phases`)

    def __post_init__(self):
        super().__post_init__()
        size = len(self.item_phases)
        self.item_steps, self.item_values = [[] for _ in range(size)], [[] for _ in range(size)]
        self.reasons, self.kept_steps = [None] * size, [None] * size

    def check_names(self, model, state=None) -> None:
        """As a single fit's, traced on item 0 (its model, and its validation data when each item has its own)."""
        validation = self.evaluator.validation_arrays
        self._check_needs(self.evaluator.names(C.item_of(model, 0), self.phase, state, C.item_of(validation, 0) if self.per_item_validation else validation))

    def arguments(self) -> tuple:
        """(validation arrays, every item's limits stacked), or () without evaluation."""
        if not self.active:
            return ()
        limits = [E.limits(phase) for phase in self.item_phases]
        return self.evaluator.validation_arrays, {name: np.stack([mine[name] for mine in limits]) for name in limits[0]}

    def carry(self, free, model_state) -> dict:
        """A fresh evaluation state for every item (`free` has the items axis already)."""
        size = len(self.item_phases)
        carry = E.initial_carry(self.evaluation, free, model_state)
        return {k: v if k == "kept" else np.broadcast_to(v, (size,) + np.shape(v)).copy() for k, v in carry.items()}

    def absorb(self, log: dict, stop: dict) -> None:
        """Each item's evaluations of one chunk (its row of the log), and the rule that ended its phase."""
        import jax

        self.state = stop["eval"]
        log, rule, reason = jax.device_get((log, stop["eval"]["rule"], stop["reason"]))
        for i, phase in enumerate(self.item_phases):
            mine = {"count": log["count"][i], "steps": log["steps"][i], "values": {name: v[i] for name, v in log["values"].items()}}
            self.item_steps[i] += _logged_steps(mine)
            self.item_values[i] += _logged_values(mine)
            if int(reason[i]) == C.STOP_EVAL:
                self.reasons[i] = _reason(E.metric_rules(phase)[int(rule[i])])

    def final_weights(self, free, model_state):
        """Each item's kept weights where an evaluation improved (`keep best`), else its `free`."""
        import jax

        if self.state is None or "kept" not in self.state:
            return free, model_state
        steps = np.asarray(jax.device_get(self.state["kept_step"]))
        self.kept_steps = [int(s) if s >= 0 else None for s in steps]
        return jax.vmap(C.select)(steps >= 0, self.state["kept"][0], free), model_state

    def last(self) -> str:
        """The items' latest evaluations as the progress bar shows them: each metric's mean over the
        items' latest values."""
        latest = [values[-1] for values in self.item_values if values]
        if not latest:
            return ""
        names = dict.fromkeys(k for values in latest for k in values)
        return shown({k: mean_over_items(np.asarray([values.get(k, np.nan) for values in latest], np.float64)) for k in names})

    def report(self, result) -> None:
        """Per item: its metrics with their steps, its kept step, and the rule that ended its phase."""
        result.eval_steps = [np.asarray(steps, np.int64) for steps in self.item_steps]
        result.metrics = [_history(values) for values in self.item_values]
        result.best_steps = list(self.kept_steps)
        for i, reason in enumerate(self.reasons):
            if reason:
                result.stop_reasons[i] = reason


def _history(values: list[dict]) -> dict[str, np.ndarray]:
    """{name: its value at each evaluation} (NaN where an evaluation lacks it)."""
    names = list(dict.fromkeys(k for v in values for k in v))
    return {k: np.asarray([v.get(k, np.nan) for v in values], np.float64) for k in names}


def without_carry(stop: dict) -> dict:
    """A chunk's stop state without the evaluation state (a checkpoint writes that as its record)."""
    return {k: v for k, v in stop.items() if k != "eval"} if "eval" in stop else stop
