"""Pygments lexer for `.sched` files (registered as the `sched` lexer plugin).

Installed with the package through the `pygments.lexers` entry point, so
`pygmentize -l sched`, Sphinx's `.. code-block:: sched` and MkDocs'
```` ```sched ```` find it without configuration.

It is a highlighter, not a parser, but it follows the grammar's contexts where
they change what a word is: after `free`/`fix`/`init` come parameter patterns
(so `free model.lr` is a pattern, not two keywords), a `params` block holds
`pattern: spec | spec` entries, `let`, `phase` and `optimizer` name things,
and `stop when` (or a plateau's `on=`) names a metric. Keyword names come from `schedc.lang.syntax`, call
names from `schedc.check.catalog`: one source for each.
"""

from __future__ import annotations

import re

from pygments.lexer import RegexLexer, bygroups, default, include, words
from pygments.token import (
    Comment,
    Keyword,
    Name,
    Number,
    Operator,
    Punctuation,
    String,
    Whitespace,
)

from schedc.check.catalog import DISTRIBUTIONS, SCHEDULES
from schedc.lang.syntax import KEYWORDS

_NAME = r"[^\W\d]\w*"  # Python identifiers: `σ`, `vσ_raw`
_DIGITS = r"[0-9](?:_?[0-9])*"
_DECIMAL = rf"(?:{_DIGITS}(?:\.(?:{_DIGITS})?)?|\.{_DIGITS})"

# The grammar's PATTERN terminal, written in pieces (it is one token: no spaces inside).
_COMPONENT = r"(?:[\w*]|\{[\w*,]*\})"
_FIRST = r"(?:[^\W\d]|\*|\{[\w*,]*\})"
_INDEX = r'\[(?:[0-9]+|\*|"(?:[^"\\\n]|\\.)*")\]'
_STEP = rf"(?:\.{_FIRST}{_COMPONENT}*|{_INDEX})"
_PATTERN = rf"(?:{_FIRST}{_COMPONENT}*|{_INDEX}){_STEP}*"

# Inside a pattern: what each character run is.
_PATTERN_PARTS = re.compile(r'(?P<wild>\*+)|(?P<name>[^\W\d]\w*)|(?P<index>[0-9]+)|(?P<key>"(?:[^"\\\n]|\\.)*")|(?P<punct>.)')
_PART_TOKENS = {"wild": Operator, "name": Name.Variable, "index": Number.Integer, "key": String.Double, "punct": Punctuation}

_DECLARATIONS = ("let", "phase", "repeat", "params")
_NAMESPACES = ("model", "loss", "data", "validation", "eval")
_CONSTANTS = ("true", "false")
# `3 epochs`, `every 200 steps`, `for 5 evals`: units are keywords after a count (elsewhere they may be names).
_UNITS = ("epoch", "epochs", "steps", "evals")
_PLAIN_KEYWORDS = tuple(k for k in KEYWORDS if k not in _DECLARATIONS + _NAMESPACES + _CONSTANTS + _UNITS + tuple(SCHEDULES))
# Keywords that are also schedule names (`eval ... every epoch`, the schedule `every(...)`): keywords unless called.
_CALLABLE_KEYWORDS = tuple(k for k in KEYWORDS if k in SCHEDULES)
# `loss`, `val.accuracy`: the parts of a dotted metric are tokens of their own, as Lark reads them
_METRIC = rf"({_NAME})(?:(\.)({_NAME}))?\b"
_METRIC_TOKENS = (Name.Builtin, Punctuation, Name.Builtin)


def _pattern_tokens(lexer, match):
    """Split one parameter pattern into its names, wildcards, indices and punctuation."""
    base = match.start()
    for part in _PATTERN_PARTS.finditer(match.group()):
        yield base + part.start(), _PART_TOKENS[part.lastgroup], part.group()


class SchedLexer(RegexLexer):
    """Lexer for schedc `.sched` schedule files."""

    name = "Sched"
    aliases = ["sched", "schedc"]
    filenames = ["*.sched"]
    mimetypes = ["text/x-sched"]
    url = "https://github.com/schedc/schedc"
    version_added = ""

    tokens = {
        "space": [
            (r"\s+", Whitespace),
            (r"#[^\n]*", Comment.Single),
        ],
        "expr": [
            # `plateau(on=val.loss)`: the metric a plateau follows
            (rf"(on)(\s*)(=)(\s*){_METRIC}", bygroups(Name.Attribute, Whitespace, Operator, Whitespace, *_METRIC_TOKENS)),
            # `name = value` inside a call: a keyword argument (even `at=` in step(...)).
            (rf"({_NAME})(\s*)(=)(?!=)", bygroups(Name.Attribute, Whitespace, Operator)),
            # Keywords before calls: `then (cosine(...))` is the keyword `then`.
            (words(_CONSTANTS, suffix=r"\b"), Keyword.Constant),
            (words(_DECLARATIONS, suffix=r"\b"), Keyword.Declaration),
            (words(_NAMESPACES, suffix=r"\b"), Keyword.Namespace),
            (words(_PLAIN_KEYWORDS, suffix=r"\b"), Keyword),
            # (before `every` alone: an evaluation's `every epoch`, `every step`, whose count is one)
            (r"(every)(\s+)(epochs?|steps?)\b", bygroups(Keyword, Whitespace, Keyword)),
            (words(_CALLABLE_KEYWORDS, suffix=r"\b(?!\s*\()"), Keyword),
            (rf"({_DECIMAL})(\s+)(step|{'|'.join(_UNITS)})\b", bygroups(Number, Whitespace, Keyword)),
            (words(tuple(SCHEDULES) + tuple(DISTRIBUTIONS), suffix=r"(?=\s*\()"), Name.Builtin),
            (rf"({_NAME})(\.)(?=[^\W\d])", bygroups(Name.Namespace, Punctuation)),  # `contrib.` of `contrib.muon`
            (rf"{_NAME}(?=\s*\()", Name.Function),
            (rf"\${_NAME}", Name.Variable.Magic),
            (_NAME, Name),
            (rf"{_DECIMAL}%", Number),
            (rf"{_DIGITS}(?![0-9_.eE%])", Number.Integer),
            (rf"{_DECIMAL}(?:[eE][+-]?[0-9]+)?", Number.Float),
            (r'"', String.Double, "string"),
            (r"->|\*\*|[-+*/~=|]", Operator),
            (r"[()\[\]{},:;<>]", Punctuation),
        ],
        "string": [
            (r'[^"\\\n]+', String.Double),
            (r"\\.", String.Escape),
            (r'"', String.Double, "#pop"),
            # An unterminated string ends at the line's end, so one typo does not colour the file.
            (r"(?=\n)", String.Double, "#pop"),
        ],
        "root": [
            include("space"),
            (rf"(let)(\s+)({_NAME})", bygroups(Keyword.Declaration, Whitespace, Name.Variable)),
            # `phase NAME STEPS`: a first word followed by the step count is the phase's name.
            (
                rf"(phase)(\s+)({_NAME})(?=\s+(?:[0-9.$]|(?!(?:lr|optimizer|accumulate|ema|batch|epochs?)\b)[^\W\d]))",
                bygroups(Keyword.Declaration, Whitespace, Name.Label),
            ),
            # (a dotted name, `optimizer contrib.muon`, is lexed by "expr": namespace, `.`, name)
            (rf"(optimizer)(\s+)({_NAME})(?![.\w])", bygroups(Keyword, Whitespace, Name.Builtin)),
            (rf"(stop)(\s+)(when)(\s+){_METRIC}(?:(\s*)(<))?", bygroups(Keyword, Whitespace, Keyword, Whitespace, *_METRIC_TOKENS, Whitespace, Operator)),
            (rf"(keep)(\s+)({_NAME})(\s+){_METRIC}", bygroups(Keyword, Whitespace, Keyword, Whitespace, *_METRIC_TOKENS)),
            (r"(default)(\s+)(fixed|free)\b", bygroups(Keyword, Whitespace, Keyword)),
            (words(("free", "fix", "init"), suffix=r"\b"), Keyword, "patterns"),
            (r"params\b", Keyword.Declaration, "params"),
            include("expr"),
        ],
        # After free/fix/init: a comma-separated list of patterns.
        "patterns": [
            include("space"),
            (_PATTERN, _pattern_tokens, ("#pop", "after_pattern")),
            default("#pop"),
        ],
        "after_pattern": [
            include("space"),
            (r",", Punctuation, ("#pop", "patterns")),
            default("#pop"),
        ],
        # `params < PATTERNS: SPEC | SPEC; ... >`
        "params": [
            include("space"),
            (r"<", Punctuation, ("#pop", "param_entries")),
            default("#pop"),
        ],
        "param_entries": [
            include("space"),
            (r">", Punctuation, "#pop"),
            (r"[,;]", Punctuation),
            (r":", Punctuation, "param_specs"),
            (_PATTERN, _pattern_tokens),
        ],
        "param_specs": [
            include("space"),
            (r";", Punctuation, "#pop"),
            (r"->", Operator),
            (r"(?=>)", Punctuation, "#pop"),
            (rf"({_NAME})(\s*)(=)(?!=)", bygroups(Name.Attribute, Whitespace, Operator)),
            (words(("free", "fixed", "init", "in", "after", "until", "at"), suffix=r"\b"), Keyword),
            (rf"{_NAME}\b(?!\s*[(=])", Name.Label),  # a phase referred to by name
            include("expr"),
        ],
    }
