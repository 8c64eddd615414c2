"""Training on an iterable of batches (runtime.stream): generators, lists, grain loaders, the
same losses as on-device minibatches for the same order, passes and exhaustion, read-ahead
handed back, checkpoints of the data position, and the errors bad batches get."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import interrupted_on_call, on_host_devices

import schedc
from schedc.compiler import minibatch
from schedc.runtime.data import DataError
from schedc.plan.batches import Batches, as_batches
from schedc.runtime.stream import DATA_EXHAUSTED

N = 30
X = np.random.default_rng(0).normal(size=(N, 3)).astype(np.float32)
Y = (X @ np.array([1.0, -2.0, 0.5], np.float32) + 0.3).astype(np.float32)
BATCHES = [(X[i : i + 8], Y[i : i + 8]) for i in (0, 8, 16, 22, 4, 12)]  # six distinct batches of 8


def linear():
    return {"w": jnp.zeros(3), "b": jnp.zeros(())}


def mse(m, x, y):
    return jnp.mean((x @ m["w"] + m["b"] - y) ** 2)


def fit(text, batches, loss=mse, **kwargs):
    return schedc.compile(text, linear()).run(loss, batches=batches, quiet=True, **kwargs)


def losses_of(order, text="optimizer sgd\nphase {n} lr 0.05 < free ** >"):
    """The losses of a run fed `order` (a list of batches) through a one-shot iterator."""
    return fit(text.format(n=len(order)), iter(order), chunk=4).loss_history


# ---------------------------------------------------------------- the same training as on the device


def test_streamed_batches_give_the_on_device_losses_for_the_same_order():
    text = "seed 5\nbatch 8\noptimizer sgd\nphase 2 epochs lr 0.05 < free ** >"
    program = schedc.compile(text, linear())
    on_device = program.run(mse, X, Y, quiet=True, chunk=4)
    data_key, _ = minibatch.phase_keys(jax.random.key(5), 0)
    order = []
    for epoch in range(2):  # the permutations the on-device mode draws
        rows = np.asarray(jax.random.permutation(jax.random.fold_in(data_key, epoch), N))
        order += [(X[rows[j * 8 : (j + 1) * 8]], Y[rows[j * 8 : (j + 1) * 8]]) for j in range(3)]
    # `batch 8` holds (every batch has 8 rows); an epoch is 3 batches; chunks of 4 cross epochs
    for source in (iter(order), (lambda: iter(order))):  # a one-shot iterator, a function of a fresh one
        streamed = program.run(mse, batches=Batches(source, per_epoch=3), quiet=True, chunk=4)
        assert streamed.phases[0].steps_run == 6
        np.testing.assert_array_equal(streamed.loss_history, on_device.loss_history)
        np.testing.assert_array_equal(streamed.model["w"], on_device.model["w"])


def test_results_do_not_depend_on_the_chunk_length_or_on_evaluations():
    text = "optimizer sgd\nphase 100 lr 0.05 < free ** >"
    base = fit(text, BATCHES, chunk=4).loss_history
    for chunk in (2, 64, 1000):  # 64: a short first chunk (32 batches), then chunks ending at 64 and 100
        np.testing.assert_array_equal(fit(text, BATCHES, chunk=chunk).loss_history, base)
    evaluated = fit(text, BATCHES, chunk=64, metrics=lambda m, x, y: {"loss": mse(m, x, y)}, validation=(X, Y), eval_every=30)
    np.testing.assert_array_equal(evaluated.loss_history, base)
    assert list(evaluated.eval_steps) == [30, 60, 90]


def test_batches_of_jax_arrays_or_nested_tuples_stream_as_numpy_ones_do():
    """A flat tuple of NumPy arrays takes the reader's fast path; other leaves and trees the general one."""
    text = "optimizer sgd\nphase 12 lr 0.05 < free ** >"
    base = fit(text, BATCHES, chunk=4).loss_history
    as_jax = [tuple(jnp.asarray(a) for a in batch) for batch in BATCHES]
    np.testing.assert_array_equal(fit(text, as_jax, chunk=4).loss_history, base)
    nested = [((x,), y) for x, y in BATCHES]
    np.testing.assert_array_equal(fit(text, nested, loss=lambda m, xs, y: mse(m, xs[0], y), chunk=4).loss_history, base)


def test_bfloat16_batches_stream_as_the_same_arrays_on_the_device_do():
    """numpy reads ml_dtypes' bfloat16 as of kind "V": it is a number all the same."""
    text = "optimizer sgd\nphase 12 lr 0.05 < free ** >"
    half = [tuple(np.asarray(a, jnp.bfloat16) for a in batch) for batch in BATCHES]
    loss = lambda m, x, y: mse(m, x.astype(jnp.float32), y.astype(jnp.float32))  # noqa: E731
    on_device = [tuple(jnp.asarray(a) for a in batch) for batch in half]
    assert half[0][0].dtype.kind == "V"
    np.testing.assert_array_equal(fit(text, half, loss=loss, chunk=4).loss_history, fit(text, on_device, loss=loss, chunk=4).loss_history)


def test_keyword_batches_and_a_generator_function_as_the_source():
    def loss(m, x, y):
        return mse(m, x, y)

    dicts = [{"x": x, "y": y} for x, y in BATCHES]
    res = fit("optimizer sgd\nphase 6 lr 0.05 < free ** >", Batches(lambda: iter(dicts)), loss=loss, chunk=4)
    np.testing.assert_array_equal(res.loss_history, losses_of(BATCHES))


# ---------------------------------------------------------------- passes, epochs, exhaustion


def test_a_re_iterable_source_starts_a_pass_per_epoch_and_per_phase():
    three = BATCHES[:3]
    text = "optimizer sgd\nphase a 4 lr 0.05 < free ** >\nphase b 2 lr 0.05 < free ** >"
    res = fit(text, three, chunk=4)
    assert res.phases[0].steps_per_epoch == 3  # len() of the list
    expected = fit(text, iter(three + three[:1] + three[:2]), chunk=4)  # a, a, a | a again; then b from the start
    np.testing.assert_array_equal(res.loss_history, expected.loss_history)


def test_epochs_count_the_batches_of_one_pass():
    res = fit("optimizer sgd\nphase 2 epochs lr 0.05 < free ** >", BATCHES[:3], chunk=4)
    assert res.phases[0].steps_run == 6
    np.testing.assert_array_equal(res.loss_history, losses_of(BATCHES[:3] * 2))


def test_a_one_shot_iterator_that_runs_out_ends_its_phase_with_a_stop_reason():
    res = fit("optimizer sgd\nphase 8 lr 0.05 < free ** >", iter(BATCHES[:5]), chunk=4)
    assert res.phases[0].steps_run == 5 and res.stop_reasons == [DATA_EXHAUSTED]
    np.testing.assert_array_equal(res.loss_history, losses_of(BATCHES[:5]))


def test_a_phase_after_the_iterator_ran_out_is_an_error_keeping_the_phases_before():
    with pytest.raises(DataError, match=r"phase 1 gets no batch: the one-shot iterator ran out before it \(after 5 batches\)") as err:
        fit("optimizer sgd\nphase 8 lr 0.05 < free ** >\nphase 2 lr 0.05 < free ** >", iter(BATCHES[:5]), chunk=4)
    assert [p.stop_reason for p in err.value.result.phases] == [DATA_EXHAUSTED]


@pytest.mark.parametrize("length", [5, 40], ids=["read-ahead-queued", "read-ahead-blocked"])
def test_batches_read_ahead_by_a_phase_that_stopped_go_back_to_a_one_shot_iterator(length):
    # phase 0 stops after its first step (a loss below 100), its feed having read ahead: a
    # chunk in the queue (and for a long phase, one more waiting for room)
    order = BATCHES * 8
    stopped = fit(f"optimizer sgd\nphase {length} lr 0.05 < free **; stop when loss < 100 >\nphase 5 lr 0.05 < free ** >", iter(order), chunk=4)
    assert [p.steps_run for p in stopped.phases] == [1, 5]
    plain = fit("optimizer sgd\nphase 1 lr 0.05 < free ** >\nphase 5 lr 0.05 < free ** >", iter(order), chunk=4)
    np.testing.assert_array_equal(stopped.loss_history, plain.loss_history)


def test_epochs_of_an_iterable_without_a_length_are_an_error_naming_the_phase():
    text = "optimizer sgd\nphase a 10 lr 0.05 < free ** >\nphase b 2 epochs lr 0.05 < free ** >"
    with pytest.raises(DataError, match=r"phase 1 \(b\) counts in epochs, but the iterable of batches \(generator\) has no length; expected `schedc.Batches\(source, per_epoch=N\)`"):
        fit(text, (b for b in BATCHES))
    with pytest.raises(DataError, match=r"phase 0 counts in epochs"):  # an epoch inside a schedule
        fit("optimizer sgd\nphase 10 lr warmup_cosine(0 -> 0.1 -> 0, 1 epoch) < free ** >", iter(BATCHES))


def test_a_stateful_model_streams_as_it_trains_on_arrays():
    """An eqx.nn.State (BatchNorm statistics) carried through streamed steps: the on-device run's losses and state."""
    import equinox as eqx

    class Net(eqx.Module):
        lin: eqx.nn.Linear
        norm: eqx.nn.BatchNorm

        def __init__(self, key):
            self.lin, self.norm = eqx.nn.Linear(3, 4, use_bias=False, key=key), eqx.nn.BatchNorm(4, axis_name="batch", mode="ema")

        def __call__(self, x, state):
            h, state = self.norm(self.lin(x), state)
            return jnp.sum(h), state

    def loss(model, state, x, y):
        pred, state = jax.vmap(model, axis_name="batch", in_axes=(0, None), out_axes=(0, None))(x, state)
        return jnp.mean((pred - y) ** 2), state

    model, state = eqx.nn.make_with_state(Net)(jax.random.key(0))
    program = schedc.compile("seed 5\nbatch 8\noptimizer sgd\nphase 2 epochs lr 0.01 < free ** >", model)
    on_device = program.run(loss, X, Y, state=state, quiet=True, chunk=4)
    data_key, _ = minibatch.phase_keys(jax.random.key(5), 0)
    order = []
    for epoch in range(2):
        rows = np.asarray(jax.random.permutation(jax.random.fold_in(data_key, epoch), N))
        order += [(X[rows[j * 8 : (j + 1) * 8]], Y[rows[j * 8 : (j + 1) * 8]]) for j in range(3)]
    streamed = program.run(loss, batches=Batches(iter(order), per_epoch=3), state=state, quiet=True, chunk=4)
    np.testing.assert_array_equal(streamed.loss_history, on_device.loss_history)
    assert len(jax.tree_util.tree_leaves(streamed.state)) == len(jax.tree_util.tree_leaves(on_device.state)) > 0
    for a, b in zip(jax.tree_util.tree_leaves(streamed.state), jax.tree_util.tree_leaves(on_device.state)):
        np.testing.assert_array_equal(a, b)


# ---------------------------------------------------------------- bad batches


def _changing(bad):
    yield from BATCHES[:3]
    yield bad


@pytest.mark.parametrize(
    ("bad", "given"),
    [
        ((X[:5], Y[:5]), r"\(float32\[5, 3\], float32\[5\]\)"),
        ((X[:8].astype(np.float64), Y[:8]), r"\(float64\[8, 3\], float32\[8\]\)"),
        ({"x": X[:8], "y": Y[:8]}, r"\{'x': float32\[8, 3\], 'y': float32\[8\]\}"),
    ],
    ids=["shape", "dtype", "structure"],
)
def test_a_batch_that_differs_from_the_first_names_the_phase_the_step_and_both(bad, given):
    text = "optimizer sgd\nphase 2 lr 0.05 < free ** >\nphase 4 lr 0.05 < free ** >"
    with pytest.raises(DataError) as err:
        fit(text, _changing(bad), chunk=4)
    message = str(err.value)
    assert message.startswith("phase 1: the batch for step 1 is ")
    assert __import__("re").search(given, message)
    assert "expected (float32[8, 3], float32[8])" in message
    assert [p.steps_run for p in err.value.result.phases] == [2]  # the completed phase is kept


def test_an_iterator_that_raises_is_a_data_error_naming_the_phase():
    def failing():
        yield BATCHES[0]
        raise OSError("disk gone")

    with pytest.raises(DataError, match=r"phase 0: the iterable of batches raised OSError: disk gone"):
        fit("optimizer sgd\nphase 4 lr 0.05 < free ** >", failing())


def test_a_batch_size_that_disagrees_with_the_file_is_refused():
    with pytest.raises(DataError, match=r"phase 0 has `batch 16` but the batches are \(float32\[8, 3\], float32\[8\]\)"):
        fit("batch 16\noptimizer sgd\nphase 4 lr 0.05 < free ** >", BATCHES)


def test_empty_sources_and_arrays_with_batches_are_refused():
    with pytest.raises(DataError, match="yielded no batch"):
        fit("optimizer sgd\nphase 4 lr 0.05 < free ** >", iter([]))
    with pytest.raises(TypeError, match="not both"):
        schedc.compile("phase 4 lr 0.05 < free ** >", linear()).run(mse, X, Y, batches=BATCHES)


def test_what_counts_as_an_iterable_of_batches():
    assert as_batches((X, Y)) is None and as_batches({"x": X}) is None and as_batches(X) is None and as_batches([X, Y]) is None
    assert as_batches(iter(BATCHES)).one_shot and not as_batches(Batches(BATCHES)).one_shot
    assert Batches(BATCHES).batches_per_epoch == 6 and Batches(iter(BATCHES)).batches_per_epoch is None


def test_across_processes_every_kind_of_source_makes_the_same_collectives(monkeypatch):
    """A stream's collectives do not depend on its own source's kind: one process's generator and
    another's list must not leave the list's process waiting in a gather the other never makes."""
    from schedc.runtime import distributed
    from schedc.runtime.stream import Stream

    gathered = []

    def gather_ints(values):  # two processes that read the same
        gathered.append(list(values))
        return np.asarray([values, values], np.int32)

    monkeypatch.setattr(distributed, "processes", lambda: 2)
    monkeypatch.setattr(distributed, "gather_ints", gather_ints)
    made = {}
    for kind, source in (("list", BATCHES), ("generator", iter(BATCHES))):
        gathered.clear()
        made[kind] = (Stream(Batches(source)).reader.pass_length, len(gathered))
    assert made == {"list": (None, 1), "generator": (None, 1)}


# ---------------------------------------------------------------- grain


class _Rows:
    """A grain data source over (X, Y) (a fixed repr: grain checks it when restoring a state)."""

    def __len__(self):
        return N

    def __getitem__(self, i):
        return X[i], Y[i]

    def __repr__(self):
        return "Rows(30)"


def loader():
    grain = pytest.importorskip("grain.python")  # the `stream` extra (installed by the `test` extra)
    sampler = grain.IndexSampler(N, grain.NoSharding(), shuffle=True, num_epochs=1, seed=0)
    return grain.DataLoader(data_source=_Rows(), sampler=sampler, operations=[grain.Batch(8, drop_remainder=True)], worker_count=0)


GRAIN_RUN = "seed 2\noptimizer sgd\nphase 4 epochs lr 0.05 < free ** >"


@pytest.fixture(scope="module")
def grain_whole():
    return fit(GRAIN_RUN, Batches(loader(), per_epoch=3), chunk=2)


def test_a_grain_data_loader_feeds_its_batches_pass_after_pass(grain_whole):
    batches = list(loader())
    assert len(batches) == 3 and grain_whole.phases[0].steps_run == 12
    np.testing.assert_array_equal(grain_whole.loss_history, losses_of(batches * 4))


def test_a_grain_dataset_with_a_length_counts_its_epochs_itself():
    grain = pytest.importorskip("grain")
    dataset = grain.MapDataset.source(_Rows()).shuffle(seed=0).batch(8, drop_remainder=True)
    res = fit(GRAIN_RUN, dataset, chunk=2)  # no per_epoch: len(dataset) == 3 batches
    assert res.phases[0].steps_run == 12 and res.phases[0].steps_per_epoch == 3
    np.testing.assert_array_equal(res.loss_history, losses_of(list(dataset) * 4))


# ---------------------------------------------------------------- tf.data


def tf_batches():
    """A shuffled, batched tf.data pipeline over (X, Y): 3 batches of 8 per pass (a fresh one each call)."""
    tf = pytest.importorskip("tensorflow")  # the `tfdata` extra (installed by the `test` extra on Linux)
    return tf.data.Dataset.from_tensor_slices((X, Y)).shuffle(N, seed=3).batch(8, drop_remainder=True)


def test_a_tf_data_numpy_iterator_streams_as_a_list_of_the_same_batches_does():
    expected = list(tf_batches().repeat(2).as_numpy_iterator())  # the same pipeline, read beforehand
    assert len(expected) == 6 and not np.array_equal(expected[0][0], expected[3][0])  # the second pass reshuffled
    streamed = fit("optimizer sgd\nphase 2 lr 0.05 < free ** >\nphase 4 lr 0.02 < free ** >", tf_batches().repeat(2).as_numpy_iterator(), chunk=4)
    assert [p.steps_run for p in streamed.phases] == [2, 4]  # a one-shot iterator flows on from phase to phase
    listed = fit("optimizer sgd\nphase 2 lr 0.05 < free ** >\nphase 4 lr 0.02 < free ** >", iter(expected), chunk=4)  # also read once
    np.testing.assert_array_equal(streamed.loss_history, listed.loss_history)


def test_a_tf_data_dataset_re_iterated_per_epoch_gives_the_losses_of_its_passes():
    dataset, twin = tf_batches(), tf_batches()  # twin: what each pass of `dataset` yields, read beforehand
    passes = [list(twin.as_numpy_iterator()) for _ in range(3)]
    assert not np.array_equal(passes[0][0][0], passes[1][0][0])  # each pass reshuffles: the passes differ
    streamed = fit("optimizer sgd\nphase 3 epochs lr 0.05 < free ** >", Batches(dataset.as_numpy_iterator, per_epoch=3), chunk=2)
    assert streamed.phases[0].steps_run == 9
    np.testing.assert_array_equal(streamed.loss_history, losses_of(passes[0] + passes[1] + passes[2]))
    # the dataset itself: re-iterable, its length the batches of a pass; its tf.Tensors read as NumPy
    direct = fit("optimizer sgd\nphase 3 epochs lr 0.05 < free ** >", tf_batches(), chunk=2)
    assert direct.phases[0].steps_per_epoch == 3
    np.testing.assert_array_equal(direct.loss_history, streamed.loss_history)


def _interrupted_at_step_5(text, batches, directory, every=1):
    fragile = interrupted_on_call(mse, 5)  # mid-epoch: step 4 of 12 (pass 1, batch 1)
    with pytest.raises(Exception):
        fit(text, batches, loss=fragile, chunk=2, checkpoint=directory, checkpoint_every=every)


@pytest.mark.parametrize("kind", ["grain", "list"])
def test_a_run_resumed_mid_epoch_sees_the_same_batches(tmp_path, grain_whole, kind):
    source = (lambda: Batches(loader(), per_epoch=3)) if kind == "grain" else (lambda: Batches(list(loader())))
    _interrupted_at_step_5(GRAIN_RUN, source(), tmp_path)
    checkpoint = max(tmp_path.glob("checkpoint-*.json"), key=lambda p: int(p.stem.split("-")[1]))
    # grain's own iterator state is in the checkpoint; a list is iterated anew and skipped ahead
    position = json.loads(checkpoint.read_text())["body"]["in_phase"]["data"]
    assert ("state" in position["chunk"]) == (kind == "grain")
    resumed = fit(GRAIN_RUN, source(), chunk=2, checkpoint=tmp_path)
    assert len(resumed.loss_history) == 12
    np.testing.assert_array_equal(resumed.loss_history, grain_whole.loss_history)
    np.testing.assert_array_equal(resumed.model["w"], grain_whole.model["w"])


@pytest.mark.parametrize("every", [1, 0], ids=["mid-phase", "after-phase"])
def test_a_one_shot_iterator_resumed_skips_the_batches_already_run(tmp_path, every):
    text = "optimizer sgd\nphase 2 lr 0.05 < free ** >\nphase 4 lr 0.05 < free ** >\nphase 6 lr 0.05 < free ** >"
    order = BATCHES * 2
    whole = fit(text, iter(order), chunk=2)
    # in phase 1 (after a completed phase 0), from a checkpoint mid-phase or after phase 0
    _interrupted_at_step_5(text, iter(order), tmp_path, every)
    resumed = fit(text, iter(order), chunk=2, checkpoint=tmp_path)
    np.testing.assert_array_equal(resumed.loss_history, whole.loss_history)


# ---------------------------------------------------------------- schedc run


PROJECT = '''
import jax.numpy as jnp
import numpy as np

rng = np.random.default_rng(0)
X = rng.normal(size=(64, 3)).astype(np.float32)
Y = (X @ np.array([1.0, -2.0, 0.5], np.float32)).astype(np.float32)


def build():
    return {"w": jnp.zeros(3)}


def loss(m, x, y):
    return jnp.mean((x @ m["w"] - y) ** 2)


def batches():  # a generator: read once, never ends
    while True:
        for i in range(0, 64, 8):
            yield X[i : i + 8], Y[i : i + 8]


def changing():
    for i in range(0, 64, 8):
        yield X[i : i + 8], Y[i : i + 8]
    yield X[:4], Y[:4]
'''


def _schedc_run(folder, data, *args):
    import subprocess
    import sys

    (folder / "fit.sched").write_text(f'model "m.py:build"\nloss "m.py:loss"\ndata "m.py:{data}"\noptimizer sgd\nphase a 8 lr 0.1 < free ** >\nphase b 8 lr 0.1 < free ** >\n')
    return subprocess.run([sys.executable, "-m", "schedc", "run", "fit.sched", "--quiet", *args], capture_output=True, text=True, cwd=folder, timeout=300)


def test_schedc_run_streams_the_batches_a_data_function_yields(tmp_path):
    (tmp_path / "m.py").write_text(PROJECT)
    done = _schedc_run(tmp_path, "batches")
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("8/8") == 2 and "completed" in done.stdout
    changed = _schedc_run(tmp_path, "changing", "--out", "out")
    assert changed.returncode == 1 and "Traceback" not in changed.stderr
    assert "error: phase 1 (b): the batch for step 0 is (float32[4, 3], float32[4]); expected (float32[8, 3], float32[8])" in changed.stderr
    assert np.load(tmp_path / "out" / "losses.npz")["phase_0"].shape == (8,)  # the completed phase, saved


def test_schedc_run_refuses_a_sweep_over_batches_before_any_work(tmp_path):
    # a loss that fails when traced: the refusal comes first, before the loss is tried
    (tmp_path / "m.py").write_text(PROJECT + "\n\ndef failing(m, x, y):\n    raise RuntimeError('traced')\n")
    swept = _schedc_run(tmp_path, "batches", "--loss", "m.py:failing", "--sweep", "lr=0.1,0.2")
    assert swept.returncode == 2 and "Traceback" not in swept.stderr
    assert "--sweep needs the data as arrays: the `data` function returned an iterable of batches" in swept.stderr


def test_schedc_run_distributed_streams_each_processs_batches(tmp_path):
    import socket

    (tmp_path / "m.py").write_text(PROJECT)
    with socket.socket() as s:  # a one-process job (tests/test_multihost.py streams over two)
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    spread = _schedc_run(tmp_path, "batches", "--coordinator", f"localhost:{port}", "--num-processes", "1", "--process-id", "0", "--out", "spread")
    assert spread.returncode == 0, spread.stderr
    alone = _schedc_run(tmp_path, "batches", "--out", "alone")
    assert alone.returncode == 0, alone.stderr
    with np.load(tmp_path / "spread" / "losses.npz") as mine, np.load(tmp_path / "alone" / "losses.npz") as reference:
        for name in reference.files:
            np.testing.assert_allclose(mine[name], reference[name], rtol=1e-6)


# ---------------------------------------------------------------- data parallel: batches sharded over a mesh

SHARDED_STREAM = r'''
import json, jax, jax.numpy as jnp, numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P, SingleDeviceSharding
import schedc
from schedc.runtime import stream
from schedc.runtime.data import DataError
assert len(jax.devices()) == 8, jax.devices()
X = np.asarray(jax.random.normal(jax.random.key(0), (512, 16)))
Y = (X @ np.arange(16.0, dtype=np.float32) / 16 + 0.3).astype(np.float32)
TUPLES = [(X[i : i + 64], Y[i : i + 64]) for i in range(0, 512, 64)]
DICTS = [{"x": x, "y": y} for x, y in TUPLES]
seen, sent = [], []  # the sharding of the batch inside the loss; of each stacked chunk sent to the devices
send = stream._ChunkBuffers.send
def spy(self):
    chunk = send(self)
    sent.append([(list(getattr(a.sharding, "spec", ())), len(a.sharding.device_set), a.addressable_shards[0].data.shape) for a in chunk])
    return chunk
stream._ChunkBuffers.send = spy
def loss(m, x, y):
    jax.debug.inspect_array_sharding(x, callback=lambda s: seen.append((type(s).__name__, list(getattr(s, "spec", ())), len(s.device_set))))
    return jnp.mean((x @ m["w"] + m["b"] - y) ** 2)
TEXT = "seed 3\nphase 2 epochs lr 0.02 < free w >\nphase 3 epochs lr 0.05 optimizer sgd(momentum=0.9) < free w, b >"
program = schedc.compile(TEXT, {"w": jnp.zeros(16), "b": jnp.zeros(())})
mesh = Mesh(np.array(jax.devices()), ("data",))
rows, whole = NamedSharding(mesh, P("data")), NamedSharding(mesh, P())
out = {}
out["one"] = program.run(loss, batches=schedc.Batches(TUPLES), quiet=True, chunk=5).loss_history.tolist()
seen.clear(); sent.clear()
out["spread"] = program.run(loss, batches=schedc.Batches(TUPLES, sharding=rows), quiet=True, chunk=5).loss_history.tolist()
out["seen"], out["sent"] = list(seen), list(sent)
def keyword_loss(m, x, y):
    return loss(m, x, y)
sent.clear()
out["dicts"] = program.run(keyword_loss, batches=schedc.Batches(DICTS, sharding={"x": rows, "y": whole}), quiet=True, chunk=5).loss_history.tolist()
out["dicts_sent"] = list(sent)
# interrupted (a SIGINT after the 13th step: the run stops after that chunk) and resumed from its checkpoint
import os, signal, tempfile
calls = [0]
def interrupt(_):
    calls[0] += 1
    if calls[0] == 13:
        os.kill(os.getpid(), signal.SIGINT)
def fragile(m, x, y):
    jax.debug.callback(interrupt, m["b"])
    return loss(m, x, y)
folder = tempfile.mkdtemp()
try:
    program.run(fragile, batches=schedc.Batches(TUPLES, sharding=rows), quiet=True, chunk=5, checkpoint=folder, checkpoint_every=1)
except schedc.runtime.runner.Interrupted:
    out["stopped_after"] = calls[0]
out["resumed"] = program.run(loss, batches=schedc.Batches(TUPLES, sharding=rows), quiet=True, chunk=5, checkpoint=folder).loss_history.tolist()
for name, batches in [("odd", schedc.Batches([(x[:60], y[:60]) for x, y in TUPLES], sharding=rows)),
                      ("kind", schedc.Batches(TUPLES, sharding=SingleDeviceSharding(jax.devices()[0]))),
                      ("axes", schedc.Batches(TUPLES, sharding=NamedSharding(mesh, P(None, "data"))))]:
    try:
        program.run(loss, batches=batches, quiet=True)
    except DataError as err:
        out[name] = str(err)
print(json.dumps(out))
'''


@pytest.fixture(scope="module")
def sharded_stream():
    """The script above on 8 host devices."""
    return on_host_devices(SHARDED_STREAM)


def test_batches_streamed_sharded_over_eight_devices_give_one_devices_losses(sharded_stream):
    assert len(sharded_stream["one"]) == 40  # 5 epochs of 8 batches, over two phases
    # each device sums the loss and gradient of its 8 rows and XLA adds them: the same to rounding
    np.testing.assert_allclose(sharded_stream["spread"], sharded_stream["one"], rtol=1e-5)
    np.testing.assert_allclose(sharded_stream["dicts"], sharded_stream["one"], rtol=1e-5)


def test_a_sharded_stream_interrupted_mid_phase_resumes_with_the_same_losses(sharded_stream):
    # the call holding step 13 ran to its end (calls are paced by time, at most the chunk's 5 steps): mid phase 0's 16
    assert 13 <= sharded_stream["stopped_after"] <= 15
    assert sharded_stream["resumed"] == sharded_stream["spread"]  # bit for bit


def test_streamed_chunks_arrive_sharded_and_each_batch_stays_sharded_in_the_loss(sharded_stream):
    # every stacked chunk: the chunk axis whole, the batch's rows split 8 ways (5 batches of 64 rows: 8 per device)
    assert sharded_stream["sent"] and all(chunk == [[[None, "data"], 8, [5, 8, 16]], [[None, "data"], 8, [5, 8]]] for chunk in sharded_stream["sent"])
    assert sharded_stream["seen"] and all(s == ["NamedSharding", ["data"], 8] for s in sharded_stream["seen"])
    # a pytree of shardings: `x` split by rows, `y` whole on every device
    assert all(chunk == [[[None, "data"], 8, [5, 8, 16]], [[None], 8, [5, 64]]] for chunk in sharded_stream["dicts_sent"])


def test_a_sharding_that_does_not_fit_the_batches_is_an_error_naming_the_phase(sharded_stream):
    assert sharded_stream["odd"] == (
        "phase 0: the batches are (float32[60, 16], float32[60]), but `sharding` splits axis 0 over the 8 devices of mesh axis 'data'; "
        "expected a batch size that is a multiple of 8"
    )
    assert sharded_stream["kind"].startswith("`sharding` holds a SingleDeviceSharding; expected a jax.sharding.NamedSharding")
    assert sharded_stream["axes"] == (
        "phase 0: the batches are (float32[64, 16], float32[64]), but `sharding` P(None, 'data') names 2 axes for the array float32[64]; "
        "expected a PartitionSpec of at most 1 (give a pytree of shardings, one per array, where arrays differ)"
    )
