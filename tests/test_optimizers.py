"""Optimizers as optax composes them: chains, dotted contrib names, gradient accumulation, the EMA
of the free parameters, plateau learning rates, dtype names and the keys of noisy optimizers — each step against optax itself."""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import optax.contrib
import pytest

import schedc
from schedc.runtime.runner import CompileClock

STEPS = 40


def model():
    return {"w": jnp.linspace(-0.5, 0.5, 12, dtype=jnp.float32).reshape(3, 4), "b": jnp.zeros(4, jnp.float32)}


X = jnp.asarray(np.random.default_rng(0).normal(size=(16, 3)), jnp.float32)
Y = jnp.asarray(np.random.default_rng(1).normal(size=(16, 4)), jnp.float32)


def loss(m, x, y):
    return jnp.mean((x @ m["w"] + m["b"] - y) ** 2)


def fit(text: str, **kwargs):
    return schedc.compile(text, model(), **kwargs).run(loss, X, Y, quiet=True)


def reference(tx, steps=STEPS, params=None, value=False, **extras):
    """A hand-written optax loop: (losses, final params, final state); `value`: the update gets the
    loss too; `extras` (`obj_fn=True`): the update gets the loss function under these names."""
    params = model() if params is None else params
    state = tx.init(params)
    losses = []

    @jax.jit
    def step(params, state):
        l, g = jax.value_and_grad(loss)(params, X, Y)
        functions = {name: lambda p: loss(p, X, Y) for name in extras}
        updates, state = tx.update(g, state, params, **({"value": l} if value else {}), **functions)
        return l, optax.apply_updates(params, updates), state

    for _ in range(steps):
        l, params, state = step(params, state)
        losses.append(float(l))
    return np.asarray(losses), params, state


def close(a, b):
    np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-7)


def test_a_chain_of_transformations_matches_optax_chain_step_by_step():
    res = fit(f"optimizer chain(clip_by_global_norm(0.5), adamw(weight_decay=1e-2))\nphase {STEPS} lr 0.05 < free ** >")
    losses, params, _ = reference(optax.chain(optax.clip_by_global_norm(0.5), optax.adamw(0.05, weight_decay=1e-2)))
    close(res.loss_history, losses)
    close(res.model["w"], params["w"])
    # every fed number of every member is logged under the member's name
    assert set(res.hyperparams) == {"learning_rate", "clip_by_global_norm.max_norm", "adamw.weight_decay"}
    assert np.all(res.hyperparams["clip_by_global_norm.max_norm"] == np.float32(0.5))


def test_a_noisy_optimizer_given_its_key_is_optax_s_with_that_key_and_no_missing_key_warning():
    """`key` is the int seed optax makes the PRNG key of. The probe for numbers optax checks in
    Python (`optimizers._validated_in_python`) builds with the static keywords too, and keeps its
    own warnings: optax's "Specifying a key will be required" is not shown to a user who gave one."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = fit(f"phase {STEPS} lr 0.05 optimizer noisy_sgd(eta = 0.0317, key = 5) < free ** >")
        chained = fit(f"phase {STEPS} lr 0.05 optimizer chain(add_noise(0.0317, 0.55, key = 5), sgd) < free ** >")
    assert [str(w.message) for w in caught if "key" in str(w.message)] == []
    losses, params, _ = reference(optax.noisy_sgd(0.05, eta=0.0317, key=5))
    close(res.loss_history, losses)
    close(res.model["w"], params["w"])
    close(chained.loss_history, reference(optax.chain(optax.add_noise(0.0317, 0.55, key=5), optax.sgd(0.05)))[0])
    assert not np.allclose(losses, reference(optax.noisy_sgd(0.05, eta=0.0317, key=6))[0])  # (the key matters)


def test_positional_arguments_and_transforms_compose_like_optax():
    res = fit(f"optimizer chain(clip(0.1), scale_by_adam(b1=0.8), scale_by_learning_rate)\nphase {STEPS} lr 0.02 < free ** >")
    losses, _, _ = reference(optax.chain(optax.clip(0.1), optax.scale_by_adam(b1=0.8), optax.scale_by_learning_rate(0.02)))
    close(res.loss_history, losses)


def test_a_schedule_for_a_member_keyword_is_fed_each_step():
    res = fit(f"optimizer chain(clip_by_global_norm(1.0), adamw(weight_decay=linear(0 -> 0.1)))\nphase {STEPS} lr 0.05 < free ** >")
    wd = optax.linear_schedule(0.0, 0.1, STEPS)
    close(res.hyperparams["adamw.weight_decay"], [wd(i) for i in range(STEPS)])
    # optax's own way of scheduling a hyperparameter: inject_hyperparams (values applied at each step)
    tx = optax.chain(optax.clip_by_global_norm(1.0), optax.inject_hyperparams(optax.adamw)(learning_rate=0.05, weight_decay=wd))
    losses, _, _ = reference(tx)
    close(res.loss_history, losses)


def test_a_dotted_contrib_optimizer():
    res = fit(f"phase {STEPS} lr 0.02 optimizer contrib.muon(beta=0.9) < free ** >")
    losses, params, _ = reference(optax.contrib.muon(0.02, beta=0.9))
    close(res.loss_history, losses)
    close(res.model["w"], params["w"])


def test_accumulate_is_optax_multisteps():
    res = fit(f"phase {STEPS} lr 0.05 optimizer adam accumulate 4 < free ** >")
    losses, params, _ = reference(optax.MultiSteps(optax.adam(0.05), every_k_schedule=4).gradient_transformation())
    close(res.loss_history, losses)
    close(res.model["b"], params["b"])
    # the parameters move once every 4 steps: the loss is flat in between
    assert res.loss_history[1] == res.loss_history[0] and res.loss_history[4] != res.loss_history[3]


def test_ema_keeps_optax_incremental_updates_of_the_parameters():
    res = fit(f"ema 0.9\nphase {STEPS} lr 0.05 < free w >")
    tx = optax.adam(0.05)
    params, state = model(), None
    state = tx.init({"w": params["w"]})
    ema = params["w"]
    for _ in range(STEPS):
        g = jax.grad(lambda w: loss({"w": w, "b": params["b"]}, X, Y))(params["w"])
        updates, state = tx.update({"w": g}, state, {"w": params["w"]})
        params = {"w": params["w"] + updates["w"], "b": params["b"]}
        ema = optax.incremental_update(params["w"], ema, 0.1)
    close(res.model["w"], params["w"])
    close(res.ema_model["w"], ema)
    assert np.all(np.asarray(res.ema_model["b"]) == 0)  # fixed parameters are the model's own
    assert res.phases[0].ema_model is res.ema_model


def test_ema_and_accumulate_in_the_phase_header_override_the_directives():
    res = fit(f"ema 0.5\naccumulate 2\nphase {STEPS} lr 0.05 accumulate 1 < free ** >\nphase 4 lr 0.05 ema 0.99 < free ** >")
    first = reference(optax.adam(0.05))[0]
    close(res.phase_losses[0], first)
    assert res.phases[1].ema_model is not None
    assert res.phase_losses[1][1] == res.phase_losses[1][0]  # accumulate 2 from the directive


def test_plateau_scales_the_updates_as_optax_reduce_on_plateau():
    res = fit(f"phase {STEPS} lr 0.5 * plateau(factor=0.5, patience=2, min_scale=0.1) optimizer sgd < free ** >")
    tx = optax.chain(optax.sgd(0.5), optax.contrib.reduce_on_plateau(factor=0.5, patience=2, min_scale=0.1))
    losses, _, _ = reference(tx, value=True)
    close(res.loss_history, losses)
    # the scale applied at each step, from optax's own transformation fed the same losses
    state = optax.contrib.reduce_on_plateau(factor=0.5, patience=2, min_scale=0.1).init(model())
    scales = []
    for value in res.loss_history:
        _, state = optax.contrib.reduce_on_plateau(factor=0.5, patience=2, min_scale=0.1).update(model(), state, value=value)
        scales.append(float(state.scale))
    close(res.hyperparams["plateau_scale"], scales)
    assert min(scales) < 1.0  # the plateau did fire
    assert np.all(res.hyperparams["learning_rate"] == np.float32(0.5))


@pytest.mark.parametrize(
    "text, tx, extras",
    [
        ("contrib.momo", optax.contrib.momo(0.05), dict(value=True)),
        ("contrib.momo_adam", optax.contrib.momo_adam(0.05), dict(value=True)),
        ("contrib.sophia", optax.contrib.sophia(0.05), dict(obj_fn=True)),
    ],
)
def test_a_transformation_whose_update_needs_the_loss_or_its_function_steps_as_optax(text, tx, extras):
    res = fit(f"phase {STEPS} lr 0.05 optimizer {text} < free ** >")
    losses, params, _ = reference(tx, **extras)
    close(res.loss_history, losses)
    close(res.model["w"], params["w"])


def _loss_keywords(tx, params) -> frozenset | None:
    """The keywords `tx.update` needs besides the gradient, as the step gives them: none, the loss
    with its gradient and function (`value`, `grad`, `value_fn`), or those and `obj_fn`; None when
    it fails with each, for a reason of its own (per-example gradients, a 2-D-only shape...)."""
    state = tx.init(params)
    value_fn = lambda p: loss(p, X, Y)  # noqa: E731
    with_value = {"value": value_fn(params), "grad": jax.grad(value_fn)(params), "value_fn": value_fn}
    for extras in ({}, with_value, with_value | {"obj_fn": value_fn}):
        try:
            jax.eval_shape(lambda: tx.update(params, state, params, **extras))
        except (TypeError, ValueError):
            continue
        return frozenset(extras)
    return None


def test_every_nameable_transformation_whose_update_needs_the_loss_gets_it():
    """A transformation whose update needs the loss (`value`) or the loss function (`value_fn`,
    `obj_fn`) must be in `optimizers.NEEDS_VALUE` (and `NEEDS_OBJ_FN`), or the step calls it
    without them. Found by calling every nameable one (built from its required numbers)."""
    from schedc.check._optax_table import OPTIMIZERS, TRANSFORMS
    from schedc.compiler.optimizers import NEEDS_OBJ_FN, NEEDS_VALUE, factory

    needs: dict[str, set] = {"value": set(), "obj_fn": set()}
    for name, params in {**OPTIMIZERS, **TRANSFORMS}.items():
        required = [(p, kind) for p, has_default, _, kind in params if not has_default]
        if any(kind not in ("number", "int") for _, kind in required):
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            keywords = _loss_keywords(factory(name)(**{p: 1 if kind == "int" else 0.1 for p, kind in required}), model())
        for keyword in needs:
            if keywords and keyword in keywords:
                needs[keyword].add(name)
    assert needs["value"] >= {"lbfgs", "contrib.momo", "contrib.sophia"} and needs["obj_fn"] >= {"contrib.sophia"}  # (the probe finds them)
    assert needs["value"] <= NEEDS_VALUE, needs["value"] - NEEDS_VALUE
    assert needs["obj_fn"] <= NEEDS_OBJ_FN, needs["obj_fn"] - NEEDS_OBJ_FN


def test_a_group_takes_a_chain_and_its_own_plateau():
    res = fit(f"phase {STEPS} lr 0.05 < free w; free b lr 0.1 * plateau(patience=3) optimizer chain(clip(0.05), sgd(momentum=0.9)) >")
    labels = {"w": "", "b": "b"}
    tx = optax.partition(
        {"": optax.adam(0.05), "b": optax.chain(optax.clip(0.05), optax.sgd(0.1, momentum=0.9), optax.contrib.reduce_on_plateau(patience=3))},
        labels,
    )
    losses, _, _ = reference(tx, value=True)
    close(res.loss_history, losses)
    assert "plateau_scale@b" in res.hyperparams and "learning_rate@b" in res.hyperparams


# validation data the fit does not see: its loss stops improving while the training loss still falls
XV = jnp.asarray(np.random.default_rng(2).normal(size=(8, 3)), jnp.float32)
YV = jnp.asarray(np.random.default_rng(3).normal(size=(8, 4)), jnp.float32)
EVERY = 4
ON_METRIC = dict(factor=0.5, patience=1, min_scale=0.05)


def fit_evaluated(text: str, **run):
    return schedc.compile(text, model()).run(loss, X, Y, quiet=True, **run)


def scales_fed(values, **keywords):
    """optax.contrib.reduce_on_plateau's scale after each value fed."""
    plateau = optax.contrib.reduce_on_plateau(**keywords)
    state, scales = plateau.init(model()), []
    for value in values:
        _, state = plateau.update(model(), state, value=value)
        scales.append(float(state.scale))
    return np.asarray(scales)


def test_a_plateau_on_an_evaluation_metric_steps_with_optax_at_each_evaluation():
    text = f'eval "m.py:metrics" every {EVERY} steps\noptimizer sgd\nphase {STEPS} lr 0.3 * plateau(on=val.loss, factor=0.5, patience=1, min_scale=0.05) < free ** >'
    res = fit_evaluated(text, validation=(XV, YV), metrics=lambda m, x, y: {"loss": loss(m, x, y)})
    # a hand-written optax loop: sgd's updates times the plateau's scale, the plateau stepped by
    # reduce_on_plateau's own update with the validation loss after every EVERY steps
    plateau, sgd = optax.contrib.reduce_on_plateau(**ON_METRIC), optax.sgd(0.3)
    params = model()
    p_state, s_state = plateau.init(params), sgd.init(params)
    losses, applied, metrics = [], [], []
    for step in range(1, STEPS + 1):
        value, grads = jax.value_and_grad(loss)(params, X, Y)
        updates, s_state = sgd.update(grads, s_state, params)
        params = optax.apply_updates(params, jax.tree_util.tree_map(lambda u: p_state.scale * u, updates))
        losses.append(float(value))
        applied.append(float(p_state.scale))
        if step % EVERY == 0:
            metrics.append(float(loss(params, XV, YV)))
            _, p_state = plateau.update((), p_state, value=metrics[-1])
    close(res.metrics["loss"], metrics)
    close(res.loss_history, losses)
    close(res.hyperparams["plateau_scale"], applied)
    # the scale of each stretch between evaluations is optax's after the evaluations so far
    after = np.concatenate([[1.0], scales_fed(res.metrics["loss"], **ON_METRIC)])
    np.testing.assert_array_equal(res.hyperparams["plateau_scale"], np.repeat(after[: STEPS // EVERY], EVERY).astype(np.float32))
    assert 0.05 <= min(applied) < 1.0  # it fired, the training loss never drove it
    assert (res.hyperparams["learning_rate"] == np.float32(0.3)).all()


def test_a_groups_plateau_on_a_metric_follows_optax_fed_that_metric():
    floor = 0.8 * float(loss(model(), X, Y))

    def metrics(m, x, y):  # falls, then stays flat at the floor: the plateau fires after `patience` flat evaluations
        return {"gap": jnp.maximum(loss(m, x, y), floor)}

    text = 'eval "m.py:metrics" every 2 steps\noptimizer sgd\nphase 30 lr 0.1 < free w; free b lr 0.1 * plateau(on=val.gap, patience=2, factor=0.5) >'
    res = fit_evaluated(text, validation=(X, Y), metrics=metrics)
    gap = res.metrics["gap"]
    after = np.concatenate([[1.0], scales_fed(gap, patience=2, factor=0.5)])
    np.testing.assert_array_equal(res.hyperparams["plateau_scale@b"], np.repeat(after[:15], 2).astype(np.float32))
    assert gap[0] > floor and gap[-1] == pytest.approx(floor) and after.min() < 1.0  # it improved, then stalled and fired


def test_a_plateau_on_a_metric_without_an_evaluation_at_run_time_names_what_is_missing():
    from schedc.runtime.evaluation import EvalError

    text = 'eval "m.py:metrics" every 2 steps\nphase 10 lr 0.1 * plateau(on=val.loss) < free ** >'
    with pytest.raises(EvalError, match="uses `val.loss` but the run has no evaluation"):
        fit_evaluated(text)
    with pytest.raises(EvalError, match="returned `val.gap`; expected a `loss` entry"):
        fit_evaluated(text, validation=(XV, YV), metrics=lambda m, x, y: {"gap": loss(m, x, y)})


def test_dtype_names_are_values():
    res = fit(f"phase {STEPS} lr 0.05 optimizer adam(mu_dtype=bfloat16) < free ** >")
    losses, _, _ = reference(optax.adam(0.05, mu_dtype=jnp.bfloat16))
    close(res.loss_history, losses)


def test_phases_differing_in_member_numbers_share_one_executable():
    text = "optimizer chain(clip_by_global_norm($clip), adamw(weight_decay=$wd))\nphase 5 lr $lr < free ** >"
    schedc.compile(text, model(), clip=1.0, wd=1e-3, lr=0.01).run(loss, X, Y, quiet=True)
    with CompileClock() as clock:
        schedc.compile(text, model(), clip=0.3, wd=1e-2, lr=0.03).run(loss, X, Y, quiet=True)
    assert clock.count == 0


def test_mixed_precision_recipe_parameters_f32_compute_bf16():
    """docs/runtime.md's recipe: the loss casts the model to bfloat16; gradients, optimizer state and
    parameters stay float32 (the cast's transpose casts the gradient back)."""

    def bf16_loss(m, x, y):
        half = jax.tree_util.tree_map(lambda a: a.astype(jnp.bfloat16), m)
        pred = x.astype(jnp.bfloat16) @ half["w"] + half["b"]
        return jnp.mean((pred.astype(jnp.float32) - y) ** 2)

    res = schedc.compile("phase 40 lr 0.05 < free ** >", model()).run(bf16_loss, X, Y, quiet=True)
    assert res.model["w"].dtype == jnp.float32
    full = fit(f"phase {STEPS} lr 0.05 < free ** >")
    assert res.loss_history[-1] < 0.8 * res.loss_history[0]
    np.testing.assert_allclose(res.loss_history, full.loss_history, rtol=3e-2)


def test_batched_fits_log_each_datasets_plateau_scale():
    xs, ys = jnp.stack([X, 2 * X]), jnp.stack([Y, Y])
    res = schedc.compile("phase 30 lr 0.5 * plateau(factor=0.5, patience=2) optimizer sgd < free ** >", model()).run_batched(loss, xs, ys)
    scales = res.phases[0].hyperparams["plateau_scale"]
    assert scales.shape == (2, 30)
    for i in range(2):
        single = schedc.compile("phase 30 lr 0.5 * plateau(factor=0.5, patience=2) optimizer sgd < free ** >", model()).run(loss, xs[i], ys[i], quiet=True)
        np.testing.assert_allclose(scales[i], single.hyperparams["plateau_scale"], rtol=1e-6)


# ---------------------------------------------------------------- bad input: located diagnostics, never a traceback


def diagnostics(text: str) -> list[tuple[str, int, str]]:
    from schedc.pipeline import check_source

    return [(d.code, d.span.column, d.message) for d in check_source(text)[1]]


@pytest.mark.parametrize(
    "text, code, column, words",
    [
        ("phase 10 lr 0.1 optimizer chain(clip_by_globl_norm(1.0), adam) < free a >", "E0105", 33, "clip_by_globl_norm"),
        ("phase 10 lr 0.1 optimizer contrib.muonn < free a >", "E0105", 27, "contrib.muonn"),
        ("phase 10 lr 0.1 optimizer chain(clip(1.0), adam(b1=true)) < free a >", "E0202", 52, "boolean"),
        ("phase 10 lr 0.1 optimizer adam(mu_dtype=bfloat17) < free a >", "E0202", 41, "bfloat17"),
        ("phase 10 lr 0.1 optimizer adamw(mask=1) < free a >", "E0202", 38, "mask"),
        ("phase 10 lr 0.1 optimizer lbfgs(memory_size=2.5) < free a >", "E0202", 45, "whole number"),
        ("phase 10 lr 0.1 optimizer chain(clip, adam) < free a >", "E0201", 33, "max_delta"),
        ("phase 10 lr 0.1 optimizer chain(1, adam) < free a >", "E0202", 33, "a number"),
        ("phase 10 lr 0.1 optimizer chain(scale_by_adam, clip(1.0)) < free a >", "E0106", 13, "no member of `chain(...)` takes a learning rate,"),
        ("phase 10 lr 0.1 optimizer polyak_sgd < free a >", "E0106", 13, "`polyak_sgd` takes no learning rate,"),
        ("phase 10 optimizer chain(clip(1.0), sgd) < free a >", "E0215", 1, "learning rate"),
        ("phase 10 lr 0.1 accumulate 0 < free a >", "E0213", 28, "accumulate"),
        ("accumulate 2.5\nphase 10 lr 0.1 < free a >", "E0213", 12, "accumulate"),
        ("phase 10 lr 0.1 ema 1.5 < free a >", "E0213", 21, "ema"),
        ("phase 10 lr 0.1 * plateau(factor=2) < free a >", "E0213", 34, "factor"),
        ("phase 10 lr 0.1 * plateau(patience=linear(1 -> 2)) < free a >", "E0202", 36, "expected a number"),
        ("phase 10 lr 0.1 * plateau(patience=5, wait=3) < free a >", "E0106", 39, "wait"),
        ("phase 10 lr linear(0.1 -> plateau()) < free a >", "E0104", 27, "plateau"),
        ("phase 10 lr 0.1 optimizer plateau < free a >", "E0105", 27, "plateau"),
        ("phase 10 lr 0.1 * plateau(on=val.loss) < free a >", "E0112", 30, "no `eval` directive"),
        ('eval "m.py:f" every 2 steps\nphase 10 lr 0.1 * plateau(on=accuracy) < free a >', "E0113", 30, "got `accuracy`"),
        ('eval "m.py:f" every 2 steps\nphase 10 lr 0.1 < free a; free b lr plateau(on=2) * 0.1 >', "E0113", 48, "got a number"),
        ('eval "m.py:f" every 2 steps\nlr 0.1 * plateau(on=loss_change)\nphase 10 < free a >', "E0113", 21, "got `loss_change`"),
        ('eval "m.py:f" every 20 steps\nphase 10 lr 0.1 * plateau(on=val.loss) < free a >', "E0222", 1, "never evaluated"),
        ('eval "m.py:f" every 2 steps\nphase 10 lr 0.1 * plateau(on=val.loss, wait=1) < free a >', "E0106", 40, "wait"),
        ('eval "m.py:f" every 2 steps\nphase 10 lr 0.1 * plateau(on=val.accuracy) < free a >', "W0107", 30, "stops decreasing"),
    ],
)
def test_bad_optimizers_get_located_diagnostics(text, code, column, words):
    found = diagnostics(text)
    assert any(c == code and col == column and words in message for c, col, message in found), found


def test_a_transformation_left_out_of_the_language_says_why():
    """optax's DP-SGD transformations take per-example gradients, which a schedc step does not make."""
    from schedc.pipeline import check_source

    for text in ("phase 10 lr 0.1 optimizer contrib.dpsgd(0.1, 1.0, 1.0, 0) < free a >", "phase 10 lr 0.1 optimizer chain(contrib.differentially_private_aggregate(1.0, 1.0), sgd) < free a >"):
        (found,) = check_source(text)[1]
        assert found.code == "E0105" and "per-example gradients" in " ".join(found.notes), found


def test_good_optimizers_check_clean():
    for text in (
        "optimizer chain(clip_by_global_norm(1.0), adamw(weight_decay=1e-4, mu_dtype=bfloat16))\nphase 10 lr 1e-3 < free a >",
        "accumulate 4\nema 0.999\nphase 10 lr 1e-3 * plateau(factor=0.5, patience=10, cooldown=0, min_scale=1e-3) optimizer contrib.muon < free a >",
        "phase 10 lr cosine(1 -> 0) optimizer chain(clip(1), sgd(momentum=linear(0.5 -> 0.9))) < free a; free b lr plateau(0.5) * 0.1 optimizer chain(chain(zero_nans, contrib.muon), adam) >",
        "phase 10 optimizer contrib.schedule_free_adamw < free a >",
        'eval "m.py:f" every 2 steps\nlr 0.1 * plateau(on=val.loss, patience=3)\nphase 10 < free a; free b lr plateau(0.5, on=val.error) * 0.01 >',
    ):
        assert diagnostics(text) == [], text
