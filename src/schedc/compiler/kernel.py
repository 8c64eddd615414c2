"""Step loops compiled as one XLA:CPU kernel (opt-in: `use_kernels`).

XLA:CPU runs a `while` loop as a sequence of *thunks*: every iteration runs the condition, reads
its predicate back and then runs each of the body's kernels in turn, often spread over the
intra-op thread pool. For a small model that bookkeeping is most of a step: a step of the
spectral benchmark's model takes 3.0 us so, 1.3 us as one kernel. XLA has that second way to run
a loop, as one call compiled into a single kernel, iterations and all: its
`SmallWhileLoopHoistingPass` does so for loops that touch under 1 KB, a limit only a process-wide
`XLA_FLAGS` setting raises, and a call carrying the frontend attributes `xla_cpu_small_call` (and
`inlineable=false`, so that XLA's call inliner keeps it a call) gets the same treatment, per
program.

With kernels on, the step loops of a phase's chunk and of a fused segment's branches are marked
so where their model, optimizer state and data are small (`KERNEL_BYTES`) and their operations
are ones the kernel emitter implements (no sort, scatter, FFT or custom call: `_refused`). A
small model's steps then run up to 2.3x faster (docs/performance.md, "Step loops as one kernel").

Why it is not the default: inside one kernel LLVM fuses multiplies and adds across what were
separate kernels (XLA:CPU always allows FMA contraction), and how depends on the code around
the loop. So a step's result differs from the default's in its last bit or two, a difference a
long fit compounds as it would any change of compiled code, and a fused and a phase-by-phase
run, whose loops sit in different programs, no longer agree bit for bit. Where the emitter still
refuses a loop when the program compiles (some fusion kinds of larger arrays), `KernelsOrThunks`
builds that program without the marks.
"""

from __future__ import annotations

import os
from typing import Callable

# a loop is marked when the arrays its steps read besides its logs (the model, the optimizer
# state, the data) take at most this many bytes: beyond it a step's own work dominates and the
# kernel, single-threaded, stops paying (bench/bench_run.py `kernel_table`)
KERNEL_BYTES = 64 << 10

# primitives the kernel emitter cannot compile: sorts and FFTs (runtime calls the kernel does
# not link), scatters (the emitter has none: only a single index's, which XLA rewrites as an
# update slice first, passes) and what lowers to a custom call (LAPACK, callbacks, FFI)
_REFUSED = frozenset(
    {"sort", "fft", "top_k", "approx_top_k", "rng_bit_generator", "ffi_call", "cholesky", "cholesky_update", "lu", "lu_pivots_to_permutation", "qr", "geqrf", "geqp3", "householder_product"}
    | {"eig", "eigh", "svd", "triangular_solve", "schur", "hessenberg", "tridiagonal", "tridiagonal_solve"}
)

_on = os.environ.get("SCHEDC_KERNELS", "0") not in ("", "0")


class use_kernels:
    """Turn step loops as one kernel on (or off), for every program: `schedc.use_kernels()` for
    the rest of the process, or `with schedc.use_kernels(): program.run(...)` for a block. The
    environment variable `SCHEDC_KERNELS=1` turns them on from the start."""

    def __init__(self, on: bool = True):
        global _on
        self._before, _on = _on, bool(on)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        global _on
        _on = self._before


def on_cpu() -> bool:
    import jax

    return jax.default_backend() == "cpu"


def small(*trees) -> bool:
    """Whether the arrays of `trees` (tracers or arrays) fit `KERNEL_BYTES`."""
    import jax

    return sum(x.size * x.dtype.itemsize for x in jax.tree_util.tree_leaves(trees) if hasattr(x, "dtype")) <= KERNEL_BYTES


def _equations(jaxpr):
    """Every equation of `jaxpr` and of the jaxprs in its parameters (loop bodies, branches, calls)."""
    for eqn in jaxpr.eqns:
        yield eqn
        for value in eqn.params.values():
            for sub in value if isinstance(value, (tuple, list)) else (value,):
                if hasattr(sub, "eqns"):
                    yield from _equations(sub)


def _refused_equation(eqn) -> bool:
    name = eqn.primitive.name
    if name == "scatter":  # `x.at[i].set(v)`: one index vector, which XLA rewrites as an update slice
        return eqn.invars[1].aval.size != len(eqn.params["dimension_numbers"].scatter_dims_to_operand_dims)
    return name in _REFUSED or "scatter" in name or "callback" in name


def _refused(closed, leaves: list) -> bool:
    # (an empty array would be a parameter without a buffer, which the emitter cannot bind)
    return any(x.size == 0 for x in (*closed.consts, *leaves)) or any(_refused_equation(eqn) for eqn in _equations(closed.jaxpr))


def while_loop(cond: Callable, body: Callable, carry, kernel: bool):
    """`jax.lax.while_loop(cond, body, carry)`; with `kernel`, as a call compiled into one kernel
    where the emitter implements every operation of the loop."""
    import jax

    if kernel:
        leaves = jax.tree_util.tree_leaves(carry)
        closed, shapes = jax.make_jaxpr(lambda carry: jax.lax.while_loop(cond, body, carry), return_shape=True)(carry)
        if not _refused(closed, leaves):
            return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(shapes), _kernel_call(closed, leaves))
    return jax.lax.while_loop(cond, body, carry)


def _kernel_call(closed, leaves: list) -> list:
    """The loop `closed` (a closed jaxpr) run on `leaves` as a call marked to be one kernel. What
    the loop reads from outside (its jaxpr's constants) becomes the call's arguments."""
    import jax
    from jax.experimental.xla_metadata import set_xla_metadata

    def call(consts, leaves):
        # every argument is also read into an output the caller keeps (through the barrier
        # below): the kernel emitter aborts on a parameter its computation does not use, and
        # XLA simplifies away a loop's use of one (a phase step no schedule reads, say)
        return jax.core.eval_jaxpr(closed.jaxpr, consts, *leaves), [x.reshape(-1)[:1] for x in (*consts, *leaves)]

    out, read = set_xla_metadata(jax.jit(call)(closed.consts, leaves), xla_cpu_small_call="true", inlineable="false")
    return jax.lax.optimization_barrier((out, read))[0]


def _emitter_refused(error: Exception) -> bool:
    text = str(error)
    return type(error).__name__ == "JaxRuntimeError" and ("UNIMPLEMENTED" in text or "Failed to materialize symbols" in text)


# XLA:CPU's copy insertion keeps, by default, a copy of loop-carried values that a step
# overwrites in place while another operation of the step may still read the old value (its free
# parameters, its step count): 3 of the 22 operations of a step of the spectral benchmark's model,
# each a thunk the loop runs at every step. Its region-based live-range analysis (an XLA option
# TPUs use, off on CPU) orders those reads first instead (a fused segment's step loops need
# `segment._own_buffers` too). Copies do no arithmetic, so the results are the same bit for bit
# (docs/runtime.md, "Fewer copies per step").
STEP_COMPILER_OPTIONS = {"xla_cpu_copy_insertion_use_region_analysis": True}

# False once the installed jax or XLA refused the options: programs built since go without them
_options_taken = True


def step_options_on() -> bool:
    """Whether programs that run steps are built with `STEP_COMPILER_OPTIONS`: on the CPU, unless
    the installed jax or XLA refused them."""
    return _options_taken and on_cpu()


def jit_steps(fn: Callable) -> Callable:
    """`jax.jit(fn)` for a program that runs steps (a phase's chunk, a fused segment), compiled
    with `STEP_COMPILER_OPTIONS` while `step_options_on()`."""
    import jax

    if step_options_on():
        try:
            return jax.jit(fn, compiler_options=STEP_COMPILER_OPTIONS)
        except TypeError:  # a jax whose jit takes no compiler options
            _refuse_options()
    return jax.jit(fn)


def _refuse_options() -> None:
    global _options_taken
    _options_taken = False


def _options_refused(error: Exception) -> bool:
    """Whether `error` is XLA refusing `STEP_COMPILER_OPTIONS` (an XLA without the option)."""
    return "No such compile option" in str(error) and any(name in str(error) for name in STEP_COMPILER_OPTIONS)


class KernelsOrThunks:
    """A program that runs steps, jitted (`jit_steps`) in its two builds, made on first use:
    `build(False)`, every loop run as XLA's thunks, and, while kernels are on (`use_kernels`),
    `build(True)`, its step loops marked as kernels where `while_loop` may (`build(kernel)` is the
    function to jit). If XLA:CPU's kernel emitter refuses a loop when that build compiles (at its
    first call), the program runs as thunks from then on, in either mode; if XLA refuses the
    compiler options, every program is built without them from then on."""

    __slots__ = ("_build", "_thunks", "_kernels")

    def __init__(self, build: Callable[[bool], Callable]):
        self._build = build
        self._thunks = self._kernels = None

    def __call__(self, *args):
        try:
            return self._call(*args)
        except Exception as error:
            if not (_options_taken and _options_refused(error)):
                raise
            _refuse_options()
            self._thunks = self._kernels = None
            return self._call(*args)

    def _call(self, *args):
        if not _on:
            return (self._thunks or self._made_thunks())(*args)
        try:
            return self._made_kernels()(*args)
        except Exception as error:
            if not _emitter_refused(error) or self._kernels is self._thunks:
                raise
            self._kernels = self._made_thunks()
            return self._kernels(*args)

    def _made_thunks(self) -> Callable:
        if self._thunks is None:
            self._thunks = jit_steps(self._build(False))
        return self._thunks

    def _made_kernels(self) -> Callable:
        if self._kernels is None:
            self._kernels = jit_steps(self._build(True))
        return self._kernels

    def jaxpr(self, *args):
        """The current mode's program traced on `args`, as a closed jaxpr (tests read its control
        flow; `jax.make_jaxpr` of the jitted program refuses its compiler options)."""
        import jax

        return jax.make_jaxpr(self._build(_on))(*args)

    def lower(self, *args):
        """The current mode's build, lowered (bench and tests read its HLO)."""
        return (self._made_kernels() if _on else self._made_thunks()).lower(*args)
