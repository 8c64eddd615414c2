"""lark's runtime (lexer, LALR parser, tokens, errors) without lark's `__init__`, until it is needed.

Importing any module of lark (`lark.lexer`) first runs `lark/__init__`, which imports the whole
library: the grammar loader, the Earley and CYK parsers, `tempfile`, `getpass`, `ast`... A kept
parser (schedc.lang.syntax) needs none of them, and they were ~15-20 ms of every `schedc check`
(docs/performance.md, "Lint start"). `defer_init()` registers lark's package module before its
`__init__` has run, with a module `__getattr__` (PEP 562) that runs the `__init__` on the first
use of a name of the package itself (`lark.Lark`, `from lark import Tree`, `lark.__version__`).
Modules imported by their own names (`from lark.lexer import Token`) work as always, and so does
any other use of lark in the process: it only runs the `__init__` later.

Only for the lark versions this was tested with (`TESTED`, read from the `__version__` line of
lark's `__init__.py`, not imported); any other version, or a lark already imported, is left to
the import system as it is.

`interegular` (lark's optional dependency, in the `test` extra; ~36 M instructions, ~8% of a fresh
`schedc check`) is used only to check the terminals of a grammar being built, never by a kept
parser: `lark.lexer` is imported with it hidden (lark then records that it has none), and given it
when the `__init__` runs, as lark's own import would have (`_give_interegular_back`: imported in
lark's `try: ... except ImportError`, so a broken install is skipped as lark skips it). A grammar is
built through `lark.Lark`, a name of the package, so it always has it when it is installed.
"""

from __future__ import annotations

import _thread
import importlib.util
import re
import sys

TESTED = re.compile(r"1\.[23]\.\d+$")
_VERSION_LINE = re.compile(rb"""^__version__\s*(?::\s*str\s*)?=\s*["']([^"']+)["']""", re.MULTILINE)
_lock = _thread.allocate_lock()  # (`_thread`, not `threading`: `schedc check` needs no threads)


def defer_init() -> bool:
    """Register lark's package without running its `__init__` (run on first use); True when done,
    False when lark is imported as usual (already imported, not found, or an untested version)."""
    if "lark" in sys.modules:
        return False
    spec = importlib.util.find_spec("lark")
    version = declared_version(spec)
    if version is None or not TESTED.match(version):
        return False
    package = importlib.util.module_from_spec(spec)

    def complete(name: str):
        with _lock:
            if package.__dict__.pop("__getattr__", None) is not None:  # (the first use runs the __init__)
                try:
                    spec.loader.exec_module(package)
                except BaseException:
                    sys.modules.pop("lark", None)  # as a failed import leaves it: the next import tries again
                    raise
                if hidden:
                    _give_interegular_back()
        try:
            return package.__dict__[name]
        except KeyError:
            raise AttributeError(f"module 'lark' has no attribute {name!r}") from None

    package.__getattr__ = complete
    sys.modules["lark"] = package  # (first: `lark.lexer` is then imported without the `__init__`)
    try:
        hidden = _lexer_without_interegular()
    except BaseException:
        sys.modules.pop("lark", None)  # as a failed import leaves it, not half made: the next import runs the `__init__`
        raise
    return True


def _lexer_without_interegular() -> bool:
    """Import `lark.lexer` with `interegular` hidden (True), unless either is imported already (False)."""
    if "interegular" in sys.modules or "lark.lexer" in sys.modules:
        return False
    sys.modules["interegular"] = None  # `import interegular` raises ImportError (lark: has_interegular = False)
    try:
        importlib.import_module("lark.lexer")
    finally:
        del sys.modules["interegular"]
    return True


def _give_interegular_back() -> None:
    """What `lark.lexer` would have had: `interegular`, when it imports."""
    lexer = sys.modules["lark.lexer"]
    try:
        import interegular
    except ImportError:
        return
    lexer.interegular = interegular
    lexer.has_interegular = True


def declared_version(spec) -> str | None:
    """The `__version__` lark's `__init__.py` declares (None when there is no such source file)."""
    if spec is None or not spec.submodule_search_locations or not (spec.origin or "").endswith("__init__.py"):
        return None
    try:
        with open(spec.origin, "rb") as file:
            found = _VERSION_LINE.search(file.read())
    except OSError:
        return None
    return found.group(1).decode() if found else None


def version() -> str:
    """The version of the lark in use, without running its `__init__` when it has not run yet."""
    lark = sys.modules.get("lark")
    loaded = lark.__dict__.get("__version__") if lark is not None else None
    return loaded or declared_version(importlib.util.find_spec("lark")) or importlib.import_module("lark").__version__
