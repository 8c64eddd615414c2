"""The pipeline's shape, as docs/architecture.md states it: stages in folders, imports flowing
one way, and the front end (everything before the compiler) importable without JAX."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "src" / "schedc"

# Stage order: a module may import its own stage and earlier ones, never a later one.
STAGES = ["lang", "check", "plan", "pipeline", "tooling", "compiler", "runtime", "surface", "cli"]
JAX_FREE = ["lang", "check", "plan", "pipeline", "tooling"]
TOP_LEVEL = {"__init__", "__main__"}  # the lazy public namespace and `python -m schedc`


def stage_of(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "schedc" or len(parts) < 2:
        return None
    return parts[1] if parts[1] in STAGES else None


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path) -> list[tuple[int, str]]:
    """Every `schedc...` module a file imports, at any depth (lazy imports inside functions too)."""
    module = module_name(path)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.append((node.lineno, target))
            found += [(node.lineno, f"{target}.{a.name}") for a in node.names]  # `from schedc.plan import resolve`
    return [(line, t) for line, t in found if t.split(".")[0] == "schedc"]


def source_files() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_every_module_lives_in_a_stage():
    loose = [p.relative_to(PACKAGE).as_posix() for p in source_files() if stage_of(module_name(p)) is None and p.stem not in TOP_LEVEL]
    assert loose == []


@pytest.mark.parametrize("path", source_files(), ids=lambda p: p.relative_to(PACKAGE).as_posix())
def test_no_stage_imports_a_later_one(path):
    here = stage_of(module_name(path))
    if here is None:
        return
    backwards = [f"line {line}: {target}" for line, target in imports_of(path) if (there := stage_of(target)) and STAGES.index(there) > STAGES.index(here)]
    assert backwards == [], f"{module_name(path)} ({here}) imports a later stage"


def test_front_end_packages_import_no_jax():
    modules = [module_name(p) for p in source_files() if stage_of(module_name(p)) in JAX_FREE]
    code = "import sys\n" + "".join(f"import {m}\n" for m in modules) + (
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('jax', 'jaxlib', 'optax', 'equinox'))\n"
        "print(bad)\nsys.exit(1 if bad else 0)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# Private names imported across modules (none left: the builder enters through `pipeline.analyse`).
PRIVATE_IMPORTS_LEFT: set[tuple[str, str]] = set()


def is_private_name(target: str) -> bool:
    """`schedc.a.b._name` where `_name` is a name inside module `schedc.a.b` (a private module is fine)."""
    owner, _, name = target.rpartition(".")
    is_module = (PACKAGE.parent / Path(*target.split("."))).with_suffix(".py").exists()
    return name.startswith("_") and not name.startswith("__") and not is_module and owner.split(".")[-1] != "__init__"


@pytest.mark.parametrize("path", source_files(), ids=lambda p: p.relative_to(PACKAGE).as_posix())
def test_no_module_imports_another_modules_private_names(path):
    here = module_name(path)
    private = [
        f"line {line}: {target}"
        for line, target in imports_of(path)
        if is_private_name(target) and target.rsplit(".", 1)[0] != here and (here, target) not in PRIVATE_IMPORTS_LEFT
    ]
    assert private == [], f"{here} imports private names of other modules"


# The stages' entry points, and the modules that may call them: the driver, and (for the
# model stage of linting, `binding.check_against_model`) the binding. Everyone else goes
# through `schedc.pipeline`, so the stages are put together in one place.
STAGE_ENTRIES = {"schedc.lang.syntax.parse", "schedc.check.checker.check_file", "schedc.plan.resolve.resolve"}
MAY_CALL_STAGES = {"schedc.pipeline", "schedc.plan.binding"}


@pytest.mark.parametrize("path", source_files(), ids=lambda p: p.relative_to(PACKAGE).as_posix())
def test_only_the_driver_puts_the_stages_together(path):
    here = module_name(path)
    if here in MAY_CALL_STAGES or here in {entry.rsplit(".", 1)[0] for entry in STAGE_ENTRIES}:
        return  # a stage's own module defines its entry point
    tree = ast.parse(path.read_text(), str(path))
    modules = {}  # local name -> a stage module imported whole (`from schedc.plan import resolve as P`)
    direct = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                target = f"{node.module}.{alias.name}"
                if target in STAGE_ENTRIES:
                    direct.append(f"line {node.lineno}: imports {target}")
                if any(entry.rsplit(".", 1)[0] == target for entry in STAGE_ENTRIES):
                    modules[alias.asname or alias.name] = target
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and isinstance(node.func.value, ast.Name):
            module = modules.get(node.func.value.id)
            if module is not None and f"{module}.{node.func.attr}" in STAGE_ENTRIES:
                direct.append(f"line {node.lineno}: calls {module}.{node.func.attr}")
    assert direct == [], f"{here} calls a stage itself instead of going through schedc.pipeline"


def test_the_stage_guard_sees_an_import_and_a_module_call(tmp_path, monkeypatch):
    fake = tmp_path / "schedc" / "surface" / "fake.py"
    fake.parent.mkdir(parents=True)
    fake.write_text("from schedc.plan import resolve as P\nfrom schedc.lang.syntax import parse\nP.resolve(None)\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", tmp_path / "schedc")
    with pytest.raises(AssertionError, match="calls a stage itself"):
        test_only_the_driver_puts_the_stages_together(fake)
