"""The generated optax table matches the installed optax (regenerate: python tools/gen_optax_table.py)."""

from __future__ import annotations

import importlib.util
import pathlib

import optax

from schedc.check import _optax_table

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _generator():
    spec = importlib.util.spec_from_file_location("gen_optax_table", ROOT / "tools" / "gen_optax_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_table_is_up_to_date():
    gen = _generator()
    expected = gen.render(optax)
    actual = (ROOT / "src" / "schedc" / "check" / "_optax_table.py").read_text()
    assert actual == expected, "src/schedc/check/_optax_table.py is stale: run `python tools/gen_optax_table.py`"
    assert _optax_table.OPTAX_VERSION == optax.__version__


def test_table_has_the_common_optimizers_with_their_real_signatures():
    table = _optax_table.OPTIMIZERS
    for name in ("adam", "adamw", "sgd", "lbfgs", "rmsprop", "lion", "adafactor", "adagrad", "radam", "lamb"):
        assert name in table, name
    assert table["adam"][0] == ("learning_rate", False, None, "number")
    assert ("b1", True, "0.9", "number") in table["adam"]
    assert ("mu_dtype", True, "None", "dtype") in table["adam"]
    assert ("nesterov", True, "False", "bool") in table["adam"]
    assert ("momentum", True, "None", "number") in table["sgd"]
    assert ("weight_decay", True, "0.0001", "number") in table["adamw"]
    assert ("memory_size", True, "10", "int") in table["lbfgs"]
    assert ("mask", True, "None", "object") in table["adamw"]


def test_only_optimizers_are_listed():
    for name in _optax_table.OPTIMIZERS:
        assert isinstance(getattr(optax, name)(**_required_args(name)), optax.GradientTransformation), name
    assert "scale_by_adam" not in _optax_table.OPTIMIZERS and "chain" not in _optax_table.OPTIMIZERS


def test_transforms_are_the_nameable_non_optimizers_and_contrib():
    table = _optax_table.TRANSFORMS
    for name in ("clip_by_global_norm", "clip", "add_decayed_weights", "scale_by_adam", "contrib.muon", "contrib.reduce_on_plateau", "contrib.schedule_free_adamw"):
        assert name in table, name
    # combinators take transformations or functions: the language has its own chain/accumulate/ema
    for name in ("chain", "masked", "inject_hyperparams", "partition", "stateless", "contrib.sam", "contrib.schedule_free", "scale_by_schedule", "freeze"):
        assert name not in table, name
    assert not set(table) & set(_optax_table.OPTIMIZERS)
    for name in table:
        assert isinstance(_factory(name)(**_required_args(name)), optax.GradientTransformation), name


def _factory(name: str):
    target = optax
    for part in name.split("."):
        target = getattr(target, part)
    return target


def _required_args(name: str) -> dict:
    table = _optax_table.OPTIMIZERS if name in _optax_table.OPTIMIZERS else _optax_table.TRANSFORMS
    return {p: (1 if kind == "int" else 0.1) for p, has_default, _, kind in table[name] if not has_default}


def test_default_reprs_are_stable():
    gen = _generator()
    assert gen.default_repr(0.9) == "0.9" and gen.default_repr(None) == "None" and gen.default_repr("sps") == "'sps'"
    assert "0x" not in gen.default_repr(object())
