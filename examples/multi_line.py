"""Two emission lines sharing one width parameter (spectracles' tied-parameter example).

`line_b.width` is the same array object as `line_a.width`: one parameter whose parent path is
`line_a.width` and whose shared copy is `line_b.width`. Used by examples/multi_line.sched.
"""

import equinox as eqx
import jax
import jax.numpy as jnp

X = jnp.linspace(-1.0, 1.0, 200)


class Line(eqx.Module):
    amplitude: jax.Array
    width: jax.Array
    center: float = eqx.field(static=True)

    def __call__(self, x):
        return self.amplitude * jnp.exp(-0.5 * ((x - self.center) / self.width) ** 2)


class TwoLines(eqx.Module):
    line_a: Line
    line_b: Line
    offset: jax.Array

    def __call__(self, x):
        return self.line_a(x) + self.line_b(x) + self.offset


def build_model() -> TwoLines:
    width = jnp.asarray(0.15)  # one array at two paths: a shared (tied) parameter
    return TwoLines(Line(jnp.asarray(1.0), width, -0.3), Line(jnp.asarray(1.0), width, 0.4), jnp.asarray(0.0))


def make_data():
    x = X
    y = 2.0 * jnp.exp(-0.5 * ((x + 0.3) / 0.1) ** 2) + 0.7 * jnp.exp(-0.5 * ((x - 0.4) / 0.1) ** 2) + 0.25
    return x, y + 0.01 * jax.random.normal(jax.random.key(1), x.shape)


def loss(model: TwoLines, x, y):
    return jnp.mean((model(x) - y) ** 2)
