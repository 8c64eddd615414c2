"""Runs across processes on JAX's own runtime (`jax.distributed`): every process runs the same program.

JAX is multi-controller: each process runs the same Python program, and a jitted call whose
inputs are global arrays (sharded over the devices of every process) runs as one SPMD program
with the collectives XLA inserts. A schedc run needs nothing from its user but
`jax.distributed.initialize()` before it and data placed on a global mesh (`shard_rows`): the
compiled chunks follow their inputs' shardings, and the losses and stop decisions they return
are replicated, so every process reads the same numbers and takes the same branches.

What must not differ between processes lives here and in the runner: anything decided from the
wall clock or the terminal (the pace of chunk calls, the progress bar) is fixed in a
multi-process run, and which phases fuse depends on the program and the model alone; files are
written by process 0 only (`is_writer`); arrays sharded over other processes are gathered before
they are saved or read on the host (`host_array`, a collective every process calls); what one
process's own data decides (streamed batches, runtime/stream.py) is agreed from every process's
values (`gather_ints`, `gather_json`); and processes wait for each other where one writes what
the others read (`barrier`).

Failures and stops are agreed too. Host work that can fail on one process only (reading its
batches, process 0 writing a file, a check on its own data) runs inside `Held`, which keeps the
exception instead of raising it, and the next point every process reaches together (`agree`: a
phase's start and end, a chunk's end) raises it on every process: the failing one its own error,
the others an error of the same kind naming that process and saying its message. Raising at
once would leave the others waiting in the next collective until JAX's heartbeat ends the job.
The runner agrees a stop asked by a signal the same way (runtime/runner.py, `Runner.stopping`).
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

DATA_AXIS = "data"


def initialize(coordinator_address: str | None = None, num_processes: int | None = None, process_id: int | None = None, **kwargs) -> None:
    """`jax.distributed.initialize(...)`, once: on SLURM, Open MPI and cloud TPU pods without
    arguments (JAX detects the cluster); elsewhere with the coordinator's `host:port`, the
    number of processes and this one's index. Calling it again does nothing."""
    import jax

    if jax.distributed.is_initialized():
        return
    jax.distributed.initialize(coordinator_address, num_processes, process_id, **kwargs)


def processes() -> int:
    """How many processes take part in this run (1 without `jax.distributed`)."""
    import jax

    return jax.process_count()


def index() -> int:
    """This process's index in the run (0 without `jax.distributed`)."""
    import jax

    return jax.process_index()


def is_writer() -> bool:
    """Whether this process writes the run's files (checkpoints, `--out`, `--log`): process 0."""
    import jax

    return jax.process_index() == 0


def barrier(name: str) -> None:
    """Every process waits here until all have reached the barrier `name` (nothing in one process)."""
    if processes() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def gather_ints(values) -> np.ndarray:
    """[processes, len(values)]: every process's `values` (a few integers), in process order (a
    collective: every process calls it at the same point of the run; one process: its own row)."""
    values = np.asarray(values, np.int32)
    if processes() == 1:
        return values[None]
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(values))


def gather_json(value) -> list:
    """Every process's `value` (anything JSON holds), in process order (a collective, as `gather_ints`)."""
    if processes() == 1:
        return [value]
    from jax.experimental import multihost_utils

    text = np.frombuffer(json.dumps(value).encode(), np.uint8)
    lengths = gather_ints([len(text)])[:, 0]
    # padded to a power of two: each length the gather sees compiles a program of its own
    padded = np.zeros(1 << max(6, int(lengths.max() - 1).bit_length()), np.uint8)
    padded[: len(text)] = text
    rows = np.asarray(multihost_utils.process_allgather(padded))
    return [json.loads(bytes(row[:n])) for row, n in zip(rows, lengths)]


class ProcessFailed(RuntimeError):
    """Another process of the run failed where every process goes on together (`agree`); raised on
    the others when its error is not one of the kinds they raise as it is (`_kinds`)."""


class Held:
    """A block of host work that may fail on one process only: across processes its first
    exception is kept (`problem`) for the `agree` that follows, which raises it on every process
    (in one process it propagates at once). `with held:` may be entered again: a later block runs
    even after an earlier one failed, so each block must do its collectives before anything that
    can fail on one process alone (process 0's writes)."""

    def __init__(self):
        self.problem: Exception | None = None

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, traceback) -> bool:
        if not isinstance(exc, Exception) or processes() == 1:
            return False
        self.problem = self.problem or exc
        return True


def agree(problem: Exception | None = None, values=()) -> np.ndarray:
    """A point every process reaches together (a collective: one gather of a few integers): each
    says whether it failed since the last one (`problem`, from a `Held`) and gives `values` (a few
    integers). When some process failed, every process raises: the failing ones their own
    errors, the others one naming them (`failed_together`). Returns every process's `values`,
    [processes, len(values)], in process order. In one process: raises `problem`, if any."""
    if problem is not None and processes() == 1:
        raise problem
    rows = gather_ints([problem is not None, *values])
    if rows[:, 0].any():
        failed_together(problem, gather_json(failure(problem)))
    return rows[:, 1:]


def failure(problem: Exception | None):
    """What other processes are told of this process's `problem`: [its kind, its message], or None."""
    return None if problem is None else [type(problem).__name__, str(problem)]


def failed_together(problem: Exception | None, failures: list) -> None:
    """Raise on every process, given every process's `failure()` (gathered), when any is not None:
    on a failing process its own `problem`; on the others, for a failure of one of `_kinds()` (a
    DataError, EvalError or CheckpointError) an error of that kind, else a ProcessFailed, saying
    `process 1 failed, so every process stops here: <its message>`."""
    failed = [(i, said) for i, said in enumerate(failures) if said is not None]
    if problem is not None:
        raise problem
    if not failed:
        return
    kinds = _kinds()
    kind = kinds.get(failed[0][1][0], ProcessFailed)
    raise kind(stopped_by([(i, message if kinds.get(name) is kind else f"{name}: {message}") for i, (name, message) in failed]))


def stopped_by(failed: list[tuple[int, str]]) -> str:
    """What the other processes say when some failed ((index, message) each): `process 1 failed,
    so every process stops here: <its message>`."""
    said = failed[0][1] if len(failed) == 1 else "; ".join(f"process {i}: {message}" for i, message in failed)
    return f"{named(i for i, _ in failed)} failed, so every process stops here: {said}"


def named(indices) -> str:
    """`process 1`, `processes 0, 2`."""
    indices = [int(i) for i in indices]
    return f"process {indices[0]}" if len(indices) == 1 else f"processes {', '.join(map(str, indices))}"


def _kinds() -> dict:
    """The errors another process raises as they are (with the failing process named): what a
    caller handles by kind (the CLI's exit status, `except DataError`); they take one message."""
    from schedc.plan.batches import DataError
    from schedc.runtime.checkpoint import CheckpointError
    from schedc.runtime.evaluation import EvalError

    return {kind.__name__: kind for kind in (DataError, EvalError, CheckpointError)}


def host_array(x) -> np.ndarray:
    """`x` as one NumPy array on this host; a jax.Array whose shards sit on other processes is
    gathered first (a collective: every process must call this for the same arrays in the same order)."""
    import jax

    if isinstance(x, jax.Array) and not x.is_fully_addressable and not x.is_fully_replicated:
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(x)


def host_tree(tree) -> Any:
    """`tree` with every array leaf gathered onto this host (`host_array`)."""
    import jax

    return jax.tree_util.tree_map(lambda x: host_array(x) if isinstance(x, jax.Array) else x, tree)


def placed_like(value: np.ndarray, template):
    """`value` (a host array) placed as `template` is: with its sharding when that spans several
    devices (each process puts only its own shards), else as a plain array."""
    import jax
    import jax.numpy as jnp

    sharding = getattr(template, "sharding", None)
    if isinstance(template, jax.Array) and sharding is not None and len(sharding.device_set) > 1:
        return jax.make_array_from_callback(value.shape, sharding, lambda index: value[index])
    return jnp.asarray(value)


def data_mesh():
    """A one-axis mesh (`"data"`) over every device of every process."""
    import jax
    from jax.sharding import Mesh

    return Mesh(np.array(jax.devices()), (DATA_AXIS,))


def shard_rows(*arrays, local: bool = False, mesh=None):
    """Data arrays as global arrays split by rows (their leading axis) over `mesh` (default: every
    device of every process, `data_mesh()`), for data-parallel fits within a host or across hosts.

    With `local=False` every process passes the whole array (the same on each) and keeps only
    its devices' rows; with `local=True` each process passes its own consecutive share of the
    rows, in process order (`jax.make_array_from_process_local_data`), so no process ever holds
    all the data. Returns one array for one argument, else a tuple.

    Raises:
        ValueError: an array whose rows do not split evenly over the mesh's devices.
    """
    import jax
    from jax.sharding import NamedSharding, PartitionSpec

    mesh = mesh if mesh is not None else data_mesh()
    rows = NamedSharding(mesh, PartitionSpec(mesh.axis_names[0]))
    devices = mesh.devices.size
    placed = []
    for x in arrays:
        if local:
            placed.append(jax.make_array_from_process_local_data(rows, np.asarray(x)))
            continue
        x = np.asarray(x)
        if not x.ndim or x.shape[0] % devices:
            raise ValueError(f"an array of shape {x.shape} cannot be split by rows over {devices} devices: its leading axis must be a multiple of {devices}")
        placed.append(jax.make_array_from_callback(x.shape, rows, lambda index, x=x: x[index]))
    return placed[0] if len(placed) == 1 else tuple(placed)
