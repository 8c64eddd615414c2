"""Rules about training on data: `batch`, `N epochs`, `validation`, `eval ... every`, stop rules
on evaluation metrics (`val.NAME`) and `keep best`.

Plain Python, no JAX. Whether the data really has a leading example axis, how
many examples it holds and which metrics the metrics function returns is only
known at run time (the runtime reports those, naming the phase).
"""

from __future__ import annotations

from schedc.check import catalog
from schedc.check.lint import Rule
from schedc.lang import nodes as n
from schedc.lang.diagnostics import Diagnostic, did_you_mean
from schedc.lang.expr import constant, uses_epochs
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


class DataDirectives(Rule):
    """E0217 for a `batch` directive that is not a whole number >= 1; E0219 for an `eval` interval."""

    def visit_Directive(self, d: n.Directive) -> None:
        if d.keyword == "batch":
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
    evaluation metrics: `stop when val.M ...` (E0112, E0113, E0114, E0220) and `keep` (E0114)."""

    def visit_Phase(self, phase: n.Phase) -> None:
        ctx = self.ctx
        if phase.batch is not None:
            _batch_size(ctx, phase.batch)
        if phase.unit == "epochs":
            _epoch_count(ctx, phase.steps, "a phase length")
        counts_epochs = phase.unit == "epochs" or any(uses_epochs(e) for e in _expressions(phase))
        if counts_epochs and phase.batch is None and "batch" not in ctx.directives:
            ctx.report(
                Diagnostic(
                    "W0106",
                    "this phase counts epochs but no batch size is given: with arrays an epoch is then one full-batch step",
                    header_span(phase),
                    help="add a `batch N` directive (or `batch N` after the phase length); an iterable of batches needs none",
                )
            )
        for stmt in phase.body:
            if isinstance(stmt, n.Stop) and stmt.metric.id.startswith(catalog.METRIC_PREFIX):
                self._metric(stmt.metric, "a stop rule")
                for word, expr in (("over", stmt.over), ("after", stmt.after)):
                    if expr is not None:
                        ctx.report(Diagnostic("E0220", f"`{word}` applies to `loss_change` rules; `{stmt.metric.id}` is tested at every evaluation", expr.span, help=f"remove `{word} ...`"))
            elif isinstance(stmt, n.StopImproving):
                self._metric(stmt.metric, "a stop rule")
                self._word(stmt.trend, catalog.TRENDS, "stops")
                ctx.args.patience(ctx.closed(stmt.patience))
            elif isinstance(stmt, n.Keep):
                self._word(stmt.which, catalog.KEEP_WHICH, "keep")
                self._metric(stmt.metric, "`keep`")

    def _metric(self, name: n.Name, what: str) -> None:
        """A metric named by a stop rule or `keep`: `val.NAME`, with an `eval` directive to produce it."""
        if not name.id.startswith(catalog.METRIC_PREFIX):
            self.ctx.report(Diagnostic("E0113", f"{what} needs an evaluation metric `val.NAME`, got `{name.id}`", name.span, help=f"write `val.{name.id}` for the `{name.id}` entry of the metrics function"))
        elif "eval" not in self.ctx.directives:
            self.ctx.report(Diagnostic("E0112", f"`{name.id}` needs an evaluation: no `eval` directive names the metrics function", name.span, help='add `eval "file.py:metrics" every epoch` (and `validation "file.py:fn"` for its data)'))

    def _word(self, name: n.Name, choices: dict, after: str) -> None:
        if name.id not in choices:
            self.ctx.report(Diagnostic("E0114", f"`{after} {name.id}` is not known; expected {', '.join(f'`{c}`' for c in choices)}", name.span, help=did_you_mean(name.id, choices)))


def _expressions(phase: n.Phase):
    yield from (phase.lr, phase.optimizer)
    for stmt in phase.body:
        if isinstance(stmt, n.Free):
            yield from (stmt.lr, stmt.optimizer)
        elif isinstance(stmt, n.Stop):
            yield from (stmt.over, stmt.after)
