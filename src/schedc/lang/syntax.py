"""Parse `.sched` text into the typed syntax tree (schedc.lang.nodes), with diagnostics.

`parse()` never raises on bad input: every problem becomes a `Diagnostic`.
On a syntax error the file is re-parsed one top-level item at a time
(resynchronising at lines that start with a top-level keyword), so every
syntax error is reported in one run and the items that did parse are still
checked. Lark objects never leave this module.

`parse` runs the LALR tables lark builds from the grammar with callbacks that
build the typed nodes as the parser reduces (`_reducer`): no parse tree is made.
A text that parses runs them without lark (schedc.lang.lalr: lark's runtime
imports `typing`, `logging` and `dataclasses`, a third of a fresh `schedc check`);
one that does not is parsed by lark itself (`_AstParser`), whose errors the
diagnostics are made from. `parser()` is the same grammar building lark trees,
for the language server's interactive parses and the grammar's tests.
"""

from __future__ import annotations

import _thread
import contextlib
import math
import os
import re
import stat
import sys
import types
from bisect import bisect_left, bisect_right
from functools import lru_cache

from schedc.lang import lalr, lark_runtime
from schedc.lang import nodes as n
from schedc.lang.diagnostics import Diagnostic, did_you_mean
from schedc.lang.digest import sha256
from schedc.lang.record import Record, record
from schedc.lang.text import decode, normalize_newlines  # noqa: F401  (decode: re-exported)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from lark import Lark
    from lark.exceptions import UnexpectedInput
    from lark.lexer import Token

# Deeper expressions are refused (E0005) so that every later pass may recurse freely.
MAX_DEPTH = 200
# Integers longer than this read as inf (reported as non-finite): every integer the later
# passes see converts to a float (10**309 does not), and Python refuses > 4300 digits anyway.
_MAX_INT_DIGITS = 300

TOP_LEVEL_KEYWORDS = ("model", "loss", "data", "validation", "eval", "batch", "seed", "optimizer", "lr", "accumulate", "ema", "default", "let", "phase", "repeat", "params")
_ITEM_START = re.compile(r"(?m)^[ \t]*(?:%s)\b" % "|".join(TOP_LEVEL_KEYWORDS))

KEYWORDS = (
    "model loss data seed optimizer accumulate ema default let phase repeat params lr free fix fixed init reset "
    "carry state stop when over after until in at for then true false "
    "validation eval every batch epoch epochs steps evals stops keep"
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


@record
class ParseResult(Record):
    """What `parse` returns: the tree of every item that parsed, the problems found, the comments
    and the text parsed."""

    file: n.File
    diagnostics: list[Diagnostic]
    comments: list[n.Comment]
    text: str

    @property
    def ok(self) -> bool:
        return not any(d.is_error for d in self.diagnostics)


_local = _thread._local()  # (what `threading.local` is, without importing `threading`: ~5 M instructions)


def _collect_comment(token: Token) -> Token:
    sink = getattr(_local, "comments", None)
    if sink is not None:
        sink.append(n.Comment(str(token), _token_span(token)))
    return token


# lark's `lexer_callbacks` (the tables run them too)
_ON_TOKEN = {"COMMENT": _collect_comment}


@lru_cache(maxsize=None)
def parser(strict: bool = False) -> Lark:
    """The LALR parser, built once from the grammar shipped in the package.

    Building the tables (and lark's regex-collision checks) takes ~0.4 s, most of
    a small file's `schedc check`, so lark caches them (`_cache_file`); rebuilding
    lark's objects from its cache still took ~20 ms, so the parser built is also kept
    whole, pickled (`_load`, `_keep`: ~5 ms to load). Both are pickles, and unpickling
    runs code: they are kept where only this user can write, never in the shared
    temporary directory under a guessable name. `strict` (the grammar's test) always
    builds it with lark. Files of older versions are pruned (`_prune`).
    """
    lark_runtime.defer_init()  # (before any import of lark, a pickle's too: its runtime without its `__init__`)
    kept = None if strict else _cache_file(strict, "pickle")
    built = _load(kept, _tree_callbacks) if kept else None
    if built is None:
        from lark import Lark

        from schedc.lang.lark_lexer import LazyContextualLexer

        tables = _cache_file(strict, "lark")
        built = Lark.open_from_package(
            "schedc.lang",
            "sched.lark",
            ("grammar",),
            parser="lalr",
            maybe_placeholders=True,
            strict=strict,
            lexer_callbacks=_ON_TOKEN,
            cache=tables or False,
            _plugins={"ContextualLexer": LazyContextualLexer},
        )
        if tables:  # (lark has just read or written it)
            _prune(tables)
        if kept:
            _keep(built, kept, made_again=(built._callbacks, built._parse_tree_builder))
    return built


class _AstParser:
    """What `parse` runs where the tables alone do not parse (an error, its recovery): the parser's
    lexer and LALR tables, with callbacks that build the typed syntax tree as the parser reduces
    (`_reducer`), where lark's own make a parse tree that would then be converted (lark's
    `transformer=` for LALR; its tables are `parser()`'s, so it parses exactly as that does).
    `parse` returns the file's items as (value, depth, span)."""

    def __init__(self, built: Lark) -> None:
        import copy

        self.lexer = built.parser.lexer
        self.lalr = copy.copy(built.parser.parser)  # the LALR parser and its driver, sharing the tables,
        self.lalr.parser = copy.copy(self.lalr.parser)  # the driver given callbacks of its own
        self.tree_builder = built._parse_tree_builder  # how lark filters and splices a rule's children
        self.terminals = {t.name: t for t in built.terminals}
        self.make_callbacks()

    def make_callbacks(self) -> None:
        self.lalr.parser.callbacks = self.tree_builder.create_callback(_REDUCERS)

    def parse(self, text) -> list[tuple]:
        from lark.lexer import LexerThread

        return self.lalr.parse(LexerThread.from_text(self.lexer, text), "start")

    def get_terminal(self, name: str):
        return self.terminals[name]


@lru_cache(maxsize=None)
def _ast_parser(strict: bool = False) -> _AstParser:
    """`parse`'s lark parser, kept pickled as `parser()` is (its own file: loading it needs none of
    the tree-building parser)."""
    lark_runtime.defer_init()  # (before any import of lark, a pickle's too: its runtime without its `__init__`)
    kept = None if strict else _cache_file(strict, "ast")
    made = _load(kept, _AstParser.make_callbacks) if kept else None
    if made is None:
        tree = parser(strict)
        made = _AstParser(tree)
        if kept:
            _keep(made, kept, made_again=(made.lalr.parser.callbacks, tree._callbacks))
    return made


def _keep(built, path: str, made_again: tuple) -> None:
    """Pickle a parser just built (no state lexed yet) to `path`, all but `made_again` (its callbacks:
    closures, which `_load` makes again); silently nothing when that fails."""
    import importlib
    import pickle

    from lark.parsers.lalr_analysis import Action

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            return "made again" if any(obj is u for u in made_again) else None

        def reducer_override(self, obj):
            if isinstance(obj, Action):  # lark tells shift from reduce by identity: kept by name (once
                return (_action, (obj.name,))  # each: then by the pickle's memo, not 5,000 calls to load)
            if isinstance(obj, types.ModuleType):  # lark holds the `re` module itself
                return (importlib.import_module, (obj.__name__,))
            return NotImplemented

    _write(path, lambda file: Pickler(file, protocol=pickle.HIGHEST_PROTOCOL).dump(built), pickle.PicklingError)


def _write(path: str, dump, *failures: type[Exception]) -> None:
    """Write a private file at `path` by `dump(file)`, whole or not at all (silently nothing when
    that fails: `dump` raising OSError, TypeError, AttributeError or one of `failures`), then prune
    the older files of its kind."""
    partial = f"{path}.{os.getpid()}.tmp"
    try:
        with os.fdopen(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as file:
            dump(file)
        os.replace(partial, path)
    except (OSError, TypeError, AttributeError, ValueError, *failures):
        with contextlib.suppress(OSError):
            os.unlink(partial)
        return
    _prune(path)


# How many files of one kind (`parser-*.pickle`, `.ast`, `.lark`) the cache folder keeps: each
# version of the grammar, lark, Python or this module writes its own. Installs used side by side
# (virtual environments, worktrees) each keep theirs while they are no more than this; the file of
# one whose file was pruned is built and written again on its next run (it is then the newest).
_KEPT_PER_KIND = 8


def _prune(path: str) -> None:
    """Remove the oldest files of `path`'s kind in its folder (by time written) but `path`, so that
    it and the newest others, `_KEPT_PER_KIND` in all, remain: nothing else ever removes them. A
    process still reading a removed file reads it whole; one about to open it finds none and builds
    its parser (`_load` and lark both treat a missing file so)."""
    folder, name = os.path.split(path)
    suffix = name[name.rindex(".") :]
    try:
        with os.scandir(folder) as entries:
            others = [
                (entry.stat(follow_symlinks=False).st_mtime_ns, entry.path)
                for entry in entries
                if entry.name.startswith("parser-") and entry.name.endswith(suffix) and entry.path != path and entry.is_file(follow_symlinks=False)
            ]
    except OSError:
        return
    others.sort(reverse=True)
    for _, old in others[_KEPT_PER_KIND - 1 :]:
        with contextlib.suppress(OSError):
            os.unlink(old)


def _load(path: str, make_callbacks):
    """The parser `_keep` pickled to `path`, its callbacks made again by `make_callbacks(parser)`;
    None when there is none (or it cannot be read: it is built again)."""
    import pickle

    class Unpickler(pickle.Unpickler):
        def persistent_load(self, pid):
            return None  # the callbacks, until made again

    try:
        with open(path, "rb") as file:
            built = Unpickler(file).load()
        make_callbacks(built)
        return built
    except Exception:  # a missing, stale or damaged file (any unpickling error): build the parser again
        return None


def _action(name: str):
    """lark's shift or reduce action, by name (as `_keep` pickles them)."""
    from lark.parsers.lalr_analysis import Reduce, Shift

    return {"Shift": Shift, "Reduce": Reduce}[name]


def _tree_callbacks(built: Lark) -> None:
    """A kept `parser()`'s callbacks, made again as lark does after loading its own cache."""
    built._prepare_callbacks()
    built.parser.parser_conf.callbacks = built.parser.parser.parser.callbacks = built._callbacks


@lru_cache(maxsize=None)
def _tables() -> lalr.Tables | None:
    """The LALR tables `parse` runs without lark (schedc.lang.lalr), read from `_ast_parser()`'s and
    kept (`marshal`: plain data, loaded in C) in a private file as the parsers are; None where there
    is no such file, or where lark's objects are not what `Tables.read` knows (lark then parses
    everything)."""
    kept = _cache_file(False, "tables")
    if kept is None:
        return None
    with contextlib.suppress(OSError, EOFError, ValueError, TypeError, KeyError, IndexError):  # (missing or damaged: read again)
        with open(kept, "rb") as file:
            loaded = lalr.Tables.load(file)
        if loaded is not None:
            return loaded
    made = _ast_parser()
    try:
        tables = lalr.Tables.read(made.lalr.parser, made.lexer, vars(_REDUCERS), _ON_TOKEN)
    except (ImportError, AttributeError, TypeError, ValueError, KeyError, IndexError):  # lark's objects not as lark 1.2-1.3 makes them
        return None
    if tables is not None:
        _write(kept, tables.dump)
    return tables


def _cache_file(strict: bool, kind: str = "lark") -> str | None:
    """Where the parser may be kept (`kind` "lark": lark's tables; "pickle": `parser()` whole; "ast":
    `parse`'s `_AstParser` whole; "tables": `_tables()`): a file in a folder only this user can
    write (~/.cache/schedc, or $XDG_CACHE_HOME/schedc), or None (no cache) when there is no such
    folder (and for "tables" with a lark other than the versions they run as, `lark_runtime.TESTED`). The name carries the grammar, lark and Python versions (and, for the others, the size
    and time of this module and of the modules whose classes or readers made them); lark checks a
    hash of grammar and options again before it uses its file."""
    if not hasattr(os, "getuid"):  # no POSIX ownership to check: build the tables every time
        return None
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    folder = os.path.join(base, "schedc")
    try:
        os.makedirs(folder, mode=0o700, exist_ok=True)
        if not _private(folder):
            return None
        # the grammar's bytes as lark reads them, from the package's loader (a folder or a zip file) as
        # pkgutil.get_data does (importing pkgutil, or importlib.resources, costs ~1-3 ms more)
        grammar = __loader__.get_data(os.path.join(os.path.dirname(__file__), "grammar", "sched.lark"))
        versions = (strict, lark_runtime.version(), sys.version_info[:2])
        if kind == "tables" and not lark_runtime.TESTED.match(versions[1]):  # (they run as lark 1.2-1.3's runtime runs)
            return None
        if kind != "lark":
            for module in (__file__, lalr.__file__, os.path.join(os.path.dirname(__file__), "lark_lexer.py")):
                made_by = os.stat(module)
                versions += (made_by.st_size, made_by.st_mtime_ns)
        key = sha256(grammar + repr(versions).encode()).hexdigest()[:24]
        path = os.path.join(folder, f"parser-{key}.{kind}")
        return path if not os.path.lexists(path) or _private(path) else None
    except OSError:
        return None


def _private(path: str) -> bool:
    """True when `path` is a plain folder or file of this user that no one else may write."""
    info = os.lstat(path)
    kind_ok = stat.S_ISDIR(info.st_mode) or stat.S_ISREG(info.st_mode)
    return kind_ok and info.st_uid == os.getuid() and not info.st_mode & 0o022


def _token_span(tok: Token) -> n.Span:
    return n.Span(tok.line, tok.column, tok.end_line, tok.end_column, tok.start_pos, tok.end_pos)


def _number(text: str) -> float | int:
    digits = text.replace("_", "")
    if re.fullmatch(r"[0-9]+", digits):
        return int(digits) if len(digits) <= _MAX_INT_DIGITS else math.inf
    try:
        return float(digits)
    except (ValueError, OverflowError):
        return math.inf


def underflows(text: str) -> bool:
    """True for a number literal that is not zero but reads as 0.0 (`1e-400`)."""
    if len(text) < 300 and "e" not in text and "E" not in text:  # (then it reads as 0 or as 1e-297 or more)
        return False
    mantissa = re.split("[eE]", text.rstrip("%"))[0]
    return any(c in "123456789" for c in mantissa) and _number(text.rstrip("%")) == 0


def _unquote(text: str) -> str:
    return re.sub(r"\\(.)", lambda m: {"n": "\n", "t": "\t"}.get(m.group(1), m.group(1)), text[1:-1])


# A rule's children are tokens (lark's `Token` or `lalr.Token`: both a `str`), None for an absent
# optional part, and the values of rules reduced before (nodes and tuples, never a `str`).


def _is_token(x, *types: str) -> bool:
    return isinstance(x, str) and x.type in types


def _values(children):
    """Children without keyword tokens and without absent optionals (None)."""
    return [c for c in children if c is not None and not isinstance(c, str)]


class _ToAst:
    """The typed syntax tree's nodes, one method per grammar rule.

    Each method builds the node of the rule it is named after from the rule's
    span and its children: tokens, None for an absent optional part, and the
    values the methods returned for the rules reduced before. The LALR parser
    calls them as it reduces (`_reducer`): no parse tree is built. Each rule's
    span is computed from its first and last child (tokens carry positions,
    and brackets that end a node are named terminals so they stay in the
    tree): the parser needs no position propagation, which was its largest
    single cost.
    """

    # ---- atoms
    def number(self, span, ch):
        return n.Number(_number(str(ch[0])), str(ch[0]), span)

    def percent(self, span, ch):
        text = str(ch[0])
        return n.Percent(_number(text[:-1]) / 100, text, span)

    def string(self, span, ch):
        return n.String(_unquote(str(ch[0])), span)

    def true(self, span, ch):
        return n.Bool(True, span)

    def false(self, span, ch):
        return n.Bool(False, span)

    def name(self, span, ch):
        return n.Name(str(ch[0]), span)

    def placeholder(self, span, ch):
        return n.Placeholder(str(ch[0])[1:], span)

    def qualified(self, span, ch):
        return n.Name("".join(str(t) for t in ch), span)

    # ---- compound expressions
    def call(self, span, ch):
        func, *rest = _values(ch)
        args = tuple(a for a in rest if not isinstance(a, n.Keyword))
        kwargs = tuple(a for a in rest if isinstance(a, n.Keyword))
        return n.Call(func, args, kwargs, span)

    def keyword(self, span, ch):
        return n.Keyword(ch[0], ch[1], span)

    def _binop(op):
        def build(self, span, ch):
            return n.BinOp(op, ch[0], ch[1], span)

        return build

    add, sub, mul, div, pow = _binop("+"), _binop("-"), _binop("*"), _binop("/"), _binop("**")

    def neg(self, span, ch):
        return n.UnaryOp("-", ch[1], span)

    def pos(self, span, ch):
        return n.UnaryOp("+", ch[1], span)

    def arrow(self, span, ch):
        return n.Arrow(tuple(ch), span)

    def then(self, span, ch):
        first, duration, rest = _values(ch)
        if isinstance(rest, n.Then):
            return n.Then((first,) + rest.pieces, (duration,) + rest.durations, span)
        return n.Then((first, rest), (duration,), span)

    def list(self, span, ch):
        return n.List(tuple(_values(ch)), span)

    def map(self, span, ch):
        return n.Map(tuple(_values(ch)), span)

    def map_entry(self, span, ch):
        return n.MapEntry(ch[0], ch[1], span)

    # ---- patterns and phase references
    def pattern(self, span, ch):
        return n.Pattern(str(ch[0]), span)

    def patterns(self, span, ch):
        return tuple(ch)

    def phase_ref(self, span, ch):
        (ref,) = ch
        target = int(str(ref).replace("_", "")) if _is_token(ref, "INT") else ref.id
        return n.PhaseRef(target, span)

    def phase_refs(self, span, ch):
        return tuple(ch)

    # ---- statements
    def free(self, span, ch):
        _, patterns, _, lr, _, optimizer = ch
        return n.Free(patterns, lr, optimizer, span)

    def fix(self, span, ch):
        return n.Fix(ch[1], span)

    def init_dist(self, span, ch):
        return n.Init(ch[1], "dist", ch[2], span)

    def init_value(self, span, ch):
        return n.Init(ch[1], "value", ch[2], span)

    def init_reset(self, span, ch):
        return n.Init(ch[1], "reset", None, span)

    def carry(self, span, ch):
        return n.Carry(span)

    def stop(self, span, ch):
        _, _, metric, threshold, _, over, _, after = ch
        return n.Stop(metric, threshold, over, after, span)

    def stop_improving(self, span, ch):
        metric, trend, patience = _values(ch)
        return n.StopImproving(metric, trend, patience, span)

    def keep(self, span, ch):
        which, metric = _values(ch)
        return n.Keep(which, metric, span)

    def metric(self, span, ch):
        return ch[0]

    def epochs(self, span, ch):
        return n.Epochs(ch[0], span)

    def optimizer_spec(self, span, ch):
        return ch[0]

    def body(self, span, ch):
        return tuple(_values(ch))

    def steps(self, span, ch):
        return ch[0]

    def phase(self, span, ch):
        _, name, steps, unit, _, batch, _, lr, _, optimizer, _, accumulate, _, ema, body = ch
        return n.Phase(name, steps, lr, optimizer, body, span, accumulate, ema, "epochs" if unit is not None else "steps", batch)

    def repeat(self, span, ch):
        count, *items = _values(ch)
        return n.Repeat(count, tuple(items), span)

    # ---- params blocks
    def _spec(kind):
        def build(self, span, ch):
            refs = _values(ch)[0]
            return n.Spec(kind, refs if isinstance(refs, tuple) else (refs,), None, span)

        return build

    free_in, free_after, free_until, fixed_in = _spec("free_in"), _spec("free_after"), _spec("free_until"), _spec("fixed_in")

    def init_at(self, span, ch):
        dist, ref = _values(ch)
        return n.Spec("init_at", (ref,), dist, span)

    def param_entry(self, span, ch):
        patterns, *specs = ch
        return n.ParamEntry(patterns, tuple(specs), span)

    def params(self, span, ch):
        return n.Params(tuple(_values(ch)), span)

    # ---- directives
    def _directive(keyword):
        def build(self, span, ch):
            (value,) = [c for c in ch[1:] if c is not None]
            if isinstance(value, str):  # `default fixed|free`: a token
                value = n.Name(str(value), _token_span(value))
            return n.Directive(keyword, value, span)

        return build

    model_directive, loss_directive, data_directive = _directive("model"), _directive("loss"), _directive("data")
    seed_directive, optimizer_directive = _directive("seed"), _directive("optimizer")
    lr_directive, default_directive = _directive("lr"), _directive("default")
    accumulate_directive, ema_directive = _directive("accumulate"), _directive("ema")
    validation_directive, batch_directive = _directive("validation"), _directive("batch")

    def eval_directive(self, span, ch):
        _, target, every, count, unit = ch
        if count is not None:
            count = n.Number(_number(str(count)), str(count), _token_span(count))
        interval = n.Every(count, "epochs" if unit.type == "EPOCH_UNIT" else "steps", _between(every, unit))
        return n.Directive("eval", target, span, interval)

    def let_directive(self, span, ch):
        _, name, value = ch
        return n.Let(name, value, span)

    del _binop, _spec, _directive


def _reducer(build):
    """The callback lark runs at each reduction of one rule (lark's `transformer=` protocol for LALR,
    in place of the `Tree` it would make): the rule's children are tokens, None (an absent optional
    part) or the (value, depth, span) of a rule reduced before; it returns the rule's own, its
    value made by `build` (a `_ToAst` method), its depth the nesting depth of the tree lark would
    have built (checked against MAX_DEPTH per item)."""

    def reduce(children):
        values, depth, first, last = [], 0, None, None
        for child in children:
            if child.__class__ is tuple:  # a rule's
                values.append(child[0])
                if child[1] > depth:
                    depth = child[1]
                if child[2] is not n.NO_SPAN:
                    first = first or child
                    last = child
            else:
                values.append(child)
                if child is not None:  # a token
                    first = first or child
                    last = child
        span = _between(first, last)
        return build(span, values), depth + 1, span

    return reduce


def _between(first, last) -> n.Span:
    """The span from the first child that has one to the last (tokens or reduced rules; NO_SPAN when
    there is none), without a span for the children between."""
    if first is None:
        return n.NO_SPAN
    if last is first and first.__class__ is tuple:
        return first[2]
    # (read from the tokens themselves: no span made for a token at either end)
    if first.__class__ is tuple:
        line, column, start = first[2].line, first[2].column, first[2].start
    else:
        line, column, start = first.line, first.column, first.start_pos
    if last.__class__ is tuple:
        end_line, end_column, end = last[2].end_line, last[2].end_column, last[2].end
    else:
        end_line, end_column, end = last.end_line, last.end_column, last.end_pos
    return n.Span(line, column, end_line, end_column, start, end)


def _reducers() -> types.SimpleNamespace:
    """A `_reducer` for each rule `_ToAst` builds; `start` (the file) keeps its items' (value, depth,
    span) for `_items`. Rules without one (the inlined `_rules`) are left to lark: a `Tree` whose
    children lark splices into the parent's."""
    builder = _ToAst()
    rules = {name: _reducer(getattr(builder, name)) for name in vars(_ToAst) if not name.startswith("_")}
    return types.SimpleNamespace(**rules, start=lambda items: items)


_REDUCERS = _reducers()


def _describe_expected(expected, lark: _AstParser) -> str:
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


def _keywords_in(expected, lark: _AstParser) -> list[str]:
    out = []
    for term in expected:
        try:
            pattern = lark.get_terminal(term).pattern
        except KeyError:
            continue
        if pattern.type == "re" and pattern.value.endswith(r"\b"):
            out.append(pattern.value[:-2])
    return out


def _syntax_diagnostic(err: UnexpectedInput, text: str, lark: _AstParser) -> Diagnostic:
    from lark.exceptions import UnexpectedCharacters, UnexpectedToken

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


def beyond_limits(message: str, span: n.Span, note: str | None = None, help: str | None = None) -> Diagnostic:
    """E0005 for input nested or sized beyond what a later pass can walk (the checker substituting `let`s)."""
    return Diagnostic("E0005", message, span, notes=(note,) if note else (), help=help)


def unexpected(message: str, span: n.Span) -> Diagnostic:
    """E0001 for text that parses but is not what the caller asked for (one schedule expression)."""
    return Diagnostic("E0001", message, span)


def _too_deep(span: n.Span) -> Diagnostic:
    return beyond_limits(f"expression nested more than {MAX_DEPTH} levels deep", span, "split it with `let` definitions")


def _items(parsed: list[tuple], diagnostics: list[Diagnostic]) -> list[n.Item]:
    """The items of a parse (`_AstParser.parse`), without those nested beyond MAX_DEPTH (E0005)."""
    items = []
    for item, depth, span in parsed:
        if depth > MAX_DEPTH:
            diagnostics.append(_too_deep(span))
            continue
        items.append(item)
    return items


def parse(text: str, *, strict_grammar: bool = False) -> ParseResult:
    """Parse source text. Never raises for any input: problems are diagnostics."""
    text = normalize_newlines(text)
    diagnostics: list[Diagnostic] = []
    comments: list[n.Comment] = []
    _local.comments = comments
    try:
        tables = None if strict_grammar else _tables()
        try:
            if tables is None:
                raise lalr.Rejected
            items = _items(tables.parse(text, vars(_REDUCERS), _ON_TOKEN), diagnostics)
        except lalr.Rejected:  # not parsed without error: lark's errors make the diagnostics
            comments.clear()
            items = _parse_with_lark(text, strict_grammar, comments, diagnostics)
    except RecursionError as exc:  # defensive: limits of the host, not of the input
        diagnostics.append(beyond_limits(f"input exceeds the parser's limits ({type(exc).__name__})", n.Span(1, 1, 1, 2)))
        items = []
    finally:
        _local.comments = None
    span = n.Span(1, 1, *_end_position(text), 0, len(text))
    unique = {c.span.start: c for c in comments}  # recovery may lex a comment twice
    return ParseResult(n.File(tuple(items), span), diagnostics, [unique[k] for k in sorted(unique)], text)


def _parse_with_lark(text: str, strict_grammar: bool, comments: list[n.Comment], diagnostics: list[Diagnostic]) -> list[n.Item]:
    """The items of `text` as lark parses them; on an error, every item that parses (`_recover`)."""
    lark = _ast_parser(strict_grammar)
    from lark.exceptions import UnexpectedInput

    try:
        return _items(lark.parse(text), diagnostics)
    except UnexpectedInput:
        comments.clear()
        return _recover(lark, text, diagnostics)


def _recover(lark: _AstParser, text: str, diagnostics: list[Diagnostic]) -> list[n.Item]:
    """Parse item by item, one diagnostic per broken item, keeping every item that parses.

    An item normally ends at the next line that starts with a top-level keyword; one
    that goes on past it (a `repeat` block, a wrapped header, an unclosed `<`) is
    extended by galloping (1, 2, 4, ... boundaries, then a binary search back), so an
    item spanning k boundaries costs O(k) parsed text, not O(k^2): the whole recovery
    stays linear in the file's size.
    """
    from lark.exceptions import UnexpectedInput

    bounds = [m.start() for m in _ITEM_START.finditer(text) if m.start() > 0] + [len(text)]
    items: list[n.Item] = []
    start = 0
    while start < len(text):
        first = bisect_right(bounds, start)  # bounds[first] is the first boundary after start
        index, outcome = _first_complete(lark, text, start, bounds, first)
        end = bounds[index]
        if not isinstance(outcome, UnexpectedInput):
            items.extend(_items(outcome, diagnostics))
            start = end
            continue
        diagnostics.append(_syntax_diagnostic(outcome, text, lark))
        pos = len(text) if _runs_on(outcome) else _error_offset(outcome)
        start = bounds[max(bisect_left(bounds, pos), first)] if pos < len(text) else len(text)
    return items


def _runs_on(err) -> bool:
    from lark.exceptions import UnexpectedToken

    return isinstance(err, UnexpectedToken) and err.token.type == "$END"


def _first_complete(lark: _AstParser, text: str, start: int, bounds: list[int], first: int):
    """(index of the first boundary at which the text from `start` stops running on, the parse
    tree there or the error); the last boundary (the end of the text) when none does."""
    from lark.exceptions import UnexpectedInput
    from lark.utils import TextSlice

    def attempt(i):
        try:
            return lark.parse(TextSlice(text, start, bounds[i]))
        except UnexpectedInput as err:
            return err

    last = len(bounds) - 1
    below, step = first - 1, 1  # every boundary up to `below` runs on
    while True:
        i = min(below + step, last)
        outcome = attempt(i)
        if i == last or not _runs_on(outcome):
            break
        below, step = i, step * 2
    if _runs_on(outcome):  # it runs on to the end of the text: an unclosed block
        return i, outcome
    # binary search in (below, i]: the first boundary that does not run on
    lo, hi = below + 1, i
    while lo < hi:
        mid = (lo + hi) // 2
        found = attempt(mid)
        if _runs_on(found):
            lo = mid + 1
        else:
            hi, i, outcome = mid, mid, found
    return i, outcome


def _error_offset(err: UnexpectedInput) -> int:
    from lark.exceptions import UnexpectedToken

    if isinstance(err, UnexpectedToken):
        return err.token.start_pos
    return err.pos_in_stream
