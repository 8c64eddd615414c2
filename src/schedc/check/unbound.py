"""Names left unbound in a lone expression (the text of `schedc.schedule`, a placeholder's value).

A file's names are checked by the checker against its `let`s; an expression given on its
own has only the names its caller binds, so every name still in it is undefined (E0101) and
every placeholder unbound (E0110). JAX-free.
"""

from __future__ import annotations

from schedc.check import catalog
from schedc.lang import nodes as n
from schedc.lang.diagnostics import Diagnostic, did_you_mean


def unbound_names(expr, names: dict) -> list[Diagnostic]:
    """E0101/E0110 for every name and placeholder left in `expr` (symbols such as `kind=cosine` excepted)."""
    words = set()  # Name nodes that are not variables: call and keyword names, symbol values
    for node in n.walk(expr):
        if isinstance(node, n.Call):
            words.add(id(node.func))
            words.update(id(kw.name) for kw in node.kwargs)
            sig = catalog.SCHEDULES.get(node.func.id)
            if sig is not None:
                bound, _ = catalog.bind(sig, node)
                words.update(id(bound.get(p.name)) for p in sig.params if p.kind == "symbol")
    diags = []
    for node in n.walk(expr):
        if isinstance(node, n.Name) and id(node) not in words:
            help = did_you_mean(node.id, names) or f"bind it: schedc.schedule(..., {node.id}=VALUE)"
            diags.append(Diagnostic("E0101", f"undefined name `{node.id}`", node.span, help=help))
        elif isinstance(node, n.Placeholder):
            diags.append(Diagnostic("E0110", f"unbound placeholder `${node.id}`", node.span, help=f"bind it: schedc.schedule(..., {node.id}=VALUE)"))
    return diags
