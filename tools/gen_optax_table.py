"""Generate src/schedc/check/_optax_table.py: every optax transformation the language can name.

`schedc check` validates optimizer names and keyword arguments against optax's
real signatures, but must not import JAX (optax imports it). So this script
inspects the installed optax once and writes the result as plain Python data;
tests/test_optax_table.py regenerates it and fails when the checked-in table is
stale (after an optax upgrade: run `python tools/gen_optax_table.py`).

Three tables:
- OPTIMIZERS: the public top-level functions of `optax` defined in
  `optax._src.alias` (adam, adamw, sgd, lbfgs, ...): each builds a complete
  optimizer from hyperparameters.
- TRANSFORMS: every other public function of `optax` and `optax.contrib` that
  returns a GradientTransformation and whose required arguments are values
  (numbers, names), so it can be written in the language: `clip_by_global_norm`,
  `add_decayed_weights`, `scale_by_adam`, `contrib.muon`, `contrib.reduce_on_plateau`,
  ... Combinators taking transformations or functions (`chain`, `masked`,
  `inject_hyperparams`, `contrib.sam`, ...) are left out: the language's own
  `chain(...)`, `accumulate N` and `ema D` stand for the ones it supports.
  contrib members are named with their submodule, `contrib.muon`.
- LEFT_OUT: transformations that would be nameable but cannot run in a schedc
  step (per-example gradients: `contrib.dpsgd`), with the reason `schedc check`
  gives when a file names one.

Each parameter is (name, has_default, default_repr or None, kind), kind being
what the language may pass: "number" (a number or a schedule), "int", "bool",
"string" (a bare name or a string), "dtype" (a dtype name) or "object" (not
expressible: masks, line searches, tuples; only its default is used).
"""

from __future__ import annotations

import argparse
import inspect
import pathlib
import sys

TARGET = pathlib.Path(__file__).resolve().parents[1] / "src" / "schedc" / "check" / "_optax_table.py"

_LITERALS = (type(None), bool, int, float, str)

# Transformations that take per-example gradients (a leading batch axis on every gradient, from
# `jax.vmap` of the loss): a schedc step differentiates the loss of the whole batch, so they are
# left out of the language, and `schedc check` says why (`LEFT_OUT`).
PER_EXAMPLE = ("contrib.differentially_private_aggregate", "contrib.dpsgd")
PER_EXAMPLE_WHY = "it takes per-example gradients (a batch axis on every gradient), and a schedc step differentiates the loss of the whole batch"


def default_repr(value) -> str:
    """A stable text for a default value: `repr` of a literal, else `<qualified name>`.

    Objects (a line-search transformation, a dtype class) have reprs with memory
    addresses, which would make the table differ on every run.
    """
    if isinstance(value, _LITERALS):
        return repr(value)
    target = value if inspect.isclass(value) or inspect.isfunction(value) else type(value)
    return f"<{getattr(target, '__module__', '?')}.{getattr(target, '__qualname__', type(value).__name__)}>"


def kind_of(param) -> str:
    """What the language may pass for `param` (see the module docstring)."""
    text = str(param.annotation)
    default = param.default
    if param.name.endswith("dtype") or "DType" in text:
        return "dtype"
    if param.name == "key":  # a PRNG key, or the int seed optax makes one of (`utils.canonicalize_key`)
        return "int"
    if param.annotation is bool or isinstance(default, bool):
        return "bool"
    if isinstance(default, str) or text.startswith("typing.Literal"):
        return "string"
    if param.annotation is param.empty:
        return "number" if isinstance(default, (int, float)) else "object"
    if param.annotation is int or text in ("typing.Optional[int]", "int | None"):
        return "int"
    if param.name == "mask" or param.name.endswith("_mask") or param.name.endswith("_fn"):
        return "object"
    if text.startswith(("typing.Union[typing.Any", "typing.Optional[typing.Any]", "collections.abc.Callable", "typing.Callable")):
        return "object"
    if "tuple[" in text or "DimensionNumbers" in text or "GradientTransformation" in text:
        return "object"
    if "float" in text or "numpy.number" in text:
        return "number"
    return "object"


def _params(fn) -> tuple:
    out = []
    for p in inspect.signature(fn).parameters.values():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        has_default = p.default is not p.empty
        out.append((p.name, has_default, default_repr(p.default) if has_default else None, kind_of(p)))
    return tuple(out)


def _public_functions(module):
    for name in sorted(dir(module)):
        fn = getattr(module, name)
        if not name.startswith("_") and inspect.isfunction(fn):
            yield name, fn


def optimizers(optax) -> dict[str, tuple]:
    """{name: ((parameter, has_default, default_repr or None, kind), ...)} in signature order."""
    return {name: _params(fn) for name, fn in _public_functions(optax) if fn.__module__ == "optax._src.alias"}


def _is_transform(fn) -> bool:
    """A function returning a GradientTransformation whose required arguments the language can write."""
    signature = inspect.signature(fn)
    if "GradientTransformation" not in str(signature.return_annotation):
        return False
    return not any(p.kind == p.VAR_POSITIONAL or (p.default is p.empty and kind_of(p) == "object") for p in signature.parameters.values())


def transforms(optax) -> dict[str, tuple]:
    """The other nameable transformations: top-level ones and `contrib.*`."""
    import optax.contrib

    table = {}
    for prefix, module in (("", optax), ("contrib.", optax.contrib)):
        for name, fn in _public_functions(module):
            if (prefix or fn.__module__ != "optax._src.alias") and _is_transform(fn) and prefix + name not in PER_EXAMPLE:
                table[prefix + name] = _params(fn)
    return table


def left_out(optax) -> dict[str, str]:
    """{name: why it is not in the language} for the transformations optax has that are left out."""
    import optax.contrib

    return {name: PER_EXAMPLE_WHY for name in PER_EXAMPLE if hasattr(optax.contrib, name.removeprefix("contrib."))}


def _render_table(title: str, table: dict) -> list[str]:
    lines = [f"{title}: dict[str, tuple[tuple[str, bool, str | None, str], ...]] = {{"]
    for name, params in table.items():
        lines.append(f"    {name!r}: (")
        lines.extend(f"        {p!r}," for p in params)
        lines.append("    ),")
    lines.append("}")
    return lines


def render(optax) -> str:
    lines = [
        '"""optax optimizers and transformations with their signatures, for `schedc check` (which must not import JAX).',
        "",
        "GENERATED by tools/gen_optax_table.py from the installed optax; do not edit.",
        "tests/test_optax_table.py fails when this table no longer matches optax.",
        '"""',
        "",
        f"OPTAX_VERSION = {optax.__version__!r}",
        "",
        "# name -> ((parameter, has_default, default_repr or None, kind), ...), in signature order",
        *_render_table("OPTIMIZERS", optimizers(optax)),
        "",
        "# transformations that are not complete optimizers, and optax.contrib (dotted names)",
        *_render_table("TRANSFORMS", transforms(optax)),
        "",
        "# transformations of optax left out of the language: name -> why (`schedc check` says it)",
        f"LEFT_OUT: dict[str, str] = {left_out(optax)!r}",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if the checked-in table is stale instead of writing it")
    args = ap.parse_args(argv)
    import optax

    text = render(optax)
    if args.check:
        stale = not TARGET.exists() or TARGET.read_text() != text
        print(f"{TARGET} is {'stale' if stale else 'up to date'}")
        return int(stale)
    TARGET.write_text(text)
    print(f"wrote {TARGET} ({len(optimizers(optax))} optimizers, {len(transforms(optax))} transformations, optax {optax.__version__})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
