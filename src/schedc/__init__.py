"""schedc: a schedule language and compiler for phased JAX optimisation."""

__version__ = "0.1.0"
