"""Stage 3, the Plan (JAX-free until a model is bound): parameter discovery on a model's
pytree, loading the `model`/`loss`/`data` entries a file names, and resolution of a checked
AST against a parameter tree into a `Plan` (plain data, no JAX objects)."""
