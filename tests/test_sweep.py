"""Sweeps: N settings of placeholders and lets fitted through one executable per phase signature,
each setting equal to its own single fit; bad grids are located diagnostics (E0701-E0703)."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

import schedc
from schedc.compiler import chunk as compiler
from schedc.compiler import segment
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
    before = compiler.cache_size(), segment.cache_size()
    result = sweep.run(loss, X, Y)
    return sweep, result, (compiler.cache_size() - before[0], segment.cache_size() - before[1])


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


def test_one_executable_per_segment_or_per_signature(swept):
    """The two phases fuse into one segment: one compiled program for all four settings, no
    per-phase chunk program; phase by phase (`fuse=False`), one per phase signature, two. A
    second sweep of other numbers compiles nothing at all, either way."""
    sweep, _, programs = swept
    assert programs == (0, 1)
    before = compiler.cache_size()
    sweep.run(loss, X, Y, fuse=False)
    assert compiler.cache_size() - before == 2
    other = program().sweep(base=[0.3, 0.02, 0.07, 0.2], wd=[0.0] * 4, target=[0.1] * 4, spread=[0.3] * 4)
    for fuse in (True, False):
        with CompileClock() as clock:
            other.run(loss, X, Y, fuse=fuse)
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
    "grid, code, where, words",
    [
        (dict(rate=[0.1, 0.2]), "E0701", "<sweep rate>:1:1", "`rate` is neither a `$placeholder` nor a `let`"),
        (dict(bse=[0.1, 0.2]), "E0701", "<sweep bse>:1:1", "did you mean `base`?"),
        (dict(base=[0.1, 0.2], wd=[0.1]), "E0702", "<sweep wd>:1:5", "`wd` has 1 values and `base` 2"),
        (dict(base=[]), "E0702", "<sweep base>:1:6", "`base` has no values"),
        (dict(base=0.1), "E0703", "<sweep base>:1:6", "`base` takes a list of values"),
        (dict(base=[0.1, "fast"]), "E0703", "<sweep base>:1:12", "the values of `base` are numbers, got 'fast'"),
        (dict(base=[True]), "E0703", "<sweep base>:1:7", "got True"),
        (dict(base={0.1: "a"}), "E0703", "<sweep base>:1:6", "`base` takes a list of values"),  # (was read as its keys)
        (dict(base=np.zeros((1, 2))), "E0703", "<sweep base>:1:7", "the values of `base` are numbers, got array([0., 0.])"),
    ],
)
def test_bad_grids_are_located_diagnostics(grid, code, where, words):
    with pytest.raises(schedc.SchedError) as err:
        program().sweep(**grid)
    assert [d.code for d in err.value.diagnostics] == [code]
    shown = str(err.value)
    assert f"{where}: error[{code}]" in shown and words in shown
    assert isinstance(err.value, ValueError)


def test_a_one_dimensional_array_is_a_list_of_settings():
    """`jnp.logspace(-3, -1, 3)` was refused ("the values of `base` are numbers, got Array(0.001, ...)"),
    and numpy's settings showed as `np.float64(0.001)`."""
    for values in (np.logspace(-3, -1, 3), jnp.logspace(-3, -1, 3)):
        settings = program().sweep(base=values).settings
        assert settings == [{"base": float(v)} for v in np.asarray(values)] and all(type(s["base"]) is float for s in settings)


def test_a_sweep_without_names_is_refused():
    with pytest.raises(SweepError, match="at least one"):
        program().sweep()


def test_every_problem_of_a_grid_is_reported_at_once():
    with pytest.raises(schedc.SchedError) as err:
        program().sweep(rate=[0.1, 0.2], base=[0.1])
    assert sorted(d.code for d in err.value.diagnostics) == ["E0701", "E0702"]


@pytest.mark.parametrize("code", ["E0701", "E0702", "E0703"])
def test_the_sweep_codes_examples_produce_their_codes(code):
    from schedc.lang.diagnostics import CODES, SWEEP_CODES
    from schedc.surface.sweep import diagnose

    assert code in SWEEP_CODES
    diagnostics, sources = diagnose(CODES[code].example)
    assert [d.code for d in diagnostics] == [code]
    assert all(d.file in sources and d.file.startswith("<--sweep ") for d in diagnostics)


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


def test_programs_that_count_epochs_are_refused():
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
