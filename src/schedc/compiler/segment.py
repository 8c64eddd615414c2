"""Segments: consecutive phases fused into one compiled program.

A run of phases with no host work between them (the runtime decides which: see
docs/runtime.md, "Fused segments") runs as one jitted function. Its static part, the
`SegmentSignature`, is the set of distinct phase signatures of the segment and the
distinct *branches* (a phase signature, the structure of the phase's inits, and where
`carry state` takes its optimizer state from); everything else — which branch each phase
runs, its step count, its index (random inits fold it into their key), its schedule, stop
and init numbers — is a row of a runtime table. So `repeat N < ... >` compiles the program
of its body, whatever N, and runs in one call.

The program is a `lax.while_loop` over phases; each iteration runs the phase's branch
(`_one_of`: a guarded run-at-most-once loop per branch, which XLA updates in place where a
`lax.switch` copied the loss buffer and snapshots), which runs the phase's steps with the same
`chunk.run_steps` loop a phase-by-phase run uses (so the two are the same computation). A
call runs until the table's phases are done, a stop rule meets a non-finite loss, or it has
run its step budget (a runtime argument, at most the loss buffer's `chunk` steps: a watched
run paces its calls to move the progress bar); then the host calls it again with the state it
returned, which may stop inside a phase. (A non-finite loss in a phase without stop rules is
found by the host in the call's losses, as in a chunk's: runtime/fused.py.)

The state carried from phase to phase and from call to call is a dict:

| key | what |
|---|---|
| `leaves` | the model's array leaves (free values written back after each phase part) |
| `slots` | per phase signature: its optimizer state `opt`, its `loss_change` window `ring` and, when it evaluates, its rules' state `eval` (evaluate.initial_carry: evaluations so far, best values, `keep best`'s copy) |
| `phase`, `step` | where the next call resumes: a table row and a step within that phase (between calls one array, `at`) |
| `model_state` | with a model state (`state=`, an `eqx.nn.State`): the state after the last step run |
| `reason` | with `Items` (many fits at once, vmapped): each item's stop reason in the current phase |

State added later is one more key: initialised in `Program.initial_state`, read and written
in `_branch` (per phase signature, it goes in the slot dicts instead). An `ema D` and a
`plateau`'s scale live in the optimizer state already, a data position is the phase step (each
epoch's permutation is drawn from it). Per step a call logs, beside the losses, each aux metric
of the loss (`aux`: a phase's means per chunk are taken on the host, as a phase-by-phase run's
are) and each plateau's scale (`plateau`, one buffer per signature that has any); per table
row, the model after the phase (`snapshots`), the model with its free parameters replaced by
their moving average (`ema`, for phases keeping one) and the model state (`states`).

An evaluated phase (`eval`, compiler.evaluate) evaluates inside its branch's steps as its chunk
does: the metrics function is part of the phase signature, the validation data an argument of
every call, each rule's threshold and patience and the interval `every` numbers of the table
(as in a phase's chunk: runs that differ only in the interval share one program). A call logs its
evaluations in one buffer in row order (`evals`) and per row how many it took, the rule that
ended the phase and the step of `keep best`'s weights, which the branch writes back into the
model when the phase ends (so the next phase starts from them, as phase by phase).

A batched fit's datasets and a sweep's settings run the same program `jax.vmap`ped over them
(`Items`): everything above gains a leading items axis except the row and step counters and
what decides the branch, which stay shared so the `switch` stays a switch (see `Items`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from schedc.compiler import chunk as C
from schedc.compiler import evaluate as E
from schedc.compiler import optimizers as O
from schedc.compiler.kernel import KernelsOrThunks, step_options_on

# phases per call's table: a segment longer than this is cut into several
WINDOW = 128
# the model snapshots a call returns (one per phase row) may take this many bytes
SNAPSHOT_BUDGET = 64 << 20


@dataclass(frozen=True)
class InitSlot:
    """One init of a branch: its leaves, its kind, and where its numbers sit in the phase's init row."""

    leaves: tuple[int, ...]  # leaf indices in the flattened model: the parameter, then its shared copies
    kind: str  # "value", "normal", "uniform" or "reset"
    offset: int
    size: int
    path_number: int  # C.path_key of the parameter


@dataclass(frozen=True)
class Branch:
    """What a phase of a segment runs: a phase signature with its inits and its `carry state` source."""

    signature: int  # index into SegmentSignature.signatures
    inits: tuple[InitSlot, ...]
    carry_from: int  # slot (signature index) whose optimizer state the phase carries, -1 for none
    carried: frozenset[str]  # the group labels it carries


@dataclass(frozen=True)
class SegmentSignature:
    """The static part of a fused segment: equal signatures share one executable."""

    signatures: tuple[C.PhaseSignature, ...]
    branches: tuple[Branch, ...]
    window: int  # rows of the phase table
    chunk: int  # steps one call may run (its loss buffer's length)
    numbers: int  # width of the schedule-number table
    init_numbers: int  # width of the init-number table


@dataclass(frozen=True)
class Items:
    """A segment run for many fits at once (a batched fit's datasets, a sweep's settings): the
    program is the single-fit one `jax.vmap`ped over a leading items axis of the model, the
    optimizer and stop state, and (`data`) the data or (`numbers`) the table's numbers.

    The phase loop is shared: every item runs the same table rows (a sweep's settings share
    their branch sequence, or the sweep is refused), so the row and step counters, the branch
    `switch` and the phase loop's condition stay unbatched (a per-item branch index would make
    vmap run every branch and select). A row ends when every item has ended it (`lax.pmin`/`pmax`
    over `C.ITEMS`); an item that stopped earlier sits still (its values kept, no steps counted).
    """

    size: int
    data: bool  # the data arrays have the items axis (datasets), else they are shared (settings)
    numbers: bool  # the table's numbers have it (settings), else they are shared (datasets)


def window_for(model_bytes: int) -> int:
    """Phases per call: WINDOW, fewer for a model whose per-phase snapshots would pass SNAPSHOT_BUDGET."""
    return int(max(1, min(WINDOW, SNAPSHOT_BUDGET // max(model_bytes, 1))))


def _numbers_of(signature: C.PhaseSignature) -> int:
    return sum(h.size for g in signature.groups for h in g.hypers)


def plan(phases, prepared, previous: C.PhaseSignature | None, leaf_indices: dict, window: int, chunk: int) -> tuple[SegmentSignature, dict]:
    """The segment's static signature and its runtime table, for `phases` (PhasePlans) and their
    `prepared` (chunk.PreparedPhase) forms. `previous` is the signature of the phase run before
    the segment (what a first phase's `carry state` takes from), or None."""
    signatures: list[C.PhaseSignature] = []
    branches: dict[Branch, int] = {}
    rows = []

    def slot(signature) -> int:
        if signature not in signatures:
            signatures.append(signature)
        return signatures.index(signature)

    before = previous  # (the signature the phase's `carry state` takes from)
    for phase, prep in zip(phases, prepared):
        sig = prep.signature
        inits, numbers = [], []
        for init in phase.inits:
            args = () if init.kind == "reset" else init.args
            inits.append(InitSlot(leaf_indices[init.path], init.kind, len(numbers), len(args), int(C.path_key(init.path))))
            numbers.extend(args)
        carry_from, carried = -1, frozenset()
        if phase.carry and before is not None:
            carry_from, carried = slot(before), C.carried_labels(before, sig)
        branch = Branch(slot(sig), tuple(inits), carry_from, carried)
        rows.append((branches.setdefault(branch, len(branches)), phase, prep, numbers))
        before = sig
    width = max([_numbers_of(s) for s in signatures] + [1])
    init_width = max([len(r[3]) for r in rows] + [1])
    signature = SegmentSignature(tuple(signatures), tuple(branches), window, chunk, width, init_width)
    table = {
        "count": np.int32(len(rows)),
        "branch": np.zeros(window, np.int32),
        "steps": np.zeros(window, np.int32),
        "index": np.zeros(window, np.int32),
        "numbers": np.zeros((window, width), np.float64),
        "stop": np.zeros((window, 3), np.float64),
        "init": np.zeros((window, init_width), np.float64),
    }
    for row, (branch, phase, prep, numbers) in enumerate(rows):
        table["branch"][row], table["steps"][row], table["index"][row] = branch, phase.steps, phase.index
        table["numbers"][row, : len(prep.numbers)] = prep.numbers
        table["stop"][row] = prep.stop_numbers
        table["init"][row, : len(numbers)] = numbers
    if any(s.evaluation is not None for s in signatures):
        table.update(_limits_rows([(phase, prep) for _, phase, prep, _ in rows], signatures, window))
    return signature, table


def _limits_rows(phases: list, signatures, window: int) -> dict:
    """The table's numbers of the evaluations (`evaluate.limits`), a row per phase (one that does
    not evaluate keeps NaN, 0 and 1): per rule on metrics its threshold's `below` and its patience,
    and the interval `every`."""
    width = max(len(s.evaluation.rules) for s in signatures if s.evaluation is not None)
    rows = {"below": np.full((window, width), np.nan, E.value_dtype()), "patience": np.zeros((window, width), np.int32), "every": np.ones(window, np.int32)}
    for row, (phase, prep) in enumerate(phases):
        if prep.signature.evaluation is not None:
            limits = E.limits(phase)
            rows["every"][row] = limits["every"]
            for name in ("below", "patience"):
                rows[name][row, : len(limits[name])] = limits[name]
    return rows


# per table row, what a call of an evaluating segment tells the host of its evaluations (in `counts`,
# in this order): how many it took, the rule on metrics that ended it, the step `keep best` holds
EVAL_ROWS = ("count", "rule", "kept_step")

# numbers of a table that an items axis may batch (the rest say which rows run: shared)
PER_ITEM_ROWS = ("numbers", "stop", "init")


def stacked(tables: list[dict]) -> dict:
    """One table for many items (a sweep's settings) from theirs, which share every row's branch,
    step count and index: the `PER_ITEM_ROWS` gain a leading items axis."""
    table = dict(tables[0])
    for name in PER_ITEM_ROWS:
        table[name] = np.stack([t[name] for t in tables])
    return table


# a call's optimizer slots (and a row of its model snapshots) travel as one flat buffer per dtype
# while they take at most this many bytes (above it, packing would copy a large state at every
# call, or phase, for no measurable gain)
PACKED_SLOTS_BYTES = 4 << 20


@dataclass(frozen=True)
class SlotPacking:
    """Where each leaf of a tree sits in one flat buffer per dtype: a segment's optimizer slots,
    and a row of its per-row model buffers (`Program.packing`, `Program.row_packing`).

    A call returns each output as an array object the host builds (~1-8 us each): a segment's
    optimizer slots (Adam: a count and two moments per free leaf, per phase signature) were
    most of a short segment's outputs, and a model's snapshots are one per leaf. Packed, they
    are a buffer or a few. Packing and unpacking move values without arithmetic, so results
    are bit for bit the same.
    """

    treedef: Any
    dtypes: tuple  # one buffer per dtype
    places: tuple  # per leaf: (its buffer, offset, shape)

    @staticmethod
    def of(shapes) -> SlotPacking | None:
        """The packing of a tree of these shapes and dtypes; None when it is too large or
        holds a leaf that is not a plain number array (a typed PRNG key, say)."""
        import jax

        leaves, treedef = jax.tree_util.tree_flatten(shapes)
        if any(_not_numpy(leaf.dtype) for leaf in leaves):
            return None
        dtypes = [np.dtype(leaf.dtype) for leaf in leaves]
        if any(d.kind not in "biufc" for d in dtypes) or sum(d.itemsize * int(np.prod(leaf.shape)) for d, leaf in zip(dtypes, leaves)) > PACKED_SLOTS_BYTES:
            return None
        order = list(dict.fromkeys(dtypes))
        used = [0] * len(order)
        places = []
        for d, leaf in zip(dtypes, leaves):
            b = order.index(d)
            places.append((b, used[b], tuple(leaf.shape)))
            used[b] += int(np.prod(leaf.shape))
        return SlotPacking(treedef, tuple(order), tuple(places))

    def pack(self, slots, xp=np) -> tuple:
        """The buffers of `slots` (`xp`: numpy on the host, jax.numpy in a program)."""
        import jax

        groups: list[list] = [[] for _ in self.dtypes]
        for leaf, (b, _, _) in zip(jax.tree_util.tree_leaves(slots), self.places):
            groups[b].append(xp.ravel(xp.asarray(leaf)))
        return tuple(xp.concatenate(g) for g in groups)  # (every dtype has a leaf)

    def unpack(self, buffers):
        """The slots tree the `buffers` hold."""
        import jax

        leaves = [buffers[b][at : at + int(np.prod(shape))].reshape(shape) for b, at, shape in self.places]
        return jax.tree_util.tree_unflatten(self.treedef, leaves)


@dataclass
class Program:
    """A compiled segment: `call(state, table, root, reset_arrays, data_arrays, budget, validation) -> (state, out)`.

    A call runs at most `budget` steps (<= `signature.chunk`); `reset_arrays` are the run's
    initial model's array leaves that its `reset` inits read (`resets`, `reset_arrays`);
    `validation` is the validation data's arrays when a phase evaluates (else ()). The state's
    `at` is the row and step the call resumes at. `out` holds the call's losses
    (`losses`, in step order across its phases); `counts`: per table row the steps run in this
    call, then per row the stop reason, (when a phase evaluates) per row the evaluations it took in
    this call, the rule on metrics that ended it (-1: none) and the step of the weights `keep best`
    restored (-1: none), then the row and step the next call resumes at; and per row the model's
    array leaves after the row's phase (`snapshots`: one stacked array per leaf, or packed as the
    slots are, `row_packing`; read with `row_of`; with `keep best`, the kept weights); when a signature
    keeps an `ema` (`keeps_ema`, per signature), also the EMA model's leaves (`ema`, likewise);
    when a phase evaluates, the call's evaluation log (`evals`: every evaluation of its phases in
    order, `evaluate.empty_log`).
    """

    signature: SegmentSignature
    call: Callable
    slot_shapes: tuple  # per signature: the shape/dtype tree of its optimizer state
    unfusable: str | None  # why the loss must run phase by phase (see `_unfusable`), or None
    keeps_ema: tuple[bool, ...] = ()  # per signature: whether its optimizer state holds an `ema`
    packing: SlotPacking | None = None  # how the state's `slots` are packed (None: as a tree)
    stateful: bool = False  # the loss takes and returns a model state (`state=`)
    items: Items | None = None  # many fits at once (vmapped over their items), or one
    eval_shapes: tuple = ()  # per signature: the shape/dtype tree of its evaluation state (evaluate.initial_carry), or None
    resets: tuple[int, ...] = ()  # the positions among the model's array leaves that `reset` inits read
    row_packing: SlotPacking | None = None  # how the per-row model buffers (`snapshots`, `ema`) are packed (None: one per leaf)
    built_in: float | None = None  # seconds the first successful call took (tracing, lowering and compiling, then the dispatch); None before
    _fresh: dict | None = None  # what every run's calls share, already on the device (`_shared`)
    _unpack_row: Callable | None = None  # (packed per-row buffers, row) -> the model's array leaves, jitted (`row_of`)

    @property
    def ran(self) -> bool:
        """Whether a call has succeeded (so its loss traced and compiled)."""
        return self.built_in is not None

    def budget(self, steps: int):
        """The `budget` argument of a call running at most `steps` steps (the whole chunk's on the
        device already: a host scalar is copied in at every call)."""
        return self._shared()["budget"] if steps == self.signature.chunk else np.int32(steps)

    def initial_state(self, model_arrays, carried=None, model_state=None, stopped=None) -> dict:
        """The state a segment starts from: the model, fresh slots (a carried-in optimizer state
        `(signature, opt_state)` in its slot), the first row, step 0, the model state if any; with
        items, each item's stop `reason` (`stopped`: the items a non-finite loss stopped before)."""
        shared = self._shared()
        slots = shared["slots"]
        if carried is not None and carried[0] in self.signature.signatures:
            import jax

            fresh = [dict(slot) for slot in self._fresh_slots()]
            fresh[self.signature.signatures.index(carried[0])]["opt"] = carried[1]
            slots = jax.device_put(self.packing.pack(fresh)) if self.packing is not None else tuple(fresh)
        state = {"leaves": tuple(model_arrays), "slots": slots, "at": shared["start"]}
        if self.stateful:
            state["model_state"] = model_state
        if self.items is not None:
            state["reason"] = np.where(stopped, C.NONFINITE, C.COMPLETED).astype(np.int32)
        return state

    def reset_arrays(self, initial_arrays) -> tuple:
        """The `reset_arrays` argument of every call of a run whose initial model has these array leaves."""
        return tuple(initial_arrays[i] for i in self.resets)

    def row_of(self, buffers, row: int, items: bool = False) -> list:
        """The model's array leaves in table row `row` of per-row buffers a call returned
        (`snapshots`, `ema`; with `items`, every item's: the row is the buffers' second axis)."""
        if self.row_packing is None:
            return [buffer[:, row] if items else buffer[row] for buffer in buffers]
        if self._unpack_row is None:  # (one dispatch for the whole model, not one slice per leaf)
            import jax

            self._unpack_row = jax.jit(lambda buffers, row: self.row_packing.unpack([b[row] for b in buffers]))
        return list(self._unpack_row(buffers, row))

    def slot_opt(self, slots, index: int):
        """The optimizer state in slot `index` of a call's returned `slots` (unpacked on the host,
        put back on the device: the same values)."""
        if self.packing is None:
            return slots[index]["opt"]
        import jax

        return jax.device_put(self.packing.unpack([np.asarray(b) for b in slots])[index]["opt"])

    def _fresh_slots(self) -> list:
        """Per signature, a fresh slot on the host: a zero optimizer state and an empty `loss_change` window."""
        import jax

        lead = () if self.items is None else (self.items.size,)

        def zeros(shapes):
            return jax.tree_util.tree_map(lambda s: _zeros(lead + s.shape, s.dtype), shapes)

        slots = [{"opt": zeros(shapes), "ring": np.broadcast_to(C.empty_ring(sig.over), lead + (sig.over,))} for sig, shapes in zip(self.signature.signatures, self.slot_shapes)]
        for slot, shapes in zip(slots, self.eval_shapes):
            if shapes is not None:  # (a phase's first step replaces it with a fresh one)
                slot["eval"] = zeros(shapes)
        return slots

    def _shared(self) -> dict:
        """The fresh slots, the first row and the whole chunk's budget: made on the device once per
        program and shared by its runs (JAX arrays are immutable). Copying them in again at every
        call would cost more host time than the rest of a short segment's bookkeeping."""
        if self._fresh is None:
            import jax

            slots = self._fresh_slots()
            slots = self.packing.pack(slots) if self.packing is not None else tuple(slots)
            self._fresh = jax.device_put({"slots": slots, "start": np.zeros(2, np.int32), "budget": np.int32(self.signature.chunk)})
        return self._fresh


def _not_numpy(dtype) -> bool:
    """Whether `dtype` is one of JAX's that numpy has no dtype for (a typed PRNG key's, in the state
    of `noisy_sgd` or `add_noise`)."""
    import jax

    return jax.dtypes.issubdtype(dtype, jax.dtypes.extended)


def _zeros(shape: tuple, dtype):
    """Zeros on the host, or on the device for a dtype numpy has not."""
    import jax

    return jax.numpy.zeros(shape, dtype) if _not_numpy(dtype) else np.zeros(shape, dtype)


_CACHE: dict[tuple, Program] = {}


def compiled(signature: SegmentSignature, loss_fn: Callable, model_layout: C.Layout, data_layout: C.Layout, model_arrays, data_arrays, model_state=None, items: Items | None = None) -> Program:
    """The (cached) segment program for `signature`, `loss_fn`, the static parts of model and data,
    the shapes and dtypes of their arrays and the model state's (None without one), and the
    items it runs at once (None: one fit; the arrays then have their leading items axis).

    The shapes are part of the key because the program is built for them (its fresh optimizer
    slots, its loss's output): one schedule run on a wider model of the same class needs its own.
    So is the float width (`jax.enable_x64` switched on between runs): the slots' and the
    hyperparameters' dtypes follow it."""
    import jax

    state_key = None if model_state is None else (jax.tree_util.tree_structure(model_state), _avals(jax.tree_util.tree_leaves(model_state)))
    key = (signature, loss_fn, model_layout, data_layout, _avals(model_arrays), _avals(data_arrays), state_key, items, jax.config.jax_enable_x64)
    program = _CACHE.get(key)  # (one lookup: hashing a long segment's signature takes ~10 us)
    if program is None:
        program = _CACHE[key] = _build(signature, loss_fn, model_layout, data_layout, model_arrays, data_arrays, model_state, items)
    return program


def _avals(arrays) -> tuple:
    return tuple((a.shape, a.dtype) for a in arrays)


def cache_size() -> int:
    return len(_CACHE)


def _one_item(arrays, batched: bool) -> tuple:
    """The shapes and dtypes one item sees of `arrays` (without their leading items axis when `batched`)."""
    import jax

    return tuple(jax.ShapeDtypeStruct(a.shape[1:], a.dtype) for a in arrays) if batched else tuple(arrays)


def _build(segment: SegmentSignature, loss_fn: Callable, model_layout: C.Layout, data_layout: C.Layout, model_arrays, data_arrays, model_state, items: Items | None) -> Program:
    import jax

    stateful = model_state is not None
    output = _loss_output(loss_fn, model_layout, data_layout, stateful)
    # the program is written for one fit; with items, it is vmapped over them below
    model_arrays = _one_item(model_arrays, items is not None)
    data_arrays = _one_item(data_arrays, items is not None and items.data)

    position = model_layout.positions  # a leaf index (in the flattened model) -> its position among the array leaves

    def free_of(signature, leaves):
        return {path: leaves[position[indices[0]]] for path, indices in signature.leaves}

    slot_shapes = tuple(
        jax.eval_shape(lambda arrays, sig=sig: C.init_state(sig, free_of(sig, arrays), np.zeros(_numbers_of(sig), np.float64)), tuple(model_arrays))
        for sig in segment.signatures
    )
    keeps_ema = tuple(O.ema_of(shapes) is not None for shapes in slot_shapes)
    # per signature that evaluates: its rules' state (compiler.evaluate), carried in its slot from call to call
    eval_shapes = tuple(
        None if sig.evaluation is None else jax.eval_shape(lambda arrays, state, sig=sig: E.initial_carry(sig.evaluation, free_of(sig, arrays), state), tuple(model_arrays), model_state)
        for sig in segment.signatures
    )
    fresh = [{"opt": shapes, "ring": C.empty_ring(sig.over)} | ({} if ev is None else {"eval": ev}) for sig, shapes, ev in zip(segment.signatures, slot_shapes, eval_shapes)]
    # (items: the slots are few arrays with an items axis already, left as a tree)
    packing = None if items is not None else SlotPacking.of(fresh)
    # (a call returns each array it outputs as one the host wraps, ~1-2 us each: a small model's
    # per-row snapshots travel packed as its slots do; items: one per leaf, as the slots)
    row_packing = None if items is not None else SlotPacking.of(tuple(model_arrays))
    resets = tuple(sorted({position[init.leaves[0]] for b in segment.branches for init in b.inits if init.kind == "reset"}))
    evaluations = [sig.evaluation for sig in segment.signatures if sig.evaluation is not None]

    def program(kernel: bool) -> Callable:
        """The call to jit; with `kernel`, its branches' step loops may be kernels (compiler.kernel)."""
        branches = [_branch(segment, b, loss_fn, model_layout, data_layout, position, free_of, keeps_ema, row_packing, items is not None, kernel) for b in segment.branches]

        def call(state, table, root, reset_arrays, data_arrays, budget, validation):
            import jax.numpy as jnp

            # (the row and step travel as one array, the slots packed: fewer arrays in and out)
            state = dict(state)
            at = state.pop("at")
            state["phase"], state["step"] = at[0], at[1]
            if packing is not None:
                state["slots"] = tuple(packing.unpack(state["slots"]))
            initial_arrays = dict(zip(resets, reset_arrays))
            loss, aux = jax.eval_shape(output, state["leaves"], data_arrays, state.get("model_state"))
            W, K = segment.window, segment.chunk

            def per_row(tree):
                return jax.tree_util.tree_map(lambda x: jnp.zeros((W,) + x.shape, x.dtype), tree)

            out = {
                "losses": jnp.full((K,), jnp.nan, loss.dtype),
                "aux": {name: jnp.full((K,), jnp.nan, jnp.float32) for name in aux},
                "plateau": tuple(jnp.full((K, sig.plateaus), jnp.nan, jnp.float32) if sig.plateaus else None for sig in segment.signatures),
                "ran": jnp.zeros(W, jnp.int32),
                "reason": jnp.zeros(W, jnp.int32),
                "snapshots": per_row(_model_row(state["leaves"], row_packing)),
            }
            if any(keeps_ema):
                out["ema"] = per_row(_model_row(state["leaves"], row_packing))
            if stateful:
                out["states"] = per_row(state["model_state"])
            if evaluations:  # one log for the call's evaluations, whichever phases take them (they share the metrics function)
                names = jax.eval_shape(lambda leaves, model_state: E.metric_values(evaluations[0], model_layout.rebuild(leaves), model_state, validation), state["leaves"], state.get("model_state"))
                out["evals"] = E.empty_log(names, K)  # (a call runs at most K steps, each evaluating at most once)
                out["eval_rows"] = {name: jnp.full(W, 0 if name == "count" else -1, jnp.int32) for name in EVAL_ROWS}
            inputs = (table, root, initial_arrays, data_arrays, budget, validation)

            def more(carry):
                state, _, at, halted = carry
                return (state["phase"] < table["count"]) & (at < budget) & ~halted

            def body(carry):
                return _one_of(table["branch"][carry[0]["phase"]], [lambda c, b=b: b(c, inputs) for b in branches], carry)

            state, out, _, _ = jax.lax.while_loop(more, body, (state, out, jnp.int32(0), jnp.bool_(False)))
            # the numbers the host reads after every call, in one array (one transfer, not four)
            rows = [out.pop("ran"), out.pop("reason")]
            if evaluations:
                rows += [out["eval_rows"][name] for name in EVAL_ROWS]
                del out["eval_rows"]
            state["at"] = jnp.stack([state.pop("phase"), state.pop("step")])
            out["counts"] = jnp.concatenate([*rows, state["at"]])
            if packing is not None:
                state["slots"] = packing.pack(state["slots"], jnp)
            return state, out

        return call if items is None else _over_items(call, items)

    unfusable = _unfusable(output, model_arrays, data_arrays, model_state)
    return Program(segment, KernelsOrThunks(program), slot_shapes, unfusable, keeps_ema, packing, stateful, items, eval_shapes, resets, row_packing)


def _over_items(call: Callable, items: Items) -> Callable:
    """`call` vmapped over the items: the row and step it resumes at and the root key, budget and
    (for a sweep) data are shared; the rest has the items axis. The row and step come back
    unbatched (`out_axes` None: vmap refuses a batched one), so the branch switch and the phase
    loop stay unbatched control flow."""
    import jax

    state_axes = {"leaves": 0, "slots": 0, "at": None, "reason": 0}
    numbers = 0 if items.numbers else None
    table_axes = {name: numbers if name in PER_ITEM_ROWS else None for name in ("count", "branch", "steps", "index", *PER_ITEM_ROWS)}
    in_axes = (state_axes, table_axes, None, 0, 0 if items.data else None, None, None)
    return jax.vmap(call, in_axes=in_axes, out_axes=(state_axes, 0), axis_name=C.ITEMS)


def _loss_output(loss_fn: Callable, model_layout: C.Layout, data_layout: C.Layout, stateful: bool) -> Callable:
    """`(model arrays, data arrays, model state) -> (loss, aux metrics)`: the loss as a step calls
    it (with a stand-in `key`; given the model state when `stateful`), to trace it outside the steps."""
    from schedc.compiler import minibatch

    def output(model_arrays, data_arrays, model_state):
        args, kwargs = data_layout.rebuild(data_arrays)
        model = model_layout.rebuild(model_arrays)
        kwargs = minibatch.traced_kwargs(loss_fn, kwargs)
        if stateful:
            return minibatch.split_stateful_output(loss_fn(model, model_state, *args, **kwargs))[:2]
        return minibatch.split_output(loss_fn(model, *args, **kwargs))

    return output


def _unfusable(output: Callable, model_arrays, data_arrays, model_state) -> str | None:
    """Why a loss runs phase by phase, or None. A loss with effects (host callbacks: an exception
    a callback raises or a signal it sends must stop the run with every phase before it kept)
    does, and so does one that fails to trace or returns what a step rejects (run phase by
    phase, the error names its phase). (A loss taking a per-step `key` fuses: each phase's keys
    are folded from the root key and its index on the device; so do aux metrics, logged per step.)"""
    import jax

    from schedc.compiler import minibatch

    try:
        jaxpr, (_, aux) = jax.make_jaxpr(output, return_shape=True)(tuple(model_arrays), tuple(data_arrays), model_state)
        minibatch.check_aux(aux)
    except Exception:  # the first call reports it, phase by phase
        return "does not trace"
    if jaxpr.effects:
        return "calls back into Python"
    return None


def _one_of(index, branches: list, operand):
    """`lax.switch(index, branches, operand)`, as one run-at-most-once `while_loop` per branch.

    XLA:CPU copies every buffer a `conditional` updates in place into and out of its branch: the
    call's loss buffer (`chunk` floats) and per-row snapshots, twice per phase (measured: most of a
    fused phase's device time beyond its steps). A while loop updates its carry in place. Only the
    branch `index` names runs (`index` is read once, before any runs); one branch needs no guard.
    """
    import jax
    import jax.numpy as jnp

    if len(branches) == 1:
        return branches[0](operand)
    for b, branch in enumerate(branches):
        _, operand = jax.lax.while_loop(lambda c: c[0], lambda c, branch=branch: (jnp.bool_(False), branch(c[1])), (index == b, operand))
    return operand


def _model_row(leaves, row_packing: SlotPacking | None) -> tuple:
    """A row of the per-row model buffers (`snapshots`, `ema`): the model's leaves, or packed
    (`Program.row_packing`)."""
    import jax.numpy as jnp

    return tuple(leaves) if row_packing is None else row_packing.pack(leaves, jnp)


def _at_row(buffers, row, values):
    """Per-row buffers (a pytree of [rows, ...] arrays) with `values` (the same pytree) in `row`."""
    import jax

    return jax.tree_util.tree_map(lambda buffer, value: buffer.at[row].set(value), buffers, values)


def _branch(segment: SegmentSignature, branch: Branch, loss_fn, model_layout, data_layout, position: dict, free_of, keeps_ema: tuple, row_packing: SlotPacking | None, items: bool, kernel: bool) -> Callable:
    """One branch (see `_one_of`): run (the rest of, or as much as the buffer holds of) one phase.

    With `items` (the program is vmapped over them: see `Items`), each item carries its stop
    `reason` in the phase so far: at a row's start only a non-finite loss carries over (that
    item sits out the rest), and an item whose reason is not COMPLETED keeps its values and runs
    no steps (a stop rule's loop already skips it; the bare loop would not, so its results are
    put back). The row's steps taken and whether it is over are the same for every item: the
    most steps any item ran, and whether every item's row is over."""
    import jax
    import jax.numpy as jnp

    from schedc.compiler import minibatch

    signature = segment.signatures[branch.signature]
    n_numbers = _numbers_of(signature)
    ev = signature.evaluation  # the phase evaluates inside its steps (compiler.evaluate), or None
    # the phase's (data-order, loss) keys: its minibatches' permutations, the loss's per-step keys
    with_keys = bool(signature.batch) or minibatch.takes_key(loss_fn)

    def start(state, row, table, root, initial_arrays):
        """The phase's beginning: inits applied, a fresh (or carried) optimizer state, an empty
        window, and a fresh evaluation state (None: the phase does not evaluate)."""
        leaves = list(state["leaves"])
        for init in branch.inits:
            at = position[init.leaves[0]]
            if init.kind == "reset":
                value = initial_arrays[at]
            else:
                args = jax.lax.dynamic_slice_in_dim(table["init"][row], init.offset, init.size)
                value = C.init_value(init.kind, root, table["index"][row], np.uint32(init.path_number), args, leaves[at].shape, leaves[at].dtype)
            for leaf in init.leaves:
                leaves[position[leaf]] = value
        numbers = table["numbers"][row, :n_numbers]
        opt = C.init_state(signature, free_of(signature, leaves), numbers)
        if branch.carry_from >= 0:
            opt = C.carry_state(opt, state["slots"][branch.carry_from]["opt"], branch.carried, signature)
        eval_state = None if ev is None else E.initial_carry(ev, free_of(signature, leaves), state.get("model_state"))
        return tuple(leaves), opt, C.empty_ring(signature.over), eval_state

    def run(carry, inputs):
        state, out, at, _ = carry
        table, root, initial_arrays, data_arrays, budget, validation = inputs
        row, first = state["phase"], state["step"]
        own = state["slots"][branch.signature]
        leaves, opt, ring, eval_state = jax.lax.cond(
            first == 0,
            lambda: start(state, row, table, root, initial_arrays),
            lambda: (state["leaves"], own["opt"], own["ring"], own.get("eval")),
        )
        count = jnp.minimum(table["steps"][row] - first, budget - at)
        stop = {"ring": ring, "reason": jnp.int32(C.COMPLETED)}
        if items:
            stop["reason"] = jnp.where((first > 0) | (state["reason"] == C.NONFINITE), state["reason"], jnp.int32(C.COMPLETED))
        if "model_state" in state:  # (run_steps then calls the loss with it, and returns the new one)
            stop["model_state"] = state["model_state"]
        keys = minibatch.phase_key_pair(root, table["index"][row]) if with_keys else (None, None)
        logs = {"loss": out["losses"]}
        if out["aux"]:
            logs["aux"] = out["aux"]
        if signature.plateaus:
            logs["plateau_scale"] = out["plateau"][branch.signature]
        evaluation = ()
        if ev is not None:  # its rules' state, the call's log; the validation data, the row's thresholds, patience and interval
            stop["eval"], logs["evals"] = eval_state, out["evals"]
            limits = {"below": table["below"][row, : len(ev.rules)], "patience": table["patience"][row, : len(ev.rules)], "every": table["every"][row]}
            evaluation = (validation, limits)
        free = _own_buffers(free_of(signature, leaves))
        before = (jnp.int32(0), free, opt, stop, logs)  # (with items: what an item that had stopped keeps)
        ran, free, opt, stop, logs = C.run_steps(
            signature, loss_fn, model_layout, data_layout, free, opt, stop, leaves, first, count,
            table["numbers"][row, :n_numbers], table["stop"][row], data_arrays, keys, logs, at, evaluation, items=items, kernel=kernel,
        )
        free = _own_buffers(free)
        if items:  # an item that had stopped: its values as they were, no steps
            ran, free, opt, stop, logs = C.select(before[3]["reason"] == C.COMPLETED, (ran, free, opt, stop, logs), before)
            stop["reason"] = _nonfinite_stops(stop["reason"], logs["loss"], at, ran)

        def written(values):
            """The model's leaves with the free parameters' `values` written in (shared copies too)."""
            new = list(leaves)
            for path, indices in signature.leaves:
                for leaf in indices:
                    new[position[leaf]] = values[path]
            return new

        ema_leaves = written(O.ema_of(opt)) if keeps_ema[branch.signature] else None
        reason = stop["reason"]
        end = first + ran
        over = (end >= table["steps"][row]) | (reason != C.COMPLETED)
        taken = ran
        if items:  # one row, one step counter for every item
            taken, over = jax.lax.pmax(ran, C.ITEMS), jax.lax.pmin(over.astype(jnp.int32), C.ITEMS).astype(bool)
            end = first + taken
        if ev is not None and ev.keeps:  # the phase over (however it ended): `keep best`'s weights and model state, if any improved
            restore = over & (stop["eval"]["kept_step"] >= 0)
            kept, kept_state = stop["eval"]["kept"]
            free = C.select(restore, kept, free)
            if "model_state" in stop:
                stop["model_state"] = C.select(restore, kept_state, stop["model_state"])
        leaves = written(free)
        slots = list(state["slots"])
        slots[branch.signature] = {"opt": opt, "ring": stop["ring"]} | ({} if ev is None else {"eval": stop["eval"]})
        state = dict(state, leaves=tuple(leaves), slots=tuple(slots), phase=row + over.astype(jnp.int32), step=jnp.where(over, 0, end).astype(jnp.int32))
        if items:
            state["reason"] = reason
        # every branch returns the same outputs: those it does not write pass through
        out = dict(
            out,
            losses=logs["loss"],
            aux=logs.get("aux", out["aux"]),
            plateau=tuple(logs["plateau_scale"] if signature.plateaus and i == branch.signature else b for i, b in enumerate(out["plateau"])),
            ran=out["ran"].at[row].set(ran),
            reason=out["reason"].at[row].set(reason),
            snapshots=_at_row(out["snapshots"], row, _model_row(leaves, row_packing)),
        )
        if ema_leaves is not None:
            out["ema"] = _at_row(out["ema"], row, _model_row(ema_leaves, row_packing))
        if ev is not None:
            rows = out["eval_rows"]
            counted = {"count": logs["evals"]["count"] - out["evals"]["count"], "rule": stop["eval"]["rule"], "kept_step": stop["eval"].get("kept_step", jnp.int32(-1))}
            out["evals"], out["eval_rows"] = logs["evals"], {name: rows[name].at[row].set(counted[name]) for name in rows}
        if "model_state" in state:
            state["model_state"] = stop["model_state"]
            out["states"] = _at_row(out["states"], row, stop["model_state"])
        # a non-finite loss halts a single fit's call (the run stops); with items it stops its item only
        return state, out, at + taken, jnp.bool_(False) if items else reason == C.NONFINITE

    return run


def _own_buffers(tree):
    """`tree` with each float16/32/64 array made a new value, its bits unchanged
    (`lax.reduce_precision` to its own precision; on bfloat16 and float8 it would canonicalise NaN
    payloads, so those pass as they are): around a branch's step loop, so that the loop's carry
    has buffers of its own.

    Why: XLA orders a step's reads of a parameter before its in-place update
    (`kernel.STEP_COMPILER_OPTIONS`) only where the buffer's other uses sit in the step loop's
    own computation. Passed straight through, the carry shares its buffers with the loop over
    phases, and XLA keeps a copy of each free parameter at every step instead. Without the
    options (on a GPU, say) this buys nothing: `tree` as it is."""
    import jax
    import jax.numpy as jnp

    if not step_options_on():
        return tree

    def own(x):
        if x.dtype not in (jnp.float16, jnp.float32, jnp.float64):
            return x
        info = jnp.finfo(x.dtype)
        return jax.lax.reduce_precision(x, exponent_bits=info.nexp, mantissa_bits=info.nmant)

    return jax.tree_util.tree_map(own, tree)


def _nonfinite_stops(reason, losses, at: int, ran):
    """With items: an item whose losses at `at` .. `at + ran - 1` hold a non-finite value stops
    (NONFINITE), so it sits out the rest of the run. Looked for once per row and call, not per
    step (a single fit's host finds it; the host cuts its history at its first one)."""
    import jax.numpy as jnp

    steps = jnp.arange(losses.shape[0])
    bad = jnp.any(~jnp.isfinite(losses) & (steps >= at) & (steps < at + ran))
    return jnp.where(bad & (reason == C.COMPLETED), jnp.int32(C.NONFINITE), reason)
