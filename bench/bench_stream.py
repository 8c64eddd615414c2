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
Times are the best wall time of `--repeat` rounds after a first (compiling) one, in one
process, the two taking turns within each round, and the least CPU time (all threads: the
reader thread's work counts) of those rounds.

    .venv/bin/python bench/bench_stream.py                 # 3000 steps, chunks of 1024
    .venv/bin/python bench/bench_stream.py --steps 6000 --repeat 9 --chunk 512
"""

from __future__ import annotations

import argparse
import time

from bench_data import BATCH, _best_interleaved, _setup


def _wall_and_cpu(fns: dict, repeat: int) -> dict[str, tuple[float, float]]:
    """Per function: the best wall time and the least CPU time (every thread of the process) over
    `repeat` rounds, the functions taking turns within a round; a first round compiles. CPU time
    counts the work done, which other jobs on the machine do not inflate as they do wall time."""
    for fn in fns.values():
        fn()
    best = {name: (float("inf"), float("inf")) for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            wall, cpu = time.perf_counter(), time.process_time()
            fn()
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            best[name] = (min(best[name][0], wall), min(best[name][1], cpu))
    return best


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
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--chunk", type=int, default=None, help="batches per streamed chunk (default: schedc's, as many as fit in 64 MiB, at most 1024)")
    args = parser.parse_args()

    import numpy as np

    import schedc
    from schedc.runtime.stream import Batches, Stream

    model, loss, x, y = _setup()
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

    same = np.array_equal(on_device().loss_history, stream().loss_history)
    measured = _wall_and_cpu({"on-device": on_device, "stream": stream}, args.repeat)
    times = {name: wall for name, (wall, _) in measured.items()}

    def iterate():
        for _ in iter(batches):
            pass

    def feed():  # read, check, stack and put on the device every batch; no training
        reader = Stream(Batches(iter(batches)))
        phase = program.phases[0]
        feed = reader.feed(phase, 0, chunk)
        for start in range(0, phase.steps, chunk):
            arrays, _ = feed.take(start, chunk)
        arrays[0].block_until_ready()
        feed.close()

    alone = _best_interleaved({"iterator": iterate, "feed": feed}, args.repeat)

    print(f"digits MLP, {args.steps} steps of batch {BATCH}, streamed chunks of {chunk}, best of {args.repeat} interleaved rounds after a compiling one")
    print(f"{'':10} {'seconds':>8} {'us/step':>8} {'CPU s':>8}")
    for name, (seconds, cpu) in measured.items():
        print(f"{name:10} {seconds:8.3f} {1e6 * seconds / args.steps:8.1f} {cpu:8.3f}")
    print(f"stream / on-device   = {times['stream'] / times['on-device']:.3f}  (target <= 1.15); same losses: {same}")
    print(f"CPU time, stream / on-device = {measured['stream'][1] / measured['on-device'][1]:.3f}")
    print(f"the streamed chunk loop waited for batches {1e3 * min(waits):.1f} ms (least of the runs; the first chunk's fill included)")
    for name, seconds in alone.items():
        print(f"{name} alone: {args.steps / seconds:,.0f} batches/s")


if __name__ == "__main__":
    main()
