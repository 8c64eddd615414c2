"""Model-free facts about a program that every stage asks for: which phases there are after
`repeat` expansion, which phases a reference names, and the `let` environment.

They belong to the language, not to the checker or the resolver (both read them), and
they import nothing beyond the AST and constant folding: JAX-free.
"""

from __future__ import annotations

from numbers import Integral, Real

from schedc.lang.swept import Swept
from schedc.lang import nodes as n
from schedc.lang.expr import MAX_EXPR_NODES, constant, substitute, tree_size
from schedc.lang.record import Record, record, replace


@record
class ExpandedPhase(Record):
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

    @property
    def label(self) -> str:
        """How messages name it: `phase 3` or ``phase 3 (`refine#2`)``."""
        return f"phase {self.index}" + (f" (`{self.display}`)" if self.name else "")


def ref_phases(ref: n.PhaseRef, phases: tuple[ExpandedPhase, ...]) -> list[int]:
    """The phases a reference names: its index, or every instance of a name; [] when there is none."""
    if isinstance(ref.target, int):
        return [ref.target] if 0 <= ref.target < len(phases) else []
    return [p.index for p in phases if p.name == ref.target]


def spec_phases(spec: n.Spec, phases: tuple[ExpandedPhase, ...]) -> list[int]:
    """The phases a params spec covers: `in` the named ones, `after P` from P's first instance on,
    `until P` through its last. Unknown references cover nothing."""
    out: list[int] = []
    for ref in spec.phases:
        indices = ref_phases(ref, phases)
        if not indices:
            continue
        if spec.kind == "free_after":
            out.extend(range(indices[0], len(phases)))
        elif spec.kind == "free_until":
            out.extend(range(0, indices[-1] + 1))
        else:
            out.extend(indices)
    return out


# The most phases a file may expand to, all repeats together (a cap per `repeat` would still let
# `repeat 100000 < repeat 100000 < ... > >` ask for 10^10 phases in 60 bytes).
MAX_PHASES = 100_000
MAX_REPEAT = 100_000


def _count(item: n.Repeat, count_of) -> int:
    count = count_of(item.count)
    return count if isinstance(count, int) and 0 < count <= MAX_REPEAT else 1


def phase_count(items, count_of=None) -> int:
    """How many phases `items` expand to (at most MAX_PHASES + 1: counting stops past the cap)."""
    count_of = count_of or constant
    total = 0
    for item in items:
        if isinstance(item, n.Phase):
            total += 1
        elif isinstance(item, n.Repeat):
            inner = phase_count(item.items, count_of)
            total += _count(item, count_of) * inner
        if total > MAX_PHASES:
            return MAX_PHASES + 1
    return total


def expand(file: n.File, count_of=None) -> tuple[ExpandedPhase, ...] | None:
    """Number the phases of `file` from 0, expanding `repeat` blocks.

    `count_of(expr)` gives a repeat's count (an int, or None when it is invalid:
    the block is then taken once, so later checks still see its phases). None when the
    file expands to more than MAX_PHASES phases: they are counted first, without expanding
    any (`phase_count`), so a file past the cap costs nothing (the checker reports it, E0211);
    None too for repeats nested beyond the host's stack.
    """
    count_of = count_of or constant
    out: list[ExpandedPhase] = []
    top = tuple(item for item in file.items if isinstance(item, (n.Phase, n.Repeat)))
    try:
        if phase_count(top, count_of) > MAX_PHASES:
            return None
    except RecursionError:
        return None
    # iterative walk: (items, position, iteration prefix)
    stack: list[tuple[tuple, int, tuple[int, ...]]] = [(top, 0, ())]
    while stack:
        items, position, iteration = stack.pop()
        if position >= len(items):
            continue
        item = items[position]
        stack.append((items, position + 1, iteration))
        if isinstance(item, n.Phase):
            name = item.name.id if item.name else None
            display = name + ("#" + ".".join(map(str, iteration)) if iteration else "") if name else f"phase {len(out)}"
            out.append(ExpandedPhase(len(out), item, name, display, iteration))
            continue
        for k in reversed(range(_count(item, count_of))):
            stack.append((item.items, 0, iteration + (k + 1,)))
    return tuple(out)


def env_of(file: n.File, placeholders: dict | None = None, objects: bool = False) -> dict[str, n.Expr]:
    """The `let` environment: each name's value with the earlier lets substituted.

    A name defined twice keeps its first definition (the second is E0102). A let whose
    substituted value has more than `MAX_EXPR_NODES` nodes is left out (`oversized_lets`).
    Bound `placeholders` ({name: value}, name without `$`) are substituted too,
    under the key `$name`.

    Returns:
        {let name: closed expression} plus {"$name": node} for each placeholder
        whose value is a number, string, bool or syntax node; with `objects`, every
        other value too, as a `Bound` node (the resolver's view: an optax object, an
        array). The checker leaves those placeholders in place: it cannot inspect them.
    """
    return _lets(file, placeholders, objects)[0]


def oversized_lets(file: n.File, placeholders: dict | None = None) -> list[n.Let]:
    """The lets whose value, with the earlier lets substituted, is too large to check (E0005)."""
    return _lets(file, placeholders)[1]


def _lets(file: n.File, placeholders: dict | None, objects: bool = False) -> tuple[dict[str, n.Expr], list[n.Let]]:
    env: dict[str, n.Expr] = dict(placeholder_env(placeholders, objects))
    oversized: list[n.Let] = []
    seen: set[str] = set()
    for item in file.items:
        if isinstance(item, n.Let) and item.name.id not in env and item.name.id not in seen:
            seen.add(item.name.id)
            value = substitute(item.value, env)
            if tree_size(value) > MAX_EXPR_NODES:
                oversized.append(item)
            else:
                env[item.name.id] = value
    return env, oversized


def placeholder_env(placeholders: dict | None, objects: bool = False) -> dict[str, object]:
    env = {}
    for key, value in (placeholders or {}).items():
        name = key.lstrip("$")
        node = as_node(value)
        if node is None and objects:
            node = n.Bound(name, value)
        if node is not None:
            env["$" + name] = node
    return env


def as_node(value):
    """A placeholder's value as a syntax node: a bool, a number (`number_node`) or a node as it is;
    None for a value the checks cannot look into (they then leave the placeholder alone)."""
    if isinstance(value, bool):
        return n.Bool(value)
    if isinstance(value, n.Node):
        return value
    return number_node(value)


def number_node(value):
    """The node the parser makes of a real number's text (`-0.5` is a negation of `0.5`), or None.

    Accepts Python, numpy and JAX scalars (not bools); ints stay ints. A non-finite number,
    which has no text, is a plain Number the checks report.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, Swept):  # a sweep's settings at once (lang.swept): kept as they are
        pass
    elif isinstance(value, Integral) or _scalar_of(value, "iu"):
        value = int(value)
    elif isinstance(value, Real) or _scalar_of(value, "f"):
        value = float(value)
    else:
        return None
    if value < 0:
        return n.UnaryOp("-", n.Number(-value, repr(-value)))
    return n.Number(value, repr(value))


def _scalar_of(value, kinds: str) -> bool:
    """Whether `value` is a numpy or JAX scalar (shape ()) of one of the dtype kinds."""
    return getattr(value, "shape", None) == () and getattr(getattr(value, "dtype", None), "kind", None) in tuple(kinds)


def with_span(node, span: n.Span):
    """`node` with every node in it at `span` (a value given outside the text points where it is used)."""
    changes = {}
    for name in node._field_names:
        value = getattr(node, name)
        if isinstance(value, tuple):
            changes[name] = tuple(with_span(v, span) if isinstance(v, n.Node) else v for v in value)
        elif isinstance(value, n.Node):
            changes[name] = with_span(value, span)
    return replace(node, span=span, **changes)


def first_lets(file: n.File) -> dict[str, n.Let]:
    """Each `let` name's first definition (the one its uses mean; a second is E0102)."""
    out: dict[str, n.Let] = {}
    for item in file.items:
        if isinstance(item, n.Let):
            out.setdefault(item.name.id, item)
    return out


def first_directive(file: n.File, keyword: str) -> n.Directive | None:
    """The file's first directive `keyword` (a second is E0216), or None."""
    return next((item for item in file.items if isinstance(item, n.Directive) and item.keyword == keyword), None)


def default_free(file: n.File) -> bool:
    """Whether the file says `default free` (its first `default` directive; a second is E0216):
    a parameter no statement names is then free."""
    default = first_directive(file, "default")
    return default is not None and isinstance(default.value, n.Name) and default.value.id == "free"


def header_span(phase: n.Phase) -> n.Span:
    """`phase NAME STEPS`: where messages about a whole phase point (its span covers the body)."""
    end = phase.steps.span if phase.steps.span != n.NO_SPAN else phase.span
    return n.Span(phase.span.line, phase.span.column, end.end_line, end.end_column, phase.span.start, end.end)


def closed_count(env):
    """A repeat count function for `expand` that substitutes the `let` environment first."""

    def count(expr):
        value = constant(substitute(expr, env))
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    return count
