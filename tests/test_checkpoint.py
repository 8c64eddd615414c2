"""Checkpoint and resume: a `schedc run --checkpoint` process killed mid-phase, resumed, ends bit-for-bit
where an uninterrupted run does; checkpoints of another schedule, model or key are refused."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import schedc
from schedc.runtime.checkpoint import CheckpointError

MODEL_PY = '''
import os, signal
import jax, jax.numpy as jnp

KILL_AT = int(os.environ.get("KILL_AT", "0"))
calls = [0]

if KILL_AT:
    # chunk calls run --chunk steps each, not sized by their timing (progress pacing): so the
    # KILL_AT-th loss evaluation lands in one chunk, the same on a loaded machine as on a quiet one
    from schedc.runtime import runner

    runner.Pace.observe = lambda self, ran: None


def tick(_):
    calls[0] += 1
    if calls[0] == KILL_AT:  # die mid-chunk, as a preempted job does
        os.kill(os.getpid(), signal.SIGKILL)


def build():
    return {"a": jnp.zeros(3), "b": jnp.ones(2), "c": jnp.full((2,), 0.5)}


def loss(m):
    jax.debug.callback(tick, m["a"][0])
    return jnp.sum((m["a"] - 1.0) ** 2) + jnp.sum(jnp.sin(m["b"] * m["c"]) ** 2) + 0.1 * jnp.sum(m["c"] ** 2)
'''

SCHED = """model "model.py:build"
loss  "model.py:loss"
seed 3
phase 30 lr 0.05 < free a; init b ~ normal(0, 1) >
phase 40 lr cosine(0.05 -> 0.001) optimizer sgd(momentum = 0.9) < free a, b; carry state >
phase 25 lr 0.02 < free **; init a = reset; stop when loss_change < 1e-12 over 5 after 10 >
"""


def schedc_run(folder: Path, *args, kill_at: int = 0) -> subprocess.CompletedProcess:
    env = dict(os.environ, KILL_AT=str(kill_at), JAX_PLATFORMS="cpu")
    return subprocess.run(
        [sys.executable, "-m", "schedc", "run", str(folder / "fit.sched"), "--quiet", "--chunk", "5", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )


def assert_same_outputs(a_dir: Path, b_dir: Path) -> None:
    """Two `schedc run --out` folders hold bit-identical histories and models."""
    for name in ("losses.npz", "hyperparams.npz"):
        a, b = np.load(a_dir / name), np.load(b_dir / name)
        assert sorted(a.files) == sorted(b.files)
        for key in a.files:
            np.testing.assert_array_equal(a[key], b[key])
    assert (a_dir / "model.eqx").read_bytes() == (b_dir / "model.eqx").read_bytes()


def test_a_killed_run_resumes_bit_for_bit(tmp_path):
    (tmp_path / "model.py").write_text(MODEL_PY)
    (tmp_path / "fit.sched").write_text(SCHED)
    ckpt = tmp_path / "ckpt"
    whole = schedc_run(tmp_path, "--out", str(tmp_path / "whole"))
    assert whole.returncode == 0, whole.stderr
    # 30 steps of phase 0, then 18 of phase 1: the kill lands inside phase 1's fourth chunk of 5
    killed = schedc_run(tmp_path, "--checkpoint", str(ckpt), "--checkpoint-every", "1", kill_at=48)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    newest = max(ckpt.glob("checkpoint-*.json"), key=lambda p: int(p.stem.split("-")[1]))
    saved = json.loads(newest.read_text())["body"]
    # the newest checkpoint is the one after phase 1's third chunk
    assert len(saved["completed"]) == 1 and saved["in_phase"]["phase"] == 1 and saved["in_phase"]["step0"] == 15
    resumed = schedc_run(tmp_path, "--checkpoint", str(ckpt), "--out", str(tmp_path / "resumed"))
    assert resumed.returncode == 0, resumed.stderr
    assert_same_outputs(tmp_path / "whole", tmp_path / "resumed")
    # a finished checkpoint resumes to the finished result without running anything
    again = schedc_run(tmp_path, "--checkpoint", str(ckpt), kill_at=1)
    assert again.returncode == 0, again.stderr


# ---------------------------------------------------------------- in-process


TEXT = """phase 12 lr 0.1 < free a >
phase 12 lr 0.05 < free a, b >"""


def model(n=3):
    return {"a": jnp.zeros(n), "b": jnp.ones(2)}


def loss(m):
    return jnp.sum((m["a"] - 1.0) ** 2) + jnp.sum(m["b"] ** 2)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ckpt")
    result = schedc.compile(TEXT, model()).run(loss, chunk=4, quiet=True, checkpoint=folder, checkpoint_every=1)
    return folder, result


def test_resuming_a_finished_checkpoint_returns_its_result(finished):
    folder, result = finished
    again = schedc.compile(TEXT, model()).run(loss, chunk=4, quiet=True, checkpoint=folder)
    assert again.stop_reasons == result.stop_reasons
    for a, b in zip(again.phase_losses, result.phase_losses):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(again.model["b"], result.model["b"])
    assert len(again.models) == 2


@pytest.mark.parametrize(
    "text, make, key",
    [
        (TEXT.replace("0.05", "0.04"), model, None),  # another schedule
        (TEXT, lambda: model(4), None),  # another parameter tree
        (TEXT, lambda: {"a": jnp.zeros(3), "b": jnp.ones(2), "extra": 1}, None),  # another model structure
        (TEXT, model, 5),  # another random-init key
    ],
)
def test_another_schedule_model_or_key_is_refused(finished, text, make, key):
    folder, _ = finished
    program = schedc.compile(text, make(), key=key)
    with pytest.raises(CheckpointError, match="another schedule or model"):
        program.run(loss, chunk=4, quiet=True, checkpoint=folder)


def test_reformatting_the_schedule_keeps_the_checkpoint(finished):
    folder, result = finished
    spaced = "\n\n# same program, new layout\n" + TEXT.replace(" < ", "  <  ")
    again = schedc.compile(spaced, model()).run(loss, chunk=4, quiet=True, checkpoint=folder)
    np.testing.assert_array_equal(again.loss_history, result.loss_history)


def test_a_damaged_checkpoint_is_refused(tmp_path):
    (tmp_path / "checkpoint-1.json").write_bytes(b"not json")
    with pytest.raises(CheckpointError, match="no usable checkpoint"):
        schedc.compile(TEXT, model()).run(loss, quiet=True, checkpoint=tmp_path)


def test_cli_refuses_a_foreign_checkpoint(finished, tmp_path, capsys):
    from schedc.cli import main

    folder, _ = finished
    (tmp_path / "model.py").write_text("import jax.numpy as jnp\n\ndef build():\n    return {'a': jnp.zeros(3)}\n\ndef loss(m):\n    return jnp.sum(m['a'] ** 2)\n")
    (tmp_path / "fit.sched").write_text('model "model.py:build"\nloss "model.py:loss"\nphase 5 lr 0.1 < free a >\n')
    assert main(["run", str(tmp_path / "fit.sched"), "--quiet", "--checkpoint", str(folder)]) == 2
    assert "another schedule or model" in capsys.readouterr().err


class Interrupt(Exception):
    pass


def interrupting_loss():
    """(calls, loss): `loss` counts its evaluations in `calls["n"]` and raises Interrupt at the `calls["stop_at"]`-th."""
    calls = {"n": 0, "stop_at": 0}

    def tick(_):
        calls["n"] += 1
        if calls["n"] == calls["stop_at"]:
            raise Interrupt("preempted")

    def counted(m):
        jax.debug.callback(tick, m["a"][0])
        return loss(m)

    return calls, counted


def test_resuming_at_a_phase_boundary_carries_the_optimizer_state(tmp_path):
    text = """phase 9 lr 0.05 optimizer sgd(momentum = 0.9) < free a >
    phase 9 lr 0.05 optimizer sgd(momentum = 0.9) < free a, b; carry state >"""
    calls, counted = interrupting_loss()
    program = schedc.compile(text, model())
    whole = program.run(counted, chunk=4, quiet=True)
    calls.update(n=0, stop_at=12)  # inside phase 1: only the checkpoint after phase 0 exists
    with pytest.raises(Exception, match="preempted"):
        program.run(counted, chunk=4, quiet=True, checkpoint=tmp_path, checkpoint_every=0)
    calls.update(n=0, stop_at=0)
    resumed = program.run(counted, chunk=4, quiet=True, checkpoint=tmp_path)
    assert calls["n"] == 9  # phase 1 only
    for a, b in zip(whole.phase_losses, resumed.phase_losses):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(whole.model["a"], resumed.model["a"])


@pytest.mark.parametrize("every, stop_at, rerun", [(0, 12, 9), (1, 15, 5)], ids=["at-the-boundary", "mid-phase"])
def test_an_optimizer_state_holding_a_prng_key_resumes_bit_for_bit(every, stop_at, rerun, tmp_path):
    """`noisy_sgd`'s state holds a typed PRNG key (numpy has no dtype for it: its key data is
    saved), carried into the next phase and resumed at its boundary or inside it."""
    text = """phase 9 lr 0.05 optimizer noisy_sgd(eta = 0.5, key = 3) < free a >
    phase 9 lr 0.05 optimizer noisy_sgd(eta = 0.5, key = 3) < free a, b; carry state >"""
    calls, counted = interrupting_loss()
    program = schedc.compile(text, model())
    whole = program.run(counted, chunk=4, quiet=True)
    calls.update(n=0, stop_at=stop_at)  # inside phase 1 (its steps are the 10th to the 18th)
    with pytest.raises(Exception, match="preempted"):
        program.run(counted, chunk=4, quiet=True, checkpoint=tmp_path, checkpoint_every=every)
    calls.update(n=0, stop_at=0)
    resumed = program.run(counted, chunk=4, quiet=True, checkpoint=tmp_path)
    assert calls["n"] == rerun
    for a, b in zip(whole.phase_losses, resumed.phase_losses):
        assert a.tobytes() == b.tobytes()
    assert all(np.asarray(x).tobytes() == np.asarray(y).tobytes() for x, y in zip(jax.tree_util.tree_leaves(whole.model), jax.tree_util.tree_leaves(resumed.model)))
    quiet = schedc.compile(text.replace("eta = 0.5", "eta = 0.0"), model()).run(loss, chunk=4, quiet=True)
    assert not np.array_equal(quiet.phase_losses[1], whole.phase_losses[1])  # (the noise is in the losses compared)


def test_a_model_keeping_a_prng_key_leaf_resumes_bit_for_bit_and_saves(tmp_path):
    """A typed key leaf of the model (fixed) is checkpointed as its key data, wrapped again on
    resume; `schedc run --out` writes it the same way and `schedc.read_model` reads it back a key."""
    from schedc.cli.commands.run import save

    keyed = {**model(), "k": jax.random.key(7)}
    calls, counted = interrupting_loss()

    def keyed_loss(m):  # the key draws a fixed target
        return counted({"a": m["a"] - jax.random.normal(m["k"], (3,)), "b": m["b"]})

    program = schedc.compile("phase 12 lr 0.05 optimizer sgd(momentum = 0.9) < free a, b >", keyed)
    whole = program.run(keyed_loss, chunk=4, quiet=True)
    calls.update(n=0, stop_at=10)  # in the 3rd chunk: checkpoints after the first two
    with pytest.raises(Exception, match="preempted"):
        program.run(keyed_loss, chunk=4, quiet=True, checkpoint=tmp_path / "ck", checkpoint_every=1)
    calls.update(n=0, stop_at=0)
    resumed = program.run(keyed_loss, chunk=4, quiet=True, checkpoint=tmp_path / "ck")
    assert calls["n"] == 4
    assert resumed.phase_losses[0].tobytes() == whole.phase_losses[0].tobytes()
    assert jax.random.key_data(resumed.model["k"]).tolist() == jax.random.key_data(keyed["k"]).tolist()
    save(resumed, tmp_path / "out")
    back = schedc.read_model(tmp_path / "out" / "model.eqx", {**model(), "k": jax.random.key(0)})
    assert jax.random.key_data(back["k"]).tolist() == jax.random.key_data(keyed["k"]).tolist()
    assert np.asarray(back["a"]).tobytes() == np.asarray(whole.model["a"]).tobytes()


def test_a_bfloat16_model_and_loss_resume_bit_for_bit(tmp_path):
    """npz files keep bfloat16 (an ml_dtypes type numpy has not) as raw bytes (`|V2`): the model,
    its Adam moments, the completed phase's losses and the phase's loss log are read back as
    bfloat16."""
    text = "phase 6 lr 0.05 optimizer adam < free a, b >\nphase 6 lr 0.05 optimizer adam < free a; carry state >"
    calls, counted = interrupting_loss()
    program = schedc.compile(text, {"a": jnp.zeros(3, jnp.bfloat16), "b": jnp.ones(2, jnp.bfloat16)})
    whole = program.run(counted, chunk=2, quiet=True)
    assert whole.phase_losses[0].dtype == jnp.bfloat16
    calls.update(n=0, stop_at=11)  # in phase 1's 3rd chunk
    with pytest.raises(Exception, match="preempted"):
        program.run(counted, chunk=2, quiet=True, checkpoint=tmp_path, checkpoint_every=1)
    calls.update(n=0, stop_at=0)
    resumed = program.run(counted, chunk=2, quiet=True, checkpoint=tmp_path)
    assert calls["n"] == 2 and resumed.model["a"].dtype == jnp.bfloat16
    for a, b in zip(whole.phase_losses, resumed.phase_losses):
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes()
    assert np.asarray(resumed.model["a"]).tobytes() == np.asarray(whole.model["a"]).tobytes()


def test_a_plateau_on_a_metric_resumes_mid_phase_where_it_was(tmp_path):
    """The plateau's state (stepped by the evaluations so far) is in the checkpoint's optimizer state."""
    text = 'eval "m.py:metrics" every 4 steps\noptimizer sgd\nphase 24 lr 0.5 * plateau(on=val.gap, factor=0.5, patience=1) < free a, b >'

    def metrics(m):  # falls, then stalls at a floor: the plateau fires before and after the resume point
        return {"gap": jnp.maximum(loss(m), 1.9)}

    calls, counted = interrupting_loss()
    program = schedc.compile(text, model())
    whole = program.run(counted, chunk=4, quiet=True, metrics=metrics)
    calls.update(n=0, stop_at=15)  # in the 4th chunk: checkpoints after chunks 1-3 (12 steps, 3 evaluations)
    with pytest.raises(Exception, match="preempted"):
        program.run(counted, chunk=4, quiet=True, metrics=metrics, checkpoint=tmp_path, checkpoint_every=1)
    calls.update(n=0, stop_at=0)
    resumed = program.run(counted, chunk=4, quiet=True, metrics=metrics, checkpoint=tmp_path)
    assert calls["n"] == 12
    scales = whole.hyperparams["plateau_scale"]
    assert scales[:12].min() < 1.0 and scales[12:].min() < scales[:12].min()  # it fired before the resume point and after
    np.testing.assert_array_equal(resumed.hyperparams["plateau_scale"], scales)
    np.testing.assert_array_equal(resumed.loss_history, whole.loss_history)


def test_the_plateau_scale_log_is_whole_after_a_mid_phase_resume(tmp_path):
    text = "phase 24 lr 0.5 * plateau(factor=0.5, patience=1, cooldown=0) optimizer sgd < free a, b >"
    calls, counted = interrupting_loss()
    program = schedc.compile(text, model())
    whole = program.run(counted, chunk=4, quiet=True, fuse=False)
    calls.update(n=0, stop_at=15)  # in the 4th chunk: checkpoints after chunks 1-3 (12 steps)
    with pytest.raises(Exception, match="preempted"):
        program.run(counted, chunk=4, quiet=True, checkpoint=tmp_path, checkpoint_every=1)
    calls.update(n=0, stop_at=0)
    resumed = program.run(counted, chunk=4, quiet=True, checkpoint=tmp_path)
    assert calls["n"] == 12  # the steps after the checkpoint only
    scales = whole.hyperparams["plateau_scale"]
    assert scales.min() < 1.0  # the plateau fired, before and after the resume point
    np.testing.assert_array_equal(resumed.hyperparams["plateau_scale"], scales)  # no NaN for the steps before the resume
    np.testing.assert_array_equal(resumed.loss_history, whole.loss_history)


def test_read_model_says_when_the_file_is_not_of_this_model(tmp_path):
    """A `like` with fewer leaves than the file read the file's first arrays into it in silence; one
    with more was "Error at leaf with path ..."; a folder "No such file: 'out.eqx'"."""
    saved = {"a": jnp.arange(3.0), "b": jnp.asarray(2.0)}
    path = tmp_path / "model.eqx"
    eqx.tree_serialise_leaves(path, saved)
    back = schedc.read_model(path, {"a": jnp.zeros(3), "b": jnp.zeros(())})
    assert np.array_equal(back["a"], saved["a"]) and float(back["b"]) == 2.0
    with pytest.raises(ValueError, match=r"model.eqx holds more arrays than `like` has: it was saved from another model$"):
        schedc.read_model(path, {"a": jnp.zeros(3)})
    with pytest.raises(ValueError, match=r"does not hold a model like `like`: .*path \(DictKey\(key='c'\),\): EOFError"):
        schedc.read_model(path, {"a": jnp.zeros(3), "b": jnp.zeros(()), "c": jnp.zeros(())})
    with pytest.raises(ValueError, match=r"does not hold a model like `like`: .*changed shape from \(2,\) in `like` to \(3,\) on disk"):
        schedc.read_model(path, {"a": jnp.zeros(2), "b": jnp.zeros(())})
    with pytest.raises(FileNotFoundError, match=r"^no such model file: .* \(a folder: name the model.eqx in it\)$"):
        schedc.read_model(tmp_path, saved)
