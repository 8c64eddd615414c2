"""A small MLP fine-tuned on a regression task. Used by examples/finetune.sched.

Parameters: layers[0].weight, layers[0].bias, layers[1].weight, layers[1].bias, head.weight, head.bias.
"""

import equinox as eqx
import jax
import jax.numpy as jnp


class MLP(eqx.Module):
    layers: list
    head: eqx.nn.Linear

    def __call__(self, x):
        for layer in self.layers:
            x = jax.nn.tanh(layer(x))
        return self.head(x)[0]


def build_model() -> MLP:
    k0, k1, k2 = jax.random.split(jax.random.key(0), 3)
    return MLP([eqx.nn.Linear(4, 32, key=k0), eqx.nn.Linear(32, 32, key=k1)], eqx.nn.Linear(32, 1, key=k2))


def make_data():
    kx, kn = jax.random.split(jax.random.key(2))
    x = jax.random.normal(kx, (512, 4))
    y = jnp.sin(x[:, 0]) + 0.5 * x[:, 1] * x[:, 2] - 0.3 * x[:, 3] ** 2 + 0.05 * jax.random.normal(kn, (512,))
    return x, y


def loss(model: MLP, x, y):
    return jnp.mean((jax.vmap(model)(x) - y) ** 2)
