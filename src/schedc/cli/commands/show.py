"""`schedc show FILE [--model [MOD:FN]] [--format text|json]`: the phase x parameter table.

Rows are parameters (tree order; a shared copy is listed with its parent),
columns phases (after `repeat` expansion). A cell says `free` or `.` (fixed),
followed by the group's own `lr=`/`opt=` when it has one and an init mark:
`~` random init, `=` set to a value, `^` reset to the value before the run.
Without --model the rows are the patterns as written, each standing for itself
(overlaps between patterns are not known without the model). With `--model`
and no value, the file's `model` directive names the model. Problems are
printed on stderr; errors give exit status 1 and no table.
"""

from __future__ import annotations

import json
from pathlib import Path

from schedc.cli.commands import add_model_argument, add_set_argument, resolve_file

_INIT_MARKS = {"normal": "~", "uniform": "~", "value": "=", "reset": "^"}
LEGEND = "free: trained   .: fixed   ~: random init   =: set to a value   ^: reset to its initial value   lr=/opt=: the group's own"


def add_arguments(parser) -> None:
    parser.add_argument("file", help="the .sched file")
    add_model_argument(parser)
    add_set_argument(parser)
    parser.add_argument("--format", choices=("text", "json"), default="text", help="text (default) or json")


def run(args) -> int:
    resolved = resolve_file(Path(args.file), args.model, "show", dict(args.set))
    if isinstance(resolved, int):
        return resolved
    table = Table.of(resolved.plan, resolved.text, resolved.tree is not None)
    print(json.dumps(table.as_json(args.file), indent=2) if args.format == "json" else table.render())
    return 0


def _text(expr, source: str) -> str | None:
    """An expression as written in the file (closed expressions keep the span of what was written)."""
    if expr is None:
        return None
    span = getattr(expr, "span", None)
    if span is not None and span.end > span.start:
        return " ".join(source[span.start : span.end].split())
    return getattr(expr, "text", None) or type(expr).__name__


def _lr_text(lr, plateau, source: str, on: str | None = None) -> str | None:
    """A learning rate as written, with its `* plateau(...)` factor (the Plan keeps them apart)."""
    if plateau is None:
        return _text(lr, source)
    factor = "plateau(" + ", ".join(([f"on={on}"] if on else []) + [f"{k}={v:g}" for k, v in plateau]) + ")"
    return factor if lr is None else f"{_text(lr, source)} * {factor}"


class Table:
    """The table's contents as plain rows, rendered as text or JSON."""

    def __init__(self, plan, phases: list[dict], rows: list[dict], with_model: bool):
        self.plan, self.phases, self.rows, self.with_model = plan, phases, rows, with_model

    @classmethod
    def of(cls, plan, source: str, with_model: bool) -> "Table":
        phases = []
        cells: dict[str, list[dict]] = {p: [] for p in plan.parameters}
        for ph in plan.phases:
            opt = ph.optimizer
            phases.append(
                {
                    "index": ph.index,
                    "name": ph.name,
                    "display": ph.display,
                    "steps": ph.steps,
                    "epochs": ph.epochs,
                    "batch": ph.batch,
                    "lr": _lr_text(ph.lr, ph.plateau, source, ph.plateau_on),
                    "optimizer": _text(opt, source) if opt.span.end > opt.span.start else opt.name,
                    "carry": ph.carry,
                    "accumulate": ph.accumulate,
                    "ema": ph.ema,
                    "stop": [{"metric": s.kind, "threshold": s.threshold, "over": s.over, "after": s.after} for s in ph.stop],
                }
            )
            own = {}
            for group in ph.groups:
                for path in group.paths:
                    own[path] = group
            inits = {spec.path: spec for spec in ph.inits}
            for path in plan.parameters:
                group = own.get(path)
                init = inits.get(path)
                cells[path].append(
                    {
                        "free": group is not None,
                        "lr": _lr_text(group.lr, group.plateau, source, group.plateau_on) if group is not None else None,
                        "optimizer": _text(group.optimizer, source) if group is not None and group.optimizer else None,
                        "init": {"kind": init.kind, "args": list(init.args)} if init else None,
                    }
                )
        copies: dict[str, list[str]] = {}
        for copy, parent in plan.shared.items():
            copies.setdefault(parent, []).append(copy)
        rows = [{"path": p, "shared": copies.get(p, []), "phases": cells[p]} for p in plan.parameters]
        return cls(plan, phases, rows, with_model)

    def as_json(self, file: str) -> dict:
        """`rows` are "parameters" with a model, "patterns" (as written) without."""
        return {"file": file, "model": self.with_model, "phases": self.phases, "parameters" if self.with_model else "patterns": self.rows}

    def render(self) -> str:
        header = ["", *(str(p["index"]) for p in self.phases)]
        names = ["parameter" if self.with_model else "pattern", *(p["display"] if p["name"] else "" for p in self.phases)]
        body = []
        for row in self.rows:
            label = row["path"] + (f" (= {', '.join(row['shared'])})" if row["shared"] else "")
            body.append([label, *(_cell(c) for c in row["phases"])])
        footer = [
            ["steps", *(_length(p) for p in self.phases)],
            *([["batch", *(str(p["batch"] or "all") for p in self.phases)]] if any(p["batch"] for p in self.phases) else []),
            ["lr", *(_clip(p["lr"] or "-") for p in self.phases)],
            ["optimizer", *(_clip(p["optimizer"]) for p in self.phases)],
        ]
        grid = [header, names, *body, *footer]
        widths = [max(len(r[c]) for r in grid) for c in range(len(header))]

        def line(r):
            return "  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip()

        rule = "  ".join("-" * w for w in widths)
        out = [line(header), line(names), rule, *(line(r) for r in body), rule, *(line(r) for r in footer)]
        return "\n".join(out) + "\n\n" + LEGEND


def _length(phase: dict) -> str:
    """A phase's length as the table shows it: `300`, or `3 epochs` (steps known only with the data)."""
    return f"{phase['epochs']:g} epochs" if phase["epochs"] is not None else str(phase["steps"])


def _clip(text: str, width: int = 28) -> str:
    """Long schedules would make a column too wide for a terminal: `--format json` has them whole."""
    return text if len(text) <= width else text[: width - 3] + "..."


def _cell(cell: dict) -> str:
    parts = ["free" if cell["free"] else "."]
    if cell["lr"] is not None:
        parts.append(f"lr={cell['lr']}")
    if cell["optimizer"] is not None:
        parts.append(f"opt={cell['optimizer']}")
    if cell["init"] is not None:
        parts.append(_INIT_MARKS.get(cell["init"]["kind"], "?"))
    return " ".join(parts)
