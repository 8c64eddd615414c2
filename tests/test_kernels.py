"""Step loops as one XLA:CPU kernel (`schedc.use_kernels`, compiler/kernel.py): a small model's
loops are marked and compiled so, the results match the default build's to float rounding (stop
reasons and steps exactly), fused and phase-by-phase runs agree likewise, many fits at once
too; a loop the kernel emitter cannot compile (a sort, a scatter, a LAPACK call, an empty array)
is left to XLA's thunks, and one it refuses while compiling makes its program fall back to them,
with the default build's results bit for bit. The default stays off."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import schedc
from schedc.compiler import kernel as K
from test_fused import TEXT, leaves_bytes, loss, model  # every stop rule and init kind


def assert_close_runs(one, other):
    assert other.stop_reasons == one.stop_reasons
    assert [p.steps_run for p in other.phases] == [p.steps_run for p in one.phases]
    for a, b in zip(one.phases, other.phases):
        np.testing.assert_allclose(a.losses, b.losses, rtol=1e-5, atol=1e-7, err_msg=a.display)
        for x, y in zip(jax.tree_util.tree_leaves(a.model), jax.tree_util.tree_leaves(b.model)):
            np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-7, err_msg=a.display)


@pytest.fixture(scope="module")
def program():
    return schedc.compile(TEXT, model())


@pytest.fixture(scope="module")
def default_run(program):
    with schedc.use_kernels(False):  # (whatever SCHEDC_KERNELS says)
        return program.run(loss, quiet=True)


@pytest.mark.parametrize("fuse", [True, False], ids=["fused", "phase-by-phase"])
def test_kernel_runs_match_the_default_to_rounding(program, default_run, fuse):
    with schedc.use_kernels():
        marked = program.run(loss, quiet=True, fuse=fuse)
    assert set(marked.stop_reasons) == {"completed", "loss", "loss_change"}
    assert_close_runs(default_run, marked)


def test_fused_and_phase_by_phase_agree_with_kernels(program):
    with schedc.use_kernels():
        assert_close_runs(program.run(loss, quiet=True, fuse=False), program.run(loss, quiet=True, chunk=8))


def marked(text: str, model, loss_fn, *data) -> bool:
    """Whether a phase-by-phase run's chunk program holds a loop marked as one kernel: its
    lowered text, captured at the program's first call."""
    seen = []
    original = K.KernelsOrThunks.__call__

    def call(self, *args):
        seen.append(self.lower(*args).as_text())
        return original(self, *args)

    program = schedc.compile(text, model)
    try:
        K.KernelsOrThunks.__call__ = call
        program.run(loss_fn, *data, quiet=True, fuse=False)
    finally:
        K.KernelsOrThunks.__call__ = original
    return any("xla_cpu_small_call" in text for text in seen)


def test_kernels_mark_a_small_models_loop_and_only_while_on():
    text = "phase 5 lr 0.1 < free ** >"
    with schedc.use_kernels(False):
        assert not marked(text, model(), loss)
        with schedc.use_kernels():
            assert marked(text, model(), loss)
        assert not marked(text, model(), loss)  # (the inner block ended: off again)


@pytest.mark.parametrize("value, on", [(None, False), ("0", False), ("", False), ("1", True)])
def test_kernels_are_off_unless_the_environment_asks(value, on):
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "SCHEDC_KERNELS"} | ({} if value is None else {"SCHEDC_KERNELS": value})
    done = subprocess.run([sys.executable, "-c", "from schedc.compiler import kernel; print(kernel._on)"], capture_output=True, text=True, env=env, check=True)
    assert done.stdout.strip() == str(on)


def test_a_model_with_more_data_than_kernel_bytes_is_left_to_thunks():
    x = jnp.linspace(-1, 1, K.KERNEL_BYTES // 4)  # with y, twice the limit

    def fit(m, x, y):
        return jnp.mean((m["a"][0] * x + m["b"][0] - y) ** 2)

    with schedc.use_kernels():
        assert not marked("phase 5 lr 0.1 < free ** >", model(), fit, x, 2 * x)


def sorted_loss(m):
    return jnp.sum((jnp.sort(m["a"]) - 1.0) ** 2) + jnp.sum(m["b"] ** 2)


def scattered_loss(m):
    return jnp.sum((m["a"].at[jnp.array([0, 2, 0])].add(m["b"][0]) - 1.0) ** 2)


def lapack_loss(m):
    matrix = jnp.eye(3) * 2.0 + jnp.outer(m["a"], m["a"]) * 0.1
    return jnp.sum(jnp.linalg.solve(matrix, m["a"] - 1.0) ** 2) + jnp.sum(m["b"] ** 2)


@pytest.mark.parametrize("loss_fn", [sorted_loss, scattered_loss, lapack_loss], ids=["sort", "scatter-add", "lapack"])
def test_a_loop_the_emitter_cannot_compile_stays_thunks_with_the_defaults_bits(loss_fn):
    text = "phase 6 lr 0.05 < free ** >\nphase 4 lr 0.01 < free a >"
    program = schedc.compile(text, model())
    with schedc.use_kernels(False):
        default = program.run(loss_fn, quiet=True)
    with schedc.use_kernels():
        assert not marked(text, model(), loss_fn)
        again = program.run(loss_fn, quiet=True)
    assert default.loss_history.tobytes() == again.loss_history.tobytes()
    assert leaves_bytes(default.model) == leaves_bytes(again.model)


def test_what_the_emitter_refuses_is_found_in_the_loops_jaxpr():
    def refused(fn, *args) -> bool:
        return K._refused(jax.make_jaxpr(fn)(*args), [])

    x = jnp.arange(4.0)
    assert refused(lambda x: jnp.sort(x), x)
    assert refused(lambda x: x.at[jnp.array([1, 1])].add(1.0), x)
    assert refused(lambda x: jax.lax.fori_loop(0, 2, lambda i, x: jnp.fft.fft(x).real, x), x)
    assert refused(lambda x: jax.pure_callback(lambda v: v, jax.ShapeDtypeStruct((4,), jnp.float32), x), x)
    assert not refused(lambda x, i: x.at[i].set(2.0), x, 1)  # one index: XLA's update slice
    assert not refused(lambda x: jax.lax.cond(x[0] > 0, jnp.sin, jnp.cos, x), x)
    assert K._refused(jax.make_jaxpr(lambda x: x)(x), [jnp.zeros((0,))])  # an empty array


def test_a_program_the_emitter_refuses_while_compiling_falls_back_to_thunks():
    # a sum over 6,000 points is a fusion kind the kernel emitter does not implement (XLA:CPU
    # raises UNIMPLEMENTED when the program compiles): the program is rebuilt as thunks
    x = jnp.linspace(-1, 1, 6000)

    def fit(m, x, y):
        return jnp.mean((m["a"][0] * x + m["b"][0] - y) ** 2)

    text = "phase 5 lr 0.1 < free ** >"
    program = schedc.compile(text, model())
    with schedc.use_kernels(False):
        default = program.run(fit, x, jnp.sin(3 * x), quiet=True, fuse=False)
    with schedc.use_kernels():
        again = program.run(fit, x, jnp.sin(3 * x), quiet=True, fuse=False)
    assert default.loss_history.tobytes() == again.loss_history.tobytes()


def test_many_fits_at_once_run_with_kernels():
    xs = jax.random.normal(jax.random.key(0), (3, 16, 3))
    ys = jnp.einsum("bnd,d->bn", xs, jnp.arange(1.0, 4.0))

    def fit(m, x, y):
        return jnp.mean((x @ m["a"] + m["b"][0] - y) ** 2)

    text = "phase 20 lr 0.05 < free a >\nphase 30 lr 0.02 < free **; stop when loss_change < 1e-3 over 5 after 10 >"
    program = schedc.compile(text, model())
    for fuse in (True, False):
        with schedc.use_kernels(False):
            default = program.run_batched(fit, xs, ys, fuse=fuse)
        with schedc.use_kernels():
            again = program.run_batched(fit, xs, ys, fuse=fuse)
        for i in range(3):
            assert_close_runs(default.dataset(i), again.dataset(i))


def test_schedc_run_kernels_turns_them_on_for_its_run_only(tmp_path, monkeypatch):
    import textwrap

    from schedc.cli import main
    from test_cli_run import MODEL, SCHED

    (tmp_path / "line.py").write_text(textwrap.dedent(MODEL))
    (tmp_path / "fit.sched").write_text(SCHED)
    modes = []
    original = K.KernelsOrThunks.__call__
    monkeypatch.setattr(K.KernelsOrThunks, "__call__", lambda self, *args: (modes.append(K._on), original(self, *args))[1])
    with schedc.use_kernels(False):
        assert main(["run", str(tmp_path / "fit.sched"), "--kernels", "--quiet", "--compile-cache", "none", "--out", str(tmp_path / "out")]) == 0
        assert modes and all(modes) and not K._on
    assert (tmp_path / "out" / "model.eqx").stat().st_size > 0
