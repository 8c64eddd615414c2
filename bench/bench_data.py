"""Training on data: schedc's minibatched phases against the same training written by hand, side by side.

Two models on scikit-learn's bundled `load_digits` (1,437 training images): the digits MLP
(64 -> 128 -> 128 -> 10) and a small CNN (conv 3x3 1 -> 8, relu, 2x2 max pool, conv 3x3
8 -> 16, relu, linear 256 -> 10). adam at 1e-3, minibatches of 64 from a fresh permutation per
epoch (the remainder dropped), the same number of steps for all:

* schedc: `batch 64` + `phase STEPS lr 1e-3 < free ** >` (`Program.run`, quiet);
* fused: one hand-written jitted `lax.scan` over the steps, gathering each minibatch on the
  device from the epoch's permutation (the same keys, so the same batch order as schedc);
* tutorial: equinox's tutorial style: an `eqx.filter_jit` step called from a Python loop over
  minibatches sliced on the host from a NumPy permutation;
* with `--eval`, the accuracy on 360 images after every epoch, three ways:
  schedc+eval (schedc evaluates inside its chunk program under a `lax.cond`: compiler.evaluate),
  fused+eval (the hand-written fused loop evaluates inside the program under a `lax.cond`) and
  epochs+eval (hand-written: a jitted scan over one epoch called per epoch, then the jitted
  metrics, read back: the between-chunks design schedc had before, without schedc).

With `--phases`, a multi-phase minibatch schedule on the digits MLP (batch 32: 44 steps per
epoch), alternating which layers train, one epoch per phase, adam at 1e-3:

    repeat 10 < phase 1 epoch < free layers[0].* >; phase 1 epoch < free layers[1].*, layers[2].* > >

three ways: schedc fused (the 20 phases as one compiled program, one call), schedc phase by phase
(`fuse=False`: one chunk call per phase, and its host work) and a hand-written loop (one jitted
`lax.scan` per phase kind, called once per phase from Python, a fresh adam state per phase, the
batches drawn from schedc's (seed, phase, epoch) keys: the same batch order, checked by the
losses). With `--phases --eval`, every phase also evaluates the accuracy on 360 images at its
end (`eval_every="epoch"`: 20 evaluations): schedc fused (the evaluations inside the one
program), phase by phase, and the hand-written loop computing the accuracy at the end of each
phase's program (read back with the losses).

Every system runs once to compile, then `--repeat` rounds, the systems taking turns within each
round (a busy machine slows all of them alike). Reported: each system's best and median time,
and the ratios taken within each round (best, median, worst), so the spread is visible.

    .venv/bin/python bench/bench_data.py                      # MLP and CNN, 3000 steps, 7 rounds
    .venv/bin/python bench/bench_data.py --model mlp --eval --repeat 9
    .venv/bin/python bench/bench_data.py --phases --repeat 15
    .venv/bin/python bench/bench_data.py --phases --eval --repeat 15
    .venv/bin/python bench/bench_data.py --intervals      # compiles of runs differing in the interval
    .venv/bin/python bench/bench_data.py --intervals --by-phase   # the same, phase by phase (fuse=False)
"""

from __future__ import annotations

import argparse
import time

BATCH = 64


def _data():
    import jax.numpy as jnp
    import numpy as np
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    order = np.random.default_rng(0).permutation(len(x))
    x, y = (x[order] / 16.0).astype(np.float32)[360:], y[order].astype(np.int32)[360:]
    return jnp.asarray(x), jnp.asarray(y)


def _cnn(key):
    """A small CNN on the 8x8 digits: conv 1 -> 8, relu, max pool, conv 8 -> 16, relu, linear."""
    import equinox as eqx
    import jax

    k1, k2, k3 = jax.random.split(key, 3)
    return eqx.nn.Sequential(
        [
            eqx.nn.Lambda(lambda x: x.reshape(1, 8, 8)),
            eqx.nn.Conv2d(1, 8, 3, padding=1, key=k1),
            eqx.nn.Lambda(jax.nn.relu),
            eqx.nn.MaxPool2d(2, 2),
            eqx.nn.Conv2d(8, 16, 3, padding=1, key=k2),
            eqx.nn.Lambda(jax.nn.relu),
            eqx.nn.Lambda(lambda x: x.reshape(-1)),
            eqx.nn.Linear(16 * 4 * 4, 10, key=k3),
        ]
    )


def _setup(kind: str = "mlp"):
    import equinox as eqx
    import jax
    import jax.numpy as jnp

    x, y = _data()
    if kind == "mlp":
        model = eqx.nn.MLP(64, 10, 128, 2, activation=jax.nn.relu, key=jax.random.key(0))
    else:
        model = _cnn(jax.random.key(0))

    def loss(model, x, y):
        logits = jax.vmap(model)(x)
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], axis=1))

    return model, loss, x, y


def _metrics(model, x, y):
    import jax
    import jax.numpy as jnp

    return {"accuracy": jnp.mean(jnp.argmax(jax.vmap(model)(x), axis=1) == y)}


def _interleaved(fns: dict, repeat: int, clocks=(time.perf_counter,)) -> dict[str, list]:
    """Each function's time in each of `repeat` rounds, the functions taking turns within a round
    (so a busy machine slows all of them alike); a first round compiles. With several `clocks`,
    each time is a tuple of what each clock measured (wall and CPU time, say)."""
    import gc

    for fn in fns.values():
        fn()
    times = {name: [] for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            gc.collect()
            start = [clock() for clock in clocks]
            fn()
            took = tuple(clock() - t for clock, t in zip(clocks, start))
            times[name].append(took if len(clocks) > 1 else took[0])
    return times


def schedc_run(model, loss, x, y, steps: int, evaluate: bool = False):
    import schedc

    program = schedc.compile("seed 0\nbatch $batch\nphase $steps lr 1e-3 < free ** >", model, batch=BATCH, steps=steps)
    # with `evaluate`: the accuracy on the first 360 images after every epoch, inside the chunk
    evaluation = dict(metrics=_metrics, validation=(x[:360], y[:360]), eval_every="epoch") if evaluate else {}

    def fit():
        return program.run(loss, x, y, quiet=True, **evaluation)

    return fit


def schedc_eval(model, loss, x, y, steps: int):
    return schedc_run(model, loss, x, y, steps, evaluate=True)


def _hand_step(loss, static, tx, x, y):
    """The hand-written loops' training step `(params, state, perm, i) -> (params, state, perm,
    loss)`: a fresh permutation at each epoch's first step (schedc's keys, so its batch order),
    the minibatch gathered on the device, one optax update."""
    import equinox as eqx
    import jax
    import optax

    from schedc.compiler.minibatch import phase_keys

    data_key, _ = phase_keys(jax.random.key(0), 0)
    n, spe = len(x), len(x) // BATCH

    def step(params, state, perm, i):
        perm = jax.lax.cond(i % spe == 0, lambda: jax.random.permutation(jax.random.fold_in(data_key, i // spe), n), lambda: perm)
        rows = jax.lax.dynamic_slice_in_dim(perm, (i % spe) * BATCH, BATCH)
        value, grads = jax.value_and_grad(lambda p: loss(eqx.combine(p, static), x[rows], y[rows]))(params)
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state, perm, value

    return step


def fused_scan(model, loss, x, y, steps: int, evaluate: bool = False):
    """The loop one would write by hand: lax.scan over steps, the batch gathered on the device
    (with `evaluate`: the accuracy after every epoch inside the program, under a `lax.cond`)."""
    import equinox as eqx
    import jax
    import jax.numpy as jnp
    import optax

    params, static = eqx.partition(model, eqx.is_inexact_array)
    tx = optax.adam(1e-3)
    train_step = _hand_step(loss, static, tx, x, y)
    n, spe = len(x), len(x) // BATCH

    @jax.jit
    def fit(params):
        def step(carry, i):
            params, state, perm, value = train_step(*carry, i)
            if evaluate:
                accuracy = jax.lax.cond((i + 1) % spe == 0, lambda: _metrics(eqx.combine(params, static), x[:360], y[:360])["accuracy"], lambda: jnp.float32(jnp.nan))
                return (params, state, perm), (value, accuracy)
            return (params, state, perm), value

        (params, _, _), losses = jax.lax.scan(step, (params, tx.init(params), jnp.zeros(n, jnp.int32)), jnp.arange(steps))
        return params, losses

    def run():
        params_out, losses = fit(params)
        return jax.block_until_ready(losses)

    return run


def fused_eval(model, loss, x, y, steps: int):
    return fused_scan(model, loss, x, y, steps, evaluate=True)


def epochs_eval(model, loss, x, y, steps: int):
    """schedc's evaluation design written by hand: a jitted scan over one epoch's steps called per
    epoch, then the jitted metrics on the model of that moment, its number read back on the host."""
    import equinox as eqx
    import jax
    import jax.numpy as jnp
    import optax

    from schedc.compiler.minibatch import phase_keys

    params, static = eqx.partition(model, eqx.is_inexact_array)
    tx = optax.adam(1e-3)
    train_step = _hand_step(loss, static, tx, x, y)
    data_key, _ = phase_keys(jax.random.key(0), 0)
    n, spe = len(x), len(x) // BATCH

    @jax.jit
    def epoch(params, state, start, length):
        def step(i, carry):
            return train_step(*carry, i)[:3]

        perm = jax.random.permutation(jax.random.fold_in(data_key, start // spe), n)
        params, state, _ = jax.lax.fori_loop(start, start + length, step, (params, state, perm))
        return params, state

    accuracy = jax.jit(lambda p: _metrics(eqx.combine(p, static), x[:360], y[:360])["accuracy"])

    def run():
        p, state, done = params, tx.init(params), 0
        while done < steps:
            length = min(spe, steps - done)
            p, state = epoch(p, state, jnp.int32(done), jnp.int32(length))
            done += length
            if done % spe == 0:
                float(accuracy(p))
        return jax.block_until_ready(p)

    return run


def tutorial(model, loss, x, y, steps: int):
    """equinox's tutorial style: a jitted step in a Python loop over host-sliced minibatches."""
    import equinox as eqx
    import jax
    import numpy as np
    import optax

    tx = optax.adam(1e-3)
    xs, ys = np.asarray(x), np.asarray(y)

    @eqx.filter_jit
    def step(model, state, xb, yb):
        value, grads = eqx.filter_value_and_grad(loss)(model, xb, yb)
        updates, state = tx.update(grads, state, eqx.filter(model, eqx.is_inexact_array))
        return eqx.apply_updates(model, updates), state, value

    def run():
        m, state = model, tx.init(eqx.filter(model, eqx.is_inexact_array))
        rng = np.random.default_rng(0)
        done, losses = 0, []
        while done < steps:
            order = rng.permutation(len(xs))
            for j in range(len(xs) // BATCH):
                if done == steps:
                    break
                rows = order[j * BATCH : (j + 1) * BATCH]
                m, state, value = step(m, state, xs[rows], ys[rows])
                losses.append(value)
                done += 1
        return jax.block_until_ready(losses[-1])

    return run


def _spread(values) -> str:
    """best / median / worst of a list of ratios."""
    import statistics

    return f"{min(values):.3f} / {statistics.median(values):.3f} / {max(values):.3f}"


def measure(kind: str, steps: int, repeat: int, evaluate: bool) -> None:
    import statistics

    model, loss, x, y = _setup(kind)
    systems = [("schedc", schedc_run), ("fused", fused_scan), ("tutorial", tutorial)]
    if evaluate:
        systems += [("schedc+eval", schedc_eval), ("fused+eval", fused_eval), ("epochs+eval", epochs_eval)]
    fns = {name: make(model, loss, x, y, steps) for name, make in systems}
    times = _interleaved(fns, repeat)
    print(f"\ndigits {kind.upper()}, {steps} steps of batch {BATCH}, {repeat} interleaved rounds after a compiling one")
    print(f"{'':12} {'best s':>8} {'median s':>9} {'us/step':>8}")
    for name, ts in times.items():
        print(f"{name:12} {min(ts):8.3f} {statistics.median(ts):9.3f} {1e6 * min(ts) / steps:8.1f}")

    def ratios(a, b):
        return [ta / tb for ta, tb in zip(times[a], times[b])]

    print("per-round ratios (best / median / worst):")
    print(f"  schedc / fused scan = {_spread(ratios('schedc', 'fused'))}  (target <= 1.05)")
    print(f"  tutorial / schedc   = {_spread(ratios('tutorial', 'schedc'))}  (target >= 3)")
    if evaluate:
        epochs = steps // (len(x) // BATCH)
        for name, where in (("schedc", "in the chunk program"), ("fused", "in the program"), ("epochs", "between hand-written epoch calls")):
            base = times["fused" if name == "epochs" else name]
            extra = [1e3 * (t - b) / epochs for t, b in zip(times[name + "+eval"], base)]
            print(f"  {name}+eval: an evaluation every epoch ({epochs}) costs {statistics.median(extra):.2f} ms each (median; {where})")
        print(f"  schedc+eval / fused+eval = {_spread(ratios('schedc+eval', 'fused+eval'))}")


PHASE_BATCH = 32
PHASE_TEXT = """seed 0
batch 32
optimizer adam
repeat 10 <
  phase 1 epoch lr 1e-3 < free layers[0].* >
  phase 1 epoch lr 1e-3 < free layers[1].*, layers[2].* >
>"""
# the flattened MLP's leaves each phase kind trains: layers[0] (weight, bias), then layers[1] and layers[2]
PHASE_LEAVES = ((0, 1), (2, 3, 4, 5))


def hand_phases(model, loss, x, y, evaluate: bool = False):
    """The schedule written by hand: per phase, a jitted scan over its epoch (one program per phase
    kind), a fresh adam state, the minibatch gathered on the device from the permutation keyed by
    (seed, phase, epoch) as schedc keys it; returns every step's loss (with `evaluate`, and the
    accuracy on the first 360 images at each phase's end, computed in its program)."""
    import equinox as eqx
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    from schedc.compiler.minibatch import epoch_permutation, phase_key_pair

    params, static = eqx.partition(model, eqx.is_inexact_array)
    leaves, treedef = jax.tree_util.tree_flatten(params)
    root, tx, n = jax.random.key(0), optax.adam(1e-3), len(x)
    spe = n // PHASE_BATCH

    def program(free_at):
        @jax.jit
        def phase(leaves, index):
            perm = epoch_permutation(phase_key_pair(root, index)[0], 0, n)

            def step(carry, i):
                free, state = carry
                rows = jax.lax.dynamic_slice_in_dim(perm, i * PHASE_BATCH, PHASE_BATCH)

                def of(free):
                    whole = list(leaves)
                    for at, value in zip(free_at, free):
                        whole[at] = value
                    return loss(eqx.combine(jax.tree_util.tree_unflatten(treedef, whole), static), x[rows], y[rows])

                value, grads = jax.value_and_grad(of)(free)
                updates, state = tx.update(grads, state, free)
                return (optax.apply_updates(free, updates), state), value

            free = [leaves[at] for at in free_at]
            (free, _), losses = jax.lax.scan(step, (free, tx.init(free)), jnp.arange(spe))
            leaves = list(leaves)
            for at, value in zip(free_at, free):
                leaves[at] = value
            if evaluate:
                accuracy = _metrics(eqx.combine(jax.tree_util.tree_unflatten(treedef, leaves), static), x[:360], y[:360])["accuracy"]
                return leaves, (losses, accuracy)
            return leaves, losses

        return phase

    programs = [program(free_at) for free_at in PHASE_LEAVES]

    def run():
        current, outputs = list(leaves), []
        for index in range(20):
            current, output = programs[index % 2](current, np.int32(index))
            outputs.append(output)
        if evaluate:
            return np.concatenate([np.asarray(losses) for losses, _ in outputs]), np.asarray([float(a) for _, a in outputs])
        return np.concatenate([np.asarray(losses) for losses in outputs])

    return run


def measure_phases(repeat: int, evaluate: bool = False) -> None:
    import os
    import statistics

    import numpy as np

    import schedc

    model, loss, x, y = _setup("mlp")
    program = schedc.compile(PHASE_TEXT, model)
    # with `evaluate`: the accuracy on the first 360 images at each phase's end (its one epoch)
    evaluation = dict(metrics=_metrics, validation=(x[:360], y[:360]), eval_every="epoch") if evaluate else {}

    def schedc_fit(fuse: bool):
        def fit():
            res = program.run(loss, x, y, quiet=True, fuse=fuse, **evaluation)
            return (res.loss_history, res.metrics["accuracy"]) if evaluate else res.loss_history

        return fit

    fns = {"fused": schedc_fit(True), "by phase": schedc_fit(False), "hand": hand_phases(model, loss, x, y, evaluate)}
    outputs = {name: fn() if evaluate else (fn(), None) for name, fn in fns.items()}
    (fused, accuracy), (by_phase, by_phase_accuracy), (hand, hand_accuracy) = outputs.values()
    steps = len(fused)
    assert fused.tobytes() == by_phase.tobytes() and (not evaluate or accuracy.tobytes() == by_phase_accuracy.tobytes())
    np.testing.assert_allclose(hand, fused, rtol=2e-3, atol=1e-5)  # the same batches, the same work
    if evaluate:
        assert len(accuracy) == 20
        np.testing.assert_allclose(hand_accuracy, accuracy, atol=0.02)  # the same evaluations
    load = os.getloadavg()
    measured = _interleaved(fns, repeat, clocks=(time.perf_counter, time.process_time))
    evaluated = ", the accuracy on 360 images at each phase's end" if evaluate else ""
    print(f"\ndigits MLP, 20 phases x 1 epoch ({steps} steps of batch {PHASE_BATCH}{evaluated}), {repeat} interleaved rounds after a compiling one")
    print(f"load average before: {load[0]:.2f}, after: {os.getloadavg()[0]:.2f} (1 min)")
    for clock, what in ((0, "wall"), (1, "CPU (the process's, all threads: steadier on a shared machine)")):
        times = {name: [t[clock] for t in ts] for name, ts in measured.items()}
        print(f"{what}:\n{'':10} {'best ms':>8} {'median ms':>10} {'us/step':>8}")
        for name, ts in times.items():
            print(f"{name:10} {1e3 * min(ts):8.1f} {1e3 * statistics.median(ts):10.1f} {1e6 * min(ts) / steps:8.1f}")
        print("per-round ratios (best / median / worst):")
        for a, b in (("fused", "hand"), ("by phase", "hand"), ("fused", "by phase")):
            print(f"  {a} / {b} = {_spread([ta / tb for ta, tb in zip(times[a], times[b])])}")


def measure_intervals(fuse: bool = True) -> None:
    """The 20-phase schedule evaluated at three intervals in turn, in one process: the XLA compiles
    (and their time) each run makes (fused, or with `fuse=False` phase by phase); the interval is
    a number of the programs."""
    import os

    import schedc
    from schedc.runtime.runner import CompileClock

    model, loss, x, y = _setup("mlp")
    program = schedc.compile(PHASE_TEXT, model)
    print(f"\ndigits MLP, 20 phases x 1 epoch, evaluated, {'fused' if fuse else 'phase by phase'} (load average {os.getloadavg()[0]:.2f})")
    for every in ("epoch", 22, 11):
        started = time.perf_counter()
        with CompileClock() as clock:
            res = program.run(loss, x, y, quiet=True, metrics=_metrics, validation=(x[:360], y[:360]), eval_every=every, fuse=fuse)
        print(f"  eval_every={every!s:6} {len(res.eval_steps):3d} evaluations: {clock.count} compiles, {clock.seconds:.2f} s compiling, {time.perf_counter() - started:.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--model", choices=("mlp", "cnn", "both"), default="both")
    parser.add_argument("--eval", action="store_true", help="also time an evaluation every epoch, three ways (with --phases: every phase evaluates)")
    parser.add_argument("--phases", action="store_true", help="a 20-phase minibatch schedule: fused, phase by phase, by hand")
    parser.add_argument("--intervals", action="store_true", help="the 20-phase schedule evaluated at three intervals: the compiles of each run")
    parser.add_argument("--by-phase", action="store_true", help="with --intervals: run phase by phase (fuse=False)")
    args = parser.parse_args()
    if args.intervals:
        measure_intervals(fuse=not args.by_phase)
        return
    if args.phases:
        measure_phases(args.repeat, args.eval)
        return
    for kind in ("mlp", "cnn") if args.model == "both" else (args.model,):
        measure(kind, args.steps, args.repeat, args.eval)


if __name__ == "__main__":
    main()
