"""DSL text embedded in Python: where it sits in the `.py` file, so that diagnostics point there.

`schedc.compile('''...''', model)` called from a `.py` file reports problems at
that file's lines and columns. The caller's file is parsed with `ast` (cached
per version of the file); the string literal whose value is the text, nearest
the calling line, is located, and its source is decoded character by character
so that every character of the DSL text maps to its position in the file, even
through escapes (`\\n`, `\\"`), line continuations and implicitly concatenated
literals. DSL text built with an f-string is refused: values go in as
`$name` placeholders, bound from keyword arguments as values, never spliced
into the text (placeholders become syntax nodes in `schedc.pipeline.bind_placeholders`).
"""

from __future__ import annotations

import ast
import inspect
import io
import os
import tokenize
from pathlib import Path

from schedc.lang.diagnostics import Source

_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the schedc package root
_TREES: dict[tuple[str, int], tuple[str, ast.AST] | None] = {}  # (file, mtime_ns) -> (content, tree)


class EmbeddingError(TypeError):
    """DSL text built in a way that defeats checking (an f-string)."""


def caller() -> tuple[str, int] | None:
    """(file name, line) of the first frame outside the schedc package, or None."""
    frame = inspect.currentframe()
    try:
        while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(_PACKAGE + os.sep):
            frame = frame.f_back
        return (frame.f_code.co_filename, frame.f_lineno) if frame is not None else None
    finally:
        del frame


def _tree(filename: str) -> tuple[str, ast.AST] | None:
    try:
        key = (filename, os.stat(filename).st_mtime_ns)
    except OSError:
        return None
    if key not in _TREES:
        try:
            content = Path(filename).read_text(encoding="utf-8")
            _TREES[key] = (content, ast.parse(content, filename))
        except (OSError, UnicodeDecodeError, SyntaxError, ValueError):
            _TREES[key] = None
    return _TREES[key]


def embedded_source(text: str) -> Source:
    """The `Source` of DSL text passed to `schedc.compile` from Python: positions map into the caller's file.

    Falls back to `<string>` (positions in the text itself) when the caller is not a
    readable file or the text is not a string literal in it.

    Raises:
        EmbeddingError: when the text is an f-string argument of the calling line.
    """
    plain = Source("<string>", text)
    where = caller()
    if where is None or not os.path.isfile(where[0]):
        return plain
    filename, line = where
    found = _tree(filename)
    if found is None:
        return plain
    content, tree = found
    _refuse_fstring(tree, line)  # first: the same text may also be a literal elsewhere in the file
    literals = [node for node in ast.walk(tree) if isinstance(node, ast.Constant) and node.value == text and isinstance(node.value, str)]
    if not literals:
        return plain
    literal = min(literals, key=lambda node: (abs(node.lineno - line), node.lineno))
    positions = _positions(content, literal)
    if positions is None or len(positions) != len(text) + 1:
        return Source(filename, text, literal.lineno - 1, 0, locate=lambda _l, _c, at=literal.lineno: (at, 1))
    return Source(filename, text, locate=_locator(text, positions))


def _refuse_fstring(tree: ast.AST, line: int) -> None:
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and node.lineno <= line <= (node.end_lineno or node.lineno):
            named = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", None)
            if named == "compile" and node.args and isinstance(node.args[0], ast.JoinedStr):  # (not `re.search(f"...")` beside it)
                raise EmbeddingError(
                    "schedc.compile: the schedule text is an f-string; write `$name` placeholders in the text and pass "
                    "name=value to schedc.compile (values are bound as values, never spliced into the text)"
                )


def _locator(text: str, positions: list[tuple[int, int]]):
    starts = [0] + [i + 1 for i, ch in enumerate(text) if ch == "\n"]

    def locate(line: int, column: int) -> tuple[int, int]:
        if line < 1:
            return positions[0]
        if line > len(starts):
            return positions[-1]
        index = min(starts[line - 1] + column - 1, len(text))
        return positions[max(0, index)]

    return locate


def _positions(content: str, literal: ast.Constant) -> list[tuple[int, int]] | None:
    """(line, column), 1-based, in the file of every character of the literal's value, plus one past the end."""
    lines = content.splitlines(keepends=True)
    start = _char_column(lines, literal.lineno, literal.col_offset)
    end = _char_column(lines, literal.end_lineno, literal.end_col_offset)
    if start is None or end is None:
        return None
    segment = "".join(lines[literal.lineno - 1 : literal.end_lineno])
    segment = segment[start : len(segment) - len(lines[literal.end_lineno - 1]) + end]
    try:
        tokens = [t for t in tokenize.generate_tokens(io.StringIO(segment).readline) if t.type == tokenize.STRING]
    except (tokenize.TokenError, SyntaxError):
        return None
    out: list[tuple[int, int]] = []
    for token in tokens:
        line0 = literal.lineno + token.start[0] - 1
        col0 = token.start[1] + (start if token.start[0] == 1 else 0)
        decoded = _decode(token.string, line0, col0)
        if decoded is None:
            return None
        out = out[:-1] + decoded  # each token's end position gives way to the next token's characters
    return out or None


def _char_column(lines: list[str], lineno: int, byte_offset: int) -> int | None:
    """ast's column (a UTF-8 byte offset) as a character offset."""
    if not 0 < lineno <= len(lines):
        return None
    return len(lines[lineno - 1].encode("utf-8")[:byte_offset].decode("utf-8", "ignore"))


_SIMPLE = set("\\'\"abfnrtv")


def _decode(token: str, line: int, col: int) -> list[tuple[int, int]] | None:
    """Positions (1-based) of each character one string token's value, plus the closing quote's."""
    i = 0
    while token[i] not in "'\"":
        i += 1
    prefix = token[:i].lower()
    if "f" in prefix or "b" in prefix:
        return None
    quote = token[i : i + 3] if token[i : i + 3] in ('"""', "'''") else token[i]
    body_start, body_end = i + len(quote), len(token) - len(quote)
    raw = "r" in prefix
    # (line, column) of each index of the token
    where = []
    l, c = line, col
    for ch in token:
        where.append((l, c + 1))
        l, c = (l + 1, 0) if ch == "\n" else (l, c + 1)
    out = []
    j = body_start
    while j < body_end:
        ch = token[j]
        if ch != "\\" or raw:
            if raw and ch == "\\" and j + 1 < body_end:  # a raw string keeps the backslash and the next character
                out += [where[j], where[j + 1]]
                j += 2
                continue
            out.append(where[j])
            j += 1
            continue
        nxt = token[j + 1]
        if nxt == "\n":
            j += 2
        elif nxt in _SIMPLE:
            out.append(where[j])
            j += 2
        elif nxt in "01234567":
            k = j + 1
            while k < min(j + 4, body_end) and token[k] in "01234567":
                k += 1
            out.append(where[j])
            j = k
        elif nxt in "xuU":
            out.append(where[j])
            j += 2 + {"x": 2, "u": 4, "U": 8}[nxt]
        elif nxt == "N":
            out.append(where[j])
            j = token.index("}", j) + 1
        else:  # an unknown escape keeps its backslash
            out += [where[j], where[j + 1]]
            j += 2
    out.append(where[body_end] if body_end < len(where) else where[-1])
    return out
