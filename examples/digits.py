"""Handwritten digits (scikit-learn's bundled `load_digits`: 1,797 8x8 images, no download)
classified by a small MLP with dropout. Used by examples/digits.sched.

Parameters: layers[0].weight, layers[0].bias, layers[1].weight, layers[1].bias, head.weight, head.bias.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

VALIDATION = 360  # held-out images; the other 1,437 train


class MLP(eqx.Module):
    layers: tuple
    head: eqx.nn.Linear
    dropout: eqx.nn.Dropout

    def __call__(self, x, key=None):
        """Logits of one image (64 pixels); dropout is active only when a key is given."""
        keys = jax.random.split(key, len(self.layers)) if key is not None else [None] * len(self.layers)
        for layer, k in zip(self.layers, keys):
            x = self.dropout(jax.nn.relu(layer(x)), key=k, inference=k is None)
        return self.head(x)


def build_model() -> MLP:
    k0, k1, k2 = jax.random.split(jax.random.key(0), 3)
    return MLP((eqx.nn.Linear(64, 128, key=k0), eqx.nn.Linear(128, 128, key=k1)), eqx.nn.Linear(128, 10, key=k2), eqx.nn.Dropout(0.2))


def _split():
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    order = np.random.default_rng(0).permutation(len(x))
    x, y = (x[order] / 16.0).astype(np.float32), y[order].astype(np.int32)
    return (x[VALIDATION:], y[VALIDATION:]), (x[:VALIDATION], y[:VALIDATION])


def train():
    """The training images and labels: arrays with a leading example axis, split into minibatches by `batch`."""
    return _split()[0]


def val():
    return _split()[1]


def loss(model: MLP, x, y, key):
    """Mean cross-entropy of a minibatch, with dropout keyed per step; the accuracy as an aux metric."""
    logits = jax.vmap(model)(x, jax.random.split(key, len(x)))
    ce = -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], axis=1))
    return ce, {"accuracy": jnp.mean(jnp.argmax(logits, axis=1) == y)}


def metrics(model: MLP, x, y):
    """Validation loss and accuracy (no dropout)."""
    logits = jax.vmap(model)(x)
    ce = -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], axis=1))
    return {"loss": ce, "accuracy": jnp.mean(jnp.argmax(logits, axis=1) == y)}
