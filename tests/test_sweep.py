"""Sweeps: N settings of placeholders and lets fitted through one executable per phase signature,
each setting equal to its own single fit; bad grids get clear errors."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

import schedc
from schedc.compiler import chunk as compiler
from schedc.runtime.runner import CompileClock
from schedc.runtime.sweep import SweepError

X = jnp.asarray(np.random.default_rng(0).normal(size=(16, 3)), jnp.float32)
Y = jnp.asarray(np.random.default_rng(1).normal(size=(16, 4)), jnp.float32)

TEXT = """let base = 0.05
phase 30 lr base optimizer adamw(weight_decay=$wd) < free w; init w ~ normal(0, $spread) >
phase 20 lr cosine(base -> base / 10) * plateau(patience=3) < free **; stop when loss < $target >"""

GRID = dict(base=[0.01, 0.05, 0.1, 0.2], wd=[0.0, 1e-3, 1e-2, 0.1], target=[0.0, 0.0, 0.9, 0.0], spread=[0.1, 0.1, 0.2, 0.1])


def model():
    return {"w": jnp.zeros((3, 4), jnp.float32), "b": jnp.zeros(4, jnp.float32)}


def loss(m, x, y):
    return jnp.mean((x @ m["w"] + m["b"] - y) ** 2)


def program(**placeholders):
    values = dict(wd=1e-4, target=0.0, spread=0.1)
    values.update(placeholders)
    return schedc.compile(TEXT, model(), **values)


@pytest.fixture(scope="module")
def swept():
    sweep = program().sweep(**GRID)
    before = compiler.cache_size()
    result = sweep.run(loss, X, Y)
    return sweep, result, compiler.cache_size() - before


def single(setting):
    base = setting["base"]
    prog = schedc.compile(TEXT.replace("let base = 0.05", "let base = $base"), model(), base=base, wd=setting["wd"], target=setting["target"], spread=setting["spread"])
    return prog.run(loss, X, Y, quiet=True)


def test_every_setting_matches_its_single_fit(swept):
    sweep, result, _ = swept
    assert len(sweep) == 4 and result.settings == sweep.settings
    for i, setting in enumerate(sweep.settings):
        mine, alone = result.setting(i), single(setting)
        np.testing.assert_allclose(mine.loss_history, alone.loss_history, rtol=1e-5, atol=1e-7)
        assert mine.stop_reasons == alone.stop_reasons
        np.testing.assert_allclose(mine.model["w"], alone.model["w"], rtol=1e-5, atol=1e-6)
        for name, values in alone.hyperparams.items():
            np.testing.assert_allclose(mine.hyperparams[name], values, rtol=1e-6)
    # per-setting stop rules: setting 2's target stops its second phase early, the others run on
    assert result.stop_reasons[1] == ["completed", "completed", "loss", "completed"]


def test_one_executable_per_signature(swept):
    """Two phase signatures: two compiled programs for all four settings; a second sweep of other
    numbers compiles nothing at all."""
    sweep, _, programs = swept
    assert programs == 2
    other = program().sweep(base=[0.3, 0.02, 0.07, 0.2], wd=[0.0] * 4, target=[0.1] * 4, spread=[0.3] * 4)
    with CompileClock() as clock:
        other.run(loss, X, Y)
    assert clock.count == 0


def test_summary_and_best(swept):
    _, result, _ = swept
    best = result.best()
    assert result.final_losses[best] == np.nanmin(result.final_losses)
    table = result.summary()
    lines = table.splitlines()
    assert lines[0].split()[:5] == ["setting", "base", "wd", "target", "spread"]
    assert lines[2].startswith("*") and lines[2].split()[1] == str(best)
    assert len(lines) == 2 + 4


@pytest.mark.parametrize(
    "grid, words",
    [
        (dict(rate=[0.1, 0.2]), "`rate` is neither a `$placeholder` nor a `let`"),
        (dict(base=[0.1, 0.2], wd=[0.1]), "differ in length"),
        (dict(base=[]), "differ in length or are empty"),
        (dict(base=0.1), "takes a list of values"),
        (dict(base=["fast"]), "are numbers"),
        ({}, "at least one"),
    ],
)
def test_bad_grids_are_clear_errors(grid, words):
    with pytest.raises(SweepError, match="sweep") as err:
        program().sweep(**grid)
    assert words in str(err.value)
    assert isinstance(err.value, ValueError)


def test_a_setting_the_checks_refuse_names_the_setting():
    with pytest.raises(schedc.SchedError) as err:
        program().sweep(base=[0.1, -0.1])
    assert any(d.code == "E0204" for d in err.value.diagnostics)
    assert "sweep setting 1" in "".join(getattr(err.value, "__notes__", ()))


def test_settings_that_change_structure_are_refused_when_run():
    text = "phase $n lr 0.1 < free ** >"
    sweep = schedc.compile(text, model(), n=5).sweep(n=[5, 6])
    with pytest.raises(SweepError, match="step count"):
        sweep.run(loss, X, Y)


def test_minibatches_are_the_same_for_every_setting():
    text = "let base = 0.05\nphase 40 batch 4 lr base < free ** >"
    result = schedc.compile(text, model()).sweep(base=[0.01, 0.1]).run(loss, X, Y)
    for i, base in enumerate([0.01, 0.1]):
        alone = schedc.compile("let base = $b\nphase 40 batch 4 lr base < free ** >", model(), b=base).run(loss, X, Y, quiet=True)
        np.testing.assert_allclose(result.setting(i).loss_history, alone.loss_history, rtol=1e-5, atol=1e-7)


def test_programs_that_evaluate_or_count_epochs_are_refused():
    with pytest.raises(SweepError, match="epochs"):
        schedc.compile("let base = 0.05\nphase 2 epochs batch 4 lr base < free ** >", model()).sweep(base=[0.1])


def test_optimizer_chains_ema_accumulation_and_plateaus_per_setting():
    text = "let base = 0.05\nema 0.9\nphase 40 lr base * plateau(patience=2) optimizer chain(clip_by_global_norm($c), adam) accumulate 2 < free ** >"
    result = schedc.compile(text, model(), c=1.0).sweep(base=[0.01, 0.1], c=[0.5, 1.0]).run(loss, X, Y)
    for i, (base, clip) in enumerate([(0.01, 0.5), (0.1, 1.0)]):
        alone = schedc.compile(text.replace("let base = 0.05", "let base = $b"), model(), b=base, c=clip).run(loss, X, Y, quiet=True)
        mine = result.setting(i)
        np.testing.assert_allclose(mine.loss_history, alone.loss_history, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(mine.ema_model["w"], alone.ema_model["w"], rtol=1e-5, atol=1e-7)
        np.testing.assert_array_equal(mine.hyperparams["plateau_scale"], alone.hyperparams["plateau_scale"])
        assert mine.hyperparams["clip_by_global_norm.max_norm"][0] == np.float32(clip)
