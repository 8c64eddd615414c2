"""schedc: a schedule language and compiler for phased JAX optimisation."""

__version__ = "0.1.0"

# Public names, imported on first use so that `import schedc` (and so `schedc check`) never imports JAX.
_LAZY = {
    "compile": "schedc.surface.api",
    "Program": "schedc.surface.api",
    "read_model": "schedc.surface.api",
    "Batches": "schedc.plan.batches",
    "SchedError": "schedc.lang.diagnostics",
    "SchedWarning": "schedc.lang.diagnostics",
    "FusionWarning": "schedc.runtime.fused",
    "use_kernels": "schedc.compiler.kernel",
    "schedule": "schedc.surface.schedule",
    "build_schedule": "schedc.surface.builder",
    "free_in": "schedc.surface.builder",
    "free_after": "schedc.surface.builder",
    "free_until": "schedc.surface.builder",
    "fixed_in": "schedc.surface.builder",
    "init_value": "schedc.surface.builder",
    "init_normal": "schedc.surface.builder",
    "init_uniform": "schedc.surface.builder",
    "ParamSpec": "schedc.surface.builder",
    "Schedule": "schedc.surface.builder",
    "ManagedSchedule": "schedc.surface.builder",
    "OptimiserSchedule": "schedc.surface.builder",  # spectracles' names of the two schedule classes
    "ManagedOptimiserSchedule": "schedc.surface.builder",
    "PhaseConfig": "schedc.surface.builder",
    "PhaseState": "schedc.surface.builder",
}

# Public modules, likewise: `schedc.distributed.initialize()`, `schedc.distributed.shard_rows(x, y)`.
_MODULES = {"distributed": "schedc.runtime.distributed"}


def __getattr__(name: str):
    import importlib

    if name in _MODULES:
        value = globals()[name] = importlib.import_module(_MODULES[name])
        return value
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'schedc' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(list(globals()) + list(_LAZY) + list(_MODULES))
