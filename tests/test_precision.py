"""float32 and float64: every stop rule, optimizer kind and history, under x32 (this process) and
x64 (`jax_enable_x64` is process-wide: a subprocess runs the same script with JAX_ENABLE_X64=1).

Under x64 with a float64 model, histories, stop-rule buffers, hyperparameter logs and saved losses
keep float64: a float32 history cannot resolve a change of 1 at a loss of 1e7, so a loss_change rule
on it would stop at once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

SCRIPT = textwrap.dedent(
    r'''
    import json, sys
    import jax, jax.numpy as jnp, numpy as np, optax
    import schedc
    from schedc import build_schedule, free_in

    dtype = jnp.result_type(float)
    model = {"a": jnp.zeros((), dtype), "b": jnp.zeros(2, dtype)}

    def loss(m, big):
        return big + jnp.sum((m["b"] - 1.0) ** 2) + (m["a"] - 3.0) ** 2

    report = {}

    def record(name, result, big=0.0):
        report[name] = {
            "losses": [str(p.losses.dtype) for p in result.phases],
            "hypers": sorted({str(v.dtype) for p in result.phases for v in p.hyperparams.values()}),
            "steps": [p.steps_run for p in result.phases],
            "stops": result.stop_reasons,
            "final": float(result.loss_history[-1]) - big,
        }

    text = (
        "phase 200 lr 0.1 optimizer sgd < free **; stop when loss_change < 1e-6 over 10 after 20 >\n"  # loss_change
        "phase 200 lr 0.05 < free a; free b lr 0.02; init a = 0; stop when loss < 1e-4 >\n"  # adam, groups, loss rule
        "phase 50 optimizer lbfgs < free **; carry state >\n"  # needs the loss value
        "phase 30 lr $sched optimizer $opt < free ** >\n"  # an optax object, a schedule function
    )
    injected = optax.inject_hyperparams(optax.adam)(learning_rate=0.01)
    record("program", schedc.compile(text, model, sched=optax.cosine_decay_schedule(0.01, 30), opt=injected).run(loss, 0.0, quiet=True))
    # the loss sits at 1e7 + 2 (b stays at 0) and moves by less than 1: only a float64 history sees it move
    big = 1e7 + 2.0
    text = "phase 300 lr 0.02 optimizer sgd < free a; init a = 2.5; stop when loss_change < 1e-3 over 10 after 10 >"
    record("big", schedc.compile(text, model).run(loss, big - 2.0, quiet=True), big)
    s = build_schedule(model, loss, [(40, 0.05), (20, None, optax.lbfgs())], {"a": free_in(0, 1), "b": free_in(1)}, Δloss_criterion=1e-12)
    s.run_all(0.0)
    report["build_schedule"] = {"losses": [str(h.dtype) for h in s.loss_histories], "final": float(s.loss_history[-1])}
    # hyperparameters follow the parameters' dtype: under x64 `lr 0.1` is float64's 0.1, not float32's rounding
    text = "phase 1 lr 0.1 optimizer sgd < free a >\nphase 20 lr cosine(0.1 -> 0.001) optimizer sgd < free a >"
    res = schedc.compile(text, model).run(loss, 0.0, quiet=True)
    report["lr"] = {"a1": float(res.phases[0].model["a"]), "logged": [float(v) for v in res.phases[1].hyperparams["learning_rate"]]}
    # a float32 model under x64: float64 hyperparameters are cast to float32, never widening its updates or state
    model32 = {"a": jnp.zeros((), jnp.float32), "b": jnp.zeros(2, jnp.float32)}
    text = "phase 30 lr cosine(0.1 -> 0.001) < free **; stop when loss_change < 1e-9 over 5 after 5 >\nphase 10 lr 0.01 optimizer sgd(momentum = 0.9) < free **; carry state >"
    res = schedc.compile(text, model32).run(loss, 0.0, quiet=True)
    report["model32"] = {"dtypes": sorted({str(x.dtype) for x in jax.tree_util.tree_leaves(res.model)}), "losses": [str(p.losses.dtype) for p in res.phases]}
    print(json.dumps(report))
    '''
)


def run_script(x64: bool) -> dict:
    env = dict(os.environ, JAX_ENABLE_X64="1" if x64 else "0", JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module", params=[False, True], ids=["x32", "x64"])
def report(request):
    return request.param, run_script(request.param)


def test_every_phase_kind_runs_and_keeps_the_loss_dtype(report):
    x64, got = report
    dtype = "float64" if x64 else "float32"
    program = got["program"]
    assert program["losses"] == [dtype] * 4 and program["hypers"] == [dtype]
    assert program["stops"][:2] == ["loss_change", "loss"]  # both stop rules fired
    assert program["steps"][0] < 200 and program["steps"][1] < 200
    assert program["final"] < 1e-6
    assert got["build_schedule"]["losses"] == [dtype, dtype] and got["build_schedule"]["final"] < 1e-6


def test_a_float64_history_resolves_a_small_change_at_a_large_loss(report):
    x64, got = report
    big = got["big"]
    if x64:
        assert big["steps"][0] > 20 and big["final"] < 0.05  # it trained on
    else:
        assert big["steps"][0] == 11  # float32 cannot see the loss move: the rule fires at its first check


def test_hyperparameters_follow_the_parameters_dtype(report):
    x64, got = report
    lr = got["lr"]
    t = np.arange(20) / 20
    cosine = 0.001 + (0.1 - 0.001) * 0.5 * (1 + np.cos(np.pi * t))  # optax.cosine_decay_schedule's formula
    if x64:
        assert lr["a1"] == 0.1 * 6.0  # one sgd step on (a - 3)^2 from 0, with float64's 0.1
        np.testing.assert_allclose(lr["logged"], cosine, rtol=1e-14)
    else:
        assert lr["a1"] == float(np.float32(0.1) * np.float32(6.0))
        np.testing.assert_allclose(lr["logged"], cosine, rtol=1e-5)
        assert np.max(np.abs(np.asarray(lr["logged"]) / cosine - 1)) > 1e-12  # float32 rounds: the x64 check above can fail
    assert got["model32"] == {"dtypes": ["float32"], "losses": ["float32", "float32"]}
