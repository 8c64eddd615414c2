"""One owner per diagnostic code: each code of the registry is emitted by exactly the module
`CODES[code].owner` names, and by no other.

The source is read, not run: every string constant that is a code (`"E0204"`) in a module of
`schedc` counts as that module emitting it — a `Diagnostic("E0204", ...)`, a code passed to
any helper, a code chosen by a conditional — unless it is only compared with (`d.code ==
"E0901"`). Another module that finds the same kind of problem must ask the owner for the
diagnostic (`schedc.check.conflicts.init_twice`, `schedc.check.patterns.malformed_pattern`, ...).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import schedc
from schedc.lang.diagnostics import CODES

PACKAGE = Path(schedc.__file__).resolve().parent
REGISTRY = "schedc.lang.diagnostics"
CODE = re.compile(r"^[EW]\d{4}$")

# (module, code): mentions that read a code without emitting it, and why.
READS = {
    ("schedc.tooling.lsp", "W0101"): "tags the warning as unnecessary code, which editors show faded",
    ("schedc.surface.builder", "E0401"): "adds spectracles' wording as a note to the resolver's diagnostic",
    ("schedc.surface.builder", "E0402"): "adds spectracles' wording as a note to the resolver's diagnostic",
}


def _module(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _compared(node: ast.AST, parents: dict) -> bool:
    """True when the constant is an operand of a comparison (`==`, `in`) before any call or statement."""
    while node in parents and not isinstance(node, ast.stmt):
        parent = parents[node]
        if isinstance(parent, ast.Compare):
            return True
        if isinstance(parent, ast.Call):
            return False
        node = parent
    return False


def emitters() -> dict[str, set[str]]:
    """code -> the modules that emit it."""
    found: dict[str, set[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        module = _module(path)
        if module == REGISTRY:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        parents = {child: parent for parent in ast.walk(tree) for child in ast.iter_child_nodes(parent)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and CODE.match(node.value):
                if not _compared(node, parents) and (module, node.value) not in READS:
                    found.setdefault(node.value, set()).add(module)
    return found


EMITTERS = emitters()


def test_every_code_is_emitted_by_its_owner_only():
    wrong = {code: sorted(modules) for code, modules in EMITTERS.items() if code in CODES and modules != {CODES[code].owner}}
    assert wrong == {}, f"codes emitted outside their owner (CODES[code].owner): {wrong}"


def test_every_registered_code_has_an_emitter():
    assert sorted(set(CODES) - set(EMITTERS)) == []


def test_every_emitted_code_is_registered():
    assert sorted(set(EMITTERS) - set(CODES)) == []


def test_owners_are_modules_of_schedc():
    modules = {_module(path) for path in PACKAGE.rglob("*.py")}
    assert sorted({code.owner for code in CODES.values()} - modules) == []


def test_the_scan_sees_emissions_and_skips_comparisons():
    # the scan itself: a code in a call's arguments or a conditional is emitted; one compared with is not
    source = 'x = Diagnostic("E0001", "m")\ncode = "E0002" if a else "E0003"\nif d.code == "E0004": pass\nok = any(d.code in ("E0005",) for d in ds)\n'
    tree = ast.parse(source)
    parents = {child: parent for parent in ast.walk(tree) for child in ast.iter_child_nodes(parent)}
    emitted = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str) and CODE.match(n.value) and not _compared(n, parents)}
    assert emitted == {"E0001", "E0002", "E0003"}
