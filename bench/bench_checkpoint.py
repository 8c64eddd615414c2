"""Checkpoint formats side by side: write time, read time and size on disk.

What a mid-phase checkpoint holds is the model's arrays plus an optimizer state (adam: two
more arrays per free parameter). Two payloads: the spectral-line example's model
(examples/spectral_line.py) and a ~10M-parameter model (a few large float32 arrays). Formats:

* schedc  — this project's layout (schedc.runtime.checkpoint): one .npz written with
            `np.savez` (no compression), read with `allow_pickle=False`, a SHA-256 of the bytes
            checked on read, a small JSON beside it; both written atomically (fsync + rename)
* pickle  — what schedc wrote before (pickle.dump of host arrays; loading can run code)
* equinox — `eqx.tree_serialise_leaves` / `tree_deserialise_leaves` (needs the tree to read into)
* orbax   — `orbax.checkpoint.StandardCheckpointer` (when orbax-checkpoint is installed)

    .venv/bin/python bench/bench_checkpoint.py           # best of 5 per cell
    pip install orbax-checkpoint                         # to include orbax

Results and the reasoning behind the choice: docs/reliability.md.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import pickle
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "examples"))


def payloads() -> dict[str, dict[str, np.ndarray]]:
    import jax

    from spectral_line import build_model

    leaves = [np.asarray(x) for x in jax.tree_util.tree_leaves(build_model()) if hasattr(x, "shape")]
    spectral = {f"model/{i}": x for i, x in enumerate(leaves)}
    spectral |= {f"opt/{k}/{i}": np.zeros_like(x) for k in ("mu", "nu") for i, x in enumerate(leaves)}
    rng = np.random.default_rng(0)
    big = {f"model/{i}": rng.standard_normal(n, dtype=np.float32) for i, n in enumerate((4_000_000, 3_000_000, 2_000_000, 1_000_000))}
    big |= {f"opt/{k}/{i}": rng.standard_normal(x.shape, dtype=np.float32) for k in ("mu", "nu") for i, x in enumerate(list(big.values()))}
    return {"spectral example": spectral, "10M parameters": big}


def parameters(arrays) -> int:
    return sum(x.size for k, x in arrays.items() if k.startswith("model/"))


# ---- formats: (write(folder, arrays), read(folder, arrays) -> arrays)


def schedc_write(folder: Path, arrays):
    from schedc.runtime.checkpoint import _npz, _sha256
    from schedc.tooling.files import atomic_write

    data = _npz(arrays)
    atomic_write(folder / "state-1.npz", data)
    atomic_write(folder / "checkpoint-1.json", json.dumps({"state": {"file": "state-1.npz", "sha256": _sha256(data)}}).encode())


def schedc_read(folder: Path, arrays):
    meta = json.loads((folder / "checkpoint-1.json").read_bytes())
    data = (folder / "state-1.npz").read_bytes()
    assert hashlib.sha256(data).hexdigest() == meta["state"]["sha256"]
    with np.load(io.BytesIO(data), allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


def pickle_write(folder: Path, arrays):
    with open(folder / "checkpoint.pkl", "wb") as f:
        pickle.dump(arrays, f, protocol=pickle.HIGHEST_PROTOCOL)
        f.flush()
        os.fsync(f.fileno())


def pickle_read(folder: Path, arrays):
    with open(folder / "checkpoint.pkl", "rb") as f:
        return pickle.load(f)


def equinox_write(folder: Path, arrays):
    import equinox as eqx

    with open(folder / "state.eqx", "wb") as f:
        eqx.tree_serialise_leaves(f, arrays)
        f.flush()
        os.fsync(f.fileno())


def equinox_read(folder: Path, arrays):
    import equinox as eqx

    return eqx.tree_deserialise_leaves(folder / "state.eqx", arrays)


def orbax_write(folder: Path, arrays):
    import orbax.checkpoint as ocp

    with ocp.StandardCheckpointer() as saver:
        saver.save((folder / "orbax").absolute(), arrays)
        saver.wait_until_finished()


def orbax_read(folder: Path, arrays):
    import orbax.checkpoint as ocp

    with ocp.StandardCheckpointer() as saver:
        return saver.restore((folder / "orbax").absolute(), arrays)


FORMATS = {"schedc": (schedc_write, schedc_read), "pickle": (pickle_write, pickle_read), "equinox": (equinox_write, equinox_read)}
try:
    import orbax.checkpoint  # noqa: F401

    FORMATS["orbax"] = (orbax_write, orbax_read)
except ImportError:
    pass


def size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def measure(write, read, arrays, repeat: int) -> tuple[float, float, int]:
    writes, reads, nbytes = [], [], 0
    for _ in range(repeat):
        folder = Path(tempfile.mkdtemp(prefix="bench-ckpt-"))
        try:
            started = time.perf_counter()
            write(folder, arrays)
            writes.append(time.perf_counter() - started)
            nbytes = size(folder)
            started = time.perf_counter()
            back = read(folder, arrays)
            reads.append(time.perf_counter() - started)
            for k, x in arrays.items():
                np.testing.assert_array_equal(np.asarray(back[k]), x)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    return min(writes), min(reads), nbytes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    print("| payload | format | write (ms) | read (ms) | size (MB) |")
    print("|---|---|---:|---:|---:|")
    for name, arrays in payloads().items():
        for fmt, (write, read) in FORMATS.items():
            w, r, nbytes = measure(write, read, arrays, args.repeat)
            print(f"| {name} ({parameters(arrays):,} params) | {fmt} | {w * 1e3:.1f} | {r * 1e3:.1f} | {nbytes / 1e6:.3f} |", flush=True)


if __name__ == "__main__":
    main()
