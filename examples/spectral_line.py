"""A spectral-line fit: a smooth continuum (a Fourier-feature Gaussian process) plus one emission line.

Parameters (canonical paths): gp.coefficients, gp.kernel.lengthscale, gp.kernel.variance,
line.amplitude, line.center, line.width, offset. Used by examples/spectral_line.sched.
"""

import equinox as eqx
import jax
import jax.numpy as jnp

N_FEATURES = 16
WAVELENGTH = jnp.linspace(-1.0, 1.0, 256)


class Kernel(eqx.Module):
    lengthscale: jax.Array
    variance: jax.Array

    def spectral_density(self, frequencies):
        """Squared-exponential kernel's spectral density: the prior scale of each Fourier feature."""
        ls = jnp.exp(self.lengthscale)
        return jnp.exp(self.variance) * ls * jnp.exp(-0.5 * (ls * frequencies) ** 2)


class GP(eqx.Module):
    coefficients: jax.Array
    kernel: Kernel

    def __call__(self, x):
        frequencies = jnp.pi * jnp.arange(1, N_FEATURES // 2 + 1) / 2.0
        scale = jnp.sqrt(self.kernel.spectral_density(frequencies))
        features = jnp.concatenate([jnp.cos(x[:, None] * frequencies), jnp.sin(x[:, None] * frequencies)], axis=1)
        return features @ (self.coefficients * jnp.concatenate([scale, scale]))


class Line(eqx.Module):
    amplitude: jax.Array
    center: jax.Array
    width: jax.Array

    def __call__(self, x):
        return self.amplitude * jnp.exp(-0.5 * ((x - self.center) / jnp.abs(self.width)) ** 2)


class SpectralModel(eqx.Module):
    gp: GP
    line: Line
    offset: jax.Array

    def __call__(self, x):
        return self.gp(x) + self.line(x) + self.offset


def build_model() -> SpectralModel:
    return SpectralModel(
        gp=GP(jnp.zeros(N_FEATURES), Kernel(jnp.asarray(-1.0), jnp.asarray(0.0))),
        line=Line(jnp.asarray(0.5), jnp.asarray(0.05), jnp.asarray(0.2)),
        offset=jnp.asarray(0.0),
    )


def make_data():
    """A noisy synthetic spectrum (fixed seed): continuum + a line at 0.1 with width 0.08."""
    x = WAVELENGTH
    continuum = 0.3 * jnp.sin(2.1 * x) + 0.2 * jnp.cos(3.3 * x + 0.4) + 1.0
    line = 1.7 * jnp.exp(-0.5 * ((x - 0.1) / 0.08) ** 2)
    noise = 0.02 * jax.random.normal(jax.random.key(0), x.shape)
    return x, continuum + line + noise


def loss(model: SpectralModel, x, y):
    residual = model(x) - y
    prior = 0.5 * jnp.sum(model.gp.coefficients**2)
    return 0.5 * jnp.sum(residual**2) / 0.02**2 / x.size + prior / x.size
