"""DSL text embedded in Python: diagnostics at this file's lines and columns (through escapes too),
f-strings refused, typed `$placeholders`, and runtime notes citing the phase's line."""

from __future__ import annotations

import dataclasses
import re
import sys
import warnings
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

import schedc
from schedc.surface.embed import EmbeddingError
from schedc.runtime.runner import RunError

HERE = Path(__file__).read_text().splitlines()
MODEL = {"a": jnp.zeros(2), "b": jnp.ones(2)}


def at(marker: str, occurrence: int = 0) -> tuple[int, int]:
    """1-based (line, column) of the `occurrence`-th `marker` in this file."""
    found = [(i + 1, line.index(marker) + 1) for i, line in enumerate(HERE) if marker in line]
    return found[occurrence]


def located(err: schedc.SchedError) -> list[tuple[str, int, int, str]]:
    out = []
    for line in err.render("concise").splitlines():
        m = re.match(r"(.*):(\d+):(\d+): (\w+)\[(\w+)\]", line)
        if m[4] == "error":
            out.append((Path(m[1]).name, int(m[2]), int(m[3]), m[5]))
    return out


def loss(m):
    return jnp.sum((m["a"] - 1.0) ** 2) + jnp.sum(m["b"] ** 2)


# ---------------------------------------------------------------- positions


def test_error_in_a_triple_quoted_literal_points_at_this_file():
    with pytest.raises(schedc.SchedError) as err:
        schedc.compile(
            """
            phase 10 lr 0.1 < free a >
            phase 10 lr 0.1 < free bogus_one >
            """,
            MODEL,
        )
    assert located(err.value) == [("test_embedded.py", *at("bogus_one"), "E0401")]


def test_escapes_keep_columns_exact():
    with pytest.raises(schedc.SchedError) as err:
        schedc.compile("phase 10 lr 0.1 <\x20free a >\n\tphase 5 lr 0.1 < free \u0061, bogus_two >", MODEL)
    # the second DSL line sits on the same .py line as the first: its columns follow the escapes
    assert located(err.value) == [("test_embedded.py", *at("bogus_two"), "E0401")]


def test_a_line_continuation_inside_the_literal():
    with pytest.raises(schedc.SchedError) as err:
        schedc.compile("""phase 10 lr 0.1 < free a > \
phase 5 lr 0.1 < free bogus_cont >""", MODEL)
    assert located(err.value) == [("test_embedded.py", *at("bogus_cont"), "E0401")]


def test_implicitly_concatenated_literals():
    with pytest.raises(schedc.SchedError) as err:
        schedc.compile(
            "phase 10 lr 0.1 < free a >\n"
            "phase 10 lr 0.1 < free bogus_three >",
            MODEL,
        )
    assert located(err.value) == [("test_embedded.py", *at("bogus_three"), "E0401")]


def test_the_literal_nearest_the_call_is_the_one_reported():
    text = "phase 10 lr 0.1 < free bogus_four >"
    with pytest.raises(schedc.SchedError) as first:
        schedc.compile("phase 10 lr 0.1 < free bogus_four >", MODEL)
    with pytest.raises(schedc.SchedError) as second:
        schedc.compile("phase 10 lr 0.1 < free bogus_four >", MODEL)
    assert located(first.value)[0][1] == at("bogus_four", 1)[0]
    assert located(second.value)[0][1] == at("bogus_four", 2)[0]
    assert text  # the first occurrence (a variable) is not a compile argument


CONSTANT = """phase 10 lr 0.1 < free a >
phase 10 lr 0.1 < free bogus_const >"""


def test_a_module_constant_is_found_where_it_is_defined():
    with pytest.raises(schedc.SchedError) as err:
        schedc.compile(CONSTANT, MODEL)
    assert located(err.value) == [("test_embedded.py", *at("bogus_const"), "E0401")]


def test_text_not_in_the_file_reports_against_itself():
    text = "phase 10 lr 0.1 < free " + "bogus_five >"
    with pytest.raises(schedc.SchedError) as err:
        schedc.compile(text, MODEL)
    assert located(err.value) == [("<string>", 1, 24, "E0401")]


def test_f_strings_are_refused():
    steps = 10
    with pytest.raises(EmbeddingError, match=r"\$name"):
        schedc.compile(f"phase {steps} lr 0.1 < free a >", MODEL)
    assert isinstance(EmbeddingError(), TypeError)
    # the same text written as a literal elsewhere in the file hid the f-string (it was looked for
    # only when no literal matched)
    literal = "phase 10 lr 0.1 < free a >"
    with pytest.raises(EmbeddingError):
        schedc.compile(f"phase {steps} lr 0.1 < free a >", MODEL)
    # an f-string in another call on the same line is not the schedule's
    assert schedc.compile(literal, MODEL, **{k: 1 for k in [] if re.search(f"{k}", literal)}).phases[0].steps == 10


# ---------------------------------------------------------------- placeholders


def plan(text, **values):
    return dataclasses.replace(schedc.compile(text, MODEL, **values).plan, source=None)


def test_placeholders_are_typed_values():
    expected = plan("phase 10 lr cosine(0.1 -> 0.01) < free a; init b = 0.5 >")
    assert plan("phase $n lr $lr < free a; init b = $v >", n=10, lr="cosine(0.1 -> 0.01)", v=np.float32(0.5)) == expected
    assert plan("phase $n lr $lr < free a; init b = $v >", n=np.int64(10), lr="cosine(0.1 -> 0.01)", v=jnp.float32(0.5)) == expected


def test_schedule_text_cannot_splice_statements():
    with pytest.raises(schedc.SchedError, match=r"(?s)unexpected `<`.*placeholder `\$lr`"):
        schedc.compile("phase 10 lr $lr < free a >", MODEL, lr="0.1 < free b > phase 5 lr 0.1")


def test_a_problem_inside_a_placeholder_value_points_at_the_placeholder():
    with pytest.raises(schedc.SchedError) as err:
        schedc.compile("phase 10 lr $lr_bad < free a >", MODEL, lr_bad='cosine("x" -> 0)')
    assert located(err.value) == [("test_embedded.py", *at("$lr_bad"), "E0202")]


def test_values_that_cannot_be_compiled_are_refused():
    with pytest.raises(TypeError, match="schedule text"):
        schedc.compile("phase 10 lr $lr < free a >", MODEL, lr=object())
    with pytest.raises(TypeError, match="ndarray"):
        schedc.compile("phase 10 lr $lr < free a >", MODEL, lr=np.ones(3))
    with pytest.raises(schedc.SchedError) as err:
        schedc.compile("phase 10 lr $missing_value < free a >", MODEL)
    assert [code for *_, code in located(err.value)] == ["E0110"]


# ---------------------------------------------------------------- runtime notes


def exploding(m):
    return jnp.where(m["a"][0] > 0.2, jnp.inf, loss(m))


def test_non_finite_loss_note_cites_this_file():
    program = schedc.compile(
        """phase 3 lr 0.01 < free a >
        phase blowup_six 50 lr 0.1 < free a >""",
        MODEL,
    )
    with pytest.raises(RunError) as err:
        program.run(exploding, quiet=True)
    assert err.value.__notes__ == [f"phase defined at {__file__}:{':'.join(map(str, at('phase blowup_six')))}"]


def broken(m):
    return jnp.sum(m["a"] @ jnp.ones(3))  # a shape error while tracing


def test_an_exception_in_the_loss_names_the_phase_and_its_line():
    program = schedc.compile("phase 10 lr 0.1 < free a >\nphase traced_seven 10 lr 0.1 < free b >", MODEL)
    with pytest.raises(TypeError) as err:
        program.run(broken, quiet=True)
    line, quote = at('"phase 10 lr 0.1 < free a >\\nphase traced_seven')
    assert err.value.__notes__[-1] == f"while running phase 0, defined at {__file__}:{line}:{quote + 1}"


def test_a_sched_file_note_cites_the_file(tmp_path):
    path = tmp_path / "fit.sched"
    path.write_text("# a fit\n\nphase 50 lr 0.1 < free a >\n")
    with pytest.raises(RunError) as err:
        schedc.compile(path, MODEL).run(exploding, quiet=True)
    assert err.value.__notes__ == [f"phase defined at {path}:3:1"]


def test_a_path_that_names_no_file_is_said_as_such(tmp_path):
    """A one-line str ending in `.sched` is a path: misspelt, it was parsed as DSL text ("unexpected
    `fit.sched`, expected one of `accumulate`, ..."); a PathLike to a file of another suffix was
    refused as "no such .sched file"."""
    with pytest.raises(FileNotFoundError, match=r"^no such \.sched file: nowhere/fit\.sched$"):
        schedc.compile("nowhere/fit.sched")
    (tmp_path / "folder.sched").mkdir()
    with pytest.raises(FileNotFoundError, match=r"folder\.sched \(it is a folder\)$"):
        schedc.compile(tmp_path / "folder.sched")
    (tmp_path / "fit.txt").write_text("phase 10 lr 0.1 < free a >\n")
    assert schedc.compile(tmp_path / "fit.txt").phases[0].steps == 10
    with pytest.raises(TypeError, match="takes DSL text or a path to a .sched file, got bytes"):
        schedc.compile(b"phase 10 lr 0.1 < free a >")


def test_warnings_are_warned_where_compile_is_called_and_kept_as_values():
    """`Program.warnings` held them, and nothing said so: a parameter never freed or a `let` never
    used went unnoticed by anyone who did not look."""
    with pytest.warns(schedc.SchedWarning) as caught:
        program = schedc.compile("let unused = 1\nphase 10 lr 0.1 < free a >")
    line = sys._getframe().f_lineno - 1  # (the line of the call)
    (warning,) = caught
    assert (warning.filename, warning.lineno) == (__file__, line)  # the caller's line, not schedc's
    column = 1 + open(__file__).read().splitlines()[line - 1].index("let unused") + len("let ")
    assert str(warning.message) == f"{__file__}:{line}:{column}: warning[W0101]: `unused` is never used (help: remove it, or use it)"
    assert warning.message.diagnostic is program.warnings[0] and program.warnings[0].code == "W0101"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        schedc.compile("phase 10 lr 0.1 < free a >")  # none for a clean schedule
