"""Expression helpers shared by the checker, the planner and the schedule lowering.

`substitute` replaces `let` names (and bound `$placeholders`) by their
definitions, so every later stage sees closed expressions; `constant` folds
arithmetic on numbers. Plain Python: no JAX.
"""

from __future__ import annotations

import math
import operator
from dataclasses import replace

from schedc.lang import nodes as n

_OPS = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv, "**": operator.pow}


def substitute(expr, env: dict[str, object]):
    """`expr` with every Name bound in `env` (and every Placeholder bound as `$name`) replaced.

    Replacement nodes keep the span of the name they replace, so diagnostics about
    the value point at the use. The expression is at most `syntax.MAX_DEPTH` deep.
    """
    if isinstance(expr, n.Name):
        value = env.get(expr.id)
        return _respan(value, expr.span) if value is not None else expr
    if isinstance(expr, n.Placeholder):
        value = env.get("$" + expr.id)
        return _respan(value, expr.span) if value is not None else expr
    if isinstance(expr, n.Call):
        return replace(expr, args=tuple(substitute(a, env) for a in expr.args), kwargs=tuple(substitute(k, env) for k in expr.kwargs))
    if isinstance(expr, n.Keyword):
        return replace(expr, value=substitute(expr.value, env))
    if isinstance(expr, n.BinOp):
        return replace(expr, left=substitute(expr.left, env), right=substitute(expr.right, env))
    if isinstance(expr, n.UnaryOp):
        return replace(expr, operand=substitute(expr.operand, env))
    if isinstance(expr, n.Arrow):
        return replace(expr, points=tuple(substitute(p, env) for p in expr.points))
    if isinstance(expr, n.Then):
        return replace(expr, pieces=tuple(substitute(p, env) for p in expr.pieces), durations=tuple(substitute(d, env) for d in expr.durations))
    if isinstance(expr, n.List):
        return replace(expr, items=tuple(substitute(i, env) for i in expr.items))
    if isinstance(expr, n.Map):
        return replace(expr, entries=tuple(replace(e, key=substitute(e.key, env), value=substitute(e.value, env)) for e in expr.entries))
    return expr


def _respan(value, span: n.Span):
    if hasattr(value, "span") and hasattr(value, "__dataclass_fields__"):
        return replace(value, span=span)
    return value


def constant(expr) -> float | int | None:
    """The value of a closed numeric expression, or None if it is not one (a schedule, a percentage, ...).

    Arithmetic errors (division by zero, overflow) give nan or inf, which the
    checker reports as non-finite numbers.
    """
    if isinstance(expr, n.Number):
        return expr.value
    if isinstance(expr, n.UnaryOp):
        value = constant(expr.operand)
        return None if value is None else (-value if expr.op == "-" else value)
    if isinstance(expr, n.BinOp):
        left, right = constant(expr.left), constant(expr.right)
        if left is None or right is None:
            return None
        try:
            # `**` in floats: an integer power like 2 ** 10 ** 10 would take forever
            result = math.pow(left, right) if expr.op == "**" else _OPS[expr.op](left, right)
        except ZeroDivisionError:
            return math.nan
        except OverflowError:
            return math.inf
        except ValueError:  # math.pow of a negative base to a fractional power
            return math.nan
        if isinstance(result, complex):
            return math.nan
        if isinstance(result, int) and abs(result) > 2**1024:
            return math.inf
        return result
    return None


def is_constant(expr) -> bool:
    return constant(expr) is not None


_KINDS = {
    n.Name: "a name",
    n.String: "a string",
    n.Bool: "a boolean",
    n.List: "a list",
    n.Map: "a map",
    n.Percent: "a percentage",
    n.Arrow: "an `a -> b` range",
    n.Then: "a `then` chain",
    n.Call: "a schedule",
}


def describe(expr) -> str:
    """How a message names the kind of an expression: "a number", "a string", "a schedule", ..."""
    if constant(expr) is not None:
        return "a number"
    return _KINDS.get(type(expr), "an expression")
