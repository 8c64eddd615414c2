"""Checkpoint and resume: a run killed mid-phase picks up where its last checkpoint left it.

A run with `checkpoint=DIR` writes a checkpoint after every phase and every N chunks within a
phase. It holds every completed phase (its histories and the model's array leaves), the
optimizer state the next phase may carry, and, mid-phase, the phase's model, free values,
optimizer state, stop-rule state, losses and plateau scales so far, its evaluations (values, steps, the best of
each rule: the patience counts) with the free values `keep best` holds, its aux metrics, and
where an iterable of batches stood (runtime.stream: JSON). Resuming feeds the same numbers to the same
compiled chunks, so on CPU the resumed run ends bit-for-bit where an uninterrupted one does.

Checkpoints are data, not code: arrays in `.npz` files read with `allow_pickle=False`, the rest
in JSON; pytrees are rebuilt from the structure the resuming run has itself (a saved tree whose
leaves do not fit it is refused). The layout (why not orbax: docs/reliability.md):

    DIR/checkpoint-GEN.json   one generation: what to resume from, with a SHA-256 of every file
                              it uses and of itself; written last, so it is the commit point
    DIR/state-GEN.npz         that generation's arrays (the model, the phase's state)
    DIR/phase-K.npz           completed phase K: losses, hyperparameters, model (written once)
    DIR/losses-K.bin          the losses of phase K in progress, appended to (never rewritten)

Every file is written beside its name and renamed (`tooling.files`); the last two generations
are kept. Loading takes the newest generation whose files all check out: a truncated, flipped
or foreign file makes it fall back to the one before (with a warning), and only when none is
usable is the directory refused with `CheckpointError`.

A checkpoint belongs to one schedule on one model: its fingerprint hashes the Plan (everything
but source positions), the parameter tree (paths, shapes, dtypes, ties), the model's tree
structure and the random-init key. Resuming with anything else is refused with `CheckpointError`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from schedc.runtime import distributed
from schedc.runtime.dtypes import key_data, wrapped_like
from schedc.tooling.files import atomic_write

VERSION = 2
KEEP = 2  # generations kept: the newest, and the one before in case the newest is damaged
_GENERATION = re.compile(r"checkpoint-(\d+)\.json$")
_LEGACY = "checkpoint.pkl"  # schedc <= 0.1's pickle: never loaded


class CheckpointError(ValueError):
    """A checkpoint that cannot be resumed here (another schedule or model, or no readable generation)."""


class _Damaged(Exception):
    """One generation that does not check out (the message says why); the loader tries the one before."""


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


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# npz keeps a dtype numpy has not (ml_dtypes' bfloat16, float8_*) as raw bytes of its size (`|V2`):
# its name is written beside the array, under this prefix, and the array read back as it
_DTYPE_OF = "dtype-of/"


def _npz(arrays: dict[str, np.ndarray]) -> bytes:
    buffer = io.BytesIO()
    named = {_DTYPE_OF + k: np.array(dtype.name) for k, v in arrays.items() if (dtype := np.asarray(v).dtype).kind == "V"}
    np.savez(buffer, **arrays, **named)
    return buffer.getvalue()


def _typed(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The arrays `_npz` wrote, each of a dtype numpy has not read back as that dtype."""
    names = {k[len(_DTYPE_OF) :]: str(v) for k, v in arrays.items() if k.startswith(_DTYPE_OF)}
    return {k: v.view(np.dtype(names[k])) if k in names else v for k, v in arrays.items() if not k.startswith(_DTYPE_OF)}


def _host_leaves(tree) -> list[np.ndarray]:
    import jax

    return [distributed.host_array(key_data(x)) for x in jax.tree_util.tree_leaves(tree)]


def _dtype(x) -> np.dtype:
    """A leaf's dtype without copying it to the host (it may be sharded over other processes)."""
    return np.dtype(x.dtype) if hasattr(x, "dtype") else np.asarray(x).dtype


def _dtype_text(dtype: np.dtype) -> str:
    """A dtype as the JSON records it: numpy's code (`<f4`), or the name of one numpy has not
    (ml_dtypes' `bfloat16`, whose code `<V2` would read back as raw bytes)."""
    return dtype.name if dtype.kind == "V" else dtype.str


def _fill(template, leaves: list[np.ndarray], what: str):
    """`template`'s structure with the saved leaves, which must match it leaf for leaf (shape, dtype)."""
    import jax

    old, treedef = jax.tree_util.tree_flatten(template)
    if len(old) != len(leaves):
        raise CheckpointError(f"the checkpoint's {what} has {len(leaves)} arrays, this run's has {len(old)}: it was written by another version or setup")
    return jax.tree_util.tree_unflatten(treedef, [_restored(x, o, what) for x, o in zip(leaves, old)])


def _restored(saved: np.ndarray, template, what: str):
    """A saved leaf, which must have `template`'s shape and dtype, placed as `template` is (a key
    array again where `template` is one)."""
    data = key_data(template)
    dtype = _dtype(data)
    if np.shape(data) != saved.shape or dtype != saved.dtype:
        raise CheckpointError(f"the checkpoint's {what} holds a {saved.dtype}{list(saved.shape)} where this run's has {dtype}{list(np.shape(data))}")
    return wrapped_like(distributed.placed_like(saved, data), template)


def _model_leaves(model) -> dict[str, np.ndarray]:
    """The model's array leaves by position (other leaves come from the model given on resume)."""
    import jax

    return {str(i): distributed.host_array(key_data(x)) for i, x in enumerate(jax.tree_util.tree_leaves(model)) if isinstance(x, (jax.Array, np.ndarray))}


def _rebuild(template, saved: dict[str, np.ndarray]):
    """`template` with its array leaves replaced by the saved ones (checked like `_fill`)."""
    import jax

    old, treedef = jax.tree_util.tree_flatten(template)
    expected = {str(i) for i, x in enumerate(old) if isinstance(x, (jax.Array, np.ndarray))}
    if set(saved) != expected:
        raise CheckpointError("the checkpoint's model has other array leaves than this run's model")
    leaves = [_restored(saved[str(i)], o, "model") if str(i) in saved else o for i, o in enumerate(old)]
    return jax.tree_util.tree_unflatten(treedef, leaves)


def _phase_record(phase) -> tuple[dict, dict[str, np.ndarray]]:
    """A PhaseResult (but its models) as (JSON fields, arrays): array fields and dicts of arrays
    (histories, hyperparameters, metrics) go to the arrays, the rest is plain JSON."""
    fields, arrays = {}, {}
    for f in dataclasses.fields(phase):
        value = getattr(phase, f.name)
        if f.name in ("model", "ema_model", "state"):  # pytrees: saved as leaves beside the record
            continue
        if isinstance(value, Mapping):  # a dict, or the lazy runner.Hyperparams
            fields[f.name] = {"dict": list(value)}
            arrays.update({f"{f.name}/{i}": np.asarray(v) for i, v in enumerate(value.values())})
        elif isinstance(value, (np.ndarray, list, tuple)) or hasattr(value, "__jax_array__"):
            fields[f.name] = {"array": True}
            arrays[f.name] = np.asarray(value)
        else:
            fields[f.name] = {"value": value.item() if isinstance(value, np.generic) else value}
    return fields, arrays


def _phase_fields(fields: dict, arrays: dict[str, np.ndarray]) -> dict:
    """The PhaseResult fields `_phase_record` recorded, back from JSON and arrays."""
    out = {}
    for name, kind in fields.items():
        if "dict" in kind:
            out[name] = {key: arrays[f"{name}/{i}"] for i, key in enumerate(kind["dict"])}
        elif "array" in kind:
            out[name] = arrays[name]
        else:
            out[name] = kind["value"]
    return out


def _group(arrays: dict[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    return {k[len(prefix) :]: v for k, v in arrays.items() if k.startswith(prefix)}


def _ordered(group: dict[str, np.ndarray]) -> list[np.ndarray]:
    return [group[k] for k in sorted(group, key=int)]


class _LossLog:
    """The losses of the phase in progress, appended to `losses-K.bin` at each checkpoint (raw
    values; the generation records how many are valid and the SHA-256 of that prefix), so a
    checkpoint writes only what is new instead of the whole history."""

    def __init__(self, path: Path, phase: int, dtype: str, valid: bytes = b"", write: bool = True):
        self.path, self.phase, self.dtype, self.write = path, phase, dtype, write
        if write:
            with open(path, "r+b" if path.exists() else "wb") as f:
                f.truncate(len(valid))  # anything past the recorded count is a write a kill interrupted
        self.hash = hashlib.sha256(valid)
        self.count = len(valid) // np.dtype(dtype).itemsize
        self.chunks = 1 if valid else 0  # entries of the runner's `losses` list already written

    def append(self, losses: list) -> None:
        new = [np.asarray(x) for x in losses[self.chunks :]]
        data = np.concatenate(new).astype(self.dtype).tobytes() if new else b""
        if self.write:
            with open(self.path, "ab") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        self.hash.update(data)
        self.count += len(data) // np.dtype(self.dtype).itemsize
        self.chunks = len(losses)

    def record(self) -> dict:
        return {"file": self.path.name, "count": self.count, "dtype": self.dtype, "sha256": self.hash.hexdigest()}


class Checkpointer:
    """The runner's checkpoint hooks (`runner.Runner.checkpoint`) for one directory.

    Args:
        directory: where the checkpoint files live (created if missing).
        fingerprint: the schedule-and-model hash (`fingerprint()`).
        every: write a mid-phase checkpoint every this many chunks (0: only after phases).

    In a run across processes (`jax.distributed`) every process runs the hooks, gathering the
    arrays sharded over other processes (a collective), and process 0 alone writes and locks
    the directory; every process reads it to resume (the directory must be shared).
    """

    def __init__(self, directory, fingerprint: str, every: int = 10):
        from schedc.runtime.runner import whole_number

        self.directory = Path(directory)
        self.fingerprint = fingerprint
        self.every = whole_number("checkpoint_every", every, 0)
        self.chunks = 0
        self.generation = 0  # the newest generation on disk (written or loaded)
        self.kept: list[dict] = []  # bodies of the generations kept (newest last)
        self.completed: list[dict] = []  # {"fields", "file", "sha256"} per completed phase
        self.phase_arrays: list[dict] = []  # the completed phases' arrays, as loaded
        self.previous: tuple[int, list] | None = None  # (phase index, host leaves of its optimizer state)
        self.pending: dict | None = None  # the in-phase state to resume, consumed by `restore`
        self.log: _LossLog | None = None
        self._lock = None
        self.writer = distributed.is_writer()

    # ---- reading

    def load(self) -> bool:
        """Take the directory (a lock: one run at a time) and read its newest usable generation.

        Returns True when there is one to resume from.

        Raises:
            CheckpointError: when it belongs to another schedule or model, when no generation is
            usable, or when another run holds the directory.
        """
        self.directory.mkdir(parents=True, exist_ok=True)
        if self.writer:
            self._take_lock()
            for name in ("checkpoint-", "state-", "phase-"):
                for stale in self.directory.glob(f".{name}*.tmp"):
                    stale.unlink(missing_ok=True)
        with distributed.Held() as reading:  # (a directory one process cannot read: raised on every process)
            found = self._load()
        # (a collective: no process writes or deletes anything before every process has read the directory)
        found = distributed.agree(reading.problem, [found])[:, 0]
        if found.min() != found.max():
            raise CheckpointError(
                f"{self.directory}: {distributed.named(np.flatnonzero(found))} found a checkpoint there and {distributed.named(np.flatnonzero(found == 0))} did not; "
                "expected a directory every process shares (each process reads it to resume)"
            )
        return bool(found[0])

    def _load(self) -> bool:
        generations = sorted((int(m.group(1)) for p in self.directory.iterdir() if (m := _GENERATION.match(p.name))), reverse=True)
        if not generations:
            if (self.directory / _LEGACY).exists():
                raise CheckpointError(
                    f"{self.directory / _LEGACY} is a pickle checkpoint of an earlier schedc: it is never loaded "
                    "(unpickling can run code); delete it, or use another directory, to start over"
                )
            return False
        problems = []
        for generation in generations:
            try:
                body = self._read(generation)
                break
            except _Damaged as exc:
                problems.append(f"checkpoint-{generation}.json: {exc}")
        else:
            raise CheckpointError(f"{self.directory}: no usable checkpoint ({'; '.join(problems)}); delete the directory to start over")
        if problems:
            print(f"schedc: {'; '.join(problems)}; resuming from the previous checkpoint (generation {generation})", file=sys.stderr)
        self.generation = generations[0]
        self.kept = [body]
        return True

    def _read(self, generation: int) -> dict:
        """Check one generation from end to end and take its state; _Damaged when anything is off."""
        try:
            wrapper = json.loads((self.directory / f"checkpoint-{generation}.json").read_bytes())
            body, digest = wrapper["body"], wrapper["sha256"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise _Damaged(f"unreadable ({type(exc).__name__})") from None
        if _sha256(json.dumps(body, sort_keys=True).encode()) != digest:
            raise _Damaged("its contents do not match their checksum")
        if not isinstance(body, dict) or body.get("format") != "schedc-checkpoint" or body.get("version") != VERSION:
            raise _Damaged(f"not a schedc checkpoint of format version {VERSION}")
        if body["fingerprint"] != self.fingerprint:
            raise CheckpointError(
                f"{self.directory} was written by another schedule or model (fingerprint {body['fingerprint'][:12]}, this run {self.fingerprint[:12]}): "
                "the plan, the parameter tree, the model's structure or the random-init key differ; "
                "use another directory, or delete it to start over"
            )
        phases = [self._arrays(entry) for entry in body["completed"]]
        state = self._arrays(body["state"])
        in_phase = body["in_phase"]
        losses = None
        if in_phase is not None:
            record = in_phase["losses"]
            size = record["count"] * np.dtype(record["dtype"]).itemsize
            try:
                with open(self.directory / record["file"], "rb") as f:
                    valid = f.read(size)
            except OSError as exc:
                raise _Damaged(f"{record['file']}: {exc.strerror or exc}") from None
            if len(valid) != size or _sha256(valid) != record["sha256"]:
                raise _Damaged(f"{record['file']} does not match its checksum")
            losses = valid
        self.completed, self.phase_arrays = list(body["completed"]), phases
        self.previous = (body["previous"], _ordered(_group(state, "previous/"))) if body["previous"] is not None else None
        self.pending = None
        if in_phase is not None:
            self.pending = {
                "phase": in_phase["phase"],
                "step0": in_phase["step0"],
                "losses": losses,
                "dtype": in_phase["losses"]["dtype"],
                "arrays": state,
                "evals": in_phase.get("evals"),
                "aux": in_phase.get("aux"),
                "data": in_phase.get("data"),  # where an iterable of batches stood (runtime.stream)
            }
        return body

    def _arrays(self, entry: dict):
        """A file the generation names, checked against its checksum and read as arrays only."""
        try:
            data = (self.directory / entry["file"]).read_bytes()
        except OSError as exc:
            raise _Damaged(f"{entry['file']}: {exc.strerror or exc}") from None
        if _sha256(data) != entry["sha256"]:
            raise _Damaged(f"{entry['file']} does not match its checksum")
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
                return _typed({k: arrays[k] for k in arrays.files})
        except Exception as exc:  # checksummed, so only a file we did not write
            raise _Damaged(f"{entry['file']}: {type(exc).__name__}") from None

    def resume(self, runner, model):
        """(model to start from, the Result so far, index of the next phase) after `load()`."""
        from schedc.runtime.runner import PhaseResult, Result, RunnerState

        result = Result(initial_model=model)
        current = model
        for entry, arrays in zip(self.completed, self.phase_arrays):
            current = _rebuild(model, _group(arrays, "model/"))
            ema = _rebuild(model, _group(arrays, "ema/")) if entry["ema"] else None
            # the model state (eqx.nn.State) after the phase: its structure is the one this run was given
            state = _fill(runner.model_state, _ordered(_group(arrays, "state/")), "model state") if entry.get("state") else None
            result.phases.append(PhaseResult(model=current, ema_model=ema, state=state, **_phase_fields(entry["fields"], arrays)))
            runner.model_state = state if state is not None else runner.model_state
        if self.previous is not None:
            index, leaves = self.previous
            # the optimizer state's structure comes from this run: the phase's fresh state
            start = runner.start_phase(runner.plan.phases[index], current)
            runner.state = RunnerState(index, start.prepared.signature, _fill(start.opt_state, leaves, "carried optimizer state"))
        return current, result, len(self.completed)

    # ---- the runner's hooks

    def restore(self, index: int, fresh: dict) -> dict:
        """The phase's starting state: `fresh` (after inits), or the saved mid-phase state of phase `index`."""
        saved, self.pending = self.pending, None
        if saved is None or saved["phase"] != index:
            return fresh
        arrays = saved["arrays"]
        self.log = _LossLog(self.directory / f"losses-{index}.bin", index, saved["dtype"], saved["losses"], self.writer)
        if saved["evals"] is not None:  # the evaluations so far, patience counts and `keep best` values
            kept = _group(arrays, "kept/")
            evals = saved["evals"]
            template = (fresh["free"], fresh["stop"].get("model_state"))
            fresh["evals"].resume(evals, _fill(template, _ordered(kept), "kept values") if evals["kept_step"] is not None else None)
        if saved["aux"] is not None:
            fresh["aux"].resume(saved["aux"], _group(arrays, "aux/"))
        return {
            "model": _rebuild(fresh["model"], _group(arrays, "model/")),
            "free": _fill(fresh["free"], _ordered(_group(arrays, "free/")), "free values"),
            "opt_state": _fill(fresh["opt_state"], _ordered(_group(arrays, "opt_state/")), "optimizer state"),
            "stop": _fill(fresh["stop"], _ordered(_group(arrays, "stop/")), "stop-rule state"),
            "losses": [np.frombuffer(saved["losses"], dtype=saved["dtype"]).copy()],
            "scales": [arrays["scales"]] if "scales" in arrays else [],  # the plateau scales applied so far
            "step0": saved["step0"],
            "data": saved["data"],
        }

    def due(self) -> bool:
        """Called after each chunk that leaves the phase unfinished: whether a checkpoint is written
        now (`after_chunk`): every `every` chunks (the runner writes the final one of an interrupted
        run itself, `Runner._between_chunks`). Asked first, so the runner gathers the data position
        only for a write."""
        self.chunks += 1
        return self.every > 0 and self.chunks % self.every == 0

    def after_chunk(self, runner, index: int, state: dict) -> None:
        """The mid-phase checkpoint of phase `index` (`state`: the runner's, with its data position).

        Across processes the arrays are gathered (collectives) before process 0 writes anything: a
        write that fails on it alone leaves no process waiting in a gather (the runner agrees the
        failure: `distributed.Held`)."""
        arrays = {f"model/{k}": v for k, v in _model_leaves(state["model"]).items()}
        for part in ("free", "opt_state", "stop"):
            arrays.update({f"{part}/{i}": x for i, x in enumerate(_host_leaves(state[part]))})
        evals, kept = state["evals"].snapshot()
        aux, means = state["aux"].snapshot()
        arrays.update({f"kept/{i}": x for i, x in enumerate(_host_leaves(kept))})
        arrays.update({f"aux/{name}": x for name, x in means.items()})
        if state.get("scales"):  # the plateau scales applied so far: the hyperparameter log of the whole phase
            arrays["scales"] = np.concatenate(state["scales"], axis=-2)
        if self.log is None or self.log.phase != index:
            dtype = _dtype_text(np.asarray(state["losses"][0]).dtype if state["losses"] else np.dtype(np.float32))
            self.log = _LossLog(self.directory / f"losses-{index}.bin", index, dtype, write=self.writer)
        self.log.append(state["losses"])
        self._write(arrays, {"phase": index, "step0": int(state["step0"]), "losses": self.log.record(), "evals": evals, "aux": aux, "data": state.get("data")})

    def after_phase(self, runner, result) -> None:
        """Called after each completed phase: writes the phase's file once, then a generation (the
        arrays gathered first, as `after_chunk` does)."""
        p = result.phases[-1]
        fields, arrays = _phase_record(p)
        arrays.update({f"model/{k}": v for k, v in _model_leaves(p.model).items()})
        if p.ema_model is not None:
            arrays.update({f"ema/{k}": v for k, v in _model_leaves(p.ema_model).items()})
        arrays.update({f"state/{i}": x for i, x in enumerate(_host_leaves(p.state))})
        if runner.state.signature is not None:
            self.previous = (runner.state.phase, _host_leaves(runner.state.opt_state))
        data = _npz(arrays)
        name = f"phase-{p.index}.npz"
        if self.writer:
            atomic_write(self.directory / name, data)
        self.completed.append({"fields": fields, "ema": p.ema_model is not None, "state": p.state is not None, "file": name, "sha256": _sha256(data)})
        self.log = None
        self._write({}, None)

    def _write(self, arrays: dict[str, np.ndarray], in_phase: dict | None) -> None:
        """One generation: its arrays, then (the commit point) its JSON; then the old ones go.

        (Every process keeps the bookkeeping; process 0 alone touches the files.)"""
        if self.previous is not None:
            arrays.update({f"previous/{i}": x for i, x in enumerate(self.previous[1])})
        self.generation += 1
        if not self.writer:
            return
        if self._lock is None:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._take_lock()
        data = _npz(arrays)
        state = f"state-{self.generation}.npz"
        atomic_write(self.directory / state, data)
        body = {
            "format": "schedc-checkpoint",
            "version": VERSION,
            "fingerprint": self.fingerprint,
            "generation": self.generation,
            "completed": self.completed,
            "previous": self.previous[0] if self.previous is not None else None,
            "state": {"file": state, "sha256": _sha256(data)},
            "in_phase": in_phase,
        }
        text = json.dumps({"body": body, "sha256": _sha256(json.dumps(body, sort_keys=True).encode())}, indent=1)
        atomic_write(self.directory / f"checkpoint-{self.generation}.json", text.encode())
        self.kept = (self.kept + [body])[-KEEP:]
        self._collect()

    def _collect(self) -> None:
        """Delete every file no kept generation uses (older generations, finished loss logs)."""
        used = set()
        for body in self.kept:
            used.add(f"checkpoint-{body['generation']}.json")
            used.add(body["state"]["file"])
            used.update(entry["file"] for entry in body["completed"])
            if body["in_phase"] is not None:
                used.add(body["in_phase"]["losses"]["file"])
        for path in self.directory.iterdir():
            if path.name not in used and re.fullmatch(r"(checkpoint-\d+\.json|state-\d+\.npz|phase-\d+\.npz|losses-\d+\.bin)", path.name):
                path.unlink(missing_ok=True)

    def _take_lock(self) -> None:
        """One run per directory: a second one would interleave its generations with ours."""
        try:
            import fcntl
        except ImportError:  # no advisory locks here: concurrent runs are the user's to avoid
            return
        handle = open(self.directory / ".lock", "a+b")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            raise CheckpointError(f"{self.directory} is in use by another schedc run; wait for it, or use another directory") from None
        self._lock = handle

    def close(self) -> None:
        if self._lock is not None:
            self._lock.close()
            self._lock = None


def run(program, runner, directory, every: int = 10):
    """Run `program` with checkpoints in `directory`, resuming from the one there if any.

    Raises:
        CheckpointError: when the directory holds another schedule's or model's checkpoint,
        no usable one, or is in use by another run.
    """
    checkpointer = Checkpointer(directory, fingerprint(program.plan, program.tree, program.model, program.key), every)
    runner.checkpoint = checkpointer
    try:
        if not checkpointer.load():
            result = runner.run(program.model)
        else:
            runner.begin(program.model)  # before resume: rebuilding a carried state may apply `init = reset`
            model, result, start = checkpointer.resume(runner, program.model)
            result = runner.run(model, start, result)
        distributed.barrier("schedc: checkpoint written")  # every process returns once the files are final
        return result
    finally:
        checkpointer.close()
