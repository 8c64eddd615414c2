"""The language server: its pure analyses, then end to end over stdio with pytest-lsp."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest
import pytest_lsp
from lsprotocol import types as lsp
from pytest_lsp import ClientServerConfig, LanguageClient

from schedc.tooling import lsp as server
from schedc.lang.diagnostics import Diagnostic, Label
from schedc.lang.nodes import Span
from schedc.plan.params import ParamTree
from schedc.lang.syntax import parse

UTF8, UTF16, UTF32 = lsp.PositionEncodingKind.Utf8, lsp.PositionEncodingKind.Utf16, lsp.PositionEncodingKind.Utf32

FILE = """\
optimizer adamw(weight_decay=1e-4)
let base = 0.05
phase warm 100 lr cosine(base -> 0) <
  free gp.coefficients, line.*;
  init line.amplitude ~ normal(0, 0.1);
  carry state;
  stop when loss_change < 1e-6
>
repeat 2 < phase 10 lr base < free ** > >
params <
  gp.kernel.*: free in warm, 2 | init uniform(0, 1) at 0;
>
"""

TREE = ParamTree.from_paths(
    ["gp.coefficients", "gp.kernel.lengthscale", "gp.kernel.variance", "line.amplitude", "line.width"],
    shared={"line_b.width": "line.width"},
)


def at(text: str, needle: str, nth: int = 0, delta: int = 1) -> int:
    """An offset inside the nth occurrence of `needle` (its second character by default)."""
    offset = -1
    for _ in range(nth + 1):
        offset = text.index(needle, offset + 1)
    return offset + delta


# ---------------------------------------------------------------- positions


def test_positions_count_utf16_units_from_code_point_columns():
    text = 'let s = "😀é" + cosin(1)\n'
    lines = server._lines(text)
    column = text.index("cosin") + 1  # schedc: 1-based code points
    assert server.client_position(lines, 1, column, UTF16) == lsp.Position(0, column - 1 + 1)  # the emoji is 2 units
    assert server.client_position(lines, 1, column, UTF32) == lsp.Position(0, column - 1)
    assert server.client_position(lines, 1, column, UTF8) == lsp.Position(0, column - 1 + 3 + 1)  # 4 + 2 bytes
    for encoding in (UTF8, UTF16, UTF32):
        position = server.client_position(lines, 1, column, encoding)
        assert server.offset_at(text, position, encoding) == text.index("cosin")


def test_positions_clamp_to_the_text():
    text = "phase 1 <>\nlet a = 1"
    lines = server._lines(text)
    assert server.client_position(lines, 9, 1) == lsp.Position(1, 9)
    assert server.client_position(lines, 1, 99) == lsp.Position(0, 10)
    assert server.offset_at(text, lsp.Position(7, 0)) == len(text)
    assert server.offset_at(text, lsp.Position(0, 99)) == len("phase 1 <>")
    assert server.offset_at(text, lsp.Position(1, 4)) == text.index("a =")


def test_diagnostic_conversion():
    text = "let unused = 1\nphase 10 lr cosin(0.1 -> 0) < free a >\n"
    lines = server._lines(text)
    d = Diagnostic("E0104", "unknown schedule `cosin`", Span(2, 13, 2, 18, 27, 32), help="did you mean `cosine`?", notes=("a note",), labels=(Label(Span(1, 5, 1, 11), "here"),))
    out = server.to_lsp_diagnostic(d, lines, "file:///x.sched")
    assert out.code == "E0104" and out.source == "schedc" and out.severity == lsp.DiagnosticSeverity.Error
    assert out.range == lsp.Range(lsp.Position(1, 12), lsp.Position(1, 17))
    assert out.message == "unknown schedule `cosin`\nhelp: did you mean `cosine`?\nnote: a note"
    assert out.related_information[0].location.range.start == lsp.Position(0, 4)
    unused = server.to_lsp_diagnostic(Diagnostic("W0101", "`unused` is never used", Span(1, 5, 1, 11)), lines, "file:///x.sched")
    assert unused.severity == lsp.DiagnosticSeverity.Warning and unused.tags == [lsp.DiagnosticTag.Unnecessary]


# ---------------------------------------------------------------- hover


def hover_text(text: str, offset: int, tree=None) -> str | None:
    found = server.hover(parse(text), offset, tree)
    return None if found is None else found[0]


@pytest.mark.parametrize(
    "needle, nth, expected",
    [
        ("phase", 0, "`phase [NAME] STEPS"),
        ("repeat", 0, "`repeat N < PHASES >`"),
        ("state", 0, "`carry state`"),  # no doc of its own: carry's
        ("cosine", 0, "cosine(a -> b, [steps=whole span], [exponent=1.0])"),
        ("normal", 0, "distribution: mean + std * N(0, 1)"),
        ("uniform", 0, "U[low, high)"),
        ("adamw", 0, "adamw(learning_rate"),
        ("weight_decay", 0, "`weight_decay` of `optax.adamw`"),
        ("loss_change", 0, "spectracles' Δloss rule"),
        ("base", 1, "let base = 0.05"),
        ("warm", 0, "phase 0 `warm`: 100 steps"),
        ("warm", 1, "phase 0 `warm`: 100 steps"),
        ("2 |", 0, "phase 2: 10 steps"),
    ],
)
def test_hover(needle, nth, expected):
    markdown = hover_text(FILE, at(FILE, needle, nth, delta=0 if needle == "2 |" else 1))
    assert markdown is not None and expected in markdown


def test_hover_on_an_evaluation_s_unit_with_its_count_left_out():
    """`every step` (as the formatter writes `every steps`) is the unit's keyword; `step(...)` the schedule."""
    text = 'eval "m.py:metrics" every step\nphase 10 lr step(0.1, at=[5]) < free a >\n'
    assert "evaluation interval in optimisation steps" in hover_text(text, text.index("step\n") + 1)
    assert "evaluation interval" not in hover_text(text, text.index("step(") + 1)


def test_hover_range_is_the_word():
    found = server.hover(parse(FILE), at(FILE, "cosine"), None)
    assert found[1] == Span(3, 19, 3, 25, FILE.index("cosine"), FILE.index("cosine") + 6)


def test_hover_on_a_pattern_lists_matching_parameters():
    markdown = hover_text(FILE, at(FILE, "line.*"), TREE)
    assert "matches 2 parameters" in markdown and "`line.amplitude`" in markdown and "`line.width`" in markdown
    assert "`gp.coefficients`" not in markdown
    assert "`line_b.width` is `line.width`" not in markdown  # `line.*` does not name the copy
    copies = hover_text("phase 1 lr 0.1 < free line_b.* >", 26, TREE)
    assert "matches 0 parameters" in copies and "`line_b.width` is `line.width`" in copies
    nothing = hover_text("phase 1 lr 0.1 < free gp.kernal.* >", 26, TREE)
    assert "matches no parameter" in nothing and "\n" not in nothing
    import jax.numpy as jnp

    from schedc.plan.params import discover

    with_counter = discover({"a": jnp.zeros(2), "step": jnp.asarray(0)})  # an int leaf: no parameter, and said why
    assert hover_text("phase 1 lr 0.1 < free step >", 24, with_counter) == (
        "Parameter pattern `step` matches no parameter of the model.\n\n"
        "- `step` is an array of dtype int32: only floating-point and complex arrays are parameters (gradients are taken of those alone)"
    )
    assert "Add a `model" in hover_text(FILE, at(FILE, "line.*"), None)


def test_hover_nothing_on_numbers_and_space():
    assert hover_text(FILE, at(FILE, "100", delta=1)) is None
    assert hover_text(FILE, FILE.index("\n>") + 0) is None


# ---------------------------------------------------------------- definition


def test_definition_of_a_let_use():
    span = server.definition(parse(FILE), at(FILE, "base", 1))
    assert (span.line, span.column, span.end_column) == (2, 5, 9)
    assert server.definition(parse(FILE), at(FILE, "base", 0)) is None  # the definition itself


def test_definition_of_phase_references():
    parsed = parse(FILE)
    by_name = server.definition(parsed, at(FILE, "warm", 1))
    assert (by_name.line, by_name.column, by_name.end_column) == (3, 7, 11)
    by_index = server.definition(parsed, at(FILE, "2 |", delta=0))  # phase 2: the second iteration of the repeat
    assert (by_index.line, by_index.column) == (9, 12)
    assert FILE.splitlines()[8][by_index.column - 1 : by_index.end_column - 1] == "phase 10 lr base < free ** >"
    assert server.definition(parsed, at(FILE, "phase")) is None


# ---------------------------------------------------------------- completion


def labels(text: str, tree=None, offset: int | None = None) -> list[str]:
    offset = len(text) if offset is None else offset
    return [s.label for s in server.completions(text, offset, parse(text), tree)[1]]


def test_completion_keywords_come_from_the_grammar():
    assert labels("phase 1 ") == ["accumulate", "batch", "ema", "epochs", "lr", "optimizer"]
    assert labels("phase 1 optimizer adam ") == ["accumulate", "ema"]
    assert set(labels("phase 1 lr 0.1 < ")) == {"carry", "fix", "free", "init", "keep", "stop"}
    assert set(labels("")) >= {"model", "phase", "repeat", "params", "let"}
    assert set(labels("params < a: free ")) == {"after", "in", "until"}
    assert set(labels("default ")) == {"fixed", "free"}


def test_completion_offers_transformations_in_a_chain_and_hovers_them():
    assert {"clip_by_global_norm", "adamw", "contrib.muon", "chain"} <= set(labels("phase 1 lr 0.1 optimizer chain("))
    assert {"contrib.reduce_on_plateau", "scale_by_adam"} <= set(labels("phase 1 lr 0.1 optimizer "))
    text = "phase 1 lr 0.1 optimizer chain(clip_by_global_norm(1.0), adamw) < free a >"
    assert "optax.clip_by_global_norm" in hover_text(text, text.index("clip_by"))
    assert "max_norm" in hover_text(text, text.index("clip_by"))
    assert "optax.chain" in hover_text(text, text.index("chain"))


def test_plateau_arguments_complete_and_hover_with_its_metric():
    assert {"on=", "factor=", "patience=", "cooldown=", "min_scale="} <= set(labels("phase 1 lr 0.1 * plateau("))
    text = 'eval "m.py:f" every 2 steps\nphase 10 lr 0.1 * plateau(on=val.loss, patience=3) < free a >'
    assert "evaluation" in hover_text(text, at(text, "on=")) and "training loss" in hover_text(text, at(text, "on="))
    assert "the `loss` entry of the metrics function" in hover_text(text, at(text, "val.loss"))
    assert "`patience` of `optax.contrib.reduce_on_plateau`" in hover_text(text, at(text, "patience"))


def test_completion_after_a_partial_word_replaces_it():
    text = "phase 1 lr 0.1 < fr"
    start, suggestions = server.completions(text, len(text), parse(text))
    assert start == len(text) - 2 and "free" in [s.label for s in suggestions]


def test_completion_names_by_context():
    assert {"adam", "adamw", "sgd", "lbfgs"} <= set(labels("phase 1 lr 0.1 optimizer "))
    assert set(labels("phase 1 lr 0.1 < init a ~ ")) == {"normal", "uniform", "value"}
    assert set(labels("params < a: init ")) == {"normal", "uniform", "value"}
    assert set(labels("phase 1 lr 0.1 < stop when ")) == {"loss", "loss_change"}
    expression = labels("let base = 1\nphase 1 lr ")
    assert {"base", "cosine", "warmup_cosine", "true"} <= set(expression)
    assert "adam" not in expression
    assert {"steps=", "exponent="} <= set(labels("phase 1 lr cosine(0.1 -> 0, "))
    assert {"b1=", "weight_decay="} <= set(labels("optimizer adamw("))


def test_completion_of_phase_names_in_params():
    text = FILE.replace("free in warm, 2", "free in ")
    offset = text.index("free in ") + len("free in ")
    assert labels(text, offset=offset) == ["warm"]


def test_completion_of_parameter_paths():
    paths = labels("phase 1 lr 0.1 < free ", TREE)
    assert {"gp.coefficients", "line.width", "gp.**", "gp.kernel.**"} <= set(paths)
    assert "line_b.width" not in paths  # patterns name parents
    assert labels("phase 1 lr 0.1 < free ") == []  # no model: nothing to offer
    text = "phase 1 lr 0.1 < free gp.ker"
    start, _ = server.completions(text, len(text), parse(text), TREE)
    assert text[start:] == "gp.ker"


def test_completion_nothing_in_comments_and_strings():
    assert labels("phase 1 lr 0.1 < # free ") == []
    assert labels('model "file ') == []
    assert labels('model "a\\" b') == []
    assert "phase" in labels('model "m.py:f"\n')


def test_completion_survives_broken_text():
    # an earlier broken item does not matter: the last item is parsed on its own
    assert set(labels("phase 1 lr < free a >\nphase 2 lr 0.1 < ")) == {"carry", "fix", "free", "init", "keep", "stop"}
    # a prefix that does not lex falls back to the vocabulary
    fallback = labels("phase 1 lr 0.1 < free a @ ")
    assert {"phase", "free", "cosine"} <= set(fallback)


# ---------------------------------------------------------------- any input


MALFORMED = sorted((Path(__file__).parent / "malformed").glob("*.sched"))


@pytest.mark.parametrize("path", MALFORMED, ids=[p.name for p in MALFORMED])
def test_analyses_never_raise_on_malformed_files(path):
    from schedc.lang.syntax import decode

    text, _ = decode(path.read_bytes())
    if text is None:  # binary: the server only ever sees decoded text
        text = path.read_bytes().decode("utf-8", "replace")
    parsed = parse(text)
    offsets = {0, len(text) // 3, len(text) // 2, len(text)} | {min(d.span.start, len(text)) for d in parsed.diagnostics[:2]}
    for offset in sorted(offsets):
        server.hover(parsed, offset, TREE)
        server.definition(parsed, offset)
        start, _ = server.completions(text, offset, parsed, TREE)
        assert 0 <= start <= offset
    server.outline(parsed)
    server.format_edits(text)


# ---------------------------------------------------------------- formatting


def test_format_edits():
    messy = "phase   10 lr 0.1<free a;>\n"
    (edit,) = server.format_edits(messy)
    assert edit.range == lsp.Range(lsp.Position(0, 0), lsp.Position(1, 0))
    assert parse(edit.new_text).file == parse(messy).file and edit.new_text != messy
    assert server.format_edits(edit.new_text) == []
    assert server.format_edits("phase 10 lr < free a >\n") is None


# ---------------------------------------------------------------- the model cache


def test_model_failures_are_cached_and_follow_the_directive(tmp_path):
    log = tmp_path / "runs.txt"
    (tmp_path / "m.py").write_text(f"open({str(log)!r}, 'a').write('x')\nraise ImportError('no such thing')\n")
    cache = server.ModelCache()
    first = parse('model "m.py:build"\nphase 1 lr 0.1 < free a >\n')
    moved = parse('\n\nmodel "m.py:build"\nphase 1 lr 0.1 < free a >\n')
    (d1,) = cache.diagnostics(first, tmp_path, "a.sched")
    (d2,) = cache.diagnostics(moved, tmp_path, "a.sched")
    assert d1.code == d2.code == "E0406" and "ImportError: no such thing" in d1.notes[0]
    assert (d1.span.line, d2.span.line) == (1, 3)
    assert log.read_text() == "x"  # executed once
    stat = (tmp_path / "m.py").stat()
    os.utime(tmp_path / "m.py", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert not cache.cached("m.py:build", tmp_path)
    cache.diagnostics(first, tmp_path, "a.sched")
    assert log.read_text() == "xx"  # changed: loaded again


def test_a_model_load_moves_the_heap_out_of_the_collector_s_way(tmp_path):
    """After a model loads, what is alive (JAX, the model, the server's modules) is frozen: a full
    collection during a later edit scans only what the checks made since."""
    import gc

    (tmp_path / "m.py").write_text("import jax.numpy as jnp\n\ndef build():\n    return {'a': jnp.zeros(3)}\n")
    gc.unfreeze()
    try:
        assert gc.get_freeze_count() == 0
        assert server.ModelCache().diagnostics(parse('model "m.py:build"\nphase 1 lr 0.1 < free a >\n'), tmp_path, "a.sched") == []
        frozen = gc.get_freeze_count()
        assert frozen > 10_000 and len(gc.get_objects(generation=2)) < frozen / 10
    finally:
        gc.unfreeze()


def test_no_model_directive_no_model_work():
    assert server.ModelCache().diagnostics(parse(FILE), Path("."), "a.sched") == []


# ---------------------------------------------------------------- end to end over stdio


MODEL = """\
import jax.numpy as jnp

def build():
    print("building the model")  # must not corrupt the LSP stream
    return {"gp": {"coefficients": jnp.zeros(4), "kernel": {"lengthscale": jnp.ones(()), "variance": jnp.ones(())}},
            "line": {"amplitude": jnp.ones(()), "width": jnp.ones(())}}
"""


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("lsp")
    (root / "m.py").write_text(MODEL)
    return root


@pytest_lsp.fixture(scope="module", config=ClientServerConfig(server_command=[sys.executable, "-m", "schedc", "lsp"]))
async def client(lsp_client: LanguageClient, workspace):
    await lsp_client.initialize_session(
        lsp.InitializeParams(capabilities=lsp.ClientCapabilities(), root_uri=workspace.as_uri(), initialization_options={"modelChecks": True})
    )
    yield
    await lsp_client.shutdown_session()


async def open_document(client: LanguageClient, path: Path, text: str) -> str:
    uri = path.as_uri()
    client.text_document_did_open(lsp.DidOpenTextDocumentParams(lsp.TextDocumentItem(uri, "sched", 1, text)))
    return uri


async def diagnostics_until(client: LanguageClient, uri: str, predicate, timeout: float = 60) -> list[lsp.Diagnostic]:
    """Wait for published diagnostics of `uri` that satisfy `predicate`."""

    async def wait():
        while True:
            current = client.diagnostics.get(uri)
            if current is not None and predicate(current):
                return current
            await client.wait_for_notification(lsp.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS)

    return await asyncio.wait_for(wait(), timeout)


def codes(diagnostics) -> list[str]:
    return sorted(d.code for d in diagnostics)


@pytest.mark.asyncio(loop_scope="module")
async def test_e2e_diagnostics_on_open_and_change(client: LanguageClient, workspace):
    text = 'let s = "😀" + cosin(1)\nphase 10 lr s < free a >\n'
    uri = await open_document(client, workspace / "d.sched", text)
    found = await diagnostics_until(client, uri, lambda ds: "E0104" in codes(ds))
    (unknown,) = [d for d in found if d.code == "E0104"]
    column = len(text.split("\n")[0][: text.index("cosin")].encode("utf-16-le")) // 2
    assert unknown.range.start == lsp.Position(0, column) and unknown.severity == lsp.DiagnosticSeverity.Error
    assert "did you mean `cosine`?" in unknown.message
    client.text_document_did_change(
        lsp.DidChangeTextDocumentParams(
            lsp.VersionedTextDocumentIdentifier(uri=uri, version=2),
            [lsp.TextDocumentContentChangePartial(range=lsp.Range(lsp.Position(0, column), lsp.Position(0, column + 5)), text="cosine")],
        )
    )
    after = await diagnostics_until(client, uri, lambda ds: "E0104" not in codes(ds))
    assert all(d.code != "E0104" for d in after)


@pytest.mark.asyncio(loop_scope="module")
async def test_e2e_quick_fixes_replace_a_misspelt_word_with_the_one_the_help_proposes(client: LanguageClient, workspace):
    text = 'model "m.py:build"\nphase 10 lr cosin(0.1 -> 0) optimizer adamm < free gp.kernal.* >\nphase 5 lr 0.1 < free a >\n'
    uri = await open_document(client, workspace / "q.sched", text)
    found = await diagnostics_until(client, uri, lambda ds: {"E0104", "E0105", "E0401"} <= set(codes(ds)))
    line = text.split("\n")[1]
    actions = await client.text_document_code_action_async(
        lsp.CodeActionParams(lsp.TextDocumentIdentifier(uri), lsp.Range(lsp.Position(1, 0), lsp.Position(2, 0)), lsp.CodeActionContext(diagnostics=found))
    )
    edits = {a.title: (a.kind, a.is_preferred, a.diagnostics[0].code, list(a.edit.changes[uri])) for a in actions}
    assert edits == {
        f"Replace with `{word}`": (lsp.CodeActionKind.QuickFix, True, code, [lsp.TextEdit(lsp.Range(lsp.Position(1, line.index(old)), lsp.Position(1, line.index(old) + len(old))), word)])
        for code, old, word in (("E0104", "cosin", "cosine"), ("E0105", "adamm", "adam"), ("E0401", "gp.kernal.*", "gp.kernel.*"))
    }
    # a diagnostic whose help proposes nothing to write (W0103's advice) has no action
    others = [d for d in found if d.code not in ("E0104", "E0105", "E0401")]
    assert others and await client.text_document_code_action_async(
        lsp.CodeActionParams(lsp.TextDocumentIdentifier(uri), lsp.Range(lsp.Position(0, 0), lsp.Position(3, 0)), lsp.CodeActionContext(diagnostics=others))
    ) is None


@pytest.mark.asyncio(loop_scope="module")
async def test_e2e_model_aware_diagnostics_and_pattern_hover(client: LanguageClient, workspace):
    text = 'model "m.py:build"\nphase 10 lr 0.1 < free gp.kernal.*, line.* >\n'
    uri = await open_document(client, workspace / "m.sched", text)
    found = await diagnostics_until(client, uri, lambda ds: "E0401" in codes(ds))
    (missing,) = [d for d in found if d.code == "E0401"]
    assert missing.range.start == lsp.Position(1, text.split("\n")[1].index("gp.kernal"))
    result = await client.text_document_hover_async(lsp.HoverParams(lsp.TextDocumentIdentifier(uri), lsp.Position(1, text.split("\n")[1].index("line.*") + 1)))
    assert "matches 2 parameters" in result.contents.value and "`line.amplitude`" in result.contents.value


@pytest.mark.asyncio(loop_scope="module")
async def test_e2e_hover_completion_definition(client: LanguageClient, workspace):
    uri = await open_document(client, workspace / "h.sched", FILE)
    await diagnostics_until(client, uri, lambda ds: True)
    lines = FILE.split("\n")

    def position(needle: str, nth: int = 0) -> lsp.Position:
        offset = at(FILE, needle, nth)
        before = FILE[:offset]
        return lsp.Position(before.count("\n"), offset - (before.rfind("\n") + 1))

    hover = await client.text_document_hover_async(lsp.HoverParams(lsp.TextDocumentIdentifier(uri), position("cosine")))
    assert "Cosine decay" in hover.contents.value and hover.range.start == lsp.Position(2, lines[2].index("cosine"))
    hover = await client.text_document_hover_async(lsp.HoverParams(lsp.TextDocumentIdentifier(uri), position("carry")))
    assert "optimizer state" in hover.contents.value

    completion = await client.text_document_completion_async(lsp.CompletionParams(lsp.TextDocumentIdentifier(uri), lsp.Position(0, len("optimizer "))))
    names = {item.label for item in completion.items}
    assert {"adam", "adamw", "sgd"} <= names
    (adamw,) = [item for item in completion.items if item.label == "adamw"]
    assert adamw.text_edit.range == lsp.Range(lsp.Position(0, 10), lsp.Position(0, 10))

    location = await client.text_document_definition_async(lsp.DefinitionParams(lsp.TextDocumentIdentifier(uri), position("base", 1)))
    assert location.range == lsp.Range(lsp.Position(1, 4), lsp.Position(1, 8))
    location = await client.text_document_definition_async(lsp.DefinitionParams(lsp.TextDocumentIdentifier(uri), position("warm", 1)))
    assert location.range == lsp.Range(lsp.Position(2, 6), lsp.Position(2, 10))


@pytest.mark.asyncio(loop_scope="module")
async def test_e2e_completion_of_model_paths(client: LanguageClient, workspace):
    text = 'model "m.py:build"\nphase 10 lr 0.1 < free gp.\n'
    uri = await open_document(client, workspace / "c.sched", text)
    completion = await client.text_document_completion_async(lsp.CompletionParams(lsp.TextDocumentIdentifier(uri), lsp.Position(1, len("phase 10 lr 0.1 < free gp."))))
    items = {item.label: item for item in completion.items}
    assert {"gp.coefficients", "gp.kernel.lengthscale", "gp.kernel.**"} <= set(items)
    start = len("phase 10 lr 0.1 < free ")
    assert items["gp.coefficients"].text_edit.range.start == lsp.Position(1, start)


@pytest.mark.asyncio(loop_scope="module")
async def test_e2e_formatting(client: LanguageClient, workspace):
    messy = "phase   10 lr 0.1<free a;>   # keep me\n"
    uri = await open_document(client, workspace / "f.sched", messy)
    options = lsp.FormattingOptions(tab_size=2, insert_spaces=True)
    (edit,) = await client.text_document_formatting_async(lsp.DocumentFormattingParams(lsp.TextDocumentIdentifier(uri), options))
    assert "# keep me" in edit.new_text and edit.new_text != messy
    assert edit.range == lsp.Range(lsp.Position(0, 0), lsp.Position(1, 0))
    broken = await open_document(client, workspace / "g.sched", "phase 10 lr < free a >\n")
    assert await client.text_document_formatting_async(lsp.DocumentFormattingParams(lsp.TextDocumentIdentifier(broken), options)) is None


@pytest.mark.asyncio(loop_scope="module")
async def test_e2e_diagnostics_match_schedc_check(client: LanguageClient, workspace):
    """Every model-free example of the diagnostics registry: the server reports what `check` does, where it does."""
    from schedc.lang.diagnostics import CODES
    from schedc.pipeline import analyse

    examples = {code: c.example for code, c in CODES.items() if 'model "' not in c.example and code != "E0004"}
    uris = {code: await open_document(client, workspace / f"code_{code}.sched", text) for code, text in examples.items()}
    covered = set()
    for code, text in examples.items():
        # what `schedc check` reports (lint: an unbound `$name` is an unknown there, not E0110)
        expected = sorted((d.code, d.span.line - 1, d.span.column - 1) for d in analyse(text, lint=True).diagnostics)
        covered.update(e[0] for e in expected)
        found = await diagnostics_until(client, uris[code], lambda ds: True)
        assert sorted((d.code, d.range.start.line, d.range.start.character) for d in found) == expected
    assert len(covered) >= 30


def test_outline():
    symbols = server.outline(parse(FILE))
    assert [(s.name, s.detail) for s in symbols] == [
        ("optimizer", "adamw(weight_decay=1e-4)"),
        ("base", "0.05"),
        ("phase 0 warm", "100 steps"),
        ("repeat 2", ""),
        ("params", ""),
    ]
    repeat, params = symbols[3], symbols[4]
    assert [(c.name, c.detail) for c in repeat.children] == [("phase 1, 2", "10 steps")]
    assert [(c.name, c.detail) for c in params.children] == [("gp.kernel.*", "free in warm, 2 | init uniform(0, 1) at 0")]
    assert symbols[2].selection == Span(3, 7, 3, 11, FILE.index("warm"), FILE.index("warm") + 4)


@pytest.mark.asyncio(loop_scope="module")
async def test_e2e_document_symbols(client: LanguageClient, workspace):
    uri = await open_document(client, workspace / "o.sched", FILE)
    symbols = await client.text_document_document_symbol_async(lsp.DocumentSymbolParams(lsp.TextDocumentIdentifier(uri)))
    assert [s.name for s in symbols] == ["optimizer", "base", "phase 0 warm", "repeat 2", "params"]
    assert symbols[3].children[0].name == "phase 1, 2"
    assert symbols[2].selection_range == lsp.Range(lsp.Position(2, 6), lsp.Position(2, 10))


def test_hover_on_default_value_and_names_that_look_like_keywords():
    text = "default fixed\nlet data = 1\nphase 10 lr data < free a >\n"
    assert hover_text(text, at(text, "fixed")).startswith("`default fixed|free`")
    assert hover_text(text, at(text, "data", 1)) == "```sched\nlet data = 1\n```"  # a let, not the directive


# ---------------------------------------------------------------- consent: no code runs by opening a file

MARKED_MODEL = """\
from pathlib import Path
Path(__file__).with_name("ran").write_text("the model file ran")

def build():
    return {"a": 1.0}
"""


@pytest.fixture(scope="module")
def untrusted(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("untrusted")
    (root / "evil.py").write_text(MARKED_MODEL)
    return root


@pytest_lsp.fixture(scope="module", config=ClientServerConfig(server_command=[sys.executable, "-m", "schedc", "lsp"]))
async def plain_client(lsp_client: LanguageClient, untrusted):
    """A client that does not pass `modelChecks`: the default an editor gets."""
    await lsp_client.initialize_session(lsp.InitializeParams(capabilities=lsp.ClientCapabilities(), root_uri=untrusted.as_uri()))
    yield
    await lsp_client.shutdown_session()


@pytest.mark.asyncio(loop_scope="module")
async def test_e2e_opening_a_file_runs_no_model_code_without_consent(plain_client: LanguageClient, untrusted):
    text = 'model "evil.py:build"\nphase 10 lr 0.1 < free a, b >\nphase 5 lr cosin(1) < free a >\n'
    uri = await open_document(plain_client, untrusted / "s.sched", text)
    found = await diagnostics_until(plain_client, uri, lambda ds: "E0104" in codes(d for d in ds if d.code))
    info = [d for d in found if d.severity == lsp.DiagnosticSeverity.Information]
    assert len(info) == 1 and "modelChecks" in info[0].message and info[0].range.start == lsp.Position(0, 6)
    line = text.split("\n")[1]
    hovered = await plain_client.text_document_hover_async(lsp.HoverParams(lsp.TextDocumentIdentifier(uri), lsp.Position(1, line.index("a,"))))
    assert "Model checks are off" in hovered.contents.value
    completed = await plain_client.text_document_completion_async(lsp.CompletionParams(lsp.TextDocumentIdentifier(uri), lsp.Position(1, line.index("a,"))))
    assert completed is not None
    assert not (untrusted / "ran").exists()


def test_check_without_model_never_imports_user_code(tmp_path):
    (tmp_path / "evil.py").write_text(MARKED_MODEL)
    (tmp_path / "s.sched").write_text('model "evil.py:build"\nloss "evil.py:build"\ndata "evil.py:build"\nphase 10 lr 0.1 < free a >\n')
    for command in (["check"], ["show"], ["fmt", "--check"]):
        subprocess.run([sys.executable, "-m", "schedc", *command, str(tmp_path / "s.sched")], capture_output=True, timeout=120)
    assert not (tmp_path / "ran").exists()
    subprocess.run([sys.executable, "-m", "schedc", "check", str(tmp_path / "s.sched"), "--model"], capture_output=True, timeout=120)
    assert (tmp_path / "ran").exists()  # the marker works: --model is the consent


def test_placeholder_hover_says_what_it_may_hold():
    from schedc.lang.syntax import parse
    from schedc.tooling.lsp import hover

    text = "let M = 20\nphase fit 10 * M lr $lr optimizer $opt < free line.σ; init b = $w >\n"
    parsed = parse(text)
    assert "GradientTransformation" in hover(parsed, text.index("$opt") + 1)[0]
    assert "optax schedule function" in hover(parsed, text.index("$lr") + 1)[0]
    assert "array of the parameter's shape" in hover(parsed, text.index("$w") + 1)[0]
