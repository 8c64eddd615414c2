"""Model-free checks of training on data: `batch`, `N epochs`, `validation`, `eval ... every`,
stop rules on evaluation metrics (`val.NAME`) and `keep best`.

Plain Python, no JAX. Whether the data really has a leading example axis, how
many examples it holds and which metrics the metrics function returns is only
known at run time (the runtime reports those, naming the phase).
"""

from __future__ import annotations

from schedc.check import catalog
from schedc.lang import nodes as n
from schedc.lang.diagnostics import Diagnostic, did_you_mean
from schedc.lang.expr import constant, substitute, uses_epochs
from schedc.lang.program import header_span


def check_data(file: n.File, env: dict) -> list[Diagnostic]:
    """Every problem of the data forms of `file` (`env`: the closed `let`s and placeholders)."""
    return _DataChecker(file, env).run()


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class _DataChecker:
    def __init__(self, file: n.File, env: dict):
        self.file, self.env = file, env
        self.diags: list[Diagnostic] = []
        self.directives = {}
        for item in file.items:
            if isinstance(item, n.Directive):
                self.directives.setdefault(item.keyword, item)

    def error(self, code: str, message: str, span: n.Span, **kw) -> None:
        self.diags.append(Diagnostic(code, message, span, **kw))

    def value(self, expr):
        """The constant value of `expr` after substitution, or None (a placeholder, a schedule: not ours to report)."""
        return constant(substitute(expr, self.env))

    def run(self) -> list[Diagnostic]:
        for item in self.file.items:
            if isinstance(item, n.Directive):
                self.directive(item)
        for node in n.walk(self.file):
            if isinstance(node, n.Phase):
                self.phase(node)
            elif isinstance(node, n.Epochs):
                self.epoch_count(node.count, "a duration in epochs")
        return self.diags

    # ---- directives

    def directive(self, d: n.Directive) -> None:
        if d.keyword == "batch":
            self.batch_size(d.value)
        elif d.keyword == "eval" and d.every is not None and d.every.count is not None:
            value = self.value(d.every.count)
            if value is not None and (not _is_int(value) or value < 1):
                self.error("E0219", f"an evaluation interval must be a whole number >= 1, got {value:g}", d.every.count.span, help="write `every 200 steps`, `every epoch` or `every 2 epochs`")

    def batch_size(self, expr) -> None:
        value = self.value(expr)
        if value is not None and (not _is_int(value) or value < 1):
            self.error("E0217", f"a batch size must be a whole number >= 1, got {value:g}", expr.span)

    def epoch_count(self, expr, what: str) -> None:
        value = self.value(expr)
        if value is not None and not value > 0:
            self.error("E0218", f"{what} must count more than 0 epochs, got {value:g}", expr.span)

    # ---- phases

    def phase(self, phase: n.Phase) -> None:
        if phase.batch is not None:
            self.batch_size(phase.batch)
        if phase.unit == "epochs":
            self.epoch_count(phase.steps, "a phase length")
        counts_epochs = phase.unit == "epochs" or any(uses_epochs(e) for e in self._expressions(phase))
        if counts_epochs and phase.batch is None and "batch" not in self.directives:
            self.diags.append(
                Diagnostic(
                    "W0106",
                    "this phase counts epochs but no batch size is given: with arrays an epoch is then one full-batch step",
                    header_span(phase),
                    help="add a `batch N` directive (or `batch N` after the phase length); an iterable of batches needs none",
                )
            )
        for stmt in phase.body:
            if isinstance(stmt, n.Stop) and stmt.metric.id.startswith(catalog.METRIC_PREFIX):
                self.metric(stmt.metric, "a stop rule")
                for word, expr in (("over", stmt.over), ("after", stmt.after)):
                    if expr is not None:
                        self.error("E0220", f"`{word}` applies to `loss_change` rules; `{stmt.metric.id}` is tested at every evaluation", expr.span, help=f"remove `{word} ...`")
            elif isinstance(stmt, n.StopImproving):
                self.metric(stmt.metric, "a stop rule")
                self.word(stmt.trend, catalog.TRENDS, "stops")
                patience = self.value(stmt.patience)
                if patience is not None and (not _is_int(patience) or patience < 1):
                    self.error("E0213", f"the patience must be a whole number of evaluations >= 1, got {patience:g}", stmt.patience.span)
            elif isinstance(stmt, n.Keep):
                self.word(stmt.which, catalog.KEEP_WHICH, "keep")
                self.metric(stmt.metric, "`keep`")

    def _expressions(self, phase: n.Phase):
        yield from (phase.lr, phase.optimizer)
        for stmt in phase.body:
            if isinstance(stmt, n.Free):
                yield from (stmt.lr, stmt.optimizer)
            elif isinstance(stmt, n.Stop):
                yield from (stmt.over, stmt.after)

    def metric(self, name: n.Name, what: str) -> None:
        """A metric named by a stop rule or `keep`: `val.NAME`, with an `eval` directive to produce it."""
        if not name.id.startswith(catalog.METRIC_PREFIX):
            self.error("E0113", f"{what} needs an evaluation metric `val.NAME`, got `{name.id}`", name.span, help=f"write `val.{name.id}` for the `{name.id}` entry of the metrics function")
        elif "eval" not in self.directives:
            self.error("E0112", f"`{name.id}` needs an evaluation: no `eval` directive names the metrics function", name.span, help='add `eval "file.py:metrics" every epoch` (and `validation "file.py:fn"` for its data)')

    def word(self, name: n.Name, choices: dict, after: str) -> None:
        if name.id not in choices:
            self.error("E0114", f"`{after} {name.id}` is not known; expected {', '.join(f'`{c}`' for c in choices)}", name.span, help=did_you_mean(name.id, choices))
