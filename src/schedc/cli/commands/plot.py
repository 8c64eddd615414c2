"""`schedc plot FILE [--out FILE.png] [--model [MOD:FN]] [--sweep NAME=V1,V2,...]`: every scheduled value over the whole run.

One panel per hyperparameter (the learning rate first, one line per optimizer
group), phases laid end to end on a global step axis, each boundary marked by
a vertical line labelled with the phase's name. The values are the compiler's
own: the plan's phases go through `compiler.prepare` (the same lowering, the
same hyperparameter names as `Result.hyperparams`) and each schedule is
evaluated with `schedules.build`. With --sweep every setting's curves are overlaid, labelled by
the setting's values. Without --model the file is resolved with
its patterns as written, as `schedc show` does. Needs matplotlib
(`pip install 'schedc[plot]'`); problems are printed on stderr (exit 1),
unreadable files and a missing matplotlib exit 2.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from schedc.cli.commands import add_model_argument, add_set_argument, add_sweep_argument, parse_sweep, resolve_file, sweep_placeholders
from schedc.tooling.files import same_file

# Longer phases are sampled at this many evenly spaced steps: a plot needs no more.
MAX_POINTS_PER_PHASE = 4000


def add_arguments(parser) -> None:
    parser.add_argument("file", help="the .sched file")
    parser.add_argument("--out", metavar="IMAGE", help="where to write the image, in the format its suffix names: .png, .pdf, .svg, ... (default: FILE with the suffix .png, beside it)")
    parser.add_argument(
        "--steps-per-epoch",
        type=int,
        default=100,
        metavar="N",
        help="for a file that counts epochs: the steps of one epoch (the data's size is not known here; default 100)",
    )
    add_model_argument(parser)
    add_set_argument(parser)
    add_sweep_argument(parser, help="NAME=V1,V2,...: overlay the curves of one setting per value of a `$placeholder` or `let` (as `schedc run --sweep`)")
    parser.add_argument("--log", action="store_true", help="logarithmic value axes (symmetric-log for a panel with values <= 0)")


@dataclass
class Curves:
    """What is plotted: phase spans on the global step axis and one curve per hyperparameter.

    `values[name]` is aligned with `steps`; NaN where a phase does not feed that hyperparameter.
    """

    phases: list[tuple[int, int, str]] = field(default_factory=list)  # (first global step, steps, label)
    steps: list[int] = field(default_factory=list)
    values: dict[str, list[float]] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(length for _, length, _ in self.phases)


def run(args) -> int:
    from schedc.lang.diagnostics import SchedError

    path = Path(args.file)
    try:
        pyplot = _pyplot()
    except ImportError:
        print("schedc plot: needs matplotlib; install it with `pip install 'schedc[plot]'`", file=sys.stderr)
        return 2
    grid = parse_sweep(args.sweep, "plot")
    if isinstance(grid, int):
        return grid
    resolved = resolve_file(path, args.model, "plot", {**sweep_placeholders(grid, path), **dict(args.set)})
    if isinstance(resolved, int):
        return resolved
    plan, xlabel = _with_epochs(resolved, args.steps_per_epoch)
    if not plan.phases:
        print(f"schedc plot: {path} has no phases", file=sys.stderr)
        return 1
    out = Path(args.out) if args.out else path.with_suffix(".png")
    if same_file(out, path) or out.suffix == ".sched":
        print(f"schedc plot: refusing to write the image over {out} (a schedule); choose another --out", file=sys.stderr)
        return 2
    if out.is_dir():
        print(f"schedc plot: cannot write {out}: it is a folder; name the image file (--out {out / path.with_suffix('.png').name})", file=sys.stderr)
        return 2
    from matplotlib.backend_bases import FigureCanvasBase

    image_format = out.suffix.lstrip(".").lower()
    if image_format not in (formats := FigureCanvasBase.get_supported_filetypes()):
        print(f"schedc plot: cannot write {out}: the suffix names the format, one of {', '.join(f'.{f}' for f in sorted(formats))}", file=sys.stderr)
        return 2
    try:
        data = swept_curves(resolved, grid) if grid else curves(plan)
    except SchedError as err:  # a setting the checks refuse
        print(err.render(), file=sys.stderr)
        return 1
    except ValueError as err:  # a SweepError: a program a sweep cannot run
        print(f"schedc plot: {err}", file=sys.stderr)
        return 1
    try:
        render(data, out, title=path.name, pyplot=pyplot, log=args.log, legend="setting" if grid else "group", xlabel=xlabel, image_format=image_format)
    except (OSError, RuntimeError, ValueError) as exc:  # (RuntimeError, ValueError: matplotlib's, e.g. .pgf without a TeX)
        print(f"schedc plot: cannot write {out}: {getattr(exc, 'strerror', None) or exc}", file=sys.stderr)
        return 2
    print(f"wrote {out}")
    return 0


def curves(plan) -> Curves:
    """Every fed hyperparameter of every phase of `plan`, evaluated at (a sample of) its steps.

    Learning rates are always kept; another hyperparameter is kept when some
    phase schedules it (a constant everywhere is not a schedule).
    """
    import numpy as np

    from schedc.compiler.chunk import prepare

    leaf_indices = {path: (i,) for i, path in enumerate(plan.parameters)}
    out = Curves()
    start = 0
    per_phase: list[dict[str, np.ndarray]] = []
    scheduled: set[str] = set()
    for phase in plan.phases:
        prepared = prepare(phase, leaf_indices, chunk=1)
        local = _sample(phase.steps)
        hypers = [h for g in prepared.signature.groups for h in g.hypers]
        values = {}
        for name, h in zip(prepared.hyper_names, hypers):
            values[name] = _evaluate(h.structure, local, prepared.numbers[h.offset : h.offset + h.size])
            if h.structure != ("constant",):
                scheduled.add(name)
        per_phase.append(values)
        out.phases.append((start, phase.steps, phase.display))
        out.steps.extend(int(s) + start for s in local)
        start += phase.steps
    names = [name for values in per_phase for name in values]
    keep = [name for name in dict.fromkeys(names) if name.split("@")[0] == "learning_rate" or name in scheduled]
    for name in sorted(keep, key=lambda k: (k.split("@")[0] != "learning_rate", k)):
        column = []
        for (_, length, _), values in zip(out.phases, per_phase):
            sampled = len(_sample(length))
            column.extend(values[name].tolist() if name in values else [float("nan")] * sampled)
        out.values[name] = column
    return out


def swept_curves(analysis, grid: list) -> Curves:
    """Every setting's curves in one Curves: `NAME@SETTING` (`NAME@SETTING/GROUP` for a group's),
    SETTING the setting's values (`lr=0.001,wd=0`)."""
    from schedc.surface.api import program_of
    from schedc.surface.sweep import sweep as make_sweep

    sweep = make_sweep(program_of(analysis), grid)
    out = Curves()
    for setting, plan in zip(sweep.settings, sweep.plans):
        mine = curves(plan)
        label = ",".join(f"{k}={v:g}" for k, v in setting.items())
        out.phases, out.steps = mine.phases, mine.steps
        for name, values in mine.values.items():
            panel, _, group = name.partition("@")
            out.values[f"{panel}@{label}" + (f"/{group}" if group else "")] = values
    return out


def _sample(steps: int):
    import numpy as np

    if steps <= MAX_POINTS_PER_PHASE:
        return np.arange(steps, dtype=np.int32)
    return np.unique(np.linspace(0, steps - 1, MAX_POINTS_PER_PHASE).astype(np.int32))


def _evaluate(structure, steps, numbers):
    """The schedule at every step given, in one vectorised call. Steps are padded to a power
    of two so that phases of similar length reuse one compiled program per structure."""
    import numpy as np

    padded = np.zeros(max(64, 1 << (len(steps) - 1).bit_length()), np.int32)
    padded[: len(steps)] = steps
    return np.asarray(_vectorised(structure)(padded, numbers), dtype=np.float64)[: len(steps)]


@lru_cache(maxsize=None)
def _vectorised(structure):
    import jax

    from schedc.compiler.schedules import build

    return jax.jit(jax.vmap(build(structure), in_axes=(0, None)))


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only: never open a window or need a display
    import matplotlib.pyplot as pyplot

    return pyplot


def log_scale(curves) -> tuple[str, dict]:
    """`set_yscale` arguments for a log axis over these values: "log" when they are all > 0; else
    "symlog", linear within the smallest nonzero magnitude (a decay to 0, a warmup from 0)."""
    import numpy as np

    values = np.concatenate([np.asarray(c, float).ravel() for c in curves])
    values = values[np.isfinite(values)]
    if values.size and np.all(values > 0):
        return "log", {}
    nonzero = np.abs(values[values != 0])
    return "symlog", {"linthresh": float(nonzero.min()) if nonzero.size else 1.0}


def _with_epochs(resolved, steps_per_epoch: int):
    """(the Plan to draw, the x-axis label): a file that counts epochs is resolved again with
    `steps_per_epoch` steps in each epoch, so its schedules are drawn at a real resolution."""
    from schedc.lang.diagnostics import SchedError
    from schedc.plan.resolve import DataSize, counts_epochs

    if not counts_epochs(resolved.parsed.file) or steps_per_epoch < 1:
        return resolved.plan, "step"
    try:
        plan = resolved.plan_for(DataSize(batches=steps_per_epoch))
    except SchedError:  # drawn at one step an epoch, as checked
        plan = resolved.plan
    return plan, f"step (1 epoch = {steps_per_epoch} steps; --steps-per-epoch)"


def render(data: Curves, out: Path, title: str = "", pyplot=None, log: bool = False, legend: str = "group", xlabel: str = "step", image_format: str = "png") -> None:
    """Draw `data` into an image at `out` (`image_format`: one matplotlib writes, png by default):
    one panel per hyperparameter, phase boundaries marked; with `log`, logarithmic value axes."""
    import numpy as np

    pyplot = pyplot or _pyplot()
    panels: dict[str, list[str]] = {}
    for name in data.values:
        panels.setdefault(name.split("@")[0], []).append(name)
    rows = max(1, len(panels))
    fig, axes = pyplot.subplots(rows, 1, sharex=True, figsize=(10, 2.2 + 2.0 * rows), squeeze=False)
    x = np.asarray(data.steps)
    for ax, (panel, names) in zip(axes[:, 0], panels.items()):
        for name in names:
            group = name.partition("@")[2]
            ax.plot(x, np.asarray(data.values[name]), label=group or "(phase)", linewidth=1.4)
        ax.set_ylabel("lr" if panel == "learning_rate" else panel)
        if log:
            scale, options = log_scale([data.values[name] for name in names])
            ax.set_yscale(scale, **options)
        if len(names) > 1:
            ax.legend(loc="best", fontsize="small", title=legend, title_fontsize="small")
        ax.grid(alpha=0.3)
        for start, _, _ in data.phases[1:]:
            ax.axvline(start, color="0.4", linestyle="--", linewidth=0.8)
    top = axes[0, 0]
    for start, length, label in data.phases:
        top.text(start + length / 2, 1.02, label, transform=top.get_xaxis_transform(), ha="center", va="bottom", fontsize="small")
    axes[-1, 0].set_xlabel(xlabel)
    axes[-1, 0].set_xlim(0, max(1, data.total))
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    from schedc.tooling.files import atomic_open

    try:
        with atomic_open(out) as f:
            fig.savefig(f, format=image_format, dpi=100)
    finally:
        pyplot.close(fig)
