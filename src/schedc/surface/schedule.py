"""`schedc.schedule(...)`: one schedule expression as an optax-compatible `count -> value` function.

Parsed by the same grammar and checked by the same passes as a `.sched` file, then lowered
and built by the compiler's own schedule functions.
"""

from __future__ import annotations

from numbers import Integral, Real
from typing import Callable

import jax.numpy as jnp

from schedc.check import catalog
from schedc.check.schedules import check_schedule
from schedc.compiler.schedules import build, lower
from schedc.lang import nodes as n
from schedc.lang.diagnostics import Diagnostic, SchedError, Source, did_you_mean
from schedc.lang.expr import substitute


def schedule_fn(expr_or_text, steps: int) -> Callable:
    """`step -> value` for an expression node (lets substituted) or source text, numbers closed over.

    Jitted, so that calling it outside a traced function runs one compiled program
    instead of dispatching each scalar operation; inside a jitted optax update it inlines.
    """
    import jax

    expr = parse_expression(expr_or_text) if isinstance(expr_or_text, str) else expr_or_text
    lowered = lower(expr, steps)
    fn = build(lowered.structure)
    numbers = jnp.asarray(lowered.numbers, jnp.float32)
    return jax.jit(lambda step: fn(step, numbers))


_PREFIX = "lr "  # the text is parsed as an `lr` directive, then positions are shifted back
_NAME = "<schedule>"


def parse_expression(text: str, names: dict | None = None):
    """Parse one schedule expression; `names` bind `let`-style names and `$placeholders` to numbers.

    Raises:
        SchedError: on syntax errors and unbound names, rendered against the expression.
    """
    from schedc.lang.syntax import parse

    parsed = parse(_PREFIX + text)
    diags = [_shift(d) for d in parsed.diagnostics]
    items = parsed.file.items
    expr = None
    if not diags:
        if len(items) == 1 and isinstance(items[0], n.Directive) and items[0].keyword == "lr":
            expr = items[0].value
        else:
            extra = items[1] if len(items) > 1 else items[0]
            diags.append(_shift(Diagnostic("E0001", "expected one schedule expression", extra.span)))
    if expr is not None:
        env = {}
        for key, value in (names or {}).items():
            if isinstance(value, bool) or not isinstance(value, Real):
                raise TypeError(f"name {key!r} must be bound to a number, got {type(value).__name__}")
            value = int(value) if isinstance(value, Integral) else float(value)
            node = n.Number(value, repr(value))
            env[key] = env["$" + key] = node
        expr = substitute(expr, env)
        diags += [_shift(d) for d in _unbound(expr, names or {})]
    if any(d.is_error for d in diags):
        raise SchedError([d.in_file(_NAME) for d in diags], {_NAME: Source(_NAME, text)})
    return expr


def _unbound(expr, names: dict) -> list[Diagnostic]:
    """E0101/E0110 for every name and placeholder left in `expr` (symbols such as `kind=cosine` excepted)."""
    words = set()  # Name nodes that are not variables: call and keyword names, symbol values
    for node in n.walk(expr):
        if isinstance(node, n.Call):
            words.add(id(node.func))
            words.update(id(kw.name) for kw in node.kwargs)
            sig = catalog.SCHEDULES.get(node.func.id)
            if sig is not None:
                bound, _ = catalog.bind(sig, node)
                words.update(id(bound.get(p.name)) for p in sig.params if p.kind == "symbol")
    diags = []
    for node in n.walk(expr):
        if isinstance(node, n.Name) and id(node) not in words:
            help = did_you_mean(node.id, names) or f"bind it: schedc.schedule(..., {node.id}=VALUE)"
            diags.append(Diagnostic("E0101", f"undefined name `{node.id}`", node.span, help=help))
        elif isinstance(node, n.Placeholder):
            diags.append(Diagnostic("E0110", f"unbound placeholder `${node.id}`", node.span, help=f"bind it: schedc.schedule(..., {node.id}=VALUE)"))
    return diags


def _shift(d: Diagnostic) -> Diagnostic:
    """Positions in `lr TEXT` -> positions in TEXT."""
    from dataclasses import replace

    def move(span: n.Span) -> n.Span:
        k = len(_PREFIX)
        return n.Span(
            span.line,
            max(1, span.column - k) if span.line == 1 else span.column,
            span.end_line,
            max(1, span.end_column - k) if span.end_line == 1 else span.end_column,
            max(0, span.start - k),
            max(0, span.end - k),
        )

    return replace(d, span=move(d.span), labels=tuple(replace(l, span=move(l.span)) for l in d.labels))


def schedule(expr: str, steps: int, **names) -> Callable:
    """An optax-compatible schedule (`count -> value`) from schedc expression text.

    >>> optax.adam(schedc.schedule("warmup_cosine(0 -> 1e-3 -> 0, 5%)", steps=10_000))

    Args:
        expr: the expression; `%` and left-out durations refer to `steps`.
        steps: the length of the run the schedule spans.
        **names: numbers for the names (`base`) and placeholders (`$base`) it uses.

    Raises:
        SchedError: with every problem, rendered with the expression and a caret.
    """
    parsed = parse_expression(expr, names)
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    problems = [_shift(d).in_file(_NAME) for d in check_schedule(parsed, steps) if d.is_error]
    if problems:
        raise SchedError(problems, {_NAME: Source(_NAME, expr)})
    return schedule_fn(parsed, steps)
