"""Rules about directives (`model`, `seed`, `lr`, `optimizer`, `accumulate`, `ema`, `default`, ...):
each given at most once (E0216), `default` naming a status (E0111), and their values checked by
the argument checker."""

from __future__ import annotations

from schedc.check import catalog
from schedc.check.context import SINGLE_DIRECTIVES
from schedc.check.lint import Rule
from schedc.lang import nodes as n
from schedc.lang.diagnostics import Diagnostic, Label, did_you_mean, proposing


class DuplicateDirectives(Rule):
    """E0216 for a second `seed`, `lr`, `optimizer`, ... (the first one is the one used)."""

    def visit_Directive(self, d: n.Directive) -> None:
        first = self.ctx.directives.get(d.keyword)
        if d.keyword in SINGLE_DIRECTIVES and first is not d:
            self.ctx.report(Diagnostic("E0216", f"`{d.keyword}` is given more than once", d.span, labels=(Label(first.span, "first given here"),), help="keep one of them"))


class DirectiveValues(Rule):
    """`default fixed|free`, and the values of `seed`, `lr`, `optimizer`, `accumulate` and `ema` where they are written."""

    def visit_Directive(self, d: n.Directive) -> None:
        ctx = self.ctx
        if d.keyword == "default":
            value = d.value.id if isinstance(d.value, n.Name) else None
            if value not in catalog.DEFAULT_STATUSES:
                ctx.report(Diagnostic("E0111", f"`default` must be `fixed` or `free`, not `{value}`", d.value.span, help=_default_help(value)))
        elif d.keyword == "seed":
            ctx.args.seed(ctx.closed(d.value))
        elif d.keyword == "lr":
            ctx.args.learning_rate(ctx.closed(d.value), None)
        elif d.keyword == "optimizer":
            ctx.args.optimizer(d.value, None)
        elif d.keyword == "accumulate":
            ctx.args.accumulate(ctx.closed(d.value))
        elif d.keyword == "ema":
            ctx.args.ema(ctx.closed(d.value))


def _default_help(value: str) -> str | None:
    meant = catalog.DEFAULT_SYNONYMS.get(value.lower())
    return proposing([meant]) if meant else did_you_mean(value, catalog.DEFAULT_STATUSES)
