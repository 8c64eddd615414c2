"""The shape pass of schedc.check.arguments: every schedule-shape diagnostic, with its line and column (no JAX)."""

import subprocess
import sys

import pytest

from schedc.lang import nodes as n
from schedc.lang import syntax
from schedc.check.arguments import LEARNING_RATE, check_schedule, optimizer_role
from schedc.check.time_model import duration_steps, segments


def lr_of(text: str):
    """The lr expression of the first phase of `text`."""
    parsed = syntax.parse(text)
    assert parsed.ok, parsed.diagnostics
    phase = next(i for i in parsed.file.items if isinstance(i, n.Phase))
    return phase.lr


def problems(text: str, steps: int | None = 100, role=LEARNING_RATE):
    return [(d.code, d.span.line, d.span.column) for d in check_schedule(lr_of(text), steps, role)]


# name: (schedule, phase steps, code, the text the diagnostic points at). The schedule
# sits on line 2 of the file, after a comment line, so lines and columns are both tested.
CASES = {
    "warmup_cosine_whole_span": ("warmup_cosine(0 -> 1 -> 0, 100)", 100, "E0207", "100)"),
    "warmup_cosine_steps": ("warmup_cosine(0 -> 1 -> 0, 20, steps=20)", 100, "E0207", "20,"),
    "warmup_constant_pct": ("warmup_constant(0 -> 1, 100%)", 100, "E0207", "100%"),
    "warmup_exponential": ("warmup_exponential(0 -> 1, 12, 0.5, 5)", 10, "E0207", "12"),
    "piecewise_order": ("piecewise(0.1, {50: 0.5, 20: 0.1})", 100, "E0208", "20:"),
    "piecewise_duplicate": ("interpolate(0.1, {50%: 0.5, 50: 0.1})", 100, "E0208", "50:"),
    "step_points": ("step(1, 0.1, at=[50%, 20%])", 100, "E0208", "20%"),
    "onecycle_fractions": ("linear_onecycle(1, pct_start=0.5, pct_final=0.4)", 100, "E0208", "0.4"),
    "percent_over": ("warmup_constant(0 -> 1, 150%)", 100, "E0209", "150%"),
    "percent_negative": ("linear(0 -> 1, -10%)", 100, "E0209", "-10%"),
    "for_too_long": ("0.1 for 60 then 0.05 for 50 then 0.01", 100, "E0212", "50 then"),
    "for_fills_span": ("0.1 for 100% then 0.01", 100, "E0212", "100%"),
    "for_zero": ("0.1 for 0 then 0.01", 100, "E0213", "0 then"),
    "negative_rate": ("exponential(0.1, -0.5, 10)", 100, "E0213", "-0.5"),
    "pct_start": ("onecycle(1, pct_start=1.5)", 100, "E0213", "1.5"),
    "sgdr_mult": ("sgdr(cosine(1 -> 0), 10, mult=0.5)", 100, "E0213", "0.5"),
    "negative_scale": ("piecewise(1, {10: -0.5})", 100, "E0213", "-0.5"),
    "pct_rounds_to_zero": ("linear(0 -> 1, 1%)", 50, "E0213", "1%"),
    "empty_values": ("values([])", 50, "E0213", "[]"),
    "negative_waypoint": ("cosine(-1 -> 0)", 100, "E0204", "-1"),
    "negative_constant": ("-0.1", 100, "E0204", "-0.1"),
    "negative_in_min": ("min(constant(-1), 0.5)", 100, "E0204", "-1"),
    "non_finite": ("1e999 * linear(0 -> 1)", 100, "E0210", "1e999"),
    "division_by_zero": ("cosine(1 / 0 -> 0)", 100, "E0210", "1 / 0"),
    "unknown": ("cosin(1 -> 0)", 100, "E0104", "cosin"),
    "arity": ("linear(0 -> 1, 10, 20)", 100, "E0201", "20"),
    "keyword": ("cosine(1 -> 0, exponant=2)", 100, "E0106", "exponant"),
    "twice": ("cosine(1 -> 0, 10, steps=20)", 100, "E0214", "steps=20"),
    "string_waypoint": ('cosine("a" -> 0)', 100, "E0202", '"a"'),
    "schedule_as_number": ("exponential(linear(1 -> 0), 0.5, 10)", 100, "E0202", "linear"),
    "string_as_schedule": ('min(linear(0 -> 1), "x")', 100, "E0202", '"x"'),
    "bare_arrow": ("1 -> 0", 100, "E0202", "1 -> 0"),
    "percent_as_value": ("10%", 100, "E0202", "10%"),
    "fractional_steps": ("linear(0 -> 1, 10.5)", 100, "E0202", "10.5"),
    "bad_symbol": ("interpolate(1, {10: 0.5}, kind=cosin)", 100, "E0202", "cosin)"),
    "bool_expected": ("exponential(1, 0.5, 10, staircase=1)", 100, "E0202", "1)"),
    "map_expected": ("piecewise(1, [10, 20])", 100, "E0202", "[10"),
    "sgdr_inner_span": ("sgdr(warmup_cosine(0 -> 1 -> 0, 100%), 50)", 1000, "E0207", "100%"),
    "then_segment": ("linear(0 -> 1) for 10 then warmup_constant(0 -> 1, 90)", 100, "E0207", "90"),
}


@pytest.mark.parametrize("name", CASES)
def test_each_problem_with_position(name):
    expr, steps, code, at = CASES[name]
    line = f"phase {steps} lr {expr} <>"
    assert problems(f"# a comment\n{line}", steps) == [(code, 2, line.rindex(at) + 1)]


GOOD = [
    "0.1",
    "constant(0.1)",
    "linear(0 -> 1)",
    "0.5 * cosine(1 -> 0) + 0.1",
    "cosine(1 -> 0) * linear(0 -> 1, 50%)",
    "warmup_cosine(0 -> 1e-3 -> 0, 5%)",
    "warmup_exponential(0 -> 1, 10, 0.5, 5, begin=3, staircase=true, end=0.1)",
    "linear(0 -> 0.01) for 10% then cosine(0.01 -> 1e-5)",
    "0.1 for 10 then 0.05 for 20% then 0.01",
    "piecewise(0.1, {10: 0.5, 50%: 0.1})",
    "interpolate(0.1, {10: 0.5, 60: 0.1}, kind=cosine)",
    "onecycle(1, pct_start=0.25)",
    "linear_onecycle(1, 80)",
    "sgdr(cosine(1 -> 0), 25, mult=2)",
    "smooth(0 -> 1) + hump(0 -> 1) - exp(1 -> 0, 50)",
    "values([0.1, 0.2, 0.3])",
    "step(1, 0.1, at=[10%, 50])",
    "every(1, 0.5, 10%)",
    "clip(max(linear(0 -> 2), 0.1), 0.2, 1)",
    "linear(1 -> 0) ** 2 / 2",
]


@pytest.mark.parametrize("expr", GOOD)
def test_valid_schedules_have_no_problems(expr):
    assert problems(f"phase 100 lr {expr} <>") == []


def test_unknown_span_skips_what_needs_it():
    # 100% of an unknown span cannot be compared with the warmup; plain step counts still are
    assert problems("phase 100 lr warmup_cosine(0 -> 1 -> 0, 100%) <>", None) == []
    assert problems("phase 100 lr warmup_cosine(0 -> 1 -> 0, 30, 20) <>", None) == [("E0207", 1, 41)]
    assert problems("phase 100 lr 0.1 for 10% then 0.01 <>", None) == []


def test_negative_values_are_fine_for_other_hyperparameters():
    assert problems("phase 100 lr linear(-1 -> 0) <>", 100, optimizer_role("weight_decay", "adamw")) == []
    assert problems("phase 100 lr linear(-1 -> 0) <>", 100, LEARNING_RATE) == [("E0204", 1, 21)]
    # arithmetic may shift a negative waypoint: not judged
    assert problems("phase 100 lr linear(-1 -> 0) + 1 <>") == []


def test_help_and_did_you_mean():
    (d,) = check_schedule(lr_of("phase 100 lr cosin(1 -> 0) <>"), 100)
    assert d.help == "did you mean `cosine`?"
    (d,) = check_schedule(lr_of("phase 100 lr interpolate(1, {10: 0.5}, kind=cosin) <>"), 100)
    assert "did you mean `cosine`?" == d.help


def test_time_model():
    then = lr_of("phase 105 lr 0.1 for 10% then 0.2 for 12.5% then 0.3 <>")
    assert [duration_steps(d, 105) for d in then.durations] == [10, 13]
    assert segments(then, 105) == [10, 13, 82]
    # exact percentages: 29% of 100 is 29 steps (0.29 * 100 in floats is 28.999...)
    assert duration_steps(lr_of("phase 100 lr linear(0 -> 1) for 29% then 0 <>").durations[0], 100) == 29


def test_no_jax_import():
    code = "import sys, schedc.check.arguments as s, schedc.lang.syntax as y; s.check_schedule(y.parse('lr cosine(1 -> 0)').file.items[0].value, 10); print('jax' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
