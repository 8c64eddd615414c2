"""The Python entry point: `schedc.compile(text_or_path, model)` -> `Program`.

Parse, check (model-free), discover the model's parameters and resolve the
schedule into a `Plan`; every problem found on the way is raised at once as a
`SchedError` whose `str()` is what `schedc check` prints. JAX is imported only
when a model is discovered or a key made, never at `import schedc`.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from schedc.lang.diagnostics import SchedError, Source
from schedc.plan.resolve import DataSize, PhasePlan, Plan

# runs kept for replay per Program (by loss function and chunk length)
_REPLAYS_KEPT = 4


@dataclass(repr=False)  # (the Plan and model in full would fill a notebook cell: `program.plan` has them)
class Program:
    """A schedule resolved against a model.

    `phases[i]` is the i-th phase's `PhasePlan` (`.name`, `.steps`, `.free` (canonical
    paths), `.inits`, `.groups`, `.lr`, ...); `plan` the whole Plan, `model` the model
    it was compiled for, `tree` its `params.ParamTree`, `key` the root PRNG key of
    random inits (the given key, else `jax.random.key(seed)` from the `seed`
    directive, else `jax.random.key(0)`); `warnings` the warnings found.
    """

    plan: Plan
    model: object
    tree: object
    key: object = None
    warnings: tuple = ()  # the warnings found (Diagnostic objects); errors raise instead
    source: Source | None = field(default=None, repr=False)
    placeholders: dict = field(default_factory=dict, repr=False)  # the `$name` values it was compiled with, as syntax nodes
    # `data -> Plan` for a file that counts in epochs: resolved again once the data's size is known
    per_data: object = field(default=None, repr=False)
    # the model state (an eqx.nn.State: BatchNorm statistics) when the model came as `(model, state)`:
    # what `run` starts from unless given `state=`
    state: object = field(default=None, repr=False)
    _plans: dict = field(default_factory=dict, init=False, repr=False, compare=False)  # plan_for's, by (data size, eval_every)
    _replays: dict = field(default_factory=dict, init=False, repr=False, compare=False)  # (loss, chunk) -> runtime.fused.Replay

    def __repr__(self) -> str:
        plan = self.plan
        steps = sum(p.steps for p in plan.phases) if all(p.epochs is None for p in plan.phases) else None  # (epochs: known with the data)
        model = "None" if self.model is None else type(self.model).__name__
        fields = [repr(plan.source), f"phases={len(plan.phases)}", *([f"steps={steps}"] if steps is not None else []), f"parameters={len(plan.parameters)}", f"model={model}"]
        if self.warnings:
            fields.append(f"warnings={[d.code for d in self.warnings]}")
        return f"Program({', '.join(fields)})"

    def plan_for(self, args=(), kwargs=None, eval_every=None, batches=None) -> Plan:
        """The Plan for this training data: epochs in steps (`N epochs` counts examples // batch steps
        each, or the batches of one pass over `batches`, an iterable of batches); `eval_every`
        (steps, or "epoch") overrides the `eval` directive's interval.

        The same data size and interval give the same Plan object, so what the runtime caches
        per plan (a fused segment's table, say) is found again by the next run."""
        from schedc.compiler.chunk import split
        from schedc.runtime.data import data_size
        from schedc.runtime.stream import check_epochs

        if batches is not None:
            per_epoch = check_epochs(batches, self.per_data, eval_every)  # (across processes, the shortest process's pass)
            size = DataSize(batches=per_epoch) if per_epoch else None
        else:
            size = data_size(split((tuple(args), dict(kwargs or {})))[0])
        check_eval_every(eval_every)
        key = (size, eval_every)
        if key not in self._plans:
            self._plans[key] = self._plan_for(size, eval_every)
        return self._plans[key]

    def _plan_for(self, size, eval_every) -> Plan:
        from dataclasses import replace

        plan = self.plan
        if size is not None and (self.per_data is not None or size.batches or any(p.batch for p in plan.phases)):
            # epochs in steps; the steps per epoch of every phase known (the progress bar shows epochs)
            plan = self._in_steps(size)
            plan = replace(plan, phases=tuple(replace(p, steps_per_epoch=size.steps_per_epoch(p.batch) if p.batch or size.batches else p.steps_per_epoch) for p in plan.phases))
        return evaluated_every(plan, eval_every)

    def _in_steps(self, size) -> Plan:
        """The Plan with every duration in epochs in steps of this data; a duration that does not
        fit its span once in steps is a SchedError in the file, naming the phase, before anything runs."""
        if self.per_data is None:
            return self.plan
        from schedc.compiler.chunk import check_lowering

        phase = None
        try:
            plan = self.per_data(size)
            for phase in plan.phases:
                check_lowering(phase)
        except SchedError as err:
            name = self.source.name if self.source is not None else "<input>"
            located = SchedError([d if d.file else d.in_file(name) for d in err.diagnostics], {**err.sources, **({name: self.source} if self.source else {})})
            if phase is not None:
                located.add_note(f"in {phase.label}, counted in steps of this data")
            located.add_note(_epoch_lengths(size, self.plan))
            raise located from None
        return plan

    @property
    def phases(self) -> tuple[PhasePlan, ...]:
        return self.plan.phases

    def runner(self, loss_fn, *args, chunk: int | None = None, quiet: bool = False, validation=(), metrics=None, eval_every=None, fuse: bool = True, state=None, batches=None, **kwargs):
        """A `runner.Runner` for this program: runs phases one at a time (the managed API uses it)."""
        from schedc.runtime.evaluation import Evaluator
        from schedc.runtime.runner import Runner
        from schedc.runtime.stream import Batches

        if self.model is None:
            raise TypeError("this program has no model: pass one to schedc.compile, or add a `model` directive")
        if batches is not None and (args or kwargs):
            raise TypeError("give the data as arrays (positional and keyword arguments) or as `batches=` (an iterable of batches), not both")
        if batches is not None and not isinstance(batches, Batches):
            batches = Batches(batches)
        evaluator = Evaluator(metrics, validation_arguments(validation)) if metrics is not None else None
        plan = self.plan_for(args, kwargs, eval_every, batches)
        state = self.state if state is None else state
        return Runner(plan, self.tree, loss_fn, args, kwargs, key=self.key, chunk=chunk, quiet=quiet, source=self.source, evaluator=evaluator, fuse=fuse, state=state, batches=batches)

    def run(
        self,
        loss_fn,
        *args,
        chunk: int | None = None,
        quiet: bool = False,
        checkpoint=None,
        checkpoint_every: int = 10,
        validation=(),
        metrics=None,
        eval_every=None,
        logger=None,
        fuse: bool = True,
        state=None,
        batches=None,
        **kwargs,
    ):
        """Fit: every phase in order. `loss_fn(model, *args, **kwargs)` returns a scalar, or
        `(loss, {name: scalar})` (aux metrics, logged per chunk); with a `key` parameter it gets a
        per-step PRNG key. With `batch N` in the schedule, every array in `args`/`kwargs` is split
        into minibatches along its leading axis. Instead of arrays, `batches=` takes any iterable
        of batches (a generator, a list, a grain DataLoader, a `schedc.Batches(source,
        per_epoch=N)`): each batch a tuple (positional), a dict (keyword) or one array, read and
        sent to the device by a background thread while the previous chunk runs (docs/data.md);
        `schedc.Batches(source, sharding=NamedSharding(mesh, PartitionSpec("data")))` shards
        every batch over a mesh (data parallel); across processes (`jax.distributed`) each process
        passes its own share of every batch (docs/scale.md).

        Returns a `runner.Result` (`.model`, `.models`, `.loss_history`, `.phase_losses`,
        `.hyperparams`, `.stop_reasons`, `.phases`, `.metrics`, `.eval_steps`, `.aux`). A non-finite
        loss raises `runner.RunError`, whose `.result` keeps every completed phase. These keywords are
        not passed to the loss: `chunk` (steps per compiled call), `quiet` (no progress bar),
        `checkpoint=DIR` (write checkpoints there after every phase and every `checkpoint_every`
        chunks, and resume from the one found: schedc.runtime.checkpoint), `metrics`
        (`metrics(model, *validation) -> {name: scalar}`, read by rules as `val.NAME`),
        `validation` (a tuple of its arguments), `eval_every` (steps, or "epoch"; default: the
        `eval` directive's interval; metrics with neither raise `EvalError`) and `logger` (a `schedc.runtime.log.RunLog(folder)`: the
        losses, hyperparameters, aux metrics and evaluations appended after every phase).
        `state` (an `eqx.nn.State`, as `eqx.nn.make_with_state` returns it: BatchNorm statistics;
        by default the program's own, `Program.state`, when its model came as `(model, state)`)
        makes the loss stateful, as in equinox: `loss_fn(model, state, *args)` returns
        `(loss, state)` or `(loss, (state, aux))`; the state is carried through every step and
        phase, checkpointed, passed to the metrics function (`metrics(model, state, *validation)`)
        and returned (`Result.state`, `.phases[k].state`).
        Consecutive phases run fused into one compiled program where nothing must happen on the
        host between them (docs/runtime.md, "Fused segments"); `fuse=False` runs them one by one
        (same results).
        """
        if logger is not None and not callable(getattr(logger, "phase", None)):  # (said now, not after the first phase ran)
            raise TypeError(f"logger must be a schedc.runtime.log.RunLog(folder), or any object with a phase(result) method, got {type(logger).__name__}")
        if checkpoint is not None and not isinstance(checkpoint, (str, os.PathLike)):
            raise TypeError(f"checkpoint must be a folder (a str or a path), got {type(checkpoint).__name__}")
        state = self.state if state is None else state
        plain = checkpoint is None and logger is None and metrics is None and validation == () and eval_every is None and state is None and batches is None and fuse
        if plain and (replayed := self._replay(loss_fn, args, kwargs, chunk, quiet)) is not None:
            from schedc.runtime.runner import announce, says_phases

            if says_phases(quiet):  # (the replay skips the runner, which says them)
                for phase_result in replayed.phases:
                    announce(phase_result)
            return replayed
        runner = self.runner(loss_fn, *args, chunk=chunk, quiet=quiet, validation=validation, metrics=metrics, eval_every=eval_every, fuse=fuse, state=state, batches=batches, **kwargs)
        runner.logger = logger
        if checkpoint is None:
            result = runner.run(self.model)
            if plain:
                self._keep_replay(loss_fn, chunk, runner, args, kwargs, result)
            return result
        from schedc.runtime import checkpoint as ckpt

        return ckpt.run(self, runner, checkpoint, checkpoint_every)

    def _replay(self, loss_fn, args: tuple, kwargs: dict, chunk, quiet: bool):
        """The run replayed (runtime.fused.Replay) when an earlier run of this loss was one fused
        segment and nothing it derived has changed; else None."""
        replay = self._replays.get((loss_fn, chunk))
        if replay is None or (not quiet and sys.stderr.isatty()):  # a progress bar: the runner draws it
            return None
        data_arrays = replay.data_arrays(self, args, kwargs)
        if data_arrays is None:
            return None
        return replay.run(data_arrays, lambda: self.runner(loss_fn, *args, chunk=chunk, quiet=True, **kwargs))

    def _keep_replay(self, loss_fn, chunk, runner, args: tuple, kwargs: dict, result) -> None:
        from schedc.runtime.fused import Replay

        replay = Replay.of(runner, self, args, kwargs, result)
        key = (loss_fn, chunk)
        self._replays.pop(key, None)
        if replay is not None:
            self._replays[key] = replay
            while len(self._replays) > _REPLAYS_KEPT:
                self._replays.pop(next(iter(self._replays)))

    def sweep(self, **grid):
        """N settings of this program's `$placeholders` and `let`s, to fit at once: `name=[values]`.

        Setting i takes the i-th value of every list (the lists are zipped, so they have one
        length). Settings that differ only in numbers share one compiled program per fused
        segment (vmapped over the settings; data shared), as a single run of the program does. Returns a `surface.sweep.Sweep`;
        `.run(loss_fn, *args, **kwargs)` fits it (a `runtime.sweep.SweepResult`: per-setting
        histories, `.summary()`, `.best()`). Raises `SchedError` (a ValueError) for a bad grid
        (E0701-E0703, located in the keywords rendered as `NAME=[V1, V2]`) and for a setting the
        checks refuse; `SweepError` (a ValueError) for a program a sweep cannot run.
        """
        from schedc.surface.sweep import from_grid, sweep

        return sweep(self, from_grid(grid))

    def run_batched(self, loss_fn, *args, batched_model: bool = False, chunk: int | None = None, quiet: bool = False, fuse: bool = True, validation=(), metrics=None, eval_every=None, **kwargs):
        """Fit B independent datasets at once: every array in `args`/`kwargs` has a leading axis of B.

        Consecutive phases run as one fused segment program vmapped over the datasets, as a
        single run fuses them (`fuse=False`: one vmapped program per phase signature, phase by
        phase; the same results); stop rules act per dataset; a non-finite loss stops only its
        dataset. `chunk` and `quiet` are `run`'s (the progress bar shows the mean loss over the
        datasets still running). The model is repeated B times, or, with `batched_model=True`, already has the
        leading axis (one model per dataset). `metrics`, `validation` and `eval_every` evaluate
        as `run` does, each dataset on its own validation data (every array of `validation` has
        the leading axis of B too), with the rules on metrics, `keep best` and plateaus per
        dataset. Returns a `batch.BatchedResult` (`.model`, `.models` batched; `.phase_losses[k]`
        of shape (B, steps), NaN past a dataset's stop; `.dataset(i)`, with its `.metrics`).
        """
        from schedc.runtime.batch import run_batched

        return run_batched(self, loss_fn, args, kwargs, batched_model=batched_model, chunk=chunk, quiet=quiet, fuse=fuse, metrics=metrics, validation=validation_arguments(validation), eval_every=eval_every)


def validation_arguments(validation) -> tuple:
    """`validation=` as the metrics function's arguments after the model: a tuple of them, or one alone."""
    return validation if isinstance(validation, tuple) else (validation,)


def check_eval_every(eval_every) -> None:
    """ValueError unless `eval_every` is None, a number of steps >= 1 or "epoch"."""
    if eval_every is not None and eval_every != "epoch" and not (isinstance(eval_every, int) and eval_every >= 1):
        raise ValueError(f"eval_every must be a number of steps >= 1 or \"epoch\", got {eval_every!r}")


def evaluated_every(plan: Plan, eval_every) -> Plan:
    """`plan` evaluating every `eval_every` steps (or "epoch": its steps per epoch) instead of its
    `eval` directive's interval; `plan` itself when None."""
    from dataclasses import replace

    if eval_every is None:
        return plan
    phases = tuple(replace(p, eval_every=(p.steps_per_epoch or 1) if eval_every == "epoch" else eval_every) for p in plan.phases)
    return replace(plan, phases=phases)


def _read(text_or_path) -> tuple[str | bytes, str, Path, Source | None]:
    """(text or bytes, name, base_dir, source): a path when it is a PathLike or a one-line str ending
    in `.sched` (its bytes, which the driver decodes as `schedc check` does, so `run` and `check`
    agree on every file), else DSL text. A path that names no file is a FileNotFoundError: no DSL
    text ends in `.sched`, and parsing a misspelt path said "unexpected `fit.sched`"."""
    if isinstance(text_or_path, os.PathLike) or (isinstance(text_or_path, str) and text_or_path.endswith(".sched") and "\n" not in text_or_path):
        path = Path(text_or_path)
        if path.is_file():
            return path.read_bytes(), str(path), path.parent, None
        raise FileNotFoundError(f"no such .sched file: {path}" + (" (it is a folder)" if path.is_dir() else ""))
    if not isinstance(text_or_path, str):
        raise TypeError(f"schedc.compile takes DSL text or a path to a .sched file, got {type(text_or_path).__name__}")
    from schedc.surface.embed import embedded_source

    text = text_or_path
    source = embedded_source(text)
    return text, source.name, Path(source.name).parent if source.name != "<string>" else Path.cwd(), source


def compile(text_or_path, model=None, key=None, **placeholders) -> Program:
    """Parse, check and resolve a schedule against `model`.

    Args:
        text_or_path: DSL text, or a path (str or PathLike) to an existing `.sched` file.
        model: the model (an equinox Module or any pytree), or `(model, state)` with an
            `eqx.nn.State` (as `eqx.nn.make_with_state` returns them: `Program.state`); a
            `"file.py:factory"` / `"module:factory"` reference (the factory returns either); or
            None to build the one the file's `model` directive names (with no directive either,
            the program is model-free: its "parameters" are the file's pattern texts, each
            matching only itself).
        key: the root PRNG key of random inits (a JAX key or an int seed).
        **placeholders: values of `$name` placeholders in the text.

    Raises:
        SchedError: with every diagnostic (syntax, model-free checks, model checks),
            when any of them is an error.

    Warns:
        SchedWarning: for each warning (they are also `Program.warnings`).
    """
    text, name, base_dir, source = _read(text_or_path)
    program = compile_text(text, name, base_dir, source, model, key, placeholders)
    if program.warnings:
        import warnings

        from schedc.lang.diagnostics import SchedWarning

        sources = {program.source.name: program.source} if program.source is not None else {}
        for diagnostic in program.warnings:
            warnings.warn(SchedWarning.of(diagnostic, sources), stacklevel=2)
    return program


def compile_text(text: str | bytes, name: str, base_dir: Path, source: Source | None, model, key, placeholders: dict) -> Program:
    """`compile` once the text and where it came from are known."""
    from schedc.pipeline import FROM_DIRECTIVE, analyse

    return program_of(analyse(text, name, source=source, placeholders=placeholders, model=FROM_DIRECTIVE if model is None else model, base_dir=base_dir), key)


def program_of(analysis, key=None) -> Program:
    """The Program of a `pipeline.analyse` that resolved a Plan; its SchedError otherwise."""
    if analysis.plan is None:
        raise analysis.error()
    # no model and no `model` directive: a model-free program whose "parameters" are the patterns as written
    from schedc.plan.binding import model_and_state

    model, state = model_and_state(analysis.model)  # a factory (or the caller) may give `(model, state)`
    return Program(analysis.plan, model, analysis.tree, _key(key, analysis.plan.seed), tuple(analysis.diagnostics), analysis.source, dict(analysis.placeholders), _per_data(analysis), state)


def _per_data(analysis):
    """For a file that counts epochs: `DataSize -> Plan`, resolving it again with epochs in steps."""
    from schedc.plan.resolve import counts_epochs

    return analysis.plan_for if counts_epochs(analysis.parsed.file) else None


def _epoch_lengths(size, plan: Plan) -> str:
    """What an epoch of this data is in steps, for an error about durations in epochs."""
    batches = sorted({p.batch for p in plan.phases}, key=lambda b: b or 0)
    lengths = ", ".join(f"{size.steps_per_epoch(b)} steps" + (f" with `batch {b}`" if b else " without a batch size") for b in batches)
    held = f"the data holds {size.examples} examples" if size.examples is not None else f"the data has {size.batches} batches per pass"
    return f"{held}: an epoch is {lengths}"


def _key(key, seed):
    """The root key: `key` (a JAX PRNG key, typed or raw uint32, or an int seed), else the program's `seed`."""
    import jax
    import numpy as np

    if key is None:
        return jax.random.key(seed if seed is not None else 0)
    if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
        from schedc.check.catalog import SEEDS

        if int(key) not in SEEDS:
            raise ValueError(f"an int seed is a signed 64-bit integer ({SEEDS.start} to {SEEDS.stop - 1}), got {key}")
        return jax.random.key(int(key))
    dtype, shape = getattr(key, "dtype", None), getattr(key, "shape", None)
    if dtype is not None and (jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key) or (dtype == np.uint32 and shape in ((2,), (4,)))):
        return key
    raise TypeError(f"key must be a JAX PRNG key (jax.random.key(0)) or an int seed, got {key!r}")


def read_model(path, like):
    """The model `schedc run --out` saved (`model.eqx`), read into `like` (a freshly built model).

    The arrays come from the file; every other leaf, and the structure, from `like`. The same as
    `equinox.tree_deserialise_leaves(path, like)` for most models, and right for a spectracles
    ShareModule too, whose bookkeeping holds the object ids of the process that built it (the
    file's ids would not match `like`'s, and `get_locked_model()` would fail). A typed PRNG key
    leaf is read back as a key (the file holds its key data: `runtime.dtypes`).
    """
    import equinox as eqx

    from schedc.plan.params import is_array
    from schedc.runtime.dtypes import deserialise_leaf

    def arrays_only(f, x):
        value = deserialise_leaf(f, x)  # reads the leaf's record, keeping the file in step
        return value if is_array(x) else x

    path = Path(path)
    if not path.is_file():  # (equinox would look for `PATH.eqx`, and name that)
        raise FileNotFoundError(f"no such model file: {path}" + (" (a folder: name the model.eqx in it)" if path.is_dir() else ""))
    with open(path, "rb") as file:
        try:
            model = eqx.tree_deserialise_leaves(file, like, filter_spec=arrays_only)
        except (RuntimeError, ValueError, OSError) as err:  # (equinox's TreePathError is a RuntimeError whose cause says why)
            inner = err
            while inner.__cause__ is not None:
                inner = inner.__cause__
            why = str(err) if inner is err else f"{err}: {type(inner).__name__}: {inner}"
            raise ValueError(f"{path} does not hold a model like `like`: {why}") from err
        if file.read(1):  # equinox reads as many arrays as `like` has and ignores the rest
            raise ValueError(f"{path} holds more arrays than `like` has: it was saved from another model")
    return model
