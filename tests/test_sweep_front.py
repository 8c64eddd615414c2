"""A sweep's front end at once: every setting checked and resolved in one pass with its swept
numbers bound to all their values (`lang.swept.Swept`), sound against checking each setting on
its own — whenever the one pass gives Plans, every setting alone finds nothing and resolves to
the same Plan; whenever some setting alone finds something (an error or a warning), the one pass
steps aside and the setting-by-setting path reports it, naming the setting."""

from __future__ import annotations

import math
import re

import jax.numpy as jnp
import numpy as np
import pytest

import schedc
from schedc.lang import swept as S
from schedc.pipeline import read
from schedc.surface import sweep as sweeping


def model():
    return {"w": jnp.zeros((3, 4), jnp.float32), "b": jnp.zeros(4, jnp.float32)}


# (program text, grid, whether the one pass applies): a value of every kind a sweep can vary, and
# grids that put one setting past a check's threshold (each check's own side of it) or not
CASES = [
    ("let base = 0.05\nphase 30 lr base < free w; fix b >\nphase 20 lr cosine(base -> base / 10) < free ** >", dict(base=[0.01, 0.1, 0.5]), True),
    ("let base = 0.05\nphase 30 lr base < free ** >", dict(base=[0.01, -0.1]), False),  # E0204 for setting 1
    ("phase 100 lr warmup_cosine(0 -> $peak -> 0, $w) < free ** >", dict(peak=[0.1, 0.2], w=[10.0, 20.0]), False),  # a float warmup: E0202 in both
    ("let w = 10\nphase 100 lr warmup_cosine(0 -> $peak -> 1e-4, w) < free ** >", dict(peak=[0.1, 0.2, 3.0]), True),
    ("phase 100 lr 0.1 optimizer adam(b1=$b1) < free ** >", dict(b1=[0.8, 0.9, 0.95]), True),
    ("phase 100 lr 0.1 optimizer adam(b1=$b1) < free ** >", dict(b1=[0.9, 1.0]), False),  # E0221 for setting 1
    ("phase 100 lr 0.1 optimizer adamw(weight_decay=$wd) < free ** >", dict(wd=[0.0, 1e-4, 0.1]), True),
    ("let d = 0.9\nema d\nphase 40 lr 0.1 < free ** >", dict(d=[0.9, 0.99]), True),
    ("let d = 0.9\nema d\nphase 40 lr 0.1 < free ** >", dict(d=[0.9, 1.5]), False),  # E0213 for setting 1
    ("phase 40 lr 0.1 < free **; stop when loss < $t >", dict(t=[0.0, 0.1, 2.5]), True),
    ("phase 40 lr 0.1 < free **; stop when loss_change < $t over 5 after 10 >", dict(t=[1e-6, 1e-3]), True),
    ("phase 40 lr 0.1 < free w; fix b; init w ~ normal(0, $s) >", dict(s=[0.1, 0.2]), True),
    ("phase 40 lr 0.1 < free w; fix b; init w ~ normal(0, $s) >", dict(s=[0.1, -0.1]), False),  # a negative std for setting 1
    ("phase 40 lr 0.1 < free w; fix b; init w = $v >", dict(v=[0.5, 1.5, 2.0]), True),
    ("phase 40 lr 0.1 < free w; fix b; init w = $v >", dict(v=[0.0, 1.5, -2.0]), False),  # signs differ: `-2.0` is written as a negation
    ("let base = 0.05\nphase 40 lr base < free w >", dict(base=[0.1, 0.2]), False),  # W0103 (`b` never named) for every setting
    ("phase 40 lr 0.1 ** $p < free ** >", dict(p=[1.0, 2.0, 0.5]), True),
    ("phase 40 lr 1 / ($x - 0.5) < free ** >", dict(x=[0.6, 0.5]), False),  # setting 1 divides by zero
    ("phase 40 lr 1 / ($x - 0.5) < free ** >", dict(x=[0.6, 0.4]), False),  # setting 1 negative
    ("phase 40 lr $a * plateau(patience=3) < free ** >", dict(a=[0.1, 0.2]), True),
    ("phase 40 lr 0.1 * plateau(factor=$f) < free ** >", dict(f=[0.5, 0.1]), True),
    ("phase 40 lr 0.1 * plateau(factor=$f) < free ** >", dict(f=[0.5, 1.5]), False),  # E0213 for setting 1
    ("phase $n lr 0.1 < free ** >", dict(n=[10.0, 20.0]), False),  # E0203: steps are whole numbers
    ("phase $n lr 0.1 < free ** >", dict(n=[10.0, 10.0]), False),  # E0203 in both, the same
    ("let base = 0.05\nlet unused = 3\nphase 30 lr base < free ** >", dict(base=[0.01, 0.1]), False),  # W0101 for every setting
    ("let base = 0.05\nphase 30 lr linear(base -> 0.02) for 10 then 0.02 < free ** >", dict(base=[0.01, 0.1]), True),
    ("let base = 0.05\nphase 30 lr linear(base -> base / 2) for 50% then base / 2 < free ** >", dict(base=[0.01, 0.1]), True),
    ("let base = 0.05\nphase 30 lr base optimizer chain(clip_by_global_norm(base * 10), sgd(momentum=base * 2)) < free ** >", dict(base=[0.01, 0.1, 0.4]), True),
    ("let base = 0.05\nphase 30 lr base optimizer chain(clip_by_global_norm(base * 10), sgd(momentum=base * 2)) < free ** >", dict(base=[0.1, 0.5]), False),  # momentum 1.0: E0221
]


# values the program is compiled with before it is swept (a placeholder needs one)
COMPILED_WITH = {"w": 10, "n": 10, "peak": 0.1, "b1": 0.9, "wd": 0.0, "t": 0.1, "s": 0.1, "v": 1.0, "p": 1.0, "x": 0.6, "a": 0.1, "f": 0.5}


def _front(text: str, grid: dict):
    """(the one pass's Plans or None, every setting's (diagnostics, Plan) checked on its own)."""
    program = schedc.compile(text, model(), **{k: v for k, v in COMPILED_WITH.items() if re.search(rf"\${k}\b", text)})
    parsed = read(program.source.text, program.source.name, program.source).parsed
    lets, _ = sweeping._sweepable(parsed)
    swept = sweeping.from_grid(grid)
    bound = {name: value for name, value in program.placeholders.items() if name not in grid}
    at_once = sweeping._plans_at_once(program, parsed, lets, bound, swept)
    alone = []
    for i in range(len(swept[0].values)):
        analysis = sweeping._analysis(program, parsed, lets, bound, {s.name: s.values[i] for s in swept})
        alone.append((analysis.diagnostics, analysis.plan))
    return at_once, alone


def _lets(text: str) -> set[str]:
    return {line.split()[1] for line in text.splitlines() if line.startswith("let ")}


def _holds_a_swept(tree) -> bool:
    return S._holds(tree, {}, set())


@pytest.mark.parametrize("text, grid, applies", CASES, ids=[f"case{i}" for i in range(len(CASES))])
def test_the_one_pass_stands_for_checking_each_setting_alone(text, grid, applies):
    at_once, alone = _front(text, grid)
    found = [diagnostics for diagnostics, _ in alone]
    if at_once is None:
        assert not applies, "the one pass stepped aside where it should apply"
        return
    assert applies, "the one pass gave Plans where a setting alone " + ("finds something" if any(found) else "was expected to differ")
    assert not any(found), found  # soundness: a setting alone would have found nothing ...
    for mine, (_, plan) in zip(at_once, alone):
        assert mine == plan  # ... and resolved to this very Plan
        assert not _holds_a_swept(mine)
    assert any(a != b for a, b in zip(at_once, at_once[1:]))  # the settings' numbers are in them


def test_every_setting_alone_that_finds_something_makes_the_one_pass_step_aside():
    for text, grid, _ in CASES:
        at_once, alone = _front(text, grid)
        if any(diagnostics for diagnostics, _ in alone):
            assert at_once is None, text


def test_a_refused_setting_is_still_named_with_its_diagnostic():
    text = "let base = 0.05\nphase 30 lr base optimizer chain(clip(1.0), sgd(momentum=base * 2)) < free ** >"
    with pytest.raises(schedc.SchedError) as err:
        schedc.compile(text, model()).sweep(base=[0.1, 0.3, 0.5])
    assert [d.code for d in err.value.diagnostics] == ["E0221"]
    assert "in sweep setting 2: base=0.5" in "".join(err.value.__notes__)


def test_swept_numbers_follow_python_floats_and_refuse_what_settings_decide_differently():
    values = [0.1, 0.2, 0.3]
    a = S.Swept(values)
    assert isinstance(a, float) and repr(a) == "0.1" and a.values.tolist() == values  # setting 0's value, every setting's beside it
    for got, op in ((a * 3 + 1, lambda v: v * 3 + 1), (1 / a, lambda v: 1 / v), (a**2, lambda v: v**2), (2**a, lambda v: 2**v), (-a, lambda v: -v)):
        assert got.values.tolist() == [op(v) for v in values]  # bit for bit what Python computes
    assert a > 0 and not (a > 1) and a != 0.5 and bool(a) and not a.is_integer()
    for decided_differently in (lambda: a < 0.15, lambda: float(a), lambda: int(a * 10), lambda: round(a * 10), lambda: math.floor(a * 10), lambda: a / (a - 0.2), lambda: f"{a:g}"):
        with pytest.raises(S.Diverged):
            decided_differently()
    assert int(S.Swept([3.0, 3.0])) == 3 and float(S.Swept([0.5, 0.5])) == 0.5  # the same for every setting
    with pytest.raises(S.Diverged):
        S.Swept([0.1, math.inf])


def test_a_sweep_through_the_one_pass_fits_as_each_setting_alone():
    x = jnp.asarray(np.random.default_rng(0).normal(size=(16, 3)), jnp.float32)
    y = jnp.asarray(np.random.default_rng(1).normal(size=(16, 4)), jnp.float32)

    def loss(m, x, y):
        return jnp.mean((x @ m["w"] + m["b"] - y) ** 2)

    text = "let base = 0.05\nphase 30 lr cosine(base -> base / 10) optimizer adamw(weight_decay=$wd) < free ** >"
    grid = dict(base=[0.01, 0.1], wd=[1e-4, 1e-2])
    assert _front(text, grid)[0] is not None  # through the one pass
    result = schedc.compile(text, model(), wd=0.0).sweep(**grid).run(loss, x, y)
    for i, (base, wd) in enumerate([(0.01, 1e-4), (0.1, 1e-2)]):
        alone = schedc.compile(text.replace("let base = 0.05", "let base = $b"), model(), b=base, wd=wd).run(loss, x, y, quiet=True)
        np.testing.assert_allclose(result.setting(i).loss_history, alone.loss_history, rtol=1e-5, atol=1e-7)
