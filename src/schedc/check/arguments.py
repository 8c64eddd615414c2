"""The one argument checker: every value given to a schedule, a distribution, an optimizer, a
directive or a statement is checked here, against what its place says it must be.

Two passes over a value, both here. The *type* pass asks whether it is a number, a duration,
a schedule, ... and matches each call's arguments to its signature (`bind`, one matcher for
schedules, distributions and optax optimizers alike). The *shape* pass, run on a well-typed
schedule, checks its numbers against their ranges, warmups against their span, boundaries
for order, `for` durations against the span they divide.

What a value *is* comes from the call site as a fact, a `Role`, never from the wording of a
message: a phase's or group's `lr` and an optimizer's `learning_rate` keyword are learning
rates (a negative level is E0204); an optimizer's decay rates (`b1`, `momentum`, ...) lie
within [0, 1) (E0221).

A value shared by several uses (a `let`, the `lr` and `optimizer` directives that many phases
inherit) is one node object at each of them. Each check of a node runs once for each distinct
input its finding depends on (the node, its role, its span), so a problem inside a shared value
is reported once, where it is written, with no filtering afterwards.
"""

from __future__ import annotations

import math

from schedc.check import catalog, names
from schedc.check.catalog import ArgSpec, CallSignature
from schedc.check.time_model import duration_steps, percent_fraction, segments
from schedc.lang import nodes as n
from schedc.lang.diagnostics import Diagnostic, did_you_mean
from schedc.lang.syntax import beyond_limits, underflows
from schedc.lang.expr import MAX_EXPR_NODES, PLATEAU, PLATEAU_TRANSFORM, constant, describe, plateau_factor, plateau_metric, tree_size
from schedc.lang.expr import show as _show
from schedc.lang.record import Record, record

_EXPR = n.Expr.__args__  # the expression node classes

# `S for N then T`: each N is a positive duration of the enclosing span.
FOR = ArgSpec("for", "duration", catalog.REQUIRED, "positive")

# Parameters whose value is the schedule's own output level (what a role constrains).
_VALUE_PARAMS = frozenset({"value", "init", "peak", "values"})

_CHECKS = {
    "positive": (lambda x: x > 0, "positive"),
    "nonneg": (lambda x: x >= 0, "non-negative"),
    "fraction": (lambda x: 0 <= x <= 1, "within [0, 1]"),
    "open_fraction": (lambda x: 0 < x < 1, "strictly between 0 and 1"),
    "ge1": (lambda x: x >= 1, "at least 1"),
}

_EXPECTED = {
    "number": "a number",
    "schedule": "a number or a schedule",
    "duration": "a step count, a percentage or `N epochs`",
    "map": "a map `{step: value, ...}`",
    "list": "a list `[...]`",
    "bool": "`true` or `false`",
    "symbol": "a name",
    "init": "a number or a list of numbers",
    "string": "a string",
}


# ---------------------------------------------------------------- roles: facts from the call site


@record
class Role(Record):
    """What a value is, as its place in the program says: the range its levels must lie in.

    `low` is inclusive, `high` exclusive (None: unbounded).
    """

    name: str  # how messages name the value
    code: str
    low: float
    high: float | None = None

    def violated(self, value) -> bool:
        return value < self.low or (self.high is not None and value >= self.high)

    def diagnostic(self, expr, value, whole: bool) -> Diagnostic:
        """`whole`: the value is the whole argument (a constant), not a level inside a schedule."""
        if self.code == "E0204":
            message = f"the learning rate is negative ({_show(value)})" if whole else f"negative learning rate ({_show(value)})"
            return Diagnostic("E0204", message, expr.span, help="a learning rate must be >= 0")
        where = "" if whole else " at every step"
        return Diagnostic(
            self.code,
            f"{self.name} must lie within [{_show(self.low)}, {_show(self.high)}){where}, got {_show(value)}",
            expr.span,
            help="a decay rate is the share of the running average kept at each step: 0.9 keeps 90%",
        )


LEARNING_RATE = Role("the learning rate", "E0204", 0.0)


def optimizer_role(keyword: str, optimizer: str) -> Role | None:
    """The role of an optimizer's keyword argument: a learning rate, a decay rate, or nothing known."""
    if keyword == "learning_rate":
        return LEARNING_RATE
    if keyword in catalog.DECAY_RATES:
        return Role(f"`{keyword}` of `{optimizer}`", "E0221", 0.0, 1.0)
    return None


# ---------------------------------------------------------------- matching a call to its signature


def bind(sig: CallSignature, call) -> tuple[dict[str, object], list[Diagnostic]]:
    """Match a call's arguments to `sig`, as Python would.

    Returns (bound, diagnostics): `bound` maps each parameter name to the
    argument expression given, or to its default (a Python value) when left
    out; the arrow's waypoints are under "arrow" (a tuple of expressions).
    Missing required parameters are absent from `bound` and reported.
    """
    diags: list[Diagnostic] = []
    bound: dict[str, object] = {}
    args = list(call.args)
    if sig.arrow:
        if not args or not isinstance(args[0], n.Arrow):
            where = args[0].span if args else call.span
            diags.append(Diagnostic("E0201", f"`{sig.name}` takes `{' -> '.join(sig.arrow_names)}` first", where, help=sig.usage_help()))
            return bound, diags
        arrow = args.pop(0)
        if len(arrow.points) != sig.arrow:
            diags.append(Diagnostic("E0201", f"`{sig.name}` takes {sig.arrow} waypoints (`{' -> '.join(sig.arrow_names)}`), got {len(arrow.points)}", arrow.span, help=sig.usage_help()))
            return bound, diags
        bound["arrow"] = arrow.points
    for arg in args:
        if isinstance(arg, n.Arrow):
            diags.append(Diagnostic("E0202", f"`{sig.name}` does not take an `a -> b` argument here", arg.span, help=sig.usage_help()))
    positional = [a for a in args if not isinstance(a, n.Arrow)]
    if len(positional) > len(sig.params):
        extra = positional[len(sig.params)]
        most = f"`{sig.name}` takes at most {len(sig.params)} argument{'s' * (len(sig.params) != 1)}"
        diags.append(Diagnostic("E0201", most + (" after the arrow" if sig.arrow else f", got {len(positional)}"), extra.span, help=sig.usage_help()))
    for param, arg in zip(sig.params, positional):
        bound[param.name] = arg
    accepted = [p.name for p in sig.params]
    for kw in call.kwargs:
        key = kw.name.id
        if key not in accepted:
            diags.append(Diagnostic("E0106", f"`{sig.name}` has no argument `{key}`", kw.name.span, help=did_you_mean(key, accepted), notes=(sig.parameters_note(),)))
        elif key in bound:
            diags.append(Diagnostic("E0214", f"argument `{key}` of `{sig.name}` given twice", kw.span))
        else:
            bound[key] = kw.value
    for param in sig.params:
        if param.name not in bound and not param.required:
            bound[param.name] = param.default
    return bound, diags + missing_arguments(sig, bound, call.span)


def missing_arguments(sig: CallSignature, bound: dict, span: n.Span) -> list[Diagnostic]:
    """E0201 for each required parameter of `sig` not in `bound` (an optimizer named without a call: `{}`)."""
    return [Diagnostic("E0201", f"`{sig.name}` is missing its argument `{p.name}`", span, help=sig.missing_help(p)) for p in sig.params if p.required and p.name not in bound]


# ---------------------------------------------------------------- optimizers


def optimizer_members(opt) -> list:
    """The transformations an optimizer chains (nested chains flattened); [opt] when it is not a chain.
    A `$placeholder` member (an optax object, bound from Python) is kept: nothing is known of it."""
    if isinstance(opt, n.Call) and opt.func.id == catalog.CHAIN:
        return [m for arg in opt.args if isinstance(arg, CHAIN_MEMBER) for m in optimizer_members(arg)]
    return [opt]


# what `chain(...)` takes: a transformation by name or call, or a `$placeholder` bound to an optax object
CHAIN_MEMBER = (n.Name, n.Call, n.Placeholder)


def optimizer_name(opt) -> str:
    """The optax name an `optimizer` value gives (a name or a call); the default when there is none."""
    if opt is None:
        return catalog.DEFAULT_OPTIMIZER
    if isinstance(opt, n.Call):
        return opt.func.id
    if isinstance(opt, n.Name):
        return opt.id
    return "?"


def needs_learning_rate(opt) -> bool:
    """Whether some member of `opt` requires a learning rate it is not given."""
    for member in optimizer_members(opt):
        params = catalog.transform_params(optimizer_name(member))
        if not params or params[0][0] != "learning_rate" or params[0][1]:
            continue
        if isinstance(member, n.Call) and (member.args or any(k.name.id == "learning_rate" for k in member.kwargs)):
            continue  # learning_rate given to the transformation itself
        return True
    return False


def free_names(expr) -> list:
    """The Name and Placeholder nodes of `expr` that stand for values (not callee, keyword or symbol names)."""
    words = set()
    for node in n.walk(expr):
        if isinstance(node, n.Call):
            words.add(id(node.func))
            words.update(id(kw.name) for kw in node.kwargs)
            sig = catalog.SCHEDULES.get(node.func.id)
            if sig is not None:
                bound, _ = bind(sig, node)
                words.update(id(bound.get(p.name)) for p in sig.params if p.kind == "symbol")
    return [node for node in n.walk(expr) if isinstance(node, n.Placeholder) or (isinstance(node, n.Name) and id(node) not in words)]


def check_schedule(expr, steps: int | None, role: Role | None = LEARNING_RATE) -> list[Diagnostic]:
    """The shape problems of a closed, well-typed schedule expression used in a span of `steps` steps.

    Args:
        expr: the expression, `let` names and placeholders already substituted
            (names left in it are skipped: the caller reports them).
        steps: the length of the enclosing phase, or None when unknown (then
            checks that need it, such as percentages of the phase, are skipped).
        role: what the value is, from where it is used (`LEARNING_RATE`, an
            `optimizer_role`), or None when nothing constrains its levels.

    Returns:
        The diagnostics, in source order.
    """
    diags: list[Diagnostic] = []
    ArgumentChecker(diags).shape(expr, steps, role)
    return diags


# ---------------------------------------------------------------- the checker


class ArgumentChecker:
    """Checks values in their places, appending to `diags`.

    Args:
        diags: where findings go.
        lets: the first definition of each `let` (a name still in a value after substitution
            is then used before its definition).
        lost_lets: names of lets in items lost to syntax errors (their uses are not reported).
        oversized: names of lets too large once substituted (reported at their definition only).
        closed: a node with the `let` environment substituted (one object per source node).
        opaque_placeholders: placeholders may be bound to values no check can see into.
        unit: what durations count in messages: "step", or "epoch" when a phase and its
            schedules are all in epochs (check.data reads them in epochs).
    """

    def __init__(
        self, diags: list, lets: dict | None = None, lost_lets: frozenset = frozenset(), closed=None, opaque_placeholders: bool = False, oversized: frozenset = frozenset(), unit: str = "step"
    ):
        self.diags = diags
        self.unit = unit
        self.lets = lets or {}
        self.lost_lets = lost_lets
        self.oversized = oversized
        self.closed = closed or (lambda expr: expr)
        self.opaque_placeholders = opaque_placeholders
        self._typed: dict[tuple[int, str], tuple[object, bool]] = {}  # (id(node), kind) -> (node, well-typed)
        self._bound: dict[int, tuple[object, dict]] = {}  # id(call) -> (call, bound arguments)
        self._seen: dict[tuple, object] = {}  # a shape check's inputs -> its node (kept alive: ids stay unique)
        self._folded: dict = {}  # constant folding of shared subexpressions, once per file

    def _error(self, code: str, message: str, span: n.Span, **kw) -> bool:
        self.diags.append(Diagnostic(code, message, span, **kw))
        return False

    def _error_once(self, node, check: str, code: str, message: str, span: n.Span, **kw) -> bool:
        """An error about `node` that does not depend on where the node is used: reported the first
        time; False (not well-formed) every time."""
        if self._first(node, check):
            self._error(code, message, span, **kw)
        return False

    def _first(self, node, *inputs) -> bool:
        """True the first time a check meets `node` with these inputs."""
        key = (id(node),) + inputs
        if key in self._seen:
            return False
        self._seen[key] = node
        return True

    # ---- values in their places

    def expression(self, expr, kind: str) -> bool:
        """Type-check `expr` (lets substituted) as a value of `kind`; True when it is well-formed.

        kinds: those of catalog.ArgSpec, plus "any" (a `let` value: only its parts are
        checked), "init" (a number or nested list of numbers) and "string". An expression
        larger than MAX_EXPR_NODES once its `let`s are substituted is refused (E0005) unread.
        """
        if tree_size(expr) > MAX_EXPR_NODES:
            if self._first(expr, "size"):
                message = f"this expression has more than {MAX_EXPR_NODES} nodes once the `let`s in it are substituted"
                self.diags.append(beyond_limits(message, expr.span, help="split it, or compute it in Python and pass it as a `$placeholder`"))
            return False
        return self._check(expr, kind)

    def value(self, expr, kind: str = "number"):
        """The constant value of a well-formed `expr`, or None (reported, or an opaque placeholder)."""
        return constant(expr) if self.expression(expr, kind) else None

    def learning_rate(self, expr, steps: int | None) -> None:
        """A phase's, a group's or the `lr` directive's learning rate (closed), in a span of `steps`:
        a number or a schedule, maybe times `plateau(...)`."""
        if not self._well_formed_lr(expr):
            return
        schedule, _ = plateau_factor(expr)
        if schedule is not None and constant(schedule) is None:
            self._schedule(schedule, steps, LEARNING_RATE)

    def _well_formed_lr(self, expr) -> bool:
        """Type-check a learning rate (`E`, `E * plateau(...)`); E0204 when it is a negative constant."""
        rest, plateau = plateau_factor(expr)
        if plateau is not None:
            return self._plateau(plateau) and (rest is None or self._well_formed_lr(rest))
        if not self.expression(expr, "schedule"):
            return False
        value = constant(expr)
        if value is not None and LEARNING_RATE.violated(value):
            self._whole_level(expr, value, LEARNING_RATE)
            return False
        return True

    def _plateau(self, call: n.Call) -> bool:
        """`plateau(...)`: optax.contrib.reduce_on_plateau's arguments, constant numbers in its ranges
        (its `on=val.M` is the phase's evaluations' business: check.data)."""
        sig = catalog.optimizer_signature(PLATEAU_TRANSFORM, PLATEAU)
        call, _ = plateau_metric(call)
        bound, ok = self._bind(sig, call)
        for spec in sig.params:
            arg = bound.get(spec.name)
            if not isinstance(arg, _EXPR):
                continue
            if not self.expression(arg, "number"):
                ok = False
                continue
            value = constant(arg)
            check = _PLATEAU_RANGES.get(spec.name)
            if value is not None and check is not None and not check[0](value):
                ok = False
                if self._first(arg, "plateau", spec.name):
                    self._error("E0213", f"`{spec.name}` of `plateau` {check[1]}, got {_show(value)}", arg.span, notes=("the semantics of optax.contrib.reduce_on_plateau",))
        return ok

    def optimizer(self, opt, steps: int | None) -> None:
        """An `optimizer` value as written, used in a span of `steps`: an optax optimizer or
        transformation by name or call, or `chain(T1, T2, ...)` of them."""
        if isinstance(opt, n.Placeholder):  # bound to optimizer text: checked as written there; to an object: where it is bound
            opt = self.closed(opt)
            if not isinstance(opt, (n.Name, n.Call)):
                return
        if not (isinstance(opt, n.Call) and opt.func.id == catalog.CHAIN):
            self._transform(opt, steps)
            return
        if self._first(opt, "chain"):
            for kw in opt.kwargs:
                self._error("E0106", "`chain` takes no keyword arguments", kw.name.span, help="write `chain(T1, T2, ...)`: the transformations in the order optax applies them")
            if not opt.args:
                self._error("E0201", "`chain` needs at least one transformation", opt.span, help="e.g. `chain(clip_by_global_norm(1.0), adam)`")
            for member in opt.args:
                if not isinstance(member, CHAIN_MEMBER):
                    self._error("E0202", f"a `chain` member is an optax transformation (`clip(1.0)`, `adam`, or `$opt` bound to an optax object), got {describe(member)}", member.span)
        for member in opt.args:
            if isinstance(member, CHAIN_MEMBER):
                self.optimizer(member, steps)

    def _transform(self, opt, steps: int | None) -> None:
        """One optax optimizer or transformation: its name, then its arguments against optax's signature."""
        name = optimizer_name(opt)
        sig = catalog.optimizer_signature(name)
        if sig is None:
            if self._first(opt, "unknown optimizer"):
                self._unknown_optimizer(opt, name)
            return
        if not isinstance(opt, n.Call):
            if self._first(opt, "missing"):
                self.diags.extend(missing_arguments(sig, {}, opt.span))
            return
        bound, _ = self._bind(sig, opt)
        for spec in sig.params:
            arg = bound.get(spec.name)
            if isinstance(arg, _EXPR):
                self._optimizer_argument(sig.name, spec, self.closed(arg), steps)

    def _unknown_optimizer(self, opt, name: str) -> None:
        where = opt.func.span if isinstance(opt, n.Call) else opt.span
        notes = ("optimizers: " + ", ".join(sorted(catalog.OPTIMIZERS)), "transformations (in `chain(...)`): " + ", ".join(sorted(catalog.TRANSFORMS)))
        if name == PLATEAU:
            notes = ("`plateau(...)` is a factor of the learning rate: `lr 1e-3 * plateau(factor=0.5)`",)
        elif (why := catalog.left_out_because(name)) is not None:
            notes = (f"optax's `{name}` is left out of the language: {why}",)
        candidates = list(catalog.OPTIMIZERS) + list(catalog.TRANSFORMS) + [catalog.CHAIN]
        self._error("E0105", f"unknown optimizer or transformation `{name}`", where, help=did_you_mean(name, candidates), notes=notes)

    def _optimizer_argument(self, name: str, spec: ArgSpec, value, steps: int | None) -> None:
        """One argument of an optax call, by the kind the optax table gives it; a number or schedule
        has the role its keyword gives it (`optimizer_role`)."""
        key, kind = spec.name, spec.kind
        if kind == "bool":
            self.expression(value, "bool")
        elif kind == "int":
            number = self.value(value)
            if number is not None and not _is_int(number) and self._first(value, "int", key, name):
                self._error("E0202", f"`{key}` of `{name}` takes a whole number, got {_show(number)}", value.span)
        elif kind in ("object", "dtype", "string"):
            if self._first(value, kind, key, name):
                self._optax_value(name, key, kind, value)
        elif self.expression(value, "schedule"):
            role = optimizer_role(key, name)
            level = constant(value)
            if level is None:
                self._schedule(value, steps, role)
            elif role is not None:
                self._whole_level(value, level, role)

    def _optax_value(self, name: str, key: str, kind: str, value) -> None:
        """Arguments that are not numbers: a Python object (refused), a dtype name, a string option."""
        if kind == "object":
            self._error("E0202", f"`{key}` of `{name}` takes a Python object (a mask, a function, a tuple): it cannot be given in a schedule file", value.span, help="leave it out (optax's default), or build the optimizer in Python")
        elif kind == "dtype":
            if not (isinstance(value, n.Name) and value.id in catalog.DTYPES):
                got = f"`{value.id}`" if isinstance(value, n.Name) else describe(value)
                help = did_you_mean(value.id, catalog.DTYPES) if isinstance(value, n.Name) else None
                self._error("E0202", f"`{key}` of `{name}` takes a dtype name, got {got}", value.span, help=help, notes=("dtypes: " + ", ".join(catalog.DTYPES),))
        elif not isinstance(value, (n.Name, n.String)):
            self._wrong(value, "symbol")

    def patience(self, expr) -> None:
        """`for N evals` of `stop when val.M stops improving`: a whole number of evaluations >= 1."""
        value = constant(expr)
        if value is not None and (not _is_int(value) or value < 1):
            self._error("E0213", f"the patience must be a whole number of evaluations >= 1, got {value:g}", expr.span)

    def accumulate(self, expr) -> None:
        """`accumulate N`: a whole number of steps >= 1 (optax.MultiSteps' every_k_schedule)."""
        value = self.value(expr)
        if value is not None and (not _is_int(value) or value < 1):
            self._error("E0213", f"`accumulate` takes a whole number of steps >= 1, got {_show(value)}", expr.span, help="`accumulate 4` updates once every 4 steps with the mean gradient")

    def ema(self, expr) -> None:
        """`ema DECAY`: 0 <= decay < 1."""
        value = self.value(expr)
        if value is not None and not 0 <= value < 1:
            self._error("E0213", f"an `ema` decay must be in [0, 1), got {_show(value)}", expr.span, help="e.g. `ema 0.999`: each update moves the average 0.1% of the way")

    def lr_not_taken(self, opt, lr: n.Expr) -> None:
        """E0106 when a phase gives `lr` to an optimizer none of whose members takes a learning rate."""
        members = optimizer_members(opt)
        if not all(catalog.is_transform(optimizer_name(m)) for m in members):
            return
        if any(p[0] == "learning_rate" for m in members for p in catalog.transform_params(optimizer_name(m))):
            return
        chain = isinstance(opt, n.Call) and opt.func.id == catalog.CHAIN
        what = "no member of `chain(...)` takes a learning rate" if chain else f"`{optimizer_name(opt)}` takes no learning rate"
        self._error("E0106", f"{what}, but this phase gives one", lr.span, help="remove `lr ...` from the phase, or add a transformation that takes one (`scale_by_learning_rate`)")

    def distribution(self, call: n.Call) -> None:
        """An init distribution: its name, arguments, and the ranges of std and uniform bounds."""
        name = call.func.id
        sig = catalog.DISTRIBUTIONS.get(name)
        if sig is None:
            self._error("E0107", f"unknown distribution `{name}`", call.func.span, help=did_you_mean(name, catalog.DISTRIBUTIONS), notes=("distributions: " + ", ".join(f"`{d}`" for d in catalog.DISTRIBUTIONS),))
            return
        call = self.closed(call)
        bound, _ = self._bind(sig, call)
        # parameter -> its value (None when unknown or reported), defaults included
        values = {p.name: self.value(bound[p.name]) if isinstance(bound.get(p.name), _EXPR) else bound.get(p.name) for p in sig.params}
        if name == "normal" and values["std"] is not None and values["std"] <= 0:
            self._error("E0205", f"the standard deviation must be > 0, got {_show(values['std'])}", bound["std"].span)
        if name == "uniform" and None not in (values["low"], values["high"]) and values["low"] >= values["high"]:
            where = bound["high"] if isinstance(bound["high"], _EXPR) else call
            self._error("E0206", f"`uniform` needs low < high, got low={_show(values['low'])}, high={_show(values['high'])}", where.span)

    def seed(self, expr) -> None:
        seed = self.value(expr)
        if seed is None:
            return
        if not _is_int(seed):
            self._error("E0202", f"`seed` must be an integer, got {_show(seed)}", expr.span)
        elif seed not in catalog.SEEDS:
            self._error("E0210", f"`seed` is out of range (a signed 64-bit integer, {catalog.SEEDS.start} to {catalog.SEEDS.stop - 1})", expr.span)

    def stop_threshold(self, metric: str, expr) -> None:
        value = self.value(expr)
        if value is not None and metric == "loss_change" and value <= 0:
            self._error("E0213", f"a `loss_change` threshold must be > 0 (the change is never below {_show(value)})", expr.span)

    def stop_window(self, word: str, expr, least: int) -> None:
        """`over N` / `after M` of a stop rule: a whole number of steps, at least `least`."""
        value = self.value(expr)
        if value is None:
            return
        if not _is_int(value):
            self._error("E0202", f"`{word}` takes a whole number of steps, got {_show(value)}", expr.span)
        elif value < least:
            self._error("E0213", f"`{word}` must be >= {least}, got {value}", expr.span)
        elif word == "over" and value > catalog.MAX_STOP_WINDOW:
            self._error("E0213", f"`over` is at most {catalog.MAX_STOP_WINDOW} steps, got {value}", expr.span, notes=("the rule keeps a window of this many losses in memory",))

    def shape(self, expr, steps: int | None, role: Role | None) -> None:
        """The shape pass alone, on a closed expression (`check_schedule`)."""
        self._schedule_at(expr, steps, role)

    def _schedule(self, expr, steps: int | None, role: Role | None) -> None:
        """The shape pass over a well-typed schedule, unless an opaque placeholder hides part of it."""
        if self.opaque_placeholders and any(isinstance(node, n.Placeholder) for node in n.walk(expr)):
            return
        self._schedule_at(expr, steps, role)

    def _whole_level(self, expr, value, role: Role) -> None:
        if role.violated(value) and self._first(expr, "whole", role):
            self.diags.append(role.diagnostic(expr, value, whole=True))

    # ---- the type pass

    def _check(self, expr, kind: str) -> bool:
        key = (id(expr), kind)
        done = self._typed.get(key)
        if done is None:
            done = self._typed[key] = (expr, self._check_node(expr, kind))
        return done[1]

    def _check_node(self, expr, kind: str) -> bool:
        if isinstance(expr, n.Placeholder):
            return True  # unbound: reported once as E0110; bound to an opaque object: unknowable
        if isinstance(expr, n.Name):
            return self._name(expr, kind)
        if isinstance(expr, n.Number):
            if not _finite(expr.value):
                return self._error_once(expr, "finite", "E0210", f"`{expr.text}` is not a finite float32 number", expr.span, help=f"numbers must lie within ±{catalog.MAX_NUMBER:.4g}")
            if underflows(expr.text):
                return self._error_once(expr, "finite", "E0210", f"`{expr.text}` is too small to represent: it would silently become 0", expr.span, help="write 0 if zero is meant")
            if kind not in ("any", "number", "schedule", "duration", "init"):
                return self._wrong(expr, kind)
            if kind == "duration" and (not _is_int(expr.value) or expr.value < 0):
                return self._error("E0202", f"a duration is a whole number of steps or a percentage, got `{expr.text}`", expr.span)
            return True
        if isinstance(expr, (n.BinOp, n.UnaryOp)):
            return self._arith(expr, kind)
        if isinstance(expr, n.Percent):
            if not math.isfinite(expr.value):
                return self._error_once(expr, "finite", "E0210", f"`{expr.text}` is not a finite percentage", expr.span)
            return kind in ("any", "duration") or self._wrong(expr, kind)
        if isinstance(expr, n.Epochs):
            ok = kind in ("any", "duration") or self._wrong(expr, kind)
            return self._check(expr.count, "number") and ok
        if isinstance(expr, n.Call):
            return self._call(expr, kind)
        if isinstance(expr, n.Then):
            ok = kind in ("any", "schedule") or self._wrong(expr, kind)
            ok = self._all([(piece, "schedule") for piece in expr.pieces] + [(d, "duration") for d in expr.durations]) and ok
            return ok
        if isinstance(expr, n.Arrow):
            if kind == "any":
                return self._all([(p, "number") for p in expr.points])
            return self._wrong(expr, kind, help="an `a -> b` range is the first argument of a schedule, e.g. `linear(a -> b)`")
        if isinstance(expr, n.List):
            ok = kind in ("any", "list", "init") or self._wrong(expr, kind)
            items = [(item, "init" if kind == "init" else "duration" if isinstance(item, n.Percent) else "number") for item in expr.items]
            return self._all(items) and ok
        if isinstance(expr, n.Map):
            ok = kind in ("any", "map") or self._wrong(expr, kind)
            return self._all([pair for e in expr.entries for pair in ((e.key, "duration"), (e.value, "number"))]) and ok
        if isinstance(expr, n.String):
            return kind in ("any", "string") or self._wrong(expr, kind)
        if isinstance(expr, n.Bool):
            return kind in ("any", "bool") or self._wrong(expr, kind)
        return True

    def _all(self, checks) -> bool:
        """Check every (node, kind), all of them even after a failure."""
        results = [self._check(node, kind) for node, kind in checks]
        return all(results)

    def _wrong(self, expr, kind: str, help: str | None = None) -> bool:
        return self._error("E0202", f"expected {_EXPECTED[kind]}, got {describe(expr)}", expr.span, help=help)

    def _name(self, name: n.Name, kind: str) -> bool:
        """E0101, whatever the kind: a name inside a shared value is met once per kind it is used as."""
        if name.id in self.oversized:
            return True  # reported once at its `let`
        if name.id in self.lets:  # still a Name: a let used before its definition
            if self._first(name, "name"):
                self.diags.append(names.used_before_definition(name, self.lets[name.id]))
            return False
        if kind == "symbol" or name.id in self.lost_lets:
            return True  # a symbol is checked by _call; a lost let's syntax error was reported
        if self._first(name, "name"):
            self.diags.append(names.undefined_name(name, list(self.lets)))
        return False

    def _arith(self, expr, kind: str) -> bool:
        operands = (expr.operand,) if isinstance(expr, n.UnaryOp) else (expr.left, expr.right)
        inner = kind if kind in ("schedule", "any", "number") else "number"
        if not self._all([(operand, inner) for operand in operands]):
            return False
        value = constant(expr, self._folded)
        if value is None and any(isinstance(node, n.Placeholder) for node in n.walk(expr)):
            return True  # arithmetic on an unknown `$name` (`10 * $k`): unknown too, checked once it is bound
        if value is None:
            return kind in ("schedule", "any") or self._wrong(expr, kind)
        if isinstance(expr, n.BinOp) and _divides_by_zero(expr, self._folded):
            return self._error_once(expr, "evaluates", "E0210", "division by zero" if expr.op == "/" else "zero raised to a negative power", expr.span)
        if not _finite(value):
            return self._error_once(expr, "evaluates", "E0210", f"this evaluates to {_show(value)}, not a finite float32 number", expr.span)
        if kind == "duration" and (not _is_int(value) or value < 0):
            return self._error("E0202", f"a duration is a whole number of steps or a percentage, got {_show(value)}", expr.span)
        return kind in ("any", "number", "schedule", "duration", "init") or self._wrong(expr, kind)

    def _call(self, call: n.Call, kind: str) -> bool:
        sig = catalog.SCHEDULES.get(call.func.id)
        if sig is None:
            self._unknown_schedule(call)
            self._all([(arg, "any") for arg in call.args] + [(kw.value, "any") for kw in call.kwargs])
            return False
        ok = kind in ("any", "schedule") or self._wrong(call, kind)
        bound, matched = self._bind(sig, call)
        ok = self._all([(point, "number") for point in bound.get("arrow", ())]) and matched and ok
        for p in sig.params:
            arg = bound.get(p.name)
            if not isinstance(arg, _EXPR):
                continue
            ok = self._check(arg, p.kind) and ok
            if p.kind == "symbol" and isinstance(arg, n.Name) and arg.id not in p.choices:
                ok = self._error("E0202", f"`{p.name}` of `{sig.name}` must be one of {', '.join(f'`{c}`' for c in p.choices)}, got `{arg.id}`", arg.span, help=did_you_mean(arg.id, p.choices))
            elif p.kind == "symbol" and not isinstance(arg, n.Name):
                ok = self._wrong(arg, "symbol")
        return ok

    def _unknown_schedule(self, call: n.Call) -> None:
        """E0104, at the callee's name: a `let` value's copies at its uses share it."""
        if not self._first(call.func, "unknown schedule"):
            return
        name = call.func.id
        notes = ()
        if name in catalog.DISTRIBUTIONS:
            notes = (f"`{name}` is a distribution: use it in `init P ~ {name}(...)`",)
        elif catalog.is_transform(name):
            notes = (f"`{name}` is an optax transformation: use it after `optimizer`",)
        elif name == PLATEAU:
            notes = ("`plateau(...)` is a factor of a learning rate, `lr E * plateau(...)`, not part of a schedule",)
        self._error("E0104", f"unknown schedule `{name}`", call.func.span, help=did_you_mean(name, catalog.SCHEDULES), notes=notes)

    def _bind(self, sig: CallSignature, call) -> tuple[dict, bool]:
        """`bind`, reporting its problems once; (bound, matched cleanly).

        A `let` value used somewhere is a copy of the call placed at the use (`substitute` respans
        it) sharing its arguments: a problem with the call as a whole is reported at each copy,
        a problem with one of its arguments once.
        """
        done = self._bound.get(id(call))
        if done is None:
            bound, diags = bind(sig, call)
            whole = self._first(call, "bind")
            parts = self._first(call.func, "bind")
            self.diags.extend(d for d in diags if (whole if d.span == call.span else parts))
            done = self._bound[id(call)] = (call, bound, not diags)
        return done[1], done[2]

    # ---- the shape pass (`level`: the role of the values here when they are the schedule's output level)

    def _finite(self, expr) -> bool:
        """E0210 for a non-finite or out-of-float32-range constant, reported at its innermost cause."""
        value = constant(expr)
        if value is None or _finite(value):
            return True
        children = (expr.operand,) if isinstance(expr, n.UnaryOp) else (expr.left, expr.right) if isinstance(expr, n.BinOp) else ()
        if all(self._finite(c) for c in children) and self._first(expr, "finite"):
            what = f"`{expr.text}` is" if isinstance(expr, n.Number) else f"this evaluates to {_show(value)}, which is"
            self._error("E0210", f"{what} not a finite float32 number", expr.span, help=f"numbers must lie within ±{catalog.MAX_NUMBER:.4g}")
        return False

    def _level(self, expr, value, level: Role) -> None:
        if self._first(expr, "level", level):
            self.diags.append(level.diagnostic(expr, value, whole=False))

    def _constraint(self, param: ArgSpec, expr, value, owner: str, unit: str = "") -> None:
        if param.check is None:
            return
        ok, wanted = _CHECKS[param.check]
        if not ok(value) and self._first(expr, "constraint", param, owner, unit):
            self._error("E0213", f"{_arg(param, owner)} must be {wanted}, got {_show(value)}{unit}", expr.span)

    def _constant(self, expr, param: ArgSpec, owner: str, kind: str, wanted: str):
        """The finite constant value of an argument, or None: E0202 (once) when it is not constant,
        E0210 (`_finite`) when it is out of range."""
        value = constant(expr)
        if value is None:
            if self._first(expr, kind, param, owner):
                self._error("E0202", f"{_arg(param, owner)} must be {wanted}, got {describe(expr)}", expr.span)
            return None
        return value if self._finite(expr) else None

    def _number(self, expr, param: ArgSpec, owner: str, level: Role | None = None) -> float | None:
        """A `number` argument: its value when it is a valid constant."""
        if isinstance(expr, (n.Name, n.Placeholder)):
            return None
        value = self._constant(expr, param, owner, "number", "a number")
        if value is None:
            return None
        if level is not None and level.violated(value):
            self._level(expr, value, level)
        else:
            self._constraint(param, expr, value, owner)
        return value

    def _duration(self, expr, param: ArgSpec, owner: str, span: int | None) -> int | None:
        """A `duration` argument: whole steps (resolved against `span`) when valid and known
        (`N epochs` is known only once the data is: the runtime checks it again then)."""
        if isinstance(expr, (n.Name, n.Placeholder, n.Epochs)):
            return None
        negated = isinstance(expr, n.UnaryOp) and expr.op == "-" and isinstance(expr.operand, n.Percent)
        if isinstance(expr, n.Percent) or negated:
            pct = -percent_fraction(expr.operand) if negated else percent_fraction(expr)
            if not 0 <= pct <= 1:
                if self._first(expr, "percent", param, owner):
                    self._error("E0209", f"{_arg(param, owner)} is {_show(float(pct * 100))}% of its span; a percentage must be within 0..100%", expr.span)
                return None
            steps = duration_steps(expr, span)
            if steps is not None and param.check == "positive" and steps == 0 and self._first(expr, "rounds", param, owner, span):
                self._error("E0213", f"{_arg(param, owner)} is {expr.text} of {span} steps, which rounds down to 0 steps", expr.span, help="use a larger percentage or a step count")
            return steps
        value = self._constant(expr, param, owner, "steps", "a step count or a percentage")
        if value is None:
            return None
        if value != int(value):
            if self._first(expr, "steps", param, owner):
                self._error("E0202", f"{_arg(param, owner)} must be a whole number of steps, got {_show(value)}", expr.span)
            return None
        if value > catalog.MAX_STEPS:
            if self._first(expr, "steps", param, owner):
                self._error("E0210", f"{_arg(param, owner)} is beyond the largest step count ({catalog.MAX_STEPS})", expr.span)
            return None
        self._constraint(param, expr, value, owner, " steps")
        return int(value) if value >= 0 else None

    def _boundaries(self, keys: list[tuple[object, int | None]], owner: str, what: str) -> None:
        """E0208 at the first key not after its predecessor (keys already resolved to steps)."""
        previous = None
        for expr, steps in keys:
            if steps is None:
                continue
            if previous is not None and steps <= previous:
                if self._first(expr, "order", steps, previous, owner, what):
                    self._error("E0208", f"{what} of `{owner}` must increase: {steps} comes after {previous}", expr.span, help="list them in increasing order, each once")
                return
            previous = steps

    def _schedule_at(self, expr, span: int | None, level: Role | None) -> None:
        """An expression used as a schedule in a span of `span` steps."""
        if isinstance(expr, (n.Name, n.Placeholder)) or not self._first(expr, "schedule", span, level):
            return
        value = constant(expr)
        if value is not None:
            if self._finite(expr) and level is not None and level.violated(value):
                self._level(expr, value, level)
            return
        if isinstance(expr, (n.BinOp, n.UnaryOp)):
            for operand in (expr.operand,) if isinstance(expr, n.UnaryOp) else (expr.left, expr.right):
                self._schedule_at(operand, span, None)
        elif isinstance(expr, n.Then):
            self._then(expr, span, level)
        elif isinstance(expr, n.Call):
            self._schedule_call(expr, span, level)
        elif self._first(expr, "not a schedule"):
            if isinstance(expr, n.Arrow):
                self._error("E0202", "expected a number or a schedule, got an `a -> b` range", expr.span, help="an `a -> b` range is the first argument of a schedule, e.g. `linear(a -> b)`")
            else:
                help = "a percentage is a duration; write a fraction such as 0.1 for a value" if isinstance(expr, n.Percent) else None
                self._error("E0202", f"expected a number or a schedule, got {describe(expr)}", expr.span, help=help)

    def _then(self, expr: n.Then, span: int | None, level: Role | None) -> None:
        lengths = [self._duration(d, FOR, "", span) for d in expr.durations]
        if span is not None and None not in lengths:
            total = 0
            for d, length in zip(expr.durations, lengths):
                total += length
                if total > span:
                    if self._first(d, "past the span", total, span):
                        self._error("E0212", f"the `for` durations reach {self.unit} {total}, past the end of their {span}-{self.unit} span", d.span)
                    break
            else:
                if total == span and self._first(expr, "fills the span", span):
                    self._error("E0212", f"the `for` durations fill the whole {span}-{self.unit} span, leaving nothing for the last piece", expr.durations[-1].span, help="shorten a `for` or drop the last piece")
        for piece, length in zip(expr.pieces, segments(expr, span) if None not in lengths else [None] * len(expr.pieces)):
            self._schedule_at(piece, length if length is None or length > 0 else None, level)

    def _schedule_call(self, call: n.Call, span: int | None, level: Role | None) -> None:
        name = call.func.id
        sig = catalog.SCHEDULES.get(name)
        if sig is None:
            self._unknown_schedule(call)
            return
        bound, _ = self._bind(sig, call)
        for point, point_name in zip(bound.get("arrow", ()), sig.arrow_names):
            self._number(point, ArgSpec(point_name, "number"), name, level)
        resolved: dict[str, object] = {}
        for param in sig.params:
            arg = bound.get(param.name)
            if not isinstance(arg, _EXPR):
                continue
            at_level = level if param.kind == "schedule" or param.name in _VALUE_PARAMS else None
            resolved[param.name] = self._argument(arg, param, name, span, at_level)
        self._across_arguments(sig, bound, resolved, span, call, level)

    def _argument(self, arg, param: ArgSpec, owner: str, span: int | None, level: Role | None):
        if param.kind == "number":
            return self._number(arg, param, owner, level)
        if param.kind == "duration":
            return self._duration(arg, param, owner, span)
        if param.kind == "schedule":
            # sgdr's schedule runs on the period, checked by `_across_arguments`
            if owner != "sgdr":
                self._schedule_at(arg, span, level)
            return None
        if param.kind == "bool":
            if not isinstance(arg, n.Bool) and self._first(arg, "bool", param, owner):
                self._error("E0202", f"{_arg(param, owner)} must be `true` or `false`, got {describe(arg)}", arg.span)
            return None
        if param.kind == "symbol":
            if (not isinstance(arg, n.Name) or arg.id not in param.choices) and self._first(arg, "symbol", param, owner):
                got = f"`{arg.id}`" if isinstance(arg, n.Name) else describe(arg)
                help = did_you_mean(arg.id, param.choices) if isinstance(arg, n.Name) else None
                self._error("E0202", f"{_arg(param, owner)} must be one of {', '.join(f'`{c}`' for c in param.choices)}, got {got}", arg.span, help=help)
            return None
        if param.kind == "map":
            return self._map(arg, param, owner, span)
        if param.kind == "list":
            return self._list(arg, param, owner, span, level)
        raise AssertionError(f"unknown parameter kind {param.kind!r}")

    def _map(self, arg, param: ArgSpec, owner: str, span: int | None):
        if not isinstance(arg, n.Map):
            if self._first(arg, "map", param, owner):
                self._error("E0202", f"{_arg(param, owner)} must be a map `{{step: scale, ...}}`, got {describe(arg)}", arg.span)
            return None
        key_param = ArgSpec("boundary", "duration", check="nonneg")
        scale_param = ArgSpec("scale", "number", check="nonneg")
        keys = [(e.key, self._duration(e.key, key_param, owner, span)) for e in arg.entries]
        for e in arg.entries:
            self._number(e.value, scale_param, owner)
        self._boundaries(keys, owner, "the boundaries")
        return None

    def _list(self, arg, param: ArgSpec, owner: str, span: int | None, level: Role | None):
        if not isinstance(arg, n.List) or not arg.items:
            if self._first(arg, "list", param, owner):
                if not isinstance(arg, n.List):
                    self._error("E0202", f"{_arg(param, owner)} must be a list `[...]`, got {describe(arg)}", arg.span)
                else:
                    self._error("E0213", f"{_arg(param, owner)} must not be empty", arg.span)
            return None
        if param.name == "at":  # points in time
            point = ArgSpec("point", "duration", check="nonneg")
            self._boundaries([(i, self._duration(i, point, owner, span)) for i in arg.items], owner, "the points")
        else:
            item = ArgSpec("item", "number")
            for i in arg.items:
                self._number(i, item, owner, level)
        return None

    def _across_arguments(self, sig: CallSignature, bound: dict, resolved: dict, span: int | None, call: n.Call, level: Role | None) -> None:
        """Checks across arguments: warmups against their horizon, one-cycle fractions, sgdr periods."""
        name = sig.name
        if name.startswith("warmup_") and resolved.get("warmup") is not None:
            given = isinstance(bound.get("steps"), _EXPR)  # only warmup_cosine has `steps`; the others span it all
            horizon = resolved.get("steps") if given else span
            warmup = resolved["warmup"]
            what = "its `steps`" if given else "the span"
            if horizon is not None and warmup >= horizon and self._first(bound["warmup"], "warmup", warmup, horizon, what):
                self._error("E0207", f"the warmup of `{name}` ({warmup} {self.unit}s) is not shorter than {what} ({horizon} {self.unit}s)", bound["warmup"].span, help="shorten the warmup or lengthen the schedule")
        if name == "linear_onecycle":
            start, final = resolved.get("pct_start", _default(sig, "pct_start")), resolved.get("pct_final", _default(sig, "pct_final"))
            if start is not None and final is not None and final <= start:
                where = bound["pct_final"] if isinstance(bound.get("pct_final"), _EXPR) else call
                if self._first(where, "onecycle", start, final):
                    self._error("E0208", f"`pct_final` ({_show(final)}) of `linear_onecycle` must be after `pct_start` ({_show(start)})", where.span)
        if name == "sgdr" and isinstance(bound.get("schedule"), _EXPR):
            period = resolved.get("period")
            self._schedule_at(bound["schedule"], period if period else None, level)


# ---------------------------------------------------------------- small utilities


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _finite(value) -> bool:
    return math.isfinite(value) and abs(value) <= catalog.MAX_NUMBER


# optax.contrib.reduce_on_plateau's arguments: (within range, what the message says otherwise)
_PLATEAU_RANGES = {
    "factor": (lambda v: 0 < v < 1, "must be in (0, 1)"),
    "rtol": (lambda v: 0 <= v <= 1, "must be in [0, 1]"),
    "atol": (lambda v: v >= 0, "must be >= 0"),
    "patience": (lambda v: _is_int(v) and v >= 0, "must be a whole number >= 0"),
    "cooldown": (lambda v: _is_int(v) and v >= 0, "must be a whole number >= 0"),
    "accumulation_size": (lambda v: _is_int(v) and v >= 1, "must be a whole number >= 1"),
    "min_scale": (lambda v: 0 <= v <= 1, "must be in [0, 1]"),
}


def _divides_by_zero(expr: n.BinOp, memo: dict) -> bool:
    """`x / 0`, or `0 ** -y` (both operands constant): reported as such rather than as "evaluates to nan"."""
    right = constant(expr.right, memo)
    if expr.op == "/":
        return right == 0
    return expr.op == "**" and constant(expr.left, memo) == 0 and right < 0


def _arg(param: ArgSpec, owner: str) -> str:
    """How messages name an argument: "`rate` of `exponential`", or "a `for` duration"."""
    return f"`{param.name}` of `{owner}`" if owner else f"a `{param.name}` duration"


def _default(sig: CallSignature, name: str):
    return next(p.default for p in sig.params if p.name == name)

