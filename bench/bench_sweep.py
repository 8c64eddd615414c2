"""Sweeps: `Program.sweep` of N learning rates of examples/spectral_line vs N sequential runs in one process.

The sweep varies the example's `let base` (every phase's learning rate) over N values spaced
geometrically from 0.005 to 0.2; the sequential baseline compiles and runs the same file once
per value (`let base = $base`, `schedc.compile(..., base=v).run(...)`), as a user would in a
loop. Both run in a fresh subprocess: "cold" is the first time (tracing and XLA compiles
included), "steady" the best of the next five passes (their median beside it). Reported: the times, the speedup, the compiled programs
(`compiler.chunk.cache_size()` + `compiler.segment.cache_size()`: the sweep's, the fused
program of the whole schedule vmapped over the settings, or phase by phase one vmapped chunk
per phase signature; the runs', the fused program of the whole schedule), the XLA compiles of
the cold pass (the steady one compiles nothing), the sweep's front-end time (`schedc.compile`
of the file and `Program.sweep`: the settings checked and resolved, in one pass when that stands
for checking each alone, see `schedc.lang.swept`), and the largest difference between a
setting's swept and sequential final loss.

    .venv/bin/python bench/bench_sweep.py             # N = 64
    .venv/bin/python bench/bench_sweep.py --sizes 8 64
    .venv/bin/python bench/bench_sweep.py --phase-by-phase   # the sweep with fuse=False
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "spectral_line.sched"
# steady passes after the cold one (each a fresh `schedc.compile` and sweep or loop of runs): the
# best and the median are reported (one pass alone moved 2x with the machine's other jobs)
STEADY_PASSES = 5


def _child(size: int, which: str, fuse: bool = True) -> dict:
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

    fn = swept if which == "sweep" else sequential
    compiles = []  # every XLA compile of the process (a plain listener: the runner's clocks nest)
    jax.monitoring.register_event_duration_secs_listener(lambda event, _, **__: compiles.append(event) if event == "/jax/core/compile/backend_compile_duration" else None)
    times = []
    t = time.perf_counter()
    finals, steps = fn()
    times.append(time.perf_counter() - t)
    cold_compiles = len(compiles)
    for _ in range(STEADY_PASSES):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    steady = sorted(times[1:])
    return {
        "cold": times[0],
        "steady": steady[0],  # the best steady pass
        "steady_median": steady[len(steady) // 2],
        # compiled programs: per-phase chunks (phase by phase) and fused segments (the whole
        # schedule in one program: a single run's, or a sweep's vmapped over the settings)
        "programs": chunk.cache_size() + segment.cache_size(),
        "xla_compiles": cold_compiles,
        "steady_compiles": len(compiles) - cold_compiles,
        "front": fronts or [0.0, 0.0],
        "finals": finals,
        "steps": steps,
    }


def _run_child(size: int, which: str, fuse: bool = True) -> dict:
    done = subprocess.run([sys.executable, __file__, "--child", str(size), which, *([] if fuse else ["--phase-by-phase"])], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[64])
    ap.add_argument("--phase-by-phase", action="store_true", help="run the sweep with fuse=False (one vmapped program per phase signature)")
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    fuse = not args.phase_by_phase
    if args.child:
        print(json.dumps(_child(int(args.child[0]), args.child[1], fuse)))
        return 0
    import jax

    print(f"jax {jax.__version__}, {jax.devices()[0].platform}, {EXAMPLE.name}" + ("" if fuse else ", the sweep phase by phase (fuse=False)"))
    print(f"{'settings':>8}  {'sweep cold':>10}  {'sweep steady':>12}  {'runs cold':>10}  {'runs steady':>11}  {'speedup cold/steady':>19}  {'programs':>8}  {'XLA compiles':>12}  {'max |Δ final loss|':>18}")
    for size in args.sizes:
        s, r = _run_child(size, "sweep", fuse), _run_child(size, "runs")
        diff = max(abs(a - b) for a, b in zip(s["finals"], r["finals"]))
        print(
            f"{size:>8}  {s['cold']:>9.2f}s  {s['steady']:>11.2f}s  {r['cold']:>9.2f}s  {r['steady']:>10.2f}s  "
            f"{r['cold'] / s['cold']:>8.1f}x / {r['steady'] / s['steady']:>5.1f}x  {s['programs']:>3}/{r['programs']:<4}  {s['xla_compiles']:>5}/{r['xla_compiles']:<6}  {diff:>18.2g}"
        )
        print(f"{'':>8}  steady medians: sweep {s['steady_median']:.2f}s, runs {r['steady_median']:.2f}s, speedup {r['steady_median'] / s['steady_median']:.1f}x")
        print(f"{'':>8}  of the sweep's time, its front end (compile, settings checked and resolved): {s['front'][0]:.2f}s cold, {s['front'][1]:.2f}s steady; "
              f"XLA compiles in the steady passes: {s['steady_compiles']} / {r['steady_compiles']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
