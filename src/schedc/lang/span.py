"""Source spans: where a node or a diagnostic lies in the text.

Its own module so that reporting diagnostics (schedc.lang.diagnostics) does not import the
node classes: `schedc check` answering from its result cache renders diagnostics without
parsing anything.
"""

from __future__ import annotations

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

    def __lt__(self, other: "Span") -> bool:
        return self._key(self) < self._key(other) if other.__class__ is self.__class__ else NotImplemented

    def __le__(self, other: "Span") -> bool:
        return self._key(self) <= self._key(other) if other.__class__ is self.__class__ else NotImplemented

    def __gt__(self, other: "Span") -> bool:
        return self._key(self) > self._key(other) if other.__class__ is self.__class__ else NotImplemented

    def __ge__(self, other: "Span") -> bool:
        return self._key(self) >= self._key(other) if other.__class__ is self.__class__ else NotImplemented

    def cover(self, other: "Span") -> "Span":
        """The smallest span containing both."""
        first, last = min(self, other), max(self, other, key=lambda s: (s.end_line, s.end_column))
        return Span(first.line, first.column, last.end_line, last.end_column, first.start, last.end)


NO_SPAN = Span(1, 1, 1, 1)
