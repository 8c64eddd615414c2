"""Training on any iterable of batches: a Python generator, a list, a grain DataLoader or
dataset, a tf.data numpy iterator.

A background thread reads K batches per chunk (K: the runner's chunk length), checks that
each has the structure, shapes and dtypes of the first, stacks them into one array per leaf
and sends them to the device (`jax.device_put`) while the previous chunk runs; the compiled
chunk (the one chunk loop of `runner.py`) reads row `step % K` at each step
(`minibatch.stream_row`). Chunks end at multiples of K in phase-local steps (the first ones of a
phase earlier, growing from `FIRST_CHUNK` batches by `GROWTH`, so the device starts early), so a call that
ends early (a paced call under a progress bar or with checkpoints) continues in the same
stacked chunk.

Epochs. A re-iterable source (a list, a grain DataLoader, `Batches(make_iterator)`) starts a
fresh pass at the beginning of each phase, and its exhaustion ends an epoch: the next batch
comes from a new pass. `N epochs` counts `len(source)` (or `Batches(source, per_epoch=L)`)
steps each. A one-shot iterator (a generator, `ds.as_numpy_iterator()`) flows on from phase
to phase; when it runs out the phase ends with the stop reason `data exhausted`, and a later
phase that gets no batch at all is an error. Batches read ahead by a phase that stopped early
go back to the source, so a one-shot iterator loses none.

Position (checkpoints). The position of a step is where the reader stood when that step's
chunk began (the pass, the batches read into it, and the iterator's own `get_state()` where it
has one, as grain's do) plus the rows of the chunk before the step. Resuming restores it with
`set_state` and reads the remaining rows again; without `get_state`, a re-iterable source is
iterated anew and the batches of the pass already run are skipped, and a one-shot iterator
(the fresh one given to the resumed run) skips every batch the run had consumed.

Across processes (`jax.distributed`). Each process reads its own source: its share of every
global batch (as grain and tf.data shard by process index), and its chunks are sent as its share
of one global chunk (`jax.make_array_from_process_local_data`) over a mesh of every process's
devices (`Batches(sharding=)`, by default every leaf's leading axis split over
`distributed.data_mesh()`), so the compiled chunk sees the global batches. Whatever decides a
branch is agreed by a collective in the runner's thread, so every process takes the same one: at
a phase's start the batches' structure (the same on every process) and whether a one-shot
iterator has batches left (on every process); for each chunk, its batches (the fewest any
process read: a one-shot iterator that ran out on one process ends the phase on every process,
the others' extra batches handed back) and whether any process failed to read it (then every
process raises). A re-iterable source's epoch is the shortest process's pass (the fewest batches
per epoch any process's source has: longer passes are cut there). A checkpoint's data position
holds every process's (gathered), and each process resumes from its own.
"""

from __future__ import annotations

import base64
import json
import queue
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import numpy as np

from schedc.plan import resolve as P
from schedc.plan.batches import Batches, DataError
from schedc.runtime.dtypes import is_number
from schedc.runtime import distributed

# Batches stacked per chunk by default: as many as fit in CHUNK_BYTES, at most MAX_CHUNK. Each
# chunk is one call and one host synchronisation, so fewer is faster; up to three chunks are in
# memory at once (one running, one ready, one being read).
CHUNK_BYTES = 64 * 2**20
MAX_CHUNK = 1024
FIRST_CHUNK = 32  # a feed's first chunk holds at most this many batches (the device waits for no more)
# each of a phase's first chunks holds GROWTH - 1 times the batches before it (32, 96, 384, ... up to
# K): the reader stays a chunk ahead, and the short chunks (each one call and one host sync) are few
GROWTH = 4
DATA_EXHAUSTED = "data exhausted"  # the stop reason of a phase whose one-shot iterator ran out




def agreed_per_epoch(batches: Batches, problem: Exception | None = None) -> int | None:
    """`batches.batches_per_epoch`, the same on every process: across processes (each reading
    its own source) the fewest any process's pass holds, None when some process cannot say (a
    collective, which also raises a `problem` one process had reading its source on every one:
    `distributed.agree`)."""
    counts = distributed.agree(problem, [batches.batches_per_epoch or 0])[:, 0]
    return int(counts.min()) if counts.all() else None


def check_epochs(batches: Batches, resolve_for, eval_every=None) -> int | None:
    """The batches per epoch (`agreed_per_epoch`). An iterable without a length cannot count
    epochs: a DataError naming the first phase that does (found by resolving the file for passes
    of two lengths: the phases counting epochs differ). `resolve_for` is `DataSize -> Plan`, None
    when nothing counts epochs."""
    per_epoch = agreed_per_epoch(batches)
    if per_epoch is not None:
        return per_epoch
    fix = "expected `schedc.Batches(source, per_epoch=N)` (N batches per pass), a source with a length, or counts in steps"
    if eval_every == "epoch":
        raise DataError(f"`eval_every=\"epoch\"` needs the batches per epoch, but the iterable of batches ({type(batches.source).__name__}) has no length; {fix}")
    if resolve_for is None:
        return None
    what = f"the iterable of batches ({type(batches.source).__name__}) has no length; {fix}"
    try:  # long passes: any fraction of an epoch is a whole number of steps in both
        one, two = resolve_for(P.DataSize(batches=1000)), resolve_for(P.DataSize(batches=1001))
    except ValueError:  # (a SchedError) the file does not resolve at all for such passes: name no phase
        raise DataError(f"the file counts in epochs, but {what}") from None
    for a, b in zip(one.phases, two.phases):
        if replace(a, steps_per_epoch=None) != replace(b, steps_per_epoch=None):
            raise DataError(f"{a.label} counts in epochs, but {what}")
    return None


class _Spec:
    """A leaf as messages show it: `float32[8, 3]`."""

    def __init__(self, shape: tuple, dtype):
        self.shape, self.dtype = tuple(shape), np.dtype(dtype)

    @classmethod
    def of(cls, leaf) -> _Spec:
        return cls(np.shape(leaf), np.asarray(leaf).dtype)

    def __repr__(self) -> str:
        return f"{self.dtype}[{', '.join(map(str, self.shape))}]"


def describe(batch) -> str:
    """A batch's structure, shapes and dtypes: `(float32[8, 3], float32[8])`, `{'x': ...}`."""
    import jax

    return repr(jax.tree_util.tree_map(_Spec.of, batch))


def arrays_of(batch):
    """`batch` with every leaf an array the loss can be traced with: NumPy and JAX arrays as they
    are, anything else NumPy can read (a tf.Tensor of a tf.data.Dataset, a number) as NumPy."""
    import jax

    return jax.tree_util.tree_map(lambda x: x if isinstance(x, (np.ndarray, jax.Array)) else np.asarray(x), batch)


def loss_arguments(batch) -> tuple[tuple, dict]:
    """(positional, keyword) data arguments of the loss for one batch."""
    if isinstance(batch, tuple):
        return batch, {}
    if isinstance(batch, Mapping):
        return (), dict(batch)
    return (batch,), {}


class Structure:
    """What every batch must be: the first batch's tree, and each leaf's shape and dtype."""

    def __init__(self, first):
        import jax

        first = arrays_of(first)
        leaves, self.treedef = jax.tree_util.tree_flatten(first)
        self.specs = [(np.shape(x), np.asarray(x).dtype) for x in leaves]
        self.first = first  # what the loss is traced with
        for leaf in leaves:
            if not is_number(np.asarray(leaf).dtype, complex_ok=True):
                raise DataError(f"the first batch is {describe(first)}; expected numeric arrays in every leaf (a tuple or dict of arrays)")
        # a flat tuple of arrays (the common batch) is checked without flattening it: its length, when it is one
        self.arity = len(leaves) if self.treedef == jax.tree_util.tree_structure((0,) * len(leaves)) else None

    def leaves(self, batch, phase: P.PhasePlan, step: int) -> list:
        """The batch's leaves, or a DataError naming the phase and step when it differs from the first."""
        import jax

        if type(batch) is tuple and len(batch) == self.arity and all(type(x) is np.ndarray and x.shape == s and x.dtype == d for x, (s, d) in zip(batch, self.specs)):
            return batch  # the fast path: a few µs a batch count when the steps are short
        leaves, treedef = jax.tree_util.tree_flatten(batch)
        if treedef == self.treedef and all(_shape_dtype(x) == spec for x, spec in zip(leaves, self.specs)):
            return leaves
        raise DataError(
            f"{phase.label}: the batch for step {step} is {describe(batch)}; expected {describe(self.first)} "
            "(the structure, shapes and dtypes of the first batch: every batch must have them)"
        )


def _shape_dtype(leaf) -> tuple:
    if isinstance(leaf, np.ndarray):  # the common case, without a conversion
        return leaf.shape, leaf.dtype
    return np.shape(leaf), np.asarray(leaf).dtype


def _encode_state(state):
    """An iterator's `get_state()` as JSON: grain's DataLoader gives bytes, its datasets a dict."""
    if isinstance(state, bytes):
        return {"bytes": base64.b64encode(state).decode()}
    json.dumps(state)  # a state JSON cannot hold is no position
    return {"json": state}


def _decode_state(encoded):
    return base64.b64decode(encoded["bytes"]) if "bytes" in encoded else encoded["json"]


class Reader:
    """The run's reader of a `Batches`: its current pass, where it stands, the batches handed back."""

    def __init__(self, batches: Batches):
        self.batches = batches
        # across processes, where some process's passes are shorter: every pass is cut at that length (set by the Stream)
        self.pass_length: int | None = None
        self.iterator, first = batches.take_peeked()
        self.structure = Structure(batches.first())
        self.passes = 0  # passes started in this phase (re-iterable) / 0 (one-shot)
        self.offset = 0  # batches read in the current pass (one-shot: since the run began)
        self.pending: deque = deque([first])  # batches handed back (read ahead, or peeked), read first

    def _read_new(self):
        """The next batch from the source (a new pass when a re-iterable one ends), or None at the end of a one-shot iterator."""
        if self.iterator is None:
            self.iterator = self.batches.new_pass()
        try:
            if self.pass_length is not None and self.offset >= self.pass_length:
                raise StopIteration  # the shortest process's pass ends here: every process starts a new one
            batch = next(self.iterator)
        except StopIteration:
            if self.batches.one_shot:
                return None
            self.iterator, self.passes, self.offset = self.batches.new_pass(), self.passes + 1, 0
            try:
                batch = next(self.iterator)
            except StopIteration:
                raise DataError("a pass over the iterable of batches yielded no batch; expected at least one per pass") from None
        self.offset += 1
        return batch

    def read(self):
        if self.pending:
            self.offset += 1
            return self.pending.popleft()
        return self._read_new()

    def hand_back(self, batches: list) -> None:
        """Batches read ahead but not run: read again first (a one-shot iterator loses none)."""
        self.pending.extendleft(reversed(batches))
        self.offset -= len(batches)

    def position(self) -> dict:
        """Where the reader stands (JSON): the pass, the batches read, the iterator's own state."""
        position = {"pass": self.passes, "offset": self.offset}
        get_state = getattr(self.iterator, "get_state", None)
        if get_state is not None and not self.pending:
            try:
                position["state"] = _encode_state(get_state())
            except (TypeError, ValueError):  # not JSON: resume by skipping
                pass
        return position

    def start_phase(self) -> None:
        """A re-iterable source starts each phase with a fresh pass (a one-shot one flows on)."""
        if self.batches.one_shot or (self.iterator is not None and self.offset == 0 and self.passes == 0):
            return  # nothing but the peeked batch read: that pass is the phase's first
        self.iterator, self.passes, self.offset = None, 0, 0
        self.pending.clear()

    def restore(self, position: dict, skip: int) -> None:
        """Stand where `position` says, then `skip` batches further (read and dropped)."""
        self.start_phase()
        state = position.get("state")
        if state is not None and not self.batches.one_shot:
            self.pending.clear()
            self.iterator = self.batches.new_pass()
            self.iterator.set_state(_decode_state(state))
            self.passes, self.offset = position["pass"], position["offset"]
        elif state is not None and hasattr(self.batches.source, "set_state"):
            self.pending.clear()
            self.iterator = self.batches.source
            self.iterator.set_state(_decode_state(state))
            self.offset = position["offset"]
        else:
            self.skip(position["offset"] - self.offset if self.batches.one_shot else position["offset"])
            self.passes = position["pass"]
        self.skip(skip)

    def skip(self, count: int) -> None:
        for _ in range(max(0, count)):
            if self.read() is None:
                return

    def skip_to(self, consumed: int) -> None:
        """A one-shot iterator given to a resumed run: drop the `consumed` batches the completed phases ran."""
        if self.batches.one_shot:
            self.skip(consumed - self.offset)


class _ChunkBuffers:
    """The host arrays one chunk is stacked in: one [K, ...] array per leaf, each batch copied
    into its row as it is read (row `s % K` holds the batch of step s; the rows a phase's short
    first chunks leave empty are never read).

    Fresh for every chunk and 64-byte aligned: XLA:CPU then takes them as the device arrays
    without a copy (`jax.device_put` aliases an aligned host array), so on CPU a batch is copied
    once, into its row; and a buffer the device may hold is never written again.

    Sharded over a mesh (`Batches(..., sharding=)`), a leaf has one such array per distinct
    shard of this process's devices instead ([K, B / devices, ...] for rows split over the data
    axis): each batch's slice is copied once into its shard's row, and each device takes its own
    array (aliased on CPU) as its shard of the global chunk.

    Across processes (`global_shapes`: each leaf's global batch shape), the arrays hold this
    process's batches whole, its share of the global chunk, which JAX's
    `make_array_from_process_local_data` slices onto its devices.
    """

    ALIGN = 64

    def __init__(self, specs: list, chunk: int, shardings: list | None = None, global_shapes: list | None = None):
        self.shapes = [(chunk, *shape) for shape, _ in specs]
        self.shardings = shardings
        self.global_shapes = [(chunk, *shape) for shape in global_shapes] if global_shapes is not None else None
        self.shards = None
        if shardings is None or global_shapes is not None:
            self.buffers = [_aligned_empty(shape, dtype, self.ALIGN) for shape, (_, dtype) in zip(self.shapes, specs)]
            return
        # per leaf: [(the batch's slice, its host array, the devices holding that shard)]
        self.shards = [_shard_buffers(shape, dtype, sharding, self.ALIGN) for shape, (_, dtype), sharding in zip(self.shapes, specs, shardings)]

    def put(self, row: int, leaves) -> None:
        if self.shards is None:
            for buffer, leaf in zip(self.buffers, leaves):
                buffer[row] = leaf
            return
        for shards, leaf in zip(self.shards, leaves):
            leaf = np.asarray(leaf)
            for index, buffer, _ in shards:
                buffer[row] = leaf[index]

    def send(self) -> tuple:
        """The chunk on the device (on CPU, the buffers themselves): sharded as asked."""
        import jax

        if self.shardings is None:
            return tuple(jax.device_put(self.buffers))
        if self.global_shapes is not None:  # this process's share: with every other process's, the global chunk
            return tuple(jax.make_array_from_process_local_data(s, b, g) for s, b, g in zip(self.shardings, self.buffers, self.global_shapes))
        return tuple(
            jax.make_array_from_single_device_arrays(shape, sharding, [jax.device_put(buffer, device) for _, buffer, devices in shards for device in devices])
            for shape, sharding, shards in zip(self.shapes, self.shardings, self.shards)
        )


def _shard_buffers(shape: tuple, dtype, sharding, align: int) -> list:
    """[(the index of a batch's slice, an aligned [K, *slice shape] array, its devices)]: one
    array per distinct shard of the addressable devices (replicas share theirs)."""
    by_index: dict = {}
    for device, index in sharding.addressable_devices_indices_map(shape).items():
        key = tuple((s.start, s.stop, s.step) for s in index[1:])  # the chunk axis is never split
        by_index.setdefault(key, (index[1:], []))[1].append(device)
    shards = []
    for index, devices in by_index.values():
        rows = tuple(len(range(*s.indices(n))) for s, n in zip(index, shape[1:]))
        shards.append((index, _aligned_empty((shape[0], *rows), dtype, align), devices))
    return shards


def _aligned_empty(shape: tuple, dtype, align: int) -> np.ndarray:
    """An uninitialised array whose data starts at a multiple of `align` bytes (untouched pages cost nothing)."""
    dtype = np.dtype(dtype)
    size = int(np.prod(shape)) * dtype.itemsize
    raw = np.empty(size + align, np.uint8)
    start = -raw.ctypes.data % align
    return raw[start : start + size].view(dtype).reshape(shape)


@dataclass
class _Chunk:
    start: int  # the phase-local step of its first batch (at row `start % K`)
    rows: list  # the host batches, in order (handed back if not run)
    arrays: tuple  # stacked on the device: one [K, ...] array per leaf
    position: dict  # the reader's position before its first batch
    exhausted: bool = False  # a one-shot iterator ran out in this chunk: no chunk follows
    spare: list = field(default_factory=list)  # across processes, batches read past the fewest another process read (handed back)

    @property
    def end(self) -> int:
        return self.start + len(self.rows)


class Resident:
    """The feed of data the loss's arrays hold whole (no iterable): every call reads all of it,
    so the chunk loop takes its data from a feed whether or not the batches stream."""

    done = 0  # the phase-local steps run (set by the runner, as on a `Feed`; nothing to hand back)

    def __init__(self, arrays: tuple):
        self.arrays = arrays

    def take(self, step: int, wanted: int) -> tuple[tuple, int]:
        return self.arrays, wanted

    def position(self, step: int) -> None:
        return None  # nothing to restore: the arrays are the run's own

    def close(self) -> None:
        pass


class Feed:
    """One phase's batches, K per chunk, read and sent to the device by a background thread
    while the previous chunk runs (one chunk waits ready in the queue: double-buffered)."""

    def __init__(self, stream: Stream, phase: P.PhasePlan, start: int, chunk: int):
        self.stream, self.reader, self.phase, self.K = stream, stream.reader, phase, chunk
        self.structure = self.reader.structure
        self.queue: queue.Queue = queue.Queue(maxsize=1)
        self.stopping = threading.Event()
        self.current: _Chunk | None = None
        self.done = start  # the phase-local steps run (the runner sets it after each call)
        self.partial: list = []  # the producer's rows when it was stopped mid-chunk
        self.thread = threading.Thread(target=self._produce, args=(start,), name=f"schedc-feed-{phase.index}", daemon=True)
        self.thread.start()

    # ---- the background thread

    def _produce(self, start: int) -> None:
        step = start
        try:
            while step < self.phase.steps and not self.stopping.is_set():
                # chunks end at multiples of K; the first ones are short and grow (32, 96, 384, ...),
                # so the device starts early and the reader stays a chunk ahead from then on
                end = min(self.phase.steps, (step // self.K + 1) * self.K, step + max(FIRST_CHUNK, (GROWTH - 1) * (step - start)))
                position = self.reader.position()
                rows = self.partial = []
                buffers = _ChunkBuffers(self.structure.specs, self.K, self.stream.chunk_shardings, self.stream.global_shapes)
                while len(rows) < end - step and not self.stopping.is_set():
                    batch = self.reader.read()
                    if batch is None:
                        break
                    at = step + len(rows)  # each batch goes into its row as it is read: one pass, one copy
                    buffers.put(at % self.K, self.structure.leaves(batch, self.phase, at))
                    rows.append(batch)
                if self.stopping.is_set():
                    return
                exhausted = len(rows) < end - step  # a one-shot iterator ran out
                if not self._put(_Chunk(step, rows, buffers.send(), position, exhausted)):
                    return  # stopped: `partial` still holds the chunk's rows, to be handed back
                self.partial = []
                if exhausted:
                    return
                step = end
        except BaseException as exc:  # raised in the runner's thread, at its next take()
            self._put(exc)

    def _put(self, item) -> bool:
        """Queue `item` once there is room; False when the feed is closed first."""
        while not self.stopping.is_set():
            try:
                self.queue.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    # ---- the runner's side

    def take(self, step: int, wanted: int) -> tuple[tuple, int]:
        """(the stacked chunk holding `step`, how many of the `wanted` steps from `step` it holds);
        0 steps when a one-shot iterator has run out."""
        if self.current is None or step >= self.current.end:
            if self.current is not None and self.current.exhausted:
                return self.current.arrays, 0
            started = time.perf_counter()
            item = self.queue.get()
            self.stream.waited += time.perf_counter() - started
            if isinstance(item, BaseException) and not isinstance(item, DataError):
                error = DataError(f"{self.phase.label}: the iterable of batches raised {type(item).__name__}: {item}")
                error.__cause__, item = item, error
            if self.stream.processes > 1:
                item = self.stream.agree_on_chunk(item)
            if isinstance(item, BaseException):
                raise item
            self.current = item
        return self.current.arrays, max(0, min(wanted, self.current.end - step))

    def position(self, step: int) -> dict:
        """The position (JSON) a resumed run restores to read the batch of `step` next."""
        chunk = self.current
        own = {"chunk": chunk.position, "rows": step - chunk.start}
        return own if self.stream.processes == 1 else {"processes": distributed.gather_json(own)}

    def close(self) -> None:
        """Stop the thread; hand the batches read but not run back to the reader, in order."""
        self.stopping.set()
        self.thread.join()
        unrun = []
        if self.current is not None:
            unrun += self.current.rows[self.done - self.current.start :] + self.current.spare
        while not self.queue.empty():
            item = self.queue.get_nowait()
            if isinstance(item, _Chunk):
                unrun += item.rows
        unrun += self.partial
        self.reader.hand_back(unrun)


class Stream:
    """The run's iterable of batches: its reader and each phase's feed."""

    def __init__(self, batches: Batches):
        self.batches = batches
        self.processes = distributed.processes()
        self.waited = 0.0  # seconds the chunk loop waited for batches, over the phases so far
        with distributed.Held() as reading:  # (an empty source, a refused sharding: on one process only, maybe)
            self.reader = Reader(batches)
            structure = self.reader.structure
            # per leaf, the sharding of each batch (`Batches(sharding=)`; across processes, by default rows over
            # every device) and of its stacked chunks; None: one device
            self.row_shardings = batch_shardings(batches.sharding, structure.first, across=self.processes > 1)
            self.chunk_shardings = [_stacked(s) for s in self.row_shardings] if self.row_shardings else None
            # per leaf, a global batch's shape and dtype: across processes, each process's batches are its share of it
            self.global_shapes = [_global_shape(sh, shape) for sh, (shape, _) in zip(self.row_shardings, structure.specs)] if self.processes > 1 else None
            self.specs = [(g, dtype) for g, (_, dtype) in zip(self.global_shapes, structure.specs)] if self.global_shapes else structure.specs
        if self.processes > 1:
            # a re-iterable source whose passes are longer than another process's is cut to its length (agreed
            # whatever this process's source is: another process's may be of another kind, and must not wait alone)
            shortest = agreed_per_epoch(batches, reading.problem)
            self.reader.pass_length = shortest if not batches.one_shot and shortest != batches.batches_per_epoch else None

    @property
    def first(self):
        return self.reader.structure.first

    def described(self) -> str:
        """The global batches' structure, shapes and dtypes as messages show them (across processes
        `(float32[64, 16], ...) in all, (float32[32, 16], ...) per process`)."""
        import jax

        whole = repr(jax.tree_util.tree_unflatten(self.reader.structure.treedef, [_Spec(shape, dtype) for shape, dtype in self.specs]))
        return whole if self.processes == 1 else f"{whole} in all, {describe(self.first)} per process"

    def default_chunk(self) -> int:
        """Batches per chunk: as many as fit in CHUNK_BYTES (at least one, at most MAX_CHUNK)."""
        size = sum(int(np.prod(shape)) * dtype.itemsize for shape, dtype in self.reader.structure.specs)
        return max(1, min(MAX_CHUNK, CHUNK_BYTES // max(size, 1)))

    def feed(self, phase: P.PhasePlan, start: int, chunk: int, position: dict | None = None, problem: Exception | None = None) -> Feed:
        """Phase `phase`'s feed from phase-local step `start` (at `position`, resuming a checkpoint).

        Across processes every process gets here for each phase, and what it found is agreed (a
        collective) before any batch is sent, with the `problem` the runner's start of the phase
        met (`distributed.Held`): an error on one process is raised on every one."""
        ran_out = False
        if problem is None:
            with distributed.Held() as starting:
                self.check(phase)
                self._stand(phase, position)
                ran_out = self.reader.batches.one_shot and not self.reader.pending and self._ran_out()
            problem = starting.problem
        if self.processes > 1:
            self._agree_on_start(phase, problem, ran_out)
        elif ran_out:
            raise self._ran_out_error(phase, "the one-shot iterator", f" (after {self.reader.offset} batches)")
        return Feed(self, phase, start, chunk)

    def _stand(self, phase: P.PhasePlan, position: dict | None) -> None:
        """The reader at the phase's start: a fresh pass, or where a checkpoint's `position` says."""
        if position is None:
            self.reader.start_phase()
            return
        own = self._own_position(phase, position)
        try:
            self.reader.restore(own["chunk"], own["rows"])
        except (ValueError, TypeError, KeyError) as exc:  # grain refuses a state of another loader
            raise DataError(f"{phase.label}: the checkpoint's data position cannot be restored in this iterable of batches ({type(exc).__name__}: {exc}); expected the source the checkpointed run read") from None

    def _own_position(self, phase: P.PhasePlan, position: dict) -> dict:
        """This process's part of a checkpoint's data position (across processes it holds every process's)."""
        every = position.get("processes")
        written = len(every) if every is not None else 1
        if written != self.processes:
            raise DataError(
                f"{phase.label}: the checkpoint's data position is that of a run of {written} process(es), and this run has {self.processes}; "
                "expected as many processes, each reading the source it read"
            )
        return every[distributed.index()] if every is not None else position

    def _ran_out(self) -> bool:
        batch = self.reader.read()
        if batch is None:
            return True
        self.reader.hand_back([batch])
        return False

    @staticmethod
    def _ran_out_error(phase: P.PhasePlan, whose: str, when: str = "") -> DataError:
        return DataError(
            f"{phase.label} gets no batch: {whose} ran out before it{when}; "
            "expected one that lasts the run, or a re-iterable source (a list, a grain DataLoader, a function returning a fresh iterator)"
        )

    def _agree_on_start(self, phase: P.PhasePlan, problem: Exception | None, ran_out: bool) -> None:
        """Across processes, at a phase's start (a collective): every process's batches have one
        structure, none met a problem, and each has batches left; else every process raises."""
        found = distributed.gather_json([describe(self.first), ran_out, distributed.failure(problem)])
        structures = [structure for structure, _, _ in found]
        if len(set(structures)) > 1:
            listed = "; ".join(f"process {i}: {structure}" for i, structure in enumerate(structures))
            raise DataError(
                f"{phase.label}: the processes read batches of different structures, shapes or dtypes ({listed}); "
                "expected the same on every process (each reads its share of every global batch)"
            )
        distributed.failed_together(problem, [failure for _, _, failure in found])
        if short := [i for i, (_, out, _) in enumerate(found) if out]:
            raise self._ran_out_error(phase, f"the one-shot iterator of {distributed.named(short)}")

    def agree_on_chunk(self, item):
        """Across processes, a chunk the runner takes (a collective, in the runner's thread: every
        process takes its chunks in the same order): the fewest batches any process read (another
        process's one-shot iterator ran out: so has the run's data), or the error of a process that
        failed to read it (`item`), raised on every process (`distributed.agree`)."""
        failed = isinstance(item, Exception)
        rows = distributed.agree(item if failed else None, [0 if failed else len(item.rows)])[:, 0]
        least = int(rows.min())
        if least < len(item.rows):
            item.spare, item.rows, item.exhausted = item.rows[least:], item.rows[:least], True
        return item

    def check(self, phase: P.PhasePlan) -> None:
        """`batch N` with an iterable: every leaf's leading axis must be N (the batches come made;
        across processes, the global batch's); with a sharding, every axis it splits must split
        evenly over its devices."""
        for (shape, dtype), sharding in zip(self.specs, self.row_shardings or ()):
            _check_split(phase, shape, dtype, sharding, self.described())
        if not phase.batch:
            return
        for shape, _ in self.specs:
            if not shape or shape[0] != phase.batch:
                raise DataError(
                    f"{phase.label} has `batch {phase.batch}` but the batches are {self.described()}; "
                    f"expected a leading axis of {phase.batch} in every array (or no `batch`: an iterable's batches come made)"
                )


SHARDING_FORM = "a jax.sharding.NamedSharding (such as `NamedSharding(mesh, PartitionSpec(\"data\"))`: each batch's leading axis split over the mesh's `data` axis), or a pytree of them with the batch's structure"


def batch_shardings(sharding, first, across: bool = False) -> list | None:
    """Per leaf of a batch, the NamedSharding `Batches(sharding=)` gives it (one sharding for every
    leaf, or a pytree prefix of the batch, as `jax.device_put` takes); None without one. `across`
    processes, every leaf's leading axis split over every device by default, and a sharding must
    span every device of every process."""
    import jax
    from jax.sharding import NamedSharding, PartitionSpec

    if sharding is None and not across:
        return None
    if sharding is None:
        sharding = NamedSharding(distributed.data_mesh(), PartitionSpec(distributed.DATA_AXIS))
    try:
        shardings = jax.tree_util.tree_leaves(jax.tree.broadcast(sharding, first))
    except (ValueError, TypeError) as exc:
        raise DataError(f"`sharding` does not fit the batches {describe(first)} ({exc}); expected {SHARDING_FORM}") from None
    for leaf_sharding in shardings:
        if not isinstance(leaf_sharding, NamedSharding):
            raise DataError(f"`sharding` holds a {type(leaf_sharding).__name__}; expected {SHARDING_FORM}")
        if across and set(leaf_sharding.mesh.devices.flat) != set(jax.devices()):
            raise DataError(
                "`sharding` spans only some of the run's devices; across processes expected a mesh of every device of every process "
                "(such as `schedc.distributed.data_mesh()`): each process reads its share of every global batch"
            )
    return shardings


def _stacked(sharding):
    """A batch's sharding for a chunk of stacked batches: the chunk axis in front, never split."""
    from jax.sharding import NamedSharding, PartitionSpec

    return NamedSharding(sharding.mesh, PartitionSpec(None, *sharding.spec))


def _split_count(sharding, names) -> int:
    """Over how many devices `sharding` splits an axis whose PartitionSpec entry is `names`."""
    if names is None:
        return 1
    names = names if isinstance(names, tuple) else (names,)
    return int(np.prod([sharding.mesh.shape[name] for name in names]))


def _global_shape(sharding, shape: tuple) -> tuple:
    """The shape of the global batch whose share on this process's devices has `shape`: each axis
    as many times longer as there are processes' shares of it (as `make_array_from_process_local_data` infers)."""
    spec = tuple(sharding.spec)
    if len(spec) > len(shape):
        return shape  # refused by `_check_split`, naming the phase
    splits = tuple(_split_count(sharding, names) for names in spec) + (1,) * (len(shape) - len(spec))
    mine = sharding.addressable_devices_indices_map(splits).values()  # (one element per shard along each axis)
    held = [len({index[axis].start or 0 for index in mine}) for axis in range(len(shape))]
    return tuple(size * split // share for size, split, share in zip(shape, splits, held))


def _check_split(phase: P.PhasePlan, shape: tuple, dtype, sharding, described: str) -> None:
    """A DataError naming the phase unless every axis `sharding` splits divides evenly over its devices."""
    spec = tuple(sharding.spec)
    if len(spec) > len(shape):
        leaf = f"{dtype}[{', '.join(map(str, shape))}]"
        raise DataError(
            f"{phase.label}: the batches are {described}, but `sharding` {sharding.spec} names {len(spec)} axes for the array {leaf}; "
            f"expected a PartitionSpec of at most {len(shape)} (give a pytree of shardings, one per array, where arrays differ)"
        )
    for axis, names in enumerate(spec):
        devices = _split_count(sharding, names)
        if shape[axis] % devices:
            what = "batch size" if axis == 0 else f"size of axis {axis}"
            names = names if isinstance(names, tuple) else (names,)
            raise DataError(
                f"{phase.label}: the batches are {described}, but `sharding` splits axis {axis} over the {devices} devices of mesh axis "
                f"{' x '.join(map(repr, names))}; expected a {what} that is a multiple of {devices}"
            )
