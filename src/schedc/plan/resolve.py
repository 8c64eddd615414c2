"""The Plan: a schedule resolved against a parameter tree, as plain data.

`resolve(parsed_file, param_tree)` turns the syntax tree into one `PhasePlan`
per phase (after `repeat` expansion, with `params` blocks merged in): which
parameters are free, in which optimizer groups, which are re-initialised, the
learning-rate and hyperparameter schedules (closed expressions, not yet
compiled), the optimizer, the carry flag and the stop rules. No JAX objects:
the compiler, the Python builder and the language server all consume this.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import cached_property

from schedc.check import catalog, conflicts
from schedc.check.arguments import bind
from schedc.check.patterns import malformed_pattern
from schedc.lang.swept import tracked_float
from schedc.lang import nodes as n
from schedc.lang.diagnostics import Diagnostic, Label, proposing
from schedc.lang.program import (
    ExpandedPhase,
    closed_count,
    default_free,
    env_of,
    expand,
    spec_phases,
)


@dataclass(frozen=True)
class OptimizerSpec:
    """An optax transformation by name (`adam`, `clip_by_global_norm`, `contrib.muon`), or `chain`.

    `kwargs` are closed expressions (numbers, schedules, names), positional
    arguments already named by optax's signature; a `chain` has its `members`.
    """

    name: str
    kwargs: tuple[tuple[str, object], ...] = ()
    span: n.Span = field(default=n.NO_SPAN, compare=False)
    members: tuple["OptimizerSpec", ...] = ()
    transform: n.Bound | None = None  # `optimizer $name` bound to an optax object (name `$name`): it runs as-is

    @property
    def transforms(self) -> tuple["OptimizerSpec", ...]:
        """What optax chains, in order: the members of a `chain`, else the spec itself."""
        return self.members if self.name == catalog.CHAIN else (self,)


@dataclass(frozen=True)
class Group:
    """Free parameters sharing one optimizer and learning rate within a phase.

    `lr` None means the phase's lr; `optimizer` None means the phase's optimizer.
    """

    paths: tuple[str, ...]
    lr: object | None = None
    optimizer: OptimizerSpec | None = None
    span: n.Span = field(default=n.NO_SPAN, compare=False)
    label: str = ""  # the patterns of the `free` statement that made the group, as written ("" for the phase's own)
    plateau: tuple[tuple[str, float], ...] | None = None  # the group lr's `plateau(...)` keywords (see PhasePlan.plateau)
    plateau_on: str | None = None  # its `on=val.M` (see PhasePlan.plateau_on)


@dataclass(frozen=True)
class InitSpec:
    """Set `path` at the start of a phase.

    kind "normal" (args: mean, std), "uniform" (low, high), "value" (value,) or "reset" ().
    A "value" bound to an array (`init w = $w`) has its `Bound` node as the one arg.
    A "value" from a list (`init w = [[1, 2], [3, 4]]`) has every number, row-major, in
    `args`: as many as the parameter has elements (the resolver checked its shape, E0407).
    """

    path: str
    kind: str
    args: tuple[float, ...] = ()
    span: n.Span = field(default=n.NO_SPAN, compare=False)


@dataclass(frozen=True)
class StopRule:
    """`loss < threshold`, `loss_change < threshold over N after M` (spectracles' Δloss rule),
    and on an evaluation metric: `val.M < threshold` (kind "metric") or `val.M stops improving
    for N evals` (kind "plateau": `patience` evaluations without a new best; `maximise` says
    which way is better)."""

    kind: str
    threshold: float
    over: int = 50
    after: int = 100
    span: n.Span = field(default=n.NO_SPAN, compare=False)
    metric: str = ""  # `val.accuracy` for the rules on evaluation metrics
    maximise: bool = False
    patience: int = 0

    @property
    def on_loss(self) -> bool:
        """Whether the rule watches the training loss (checked after every step); the others watch
        evaluation metrics (checked at each evaluation: compiler.evaluate)."""
        return self.kind in ("loss", "loss_change")


@dataclass(frozen=True)
class KeepRule:
    """`keep best val.M`: at the phase end, restore the free values of the best evaluation."""

    metric: str
    maximise: bool
    span: n.Span = field(default=n.NO_SPAN, compare=False)


@dataclass(frozen=True)
class DataSize:
    """What the training data says about epochs: its number of examples (arrays with a leading
    example axis) and/or its number of batches per pass (an iterable with a length)."""

    examples: int | None = None
    batches: int | None = None

    def steps_per_epoch(self, batch: int | None) -> int | None:
        """Minibatches drop the last partial batch (examples // batch); without a batch size an
        epoch of arrays is one full-batch step, and of an iterable one pass over it."""
        if batch is not None and self.examples is not None:
            return self.examples // batch
        if self.batches is not None:
            return self.batches
        return 1 if self.examples is not None else None


@dataclass(frozen=True)
class PhasePlan:
    index: int
    name: str | None
    steps: int
    free: tuple[str, ...]  # canonical parent paths, in tree order
    groups: tuple[Group, ...]  # a partition of `free`
    lr: object | None  # the phase learning rate: a closed expression
    optimizer: OptimizerSpec
    inits: tuple[InitSpec, ...] = ()
    carry: bool = False
    stop: tuple[StopRule, ...] = ()
    span: n.Span = field(default=n.NO_SPAN, compare=False)
    display: str = ""  # how tables name it: its name, `NAME#2` for the second repeat instance, or `phase 3`
    # `lr E * plateau(k=v, ...)`: `lr` is E and this holds the keywords of optax.contrib.reduce_on_plateau
    plateau: tuple[tuple[str, float], ...] | None = None
    # `plateau(on=val.M)`: the metric whose value at each evaluation steps the plateau (optax's update
    # fed M as it is: it lowers the scale when M stops decreasing); None: the loss at every step
    plateau_on: str | None = None
    accumulate: int = 1  # `accumulate N`: optax.MultiSteps over N steps
    ema: float | None = None  # `ema D`: decay of the moving average of the free parameters
    batch: int | None = None  # minibatch size (`batch N`); None: every step sees all the data
    epochs: float | None = None  # the length as written in epochs (`phase 3 epochs`), else None
    steps_per_epoch: int | None = None  # known once the data is (None: epochs were counted as one step each)
    eval_every: int | None = None  # steps between evaluations (phase-local), None without `eval`
    keep: KeepRule | None = None

    @property
    def plateau_metrics(self) -> list[str]:
        """The metrics its `plateau(on=val.M)` factors follow (the phase lr's and its groups')."""
        ons = [self.plateau_on] + [g.plateau_on for g in self.groups]
        return list(dict.fromkeys(on for on in ons if on is not None))

    @property
    def label(self) -> str:
        """`phase 3 (refine)`: how messages name this phase."""
        return f"phase {self.index}" + (f" ({self.name})" if self.name else "")


@dataclass(frozen=True)
class Plan:
    phases: tuple[PhasePlan, ...]
    parameters: tuple[str, ...]  # every parent path, tree order
    shared: dict[str, str] = field(default_factory=dict)  # shared copy path -> parent path
    seed: int | None = None
    default: str = "fixed"
    model: str | None = None  # the `model`, `loss` and `data` directives, as written
    loss: str | None = None
    data: str | None = None
    validation: str | None = None  # the `validation` and `eval` directives, as written
    metrics: str | None = None
    source: str | None = None  # the file it came from
    # the params.ParamTree it was resolved against (leaf indices, shapes, dtypes; plain data)
    tree: object | None = field(default=None, compare=False, repr=False)


def counts_epochs(file: n.File) -> bool:
    """Whether anything in `file` is counted in epochs (then its steps depend on the data)."""
    for node in n.walk(file):
        if isinstance(node, n.Epochs) or (isinstance(node, n.Phase) and node.unit == "epochs"):
            return True
        if isinstance(node, n.Every) and node.unit == "epochs":
            return True
    return False


# E0404/E0405 (`_Resolver._disagreement`): message, label here, label there, help
_DISAGREEMENTS = {
    "E0404": (
        "params specs disagree on `{path}` in {phase}: one frees it, the other fixes it",
        "{here} `{path}` here",
        "{there} it here",
        "a parameter has one status per phase: narrow one of the patterns or drop a spec",
    ),
    "E0405": (
        "the body of {phase} {here} `{path}` but a params spec {there} it",
        "{here} `{path}`",
        "{there} it in {phase}",
        "say it once: in the phase body or in the params block",
    ),
}


def _verb(status_or_kind: str) -> str:
    """What a statement (status "free"/"fixed") or a params spec (its kind) does to a parameter."""
    return "fixes" if status_or_kind in ("fixed", "fixed_in") else "frees"


# ---------------------------------------------------------------- resolution
#
# How a parameter's status in phase k is decided (docs/semantics.md):
#   1. the phase body: the last `free`/`fix` statement of phase k matching it;
#   2. else the params entries matching it: a spec that names phase k decides
#      explicitly (`free in/after/until` -> free, `fixed in` -> fixed); failing
#      that, an entry with a `fixed in` spec means free elsewhere and one with only
#      free specs means fixed elsewhere (free wins: spectracles' union);
#   3. else the `default` directive (fixed unless `default free`).
# Explicit params specs that disagree are E0404; a body statement contradicting an
# explicit params spec is E0405. Conflicts between identical pattern texts are
# the model-free checker's (E0301/E0302), so they are not repeated here.

_FREE_KINDS = ("free_in", "free_after", "free_until")


def resolve(parsed_file: n.File, tree=None, *, placeholders=None, source: str | None = None, data: DataSize | None = None, checked: bool = False):
    """Resolve a parsed file against a parameter tree into a Plan.

    Args:
        parsed_file: the `nodes.File` of a parse (ideally one the model-free check passed).
        tree: a `params.ParamTree`, a sequence of parent paths, or None: then the
            "parameters" are the pattern texts as written, each matching only itself
            (how `schedc show` tabulates a file without a model).
        placeholders: values of `$name` placeholders ({"name": value}).
        source: the file the text came from (recorded in the Plan).
        data: the size of the training data, which turns `N epochs` into steps; without it
            (`schedc check`, `show`) an epoch counts as one step and `steps_per_epoch` is None.
        checked: the model-free check has run on this file (`schedc.pipeline` always runs it
            first): what it reports between pattern texts (malformed patterns, E0006; statements
            overridden by the same texts, W0102; phases with no `free` that nothing frees,
            W0104) is left to it, and only what the model adds is reported here.

    Returns:
        (plan, diagnostics): plan is None when an error was found or a value the
        model-free check rejects (a step count) cannot be resolved.
    """
    return _Resolver(parsed_file, tree, placeholders, source, data, checked).run()


@dataclass
class _Entry:
    """A params entry: whom it matches, and what it says about each phase."""

    node: n.ParamEntry
    texts: frozenset[str]
    free: dict[int, n.Spec]  # phase -> the spec naming it free
    fixed: dict[int, n.Spec]  # phase -> the `fixed in` spec naming it
    elsewhere: tuple[str, n.Spec] | None  # ("free"|"fixed", spec) in phases neither names
    inits: dict[int, list[n.Spec]]  # phase -> its `init ... at` specs

    def opinion(self, k: int):
        """(status, explicit, spec) for phase k, or None when the entry only inits."""
        if k in self.free:
            return "free", True, self.free[k]
        if k in self.fixed:
            return "fixed", True, self.fixed[k]
        if self.elsewhere is not None:
            return self.elsewhere[0], False, self.elsewhere[1]
        return None


class _Resolver:
    def __init__(self, file: n.File, tree, placeholders, source, data: DataSize | None = None, checked: bool = False):
        from schedc.lang.glob import PathSet
        from schedc.plan.params import ParamTree

        self.file, self.source = file, source
        self.data = data
        self.checked = checked
        self.spe: int | None = None  # steps per epoch of the phase being resolved
        self.literal = tree is None
        if tree is None:
            tree = ParamTree.from_paths(self._pattern_texts())
        elif not isinstance(tree, ParamTree):
            tree = ParamTree.from_paths(list(tree))
        self.tree = tree
        self.paths = tree.paths
        self.pathset = PathSet(self.paths)
        self.copies = PathSet(list(tree.shared))
        self.constants = PathSet([path for path, _ in tree.constants])  # arrays that are not parameters
        self.env = env_of(file, placeholders, objects=True)
        self.diags: list = []
        self.seen: set = set()  # keys of diagnostics already reported (repeat instances share nodes)
        self.matches: dict[int, list[int]] = {}  # id(pattern node) -> parameter indices
        self.statement_matches: dict[int, frozenset[int]] = {}  # id(free/fix statement) -> parameter indices
        self.named = [False] * len(self.paths)  # matched by some pattern
        self.directives = {item.keyword: item for item in file.items if isinstance(item, n.Directive)}
        self.phases = expand(file, closed_count(self.env))

    # ---- helpers

    def _pattern_texts(self) -> list[str]:
        from schedc.lang.glob import check_pattern

        texts = (node.text for node in n.walk(self.file) if isinstance(node, n.Pattern))
        return [t for t in dict.fromkeys(texts) if check_pattern(t) is None]

    def report(self, key, diagnostic) -> None:
        if key not in self.seen:
            self.seen.add(key)
            self.diags.append(diagnostic)

    def closed(self, expr):
        """`expr` with `let`s and placeholders substituted and `N epochs` in steps of the current phase."""
        from schedc.lang.expr import in_steps, substitute

        return None if expr is None else in_steps(substitute(expr, self.env), self.spe or 1)

    def number(self, expr):
        from schedc.lang.expr import constant

        value = constant(self.closed(expr)) if hasattr(expr, "span") else expr
        return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None

    # ---- patterns

    def match(self, pattern: n.Pattern, init: bool = False) -> list[int]:
        """The parameters a pattern names, reporting (once per pattern) when it names none."""
        found = self.matches.get(id(pattern))
        if found is not None:
            return found
        from schedc.lang.glob import PatternError, compile_pattern

        try:
            compiled = compile_pattern(pattern.text)
        except PatternError:
            if not self.checked:  # a file nobody checked: the check's own pattern rule says what is wrong
                problem = malformed_pattern(pattern)
                self.report((problem.code, pattern.span), problem)
            found = []
        else:
            found = self.pathset.match(compiled) if not self.literal else [self.pathset.index[pattern.text]]
            if not found:
                self._unmatched(pattern, compiled, init)
        for i in found:
            self.named[i] = True
        self.matches[id(pattern)] = found
        return found

    def _unmatched(self, pattern: n.Pattern, compiled, init: bool) -> None:
        copies = [self.copies.paths[i] for i in self.copies.match(compiled)]
        if copies:
            found = shared_copies_only(pattern, [(c, self.tree.shared[c]) for c in copies], init)
            self.report((found.code, pattern.span), found)
            return
        sample = ", ".join(self.paths[:8]) + (f", ... ({len(self.paths)} in all)" if len(self.paths) > 8 else "")
        constants = [self.tree.constants[i] for i in self.constants.match(compiled)]  # what it names instead
        self.report(
            ("E0401", pattern.span),
            Diagnostic(
                "E0401",
                f"pattern `{pattern.text}` matches no parameter",
                pattern.span,
                help=_suggest(pattern.text, self.pathset),
                notes=(
                    *(f"`{path}` is {what}" for path, what in constants[:3]),
                    f"the model's parameters: {sample}" if self.paths else "the model has no parameters",
                ),
            ),
        )

    # ---- params entries

    def _refs(self, spec: n.Spec) -> list[int]:
        """Phase indices a spec covers; unknown references cover nothing (the model-free check reports them)."""
        return spec_phases(spec, self.phases)

    def _entries(self) -> tuple[list[_Entry], list[list[int]]]:
        """Every params entry, and for each parameter the entries matching it (in file order)."""
        entries: list[_Entry] = []
        of: list[list[int]] = [[] for _ in self.paths]
        for item in self.file.items:
            if not isinstance(item, n.Params):
                continue
            for node in item.entries:
                free: dict[int, n.Spec] = {}
                fixed: dict[int, n.Spec] = {}
                inits: dict[int, list[n.Spec]] = {}
                elsewhere = None
                for spec in node.specs:
                    refs = self._refs(spec)
                    if spec.kind == "init_at":
                        for k in refs:
                            inits.setdefault(k, []).append(spec)
                    elif spec.kind == "fixed_in":
                        for k in refs:
                            fixed.setdefault(k, spec)
                        elsewhere = ("free", spec)
                    else:
                        for k in refs:
                            free.setdefault(k, spec)
                        if elsewhere is None:
                            elsewhere = ("fixed", spec)
                only_inits = not free and not fixed and elsewhere is None
                entry = _Entry(node, frozenset(p.text for p in node.patterns), free, fixed, elsewhere, inits)
                e = len(entries)
                entries.append(entry)
                hit: set[int] = set()
                for pattern in node.patterns:
                    hit.update(self.match(pattern, init=only_inits))
                for i in sorted(hit):
                    of[i].append(e)
        return entries, of

    # ---- the run

    def run(self):
        if self.phases is None:  # past the phase cap: the check reports it (E0211), nothing to resolve
            return None, self.diags
        entries, entries_of = self._entries()
        frees_by_default = default_free(self.file)
        phase_plans: list[PhasePlan] = []
        inits_by_phase: list[dict[int, tuple[InitSpec, object]]] = []
        valid = True
        for ph in self.phases:
            built = self._phase(ph, entries, entries_of, frees_by_default)
            if built is None:
                valid = False
                continue
            plan, inits = built
            phase_plans.append(plan)
            inits_by_phase.append(inits)
        if valid and not self.literal:
            self._late_warnings(phase_plans, inits_by_phase)
        errors = any(d.is_error for d in self.diags)
        plan = None
        if valid and not errors:
            plan = Plan(
                phases=tuple(phase_plans),
                parameters=self.paths,
                shared=dict(self.tree.shared),
                seed=self._seed(),
                default="free" if frees_by_default else "fixed",
                model=self._string("model"),
                loss=self._string("loss"),
                data=self._string("data"),
                validation=self._string("validation"),
                metrics=self._string("eval"),
                source=self.source,
                tree=self.tree,
            )
        return plan, self.diags

    def _string(self, keyword: str) -> str | None:
        d = self.directives.get(keyword)
        return d.value.value if d is not None and isinstance(d.value, n.String) else None

    def _seed(self) -> int | None:
        d = self.directives.get("seed")
        value = self.number(d.value) if d is not None else None
        return value if isinstance(value, int) else None

    def _phase(self, ph: ExpandedPhase, entries, entries_of, default_free: bool):
        phase, k = ph.phase, ph.index
        batch = self._batch(phase)
        self.spe = self.data.steps_per_epoch(batch) if self.data is not None else None
        steps, epochs = self.number(phase.steps), None
        if phase.unit == "epochs" and isinstance(steps, (int, float)) and steps > 0:
            epochs, steps = steps, max(1, round(steps * (self.spe or 1)))
        if not isinstance(steps, int) or steps <= 0:
            return None
        statements = [s for s in phase.body if isinstance(s, (n.Free, n.Fix))]
        decider = [-1] * len(self.paths)
        decider_pattern: list[n.Pattern | None] = [None] * len(self.paths)
        matched_any = [False] * len(statements)
        for j, stmt in enumerate(statements):
            for pattern in stmt.patterns:
                for i in self.match(pattern):
                    decider[i], decider_pattern[i] = j, pattern
                    matched_any[j] = True
        self._overridden(statements, matched_any, set(decider))

        free_by_group: dict[int, list[int]] = {}  # statement index (-1: default group) -> parameters
        for i in range(len(self.paths)):
            status, group = self._status(ph, i, statements, decider[i], decider_pattern[i], entries, entries_of[i])
            if status is None:
                status = "free" if default_free else "fixed"
            if status == "free":
                free_by_group.setdefault(group, []).append(i)

        groups = []
        if -1 in free_by_group:
            groups.append(Group(tuple(self.paths[i] for i in free_by_group[-1]), span=phase.span))
        for j, stmt in enumerate(statements):
            if j in free_by_group:
                label = ", ".join(p.text for p in stmt.patterns)
                lr, plateau, on = split_plateau(self.closed(stmt.lr))
                groups.append(Group(tuple(self.paths[i] for i in free_by_group[j]), lr, self._optimizer(stmt.optimizer), stmt.span, label, plateau, on))
        free = tuple(self.paths[i] for i in sorted(i for members in free_by_group.values() for i in members))
        # a phase whose `free` patterns match nothing has its error already (E0401/E0402)
        unmatched = any(not self.matches.get(id(p)) for s in statements if isinstance(s, n.Free) for p in s.patterns)
        if not free and not (self.literal and default_free) and not unmatched:
            self._frees_nothing(ph)

        inits = self._inits(ph, entries, entries_of)
        lr = self._inherited(phase.lr, "lr")
        optimizer = self._optimizer(self._inherited(phase.optimizer, "optimizer")) or OptimizerSpec(catalog.DEFAULT_OPTIMIZER)
        lr, plateau, plateau_on = split_plateau(self.closed(lr))
        accumulate, ema = self.number(self._inherited(phase.accumulate, "accumulate")), self.number(self._inherited(phase.ema, "ema"))
        plan = PhasePlan(
            index=k,
            name=ph.name,
            steps=steps,
            free=free,
            groups=tuple(groups),
            lr=lr,
            optimizer=optimizer,
            inits=tuple(spec for spec, _ in (inits[i] for i in sorted(inits))),
            carry=any(isinstance(s, n.Carry) for s in phase.body),
            stop=tuple(self._stop(s, steps) for s in phase.body if isinstance(s, n.Stop)),
            span=phase.span,
            display=ph.display,
            plateau=plateau,
            plateau_on=plateau_on,
            accumulate=int(accumulate) if accumulate is not None else 1,
            ema=tracked_float(ema) if ema is not None else None,
            batch=batch,
            epochs=epochs,
            steps_per_epoch=self.spe,
            eval_every=self._eval_every(),
            keep=next((self._keep(s) for s in phase.body if isinstance(s, n.Keep)), None),
        )
        plan = replace(plan, stop=plan.stop + tuple(self._plateau(s) for s in phase.body if isinstance(s, n.StopImproving)))
        return plan, inits

    def _inherited(self, value, keyword: str):
        """A phase header clause, else the directive of the same keyword, else None."""
        if value is not None:
            return value
        return self.directives[keyword].value if keyword in self.directives else None

    # ---- training on data

    def _batch(self, phase: n.Phase) -> int | None:
        expr = self._inherited(phase.batch, "batch")
        value = self.number(expr) if expr is not None else None
        return value if isinstance(value, int) and value > 0 else None

    def _eval_every(self) -> int | None:
        """Steps between evaluations in the current phase: `every N steps`, or N epochs in its steps."""
        d = self.directives.get("eval")
        if d is None or d.every is None:
            return None
        count = self.number(d.every.count) if d.every.count is not None else 1
        if not isinstance(count, (int, float)) or count <= 0:
            return None
        return max(1, round(count * (self.spe or 1))) if d.every.unit == "epochs" else int(count)

    def _keep(self, keep: n.Keep) -> KeepRule:
        return KeepRule(keep.metric.id, catalog.maximised(keep.metric.id, catalog.KEEP_WHICH.get(keep.which.id)), keep.span)

    def _plateau(self, stop: n.StopImproving) -> StopRule:
        patience = self.number(stop.patience)
        return StopRule(
            "plateau",
            float("nan"),
            span=stop.span,
            metric=stop.metric.id,
            maximise=catalog.maximised(stop.metric.id, catalog.TRENDS.get(stop.trend.id)),
            patience=int(patience) if isinstance(patience, int) else 1,
        )

    def _status(self, ph, i, statements, j, pattern, entries, mine):
        """(status or None, group) of parameter i in phase ph, reporting params conflicts."""
        k = ph.index
        explicit: dict[str, tuple[n.Spec, _Entry]] = {}
        implicit: dict[str, n.Spec] = {}
        for e in mine:
            entry = entries[e]
            said = entry.opinion(k)
            if said is None:
                continue
            status, is_explicit, spec = said
            if not is_explicit:
                implicit.setdefault(status, spec)
                continue
            other = explicit.get("fixed" if status == "free" else "free")
            if other is not None and not (other[1].texts & entry.texts):
                first, second = (other[0], spec) if other[0].span <= spec.span else (spec, other[0])
                self._disagreement("E0404", self.paths[i], ph, (second.span, second.kind), (first.span, first.kind))
            explicit.setdefault(status, (spec, entry))
        params_status = None
        if explicit:
            params_status = "fixed" if "fixed" in explicit else "free"
        elif implicit:
            params_status = "free" if "free" in implicit else "fixed"
        if j < 0:
            return params_status, -1
        stmt = statements[j]
        status = "free" if isinstance(stmt, n.Free) else "fixed"
        against = explicit.get("fixed" if status == "free" else "free")
        if against is not None and pattern.text not in against[1].texts:
            self._disagreement("E0405", self.paths[i], ph, (pattern.span, status), (against[0].span, against[0].kind))
        grouped = isinstance(stmt, n.Free) and (stmt.lr is not None or stmt.optimizer is not None)
        return status, (j if grouped else -1)

    def _disagreement(self, code: str, path: str, ph: ExpandedPhase, here: tuple[n.Span, str], there: tuple[n.Span, str]) -> None:
        """E0404/E0405: two statements (of different patterns) that give parameter `path` two
        statuses in phase `ph`; `here` and `there` are (span, status or spec kind), the
        diagnostic stands `here`. Reported once per pair of statements."""
        message, said_here, said_there, help = _DISAGREEMENTS[code]
        words = dict(path=path, phase=ph.label, here=_verb(here[1]), there=_verb(there[1]))
        self.report(
            (code, here[0], there[0]),
            Diagnostic(code, message.format(**words), here[0], label=said_here.format(**words), labels=(Label(there[0], said_there.format(**words)),), help=help),
        )

    def _overridden(self, statements, matched_any, deciders: set[int]) -> None:
        """W0102: a statement every parameter of which a later statement decides (when the
        later statements name the same pattern texts, and the file was checked, it is the check's)."""
        by_text = conflicts.overridden_by_text(statements) if self.checked else {}
        for j, stmt in enumerate(statements):
            if not matched_any[j] or j in deciders or id(stmt) in by_text:
                continue
            if ("W0102", stmt.span) in self.seen:
                continue
            mine = self._matched_by(stmt)
            later = [s for s in statements[j + 1 :] if not mine.isdisjoint(self._matched_by(s))][:3]
            problem = conflicts.overridden(stmt, later, by_parameter=True)
            self.report((problem.code, stmt.span), problem)

    def _matched_by(self, stmt) -> frozenset[int]:
        found = self.statement_matches.get(id(stmt))
        if found is None:
            found = self.statement_matches[id(stmt)] = frozenset(i for p in stmt.patterns for i in self.matches.get(id(p), ()))
        return found

    @cached_property
    def _idle_by_text(self) -> dict:
        """The phases whose W0104 is the model-free check's (when it ran: `checked`); asked only
        once some phase frees nothing."""
        return conflicts.idle_phases(self.file, self.phases) if self.checked else {}

    def _frees_nothing(self, ph: ExpandedPhase) -> None:
        if id(ph.phase) in self._idle_by_text:
            return
        problem = conflicts.frees_nothing(ph.label, ph.phase)
        self.report((problem.code, id(ph.phase)), problem)

    # ---- inits

    def _inits(self, ph: ExpandedPhase, entries, entries_of) -> dict[int, tuple[InitSpec, object]]:
        """parameter index -> (its init in this phase, the pattern or spec that asked for it)."""
        k = ph.index
        out: dict[int, tuple[InitSpec, object]] = {}
        texts: dict[int, frozenset[str]] = {}

        def add(i, spec: InitSpec, where, where_texts: frozenset[str]):
            if i in out and not (texts[i] & where_texts):
                first = out[i][1]
                problem = conflicts.init_twice(self.paths[i], where.span, first.span, ph.label, narrow=True)
                self.report((problem.code, first.span, where.span), problem)
            if i not in out:
                out[i], texts[i] = (spec, where), where_texts
            else:
                texts[i] = texts[i] | where_texts

        for stmt in ph.phase.body:
            if not isinstance(stmt, n.Init):
                continue
            for pattern in stmt.patterns:
                for i in self.match(pattern, init=True):
                    spec = self._init_spec(self.paths[i], stmt.kind, stmt.value, stmt.span, pattern)
                    if spec is not None:
                        add(i, spec, pattern, frozenset((pattern.text,)))
        for e, entry in enumerate(entries):
            for spec_node in entry.inits.get(k, ()):
                for pattern in entry.node.patterns:
                    for i in self.match(pattern):
                        spec = self._init_spec(self.paths[i], "dist", spec_node.dist, spec_node.span, spec_node)
                        if spec is not None:
                            add(i, spec, spec_node, entry.texts)
        return out

    def _init_spec(self, path: str, kind: str, value, span: n.Span, where) -> InitSpec | None:

        if kind == "reset":
            return InitSpec(path, "reset", (), span)
        if kind == "value" and isinstance(closed := self.closed(value), n.Bound):  # an array bound to `$name`
            shape = tuple(getattr(closed.value, "shape", ()))
            return InitSpec(path, "value", (closed,), span) if self._fits(path, shape, where) else None
        if kind == "value":
            values, shape = _flatten(self.closed(value))
            if values is None:
                return None
            if not self._fits(path, shape, where):
                return None
            return InitSpec(path, "value", values, span)
        call = value
        if not isinstance(call, n.Call) or call.func.id not in catalog.DISTRIBUTIONS:
            return None
        bound, problems = bind(catalog.DISTRIBUTIONS[call.func.id], call)
        if problems:
            return None
        names = [p.name for p in catalog.DISTRIBUTIONS[call.func.id].params]
        args = [self.number(bound[name]) for name in names]
        if any(a is None for a in args):
            return None
        return InitSpec(path, call.func.id, tuple(tracked_float(a) for a in args), span)

    def _fits(self, path: str, shape: tuple[int, ...], where) -> bool:
        """E0407 unless a value of `shape` can initialise `path`: a number fills it, a list must have its shape."""
        if not shape or self.literal:
            return True
        param = self.tree[path]
        if not param.dtype:  # a tree known by its paths only: shapes unknown
            return True
        if tuple(shape) == tuple(param.shape):
            return True
        self.report(
            ("E0407", where.span, path),
            Diagnostic(
                "E0407",
                f"an init value of shape {_shape(shape)} does not fit `{path}`, of shape {_shape(param.shape)}",
                where.span,
                help="give a number (it fills the parameter) or a list of the parameter's shape",
            ),
        )
        return False

    # ---- phase parts

    def _optimizer(self, expr) -> OptimizerSpec | None:
        """`adam`, `adamw(weight_decay=1e-4)`, `chain(clip_by_global_norm(1.0), adam)`: positional
        arguments are named from optax's signature (the checker reported any that do not fit);
        `$name` bound to an optax object."""
        if isinstance(expr, n.Placeholder):
            expr = self.closed(expr)
        if isinstance(expr, n.Bound):  # an optax object (the front end checked its kind)
            return OptimizerSpec(f"${expr.id}", (), expr.span, transform=expr)
        if isinstance(expr, n.Name):
            return OptimizerSpec(expr.id, (), expr.span)
        if not isinstance(expr, n.Call):
            return None
        name = expr.func.id
        if name == catalog.CHAIN:
            members = (self._optimizer(arg) for arg in expr.args)
            return OptimizerSpec(catalog.CHAIN, (), expr.span, tuple(t for m in members if m is not None for t in m.transforms))
        names = [p[0] for p in catalog.transform_params(name)]
        kwargs = [(key, self.closed(arg)) for key, arg in zip(names, expr.args)]
        kwargs += [(kw.name.id, self.closed(kw.value)) for kw in expr.kwargs]
        return OptimizerSpec(name, tuple(kwargs), expr.span)

    def _stop(self, stop: n.Stop, steps: int) -> StopRule:

        def count(expr, fallback: int) -> int:
            if expr is None:
                return fallback
            closed = self.closed(expr)
            if isinstance(closed, n.Percent):
                return max(1, round(closed.value * steps))
            value = self.number(closed)
            return int(value) if value is not None else fallback

        threshold = self.number(stop.threshold)
        threshold = tracked_float(threshold) if threshold is not None else float("nan")
        if stop.metric.id.startswith(catalog.METRIC_PREFIX):
            return StopRule("metric", threshold, span=stop.span, metric=stop.metric.id, maximise=False)
        return StopRule(
            stop.metric.id,
            threshold,
            count(stop.over, catalog.STOP_DEFAULT_OVER),
            count(stop.after, catalog.STOP_DEFAULT_AFTER),
            stop.span,
        )

    # ---- warnings needing every phase

    def _late_warnings(self, plans: list[PhasePlan], inits_by_phase) -> None:
        index = {p: i for i, p in enumerate(self.paths)}
        last_free = [-1] * len(self.paths)  # the last phase in which each parameter is free
        for plan in plans:
            for path in plan.free:
                last_free[index[path]] = plan.index
        for plan, inits in zip(plans, inits_by_phase):
            for i, (spec, where) in inits.items():
                if last_free[i] < plan.index:
                    self.report(
                        ("W0105", where.span),
                        Diagnostic(
                            "W0105",
                            f"`{self.paths[i]}` is initialised in {self.phases[plan.index].label} but stays fixed from there on",
                            where.span,
                            help="free it in this or a later phase, or drop the init if it is meant as a constant",
                        ),
                    )
        never = [self.paths[i] for i in range(len(self.paths)) if last_free[i] < 0 and not self.named[i]]
        if never:
            directive = self.directives.get("model")
            listed = ", ".join(f"`{p}`" for p in never[:5]) + (f" and {len(never) - 5} more" if len(never) > 5 else "")
            self.report(
                ("W0103",),
                Diagnostic(
                    "W0103",
                    f"{len(never)} parameter{'s are' if len(never) != 1 else ' is'} never free and never named: {listed}",
                    directive.span if directive is not None else n.NO_SPAN,
                    notes=("with `default fixed` a parameter no statement names stays at its initial value",),
                    help="free it in some phase, or `fix` it to say it stays fixed",
                ),
            )


def split_plateau(expr):
    """(learning rate, plateau keywords or None, its `on=` metric name or None) of an lr
    `E * plateau(k=v, ...)` (lang.expr.plateau_factor, plateau_metric).

    The plateau scale multiplies the updates (optax.contrib.reduce_on_plateau chained after the
    optimizer): the learning rate times the scale for every optimizer whose update is linear in
    its learning rate. Its keywords are constants (optax validates them in Python), positional
    arguments named from reduce_on_plateau's signature.
    """
    from schedc.lang.expr import PLATEAU_TRANSFORM, constant, plateau_factor, plateau_metric

    rest, call = plateau_factor(expr)
    if call is None:
        return expr, None, None
    call, on = plateau_metric(call)
    names = [p[0] for p in catalog.transform_params(PLATEAU_TRANSFORM)]
    given = list(zip(names, call.args)) + [(kw.name.id, kw.value) for kw in call.kwargs]
    return rest, tuple((key, constant(value)) for key, value in given), on.id if isinstance(on, n.Name) else None


def shared_copies_only(pattern: n.Pattern, copies: list[tuple[str, str]], init: bool = False) -> Diagnostic:
    """E0402 (E0403 for an init): a pattern naming only shared copies, given as [(copy, its parent)]."""
    parents = list(dict.fromkeys(parent for _, parent in copies))
    pairs = ", ".join(f"`{c}` is `{parent}`" for c, parent in copies[:3])
    code, what = ("E0403", f"`{pattern.text}` initialises only shared copies") if init else ("E0402", f"pattern `{pattern.text}` matches only shared copies")
    return Diagnostic(
        code,
        what,
        pattern.span,
        notes=(f"{pairs}: one array at several paths is one parameter, named by its first path; the copies follow it",),
        help="name the parent instead: " + ", ".join(f"`{p}`" for p in parents[:3]),
    )


def _flatten(expr) -> tuple[tuple[float, ...] | None, tuple[int, ...]]:
    """The numbers of a (nested) list or a number, row-major, and their shape; (None, ()) if not numeric."""
    from schedc.lang.expr import constant

    if not isinstance(expr, n.List):
        value = constant(expr)
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return ((tracked_float(value),), ()) if ok else (None, ())
    rows = [_flatten(item) for item in expr.items]
    if any(values is None for values, _ in rows) or len({shape for _, shape in rows}) > 1:
        return None, ()
    inner = rows[0][1] if rows else ()
    return tuple(v for values, _ in rows for v in values), (len(rows),) + inner


def _shape(shape) -> str:
    return "(" + ", ".join(map(str, shape)) + ("," if len(shape) == 1 else "") + ")"


def _suggest(text: str, pathset) -> str | None:
    """`did you mean ...` for a pattern that matches nothing: fix one misspelt component, widen `*` to `**`,
    or fall back to the closest paths."""
    import difflib
    import re

    from schedc.lang.glob import PatternError, compile_pattern, components

    parts = re.findall(r"\[[^\]]*\]|\{[^}]*\}[^.\[]*|[^.\[]+", text)
    vocab = sorted({c[1:] for path in pathset.paths for c in components(path) if c.startswith(".")})
    lowered = {}
    for word in vocab:
        lowered.setdefault(word.lower(), word)

    def rebuild(items):
        return "".join(("" if i == 0 or item.startswith("[") else ".") + item for i, item in enumerate(items))

    def matches(candidate: str) -> bool:
        try:
            return bool(pathset.match(compile_pattern(candidate)))
        except PatternError:
            return False

    spelled: list[str] = []  # one misspelt name component corrected at a time, then all at once
    fixes: list[str | None] = []
    for i, part in enumerate(parts):
        options: list[str] = []
        if not any(ch in part for ch in "*{["):
            options = [w for w in [lowered.get(part.lower())] if w and w != part] + difflib.get_close_matches(part, vocab, n=3, cutoff=0.6)
        options = list(dict.fromkeys(options))
        fixes.append(options[0] if options else None)
        spelled += [rebuild(parts[:i] + [option] + parts[i + 1 :]) for option in options]
    if sum(f is not None for f in fixes) > 1:
        spelled.append(rebuild([f or p for p, f in zip(parts, fixes)]))
    widened = [rebuild(parts[:i] + ["**"] + parts[i + 1 :]) for i, part in enumerate(parts) if part == "*"]
    good = [c for c in dict.fromkeys(spelled) if c != text and matches(c)] or [c for c in widened if matches(c)]
    if not good:  # the path written from below its top (`σ` for `line.σ`)
        good = [p for p in pathset.paths if p.endswith("." + text)]
    if not good:
        good = difflib.get_close_matches(text, pathset.paths, n=3, cutoff=0.6)
    if not good:
        return None
    return proposing(good[:3])

