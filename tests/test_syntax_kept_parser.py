"""The parser kept whole between processes (syntax._keep, syntax._load): written once, private to
the user, loaded instead of built, and parsing exactly as a parser lark builds; a damaged or
planted file is never trusted; writing one prunes the oldest files of its kind."""

from __future__ import annotations

import os

import pytest
from lark import Lark
from lark.exceptions import UnexpectedInput
from test_syntax_lexer import BROKEN, TEXTS, outcome, stock_parser

from schedc.lang import syntax


@pytest.fixture
def cache_home(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    return tmp_path / "schedc"


def kept_file(folder) -> list:
    return sorted(folder.glob("parser-*.pickle"))


def test_built_once_then_loaded(cache_home, monkeypatch):
    syntax.parser.__wrapped__(False)
    (kept,) = kept_file(cache_home)
    assert (kept.stat().st_mode & 0o077) == 0
    stock = stock_parser()
    monkeypatch.setattr(Lark, "open_from_package", lambda *a, **k: pytest.fail("built although it was kept"))
    loaded = syntax.parser.__wrapped__(False)
    for text in [p.read_text(errors="replace") for p in TEXTS] + BROKEN:
        assert outcome(loaded, text) == outcome(stock, text), text[:80]


def test_the_grammar_test_parser_is_always_built(cache_home):
    syntax.parser.__wrapped__(True)
    assert not kept_file(cache_home)


@pytest.mark.parametrize("content", [b"", b"not a pickle", b"\x80\x05N."])
def test_a_damaged_file_is_built_again(cache_home, content):
    syntax.parser.__wrapped__(False)
    (kept,) = kept_file(cache_home)
    kept.write_bytes(content)
    assert outcome(syntax.parser.__wrapped__(False), "phase 10 lr 0.1 < free a >") == outcome(stock_parser(), "phase 10 lr 0.1 < free a >")


def test_a_file_others_can_write_is_never_loaded(cache_home):
    syntax.parser.__wrapped__(False)
    (kept,) = kept_file(cache_home)
    os.chmod(kept, 0o666)
    assert syntax._cache_file(False, "pickle") is None


# ---------------------------------------------------------------- `parse`'s parser (syntax._AstParser)


def kept_ast(folder) -> list:
    return sorted(folder.glob("parser-*.ast"))


def spans(value) -> list:
    """Every span in a parsed item, in order (node equality leaves spans out)."""
    found, stack = [], [value]
    while stack:
        node = stack.pop()
        if isinstance(node, (list, tuple)):
            stack.extend(reversed(node))
        elif hasattr(node, "span"):
            found.append(node.span)
            stack.extend(reversed([getattr(node, f) for f in node._field_names]))
    return found


def ast_outcome(made, text: str):
    try:
        return [(item, depth, span, spans(item)) for item, depth, span in made.parse(text)]
    except UnexpectedInput as err:
        return type(err).__name__, getattr(err, "pos_in_stream", None), str(getattr(err, "token", "")), sorted(getattr(err, "expected", ()) or ())


def test_the_ast_parser_is_kept_then_loaded(cache_home, monkeypatch):
    syntax._ast_parser.__wrapped__(False)
    (kept,) = kept_ast(cache_home)
    assert (kept.stat().st_mode & 0o077) == 0
    made = syntax._AstParser(stock_parser())
    monkeypatch.setattr(syntax, "parser", lambda *a: pytest.fail("made although it was kept"))
    loaded = syntax._ast_parser.__wrapped__(False)
    for text in [p.read_text(errors="replace") for p in TEXTS] + BROKEN:
        assert ast_outcome(loaded, text) == ast_outcome(made, text), text[:80]


@pytest.mark.parametrize("content", [b"", b"not a pickle", b"\x80\x05N."])
def test_a_damaged_ast_parser_is_made_again(cache_home, content):
    syntax._ast_parser.__wrapped__(False)
    (kept,) = kept_ast(cache_home)
    kept.write_bytes(content)
    text = "phase 10 lr 0.1 < free a >"
    assert ast_outcome(syntax._ast_parser.__wrapped__(False), text) == ast_outcome(syntax._AstParser(stock_parser()), text)


# ---------------------------------------------------------------- old files pruned (syntax._prune)


@pytest.mark.parametrize("kind, build", [("pickle", lambda: syntax.parser.__wrapped__(False)), ("lark", lambda: syntax.parser.__wrapped__(False)), ("ast", lambda: syntax._ast_parser.__wrapped__(False))])
def test_writing_a_file_prunes_the_oldest_of_its_kind(cache_home, kind, build):
    cache_home.mkdir(mode=0o700)
    old = []
    for age in range(syntax._KEPT_PER_KIND + 2, 0, -1):  # older first
        path = cache_home / f"parser-old{age:02d}.{kind}"
        path.write_bytes(b"an older version's")
        os.utime(path, (1e9 - age, 1e9 - age))
        old.append(path)
    others = [cache_home / f"parser-old01.{other}" for other in ("pickle", "lark", "ast") if other != kind]
    others += [cache_home / f"parser-old01.{kind}.123.tmp", cache_home / f"notes.{kind}"]
    for path in others:
        path.write_bytes(b"not of the kind")
    build()
    found = sorted(cache_home.glob(f"parser-*.{kind}"))
    (new,) = [path for path in found if path not in old]
    assert found == sorted([new] + old[-(syntax._KEPT_PER_KIND - 1) :])
    assert all(path.exists() for path in others)
