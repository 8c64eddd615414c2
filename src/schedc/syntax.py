"""Parse `.sched` text into the typed syntax tree (schedc.nodes), with diagnostics.

`parse()` never raises on bad input: every problem becomes a `Diagnostic`.
On a syntax error the file is re-parsed one top-level item at a time
(resynchronising at lines that start with a top-level keyword), so every
syntax error is reported in one run and the items that did parse are still
checked. Lark objects never leave this module.
"""

from __future__ import annotations

import math
import re
import threading
from dataclasses import dataclass, field
from functools import lru_cache

from lark import Lark, Token, Tree
from lark.exceptions import UnexpectedCharacters, UnexpectedInput, UnexpectedToken
from lark.utils import TextSlice

from . import nodes as n
from .diagnostics import Diagnostic, did_you_mean

# Deeper expressions are refused (E0005) so that every later pass may recurse freely.
MAX_DEPTH = 200
# Integers longer than this are not converted (Python refuses > 4300 digits); they read as inf.
_MAX_INT_DIGITS = 400

TOP_LEVEL_KEYWORDS = ("model", "loss", "data", "seed", "optimizer", "lr", "default", "let", "phase", "repeat", "params")
_ITEM_START = re.compile(r"(?m)^[ \t]*(?:%s)\b" % "|".join(TOP_LEVEL_KEYWORDS))

KEYWORDS = (
    "model loss data seed optimizer default let phase repeat params lr free fix fixed init reset "
    "carry state stop when over after until in at for then true false"
).split()

# How terminals are named in messages.
_FRIENDLY = {
    "NAME": "a name",
    "INT": "a number",
    "NUMBER": "a number",
    "PERCENT": "a percentage",
    "STRING": "a string",
    "PATTERN": "a parameter pattern",
    "PLACEHOLDER": "a `$placeholder`",
    "$END": "end of file",
    "_SEMI": "`;`",
}


@dataclass
class ParseResult:
    """What `parse` returns: the tree of every item that parsed, and the problems found."""

    file: n.File
    diagnostics: list[Diagnostic]
    comments: list[n.Comment] = field(default_factory=list)
    text: str = ""

    @property
    def ok(self) -> bool:
        return not any(d.is_error for d in self.diagnostics)


_local = threading.local()


def _collect_comment(token: Token) -> Token:
    sink = getattr(_local, "comments", None)
    if sink is not None:
        sink.append(n.Comment(str(token), _token_span(token)))
    return token


@lru_cache(maxsize=None)
def parser(strict: bool = False) -> Lark:
    """The LALR parser, built once from the grammar shipped in the package.

    `cache=True`: building the tables (and lark's regex-collision checks) takes
    ~0.4 s, most of a small file's `schedc check`; lark pickles them into the temp
    directory under a key of grammar, options, lark and Python versions (so an
    edited grammar invalidates it), and carries on without a cache it cannot write.
    """
    return Lark.open_from_package(
        "schedc",
        "sched.lark",
        ("grammar",),
        parser="lalr",
        propagate_positions=True,
        maybe_placeholders=True,
        strict=strict,
        lexer_callbacks={"COMMENT": _collect_comment},
        cache=True,
    )


def _token_span(tok: Token) -> n.Span:
    return n.Span(tok.line, tok.column, tok.end_line, tok.end_column, tok.start_pos, tok.end_pos)


def _meta_span(meta) -> n.Span:
    if getattr(meta, "empty", True):
        return n.NO_SPAN
    return n.Span(meta.line, meta.column, meta.end_line, meta.end_column, meta.start_pos, meta.end_pos)


def _number(text: str) -> float | int:
    digits = text.replace("_", "")
    if re.fullmatch(r"[0-9]+", digits):
        return int(digits) if len(digits) <= _MAX_INT_DIGITS else math.inf
    try:
        return float(digits)
    except (ValueError, OverflowError):
        return math.inf


def _unquote(text: str) -> str:
    return re.sub(r"\\(.)", lambda m: {"n": "\n", "t": "\t"}.get(m.group(1), m.group(1)), text[1:-1])


def _is_token(x, *types: str) -> bool:
    return isinstance(x, Token) and x.type in types


def _values(children):
    """Children without keyword tokens and without absent optionals (None)."""
    return [c for c in children if c is not None and not isinstance(c, Token)]


class _ToAst:
    """Lark tree -> schedc.nodes, bottom-up and without recursion.

    Each method builds the node of the rule it is named after from the rule's
    `meta` (positions) and its already-converted children. `convert` walks the
    tree iteratively (as lark's Transformer_NonRecursive does, without its
    per-call wrappers, which cost a third of the parse) and measures the
    nesting depth on the way.
    """

    def convert(self, tree: Tree) -> tuple[list, int]:
        """(the rule's value, the tree's depth)."""
        postfix_reversed, queue = [], [tree]
        while queue:
            node = queue.pop()
            postfix_reversed.append(node)
            if isinstance(node, Tree):
                queue.extend(node.children)
        values, depths = [], []
        for node in reversed(postfix_reversed):
            if not isinstance(node, Tree):
                values.append(node)
                depths.append(0)
                continue
            size = len(node.children)
            args = values[len(values) - size :]
            depth = 1 + max(depths[len(depths) - size :], default=0)
            del values[len(values) - size :], depths[len(depths) - size :]
            values.append(getattr(self, node.data)(node.meta, args))
            depths.append(depth)
        return values[0], depths[0]

    # ---- atoms
    def number(self, meta, ch):
        return n.Number(_number(str(ch[0])), str(ch[0]), _meta_span(meta))

    def percent(self, meta, ch):
        text = str(ch[0])
        return n.Percent(_number(text[:-1]) / 100, text, _meta_span(meta))

    def string(self, meta, ch):
        return n.String(_unquote(str(ch[0])), _meta_span(meta))

    def true(self, meta, ch):
        return n.Bool(True, _meta_span(meta))

    def false(self, meta, ch):
        return n.Bool(False, _meta_span(meta))

    def name(self, meta, ch):
        return n.Name(str(ch[0]), _meta_span(meta))

    def placeholder(self, meta, ch):
        return n.Placeholder(str(ch[0])[1:], _meta_span(meta))

    # ---- compound expressions
    def call(self, meta, ch):
        func, *rest = [c for c in ch if c is not None]
        args = tuple(a for a in rest if not isinstance(a, n.Keyword))
        kwargs = tuple(a for a in rest if isinstance(a, n.Keyword))
        return n.Call(func, args, kwargs, _meta_span(meta))

    def keyword(self, meta, ch):
        return n.Keyword(ch[0], ch[1], _meta_span(meta))

    def _binop(op):
        def build(self, meta, ch):
            return n.BinOp(op, ch[0], ch[1], _meta_span(meta))

        return build

    add, sub, mul, div, pow = _binop("+"), _binop("-"), _binop("*"), _binop("/"), _binop("**")

    def neg(self, meta, ch):
        return n.UnaryOp("-", ch[0], _meta_span(meta))

    def pos(self, meta, ch):
        return n.UnaryOp("+", ch[0], _meta_span(meta))

    def arrow(self, meta, ch):
        return n.Arrow(tuple(ch), _meta_span(meta))

    def then(self, meta, ch):
        first, duration, rest = _values(ch)
        if isinstance(rest, n.Then):
            return n.Then((first,) + rest.pieces, (duration,) + rest.durations, _meta_span(meta))
        return n.Then((first, rest), (duration,), _meta_span(meta))

    def list(self, meta, ch):
        return n.List(tuple(c for c in ch if c is not None), _meta_span(meta))

    def map(self, meta, ch):
        return n.Map(tuple(c for c in ch if c is not None), _meta_span(meta))

    def map_entry(self, meta, ch):
        return n.MapEntry(ch[0], ch[1], _meta_span(meta))

    # ---- patterns and phase references
    def pattern(self, meta, ch):
        return n.Pattern(str(ch[0]), _meta_span(meta))

    def patterns(self, meta, ch):
        return tuple(ch)

    def phase_ref(self, meta, ch):
        (ref,) = ch
        target = int(str(ref).replace("_", "")) if _is_token(ref, "INT") else ref.id
        return n.PhaseRef(target, _meta_span(meta))

    def phase_refs(self, meta, ch):
        return tuple(ch)

    # ---- statements
    def free(self, meta, ch):
        _, patterns, _, lr, _, optimizer = ch
        return n.Free(patterns, lr, optimizer, _meta_span(meta))

    def fix(self, meta, ch):
        return n.Fix(ch[1], _meta_span(meta))

    def init_dist(self, meta, ch):
        return n.Init(ch[1], "dist", ch[2], _meta_span(meta))

    def init_value(self, meta, ch):
        return n.Init(ch[1], "value", ch[2], _meta_span(meta))

    def init_reset(self, meta, ch):
        return n.Init(ch[1], "reset", None, _meta_span(meta))

    def carry(self, meta, ch):
        return n.Carry(_meta_span(meta))

    def stop(self, meta, ch):
        _, _, metric, threshold, _, over, _, after = ch
        return n.Stop(metric, threshold, over, after, _meta_span(meta))

    def optimizer_spec(self, meta, ch):
        return ch[0]

    def body(self, meta, ch):
        return tuple(_values(ch))

    def steps(self, meta, ch):
        return ch[0]

    def phase(self, meta, ch):
        _, name, steps, _, lr, _, optimizer, body = ch
        return n.Phase(name, steps, lr, optimizer, body, _meta_span(meta))

    def repeat(self, meta, ch):
        count, *items = _values(ch)
        return n.Repeat(count, tuple(items), _meta_span(meta))

    # ---- params blocks
    def _spec(kind):
        def build(self, meta, ch):
            refs = _values(ch)[0]
            return n.Spec(kind, refs if isinstance(refs, tuple) else (refs,), None, _meta_span(meta))

        return build

    free_in, free_after, free_until, fixed_in = _spec("free_in"), _spec("free_after"), _spec("free_until"), _spec("fixed_in")

    def init_at(self, meta, ch):
        dist, ref = _values(ch)
        return n.Spec("init_at", (ref,), dist, _meta_span(meta))

    def param_entry(self, meta, ch):
        patterns, *specs = ch
        return n.ParamEntry(patterns, tuple(specs), _meta_span(meta))

    def params(self, meta, ch):
        return n.Params(tuple(_values(ch)), _meta_span(meta))

    # ---- directives
    def _directive(keyword):
        def build(self, meta, ch):
            (value,) = [c for c in ch[1:] if c is not None]
            if isinstance(value, Token):  # `default fixed|free`
                value = n.Name(str(value), _token_span(value))
            return n.Directive(keyword, value, _meta_span(meta))

        return build

    model_directive, loss_directive, data_directive = _directive("model"), _directive("loss"), _directive("data")
    seed_directive, optimizer_directive = _directive("seed"), _directive("optimizer")
    lr_directive, default_directive = _directive("lr"), _directive("default")

    def let_directive(self, meta, ch):
        _, name, value = ch
        return n.Let(name, value, _meta_span(meta))

    def start(self, meta, ch):
        return list(ch)

    del _binop, _spec, _directive


_TO_AST = _ToAst()


def _describe_expected(expected, lark: Lark) -> str:
    names = []
    for term in sorted(expected):
        if term in _FRIENDLY:
            names.append(_FRIENDLY[term])
            continue
        try:
            pattern = lark.get_terminal(term).pattern
        except KeyError:
            names.append(term)
            continue
        text = pattern.value
        if pattern.type == "re" and text.endswith(r"\b"):  # keywords
            text = text[:-2]
        names.append(f"`{text}`")
    names = sorted(set(names))
    if len(names) == 1:
        return names[0]
    return "one of " + ", ".join(names[:-1]) + " or " + names[-1]


def _keywords_in(expected, lark: Lark) -> list[str]:
    out = []
    for term in expected:
        try:
            pattern = lark.get_terminal(term).pattern
        except KeyError:
            continue
        if pattern.type == "re" and pattern.value.endswith(r"\b"):
            out.append(pattern.value[:-2])
    return out


def _syntax_diagnostic(err: UnexpectedInput, text: str, lark: Lark) -> Diagnostic:
    if isinstance(err, UnexpectedToken):
        tok = err.token
        expected = err.accepts or err.expected  # accepts: exact, from the interactive parser
        if tok.type == "$END":
            end = len(text.rstrip())
            line, col = _end_position(text[:end])
            span = n.Span(line, col, line, col + 1, end, end)
            return Diagnostic("E0003", f"unexpected end of file, expected {_describe_expected(expected, lark)}", span)
        span = _token_span(tok)
        help = did_you_mean(str(tok), _keywords_in(expected, lark)) if tok.type in ("NAME", "PATTERN") else None
        return Diagnostic(
            "E0001",
            f"unexpected `{tok}`, expected {_describe_expected(expected, lark)}",
            span,
            help=help,
            label="unexpected here",
        )
    assert isinstance(err, UnexpectedCharacters)
    pos = err.pos_in_stream
    char = text[pos] if pos < len(text) else ""
    span = n.Span(err.line, err.column, err.line, err.column + 1, pos, pos + 1)
    shown = char if char.isprintable() else repr(char)[1:-1]
    return Diagnostic("E0002", f"unexpected character `{shown}`", span, label="not allowed here")


def _end_position(text: str) -> tuple[int, int]:
    lines = text.split("\n")
    return len(lines), len(lines[-1]) + 1


def _too_deep(item_tree: Tree) -> Diagnostic:
    meta = item_tree.meta
    return Diagnostic(
        "E0005",
        f"expression nested more than {MAX_DEPTH} levels deep",
        _meta_span(meta),
        notes=("split it with `let` definitions",),
    )


def _convert(tree: Tree, diagnostics: list[Diagnostic]) -> list[n.Item]:
    items = []
    for child in tree.children:
        item, depth = _TO_AST.convert(child)
        if depth > MAX_DEPTH:
            diagnostics.append(_too_deep(child))
            continue
        items.append(item)
    return items


def _parse_slice(lark: Lark, text: str, start: int, end: int) -> Tree:
    return lark.parse(TextSlice(text, start, end))


def parse(text: str, *, strict_grammar: bool = False) -> ParseResult:
    """Parse source text. Never raises for any input: problems are diagnostics."""
    lark = parser(strict_grammar)
    diagnostics: list[Diagnostic] = []
    comments: list[n.Comment] = []
    _local.comments = comments
    try:
        try:
            items = _convert(lark.parse(text), diagnostics)
        except UnexpectedInput:
            comments.clear()
            items = _recover(lark, text, diagnostics)
    except RecursionError as exc:  # defensive: limits of the host, not of the input
        diagnostics.append(Diagnostic("E0005", f"input exceeds the parser's limits ({type(exc).__name__})", n.Span(1, 1, 1, 2)))
        items = []
    finally:
        _local.comments = None
    span = n.Span(1, 1, *_end_position(text), 0, len(text))
    unique = {c.span.start: c for c in comments}  # recovery may lex a comment twice
    return ParseResult(n.File(tuple(items), span), diagnostics, [unique[k] for k in sorted(unique)], text)


def _recover(lark: Lark, text: str, diagnostics: list[Diagnostic]) -> list[n.Item]:
    """Parse item by item, one diagnostic per broken item, keeping every item that parses."""
    bounds = [m.start() for m in _ITEM_START.finditer(text) if m.start() > 0] + [len(text)]
    items: list[n.Item] = []
    start = 0
    while start < len(text):
        for end in (b for b in bounds if b > start):
            try:
                items.extend(_convert(_parse_slice(lark, text, start, end), diagnostics))
                start = end
                break
            except UnexpectedInput as err:
                if isinstance(err, UnexpectedToken) and err.token.type == "$END" and end < len(text):
                    continue  # the item goes on past this boundary (a repeat block, a wrapped header)
                diagnostics.append(_syntax_diagnostic(err, text, lark))
                pos = len(text) if isinstance(err, UnexpectedToken) and err.token.type == "$END" else _error_offset(err)
                start = next((b for b in bounds if b >= pos and b > start), len(text))
                break
        else:
            break
    return items


def _error_offset(err: UnexpectedInput) -> int:
    if isinstance(err, UnexpectedToken):
        return err.token.start_pos
    return err.pos_in_stream


# ---------------------------------------------------------------- reading files


def decode(data: bytes) -> tuple[str | None, Diagnostic | None]:
    """UTF-8 text (a BOM is dropped) or an E0004 diagnostic for binary or undecodable input."""
    if b"\x00" in data:
        offset = data.index(b"\x00")
        return None, Diagnostic("E0004", f"input looks binary (a NUL byte at offset {offset})", _offset_span(data, offset))
    try:
        return data.decode("utf-8-sig"), None
    except UnicodeDecodeError as exc:
        return None, Diagnostic(
            "E0004",
            f"input is not valid UTF-8 (byte 0x{data[exc.start]:02x} at offset {exc.start})",
            _offset_span(data, exc.start),
            notes=("save the file as UTF-8",),
        )


def _offset_span(data: bytes, offset: int) -> n.Span:
    before = data[:offset]
    line = before.count(b"\n") + 1
    column = offset - (before.rfind(b"\n") + 1) + 1
    return n.Span(line, column, line, column + 1, offset, offset + 1)
