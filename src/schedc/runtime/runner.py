"""Running a compiled program: phases, inits, optimizer state, stopping, histories, progress.

The host loops over chunks only; each chunk is one call of a cached jitted
function (schedc.compile) running up to K steps on device. After each chunk the
host reads the few numbers it needs (steps done, stop reason) to move the
progress bar and decide whether the phase is over.
"""

from __future__ import annotations

import _signal
import signal
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from functools import lru_cache, partial
from typing import Any, Callable, NamedTuple

import numpy as np

from schedc.compiler import chunk as C
from schedc.compiler import minibatch
from schedc.compiler import optimizers as O
from schedc.lang.nodes import Bound
from schedc.plan import resolve as P
from schedc.runtime import distributed
from schedc.runtime.data import DataError, array_names, check_batchable
from schedc.runtime.evaluation import EvalError, PhaseEvals, mean_over_items, shown, without_carry
from schedc.runtime.stream import DATA_EXHAUSTED, Batches, Resident, Stream, loss_arguments


class Later:
    """A value computed on first read: a `PhaseResult.model` given as `Later(fn)` is `fn()` when read.

    A fused segment returns the model after each of its phases this way, so a run whose
    intermediate models nobody reads never copies them out of the device buffer.
    """

    def __init__(self, compute: Callable[[], Any]):
        self.compute = compute


class Deferred:
    """A dataclass field that may be set to a `Later`, resolved (once) when read."""

    def __set_name__(self, owner, name):
        self.slot = "_" + name

    def __get__(self, obj, owner=None):
        if obj is None:
            return None  # the field's default
        value = obj.__dict__[self.slot]
        if isinstance(value, Later):
            value = obj.__dict__[self.slot] = value.compute()
        return value

    def __set__(self, obj, value):
        obj.__dict__[self.slot] = value


@dataclass(repr=False)  # (its arrays and model in full would fill a notebook cell)
class PhaseResult:
    index: int
    name: str | None
    display: str
    steps: int  # planned
    steps_run: int
    losses: np.ndarray  # one per step run: the loss before that step's update
    hyperparams: Mapping[str, np.ndarray]  # the values applied at each step run (a lazy `Hyperparams`)
    stop_reason: str  # "completed", "loss_change", "loss", "non-finite loss", or a rule on an evaluation ("val.loss < 0.1")
    wall_time: float
    compile_time: float
    compiles: int
    model: Any = Deferred()  # the model after the phase (given as a `Later` by fused segments)
    ema_model: Any = Deferred()  # with `ema D`: the model with its free parameters replaced by their moving average (a `Later` in fused segments)
    steps_per_epoch: int | None = None  # with minibatches or a length in epochs
    aux: dict[str, np.ndarray] = field(default_factory=dict)  # the loss's aux metrics: one mean per chunk (see AuxLog)
    aux_steps: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # steps done at the end of each chunk
    metrics: dict[str, np.ndarray] = field(default_factory=dict)  # evaluation metrics: one value per evaluation
    eval_steps: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # phase-local steps done at each evaluation
    best_step: int | None = None  # `keep best`: the evaluation whose weights were restored
    state: Any = Deferred()  # with a model state (`state=`, an eqx.nn.State): the state after the phase (a `Later` in fused segments)

    @property
    def final_loss(self) -> float:
        return float(self.losses[-1]) if len(self.losses) else float("nan")

    def __repr__(self) -> str:
        return f"PhaseResult({self.display!r}, steps_run={self.steps_run}/{self.steps}, final_loss={self.final_loss:.6g}, stop_reason={self.stop_reason!r})"

    def line(self) -> str:
        """What a run not watched in a terminal prints as the phase ends:
        `phase 1 (refine): 300/300 steps, loss 0.00123, completed, 1.52 s`, and its last evaluation."""
        evaluated = shown({k: v[-1] for k, v in self.metrics.items() if len(v)})
        return f"{self.display}: {self.steps_run}/{self.steps} steps, loss {self.final_loss:.6g}{', ' + evaluated if evaluated else ''}, {self.stop_reason}, {self.wall_time:.2f} s"


def says_phases(quiet: bool, processes: int = 1) -> bool:
    """Whether a run prints a line per phase as it ends (`announce`): not quiet, and drawing no
    progress bar (no terminal, or several processes, where no bar is drawn)."""
    return not quiet and (processes > 1 or not sys.stderr.isatty())


def announce(phase_result) -> None:
    """A phase's line on stderr as it ends, for a run not watched in a terminal (`says_phases`)."""
    print(phase_result.line(), file=sys.stderr, flush=True)


class PhaseHistory:
    """What single and batched results share: a model and losses per phase (`phases`, `initial_model`).

    `repr` is one line of what was run (the models and histories in full would fill a notebook
    cell); `str` (`print(result)`) the `summary()` table."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v}' for k, v in self._outline().items())})"

    def __str__(self) -> str:
        return self.summary()

    def _outline(self) -> dict:
        """The fields `repr` shows."""
        return {"phases": len(self.phases), "steps_run": sum(int(np.max(p.steps_run)) for p in self.phases)}

    @property
    def model(self):
        return self.phases[-1].model if self.phases else self.initial_model

    @property
    def models(self) -> list:
        return [p.model for p in self.phases]

    @property
    def ema_model(self):
        """The EMA model of the last phase that keeps one (`ema D`), or None."""
        return next((p.ema_model for p in reversed(self.phases) if p.ema_model is not None), None)

    @property
    def phase_losses(self) -> list[np.ndarray]:
        return [p.losses for p in self.phases]

    @property
    def wall_time(self) -> float:
        return sum(p.wall_time for p in self.phases)

    @property
    def compile_time(self) -> float:
        return sum(p.compile_time for p in self.phases)


@dataclass(repr=False)
class Result(PhaseHistory):
    """What a run returns. `models[i]` is the model after phase i; `model` the last one."""

    initial_model: Any
    phases: list[PhaseResult] = field(default_factory=list)
    initial_state: Any = None  # the model state the run started from (`state=`), or None

    @property
    def state(self):
        """The model state (`eqx.nn.State`: BatchNorm statistics) after the last phase, with `state=`; else None."""
        return self.phases[-1].state if self.phases else self.initial_state

    @property
    def loss_history(self) -> np.ndarray:
        return np.concatenate(self.phase_losses) if self.phases else np.zeros(0, np.float32)

    @property
    def stop_reasons(self) -> list[str]:
        return [p.stop_reason for p in self.phases]

    @property
    def hyperparams(self) -> dict[str, np.ndarray]:
        """Every logged hyperparameter over the whole run (NaN in phases that do not have it)."""
        return _concatenated(self.phases, "hyperparams", lambda p: p.steps_run)

    @property
    def eval_steps(self) -> np.ndarray:
        """The run's step (phases concatenated) after which each evaluation was taken."""
        offsets = np.cumsum([0] + [p.steps_run for p in self.phases[:-1]])
        return np.concatenate([p.eval_steps + o for p, o in zip(self.phases, offsets)]) if self.phases else np.zeros(0, np.int64)

    @property
    def metrics(self) -> dict[str, np.ndarray]:
        """Every evaluation metric over the run, aligned with `eval_steps` (NaN where a phase lacks it)."""
        return _concatenated(self.phases, "metrics", lambda p: len(p.eval_steps))

    @property
    def aux(self) -> dict[str, np.ndarray]:
        """The loss's aux metrics over the run: one mean per chunk (NaN where a phase lacks it)."""
        return _concatenated(self.phases, "aux", lambda p: len(p.aux_steps))

    def _outline(self) -> dict:
        final = float(self.loss_history[-1]) if self.phases and len(self.loss_history) else float("nan")
        return {**super()._outline(), "final_loss": f"{final:.6g}", "stop_reasons": self.stop_reasons}

    def summary(self) -> str:
        """A plain-text table: phase, steps run, final loss, stop reason, time."""
        rows = [("phase", "steps", "final loss", "stop", "time (s)", "compile (s)")]
        for p in self.phases:
            rows.append((p.display, f"{p.steps_run}/{p.steps}", f"{p.final_loss:.6g}", p.stop_reason, f"{p.wall_time:.2f}", f"{p.compile_time:.2f}"))
        return text_table(rows, "<>>>>>")


def text_table(rows: list[tuple[str, ...]], align: str) -> str:
    """`rows` (the first a header) in columns two spaces apart, a rule under the header; column j
    left-aligned where `align[j]` is `<`, right-aligned where it is `>`. The results' `summary()`."""
    widths = [max(len(r[j]) for r in rows) for j in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) if a == "<" else c.rjust(w) for c, w, a in zip(r, widths, align)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _concatenated(phases, attribute: str, length) -> dict[str, np.ndarray]:
    """name -> the phases' arrays of `attribute` end to end, NaN-filled in phases without that name."""
    names = list(dict.fromkeys(k for p in phases for k in getattr(p, attribute)))
    return {k: np.concatenate([getattr(p, attribute).get(k, np.full(length(p), np.nan, p.losses.dtype)) for p in phases]) for k in names}


class RunError(RuntimeError):
    """A run stopped by a non-finite loss. `result` holds every completed phase (and the partial one)."""

    def __init__(self, message: str, result: Result, phase: P.PhasePlan, step: int, last_finite: float):
        super().__init__(message)
        self.result = result
        self.phase = phase
        self.step = step
        self.last_finite = last_finite

    @property
    def model(self):
        """The model of the last phase that completed (the initial model if none did)."""
        done = [p for p in self.result.phases if p.stop_reason != C.STOP_REASONS[C.NONFINITE]]
        return done[-1].model if done else self.result.initial_model


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM stopped the run at a chunk boundary; `.result` holds the completed phases.

    A KeyboardInterrupt, so code that handles Ctrl-C handles it; `signal` says which one came.
    """

    def __init__(self, signal: int, phase: int, step: int):
        super().__init__(f"interrupted in phase {phase} at step {step}")
        self.signal, self.phase, self.step = signal, phase, step
        self.result = None


_STOP_SIGNALS = (int(signal.SIGINT), int(signal.SIGTERM))


class stop_on_signals:
    """While a run is in progress (in the main thread), SIGINT and SIGTERM ask it to stop at the next
    chunk boundary (`Runner.stop_signal`), where the state is whole: a checkpoint can be written and
    the completed phases kept. A second SIGINT stops at once (a plain KeyboardInterrupt).

    A context manager (`with stop_on_signals(runner):`) written as a class: a generator-based one
    cost a replayed run a few microseconds more at each end."""

    def __init__(self, runner):
        self.runner = runner
        self.previous: list = []  # (signal, the handler it had)

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            # (the C module's own calls: signal.signal converts every handler to and from an enum, ~10 us a run)
            self.previous = [(s, _signal.signal(s, self._ask)) for s in _STOP_SIGNALS]
        return self

    def __exit__(self, *exc):
        for s, handler in self.previous:
            _signal.signal(s, handler)

    def _ask(self, signum, frame):
        if self.runner.stop_signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.runner.stop_signal = signum
        print(f"\nschedc: {signal.Signals(signum).name}: stopping after the current chunk (Ctrl-C again to stop now)", file=sys.stderr)


class CompileClock:
    """Counts and times XLA backend compiles while active (jax.monitoring).

    One listener, registered by the first clock and kept for the process, adds up every compile;
    a clock takes the difference between its start and its end (registering a listener of its
    own cost every phase ~10 us). As before, every compile in the process counts while a clock
    runs, whichever thread made it."""

    EVENT = "/jax/core/compile/backend_compile_duration"
    _totals = [0, 0.0]  # compiles and their seconds since the listener was registered
    _listening = False

    def __init__(self):
        self.count = 0
        self.seconds = 0.0

    @staticmethod
    def _heard(event: str, duration: float, **_):
        if event == CompileClock.EVENT:
            CompileClock._totals[0] += 1
            CompileClock._totals[1] += duration

    def __enter__(self):
        if not CompileClock._listening:
            import jax

            jax.monitoring.register_event_duration_secs_listener(CompileClock._heard)
            CompileClock._listening = True
        self._started = tuple(self._totals)
        return self

    def __exit__(self, *exc):
        self.count = self._totals[0] - self._started[0]
        self.seconds = self._totals[1] - self._started[1]


class _Progress:
    """A progress bar for the run and one per phase (rich), updated per chunk; silent when quiet or not a terminal."""

    def __init__(self, enabled: bool, total: int = 0):
        self.bar = None
        self.run_task = None
        self.done: dict = {}  # phase task -> steps done, to advance the run's bar by the difference
        self.steps_per_epoch: dict = {}  # phase task -> its steps per epoch (None: not counted in epochs)
        if enabled:
            try:
                from rich.progress import (
                    BarColumn,
                    MofNCompleteColumn,
                    Progress,
                    TextColumn,
                    TimeElapsedColumn,
                )
            except ImportError:
                return
            self.bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[epoch]}loss {task.fields[loss]}"),
                TextColumn("{task.fields[evaluation]}"),
                TimeElapsedColumn(),
                transient=False,
            )
            self.total = total

    def __enter__(self):
        if self.bar:
            self.bar.start()
            self.run_task = self.bar.add_task("run", total=self.total, loss="-", epoch="", evaluation="")
        return self

    def __exit__(self, *exc):
        if self.bar:
            self.bar.stop()

    def phase(self, description: str, total: int, steps_per_epoch: int | None = None):
        if not self.bar:
            return None
        task = self.bar.add_task(description, total=total, loss="-", epoch="", evaluation="")
        self.steps_per_epoch[task] = steps_per_epoch
        return task

    def advance(self, task, completed: int, loss: float, evaluation: str = ""):
        """Phase `task` has run `completed` steps: its loss, its epoch and the latest evaluation."""
        if self.bar is not None:
            spe = self.steps_per_epoch.get(task)
            epoch = f"epoch {-(-completed // spe)} " if spe else ""  # the epoch the last step belonged to
            self.bar.update(task, completed=completed, loss=f"{loss:.4g}", epoch=epoch, evaluation=evaluation)
            self.bar.update(self.run_task, advance=completed - self.done.get(task, 0), loss=f"{loss:.4g}", evaluation=evaluation)
            self.done[task] = completed


def applied_hyperparams(prepared: C.PreparedPhase, steps: int) -> np.ndarray:
    """[steps, scheduled hyperparameters]: the values applied at each step run, a block of steps per call.

    Functions of the step alone, recomputed here; the plateau scales, driven by the loss,
    are recorded by the chunks instead (`recorded_scales`) and logged after these columns.
    """
    program = C.hyperparams_program(prepared.signature)
    block = prepared.signature.chunk
    blocks = [np.asarray(program(np.int32(start), prepared.numbers)) for start in range(0, steps, block)]
    return np.concatenate(blocks)[:steps] if blocks else np.zeros((0, prepared.signature.n_hypers), np.float32)


def recorded_scales(stop: dict, ran: int) -> np.ndarray | None:
    """The plateau scales applied at the `ran` steps a chunk ran ([..., ran, plateaus]), or None without plateaus."""
    return np.asarray(stop["plateau_scale"])[..., :ran, :] if "plateau_scale" in stop else None


def with_scales(scheduled: np.ndarray, scales: list) -> np.ndarray:
    """The hyperparameter log: scheduled values, then the recorded plateau scales ([..., steps, columns]).

    Steps with no recorded scale (resumed mid-phase from a checkpoint that did not save the
    scales, written by an earlier schedc) are NaN.
    """
    if not scales:
        return scheduled
    recorded = np.concatenate(scales, axis=-2)
    missing = scheduled.shape[-2] - recorded.shape[-2]
    if missing > 0:
        pad = np.full(recorded.shape[:-2] + (missing, recorded.shape[-1]), np.nan, np.float32)
        recorded = np.concatenate([pad, recorded], axis=-2)
    return np.concatenate([scheduled, recorded[..., : scheduled.shape[-2], :]], axis=-1)


class Hyperparams(Mapping):
    """A phase's logged hyperparameters, name -> the value applied at each step run.

    Computed on first read (one vectorised call per block of steps): the values are functions
    of the step and the phase's numbers alone, so a run whose log nobody reads never pays for
    it. Pickles as the plain dict it computes (checkpoints store it so).
    """

    def __init__(self, prepared: C.PreparedPhase, steps: int, dtype, scales: list = (), starts: dict | None = None):
        self.prepared, self.steps, self.dtype, self.scales = prepared, steps, dtype, scales
        self.starts = starts or {}  # group label -> its optax objects' inject_hyperparams states carried in (`carry state`)
        self._values: dict[str, np.ndarray] | None = None

    def values_now(self) -> dict[str, np.ndarray]:
        """Name -> the values applied at each step run, in the loss's dtype: the fed hyperparameters,
        and those an optax object built with `inject_hyperparams` reveals (`$opt.name` for a `chain`
        member, as a named member's are `adam.b1`; `name@group` in a group)."""
        if self._values is None:
            table = with_scales(applied_hyperparams(self.prepared, self.steps), self.scales)
            logged = {name: table[:, j].astype(self.dtype) for j, name in enumerate(self.prepared.hyper_names)}
            for group in self.prepared.signature.groups:
                chained = len(group.members) > 1
                carried = list(self.starts.get(group.label, ()))
                for member in group.members:
                    if member.transform is not None:
                        count = C.injected_count(member.transform.value)
                        start, carried = carried[:count], carried[count:]
                        for name, values in C.revealed_hyperparams(member.transform.value, self.steps, start, self.prepared.signature.accumulate).items():
                            name = f"{member.name}.{name}" if chained else name
                            logged[name if not group.label else f"{name}@{group.label}"] = values.astype(self.dtype)
            self._values = logged
        return self._values

    def __getitem__(self, name: str) -> np.ndarray:
        return self.values_now()[name]

    def __iter__(self):
        return iter(self.values_now())

    def __len__(self) -> int:
        return len(self.values_now())

    def __reduce__(self):
        return (dict, (self.values_now(),))

    def __repr__(self) -> str:
        return repr(self.values_now())


class Pace:
    """How many steps the next chunk call runs.

    Every call costs a host round trip (~0.3 ms), so with no one watching
    (`steady`: quiet, no checkpoints; always across processes, which must run the
    same calls) each call runs as many steps as the chunk holds. With a progress
    bar or checkpoints, calls are sized to take about
    `TARGET` seconds: short calls first (the first one also compiles), growing
    at most 8x per call, never more than the chunk holds.
    """

    TARGET = 0.5

    def __init__(self, limit: int, steady: bool):
        self.limit = limit
        self.next = limit if steady else min(limit, 64)
        self.steady = steady
        self.started = time.perf_counter()

    def steps(self) -> int:
        self.started = time.perf_counter()
        return self.next

    def observe(self, ran: int) -> None:
        if self.steady:
            return
        elapsed = max(time.perf_counter() - self.started, 1e-6)
        self.next = max(1, min(self.limit, 8 * ran, int(ran * self.TARGET / elapsed)))


def leaf_indices(tree) -> dict[str, tuple[int, ...]]:
    """Canonical parent path -> indices of its leaves in `jax.tree_util.tree_leaves(model)`, parent first."""
    return {p.path: (p.leaf, *p.shared_leaves) for p in tree.params}


def _constrained_transforms(model) -> dict[str, Callable]:
    """Path -> backward transform of each constrained parameter node (spectracles' ConstrainedParameter).

    Such a parameter is trained in unconstrained space (its leaf is
    `unconstrained_val`), but inits are written in the constrained space the
    model exposes, as spectracles takes them: they go through the node's own
    `backward_transform`.
    """
    from schedc.plan.params import parameter_nodes, value_field

    return {
        path: node.backward_transform
        for path, node in parameter_nodes(model)
        if value_field(node) == "unconstrained_val" and callable(getattr(node, "backward_transform", None))
    }


def _batchable(phase: P.PhasePlan, data_arrays) -> bool:
    """Whether the phase's minibatches can be drawn from `data_arrays` (`check_batchable` passes)."""
    try:
        check_batchable(phase, data_arrays, [])
    except DataError:
        return False
    return True


def _has_objects(phase: P.PhasePlan) -> bool:
    """Whether some optimizer of the phase has an optax object (`optimizer $opt`) as a member."""
    specs = [phase.optimizer] + [g.optimizer for g in phase.groups if g.optimizer is not None]
    return any(m.transform is not None for spec in specs for m in spec.transforms)


def _state(state):
    """`state` when it is one (an eqx.nn.State, or any pytree of arrays), else a TypeError now, not
    JAX's "cannot interpret as an abstract array" from inside the first compiled call."""
    import jax

    odd = next((leaf for leaf in jax.tree_util.tree_leaves(state) if not isinstance(leaf, (jax.Array, np.ndarray, np.generic, bool, int, float, complex))), None)
    if odd is not None:
        raise TypeError(f"state must be an eqx.nn.State (as eqx.nn.make_with_state returns it) or a pytree of arrays, got {type(state).__name__}" + (f" holding a {type(odd).__name__}" if odd is not state else ""))
    return state


def strong_types(model):
    """The model with weakly typed arrays (`jnp.asarray(1.0)`) made strong.

    An optimizer update returns strong arrays; without this, the second phase
    would see new input types and compile again.
    """
    import jax

    if not any(map(_weak, jax.tree_util.tree_leaves(model))):  # the common case: no rebuild
        return model
    return jax.tree_util.tree_map(_strong, model)


def _weak(x) -> bool:
    return getattr(x, "weak_type", False)


def _strong(x):
    return x.astype(x.dtype) if _weak(x) else x


def phase_result(
    phase: P.PhasePlan, prepared: C.PreparedPhase, losses: np.ndarray, reason: int, wall: float, compile_time: float, compiles: int, model, scales: list = (), starts: dict | None = None
) -> PhaseResult:
    """One phase's result, as the per-phase and the fused runners both report it (`starts`: see `Hyperparams`)."""
    return PhaseResult(
        index=phase.index,
        name=phase.name,
        display=phase.label,
        steps=phase.steps,
        steps_run=len(losses),
        losses=losses,
        hyperparams=Hyperparams(prepared, len(losses), losses.dtype, scales, starts),
        stop_reason=C.STOP_REASONS[reason],
        wall_time=wall,
        compile_time=compile_time,
        compiles=compiles,
        model=model,
        steps_per_epoch=phase.steps_per_epoch,
    )


# (id(interned signature), x64) -> ((the signature,), its initial stop state on the device); emptied when full
_FRESH_STOPS: dict[tuple, tuple] = {}
_FRESH_STOPS_KEPT = 256


def _fresh_stop(signature: C.PhaseSignature, x64: bool) -> dict:
    """A phase's initial stop state, on the device once per signature and float width (`x64`, the
    `loss_change` window's: `jax_enable_x64` switched on between runs widens it). Its arrays are
    immutable; building and copying them in cost ~0.1 ms per phase. Found by the signature's
    identity (signatures are `interned`): hashing one cost ~10 us a phase."""
    import jax

    return C.kept_by_id(_FRESH_STOPS, _FRESH_STOPS_KEPT, (id(signature), x64), (signature,), lambda: jax.device_put(C.initial_stop_state(signature)))


@dataclass(frozen=True)
class ModelFacts:
    """What a run derives from its starting model alone: the model with strong types, its array
    leaves and layout, all its leaves, its constrained nodes' transforms, and the fused window."""

    model: Any
    strong: Any
    arrays: tuple
    layout: C.Layout
    leaves: list
    to_unconstrained: dict
    window: int


_LAST_FACTS: list = []  # [ModelFacts] of the last model a run began from


@dataclass(frozen=True)
class ModelArrays:
    """A model with no weakly typed array, its array leaves and its layout (`chunk.split`)."""

    model: Any
    arrays: tuple
    layout: C.Layout


class Unread(NamedTuple):
    """A phase run alone whose last chunk call is made and not yet read (`Runner.run_phase` with
    `defer`): the runner dispatches the next phase's first call before reading this one's, so
    that reading it, and the host work of the next phase's start, overlap the device's work."""

    model: Any  # the model the phase ends with: arrays the call is still computing
    finish: Callable[[], Any]  # reads the call: the phase's PhaseResult


class PhaseStart(NamedTuple):
    """A phase's beginning (`Runner.start_phase`): what its chunk loop starts from."""

    model: Any  # inits applied
    prepared: C.PreparedPhase
    compiled: C.Compiled
    chunk: Callable  # the chunk function phases run (`Runner._programs`)
    arrays: tuple  # the model's array leaves
    layout: C.Layout  # how the model is rebuilt from them
    free: dict  # free path -> its value
    opt_state: Any  # fresh, or carried from the phase before


@lru_cache(maxsize=1024)
def _device_int32(value: int):
    """`np.int32(value)` on the device, made once per value: a chunk's first step and step count
    (a host scalar passed to a jitted call is copied in at every call). Valid forever: JAX arrays
    are immutable."""
    import jax

    return jax.device_put(np.int32(value))


# (id(phase), id(parameter tree), chunk) -> ((the phase, the tree), its chunk.PreparedPhase); emptied when full
_PREPARED: dict[tuple, tuple] = {}
_PREPARED_KEPT = 4096

# (id(read-only host array), float width) -> ((the array,), its copy on the device); emptied when full
_DEVICE_COPIES: dict[tuple, tuple] = {}
_DEVICE_COPIES_KEPT = 1024


def _on_device(array: np.ndarray):
    """A phase's numbers (`PreparedPhase.numbers`, `.stop_numbers`) on the device, copied once, not
    at every chunk call. Only a read-only array is kept (a prepared phase's own, shared by every
    run of the phase: chunk._lowered): it cannot change, and the entry holds it, so its id is not
    reused while the entry lives. A writeable one (a sweep's stacked numbers) goes as it is.
    Kept per float width too: the copy is float32 without `jax_enable_x64` (switched on between
    runs, a threshold must be compared in float64)."""
    if array.flags.writeable:
        return array
    import jax

    return C.kept_by_id(_DEVICE_COPIES, _DEVICE_COPIES_KEPT, (id(array), jax.config.jax_enable_x64), (array,), lambda: jax.device_put(array))


def _model_facts(model) -> ModelFacts:
    """`ModelFacts` of `model`, kept for the last model seen: a program's model is the same object
    run after run, and deriving them (flattening, strong types, finding constrained nodes) was a
    fixed ~0.4 ms of every `Program.run`. Found again by identity: models are immutable."""
    import jax

    from schedc.compiler import segment

    if _LAST_FACTS and _LAST_FACTS[0].model is model:
        return _LAST_FACTS[0]
    strong = strong_types(model)
    arrays, layout = C.split(strong)
    leaves = jax.tree_util.tree_leaves(strong)
    window = segment.window_for(sum(getattr(x, "nbytes", 0) for x in leaves))
    facts = ModelFacts(model, strong, arrays, layout, leaves, _constrained_transforms(model), window)
    _LAST_FACTS[:] = [facts]
    return facts


@dataclass
class RunnerState:
    """What one phase hands the next, and what a checkpoint saves and restores between phases.

    `phase` is the index of the last phase run (None before the first), `signature` its
    compiled signature (its free set and optimizer groups: what `carry state` matches
    against) and `opt_state` its final optimizer state.
    """

    phase: int | None = None
    signature: C.PhaseSignature | None = None
    opt_state: Any = Deferred()  # (a `Later` after a fused segment)



class Runner:
    """Runs the phases of a Plan on a model, one at a time or all in order.

    The Python builder (managed schedules) and `Program.run` both drive this. The chunk loop
    (`_run_phase`: pacing, progress, checkpoint hooks) is the one every fit runs; a fit
    strategy supplies how a chunk is called and read: `_programs`, `_phase_evals`, `_initial_stop`, `_absorb`
    and `_phase_result` (single fits here, B datasets at once in `batch.BatchedRunner`).
    """

    # a phase run alone may be read after the next one's first call is made (`_reads_behind`)
    READS_BEHIND = True

    def __init__(
        self,
        plan: P.Plan,
        tree,
        loss_fn: Callable,
        args=(),
        kwargs=None,
        *,
        key=None,
        chunk: int | None = None,
        quiet: bool = False,
        source=None,
        evaluator=None,
        fuse: bool = True,
        state=None,
        batches: Batches | None = None,
    ):
        import jax

        self.plan = plan
        self.source = source  # a diagnostics.Source: maps phase spans into the file (a DSL string inside a .py file)
        self.loss_fn = loss_fn
        self.processes = distributed.processes()
        # an iterable of batches (runtime.stream) instead of arrays: the loss's arguments are one batch's
        # (across processes, each process's own share of every global batch)
        self.stream = Stream(batches) if batches is not None else None
        self.args, self.kwargs = loss_arguments(self.stream.first) if self.stream else (tuple(args), dict(kwargs or {}))
        self.data_arrays, self.data_layout = C.split((self.args, self.kwargs))
        self.loss_takes_key = minibatch.takes_key(loss_fn)
        self.leaves = leaf_indices(tree)
        self.leaves_source = tree  # what `leaves` was read from (fused segment plans are cached per tree)
        self.to_unconstrained: dict[str, Callable] = {}  # filled by begin(): see _constrained_transforms
        # one chunk length for every program, so phases of any length share executables
        # (a chunk is a while loop over at most `chunk` steps: a short phase costs nothing extra)
        # (streamed batches are stacked a chunk at a time: as many as fit in stream.CHUNK_BYTES)
        self.chunk = whole_number("chunk", chunk, 1) if chunk is not None else self.stream.default_chunk() if self.stream else C.DEFAULT_CHUNK
        if key is None:
            key = jax.random.key(plan.seed if plan.seed is not None else 0)
        self.key = key
        # across processes nothing may depend on one process's terminal or clock: no progress bar
        # (which would also change how phases fuse) and steady pacing, so every process runs the same calls
        self.quiet = quiet or not sys.stderr.isatty() or self.processes > 1
        # unwatched (a log file, a job's output) or across processes: a line per phase as it ends
        # instead, printed by process 0 from the phase's result (nothing of the run's pace changes)
        self.phase_lines = says_phases(quiet, self.processes)
        self.initial_leaves: list | None = None
        self.state = RunnerState()
        self.checkpoint = None  # a checkpoint.Checkpointer (restore, after_chunk, after_phase hooks), or None
        # set (to the signal number) by a SIGINT/SIGTERM handler: the run stops at the next chunk boundary
        # (decided through `stopping()`, which across processes agrees it)
        self.stop_signal: int | None = None
        self.evaluator = evaluator  # an evaluation.Evaluator (`eval` / `metrics=`), or None
        if evaluator is not None:
            evaluator.check_due(plan)
        self.fuse = fuse  # run consecutive phases as fused segments where `segment_end` allows
        self.window = 1  # phases per fused call: set by begin() from the model's size
        self.begun: ModelFacts | None = None  # set by begin(): what the run derives from its starting model
        self.built: ModelArrays | None = None  # the model the last phase run one by one ended with
        self.logger = None  # a log.RunLog (`--log DIR` / `logger=`): each phase's records, appended after it
        # an eqx.nn.State (BatchNorm statistics) the loss takes and returns: carried through every step
        # and phase (the state after the last phase run, once one has run)
        self.model_state = strong_types(_state(state)) if state is not None else None
        self.feed = None  # the running phase's feed (a stream.Feed of streamed batches, or stream.Resident), or None
        self.segment = None  # the last fused segment run (a fused.Segment): a run that was one segment can be replayed
        self.items = None  # a segment.Items when the runner fits many at once (batch.BatchedRunner), else None

    def begin(self, model) -> None:
        """Record the model before the schedule: what `init = reset` restores, and its constrained nodes."""
        facts = _model_facts(model)
        self.initial_leaves, self.to_unconstrained, self.window = facts.leaves, facts.to_unconstrained, facts.window
        self.begun = facts

    # ---- model <-> leaves

    def apply_inits(self, model, phase: P.PhasePlan):
        """`model` with the inits of `phase` applied (what the phase starts from)."""
        if not phase.inits:
            return model
        arrays, layout = C.split(model)
        return layout.rebuild(self._with_inits(phase, arrays, layout))

    def _with_inits(self, phase: P.PhasePlan, arrays: tuple, layout: C.Layout) -> tuple:
        """A model's array leaves (of `layout`) with the inits of `phase` applied."""
        if not phase.inits:
            return arrays
        new = list(arrays)
        for init in phase.inits:
            indices = self.leaves[init.path]
            value = self._init_value(phase, init, new[layout.positions[indices[0]]])
            for i in indices:
                new[layout.positions[i]] = value
        return tuple(new)

    def arrays_of(self, model) -> ModelArrays:
        """`model` with its weakly typed arrays made strong (`strong_types`), its array leaves and
        layout. The model the run began from and the one its last phase run one by one ended with
        are known without flattening them again (found by identity: models are immutable pytrees)."""
        if self.built is not None and self.built.model is model:
            return self.built
        if self.begun is not None and self.begun.model is model:
            return ModelArrays(self.begun.strong, self.begun.arrays, self.begun.layout)
        arrays, layout = C.split(model)
        if not any(map(_weak, arrays)):
            return ModelArrays(model, arrays, layout)
        strong = tuple(map(_strong, arrays))
        return ModelArrays(layout.rebuild(strong), strong, layout)

    def _built_from(self, layout: C.Layout, arrays: tuple, values: dict):
        """The model of `layout` from its `arrays` with the free `values` written at every leaf of
        their parameters (shared copies too): one unflatten, no flatten."""
        return layout.rebuild(self._arrays_with(layout, arrays, values))

    def _arrays_with(self, layout: C.Layout, arrays: tuple, values: dict) -> tuple:
        """The array leaves `arrays` of a model of `layout` with the free `values` written at every
        leaf of their parameters."""
        new = list(arrays)
        for path, value in values.items():
            for i in self.leaves[path]:
                new[layout.positions[i]] = value
        return tuple(new)

    def _init_value(self, phase: P.PhasePlan, init: P.InitSpec, current):
        """The value `init` gives a parameter now equal to `current` (whose shape and dtype it takes)."""
        if init.kind == "reset":
            return self.initial_leaves[self.leaves[init.path][0]]
        if any(isinstance(a, Bound) for a in init.args):
            import jax.numpy as jnp

            # an array bound to `$name` (the resolver checked its shape) is used as it is
            value = jnp.broadcast_to(jnp.asarray(init.args[0].value, current.dtype), current.shape)
        else:
            draw = C.init_program(init.kind, tuple(current.shape), np.dtype(current.dtype))
            value = draw(self.key, np.int32(phase.index), C.path_key(init.path), np.asarray(init.args, np.float64))
        if init.path in self.to_unconstrained:
            value = self.to_unconstrained[init.path](value)
        return value

    def _write_back(self, model, free: dict):
        arrays, layout = C.split(model)
        return self._built_from(layout, arrays, free)

    # ---- phases

    def run_phase(self, index: int, model, progress: _Progress | None = None, defer: bool = False):
        """Run phase `index` starting from `model`. An exception from the loss (tracing it, say) gets a note naming the phase.

        With `defer` (see `_reads_behind`), a phase whose last chunk call is made returns an
        `Unread` instead of its result: the call's outputs are not read yet."""
        try:
            ran = self._noted(index, lambda: self._run_phase(index, model, progress, defer))
        finally:
            self._close_feed()
        return Unread(ran.model, lambda: self._noted(index, ran.finish)) if isinstance(ran, Unread) else ran

    def _noted(self, index: int, run: Callable):
        """`run()`, an exception from it noting the phase `index`."""
        try:
            return run()
        except Exception as exc:
            exc.add_note(f"while running {self.plan.phases[index].label}" + (f", defined at {where}" if (where := self.where(self.plan.phases[index])) else ""))
            raise

    def _close_feed(self) -> None:
        """Stop the phase's batch reader; the batches it read ahead go back (a one-shot iterator loses none)."""
        if self.feed is not None:
            self.feed.close()
            self.feed = None

    def where(self, phase: P.PhasePlan) -> str | None:
        """`file:line:col` of the phase's definition (in the .py file, for a DSL string embedded in Python)."""
        if phase.span.line <= 0 or not (self.source or self.plan.source):
            return None
        if self.source is not None:
            line, column = self.source.position(phase.span.line, phase.span.column)
            return f"{self.source.name}:{line}:{column}"
        return f"{self.plan.source}:{phase.span.line}:{phase.span.column}"

    def start_phase(self, phase: P.PhasePlan, model):
        """A phase's beginning: its inits applied, its program fetched (compiled on first use),
        its free values and a fresh optimizer state (or one carried from the last phase). Public
        for the checkpoint, which rebuilds a carried optimizer state in the structure it gives.

        The model's weakly typed arrays are made strong (an optimizer update returns strong
        arrays: the second phase would otherwise compile again).
        """
        if self.stream is None and phase.batch:
            check_batchable(phase, self.examples(), array_names(self.args, self.kwargs))
        known = self.arrays_of(model)
        layout = known.layout
        inited = self._with_inits(phase, known.arrays, layout)
        model = known.model if inited is known.arrays else layout.rebuild(inited)
        prepared = self.prepare_phase(phase)
        sig = prepared.signature
        fns = C.compiled(sig, self.loss_fn, layout, self.data_layout)
        init, chunk = self._programs(fns)
        free = {path: inited[layout.positions[indices[0]]] for path, indices in sig.leaves}
        opt_state = C.fresh_opt_state(init, free, _on_device(prepared.numbers))
        if phase.carry and self.state.signature is not None:
            opt_state = C.carry_state(opt_state, self.state.opt_state, C.carried_labels(self.state.signature, sig), sig)
        return PhaseStart(model, prepared, fns, chunk, inited, layout, free, opt_state)

    def _run_phase(self, index: int, model, progress: _Progress | None = None, defer: bool = False):
        """The chunk loop: call the phase's chunk until the phase ends, pacing the calls, moving the
        progress bar and calling the checkpoint hooks; then record the state the next phase may carry.
        With `defer`, the phase's last call is read by the `Unread` returned."""
        phase = self.plan.phases[index]
        if self.initial_leaves is None:
            self.begin(model)
        started = time.perf_counter()
        with CompileClock() as clock:
            step0 = 0
            state = {}  # a checkpoint's mid-phase state when resuming (with the data position of streamed batches)
            # across processes the phase starts on every process or on none: an error on one (its metrics
            # function on its data, a checkpoint it cannot read) is held, and raised on every one by the
            # agreement the feed makes (a collective)
            with distributed.Held() as starting:
                model, prepared, fns, chunk_fn, model_arrays, layout, free, opt_state = self.start_phase(phase, model)
                numbers, stop_numbers = _on_device(prepared.numbers), _on_device(prepared.stop_numbers)
                starts = C.injected_states(opt_state, prepared.signature) if phase.carry and _has_objects(phase) else {}
                stop = self._initial_stop(prepared.signature)
                if self.model_state is not None:  # carried in the loop's state: the chunk returns it updated
                    stop["model_state"] = self.model_state
                losses = []
                scales = []  # per chunk, with plateaus: the scales applied
                evals = self._phase_evals(phase)
                aux = AuxLog()
                if self.checkpoint is not None:  # resuming mid-phase: the saved state replaces the fresh one (evals and aux in place)
                    state = self.checkpoint.restore(index, dict(model=model, free=free, opt_state=opt_state, stop=stop, losses=losses, scales=scales, step0=step0, evals=evals, aux=aux))
                    model, free, opt_state, stop, losses, scales, step0 = (state[k] for k in ("model", "free", "opt_state", "stop", "losses", "scales", "step0"))
                    model_arrays = C.split(model)[0]
                if evals.active:  # evaluated inside the chunks: the metrics function checked first, its state carried
                    evals.check_names(self._write_back(model, free), stop.get("model_state"))
                    stop["eval"] = evals.carry(free, stop.get("model_state"))
            if self.stream is not None:
                self.feed = self.stream.feed(phase, step0, self.chunk, state.get("data"), starting.problem)
            else:
                if self.processes > 1:
                    distributed.agree(starting.problem)
                self.feed = Resident(self.data_arrays)
            task = progress.phase(f"{phase.label}", phase.steps, phase.steps_per_epoch) if progress else None
            pace = Pace(self.chunk, steady=self.quiet and (self.checkpoint is None or self.processes > 1))
            # the data order's and the loss's keys (a compiled call: only for phases that use them)
            keys = minibatch.phase_keys(self.key, phase.index) if phase.batch or self.loss_takes_key else (None, None)
            exhausted = False
            evaluation = evals.arguments()
            feed = self.feed
            stops = C.stops_early(prepared.signature)

            def took(before: tuple, out: tuple, eval_log, step0: int, n_active: int):
                """Read one chunk call's outputs into the phase's history: (free, opt_state, stop, phase over?)."""
                free, opt_state, stop, chunk_losses, aux_values, finished = self._absorb(before, out, step0, n_active)
                losses.append(chunk_losses)
                done = step0 + chunk_losses.shape[-1]
                feed.done = done
                if (recorded := recorded_scales(stop, chunk_losses.shape[-1])) is not None:
                    scales.append(recorded)
                aux.add(aux_values, done, self._steps_ran(stop, step0, chunk_losses))
                if evals.active:  # the chunk's evaluations (a rule on one may have ended the phase)
                    evals.absorb(eval_log, stop)
                if progress:
                    progress.advance(task, done, last_loss(chunk_losses), evals.last())
                pace.observe(n_active)
                return free, opt_state, stop, finished

            last = None  # with `defer`: the phase's last call, read once the next phase is dispatched
            while step0 < phase.steps:
                n_active = min(phase.steps - step0, pace.steps())
                # streamed: the stacked chunk holding step0 (ends at that chunk's end)
                data, n_active = self.feed.take(step0, n_active)
                if exhausted := n_active == 0:  # a one-shot iterator ran out
                    break
                before = (free, opt_state, stop)
                *out, eval_log = chunk_fn(free, opt_state, stop, model_arrays, _device_int32(step0), _device_int32(n_active), numbers, stop_numbers, data, keys, evaluation)
                if not stops:  # a bare loop returns the reason it was given: keep that one, never read from the device again
                    out[2] = dict(out[2], reason=stop["reason"])
                if defer and step0 + n_active >= phase.steps:  # (however it ends, the phase ends with this call)
                    last = (before, tuple(out), eval_log, step0, n_active)
                    free, opt_state, stop = out[:3]
                    break
                free, opt_state, stop, finished = took(before, tuple(out), eval_log, step0, n_active)
                if finished:
                    break
                step0 += n_active
                if step0 < phase.steps:
                    state = dict(model=model, free=free, opt_state=opt_state, stop=without_carry(stop), losses=losses, scales=scales, step0=step0, evals=evals, aux=aux)
                    self._between_chunks(index, state)
        # `keep best`: the weights (and model state) of the best evaluation
        free, model_state = evals.final_weights(free, stop.get("model_state"))
        self.model_state = model_state
        ema = O.ema_of(opt_state) if prepared.signature.ema is not None else None  # (no state walk without `ema`)
        ema_model = self._built_from(layout, model_arrays, ema) if ema is not None else None
        model_arrays = self._arrays_with(layout, model_arrays, free)
        # (a weakly typed array, from an init or a chunk: the next phase makes it strong)
        strong = not any(map(_weak, model_arrays))
        # a phase read behind leaves its model unbuilt until read (its result's `model`): the next
        # phase starts from the arrays (`arrays_of`), and a run's caller reads the last model
        model = Later(partial(layout.rebuild, model_arrays)) if last is not None and strong else layout.rebuild(model_arrays)
        self.built = ModelArrays(model, model_arrays, layout) if strong else None
        self.state = RunnerState(phase.index, prepared.signature, opt_state)

        def result_of() -> PhaseResult:
            ended = took(*last)[2] if last is not None else stop
            result = self._phase_result(phase, prepared, losses, scales, ended, model, time.perf_counter() - started, clock, starts)
            result.ema_model = ema_model
            result.aux_steps, result.aux = aux.history()
            result.state = model_state
            evals.report(result)
            if exhausted and not evals.reason:
                result.stop_reason = DATA_EXHAUSTED
            return result

        return Unread(model, result_of) if last is not None else result_of()

    def _between_chunks(self, index: int, state: dict) -> None:
        """Between two chunks of phase `index` (`state`: where it stands): the checkpoint due every
        `checkpoint_every` chunks, then the stop a signal asked for (`stopping`, across processes
        agreed with that write's success: one collective a chunk), with a final checkpoint."""
        writing = distributed.Held()
        with writing:
            if written := self.checkpoint is not None and self.checkpoint.due():
                self._write_chunk(index, state)
        stop = self.stopping(writing.problem)
        if stop is None:
            return
        if self.checkpoint is not None and not written:
            # the final checkpoint: every process returns once it is on disk (a job resumed at once reads
            # it), and process 0 failing to write it stops every process with its error
            with writing:
                self._write_chunk(index, state)
            distributed.agree(writing.problem)
        raise Interrupted(stop, index, state["step0"])

    def _write_chunk(self, index: int, state: dict) -> None:
        # (the data position is asked for only when a checkpoint is written: across processes it is gathered)
        self.checkpoint.after_chunk(self, index, dict(state, data=self.feed.position(state["step0"])))

    def stopping(self, problem: Exception | None = None) -> int | None:
        """The signal (SIGINT, SIGTERM) that stops the run here, at a chunk's or phase's end, or None.

        Across processes a collective (`distributed.agree`, which also raises a `problem` one process
        held on every process): a signal that reached any process stops every one here, at the same
        step. Every decision to stop reads this, never `stop_signal` itself: a signal arriving
        between two reads would stop one process and not the others."""
        if self.processes == 1:
            return self.stop_signal
        signals = distributed.agree(problem, [self.stop_signal or 0])[:, 0]
        return next((int(s) for s in signals if s), None)

    def _prepare(self, phase: P.PhasePlan) -> C.PreparedPhase:
        """The phase's signature and runtime numbers (a sweep stacks every setting's numbers).

        Kept per phase, parameter tree and chunk length (by identity: a Program keeps its Plan's
        phases and its tree, so its later runs find them): preparing costs ~15-40 us per phase
        (hashing the phase for the lowering's cache, two dataclass copies). Valid because the
        phase and the tree are immutable, `self.leaves` is read from the tree alone, and the entry
        holds both, so their ids are not reused while it lives."""
        key = (id(phase), id(self.leaves_source), self.chunk)
        return C.kept_by_id(_PREPARED, _PREPARED_KEPT, key, (phase, self.leaves_source), lambda: C.prepare(phase, self.leaves, self.chunk))

    def prepare_phase(self, phase: P.PhasePlan) -> C.PreparedPhase:
        """`_prepare`, with where the data comes from in the signature: streamed batches (stacked per
        chunk, not drawn on the device), or minibatches sharded as the data is; and the phase's
        evaluation (compiler.evaluate) when the run evaluates it. The phase-by-phase and the fused
        runner both prepare phases so (their programs must agree)."""
        prepared = self._prepare(phase)
        signature = prepared.signature
        if (evaluation := self.evaluator.lowered(phase) if self.evaluator is not None else None) is not None:
            signature = replace(signature, evaluation=evaluation)
        if self.stream is not None:  # (sharded as `Batches(sharding=)` places them, if it does)
            shardings = tuple(self.stream.row_shardings) if self.stream.row_shardings else None
            signature = replace(signature, batch=0, stream=True, batch_sharding=shardings)
        elif phase.batch:  # data sharded over a mesh's axis: every minibatch is sharded the same way
            signature = replace(signature, batch_sharding=minibatch.row_shardings(self.data_arrays))
        # (interned, as `C.prepare`'s: the program lookups compare the signatures by identity)
        return prepared if signature is prepared.signature else replace(prepared, signature=C.interned(signature))

    # ---- the single-fit strategy (batch.BatchedRunner overrides these)

    def _programs(self, fns: C.Compiled) -> tuple[Callable, Callable]:
        """The (init, chunk) functions phases run."""
        return fns.init, fns.chunk

    def _phase_evals(self, phase: P.PhasePlan) -> PhaseEvals:
        """What the host keeps of the phase's evaluations (one history; batched: one per item)."""
        return PhaseEvals(phase, self.evaluator)

    def _initial_stop(self, signature: C.PhaseSignature) -> dict:
        import jax

        return dict(_fresh_stop(signature, jax.config.jax_enable_x64))

    def _absorb(self, before: tuple, out: tuple, step0: int, n_active: int):
        """Read one chunk call's outputs: (free, opt_state, stop, the losses of the steps run, the
        aux metrics per step, phase over?).

        A non-finite loss ends the phase (and the run) at its step; the stop state then says so.
        Only what the host needs is read from the device (each read may wait on a worker thread:
        docs/performance.md): a bare loop's losses alone (`_run_phase` gives it back the reason
        it was called with, whose host copy jax keeps).
        """
        free, opt_state, stop, chunk_losses, aux_values = out
        reason = int(np.asarray(stop["reason"]))
        # a chunk that did not stop ran all its `n_active` steps: the steps done are read only when it stopped
        done = step0 + n_active if reason == C.COMPLETED else int(np.asarray(stop["done"]))
        # sliced on the host: a device slice would compile once per length
        chunk_losses = np.asarray(chunk_losses)[: done - step0]
        bad = C.first_nonfinite(chunk_losses)
        if bad is not None:
            chunk_losses, reason = chunk_losses[: bad + 1], C.NONFINITE
            stop = dict(stop, reason=np.int32(reason))
        return free, opt_state, stop, chunk_losses, aux_values, reason != C.COMPLETED

    def _steps_ran(self, stop: dict, step0: int, chunk_losses: np.ndarray):
        """The steps a chunk from phase step `step0` ran (batched: per item), after `_absorb`."""
        return chunk_losses.shape[-1]

    def _phase_result(self, phase: P.PhasePlan, prepared: C.PreparedPhase, losses: list, scales: list, stop: dict, model, wall: float, clock: CompileClock, starts: dict):
        loss_arr = np.concatenate(losses) if losses else np.zeros(0, np.float32)
        # (np.asarray: `_absorb` read this array already; `int()` of a device array would read it again)
        return phase_result(phase, prepared, loss_arr, int(np.asarray(stop["reason"])), wall, clock.seconds, clock.count, model, scales, starts)

    def _new_result(self, model) -> Result:
        return Result(initial_model=model, initial_state=self.model_state)

    def _after_phase(self, result: Result, phase_result: PhaseResult) -> None:
        """A non-finite loss ends a single fit: RunError, holding every phase so far."""
        if phase_result.stop_reason == C.STOP_REASONS[C.NONFINITE]:
            raise self.nonfinite_error(result, self.plan.phases[phase_result.index], phase_result)

    # ---- the whole schedule

    def run(self, model, start: int = 0, result=None):
        """Every phase in order from `start` (appended to `result`, when resuming). A non-finite loss raises RunError holding the partial Result."""
        from schedc.runtime.fused import NotFused, run_segment

        result = result if result is not None else self._new_result(model)
        if self.initial_leaves is None:
            self.begin(model)
        if self.stream is not None and result.phases:  # resumed: a one-shot iterator skips what the completed phases ran
            with distributed.Held() as skipping:
                self.stream.reader.skip_to(sum(p.steps_run for p in result.phases))
            distributed.agree(skipping.problem)
        try:
            with stop_on_signals(self), _Progress(not self.quiet, sum(p.steps for p in self.plan.phases[start:])) as progress:
                index = start
                failed = None  # (NotFused, start, end) of a segment whose program failed: warned once its phases ran alone
                pending = None  # an Unread phase (`_reads_behind`): recorded after the next phase's call is made
                while index < len(self.plan.phases):
                    end = self.segment_end(index)
                    if self.processes > 1:  # (an evaluation's check may fail on one process only: `_evaluable`)
                        end = int(distributed.gather_ints([end]).min())
                    try:
                        phase_results = run_segment(self, index, end, model, progress if progress.bar else None) if end - index > 1 else None
                    except NotFused as reason:  # one by one: an error names its phase, a failing callback keeps the phases before
                        # (the loss is the same for every phase; a failed program, likely every segment's)
                        self.fuse = self.fuse and not reason.loss and reason.failure is None
                        failed = (reason, index, end) if reason.failure is not None else failed
                        phase_results = None
                    if phase_results is None:
                        try:
                            ran = self.run_phase(index, model, progress, defer=self._reads_behind(index, progress))
                        finally:  # the phase before, read now (its failure, if it failed, is the run's)
                            behind, pending = pending, None
                            if behind is not None and (stop := self._record(result, [behind.finish()])) is not None:
                                raise Interrupted(stop, index, 0)
                        if isinstance(ran, Unread):
                            pending, model, index = ran, ran.model, index + 1
                            continue
                        phase_results = [ran]
                    stop = self._record(result, phase_results)
                    if phase_results:  # (none: a fused segment stopped by a signal in its first phase)
                        model = phase_results[-1].model  # (a fused segment's other models stay unread on the device)
                    index += len(phase_results)
                    if failed is not None and index >= failed[2]:
                        failed[0].warn(self.plan.phases[failed[1] : failed[2]])
                        failed = None
                    if stop is not None and index < len(self.plan.phases):
                        raise Interrupted(stop, index, 0)
        except BaseException as exc:
            # whatever stops the run (Ctrl-C, an error in the loss), the phases completed so far
            # stay reachable: `exc.result` (a RunError already carries its own)
            if not isinstance(exc, RunError):
                exc.result = result
            raise
        return result

    def _record(self, result: Result, phase_results: list):
        """Append finished phases to `result`, each logged, checked (`_after_phase`: a non-finite
        loss raises) and checkpointed; then the signal that stops the run here, or None."""
        ending = distributed.Held()  # process 0's writes may fail on it alone: raised on every process by `stopping`
        for phase_result in phase_results:
            result.phases.append(phase_result)
            with ending:
                if self.logger is not None and distributed.is_writer():
                    self.logger.phase(phase_result)
            if self.phase_lines and distributed.is_writer():
                announce(phase_result)
            self._after_phase(result, phase_result)
            with ending:
                if self.checkpoint is not None:
                    self.checkpoint.after_phase(self, result)
        return self.stopping(ending.problem)

    def _reads_behind(self, index: int, progress: _Progress) -> bool:
        """Whether phase `index`, run alone, is read after the next phase's first chunk call is
        made (`Unread`): ~150 us less per phase boundary on 2 cores (docs/performance.md).
        Only where nothing between the two needs the phase's numbers on the host: a single fit
        (batched: its stopped items), no checkpoint (written after the phase), no streamed
        batches (fed per chunk), one process (agreements), no evaluation (`keep best` restores
        the best weights), no progress bar; and the next phase also runs alone. A phase that
        fails is still the run's last: the next one's call is dropped unread."""
        return (
            self.READS_BEHIND
            and self.checkpoint is None
            and self.stream is None
            and self.processes == 1
            and self.evaluator is None
            and not progress.bar
            and index + 1 < len(self.plan.phases)
            and self.segment_end(index + 1) == index + 2
        )

    def segment_plans(self) -> list:
        """The Plans whose numbers fill a fused segment's table: this run's (a sweep: every setting's)."""
        return [self.plan]

    def examples(self) -> tuple:
        """The data arrays one fit draws its minibatches from (a batched fit's: one dataset's shapes)."""
        return self.data_arrays

    def stopped_items(self):
        """With items, those a non-finite loss stopped (they sit out the rest of the run); else None."""
        return None

    def segment_end(self, start: int) -> int:
        """The end (exclusive) of the fused segment beginning at phase `start`.

        Phases fuse when nothing must happen on the host between them and the segment program
        can run them: no checkpoint to write (a checkpointed run goes phase by phase), no
        streamed batches (the host feeds their chunks between calls), no evaluation in a fit of
        many items (a batched fit's or a sweep's segment branches carry no metrics function),
        no evaluation that fails its checks (`_evaluable`: the phase runs alone, where its
        EvalError names it), and no init through a constrained parameter's transform (a Python
        function of the model's node, applied on the host); the table in docs/runtime.md lists
        every cut. An evaluation does not cut a single fit's segment: its branches carry the
        metrics function, the validation data and each phase's rule state (compiler.segment),
        as a phase's chunk does. A progress bar does not cut: it moves after each of the
        segment's (paced) calls. A segment holds at most `window` phases (fewer for a large
        model: see segment.window_for).
        """
        if not (self.fuse and self.checkpoint is None and self.stream is None) or self.window < 2:
            return start + 1
        if self.evaluator is not None and self.items is not None:
            return start + 1
        end = start
        while end < len(self.plan.phases) and end - start < self.window and self._fusable(self.plan.phases[end]):
            end += 1
        return max(end, start + 1)

    def _fusable(self, phase: P.PhasePlan) -> bool:
        """No init through a constrained transform or of an array bound to a placeholder; no optax
        object whose state `carry state` continues (its logged hyperparameters go on from its
        schedules' states as the phase starts, read on the host); minibatches that can be drawn
        (else the phase runs alone, where its DataError names it); an evaluation that passes its
        checks (`_evaluable`)."""
        if phase.carry and _has_objects(phase):
            return False
        if not _batchable(phase, self.examples()) or not self._evaluable(phase):
            return False
        return all(
            init.kind == "reset" or (init.path not in self.to_unconstrained and not any(isinstance(a, Bound) for a in init.args)) for init in phase.inits
        )

    def _evaluable(self, phase: P.PhasePlan) -> bool:
        """Whether the phase's evaluation passes the checks a phase run alone makes before it trains
        (rules on metrics need an evaluation that happens, and names the metrics function returns:
        traced, once per model structure): else it runs alone, where its EvalError names it after
        the phases before it ran."""
        try:
            evals = PhaseEvals(phase, self.evaluator)
            if evals.active:
                evals.check_names(self.begun.strong, self.model_state)
        except EvalError:
            return False
        return True

    def nonfinite_error(self, result: Result, phase: P.PhasePlan, phase_result: PhaseResult) -> RunError:
        """The RunError of a phase that met a non-finite loss (its last step); `result` ends with that phase."""
        step = phase_result.steps_run - 1
        finite = phase_result.losses[np.isfinite(phase_result.losses)]
        last = float(finite[-1]) if len(finite) else float("nan")
        message = (
            f"non-finite loss ({phase_result.losses[-1]}) in {phase.label} at step {step}; "
            f"last finite loss {last:.6g}" + (" at step %d" % (step - 1) if len(finite) else "")
            + f"; the {len(result.phases) - 1} completed phase(s) are in .result"
        )
        error = RunError(message, result, phase, step, last)
        where = self.where(phase)
        if where:
            error.add_note(f"phase defined at {where}")
        return error


class AuxLog:
    """The loss's aux metrics: the mean of each over each chunk's steps.

    Both runners log them per step on the device (beside the losses) and take the means here, in
    one way: summed one step after another from zero in float32, over the steps kept. A phase
    run on its own takes them over each chunk it calls (`add`); a fused segment's calls are not
    a phase's chunks, so it takes them over the chunks a quiet phase-by-phase run calls
    (`add_per_step`: blocks of `chunk` steps, the last ending where the phase did). So both
    report the same numbers (a watched phase-by-phase run's calls are paced: its chunks differ)."""

    def __init__(self):
        self.means: list[dict] = []
        self.steps: list[int] = []

    def add(self, values: dict, done: int, ran) -> None:
        """One chunk that ended at phase step `done`: the first `ran` of each metric's per-step `values`
        ([..., steps]). A batched run has one row per item and `ran` per item: each item's mean is
        over the steps it ran (as its single fit's is), NaN when it ran none."""
        import jax

        if values and np.max(ran):
            self.means.append({name: _mean(np.asarray(v), ran) for name, v in jax.device_get(values).items()})
            self.steps.append(done)

    def add_per_step(self, values: dict[str, np.ndarray], steps, chunk: int) -> None:
        """The chunks of `chunk` steps of a phase's first `steps` steps (per item, batched: the chunks
        are the longest item's), from its per-step `values`."""
        longest = int(np.max(steps))
        for start in range(0, longest, chunk):
            end = min(start + chunk, longest)
            self.add({name: v[..., start:end] for name, v in values.items()}, end, np.clip(steps - start, 0, end - start))

    def snapshot(self) -> tuple[dict, dict[str, np.ndarray]]:
        """What a mid-phase checkpoint keeps: (the steps and names as JSON, the means as arrays)."""
        names = list(self.means[0]) if self.means else []
        return {"steps": self.steps, "names": names}, {name: np.stack([m[name] for m in self.means]) for name in names}

    def resume(self, record: dict, arrays: dict[str, np.ndarray]) -> None:
        self.steps = [int(s) for s in record["steps"]]
        self.means = [{name: arrays[name][i] for name in record["names"]} for i in range(len(self.steps))]

    def history(self) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        names = self.means[0] if self.means else {}
        return np.asarray(self.steps, np.int64), {name: np.stack([m[name] for m in self.means]).astype(np.float32) for name in names}


def _mean(values: np.ndarray, ran) -> np.ndarray:
    """The mean of the first `ran` of `values` along the last axis (`ran` per row: [rows, steps])."""
    if not np.ndim(ran):
        ran = int(ran)  # (a Python int: a float32 sum divided stays float32)
        return _sequential_sum(values[..., :ran]) / ran
    width = int(np.max(ran))
    # a row's steps past its own hold -0.0, which leaves a float sum exactly as it is (+0.0 would
    # turn a sum of -0.0 into +0.0): its sum is the one of its own steps alone
    kept = np.where(np.arange(width) < ran[:, None], values[..., :width], np.float32(-0.0))
    with np.errstate(invalid="ignore"):  # (a row that ran no step: 0 / 0, NaN)
        return _sequential_sum(kept) / ran.astype(np.float32)


def _sequential_sum(values: np.ndarray) -> np.ndarray:
    """The float32 sum along the last axis, one value after another from zero (numpy's `sum` pairs
    values up: its rounding would depend on the block's length differently)."""
    zero = np.zeros(values.shape[:-1] + (1,), np.float32)
    return np.cumsum(np.concatenate([zero, values.astype(np.float32)], axis=-1), axis=-1, dtype=np.float32)[..., -1]


def whole_number(name: str, value, least: int) -> int:
    """`value` as an int when it is a whole number >= `least` (a Python or numpy int, not a bool);
    else ValueError naming the keyword `name`."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)) and value >= least:
        return int(value)
    raise ValueError(f"{name} must be a whole number >= {least}, got {value!r}")


def last_loss(chunk_losses: np.ndarray) -> float:
    """The loss the progress bar shows: the last one run (the mean over datasets, batched)."""
    if not chunk_losses.shape[-1]:
        return float("nan")
    last = chunk_losses[..., -1]
    return float(last) if not last.ndim else mean_over_items(last)
