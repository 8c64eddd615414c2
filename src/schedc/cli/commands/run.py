"""`schedc run FILE`: fit the model the file names, print a summary, save the results.

The entry points come from the file's `model`, `loss` and `data` directives
(paths relative to the file) or from --model/--loss/--data. `data` returns the
loss's extra arguments: a tuple (positional), a dict (keyword) or one value.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path


def add_arguments(parser) -> None:
    parser.add_argument("file", help="the .sched file")
    parser.add_argument("--model", metavar="MOD:FN", help="model factory (overrides the `model` directive)")
    parser.add_argument("--loss", metavar="MOD:FN", help="loss function (overrides the `loss` directive)")
    parser.add_argument("--data", metavar="MOD:FN", help="data function (overrides the `data` directive)")
    parser.add_argument("--out", metavar="DIR", help="save the final model, the histories and a summary here")
    parser.add_argument("--seed", type=int, help="override the file's `seed`")
    parser.add_argument("--chunk", type=int, help="steps per compiled chunk (progress granularity)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument(
        "--compile-cache",
        metavar="DIR",
        default=os.environ.get("SCHEDC_COMPILE_CACHE", str(Path.home() / ".cache" / "schedc" / "xla")),
        help="keep compiled XLA programs here, so the next run of the same phases skips compiling "
        "(default ~/.cache/schedc/xla, or $SCHEDC_COMPILE_CACHE; `none` turns it off)",
    )
    parser.add_argument("--checkpoint", metavar="DIR", help="write checkpoints here and resume from the one found (schedc.runtime.checkpoint)")
    parser.add_argument("--checkpoint-every", type=int, default=10, metavar="N", help="also checkpoint every N chunks within a phase (default 10; 0: after phases only)")


def _loss_and_data(args, plan, base: Path):
    from schedc.plan.binding import load_entry

    loss_ref, data_ref = args.loss or plan.loss, args.data or plan.data
    if not loss_ref:
        raise LookupError('no loss given: add a `loss "file.py:function"` directive or pass --loss')
    loss = load_entry(loss_ref, base)
    data = load_entry(data_ref, base)() if data_ref else ()
    if isinstance(data, dict):
        return loss, (), data
    return loss, (data if isinstance(data, tuple) else (data,)), {}


def _use_compile_cache(folder: str) -> None:
    """JAX's persistent compilation cache: a later process running the same phase signatures
    loads their executables instead of compiling them again (within one process the
    compiler's own cache already shares them)."""
    if folder.lower() == "none":
        return
    import jax

    jax.config.update("jax_compilation_cache_dir", folder)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


def run(args) -> int:
    from schedc.lang.diagnostics import SchedError
    from schedc.runtime.checkpoint import CheckpointError
    from schedc.runtime.runner import RunError
    from schedc.surface import api

    path = Path(args.file)
    if not path.is_file():
        print(f"schedc run: {path}: no such file", file=sys.stderr)
        return 2
    _use_compile_cache(args.compile_cache)
    try:
        # the model: --model, else the file's `model` directive (a missing one is a diagnostic)
        program = api.compile(path, args.model, key=args.seed)
        if program.model is None:
            raise LookupError('no model given: add a `model "file.py:factory"` directive or pass --model')
        loss, data_args, data_kwargs = _loss_and_data(args, program.plan, path.parent)
    except SchedError as err:
        print(err.render(), file=sys.stderr)
        return 1
    except (LookupError, ImportError, OSError) as err:
        print(f"schedc run: {err}", file=sys.stderr)
        return 2
    try:
        result = program.run(loss, *data_args, quiet=args.quiet, chunk=args.chunk, checkpoint=args.checkpoint, checkpoint_every=args.checkpoint_every, **data_kwargs)
    except CheckpointError as err:
        print(f"schedc run: {err}", file=sys.stderr)
        return 2
    except RunError as err:
        print(result_table(err.result), file=sys.stderr)
        print(f"error: {err}", file=sys.stderr)
        for note in getattr(err, "__notes__", ()):
            print(f"  = note: {note}", file=sys.stderr)
        if args.out:
            save(err.result, Path(args.out), model_override=err.model)
        return 1
    print(result_table(result))
    if args.out:
        save(result, Path(args.out))
        print(f"saved to {args.out}/")
    return 0


def result_table(result) -> str:
    """The summary table, with rich when it is installed and stdout is a terminal."""
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        return result.summary()
    if not sys.stdout.isatty():
        return result.summary()
    table = Table(title="schedc run")
    for column in ("phase", "steps", "final loss", "stop", "time (s)", "compile (s)"):
        table.add_column(column, justify="left" if column == "phase" else "right")
    for p in result.phases:
        table.add_row(p.display, f"{p.steps_run}/{p.steps}", f"{p.final_loss:.6g}", p.stop_reason, f"{p.wall_time:.2f}", f"{p.compile_time:.2f}")
    console = Console(record=True, width=100)
    with console.capture() as capture:
        console.print(table)
    return capture.get().rstrip()


def save(result, out: Path, model_override=None) -> None:
    """model.eqx (equinox serialisation), losses.npz, hyperparams.npz and summary.json."""
    import equinox as eqx
    import numpy as np

    out.mkdir(parents=True, exist_ok=True)
    eqx.tree_serialise_leaves(out / "model.eqx", model_override if model_override is not None else result.model)
    np.savez(out / "losses.npz", **{f"phase_{p.index}": p.losses for p in result.phases})
    np.savez(out / "hyperparams.npz", **{k: v for k, v in result.hyperparams.items()})
    summary = [
        {
            "index": p.index,
            "name": p.name,
            "steps": p.steps,
            "steps_run": p.steps_run,
            "final_loss": p.final_loss,
            "stop_reason": p.stop_reason,
            "wall_time": p.wall_time,
            "compile_time": p.compile_time,
        }
        for p in result.phases
    ]
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
