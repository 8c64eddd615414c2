"""`schedc check --format json` on every .sched file under tests/ and examples/ is what it was before
the front end was rebuilt around `schedc.pipeline` (tests/data/diagnostics_snapshot.json, written by
tools/diagnostics_snapshot.py). A deliberate change of a diagnostic regenerates the file:

    python tools/diagnostics_snapshot.py > tests/data/diagnostics_snapshot.json
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STORED = ROOT / "tests" / "data" / "diagnostics_snapshot.json"


def _tool():
    spec = importlib.util.spec_from_file_location("diagnostics_snapshot", ROOT / "tools" / "diagnostics_snapshot.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_check_output_matches_the_snapshot():
    tool = _tool()
    stored = json.loads(STORED.read_text())
    current = tool.snapshot()
    changed = tool.differences(stored, current)
    assert changed == [], {key: {"stored": stored.get(key), "now": current.get(key)} for key in changed[:3]}


def test_the_comparison_sees_a_changed_a_missing_and_a_new_entry():
    tool = _tool()
    stored = {"a.sched": [{"code": "E0101", "line": 1}], "b.sched": [], "c.sched": []}
    current = {"a.sched": [{"code": "E0101", "line": 2}], "b.sched": [], "d.sched": []}
    assert tool.differences(stored, current) == ["a.sched", "c.sched", "d.sched"]
    assert tool.differences(stored, dict(stored)) == []
