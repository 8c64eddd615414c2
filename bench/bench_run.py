"""Runtime benchmark: schedc vs a hand-written lax.scan + optax loop vs spectracles, side by side.

Each (system, model) pair runs in a fresh subprocess, so "cold" really is the
first run in a process (tracing and XLA compiles included); "steady" is the best of
three more runs of the same prepared schedule in that process. The same model object (built
from spectracles `Parameter`s when spectracles is installed, plain arrays
otherwise), data, phases and optimizer (adam, constant lr per phase) for all.

    .venv/bin/python bench/bench_run.py            # the table
    .venv/bin/python bench/bench_run.py --repeat 3  # median of 3 processes each

Also measures the compile count of a 10-phase alternating schedule against its
2-phase core (schedc compiles one executable per phase signature).
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import subprocess
import sys
import time

PHASES = [  # (steps, lr, free patterns): realistic lengths, so per-step cost dominates
    (2000, 0.05, ["a.*"]),
    (3000, 0.02, ["**"]),
    (2000, 0.01, ["b.*"]),
]


# ---------------------------------------------------------------- models (one definition for all systems)


def _models(size: str):
    import equinox as eqx
    import jax
    import jax.numpy as jnp

    try:
        from spectracles import Parameter

        def wrap(x):
            return Parameter(initial=x)

    except ImportError:

        def wrap(x):
            return x

    def v(p):
        return p.val if hasattr(p, "val") else p

    class Block(eqx.Module):
        w: object
        c: object

    class Model(eqx.Module):
        a: Block
        b: Block

        def __call__(self, x):
            if size == "small":  # a line plus a Gaussian bump: 4 scalars
                return v(self.a.w) * x + v(self.a.c) + v(self.b.w) * jnp.exp(-0.5 * ((x - v(self.b.c)) / 0.2) ** 2)
            h = jnp.tanh(x @ v(self.a.w) + v(self.a.c))  # an MLP: 16 -> 256 -> 1 (~4.6k parameters)
            return (h @ v(self.b.w) + v(self.b.c))[..., 0]

    k = jax.random.split(jax.random.key(0), 4)
    if size == "small":
        model = Model(Block(wrap(jnp.array(0.1)), wrap(jnp.array(0.0))), Block(wrap(jnp.array(0.5)), wrap(jnp.array(0.1))))
        x = jnp.linspace(-1, 1, 200)
        y = 0.7 * x + 0.2 + 1.5 * jnp.exp(-0.5 * ((x - 0.3) / 0.2) ** 2) + 0.01 * jax.random.normal(k[0], x.shape)
    else:
        model = Model(
            Block(wrap(0.25 * jax.random.normal(k[0], (16, 256))), wrap(jnp.zeros(256))),
            Block(wrap(0.06 * jax.random.normal(k[1], (256, 1))), wrap(jnp.zeros(1))),
        )
        x = jax.random.normal(k[2], (2048, 16))
        y = jnp.sin(x[:, 0]) + x[:, 1] * x[:, 2] + 0.05 * jax.random.normal(k[3], (2048,))

    def loss(m, x, y):
        return jnp.mean((m(x) - y) ** 2)

    return model, loss, (x, y)


# ---------------------------------------------------------------- the three systems


def _sched_text(phases) -> str:
    return "\n".join(f"phase {n} lr {lr} < free {', '.join(free)} >" for n, lr, free in phases)


# Each system: prepare(model, loss, data, phases) -> a function running the whole schedule
# once and returning the final model. "cold" = prepare + first run, "steady" = a second run.


def prepare_schedc(model, loss, data, phases):
    import schedc

    program = schedc.compile(_sched_text(phases), model)
    return lambda: program.run(loss, *data, quiet=True).model


def prepare_hand(model, loss, data, phases):
    """What a careful user writes by hand: per phase, one jitted lax.scan over steps of an optax adam."""
    import jax

    from schedc.lang.glob import compile_pattern
    from schedc.plan.params import discover

    tree = discover(model)
    free_sets = [tuple(p.leaf for p in tree.params if any(compile_pattern(q).match(p.path) for q in free)) for _, _, free in phases]

    def run():
        current = model
        for (n, lr, _), free_leaves in zip(phases, free_sets):
            leaves, treedef = jax.tree_util.tree_flatten(current)
            leaves = _hand_phase(treedef, free_leaves, n, lr, loss, tuple(leaves), *data)
            current = jax.tree_util.tree_unflatten(treedef, list(leaves))
        return current

    return run


@functools.lru_cache(maxsize=None)
def _hand_program(treedef, free_leaves, n, lr, loss):
    import jax
    import optax

    tx = optax.adam(lr)

    @jax.jit
    def phase(leaves, *data):
        def loss_of(free):
            new = list(leaves)
            for i, value in zip(free_leaves, free):
                new[i] = value
            return loss(jax.tree_util.tree_unflatten(treedef, new), *data)

        def step(carry, _):
            free, state = carry
            value, grads = jax.value_and_grad(loss_of)(free)
            updates, state = tx.update(grads, state, free)
            return (optax.apply_updates(free, updates), state), value

        free = tuple(leaves[i] for i in free_leaves)
        (free, _), losses = jax.lax.scan(step, (free, tx.init(free)), None, length=n)
        new = list(leaves)
        for i, value in zip(free_leaves, free):
            new[i] = value
        return tuple(new), losses

    return phase


def _hand_phase(treedef, free_leaves, n, lr, loss, leaves, *data):
    new, _ = _hand_program(treedef, free_leaves, n, lr, loss)(leaves, *data)
    return new


def prepare_spectracles(model, loss, data, phases):
    from spectracles import build_model
    from spectracles.optimise.schedule_builder import build_schedule, fixed_in, free_in

    share = build_model(type(model), model.a, model.b) if not hasattr(model, "model") else model
    patterns = {}
    paths = ["a.w", "a.c", "b.w", "b.c"]
    from schedc.lang.glob import compile_pattern

    for path in paths:
        phases_free = [i for i, (_, _, free) in enumerate(phases) if any(compile_pattern(p).match(path) for p in free)]
        patterns[path] = free_in(*phases_free) if phases_free else fixed_in(*range(len(phases)))
    schedule = build_schedule(share, loss, [(n, lr) for n, lr, _ in phases], patterns)

    def run():
        schedule.run_all(*data)
        return schedule.model_history[-1]

    return run


SYSTEMS = {"schedc": prepare_schedc, "hand": prepare_hand, "spectracles": prepare_spectracles}


def measure(system: str, size: str, phases=PHASES) -> dict:
    """Cold and steady wall time and compile count of one system in this (fresh) process."""
    import jax

    from schedc.runtime.runner import CompileClock

    model, loss, data = _models(size)
    out = {}
    with CompileClock() as clock:
        start = time.perf_counter()
        run = SYSTEMS[system](model, loss, data, phases)
        jax.block_until_ready(jax.tree_util.tree_leaves(run()))
        out["cold"] = time.perf_counter() - start
    out["cold_compiles"] = clock.count
    times = []
    for _ in range(3):
        start = time.perf_counter()
        jax.block_until_ready(jax.tree_util.tree_leaves(run()))
        times.append(time.perf_counter() - start)
    out["steady"] = min(times)
    return out


def compile_counts() -> dict:
    """Executables compiled by schedc for a 2-phase core and for 10 phases alternating it."""
    import schedc
    from schedc.compiler import chunk as C

    model, loss, data = _models("small")
    core = "phase 100 lr 0.05 < free a.* >\nphase 100 lr 0.02 < free b.* >"
    alternating = "repeat 5 <\n  phase 100 lr 0.05 < free a.* >\n  phase 100 lr 0.02 < free b.* >\n>"
    before = C.cache_size()
    schedc.compile(core, model).run(loss, *data, quiet=True)
    core_count = C.cache_size() - before
    schedc.compile(alternating, model).run(loss, *data, quiet=True)
    return {"core_executables": core_count, "alternating_new_executables": C.cache_size() - before - core_count}


def _subprocess(args: list[str]) -> dict:
    out = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--one", nargs=2, metavar=("SYSTEM", "SIZE"), help=argparse.SUPPRESS)
    parser.add_argument("--counts", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--repeat", type=int, default=1, help="processes per measurement (median)")
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(*args.one)))
        return
    if args.counts:
        print(json.dumps(compile_counts()))
        return
    try:
        import spectracles  # noqa: F401

        systems = ["schedc", "hand", "spectracles"]
    except ImportError:
        systems = ["schedc", "hand"]
    import jax

    print(f"device: {jax.devices()[0].platform}; phases: {[(n, lr) for n, lr, _ in PHASES]}; median of {args.repeat} process(es)")
    print(f"{'model':8} {'system':12} {'cold (s)':>9} {'steady (s)':>11} {'compiles':>9} {'cold/hand':>10} {'steady/hand':>12} {'spectracles/schedc cold':>24}")
    for size in ("small", "medium"):
        rows = {}
        for system in systems:
            runs = [_subprocess(["--one", system, size]) for _ in range(args.repeat)]
            rows[system] = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        for system, r in rows.items():
            hand = rows["hand"]
            extra = f"{rows['spectracles']['cold'] / r['cold']:24.2f}" if system == "schedc" and "spectracles" in rows else ""
            print(f"{size:8} {system:12} {r['cold']:9.3f} {r['steady']:11.4f} {r['cold_compiles']:9.0f} {r['cold'] / hand['cold']:10.2f} {r['steady'] / hand['steady']:12.3f} {extra}")
    counts = _subprocess(["--counts"])
    print(f"compile counts: 2-phase core -> {counts['core_executables']} executables; 10-phase alternating adds {counts['alternating_new_executables']}")


if __name__ == "__main__":
    main()
