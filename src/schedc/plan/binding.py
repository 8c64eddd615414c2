"""Binding a schedule to its model: load the factory, discover parameters, run the model checks.

A model reference is `"path/to/file.py:factory"` or `"package.module:factory"`
(imported normally). Trust model (docs/runtime.md): a reference written in a
`.sched` file (its `model`, `loss`, `data` directives) names a file inside the
`.sched` file's folder: absolute paths and `..` out of it are refused, and there
is no fallback to the current directory, so reading the folder shows every file
the schedule can run. A reference given by the caller (`--model`, `--loss`,
`--data`, `schedc.compile(..., model="...")`) is the caller's choice: it may be
absolute, relative to the `.sched` file's folder or to the current directory.
`load_model` calls the factory with no arguments. Nothing the user's code does
(an import error, an exception in the factory, a `SystemExit`) escapes
`check_against_model`: it becomes diagnostic E0406 with the exception as a note.

JAX is imported only when a model is actually loaded or its parameters
discovered, so the model-free check path never pays for it.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import sys
from pathlib import Path

from schedc.lang import nodes as n
from schedc.lang.diagnostics import Diagnostic
from schedc.lang.program import first_directive

# (resolved path, mtime_ns) -> module: a file loaded once per version (the language server re-checks often)
_FILE_MODULES: dict[tuple[str, int], object] = {}


class BindingError(Exception):
    """A model reference that cannot be resolved; the message is user-facing."""


def _split(ref: str) -> tuple[str, str]:
    module, sep, attr = ref.rpartition(":")
    if not sep or not module or not attr.isidentifier():
        raise BindingError(f"`{ref}` is not a reference of the form `file.py:function` or `package.module:function`")
    return module, attr


def _is_file_ref(module: str) -> bool:
    return module.endswith(".py") or "/" in module or "\\" in module


def _load_file(path: Path):
    """Import a Python file as a module of its own (registered so dataclasses and pickling work)."""
    resolved = path.resolve()
    if not resolved.is_file():
        raise BindingError(f"no such file: {path}")
    key = (str(resolved), resolved.stat().st_mtime_ns)
    if key in _FILE_MODULES:
        return _FILE_MODULES[key]
    name = "schedc_model_" + hashlib.sha1(str(resolved).encode()).hexdigest()[:12] + "_" + resolved.stem
    spec = importlib.util.spec_from_file_location(name, resolved)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    # the model file may import its neighbours
    folder = str(resolved.parent)
    added = folder not in sys.path
    if added:
        sys.path.insert(0, folder)
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    finally:
        if added and folder in sys.path:
            sys.path.remove(folder)
    _FILE_MODULES[key] = module
    return module


def _import(name: str, folders: list[str]):
    """`importlib.import_module`, with the .sched file's folder and the cwd on the path meanwhile."""
    added = [f for f in dict.fromkeys(folders) if f not in sys.path]
    sys.path[:0] = added
    try:
        return importlib.import_module(name)
    finally:
        for f in added:
            if f in sys.path:
                sys.path.remove(f)


def _confined(module_ref: str, base_dir: Path) -> Path:
    """The file a `.sched` file's directive names, which must lie in the file's folder."""
    path = Path(module_ref)
    if path.is_absolute() or os.path.normpath(module_ref).split(os.sep)[0] == os.pardir or path.drive:
        raise BindingError(
            f"`{module_ref}` is outside the folder of the .sched file: a directive may only name files "
            "inside it (pass the path with --model/--loss/--data, or as compile()'s model, to use it anyway)"
        )
    return Path(base_dir) / path


def load_entry(ref: str, base_dir: Path | str = ".", *, from_file: bool = False):
    """The object `ref` names: `file.py:name` or `package.module:name`.

    Args:
        base_dir: the .sched file's folder, where relative files are found.
        from_file: the reference is written in the .sched file (a directive): a file must lie
            inside `base_dir`, and neither files nor modules are looked for in the current directory.

    Raises:
        BindingError: for a malformed reference, a file outside the folder (`from_file`), a
        missing file or a missing attribute; whatever importing the module raises otherwise.
    """
    module_ref, attr = _split(ref)
    if _is_file_ref(module_ref) and from_file:
        module = _load_file(_confined(module_ref, Path(base_dir)))
    elif _is_file_ref(module_ref):
        path = Path(module_ref)
        if not path.is_absolute():
            # relative to the .sched file; a path typed on the command line may be relative to the cwd
            path = Path(base_dir) / path if (Path(base_dir) / path).is_file() or not path.is_file() else path
        module = _load_file(path)
    else:
        folders = [str(Path(base_dir).resolve())] + ([] if from_file else [str(Path.cwd())])
        module = _import(module_ref, folders)
    try:
        return getattr(module, attr)
    except AttributeError:
        raise BindingError(f"`{module_ref}` has no attribute `{attr}`") from None


def load_model(ref: str, base_dir: Path | str = ".", *, from_file: bool = False):
    """Call the factory `ref` names with no arguments and return what it returns: the model, or
    `(model, state)` (see `model_and_state`)."""
    factory = load_entry(ref, base_dir, from_file=from_file)
    if not callable(factory):
        raise BindingError(f"`{ref}` is not callable")
    value = factory()
    if value is None:  # (else "pattern `a` matches no parameter; the model has no parameters")
        raise BindingError(f"`{ref}` returned None: a model factory returns the model (is its `return` missing?)")
    return value


def model_and_state(value) -> tuple:
    """(model, state) of what a model factory returned: `(model, state)` as
    `eqx.nn.make_with_state(Net)(key)` returns it (the state an `eqx.nn.State`: BatchNorm's running
    statistics, trained beside the model and never a parameter), or the model alone (state None)."""
    equinox = sys.modules.get("equinox")  # an eqx.nn.State exists only once equinox is imported
    if equinox is not None and type(value) is tuple and len(value) == 2 and isinstance(value[1], equinox.nn.State):
        return value
    return value, None


def _describe(exc: BaseException) -> str:
    if isinstance(exc, BindingError):
        return str(exc)
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def bind_model(file: n.File, model_ref: str | None, base_dir: Path | str):
    """Load and discover the model: ((what the factory returned, its ParamTree) or None,
    diagnostics). E0406 when it fails. A factory returning `(model, state)` has the model's
    parameters discovered (`model_and_state`).

    `model_ref` None uses the file's `model` directive; with neither, (None, []).
    """
    from schedc.plan.params import discover

    directive = first_directive(file, "model")
    from_file = model_ref is None
    if from_file:
        if directive is None or not isinstance(directive.value, n.String):
            return None, []
        model_ref, span = directive.value.value, directive.value.span
    else:
        span = n.NO_SPAN
    try:
        model = load_model(model_ref, base_dir, from_file=from_file)
        tree = discover(model_and_state(model)[0])
    except BaseException as exc:  # the user's code: anything it raises is a diagnostic
        if isinstance(exc, KeyboardInterrupt):
            raise
        return None, [
            Diagnostic(
                "E0406",
                f"model `{model_ref}` could not be loaded",
                span,
                notes=(_describe(exc),),
                help="a model reference is `file.py:factory` (relative to the .sched file) or `package.module:factory`; the factory takes no arguments",
            )
        ]
    return (model, tree), []


def check_against_model(parsed, model_ref: str | None, base_dir: Path | str, *, bind=None) -> list:
    """The model-dependent diagnostics of a parsed file (E04xx, W0103, W0105, ...): `schedc check --model`.

    What the model-free check finds is its own (`resolve(..., checked=True)`), so this returns
    only what the model adds, whether or not the caller has run that check.

    Args:
        parsed: a `syntax.ParseResult`.
        model_ref: `MOD:FN` or `file.py:FN`; None to use the file's `model` directive
            (no directive: nothing to check, []).
        base_dir: where relative model files are found (the .sched file's folder).
        bind: how the model is loaded (None: `bind_model`; the language server passes its cache's).
    """
    from schedc.plan.resolve import resolve

    bound, diags = (bind or bind_model)(parsed.file, model_ref, base_dir)
    if bound is None:
        return diags
    return resolve(parsed.file, bound[1], checked=True)[1] + epochs_without_length(parsed.file, base_dir)


# a data function -> its batches per pass, or None: an iterable of batches without a length (the
# function is called once per version of its file; a check repeated by the language server does not reload the data)
_UNSIZED: dict = {}


def epochs_without_length(file: n.File, base_dir: Path | str) -> list:
    """E0408: the file counts epochs (a phase's length or durations, `eval ... every epoch`, or a
    directive or `let` holding epochs: `resolve.counts_epochs`, the runtime's own test) while its
    `data` function returns an iterable of batches without a length, so an epoch is no number of
    steps (`schedc run` would stop with a DataError before training). Reported at the first phase
    that counts epochs itself, else at `every epoch`, else at the first `N epochs` written.

    The data function is called (as `schedc run` calls it) but its batches are not read: a
    generator runs no code until its first batch. Whatever the function raises is left to
    `schedc run` to report: the check says nothing then.
    """
    from schedc.plan.resolve import counts_epochs

    data = first_directive(file, "data")
    if data is None or not isinstance(data.value, n.String) or not counts_epochs(file):
        return []
    ref = data.value.value
    try:
        function = load_entry(ref, base_dir, from_file=True)
        if function not in _UNSIZED:
            _UNSIZED[function] = _unsized_type(function())
        kind = _UNSIZED[function]
    except BaseException as exc:  # the user's code: `schedc run` names what it raised
        if isinstance(exc, KeyboardInterrupt):
            raise
        return []
    if kind is None:
        return []
    from schedc.lang.diagnostics import Label

    where, what = _where_epochs_count(file)
    return [
        Diagnostic(
            "E0408",
            f"{what}, but `data \"{ref}\"` returns {kind} without a length: an epoch is no number of steps",
            where,
            labels=(Label(data.value.span, "returns batches without a length"),),
            help="return `schedc.Batches(source, per_epoch=N)` (N batches per pass) or a source with a length (a list, a grain MapDataset), or count in steps",
        )
    ]


def _where_epochs_count(file: n.File) -> tuple:
    """(span, what) for E0408: the first phase counting epochs itself (its header), else `every
    epoch`, else the first `N epochs` written (in a directive or a `let`)."""
    from schedc.check.data import counts_epochs as phase_counts_epochs
    from schedc.lang.program import header_span

    phase = next((node for node in n.walk(file) if isinstance(node, n.Phase) and phase_counts_epochs(node)), None)
    if phase is not None:
        return header_span(phase), "this phase counts epochs"
    evaluation = first_directive(file, "eval")
    if evaluation is not None and evaluation.every is not None and evaluation.every.unit == "epochs":
        return evaluation.every.span, "`every epoch` counts epochs"
    duration = next(node for node in n.walk(file) if isinstance(node, n.Epochs))
    return duration.span, "this duration counts epochs"


def _unsized_type(data) -> str | None:
    """How messages name `data` (`a generator`) when it is an iterable of batches without a length; else None."""
    from schedc.plan.batches import as_batches

    batches = as_batches(data)
    if batches is None or batches.batches_per_epoch is not None:
        return None
    return "a function returning an iterator" if batches.factory else f"a {type(batches.source).__name__}"
