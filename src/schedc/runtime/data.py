"""The training data as the runtime sees it: its size (which turns epochs into steps) and
the checks a minibatched phase needs before it runs.

Every array the loss receives (positional and keyword data) is split into
minibatches along its leading axis, so all of them must have the same number of
examples there. Constants the loss needs whole belong in the loss function (a
closure) or in the model.
"""

from __future__ import annotations

import numpy as np

from schedc.plan import resolve as P
from schedc.plan.batches import DataError  # noqa: F401 (its home for the runtime's callers: schedc.runtime.data.DataError)


def leading_sizes(arrays) -> list[int]:
    return [int(np.shape(x)[0]) if np.ndim(x) else 0 for x in arrays]


def data_size(arrays) -> P.DataSize | None:
    """The examples of the data (the common leading axis of every array), or None when they disagree."""
    sizes = set(leading_sizes(arrays))
    if len(sizes) != 1 or 0 in sizes:
        return None
    return P.DataSize(examples=sizes.pop())


def check_batchable(phase: P.PhasePlan, arrays, names: list[str]) -> None:
    """Raise DataError naming the phase unless its `batch` can be drawn from `arrays`."""
    if not phase.batch:
        return
    if not arrays:
        raise DataError(f"{phase.label} has `batch {phase.batch}` but the loss gets no data arrays to draw minibatches from")
    sizes = leading_sizes(arrays)
    if len(set(sizes)) != 1 or 0 in sizes:
        listed = ", ".join(f"{name}: {np.shape(x)}" for name, x in zip(names, arrays))
        raise DataError(f"{phase.label} draws minibatches along the leading axis of every data array, but their leading axes differ ({listed}); expected one example count")
    if phase.batch > sizes[0]:
        raise DataError(f"{phase.label} has `batch {phase.batch}` but the data holds only {sizes[0]} examples; expected a batch of at most {sizes[0]}")


def array_names(args: tuple, kwargs: dict) -> list[str]:
    """How messages name each data array, in the order of `chunk.split((args, kwargs))`."""
    import jax

    names = []
    for path, leaf in jax.tree_util.tree_flatten_with_path((args, kwargs))[0]:
        if isinstance(leaf, (jax.Array, np.ndarray, np.generic)):
            head, *rest = path
            where = f"argument {path[1].idx}" if head.idx == 0 else f"keyword `{path[1].key}`"
            names.append(where + jax.tree_util.keystr(tuple(path[2:])))
    return names
