"""`schedc.schedule(...)`: one schedule expression as an optax-compatible `count -> value` function.

Parsed by the same grammar and checked by the same passes as a `.sched` file (through
`schedc.pipeline.analyse_expression`), then lowered and built by the compiler's own schedule
functions.
"""

from __future__ import annotations

from typing import Callable

import jax.numpy as jnp

from schedc.compiler.schedules import build, lower
from schedc.pipeline import analyse_expression, parse_expression


def schedule_fn(expr_or_text, steps: int) -> Callable:
    """`step -> value` for an expression node (lets substituted) or source text, numbers closed over.

    Jitted, so that calling it outside a traced function runs one compiled program
    instead of dispatching each scalar operation; inside a jitted optax update it inlines.
    """
    import jax

    expr = parse_expression(expr_or_text) if isinstance(expr_or_text, str) else expr_or_text
    lowered = lower(expr, steps)
    fn = build(lowered.structure)
    numbers = jnp.asarray(lowered.numbers, jnp.result_type(float))  # float64 under jax_enable_x64
    return jax.jit(lambda step: fn(step, numbers))


def schedule(expr: str, steps: int, **names) -> Callable:
    """An optax-compatible schedule (`count -> value`) from schedc expression text.

    >>> optax.adam(schedc.schedule("warmup_cosine(0 -> 1e-3 -> 0, 5%)", steps=10_000))

    Args:
        expr: the expression; `%` and left-out durations refer to `steps`.
        steps: the length of the run the schedule spans.
        **names: numbers for the names (`base`) and placeholders (`$base`) it uses.

    Raises:
        SchedError: with every problem, rendered with the expression and a caret.
        TypeError: `expr` is not text (a number is written as text: `schedule("0.1", steps)`).
    """
    if not isinstance(expr, str):
        raise TypeError(f'schedc.schedule takes the text of a schedule expression, such as "cosine(0.1 -> 0)" or "0.1", got {type(expr).__name__}')
    return schedule_fn(analyse_expression(expr, steps, names), steps)
