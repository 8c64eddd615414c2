"""Fewer copies per step (docs/runtime.md): every program that runs steps is compiled with
`kernel.STEP_COMPILER_OPTIONS` on the CPU, and a fused segment's step loops carry buffers of their
own (`segment._own_buffers`). Neither changes a bit of any result; a fused segment's step loops
keep no more copies than a phase's own loop; an XLA that refuses the options runs every program
without them."""

from __future__ import annotations

import re

import pytest

import schedc
from schedc.compiler import chunk as C
from schedc.compiler import kernel as K
from schedc.compiler import segment
from test_fused import TEXT, assert_same_run, loss, model  # every stop rule and init kind

pytestmark = pytest.mark.skipif(not K.on_cpu(), reason="the options are XLA:CPU's")


def a_loss(m):
    """`loss` under a new identity: its programs are built afresh, not taken from the caches."""
    return loss(m)


@pytest.fixture(scope="module")
def program():
    return schedc.compile(TEXT, model())


@pytest.fixture(scope="module")
def runs(program):
    """The fused and the phase-by-phase run, with the options and without (a second loss)."""
    with_options = {fuse: program.run(loss, quiet=True, fuse=fuse) for fuse in (True, False)}
    taken, K._options_taken = K._options_taken, False
    try:
        without = {fuse: program.run(a_loss, quiet=True, fuse=fuse) for fuse in (True, False)}
    finally:
        K._options_taken = taken
    return with_options, without


@pytest.mark.parametrize("fuse", [True, False], ids=["fused", "phase-by-phase"])
def test_the_options_change_no_bit_of_a_run(runs, fuse):
    with_options, without = runs
    assert set(with_options[fuse].stop_reasons) == {"completed", "loss", "loss_change"}
    assert_same_run(without[fuse], with_options[fuse])


def step_loop_copies(hlo: str) -> list[int]:
    """Per step loop (a while loop whose body holds no other loop, nor a call that may) in an
    optimized HLO text: the copies in its body."""
    bodies = dict(re.findall(r"^%([\w.\-]+) [^\n]*\{\n(.*?)^\}", hlo, re.S | re.M))
    loops = re.findall(r" while\(.*body=%([\w.\-]+)", hlo)
    return [bodies[b].count(" copy(") for b in loops if " while(" not in bodies[b] and " call(" not in bodies[b]]


def compiled_texts(entries: list, name: str, run) -> list[str]:
    """The optimized HLO of each program (attribute `name` of a cache entry) that `run()` calls,
    compiled from the arguments of its call."""
    texts, originals = [], [(entry, getattr(entry, name)) for entry in entries]
    for entry, call in originals:
        setattr(entry, name, lambda *args, call=call: texts.append(call.lower(*args).compile().as_text()) or call(*args))
    try:
        run()
    finally:
        for entry, call in originals:
            setattr(entry, name, call)
    return texts


def test_a_fused_segments_step_loops_keep_no_more_copies_than_a_phase_alone():
    """Without `_own_buffers` the step loop's carry shares its buffers with the loop over phases,
    and XLA keeps a copy of each free parameter at every step (measured: 2 of 21 operations)."""
    program = schedc.compile("phase 30 lr 0.1 < free a >\nphase 20 lr 0.05 < free a, b >", model())
    program.run(loss, quiet=True)
    program.run(loss, quiet=True, fuse=False)
    fused = compiled_texts(list(segment._CACHE.values()), "call", lambda: program.run(loss, quiet=True))
    alone = compiled_texts(list(C._CACHE.values()), "chunk", lambda: program.run(loss, quiet=True, fuse=False))
    fused_copies = [n for text in fused for n in step_loop_copies(text)]
    alone_copies = [n for text in alone for n in step_loop_copies(text)]
    assert len(fused_copies) >= 2 and len(alone_copies) >= 2
    assert max(fused_copies) <= max(alone_copies)


def test_an_xla_that_refuses_the_options_runs_without_them(monkeypatch, runs):
    monkeypatch.setattr(K, "STEP_COMPILER_OPTIONS", {"xla_cpu_no_such_option_of_schedc_tests": True})
    monkeypatch.setattr(K, "_options_taken", True)

    def another_loss(m):
        return loss(m)

    fused = schedc.compile(TEXT, model()).run(another_loss, quiet=True)
    assert not K._options_taken
    assert_same_run(runs[1][True], fused)


def test_a_jax_whose_jit_takes_no_compiler_options_builds_without_them(monkeypatch):
    import jax

    jit = jax.jit

    def old_jit(fn, **options):
        if "compiler_options" in options:
            raise TypeError("jit() got an unexpected keyword argument 'compiler_options'")
        return jit(fn, **options)

    monkeypatch.setattr(jax, "jit", old_jit)
    monkeypatch.setattr(K, "_options_taken", True)
    assert K.step_options_on()
    assert int(K.jit_steps(lambda x: x + 1)(1)) == 2
    assert not K.step_options_on()
