"""Lowering schedule expressions to pure JAX functions of the step.

A schedule is split in two so that phases differing only in numbers share one
compiled executable:

* `lower(expr, steps)` -> `Lowered(structure, numbers)`: `structure` is a
  hashable, JAX-free tuple tree (which catalog entries, how they nest, static
  flags such as `staircase` or `kind=cosine`, how many map entries); `numbers`
  is a flat tuple of Python floats: every waypoint, rate and peak, and every
  step count, duration and boundary (already resolved to whole steps).
* `build(structure)` -> `fn(step, numbers) -> value`, traceable in both
  arguments (`numbers` may be a traced float vector, `step` a traced int32). The values are
  computed in the widest float the process allows (float64 under jax_enable_x64).

Every entry lowers through optax's own function where that function accepts
traced numbers (`join_schedules`, and `polynomial_schedule` evaluated on the
normalised time `t / steps` with a unit horizon: optax's arithmetic, except that
dividing before clipping keeps the horizon exact when XLA turns `/T` into `*(1/T)`).
Where optax insists on Python values (it branches on `decay_steps > 0`,
`decay_rate == 0`, `peak_value == 0`, or uses boundaries as dict keys), its
documented formula is reproduced below in `jnp`, operation for operation;
tests compare each with optax at every step. Numbers optax derives in Python
(one-cycle boundaries `int(pct * steps)`, the `alpha` of warmup-cosine) are
derived here in Python too, at lowering time, with optax's arithmetic.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable

import jax.numpy as jnp
import optax

from schedc.check import catalog
from schedc.check.arguments import bind, check_schedule
from schedc.check.time_model import duration_steps, segments, span_of
from schedc.lang import nodes as n
from schedc.lang.diagnostics import SchedError
from schedc.lang.expr import constant


@dataclass(frozen=True)
class Lowered:
    """A schedule split into what selects the program (`structure`) and what feeds it (`numbers`)."""

    structure: tuple
    numbers: tuple[float, ...]


# ---------------------------------------------------------------- lowering (Python, per phase)


def lower(expr, steps: int) -> Lowered:
    """Lower a closed schedule expression used in a phase of `steps` steps.

    Args:
        expr: an expression node with `let` names substituted (or a Python number).
        steps: the length of the enclosing phase (the span of `%` and of left-out durations).

    Raises:
        SchedError: when the expression has errors (`schedc check` reports the same).
    """
    if isinstance(expr, (int, float)) and not isinstance(expr, bool):
        expr = n.Number(expr, repr(expr))
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    if isinstance(expr, n.Bound):  # an optax schedule function bound to `lr $name`: called on the phase's step
        _check_schedule_function(expr)
        return Lowered(("function", expr), ())
    problems = [d for d in check_schedule(expr, steps) if d.is_error]
    if problems:
        raise SchedError(problems)
    structure, numbers = _lower(expr, steps)
    return Lowered(structure, tuple(float(x) for x in numbers))


def _check_schedule_function(bound: n.Bound) -> None:
    """An optax schedule function maps a step count to one real number: traced once on an int32
    step, so that a wrong one is named here rather than deep inside the compiled loop."""
    import jax

    try:
        out = jax.eval_shape(bound.value, jax.ShapeDtypeStruct((), jnp.int32))
    except Exception as exc:
        raise TypeError(f"${bound.id}: an optax schedule function is called on the step count (an int32 scalar); {bound.value!r} raised {type(exc).__name__}: {exc}") from exc
    leaves = jax.tree_util.tree_leaves(out)
    if len(leaves) != 1 or leaves[0].shape != () or not jnp.issubdtype(leaves[0].dtype, jnp.number) or jnp.issubdtype(leaves[0].dtype, jnp.complexfloating):
        got = f"shape {leaves[0].shape} {leaves[0].dtype}" if len(leaves) == 1 else f"{type(out).__name__} {out!r}"
        raise TypeError(f"${bound.id}: an optax schedule function returns one real number per step count, {bound.value!r} returned {got}")


def _lower(expr, span: int) -> tuple[tuple, list[float]]:
    value = constant(expr)
    if value is not None:
        return ("constant",), [value]
    if isinstance(expr, n.UnaryOp):
        inner, numbers = _lower(expr.operand, span)
        return (inner if expr.op == "+" else ("neg", inner)), numbers
    if isinstance(expr, n.BinOp):
        left, left_numbers = _lower(expr.left, span)
        right, right_numbers = _lower(expr.right, span)
        return ("op", expr.op, left, right), left_numbers + right_numbers
    if isinstance(expr, n.Then):
        lengths = segments(expr, span)
        boundaries = [sum(lengths[: i + 1]) for i in range(len(expr.durations))]
        pieces = [_lower(piece, length) for piece, length in zip(expr.pieces, lengths)]
        return ("then", tuple(s for s, _ in pieces)), boundaries + [x for _, xs in pieces for x in xs]
    assert isinstance(expr, n.Call), expr  # anything else was refused by check_schedule
    sig = catalog.SCHEDULES[expr.func.id]
    bound, _ = bind(sig, expr)
    args = {name: _value(v) for name, v in bound.items() if name != "arrow"}
    points = [constant(p) for p in bound.get("arrow", ())]
    return _LOWER[sig.name](span, points, args, bound)


def _value(arg):
    """A bound argument as a Python value (nodes of schedule/duration/map/list kinds are kept)."""
    if isinstance(arg, n.Bool):
        return arg.value
    if isinstance(arg, n.Name):  # a symbol
        return arg.id
    if hasattr(arg, "span"):
        value = constant(arg)
        return arg if value is None else value
    return arg


def _onecycle_boundaries(pairs: list[tuple[int, float]]) -> tuple[list[float], list[float]]:
    """Boundaries and scales as optax's `{boundary: scale}` dict literal has them: sorted, and
    a boundary given twice keeps its last scale. The entry count stays fixed (it is part of
    the structure): each dropped duplicate becomes a no-op, scale 1 right after its survivor."""
    entries = []
    for key, scale in sorted(dict(pairs).items()):
        entries += [(key, scale)] + [(key, 1.0)] * (sum(k == key for k, _ in pairs) - 1)
    return [float(k) for k, _ in entries], [s for _, s in entries]


def _lower_constant(span, points, a, bound):
    return ("constant",), [a["value"]]


def _lower_linear(span, points, a, bound):
    return ("linear",), [points[0], points[1], 1.0, span_of(a["steps"], span)]


def _lower_polynomial(span, points, a, bound):
    return ("polynomial",), [points[0], points[1], a["power"], span_of(a["steps"], span)]


def _lower_cosine(span, points, a, bound):
    return ("cosine",), [points[0], points[1], span_of(a["steps"], span), a["exponent"]]


def _exponential_numbers(a, span, init) -> tuple[tuple, list[float]]:
    end = a["end"]
    flags = (bool(a["staircase"]), end is not None)
    return flags, [init, span_of(a["every"], span), a["rate"], span_of(a["begin"], span), 0.0 if end is None else end]


def _lower_exponential(span, points, a, bound):
    flags, numbers = _exponential_numbers(a, span, a["init"])
    return ("exponential", *flags), numbers


def _lower_warmup_constant(span, points, a, bound):
    return ("warmup_constant",), [points[0], points[1], 1.0, span_of(a["warmup"], span)]


def _lower_warmup_cosine(span, points, a, bound):
    init, peak, end = points
    warmup, total = span_of(a["warmup"], span), span_of(a["steps"], span)
    # optax: alpha = 0 when peak == 0, so the end value is then ignored
    end = 0.0 if peak == 0 else end
    return ("warmup_cosine",), [init, peak, 1.0, warmup, warmup, peak, end, total - warmup, a["exponent"]]


def _lower_warmup_exponential(span, points, a, bound):
    init, peak = points
    warmup = span_of(a["warmup"], span)
    flags, numbers = _exponential_numbers(a, span, peak)
    return ("warmup_exponential", *flags), [init, peak, 1.0, warmup, warmup] + numbers


def _lower_onecycle(span, points, a, bound):
    total = span_of(a["steps"], span)
    div, final_div = a["div"], a["final_div"]
    bounds, scales = _onecycle_boundaries([(int(a["pct_start"] * total), div), (int(total), 1.0 / (div * final_div))])
    return ("interpolate", "cosine", 2), [a["peak"] / div] + bounds + scales


def _lower_linear_onecycle(span, points, a, bound):
    total = span_of(a["steps"], span)
    div = a["div"]
    pairs = [(int(a["pct_start"] * total), div), (int(a["pct_final"] * total), 1.0 / div), (total, 1.0 / a["final_div"])]
    bounds, scales = _onecycle_boundaries(pairs)
    return ("interpolate", "linear", 3), [a["peak"] / div] + bounds + scales


def _map_numbers(mapping: n.Map, span: int) -> tuple[list[float], list[float]]:
    return [duration_steps(e.key, span) for e in mapping.entries], [constant(e.value) for e in mapping.entries]


def _lower_piecewise(span, points, a, bound):
    bounds, scales = _map_numbers(a["boundaries"], span)
    return ("piecewise", len(bounds)), [a["value"]] + bounds + scales


def _lower_interpolate(span, points, a, bound):
    bounds, scales = _map_numbers(a["boundaries"], span)
    return ("interpolate", a["kind"], len(bounds)), [a["value"]] + bounds + scales


def _lower_sgdr(span, points, a, bound):
    period = span_of(a["period"], span)
    inner, numbers = _lower(bound["schedule"], period)
    return ("sgdr", inner), [period, a["mult"]] + numbers


def _lower_stepwise(span, points, a, bound):
    inner, numbers = _lower(bound["schedule"], span)
    return ("stepwise", inner), [span_of(a["interval"], span)] + numbers


def _lower_shape(name):
    def lower_shape(span, points, a, bound):
        return (name,), [points[0], points[1], span_of(a["steps"], span)]

    return lower_shape


def _lower_values(span, points, a, bound):
    items = [constant(i) for i in a["values"].items]
    return ("values", len(items)), items


def _lower_step(span, points, a, bound):
    at = [duration_steps(i, span) for i in a["at"].items]
    return ("step", len(at)), [a["value"], a["factor"]] + at


def _lower_every(span, points, a, bound):
    return ("every",), [a["value"], a["factor"], span_of(a["interval"], span)]


def _lower_pair(name):
    def lower_pair(span, points, a, bound):
        left, left_numbers = _lower(bound["a"], span)
        right, right_numbers = _lower(bound["b"], span)
        return (name, left, right), left_numbers + right_numbers

    return lower_pair


def _lower_clip(span, points, a, bound):
    inner, numbers = _lower(bound["schedule"], span)
    return ("clip", inner), [a["lo"], a["hi"]] + numbers


_LOWER = {
    "constant": _lower_constant,
    "linear": _lower_linear,
    "polynomial": _lower_polynomial,
    "cosine": _lower_cosine,
    "exponential": _lower_exponential,
    "warmup_constant": _lower_warmup_constant,
    "warmup_cosine": _lower_warmup_cosine,
    "warmup_exponential": _lower_warmup_exponential,
    "onecycle": _lower_onecycle,
    "linear_onecycle": _lower_linear_onecycle,
    "piecewise": _lower_piecewise,
    "interpolate": _lower_interpolate,
    "sgdr": _lower_sgdr,
    "smooth": _lower_shape("smooth"),
    "hump": _lower_shape("hump"),
    "exp": _lower_shape("exp"),
    "values": _lower_values,
    "step": _lower_step,
    "every": _lower_every,
    "stepwise": _lower_stepwise,
    "min": _lower_pair("min"),
    "max": _lower_pair("max"),
    "clip": _lower_clip,
}
assert set(_LOWER) == set(catalog.SCHEDULES), "every catalog entry needs a lowering"


# ---------------------------------------------------------------- jnp kernels


def _over(t, begin, length):
    """(t - begin) / length, with a zero length made harmless (callers select around it)."""
    return (t - begin) / jnp.where(length > 0, length, 1.0)


def polynomial(t, init, end, power, steps):
    """`optax.polynomial_schedule(init, end, power, steps)` with traced `steps`.

    optax's own function on the normalised time `t / steps` with a unit horizon:
    `clip(t / T, 0, 1)` equals optax's `clip(t, 0, T) / T`, and stays exactly 1 past
    the horizon even where XLA multiplies by `1/T` (optax's own then overshoots, and
    a fractional power of the negative remainder is NaN). Zero steps: optax's constant `init`.
    """
    value = optax.polynomial_schedule(init, end, power, transition_steps=1)(_over(t, 0, steps))
    return jnp.where(steps > 0, value, init)


def cosine_decay(t, init, end, steps, exponent):
    """`optax.cosine_decay_schedule(init, steps, alpha=end / init, exponent)`, with traced
    `steps` (optax needs `decay_steps > 0` in Python) and any `init` (0 included)."""
    count = jnp.minimum(t, steps)
    cosine = 0.5 * (1 + jnp.cos(jnp.pi * count / jnp.where(steps > 0, steps, 1.0)))
    return jnp.where(steps > 0, (init - end) * cosine**exponent + end, end)


def exponential_decay(t, init, every, rate, begin, end, staircase: bool, has_end: bool):
    """`optax.exponential_decay(init, every, rate, begin, staircase, end)` with traced numbers
    (optax branches on `decay_rate` in Python). optax's quirks kept: a zero rate or
    interval is the constant `init`; before `begin` the value is `init`."""
    decreased = t - begin
    p = decreased / jnp.where(every > 0, every, 1.0)
    if staircase:
        p = jnp.floor(p)
    value = jnp.where(decreased <= 0, init, init * jnp.power(rate, p))
    if has_end:
        value = jnp.where(rate < 1.0, jnp.maximum(value, end), jnp.minimum(value, end))
    return jnp.where((every > 0) & (rate != 0), value, init)


def piecewise_constant(t, init, bounds, scales):
    """`optax.piecewise_constant_schedule(init, dict(zip(bounds, scales)))`, traced boundaries
    (optax needs them as dict keys), sorted at lowering."""
    value = init
    for i in range(bounds.shape[0]):
        indicator = jnp.maximum(0.0, jnp.sign(bounds[i] - t))
        value = value * indicator + (1 - indicator) * scales[i] * value
    return value


def piecewise_interpolate(t, kind: str, init, bounds, scales):
    """`optax.piecewise_interpolate_schedule(kind, init, dict(zip(bounds, scales)))`, traced."""
    bounds = jnp.concatenate([jnp.zeros(1, bounds.dtype), bounds])
    values = jnp.cumprod(jnp.concatenate([jnp.reshape(init, (1,)), scales]))
    sizes = jnp.maximum(bounds[1:] - bounds[:-1], 1)
    indicator = jnp.logical_and(bounds[:-1] <= t, t < bounds[1:])
    pct = (t - bounds[:-1]) / sizes
    start, stop = values[:-1], values[1:]
    if kind == "linear":
        interpolated = (stop - start) * pct + start
    else:
        interpolated = stop + (start - stop) / 2.0 * (jnp.cos(jnp.pi * pct) + 1)
    return indicator.dot(interpolated) + (bounds[-1] <= t) * values[-1]


def _progress(t, steps):
    """Progress through the span in [0, 1], held at 1 after it (k1lib shapes)."""
    return jnp.clip(_over(t, 0, steps), 0.0, 1.0)


def smooth(x, low, high):
    """k1lib `smooth`: cosine ease, `low + (high - low)(1 + cos(pi(1 - x))) / 2`."""
    return low + (high - low) * (1 + jnp.cos(jnp.pi * (1 - x))) / 2


def exp_ease(x, low, high):
    """k1lib `exp`: `high + (low - high)(e^(1-4x) - e^-3) / (e - e^-3)`, exactly low at 0, high at 1."""
    return high + (low - high) * (jnp.exp(1 - 4 * x) - math.exp(-3)) / (math.e - math.exp(-3))


def hump(x, low, high):
    """k1lib `hump`: smooth from 0.8 low + 0.2 high to high over the first 30%, then smooth to low."""
    rise = smooth(x / 0.3, 0.8 * low + 0.2 * high, high)
    fall = smooth((x - 0.3) / 0.7, high, low)
    return jnp.where(x < 0.3, rise, fall)


def sgdr_time(t, period, mult):
    """Local time of the current cycle, on the first cycle's clock: cycle k lasts
    `period * mult**k` and runs the schedule stretched by `mult**k`."""
    t = jnp.asarray(t, jnp.result_type(float))
    period = jnp.where(period > 0, period, 1.0)
    geometric = mult != 1
    log_mult = jnp.log(jnp.where(geometric, mult, 2.0))
    ratio = jnp.where(geometric, mult - 1, 1.0) / period

    def start(k):
        return jnp.where(geometric, period * (jnp.power(mult, k) - 1) / jnp.where(geometric, mult - 1, 1.0), k * period)

    k = jnp.where(geometric, jnp.floor(jnp.log1p(t * ratio) / log_mult), jnp.floor(t / period))
    k = jnp.where(start(k + 1) <= t, k + 1, k)  # float rounding at a restart
    k = jnp.maximum(jnp.where(start(k) > t, k - 1, k), 0)
    return (t - start(k)) / jnp.power(mult, k)


# ---------------------------------------------------------------- building (JAX, per structure)

_OPS = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv, "**": jnp.power}


def size(structure: tuple) -> int:
    """How many numbers a structure takes."""
    return _build(structure, 0)[1]


@lru_cache(maxsize=None)
def build(structure: tuple) -> Callable:
    """The schedule function of a structure: `fn(step, numbers) -> value`.

    `numbers` is `Lowered.numbers` (a tuple, or a float vector, traced or not);
    `step` the phase-local step (an int, or a traced int32). Computed in the widest float the
    process allows: float64 under jax_enable_x64, so a float64 fit's learning rate is not a
    float32 rounding of the one written (the step casts it to the parameters' dtype).
    """
    fn, count = _build(structure, 0)

    def schedule(step, numbers):
        dtype = jnp.result_type(float)
        x = jnp.asarray(numbers, dtype)
        if x.shape != (count,):
            raise ValueError(f"this schedule takes {count} numbers, got shape {x.shape}")
        return jnp.asarray(fn(step, x), dtype)

    return schedule


def _build(s: tuple, o: int) -> tuple[Callable, int]:
    """(fn(t, x), offset after this node's numbers) for the node `s` whose numbers start at x[o]."""
    kind = s[0]
    if kind == "constant":
        return (lambda t, x: x[o]), o + 1
    if kind == "function":
        return (lambda t, x: s[1].value(t)), o
    if kind == "neg":
        inner, end = _build(s[1], o)
        return (lambda t, x: -inner(t, x)), end
    if kind in ("op", "min", "max"):
        left, mid = _build(s[-2], o)
        right, end = _build(s[-1], mid)
        op = _OPS[s[1]] if kind == "op" else getattr(jnp, f"{kind}imum")
        return (lambda t, x: op(left(t, x), right(t, x))), end
    if kind == "then":
        count = len(s[1]) - 1
        pieces, end = [], o + count
        for piece in s[1]:
            fn, end = _build(piece, end)
            pieces.append(fn)

        def then(t, x):
            bound = [lambda u, f=f: f(u, x) for f in pieces]
            return optax.join_schedules(bound, [x[o + i] for i in range(count)])(t)

        return then, end
    if kind in ("linear", "polynomial", "warmup_constant"):
        return (lambda t, x: polynomial(t, x[o], x[o + 1], x[o + 2], x[o + 3])), o + 4
    if kind == "cosine":
        return (lambda t, x: cosine_decay(t, x[o], x[o + 1], x[o + 2], x[o + 3])), o + 4
    if kind == "exponential":
        staircase, has_end = s[1], s[2]
        return (lambda t, x: exponential_decay(t, *(x[o + i] for i in range(5)), staircase, has_end)), o + 5
    if kind == "warmup_cosine":

        def warmup_cosine(t, x):
            warmup = lambda u: polynomial(u, x[o], x[o + 1], x[o + 2], x[o + 3])
            decay = lambda u: cosine_decay(u, x[o + 5], x[o + 6], x[o + 7], x[o + 8])
            return optax.join_schedules([warmup, decay], [x[o + 4]])(t)

        return warmup_cosine, o + 9
    if kind == "warmup_exponential":
        staircase, has_end = s[1], s[2]

        def warmup_exponential(t, x):
            warmup = lambda u: polynomial(u, x[o], x[o + 1], x[o + 2], x[o + 3])
            decay = lambda u: exponential_decay(u, *(x[o + 5 + i] for i in range(5)), staircase, has_end)
            return optax.join_schedules([warmup, decay], [x[o + 4]])(t)

        return warmup_exponential, o + 10
    if kind == "piecewise":
        k = s[1]
        return (lambda t, x: piecewise_constant(t, x[o], x[o + 1 : o + 1 + k], x[o + 1 + k : o + 1 + 2 * k])), o + 1 + 2 * k
    if kind == "interpolate":
        interp, k = s[1], s[2]
        return (lambda t, x: piecewise_interpolate(t, interp, x[o], x[o + 1 : o + 1 + k], x[o + 1 + k : o + 1 + 2 * k])), o + 1 + 2 * k
    if kind == "sgdr":
        inner, end = _build(s[1], o + 2)
        return (lambda t, x: inner(sgdr_time(t, x[o], x[o + 1]), x)), end
    if kind in ("smooth", "hump", "exp"):
        shape = {"smooth": smooth, "hump": hump, "exp": exp_ease}[kind]
        return (lambda t, x: shape(_progress(t, x[o + 2]), x[o], x[o + 1])), o + 3
    if kind == "values":
        k = s[1]
        return (lambda t, x: x[o : o + k][jnp.clip(jnp.floor(t), 0, k - 1).astype(jnp.int32)]), o + k
    if kind == "step":
        k = s[1]
        return (lambda t, x: x[o] * jnp.power(x[o + 1], jnp.sum(t >= x[o + 2 : o + 2 + k]))), o + 2 + k
    if kind == "every":
        return (lambda t, x: x[o] * jnp.power(x[o + 1], jnp.floor(_over(t, 0, x[o + 2])))), o + 3
    if kind == "stepwise":  # the inner schedule at the first step of the interval holding t
        inner, end = _build(s[1], o + 1)
        return (lambda t, x: inner(jnp.floor(t / x[o]) * x[o], x)), end
    if kind == "clip":
        inner, end = _build(s[1], o + 2)
        return (lambda t, x: jnp.clip(inner(t, x), x[o], x[o + 1])), end
    raise ValueError(f"unknown schedule structure {s!r}")
