"""The Plan: a schedule resolved against a parameter tree, as plain data.

`resolve(parsed_file, param_tree)` turns the syntax tree into one `PhasePlan`
per phase (after `repeat` expansion, with `params` blocks merged in): which
parameters are free, in which optimizer groups, which are re-initialised, the
learning-rate and hyperparameter schedules (closed expressions, not yet
compiled), the optimizer, the carry flag and the stop rules. No JAX objects:
the compiler, the Python builder and the language server all consume this.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from . import nodes as n


@dataclass(frozen=True)
class OptimizerSpec:
    """An optax optimizer by name; keyword values are closed expressions (numbers or schedules)."""

    name: str
    kwargs: tuple[tuple[str, object], ...] = ()
    span: n.Span = field(default=n.NO_SPAN, compare=False)


@dataclass(frozen=True)
class Group:
    """Free parameters sharing one optimizer and learning rate within a phase.

    `lr` None means the phase's lr; `optimizer` None means the phase's optimizer.
    """

    paths: tuple[str, ...]
    lr: object | None = None
    optimizer: OptimizerSpec | None = None
    span: n.Span = field(default=n.NO_SPAN, compare=False)


@dataclass(frozen=True)
class InitSpec:
    """Set `path` at the start of a phase.

    kind "normal" (args: mean, std), "uniform" (low, high), "value" (value,) or "reset" ().
    """

    path: str
    kind: str
    args: tuple[float, ...] = ()
    span: n.Span = field(default=n.NO_SPAN, compare=False)


@dataclass(frozen=True)
class StopRule:
    """`loss < threshold`, or `loss_change < threshold over N after M` (spectracles' Δloss rule)."""

    kind: str
    threshold: float
    over: int = 50
    after: int = 100
    span: n.Span = field(default=n.NO_SPAN, compare=False)


@dataclass(frozen=True)
class PhasePlan:
    index: int
    name: str | None
    steps: int
    free: tuple[str, ...]  # canonical parent paths, in tree order
    groups: tuple[Group, ...]  # a partition of `free`
    lr: object | None  # the phase learning rate: a closed expression
    optimizer: OptimizerSpec
    inits: tuple[InitSpec, ...] = ()
    carry: bool = False
    stop: tuple[StopRule, ...] = ()
    span: n.Span = field(default=n.NO_SPAN, compare=False)

    @property
    def label(self) -> str:
        """`phase 3 (refine)`: how messages name this phase."""
        return f"phase {self.index}" + (f" ({self.name})" if self.name else "")


@dataclass(frozen=True)
class Plan:
    phases: tuple[PhasePlan, ...]
    parameters: tuple[str, ...]  # every parent path, tree order
    shared: dict[str, str] = field(default_factory=dict)  # shared copy path -> parent path
    seed: int | None = None
    default: str = "fixed"
    model: str | None = None  # the `model`, `loss` and `data` directives, as written
    loss: str | None = None
    data: str | None = None
    source: str | None = None  # the file it came from


@dataclass(frozen=True)
class ExpandedPhase:
    """A phase of the file after `repeat` expansion.

    A named phase inside `repeat N` gives N phases sharing its `name`: a params
    reference to that name means every instance (`free in NAME`), the first
    (`free after NAME`) or the last (`free until NAME`). `display` tells
    instances apart (`gp#2` is the second iteration).
    """

    index: int
    phase: n.Phase
    name: str | None
    display: str
    iteration: tuple[int, ...] = ()  # 1-based iteration numbers of the enclosing repeats, outermost first


def expand(file: n.File, count_of=None) -> tuple[ExpandedPhase, ...]:
    """Number the phases of `file` from 0, expanding `repeat` blocks.

    `count_of(expr)` gives a repeat's count (an int, or None when it is invalid:
    the block is then taken once, so later checks still see its phases).
    """
    from .expr import constant

    count_of = count_of or constant
    out: list[ExpandedPhase] = []
    # iterative walk: (items, iteration prefix), so repeats nested deeply cannot overflow
    stack: list[tuple[list, tuple[int, ...]]] = [(list(item for item in file.items if isinstance(item, (n.Phase, n.Repeat))), ())]
    while stack:
        items, iteration = stack.pop()
        if not items:
            continue
        item, rest = items[0], items[1:]
        stack.append((rest, iteration))
        if isinstance(item, n.Phase):
            name = item.name.id if item.name else None
            display = name + ("#" + ".".join(map(str, iteration)) if iteration else "") if name else f"phase {len(out)}"
            out.append(ExpandedPhase(len(out), item, name, display, iteration))
            continue
        count = count_of(item.count)
        count = count if isinstance(count, int) and 0 < count <= 100_000 else 1
        for k in reversed(range(count)):
            stack.append((list(item.items), iteration + (k + 1,)))
    return tuple(out)
