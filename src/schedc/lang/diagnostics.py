"""Diagnostics as values, the registry of their codes, and their renderers.

Every problem schedc finds is a `Diagnostic`: a code from `CODES`, a severity,
a one-line lower-case message, a primary span, optional secondary labels,
notes and a suggestion. Checks return lists of them and never raise; the CLI,
the language server and `SchedError` render the same objects.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from schedc.lang.record import Record, field, record, replace
from schedc.lang.span import NO_SPAN, Span

ERROR = "error"
WARNING = "warning"


@record
class Code(Record):
    code: str
    severity: str
    summary: str
    example: str
    owner: str  # the one module that emits it (tests/test_diagnostic_owners.py)


def _codes(*rows: tuple[str, str, str, str]) -> dict[str, Code]:
    return {code: Code(code, WARNING if code.startswith("W") else ERROR, summary, example, owner) for code, summary, example, owner in rows}


# The example of each code is a file that produces it; docs/diagnostics.md is
# generated from this table and a test checks every example still does. The owner
# is the one pass that emits the code: another module that finds the same kind of
# problem asks the owner for the diagnostic (docs/architecture.md, "Diagnostics").
CODES: dict[str, Code] = _codes(
    # input and syntax
    ("E0001", "unexpected token", "phase 100 lr < free a >", "schedc.lang.syntax"),
    ("E0002", "unexpected character", "phase 100 lr 0.1 < free a @ >", "schedc.lang.syntax"),
    ("E0003", "unexpected end of file", "phase 100 lr 0.1 < free a", "schedc.lang.syntax"),
    ("E0004", "input is not UTF-8 text", "\udcff\udcfe binary", "schedc.lang.text"),
    ("E0005", "input nested or sized beyond the parser's limits", "let x = " + "-" * 300 + "1", "schedc.lang.syntax"),
    ("E0006", "malformed parameter pattern", "phase 10 lr 0.1 < free gp** >", "schedc.check.patterns"),
    # names
    ("E0101", "undefined name", "phase 100 lr base < free a >", "schedc.check.names"),
    ("E0102", "duplicate `let` name", "let a = 1\nlet a = 2\nphase 10 lr a < free x >", "schedc.check.names"),
    ("E0103", "duplicate phase name", "phase warm 10 lr 0.1 < free a >\nphase warm 10 lr 0.1 < free a >", "schedc.check.conflicts"),
    ("E0104", "unknown schedule or function", "phase 100 lr cosin(0.1 -> 0) < free a >", "schedc.check.arguments"),
    ("E0105", "unknown optimizer or transformation", "phase 100 lr 0.1 optimizer adamm < free a >", "schedc.check.arguments"),
    ("E0106", "unknown keyword argument", "phase 100 lr 0.1 optimizer adamw(weight_decy=1e-4) < free a >", "schedc.check.arguments"),
    ("E0107", "unknown distribution", "phase 100 lr 0.1 < init a ~ gaussian(0, 1) >", "schedc.check.arguments"),
    ("E0108", "unknown stop metric", "phase 100 lr 0.1 < free a; stop when los < 1e-3 >", "schedc.check.phases"),
    ("E0109", "phase reference out of range or unknown", "phase 100 lr 0.1 <>\nparams < a: free in 3 >", "schedc.check.conflicts"),
    ("E0110", "unbound placeholder", "phase 100 lr $rate < free a >", "schedc.check.names"),
    ("E0111", "unknown directive value", "default frozen\nphase 10 lr 0.1 < free a >", "schedc.check.directives"),
    ("E0112", "evaluation metric without an `eval` directive", "phase 100 lr 0.1 < free a; stop when val.loss < 0.1 >", "schedc.check.data"),
    ("E0113", "not an evaluation metric", 'eval "m.py:metrics" every epoch\nbatch 8\nphase 3 epochs lr 0.1 < free a; keep best accuracy >', "schedc.check.data"),
    ("E0114", "unknown word in a stop rule or `keep`", 'eval "m.py:metrics" every epoch\nbatch 8\nphase 3 epochs lr 0.1 < free a; keep bestest val.loss >', "schedc.check.data"),
    # values and types
    ("E0201", "wrong number of arguments", "phase 100 lr linear(0.1) < free a >", "schedc.check.arguments"),
    ("E0202", "argument of the wrong type", "phase 100 lr cosine(\"a\" -> 0) < free a >", "schedc.check.arguments"),
    ("E0203", "steps must be a positive integer", "phase 0 lr 0.1 < free a >", "schedc.check.phases"),
    ("E0204", "negative learning rate", "phase 100 lr -0.1 < free a >", "schedc.check.arguments"),
    ("E0205", "non-positive standard deviation", "phase 100 lr 0.1 < init a ~ normal(0, 0) >", "schedc.check.arguments"),
    ("E0206", "empty uniform range", "phase 100 lr 0.1 < init a ~ uniform(1, 0) >", "schedc.check.arguments"),
    ("E0207", "warmup not shorter than its span", "phase 100 lr warmup_cosine(0 -> 1 -> 0, 100) < free a >", "schedc.check.arguments"),
    ("E0208", "boundaries not increasing", "phase 100 lr piecewise(0.1, {50: 0.5, 20: 0.1}) < free a >", "schedc.check.arguments"),
    ("E0209", "percentage out of range", "phase 100 lr warmup_constant(0 -> 1, 150%) < free a >", "schedc.check.arguments"),
    ("E0210", "non-finite or out-of-range number", "phase 100 lr 1e999 < free a >", "schedc.check.arguments"),
    ("E0211", "repeat count must be a positive integer", "repeat 0 < phase 10 lr 0.1 < free a > >", "schedc.check.phases"),
    ("E0212", "duration longer than its span", "phase 100 lr 0.1 for 200 then 0.01 < free a >", "schedc.check.arguments"),
    ("E0213", "value out of its allowed range", "phase 100 lr exponential(0.1, -0.5, 10) < free a >", "schedc.check.arguments"),
    ("E0214", "argument given twice", "phase 100 lr 0.1 optimizer adam(b1=0.9, b1=0.8) < free a >", "schedc.check.arguments"),
    ("E0215", "missing learning rate", "optimizer sgd\nphase 100 < free a >", "schedc.check.phases"),
    ("E0216", "duplicate directive", "seed 1\nseed 2\nphase 10 lr 0.1 < free a >", "schedc.check.directives"),
    ("E0217", "batch size must be a positive integer", "batch 0\nphase 10 lr 0.1 < free a >", "schedc.check.data"),
    ("E0218", "a count of epochs must be positive", "batch 8\nphase 0 epochs lr 0.1 < free a >", "schedc.check.data"),
    ("E0219", "evaluation interval must be a positive integer", 'eval "m.py:metrics" every 0 steps\nphase 10 lr 0.1 < free a >', "schedc.check.data"),
    ("E0220", "`over`/`after` in a rule they do not apply to", 'eval "m.py:metrics" every 10 steps\nphase 100 lr 0.1 < free a; stop when val.loss < 0.1 after 50 >', "schedc.check.data"),
    ("E0221", "optimizer decay rate out of range", "phase 100 lr 0.1 optimizer adam(b1=1.5) < free a >", "schedc.check.arguments"),
    ("E0222", "rules on evaluation metrics in a phase shorter than the evaluation interval", 'eval "m.py:metrics" every 50 steps\nphase 30 lr 0.1 < free a; keep best val.loss >', "schedc.check.data"),
    # conflicts, model-free
    ("E0301", "contradictory specs", "phase 100 lr 0.1 <>\nparams < a: free in 0 | fixed in 0 >", "schedc.check.conflicts"),
    ("E0302", "two inits of one parameter in one phase", "phase 100 lr 0.1 < init a = 1; init a = 2 >", "schedc.check.conflicts"),
    ("E0303", "two stop rules of one kind in one phase", "phase 100 lr 0.1 < free a; stop when loss < 1; stop when loss < 2 >", "schedc.check.conflicts"),
    # model binding
    ("E0401", "pattern matches no parameter", "model \"m.py:build\"\nphase 10 lr 0.1 < free gp.kernal.* >", "schedc.plan.resolve"),
    ("E0402", "pattern matches only shared copies", "model \"m.py:build\"\nphase 10 lr 0.1 < free line_b.width >", "schedc.plan.resolve"),
    ("E0403", "init of a shared copy", "model \"m.py:build\"\nphase 10 lr 0.1 < init line_b.width = 1 >", "schedc.plan.resolve"),
    ("E0404", "conflicting params specs", "model \"m.py:build\"\nphase 10 lr 0.1 <>\nparams < a: free in 0; *: fixed in 0 >", "schedc.plan.resolve"),
    ("E0405", "phase body and params block disagree", "model \"m.py:build\"\nphase 10 lr 0.1 < fix * >\nparams < a: free in 0 >", "schedc.plan.resolve"),
    ("E0406", "model could not be loaded", "model \"missing.py:build\"\nphase 10 lr 0.1 < free a >", "schedc.plan.binding"),
    ("E0407", "init value does not fit the parameter", "model \"m.py:build\"\nphase 10 lr 0.1 < init a = [1, 2, 3] >", "schedc.plan.resolve"),
    ("E0408", "epochs with a data function returning an iterable without a length", 'model "m.py:build"\ndata "m.py:stream"\nphase 2 epochs lr 0.1 < free a >', "schedc.plan.binding"),
    # the Python API: found in a call's arguments, so the example is Python (schedc.build_schedule)
    ("E0501", "random init without a PRNG key", 'build_schedule(model, loss, [(100, 0.1)], {"a": free_in(0) | init_normal(0, 0.0, 0.1)})', "schedc.surface.builder"),
    # a sweep's settings: found in `--sweep` arguments or `Program.sweep` keywords, so the example is a command line, then the file
    ("E0701", "swept name is neither a `$placeholder` nor a `let`", "schedc run --sweep rate=0.01,0.1\nlet base = 0.1\nphase 10 lr base < free a >", "schedc.surface.sweep"),
    ("E0702", "sweep value lists of different lengths", "schedc run --sweep base=0.01,0.1 --sweep wd=0,1e-4,1e-3\nlet base = 0.1\nlet wd = 0\nphase 10 lr base optimizer adamw(weight_decay=wd) < free a >", "schedc.surface.sweep"),
    ("E0703", "sweep value that is not a number", "schedc run --sweep base=0.01,fast\nlet base = 0.1\nphase 10 lr base < free a >", "schedc.surface.sweep"),
    # warnings
    ("W0101", "unused `let`", "let unused = 1\nphase 10 lr 0.1 < free a >", "schedc.check.names"),
    ("W0102", "statement fully overridden", "phase 10 lr 0.1 < free a; fix a >", "schedc.check.conflicts"),
    ("W0103", "parameter never free", "model \"m.py:build\"\nphase 10 lr 0.1 < free a >", "schedc.plan.resolve"),
    ("W0104", "phase frees nothing", "phase 10 lr 0.1 < fix a >", "schedc.check.conflicts"),
    ("W0105", "init of a parameter that stays fixed", "model \"m.py:build\"\nphase 10 lr 0.1 < init b = 1; free a >", "schedc.plan.resolve"),
    ("W0106", "epochs without a batch size", "phase 3 epochs lr 0.1 < free a >", "schedc.check.data"),
    ("W0107", "plateau on a metric whose name reads as higher-is-better", 'eval "m.py:metrics" every 100 steps\nphase 1000 lr 1e-3 * plateau(on=val.accuracy) < free a >', "schedc.check.data"),
    ("W0108", "the schedule has no phases", 'model "m.py:build"\nseed 0', "schedc.check.phases"),
    # internal errors: a bug in schedc, not in the input, so no input example produces them
    ("E0901", "internal error: the formatter's output would change the program", "", "schedc.tooling.fmt"),
)
# Codes that no input can produce (tests of the `example` column skip them).
INTERNAL_CODES = frozenset({"E0901"})
# Codes only the Python API produces: their example is a Python call, not a file.
PYTHON_CODES = frozenset({"E0501"})
# Codes of a sweep's values: their example is a `schedc run` command line (its `--sweep` arguments), then the file.
SWEEP_CODES = frozenset({"E0701", "E0702", "E0703"})


@record
class Label(Record):
    """A secondary span with a short message (`--- freed here`)."""

    span: Span
    message: str
    file: str | None = None


@record
class Diagnostic(Record):
    """One problem found: a record (schedc.lang.record), not a frozen dataclass, whose methods the
    standard library would compile at every start (~6 M instructions, 1.5% of a fresh check)."""

    code: str
    message: str
    span: Span = NO_SPAN
    severity: str = ""
    notes: tuple[str, ...] = ()
    help: str | None = None
    labels: tuple[Label, ...] = ()
    label: str | None = None  # short text under the primary caret
    file: str | None = None

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if not self.severity:  # the code's, from the registry
            self.__dict__["severity"] = CODES[self.code].severity

    @property
    def is_error(self) -> bool:
        return self.severity == ERROR

    @property
    def fix(self) -> str | None:
        """The text to put in place of the primary span, when the help proposes exactly one
        ("did you mean `adam`?", written by `proposing`): what the language
        server's quick fix writes, and `fix` in `schedc check --format json`. None for a help of
        several choices or of advice. Only single-line spans: a misspelt word, name or pattern is
        one token. (A nearest spelling is a guess: offered, never written by `schedc check`.)"""
        if self.help is None or self.span.end_line != self.span.line:
            return None
        choice = self.help[len(_PROPOSAL) + 1 : -2]
        return choice if "`" not in choice and self.help == proposing([choice]) else None

    def in_file(self, file: str | None) -> "Diagnostic":
        return replace(self, file=self.file or file, labels=tuple(replace(l, file=l.file or file) for l in self.labels))


_PROPOSAL = "did you mean "


def proposing(choices: Sequence[str]) -> str:
    """The help that proposes `choices` in place of the primary span: "did you mean `adam`?", or
    "`a` or `b`". The one writer of that form, so `Diagnostic.fix` can read a single choice back."""
    return _PROPOSAL + " or ".join(f"`{c}`" for c in choices) + "?"


def did_you_mean(word: str, candidates: Iterable[str], n: int = 1) -> str | None:
    """`help: did you mean ...` text for the closest candidates, or None. A candidate that differs
    only in case comes first (`adamW` -> `adamw`, not the shorter `adam`)."""
    candidates = list(candidates)
    same = [c for c in candidates if c.lower() == word.lower() and c != word]
    import difflib  # here: a run without a misspelling never needs it

    matches = list(dict.fromkeys(same + difflib.get_close_matches(word, candidates, n=n, cutoff=0.6)))[:n]
    if not matches:
        return None
    return proposing(matches)


def sort_key(d: Diagnostic):
    return (d.file or "", d.span.line, d.span.column, d.code)


def has_errors(diagnostics: Iterable[Diagnostic], strict: bool = False) -> bool:
    return any(d.is_error or strict for d in diagnostics)


# ---------------------------------------------------------------- renderers


@record
class Source(Record):
    """The text of one input, for snippets. `line_offset`/`column_offset` map
    positions of a DSL string embedded in a Python file onto that file."""

    name: str
    text: str
    line_offset: int = 0
    column_offset: int = 0  # added on the DSL's first line only
    # (line, column) -> (line, column) in the file, for text that is not a verbatim copy (a string literal with escapes)
    locate: object = field(default=None, repr=False, compare=False)

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.__dict__["lines"] = self.text.splitlines()  # (not a field: made from `text`)

    def line(self, n: int) -> str:
        return self.lines[n - 1] if 0 < n <= len(self.lines) else ""

    def position(self, line: int, column: int) -> tuple[int, int]:
        """Where (line, column) of the DSL text lies in the file it came from."""
        if self.locate is not None:
            return self.locate(line, column)
        return line + self.line_offset, column + (self.column_offset if line == 1 else 0)


def _position(d: Diagnostic, sources: dict[str, Source]) -> tuple[str, int, int, int, int]:
    src = sources.get(d.file or "")
    s = d.span
    if src is None:
        return d.file or "<input>", s.line, s.column, s.end_line, s.end_column
    line, col = src.position(s.line, s.column)
    end_line, end_col = src.position(s.end_line, s.end_column)
    return src.name, line, col, end_line, end_col


def render_concise(diagnostics: Sequence[Diagnostic], sources: dict[str, Source] | None = None) -> str:
    """One GNU-style line each: `file:line:col: severity[CODE]: message`."""
    sources = sources or {}
    out = []
    for d in diagnostics:
        name, line, col, _, _ = _position(d, sources)
        out.append(f"{name}:{line}:{col}: {d.severity}[{d.code}]: {d.message}")
    return "\n".join(out)


def render_github(diagnostics: Sequence[Diagnostic], sources: dict[str, Source] | None = None) -> str:
    """GitHub Actions workflow commands: annotations on the pull request diff."""
    sources = sources or {}
    out = []
    for d in diagnostics:
        name, line, col, end_line, end_col = _position(d, sources)
        kind = "error" if d.is_error else "warning"
        message = _escape_data(d.message + (f" ({d.help})" if d.help else ""))
        out.append(f"::{kind} file={_escape_property(name)},line={line},col={col},endLine={end_line},endColumn={end_col},title={_escape_property(d.code)}::{message}")
    return "\n".join(out)


def _escape_data(text: str) -> str:
    """A workflow command's message, escaped as the Actions runner unescapes it: a newline in a
    message or file name must not end the command and start another."""
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(text: str) -> str:
    """A workflow command's property value (`file=...`): `:` and `,` delimit properties too."""
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")


def to_json(d: Diagnostic, sources: dict[str, Source] | None = None) -> dict:
    sources = sources or {}
    name, line, col, end_line, end_col = _position(d, sources)
    labels = []
    for label in d.labels:
        lname, l_line, l_col, l_end_line, l_end_col = _position(Diagnostic(d.code, "", label.span, file=label.file or d.file), sources)
        labels.append({"file": lname, "message": label.message, "line": l_line, "column": l_col, "end_line": l_end_line, "end_column": l_end_col})
    return {
        "file": name,
        "severity": d.severity,
        "code": d.code,
        "message": d.message,
        "line": line,
        "column": col,
        "end_line": end_line,
        "end_column": end_col,
        "notes": list(d.notes),
        "help": d.help,
        "fix": d.fix,
        "labels": labels,
    }


def render_json(diagnostics: Sequence[Diagnostic], sources: dict[str, Source] | None = None) -> str:
    import json  # (here: a check that finds nothing renders nothing)

    return json.dumps([to_json(d, sources) for d in diagnostics], indent=2)


def _underline(src: Source | None, span: Span, line_no: int, char: str) -> tuple[str, int]:
    """The gutter-free text of the line and the caret string under the span's part on that line."""
    text = src.line(line_no) if src else ""
    start = span.column if line_no == span.line else 1
    end = span.end_column if line_no == span.end_line else len(text) + 1
    width = max(1, end - start)
    prefix = text[: start - 1].expandtabs(4)
    return " " * len(prefix) + char * width, len(prefix)


def render_text(diagnostics: Sequence[Diagnostic], sources: dict[str, Source] | None = None, color: bool = False) -> str:
    """Full form: header, `-->` location, the source line, carets, labels, notes and help."""
    sources = sources or {}
    red, yellow, blue, bold, reset = ("\x1b[31m", "\x1b[33m", "\x1b[34m", "\x1b[1m", "\x1b[0m") if color else ("",) * 5
    blocks = []
    for d in diagnostics:
        src = sources.get(d.file or "")
        name, line, col, _, _ = _position(d, sources)
        tone = red if d.is_error else yellow
        out = [f"{bold}{name}:{line}:{col}: {tone}{d.severity}[{d.code}]{reset}{bold}: {d.message}{reset}"]
        marks = [(d.span, "^", d.label or "", d.file)] + [(l.span, "-", l.message, l.file or d.file) for l in d.labels]
        shown = [(span, char, text) for span, char, text, f in marks if src and f == d.file and span.line >= 1]
        if src and shown:
            gutter = len(str(max(src.position(s.line, 1)[0] for s, _, _ in shown)))
            out.append(f"{blue}{' ' * gutter} |{reset}")
            for line_no in sorted({s.line for s, _, _ in shown}):
                shown_line = src.position(line_no, 1)[0]
                out.append(f"{blue}{shown_line:>{gutter}} |{reset} {src.line(line_no).expandtabs(4)}")
                for span, char, text in sorted((m for m in shown if m[0].line == line_no), key=lambda m: m[0].column):
                    carets, _ = _underline(src, span, line_no, char)
                    colour = tone if char == "^" else blue
                    out.append(f"{blue}{' ' * gutter} |{reset} {colour}{carets}{(' ' + text) if text else ''}{reset}")
            out.append(f"{blue}{' ' * gutter} |{reset}")
        for label in d.labels:
            if label.file not in (None, d.file):
                lname, l_line, l_col, _, _ = _position(Diagnostic(d.code, "", label.span, file=label.file), sources)
                out.append(f"  = note: {label.message} at {lname}:{l_line}:{l_col}")
        for note in d.notes:
            out.append(f"  = note: {note}")
        if d.help:
            out.append(f"  = help: {d.help}")
        blocks.append("\n".join(out))
    return "\n\n".join(blocks)


RENDERERS = {"text": render_text, "concise": render_concise, "json": render_json, "github": render_github}


class SchedWarning(UserWarning):
    """What `schedc.compile` warns for each warning a schedule has (a parameter never free, a `let`
    never used), as `schedc check --format concise` prints it, with its help; `Program.warnings`
    keeps them as `Diagnostic`s. Silence them with
    `warnings.filterwarnings("ignore", category=schedc.SchedWarning)`."""

    diagnostic: Diagnostic | None = None

    @classmethod
    def of(cls, diagnostic: Diagnostic, sources: dict[str, Source] | None = None) -> "SchedWarning":
        """(Made from its message alone, as pickling and pytest-xdist remake warnings; `.diagnostic` added.)"""
        warning = cls(render_concise([diagnostic], sources) + (f" (help: {diagnostic.help})" if diagnostic.help else ""))
        warning.diagnostic = diagnostic
        return warning


class SchedError(ValueError):
    """Raised by the Python API when a schedule has errors; holds every diagnostic.

    A `ValueError`, as spectracles raises for the same mistakes, so `except ValueError` keeps working.

    `str()` renders them exactly as `schedc check` prints them.
    """

    def __init__(self, diagnostics: Sequence[Diagnostic], sources: dict[str, Source] | None = None):
        self.diagnostics = list(diagnostics)
        self.sources = dict(sources or {})
        super().__init__(self.render())

    def render(self, fmt: str = "text") -> str:
        return RENDERERS[fmt](self.diagnostics, self.sources)

    def __str__(self) -> str:
        return self.render()
