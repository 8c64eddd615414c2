"""Across processes (`jax.distributed`, 2 processes x 4 CPU devices, gloo on localhost): a fused
sweep against the same sweep phase by phase (how every multi-process sweep ran before), and what
streaming costs per chunk (the collective that agrees on each chunk's batches).

Each process runs the same script; process 0 prints the numbers. The sweep: 8 settings of a
4-phase linear fit (each phase another free set or optimizer: phase by phase, 4 programs), the
data split by rows over the 8 devices; "cold" is the first run of each (compiles included),
"steady" the median of the next passes, fused and phase by phase alternating. The agreements: the
median time of one `distributed.gather_ints` (what a chunk's end costs: `distributed.agree`, the
stop a signal asks for and whether some process failed; a streamed chunk agrees once more on its
batches), of a run of 64 steps on arrays in chunks of 8 (8 chunk ends, 7 of them agreed, `fuse=False`),
and of one streamed run of 64 steps in chunks of 8, each process reading its 32 rows of every batch of 64.

    .venv/bin/python bench/bench_multihost.py
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

PASSES = 5

CHILD = r'''
import json, sys, time
pid, port, passes = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
import jax, jax.numpy as jnp, numpy as np
import schedc
schedc.distributed.initialize(f"localhost:{port}", 2, pid)
from schedc.runtime import distributed

TEXT = """let rate = 0.01
phase 200 lr rate < free w >
phase 200 lr rate optimizer sgd(momentum=0.9) < free w, b >
phase 200 lr rate / 2 optimizer adam < free b >
phase 200 lr cosine(rate -> rate / 10) < free w, b >"""
X = np.asarray(jax.random.normal(jax.random.key(0), (1024, 16)))
Y = X @ np.arange(16.0, dtype=np.float32) / 16 + 0.3
x, y = schedc.distributed.shard_rows(X, Y)
model = {"w": jnp.zeros(16), "b": jnp.zeros(())}


def loss(m, x, y):
    return jnp.mean((x @ m["w"] + m["b"] - y) ** 2)


def sweep(fuse):
    program = schedc.compile(TEXT, model)
    started = time.perf_counter()
    result = program.sweep(rate=list(np.geomspace(0.001, 0.1, 8))).run(loss, x, y, fuse=fuse, quiet=True)
    return time.perf_counter() - started, sum(p.compiles for p in result.phases), result.final_losses


found = {}
for fuse in (True, False):
    seconds, compiles, finals = sweep(fuse)
    found[f"cold_{'fused' if fuse else 'phases'}"] = seconds
    found[f"compiles_{'fused' if fuse else 'phases'}"] = compiles
    found[f"finals_{'fused' if fuse else 'phases'}"] = finals.tolist()
steady = {True: [], False: []}
for _ in range(passes):
    for fuse in (True, False):
        steady[fuse].append(sweep(fuse)[0])
found["steady_fused"], found["steady_phases"] = float(np.median(steady[True])), float(np.median(steady[False]))

gathers = []
for _ in range(200):
    started = time.perf_counter()
    distributed.gather_ints([pid])
    gathers.append(time.perf_counter() - started)
found["gather_ms"] = 1e3 * float(np.median(gathers[20:]))

arrays = schedc.compile("phase 64 lr 0.01 < free w, b >", model)
runs = []
for _ in range(passes + 1):
    started = time.perf_counter()
    arrays.run(loss, x, y, chunk=8, quiet=True, fuse=False)
    runs.append(time.perf_counter() - started)
found["array_run_ms"] = 1e3 * float(np.median(runs[1:]))

GLOBAL = [(X[i : i + 64], Y[i : i + 64]) for i in range(0, 1024, 64)]
mine = [(a[pid * 32 : (pid + 1) * 32], b[pid * 32 : (pid + 1) * 32]) for a, b in GLOBAL]
streamed = schedc.compile("phase 64 lr 0.01 < free w, b >", model)
runs = []
for _ in range(passes + 1):
    started = time.perf_counter()
    streamed.run(loss, batches=mine, chunk=8, quiet=True)
    runs.append(time.perf_counter() - started)
found["stream_run_ms"] = 1e3 * float(np.median(runs[1:]))
if pid == 0:
    print(json.dumps(found))
'''


def main() -> None:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = str(s.getsockname()[1])
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env.update(JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=4")
    procs = [subprocess.Popen([sys.executable, "-c", CHILD, str(i), port, str(PASSES)], env=env, stdout=subprocess.PIPE, text=True) for i in range(2)]
    try:
        outputs = [proc.communicate(timeout=1200)[0] for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    found = json.loads(outputs[0].strip().splitlines()[-1])
    print(f"sweep of 8 settings, 4 phases x 200 steps, 2 processes x 4 CPU devices (load {os.getloadavg()[0]:.1f})")
    for kind in ("fused", "phases"):
        print(f"  {kind:7s} cold {found[f'cold_{kind}']:.2f} s ({found[f'compiles_{kind}']} compiles), steady median {found[f'steady_{kind}'] * 1e3:.0f} ms")
    print(f"  steady phase by phase / fused: {found['steady_phases'] / found['steady_fused']:.2f}x; final losses equal: {found['finals_fused'] == found['finals_phases']}")
    print(f"per-chunk agreement (gather_ints): median {found['gather_ms']:.3f} ms")
    print(f"run on arrays, 64 steps in chunks of 8: median {found['array_run_ms']:.0f} ms")
    print(f"streamed run, 64 steps in chunks of 8: median {found['stream_run_ms']:.0f} ms")


if __name__ == "__main__":
    main()
