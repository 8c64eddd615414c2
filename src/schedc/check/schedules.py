"""Validation of schedule expressions, and the time model shared with the lowering.

Plain Python, no JAX: `schedc check` calls `check_schedule` for every learning
rate and scheduled optimizer hyperparameter, and `schedc.compiler.schedules` reuses
`span_of` / `duration_steps` so that what is checked is what is compiled.

Time model: a schedule is a function of the phase-local step. A duration is a
whole number of steps or a percentage of the enclosing span (the phase, the
segment of a `then` chain, or the period of `sgdr`), rounded down to whole
steps; a duration left out is the whole enclosing span.
"""

from __future__ import annotations

import math
from fractions import Fraction

from schedc.check import catalog
from schedc.lang import nodes as n
from schedc.lang.diagnostics import Diagnostic, did_you_mean
from schedc.lang.expr import constant, describe

# `S for N then T`: each N is a positive duration of the enclosing span.
FOR = catalog.Param("for", "duration", catalog.REQUIRED, "positive")

# Parameters whose value is the schedule's own output level (a negative one is a negative learning rate).
_VALUE_PARAMS = frozenset({"value", "init", "peak", "values"})

_CHECKS = {
    "positive": (lambda x: x > 0, "positive"),
    "nonneg": (lambda x: x >= 0, "non-negative"),
    "fraction": (lambda x: 0 <= x <= 1, "within [0, 1]"),
    "open_fraction": (lambda x: 0 < x < 1, "strictly between 0 and 1"),
    "ge1": (lambda x: x >= 1, "at least 1"),
}


def check_schedule(expr, steps: int | None, what: str = "lr") -> list[Diagnostic]:
    """Every problem of a closed schedule expression used in a span of `steps` steps.

    Args:
        expr: the expression, `let` names and placeholders already substituted
            (names left in it are skipped: the caller reports them).
        steps: the length of the enclosing phase, or None when unknown (then
            checks that need it, such as percentages of the phase, are skipped).
        what: "lr", or a phrase naming the value (`"the learning rate of phase 0"`,
            `"`b1` of `adam`"`); learning rates must not be negative (E0204).

    Returns:
        The diagnostics, in source order.
    """
    checker = _Checker(is_lr(what))
    checker.schedule(expr, steps, level=True)
    return checker.diags


def is_lr(what: str) -> bool:
    return what == "lr" or "learning rate" in what or "`lr`" in what or "learning_rate" in what


# ---------------------------------------------------------------- the time model


def percent_fraction(p: n.Percent) -> Fraction:
    """The exact fraction a percentage literal denotes (`12.5%` -> 1/8)."""
    try:
        return Fraction(p.text.rstrip("%").replace("_", "")) / 100
    except (ValueError, ZeroDivisionError):
        return Fraction(p.value) if math.isfinite(p.value) else Fraction(-1)


def duration_steps(expr, span: int | None) -> int | None:
    """The whole steps a (valid) duration denotes: a step count, or a percentage of `span`
    rounded down. None when it needs the span and `span` is None, or when it is not a duration.
    `expr` is a node, or a Python number (a parameter's default)."""
    if isinstance(expr, n.Percent):
        return None if span is None else math.floor(percent_fraction(expr) * span)
    if isinstance(expr, n.Epochs):
        return None
    value = expr if isinstance(expr, (int, float)) else constant(expr)  # a default, or a node
    if value is None or not math.isfinite(value):
        return None
    return int(value)


def span_of(value, span: int | None) -> int | None:
    """A duration argument as bound by `catalog.bind`: left out (None) means the whole span."""
    return span if value is None else duration_steps(value, span)


def segments(then: n.Then, span: int | None) -> list[int | None]:
    """The length of each piece of a `then` chain (the last one gets what is left)."""
    lengths = [duration_steps(d, span) for d in then.durations]
    rest = None if span is None or None in lengths else span - sum(lengths)
    return lengths + [rest]


# ---------------------------------------------------------------- the checker


def _is_node(value) -> bool:
    return hasattr(value, "span") and hasattr(value, "__dataclass_fields__")


def _arg(param: catalog.Param, owner: str) -> str:
    """How messages name an argument: "`rate` of `exponential`", or "a `for` duration"."""
    return f"`{param.name}` of `{owner}`" if owner else f"a `{param.name}` duration"


def _show(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


class _Checker:
    def __init__(self, lr: bool):
        self.lr = lr
        self.diags: list[Diagnostic] = []

    def error(self, code: str, message: str, span: n.Span, **kw) -> None:
        self.diags.append(Diagnostic(code, message, span, **kw))

    # ---- numbers

    def finite(self, expr) -> bool:
        """E0210 for a non-finite or out-of-float32-range constant, reported at its innermost cause."""
        value = constant(expr)
        if value is None or (math.isfinite(value) and abs(value) <= catalog.MAX_NUMBER):
            return True
        children = (expr.operand,) if isinstance(expr, n.UnaryOp) else (expr.left, expr.right) if isinstance(expr, n.BinOp) else ()
        if all(self.finite(c) for c in children):
            what = f"`{expr.text}` is" if isinstance(expr, n.Number) else f"this evaluates to {_show(value)}, which is"
            self.error("E0210", f"{what} not a finite float32 number", expr.span, help=f"numbers must lie within ±{catalog.MAX_NUMBER:.4g}")
        return False

    def negative_lr(self, expr, value) -> None:
        if self.lr and value < 0:
            self.error("E0204", f"negative learning rate ({_show(value)})", expr.span, help="a learning rate must be >= 0")

    def constraint(self, param: catalog.Param, expr, value, owner: str, unit: str = "") -> None:
        if param.check is None:
            return
        ok, wanted = _CHECKS[param.check]
        if not ok(value):
            self.error("E0213", f"{_arg(param, owner)} must be {wanted}, got {_show(value)}{unit}", expr.span)

    def number(self, expr, param: catalog.Param, owner: str, level: bool = False) -> float | None:
        """A `number` argument: its value when it is a valid constant."""
        if isinstance(expr, (n.Name, n.Placeholder)):
            return None
        value = constant(expr)
        if value is None:
            self.error("E0202", f"{_arg(param, owner)} must be a number, got {describe(expr)}", expr.span)
            return None
        if not self.finite(expr):
            return None
        if level and self.lr and value < 0:
            self.negative_lr(expr, value)
        else:
            self.constraint(param, expr, value, owner)
        return value

    def duration(self, expr, param: catalog.Param, owner: str, span: int | None) -> int | None:
        """A `duration` argument: whole steps (resolved against `span`) when valid and known
        (`N epochs` is known only once the data is: the runtime checks it again then)."""
        if isinstance(expr, (n.Name, n.Placeholder, n.Epochs)):
            return None
        negated = isinstance(expr, n.UnaryOp) and expr.op == "-" and isinstance(expr.operand, n.Percent)
        if isinstance(expr, n.Percent) or negated:
            pct = -percent_fraction(expr.operand) if negated else percent_fraction(expr)
            if not 0 <= pct <= 1:
                self.error("E0209", f"{_arg(param, owner)} is {_show(float(pct * 100))}% of its span; a percentage must be within 0..100%", expr.span)
                return None
            steps = duration_steps(expr, span)
            if steps is not None and param.check == "positive" and steps == 0:
                self.error("E0213", f"{_arg(param, owner)} is {expr.text} of {span} steps, which rounds down to 0 steps", expr.span, help="use a larger percentage or a step count")
            return steps
        value = constant(expr)
        if value is None:
            self.error("E0202", f"{_arg(param, owner)} must be a step count or a percentage, got {describe(expr)}", expr.span)
            return None
        if not self.finite(expr):
            return None
        if value != int(value):
            self.error("E0202", f"{_arg(param, owner)} must be a whole number of steps, got {_show(value)}", expr.span)
            return None
        if value > catalog.MAX_STEPS:
            self.error("E0210", f"{_arg(param, owner)} is beyond the largest step count ({catalog.MAX_STEPS})", expr.span)
            return None
        self.constraint(param, expr, value, owner, " steps")
        return int(value) if value >= 0 else None

    def boundaries(self, keys: list[tuple[object, int | None]], owner: str, what: str) -> None:
        """E0208 at the first key not after its predecessor (keys already resolved to steps)."""
        previous = None
        for expr, steps in keys:
            if steps is None:
                continue
            if previous is not None and steps <= previous:
                self.error("E0208", f"{what} of `{owner}` must increase: {steps} comes after {previous}", expr.span, help="list them in increasing order, each once")
                return
            previous = steps

    # ---- schedules

    def schedule(self, expr, span: int | None, level: bool) -> None:
        """An expression used as a schedule. `level`: its value is the output level (for E0204)."""
        if isinstance(expr, (n.Name, n.Placeholder)):
            return
        value = constant(expr)
        if value is not None:
            if self.finite(expr) and level:
                self.negative_lr(expr, value)
            return
        if isinstance(expr, (n.BinOp, n.UnaryOp)):
            for operand in (expr.operand,) if isinstance(expr, n.UnaryOp) else (expr.left, expr.right):
                self.schedule(operand, span, level=False)
        elif isinstance(expr, n.Then):
            self.then(expr, span, level)
        elif isinstance(expr, n.Call):
            self.call(expr, span, level)
        elif isinstance(expr, n.Arrow):
            self.error("E0202", "expected a number or a schedule, got an `a -> b` range", expr.span, help="an `a -> b` range is the first argument of a schedule, e.g. `linear(a -> b)`")
        else:
            help = "a percentage is a duration; write a fraction such as 0.1 for a value" if isinstance(expr, n.Percent) else None
            self.error("E0202", f"expected a number or a schedule, got {describe(expr)}", expr.span, help=help)

    def then(self, expr: n.Then, span: int | None, level: bool) -> None:
        lengths = [self.duration(d, FOR, "", span) for d in expr.durations]
        if span is not None and None not in lengths:
            total = 0
            for d, length in zip(expr.durations, lengths):
                total += length
                if total > span:
                    self.error("E0212", f"the `for` durations reach step {total}, past the end of their {span}-step span", d.span)
                    break
            else:
                if total == span:
                    self.error("E0212", f"the `for` durations fill the whole {span}-step span, leaving nothing for the last piece", expr.durations[-1].span, help="shorten a `for` or drop the last piece")
        for piece, length in zip(expr.pieces, segments(expr, span) if None not in lengths else [None] * len(expr.pieces)):
            self.schedule(piece, length if length is None or length > 0 else None, level)

    def call(self, call: n.Call, span: int | None, level: bool) -> None:
        name = call.func.id
        sig = catalog.SCHEDULES.get(name)
        if sig is None:
            self.error("E0104", f"unknown schedule `{name}`", call.func.span, help=did_you_mean(name, catalog.SCHEDULES))
            return
        bound, diags = catalog.bind(sig, call)
        self.diags.extend(diags)
        for point, point_name in zip(bound.get("arrow", ()), sig.arrow_names):
            self.number(point, catalog.Param(point_name, "number"), name, level)
        resolved: dict[str, object] = {}
        for param in sig.params:
            arg = bound.get(param.name)
            if not _is_node(arg):
                continue
            at_level = level if param.kind == "schedule" else level and param.name in _VALUE_PARAMS
            resolved[param.name] = self.argument(arg, param, name, span, at_level)
        self.shape(sig, bound, resolved, span, call, level)

    def argument(self, arg, param: catalog.Param, owner: str, span: int | None, level: bool):
        if param.kind == "number":
            return self.number(arg, param, owner, level)
        if param.kind == "duration":
            return self.duration(arg, param, owner, span)
        if param.kind == "schedule":
            # sgdr's schedule runs on the period, checked by `shape`
            if owner != "sgdr":
                self.schedule(arg, span, level)
            return None
        if param.kind == "bool":
            if not isinstance(arg, n.Bool):
                self.error("E0202", f"{_arg(param, owner)} must be `true` or `false`, got {describe(arg)}", arg.span)
            return None
        if param.kind == "symbol":
            if not isinstance(arg, n.Name) or arg.id not in param.choices:
                got = f"`{arg.id}`" if isinstance(arg, n.Name) else describe(arg)
                help = did_you_mean(arg.id, param.choices) if isinstance(arg, n.Name) else None
                self.error("E0202", f"{_arg(param, owner)} must be one of {', '.join(f'`{c}`' for c in param.choices)}, got {got}", arg.span, help=help)
            return None
        if param.kind == "map":
            return self.map(arg, param, owner, span)
        if param.kind == "list":
            return self.list(arg, param, owner, span, level)
        raise AssertionError(f"unknown parameter kind {param.kind!r}")

    def map(self, arg, param: catalog.Param, owner: str, span: int | None):
        if not isinstance(arg, n.Map):
            self.error("E0202", f"{_arg(param, owner)} must be a map `{{step: scale, ...}}`, got {describe(arg)}", arg.span)
            return None
        key_param = catalog.Param("boundary", "duration", check="nonneg")
        scale_param = catalog.Param("scale", "number", check="nonneg")
        keys = [(e.key, self.duration(e.key, key_param, owner, span)) for e in arg.entries]
        for e in arg.entries:
            self.number(e.value, scale_param, owner)
        self.boundaries(keys, owner, "the boundaries")
        return None

    def list(self, arg, param: catalog.Param, owner: str, span: int | None, level: bool):
        if not isinstance(arg, n.List):
            self.error("E0202", f"{_arg(param, owner)} must be a list `[...]`, got {describe(arg)}", arg.span)
            return None
        if not arg.items:
            self.error("E0213", f"{_arg(param, owner)} must not be empty", arg.span)
            return None
        if param.name == "at":  # points in time
            point = catalog.Param("point", "duration", check="nonneg")
            self.boundaries([(i, self.duration(i, point, owner, span)) for i in arg.items], owner, "the points")
        else:
            item = catalog.Param("item", "number")
            for i in arg.items:
                self.number(i, item, owner, level)
        return None

    def shape(self, sig: catalog.Signature, bound: dict, resolved: dict, span: int | None, call: n.Call, level: bool) -> None:
        """Checks across arguments: warmups against their horizon, one-cycle fractions, sgdr periods."""
        name = sig.name
        if name.startswith("warmup_") and resolved.get("warmup") is not None:
            given = _is_node(bound.get("steps"))  # only warmup_cosine has `steps`; the others span it all
            horizon = resolved.get("steps") if given else span
            warmup = resolved["warmup"]
            if horizon is not None and warmup >= horizon:
                what = "its `steps`" if given else "the span"
                self.error("E0207", f"the warmup of `{name}` ({warmup} steps) is not shorter than {what} ({horizon} steps)", bound["warmup"].span, help="shorten the warmup or lengthen the schedule")
        if name == "linear_onecycle":
            start, final = resolved.get("pct_start", _default(sig, "pct_start")), resolved.get("pct_final", _default(sig, "pct_final"))
            if start is not None and final is not None and final <= start:
                where = bound["pct_final"] if _is_node(bound.get("pct_final")) else call
                self.error("E0208", f"`pct_final` ({_show(final)}) of `linear_onecycle` must be after `pct_start` ({_show(start)})", where.span)
        if name == "sgdr" and _is_node(bound.get("schedule")):
            period = resolved.get("period")
            self.schedule(bound["schedule"], period if period else None, level)


def _default(sig: catalog.Signature, name: str):
    return next(p.default for p in sig.params if p.name == name)
