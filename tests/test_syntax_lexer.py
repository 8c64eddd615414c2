"""The parser's lazy scanners (lark_lexer.LazyScanner) lex exactly as lark's own contextual lexer:
the same tokens (type, text, position) and the same errors, whether a parser state's
scanner tries only the terminals a token at the next character can be, or every terminal."""

from __future__ import annotations

from pathlib import Path

import pytest
from lark import Lark, Token
from lark.exceptions import UnexpectedInput

from schedc.lang import lalr, syntax

ROOT = Path(__file__).resolve().parent.parent
# every text file of the project's examples and tests (not the few huge ones that test the parser's limits)
TEXTS = sorted(
    p
    for p in [*ROOT.glob("examples/*.sched"), *ROOT.glob("tests/**/*.sched"), *ROOT.glob("tests/regressions/*.input")]
    if b"\x00" not in p.read_bytes() and p.stat().st_size < 5000
)
BROKEN = [
    "phase 100 lr < free a >",
    "phase 100 lr 0.1 < free a @ >",
    "phase warm 10 lr 0.1 optimizer adam < free a; stop when loss < 1e-3 over 5 afterr 3 >",
    "params < a: free in 1, 2 | init normal(0, 1) at >",
    'eval "m.py:f" every 3 epochz\nphase 10 < free ** >',
    "let x = [1, 2, {3: 4}]\nphase 10 lr x * * 2 < free a.b[0].* >",
]


def stock_parser() -> Lark:
    """The same grammar and options with lark's own contextual lexer (no plugin, no cache)."""
    return Lark.open_from_package("schedc.lang", "sched.lark", ("grammar",), parser="lalr", maybe_placeholders=True)


def tokens(tree) -> list[tuple]:
    """Every token of the tree, in order (without recursion: some texts nest deeply)."""
    found, stack = [], [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, Token):
            found.append((node.type, str(node), node.start_pos, node.end_pos))
        elif node is not None:
            stack.extend(reversed(node.children))
    return found


def outcome(lark: Lark, text: str):
    try:
        return tokens(lark.parse(text))
    except UnexpectedInput as err:
        return type(err).__name__, getattr(err, "pos_in_stream", None), str(getattr(err, "token", "")), sorted(getattr(err, "expected", ()) or ())


def test_the_texts_are_found():
    assert len(TEXTS) > 20


@pytest.mark.parametrize("indexed", [True, False])
def test_lexes_as_lark(monkeypatch, indexed):
    if not indexed:  # every terminal tried at every character, none as a literal
        monkeypatch.setattr(lalr, "shape", lambda regexp, flags: (None, None))
    ours, stock = syntax.parser.__wrapped__(False), stock_parser()  # a fresh parser: its scanners are made on first use
    for text in [syntax.normalize_newlines(p.read_bytes().decode("utf-8-sig", "replace")) for p in TEXTS] + BROKEN:
        for _ in range(2):  # the second time, the scanners' candidates are those kept from the first
            assert outcome(ours, text) == outcome(stock, text), text[:80]


def test_a_scanner_tries_only_the_terminals_a_token_at_the_character_can_be():
    ours = syntax.parser.__wrapped__(False)
    ours.parse("phase 10 lr 0.1 < free a >\n" * 2)
    scanners = [lexer._scanner for lexer in ours.parser.lexer.lexers.values() if lexer._scanner is not None]
    assert scanners and all(s.at for s in scanners)
    assert any(len(candidates) < len(s.patterns) for s in scanners for candidates in s.at.values())
