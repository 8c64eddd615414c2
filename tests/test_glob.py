"""The glob engine: the pattern matrix, every spectracles matching bug (research §1.4), errors, speed."""


import pytest

from schedc.lang.glob import PathSet, PatternError, check_pattern, compile_pattern, components, format_key, join

# (pattern, path, matches): spectracles' bugs first, each must NOT reproduce
SPECTRACLES_BUGS = [
    ("gp.**.lengthscale", "gpx.kernel.lengthscale", False),  # string-prefix test
    ("line.**.x", "linex.x", False),
    ("a.b.**.c", "a.z.q.c", False),  # only the first prefix component checked
    ("a.b.**.z", "a.c.z", False),
    ("a.**.a", "a", False),  # prefix and suffix overlapped
    ("a.*.**.d", "a.d", False),  # `*` must consume one component
    ("*.**.x", "x", False),
    ("x.**.y.**.z", "x.y.z", True),  # two `**` degraded to `*`
    ("x.**.y.**.z", "x.q.y.r.z", True),
    ("x.**.y.**.z", "x.q.q.y.z", True),
    ("GP.coefficients", "gp.coefficients", False),  # case-sensitive everywhere
    ("gp.Coefficients", "gp.coefficients", False),
]

CORRECT = [
    ("a.**.b.c", "a.c", False),
    ("a.b.c.**", "a.x.y.z", False),
    ("a.**", "a", True),
    ("a.**", "a.b.c", True),
    ("a.**", "ab.c", False),
    ("**", "anything.at.all", True),
    ("**", "layers[3].weight", True),
    ("**.c", "c", True),
    ("**.lengthscale", "gp.kernel.lengthscale", True),
    ("**.lengthscale", "gp.kernel.lengthscales", False),
    ("gp.*", "gp.kernel.lengthscale", False),
    ("gp.*", "gp.coefficients", True),
    ("gp*", "gp.x", False),
    ("gp*", "gpx", True),
    ("coef*", "coefficients", True),
    ("coef*", "coef", True),
    ("*coef*", "the_coefficients", True),
    ("*", "a", True),
    ("*", "a.b", False),
    ("*.param", "inner1.param", True),
    ("gp.*.lengthscale", "gp.mean.lengthscale", True),
    ("name", "name", True),
    ("name", "names", False),
    ("name", "a.name", False),
    ("line.{amplitude,width}", "line.width", True),
    ("line.{amplitude,width}", "line.center", False),
    ("line_{a,b}.width", "line_b.width", True),
    ("{a,b*}.x", "bz.x", True),
    ("layers[0].weight", "layers[0].weight", True),
    ("layers[0].weight", "layers[1].weight", False),
    ("layers[*].weight", "layers[12].weight", True),
    ("layers[*].weight", "layers.weight", False),
    ("layers[*]", "layers[0].weight", False),
    ("layers[*].**", "layers[0].weight", True),
    ("layers.*", "layers[0]", False),  # `*` is one `.name` component, `[*]` one index
    ("**.weight", "layers[0].weight", True),
    ("**[3]", "a.b[3]", True),
    ("[*].w", "[0].w", True),
    ("[0]", "[0]", True),
    ('heads["q-proj"].bias', 'heads["q-proj"].bias', True),
    ('heads[*].bias', 'heads["q-proj"].bias', True),
    ('d["w"]', "d.w", True),  # an identifier key is written `.w`
    ("a.**.**.b", "a.b", True),
    ("**.**", "", True),
]


@pytest.mark.parametrize("pattern,path,expected", SPECTRACLES_BUGS + CORRECT)
def test_matrix(pattern, path, expected):
    assert compile_pattern(pattern).match(path) is expected
    # the bulk matcher agrees with the single-path one
    assert (0 in PathSet([path, "zzz.unrelated"]).match(compile_pattern(pattern))) is expected


@pytest.mark.parametrize("pattern,path,expected", [("gp.**.lengthscale", 'gp["a.b"].lengthscale', True), ("**.b", 'd["a.b"]', False), ("**.x", 'k["y.x"]', False)])
def test_quoted_keys_are_one_component(pattern, path, expected):
    assert compile_pattern(pattern).match(path) is expected
    assert (PathSet([path]).match(compile_pattern(pattern)) == [0]) is expected


@pytest.mark.parametrize(
    "pattern,message,offset",
    [
        ("gp**", "`**` must be a whole component", 2),  # spectracles read it as `gp.**`
        ("**coef*", "`**` must be a whole component", 0),
        ("gp.coef?icients", "unexpected `?`", 7),  # fnmatch extras are not patterns
        ("gp.[cd]oefficients", "`[...]` takes an index", 3),
        ("a..b", "empty component", 1),
        (".a", "cannot start with `.`", 0),
        ("a.{b,c", "never closed", 2),
        ("a.[0]", "no `.` before `[`", 1),
        ("a b", "unexpected ` `", 1),
        ("layers.0", "not a name", 7),
        ("", "empty pattern", 0),
    ],
)
def test_malformed(pattern, message, offset):
    err = check_pattern(pattern)
    assert isinstance(err, PatternError)
    assert message in err.message
    assert err.offset == offset
    with pytest.raises(PatternError):
        compile_pattern(pattern)


def test_errors_suggest_fixes():
    assert "gp.**" in check_pattern("gp**").help
    assert "{c,d}" in check_pattern("gp.[cd]oef").help


def test_literal_patterns_need_no_regex():
    assert compile_pattern("layers[2].w").literal == "layers[2].w"
    assert compile_pattern('d["w"]').literal == "d.w"
    assert compile_pattern("a.*").literal is None


def test_canonical_paths():
    assert format_key("w") == ".w"
    assert format_key("q-proj") == '["q-proj"]'
    assert format_key(3) == "[3]"
    assert format_key('a"b') == '["a\\"b"]'
    assert join([".gp", ".kernel", "[0]"]) == "gp.kernel[0]"
    assert join(["[0]", ".w"]) == "[0].w"
    assert components('layers[0].attn["q-proj"].w') == [".layers", "[0]", ".attn", '["q-proj"]', ".w"]


def test_pathset_order_and_indices():
    paths = ["a.x", "b.x", "a.y", "a"]
    ps = PathSet(paths)
    assert ps.match(compile_pattern("a.**")) == [0, 2, 3]
    assert ps.match(compile_pattern("**.x")) == [0, 1]
    assert ps.match(compile_pattern("**")) == [0, 1, 2, 3]
    assert ps.match(compile_pattern("a.y")) == [2]
    assert ps.match(compile_pattern("c")) == []


def test_hundred_patterns_against_ten_thousand_paths():
    # the time it takes is measured by bench/bench_resolve.py, not asserted here
    paths = [f"blocks[{i}].{m}.{w}" for i in range(1250) for m in ("attn", "mlp") for w in ("weight", "bias", "scale", "shift")]
    patterns = [f"blocks[{i}].**" for i in range(30)] + ["**.weight", "**.bias", "blocks[*].attn.*", "blocks[*].{attn,mlp}.w*", "**"] * 10 + [f"blocks[{i}].mlp.weight" for i in range(20)]
    ps = PathSet(paths)
    found = [ps.match(compile_pattern(p)) for p in patterns]
    assert len(paths) == 10_000 and len(patterns) == 100
    assert found[30] == [i for i, p in enumerate(paths) if p.endswith(".weight")]
    assert found[31] == [i for i, p in enumerate(paths) if p.endswith(".bias")]
    assert found[33] == [i for i, p in enumerate(paths) if ".attn.w" in p or ".mlp.w" in p]
