"""The resolver: phase bodies, params blocks, repeat names, groups, inits, diagnostics, large trees,
and spectracles' own resolution of free_in/free_after/free_until/fixed_in on non-conflicting specs."""

import random

import pytest

from schedc.lang import nodes as n
from schedc.plan.params import Param, ParamTree
from schedc.plan.resolve import InitSpec, OptimizerSpec, StopRule, resolve
from schedc.lang.syntax import parse

PATHS = ["gp.coefficients", "gp.kernel.lengthscale", "gp.kernel.variance", "line.amplitude", "line.center", "line.width", "offset"]


def tree_of(paths=PATHS, shared=None, shapes=None):
    shapes = shapes or {}
    copies = {}
    for copy, parent in (shared or {}).items():
        copies.setdefault(parent, []).append(copy)
    return ParamTree(tuple(Param(p, i, shapes.get(p, ()), "float32", tuple(copies.get(p, ()))) for i, p in enumerate(paths)), len(paths))


def run(text, tree=None, **kw):
    parsed = parse(text)
    assert parsed.ok, parsed.diagnostics
    return resolve(parsed.file, tree_of() if tree is None else tree, **kw)


def plan_of(text, tree=None, **kw):
    plan, diags = run(text, tree, **kw)
    errors = [d for d in diags if d.is_error]
    assert plan is not None and not errors, errors
    return plan


def codes(diags):
    return [d.code for d in diags]


def only(diags, code):
    found = [d for d in diags if d.code == code]
    assert len(found) == 1, diags
    return found[0]


def at(d):
    return d.span.line, d.span.column


# ---------------------------------------------------------------- phase bodies


def test_statements_in_order_last_match_wins():
    plan = plan_of("phase 10 lr 0.1 < free gp.**, line.*; fix line.center; free line.center >")
    assert plan.phases[0].free == ("gp.coefficients", "gp.kernel.lengthscale", "gp.kernel.variance", "line.amplitude", "line.center", "line.width")
    plan = plan_of("phase 10 lr 0.1 < free **; fix gp.kernel.* >")
    assert plan.phases[0].free == ("gp.coefficients", "line.amplitude", "line.center", "line.width", "offset")


def test_default_fixed_and_free():
    assert plan_of("phase 10 lr 0.1 < free offset >").phases[0].free == ("offset",)
    plan = plan_of("default free\nphase 10 lr 0.1 < fix gp.** >")
    assert plan.default == "free"
    assert plan.phases[0].free == ("line.amplitude", "line.center", "line.width", "offset")


def test_groups_partition_the_free_set():
    plan = plan_of("let base = 0.05\nphase 10 lr base < free gp.**, line.*; free line.width lr 0.1 * base; free offset optimizer sgd(momentum = 0.9) >")
    groups = plan.phases[0].groups
    assert [g.paths for g in groups] == [
        ("gp.coefficients", "gp.kernel.lengthscale", "gp.kernel.variance", "line.amplitude", "line.center"),
        ("line.width",),
        ("offset",),
    ]
    assert groups[0].lr is None and groups[0].optimizer is None
    lr = groups[1].lr  # let names substituted: a closed expression
    assert isinstance(lr, n.BinOp) and lr.right == n.Number(0.05, "0.05")
    assert groups[2].optimizer == OptimizerSpec("sgd", (("momentum", n.Number(0.9, "0.9")),))
    assert sorted(p for g in groups for p in g.paths) == sorted(plan.phases[0].free)


def test_lr_and_optimizer_precedence():
    text = "lr 0.5\noptimizer sgd\nphase 10 < free a >\nphase 10 lr 0.1 optimizer adamw(weight_decay = 1e-4) < free a >\n"
    plan = plan_of(text, ParamTree.from_paths(["a"]))
    assert plan.phases[0].lr == n.Number(0.5, "0.5")
    assert plan.phases[0].optimizer == OptimizerSpec("sgd")
    assert plan.phases[1].lr == n.Number(0.1, "0.1")
    assert plan.phases[1].optimizer.name == "adamw"
    assert plan_of("phase 10 lr 0.1 < free a >", ParamTree.from_paths(["a"])).phases[0].optimizer == OptimizerSpec("adam")


def test_placeholders_are_substituted():
    plan = plan_of("phase 10 lr $rate < free a >", ParamTree.from_paths(["a"]), placeholders={"rate": 0.25})
    assert plan.phases[0].lr == n.Number(0.25, "0.25")


def test_inits_carry_stop_and_directives():
    text = (
        'model "m.py:build"\nseed 7\nlet s = 0.1\n'
        "phase 10 lr 0.1 < free **; init gp.coefficients ~ normal(0, s); init line.width = 1.5; "
        "init offset = reset; init line.center ~ uniform(high = 2); carry state; stop when loss_change < 1e-6; stop when loss < 0.01 >\n"
        "phase 200 lr 0.1 < free **; stop when loss_change < 1e-3 over 10% after 20 >"
    )
    plan = plan_of(text)
    ph = plan.phases[0]
    assert ph.inits == (
        InitSpec("gp.coefficients", "normal", (0.0, 0.1)),
        InitSpec("line.center", "uniform", (0.0, 2.0)),
        InitSpec("line.width", "value", (1.5,)),
        InitSpec("offset", "reset", ()),
    )
    assert ph.carry and not plan.phases[1].carry
    assert ph.stop == (StopRule("loss_change", 1e-6, 50, 100), StopRule("loss", 0.01, 50, 100))
    assert plan.phases[1].stop == (StopRule("loss_change", 1e-3, 20, 20),)
    assert (plan.seed, plan.model, plan.default) == (7, "m.py:build", "fixed")
    assert plan.parameters == tuple(PATHS)


def test_list_init_values_fit_the_shape():
    tree = tree_of(shapes={"gp.coefficients": (2, 2)})
    plan = plan_of("phase 10 lr 0.1 < free **; init gp.coefficients = [[1, 2], [3, 4]] >", tree)
    assert plan.phases[0].inits[0] == InitSpec("gp.coefficients", "value", (1.0, 2.0, 3.0, 4.0))
    _, diags = run("phase 10 lr 0.1 < free **;\n  init gp.coefficients = [1, 2, 3] >", tree)
    d = only(diags, "E0407")
    assert at(d) == (2, 8) and "(3,)" in d.message and "(2, 2)" in d.message


# ---------------------------------------------------------------- params blocks and repeat


def test_params_specs_resolve_like_spectracles():
    text = """phase 100 lr 0.1 <>
phase fine 50 lr 0.01 <>
phase 50 lr 0.01 <>
params <
  gp.coefficients: free in 0, 1;
  gp.kernel.*:     free after 1;
  line.amplitude:  free in fine | init normal(0, 0.1) at 0;
  line.center:     fixed in 0;
  line.width:      free until 0 | init value(1.5) at 1 | init uniform(0, 2) at 0;
>"""
    plan = plan_of(text)
    free = [set(ph.free) for ph in plan.phases]
    assert free[0] == {"gp.coefficients", "line.width"}
    assert free[1] == {"gp.coefficients", "gp.kernel.lengthscale", "gp.kernel.variance", "line.amplitude", "line.center"}
    assert free[2] == {"gp.kernel.lengthscale", "gp.kernel.variance", "line.center"}
    assert plan.phases[0].inits == (InitSpec("line.amplitude", "normal", (0.0, 0.1)), InitSpec("line.width", "uniform", (0.0, 2.0)))
    assert plan.phases[1].inits == (InitSpec("line.width", "value", (1.5,)),)


def test_repeat_names_in_after_until():
    text = """phase first 10 lr 0.1 < free offset >
repeat 2 <
  phase gp 10 lr 0.1 <>
  phase lines 10 lr 0.1 <>
>
phase last 10 lr 0.1 < free offset >
params <
  gp.coefficients: free in gp;
  line.amplitude:  free after lines;
  line.width:      free until gp;
  line.center:     fixed in lines | init value(0) at gp;
>"""
    plan = plan_of(text)
    assert [ph.display for ph in plan.phases] == ["first", "gp#1", "lines#1", "gp#2", "lines#2", "last"]
    assert [ph.name for ph in plan.phases] == ["first", "gp", "lines", "gp", "lines", "last"]
    status = {p: [p in ph.free for ph in plan.phases] for p in ("gp.coefficients", "line.amplitude", "line.width", "line.center")}
    assert status["gp.coefficients"] == [False, True, False, True, False, False]  # every instance
    assert status["line.amplitude"] == [False, False, True, True, True, True]  # from the first instance
    assert status["line.width"] == [True, True, True, True, False, False]  # through the last instance
    assert status["line.center"] == [True, True, False, True, False, True]
    assert [bool(ph.inits) for ph in plan.phases] == [False, True, False, True, False, False]


def test_body_decides_params_fill_in():
    text = """phase 10 lr 0.1 < free gp.coefficients >
phase 10 lr 0.1 < fix line.* >
params <
  gp.coefficients: free in 1;
  line.width: free in 0, 1 | fixed in 2;
  offset: fixed in 0;
>
phase 10 lr 0.1 <>"""
    # line.width: `free in 0, 1 | fixed in 2` disagrees only with the body of phase 1 -> E0405
    _, diags = run(text)
    d = only(diags, "E0405")
    assert at(d) == (2, 23) and "`line.width`" in d.message
    assert d.labels[0].span.line == 5
    # the same without the contradiction: body first, then params, then the default
    plan = plan_of(text.replace("fix line.*", "fix line.center"))
    assert [set(ph.free) for ph in plan.phases] == [
        {"gp.coefficients", "line.width"},  # offset: fixed in 0
        {"gp.coefficients", "line.width", "offset"},
        {"offset"},  # line.width: fixed in 2
    ]


def test_implicit_params_status_yields_to_the_body():
    text = "phase 10 lr 0.1 < free gp.coefficients >\nphase 10 lr 0.1 <>\nparams < gp.coefficients: free in 1 >"
    plan = plan_of(text)
    assert plan.phases[0].free == ("gp.coefficients",)  # the body frees it; `free in 1` only implied fixed
    assert plan.phases[1].free == ("gp.coefficients",)


def test_fixed_in_with_an_overlapping_free_entry_unions_like_spectracles():
    text = "phase 10 lr 0.1 <>\nphase 10 lr 0.1 <>\nparams < *: fixed in 0; gp.coefficients: free in 1 >"
    plan = plan_of(text)
    assert plan.phases[0].free == ()
    assert "offset" in plan.phases[1].free and "gp.coefficients" in plan.phases[1].free


# ---------------------------------------------------------------- diagnostics


SHARED = tree_of(["line_a.amplitude", "line_a.width", "line_b.amplitude", "offset", "gp.kernel.lengthscale"], shared={"line_b.width": "line_a.width"})


def test_e0401_pattern_matching_nothing_suggests_the_nearest():
    _, diags = run("phase 10 lr 0.1 <\n  free gp.kernal.* >", SHARED)
    d = only(diags, "E0401")
    assert at(d) == (2, 8) and (d.span.end_column - d.span.column) == len("gp.kernal.*")
    assert d.help == "did you mean `gp.kernel.*`?"
    _, diags = run("phase 10 lr 0.1 < free GP.kernel.lengthscale >", SHARED)
    assert "`gp.kernel.lengthscale`" in only(diags, "E0401").help
    _, diags = run("phase 10 lr 0.1 < free *.lengthscale >", SHARED)
    assert "`**.lengthscale`" in only(diags, "E0401").help
    _, diags = run("phase 10 lr 0.1 < free offst >", SHARED)
    assert "`offset`" in only(diags, "E0401").help


def test_e0402_only_shared_copies_names_the_parent():
    plan, diags = run("phase 10 lr 0.1 < free line_a.amplitude;\n free line_b.width >", SHARED)
    d = only(diags, "E0402")
    assert at(d) == (2, 7)
    assert "`line_a.width`" in d.help
    assert plan is None


def test_pattern_matching_parent_and_copy_names_the_parent():
    plan = plan_of("phase 10 lr 0.1 < free line_*.width >", SHARED)
    assert plan.phases[0].free == ("line_a.width",)
    assert plan.shared == {"line_b.width": "line_a.width"}


def test_e0403_init_of_a_shared_copy():
    _, diags = run("phase 10 lr 0.1 < free **; init line_b.width = 1 >", SHARED)
    d = only(diags, "E0403")
    assert at(d) == (1, 33) and "`line_a.width`" in d.help
    _, diags = run("phase 10 lr 0.1 < free ** >\nparams < line_b.width: init value(1) at 0 >", SHARED)
    assert at(only(diags, "E0403")) == (2, 10)


def test_e0404_conflicting_params_specs_show_both():
    _, diags = run("phase 10 lr 0.1 <>\nparams <\n  offset: free in 0;\n  *: fixed in 0\n>", SHARED)
    d = only(diags, "E0404")
    assert at(d) == (4, 6)
    assert [label.span.line for label in d.labels] == [3]
    assert "`offset`" in d.message and "phase 0" in d.message


def test_e0405_body_and_params_disagree():
    _, diags = run("phase 10 lr 0.1 < fix line_*.* >\nparams < line_a.amplitude: free in 0 >", SHARED)
    d = only(diags, "E0405")
    assert at(d) == (1, 23)
    assert d.labels[0].span.line == 2


def test_e0302_two_inits_through_different_patterns():
    _, diags = run("phase 10 lr 0.1 < free **;\n  init line_a.* = 1;\n  init **.amplitude ~ normal(0, 1) >", SHARED)
    d = only(diags, "E0302")
    assert at(d) == (3, 8) and d.labels[0].span.line == 2
    _, diags = run("phase 10 lr 0.1 < free **; init offset = 1 >\nparams < *: init value(2) at 0 >", SHARED)
    assert only(diags, "E0302").span.line == 2


def test_same_text_conflicts_are_left_to_the_model_free_check():
    # `a: free in 0` and `a: fixed in 0` is E0301 from schedc.check.checker; the resolver does not repeat it
    _, diags = run("phase 10 lr 0.1 <>\nparams < offset: free in 0; offset: fixed in 0 >", SHARED)
    assert "E0404" not in codes(diags)


def test_w0102_statement_fully_overridden_through_globs():
    _, diags = run("phase 10 lr 0.1 < free line_a.*; free **; fix offset >", SHARED)
    d = only(diags, "W0102")
    assert at(d) == (1, 19) and [label.span.column for label in d.labels] == [34]


def test_w0103_parameters_never_free_and_never_named():
    _, diags = run('model "m.py:build"\nphase 10 lr 0.1 < free line_a.*; fix offset >', SHARED)
    d = only(diags, "W0103")
    assert at(d) == (1, 1)  # the model directive
    assert "`line_b.amplitude`" in d.message and "`gp.kernel.lengthscale`" in d.message and "offset" not in d.message


def test_w0104_phase_frees_nothing():
    _, diags = run("phase 10 lr 0.1 < free offset >\nphase warm 10 lr 0.1 < fix ** >", SHARED)
    d = only(diags, "W0104")
    assert at(d) == (2, 1) and "phase 1" in d.message


def test_w0105_init_of_a_parameter_fixed_from_there_on():
    text = "phase 10 lr 0.1 < free offset; init line_a.amplitude = 1; init offset = 0 >\nphase 10 lr 0.1 < free offset; init line_b.amplitude = 2 >\nphase 10 lr 0.1 < free line_b.amplitude >"
    _, diags = run(text, SHARED)
    d = only(diags, "W0105")  # line_b.amplitude is freed later: no warning for it
    assert at(d) == (1, 37) and "`line_a.amplitude`" in d.message


def test_e0006_malformed_pattern_points_inside_it():
    _, diags = run("phase 10 lr 0.1 < free gp** >", SHARED)
    d = only(diags, "E0006")
    assert at(d) == (1, 26) and "gp.**" in d.help


def test_a_checked_file_leaves_the_text_level_findings_to_the_check():
    # each problem is reported by one pass: after the model-free check (`checked`), the resolver
    # reports only what the model adds, nobody filters its output afterwards
    text = "phase 10 lr 0.1 < free offset; fix offset; free gp** >\nphase 10 lr 0.1 < fix ** >\nphase 10 lr 0.1 < free line_a.*; free **; fix offset >"
    parsed = parse(text)
    from schedc.check.checker import check_file

    model_free = codes(check_file(parsed))
    assert model_free.count("W0102") == 1 and model_free.count("W0104") == 1 and "E0006" in model_free
    unchecked = codes(resolve(parsed.file, SHARED)[1])
    checked = resolve(parsed.file, SHARED, checked=True)[1]
    # unchecked, the resolver reports them itself; checked, only the overriding through globs (line 3)
    assert unchecked.count("W0102") == 2 and unchecked.count("W0104") == 1 and "E0006" in unchecked
    assert [(d.code, d.span.line) for d in checked if d.code in ("W0102", "W0104", "E0006")] == [("W0102", 3)]


def test_a_checked_file_still_gets_the_phases_only_the_model_leaves_idle():
    # phase 1 has a `free` statement, so the model-free check has no W0104 for it; that the later
    # `fix` leaves it freeing nothing is found by parameter: the resolver's to say, once
    parsed = parse("phase 10 lr 0.1 < free offset >\nphase 10 lr 0.1 < free offset; fix offset >")
    checked = resolve(parsed.file, SHARED, checked=True)[1]
    assert [(d.code, d.span.line) for d in checked if d.code == "W0104"] == [("W0104", 2)]


def test_repeated_phases_report_once():
    _, diags = run("repeat 3 < phase 10 lr 0.1 < free nope > >", SHARED)
    assert codes(diags).count("E0401") == 1


# ---------------------------------------------------------------- without a model


def test_without_a_model_rows_are_the_patterns_as_written():
    text = "phase 10 lr 0.1 < free gp.**; fix gp.kernel.* >\nphase 10 lr 0.1 < free ** >\nparams < offset: free in 0 >"
    plan, diags = resolve(parse(text).file, None)
    assert plan.parameters == ("gp.**", "gp.kernel.*", "**", "offset")
    assert plan.phases[0].free == ("gp.**", "offset")
    assert plan.phases[1].free == ("**",)
    assert not diags


# ---------------------------------------------------------------- large trees


def test_ten_thousand_parameters_against_a_hundred_patterns():
    paths = [f"blocks[{i}].{m}.{w}" for i in range(1250) for m in ("attn", "mlp") for w in ("weight", "bias", "scale", "shift")]
    tree = ParamTree.from_paths(paths)
    body = "; ".join([f"free blocks[{i}].**" for i in range(40)] + ["fix **.bias", "free blocks[*].mlp.*"] * 10 + [f"fix blocks[{i}].attn.weight" for i in range(20)] + ["init blocks[*].attn.scale = 1"] * 0)
    text = f"phase 10 lr 0.1 < {body} >\nphase 10 lr 0.1 < free **.weight; init blocks[*].attn.scale = 1 >"
    plan, diags = resolve(parse(text).file, tree)  # its time: bench/bench_resolve.py
    assert plan is not None
    assert len(plan.phases[1].free) == 2500 and len(plan.phases[1].inits) == 1250
    assert "blocks[0].attn.weight" not in plan.phases[0].free and "blocks[0].attn.scale" in plan.phases[0].free


# ---------------------------------------------------------------- against spectracles itself


SPEC_PATHS = ["a", "b", "gp.x", "gp.y", "gp.k.l"]
SPEC_PATTERNS = ["a", "b", "*", "gp.*", "gp.**", "**.l", "gp.k.l", "**"]  # where spectracles matches correctly
N_PHASES = 4


def _random_entry(rng):
    """(dsl spec text, [(kind, args)]) with no contradiction inside the entry."""
    specs = []
    free: set[int] = set()
    for kind in rng.sample(["free_in", "free_after", "free_until"], rng.randint(0, 2)):
        if kind == "free_in":
            phases = sorted(rng.sample(range(N_PHASES), rng.randint(1, 2)))
            free |= set(phases)
        elif kind == "free_after":
            phases = [rng.randrange(N_PHASES)]
            free |= set(range(phases[0], N_PHASES))
        elif kind == "free_until":
            phases = [rng.randrange(N_PHASES)]
            free |= set(range(phases[0] + 1))
        specs.append((kind, phases))
    fixed_choices = [k for k in range(N_PHASES) if k not in free]
    if rng.random() < 0.4 and fixed_choices:
        specs.append(("fixed_in", sorted(rng.sample(fixed_choices, 1))))
    if rng.random() < 0.5 or not specs:
        specs.append(("init", (rng.choice(["normal", "uniform", "value"]), rng.randrange(N_PHASES))))
    return specs


def _explicit(specs):
    """phase -> "free"/"fixed" for phases a spec names."""
    out = {}
    for kind, arg in specs:
        if kind == "free_in":
            out.update({k: "free" for k in arg})
        elif kind == "free_after":
            out.update({k: "free" for k in range(arg[0], N_PHASES)})
        elif kind == "free_until":
            out.update({k: "free" for k in range(arg[0] + 1)})
        elif kind == "fixed_in":
            out.update({k: "fixed" for k in arg})
    return out


INIT_ARGS = {"normal": (0.5, 0.1), "uniform": (-1.0, 2.0), "value": (1.5,)}


def test_params_blocks_match_spectracles_on_non_conflicting_specs():
    sb = pytest.importorskip("spectracles.optimise.schedule_builder")
    from schedc.lang.glob import PathSet, compile_pattern

    rng = random.Random(1234)
    tree = ParamTree.from_paths(SPEC_PATHS)
    compared = conflicts = 0
    for _ in range(300):
        patterns = rng.sample(SPEC_PATTERNS, rng.randint(1, 3))
        entries = {p: _random_entry(rng) for p in patterns}
        # the ground truth of a conflict: two entries naming one parameter free and fixed in one phase,
        # or two inits of one parameter in one phase
        matched = {p: set(PathSet(SPEC_PATHS).match(compile_pattern(p))) for p in patterns}
        conflict = False
        for i in range(len(SPEC_PATHS)):
            mine = [p for p in patterns if i in matched[p]]
            for k in range(N_PHASES):
                said = {_explicit(entries[p]).get(k) for p in mine} - {None}
                inits = [p for p in mine for kind, arg in entries[p] if kind == "init" and arg[1] == k]
                conflict |= said == {"free", "fixed"} or len(inits) > 1
        lines = []
        spectracles_params = {}
        for p, specs in entries.items():
            texts, combined = [], sb.ParamSpec()
            for kind, arg in specs:
                if kind == "init":
                    dist, k = arg
                    texts.append(f"init {dist}({', '.join(map(str, INIT_ARGS[dist]))}) at {k}")
                    combined = combined | getattr(sb, f"init_{dist}")(k, *INIT_ARGS[dist])
                else:
                    texts.append(f"{kind.replace('_', ' ')} {', '.join(map(str, arg))}")
                    combined = combined | getattr(sb, kind)(*arg)
            lines.append(f"  {p}: {' | '.join(texts)};")
            spectracles_params[p] = combined
        text = "phase 10 lr 0.1 <>\n" * N_PHASES + "params <\n" + "\n".join(lines) + "\n>"
        plan, diags = resolve(parse(text).file, tree)
        found = {"E0404", "E0302"} & set(codes(diags))
        assert bool(found) == conflict, (text, diags)
        if conflict:
            conflicts += 1
            continue
        compared += 1
        expanded = sb.expand_patterns(spectracles_params, SPEC_PATHS, [])
        for path in SPEC_PATHS:
            mine = {ph.index for ph in plan.phases if path in ph.free}
            if path not in expanded:
                assert mine == set(), (text, path)  # unnamed: `default fixed`
                continue
            assert mine == sb._resolve_free_phases(expanded[path], N_PHASES), (text, path)
            theirs = {k: spec for k, spec in expanded[path].init_specs.items() if k >= 0}
            my_inits = {ph.index: i for ph in plan.phases for i in ph.inits if i.path == path}
            assert set(my_inits) == set(theirs), (text, path)
            for k, spec in theirs.items():
                args = {"normal": (spec.mean, spec.std), "uniform": (spec.low, spec.high), "value": (spec.value,)}[spec.kind]
                assert (my_inits[k].kind, my_inits[k].args) == (spec.kind, tuple(float(a) for a in args)), (text, path)
    assert compared > 100 and conflicts > 10
