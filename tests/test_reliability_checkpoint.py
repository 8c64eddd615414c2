"""Checkpoints are data (issue 14): never unpickled, checksummed, the last two generations kept,
written so that a kill at any moment leaves a loadable one, and every resume bit-identical on CPU."""

from __future__ import annotations

import io
import json
import os
import pickle
import random
import signal
import subprocess
import sys
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

import schedc
from schedc.runtime import checkpoint as ckpt
from schedc.runtime.checkpoint import CheckpointError
from test_checkpoint import assert_same_outputs

TEXT = """phase 12 lr 0.05 optimizer sgd(momentum = 0.9) < free a; init b ~ normal(0, 1) >
phase 16 lr cosine(0.05 -> 0.001) optimizer sgd(momentum = 0.9) < free a, b; carry state >
phase 12 lr 0.02 < free **; init a = reset; stop when loss_change < 1e-12 over 5 after 4 >"""


def model():
    return {"a": jnp.zeros(3), "b": jnp.ones(2), "c": jnp.full((2,), 0.5)}


def loss(m):
    return jnp.sum((m["a"] - 1.0) ** 2) + jnp.sum(jnp.sin(m["b"] * m["c"]) ** 2) + 0.1 * jnp.sum(m["c"] ** 2)


@pytest.fixture(scope="module")
def program():
    return schedc.compile(TEXT, model())


@pytest.fixture(scope="module")
def whole(program):
    return program.run(loss, chunk=4, quiet=True)


def same(a, b) -> None:
    assert [p.index for p in a.phases] == [p.index for p in b.phases]
    for x, y in zip(a.phase_losses, b.phase_losses):
        np.testing.assert_array_equal(x, y)
    for k in ("a", "b", "c"):
        np.testing.assert_array_equal(a.model[k], b.model[k])
    assert a.stop_reasons == b.stop_reasons


class Killed(BaseException):
    """Stands for SIGKILL: nothing after it runs (not even `except Exception`)."""


def run_killed_at(program, folder: Path, kill_at: int, monkeypatch) -> bool:
    """Run with checkpoints, 'killing' the process at the kill_at-th durable file operation
    (fsync, rename) of the checkpoint writer; True when the kill happened."""
    calls = {"n": 0}
    real_fsync, real_replace = os.fsync, os.replace

    def counted(real):
        def op(*args):
            calls["n"] += 1
            if calls["n"] == kill_at:
                raise Killed
            return real(*args)

        return op

    monkeypatch.setattr(os, "fsync", counted(real_fsync))
    monkeypatch.setattr(os, "replace", counted(real_replace))
    try:
        program.run(loss, chunk=4, quiet=True, checkpoint=folder, checkpoint_every=1)
        return False
    except Killed:
        return True
    finally:
        monkeypatch.setattr(os, "fsync", real_fsync)
        monkeypatch.setattr(os, "replace", real_replace)


def test_a_kill_at_any_file_operation_resumes_bit_identical(program, whole, tmp_path, monkeypatch):
    """Every durable operation of a whole run's checkpointing is a kill point (the writes of
    arrays, loss logs and generation files, and the renames that commit them)."""
    points = 0
    for kill_at in range(1, 400, 3):  # every third point keeps the test short; all of them pass too
        folder = tmp_path / f"k{kill_at}"
        if not run_killed_at(program, folder, kill_at, monkeypatch):
            break
        points += 1
        resumed = program.run(loss, chunk=4, quiet=True, checkpoint=folder, checkpoint_every=1)
        same(resumed, whole)
    assert points > 15  # the run has more than 45 kill points: each one tried resumed identically


def test_random_kills_in_a_row_still_end_identical(program, whole, tmp_path, monkeypatch):
    rng = random.Random(14)
    folder = tmp_path / "ck"
    for _ in range(12):  # kill, resume (and get killed again) ...
        run_killed_at(program, folder, rng.randint(1, 30), monkeypatch)
    same(program.run(loss, chunk=4, quiet=True, checkpoint=folder), whole)


@pytest.fixture
def written(program, tmp_path):
    folder = tmp_path / "written"
    program.run(loss, chunk=4, quiet=True, checkpoint=folder, checkpoint_every=1)
    return folder


def generations(folder: Path) -> list[int]:
    return sorted(int(p.stem.split("-")[1]) for p in folder.glob("checkpoint-*.json"))


def test_the_last_two_generations_are_kept_and_nothing_else(written):
    gens = generations(written)
    assert len(gens) == 2 and gens[1] == gens[0] + 1
    names = {p.name for p in written.iterdir() if not p.name.startswith(".")}
    used = set()
    for g in gens:
        body = json.loads((written / f"checkpoint-{g}.json").read_text())["body"]
        used |= {f"checkpoint-{g}.json", body["state"]["file"]} | {e["file"] for e in body["completed"]}
        used |= {body["in_phase"]["losses"]["file"]} if body["in_phase"] else set()
    assert names == used  # every file is used by a kept generation, and every file used is there
    assert {"phase-0.npz", "phase-1.npz", "phase-2.npz"} <= names
    assert not list(written.glob(".*.tmp"))


def test_no_file_is_a_pickle(written):
    for path in written.glob("*.npz"):
        with np.load(path, allow_pickle=False) as arrays:  # raises on any object array
            for key in arrays.files:
                assert arrays[key].dtype != object
    for path in written.glob("*.json"):
        json.loads(path.read_bytes())


def flip(path: Path, bit: int) -> None:
    data = bytearray(path.read_bytes())
    data[(bit // 8) % len(data)] ^= 1 << (bit % 8)
    path.write_bytes(bytes(data))


def test_every_flipped_bit_in_the_newest_generation_falls_back_to_the_previous(program, whole, written, tmp_path, capsys):
    newest = generations(written)[-1]
    rng = random.Random(0)
    targets = [f"checkpoint-{newest}.json", f"state-{newest}.npz"]
    trials = 0
    for name in targets:
        size = (written / name).stat().st_size
        for bit in rng.sample(range(size * 8), 12):
            copy = tmp_path / f"flip-{name}-{bit}"
            copy.mkdir()
            for p in written.iterdir():
                if not p.name.startswith("."):
                    (copy / p.name).write_bytes(p.read_bytes())
            flip(copy / name, bit)
            same(program.run(loss, chunk=4, quiet=True, checkpoint=copy), whole)
            assert "resuming from the previous checkpoint" in capsys.readouterr().err
            trials += 1
    assert trials == 24


def test_a_flipped_phase_file_used_by_both_generations_is_a_clear_error(program, written):
    flip(written / "phase-0.npz", 1000)
    with pytest.raises(CheckpointError, match="no usable checkpoint.*phase-0.npz does not match its checksum"):
        program.run(loss, chunk=4, quiet=True, checkpoint=written)


@pytest.mark.parametrize("cut", [0, 1, 100])
def test_truncated_generations_are_clear_errors(program, written, cut):
    for path in written.glob("checkpoint-*.json"):
        path.write_bytes(path.read_bytes()[:cut])
    with pytest.raises(CheckpointError, match="no usable checkpoint"):
        program.run(loss, chunk=4, quiet=True, checkpoint=written)


def test_a_planted_pickle_is_never_loaded(program, tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    (tmp_path / "checkpoint.pkl").write_bytes(pickle.dumps(Payload()))
    with pytest.raises(CheckpointError, match="never loaded"):
        program.run(loss, chunk=4, quiet=True, checkpoint=tmp_path)
    assert not marker.exists()


def test_a_foreign_file_under_a_generation_name_is_refused(program, tmp_path):
    (tmp_path / "checkpoint-1.json").write_text('{"body": {"format": "other"}, "sha256": "x"}')
    with pytest.raises(CheckpointError, match="no usable checkpoint"):
        program.run(loss, chunk=4, quiet=True, checkpoint=tmp_path)


def recommit(folder: Path, generation: int, edit) -> None:
    """Rewrite a generation's state file with `edit(arrays)` and fix the checksums: a well-formed
    checkpoint whose contents do not fit the run (what a checkpoint of another version would be)."""
    state = folder / f"state-{generation}.npz"
    with np.load(state, allow_pickle=False) as arrays:
        data = {k: arrays[k] for k in arrays.files}
    edit(data)
    buffer = io.BytesIO()
    np.savez(buffer, **data)
    state.write_bytes(buffer.getvalue())
    meta = folder / f"checkpoint-{generation}.json"
    wrapper = json.loads(meta.read_text())
    wrapper["body"]["state"]["sha256"] = ckpt._sha256(buffer.getvalue())
    wrapper["sha256"] = ckpt._sha256(json.dumps(wrapper["body"], sort_keys=True).encode())
    meta.write_text(json.dumps(wrapper))


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda d: d.pop(sorted(k for k in d if k.startswith("opt_state/"))[-1]), "optimizer state has"),
        (lambda d: d.update({"free/0": np.zeros(7, np.float32)}), "free values holds"),
        (lambda d: d.pop("model/0"), "other array leaves"),
    ],
)
def test_a_checkpoint_missing_keys_or_of_another_shape_is_a_clear_error(program, tmp_path, monkeypatch, edit, message):
    assert run_killed_at(program, tmp_path, 20, monkeypatch)  # mid-phase: the state has every part
    generation = generations(tmp_path)[-1]
    body = json.loads((tmp_path / f"checkpoint-{generation}.json").read_text())["body"]
    assert body["in_phase"] is not None
    for g in generations(tmp_path):
        recommit(tmp_path, g, edit)
    with pytest.raises(CheckpointError, match=message):
        program.run(loss, chunk=4, quiet=True, checkpoint=tmp_path)


def test_losses_are_appended_not_rewritten(program, tmp_path, monkeypatch):
    sizes = []
    real = ckpt._LossLog.append

    def spy(self, losses):
        before = self.path.stat().st_size
        real(self, losses)
        sizes.append(self.path.stat().st_size - before)

    monkeypatch.setattr(ckpt._LossLog, "append", spy)
    program.run(loss, chunk=4, quiet=True, checkpoint=tmp_path, checkpoint_every=1)
    assert sizes and max(sizes) <= 4 * 4  # each write adds one chunk's losses (4 float32), never the history
    for path in tmp_path.glob("state-*.npz"):
        with np.load(path) as arrays:
            assert not any("loss" in k for k in arrays.files)


def test_one_run_per_directory(program, tmp_path):
    first = ckpt.Checkpointer(tmp_path, "x")
    first.load()
    try:
        with pytest.raises(CheckpointError, match="in use by another schedc run"):
            program.run(loss, chunk=4, quiet=True, checkpoint=tmp_path)
    finally:
        first.close()


# ---------------------------------------------------------------- real kills

MODEL_PY = '''
import jax, jax.numpy as jnp

def build():
    return {"a": jnp.zeros(3), "b": jnp.ones(2), "c": jnp.full((2,), 0.5)}

def loss(m):
    return jnp.sum((m["a"] - 1.0) ** 2) + jnp.sum(jnp.sin(m["b"] * m["c"]) ** 2) + 0.1 * jnp.sum(m["c"] ** 2)
'''


def test_sigkill_at_random_moments_resumes_bit_identical(tmp_path):
    (tmp_path / "model.py").write_text(MODEL_PY)
    (tmp_path / "fit.sched").write_text('model "model.py:build"\nloss "model.py:loss"\nseed 3\n' + TEXT.replace("phase 12", "phase 400").replace("phase 16", "phase 600") + "\n")
    command = [sys.executable, "-m", "schedc", "run", str(tmp_path / "fit.sched"), "--quiet", "--chunk", "5", "--compile-cache", "none"]
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    whole = subprocess.run(command + ["--out", str(tmp_path / "whole")], env=env, capture_output=True, timeout=240)
    assert whole.returncode == 0, whole.stderr
    rng = random.Random(3)
    ck = tmp_path / "ck"
    kills = 0
    for _ in range(3):
        proc = subprocess.Popen(command + ["--checkpoint", str(ck), "--checkpoint-every", "1"], env=env, stderr=subprocess.PIPE)
        try:
            proc.wait(timeout=rng.uniform(2.5, 6.0))
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            kills += 1
    resumed = subprocess.run(command + ["--checkpoint", str(ck), "--out", str(tmp_path / "resumed")], env=env, capture_output=True, timeout=240)
    assert resumed.returncode == 0, resumed.stderr
    assert_same_outputs(tmp_path / "whole", tmp_path / "resumed")
    assert kills >= 1
