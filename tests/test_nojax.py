"""Parsing and `schedc check` never import JAX (DESIGN §5): checked in a fresh interpreter."""

from __future__ import annotations

import re
import subprocess
import sys

SOURCE = """
optimizer adamw(weight_decay = 1e-4)
let base = 0.05
phase warm 100 lr warmup_cosine(0 -> base -> 0, 10%) < free gp.**; init line.a ~ normal(0, 0.1) >
phase 50 lr 0.1 for 10 then 0.01 < free **; stop when loss_change < 1e-6 >
params < line.b: free after warm | init uniform(0, 1) at 0 >
let unused = 3
"""


def imported_modules(*argv: str, cwd) -> set[str]:
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "schedc", *argv], capture_output=True, text=True, cwd=cwd, timeout=120)
    assert "Traceback" not in proc.stderr, proc.stderr
    return {m.group(1) for m in re.finditer(r"^import time:\s+\d+ \|\s+\d+ \|\s+(\S+)", proc.stderr, re.M)}


def test_check_imports_no_jax(tmp_path):
    (tmp_path / "f.sched").write_text(SOURCE)
    modules = imported_modules("check", "f.sched", cwd=tmp_path)
    assert "schedc.check.checker" in modules  # the measurement works: the checker was imported
    assert not {m for m in modules if m.split(".")[0] in ("jax", "jaxlib", "optax", "equinox")}


def test_check_with_errors_imports_no_jax(tmp_path):
    (tmp_path / "g.sched").write_text("phase 0 lr adamm < frees a >\n" + SOURCE.replace("adamw", "adamm"))
    for fmt in ("text", "json", "concise", "github"):
        modules = imported_modules("check", "--format", fmt, "g.sched", cwd=tmp_path)
        assert not {m for m in modules if m.split(".")[0] in ("jax", "jaxlib", "optax", "equinox")}, fmt
