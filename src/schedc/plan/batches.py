"""A run's data as the plan sees it, before anything runs: the loss's arrays, or an iterable of
batches (`Batches`) and how many batches one pass holds (what turns epochs into steps).

Plain Python: no JAX (`schedc check --model` asks whether a `data` function returns an iterable
without a length, and `schedc check` without a model imports nothing heavy). The runtime reads
the batches (runtime.stream).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any


class DataError(ValueError):
    """Data that cannot feed a phase: mismatched leading axes, a batch larger than the data, ..."""


@dataclass
class Batches:
    """An iterable of batches as a run's data (`Program.run(loss, batches=...)`, or returned by
    the function a `data` directive names).

    `source` is an iterable (re-iterated for every pass), an iterator (read once), or a function
    returning a fresh iterator (called for every pass). Each batch is a tuple (the loss's
    positional data arguments), a dict (its keyword arguments) or one array (its one data
    argument); its leaves are arrays. `per_epoch` is the number of batches in a pass when
    `len(source)` does not say it (a grain DataLoader has no length): it turns epochs into steps.
    `sharding` places every batch as `jax.device_put(batch, sharding)` would (data parallel): a
    `jax.sharding.NamedSharding` such as `NamedSharding(mesh, PartitionSpec("data"))`, splitting
    each leaf's leading (example) axis over the mesh's `data` axis, or a pytree prefix of the
    batch's structure holding one per leaf (runtime.stream checks it and stacks each chunk so).
    Across processes (`jax.distributed`) each process gives its own source, yielding its share of
    every global batch, and `sharding` (by default each leaf's leading axis over every device)
    spans every process's devices.
    """

    source: Any
    per_epoch: int | None = None
    sharding: Any = None
    _first: Any = field(default=None, init=False, repr=False)  # the first batch, once read
    _peeked: tuple | None = field(default=None, init=False, repr=False)  # (its iterator, it) until a run takes them

    def __post_init__(self):
        if self.per_epoch is not None and (not isinstance(self.per_epoch, int) or self.per_epoch < 1):
            raise ValueError(f"per_epoch must be a number of batches >= 1, got {self.per_epoch!r}")

    @property
    def one_shot(self) -> bool:
        """Read once: an iterator (a generator) cannot start a second pass."""
        return isinstance(self.source, Iterator)

    @property
    def factory(self) -> bool:
        """A function returning a fresh iterator (called for every pass), not an iterable itself."""
        return callable(self.source) and not hasattr(self.source, "__iter__")

    @property
    def batches_per_epoch(self) -> int | None:
        if self.per_epoch is not None:
            return self.per_epoch
        if self.one_shot or self.factory:
            return None
        try:
            return len(self.source) or None
        except TypeError:
            return None

    def new_pass(self):
        """A fresh iterator over the source."""
        if self.factory:
            return iter(self.source())
        return iter(self.source)

    def first(self):
        """The first batch: what the loss is checked and compiled for (the run reads it again as its first)."""
        if self._first is None:
            self._peeked = self.read_first()
            self._first = self._peeked[1]
        return self._first

    def read_first(self) -> tuple:
        """(a fresh iterator, its first batch)."""
        iterator = self.new_pass()
        try:
            return iterator, next(iterator)
        except StopIteration:
            raise DataError("the iterable of batches yielded no batch; expected at least one") from None

    def take_peeked(self) -> tuple:
        """(the iterator `first()` read from, that batch) for the run that reads on from there; a
        fresh pass for a later run (a one-shot iterator: where the last run left it)."""
        self.first()
        peeked, self._peeked = self._peeked, None
        return peeked or self.read_first()


def _not_streams() -> tuple:
    """Types that are data themselves, never an iterable of batches: containers of arrays, text, arrays."""
    import numpy as np

    jax = sys.modules.get("jax")  # a JAX array can exist only once JAX is imported
    return (tuple, list, dict, str, bytes, np.ndarray, np.generic) + ((jax.Array,) if jax is not None else ())


def as_batches(data) -> Batches | None:
    """`data` as an iterable of batches, or None when it is the loss's arrays themselves.

    Streams: a `Batches`, an iterator or generator, and any other iterable that is not a
    tuple, list or dict (of arrays) nor an array (a grain DataLoader or dataset, say). A list
    of batches is a pytree of arrays to the loss: wrap it, `Batches(list_of_batches)`.
    """
    if isinstance(data, Batches):
        return data
    if isinstance(data, _not_streams()) or not hasattr(data, "__iter__"):
        return None
    return Batches(data)
