"""Numeric cross-checks of schedc's runtime against spectracles' build_schedule (the `compare` extra).

The same spectracles model (Parameter nodes), loss, data and phases through both;
schedc runs the inner model, spectracles its ShareModule wrapper.
"""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import schedc

spectracles = pytest.importorskip("spectracles")
from spectracles import Parameter, build_model  # noqa: E402
from spectracles.optimise.schedule_builder import build_schedule, free_in, init_value  # noqa: E402


class Line(eqx.Module):
    a: Parameter
    b: Parameter

    def __call__(self, x):
        return self.a.val * x + self.b.val


X = jnp.linspace(-1.0, 1.0, 50)
Y = 1.5 * X - 0.4


def loss(model, x, y):
    return jnp.mean((model(x) - y) ** 2)


def fresh():
    return Line(Parameter(initial=0.2), Parameter(initial=0.0))


def spectracles_run(phases, params, criterion=None):
    schedule = build_schedule(build_model(Line, *fresh().__dict__.values()), loss, phases, params, Δloss_criterion=criterion)
    schedule.run_all(X, Y)
    return schedule


def test_two_sgd_phases_with_an_init_and_momentum_reset():
    ref = spectracles_run(
        [(30, 0.1, optax.sgd(0.1, momentum=0.9)), (20, 0.05, optax.sgd(0.05, momentum=0.9))],
        {"a": free_in(0, 1), "b": free_in(1) | init_value(1, jnp.array([0.5]))},
    )
    ours = schedc.compile(
        """optimizer sgd(momentum=0.9)
        phase 30 lr 0.1 < free a >
        phase 20 lr 0.05 < free a, b; init b = 0.5 >""",
        fresh(),
    ).run(loss, X, Y, quiet=True)
    for mine, theirs in zip(ours.phase_losses, ref.loss_histories):
        np.testing.assert_allclose(mine, np.asarray(theirs), rtol=2e-5)
    final = ref.model_history[-1]
    np.testing.assert_allclose(np.asarray(ours.model.a.val), np.asarray(final.a.val), rtol=2e-5)
    np.testing.assert_allclose(np.asarray(ours.model.b.val), np.asarray(final.b.val), rtol=2e-5)


def test_early_stop_step_counts_match_the_delta_loss_rule():
    ref = spectracles_run([(1000, 0.05), (1000, 0.02)], {"a": free_in(0, 1), "b": free_in(1)}, criterion=1e-4)
    ours = schedc.compile(
        """phase 1000 lr 0.05 < free a; stop when loss_change < 1e-4 >
        phase 1000 lr 0.02 < free a, b; stop when loss_change < 1e-4 >""",
        fresh(),
    ).run(loss, X, Y, quiet=True)
    assert [p.steps_run for p in ours.phases] == [len(h) for h in ref.loss_histories]
    assert ours.phases[0].steps_run < 1000  # the rule fired
    for mine, theirs in zip(ours.phase_losses, ref.loss_histories):
        np.testing.assert_allclose(mine, np.asarray(theirs), rtol=1e-4, atol=1e-7)


def test_inits_of_constrained_parameters_are_given_in_constrained_space():
    from spectracles import ConstrainedParameter

    class Bounded(eqx.Module):
        a: ConstrainedParameter
        b: Parameter

        def __call__(self, x):
            return self.a.val * x + self.b.val

    model = Bounded(ConstrainedParameter(initial=0.5, lower=0.0, upper=2.0), Parameter(initial=0.0))
    res = schedc.compile("phase 1 lr 0 < init a = 1.5; init b = 0.25 >", model).run(loss, X, Y, quiet=True)
    np.testing.assert_allclose(np.asarray(res.model.a.val), 1.5, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(res.model.b.val), 0.25)
