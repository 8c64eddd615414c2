"""Editor support: the VS Code grammar tests (npm), Vim highlighting and quickfix, pre-commit hooks.

The npm tests are skipped only where node/npm are absent, the Vim tests only where vim
is; anything else that goes wrong (an npm install that fails included) is a failure.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from schedc.check import catalog

from schedc.lang import syntax

ROOT = Path(__file__).resolve().parent.parent
VSCODE = ROOT / "editors" / "vscode"
VIM = ROOT / "editors" / "vim"
BIN = Path(sys.executable).parent

needs_node = pytest.mark.skipif(shutil.which("node") is None or shutil.which("npm") is None, reason="node/npm not installed")
needs_vim = pytest.mark.skipif(shutil.which("vim") is None, reason="vim not installed")


# ---------------------------------------------------------------- every editor knows the whole language


def _tm_grammar() -> str:
    return (VSCODE / "syntaxes" / "sched.tmLanguage.json").read_text(encoding="utf-8")


def _vim_syntax() -> str:
    return (VIM / "syntax" / "sched.vim").read_text(encoding="utf-8")


def test_grammars_name_every_keyword():
    tm = json.loads(_tm_grammar())
    regexes = json.dumps(tm)
    vim_keywords = set()
    for line in _vim_syntax().splitlines():
        if line.startswith("syn keyword"):
            vim_keywords.update(w for w in line.split()[3:] if "=" not in w)
    for word in syntax.KEYWORDS:
        assert re.search(rf"\b{word}\b", regexes), f"TextMate grammar lacks `{word}`"
        assert word in vim_keywords, f"Vim syntax lacks `{word}`"


def _emacs_list(name: str) -> list[str]:
    source = (ROOT / "editors" / "emacs" / "sched-mode.el").read_text(encoding="utf-8")
    body = re.search(rf"\(defconst {name}\s+'\((.*?)\)", source, re.S).group(1)
    return re.findall(r'"([^"]+)"', body)


def test_emacs_mode_names_the_whole_language():
    assert sorted(_emacs_list("sched-keywords")) == sorted(k for k in syntax.KEYWORDS if k not in ("true", "false"))
    assert sorted(_emacs_list("sched-builtins")) == sorted(set(catalog.SCHEDULES) | set(catalog.DISTRIBUTIONS))


def test_grammars_name_every_schedule_and_distribution():
    builtins = re.search(r'syn match schedBuiltin "\\<\\%\((.*?)\\\)\\ze', _vim_syntax()).group(1).split("\\|")
    tm = json.loads(_tm_grammar())
    tm_rules = {r.get("name"): r["match"] for r in tm["repository"]["expression"]["patterns"] if "match" in r}
    tm_schedules = re.search(r"\(\?:(.*?)\)", tm_rules["support.function.schedule.sched"]).group(1).split("|")
    tm_distributions = re.search(r"\(\?:(.*?)\)", tm_rules["support.function.distribution.sched"]).group(1).split("|")
    assert sorted(builtins) == sorted(set(catalog.SCHEDULES) | set(catalog.DISTRIBUTIONS))
    assert sorted(tm_schedules) == sorted(catalog.SCHEDULES)
    assert sorted(tm_distributions) == sorted(catalog.DISTRIBUTIONS)


def test_vscode_manifest():
    manifest = json.loads((VSCODE / "package.json").read_text(encoding="utf-8"))
    (language,) = manifest["contributes"]["languages"]
    assert language["id"] == "sched" and language["extensions"] == [".sched"]
    grammars = {g["scopeName"]: g for g in manifest["contributes"]["grammars"]}
    assert grammars["source.sched"]["language"] == "sched"
    injection = grammars["inline.sched.python"]
    assert injection["injectTo"] == ["source.python"]
    assert injection["embeddedLanguages"] == {"meta.embedded.block.sched": "sched"}
    for grammar in grammars.values():
        assert (VSCODE / grammar["path"]).is_file()
    assert manifest["contributes"]["configuration"]["properties"]["sched.server.path"]["default"] == "schedc"
    for name in ("LICENSE", "README.md", ".vscodeignore", "src/extension.ts"):
        assert (VSCODE / name).is_file()
    assert '"lsp"' in (VSCODE / "src" / "extension.ts").read_text(encoding="utf-8")


def test_language_configuration():
    config = json.loads((VSCODE / "language-configuration.json").read_text(encoding="utf-8"))
    assert config["comments"]["lineComment"] == "#"
    assert {tuple(pair) for pair in config["brackets"]} == {("<", ">"), ("(", ")"), ("[", "]"), ("{", "}")}
    # VS Code's wordPattern is a JavaScript regex with the `u` flag (names are Python identifiers:
    # `σ`, `vσ_raw`); its three character classes are spelled for Python here.
    assert config["wordPattern"]["flags"] == "u"
    word = re.compile(_python_word_pattern(config["wordPattern"]["pattern"]))
    for line, expected in WORDS:
        assert [m.group() for m in word.finditer(line)] == expected


# (line, the words VS Code finds in it: what double-click selects and completion replaces)
WORDS = [
    ("  free gp.coefficients, layers[0].weight, line.* lr 0.5", ["free", "gp.coefficients", "layers[0].weight", "line.*", "lr", "0.5"]),
    ("  free line.σ, line.vσ_raw, μ2; init $σ0 = 1.5", ["free", "line.σ", "line.vσ_raw", "μ2", "init", "$σ0", "1.5"]),
    ("phase été 10 lr 0.001", ["phase", "été", "lr", "0.001"]),
]


def _python_word_pattern(pattern: str) -> str:
    """The wordPattern in Python's `re`: `\\p{L}` (a letter) is `[^\\W\\d_]`, `\\p{N}` a digit."""
    classes = {r"[\p{L}_*$]": r"(?:[^\W\d]|[*$])", r"[\p{L}_*]": r"(?:[^\W\d]|\*)", r"[\p{L}\p{N}_*]": r"[\w*]"}
    for js, py in classes.items():
        pattern = pattern.replace(js, py)
    assert r"\p" not in pattern, f"a character class this test cannot translate: {pattern}"
    return pattern


@needs_node
def test_language_configuration_word_pattern_in_javascript():
    """The same words under JavaScript's own regex engine, compiled as VS Code compiles a wordPattern."""
    config = json.loads((VSCODE / "language-configuration.json").read_text(encoding="utf-8"))["wordPattern"]
    script = (
        "const [p, f, lines] = JSON.parse(require('fs').readFileSync(0, 'utf8'));"
        "const re = new RegExp(p, f + 'g');"
        "console.log(JSON.stringify(lines.map(l => [...l.matchAll(re)].map(m => m[0]))));"
    )
    payload = json.dumps([config["pattern"], config["flags"], [line for line, _ in WORDS]])
    out = subprocess.run(["node", "-e", script], input=payload, capture_output=True, text=True, timeout=60, encoding="utf-8")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == [expected for _, expected in WORDS]


# ---------------------------------------------------------------- VS Code grammar tests (npm)


@needs_node
def test_vscode_grammar_and_injection_tests():
    """`make editors-test`: vscode-tmgrammar-test on tests/*.test.sched and the Python injection, and tsc."""
    install = subprocess.run(
        ["npm", "install", "--no-audit", "--no-fund", "--prefer-offline"], cwd=VSCODE, capture_output=True, text=True, timeout=240
    )
    assert install.returncode == 0, install.stdout + install.stderr
    result = subprocess.run(["npm", "test"], cwd=VSCODE, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "params.test.sched run successfuly" in result.stdout
    assert "phases.test.sched run successfuly" in result.stdout
    assert "embedded.test.py run successfuly" in result.stdout


# ---------------------------------------------------------------- Vim


SAMPLE = """\
optimizer adamw(weight_decay=1e-4)   # comment
let warm = 5%
phase tail $n lr warmup_cosine(0 -> 1 -> 0, warm) <
  free model.lr, layers[0].weight;
  init gp.c ~ normal(0, 0.1);
  stop when loss_change < 1e-6 over 50
>
params <
  in, after: fixed in 0, tail | init uniform(0, 1) at 0;
>
phase 10 lr 0.1 for 10% then cosine(0.1 -> 0) < fix ** >
phase 5 lr 0.1 * plateau(on=val.loss, patience=3) < free a >
"""


def _run_vim(script: str, tmp_path: Path, env: dict | None = None) -> None:
    path = tmp_path / "test.vim"
    path.write_text(f"set rtp^={VIM}\nfiletype plugin on\nsyntax on\n{script}\nqall!\n", encoding="utf-8")
    result = subprocess.run(
        ["vim", "-Nu", "NONE", "-i", "NONE", "-es", "-S", str(path)], capture_output=True, text=True, timeout=60, env=env, stdin=subprocess.DEVNULL
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _position(text: str, needle: str, nth: int = 0) -> tuple[int, int]:
    """1-based (line, column) of the nth occurrence of `needle` (ASCII text: bytes = characters)."""
    offset = -1
    for _ in range(nth + 1):
        offset = text.index(needle, offset + 1)
    line = text.count("\n", 0, offset) + 1
    return line, offset - (text.rfind("\n", 0, offset) + 1) + 1


@needs_vim
def test_vim_highlighting(tmp_path):
    expected = {
        ("optimizer", 0): "schedDirective",
        ("adamw", 0): "schedOptimizerName",
        ("weight_decay", 0): "schedArgument",
        ("1e-4", 0): "schedNumber",
        ("# comment", 0): "schedComment",
        ("let", 0): "schedDeclaration",
        ("warm", 0): "schedLetName",
        ("5%", 0): "schedNumber",
        ("phase", 0): "schedDeclaration",
        ("tail", 0): "schedPhaseName",
        ("$n", 0): "schedPlaceholder",
        ("warmup_cosine", 0): "schedBuiltin",
        ("->", 0): "schedOperator",
        ("free", 0): "schedStatement",
        ("model", 0): "schedPattern",  # a parameter named like a keyword
        ("lr", 1): "schedPattern",
        ("layers", 0): "schedPattern",
        ("normal", 0): "schedBuiltin",
        ("~", 0): "schedOperator",
        ("stop", 0): "schedStatement",
        ("loss_change", 0): "schedMetric",
        ("over", 0): "schedKeyword",
        ("in,", 0): "schedParamPattern",
        ("after:", 0): "schedParamPattern",
        ("fixed", 0): "schedSpecKeyword",
        ("in 0", 0): "schedSpecKeyword",
        ("tail", 1): "schedPhaseRef",
        ("uniform", 0): "schedBuiltin",
        ("at 0", 0): "schedSpecKeyword",
        ("then", 0): "schedKeyword",
        ("cosine", 0): "schedBuiltin",
        ("**", 0): "schedPattern",
        ("val.loss", 0): "schedPlateauMetric",
        ("patience", 0): "schedArgument",
    }
    result = _vim_groups(SAMPLE, expected, tmp_path)
    assert result["filetype"] == "sched"
    assert result["commentstring"] == "# %s"
    assert dict(zip(expected, result["groups"])) == expected


def _vim_groups(text: str, probes, tmp_path) -> dict:
    """Vim's highlight group at each (needle, nth) of `probes` in a `.sched` file of `text`, with
    the buffer's filetype and commentstring."""
    source, out = tmp_path / "sample.sched", tmp_path / "groups.json"
    source.write_text(text, encoding="utf-8")
    positions = ", ".join(f"[{line}, {col}]" for line, col in (_position(text, *probe) for probe in probes))
    _run_vim(
        f"edit {source}\n"
        f"let groups = map([{positions}], {{_, p -> synIDattr(synID(p[0], p[1], 1), 'name')}})\n"
        f"call writefile([json_encode({{'groups': groups, 'filetype': &filetype, 'commentstring': &commentstring}})], '{out}')",
        tmp_path,
    )
    return json.loads(out.read_text())


EVALS = """\
eval "m.py:metrics" every step
eval "m.py:metrics" every 3 steps
eval "m.py:metrics" every epoch
phase 10 lr step(0.1, at=[5], factor=0.5) < free a >
"""


@needs_vim
def test_vim_highlights_an_evaluation_s_unit_with_its_count_left_out(tmp_path):
    """`every step` (the formatter writes it for `every steps`) reads its unit as a keyword, as
    `every 3 steps` does; `step(...)` is still the schedule."""
    expected = {
        ("every", 0): "schedEvery",
        ("step\n", 0): "schedEveryUnit",
        ("steps", 0): "schedKeyword",
        ("epoch", 0): "schedEveryUnit",
        ("step(", 0): "schedBuiltin",
    }
    assert dict(zip(expected, _vim_groups(EVALS, expected, tmp_path)["groups"])) == expected


BAD = """\
phase 10 lr cosin(0.1 -> 0) < free a >
let unused = 1
phase 5 lr 0.1 < free b @ >
"""


def _expected_quickfix(concise: str) -> list[dict]:
    rows = []
    for line in concise.splitlines():
        m = re.fullmatch(r".*?:(\d+):(\d+): (error|warning)(\[\w+\]: .*)", line)
        if m:
            rows.append({"lnum": int(m[1]), "col": int(m[2]), "type": m[3][0].upper(), "text": m[4]})
    return rows


def _quickfix(raw: list[dict]) -> list[dict]:
    return [{"lnum": e["lnum"], "col": e["col"], "type": e["type"].upper(), "text": e["text"]} for e in raw if e["valid"]]


@needs_vim
def test_vim_quickfix_from_concise_output(tmp_path):
    """`:cgetfile` on `schedc check --format concise` output, with the ftplugin's errorformat."""
    source = tmp_path / "bad.sched"
    source.write_text(BAD, encoding="utf-8")
    check = subprocess.run([str(BIN / "schedc"), "check", "--format", "concise", str(source)], capture_output=True, text=True)
    assert check.returncode == 1
    report = tmp_path / "report.txt"
    report.write_text(check.stdout + check.stderr, encoding="utf-8")
    expected = _expected_quickfix(check.stdout)
    assert [(e["lnum"], e["type"]) for e in expected] == [(1, "E"), (2, "W"), (3, "E")]

    out = tmp_path / "qf.json"
    _run_vim(f"edit {source}\ncgetfile {report}\ncall writefile([json_encode(getqflist())], '{out}')", tmp_path)
    assert _quickfix(json.loads(out.read_text())) == expected
    assert "[E0104]: " in expected[0]["text"]


@needs_vim
def test_vim_make_runs_schedc_check(tmp_path):
    """`:make` in a .sched buffer runs `schedc check --format concise %` and fills the quickfix list."""
    source = tmp_path / "bad.sched"
    source.write_text(BAD, encoding="utf-8")
    out = tmp_path / "qf.json"
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    _run_vim(
        f"edit {source}\nsilent make\ncall writefile([json_encode({{'qf': getqflist(), 'makeprg': &makeprg}})], '{out}')",
        tmp_path,
        env=env,
    )
    result = json.loads(out.read_text())
    assert result["makeprg"] == "schedc check --format concise %"
    entries = _quickfix(result["qf"])
    assert [(e["lnum"], e["col"], e["type"]) for e in entries] == [(1, 13, "E"), (2, 5, "W"), (3, 25, "E")]
    assert entries[2]["text"] == "[E0002]: unexpected character `@`"


@needs_vim
def test_vim_schedfmt_formats_the_buffer(tmp_path):
    source = tmp_path / "messy.sched"
    messy = "phase   10 lr 0.1<free a;>   # keep me\n"
    source.write_text(messy, encoding="utf-8")
    out = tmp_path / "formatted.txt"
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    _run_vim(f"edit {source}\nSchedFmt\ncall writefile(getline(1, '$'), '{out}')", tmp_path, env=env)
    expected = subprocess.run([str(BIN / "schedc"), "fmt", "-"], input=messy, capture_output=True, text=True, check=True).stdout
    assert out.read_text(encoding="utf-8") == expected and expected != messy


# ---------------------------------------------------------------- pre-commit


def _hooks() -> list[dict]:
    import yaml

    return yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text(encoding="utf-8"))


def test_pre_commit_manifest_is_valid():
    result = subprocess.run([str(BIN / "pre-commit"), "validate-manifest", str(ROOT / ".pre-commit-hooks.yaml")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    hooks = {h["id"]: h for h in _hooks()}
    assert hooks["schedc-check"]["entry"] == "schedc check"
    assert hooks["schedc-fmt"]["entry"] == "schedc fmt"
    for hook in hooks.values():
        assert hook["language"] == "python"
        files = re.compile(hook["files"])
        assert files.search("schedules/fit.sched") and not files.search("fit.sched.bak") and not files.search("fit.py")


def test_pre_commit_entries_behave_as_hooks(tmp_path):
    """pre-commit runs `ENTRY file...`: check fails on a bad file, fmt rewrites a badly laid out one."""
    hooks = {h["id"]: h["entry"].split() for h in _hooks()}
    bad = tmp_path / "bad.sched"
    bad.write_text(BAD, encoding="utf-8")
    messy = tmp_path / "messy.sched"
    messy.write_text("phase   10 lr 0.1<free a;>\n", encoding="utf-8")
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")

    check = subprocess.run(hooks["schedc-check"] + [str(bad)], capture_output=True, text=True, env=env)
    assert check.returncode == 1 and "E0104" in check.stdout + check.stderr
    fmt = subprocess.run(hooks["schedc-fmt"] + [str(messy)], capture_output=True, text=True, env=env)
    assert fmt.returncode == 0, fmt.stderr
    formatted = messy.read_text(encoding="utf-8")
    assert formatted != "phase   10 lr 0.1<free a;>\n"
    again = subprocess.run(hooks["schedc-fmt"] + ["--check", str(messy)], capture_output=True, text=True, env=env)
    assert again.returncode == 0


# ---------------------------------------------------------------- Emacs


@pytest.mark.skipif(shutil.which("emacs") is None, reason="emacs not installed")
def test_emacs_mode_ert_suite():
    """editors/emacs/sched-mode-tests.el: faces, brackets, indentation, comments, compile and eglot entries."""
    emacs_dir = ROOT / "editors" / "emacs"
    result = subprocess.run(
        ["emacs", "-Q", "--batch", "-L", str(emacs_dir), "-l", str(emacs_dir / "sched-mode-tests.el"), "-f", "ert-run-tests-batch-and-exit"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"Ran (\d+) tests, \1 results as expected, 0 unexpected", result.stdout + result.stderr)


def test_vscode_extension_runs_no_workspace_code_in_restricted_mode():
    manifest = json.loads((VSCODE / "package.json").read_text(encoding="utf-8"))
    untrusted = manifest["capabilities"]["untrustedWorkspaces"]
    assert untrusted["supported"] == "limited"
    assert {"sched.server.path", "sched.server.args", "sched.modelChecks"} <= set(untrusted["restrictedConfigurations"])
    source = (VSCODE / "src" / "extension.ts").read_text(encoding="utf-8")
    assert "vscode.workspace.isTrusted &&" in source and "initializationOptions: { modelChecks: modelChecks() }" in source
    assert "onDidGrantWorkspaceTrust" in source
