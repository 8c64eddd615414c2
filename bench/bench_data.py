"""Training on data: schedc's minibatched phases against the same training written by hand, side by side.

The digits MLP (64 -> 128 -> 128 -> 10, scikit-learn's bundled `load_digits`, 1,437 training
images), adam at 1e-3, minibatches of 64 from a fresh permutation per epoch (the remainder
dropped), the same number of steps for all:

* schedc: `batch 64` + `phase STEPS lr 1e-3 < free ** >` (`Program.run`, quiet);
* fused: one hand-written jitted `lax.scan` over the steps, gathering each minibatch on the
  device from the epoch's permutation (the same keys, so the same batch order as schedc);
* tutorial: equinox's tutorial style: an `eqx.filter_jit` step called from a Python loop over
  minibatches sliced on the host from a NumPy permutation;
* schedc+eval / fused+eval: the same with the accuracy on 360 images after every epoch:
  schedc ends a chunk there and evaluates between chunks; the fused loop evaluates inside
  the program under a `lax.cond`.

"steady" is the best of `--repeat` rounds after a first (compiling) one, in one process, the
three taking turns within each round.

    .venv/bin/python bench/bench_data.py              # 3000 steps
    .venv/bin/python bench/bench_data.py --steps 6000 --repeat 9
"""

from __future__ import annotations

import argparse
import time

BATCH = 64


def _setup():
    import equinox as eqx
    import jax
    import jax.numpy as jnp
    import numpy as np
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    order = np.random.default_rng(0).permutation(len(x))
    x, y = (x[order] / 16.0).astype(np.float32)[360:], y[order].astype(np.int32)[360:]
    model = eqx.nn.MLP(64, 10, 128, 2, activation=jax.nn.relu, key=jax.random.key(0))

    def loss(model, x, y):
        logits = jax.vmap(model)(x)
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], axis=1))

    return model, loss, jnp.asarray(x), jnp.asarray(y)


def _metrics(model, x, y):
    import jax
    import jax.numpy as jnp

    return {"accuracy": jnp.mean(jnp.argmax(jax.vmap(model)(x), axis=1) == y)}


def _best_interleaved(fns: dict, repeat: int) -> dict[str, float]:
    """The best time of each function over `repeat` rounds, the functions taking turns within a
    round (so a busy machine slows all of them alike); a first round compiles."""
    for fn in fns.values():
        fn()
    best = {name: float("inf") for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def schedc_run(model, loss, x, y, steps: int, evaluate: bool = False):
    import schedc

    program = schedc.compile("seed 0\nbatch $batch\nphase $steps lr 1e-3 < free ** >", model, batch=BATCH, steps=steps)
    # with `evaluate`: the accuracy on the first 360 images after every epoch, between chunks
    evaluation = dict(metrics=_metrics, validation=(x[:360], y[:360]), eval_every="epoch") if evaluate else {}

    def fit():
        return program.run(loss, x, y, quiet=True, **evaluation)

    return fit


def schedc_eval(model, loss, x, y, steps: int):
    return schedc_run(model, loss, x, y, steps, evaluate=True)


def fused_scan(model, loss, x, y, steps: int, evaluate: bool = False):
    """The loop one would write by hand: lax.scan over steps, the batch gathered on the device
    (with `evaluate`: the accuracy after every epoch inside the program, under a `lax.cond`)."""
    import equinox as eqx
    import jax
    import jax.numpy as jnp
    import optax

    from schedc.compiler.minibatch import phase_keys

    params, static = eqx.partition(model, eqx.is_inexact_array)
    tx = optax.adam(1e-3)
    data_key, _ = phase_keys(jax.random.key(0), 0)
    n, spe = len(x), len(x) // BATCH

    @jax.jit
    def fit(params):
        def step(carry, i):
            params, state, perm = carry
            perm = jax.lax.cond(i % spe == 0, lambda: jax.random.permutation(jax.random.fold_in(data_key, i // spe), n), lambda: perm)
            rows = jax.lax.dynamic_slice_in_dim(perm, (i % spe) * BATCH, BATCH)
            value, grads = jax.value_and_grad(lambda p: loss(eqx.combine(p, static), x[rows], y[rows]))(params)
            updates, state = tx.update(grads, state, params)
            params = optax.apply_updates(params, updates)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    model, loss, x, y = _setup()
    systems = (("schedc", schedc_run), ("fused", fused_scan), ("tutorial", tutorial), ("schedc+eval", schedc_eval), ("fused+eval", fused_eval))
    fns = {name: make(model, loss, x, y, args.steps) for name, make in systems}
    times = _best_interleaved(fns, args.repeat)
    print(f"digits MLP, {args.steps} steps of batch {BATCH}, best of {args.repeat} interleaved rounds after a compiling one")
    print(f"{'':10} {'seconds':>8} {'us/step':>8}")
    for name, seconds in times.items():
        print(f"{name:10} {seconds:8.3f} {1e6 * seconds / args.steps:8.1f}")
    print(f"schedc / fused scan  = {times['schedc'] / times['fused']:.3f}  (target <= 1.05)")
    print(f"tutorial / schedc    = {times['tutorial'] / times['schedc']:.2f}  (target >= 3)")
    epochs = args.steps // (len(x) // BATCH)
    for name in ("schedc", "fused"):
        print(f"{name}: an evaluation every epoch ({epochs}) costs {1e3 * (times[name + '+eval'] - times[name]) / epochs:.2f} ms each ({'between chunks' if name == 'schedc' else 'in the program'})")


if __name__ == "__main__":
    main()
