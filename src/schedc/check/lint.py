"""The rule framework of the model-free check: small rules, one walk.

A rule is a small class (in the style of miniwdl's Lint.py) with a `visit_<Node>` method for
each node class it looks at (`visit_Let`, `visit_Phase`, `visit_Pattern`, ...) and an optional
`finish`, called once after the walk. `run` walks the file once, parents before children and
in source order, and calls each rule's method for each node of its class. Rules read the
file's facts from the `Context` and report through it; a rule never calls another.
"""

from __future__ import annotations

from schedc.lang import nodes as n
from schedc.lang.syntax import beyond_limits


class Rule:
    """One check. Subclasses define `visit_<NodeClass>(self, node)` methods and maybe `finish`."""

    def __init__(self, ctx):
        self.ctx = ctx

    def finish(self) -> None:
        """Called after the walk: for checks over the whole file (unused names, phase conflicts)."""


def run(ctx, rule_classes, file: n.File) -> None:
    """Walk `file` once, dispatching each node to the rules that look at its class, then finish them."""
    rules = [cls(ctx) for cls in rule_classes]
    table: dict[str, list] = {}
    for rule in rules:
        for attr in dir(rule):
            if attr.startswith("visit_"):
                table.setdefault(attr[len("visit_") :], []).append(getattr(rule, attr))
    for item in file.items:
        deep = False
        for node in n.walk(item):
            for visit in table.get(type(node).__name__, ()):
                try:
                    visit(node)
                except RecursionError:  # lets nested into lets beyond the host's stack
                    if not deep:
                        deep = True
                        ctx.report(beyond_limits("expression nested beyond the checker's limits", getattr(item, "span", n.NO_SPAN), "split it with fewer nested `let`s"))
    for rule in rules:
        rule.finish()
