"""`schedc.build_schedule`: spectracles' Python API on schedc's Plan and compiler.

`build_schedule(model, loss_fn, phases, params)` takes spectracles' arguments
(phases as `(n_steps, lr)` or `(n_steps, lr, optimizer)`, params as
`{pattern: free_in(0) | init_normal(1, 0, 0.1), ...}`), builds the syntax tree
of the equivalent `.sched` program, prints it (`str(schedule)`), and compiles
that text with `schedc.compile`'s own pipeline: the same checks, the same
`plan.resolve`, the same `runner.Runner`. Nothing here runs optimisation itself.
spectracles' low-level constructor, `OptimiserSchedule(model, loss_fn,
[PhaseConfig(...)])`, goes the same way: its fix and value updates become a
params block (`config_file`). Python objects the text cannot write (optax
objects and schedule functions, arrays) are bound to `$placeholders`.

Differences from spectracles (docs/python.md): two specs that disagree on one
parameter in one phase are an error, not a silent union; random inits draw
from (key, phase, path), not from one split chain; a managed schedule keeps its
stop rules.
"""

from __future__ import annotations

import dataclasses
import functools
import warnings
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, Callable

import numpy as np

from schedc.lang import nodes as n
from schedc.lang.program import number_node, with_span
from schedc.lang.diagnostics import Diagnostic, SchedError, Source


# ---------------------------------------------------------------- specs


@dataclass(frozen=True)
class ParamSpec:
    """What a params entry says about its parameters: `|`-combined parts.

    Each part is `(kind, phases, init)`: kind "free_in", "free_after",
    "free_until", "fixed_in" or "init_at"; `phases` the phase indices; `init`
    for "init_at" is `(distribution, args)` with distribution "normal",
    "uniform" or "value".
    """

    parts: tuple[tuple[str, tuple[int, ...], Any], ...]

    def __or__(self, other: "ParamSpec") -> "ParamSpec":
        if not isinstance(other, ParamSpec):
            return NotImplemented
        return ParamSpec(self.parts + other.parts)

    def __repr__(self) -> str:
        return " | ".join(_spec_text(p) for p in self.parts) or "ParamSpec()"


def _spec_text(part) -> str:
    kind, phases, init = part
    if kind == "init_at":
        dist, args = init
        return f"init_{dist}({phases[0]}, {', '.join(map(repr, args))})"
    return f"{kind}({', '.join(map(str, phases))})"


def _phase_index(p, helper: str) -> int:
    if isinstance(p, bool) or not isinstance(p, (int, np.integer)):
        raise TypeError(f"{helper}: a phase is an int index, got {p!r}")
    if p < 0:
        raise ValueError(f"{helper}({p}): phase indices start at 0 (spectracles read negative indices as sentinels; for every phase write free_after(0))")
    return int(p)


def free_in(*phases: int) -> ParamSpec:
    """Free in exactly these phases (fixed in the others, unless another spec frees it)."""
    if not phases:
        raise TypeError("free_in() needs at least one phase")
    return ParamSpec((("free_in", tuple(_phase_index(p, "free_in") for p in phases), None),))


def free_after(phase: int) -> ParamSpec:
    """Free from `phase` (inclusive) to the last phase."""
    return ParamSpec((("free_after", (_phase_index(phase, "free_after"),), None),))


def free_until(phase: int) -> ParamSpec:
    """Free from phase 0 up to and including `phase`."""
    return ParamSpec((("free_until", (_phase_index(phase, "free_until"),), None),))


def fixed_in(*phases: int) -> ParamSpec:
    """Fixed in these phases, free in every other one."""
    if not phases:
        raise TypeError("fixed_in() needs at least one phase")
    return ParamSpec((("fixed_in", tuple(_phase_index(p, "fixed_in") for p in phases), None),))


def init_value(phase: int, value) -> ParamSpec:
    """Set the parameter to `value` (a number, or an array of its shape) at the start of `phase`.

    `value=None` is no init, as in spectracles.
    """
    if value is None:
        return ParamSpec(())
    return ParamSpec((("init_at", (_phase_index(phase, "init_value"),), ("value", (value,))),))


def init_normal(phase: int, mean: float = 0.0, std: float = 1.0) -> ParamSpec:
    """Draw `mean + std * N(0, 1)` at the start of `phase` (needs `key` in build_schedule)."""
    return ParamSpec((("init_at", (_phase_index(phase, "init_normal"),), ("normal", (_real(mean, "mean"), _real(std, "std")))),))


def init_uniform(phase: int, low: float = 0.0, high: float = 1.0) -> ParamSpec:
    """Draw from `U[low, high)` at the start of `phase` (needs `key` in build_schedule)."""
    return ParamSpec((("init_at", (_phase_index(phase, "init_uniform"),), ("uniform", (_real(low, "low"), _real(high, "high")))),))


def _real(x, what: str) -> float:
    try:
        value = float(np.asarray(x).reshape(()))
    except (TypeError, ValueError):
        raise TypeError(f"{what} must be a number, got {x!r}") from None
    return value


# ---------------------------------------------------------------- values -> syntax


def _number(x) -> n.Expr:
    """A number node; numpy and JAX scalars print as the shortest text that reads back as their value
    (`np.float32(0.1)` is `0.1`, not `0.10000000149011612`)."""
    if isinstance(x, (bool, np.bool_)):
        raise TypeError(f"expected a number, got {x!r}")
    if hasattr(x, "shape") and not isinstance(x, np.generic):
        x = np.asarray(x)[()]
    if isinstance(x, np.floating):
        x = float(str(x))
    elif isinstance(x, np.integer):
        x = int(x)
    if isinstance(x, float) and not np.isfinite(x):
        raise ValueError(f"expected a finite number, got {x!r}")
    return number_node(x)


class _Objects:
    """Python objects the program text cannot write, bound to `$placeholders` instead: optax
    optimizer objects, optax schedule functions, arrays. One name per object (by identity)."""

    def __init__(self):
        self.values: dict[str, object] = {}
        self._names: dict[int, str] = {}

    def bind(self, stem: str, value) -> n.Placeholder:
        name = self._names.get(id(value))
        if name is None:
            name = stem if stem not in self.values else f"{stem}_{len(self.values)}"
            self.values[name], self._names[id(value)] = value, name
        return n.Placeholder(name)


def _value_node(value, objects: _Objects, stem: str) -> tuple[n.Expr, bool]:
    """(node, is_scalar) for an init value: a number (one element fills the parameter), or a placeholder
    bound to the array (never its numbers as text; its shape is checked against the parameter's, E0407)."""
    array = np.asarray(value)
    if not np.issubdtype(array.dtype, np.number) or np.iscomplexobj(array):
        raise TypeError(f"an init value is a real number or array, got {value!r}")
    if array.size == 1:
        return _number(array.flat[0]), True
    return objects.bind(stem, value), False


def _expression(value, what: str, objects: _Objects | None = None, stem: str = "lr") -> n.Expr:
    """A learning rate: a number, schedule text in the DSL (`"cosine(0.1 -> 0.001)"`) or an optax schedule function."""
    from schedc.pipeline import parse_expression

    if isinstance(value, str):
        return parse_expression(value)
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
        return _number(value)
    if hasattr(value, "shape") and np.asarray(value).size == 1 and np.issubdtype(np.asarray(value).dtype, np.floating):
        return _number(np.asarray(value).reshape(()))
    if callable(value) and objects is not None:  # an optax schedule: called on the phase's step in the compiled loop
        return objects.bind(stem, value)
    raise TypeError(f"{what}: expected a number, schedule text or an optax schedule function, got {value!r}")


def _optimizer(spec, what: str, objects: _Objects, stem: str = "opt") -> n.Expr:
    """An optimizer as the language writes it: a name or a call with keyword arguments, or a placeholder.

    Accepted: `"adam"` / `"sgd(momentum=0.9)"` (DSL text), `optax.adam` (an optax
    factory), `functools.partial(optax.sgd, momentum=0.9)`, `("sgd", {"momentum": 0.9})`,
    an optax GradientTransformation object (`optax.sgd(0.1)`), which runs as it is, or a
    list of these: their `chain(...)`, in order (`["clip_by_global_norm(1.0)", optax.adam(0.1)]`).
    """
    import optax

    name, kwargs = None, {}
    if isinstance(spec, str):
        return _parse_optimizer(spec, what)
    if isinstance(spec, list):
        if not spec:
            raise TypeError(f"{what}: a list of optimizers is their chain and needs at least one member, got []")
        members = tuple(_optimizer(m, f"{what}: chain member {i}", objects, f"{stem}_{i}") for i, m in enumerate(spec))
        return n.Call(n.Name("chain"), members)
    if isinstance(spec, tuple) and len(spec) == 2 and isinstance(spec[0], str) and isinstance(spec[1], dict):
        name, kwargs = spec
    elif isinstance(spec, functools.partial) and not spec.args:
        name, kwargs = _optax_name(spec.func), dict(spec.keywords)
    elif isinstance(spec, (optax.GradientTransformation, optax.GradientTransformationExtraArgs)):
        return objects.bind(stem, spec)
    elif callable(spec):
        name = _optax_name(spec)
    if name is None:
        raise TypeError(f"{what}: expected an optimizer name or text, an optax factory or object, (name, kwargs), or a list of these (a chain), got {spec!r}")
    if "learning_rate" in kwargs:
        raise TypeError(f"{what}: the learning rate is the phase's lr (the second item of the phase tuple), not an optimizer argument")
    func = n.Name(name)
    if not kwargs:
        return func
    keywords = []
    for key, value in kwargs.items():
        node = n.Bool(value) if isinstance(value, bool) else _expression(value, f"{what}: {key}", objects, f"{stem}_{key}")
        keywords.append(n.Keyword(n.Name(key), node))
    return n.Call(func, (), tuple(keywords))


def _optax_name(func) -> str | None:
    import optax

    name = getattr(func, "__name__", None)
    return name if name and getattr(optax, name, None) is func else None


def _parse_optimizer(text: str, what: str) -> n.Expr:
    from schedc.pipeline import parse_optimizer

    node = parse_optimizer(text)
    if node is None:
        raise TypeError(f"{what}: {text!r} is not an optimizer (`adam`, `sgd(momentum=0.9)`)")
    return with_span(node, n.NO_SPAN)  # positions in the scratch text mean nothing here


# ---------------------------------------------------------------- the program


def _phase_node(k: int, spec, default_optimizer: n.Expr, criterion, objects: _Objects) -> n.Phase:
    what = f"phase {k}"
    if not isinstance(spec, (tuple, list)) or len(spec) not in (2, 3):
        raise TypeError(f"{what}: expected (n_steps, lr) or (n_steps, lr, optimizer), got {spec!r}")
    steps, lr = spec[0], spec[1]
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)):
        raise TypeError(f"{what}: n_steps must be an int, got {steps!r}")
    if steps < 1:  # (a negative count cannot even be written as a phase's: said here, not as a syntax error in generated text)
        raise ValueError(f"{what}: n_steps must be >= 1, got {steps}")
    optimizer = _optimizer(spec[2], what, objects, f"opt{k}") if len(spec) == 3 and spec[2] is not None else None
    if optimizer == default_optimizer:
        optimizer = None
    body = ()
    if criterion is not None:
        body = (n.Stop(n.Name("loss_change"), _number(_real(criterion, "Δloss_criterion"))),)
    # lr None: the optimizer's own (spectracles' `(n, None, optax.lbfgs)`)
    lr_node = None if lr is None else _expression(lr, f"{what}: lr", objects, f"lr{k}")
    return n.Phase(None, _number(int(steps)), lr_node, optimizer, body)


def _entry(pattern: str, spec: ParamSpec, objects: _Objects) -> tuple[n.ParamEntry | None, list[n.Init]]:
    """The params entry of one pattern, and the array inits that only a phase body can write ((phase, Init))."""
    specs, body_inits = [], []
    for kind, phases, init in spec.parts:
        refs = tuple(n.PhaseRef(p) for p in phases)
        if kind != "init_at":
            specs.append(n.Spec(kind, refs))
            continue
        dist, args = init
        if dist == "value":
            node, scalar = _value_node(args[0], objects, f"init{phases[0]}")
            if not scalar:
                body_inits.append((phases[0], n.Init((n.Pattern(pattern),), "value", node)))
                continue
            call = n.Call(n.Name("value"), (node,))
        else:
            call = n.Call(n.Name(dist), tuple(_number(a) for a in args))
        specs.append(n.Spec("init_at", refs, call))
    entry = n.ParamEntry((n.Pattern(pattern),), tuple(specs)) if specs else None
    return entry, body_inits


def _past_the_end(pattern: str, spec: ParamSpec, n_phases: int) -> ParamSpec:
    """spectracles' `free_after(k)` with k past the last phase: never free (with a warning here;
    a `.sched` file's `free after` a phase that does not exist stays an error, E0109)."""
    parts = []
    for part in spec.parts:
        kind, phases, _ = part
        if kind == "free_after" and phases[0] >= n_phases:
            warnings.warn(f"params[{pattern!r}]: free_after({phases[0]}) is past the last phase ({n_phases - 1}): never free, as in spectracles", stacklevel=4)
            continue
        parts.append(part)
    if parts == list(spec.parts):
        return spec
    if not parts and n_phases:  # still named by its pattern: fixed everywhere
        parts.append(("fixed_in", tuple(range(n_phases)), None))
    return ParamSpec(tuple(parts))


def _fix_flags(model) -> dict[str, bool]:
    """Path -> `fix` of every spectracles-style parameter node (`val`/`fix` fields)."""
    from schedc.plan.params import parameter_nodes

    return {path: bool(x.fix) for path, x in parameter_nodes(model) if isinstance(getattr(x, "fix", None), (bool, np.bool_))}


def _unnamed_free(tree, patterns: list[str], flags: dict[str, bool]) -> list[str]:
    """Parameters no pattern names whose node says `fix=False`: spectracles leaves them free in every phase."""
    from schedc.lang.glob import PathSet, PatternError, compile_pattern

    pathset = PathSet(list(tree.paths))
    named: set[int] = set()
    for text in patterns:
        try:
            named.update(pathset.match(compile_pattern(text)))
        except PatternError:
            continue  # reported by the checker on the generated text
    return [p for i, p in enumerate(tree.paths) if i not in named and flags.get(p) is False]


def build_file(model, phases, params: dict, default_optimizer="adam", criterion=None, seed: int | None = None) -> tuple[n.File, dict]:
    """The syntax tree of the `.sched` program `build_schedule` runs (see there for the arguments),
    and the values of its `$placeholders` (the optax objects and arrays the text cannot write).
    `criterion` is one threshold for every phase, or a list with one per phase (PhaseConfigs)."""
    from schedc.plan.params import discover

    if not isinstance(params, dict):
        raise TypeError(f"params must be a dict of pattern -> spec, got {type(params).__name__}")
    objects = _Objects()
    default = _optimizer(default_optimizer, "default_optimizer", objects)
    items: list = [n.Directive("optimizer", default)]
    if seed is not None:
        items.insert(0, n.Directive("seed", _number(seed)))
    criteria = criterion if isinstance(criterion, list) else [criterion] * len(phases)
    phase_nodes = [_phase_node(k, spec, default, criteria[k], objects) for k, spec in enumerate(phases)]
    entries = []
    body_inits: dict[int, list[n.Init]] = {}
    for pattern, spec in params.items():
        if not isinstance(pattern, str):
            raise TypeError(f"a params key is a pattern string, got {pattern!r}")
        if not isinstance(spec, ParamSpec):
            hint = " (a spectracles spec: import the helpers from schedc instead)" if type(spec).__module__.startswith("spectracles") else ""
            raise TypeError(f"params[{pattern!r}]: expected a spec made with schedc's free_in/free_after/free_until/fixed_in/init_* helpers, got {spec!r}{hint}")
        entry, inits = _entry(pattern, _past_the_end(pattern, spec, len(phase_nodes)), objects)
        if entry is not None:
            entries.append(entry)
        for k, init in inits:
            body_inits.setdefault(k, []).append(init)
    if phase_nodes:
        tree = discover(model)
        for path in _unnamed_free(tree, list(params), _fix_flags(model)):
            entries.append(n.ParamEntry((n.Pattern(path),), (n.Spec("free_after", (n.PhaseRef(0),)),)))
    for k, inits in body_inits.items():
        if 0 <= k < len(phase_nodes):
            phase_nodes[k] = n.Phase(None, phase_nodes[k].steps, phase_nodes[k].lr, phase_nodes[k].optimizer, tuple(inits) + phase_nodes[k].body)
        else:  # let the checker report the reference out of range, at the params block
            entries.append(n.ParamEntry(inits[0].patterns, (n.Spec("init_at", (n.PhaseRef(k),), n.Call(n.Name("value"), (n.Number(0, "0"),))),)))
    items += phase_nodes
    if entries:
        items.append(n.Params(tuple(entries)))
    return n.File(tuple(items)), objects.values


# ---------------------------------------------------------------- PhaseConfigs -> the program


def _phase_configs(configs) -> list:
    """The constructor's `phase_configs`: schedc's or spectracles' PhaseConfigs (any object with their fields)."""
    fields = [f.name for f in dataclasses.fields(PhaseConfig)]
    if not isinstance(configs, (list, tuple)):
        raise TypeError(f"phase_configs must be a list of PhaseConfig, got {type(configs).__name__}")
    out = []
    for k, config in enumerate(configs):
        if not all(hasattr(config, f) for f in fields):
            raise TypeError(f"phase_configs[{k}]: expected a PhaseConfig ({', '.join(fields)}), got {config!r}")
        out.append(config if isinstance(config, PhaseConfig) else PhaseConfig(*(getattr(config, f) for f in fields)))
    return out


def config_file(model, configs: list[PhaseConfig], get_filter_spec_fn, seed: int | None) -> tuple[n.File, dict]:
    """The program of `OptimiserSchedule(model, loss_fn, configs)`: per parameter, the phases in
    which it is free (`free_in`, or `fixed_in` every phase) and the values set at phase starts
    (`init_value`), through `build_file` — so the same checks and the same printed program."""
    from schedc.plan.params import discover

    tree = discover(model)
    everywhere = tuple(range(len(configs)))
    free_sets = _masked_free_sets(model, tree, configs, get_filter_spec_fn) if get_filter_spec_fn is not None else _flag_free_sets(model, tree, configs)
    params = _freeing(tree.paths, free_sets) if configs else {}
    for k, config in enumerate(configs):
        for path, value in config.param_val_updates.items():
            params[path] = params.get(path, ParamSpec(())) | init_value(k, value)
        for path in config.fix_status_updates:  # not a parameter: the checker names it (E0401, E0402)
            params.setdefault(path, fixed_in(*everywhere))
    phases = [(c.n_steps, None, c.optimiser) for c in configs]
    return build_file(model, phases, params, criterion=[c.Δloss_criterion for c in configs], seed=seed)


def _freeing(paths, free_sets: list[set[str]]) -> dict[str, ParamSpec]:
    """Every parameter's spec from the free set of each phase: free in the phases whose set
    holds it, else fixed in every phase (so that no parameter is left to a default)."""
    everywhere = tuple(range(len(free_sets)))
    params = {}
    for path in paths:
        phases = [k for k, free in enumerate(free_sets) if path in free]
        params[path] = free_in(*phases) if phases else fixed_in(*everywhere)
    return params


def _flag_free_sets(model, tree, configs) -> list[set[str]]:
    """The free parameters of each phase: each node's own `fix` flag (no flag: fixed), then the
    `fix_status_updates` of this phase and the earlier ones, as spectracles applies them."""
    flags = _fix_flags(model)
    fixed = {path: flags.get(path, True) for path in tree.paths}
    sets = []
    for config in configs:
        fixed.update({path: bool(fix) for path, fix in config.fix_status_updates.items() if path in fixed})
        sets.append({path for path, f in fixed.items() if not f})
    return sets


def _masked_free_sets(model, tree, configs, get_filter_spec_fn) -> list[set[str]]:
    """The free parameters of each phase as spectracles finds them: `get_filter_spec_fn` of the
    model with the fix updates so far applied (`model.set_fixed_status`), True leaves trained."""
    import equinox as eqx
    import jax

    if not callable(get_filter_spec_fn):
        raise TypeError(f"get_filter_spec_fn must be a function model -> filter spec (a pytree of bools), or None, got {get_filter_spec_fn!r}")
    parameters = {p.leaf: p.path for p in tree.params}
    current, sets = model, []
    for k, config in enumerate(configs):
        if config.fix_status_updates:
            if not callable(getattr(current, "set_fixed_status", None)):
                raise TypeError(f"phase {k}: fix_status_updates with a get_filter_spec_fn need a model with spectracles' set_fixed_status (a ShareModule), got {type(model).__name__}")
            current = current.set_fixed_status(list(config.fix_status_updates), [bool(v) for v in config.fix_status_updates.values()])
        leaves, treedef = jax.tree_util.tree_flatten(current)
        selected = jax.tree_util.tree_leaves(eqx.filter(jax.tree_util.tree_unflatten(treedef, list(range(len(leaves)))), get_filter_spec_fn(current)))
        arrays = [i for i in selected if isinstance(leaves[i], (jax.Array, np.ndarray))]
        constants = [i for i in arrays if i not in parameters]
        if constants:
            names = [jax.tree_util.keystr(path) for path, _ in jax.tree_util.tree_flatten_with_path(current)[0]]
            raise TypeError(f"phase {k}: get_filter_spec_fn selects arrays that are not parameters: {', '.join(names[i] for i in constants)} (schedc trains Parameter leaves only; see docs/semantics.md)")
        sets.append({parameters[i] for i in arrays})
    return sets


# ---------------------------------------------------------------- the schedule object


class Schedule:
    """A built schedule: `run_all(*args, **kwargs)`, `model_history`, `loss_history`, `loss_histories`.

    `str(schedule)` is the equivalent `.sched` program; `program` the compiled
    `schedc.Program` (`program.plan`, `program.phases`); `result` the last
    `runner.Result`. `run_all` always runs every phase from the initial model and
    replaces the histories (spectracles continued from the last model).
    """

    spectracles_name = "OptimiserSchedule"  # what errors on a constructed schedule's program call it

    def __init__(self, model, loss_fn: Callable, phase_configs, get_filter_spec_fn: Callable | None = None, *, key=None, chunk: int | None = None, quiet: bool = True):
        """spectracles' constructor, `OptimiserSchedule(model, loss_fn, [PhaseConfig(...), ...])`.

        Each phase runs `n_steps` with its `optimiser`; `fix_status_updates` fix or free
        parameters from that phase on (a parameter no update names keeps its node's `fix`
        flag: a `Parameter` with `fix=False` is free, any other leaf fixed);
        `param_val_updates` set values at the phase start; `Δloss_criterion` stops it early.
        spectracles' own `PhaseConfig` objects are accepted as they are.

        Args:
            get_filter_spec_fn: spectracles' `model -> filter spec` (a pytree of bools, True
                for the leaves to train), evaluated as spectracles does on the model with the
                fix updates so far applied (`model.set_fixed_status`); None: the `fix` flags.
            key: a JAX key or int seed (for random inits; PhaseConfigs set values only).
            chunk, quiet: as `build_schedule`.

        Raises:
            SchedError: a path that names no parameter (or a shared copy), an optimizer
                problem, shown on the generated program.
            TypeError: arguments of the wrong kind, naming what was given.
        """
        configs = _phase_configs(phase_configs)
        seed = _seed(key)
        file, objects = config_file(model, configs, get_filter_spec_fn, seed)
        program, text = _compile_built(model, file, objects, key, seed, self.spectracles_name)
        self._setup(program, file, text, loss_fn, chunk, quiet, objects)
        self.given_configs = configs
        self.get_filter_spec_fn = get_filter_spec_fn

    @classmethod
    def built(cls, program, file: n.File, text: str, loss_fn: Callable, chunk: int | None, quiet: bool, placeholders: dict):
        """The schedule of a compiled program (what `build_schedule` returns)."""
        schedule = cls.__new__(cls)
        schedule._setup(program, file, text, loss_fn, chunk, quiet, placeholders)
        return schedule

    def _setup(self, program, file: n.File, text: str, loss_fn: Callable, chunk: int | None, quiet: bool, placeholders: dict) -> None:
        self.program = program
        self.file = file
        self.text = text
        self.loss_fn = loss_fn
        self.chunk = chunk
        self.quiet = quiet
        self.initial_model = program.model
        self.model_history: list = [program.model]
        self._losses: dict[int, np.ndarray] = {}
        self.result = None
        self._runner = None
        self.placeholders = placeholders  # `$name` -> the object bound to it in the printed program
        self.given_configs: list | None = None  # the PhaseConfigs given to the constructor
        self.get_filter_spec_fn: Callable | None = None

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return f"<schedc schedule: {len(self.plan.phases)} phases>\n{self.text}"

    @property
    def plan(self):
        return self.program.plan

    @property
    def phases(self) -> list["SchedulePhase"]:
        """One per phase: the planned phase (`.free`, `.steps`, `.lr`, ...) with spectracles' `.config`."""
        return [SchedulePhase(self, phase) for phase in self.plan.phases]

    def run_phase(self, phase, *args, **kwargs):
        """Run one phase (an index, or an item of `phases`) from the last model, as spectracles'
        `OptimiserSchedule.run_phase`: its model is appended to `model_history`, its losses
        replace that phase's history. Returns the phase's `runner.PhaseResult`."""
        from schedc.compiler import chunk as C
        from schedc.runtime.runner import Result

        k = self._phase_index(phase)
        runner = self.runner(*args, **kwargs)
        result = runner.run_phase(k, self.model_history[-1])
        if result.stop_reason == C.STOP_REASONS[C.NONFINITE]:
            raise runner.nonfinite_error(Result(self.model_history[-1], [result]), self.plan.phases[k], result)
        self.model_history.append(result.model)
        self._losses[k] = result.losses
        return result

    def _phase_index(self, phase) -> int:
        k = phase.index if isinstance(phase, SchedulePhase) else phase
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 0 <= k < len(self.plan.phases):
            raise ValueError(f"Phase index {phase!r} out of range [0, {len(self.plan.phases) - 1}] (an int, or an item of schedule.phases)")
        return int(k)

    @property
    def phase_configs(self) -> list["PhaseConfig"]:
        """spectracles' view of each phase (`n_steps`, `optimiser`, `fix_status_updates`, ...)."""
        return [p.config for p in self.phases]

    def runner(self, *args, **kwargs):
        """A `runner.Runner` over this schedule's plan for these loss arguments."""
        runner = self.program.runner(self.loss_fn, *args, chunk=self.chunk, quiet=self.quiet, **kwargs)
        runner.begin(self.initial_model)  # whichever phase runs first, `init = reset` means the initial model
        if self._runner is not None:  # carried optimizer state survives a change of arguments
            runner.state = self._runner.state
        self._runner = runner
        return runner

    def run_all(self, *args, **kwargs):
        """Run every phase from the initial model; `loss_fn(model, *args, **kwargs)`. Returns the `runner.Result`.

        A non-finite loss raises `runner.RunError`; the completed phases stay in the histories.
        """
        from schedc.runtime.runner import RunError

        self._runner = None
        self.model_history = [self.initial_model]
        self._losses = {}
        try:
            self.result = self.runner(*args, **kwargs).run(self.initial_model)
        except RunError as err:
            self._record(err.result.phases[:-1])
            raise
        self._record(self.result.phases)
        return self.result

    def _record(self, phase_results) -> None:
        for p in phase_results:
            self.model_history.append(p.model)
            self._losses[p.index] = p.losses

    @property
    def loss_histories(self) -> list[np.ndarray]:
        """One array per phase (a phase not run: empty): the loss before each step's update."""
        return [self._losses.get(k, np.zeros(0, np.float32)) for k in range(len(self.plan.phases))]

    @property
    def loss_history(self) -> np.ndarray:
        histories = self.loss_histories
        return np.concatenate(histories) if histories else np.zeros(0, np.float32)


@dataclass(frozen=True)
class PhaseConfig:
    """spectracles' `PhaseConfig`: one phase for `OptimiserSchedule(model, loss_fn, phase_configs)`,
    and the view of a built phase (`schedule.phases[i].config`).

    `n_steps`; `optimiser`: an optax GradientTransformation object (run as-is), or any optimizer
    form `build_schedule` takes (a view holds the object given, else the planned `OptimizerSpec`);
    `Δloss_criterion`: stop when the loss moved less than this over 50 steps, checked every 50
    steps from step 100 (spectracles' default 1e2; None: never); `fix_status_updates`: parameter
    path -> True to fix it, False to free it, from this phase on (a view lists every parameter);
    `param_val_updates`: path -> the value (a number or an array of its shape) it takes at the
    start of this phase (a view: the values the phase's inits set, random draws included).

    Raises:
        TypeError: spectracles' checks, naming the value given and what is accepted.
    """

    n_steps: int
    optimiser: Any
    Δloss_criterion: float | None = 1e2
    fix_status_updates: dict = dataclasses.field(default_factory=dict)
    param_val_updates: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.n_steps, bool) or not isinstance(self.n_steps, (int, np.integer)):
            raise TypeError(f"n_steps must be int. Got {self.n_steps!r}")
        criterion = self.Δloss_criterion
        if criterion is not None and (isinstance(criterion, bool) or not isinstance(criterion, (int, float, np.integer, np.floating))):
            raise TypeError(f"Δloss_criterion must be a number or None. Got {criterion!r}")
        for what, updates in (("fix_status_updates", self.fix_status_updates), ("param_val_updates", self.param_val_updates)):
            if not isinstance(updates, dict) or not all(isinstance(k, str) for k in updates):
                raise TypeError(f"{what} must be a dict of parameter path (str) -> value. Got {updates!r}")
        for path, fix in self.fix_status_updates.items():
            if not isinstance(fix, (bool, np.bool_)):
                raise TypeError(f"All values in fix_status_updates must be bool. Got {fix!r} for {path!r}")
        for path, value in self.param_val_updates.items():
            if not _is_real(value):
                raise TypeError(f"All values in param_val_updates must be jax Arrays (or numbers, numpy arrays). Got {value!r} for {path!r}")


def _is_real(value) -> bool:
    """A real number or array (jax, numpy), as an init value."""
    array = np.asarray(value) if isinstance(value, (int, float, np.generic, np.ndarray)) or hasattr(value, "shape") else None
    return array is not None and array.dtype != bool and np.issubdtype(array.dtype, np.number) and not np.iscomplexobj(array)


class SchedulePhase:
    """A phase of a built schedule: the planned phase's attributes, its `index`, and `.config`."""

    def __init__(self, schedule: Schedule, plan):
        self._schedule = schedule
        self.plan = plan

    def __getattr__(self, name):
        return getattr(self.plan, name)

    def __repr__(self) -> str:
        return f"<schedule phase {self.plan.index}: {self.plan.steps} steps, free {', '.join(self.plan.free) or 'nothing'}>"

    @property
    def config(self) -> PhaseConfig:
        """The PhaseConfig given to `OptimiserSchedule(...)`, or a view of the built phase."""
        import jax

        phase, schedule = self.plan, self._schedule
        if schedule.given_configs is not None:
            return schedule.given_configs[phase.index]
        objects = [m.transform.value for m in phase.optimizer.transforms if m.transform is not None]
        criterion = next((rule.threshold for rule in phase.stop if rule.kind == "loss_change"), None)
        values = {}
        if phase.inits:
            runner = schedule.program.runner(schedule.loss_fn, quiet=True)
            runner.begin(schedule.initial_model)
            leaves = jax.tree_util.tree_leaves(runner.apply_inits(schedule.initial_model, phase))
            values = {init.path: leaves[runner.leaves[init.path][0]] for init in phase.inits}
        fixed = {path: path not in phase.free for path in schedule.program.tree.paths}
        return PhaseConfig(phase.steps, objects[0] if objects else phase.optimizer, criterion, fixed, values)


class PhaseState(str, Enum):
    """A managed phase's state (spectracles' names and values; equal to the plain strings)."""

    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    SKIPPED = "skipped"

    def __str__(self) -> str:
        return self.value


PENDING, RUNNING, COMPLETED, SKIPPED = PhaseState.PENDING, PhaseState.RUNNING, PhaseState.COMPLETED, PhaseState.SKIPPED


class ManagedSchedule(Schedule):
    """A schedule run one phase at a time, in order: run, skip, reset, status.

    Unlike spectracles' ManagedOptimiserSchedule: stop rules (`Δloss_criterion`)
    apply; a skipped phase appends the unchanged model to `model_history`, so
    `model_history[i]` is always the model before phase i and
    `reset_from_phase(i)` works after skips; a skipped phase cannot be run
    later without `reset_from_phase`.
    """

    spectracles_name = "ManagedOptimiserSchedule"

    def _setup(self, *args) -> None:
        super()._setup(*args)
        self.phase_states = [PENDING] * len(self.plan.phases)

    @property
    def current_phase_index(self) -> int:
        return len(self.model_history) - 1

    def run_all(self, *args, **kwargs):
        """Run every remaining phase."""
        while self.run_next_phase(*args, **kwargs):
            pass

    def run_next_phase(self, *args, **kwargs) -> bool:
        """Run the next pending phase; False when every phase is done."""
        if self.is_complete():
            return False
        self.run_phase_by_index(self.current_phase_index, *args, **kwargs)
        return True

    def run_phases(self, indices, *args, **kwargs) -> None:
        for k in [indices] if isinstance(indices, int) else indices:
            self.run_phase_by_index(k, *args, **kwargs)

    def _check_next(self, k: int, verb: str) -> None:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 0 <= k < len(self.phase_states):
            raise ValueError(f"phase index {k!r} out of range [0, {len(self.phase_states) - 1}]")
        # spectracles' wordings ("has already been completed", "must complete/process phases in order")
        if self.phase_states[k] == COMPLETED:
            raise RuntimeError(f"phase {k} has already been completed: reset_from_phase({k}) to {verb} it again")
        if self.phase_states[k] != PENDING:
            raise RuntimeError(f"phase {k} was already {self.phase_states[k]}: reset_from_phase({k}) to {verb} it again")
        if k != self.current_phase_index:
            order = "must complete phases in order" if verb == "run" else "must process phases in order"
            raise RuntimeError(f"cannot {verb} phase {k} - {order}; the next phase is {self.current_phase_index}")

    def run_phase_by_index(self, k: int, *args, **kwargs) -> None:
        """Run phase k, which must be the next one. A non-finite loss raises `runner.RunError`; the phase stays pending."""
        self._check_next(k, "run")
        self.phase_states[k] = RUNNING
        try:
            Schedule.run_phase(self, k, *args, **kwargs)
        finally:  # a failed run leaves the phase pending, as in spectracles
            self.phase_states[k] = COMPLETED if len(self.model_history) > k + 1 else PENDING

    def run_phase(self, phase, *args, **kwargs) -> None:
        """spectracles' name: run `phase` (an index or an item of `phases`), which must be the next one."""
        self.run_phase_by_index(self._phase_index(phase), *args, **kwargs)

    def skip_phase(self, k: int) -> None:
        """Skip phase k (the next one): the model passes through unchanged."""
        self._check_next(k, "skip")
        self.model_history.append(self.model_history[-1])
        self.phase_states[k] = SKIPPED

    def reset(self) -> None:
        """Back to the initial model, every phase pending."""
        self.reset_from_phase(0)

    def reset_from_phase(self, k: int) -> None:
        """Forget phase k and every later one: the next phase to run is k, from the model before it."""
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 0 <= k < max(1, len(self.phase_states)):
            raise ValueError(f"phase index {k!r} out of range [0, {len(self.phase_states) - 1}]")
        k = min(k, self.current_phase_index)
        self.model_history = self.model_history[: k + 1]
        for i in range(k, len(self.phase_states)):
            self.phase_states[i] = PENDING
            self._losses.pop(i, None)
        self._runner = None

    # ---- status (spectracles' names)

    def is_complete(self) -> bool:
        return self.current_phase_index >= len(self.phase_states)

    def get_next_phase_index(self) -> int | None:
        return None if self.is_complete() else self.current_phase_index

    def get_completed_phases(self) -> list[int]:
        return [i for i, s in enumerate(self.phase_states) if s == COMPLETED]

    def get_pending_phases(self) -> list[int]:
        return [i for i, s in enumerate(self.phase_states) if s == PENDING]

    def get_skipped_phases(self) -> list[int]:
        return [i for i, s in enumerate(self.phase_states) if s == SKIPPED]

    def get_phase_status(self) -> dict:
        return {
            "current_phase": self.current_phase_index,
            "total_phases": len(self.phase_states),
            "completed_phases": len(self.get_completed_phases()),
            "phase_states": [state.value for state in self.phase_states],
            "is_complete": self.is_complete(),
        }

    status = get_phase_status

    @property
    def loss_histories(self) -> list[np.ndarray]:
        """The loss histories of the completed phases, in order (as spectracles)."""
        return [self._losses[k] for k in self.get_completed_phases()]


# spectracles' names, so `isinstance(schedule, OptimiserSchedule)` keeps working after the import switch
OptimiserSchedule, ManagedOptimiserSchedule = Schedule, ManagedSchedule


# ---------------------------------------------------------------- entry point


def build_schedule(
    model,
    loss_fn: Callable,
    phases,
    params: dict,
    default_optimizer="adam",
    managed: bool = False,
    get_filter_spec_fn: Callable | None = None,
    Δloss_criterion: float | None = None,
    key=None,
    *,
    chunk: int | None = None,
    quiet: bool = True,
) -> Schedule:
    """Build a phased fit from spectracles-style arguments, on schedc's compiler.

    Args:
        model: an equinox Module or pytree (a spectracles ShareModule: patterns are
            relative to its inner model, as in spectracles).
        loss_fn: `loss_fn(model, *args, **kwargs) -> scalar`.
        phases: `(n_steps, lr)` or `(n_steps, lr, optimizer)` per phase. `lr` is a
            number, schedule text (`"cosine(0.1 -> 0.001)"`), an optax schedule function
            (called on the phase's step inside the compiled loop) or None (the optimizer's
            own, e.g. `(50, None, optax.lbfgs)`); `optimizer` is None (the default), a name
            or DSL text (`"sgd(momentum=0.9)"`), an optax factory (`optax.adam`),
            `functools.partial(optax.sgd, momentum=0.9)`, `("sgd", {"momentum": 0.9})`,
            or an optax GradientTransformation object (`optax.sgd(0.1)`): it runs as it
            is, and the phase lr only documents (a warning when the object, built with
            `optax.inject_hyperparams`, reveals a different learning rate).
            Objects and arrays the text cannot write are bound to `$placeholders`
            (`schedule.placeholders`).
        params: `{pattern: spec}` with specs from `free_in`, `free_after`, `free_until`,
            `fixed_in`, `init_value`, `init_normal`, `init_uniform`, combined with `|`.
            A spectracles Parameter no pattern names keeps its own `fix` flag: with
            `fix=False` it is free in every phase; any other unnamed leaf is fixed.
        default_optimizer: the optimizer of phases that name none (same forms).
        managed: return a `ManagedSchedule` (run/skip/reset phase by phase).
        get_filter_spec_fn: spectracles' `model -> filter spec` (True for the leaves to
            train), evaluated as spectracles does on the model with each phase's fix
            statuses set (`model.set_fixed_status`); the phases then free what it selects.
            None (the default): the specs decide, as with spectracles' default.
        Δloss_criterion: if given, every phase stops when the loss moved less than
            this over 50 steps, checked every 50 steps from step 100 (spectracles' rule).
        key: a JAX key or an int seed for random inits (required when there are any).
        chunk, quiet: steps per compiled call; no progress bar.

    Raises:
        SchedError: naming the parameter or pattern at fault, shown on the generated program.
        TypeError: for arguments of the wrong kind.
    """
    seed = _seed(key)
    file, objects = build_file(model, phases, params, default_optimizer, Δloss_criterion, seed)
    program, text = _compile_built(model, file, objects, key, seed)
    if get_filter_spec_fn is not None:
        params = _filtered_params(model, program, get_filter_spec_fn)
        if params is not None:  # the filter frees other parameters than the specs: the program says so
            file, objects = build_file(model, phases, params, default_optimizer, Δloss_criterion, seed)
            program, text = _compile_built(model, file, objects, key, seed)
    cls = ManagedSchedule if managed else Schedule
    schedule = cls.built(program, file, text, loss_fn, chunk, quiet, objects)
    schedule.get_filter_spec_fn = get_filter_spec_fn
    return schedule


def _filtered_params(model, program, get_filter_spec_fn) -> dict | None:
    """The params of a build_schedule whose phases free what `get_filter_spec_fn` selects on the
    model with the specs' fix statuses set, as spectracles runs it (every parameter explicit, the
    planned inits kept); None when that is what the specs already free."""
    plan, tree = program.plan, program.tree
    statuses = [PhaseConfig(p.steps, None, None, {path: path not in p.free for path in tree.paths}) for p in plan.phases]
    free_sets = _masked_free_sets(model, tree, statuses, get_filter_spec_fn)
    if all(set(p.free) == free for p, free in zip(plan.phases, free_sets)):
        return None
    params = _freeing(tree.paths, free_sets)
    shapes = {p.path: p.shape for p in tree.params}
    for phase in plan.phases:
        for init in phase.inits:
            params[init.path] = params[init.path] | _init_spec(phase.index, init, shapes[init.path])
    return params


def _init_spec(k: int, init, shape: tuple) -> ParamSpec:
    """A planned init (`plan.resolve.InitSpec`) as the spec that makes it again."""
    if init.kind == "normal":
        return init_normal(k, *init.args)
    if init.kind == "uniform":
        return init_uniform(k, *init.args)
    if isinstance(init.args[0], n.Bound):  # an array bound to a placeholder
        return init_value(k, init.args[0].value)
    if len(init.args) > 1:  # an array's elements, written out
        return init_value(k, np.reshape(np.asarray(init.args, np.float64), shape))
    return init_value(k, init.args[0])


def _seed(key) -> int | None:
    """An int `key` is a seed the printed program states; a JAX key is passed to the compiler."""
    return int(key) if isinstance(key, (int, np.integer)) and not isinstance(key, bool) else None


def _compile_built(model, file: n.File, objects: dict, key, seed: int | None, origin: str = "build_schedule"):
    """(Program, its text): a built syntax tree printed and compiled by `schedc.compile`'s pipeline;
    problems are shown on the printed program, named `<origin>`."""
    from schedc.pipeline import analyse
    from schedc.surface.api import Program, program_of
    from schedc.tooling.fmt import unparse

    name = f"<{origin}>"
    text = unparse(file)
    if key is not None and seed is None:
        text = f"# random inits draw from the JAX key given to {origin} (schedc.compile(..., key=key))\n" + text
    if objects:
        names = ", ".join("$" + name for name in objects)
        text = f"# {names}: Python objects bound by {origin} (schedule.placeholders; schedc.compile(text, model, **schedule.placeholders))\n" + text
    source = Source(name, text)
    analysis = analyse(text, name, source=source, placeholders=objects, model=model, base_dir=Path.cwd())
    parsed = analysis.parsed
    if parsed.diagnostics or parsed.file != file:  # a pattern or name the language cannot write
        raise SchedError([d.in_file(name) for d in parsed.diagnostics] or [_unwritable(file, parsed.file)], {name: source})
    if key is None:
        _require_key(parsed.file, source, name)
    try:
        program: Program = program_of(analysis, key)
    except SchedError as err:
        raise SchedError([_in_spectracles_words(d) for d in err.diagnostics], err.sources) from None
    return program, text


# what spectracles' build_schedule says for the same mistakes, so code matching its messages keeps working
_SPECTRACLES_WORDS = {"E0401": "pattern '{}' did not match any parameters", "E0402": "pattern '{}' only matches shared parameters"}


def _in_spectracles_words(d: Diagnostic) -> Diagnostic:
    words = _SPECTRACLES_WORDS.get(d.code)
    if words is None or "`" not in d.message:
        return d
    pattern = d.message.split("`")[1]
    return dataclasses.replace(d, notes=d.notes + (f"spectracles: {words.format(pattern)}",))


def _unwritable(built: n.File, parsed: n.File) -> Diagnostic:
    from schedc.check.patterns import unwritable_pattern

    patterns = [p for p in n.walk(built) if isinstance(p, n.Pattern)]
    again = {p.text for p in n.walk(parsed) if isinstance(p, n.Pattern)}
    return unwritable_pattern(next((p.text for p in patterns if p.text not in again), None))


def _require_key(file: n.File, source: Source, name: str) -> None:
    """A random init needs a key: spectracles' rule, as a diagnostic naming the parameter."""
    found = []
    for node in n.walk(file):
        if isinstance(node, n.ParamEntry):
            for spec in node.specs:
                if spec.kind == "init_at" and spec.dist is not None and spec.dist.func.id in ("normal", "uniform"):
                    path = ", ".join(p.text for p in node.patterns)
                    found.append(
                        Diagnostic(
                            "E0501",
                            f"PRNG key required for init_{spec.dist.func.id} on `{path}`",
                            spec.span,
                            help="pass key=jax.random.key(SEED) (or an int seed) to build_schedule",
                        ).in_file(name)
                    )
    if found:
        raise SchedError(found, {name: source})
