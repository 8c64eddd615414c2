"""`schedc run FILE`: fit the model the file names, print a summary, save the results.

The entry points come from the file's `model`, `loss` and `data` directives
(paths inside the file's folder) or from --model/--loss/--data. `data` returns the
loss's extra arguments: a tuple (positional), a dict (keyword) or one value; or an
iterable of such batches (a generator, a grain DataLoader, `schedc.Batches(...)`), read by a
background thread while the chunks run (runtime.stream).

Nothing is lost: --out and --checkpoint are checked before training starts; the loss
is tried once on the model and data (`jax.eval_shape`) so a loss that raises or does
not return a float scalar is a message, not a traceback after compiling; every file
is written atomically; and whatever ends the run early (an error, a non-finite loss,
SIGINT, SIGTERM) the completed phases are saved to --out. SIGINT/SIGTERM stop at the
next chunk boundary (with a final checkpoint when checkpointing) and exit 130/143.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import signal
import sys
import traceback
from pathlib import Path

from schedc.check.catalog import METRIC_PREFIX
from schedc.cli.commands import add_set_argument, add_sweep_argument, parse_sweep, sweep_placeholders


def add_arguments(parser) -> None:
    parser.add_argument("file", help="the .sched file")
    parser.add_argument("--model", metavar="MOD:FN", help="model factory (overrides the `model` directive)")
    parser.add_argument("--loss", metavar="MOD:FN", help="loss function (overrides the `loss` directive)")
    parser.add_argument("--data", metavar="MOD:FN", help="data function (overrides the `data` directive)")
    parser.add_argument("--out", metavar="DIR", help="save the final model, the histories and a summary here (a folder holding an earlier run's results is refused unless --force)")
    parser.add_argument("--force", action="store_true", help="replace the results of an earlier run in --out")
    parser.add_argument("--seed", type=int, help="override the file's `seed`")
    add_set_argument(parser)
    parser.add_argument("--chunk", type=_at_least(1), help="steps per compiled chunk (progress granularity)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument(
        "--kernels", action="store_true", help="run a small model's step loops as one XLA:CPU kernel each (steps up to 2.3x faster on a CPU; results differ from the default's by rounding: docs/runtime.md)"
    )
    parser.add_argument("--log", metavar="DIR", help="append each phase's losses, hyperparameters, aux metrics and evaluations to DIR/log.jsonl and DIR/steps.csv (and TensorBoard event files with tensorboardX)")
    parser.add_argument(
        "--compile-cache",
        metavar="DIR",
        default=os.environ.get("SCHEDC_COMPILE_CACHE", str(Path.home() / ".cache" / "schedc" / "xla")),
        help="keep compiled XLA programs here, so the next run of the same phases skips compiling "
        "(default ~/.cache/schedc/xla, or $SCHEDC_COMPILE_CACHE; `none` turns it off)",
    )
    parser.add_argument("--checkpoint", metavar="DIR", help="write checkpoints here and resume from the one found (schedc.runtime.checkpoint)")
    add_sweep_argument(parser)
    parser.add_argument(
        "--best-by", metavar="METRIC", help="with --sweep: rank the settings by an evaluation metric (`val.accuracy`: higher is better for accuracies and scores, "
        "as for `keep best`) instead of the final loss",
    )
    parser.add_argument("--checkpoint-every", type=_at_least(0), default=10, metavar="N", help="also checkpoint every N chunks within a phase (default 10; 0: after phases only)")
    group = parser.add_argument_group("across processes (jax.distributed; docs/scale.md)")
    group.add_argument(
        "--distributed",
        action="store_true",
        help="run as one process of a multi-process job: jax.distributed.initialize() (SLURM, Open MPI and cloud TPU pods need nothing more), "
        "data rows split over every process's devices, files written by process 0",
    )
    group.add_argument("--coordinator", metavar="HOST:PORT", help="the coordinator's address (process 0's host), where JAX cannot detect the cluster; implies --distributed")
    group.add_argument("--num-processes", type=int, metavar="N", help="how many processes the job has (with --coordinator)")
    group.add_argument("--process-id", type=int, metavar="I", help="this process's index, 0 to N-1 (with --coordinator)")


def _at_least(least: int):
    """An argparse type: a whole number >= `least`."""
    import argparse

    def whole(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < least:
            raise argparse.ArgumentTypeError(f"expected a whole number >= {least}, got {text!r}")
        return value

    return whole


class UserCodeError(Exception):
    """The user's model, loss or data code failed; the message says which, where and how."""


_EMBEDDED_FRAME = re.compile(r'File "([^"]+)", line (\d+)')


def _describe(exc: BaseException) -> str:
    from schedc.plan.binding import BindingError

    if isinstance(exc, SystemExit):
        return f"it called sys.exit({exc.code!r})"
    if isinstance(exc, BindingError):  # schedc's own words about the reference: no class name before them
        return str(exc)
    text = [line for line in str(exc).strip().splitlines() if line.strip()]
    if not text:
        return type(exc).__name__
    if "Traceback (most recent call last)" in text[0]:
        # an error raised in a host callback comes back inside the runtime's message, traceback and all:
        # keep its last line and the innermost frame outside the libraries
        frames = [m for m in _EMBEDDED_FRAME.finditer(str(exc)) if not _library(m.group(1))]
        return text[-1].strip() + (f" (at {frames[-1].group(1)}:{frames[-1].group(2)})" if frames else "")
    return f"{type(exc).__name__}: {text[0]}"


def _where(exc: BaseException) -> str:
    """` (in `fn`, at file.py:LINE)`: the innermost frame of the traceback outside schedc, JAX and the
    standard library (its function says whose code failed: the loss, the metrics function, ...)."""
    if isinstance(exc, SyntaxError) and exc.filename:
        return f" (at {exc.filename}:{exc.lineno})"
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if not _library(f.filename)]
    return f" (in `{frames[-1].name}`, at {frames[-1].filename}:{frames[-1].lineno})" if frames else ""


def _library(filename: str) -> bool:
    return any(part in filename for part in (f"{os.sep}schedc{os.sep}", "site-packages", "dist-packages", f"{os.sep}lib{os.sep}python", "<frozen"))


def _call_user(what: str, ref: str, function, *args):
    """`function(*args)`, with anything the user's code raises (SystemExit too) as a UserCodeError."""
    try:
        return function(*args)
    except KeyboardInterrupt:
        raise
    except BaseException as exc:
        raise UserCodeError(f"{what} `{ref}` failed: {_describe(exc)}{_where(exc)}") from None


def _loss_and_data(args, plan, base: Path):
    """(loss, positional data, keyword data, iterable of batches or None)."""
    from schedc.plan.batches import as_batches

    loss_ref, data_ref = args.loss or plan.loss, args.data or plan.data
    if not loss_ref:
        raise LookupError('no loss given: add a `loss "file.py:function"` directive or pass --loss')
    loss = _function("loss", loss_ref, base, from_file=not args.loss)
    data = _returned("data", data_ref, _function("data", data_ref, base, from_file=not args.data), "the loss's extra arguments") if data_ref else ()
    batches = as_batches(data)
    if batches is not None:  # the batch the loss is checked on: the first (read again by the run)
        first = _call_user("data", data_ref, batches.first)
        from schedc.runtime.stream import arrays_of, loss_arguments

        return loss, *loss_arguments(arrays_of(first)), batches
    if isinstance(data, dict):
        return loss, (), data, None
    return loss, _as_tuple(data), {}, None


def _evaluation(plan, base: Path) -> dict:
    """The `eval` metrics function and the `validation` data, as `Program.run` keywords (directives:
    files inside the .sched file's folder, as for `model`, `loss` and `data`)."""
    if not plan.metrics:
        return {}
    validation = _returned("validation", plan.validation, _function("validation", plan.validation, base), "the metrics function's data arguments") if plan.validation else ()
    return {"metrics": _function("eval", plan.metrics, base), "validation": _as_tuple(validation)}


def _function(what: str, ref: str, base: Path, from_file: bool = True):
    """The function `ref` names; a UserCodeError when it cannot be loaded or is no function."""
    from schedc.plan.binding import load_entry

    function = _call_user(what, ref, lambda: load_entry(ref, base, from_file=from_file))
    if not callable(function):
        raise UserCodeError(f"{what} `{ref}` is not a function (it is {type(function).__name__})")
    return function


def _returned(what: str, ref: str, function, meant: str):
    """What `function()` returns; a UserCodeError when it raises, or returns None (its `return` left out)."""
    value = _call_user(what, ref, function)
    if value is None:
        raise UserCodeError(f"{what} `{ref}` returned None: it returns {meant} (a tuple, a dict or one array; is its `return` missing?)")
    return value


def _as_tuple(data) -> tuple:
    return data if isinstance(data, tuple) else (data,)


def _check_loss(loss, model, data_args, data_kwargs, loss_ref: str, state=None) -> None:
    """Trace the loss once on the model and data (no compiling, no running): it must return a
    floating-point scalar (or `(scalar, {name: scalar})`), and the data must be arrays JAX accepts.
    With a model `state` (the model factory returned `(model, state)`) the loss is
    `loss(model, state, *data)` and returns the new state beside the loss (`split_stateful_output`)."""
    import equinox as eqx
    import jax
    import jax.numpy as jnp

    from schedc.compiler.minibatch import split_output, split_stateful_output, takes_key

    key = {"key": jax.random.key(0)} if takes_key(loss) else {}  # a loss with a `key` gets one per step

    def value(m, a, k):
        if state is None:
            return split_output(loss(m, *a, **k, **key))[0]
        return split_stateful_output(loss(m, state, *a, **k, **key))[0]

    try:
        # filter_eval_shape: a model may hold leaves that are not arrays (a spectracles ShareModule's sentinels)
        out = eqx.filter_eval_shape(value, model, data_args, data_kwargs)
    except KeyboardInterrupt:
        raise
    except BaseException as exc:
        raise UserCodeError(f"loss `{loss_ref}` failed on the model and data: {_describe(exc)}{_where(exc)}") from None
    shape, dtype = getattr(out, "shape", None), getattr(out, "dtype", None)
    if shape != () or dtype is None or not jnp.issubdtype(dtype, jnp.floating):
        got = f"an array of shape {shape} and dtype {dtype}" if shape is not None else f"{type(out).__name__}"
        raise UserCodeError(f"loss `{loss_ref}` must return a floating-point scalar, got {got}")


def _prepare_folder(option: str, folder: str) -> Path:
    """Create `folder` and make sure it is writable, before any training: (else OSError/ValueError)."""
    path = Path(folder)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{option} {folder} is a file, not a folder")
    path.mkdir(parents=True, exist_ok=True)
    import tempfile

    with tempfile.TemporaryFile(dir=path):
        pass
    return path


def _earlier_results(folder: Path) -> bool:
    """Whether `folder` holds what an earlier `schedc run --out` saved (a fit's or a sweep's summary)."""
    return (folder / "summary.json").is_file() or (folder / "sweep.json").is_file()


def _join_job(args) -> None:
    """`jax.distributed.initialize`: with --coordinator/--num-processes/--process-id, else JAX
    detects the cluster (SLURM, Open MPI, cloud TPU pods). ValueError/RuntimeError when it cannot."""
    from schedc.runtime import distributed

    given = (args.coordinator, args.num_processes, args.process_id)
    if any(v is not None for v in given) and None in given:
        raise ValueError("--coordinator, --num-processes and --process-id go together (or none of them, where JAX detects the cluster)")
    try:
        distributed.initialize(*given)
    except ValueError as err:
        if given[0] is not None:
            raise
        raise ValueError(f"{err} JAX detected no cluster (SLURM, Open MPI, a cloud TPU pod): pass --coordinator HOST:PORT --num-processes N --process-id I") from None


def _split_rows(data):
    """The data's arrays split by rows over every device of every process (data parallelism); an
    array whose rows do not split evenly is left whole (every device sees all of it), and said so."""
    import jax
    import numpy as np

    from schedc.runtime import distributed

    mesh = distributed.data_mesh()  # one mesh for every leaf
    devices = mesh.devices.size
    whole = []

    def split(x):
        # host data, or arrays of this process; arrays the data function already made global stay as they are
        splittable = isinstance(x, np.ndarray) or (isinstance(x, jax.Array) and x.is_fully_addressable)
        if not splittable or not x.ndim:
            return x
        if x.shape[0] % devices:
            whole.append(x.shape)
            return x
        return distributed.shard_rows(x, mesh=mesh)

    data = jax.tree_util.tree_map(split, data)
    if whole and distributed.is_writer():
        shapes = ", ".join(str(tuple(shape)) for shape in whole)
        print(f"schedc run: data of shape {shapes}: rows not a multiple of the {devices} devices, so not split (every device computes on all of it)", file=sys.stderr)
    return data


def _ready_together(failure: tuple[int, str] | None) -> tuple[int, str] | None:
    """Across processes, whether every process is ready to train (a collective): all train or none
    does, for a process that fails here (its data, its loss check) would leave the others waiting
    in the run's first collective. Another process's failure is this one's too: said naming that
    process, with its message and its exit status."""
    from schedc.runtime import distributed

    said = distributed.gather_json(failure)
    failed = [(i, found[1].removeprefix("schedc run: ")) for i, found in enumerate(said) if found is not None]
    if failure is not None or not failed:
        return failure
    return said[failed[0][0]][0], f"schedc run: {distributed.stopped_by(failed)}"


def _writer() -> bool:
    """Whether this process prints the results: the only one, or process 0 of a distributed job."""
    from schedc.runtime import distributed

    return distributed.is_writer()


# JAX's settings of its persistent compilation cache that `_compile_cache` sets, then puts back
_CACHE_SETTINGS = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs")


@contextlib.contextmanager
def _compile_cache(folder: str):
    """While the command runs, JAX's persistent compilation cache in `folder` (none for "none"): a
    later process running the same phase signatures loads their executables instead of compiling
    them again (within one process the compiler's own cache already shares them). On exit the
    caller's settings come back, so `cli.main(["run", ...])` called from Python leaves its
    process's JAX configuration as it found it. A folder that cannot be written is said, and the
    run compiles without a cache (it is only a speed-up: a read-only home must not stop a fit)."""
    if folder.lower() == "none":
        yield
        return
    try:
        _prepare_folder("--compile-cache", folder)
    except (OSError, ValueError) as err:
        print(f"schedc run: warning: compiling without a cache: {err}", file=sys.stderr)
        yield
        return
    import jax

    before = {name: getattr(jax.config, name) for name in _CACHE_SETTINGS}
    _set_cache(dict(zip(_CACHE_SETTINGS, (folder, 0.0))))  # (every compile kept, however short)
    try:
        yield
    finally:
        _set_cache(before)


def _set_cache(settings: dict) -> None:
    import jax
    from jax.experimental.compilation_cache import compilation_cache

    for name, value in settings.items():
        jax.config.update(name, value)
    compilation_cache.reset_cache()  # (JAX reads the folder once, at the first compile after a reset)


def run(args) -> int:
    if not args.kernels:
        return _run(args)
    from schedc.compiler.kernel import use_kernels

    with use_kernels():
        return _run(args)


def _run(args) -> int:
    path = Path(args.file)
    try:
        with open(path, "rb"):  # unreadable (missing, a folder, no permission): said now, before any work
            pass
    except FileNotFoundError:
        print(f"schedc run: {path}: no such file", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"schedc run: cannot read {path}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    if args.out and _earlier_results(Path(args.out)) and not args.force:
        print(f"schedc run: {args.out}/ holds the results of an earlier run; pass --force to replace them, or choose another --out", file=sys.stderr)
        return 2
    try:
        out = _prepare_folder("--out", args.out) if args.out else None
        if args.checkpoint:
            _prepare_folder("--checkpoint", args.checkpoint)
        if args.log:
            _prepare_folder("--log", args.log)
    except (OSError, ValueError) as err:
        print(f"schedc run: cannot write there: {err}", file=sys.stderr)
        return 2
    if out is not None and _earlier_results(out):
        print(f"schedc run: {out}/ holds earlier results: they will be replaced (--force)", file=sys.stderr)
    with _compile_cache(args.compile_cache):
        return _run_job(args, path, out)


def _run_job(args, path: Path, out: Path | None) -> int:
    """The run itself, once its file and folders are known good."""
    import warnings

    from schedc.lang.diagnostics import SchedError, SchedWarning
    from schedc.surface import api

    distributed = args.distributed or args.coordinator is not None or args.num_processes is not None or args.process_id is not None
    if distributed:
        try:
            _join_job(args)
        except (RuntimeError, ValueError) as err:
            print(f"schedc run: --distributed: cannot join the job: {err}", file=sys.stderr)
            return 2
        if not _writer():  # process 0 prints the tables and writes --out and --log (checkpoints: see Checkpointer)
            out, args.log = None, None
    swept = parse_sweep(args.sweep, "run")
    if isinstance(swept, int):
        return swept
    if swept and args.checkpoint:
        print("schedc run: --sweep and --checkpoint cannot be combined (a sweep is not checkpointed)", file=sys.stderr)
        return 2
    if args.best_by is not None and not swept:
        print("schedc run: --best-by ranks the settings of a --sweep; give --sweep NAME=V1,V2,...", file=sys.stderr)
        return 2
    failure = None  # (exit status, message) when this process cannot train
    try:
        # the model: --model, else the file's `model` directive (a missing one is a diagnostic)
        with warnings.catch_warnings():  # (printed with their source lines below, as `schedc check` prints them)
            warnings.simplefilter("ignore", SchedWarning)
            program = api.compile(path, args.model, key=args.seed, **{**sweep_placeholders(swept, path), **dict(args.set)})
        if program.model is None:
            raise LookupError('no model given: add a `model "file.py:factory"` directive or pass --model')
        if not distributed or _writer():
            _print_warnings(program)
        loss, data_args, data_kwargs, batches = _loss_and_data(args, program.plan, path.parent)
        # refused before the rows are sharded and the loss traced
        if batches is not None and swept:
            raise ValueError("--sweep needs the data as arrays: the `data` function returned an iterable of batches")
        if program.state is not None and swept:
            raise ValueError("--sweep takes no model state: the model function returned (model, state) (an eqx.nn.State); a stateful model runs one setting at a time")
        if distributed and batches is None:  # (an iterable of batches: each process's own share of every batch)
            data_args, data_kwargs = _split_rows((data_args, data_kwargs))
        _check_loss(loss, program.model, data_args, data_kwargs, args.loss or program.plan.loss, program.state)
        evaluation = _evaluation(program.plan, path.parent)
    except SchedError as err:
        failure = (1, err.render())
    except UserCodeError as err:
        failure = (1, f"schedc run: {err}")
    except (LookupError, ImportError, OSError, ValueError, TypeError) as err:  # (TypeError: a --set value that does not fit)
        failure = (2, f"schedc run: {err}")
    if distributed:
        failure = _ready_together(failure)
    if failure is not None:
        print(failure[1], file=sys.stderr)
        return failure[0]
    if swept:
        return _run_sweep(program, swept, loss, data_args, data_kwargs, evaluation, args, out)
    if batches is not None:  # the run reads the batches itself (the first again)
        data_args, data_kwargs = (), {}
    return _train(args, program, loss, data_args, data_kwargs, evaluation, out, batches)


def _print_warnings(program) -> None:
    """The file's warnings (a parameter never free, an unused `let`, ...) on stderr before training,
    as `schedc check` prints them: they do not stop the run, but a run must not hide them."""
    from schedc.lang.diagnostics import render_text

    if program.warnings:
        print(render_text(program.warnings, {program.source.name: program.source}), file=sys.stderr)


def _run_sweep(program, swept: list, loss, data_args, data_kwargs, evaluation: dict, args, out: Path | None) -> int:
    """`--sweep`: every setting at once, each evaluated as the file says (on the same validation
    data); the summary table (best first: by the final loss, or `--best-by val.M`); with --out,
    each setting's results in `setting_I/` and `sweep.json` (settings, final losses, each
    setting's metrics, best)."""
    from schedc.lang.diagnostics import SchedError
    from schedc.runtime.data import DataError
    from schedc.runtime.evaluation import EvalError
    from schedc.runtime.log import json_number
    from schedc.runtime.sweep import SweepError
    from schedc.surface.sweep import sweep
    from schedc.tooling.files import atomic_write

    try:
        _check_best_by(args.best_by, program, evaluation)
    except LookupError as err:
        print(f"schedc run: {err.args[0]}", file=sys.stderr)
        return 2
    except EvalError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    try:
        result = sweep(program, swept).run(loss, *data_args, chunk=args.chunk, quiet=args.quiet, **evaluation, **data_kwargs)
    except SweepError as err:
        print(f"schedc run: {err}", file=sys.stderr)
        return 2
    except SchedError as err:
        print(err.render(), file=sys.stderr)
        for note in getattr(err, "__notes__", ()):
            print(f"  = note: {note}", file=sys.stderr)
        return 1
    except (DataError, EvalError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    try:
        best = result.best(by=args.best_by)
    except ValueError as err:  # no setting's evaluation of the metric came due: the fits are kept, unranked
        print(f"schedc run: --best-by {args.best_by}: {err}; the settings are listed by their final loss", file=sys.stderr)
        best = None
    if _writer():
        print(result.summary(by=args.best_by if best is not None else None))
    if out is not None:
        for i in range(len(result)):
            save(result.setting(i), out / f"setting_{i}")
        metrics = {f"{METRIC_PREFIX}{name}": [json_number(x) for x in result.metric(name)] for name in result.metric_names}
        summary = {"settings": result.settings, "final_losses": [json_number(x) for x in result.final_losses], "metrics": metrics, "best_by": args.best_by or "loss", "best": best}
        atomic_write(out / "sweep.json", json.dumps(summary, indent=2).encode())
        print(f"saved to {out}/")
    return 0 if best is not None else 1


def _check_best_by(best_by: str | None, program, evaluation: dict) -> None:
    """Before the sweep runs: `--best-by` is `loss` or a metric the file's metrics function returns
    (traced on the model, not run); LookupError naming those it returns; EvalError from the tracing."""
    from schedc.runtime.evaluation import Evaluator

    if best_by is None or best_by == "loss":
        return
    if not evaluation:
        raise LookupError(f"--best-by {best_by}: the file evaluates nothing (no `eval \"file.py:metrics\"` directive); rank by `loss` or add one")
    names = Evaluator(evaluation["metrics"], evaluation["validation"]).names(program.model, program.plan.phases[0])
    if not best_by.startswith(METRIC_PREFIX) or best_by.removeprefix(METRIC_PREFIX) not in names:
        returned = ", ".join(f"{METRIC_PREFIX}{name}" for name in names) or "nothing"
        raise LookupError(f"--best-by {best_by}: expected `loss` or a metric of the metrics function, which returns {returned}")


def _train(args, program, loss, data_args, data_kwargs, evaluation: dict, out: Path | None, batches=None) -> int:
    """Run the fit; save what completed whatever happens; the exit status."""
    from schedc.runtime import checkpoint as ckpt
    from schedc.runtime.data import DataError
    from schedc.runtime.distributed import ProcessFailed
    from schedc.runtime.evaluation import EvalError
    from schedc.runtime.runner import RunError

    try:
        runner = program.runner(loss, *data_args, chunk=args.chunk, quiet=args.quiet, batches=batches, **evaluation, **data_kwargs)
    except DataError as err:  # an iterable of batches without a length, in a file counting epochs
        print(f"error: {err}", file=sys.stderr)
        return 1
    if args.log:
        from schedc.runtime.log import RunLog

        runner.logger = RunLog(args.log)
    # a failing jax.debug.callback is logged with a traceback; the error message below says it once
    logging.getLogger("jax._src.debugging").setLevel(logging.CRITICAL)
    try:
        result = runner.run(program.model) if not args.checkpoint else ckpt.run(program, runner, args.checkpoint, args.checkpoint_every)
    except ckpt.CheckpointError as err:
        print(f"schedc run: {err}", file=sys.stderr)
        _save_partial(getattr(err, "result", None), out)
        return 2
    except (DataError, EvalError) as err:
        print(f"error: {err}", file=sys.stderr)
        _save_partial(getattr(err, "result", None), out)
        return 1
    except RunError as err:
        print(result_table(err.result), file=sys.stderr)
        print(f"error: {err}", file=sys.stderr)
        for note in getattr(err, "__notes__", ()):
            print(f"  = note: {note}", file=sys.stderr)
        _save_partial(err.result, out, model_override=err.model)
        return 1
    except KeyboardInterrupt as err:
        signum = getattr(err, "signal", signal.SIGINT)
        print(f"schedc run: interrupted ({signal.Signals(signum).name})", file=sys.stderr)
        _save_partial(getattr(err, "result", None), out)
        if args.checkpoint:
            print(f"schedc run: the checkpoint in {args.checkpoint}/ resumes the run (run the same command again)", file=sys.stderr)
        return 128 + int(signum)
    except ProcessFailed as err:  # another process failed (its own error says how)
        print(f"error: {err}", file=sys.stderr)
        _save_partial(getattr(err, "result", None), out)
        return 1
    except Exception as err:  # the user's code (the loss, the metrics function, a data iterator) failed while running
        print(f"schedc run: training stopped: {_describe(err)}{_where(err)}", file=sys.stderr)
        _save_partial(getattr(err, "result", None), out)
        return 1
    if _writer():
        print(result_table(result))
    if out is not None:
        save(result, out)
        print(f"saved to {out}/")
    return 0


def _save_partial(result, out: Path | None, model_override=None) -> None:
    """Save the completed phases of a run that ended early, and say where (or that there are none)."""
    if out is None or result is None:
        return
    if not result.phases:
        print("schedc run: no phase completed: nothing saved", file=sys.stderr)
        return
    try:
        save(result, out, model_override=model_override)
    except OSError as exc:
        print(f"schedc run: cannot save to {out}: {exc.strerror or exc}", file=sys.stderr)
        return
    print(f"schedc run: the {len(result.phases)} completed phase(s) are saved in {out}/", file=sys.stderr)


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
    """model.eqx (equinox serialisation; ema_model.eqx with `ema`; state.eqx with a model state), losses.npz, hyperparams.npz and summary.json, each
    written atomically (a file beside it, then renamed): a kill leaves old or new, never half."""
    import equinox as eqx
    import numpy as np

    from schedc.runtime.dtypes import serialise_leaf
    from schedc.runtime.log import json_number
    from schedc.tooling.files import atomic_open, atomic_write

    out.mkdir(parents=True, exist_ok=True)
    with atomic_open(out / "model.eqx") as f:
        eqx.tree_serialise_leaves(f, model_override if model_override is not None else result.model, filter_spec=serialise_leaf)
    if result.ema_model is not None and model_override is None:
        with atomic_open(out / "ema_model.eqx") as f:
            eqx.tree_serialise_leaves(f, result.ema_model, filter_spec=serialise_leaf)
    if getattr(result, "state", None) is not None:  # the model state (BatchNorm statistics) after the last phase saved
        with atomic_open(out / "state.eqx") as f:
            eqx.tree_serialise_leaves(f, result.state, filter_spec=serialise_leaf)
    with atomic_open(out / "losses.npz") as f:
        np.savez(f, **{f"phase_{p.index}": p.losses for p in result.phases})
    with atomic_open(out / "hyperparams.npz") as f:
        np.savez(f, **{k: v for k, v in result.hyperparams.items()})
    summary = [
        {
            "index": p.index,
            "name": p.name,
            "steps": p.steps,
            "steps_run": p.steps_run,
            "final_loss": json_number(p.final_loss),
            "stop_reason": p.stop_reason,
            "wall_time": p.wall_time,
            "compile_time": p.compile_time,
        }
        for p in result.phases
    ]
    atomic_write(out / "summary.json", json.dumps(summary, indent=2).encode())
