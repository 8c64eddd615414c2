"""optax objects where spectracles takes them: GradientTransformation objects as phase optimizers,
schedule functions as learning rates, `(n, None, optax.lbfgs)`, and the same through DSL placeholders
(`optimizer $opt`, `lr $sched`, `init p = $array`). Numbers compared with spectracles where both run."""

from __future__ import annotations

import warnings

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import schedc
from schedc import build_schedule, free_in, init_value
from schedc.compiler import chunk as C
from schedc.compiler import segment


class Line(eqx.Module):
    a: jax.Array
    b: jax.Array


X = jnp.linspace(-1.0, 1.0, 40)
Y = 1.5 * X - 0.4


def loss(model, x, y):
    return jnp.mean((model.a * x + model.b - y) ** 2)


def line():
    return Line(jnp.array(0.2), jnp.array(0.0))


def run(text, **placeholders):
    return schedc.compile(text, line(), **placeholders).run(loss, X, Y, quiet=True)


def test_an_optimizer_object_runs_as_the_named_optimizer_does():
    by_name = run("phase 30 lr 0.1 optimizer sgd(momentum = 0.9) < free ** >")
    by_object = run("phase 30 lr 0.1 optimizer $opt < free ** >", opt=optax.sgd(0.1, momentum=0.9))
    np.testing.assert_array_equal(by_object.loss_history, by_name.loss_history)
    assert "learning_rate" not in by_object.hyperparams  # the object's lr is not fed: nothing to log


def test_the_phase_lr_only_documents_an_object_and_a_revealed_disagreement_warns():
    injected = optax.inject_hyperparams(optax.adam)(learning_rate=optax.linear_schedule(0.1, 0.0, 30))
    with pytest.warns(UserWarning, match=r"lr 0.5 only documents: the optimizer object `\$opt` applies its own learning_rate, 0.1"):
        res = run("phase 30 lr 0.5 optimizer $opt < free ** >", opt=injected)
    # its hyperparameters are logged: the values optax applied at each step
    np.testing.assert_allclose(res.hyperparams["learning_rate"], optax.linear_schedule(0.1, 0.0, 30)(np.arange(30)), rtol=1e-6)
    np.testing.assert_allclose(res.hyperparams["b1"], 0.9)
    same = optax.inject_hyperparams(optax.adam)(learning_rate=0.1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        run("phase 30 lr 0.1 optimizer $opt < free ** >", opt=same)
    reference = run("phase 30 lr 0.1 optimizer adam < free ** >")
    np.testing.assert_allclose(run("phase 30 optimizer $opt < free ** >", opt=same).loss_history, reference.loss_history, rtol=1e-3)  # inject_hyperparams rounds differently


def programs() -> int:
    """Compiled programs so far: phase chunks and fused segments (a multi-phase run is one segment)."""
    return C.cache_size() + segment.cache_size()


def test_objects_are_cached_by_identity():
    opt = optax.adam(0.05)
    run("phase 10 optimizer $opt < free ** >", opt=opt)
    before = programs()
    run("phase 20 optimizer $opt < free a >\nphase 10 optimizer $opt < free a >", opt=opt)  # same object, same free set
    assert programs() == before + 1  # the free set changed once, the object never
    run("phase 20 optimizer $opt < free a >", opt=optax.adam(0.05))  # an equal but distinct object
    assert programs() == before + 2


def test_a_schedule_function_is_called_on_the_phase_step_and_logged():
    sched = optax.cosine_decay_schedule(0.1, 30, alpha=0.01)
    res = run("phase 5 lr 0.01 < free a >\nphase 30 lr $sched < free ** >", sched=sched)
    np.testing.assert_allclose(res.phases[1].hyperparams["learning_rate"], sched(np.arange(30)), rtol=1e-6)
    same = run("phase 5 lr 0.01 < free a >\nphase 30 lr cosine(0.1 -> 0.001) < free ** >")
    np.testing.assert_allclose(res.loss_history, same.loss_history, rtol=1e-5)


def test_a_schedule_function_that_is_not_one_is_named():
    with pytest.raises(TypeError, match=r"\$lr0: an optax schedule function returns one real number per step count, .* returned shape \(3,\) float32"):
        build_schedule(line(), loss, [(10, lambda c: jnp.ones(3) * 0.1)], {"a": free_in(0)}).run_all(X, Y)
    with pytest.raises(TypeError, match=r"\$sched: an optax schedule function is called on the step count \(an int32 scalar\); .* raised TypeError"):
        run("phase 10 lr $sched < free a >", sched=lambda count: 1 / "x")


def test_lbfgs_with_no_lr_as_a_factory_or_an_object():
    s = build_schedule(line(), loss, [(20, None, optax.lbfgs())], {"a": free_in(0), "b": free_in(0)})
    s.run_all(X, Y)
    assert s.loss_history[-1] < 1e-10
    by_name = build_schedule(line(), loss, [(20, None, optax.lbfgs)], {"a": free_in(0)})
    assert "phase 20 optimizer lbfgs <" in str(by_name) and by_name.phases[0].lr is None


def test_placeholders_are_checked_against_where_they_stand():
    with pytest.raises(TypeError, match=r"\$opt stands after `optimizer` or in `chain\(\.\.\.\)`: expected an optax GradientTransformation.*got ndarray"):
        schedc.compile("phase 10 lr 0.1 optimizer $opt < free a >", line(), opt=np.ones(2))
    with pytest.raises(TypeError, match=r"\$lr stands in an expression: .*got GradientTransformationExtraArgs"):
        schedc.compile("phase 10 lr $lr < free a >", line(), lr=optax.adam(0.1))
    with pytest.raises(TypeError, match=r"\$w stands as an init value: expected a number or an array"):
        schedc.compile("phase 10 lr 0.1 < free a; init b = $w >", line(), w=optax.cosine_decay_schedule(0.1, 10))
    with pytest.raises(schedc.SchedError) as err:  # an array of the wrong shape: the resolver's E0407
        schedc.compile("phase 10 lr 0.1 < free a; init b = $w >", line(), w=np.ones(3))
    assert [d.code for d in err.value.diagnostics] == ["E0407"]


def test_a_number_or_a_bool_is_no_optimizer():
    for value in (3, 0.1, True):
        with pytest.raises(TypeError, match=rf"\$opt stands after `optimizer` or in `chain\(\.\.\.\)`: .*got {value!r}"):
            schedc.compile("phase 10 lr 0.1 optimizer chain(clip(1.0), $opt) < free a >", line(), opt=value)


def test_a_value_for_a_name_that_is_no_placeholder_is_refused():
    """A misspelt `--set`/keyword is an error, not a value dropped while the run uses another."""
    text = "phase 10 lr $rate optimizer $opt < free a >"
    with pytest.raises(TypeError, match=r"a value was given for `\$rat`, which is not a placeholder of this program \(did you mean `\$rate`\?\)"):
        schedc.compile(text, line(), rate=0.1, opt="sgd", rat=0.2)
    with pytest.raises(TypeError, match=r"`\$b1`, which is not a placeholder of this program \(its placeholders: none\)"):
        schedc.compile("phase 10 lr 0.1 < free a >", line(), b1=0.9)
    with pytest.raises(schedc.SchedError) as err:  # a file that does not parse: its syntax error, not a guess about its placeholders
        schedc.compile("phase 10 lr 0.1 < free a; init b = $w", line(), w=1.0)
    assert all(d.code.startswith("E00") for d in err.value.diagnostics)


def test_an_optax_factory_placeholder_is_the_named_optimizer():
    assert schedc.compile("phase 10 lr 0.1 optimizer $o < free a >", line(), o=optax.sgd).phases[0].optimizer.name == "sgd"


def test_an_array_init_is_bound_never_printed():
    big = np.arange(351 * 351, dtype=np.float32).reshape(351, 351) / 1000
    model = {"w": jnp.zeros((351, 351)), "b": jnp.zeros(())}
    s = build_schedule(model, lambda m: jnp.sum(m["b"] ** 2) + 0.0 * jnp.sum(m["w"]), [(1, 0.0)], {"w": free_in(0) | init_value(0, big), "b": free_in(0)})
    assert len(str(s)) < 400 and "init w = $init0" in str(s)
    s.run_all()
    np.testing.assert_array_equal(np.asarray(s.model_history[-1]["w"]), big)


def applied_by_optax(tx, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """(losses, the learning rate each update applied) of a plain optax loop with an injected `tx`."""
    params = {"a": jnp.array(0.2), "b": jnp.array(0.0)}
    state = tx.init(params)
    losses, rates = [], []
    for _ in range(steps):
        loss_value, grads = jax.value_and_grad(lambda p: jnp.mean((p["a"] * X + p["b"] - Y) ** 2))(params)
        updates, state = tx.update(grads, state, params)
        params = optax.apply_updates(params, updates)
        injected = state.inner_opt_state if isinstance(state, optax.MultiStepsState) else state
        losses.append(float(loss_value))
        rates.append(float(injected.hyperparams["learning_rate"]))
    return np.asarray(losses), np.asarray(rates)


@pytest.mark.parametrize("fuse", [True, False], ids=["fused", "phase-by-phase"])
def test_carried_state_continues_an_injected_objects_count_in_the_log(fuse):
    sched = optax.linear_schedule(0.1, 0.0, 50)
    opt = optax.inject_hyperparams(optax.adam)(learning_rate=sched)
    program = schedc.compile("phase 20 optimizer $opt < free ** >\nphase 30 optimizer $opt < free **; carry state >", line(), opt=opt)
    res = program.run(loss, X, Y, quiet=True, fuse=fuse)
    losses, rates = applied_by_optax(opt, 50)  # one uninterrupted optax run: the carried phase continues it
    np.testing.assert_allclose(res.loss_history, losses, rtol=1e-5)
    np.testing.assert_allclose(res.phases[1].hyperparams["learning_rate"], rates[20:], rtol=1e-5)
    np.testing.assert_allclose(res.hyperparams["learning_rate"], sched(np.arange(50)), rtol=1e-5)


def test_an_injected_object_under_accumulation_logs_the_value_of_each_update():
    sched = optax.linear_schedule(0.1, 0.0, 12)
    opt = optax.inject_hyperparams(optax.sgd)(learning_rate=sched)
    res = run("phase 12 optimizer $opt accumulate 3 < free ** >", opt=opt)
    _, rates = applied_by_optax(optax.MultiSteps(opt, every_k_schedule=3), 12)
    # optax updates the object at every third step, with its count then: 0, 1, 2, 3
    np.testing.assert_allclose(res.hyperparams["learning_rate"][2::3], rates[2::3], rtol=1e-6)
    np.testing.assert_allclose(res.hyperparams["learning_rate"], sched(np.arange(12) // 3), rtol=1e-6)


# ---------------------------------------------------------------- objects as `chain(...)` members


def optax_loop(tx, steps: int):
    """The losses and final parameters of a plain optax loop with `tx` on the same fit."""
    params = {"a": jnp.array(0.2), "b": jnp.array(0.0)}
    state = tx.init(params)

    def value(p):
        return jnp.mean((p["a"] * X + p["b"] - Y) ** 2)

    @jax.jit
    def step(params, state):
        loss_value, grads = jax.value_and_grad(value)(params)
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state, loss_value

    losses = []
    for _ in range(steps):
        params, state, loss_value = step(params, state)
        losses.append(float(loss_value))
    return np.asarray(losses), params


@pytest.mark.parametrize(
    "text, placeholders, reference",
    [
        # an object after a named transformation; the phase lr only documents (the object's own applies)
        ("chain(clip_by_global_norm(0.05), $opt)", {"opt": optax.adam(0.1)}, optax.chain(optax.clip_by_global_norm(0.05), optax.adam(0.1))),
        # an object before a named optimizer: the phase lr feeds the named one
        ("chain($clip, sgd(momentum = 0.9))", {"clip": optax.clip_by_global_norm(0.05)}, optax.chain(optax.clip_by_global_norm(0.05), optax.sgd(0.1, momentum=0.9))),
        # objects only, nested in a chain of a chain
        ("chain($clip, chain($opt))", {"clip": optax.clip(0.02), "opt": optax.sgd(0.2)}, optax.chain(optax.clip(0.02), optax.sgd(0.2))),
    ],
    ids=["named-then-object", "object-then-named", "nested-objects"],
)
def test_an_object_in_a_chain_runs_as_optax_chains_it(text, placeholders, reference):
    res = run(f"phase 40 lr 0.1 optimizer {text} < free ** >", **placeholders)
    losses, params = optax_loop(reference, 40)
    np.testing.assert_allclose(res.loss_history, losses, rtol=1e-5)  # float32: XLA fuses the two loops differently
    for name in "ab":
        np.testing.assert_allclose(getattr(res.model, name), params[name], rtol=1e-5)


def test_a_chained_injected_object_logs_its_hyperparameters_by_its_placeholder():
    sched = optax.linear_schedule(0.1, 0.0, 20)
    res = run("phase 20 lr 0.1 optimizer chain($opt, sgd) < free ** >", opt=optax.inject_hyperparams(optax.scale_by_adam)(b1=0.8))
    np.testing.assert_allclose(res.hyperparams["$opt.b1"], 0.8)
    np.testing.assert_allclose(res.hyperparams["learning_rate"], 0.1)  # the named sgd's, fed by the phase
    res = run("phase 20 optimizer chain(clip(1.0), $opt) < free ** >", opt=optax.inject_hyperparams(optax.adam)(learning_rate=sched))
    np.testing.assert_allclose(res.hyperparams["$opt.learning_rate"], sched(np.arange(20)), rtol=1e-6)


def test_a_chain_member_placeholder_takes_optimizer_text_and_refuses_anything_else():
    by_text = run("phase 20 lr 0.1 optimizer chain(clip(1.0), $o) < free ** >", o="sgd(momentum=0.9)")
    written = run("phase 20 lr 0.1 optimizer chain(clip(1.0), sgd(momentum = 0.9)) < free ** >")
    np.testing.assert_array_equal(by_text.loss_history, written.loss_history)
    with pytest.raises(TypeError, match=r"\$o stands after `optimizer` or in `chain\(\.\.\.\)`: expected an optax GradientTransformation.*got function"):
        schedc.compile("phase 10 lr 0.1 optimizer chain(clip(1.0), $o) < free a >", line(), o=optax.linear_schedule(0.1, 0.0, 10))
    with pytest.raises(schedc.SchedError) as err:  # a chain member that is no transformation at all
        schedc.compile("phase 10 lr 0.1 optimizer chain(clip(1.0), 3) < free a >", line())
    assert "a `chain` member is an optax transformation (`clip(1.0)`, `adam`, or `$opt` bound to an optax object), got a number" in str(err.value)


def test_build_schedule_takes_a_list_as_a_chain_with_objects():
    s = build_schedule(line(), loss, [(40, 0.1, ["clip_by_global_norm(0.05)", optax.adam(0.1)])], {"a": free_in(0), "b": free_in(0)})
    assert "optimizer chain(clip_by_global_norm(0.05), $opt0_1)" in str(s)
    s.run_all(X, Y)
    losses, _ = optax_loop(optax.chain(optax.clip_by_global_norm(0.05), optax.adam(0.1)), 40)
    np.testing.assert_allclose(s.loss_history, losses, rtol=1e-5)
    with pytest.raises(TypeError, match=r"phase 0: chain member 1: expected an optimizer name or text, .*or a list of these \(a chain\), got 3"):
        build_schedule(line(), loss, [(5, 0.1, ["clip(1.0)", 3])], {"a": free_in(0)})


# ---------------------------------------------------------------- against spectracles
# (skipped without the `compare` extra, which `make test` installs; the tests above run either way)

try:
    import spectracles
except ImportError:
    spectracles = None


class SLine(eqx.Module):
    a: spectracles.Parameter
    b: spectracles.Parameter

    def __call__(self, x):
        return self.a.val * x + self.b.val


def sloss(model, x, y):
    return jnp.mean((model(x) - y) ** 2)


def smodel():
    return spectracles.build_model(SLine, spectracles.Parameter(initial=0.2), spectracles.Parameter(initial=0.0))


@pytest.mark.parametrize(
    "phases",
    [
        [(30, 0.1, optax.sgd(0.1, momentum=0.9)), (20, 0.05, optax.adam(0.05))],  # spectracles' documented form
        [(30, optax.cosine_decay_schedule(0.1, 30, alpha=0.01)), (20, optax.linear_schedule(0.05, 0.0, 20))],
        [(10, 0.1), (5, None, optax.lbfgs())],
    ],
    ids=["objects", "schedule-functions", "lbfgs"],
)
@pytest.mark.skipif(spectracles is None, reason="needs spectracles (the compare extra)")
def test_optax_phase_forms_match_spectracles(phases):
    from spectracles.optimise.schedule_builder import build_schedule as reference_build

    params = {"a": free_in(0, 1), "b": free_in(1)}
    ref = reference_build(smodel(), sloss, phases, {"a": spectracles.free_in(0, 1), "b": spectracles.free_in(1)})
    ref.run_all(X, Y)
    ours = build_schedule(smodel(), sloss, phases, params)
    ours.run_all(X, Y)
    for mine, theirs in zip(ours.loss_histories, ref.loss_histories):
        np.testing.assert_allclose(mine, np.asarray(theirs), rtol=1e-4, atol=1e-9)
    final = ref.model_history[-1]
    for name in "ab":
        np.testing.assert_allclose(getattr(ours.model_history[-1], name).val, getattr(final, name).val, rtol=1e-4, atol=1e-7)
