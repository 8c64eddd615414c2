"""The compiler and runtime: numerics against hand computations, optax and spectracles; freezing,
ties, inits, optimizer state, stopping, non-finite losses, executable sharing, logged hyperparameters."""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import schedc
from schedc.compiler import chunk as compiler
from schedc.runtime.runner import RunError, CompileClock


class Pair(eqx.Module):
    a: jax.Array
    b: jax.Array


def pair(a=1.0, b=0.0):
    return Pair(jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32))


def quadratic(m, target_a=3.0, target_b=-1.0):
    return (m.a - target_a) ** 2 + (m.b - target_b) ** 2


def run(text, model, loss=quadratic, *args, **kwargs):
    return schedc.compile(text, model).run(loss, *args, quiet=True, **kwargs)


def sgd_by_hand(a, b, lr, steps, free_a=True, free_b=True):
    losses = []
    for _ in range(steps):
        losses.append((a - 3) ** 2 + (b + 1) ** 2)
        a, b = a - lr * 2 * (a - 3) * free_a, b - lr * 2 * (b + 1) * free_b
    return a, b, losses


def test_two_sgd_phases_with_an_init_match_a_hand_computation():
    res = run(
        """optimizer sgd
        phase 3 lr 0.1 < free a >
        phase first 2 lr 0.05 < free a, b; init b = 0.5 >""",
        pair(),
    )
    a, b, l0 = sgd_by_hand(1.0, 0.0, 0.1, 3, free_b=False)
    assert float(res.models[0].b) == 0.0  # fixed: untouched
    a, b, l1 = sgd_by_hand(a, 0.5, 0.05, 2)
    np.testing.assert_allclose(res.phase_losses[0], l0, rtol=1e-6)
    np.testing.assert_allclose(res.phase_losses[1], l1, rtol=1e-6)
    np.testing.assert_allclose([float(res.model.a), float(res.model.b)], [a, b], rtol=1e-6)
    assert res.phase_losses[0][0] == 5.0  # the loss before the first update is recorded
    assert len(res.loss_history) == 5 and res.stop_reasons == ["completed", "completed"]
    assert len(res.models) == 2 and res.phases[1].name == "first"


def test_momentum_is_reset_each_phase_unless_state_is_carried():
    text = """optimizer sgd(momentum=0.9)
    phase 2 lr 0.1 < free a >
    phase 1 lr 0.1 < free a; %s >"""
    fresh = run(text % "", pair())
    carried = run(text % "carry state", pair())
    a1 = float(fresh.models[0].a)
    # fresh state: the first update of phase 1 is lr * g alone
    np.testing.assert_allclose(float(fresh.model.a), a1 - 0.1 * 2 * (a1 - 3), rtol=1e-6)
    # carried: the momentum trace of phase 0 adds in
    g0, g1 = 2 * (1 - 3), None
    a_after_0 = 1.0 - 0.1 * g0
    trace = g0 * 0.9 + 2 * (a_after_0 - 3)
    g1 = 2 * (a1 - 3)
    np.testing.assert_allclose(float(carried.model.a), a1 - 0.1 * (0.9 * trace + g1), rtol=1e-5)


def test_frozen_parameters_are_bit_identical_under_adamw_weight_decay():
    model = pair(1.0, 2.5)
    res = run("phase 20 lr 0.1 optimizer adamw(weight_decay=0.5) < free a >", model)
    assert np.asarray(res.model.b).tobytes() == np.asarray(model.b).tobytes()
    assert float(res.model.a) != 1.0


class Tied(eqx.Module):
    left: jax.Array
    right: jax.Array
    other: jax.Array


def test_tied_parameters_get_one_summed_gradient_and_stay_tied():
    w = jnp.asarray(0.5)
    model = Tied(w, w, jnp.asarray(1.0))

    def loss(m):
        return (m.left - 2.0) ** 2 + 3.0 * (m.right - 1.0) ** 2 + m.other**2

    prog = schedc.compile("optimizer sgd\nphase 2 lr 0.01 < free left >", model)
    assert prog.tree.shared == {"right": "left"}
    res = prog.run(loss, quiet=True)
    value = 0.5
    for _ in range(2):
        value -= 0.01 * (2 * (value - 2.0) + 6.0 * (value - 1.0))
    np.testing.assert_allclose(float(res.model.left), value, rtol=1e-6)
    assert float(res.model.left) == float(res.model.right)
    assert float(res.model.other) == 1.0


def test_random_inits_depend_on_seed_phase_and_path_only():
    model = Pair(jnp.zeros(4), jnp.zeros(4))
    base = "seed 7\nphase 1 lr 0 < init a ~ normal(0, 1); init b ~ uniform(-1, 1) >"
    edited = "seed 7\nphase 1 lr 0 < init a ~ normal(5, 2); init b ~ uniform(-1, 1) >"

    def zero(m):
        return jnp.sum(m.a) * 0.0 + jnp.sum(m.b) * 0.0

    first, second = run(base, model, zero), run(edited, model, zero)
    assert np.array_equal(np.asarray(first.model.b), np.asarray(second.model.b))  # b's draw unchanged
    np.testing.assert_allclose(np.asarray(second.model.a), 5 + 2 * np.asarray(first.model.a), rtol=1e-5)
    other_seed = schedc.compile(base, model, key=jax.random.key(8)).run(zero, quiet=True)
    assert not np.array_equal(np.asarray(other_seed.model.b), np.asarray(first.model.b))
    assert np.all(np.abs(np.asarray(first.model.b)) <= 1)


def test_reset_restores_the_value_before_the_schedule():
    res = run("optimizer sgd\nphase 3 lr 0.1 < free a >\nphase 1 lr 0 < free a; init a = reset >", pair(1.0))
    assert float(res.models[0].a) != 1.0
    assert float(res.model.a) == 1.0


def test_non_finite_loss_names_phase_and_step_and_keeps_completed_phases():
    def loss(m):
        return jnp.where(m.a > 2.0, jnp.nan, (m.a - 3.0) ** 2)

    with pytest.raises(RunError) as info:
        run("optimizer sgd\nphase warm 2 lr 0.01 < free a >\nphase boom 50 lr 0.4 < free a >", pair(1.0), loss)
    err = info.value
    assert "phase 1 (boom)" in str(err) and "step 1" in str(err) and "last finite loss" in str(err)
    assert len(err.result.phases) == 2 and err.result.phases[0].stop_reason == "completed"
    assert err.model is err.result.phases[0].model
    assert err.step == 1


def test_loss_change_rule_stops_where_spectracles_would():
    # the loss settles fast: after step 100 (0-based, checked every 50) the trend is tiny
    res = run("optimizer sgd\nphase 1000 lr 0.1 < free a; stop when loss_change < 1e-3 >", pair(1.0))
    assert res.phases[0].steps_run == 101 and res.stop_reasons == ["loss_change"]
    res = run("optimizer sgd\nphase 1000 lr 0.1 < free a; stop when loss_change < 1e-3 over 20 after 40 >", pair(1.0))
    assert res.phases[0].steps_run == 41


def test_loss_threshold_rule_stops_after_the_first_step_below_it():
    res = run("optimizer sgd\nphase 100 lr 0.1 < free a, b; stop when loss < 0.5 >", pair())
    losses = res.phase_losses[0]
    first_below = int(np.argmax(losses < 0.5))
    assert res.phases[0].steps_run == first_below + 1 and losses[-2] >= 0.5
    assert res.stop_reasons == ["loss"]


def test_chunking_does_not_change_results():
    text = "phase 37 lr cosine(0.1 -> 0.01) < free a, b; stop when loss_change < 1e-9 over 5 after 10 >"
    one = schedc.compile(text, pair()).run(quadratic, quiet=True)
    chunked = schedc.compile(text, pair()).run(quadratic, quiet=True, chunk=4)
    assert np.array_equal(one.loss_history, chunked.loss_history)
    assert np.asarray(one.model.a).tobytes() == np.asarray(chunked.model.a).tobytes()


def test_logged_lr_is_the_applied_schedule_value():
    # loss = 2a: the gradient is 2, so each SGD update is exactly -2 * lr(step)
    def linear_loss(m):
        return 2.0 * m.a

    res = run("optimizer sgd\nphase 10 lr linear(1 -> 0) < free a >", pair(0.0), linear_loss)
    lr = res.hyperparams["learning_rate"]
    np.testing.assert_allclose(lr, optax.linear_schedule(1.0, 0.0, 10)(np.arange(10)), rtol=1e-6)
    np.testing.assert_allclose(float(res.model.a), -2.0 * lr.sum(), rtol=1e-6)


def test_scheduled_optimizer_hyperparameter_and_per_group_lr():
    res = run(
        """phase 20 lr 0.1 optimizer adam(b1 = linear(0.9 -> 0.5)) <
             free a; free b lr 0.01 optimizer sgd;
           >""",
        pair(),
    )
    hp = res.hyperparams
    np.testing.assert_allclose(hp["b1"], optax.linear_schedule(0.9, 0.5, 20)(np.arange(20)), rtol=1e-6)
    np.testing.assert_allclose(hp["learning_rate@b"], 0.01)
    # b moves by plain SGD steps of lr 0.01
    b = 0.0
    for _ in range(20):
        b -= 0.01 * 2 * (b + 1)
    np.testing.assert_allclose(float(res.model.b), b, rtol=1e-5)


def test_adam_phase_matches_optax_directly():
    model = pair(1.0, 0.0)
    res = run("phase 25 lr 0.05 < free a, b >", model)
    tx = optax.adam(0.05)
    params = {"a": model.a, "b": model.b}
    state = tx.init(params)
    for _ in range(25):
        grads = jax.grad(lambda p: quadratic(Pair(p["a"], p["b"])))(params)
        updates, state = tx.update(grads, state, params)
        params = optax.apply_updates(params, updates)
    np.testing.assert_allclose([float(res.model.a), float(res.model.b)], [float(params["a"]), float(params["b"])], rtol=1e-5)


def test_lbfgs_gets_the_value_and_value_fn_it_needs():
    res = run("phase 15 optimizer lbfgs < free a, b >", pair())
    assert res.phase_losses[0][-1] < 1e-6


def test_phases_differing_only_in_numbers_share_one_executable():
    model = Pair(jnp.ones(3), jnp.ones(3))

    def loss(m, x):
        return jnp.sum((m.a * x - 1.0) ** 2) + jnp.sum(m.b**2)

    x = jnp.arange(3.0)
    core = "phase 30 lr 0.05 < free a >\nphase 20 lr cosine(0.01 -> 0.001) < free b >"
    schedc.compile(core, model).run(loss, x, quiet=True)  # warm: compiles the core's executables
    before = compiler.cache_size()
    with CompileClock() as clock:
        alternating = """repeat 5 <
            phase 17 lr 0.2 < free a >
            phase 45 lr cosine(0.3 -> 0.0001) < free b >
        >"""
        res = schedc.compile(alternating, model).run(loss, x, quiet=True)
    assert len(res.phases) == 10
    assert compiler.cache_size() == before  # no new signature
    chunk_compiles = [p.compiles for p in res.phases]
    assert clock.count <= 2, chunk_compiles  # at most small eager helpers, never a new chunk program


def test_phases_of_one_kind_are_found_by_identity():
    # equal signatures are one object (interned), so a phase-by-phase run finds each phase's
    # program by identity; the entry found so is the one a lookup by value finds
    model = Pair(jnp.ones(3), jnp.ones(3))
    program = schedc.compile("repeat 2 <\n phase 3 lr 0.1 < free a >\n phase 4 lr 0.2 < free b >\n>", model)
    runner = program.runner(quadratic, quiet=True)
    runner.begin(model)
    first, again, other = (runner.prepare_phase(program.phases[i]) for i in (0, 2, 1))
    assert first.signature is again.signature and first.signature is not other.signature
    assert first.signature == compiler.prepare(program.phases[0], runner.leaves, runner.chunk).signature
    layout = compiler.split(model)[1]
    found = compiler.compiled(first.signature, quadratic, layout, runner.data_layout)
    assert compiler.compiled(again.signature, quadratic, layout, runner.data_layout) is found
    equal = compiler.PhaseSignature(**{f: getattr(first.signature, f) for f in first.signature.__dataclass_fields__})
    assert equal is not first.signature and compiler.compiled(equal, quadratic, layout, runner.data_layout) is found


def test_result_histories_and_summary():
    res = run("phase a 4 lr 0.1 < free a >\nphase 3 lr 0.1 < free b >", pair())
    assert [len(l) for l in res.phase_losses] == [4, 3]
    assert res.loss_history.shape == (7,)
    assert res.hyperparams["learning_rate"].shape == (7,)
    text = res.summary()
    assert "phase 0 (a)" in text and "4/4" in text and "completed" in text
    assert all(p.wall_time >= 0 and p.compile_time >= 0 for p in res.phases)
    assert math.isclose(res.wall_time, sum(p.wall_time for p in res.phases))


def test_a_fresh_optimizer_state_that_reads_no_value_is_made_once_per_kind_of_argument():
    # Adam's fresh state (zero moments, count 0) depends on no value: one call, kept; a state that
    # copies the parameters or reads a number is made at every call
    adam = jax.jit(lambda free, numbers: optax.adam(1e-3).init(free))
    first = compiler.fresh_opt_state(adam, {"w": jnp.ones(3)}, np.zeros(2))
    again = compiler.fresh_opt_state(adam, {"w": jnp.full(3, 5.0, jnp.float32)}, np.ones(2))
    assert again is first
    for kept, made in zip(jax.tree_util.tree_leaves(first), jax.tree_util.tree_leaves(adam({"w": jnp.ones(3)}, np.zeros(2)))):
        np.testing.assert_array_equal(kept, made)
    assert compiler.fresh_opt_state(adam, {"w": jnp.ones(4)}, np.zeros(2))[0].mu["w"].shape == (4,)  # another shape, another state

    big = compiler.KEPT_STATE_BYTES // 4 + 1  # float32 moments of this many values pass the limit
    assert compiler.fresh_opt_state(adam, {"w": jnp.ones(big)}, np.zeros(2)) is not compiler.fresh_opt_state(adam, {"w": jnp.ones(big)}, np.zeros(2))

    copies = jax.jit(lambda free, numbers: {"slow": free["w"] * 1.0})
    reads = jax.jit(lambda free, numbers: {"scale": numbers[0] * jnp.ones(3)})
    for init in (copies, reads):
        one = compiler.fresh_opt_state(init, {"w": jnp.ones(3)}, np.full(2, 2.0))
        other = compiler.fresh_opt_state(init, {"w": jnp.full(3, 5.0, jnp.float32)}, np.full(2, 7.0))
        assert not np.array_equal(one[next(iter(one))], other[next(iter(other))])


def test_run_options_and_seeds_out_of_range_are_refused_by_name():
    """`chunk=0` ran with the default chunk and `chunk=2.5` with 2; a negative `checkpoint_every`
    checkpointed nothing mid-phase; a seed past int64 was an OverflowError from numpy."""
    program = schedc.compile("phase 5 lr 0.1 < free a >", pair())
    for chunk in (0, -2, 2.5, True):
        with pytest.raises(ValueError, match=rf"chunk must be a whole number >= 1, got {chunk!r}"):
            program.run(quadratic, chunk=chunk)
    with pytest.raises(ValueError, match="checkpoint_every must be a whole number >= 0, got -1"):
        program.run(quadratic, checkpoint="unused", checkpoint_every=-1)
    for seed in (2**63, -(2**63) - 1):
        with pytest.raises(ValueError, match=rf"an int seed is a signed 64-bit integer \(-{2**63} to {2**63 - 1}\), got {seed}"):
            schedc.compile("phase 5 lr 0.1 < free a >", pair(), key=seed)
    # a checkpoint that is no path was pathlib's TypeError, a state that is no pytree of arrays JAX's
    # "cannot interpret as an abstract array" from inside the first compiled call
    with pytest.raises(TypeError, match=r"^checkpoint must be a folder \(a str or a path\), got int$"):
        program.run(quadratic, checkpoint=123)
    for state, held in (("x", ""), ({"count": "zero"}, " holding a str")):
        with pytest.raises(TypeError, match=rf"^state must be an eqx.nn.State \(as eqx.nn.make_with_state returns it\) or a pytree of arrays, got {type(state).__name__}{held}$"):
            program.run(lambda m, s: (quadratic(m), s), state=state)
    largest = "seed 9223372036854775807\nphase 5 lr 0.1 < free a; init b ~ normal(0, 1) >"  # 2**63 - 1
    edge = schedc.compile(largest, pair())
    assert np.isfinite(edge.run(quadratic, quiet=True).loss_history).all()


def test_results_and_programs_show_one_line_and_print_their_table():
    """`repr` printed every field: the models' arrays and each phase's whole loss history (2.6 kB for
    a two-array model, far more for a network), which a notebook cell shows for a bare `result`."""
    program = schedc.compile("optimizer sgd\nphase warm 3 lr 0.1 < free a >\nphase 2 lr $rate < free a, b; stop when loss < 100 >", pair(), rate=0.05)
    assert repr(program) == f"Program({__file__!r}, phases=2, steps=5, parameters=2, model=Pair)"  # (its text is a literal of this file)
    result = program.run(quadratic, quiet=True)
    assert repr(result) == f"Result(phases=2, steps_run=4, final_loss={result.loss_history[-1]:.6g}, stop_reasons=['completed', 'loss'])"
    assert repr(result.phases[0]) == f"PhaseResult('phase 0 (warm)', steps_run=3/3, final_loss={result.phases[0].final_loss:.6g}, stop_reason='completed')"
    assert str(result) == result.summary() and str(result).splitlines()[0].split()[:3] == ["phase", "steps", "final"]

    batched = program.run_batched(lambda m, t: quadratic(m, t), jnp.asarray([3.0, 30.0]), quiet=True)
    assert repr(batched) == "BatchedResult(datasets=2, phases=2, steps_run=5)"  # (the longest-running dataset's)
    assert repr(batched.phases[1]) == "BatchedPhaseResult('phase 1', datasets=2, steps_run=1..2/2, stop_reasons={'loss': 1, 'completed': 1})"
    table = str(batched).splitlines()
    assert table[0].split() == ["phase", "steps", "final", "loss", "(min..max)", "stop"] and table[3].split()[-4:] == ["loss", "1,", "completed", "1"]

    swept = program.sweep(rate=[0.05, 0.2]).run(quadratic, quiet=True)
    assert repr(swept) == f"SweepResult(settings=2, phases=2, best={swept.best()}, best_setting={swept.settings[swept.best()]})"
    assert str(swept) == swept.summary()


def test_a_run_not_watched_in_a_terminal_prints_a_line_per_phase_as_it_ends(capsys):
    """Without a terminal (a job's log, a redirected script) a run said nothing until it returned."""
    program = schedc.compile("optimizer sgd\nphase warm 3 lr 0.1 < free a >\nphase 2 lr 0.05 < free a, b; stop when loss < 100 >", pair())
    result = program.run(quadratic)  # (pytest's stderr is no terminal)
    lines = capsys.readouterr().err.splitlines()
    first = result.phases[0]
    assert lines == [p.line() for p in result.phases] and lines[0] == f"phase 0 (warm): 3/3 steps, loss {first.final_loss:.6g}, completed, {first.wall_time:.2f} s"
    assert lines[1].startswith("phase 1: 1/2 steps, loss ") and ", loss, " in lines[1]
    again = program.run(quadratic)  # the same run again is replayed (one fused call), and says the same
    assert capsys.readouterr().err.splitlines() == [p.line() for p in again.phases] and len(again.phases) == 2
    program.run(quadratic, quiet=True)
    assert capsys.readouterr().err == ""
    batched = program.run_batched(lambda m, t: quadratic(m, t), jnp.asarray([3.0, 30.0]))
    lines = capsys.readouterr().err.splitlines()
    assert lines == [p.line() for p in batched.phases] and lines[1].startswith("phase 1: 1..2/2 steps, loss ") and ", loss 1, completed 1, " in lines[1]
