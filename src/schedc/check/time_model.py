"""The time model of schedules, shared by the checker and the lowering.

A schedule is a function of the phase-local step. A duration is a whole number of
steps or a percentage of the enclosing span (the phase, the segment of a `then`
chain, or the period of `sgdr`), rounded down to whole steps; a duration left out
is the whole enclosing span. `schedc.check.arguments` checks durations with these
functions and `schedc.compiler.schedules` lowers them with the same ones, so what is
checked is what is compiled. Plain Python, no JAX.
"""

from __future__ import annotations

import math
from fractions import Fraction

from schedc.lang import nodes as n
from schedc.lang.expr import constant


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
    """A duration argument as bound by `arguments.bind`: left out (None) means the whole span."""
    return span if value is None else duration_steps(value, span)


def segments(then: n.Then, span: int | None) -> list[int | None]:
    """The length of each piece of a `then` chain (the last one gets what is left)."""
    lengths = [duration_steps(d, span) for d in then.durations]
    rest = None if span is None or None in lengths else span - sum(lengths)
    return lengths + [rest]
