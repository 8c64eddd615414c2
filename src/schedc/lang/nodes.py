"""The typed syntax tree of a `.sched` file.

Every node is a frozen dataclass with a `span`. Spans are excluded from `==`
(`compare=False`), so two trees are equal when they mean the same program,
whatever their layout: the formatter, the round-trip and fuzz tests rely on it.
Nothing here knows about Lark or JAX.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Union

from schedc.lang.span import NO_SPAN, Span  # noqa: F401  (re-exported: nodes.Span)


def _span() -> Span:
    return field(default=NO_SPAN, compare=False, repr=False)


# ---------------------------------------------------------------- expressions


@dataclass(frozen=True)
class Number:
    value: float | int
    text: str
    span: Span = _span()


@dataclass(frozen=True)
class Percent:
    """`10%`: `value` is the fraction (0.1)."""

    value: float
    text: str
    span: Span = _span()


@dataclass(frozen=True)
class String:
    value: str
    span: Span = _span()


@dataclass(frozen=True)
class Bool:
    value: bool
    span: Span = _span()


@dataclass(frozen=True)
class Name:
    id: str
    span: Span = _span()


@dataclass(frozen=True)
class Placeholder:
    """`$name`, bound from keyword arguments when a DSL string is compiled from Python."""

    id: str
    span: Span = _span()


@dataclass(frozen=True, eq=False)
class Bound:
    """A `$placeholder` bound to a Python object the language cannot write: an optax
    optimizer object or schedule function, an array. Never printed (the text keeps
    `$name`); the resolver substitutes it where the placeholder stood. Equal and
    hashed by the object's identity, so plans and compiled programs are cached by it."""

    id: str
    value: object
    span: Span = _span()

    def __eq__(self, other) -> bool:
        return isinstance(other, Bound) and other.id == self.id and other.value is self.value

    def __hash__(self) -> int:
        return hash((self.id, id(self.value)))


@dataclass(frozen=True)
class Keyword:
    name: Name
    value: "Expr"
    span: Span = _span()


@dataclass(frozen=True)
class Call:
    func: Name
    args: tuple["Expr", ...] = ()
    kwargs: tuple[Keyword, ...] = ()
    span: Span = _span()


@dataclass(frozen=True)
class BinOp:
    op: str  # one of + - * / **
    left: "Expr"
    right: "Expr"
    span: Span = _span()


@dataclass(frozen=True)
class UnaryOp:
    op: str  # - or +
    operand: "Expr"
    span: Span = _span()


@dataclass(frozen=True)
class Arrow:
    """`a -> b [-> c]`: the waypoints of a schedule."""

    points: tuple["Expr", ...]
    span: Span = _span()


@dataclass(frozen=True)
class Then:
    """`S1 for N1 then S2 [for N2 then S3 ...]`: `pieces` has one more item than `durations`."""

    pieces: tuple["Expr", ...]
    durations: tuple["Expr", ...]
    span: Span = _span()


@dataclass(frozen=True)
class List:
    items: tuple["Expr", ...]
    span: Span = _span()


@dataclass(frozen=True)
class MapEntry:
    key: "Expr"
    value: "Expr"
    span: Span = _span()


@dataclass(frozen=True)
class Map:
    entries: tuple[MapEntry, ...]
    span: Span = _span()


@dataclass(frozen=True)
class Epochs:
    """`3 epochs`, `1 epoch`: a duration in passes over the training data, turned into steps
    once the data (and so the steps per epoch) is known."""

    count: "Expr"
    span: Span = _span()


Expr = Union[Number, Percent, String, Bool, Name, Placeholder, Call, BinOp, UnaryOp, Arrow, Then, List, Map, Epochs]


# ---------------------------------------------------------------- phase bodies


@dataclass(frozen=True)
class Pattern:
    """A parameter pattern exactly as written; schedc.lang.glob parses its structure."""

    text: str
    span: Span = _span()


@dataclass(frozen=True)
class Free:
    patterns: tuple[Pattern, ...]
    lr: Expr | None = None
    optimizer: Expr | None = None  # a Name or a Call
    span: Span = _span()


@dataclass(frozen=True)
class Fix:
    patterns: tuple[Pattern, ...]
    span: Span = _span()


@dataclass(frozen=True)
class Init:
    """`init P ~ dist(...)` (kind "dist"), `init P = expr` ("value") or `init P = reset` ("reset")."""

    patterns: tuple[Pattern, ...]
    kind: str
    value: Expr | None = None  # the Call for "dist", the expression for "value"
    span: Span = _span()


@dataclass(frozen=True)
class Carry:
    span: Span = _span()


@dataclass(frozen=True)
class Stop:
    metric: Name
    threshold: Expr
    over: Expr | None = None
    after: Expr | None = None
    span: Span = _span()


@dataclass(frozen=True)
class StopImproving:
    """`stop when val.accuracy stops improving for 5 evals`: `trend` is `improving` (direction
    inferred from the metric's name), `increasing` or `decreasing`; `patience` counts evaluations."""

    metric: Name
    trend: Name
    patience: Expr
    span: Span = _span()


@dataclass(frozen=True)
class Keep:
    """`keep best val.loss`: at the phase end, restore the weights of the best evaluation.
    `which` is `best` (direction inferred from the metric's name), `lowest` or `highest`."""

    which: Name
    metric: Name
    span: Span = _span()


Statement = Union[Free, Fix, Init, Carry, Stop, StopImproving, Keep]


@dataclass(frozen=True)
class Phase:
    """`phase [NAME] STEPS [epochs] [batch N] [lr E] [optimizer O] [accumulate N] [ema D] < BODY >`."""

    name: Name | None
    steps: Expr
    lr: Expr | None = None
    optimizer: Expr | None = None  # a Name (dotted for optax submodules: `contrib.muon`) or a Call (`chain(...)` too)
    body: tuple[Statement, ...] = ()
    span: Span = _span()
    accumulate: Expr | None = None  # gradient accumulation over N steps (optax.MultiSteps)
    ema: Expr | None = None  # decay of an exponential moving average of the free parameters
    unit: str = "steps"  # "epochs" for `phase 3 epochs`
    batch: Expr | None = None  # `batch N` in the header: this phase's minibatch size


@dataclass(frozen=True)
class Repeat:
    count: Expr
    items: tuple[Union[Phase, "Repeat"], ...]
    span: Span = _span()


# ---------------------------------------------------------------- params blocks


@dataclass(frozen=True)
class PhaseRef:
    """A phase by index (`int`) or by name (`str`)."""

    target: int | str
    span: Span = _span()


@dataclass(frozen=True)
class Spec:
    """One `|`-separated part of a params entry.

    kind: "free_in", "free_after", "free_until", "fixed_in" or "init_at";
    `dist` is the init's call (`normal(0, 1)`, `uniform(0, 2)`, `value(1.5)`).
    """

    kind: str
    phases: tuple[PhaseRef, ...]
    dist: Call | None = None
    span: Span = _span()


@dataclass(frozen=True)
class ParamEntry:
    patterns: tuple[Pattern, ...]
    specs: tuple[Spec, ...]
    span: Span = _span()


@dataclass(frozen=True)
class Params:
    entries: tuple[ParamEntry, ...]
    span: Span = _span()


# ---------------------------------------------------------------- directives


@dataclass(frozen=True)
class Directive:
    """`model "..."`, `loss "..."`, `data "..."`, `validation "..."`, `eval "..." every ...`,
    `batch N`, `seed N`, `optimizer OPT`, `lr EXPR`, `accumulate N`, `ema DECAY`, `default fixed|free`:
    `keyword` names which; `value` is its argument (a String, an expression, a Name or Call for the
    optimizer, or a Name for default). `eval` also has `every`: its interval."""

    keyword: str
    value: Expr
    span: Span = _span()
    every: "Every | None" = None


@dataclass(frozen=True)
class Every:
    """The interval of `eval ... every N steps | every N epochs` (`every epoch`: count None)."""

    count: Expr | None
    unit: str  # "steps" or "epochs"
    span: Span = _span()


@dataclass(frozen=True)
class Let:
    name: Name
    value: Expr
    span: Span = _span()


Item = Union[Directive, Let, Phase, Repeat, Params]


@dataclass(frozen=True)
class Comment:
    text: str
    span: Span = _span()


@dataclass(frozen=True)
class File:
    items: tuple[Item, ...]
    span: Span = _span()


def walk(node):
    """Every node reachable from `node` (itself included), parents before children, no recursion."""
    stack = [node]
    while stack:
        current = stack.pop()
        yield current
        stack.extend(reversed(children(current)))


def children(node) -> list:
    """The nodes directly inside `node`, in field order (its span aside)."""
    out = []
    for name in getattr(node, "__dataclass_fields__", ()):
        if name == "span":
            continue
        value = getattr(node, name)
        if isinstance(value, tuple):
            out.extend(v for v in value if hasattr(v, "__dataclass_fields__"))
        elif hasattr(value, "__dataclass_fields__"):
            out.append(value)
    return out
