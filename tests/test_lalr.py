"""The LALR tables run without lark (schedc.lang.lalr): read out of the parser lark builds, kept
between processes, they parse every text lark parses as lark does (the same items, depths, every
node's span, the same comments), with their lexers' first-character index or trying every
terminal everywhere, and refuse every text lark refuses, which `parse` then gives to lark for its diagnostics."""

from __future__ import annotations

import copy
import functools
import io
import os
import types
from functools import lru_cache

import lark.parse_tree_builder
import pytest
from hypothesis import given
from hypothesis import strategies as st
from lark.exceptions import UnexpectedInput
from test_fuzz import _examples, files, mutated
from test_syntax_kept_parser import spans
from test_syntax_lexer import BROKEN, TEXTS, stock_parser

from schedc.lang import lalr, syntax
from schedc.tooling.fmt import unparse


@pytest.fixture
def cache_home(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    syntax._tables.cache_clear()
    yield tmp_path / "schedc"
    syntax._tables.cache_clear()


def read_tables(made=None) -> lalr.Tables:
    made = made or syntax._ast_parser()
    return lalr.Tables.read(made.lalr.parser, made.lexer, vars(syntax._REDUCERS), syntax._ON_TOKEN)


def by_tables(tables: lalr.Tables, text: str):
    """What the tables make of `text`: every item (value, depth, span, every node's span) and comment, or Rejected."""
    comments = []
    try:
        items = tables.parse(text, vars(syntax._REDUCERS), {"COMMENT": lambda token: comments.append(syntax._token_span(token)) or token})
    except lalr.Rejected:
        return "rejected"
    return [(item, depth, span, spans(item)) for item, depth, span in items], comments


def by_lark(text: str):
    comments = []
    syntax._local.comments = comments
    try:
        items = syntax._ast_parser().parse(text)
    except UnexpectedInput:
        return "rejected"
    finally:
        syntax._local.comments = None
    return [(item, depth, span, spans(item)) for item, depth, span in items], [c.span for c in comments]


# names past ASCII (where the lexers' first-character index tries every terminal), one broken
NON_ASCII = ["let σ = 0.1\nphase ä 10 lr σ < free vσ_raw, λ.*; init ä.b ~ normal(0, σ) >\n", "phase 10 lr 0.1 < free a; é€ >\n"]
ALL_TEXTS = [syntax.normalize_newlines(p.read_bytes().decode("utf-8-sig", "replace")) for p in TEXTS] + BROKEN + NON_ASCII


def unindexed(tables: lalr.Tables) -> lalr.Tables:
    """`tables` whose lexers try every terminal at every character, none as a literal (as if
    `lalr.shape` knew nothing)."""
    for lexer in set(tables.lexer_of):
        lexer.patterns, lexer.at = [(regexp, name, None, None) for regexp, name, *_ in lexer.patterns], {}
    return tables


@pytest.mark.parametrize("indexed", [True, False])
def test_parses_as_lark(indexed):
    tables = read_tables() if indexed else unindexed(read_tables())
    parsed = 0
    for text in ALL_TEXTS:
        for _ in range(2):  # the second time, the lexers' candidates are those kept from the first
            found = by_tables(tables, text)
            assert found == by_lark(text), text[:80]
        parsed += found != "rejected"
    assert parsed > 20 and all(by_tables(tables, text) == "rejected" for text in BROKEN)


def test_a_lexer_tries_only_the_terminals_a_token_at_the_character_can_be():
    tables = read_tables()
    tables.parse("phase 10 lr 0.1 < free a.b; init c ~ normal(0, 1) >\n" * 3, vars(syntax._REDUCERS), {})
    narrowed = 0
    for lexer in set(tables.lexer_of):
        for char, candidates in lexer.at.items():
            expected = [(literal, name) for _, name, first, literal in lexer.patterns if first is None or char in first]
            assert [(literal, name) for literal, _, name in candidates] == expected
            assert all((match is None) == (literal is not None) for literal, match, _ in candidates)  # a literal is never compiled
            narrowed += len(candidates) < len(lexer.patterns)
    assert narrowed > 10


@lru_cache(maxsize=None)
def grammar_terminals() -> list:
    """(regexp, flags) of every terminal of the grammar's lexers."""
    tables = read_tables()
    return sorted({(regexp, lexer.flags) for lexer in set(tables.lexer_of) for regexp, *_ in lexer.patterns})


def test_every_terminal_s_first_characters_are_known():
    assert all(lalr.shape(regexp, flags)[0] for regexp, flags in grammar_terminals())


@_examples(100)
@given(st.data())
def test_a_terminal_s_match_begins_with_one_of_its_first_characters(data):
    regexp, flags = data.draw(st.sampled_from(grammar_terminals()))
    first, literal = lalr.shape(regexp, flags)
    text = data.draw(st.from_regex(regexp, fullmatch=True))
    assert text and (text[0] in first or text[0] >= "\x80")
    assert literal is None or text == literal


@pytest.mark.parametrize(
    "regexp, first, literal",
    [
        ("abc", "a", "abc"),
        (r"\-\>", "-", "->"),
        (r"model\b", "m", None),
        (r"(a|)b", "ab", None),
        (r"x?[0-2]+", "012x", None),
        (r"(?=b)\d|c", "0123456789c", None),  # (a lookahead only narrows: the set may be larger than the matches)
        (r"[^\W\d]\w*", "ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz", None),
        (r"(?i)abc", None, None),  # case folded: not known
        (r"a*", None, None),  # can match nothing
        (r"(a)?\1", None, None),  # a back reference: not read
    ],
)
def test_shape(regexp, first, literal):
    assert lalr.shape(regexp, 0) == (first, literal)


def test_a_pattern_not_read_is_tried_at_every_character():
    scan = lalr.Scan([("x", "X", "x", "x"), (r"(a)?\1a|b", "B", *lalr.shape(r"(a)?\1a|b", 0))], 0)
    assert scan.match("aaa", 0, 3) == ("aaa", "B") and scan.match("xb", 0, 2) == ("x", "X") and scan.match("é", 0, 1) is None
    assert [name for _, _, name in scan.at["x"]] == ["X", "B"] and [name for _, _, name in scan.at["é"]] == ["X", "B"]


def test_a_rule_whose_value_is_its_one_child_only_changes_the_state():
    """`Tables.passes` flags the rules whose value `_reduce` makes the one child itself (the parse
    loop then replaces the top state and nothing else); a flagged rule of another kind would drop a
    node or a list from the tree."""
    tables = read_tables()
    child, reducers = object(), vars(syntax._REDUCERS)
    for (_, length, include, append_none, single, reducer), passes in zip(tables.rules, tables.passes):
        if passes:
            assert lalr._reduce([child], include, append_none, single, reducers.get(reducer)) is child
        elif length == 1 and include == ((0, False, 0),) and reducers.get(reducer) is None:
            assert lalr._reduce([child], include, append_none, single, None) is not child
    assert sum(tables.passes) > 20  # (an expression's precedence levels among them)


def test_a_rule_that_keeps_every_child_as_it_is_gives_them_to_its_reducer():
    """`Tables.keeps_all` flags the rules for which `_reduce` keeps the children as they are (the
    parse loop then hands them to the reducer itself)."""
    tables = read_tables()
    for (_, length, include, append_none, single, _), keeps_all in zip(tables.rules, tables.keeps_all):
        children = [object() for _ in range(length)]
        if keeps_all:
            assert lalr._reduce(list(children), include, append_none, single, None) == children
    assert sum(tables.keeps_all) > 20


@pytest.mark.parametrize("made", ["kept", "built"])
def test_kept_as_plain_data(made):
    """Read from the parser kept, or from one lark has just built (with lark's own lexer: its
    symbols are lark's `Token`s, not `str`s), and written, the tables parse as lark does."""
    tables = read_tables(None if made == "kept" else syntax._AstParser(stock_parser()))
    file = io.BytesIO()
    tables.dump(file)
    file.seek(0)
    loaded = lalr.Tables.load(file)
    for text in ALL_TEXTS:
        assert by_tables(loaded, text) == by_lark(text), text[:80]


def test_parse_keeps_the_tables_then_loads_them_without_lark(cache_home, monkeypatch):
    text = "# a comment\nphase 10 lr 0.1 < free a >  # another\n"
    first = syntax.parse(text)
    (kept,) = sorted(cache_home.glob("parser-*.tables"))
    assert (kept.stat().st_mode & 0o077) == 0
    syntax._tables.cache_clear()
    monkeypatch.setattr(syntax, "_ast_parser", lambda *a: pytest.fail("lark used for a text that parses"))
    again = syntax.parse(text)
    assert (again.file, again.comments, again.diagnostics) == (first.file, first.comments, first.diagnostics) and len(again.comments) == 2


@pytest.mark.parametrize("content", [b"", b"not marshal", b"\xe3\x00\x00\x00\x00", b"\xfb0"])
def test_damaged_tables_are_read_again(cache_home, content):
    syntax.parse("phase 10 < free a >")
    (kept,) = sorted(cache_home.glob("parser-*.tables"))
    kept.write_bytes(content)
    syntax._tables.cache_clear()
    assert syntax.parse("phase 10 lr 0.1 < free a >").file.items[0].steps.value == 10
    assert kept.read_bytes() != content


def test_tables_others_can_write_are_never_loaded(cache_home):
    syntax.parse("phase 10 < free a >")
    (kept,) = sorted(cache_home.glob("parser-*.tables"))
    os.chmod(kept, 0o666)
    assert syntax._cache_file(False, "tables") is None


def test_a_text_lark_refuses_is_diagnosed_by_lark(cache_home):
    """The tables refuse it; `parse` reports lark's errors and keeps every item that parses."""
    result = syntax.parse("phase 10 lr 0.1 < free a >\nphase 20 lr < free b >\nphase 30 < free c >\n")
    assert [d.code for d in result.diagnostics] == ["E0001"] and [i.steps.value for i in result.file.items] == [10, 30]


# ---------------------------------------------------------------- many texts: generated and mutated


@lru_cache(maxsize=None)
def tables_at(indexed: bool) -> lalr.Tables:
    """Tables whose lexers use their first-character index, or try every terminal everywhere."""
    return read_tables() if indexed else unindexed(read_tables())


@_examples(150)
@given(st.one_of(files.map(unparse), mutated()), st.booleans())
def test_generated_and_mutated_texts_parse_as_lark(text, indexed):
    """The property `test_parses_as_lark` checks on fixed files, on the syntax trees and mutated
    example files of tests/test_fuzz.py."""
    assert by_tables(tables_at(indexed), text) == by_lark(text)


# ---------------------------------------------------------------- lark not as the tables know it


class _ParserWithout:
    """`parse`'s lark parser as another lark might make it: its LALR driver without `parse_table`
    (`Tables.read` meets an AttributeError), or its rules' callbacks of another kind; it parses as
    the real one."""

    def __init__(self, real: syntax._AstParser, callbacks: dict | None = None) -> None:
        self.real, self.lexer = real, real.lexer
        driver = types.SimpleNamespace() if callbacks is None else types.SimpleNamespace(parse_table=real.lalr.parser.parse_table, callbacks=callbacks)
        self.lalr = types.SimpleNamespace(parser=driver)

    def parse(self, text):
        return self.real.parse(text)

    def get_terminal(self, name):
        return self.real.get_terminal(name)


TEXT = "# a comment\nphase 10 lr 0.1 < free a >\nphase 20 lr < free b >\n"


def _unknown_kind(callbacks: dict) -> dict:
    """Each callback wrapped in a callable lark 1.2-1.3 does not make (as lark's `PropagatePositions` wraps them)."""
    return {rule: functools.partial(callback) for rule, callback in callbacks.items()}


@pytest.mark.parametrize(
    "another",
    [
        lambda real, monkeypatch: _ParserWithout(real),  # an attribute missing: AttributeError
        lambda real, monkeypatch: _ParserWithout(real, _unknown_kind(real.lalr.parser.callbacks)),  # callbacks of another kind
        lambda real, monkeypatch: _ParserWithout(real, {rule: _entries_of_another_shape(c) for rule, c in real.lalr.parser.callbacks.items()}),  # another shape
        lambda real, monkeypatch: monkeypatch.delattr(lark.parse_tree_builder, "ExpandSingleChild") or real,  # a class gone: ImportError
    ],
    ids=["attribute", "callback", "shape", "class"],
)
def test_lark_not_as_the_tables_know_it_parses_with_lark(cache_home, monkeypatch, another):
    """Tables that cannot be read from lark's objects are none: lark parses every text, with the same
    result, and no tables are kept."""
    expected = syntax.parse(TEXT)
    syntax._tables.cache_clear()
    for kept in cache_home.glob("parser-*.tables"):
        kept.unlink()
    made = another(syntax._ast_parser(), monkeypatch)
    monkeypatch.setattr(syntax, "_ast_parser", lambda *a: made)
    got = syntax.parse(TEXT)
    assert (got.file, spans(got.file), got.comments, got.diagnostics) == (expected.file, spans(expected.file), expected.comments, expected.diagnostics)
    assert syntax._tables() is None and not list(cache_home.glob("parser-*.tables"))


def _entries_of_another_shape(callback):
    """A ChildFilter whose `to_include` entries have a field more than lark 1.2-1.3's (others as they are)."""
    if not isinstance(callback, lark.parse_tree_builder.ChildFilter):
        return callback
    odd = copy.copy(callback)
    odd.to_include = [(*entry, 0) for entry in callback.to_include]
    return odd


def test_another_lark_version_keeps_no_tables(cache_home, monkeypatch):
    """The tables run what lark 1.2-1.3's runtime does: with another lark, lark parses."""
    monkeypatch.setattr(syntax.lark_runtime, "version", lambda: "2.0.0")
    assert syntax.parse(TEXT).file.items[0].steps.value == 10
    assert syntax._tables() is None and not list(cache_home.glob("parser-*.tables"))


@pytest.mark.parametrize("change", ["lark", "grammar"])
def test_kept_tables_are_keyed_on_lark_and_the_grammar(cache_home, monkeypatch, change):
    """A new lark or grammar never loads the tables an older one kept: they are read again."""
    syntax.parse(TEXT)
    (old,) = cache_home.glob("parser-*.tables")
    if change == "lark":
        monkeypatch.setattr(syntax.lark_runtime, "version", lambda: "1.3.99")
    else:
        real = syntax.__loader__
        monkeypatch.setattr(syntax, "__loader__", types.SimpleNamespace(get_data=lambda path: real.get_data(path) + b"\n// changed\n"))
    assert syntax._cache_file(False, "tables") != str(old)
    syntax._tables.cache_clear()
    monkeypatch.setattr(lalr.Tables, "load", lambda file: pytest.fail("tables of another lark or grammar loaded"))
    assert syntax.parse(TEXT).file.items[0].steps.value == 10
    assert len(list(cache_home.glob("parser-*.tables"))) == 2


def test_a_re_laid_out_otherwise_leaves_every_terminal_tried_everywhere(monkeypatch):
    """`shape` reads `re`'s private parser; where it is not as in Python 3.11-3.13 the pattern is
    "not known", never an error (the lark path builds its scanners with it on every error report)."""
    from re import _constants

    monkeypatch.delattr(_constants, "POSSESSIVE_REPEAT")
    lalr.shape.cache_clear()
    try:
        assert lalr.shape(r"a+b", 0) == (None, None)
    finally:
        monkeypatch.undo()
        lalr.shape.cache_clear()
    assert lalr.shape(r"a+b", 0) == ("a", None)
