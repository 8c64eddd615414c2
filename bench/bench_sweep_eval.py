"""Evaluated sweeps: `Program.sweep(...).run(..., metrics=, validation=)` vs a loop of evaluated single runs.

A small MLP regression (512 training rows, 4,096 validation rows, so an evaluation costs about
eight steps' forward passes) with two phases of 400 steps, each evaluating every 50 steps and
keeping its best weights (no stop rule: every setting runs every step); N learning rates. Measured in one process, passes alternating, after one
warm-up pass of each (compiles): the median of the steady passes of

* `sweep`: the evaluated sweep (its chunk vmapped over the settings, evaluating when some setting
  is due);
* `runs`: N evaluated single runs of the same file, one after another;
* `sweep, eval every step`: the sweep evaluating after every step: what the sweep would cost if
  the evaluation's `lax.cond` became a select under vmap (the metrics computed at every step);
* `sweep, no eval`: the sweep without evaluations.

    .venv/bin/python bench/bench_sweep_eval.py            # N = 8, 3 passes
    .venv/bin/python bench/bench_sweep_eval.py --settings 64 --passes 5
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

TEXT = """let base = 0.01
eval "m.py:metrics" every 50 steps
optimizer adam
phase 400 lr base < free **; keep best val.loss >
phase 400 lr base / 10 < free **; keep best val.loss >
"""
PLAIN = """let base = 0.01
optimizer adam
phase 400 lr base < free ** >
phase 400 lr base / 10 < free ** >
"""


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--settings", type=int, default=8)
    ap.add_argument("--passes", type=int, default=3)
    args = ap.parse_args(argv)

    import equinox as eqx
    import jax
    import jax.numpy as jnp
    import numpy as np

    import schedc

    key = jax.random.key(0)
    x = jax.random.normal(key, (512, 16))
    truth = jnp.sin(x @ jnp.linspace(-1.0, 1.0, 16))
    y = truth + 0.1 * jax.random.normal(jax.random.key(1), (512,))
    xv = jax.random.normal(jax.random.key(2), (4096, 16))
    yv = jnp.sin(xv @ jnp.linspace(-1.0, 1.0, 16))
    model = eqx.nn.MLP(16, "scalar", 64, 2, key=jax.random.key(3))

    def loss(m, x, y):
        return jnp.mean((jax.vmap(m)(x) - y) ** 2)

    def metrics(m, x, y):
        return {"loss": jnp.mean((jax.vmap(m)(x) - y) ** 2)}

    rates = [float(r) for r in np.geomspace(1e-3, 3e-2, args.settings)]
    evaluated = dict(metrics=metrics, validation=(xv, yv))

    def sweep(every):
        text = TEXT if every == 50 else TEXT.replace("every 50 steps", f"every {every} steps")
        result = schedc.compile(text, model).sweep(base=rates).run(loss, x, y, **evaluated)
        jax.block_until_ready(result.model)
        return result

    def runs():
        for rate in rates:
            program = schedc.compile(TEXT.replace("let base = 0.01", "let base = $base"), model, base=rate)
            jax.block_until_ready(program.run(loss, x, y, quiet=True, **evaluated).model)

    def plain():
        jax.block_until_ready(schedc.compile(PLAIN, model).sweep(base=rates).run(loss, x, y).model)

    cases = {"sweep": lambda: sweep(50), "runs": runs, "sweep, eval every step": lambda: sweep(1), "sweep, no eval": plain}
    times: dict[str, list[float]] = {name: [] for name in cases}
    for passes in range(args.passes + 1):  # the first pass compiles: not counted
        for name, fn in cases.items():
            t = time.perf_counter()
            fn()
            if passes:
                times[name].append(time.perf_counter() - t)
    steps = sum(int(p.steps_run.sum()) for p in sweep(50).phases)
    print(f"jax {jax.__version__}, {jax.devices()[0].platform}, {args.settings} settings, {steps} steps in all, load {os.getloadavg()[0]:.1f}")
    for name, values in times.items():
        print(f"{name:>24}: median {statistics.median(values):.2f}s  (passes {', '.join(f'{v:.2f}' for v in values)})")
    print(f"runs / sweep: {statistics.median(times['runs']) / statistics.median(times['sweep']):.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
