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


class EvalError(ValueError):
    """A metrics function or an evaluation rule that cannot work: it names the phase and what was expected."""


# (metrics function, layout of (model, state), layout of the validation data) -> the names it returns:
# traced once per model structure in the process, as the chunk executables are compiled once
_NAMES: dict = {}


class Evaluator:
    """The metrics function of a run and its validation data (split into arrays and layout once:
    the arrays are an argument of every evaluated chunk, the layout part of its program's key)."""

    def __init__(self, metrics: Callable, validation: tuple = ()):
        self.metrics = metrics
        self.validation_arrays, self.validation_layout = C.split(tuple(validation))

    def lowered(self, phase: P.PhasePlan) -> E.Evaluation | None:
        """The evaluation part of `phase`'s program signature (compiler.evaluate), or None for a
        phase that does not evaluate."""
        return E.lower(phase, self.metrics, self.validation_layout) if phase.eval_every is not None else None

    def names(self, model, phase: P.PhasePlan, state=None) -> list[str]:
        """The names the metrics function returns for this model, found by tracing it (nothing
        runs); EvalError unless it returns {name: scalar}. `state`: the model state, in a run with
        one (the function gets `metrics(model, state, *validation)` and puts the model in inference
        mode itself: `eqx.nn.inference_mode(model)`, as equinox's own evaluation does)."""
        arrays, layout = C.split((model, state))
        key = (self.metrics, layout, self.validation_layout)
        if key not in _NAMES:
            _NAMES[key] = self._trace(layout, arrays, phase)
        return _NAMES[key]

    def _trace(self, layout, arrays, phase: P.PhasePlan) -> list[str]:
        import equinox as eqx

        metrics, validation_layout = self.metrics, self.validation_layout

        def call(arrays, validation_arrays):
            model, state = layout.rebuild(arrays)
            return E.call_metrics(metrics, validation_layout, model, state, validation_arrays)

        out = eqx.filter_eval_shape(call, arrays, self.validation_arrays)
        _check_output(out, phase)
        return list(out)


def _check_output(out, phase: P.PhasePlan) -> None:
    """EvalError unless the metrics function's output (shapes) is a dict of scalar numbers."""
    import jax

    if not isinstance(out, dict):
        raise EvalError(f"the metrics function returned {type(out).__name__} in {phase.label}; expected a dict {{name: scalar}}")
    for name, value in out.items():
        # traced: an array is a ShapeDtypeStruct; anything else came back as the function returned it
        dtype = np.dtype(type(value)) if isinstance(value, (int, float)) else value.dtype if isinstance(value, (jax.ShapeDtypeStruct, np.ndarray, np.generic)) else None
        if dtype is None or dtype.kind not in "biuf":
            raise EvalError(f"the metrics function's `{name}` is a {type(value).__name__} in {phase.label}; expected a scalar number")
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
        returned = dict.fromkeys(self.evaluator.names(model, self.phase, state))
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
        count = int(log["count"])
        self.steps += [int(s) for s in log["steps"][:count]]
        self.values += [{name: float(v[j]) for name, v in log["values"].items()} for j in range(count)]
        if int(np.asarray(stop["reason"])) == C.STOP_EVAL:
            rule = self.rules[int(rule)]
            self.reason = f"{rule.metric} < {rule.threshold:g}" if rule.kind == "metric" else f"{rule.metric} stopped improving"

    def kept_weights(self):
        """At the phase end: `keep best`'s (free values, model state) of the best evaluation, or None
        (no `keep`, or no evaluation improved); sets `kept_step`."""
        import jax

        if self.state is None or "kept" not in self.state:
            return None
        step = int(jax.device_get(self.state["kept_step"]))
        if step < 0:
            return None
        self.kept_step = step
        return self.state["kept"]

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
        if not self.values:
            return ""
        return " ".join(f"{METRIC_PREFIX}{k} {v:.4g}" for k, v in self.values[-1].items())

    def history(self) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """(steps, {name: values}) of the phase's evaluations."""
        names = list(dict.fromkeys(k for v in self.values for k in v))
        return np.asarray(self.steps, np.int64), {k: np.asarray([v.get(k, np.nan) for v in self.values], np.float64) for k in names}


def without_carry(stop: dict) -> dict:
    """A chunk's stop state without the evaluation state (a checkpoint writes that as its record)."""
    return {k: v for k, v in stop.items() if k != "eval"} if "eval" in stop else stop
