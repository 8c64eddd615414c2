"""Rules about names: `let` definitions (E0102, W0101), undefined names (E0101) and unbound
placeholders (E0110).

The argument checker asks `undefined_name` about every name it meets in a value;
`schedc.schedule` asks `unbound` about the names left in a standalone expression.
"""

from __future__ import annotations

from schedc.check import catalog
from schedc.check.lint import Rule
from schedc.lang import nodes as n
from schedc.lang.diagnostics import Diagnostic, Label, did_you_mean
from schedc.lang.expr import MAX_EXPR_NODES
from schedc.lang.syntax import beyond_limits


def duplicate_let(let: n.Let, first: n.Let) -> Diagnostic:
    return Diagnostic("E0102", f"`{let.name.id}` is already defined", let.name.span, labels=(Label(first.name.span, "first defined here"),), help="rename one of them")


def unused_let(let: n.Let) -> Diagnostic:
    return Diagnostic("W0101", f"`{let.name.id}` is never used", let.name.span, help="remove it, or use it")


def used_before_definition(name: n.Name, let: n.Let) -> Diagnostic:
    return Diagnostic("E0101", f"`{name.id}` is used before its definition", name.span, labels=(Label(let.name.span, "defined here"),), help="move the `let` above its first use")


def undefined_name(name: n.Name, candidates, binding_help: str | None = None) -> Diagnostic:
    """E0101. `candidates`: the names that could be meant; `binding_help`: how to bind a name
    where there is no `let` (schedc.schedule's keyword arguments)."""
    help = did_you_mean(name.id, candidates) or binding_help
    if help is None and name.id in catalog.SCHEDULES:
        help = f"`{name.id}` is a schedule: call it, `{catalog.SCHEDULES[name.id].usage()}`"
    return Diagnostic("E0101", f"undefined name `{name.id}`", name.span, help=help)


def unbound_placeholder(node: n.Placeholder, binding_help: str) -> Diagnostic:
    return Diagnostic("E0110", f"placeholder `${node.id}` is not bound", node.span, help=binding_help)


def file_binding_help(name: str) -> str:
    return f"pass `{name}=...` when compiling the schedule from Python, or `--set {name}=VALUE` to schedc run, show or plot"


def unbound(free: list, bound: dict) -> list[Diagnostic]:
    """E0101/E0110 for the names and placeholders left in a standalone expression (schedc.schedule).

    Args:
        free: the Name and Placeholder nodes left after substitution (`arguments.free_names`).
        bound: the names the caller did bind (for `did you mean`).
    """
    diags = []
    for node in free:
        help = f"bind it: schedc.schedule(..., {node.id}=VALUE)"
        if isinstance(node, n.Placeholder):
            diags.append(unbound_placeholder(node, help))
        else:
            diags.append(undefined_name(node, bound, help))
    return diags


# ---------------------------------------------------------------- rules


class LetDefinitions(Rule):
    """E0102 for a name defined twice; E0005 for a value too large once substituted; every other
    `let` value checked once, as it was closed at its place."""

    def visit_Let(self, let: n.Let) -> None:
        ctx = self.ctx
        first = ctx.lets[let.name.id]
        if first is not let:
            ctx.report(duplicate_let(let, first))
        if let.name.id in ctx.oversized:
            if first is let:
                message = f"`{let.name.id}` expands to more than {MAX_EXPR_NODES} nodes once the `let`s in it are substituted"
                ctx.report(beyond_limits(message, let.name.span, help="compute the value in Python and pass it as a `$placeholder`, or write it out"))
            return
        # the first definition is the very value its uses substitute, so what is wrong inside it is found once
        ctx.args.expression(ctx.env[let.name.id] if first is let else ctx.closed(let.value), "any")


class UnusedLets(Rule):
    """W0101 for a `let` no expression names."""

    def __init__(self, ctx):
        super().__init__(ctx)
        self.used: set[str] = set()
        self.definitions = {id(let.name) for let in ctx.lets.values()}

    def visit_Name(self, node: n.Name) -> None:
        if id(node) not in self.definitions:
            self.used.add(node.id)

    def finish(self) -> None:
        for name, let in self.ctx.lets.items():
            if name not in self.used:
                self.ctx.report(unused_let(let))


class UnboundPlaceholders(Rule):
    """E0110 for a `$name` the caller did not bind, unless the file is linted: there it is an
    unknown of the kind its place says, bound when the file runs (`schedc run --set`, Python)."""

    def visit_Placeholder(self, node: n.Placeholder) -> None:
        if node.id not in self.ctx.bound and not self.ctx.open_placeholders:
            self.ctx.report(unbound_placeholder(node, file_binding_help(node.id)))
