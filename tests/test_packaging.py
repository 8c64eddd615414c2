"""The grammar ships inside the package: build the sdist and the wheel (from the sdist, as `python -m build`
does for a release), check that both hold `sched.lark` as a regular file (in the repository it is reached
through the symlink src/schedc/lang/grammar -> ../../../grammar), then run schedc from the unpacked wheel in a
fresh process.

Offline: builds with the test environment's setuptools (`--no-isolation`).
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
GRAMMAR = (ROOT / "grammar" / "sched.lark").read_bytes()
TIMEOUT = 300


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> Path:
    """sdist and wheel built from a copy of the project (the symlink kept as a symlink)."""
    project = tmp_path_factory.mktemp("project")
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        if (ROOT / name).exists():
            shutil.copy2(ROOT / name, project / name)
    shutil.copytree(ROOT / "grammar", project / "grammar")
    shutil.copytree(ROOT / "src", project / "src", symlinks=True, ignore=shutil.ignore_patterns("*.egg-info", "__pycache__"))
    assert (project / "src" / "schedc" / "lang" / "grammar").is_symlink()
    out = project / "dist"
    proc = subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--skip-dependency-check", "--outdir", str(out), str(project)],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out


def test_sdist_holds_the_grammar_as_a_file(dist: Path):
    (sdist,) = dist.glob("*.tar.gz")
    with tarfile.open(sdist) as tar:
        members = {m.name.split("/", 1)[1]: m for m in tar.getmembers() if "/" in m.name}
        member = members["src/schedc/lang/grammar/sched.lark"]
        assert member.isfile()  # not a symlink that would dangle outside the tree
        assert tar.extractfile(member).read() == GRAMMAR


def test_wheel_holds_the_grammar_as_a_file(dist: Path):
    (wheel,) = dist.glob("*.whl")
    with zipfile.ZipFile(wheel) as zf:
        info = zf.getinfo("schedc/lang/grammar/sched.lark")
        assert not stat.S_ISLNK(info.external_attr >> 16)
        assert zf.read(info) == GRAMMAR
        entry_points = next(zf.read(n).decode() for n in zf.namelist() if n.endswith(".dist-info/entry_points.txt"))
    assert "schedc = schedc.cli:main" in entry_points


def test_installed_wheel_loads_its_grammar(dist: Path, tmp_path: Path):
    (wheel,) = dist.glob("*.whl")
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(site)
    code = (
        "import os, schedc, schedc.lang.syntax as s\n"
        f"assert schedc.__file__.startswith({str(site)!r}), schedc.__file__\n"
        "path = os.path.join(os.path.dirname(schedc.__file__), 'lang', 'grammar', 'sched.lark')\n"
        "assert os.path.isfile(path) and not os.path.islink(path)\n"
        "s.parser(strict=True)\n"
        "r = s.parse('phase 100 lr 0.1 < free gp.coefficients; init line.amplitude ~ normal(0, 0.1) >')\n"
        "assert r.ok and len(r.file.items) == 1\n"
        "print('ok')\n"
    )
    env = {**os.environ, "PYTHONPATH": str(site)}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=TIMEOUT)
    assert (proc.returncode, proc.stdout.strip()) == (0, "ok"), proc.stderr
    example = ROOT / "examples" / "spectral_line.sched"
    proc = subprocess.run(
        [sys.executable, "-m", "schedc", "check", str(example)], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=TIMEOUT
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
