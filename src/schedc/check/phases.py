"""Rules about phases and what their bodies say: step counts (E0203), repeat counts and the
total number of phases (E0211), a learning rate for every optimizer that needs one (E0215),
stop metrics (E0108), a file without a phase (W0108); the learning rates, optimizers, inits and stop thresholds themselves go
to the argument checker with the facts of their phase (its length, whether it has a learning rate)."""

from __future__ import annotations

from schedc.check import catalog
from schedc.check.arguments import needs_learning_rate, optimizer_name
from schedc.check.context import PhaseFacts
from schedc.check.lint import Rule
from schedc.lang import nodes as n
from schedc.lang.diagnostics import Diagnostic, did_you_mean
from schedc.lang.expr import show
from schedc.lang.program import MAX_PHASES, header_span, phase_count


class Phases(Rule):
    """A phase's step count, learning rate and optimizer; sets the facts its statements' rules read."""

    def visit_Phase(self, phase: n.Phase) -> None:
        ctx = self.ctx
        label = f"phase `{phase.name.id}`" if phase.name else f"the phase at line {phase.span.line}"
        lr = ctx.inherited(phase.lr, "lr")
        facts = ctx.phase = PhaseFacts(has_lr=lr is not None)
        facts.steps = self._steps(phase)
        if lr is not None:
            ctx.args.learning_rate(ctx.closed(lr), facts.steps)
        if phase.accumulate is not None:
            ctx.args.accumulate(ctx.closed(phase.accumulate))
        if phase.ema is not None:
            ctx.args.ema(ctx.closed(phase.ema))
        opt = ctx.inherited(phase.optimizer, "optimizer")
        if opt is not None:
            ctx.args.optimizer(opt, facts.steps)
        if phase.lr is not None:
            ctx.args.lr_not_taken(opt, phase.lr)
        if not facts.has_lr and needs_learning_rate(opt):
            ctx.report(Diagnostic("E0215", f"{label} has no learning rate and `{optimizer_name(opt)}` needs one", header_span(phase), help="add `lr VALUE` after the step count, or an `lr` directive"))

    def _steps(self, phase: n.Phase) -> int | None:
        """The phase's step count, or None (reported) when it is not a valid one, or unknown
        before the data is seen (a length in epochs: checked by schedc.check.data)."""
        if phase.unit == "epochs":
            return None
        steps = self.ctx.closed(phase.steps)
        value = self.ctx.args.value(steps)
        if value is None:
            return None
        if not isinstance(value, int) or isinstance(value, bool):
            whole = isinstance(value, float) and value.is_integer() and value > 0
            self.ctx.report(Diagnostic("E0203", f"steps must be a positive integer, got {show(value)}", steps.span, help=f"write {int(value)}" if whole else None))
            return None
        if value <= 0:
            self.ctx.report(Diagnostic("E0203", f"steps must be a positive integer, got {value}", steps.span))
            return None
        if value > catalog.MAX_STEPS:
            self.ctx.report(Diagnostic("E0203", f"{value} steps is more than the largest step count ({catalog.MAX_STEPS})", steps.span))
            return None
        return value


class RepeatCounts(Rule):
    """E0211: `repeat N` takes a whole N from 1 to 100000."""

    def visit_Repeat(self, rep: n.Repeat) -> None:
        count = self.ctx.closed(rep.count)
        value = self.ctx.args.value(count)
        if value is None:
            return
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            self.ctx.report(Diagnostic("E0211", f"a repeat count must be an integer >= 1, got {show(value)}", count.span))
        elif value > 100_000:
            self.ctx.report(Diagnostic("E0211", f"repeat count {value} is too large (at most 100000)", count.span))


class Groups(Rule):
    """A `free ... lr X optimizer O` group: its learning rate and optimizer, in its phase's span."""

    def visit_Free(self, stmt: n.Free) -> None:
        ctx, phase = self.ctx, self.ctx.phase
        if stmt.lr is not None:
            ctx.args.learning_rate(ctx.closed(stmt.lr), phase.steps)
        if stmt.optimizer is not None:
            ctx.args.optimizer(stmt.optimizer, phase.steps)
            if stmt.lr is None and not phase.has_lr and needs_learning_rate(stmt.optimizer):
                ctx.report(Diagnostic("E0215", f"this group has no learning rate and `{optimizer_name(stmt.optimizer)}` needs one", stmt.span, help="add `lr VALUE` to the statement or the phase"))


class Inits(Rule):
    """`init P ~ dist(...)`, `init P = value` and params `init dist(...) at P`."""

    def visit_Init(self, stmt: n.Init) -> None:
        if stmt.kind == "dist":
            self.ctx.args.distribution(stmt.value)
        elif stmt.kind == "value":
            self.ctx.args.expression(self.ctx.closed(stmt.value), "init")

    def visit_Spec(self, spec: n.Spec) -> None:
        if spec.dist is not None:
            self.ctx.args.distribution(spec.dist)


class StopRules(Rule):
    """E0108 for an unknown metric; the threshold and the `over`/`after` windows."""

    def visit_Stop(self, stop: n.Stop) -> None:
        ctx = self.ctx
        metric = stop.metric.id
        if metric.startswith(catalog.METRIC_PREFIX):
            ctx.args.value(ctx.closed(stop.threshold))
            return  # an evaluation metric: schedc.check.data
        if metric not in catalog.STOP_METRICS:
            ctx.report(Diagnostic("E0108", f"unknown stop metric `{metric}`", stop.metric.span, help=did_you_mean(metric, catalog.STOP_METRICS), notes=("metrics: " + ", ".join(f"`{m}`" for m in catalog.STOP_METRICS),)))
        ctx.args.stop_threshold(metric, ctx.closed(stop.threshold))
        for word, expr, least in (("over", stop.over, 1), ("after", stop.after, 0)):
            if expr is not None and not isinstance(ctx.closed(expr), n.Epochs):  # epochs: schedc.check.data
                ctx.args.stop_window(word, ctx.closed(expr), least)


class PhaseTotal(Rule):
    """E0211 at the item whose expansion takes the file past MAX_PHASES phases in all."""

    def finish(self) -> None:
        total = 0
        try:
            for item in self.ctx.file.items:
                total += phase_count((item,), self.ctx.count) if isinstance(item, (n.Phase, n.Repeat)) else 0
                if total > MAX_PHASES:
                    span = header_span(item) if isinstance(item, n.Phase) else item.count.span
                    self.ctx.report(Diagnostic("E0211", f"the file expands to more than {MAX_PHASES} phases in all", span, help="use fewer or shorter `repeat`s (a phase can run many steps)"))
                    return
        except RecursionError:  # repeats nested beyond the host's stack: the phases are unknowable
            return


class NoPhases(Rule):
    """W0108: a file that expands to no phase trains nothing (`run` returns the model as it came,
    never what its author meant); said at its first `repeat` (an empty block) if it has one."""

    def finish(self) -> None:
        ctx = self.ctx
        if ctx.partial or ctx.phases is None or ctx.phases:  # items lost to a syntax error; past the cap
            return
        repeat = next((item for item in ctx.file.items if isinstance(item, n.Repeat)), None)
        span = repeat.span if repeat is not None else n.NO_SPAN
        ctx.report(Diagnostic("W0108", "the schedule has no phases: running it trains nothing", span, help="add one, e.g. `phase 100 lr 0.01 < free PATTERN >`"))
