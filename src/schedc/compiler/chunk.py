"""Plan -> one jitted chunk function per phase signature.

A phase's *signature* is everything that shapes its XLA program: which
parameters are free (and their tied copies), the optimizer groups and their
optimizers, which hyperparameters are fed and the structure of their
schedules, the kinds of stop rule, the chunk length, the metrics function and its rules (`eval`: compiler.evaluate).
Everything else — learning
rates, schedule waypoints, step counts, stop thresholds — is a runtime number,
so phases that differ only in numbers (and re-runs of a program) reuse one
executable. The cache is module-level: shared by every program in the process.

A chunk runs up to K steps in a `lax.while_loop` over a runtime step count:
assemble the model from the free values, value-and-grad with respect to the
free values only (fixed parameters are never differentiated, never seen by the
optimizer, never moved by weight decay or momentum), build the optax optimizer
with this step's hyperparameter values, update, apply. The loop ends at the
phase's end or when a stop rule fires, so no step is ever masked. An evaluated phase
evaluates inside the loop too (compiler.evaluate): a chunk does not end at an evaluation.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, replace
from functools import cached_property, lru_cache
from typing import Any, Callable, Hashable

import numpy as np

from schedc.check import catalog
from schedc.compiler import kernel as K
from schedc.compiler import optimizers as O
from schedc.plan import resolve as P

COMPLETED, STOP_LOSS_CHANGE, STOP_LOSS, NONFINITE, STOP_EVAL = 0, 1, 2, 3, 4
# (STOP_EVAL: a rule on an evaluation metric; the host words it after the rule, `val.loss < 0.1`)
STOP_REASONS = {COMPLETED: "completed", STOP_LOSS_CHANGE: "loss_change", STOP_LOSS: "loss", NONFINITE: "non-finite loss", STOP_EVAL: "evaluation"}

# steps a chunk call may run (its loss buffer's length); the runner sizes each call below it
DEFAULT_CHUNK = 16384

# the vmapped axis of many fits at once (a batched fit's datasets, a sweep's settings: the
# phase-by-phase chunk, `Compiled.per_item`, and a fused segment, `segment.Items`): reductions
# over the items name it
ITEMS = "items"


@dataclass(frozen=True)
class Hyper:
    """A hyperparameter fed at every step: `numbers[offset:offset + size]` drive its schedule."""

    name: str
    structure: Hashable
    offset: int
    size: int


@dataclass(frozen=True)
class GroupSignature:
    label: str  # "" for the phase's default group, else the patterns that made it
    paths: tuple[str, ...]
    members: tuple[O.Member, ...]  # the optax transformations chained, with their static keywords
    hypers: tuple[Hyper, ...]
    plateau: tuple[tuple[str, float], ...] | None = None  # reduce_on_plateau's keywords, chained last
    # `plateau(on=val.M)`: the scale is held in the loop and stepped at each evaluation (runtime.evaluation)
    plateau_on: str | None = None

    @property
    def optimizer(self) -> tuple:
        """What decides the shape of the group's optimizer state (`carry state` needs it unchanged)."""
        return tuple((m.name, m.static, m.transform) for m in self.members), self.plateau


@dataclass(frozen=True)
class PhaseSignature:
    """What shapes a phase's XLA program (the module docstring lists it); phases with equal
    signatures share one executable. (Not `check.catalog.CallSignature`, a callable of the language.)"""

    groups: tuple[GroupSignature, ...]
    leaves: tuple[tuple[str, tuple[int, ...]], ...]  # free path -> its leaf indices (the parent's and its copies')
    stop_kinds: tuple[str, ...]  # sorted kinds of the phase's stop rules
    over: int  # window of a loss_change rule (the ring buffer's length), 1 without one
    chunk: int
    accumulate: int = 1  # optax.MultiSteps over this many steps
    ema: float | None = None  # decay of the EMA of the free parameters
    batch: int = 0  # minibatch size (schedc.compiler.minibatch); 0: every step sees all the data
    batch_sharding: tuple | None = None  # per data array: the sharding of its minibatches or streamed batches (data parallel), or None
    stream: bool = False  # the data arrays are `chunk` stacked batches (runtime.stream): step i reads row i % chunk
    evaluation: Any = None  # a compiler.evaluate.Evaluation: the phase evaluates inside its program

    @property
    def plateaus(self) -> int:
        """How many plateau scales the chunk logs at each step."""
        return sum(g.plateau is not None for g in self.groups)

    @property
    def n_hypers(self) -> int:
        return sum(len(g.hypers) for g in self.groups)


@dataclass(frozen=True)
class PreparedPhase:
    """A phase ready to run: its signature and the runtime numbers that go with it."""

    signature: PhaseSignature
    numbers: np.ndarray  # float64 (float32 on the device without jax_enable_x64): every hyperparameter schedule's numbers
    stop_numbers: np.ndarray  # float64 (float32 on the device without jax_enable_x64): [loss_change threshold, after, loss threshold]
    hyper_names: tuple[str, ...]  # column names of the logged hyperparameters


def prepare(phase: P.PhasePlan, leaf_indices: dict[str, tuple[int, ...]], chunk: int) -> PreparedPhase:
    """Split a phase into its signature (static) and its numbers (runtime).

    Args:
      phase: the planned phase.
      leaf_indices: canonical parent path -> indices of its leaves in the flattened model
        (the parent first, then its shared copies).
      chunk: steps per compiled chunk.
    """
    prepared = _lowered(phase)
    leaves = tuple((path, leaf_indices[path]) for path in sorted(phase.free))
    return replace(prepared, signature=interned(replace(prepared.signature, leaves=leaves, chunk=int(chunk))))


# a PhaseSignature -> itself (the first one seen equal to it); emptied when full
_INTERNED: dict = {}
_INTERNED_KEPT = 4096


def interned(signature: PhaseSignature) -> PhaseSignature:
    """The one signature equal to `signature` that the process keeps (`signature` itself, the first time).

    A phase-by-phase run looks each phase's programs up by its signature: equal ones being the
    same object, the lookups compare them by identity and `compiled` finds them by id (the
    phases of a run are equal, not identical: a signature was hashed and compared field by
    field at every phase, ~20 us in situ). Valid because signatures are frozen and an equal one
    already stands for it in every cache keyed by signature (the program compiled for the first)."""
    kept = _INTERNED.get(signature)
    if kept is None:
        if len(_INTERNED) >= _INTERNED_KEPT:
            _INTERNED.clear()
        kept = _INTERNED[signature] = signature
    return kept


def check_lowering(phase: P.PhasePlan) -> None:
    """Lower `phase`'s schedules now (cached for the run): the SchedError a duration in epochs
    that does not fit its phase once in steps makes, raised before any phase runs."""
    _lowered(phase)


@lru_cache(maxsize=1024)
def _lowered(phase: P.PhasePlan) -> PreparedPhase:
    """Everything of `prepare` but the leaf layout and the chunk length, cached: lowering a phase's
    schedules (with their checks) costs about half a millisecond, which a re-run of a program
    should not pay, whatever chunk length it runs with (`check_lowering` fills the same entry)."""
    from schedc.compiler import schedules

    numbers: list[float] = []
    groups = []
    names = []
    for group in phase.groups:
        spec = group.optimizer or phase.optimizer
        label = _group_label(group)
        own_lr = group.lr is not None or group.plateau is not None
        lr = group.lr if group.lr is not None else phase.lr
        plateau, plateau_on = (group.plateau, group.plateau_on) if own_lr else (phase.plateau, phase.plateau_on)
        hypers: list[Hyper] = []

        def feed(hp_name: str, expr) -> int:
            """The index of a fed hyperparameter in the group, lowering its schedule."""
            lowered = schedules.lower(expr, phase.steps)
            hypers.append(Hyper(hp_name, lowered.structure, len(numbers), len(lowered.numbers)))
            numbers.extend(float(x) for x in lowered.numbers)
            names.append(hp_name if not label else f"{hp_name}@{label}")
            return len(hypers) - 1

        objects = [m.transform for m in spec.transforms if m.transform is not None]
        named_takes_lr = any(m.transform is None and _takes_lr(m.name) for m in spec.transforms)
        documents = lr is not None and objects and not named_takes_lr
        for bound in objects if documents else ():  # an object runs as-is: the lr, if any, only documents (spectracles' rule)
            _check_documented_lr(bound, lr, phase)
        lr_index = feed("learning_rate", lr) if lr is not None and not documents else None
        members = []
        chained = len(spec.transforms) > 1
        for member in spec.transforms:
            if member.transform is not None:
                members.append(O.Member(member.name, (), (), member.transform))
                continue
            static, fed = O.split_kwargs(member)
            takes_lr = _takes_lr(member.name)
            given = {k for k, _ in static} | {k for k, _ in fed}
            slots = [(k, feed(f"{member.name}.{k}" if chained else k, expr)) for k, expr in fed]
            if lr_index is not None and takes_lr and "learning_rate" not in given:
                slots.insert(0, ("learning_rate", lr_index))
            members.append(O.Member(member.name, static, tuple(slots)))
        groups.append(GroupSignature(label, tuple(group.paths), tuple(members), tuple(hypers), plateau, plateau_on))
    device_rules = [rule for rule in phase.stop if rule.on_loss]  # rules on evaluations: compiler.evaluate
    kinds = tuple(sorted({rule.kind for rule in device_rules}))
    over = next((rule.over for rule in device_rules if rule.kind == "loss_change"), 1)
    stop_numbers = np.zeros(3, np.float64)  # compared with the loss: as precise as a float64 loss needs
    for rule in device_rules:
        if rule.kind == "loss_change":
            stop_numbers[0], stop_numbers[1] = rule.threshold, rule.after
        else:
            stop_numbers[2] = rule.threshold
    signature = PhaseSignature(tuple(groups), (), kinds, int(over), 0, phase.accumulate, phase.ema, int(phase.batch or 0))
    names += [f"plateau_scale@{g.label}" if g.label else "plateau_scale" for g in groups if g.plateau is not None]
    numbers_array = np.asarray(numbers, np.float64)
    for shared in (numbers_array, stop_numbers):  # cached: shared by every run of the phase
        shared.setflags(write=False)
    return PreparedPhase(signature, numbers_array, stop_numbers, tuple(names))


def _takes_lr(name: str) -> bool:
    """Whether the optax transformation `name` has a `learning_rate` (the phase lr feeds it)."""
    return any(p[0] == "learning_rate" for p in catalog.transform_params(name))


def _check_documented_lr(bound, lr, phase: P.PhasePlan) -> None:
    """Warn when a phase lr disagrees with the learning rate an optimizer object reveals
    (one built with `optax.inject_hyperparams`): the object's own is the one applied."""
    import warnings

    from schedc.lang.expr import constant

    written = constant(lr) if lr is not None else None
    revealed = revealed_hyperparams(bound.value, 1).get("learning_rate")
    if written is None or revealed is None or np.isclose(float(revealed[0]), written, rtol=1e-6, atol=0.0):
        return
    warnings.warn(
        f"{phase.label}: lr {written:g} only documents: the optimizer object `${bound.id}` applies its own learning_rate, {float(revealed[0]):g}",
        stacklevel=2,
    )


def revealed_hyperparams(transform, steps: int, start: list | None = None, every: int = 1) -> dict[str, np.ndarray]:
    """The hyperparameters an optax object built with `optax.inject_hyperparams` applies at steps
    0 .. steps-1 of a phase, as optax itself computes them: its update replayed on an empty pytree
    (no parameters, so only the hyperparameter schedules run). {} for any other object.

    `start`: its `inject_hyperparams` states when the phase began, when `carry state` continued
    them (`injected_states`): the replay goes on from their step counts and schedule states.
    `every`: steps per update (`accumulate N`: optax.MultiSteps updates the object once every
    N steps, with the values of its count then).
    """
    try:
        state = transform.init({})
        if not _injected(state):
            return {}
        state = _continued(state, start or [])
        updates = -(-steps // every)
        length = 1 << (updates - 1).bit_length()  # a power of two: phases of many lengths share the replay
        try:
            replay = _replay(transform, length)
        except TypeError:  # an unhashable object: replayed uncached
            replay = _replay.__wrapped__(transform, length)
        logged = replay(state)
    except Exception:  # an object that cannot run without parameters reveals nothing
        return {}
    return {name: np.repeat(np.asarray(values)[:updates], every)[:steps] for name, values in logged.items()}


@lru_cache(maxsize=256)
def _replay(transform, length: int) -> Callable:
    """`state -> the injected hyperparameters of `length` updates from it`, jitted and cached per
    object: a scan of a fresh closure compiled again at every read (~80 ms per phase's log)."""
    import jax

    def step(state, _):
        _, state = transform.update({}, state, {})
        return state, _injected(state)

    return jax.jit(lambda state: jax.lax.scan(step, state, None, length=length)[1])


def _is_injected(x) -> bool:
    """An `optax.inject_hyperparams` state: a step `count` and the `hyperparams` dict."""
    return isinstance(getattr(x, "hyperparams", None), dict) and hasattr(x, "count")


# what an `inject_hyperparams` state holds besides its inner optimizer's state (whose arrays are the parameters')
_SCHEDULE_FIELDS = ("count", "hyperparams", "hyperparams_states")


def _continued(state, start: list):
    """A fresh (parameterless) object state whose `inject_hyperparams` states take their counts,
    values and schedule states from `start`, in tree order."""
    import jax

    carried = iter(start)

    def at(x):
        if not _is_injected(x) or (before := next(carried, None)) is None:
            return x
        return x._replace(**{f: getattr(before, f) for f in _SCHEDULE_FIELDS if hasattr(x, f)})

    return jax.tree_util.tree_map(at, state, is_leaf=_is_injected)


def injected_count(transform) -> int:
    """How many `inject_hyperparams` states an optax object's state holds (a chain may hold several)."""
    import jax

    return sum(_is_injected(x) for x in jax.tree_util.tree_leaves(transform.init({}), is_leaf=_is_injected))


def injected_states(opt_state, signature: PhaseSignature) -> dict[str, list]:
    """Group label -> the `inject_hyperparams` states in its part of `opt_state`, in tree order (a
    group's members in chain order): fresh ones, or those `carry state` took from the phase before."""
    import jax

    multi = len(signature.groups) > 1
    states: dict[str, list] = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(opt_state, is_leaf=_is_injected)[0]:
        if _is_injected(leaf):
            states.setdefault(_label_of(path) if multi else "", []).append(leaf)
    return states


def _injected(state) -> dict:
    """The numeric scalar hyperparameters of every `inject_hyperparams` state inside `state`."""
    import jax
    import jax.numpy as jnp

    found = {}
    for node in jax.tree_util.tree_leaves(state, is_leaf=_is_injected):
        for name, value in getattr(node, "hyperparams", {}).items():
            if jnp.ndim(value) == 0 and jnp.issubdtype(jnp.result_type(value), jnp.number):
                found.setdefault(name, value)
    return found


def _group_label(group: P.Group) -> str:
    """The phase's own group is ""; a `free P lr ...` group is named by its patterns as written."""
    if group.lr is None and group.optimizer is None and group.plateau is None:
        return ""
    return group.label or ",".join(group.paths)


# ---------------------------------------------------------------- building programs


def make_transform(signature: PhaseSignature, values: list[list]):
    """The phase's optax transformation with this step's hyperparameter values.

    Built afresh inside the traced step with traced values — the mechanism of
    `optax.inject_hyperparams`, without its per-step copy of the values into the
    optimizer state (measured: ~30% of a step on a small model) and without its
    one-step lag in what is logged: the values passed here are the ones applied.
    One group: its transformation; several: `optax.partition` keyed by group label;
    then the EMA and the accumulation (schedc.compiler.optimizers).
    """
    import optax

    txs = [O.build_group(g.members, g.plateau, vals, held=g.plateau_on is not None) for g, vals in zip(signature.groups, values)]
    if len(txs) == 1:
        tx = txs[0]
    else:
        # partition keys are the group labels, so `carry state` can match groups across phases
        labels = {path: g.label for g in signature.groups for path in g.paths}
        tx = optax.partition({g.label: t for g, t in zip(signature.groups, txs)}, labels)
    if signature.ema is not None:
        tx = optax.chain(tx, O.ema_params(signature.ema))
    if signature.accumulate > 1:
        tx = optax.MultiSteps(tx, every_k_schedule=signature.accumulate).gradient_transformation()
    return tx


def hyper_values(signature: PhaseSignature, step, numbers, dtype) -> list[list]:
    """Every group's fed hyperparameters at `step`, computed in the numbers' precision, cast to `dtype`."""
    import jax.numpy as jnp

    from schedc.compiler import schedules

    return [[jnp.asarray(schedules.build(h.structure)(step, numbers[h.offset : h.offset + h.size]), dtype) for h in g.hypers] for g in signature.groups]


@dataclass
class Compiled:
    """The jitted functions of one signature."""

    init: Callable  # (free, numbers) -> optimizer state
    # (free, opt_state, stop_state, model_arrays, step0, n_active, numbers, stop_numbers, data_arrays, keys, evaluation)
    #   -> (free, opt_state, stop_state, losses, aux metrics per step, evaluation log)
    # (`evaluation`: (validation arrays, evaluate.limits) of an evaluated phase, else ();
    #  the evaluation log: evaluate.empty_log's, filled, or {})
    chunk: Callable
    hypers: Callable  # (step0, numbers) -> [chunk, hyperparameters] applied values
    # the chunk function, not jitted, for many fits at once: to be `jax.vmap`ped over the items
    # with `axis_name=ITEMS` (an evaluation runs when some item is due: see `run_steps`); given
    # whether its loop may be a kernel (`kernel.KernelsOrThunks`)
    per_item: Callable[[bool], Callable]
    evaluated: bool  # the phase evaluates: the chunk's `evaluation` argument is (validation arrays, limits), else ()


class _ById:
    """A cache-key stand-in for an unhashable static value: equal only to itself."""

    def __init__(self, value):
        self.value = value


@dataclass(frozen=True)
class Layout:
    """How to rebuild a pytree from its array leaves: the treedef and every non-array leaf.

    Arrays are traced; everything else (Python numbers, functions, strings) is
    static and part of the cache key, as in `equinox.filter_jit` — but split once
    per phase on the host, so each chunk call is a plain `jax.jit` dispatch.
    """

    treedef: Any
    static: tuple  # the leaf, or None where an array goes

    def rebuild(self, arrays):
        import jax

        it = iter(arrays)
        leaves = [next(it) if s is None else (s.value if isinstance(s, _ById) else s) for s in self.static]
        return jax.tree_util.tree_unflatten(self.treedef, leaves)

    @cached_property
    def positions(self) -> dict[int, int]:
        """Leaf index (in the flattened tree) -> its position among the array leaves (a parameter's
        leaves are arrays: where its value sits in `split`'s arrays). (Kept on the layout: it is a
        function of `static` alone, which never changes.)"""
        return {leaf: i for i, leaf in enumerate(k for k, s in enumerate(self.static) if s is None)}


def split(tree) -> tuple[tuple, Layout]:
    """(array leaves, layout) of a pytree."""
    import jax

    leaves, treedef = jax.tree_util.tree_flatten(tree)
    is_array = [isinstance(x, (jax.Array, np.ndarray, np.generic)) for x in leaves]
    static = tuple(None if a else _hashable(x) for x, a in zip(leaves, is_array))
    return tuple(x for x, a in zip(leaves, is_array) if a), Layout(treedef, static)


def _hashable(x):
    try:
        hash(x)
        return x
    except TypeError:
        return _ById(x)


_CACHE: dict[tuple, Compiled] = {}
# (the ids of a `compiled` call's arguments) -> (the arguments, their Compiled); emptied when full
_FOUND: dict[tuple, tuple] = {}
_FOUND_KEPT = 4096


def kept_by_id(cache: dict, limit: int, key: tuple, held: tuple, make: Callable):
    """`cache[key]`'s value, made by `make()` the first time; the cache is emptied when full. Its
    entry holds `held` (the objects whose ids `key` names), so their ids are not reused while it lives."""
    entry = cache.get(key)
    if entry is None:
        if len(cache) >= limit:
            cache.clear()
        entry = cache[key] = (held, make())
    return entry[1]


def compiled(signature: PhaseSignature, loss_fn: Callable, model: Layout, data: Layout) -> Compiled:
    """The (cached) jitted functions for `signature`, `loss_fn` and the static parts of model and data.

    Found first by the arguments' identity: a phase-by-phase run asks at every phase, with its
    signatures `interned` and one model and data layout (so a run's phases of one kind ask with
    the same objects). (Layouts are not interned: equal static leaves may differ in type, `1`
    and `1.0`, and a layout rebuilds the run's models on the host.)"""
    key = (signature, loss_fn, model, data)
    return kept_by_id(_FOUND, _FOUND_KEPT, tuple(map(id, key)), key, lambda: _built(key))


def _built(key: tuple) -> Compiled:
    if key not in _CACHE:
        _CACHE[key] = _build(*key)
    return _CACHE[key]


def cache_size() -> int:
    return len(_CACHE)


def init_state(signature: PhaseSignature, free, numbers):
    """A fresh optimizer state for `free` (traceable)."""
    import jax.numpy as jnp

    return make_transform(signature, hyper_values(signature, jnp.int32(0), numbers, hyper_dtype(free))).init(free)


# (a jitted init, what it is called on: structure, shapes, dtypes, weak types, shardings) -> the
# fresh state, when it depends on neither argument's values and is small; None otherwise
_CONSTANT_STATES: dict[tuple, Any] = {}
# a kept state holds device memory for the process's life: only small ones are kept (a large
# model's phase runs long enough that its init call does not matter)
KEPT_STATE_BYTES = 16 << 20


def fresh_opt_state(init: Callable, free: dict, numbers):
    """`init(free, numbers)` (a phase's jitted optimizer init), called once per kind of argument when
    the state it makes depends on neither argument's values (Adam's: zero moments and count).

    Valid because such a state is the same for every call with arguments of the same structure,
    shapes, dtypes and shardings (the key), whatever their values, and JAX arrays are immutable
    (no program donates its arguments), so every phase may start from the one kept. Which states
    qualify is read once from the init's jaxpr (`_depends_on_inputs`); a state that copies the
    parameters (an EMA's) or reads a number, or one larger than KEPT_STATE_BYTES, is made at
    every call, as before."""
    import jax

    # (free: parameter path -> its array. The abstract value holds shape, dtype and weak type; it
    # and the sharding are the same objects for every output of one program, so that a lookup
    # compares them by identity: building and comparing shapes and shardings cost ~25 us a phase)
    key = (init, tuple(free), tuple(map(_kind, free.values())), _kind(numbers))
    kept = _CONSTANT_STATES.get(key, _UNSEEN)
    if kept is _UNSEEN:
        state = init(free, numbers)
        small = sum(getattr(x, "nbytes", 0) for x in jax.tree_util.tree_leaves(state)) <= KEPT_STATE_BYTES
        _CONSTANT_STATES[key] = state if small and not _depends_on_inputs(jax.make_jaxpr(init)(free, numbers).jaxpr) else None
        return state
    return init(free, numbers) if kept is None else kept


_UNSEEN = object()  # (a key `fresh_opt_state` has not met)


def _kind(x) -> tuple:
    """What a kept optimizer state asks of an argument: its abstract value and sharding (a host
    array: its shape and dtype)."""
    aval = getattr(x, "aval", None)
    return (aval, x.sharding) if aval is not None else (np.shape(x), np.result_type(x))


def _depends_on_inputs(jaxpr) -> bool:
    """Whether an output of `jaxpr` may depend on the value of an input: an operation reached from
    an input taints all its outputs, except a jitted call, whose body is followed."""
    return any(_tainted_outputs(jaxpr, [True] * len(jaxpr.invars)))


def _tainted_outputs(jaxpr, tainted_inputs: list[bool]) -> list[bool]:
    """Per output of `jaxpr`, whether it may depend on the inputs marked in `tainted_inputs`."""
    from jax.extend.core import Literal

    def tainted_var(v) -> bool:
        return not isinstance(v, Literal) and v in tainted

    tainted = {v for v, t in zip(jaxpr.invars, tainted_inputs) if t}
    for eqn in jaxpr.eqns:
        inputs = [tainted_var(v) for v in eqn.invars]
        if not any(inputs):
            continue
        body = eqn.params.get("jaxpr") if eqn.primitive.name in ("jit", "pjit") else None
        outputs = _tainted_outputs(getattr(body, "jaxpr", body), inputs) if body is not None else [True] * len(eqn.outvars)
        tainted.update(v for v, t in zip(eqn.outvars, outputs) if t)
    return [tainted_var(v) for v in jaxpr.outvars]


def hyper_dtype(free):
    """The dtype the optimizer gets its hyperparameters in: the free parameters' (float64 under
    jax_enable_x64 with a float64 model, float32 otherwise), so that a learning rate never widens
    a float32 model's updates or optimizer state, nor rounds a float64 model's to float32."""
    import jax
    import jax.numpy as jnp

    leaves = [x for x in jax.tree_util.tree_leaves(free) if jnp.issubdtype(jnp.result_type(x), jnp.inexact)]
    return jnp.result_type(*leaves) if leaves else jnp.result_type(float)


def stops_early(signature: PhaseSignature) -> bool:
    """Whether a chunk's loop may end before its last step, setting the stop state's reason: a stop
    rule on the loss, or an evaluation (whose rules may fire). Otherwise the loop is bare: it runs
    every step and returns the reason it was given (the host finds a non-finite loss itself)."""
    return "loss_change" in signature.stop_kinds or "loss" in signature.stop_kinds or signature.evaluation is not None


def run_steps(
    signature: PhaseSignature, loss_fn: Callable, model_layout: Layout, data_layout: Layout, free, opt_state, stop_state, model_arrays, step0, n_active, numbers, stop_numbers, data_arrays, keys, logs=None, at=0, evaluation=(), items=False, kernel=False
):
    """The device loop of a phase (traceable): up to `n_active` steps from phase step `step0`.

    The loss before step k is written to `logs["loss"][at + k]` (with plateaus the scales it
    applied to `logs["plateau_scale"][at + k]`, and given `logs["aux"]`, each aux metric to
    `logs["aux"][name][at + k]`); `logs=None` makes a fresh chunk-long buffer (the plateau one
    from `stop_state`). `keys` are the phase's data-order and loss keys
    (minibatch.phase_keys). A `stop_state["model_state"]` (an `eqx.nn.State`) makes the loss
    stateful: `loss(model, state, *data)`, the state it returns carried to the next step and
    returned in `stop_state["model_state"]`. An evaluated phase (`signature.evaluation`, with
    `evaluation` its (validation arrays, limits) and `stop_state["eval"]` its carried state)
    evaluates after each step that completes `every` steps (compiler.evaluate), logged to
    `logs["evals"]`; a rule that fires sets the reason STOP_EVAL. With `items` the function
    runs `jax.vmap`ped over many fits (axis `ITEMS`): an evaluation then runs when some item is
    due and only the due items take its results (see `evaluated`), and a loop with stop rules
    runs while some item goes on, each item stepping while its own rules let it (see
    `_shared_loop`). With `kernel`, on a CPU and where model, optimizer state and data are small,
    the loop is compiled into one kernel (compiler.kernel). Returns (steps run, free, opt_state,
    stop_state, logs).

    The one step loop every program runs: a phase's chunk (`compiled`) and a fused segment's
    branch (`segment.py`) both call it, and XLA compiles it alike in both (the barrier below),
    so their steps are the same computation.
    """
    import jax
    import jax.numpy as jnp
    import optax

    from schedc.compiler import evaluate as E
    from schedc.compiler import minibatch

    keywords = frozenset().union(*(O.loss_keywords(g.members, g.plateau) for g in signature.groups))
    stateful = "model_state" in stop_state  # an eqx.nn.State carried through the steps (BatchNorm)
    N = signature.over
    has_lc, has_loss = "loss_change" in signature.stop_kinds, "loss" in signature.stop_kinds
    with_key = minibatch.takes_key(loss_fn)
    # What the steps read from outside the loop reaches them through one barrier, so that a
    # phase's chunk and a fused segment's branch compile the loss alike: XLA rewrites some
    # operations by how many others read their operands (`x / w` becomes `x * (1 / w)` where
    # nothing else reads `w`), and outside this function the two programs read the model and
    # the data differently (a chunk's arguments, a segment's carried state).
    model_arrays, data_arrays, numbers, stop_numbers, evaluation = jax.lax.optimization_barrier((model_arrays, data_arrays, numbers, stop_numbers, evaluation))
    leaves, treedef = jax.tree_util.tree_flatten(model_layout.rebuild(model_arrays))
    data_key, loss_key = keys
    sampler = minibatch.Sampler(signature.batch, data_arrays[0].shape[0], signature.batch_sharding) if signature.batch else None

    def assemble(free_values):
        new = list(leaves)
        for path, indices in signature.leaves:
            for i in indices:
                new[i] = free_values[path]
        return jax.tree_util.tree_unflatten(treedef, new)

    def loss_and_aux(free_values, batch_arrays, i, model_state):
        """(loss, (aux metrics, the model state after the step)): the state is None unless stateful."""
        args, kwargs = data_layout.rebuild(batch_arrays)
        if with_key:
            kwargs = dict(kwargs, key=jax.random.fold_in(loss_key, i))
        if stateful:
            loss, aux, model_state = minibatch.split_stateful_output(loss_fn(assemble(free_values), model_state, *args, **kwargs))
        else:
            loss, aux = minibatch.split_output(loss_fn(assemble(free_values), *args, **kwargs))
        return loss, ({name: jnp.asarray(v, jnp.float32) for name, v in aux.items()}, model_state)

    def batch_of(perm, i):
        if signature.stream:
            return perm, minibatch.stream_row(data_arrays, i, signature.chunk, signature.batch_sharding)
        return sampler.draw(data_key, perm, i, data_arrays) if sampler else (perm, data_arrays)

    # (no permutation: None, not an empty array, which a loop compiled as one kernel could not take)
    perm0 = sampler.start(data_key, step0) if sampler else None
    model_state0 = stop_state.get("model_state")
    loss_shape, (aux_shape, _) = jax.eval_shape(loss_and_aux, free, batch_of(perm0, step0)[1], step0, model_state0)
    minibatch.check_aux(aux_shape)

    dtype = hyper_dtype(free)
    ev = signature.evaluation
    validation, limits = evaluation if ev is not None else ((), None)

    def step(k, free, opt_state, ctx):
        i = step0 + k
        perm, model_state = ctx
        perm, batch = batch_of(perm, i)
        (loss, (aux, new_state)), grads = jax.value_and_grad(loss_and_aux, has_aux=True)(free, batch, i, model_state)
        hps = hyper_values(signature, i, numbers, dtype)
        value_fn = lambda f: loss_and_aux(f, batch, i, model_state)[0]  # noqa: E731
        extras = {k: v for k, v in {"value": loss, "grad": grads, "value_fn": value_fn, "obj_fn": value_fn}.items() if k in keywords}
        updates, opt_state = make_transform(signature, hps).update(grads, opt_state, free, **extras)
        return (loss, aux), optax.apply_updates(free, updates), opt_state, (perm, new_state)

    def update_stop(stop, i, loss):
        # after step i: a non-finite loss ends the phase (and the run); so may a stop rule
        stop = dict(stop)
        # int32 throughout: under jax_enable_x64 a bare Python int would widen the carry to int64
        reason = jnp.where(jnp.isfinite(loss), jnp.int32(COMPLETED), jnp.int32(NONFINITE))
        if has_lc:
            ring = stop["ring"].at[i % N].set(loss)
            stop["ring"] = ring
            trend = ring[(i + 1) % N] - loss  # loss N-1 steps ago minus now (spectracles' loss[-N] - loss[-1])
            due = (i >= stop_numbers[1]) & (i % N == 0)
            reason = jnp.where((reason == COMPLETED) & due & (jnp.abs(trend) < stop_numbers[0]), jnp.int32(STOP_LOSS_CHANGE), reason)
        if has_loss:
            reason = jnp.where((reason == COMPLETED) & (loss < stop_numbers[2]), jnp.int32(STOP_LOSS), reason)
        stop["reason"] = reason
        return stop

    if logs is None:
        # the loss of each step, with plateaus the scales each applied (for the hyperparameter log)
        # and each aux metric (means are taken on the host: runtime.runner.AuxLog); the history
        # keeps the loss's own dtype (float64 under jax_enable_x64 with a float64 model)
        logs = {"loss": jnp.full((signature.chunk,), jnp.nan, loss_shape.dtype)}
        if signature.plateaus:
            logs["plateau_scale"] = stop_state["plateau_scale"]
        if aux_shape:
            logs["aux"] = {name: jnp.full((signature.chunk,), jnp.nan, jnp.float32) for name in aux_shape}
        if ev is not None:
            names = jax.eval_shape(lambda f, s: E.metric_values(ev, assemble(f), s, validation), free, model_state0)
            logs["evals"] = E.empty_log(names, signature.chunk)

    def log(logs, k, loss_aux, opt_state, going=None):
        """The step's row `at + k` of each per-step log written; where `going` (with items: this
        item had not stopped before the step) is false, the row keeps what it held."""
        loss, aux = loss_aux

        def put(buffer, value):
            if going is not None:
                value = jnp.where(going, value, buffer[at + k])
            # (an update in place at a row always inside the buffer: `.at[].set` would also check
            # its bounds, a read and a select more in every step)
            return jax.lax.dynamic_update_index_in_dim(buffer, jnp.asarray(value, buffer.dtype), at + k, 0)

        out = dict(logs, loss=put(logs["loss"], loss))  # (the evaluation log: written by `evaluated`)
        if signature.plateaus:
            out["plateau_scale"] = put(logs["plateau_scale"], O.plateau_scales(opt_state))
        if "aux" in logs:
            out["aux"] = {name: put(logs["aux"][name], aux[name]) for name in logs["aux"]}
        return out

    ctx = (perm0, model_state0)  # this epoch's permutation, the model state

    def evaluated(i, free, opt_state, stop, logs, model_state):
        """After step i: the evaluation when one is due and no rule ended the phase at this step."""
        due = (stop["reason"] == COMPLETED) & ((i + 1) % limits["every"] == 0)

        def now(operands):
            opt_state, carry, evals = operands
            values = E.metric_values(ev, assemble(free), model_state, validation)
            return E.evaluate(ev, signature.groups, limits, values, carry, evals, opt_state, free, model_state, i + 1)

        def skip(operands):
            return (*operands, jnp.bool_(False))

        operands = (opt_state, stop["eval"], logs["evals"])
        if items:
            # vmapped: `due` is per item, and a cond on it would become a select that computes the
            # metrics at every step; on "some item is due" (unbatched: a reduction over the items)
            # it stays a conditional, and the items not due keep what they had
            some = jax.lax.pmax(due.astype(jnp.int32), ITEMS).astype(bool)
            opt_state, carry, evals, fired = jax.lax.cond(some, lambda ops: select(due, now(ops), skip(ops)), skip, operands)
        else:
            opt_state, carry, evals, fired = jax.lax.cond(due, now, skip, operands)
        reason = jnp.where(fired, jnp.int32(STOP_EVAL), stop["reason"])
        return opt_state, dict(stop, eval=carry, reason=reason), dict(logs, evals=evals)

    def finish(stop_state, ctx):
        return dict(stop_state, model_state=ctx[1]) if stateful else stop_state

    # A while loop over a runtime step count, not a masked scan: the last chunk of a phase
    # and a chunk cut short by a stop rule run exactly the steps they need. Without stop
    # rules the loop body is the bare step, as in a hand-written loop, and the host finds
    # a non-finite loss in the returned losses (see `first_nonfinite`; steps after it are
    # wasted, never kept). Checking on the device after the loop cost a fifth more compile time.
    kernel = kernel and K.on_cpu() and K.small(free, opt_state, model_arrays, data_arrays, validation)
    if stops_early(signature) and items:
        ran, free, opt_state, stop_state, logs, ctx = _shared_loop(step, update_stop, log, evaluated if ev is not None else None, step0, n_active, (free, opt_state, stop_state, logs, ctx), kernel)
        return ran, free, opt_state, finish(stop_state, ctx), logs

    if stops_early(signature):  # (evaluated: a non-finite loss stops before its evaluation)

        def body(carry):
            k, free, opt_state, stop, logs, ctx = carry
            loss_aux, free, opt_state, ctx = step(k, free, opt_state, ctx)
            stop, logs = update_stop(stop, step0 + k, loss_aux[0]), log(logs, k, loss_aux, opt_state)
            if ev is not None:  # after the log: the plateau scale logged is the one this step applied
                opt_state, stop, logs = evaluated(step0 + k, free, opt_state, stop, logs, ctx[1])
            return k + 1, free, opt_state, stop, logs, ctx

        def more(carry):
            return (carry[0] < n_active) & (carry[3]["reason"] == COMPLETED)

        ran, free, opt_state, stop_state, logs, ctx = K.while_loop(more, body, (jnp.int32(0), free, opt_state, stop_state, logs, ctx), kernel)
        return ran, free, opt_state, finish(stop_state, ctx), logs

    def bare(carry):
        k, free, opt_state, logs, ctx = carry
        loss_aux, free, opt_state, ctx = step(k, free, opt_state, ctx)
        return k + 1, free, opt_state, log(logs, k, loss_aux, opt_state), ctx

    ran, free, opt_state, logs, ctx = K.while_loop(lambda c: c[0] < n_active, bare, (jnp.int32(0), free, opt_state, logs, ctx), kernel)
    return ran, free, opt_state, finish(stop_state, ctx), logs


def _shared_loop(step, update_stop, log, evaluated, step0, n_active, carry, kernel):
    """`run_steps`' loop with stop rules, vmapped over many fits (axis `ITEMS`): it runs while some
    item goes on, each item stepping while its reason is COMPLETED. Returns (each item's steps
    run, free, opt_state, stop_state, logs, ctx).

    Vmapped, the loop of a single fit would have a per-item condition, and JAX would then select
    every part of its carry between old and new for every item at every step: the call's whole
    loss buffer (`chunk` floats an item) with the rest. Here the condition is shared (a maximum
    over the items) and only what a step changes is selected: an item that stopped keeps its
    parameters, optimizer and stop state, model state, and its row of each per-step log (`log`'s
    `going`). The steps an item runs compute what its own loop computes, so results are the same
    bit for bit. (The data order, `ctx[0]`, is a function of the step and the data key alone, the
    same for every item: kept as the step computed it.)"""
    import jax
    import jax.numpy as jnp

    def body(carry):
        k, ran, free, opt_state, stop, logs, ctx = carry
        i = step0 + k
        going = stop["reason"] == COMPLETED
        loss_aux, new_free, new_opt, new_ctx = step(k, free, opt_state, ctx)
        new_stop, logs = update_stop(stop, i, loss_aux[0]), log(logs, k, loss_aux, new_opt, going)
        free, opt_state, stop, model_state = select(going, (new_free, new_opt, new_stop, new_ctx[1]), (free, opt_state, stop, ctx[1]))
        if evaluated is not None:  # (after the select: an item that had stopped is not due)
            opt_state, stop, logs = evaluated(i, free, opt_state, stop, logs, model_state)
        return k + 1, ran + going.astype(jnp.int32), free, opt_state, stop, logs, (new_ctx[0], model_state)

    def more(carry):
        k, stop = carry[0], carry[4]
        return (k < n_active) & (jax.lax.pmax((stop["reason"] == COMPLETED).astype(jnp.int32), ITEMS) > 0)

    free, opt_state, stop, logs, ctx = carry
    _, ran, free, opt_state, stop, logs, ctx = K.while_loop(more, body, (jnp.int32(0), jnp.int32(0), free, opt_state, stop, logs, ctx), kernel)
    return ran, free, opt_state, stop, logs, ctx


def _build(signature: PhaseSignature, loss_fn: Callable, model_layout: Layout, data_layout: Layout) -> Compiled:
    import jax

    def init(free, numbers):
        return init_state(signature, free, numbers)

    def chunk_of(items: bool, kernel: bool) -> Callable:
        def chunk(free, opt_state, stop_state, model_arrays, step0, n_active, numbers, stop_numbers, data_arrays, keys, evaluation):
            ran, free, opt_state, stop_state, logs = run_steps(
                signature, loss_fn, model_layout, data_layout, free, opt_state, stop_state, model_arrays, step0, n_active, numbers, stop_numbers, data_arrays, keys,
                evaluation=evaluation, items=items, kernel=kernel,
            )
            stop_state = dict(stop_state, done=stop_state["done"] + ran)
            if signature.plateaus:
                stop_state["plateau_scale"] = logs["plateau_scale"]
            return free, opt_state, stop_state, logs["loss"], logs.get("aux", {}), logs.get("evals", {})

        return chunk

    return Compiled(jax.jit(init), K.KernelsOrThunks(lambda kernel: chunk_of(False, kernel)), hyperparams_program(signature), lambda kernel: chunk_of(True, kernel), signature.evaluation is not None)


def item_of(tree, i: int):
    """Item `i` of a pytree batched over items (a batched fit's datasets, a sweep's settings): each
    array leaf's row `i`; a leaf that is not an array (an activation function) or a scalar stays."""
    import jax

    return jax.tree_util.tree_map(lambda x: x[i] if getattr(x, "ndim", 0) else x, tree)


def select(keep, new, old):
    """`new` where `keep` (one item's scalar, under vmap) is true, else `old` (the same pytree)."""
    import jax
    import jax.numpy as jnp

    return jax.tree_util.tree_map(lambda n, o: jnp.where(keep, n, o), new, old)


def hyperparams_program(signature: PhaseSignature) -> Callable:
    """`(step0, numbers) -> [chunk, hyperparameters]`: the values applied at a block of steps (see `_applied_values`)."""
    schedules_used = tuple((h.structure, h.offset, h.size) for g in signature.groups for h in g.hypers)
    return _applied_values(schedules_used, signature.chunk)


@lru_cache(maxsize=None)
def _applied_values(schedules_used: tuple, K: int) -> Callable:
    """`(step0, numbers) -> [K, hyperparameters]`: the values applied at steps step0 .. step0 + K - 1.

    The same schedule functions of the same step and numbers as in the loop,
    evaluated for a block of steps at once. Keyed by the schedules alone, so
    phases that differ in their free parameters but not in their schedules share it.
    """
    import jax
    import jax.numpy as jnp

    from schedc.compiler import schedules

    def at(step, numbers):
        return _flat([[schedules.build(structure)(step, numbers[offset : offset + size]) for structure, offset, size in schedules_used]])

    def applied(step0, numbers):
        return jax.vmap(lambda k: at(step0 + k, numbers))(jnp.arange(K, dtype=jnp.int32))

    return jax.jit(applied)


def _flat(values: list[list]):
    import jax.numpy as jnp

    dtype = jnp.result_type(float)  # the schedules' own precision; the log is cast to the loss's dtype
    flat = [jnp.asarray(v, dtype) for group in values for v in group]
    return jnp.stack(flat) if flat else jnp.zeros((0,), dtype)


def first_nonfinite(losses: np.ndarray) -> int | None:
    """Index of the first non-finite loss of a chunk, or None."""
    # the common case, checked first with one reduction: a finite sum means every loss is finite
    # (a NaN or an infinity makes it non-finite; a sum that overflows is searched below). The
    # ufunc's own reduce: `ndarray.sum` goes through numpy's Python-level wrapper, which costs
    # more than the sum right after a device call, when the host's code is cold again
    if math.isfinite(np.add.reduce(losses)):
        return None
    finite = np.isfinite(losses)
    return None if finite.all() else int(np.flatnonzero(~finite)[0])


def empty_ring(over: int) -> np.ndarray:
    """A `loss_change` window of `over` losses, none seen yet: in the widest float the process
    allows (float64 under jax_enable_x64), which holds any loss exactly."""
    import jax.numpy as jnp

    return np.full((over,), np.nan, jnp.result_type(float))


def initial_stop_state(signature: PhaseSignature) -> dict:
    """The loop state besides parameters and optimizer: stop-rule ring buffer, reason, steps done,
    and with plateaus the [chunk, plateaus] buffer of the scales applied in the last chunk."""
    state = {
        "ring": empty_ring(signature.over),
        "reason": np.int32(COMPLETED),
        "done": np.int32(0),
    }
    if signature.plateaus:
        state["plateau_scale"] = np.full((signature.chunk, signature.plateaus), np.nan, np.float32)
    return state


# ---------------------------------------------------------------- keys and state carrying


def path_key(path: str) -> np.uint32:
    """What a random init folds into its key besides the seed and the phase index: the parameter's path."""
    return np.uint32(zlib.crc32(path.encode()))


def init_value(kind: str, root, phase_index, path_number, args, shape: tuple, dtype):
    """The value an `init` of kind "value", "normal" or "uniform" gives a parameter (traceable).

    A random init draws from `fold_in(fold_in(root, phase index), crc32(path))`, so editing
    one init never moves another's draw. `args` are the init's numbers: (mean, std),
    (low, high), or the value (one number fills the parameter; a list has them all, row-major).
    """
    import jax
    import jax.numpy as jnp

    args = jnp.asarray(args).astype(dtype)
    if kind == "value":
        return jnp.full(shape, args[0], dtype) if args.shape[0] == 1 else args.reshape(shape)
    key = jax.random.fold_in(jax.random.fold_in(root, phase_index), path_number)
    if kind == "normal":
        return args[0] + args[1] * jax.random.normal(key, shape, dtype)
    return jax.random.uniform(key, shape, dtype, args[0], args[1])


@lru_cache(maxsize=None)
def init_program(kind: str, shape: tuple, dtype) -> Callable:
    """`init_value` for one kind, shape and dtype, jitted: (root, phase index, path number, args) -> value.

    Compiled, not run op by op, so a phase's inits are bit for bit the values a fused segment
    draws inside its program (op by op, `a + b * normal` rounds differently from its fused form).
    """
    import jax

    return jax.jit(lambda root, phase_index, path_number, args: init_value(kind, root, phase_index, path_number, args, shape, dtype))


def carried_labels(previous: PhaseSignature, signature: PhaseSignature) -> frozenset[str]:
    """Groups of `signature` whose optimizer state `carry state` takes from the phase of `previous`: same label, same optimizer."""
    before = {g.label: g.optimizer for g in previous.groups}
    return frozenset(g.label for g in signature.groups if before.get(g.label) == g.optimizer)


def carry_state(new_state, old_state, carried_labels: set[str], signature: PhaseSignature):
    """`new_state` with every entry of a parameter free before and now taken from `old_state`.

    Entries are matched by their key path in the state pytree (which names the
    group and the parameter), only within groups whose optimizer did not change.
    """
    import jax

    old = {jax.tree_util.keystr(p): v for p, v in jax.tree_util.tree_flatten_with_path(old_state)[0]}
    multi = len(signature.groups) > 1

    def pick(path, leaf):
        label = _label_of(path) if multi else ""
        old_leaf = old.get(jax.tree_util.keystr(path))
        if old_leaf is None or label not in carried_labels:
            return leaf
        if getattr(old_leaf, "shape", None) != getattr(leaf, "shape", None) or getattr(old_leaf, "dtype", None) != getattr(leaf, "dtype", None):
            return leaf
        return old_leaf

    return jax.tree_util.tree_map_with_path(pick, new_state)


def _label_of(path) -> str:
    from jax.tree_util import DictKey

    for entry in path:
        if isinstance(entry, DictKey):
            return str(entry.key)
    return ""
