"""The schedc language server (`schedc lsp`, LSP over stdio, built on pygls 2).

Features, for `.sched` documents:

* diagnostics on open and change, exactly those of `schedc check` (the same
  `Diagnostic` objects), computed in a worker thread (a newer edit cancels a
  queued check; hover and shutdown never wait behind one); when the file has a
  `model` directive and the client allows running its code (initialization
  option `modelChecks: true`, off by default: opening a file must not run the
  Python it names), also those of `schedc check --model`, computed in another
  worker thread with the model's parameter tree cached per model file and
  modification time; without consent, one information diagnostic on the
  directive says how to turn model checks on;
* hover: keyword docs, schedule and distribution signatures, optimizer
  signatures (from the generated optax table), `let` values, phases, and for a
  parameter pattern the parameters it matches in the model;
* completion: the keywords the grammar accepts at the cursor (Lark's interactive
  parser), schedule names and keyword arguments in expressions, optimizer names
  after `optimizer`, distributions after `~`, stop metrics, phase names in
  `params` specs, and parameter paths from the model after free/fix/init;
* go to definition: a `let` name's use -> its `let`; a phase reference in a
  `params` block (by name or index) -> the phase;
* the document outline: directives, `let`s, phases (numbered as after `repeat`
  expansion), `repeat` and `params` blocks;
* quick fixes: a code action for each diagnostic whose help proposes one word
  (`Diagnostic.fix`, carried in the LSP diagnostic's `data`), writing it over the range;
* formatting through `schedc.tooling.fmt` (one whole-document edit; none when the file
  does not parse).

The analyses are plain functions of the text (and of the model's `ParamTree`)
so they are tested without a client; `build_server` wires them to LSP.
Positions: schedc spans are 1-based lines and columns counted in code points;
LSP positions are 0-based lines and columns counted in the negotiated encoding
(UTF-16 unless the client offers another); `client_position`/`offset_at`
convert. JAX is imported only when a file names a model and model checks are on.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import re
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

from lark.exceptions import LarkError
from lsprotocol import types as lsp
from pygments.token import Keyword

from schedc import __version__
from schedc.check import catalog
from schedc.check._optax_table import OPTIMIZERS, TRANSFORMS
from schedc.lang import nodes as n
from schedc.lang.diagnostics import Diagnostic, SchedError
from schedc.lang.expr import PLATEAU, PLATEAU_ON, PLATEAU_TRANSFORM
from schedc.lang.glob import PatternError, compile_pattern
from schedc.lang.program import expand, first_directive, first_lets, ref_phases
from schedc.lang.syntax import KEYWORDS, TOP_LEVEL_KEYWORDS, ParseResult, parser
from schedc.pipeline import FROM_DIRECTIVE, Analysis, analyse, read
from schedc.plan.binding import bind_model  # JAX is imported only when a model loads
from schedc.tooling.lexer import SchedLexer

# Where top-level items may start: completion and keyword lookups work from the last one.
_ITEM_START = re.compile(r"(?m)^[ \t]*(?:%s)\b" % "|".join(TOP_LEVEL_KEYWORDS))

# ---------------------------------------------------------------- positions


def _units(text: str, encoding: str) -> int:
    """Length of `text` in the client's position units."""
    if encoding == lsp.PositionEncodingKind.Utf8:
        return len(text.encode("utf-8"))
    if encoding == lsp.PositionEncodingKind.Utf32:
        return len(text)
    return len(text.encode("utf-16-le")) // 2


def _lines(text: str) -> list[str]:
    # Lark counts lines at "\n" only; a "\r" before it stays at the end of the line.
    return text.split("\n")


def client_position(lines: list[str], line: int, column: int, encoding: str = lsp.PositionEncodingKind.Utf16) -> lsp.Position:
    """The LSP position of a schedc (1-based line, 1-based code-point column), clamped to the text."""
    if line > len(lines):
        return lsp.Position(len(lines) - 1, _units(lines[-1], encoding))
    index = max(line, 1) - 1
    return lsp.Position(index, _units(lines[index][: max(column, 1) - 1], encoding))


def client_range(lines: list[str], span: n.Span, encoding: str = lsp.PositionEncodingKind.Utf16) -> lsp.Range:
    return lsp.Range(client_position(lines, span.line, span.column, encoding), client_position(lines, span.end_line, span.end_column, encoding))


def offset_at(text: str, position: lsp.Position, encoding: str = lsp.PositionEncodingKind.Utf16) -> int:
    """The code-point offset in `text` of an LSP position (clamped to its line and to the text)."""
    lines = _lines(text)
    if position.line >= len(lines):
        return len(text)
    start = sum(len(line) + 1 for line in lines[: position.line])
    line, units, index = lines[position.line], 0, 0
    while index < len(line) and units < position.character:
        units += _units(line[index], encoding)
        index += 1
    return start + index


# ---------------------------------------------------------------- diagnostics


def model_reference(file: n.File) -> n.String | None:
    """The string of the file's `model` directive, if any."""
    directive = first_directive(file, "model")
    return directive.value if directive is not None and isinstance(directive.value, n.String) else None


def settle_heap() -> None:
    """Collect, then move every object alive to the collector's permanent generation
    (`gc.freeze`): the server's modules, JAX's and a loaded model's live as long as it does. A
    full collection then scans only what the checks made since. With JAX imported, each full
    collection over its ~150,000 objects added up to ~100-200 ms to the edit it fell in
    (docs/performance.md, "The collector kept off JAX's heap")."""
    gc.collect()
    gc.freeze()


class ModelCache:
    """Parameter trees of models, loaded once per (reference, folder, model file mtime).

    A model file that changes is reloaded (the key has its mtime); a model given
    as `package.module:factory` is loaded once per server. Failures are cached
    too, so a broken model file is not re-executed on every keystroke.
    Thread-safe: loads are serialised.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._entries: dict[tuple[str, str], tuple[int | None, object, Diagnostic | None]] = {}

    @staticmethod
    def _mtime(ref: str, base_dir: Path) -> int | None:
        module = ref.rpartition(":")[0]
        path = Path(module) if Path(module).is_absolute() else base_dir / module
        try:
            return path.stat().st_mtime_ns if path.is_file() else None
        except OSError:
            return None

    def cached(self, ref: str, base_dir: Path) -> bool:
        entry = self._entries.get((ref, str(base_dir)))
        return entry is not None and entry[0] == self._mtime(ref, base_dir)

    def bind(self, file: n.File, model_ref: str | None, base_dir: Path):
        """`binding.bind_model` for the file's `model` directive, through the cache (`pipeline.analyse`'s `bind`)."""
        string = model_reference(file)
        if model_ref is not None or string is None:  # not the directive's model: nothing cached for it
            return bind_model(file, model_ref, base_dir)
        key, mtime = (string.value, str(base_dir)), self._mtime(string.value, base_dir)
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or entry[0] != mtime:
                bound, diags = bind_model(file, None, base_dir)
                entry = (mtime, bound, diags[0] if diags else None)
                self._entries[key] = entry
                settle_heap()  # (a load brings JAX and the model: they stay)
        _, bound, failure = entry
        # the cached failure points at the directive of the text it was found in
        return bound, ([replace(failure, span=string.span)] if failure else [])

    def tree(self, parsed: ParseResult, base_dir: Path):
        """(ParamTree or None, E0406 diagnostic or None) for the file's `model` directive."""
        bound, failures = self.bind(parsed.file, None, base_dir)
        return (bound[1] if bound else None), (failures[0] if failures else None)

    def diagnostics(self, parsed: ParseResult, base_dir: Path, name: str) -> list[Diagnostic]:
        """The model-aware diagnostics `schedc check --model` adds for this file (the driver's
        model stage, through this cache)."""
        front = Analysis(name, None, parsed, [], {})
        return front.with_model(FROM_DIRECTIVE, base_dir=base_dir, lint=True, bind=self.bind).diagnostics


_UNNECESSARY = {"W0101"}  # shown faded by editors


def to_lsp_diagnostic(d: Diagnostic, lines: list[str], uri: str, encoding: str = lsp.PositionEncodingKind.Utf16) -> lsp.Diagnostic:
    """One schedc diagnostic as LSP: same code and message; help and notes on extra lines; labels as related information."""
    message = d.message
    if d.help:
        message += f"\nhelp: {d.help}"
    for note in d.notes:
        message += f"\nnote: {note}"
    related = [
        lsp.DiagnosticRelatedInformation(lsp.Location(uri, client_range(lines, label.span, encoding)), label.message)
        for label in d.labels
        if label.file in (None, d.file)
    ]
    return lsp.Diagnostic(
        range=client_range(lines, d.span, encoding),
        message=message,
        severity=lsp.DiagnosticSeverity.Error if d.is_error else lsp.DiagnosticSeverity.Warning,
        code=d.code,
        source="schedc",
        related_information=related or None,
        tags=[lsp.DiagnosticTag.Unnecessary] if d.code in _UNNECESSARY else None,
        data={"fix": d.fix} if d.fix is not None else None,  # the client hands it back with a code action request
    )


def quick_fixes(uri: str, diagnostics: list[lsp.Diagnostic]) -> list[lsp.CodeAction]:
    """A code action for each of schedc's diagnostics in `diagnostics` (a code action request's
    context) that carries a fix: its range replaced by the one text its help proposes."""
    actions = []
    for diagnostic in diagnostics:
        fix = diagnostic.data.get("fix") if diagnostic.source == "schedc" and isinstance(diagnostic.data, dict) else None
        if isinstance(fix, str):
            actions.append(
                lsp.CodeAction(
                    title=f"Replace with `{fix}`",
                    kind=lsp.CodeActionKind.QuickFix,
                    diagnostics=[diagnostic],
                    is_preferred=True,
                    edit=lsp.WorkspaceEdit(changes={uri: [lsp.TextEdit(diagnostic.range, fix)]}),
                )
            )
    return actions


# ---------------------------------------------------------------- syntax-tree lookups


def _children(node) -> list:
    return [child for child in n.children(node) if hasattr(child, "span")]


def node_chain(file: n.File, offset: int) -> list:
    """The nodes whose source contains `offset`, outermost first (the File itself excluded)."""
    chain, children = [], _children(file)
    while children:
        inside = [c for c in children if c.span.start <= offset < c.span.end]
        if not inside:
            break
        node = min(inside, key=lambda c: c.span.end - c.span.start)
        chain.append(node)
        children = _children(node)
    return chain


def _expanded(file: n.File):
    """The phases after `repeat` expansion (none for a file past the phase cap)."""
    return expand(file) or ()


def _phases_named(file: n.File, name: str):
    return [p for p in _expanded(file) if p.name == name]


def _phases_referenced(file: n.File, ref: n.PhaseRef) -> list:
    """The expanded phases a params reference names (every instance of a repeated name)."""
    phases = _expanded(file)
    return [phases[i] for i in ref_phases(ref, phases)]


def _source(text: str, node) -> str:
    return text[node.span.start : node.span.end]


def _is_optimizer_slot(node, parent) -> bool:
    """Whether `node` (a Name or Call) is an optimizer spec of a phase, a free statement or the directive,
    or a member of a `chain(...)`."""
    if isinstance(parent, n.Call) and parent.func.id == catalog.CHAIN:
        return node in parent.args
    if isinstance(parent, (n.Phase, n.Free)):
        return parent.optimizer is node
    return isinstance(parent, n.Directive) and parent.keyword == "optimizer" and parent.value is node


# ---------------------------------------------------------------- hover


def optimizer_usage(name: str) -> str:
    """`adam(learning_rate, b1=0.9, ...)` from the generated optax table."""
    params = ", ".join(p if not has_default else f"{p}={default}" for p, has_default, default, _ in catalog.transform_params(name))
    return f"{name}({params})"


def _signature_markdown(sig: catalog.CallSignature, kind: str) -> str:
    out = [f"```sched\n{sig.usage()}\n```", f"{kind}: {sig.doc}"]
    described = [p for p in sig.params if p.doc]
    if described:
        out.append("\n".join(f"- `{p.name}`: {p.doc}" for p in described))
    if sig.lowers_to:
        out.append(f"Compiled with `{sig.lowers_to}`.")
    return "\n\n".join(out)


def _optimizer_markdown(name: str) -> str:
    if name == catalog.CHAIN:
        return "```sched\nchain(T1, T2, ...)\n```\n\n`optax.chain`: the transformations applied in order; the phase `lr` is the `learning_rate` of every member that takes one."
    if not catalog.is_transform(name):
        return f"`{name}` is not an optax optimizer or transformation."
    what = "optimizer" if name in OPTIMIZERS else "transformation"
    return f"```sched\n{optimizer_usage(name)}\n```\n\nThe optax {what} `optax.{name}`; the phase `lr` is its `learning_rate`, and any number may be a schedule."


_NO_MODEL = 'Add a `model "file.py:factory"` directive to see the parameters it matches.'


def _pattern_markdown(text: str, tree, model_problem: str | None) -> str:
    head = f"Parameter pattern `{text}`"
    try:
        pattern = compile_pattern(text)
    except PatternError as err:
        return f"{head}: {err.message}"
    if tree is None:
        return f"{head}.\n\n{model_problem or _NO_MODEL}"
    matched = [p for p in tree.params if pattern.match(p.path)]
    copies = [(copy, parent) for copy, parent in tree.shared.items() if pattern.match(copy)]
    if not matched and not copies:
        named = [f"- `{path}` is {what}" for path, what in tree.constants if pattern.match(path)][:5]  # (why not: E0401's note)
        return f"{head} matches no parameter of the model." + ("\n\n" + "\n".join(named) if named else "")
    lines = [f"{head} matches {len(matched)} parameter{'s' * (len(matched) != 1)}:", ""]
    shown = 30
    for p in matched[:shown]:
        shape = f"{p.dtype}[{', '.join(map(str, p.shape))}]" if p.dtype else ""
        lines.append(f"- `{p.path}` {shape}".rstrip())
    if len(matched) > shown:
        lines.append(f"- … and {len(matched) - shown} more")
    if copies:
        lines += ["", "Shared copies (patterns name their parents):"]
        lines += [f"- `{copy}` is `{parent}`" for copy, parent in copies[:shown]]
    return "\n".join(lines)


def _phase_markdown(text: str, phases) -> str:
    if not phases:
        return "No such phase."
    first = phases[0]
    header = f"phase {first.index}" if len(phases) == 1 else "phases " + ", ".join(str(p.index) for p in phases)
    name = f" `{first.name}`" if first.name else ""
    return f"{header}{name}: {_source(text, first.phase.steps)} steps"


_KEYWORD_ALIASES = {"state": "carry", "when": "stop", "step": "steps"}  # (`step`: `every step`, an evaluation's unit)


def _keyword_at(text: str, offset: int) -> str | None:
    """The keyword the highlighter shows at `offset`, if any (keywords have no syntax-tree node).

    Only the enclosing top-level item is lexed, up to the end of the cursor's line.
    """
    begin = max((m.start() for m in _ITEM_START.finditer(text, 0, offset + 1)), default=0)
    end = text.find("\n", offset)
    for start, token, value in SchedLexer().get_tokens_unprocessed(text[begin : len(text) if end < 0 else end]):
        if begin + start <= offset < begin + start + len(value):
            return value if token in Keyword else None
    return None


def hover(parsed: ParseResult, offset: int, tree=None, model_problem: str | None = None) -> tuple[str, n.Span | None] | None:
    """Markdown describing what is at `offset`, and the span it describes.

    Args:
        parsed: the document, parsed.
        offset: code-point offset of the cursor.
        tree: the model's `ParamTree`, when the file names a model that loaded.
        model_problem: why there is no tree (shown on pattern hovers).
    """
    text, file = parsed.text, parsed.file
    chain = node_chain(file, offset)
    node = chain[-1] if chain else None
    parent = chain[-2] if len(chain) > 1 else None
    grand = chain[-3] if len(chain) > 2 else None
    if isinstance(node, n.Pattern):
        return _pattern_markdown(node.text, tree, model_problem), node.span
    if isinstance(node, n.PhaseRef):
        return _phase_markdown(text, _phases_referenced(file, node)), node.span
    if isinstance(node, n.Name):
        return _name_hover(text, file, node, parent, grand)
    if isinstance(node, n.Placeholder):
        return _placeholder_markdown(node, parent), node.span
    word = _keyword_at(text, offset)
    if word is not None:
        doc = catalog.KEYWORD_DOCS.get(word) or catalog.KEYWORD_DOCS.get(_KEYWORD_ALIASES.get(word, ""))
        return (doc, None) if doc else None
    return None


def _placeholder_markdown(node: n.Placeholder, parent) -> str:
    """What a `$name` may be bound to, by where it stands (schedc.pipeline.bind_placeholders)."""
    if _is_optimizer_slot(node, parent):
        what = "an optimizer: optimizer text (`sgd(momentum=0.9)`), an optax factory, or an optax `GradientTransformation` object (run as-is; the phase `lr` then only documents)"
    elif isinstance(parent, n.Init) and parent.value is node:
        what = "an init value: a number, or an array of the parameter's shape"
    else:
        what = "a value: a number, a bool, schedule text (`cosine(0.1 -> 0)`), or an optax schedule function"
    return f"**`${node.id}`**: a placeholder for {what}. Bound from Python (`schedc.compile(text, model, {node.id}=...)`) or by `schedc run/show/plot --set {node.id}=VALUE`; `schedc check` treats it as unknown."


def _name_hover(text: str, file: n.File, node: n.Name, parent, grand) -> tuple[str, n.Span] | None:
    name = node.id
    if isinstance(parent, n.Call) and parent.func is node:
        if _is_optimizer_slot(parent, grand):
            return _optimizer_markdown(name), node.span
        if isinstance(grand, (n.Init, n.Spec)) and name in catalog.DISTRIBUTIONS:
            return _signature_markdown(catalog.DISTRIBUTIONS[name], "distribution"), node.span
        if name in catalog.SCHEDULES:
            return _signature_markdown(catalog.SCHEDULES[name], "schedule"), node.span
        return None
    if _is_optimizer_slot(node, parent):
        return _optimizer_markdown(name), node.span
    if isinstance(parent, n.Stop) and parent.metric is node:
        doc = catalog.STOP_METRICS.get(name)
        return (f"`{name}`: {doc}" if doc else f"`{name}` is not a stop metric ({', '.join(catalog.STOP_METRICS)})"), node.span
    if isinstance(parent, n.Keyword) and parent.name is node and isinstance(grand, n.Call):
        return _argument_hover(grand, name), node.span
    if isinstance(parent, n.Keyword) and parent.value is node and parent.name.id == PLATEAU_ON and isinstance(grand, n.Call) and grand.func.id == PLATEAU:
        entry = name.removeprefix(catalog.METRIC_PREFIX)
        return f"`{name}`: the `{entry}` entry of the metrics function; {_PLATEAU_ON_DOC}", node.span
    if isinstance(parent, n.Directive) and parent.keyword == "default":
        return catalog.KEYWORD_DOCS["default"], node.span
    if isinstance(parent, n.Phase) and parent.name is node:
        return _phase_markdown(text, _phases_named(file, name)), node.span
    let = first_lets(file).get(name)
    return (f"```sched\n{_source(text, let)}\n```", node.span) if let is not None else None


# what `plateau(on=...)` does, for hover and completion
_PLATEAU_ON_DOC = (
    "the plateau follows this evaluation metric: optax.contrib.reduce_on_plateau is fed its value at each "
    "evaluation (it lowers the scale when the value stops decreasing); without `on`, the training loss at every step"
)


def _argument_hover(call: n.Call, name: str) -> str:
    func = call.func.id
    if func == PLATEAU:  # optax.contrib.reduce_on_plateau's arguments, and `on`
        if name == PLATEAU_ON:
            return f"`{PLATEAU_ON}` of `plateau`: {_PLATEAU_ON_DOC}"
        func = PLATEAU_TRANSFORM
    sig = catalog.SCHEDULES.get(func) or catalog.DISTRIBUTIONS.get(func)
    if sig is not None:
        param = next((p for p in sig.params if p.name == name), None)
        if param is not None:
            default = "" if param.required else f" (default {param.default})"
            return f"`{name}` of `{func}`: {param.doc or param.kind}{default}"
    if catalog.is_transform(func):
        found = next((p for p in catalog.transform_params(func) if p[0] == name), None)
        if found is not None:
            return f"`{name}` of `optax.{func}`" + (f" (default {found[2]})" if found[1] else "")
    return f"`{func}` has no argument `{name}`"


# ---------------------------------------------------------------- go to definition


def definition(parsed: ParseResult, offset: int) -> n.Span | None:
    """Where the name at `offset` is defined: a `let`'s name, or a phase a params spec refers to."""
    file = parsed.file
    chain = node_chain(file, offset)
    node = chain[-1] if chain else None
    parent = chain[-2] if len(chain) > 1 else None
    if isinstance(node, n.PhaseRef):
        targets = _phases_referenced(file, node)
        if not targets:
            return None
        phase = targets[0].phase
        return phase.name.span if phase.name else _first_line(parsed.text, phase.span)
    if isinstance(node, n.Name) and not (isinstance(parent, n.Let) and parent.name is node):
        let = first_lets(file).get(node.id)
        return let.name.span if let else None
    return None


def _first_line(text: str, span: n.Span) -> n.Span:
    end = text.find("\n", span.start)
    end = span.end if end < 0 else min(end, span.end)
    return n.Span(span.line, span.column, span.line, span.column + (end - span.start), span.start, end)


# ---------------------------------------------------------------- outline


@dataclass(frozen=True)
class Symbol:
    """One entry of the document outline: `span` is the whole item, `selection` its name."""

    name: str
    kind: lsp.SymbolKind
    detail: str
    span: n.Span
    selection: n.Span
    children: tuple["Symbol", ...] = ()


def outline(parsed: ParseResult) -> list[Symbol]:
    """Directives, `let`s, phases (numbered as after `repeat` expansion), repeat and params blocks."""
    text = parsed.text
    indices: dict[int, list[int]] = {}
    for p in _expanded(parsed.file):
        indices.setdefault(id(p.phase), []).append(p.index)

    def symbol(item) -> Symbol:
        head = _first_line(text, item.span)
        if isinstance(item, n.Directive):
            return Symbol(item.keyword, lsp.SymbolKind.Property, _source(text, item.value), item.span, head)
        if isinstance(item, n.Let):
            return Symbol(item.name.id, lsp.SymbolKind.Constant, _source(text, item.value), item.span, item.name.span)
        if isinstance(item, n.Phase):
            numbers = ", ".join(map(str, indices.get(id(item), [])))
            label = f"phase {numbers}" + (f" {item.name.id}" if item.name else "")
            return Symbol(label, lsp.SymbolKind.Function, f"{_source(text, item.steps)} steps", item.span, item.name.span if item.name else head)
        if isinstance(item, n.Repeat):
            children = tuple(symbol(child) for child in item.items)
            return Symbol(f"repeat {_source(text, item.count)}", lsp.SymbolKind.Namespace, "", item.span, head, children)
        entries = tuple(
            Symbol(", ".join(p.text for p in e.patterns), lsp.SymbolKind.Field, text[e.specs[0].span.start : e.specs[-1].span.end], e.span, e.patterns[0].span)
            for e in item.entries
        )
        return Symbol("params", lsp.SymbolKind.Struct, "", item.span, head, entries)

    return [symbol(item) for item in parsed.file.items]


# ---------------------------------------------------------------- completion


@dataclass(frozen=True)
class Suggestion:
    label: str
    kind: lsp.CompletionItemKind
    detail: str | None = None
    documentation: str | None = None
    insert: str | None = None  # text to insert when it differs from the label


# What a partially typed word may contain (patterns included: `gp.ker`, `layers[0`).
_PARTIAL_CHARS = frozenset('abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.*[]{}"$')
# grammar terminal -> the keyword completion offers (units have one terminal for both spellings)
_TERMINAL_KEYWORDS = {k.upper(): k for k in KEYWORDS} | {"EPOCH_UNIT": "epochs", "STEP_UNIT": "steps"}


def _tokens_and_accepts(prefix: str):
    """Lark tokens of `prefix` and the terminals acceptable after it, or None when it does not parse.

    The prefix is parsed from the start of its last top-level item (then from
    earlier item starts), so errors earlier in the file do not matter.
    """
    lark = parser()
    starts = [m.start() for m in _ITEM_START.finditer(prefix)]
    for start in [*reversed(starts[-4:]), 0]:
        try:
            interactive = lark.parse_interactive(prefix[start:])
            tokens = list(interactive.iter_parse())
            return tokens, interactive.accepts()
        except LarkError:
            continue
    return None


def _enclosing_call(tokens) -> str | None:
    """The name of the call whose parentheses the cursor is inside."""
    depth = 0
    for i in range(len(tokens) - 1, -1, -1):
        kind = tokens[i].type
        if kind == "RPAR":
            depth += 1
        elif kind == "LPAR":
            if depth == 0:
                return str(tokens[i - 1]) if i > 0 and tokens[i - 1].type == "NAME" else None
            depth -= 1
    return None


def _keyword_suggestions(accepts) -> list[Suggestion]:
    words = sorted(_TERMINAL_KEYWORDS[t] for t in accepts if t in _TERMINAL_KEYWORDS)
    return [Suggestion(w, lsp.CompletionItemKind.Keyword, documentation=catalog.KEYWORD_DOCS.get(w)) for w in words]


def _schedule_suggestions(table: dict[str, catalog.CallSignature]) -> list[Suggestion]:
    return [Suggestion(name, lsp.CompletionItemKind.Function, sig.usage(), sig.doc) for name, sig in table.items()]


def _optimizer_suggestions() -> list[Suggestion]:
    """Optimizers, transformations (`contrib.*` dotted) and `chain`."""
    out = [Suggestion(name, lsp.CompletionItemKind.Class, optimizer_usage(name), f"optax.{name}") for name in list(OPTIMIZERS) + list(TRANSFORMS)]
    return out + [Suggestion(catalog.CHAIN, lsp.CompletionItemKind.Function, "chain(T1, T2, ...)", "optax.chain")]


def _argument_suggestions(func: str) -> list[Suggestion]:
    names = []
    if func == PLATEAU:  # `on`, then optax.contrib.reduce_on_plateau's arguments
        names, func = [(PLATEAU_ON, _PLATEAU_ON_DOC)], PLATEAU_TRANSFORM
    sig = catalog.SCHEDULES.get(func) or catalog.DISTRIBUTIONS.get(func)
    if sig is not None:
        names += [(p.name, p.doc or p.kind) for p in sig.params]
    elif catalog.is_transform(func):
        names += [(p, f"default {d}" if has else "required") for p, has, d, _ in catalog.transform_params(func)]
    else:
        return []
    return [Suggestion(f"{name}=", lsp.CompletionItemKind.Property, doc, None, f"{name}=") for name, doc in names]


def _pattern_suggestions(tree) -> list[Suggestion]:
    """Every parameter path, and `prefix.**` for each group of parameters."""
    out = [Suggestion(p.path, lsp.CompletionItemKind.Field, f"{p.dtype}{list(p.shape)}" if p.dtype else None) for p in tree.params]
    groups: dict[str, int] = {}
    for p in tree.params:
        parts = p.path.split(".")
        for i in range(1, len(parts)):
            prefix = ".".join(parts[:i])
            groups[prefix] = groups.get(prefix, 0) + 1
    out += [Suggestion(f"{g}.**", lsp.CompletionItemKind.Module, f"{count} parameters") for g, count in groups.items()]
    return out


def _in_comment_or_string(prefix: str) -> bool:
    """Whether the end of `prefix` is inside a comment or a string (nothing to complete there).

    Both end at the end of their line, so scanning the last line decides.
    """
    in_string, escaped = False, False
    for char in prefix[prefix.rfind("\n") + 1 :]:
        if in_string:
            in_string = escaped or char != '"'
            escaped = not escaped and char == "\\"
        elif char == '"':
            in_string = True
        elif char == "#":
            return True
    return in_string


def completions(text: str, offset: int, parsed: ParseResult, tree=None) -> tuple[int, list[Suggestion]]:
    """What may be typed at `offset`: (start offset of the word being replaced, suggestions)."""
    prefix = text[:offset]
    if _in_comment_or_string(prefix):
        return offset, []
    start = offset
    while start > 0 and prefix[start - 1] in _PARTIAL_CHARS:  # a backwards scan: linear on long words
        start -= 1
    found = _tokens_and_accepts(text[:start])
    if found is None:  # the prefix does not parse: offer the vocabulary
        return start, [Suggestion(k, lsp.CompletionItemKind.Keyword, documentation=catalog.KEYWORD_DOCS.get(k)) for k in KEYWORDS] + _schedule_suggestions(catalog.SCHEDULES)
    tokens, accepts = found
    last = [t.type for t in tokens[-2:]]
    out = _keyword_suggestions(accepts)
    if "PATTERN" in accepts and tree is not None:
        out += _pattern_suggestions(tree)
    if "NAME" not in accepts:
        return start, out
    previous = last[-1] if last else None
    if previous == "OPTIMIZER":
        out += _optimizer_suggestions()
    elif previous == "TILDE" or (previous == "INIT" and "LPAR" not in accepts):
        out += _schedule_suggestions(catalog.DISTRIBUTIONS)
    elif last == ["STOP", "WHEN"]:
        out += [Suggestion(m, lsp.CompletionItemKind.EnumMember, None, doc) for m, doc in catalog.STOP_METRICS.items()]
    elif "LPAR" in accepts:  # an expression
        out += [Suggestion(name, lsp.CompletionItemKind.Variable, _source(text, let)) for name, let in first_lets(parsed.file).items()]
        out += _schedule_suggestions(catalog.SCHEDULES)
        call = _enclosing_call(tokens)
        if call is not None and previous in ("LPAR", "COMMA"):
            out += _optimizer_suggestions() if call == catalog.CHAIN else _argument_suggestions(call)
    elif "INT" in accepts and previous in ("IN", "AFTER", "UNTIL", "AT", "COMMA"):  # a params phase reference
        names = dict.fromkeys(p.name for p in _expanded(parsed.file) if p.name)
        out += [Suggestion(name, lsp.CompletionItemKind.Reference, "phase") for name in names]
    return start, out


# ---------------------------------------------------------------- formatting


def format_edits(text: str, name: str = "<input>", encoding: str = lsp.PositionEncodingKind.Utf16) -> list[lsp.TextEdit] | None:
    """One edit replacing the whole document with its canonical layout; None when it does not parse."""
    from schedc.tooling.fmt import format_source

    try:
        formatted = format_source(text, name)
    except SchedError:
        return None
    if formatted == text:
        return []
    lines = _lines(text)
    end = lsp.Position(len(lines) - 1, _units(lines[-1], encoding))
    return [lsp.TextEdit(lsp.Range(lsp.Position(0, 0), end), formatted)]


# ---------------------------------------------------------------- the server


MODEL_CHECKS_OFF = (
    "Model checks are off: they import and run the Python file the `model` directive names, so the "
    "server does that only when the editor allows it (initialization option `modelChecks: true`; "
    "in VS Code: trust the workspace, setting `sched.modelChecks`). `schedc check --model` runs them too."
)


def model_checks_off(string: n.String, lines: list[str], encoding: str = lsp.PositionEncodingKind.Utf16) -> lsp.Diagnostic:
    """The one information diagnostic, on the `model` directive, of a file checked without its model."""
    return lsp.Diagnostic(client_range(lines, string.span, encoding), MODEL_CHECKS_OFF, severity=lsp.DiagnosticSeverity.Information, source="schedc")


def _uri_path(uri: str) -> Path | None:
    from pygls.uris import to_fs_path

    path = to_fs_path(uri)
    return Path(path) if path and uri.startswith("file:") else None


def build_server():
    """The pygls LanguageServer with every feature registered."""
    from pygls.lsp.server import LanguageServer

    server = LanguageServer("schedc", __version__)
    models = ModelCache()
    # One worker: models load (and user code runs) one at a time, off the event loop.
    worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="schedc-model")
    # Model-free checks run off the event loop too, so hover and shutdown never wait behind one.
    linter = ThreadPoolExecutor(max_workers=1, thread_name_prefix="schedc-check")
    # Loading a model runs the code the `model` directive names: only when the client allows it
    # (initialization option `modelChecks`, off by default; editors/vscode sets it in trusted workspaces).
    consent = {"model_checks": False}
    # The check in flight per document: a newer change cancels it (and its queued model job).
    pending: dict[str, asyncio.Task] = {}
    # uri -> (version, the driver's analysis of it): hover, completion, definition and outline read
    # its tree instead of parsing the text again
    analysed: dict[str, tuple[int, Analysis]] = {}

    def encoding() -> str:
        return server.workspace.position_encoding or lsp.PositionEncodingKind.Utf16

    def document(uri: str):
        doc = server.workspace.get_text_document(uri)
        path = _uri_path(uri)
        name = str(path) if path else uri
        return doc, name, (path.parent if path else Path.cwd())

    def current(uri: str):
        """(document, its folder, the parse of its current text): the linter's, when it has analysed
        this version; else the driver's first stage (`pipeline.read`) on it now."""
        doc, name, base_dir = document(uri)
        found = analysed.get(uri)
        if found is not None and found[0] == doc.version:
            return doc, base_dir, found[1].parsed
        return doc, base_dir, read(doc.source, name).parsed

    def publish(uri: str, version, text: str, diagnostics: list[Diagnostic], extra: list[lsp.Diagnostic] = ()) -> None:
        lines = _lines(text)
        server.text_document_publish_diagnostics(
            lsp.PublishDiagnosticsParams(uri, [to_lsp_diagnostic(d, lines, uri, encoding()) for d in diagnostics] + list(extra), version)
        )

    @server.feature(lsp.INITIALIZE)
    def on_initialize(ls, params: lsp.InitializeParams):
        options = params.initialization_options
        consent["model_checks"] = isinstance(options, dict) and options.get("modelChecks") is True

    @server.feature(lsp.SHUTDOWN)
    def on_shutdown(ls, *args):
        # answered at once: queued checks are dropped; a model still loading finishes in its thread
        linter.shutdown(wait=False, cancel_futures=True)
        worker.shutdown(wait=False, cancel_futures=True)

    async def refresh(uri: str) -> None:
        doc, name, base_dir = document(uri)
        version, text = doc.version, doc.source
        loop = asyncio.get_running_loop()
        try:
            analysis = await loop.run_in_executor(linter, functools.partial(analyse, text, name, lint=True))
        except Exception as exc:  # a checker bug: say so in the client's log, keep serving
            server.window_log_message(lsp.LogMessageParams(lsp.MessageType.Error, f"schedc: check failed: {exc!r}"))
            return
        if server.workspace.get_text_document(uri).version != version:
            return  # a newer edit has its own check
        analysed[uri] = (version, analysis)
        string = model_reference(analysis.parsed.file)
        if string is not None and not consent["model_checks"]:
            publish(uri, version, text, analysis.diagnostics, extra=[model_checks_off(string, _lines(text), encoding())])
            return
        if string is None or not models.cached(string.value, base_dir):
            publish(uri, version, text, analysis.diagnostics)  # now; the model's findings follow when it has loaded
        if string is None:
            return
        with_model = functools.partial(analysis.with_model, FROM_DIRECTIVE, base_dir=base_dir, lint=True, bind=models.bind)
        try:
            analysis = await asyncio.get_running_loop().run_in_executor(worker, with_model)
        except Exception as exc:  # a bug in a model check must not take the server down
            server.window_log_message(lsp.LogMessageParams(lsp.MessageType.Error, f"schedc: model check failed: {exc!r}"))
        if server.workspace.get_text_document(uri).version == version:
            publish(uri, version, text, analysis.diagnostics)

    def schedule(uri: str) -> None:
        previous = pending.pop(uri, None)
        if previous is not None:
            previous.cancel()
        pending[uri] = asyncio.ensure_future(refresh(uri))

    @server.feature(lsp.TEXT_DOCUMENT_DID_OPEN)
    def did_open(ls, params: lsp.DidOpenTextDocumentParams):
        schedule(params.text_document.uri)

    @server.feature(lsp.TEXT_DOCUMENT_DID_CHANGE)
    def did_change(ls, params: lsp.DidChangeTextDocumentParams):
        schedule(params.text_document.uri)

    @server.feature(lsp.TEXT_DOCUMENT_DID_SAVE)
    def did_save(ls, params: lsp.DidSaveTextDocumentParams):
        schedule(params.text_document.uri)

    @server.feature(lsp.TEXT_DOCUMENT_DID_CLOSE)
    def did_close(ls, params: lsp.DidCloseTextDocumentParams):
        task = pending.pop(params.text_document.uri, None)
        analysed.pop(params.text_document.uri, None)
        if task is not None:
            task.cancel()
        ls.text_document_publish_diagnostics(lsp.PublishDiagnosticsParams(params.text_document.uri, []))

    @server.feature(lsp.WORKSPACE_DID_CHANGE_WATCHED_FILES)
    def did_change_watched_files(ls, params: lsp.DidChangeWatchedFilesParams):
        # a model file may have changed: the cache notices by mtime, each open document re-checks
        for uri in list(ls.workspace.text_documents):
            schedule(uri)

    async def model_tree(parsed: ParseResult, base_dir: Path):
        if model_reference(parsed.file) is None:
            return None, None
        if not consent["model_checks"]:
            return None, MODEL_CHECKS_OFF
        tree, failure = await asyncio.get_running_loop().run_in_executor(worker, models.tree, parsed, base_dir)
        return tree, (f"The model could not be loaded: {failure.notes[0] if failure.notes else failure.message}." if failure else None)

    @server.feature(lsp.TEXT_DOCUMENT_HOVER)
    async def on_hover(ls, params: lsp.HoverParams):
        doc, base_dir, parsed = current(params.text_document.uri)
        offset = offset_at(doc.source, params.position, encoding())
        tree, problem = await model_tree(parsed, base_dir) if _pattern_at(parsed, offset) else (None, None)
        found = hover(parsed, offset, tree, problem)
        if found is None:
            return None
        markdown, span = found
        rng = client_range(_lines(doc.source), span, encoding()) if span else None
        return lsp.Hover(lsp.MarkupContent(lsp.MarkupKind.Markdown, markdown), rng)

    @server.feature(lsp.TEXT_DOCUMENT_COMPLETION, lsp.CompletionOptions(trigger_characters=["."]))
    async def on_completion(ls, params: lsp.CompletionParams):
        doc, base_dir, parsed = current(params.text_document.uri)
        text = doc.source
        offset = offset_at(text, params.position, encoding())
        tree, _ = await model_tree(parsed, base_dir)
        start, suggestions = completions(text, offset, parsed, tree)
        lines = _lines(text)
        before = text[:start]
        line = before.count("\n") + 1
        rng = lsp.Range(client_position(lines, line, start - (before.rfind("\n") + 1) + 1, encoding()), params.position)
        items = [
            lsp.CompletionItem(
                label=s.label,
                kind=s.kind,
                detail=s.detail,
                documentation=lsp.MarkupContent(lsp.MarkupKind.Markdown, s.documentation) if s.documentation else None,
                text_edit=lsp.TextEdit(rng, s.insert or s.label),
                sort_text=f"{i:04d}",
            )
            for i, s in enumerate(suggestions)
        ]
        return lsp.CompletionList(is_incomplete=False, items=items)

    @server.feature(lsp.TEXT_DOCUMENT_DEFINITION)
    def on_definition(ls, params: lsp.DefinitionParams):
        doc, _, parsed = current(params.text_document.uri)
        span = definition(parsed, offset_at(doc.source, params.position, encoding()))
        if span is None:
            return None
        return lsp.Location(params.text_document.uri, client_range(_lines(doc.source), span, encoding()))

    @server.feature(lsp.TEXT_DOCUMENT_DOCUMENT_SYMBOL)
    def on_document_symbol(ls, params: lsp.DocumentSymbolParams):
        doc, _, parsed = current(params.text_document.uri)
        lines = _lines(doc.source)

        def convert(symbol: Symbol) -> lsp.DocumentSymbol:
            return lsp.DocumentSymbol(
                name=symbol.name,
                kind=symbol.kind,
                detail=symbol.detail or None,
                range=client_range(lines, symbol.span, encoding()),
                selection_range=client_range(lines, symbol.selection, encoding()),
                children=[convert(c) for c in symbol.children] or None,
            )

        return [convert(symbol) for symbol in outline(parsed)]

    @server.feature(lsp.TEXT_DOCUMENT_CODE_ACTION, lsp.CodeActionOptions(code_action_kinds=[lsp.CodeActionKind.QuickFix]))
    def on_code_action(ls, params: lsp.CodeActionParams):
        return quick_fixes(params.text_document.uri, params.context.diagnostics) or None

    @server.feature(lsp.TEXT_DOCUMENT_FORMATTING)
    def on_formatting(ls, params: lsp.DocumentFormattingParams):
        doc, name, _ = document(params.text_document.uri)
        return format_edits(doc.source, name, encoding())

    server.schedc_workers = (linter, worker)  # for shutdown
    settle_heap()  # (pygls, lsprotocol and the checks' modules: imported by now)
    return server


def _pattern_at(parsed: ParseResult, offset: int) -> bool:
    chain = node_chain(parsed.file, offset)
    return bool(chain) and isinstance(chain[-1], n.Pattern)


def serve() -> int:
    """Run the server on stdin/stdout until the client exits.

    The LSP stream keeps the real stdout; everything else that writes to it
    (a model factory's print, a C library) goes to stderr instead, so user code
    cannot corrupt the protocol.
    """
    import os

    server = build_server()
    sys.stdout.flush()
    protocol_out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    try:
        server.start_io(sys.stdin.buffer, protocol_out)
    finally:
        for pool in server.schedc_workers:
            pool.shutdown(wait=False, cancel_futures=True)
    return 0
