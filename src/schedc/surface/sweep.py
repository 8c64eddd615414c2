"""`Program.sweep(**grid)`: the Plans of N settings of a program's `$placeholders` and `let`s.

A grid maps names to equally long lists of numbers; setting i takes the i-th value of every
list (zipped: for a full grid pass `itertools.product`'s columns). A placeholder's value is
bound as `schedc.compile` binds it; a `let`'s definition is replaced by the value (at the
let's position, so a problem with it points there). The settings are checked and resolved
once, with every swept name bound to all its values at once (`lang.swept`), when that stands
for checking each setting on its own (no setting decides a check differently, nothing to
report); otherwise each setting is checked and resolved like a compile of the program with
its values. The fit itself is `schedc.runtime.sweep.run_sweep`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from numbers import Real

import numpy as np

from schedc.lang import nodes as n
from schedc.lang.diagnostics import Diagnostic, Label, SchedError, Source, did_you_mean, sort_key
from schedc.lang.nodes import Span
from schedc.runtime.sweep import SweepError, SweepResult


@dataclass
class Sweep:
    """N settings of a Program, ready to run: `settings[i]` ({name: value}) resolved to `plans[i]`."""

    program: object
    settings: list[dict]
    plans: list

    def __len__(self) -> int:
        return len(self.settings)

    def run(self, loss_fn, *args, chunk: int | None = None, quiet: bool = False, fuse: bool = True, validation=(), metrics=None, eval_every=None, **kwargs) -> SweepResult:
        """Fit every setting at once: `loss_fn(model, *args, **kwargs)` as `Program.run` takes it.
        Consecutive phases run as one fused segment program vmapped over the settings
        (`fuse=False`: phase by phase, one vmapped program per phase signature; the same results).
        `metrics`, `validation` and `eval_every` evaluate as `Program.run` does, every setting on
        the same validation data, with the rules on metrics, `keep best` and plateaus per setting.
        `chunk` and `quiet` are `Program.run`'s (the progress bar shows the mean loss over the
        settings still running).

        Returns a `sweep.SweepResult`: per-setting histories (`phase_losses[k]` of shape
        (settings, steps)), models with a leading settings axis, `.setting(i)` as a single
        `Result` (with its `.metrics`), `.final_losses`, `.metric(name)`, `.best(by=...)` and
        `.summary(by=...)`.
        """
        from schedc.runtime.evaluation import Evaluator
        from schedc.runtime.sweep import run_sweep
        from schedc.surface.api import check_eval_every, evaluated_every, validation_arguments

        program = self.program
        if program.model is None:
            raise TypeError("this program has no model: pass one to schedc.compile, or add a `model` directive")
        check_eval_every(eval_every)
        if eval_every == "epoch":  # (a sweep's Plans count in steps: an epoch's steps are not known to them)
            raise SweepError('sweep: eval_every="epoch": sweeps take phases counted in steps; give the interval in steps (eval_every=N)')
        plans = [evaluated_every(plan, eval_every) for plan in self.plans]
        evaluator = Evaluator(metrics, validation_arguments(validation)) if metrics is not None else None
        return run_sweep(plans, self.settings, program.model, program.tree, program.key, loss_fn, args, kwargs, chunk=chunk, quiet=quiet, source=program.source, state=program.state, fuse=fuse, evaluator=evaluator)


@dataclass(frozen=True)
class Swept:
    """One swept name, its values and where they were written: a `--sweep NAME=V1,V2,...`
    argument (its own source, `<--sweep 2>`), or a `Program.sweep(NAME=[...])` keyword rendered
    as such a line (`<sweep NAME>`), so a problem with them is a located diagnostic."""

    name: str
    values: tuple
    source: Source
    name_span: Span
    value_spans: tuple[Span, ...]

    @property
    def values_span(self) -> Span:
        if not self.value_spans:  # `NAME=[]`: everything after the `=`
            return _on_line(self.name_span.end + 1, len(self.source.text))
        return self.value_spans[0].cover(self.value_spans[-1])


def _on_line(start: int, end: int) -> Span:
    """Columns [start, end) (0-based) of a one-line source."""
    return Span(1, start + 1, 1, end + 1, start, end)


def from_arguments(specs: list[str]) -> list[Swept]:
    """`schedc run/plot --sweep NAME=V1,V2,...` arguments, each its own source `<--sweep I>`.

    Raises:
        ValueError: an argument without `NAME=`, or a name given twice (the message names it).
        SchedError: a value that is not a number (E0703), located in its argument.
    """
    swept: list[Swept] = []
    for i, spec in enumerate(specs, 1):
        written, sep, values = spec.partition("=")
        name = written.strip().lstrip("$")
        if not sep or not name:
            raise ValueError(f"--sweep {spec}: write NAME=V1,V2,... (a `$placeholder` or `let` name, then numbers)")
        if any(s.name == name for s in swept):
            raise ValueError(f"--sweep {spec}: `{name}` is swept twice; give all its values in one --sweep")
        pieces = values.split(",")
        spans, offset = [], len(written) + 1
        for piece in pieces:
            lead = len(piece) - len(piece.lstrip())
            spans.append(_on_line(offset + lead, offset + len(piece.rstrip())))
            offset += len(piece) + 1
        swept.append(Swept(name, tuple(_number(piece) for piece in pieces), Source(f"<--sweep {i}>", spec), _on_line(0, len(written)), tuple(spans)))
    _raise_if(sum((_wrong_values(s) for s in swept), []), swept)
    return swept


def _number(text: str):
    """A `--sweep` value: an int or a float, else the text itself (which `_wrong_values` reports)."""
    text = text.strip()
    try:
        return int(text) if text.lstrip("+-").isdigit() else float(text)
    except ValueError:
        return text


def from_grid(grid: dict) -> list[Swept]:
    """`Program.sweep(**grid)`'s keywords, each rendered as `NAME=[V1, V2]` (its source `<sweep NAME>`).

    Raises:
        SchedError: a value that is not a list of numbers (E0703), located in that rendering.
    """
    swept = []
    for name, values in grid.items():
        if getattr(values, "ndim", None) == 1 and hasattr(values, "__array__"):  # np.linspace, jnp.logspace: their numbers
            values = np.asarray(values).tolist()
        if isinstance(values, (str, bytes, Mapping)) or not hasattr(values, "__len__"):
            text = f"{name}={values!r}"
            swept.append(Swept(name, None, Source(f"<sweep {name}>", text), _on_line(0, len(name)), (_on_line(len(name) + 1, len(text)),)))
            continue
        text, spans = f"{name}=[", []
        for i, value in enumerate(values):
            shown = str(value) if isinstance(value, Real) and not isinstance(value, bool) else repr(value)
            text += ", " if i else ""
            spans.append(_on_line(len(text), len(text) + len(shown)))
            text += shown
        swept.append(Swept(name, tuple(values), Source(f"<sweep {name}>", text + "]"), _on_line(0, len(name)), tuple(spans)))
    _raise_if(sum((_wrong_values(s) for s in swept), []), swept)
    return swept


def _wrong_values(swept: Swept) -> list[Diagnostic]:
    """E0703 for values that are not a list of numbers."""
    if swept.values is None:
        return [Diagnostic("E0703", f"`{swept.name}` takes a list of values, one per setting", swept.values_span, label="not a list", file=swept.source.name, help=f"write `{swept.name}=[...]` with one number per setting")]
    return [
        Diagnostic(
            "E0703", f"the values of `{swept.name}` are numbers, got {value!r}", span, label="not a number", file=swept.source.name,
            help="sweep numbers only; a schedule or an optimizer is swept through the numbers it takes (a `let` or `$placeholder` inside it)",
        )
        for value, span in zip(swept.values, swept.value_spans)
        if isinstance(value, bool) or not isinstance(value, Real)
    ]


def _raise_if(diagnostics: list[Diagnostic], swept: list[Swept]) -> None:
    if diagnostics:
        raise SchedError(sorted(diagnostics, key=sort_key), {s.source.name: s.source for s in swept})


def check_names_and_lengths(swept: list[Swept], lets, placeholders) -> list[Diagnostic]:
    """E0701 for a name that is neither a `$placeholder` nor a `let` of the program; E0702 for
    value lists whose lengths differ from the first one's, or are empty."""
    found = []
    sweepable = [f"${p}" for p in placeholders] + list(lets)
    for s in swept:
        if s.name not in lets and s.name not in placeholders:
            hint = did_you_mean(s.name, list(placeholders) + list(lets))
            found.append(Diagnostic(
                "E0701", f"`{s.name}` is neither a `$placeholder` nor a `let` of this program", s.name_span, label="not swept", file=s.source.name,
                help=hint or ("it may sweep " + ", ".join(f"`{x}`" for x in sweepable) if sweepable else "add a `let` (or a `$placeholder`) for the value to sweep"),
            ))
    first = swept[0]
    for s in swept:
        if not s.values:
            found.append(Diagnostic("E0702", f"`{s.name}` has no values", s.values_span, label="no values", file=s.source.name, help="give one value per setting"))
        elif s is not first and first.values and len(s.values) != len(first.values):
            found.append(Diagnostic(
                "E0702", f"`{s.name}` has {len(s.values)} values and `{first.name}` {len(first.values)}: the lists are zipped, one value of each per setting",
                s.values_span, label=f"{len(s.values)} values", file=s.source.name,
                labels=(Label(first.values_span, f"{len(first.values)} values", first.source.name),),
                help="give every name one value per setting; for every combination, list each combination (itertools.product's columns)",
            ))
    return found


def _sweepable(parsed) -> tuple[dict, list[str]]:
    """The program's `let`s (name -> statement) and `$placeholder` names: what a sweep may vary."""
    lets = {item.name.id: item for item in parsed.file.items if isinstance(item, n.Let)}
    return lets, sorted({node.id for node in n.walk(parsed.file) if isinstance(node, n.Placeholder)})


def diagnose(example: str) -> tuple[list[Diagnostic], dict[str, Source]]:
    """The sweep diagnostics of a registry example (`lang.diagnostics.SWEEP_CODES`): its first line
    a `schedc run --sweep ...` command, the rest the file. Nothing is compiled or fitted: these are
    the checks `schedc run --sweep` makes before it."""
    import shlex

    from schedc.pipeline import read

    command, _, text = example.partition("\n")
    words = shlex.split(command)
    specs = [words[i + 1] for i, word in enumerate(words) if word == "--sweep"]
    try:
        swept = from_arguments(specs)
    except SchedError as err:
        return err.diagnostics, err.sources
    return check_names_and_lengths(swept, *_sweepable(read(text).parsed)), {s.source.name: s.source for s in swept}


def sweep(program, swept: list[Swept]) -> Sweep:
    """The settings of `swept` (`from_grid` / `from_arguments`) resolved against `program` (see the module docstring).

    Raises:
        SchedError: a name that is neither a placeholder nor a `let` of the program (E0701),
            value lists of different lengths or empty (E0702), located in the sweep's own
            sources; a setting the checks refuse (a negative learning rate, say), naming it.
        SweepError: a program a sweep cannot run (phases counted in epochs), or no names.
    """
    from schedc.pipeline import read

    if program.source is None:
        raise SweepError("this program has no source text to sweep")
    if not swept:
        raise SweepError("sweep: give at least one name=[values]")
    # not yet: step counts known only with the data
    if program.per_data is not None:
        raise SweepError("sweep: this program counts phases in epochs; sweeps take phases counted in steps (for now)")
    parsed = read(program.source.text, program.source.name, program.source).parsed
    lets, placeholders = _sweepable(parsed)
    _raise_if(check_names_and_lengths(swept, lets, placeholders), swept)
    settings = [{s.name: s.values[i] for s in swept} for i in range(len(swept[0].values))]
    # the program's placeholders are bound already (syntax nodes); a swept one is a number, bound as it is
    bound = {name: value for name, value in program.placeholders.items() if name not in settings[0]}
    plans = _plans_at_once(program, parsed, lets, bound, swept)
    if plans is None:  # settings the checks treat differently, or that have something to say: one by one
        plans = [_plan(program, parsed, lets, bound, setting, i) for i, setting in enumerate(settings)]
    return Sweep(program, settings, plans)


def _plans_at_once(program, parsed, lets: dict, bound: dict, swept: list[Swept]) -> list | None:
    """Every setting's Plan from one check and resolve, each swept name bound to every setting's
    values at once (`lang.swept.Swept`), or None when that cannot stand for checking each setting
    on its own: values that are not all finite floats, settings some check or the resolver treats
    differently (`Diverged`), or any diagnostic (a warning too), which the per-setting path gives
    each with the setting it belongs to. Otherwise every setting would take the branches setting
    0 took: the same (no) diagnostics, and setting 0's Plan with its own numbers (`swept.settings_of`)."""
    from schedc.lang import swept as S

    if not all(S.finite(s.values) for s in swept):
        return None
    try:
        at_once = {s.name: S.Swept(s.values) for s in swept}
        analysis = _analysis(program, parsed, lets, bound, at_once)
    except S.Diverged:
        return None
    if analysis.plan is None or analysis.diagnostics:
        return None
    setting = S.settings_of(analysis.plan)
    return [setting(i) for i in range(len(swept[0].values))]


def _analysis(program, parsed, lets: dict, bound: dict, setting: dict):
    """`pipeline.analyse_setting` of one setting: the placeholders `bound` with the swept ones
    added, swept lets redefined by their values."""
    from schedc.pipeline import analyse_setting

    placeholders = bound | {name: value for name, value in setting.items() if name not in lets}
    swept_lets = {name: value for name, value in setting.items() if name in lets}
    return analyse_setting(parsed, program.source.name, program.source, program.tree, placeholders, swept_lets)


def _plan(program, parsed, lets: dict, bound: dict, setting: dict, index: int):
    """Setting `index` checked and resolved on its own (`_analysis`); its errors name it."""
    analysis = _analysis(program, parsed, lets, bound, setting)
    if analysis.plan is None:
        error = analysis.error()
        error.add_note(f"in sweep setting {index}: " + ", ".join(f"{k}={v!r}" for k, v in setting.items()))
        raise error
    return analysis.plan
