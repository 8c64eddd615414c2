"""`build_schedule` with `init_value(k, array)` of a large array: the array is bound to a `$placeholder`
(never printed as program text), so building costs what building any schedule costs.

    .venv/bin/python bench/bench_init_value.py [--size 351] [--runs 5]

Prints the median time of `build_schedule` (text, checks, plan; no run), and the length of the
printed program, for a (size x size) init array beside a scalar init.
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax.numpy as jnp
import numpy as np

from schedc import build_schedule, free_in, init_value


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=351)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    n = args.size
    model = {"w": jnp.zeros((n, n)), "b": jnp.zeros(())}
    big = np.random.default_rng(0).normal(size=(n, n)).astype(np.float32)

    def loss(m):
        return jnp.sum(m["w"] ** 2) + m["b"] ** 2

    for label, value in (("scalar", 0.5), (f"{n}x{n} array", big)):
        times = []
        for _ in range(args.runs):
            started = time.perf_counter()
            s = build_schedule(model, loss, [(10, 0.1), (10, 0.1)], {"w": free_in(0, 1) | init_value(1, value), "b": free_in(0)})
            times.append(time.perf_counter() - started)
        print(f"{label:>14}: build_schedule median {1e3 * statistics.median(times):7.2f} ms, program text {len(str(s))} characters")


if __name__ == "__main__":
    main()
