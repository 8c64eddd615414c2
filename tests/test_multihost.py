"""A run across two processes (`jax.distributed`, 4 CPU devices each, gloo collectives on
localhost) gives the losses of one process on one device: data split by rows over the 8 global
devices, a parameter sharded over them, checkpoints written by process 0 alone and resumed by
both, batched fits spread over the processes and a sweep (each run as fused segments, as in one
process), streamed batches (each process reading its share of every batch), and `schedc run
--distributed`.

Each process is a subprocess (the device count and the distributed runtime are fixed when JAX
starts); the reference is one more subprocess with a single device.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

SCRIPT = r'''
import json, os, sys
pid, processes, port, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
import jax
import schedc
if processes > 1:
    schedc.distributed.initialize(f"localhost:{port}", processes, pid)
import jax.numpy as jnp, numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P
from schedc.runtime import checkpoint

writes = []
real_write = checkpoint.atomic_write
checkpoint.atomic_write = lambda path, data: (writes.append(os.path.basename(path)), real_write(path, data))

TEXT = """seed 3
phase 20 lr 0.05 < free w; init w ~ normal(0, 0.1) >
phase 30 lr cosine(0.05 -> 0.005) optimizer sgd(momentum=0.9) < free w, b; stop when loss_change < 1e-9 over 5 after 10 >
phase 12 batch 64 lr 0.01 < free w, b >"""
X = np.asarray(jax.random.normal(jax.random.key(0), (512, 16)))
Y = X @ np.arange(16.0, dtype=np.float32) / 16 + 0.3


def loss(m, x, y):
    return jnp.mean((x @ m["w"] + m["b"] - y) ** 2)


def losses(result):
    return [np.nan_to_num(h, nan=-1.0).tolist() for h in result.phase_losses]


model = {"w": jnp.zeros(16), "b": jnp.zeros(())}
x, y = schedc.distributed.shard_rows(X, Y)  # every device of every process holds 512 / devices rows
found = {"processes": jax.process_count(), "devices": jax.device_count()}
share = 512 // processes  # local=True: each process passes only its own consecutive rows
mine = schedc.distributed.shard_rows(X[pid * share:(pid + 1) * share], local=True)
found["local_rows"] = bool(np.array_equal(schedc.distributed.host_array(mine), X)) and mine.shape == X.shape
found["fused"] = losses(schedc.compile(TEXT, model).run(loss, x, y, quiet=True))

mesh = schedc.distributed.data_mesh()
sharded = jax.device_put(model, {"w": NamedSharding(mesh, P("data")), "b": NamedSharding(mesh, P())})
program = schedc.compile(TEXT, sharded)
folder = os.path.join(out, "checkpoint")
run = program.run(loss, x, y, quiet=True, checkpoint=folder, chunk=8)  # phase by phase, a checkpoint after each
found["checkpointed"] = losses(run)
found["w_devices"] = len(run.model["w"].sharding.device_set)
found["writes"] = len(writes)
found["files"] = sorted(os.listdir(folder))
resumed = program.run(loss, x, y, quiet=True, checkpoint=folder)  # finished: every phase read back from the files
found["resumed"] = losses(resumed)
found["resumed_w"] = schedc.distributed.host_array(resumed.model["w"]).tolist()
found["resumed_w_devices"] = len(resumed.model["w"].sharding.device_set)

XB = np.asarray(jax.random.normal(jax.random.key(1), (8, 64, 16)))  # 8 datasets: one per device
YB = XB @ np.arange(16.0, dtype=np.float32) / 16
two = schedc.compile("phase 30 lr 0.05 < free w, b >\nphase 10 lr 0.01 optimizer sgd < free w >", model)
batched = two.run_batched(loss, *schedc.distributed.shard_rows(XB, YB))
found["batched"], found["batched_compiles"] = losses(batched), [p.compiles for p in batched.phases]
swept = schedc.compile("let rate = 0.01\nphase 30 lr rate < free w, b >\nphase 10 lr rate / 2 < free w >", model)
sweep = swept.sweep(rate=[0.01, 0.03, 0.1]).run(loss, x, y)
found["sweep"], found["sweep_compiles"] = losses(sweep), [p.compiles for p in sweep.phases]
print(json.dumps(found))
'''

STREAM = r'''
import json, os, sys
pid, processes, port, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
import jax
import schedc
if processes > 1:
    schedc.distributed.initialize(f"localhost:{port}", processes, pid)
import jax.numpy as jnp, numpy as np
from schedc.runtime.data import DataError

X = np.asarray(jax.random.normal(jax.random.key(0), (512, 16)))
Y = (X @ np.arange(16.0, dtype=np.float32) / 16 + 0.3).astype(np.float32)
GLOBAL = [(X[i : i + 64], Y[i : i + 64]) for i in range(0, 512, 64)]  # 8 global batches of 64 rows
LAST = pid == processes - 1
TEXT = "seed 3\nphase 2 epochs lr 0.02 < free w >\nphase 3 epochs lr 0.05 optimizer sgd(momentum=0.9) < free w, b >"
program = schedc.compile(TEXT, {"w": jnp.zeros(16), "b": jnp.zeros(())})


def share(count=8, rows=None):
    """This process's share of the first `count` global batches (one process: the batches whole)."""
    rows = rows or 64 // processes
    return [(x[pid * rows : (pid + 1) * rows], y[pid * rows : (pid + 1) * rows]) for x, y in GLOBAL[:count]]


def loss(m, x, y):
    return jnp.mean((x @ m["w"] + m["b"] - y) ** 2)


class Failing:
    """A re-iterable source whose `at`-th read raises (on the last process only)."""

    def __init__(self, batches, at):
        self.batches, self.at, self.reads = batches, at, 0

    def __len__(self):
        return len(self.batches)

    def __iter__(self):
        for batch in self.batches:
            self.reads += 1
            if LAST and self.reads == self.at:
                raise RuntimeError("disk gone")
            yield batch


def fit(source, text=TEXT, **kwargs):
    result = schedc.compile(text, program.model).run(loss, batches=source, quiet=True, chunk=4, **kwargs)
    return [h.tolist() for h in result.phase_losses], result.stop_reasons


def error(source, **kwargs):
    try:
        fit(source, **kwargs)
    except DataError as err:
        return str(err)


found = {}
found["epochs"], _ = fit(share())  # each process's share of the 8 global batches, pass after pass
# the last process's passes are one batch shorter: an epoch is 7 global batches on every process
found["shortest"], _ = fit(share(7) if LAST else share())
# a one-shot iterator ending after 6 batches on the last process: the run's data ends there on every process
found["exhausted"] = fit(iter(share(6) if LAST else share() * 2), "phase 4 lr 0.05 < free w, b >\nphase 12 lr 0.01 < free w, b >")
folder = os.path.join(out, "checkpoint")
found["failed"] = error(Failing(share(), at=13), checkpoint=folder, checkpoint_every=1)  # mid phase 0 (step 12)
checkpoint = max(os.listdir(folder), key=lambda n: int(n.split("-")[1].split(".")[0]) if n.startswith("checkpoint-") else -1)
found["positions"] = len(json.load(open(os.path.join(folder, checkpoint)))["body"]["in_phase"]["data"].get("processes", [None]))
found["resumed"], _ = fit(share(), checkpoint=folder)
# the data position (gathered across processes) is asked for only by the chunks that write a checkpoint
from schedc.runtime import checkpoint as ckpt, stream
calls = {"position": 0, "written": 0}
for cls, name, key in ((stream.Feed, "position", "position"), (ckpt.Checkpointer, "after_chunk", "written")):
    def counted(*args, _real=getattr(cls, name), _key=key, **kwargs):
        calls[_key] += 1
        return _real(*args, **kwargs)
    setattr(cls, name, counted)
fit(share(), checkpoint=os.path.join(out, "every_third"), checkpoint_every=3)  # 4 + 6 chunks: 8 boundaries, 2 writes
found["position_calls"] = calls
if processes > 1:
    found["mismatch"] = error(share(rows=16 if LAST else None))  # the processes' batches differ in shape
    odd = share()
    odd[3] = (odd[3][0][:5], odd[3][1][:5])
    found["odd"] = error(odd if LAST else share())  # the 4th batch of one process differs from its first
print(json.dumps(found))
'''

FAILURES = r'''
import json, os, signal, sys
pid, processes, port, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
import jax
import schedc
schedc.distributed.initialize(f"localhost:{port}", processes, pid)
import jax.numpy as jnp, numpy as np
from schedc.runtime import checkpoint, fused
from schedc.runtime.runner import Interrupted, Runner

LAST = pid == processes - 1
X = np.asarray(jax.random.normal(jax.random.key(0), (256, 16)))
Y = X @ np.arange(16.0, dtype=np.float32) / 16 + 0.3
x, y = schedc.distributed.shard_rows(X, Y)
mine = [(X[i + pid * 32 : i + (pid + 1) * 32], Y[i + pid * 32 : i + (pid + 1) * 32]) for i in range(0, 256, 64)]
model = {"w": jnp.zeros(16), "b": jnp.zeros(())}
program = schedc.compile("seed 3\nphase 40 lr 0.05 < free w, b >\nphase 40 lr 0.01 optimizer sgd(momentum=0.9) < free w, b >", model)


def loss(m, x, y):
    return jnp.mean((x @ m["w"] + m["b"] - y) ** 2)


def error(run):
    """[the kind, the message] of what `run()` raised on this process."""
    try:
        run()
    except (Exception, KeyboardInterrupt) as err:
        return [type(err).__name__, str(err)]


def fit(**kwargs):
    return program.run(loss, x, y, quiet=True, chunk=5, **kwargs)


def signalled(function, call):
    """`function` (a module's or a class's) sending SIGTERM to this process, the last one, at its
    `call`-th call, as `kill -TERM` from outside would: the handler asks the run to stop."""
    calls = []

    def wrapped(*args, **kwargs):
        calls.append(1)
        if LAST and len(calls) == call:
            os.kill(os.getpid(), signal.SIGTERM)
        return function(*args, **kwargs)

    return wrapped


def losses(result):
    return [h.tolist() for h in result.phase_losses]


found = {}
# before the first agreement (the runner's reading of its batches), on the last process only
steps = schedc.compile("phase 8 lr 0.05 < free w, b >", model)
found["empty"] = error(lambda: steps.run(loss, batches=[] if LAST else mine, quiet=True))
found["sharding"] = error(lambda: steps.run(loss, batches=schedc.Batches(mine, sharding="rows" if LAST else None), quiet=True))
# at a phase's start: the last process's metrics function returns another name than the rule reads


def metrics(m, xv, yv):
    return {"rmse" if LAST else "mse": loss(m, xv, yv)}


evaluated = schedc.compile('eval "m.py:f" every 5 steps\nphase 20 lr 0.05 < free w, b; stop when val.mse < 1e-9 >\nphase 20 lr 0.01 < free w >', model)
found["metrics"] = error(lambda: evaluated.run(loss, x, y, metrics=metrics, validation=(X, Y), quiet=True))
# between chunks: process 0 alone fails to write its third checkpoint (a full disk)
real_write = checkpoint.atomic_write


def full_disk(path, data):
    if os.path.basename(path) == "state-3.npz":
        raise OSError(28, "No space left on device")
    real_write(path, data)


checkpoint.atomic_write = full_disk
found["write"] = error(lambda: fit(checkpoint=os.path.join(out, "full"), checkpoint_every=1))
checkpoint.atomic_write = real_write
# at a phase's end: process 0 alone fails to append to the log


class BrokenLog:
    def phase(self, result):
        raise OSError(5, "Input/output error")


found["log"] = error(lambda: fit(logger=BrokenLog()))
# a checkpoint directory the processes do not share: process 0 finds the one written above, process 1 none
found["unshared"] = error(lambda: fit(checkpoint=os.path.join(out, "full" if pid == 0 else "own")))

# SIGTERM to the last process only, in phase 1's third chunk: every process stops at that step, and the
# final checkpoint resumes to the losses of the run never stopped
whole = fit(checkpoint=os.path.join(out, "whole"))
real_absorb = Runner._absorb
Runner._absorb = signalled(real_absorb, 8 + 3)  # (phase 0: 8 chunks of 5 steps)
try:
    fit(checkpoint=os.path.join(out, "stopped"), checkpoint_every=100)
except Interrupted as stop:
    found["stopped"] = [stop.signal, stop.phase, stop.step, len(stop.result.phases)]
Runner._absorb = real_absorb
newest = max((n for n in os.listdir(os.path.join(out, "stopped")) if n.startswith("checkpoint-")), key=lambda n: int(n[11:-5]))
in_phase = json.load(open(os.path.join(out, "stopped", newest)))["body"]["in_phase"]
found["checkpoint_at"] = [in_phase["phase"], in_phase["step0"]]
found["resumed_exactly"] = losses(fit(checkpoint=os.path.join(out, "stopped"))) == losses(whole)
# ... and in a fused segment (both phases one program): after the first call, on every process
real_collect = fused._collect
fused._collect = signalled(real_collect, 1)
found["fused_stopped"] = error(fit)
fused._collect = real_collect
found["after"] = losses(fit())  # the processes still run together
print(json.dumps(found))
'''

SCHED = """model "job.py:model"
loss "job.py:loss"
data "job.py:data"
seed 1
phase 25 lr 0.05 < free w; init w ~ normal(0, 0.1) >
phase 15 batch 32 lr 0.02 optimizer adam < free w, b >
"""

JOB = """import jax, jax.numpy as jnp, numpy as np

def model():
    return {"w": jnp.zeros(8), "b": jnp.zeros(())}

def loss(m, x, y):
    return jnp.mean((x @ m["w"] + m["b"] - y) ** 2)

def data():
    x = np.asarray(jax.random.normal(jax.random.key(2), (256, 8)))
    return x, x @ np.linspace(-1.0, 1.0, 8).astype(np.float32)
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _environment(devices: int | None) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["JAX_PLATFORMS"] = "cpu"
    if devices:
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    return env


def _all(commands: list[tuple[list[str], dict]], timeout: float = 400, status: int = 0) -> list[subprocess.CompletedProcess]:
    """Run the commands at once (a job's processes must all start); each must exit with `status`
    within `timeout` seconds (else fail with its stderr)."""
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for cmd, env in commands]
    outputs = []
    try:
        for proc in procs:
            stdout, stderr = proc.communicate(timeout=timeout)
            assert proc.returncode == status, f"{proc.args}: exit {proc.returncode}\n{stderr[-4000:]}"
            outputs.append(subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    return outputs


def _findings(root, script: str) -> list:
    """(process 0's findings, process 1's, the single process's) from `script`: run as a job of
    two processes of four devices each, and alone on one device."""
    port = str(_free_port())
    job = [([sys.executable, "-c", script, str(i), "2", port, str(root / "job")], _environment(4)) for i in range(2)]
    alone = ([sys.executable, "-c", script, "0", "1", "0", str(root / "alone")], _environment(None))
    return [json.loads(done.stdout.strip().splitlines()[-1]) for done in _all(job + [alone])]


@pytest.fixture(scope="module")
def api_runs(tmp_path_factory):
    return _findings(tmp_path_factory.mktemp("multihost"), SCRIPT)


@pytest.fixture(scope="module")
def failure_runs(tmp_path_factory):
    """(process 0's findings, process 1's) from FAILURES: failures and a signal on one process. A
    process waiting for the other in vain would be stopped by JAX's heartbeat after minutes: the
    timeout fails the test first."""
    port, root = str(_free_port()), tmp_path_factory.mktemp("multihost_failures")
    job = [([sys.executable, "-c", FAILURES, str(i), "2", port, str(root)], _environment(4)) for i in range(2)]
    return [json.loads(done.stdout.strip().splitlines()[-1]) for done in _all(job, timeout=300)]


@pytest.fixture(scope="module")
def stream_runs(tmp_path_factory):
    """For streamed batches."""
    return _findings(tmp_path_factory.mktemp("multihost_stream"), STREAM)


def _same_losses(mine, reference):
    assert [len(h) for h in mine] == [len(h) for h in reference]  # the same stop decisions
    for a, b in zip(mine, reference):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)  # reductions over 8 devices are ordered differently


def test_two_processes_give_the_losses_of_one(api_runs):
    first, second, alone = api_runs
    assert (first["processes"], first["devices"]) == (2, 8)
    assert (alone["processes"], alone["devices"]) == (1, 1)
    for name in ("fused", "checkpointed", "batched", "sweep"):
        assert first[name] == second[name], name  # every process holds the same (replicated) results
        _same_losses(first[name], alone[name])


def test_sweeps_and_batched_fits_run_fused_across_processes(api_runs):
    first, second, alone = api_runs
    # one fused program for both phases, as in one process: the second phase compiles nothing
    assert first["sweep_compiles"] == second["sweep_compiles"] == alone["sweep_compiles"] == [1, 0]
    # (the batched fit's datasets sit on both processes: its first phase also compiles the gathers of their outputs)
    assert first["batched_compiles"][1:] == second["batched_compiles"][1:] == alone["batched_compiles"][1:] == [0]


def test_rows_given_per_process_make_one_global_array(api_runs):
    assert all(found["local_rows"] for found in api_runs)


def test_a_parameter_sharded_over_both_processes_stays_sharded(api_runs):
    first, second, _ = api_runs
    assert first["w_devices"] == second["w_devices"] == 8
    assert first["resumed_w_devices"] == 8  # read back from the checkpoint onto its sharding


def test_checkpoints_are_written_by_process_0_and_read_by_every_process(api_runs):
    first, second, alone = api_runs
    assert first["writes"] > 0 and second["writes"] == 0
    assert first["files"] == second["files"] and "phase-2.npz" in first["files"]
    for found in (first, second):
        assert found["resumed"] == found["checkpointed"]
    assert first["resumed_w"] == second["resumed_w"]
    np.testing.assert_allclose(first["resumed_w"], alone["resumed_w"], rtol=1e-5, atol=1e-7)


def test_schedc_run_distributed_matches_a_single_process_run(tmp_path):
    (tmp_path / "job.py").write_text(JOB)
    (tmp_path / "job.sched").write_text(SCHED)
    port = str(_free_port())
    run = [sys.executable, "-m", "schedc", "run", str(tmp_path / "job.sched"), "--quiet", "--compile-cache", "none"]
    job = [
        (run + ["--out", str(tmp_path / "job"), "--coordinator", f"localhost:{port}", "--num-processes", "2", "--process-id", str(i)], _environment(4))
        for i in range(2)
    ]
    outputs = [done.stdout for done in _all(job + [(run + ["--out", str(tmp_path / "alone")], _environment(None))])]
    assert "final loss" in outputs[0] and "final loss" not in outputs[1]  # process 0 prints the table (gloo prints its own lines)
    assert "saved to" not in outputs[1]
    with np.load(tmp_path / "job" / "losses.npz") as job_losses, np.load(tmp_path / "alone" / "losses.npz") as alone_losses:
        assert sorted(job_losses.files) == sorted(alone_losses.files) == ["phase_0", "phase_1"]
        for name in alone_losses.files:
            np.testing.assert_allclose(job_losses[name], alone_losses[name], rtol=1e-5, atol=1e-7)


def test_distributed_options_go_together_and_a_missing_cluster_is_said(tmp_path):
    (tmp_path / "job.py").write_text(JOB)
    (tmp_path / "job.sched").write_text(SCHED)
    done = subprocess.run(
        [sys.executable, "-m", "schedc", "run", str(tmp_path / "job.sched"), "--coordinator", "localhost:1"],
        env=_environment(None), capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 2
    assert "--coordinator, --num-processes and --process-id go together" in done.stderr and "Traceback" not in done.stderr
    alone = subprocess.run(
        [sys.executable, "-m", "schedc", "run", str(tmp_path / "job.sched"), "--distributed"],
        env=_environment(None), capture_output=True, text=True, timeout=120,
    )
    assert alone.returncode == 2  # no cluster to detect here: said, with what to pass instead
    assert "--coordinator HOST:PORT --num-processes N --process-id I" in alone.stderr and "Traceback" not in alone.stderr


def test_each_process_streams_its_share_of_every_batch(stream_runs):
    first, second, alone = stream_runs  # the single process reads the global batches whole
    for name in ("epochs", "shortest"):
        assert first[name] == second[name], name
        _same_losses(first[name], alone[name])
    assert [len(h) for h in first["epochs"]] == [16, 24]
    assert [len(h) for h in first["shortest"]] == [14, 21]  # epochs of the shortest process's 7 batches


def test_a_one_shot_iterator_running_out_on_one_process_ends_the_phase_on_every_process(stream_runs):
    first, second, alone = stream_runs
    for found in (first, second, alone):
        losses, reasons = found["exhausted"]
        assert reasons == ["completed", "data exhausted"] and [len(h) for h in losses] == [4, 2]
    _same_losses(first["exhausted"][0], alone["exhausted"][0])


def test_a_streamed_run_failing_on_one_process_stops_every_process_and_resumes_from_each_ones_position(stream_runs):
    first, second, alone = stream_runs
    assert first["failed"] == "process 1 failed, so every process stops here: phase 0: the iterable of batches raised RuntimeError: disk gone"
    for found in (second, alone):
        assert found["failed"] == "phase 0: the iterable of batches raised RuntimeError: disk gone"
    assert first["positions"] == 2 and alone["positions"] == 1  # every process's data position, gathered
    for found in (first, second, alone):
        assert found["resumed"] == found["epochs"]


def test_the_data_position_is_gathered_only_for_a_checkpoint_written(stream_runs):
    for found in stream_runs:
        assert found["position_calls"] == {"position": 2, "written": 2}


def test_batches_that_differ_between_processes_are_an_error_on_every_process(stream_runs):
    first, second, _ = stream_runs
    assert first["mismatch"] == second["mismatch"] == (
        "phase 0: the processes read batches of different structures, shapes or dtypes "
        "(process 0: (float32[32, 16], float32[32]); process 1: (float32[16, 16], float32[16])); "
        "expected the same on every process (each reads its share of every global batch)"
    )
    assert second["odd"].startswith("phase 0: the batch for step 3 is (float32[5, 16], float32[5]); expected (float32[32, 16], float32[32])")
    assert first["odd"] == f"process 1 failed, so every process stops here: {second['odd']}"


def _failed_on_one(failure_runs, name: str, failing: int, kind: str = None):
    """The error `name` raised on the failing process, after checking the other raised one naming it with its message."""
    own, other = failure_runs[failing][name], failure_runs[1 - failing][name]
    assert other == [kind or own[0], f"process {failing} failed, so every process stops here: {own[1] if kind is None else f'{own[0]}: {own[1]}'}"]
    return own


def test_a_source_failing_on_one_process_before_any_agreement_stops_every_process(failure_runs):
    assert _failed_on_one(failure_runs, "empty", 1) == ["DataError", "the iterable of batches yielded no batch; expected at least one"]
    kind, message = _failed_on_one(failure_runs, "sharding", 1)
    assert kind == "DataError" and message.startswith("`sharding` holds a str; expected a jax.sharding.NamedSharding")


def test_a_phase_start_failing_on_one_process_stops_every_process(failure_runs):
    kind, message = _failed_on_one(failure_runs, "metrics", 1)
    assert kind == "EvalError" and message.startswith("phase 0 uses `val.mse` but the metrics function returned `val.rmse`")


def test_process_0_failing_to_write_stops_every_process(failure_runs):
    # mid-phase (a checkpoint), at a phase's end (the log): the others raise a ProcessFailed naming process 0
    assert _failed_on_one(failure_runs, "write", 0, kind="ProcessFailed") == ["OSError", "[Errno 28] No space left on device"]
    assert _failed_on_one(failure_runs, "log", 0, kind="ProcessFailed") == ["OSError", "[Errno 5] Input/output error"]


def test_a_checkpoint_directory_the_processes_do_not_share_is_refused_on_every_process(failure_runs):
    for found in failure_runs:
        kind, message = found["unshared"]
        assert kind == "CheckpointError"
        assert message.endswith("process 0 found a checkpoint there and process 1 did not; expected a directory every process shares (each process reads it to resume)")


def test_a_signal_to_one_process_stops_every_process_at_the_same_step_with_a_checkpoint_that_resumes_exactly(failure_runs):
    first, second = failure_runs
    # SIGTERM (15) to process 1 in phase 1's third chunk: both stop after it, at step 15, phase 0 kept
    assert first["stopped"] == second["stopped"] == [15, 1, 15, 1]
    assert first["checkpoint_at"] == [1, 15]
    assert first["resumed_exactly"] and second["resumed_exactly"]
    assert first["fused_stopped"] == second["fused_stopped"] == ["Interrupted", "interrupted in phase 0 at step 0"]
    assert first["after"] == second["after"]


def test_schedc_run_distributed_says_on_every_process_that_the_loss_check_failed_on_one(tmp_path):
    (tmp_path / "job.py").write_text(JOB.replace("def loss(m, x, y):\n", "def loss(m, x, y):\n    if jax.process_index() == 1:\n        raise ValueError('no loss here')\n"))
    (tmp_path / "job.sched").write_text(SCHED)
    port = str(_free_port())
    run = [sys.executable, "-m", "schedc", "run", str(tmp_path / "job.sched"), "--quiet", "--compile-cache", "none"]
    job = [(run + ["--coordinator", f"localhost:{port}", "--num-processes", "2", "--process-id", str(i)], _environment(4)) for i in range(2)]
    first, second = _all(job, timeout=300, status=1)
    own = "loss `job.py:loss` failed on the model and data: ValueError: no loss here"
    assert f"schedc run: {own}" in second.stderr
    assert f"schedc run: process 1 failed, so every process stops here: {own}" in first.stderr
    assert "Traceback" not in first.stderr + second.stderr
