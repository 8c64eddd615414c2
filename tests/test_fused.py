"""Fused segments: consecutive phases run as one compiled program give, bit for bit on CPU, what
running them one by one gives (losses, stop reasons, hyperparameter logs with plateau scales, aux
metrics, every phase's model and model state), for every stop rule, init kind and `carry state`,
with minibatches drawn on the device; a `repeat` compiles its body's program once and runs in one
call; a non-finite loss inside a segment names its phase and step and keeps the phases before;
evaluated phases (`eval`, every rule on metrics) fuse with the same evaluations, stops and kept
weights."""

from __future__ import annotations

import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import schedc
from schedc.compiler import chunk as C
from schedc.compiler import segment
from schedc.runtime import fused
from schedc.runtime.runner import CompileClock, RunError

TEXT = """seed 4
phase 12 lr 0.1 < free a; init b ~ normal(0, 1) >
repeat 2 <
  phase 7 lr cosine(0.05 -> 0.001) optimizer sgd(momentum = 0.9) < free a, b; carry state >
  phase 9 lr 0.02 < free b; init a ~ uniform(-1, 1); init b = 0.5; stop when loss < 4.0 >
>
phase 6 lr 0.05 < free a, b; init a = [0.1, 0.2, 0.3]; carry state >
phase 10 lr 0.1 optimizer adam(b1 = linear(0.9 -> 0.5)) < free a; free b lr 0.01 optimizer sgd >
phase 60 lr 0.02 < free **; init a = reset; stop when loss_change < 0.05 over 5 after 10 >
"""


def model():
    return {"a": jnp.zeros(3), "b": jnp.ones(2)}


def loss(m):
    return jnp.sum((m["a"] - 1.0) ** 2) + jnp.sum(jnp.sin(1.3 * m["b"]) ** 2)


def leaves_bytes(tree) -> list[bytes]:
    return [np.asarray(x).tobytes() for x in jax.tree_util.tree_leaves(tree)]


def assert_same_run(one, other):
    assert other.stop_reasons == one.stop_reasons
    assert [p.steps_run for p in other.phases] == [p.steps_run for p in one.phases]
    for a, b in zip(one.phases, other.phases):
        assert a.losses.dtype == b.losses.dtype and a.losses.tobytes() == b.losses.tobytes(), a.display
        assert list(a.hyperparams) == list(b.hyperparams)
        for name in a.hyperparams:
            assert a.hyperparams[name].tobytes() == b.hyperparams[name].tobytes(), (a.display, name)
        assert leaves_bytes(a.model) == leaves_bytes(b.model), a.display
        assert a.aux_steps.tolist() == b.aux_steps.tolist() and list(a.aux) == list(b.aux), a.display
        for name in a.aux:
            assert a.aux[name].tobytes() == b.aux[name].tobytes(), (a.display, name)
        assert leaves_bytes(a.state) == leaves_bytes(b.state), a.display
        assert (a.eval_steps.tolist(), list(a.metrics), a.best_step) == (b.eval_steps.tolist(), list(b.metrics), b.best_step), a.display
        for name in a.metrics:
            assert a.metrics[name].tobytes() == b.metrics[name].tobytes(), (a.display, name)


def fused_calls(monkeypatch) -> list:
    """A list that grows by one at each call of a fused program from now on."""
    calls = []
    original = fused._collect
    monkeypatch.setattr(fused, "_collect", lambda *a: (calls.append(1), original(*a))[1])
    return calls


def foreseen_checks(monkeypatch) -> list:
    """A list that grows by each foreseen call's check from now on (`fused._Foreseen.held`):
    whether its losses were all finite. Each check also asserts that the call's `counts` (its
    steps run and reasons per row, the row and step it ended at), which `held` does not read,
    are the plan's."""
    checks = []
    original = fused._Foreseen.held

    def held(self):
        checks.append(finite := original(self))
        assert np.array_equal(np.asarray(self.made[1]["counts"]), self.counts)
        return finite

    monkeypatch.setattr(fused._Foreseen, "held", held)
    return checks


def fused_in_one_call(program, loss_fn, monkeypatch):
    """The run fused, asserted to take one call and to give what a phase-by-phase run gives."""
    calls = fused_calls(monkeypatch)
    together = program.run(loss_fn, quiet=True)
    assert len(calls) == 1
    apart = program.run(loss_fn, quiet=True, fuse=False)
    assert_same_run(apart, together)
    return together, apart


@pytest.fixture(scope="module")
def program():
    return schedc.compile(TEXT, model())


@pytest.fixture(scope="module", params=[None, 8], ids=["one-call", "chunk-8"])
def runs(request, program):
    """The schedule run phase by phase and fused (with chunk 8, phases span several calls)."""
    return program.run(loss, quiet=True, chunk=request.param, fuse=False), program.run(loss, quiet=True, chunk=request.param)


def test_the_schedule_exercises_every_stop_rule_and_init(runs):
    one, _ = runs
    assert set(one.stop_reasons) == {"completed", "loss", "loss_change"}
    assert one.phases[-1].steps_run < 60


def test_fused_results_are_bit_identical_to_phase_by_phase(runs):
    assert_same_run(*runs)


GRID = jnp.linspace(-1.0, 1.0, 50)


def a_line_of_fixed_width(m):
    """A Gaussian line whose width is a scalar leaf (fixed in every phase but the last): spectracles'
    pattern, and the multi-line example's."""
    return jnp.mean((m["b"][0] * jnp.exp(-0.5 * ((GRID - 0.2) / m["w"]) ** 2) - 0.3) ** 2) + jnp.sum((m["a"] - 0.5) ** 2)


def divided_by_a_scalar_leaf(m):
    return jnp.mean((GRID / m["w"] - m["a"][0]) ** 2) + 0.1 * jnp.sum(m["b"] ** 2)


@pytest.mark.parametrize("loss_fn", [a_line_of_fixed_width, divided_by_a_scalar_leaf])
def test_a_loss_dividing_by_a_scalar_leaf_fuses_bit_identically(loss_fn):
    """XLA:CPU rewrites `x / w` as `x * (1 / w)` only where nothing else reads `w`: a chunk reads a
    fixed leaf from its arguments, a segment from the state it carries, so without the barrier
    at the top of `chunk.run_steps` the two compiled the loss differently (last-bit differences
    in one to three of the eight phases here)."""
    program = schedc.compile(TEXT, dict(model(), w=jnp.asarray(0.7)))
    assert_same_run(program.run(loss_fn, quiet=True, fuse=False), program.run(loss_fn, quiet=True))


def test_the_multi_line_example_fuses_bit_identically():
    """The shipped example that showed the divide rewrite: two lines sharing a width, fixed at first."""
    from pathlib import Path

    from schedc.plan.binding import load_entry

    examples = Path(__file__).resolve().parent.parent / "examples"
    program = schedc.compile(examples / "multi_line.sched")
    loss_fn, data = load_entry("multi_line.py:loss", examples), load_entry("multi_line.py:make_data", examples)()
    assert_same_run(program.run(loss_fn, *data, quiet=True, fuse=False), program.run(loss_fn, *data, quiet=True))


# TEXT without its stop rules: no phase can stop early, so the plan foresees what the one call does
FORESEEN_TEXT = TEXT.replace("; stop when loss < 4.0", "").replace("; stop when loss_change < 0.05 over 5 after 10", "")


def test_a_segment_that_cannot_stop_early_has_its_results_built_while_its_call_runs(monkeypatch):
    """The plan foresees the segment's one call: its results are built before the call ends and
    then checked (`fused._Foreseen`), and they are a phase-by-phase run's, bit for bit, in a first
    run and in its replay, with writable losses of their own and wall times measured to the end."""
    program = schedc.compile(FORESEEN_TEXT, model())
    apart = program.run(loss, quiet=True, fuse=False)
    checks = foreseen_checks(monkeypatch)
    started = time.perf_counter()
    first, replayed = program.run(loss, quiet=True), program.run(loss, quiet=True)
    elapsed = time.perf_counter() - started
    assert checks == [True, True] and len(program._replays) == 1
    for together in (first, replayed):
        assert_same_run(apart, together)
        assert all(p.losses.flags.writeable and p.wall_time > 0 for p in together.phases)
    assert first.wall_time + replayed.wall_time <= elapsed
    assert not np.shares_memory(first.phases[0].losses, replayed.phases[0].losses)


def test_a_segment_s_wall_time_is_shared_by_steps_its_build_on_the_first_phase():
    assert fused._wall_shares(10.0, 4.0, [10, 90, 0]) == pytest.approx([4.6, 5.4, 0.0])
    assert fused._wall_shares(1.0, 3.0, [1, 1]) == pytest.approx([1.0, 0.0])  # (a build is never more than the wall)
    assert fused._wall_shares(1.0, 0.0, [1, 3]) == pytest.approx([0.25, 0.75]) and fused._wall_shares(1.0, 0.5, []) == []


def _building_loss(m):  # (this test's own: its program is built by its first run, whatever ran before)
    return jnp.sum(jnp.cos(m["w"])) + jnp.sum(m["v"] ** 2)


def test_building_a_segment_s_program_is_its_first_phase_s_wall_time(monkeypatch):
    """A first fused run traces, lowers and compiles its program (seconds on a CPU) and then runs
    it (milliseconds): its first call's time is the first phase's, as a phase-by-phase run counts a
    phase's compile, and only the rest is shared by steps run; a later run builds nothing. (Shared
    whole, each later phase showed most of the compile.)"""
    built = []
    shares = fused._wall_shares
    monkeypatch.setattr(fused, "_wall_shares", lambda wall, seconds, steps: built.append(seconds) or shares(wall, seconds, steps))
    program = schedc.compile("phase 10 lr 0.1 < free w >\nphase 90 lr 0.05 < free w, v >\n", {"w": jnp.zeros((3, 5)), "v": jnp.ones(11)})
    started = time.perf_counter()
    result = program.run(_building_loss, quiet=True)
    elapsed = time.perf_counter() - started
    program.run(_building_loss, quiet=True)
    assert len(built) == 2 and built[0] > 0 and built[1] == 0
    first, later = result.phases
    assert first.wall_time >= built[0] and first.wall_time + later.wall_time <= elapsed
    assert later.wall_time == pytest.approx((first.wall_time - built[0]) * 9, rel=1e-9)


def test_a_fused_call_keeps_only_the_losses_of_the_steps_it_ran(runs):
    """A phase's losses are a writable view of its call's host copy, which holds the steps the
    call ran, not the whole `chunk`-long buffer (runs of many short segments keep little)."""
    _, together = runs
    for phase in together.phases:
        held = phase.losses if phase.losses.base is None else phase.losses.base
        assert phase.losses.flags.writeable and held.size <= sum(p.steps_run for p in together.phases)


def test_the_schedule_ran_fused(program, monkeypatch):
    calls = fused_calls(monkeypatch)
    program.run(loss, quiet=True)
    assert len(calls) == 1  # every phase in one call of one program


def test_a_repeat_compiles_its_body_once_and_runs_in_one_call(monkeypatch):
    shaped = {"a": jnp.zeros(5), "b": jnp.ones(4)}  # shapes no other test compiles
    body = "phase 20 lr 0.01 < free a >\nphase 20 lr 0.01 < free b >"
    schedc.compile(body, shaped).run(loss, quiet=True)
    programs = segment.cache_size()
    calls = fused_calls(monkeypatch)
    with CompileClock() as clock:
        repeated = "repeat 50 <\n" + body + "\n>"
        result = schedc.compile(repeated, shaped).run(loss, quiet=True)
    assert len(result.phases) == 100 and len(calls) == 1
    assert segment.cache_size() == programs and clock.count == 0


def test_a_segment_run_again_under_x64_builds_its_program_for_that_width():
    """The segment program is cached per float width too: run again under `jax.enable_x64`, the
    program built without it (its fresh slots float32) was reused and failed to trace."""
    shaped = {"a": jnp.zeros(7), "b": jnp.ones(2)}  # shapes no other test compiles
    program = schedc.compile("phase 12 lr 0.1 < free a >\nphase 8 lr 0.05 < free b; stop when loss < 0.01 >", shaped)
    program.run(loss, quiet=True)
    with jax.enable_x64(True):
        assert_same_run(program.run(loss, quiet=True, fuse=False), program.run(loss, quiet=True))


def constant_loss(m):  # float32's nearest to 0.7, below 0.7: `loss < 0.7` holds in float64 only
    return jnp.sum(m["a"] * 0) + jnp.float32(0.7)


def test_a_threshold_on_the_device_follows_x64_switched_on_between_runs():
    """The segment's table (`fused._PLANS`) and a phase's numbers on the device (`runner._on_device`)
    are kept per float width: made without `jax.enable_x64`, their float32 threshold was reused
    under it, and a float32 loss of float32(0.7) was not found below 0.7."""
    program = schedc.compile("phase 5 lr 0.1 < free a >\nphase 5 lr 0.1 < free a; stop when loss < 0.7 >", model())
    for fuse in (True, False):
        assert program.run(constant_loss, quiet=True, fuse=fuse).stop_reasons == ["completed", "completed"]
    with jax.enable_x64(True):
        for fuse in (True, False):
            assert program.run(constant_loss, quiet=True, fuse=fuse).stop_reasons == ["completed", "loss"]


def test_a_loss_change_window_follows_x64_switched_on_between_runs():
    """A phase's fresh stop state is kept per float width: made without `jax.enable_x64`, its
    float32 `loss_change` window rounded a float64 loss (1 - 3e-9 to 1.0), and the change of 1e-9
    per step read as 4e-9 never went below 2e-9."""
    text = "optimizer sgd\nphase 20 lr 1e-9 < free a; stop when loss_change < 2e-9 over 2 after 4 >"
    schedc.compile(text, {"a": jnp.ones(1)}).run(lambda m: jnp.sum(m["a"]), quiet=True)
    with jax.enable_x64(True):
        program = schedc.compile(text, {"a": jnp.ones(1, jnp.float64)})
        for fuse in (True, False):
            (phase,) = program.run(lambda m: jnp.sum(m["a"]), quiet=True, fuse=fuse).phases
            assert (phase.stop_reason, phase.steps_run) == ("loss_change", 5)


def test_a_segment_whose_program_fails_runs_one_by_one_with_a_warning(monkeypatch):
    """A fault of the fused program (here, its branch switch raising as it is traced) is not the
    loss's: the phases run one by one, with the results of `fuse=False`, and a FusionWarning names
    them and the failure (once: the run does not build fused programs again)."""
    program = schedc.compile(TEXT, {"a": jnp.zeros(3), "b": jnp.ones(5)})  # shapes no other test compiles

    def broken(*args):
        raise RuntimeError("a fault of the segment's")

    monkeypatch.setattr(segment, "_one_of", broken)
    with pytest.warns(fused.FusionWarning, match=r"^phase 0 \.\. phase 7 ran one by one: .*\(RuntimeError: a fault of the segment's\)") as warned:
        apart = program.run(loss, quiet=True)
    assert len(warned) == 1
    monkeypatch.undo()
    assert_same_run(program.run(loss, quiet=True, fuse=False), apart)


def test_a_loss_failing_in_a_fused_step_is_its_phases_error_without_a_warning():
    """A loss that traces but fails in a step (not a scalar: no gradient) fails the fused program's
    first call too: run one by one, the first phase raises the error, naming itself, and no
    FusionWarning blames schedc."""
    import warnings

    program = schedc.compile(TEXT, model())
    with warnings.catch_warnings():
        warnings.simplefilter("error", fused.FusionWarning)
        with pytest.raises(TypeError, match="scalar") as info:
            program.run(lambda m: (m["a"] - 1.0) ** 2, quiet=True)
    assert any("while running phase 0" in note for note in info.value.__notes__)
    assert info.value.result.phases == []


@pytest.mark.parametrize("width", [6, 8])
def test_one_schedule_on_models_of_two_shapes_builds_a_program_for_each(width, monkeypatch):
    """Same loss, same model structure, other array shapes: the program built for the first
    shapes (its optimizer slots) must not be taken for the second."""
    text = "phase 4 lr 0.1 < free a >\nphase 4 lr 0.1 < free b >"
    widened = {"a": jnp.zeros(width), "b": jnp.ones(width + 1)}
    program = schedc.compile(text, widened)
    calls = fused_calls(monkeypatch)
    fused_run = program.run(loss, quiet=True)
    assert len(calls) == 1 and fused_run.model["a"].shape == (width,)
    assert_same_run(program.run(loss, quiet=True, fuse=False), fused_run)


def blows_up(m):
    return jnp.where(m["a"][0] > 0.5, jnp.nan, loss(m))


def blows_up_with_aux(m):
    return blows_up(m), {"a0": m["a"][0]}


@pytest.mark.parametrize("chunk", [None, 8], ids=["one-call", "chunk-8"])  # with 8, the broken phase spans calls
@pytest.mark.parametrize(
    "stop, loss_fn", [("", blows_up), ("; stop when loss < -1", blows_up), ("", blows_up_with_aux)], ids=["bare", "with-stop-rule", "with-aux"]
)
def test_a_non_finite_loss_in_a_segment_names_its_phase_and_step(stop, loss_fn, chunk, monkeypatch):
    text = """optimizer sgd
    phase 5 lr 0.01 < free a >
    phase calm 5 lr 0.01 < free b >
    phase boom 40 lr 0.2 < free aSTOP >
    phase 5 lr 0.01 < free b >""".replace("STOP", stop)
    program = schedc.compile(text, model())
    checks = foreseen_checks(monkeypatch)
    errors = []
    for fuse in (False, True):
        with pytest.raises(RunError) as info:
            program.run(loss_fn, quiet=True, fuse=fuse, chunk=chunk)
        errors.append(info.value)
    one, other = errors
    # a bare segment in one call was foreseen, and the check found the loss the plan could not foresee
    assert checks == ([False] if not stop and loss_fn is blows_up and chunk is None else [])
    assert str(other) == str(one) and "phase 2 (boom)" in str(other) and other.step == one.step
    assert len(other.result.phases) == 3 and other.result.stop_reasons == ["completed", "completed", "non-finite loss"]
    assert_same_run(one.result, other.result)
    assert leaves_bytes(other.model) == leaves_bytes(one.model)
    if loss_fn is blows_up_with_aux:  # the broken phase's aux mean is over its steps kept
        assert other.result.phases[2].aux_steps.tolist() == [other.step + 1]


def test_a_progress_bar_does_not_cut_the_segment(program, monkeypatch):
    """Watched (a terminal's progress bar), the schedule still runs fused, in paced calls, the bar
    moving per phase, with the results of a phase-by-phase run."""
    import sys

    from schedc.runtime import runner

    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    # calls keep their first size (the chunk's 16 steps), not resized by their timing: so the
    # number of calls is the same on a loaded machine as on a quiet one
    monkeypatch.setattr(runner.Pace, "observe", lambda self, ran: None)
    moved = {}
    original_advance = runner._Progress.advance
    monkeypatch.setattr(runner._Progress, "advance", lambda self, task, done, *a: (moved.__setitem__(task, done), original_advance(self, task, done, *a))[1])
    calls = fused_calls(monkeypatch)
    watched = program.run(loss, chunk=16)  # 16 steps per call: the 111 steps run take several
    assert len(calls) >= 5 and len(moved) == len(watched.phases)
    assert sorted(moved.values()) == sorted(p.steps_run for p in watched.phases)  # every phase's bar at its end
    assert_same_run(program.run(loss, quiet=True, chunk=16, fuse=False), watched)


def noisy(m, key):
    """A loss taking a per-step key (dropout, augmentation): fold_in(its phase's loss key, step)."""
    return loss(m) + 0.01 * jnp.sum(jax.random.normal(key, (3,)) * m["a"])


def test_a_loss_taking_a_key_fuses_with_the_same_keys(program, monkeypatch):
    together, _ = fused_in_one_call(program, noisy, monkeypatch)
    assert together.loss_history.tobytes() != program.run(loss, quiet=True).loss_history.tobytes()  # the keys matter


EMA_TEXT = """seed 2
phase 15 lr 0.1 < free a >
phase 10 lr 0.05 ema 0.5 < free a, b; carry state >
phase 12 lr 0.05 ema 0.9 < free b; init a ~ normal(0, 1) >
phase 8 lr 0.05 < free a >
"""


def test_ema_phases_fuse_with_the_same_ema_models(monkeypatch):
    """`ema D` lives in the optimizer state; a fused call returns each phase's EMA model beside its model."""
    program = schedc.compile(EMA_TEXT, model())
    together, apart = fused_in_one_call(program, loss, monkeypatch)
    assert [p.ema_model is None for p in together.phases] == [True, False, False, True]
    for a, b in zip(apart.phases, together.phases):
        assert leaves_bytes(a.ema_model) == leaves_bytes(b.ema_model), a.display
    assert leaves_bytes(together.ema_model) != leaves_bytes(together.model)  # the average is not the model


CUT_TEXT = """seed 5
phase 10 lr 0.1 < free a, b >
phase 8 lr 0.05 < free a, b; carry state >
phase 6 lr 0.05 < free a, b; init b = $start; carry state >
phase 7 lr 0.02 < free a, b; carry state >
phase 5 lr 0.02 < free a; carry state >
"""


def test_optimizer_states_carry_into_and_out_of_segments_around_a_cut(monkeypatch):
    """A phase run alone (an init of an array bound to `$start`) between two segments carries the
    first segment's optimizer state (its slots come back packed) and hands its own to the second."""
    program = schedc.compile(CUT_TEXT, model(), start=np.array([0.3, -0.2], np.float32))
    calls = fused_calls(monkeypatch)
    together = program.run(loss, quiet=True)
    assert len(calls) == 2  # the segments before and after the phase run alone
    assert_same_run(program.run(loss, quiet=True, fuse=False), together)


NOISY_TEXT = """seed 6
repeat 2 <
  phase 6 lr 0.05 optimizer noisy_sgd(eta = 0.5, key = 1) < free a, b >
  phase 5 lr 0.05 optimizer noisy_sgd(eta = 0.5, key = 1) < free a, b; carry state >
>
phase 4 lr 0.05 optimizer noisy_sgd(eta = 0.5, key = 1) < free a, b; init b = $start; carry state >
phase 5 lr 0.05 optimizer noisy_sgd(eta = 0.5, key = 1) < free a, b; carry state >
phase 5 lr 0.05 optimizer chain(add_noise(0.5, 0.55, key = 2), sgd) < free a >
"""


def test_optimizer_states_holding_a_prng_key_fuse_and_carry_around_a_cut(monkeypatch):
    """`noisy_sgd`'s and `add_noise`'s states hold a typed PRNG key, which has no numpy dtype: the
    segments keep their slots as trees (not packed), and carry them to and from the phase run
    alone between them, with the same noise as phase by phase."""
    program = schedc.compile(NOISY_TEXT, model(), start=np.array([0.3, -0.2], np.float32))
    calls = fused_calls(monkeypatch)
    together = program.run(loss, quiet=True)
    assert len(calls) == 2
    assert_same_run(program.run(loss, quiet=True, fuse=False), together)
    other_key = schedc.compile(NOISY_TEXT.replace("key = 1", "key = 7"), model(), start=np.array([0.3, -0.2], np.float32))
    assert not np.array_equal(other_key.run(loss, quiet=True).phase_losses[1], together.phase_losses[1])  # (the key is used)


# ---------------------------------------------------------------- training on data

N = 30  # examples: with batch 8, 3 steps per epoch (6 examples sit out each epoch)
X = np.random.default_rng(0).normal(size=(N, 3)).astype(np.float32)
Y = (X @ np.array([1.0, -2.0, 0.5], np.float32) + 0.3).astype(np.float32)

DATA_TEXT = """seed 3
batch 8
phase 2 epochs lr 0.05 < free w >
repeat 2 <
  phase 7 lr cosine(0.05 -> 0.001) optimizer sgd(momentum = 0.9) < free w, b; carry state >
  phase 1 epoch batch 5 lr 0.02 < free b; init w ~ normal(0, 0.1); stop when loss < 2.0 >
>
phase 3 epochs lr 0.1 < free **; init b = reset; stop when loss_change < 0.6 over 2 after 2 >
phase 5 batch 30 lr 0.01 < free w >
"""


def linear():
    return {"w": jnp.zeros(3), "b": jnp.zeros(())}


def mse(m, x, y):
    return jnp.mean((x @ m["w"] + m["b"] - y) ** 2)


def mse_with_aux(m, x, y):
    value = mse(m, x, y)
    return value, {"twice": 2 * value, "bias": m["b"]}


@pytest.fixture(scope="module")
def data_program():
    return schedc.compile(DATA_TEXT, linear())


@pytest.fixture(scope="module", params=[None, 4], ids=["one-call", "chunk-4"])
def data_runs(request, data_program):
    """The minibatched schedule, with aux metrics, run phase by phase and fused (with chunk 4, a
    fused call stops inside phases and epochs, and straddles phases); and the fused calls made."""
    chunk = request.param
    apart = data_program.run(mse_with_aux, X, Y, quiet=True, chunk=chunk, fuse=False)
    with pytest.MonkeyPatch.context() as monkeypatch:
        calls = fused_calls(monkeypatch)
        together = data_program.run(mse_with_aux, X, Y, quiet=True, chunk=chunk)
    return chunk, apart, together, len(calls)


def test_minibatched_phases_fuse_with_the_same_batches(data_runs):
    """Minibatches are drawn on the device from each phase's (seed, phase, epoch) permutation, in a
    fused segment as phase by phase (a call starting inside a phase picks up its epoch's
    permutation): the same losses (so the same batches), models, logs, for every stop rule."""
    chunk, apart, together, calls = data_runs
    assert calls == (1 if chunk is None else -(-sum(p.steps_run for p in together.phases) // chunk))
    assert_same_run(apart, together)
    assert set(apart.stop_reasons) == {"completed", "loss", "loss_change"}
    assert [p.steps_per_epoch for p in together.phases] == [p.steps_per_epoch for p in apart.phases] == [3, 3, 6, 3, 6, 3, 1]


def test_aux_metrics_fuse_with_the_same_per_chunk_means(data_runs):
    """A fused run logs aux metrics per step and takes each phase's means over the chunks a
    phase-by-phase run calls (blocks of `chunk` steps, the last ending where the phase stops):
    the same numbers (compared bitwise in `assert_same_run`), though a fused call straddles phases."""
    chunk, apart, together, _ = data_runs
    expected = [[6], [7]] if chunk is None else [[4, 6], [4, 7]]
    assert [p.aux_steps.tolist() for p in together.phases][:2] == expected
    assert sorted(together.aux) == ["bias", "twice"] and together.aux["twice"].tobytes() == apart.aux["twice"].tobytes()


def test_a_minibatched_run_with_aux_metrics_replays_with_the_same_results(data_program, data_runs, monkeypatch):
    """A later run of the same program, loss and data skips the runner (a replay of the segment):
    the same batches, aux means and models."""
    chunk, _, together, _ = data_runs
    made = runners_made(monkeypatch)
    again = data_program.run(mse_with_aux, X, Y, quiet=True, chunk=chunk)
    assert made == []
    assert_same_run(together, again)


def test_a_phase_whose_batch_does_not_fit_the_data_runs_alone_and_names_itself(data_program):
    """A batch larger than the data is the phase's DataError, after the phases before it ran."""
    from schedc.runtime.data import DataError

    with pytest.raises(DataError, match="phase 6 has `batch 30` but the data holds only 20 examples") as info:
        data_program.run(mse_with_aux, X[:20], Y[:20], quiet=True)
    assert len(info.value.result.phases) == 6


PLATEAU_TEXT = """seed 1
phase 10 lr 0.2 * plateau(factor=0.5, patience=1, cooldown=0) optimizer sgd < free a, b >
phase 8 lr 0.1 < free a >
phase 12 lr 0.3 * plateau(factor=0.5, patience=1) optimizer sgd < free b; init b ~ normal(0, 1); stop when loss < 0.5 >
phase 9 lr 0.05 < free a, b; free b lr 0.2 * plateau(factor=0.3, patience=2) optimizer sgd; carry state >
phase 30 lr 0.3 * plateau(factor=0.5, patience=1) < free **; init a = reset; stop when loss_change < 0.01 over 3 after 4 >
"""


def test_plateau_phases_fuse_with_the_same_scale_logs(monkeypatch):
    """A plateau's scale lives in the optimizer state; a fused call logs the scale applied at each
    step beside the loss, so the hyperparameter log (`plateau_scale`) is a phase-by-phase run's
    (with calls of 8 steps: phases span calls, calls span phases)."""
    program = schedc.compile(PLATEAU_TEXT, model())
    calls = fused_calls(monkeypatch)
    together = program.run(loss, quiet=True, chunk=8)
    assert len(calls) == -(-sum(p.steps_run for p in together.phases) // 8)
    apart = program.run(loss, quiet=True, chunk=8, fuse=False)
    assert_same_run(apart, together)
    assert set(apart.stop_reasons) == {"completed", "loss", "loss_change"}
    scales = together.hyperparams["plateau_scale"]
    assert np.nanmin(scales) < 1 and "plateau_scale@b" in together.phases[3].hyperparams


class Tracked(eqx.Module):
    """A linear model with a model state: a running mean of the inputs it has seen, which it adds."""

    w: jax.Array
    b: jax.Array
    seen: eqx.nn.StateIndex

    def __init__(self):
        self.w, self.b = jnp.zeros(3), jnp.zeros(())
        self.seen = eqx.nn.StateIndex(jnp.zeros(3))


def tracked_mse(m, state, x, y):
    seen = state.get(m.seen)
    value = jnp.mean((x @ m.w + m.b + 0.1 * jnp.sum(seen) - y) ** 2)
    return value, (state.set(m.seen, 0.9 * seen + 0.1 * jnp.mean(x, axis=0)), {"twice": 2 * value})


def test_a_model_state_is_carried_through_a_fused_segment(monkeypatch):
    """`state=` (an eqx.nn.State) is carried from step to step, call to call (calls of 4 steps)
    and phase to phase on the device; every phase's state is a phase-by-phase run's, and so is
    the run's final state."""
    start, state = eqx.nn.make_with_state(Tracked)()
    program = schedc.compile(DATA_TEXT, start)
    calls = fused_calls(monkeypatch)
    together = program.run(tracked_mse, X, Y, state=state, quiet=True, chunk=4)
    assert len(calls) == -(-sum(p.steps_run for p in together.phases) // 4)
    apart = program.run(tracked_mse, X, Y, state=state, quiet=True, chunk=4, fuse=False)
    assert_same_run(apart, together)
    assert set(apart.stop_reasons) == {"completed", "loss", "loss_change"}
    assert leaves_bytes(together.state) == leaves_bytes(apart.state) and together.phases[-1].state is together.state
    assert leaves_bytes(together.phases[0].state) != leaves_bytes(together.state)  # each phase's own state


# ---------------------------------------------------------------- replays (a later run of a program that ran as one segment skips the runner)

def fitted(m, x):
    return jnp.sum((m["a"] - jnp.mean(x)) ** 2) + jnp.sum(jnp.sin(1.3 * m["b"] * x[:2]) ** 2)


def weighted(m, x, w):
    return fitted(m, x) * jnp.mean(w)


REPLAY_TEXT = """seed 1
phase 9 lr 0.1 < free a >
phase 7 lr 0.05 < free a, b; init b ~ normal(0, 1); carry state >
phase 8 lr 0.02 < free b; stop when loss_change < 0.0001 over 3 >
"""


def runners_made(monkeypatch) -> list:
    """A list that grows by one whenever a Runner is made from now on."""
    from schedc.runtime import runner

    made = []
    original = runner.Runner.__init__
    monkeypatch.setattr(runner.Runner, "__init__", lambda self, *a, **k: (made.append(1), original(self, *a, **k))[1])
    return made


def test_a_second_run_replays_the_segment_with_the_same_results(monkeypatch):
    program = schedc.compile(REPLAY_TEXT, model())
    x = jnp.linspace(0.5, 1.5, 6)
    first = program.run(fitted, x, quiet=True)
    made = runners_made(monkeypatch)
    calls = fused_calls(monkeypatch)
    again = program.run(fitted, x, quiet=True)
    assert made == [] and len(calls) == 1  # no runner: one call of the kept segment
    assert_same_run(first, again)
    assert_same_run(program.run(fitted, x, quiet=True, fuse=False), again)
    # new values of the same shapes are the new run's data, not the recorded run's
    y = jnp.linspace(-1.0, 2.0, 6)
    replayed = program.run(fitted, y, quiet=True)
    assert made == [1] and len(calls) == 2  # (the fuse=False run made the one runner)
    assert_same_run(schedc.compile(REPLAY_TEXT, model()).run(fitted, y, quiet=True, fuse=False), replayed)


def test_the_same_data_arrays_are_replayed_without_reading_their_signature_again(monkeypatch):
    program = schedc.compile(REPLAY_TEXT, model())
    x = jnp.linspace(0.5, 1.5, 6)
    program.run(weighted, x, quiet=True, w=x)
    first = program.run(weighted, x, quiet=True, w=x)  # replayed: its data checked, then known (held weakly)
    read = []
    original = fused.data_signature
    monkeypatch.setattr(fused, "data_signature", lambda *a: (read.append(1), original(*a))[1])
    made = runners_made(monkeypatch)
    assert_same_run(first, program.run(weighted, x, quiet=True, w=x))
    assert read == [] and made == []
    # other arrays are checked (and replayed when of the same signature: here, the same shape)
    program.run(weighted, x + 1.0, quiet=True, w=x)
    assert read == [1] and made == []
    program.run(weighted, x, quiet=True, w=x[:4])  # a keyword's shape changed: the runner
    assert made == [1]
    # what is known: these very arrays, by position and name, under this float width
    known = fused._Accepted.of((x,), {"w": x})
    assert known.arrays((x,), {"w": x}) == (x, x)
    assert known.arrays((x + 0.0,), {"w": x}) is None and known.arrays((x,), {"v": x}) is None and known.arrays((x, x), {}) is None
    with jax.enable_x64(True):
        assert known.arrays((x,), {"w": x}) is None
    assert fused._Accepted.of((np.asarray(x),), {}) is None  # a numpy array can change shape in place: never known


def test_a_replay_frees_its_last_outputs_as_the_next_run_calls(monkeypatch):
    """A replay holds its last call's outputs until the next run's call is made (so that they are
    freed while the device runs, not as the run returns), and only while its optimizer slots are
    packed (small: `segment.PACKED_SLOTS_BYTES`)."""
    import weakref

    program = schedc.compile(REPLAY_TEXT, model())
    x = jnp.linspace(0.5, 1.5, 6)
    program.run(fitted, x, quiet=True)
    program.run(fitted, x, quiet=True)
    (replay,) = program._replays.values()
    before = weakref.ref(replay.outputs[1]["counts"])
    program.run(fitted, x, quiet=True)
    assert before() is None and replay.outputs[1]["counts"] is not None
    monkeypatch.setattr(segment, "PACKED_SLOTS_BYTES", 0)  # (slots left as a tree: a new program, for shapes no other test compiles)
    unpacked = schedc.compile(REPLAY_TEXT, {"a": jnp.zeros(13), "b": jnp.ones(2)})
    unpacked.run(fitted, x, quiet=True)
    unpacked.run(fitted, x, quiet=True)
    (replay,) = unpacked._replays.values()
    assert replay.segment.program.packing is None and replay.outputs is None


@pytest.mark.parametrize(
    "change",
    [
        lambda program, x: ((x[:4],), {}),  # another shape
        lambda program, x: ((x.astype(jnp.int32),), {}),  # another dtype
        lambda program, x: ((), {"x": x}),  # another structure (a keyword)
        lambda program, x: (setattr(program, "model", {"a": jnp.ones(3), "b": jnp.ones(2)}), ((x,), {}))[1],  # another model
    ],
    ids=["shape", "dtype", "structure", "model"],
)
def test_a_replay_is_not_used_when_what_it_derived_changes(change, monkeypatch):
    program = schedc.compile(REPLAY_TEXT, model())
    x = jnp.linspace(0.5, 1.5, 6)
    program.run(fitted, x, quiet=True)
    args, kwargs = change(program, x)
    made = runners_made(monkeypatch)
    changed = program.run(fitted, *args, quiet=True, **kwargs)
    assert made == [1]
    fresh = schedc.compile(REPLAY_TEXT, program.model)
    assert_same_run(fresh.run(fitted, *args, quiet=True, fuse=False, **kwargs), changed)
    made.clear()
    assert_same_run(changed, program.run(fitted, *args, quiet=True, **kwargs))  # recorded anew: replayed now
    assert made == []


def blows_up_past(m, limit):
    """NaN once `a[0]` passes `limit` (data: a run recorded with a high limit replays with a low one)."""
    return jnp.where(m["a"][0] > limit[0], jnp.nan, loss(m))


def test_a_replayed_run_reports_a_non_finite_loss_as_the_runner_does(monkeypatch):
    text = """optimizer sgd
    phase 5 lr 0.01 < free a >
    phase calm 5 lr 0.01 < free b >
    phase boom 40 lr 0.2 < free a >
    phase 5 lr 0.01 < free b >
    """
    program = schedc.compile(text, model())
    checks = foreseen_checks(monkeypatch)
    program.run(blows_up_past, jnp.array([99.0]), quiet=True)
    made = runners_made(monkeypatch)
    errors = []
    for fuse in (True, False):  # replayed, then phase by phase
        with pytest.raises(RunError) as info:
            program.run(blows_up_past, jnp.array([0.5]), quiet=True, fuse=fuse)
        errors.append(info.value)
    assert len(made) == 2  # the replay made a runner only to word its error
    assert checks == [True, False]  # (foreseen both times; the replay's check found the loss)
    replayed, one = errors
    assert str(replayed) == str(one) and "phase 2 (boom)" in str(replayed) and replayed.step == one.step
    assert replayed.result.stop_reasons == ["completed", "completed", "non-finite loss"]
    assert_same_run(one.result, replayed.result)
    assert leaves_bytes(replayed.model) == leaves_bytes(one.model)


def test_a_signal_stops_a_replayed_run_with_the_phases_it_finished(monkeypatch):
    """With calls of 8 steps, a SIGINT during the second call stops the run after it: the phases
    finished are kept, as in a run through the runner."""
    import os
    import signal

    from schedc.runtime.runner import Interrupted

    program = schedc.compile(REPLAY_TEXT, model())
    x = jnp.linspace(0.5, 1.5, 6)
    program.run(fitted, x, quiet=True, chunk=8)
    original = fused._collect
    stopped = []
    for replayed in (True, False):
        if not replayed:
            program._replays.clear()
        seen = []

        def collect(*a):
            seen.append(1)
            if len(seen) == 2:
                os.kill(os.getpid(), signal.SIGINT)
            return original(*a)

        monkeypatch.setattr(fused, "_collect", collect)
        made = runners_made(monkeypatch)
        before = signal.getsignal(signal.SIGINT)  # (SIG_IGN where the suite was started in the background)
        with pytest.raises(Interrupted) as info:
            program.run(fitted, x, quiet=True, chunk=8)
        assert len(made) == (not replayed)
        stopped.append(info.value)
        assert signal.getsignal(signal.SIGINT) is before  # the handler is restored
    replayed, through_runner = stopped
    assert replayed.phase == through_runner.phase == 2 and replayed.signal == signal.SIGINT
    assert len(replayed.result.phases) == 2  # (the second call ended the second phase: 9 + 7 steps)
    assert_same_run(through_runner.result, replayed.result)


# ---------------------------------------------------------------- evaluations inside fused segments

# every rule on metrics: patience with `keep best` (best at step 4, stops at 12, restores it), a plateau
# on a metric (its scale halves as `gap` grows: w[0] moves past 0.4), a threshold with `keep best`
EVAL_TEXT = """seed 1
batch 8
eval "m.py:f" every 2 steps
optimizer sgd
phase 120 lr 0.05 < free **; stop when val.gap stops improving for 4 evals; keep best val.gap >
phase 12 lr 0.2 * plateau(on=val.gap, factor=0.5, patience=1) < free **; init b = 0.1 >
phase 60 lr 0.1 < free **; stop when val.loss < 0.005; keep best val.gap >
"""


def gap(m, x, y):
    return {"gap": (m["w"][0] - 0.4) ** 2, "loss": mse(m, x, y)}


def capped_mse(m, x, y):  # NaN once b passes 0.65: only with data fitted by a larger b (Y + 0.5), in phase 1
    return jnp.where(m["b"] > 0.65, jnp.nan, mse(m, x, y))


EVAL_OPTIONS = {"one-call": dict(chunk=None, eval_every=None), "chunk-4-every-epoch": dict(chunk=4, eval_every="epoch")}


def eval_run(text, fuse, options, y=Y, loss_fn=capped_mse):
    options = EVAL_OPTIONS[options] if isinstance(options, str) else options
    return schedc.compile(text, linear()).run(loss_fn, X, y, quiet=True, fuse=fuse, validation=(X, Y), metrics=gap, **options)


_EVAL_RUNS: dict = {}


def eval_runs_with(options: str) -> tuple:
    """The evaluated schedule run phase by phase and fused with `EVAL_OPTIONS[options]`, and the
    fused calls made (made once per module: the tests share their programs)."""
    if options not in _EVAL_RUNS:
        apart = eval_run(EVAL_TEXT, False, options)
        with pytest.MonkeyPatch.context() as monkeypatch:
            calls = fused_calls(monkeypatch)
            together = eval_run(EVAL_TEXT, True, options)
        _EVAL_RUNS[options] = (EVAL_OPTIONS[options], apart, together, len(calls))
    return _EVAL_RUNS[options]


@pytest.fixture(params=list(EVAL_OPTIONS))
def eval_runs(request):
    """In one call evaluating every 2 steps, and evaluating every epoch (3 steps) in calls of 4
    steps (which stop between and inside evaluations and phases)."""
    return eval_runs_with(request.param)


def test_evaluated_phases_fuse_with_the_same_evaluations_stops_and_kept_weights(eval_runs):
    """One fused program runs every evaluated phase: the metrics with their steps, the stop reasons
    naming the metric, the kept weights and best steps, the plateau scales (in the hyperparameter
    log), losses and models are a phase-by-phase run's, bit for bit."""
    options, apart, together, calls = eval_runs
    chunk = options["chunk"]
    assert calls == (1 if chunk is None else -(-sum(p.steps_run for p in together.phases) // chunk))
    assert_same_run(apart, together)
    assert together.stop_reasons == ["val.gap stopped improving", "completed", "val.loss < 0.005"]
    for phase in (together.phases[0], together.phases[2]):  # the best evaluation's weights, not the last
        assert phase.best_step == phase.eval_steps[int(np.argmin(phase.metrics["gap"]))] < phase.steps_run
    assert set(np.diff(together.eval_steps)) == {3 if options["eval_every"] else 2}
    assert np.nanmin(together.phases[1].hyperparams["plateau_scale"]) < 1  # the plateau followed the metric


@pytest.mark.parametrize("fuse", [True, False], ids=["fused", "phase-by-phase"])
def test_runs_differing_only_in_the_evaluation_interval_share_one_program(fuse):
    """The interval is a runtime number: of a fused segment's table, and of a phase run alone
    (`fuse=False`, or checkpointed), whose evaluation log has a slot per step. The programs built
    for evaluations every epoch (3 steps) run them every 2 steps, compiling nothing, with the
    results of the other way of running (made in one call: results do not depend on the calls' length)."""
    eval_runs_with("chunk-4-every-epoch")
    _, apart, together, _ = eval_runs_with("one-call")
    programs = segment if fuse else C
    built = programs.cache_size()
    with CompileClock() as clock:
        run = eval_run(EVAL_TEXT, fuse, dict(chunk=4, eval_every=2))
    assert clock.count == 0 and programs.cache_size() == built
    assert_same_run(*((apart, run) if fuse else (run, together)))


@pytest.mark.parametrize("options", list(EVAL_OPTIONS))  # in calls of 4, the broken phase spans calls
def test_a_non_finite_loss_in_an_evaluated_segment_names_its_phase_and_keeps_the_phases_before(options):
    errors = []
    for fuse in (False, True):
        with pytest.raises(RunError) as info:
            eval_run(EVAL_TEXT, fuse, options, y=Y + 0.5)
        errors.append(info.value)
    one, other = errors
    assert str(other) == str(one) and "phase 1" in str(other) and other.step == one.step
    assert other.result.stop_reasons == ["val.gap stopped improving", "non-finite loss"] and len(other.result.phases[1].eval_steps) > 1
    assert_same_run(one.result, other.result)
    assert leaves_bytes(other.model) == leaves_bytes(one.model)


def test_a_phase_whose_evaluation_fails_its_checks_runs_alone_after_the_segment_before(monkeypatch):
    """A rule on a metric the metrics function does not return: the phases before run fused, then
    the phase alone raises its EvalError, with the phases before in `.result`."""
    from schedc.runtime.evaluation import EvalError

    calls = fused_calls(monkeypatch)
    with pytest.raises(EvalError, match=r"phase 3 uses `val.lost` but the metrics function returned `val.gap`, `val.loss`") as info:
        eval_run(EVAL_TEXT + "phase 5 lr 0.05 < free **; stop when val.lost < 0.5 >\n", True, "one-call")
    assert len(calls) == 1 and len(info.value.result.phases) == 3


def test_rules_on_metrics_in_a_run_without_an_evaluation_are_its_phases_error_fused_or_not():
    """Without a metrics function, a phase with rules on metrics does not fuse (a segment would run
    it without them): it runs alone and raises its EvalError."""
    from schedc.runtime.evaluation import EvalError

    with pytest.raises(EvalError, match=r"phase 0 uses `val.gap` but the run has no evaluation") as info:
        schedc.compile(EVAL_TEXT, linear()).run(capped_mse, X, Y, quiet=True)
    assert info.value.result.phases == []


KEEP_TEXT = """seed 1
batch 8
eval "m.py:f" every 2 steps
optimizer sgd
phase 12 lr 0.05 < free **; keep best val.gap >
phase 6 lr 0.05 < free **; keep best val.gap >
"""


def tracked_metrics(m, state, x, y):
    return {"gap": (m.w[0] - 0.4) ** 2 + 0.01 * jnp.sum(state.get(m.seen))}


def test_evaluated_phases_with_a_model_state_fuse_and_keep_the_best_state(monkeypatch):
    """`keep best` restores the model state of the best evaluation with its weights, in a fused
    segment as phase by phase (calls of 4 steps)."""
    start, state = eqx.nn.make_with_state(Tracked)()
    program = schedc.compile(KEEP_TEXT, start)
    calls = fused_calls(monkeypatch)
    options = dict(state=state, quiet=True, chunk=4, validation=(X, Y), metrics=tracked_metrics)
    together = program.run(tracked_mse, X, Y, **options)
    assert len(calls) == -(-sum(p.steps_run for p in together.phases) // 4)
    apart = program.run(tracked_mse, X, Y, fuse=False, **options)
    assert_same_run(apart, together)
    kept = together.phases[0]
    assert kept.best_step is not None and kept.best_step < kept.steps_run
