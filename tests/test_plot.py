"""`schedc plot`: the curves are the compiled schedules' values; the image is a real PNG."""

import numpy as np
import pytest

from schedc.lang import syntax
from schedc.pipeline import check_source
from schedc.cli import main
from schedc.cli.commands import plot
from schedc.plan.resolve import resolve
from schedc.surface.schedule import schedule_fn

pytestmark = pytest.mark.slow

SCHED = """\
optimizer adam(b1 = linear(0.9 -> 0.95))
let base = 0.05
phase warmup 30 lr linear(0 -> base) < free a >
phase refine 50 lr cosine(base -> base / 10) < free a, b; free b lr 0.1 * base >
repeat 2 < phase gp 20 lr 0.01 < free a > >
phase 40 lr linear(0 -> 0.01) for 10% then cosine(0.01 -> 1e-5) optimizer sgd(momentum = 0.9) < free a >
"""


@pytest.fixture(scope="module")
def curves():
    parsed, diags = check_source(SCHED)
    assert not diags
    plan, problems = resolve(parsed.file, None)
    assert not problems
    return plot.curves(plan)


def segment(curves, name, first, steps):
    return np.asarray(curves.values[name][first : first + steps])


def expected(text, steps):
    return np.asarray(schedule_fn(text, steps)(np.arange(steps)))


def test_phases_and_labels(curves):
    assert curves.phases == [(0, 30, "warmup"), (30, 50, "refine"), (80, 20, "gp#1"), (100, 20, "gp#2"), (120, 40, "phase 4")]
    assert curves.steps == list(range(160))
    assert list(curves.values) == ["learning_rate", "learning_rate@b", "b1", "b1@b"]


def test_plotted_values_are_the_lowered_schedules(curves):
    lr = "learning_rate"
    np.testing.assert_allclose(segment(curves, lr, 0, 30), expected("linear(0 -> 0.05)", 30), rtol=1e-6)
    np.testing.assert_allclose(segment(curves, lr, 30, 50), expected("cosine(0.05 -> 0.005)", 50), rtol=1e-6)
    np.testing.assert_allclose(segment(curves, lr, 80, 40), 0.01, rtol=1e-6)
    np.testing.assert_allclose(segment(curves, lr, 120, 40), expected("linear(0 -> 0.01) for 10% then cosine(0.01 -> 1e-5)", 40), rtol=1e-6)
    # the group's own lr only where that group exists
    group = np.asarray(curves.values["learning_rate@b"])
    assert np.isnan(group[:30]).all() and np.isnan(group[80:]).all()
    np.testing.assert_allclose(group[30:80], 0.005, rtol=1e-6)
    # b1 restarts with each adam phase and is absent from the sgd phase
    b1 = np.asarray(curves.values["b1"])
    np.testing.assert_allclose(b1[80:100], expected("linear(0.9 -> 0.95)", 20), rtol=1e-6)
    assert np.isnan(b1[120:]).all()


def test_long_phases_are_sampled():
    parsed = syntax.parse("phase 100000 lr cosine(1 -> 0) < free a >")
    plan, _ = resolve(parsed.file, None)
    data = plot.curves(plan)
    assert len(data.steps) == plot.MAX_POINTS_PER_PHASE and data.steps[0] == 0 and data.steps[-1] == 99_999
    np.testing.assert_allclose(data.values["learning_rate"], np.asarray(schedule_fn("cosine(1 -> 0)", 100_000)(np.asarray(data.steps))), rtol=1e-6, atol=5e-7)


def test_writes_a_png(tmp_path, capsys):
    source = tmp_path / "run.sched"
    source.write_text(SCHED)
    assert main(["plot", str(source)]) == 0
    image = tmp_path / "run.png"
    data = image.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
    assert f"wrote {image}" in capsys.readouterr().out
    out = tmp_path / "other.png"
    assert main(["plot", str(source), "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_suffix_names_the_format_and_a_bad_one_is_said(tmp_path, capsys, monkeypatch):
    """`--out fit.pdf` wrote a PNG named .pdf; `--out .` said "Device or resource busy"; a format
    matplotlib cannot write here (.pgf without a TeX) was a traceback."""
    source = tmp_path / "run.sched"
    source.write_text(SCHED)
    for suffix, magic in ((".pdf", b"%PDF"), (".svg", b"<?xml"), (".PNG", b"\x89PNG")):
        out = tmp_path / f"fig{suffix}"
        assert main(["plot", str(source), "--out", str(out)]) == 0
        assert out.read_bytes().startswith(magic)
    capsys.readouterr()
    for out, words in ((tmp_path / "fig.txt", "the suffix names the format, one of "), (tmp_path, f"it is a folder; name the image file (--out {tmp_path / 'run.png'})")):
        assert main(["plot", str(source), "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert f"schedc plot: cannot write {out}: {words}" in err and (out == tmp_path or ".pdf, " in err)
    monkeypatch.setenv("PATH", str(tmp_path))  # (no TeX to be found)
    assert main(["plot", str(source), "--out", str(tmp_path / "fig.pgf")]) == 2
    assert "schedc plot: cannot write" in capsys.readouterr().err and not (tmp_path / "fig.pgf").exists()


def test_errors_and_exit_codes(tmp_path, capsys, monkeypatch):
    bad = tmp_path / "bad.sched"
    bad.write_text("phase 100 lr warmup_cosine(0 -> 1 -> 0, 100) < free a >\n")
    assert main(["plot", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "bad.sched:1:41: error[E0207]" in err and not (tmp_path / "bad.png").exists()
    assert main(["plot", str(tmp_path / "missing.sched")]) == 2
    assert "cannot read" in capsys.readouterr().err

    def no_matplotlib():
        raise ImportError("no matplotlib")

    monkeypatch.setattr(plot, "_pyplot", no_matplotlib)
    good = tmp_path / "good.sched"
    good.write_text("phase 10 lr 0.1 < free a >\n")
    assert main(["plot", str(good)]) == 2
    assert "pip install 'schedc[plot]'" in capsys.readouterr().err


def test_log_axes(tmp_path):
    assert plot.log_scale([[0.1, 0.01], [1e-3]]) == ("log", {})
    assert plot.log_scale([[0.0, 1e-4, 0.05]]) == ("symlog", {"linthresh": 1e-4})  # a warmup from 0
    source = tmp_path / "run.sched"
    source.write_text(SCHED)
    assert main(["plot", str(source), "--log", "--out", str(tmp_path / "log.png")]) == 0
    assert (tmp_path / "log.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_set_binds_placeholders(tmp_path, capsys):
    source = tmp_path / "run.sched"
    source.write_text("phase 10 * $k lr $lr < free a >\n")
    assert main(["plot", str(source), "--set", "k=3", "--set", "lr=cosine(0.1 -> 0)", "--out", str(tmp_path / "p.png")]) == 0
    assert main(["plot", str(source), "--out", str(tmp_path / "q.png")]) == 1
    assert "placeholder `$k` is not bound" in capsys.readouterr().err

def test_sweep_overlays_every_settings_curves(tmp_path, capsys):
    path = tmp_path / "swept.sched"
    path.write_text("let base = 0.05\nphase 100 lr cosine(base -> base / 10) optimizer adamw(weight_decay=$wd) < free a; free b lr 2 * base >\n")
    out = tmp_path / "swept.png"
    assert main(["plot", str(path), "--sweep", "base=0.01,0.05", "--sweep", "wd=0,1e-3", "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from schedc.pipeline import analyse
    from schedc.surface.sweep import from_grid

    data = plot.swept_curves(analyse(path.read_text(), placeholders={"wd": 0}), from_grid({"base": [0.01, 0.05], "wd": [0, 1e-3]}))
    assert set(data.values) == {"learning_rate@base=0.01,wd=0", "learning_rate@base=0.05,wd=0.001", "learning_rate@base=0.01,wd=0/b", "learning_rate@base=0.05,wd=0.001/b"}
    np.testing.assert_allclose(data.values["learning_rate@base=0.05,wd=0.001"], expected("cosine(0.05 -> 0.005)", 100), rtol=1e-6)
    np.testing.assert_allclose(data.values["learning_rate@base=0.01,wd=0/b"][0], 0.02, rtol=1e-6)
    assert main(["plot", str(path), "--sweep", "speed=1", "--sweep", "wd=0"]) == 1
    assert "neither a `$placeholder` nor a `let`" in capsys.readouterr().err
