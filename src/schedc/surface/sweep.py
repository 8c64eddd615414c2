"""`Program.sweep(**grid)`: the Plans of N settings of a program's `$placeholders` and `let`s.

A grid maps names to equally long lists of numbers; setting i takes the i-th value of every
list (zipped: for a full grid pass `itertools.product`'s columns). A placeholder's value is
bound as `schedc.compile` binds it; a `let`'s definition is replaced by the value (at the
let's position, so a problem with it points there). Each setting is checked and resolved
like a compile of the program with those values; the fit itself is
`schedc.runtime.sweep.run_sweep`.
"""

from __future__ import annotations

from dataclasses import dataclass
from numbers import Real

from schedc.lang import nodes as n
from schedc.runtime.sweep import SweepError, SweepResult


@dataclass
class Sweep:
    """N settings of a Program, ready to run: `settings[i]` ({name: value}) resolved to `plans[i]`."""

    program: object
    settings: list[dict]
    plans: list

    def __len__(self) -> int:
        return len(self.settings)

    def run(self, loss_fn, *args, chunk: int | None = None, **kwargs) -> SweepResult:
        """Fit every setting at once: `loss_fn(model, *args, **kwargs)` as `Program.run` takes it.

        Returns a `sweep.SweepResult`: per-setting histories (`phase_losses[k]` of shape
        (settings, steps)), models with a leading settings axis, `.setting(i)` as a single
        `Result`, `.final_losses`, `.best()` and `.summary()`.
        """
        from schedc.runtime.sweep import run_sweep

        program = self.program
        if program.model is None:
            raise TypeError("this program has no model: pass one to schedc.compile, or add a `model` directive")
        return run_sweep(self.plans, self.settings, program.model, program.tree, program.key, loss_fn, args, kwargs, chunk=chunk, source=program.source)


def sweep(program, grid: dict) -> Sweep:
    """The settings of `grid` resolved against `program` (see the module docstring).

    Raises:
        SweepError: a name that is neither a placeholder nor a `let` of the program, lists of
            different lengths or empty, a value that is not a number.
        SchedError: a setting the checks refuse (a negative learning rate, say), naming it.
    """
    from schedc.pipeline import read

    if program.source is None:
        raise SweepError("this program has no source text to sweep")
    # not yet: step counts known only with the data, and evaluations per setting
    if program.per_data is not None:
        raise SweepError("sweep: this program counts phases in epochs; sweeps take phases counted in steps (for now)")
    if program.plan.metrics:
        raise SweepError("sweep: this program evaluates (`eval`); sweeps do not run evaluations (for now)")
    parsed = read(program.source.text, program.source.name, program.source).parsed
    lets = {item.name.id: item for item in parsed.file.items if isinstance(item, n.Let)}
    placeholders = sorted({node.id for node in n.walk(parsed.file) if isinstance(node, n.Placeholder)})
    settings = _settings(grid, lets, placeholders)
    return Sweep(program, settings, [_plan(program, parsed, lets, setting, i) for i, setting in enumerate(settings)])


def _settings(grid: dict, lets: dict, placeholders: list[str]) -> list[dict]:
    if not grid:
        raise SweepError("sweep: give at least one name=[values]")
    sweepable = [f"${p}" for p in placeholders] + list(lets)
    for name, values in grid.items():
        if name not in lets and name not in placeholders:
            raise SweepError(f"sweep: `{name}` is neither a `$placeholder` nor a `let` of this program; it has " + (", ".join(f"`{s}`" for s in sweepable) or "none"))
        if isinstance(values, (str, bytes)) or not hasattr(values, "__len__"):
            raise SweepError(f"sweep: `{name}` takes a list of values, got {type(values).__name__}")
        for value in values:
            if isinstance(value, bool) or not isinstance(value, Real):
                raise SweepError(f"sweep: the values of `{name}` are numbers, got {value!r}")
    lengths = {name: len(values) for name, values in grid.items()}
    if len(set(lengths.values())) != 1 or 0 in lengths.values():
        listed = ", ".join(f"`{name}` has {count}" for name, count in lengths.items())
        raise SweepError(f"sweep: every name takes one value per setting, and the lists differ in length or are empty ({listed}); "
                         "settings are zipped: for every combination pass the columns of itertools.product")
    count = next(iter(lengths.values()))
    return [{name: values[i] for name, values in grid.items()} for i in range(count)]


def _plan(program, parsed, lets: dict, setting: dict, index: int):
    """Setting `index` checked and resolved (`pipeline.analyse_setting`): the program's placeholders
    with the swept ones replaced, swept lets redefined by their values."""
    from schedc.pipeline import analyse_setting

    placeholders = dict(program.placeholders) | {name: value for name, value in setting.items() if name not in lets}
    swept_lets = {name: value for name, value in setting.items() if name in lets}
    analysis = analyse_setting(parsed, program.source.name, program.source, program.tree, placeholders, swept_lets)
    if analysis.plan is None:
        error = analysis.error()
        error.add_note(f"in sweep setting {index}: " + ", ".join(f"{k}={v!r}" for k, v in setting.items()))
        raise error
    return analysis.plan
