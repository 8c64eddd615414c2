"""Runtime benchmark: schedc vs a hand-written lax.scan + optax loop vs spectracles, side by side.

Each (system, model) pair runs in a fresh subprocess, so "cold" really is the
first run in a process (tracing and XLA compiles included); "steady" is the best of
three more runs of the same prepared schedule in that process. The same model object (built
from spectracles `Parameter`s when spectracles is installed, plain arrays
otherwise), data, phases and optimizer (adam, constant lr per phase) for all.

    .venv/bin/python bench/bench_run.py            # the table
    .venv/bin/python bench/bench_run.py --repeat 3  # median of 3 processes each
    .venv/bin/python bench/bench_run.py --fusion --rounds 15  # fused segments (below)

Also measures the compile count of a 10-phase alternating schedule against its
2-phase core (schedc compiles one executable per phase signature).

`--fusion` measures fused segments, side by side in one process, in interleaved rounds
(each round runs every system once; median and spread over rounds): schedc (fused: after the
warm-up, every run a replay of the kept segment, as any repeated `Program.run`), schedc
phase by phase (`fuse=False`) and the hand-written loop on (1) the alternating schedule
`repeat 50 < phase 20 < free a.* >; phase 20 < free b.* > >` on a 64-parameter model and
(2) the 300/200/100-step spectral schedule on the small model; then the host work per phase
of both runners (and, where phases run one by one, `boundary_cost`), where a fused run of the spectral schedule spends its time (before, in and
after its device call), what a fused phase costs beyond its steps (`phase_cost`: operations per
phase in the compiled program, device time per extra phase) and, each in a fresh process, the
compiles of a `repeat 50` schedule and of its body.

`contract_cost` (`B.contract_cost(201)`) puts beside them a hand loop that reads and checks its
losses before it returns, as `Program.run` must to raise a non-finite loss with its phase and step.

`kernel_table` (`B.kernel_table(30)`) times a hand-written loop per step as XLA's thunks and as one
kernel (compiler/kernel.py) on models and data of growing size; `B.fusion_table(31, kernels=True)`
runs the fusion schedules with and without `schedc.use_kernels`.

`device_cost` (called alone: `B.device_cost(60)`) compares the spectral schedule's fused program
with the hand loop's three programs, device calls alone and whole runs, at 1/100 to 10 times its
step counts; `loss_buffer_cost` runs it at several `chunk`s (a fused call's loss buffer length).

`copy_cost` (`B.copy_cost(401)`) builds the spectral schedule's fused and chunk programs with and
without "fewer copies per step" (docs/runtime.md): copies per step loop, bits, call times.
"""

from __future__ import annotations

import argparse
import functools
import json
import random
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
    if size == "tiny64":  # 64 parameters: two blocks of 2 x 16 basis coefficients on 200 points
        model = Model(Block(wrap(jnp.zeros(16)), wrap(jnp.zeros(16))), Block(wrap(jnp.zeros(16)), wrap(jnp.zeros(16))))
        basis = jax.random.normal(k[0], (64, 200)) / 8.0
        y = jax.random.normal(k[1], (64,)) @ basis

        def loss64(m, basis, y):
            coefficients = jnp.concatenate([v(m.a.w), v(m.a.c), v(m.b.w), v(m.b.c)])
            return jnp.mean((coefficients @ basis - y) ** 2)

        return model, loss64, (basis, y)
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


ALTERNATING_BODY = [(20, 0.01, ["a.*"]), (20, 0.01, ["b.*"])]
ALTERNATING = ALTERNATING_BODY * 50
ALTERNATING_TEXT = "repeat 50 <\n" + _sched_text(ALTERNATING_BODY) + "\n>"
SPECTRAL = [(300, 0.05, ["a.*"]), (200, 0.02, ["**"]), (100, 0.01, ["b.*"])]


# Each system: prepare(model, loss, data, phases) -> a function running the whole schedule
# once and returning the final model. "cold" = prepare + first run, "steady" = a second run.


def prepare_schedc(model, loss, data, phases, text=None, fuse=True, kernels=False):
    import schedc

    program = schedc.compile(text or _sched_text(phases), model)

    def run():
        with schedc.use_kernels(kernels):  # (a row without kernels is the default build, whatever SCHEDC_KERNELS says)
            return program.run(loss, *data, quiet=True, fuse=fuse).model

    return run


def prepare_hand(model, loss, data, phases, checked: bool = False):
    """What a careful user writes by hand: per phase, one jitted lax.scan over steps of an optax adam.

    With `checked`, the loop also does what `Program.run` must before it returns: it reads every
    step's loss to the host and raises, naming the phase and step, at the first one not finite. It
    has no histories, stop rules or progress; it measures what the error contract costs alone."""
    import jax

    free_sets = _free_sets(model, phases)

    def run():
        current, per_phase = model, []
        for (n, lr, _), free_leaves in zip(phases, free_sets):
            leaves, treedef = jax.tree_util.tree_flatten(current)
            leaves, losses = _hand_program(treedef, free_leaves, n, lr, loss)(tuple(leaves), *data)
            current = jax.tree_util.tree_unflatten(treedef, list(leaves))
            per_phase.append(losses)
        if checked:
            _raise_first_nonfinite(per_phase)
        return current

    return run


def _raise_first_nonfinite(per_phase: list) -> None:
    """FloatingPointError at the first non-finite loss of the phases' loss arrays (device arrays,
    each read to the host here, as the run's caller would)."""
    import numpy as np

    from schedc.compiler.chunk import first_nonfinite  # (schedc's own check: one C-level sum first)

    for phase, losses in enumerate(per_phase):
        host = np.asarray(losses)
        if (step := first_nonfinite(host)) is not None:
            raise FloatingPointError(f"phase {phase}, step {step}: the loss is {host[step]}")


def _free_sets(model, phases) -> list[tuple[int, ...]]:
    """Per phase, the indices of its free leaves in the flattened model."""
    from schedc.lang.glob import compile_pattern
    from schedc.plan.params import discover

    tree = discover(model)
    return [tuple(p.leaf for p in tree.params if any(compile_pattern(q).match(p.path) for q in free)) for _, _, free in phases]


def _hand_calls(model, loss, data, phases):
    """The hand loop's device calls alone: its jitted phase programs called in turn on the model's
    leaves (no flatten or unflatten of the model between them, as `prepare_hand`'s run does)."""
    import jax

    leaves, treedef = jax.tree_util.tree_flatten(model)
    programs = [_hand_program(treedef, free, n, lr, loss) for (n, lr, _), free in zip(phases, _free_sets(model, phases))]

    def run():
        current = tuple(leaves)
        for program in programs:
            current, _ = program(current, *data)
        return current

    return run


def _hand_step(treedef, free_leaves, tx, loss, leaves, data):
    """The hand loop's step (traceable): ((free values, optax state)) -> ((new free values, new
    state), the loss), differentiating the free leaves of the model `leaves` alone."""
    import jax
    import optax

    def loss_of(free):
        new = list(leaves)
        for i, value in zip(free_leaves, free):
            new[i] = value
        return loss(jax.tree_util.tree_unflatten(treedef, new), *data)

    def step(carry):
        free, state = carry
        value, grads = jax.value_and_grad(loss_of)(free)
        updates, state = tx.update(grads, state, free)
        return (optax.apply_updates(free, updates), state), value

    return step


@functools.lru_cache(maxsize=None)
def _hand_program(treedef, free_leaves, n, lr, loss):
    import jax
    import optax

    tx = optax.adam(lr)

    @jax.jit
    def phase(leaves, *data):
        step = _hand_step(treedef, free_leaves, tx, loss, leaves, data)
        free = tuple(leaves[i] for i in free_leaves)
        (free, _), losses = jax.lax.scan(lambda carry, _: step(carry), (free, tx.init(free)), None, length=n)
        new = list(leaves)
        for i, value in zip(free_leaves, free):
            new[i] = value
        return tuple(new), losses

    return phase


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


# ---------------------------------------------------------------- fused segments


def _rounds(systems: dict, rounds: int, shuffle: bool = False) -> dict:
    """Interleaved timing: each round runs every system once (after one warm-up run each). With
    `shuffle`, each round in its own order (seeded): a run right after another program's costs
    more than one right after its own (measured: the first of three schedc runs after the hand
    loop's, 5-7% more, whichever `chunk` it had), so a fixed order favours the later systems."""
    import jax

    for run in systems.values():
        jax.block_until_ready(jax.tree_util.tree_leaves(run()))
    times = {name: [] for name in systems}
    names, order = list(systems), random.Random(0)
    for _ in range(rounds):
        if shuffle:
            order.shuffle(names)
        for name in names:
            run = systems[name]
            start = time.perf_counter()
            jax.block_until_ready(jax.tree_util.tree_leaves(run()))
            times[name].append(time.perf_counter() - start)
    return times


def _spread(values) -> str:
    return f"{statistics.median(values):.4g} [{min(values):.4g}, {max(values):.4g}]"


def fusion_table(rounds: int, kernels: bool = False) -> None:
    """schedc fused, schedc phase by phase and the hand-written loop, side by side, every round in
    its own order (`_rounds`' `shuffle`: in a fixed order the hand loop always ran right after the
    phase-by-phase run, whose Python leaves the caches cold, and the fused run after it). With
    `kernels`, both schedc runs again with step loops as one kernel (`schedc.use_kernels`)."""
    cases = [("alternating 100 x 20 steps, 64 parameters", "tiny64", ALTERNATING, ALTERNATING_TEXT), ("spectral 300/200/100 steps, small model", "small", SPECTRAL, None)]
    print(f"wall ms per run: median [min, max] over {rounds} shuffled rounds; ratios are per round")
    for title, size, phases, text in cases:
        model, loss, data = _models(size)
        systems = {"hand": prepare_hand(model, loss, data, phases)}
        for marked in (False, True) if kernels else (False,):
            for fuse in (True, False):
                name = f"schedc {'fused' if fuse else 'phase by phase'}{', kernels' if marked else ''}"
                systems[name] = prepare_schedc(model, loss, data, phases, text, fuse=fuse, kernels=marked)
        times = _rounds(systems, rounds, shuffle=True)
        print(f"\n{title}")
        width = max(map(len, systems))
        for name, ts in times.items():
            ratio = [t / h for t, h in zip(ts, times["hand"])]
            print(f"  {name:{width}} {_spread([t * 1e3 for t in ts]):>28}   / hand {_spread(ratio)}")


def contract_cost(rounds: int) -> None:
    """The spectral schedule (item 3b's) three ways in shuffled rounds: the hand loop, the hand loop
    that also reads and checks its losses before it returns (what `Program.run` must do to raise a
    non-finite loss with its phase and step), and schedc fused: what the error contract costs a
    loop written by hand, and how schedc compares with a hand loop that keeps it."""
    model, loss, data = _models("small")
    systems = {"hand": prepare_hand(model, loss, data, SPECTRAL), "hand, losses checked": prepare_hand(model, loss, data, SPECTRAL, checked=True), "schedc fused": prepare_schedc(model, loss, data, SPECTRAL, None)}
    times = _rounds(systems, rounds, shuffle=True)
    print(f"spectral 300/200/100 steps, small model: wall us per run, and ratios per round, median [min, max] over {rounds} shuffled rounds")
    for name, base in (("hand, losses checked", "hand"), ("schedc fused", "hand"), ("schedc fused", "hand, losses checked")):
        print(f"  {name} / {base}: {_spread([t / b for t, b in zip(times[name], times[base])])}")
    print("  " + ", ".join(f"{name} {statistics.median(ts) * 1e6:.0f}" for name, ts in times.items()))


def kernel_table(rounds: int, steps: int = 300) -> None:
    """Per step, a hand-written phase loop (adam over every parameter, a while loop over `steps`)
    as XLA runs it and as one kernel (`compiler.kernel.while_loop`), side by side in one process,
    on models and data of growing size: where the kernel stops paying is `KERNEL_BYTES`."""
    import jax
    import jax.numpy as jnp
    import optax

    from schedc.compiler import kernel as K

    def programs(model, loss, data):
        leaves, treedef = jax.tree_util.tree_flatten(model)
        free_leaves = _free_sets(model, [(1, 0.1, ["**"])])[0]
        tx = optax.adam(0.01)

        def phase(leaves, *data, kernel):
            hand_step = _hand_step(treedef, free_leaves, tx, loss, leaves, data)

            def step(carry):
                k, free, state, losses = carry
                (free, state), value = hand_step((free, state))
                return k + 1, free, state, losses.at[k].set(value)

            free = tuple(leaves[i] for i in free_leaves)
            carry = (jnp.int32(0), free, tx.init(free), jnp.full((steps,), jnp.nan))
            return K.while_loop(lambda c: c[0] < steps, step, carry, kernel)[1]

        arrays = tuple(leaves)
        return {name: functools.partial(jax.jit(functools.partial(phase, kernel=kernel)), arrays, *data) for name, kernel in (("thunks", False), ("kernel", True))}

    small_model, small_loss, _ = _models("small")
    cases = []
    for points in (200, 1000, 4000, 6000):
        x = jnp.linspace(-1, 1, points)
        cases.append((f"4 scalars, {points} points", small_model, small_loss, (x, jnp.sin(3 * x))))
    cases += [("64 parameters, 64 x 200 basis", *_models("tiny64")), ("MLP 16-256-1, 2048 rows", *_models("mlp"))]
    print(f"us per step ({steps} steps a call): median over {rounds} interleaved calls")
    for title, model, loss, data in cases:
        nbytes = sum(a.size * a.dtype.itemsize for a in jax.tree_util.tree_leaves((model, data)) if hasattr(a, "dtype"))
        try:
            times = _rounds(programs(model, loss, data), rounds)
        except Exception as error:  # the kernel emitter refused the loop (schedc then runs it as thunks)
            print(f"  {title:32} {nbytes / 1024:7.1f} KB   kernel refused: {str(error).splitlines()[0][:60]}")
            continue
        per_step = {name: statistics.median(ts) * 1e6 / steps for name, ts in times.items()}
        print(f"  {title:32} {nbytes / 1024:7.1f} KB   thunks {per_step['thunks']:7.2f}   kernel {per_step['kernel']:7.2f}   ratio {per_step['kernel'] / per_step['thunks']:.2f}")


def host_work(rounds: int) -> None:
    """Host time per phase of the alternating schedule: the run's wall time minus the time spent
    waiting for the device, split by where it goes (fused), or per phase boundary (phase by phase)."""
    import jax

    import schedc
    from schedc.compiler import minibatch, segment
    from schedc.runtime import fused, runner

    model, loss, data = _models("tiny64")
    program = schedc.compile(ALTERNATING_TEXT, model)
    spent: dict[str, float] = {}

    def timed(name, fn):
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            out = fn(*args, **kwargs)
            if name == "device call":
                jax.block_until_ready(out)
            spent[name] = spent.get(name, 0.0) + time.perf_counter() - start
            return out

        return wrapper

    original_compiled, original_absorb = segment.compiled, runner.Runner._absorb
    original_fused = fused._segment_plan, fused._collect, fused._results
    original_start, original_result, original_keys = runner.Runner.start_phase, runner.Runner._phase_result, minibatch.phase_keys

    def compiled(*args):
        program_ = original_compiled(*args)
        program_.call = timed("device call", program_.call) if not hasattr(program_.call, "__wrapped_for_bench__") else program_.call
        program_.call.__wrapped_for_bench__ = True
        return program_

    segment.compiled = compiled
    fused._segment_plan = timed("segment plan (cached)", fused._segment_plan)
    fused._collect = timed("split outputs by phase", fused._collect)
    fused._results = timed("phase results", fused._results)
    for fuse in (True, False):
        if not fuse:  # the phase-by-phase runner: the chunk call, blocked on, is the device's time
            runner.Runner._absorb = timed("device call", lambda self, before, out, *a: original_absorb(self, before, jax.block_until_ready(out), *a))
            runner.Runner.start_phase = timed("phase start (inits, program, opt init)", original_start)
            runner.Runner._phase_result = timed("phase result", original_result)
            minibatch.phase_keys = timed("phase keys", original_keys)
        program.run(loss, *data, quiet=True, fuse=fuse)
        spent.clear()
        start = time.perf_counter()
        for _ in range(rounds):
            program.run(loss, *data, quiet=True, fuse=fuse)
        total = (time.perf_counter() - start) / rounds
        per = {k: v / rounds for k, v in spent.items()}
        host = total - per["device call"]
        phases = len(program.phases)
        print(f"\n{'fused' if fuse else 'phase by phase'}: {total * 1e3:.2f} ms per run, device {per['device call'] * 1e3:.2f} ms, host {host * 1e3:.2f} ms = {host / phases * 1e6:.0f} us per phase")
        for name, seconds in per.items():
            if name != "device call":
                print(f"  {name:26} {seconds / phases * 1e6:7.1f} us per phase")
        spent.clear()
    runner.Runner._absorb, runner.Runner.start_phase, runner.Runner._phase_result, minibatch.phase_keys = original_absorb, original_start, original_result, original_keys
    segment.compiled, (fused._segment_plan, fused._collect, fused._results) = original_compiled, original_fused


def fixed_cost(rounds: int) -> None:
    """Where a fused `Program.run` of the spectral schedule spends its time: host work before the
    device call (a replay's data check), the call's dispatch (it returns before the device is
    done), and the rest: the results built while the device runs (`fused._Foreseen`), the wait,
    and the check after it (one comparison, one sum); beside the hand loop's run."""
    import jax

    import schedc
    from schedc.compiler import segment
    from schedc.runtime import fused

    model, loss, data = _models("small")
    program = schedc.compile(_sched_text(SPECTRAL), model)
    program.run(loss, *data, quiet=True)
    marks = {}
    for compiled in segment._CACHE.values():
        if not hasattr(compiled.call, "__timed_for_fixed_cost__"):
            original = compiled.call

            def call(*args, original=original):
                marks["call"] = time.perf_counter()
                out = original(*args)
                marks["made"] = time.perf_counter()
                return out

            call.__timed_for_fixed_cost__ = True
            compiled.call = call
    held = fused._Foreseen.held

    def timed_held(self):
        marks["waiting"] = time.perf_counter()
        return held(self)

    fused._Foreseen.held = timed_held
    hand = prepare_hand(model, loss, data, SPECTRAL)
    parts = {name: [] for name in ("before the call", "the call's dispatch", "results built (device running)", "the wait, the check, returning", "whole run", "hand loop, whole run")}
    try:
        for _ in range(rounds):
            start = time.perf_counter()
            jax.block_until_ready(jax.tree_util.tree_leaves(program.run(loss, *data, quiet=True).model))
            end = time.perf_counter()
            for name, (a, b) in zip(parts, ((start, marks["call"]), (marks["call"], marks["made"]), (marks["made"], marks["waiting"]), (marks["waiting"], end), (start, end))):
                parts[name].append(b - a)
            start = time.perf_counter()
            jax.block_until_ready(jax.tree_util.tree_leaves(hand()))
            parts["hand loop, whole run"].append(time.perf_counter() - start)
    finally:
        fused._Foreseen.held = held
    print(f"\nspectral 300/200/100, fused Program.run, us: median [min] over {rounds} interleaved runs")
    for name, values in parts.items():
        print(f"  {name:32} {statistics.median(values) * 1e6:8.0f} [{min(values) * 1e6:.0f}]")


def boundary_cost(rounds: int) -> None:
    """Host work per phase boundary where phases run one by one, three ways, on the alternating
    schedule (100 phases of 20 steps, `fuse=False`), all runs interleaved in one process, each
    round in its own order:

    - on top of the hand-written loop (issue 15's definition: host work "on top of the
      hand-written loop's own one dispatch per phase"): per round, (phase-by-phase run - hand
      loop) / 100. The hand loop (`prepare_hand`) dispatches one jitted scan per phase and reads
      nothing back, so this is what schedc adds to a device call per phase: its phase start,
      reading each phase's losses, a wait for the device per phase (its stop reason too where
      its loop can stop early), the result.
    - against the fused run: per round, (phase-by-phase run - fused run) / 100. The fused run
      takes the same steps, with ~2 us of device time and ~25-45 us of host time per phase (see
      `phase_cost`, `host_work`), so this also counts the device call itself, which XLA:CPU makes
      cost ~150-250 us on a 2-core machine (`chunk_call_cost`). (Wall time minus the time
      blocked on the device, `host_work`'s measure, no longer separates them: with every argument
      already on the device, XLA:CPU often runs a chunk inside the dispatching call.)
    - the phase-by-phase run's main thread per phase: its CPU time (`time.thread_time_ns`: not
      the XLA threads', and not time preempted) and the rest of its wall time, off the CPU
      (asleep on a read, or preempted by XLA's threads on this 2-core VM). A process runs in one
      of two regimes, ~10 or ~100-250 us off the CPU per phase (docs/performance.md, "Two
      regimes"), so this line says which one a measurement met.
    - where it goes: main-thread CPU time per phase, in the runner's parts, wrapped here.
    Written against the runner's methods that every build has, so it also runs against an older
    `src` (PYTHONPATH)."""
    import jax

    import schedc
    from schedc.runtime import runner

    model, loss, data = _models("tiny64")
    program = schedc.compile(ALTERNATING_TEXT, model)
    phases = len(program.phases)
    hand = prepare_hand(model, loss, data, ALTERNATING)

    def once(fuse: bool | None) -> tuple[int, int, int]:
        start, cpu, main = time.perf_counter_ns(), time.process_time_ns(), time.thread_time_ns()
        model = hand() if fuse is None else program.run(loss, *data, quiet=True, fuse=fuse).model
        jax.block_until_ready(jax.tree_util.tree_leaves(model))
        return time.perf_counter_ns() - start, time.process_time_ns() - cpu, time.thread_time_ns() - main

    for _ in range(3):
        once(None), once(True), once(False)
    over_hand, wall, cpu, alone_main, alone_off = [], [], [], [], []
    kinds, order = [None, True, False], random.Random(0)
    for _ in range(rounds):
        order.shuffle(kinds)  # (each round in its own order, as `_rounds(shuffle=True)`)
        measured = {kind: once(kind) for kind in kinds}
        (by_hand, _, _), (fused, fused_cpu, _), (alone, alone_cpu, main) = measured[None], measured[True], measured[False]
        over_hand.append((alone - by_hand) / phases / 1e3)
        wall.append((alone - fused) / phases / 1e3)
        cpu.append((alone_cpu - fused_cpu) / phases / 1e3)
        alone_main.append(main / phases / 1e3)
        alone_off.append((alone - main) / phases / 1e3)
    print(f"\nper phase boundary, median [min, max] over {rounds} shuffled rounds, wall us:")
    print(f"  on top of the hand loop's dispatch, (phase by phase - hand) / {phases}: {_spread(over_hand)}")
    print(f"  against the fused run, (phase by phase - fused) / {phases}: {_spread(wall)} (process CPU {_spread(cpu)})")
    print(f"  the phase-by-phase run's main thread per phase: CPU {_spread(alone_main)}, off the CPU {_spread(alone_off)}")

    spent: dict[str, int] = {}

    def timed(name, fn):
        def wrapper(*args, **kwargs):
            start = time.thread_time_ns()
            out = fn(*args, **kwargs)
            spent[name] = spent.get(name, 0) + time.thread_time_ns() - start
            return out

        return wrapper

    originals = runner.Runner._programs, runner.Runner._absorb, runner.Runner.start_phase, runner.Runner._phase_result
    wrapped: dict = {}

    def programs(self, fns):
        init, chunk = originals[0](self, fns)
        if id(fns) not in wrapped:  # (one wrapper per program: caches keyed by the function see one)
            wrapped[id(fns)] = (fns, timed("optimizer init call", init), timed("chunk call", chunk))
        return wrapped[id(fns)][1:]

    def absorb(self, before, out, *args):
        timed("waiting for the chunk", jax.block_until_ready)(out)
        return timed("reading its outputs", originals[1])(self, before, out, *args)

    runner.Runner._programs, runner.Runner._absorb = programs, absorb
    runner.Runner.start_phase = timed("phase start (all)", originals[2])
    runner.Runner._phase_result = timed("phase result", originals[3])
    try:
        once(False)
        runs = []
        for _ in range(rounds):
            spent.clear()
            start = time.thread_time_ns()
            once(False)
            spent["whole run"] = time.thread_time_ns() - start
            runs.append(dict(spent))
    finally:
        runner.Runner._programs, runner.Runner._absorb, runner.Runner.start_phase, runner.Runner._phase_result = originals
    print(f"main-thread CPU per phase, phase by phase, median over {rounds} runs (us):")
    for name in runs[0]:
        print(f"  {name:26} {statistics.median(r.get(name, 0) for r in runs) / phases / 1e3:7.1f}")
    print("  (the rest of `whole run`: the runner's own loop, the write-back of the free values, the model's flattening)")


def chunk_call_cost(calls: int) -> None:
    """Where the fixed cost of a phase-by-phase chunk call goes (most of `boundary_cost`): the
    alternating schedule's chunk called alone on its own arguments (0 and 20 steps) against four
    toy `lax.while_loop` programs, each call blocked on, in interleaved blocks; wall us per call,
    median [min]. The toys separate XLA:CPU's two decisions per call (xla/pjrt/cpu, xla/backends/cpu/runtime):
    - inline or not: a program whose cost analysis counts under 1000 flops (a while loop's body
      counted once) runs in the calling thread; any other is handed to a worker thread, which
      the caller then waits for;
    - sequential or not: the thunk executor runs the entry computation's operations one after
      another if there are at most 8 of them or all their buffers hold at most 512 bytes, else
      on the intra-op thread pool. Every parameter a loop carries is copied into its state (the
      caller keeps its arrays): one operation each, so a chunk's entry runs concurrently."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    model, loss, data = _models("tiny64")
    chunk, args = _first_chunk_call()
    idle = args[:5] + (jax.device_put(np.int32(0)),) + args[6:]

    def toy(carried: int, buffer: bool, matmul: bool):
        basis, y = data

        def body(c):
            k, xs, log = c
            loss = jnp.mean((jnp.concatenate(xs[:4]) @ basis - y) ** 2) if matmul else xs[0].sum()
            return k + 1, tuple(x * 0.99 + loss for x in xs), log.at[k].set(loss) if buffer else log

        def f(xs, n):
            log = jnp.full((16384,), jnp.nan) if buffer else jnp.zeros(1)
            return jax.lax.while_loop(lambda c: c[0] < n, body, (jnp.int32(0), xs, log))

        return jax.jit(f), (tuple(jnp.ones(16) + i for i in range(carried)), jax.device_put(np.int32(20)))

    cases = {
        "the chunk, 0 steps": (chunk, idle),
        "the chunk, 20 steps": (chunk, args),
        "toy: inline, sequential (4 carried, no buffer, no matmul)": toy(4, False, False),
        "toy: inline, concurrent (9 carried, a 16384 buffer)": toy(9, True, False),
        "toy: worker, sequential (4 carried, no buffer, a matmul)": toy(4, False, True),
        "toy: worker, concurrent (9 carried, a buffer, a matmul)": toy(9, True, True),
    }
    times = {name: [] for name in cases}
    for _ in range(3):
        for fn, call_args in cases.values():
            jax.block_until_ready(fn(*call_args))
    for _ in range(max(1, calls // 50)):
        for name, (fn, call_args) in cases.items():
            for _ in range(50):
                start = time.perf_counter_ns()
                jax.block_until_ready(fn(*call_args))
                times[name].append((time.perf_counter_ns() - start) / 1e3)
    print(f"\nwall us per call, median [min] over {len(times[name])} calls:")
    for name, values in times.items():
        print(f"  {name:58} {statistics.median(values):7.1f} [{min(values):.1f}]")


def _first_chunk_call(text: str = ALTERNATING_TEXT, size: str = "tiny64"):
    """(the phase-by-phase chunk program of `text`'s first phase on the `size` model, the arguments
    the runner called it with)."""
    import schedc
    from schedc.runtime import runner

    model, loss, data = _models(size)
    program = schedc.compile(text, model)
    seen = {}
    original = runner.Runner._programs

    def programs(self, fns):
        init, chunk = original(self, fns)
        return init, lambda *args: (seen.setdefault("call", (chunk, args)), chunk(*args))[1]

    runner.Runner._programs = programs
    try:
        program.run(loss, *data, quiet=True, fuse=False)
    finally:
        runner.Runner._programs = original
    return seen["call"]


def phase_by_phase(runs: int, wait: float = 0.0) -> None:
    """The alternating schedule run phase by phase (`fuse=False`) `runs` times after a warm-up,
    nothing else: a workload to record with a profiler. After the warm-up it prints the main
    thread's id and waits `wait` seconds, for a profiler to attach to that thread alone (e.g.
    where it sleeps: `perf record -e sched:sched_switch --call-graph dwarf -t <id>`)."""
    import threading

    import jax

    import schedc

    model, loss, data = _models("tiny64")
    program = schedc.compile(ALTERNATING_TEXT, model)
    for _ in range(3):
        program.run(loss, *data, quiet=True, fuse=False)
    print(f"main thread {threading.get_native_id()}", flush=True)
    time.sleep(wait)
    start = time.perf_counter()
    for _ in range(runs):
        jax.block_until_ready(jax.tree_util.tree_leaves(program.run(loss, *data, quiet=True, fuse=False).model))
    print(f"{(time.perf_counter() - start) / runs / len(program.phases) * 1e6:.1f} us wall per phase")


def reads_behind_cost(rounds: int) -> None:
    """`boundary_cost`'s two measures with the phases read one behind (`Runner._reads_behind`) and
    each read at once (`Runner.READS_BEHIND = False`), all four runs interleaved in one process,
    each round in its own order (`_rounds(shuffle=True)`): the lever alone, free of the noise
    between processes."""
    import schedc
    from schedc.runtime.runner import Runner

    model, loss, data = _models("tiny64")
    program = schedc.compile(ALTERNATING_TEXT, model)
    phases = len(program.phases)

    def alone(behind: bool):
        def run():
            Runner.READS_BEHIND = behind
            try:
                return program.run(loss, *data, quiet=True, fuse=False).model
            finally:
                Runner.READS_BEHIND = True

        return run

    systems = {"hand": prepare_hand(model, loss, data, ALTERNATING), "fused": lambda: program.run(loss, *data, quiet=True).model, "read behind": alone(True), "read at once": alone(False)}
    times = _rounds(systems, rounds, shuffle=True)
    print(f"\nper phase boundary, median [min, max] over {rounds} rounds in one process, wall us:")
    for name in ("read behind", "read at once"):
        over_hand = [(t - h) / phases * 1e6 for t, h in zip(times[name], times["hand"])]
        over_fused = [(t - f) / phases * 1e6 for t, f in zip(times[name], times["fused"])]
        print(f"  {name:13} (phase by phase - hand) / {phases}: {_spread(over_hand)}; (phase by phase - fused) / {phases}: {_spread(over_fused)}")


def boundary_levers(rounds: int) -> None:
    """What the levers on an unfused boundary could give, measured on the chunk program alone:
    100 calls of the alternating schedule's phase chunk (20 steps each) chained as phases chain
    them, against the hand-written loop's 100 phases, interleaved; wall us per phase.

    - no reads: the calls alone, the next dispatched on the last one's outputs (what a phase
      costs with no host work at all: the device call and XLA:CPU's hand-offs);
    - donated: the same program with its carried state (free values, optimizer and stop state)
      donated, so that XLA:CPU runs its loop in the arguments' buffers (no copy of each into the
      loop: the entry has 5 operations, so it runs sequentially, not over the intra-op pool);
      and with the copy a phase needs first (its arrays are shared: the last phase's model, a
      kept fresh state), one jitted copy of the carried tree per call;
    - with reads: each call's done count, stop reason and losses read before the next call (the
      runner's wait per phase), or read one call behind (dispatch phase k+1, then read phase k),
      with 150 us of host work per phase (about the runner's Python) in both, to see how much of
      it the overlap hides."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    chunk, args = _first_chunk_call()
    donating = jax.jit(chunk.__wrapped__, donate_argnums=(0, 1, 2))
    copies = jax.jit(lambda tree: jax.tree_util.tree_map(jnp.copy, tree))
    model, loss, data = _models("tiny64")
    hand = prepare_hand(model, loss, data, ALTERNATING)
    phases = len(ALTERNATING)

    def host_work(us: int = 150):
        end = time.thread_time_ns() + us * 1000
        while time.thread_time_ns() < end:
            pass

    def read(out):
        return int(np.asarray(out[2]["done"])), int(np.asarray(out[2]["reason"])), np.asarray(out[3])

    def chained(program, copy: bool = False, reads: str | None = None):
        def run():
            carried, behind = tuple(copies(args[:3])) if program is donating else args[:3], None
            for _ in range(phases):
                if copy:
                    carried = copies(carried)
                if reads is not None:
                    host_work()
                out = program(*carried, *args[3:])
                if reads == "each":
                    read(out)
                elif reads == "behind" and behind is not None:
                    read(behind)
                carried, behind = out[:3], out
            read(out)

        return run

    cases = {
        "hand-written loop": lambda: jax.block_until_ready(jax.tree_util.tree_leaves(hand())),
        "chunk calls, no reads": chained(chunk),
        "donated, no reads": chained(donating),
        "donated + a copy per call, no reads": chained(donating, copy=True),
        "host work 150 us + chunk call + read": chained(chunk, reads="each"),
        "host work 150 us + chunk call, read one behind": chained(chunk, reads="behind"),
    }
    times = _rounds(cases, rounds)
    print(f"\nwall us per phase ({phases} chained calls), median [min, max] over {rounds} interleaved rounds:")
    for name, ts in times.items():
        print(f"  {name:48} {_spread([t / phases * 1e6 for t in ts])}")


def _segment_program(text: str, size: str):
    """(the compiled fused program of `text` on the `size` model, the arguments of its call)."""
    import schedc
    from schedc.compiler import segment

    model, loss, data = _models(size)
    segment._CACHE.clear()  # (so that the one program cached is this schedule's)
    program = schedc.compile(text, model)
    program.run(loss, *data, quiet=True)
    (compiled,) = segment._CACHE.values()
    call, seen = compiled.call, {}
    compiled.call = lambda *args: (seen.setdefault("args", args), call(*args))[1]
    program.run(loss, *data, quiet=True)
    compiled.call = call
    return call.lower(*seen["args"]).compile(), seen["args"]


# HLO instructions that are no work of their own
_NO_WORK = {"parameter", "get-tuple-element", "tuple", "constant", "bitcast"}
_BYTES = {"f64": 8, "s64": 8, "u64": 8, "f32": 4, "s32": 4, "u32": 4, "f16": 2, "bf16": 2, "pred": 1, "s8": 1, "u8": 1}


def phase_ops(hlo: str) -> tuple[int, int, int]:
    """(operations, copies, bytes copied) in one iteration of a fused program's loop over phases,
    besides the phase's steps, from its optimized HLO (`.compile().as_text()`): a fusion counts
    one, a step loop (a while holding no while) one, a conditional one plus its costliest branch,
    and the run-at-most-once loops of `segment._one_of` (whiles holding a step loop) one each plus
    the costliest body (one of them runs)."""
    import re

    import numpy as np

    computations, current = {}, None
    for line in hlo.splitlines():
        if (head := re.match(r"^(ENTRY )?%([\w.\-]+) .*\{$", line)) is not None:
            current = computations.setdefault("ENTRY" if head.group(1) else head.group(2), [])
        elif line.startswith("}"):
            current = None
        elif current is not None and (m := re.match(r"\s*(?:ROOT )?%[\w.\-]+ = (.*?) ([a-z\-]+)\((.*)", line)):
            current.append((m.group(2), m.group(1), m.group(3)))

    def body_of(rest: str) -> str:
        return re.search(r"body=%([\w.\-]+)", rest).group(1)

    def costliest(passes) -> tuple:
        return max(passes, key=lambda t: t[0], default=(0, 0, 0))

    def one_pass(name: str) -> tuple[int, int, int]:
        ops = copies = copied = 0
        inner, guarded = [], []  # conditionals' costliest branches; the guarded loops' bodies
        for op, shape, rest in computations[name]:
            if op in _NO_WORK:
                continue
            ops += 1
            if op == "copy":
                dtype, dims = re.match(r"(\w+)\[([\d,]*)\]", shape).groups()
                copies += 1
                copied += _BYTES.get(dtype, 4) * int(np.prod([int(d) for d in dims.split(",") if d]))
            elif op == "conditional":
                branches = re.search(r"branch_computations=\{([^}]*)\}", rest).group(1).replace("%", "").split(", ")
                inner.append(costliest(one_pass(b) for b in branches))
            elif op == "while" and any(o == "while" for o, _, _ in computations[body_of(rest)]):
                guarded.append(one_pass(body_of(rest)))
        parts = [(ops, copies, copied), *inner, costliest(guarded)]
        return tuple(int(sum(p[i] for p in parts)) for i in range(3))

    loop = next(body_of(rest) for op, _, rest in computations["ENTRY"] if op == "while")
    return one_pass(loop)


def phase_cost(rounds: int) -> None:
    """What a fused phase costs beyond its steps: its operations per iteration of the program's
    loop over phases (phase_ops), and the device time of the alternating 100 x 20 steps against
    2 x 1000 steps of the same two phases (the same steps in 98 phases fewer), per extra phase."""
    import jax

    texts = {"100 x 20": ALTERNATING_TEXT, "2 x 1000": _sched_text([(1000, 0.01, ["a.*"]), (1000, 0.01, ["b.*"])]), "spectral": _sched_text(SPECTRAL)}
    calls = {}
    for name, text in texts.items():
        compiled, args = _segment_program(text, "small" if name == "spectral" else "tiny64")
        ops, copies, copied = phase_ops(compiled.as_text())
        print(f"  {name:9} per phase: {ops} operations, {copies} copies ({copied} bytes) besides its steps")
        calls[name] = compiled, args
    wall, cpu = {k: [] for k in calls}, {k: [] for k in calls}
    for _ in range(rounds):
        for name, (compiled, args) in calls.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            jax.block_until_ready(compiled(*args))
            cpu[name].append(time.process_time() - start_cpu)
            wall[name].append(time.perf_counter() - start)
    for label, times in (("wall", wall), ("process CPU", cpu)):
        extra = [(a - b) / 98 * 1e6 for a, b in zip(times["100 x 20"], times["2 x 1000"])]
        print(
            f"  {label}: 100 x 20 {_spread([t * 1e3 for t in times['100 x 20']])} ms, 2 x 1000 {_spread([t * 1e3 for t in times['2 x 1000']])} ms;"
            f" per extra phase {statistics.median(extra):.1f} us (per-round median)"
        )


def device_cost(rounds: int, scales=(0.01, 0.1, 1, 10)) -> None:
    """Whether the spectral schedule's gap to the hand loop is per step, per call or host work around
    the call. At each scale of its step counts (1/100 to 10 times 300/200/100), side by side in
    interleaved rounds: the fused program's call alone (on the arguments a run passes it), the hand
    loop's three jitted calls alone (`_hand_calls`), and both whole runs; then each program's
    device time per step, from the smallest and the largest scale."""
    from schedc.compiler import segment

    print(f"\nthe spectral schedule scaled, ms: median [min] over {rounds} interleaved rounds; ratios per round")
    times_at = {}
    for scale in scales:
        phases = [(max(1, round(n * scale)), lr, free) for n, lr, free in SPECTRAL]
        _, args = _segment_program(_sched_text(phases), "small")
        (program,) = segment._CACHE.values()  # (its jitted call, as a run calls it)
        model, loss, data = _models("small")
        systems = {
            "fused call": lambda: program.call(*args),
            "hand calls": _hand_calls(model, loss, data, phases),
            "fused run": prepare_schedc(model, loss, data, phases),
            "hand run": prepare_hand(model, loss, data, phases),
        }
        times = times_at[sum(n for n, _, _ in phases)] = _rounds(systems, rounds, shuffle=True)

        def ratio(a, b):
            return statistics.median(x / y for x, y in zip(times[a], times[b]))

        cells = ", ".join(f"{name} {statistics.median(t) * 1e3:.3f} [{min(t) * 1e3:.3f}]" for name, t in times.items())
        print(f"  {sum(n for n, _, _ in phases):5} steps: {cells}; fused call / hand calls {ratio('fused call', 'hand calls'):.3f}, fused run / hand run {ratio('fused run', 'hand run'):.3f}")
    few, many = min(times_at), max(times_at)
    for name in ("fused call", "hand calls"):
        slopes = [(pick(times_at[many][name]) - pick(times_at[few][name])) / (many - few) * 1e9 for pick in (statistics.median, min)]
        print(f"  {name}: {slopes[0]:.0f} ns per step (from the medians), {slopes[1]:.0f} (from the minima)")


def _step_loop_copies(hlo: str) -> list[int]:
    """Per step loop (a while whose body holds no while, nor a call that may) of an optimized HLO
    text: the copies in its body."""
    import re

    bodies = dict(re.findall(r"^%([\w.\-]+) [^\n]*\{\n(.*?)^\}", hlo, re.S | re.M))
    loops = re.findall(r" while\(.*body=%([\w.\-]+)", hlo)
    return [bodies[b].count(" copy(") for b in loops if " while(" not in bodies[b] and " call(" not in bodies[b]]


def copy_cost(rounds: int) -> None:
    """What "fewer copies per step" saves (docs/runtime.md): the spectral schedule's fused program
    built three ways from the same schedule, as before (no step compiler options, the step loops'
    carry passed straight through), with `kernel.STEP_COMPILER_OPTIONS` alone, and as schedc builds
    it (the options and `segment._own_buffers`), and its first phase's chunk program (phase by
    phase) without and with the options; per step loop the copies in its body, whether the builds'
    outputs agree bit for bit, and their calls on the same arguments, interleaved and shuffled."""
    import jax
    import numpy as np

    from schedc.compiler import kernel, segment

    own_buffers, builds = segment._own_buffers, {}
    try:  # (traced while the carry passes straight through)
        segment._own_buffers = lambda tree: tree
        _, args = _segment_program(_sched_text(SPECTRAL), "small")
        (passed_through,) = segment._CACHE.values()
        lowered = jax.jit(passed_through.call._build(False)).lower(*args)
    finally:
        segment._own_buffers = own_buffers
    builds["fused"] = args, {"as before": lowered.compile(), "options": lowered.compile(compiler_options=kernel.STEP_COMPILER_OPTIONS)}
    _, args = _segment_program(_sched_text(SPECTRAL), "small")
    (own,) = segment._CACHE.values()
    builds["fused"][1]["options, own buffers"] = jax.jit(own.call._build(False)).lower(*args).compile(compiler_options=kernel.STEP_COMPILER_OPTIONS)
    call, args = _first_chunk_call(_sched_text(SPECTRAL), "small")
    lowered = jax.jit(call._build(False)).lower(*args)
    builds["phase 1 chunk"] = args, {"as before": lowered.compile(), "options": lowered.compile(compiler_options=kernel.STEP_COMPILER_OPTIONS)}
    print(f"spectral schedule's step programs: copies per step loop body, and us per call, median [min, max] over {rounds} shuffled rounds")
    systems = {}
    for name, (args, compiled) in builds.items():
        outputs = {k: jax.tree_util.tree_leaves(c(*args)) for k, c in compiled.items()}
        first = outputs["as before"]
        same = all(np.array_equal(a, b, equal_nan=True) for out in outputs.values() for a, b in zip(first, out))
        print(f"  {name}: " + ", ".join(f"{k} {_step_loop_copies(c.as_text())}" for k, c in compiled.items()) + f"; outputs bit for bit equal: {same}")
        systems |= {f"{name}, {k}": functools.partial(c, *args) for k, c in compiled.items()}
    times = _rounds(systems, rounds, shuffle=True)
    for name, (_, compiled) in builds.items():
        before = times[f"{name}, as before"]
        for k in compiled:
            ts = times[f"{name}, {k}"]
            print(f"  {name}, {k}: {_spread([t * 1e6 for t in ts])}; / as before per round {_spread([t / b for t, b in zip(ts, before)])}")


def loss_buffer_cost(rounds: int, chunks=(16384, 4096, 1024)) -> None:
    """A fused call's loss buffer is `chunk` steps long (16384 floats by default) and made afresh
    at every call: the spectral schedule's fused run at several `chunk`s, side by side in one
    process (each round in its own order), and at 20 times its steps, where a shorter buffer takes more calls."""
    import schedc

    model, loss, data = _models("small")
    for phases in (SPECTRAL, [(n * 20, lr, free) for n, lr, free in SPECTRAL]):
        program = schedc.compile(_sched_text(phases), model)
        systems = {"hand": prepare_hand(model, loss, data, phases)}
        for chunk in chunks:
            systems[f"chunk {chunk}"] = lambda chunk=chunk, program=program: program.run(loss, *data, quiet=True, chunk=chunk).model
        times = _rounds(systems, rounds, shuffle=True)
        cells = ", ".join(f"{name} {statistics.median(t) * 1e3:.3f} ms ({statistics.median(x / y for x, y in zip(t, times['hand'])):.3f})" for name, t in times.items())
        print(f"  {sum(n for n, _, _ in phases)} steps, median (/ hand per round): {cells}")


def repeat_compiles(text: str) -> dict:
    """XLA compiles of compiling and running `text` on the 64-parameter model, in this (fresh) process."""
    import schedc
    from schedc.runtime.runner import CompileClock

    model, loss, data = _models("tiny64")
    with CompileClock() as clock:
        schedc.compile(text, model).run(loss, *data, quiet=True)
    return {"compiles": clock.count}


def _subprocess(args: list[str]) -> dict:
    out = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--one", nargs=2, metavar=("SYSTEM", "SIZE"), help=argparse.SUPPRESS)
    parser.add_argument("--counts", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--repeat", type=int, default=1, help="processes per measurement (median)")
    parser.add_argument("--fusion", action="store_true", help="fused segments: ratios, host work per phase, repeat compiles")
    parser.add_argument("--rounds", type=int, default=15, help="interleaved rounds (--fusion)")
    parser.add_argument("--compiles-of", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.compiles_of:
        print(json.dumps(repeat_compiles(args.compiles_of)))
        return
    if args.fusion:
        fusion_table(args.rounds)
        print()
        contract_cost(max(args.rounds, 201))
        host_work(args.rounds)
        boundary_cost(args.rounds)
        fixed_cost(max(args.rounds, 50))
        print("\nwhat a fused phase costs beyond its steps (median [min, max] over interleaved rounds)")
        phase_cost(max(args.rounds, 50))
        body, repeated = (_subprocess(["--compiles-of", t])["compiles"] for t in (_sched_text(ALTERNATING_BODY), ALTERNATING_TEXT))
        print(f"\nXLA compiles in a fresh process: the body {body}, repeat 50 of it {repeated}")
        return
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
