"""The parser, rule by rule: source text -> expected syntax tree (schedc.lang.nodes, spans excluded from ==),
spans of a known example, keywords as whole words, and error recovery."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

from schedc.lang import syntax
from schedc.lang.nodes import (
    Arrow,
    BinOp,
    Bool,
    Call,
    Carry,
    Directive,
    File,
    Fix,
    Free,
    Init,
    Keyword,
    Let,
    List,
    Map,
    MapEntry,
    Name,
    Number,
    ParamEntry,
    Params,
    Pattern,
    Percent,
    Phase,
    PhaseRef,
    Placeholder,
    Repeat,
    Spec,
    Stop,
    String,
    Then,
    UnaryOp,
)


def parse_ok(text: str) -> tuple:
    """The items of a file that must parse without any diagnostic."""
    result = syntax.parse(text)
    assert result.diagnostics == [], [d.message for d in result.diagnostics]
    return result.file.items


def expr(text: str):
    """The tree of one expression (the value of a `let`)."""
    (item,) = parse_ok(f"let x = {text}")
    return item.value


def num(text: str) -> Number:
    digits = text.replace("_", "")
    return Number(int(digits) if digits.isdigit() else float(digits), text)


def name(id: str) -> Name:
    return Name(id)


def pats(*texts: str) -> tuple[Pattern, ...]:
    return tuple(Pattern(t) for t in texts)


def call(func: str, *args, **kwargs) -> Call:
    return Call(Name(func), tuple(args), tuple(Keyword(Name(k), v) for k, v in kwargs.items()))


def phase(steps, *body, name_=None, lr=None, optimizer=None) -> Phase:
    return Phase(Name(name_) if name_ else None, steps, lr, optimizer, tuple(body))


# ---------------------------------------------------------------- the grammar itself


def test_grammar_builds_strict():
    """strict=True: a shift/reduce conflict or a terminal collision in the grammar fails here."""
    lark = syntax.parser(strict=True)
    assert lark.parse("phase 1 lr 0.1 < free a >") is not None


def test_empty_file_and_only_comments():
    assert parse_ok("") == ()
    assert parse_ok("# nothing\n\n   # at all\n") == ()


# ---------------------------------------------------------------- directives


@pytest.mark.parametrize(
    "text, expected",
    [
        ('model "m.py:build"', Directive("model", String("m.py:build"))),
        ('loss "m.py:loss";', Directive("loss", String("m.py:loss"))),
        ('data "m.py:make_data"', Directive("data", String("m.py:make_data"))),
        ("seed 42", Directive("seed", num("42"))),
        ("optimizer adam", Directive("optimizer", name("adam"))),
        ("optimizer sgd(momentum=0.9)", Directive("optimizer", call("sgd", momentum=num("0.9")))),
        ("lr 1e-3", Directive("lr", num("1e-3"))),
        ("default fixed", Directive("default", name("fixed"))),
        ("default free", Directive("default", name("free"))),
        ("default frozen", Directive("default", name("frozen"))),  # parses; the checker reports E0111
        ("let base = 0.05", Let(name("base"), num("0.05"))),
        ("let rate = $rate;", Let(name("rate"), Placeholder("rate"))),
    ],
)
def test_directives(text, expected):
    assert parse_ok(text) == (expected,)


def test_directives_one_per_line_or_several_per_line():
    assert parse_ok("seed 1 optimizer adam") == parse_ok("seed 1\noptimizer adam")


# ---------------------------------------------------------------- phases and statements


def test_phase_header_forms():
    assert parse_ok("phase 100 <>") == (phase(num("100")),)
    assert parse_ok("phase warm 100 lr 0.1 <>") == (phase(num("100"), name_="warm", lr=num("0.1")),)
    assert parse_ok("phase 10 optimizer sgd <>") == (phase(num("10"), optimizer=name("sgd")),)
    assert parse_ok("phase n lr 0.1 <>") == (phase(name("n"), lr=num("0.1")),)  # steps by name
    assert parse_ok("phase w n <>") == (phase(name("n"), name_="w"),)
    assert parse_ok("phase $steps <>") == (phase(Placeholder("steps")),)
    assert parse_ok("phase 10_000 <>") == (phase(Number(10000, "10_000")),)
    opt = call("adam", b1=Arrow((num("0.9"), num("0.95"))))
    assert parse_ok("phase 10 lr 0.1 optimizer adam(b1 = 0.9 -> 0.95) <>") == (phase(num("10"), lr=num("0.1"), optimizer=opt),)


def test_card_one_liner():
    (item,) = parse_ok("phase 100 lr 0.1 < free gp.coefficients; init line.amplitude ~ normal(0, 0.1) >")
    assert item == phase(
        num("100"),
        Free(pats("gp.coefficients")),
        Init(pats("line.amplitude"), "dist", call("normal", num("0"), num("0.1"))),
        lr=num("0.1"),
    )


def test_semicolons_optional_before_close_and_repeatable():
    a = parse_ok("phase 1 < free a; fix b >")
    assert a == parse_ok("phase 1 < free a; fix b; >")
    assert a == parse_ok("phase 1 <\n  free a;\n  fix b;\n>")
    assert parse_ok("phase 1 < ; ; free a;; >") == parse_ok("phase 1 < free a >")


@pytest.mark.parametrize(
    "text, expected",
    [
        ("free a", Free(pats("a"))),
        ("free a, b.c", Free(pats("a", "b.c"))),
        ("free a lr 0.1", Free(pats("a"), lr=num("0.1"))),
        ("free a optimizer sgd", Free(pats("a"), optimizer=name("sgd"))),
        ("free a lr 0.1 optimizer sgd(momentum=0.9)", Free(pats("a"), num("0.1"), call("sgd", momentum=num("0.9")))),
        ("fix a, b", Fix(pats("a", "b"))),
        ("init a ~ normal(0, 1)", Init(pats("a"), "dist", call("normal", num("0"), num("1")))),
        ("init a, b ~ uniform(low=0, high=2)", Init(pats("a", "b"), "dist", call("uniform", low=num("0"), high=num("2")))),
        ("init a = 1.5", Init(pats("a"), "value", num("1.5"))),
        ("init a = -1", Init(pats("a"), "value", UnaryOp("-", num("1")))),
        ("init a = [1, 2]", Init(pats("a"), "value", List((num("1"), num("2"))))),
        ("init a = reset", Init(pats("a"), "reset", None)),
        ("carry state", Carry()),
        ("stop when loss < 1e-3", Stop(name("loss"), num("1e-3"))),
        ("stop when loss_change < 1e-6 over 50", Stop(name("loss_change"), num("1e-6"), num("50"))),
        ("stop when loss_change < 1e-6 after 100", Stop(name("loss_change"), num("1e-6"), None, num("100"))),
        ("stop when loss_change < 1e-6 over 50 after 100", Stop(name("loss_change"), num("1e-6"), num("50"), num("100"))),
    ],
)
def test_statements(text, expected):
    (item,) = parse_ok(f"phase 1 < {text} >")
    assert item.body == (expected,)


def test_repeat():
    inner = phase(num("50"), Free(pats("gp.**")), lr=num("0.01"))
    assert parse_ok("repeat 3 < phase 50 lr 0.01 < free gp.** > >") == (Repeat(num("3"), (inner,)),)
    assert parse_ok("repeat 2 < repeat 3 < phase 50 lr 0.01 < free gp.** > > >") == (
        Repeat(num("2"), (Repeat(num("3"), (inner,)),)),
    )
    assert parse_ok("repeat k <>") == (Repeat(name("k"), ()),)


# ---------------------------------------------------------------- params blocks


def test_params_block_every_spec():
    text = """
    phase 100 lr 0.1 <>
    phase fine 50 lr 0.01 <>
    params <
      gp.coefficients: free in 0, 1;
      gp.kernel.*:     free after 1;
      line.amplitude:  free in fine | init normal(0, 0.1) at 0;
      line.center:     fixed in 0, fine;
      line.width, off: free until 0 | init value(1.5) at 1 | init uniform(0, 2) at fine
    >
    """
    *_, params = parse_ok(text)
    ref = PhaseRef
    assert params == Params(
        (
            ParamEntry(pats("gp.coefficients"), (Spec("free_in", (ref(0), ref(1))),)),
            ParamEntry(pats("gp.kernel.*"), (Spec("free_after", (ref(1),)),)),
            ParamEntry(
                pats("line.amplitude"),
                (Spec("free_in", (ref("fine"),)), Spec("init_at", (ref(0),), call("normal", num("0"), num("0.1")))),
            ),
            ParamEntry(pats("line.center"), (Spec("fixed_in", (ref(0), ref("fine"))),)),
            ParamEntry(
                pats("line.width", "off"),
                (
                    Spec("free_until", (ref(0),)),
                    Spec("init_at", (ref(1),), call("value", num("1.5"))),
                    Spec("init_at", (ref("fine"),), call("uniform", num("0"), num("2"))),
                ),
            ),
        )
    )


def test_empty_params_block():
    assert parse_ok("params <>") == (Params(()),)
    assert parse_ok("params < ; >") == (Params(()),)


# ---------------------------------------------------------------- patterns


@pytest.mark.parametrize(
    "pattern",
    [
        "a",
        "*",
        "**",
        "gp.**",
        "**.lengthscale",
        "coef*",
        "*.kernel.*",
        "layers[0].weight",
        "layers[*].bias",
        "[0]",
        "line.{amplitude,width}",
        "{a,b}.c",
        'params["quoted key"].x',
        '["a.b"]',
        "free",  # a keyword is an ordinary name where a pattern is expected
        "freeze",
    ],
)
def test_patterns_kept_as_written(pattern):
    (item,) = parse_ok(f"phase 1 < free {pattern} >")
    assert item.body == (Free(pats(pattern)),)


# ---------------------------------------------------------------- expressions


def test_atoms():
    assert expr("1") == Number(1, "1")
    assert expr("0.5") == Number(0.5, "0.5")
    assert expr(".5") == Number(0.5, ".5")
    assert expr("1e-3") == Number(1e-3, "1e-3")
    assert expr("2E+2") == Number(200.0, "2E+2")
    assert expr("1_000") == Number(1000, "1_000")
    assert expr("10%") == Percent(0.1, "10%")
    assert expr("2.5%") == Percent(0.025, "2.5%")
    assert expr("true") == Bool(True)
    assert expr("false") == Bool(False)
    assert expr("base") == name("base")
    assert expr("$rate") == Placeholder("rate")
    assert expr("(1)") == num("1")


def test_strings_with_escapes():
    assert expr(r'"plain"') == String("plain")
    assert expr(r'"a\"b"') == String('a"b')
    assert expr(r'"back\\slash"') == String("back\\slash")
    assert expr(r'"line\nbreak\ttab"') == String("line\nbreak\ttab")
    assert expr('"unicode: λ ✓"') == String("unicode: λ ✓")


def test_huge_numbers_read_as_inf_not_crash():
    assert math.isinf(expr("1e999").value)
    assert math.isinf(expr("9" * 5000).value)


def test_precedence_of_arithmetic():
    one, two, three = num("1"), num("2"), num("3")
    assert expr("1 + 2 * 3") == BinOp("+", one, BinOp("*", two, three))
    assert expr("(1 + 2) * 3") == BinOp("*", BinOp("+", one, two), three)
    assert expr("1 - 2 - 3") == BinOp("-", BinOp("-", one, two), three)  # left-associative
    assert expr("1 / 2 / 3") == BinOp("/", BinOp("/", one, two), three)
    assert expr("1 - 2 + 3") == BinOp("+", BinOp("-", one, two), three)
    assert expr("1 * 2 / 3") == BinOp("/", BinOp("*", one, two), three)


def test_unary_and_power():
    one, two, three = num("1"), num("2"), num("3")
    assert expr("-1") == UnaryOp("-", one)
    assert expr("+1") == UnaryOp("+", one)
    assert expr("--1") == UnaryOp("-", UnaryOp("-", one))
    assert expr("-1 * 2") == BinOp("*", UnaryOp("-", one), two)
    assert expr("2 ** 3 ** 2") == BinOp("**", two, BinOp("**", three, two))  # right-associative
    assert expr("-2 ** 2") == UnaryOp("-", BinOp("**", two, two))  # ** binds tighter than unary -
    assert expr("2 ** -1") == BinOp("**", two, UnaryOp("-", one))
    assert expr("(2 ** 3) ** 2") == BinOp("**", BinOp("**", two, three), two)
    assert expr("2 * 3 ** 2") == BinOp("*", two, BinOp("**", three, two))


def test_arrows():
    a, b, c = name("a"), name("b"), name("c")
    assert expr("a -> b") == Arrow((a, b))
    assert expr("a -> b -> c") == Arrow((a, b, c))
    assert expr("a -> b / 10") == Arrow((a, BinOp("/", b, num("10"))))  # arithmetic binds tighter
    assert expr("(a -> b) -> c") == Arrow((Arrow((a, b)), c))


def test_then_chains():
    s1 = call("linear", Arrow((num("0"), num("0.01"))))
    s2 = call("cosine", Arrow((num("0.01"), num("1e-5"))))
    assert expr("linear(0 -> 0.01) for 10% then cosine(0.01 -> 1e-5)") == Then((s1, s2), (Percent(0.1, "10%"),))
    assert expr("a for 1 then b for 2 then c") == Then((name("a"), name("b"), name("c")), (num("1"), num("2")))
    assert expr("a -> b for 5 then c") == Then((Arrow((name("a"), name("b"))), name("c")), (num("5"),))
    # a chain in the last piece means the same as one flat chain, and parses as one
    assert expr("a for 1 then (b for 2 then c)") == expr("a for 1 then b for 2 then c")
    assert expr("(a for 1 then b) for 2 then c") == Then((Then((name("a"), name("b")), (num("1"),)), name("c")), (num("2"),))


def test_calls_lists_maps():
    assert expr("f()") == call("f")
    assert expr("f(1, 2,)") == call("f", num("1"), num("2"))
    assert expr("f(1, k=2, j=g(3))") == call("f", num("1"), k=num("2"), j=call("g", num("3")))
    assert expr("[]") == List(())
    assert expr("[1, 2, 3,]") == List((num("1"), num("2"), num("3")))
    assert expr("{}") == Map(())
    assert expr("{100: 0.1, 50%: 0.5}") == Map(
        (MapEntry(num("100"), num("0.1")), MapEntry(Percent(0.5, "50%"), num("0.5")))
    )
    assert expr("piecewise(0.1, {50: 0.5})") == call("piecewise", num("0.1"), Map((MapEntry(num("50"), num("0.5")),)))


def test_keywords_are_names_where_no_keyword_fits():
    # the contextual lexer: `lr` where only a pattern fits is a pattern, not the keyword
    (item,) = parse_ok("phase 1 < free lr, phase >")
    assert item.body == (Free(pats("lr", "phase")),)


# ---------------------------------------------------------------- spans


def test_spans_of_a_known_example():
    text = "seed 1\n\nphase warm 100 lr 0.1 <\n  free gp.**;\n  init a ~ normal(0, 0.1)\n>\n"
    seed, ph = syntax.parse(text).file.items
    assert (seed.span.line, seed.span.column, seed.span.end_line, seed.span.end_column) == (1, 1, 1, 7)
    assert (ph.span.line, ph.span.column, ph.span.end_line, ph.span.end_column) == (3, 1, 6, 2)
    assert (ph.name.span.line, ph.name.span.column, ph.name.span.end_column) == (3, 7, 11)
    assert (ph.steps.span.column, ph.steps.span.end_column) == (12, 15)
    assert (ph.lr.span.line, ph.lr.span.column) == (3, 19)
    free, init = ph.body
    assert (free.span.line, free.span.column, free.span.end_column) == (4, 3, 13)
    assert (free.patterns[0].span.column, free.patterns[0].span.end_column) == (8, 13)
    assert (init.span.line, init.span.column, init.span.end_column) == (5, 3, 26)
    assert (init.value.span.column, init.value.args[1].span.column) == (12, 22)
    assert text[init.value.span.start : init.value.span.end] == "normal(0, 0.1)"


def test_comments_collected_with_spans():
    result = syntax.parse("# head\nseed 1  # tail\n")
    assert [c.text for c in result.comments] == ["# head", "# tail"]
    assert (result.comments[1].span.line, result.comments[1].span.column) == (2, 9)


# ---------------------------------------------------------------- errors


def test_keywords_are_whole_words():
    result = syntax.parse("phase 10 lr 0.1 < frees a.b >")
    (d,) = result.diagnostics
    assert (d.code, d.span.line, d.span.column) == ("E0001", 1, 19)
    assert "frees" in d.message
    assert d.help == "did you mean `free`?"


def test_unexpected_character_and_end_of_file():
    (d,) = syntax.parse("phase 10 lr 0.1 < free a @ >").diagnostics
    assert (d.code, d.span.line, d.span.column) == ("E0002", 1, 26)
    (d,) = syntax.parse("phase 10 lr 0.1 < free a").diagnostics
    assert d.code == "E0003"


def test_error_recovery_reports_every_broken_item_and_keeps_good_ones():
    text = "\n".join(
        [
            "seed 1",  # 1 good
            "phase 10 lr < free a >",  # 2 bad: missing lr value at `<`, col 13
            "let x = 1",  # 3 good
            "phase 10 lr 0.1 < free a @ >",  # 4 bad: stray `@` at col 26
            "phase ok 10 lr 0.1 < free a >",  # 5 good
            "let = 3",  # 6 bad: missing name at `=`, col 5
            "repeat 2 < phase 5 lr 0.1 < fre a > >",  # 7 bad: `fre` at col 29
            "phase 10 lr 0.1 < init a ~ normal(0, 1) >",  # 8 good
        ]
    )
    result = syntax.parse(text)
    got = [(d.code, d.span.line, d.span.column) for d in result.diagnostics]
    assert got == [("E0001", 2, 13), ("E0002", 4, 26), ("E0001", 6, 5), ("E0001", 7, 29)]
    assert result.diagnostics[3].help == "did you mean `free`?"
    kept = result.file.items
    assert [type(i).__name__ for i in kept] == ["Directive", "Let", "Phase", "Phase"]
    assert kept[2].name == name("ok")


def test_deep_nesting():
    # parentheses add no tree depth
    assert parse_ok("let x = " + "(" * 5000 + "1" + ")" * 5000) == (Let(name("x"), num("1")),)
    # operators and calls do: beyond syntax.MAX_DEPTH they are a diagnostic, never a RecursionError
    for text in ("-" * 5000 + "1", "f(" * 3000 + "1" + ")" * 3000, "1" + " ** 1" * 3000):
        result = syntax.parse("seed 1\nlet x = " + text + "\nlet y = 2")
        assert [d.code for d in result.diagnostics] == ["E0005"]
        assert result.diagnostics[0].span.line == 2
        assert [type(i).__name__ for i in result.file.items] == ["Directive", "Let"]


def test_decode():
    assert syntax.decode(b"\xef\xbb\xbfseed 1") == ("seed 1", None)
    text, d = syntax.decode(b"seed \xff")
    assert text is None and d.code == "E0004"
    text, d = syntax.decode(b"seed\x00")
    assert text is None and d.code == "E0004"


def test_file_span_covers_the_text():
    result = syntax.parse("seed 1\nseed 2\n")
    assert isinstance(result.file, File)
    assert (result.file.span.end_line, result.file.span.end) == (3, 14)


def test_language_reference_examples_parse():
    """Every ```sched block of docs/language.md is a valid file."""
    doc = (Path(__file__).resolve().parent.parent / "docs" / "language.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```sched\n(.*?)```", doc, re.S)
    assert len(blocks) >= 3
    for block in blocks:
        assert syntax.parse(block).diagnostics == [], block
