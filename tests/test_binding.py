"""Model binding: loading factories, E0406, the model-dependent CODES examples, `schedc check --model`
end to end, and the Python API (`schedc.compile`, `Program`, `SchedError`)."""

import inspect
import json
import subprocess
import sys

import jax
import pytest

import schedc
from schedc.plan.binding import BindingError, check_against_model, load_entry, load_model
from schedc.cli import main
from schedc.lang.diagnostics import CODES
from schedc.lang.syntax import parse

MODEL = '''
import equinox as eqx
import jax
import jax.numpy as jnp


class Kernel(eqx.Module):
    lengthscale: jax.Array
    variance: jax.Array


class GP(eqx.Module):
    kernel: Kernel


class Line(eqx.Module):
    width: jax.Array


class M(eqx.Module):
    gp: GP
    line_a: Line
    line_b: Line
    a: jax.Array
    b: jax.Array


def build():
    width = jnp.asarray(0.1)  # one array at two paths: line_b.width is a shared copy of line_a.width
    return M(GP(Kernel(jnp.asarray(1.0), jnp.asarray(1.0))), Line(width), Line(width), jnp.zeros(()), jnp.zeros(()))


def broken():
    raise RuntimeError("no data here")


def leaves():
    raise SystemExit(3)


def stream():  # a generator of batches: no length, so no epochs (E0408)
    yield from ()


def forgot():  # its `return` left out: was "pattern `a` matches no parameter; the model has no parameters"
    build()


def sized():  # batches with their count per pass
    import schedc

    return schedc.Batches(stream, per_epoch=3)


def arrays():
    return jnp.zeros((8, 2)), jnp.zeros(8)
'''


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A folder with the `m.py` model the CODES examples name, and a package `mpkg.models`."""
    root = tmp_path_factory.mktemp("binding")
    (root / "m.py").write_text(MODEL)
    (root / "mpkg").mkdir()
    (root / "mpkg" / "__init__.py").write_text("")
    (root / "mpkg" / "models.py").write_text(MODEL)
    (root / "bad_syntax.py").write_text("def build(:\n")
    return root


def check(text, folder, ref=None):
    return check_against_model(parse(text), ref, folder)


# ---------------------------------------------------------------- loading


def test_load_file_relative_to_the_sched_file(folder):
    assert callable(load_entry("m.py:build", folder))
    model = load_model("m.py:build", folder)
    assert model.line_a.width is model.line_b.width


def test_load_module_reference(folder):
    model = load_model("mpkg.models:build", folder)
    assert type(model).__name__ == "M"


@pytest.mark.parametrize(
    "ref,message",
    [
        ("m.py", "not a reference"),
        ("m.py:", "not a reference"),
        ("nope.py:build", "no such file"),
        ("m.py:nothing", "has no attribute `nothing`"),
    ],
)
def test_bad_references(folder, ref, message):
    with pytest.raises(BindingError, match=message):
        load_entry(ref, folder)


@pytest.mark.parametrize(
    "ref,note",
    [
        ("m.py:broken", "RuntimeError: no data here"),
        ("m.py:leaves", "SystemExit: 3"),
        ("bad_syntax.py:build", "SyntaxError"),
        ("missing.py:build", "no such file"),
        ("no_such_module_xyz:build", "ModuleNotFoundError"),
        ("m.py:nothing", "has no attribute"),
        ("m.py:forgot", "`m.py:forgot` returned None: a model factory returns the model (is its `return` missing?)"),
    ],
)
def test_load_failures_are_e0406_at_the_directive(folder, ref, note):
    diags = check(f'seed 1\nmodel "{ref}"\nphase 10 lr 0.1 < free a >', folder)
    assert [d.code for d in diags] == ["E0406"]
    d = diags[0]
    assert (d.span.line, d.span.column) == (2, 7)
    assert note in d.notes[0]


def test_load_failure_from_the_command_line_points_at_the_start(folder):
    (d,) = check("phase 10 lr 0.1 < free a >", folder, ref="m.py:broken")
    assert d.code == "E0406" and (d.span.line, d.span.column) == (1, 1)


def test_no_model_no_checks(folder):
    assert check("phase 10 lr 0.1 < free nothing.here >", folder) == []


# ---------------------------------------------------------------- the CODES examples


@pytest.mark.parametrize("code", sorted(c for c in CODES if c.startswith("E04") or c in ("W0103", "W0105")))
def test_every_model_code_example_produces_its_code(folder, code):
    diags = check(CODES[code].example, folder)
    assert code in [d.code for d in diags], diags


def test_model_checks_do_not_repeat_the_model_free_ones(folder):
    # `free a; fix a` (W0102) is the model-free check's; that the phase then frees nothing needs the model
    diags = check('model "m.py:build"\nphase 10 lr 0.1 < free a; fix a >', folder)
    assert "W0102" not in [d.code for d in diags] and [d.code for d in diags].count("W0104") == 1
    # a phase with no `free` at all: the model-free check's W0104, not repeated
    assert "W0104" not in [d.code for d in check('model "m.py:build"\nphase 10 lr 0.1 < fix a >', folder)]


def test_epochs_over_batches_without_a_length_are_e0408_at_the_phase(folder):
    text = 'model "m.py:build"\ndata "m.py:stream"\nphase 5 lr 0.1 < free a >\nphase tail 2 epochs lr 0.1 < free a >'
    (d,) = [d for d in check(text, folder) if d.code == "E0408"]
    assert (d.span.line, d.span.column, d.span.end_column) == (4, 1, 13)  # `phase tail 2`: the header, as W0106
    assert d.message == 'this phase counts epochs, but `data "m.py:stream"` returns a generator without a length: an epoch is no number of steps'
    assert [(l.span.line, l.span.column) for l in d.labels] == [(2, 6)] and "per_epoch=N" in d.help
    # `eval ... every epoch` counts epochs too, at its interval
    text = 'model "m.py:build"\ndata "m.py:stream"\neval "m.py:arrays" every epoch\nphase 5 lr 0.1 < free a >'
    (d,) = [d for d in check(text, folder) if d.code == "E0408"]
    assert d.span.line == 3 and d.message.startswith("`every epoch` counts epochs")


@pytest.mark.parametrize(
    "text,line",
    [
        ('lr warmup_cosine(0 -> 1e-3 -> 0, 1 epoch)\nphase 20 < free a >', 4),
        ('let w = 1 epoch\nphase 20 lr warmup_cosine(0 -> 1e-3 -> 0, w) < free a >', 4),
    ],
    ids=["an lr directive", "a let"],
)
def test_epochs_counted_outside_any_phase_are_e0408_at_the_duration(folder, text, line):
    (d,) = [d for d in check(f'model "m.py:build"\ndata "m.py:stream"\nbatch 8\n{text}', folder) if d.code == "E0408"]
    assert d.span.line == line and d.message.startswith("this duration counts epochs")


@pytest.mark.parametrize(
    "data,phase",
    [("m.py:sized", "phase 2 epochs"), ("m.py:arrays", "phase 2 epochs"), ("m.py:stream", "phase 20"), ("m.py:broken", "phase 2 epochs")],
    ids=["per_epoch given", "arrays", "counted in steps", "a failing data function is left to run"],
)
def test_no_e0408_when_an_epoch_has_a_length_or_nothing_counts_epochs(folder, data, phase):
    assert "E0408" not in [d.code for d in check(f'model "m.py:build"\ndata "{data}"\nbatch 8\n{phase} lr 0.1 < free a >', folder)]


def test_cli_check_reports_e0408_only_with_the_model(folder, capsys):
    path = folder / "unsized.sched"
    path.write_text('model "m.py:build"\ndata "m.py:stream"\nphase 2 epochs lr 0.1 < free a >\n')
    assert main(["check", "--no-cache", str(path)]) == 0  # model-free: the data function is not called
    assert "E0408" not in capsys.readouterr().out
    assert main(["check", str(path), "--model"]) == 1
    assert "unsized.sched:3:1: error[E0408]" in capsys.readouterr().out


# ---------------------------------------------------------------- schedc check --model, end to end


SCHED = 'model "m.py:build"\nphase 10 lr 0.1 < free gp.kernal.*, a; free b >\n'


@pytest.fixture()
def sched_file(folder):
    path = folder / "s.sched"
    path.write_text(SCHED)
    return path


def test_cli_check_with_the_model_directive(sched_file, capsys):
    assert main(["check", str(sched_file), "--model"]) == 1
    out = capsys.readouterr().out
    assert "s.sched:2:24: error[E0401]: pattern `gp.kernal.*` matches no parameter" in out
    assert "did you mean `gp.kernel.*`?" in out
    assert "Traceback" not in out


def test_cli_check_with_a_module_reference(sched_file, folder, capsys, monkeypatch):
    monkeypatch.chdir(folder)
    assert main(["check", "--format", "json", "--model=mpkg.models:build", str(sched_file)]) == 1
    found = json.loads(capsys.readouterr().out)
    assert [(d["code"], d["line"], d["column"]) for d in found] == [("W0103", 1, 1), ("E0401", 2, 24)]


def test_cli_check_without_model_is_model_free(sched_file, capsys):
    assert main(["check", str(sched_file)]) == 0
    assert "All checks passed!" in capsys.readouterr().out


def test_cli_check_unloadable_model_is_a_diagnostic(folder, capsys):
    path = folder / "bad.sched"
    path.write_text('model "m.py:broken"\nphase 10 lr 0.1 < free a >\n')
    assert main(["check", str(path), "--model"]) == 1
    out = capsys.readouterr().out
    assert "bad.sched:1:7: error[E0406]" in out and "RuntimeError: no data here" in out and "Traceback" not in out


# ---------------------------------------------------------------- the Python API


def test_import_schedc_stays_jax_free():
    code = "import sys, schedc; schedc.SchedError; print(sorted(m for m in sys.modules if m.split('.')[0] in ('jax', 'equinox', 'optax')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    assert "compile" in dir(schedc) and "Program" in dir(schedc)


def test_compile_text_with_a_model(folder):
    model = load_model("m.py:build", folder)
    prog = schedc.compile("let r = 0.1\nphase warm 10 lr r < free gp.**; init a = 2 >\nphase 5 lr $lr < free line_*.width, a >", model, lr=0.5)
    assert isinstance(prog, schedc.Program)
    assert [(p.name, p.steps) for p in prog.phases] == [("warm", 10), (None, 5)]
    assert prog.phases[0].free == ("gp.kernel.lengthscale", "gp.kernel.variance")
    assert prog.phases[1].free == ("line_a.width", "a")
    assert prog.phases[0].inits[0].path == "a" and prog.phases[0].inits[0].args == (2.0,)
    assert prog.plan.shared == {"line_b.width": "line_a.width"}
    assert prog.model is model and prog.tree.paths == prog.plan.parameters
    assert [w.code for w in prog.warnings] == ["W0103"]  # `b` is never named
    assert jax.random.key_data(prog.key).tolist() == jax.random.key_data(jax.random.key(0)).tolist()


def test_compile_a_path_with_its_model_directive_and_seed(folder):
    path = folder / "p.sched"
    path.write_text('model "m.py:build"\nseed 5\nphase 10 lr 0.1 < free ** >\n')
    for given in (path, str(path)):
        prog = schedc.compile(given)
        assert prog.phases[0].free == ("gp.kernel.lengthscale", "gp.kernel.variance", "line_a.width", "a", "b")
        assert prog.plan.source == str(path)
        assert jax.random.key_data(prog.key).tolist() == jax.random.key_data(jax.random.key(5)).tolist()
    assert schedc.compile(path, "mpkg.models:build").plan.parameters == prog.plan.parameters


def test_compile_without_any_model_is_model_free():
    prog = schedc.compile("phase 10 lr 0.1 < free gp.**; fix gp.k >")
    assert prog.model is None and prog.phases[0].free == ("gp.**",)


def test_sched_error_renders_like_the_cli_and_points_into_the_python_file(folder):
    model = load_model("m.py:build", folder)
    line = inspect.currentframe().f_lineno + 3
    with pytest.raises(schedc.SchedError) as info:
        schedc.compile(
            "phase 10 lr 0.1 < free gp.kernal.* >",
            model,
        )
    err = info.value
    assert [d.code for d in err.diagnostics] == ["W0103", "E0401"]  # warnings come along
    text = str(err)
    assert f"test_binding.py:{line}:" in text and "error[E0401]" in text
    assert "^^^^^^^^^^^" in text and "did you mean `gp.kernel.*`?" in text


def test_sched_error_collects_model_free_errors_too(folder):
    model = load_model("m.py:build", folder)
    with pytest.raises(schedc.SchedError) as info:
        schedc.compile("phase 0 lr 0.1 < free a >\nphase 10 lr cosin(1 -> 0) < free a >", model)
    assert {d.code for d in info.value.diagnostics} == {"E0203", "E0104"}


def test_compile_reports_an_unloadable_model(folder):
    path = folder / "u.sched"
    path.write_text('model "m.py:broken"\nphase 10 lr 0.1 < free a >\n')
    with pytest.raises(schedc.SchedError, match="E0406"):
        schedc.compile(path)


def test_cli_check_model_in_a_fresh_process(sched_file, folder):
    proc = subprocess.run([sys.executable, "-m", "schedc", "check", "--format", "concise", "s.sched", "--model"], capture_output=True, text=True, cwd=folder, timeout=300)
    assert proc.returncode == 1, proc.stderr
    assert "s.sched:2:24: error[E0401]: pattern `gp.kernal.*` matches no parameter" in proc.stdout
    assert "Traceback" not in proc.stdout + proc.stderr
