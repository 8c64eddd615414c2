"""schedc: a schedule language and compiler for phased JAX optimisation."""

__version__ = "0.1.0"

# Public names, imported on first use so that `import schedc` (and so `schedc check`) never imports JAX.
_LAZY = {
    "compile": "schedc.api",
    "Program": "schedc.api",
    "SchedError": "schedc.diagnostics",
    "schedule": "schedc.schedules",
    "build_schedule": "schedc.builder",
    "free_in": "schedc.builder",
    "free_after": "schedc.builder",
    "free_until": "schedc.builder",
    "fixed_in": "schedc.builder",
    "init_value": "schedc.builder",
    "init_normal": "schedc.builder",
    "init_uniform": "schedc.builder",
}


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'schedc' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(list(globals()) + list(_LAZY))
