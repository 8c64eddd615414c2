"""The rule about parameter patterns: a pattern that does not compile is E0006, pointing inside it.

The model-free check applies it to every pattern of a file; the resolver, resolving a file
nobody checked, and `build_schedule`, given a Python key that no pattern can write, ask it
for the same diagnostic rather than wording their own.
"""

from __future__ import annotations

from functools import lru_cache

from schedc.check.lint import Rule
from schedc.lang import nodes as n
from schedc.lang.diagnostics import Diagnostic
from schedc.lang.glob import PatternError, check_pattern

_HOW_TO_WRITE = "patterns are dotted names with `*`, `**`, `[i]` and `{a,b}` (docs/language.md)"


@lru_cache(maxsize=4096)
def _pattern_error(text: str) -> PatternError | None:
    """glob's verdict on a pattern text (files repeat the same patterns many times)."""
    return check_pattern(text)


def malformed_pattern(pattern: n.Pattern) -> Diagnostic | None:
    """E0006 at the offending part of a pattern that does not compile, else None."""
    err = _pattern_error(pattern.text)
    if err is None:
        return None
    s, length = pattern.span, max(1, err.length)
    span = n.Span(s.line, s.column + err.offset, s.line, s.column + err.offset + length, s.start + err.offset, s.start + err.offset + length)
    return Diagnostic("E0006", f"malformed pattern `{pattern.text}`: {err.message}", span, help=err.help)


def unwritable_pattern(text: str | None) -> Diagnostic:
    """E0006 for a schedule built in Python that the language cannot write (`text`: the pattern
    that does not survive printing and parsing, or None when it is something else)."""
    what = f"pattern `{text}` is not a schedc pattern" if text else "the schedule cannot be written as a .sched program"
    return Diagnostic("E0006", what, n.Span(1, 1, 1, 2), help=_HOW_TO_WRITE)


class MalformedPatterns(Rule):
    """E0006 for every pattern of the file that does not compile."""

    def visit_Pattern(self, pattern: n.Pattern) -> None:
        problem = malformed_pattern(pattern)
        if problem is not None:
            self.ctx.report(problem)
