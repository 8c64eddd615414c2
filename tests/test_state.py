"""A model state carried through the steps: equinox's stateful layers (BatchNorm) trained as
equinox's own example trains them (`eqx.nn.make_with_state`, `loss(model, state, x, y) ->
(loss, state)`), the same numbers as that loop written by hand; the state returned, passed to
the metrics function, kept with `keep best`, carried across phases and checkpointed."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import schedc
from schedc.compiler import minibatch

N, BATCH = 40, 8
X = np.random.default_rng(1).normal(size=(N, 3)).astype(np.float32)
Y = np.tanh(X @ np.array([1.0, -2.0, 0.5], np.float32)).astype(np.float32)


class Net(eqx.Module):
    lin: eqx.nn.Linear
    norm: eqx.nn.BatchNorm
    out: eqx.nn.Linear

    def __init__(self, key):
        k1, k2 = jax.random.split(key)
        self.lin = eqx.nn.Linear(3, 8, use_bias=False, key=k1)  # no bias before BatchNorm: its gradient is 0, and adam would amplify its rounding
        self.norm = eqx.nn.BatchNorm(8, axis_name="batch", mode="ema")
        self.out = eqx.nn.Linear(8, 1, key=k2)

    def __call__(self, x, state):
        h, state = self.norm(self.lin(x), state)
        return self.out(jax.nn.relu(h))[0], state


def batched(model):
    return jax.vmap(model, axis_name="batch", in_axes=(0, None), out_axes=(0, None))


def loss(model, state, x, y):  # as in equinox's stateful example
    pred, state = batched(model)(x, state)
    return jnp.mean((pred - y) ** 2), state


def loss_with_aux(model, state, x, y):  # (loss, (state, aux))
    pred, state = batched(model)(x, state)
    return jnp.mean((pred - y) ** 2), (state, {"mae": jnp.mean(jnp.abs(pred - y))})


def metrics(model, state, x, y):  # evaluation with the running statistics, as equinox evaluates
    pred, _ = batched(eqx.nn.inference_mode(model))(x, state)
    return {"loss": jnp.mean((pred - y) ** 2)}


TEXT = "seed 3\nbatch 8\noptimizer adam\nphase 3 epochs lr 1e-2 < free ** >"


def hand_written(steps: int, lr: float = 1e-2, model_state=None):
    """The equinox loop: filter_value_and_grad with has_aux, the same minibatch order as schedc."""
    model, state = model_state or eqx.nn.make_with_state(Net)(jax.random.key(0))
    data_key, _ = minibatch.phase_keys(jax.random.key(3), 0)
    params, static = eqx.partition(model, eqx.is_inexact_array)
    tx = optax.adam(lr)
    opt_state, losses, spe = tx.init(params), [], N // BATCH

    @jax.jit
    def step(params, state, opt_state, x, y):
        (value, state), grads = jax.value_and_grad(lambda p, s: loss(eqx.combine(p, static), s, x, y), has_aux=True)(params, state)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), state, opt_state, value

    for i in range(steps):
        order = np.asarray(jax.random.permutation(jax.random.fold_in(data_key, i // spe), N))
        rows = order[(i % spe) * BATCH : (i % spe + 1) * BATCH]
        params, state, opt_state, value = step(params, state, opt_state, X[rows], Y[rows])
        losses.append(float(value))
    return eqx.combine(params, static), state, np.asarray(losses)


def arrays(tree) -> list:
    return jax.tree_util.tree_leaves(eqx.filter(tree, eqx.is_array))


@pytest.fixture(scope="module")
def start():
    return eqx.nn.make_with_state(Net)(jax.random.key(0))


@pytest.fixture(scope="module")
def fitted(start):
    model, state = start
    program = schedc.compile(TEXT, model)
    return program.run(loss, X, Y, state=state, quiet=True, chunk=4, validation=(X, Y), metrics=metrics, eval_every="epoch")


def test_a_batchnorm_model_trains_as_the_hand_written_equinox_loop(fitted):
    model, state, losses = hand_written(15)
    np.testing.assert_allclose(fitted.loss_history, losses, rtol=2e-5, atol=1e-6)
    for got, want in zip(arrays(fitted.model), arrays(model)):
        np.testing.assert_allclose(got, want, rtol=2e-5, atol=1e-6)
    # the running statistics moved, and are the loop's
    mean, var = state.get(model.norm.ema_state_index)
    got_mean, got_var = fitted.state.get(model.norm.ema_state_index)
    assert float(jnp.abs(mean).sum()) > 0
    np.testing.assert_allclose(got_mean, mean, rtol=2e-5, atol=1e-6)
    np.testing.assert_allclose(got_var, var, rtol=2e-5, atol=1e-6)
    assert fitted.phases[0].state is fitted.state


def test_the_metrics_function_gets_the_state_and_evaluates_in_inference_mode(fitted):
    assert fitted.eval_steps.tolist() == [5, 10, 15]
    expected = metrics(fitted.model, fitted.state, X, Y)["loss"]
    np.testing.assert_allclose(fitted.metrics["loss"][-1], expected, rtol=1e-5)


def test_aux_metrics_beside_the_state_in_either_order(start, fitted):
    model, state = start

    def swapped(m, s, x, y):
        value, (s, aux) = loss_with_aux(m, s, x, y)
        return value, (aux, s)

    res = schedc.compile(TEXT, model).run(swapped, X, Y, state=state, quiet=True)
    np.testing.assert_allclose(res.loss_history, fitted.loss_history, rtol=1e-6)
    assert res.aux["mae"].shape == (1,) and np.isfinite(res.aux["mae"]).all()
    split = schedc.compiler.minibatch.split_stateful_output
    assert split((1.0, (state, {"a": 2.0}))) == (1.0, {"a": 2.0}, state) == split((1.0, ({"a": 2.0}, state)))


def test_the_state_carries_from_phase_to_phase(start):
    model, state = start
    program = schedc.compile("seed 3\nbatch 8\noptimizer adam\nphase 2 epochs lr 1e-2 < free ** >\nphase 1 epoch lr 1e-2 < free ** >", model)
    res = program.run(loss, X, Y, state=state, quiet=True)
    mid = res.phases[0].state.get(model.norm.ema_state_index)[0]
    end = res.state.get(model.norm.ema_state_index)[0]
    assert not np.array_equal(mid, end)
    # phase 1 starts from phase 0's model and state: one more epoch of the hand-written loop from there
    data_key, _ = minibatch.phase_keys(jax.random.key(3), 1)
    m, s = res.phases[0].model, res.phases[0].state
    order = np.asarray(jax.random.permutation(jax.random.fold_in(data_key, 0), N))
    np.testing.assert_allclose(res.phases[1].losses[0], loss(m, s, X[order[:BATCH]], Y[order[:BATCH]])[0], rtol=1e-5)



def test_a_stateful_run_is_never_replayed(start, monkeypatch):
    """A later run of a program with a model state goes through the runner again (a replay of a
    fused run keeps no model state): the same results, a runner made, nothing kept."""
    from schedc.runtime import runner

    model, state = start
    program = schedc.compile("seed 3\nbatch 8\noptimizer adam\nphase 1 epoch lr 1e-2 < free ** >\nphase 1 epoch lr 1e-3 < free ** >", model)
    first = program.run(loss, X, Y, state=state, quiet=True)
    made = []
    original = runner.Runner.__init__
    monkeypatch.setattr(runner.Runner, "__init__", lambda self, *a, **k: (made.append(1), original(self, *a, **k))[1])
    again = program.run(loss, X, Y, state=state, quiet=True)
    assert made == [1] and not program._replays
    assert again.loss_history.tobytes() == first.loss_history.tobytes()

def test_keep_best_restores_the_state_with_the_weights(start):
    model, state = start
    program = schedc.compile('seed 3\nbatch 8\neval "m.py:f" every 1 step\noptimizer adam\nphase 12 lr 5e-2 < free **; keep best val.loss >', model)
    res = program.run(loss, X, Y, state=state, quiet=True, validation=(X, Y), metrics=metrics)
    phase = res.phases[0]
    best = int(np.argmin(phase.metrics["loss"]))
    assert phase.best_step == phase.eval_steps[best]
    # the kept model and state give the best evaluation's value again
    np.testing.assert_allclose(metrics(res.model, res.state, X, Y)["loss"], phase.metrics["loss"][best], rtol=1e-5)


def test_a_loss_given_a_state_must_return_one(start):
    model, state = start
    program = schedc.compile(TEXT, model)
    with pytest.raises(TypeError, match=r"was given a model state \(`state=`\) and returned .*expected \(loss, state\)"):
        program.run(lambda m, s, x, y: loss(m, s, x, y)[0], X, Y, state=state, quiet=True)


def test_a_run_with_a_state_resumes_mid_phase_bit_for_bit(start, tmp_path):
    model, state = start
    text = 'seed 3\nbatch 8\neval "m.py:f" every 2 steps\noptimizer adam\nphase 8 epochs lr 1e-2 < free **; keep best val.loss >\nphase 1 epoch lr 1e-3 < free ** >'
    evaluation = dict(validation=(X, Y), metrics=metrics, chunk=2)
    program = schedc.compile(text, model)
    whole = program.run(loss, X, Y, state=state, quiet=True, **evaluation)
    calls = [0]

    def fragile(m, s, x, y):
        def interrupt(_):
            calls[0] += 1
            if calls[0] == 17:  # mid-way through phase 0 (40 steps)
                raise KeyboardInterrupt

        jax.debug.callback(interrupt, x[0, 0])
        return loss(m, s, x, y)

    with pytest.raises(Exception):
        program.run(fragile, X, Y, state=state, quiet=True, checkpoint=tmp_path, checkpoint_every=1, **evaluation)
    resumed = program.run(loss, X, Y, state=state, quiet=True, checkpoint=tmp_path, **evaluation)
    np.testing.assert_array_equal(resumed.loss_history, whole.loss_history)
    np.testing.assert_array_equal(resumed.metrics["loss"], whole.metrics["loss"])
    for got, want in zip(arrays((resumed.model, resumed.state)), arrays((whole.model, whole.state))):
        np.testing.assert_array_equal(got, want)


def test_batched_fits_and_sweeps_refuse_a_model_state(start):
    model, state = start
    program = schedc.compile("batch 8\noptimizer adam\nphase 2 lr $lr < free ** >", model, lr=1e-2)
    with pytest.raises(TypeError, match=r"take no model state .*Program.run\(\.\.\., state=state\)"):
        program.run_batched(loss, X[None], Y[None], state=state)
    with pytest.raises(TypeError, match=r"take no model state"):
        program.sweep(lr=[1e-2, 1e-3]).run(loss, X, Y, state=state)


# ---------------------------------------------------------------- the model function returns (model, state)


def test_a_program_of_a_model_and_its_state_runs_with_that_state(start):
    model, state = start
    program = schedc.compile(TEXT, (model, state))  # as eqx.nn.make_with_state returns them
    assert program.model is model and program.state is state
    assert sorted(program.tree.paths) == sorted(schedc.compile(TEXT, model).tree.paths)  # the state holds no parameter
    own = program.run(loss, X, Y, quiet=True)
    given = schedc.compile(TEXT, model).run(loss, X, Y, state=state, quiet=True)
    np.testing.assert_array_equal(own.loss_history, given.loss_history)
    for got, want in zip(arrays(own.state), arrays(given.state)):
        np.testing.assert_array_equal(got, want)
    with pytest.raises(TypeError, match=r"take no model state"):
        program.run_batched(loss, X[None], Y[None])


def _model_file() -> str:
    """A model file for `schedc run`: this module's Net, loss and metrics, its data, and a model
    function returning `(model, state)`."""
    import inspect

    head = "import equinox as eqx\nimport jax\nimport jax.numpy as jnp\nimport numpy as np\n\n"
    data = "X = np.random.default_rng(1).normal(size=(40, 3)).astype(np.float32)\nY = np.tanh(X @ np.array([1.0, -2.0, 0.5], np.float32)).astype(np.float32)\n\n"
    functions = "\n\n".join(inspect.getsource(f) for f in (Net, batched, loss, metrics))
    entries = (
        "\n\ndef build():\n    return eqx.nn.make_with_state(Net)(jax.random.key(0))\n"
        "\n\ndef data():\n    return X, Y\n"
        "\n\ndef plain(model, state, x, y):  # a stateful loss that returns no state\n    return loss(model, state, x, y)[0]\n"
    )
    return head + data + functions + entries


@pytest.fixture()
def cli_folder(tmp_path):
    (tmp_path / "net.py").write_text(_model_file())
    (tmp_path / "bn.sched").write_text('model "net.py:build"\nloss "net.py:loss"\ndata "net.py:data"\nvalidation "net.py:data"\neval "net.py:metrics" every epoch\n' + TEXT + "\n")
    return tmp_path


def test_schedc_run_trains_a_model_function_returning_model_and_state(cli_folder, capsys, start):
    from schedc.cli import main

    out = cli_folder / "out"
    assert main(["run", str(cli_folder / "bn.sched"), "--out", str(out), "--quiet", "--compile-cache", "none"]) == 0
    model, state = start
    want = schedc.compile(TEXT, model).run(loss, X, Y, state=state, quiet=True, validation=(X, Y), metrics=metrics, eval_every="epoch")
    losses = np.load(out / "losses.npz")["phase_0"]
    np.testing.assert_array_equal(losses, want.loss_history)
    saved = eqx.tree_deserialise_leaves(out / "state.eqx", state)  # the running statistics, saved beside model.eqx
    for got, expected in zip(arrays(saved), arrays(want.state)):
        np.testing.assert_array_equal(got, expected)
    # the model check sees the model's parameters only, not the state's arrays
    assert main(["check", str(cli_folder / "bn.sched"), "--model"]) == 0
    capsys.readouterr()
    # a sweep takes no state: refused before any training, saying why
    (cli_folder / "sweep.sched").write_text((cli_folder / "bn.sched").read_text().replace("lr 1e-2", "lr $lr"))
    assert main(["run", str(cli_folder / "sweep.sched"), "--sweep", "lr=1e-2,1e-3", "--quiet", "--compile-cache", "none"]) == 2
    assert "--sweep takes no model state: the model function returned (model, state)" in capsys.readouterr().err


def test_a_stateful_loss_that_returns_no_state_is_refused_before_training(cli_folder, capsys):
    from schedc.cli import main

    (cli_folder / "plain.sched").write_text((cli_folder / "bn.sched").read_text().replace("net.py:loss", "net.py:plain"))
    assert main(["run", str(cli_folder / "plain.sched"), "--quiet", "--compile-cache", "none"]) == 1
    err = capsys.readouterr().err
    assert "loss `net.py:plain` failed on the model and data: TypeError: the loss was given a model state" in err and "Traceback" not in err
