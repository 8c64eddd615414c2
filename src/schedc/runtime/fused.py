"""Running a fused segment: consecutive phases in one compiled program (compiler/segment.py).

The host builds the segment's table (one row of numbers per phase), calls the program until
every phase is done (one call, unless a phase runs past the loss buffer) and turns the outputs
into the same `PhaseResult`s a phase-by-phase run returns: the same losses, stop reasons,
models and (lazily computed) hyperparameter logs, bit for bit on CPU
(tests/test_fused.py). Which phases form a segment is `Runner.segment_end`'s rule.
"""

from __future__ import annotations

import time
from collections import OrderedDict

import numpy as np

from schedc.compiler import chunk as C
from schedc.compiler import minibatch
from schedc.compiler import segment as S
from schedc.runtime.runner import CompileClock, Later, Pace, PhaseResult, RunnerState, phase_result, strong_types


class NotFused(Exception):
    """The segment cannot run fused: its loss cannot (`loss`: see segment._unfusable), or building
    its program raised (the cause). The runner runs its phases one by one instead."""

    def __init__(self, loss: bool = False):
        super().__init__()
        self.loss = loss


def run_segment(runner, start: int, end: int, model, progress=None) -> list[PhaseResult]:
    """Phases `start` .. `end - 1` from `model`, fused. Stops after a phase with a non-finite loss
    (its result is the last one returned; the runner raises).

    With a progress bar (`progress`, the runner's `_Progress`), calls are paced as a watched
    phase's chunks are (about half a second each) and the bar moves after each call: per phase
    that call ran, its steps done and its last loss.

    A signal (`runner.stop_signal`) ends it after the current call, with the phases that call
    finished: the runner then stops as after a phase.

    Raises:
        NotFused: when the loss has host callbacks or aux metrics, or building the program raised (a loss that
            fails to trace, say): the runner then runs the phases one by one, so an error names
            the phase it is in and a failing callback keeps the phases before it.
    """
    try:
        return _run(runner, start, end, model, progress)
    except NotFused:
        raise
    except Exception as exc:
        phases = runner.plan.phases
        exc.add_note(f"while running {phases[start].label} .. {phases[end - 1].label} fused into one program (run with fuse=False to run them one by one)")
        raise


# (plan phases, tree, start, end, chunk, window, previous signature) -> (prepared phases, segment signature, table)
_PLANS: OrderedDict = OrderedDict()
_PLANS_KEPT = 64


def _segment_plan(runner, start: int, end: int):
    """The segment's prepared phases, signature and table: built once per program and reused by
    its later runs (keyed by the identity of the plan's phases, which a Program keeps)."""
    phases = runner.plan.phases
    # (the data's sharding goes in minibatched phases' signatures: data sharded anew makes a new plan)
    key = (id(phases), id(runner.leaves_source), start, end, runner.chunk, runner.window, runner.state.signature, minibatch.row_shardings(runner.data_arrays))
    entry = _PLANS.get(key)
    if entry is not None and entry[0] is phases and entry[1] is runner.leaves_source:
        _PLANS.move_to_end(key)
        return entry[2]
    import jax

    prepared = [runner.prepare_phase(p) for p in phases[start:end]]
    signature, table = S.plan(phases[start:end], prepared, runner.state.signature, runner.leaves, runner.window, runner.chunk)
    value = (prepared, signature, jax.device_put(table))  # on the device once, not at every call
    _PLANS[key] = (phases, runner.leaves_source, value)
    if len(_PLANS) > _PLANS_KEPT:
        _PLANS.popitem(last=False)
    return value


def _run(runner, start: int, end: int, model, progress) -> list[PhaseResult]:
    import jax

    phases = runner.plan.phases[start:end]
    started = time.perf_counter()
    with CompileClock() as clock:
        if runner.begun is not None and model is runner.begun.model:  # the run's first segment
            model_arrays, model_layout = runner.begun.arrays, runner.begun.layout
        else:
            model_arrays, model_layout = C.split(strong_types(model))
        prepared, signature, table = _segment_plan(runner, start, end)
        program = S.compiled(signature, runner.loss_fn, model_layout, runner.data_layout, model_arrays, runner.data_arrays)
        if program.unfusable:
            raise NotFused(loss=True)
        previous = runner.state.signature
        state = program.initial_state(model_arrays, (previous, runner.state.opt_state) if previous is not None else None)
        initial_arrays = runner.begun.arrays
        pieces: list[list[np.ndarray]] = [[] for _ in phases]
        reasons = [C.COMPLETED] * len(phases)
        models: list = []  # per finished phase: (a call's outputs, its row)
        pace = Pace(signature.chunk, steady=progress is None)
        bar = _Bar(progress, phases)
        while True:
            first_row = len(models)
            budget = pace.steps()
            try:
                state, out = program.call(state, table, runner.key, initial_arrays, runner.data_arrays, np.int32(budget))
            except Exception as exc:
                if not program.ran:
                    raise NotFused() from exc
                raise
            program.ran = True
            losses, counts = jax.device_get((out["losses"], out["counts"]))
            window = signature.window
            found = {"losses": losses, "ran": counts[:window], "reason": counts[window : 2 * window]}
            row, step = int(counts[-2]), int(counts[-1])
            _collect(found, first_row, row, step, pieces, reasons)
            models.extend((out, r) for r in range(first_row, row))
            bar.advance(pieces, first_row, row + (step > 0))
            pace.observe(int(np.sum(found["ran"])))
            if len(models) == len(phases) or (models and reasons[len(models) - 1] == C.NONFINITE) or runner.stop_signal is not None:
                break
    keeps_ema = [program.keeps_ema[signature.signatures.index(p.signature)] for p in prepared]
    results = _results(phases, prepared, pieces, reasons, models, keeps_ema, model_layout, time.perf_counter() - started, clock)
    if not results:  # a signal came before the first phase ended
        return results
    last = len(results) - 1
    if last == len(phases) - 1:  # the run goes on from the state's model, already on the device
        results[last].model = model_layout.rebuild(state["leaves"])
    runner.state = RunnerState(phases[last].index, prepared[last].signature, state["slots"][signature.signatures.index(prepared[last].signature)]["opt"])
    return results


def _collect(out: dict, first_row: int, row: int, step: int, pieces: list, reasons: list) -> None:
    """Split one call's host outputs by phase: its losses in order and the reasons of the phases
    it ran (rows from `first_row` to `row`; `row` itself is unfinished when `step` > 0)."""
    at = 0
    touched = row if step > 0 else row - 1
    for r in range(first_row, min(touched, len(pieces) - 1) + 1):
        ran = int(out["ran"][r])
        pieces[r].append(out["losses"][at : at + ran])
        reasons[r] = int(out["reason"][r])
        at += ran


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
            done = sum(len(p) for p in pieces[row])
            last = float(pieces[row][-1][-1]) if done and len(pieces[row][-1]) else float("nan")
            self.progress.advance(self.tasks[row], done, last)


def _snapshot(layout: C.Layout, buffers: tuple, row: int) -> Later:
    """The model after the phase of table row `row`, sliced out of the device buffers when read."""
    return Later(lambda: layout.rebuild([buffer[row] for buffer in buffers]))


def _results(phases, prepared, pieces, reasons, models, keeps_ema, model_layout, wall: float, clock: CompileClock) -> list[PhaseResult]:
    """One PhaseResult per finished phase. The segment's wall time is shared by steps run; its
    compiles are the first phase's (as a phase-by-phase run counts a new program's compile)."""
    losses = [np.concatenate(p) for p in pieces[: len(models)]]
    total = sum(len(x) for x in losses) or 1
    results = []
    for row, (phase, prep, phase_losses) in enumerate(zip(phases, prepared, losses)):
        reason = reasons[row]
        bad = C.first_nonfinite(phase_losses)
        if bad is not None:  # as a phase-by-phase run reads it: the phase ends at its first non-finite loss
            phase_losses, reason = phase_losses[: bad + 1], C.NONFINITE
        first = row == 0  # the segment's compile is counted once, on its first phase
        out, at = models[row]
        model = _snapshot(model_layout, out["snapshots"], at)
        share = wall * len(phase_losses) / total
        results.append(phase_result(phase, prep, phase_losses, reason, share, clock.seconds if first else 0.0, clock.count if first else 0, model))
        if keeps_ema[row]:  # `ema D`: the model with the free parameters' moving average, read lazily too
            results[-1].ema_model = _snapshot(model_layout, out["ema"], at)
    return results
