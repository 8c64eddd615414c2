"""Resolve benchmark: a model with 10,000 parameters against 100 patterns.

Stages timed separately (best of --repeat runs, wall and CPU milliseconds):
  discover   `params.discover` on an equinox model of 1,250 blocks x 8 arrays (10,000 leaves)
  match      100 patterns against the 10,000 paths (`glob.PathSet`), compiled patterns cached
  resolve    `plan.resolve`: 2 phases x 50 statements + a params block (the Plan and every check)
  check      the model-free check, then `resolve(..., checked=True)` (what `pipeline.analyse` runs after the parse)
  spectracles-style matching, for scale: one `re.fullmatch` per (pattern, path) pair

    .venv/bin/python bench/bench_resolve.py
    .venv/bin/python bench/bench_resolve.py --repeat 10 --json
"""

from __future__ import annotations

import argparse
import json
import re
import time

N_BLOCKS = 1250  # x 8 arrays = 10,000 parameters


def build_model():
    import equinox as eqx
    import jax
    import jax.numpy as jnp

    class Sub(eqx.Module):
        weight: jax.Array
        bias: jax.Array
        scale: jax.Array
        shift: jax.Array

    class Block(eqx.Module):
        attn: Sub
        mlp: Sub

    class Net(eqx.Module):
        blocks: list

    def sub():
        return Sub(jnp.ones(4), jnp.zeros(4), jnp.ones(()), jnp.zeros(()))

    return Net([Block(sub(), sub()) for _ in range(N_BLOCKS)])


def patterns() -> list[str]:
    """100 patterns of the kinds schedules use: subtrees, suffixes, wildcards, alternatives, exact paths."""
    out = [f"blocks[{i}].**" for i in range(30)]
    out += ["**.weight", "**.bias", "blocks[*].attn.*", "blocks[*].{attn,mlp}.w*", "**"] * 10
    out += [f"blocks[{i}].mlp.weight" for i in range(20)]
    return out


def schedule_text(pats: list[str]) -> str:
    first = "; ".join(("fix " if i % 3 == 2 else "free ") + p for i, p in enumerate(pats[:50]))
    second = "; ".join(("fix " if i % 4 == 3 else "free ") + p for i, p in enumerate(pats[50:]))
    return (
        f"phase a 100 lr 0.1 < {first}; init blocks[*].attn.scale = 1 >\n"
        f"phase b 100 lr 0.01 < {second}; free blocks[0].mlp.bias lr 0.001 >\n"
        "params < blocks[1].attn.shift: free after a | init normal(0, 0.1) at b >\n"
    )


def best(fn, repeat: int) -> tuple[tuple[float, float], object]:
    """((best wall ms, best CPU ms), last result): CPU time is what a loaded machine stretches least."""
    walls, cpus, result = [], [], None
    for _ in range(repeat):
        wall, cpu = time.perf_counter(), time.process_time()
        result = fn()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return (min(walls) * 1000, min(cpus) * 1000), result


def main() -> None:
    from schedc.check.checker import check_file
    from schedc.lang.glob import PathSet, compile_pattern
    from schedc.plan.params import discover
    from schedc.plan.resolve import resolve
    from schedc.lang.syntax import parse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    model = build_model()
    pats = patterns()
    results = {}
    results["discover"], tree = best(lambda: discover(model), args.repeat)
    assert len(tree) == 10_000
    for p in pats:
        compile_pattern(p)
    results["match"], found = best(lambda: (lambda ps: [ps.match(compile_pattern(p)) for p in pats])(PathSet(tree.paths)), args.repeat)
    parsed = parse(schedule_text(pats))
    assert parsed.ok, parsed.diagnostics
    results["resolve"], (plan, diags) = best(lambda: resolve(parsed.file, tree), args.repeat)
    assert plan is not None, [d for d in diags if d.is_error]
    results["check"], _ = best(lambda: (check_file(parsed), resolve(parsed.file, tree, checked=True)), args.repeat)
    regexes = [re.compile(compile_pattern(p).regex.pattern) for p in pats]
    normal = ["." + p for p in tree.paths]
    results["fullmatch per pair"], _ = best(lambda: [[i for i, s in enumerate(normal) if r.fullmatch(s)] for r in regexes], max(1, args.repeat // 2))
    results["matches"] = sum(map(len, found))
    results["free in phase a"] = len(plan.phases[0].free)
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(f"10,000 parameters x 100 patterns (best of {args.repeat}):     wall ms      CPU ms")
    for key, value in results.items():
        print(f"  {key:<20} {value[0]:>20.1f} {value[1]:>11.1f}" if isinstance(value, tuple) else f"  {key:<20} {value:>20}")


if __name__ == "__main__":
    main()
