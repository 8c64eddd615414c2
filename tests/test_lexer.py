"""The Pygments lexer: no Error tokens on valid files, lossless, golden dumps, agrees with Lark's keywords.

Regenerate the golden token dumps (tests/lexer/*.txt) after an intended change with
`SCHEDC_UPDATE_GOLDENS=1 .venv/bin/pytest -q tests/test_lexer.py`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from pygments.lexers import get_lexer_by_name, get_lexer_for_filename
from pygments.token import Error, Keyword, Name, Punctuation

from schedc.lang import syntax
from schedc.tooling.lexer import SchedLexer

ROOT = Path(__file__).resolve().parent.parent
GOLDEN_DIR = Path(__file__).resolve().parent / "lexer"
SYNTAX_CODES = {"E0001", "E0002", "E0003", "E0004", "E0005"}


def _parses(path: Path) -> bool:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        return False
    return not any(d.code in SYNTAX_CODES for d in syntax.parse(text).diagnostics)


def _corpus() -> list[Path]:
    """Every example, and every syntactically valid .sched file under tests/."""
    files = sorted((ROOT / "examples").glob("*.sched")) + sorted(p for p in (ROOT / "tests").rglob("*.sched") if _parses(p))
    return files


CORPUS = _corpus()
GOLDENS = sorted(GOLDEN_DIR.glob("*.sched"))


def _ids(paths):
    return [str(p.relative_to(ROOT)) for p in paths]


def _tokens(text: str):
    """(offset, token type, value) exactly over `text` (no newline stripping or adding)."""
    return list(SchedLexer().get_tokens_unprocessed(text))


def test_corpus_is_not_empty():
    assert len(GOLDENS) >= 3
    assert set(GOLDENS) <= set(CORPUS)


@pytest.mark.parametrize("path", CORPUS, ids=_ids(CORPUS))
def test_no_error_tokens(path):
    text = path.read_text(encoding="utf-8")
    errors = [(offset, value) for offset, token, value in _tokens(text) if token in Error]
    assert errors == []


@pytest.mark.parametrize("path", CORPUS, ids=_ids(CORPUS))
def test_tokens_join_back_to_the_input(path):
    text = path.read_text(encoding="utf-8")
    assert "".join(value for _, _, value in _tokens(text)) == text
    # Through the public API too (it only adds a final newline when one is missing).
    lexer = SchedLexer(stripnl=False)
    assert "".join(value for _, value in lexer.get_tokens(text)) == (text if text.endswith("\n") else text + "\n")


@pytest.mark.parametrize("path", CORPUS, ids=_ids(CORPUS))
def test_every_lark_keyword_is_a_pygments_keyword(path):
    """Where Lark's contextual lexer reads a keyword, the highlighter shows a keyword."""
    text = path.read_text(encoding="utf-8")
    kinds = {offset: token for offset, token, _ in _tokens(text)}
    lark_tokens = list(syntax.parser().parse_interactive(text).iter_parse())
    keywords = [t for t in lark_tokens if t.type.lower() in syntax.KEYWORDS]
    assert all(t.start_pos in kinds for t in lark_tokens), "a Lark token starts inside a Pygments token"
    wrong = [(t.line, t.column, str(t), kinds[t.start_pos]) for t in keywords if kinds[t.start_pos] not in Keyword]
    assert wrong == []


ANY = sorted((ROOT / "tests").rglob("*.sched"))


@pytest.mark.parametrize("path", ANY, ids=_ids(ANY))
def test_any_file_lexes_losslessly(path):
    """Broken, binary or pathological files too: the highlighter never loses or invents text."""
    text = path.read_bytes().decode("utf-8", "replace")
    assert "".join(value for _, _, value in _tokens(text)) == text


def test_contexts_decide_what_a_word_is():
    text = 'default free\nphase tail 5 lr 0.1 < free model.lr, in; stop when loss < 1 >\nparams < at: fixed in tail | init normal(0, 1) at 0 >\n'
    toks = [(token, value) for _, token, value in _tokens(text) if value.strip()]
    assert (Keyword, "free") in toks[:2]
    assert (Name.Label, "tail") in toks  # the phase's name, and a phase reference in params
    assert (Name.Variable, "model") in toks and (Name.Variable, "lr") in toks and (Name.Variable, "in") in toks
    assert (Name.Builtin, "loss") in toks  # the stop metric
    assert (Name.Variable, "at") in toks  # a pattern at the start of a params entry
    assert (Name.Builtin, "normal") in toks


@pytest.mark.parametrize("interval", ["every epoch", "every step", "every 2 epochs", "every 200 steps"])
def test_an_evaluation_interval_is_keywords_and_every_called_is_a_schedule(interval):
    toks = [(token, value) for _, token, value in _tokens(f'eval "m.py:metrics" {interval}\nphase 10 lr every(0.1, 2, 5) < free a >\n') if value.strip()]
    _, *rest = interval.split()
    assert toks[4] == (Keyword, "every") and toks[4 + len(rest)] == (Keyword, rest[-1])
    assert (Name.Builtin, "every") in toks  # the schedule `every(...)`


def test_a_plateaus_metric_is_a_metric():
    toks = [(token, value) for _, token, value in _tokens("phase 5 lr 0.1 * plateau(on=val.loss, patience=3) < free a >\n") if value.strip()]
    assert (Name.Attribute, "on") in toks and (Name.Attribute, "patience") in toks
    assert toks[toks.index((Name.Attribute, "on")) + 2 : toks.index((Name.Attribute, "on")) + 5] == [(Name.Builtin, "val"), (Punctuation, "."), (Name.Builtin, "loss")]


def test_bad_character_is_the_only_error():
    text = "phase 10 lr 0.1 < free a @ >\n"
    assert [value for _, token, value in _tokens(text) if token in Error] == ["@"]


def test_unterminated_string_stops_at_end_of_line():
    text = 'model "oops\nphase 10 lr 0.1 < free a >\n'
    kinds = {value: token for _, token, value in _tokens(text)}
    assert kinds["phase"] in Keyword


def _dump(text: str) -> str:
    return "".join(f"{str(token)[len('Token.'):]}\t{value!r}\n" for _, token, value in _tokens(text))


@pytest.mark.parametrize("path", GOLDENS, ids=_ids(GOLDENS))
def test_golden_token_dump(path):
    golden = path.with_suffix(".txt")
    dump = _dump(path.read_text(encoding="utf-8"))
    if os.environ.get("SCHEDC_UPDATE_GOLDENS"):
        golden.write_text(dump, encoding="utf-8")
    assert golden.exists(), f"run with SCHEDC_UPDATE_GOLDENS=1 to create {golden.name}"
    assert dump == golden.read_text(encoding="utf-8")


def test_found_through_the_entry_point():
    assert isinstance(get_lexer_by_name("sched"), SchedLexer)
    assert isinstance(get_lexer_by_name("schedc"), SchedLexer)
    assert isinstance(get_lexer_for_filename("fit.sched"), SchedLexer)


def test_pygmentize_uses_the_plugin(tmp_path):
    pygmentize = Path(sys.executable).parent / "pygmentize"
    source = GOLDEN_DIR / "spectral_line.sched"
    raw = subprocess.run([str(pygmentize), "-l", "sched", "-f", "raw", str(source)], capture_output=True, text=True, check=True)
    assert "Token.Keyword.Declaration\t'phase'" in raw.stdout
    assert "Token.Error" not in raw.stdout
    guessed = subprocess.run([str(pygmentize), "-N", str(source)], capture_output=True, text=True, check=True)
    assert guessed.stdout.strip() == "sched"
    html = subprocess.run([str(pygmentize), "-f", "html", str(source)], capture_output=True, text=True, check=True)
    assert '<span class="kd">phase</span>' in html.stdout
