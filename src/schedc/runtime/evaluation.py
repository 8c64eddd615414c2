"""Evaluation during a phase: `eval "m.py:metrics" every N steps | every epoch`.

The chunk loop ends a chunk at every evaluation boundary, and the host calls the
(jitted) metrics function on the model of that moment and the validation data.
Nothing of the training moves: the schedules' clock is the phase-local step and
the optimizer state is untouched, so a run with evaluations takes exactly the
steps of one without. After each evaluation the host applies the rules on
evaluation metrics (`stop when val.M < X`, `stop when val.M stops improving for
N evals`), steps the plateau scales that follow a metric (`lr E * plateau(on=val.M)`: optax's
reduce_on_plateau update fed M, once per evaluation) and remembers the best free values for
`keep best val.M`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from schedc.check.catalog import METRIC_PREFIX
from schedc.plan import resolve as P


class EvalError(ValueError):
    """A metrics function or an evaluation rule that cannot work: it names the phase and what was expected."""


# (metrics function, layout of (model, state), layout of the validation data) -> its jitted program:
# shared by every run in the process, as the chunk executables are
_PROGRAMS: dict = {}


class Evaluator:
    """The metrics function of a run, jitted once per model structure, and its validation data.

    Called as a plain `jax.jit` program on the model's array leaves (the layout split once, as the
    chunks are), its numbers read back in one transfer: an evaluation between chunks costs a
    dispatch and a read, not a Python walk of the model per call.
    """

    def __init__(self, metrics: Callable, validation: tuple = ()):
        from schedc.compiler.chunk import split

        self.metrics = metrics
        self._validation_arrays, self._validation_layout = split(tuple(validation))

    def __call__(self, model, phase: P.PhasePlan, state=None) -> dict[str, float]:
        """The metrics of `model`: `metrics(model, *validation)`, or `metrics(model, state, *validation)`
        in a run with a model state (the function puts the model in inference mode itself:
        `eqx.nn.inference_mode(model)`, as equinox's own evaluation does)."""
        import jax

        arrays, program, _ = self._program(model, phase, state)
        return {name: float(value) for name, value in jax.device_get(program(arrays, self._validation_arrays)).items()}

    def names(self, model, phase: P.PhasePlan, state=None) -> list[str]:
        """The names the metrics function returns for this model, found by tracing it (nothing runs)."""
        return self._program(model, phase, state)[2]

    def _program(self, model, phase: P.PhasePlan, state) -> tuple:
        """(the model's arrays, the jitted metrics program for its structure, the names it returns)."""
        from schedc.compiler.chunk import split

        arrays, layout = split((model, state))
        key = (self.metrics, layout, self._validation_layout)
        if key not in _PROGRAMS:
            _PROGRAMS[key] = self._compile(layout, arrays, phase)
        return (arrays, *_PROGRAMS[key])

    def _compile(self, layout, arrays, phase: P.PhasePlan) -> tuple[Callable, list[str]]:
        """The jitted metrics program for models of `layout` and the names it returns, once its
        output is known to be {name: scalar}."""
        import equinox as eqx
        import jax

        metrics, validation_layout = self.metrics, self._validation_layout  # not `self`: the cache outlives the run

        def call(arrays, validation_arrays):
            model, state = layout.rebuild(arrays)
            validation = validation_layout.rebuild(validation_arrays)
            out = metrics(model, *validation) if state is None else metrics(model, state, *validation)
            return {str(name): value for name, value in out.items()} if isinstance(out, dict) else out

        out = eqx.filter_eval_shape(call, arrays, self._validation_arrays)
        _check_output(out, phase)
        return jax.jit(call), list(out)


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
    """One phase's evaluations: when they fall, what they found, and the host-side rules on them."""

    phase: P.PhasePlan
    evaluator: Evaluator | None
    steps: list[int] = field(default_factory=list)  # phase-local steps done at each evaluation
    values: list[dict] = field(default_factory=list)
    best: dict = field(default_factory=dict)  # metric -> (value, evaluation index) of each rule's best
    kept: Any = None  # (free values, model state or None) at the best evaluation for `keep`
    kept_step: int | None = None
    reason: str | None = None  # the rule on an evaluation that ended the phase

    def __post_init__(self):
        self.rules = [r for r in self.phase.stop if not r.on_device]
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
    def names_metrics(self) -> bool:
        """Whether a rule, `keep` or plateau of the phase names a metric (`check_names` has work to do)."""
        return self.active and bool(self.needs)

    def check_names(self, model, state=None) -> None:
        """Before the phase trains: every metric its rules name is one the metrics function
        returns (traced, not run), so a misspelt name fails now, not at the first evaluation."""
        if self.names_metrics:
            self._check_names(dict.fromkeys(self.evaluator.names(model, self.phase, state)))

    def next_boundary(self, done: int) -> int:
        """The step count at which the chunk starting after `done` steps must end."""
        if not self.active:
            return self.phase.steps
        every = self.phase.eval_every
        return min(self.phase.steps, (done // every + 1) * every)

    def due(self, done: int) -> bool:
        return self.active and done > 0 and done % self.phase.eval_every == 0

    def evaluate(self, done: int, model, free, state=None) -> bool:
        """Evaluate after `done` steps (`state`: the model state, if the run has one); True when a
        rule ends the phase (its words in `reason`)."""
        values = self.evaluator(model, self.phase, state)  # names checked before the phase (`check_names`)
        self.steps.append(done)
        self.values.append(values)
        reason = None
        for rule in self.rules:
            value = values[rule.metric.removeprefix(METRIC_PREFIX)]
            if rule.kind == "metric" and value < rule.threshold:
                reason = reason or f"{rule.metric} < {rule.threshold:g}"
            elif rule.kind == "plateau" and self._stalled(rule, value):
                reason = reason or f"{rule.metric} stopped improving"
        keep = self.phase.keep
        if keep is not None and self._improves(keep.metric, keep.maximise, values[keep.metric.removeprefix(METRIC_PREFIX)]):
            self.kept, self.kept_step = (free, state), done
        self.reason = reason
        return reason is not None

    def step_plateaus(self, opt_state, signature):
        """`opt_state` after the latest evaluation: each `plateau(on=val.M)` stepped by optax's own
        update fed M (reduce_on_plateau minimises it); the plateaus on the loss left alone."""
        from schedc.compiler import optimizers as O

        plateaus = [g for g in signature.groups if g.plateau is not None]
        if not any(g.plateau_on is not None for g in plateaus):
            return opt_state
        values = self.values[-1]
        fed = tuple(None if g.plateau_on is None else values[g.plateau_on.removeprefix(METRIC_PREFIX)] for g in plateaus)
        return O.step_plateaus(opt_state, tuple(g.plateau for g in plateaus), fed)

    def _stalled(self, rule: P.StopRule, value: float) -> bool:
        """Whether `rule.patience` evaluations have passed since the best one."""
        self._improves(rule.metric + "#stop", rule.maximise, value)
        return len(self.steps) - 1 - self.best[rule.metric + "#stop"][1] >= rule.patience

    def _improves(self, key: str, maximise: bool, value: float) -> bool:
        """Whether `value` beats the best so far (NaN never does, and is beaten by anything); records a new best."""
        best = self.best.get(key)
        better = not math.isnan(value) and (best is None or math.isnan(best[0]) or (value > best[0] if maximise else value < best[0]))
        if better or best is None:
            self.best[key] = (value, len(self.steps) - 1)
        return better

    def _check_names(self, values: dict) -> None:
        for metric in self.needs:
            if metric.removeprefix(METRIC_PREFIX) not in values:
                returned = ", ".join(f"`{METRIC_PREFIX}{k}`" for k in values) or "nothing"
                raise EvalError(f"{self.phase.label} uses `{metric}` but the metrics function returned {returned}; expected a `{metric.removeprefix(METRIC_PREFIX)}` entry")

    def snapshot(self) -> tuple[dict, Any]:
        """What a mid-phase checkpoint keeps of the evaluations so far: (a JSON-able record, the
        free values kept for `keep best` or None). Floats go through JSON as `repr` writes them,
        which reads back to the same bits, so a resumed phase compares later evaluations exactly
        as an uninterrupted one does."""
        record = {"steps": self.steps, "values": self.values, "best": {k: list(v) for k, v in self.best.items()}, "kept_step": self.kept_step}
        return record, self.kept

    def resume(self, record: dict, kept) -> None:
        """Take up the evaluations of a checkpoint's `snapshot()` (its kept values rebuilt by the caller)."""
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
