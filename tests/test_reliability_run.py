"""Regression tests of the adversarial findings in `schedc run`, `plot` and `fmt` (issue 14): user code
that fails is a located message, never a traceback; completed phases are saved whatever ends the
run (an error, SIGINT, SIGTERM); outputs are checked before training and written atomically."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import schedc
from schedc.cli import main
from schedc.tooling.files import atomic_write, same_file

MODEL_PY = '''
import os, signal, sys
import jax, jax.numpy as jnp

SIGNAL_AT = int(os.environ.get("SIGNAL_AT", "0"))
SIGNAL = int(os.environ.get("SIGNAL", "2"))
RAISE_AT = int(os.environ.get("RAISE_AT", "0"))
calls = [0]


def tick(_):
    calls[0] += 1
    if calls[0] == SIGNAL_AT:
        os.kill(os.getpid(), SIGNAL)
    if calls[0] == RAISE_AT:
        raise RuntimeError("the data went away")


def build():
    return {"a": jnp.zeros(3), "b": jnp.ones(2)}


def loss(m):
    jax.debug.callback(tick, m["a"][0])
    return jnp.sum((m["a"] - 1.0) ** 2) + jnp.sum(m["b"] ** 2)


def raises(m):
    raise ValueError("bad loss")


def vector(m):
    return m["a"]


def integer(m):
    return 3


def none(m):
    return None


def text(m):
    return "loss"


def exits(m):
    sys.exit(4)


def with_data(m, x):
    return jnp.sum((m["a"] * x) ** 2)


def data_text():
    return "not an array"


def data_exits():
    raise SystemExit(5)


def data_ok():
    return jnp.ones(3)


def data_none():
    pass


def metrics(m, x):
    return {"size": jnp.sum(m["a"] * x)}


def validation_raises():
    raise RuntimeError("no validation set")
'''

SCHED = """model "model.py:build"
loss  "model.py:loss"
phase 20 lr 0.05 < free a >
phase 20 lr 0.05 < free a, b >
phase 20 lr 0.01 < free b >
"""


@pytest.fixture
def project(tmp_path):
    (tmp_path / "model.py").write_text(MODEL_PY)
    (tmp_path / "bad_syntax.py").write_text("def loss(m) return 1\n")
    (tmp_path / "fit.sched").write_text(SCHED)
    return tmp_path


def run_inline(capsys, *args) -> tuple[int, str]:
    rc = main(["run", *map(str, args), "--quiet", "--compile-cache", "none"])
    captured = capsys.readouterr()
    return rc, captured.err


@pytest.mark.parametrize(
    "loss, data, expected",
    [
        ("missing.py:loss", None, "no such file"),
        ("model.py", None, "is not a reference"),
        ("model.py:nothing", None, "has no attribute"),
        ("bad_syntax.py:loss", None, "SyntaxError"),
        ("model.py:raises", None, "ValueError: bad loss"),
        ("model.py:vector", None, "must return a floating-point scalar, got an array of shape (3,)"),
        ("model.py:integer", None, "must return a floating-point scalar"),
        ("model.py:none", None, "must return a floating-point scalar, got NoneType"),
        ("model.py:text", None, "must return a floating-point scalar, got str"),
        ("model.py:exits", None, "sys.exit(4)"),
        ("model.py:with_data", "model.py:data_text", "failed on the model and data"),
        ("model.py:with_data", "model.py:data_exits", "sys.exit(5)"),
        ("model.py:with_data", "missing.py:data", "no such file"),
        ("model.py:with_data", "model.py:data_none", "data `model.py:data_none` returned None: it returns the loss's extra arguments (a tuple, a dict or one array; is its `return` missing?)"),
    ],
)
def test_bad_loss_or_data_is_a_message_not_a_traceback(project, capsys, loss, data, expected):
    extra = ["--data", data] if data else []
    rc, err = run_inline(capsys, project / "fit.sched", "--loss", loss, *extra)
    assert rc in (1, 2), err
    assert expected in err, err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    "validation, metrics, expected",
    [
        ("model.py:validation_raises", "model.py:metrics", "validation `model.py:validation_raises` failed: RuntimeError: no validation set (in `validation_raises`, at "),
        ("model.py:data_none", "model.py:metrics", "validation `model.py:data_none` returned None: it returns the metrics function's data arguments"),
        ("model.py:data_ok", "model.py:nothing", "eval `model.py:nothing` failed: `model.py` has no attribute `nothing`"),
        ("model.py:data_ok", "../model.py:metrics", "eval `../model.py:metrics` failed: `../model.py` is outside the folder of the .sched file"),
        ("missing.py:data", "model.py:metrics", "validation `missing.py:data` failed: no such file: "),
    ],
)
def test_bad_eval_or_validation_directives_are_a_message_not_a_traceback(project, capsys, validation, metrics, expected):
    """These were tracebacks (the two directives were loaded without the guards of `loss` and `data`),
    and an `eval` or `validation` file outside the .sched file's folder was imported."""
    (project / "e.sched").write_text(f'model "model.py:build"\nloss "model.py:with_data"\ndata "model.py:data_ok"\nvalidation "{validation}"\neval "{metrics}" every 5 steps\nphase 10 lr 0.05 < free a >\n')
    rc, err = run_inline(capsys, project / "e.sched")
    assert rc == 1 and expected in err and "Traceback" not in err, err


def test_loss_error_is_located_in_the_users_file(project, capsys):
    rc, err = run_inline(capsys, project / "fit.sched", "--loss", "model.py:raises")
    assert f"model.py:{MODEL_PY.splitlines().index('def raises(m):') + 2}" in err, err


def test_directive_loss_with_a_syntax_error(project, capsys):
    (project / "s.sched").write_text('model "model.py:build"\nloss "bad_syntax.py:loss"\nphase 5 lr 0.1 < free a >\n')
    rc, err = run_inline(capsys, project / "s.sched")
    assert rc == 1 and "SyntaxError" in err and "bad_syntax.py:1" in err


@pytest.mark.parametrize("prefix, data, code", [(b"\xef\xbb\xbf", b"phase 5 lr 0.1 < free a >\n", None), (b"", b"phase 5\x00", "E0004"), (b"", b"phase \xff\xfe", "E0004")])
def test_run_decodes_files_as_check_does(project, capsys, prefix, data, code):
    (project / "s.sched").write_bytes(prefix + b'model "model.py:build"\nloss "model.py:loss"\n' + data)
    rc, err = run_inline(capsys, project / "s.sched")
    assert "Traceback" not in err
    if code is None:
        assert rc == 0, err
    else:
        assert rc == 1 and code in err
        assert main(["check", str(project / "s.sched")]) == 1


def test_out_that_is_a_file_is_refused_before_training(project, capsys):
    (project / "taken").write_text("keep me")
    rc, err = run_inline(capsys, project / "fit.sched", "--out", project / "taken")
    assert rc == 2 and "is a file" in err
    assert (project / "taken").read_text() == "keep me"


def test_unusable_out_is_refused_before_training(project, capsys):
    (project / "taken").write_text("keep me")
    rc, err = run_inline(capsys, project / "fit.sched", "--out", project / "taken" / "sub")
    assert rc == 2 and "cannot write there" in err


def test_unwritable_checkpoint_is_refused_before_training(project, capsys):
    (project / "ck").write_text("a file")
    rc, err = run_inline(capsys, project / "fit.sched", "--checkpoint", project / "ck")
    assert rc == 2 and "is a file" in err


def test_earlier_results_are_kept_unless_forced(project, capsys):
    rc, err = run_inline(capsys, project / "fit.sched", "--out", project / "out")
    assert rc == 0, err
    saved = {p.name: p.stat().st_mtime_ns for p in (project / "out").iterdir()}
    rc, err = run_inline(capsys, project / "fit.sched", "--out", project / "out")
    assert rc == 2 and "holds the results of an earlier run" in err and "--force" in err
    assert {p.name: p.stat().st_mtime_ns for p in (project / "out").iterdir()} == saved  # untouched
    rc, err = run_inline(capsys, project / "fit.sched", "--out", project / "out", "--force")
    assert rc == 0 and "will be replaced" in err


@pytest.mark.parametrize("make", ["missing", "folder"])
def test_an_unreadable_schedule_is_refused_with_its_reason(project, capsys, make):
    path = project / "other.sched"
    if make == "folder":
        path.mkdir()
    rc, err = run_inline(capsys, path)
    assert rc == 2 and str(path) in err and "Traceback" not in err
    assert (f"cannot read {path}: Is a directory" if make == "folder" else f"{path}: no such file") in err


def test_a_later_phase_that_raises_keeps_the_completed_ones(project, capsys, monkeypatch):
    monkeypatch.setenv("RAISE_AT", "30")  # inside phase 1
    monkeypatch.syspath_prepend(str(project))
    rc, err = run_inline(capsys, project / "fit.sched", "--out", project / "out")
    assert rc == 1 and "Traceback" not in err, err
    assert "the data went away" in err
    assert "1 completed phase(s) are saved" in err
    assert np.load(project / "out" / "losses.npz").files == ["phase_0"]


def subprocess_run(project: Path, *args, **env) -> subprocess.CompletedProcess:
    environment = dict(os.environ, JAX_PLATFORMS="cpu", **{k: str(v) for k, v in env.items()})
    return subprocess.run(
        [sys.executable, "-m", "schedc", "run", str(project / "fit.sched"), "--quiet", "--chunk", "5", "--compile-cache", "none", *map(str, args)],
        env=environment, capture_output=True, text=True, timeout=240,
    )


@pytest.mark.parametrize("signum, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_stops_at_a_chunk_boundary_and_saves(project, signum, status):
    proc = subprocess_run(project, "--out", project / "out", "--checkpoint", project / "ck", SIGNAL_AT=27, SIGNAL=int(signum))
    assert proc.returncode == status, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "1 completed phase(s) are saved" in proc.stderr and "resumes the run" in proc.stderr
    assert np.load(project / "out" / "losses.npz").files == ["phase_0"]
    resumed = subprocess_run(project, "--out", project / "out2", "--checkpoint", project / "ck")
    assert resumed.returncode == 0, resumed.stderr
    assert np.load(project / "out2" / "losses.npz").files == ["phase_0", "phase_1", "phase_2"]


def test_sigint_without_checkpoint_saves_completed_phases(project):
    proc = subprocess_run(project, "--out", project / "out", SIGNAL_AT=47)
    assert proc.returncode == 130 and "Traceback" not in proc.stderr
    assert np.load(project / "out" / "losses.npz").files == ["phase_0", "phase_1"]


def test_python_api_keyboard_interrupt_carries_the_partial_result(project, monkeypatch):
    monkeypatch.setenv("SIGNAL_AT", "25")
    monkeypatch.syspath_prepend(str(project))
    import importlib

    module = importlib.import_module("model")
    module.SIGNAL_AT, module.calls[0] = 25, 0
    program = schedc.compile(project / "fit.sched")
    before = signal.getsignal(signal.SIGINT)  # (SIG_IGN where the suite was started in the background)
    with pytest.raises(KeyboardInterrupt) as caught:
        program.run(module.loss, quiet=True, chunk=5)
    assert caught.value.signal == signal.SIGINT
    assert [p.index for p in caught.value.result.phases] == [0]  # stopped in phase 1, at a chunk boundary
    assert signal.getsignal(signal.SIGINT) is before  # the handler is restored


# ---- plot and fmt


def test_plot_never_writes_over_its_input(project):
    sched = project / "fit.sched"
    before = sched.read_bytes()
    assert main(["plot", str(sched), "--out", str(sched)]) == 2
    assert main(["plot", str(sched), "--out", str(project / "other.sched")]) == 2
    assert sched.read_bytes() == before and not (project / "other.sched").exists()


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path, monkeypatch):
    target = tmp_path / "a.sched"
    target.write_text("old")
    os.chmod(target, 0o640)

    def full_disk(*a):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OSError):
        atomic_write(target, b"new")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.sched"]  # no temporary file left
    monkeypatch.undo()
    atomic_write(target, b"new")
    assert target.read_text() == "new" and (target.stat().st_mode & 0o777) == 0o640


def test_fmt_write_failure_leaves_the_file(tmp_path, monkeypatch):
    target = tmp_path / "a.sched"
    target.write_text("phase 10 lr 0.1<free a>\n")
    monkeypatch.setattr(os, "replace", lambda *a: (_ for _ in ()).throw(OSError(28, "No space left on device")))
    assert main(["fmt", str(target)]) == 2
    assert target.read_text() == "phase 10 lr 0.1<free a>\n"


def test_fmt_reports_an_unreadable_folder(tmp_path, capsys, monkeypatch):
    (tmp_path / "locked").mkdir()
    real = os.scandir

    def scandir(path="."):  # as a folder without read permission answers (root would read it anyway)
        if str(path).endswith("locked"):
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)
    assert main(["fmt", str(tmp_path)]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_same_file_sees_through_spellings(tmp_path):
    (tmp_path / "a").write_text("x")
    assert same_file(tmp_path / "a", tmp_path / "." / "a")
    assert not same_file(tmp_path / "a", tmp_path / "b")
