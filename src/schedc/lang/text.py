"""A schedule's bytes as text: UTF-8 decoding (E0004 for anything else) and line endings.

Apart from the parser (schedc.lang.syntax) so that `schedc check` can rebuild a file's
text for its cached diagnostics without importing lark.
"""

from __future__ import annotations

import re

from schedc.lang.diagnostics import Diagnostic
from schedc.lang.span import Span

_LONE_CR = re.compile(r"\r(?!\n)")


def normalize_newlines(text: str) -> str:
    """Old Mac line endings (a lone CR) as LF: the same length, so offsets stay valid, and lines
    are counted as editors count them (a `#` comment ends at a CR, not at the end of the file)."""
    return _LONE_CR.sub("\n", text) if "\r" in text else text


def decode(data: bytes) -> tuple[str | None, Diagnostic | None]:
    """UTF-8 text (a BOM is dropped) or an E0004 diagnostic for binary or undecodable input."""
    if b"\x00" in data:
        offset = data.index(b"\x00")
        return None, Diagnostic("E0004", f"input looks binary (a NUL byte at offset {offset})", _offset_span(data, offset))
    try:
        return normalize_newlines(data.decode("utf-8-sig")), None
    except UnicodeDecodeError as exc:
        return None, Diagnostic(
            "E0004",
            f"input is not valid UTF-8 (byte 0x{data[exc.start]:02x} at offset {exc.start})",
            _offset_span(data, exc.start),
            notes=("save the file as UTF-8",),
        )


def _offset_span(data: bytes, offset: int) -> Span:
    before = data[:offset]
    line = before.count(b"\n") + 1
    column = offset - (before.rfind(b"\n") + 1) + 1
    return Span(line, column, line, column + 1, offset, offset + 1)
