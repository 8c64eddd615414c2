"""Batched fits: one schedule over many independent datasets, in one compiled program.

`Program.run_batched(loss_fn, *args, **kwargs)` takes data whose every array
has a leading dataset axis of length B and fits B copies of the model at once:
consecutive phases run as fused segments, each segment's program (the same one a
single fit compiles) `jax.vmap`ped over that axis (runtime/fused.py, `segment.Items`);
with `fuse=False`, or where a segment is cut, each phase's chunk function is
vmapped instead. Stop rules are per dataset: the chunk's while
loop, vmapped, keeps stepping until every dataset has stopped, and a stopped
dataset's parameters, optimizer state and histories no longer change. A
non-finite loss stops that dataset only (its stop reason says so); the others
go on. Inits give every dataset the same values a single fit would draw, so a
batched fit matches a Python loop of single fits (to rounding: vmapped
reductions may be ordered differently).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from schedc.compiler import chunk as C
from schedc.compiler import kernel as K
from schedc.runtime import distributed
from schedc.runtime.evaluation import Evaluator, ItemEvals
from schedc.runtime.runner import (
    CompileClock,
    Deferred,
    PhaseHistory,
    PhaseResult,
    Result,
    Runner,
    applied_hyperparams,
    strong_types,
    text_table,
    with_scales,
)

# (id(compiled functions), axis) -> ((them,), (vmapped init, vmapped chunk)); emptied when full
_VMAPPED: dict[tuple, tuple] = {}
_VMAPPED_KEPT = 1024

# What the batch axis runs over: datasets (data batched, numbers shared) or settings of a sweep
# (numbers batched, data shared). Free values, optimizer state, stop state and model are per item.
DATASETS, SETTINGS = "datasets", "settings"


def _stop_at_nonfinite(stop: dict, chunk_losses: np.ndarray, done_before: int) -> dict:
    """Each dataset whose chunk met a non-finite loss stops at it (the single-fit rule, per dataset;
    one the device already stopped for it, a fused segment's, keeps that step)."""
    done = np.asarray(stop["done"])
    ran = (np.arange(chunk_losses.shape[1])[None, :] < (done - done_before)[:, None]) & (done > done_before)[:, None]
    bad = ~np.isfinite(chunk_losses) & ran
    hit = bad.any(axis=1)
    if not hit.any():
        return stop
    stop = dict(stop)
    stop["reason"] = np.where(hit, C.NONFINITE, np.asarray(stop["reason"])).astype(np.asarray(stop["reason"]).dtype)
    stop["done"] = np.where(hit, done_before + bad.argmax(axis=1) + 1, done).astype(done.dtype)
    return stop


def _vmapped(fns: C.Compiled, axis: str = DATASETS):
    """The (init, chunk) functions of `fns` vmapped over the batch axis (one executable per signature and axis)."""
    return C.kept_by_id(_VMAPPED, _VMAPPED_KEPT, (id(fns), axis), (fns,), lambda: _vmap(fns, axis))


def _vmap(fns: C.Compiled, axis: str):
    import jax

    numbers, data = (None, 0) if axis == DATASETS else (0, None)
    init = jax.jit(jax.vmap(fns.init, in_axes=(0, numbers)))
    # free, opt state, stop state and model arrays are per item; step counts and step keys are
    # shared; an evaluated phase's validation data is as the data is (a dataset's own, or shared
    # by the settings) and its rules' limits per item (evaluation.ItemEvals.arguments)
    evaluation = (data, 0) if fns.evaluated else None
    in_axes = (0, 0, 0, 0, None, None, numbers, numbers, data, None, evaluation)
    return init, K.KernelsOrThunks(lambda kernel: jax.vmap(fns.per_item(kernel), in_axes=in_axes, axis_name=C.ITEMS))


@dataclass(repr=False)  # (see PhaseResult)
class BatchedPhaseResult:
    """One phase over B datasets. `losses[i, :steps_run[i]]` is dataset i's history (NaN after it)."""

    index: int
    name: str | None
    display: str
    steps: int
    steps_run: np.ndarray  # (B,)
    losses: np.ndarray  # (B, steps)
    hyperparams: dict[str, np.ndarray]  # name -> (B, steps)
    stop_reasons: list[str]
    wall_time: float
    compile_time: float
    compiles: int
    model: Any = Deferred()  # every array leaf with the leading dataset axis (a `Later` from a fused segment)
    ema_model: Any = Deferred()  # with `ema D`, batched like `model`
    # an evaluated phase, per dataset: its metrics (name -> one value per evaluation), the
    # phase-local steps done at each evaluation, and `keep best`'s step (None: none kept)
    metrics: list[dict] = field(default_factory=list)
    eval_steps: list[np.ndarray] = field(default_factory=list)
    best_steps: list = field(default_factory=list)
    # the loss's aux metrics: name -> (chunks, B), per dataset the mean over its own steps of each
    # chunk (NaN for chunks after its stop); the chunks' ends, the longest-running dataset's
    aux: dict[str, np.ndarray] = field(default_factory=dict)
    aux_steps: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    def __repr__(self) -> str:
        return f"BatchedPhaseResult({self.display!r}, datasets={len(self.stop_reasons)}, steps_run={self.steps_text()}, stop_reasons={dict(Counter(self.stop_reasons))})"

    def line(self) -> str:
        """What a run not watched in a terminal prints as the phase ends (see `PhaseResult.line`): the
        datasets' fewest..most steps run, their final losses' range and how many stopped for each reason."""
        return f"{self.display}: {self.steps_text()} steps, loss {self.losses_text()}, {self.stops_text()}, {self.wall_time:.2f} s"

    def steps_text(self) -> str:
        return f"{int(np.min(self.steps_run))}..{int(np.max(self.steps_run))}/{self.steps}"

    def losses_text(self) -> str:
        """The range of the datasets' last losses: `0.0012..0.31`."""
        last = np.array([self.losses[i, n - 1] if n else np.nan for i, n in enumerate(np.asarray(self.steps_run))])
        return f"{np.nanmin(last):.6g}..{np.nanmax(last):.6g}" if np.isfinite(last).any() else "nan"

    def stops_text(self) -> str:
        return ", ".join(f"{reason} {count}" for reason, count in Counter(self.stop_reasons).items())

    def dataset(self, i: int, take=lambda tree: tree) -> PhaseResult:
        """Dataset i's phase; `take` slices its models out of the batch."""
        n = int(self.steps_run[i])
        result = PhaseResult(
            self.index, self.name, self.display, self.steps, n, self.losses[i, :n], {k: v[i, :n] for k, v in self.hyperparams.items()},
            self.stop_reasons[i], self.wall_time, self.compile_time, self.compiles, take(self.model),
            None if self.ema_model is None else take(self.ema_model),
        )
        if self.metrics:
            result.metrics, result.eval_steps, result.best_step = self.metrics[i], self.eval_steps[i], self.best_steps[i]
        ran = np.r_[0, self.aux_steps][:-1] < n  # the chunks it ran steps in, from where each starts (its last one ends at n)
        result.aux_steps = np.minimum(self.aux_steps[ran], n)
        result.aux = {name: means[ran, i] for name, means in self.aux.items()}
        return result


@dataclass(repr=False)
class BatchedResult(PhaseHistory):
    """What `run_batched` returns: models with a leading dataset axis, histories as (B, steps) arrays."""

    initial_model: Any
    size: int
    phases: list[BatchedPhaseResult] = field(default_factory=list)

    def __len__(self) -> int:
        return self.size

    def _outline(self) -> dict:
        return {"datasets": self.size, **super()._outline()}

    def summary(self) -> str:
        """A plain-text table: each phase, its steps run (fewest..most), the final losses' range and
        how many datasets stopped for each reason."""
        rows = [("phase", "steps", "final loss (min..max)", "stop")]
        rows += [(p.display, p.steps_text(), p.losses_text(), p.stops_text()) for p in self.phases]
        return text_table(rows, "<<<<")

    @property
    def stop_reasons(self) -> list[list[str]]:
        """Per phase, per dataset."""
        return [p.stop_reasons for p in self.phases]

    def dataset(self, i: int) -> Result:
        """Dataset i's fit as a single-fit `runner.Result` (models sliced out of the batch)."""
        def take(tree):
            return C.item_of(tree, i)

        return Result(take(self.initial_model), [p.dataset(i, take) for p in self.phases])


def _keep(mask: np.ndarray, old, new):
    """`new` with the datasets where `mask` is true taken from `old`."""
    import jax
    import jax.numpy as jnp

    def pick(o, n):
        return jnp.where(mask.reshape(mask.shape + (1,) * (jnp.ndim(n) - 1)), o, n)

    return jax.tree_util.tree_map(pick, old, new)


def _not_run(stopped: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Per-step `values` ([items, steps]) with NaN for the `stopped` items."""
    return np.where(stopped[:, None], np.nan, values).astype(values.dtype)


def _size(tree) -> int:
    sizes = _leading_axes(tree)
    if len(sizes) != 1:
        raise ValueError(f"run_batched: every data array needs the same leading dataset axis, found lengths {sorted(sizes) or 'none'}")
    return sizes.pop()


def _leading_axes(tree) -> set[int]:
    import jax

    return {x.shape[0] for x in jax.tree_util.tree_leaves(tree) if hasattr(x, "shape") and len(x.shape)}


NO_STATE = "batched fits and sweeps take no model state (an eqx.nn.State): a stateful loss (BatchNorm) runs with `Program.run(..., state=state)`"


class BatchedRunner(Runner):
    """A Runner whose phases run B datasets at once (vmap over the leading axis): the same
    chunk loop, with the batched fit strategy."""

    AXIS = DATASETS
    # (a phase's stopped items decide what the next phase runs: each is read before the next starts)
    READS_BEHIND = False

    def __init__(self, *a, fuse: bool = True, **kw):
        super().__init__(*a, fuse=fuse, **kw)
        import equinox as eqx

        from schedc.compiler.segment import Items

        # a state given as data would reach the loss as data; a program's own (its model came as `(model, state)`) is not carried
        if self.model_state is not None or any(isinstance(v, eqx.nn.State) for v in self.kwargs.values()):
            raise TypeError(NO_STATE)
        self.size = self._batch_size()
        self.dead = np.zeros(self.size, bool)  # datasets a non-finite loss stopped: they sit out the rest of the run
        # fused segments run vmapped over the items (segment.Items); across processes the fused runner
        # gathers the outputs of items held by other processes (runtime/fused.py reads them with host_array)
        self.items = Items(self.size, data=self.AXIS == DATASETS, numbers=self.AXIS == SETTINGS)

    def stopped_items(self) -> np.ndarray:
        return self.dead

    def examples(self) -> tuple:
        """One dataset's arrays (their shapes: the leading axis is the datasets'), or a sweep's shared data."""
        import jax

        if self.AXIS != DATASETS:
            return self.data_arrays
        return tuple(jax.ShapeDtypeStruct(x.shape[1:], x.dtype) for x in self.data_arrays)

    def _phase_evals(self, phase) -> ItemEvals:
        """One history per dataset; each dataset is evaluated on its own validation data."""
        return ItemEvals(phase, self.evaluator, item_phases=self._item_phases(phase), per_item_validation=self.AXIS == DATASETS)

    def _item_phases(self, phase) -> list:
        """Each item's plan of `phase` (a batched fit's datasets share it)."""
        return [phase] * self.size

    def segment_phase_result(self, phase, prepared, losses, scales, done, reasons, model, wall: float, clock: CompileClock) -> BatchedPhaseResult:
        """A phase a fused segment ran (runtime/fused.py), from its per-item losses ([items, steps],
        NaN past each item's `done`), plateau scales, steps and stop `reasons`: read as a chunk is
        (an item's first non-finite loss ends its phase there), then as a phase is."""
        stop = _stop_at_nonfinite({"done": np.asarray(done), "reason": np.asarray(reasons)}, losses, done_before=0)
        return self._phase_result(phase, prepared, [losses], scales, stop, model, wall, clock, {})

    def broadcast(self, model):
        """`model` with every array leaf repeated along a new leading dataset axis."""
        import jax
        import jax.numpy as jnp

        return jax.tree_util.tree_map(lambda x: jnp.broadcast_to(x, (self.size,) + x.shape) if isinstance(x, jax.Array) else x, strong_types(model))

    def _init_value(self, phase, init, current):
        # every dataset gets the value a single fit would: drawn at one dataset's shape, then repeated
        if init.kind == "reset":
            return super()._init_value(phase, init, current)
        import jax.numpy as jnp

        return jnp.broadcast_to(super()._init_value(phase, init, current[0]), current.shape)

    def _batch_size(self) -> int:
        return _size(self.data_arrays)

    # ---- the batched strategy

    def _programs(self, fns: C.Compiled):
        # the chunk sees one dataset: the batched model's layout is its (non-array parts are shared)
        return _vmapped(fns, self.AXIS)

    def _scheduled(self, prepared: C.PreparedPhase, steps: int) -> np.ndarray:
        """(B, steps, scheduled hyperparameters): functions of the step alone, the same for every dataset."""
        scheduled = applied_hyperparams(prepared, steps)
        return np.broadcast_to(scheduled, (self.size,) + scheduled.shape)

    def _initial_stop(self, signature: C.PhaseSignature) -> dict:
        stop = {k: np.broadcast_to(v, (self.size,) + np.shape(v)).copy() for k, v in C.initial_stop_state(signature).items()}
        stop["reason"] = np.where(self.dead, C.NONFINITE, C.COMPLETED).astype(stop["reason"].dtype)
        return stop

    def _absorb(self, before: tuple, out: tuple, step0: int, n_active: int):
        """A dataset stopped before this chunk keeps its state, whatever the chunk computed, and
        logs no aux metrics (NaN, as for steps not run); one that met a non-finite loss in it stops
        there. The phase is over when every dataset stopped."""
        free, opt_state, stop, chunk_losses, aux_values = out
        # per-item values: sharded like the items, which may sit on other processes
        stop, chunk_losses = distributed.host_tree(stop), distributed.host_array(chunk_losses)[:, :n_active]
        stopped = np.asarray(before[2]["reason"]) != C.COMPLETED
        if stopped.any():
            free, opt_state, stop = _keep(stopped, before, (free, opt_state, stop))
            aux_values = {name: _not_run(stopped, distributed.host_array(v)) for name, v in aux_values.items()}
        stop = _stop_at_nonfinite(stop, chunk_losses, done_before=step0)
        # the steps the longest-running item ran (the chunk ends there, as a fused segment's call does)
        chunk_losses = chunk_losses[:, : max(int(np.max(stop["done"])) - step0, 0)]
        return free, opt_state, stop, chunk_losses, aux_values, bool(np.all(np.asarray(stop["reason"]) != C.COMPLETED))

    def _steps_ran(self, stop: dict, step0: int, chunk_losses: np.ndarray) -> np.ndarray:
        """Per item (one stopped before the chunk: none)."""
        return np.clip(np.asarray(stop["done"]) - step0, 0, None)

    def _phase_result(self, phase, prepared, losses, scales, stop, model, wall: float, clock: CompileClock, starts: dict) -> BatchedPhaseResult:
        del starts  # optax objects' carried schedule states: a batched fit logs only the fed hyperparameters
        done = np.asarray(stop["done"])
        reasons = np.asarray(stop["reason"])
        self.dead |= reasons == C.NONFINITE
        loss_arr = np.concatenate(losses, axis=1) if losses else np.zeros((self.size, 0), np.float32)
        # as long as the longest-running item (a chunk that ran past every item's stop adds no steps)
        loss_arr = loss_arr[:, : int(done.max(initial=0))]
        # plateau scales follow each item's losses
        hyper_arr = with_scales(self._scheduled(prepared, loss_arr.shape[1]), scales)
        # steps a dataset did not run hold NaN (the chunk leaves them unwritten)
        mask = np.arange(loss_arr.shape[1])[None, :] < done[:, None]
        loss_arr = np.where(mask, loss_arr, np.nan)
        return BatchedPhaseResult(
            index=phase.index,
            name=phase.name,
            display=phase.label,
            steps=phase.steps,
            steps_run=done,
            losses=loss_arr,
            hyperparams={name: np.where(mask, hyper_arr[:, :, j], np.nan) for j, name in enumerate(prepared.hyper_names)},
            stop_reasons=[C.STOP_REASONS[int(r)] for r in reasons],
            wall_time=wall,
            compile_time=clock.seconds,
            compiles=clock.count,
            model=model,
        )

    def _new_result(self, model) -> BatchedResult:
        return BatchedResult(model, self.size)

    def _after_phase(self, result, phase_result) -> None:
        """No exception for a non-finite loss: that dataset stopped, its reason says why."""


def run_batched(
    program, loss_fn, args, kwargs, *, batched_model: bool = False, chunk: int | None = None, quiet: bool = False, fuse: bool = True, metrics=None, validation: tuple = (), eval_every=None
) -> BatchedResult:
    """Fit `program` to B datasets at once (see `Program.run_batched`; `validation`: each dataset's,
    every array with the leading dataset axis). Epochs and `eval_every` count in one dataset's examples."""
    if program.model is None:
        raise TypeError("this program has no model: pass one to schedc.compile, or add a `model` directive")
    if 0 in _leading_axes((tuple(args), dict(kwargs))):  # (before one dataset is taken out of the arrays below)
        raise ValueError("run_batched: the data arrays' leading dataset axis is empty: there is no dataset to fit")
    evaluator = Evaluator(metrics, validation) if metrics is not None else None
    if evaluator is not None:
        _check_validation(evaluator.validation_arrays, _size((tuple(args), dict(kwargs))))
    plan = program.plan_for(*_one_dataset(args, kwargs), eval_every=eval_every)
    runner = BatchedRunner(plan, program.tree, loss_fn, args, kwargs, key=program.key, chunk=chunk, quiet=quiet, source=program.source, state=program.state, fuse=fuse, evaluator=evaluator)
    if chunk is None:
        runner.chunk = chunk_for(runner.size)
    model = strong_types(program.model) if batched_model else runner.broadcast(program.model)
    if batched_model:
        _check_batched(model, runner.size)
    return runner.run(model)


def chunk_for(size: int) -> int:
    """Steps per call: a power of two (so nearby sizes share executables), the (B, chunk) loss buffer at most 64k floats.

    Under vmap the chunk's while loop had a per-dataset condition, so every iteration
    selected the whole carry, loss buffer included, between old and new: its cost grew
    with B x chunk. Measured (bench/bench_batched.py, B = 1024, CPU): 2.3 s a fit with
    chunk 16384, 0.15 s with chunk 64; the extra host calls cost far less. (A stop rule's
    loop now has a shared condition, `chunk._shared_loop`; the size was not measured again.)
    """
    steps = max(1, (1 << 16) // size)
    return int(min(C.DEFAULT_CHUNK, max(64, 1 << (steps.bit_length() - 1))))


def _one_dataset(args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    """Dataset 0's data (what `Program.plan_for` counts epochs and minibatches in)."""
    return C.item_of((tuple(args), dict(kwargs)), 0)


def _check_validation(arrays: tuple, size: int) -> None:
    """Each dataset is evaluated on its own validation data: every array has the leading dataset axis."""
    wrong = [tuple(x.shape) for x in arrays if not len(x.shape) or x.shape[0] != size]
    if wrong:
        raise ValueError(
            f"run_batched: every validation array needs the leading axis of the {size} datasets (each dataset is evaluated on its own), "
            f"found shapes {wrong}; to evaluate every dataset on the same data, repeat it: np.broadcast_to(v, ({size},) + v.shape)"
        )


def _check_batched(model, size: int) -> None:
    import jax

    for x in jax.tree_util.tree_leaves(model):
        if isinstance(x, jax.Array) and (x.ndim == 0 or x.shape[0] != size):
            raise ValueError(f"run_batched(batched_model=True): every model array needs a leading axis of {size} datasets, found shape {x.shape}")
