"""spectracles' own public schedule tests (tests/test_schedule_builder.py, tests/test_opt_schedule.py and
the models of tests/test_models.py of the spectracles repository), with their imports pointed at schedc.

Only what belongs to the schedule API is ported: build_schedule and its specs, the schedule objects
(`phases` with their `.config`, `run_all`, `run_phase`, `model_history`, `loss_history(ies)`, the
managed operations). Left out, and why: spectracles' glob internals (`_match_pattern`, `expand_patterns`:
schedc's patterns differ on purpose, docs/migration.md), the `ParamSpec` fields (`free_phases`,
`init_specs`: sentinel encodings of spectracles' own), and the low-level `OptimiserSchedule(model, loss,
[PhaseConfig(...)])` constructor (schedc builds schedules from build_schedule or a .sched program).
The models are spectracles' (Parameter nodes, ShareModule), so the tests need the `compare` extra;
where both run, the losses are compared with spectracles' own run of the same schedule.
"""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
import pytest

from schedc import (
    ManagedOptimiserSchedule,
    OptimiserSchedule,
    PhaseState,
    build_schedule,
    fixed_in,
    free_after,
    free_in,
    free_until,
    init_normal,
    init_uniform,
    init_value,
)

spectracles = pytest.importorskip("spectracles")
from spectracles import Parameter  # noqa: E402
from spectracles.model.share_module import build_model  # noqa: E402
from spectracles.optimise import schedule_builder as reference  # noqa: E402


# ---------------------------------------------------------------- spectracles' tests/test_models.py


class SimpleModel(eqx.Module):
    param: Parameter

    def __init__(self, value=1.0):
        self.param = Parameter(initial=value)

    def __call__(self, x):
        return self.param.val * x


class SharedLeafModel(eqx.Module):
    a: Parameter
    b: Parameter

    def __init__(self, value=1.0):
        shared_param = Parameter(initial=value)
        self.a = shared_param
        self.b = shared_param

    def __call__(self, x):
        return self.a.val * x + self.b.val * x


class NestedModel(eqx.Module):
    inner1: SimpleModel
    inner2: SimpleModel
    shared: Parameter

    def __init__(self, value=1.0):
        self.inner1 = SimpleModel(value)
        self.inner2 = SimpleModel(value)
        self.shared = Parameter(initial=2.0)

    def __call__(self, x):
        return self.inner1(x) + self.inner2(x) + self.shared.val


class ComplexSharedModel(eqx.Module):
    inner1: SimpleModel
    inner2: SimpleModel
    inner3: NestedModel
    param: Parameter

    def __init__(self, value=1.0):
        shared_param = Parameter(initial=value)
        self.inner1 = eqx.tree_at(lambda m: m.param, SimpleModel(value=value), shared_param)
        self.inner2 = eqx.tree_at(lambda m: m.param, SimpleModel(value=value), shared_param)
        _inner3 = NestedModel(value=value)
        self.inner3 = eqx.tree_at(lambda m: m.inner1, _inner3, eqx.tree_at(lambda m: m.param, _inner3.inner1, shared_param))
        self.param = shared_param

    def __call__(self, x):
        return self.inner1(x) + self.inner2(x) + self.inner3(x) + self.param.val


def loss_fn(model, x, y):
    return jnp.mean((model(x) - y) ** 2)


X = jnp.array([1.0, 2.0, 3.0])


# ---------------------------------------------------------------- TestHelperFunctions / edge cases (behaviour)


def test_free_after_past_the_last_phase_warns_and_is_never_free():
    model = build_model(NestedModel, value=1.0)
    with pytest.warns(UserWarning, match=r"free_after\(5\) is past the last phase \(2\): never free"):
        s = build_schedule(model, loss_fn, [(5, 0.1)] * 3, {"shared": free_after(5), "inner1.param": free_in(0), "inner2.param": free_in(0)})
    assert all("shared" not in p.free for p in s.phases)


def test_helpers_resolve_to_spectracles_phases():
    model = build_model(NestedModel, value=1.0)
    specs = {"inner1.param": free_after(2), "inner2.param": fixed_in(0, 2), "shared": free_until(2)}
    s = build_schedule(model, loss_fn, [(5, 0.1)] * 4, specs)
    ref = reference.build_schedule(model, loss_fn, [(5, 0.1)] * 4, {"inner1.param": reference.free_after(2), "inner2.param": reference.fixed_in(0, 2), "shared": reference.free_until(2)})
    for ours, theirs in zip(s.phases, ref.phases):
        assert ours.config.fix_status_updates == theirs.config.fix_status_updates


# ---------------------------------------------------------------- TestBuildSchedule


def test_basic_build():
    schedule = build_schedule(build_model(SimpleModel, value=1.0), loss_fn, phases=[(10, 0.1), (10, 0.01)], params={"param": free_in(0, 1)})
    assert isinstance(schedule, OptimiserSchedule) and not isinstance(schedule, ManagedOptimiserSchedule)
    assert len(schedule.phases) == 2


def test_build_managed():
    schedule = build_schedule(build_model(SimpleModel, value=1.0), loss_fn, phases=[(10, 0.1)], params={"param": free_in(0)}, managed=True)
    assert isinstance(schedule, ManagedOptimiserSchedule)


def test_run_schedule_converges_and_matches_spectracles():
    model = build_model(SimpleModel, value=1.0)
    schedule = build_schedule(model, loss_fn, phases=[(50, 0.1)], params={"param": free_in(0)})
    schedule.run_all(x=X, y=2.0 * X)
    locked = schedule.model_history[-1].get_locked_model()
    assert jnp.allclose(locked.param.val, 2.0, rtol=0.1)
    ref = reference.build_schedule(model, loss_fn, phases=[(50, 0.1)], params={"param": reference.free_in(0)})
    ref.run_all(x=X, y=2.0 * X)
    np.testing.assert_allclose(schedule.loss_history, np.asarray(ref.loss_history), rtol=1e-5)


def test_multi_phase_different_free():
    schedule = build_schedule(
        build_model(NestedModel, value=1.0),
        loss_fn,
        phases=[(10, 0.1), (10, 0.01)],
        params={"inner1.param": free_in(0), "inner2.param": free_after(1), "shared": free_in(0, 1)},
    )
    assert len(schedule.phases) == 2
    phase0_config = schedule.phases[0].config
    assert phase0_config.fix_status_updates["inner1.param"] is False
    assert phase0_config.fix_status_updates["inner2.param"] is True
    assert phase0_config.fix_status_updates["shared"] is False
    phase1_config = schedule.phases[1].config
    assert phase1_config.fix_status_updates["inner1.param"] is True
    assert phase1_config.fix_status_updates["inner2.param"] is False
    assert phase1_config.fix_status_updates["shared"] is False


def test_init_value():
    schedule = build_schedule(build_model(SimpleModel, value=1.0), loss_fn, phases=[(10, 0.1)], params={"param": free_in(0) | init_value(0, 5.0)})
    phase0_config = schedule.phases[0].config
    assert "param" in phase0_config.param_val_updates
    assert jnp.allclose(phase0_config.param_val_updates["param"], 5.0)


def test_init_normal_requires_key():
    with pytest.raises(ValueError, match="PRNG key required"):
        build_schedule(build_model(SimpleModel, value=1.0), loss_fn, phases=[(10, 0.1)], params={"param": free_in(0) | init_normal(0)})


def test_init_normal_with_key():
    schedule = build_schedule(
        build_model(SimpleModel, value=1.0), loss_fn, phases=[(10, 0.1)], params={"param": free_in(0) | init_normal(0, mean=0.0, std=1.0)}, key=jr.key(42)
    )
    assert "param" in schedule.phases[0].config.param_val_updates


def test_init_uniform_with_key():
    schedule = build_schedule(
        build_model(SimpleModel, value=1.0), loss_fn, phases=[(10, 0.1)], params={"param": free_in(0) | init_uniform(0, low=-1.0, high=1.0)}, key=jr.key(42)
    )
    val = schedule.phases[0].config.param_val_updates["param"]
    assert jnp.all(val >= -1.0) and jnp.all(val <= 1.0)


def test_custom_optimizer_object():
    schedule = build_schedule(build_model(SimpleModel, value=1.0), loss_fn, phases=[(10, 0.1, optax.sgd(0.1))], params={"param": free_in(0)})
    assert len(schedule.phases) == 1
    assert isinstance(schedule.phases[0].config.optimiser, optax.GradientTransformation)


def test_default_optimizer_sgd():
    schedule = build_schedule(build_model(SimpleModel, value=1.0), loss_fn, phases=[(10, 0.1)], params={"param": free_in(0)}, default_optimizer="sgd")
    assert len(schedule.phases) == 1


def test_wildcard_with_nested_model_matches_spectracles():
    model = build_model(NestedModel, value=1.0)
    schedule = build_schedule(model, loss_fn, phases=[(20, 0.1)], params={"*.param": free_in(0), "shared": free_in(0)})
    schedule.run_all(x=X, y=2.0 * X)
    assert schedule.loss_history[0] > schedule.loss_history[-1]
    ref = reference.build_schedule(model, loss_fn, phases=[(20, 0.1)], params={"*.param": reference.free_in(0), "shared": reference.free_in(0)})
    ref.run_all(x=X, y=2.0 * X)
    np.testing.assert_allclose(schedule.loss_history, np.asarray(ref.loss_history), rtol=1e-5)


# ---------------------------------------------------------------- TestBuildScheduleWithSharing


def test_shared_model_parent_path():
    model = build_model(SharedLeafModel, value=1.0)
    schedule = build_schedule(model, loss_fn, phases=[(50, 0.1)], params={"a": free_in(0)})
    schedule.run_all(x=X, y=X)
    locked = schedule.model_history[-1].get_locked_model()
    assert jnp.allclose(locked.a.val, 0.5, rtol=0.1)


def test_shared_model_child_path_raises():
    with pytest.raises(ValueError, match="only matches shared parameters") as err:
        build_schedule(build_model(SharedLeafModel, value=1.0), loss_fn, phases=[(10, 0.1)], params={"b": free_in(0)})
    assert [d.code for d in err.value.diagnostics] == ["E0402"] and "pattern `b`" in str(err.value)  # as the user wrote it


def test_pattern_matching_nothing_raises():
    with pytest.raises(ValueError, match="did not match any parameters"):
        build_schedule(build_model(SimpleModel, value=1.0), loss_fn, phases=[(10, 0.1)], params={"nonexistent": free_in(0)})


def test_complex_shared_model():
    model = build_model(ComplexSharedModel, value=1.0)
    parent_paths = model.get_parameter_paths(show_shared=False)
    schedule = build_schedule(model, loss_fn, phases=[(10, 0.1)], params={p: free_in(0) for p in parent_paths})
    assert len(schedule.phases) == 1
    assert schedule.phases[0].free == tuple(parent_paths)


# ---------------------------------------------------------------- TestOptimiserSchedule (through build_schedule)


def two_phase(model_cls=SimpleModel, steps=(10, 10), managed=False):
    phases = [(steps[0], 0.1, optax.sgd(0.1)), (steps[1], 0.01, optax.adam(0.01))]
    return build_schedule(build_model(model_cls, value=1.0), loss_fn, phases, {"param": free_in(0, 1)} if model_cls is SimpleModel else {"a": free_in(0)}, managed=managed)


def test_initialization():
    schedule = two_phase()
    assert len(schedule.phases) == 2 and len(schedule.model_history) == 1
    assert schedule.model_history[0] is schedule.initial_model


def test_run_all_and_loss_histories_match_spectracles():
    schedule = two_phase(steps=(10, 15))
    schedule.run_all(x=X, y=2.0 * X)
    assert len(schedule.model_history) == 3
    assert schedule.loss_history[0] > schedule.loss_history[-1]
    assert [len(h) for h in schedule.loss_histories] == [10, 15] and len(schedule.loss_history) == 25
    ref = reference.build_schedule(build_model(SimpleModel, value=1.0), loss_fn, [(10, 0.1, optax.sgd(0.1)), (15, 0.01, optax.adam(0.01))], {"param": reference.free_in(0, 1)})
    ref.run_all(x=X, y=2.0 * X)
    for mine, theirs in zip(schedule.loss_histories, ref.loss_histories):
        np.testing.assert_allclose(mine, np.asarray(theirs), rtol=1e-5)


def test_run_phase():
    schedule = build_schedule(build_model(SimpleModel, value=1.0), loss_fn, [(20, 0.1, optax.sgd(0.1))], {"param": free_in(0)})
    schedule.run_phase(schedule.phases[0], x=X, y=2.0 * X)
    assert len(schedule.model_history) == 2
    schedule.run_phase(0, x=X, y=2.0 * X)  # by index too; from the last model, as spectracles
    assert len(schedule.model_history) == 3 and schedule.loss_histories[0][0] < 1e-3


def test_with_shared_params():
    schedule = build_schedule(build_model(SharedLeafModel, value=1.0), loss_fn, [(50, 0.1, optax.adam(0.1))], {"a": free_in(0)})
    schedule.run_all(x=X, y=X)
    assert jnp.allclose(schedule.model_history[-1].get_locked_model().a.val, 0.5, rtol=1e-1)


# ---------------------------------------------------------------- ManagedOptimiserSchedule


def test_managed_order_and_state_messages_are_spectracles():
    schedule = two_phase(managed=True)
    assert schedule.phase_states == ["pending", "pending"] and schedule.phase_states[0] is PhaseState.PENDING
    with pytest.raises(RuntimeError, match="must complete phases in order"):
        schedule.run_phase_by_index(1, x=X, y=2.0 * X)
    with pytest.raises(RuntimeError, match="must process phases in order"):
        schedule.skip_phase(1)
    schedule.run_next_phase(x=X, y=2.0 * X)
    with pytest.raises(RuntimeError, match="has already been completed"):
        schedule.run_phase_by_index(0, x=X, y=2.0 * X)
    with pytest.raises(ValueError, match="out of range"):
        schedule.run_phase_by_index(5, x=X, y=2.0 * X)
    assert schedule.get_phase_status()["phase_states"] == ["completed", "pending"]
    assert len(schedule.phase_configs) == 2 and schedule.loss_fn is loss_fn
