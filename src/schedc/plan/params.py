"""Parameter discovery: the parameters of an equinox Module or any JAX pytree.

`discover(model)` walks the model once with `jax.tree_util.tree_flatten_with_path`
and returns a `ParamTree` of plain data (paths, leaf indices, shapes, dtypes):

* every inexact-array leaf (float or complex `jax.Array`/`numpy` array, or a
  `jax.ShapeDtypeStruct` of such a dtype) is a parameter at its canonical path;
* a node with `val` and `fix` fields (a spectracles `Parameter`) is ONE parameter
  at the node's path, whose leaf is its `val` array; a spectracles
  `ConstrainedParameter` stores `unconstrained_val` instead, and that array is
  the leaf (values are trained in unconstrained space). A spectracles `Known`
  is a constant, not a parameter;
* the same array object at several paths is one parameter: the first path in
  tree order is its parent, later paths are shared copies.
* in a model with spectracles-style parameter nodes, ONLY those nodes are
  parameters: any other array (a FourierGP's frequency grid `_freqs`, a data
  grid) is a constant no pattern can free, as in spectracles;
* a spectracles `ShareModule` is seen through: paths are those of its inner
  model as `get_parameter_paths()` prints them (`a`, not `model.a`), and the
  copies it replaced by sentinels are shared copies of their parent (a
  pattern naming only copies is E0402), without leaves of their own.

Leaf indices address `jax.tree_util.tree_leaves(model)` (the standard flatten),
so the compiler can flatten the model, update leaves by index and unflatten it.
JAX is imported inside `discover` only: this module's data types are used on
the model-free path too.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cached_property

from schedc.lang.glob import format_key, join

# field names a spectracles-style parameter node keeps its array in, in order of preference
_VALUE_FIELDS = ("val", "unconstrained_val")


@dataclass(frozen=True)
class Param:
    """One parameter (a parent), with its shared copies.

    `leaf` indexes `jax.tree_util.tree_leaves(model)`; `kind` is "array" (a bare
    leaf), "parameter" (a `val`/`fix` node: `path` is the node's, the leaf is
    its `val`) or "constrained" (the leaf is `unconstrained_val`).
    """

    path: str
    leaf: int
    shape: tuple[int, ...] = ()
    dtype: str = "float32"
    shared: tuple[str, ...] = ()
    shared_leaves: tuple[int, ...] = ()
    kind: str = "array"

    @property
    def size(self) -> int:
        size = 1
        for d in self.shape:
            size *= d
        return size


@dataclass(frozen=True)
class ParamTree:
    """The parameters of a model, parents in tree order. Plain data: no JAX objects."""

    params: tuple[Param, ...]
    num_leaves: int = 0
    # (path, what it is) of the array leaves that are not parameters (an int counter, a spectracles
    # `Known`): a pattern that names one is told why it matches no parameter (E0401's note)
    constants: tuple[tuple[str, str], ...] = ()

    @classmethod
    def from_paths(cls, paths, shared: dict[str, str] | None = None) -> "ParamTree":
        """A tree known only by its parent paths (and optionally shared copy -> parent); no shapes."""
        copies: dict[str, list[str]] = {}
        for copy, parent in (shared or {}).items():
            copies.setdefault(parent, []).append(copy)
        params = tuple(Param(p, i, shape=(), dtype="", shared=tuple(copies.get(p, ()))) for i, p in enumerate(paths))
        return cls(params, len(params))

    @cached_property
    def paths(self) -> tuple[str, ...]:
        """Every parent path, tree order."""
        return tuple(p.path for p in self.params)

    @cached_property
    def shared(self) -> dict[str, str]:
        """Shared copy path -> its parent's path."""
        return {copy: p.path for p in self.params for copy in p.shared}

    @cached_property
    def index(self) -> dict[str, int]:
        """Parent path -> position in `params`."""
        return {p.path: i for i, p in enumerate(self.params)}

    def __len__(self) -> int:
        return len(self.params)

    def __getitem__(self, path: str) -> Param:
        return self.params[self.index[path]]


def is_array(x) -> bool:
    """An array leaf (JAX or numpy, or an abstract one), of any dtype."""
    import jax
    import numpy as np

    return isinstance(x, (jax.Array, np.ndarray, np.generic, jax.ShapeDtypeStruct))


def _is_inexact(x) -> bool:
    import jax
    import numpy as np

    return is_array(x) and jax.dtypes.issubdtype(x.dtype, np.inexact)  # (not numpy's: a typed PRNG key has no numpy dtype)


_NODE_FIELDS: dict[type, str | None] = {}


def value_field(node) -> str | None:
    """The array field of a spectracles-style parameter node (`val`/`fix` fields), else None. Cached per type."""
    cls = type(node)
    if cls not in _NODE_FIELDS:
        fields = getattr(cls, "__dataclass_fields__", None)
        found = None
        if isinstance(fields, dict) and "fix" in fields and not isinstance(node, type):
            found = next((f for f in _VALUE_FIELDS if f in fields), None)
        _NODE_FIELDS[cls] = found
    return _NODE_FIELDS[cls]


def _is_known(node) -> bool:
    # spectracles `Known`: a fixed Parameter that can never be freed; matched by class name so
    # that spectracles stays an optional dependency
    return any(c.__name__ == "Known" for c in type(node).__mro__)


def _component(key) -> str:
    """One canonical path component for a JAX key-path entry."""
    import jax.tree_util as jtu

    if isinstance(key, jtu.GetAttrKey):
        return "." + key.name
    if isinstance(key, jtu.SequenceKey):
        return f"[{key.idx}]"
    if isinstance(key, jtu.DictKey):
        return format_key(key.key)
    if isinstance(key, jtu.FlattenedIndexKey):
        return f"[{key.key}]"
    return format_key(str(key))


def path_of(keypath) -> str:
    """The canonical path of a JAX key path (`(GetAttrKey('gp'), SequenceKey(0))` -> `gp[0]`)."""
    return join(_component(k) for k in keypath)


def discover(model) -> ParamTree:
    """The parameters of `model` (an equinox Module or any JAX pytree), in tree order.

    Linear in the number of leaves: one flatten of the model, plus one flatten
    of each parameter node (a handful of leaves each).
    """
    import jax.tree_util as jtu

    entries, _ = jtu.tree_flatten_with_path(model, is_leaf=lambda x: value_field(x) is not None)
    share = is_share_module(model)
    arrays: list[tuple[str, int, object, str]] = []  # bare arrays: (path, leaf index, array, kind)
    nodes: list[tuple[str, int, object, str]] = []  # parameter nodes' value arrays
    constants: list[tuple[str, str]] = []  # (path, what it is) of arrays that are not parameters
    leaf = 0
    for keypath, x in entries:
        if share:  # paths inside a ShareModule are its inner model's (its other fields hold no arrays)
            keypath = keypath[1:]
        field_name = value_field(x)
        if field_name is None:
            if _is_inexact(x):
                arrays.append((path_of(keypath), leaf, x, "array"))
            elif is_array(x):
                constants.append((path_of(keypath), f"an array of dtype {x.dtype}: only floating-point and complex arrays are parameters (gradients are taken of those alone)"))
            leaf += 1
            continue
        sub, _ = jtu.tree_flatten_with_path(x)
        if _is_known(x):
            constants.append((path_of(keypath), "a spectracles `Known`: a constant"))
        else:
            for j, (subpath, value) in enumerate(sub):
                if len(subpath) == 1 and getattr(subpath[0], "name", None) == field_name and _is_inexact(value):
                    kind = "parameter" if field_name == "val" else "constrained"
                    nodes.append((path_of(keypath), leaf + j, value, kind))
                    break
        leaf += len(sub)
    # a model written with parameter nodes says what is trainable: its other arrays are constants
    if nodes:
        constants += [(path, "an array outside the model's parameter nodes: with spectracles' `Parameter`s, only they are trained") for path, *_ in arrays]
    tree = replace(_group(nodes or arrays, leaf), constants=tuple(constants))
    return _with_share_copies(tree, model) if share else tree


def parameter_nodes(model) -> list[tuple[str, object]]:
    """(path, node) of every spectracles-style parameter node, paths as `discover` writes them."""
    import jax.tree_util as jtu

    entries, _ = jtu.tree_flatten_with_path(model, is_leaf=lambda x: value_field(x) is not None)
    skip = 1 if is_share_module(model) else 0
    return [(path_of(keypath[skip:]), x) for keypath, x in entries if value_field(x) is not None]


def is_share_module(model) -> bool:
    """A spectracles ShareModule (recognised by its fields: spectracles stays optional)."""
    return all(hasattr(model, a) for a in ("model", "_dupl_leaf_paths", "_dupl_leaf_ids", "_parent_leaf_paths"))


def _node_path(leaf_path) -> str:
    """The parameter path of a ShareModule leaf path (`(a, val)` -> `a`): its node's path."""
    keys = list(leaf_path)
    if keys and getattr(keys[-1], "name", None) in _VALUE_FIELDS:
        keys.pop()
    return path_of(keys)


def _with_share_copies(tree: ParamTree, model) -> ParamTree:
    """Register the copies a ShareModule replaced by sentinels as shared copies (no leaves) of their parents."""
    from dataclasses import replace

    copies: dict[str, list[str]] = {}
    for ident, copy in zip(model._dupl_leaf_ids, model._dupl_leaf_paths):
        parent = model._parent_leaf_paths.get(ident)
        if parent is not None:
            copies.setdefault(_node_path(parent), []).append(_node_path(copy))
    params = tuple(replace(p, shared=p.shared + tuple(copies.get(p.path, ()))) for p in tree.params)
    return ParamTree(params, tree.num_leaves)


def _group(found, num_leaves: int) -> ParamTree:
    """Tie entries holding the same array object (by `id`): the first is the parent."""
    parents: dict[int, int] = {}  # id(array) -> position in `rows`
    rows: list[list] = []  # [path, leaf, array, kind, shared paths, shared leaves]
    for path, leaf, array, kind in found:
        at = parents.get(id(array))
        if at is None:
            parents[id(array)] = len(rows)
            rows.append([path, leaf, array, kind, [], []])
        else:
            rows[at][4].append(path)
            rows[at][5].append(leaf)
    dtype_names: dict[object, str] = {}  # str(dtype) is slow; a model has few distinct dtypes
    params = tuple(
        Param(path, leaf, tuple(map(int, array.shape)), dtype_names.get(array.dtype) or dtype_names.setdefault(array.dtype, str(array.dtype)), tuple(copies), tuple(copy_leaves), kind)
        for path, leaf, array, kind, copies, copy_leaves in rows
    )
    return ParamTree(params, num_leaves)
