"""Phase by phase, a phase's last chunk call is read after the next phase's first call is made
(`runner.Unread`, `Runner._reads_behind`): the results, failures and the phases a failed run
keeps are those of reading every phase before the next starts."""

from __future__ import annotations

import shutil
import signal
import sys

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import schedc
from schedc.runtime.runner import Interrupted, Runner, RunError

SCHEDULE = """optimizer adam
phase warm 30 lr 0.05 < free a >
phase 40 lr 0.02 < free b; init b ~ normal(0, 0.1) >
phase 50 lr 0.05 < free a, b; stop when loss < 0.5 >
phase 20 lr 0.01 < free a; carry state >
phase 10 lr 0.01 < free b >"""


class Pair(eqx.Module):
    a: jax.Array
    b: jax.Array


def pair():
    return Pair(jnp.ones(3), jnp.zeros(2))


def quadratic(m):
    return jnp.sum((m.a - 3.0) ** 2) + jnp.sum((m.b + 1.0) ** 2)


def both_ways(monkeypatch, run):
    """`run()` read behind and read at once, and the `defer` each phase was run with."""
    asked = []
    run_phase = Runner.run_phase

    def spied(self, index, model, progress=None, defer=False):
        asked.append(defer)
        return run_phase(self, index, model, progress, defer)

    monkeypatch.setattr(Runner, "run_phase", spied)
    behind = run()
    deferred, asked[:] = list(asked), []
    monkeypatch.setattr(Runner, "READS_BEHIND", False)
    at_once = run()
    assert not any(asked)
    return behind, at_once, deferred


def outcome(run):
    try:
        return run(), None
    except Exception as exc:  # noqa: BLE001 (the failure itself is compared)
        return exc.result, exc


def test_results_are_those_of_reading_each_phase_at_once(monkeypatch):
    program = schedc.compile(SCHEDULE, pair())
    behind, at_once, deferred = both_ways(monkeypatch, lambda: program.run(quadratic, quiet=True, fuse=False))
    assert deferred == [True, True, True, True, False]  # every phase but the last is read behind
    assert behind.stop_reasons == at_once.stop_reasons and behind.stop_reasons[2] == "loss"
    for mine, theirs in zip(behind.phases, at_once.phases, strict=True):
        np.testing.assert_array_equal(mine.losses, theirs.losses)
        assert mine.steps_run == theirs.steps_run
        for x, y in zip(jax.tree_util.tree_leaves(mine.model), jax.tree_util.tree_leaves(theirs.model), strict=True):
            np.testing.assert_array_equal(x, y)
    assert behind.hyperparams.keys() == at_once.hyperparams.keys()
    for name, values in behind.hyperparams.items():
        np.testing.assert_array_equal(values, at_once.hyperparams[name])


def test_a_non_finite_phase_ends_the_run_with_the_phases_before_it(monkeypatch):
    def loss(m):  # finite while b stays near its start; phase 1 sends it far
        return jnp.where(jnp.abs(m.b).max() > 0.5, jnp.nan, quadratic(m))

    text = "optimizer sgd\nphase 5 lr 0.01 < free a >\nphase boom 50 lr 0.4 < free b >\nphase 5 lr 0.01 < free a >\nphase 5 lr 0.01 < free b >"
    program = schedc.compile(text, pair())
    (behind, failed), (at_once, failed_at_once), deferred = both_ways(monkeypatch, lambda: outcome(lambda: program.run(loss, quiet=True, fuse=False)))
    assert deferred[:2] == [True, True]  # phase 1 was read after phase 2's call was made
    assert isinstance(failed, RunError) and type(failed_at_once) is RunError
    assert str(failed) == str(failed_at_once) and "phase 1 (boom)" in str(failed)
    assert len(behind.phases) == len(at_once.phases) == 2
    assert behind.stop_reasons == at_once.stop_reasons == ["completed", "non-finite loss"]
    np.testing.assert_array_equal(behind.phases[1].losses, at_once.phases[1].losses)
    assert failed.model is behind.phases[0].model


def test_a_phase_that_fails_to_start_keeps_the_phase_read_behind(monkeypatch):
    def loss(m, x):
        return jnp.mean((x * m.a.sum() - 3.0) ** 2) + quadratic(m)

    # phase 2 asks for more examples than the data holds: its start fails (DataError)
    text = "optimizer sgd\nphase 5 lr 0.1 < free a >\nphase 5 lr 0.1 < free b >\nphase 5 batch 8 lr 0.1 < free a >\nphase 5 lr 0.1 < free b >"
    program = schedc.compile(text, pair())
    (behind, failed), (at_once, failed_at_once), deferred = both_ways(monkeypatch, lambda: outcome(lambda: program.run(loss, jnp.ones(4), quiet=True, fuse=False)))
    assert deferred[:2] == [True, True]
    assert str(failed) == str(failed_at_once) and "batch 8" in str(failed)
    assert failed.__notes__ == failed_at_once.__notes__ and "while running phase 2" in failed.__notes__[0]
    assert len(behind.phases) == len(at_once.phases) == 2  # phase 1, read behind, is kept
    np.testing.assert_array_equal(behind.phases[1].losses, at_once.phases[1].losses)


@pytest.mark.parametrize("setting", ["progress", "checkpoint"])
def test_runs_with_a_progress_bar_or_checkpoints_read_each_phase_at_once(monkeypatch, tmp_path, setting):
    program = schedc.compile(SCHEDULE, pair())
    options = dict(quiet=False) if setting == "progress" else dict(quiet=True, checkpoint=tmp_path / "run")
    if setting == "progress":  # (a bar is drawn only on a terminal)
        monkeypatch.setattr(sys.stderr, "isatty", lambda: True)

    def run():
        shutil.rmtree(tmp_path / "run", ignore_errors=True)
        return program.run(quadratic, fuse=False, **options)

    behind, at_once, deferred = both_ways(monkeypatch, run)
    assert deferred == [False] * 5 and behind.stop_reasons == at_once.stop_reasons


def test_a_signal_stops_the_run_after_the_same_phases(monkeypatch):
    # the run's second look at the signal (after phase 1, read behind during phase 2's start) finds one
    looks = []

    def stopping(self, problem=None):
        looks.append(1)
        return int(signal.SIGTERM) if len(looks) == 2 else None

    monkeypatch.setattr(Runner, "stopping", stopping)
    program = schedc.compile(SCHEDULE, pair())

    def run():
        looks.clear()
        with pytest.raises(Interrupted) as info:
            program.run(quadratic, quiet=True, fuse=False)
        return info.value

    behind, at_once, deferred = both_ways(monkeypatch, run)
    assert deferred[:2] == [True, True]
    assert (behind.signal, behind.phase, behind.step) == (at_once.signal, at_once.phase, at_once.step) == (int(signal.SIGTERM), 2, 0)
    assert behind.result.stop_reasons == at_once.result.stop_reasons == ["completed", "completed"]
    np.testing.assert_array_equal(behind.result.phases[1].losses, at_once.result.phases[1].losses)
