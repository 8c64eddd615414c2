"""Parameter discovery: canonical paths, leaf indices, parameter nodes, shared parameters, large trees."""

from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from schedc.plan.params import ParamTree, discover


class Kernel(eqx.Module):
    lengthscale: jax.Array
    variance: jax.Array


class GP(eqx.Module):
    coefficients: jax.Array
    kernel: Kernel


class Node(eqx.Module):
    """A spectracles-style Parameter: `val` and `fix` fields."""

    val: jax.Array
    fix: bool = False


class Constrained(eqx.Module):
    unconstrained_val: jax.Array
    lower: float
    fix: bool = False


class Known(Node):
    """Named like spectracles' Known: a constant, not a parameter."""


def leaves(model):
    return jax.tree_util.tree_leaves(model)


def test_paths_are_canonical_and_leaves_address_the_standard_flatten():
    model = {
        "gp": GP(jnp.zeros(4), Kernel(jnp.asarray(1.0), jnp.asarray(2.0))),
        "layers": [{"w": jnp.ones((2, 3)), "b": jnp.zeros(3)}, {"w": jnp.ones((3, 1)), "b": jnp.zeros(1)}],
        "q-proj": jnp.ones(2),
        "steps": jnp.arange(3),  # integer: not a parameter
        "flag": True,
        "scale": 0.5,  # a Python float is not an array
    }
    tree = discover(model)
    assert list(tree.paths) == [
        "gp.coefficients",
        "gp.kernel.lengthscale",
        "gp.kernel.variance",
        "layers[0].b",
        "layers[0].w",
        "layers[1].b",
        "layers[1].w",
        '["q-proj"]',
    ]
    flat = leaves(model)
    assert tree.num_leaves == len(flat)
    for p in tree.params:
        assert flat[p.leaf].shape == p.shape
        assert str(flat[p.leaf].dtype) == p.dtype
    assert tree["layers[0].w"].shape == (2, 3)
    assert tree["layers[0].w"].size == 6


def test_sequences_namedtuples_and_root_lists():
    class Pair(NamedTuple):
        left: jax.Array
        right: jax.Array

    tree = discover([Pair(jnp.zeros(1), jnp.ones(1)), (jnp.zeros(2),)])
    assert tree.paths == ("[0].left", "[0].right", "[1][0]")


def test_numpy_and_abstract_leaves_are_parameters():
    tree = discover({"a": np.zeros(2, np.float64), "b": jax.ShapeDtypeStruct((3,), jnp.float32), "c": np.zeros(2, np.int32)})
    assert tree.paths == ("a", "b")
    assert tree["b"].shape == (3,)


def test_a_typed_prng_key_leaf_is_not_a_parameter():
    """A model may keep a key (`jax.random.key`) as a leaf: it has no numpy dtype, and is fixed."""
    tree = discover({"a": jnp.zeros(2), "k": jax.random.key(0), "raw": jax.random.PRNGKey(0)})
    assert tree.paths == ("a",)


def test_parameter_nodes_are_one_parameter_at_the_node_path():
    model = {"amp": Node(jnp.ones(1)), "width": Constrained(jnp.zeros(1), 0.0), "const": Known(jnp.ones(1), True), "raw": jnp.ones(2)}
    tree = discover(model)
    # dict keys sort; the Known is a constant, and so is `raw`: beside parameter nodes a bare array is data
    assert tree.paths == ("amp", "width")
    assert tree["amp"].kind == "parameter"
    assert tree["width"].kind == "constrained"
    flat = leaves(model)
    assert flat[tree["amp"].leaf] is model["amp"].val
    assert flat[tree["width"].leaf] is model["width"].unconstrained_val
    assert "raw" not in tree.index


def test_shared_arrays_are_one_parameter_first_path_is_parent():
    width = jnp.asarray(0.15)
    model = {"line_a": {"width": width, "amp": jnp.ones(())}, "line_b": {"width": width, "amp": jnp.ones(())}, "z": [width]}
    tree = discover(model)
    assert tree.paths == ("line_a.amp", "line_a.width", "line_b.amp")
    assert tree.shared == {"line_b.width": "line_a.width", "z[0]": "line_a.width"}
    parent = tree["line_a.width"]
    assert parent.shared == ("line_b.width", "z[0]")
    flat = leaves(model)
    assert all(flat[i] is width for i in parent.shared_leaves)


def test_shared_parameter_nodes():
    node = Node(jnp.ones(1))
    tree = discover({"a": node, "b": node})
    assert tree.paths == ("a",)
    assert tree.shared == {"b": "a"}


def test_equal_but_distinct_arrays_are_not_shared():
    tree = discover({"a": jnp.ones(2), "b": jnp.ones(2)})
    assert tree.shared == {}


def test_from_paths():
    tree = ParamTree.from_paths(["a", "b"], shared={"c": "a"})
    assert tree.paths == ("a", "b")
    assert tree.shared == {"c": "a"}
    assert tree["a"].shared == ("c",)


@pytest.mark.parametrize("n_layers", [1000])
def test_thousand_layer_list(n_layers):
    # the time it takes is measured by bench/bench_resolve.py, not asserted here
    shared = jnp.ones(4)
    model = [{"w": jnp.ones(4), "b": jnp.zeros(4), "tied": shared} for _ in range(n_layers)]
    tree = discover(model)
    assert len(tree) == 2 * n_layers + 1
    assert len(tree.shared) == n_layers - 1
    assert tree.params[-1].path == f"[{n_layers - 1}].w"


def test_spectracles_model_when_installed():
    sp = pytest.importorskip("spectracles")

    class Line(eqx.Module):
        amplitude: sp.Parameter
        width: sp.Parameter

    class Two(eqx.Module):
        line_a: Line
        line_b: Line
        off: sp.Parameter

    width = sp.Parameter(initial=0.1)
    model = Two(Line(sp.Parameter(initial=1.0), width), Line(sp.Parameter(initial=2.0), width), sp.Parameter(initial=0.0))
    tree = discover(model)
    # spectracles' own verified answer (research §1.2): parents and one shared copy
    assert tree.paths == ("line_a.amplitude", "line_a.width", "line_b.amplitude", "off")
    assert tree.shared == {"line_b.width": "line_a.width"}


def test_a_pattern_naming_an_array_that_is_no_parameter_is_told_why():
    """`free n` for an int counter said "matches no parameter; the model's parameters: a", as if `n`
    were not in the model at all."""
    from schedc.lang.diagnostics import SchedError
    import schedc

    tree = discover({"a": jnp.zeros(2), "n": jnp.asarray(3), "k": jax.random.key(0)})
    assert [path for path, _ in tree.constants] == ["k", "n"]
    nodes = discover({"amp": Node(jnp.ones(1)), "const": Known(jnp.ones(1), True), "raw": jnp.ones(2)})
    assert dict(nodes.constants) == {"const": "a spectracles `Known`: a constant", "raw": "an array outside the model's parameter nodes: with spectracles' `Parameter`s, only they are trained"}
    with pytest.raises(SchedError) as err:
        schedc.compile("phase 10 lr 0.1 < free a, n; init k = 1 >", {"a": jnp.zeros(2), "n": jnp.asarray(3), "k": jax.random.key(0)})
    notes = {d.span.column: d.notes for d in err.value.diagnostics if d.code == "E0401"}
    assert notes == {
        27: ("`n` is an array of dtype int32: only floating-point and complex arrays are parameters (gradients are taken of those alone)", "the model's parameters: a"),
        35: ("`k` is an array of dtype key<fry>: only floating-point and complex arrays are parameters (gradients are taken of those alone)", "the model's parameters: a"),
    }
