"""Running a fused segment: consecutive phases in one compiled program (compiler/segment.py).

The host builds the segment's table (one row of numbers per phase), calls the program until
every phase is done (one call, unless a phase runs past the loss buffer) and turns the outputs
into the same `PhaseResult`s a phase-by-phase run returns: the same losses, stop reasons,
models and (lazily computed) hyperparameter logs, bit for bit on CPU
(tests/test_fused.py). Which phases form a segment is `Runner.segment_end`'s rule.

A batched fit or a sweep (`runner.items`) runs the segment program vmapped over its items: the
outputs read here then have a leading items axis, and the runner makes the batched phase
results (`BatchedRunner.segment_phase_result`) as its phase-by-phase path does
(tests/test_fused_items.py).
"""

from __future__ import annotations

import functools
import time
from collections import OrderedDict
from dataclasses import dataclass, replace
from typing import Callable

import numpy as np

from schedc.compiler import chunk as C
from schedc.compiler import minibatch
from schedc.compiler import segment as S
from schedc.runtime.distributed import host_array
from schedc.runtime.evaluation import PhaseEvals
from schedc.runtime.runner import AuxLog, CompileClock, Interrupted, Later, Pace, PhaseResult, Result, RunError, RunnerState, last_loss, phase_result, stop_on_signals


class FusionWarning(UserWarning):
    """Phases that should have run fused ran one by one (same results, slower): their fused
    program failed where each phase's own program did not, a fault of schedc's, not the loss's."""


class NotFused(Exception):
    """The segment cannot run fused: its loss cannot (`loss`: see segment._unfusable), a sweep's
    settings differ in structure, or its program's first call raised (`failure`). The runner runs
    its phases one by one instead."""

    def __init__(self, loss: bool = False, failure: Exception | None = None):
        super().__init__()
        self.loss = loss
        self.failure = failure

    def warn(self, phases) -> None:
        """Say that the program of the segment of `phases` failed (`failure`) although they all ran
        alone: a failing loss would have raised in its phase, so the fault is schedc's (its fused
        programs are not built again in this run: the runner runs the rest one by one)."""
        import warnings

        failure = self.failure
        warnings.warn(
            f"{phases[0].label} .. {phases[-1].label} ran one by one: their fused program failed ({type(failure).__name__}: {failure}); "
            "the results are those of fuse=False. Please report this as a schedc bug.",
            FusionWarning,
            stacklevel=4,
        )


def run_segment(runner, start: int, end: int, model, progress=None) -> list[PhaseResult]:
    """Phases `start` .. `end - 1` from `model`, fused. Stops after a phase with a non-finite loss
    (its result is the last one returned; the runner raises).

    With a progress bar (`progress`, the runner's `_Progress`), calls are paced as a watched
    phase's chunks are (about half a second each) and the bar moves after each call: per phase
    that call ran, its steps done and its last loss.

    A signal (`runner.stopping()`: across processes, one that reached any process) ends it after the current call, with the phases that call
    finished: the runner then stops as after a phase.

    Raises:
        NotFused: when the loss has host callbacks or fails to trace, or the program's first call
            raised: the runner then runs the phases one by one, so an error of the loss names the
            phase it is in and a failing callback keeps the phases before it. (When those phases
            all run alone, the runner warns: `NotFused.warn`.)
    """
    try:
        return _run(runner, start, end, model, progress)
    except NotFused:
        raise
    except Exception as exc:
        phases = runner.plan.phases
        exc.add_note(f"while running {phases[start].label} .. {phases[end - 1].label} fused into one program (run with fuse=False to run them one by one)")
        raise


# (plans' phases, tree, start, end, chunk, window, previous signature, data shardings, float width) ->
# (prepared phases, segment signature, table)
_PLANS: OrderedDict = OrderedDict()
_PLANS_KEPT = 64


def _segment_plan(runner, start: int, end: int):
    """The segment's prepared phases, signature and table: built once per program and reused by
    its later runs (keyed by the identity of the plans' phases, which a Program keeps)."""
    import jax

    phases = runner.plan.phases
    plans_phases = tuple(plan.phases for plan in runner.segment_plans())  # a sweep: every setting's
    # (the data's sharding goes in minibatched phases' signatures: data sharded anew makes a new plan;
    # so does the float width, as for the program (segment.compiled): the table's numbers and
    # thresholds go to the device as float32 without `jax_enable_x64`, float64 with it)
    key = (tuple(map(id, plans_phases)), id(runner.leaves_source), start, end, runner.chunk, runner.window, runner.state.signature, minibatch.row_shardings(runner.data_arrays), jax.config.jax_enable_x64)
    entry = _PLANS.get(key)
    if entry is not None and all(a is b for a, b in zip(entry[0], plans_phases)) and entry[1] is runner.leaves_source:
        _PLANS.move_to_end(key)
        return entry[2]

    prepared = [runner.prepare_phase(p) for p in phases[start:end]]
    per_setting = runner.items is not None and runner.items.numbers  # (a sweep's prepared numbers are stacked)
    planned = [S.plan(own[start:end], [_one_setting(p, i) if per_setting else p for p in prepared], runner.state.signature, runner.leaves, runner.window, runner.chunk) for i, own in enumerate(plans_phases)]
    signature = planned[0][0]
    if any(other != signature for other, _ in planned):  # settings whose inits differ in structure: phase by phase
        raise NotFused()
    table = S.stacked([t for _, t in planned]) if per_setting else planned[0][1]
    value = (prepared, signature, jax.device_put(table))  # on the device once, not at every call
    _PLANS[key] = (plans_phases, runner.leaves_source, value)
    if len(_PLANS) > _PLANS_KEPT:
        _PLANS.popitem(last=False)
    return value


def _one_setting(prepared: C.PreparedPhase, i: int) -> C.PreparedPhase:
    """Setting i's own numbers of a phase a sweep prepared (every setting's stacked)."""
    return replace(prepared, numbers=prepared.numbers[i], stop_numbers=prepared.stop_numbers[i])


@dataclass
class Segment:
    """A fused segment ready to call: what a run derives before its first call (a `Replay` keeps it)."""

    phases: tuple  # the segment's PhasePlans
    prepared: list  # their chunk.PreparedPhase forms
    signature: S.SegmentSignature
    table: dict  # the phases' numbers, on the device
    program: S.Program
    model_layout: C.Layout
    slots: list  # per phase: the index of its signature (its slot) in `signature.signatures`
    keeps_ema: list  # per phase: whether it returns an EMA model (`ema D`)
    evaluator: object = None  # the run's evaluation.Evaluator when a phase of the segment evaluates
    validation: tuple = ()  # then the validation data's arrays (an argument of every call)
    foreseen: np.ndarray | None = None  # the `counts` of a first call that runs every phase, when the plan decides them (`_foreseen_counts`)


def _segment(runner, start: int, end: int, model) -> tuple[Segment, tuple]:
    """The segment of phases `start` .. `end - 1` and the model's array leaves it starts from."""
    known = runner.arrays_of(model)  # (the run's first model, or the last phase's run alone: not split again)
    model_arrays, model_layout = known.arrays, known.layout
    prepared, signature, table = _segment_plan(runner, start, end)
    program = S.compiled(signature, runner.loss_fn, model_layout, runner.data_layout, model_arrays, runner.data_arrays, runner.model_state, runner.items)
    if program.unfusable:
        raise NotFused(loss=True)
    slots = [signature.signatures.index(p.signature) for p in prepared]
    keeps_ema = [program.keeps_ema[slot] for slot in slots]
    evaluator = runner.evaluator if any(p.signature.evaluation is not None for p in prepared) else None
    validation = evaluator.validation_arrays if evaluator is not None else ()
    phases = runner.plan.phases[start:end]
    return Segment(phases, prepared, signature, table, program, model_layout, slots, keeps_ema, evaluator, validation, _foreseen_counts(signature, phases, program)), model_arrays


def _foreseen_counts(signature: S.SegmentSignature, phases, program: S.Program) -> np.ndarray | None:
    """The `counts` (see `S.Program`) of a segment's first call when the plan decides them: one fit
    (no items) whose phases cannot stop early (`C.stops_early`) and log no plateau scales, so that
    each phase runs its planned steps and completes, a non-finite loss aside (the host looks for
    one after the call). None otherwise."""
    if program.items is not None or any(C.stops_early(s) or s.plateaus for s in signature.signatures):
        return None
    ran, reasons = np.zeros(signature.window, np.int32), np.full(signature.window, C.COMPLETED, np.int32)
    ran[: len(phases)] = [phase.steps for phase in phases]
    return np.concatenate([ran, reasons, np.array([len(phases), 0], np.int32)])  # (then the row and step it ends at)


def _run(runner, start: int, end: int, model, progress) -> list[PhaseResult]:
    started = time.perf_counter()
    with CompileClock() as clock:
        segment, model_arrays = _segment(runner, start, end, model)
        built_before = segment.program.ran
        previous = runner.state.signature
        carried = (previous, runner.state.opt_state) if previous is not None else None
        state = segment.program.initial_state(model_arrays, carried, runner.model_state, runner.stopped_items())
        calls = functools.partial(_calls, segment, state, runner.key, segment.program.reset_arrays(runner.begun.arrays), runner.data_arrays, runner, progress)
        set_up = time.perf_counter() - started
        state, found, foreseen = calls(foresee=True)  # (a segment with items is never foreseen)
    # (a run that built the program also traced its optimizer states' shapes before the first call)
    built = 0.0 if built_before else set_up + segment.program.built_in
    if segment.program.items:
        results = _item_results(runner, segment, *found, time.perf_counter() - started, clock, built)
    else:
        state, results = _checked(segment, state, found, foreseen, calls, clock, started, built)
    if not results:  # a signal came before the first phase ended
        return results
    last = len(results) - 1
    if segment.program.stateful:
        runner.model_state = results[last].state
    signature = segment.prepared[last].signature
    slot, slots = segment.slots[last], state["slots"]
    # (read when a later phase carries it: unpacking it costs a transfer each way)
    runner.state = RunnerState(segment.phases[last].index, signature, Later(lambda: segment.program.slot_opt(slots, slot)))
    runner.segment = segment
    return results


def _final_from_state(segment: Segment, results: list[PhaseResult], state: dict) -> None:
    """When every phase finished, the last one's model (and model state) taken from the calls'
    `state`, already on the device, instead of its snapshot row: the run goes on from them."""
    if len(results) == len(segment.phases):
        results[-1].model = segment.model_layout.rebuild(state["leaves"])
        if segment.program.stateful:
            results[-1].state = state["model_state"]


def _checked(segment: Segment, state: dict, found: tuple, foreseen: _Foreseen | None, calls: Callable, clock: CompileClock, started: float, built: float = 0.0) -> tuple[dict, list[PhaseResult]]:
    """The last state and the phase results of a segment run as one fit, from what `calls` (its
    `_calls`) `found`. When `_calls` foresaw the first call (`foreseen`), the results are built
    while the device runs it and then checked: a phase-by-phase run's host work overlaps the
    device's as its next phase is dispatched before the last is read (`runner.Unread`), and this
    is the fused run's way to the same (its one call leaves nothing to read behind). Where the
    device did otherwise (a non-finite loss), the call's outputs are read as any call's."""
    results = _results(segment, *found, clock)
    _final_from_state(segment, results, state)
    if foreseen is not None and not foreseen.held():
        state, found, _ = calls(made=foreseen.made)
        return _checked(segment, state, found, None, calls, clock, started, built)
    for result, share in zip(results, _wall_shares(time.perf_counter() - started, built, [r.steps_run for r in results])):
        result.wall_time = share
    return state, results


def _wall_shares(wall: float, built: float, steps: list[int]) -> list[float]:
    """The finished phases' wall times, from the segment's `wall`. The `built` seconds (when this
    run built the program: its setup and its first call, which traced, lowered and compiled it,
    `Program.built_in`) are the first phase's, as a phase-by-phase run counts a phase's compile in
    its own wall time; the rest is shared by `steps` run. (Shared whole, a first run's seconds of
    compiling showed as seconds in every phase of a run of milliseconds.)"""
    built, total = min(built, wall), sum(steps) or 1
    shares = [(wall - built) * ran / total for ran in steps]
    if shares:
        shares[0] += built
    return shares


class _Foreseen:
    """A segment's first call whose outcome the plan decides (`Segment.foreseen`), before it ends:
    `found`, what `_calls` reads after a call, with the plan's steps and reasons and NaN-filled
    host buffers for the per-step losses, which `held` fills from the call. (The phase results
    hold views of them: `_results` does not copy a phase's one piece.)"""

    def __init__(self, segment: Segment, made: tuple, steps: int):
        self.made, self.steps = made, steps
        self.counts = counts = segment.foreseen  # (what the call returns as its `counts`: tests/test_fused.py asserts it)
        window = segment.signature.window
        ran = counts[:window]
        self.losses = np.full(steps, np.nan, made[1]["losses"].dtype)
        self.found = {"losses": self.losses, "ran": ran, "ran_items": ran, "reason": counts[window : 2 * window], "aux": {}, "plateau": [None] * len(segment.phases)}

    @classmethod
    def of(cls, segment: Segment, state: dict, out: dict, budget: int) -> _Foreseen | None:
        """The foreseen call that made `(state, out)` with `budget`, or None when the plan does not
        decide what it does: not every phase fits the budget, or the loss logs aux metrics (whose
        means per chunk the results compute at once)."""
        if segment.foreseen is None or out["aux"]:
            return None
        steps = int(segment.foreseen[: segment.signature.window].sum())
        return cls(segment, (state, out), steps) if steps <= budget else None

    def held(self) -> bool:
        """Whether the call did as foreseen: every loss is finite (waits for the call; its losses
        are then in `found`). Its steps and reasons are the plan's: a loop that cannot stop early
        runs every step it is given, and the call's budget holds them all (`of`), so its
        `counts` are not read. Written for the moment the call ends, when the host's code and
        data are cold again: one copy and the chunk's own check (`C.first_nonfinite`: one C-level
        sum; `np.array_equal`, a copy and `isfinite(ndarray.sum())`, numpy's Python-level
        wrappers, took 221 us there against ~10 warm)."""
        self.losses[:] = host_array(self.made[1]["losses"])[: self.steps]
        return C.first_nonfinite(self.losses) is None


def _call(segment: Segment, state: dict, key, reset_arrays, data_arrays, budget: int) -> tuple[dict, dict]:
    """One call of the segment's program from `state`, running at most `budget` steps: its (state, outputs).

    Raises:
        NotFused: when the program's first call raised (see `run_segment`).
    """
    program = segment.program
    started = time.perf_counter()
    try:
        made = program.call(state, segment.table, key, reset_arrays, data_arrays, program.budget(budget), segment.validation)
    except Exception as exc:
        if not program.ran:  # (it built no program: the loss's error, or schedc's, see NotFused.warn)
            raise NotFused(failure=exc) from exc
        raise
    if not program.ran:
        program.built_in = time.perf_counter() - started
    return made


def _calls(segment: Segment, state: dict, key, reset_arrays, data_arrays, owner, progress, foresee: bool = False, made: tuple | None = None) -> tuple[dict, tuple, _Foreseen | None]:
    """Call the segment's program from `state` until every phase is done, one met a non-finite
    loss, or a signal came (`owner.stopping()`). Returns the last state, what the calls
    found: per phase its per-step logs (`_Pieces`) and stop reason, and per finished phase
    (a call's outputs, its row); and None.

    `made`: the (state, outputs) of the first call, already made (`_call`, with the whole chunk's
    budget): the host sets up while the device runs it. With `foresee`, a first call whose
    outcome the plan decides (`Segment.foreseen`: one call runs every phase, unwatched) is not
    waited for: what it found is what the plan says, its per-step logs still to come, and the
    `_Foreseen` returned last says whether the device did so (`_checked`)."""
    import jax

    signature, phases = segment.signature, segment.phases
    pace = Pace(signature.chunk, steady=progress is None)
    budget = pace.steps()
    state, out = made if made is not None else _call(segment, state, key, reset_arrays, data_arrays, budget)
    pieces = [_Pieces(PhaseEvals(phase, segment.evaluator) if prep.signature.evaluation is not None else None) for phase, prep in zip(phases, segment.prepared)]
    reasons = [C.COMPLETED] * len(phases)
    models: list = []
    if foresee and progress is None and (foreseen := _Foreseen.of(segment, state, out, budget)) is not None:
        _collect(foreseen.found, 0, len(phases), 0, pieces, reasons)
        models.extend((out, r) for r in range(len(phases)))
        return state, (pieces, reasons, models), foreseen
    bar = _Bar(progress, phases)
    window, items = signature.window, segment.program.items
    while True:
        first_row = len(models)
        # (read with host_array: items sharded over other processes are gathered, a collective every process takes)
        counts = host_array(out["counts"])  # (two reads, not jax.device_get's tree walk)
        # with items, a leading items axis: per item its steps and reasons (the row and step are shared);
        # a row's steps in the call's buffers are the most any item ran
        ran = counts[..., :window]
        per_row = ran if ran.ndim == 1 else ran.max(axis=0)
        # (a writable copy of the steps the call ran: a phase's losses are a view of it, as a
        # phase-by-phase run's are writable arrays, and it holds no more than those steps)
        found = {"losses": host_array(out["losses"])[..., : int(per_row.sum())].copy(), "ran": per_row, "ran_items": ran, "reason": counts[..., window : 2 * window]}
        found["aux"] = {name: host_array(values) for name, values in out["aux"].items()}
        scales = [None if b is None else host_array(b) for b in out["plateau"]]
        found["plateau"] = [scales[slot] for slot in segment.slots]  # per row: its signature's scales
        if "evals" in out:  # the call's evaluations (one transfer) and per row how many, the rule that ended it, the kept step
            found["evals"] = jax.device_get(out["evals"])
            found["eval_rows"] = counts[2 * window : 5 * window].reshape(3, window)
        row, step = int(counts.flat[-2]), int(counts.flat[-1])
        steps = _collect(found, first_row, row, step, pieces, reasons)
        models.extend((out, r) for r in range(first_row, row))
        # (with items, the device stops an item at a non-finite loss: the others go on)
        broken = _first_nonfinite_row(found, first_row, steps) if items is None else None
        if broken is not None:  # the segment ends after that phase (the steps run past it are dropped)
            reasons[broken] = C.NONFINITE
            models.extend((out, r) for r in range(len(models), broken + 1))  # (it may be unfinished)
            del models[broken + 1 :]
            row, step = broken + 1, 0
        bar.advance(pieces, first_row, row + (step > 0))
        if not pace.steady:  # (a watched run's calls are sized by their time)
            pace.observe(steps)
        # (with items, a non-finite loss stops its item only: the call goes on)
        halted = items is None and models and reasons[len(models) - 1] == C.NONFINITE
        if len(models) == len(phases) or halted or owner.stopping() is not None:  # (across processes, agreed)
            return state, (pieces, reasons, models), None
        budget = pace.steps()
        state, out = _call(segment, state, key, reset_arrays, data_arrays, budget)


def _first_nonfinite_row(found: dict, first_row: int, steps: int) -> int | None:
    """The first table row whose losses in this call's outputs (its first `steps`) hold a
    non-finite value, or None.

    The device does not look for one (a flag updated at every step cost two operations per step:
    it kept the loss's reduction out of the fusion that logs it) and runs on to the end of the
    call; a phase with stop rules stops at it on the device as before (its reason says so)."""
    bad = C.first_nonfinite(found["losses"][:steps])
    if bad is None:
        return None
    ends = np.cumsum(found["ran"][first_row:])  # (rows before `first_row` ran no step in this call)
    return first_row + int(np.searchsorted(ends, bad, side="right"))


class _Pieces:
    """What the calls of a segment logged for one phase: per step its losses, aux metrics and plateau
    scales; its evaluations (`evals`, a PhaseEvals; None for a phase that does not evaluate)."""

    def __init__(self, evals: PhaseEvals | None = None):
        self.evals = evals
        self.losses: list[np.ndarray] = []  # [..., steps] pieces (a leading items axis with items)
        self.aux: dict[str, list[np.ndarray]] = {}
        self.scales: list[np.ndarray] = []  # [..., steps, plateaus] pieces, for a phase with plateaus
        self.done = 0  # with items, the steps each item ran (an item's pieces hold NaN past them)

    def add(self, out: dict, row: int, at: int, ran: int, ran_items) -> None:
        self.losses.append(out["losses"][..., at : at + ran])
        for name, values in out["aux"].items():
            self.aux.setdefault(name, []).append(values[..., at : at + ran])
        if out["plateau"][row] is not None:
            self.scales.append(out["plateau"][row][..., at : at + ran, :])
        self.done = self.done + ran_items

    @property
    def steps(self) -> int:
        return sum(p.shape[-1] for p in self.losses)


def _collect(out: dict, first_row: int, row: int, step: int, pieces: list, reasons: list) -> int:
    """Split one call's host outputs by phase: its per-step logs and its evaluations in order and
    the reasons of the phases it ran (rows from `first_row` to `row`; `row` itself is unfinished
    when `step` > 0). Returns the steps the call ran."""
    at = taken = 0
    touched = row if step > 0 else row - 1
    ran_rows = out["ran"].tolist()  # (Python ints: one conversion, not one per row)
    single = out["reason"].ndim == 1  # (with items, per item: [items, rows])
    reason_rows = out["reason"].tolist() if single else None
    for r in range(first_row, min(touched, len(pieces) - 1) + 1):
        ran = ran_rows[r]
        pieces[r].add(out, r, at, ran, ran if single else out["ran_items"][:, r])
        reasons[r] = reason_rows[r] if single else out["reason"][:, r]
        at += ran
        if pieces[r].evals is not None:  # (the log holds the call's evaluations in row order)
            count, rule, kept = (int(n) for n in out["eval_rows"][:, r])
            taken = _evaluations(pieces[r].evals, out["evals"], taken, count, rule if reasons[r] == C.STOP_EVAL else None, kept)
    return at


def _evaluations(evals: PhaseEvals, log: dict, taken: int, count: int, rule: int | None, kept: int) -> int:
    """Give a phase's `evals` its `count` evaluations of a call's `log` (from entry `taken`), the rule
    that ended it (None: none did) and the step of the weights `keep best` holds (-1: none yet).
    Returns the log entries taken so far."""
    evals.take(log, taken, taken + count)
    if rule is not None:
        evals.stopped_by(rule)
    if kept >= 0:
        evals.kept_step = kept
    return taken + count


class _Bar:
    """The progress bar's view of a fused segment: a task per phase, made when its first steps ran."""

    def __init__(self, progress, phases):
        self.progress, self.phases, self.tasks = progress, phases, {}

    def advance(self, pieces: list, first_row: int, end_row: int) -> None:
        """Move the bar for the phases (rows `first_row` .. `end_row - 1`) a call ran."""
        if self.progress is None:
            return
        for row in range(first_row, min(end_row, len(self.phases))):
            phase = self.phases[row]
            if row not in self.tasks:
                self.tasks[row] = self.progress.phase(phase.label, phase.steps, phase.steps_per_epoch)
            losses = pieces[row].losses
            done = pieces[row].steps
            last = last_loss(losses[-1]) if done else float("nan")
            evals = pieces[row].evals
            self.progress.advance(self.tasks[row], done, last, evals.last() if evals is not None else "")


def _snapshot(segment: Segment, buffers: tuple, row: int, items: bool = False) -> Later:
    """The model after the phase of table row `row`, sliced out of the device buffers when read
    (with `items`, the buffers' second axis is the row's: every item's model)."""
    return Later(lambda: segment.model_layout.rebuild(segment.program.row_of(buffers, row, items)))


def _results(segment: Segment, pieces, reasons, models, clock: CompileClock) -> list[PhaseResult]:
    """One PhaseResult per finished phase, its wall time not yet given (`_checked` shares the
    segment's); its compiles are the first phase's (as a phase-by-phase run counts a new
    program's compile)."""
    import jax

    results = []
    for row, (phase, prep) in enumerate(zip(segment.phases, segment.prepared[: len(models)])):
        reason = reasons[row]
        phase_losses = _joined(pieces[row].losses)
        # `_calls` marked the phase holding a non-finite loss (only its losses are searched): as a
        # phase-by-phase run reads it, the phase ends at its first non-finite loss
        bad = C.first_nonfinite(phase_losses) if reason == C.NONFINITE else None
        if bad is not None:
            phase_losses = phase_losses[: bad + 1]
        first = row == 0  # the segment's compile is counted once, on its first phase
        out, at = models[row]
        scales = [np.concatenate(pieces[row].scales)] if pieces[row].scales else []
        result = phase_result(phase, prep, phase_losses, reason, 0.0, clock.seconds if first else 0.0, clock.count if first else 0, _snapshot(segment, out["snapshots"], at), scales)
        if "states" in out:  # the model state after the phase, read lazily too
            result.state = Later(lambda buffers=out["states"], at=at: jax.tree_util.tree_map(lambda b: b[at], buffers))
        _ema_and_aux(result, segment, row, pieces[row], out, at)
        if pieces[row].evals is not None:
            pieces[row].evals.report(result)
        results.append(result)
    return results


def _joined(pieces: list[np.ndarray]) -> np.ndarray:
    """A phase's losses from its pieces, one per call: the one piece itself (a view of its call's
    buffer, no copy), or the pieces end to end."""
    return pieces[0] if len(pieces) == 1 else np.concatenate(pieces)


def _item_results(runner, segment: Segment, pieces, reasons, models, wall: float, clock: CompileClock, built: float) -> list:
    """One batched phase result per finished phase of a segment run with items, made by the
    runner (`segment_phase_result`) as a phase-by-phase batched run makes it; wall time and
    compiles are shared as `_results` shares them, the models and EMA models read lazily."""
    shares = _wall_shares(wall, built, [p.steps for p in pieces[: len(models)]])
    results = []
    for row, (phase, prep) in enumerate(zip(segment.phases[: len(models)], segment.prepared)):
        piece = pieces[row]
        out, at = models[row]
        losses = np.concatenate(piece.losses, axis=-1)
        scales = [np.concatenate(piece.scales, axis=-2)] if piece.scales else []
        result = runner.segment_phase_result(
            phase, prep, losses, scales, piece.done, reasons[row], _snapshot(segment, out["snapshots"], at, items=True), shares[row], clock if row == 0 else CompileClock()
        )
        _ema_and_aux(result, segment, row, piece, out, at, items=True)
        results.append(result)
    return results


def _ema_and_aux(result, segment: Segment, row: int, piece: _Pieces, out: dict, at: int, items: bool = False) -> None:
    """Give the phase `result` of table row `row` (snapshot `at` in the call's outputs `out`) its
    EMA model (`ema D`: the model with the free parameters' moving average, read lazily) and the
    means of its aux metrics over the steps it ran (`steps_run`: per item with `items`), taken over
    the chunks a phase-by-phase run calls (see AuxLog)."""
    if segment.keeps_ema[row]:
        result.ema_model = _snapshot(segment, out["ema"], at, items)
    if piece.aux:
        aux = AuxLog()
        aux.add_per_step({name: np.concatenate(v, axis=-1) for name, v in piece.aux.items()}, result.steps_run, segment.prepared[row].signature.chunk)
        result.aux_steps, result.aux = aux.history()


def data_signature(args: tuple, kwargs: dict) -> tuple[tuple, tuple]:
    """(the data's array leaves, what a `Replay` must find again: the data's layout (structure and
    non-array leaves), each array's shape, dtype, weak type and sharding, and the float width)."""
    import jax

    arrays, layout = C.split((args, kwargs))
    avals = tuple((x.shape, x.dtype, getattr(x, "weak_type", False), getattr(x, "sharding", None)) for x in arrays)
    return arrays, (layout, avals, jax.config.jax_enable_x64)


@dataclass(frozen=True)
class _Accepted:
    """The data arrays a replay last accepted (`data_signature` checked), held weakly, so that the
    same arrays passed again are known without flattening them and reading each one's shape,
    dtype and sharding (~10-30 us a run). Only `jax.Array`s qualify: their shape, dtype, weak type
    and sharding never change, so the very same objects (and the same float width) have the same
    signature. Weak references: a replay never keeps a caller's data alive."""

    positional: tuple  # weakref.ref per positional argument
    keywords: dict  # name -> weakref.ref
    names: tuple  # the keyword names in the order `chunk.split` takes them (sorted)
    x64: bool

    @classmethod
    def of(cls, args: tuple, kwargs: dict) -> _Accepted | None:
        """The record of this data, or None when an argument is not a `jax.Array` itself."""
        import weakref

        import jax

        if not all(isinstance(x, jax.Array) for x in (*args, *kwargs.values())):
            return None
        return cls(tuple(map(weakref.ref, args)), {k: weakref.ref(v) for k, v in kwargs.items()}, tuple(sorted(kwargs)), jax.config.jax_enable_x64)

    def arrays(self, args: tuple, kwargs: dict) -> tuple | None:
        """The data's arrays, as `data_signature` gives them, when `args`/`kwargs` are the arrays
        accepted (the same objects, by identity), else None."""
        import jax

        if len(args) != len(self.positional) or kwargs.keys() != self.keywords.keys() or jax.config.jax_enable_x64 != self.x64:
            return None
        if any(ref() is not x for ref, x in zip(self.positional, args)) or any(self.keywords[k]() is not v for k, v in kwargs.items()):
            return None
        return (*args, *(kwargs[k] for k in self.names))


class Replay:
    """A `Program.run` that ran as one fused segment, kept to run again with little host work.

    What a run derives before its first call (the Plan for the data, the runner, the segment's
    table and program, its fresh state on the device) depends only on the program, the loss, the
    options and the data's structure, shapes and dtypes. A later run of the same program and loss
    with data of the same `data_signature` (and default options) skips all of it: one call of the
    program, then the same reading of its outputs (`_calls`, `_results`) as any fused segment, so
    the results, a non-finite loss's `RunError` and a signal's handling are the runner's.
    """

    def __init__(self, runner, program, signature: tuple):
        self.model, self.key, self.plan = program.model, program.key, program.plan
        self.signature = signature
        self.segment: Segment = runner.segment
        self.run_key, self.reset_arrays = runner.key, self.segment.program.reset_arrays(runner.begun.arrays)
        self.state = self.segment.program.initial_state(runner.begun.arrays)  # (immutable device arrays: shared by every replay)
        self.stop_signal: int | None = None
        self.accepted: _Accepted | None = None  # the data of the last run replayed, held weakly
        # the last run's call outputs (state and outputs), freed as the next run's call is made: while
        # the device runs, not as the run returns, when the host is cold and freeing them took ~20 us
        # more. Held only while the optimizer slots are packed (<= PACKED_SLOTS_BYTES, what a call's
        # outputs hold besides the model snapshots and last model, which its results keep anyway)
        self.outputs: tuple | None = None

    @classmethod
    def of(cls, runner, program, args: tuple, kwargs: dict, result):
        """The replay of a finished run, or None when the run was not one whole fused segment
        started from the program's own model, without a model state, run unwatched in this one
        process."""
        segment = getattr(runner, "segment", None)
        if (
            segment is None
            or segment.program.stateful
            or len(segment.phases) != len(runner.plan.phases)
            or len(result.phases) != len(segment.phases)
            or runner.begun is None
            or runner.begun.model is not program.model
            or not runner.quiet
            or runner.processes > 1
            or runner.logger is not None
            or runner.stop_signal is not None
        ):
            return None
        return cls(runner, program, data_signature(args, kwargs)[1])

    def stopping(self) -> int | None:
        """The signal that stops the replay after this call, or None (one process: nothing to agree)."""
        return self.stop_signal

    def data_arrays(self, program, args: tuple, kwargs: dict) -> tuple | None:
        """The data's arrays when this replay can run `program` on them (the same model, key and
        schedule as when it was recorded, data of the same signature), else None."""
        if program.model is not self.model or program.key is not self.key or program.plan is not self.plan:
            return None
        if self.accepted is not None and (arrays := self.accepted.arrays(args, kwargs)) is not None:
            return arrays
        arrays, signature = data_signature(args, kwargs)
        if signature != self.signature:
            return None
        self.accepted = _Accepted.of(args, kwargs)
        return arrays

    def run(self, data_arrays: tuple, runner_for_errors: Callable):
        """The run, as `Runner.run` would do it: a non-finite loss raises its RunError (made by
        `runner_for_errors()`, a fresh Runner, only then); whatever else stops the run carries the
        completed phases (`exc.result`).

        The first call is made before anything else, and the host sets up while the device runs
        it (a signal before it is made stops the run as one before the run would: no phase is
        done then)."""
        segment = self.segment
        done: list = []
        try:
            started = time.perf_counter()
            # (a replayed program is built: only kernels switched on since compile, at this call)
            with CompileClock() as clock:
                made = _call(segment, self.state, self.run_key, self.reset_arrays, data_arrays, segment.signature.chunk)
            self.outputs = made if segment.program.packing is not None else None
            result = Result(initial_model=self.model)
            with stop_on_signals(self):
                calls = functools.partial(_calls, segment, self.state, self.run_key, self.reset_arrays, data_arrays, self, None)
                state, found, foreseen = calls(foresee=True, made=made)
                result.phases = done = _checked(segment, state, found, foreseen, calls, clock, started)[1]
                if done and done[-1].stop_reason == C.STOP_REASONS[C.NONFINITE]:
                    raise runner_for_errors().nonfinite_error(result, segment.phases[len(done) - 1], done[-1])
                if self.stop_signal is not None and len(done) < len(segment.phases):
                    raise Interrupted(self.stop_signal, len(done), 0)
        except BaseException as exc:
            if not isinstance(exc, RunError):
                exc.result = Result(initial_model=self.model, phases=done)
            raise
        finally:
            self.stop_signal = None
        return result
