"""Parameter patterns: canonical paths and the glob language that matches them.

A canonical path names one parameter: attribute names joined by `.`, `[i]` for
sequence indices, dict keys as `.key` when the key is an identifier and as
`["key"]` otherwise (`layers[0].weight`, `heads["q-proj"].bias`).

A pattern is matched against the whole path (anchored) and case-sensitively:

    name        that component exactly
    coef*       `*` inside a component: any identifier characters, never `.` or `[`
    *           exactly one `.name` component
    **          zero or more whole components (several per pattern allowed)
    [3] [*]     one index; `[*]` is any `[...]` component (index or quoted key)
    ["key"]     a dict key (an identifier key is the same as `.key`)
    {a,b}       alternatives inside a component (`line.{amplitude,width}`)

Each pattern is compiled once to a regular expression over the path written
with a leading `.` before a first name component (`.gp.kernel.lengthscale`), so
that every component starts with `.` or `[` and `**` can be a repetition of
whole components. Pure Python: no JAX.
"""

from __future__ import annotations

import re
from functools import lru_cache

from schedc.lang.record import Record, field, record

# identifiers as Python writes them (`σ`, `vσ_raw`): a letter or `_`, then letters, digits, `_`
_IDENT = re.compile(r"[^\W\d]\w*\Z")
_ID_CHARS = r"\w"
# one whole component of a (normalised) canonical path
_NAME_COMPONENT = r"\.\w++"
_INDEX_COMPONENT = r'\[(?:[0-9]+|"(?:[^"\\\n]|\\[^\n])*")\]'
_ANY_COMPONENTS = f"(?:{_NAME_COMPONENT}|{_INDEX_COMPONENT})*"


class PatternError(ValueError):
    """A malformed pattern; `offset` and `length` locate the problem within its text."""

    def __init__(self, message: str, offset: int = 0, length: int = 1, help: str | None = None):
        super().__init__(message)
        self.message, self.offset, self.length, self.help = message, offset, length, help


# ---------------------------------------------------------------- canonical paths


def format_key(key) -> str:
    """One path component for a dict key: `.key` for identifier strings, `[3]` for ints, `["..."]` otherwise."""
    if isinstance(key, str) and _IDENT.match(key):
        return "." + key
    if isinstance(key, int) and not isinstance(key, bool) and key >= 0:
        return f"[{key}]"
    import json  # (here: a path of identifiers and indices, the usual, needs none)

    return "[" + json.dumps(key if isinstance(key, str) else str(key)) + "]"


def join(components) -> str:
    """A canonical path from components written as `.name` or `[...]` (the leading `.` is dropped)."""
    path = "".join(components)
    return path[1:] if path.startswith(".") else path


def _normal(path: str) -> str:
    """The form patterns are compiled against: every component starts with `.` or `[`."""
    return path if not path or path.startswith("[") else "." + path


_COMPONENT_RE = re.compile(r'\.[^.\[]+|\[(?:[0-9]+|"(?:[^"\\]|\\.)*")\]')


def components(path: str) -> list[str]:
    """The components of a canonical path, each written `.name` or `[...]`."""
    return _COMPONENT_RE.findall(_normal(path))


# ---------------------------------------------------------------- patterns


@record
class CompiledPattern(Record):
    """A pattern's text compiled for matching (the syntax node is `nodes.Pattern`).

    `literal` is the one path it can match when it has no wildcard; `tail` is the
    regex of what follows a leading `**` (None otherwise): such a pattern matches
    a path iff the path ends in components matching `tail`, which a plain search
    finds fast.
    """

    text: str
    regex: re.Pattern = field(repr=False, compare=False)
    literal: str | None = None
    tail: str | None = field(default=None, repr=False, compare=False)

    def match(self, path: str) -> bool:
        if self.literal is not None:
            return path == self.literal
        return self.regex.fullmatch(_normal(path)) is not None


class PathSet:
    """Paths prepared for matching many patterns: one regex scan per pattern, in C.

    `match(pattern)` returns the indices (ascending) of the paths the pattern matches.
    """

    def __init__(self, paths):
        self.paths = list(paths)
        self.index = {p: i for i, p in enumerate(self.paths)}
        normal = [_normal(p) for p in self.paths]
        self._text = "\n" + "\n".join(normal) + "\n"
        # offset of the "\n" before each path -> its index, and of the "\n" after it
        self._start: dict[int, int] = {}
        self._end: dict[int, int] = {}
        offset = 0
        for i, p in enumerate(normal):
            self._start[offset] = i
            offset += len(p) + 1
            self._end[offset] = i
        # inside a quoted key a `.` or `[` is no component boundary: suffix search would be unsound
        self._quoted = any('"' in p for p in normal)

    def match(self, pattern: CompiledPattern) -> list[int]:
        if pattern.literal is not None:
            i = self.index.get(pattern.literal)
            return [] if i is None else [i]
        if pattern.tail == "":
            return list(range(len(self.paths)))
        if pattern.tail is not None and not self._quoted:
            # a match ends where its path ends: at most one per path, found in path order
            end = self._end
            return [end[m.end()] for m in _scanner(pattern.tail + "(?=\n)").finditer(self._text)]
        start = self._start
        return [start[m.start()] for m in _scanner("\n(?:" + pattern.regex.pattern + ")(?=\n)").finditer(self._text)]


@lru_cache(maxsize=4096)
def _scanner(regex: str) -> re.Pattern:
    return re.compile(regex)


@lru_cache(maxsize=4096)
def compile_pattern(text: str) -> CompiledPattern:
    """Compile a pattern once (cached). Raises PatternError on malformed text."""
    parts = _parse(text)
    regex_parts: list[str] = []
    literal: list[str] | None = []
    for kind, value in parts:
        if kind == "**":
            if regex_parts and regex_parts[-1] == _ANY_COMPONENTS:
                continue  # `**.**` means `**`: collapsing keeps backtracking linear
            regex_parts.append(_ANY_COMPONENTS)
            literal = None
        elif kind == "literal":
            regex_parts.append(re.escape(value))
            if literal is not None:
                literal.append(value)
        else:
            regex_parts.append(value)
            literal = None
    tail = "".join(regex_parts[1:]) if regex_parts[0] == _ANY_COMPONENTS else None
    return CompiledPattern(text, re.compile("".join(regex_parts)), join(literal) if literal is not None else None, tail)


def check_pattern(text: str) -> PatternError | None:
    """The problem with a pattern's text, or None when it compiles."""
    try:
        compile_pattern(text)
    except PatternError as err:
        return err
    return None


def _parse(text: str) -> list[tuple[str, str]]:
    """Split a pattern into components: ("literal", ".name" or "[...]"), ("regex", ...) or ("**", "")."""
    if not text:
        raise PatternError("empty pattern", 0, 0)
    out: list[tuple[str, str]] = []
    i, n = 0, len(text)
    first = True
    while i < n:
        c = text[i]
        if c == "[":
            kind, value, i = _index_component(text, i)
            out.append((kind, value))
        else:
            if c == ".":
                if first:
                    raise PatternError("a pattern cannot start with `.`", i)
                i += 1
            elif not first:
                raise PatternError(f"unexpected `{c}`: components are joined by `.`", i)
            end = i
            depth = 0
            while end < n and (depth or text[end] not in ".["):
                if text[end] == "{":
                    if depth:
                        raise PatternError("`{...}` alternatives cannot nest", end)
                    depth = 1
                elif text[end] == "}":
                    if not depth:
                        raise PatternError("`}` without `{`", end)
                    depth = 0
                end += 1
            if depth:
                raise PatternError("`{` is never closed", i + text[i:end].index("{"), end - i)
            if end == i and end < n and text[end] == "[":
                _index_component(text, end)  # a malformed `[...]` is the better message
                raise PatternError("no `.` before `[`: write `name[0]`", i - 1, 1)
            out.append(_name_component(text, i, end))
            i = end
        first = False
    return out


def _string_end(text: str, i: int) -> int:
    """Index of the `]` closing a `["..."]` component whose `"` is at `i`."""
    j = i + 1
    while j < len(text):
        if text[j] == "\\":
            j += 2
            continue
        if text[j] == '"':
            if j + 1 < len(text) and text[j + 1] == "]":
                return j + 1
            break
        j += 1
    raise PatternError('`["key"]` is not closed', i - 1, len(text) - i + 1)


def _index_component(text: str, i: int) -> tuple[str, str, int]:
    """`[3]`, `[*]` or `["key"]` starting at `text[i] == "["`: (kind, value, index after it)."""
    if text.startswith('["', i):
        import json

        end = _string_end(text, i + 1)
        try:
            key = json.loads(text[i + 1 : end])
        except ValueError:
            raise PatternError("malformed key string", i, end + 1 - i) from None
        return "literal", format_key(key), end + 1
    close = text.find("]", i)
    inner = text[i + 1 : close] if close > 0 else ""
    if close < 0:
        raise PatternError("`[` is never closed", i, len(text) - i)
    if inner == "*":
        return "regex", _INDEX_COMPONENT, close + 1
    if inner.isdigit() and inner.isascii():
        return "literal", f"[{int(inner)}]", close + 1
    raise PatternError(
        "`[...]` takes an index, `*` or a quoted key",
        i,
        close + 1 - i,
        help="character classes such as `[cd]` are not patterns here; use `{c,d}` alternatives",
    )


def _name_component(text: str, start: int, end: int) -> tuple[str, str]:
    """A dotted component `text[start:end]`: identifier characters, `*` and `{a,b}`."""
    comp = text[start:end]
    if not comp:
        raise PatternError("empty component", max(0, start - 1), 1)
    if comp == "**":
        return "**", ""
    if "**" in comp:
        at = start + comp.index("**")
        fixed = text[:start] + comp.replace("**", "*") + text[end:]
        raise PatternError(
            "`**` must be a whole component",
            at,
            2,
            help=f"write `{text[:start] + comp.replace('**', '') + '.**' + text[end:]}` for any depth below, or `{fixed}` within one name",
        )
    if comp == "*":
        return "regex", _NAME_COMPONENT
    pieces: list[str] = []
    has_wild = False
    k = 0
    while k < len(comp):
        c = comp[k]
        if c == "*":
            pieces.append(_ID_CHARS + "*")
            has_wild = True
            k += 1
        elif c == "{":
            close = comp.index("}", k)
            options = comp[k + 1 : close].split(",")
            for o, option in enumerate(options):
                bad = next((ch for ch in option if not (ch == "*" or ch == "_" or ch.isalnum())), None)
                if bad is not None:
                    raise PatternError(f"unexpected `{bad}` in alternatives", start + k, close + 1 - k)
            alts = "|".join("".join(_ID_CHARS + "*" if ch == "*" else re.escape(ch) for ch in option) for option in options)
            pieces.append(f"(?:{alts})")
            has_wild = True
            k = close + 1
        elif c == "_" or c.isalnum():
            pieces.append(re.escape(c))
            k += 1
        else:
            help = None
            if c == "?":
                help = "`?` is not a wildcard here; use `*` or `{a,b}` alternatives"
            raise PatternError(f"unexpected `{c}` in a pattern", start + k, 1, help=help)
    if not has_wild:
        if comp[0].isdigit():
            raise PatternError(f"`{comp}` is not a name; write `[{comp}]` for an index" if comp.isdigit() else f"`{comp}` is not a name", start, len(comp))
        return "literal", "." + comp
    # atomic and bounded: a component matches whole, in exactly one way (no backtracking into it)
    return "regex", r"(?>\." + "".join(pieces) + r"(?!\w))"
