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
    assert table["adam"][0] == ("learning_rate", False, None)
    assert ("b1", True, "0.9") in table["adam"]
    assert ("momentum", True, "None") in table["sgd"]
    assert ("weight_decay", True, "0.0001") in table["adamw"]


def test_only_optimizers_are_listed():
    for name in _optax_table.OPTIMIZERS:
        assert isinstance(getattr(optax, name)(**_required_args(name)), optax.GradientTransformation), name
    assert "scale_by_adam" not in _optax_table.OPTIMIZERS and "chain" not in _optax_table.OPTIMIZERS


def _required_args(name: str) -> dict:
    return {p: 0.1 for p, has_default, _ in _optax_table.OPTIMIZERS[name] if not has_default}


def test_default_reprs_are_stable():
    gen = _generator()
    assert gen.default_repr(0.9) == "0.9" and gen.default_repr(None) == "None" and gen.default_repr("sps") == "'sps'"
    assert "0x" not in gen.default_repr(object())
