"""Sweeps: N settings of a program's numbers fitted at once, one executable per phase signature.

A setting gives values to `$placeholders` and `let`s (`Program.sweep(lr=[...])`); each
setting resolves to its own Plan (schedc.surface.sweep). Settings that differ only in
numbers — learning rates, schedule waypoints, optimizer arguments, stop thresholds, init
values — have phases of equal signatures, so each fused segment runs the program a single
fit compiles (each phase, with `fuse=False`: its chunk function), `jax.vmap`ped over the
settings: the numbers (each setting's own Plan fills its rows of the segment's table), the
free values, the optimizer and stop states and the model have a leading settings axis; data
is shared. This is the batched runner of `batch.py` with its batch axis over numbers instead
of datasets: stop rules
act per setting, a non-finite loss stops only its setting, and every setting's histories
match a single fit of that setting (to rounding).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import lru_cache

import numpy as np

from schedc.check.catalog import METRIC_PREFIX, maximised
from schedc.compiler import chunk as C
from schedc.runtime.batch import SETTINGS, BatchedResult, BatchedRunner, chunk_for
from schedc.runtime.runner import Runner, strong_types, text_table


class SweepError(ValueError):
    """A sweep that cannot run as one program: bad settings, or settings whose phases differ in structure."""


@dataclass(repr=False)
class SweepResult(BatchedResult):
    """What a sweep returns: a batched result whose items are the settings.

    `settings[i]` is setting i ({name: value}); `setting(i)` its fit as a single `Result`;
    `final_losses` the last loss of each setting; `metric("val.M")` each setting's value of an
    evaluation metric; `best()` the index of the lowest final loss (`best(by="val.accuracy")`:
    of the best metric); `summary()` a table of every setting, best first.
    """

    settings: list[dict] = field(default_factory=list)

    def setting(self, i: int):
        return self.dataset(i)

    def _outline(self) -> dict:
        best = self.best() if self.size and self.phases else None
        return {"settings": self.size, "phases": len(self.phases), "best": best, **({"best_setting": self.settings[best]} if best is not None and self.settings else {})}

    @property
    def final_losses(self) -> np.ndarray:
        """Each setting's last recorded loss (NaN for one that never ran a step)."""
        last = self.phases[-1].losses if self.phases else np.zeros((self.size, 0))
        out = np.full(self.size, np.nan)
        for i, row in enumerate(last):
            finite_steps = np.flatnonzero(~np.isnan(row))
            if finite_steps.size:
                out[i] = row[finite_steps[-1]]
        return out

    def metric(self, name: str) -> np.ndarray:
        """Each setting's value of the evaluation metric `name` (`val.accuracy`) for the model it
        returns: at its last evaluation of it, or, where the phase of that evaluation kept its best
        weights (`keep best`), at the evaluation it kept; NaN for a setting that never evaluated it.
        ValueError for a metric no setting evaluated, naming those that were."""
        key = name.removeprefix(METRIC_PREFIX)
        if key not in self.metric_names:
            evaluated = ", ".join(f"`{METRIC_PREFIX}{k}`" for k in self.metric_names)
            raise ValueError(f"sweep: no setting evaluated `{METRIC_PREFIX}{key}`; " + (f"the metrics evaluated are {evaluated}" if evaluated else "the sweep evaluated nothing (no `eval` / metrics=, or no evaluation came due)"))
        out = np.full(self.size, np.nan)
        for i in range(self.size):
            for phase in reversed(self.phases):
                values = phase.metrics[i].get(key) if phase.metrics else None
                if values is None or not len(values):
                    continue
                kept = phase.best_steps[i]
                out[i] = values[int(np.flatnonzero(phase.eval_steps[i] == kept)[0]) if kept is not None else -1]
                break
        return out

    @property
    def metric_names(self) -> list[str]:
        """The evaluation metrics any setting evaluated (without `val.`), in the order first met."""
        return list(dict.fromkeys(name for phase in self.phases for mine in phase.metrics for name in mine))

    def _ranking(self, by: str | None) -> np.ndarray:
        """Each setting's sort key, lower is better (inf where it has none): the final loss, or by a
        metric (`val.accuracy`) in its direction (catalog.maximised, as `keep best` infers it)."""
        if by is None or by == "loss":
            values = self.final_losses
        else:
            values = self.metric(by)
            values = -values if maximised(by) else values
        return np.where(np.isfinite(values), values, np.inf)

    def best(self, by: str | None = None) -> int:
        """The setting with the lowest final loss, or the best value of an evaluation metric (`by="val.accuracy"`:
        see `metric`; higher is better for accuracies and scores, as for `keep best`). A non-finite value never wins."""
        return int(np.argmin(self._ranking(by)))

    def summary(self, by: str | None = None) -> str:
        """Every setting: its values, final loss, evaluation metrics (see `metric`), steps run and
        stop reasons; best first (by the final loss, or by the metric `by`), marked `*`."""
        names = list(self.settings[0]) if self.settings else []
        ranking = self._ranking(by)
        order = sorted(range(self.size), key=lambda i: ranking[i])
        best = self.best(by) if self.size else -1
        metrics = {name: self.metric(name) for name in self.metric_names}
        rows = [("", "setting", *names, "final loss", *(f"{METRIC_PREFIX}{m}" for m in metrics), "steps", "stop")]
        for i in order:
            steps = sum(int(p.steps_run[i]) for p in self.phases)
            reasons = ",".join(dict.fromkeys(p.stop_reasons[i] for p in self.phases))
            shown = (f"{values[i]:.6g}" for values in metrics.values())
            rows.append(("*" if i == best else "", str(i), *(f"{self.settings[i][k]:g}" for k in names), f"{self.final_losses[i]:.6g}", *shown, str(steps), reasons))
        return text_table(rows, "<" + ">" * (len(rows[0]) - 2) + "<")


class SweepRunner(BatchedRunner):
    """A BatchedRunner whose items are settings: each phase's numbers stacked over the settings' Plans."""

    AXIS = SETTINGS

    def __init__(self, plans: list, tree, loss_fn, args=(), kwargs=None, **kw):
        self.plans = plans
        self.prepared: list[C.PreparedPhase] = []  # each setting's, for the phase being run
        super().__init__(plans[0], tree, loss_fn, args, kwargs, **kw)

    def _batch_size(self) -> int:
        return len(self.plans)

    def _item_phases(self, phase) -> list:
        """Each setting's own plan of `phase` (its thresholds and patience on metrics)."""
        return [plan.phases[phase.index] for plan in self.plans]

    def segment_plans(self) -> list:
        return self.plans

    def _prepare(self, phase) -> C.PreparedPhase:
        """Setting 0's signature, every setting's numbers stacked; SweepError if a setting's phase
        differs in more than numbers (its step count, or anything of the signature)."""
        k = phase.index
        self.prepared = [C.prepare(plan.phases[k], self.leaves, self.chunk) for plan in self.plans]
        first = self.prepared[0]
        # (an evaluation is the same for every setting: its interval is written as a number in the
        # file, not a value a sweep varies; its rules' thresholds and patience are per setting, ItemEvals)
        for i, (plan, prepared) in enumerate(zip(self.plans, self.prepared)):
            if plan.phases[k].steps != phase.steps or prepared.signature != first.signature or len(prepared.numbers) != len(first.numbers):
                what = f"its step count ({plan.phases[k].steps} instead of {phase.steps})" if plan.phases[k].steps != phase.steps else "its structure (a schedule's kind, an integer or named optimizer argument, a stop rule)"
                raise SweepError(
                    f"setting {i} changes {what} in {phase.label}: a sweep varies numbers that share one compiled program; "
                    "sweep such values in separate runs"
                )
        return replace(first, numbers=np.stack([p.numbers for p in self.prepared]), stop_numbers=np.stack([p.stop_numbers for p in self.prepared]))

    def _init_value(self, phase, init, current):
        """Each setting's own init of this parameter (a swept init value, say), drawn as its single fit would."""
        import jax.numpy as jnp

        mine = [next(spec for spec in plan.phases[phase.index].inits if spec.path == init.path) for plan in self.plans]
        if init.kind == "reset" or all(spec == init for spec in mine):
            # the model before the schedule (already one per setting), or one init for all: drawn once
            return super()._init_value(phase, init, current)
        values = [Runner._init_value(self, plan.phases[phase.index], spec, current[i]) for i, (plan, spec) in enumerate(zip(self.plans, mine))]
        return jnp.stack(values)

    def _scheduled(self, prepared: C.PreparedPhase, steps: int) -> np.ndarray:
        """(settings, steps, scheduled hyperparameters): each setting's own schedules, the
        hyperparameter program of a single fit vmapped over the settings' numbers."""
        if not steps:
            return np.zeros((self.size, 0, prepared.signature.n_hypers), np.float32)
        applied = _applied_per_setting(C.hyperparams_program(prepared.signature))
        block = prepared.signature.chunk
        blocks = [np.asarray(applied(np.int32(start), prepared.numbers)) for start in range(0, steps, block)]
        return np.concatenate(blocks, axis=1)[:, :steps]

    def _new_result(self, model) -> SweepResult:
        return SweepResult(model, self.size)


@lru_cache(maxsize=None)
def _applied_per_setting(program):
    """A phase's hyperparameter program (`compiler.chunk.hyperparams_program`) vmapped over the settings' numbers."""
    import jax

    return jax.jit(jax.vmap(program, in_axes=(None, 0)))


def run_sweep(
    plans: list, settings: list[dict], model, tree, key, loss_fn, args, kwargs, *, chunk: int | None = None, quiet: bool = False, source=None, state=None, fuse: bool = True, evaluator=None
) -> SweepResult:
    """Fit every setting's Plan at once (see `Program.sweep`; a model `state` is refused: batch.NO_STATE;
    `evaluator`: the metrics function and the validation data every setting is evaluated on)."""
    runner = SweepRunner(plans, tree, loss_fn, args, kwargs, key=key, chunk=chunk, quiet=quiet, source=source, state=state, fuse=fuse, evaluator=evaluator)
    if chunk is None:
        runner.chunk = chunk_for(runner.size)
    result = runner.run(runner.broadcast(strong_types(model)))
    result.settings = list(settings)
    return result
