"""Training on data inside the compiled loop: minibatches, per-step keys, auxiliary outputs.

Minibatches are gathered on the device: every epoch is a fresh permutation of
the examples keyed by (seed, phase, epoch), so a run is reproducible, editing
one phase changes no other phase's order, and a run resumed at any step sees the
batches an uninterrupted one would (the position is the phase-local step alone).
Step i of a phase uses epoch `i // steps_per_epoch`, batch `i % steps_per_epoch`
of that epoch's permutation; the last partial batch of an epoch is dropped
(`steps_per_epoch = examples // batch`), so every step has the same shapes and a
fresh permutation decides which examples sit out.

Batches from an iterable (runtime.stream) come stacked per chunk instead: step i reads row
`i % chunk` (`stream_row`).

A loss taking a `key` keyword gets `fold_in(phase key, step)`. A run given a model
state (`state=`, an `eqx.nn.State`) calls `loss(model, state, *data)` and carries the
state it returns from step to step (`split_stateful_output`).
"""

from __future__ import annotations

import inspect
import zlib
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable

# Streams of randomness split off the root key, apart from the inits' (seed, phase, path) keys.
DATA_STREAM = zlib.crc32(b"schedc.data")
LOSS_STREAM = zlib.crc32(b"schedc.loss")


def phase_keys(root, phase_index: int):
    """(permutation key, loss key) of a phase: runtime arguments, so phases share executables.

    One compiled call (four eager `fold_in`s cost about half a millisecond per phase)."""
    import numpy as np

    return _phase_keys()(root, np.int32(phase_index))


def phase_key_pair(root, phase_index):
    """(permutation key, loss key) of a phase, traceable: what `phase_keys` computes, and what a
    fused segment computes on the device from each phase's index (so the keys are the same)."""
    import jax

    fold = jax.random.fold_in
    return fold(fold(root, DATA_STREAM), phase_index), fold(fold(root, LOSS_STREAM), phase_index)


@lru_cache(maxsize=None)
def _phase_keys():
    import jax

    return jax.jit(phase_key_pair)


def epoch_permutation(data_key, epoch, examples: int):
    """The order of the examples in `epoch` (a traced int) of the phase whose key is `data_key`."""
    import jax

    return jax.random.permutation(jax.random.fold_in(data_key, epoch), examples)


def traced_kwargs(loss_fn: Callable, kwargs: dict) -> dict:
    """The keywords to trace `loss_fn` with outside the steps (its dtype, its effects): a stand-in
    `key` for a loss that takes one, as each step passes it."""
    import jax

    return dict(kwargs, key=jax.random.key(0)) if takes_key(loss_fn) else kwargs


def takes_key(fn: Callable) -> bool:
    """Whether `fn` accepts a `key` keyword argument (dropout, augmentation)."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return "key" in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def row_shardings(arrays) -> tuple | None:
    """For data sharded along its example axis over a mesh (`NamedSharding(mesh, P("data"))`): the
    sharding each array's minibatches keep, so every device computes the loss of its share of a
    batch (data parallelism); None when no array is sharded that way."""
    from jax.sharding import NamedSharding, PartitionSpec

    shardings = []
    for x in arrays:
        sharding = getattr(x, "sharding", None)
        spec = sharding.spec if isinstance(sharding, NamedSharding) else ()
        shardings.append(NamedSharding(sharding.mesh, PartitionSpec(spec[0])) if len(spec) and spec[0] is not None else None)
    return tuple(shardings) if any(shardings) else None


@dataclass(frozen=True)
class Sampler:
    """Gathers the minibatch of a step from the data arrays (all with `examples` rows)."""

    batch: int
    examples: int
    shardings: tuple | None = None  # see `row_shardings`

    @property
    def steps_per_epoch(self) -> int:
        return self.examples // self.batch

    def start(self, data_key, step):
        """The permutation of the epoch holding `step` (a chunk starting mid-epoch picks it up)."""
        return epoch_permutation(data_key, step // self.steps_per_epoch, self.examples)

    def draw(self, data_key, perm, step, arrays: tuple):
        """(this step's permutation, its minibatch): a new permutation at each epoch's first step."""
        import jax
        import jax.numpy as jnp

        spe = self.steps_per_epoch
        offset = step % spe
        perm = jax.lax.cond(offset == 0, lambda: epoch_permutation(data_key, step // spe, self.examples), lambda: perm)
        rows = jax.lax.dynamic_slice_in_dim(perm, offset * self.batch, self.batch)
        batch = tuple(jnp.take(x, rows, axis=0) for x in arrays)
        if self.shardings is not None:
            batch = tuple(x if s is None else jax.lax.with_sharding_constraint(x, s) for x, s in zip(batch, self.shardings))
        return perm, batch


def stream_row(stacked: tuple, step, chunk: int, shardings: tuple | None = None) -> tuple:
    """The batch of `step` from a chunk of `chunk` stacked batches (runtime.stream): row `step % chunk`,
    kept as each batch is sharded (`shardings`, per array: data parallel streams)."""
    import jax

    rows = tuple(jax.lax.dynamic_index_in_dim(x, step % chunk, keepdims=False) for x in stacked)
    if shardings is None:
        return rows
    return tuple(jax.lax.with_sharding_constraint(x, s) for x, s in zip(rows, shardings))


def split_output(out) -> tuple[Any, dict]:
    """(loss, aux metrics) of a loss's output: a scalar, or `(loss, {name: scalar})`."""
    if isinstance(out, tuple):
        if len(out) != 2 or not isinstance(out[1], dict):
            raise TypeError(f"the loss returned a tuple of {len(out)} items; expected a scalar or (loss, {{name: scalar}})")
        return out
    return out, {}


STATEFUL_FORMS = "(loss, state), (loss, (state, {name: scalar})) or (loss, ({name: scalar}, state))"


def split_stateful_output(out) -> tuple[Any, dict, Any]:
    """(loss, aux metrics, new state) of a stateful loss's output (`loss(model, state, *data)`, the
    equinox convention for BatchNorm and other layers with an `eqx.nn.State`): `(loss, state)`,
    or the state and the aux metrics together in either order."""
    import equinox as eqx

    if isinstance(out, tuple) and len(out) == 2:
        loss, rest = out
        if isinstance(rest, eqx.nn.State):
            return loss, {}, rest
        if isinstance(rest, tuple) and len(rest) == 2:
            first, second = rest
            if isinstance(first, eqx.nn.State) and isinstance(second, dict):
                return loss, second, first
            if isinstance(second, eqx.nn.State) and isinstance(first, dict):
                return loss, first, second
    got = f"a tuple of {len(out)} items" if isinstance(out, tuple) else type(out).__name__
    raise TypeError(f"the loss was given a model state (`state=`) and returned {got}; expected {STATEFUL_FORMS}, the state an eqx.nn.State")


def check_aux(aux: dict) -> None:
    """Aux metrics are logged as per-chunk means: each must be a scalar."""
    for name, value in aux.items():
        shape = getattr(value, "shape", ())
        if shape != ():
            raise TypeError(f"the loss's aux metric `{name}` has shape {tuple(shape)}; aux metrics must be scalars (logged as per-chunk means)")
