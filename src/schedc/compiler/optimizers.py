"""A phase's optimizer as optax composes it: members, chains, plateau, groups, EMA, accumulation.

The Plan names transformations (`OptimizerSpec`); this module splits each
one's keyword arguments into static ones (part of the phase signature) and
fed ones (runtime numbers, schedules allowed), and builds the optax
transformation inside the traced step from this step's values (see
`chunk.make_transform`). The order optax applies them in, outermost first:

    optax.MultiSteps(                               # `accumulate N`
      chain(
        partition({group: chain(members..., reduce_on_plateau)}),
        ema_params(decay)))                         # `ema D`

so a plateau scales its group's updates, the EMA moves once per real update,
and every piece of state (moments, plateau counters, the EMA) is a plain
array in the optimizer state: checkpoints and `carry state` carry it.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any, NamedTuple

from schedc.check import catalog
from schedc.plan import resolve as P

# Transformations whose update needs the loss (`value`, and `grad` and the loss function
# `value_fn`) besides the gradient (tests/test_optimizers.py finds every one in optax that does
# and holds this set to it).
NEEDS_VALUE = frozenset(
    {"lbfgs", "polyak_sgd", "scale_by_polyak", "scale_by_zoom_linesearch", "scale_by_backtracking_linesearch", "contrib.reduce_on_plateau", "contrib.momo", "contrib.momo_adam", "contrib.sophia"}
)
# Those that take the loss function as `obj_fn` too. Only they get it: a line search hands every
# keyword it does not know on to the loss function, and refuses one that function does not take.
NEEDS_OBJ_FN = frozenset({"contrib.sophia"})



@dataclass(frozen=True)
class Member:
    """One optax transformation of a group: `fed` maps its keyword to an index in the group's hypers."""

    name: str
    static: tuple[tuple[str, Any], ...]
    fed: tuple[tuple[str, int], ...]
    transform: Any = None  # an optax object bound to `optimizer $name` (a nodes.Bound): run as-is, keyed by identity


def factory(name: str):
    """The optax function a (possibly dotted) name denotes: `contrib.muon` -> optax.contrib.muon."""
    import optax
    import optax.contrib  # noqa: F401  (a submodule: imported so that getattr finds it)

    target = optax
    for part in name.split("."):
        target = getattr(target, part)
    return target


def split_kwargs(spec: P.OptimizerSpec) -> tuple[tuple[tuple[str, Any], ...], list[tuple[str, Any]]]:
    """A transformation's keyword arguments: (static at trace time, fed every step).

    Booleans, integers and bare names (dtypes, choices) are static (optax uses them for
    shapes and control flow, e.g. lbfgs' memory_size); every other number or schedule is
    fed as a runtime number, so changing it never recompiles — unless optax checks that
    number in Python when building the transformation (`_validated_in_python`): then a
    constant is static.
    """
    from schedc.lang import nodes as n
    from schedc.lang.expr import constant

    static, fed = [], []
    for name, expr in spec.kwargs:
        if isinstance(expr, n.Bool):
            static.append((name, expr.value))
        elif isinstance(expr, n.Number) and isinstance(expr.value, int) and not isinstance(expr.value, bool):
            static.append((name, expr.value))
        elif isinstance(expr, (n.Name, n.String)):
            static.append((name, expr.id if isinstance(expr, n.Name) else expr.value))
        else:
            fed.append((name, expr))
    constants = [(k, constant(v)) for k, v in fed]
    if fed and all(isinstance(v, (int, float)) for _, v in constants) and _validated_in_python(spec.name, tuple(static), tuple(constants)):
        return tuple(static) + tuple((k, float(v)) for k, v in constants), []
    return tuple(static), fed


@lru_cache(maxsize=None)
def _validated_in_python(name: str, static: tuple, constants: tuple) -> bool:
    """Whether building `name` (with its `static` keywords) with these numbers as traced values fails
    (optax compares them in Python, as contrib.reduce_on_plateau does with `factor`): such numbers
    must be static."""
    import warnings

    import jax

    keys = [k for k, _ in constants]

    def build(*values):
        with warnings.catch_warnings():  # (the real build warns the user, once: a probe's are not theirs)
            warnings.simplefilter("ignore")
            factory(name)(**{k: static_value(v) for k, v in static}, **dict(zip(keys, values)))
        return 0

    try:
        jax.make_jaxpr(build)(*[float(v) for _, v in constants])
    except (jax.errors.ConcretizationTypeError, jax.errors.TracerBoolConversionError):
        return True
    except Exception:  # a wrong value: building with the constants reports it where the user can see it
        return False
    return False


def static_value(value):
    """A static keyword as optax takes it: dtype names become dtypes."""
    if isinstance(value, str) and value in catalog.DTYPES:
        import jax.numpy as jnp

        return jnp.dtype(value)
    return value


def build_member(member: Member, values: list):
    if member.transform is not None:
        return member.transform.value
    kwargs = {k: static_value(v) for k, v in member.static}
    kwargs.update({k: values[i] for k, i in member.fed})
    return factory(member.name)(**kwargs)


def build_group(members: tuple[Member, ...], plateau, values: list, held: bool = False):
    """A group's transformation: its members chained, then its plateau scale (`held`: stepped
    by an evaluation metric at each evaluation, see `held_plateau`)."""
    import optax

    txs = [build_member(m, values) for m in members]
    if plateau is not None:
        txs.append(held_plateau(plateau) if held else optax.contrib.reduce_on_plateau(**dict(plateau)))
    return txs[0] if len(txs) == 1 else optax.chain(*txs)


def held_plateau(keywords):
    """optax.contrib.reduce_on_plateau's state, its scale applied to every update but not stepped:
    `plateau(on=val.M)` steps it once per evaluation with M (`step_plateaus`), not with each step's loss."""
    import jax
    import optax

    plateau = optax.contrib.reduce_on_plateau(**dict(keywords))

    def update(updates, state, params=None, **extra):
        del params, extra
        return jax.tree_util.tree_map(lambda g: state.scale * g, updates), state

    return optax.GradientTransformationExtraArgs(plateau.init, update)


def step_plateaus(state, plateaus: tuple, values: tuple):
    """`state` with its plateau states (tree order: group order) stepped by optax.contrib.reduce_on_plateau's
    own update, each with its value (None: left alone, a plateau driven by the loss in the loop).
    `plateaus` holds each one's keywords. Traceable: the chunk calls it at each evaluation
    (compiler.evaluate), fed each value as float32, as the plateau's own state holds it."""
    import jax
    import jax.numpy as jnp
    import optax.contrib

    pending = iter(zip(plateaus, values))

    def one(x):
        if not isinstance(x, optax.contrib.ReduceLROnPlateauState):
            return x
        keywords, value = next(pending)
        if value is None:
            return x
        return optax.contrib.reduce_on_plateau(**dict(keywords)).update((), x, value=jnp.asarray(value, jnp.float32))[1]

    return jax.tree_util.tree_map(one, state, is_leaf=lambda x: isinstance(x, optax.contrib.ReduceLROnPlateauState))


WITH_VALUE = frozenset({"value", "grad", "value_fn"})


def loss_keywords(members: tuple[Member, ...], plateau) -> frozenset[str]:
    """The keywords a group's update takes besides the gradient: none, `WITH_VALUE`, or those and
    `obj_fn`. An optax object gets the loss too: every optax object accepts (and ignores) them."""
    if not (plateau is not None or any(m.transform is not None or m.name in NEEDS_VALUE for m in members)):
        return frozenset()
    return WITH_VALUE | ({"obj_fn"} if any(m.name in NEEDS_OBJ_FN for m in members) else set())


# ---------------------------------------------------------------- the EMA of the free parameters


class EmaParamsState(NamedTuple):
    """The exponential moving average of the parameters after each update."""

    ema: Any


def ema_params(decay):
    """A transformation that leaves updates alone and keeps `ema = decay * ema + (1 - decay) * params`
    of the parameters after each update (optax.incremental_update), starting from the parameters."""
    import jax
    import jax.numpy as jnp
    import optax

    def init(params):
        return EmaParamsState(jax.tree_util.tree_map(jnp.asarray, params))

    def update(updates, state, params=None, **extra):
        del extra
        new_params = optax.apply_updates(params, updates)
        return updates, EmaParamsState(optax.incremental_update(new_params, state.ema, 1.0 - decay))

    return optax.GradientTransformationExtraArgs(init, update)


def find_states(state, kind) -> list:
    """Every sub-state of type `kind` in an optimizer state, in tree order."""
    import jax

    return [x for x in jax.tree_util.tree_leaves(state, is_leaf=lambda x: isinstance(x, kind)) if isinstance(x, kind)]


def ema_of(state) -> dict | None:
    """The EMA of the free parameters held in an optimizer state, or None without `ema`."""
    found = find_states(state, EmaParamsState)
    return dict(found[0].ema) if found else None


def plateau_scales(state):
    """The current scale of every plateau in an optimizer state (group order), as one float32 vector."""
    import jax.numpy as jnp
    import optax.contrib

    scales = [s.scale for s in find_states(state, optax.contrib.ReduceLROnPlateauState)]
    return jnp.stack([jnp.asarray(s, jnp.float32) for s in scales]) if scales else jnp.zeros((0,), jnp.float32)
