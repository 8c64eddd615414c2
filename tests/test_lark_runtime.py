"""lark's runtime without its `__init__` (schedc.lang.lark_runtime): `schedc check` with a kept parser
imports no grammar loader and no Earley parser; any later use of lark in the process runs lark's
`__init__` and works; an untested lark version, or a lark already imported, is imported as usual.
Each case runs in a fresh interpreter (this one has imported lark already)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import lark

from schedc.lang import lark_runtime

EXAMPLE = str(Path(__file__).resolve().parent.parent / "examples" / "spectral_line.sched")
# what lark's `__init__` imports and a kept parser does not need
NOT_NEEDED = {"lark.lark", "lark.load_grammar", "lark.parser_frontends", "lark.parsers.earley", "lark.parsers.cyk"}


def fresh(code: str, tmp_path: Path) -> dict:
    """What `code` (run in a new interpreter, its parser cache in `tmp_path`) prints as JSON."""
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.splitlines()[-1])


CHECK = """
import contextlib, io, json, sys
from schedc.cli import main
out = io.StringIO()
with contextlib.redirect_stdout(out):
    status = main(["check", "--no-cache", {file!r}])
print(json.dumps({{"status": status, "out": out.getvalue(), "modules": sorted(sys.modules)}}))
"""


def test_check_with_kept_tables_imports_no_lark(tmp_path):
    """A file that parses is parsed by the tables alone (schedc.lang.lalr), and nothing on the way
    imports what lark's runtime would (docs/performance.md, "Lint start")."""
    fresh(CHECK.format(file=EXAMPLE), tmp_path)  # builds and keeps the parsers and tables (that imports all of lark)
    found = fresh(CHECK.format(file=EXAMPLE), tmp_path)
    assert (found["status"], found["out"].strip()) == (0, "All checks passed!")
    assert not [m for m in found["modules"] if m.split(".")[0] in ("lark", "interegular")]
    assert not {"dataclasses", "inspect", "typing", "logging", "pickle", "threading"} & set(found["modules"])  # (json: CHECK's own)


def test_check_of_a_broken_file_with_a_kept_parser_imports_only_larks_runtime(tmp_path):
    broken = tmp_path / "broken.sched"
    broken.write_text("phase 10 lr < free a >\n")
    fresh(CHECK.format(file=str(broken)), tmp_path)
    found = fresh(CHECK.format(file=str(broken)), tmp_path)
    assert found["status"] == 1 and "E0001" in found["out"]
    assert {"lark", "lark.lexer", "lark.parsers.lalr_parser"} <= set(found["modules"])  # the measurement works
    assert not NOT_NEEDED & set(found["modules"])
    assert "interegular" not in found["modules"]  # (installed here: the test extra)


def test_a_grammar_built_later_has_interegular_as_lark_gives_it(tmp_path):
    """lark.lexer was imported with `interegular` hidden; lark's `__init__` gives it back, so a grammar
    built then is checked with it (strict mode needs it), as with lark imported as usual."""
    code = """
import json, sys
from schedc.lang import lark_runtime
lark_runtime.defer_init()
hidden = "interegular" not in sys.modules and not sys.modules["lark.lexer"].has_interegular
from lark import Lark
lexer = sys.modules["lark.lexer"]
strict = Lark('start: "a"', parser="lalr", strict=True).parse("a").data
print(json.dumps({"hidden": hidden, "given": lexer.has_interegular and lexer.interegular is sys.modules["interegular"], "strict": strict}))
"""
    assert fresh(code, tmp_path) == {"hidden": True, "given": True, "strict": "start"}


def test_without_interegular_lark_is_as_without_it(tmp_path):
    """Where `interegular` does not import (a plain install), lark.lexer stays without it, as lark leaves it."""
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "interegular.py").write_text('raise ImportError("not installed")\n')
    code = f"""
import json, sys
sys.path.insert(0, {str(shim)!r})
from schedc.lang import syntax
items = len(syntax.parse("phase 1 lr 0.1 < free a >").file.items)
from lark import Lark
print(json.dumps({{"items": items, "has": sys.modules["lark.lexer"].has_interegular, "tree": Lark('start: "a"', parser="lalr").parse("a").data}}))
"""
    assert fresh(code, tmp_path) == {"items": 1, "has": False, "tree": "start"}


def test_a_failed_import_of_larks_lexer_leaves_lark_to_be_imported_again(tmp_path):
    """An import of `lark.lexer` that fails (a module of lark's that would not import) leaves no
    half-made lark behind, as a failed import leaves none: the next `import lark` imports it whole."""
    code = """
import json, sys
sys.modules["lark.utils"] = None  # lark.lexer's import fails
from schedc.lang import lark_runtime
try:
    lark_runtime.defer_init()
    failed = False
except ImportError:
    failed = True
del sys.modules["lark.utils"]
import lark
print(json.dumps({"failed": failed, "lark": lark.Lark.__name__}))
"""
    assert fresh(code, tmp_path) == {"failed": True, "lark": "Lark"}


def test_a_later_use_of_lark_runs_its_init(tmp_path):
    code = """
import json, sys
from schedc.lang import lark_runtime, syntax
lark_runtime.defer_init()
deferred = "lark.lark" not in sys.modules and "Lark" not in vars(sys.modules["lark"])
items = len(syntax.parse("phase 1 lr 0.1 < free a >").file.items)
import lark
from lark import Lark, Tree
tree = syntax.parser().parse("phase 1 lr 0.1 < free a >")
print(json.dumps({"deferred": deferred, "items": items, "version": lark.__version__, "tree": isinstance(tree, Tree),
                  "lark": Lark is sys.modules["lark.lark"].Lark, "getattr": "__getattr__" in vars(lark)}))
"""
    found = fresh(code, tmp_path)
    assert found == {"deferred": True, "items": 1, "version": lark.__version__, "tree": True, "lark": True, "getattr": False}


def test_an_untested_version_is_imported_as_usual(tmp_path):
    code = """
import json, re, sys
from schedc.lang import lark_runtime
lark_runtime.TESTED = re.compile("no version")
from schedc.lang import syntax
result = syntax.parse("phase 100 lr < free a >")
print(json.dumps({"whole": "lark.lark" in sys.modules and "Lark" in vars(sys.modules["lark"]), "codes": [d.code for d in result.diagnostics]}))
"""
    assert fresh(code, tmp_path) == {"whole": True, "codes": ["E0001"]}


def test_a_lark_already_imported_is_left_alone():
    before = sys.modules["lark"]
    assert lark_runtime.defer_init() is False
    assert sys.modules["lark"] is before


def test_the_declared_version_is_larks():
    assert lark_runtime.declared_version(importlib.util.find_spec("lark")) == lark.__version__
    assert lark_runtime.version() == lark.__version__
