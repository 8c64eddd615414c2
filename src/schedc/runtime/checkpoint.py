"""Checkpoint and resume: a run killed mid-phase picks up where its last checkpoint left it.

A run with `checkpoint=DIR` writes `DIR/checkpoint.pkl` after every phase and
every N chunks within a phase (atomically: a kill never leaves half a file).
It holds every completed phase (its histories and the model's array leaves),
the optimizer state the next phase may carry, and, mid-phase, the phase's
model, free values, optimizer state, stop-rule state and losses so far (the
logged hyperparameters are functions of the step, recomputed after the phase).
Resuming feeds the same numbers to the same compiled chunks, so on CPU the
resumed run ends bit-for-bit where an uninterrupted one does.

A checkpoint belongs to one schedule on one model: its fingerprint hashes the
Plan (everything but source positions), the parameter tree (paths, shapes,
dtypes, ties), the model's tree structure and the random-init key. Resuming
with anything else is refused with `CheckpointError`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np

FILE = "checkpoint.pkl"
VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint that cannot be resumed here (another schedule or model, or an unreadable file)."""


def _canonical(value) -> Any:
    """A hashable description of plan data: dataclasses by their compared fields (spans and source excluded)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return (type(value).__name__,) + tuple(
            (f.name, _canonical(getattr(value, f.name))) for f in dataclasses.fields(value) if f.compare and f.name != "source"
        )
    if isinstance(value, (tuple, list)):
        return tuple(_canonical(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((str(k), _canonical(v)) for k, v in value.items()))
    return repr(value)


def fingerprint(plan, tree, model, key) -> str:
    """The content hash a checkpoint is tied to."""
    import jax

    parts = (
        _canonical(plan),
        tuple((p.path, p.shape, p.dtype, p.shared) for p in tree.params),
        str(jax.tree_util.tree_structure(model)),
        np.asarray(jax.random.key_data(key)).tobytes().hex() if key is not None else None,
    )
    return hashlib.sha256(repr(parts).encode()).hexdigest()


def _host(tree):
    """A pytree with every array copied to the host (numpy), so it pickles without JAX device state."""
    import jax

    return jax.tree_util.tree_map(lambda x: np.asarray(x) if isinstance(x, (jax.Array, np.ndarray, np.generic)) else x, tree)


def _device(tree):
    import jax
    import jax.numpy as jnp

    return jax.tree_util.tree_map(lambda x: jnp.asarray(x) if isinstance(x, np.ndarray) else x, tree)


def _leaves(model) -> list:
    """The model's leaves on the host: arrays as numpy, anything else None (it comes from the model given)."""
    import jax

    return [np.asarray(x) if isinstance(x, (jax.Array, np.ndarray)) else None for x in jax.tree_util.tree_leaves(model)]


def _rebuild(template, leaves: list):
    """`template` with its array leaves replaced by the saved ones."""
    import jax
    import jax.numpy as jnp

    old, treedef = jax.tree_util.tree_flatten(template)
    return jax.tree_util.tree_unflatten(treedef, [jnp.asarray(s) if s is not None else o for o, s in zip(old, leaves)])


class Checkpointer:
    """The runner's checkpoint hooks (`runner.Runner.checkpoint`), reading and writing its public `runner.state` for one directory.

    Args:
        directory: where `checkpoint.pkl` lives (created if missing).
        fingerprint: the schedule-and-model hash (`fingerprint()`).
        every: write a mid-phase checkpoint every this many chunks (0: only after phases).
    """

    def __init__(self, directory, fingerprint: str, every: int = 10):
        self.directory = Path(directory)
        self.fingerprint = fingerprint
        self.every = int(every)
        self.chunks = 0
        self.completed: list[dict] = []  # PhaseResult fields (the model as leaves)
        self.previous = None  # (phase index, host optimizer state) the next phase may carry
        self.pending: dict | None = None  # the in-phase state to resume, consumed by `restore`

    @property
    def path(self) -> Path:
        return self.directory / FILE

    # ---- reading

    def load(self) -> bool:
        """Read the directory's checkpoint, if any; True when there is one to resume from.

        Raises:
            CheckpointError: when it belongs to another schedule or model, or cannot be read.
        """
        if not self.path.exists():
            return False
        try:
            with open(self.path, "rb") as f:
                data = pickle.load(f)
        except Exception as exc:  # a truncated or foreign file
            raise CheckpointError(f"{self.path}: not a readable schedc checkpoint ({type(exc).__name__}: {exc})") from None
        if not isinstance(data, dict) or data.get("version") != VERSION:
            raise CheckpointError(f"{self.path}: not a schedc checkpoint of format version {VERSION}")
        if data["fingerprint"] != self.fingerprint:
            raise CheckpointError(
                f"{self.path} was written by another schedule or model (fingerprint {data['fingerprint'][:12]}, this run {self.fingerprint[:12]}): "
                "the plan, the parameter tree, the model's structure or the random-init key differ; "
                "use another directory, or delete it to start over"
            )
        self.completed, self.previous, self.pending = data["completed"], data["previous"], data["in_phase"]
        return True

    def resume(self, runner, model):
        """(model to start from, the Result so far, index of the next phase) after `load()`."""
        from schedc.compiler import chunk as C
        from schedc.runtime.runner import PhaseResult, Result, RunnerState

        result = Result(initial_model=model)
        current = model
        for fields in self.completed:
            fields = dict(fields)
            current = _rebuild(model, fields.pop("leaves"))
            result.phases.append(PhaseResult(model=current, **fields))
        if self.previous is not None:
            index, state = self.previous
            signature = C.prepare(runner.plan.phases[index], runner.leaves, runner.chunk).signature
            runner.state = RunnerState(index, signature, _device(state))
        return current, result, len(self.completed)

    # ---- the runner's hooks

    def restore(self, index: int, fresh: dict) -> dict:
        """The phase's starting state: `fresh` (after inits), or the saved mid-phase state of phase `index`."""
        saved, self.pending = self.pending, None
        if saved is None or saved["phase"] != index:
            return fresh
        return {
            "model": _rebuild(fresh["model"], saved["model"]),
            "free": _device(saved["free"]),
            "opt_state": _device(saved["opt_state"]),
            "stop": saved["stop"],
            "losses": list(saved["losses"]),
            "step0": saved["step0"],
        }

    def after_chunk(self, runner, index: int, state: dict, final: bool = False) -> None:
        """Called after each chunk that leaves the phase unfinished; writes every `every` chunks,
        and always when `final` (the run is being interrupted)."""
        self.chunks += 1
        if not final and (self.every <= 0 or self.chunks % self.every):
            return
        in_phase = {
            "phase": index,
            "model": _leaves(state["model"]),
            "free": _host(state["free"]),
            "opt_state": _host(state["opt_state"]),
            "stop": _host(state["stop"]),
            "losses": [np.asarray(x) for x in state["losses"]],
            "step0": int(state["step0"]),
        }
        self._write(in_phase)

    def after_phase(self, runner, result) -> None:
        """Called after each completed phase: records it and writes."""
        p = result.phases[-1]
        fields = {f.name: getattr(p, f.name) for f in dataclasses.fields(p) if f.name != "model"}
        fields["leaves"] = _leaves(p.model)
        self.completed.append(fields)
        if runner.state.signature is not None:
            self.previous = (runner.state.phase, _host(runner.state.opt_state))
        self._write(None)

    def _write(self, in_phase: dict | None) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        data = {"version": VERSION, "fingerprint": self.fingerprint, "completed": self.completed, "previous": self.previous, "in_phase": in_phase}
        temporary = self.path.with_suffix(f".tmp{os.getpid()}")
        with open(temporary, "wb") as f:
            pickle.dump(data, f, protocol=pickle.HIGHEST_PROTOCOL)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, self.path)


def run(program, runner, directory, every: int = 10):
    """Run `program` with checkpoints in `directory`, resuming from the one there if any.

    Raises:
        CheckpointError: when the directory holds another schedule's or model's checkpoint.
    """
    checkpointer = Checkpointer(directory, fingerprint(program.plan, program.tree, program.model, program.key), every)
    runner.checkpoint = checkpointer
    if not checkpointer.load():
        return runner.run(program.model)
    model, result, start = checkpointer.resume(runner, program.model)
    runner.begin(program.model)
    return runner.run(model, start, result)
