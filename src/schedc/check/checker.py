"""Model-free semantic checks of a parsed `.sched` file (DESIGN §3).

`check_file` walks the items that parsed (a partial tree after syntax errors
is fine) and returns diagnostics; it never raises. What it checks: names
(lets, phases, schedules, optimizers and their keywords, distributions, stop
metrics, phase references, placeholders), argument counts and types, values
(steps, learning rates, std, uniform ranges, non-finite numbers, repeat
counts), missing learning rates, duplicate directives, and the conflicts
visible without a model (the same pattern text given contradictory specs, two
inits or two stop rules of one kind in one phase), plus warnings (unused
`let`, overridden statements, phases that free nothing). Schedule-shape
checks (warmups, boundaries, percentages) come from `schedc.check.schedules`.

Model-dependent checks (E04xx, W0103, W0105) live in `schedc.plan.binding`.
Nothing here imports JAX: optimizer signatures come from the generated
`schedc.check._optax_table`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from functools import lru_cache

from schedc.check import catalog
from schedc.check._optax_table import OPTIMIZERS, TRANSFORMS
from schedc.check.data import check_data
from schedc.check.schedules import check_schedule
from schedc.lang import nodes as n
from schedc.lang.diagnostics import Diagnostic, Label, did_you_mean, sort_key
from schedc.lang.expr import MAX_EXPR_NODES, PLATEAU, constant, describe, plateau_factor, substitute, tree_size
from schedc.lang.glob import PatternError, check_pattern
from schedc.lang.program import (
    MAX_PHASES,
    ExpandedPhase,
    env_of,
    expand,
    header_span,
    oversized_lets,
    phase_count,
    ref_phases,
    spec_phases,
)
from schedc.lang.syntax import ParseResult, decode, parse, underflows

# Used when neither the phase nor an `optimizer` directive names one (as spectracles' build_schedule).

# Directives that may appear at most once (`let` has its own duplicate check).
_SINGLE_DIRECTIVES = ("model", "loss", "data", "validation", "eval", "batch", "seed", "optimizer", "lr", "accumulate", "ema", "default")

_FREE_SPECS = ("free_in", "free_after", "free_until")

_EXPR = n.Expr.__args__  # the expression node classes

_LET_NAME = re.compile(r"(?m)^[ \t]*let[ \t]+([A-Za-z_][A-Za-z0-9_]*)")


# ---------------------------------------------------------------- public API


def check_file(parsed: ParseResult, placeholders: dict | None = None) -> list[Diagnostic]:
    """Every model-free semantic diagnostic of the items that parsed, sorted by position.

    Args:
        parsed: what `syntax.parse` returned (its syntax diagnostics are not repeated).
        placeholders: values bound to `$name` placeholders ({"name": value}).
    """
    try:
        checker = _Checker(parsed.file, placeholders or {}, _lost_lets(parsed), partial=not parsed.ok)
    except RecursionError:  # `let`s substituted into each other beyond the host's stack
        return [Diagnostic("E0005", "`let` definitions nested beyond the checker's limits", n.Span(1, 1, 1, 2), notes=("split them into fewer nested `let`s",))]
    checker.run()
    checker.diags += check_data(parsed.file, checker.env)
    unique = {(d.code, d.span, d.message): d for d in checker.diags}
    return sorted(unique.values(), key=sort_key)


def _lost_lets(parsed: ParseResult) -> frozenset[str]:
    """Names of `let`s in items that failed to parse: their uses are not reported as undefined."""
    if parsed.ok:
        return frozenset()
    return frozenset(_LET_NAME.findall(parsed.text))


def check_source(text: str, name: str = "<input>", placeholders: dict | None = None) -> tuple[ParseResult, list[Diagnostic]]:
    """Parse and check `text`: all diagnostics (syntax included), sorted, each with `file=name`."""
    parsed = parse(text)
    diags = list(parsed.diagnostics) + check_file(parsed, placeholders)
    return parsed, sorted((d.in_file(name) for d in diags), key=sort_key)


def check_bytes(data: bytes, name: str = "<input>", placeholders: dict | None = None) -> tuple[ParseResult | None, list[Diagnostic], str | None]:
    """Decode (UTF-8, BOM allowed) and check raw file contents.

    Returns:
        (parsed, diagnostics, text); parsed and text are None when the bytes are
        binary or not UTF-8 (then the only diagnostic is E0004).
    """
    text, problem = decode(data)
    if text is None:
        return None, [problem.in_file(name)], None
    parsed, diags = check_source(text, name, placeholders)
    return parsed, diags, text


# ---------------------------------------------------------------- helpers


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _finite(value) -> bool:
    return math.isfinite(value) and abs(value) <= catalog.MAX_NUMBER


def _divides_by_zero(expr: n.BinOp, memo: dict) -> bool:
    """`x / 0`, or `0 ** -y` (both operands constant): reported as such rather than as "evaluates to nan"."""
    right = constant(expr.right, memo)
    if expr.op == "/":
        return right == 0
    return expr.op == "**" and constant(expr.left, memo) == 0 and right < 0


@dataclass
class _PhaseInfo:
    """What one phase node (shared by the instances of a repeat) says about each pattern text."""

    phase: n.Phase
    instances: list[int] = field(default_factory=list)
    status: dict[str, n.Statement] = field(default_factory=dict)  # text -> last free/fix naming it
    inits: dict[str, n.Init] = field(default_factory=dict)  # text -> first init of it
    frees: bool = False


# ---------------------------------------------------------------- the checker


class _Checker:
    def __init__(self, file: n.File, placeholders: dict, lost_lets: frozenset[str] = frozenset(), partial: bool = False):
        self.file = file
        self.lost_lets = lost_lets
        # items were lost to syntax errors: phase numbers and names are unreliable, so E0109 is not reported
        self.partial = partial
        self.diags: list[Diagnostic] = []
        self.bound = {key.lstrip("$") for key in placeholders}
        # placeholders bound to values the checker cannot inspect (a callable schedule) stay Placeholders
        self.env: dict[str, object] = env_of(file, placeholders)
        self.oversized = {let.name.id: let for let in oversized_lets(file, placeholders)}
        # lets share subtrees: each shared node is folded once per file and checked once per `_expr`
        self._folded: dict = {}
        self._visited: dict | None = None
        self.lets: dict[str, n.Let] = {}
        self.directives: dict[str, n.Directive] = {}
        self.phases: tuple[ExpandedPhase, ...] = ()
        self.has_placeholders = False  # set by _check_leaves

    def error(self, code: str, message: str, span: n.Span, **kw) -> None:
        self.diags.append(Diagnostic(code, message, span, **kw))

    # ---- driver

    def run(self) -> None:
        items = self.file.items
        self._collect_lets(items)
        self._collect_directives(items)
        self._check_leaves()
        for item in items:
            try:
                self._check_item(item)
            except RecursionError:  # lets nested into lets beyond the host's stack
                self.error("E0005", "expression nested beyond the checker's limits", getattr(item, "span", n.NO_SPAN), notes=("split it with fewer nested `let`s",))
        try:
            self._check_phase_total()
            self.phases = expand(self.file, self._count)
        except RecursionError:
            return
        self._check_phase_names()
        self._check_structure()

    def _check_phase_total(self) -> None:
        """E0211 at the item whose expansion takes the file past MAX_PHASES phases in all."""
        total = 0
        for item in self.file.items:
            total += phase_count((item,), self._count) if isinstance(item, (n.Phase, n.Repeat)) else 0
            if total > MAX_PHASES:
                span = header_span(item) if isinstance(item, n.Phase) else item.count.span
                self.error("E0211", f"the file expands to more than {MAX_PHASES} phases in all", span, help="use fewer or shorter `repeat`s (a phase can run many steps)")
                return

    def _check_item(self, item) -> None:
        if isinstance(item, n.Let) and item.name.id in self.oversized:
            if self.oversized[item.name.id] is item:
                self.error("E0005", f"`{item.name.id}` expands to more than {MAX_EXPR_NODES} nodes once the `let`s in it are substituted", item.name.span, help="compute the value in Python and pass it as a `$placeholder`, or write it out")
        elif isinstance(item, n.Let):
            # the first definition is checked as it was closed at its place (later lets not yet defined)
            first = self.lets.get(item.name.id) is item
            self._expr(self.env[item.name.id] if first else substitute(item.value, self.env), "any")
        elif isinstance(item, n.Directive):
            self._check_directive(item)
        elif isinstance(item, n.Phase):
            self._check_phase(item)
        elif isinstance(item, n.Repeat):
            self._check_repeat(item)
        elif isinstance(item, n.Params):
            for entry in item.entries:
                for spec in entry.specs:
                    if spec.dist is not None:
                        self._check_dist(spec.dist, params=True)

    # ---- names

    def _collect_lets(self, items) -> None:
        """The first definition of each name (its closed value is in self.env); E0102 for the others."""
        for item in items:
            if not isinstance(item, n.Let):
                continue
            name = item.name.id
            first = self.lets.get(name)
            if first is not None:
                self.error("E0102", f"`{name}` is already defined", item.name.span, labels=(Label(first.name.span, "first defined here"),), help="rename one of them")
                continue
            self.lets[name] = item

    def _check_leaves(self) -> None:
        """One walk over the tree: unbound placeholders (E0110), malformed patterns (E0006), unused lets (W0101)."""
        used: set[str] = set()
        definitions = {id(let.name) for let in self.lets.values()}
        for node in n.walk(self.file):
            if isinstance(node, n.Name):
                if id(node) not in definitions:
                    used.add(node.id)
            elif isinstance(node, n.Pattern):
                self._check_pattern(node)
            elif isinstance(node, n.Placeholder):
                self.has_placeholders = True
                if node.id not in self.bound:
                    self.error("E0110", f"placeholder `${node.id}` is not bound", node.span, help=f"pass `{node.id}=...` when compiling the schedule from Python")
        for name, let in self.lets.items():
            if name not in used:
                self.diags.append(Diagnostic("W0101", f"`{name}` is never used", let.name.span, help="remove it, or use it"))

    def _check_pattern(self, pattern: n.Pattern) -> None:
        err = _pattern_error(pattern.text)
        if err is None:
            return
        s, length = pattern.span, max(1, err.length)
        span = n.Span(s.line, s.column + err.offset, s.line, s.column + err.offset + length, s.start + err.offset, s.start + err.offset + length)
        self.error("E0006", f"malformed pattern `{pattern.text}`: {err.message}", span, help=err.help)

    def _collect_directives(self, items) -> None:
        for item in items:
            if not isinstance(item, n.Directive) or item.keyword not in _SINGLE_DIRECTIVES:
                continue
            first = self.directives.get(item.keyword)
            if first is None:
                self.directives[item.keyword] = item
            else:
                self.error("E0216", f"`{item.keyword}` is given more than once", item.span, labels=(Label(first.span, "first given here"),), help="keep one of them")

    # ---- directives, phases, repeats

    def _check_directive(self, d: n.Directive) -> None:
        if d.keyword == "default":
            value = d.value.id if isinstance(d.value, n.Name) else None
            if value not in catalog.DEFAULT_STATUSES:
                self.error("E0111", f"`default` must be `fixed` or `free`, not `{value}`", d.value.span, help=did_you_mean(str(value), catalog.DEFAULT_STATUSES))
        elif d.keyword == "seed":
            self._check_seed(substitute(d.value, self.env))
        elif d.keyword == "lr":
            lr = substitute(d.value, self.env)
            if self._lr(lr):
                self._schedule(lr, None, "the `lr` directive")
        elif d.keyword == "optimizer":
            self._optimizer(d.value, None, "the `optimizer` directive")
        elif d.keyword == "accumulate":
            self._accumulate(d.value)
        elif d.keyword == "ema":
            self._ema(d.value)

    def _accumulate(self, expr) -> None:
        """`accumulate N`: a whole number of steps >= 1 (optax.MultiSteps' every_k_schedule)."""
        expr = substitute(expr, self.env)
        value = self._value(expr)
        if value is not None and (not _is_int(value) or value < 1):
            self.error("E0213", f"`accumulate` takes a whole number of steps >= 1, got {_show(value)}", expr.span, help="`accumulate 4` updates once every 4 steps with the mean gradient")

    def _ema(self, expr) -> None:
        """`ema DECAY`: 0 <= decay < 1."""
        expr = substitute(expr, self.env)
        value = self._value(expr)
        if value is not None and not 0 <= value < 1:
            self.error("E0213", f"an `ema` decay must be in [0, 1), got {_show(value)}", expr.span, help="e.g. `ema 0.999`: each update moves the average 0.1% of the way")

    def _check_seed(self, value) -> None:
        seed = self._value(value)
        if seed is None:
            return
        if not _is_int(seed):
            self.error("E0202", f"`seed` must be an integer, got {_show(seed)}", value.span)
        elif not -(2**63) <= seed < 2**64:
            self.error("E0210", "`seed` is out of range (a 64-bit integer)", value.span)

    def _count(self, expr) -> int | None:
        value = constant(substitute(expr, self.env))
        return value if _is_int(value) else None

    def _check_repeat(self, rep: n.Repeat) -> None:
        count = substitute(rep.count, self.env)
        value = self._value(count)
        if value is not None:
            if not _is_int(value) or value < 1:
                self.error("E0211", f"a repeat count must be an integer >= 1, got {_show(value)}", count.span)
            elif value > 100_000:
                self.error("E0211", f"repeat count {value} is too large (at most 100000)", count.span)
        for item in rep.items:
            self._check_item(item)

    def _phase_steps(self, phase: n.Phase) -> int | None:
        """The phase's step count, or None (reported) when it is not a valid one, or unknown
        before the data is seen (a length in epochs: checked by schedc.check.data)."""
        if phase.unit == "epochs":
            return None
        steps = substitute(phase.steps, self.env)
        value = self._value(steps)
        if value is None:
            return None
        if not _is_int(value):
            self.error("E0203", f"steps must be a positive integer, got {_show(value)}", steps.span, help=f"write {int(value)}" if isinstance(value, float) and value.is_integer() and value > 0 else None)
            return None
        if value <= 0:
            self.error("E0203", f"steps must be a positive integer, got {value}", steps.span)
            return None
        if value > catalog.MAX_STEPS:
            self.error("E0203", f"{value} steps is more than the largest step count ({catalog.MAX_STEPS})", steps.span)
            return None
        return value

    def _check_phase(self, phase: n.Phase) -> None:
        steps = self._phase_steps(phase)
        label = f"phase `{phase.name.id}`" if phase.name else f"the phase at line {phase.span.line}"
        has_lr = False
        if phase.lr is not None:
            lr = substitute(phase.lr, self.env)
            has_lr = True
            if self._lr(lr):
                self._schedule(lr, steps, f"the learning rate of {label}")
        elif "lr" in self.directives:
            has_lr = True
            lr = substitute(self.directives["lr"].value, self.env)
            if self._lr(lr, report=False):
                self._schedule(lr, steps, f"the `lr` directive in {label}")
        if phase.accumulate is not None:
            self._accumulate(phase.accumulate)
        if phase.ema is not None:
            self._ema(phase.ema)
        if phase.optimizer is not None:
            phase_opt = phase.optimizer
            self._optimizer(phase_opt, steps, f"the optimizer of {label}")
        else:
            phase_opt = self.directives["optimizer"].value if "optimizer" in self.directives else None
            if phase_opt is not None:
                self._optimizer(phase_opt, steps, f"the `optimizer` directive in {label}")
        if phase.lr is not None and self._known(phase_opt) and not any(_takes_lr(m) for m in _members(phase_opt)):
            self.error("E0106", f"{_described(phase_opt)} takes no learning rate, but this phase gives one", phase.lr.span, help="remove `lr ...` from the phase, or add a transformation that takes one (`scale_by_learning_rate`)")
        if not has_lr and self._needs_lr(phase_opt):
            self.error("E0215", f"{label} has no learning rate and `{_opt_name(phase_opt)}` needs one", header_span(phase), help="add `lr VALUE` after the step count, or an `lr` directive")
        for stmt in phase.body:
            self._check_statement(stmt, steps, label, has_lr)

    def _needs_lr(self, opt) -> bool:
        """Whether some member of `opt` requires a learning rate it is not given."""
        for member in _members(opt):
            params = catalog.transform_params(_opt_name(member))
            if not params or params[0][0] != "learning_rate" or params[0][1]:
                continue
            if isinstance(member, n.Call) and (member.args or any(k.name.id == "learning_rate" for k in member.kwargs)):
                continue  # learning_rate given to the transformation itself
            return True
        return False

    def _known(self, opt) -> bool:
        return all(catalog.is_transform(_opt_name(m)) for m in _members(opt))

    def _lr(self, lr, report: bool = True) -> bool:
        """Type-check a learning rate (`E`, `E * plateau(...)`); E0204 when it is a negative constant. True when well-formed."""
        rest, plateau = plateau_factor(lr)
        if plateau is not None:
            ok = self._plateau(plateau, report)
            return ok and (rest is None or self._lr(rest, report))
        if not self._expr(lr, "schedule", report=report):
            return False
        value = constant(lr)
        if value is not None and value < 0:
            if report:
                self.error("E0204", f"the learning rate is negative ({_show(value)})", lr.span, help="a learning rate must be >= 0")
            return False
        return True

    def _check_statement(self, stmt, steps, label, phase_has_lr) -> None:
        if isinstance(stmt, n.Free):
            if stmt.lr is not None:
                lr = substitute(stmt.lr, self.env)
                if self._lr(lr):
                    self._schedule(lr, steps, f"the group learning rate in {label}")
            if stmt.optimizer is not None:
                self._optimizer(stmt.optimizer, steps, f"the group optimizer in {label}")
                if stmt.lr is None and not phase_has_lr and self._needs_lr(stmt.optimizer):
                    self.error("E0215", f"this group has no learning rate and `{_opt_name(stmt.optimizer)}` needs one", stmt.span, help="add `lr VALUE` to the statement or the phase")
        elif isinstance(stmt, n.Init):
            if stmt.kind == "dist":
                self._check_dist(stmt.value, params=False)
            elif stmt.kind == "value":
                self._expr(substitute(stmt.value, self.env), "init")
        elif isinstance(stmt, n.Stop):
            self._check_stop(stmt)

    def _check_stop(self, stop: n.Stop) -> None:
        metric = stop.metric.id
        if metric.startswith(catalog.METRIC_PREFIX):
            self._value(substitute(stop.threshold, self.env))
            return  # an evaluation metric: schedc.check.data
        if metric not in catalog.STOP_METRICS:
            self.error("E0108", f"unknown stop metric `{metric}`", stop.metric.span, help=did_you_mean(metric, catalog.STOP_METRICS), notes=("metrics: " + ", ".join(f"`{m}`" for m in catalog.STOP_METRICS),))
        threshold = substitute(stop.threshold, self.env)
        value = self._value(threshold)
        if value is not None and metric == "loss_change" and value <= 0:
            self.error("E0213", f"a `loss_change` threshold must be > 0 (the change is never below {_show(value)})", threshold.span)
        for word, expr, least in (("over", stop.over, 1), ("after", stop.after, 0)):
            expr = substitute(expr, self.env) if expr is not None else None
            if isinstance(expr, n.Epochs):
                continue  # a duration in epochs: schedc.check.data
            value = self._value(expr) if expr is not None else None
            if value is None:
                continue
            if not _is_int(value):
                self.error("E0202", f"`{word}` takes a whole number of steps, got {_show(value)}", expr.span)
            elif value < least:
                self.error("E0213", f"`{word}` must be >= {least}, got {value}", expr.span)
            elif word == "over" and value > catalog.MAX_STOP_WINDOW:
                self.error("E0213", f"`over` is at most {catalog.MAX_STOP_WINDOW} steps, got {value}", expr.span, notes=("the rule keeps a window of this many losses in memory",))

    # ---- calls: distributions, optimizers

    def _check_dist(self, call: n.Call, params: bool) -> None:
        name = call.func.id
        sig = catalog.DISTRIBUTIONS.get(name)
        if sig is None:
            self.error("E0107", f"unknown distribution `{name}`", call.func.span, help=did_you_mean(name, catalog.DISTRIBUTIONS), notes=("distributions: " + ", ".join(f"`{d}`" for d in catalog.DISTRIBUTIONS),))
            return
        call = substitute(call, self.env)
        bound, diags = catalog.bind(sig, call)
        self.diags.extend(diags)
        # parameter -> its value (None when unknown or reported), defaults included
        values = {p.name: self._value(bound[p.name]) if isinstance(bound.get(p.name), _EXPR) else bound.get(p.name) for p in sig.params}
        if name == "normal" and values["std"] is not None and values["std"] <= 0:
            self.error("E0205", f"the standard deviation must be > 0, got {_show(values['std'])}", bound["std"].span)
        if name == "uniform" and None not in (values["low"], values["high"]) and values["low"] >= values["high"]:
            where = bound["high"] if isinstance(bound["high"], _EXPR) else call
            self.error("E0206", f"`uniform` needs low < high, got low={_show(values['low'])}, high={_show(values['high'])}", where.span)

    def _optimizer(self, opt, steps, what: str) -> None:
        """An optimizer: a transformation by name or call, or `chain(T1, T2, ...)` of them."""
        if isinstance(opt, n.Placeholder):
            return  # bound from Python to an optax object: its kind is checked where it is bound
        if isinstance(opt, n.Call) and opt.func.id == catalog.CHAIN:
            for kw in opt.kwargs:
                self.error("E0106", "`chain` takes no keyword arguments", kw.name.span, help="write `chain(T1, T2, ...)`: the transformations in the order optax applies them")
            if not opt.args:
                self.error("E0201", "`chain` needs at least one transformation", opt.span, help="e.g. `chain(clip_by_global_norm(1.0), adam)`")
            for member in opt.args:
                if isinstance(member, (n.Name, n.Call)):
                    self._optimizer(member, steps, what)
                else:
                    self.error("E0202", f"a `chain` member is an optax transformation (`clip(1.0)`, `adam`), got {describe(member)}", member.span)
            return
        self._transform(opt, steps, what)

    def _transform(self, opt, steps, what: str) -> None:
        """One optax optimizer or transformation: its name, then its arguments against optax's signature."""
        name = _opt_name(opt)
        params = catalog.transform_params(name)
        if not params and not catalog.is_transform(name):
            where = opt.func.span if isinstance(opt, n.Call) else opt.span
            notes = ("optimizers: " + ", ".join(sorted(OPTIMIZERS)), "transformations (in `chain(...)`): " + ", ".join(sorted(TRANSFORMS)))
            if name == PLATEAU:
                notes = ("`plateau(...)` is a factor of the learning rate: `lr 1e-3 * plateau(factor=0.5)`",)
            self.error("E0105", f"unknown optimizer or transformation `{name}`", where, help=did_you_mean(name, list(OPTIMIZERS) + list(TRANSFORMS) + [catalog.CHAIN]), notes=notes)
            return
        if not isinstance(opt, n.Call):
            self._required(name, params, {}, opt)
            return
        given = self._bind_optax(name, params, opt)
        self._required(name, params, given, opt)
        kinds = {p[0]: p[3] for p in params}
        for key, arg in given.items():
            self._optax_argument(name, key, kinds[key], substitute(arg, self.env), steps, what)

    def _bind_optax(self, name: str, params, call: n.Call) -> dict:
        """Positional and keyword arguments of `call` by parameter name, reporting extras, unknowns and repeats."""
        names = [p[0] for p in params]
        given: dict[str, object] = {}
        if len(call.args) > len(params):
            self.error("E0201", f"`{name}` takes at most {len(params)} arguments, got {len(call.args)}", call.args[len(params)].span)
        for pname, arg in zip(names, call.args):
            given[pname] = arg
        for kw in call.kwargs:
            key = kw.name.id
            if key not in names:
                self.error("E0106", f"`{name}` has no argument `{key}`", kw.name.span, help=did_you_mean(key, names), notes=(f"`optax.{name}` takes: " + ", ".join(names),))
            elif key in given:
                self.error("E0214", f"argument `{key}` of `{name}` given twice", kw.span)
            else:
                given[key] = kw.value
        return given

    def _required(self, name: str, params, given: dict, where) -> None:
        """E0201 for a required argument left out (a learning rate comes from `lr`: E0215 says when it is missing)."""
        for pname, has_default, _, _ in params:
            if not has_default and pname != "learning_rate" and pname not in given:
                self.error("E0201", f"`{name}` is missing its argument `{pname}`", where.span, help=f"write `{name}({pname}=...)`")

    def _optax_argument(self, name: str, key: str, kind: str, value, steps, what: str) -> None:
        """One argument of an optax call, by the kind the optax table gives it."""
        if kind == "object":
            self.error("E0202", f"`{key}` of `{name}` takes a Python object (a mask, a function, a tuple): it cannot be given in a schedule file", value.span, help="leave it out (optax's default), or build the optimizer in Python")
        elif kind == "dtype":
            if not (isinstance(value, n.Name) and value.id in catalog.DTYPES):
                self.error("E0202", f"`{key}` of `{name}` takes a dtype name, got {f'`{value.id}`' if isinstance(value, n.Name) else describe(value)}", value.span, help=did_you_mean(value.id, catalog.DTYPES) if isinstance(value, n.Name) else None, notes=("dtypes: " + ", ".join(catalog.DTYPES),))
        elif kind == "string":
            if not isinstance(value, (n.Name, n.String)):
                self._wrong(value, "symbol")
        elif kind == "bool":
            self._expr(value, "bool")
        elif kind == "int":
            number = self._value(value)
            if number is not None and not _is_int(number):
                self.error("E0202", f"`{key}` of `{name}` takes a whole number, got {_show(number)}", value.span)
        elif self._expr(value, "schedule") and constant(value) is None:
            self._schedule(value, steps, f"`{key}` of `{name}` in {what}")

    def _plateau(self, call: n.Call, report: bool) -> bool:
        """`plateau(...)`: optax.contrib.reduce_on_plateau's arguments, constant numbers in its ranges."""
        mark = len(self.diags)
        params = catalog.transform_params("contrib.reduce_on_plateau")
        given = self._bind_optax(PLATEAU, params, call)
        for key, arg in given.items():
            arg = substitute(arg, self.env)
            value = self._value(arg)  # a constant number (else reported)
            if value is None:
                continue
            problem = _plateau_range(key, value)
            if problem:
                self.error("E0213", f"`{key}` of `plateau` {problem}, got {_show(value)}", arg.span, notes=("the semantics of optax.contrib.reduce_on_plateau",))
        ok = not any(d.is_error for d in self.diags[mark:])
        if not report:
            del self.diags[mark:]
        return ok

    # ---- expressions

    def _expr(self, expr, kind: str, report: bool = True) -> bool:
        """Check `expr` (lets substituted) as a value of `kind`; True when it is well-formed.

        kinds: those of catalog.Param, plus "any" (a `let` value: only its parts
        are checked), "init" (a number or nested list of numbers) and "string".
        """
        mark = len(self.diags)
        outer, self._visited = self._visited, self._visited if self._visited is not None else {}
        try:
            if tree_size(expr) > MAX_EXPR_NODES:
                self.error("E0005", f"this expression has more than {MAX_EXPR_NODES} nodes once the `let`s in it are substituted", expr.span, help="split it, or compute it in Python and pass it as a `$placeholder`")
            else:
                self._check(expr, kind)
        finally:
            self._visited = outer
        ok = not any(d.is_error for d in self.diags[mark:])
        if not report:
            del self.diags[mark:]
        return ok

    def _value(self, expr, kind: str = "number"):
        """The constant value of a well-formed `expr`, or None (reported, or an opaque placeholder)."""
        return constant(expr) if self._expr(expr, kind) else None

    def _check(self, expr, kind: str) -> None:
        if self._visited is not None:
            if (id(expr), kind) in self._visited:
                return  # a subtree shared by substituted lets: its diagnostics are already there
            self._visited[(id(expr), kind)] = expr
        if isinstance(expr, n.Placeholder):
            return  # unbound: reported once as E0110; bound to an opaque object: unknowable
        if isinstance(expr, n.Name):
            self._name(expr, kind)
            return
        if isinstance(expr, n.Number):
            if not _finite(expr.value):
                self.error("E0210", f"`{expr.text}` is not a finite float32 number", expr.span, help=f"numbers must lie within ±{catalog.MAX_NUMBER:.4g}")
            elif underflows(expr.text):
                self.error("E0210", f"`{expr.text}` is too small to represent: it would silently become 0", expr.span, help="write 0 if zero is meant")
            elif kind not in ("any", "number", "schedule", "duration", "init"):
                self._wrong(expr, kind)
            elif kind == "duration" and (not _is_int(expr.value) or expr.value < 0):
                self.error("E0202", f"a duration is a whole number of steps or a percentage, got `{expr.text}`", expr.span)
            return
        if isinstance(expr, (n.BinOp, n.UnaryOp)):
            self._arith(expr, kind)
            return
        if isinstance(expr, n.Percent):
            if not math.isfinite(expr.value):
                self.error("E0210", f"`{expr.text}` is not a finite percentage", expr.span)
            elif kind not in ("any", "duration"):
                self._wrong(expr, kind)
            return
        if isinstance(expr, n.Epochs):
            if kind not in ("any", "duration"):
                self._wrong(expr, kind)
            self._check(expr.count, "number")
            return
        if isinstance(expr, n.Call):
            self._call(expr, kind)
            return
        if isinstance(expr, n.Then):
            if kind not in ("any", "schedule"):
                self._wrong(expr, kind)
            for piece in expr.pieces:
                self._check(piece, "schedule")
            for duration in expr.durations:
                self._check(duration, "duration")
            return
        if isinstance(expr, n.Arrow):
            if kind == "any":
                for p in expr.points:
                    self._check(p, "number")
            else:
                self._wrong(expr, kind, help="an `a -> b` range is the first argument of a schedule, e.g. `linear(a -> b)`")
            return
        if isinstance(expr, n.List):
            if kind not in ("any", "list", "init"):
                self._wrong(expr, kind)
            for item in expr.items:
                self._check(item, "init" if kind == "init" else "duration" if isinstance(item, n.Percent) else "number")
            return
        if isinstance(expr, n.Map):
            if kind not in ("any", "map"):
                self._wrong(expr, kind)
            for entry in expr.entries:
                self._check(entry.key, "duration")
                self._check(entry.value, "number")
            return
        if isinstance(expr, n.String):
            if kind not in ("any", "string"):
                self._wrong(expr, kind)
            return
        if isinstance(expr, n.Bool) and kind not in ("any", "bool"):
            self._wrong(expr, kind)

    def _wrong(self, expr, kind: str, help: str | None = None) -> None:
        expected = {
            "number": "a number",
            "schedule": "a number or a schedule",
            "duration": "a step count, a percentage or `N epochs`",
            "map": "a map `{step: value, ...}`",
            "list": "a list `[...]`",
            "bool": "`true` or `false`",
            "symbol": "a name",
            "init": "a number or a list of numbers",
            "string": "a string",
        }[kind]
        self.error("E0202", f"expected {expected}, got {describe(expr)}", expr.span, help=help)

    def _name(self, name: n.Name, kind: str) -> None:
        if name.id in self.oversized:
            return  # reported once at its `let`
        if name.id in self.lets:  # still a Name: a let used before its definition
            self.error("E0101", f"`{name.id}` is used before its definition", name.span, labels=(Label(self.lets[name.id].name.span, "defined here"),), help="move the `let` above its first use")
            return
        if kind == "symbol" or name.id in self.lost_lets:
            return  # a symbol is checked by _call; a lost let's syntax error was reported
        candidates = list(self.lets)
        help = did_you_mean(name.id, candidates)
        if help is None and name.id in catalog.SCHEDULES:
            help = f"`{name.id}` is a schedule: call it, `{catalog.SCHEDULES[name.id].usage()}`"
        self.error("E0101", f"undefined name `{name.id}`", name.span, help=help)

    def _arith(self, expr, kind: str) -> None:
        operands = (expr.operand,) if isinstance(expr, n.UnaryOp) else (expr.left, expr.right)
        inner = kind if kind in ("schedule", "any", "number") else "number"
        mark = len(self.diags)
        for operand in operands:
            self._check(operand, inner)
        if len(self.diags) > mark:
            return
        value = constant(expr, self._folded)
        if value is None:
            if kind not in ("schedule", "any"):
                self._wrong(expr, kind)
            return
        if isinstance(expr, n.BinOp) and _divides_by_zero(expr, self._folded):
            self.error("E0210", "division by zero" if expr.op == "/" else "zero raised to a negative power", expr.span)
        elif not _finite(value):
            self.error("E0210", f"this evaluates to {_show(value)}, not a finite float32 number", expr.span)
        elif kind == "duration" and (not _is_int(value) or value < 0):
            self.error("E0202", f"a duration is a whole number of steps or a percentage, got {_show(value)}", expr.span)
        elif kind not in ("any", "number", "schedule", "duration", "init"):
            self._wrong(expr, kind)

    def _call(self, call: n.Call, kind: str) -> None:
        name = call.func.id
        sig = catalog.SCHEDULES.get(name)
        if sig is None:
            notes = ()
            if name in catalog.DISTRIBUTIONS:
                notes = (f"`{name}` is a distribution: use it in `init P ~ {name}(...)`",)
            elif catalog.is_transform(name):
                notes = (f"`{name}` is an optax transformation: use it after `optimizer`",)
            elif name == PLATEAU:
                notes = ("`plateau(...)` is a factor of a learning rate, `lr E * plateau(...)`, not part of a schedule",)
            self.error("E0104", f"unknown schedule `{name}`", call.func.span, help=did_you_mean(name, catalog.SCHEDULES), notes=notes)
            for arg in call.args:
                self._check(arg, "any")
            for kw in call.kwargs:
                self._check(kw.value, "any")
            return
        if kind not in ("any", "schedule"):
            self._wrong(call, kind)
        bound, diags = catalog.bind(sig, call)
        self.diags.extend(diags)
        for point in bound.get("arrow", ()):
            self._check(point, "number")
        for p in sig.params:
            arg = bound.get(p.name)
            if not isinstance(arg, _EXPR):
                continue
            self._check(arg, p.kind)
            if p.kind == "symbol" and isinstance(arg, n.Name) and arg.id not in p.choices:
                self.error("E0202", f"`{p.name}` of `{name}` must be one of {', '.join(f'`{c}`' for c in p.choices)}, got `{arg.id}`", arg.span, help=did_you_mean(arg.id, p.choices))
            elif p.kind == "symbol" and not isinstance(arg, n.Name):
                self._wrong(arg, "symbol")

    # ---- schedule-shape checks (schedc.check.schedules)

    def _schedule(self, expr, steps: int | None, what: str) -> None:
        """Warmups, boundaries, percentages and durations of a closed schedule expression."""
        expr, _ = plateau_factor(expr)
        if expr is None:
            return
        if constant(expr) is not None or (self.has_placeholders and any(isinstance(node, n.Placeholder) for node in n.walk(expr))):
            return  # a plain number has no shape; an opaque placeholder cannot be checked
        self.diags.extend(check_schedule(expr, steps, what))

    # ---- phase names and references

    def _check_phase_names(self) -> None:
        first: dict[str, n.Phase] = {}
        for ph in self.phases:
            if ph.name is None:
                continue
            seen = first.setdefault(ph.name, ph.phase)
            if seen is not ph.phase:
                self.error("E0103", f"a phase named `{ph.name}` already exists", ph.phase.name.span, labels=(Label(seen.name.span, "first defined here"),), help="phase names must be unique (phases repeated by `repeat` share theirs)")

    def _refs(self, spec: n.Spec) -> list[int] | None:
        """The phase indices a spec covers, reporting unknown references; None if any is invalid."""
        count = len(self.phases)
        for ref in spec.phases:
            if ref_phases(ref, self.phases):
                continue
            if not self.partial:
                if isinstance(ref.target, int):
                    self.error("E0109", f"phase {ref.target} does not exist (the file has {count} phase{'s' * (count != 1)}, numbered from 0)", ref.span)
                else:
                    names = sorted({p.name for p in self.phases if p.name})
                    self.error("E0109", f"no phase is named `{ref.target}`", ref.span, help=did_you_mean(ref.target, names))
            return None
        return spec_phases(spec, self.phases)

    # ---- conflicts and warnings over the expanded phases

    def _check_structure(self) -> None:
        infos = self._phase_infos()
        claims = self._params_claims()
        self._params_conflicts(claims)
        self._body_vs_params(infos, claims)
        self._frees_nothing(infos, claims)

    def _phase_infos(self) -> dict[int, _PhaseInfo]:
        infos: dict[int, _PhaseInfo] = {}
        for ph in self.phases:
            info = infos.get(id(ph.phase))
            if info is None:
                info = infos[id(ph.phase)] = self._analyse_body(ph.phase)
            info.instances.append(ph.index)
        return infos

    def _analyse_body(self, phase: n.Phase) -> _PhaseInfo:
        """Per-body checks (W0102, E0302, E0303) and what the body says about each pattern text."""
        info = _PhaseInfo(phase)
        statuses = [s for s in phase.body if isinstance(s, (n.Free, n.Fix))]
        info.frees = any(isinstance(s, n.Free) for s in statuses)
        last: dict[str, n.Statement] = {}
        for stmt in statuses:
            for p in stmt.patterns:
                last[p.text] = stmt
        info.status = last
        for stmt in statuses:
            later = [last[p.text] for p in stmt.patterns]
            if all(s is not stmt for s in later):
                overriding = list(dict.fromkeys(id(s) for s in later))
                by_id = {id(s): s for s in later}
                self.diags.append(
                    Diagnostic(
                        "W0102",
                        f"`{_keyword(stmt)} {', '.join(p.text for p in stmt.patterns)}` is overridden by later statements",
                        stmt.span,
                        labels=tuple(Label(by_id[i].span, "overridden here") for i in overriding),
                        help="remove it (the last statement naming a pattern wins)",
                    )
                )
        stops: dict[str, n.Stop] = {}
        for stmt in phase.body:
            if isinstance(stmt, n.Init):
                for p in stmt.patterns:
                    first = info.inits.setdefault(p.text, stmt)
                    if first is not stmt:
                        self.error("E0302", f"`{p.text}` is initialised twice in this phase", p.span, labels=(Label(first.span, "first init here"),), help="keep one of the inits")
            elif isinstance(stmt, n.Stop):
                first = stops.setdefault(stmt.metric.id, stmt)
                if first is not stmt:
                    self.error("E0303", f"a second `{stmt.metric.id}` stop rule in this phase", stmt.span, labels=(Label(first.span, "first rule here"),), help="merge them into one rule")
        return info

    def _params_claims(self) -> dict[str, list[tuple[str, n.Spec, list[int]]]]:
        """pattern text -> [(claim, spec, phase indices)], claim "free", "fixed" or "init"."""
        claims: dict[str, list] = {}
        for item in self.file.items:
            if not isinstance(item, n.Params):
                continue
            for entry in item.entries:
                for spec in entry.specs:
                    indices = self._refs(spec)
                    if indices is None:
                        continue
                    claim = "free" if spec.kind in _FREE_SPECS else "fixed" if spec.kind == "fixed_in" else "init"
                    for p in entry.patterns:
                        claims.setdefault(p.text, []).append((claim, spec, indices))
        return claims


    def _params_conflicts(self, claims) -> None:
        for text, rows in claims.items():
            for i, (claim, spec, indices) in enumerate(rows):
                for claim0, spec0, indices0 in rows[:i]:
                    both = sorted(set(indices) & set(indices0))
                    if not both:
                        continue
                    if {claim, claim0} == {"free", "fixed"}:
                        self.error("E0301", f"`{text}` is both free and fixed in {self.phases[both[0]].label}", spec.span, labels=(Label(spec0.span, "contradicted here"),), help="a parameter has one status per phase: drop one of the specs")
                    elif claim == claim0 == "init":
                        self.error("E0302", f"`{text}` is initialised twice in {self.phases[both[0]].label}", spec.span, labels=(Label(spec0.span, "first init here"),), help="keep one of the inits")

    def _body_vs_params(self, infos: dict[int, _PhaseInfo], claims) -> None:
        for info in infos.values():
            instances = set(info.instances)
            for text, stmt in info.status.items():
                said = "free" if isinstance(stmt, n.Free) else "fixed"
                for claim, spec, indices in claims.get(text, ()):
                    both = sorted(instances.intersection(indices))
                    if both and claim in ("free", "fixed") and claim != said:
                        self.error("E0301", f"`{text}` is {said} in the body of {self.phases[both[0]].label} but {claim} in the params block", spec.span, labels=(Label(stmt.span, f"{said} here"),), help="a parameter has one status per phase: drop one of them")
            for text, init in info.inits.items():
                for claim, spec, indices in claims.get(text, ()):
                    both = sorted(instances.intersection(indices))
                    if both and claim == "init":
                        self.error("E0302", f"`{text}` is initialised twice in {self.phases[both[0]].label}", spec.span, labels=(Label(init.span, "first init here"),), help="keep one of the inits")

    def _frees_nothing(self, infos: dict[int, _PhaseInfo], claims) -> None:
        default = self.directives.get("default")
        if default is not None and isinstance(default.value, n.Name) and default.value.id == "free":
            return
        freed: set[int] = set()
        for rows in claims.values():
            for claim, _, indices in rows:
                if claim == "free":
                    freed.update(indices)
                elif claim == "fixed":
                    freed.update(set(range(len(self.phases))) - set(indices))
        for info in infos.values():
            idle = [i for i in info.instances if i not in freed]
            if info.frees or not idle:
                continue
            where = self.phases[idle[0]].label + (f" (and {len(idle) - 1} more instances)" if len(idle) > 1 else "")
            self.diags.append(Diagnostic("W0104", f"{where} frees no parameter", header_span(info.phase), help="add a `free` statement, or a params spec that frees something in it"))


# ---------------------------------------------------------------- small utilities


@lru_cache(maxsize=4096)
def _pattern_error(text: str) -> PatternError | None:
    """glob's verdict on a pattern text (files repeat the same patterns many times)."""
    return check_pattern(text)


def _members(opt) -> list:
    """The transformations an optimizer chains (nested chains flattened); [the default] when none is named."""
    if isinstance(opt, n.Call) and opt.func.id == catalog.CHAIN:
        return [m for arg in opt.args if isinstance(arg, (n.Name, n.Call)) for m in _members(arg)]
    return [opt]


def _described(opt) -> str:
    """`adam`, or `no member of chain(...)` for a chain."""
    if isinstance(opt, n.Call) and opt.func.id == catalog.CHAIN:
        return "no member of `chain(...)`"
    return f"`{_opt_name(opt)}`"


def _takes_lr(opt) -> bool:
    return any(p[0] == "learning_rate" for p in catalog.transform_params(_opt_name(opt)))


_PLATEAU_RANGES = {
    "factor": (lambda v: 0 < v < 1, "must be in (0, 1)"),
    "rtol": (lambda v: 0 <= v <= 1, "must be in [0, 1]"),
    "atol": (lambda v: v >= 0, "must be >= 0"),
    "patience": (lambda v: _is_int(v) and v >= 0, "must be a whole number >= 0"),
    "cooldown": (lambda v: _is_int(v) and v >= 0, "must be a whole number >= 0"),
    "accumulation_size": (lambda v: _is_int(v) and v >= 1, "must be a whole number >= 1"),
    "min_scale": (lambda v: 0 <= v <= 1, "must be in [0, 1]"),
}


def _plateau_range(key: str, value) -> str | None:
    check = _PLATEAU_RANGES.get(key)
    return None if check is None or check[0](value) else check[1]


def _opt_name(opt) -> str:
    if opt is None:
        return catalog.DEFAULT_OPTIMIZER
    if isinstance(opt, n.Call):
        return opt.func.id
    if isinstance(opt, n.Name):
        return opt.id
    return "?"


def _keyword(stmt) -> str:
    return "free" if isinstance(stmt, n.Free) else "fix"


def _show(value) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return f"{value:g}"
    return str(value)
