"""Fused segments for many fits at once: a batched fit's datasets and a sweep's settings run their
segments as the single-fit segment program vmapped over the items, and give, bit for bit on CPU,
what the phase-by-phase batched runner (`fuse=False`) gives: steps run, stop reasons, losses,
hyperparameter logs with plateau scales, every phase's model and EMA model, for every stop rule,
init kind and `carry state`, per-item non-finite losses, minibatches, and calls that stop inside
phases. The phase loop stays unbatched: the branch `switch` is not turned into a select of every
branch, and a segment compiles one program whatever the number of items."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import schedc
from schedc.compiler import chunk, segment
from schedc.runtime import fused
from schedc.runtime.runner import CompileClock

B = 4
TEXT = """seed 3
phase 12 lr 0.1 < free a; init b ~ normal(0, 1) >
repeat 2 <
  phase 7 lr cosine(0.05 -> 0.001) optimizer sgd(momentum = 0.9) < free a, b; carry state >
  phase 9 lr 0.02 < free b; init a ~ uniform(-1, 1); init b = 0.5; stop when loss < $target >
>
phase 10 lr 0.1 * plateau(patience=2) optimizer adam(b1 = linear(0.9 -> 0.5)) < free a; free b lr 0.01 optimizer sgd >
phase 40 lr 0.02 < free **; init a = reset; carry state; stop when loss_change < $change over 4 after 6 >
phase 8 lr 0.01 < free ** >
"""
X = jax.random.normal(jax.random.key(0), (B, 8, 3))
Y = jax.random.normal(jax.random.key(1), (B, 8)) * jnp.arange(1, B + 1)[:, None]


def model():
    return {"a": jnp.zeros(3), "b": jnp.ones(2)}


def loss(m, x, y):
    pred = x @ m["a"] + jnp.sum(jnp.sin(1.3 * m["b"]))
    return jnp.mean((pred - y) ** 2), {"bias": jnp.mean(pred - y)}


def program(**numbers):
    values = dict(target=0.0, change=1e-3)
    values.update(numbers)
    return schedc.compile(TEXT, model(), **values)


def bits(x) -> tuple:
    """An array's shape, NaN positions and the bytes of everything else (a NaN marks a step not run
    or a non-finite value: its sign and payload are not compared)."""
    x = np.asarray(x)
    nan = np.isnan(x) if np.issubdtype(x.dtype, np.inexact) else np.zeros(x.shape, bool)
    return x.shape, nan.tobytes(), np.where(nan, 0, x).astype(x.dtype).tobytes()


def leaves_bits(tree) -> list:
    return [bits(x) for x in jax.tree_util.tree_leaves(tree)]


def assert_same(one, other):
    """Two batched results, bit for bit."""
    assert len(one.phases) == len(other.phases)
    for a, b in zip(one.phases, other.phases):
        assert a.steps_run.tolist() == b.steps_run.tolist(), a.display
        assert a.stop_reasons == b.stop_reasons, a.display
        assert a.losses.dtype == b.losses.dtype and bits(a.losses) == bits(b.losses), a.display
        assert list(a.hyperparams) == list(b.hyperparams)
        for name in a.hyperparams:
            assert bits(a.hyperparams[name]) == bits(b.hyperparams[name]), (a.display, name)
        assert leaves_bits(a.model) == leaves_bits(b.model), a.display
        assert leaves_bits(a.ema_model) == leaves_bits(b.ema_model), a.display
        assert a.aux_steps.tolist() == b.aux_steps.tolist() and list(a.aux) == list(b.aux), a.display
        for name in a.aux:
            assert bits(a.aux[name]) == bits(b.aux[name]), (a.display, name)


def fused_calls(monkeypatch) -> list:
    calls = []
    original = fused._collect
    monkeypatch.setattr(fused, "_collect", lambda *a: (calls.append(1), original(*a))[1])
    return calls


@pytest.fixture(scope="module")
def batched():
    prog = program(target=3.0, change=0.03)
    before = chunk.cache_size(), segment.cache_size()
    with CompileClock() as clock:
        together = prog.run_batched(loss, X, Y)
    grown = (chunk.cache_size() - before[0], segment.cache_size() - before[1], clock.count)
    return prog, together, prog.run_batched(loss, X, Y, fuse=False), grown


def test_a_batched_fit_fused_is_the_phase_by_phase_one(batched, monkeypatch):
    _, together, apart, _ = batched
    assert_same(apart, together)
    # per-dataset stop rules did act differently, and some dataset stopped inside each ruled phase
    assert len(set(together.phases[-2].steps_run.tolist())) > 1
    assert "loss" in together.stop_reasons[2]


def test_a_batched_segment_is_one_program_and_one_call(batched, monkeypatch):
    prog, together, _, grown = batched
    assert grown[:2] == (0, 1)  # no per-phase chunk program: one segment program for every dataset
    calls = fused_calls(monkeypatch)
    with CompileClock() as clock:
        again = prog.run_batched(loss, X, Y)
    assert clock.count == 0 and len(calls) == 1
    assert_same(together, again)


def test_calls_that_stop_inside_phases_change_nothing(batched):
    """A chunk of 4 steps: calls end inside phases, resume datasets that a stop rule already
    stopped in an earlier call of the phase, and straddle phase ends."""
    prog, together, _, _ = batched
    small = prog.run_batched(loss, X, Y, chunk=4)
    assert_same(prog.run_batched(loss, X, Y, chunk=4, fuse=False), small)
    for a, b in zip(small.phases, together.phases):
        assert a.steps_run.tolist() == b.steps_run.tolist() and a.stop_reasons == b.stop_reasons


def test_a_non_finite_loss_stops_only_its_dataset(batched):
    prog = batched[0]
    bad = Y.at[2, 0].set(jnp.nan)
    together = prog.run_batched(loss, X, bad)
    assert_same(prog.run_batched(loss, X, bad, fuse=False), together)
    assert together.stop_reasons[0][2] == "non-finite loss" and together.phases[0].steps_run[2] == 1
    assert all(reasons[2] == "non-finite loss" and p.steps_run[2] == 0 for reasons, p in zip(together.stop_reasons[1:], together.phases[1:]))
    assert all(r == "completed" for i, r in enumerate(together.stop_reasons[0]) if i != 2)
    assert np.isfinite(np.asarray(together.model["a"])[[0, 1, 3]]).all()


def test_a_non_finite_loss_inside_a_ruled_phase(batched):
    """The item meets it in a phase with a stop rule (the device stops it at that step), after
    completing the phases before."""
    prog = batched[0]

    def late(m, x, y):
        value, aux = loss(m, x, y)
        return jnp.where((jnp.abs(m["b"][0] - 0.5) < 1e-6) & (y[0] == 0), jnp.nan, value), aux  # dataset 1, in `init b = 0.5` phases

    bad = Y.at[1, 0].set(0.0)
    together = prog.run_batched(late, X, bad)
    assert_same(prog.run_batched(late, X, bad, fuse=False), together)
    assert together.stop_reasons[1][1] == "completed" and together.stop_reasons[2][1] == "non-finite loss"
    assert together.phases[2].steps_run[1] == 1 and together.phases[3].steps_run[1] == 0
    assert "loss" in together.stop_reasons[2]  # the others' stop rule acted in the same phase


def test_minibatches_per_dataset():
    text = "seed 1\nphase 9 batch 3 lr 0.05 < free a >\nphase 1 epoch batch 2 lr 0.02 < free ** >"
    prog = schedc.compile(text, model())
    assert_same(prog.run_batched(loss, X, Y, fuse=False), prog.run_batched(loss, X, Y))


SWEEP = """let base = 0.05
ema 0.9
phase 12 lr base optimizer adamw(weight_decay=$wd) < free a; init a ~ normal(0, 0.5); init b = [$b0, 0.2] >
phase 20 lr cosine(base -> base / 10) * plateau(patience=3) < free **; stop when loss < $target >
phase 30 lr base / 2 optimizer chain(clip_by_global_norm($clip), adam) < free b; carry state; stop when loss_change < 1e-4 over 3 after 5 >
"""
GRID = dict(base=[0.01, 0.05, 0.1, 0.3], wd=[0.0, 1e-3, 1e-2, 0.1], b0=[0.5, 0.1, -0.3, 0.5], target=[0.0, 0.0, 1.3, 0.0], clip=[1.0, 0.1, 1.0, 0.5])


@pytest.fixture(scope="module")
def swept():
    sweep = schedc.compile(SWEEP, model(), wd=0.0, b0=0.5, target=0.0, clip=1.0).sweep(**GRID)
    before = chunk.cache_size(), segment.cache_size()
    together = sweep.run(loss, X[0], Y[0])
    grown = (chunk.cache_size() - before[0], segment.cache_size() - before[1])
    return sweep, together, sweep.run(loss, X[0], Y[0], fuse=False), grown


def test_a_sweep_fused_is_the_phase_by_phase_one(swept):
    sweep, together, apart, grown = swept
    assert grown == (0, 1)
    assert_same(apart, together)
    assert together.stop_reasons[1][2] == "loss" and len(set(together.phases[2].steps_run.tolist())) > 1
    assert together.ema_model is not None
    # a swept init value is each setting's own
    np.testing.assert_array_equal(together.models[0]["b"][:, 0], np.float32(GRID["b0"]))


def test_a_random_init_of_swept_numbers_agrees_to_rounding():
    """`init a ~ normal(0, $spread)`: each setting's draw is `0 + spread * z` of the one `z` a single
    fit draws. Inside the vmapped segment program XLA fuses that multiply-add with what uses it
    differently than the phase-by-phase runner's separate init program does, so the two agree to
    float32 rounding, not bit for bit (measured: about 3e-7 relative)."""
    text = "let base = 0.05\nphase 12 lr base < free a; init a ~ normal(0, $spread) >\nphase 6 lr 0.01 < free b >"
    sweep = schedc.compile(text, model(), spread=0.1).sweep(base=[0.01, 0.05, 0.1, 0.3], spread=[0.1, 0.1, 0.5, 1.0])
    together, apart = sweep.run(loss, X[0], Y[0]), sweep.run(loss, X[0], Y[0], fuse=False)
    assert len({np.asarray(together.models[0]["a"][i]).tobytes() for i in range(B)}) == B  # each setting's spread
    for a, b in zip(together.phases, apart.phases):
        assert a.steps_run.tolist() == b.steps_run.tolist() and a.stop_reasons == b.stop_reasons
        np.testing.assert_allclose(a.losses, b.losses, rtol=1e-6)
        np.testing.assert_allclose(a.model["a"], b.model["a"], rtol=1e-6, atol=1e-7)


def test_a_sweep_in_small_calls_changes_nothing(swept):
    sweep, together, _, _ = swept
    small = sweep.run(loss, X[0], Y[0], chunk=4)
    assert_same(sweep.run(loss, X[0], Y[0], chunk=4, fuse=False), small)
    for a, b in zip(small.phases, together.phases):
        assert a.steps_run.tolist() == b.steps_run.tolist() and a.stop_reasons == b.stop_reasons
        assert bits(a.losses) == bits(b.losses)


def test_a_sweep_of_one_setting():
    sweep = schedc.compile(SWEEP, model(), wd=0.0, b0=0.5, target=0.0, clip=1.0).sweep(base=[0.2], clip=[0.3])
    assert_same(sweep.run(loss, X[0], Y[0], fuse=False), sweep.run(loss, X[0], Y[0]))


def test_the_phase_loop_and_branch_dispatch_stay_unbatched_under_vmap(swept):
    """The row index is unbatched: under vmap the phase loop's condition and the branch dispatch
    (one run-at-most-once loop, or a `cond`, per phase kind) stay scalar control flow, where a
    per-item row would make vmap run every branch for every item and select. The step loops of
    phases with stop rules run while some item goes on (a per-item condition would make vmap
    select the whole carry, the call's loss buffer included, at every step). The row and step
    come back unbatched."""
    sweep, _, _, _ = swept
    program = next(p for p in segment._CACHE.values() if p.items is not None and p.items.size == B and len(p.signature.branches) == 3)
    found = []  # (depth in loops, what: "while" or "cond", shape of its predicate or index)

    def walk(jaxpr, depth):
        for eqn in jaxpr.eqns:
            if eqn.primitive.name == "while":
                found.append((depth, "while", eqn.params["cond_jaxpr"].out_avals[0].shape))
            elif eqn.primitive.name == "cond":
                found.append((depth, "cond", eqn.invars[0].aval.shape))
            inner = depth + (eqn.primitive.name == "while")
            for value in eqn.params.values():
                for sub in value if isinstance(value, (tuple, list)) else [value]:
                    sub = getattr(sub, "jaxpr", sub)
                    if hasattr(sub, "eqns"):
                        walk(sub, inner)

    state, table, arrays, data = _inputs(program)
    walk(program.call.jaxpr(state, table, jax.random.key(0), arrays, data, np.int32(8), ()).jaxpr, 0)
    assert [(what, shape) for depth, what, shape in found if depth == 0] == [("while", ())]  # the phase loop
    dispatch = [shape for depth, what, shape in found if depth == 1]
    assert len(dispatch) >= 3 and all(shape == () for shape in dispatch)
    step_loops = [shape for depth, what, shape in found if what == "while" and depth >= 2]
    assert len(step_loops) >= 3 and all(shape == () for shape in step_loops)  # stop rules' loops included
    out_state, _ = program.call(state, table, jax.random.key(0), arrays, data, np.int32(8), ())
    assert np.shape(out_state["at"]) == (2,)  # (the row and step: shared, no items axis)


def _inputs(program):
    """A call's inputs for `program` (a fused sweep's): the settings' model and a table of their rows."""
    leaves = [jnp.broadcast_to(x, (B,) + x.shape) for x in jax.tree_util.tree_leaves(model())]
    W = program.signature.window
    table = {
        "count": np.int32(3),
        "branch": np.arange(W, dtype=np.int32) % 3,
        "steps": np.full(W, 5, np.int32),
        "index": np.arange(W, dtype=np.int32),
        "numbers": np.zeros((B, W, program.signature.numbers)),
        "stop": np.zeros((B, W, 3)),
        "init": np.ones((B, W, program.signature.init_numbers)),
    }
    return program.initial_state(leaves, stopped=np.zeros(B, bool)), table, program.reset_arrays(leaves), (X[0], Y[0])


def test_a_repeat_sweep_compiles_its_body_once(monkeypatch):
    """`repeat 20` of two phases over three settings: one segment program and one call, as the
    body alone would take; phase by phase, a chunk program per phase signature and 40 calls."""
    # (sgd with momentum: signatures no other test of this module compiles)
    text = "let base = 0.05\noptimizer sgd(momentum=0.5)\nrepeat 20 <\n  phase 3 lr base < free a >\n  phase 2 lr base / 2 < free b >\n>"
    sweep = schedc.compile(text, model()).sweep(base=[0.01, 0.1, 0.2])
    before = chunk.cache_size(), segment.cache_size()
    calls = fused_calls(monkeypatch)
    result = sweep.run(loss, X[0], Y[0])
    assert len(result.phases) == 40 and len(calls) == 1
    assert (chunk.cache_size() - before[0], segment.cache_size() - before[1]) == (0, 1)
    apart = sweep.run(loss, X[0], Y[0], fuse=False)
    assert chunk.cache_size() - before[0] == 2
    assert_same(apart, result)
