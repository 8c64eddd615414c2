"""Rules about training on data: `batch`, `N epochs`, `validation`, `eval ... every`, stop rules
on evaluation metrics (`val.NAME`) and `keep best`.

Plain Python, no JAX. Whether the data really has a leading example axis, how
many examples it holds and which metrics the metrics function returns is only
known at run time (the runtime reports those, naming the phase).
"""

from __future__ import annotations

from schedc.check import catalog
from schedc.check.arguments import ArgumentChecker
from schedc.check.lint import Rule
from schedc.lang import nodes as n
from schedc.lang.diagnostics import Diagnostic, did_you_mean
from schedc.lang.expr import constant, describe, plateau_factor, plateau_metric, rewrite, uses_epochs
from schedc.lang.program import header_span


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _value(ctx, expr):
    """The constant value of `expr` after substitution, or None (a placeholder, a schedule: not ours to report)."""
    return constant(ctx.closed(expr))


def _batch_size(ctx, expr) -> None:
    value = _value(ctx, expr)
    if value is not None and (not _is_int(value) or value < 1):
        ctx.report(Diagnostic("E0217", f"a batch size must be a whole number >= 1, got {value:g}", expr.span))


def _epoch_count(ctx, expr, what: str) -> None:
    value = _value(ctx, expr)
    if value is not None and not value > 0:
        ctx.report(Diagnostic("E0218", f"{what} must count more than 0 epochs, got {value:g}", expr.span))


def _plateau_on(ctx, lr):
    """The `on=` value of a learning rate's `plateau(on=val.M, ...)` factor (a `let` substituted), or None."""
    if lr is None:
        return None
    _, call = plateau_factor(ctx.closed(lr))
    return plateau_metric(call)[1] if call is not None else None


class DataDirectives(Rule):
    """E0217 for a `batch` directive that is not a whole number >= 1; E0219 for an `eval` interval;
    the metric of an `lr` directive's `plateau(on=val.M)` (E0112, E0113, W0107: see DataPhases)."""

    def visit_Directive(self, d: n.Directive) -> None:
        if d.keyword == "lr":
            _plateau_metric(self.ctx, d.value)
        elif d.keyword == "batch":
            _batch_size(self.ctx, d.value)
        elif d.keyword == "eval" and d.every is not None and d.every.count is not None:
            value = _value(self.ctx, d.every.count)
            if value is not None and (not _is_int(value) or value < 1):
                self.ctx.report(Diagnostic("E0219", f"an evaluation interval must be a whole number >= 1, got {value:g}", d.every.count.span, help="write `every 200 steps`, `every epoch` or `every 2 epochs`"))


class EpochCounts(Rule):
    """E0218: a duration `N epochs` counts more than 0 epochs."""

    def visit_Epochs(self, node: n.Epochs) -> None:
        _epoch_count(self.ctx, node.count, "a duration in epochs")


class DataPhases(Rule):
    """A phase's `batch` and length in epochs (W0106 without a batch size), and its rules on
    evaluation metrics: `stop when val.M ...` (E0112, E0113, E0114, E0220), `keep` (E0114) and
    `lr E * plateau(on=val.M)` (E0112, E0113, W0107), in a phase that evaluates at least once (E0222);
    its schedules counted in epochs (E0207, E0212)."""

    def visit_Phase(self, phase: n.Phase) -> None:
        ctx = self.ctx
        if phase.batch is not None:
            _batch_size(ctx, phase.batch)
        if phase.unit == "epochs":
            _epoch_count(ctx, phase.steps, "a phase length")
            _schedules_in_epochs(ctx, phase)
        self._evaluated(phase)
        if counts_epochs(phase) and phase.batch is None and "batch" not in ctx.directives:
            ctx.report(
                Diagnostic(
                    "W0106",
                    "this phase counts epochs but no batch size is given: with arrays an epoch is then one full-batch step",
                    header_span(phase),
                    help="add a `batch N` directive (or `batch N` after the phase length); an iterable of batches needs none",
                )
            )
        if phase.lr is not None:  # the `lr` directive's is checked once, at the directive
            _plateau_metric(ctx, phase.lr)
        for stmt in phase.body:
            if isinstance(stmt, n.Free):
                _plateau_metric(ctx, stmt.lr)
            elif isinstance(stmt, n.Stop) and _names_metric(stmt.metric):
                _metric(ctx, stmt.metric, "a stop rule")
                for word, expr in (("over", stmt.over), ("after", stmt.after)):
                    if expr is not None:
                        ctx.report(Diagnostic("E0220", f"`{word}` applies to `loss_change` rules; `{stmt.metric.id}` is tested at every evaluation", expr.span, help=f"remove `{word} ...`"))
            elif isinstance(stmt, n.StopImproving):
                _metric(ctx, stmt.metric, "a stop rule")
                self._word(stmt.trend, catalog.TRENDS, "stops")
                ctx.args.patience(ctx.closed(stmt.patience))
            elif isinstance(stmt, n.Keep):
                self._word(stmt.which, catalog.KEEP_WHICH, "keep")
                _metric(ctx, stmt.metric, "`keep`")

    def _evaluated(self, phase: n.Phase) -> None:
        """E0222: a phase with rules on evaluation metrics that ends before its first evaluation
        (its length and the `eval` interval both constant, in one unit)."""
        ruled = [s.metric for s in phase.body if isinstance(s, (n.Stop, n.StopImproving, n.Keep)) and _names_metric(s.metric)]
        lrs = [self.ctx.inherited(phase.lr, "lr")] + [s.lr for s in phase.body if isinstance(s, n.Free)]
        ruled += [on for on in (_plateau_on(self.ctx, lr) for lr in lrs) if _names_metric(on)]
        directive = self.ctx.directives.get("eval")
        if not ruled or directive is None or directive.every is None:
            return
        every = 1 if directive.every.count is None else _value(self.ctx, directive.every.count)
        length = _value(self.ctx, phase.steps)
        if every is None or length is None or directive.every.unit != phase.unit or not length < every:
            return
        unit = phase.unit if length != 1 else phase.unit.rstrip("s")
        self.ctx.report(
            Diagnostic(
                "E0222",
                f"`{ruled[0].id}` is never evaluated: this phase runs {length:g} {unit} and the `eval` directive evaluates every {every:g} {directive.every.unit}",
                header_span(phase),
                help=f"evaluate at least once per phase (`every {length:g} {unit}` or less), or lengthen the phase",
            )
        )

    def _word(self, name: n.Name, choices: dict, after: str) -> None:
        if name.id not in choices:
            self.ctx.report(Diagnostic("E0114", f"`{after} {name.id}` is not known; expected {', '.join(f'`{c}`' for c in choices)}", name.span, help=did_you_mean(name.id, choices)))


def _metric(ctx, name: n.Name, what: str) -> None:
    """A metric named by a stop rule, `keep` or `plateau(on=...)`: `val.NAME`, with an `eval` directive to produce it."""
    if not name.id.startswith(catalog.METRIC_PREFIX):
        ctx.report(Diagnostic("E0113", f"{what} needs an evaluation metric `val.NAME`, got `{name.id}`", name.span, help=f"write `val.{name.id}` for the `{name.id}` entry of the metrics function"))
    elif "eval" not in ctx.directives:
        ctx.report(Diagnostic("E0112", f"`{name.id}` needs an evaluation: no `eval` directive names the metrics function", name.span, help='add `eval "file.py:metrics" every epoch` (and `validation "file.py:fn"` for its data)'))


def _names_metric(on) -> bool:
    """Whether `on` is a name of an evaluation metric, `val.NAME`."""
    return isinstance(on, n.Name) and on.id.startswith(catalog.METRIC_PREFIX)


def _plateau_metric(ctx, lr) -> None:
    """The `on=` of a learning rate's `plateau(on=...)`: a metric `val.NAME` (E0113 for anything else, a
    bare name or a value), evaluated (E0112), that falls as the model improves (W0107 for a name such
    as `val.accuracy`)."""
    on = _plateau_on(ctx, lr)
    if on is None:
        return
    if isinstance(on, n.Name):
        _metric(ctx, on, "`plateau(on=...)`")
        if _names_metric(on) and catalog.maximised(on.id):
            ctx.report(Diagnostic(
                "W0107", f"`plateau` lowers the scale when `{on.id}` stops decreasing, and its name reads as higher-is-better", on.span,
                notes=("optax.contrib.reduce_on_plateau minimises the value it is fed",),
                help=f"return a value that falls as the model improves (its negation, an error rate) and name that: `on=val.{on.id.removeprefix(catalog.METRIC_PREFIX)}_error`",
            ))
    else:
        ctx.report(Diagnostic(
            "E0113", f"`plateau(on=...)` needs an evaluation metric `val.NAME`, got {describe(on)}", on.span,
            help="write `on=val.loss` for the `loss` entry of the metrics function; without `on` the training loss drives the plateau",
        ))


def counts_epochs(phase: n.Phase) -> bool:
    """Whether the phase's length or one of its durations is written in epochs (as written: a `let`
    holding epochs is found once the file resolves)."""
    return phase.unit == "epochs" or any(uses_epochs(e) for e in _expressions(phase))


def _schedules_in_epochs(ctx, phase: n.Phase) -> None:
    """A phase of E epochs whose schedules count their durations in epochs: the checks of the
    durations against their span (E0207 warmups, E0212 `for` durations) in epochs, model-free.
    (In steps they are checked again at run time, once the data's size is known.)"""
    epochs = _value(ctx, phase.steps)
    if not _is_int(epochs) or epochs < 1:
        return
    lrs = [ctx.inherited(phase.lr, "lr")]
    lrs += [stmt.lr for stmt in phase.body if isinstance(stmt, n.Free)]
    for lr in lrs:
        if lr is None or not uses_epochs(lr):
            continue
        counted, converted = _counted_in_epochs(ctx.closed(lr))
        if counted is None:
            continue
        found: list[Diagnostic] = []
        ArgumentChecker(found, ctx.lets, ctx.lost_lets, opaque_placeholders=True, unit="epoch").learning_rate(counted, epochs)
        for d in found:
            if d.code in ("E0207", "E0212") and d.span in converted:
                ctx.report(d)


def _counted_in_epochs(expr):
    """(`expr` with every `N epochs` read as N units, the spans of those durations), or (None, ())
    when a span inside it is cut by a duration in steps (a `for` or an sgdr period not in epochs),
    so that lengths in two units would be compared."""
    if any(not isinstance(d, n.Epochs) for node in n.walk(expr) for d in _cuts(node)):
        return None, ()
    converted = set()

    def as_units(node):
        if isinstance(node, n.Epochs) and _is_int(count := constant(node.count)):
            converted.add(node.span)
            return n.Number(count, str(count), node.span)
        return None

    return rewrite(expr, as_units), converted


def _cuts(node) -> list:
    """The durations that cut a span inside `node`: a `then`'s `for`s, an sgdr's period."""
    if isinstance(node, n.Then):
        return list(node.durations)
    if isinstance(node, n.Call) and node.func.id == "sgdr":
        return node.args[1:2] + tuple(k.value for k in node.kwargs if k.name.id == "period")
    return []


def _expressions(phase: n.Phase):
    yield from (phase.lr, phase.optimizer)
    for stmt in phase.body:
        if isinstance(stmt, n.Free):
            yield from (stmt.lr, stmt.optimizer)
        elif isinstance(stmt, n.Stop):
            yield from (stmt.over, stmt.after)
