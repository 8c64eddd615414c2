"""The dtypes numpy has not, and the leaves of them.

Typed PRNG key arrays (`jax.random.key`) have no numpy dtype at all: a key is written to a file
as its key data (`jax.random.key_data`: uint32) and wrapped again, with the key implementation of
the leaf it is read into, when it is read. They turn up in optimizer states (`noisy_sgd`,
`add_noise`) and in models that keep a key as a fixed leaf. ml_dtypes' floats (bfloat16, the
float8s) are numpy dtypes of kind "V" (raw bytes): `is_number` counts them as the numbers they are.
"""

from __future__ import annotations

import numpy as np


def is_number(dtype, complex_ok: bool = False) -> bool:
    """Whether `dtype` (a numpy dtype) is a bool, integer or real float one, bfloat16 and the
    float8s included, or (with `complex_ok`) a complex one."""
    import jax

    return dtype.kind in ("biufc" if complex_ok else "biuf") or jax.dtypes.issubdtype(dtype, np.floating)


def is_key(x) -> bool:
    import jax

    return isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def key_data(x):
    """A key array's data, any other leaf as it is."""
    import jax

    return jax.random.key_data(x) if is_key(x) else x


def wrapped_like(data, like):
    """`data` as a key array of `like`'s implementation when `like` is a key array, else as it is."""
    import jax

    return jax.random.wrap_key_data(data, impl=jax.random.key_impl(like)) if is_key(like) else data


def serialise_leaf(f, x) -> None:
    """equinox's `default_serialise_filter_spec`, writing a key array as its key data."""
    import equinox as eqx

    eqx.default_serialise_filter_spec(f, key_data(x))


def deserialise_leaf(f, x):
    """equinox's `default_deserialise_filter_spec`, reading a key array back as one (`x`: the leaf read into)."""
    import equinox as eqx

    return wrapped_like(eqx.default_deserialise_filter_spec(f, key_data(x)), x)
