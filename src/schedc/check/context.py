"""What the model-free rules share about one file: its facts, computed once, and where findings go.

A rule reads the facts (the `let` environment, the first of each directive, the phases after
`repeat` expansion, the phase whose body the walk is in) and reports through `report`; values
go to the one argument checker, `args`.
"""

from __future__ import annotations

import re

from schedc.check.arguments import ArgumentChecker
from schedc.lang import nodes as n
from schedc.lang.diagnostics import Diagnostic
from schedc.lang.expr import constant, substitute
from schedc.lang.program import env_of, expand, first_lets, oversized_lets
from schedc.lang.syntax import ParseResult

# Directives that may appear at most once (`let` has its own duplicate check).
SINGLE_DIRECTIVES = ("model", "loss", "data", "validation", "eval", "batch", "seed", "optimizer", "lr", "accumulate", "ema", "default")

_LET_NAME = re.compile(r"(?m)^[ \t]*let[ \t]+([A-Za-z_][A-Za-z0-9_]*)")


class PhaseFacts:
    """The phase whose body the walk is in, as its statements' rules need it."""

    def __init__(self, has_lr: bool, steps: int | None = None) -> None:
        self.has_lr = has_lr  # the phase has a learning rate of its own or from the `lr` directive
        self.steps = steps  # None when the step count is invalid (reported)


class Context:
    """The facts of one parsed file and the list its diagnostics go to.

    Raises RecursionError when `let`s are nested beyond the host's stack (the caller reports it).
    """

    def __init__(self, parsed: ParseResult, placeholders: dict, open_placeholders: bool = False):
        self.file = parsed.file
        self.open_placeholders = open_placeholders  # an unbound `$name` is an unknown (linting), not E0110
        # items were lost to syntax errors: phase numbers and names are unreliable, so E0109 is not reported
        self.partial = not parsed.ok
        self.lost_lets = frozenset(_LET_NAME.findall(parsed.text)) if self.partial else frozenset()
        self.bound = {key.lstrip("$") for key in placeholders}
        # placeholders bound to values the checker cannot inspect (a callable schedule) stay Placeholders
        self.env = env_of(self.file, placeholders)
        # lets too large once substituted: left out of `env`, reported once at their definition
        self.oversized = {let.name.id: let for let in oversized_lets(self.file, placeholders)}
        self.lets: dict[str, n.Let] = first_lets(self.file)
        self.directives: dict[str, n.Directive] = {}  # keyword -> its first occurrence
        for item in self.file.items:
            if isinstance(item, n.Directive) and item.keyword in SINGLE_DIRECTIVES:
                self.directives.setdefault(item.keyword, item)
        self.diags: list[Diagnostic] = []
        self._closed: dict[int, tuple[object, object]] = {}
        self.args = ArgumentChecker(self.diags, self.lets, self.lost_lets, self.closed, opaque_placeholders="$" in parsed.text, oversized=frozenset(self.oversized))
        # None past the phase cap (E0211) or for repeats nested beyond the stack: no phase-level checks
        self.phases = expand(self.file, self.count)
        self.phase: PhaseFacts | None = None

    def report(self, diagnostic: Diagnostic) -> None:
        self.diags.append(diagnostic)

    def inherited(self, value, keyword: str):
        """A phase's own `value` for `keyword` (`lr`, `optimizer`), else the directive's (its first
        occurrence), else None."""
        if value is not None:
            return value
        directive = self.directives.get(keyword)
        return directive.value if directive is not None else None

    def closed(self, expr):
        """`expr` with the `let` environment substituted: one object per source node, so a value
        used in several places is checked once (the argument checker remembers nodes)."""
        found = self._closed.get(id(expr))
        if found is None:
            found = self._closed[id(expr)] = (expr, substitute(expr, self.env))
        return found[1]

    def count(self, expr) -> int | None:
        """A step or repeat count: the integer value of `expr`, or None."""
        value = constant(self.closed(expr))
        return value if isinstance(value, int) and not isinstance(value, bool) else None
