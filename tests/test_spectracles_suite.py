"""spectracles' own public schedule tests (tests/test_schedule_builder.py, tests/test_opt_schedule.py and
the models of tests/test_models.py of the spectracles repository), with their imports pointed at schedc.

Only what belongs to the schedule API is ported: build_schedule and its specs, `PhaseConfig` and the
low-level `OptimiserSchedule(model, loss, [PhaseConfig(...)])` / `ManagedOptimiserSchedule` constructors
(with `get_filter_spec_fn`), the schedule objects (`phases` with their `.config`, `run_all`, `run_phase`,
`model_history`, `loss_history(ies)`, the managed operations). Left out, and why: spectracles' glob
internals (`_match_pattern`, `expand_patterns`: schedc's patterns differ on purpose, docs/migration.md),
the `ParamSpec` fields (`free_phases`, `init_specs`: sentinel encodings of spectracles' own), and the
internal `Phase(config, frame)` / `OptimiserFrame` (a schedc phase runs as a compiled program, not a frame).
The models are spectracles' (Parameter nodes, ShareModule), so the tests need the `compare` extra;
where both run, the losses are compared with spectracles' own run of the same schedule.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
import pytest

from schedc import (
    ManagedOptimiserSchedule,
    OptimiserSchedule,
    PhaseConfig,
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
from spectracles.optimise import opt_schedule as reference_schedule  # noqa: E402
from spectracles.optimise import schedule_builder as reference  # noqa: E402
from spectracles.optimise.opt_frame import get_opt_filter_spec  # noqa: E402


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


# ---------------------------------------------------------------- tests/test_opt_schedule.py: TestPhaseConfig


def test_phase_config_basic_initialization():
    config = PhaseConfig(n_steps=100, optimiser=optax.sgd(learning_rate=0.1))
    assert config.n_steps == 100
    assert config.Δloss_criterion == 1e2  # spectracles' default
    assert config.fix_status_updates == {} and config.param_val_updates == {}


def test_phase_config_updates_and_criterion():
    assert PhaseConfig(n_steps=50, optimiser=optax.adam(0.01), fix_status_updates={"param": True}).fix_status_updates == {"param": True}
    assert "param" in PhaseConfig(n_steps=50, optimiser=optax.adam(0.01), param_val_updates={"param": jnp.array([1.0])}).param_val_updates
    assert PhaseConfig(n_steps=100, optimiser=optax.sgd(0.1), Δloss_criterion=1e-4).Δloss_criterion == 1e-4


def test_phase_config_refuses_what_spectracles_refuses_naming_the_value():
    with pytest.raises(TypeError, match=r"n_steps must be int\. Got 100\.0"):
        PhaseConfig(n_steps=100.0, optimiser=optax.sgd(0.1))
    with pytest.raises(TypeError, match=r"fix_status_updates must be bool\. Got 'true' for 'param'"):
        PhaseConfig(n_steps=100, optimiser=optax.sgd(0.1), fix_status_updates={"param": "true"})
    with pytest.raises(TypeError, match=r"param_val_updates must be jax Arrays .*Got \[1\.0\] for 'param'"):
        PhaseConfig(n_steps=100, optimiser=optax.sgd(0.1), param_val_updates={"param": [1.0]})
    with pytest.raises(TypeError, match=r"Δloss_criterion must be a number or None\. Got '1e-3'"):
        PhaseConfig(n_steps=100, optimiser=optax.sgd(0.1), Δloss_criterion="1e-3")


# ---------------------------------------------------------------- TestOptimiserSchedule: the low-level constructor


def both(configs, model_cls=SimpleModel, managed=False, **kwargs):
    """schedc's and spectracles' schedule of the same PhaseConfigs (each built with its own PhaseConfig class)."""
    ours_cls, theirs_cls = (ManagedOptimiserSchedule, reference_schedule.ManagedOptimiserSchedule) if managed else (OptimiserSchedule, reference_schedule.OptimiserSchedule)
    ours = ours_cls(build_model(model_cls, value=1.0), loss_fn, configs(PhaseConfig), **kwargs)
    theirs = theirs_cls(build_model(model_cls, value=1.0), loss_fn, configs(reference_schedule.PhaseConfig), **kwargs)
    return ours, theirs


def assert_same_fit(ours, theirs):
    assert [len(h) for h in ours.loss_histories] == [len(h) for h in theirs.loss_histories]
    for mine, ref in zip(ours.loss_histories, theirs.loss_histories):
        np.testing.assert_allclose(mine, np.asarray(ref), rtol=1e-5, atol=1e-7)  # float32, near a minimum
    mine, ref = ours.model_history[-1].get_locked_model(), theirs.model_history[-1].get_locked_model()
    for a, b in zip(jax.tree_util.tree_leaves(mine), jax.tree_util.tree_leaves(ref)):
        if eqx.is_inexact_array(a):
            np.testing.assert_allclose(a, b, rtol=1e-5)


def test_constructor_initialization():
    model = build_model(SimpleModel, value=1.0)
    configs = [PhaseConfig(n_steps=10, optimiser=optax.sgd(0.1)), PhaseConfig(n_steps=10, optimiser=optax.adam(0.01))]
    schedule = OptimiserSchedule(model, loss_fn, configs)
    assert len(schedule.phases) == 2 and len(schedule.model_history) == 1
    assert schedule.model_history[0] is model
    assert schedule.phase_configs == configs and schedule.phases[1].config is configs[1]


def test_constructor_run_all_loss_histories_match_spectracles():
    ours, theirs = both(lambda PC: [PC(n_steps=10, optimiser=optax.sgd(0.1)), PC(n_steps=15, optimiser=optax.adam(0.01))])
    for s in (ours, theirs):
        s.run_all(x=X, y=2.0 * X)
    assert len(ours.model_history) == 3 and ours.loss_history[0] > ours.loss_history[-1]
    assert [len(h) for h in ours.loss_histories] == [10, 15] and len(ours.loss_history) == 25
    assert_same_fit(ours, theirs)


def test_constructor_run_phase():
    schedule = OptimiserSchedule(build_model(SimpleModel, value=1.0), loss_fn, [PhaseConfig(n_steps=20, optimiser=optax.sgd(0.1))])
    schedule.run_phase(schedule.phases[0], x=X, y=2.0 * X)
    assert len(schedule.model_history) == 2


def test_constructor_fix_status_and_value_updates_match_spectracles():
    def configs(PC):
        return [
            PC(n_steps=10, optimiser=optax.sgd(0.1), fix_status_updates={"inner2.param": True}),
            PC(n_steps=10, optimiser=optax.sgd(0.1), fix_status_updates={"inner1.param": True, "inner2.param": False}),
            # no updates: the statuses of phase 1 stay; `shared` (never named) stays free, as its Parameter says
            PC(n_steps=10, optimiser=optax.adam(0.05), param_val_updates={"inner1.param": jnp.array([0.25])}),
        ]

    ours, theirs = both(configs, NestedModel)
    assert [p.free for p in ours.phases] == [("inner1.param", "shared"), ("inner2.param", "shared"), ("inner2.param", "shared")]
    for s in (ours, theirs):
        s.run_all(x=X, y=2.0 * X)
    assert_same_fit(ours, theirs)
    np.testing.assert_allclose(ours.model_history[-1].get_locked_model().inner1.param.val, 0.25)  # set, then fixed


def test_constructor_default_criterion_stops_where_spectracles_does():
    ours, theirs = both(lambda PC: [PC(n_steps=300, optimiser=optax.adam(0.05))])
    for s in (ours, theirs):
        s.run_all(x=X, y=2.0 * X)
    assert len(ours.loss_histories[0]) == 101  # |Δloss| over 50 steps < 1e2 at the first check, step 100
    assert_same_fit(ours, theirs)


def test_constructor_with_shared_params():
    schedule = OptimiserSchedule(build_model(SharedLeafModel, value=1.0), loss_fn, [PhaseConfig(n_steps=50, optimiser=optax.adam(0.1))])
    schedule.run_all(x=X, y=X)
    assert jnp.allclose(schedule.model_history[-1].get_locked_model().a.val, 0.5, rtol=1e-1)


def test_constructor_takes_spectracles_phase_configs_as_they_are():
    configs = [reference_schedule.PhaseConfig(n_steps=20, optimiser=optax.adam(0.1), fix_status_updates={"param": False})]
    ours = OptimiserSchedule(build_model(SimpleModel, value=1.0), loss_fn, configs)
    theirs = reference_schedule.OptimiserSchedule(build_model(SimpleModel, value=1.0), loss_fn, configs)
    for s in (ours, theirs):
        s.run_all(x=X, y=2.0 * X)
    assert_same_fit(ours, theirs)


def test_constructor_managed_matches_spectracles_phase_by_phase():
    ours, theirs = both(lambda PC: [PC(n_steps=10, optimiser=optax.sgd(0.1)), PC(n_steps=10, optimiser=optax.adam(0.01)), PC(n_steps=5, optimiser=optax.sgd(0.01))], managed=True)
    for s in (ours, theirs):
        s.run_next_phase(x=X, y=2.0 * X)
        s.skip_phase(1)
        s.run_all(x=X, y=2.0 * X)
    assert ours.get_phase_status() == theirs.get_phase_status()
    assert ours.get_completed_phases() == [0, 2] and ours.phase_configs is not None and ours.loss_fn is loss_fn
    assert_same_fit(ours, theirs)


def freeze_shared(model):
    """A custom filter spec: spectracles' default, with `shared` never trained."""
    return eqx.tree_at(lambda spec: spec.model.shared, get_opt_filter_spec(model), False)


def test_constructor_get_filter_spec_fn_matches_spectracles():
    ours, theirs = both(lambda PC: [PC(n_steps=15, optimiser=optax.adam(0.1)), PC(n_steps=10, optimiser=optax.sgd(0.05), fix_status_updates={"inner1.param": True})], NestedModel, get_filter_spec_fn=freeze_shared)
    assert [p.free for p in ours.phases] == [("inner1.param", "inner2.param"), ("inner2.param",)]
    assert ours.get_filter_spec_fn is freeze_shared
    for s in (ours, theirs):
        s.run_all(x=X, y=2.0 * X)
    assert_same_fit(ours, theirs)


class WithGrid(eqx.Module):
    param: Parameter
    grid: jax.Array

    def __init__(self, value=1.0):
        self.param = Parameter(initial=value)
        self.grid = jnp.linspace(0.0, 1.0, 3)

    def __call__(self, x):
        return self.param.val * x + self.grid


def test_constructor_errors_name_what_was_given():
    model = build_model(SimpleModel, value=1.0)
    with pytest.raises(ValueError, match="did not match any parameters"):  # a SchedError, naming the path
        OptimiserSchedule(model, loss_fn, [PhaseConfig(n_steps=5, optimiser=optax.sgd(0.1), fix_status_updates={"nonexistent": False})])
    with pytest.raises(ValueError, match="only matches shared parameters"):
        OptimiserSchedule(build_model(SharedLeafModel, value=1.0), loss_fn, [PhaseConfig(n_steps=5, optimiser=optax.sgd(0.1), fix_status_updates={"b": False})])
    with pytest.raises(TypeError, match=r"phase_configs\[1\]: expected a PhaseConfig .*got \(5, 0\.1\)"):
        OptimiserSchedule(model, loss_fn, [PhaseConfig(n_steps=5, optimiser=optax.sgd(0.1)), (5, 0.1)])
    with pytest.raises(TypeError, match="phase_configs must be a list of PhaseConfig, got PhaseConfig"):
        OptimiserSchedule(model, loss_fn, PhaseConfig(n_steps=5, optimiser=optax.sgd(0.1)))
    with pytest.raises(TypeError, match=r"phase 0: expected an optimizer name or text, .*got 0\.1"):
        OptimiserSchedule(model, loss_fn, [PhaseConfig(n_steps=5, optimiser=0.1)])
    with pytest.raises(TypeError, match="get_filter_spec_fn must be a function model -> filter spec"):
        OptimiserSchedule(model, loss_fn, [PhaseConfig(n_steps=5, optimiser=optax.sgd(0.1))], get_filter_spec_fn="default")
    with pytest.raises(TypeError, match=r"get_filter_spec_fn selects arrays that are not parameters: \.model\.grid"):
        OptimiserSchedule(build_model(WithGrid), loss_fn, [PhaseConfig(n_steps=5, optimiser=optax.sgd(0.1))], get_filter_spec_fn=lambda m: jax.tree_util.tree_map(eqx.is_array, m))



def test_build_schedule_get_filter_spec_fn_in_spectracles_position_matches_spectracles():
    phases = [(15, 0.1), (10, 0.05, optax.sgd(0.05))]
    model = build_model(NestedModel, value=1.0)
    # spectracles' positional order: ..., default_optimizer, managed, get_filter_spec_fn, Δloss_criterion, key
    ours = build_schedule(model, loss_fn, phases, {"*.param": free_in(0, 1), "shared": free_in(1) | init_value(1, 0.5)}, "adam", False, freeze_shared, None, None)
    theirs = reference.build_schedule(model, loss_fn, phases, {"*.param": reference.free_in(0, 1), "shared": reference.free_in(1) | reference.init_value(1, 0.5)}, "adam", False, freeze_shared, None, None)
    assert [p.free for p in ours.phases] == [("inner1.param", "inner2.param")] * 2 and ours.get_filter_spec_fn is freeze_shared
    assert "shared:       fixed in 0, 1 | init value(0.5) at 1;" in str(ours)  # the program says what runs
    for s in (ours, theirs):
        s.run_all(x=X, y=2.0 * X)
    assert_same_fit(ours, theirs)
    default = build_schedule(model, loss_fn, phases, {"*.param": free_in(0, 1), "shared": free_in(1)}, get_filter_spec_fn=get_opt_filter_spec)
    assert str(default) == str(build_schedule(model, loss_fn, phases, {"*.param": free_in(0, 1), "shared": free_in(1)}))  # spectracles' default: the specs


def public(obj) -> set[str]:
    return {name for name in dir(obj) if not name.startswith("_")}


def test_every_public_name_of_spectracles_schedule_api_is_schedcs():
    import inspect

    import schedc

    for name in ("OptimiserSchedule", "ManagedOptimiserSchedule"):
        theirs = getattr(reference_schedule, name)(build_model(SimpleModel), loss_fn, [reference_schedule.PhaseConfig(3, optax.sgd(0.1))])
        ours = getattr(schedc, name)(build_model(SimpleModel), loss_fn, [PhaseConfig(3, optax.sgd(0.1))])
        assert public(theirs) <= public(ours), public(theirs) - public(ours)
        # a phase's `frame`: spectracles' internal OptimiserFrame (a schedc phase is a compiled program)
        assert public(theirs.phases[0]) - public(ours.phases[0]) == {"frame"}
    assert public(reference_schedule.PhaseConfig(3, optax.sgd(0.1))) <= public(PhaseConfig(3, optax.sgd(0.1)))
    assert {s.name: s.value for s in reference_schedule.PhaseState} == {s.name: s.value for s in PhaseState}
    # build_schedule's parameters in spectracles' order, so positional calls keep their meaning
    theirs = list(inspect.signature(reference.build_schedule).parameters)
    assert list(inspect.signature(build_schedule).parameters)[: len(theirs)] == theirs
    # every name spectracles exports from its schedule modules
    exported = {n for n in spectracles.__all__ if getattr(getattr(spectracles, n), "__module__", "") in (reference_schedule.__name__, reference.__name__)}
    assert len(exported) >= 10 and exported <= set(dir(schedc)), exported - set(dir(schedc))


# ---------------------------------------------------------------- only Parameters are parameters (issue: `_freqs` was trained)


def test_a_fourier_gps_frequency_grid_is_a_constant_no_pattern_frees():
    import schedc

    kernel = spectracles.SquaredExponential(length_scale=Parameter(initial=0.3), variance=Parameter(initial=1.0))
    model = build_model(spectracles.FourierGP, (4, 4), kernel)
    target = jnp.linspace(0.0, 1.0, 16).reshape(4, 4)

    def gp_loss(m):  # gradients reach `_freqs` through the kernel's feature weights: only the filter keeps it fixed
        return jnp.sum((m.coefficients.val * m.kernel.feature_weights(m._freqs) - target) ** 2)

    program = schedc.compile("phase 20 lr 0.05 < free ** >", model)
    assert program.tree.paths == ("coefficients", "kernel.length_scale", "kernel.variance", "zeromode")
    result = program.run(gp_loss, quiet=True)
    before, after = model.get_locked_model(), result.model.get_locked_model()
    np.testing.assert_array_equal(after._freqs, before._freqs)
    assert not np.allclose(after.coefficients.val, before.coefficients.val)
    with pytest.raises(ValueError, match="did not match any parameters"):
        build_schedule(model, gp_loss, [(5, 0.1)], {"_freqs": free_in(0)})
