"""schedc.compiler.schedules: every catalog entry against optax (or the documented k1lib/noether formula),
at every step of its horizon and past it, traced under jit, vmap and lax.scan."""

import math
import os
from functools import lru_cache

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import schedc
from schedc.check import catalog
from schedc.lang import syntax
from schedc.lang.diagnostics import SchedError
from schedc.check.arguments import check_schedule
from schedc.compiler.schedules import build, lower, size
from schedc.pipeline import parse_expression
from schedc.surface.schedule import schedule_fn

pytestmark = pytest.mark.slow
EXTRA = 25  # steps evaluated past the phase: the schedule must hold, never extrapolate


@lru_cache(maxsize=None)
def _evaluator(structure):
    """One compiled program per structure: every step at once (vmap), numbers as an argument."""
    return jax.jit(jax.vmap(build(structure), in_axes=(0, None)))


def ours(text: str, steps: int, horizon: int | None = None) -> np.ndarray:
    lowered = lower(parse_expression(text), steps)
    grid = jnp.arange(horizon or steps + EXTRA, dtype=jnp.int32)
    return np.asarray(_evaluator(lowered.structure)(grid, jnp.asarray(lowered.numbers, jnp.float32)))


def reference(fn, horizon: int, eager: bool = False) -> np.ndarray:
    vectorised = jax.vmap(fn) if eager else jax.jit(jax.vmap(fn))
    return np.asarray(vectorised(jnp.arange(horizon, dtype=jnp.int32)), np.float32)


# Under jit, XLA turns optax's `clip(t, 0, T) / T` into a multiplication by 1/T, which
# overshoots 1 at t >= T; a fractional power of the negative remainder is NaN. Eager optax
# divides exactly. Ours divides first and clips after, so it is exact either way.
EAGER = {"polynomial_sqrt"}


def close(a, b, rtol=1e-6):
    # relative 1e-6 in float32; absolute slack of a few float32 ulps of the values' scale for zeros
    scale = float(np.max(np.abs(b))) or 1.0
    np.testing.assert_allclose(a, b, rtol=rtol, atol=4 * np.finfo(np.float32).eps * scale)


# text, phase steps, optax reference (a schedule of the phase-local step)
OPTAX = {
    "linear": ("linear(1 -> 0, 10)", 20, optax.linear_schedule(1.0, 0.0, 10)),
    "linear_whole_span": ("linear(2 -> 0.5)", 40, optax.linear_schedule(2.0, 0.5, 40)),
    "linear_percent": ("linear(0 -> 1, 25%)", 40, optax.linear_schedule(0.0, 1.0, 10)),
    "polynomial": ("polynomial(2 -> 0.5, 2)", 50, optax.polynomial_schedule(2.0, 0.5, 2, 50)),
    "polynomial_sqrt": ("polynomial(1 -> 0, 0.5, 30)", 50, optax.polynomial_schedule(1.0, 0.0, 0.5, 30)),
    "cosine": ("cosine(1 -> 0)", 100, optax.cosine_decay_schedule(1.0, 100)),
    "cosine_alpha_exponent": ("cosine(1 -> 0.1, exponent=2)", 100, optax.cosine_decay_schedule(1.0, 100, alpha=0.1, exponent=2.0)),
    "cosine_steps": ("cosine(0.5 -> 0.05, 60)", 100, optax.cosine_decay_schedule(0.5, 60, alpha=0.1)),
    "exponential": ("exponential(1, 0.5, 10)", 40, optax.exponential_decay(1.0, 10, 0.5)),
    "exponential_staircase": ("exponential(1, 0.5, 10, staircase=true)", 40, optax.exponential_decay(1.0, 10, 0.5, staircase=True)),
    "exponential_floor": ("exponential(1, 0.5, 10, end=0.3)", 40, optax.exponential_decay(1.0, 10, 0.5, end_value=0.3)),
    "exponential_ceiling": ("exponential(1, 2, 10, end=3)", 40, optax.exponential_decay(1.0, 10, 2.0, end_value=3.0)),
    "exponential_begin": ("exponential(1, 0.5, 10%, begin=5)", 40, optax.exponential_decay(1.0, 4, 0.5, transition_begin=5)),
    "warmup_constant": ("warmup_constant(0 -> 1, 10)", 30, optax.warmup_constant_schedule(0.0, 1.0, 10)),
    "warmup_cosine": ("warmup_cosine(0 -> 1 -> 0.1, 10)", 100, optax.warmup_cosine_decay_schedule(0.0, 1.0, 10, 100, 0.1)),
    "warmup_cosine_no_warmup": ("warmup_cosine(0 -> 1 -> 0, 0)", 50, optax.warmup_cosine_decay_schedule(0.0, 1.0, 0, 50)),
    "warmup_cosine_zero_peak": ("warmup_cosine(0.5 -> 0 -> 0.1, 10)", 50, optax.warmup_cosine_decay_schedule(0.5, 0.0, 10, 50, 0.1)),
    "warmup_cosine_steps": ("warmup_cosine(0 -> 1 -> 0, 10%, 50%, exponent=2)", 200, optax.warmup_cosine_decay_schedule(0.0, 1.0, 20, 100, exponent=2.0)),
    "warmup_exponential": ("warmup_exponential(0 -> 1, 10, 0.5, 10, begin=5)", 60, optax.warmup_exponential_decay_schedule(0.0, 1.0, 10, 10, 0.5, 5)),
    "warmup_exponential_staircase_end": (
        "warmup_exponential(0.1 -> 1, 5, 0.5, 4, staircase=true, end=0.2)",
        40,
        optax.warmup_exponential_decay_schedule(0.1, 1.0, 5, 4, 0.5, staircase=True, end_value=0.2),
    ),
    "onecycle": ("onecycle(1)", 100, optax.cosine_onecycle_schedule(100, 1.0)),
    "onecycle_args": ("onecycle(0.5, 80, pct_start=0.29, div=10, final_div=100)", 100, optax.cosine_onecycle_schedule(80, 0.5, 0.29, 10.0, 100.0)),
    "onecycle_collision": ("onecycle(1, pct_start=1)", 20, optax.cosine_onecycle_schedule(20, 1.0, 1.0)),
    "linear_onecycle": ("linear_onecycle(1)", 100, optax.linear_onecycle_schedule(100, 1.0)),
    "linear_onecycle_tiny": ("linear_onecycle(1)", 1, optax.linear_onecycle_schedule(1, 1.0)),
    "linear_onecycle_three": ("linear_onecycle(2, pct_start=0.1, pct_final=0.5)", 3, optax.linear_onecycle_schedule(3, 2.0, 0.1, 0.5)),
    "piecewise": ("piecewise(1, {100: 0.1, 200: 0.01})", 250, optax.piecewise_constant_schedule(1.0, {100: 0.1, 200: 0.01})),
    "piecewise_percent": ("piecewise(0.3, {0: 0.5, 25%: 2, 80%: 0})", 40, optax.piecewise_constant_schedule(0.3, {0: 0.5, 10: 2.0, 32: 0.0})),
    "interpolate": ("interpolate(1, {4: 0.1, 8: 0.01})", 10, optax.piecewise_interpolate_schedule("linear", 1.0, {4: 0.1, 8: 0.01})),
    "interpolate_cosine": ("interpolate(1, {4: 0.1, 8: 0.01}, kind=cosine)", 10, optax.piecewise_interpolate_schedule("cosine", 1.0, {4: 0.1, 8: 0.01})),
    "interpolate_at_zero": ("interpolate(1, {0: 0.5, 10: 0.1})", 20, optax.piecewise_interpolate_schedule("linear", 1.0, {0: 0.5, 10: 0.1})),
    "sgdr": (
        "sgdr(warmup_cosine(0 -> 1 -> 0, 5), 20)",
        100,
        optax.sgdr_schedule([dict(init_value=0.0, peak_value=1.0, warmup_steps=5, decay_steps=20)] * 7),
    ),
    "sgdr_mult": (
        "sgdr(warmup_cosine(0 -> 1 -> 0.1, 25%), 20, mult=2)",
        140,
        optax.sgdr_schedule([dict(init_value=0.0, peak_value=1.0, warmup_steps=5 * 2**k, decay_steps=20 * 2**k, end_value=0.1) for k in range(4)]),
    ),
    "then": ("linear(0 -> 1) for 10% then cosine(1 -> 0)", 100, optax.join_schedules([optax.linear_schedule(0.0, 1.0, 10), optax.cosine_decay_schedule(1.0, 90)], [10])),
    "then_three": (
        "0.1 for 10 then linear(0.1 -> 0.01) for 50% then 0.01",
        100,
        optax.join_schedules([optax.constant_schedule(0.1), optax.linear_schedule(0.1, 0.01, 50), optax.constant_schedule(0.01)], [10, 60]),
    ),
    "then_percent_of_segment": (
        "linear(0 -> 1, 50%) for 40 then cosine(1 -> 0, 50%)",
        100,
        optax.join_schedules([optax.linear_schedule(0.0, 1.0, 20), optax.cosine_decay_schedule(1.0, 30)], [40]),
    ),
    "then_nested": (
        "linear(0 -> 1) for 10 then min(0.5 for 50% then 0.25, 1)",
        50,
        optax.join_schedules([optax.linear_schedule(0.0, 1.0, 10), optax.constant_schedule(0.5), optax.constant_schedule(0.25)], [10, 30]),
    ),
    "constant": ("constant(0.3)", 10, optax.constant_schedule(0.3)),
    "number": ("0.3", 10, optax.constant_schedule(0.3)),
}


@pytest.mark.parametrize("name", OPTAX)
def test_equal_to_optax_at_every_step(name):
    text, steps, ref = OPTAX[name]
    horizon = steps + EXTRA
    close(ours(text, steps), reference(ref, horizon, eager=name in EAGER))


def test_fractional_power_holds_its_end_under_jit():
    f = schedule_fn("polynomial(1 -> 0, 0.5, 30)", 50)  # numbers are compile-time constants here
    assert np.asarray(jax.vmap(f)(jnp.arange(28, 40))).tolist()[2:] == [0.0] * 10


def test_research_values():
    """The values research §2.2 verified against optax 0.2.8."""
    lin = ours("linear(1 -> 0, 10)", 20)
    assert lin[[0, 1, 5, 10, 11]].tolist() == pytest.approx([1, 0.9, 0.5, 0, 0])
    cos = ours("cosine(1 -> 0.1, exponent=2)", 100)
    assert cos[[50, 100, 120]].tolist() == pytest.approx([0.325, 0.1, 0.1], rel=1e-6)
    one = ours("onecycle(1)", 100)
    assert one[[0, 15, 30, 65, 100, 120]].tolist() == pytest.approx([0.04, 0.52, 1, 0.5, 4e-6, 4e-6], rel=1e-5)
    lin1 = ours("linear_onecycle(1)", 100)
    assert lin1[[0, 15, 30, 57, 85, 92, 100]].tolist() == pytest.approx([0.04, 0.52, 1, 0.5287, 0.04, 0.02134, 4e-6], rel=1e-3)
    exp = ours("exponential(1, 0.5, 10)", 20)
    assert exp[[0, 5, 10, 20]].tolist() == pytest.approx([1, 0.7071, 0.5, 0.25], rel=1e-4)


def test_cosine_from_zero():
    # optax expresses the end as alpha * init, so it cannot start at 0; the formula is (a - b) c + b
    close(ours("cosine(0 -> 1)", 50), 1 - reference(optax.cosine_decay_schedule(1.0, 50), 50 + EXTRA))


# ---------------------------------------------------------------- k1lib and noether shapes


def k1lib_smooth(x, low, high):
    return low + (high - low) * (1 + np.cos(np.pi * (1 - x))) / 2


def k1lib_exp(x, low, high):
    return high + (low - high) * (np.exp(1 - 4 * x) - np.exp(-3)) / (np.e - np.exp(-3))


def k1lib_hump(x, low, high):
    # k1lib: 0.3 * smooth(0.8 low + 0.2 high, high) + 0.7 * smooth(high, low), concatenated by weight
    return np.where(x < 0.3, k1lib_smooth(x / 0.3, 0.8 * low + 0.2 * high, high), k1lib_smooth((x - 0.3) / 0.7, high, low))


@pytest.mark.parametrize("name, formula", [("smooth", k1lib_smooth), ("exp", k1lib_exp), ("hump", k1lib_hump)])
def test_k1lib_shapes(name, formula):
    steps = 100
    x = np.minimum(np.arange(steps + EXTRA) / steps, 1.0)  # progress over the span, held at 1
    close(ours(f"{name}(1 -> 3)", steps), formula(x, 1.0, 3.0))
    close(ours(f"{name}(0.1 -> 1, 40)", steps), formula(np.minimum(np.arange(steps + EXTRA) / 40, 1.0), 0.1, 1.0))


def test_k1lib_values():
    """The values research §3 verified with k1lib 1.8.1 (progress 0.25, 0.5, ...)."""
    assert ours("smooth(1 -> 3)", 100)[[25, 50]].tolist() == pytest.approx([1.2929, 2.0], rel=1e-4)
    assert ours("exp(1 -> 3)", 100)[[0, 25, 50, 100]].tolist() == pytest.approx([1.0, 2.2878, 2.7616, 3.0], rel=1e-4)
    assert ours("hump(0.1 -> 1)", 100)[[0, 30, 65, 100, 110]].tolist() == pytest.approx([0.28, 1.0, 0.55, 0.1, 0.1], rel=1e-5)


def test_noether_shapes():
    steps = 100
    t = np.arange(steps + EXTRA)
    close(ours("values([0.1, 0.2, 0.3])", steps), np.where(t == 0, 0.1, np.where(t == 1, 0.2, 0.3)))
    close(ours("step(1, 0.1, at=[20%, 50%])", steps), 0.1 ** ((t >= 20).astype(int) + (t >= 50)))
    close(ours("every(1, 0.5, 30%)", steps), 0.5 ** (t // 30))
    # research §4.2: StepFixedSchedule steps [.5, .2], factor .1, T=100; StepIntervalSchedule .3, factor .5
    assert ours("step(1, 0.1, at=[20%, 50%])", steps)[[19, 20, 50]].tolist() == pytest.approx([1, 0.1, 0.01])
    assert ours("every(1, 0.5, 30%)", steps)[[29, 30, 90]].tolist() == pytest.approx([1, 0.5, 0.125])


def test_holds_after_horizon_unlike_noether():
    # noether's LinearDecreasing 1 -> 0 over 10 extrapolates to -0.111 at step 10; here it holds
    values = ours("linear(1 -> 0)", 10)
    assert values.min() == 0.0 and (values[10:] == 0.0).all()


def test_pointwise_composition():
    steps = 60
    t = np.arange(steps + EXTRA)
    lin = reference(optax.linear_schedule(0.0, 2.0, steps), steps + EXTRA)
    cos = reference(optax.cosine_decay_schedule(1.0, steps), steps + EXTRA)
    close(ours("min(linear(0 -> 2), cosine(1 -> 0))", steps), np.minimum(lin, cos))
    close(ours("max(linear(0 -> 2), cosine(1 -> 0))", steps), np.maximum(lin, cos))
    close(ours("clip(linear(0 -> 2), 0.5, 1.5)", steps), np.clip(lin, 0.5, 1.5))
    close(ours("0.5 * cosine(1 -> 0) + linear(0 -> 2) / 4 - 0.1", steps), 0.5 * cos + lin / 4 - 0.1)
    close(ours("-cosine(1 -> 0) ** 2 + 1", steps), -(cos**2) + 1)
    assert t.shape == lin.shape


def test_stepwise_holds_a_schedule_at_each_intervals_start():
    steps = 60
    lin = reference(optax.linear_schedule(0.0, 2.0, steps), steps + EXTRA)
    t = np.arange(steps + EXTRA)
    close(ours("stepwise(linear(0 -> 2), 20)", steps), lin[(t // 20) * 20])


def test_every_catalog_entry_is_exercised():
    tested = " ".join(t for t, _, _ in OPTAX.values()) + " smooth exp hump values step every stepwise min max clip"
    assert all(name + "(" in tested or name in tested.split() for name in catalog.SCHEDULES)


# ---------------------------------------------------------------- structure and numbers


def test_structure_is_jax_free_and_hashable():
    lowered = lower(parse_expression("warmup_cosine(0 -> 1 -> 0, 5%) for 50% then sgdr(cosine(1 -> 0), 10) * 2"), 200)
    hash(lowered.structure)
    assert all(type(x) is float for x in lowered.numbers)

    def plain(s):
        return all(isinstance(x, (str, int, bool)) or (isinstance(x, tuple) and plain(x)) for x in s)

    assert plain(lowered.structure)


SAME = [
    ("cosine(0.1 -> 0)", 100, "cosine(0.2 -> 0.01)", 250),
    ("linear(0 -> 0.01) for 10% then cosine(0.01 -> 1e-5)", 100, "linear(0 -> 0.1) for 30 then cosine(0.1 -> 0)", 77),
    ("warmup_cosine(0 -> 1e-3 -> 0, 5%)", 10_000, "warmup_cosine(0 -> 1 -> 0.5, 3)", 10),
    ("onecycle(1)", 100, "onecycle(3, pct_start=0.5, div=5)", 1000),
    ("piecewise(1, {10: 0.1, 50%: 0.5})", 100, "piecewise(2, {1: 0.3, 5: 0.5})", 10),
    ("sgdr(cosine(1 -> 0), 10)", 100, "sgdr(cosine(2 -> 1), 25%, mult=2)", 300),
    ("exponential(1, 0.5, 10)", 50, "exponential(2, 0.9, 10%, begin=3)", 500),
]


@pytest.mark.parametrize("a, steps_a, b, steps_b", SAME)
def test_numbers_only_changes_share_one_structure(a, steps_a, b, steps_b):
    la, lb = lower(parse_expression(a), steps_a), lower(parse_expression(b), steps_b)
    assert la.structure == lb.structure
    assert len(la.numbers) == len(lb.numbers) and la.numbers != lb.numbers


def test_static_choices_change_the_structure():
    def structure(text):
        return lower(parse_expression(text), 100).structure

    assert structure("exponential(1, 0.5, 10)") != structure("exponential(1, 0.5, 10, staircase=true)")
    assert structure("interpolate(1, {10: 0.5})") != structure("interpolate(1, {10: 0.5}, kind=cosine)")
    assert structure("piecewise(1, {10: 0.5})") != structure("piecewise(1, {10: 0.5, 20: 0.5})")


def test_one_executable_for_phases_differing_in_numbers():
    traces = []
    fn = build(lower(parse_expression("linear(0 -> 1) for 10% then cosine(1 -> 0)"), 100).structure)

    @jax.jit
    def run(numbers):
        traces.append(1)
        return jax.lax.scan(lambda c, step: (c, fn(step, numbers)), 0, jnp.arange(300, dtype=jnp.int32))[1]

    for text, steps in [("linear(0 -> 1) for 10% then cosine(1 -> 0)", 100), ("linear(0 -> 0.5) for 40 then cosine(0.5 -> 0.1)", 300)]:
        lowered = lower(parse_expression(text), steps)
        close(run(jnp.asarray(lowered.numbers, jnp.float32)), ours(text, steps, 300))
    assert len(traces) == 1


def test_traces_inside_scan_with_traced_step():
    text = "warmup_cosine(0 -> 1 -> 0.1, 5%) for 50% then sgdr(onecycle(1) * linear(1 -> 0.5), 20, mult=1.5)"
    steps = 200
    lowered = lower(parse_expression(text), steps)
    fn = build(lowered.structure)

    @jax.jit
    def run(numbers):
        def body(step, _):
            return step + 1, fn(step, numbers)

        return jax.lax.scan(body, jnp.int32(0), None, length=steps + EXTRA)[1]

    scanned = run(jnp.asarray(lowered.numbers, jnp.float32))
    close(scanned, ours(text, steps))
    # python ints and concrete arrays work too
    f = schedule_fn(text, steps)
    assert float(f(7)) == pytest.approx(float(scanned[7]), rel=1e-6)


def test_sgdr_cycle_boundaries_are_exact():
    # cycles of 10, 15, 22.5, ... steps: a restart exactly at each (rounded-free) start
    values = ours("sgdr(linear(1 -> 0), 10, mult=1.5)", 60, 60)
    assert values[[0, 10, 25]].tolist() == [1.0, 1.0, 1.0]
    assert values[9] == pytest.approx(0.1) and values[24] == pytest.approx(1 / 15, rel=1e-5)


# ---------------------------------------------------------------- schedc.schedule


def test_schedule_with_adam():
    steps = 40
    ours_fn = schedc.schedule("warmup_cosine(0 -> 1e-1 -> 0, 5%)", steps=steps)
    ref_fn = optax.warmup_cosine_decay_schedule(0.0, 1e-1, 2, steps)

    def fit(opt):
        params = {"w": jnp.array([1.0, -2.0])}
        state = opt.init(params)

        @jax.jit
        def step(params, state):
            grads = jax.grad(lambda p: jnp.sum(p["w"] ** 2))(params)
            updates, state = opt.update(grads, state, params)
            return optax.apply_updates(params, updates), state

        for _ in range(steps):
            params, state = step(params, state)
        return params["w"]

    np.testing.assert_allclose(fit(optax.adam(ours_fn)), fit(optax.adam(ref_fn)), rtol=1e-5)


def test_schedule_binds_names_and_placeholders():
    f = schedc.schedule("cosine(base -> base / 10) * $scale", steps=10, base=0.5, scale=np.float32(2.0))
    assert float(f(0)) == pytest.approx(1.0) and float(f(10)) == pytest.approx(0.1)
    # inject_hyperparams logs the value used by the latest update: schedule(n - 1) after n updates
    f = schedc.schedule("warmup_cosine(0 -> 1e-3 -> 0, warmup=5%)", steps=100)
    opt = optax.inject_hyperparams(optax.sgd)(learning_rate=f)
    params = {"w": jnp.ones(2)}
    state = opt.init(params)
    for _ in range(3):
        _, state = opt.update({"w": jnp.ones(2)}, state, params)
    assert float(state.hyperparams["learning_rate"]) == pytest.approx(float(f(2)))


def test_schedule_errors_show_the_expression():
    with pytest.raises(SchedError) as err:
        schedc.schedule("linear(0 -> 1) for 10% then cosin(1 -> 0)", steps=100)
    text = str(err.value)
    assert "<schedule>:1:29: error[E0104]: unknown schedule `cosin`" in text
    assert "linear(0 -> 1) for 10% then cosin(1 -> 0)\n" in text and "^^^^^" in text
    with pytest.raises(SchedError) as err:
        schedc.schedule("warmup_cosine(0 -> 1 -> 0, 150%)", steps=100)
    assert [(d.code, d.span.column) for d in err.value.diagnostics] == [("E0209", 28)]
    with pytest.raises(SchedError) as err:
        schedc.schedule("cosine(bse -> 0) + $x", steps=100, base=1)
    assert [(d.code, d.span.column, d.help) for d in err.value.diagnostics][0] == ("E0101", 8, "did you mean `base`?")
    assert err.value.diagnostics[1].code == "E0110"
    with pytest.raises(SchedError) as err:
        schedc.schedule("interpolate(1, {10: 0.5}, kind=cosine) * cosine(1 -> 0, steps=n)", steps=100)
    assert [(d.code, d.span.column) for d in err.value.diagnostics] == [("E0101", 63)]
    with pytest.raises(SchedError) as err:
        schedc.schedule("cosine(1 -> ", steps=100)
    assert err.value.diagnostics[0].code == "E0003"
    with pytest.raises(ValueError):
        schedc.schedule("0.1", steps=0)
    with pytest.raises(TypeError):
        schedc.schedule("a", steps=10, a="x")
    for not_text in (0.1, None, jnp.asarray(0.1)):  # (a number was "can only concatenate str (not "float") to str")
        with pytest.raises(TypeError, match=rf'^schedc.schedule takes the text of a schedule expression, such as "cosine\(0.1 -> 0\)" or "0.1", got {type(not_text).__name__}$'):
            schedc.schedule(not_text, steps=10)


def test_lower_refuses_invalid_expressions():
    with pytest.raises(SchedError):
        lower(parse_expression("warmup_cosine(0 -> 1 -> 0, 100)"), 100)
    assert lower(0.5, 10) == lower(parse_expression("0.5"), 10)
    assert math.isclose(float(schedule_fn("0.5", 10)(3)), 0.5)


# ---------------------------------------------------------------- checked means lowerable

NUMBERS = st.sampled_from(["0", "0.1", "1", "2.5", "-1", "1e-3", "10"])
DURATIONS = st.sampled_from(["0", "1", "5", "10", "50", "100", "200", "0%", "10%", "50%", "100%", "150%", "2.5"])


def _argument(param, schedules):
    if param.kind == "number":
        return NUMBERS
    if param.kind == "duration":
        return DURATIONS
    if param.kind == "schedule":
        return schedules
    if param.kind == "bool":
        return st.sampled_from(["true", "false"])
    if param.kind == "symbol":
        return st.sampled_from(list(param.choices) + ["bogus"])
    if param.kind == "map":
        entries = st.lists(st.tuples(DURATIONS, NUMBERS), max_size=3)
        return entries.map(lambda es: "{" + ", ".join(f"{k}: {v}" for k, v in es) + "}")
    items = DURATIONS if param.name == "at" else NUMBERS
    return st.lists(items, max_size=3).map(lambda xs: "[" + ", ".join(xs) + "]")


def _call(sig, schedules):
    arrow = st.lists(NUMBERS, min_size=sig.arrow, max_size=sig.arrow).map(" -> ".join) if sig.arrow else st.just(None)
    params = st.tuples(*(st.one_of(st.none(), _argument(p, schedules)) if not p.required else _argument(p, schedules) for p in sig.params))

    def text(parts):
        head, values = parts
        args = [head] if head is not None else []
        args += [f"{p.name}={v}" for p, v in zip(sig.params, values) if v is not None]
        return f"{sig.name}({', '.join(args)})"

    return st.tuples(arrow, params).map(text)


def _expressions():
    def extend(schedules):
        calls = st.one_of(*(_call(sig, schedules) for sig in catalog.SCHEDULES.values()))
        then = st.tuples(schedules, DURATIONS, schedules).map(lambda p: f"{p[0]} for {p[1]} then {p[2]}")
        arith = st.tuples(schedules, st.sampled_from(["+", "-", "*", "/"]), schedules).map(lambda p: f"({p[0]}) {p[1]} ({p[2]})")
        return st.one_of(calls, then, arith)

    return st.recursive(NUMBERS, extend, max_leaves=4)


@settings(max_examples=int(os.environ.get("SCHEDC_FUZZ_EXAMPLES", 300)), deadline=None)
@given(_expressions(), st.sampled_from([1, 7, 100]))
def test_every_checked_expression_lowers(text, steps):
    parsed = syntax.parse("lr " + text)
    assert parsed.ok, text
    expr = parsed.file.items[0].value
    if any(d.is_error for d in check_schedule(expr, steps)):
        with pytest.raises(SchedError):
            lower(expr, steps)
        return
    lowered = lower(expr, steps)
    assert len(lowered.numbers) == size(lowered.structure)
    assert all(math.isfinite(x) for x in lowered.numbers)
