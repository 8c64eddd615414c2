"""The canonical printer of `.sched` programs (`schedc fmt`).

`unparse(node)` prints any syntax-tree node; `format_source(text)` lays out a
whole file and keeps every comment. The layout is fixed ("canonical over
clever"): one directive per line; `phase ... <`, one statement per line
indented two spaces and ended by `;`, then `>` on its own line (an empty body
prints `<>`); `repeat` and `params` blocks likewise; the specs of a `params`
block aligned; expressions on one line with the fewest parentheses the
precedence needs; at most one blank line where the source had any.

Comments are collected by the lexer (`syntax.parse(...).comments`) and
re-attached by position: a comment after code on its line stays at the end of
the output line that holds that code; a comment on a line of its own is
printed before the next output line (or before the line whose code it sat
inside, when it was inside a construct that now prints on one line).

`format_source` re-parses its own output and refuses (raises `SchedError`)
unless the tree is equal to the input's and no comment was lost, so it never
returns text that means something else. No JAX here.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections import Counter
from dataclasses import dataclass, field

from schedc.lang import nodes as n
from schedc.lang.diagnostics import Diagnostic, SchedError, Source
from schedc.pipeline import read

INDENT = "  "

# Expression precedence, lowest to highest (grammar/sched.lark: `?chain` ... `?atom`).
_THEN, _ARROW, _SUM, _PRODUCT, _UNARY, _POWER, _ATOM = range(1, 8)
_BINOP_PRECEDENCE = {"+": _SUM, "-": _SUM, "*": _PRODUCT, "/": _PRODUCT, "**": _POWER}
_BLANK_LINE = re.compile(r"\n[ \t\r\f\v]*\n")


# ---------------------------------------------------------------- expressions


def _precedence(expr) -> int:
    if isinstance(expr, n.Then):
        return _THEN
    if isinstance(expr, n.Arrow):
        return _ARROW
    if isinstance(expr, n.BinOp):
        return _BINOP_PRECEDENCE[expr.op]
    if isinstance(expr, n.UnaryOp):
        return _UNARY
    return _ATOM


def _quote(value: str) -> str:
    """A string literal that `syntax._unquote` reads back as `value`."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t")
    return f'"{escaped}"'


def _expr(expr, at_least: int = _THEN) -> str:
    """`expr` printed where the grammar needs precedence `at_least`, parenthesised if lower."""
    text = _bare_expr(expr)
    return f"({text})" if _precedence(expr) < at_least else text


def _bare_expr(expr) -> str:
    if isinstance(expr, (n.Number, n.Percent)):
        return expr.text
    if isinstance(expr, n.String):
        return _quote(expr.value)
    if isinstance(expr, n.Bool):
        return "true" if expr.value else "false"
    if isinstance(expr, n.Name):
        return expr.id
    if isinstance(expr, n.Placeholder):
        return "$" + expr.id
    if isinstance(expr, n.Call):
        args = [_expr(a) for a in expr.args] + [_keyword(k) for k in expr.kwargs]
        return f"{expr.func.id}({', '.join(args)})"
    if isinstance(expr, n.List):
        return "[" + ", ".join(_expr(i) for i in expr.items) + "]"
    if isinstance(expr, n.Map):
        return "{" + ", ".join(_map_entry(e) for e in expr.entries) + "}"
    if isinstance(expr, n.UnaryOp):
        return expr.op + _expr(expr.operand, _UNARY)
    if isinstance(expr, n.BinOp):
        if expr.op == "**":  # `atom ** unary`: right-associative
            left, right = _expr(expr.left, _ATOM), _expr(expr.right, _UNARY)
        else:  # left-associative: the right operand binds tighter
            level = _BINOP_PRECEDENCE[expr.op]
            left, right = _expr(expr.left, level), _expr(expr.right, level + 1)
        return f"{left} {expr.op} {right}"
    if isinstance(expr, n.Arrow):
        return " -> ".join(_expr(p, _SUM) for p in expr.points)
    if isinstance(expr, n.Then):
        # Every piece and duration is an `arrow`: a nested Then needs parentheses,
        # else the parser would flatten it into this chain.
        parts = [_expr(expr.pieces[0], _ARROW)]
        for duration, piece in zip(expr.durations, expr.pieces[1:]):
            parts.append(f"for {_expr(duration, _ARROW)} then {_expr(piece, _ARROW)}")
        return " ".join(parts)
    if isinstance(expr, n.Epochs):
        return f"{_expr(expr.count)} {_epochs_word(expr.count)}"
    raise TypeError(f"not an expression: {type(expr).__name__}")


def _epochs_word(count) -> str:
    """`1 epoch`, `3 epochs`: the singular for the literal count 1."""
    return "epoch" if isinstance(count, n.Number) and count.value == 1 else "epochs"


def _keyword(kw: n.Keyword) -> str:
    return f"{kw.name.id}={_expr(kw.value)}"


def _map_entry(entry: n.MapEntry) -> str:
    return f"{_expr(entry.key)}: {_expr(entry.value)}"


# ---------------------------------------------------------------- statements, specs, directives


def _patterns(patterns) -> str:
    return ", ".join(p.text for p in patterns)


def _statement(stmt) -> str:
    if isinstance(stmt, n.Free):
        text = "free " + _patterns(stmt.patterns)
        if stmt.lr is not None:
            text += " lr " + _expr(stmt.lr)
        if stmt.optimizer is not None:
            text += " optimizer " + _expr(stmt.optimizer)
        return text
    if isinstance(stmt, n.Fix):
        return "fix " + _patterns(stmt.patterns)
    if isinstance(stmt, n.Init):
        head = "init " + _patterns(stmt.patterns)
        if stmt.kind == "dist":
            return f"{head} ~ {_expr(stmt.value)}"
        if stmt.kind == "reset":
            return f"{head} = reset"
        value = _expr(stmt.value)
        # after `init P =` the word `reset` is the keyword: keep a name `reset` a name
        return f"{head} = ({value})" if re.match(r"reset\b", value) else f"{head} = {value}"
    if isinstance(stmt, n.Carry):
        return "carry state"
    if isinstance(stmt, n.StopImproving):
        return f"stop when {stmt.metric.id} stops {stmt.trend.id} for {_expr(stmt.patience)} evals"
    if isinstance(stmt, n.Keep):
        return f"keep {stmt.which.id} {stmt.metric.id}"
    if isinstance(stmt, n.Stop):
        text = f"stop when {stmt.metric.id} < {_expr(stmt.threshold)}"
        if stmt.over is not None:
            text += " over " + _expr(stmt.over)
        if stmt.after is not None:
            text += " after " + _expr(stmt.after)
        return text
    raise TypeError(f"not a statement: {type(stmt).__name__}")


def _phase_ref(ref: n.PhaseRef) -> str:
    return str(ref.target)


def _spec(spec: n.Spec) -> str:
    refs = ", ".join(_phase_ref(r) for r in spec.phases)
    if spec.kind == "init_at":
        return f"init {_expr(spec.dist)} at {refs}"
    words = {"free_in": "free in", "free_after": "free after", "free_until": "free until", "fixed_in": "fixed in"}
    return f"{words[spec.kind]} {refs}"


def _specs(entry: n.ParamEntry) -> str:
    return " | ".join(_spec(s) for s in entry.specs)


def _directive(item) -> str:
    if isinstance(item, n.Let):
        return f"let {item.name.id} = {_expr(item.value)}"
    if item.every is not None:  # `eval "m.py:metrics" every epoch | every step | every N steps | every N epochs`
        every = item.every
        if every.count is None:  # (one of its unit)
            return f"{item.keyword} {_expr(item.value)} every {'epoch' if every.unit == 'epochs' else 'step'}"
        unit = _epochs_word(every.count) if every.unit == "epochs" else ("step" if isinstance(every.count, n.Number) and every.count.value == 1 else "steps")
        return f"{item.keyword} {_expr(item.value)} every {_expr(every.count)} {unit}"
    return f"{item.keyword} {_expr(item.value)}"


def _phase_header(phase: n.Phase) -> str:
    parts = ["phase"]
    if phase.name is not None:
        parts.append(phase.name.id)
    parts.append(_expr(phase.steps))
    if phase.unit == "epochs":
        parts.append(_epochs_word(phase.steps))
    if phase.batch is not None:
        parts += ["batch", _expr(phase.batch)]
    if phase.lr is not None:
        parts += ["lr", _expr(phase.lr)]
    if phase.optimizer is not None:
        parts += ["optimizer", _expr(phase.optimizer)]
    if phase.accumulate is not None:
        parts += ["accumulate", _expr(phase.accumulate)]
    if phase.ema is not None:
        parts += ["ema", _expr(phase.ema)]
    return " ".join(parts) + " <"


# ---------------------------------------------------------------- layout


@dataclass
class _Line:
    """One output line of code and the source range it came from.

    `anchor` is where its code starts in the source (offsets), `end` where it
    ends; `kind` is "code", "open" (ends with `<`), "close" (`>`) or "eof".
    """

    depth: int
    text: str
    anchor: int
    end: int
    kind: str = "code"
    before: list[n.Comment] = field(default_factory=list)
    after: list[n.Comment] = field(default_factory=list)


def _layout(items) -> list[_Line]:
    """The output lines of a sequence of top-level items, in source order (an explicit stack: repeats may nest deeply)."""
    lines: list[_Line] = []
    stack: list[tuple[str, object, int]] = [("item", item, 0) for item in reversed(items)]
    while stack:
        what, node, d = stack.pop()
        if what == "close":
            span = node.span
            lines.append(_Line(d, ">", span.end - 1, span.end, "close"))
        elif isinstance(node, (n.Directive, n.Let)):
            lines.append(_Line(d, _directive(node), node.span.start, node.span.end))
        elif isinstance(node, n.Phase):
            header_end = max(x.span.end for x in (node.name, node.steps, node.batch, node.lr, node.optimizer, node.accumulate, node.ema) if x is not None)
            lines.append(_Line(d, _phase_header(node), node.span.start, header_end, "open"))
            lines.extend(_Line(d + 1, _statement(s) + ";", s.span.start, s.span.end) for s in node.body)
            lines.append(_Line(d, ">", node.span.end - 1, node.span.end, "close"))
        elif isinstance(node, n.Repeat):
            lines.append(_Line(d, f"repeat {_expr(node.count)} <", node.span.start, node.count.span.end, "open"))
            stack.append(("close", node, d))
            stack.extend(("item", item, d + 1) for item in reversed(node.items))
        elif isinstance(node, n.Params):
            lines.append(_Line(d, "params <", node.span.start, node.span.start + len("params"), "open"))
            width = max((len(_patterns(e.patterns)) + 1 for e in node.entries), default=0)
            for e in node.entries:
                head = _patterns(e.patterns) + ":"
                lines.append(_Line(d + 1, f"{head:<{width}} {_specs(e)};", e.span.start, e.span.end))
            lines.append(_Line(d, ">", node.span.end - 1, node.span.end, "close"))
        else:
            raise TypeError(f"not a top-level item: {type(node).__name__}")
    return lines


def _attach(lines: list[_Line], comments: list[n.Comment], text: str) -> None:
    """Give each comment to the line it is printed before (`before`) or after (`after`).

    `lines` are in source order and their ranges [anchor, end) do not overlap, so
    the line a position falls in (or follows) is found by bisection.
    """
    anchors = [line.anchor for line in lines]
    for comment in comments:
        start = comment.span.start
        line_start = text.rfind("\n", 0, start) + 1
        code_before = text[line_start:start].rstrip()
        if code_before.strip():  # trailing: it stays with the line holding the code to its left
            last_code = line_start + len(code_before) - 1
            lines[bisect_right(anchors, last_code) - 1].after.append(comment)
            continue
        k = bisect_right(anchors, start)  # lines[k] is the first line starting after the comment
        previous = lines[k - 1] if k else None
        if previous is not None and previous.kind in ("code", "open") and start < previous.end:
            previous.before.append(comment)  # it sat inside that line's code, which now prints on one line
        else:
            lines[k].before.append(comment)
    for line in lines:
        # one comment can end a line; the others move above it, in source order
        line.before.extend(line.after[:-1])
        line.before.sort(key=lambda c: c.span.start)
        del line.after[:-1]


def _merge_empty_blocks(lines: list[_Line]) -> list[_Line]:
    """`header <` + `>` with nothing between prints as `header <>` (unless comments need the two lines)."""
    out: list[_Line] = []
    for line in lines:
        prev = out[-1] if out else None
        if (
            line.kind == "close"
            and prev is not None
            and prev.kind == "open"
            and not line.before
            and len(prev.after) + len(line.after) <= 1
        ):
            out[-1] = _Line(prev.depth, prev.text + ">", prev.anchor, line.end, "code", prev.before, prev.after + line.after)
        else:
            out.append(line)
    return out


@dataclass
class _Row:
    """One line of output: indented code (or a comment alone) and its trailing comment."""

    code: str
    comment: str = ""
    blank_before: bool = False
    aligns: bool = False  # its comment lines up with those of adjacent rows at its depth
    depth: int = 0


def _rows(lines: list[_Line], text: str | None) -> list[_Row]:
    """The output rows; with `text` (the source), a blank line wherever the source had one between two rows.

    No blank line follows an opening `<` or precedes a closing `>`.
    """
    rows: list[_Row] = []
    prev: tuple[int, str] | None = None  # (source end, kind) of the last row

    def add(depth: int, code: str, comment: str, start: int, end: int, kind: str) -> None:
        nonlocal prev
        blank = (
            text is not None
            and prev is not None
            and prev[1] != "open"
            and kind != "close"
            and prev[0] < start
            and _BLANK_LINE.search(text, prev[0], start) is not None
        )
        aligns = bool(comment) and kind != "close"
        rows.append(_Row(INDENT * depth + code if code else "", comment, blank, aligns, depth))
        prev = (end, kind)

    for line in lines:
        comment_depth = line.depth + 1 if line.kind == "close" else line.depth
        for c in line.before:
            add(comment_depth, c.text.rstrip(), "", c.span.start, c.span.end, "comment")
        if line.kind != "eof":
            comment = line.after[0].text.rstrip() if line.after else ""
            add(line.depth, line.text, comment, line.anchor, line.end, line.kind)
    return rows


def _render(lines: list[_Line], text: str | None) -> str:
    """Join the rows; the trailing comments of adjacent rows at one depth line up two spaces after the longest code.

    A closing `>` never joins such a run: its comment sits two spaces after it.
    """
    rows = _rows(lines, text)
    out: list[str] = []
    i = 0
    while i < len(rows):
        j = i + 1
        if rows[i].aligns:  # a run: adjacent rows (no blank line between) at one depth, all ending with a comment
            while j < len(rows) and rows[j].aligns and rows[j].depth == rows[i].depth and not rows[j].blank_before:
                j += 1
        column = max(len(r.code) for r in rows[i:j]) + 2
        for row in rows[i:j]:
            if row.blank_before:
                out.append("")
            out.append(f"{row.code:<{column}}{row.comment}" if row.comment else row.code)
        i = j
    return "\n".join(out) + "\n" if out else ""


# ---------------------------------------------------------------- public API


def unparse(node) -> str:
    """Source text for any syntax-tree node, in the canonical layout, without comments.

    Expressions, patterns, specs and statements print on one line (a statement
    without its `;`); phases, `repeat` and `params` blocks and whole files print
    as `format_source` lays them out. Names are assumed not to be keywords (a
    parsed tree satisfies this).
    """
    if isinstance(node, n.File):
        return _render(_merge_empty_blocks(_layout(node.items)), None)
    if isinstance(node, (n.Phase, n.Repeat, n.Params, n.Directive, n.Let)):
        return _render(_merge_empty_blocks(_layout([node])), None).rstrip("\n")
    if isinstance(node, (n.Free, n.Fix, n.Init, n.Carry, n.Stop)):
        return _statement(node)
    if isinstance(node, n.ParamEntry):
        return f"{_patterns(node.patterns)}: {_specs(node)}"
    if isinstance(node, n.Spec):
        return _spec(node)
    if isinstance(node, n.PhaseRef):
        return _phase_ref(node)
    if isinstance(node, n.Pattern):
        return node.text
    if isinstance(node, n.Keyword):
        return _keyword(node)
    if isinstance(node, n.MapEntry):
        return _map_entry(node)
    if isinstance(node, n.Comment):
        return node.text.rstrip()
    return _expr(node)


def _comment_texts(comments) -> Counter:
    return Counter(c.text.rstrip() for c in comments)


def format_source(text: str, filename: str = "<input>") -> str:
    """The canonical layout of a whole file, every comment kept.

    Line endings follow the source's first line (LF or CRLF).

    Raises:
        SchedError: the source has syntax errors (its diagnostics), or the
            output would not parse to the same tree with the same comments
            (code E0901, an internal error: nothing should be written).
    """
    crlf = text.split("\n", 1)[0].endswith("\r") and "\n" in text
    source = text.replace("\r\n", "\n")
    sources = {filename: Source(filename, text)}
    before = read(source, filename).parsed
    if not before.ok:
        raise SchedError([d.in_file(filename) for d in before.diagnostics], sources)
    lines = _layout(before.file.items)
    lines.append(_Line(0, "", len(source), len(source), "eof"))
    _attach(lines, before.comments, source)
    out = _render(_merge_empty_blocks(lines), source)
    after = read(out, filename).parsed
    problem = None
    if not after.ok:
        problem = "its output does not parse"
    elif after.file != before.file:
        problem = "its output parses to a different program"
    elif _comment_texts(after.comments) != _comment_texts(before.comments):
        problem = "its output lost or changed a comment"
    if problem:
        diagnostic = Diagnostic(
            "E0901",
            f"internal error: the formatter refused this file: {problem}",
            n.Span(1, 1, 1, 2, 0, 1),
            notes=("the file was left unchanged; please report this with the file attached",),
            file=filename,
        )
        raise SchedError([diagnostic], sources)
    return out.replace("\n", "\r\n") if crlf else out
