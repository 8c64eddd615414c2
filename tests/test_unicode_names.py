"""Parameter names that are Python identifiers but not ASCII (`σ`, `vσ_raw`, `μ`): valid in patterns,
names and placeholders; `**` and `model.**` include them; every suggestion the checker prints parses
back as a pattern; build_schedule accepts the programs it generates for such models."""

from __future__ import annotations

import re

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import schedc
from schedc import build_schedule, free_after, free_in, init_value
from schedc.lang.syntax import parse


class Line(eqx.Module):
    σ: jax.Array
    μ: jax.Array
    vσ_raw: jax.Array


class Model(eqx.Module):
    line: Line
    offset: jax.Array


def model():
    return Model(Line(jnp.array(0.5), jnp.array(0.0), jnp.ones(2)), jnp.array(0.0))


X = jnp.linspace(-1.0, 1.0, 30)


def loss(m, x):
    return jnp.mean((m.line.σ * x + m.line.μ + jnp.sum(m.line.vσ_raw) + m.offset - (2.0 * x + 1.0)) ** 2)


def free(text):
    return schedc.compile("phase 5 lr 0.1 < " + text + " >", model()).phases[0].free


def test_globs_include_unicode_names_consistently():
    everything = ("line.σ", "line.μ", "line.vσ_raw", "offset")
    assert free("free **") == everything
    assert free("free line.**") == free("free line.*") == everything[:3]
    assert free("free line.{σ,μ}") == ("line.σ", "line.μ")
    assert free("free line.v*_raw") == ("line.vσ_raw",)


def test_names_lets_and_placeholders_may_be_unicode():
    parsed = parse("let η = 0.1\nphase σ_fit 10 lr η * $λ < free line.σ >")
    assert not parsed.diagnostics
    program = schedc.compile("let η = 0.1\nphase σ_fit 10 lr η * $λ < free line.σ >", model(), λ=2)
    assert program.phases[0].name == "σ_fit"


@pytest.mark.parametrize("typo", ["line.sigma", "line.σσ", "line.vsigma_raw", "lin.μ", "line.σ.x", "σ"])
def test_every_printed_suggestion_parses_back_as_a_pattern(typo):
    with pytest.raises(schedc.SchedError) as err:
        schedc.compile("phase 5 lr 0.1 < free " + typo + " >", model())
    helps = [d.help for d in err.value.diagnostics if d.help and "did you mean" in d.help]
    assert helps, str(err.value)
    for suggestion in re.findall(r"`([^`]+)`", " ".join(helps)):
        assert free("free " + suggestion), suggestion  # parses, and matches a parameter


def test_build_schedule_accepts_its_programs_for_unicode_models():
    s = build_schedule(model(), loss, [(50, 0.1), (50, 0.05)], {"line.σ": free_in(0, 1), "line.μ": free_after(1) | init_value(1, 0.5), "line.vσ_raw": free_in(1)})
    assert re.search(r"line\.σ:\s+free in 0, 1;", str(s))
    s.run_all(X)
    assert s.loss_history[-1] < s.loss_history[0]
    np.testing.assert_allclose(float(s.model_history[1].line.μ), 0.0)  # fixed in phase 0
