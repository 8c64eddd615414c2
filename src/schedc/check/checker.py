"""Model-free semantic checks of a parsed `.sched` file (DESIGN §3): the entry points and the rules.

`check_file` (what `schedc.pipeline` runs after the parse) walks the items that parsed (a partial tree after syntax errors is fine) once,
dispatching each node to the rules below (`schedc.check.lint`), and returns their diagnostics
sorted by position; it never raises. Each rule lives in the module named after what it checks:

  names       `let`s defined twice or never used, undefined names, unbound placeholders
  patterns    malformed parameter patterns
  directives  directives given twice, `default`, and the values of `seed`, `lr`, `optimizer`
  phases      step and repeat counts, missing learning rates, groups, inits, stop rules
  conflicts   phase names and references, contradictions and overrides between statements
  data        training on data: batch sizes, epochs, evaluations, rules on `val.` metrics
  arguments   the one argument checker every value goes through (types, ranges, schedule shapes)

Each diagnostic code has one owner among them (`CODES[code].owner`, tests/test_diagnostic_owners.py).
Model-dependent checks (E04xx, W0103, W0105) belong to `schedc.plan.resolve`. Nothing here
imports JAX: optimizer signatures come from the generated `schedc.check._optax_table`.
"""

from __future__ import annotations

from schedc.check import conflicts, data, directives, lint, names, patterns, phases
from schedc.check.context import Context
from schedc.lang import nodes as n
from schedc.lang.diagnostics import Diagnostic, sort_key
from schedc.lang.syntax import ParseResult, beyond_limits

RULES: tuple[type[lint.Rule], ...] = (
    names.LetDefinitions,
    names.UnusedLets,
    names.UnboundPlaceholders,
    patterns.MalformedPatterns,
    directives.DuplicateDirectives,
    directives.DirectiveValues,
    phases.Phases,
    phases.RepeatCounts,
    phases.PhaseTotal,
    phases.NoPhases,
    phases.Groups,
    phases.Inits,
    phases.StopRules,
    conflicts.PhaseNames,
    conflicts.Conflicts,
    data.DataDirectives,
    data.EpochCounts,
    data.DataPhases,
)


def check_file(parsed: ParseResult, placeholders: dict | None = None, *, open_placeholders: bool = False) -> list[Diagnostic]:
    """Every model-free semantic diagnostic of the items that parsed, sorted by position.

    Args:
        parsed: what `syntax.parse` returned (its syntax diagnostics are not repeated).
        placeholders: values bound to `$name` placeholders ({"name": value}).
        open_placeholders: a `$name` left unbound is an unknown bound when the file runs, not an
            error (linting: `schedc check`, the language server); else it is E0110.
    """
    try:
        ctx = Context(parsed, placeholders or {}, open_placeholders)
    except RecursionError:  # `let`s substituted into each other beyond the host's stack
        return [beyond_limits("`let` definitions nested beyond the checker's limits", n.Span(1, 1, 1, 2), "split them into fewer nested `let`s")]
    lint.run(ctx, RULES, parsed.file)
    return sorted(ctx.diags, key=sort_key)
