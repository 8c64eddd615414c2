"""Batched fits: B datasets in one vmapped program match a loop of single fits; stop rules and
non-finite losses act per dataset; models may be batched too."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import schedc

TEXT = """seed 2
phase 30 lr 0.05 < free w; init b ~ normal(0, 0.1) >
phase 150 lr cosine(0.05 -> 0.001) optimizer sgd(momentum=0.9) < free w, b; carry state; stop when loss_change < 1e-4 over 10 after 20 >
phase 10 lr 0.01 < free w, b; init w = reset >"""
B = 5
X = jax.random.normal(jax.random.key(0), (B, 32, 3))
TRUE = jax.random.normal(jax.random.key(1), (B, 3)) * jnp.arange(1, B + 1)[:, None]
Y = jnp.einsum("bnd,bd->bn", X, TRUE) + 0.1


def model():
    return {"w": jnp.zeros(3), "b": jnp.zeros(())}


def loss(m, x, y):
    return jnp.mean((x @ m["w"] + m["b"] - y) ** 2)


@pytest.fixture(scope="module")
def program():
    return schedc.compile(TEXT, model())


@pytest.fixture(scope="module")
def batched(program):
    return program.run_batched(loss, X, Y, chunk=16)


def test_batched_fit_matches_a_loop_of_single_fits(program, batched):
    assert len(batched) == B and batched.model["w"].shape == (B, 3)
    for i in range(B):
        single = program.run(loss, X[i], Y[i], chunk=16, quiet=True)
        mine = batched.dataset(i)
        assert [p.steps_run for p in mine.phases] == [p.steps_run for p in single.phases]
        assert mine.stop_reasons == single.stop_reasons
        for a, b in zip(mine.phase_losses, single.phase_losses):
            np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-6)
        np.testing.assert_allclose(mine.model["w"], single.model["w"], rtol=2e-5, atol=1e-6)
        np.testing.assert_allclose(mine.hyperparams["learning_rate"], single.hyperparams["learning_rate"], rtol=1e-6)


def loss_with_aux(m, x, y):
    residual = x @ m["w"] + m["b"] - y
    return jnp.mean(residual**2), {"mae": jnp.mean(jnp.abs(residual))}


@pytest.mark.parametrize("fuse", [True, False])
def test_each_datasets_aux_metrics_are_its_single_fits(program, fuse):
    """`dataset(i)` holds its aux means, per chunk over the steps it ran, as its single fit does:
    in the phase where datasets stop at different steps, the one stopping inside a chunk has that
    chunk's mean over its own steps (not NaN) and no chunk after it; fused or phase by phase."""
    batched = program.run_batched(loss_with_aux, X, Y, chunk=16, fuse=fuse)
    assert len(set(batched.phases[1].steps_run.tolist())) > 1
    for i in range(B):
        single = program.run(loss_with_aux, X[i], Y[i], chunk=16, quiet=True)
        for mine, own in zip(batched.dataset(i).phases, single.phases):
            assert mine.aux_steps.tolist() == own.aux_steps.tolist() and list(mine.aux) == ["mae"], (i, mine.display)
            np.testing.assert_allclose(mine.aux["mae"], own.aux["mae"], rtol=2e-5, atol=1e-6)


def test_stop_rules_act_per_dataset(batched):
    runs = batched.phases[1].steps_run
    assert len(set(runs.tolist())) > 1 and batched.stop_reasons[1] == ["loss_change"] * B
    losses = batched.phase_losses[1]
    for i, n in enumerate(runs):  # NaN past each dataset's stop, finite before
        assert np.isfinite(losses[i, :n]).all() and np.isnan(losses[i, n:]).all()


def test_inits_are_the_single_fit_values_for_every_dataset(batched):
    first = batched.models[0]["b"]
    np.testing.assert_array_equal(first, np.full(B, first[0]))  # `init b ~ normal` drawn once, as a single fit would
    np.testing.assert_array_equal(batched.dataset(3).models[0]["b"], first[0])


def test_a_non_finite_loss_stops_only_its_dataset(program):
    bad = Y.at[2, 0].set(jnp.inf)
    result = program.run_batched(loss, X, bad, chunk=16)
    assert result.stop_reasons[0][2] == "non-finite loss" and result.phases[0].steps_run[2] == 1
    assert [r for i, r in enumerate(result.stop_reasons[0]) if i != 2] == ["completed"] * (B - 1)
    assert result.phases[1].steps_run[2] == 0 and result.stop_reasons[1][2] == "non-finite loss"  # it sits out the rest
    assert np.isfinite(result.model["w"][0]).all()


def test_one_model_per_dataset(program):
    models = {"w": jnp.ones((B, 3)) * jnp.arange(B, dtype=jnp.float32)[:, None], "b": jnp.zeros(B)}
    result = schedc.compile(TEXT, models).run_batched(loss, X, Y, batched_model=True, chunk=16)
    # dataset 4 fits as a single fit from its own model does, `init w = reset` restoring its own w
    own = {"w": models["w"][4], "b": models["b"][4]}
    single = schedc.compile(TEXT, own).run(loss, X[4], Y[4], chunk=16, quiet=True)
    for a, b in zip(result.dataset(4).phase_losses, single.phase_losses):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-6)
    with pytest.raises(ValueError, match="leading axis of 5"):
        program.run_batched(loss, X, Y, batched_model=True)


def test_data_must_share_the_leading_axis(program):
    with pytest.raises(ValueError, match="same leading dataset axis"):
        program.run_batched(loss, X, Y[:3])


def test_a_second_batched_run_compiles_nothing(program, batched):
    again = program.run_batched(loss, X, Y, chunk=16)
    assert sum(p.compiles for p in again.phases) == 0
    np.testing.assert_array_equal(again.phase_losses[1], batched.phase_losses[1])


def test_epochs_count_in_one_datasets_examples():
    """`2 epochs` of `batch 8` over datasets of 32 rows: 8 steps for every dataset, as a single fit of one counts them."""
    program = schedc.compile("batch 8\nphase 2 epochs lr 0.05 < free ** >", model())
    result = program.run_batched(loss, X, Y, chunk=16)
    single = program.run(loss, X[1], Y[1], chunk=16, quiet=True)
    assert result.phases[0].steps_run.tolist() == [8] * B and single.phases[0].steps_run == 8
    np.testing.assert_allclose(result.dataset(1).loss_history, single.loss_history, rtol=2e-5, atol=1e-6)
