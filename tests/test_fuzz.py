"""Property tests with hypothesis.

1. Generated syntax trees: `parse(unparse(tree)) == tree` (printer and parser agree on every form),
   the printed text is already formatted, and comments sprinkled into it survive `format_source`.
2. Mutated example files (characters and tokens deleted, inserted, duplicated, swapped): `syntax.parse`,
   `pipeline.check_source` and `fmt.format_source` never raise anything but `SchedError` (from fmt),
   and whatever fmt returns means the same program.

Example counts are modest so the file runs in well under 30 s on two cores; for a deeper run
multiply them: `SCHEDC_FUZZ_SCALE=20 .venv/bin/pytest -q tests/test_fuzz.py`.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schedc import pipeline as check

from schedc.lang import syntax
from schedc.lang import nodes as n
from schedc.lang.diagnostics import SchedError
from schedc.tooling.fmt import format_source, unparse

ROOT = Path(__file__).resolve().parent.parent
SEEDS = [p.read_text(encoding="utf-8") for p in sorted((ROOT / "examples").glob("*.sched"))]
SEEDS += [p.read_text(encoding="utf-8") for p in sorted((ROOT / "tests" / "fmt").glob("*.in.sched"))]

_SCALE = int(os.environ.get("SCHEDC_FUZZ_SCALE", "1"))


def _examples(count: int) -> settings:
    return settings(
        max_examples=count * _SCALE, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
    )


# ---------------------------------------------------------------- leaves

identifiers = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,7}", fullmatch=True).filter(lambda s: s not in syntax.KEYWORDS)
names = identifiers.map(n.Name)
int_texts = st.one_of(st.integers(0, 10**6).map(str), st.sampled_from(["1_000", "10_000", "007"]))
float_texts = st.one_of(
    st.tuples(st.integers(0, 999), st.integers(0, 999)).map(lambda t: f"{t[0]}.{t[1]}"),
    st.tuples(st.integers(1, 9), st.integers(-12, 12)).map(lambda t: f"{t[0]}e{t[1]}"),
    st.sampled_from([".5", "1.", "1E+3", "2.5e-4", "1_0.0_1"]),
)


def _number(text: str) -> n.Number:
    return n.Number(syntax._number(text), text)


numbers = st.one_of(int_texts, float_texts).map(_number)
percents = st.one_of(st.integers(0, 100).map(str), st.sampled_from(["2.5", "0.1", "100.0"])).map(
    lambda t: n.Percent(syntax._number(t) / 100, t + "%")
)
strings = st.text(alphabet=st.sampled_from('ab Z09.:_-/λ✓"\\\n\t#<>;'), max_size=12).map(n.String)
leaves = st.one_of(
    numbers,
    percents,
    strings,
    st.booleans().map(n.Bool),
    names,
    identifiers.map(n.Placeholder),
)


def _then(pieces_and_durations):
    """A Then in the parser's form: a chain in the last piece is flattened into this one."""
    pieces, durations = pieces_and_durations
    last = pieces[-1]
    if isinstance(last, n.Then):
        return n.Then(tuple(pieces[:-1]) + last.pieces, tuple(durations) + last.durations)
    return n.Then(tuple(pieces), tuple(durations))


def _calls(args):
    kwargs = st.dictionaries(identifiers, args, max_size=2).map(lambda d: tuple(n.Keyword(n.Name(k), v) for k, v in d.items()))
    return st.builds(n.Call, names, st.lists(args, max_size=3).map(tuple), kwargs)


def _extend(children):
    return st.one_of(
        _calls(children),
        st.builds(n.BinOp, st.sampled_from(["+", "-", "*", "/", "**"]), children, children),
        st.builds(n.UnaryOp, st.sampled_from(["-", "+"]), children),
        st.lists(children, min_size=2, max_size=3).map(lambda ps: n.Arrow(tuple(ps))),
        st.integers(1, 2).flatmap(
            lambda k: st.tuples(st.lists(children, min_size=k + 1, max_size=k + 1), st.lists(children, min_size=k, max_size=k))
        ).map(_then),
        st.lists(children, max_size=3).map(lambda xs: n.List(tuple(xs))),
        st.lists(st.builds(n.MapEntry, children, children), max_size=3).map(lambda es: n.Map(tuple(es))),
    )


exprs = st.recursive(leaves, _extend, max_leaves=10)
calls = _calls(exprs)
optimizers = st.one_of(names, calls)
optional = lambda s: st.one_of(st.none(), s)  # noqa: E731

# ---------------------------------------------------------------- patterns

_component = st.one_of(
    identifiers,
    st.sampled_from(["*", "**", "coef*", "*_x", "free", "lr", "{a,b}", "{amplitude,width}", "x{1,2}"]),
)
_index = st.one_of(st.integers(0, 99).map(str), st.just("*"), st.from_regex(r'"[a-z .]{0,6}"', fullmatch=True)).map(lambda s: f"[{s}]")
_tail = st.lists(st.one_of(_component.map(lambda c: "." + c), _index), max_size=3).map("".join)
patterns = st.builds(lambda head, tail: n.Pattern(head + tail), st.one_of(_component, _index), _tail)
pattern_lists = st.lists(patterns, min_size=1, max_size=3).map(tuple)

# ---------------------------------------------------------------- statements, phases, items

statements = st.one_of(
    st.builds(n.Free, pattern_lists, optional(exprs), optional(optimizers)),
    st.builds(n.Fix, pattern_lists),
    st.builds(lambda p, c: n.Init(p, "dist", c), pattern_lists, calls),
    st.builds(lambda p, v: n.Init(p, "value", v), pattern_lists, exprs),
    st.builds(lambda p: n.Init(p, "reset", None), pattern_lists),
    st.just(n.Carry()),
    st.builds(n.Stop, names, exprs, optional(exprs), optional(exprs)),
)
steps = st.one_of(int_texts.map(_number), names, identifiers.map(n.Placeholder))
phases = st.builds(
    n.Phase, optional(names), steps, optional(exprs), optional(optimizers), st.lists(statements, max_size=4).map(tuple)
)
repeats = st.recursive(
    st.builds(n.Repeat, steps, st.lists(phases, max_size=2).map(tuple)),
    lambda inner: st.builds(n.Repeat, steps, st.lists(st.one_of(phases, inner), max_size=2).map(tuple)),
    max_leaves=3,
)
phase_refs = st.one_of(st.integers(0, 20), identifiers).map(n.PhaseRef)
specs = st.one_of(
    st.builds(n.Spec, st.sampled_from(["free_in", "fixed_in"]), st.lists(phase_refs, min_size=1, max_size=3).map(tuple)),
    st.builds(lambda k, r: n.Spec(k, (r,)), st.sampled_from(["free_after", "free_until"]), phase_refs),
    st.builds(lambda c, r: n.Spec("init_at", (r,), c), calls, phase_refs),
)
params = st.builds(
    n.Params, st.lists(st.builds(n.ParamEntry, pattern_lists, st.lists(specs, min_size=1, max_size=3).map(tuple)), max_size=3).map(tuple)
)
directives = st.one_of(
    st.builds(n.Directive, st.sampled_from(["model", "loss", "data"]), strings),
    st.builds(n.Directive, st.sampled_from(["seed", "lr"]), exprs),
    st.builds(n.Directive, st.just("optimizer"), optimizers),
    st.builds(n.Directive, st.just("default"), st.one_of(st.sampled_from(["fixed", "free"]).map(n.Name), names)),
    st.builds(n.Let, names, exprs),
)
files = st.lists(st.one_of(directives, phases, repeats, params), max_size=6).map(lambda items: n.File(tuple(items)))


# ---------------------------------------------------------------- properties of generated trees


@_examples(150)
@given(exprs)
def test_expression_round_trip(expr):
    result = syntax.parse(f"let x = {unparse(expr)}")
    assert result.diagnostics == []
    assert result.file.items == (n.Let(n.Name("x"), expr),)


@_examples(150)
@given(files)
def test_file_round_trip_and_already_formatted(file):
    text = unparse(file)
    result = syntax.parse(text)
    assert result.diagnostics == [], (text, result.diagnostics)
    assert result.file == file
    assert format_source(text) == text


@_examples(60)
@given(files, st.data())
def test_sprinkled_comments_survive(file, data):
    lines = unparse(file).splitlines()
    out = []
    for i, line in enumerate(lines):
        where = data.draw(st.sampled_from(["none", "none", "before", "after"]), label=f"comment at line {i}")
        if where == "before":
            out.append(f"# c{i} before")
        out.append(line + (f"   # c{i} after" if where == "after" else ""))
    text = "\n".join(out) + "\n"
    formatted = format_source(text)
    assert syntax.parse(formatted).file == file
    assert Counter(c.text for c in syntax.parse(formatted).comments) == Counter(c.text for c in syntax.parse(text).comments)
    assert format_source(formatted) == formatted


def _spaces_between_tokens(text: str) -> list[int]:
    """Offsets of the spaces in `text` that separate tokens (not those in strings or a pattern's quoted keys)."""
    inside = set()
    for node in n.walk(syntax.parse(text).file):
        if isinstance(node, (n.String, n.Pattern)):
            inside.update(range(node.span.start, node.span.end))
    return [i for i, ch in enumerate(text) if ch == " " and i not in inside]


@_examples(60)
@given(files, st.data())
def test_comments_between_any_tokens_survive(file, data):
    text = unparse(file)
    spaces = _spaces_between_tokens(text)
    if not spaces:
        return
    chosen = data.draw(st.lists(st.sampled_from(spaces), unique=True, max_size=6), label="where")
    for k, i in enumerate(sorted(chosen, reverse=True)):
        own_line = data.draw(st.booleans(), label=f"own line {k}")
        comment = f"\n# c{k}\n" if own_line else f"  # c{k}\n"
        text = text[:i] + comment + text[i + 1 :]
    formatted = format_source(text)
    assert syntax.parse(formatted).file == file
    assert sorted(c.text for c in syntax.parse(formatted).comments) == sorted(f"# c{k}" for k in range(len(chosen)))
    assert format_source(formatted) == formatted


# ---------------------------------------------------------------- mutated real files

_TOKEN = re.compile(r'"(?:[^"\\\n]|\\.)*"|#[^\n]*|[A-Za-z_][A-Za-z0-9_]*|[0-9.]+%?|->|\*\*|\S')
_NOISE = list("<>;:,.()[]{}=~|*-+/%$#\"\\@!\t\n ") + ["phase", "free", "repeat", "params", "lr", "1e999", "(" * 50, "\x00", "\ufeff", "\r\n"]


@st.composite
def mutated(draw):
    text = draw(st.sampled_from(SEEDS))
    for _ in range(draw(st.integers(1, 4))):
        tokens = [m.group() for m in _TOKEN.finditer(text)] or [""]
        spans = [m.span() for m in _TOKEN.finditer(text)] or [(0, 0)]
        op = draw(st.sampled_from(["delete_char", "insert", "duplicate_token", "delete_token", "swap_tokens", "truncate"]))
        if op == "delete_char" and text:
            i = draw(st.integers(0, len(text) - 1))
            text = text[:i] + text[i + 1 :]
        elif op == "insert":
            i = draw(st.integers(0, len(text)))
            text = text[:i] + draw(st.sampled_from(_NOISE)) + text[i:]
        elif op == "truncate":
            text = text[: draw(st.integers(0, len(text)))]
        else:
            k = draw(st.integers(0, len(spans) - 1))
            a, b = spans[k]
            if op == "duplicate_token":
                text = text[:b] + " " + tokens[k] + text[b:]
            elif op == "delete_token":
                text = text[:a] + text[b:]
            elif k + 1 < len(spans):
                c, d = spans[k + 1]
                text = text[:a] + text[c:d] + text[b:c] + text[a:b] + text[d:]
    return text


@_examples(200)
@given(mutated())
def test_mutations_never_raise(text):
    parsed = syntax.parse(text)
    assert all(d.span.line >= 1 and d.span.column >= 1 for d in parsed.diagnostics)
    _, diagnostics = check.check_source(text, "fuzz.sched")
    assert all(d.code for d in diagnostics)
    try:
        out = format_source(text)
    except SchedError as err:
        assert err.diagnostics and not parsed.ok
        assert all(d.code != "E0901" for d in err.diagnostics), str(err)
        return
    assert parsed.ok
    assert syntax.parse(out).file == parsed.file
    assert format_source(out) == out
