"""Expression helpers shared by the checker, the planner and the schedule lowering.

`substitute` replaces `let` names (and bound `$placeholders`) by their
definitions, so every later stage sees closed expressions; `constant` folds
arithmetic on numbers. Plain Python: no JAX.
"""

from __future__ import annotations

import math
import operator

from schedc.lang.swept import Swept
from schedc.lang import nodes as n
from schedc.lang.record import replace

_OPS = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv, "**": operator.pow}


def substitute(expr, env: dict[str, object]):
    """`expr` with every Name bound in `env` (and every Placeholder bound as `$name`) replaced.

    Replacement nodes keep the span of the name they replace, so diagnostics about
    the value point at the use. The expression is at most `syntax.MAX_DEPTH` deep.
    """

    def bound(node):
        if isinstance(node, n.Name):
            value = env.get(node.id)
        elif isinstance(node, n.Placeholder):
            value = env.get("$" + node.id)
        else:
            return None
        return _at_use(value, node.span) if value is not None else node

    return rewrite(expr, bound)


def in_steps(expr, steps_per_epoch: int):
    """`expr` (closed) with every `N epochs` duration replaced by its whole number of steps."""

    def steps(node):
        if not isinstance(node, n.Epochs):
            return None
        count = constant(node.count)
        return node if count is None else n.Number(int(round(count * steps_per_epoch)), f"{count} epochs", node.span)

    return rewrite(expr, steps)


def uses_epochs(expr) -> bool:
    """Whether a duration in `expr` is counted in epochs."""
    return expr is not None and hasattr(expr, "span") and any(isinstance(node, n.Epochs) for node in n.walk(expr))


def rewrite(expr, replace_node):
    """`expr` rebuilt with `replace_node(node)` in place of each node for which it is not None
    (replacements are not descended into). A subtree in which nothing was replaced is returned as it
    is, not copied: most expressions the checker substitutes name no `let` at all."""
    new = replace_node(expr)
    if new is not None:
        return new
    again = lambda e: rewrite(e, replace_node)  # noqa: E731
    if isinstance(expr, n.Call):
        return _rebuilt(expr, args=_each(again, expr.args), kwargs=_each(again, expr.kwargs))
    if isinstance(expr, n.Keyword):
        return _rebuilt(expr, value=again(expr.value))
    if isinstance(expr, n.BinOp):
        return _rebuilt(expr, left=again(expr.left), right=again(expr.right))
    if isinstance(expr, n.UnaryOp):
        return _rebuilt(expr, operand=again(expr.operand))
    if isinstance(expr, n.Arrow):
        return _rebuilt(expr, points=_each(again, expr.points))
    if isinstance(expr, n.Then):
        return _rebuilt(expr, pieces=_each(again, expr.pieces), durations=_each(again, expr.durations))
    if isinstance(expr, n.List):
        return _rebuilt(expr, items=_each(again, expr.items))
    if isinstance(expr, n.Map):
        return _rebuilt(expr, entries=_each(lambda e: _rebuilt(e, key=again(e.key), value=again(e.value)), expr.entries))
    if isinstance(expr, n.Epochs):
        return _rebuilt(expr, count=again(expr.count))
    return expr


def _each(again, items: tuple) -> tuple:
    """`again` of each of `items`, or `items` itself when `again` gave each one back as it was."""
    new = tuple(again(item) for item in items)
    return items if all(a is b for a, b in zip(new, items)) else new


def _rebuilt(node, **fields):
    """`node` with `fields`, or `node` itself when each field already holds that very object."""
    if all(value is getattr(node, name) for name, value in fields.items()):
        return node
    return replace(node, **fields)


# Substituted `let`s share their subtrees, so a chain like `let x2 = x1 + x1` is small in memory
# but doubles in size per line once read as a tree: every pass that walks an expression would
# take exponential time. A substituted expression larger than this is refused (E0005).
MAX_EXPR_NODES = 10_000


def tree_size(expr, limit: int = MAX_EXPR_NODES) -> int:
    """How many nodes `expr` has read as a tree (shared subtrees counted at each use), or
    `limit + 1` as soon as it exceeds `limit`. Each shared subtree is measured once."""
    top = n.children(expr)
    if not top:  # (most are a number or a name)
        return 1
    sizes: dict[int, int] = {}
    # (node, None) to measure; (node, its children) once they are measured
    stack = [(expr, top), *((k, None) for k in top)]
    while stack:
        node, kids = stack.pop()
        if kids is not None:
            sizes[id(node)] = min(limit + 1, 1 + sum(sizes[id(k)] for k in kids))
        elif id(node) not in sizes:
            kids = n.children(node)
            stack.append((node, kids))
            stack += [(k, None) for k in kids if id(k) not in sizes]
    return sizes[id(expr)]


def _at_use(value, span: n.Span):
    """A name's value, its top node at the name's span (the nodes inside keep theirs, where the value was written)."""
    if isinstance(value, n.Node):
        return replace(value, span=span)
    return value


def constant(expr, memo: dict | None = None) -> float | int | None:
    """The value of a closed numeric expression, or None if it is not one (a schedule, a percentage, ...).

    Arithmetic errors (division by zero, overflow) give nan or inf, which the
    checker reports as non-finite numbers. `memo` ({id(node): (node, value)}, kept
    by a caller that folds many overlapping expressions) evaluates each shared
    subexpression once.
    """
    if isinstance(expr, n.Number):
        return expr.value
    if not isinstance(expr, (n.UnaryOp, n.BinOp)):
        return None
    if memo is not None and id(expr) in memo:
        return memo[id(expr)][1]
    value = _fold(expr, memo)
    if memo is not None:
        memo[id(expr)] = (expr, value)  # the node is kept alive, so its id is not reused
    return value


def _fold(expr, memo):
    if isinstance(expr, n.UnaryOp):
        value = constant(expr.operand, memo)
        return None if value is None else (-value if expr.op == "-" else value)
    left, right = constant(expr.left, memo), constant(expr.right, memo)
    if left is None or right is None:
        return None
    try:
        # `**` in floats: an integer power like 2 ** 10 ** 10 would take forever
        result = math.pow(left, right) if expr.op == "**" and not isinstance(left, Swept) and not isinstance(right, Swept) else _OPS[expr.op](left, right)
    except ZeroDivisionError:
        return math.nan
    except OverflowError:
        return math.inf
    except ValueError:  # math.pow of a negative base to a fractional power
        return math.nan
    if isinstance(result, complex):
        return math.nan
    if isinstance(result, int) and abs(result) > 2**1000:  # beyond what converts to a float
        return math.inf
    return result


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
    n.Epochs: "a duration in epochs",
}


def describe(expr) -> str:
    """How a message names the kind of an expression: "a number", "a string", "a schedule", ..."""
    if constant(expr) is not None:
        return "a number"
    return _KINDS.get(type(expr), "an expression")


PLATEAU = "plateau"
# what `plateau(...)` is: its arguments (all but `on`) are this optax transformation's
PLATEAU_TRANSFORM = "contrib.reduce_on_plateau"
# `plateau(on=val.M, ...)`: the evaluation metric that drives the scale (without it, the training loss)
PLATEAU_ON = "on"


def plateau_factor(expr):
    """(the rest, the `plateau(...)` call) of a learning rate written `E * plateau(...)`,
    `plateau(...) * E` or `plateau(...)` (the rest is then None); (expr, None) otherwise.

    A plateau is a factor of the learning rate driven by the loss, not a function of
    the step: it is split off before the rest is lowered as a schedule.
    """

    def is_plateau(node) -> bool:
        return isinstance(node, n.Call) and node.func.id == PLATEAU

    if is_plateau(expr):
        return None, expr
    if isinstance(expr, n.BinOp) and expr.op == "*":
        if is_plateau(expr.right):
            return expr.left, expr.right
        if is_plateau(expr.left):
            return expr.right, expr.left
    return expr, None


def plateau_metric(call: n.Call):
    """(`call` without its `on=` keyword, the `on` value or None) of a `plateau(...)` call.

    `on=val.M` is not one of optax.contrib.reduce_on_plateau's arguments: it says what feeds
    the scale (an evaluation metric, once per evaluation, instead of the loss at every step),
    so it is split off before the rest is bound to optax's signature.
    """
    on = next((kw for kw in call.kwargs if kw.name.id == PLATEAU_ON), None)
    if on is None:
        return call, None
    return replace(call, kwargs=tuple(kw for kw in call.kwargs if kw is not on)), on.value


def show(value) -> str:
    """A number as messages write it: `0.1`, `1e+06`, `inf`, `nan`; other values as `str` does."""
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return f"{value:g}"
    return str(value)
