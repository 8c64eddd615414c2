"""One test per model-free diagnostic code: the code, its line and its column.

Plus: every CODES example of a model-free code produces its code, and the
checker's behaviour on partial trees, placeholders and the `let` environment.
"""

from __future__ import annotations

import pytest

from schedc.lang import nodes as n
from schedc.check.checker import check_file
from schedc.pipeline import check_bytes, check_source
from schedc.lang.program import env_of
from schedc.lang.diagnostics import CODES, INTERNAL_CODES, PYTHON_CODES, SWEEP_CODES
from schedc.lang.syntax import parse

# Codes produced with a model only (schedc.plan.binding): not this checker's.
MODEL_CODES = {c for c in CODES if c.startswith("E04")} | {"W0103", "W0105"}
MODEL_FREE = sorted(set(CODES) - MODEL_CODES - INTERNAL_CODES - PYTHON_CODES - SWEEP_CODES)  # sweeps': tests/test_sweep.py


def codes(text: str, **kw) -> list[str]:
    return [d.code for d in check_source(text, **kw)[1]]


def find(text: str, code: str, **kw):
    """The first diagnostic with `code`, or fail showing what was found instead."""
    _, diags = check_source(text, "t.sched", **kw)
    for d in diags:
        if d.code == code:
            return d
    pytest.fail(f"no {code} in {[(d.code, d.message) for d in diags]}")


# (code, source, line, column) — the source puts the problem past line 1 where it can
CASES = [
    ("E0001", "seed 1\nphase 100 lr < free a >", 2, 14),
    ("E0002", "seed 1\nphase 100 lr 0.1 < free a @ >", 2, 27),
    ("E0003", "seed 1\nphase 100 lr 0.1 < free a", 2, 26),
    ("E0005", "seed 1\nlet x = " + "-" * 300 + "1", 2, 1),
    ("E0006", "seed 1\nphase 10 lr 0.1 < free gp** >", 2, 26),
    ("E0006", "phase 10 lr 0.1 <>\nparams < a.b**: free in 0 >", 2, 13),
    ("E0101", "let base = 1\nphase 100 lr bse < free a >", 2, 14),
    ("E0101", "let a = b\nlet b = 1\nphase 10 lr a < free x >", 1, 9),  # used before its definition
    ("E0102", "let a = 1\nlet a = 2\nphase 10 lr a < free x >", 2, 5),
    ("E0103", "phase warm 10 lr 0.1 < free a >\nphase warm 10 lr 0.1 < free a >", 2, 7),
    ("E0103", "repeat 2 < phase w 10 lr 0.1 < free a > phase w 10 lr 0.1 < free b > >", 1, 47),
    ("E0104", "seed 1\nphase 100 lr cosin(0.1 -> 0) < free a >", 2, 14),
    ("E0104", "let s = 0.1 * cosin(1 -> 0)\nphase 100 lr s < free a >", 1, 15),
    ("E0105", "seed 1\nphase 100 lr 0.1 optimizer adamm < free a >", 2, 28),
    ("E0105", "optimizer sgdd(momentum = 0.9)\nphase 100 lr 0.1 < free a >", 1, 11),
    ("E0106", "seed 1\nphase 100 lr 0.1 optimizer adamw(weight_decy=1e-4) < free a >", 2, 34),
    ("E0106", "phase 100 lr 0.1 optimizer polyak_sgd < free a >", 1, 14),  # no learning_rate to take the lr
    ("E0106", "phase 100 lr cosine(1 -> 0, exponant=2) < free a >", 1, 29),
    ("E0107", "seed 1\nphase 100 lr 0.1 < free a; init a ~ gaussian(0, 1) >", 2, 37),
    ("E0107", "phase 100 lr 0.1 < free a >\nparams < a: init gauss(0, 1) at 0 >", 2, 18),
    ("E0108", "seed 1\nphase 100 lr 0.1 < free a; stop when los < 1e-3 >", 2, 38),
    ("E0109", "phase 100 lr 0.1 < free a >\nparams < a: free in 3 >", 2, 21),
    ("E0109", "phase warm 100 lr 0.1 < free a >\nparams < a: init normal(0, 1) at wram >", 2, 34),
    ("E0110", "seed 1\nphase 100 lr $rate < free a >", 2, 14),
    ("E0111", "default frozen\nphase 10 lr 0.1 < free a >", 1, 9),
    ("E0201", "seed 1\nphase 100 lr linear(0.1) < free a >", 2, 21),
    ("E0201", "phase 100 lr 0.1 optimizer sgd(0.1, 0.9, false, 1, 2) < free a >", 1, 52),
    ("E0202", "seed 1\nphase 100 lr cosine(\"a\" -> 0) < free a >", 2, 21),
    ("E0202", "phase 100 lr 0.1 optimizer sgd(nesterov = 1) < free a >", 1, 43),
    ("E0202", "phase 100 lr 0.1 < free a; init a = \"x\" >", 1, 37),
    ("E0202", "phase 100 lr interpolate(1, {10: 0.5}, kind = cosin) < free a >", 1, 47),
    ("E0202", "seed 1.5\nphase 100 lr 0.1 < free a >", 1, 6),
    ("E0203", "seed 1\nphase 0 lr 0.1 < free a >", 2, 7),
    ("E0203", "phase 2.5 lr 0.1 < free a >", 1, 7),
    ("E0203", "phase 9999999999 lr 0.1 < free a >", 1, 7),
    ("E0203", "let n = 0\nphase n lr 0.1 < free a >", 2, 7),
    ("E0204", "seed 1\nphase 100 lr -0.1 < free a >", 2, 14),
    ("E0204", "lr -1\nphase 100 < free a >", 1, 4),
    ("E0204", "phase 100 lr 0.1 < free a lr -0.5 >", 1, 30),
    ("E0205", "seed 1\nphase 100 lr 0.1 < free a; init a ~ normal(0, 0) >", 2, 47),
    ("E0205", "phase 100 lr 0.1 < free a >\nparams < a: init normal(0, -1) at 0 >", 2, 28),
    ("E0206", "seed 1\nphase 100 lr 0.1 < free a; init a ~ uniform(1, 0) >", 2, 48),
    ("E0207", "seed 1\nphase 100 lr warmup_cosine(0 -> 1 -> 0, 100) < free a >", 2, 41),
    ("E0208", "seed 1\nphase 100 lr piecewise(0.1, {50: 0.5, 20: 0.1}) < free a >", 2, 39),
    ("E0209", "seed 1\nphase 100 lr warmup_constant(0 -> 1, 150%) < free a >", 2, 38),
    ("E0210", "seed 1\nphase 100 lr 1e999 < free a >", 2, 14),
    ("E0210", "phase 100 lr 1e30 * 1e30 < free a >", 1, 14),
    ("E0210", "seed 9223372036854775808\nphase 100 lr 0.1 < free a >", 1, 6),  # 2**63: past what jax.random.key takes
    ("E0210", "phase 100 lr 0.1 < free a; init a = 1 / 0 >", 1, 37),
    ("E0211", "seed 1\nrepeat 0 < phase 10 lr 0.1 < free a > >", 2, 8),
    ("E0212", "seed 1\nphase 100 lr 0.1 for 200 then 0.01 < free a >", 2, 22),
    ("E0213", "seed 1\nphase 100 lr exponential(0.1, -0.5, 10) < free a >", 2, 31),
    ("E0213", "phase 100 lr 0.1 < free a; stop when loss_change < 0 >", 1, 52),
    ("E0213", "phase 100 lr 0.1 < free a; stop when loss_change < 1e-3 over 0 >", 1, 62),
    ("E0214", "seed 1\nphase 100 lr 0.1 optimizer adam(b1=0.9, b1=0.8) < free a >", 2, 41),
    ("E0215", "optimizer sgd\nphase 100 < free a >", 2, 1),
    ("E0215", "phase 100 < free a >", 1, 1),  # the default optimizer, adam, needs one
    ("E0215", "phase 100 optimizer lbfgs < free a; free b optimizer sgd >", 1, 37),
    ("E0216", "seed 1\nseed 2\nphase 10 lr 0.1 < free a >", 2, 1),
    ("E0221", "phase 100 lr 0.1 optimizer adam(b1=1.5) < free a >", 1, 36),
    ("E0221", "optimizer sgd(momentum=-0.1)\nphase 100 lr 0.1 < free a >", 1, 24),
    ("E0221", "phase 100 lr 0.1 optimizer adam(b1=linear(-0.5 -> 0.9)) < free a >", 1, 43),
    ("E0301", "phase 100 lr 0.1 <>\nparams < a: free in 0 | fixed in 0 >", 2, 25),
    ("E0301", "phase 100 lr 0.1 < free a >\nparams < a: fixed in 0 >", 2, 13),
    ("E0301", "phase w 100 lr 0.1 < fix a; free b >\nparams < a: free after w >", 2, 13),
    ("E0302", "seed 1\nphase 100 lr 0.1 < init a = 1; init a = 2 >", 2, 37),
    ("E0302", "phase 100 lr 0.1 < free a >\nparams < a: init value(1) at 0 | init normal(0, 1) at 0 >", 2, 34),
    ("E0302", "phase 100 lr 0.1 < free a; init a = 1 >\nparams < a: init value(2) at 0 >", 2, 13),
    ("E0303", "seed 1\nphase 100 lr 0.1 < free a; stop when loss < 1; stop when loss < 2 >", 2, 48),
    ("E0112", "seed 1\nphase 100 lr 0.1 < free a; stop when val.loss < 0.1 >", 2, 38),
    ("E0112", "batch 8\nphase 3 epochs lr 0.1 < free a; keep best val.loss >", 2, 43),
    ("E0113", 'eval "m.py:f" every epoch\nbatch 8\nphase 3 epochs lr 0.1 < free a; stop when accuracy stops improving for 3 evals >', 3, 43),
    ("E0114", 'eval "m.py:f" every epoch\nbatch 8\nphase 3 epochs lr 0.1 < free a; stop when val.acc stops improvin for 3 evals >', 3, 57),
    ("E0114", 'eval "m.py:f" every epoch\nbatch 8\nphase 3 epochs lr 0.1 < free a; keep bst val.acc >', 3, 38),
    ("E0213", 'eval "m.py:f" every epoch\nbatch 8\nphase 3 epochs lr 0.1 < free a; stop when val.acc stops improving for 0 evals >', 3, 71),
    ("E0217", "seed 1\nbatch 0\nphase 10 lr 0.1 < free a >", 2, 7),
    ("E0217", "phase 10 batch 2.5 lr 0.1 < free a >", 1, 16),
    ("E0218", "batch 8\nphase 0 epochs lr 0.1 < free a >", 2, 7),
    ("E0218", "batch 8\nphase 10 lr warmup_cosine(0 -> 1 -> 0, 0 epochs) < free a >", 2, 40),
    ("E0219", 'seed 1\neval "m.py:f" every 0 steps\nphase 10 lr 0.1 < free a >', 2, 21),
    ("E0220", 'eval "m.py:f" every 10 steps\nphase 100 lr 0.1 < free a; stop when val.loss < 0.1 after 50 >', 2, 59),
    ("E0222", 'eval "m.py:f" every 50 steps\nphase 30 lr 0.1 < free a; keep best val.loss >', 2, 1),
    ("E0222", 'batch 8\neval "m.py:f" every 5 epochs\nphase w 3 epochs lr 0.1 < free a; stop when val.loss < 0.1 >', 3, 1),
    ("E0207", "batch 8\nphase 3 epochs lr warmup_cosine(0 -> 1 -> 0, 5 epochs) < free a >", 2, 46),
    ("E0212", "batch 8\nphase 3 epochs lr linear(0 -> 1) for 4 epochs then 1 < free a >", 2, 38),
    ("W0106", "seed 1\nphase 3 epochs lr 0.1 < free a >", 2, 1),
    ("W0106", "phase 30 lr linear(0 -> 1) for 1 epoch then 1 < free a >", 1, 1),
    ("W0107", 'eval "m.py:f" every 5 steps\nphase 30 lr 0.1 < free a; free b lr 0.1 * plateau(on=val.top1_acc) >', 2, 54),
    ("W0101", "seed 1\nlet unused = 1\nphase 10 lr 0.1 < free a >", 2, 5),
    ("W0102", "seed 1\nphase 10 lr 0.1 < free a; fix a >", 2, 19),
    ("W0102", "phase 10 lr 0.1 < fix a, b; free b; free a lr 0.01 >", 1, 19),
    ("W0104", "seed 1\nphase 10 lr 0.1 < fix a >", 2, 1),
    ("W0108", "", 1, 1),
    ("W0108", "# a comment\nseed 1\nlr 0.1", 1, 1),
    ("W0108", "seed 1\nrepeat 3 < >", 2, 1),
]


@pytest.mark.parametrize("code, text, line, column", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_code_position(code, text, line, column):
    d = find(text, code)
    assert (d.span.line, d.span.column) == (line, column), d
    assert d.severity == CODES[code].severity
    assert d.file == "t.sched"
    assert d.message and not d.message[0].isupper() and not d.message.endswith(".")


def test_every_model_free_code_has_a_position_test():
    tested = {c[0] for c in CASES} | {"E0004"}  # E0004: test_binary_input below
    assert tested == set(MODEL_FREE)


@pytest.mark.parametrize("code", MODEL_FREE)
def test_codes_example_produces_its_code(code):
    example = CODES[code].example
    if code == "E0004":
        diags = check_bytes(example.encode("utf-8", "surrogateescape"), "x")[1]
    else:
        diags = check_source(example, "x")[1]
    assert code in [d.code for d in diags]


def test_binary_input():
    parsed, diags, text = check_bytes(b"seed 1\nphase \xff 10", "b.sched")
    assert parsed is None and text is None
    assert [(d.code, d.span.line, d.span.column, d.file) for d in diags] == [("E0004", 2, 7, "b.sched")]
    _, diags, _ = check_bytes(b"seed 1\x00", "n.sched")
    assert [(d.code, d.span.column) for d in diags] == [("E0004", 7)]


def test_bom_is_accepted():
    parsed, diags, text = check_bytes("\ufeffphase 10 lr 0.1 < free a >".encode(), "x")
    assert diags == [] and text.startswith("phase")


# ---------------------------------------------------------------- clean inputs


def test_design_one_liner_is_clean():
    assert codes("phase 100 lr 0.1 < free gp.coefficients; init line.amplitude ~ normal(0, 0.1) >") == []


DESIGN_EXAMPLE = """
model "spectral_line.py:build_model"
loss  "spectral_line.py:loss"
data  "spectral_line.py:make_data"
seed 42
optimizer adam
default fixed

let base = 0.05

phase warmup 300 lr base <
  free gp.coefficients;
  init gp.coefficients ~ normal(0, 0.1);
>

phase refine 200 lr cosine(base -> base / 10) optimizer adam(b1 = linear(0.9 -> 0.95)) <
  free gp.**, line.*;
  free line.width lr 0.1 * base;
  fix line.center;
  init line.amplitude ~ normal(1, 0.5);
  init line.width = 1.0;
  carry state;
  stop when loss_change < 1e-6 over 50 after 100;
>

repeat 3 <
  phase 50 lr 0.01 < free gp.** >
  phase 50 lr 0.01 < free line.{amplitude,width} >
>

phase 100 lr linear(0 -> 0.01) for 10% then cosine(0.01 -> 1e-5) < free ** >
"""

PARAMS_EXAMPLE = """
phase 100 lr 0.1 <>
phase fine 50 lr 0.01 <>
params <
  gp.coefficients: free in 0, 1;
  gp.kernel.*:     free after 1;
  line.amplitude:  free in fine | init normal(0, 0.1) at 0;
  line.center:     fixed in 0;
  line.width:      free until 0 | init value(1.5) at 1 | init uniform(0, 2) at 0;
>
"""


@pytest.mark.parametrize("text", [DESIGN_EXAMPLE, PARAMS_EXAMPLE], ids=["phases", "params"])
def test_design_examples_are_clean(text):
    assert codes(text) == []


def test_repeated_phases_share_their_name():
    text = "repeat 3 < phase gp 10 lr 0.1 < free a > >\nparams < b: free in gp | init value(1) at gp >"
    assert codes(text) == []


def test_symbol_arguments_are_not_undefined_names():
    assert codes("phase 100 lr interpolate(0.1, {10: 0.5, 50%: 0.1}, kind = cosine) < free a >") == []


def test_optimizer_learning_rate_keyword_satisfies_e0215():
    assert codes("phase 100 optimizer sgd(learning_rate = 0.1) < free a >") == []
    assert codes("phase 100 optimizer polyak_sgd < free a >") == []  # takes no learning rate


def test_what_is_a_learning_rate_comes_from_its_place_not_from_names():
    # regression: whether a value is a learning rate was read from the wording of a message, so a
    # phase *named* `learning_rate` (or `lr`) made its optimizer's b1 a "negative learning rate"
    for name in ("learning_rate", "lr", "warm"):
        (d,) = check_source(f"phase {name} 100 lr 0.1 optimizer adam(b1=linear(-0.5 -> 0.9)) < free a >")[1]
        assert (d.code, d.span.column) == ("E0221", 43 + len(name) + 1) and "`b1` of `adam`" in d.message
    # the optimizer's own learning_rate keyword is a learning rate wherever it is given
    assert codes("phase 100 optimizer sgd(learning_rate = linear(-1 -> 0)) < free a >") == ["E0204"]
    assert codes("phase 100 optimizer sgd(learning_rate = -0.1) < free a >") == ["E0204"]
    # decay rates lie in [0, 1); other hyperparameters are not judged by their sign
    assert codes("phase 100 lr 0.1 optimizer adam(b1=0, b2=0.999) < free a >") == []
    assert codes("phase 100 lr 0.1 optimizer adam(b2=1) < free a >") == ["E0221"]
    assert codes("phase 100 lr 0.1 optimizer rmsprop(decay=cosine(0.9 -> 1.5)) < free a >") == ["E0221"]
    assert codes("phase 100 lr 0.1 optimizer adamw(weight_decay=linear(-1e-4 -> 0)) < free a >") == []


def test_default_free_silences_w0104():
    assert "W0104" not in codes("default free\nphase 10 lr 0.1 <>")
    assert "W0104" in codes("default fixed\nphase 10 lr 0.1 <>")


def test_params_that_free_a_phase_silence_w0104():
    assert codes("phase 10 lr 0.1 <>\nphase 10 lr 0.1 <>\nparams < a: fixed in 0 >") == ["W0104"]


# ---------------------------------------------------------------- placeholders and lets


def codes_of(diags):
    return [d.code for d in diags]


def test_bound_placeholders_are_checked_with_their_values():
    text = "phase $n lr $rate < free a >"
    assert codes(text, placeholders={"n": 10, "rate": 0.1}) == []
    assert codes(text, placeholders={"n": 0, "rate": 0.1}) == ["E0203"]
    assert codes(text, placeholders={"n": 10, "rate": -1.0}) == ["E0204"]
    assert codes(text, placeholders={"n": 10, "rate": lambda step: 0.1}) == []  # opaque: not inspected
    assert codes(text, placeholders={"n": 10}) == ["E0110"]


def test_linting_takes_unbound_placeholders_as_unknowns():
    # a fact the check is given (`open_placeholders`), not a filter on its output: E0110 is never made
    parsed = parse("phase $n lr $rate < free a >")
    assert codes_of(check_file(parsed)) == ["E0110", "E0110"]
    assert codes_of(check_file(parsed, open_placeholders=True)) == []
    assert codes_of(check_file(parsed, {"n": 0}, open_placeholders=True)) == ["E0203"]  # bound ones still checked


def test_env_of_substitutes_earlier_lets():
    env = env_of(parse("let a = 2\nlet b = a * 3\nlet c = later\nlet later = 1").file)
    assert env["b"] == n.BinOp("*", n.Number(2, "2"), n.Number(3, "3"))
    assert env["c"] == n.Name("later")  # lets are closed over the lets above them only
    assert env_of(parse("let r = $x").file, {"x": 0.5})["r"] == n.Number(0.5, "0.5")


def test_let_errors_are_reported_once_however_often_it_is_used():
    text = "let s = cosin(1 -> 0)\nphase 10 lr s < free a >\nphase 10 lr s < free a >"
    assert codes(text) == ["E0104"]


def test_nested_lets_beyond_the_stack_are_a_diagnostic():
    deep = "-" * 150 + "1"
    text = "let x0 = " + deep + "\n" + "".join(f"let x{i} = {'-' * 150}x{i - 1}\n" for i in range(1, 40)) + "phase 10 lr x39 < free a >"
    assert "E0005" in codes(text)


# ---------------------------------------------------------------- partial trees


def test_items_after_a_syntax_error_are_still_checked():
    text = "phase 10 lr 0.1 < frees a >\nphase 0 lr 0.1 < free a >"
    assert codes(text) == ["E0001", "E0203"]


def test_no_undefined_name_for_a_let_lost_to_a_syntax_error():
    text = "let base = 0.1 +\nphase 10 lr base < free a >"
    assert codes(text) == ["E0001"]


def test_check_file_on_a_parse_result_does_not_repeat_syntax_errors():
    parsed = parse("phase 10 lr < free a >\nphase 0 lr 0.1 < free a >")
    assert [d.code for d in check_file(parsed)] == ["E0203"]


def test_diagnostics_are_sorted_by_position():
    _, diags = check_source("let u = 1\nphase 0 lr -1 < free a >\nseed 1\nseed 2")
    assert [(d.span.line, d.span.column) for d in diags] == sorted((d.span.line, d.span.column) for d in diags)


@pytest.mark.parametrize(
    "text",
    [
        "batch 8\nphase 3 epochs lr warmup_cosine(0 -> 1 -> 0, 2 epochs) < free a >",  # fits
        "batch 8\nphase 3 epochs lr warmup_cosine(0 -> 1 -> 0, 100) < free a >",  # steps: known only with the data
        "batch 8\nphase 3 epochs lr linear(0 -> 1) for 10 then warmup_cosine(0 -> 1 -> 0, 5 epochs) < free a >",  # a span cut in steps
        "batch 8\nphase 3 epochs lr sgdr(warmup_cosine(0 -> 1 -> 0, 5 epochs), 40) < free a >",  # a period in steps
        "batch 8\nphase 30 lr warmup_cosine(0 -> 1 -> 0, 5 epochs) < free a >",  # a phase in steps
        'batch 8\neval "m.py:f" every 2 epochs\nphase 30 lr 0.1 < free a; keep best val.loss >',  # two units: the runtime's
        'eval "m.py:f" every 30 steps\nphase 30 lr 0.1 < free a; keep best val.loss >',  # one evaluation, at the end
    ],
)
def test_durations_in_two_units_are_left_to_the_runtime(text):
    assert not {"E0207", "E0212", "E0222"} & set(codes(text))


def test_a_warmup_in_epochs_is_reported_in_epochs():
    d = find("batch 8\nphase 3 epochs lr 0.1 < free a lr warmup_cosine(0 -> 1 -> 0, 3 epochs) >", "E0207")
    assert "(3 epochs) is not shorter than the span (3 epochs)" in d.message


def test_tree_size_counts_a_shared_subtree_at_each_use_and_stops_past_the_limit():
    from schedc.lang import nodes as n
    from schedc.lang.expr import MAX_EXPR_NODES, tree_size

    leaf = n.Number(1, "1")
    doubled = leaf
    for _ in range(20):  # one node per level in memory, 2**21 - 1 read as a tree
        doubled = n.BinOp("+", doubled, doubled)
    assert tree_size(n.BinOp("+", leaf, leaf)) == 3
    assert tree_size(doubled, limit=2**22) == 2**21 - 1
    assert tree_size(doubled) == MAX_EXPR_NODES + 1


def test_substitute_keeps_what_names_no_let_and_rebuilds_only_the_path_to_a_name():
    from schedc.lang.expr import substitute

    expr = parse("phase 10 lr warmup_cosine(0 -> peak * 2 -> 1e-5, warmup = 10%) < free a >").file.items[0].lr
    assert substitute(expr, {}) is expr  # nothing named: the very same tree
    closed = substitute(expr, {"peak": n.Number(0.1, "0.1")})
    assert closed == parse("phase 10 lr warmup_cosine(0 -> 0.1 * 2 -> 1e-5, warmup = 10%) < free a >").file.items[0].lr
    points, (warmup,) = closed.args[0].points, closed.kwargs
    assert points[0] is expr.args[0].points[0] and warmup is expr.kwargs[0]  # beside the path: shared
    assert points[1] is not expr.args[0].points[1] and points[1].right is expr.args[0].points[1].right
    assert points[1].left.span == expr.args[0].points[1].left.span  # the value at its use


@pytest.mark.parametrize(
    "literal, too_small",
    [("1e-400", True), ("0." + "0" * 400 + "1", True), ("0." + "0" * 296 + "1", False), ("1e-300", False), ("0.0", False), ("0e5", False)],
)
def test_a_literal_that_reads_as_zero_but_is_not_is_too_small_to_represent(literal, too_small):
    found = codes(f"phase 100 lr 0.1 < free a; init a = {literal} >")
    assert ("E0210" in found) == too_small
