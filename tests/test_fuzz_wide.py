"""Fuzzing beyond `check` (issue 14): fmt, show, the language server's requests and the builder's
Python inputs, on mutated real files (the `mutated` strategy of tests/test_fuzz.py) and on the
crafted files of tests/regressions/*.input (the adversarial findings; any failing example hypothesis
finds is added there too, so it is tried on every run).

Fixed example budgets keep the file fast in CI; `SCHEDC_FUZZ_SCALE=20` runs a deeper search.
"""

from __future__ import annotations

import contextlib
import io
import math
from pathlib import Path

import jax.numpy as jnp
import pytest
from hypothesis import given
from hypothesis import strategies as st

from schedc.cli import main
from schedc.lang import syntax
from schedc.lang.diagnostics import SchedError
from schedc.surface.builder import build_schedule, fixed_in, free_after, free_in, init_normal, init_value
from schedc.tooling import lsp
from schedc.tooling.fmt import format_source
from test_fuzz import _examples, mutated

# `.input`, not `.sched`: the corpus-wide tests (lexer goldens, diagnostics snapshot) keep their own files
REGRESSIONS = sorted((Path(__file__).parent / "regressions").glob("*.input"))


def _cases():
    return [pytest.param(p.read_bytes(), id=p.name) for p in REGRESSIONS]


def _decoded(data: bytes) -> str:
    text, problem = syntax.decode(data)
    return text if text is not None else data.decode("utf-8", "replace")


# ---------------------------------------------------------------- fmt


def fmt_properties(data: bytes, folder: Path) -> None:
    """fmt's output re-parses to the same program, is a fixed point and keeps every comment; a file
    that does not decode or parse is left byte-identical by `schedc fmt`. The properties are of the
    text the CLI reads: the bytes decoded as `schedc fmt` decodes them (a BOM dropped, a NUL byte or
    invalid UTF-8 refused), not of a Python string that no file could hold."""
    path = folder / "f.sched"
    path.write_bytes(data)
    with contextlib.redirect_stderr(io.StringIO()):
        status = main(["fmt", str(path)])
    text, problem = syntax.decode(data)
    if problem is not None:
        assert status in (1, 2) and path.read_bytes() == data
        return
    parsed = syntax.parse(text)
    if not parsed.ok:
        assert status in (1, 2) and path.read_bytes() == data
        return
    try:
        out = format_source(text)
    except SchedError as err:  # E0901 would be a formatter bug
        assert all(d.code != "E0901" for d in err.diagnostics), str(err)
        assert path.read_bytes() == data
        return
    assert status == 0
    assert syntax.parse(out).file == parsed.file and format_source(out) == out
    kept = [c.text.rstrip() for c in syntax.parse(out).comments]
    assert [c.text.rstrip() for c in parsed.comments] == kept


@_examples(40)
@given(mutated())
def test_fmt_on_mutated_files(tmp_path_factory, text):
    fmt_properties(text.encode("utf-8", "surrogatepass"), tmp_path_factory.mktemp("fmt"))


@pytest.mark.parametrize("data", _cases())
def test_fmt_on_regression_files(tmp_path, data):
    fmt_properties(data, tmp_path)


# ---------------------------------------------------------------- show


def show_exits_cleanly(data: bytes, folder: Path) -> None:
    path = folder / "s.sched"
    path.write_bytes(data)
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        status = main(["show", str(path)])
    assert status in (0, 1, 2) and "Traceback" not in err.getvalue()


@_examples(30)
@given(mutated())
def test_show_on_mutated_files(tmp_path_factory, text):
    show_exits_cleanly(text.encode("utf-8", "surrogatepass"), tmp_path_factory.mktemp("show"))


@pytest.mark.parametrize("data", _cases())
def test_show_on_regression_files(tmp_path, data):
    show_exits_cleanly(data, tmp_path)


# ---------------------------------------------------------------- the language server's requests


def lsp_requests(text: str, offsets) -> None:
    """hover, completion, definition and the outline at any position never raise, and what they
    return points inside the text."""
    parsed = syntax.parse(text)
    lsp.outline(parsed)
    for offset in offsets:
        offset = min(max(offset, 0), len(text))
        found = lsp.hover(parsed, offset)
        if found is not None:
            markdown, span = found
            assert isinstance(markdown, str) and (span is None or span.end <= len(text) + 1)
        start, suggestions = lsp.completions(text, offset, parsed)
        assert 0 <= start <= offset and all(s.label for s in suggestions)
        span = lsp.definition(parsed, offset)
        assert span is None or span.end <= len(text) + 1


@_examples(40)
@given(mutated(), st.lists(st.integers(0, 5000), min_size=1, max_size=8))
def test_lsp_requests_on_mutated_files(text, offsets):
    lsp_requests(text, offsets)


@pytest.mark.parametrize("data", _cases())
def test_lsp_requests_on_regression_files(data):
    text = _decoded(data)
    lsp_requests(text, range(0, len(text) + 1, max(1, len(text) // 50)))


# ---------------------------------------------------------------- the builder's Python inputs

MODEL = {"a": jnp.zeros(3), "b": {"c": jnp.ones(2)}}
steps = st.one_of(st.integers(-5, 10**10), st.sampled_from([0, 1.5, math.nan, "10", None, True]))
lrs = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["cosine(0.1 -> 0.001)", "cosin(1)", "0.1 <", "", "1e999", "$x", "warmup(10%) then 0.1", None, [0.1], object()]),
)
optimizers = st.one_of(st.none(), st.sampled_from(["adam", "sgd(momentum=0.9)", "adamw(", "nope", ("sgd", {"momentum": 0.9}), ("sgd", {"bogus": 1}), 3]))
patterns = st.one_of(st.sampled_from(["a", "b.*", "**", "b.c", "zz", "a.[0]", "{a,b}", "", "a b", "a\nphase", '"', "*" * 40]), st.text(max_size=8))


SPECS = {"free_in": free_in, "free_after": free_after, "fixed_in": fixed_in, "init_value": init_value, "init_normal": init_normal}
specs = st.tuples(
    st.sampled_from([*SPECS, "junk"]),
    st.integers(-2, 4),
    st.sampled_from([0.0, math.nan, -1.0, math.inf, [1.0, 2.0], "x", None, (0,)]),
)


def make_spec(maker: str, phase, arg):
    """The spec helper called as a user would (helpers validate their arguments: TypeError/ValueError)."""
    if maker == "junk":
        return arg
    if maker == "init_value":
        return init_value(phase, arg)
    if maker == "init_normal":
        return init_normal(phase, 0.0, arg)
    return SPECS[maker](phase)


@_examples(60)
@given(
    st.lists(st.tuples(steps, lrs) | st.tuples(steps, lrs, optimizers), min_size=0, max_size=4),
    st.dictionaries(patterns, specs, max_size=3),
)
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_builder_inputs_fail_only_with_documented_errors(phases, params):
    try:
        params = {pattern: make_spec(*spec) for pattern, spec in params.items()}
        build_schedule(MODEL, lambda m: jnp.sum(m["a"] ** 2), phases, params, key=0)
    except (SchedError, TypeError, ValueError) as err:  # SchedError is a ValueError; the message says what
        assert str(err)
