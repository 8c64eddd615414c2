"""Source spans: where a node or a diagnostic lies in the text.

Its own module so that reporting diagnostics (schedc.lang.diagnostics) does not import the
node classes: `schedc check` answering from its result cache renders diagnostics without
parsing anything.
"""

from __future__ import annotations

import operator

from schedc.lang.record import Record, record


@record
class Span(Record):
    """A source range: 1-based lines and columns, end exclusive; 0-based offsets. Ordered by its
    fields in turn (as a dataclass with `order=True`)."""

    line: int
    column: int
    end_line: int
    end_column: int
    start: int = 0
    end: int = 0

    def __repr__(self) -> str:
        return f"Span({self.line}:{self.column}-{self.end_line}:{self.end_column})"

    def _ordering(op):  # `self op other`, by the fields in turn
        return lambda self, other: op(self._key(self), self._key(other)) if other.__class__ is self.__class__ else NotImplemented

    __lt__, __le__, __gt__, __ge__ = map(_ordering, (operator.lt, operator.le, operator.gt, operator.ge))
    del _ordering

    def cover(self, other: "Span") -> "Span":
        """The smallest span containing both."""
        first, last = min(self, other), max(self, other, key=lambda s: (s.end_line, s.end_column))
        return Span(first.line, first.column, last.end_line, last.end_column, first.start, last.end)


NO_SPAN = Span(1, 1, 1, 1)
