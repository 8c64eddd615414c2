"""Streaming batches from a Python iterator against minibatches drawn on the device, side by side.

The digits MLP of bench_data.py (64 -> 128 -> 128 -> 10, scikit-learn's `load_digits`, 1,437
training images), adam at 1e-3, batches of 64, the same number of steps and the same batches
in the same order for both:

* on-device: `batch 64` + `phase STEPS lr 1e-3 < free ** >`, `Program.run(loss, x, y)`: each
  minibatch gathered inside the compiled loop from the epoch's permutation;
* stream: the same program, `Program.run(loss, batches=iter(preloaded))`: a Python iterator
  over NumPy batches prepared beforehand in that order; a background thread stacks K of them
  per chunk and puts them on the device while the previous chunk runs.

Both runs give the same losses (checked). Beside them, the time the streamed chunk loop waited
for batches (the first chunk's fill, and any chunk the thread had not finished in time), and
the throughput of the iterator alone and of the feed alone (read, check, stack, `device_put`,
no training) in batches per second.
`--repeat` rounds after a first (compiling) one, in one process, the two taking turns within
each round: the best and median wall time, the median CPU time (every thread: the reader
thread's work counts), and the per-round ratios of both.

    .venv/bin/python bench/bench_stream.py                 # 3000 steps, chunks of 1024
    .venv/bin/python bench/bench_stream.py --steps 6000 --repeat 9 --chunk 512 --model cnn
"""

from __future__ import annotations

import argparse
import os
import time

from bench_data import BATCH, _interleaved, _setup, _spread


def _wall_and_cpu(fns: dict, repeat: int) -> dict[str, list[tuple[float, float]]]:
    """Per function, per round: (wall time, CPU time of every thread of the process), the
    functions taking turns within a round; a first round compiles. CPU time counts the work
    done (the reader thread's included), which other jobs on the machine do not inflate."""
    return _interleaved(fns, repeat, clocks=(time.perf_counter, time.process_time))


def preloaded_batches(x, y, steps: int) -> list:
    """The batches the on-device mode draws (seed 0, phase 0), as NumPy arrays, in its order."""
    import jax
    import numpy as np

    from schedc.compiler.minibatch import phase_keys

    data_key, _ = phase_keys(jax.random.key(0), 0)
    xs, ys = np.asarray(x), np.asarray(y)
    spe, batches = len(xs) // BATCH, []
    for epoch in range(-(-steps // spe)):
        order = np.asarray(jax.random.permutation(jax.random.fold_in(data_key, epoch), len(xs)))
        batches += [(xs[order[j * BATCH : (j + 1) * BATCH]], ys[order[j * BATCH : (j + 1) * BATCH]]) for j in range(spe)]
    return batches[:steps]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--model", choices=("mlp", "cnn"), default="mlp")
    parser.add_argument("--chunk", type=int, default=None, help="batches per streamed chunk (default: schedc's, as many as fit in 64 MiB, at most 1024)")
    args = parser.parse_args()

    import statistics

    import numpy as np

    import schedc
    from schedc.runtime.stream import Batches, Stream

    model, loss, x, y = _setup(args.model)
    batches = preloaded_batches(x, y, args.steps)
    program = schedc.compile("seed 0\nbatch $batch\nphase $steps lr 1e-3 < free ** >", model, batch=BATCH, steps=args.steps)
    chunk = args.chunk or Stream(Batches(batches)).default_chunk()

    def on_device():
        return program.run(loss, x, y, quiet=True)

    waits = []  # per streamed run: seconds its chunk loop waited for batches

    def stream():
        runner = program.runner(loss, batches=iter(batches), quiet=True, chunk=chunk)
        result = runner.run(program.model)
        waits.append(runner.stream.waited)
        return result

    load_before = os.getloadavg()[0]  # the machine's load: the ratios' spread depends on it
    same = np.array_equal(on_device().loss_history, stream().loss_history)
    measured = _wall_and_cpu({"on-device": on_device, "stream": stream}, args.repeat)

    def iterate():
        for _ in iter(batches):
            pass

    def feed():  # read, check, stack and put on the device every batch; no training
        phase = program.phases[0]
        feed = Stream(Batches(iter(batches))).feed(phase, 0, chunk)
        step = 0
        while step < phase.steps:
            arrays, n = feed.take(step, chunk)
            step += n
        arrays[0].block_until_ready()
        feed.close()

    alone = _interleaved({"iterator": iterate, "feed": feed}, args.repeat)

    print(f"digits {args.model.upper()}, {args.steps} steps of batch {BATCH}, streamed chunks of {chunk}, {args.repeat} interleaved rounds after a compiling one")
    print(f"load average (1 min) {load_before:.1f} before, {os.getloadavg()[0]:.1f} after")
    print(f"{'':10} {'best s':>8} {'median s':>9} {'us/step':>8} {'CPU s':>8}")
    for name, rounds in measured.items():
        walls, cpus = [w for w, _ in rounds], [c for _, c in rounds]
        print(f"{name:10} {min(walls):8.3f} {statistics.median(walls):9.3f} {1e6 * min(walls) / args.steps:8.1f} {statistics.median(cpus):8.3f}")

    def ratios(index):
        return [s[index] / d[index] for s, d in zip(measured["stream"], measured["on-device"])]

    print("per-round ratios (best / median / worst):")
    print(f"  stream / on-device, wall = {_spread(ratios(0))}  (target <= 1.15); same losses: {same}")
    print(f"  stream / on-device, CPU  = {_spread(ratios(1))}")
    print(f"the streamed chunk loop waited for batches {1e3 * statistics.median(waits):.1f} ms a run (median; the first chunk's {min(32, chunk)} batches included)")
    for name, ts in alone.items():
        print(f"{name} alone: {args.steps / min(ts):,.0f} batches/s")


if __name__ == "__main__":
    main()
