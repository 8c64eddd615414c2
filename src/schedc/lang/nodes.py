"""The typed syntax tree of a `.sched` file.

Every node is a frozen dataclass with a `span`. Spans are excluded from `==`
(`compare=False`), so two trees are equal when they mean the same program,
whatever their layout: the formatter, the round-trip and fuzz tests rely on it.
Nothing here knows about Lark or JAX.

The classes are made by `@node`, not `@dataclass(frozen=True)`: they are records
(schedc.lang.record), real dataclasses (`dataclasses.fields`, `replace`, `asdict`
work) whose `__init__`, `==`, hash, repr and frozenness come from one base class
instead of six methods that the standard library writes and compiles for every
class at import (224 `exec`s, 25-30 ms of every `schedc check`; docs/performance.md).
"""

from __future__ import annotations

from schedc.lang.record import Record, dataclass_transform, field, record
from schedc.lang.span import NO_SPAN, Span  # noqa: F401  (re-exported: nodes.Span)


class Node(Record):
    """What every node shares: a record (schedc.lang.record) with a span, which `==` and hash leave
    out (`compare=False`)."""

    _field_names: tuple[str, ...] = ()  # every field but the span


@dataclass_transform(eq_default=True, frozen_default=True, field_specifiers=(field,))
def node(cls: type) -> type:
    """Make `cls` (a subclass of `Node` with annotated fields) a node: a record told where its
    children are (`children` looks in every field but the span)."""
    cls = record(cls)
    cls._field_names = tuple(name for name in cls._init_names if name != "span")
    return cls


def _span() -> Span:
    return field(default=NO_SPAN, compare=False, repr=False)


# ---------------------------------------------------------------- expressions


@node
class Number(Node):
    value: float | int
    text: str
    span: Span = _span()


@node
class Percent(Node):
    """`10%`: `value` is the fraction (0.1)."""

    value: float
    text: str
    span: Span = _span()


@node
class String(Node):
    value: str
    span: Span = _span()


@node
class Bool(Node):
    value: bool
    span: Span = _span()


@node
class Name(Node):
    id: str
    span: Span = _span()


@node
class Placeholder(Node):
    """`$name`, bound from keyword arguments when a DSL string is compiled from Python."""

    id: str
    span: Span = _span()


@node
class Bound(Node):
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


@node
class Keyword(Node):
    name: Name
    value: "Expr"
    span: Span = _span()


@node
class Call(Node):
    func: Name
    args: tuple["Expr", ...] = ()
    kwargs: tuple[Keyword, ...] = ()
    span: Span = _span()


@node
class BinOp(Node):
    op: str  # one of + - * / **
    left: "Expr"
    right: "Expr"
    span: Span = _span()


@node
class UnaryOp(Node):
    op: str  # - or +
    operand: "Expr"
    span: Span = _span()


@node
class Arrow(Node):
    """`a -> b [-> c]`: the waypoints of a schedule."""

    points: tuple["Expr", ...]
    span: Span = _span()


@node
class Then(Node):
    """`S1 for N1 then S2 [for N2 then S3 ...]`: `pieces` has one more item than `durations`."""

    pieces: tuple["Expr", ...]
    durations: tuple["Expr", ...]
    span: Span = _span()


@node
class List(Node):
    items: tuple["Expr", ...]
    span: Span = _span()


@node
class MapEntry(Node):
    key: "Expr"
    value: "Expr"
    span: Span = _span()


@node
class Map(Node):
    entries: tuple[MapEntry, ...]
    span: Span = _span()


@node
class Epochs(Node):
    """`3 epochs`, `1 epoch`: a duration in passes over the training data, turned into steps
    once the data (and so the steps per epoch) is known."""

    count: "Expr"
    span: Span = _span()


Expr = Number | Percent | String | Bool | Name | Placeholder | Call | BinOp | UnaryOp | Arrow | Then | List | Map | Epochs


# ---------------------------------------------------------------- phase bodies


@node
class Pattern(Node):
    """A parameter pattern exactly as written; schedc.lang.glob parses its structure."""

    text: str
    span: Span = _span()


@node
class Free(Node):
    patterns: tuple[Pattern, ...]
    lr: Expr | None = None
    optimizer: Expr | None = None  # a Name or a Call
    span: Span = _span()


@node
class Fix(Node):
    patterns: tuple[Pattern, ...]
    span: Span = _span()


@node
class Init(Node):
    """`init P ~ dist(...)` (kind "dist"), `init P = expr` ("value") or `init P = reset` ("reset")."""

    patterns: tuple[Pattern, ...]
    kind: str
    value: Expr | None = None  # the Call for "dist", the expression for "value"
    span: Span = _span()


@node
class Carry(Node):
    span: Span = _span()


@node
class Stop(Node):
    metric: Name
    threshold: Expr
    over: Expr | None = None
    after: Expr | None = None
    span: Span = _span()


@node
class StopImproving(Node):
    """`stop when val.accuracy stops improving for 5 evals`: `trend` is `improving` (direction
    inferred from the metric's name), `increasing` or `decreasing`; `patience` counts evaluations."""

    metric: Name
    trend: Name
    patience: Expr
    span: Span = _span()


@node
class Keep(Node):
    """`keep best val.loss`: at the phase end, restore the weights of the best evaluation.
    `which` is `best` (direction inferred from the metric's name), `lowest` or `highest`."""

    which: Name
    metric: Name
    span: Span = _span()


Statement = Free | Fix | Init | Carry | Stop | StopImproving | Keep


@node
class Phase(Node):
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


@node
class Repeat(Node):
    count: Expr
    items: tuple[Phase | Repeat, ...]
    span: Span = _span()


# ---------------------------------------------------------------- params blocks


@node
class PhaseRef(Node):
    """A phase by index (`int`) or by name (`str`)."""

    target: int | str
    span: Span = _span()


@node
class Spec(Node):
    """One `|`-separated part of a params entry.

    kind: "free_in", "free_after", "free_until", "fixed_in" or "init_at";
    `dist` is the init's call (`normal(0, 1)`, `uniform(0, 2)`, `value(1.5)`).
    """

    kind: str
    phases: tuple[PhaseRef, ...]
    dist: Call | None = None
    span: Span = _span()


@node
class ParamEntry(Node):
    patterns: tuple[Pattern, ...]
    specs: tuple[Spec, ...]
    span: Span = _span()


@node
class Params(Node):
    entries: tuple[ParamEntry, ...]
    span: Span = _span()


# ---------------------------------------------------------------- directives


@node
class Directive(Node):
    """`model "..."`, `loss "..."`, `data "..."`, `validation "..."`, `eval "..." every ...`,
    `batch N`, `seed N`, `optimizer OPT`, `lr EXPR`, `accumulate N`, `ema DECAY`, `default fixed|free`:
    `keyword` names which; `value` is its argument (a String, an expression, a Name or Call for the
    optimizer, or a Name for default). `eval` also has `every`: its interval."""

    keyword: str
    value: Expr
    span: Span = _span()
    every: "Every | None" = None


@node
class Every(Node):
    """The interval of `eval ... every N steps | every N epochs` (`every epoch`: count None)."""

    count: Expr | None
    unit: str  # "steps" or "epochs"
    span: Span = _span()


@node
class Let(Node):
    name: Name
    value: Expr
    span: Span = _span()


Item = Directive | Let | Phase | Repeat | Params


@node
class Comment(Node):
    text: str
    span: Span = _span()


@node
class File(Node):
    items: tuple[Item, ...]
    span: Span = _span()


def walk(node):
    """Every node reachable from `node` (itself included), parents before children, no recursion."""
    stack = [node]
    while stack:
        current = stack.pop()
        yield current
        kids = children(current)
        kids.reverse()
        stack += kids


def children(node) -> list:
    """The nodes directly inside `node`, in field order (its span aside)."""
    out = []
    fields = getattr(node, "__dict__", None)  # (a record keeps its fields there: no getattr per field)
    for name in getattr(node, "_field_names", ()):
        value = fields[name]
        if isinstance(value, Node):
            out.append(value)
        elif isinstance(value, tuple):
            for item in value:
                if isinstance(item, Node):
                    out.append(item)
    return out
