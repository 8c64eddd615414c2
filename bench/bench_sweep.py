"""Sweeps: `Program.sweep` of N learning rates of examples/spectral_line vs N sequential runs in one process.

The sweep varies the example's `let base` (every phase's learning rate) over N values spaced
geometrically from 0.005 to 0.2; the sequential baseline compiles and runs the same file once
per value (`let base = $base`, `schedc.compile(..., base=v).run(...)`), as a user would in a
loop. "Cold" is the first time, each in a fresh subprocess (tracing and XLA compiles included).
"Steady" is measured side by side in a third subprocess: after one warm-up pass of each, the
sweep and the loop of runs alternate (`--passes` pairs, each pass a fresh `schedc.compile` and
sweep or loop of runs), so both meet the same load; reported are the best pass of each, the
median of each and the median of the pairs' ratios. Also reported: the compiled programs
(`compiler.chunk.cache_size()` + `compiler.segment.cache_size()`: the sweep's, the fused
program of the whole schedule vmapped over the settings, or phase by phase one vmapped chunk
per phase signature; the runs', the fused program of the whole schedule), the XLA compiles of
the cold pass (the steady ones compile nothing), the sweep's front-end time (`schedc.compile`
of the file and `Program.sweep`: the settings checked and resolved, in one pass when that stands
for checking each alone, see `schedc.lang.swept`), and the largest difference between a
setting's swept and sequential final loss.

    .venv/bin/python bench/bench_sweep.py             # N = 64
    .venv/bin/python bench/bench_sweep.py --sizes 8 64
    .venv/bin/python bench/bench_sweep.py --phase-by-phase   # the sweep with fuse=False
    .venv/bin/python bench/bench_sweep.py --device --sizes 1 8 64   # the segment program's calls alone

`--device`: the fused sweep's program calls (the vmapped segment program) captured from one
sweep and timed alone, without the host work around them (best and median of at least 9
passes, after a warm-up): the device's time per step and per setting-step.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "spectral_line.sched"
# steady pairs (a sweep and a loop of runs, alternated) after one warm-up pass of each: the best
# and the median are reported (one pass alone moved 2x with the machine's other jobs)
STEADY_PASSES = 5


def _child(size: int, which: str, fuse: bool = True, passes: int = STEADY_PASSES) -> dict:
    """`which`: "sweep" or "runs", timed cold (this process's first pass); "steady": both, warmed
    up, then alternated `passes` times."""
    import jax
    import numpy as np

    import schedc
    from schedc.compiler import chunk, segment

    sys.path.insert(0, str(EXAMPLE.parent))
    import spectral_line

    x, y = spectral_line.make_data()
    model = spectral_line.build_model()
    rates = [float(r) for r in np.geomspace(0.005, 0.2, size)]
    text = EXAMPLE.read_text().replace("let base = 0.05", "let base = $base")
    assert "$base" in text
    fronts = []  # the sweep's front end: the file compiled, the settings checked and resolved

    def swept():
        t = time.perf_counter()
        sweep = schedc.compile(text, model, base=0.05).sweep(base=rates)
        fronts.append(time.perf_counter() - t)
        result = sweep.run(spectral_line.loss, x, y, **({} if fuse else {"fuse": False}))  # (a build before `fuse` takes the default)
        jax.block_until_ready(result.model)
        return [float(v) for v in result.final_losses], int(sum(p.steps_run.sum() for p in result.phases))

    def sequential():
        finals, steps = [], 0
        for rate in rates:
            result = schedc.compile(text, model, base=rate).run(spectral_line.loss, x, y, quiet=True)
            jax.block_until_ready(result.model)
            finals.append(float(result.loss_history[-1]))
            steps += int(sum(p.steps_run for p in result.phases))
        return finals, steps

    def timed(fn):
        t = time.perf_counter()
        value = fn()
        return time.perf_counter() - t, value

    compiles = []  # every XLA compile of the process (a plain listener: the runner's clocks nest)
    jax.monitoring.register_event_duration_secs_listener(lambda event, _, **__: compiles.append(event) if event == "/jax/core/compile/backend_compile_duration" else None)
    if which != "steady":
        cold, (finals, steps) = timed(swept if which == "sweep" else sequential)
        return {
            "cold": cold,
            # compiled programs: per-phase chunks (phase by phase) and fused segments (the whole
            # schedule in one program: a single run's, or a sweep's vmapped over the settings)
            "programs": chunk.cache_size() + segment.cache_size(),
            "xla_compiles": len(compiles),
            "front": fronts or [0.0],
            "finals": finals,
            "steps": steps,
        }
    swept(), sequential()  # warm-up: every program compiled
    warm = len(compiles)
    pairs = [(timed(swept)[0], timed(sequential)[0]) for _ in range(passes)]
    return {"pairs": pairs, "steady_compiles": len(compiles) - warm, "front": sorted(fronts[1:])[passes // 2]}


def _device(size: int, passes: int) -> dict:
    """The fused sweep's program calls alone: each call of one sweep recorded with its arguments,
    then the same calls made again, `passes` times (the first pass a warm-up)."""
    import jax
    import numpy as np

    import schedc
    from schedc.compiler import segment

    sys.path.insert(0, str(EXAMPLE.parent))
    import spectral_line

    x, y = spectral_line.make_data()
    rates = [float(r) for r in np.geomspace(0.005, 0.2, size)]
    text = EXAMPLE.read_text().replace("let base = 0.05", "let base = $base")
    calls = []
    build = segment._build

    def recording(*args, **kwargs):
        program = build(*args, **kwargs)
        jitted = program.call
        program.call = lambda *call_args: (calls.append((jitted, call_args)), jitted(*call_args))[1]
        return program

    segment._build = recording
    result = schedc.compile(text, spectral_line.build_model(), base=0.05).sweep(base=rates).run(spectral_line.loss, x, y)
    segment._build = build
    times = []
    for _ in range(passes + 1):
        t = time.perf_counter()
        for jitted, args in calls:
            jax.block_until_ready(jitted(*args))
        times.append(time.perf_counter() - t)
    steps = int(sum(p.steps_run.max() for p in result.phases))
    return {"times": sorted(times[1:]), "steps": steps, "calls": len(calls)}


def _run_child(size: int, which: str, fuse: bool = True, passes: int = STEADY_PASSES) -> dict:
    command = [sys.executable, __file__, "--child", str(size), which, "--passes", str(passes), *([] if fuse else ["--phase-by-phase"])]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[64])
    ap.add_argument("--phase-by-phase", action="store_true", help="run the sweep with fuse=False (one vmapped program per phase signature)")
    ap.add_argument("--passes", type=int, default=STEADY_PASSES, help="steady pairs of passes (a sweep, then a loop of runs)")
    ap.add_argument("--device", action="store_true", help="time the fused sweep's program calls alone (per step and per setting-step)")
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    fuse = not args.phase_by_phase
    if args.child:
        print(json.dumps(_child(int(args.child[0]), args.child[1], fuse, args.passes)))
        return 0
    import jax

    if args.device:
        for size in args.sizes:
            d = _device(size, max(args.passes, 9))
            best, median = d["times"][0], d["times"][len(d["times"]) // 2]
            print(f"{size:>4} settings: {d['calls']} calls, {d['steps']} steps: best {best * 1e3:.1f} ms, median {median * 1e3:.1f} ms; "
                  f"best per step {best / d['steps'] * 1e6:.1f} us, per setting-step {best / d['steps'] / size * 1e6:.2f} us")
        return 0

    print(f"jax {jax.__version__}, {jax.devices()[0].platform}, {EXAMPLE.name}" + ("" if fuse else ", the sweep phase by phase (fuse=False)"))
    print(f"{'settings':>8}  {'sweep cold':>10}  {'sweep steady':>12}  {'runs cold':>10}  {'runs steady':>11}  {'speedup cold/steady':>19}  {'programs':>8}  {'XLA compiles':>12}  {'max |Δ final loss|':>18}")
    for size in args.sizes:
        s, r = _run_child(size, "sweep", fuse), _run_child(size, "runs")
        steady = _run_child(size, "steady", fuse, args.passes)
        sweeps, runs = sorted(p[0] for p in steady["pairs"]), sorted(p[1] for p in steady["pairs"])
        ratios = sorted(b / a for a, b in steady["pairs"])
        diff = max(abs(a - b) for a, b in zip(s["finals"], r["finals"]))
        print(
            f"{size:>8}  {s['cold']:>9.2f}s  {sweeps[0]:>11.2f}s  {r['cold']:>9.2f}s  {runs[0]:>10.2f}s  "
            f"{r['cold'] / s['cold']:>8.1f}x / {runs[0] / sweeps[0]:>5.1f}x  {s['programs']:>3}/{r['programs']:<4}  {s['xla_compiles']:>5}/{r['xla_compiles']:<6}  {diff:>18.2g}"
        )
        middle = len(ratios) // 2
        print(f"{'':>8}  steady, alternated: medians sweep {sweeps[middle]:.3f}s, runs {runs[middle]:.3f}s; ratio per pair median {ratios[middle]:.1f}x [{ratios[0]:.1f}, {ratios[-1]:.1f}]")
        print(f"{'':>8}  of the sweep's time, its front end (compile, settings checked and resolved): {s['front'][0]:.2f}s cold, {steady['front']:.2f}s steady (median); "
              f"XLA compiles in the steady passes: {steady['steady_compiles']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
