"""The front-end driver: text -> parse -> placeholders -> model-free checks -> model -> Plan.

Every caller that turns schedule text into diagnostics or a Plan comes through `analyse`:
`schedc.compile`, `build_schedule`, `schedc.schedule` (its expression text), every CLI command
that reads a `.sched` file, and the language server. Each stage runs once per call, and the
Analysis it returns holds what each stage produced, so no caller puts the stages together
again or sorts out diagnostics found twice.

Two ways to run it:

* building (the default): stop at the first stage that finds an error; when none does, resolve
  a Plan (against the model's parameters, or over the pattern texts when there is no model);
* `lint=True` (`schedc check`, the language server): report every problem there is: with a
  model, its checks run even after model-free errors; without one, nothing is resolved; no Plan.
  An unbound `$placeholder` is no error there: an unknown of the kind its place implies (a
  count, a schedule, an optimizer), which `schedc run --set NAME=VALUE` or Python binds.

Beside it: `read`, the first stage alone (decode, parse: the formatter, the language server's
lookups); `Analysis.with_model` (the model stage of an analysis already checked);
`Analysis.plan_for` (the Plan again for data of a known size, epochs in steps);
`analyse_setting` (a sweep's setting: lets redefined, placeholders rebound, checked and
resolved against the program's parameters, the text not parsed again); `analyse_expression`
(one schedule expression, `schedc.schedule`). Where two stages meet the same problem, the
later is told what the earlier covers (the resolver's `checked`, the check's
`open_placeholders`): nothing is filtered afterwards.

JAX-free: a model is loaded (and JAX imported) only when one is asked for (and `pathlib`, ~3 ms
of a `schedc check` without a model, only then too).
"""

from __future__ import annotations

from schedc.lang.diagnostics import Diagnostic, SchedError, Source, has_errors, sort_key
from schedc.lang.syntax import ParseResult, parse, unexpected
from schedc.lang.record import Record, record, replace
from schedc.lang.text import decode

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path


class _FromDirective:
    def __repr__(self) -> str:
        return "FROM_DIRECTIVE"


# `analyse(..., model=FROM_DIRECTIVE)`: the model the file's `model` directive names (none: no model)
FROM_DIRECTIVE = _FromDirective()


@record
class Analysis(Record):
    """What the front end made of one input (a record: `replace` makes the next stage's).

    `diagnostics` holds every problem found, sorted, each with `file=name`; `parsed` is None
    only when the bytes were not text (E0004). `plan` is the Plan when every stage passed
    (never with `lint=True`); `model` and `tree` the model and its
    `ParamTree` when one was bound; `placeholders` the `$name` values as syntax nodes.
    """

    name: str
    source: Source | None
    parsed: ParseResult | None
    diagnostics: list[Diagnostic]
    placeholders: dict
    plan: object = None
    model: object = None
    tree: object = None
    no_directive: bool = False  # the model was to come from the `model` directive, and there is none

    @property
    def text(self) -> str | None:
        return self.source.text if self.source is not None else None

    @property
    def has_errors(self) -> bool:
        return has_errors(self.diagnostics)

    def error(self) -> SchedError:
        """Every diagnostic as one exception (what `schedc.compile` raises)."""
        return SchedError(self.diagnostics, {self.name: self.source} if self.source is not None else {})

    def with_model(self, model=FROM_DIRECTIVE, *, base_dir=None, lint: bool = False, bind=None) -> "Analysis":
        """This analysis carried on through the model stage, as `analyse` does with the same
        arguments; the parse and the model-free checks are not run again (the language server
        publishes their diagnostics before the model has loaded)."""
        return _model_stage(self, model, base_dir, lint, bind)

    def plan_for(self, data):
        """The Plan resolved again for training data of this size (`plan.resolve.DataSize`: `N
        epochs` in steps); the checks are not run again.

        Raises:
            SchedError: with the errors the data's size brings.
        """
        from schedc.plan.resolve import resolve

        plan, found = resolve(self.parsed.file, self.tree, placeholders=self.placeholders, source=self.name, data=data, checked=True)
        errors = [d for d in _sorted(found, self.name) if d.is_error]
        if plan is None or errors:
            raise SchedError(errors, {self.name: self.source})
        return plan


def analyse(
    text_or_bytes: str | bytes,
    name: str = "<input>",
    *,
    source: Source | None = None,
    placeholders: dict | None = None,
    model=None,
    base_dir: str | Path | None = None,
    lint: bool = False,
    bind=None,
) -> Analysis:
    """Parse, check and (with a model, or when building) resolve one schedule.

    Args:
        text_or_bytes: the text, or a file's bytes (decoded as UTF-8, a BOM allowed; E0004 if not).
        name: the file name the diagnostics carry.
        source: where the text came from, for snippets (DSL text embedded in a Python file);
            by default the text itself under `name`.
        placeholders: values of `$name` placeholders: numbers, bools, schedule text or nodes.
        model: None (no model); `FROM_DIRECTIVE` (the file's `model` directive, if any); a
            `"file.py:factory"` / `"module:factory"` reference; or (not with `lint`) the model itself.
        base_dir: where a relative model reference is found (the .sched file's folder; the cwd by default).
        lint: report every problem instead of stopping at the first failing stage (see the module doc).
        bind: with `lint`, `bind(file, reference or None, base_dir) -> ((model, tree) or None,
            diagnostics)` loads the model another way (the language server's cache);
            `binding.bind_model` by default.

    Raises:
        TypeError, SchedError: for a placeholder value that cannot be one (see `bind_placeholders`).
    """
    front = _checked(read(text_or_bytes, name, source), placeholders, open_placeholders=lint)
    return front.with_model(model, base_dir=base_dir, lint=lint, bind=bind)


def read(text_or_bytes: str | bytes, name: str = "<input>", source: Source | None = None) -> Analysis:
    """The driver's first stage alone: decode and parse (`diagnostics`: the syntax errors).

    `analyse` starts with it; the formatter and the language server's hover, completion,
    go-to-definition and outline need the tree, not the checks, and stop here.
    """
    text = text_or_bytes
    if isinstance(text_or_bytes, bytes):
        text, problem = decode(text_or_bytes)
        if text is None:
            return Analysis(name, None, None, [problem.in_file(name)], {})
    parsed = parse(text)
    return Analysis(name, source or Source(name, text), parsed, _sorted(parsed.diagnostics, name), {})


def _checked(front: Analysis, placeholders: dict | None, open_placeholders: bool, bound: dict | None = None) -> Analysis:
    """Bind the placeholders (unless `bound`: already bound) and run the model-free checks
    (`open_placeholders`: an unbound `$name` is an unknown, not E0110: linting)."""
    from schedc.check.checker import check_file

    if front.parsed is None:
        return front
    nodes = bound if bound is not None else bind_placeholders(front.parsed, placeholders or {})
    found = front.diagnostics + check_file(front.parsed, nodes, open_placeholders=open_placeholders)
    return replace(front, diagnostics=_sorted(found, front.name), placeholders=nodes)


def check_source(text: str, name: str = "<input>", placeholders: dict | None = None) -> tuple[ParseResult, list[Diagnostic]]:
    """Parse and check `text` without a model, building (an unbound `$name` is E0110): the parse
    and every diagnostic (syntax included), sorted, each with `file=name`."""
    front = _checked(read(text, name), placeholders, open_placeholders=False)
    return front.parsed, front.diagnostics


def check_bytes(data: bytes, name: str = "<input>", placeholders: dict | None = None) -> tuple[ParseResult | None, list[Diagnostic], str | None]:
    """`check_source` of raw file contents (UTF-8, a BOM allowed): (parsed, diagnostics, text);
    parsed and text are None when the bytes are binary or not UTF-8 (the one diagnostic: E0004)."""
    front = _checked(read(data, name), placeholders, open_placeholders=False)
    return front.parsed, front.diagnostics, front.text


def analyse_setting(parsed: ParseResult, name: str, source: Source, tree, bound: dict, lets: dict) -> Analysis:
    """One setting of a sweep: `parsed` with the `let`s named in `lets` redefined as those numbers,
    checked with the placeholders `bound` (`bind_placeholders`' nodes: a sweep binds the program's
    once and adds each setting's numbers) and resolved against `tree` (the program's parameters);
    the text is not parsed again. Stops, as building does, at the first stage that finds an error."""
    from schedc.lang import nodes as n
    from schedc.lang.program import number_node, with_span

    def redefined(item):
        if isinstance(item, n.Let) and item.name.id in lets:
            return replace(item, value=with_span(number_node(lets[item.name.id]), item.value.span))
        return item

    variant = replace(parsed, file=replace(parsed.file, items=tuple(redefined(item) for item in parsed.file.items)))
    front = _checked(Analysis(name, source, variant, _sorted(variant.diagnostics, name), {}), None, open_placeholders=False, bound=bound)
    if front.has_errors:
        return front
    return _resolved(front, None, tree)


def _model_stage(front: Analysis, model, base_dir, lint: bool, bind) -> Analysis:
    """Bind the model (when asked for) and resolve: the Plan and the model's diagnostics."""
    if front.parsed is None or (front.has_errors and not lint) or (lint and model is None):
        return front
    from pathlib import Path

    base_dir = Path(base_dir) if base_dir is not None else Path.cwd()
    if lint:  # every model-dependent problem, even after model-free errors; no Plan wanted
        from schedc.plan.binding import check_against_model

        reference = None if model is FROM_DIRECTIVE else model
        found = check_against_model(front.parsed, reference, base_dir, bind=bind)
        return replace(front, diagnostics=_sorted(front.diagnostics + found, front.name))
    bound, problems = _bind(front.parsed, model, base_dir)
    if problems:
        return replace(front, diagnostics=_sorted(front.diagnostics + problems, front.name))
    resolved = _resolved(front, *(bound or (None, None)))  # no model: resolved over the pattern texts as written
    return replace(resolved, no_directive=model is FROM_DIRECTIVE and bound is None)


def _resolved(front: Analysis, model, tree) -> Analysis:
    """Resolve a checked file against `tree` (None: its pattern texts): the Plan, unless an error."""
    from schedc.plan.resolve import resolve

    plan, found = resolve(front.parsed.file, tree, placeholders=front.placeholders, source=front.name, checked=True)
    diagnostics = _sorted(front.diagnostics + found, front.name)
    return replace(front, diagnostics=diagnostics, plan=None if has_errors(diagnostics) else plan, model=model, tree=tree)


def _bind(parsed: ParseResult, model, base_dir: Path):
    """((model, tree) or None, diagnostics): the model asked for, loaded and discovered."""
    if model is None:
        return None, []
    if model is FROM_DIRECTIVE or isinstance(model, str):
        from schedc.plan.binding import bind_model

        return bind_model(parsed.file, None if model is FROM_DIRECTIVE else model, base_dir)
    from schedc.plan.binding import model_and_state
    from schedc.plan.params import discover

    return (model, discover(model_and_state(model)[0])), []


def _sorted(diagnostics, name: str) -> list[Diagnostic]:
    return sorted((d.in_file(name) for d in diagnostics), key=sort_key)


# ---------------------------------------------------------------- placeholders


def bind_placeholders(parsed: ParseResult, placeholders: dict) -> dict:
    """Placeholder values ready for the checks: schedule text parsed, never spliced into the text.

    The one place where a `$name`'s value becomes part of the program: a string is parsed on
    its own as ONE expression (a schedule such as `"cosine(0.1 -> 0.001)"`), so it can never
    add statements, and its nodes take the span of the placeholder's first use, so problems
    inside the value point at the placeholder. Numbers (any real: int, float, numpy or JAX
    scalar), bools and syntax nodes become nodes in `lang.program.as_node`. Objects the
    language cannot write are kept as they are (the resolver binds them as `nodes.Bound`),
    checked against where the placeholder stands: an optax GradientTransformation after
    `optimizer` (an optax factory there becomes its name), an optax schedule function in an
    expression (a learning rate), an array as an `init P = $x` value.

    Raises:
        TypeError: for a value that does not fit where its placeholder stands, and for a value
            given for a name the program has no placeholder of (a misspelt `--set` would
            otherwise be dropped silently, its run made with another value).
        SchedError: for schedule text that does not parse.
    """
    if not placeholders:  # (the three walks of the file below would find where none stands)
        return {}
    from schedc.lang import nodes as n
    from schedc.lang.program import as_node, with_span

    uses = {}
    for node in n.walk(parsed.file):
        if isinstance(node, n.Placeholder):
            uses.setdefault(node.id, node.span)
    if parsed.ok:  # (a file that does not parse may have lost the statement that uses one)
        _known(placeholders, uses)
    roles = _roles(parsed.file)
    out = {}
    for key, value in placeholders.items():
        name = key.lstrip("$")
        if isinstance(value, str) and roles.get(name) == {"optimizer"}:
            node = parse_optimizer(value)
            if node is None:
                raise _misplaced(name, "optimizer", repr(value))
            out[name] = with_span(node, uses.get(name, n.NO_SPAN))
        elif isinstance(value, str):
            try:
                expr = parse_expression(value)
            except SchedError as err:  # the note is rendered with the diagnostics (`schedc run --set` prints them)
                note = f"in the value of placeholder `${name}`"
                raise SchedError([replace(d, notes=d.notes + (note,)) for d in err.diagnostics], err.sources) from None
            out[name] = with_span(expr, uses.get(name, n.NO_SPAN))
        elif as_node(value) is not None:
            if "optimizer" in roles.get(name, ()):  # (a number or a bool is no optimizer)
                raise _misplaced(name, "optimizer", repr(value))
            out[name] = value
        else:
            out[name] = _object(name, value, roles.get(name, set()))
    return out


def _known(placeholders: dict, uses: dict) -> None:
    """TypeError for a value given for a name that is no `$placeholder` of the file."""
    from schedc.lang.diagnostics import did_you_mean

    for key in placeholders:
        name = key.lstrip("$")
        if name not in uses:
            hint = did_you_mean(f"${name}", [f"${other}" for other in uses])
            has = ", ".join(f"${other}" for other in uses) or "none"
            raise TypeError(f"a value was given for `${name}`, which is not a placeholder of this program ({hint or f'its placeholders: {has}'})")


def _misplaced(name: str, role: str, shown: str) -> TypeError:
    """The error for a placeholder value that does not fit where the placeholder stands."""
    return TypeError(f"placeholder ${name} stands {_WHERE[role]}: expected {_ACCEPTS[role]}, got {shown}")


# what a placeholder standing in each role accepts besides numbers and text, for the error message
_ACCEPTS = {
    "optimizer": "an optax GradientTransformation (optax.sgd(0.1)) or optax factory (optax.adam), or optimizer text (\"sgd(momentum=0.9)\")",
    "init": "a number or an array of the parameter's shape",
    "expression": "a number, schedule text (\"cosine(0.1 -> 0)\") or an optax schedule function",
}
_WHERE = {"optimizer": "after `optimizer` or in `chain(...)`", "init": "as an init value", "expression": "in an expression"}


def _roles(file) -> dict[str, set[str]]:
    """Placeholder name -> where it stands: after `optimizer` (or in its `chain(...)`), as an `init P = $x` value, or in an expression."""
    from schedc.check.arguments import optimizer_members
    from schedc.lang import nodes as n

    special: dict[int, str] = {}
    for node in n.walk(file):
        optimizer = node.value if isinstance(node, n.Directive) and node.keyword == "optimizer" else getattr(node, "optimizer", None)
        for member in optimizer_members(optimizer):  # `optimizer $opt`, or `$opt` in a `chain(...)`, nested or not
            if isinstance(member, n.Placeholder):
                special[id(member)] = "optimizer"
        if isinstance(node, n.Init) and node.kind == "value" and isinstance(node.value, n.Placeholder):
            special[id(node.value)] = "init"
    roles: dict[str, set[str]] = {}
    for node in n.walk(file):
        if isinstance(node, n.Placeholder):
            roles.setdefault(node.id, set()).add(special.get(id(node), "expression"))
    return roles


def _object(name: str, value, roles: set[str]):
    """A placeholder value the language cannot write, checked against every place it stands.

    Recognised without importing optax or JAX (the front end stays JAX-free): an optax object
    by its `init`/`update`, a factory as an attribute of the already imported optax module."""
    import sys

    from schedc.lang import nodes as n

    optax = sys.modules.get("optax")
    kind, accepted = None, value
    if callable(getattr(value, "init", None)) and callable(getattr(value, "update", None)):
        kind = "optimizer"
    elif callable(value) and optax is not None and getattr(optax, getattr(value, "__name__", ""), None) is value:
        kind, accepted = "optimizer", n.Name(value.__name__)  # an optax factory: by name, its keywords checked
    elif callable(value):
        kind = "expression"
    elif _real_array(value):
        kind = "init"
    wrong = sorted(roles - {kind}) if kind else sorted(roles) or ["expression"]
    if kind is None or wrong:
        raise _misplaced(name, wrong[0], type(value).__name__)
    return accepted


def _real_array(value) -> bool:
    """A numpy/JAX array (or nested list) of real numbers."""
    if isinstance(value, (list, tuple)):
        import numpy as np

        value = np.asarray(value)
    kind = getattr(getattr(value, "dtype", None), "kind", None)
    return hasattr(value, "shape") and kind in ("f", "i", "u")


def parse_optimizer(text: str):
    """Optimizer text (`adam`, `sgd(momentum=0.9)`, `chain(clip(1.0), adam)`) as the node an
    `optimizer` directive holds, or None when it is not one."""
    from schedc.lang import nodes as n

    parsed = parse("optimizer " + text)
    items = parsed.file.items
    if parsed.diagnostics or len(items) != 1 or not isinstance(items[0], n.Directive) or isinstance(items[0].value, n.Placeholder):
        return None
    return items[0].value


# ---------------------------------------------------------------- one expression

_PREFIX = "lr "  # an expression is parsed as an `lr` directive, then positions are shifted back
EXPRESSION_NAME = "<schedule>"


def parse_expression(text: str, names: dict | None = None):
    """Parse one schedule expression; `names` bind `let`-style names and `$placeholders` to numbers.

    Raises:
        SchedError: on syntax errors and unbound names, rendered against the expression.
        TypeError: for a name bound to something other than a number.
    """
    from schedc.check.arguments import free_names
    from schedc.check.names import unbound
    from schedc.lang import nodes as n
    from schedc.lang.expr import substitute
    from schedc.lang.program import number_node

    parsed = parse(_PREFIX + text)
    diags = [_shift(d) for d in parsed.diagnostics]
    items = parsed.file.items
    expr = None
    if not diags:
        if len(items) == 1 and isinstance(items[0], n.Directive) and items[0].keyword == "lr":
            expr = items[0].value
        else:
            extra = items[1] if len(items) > 1 else items[0]
            diags.append(_shift(unexpected("expected one schedule expression", extra.span)))
    if expr is not None:
        env = {}
        for key, value in (names or {}).items():
            node = number_node(value)
            if node is None:
                raise TypeError(f"name {key!r} must be bound to a number, got {type(value).__name__}")
            env[key] = env["$" + key] = node
        expr = substitute(expr, env)
        diags += [_shift(d) for d in unbound(free_names(expr), names or {})]
    _raise_errors(diags, text)
    return expr


def analyse_expression(text: str, steps: int, names: dict | None = None):
    """`parse_expression`, then the schedule checks for a run of `steps` steps (`schedc.schedule`).

    Raises:
        SchedError: with every problem, rendered against the expression.
        ValueError: for `steps` that is not a positive integer.
    """
    from schedc.check.arguments import check_schedule

    expr = parse_expression(text, names)
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    _raise_errors([_shift(d) for d in check_schedule(expr, steps)], text)
    return expr


def _raise_errors(diags: list[Diagnostic], text: str) -> None:
    errors = [d.in_file(EXPRESSION_NAME) for d in diags if d.is_error]
    if errors:
        raise SchedError(errors, {EXPRESSION_NAME: Source(EXPRESSION_NAME, text)})


def _shift(d: Diagnostic) -> Diagnostic:
    """Positions in `lr TEXT` -> positions in TEXT."""
    from schedc.lang import nodes as n

    def move(span: n.Span) -> n.Span:
        k = len(_PREFIX)
        return n.Span(
            span.line,
            max(1, span.column - k) if span.line == 1 else span.column,
            span.end_line,
            max(1, span.end_column - k) if span.end_line == 1 else span.end_column,
            max(0, span.start - k),
            max(0, span.end - k),
        )

    return replace(d, span=move(d.span), labels=tuple(replace(l, span=move(l.span)) for l in d.labels))
