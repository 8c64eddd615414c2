"""schedc.build_schedule: spectracles' arguments on schedc's Plan and Runner.

The printed program compiles to the same Plan; numbers match spectracles where
its semantics are kept (unnamed parameters, inits, momentum reset per phase);
errors name the parameter; the managed operations work without spectracles'
managed bugs.
"""

from __future__ import annotations

import dataclasses
import functools

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import schedc
from schedc import build_schedule, fixed_in, free_after, free_in, free_until, init_normal, init_uniform, init_value
from schedc.runtime.runner import RunError


class Param(eqx.Module):
    """A spectracles-style parameter node: `val` and `fix` fields."""

    val: jax.Array
    fix: bool = eqx.field(static=True, default=False)


class Line(eqx.Module):
    a: Param
    b: Param
    c: Param  # fix=True unless told
    w: Param  # fix=True, an array of two
    grid: jax.Array  # a bare array beside parameter nodes: a constant, as in spectracles

    def __call__(self, x):
        return self.a.val * x + self.b.val + self.c.val + 0.0 * jnp.sum(self.w.val) + 0.0 * jnp.sum(self.grid)


def line(b_fixed=False):
    return Line(Param(jnp.array([0.2])), Param(jnp.array([0.0]), b_fixed), Param(jnp.array([0.1]), True), Param(jnp.ones(2), True), jnp.ones(3))


X = jnp.linspace(-1.0, 1.0, 20)
Y = 1.5 * X - 0.4


def loss(model, x, y):
    return jnp.mean((model(x) - y) ** 2)


def nan_loss(model, x, y):
    return jnp.where(model.a.val[0] > 0.3, jnp.nan, loss(model, x, y))


def plan_of(text, model, key=None, **placeholders):
    return dataclasses.replace(schedc.compile(text, model, key=key, **placeholders).plan, source=None)


# ---------------------------------------------------------------- the printed program


def test_printed_program_compiles_to_the_same_plan():
    s = build_schedule(
        line(),
        loss,
        [(30, 0.1), (20, "cosine(0.05 -> 0.01)", functools.partial(optax.sgd, momentum=0.9)), (10, 0.01, ("adamw", {"weight_decay": 1e-4}))],
        {
            "a": free_in(0, 1) | init_uniform(2, -1, 1),
            "c": free_after(1) | init_value(1, 0.5),
            "w": free_until(0) | init_value(2, jnp.array([1.0, 2.0])) | init_normal(1, 0.0, 0.1),
        },
        Δloss_criterion=1e-6,
        key=7,
    )
    text = str(s)
    assert "seed 7" in text and "optimizer sgd(momentum=0.9)" in text and "stop when loss_change < 1e-06" in text
    # an array value goes into the phase body, bound to a placeholder: never its numbers as text
    assert "init w = $init2" in text and s.placeholders["init2"] is not None
    assert plan_of(text, line(), **s.placeholders) == dataclasses.replace(s.plan, source=None)
    # `b` is named by nothing and has fix=False: free in every phase (spectracles' rule)
    assert [p.free for p in s.phases] == [("a", "b", "w"), ("a", "b", "c"), ("b", "c")]


def test_a_jax_key_is_noted_in_the_text_and_gives_the_same_plan_with_that_key():
    key = jax.random.key(3)
    s = build_schedule(line(), loss, [(5, 0.1)], {"a": free_in(0) | init_normal(0, 0, 1)}, key=key)
    assert str(s).startswith("# random inits draw from the JAX key")
    assert plan_of(str(s), line(), key=key) == dataclasses.replace(s.plan, source=None)


def test_a_key_is_a_jax_key_or_an_int_seed():
    spec = {"a": free_in(0) | init_normal(0, 0, 1)}
    raw = build_schedule(line(), loss, [(5, 0.1)], spec, key=jax.random.PRNGKey(3))  # a raw uint32 key, as older JAX code makes
    raw.run_all(X, Y)
    with pytest.raises(TypeError, match=r"key must be a JAX PRNG key \(jax.random.key\(0\)\) or an int seed, got 'abc'"):
        build_schedule(line(), loss, [(5, 0.1)], spec, key="abc")
    with pytest.raises(TypeError, match=r"key must be a JAX PRNG key .*got 1.5"):
        schedc.compile("phase 5 lr 0.1 < free a; init a ~ normal(0, 1) >", line(), key=1.5)


def test_unnamed_parameters_follow_their_own_fix_flag():
    s = build_schedule(line(b_fixed=True), loss, [(5, 0.1), (5, 0.1)], {"a": free_in(1)})
    assert [p.free for p in s.phases] == [(), ("a",)]  # b, c and w fixed by their flags
    s.run_all(X, Y)
    first, last = s.model_history[0], s.model_history[-1]
    assert float(last.b.val[0]) == float(first.b.val[0]) and bool(jnp.all(last.w.val == first.w.val))
    assert s.model_history[1].a.val[0] == first.a.val[0] != last.a.val[0]


# ---------------------------------------------------------------- running


@pytest.fixture(scope="module")
def two_phases():
    s = build_schedule(
        line(),
        loss,
        [(30, 0.1, "sgd(momentum=0.9)"), (20, 0.05, functools.partial(optax.sgd, momentum=0.9))],
        {"a": free_in(0, 1), "c": free_in(1) | init_value(1, jnp.array([0.5]))},
    )
    s.run_all(X, Y)
    return s


def test_histories(two_phases):
    s = two_phases
    assert len(s.model_history) == 3 and s.model_history[0] is s.initial_model
    assert [len(h) for h in s.loss_histories] == [30, 20]
    np.testing.assert_array_equal(s.loss_history, np.concatenate(s.loss_histories))
    assert s.model_history[1].c.val[0] == np.float32(0.1) and s.model_history[2].c.val[0] != np.float32(0.5)


def test_run_all_again_starts_over_and_repeats_bit_for_bit(two_phases):
    before = [h.copy() for h in two_phases.loss_histories]
    final = two_phases.model_history[-1]
    two_phases.run_all(X, Y)
    assert len(two_phases.model_history) == 3
    for a, b in zip(before, two_phases.loss_histories):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(final.a.val, two_phases.model_history[-1].a.val)


def spectracles_line(spectracles):
    """The line model with spectracles `Parameter` fields (spectracles is an optional dependency)."""

    class SLine(eqx.Module):
        a: spectracles.Parameter
        b: spectracles.Parameter
        c: spectracles.Parameter

        def __call__(self, x):
            return self.a.val * x + self.b.val + self.c.val

    return SLine


def test_matches_spectracles_numerically(two_phases):
    spectracles = pytest.importorskip("spectracles")
    from spectracles.optimise.schedule_builder import build_schedule as reference

    SLine = spectracles_line(spectracles)
    parts = (spectracles.Parameter(initial=0.2), spectracles.Parameter(initial=0.0), spectracles.Parameter(initial=0.1, fixed=True))
    ref = reference(
        spectracles.build_model(SLine, *parts),
        loss,
        [(30, 0.1, optax.sgd(0.1, momentum=0.9)), (20, 0.05, optax.sgd(0.05, momentum=0.9))],
        {"a": spectracles.free_in(0, 1), "c": spectracles.free_in(1) | spectracles.init_value(1, jnp.array([0.5]))},
    )
    ref.run_all(X, Y)
    # b (unnamed, fix=False) moves in both phases in both implementations
    for mine, theirs in zip(two_phases.loss_histories, ref.loss_histories):
        np.testing.assert_allclose(mine, np.asarray(theirs), rtol=2e-5)
    final = ref.model_history[-1]
    for name in "abc":
        np.testing.assert_allclose(getattr(two_phases.model_history[-1], name).val, getattr(final, name).val, rtol=2e-5)


def test_share_module_patterns_are_relative_to_the_inner_model():
    spectracles = pytest.importorskip("spectracles")

    SLine = spectracles_line(spectracles)
    shared = spectracles.Parameter(initial=0.0)
    model = spectracles.build_model(SLine, spectracles.Parameter(initial=0.2), shared, shared)
    s = build_schedule(model, loss, [(5, 0.1)], {"a": free_in(0)})
    assert s.phases[0].free == ("a", "b")  # b: unnamed, fix=False; c is its copy
    with pytest.raises(schedc.SchedError) as err:
        build_schedule(model, loss, [(5, 0.1)], {"c": free_in(0)})
    assert err.value.diagnostics[0].code == "E0402" and "name the parent instead: `b`" in str(err.value)


# ---------------------------------------------------------------- errors


def codes(err):
    return [d.code for d in err.value.diagnostics if d.is_error]


def test_unknown_pattern_names_it_and_suggests():
    with pytest.raises(schedc.SchedError) as err:
        build_schedule(line(), loss, [(5, 0.1)], {"aa": free_in(0)})
    assert codes(err) == ["E0401"] and "`aa`" in str(err.value) and "did you mean `a`?" in str(err.value)


def test_a_shared_copy_named_directly_names_its_parent():
    tied = jnp.array([1.0])
    model = {"first": tied, "second": tied}
    with pytest.raises(schedc.SchedError) as err:
        build_schedule(model, lambda m: jnp.sum(m["first"] ** 2), [(5, 0.1)], {"second": free_in(0)})
    assert codes(err) == ["E0402"] and "`first`" in str(err.value)


def test_random_init_without_a_key_says_a_key_is_needed():
    with pytest.raises(schedc.SchedError) as err:
        build_schedule(line(), loss, [(5, 0.1)], {"a": free_in(0) | init_uniform(0, 0, 1)})
    assert codes(err) == ["E0501"] and "PRNG key required for init_uniform on `a`" in str(err.value)
    assert "key=jax.random.key" in str(err.value)


def test_disagreeing_specs_are_an_error_not_a_union():
    with pytest.raises(schedc.SchedError) as err:
        build_schedule(line(), loss, [(5, 0.1), (5, 0.1)], {"a": free_in(0), "*": fixed_in(0)})
    assert codes(err) == ["E0404"] and "`a`" in str(err.value)


def test_phase_out_of_range_and_bad_arguments():
    with pytest.raises(schedc.SchedError) as err:
        build_schedule(line(), loss, [(5, 0.1)], {"a": free_in(3)})
    assert codes(err) == ["E0109"]
    with pytest.raises(ValueError, match="free_after"):
        free_in(-1)
    with pytest.raises(TypeError, match="an optax factory or object"):
        build_schedule(line(), loss, [(5, 0.1, object())], {"a": free_in(0)})
    with pytest.raises(TypeError, match="optax schedule function"):
        build_schedule(line(), loss, [(5, [0.1])], {"a": free_in(0)})
    with pytest.raises(TypeError, match="n_steps"):
        build_schedule(line(), loss, [(5.0, 0.1)], {"a": free_in(0)})
    for steps in (0, -5):  # (-5 was a syntax error in the generated text: "unexpected `-`")
        with pytest.raises(ValueError, match=rf"phase 0: n_steps must be >= 1, got {steps}"):
            build_schedule(line(), loss, [(steps, 0.1)], {"a": free_in(0)})
    with pytest.raises(TypeError, match="Δloss_criterion must be a number, got 'small'"):  # (was float()'s own message)
        build_schedule(line(), loss, [(5, 0.1)], {"a": free_in(0)}, Δloss_criterion="small")
    with pytest.raises(schedc.SchedError) as err:
        build_schedule(line(), loss, [(5, 0.1)], {"a": free_in(0)}, default_optimizer="rmsprp")
    assert codes(err) == ["E0105"]


def test_spectracles_own_specs_are_refused_with_a_hint():
    spectracles = pytest.importorskip("spectracles")
    with pytest.raises(TypeError, match="import the helpers from schedc"):
        build_schedule(line(), loss, [(5, 0.1)], {"a": spectracles.free_in(0)})


def test_helpers_combine_with_or():
    spec = free_in(0) | init_normal(1, 0, 0.5)
    assert [p[0] for p in spec.parts] == ["free_in", "init_at"]
    assert init_value(0, None).parts == ()


# ---------------------------------------------------------------- managed


@pytest.fixture()
def managed():
    return build_schedule(line(), loss, [(5, 0.1), (5, 0.1), (5, 0.1)], {"a": free_in(0, 1, 2)}, managed=True)


def test_managed_runs_in_order_and_reports_status(managed):
    assert managed.run_next_phase(X, Y)
    assert managed.get_completed_phases() == [0] and managed.get_next_phase_index() == 1
    with pytest.raises(RuntimeError, match="must complete phases in order"):
        managed.run_phase_by_index(2, X, Y)
    with pytest.raises(RuntimeError, match="has already been completed"):
        managed.run_phase_by_index(0, X, Y)
    managed.run_all(X, Y)
    status = managed.get_phase_status()
    assert status == {"current_phase": 3, "total_phases": 3, "completed_phases": 3, "phase_states": ["completed"] * 3, "is_complete": True}
    assert not managed.run_next_phase(X, Y) and len(managed.model_history) == 4 and len(managed.loss_histories) == 3


def test_managed_matches_an_unmanaged_run(managed):
    managed.run_all(X, Y)
    plain = build_schedule(line(), loss, [(5, 0.1), (5, 0.1), (5, 0.1)], {"a": free_in(0, 1, 2)})
    plain.run_all(X, Y)
    np.testing.assert_array_equal(managed.loss_history, plain.loss_history)


def test_skip_then_reset_from_a_later_phase_works(managed):
    managed.skip_phase(0)
    managed.run_next_phase(X, Y)
    assert managed.phase_states == ["skipped", "completed", "pending"]
    assert managed.model_history[1] is managed.model_history[0]  # a skip passes the model through
    with pytest.raises(RuntimeError, match="skipped"):
        managed.run_phase_by_index(0, X, Y)  # spectracles ran it, out of order
    after_1 = managed.model_history[2]
    managed.reset_from_phase(2)  # spectracles: IndexError after a skip
    assert managed.get_next_phase_index() == 2 and managed.model_history[-1] is after_1
    managed.reset_from_phase(1)
    assert managed.phase_states == ["skipped", "pending", "pending"] and len(managed.model_history) == 2
    managed.reset()
    assert managed.get_pending_phases() == [0, 1, 2] and managed.loss_histories == []


def test_managed_keeps_the_stop_rule():
    s = build_schedule(line(), loss, [(400, 0.05)], {"a": free_in(0)}, managed=True, Δloss_criterion=1e3)
    s.run_next_phase(X, Y)
    assert len(s.loss_histories[0]) == 101  # spectracles' managed schedule ignores the criterion


def test_non_finite_loss_leaves_the_phase_pending():
    s = build_schedule(line(), nan_loss, [(5, 0.1), (50, 0.1)], {"a": free_in(1)}, managed=True)
    s.run_next_phase(X, Y)
    with pytest.raises(RunError, match="phase 1"):
        s.run_next_phase(X, Y)
    assert s.phase_states == ["completed", "pending"] and len(s.model_history) == 2


def test_the_python_codes_examples_produce_their_codes():
    from schedc.lang.diagnostics import CODES, PYTHON_CODES

    names = {"build_schedule": build_schedule, "free_in": free_in, "init_normal": init_normal, "model": {"a": jnp.zeros(2)}, "loss": lambda m: jnp.sum(m["a"] ** 2)}
    for code in sorted(PYTHON_CODES):
        with pytest.raises(schedc.SchedError) as err:
            eval(CODES[code].example, names)
        assert codes(err) == [code]


def test_managed_inits_of_constrained_parameters_are_in_constrained_space():
    spectracles = pytest.importorskip("spectracles")

    class Positive(eqx.Module):
        scale: spectracles.ConstrainedParameter
        shift: spectracles.Parameter

        def __call__(self, x):
            return self.scale.val * x + self.shift.val

    model = Positive(spectracles.ConstrainedParameter(initial=1.0, lower=0.0), spectracles.Parameter(initial=0.0))
    s = build_schedule(model, loss, [(5, 0.1), (5, 0.1)], {"scale": free_in(0) | init_value(1, 2.0), "shift": free_in(0, 1)}, managed=True)
    s.run_next_phase(X, Y)
    s.run_next_phase(X, Y)  # a fresh runner for this call: the constrained transform must still apply
    np.testing.assert_allclose(s.model_history[-1].scale.val, 2.0, rtol=1e-6)


def test_numpy_and_jax_numbers_print_as_written():
    s = build_schedule(line(), loss, [(np.int64(5), jnp.float32(0.1))], {"w": free_in(0) | init_value(0, jnp.array([0.1, 0.2]))})
    assert "phase 5 lr 0.1 <" in str(s) and "init w = $init0" in str(s)
    s.run_all(X, Y)


def test_an_init_array_of_the_wrong_shape_is_e0407_even_when_constant():
    s = build_schedule(line(), loss, [(1, 0.0)], {"w": free_in(0) | init_value(0, np.full(2, 0.5))})
    s.run_all(X, Y)
    np.testing.assert_array_equal(s.model_history[-1].w.val, [0.5, 0.5])
    with pytest.raises(schedc.SchedError) as err:  # w has two elements: three equal numbers do not fit it
        build_schedule(line(), loss, [(1, 0.0)], {"w": free_in(0) | init_value(0, np.zeros(3))})
    assert codes(err) == ["E0407"] and "does not fit `w`" in str(err.value)
    with pytest.raises(schedc.SchedError) as err:  # the same through spectracles' PhaseConfig
        schedc.OptimiserSchedule(line(), loss, [schedc.PhaseConfig(1, "sgd(0.1)", fix_status_updates={"w": False}, param_val_updates={"w": np.zeros(3)})])
    assert codes(err) == ["E0407"]
