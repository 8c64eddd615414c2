"""Records (schedc.lang.record) behave as the frozen dataclasses they replace: built positionally or
by name with defaults, equal and hashed by the compared fields, the same repr, immutable, and
`dataclasses.fields`, `replace`, `asdict` and pickling work."""

from __future__ import annotations

import dataclasses
import pickle

import pytest

from schedc.lang.record import Record, record


@record
class Point(Record):
    x: int
    y: int = 0
    tag: str = dataclasses.field(default="", compare=False, repr=False)


@dataclasses.dataclass(frozen=True)
class DataPoint:
    x: int
    y: int = 0
    tag: str = dataclasses.field(default="", compare=False, repr=False)


CALLS = [((1, 2, "a"), {}), ((1,), {}), ((), {"x": 1, "y": 2}), ((1,), {"tag": "b"}), ((3, 4), {})]


@pytest.mark.parametrize("args, kwargs", CALLS)
def test_built_compared_and_shown_as_a_dataclass(args, kwargs):
    made, data = Point(*args, **kwargs), DataPoint(*args, **kwargs)
    assert repr(made) == repr(data).replace("DataPoint", "Point")
    assert (made.x, made.y, made.tag) == (data.x, data.y, data.tag)
    assert dataclasses.asdict(made) == dataclasses.asdict(data)
    for other_args, other_kwargs in CALLS:
        assert (made == Point(*other_args, **other_kwargs)) == (data == DataPoint(*other_args, **other_kwargs))
    assert hash(made) == hash(data)


def test_immutable_and_a_dataclass():
    made = Point(1, 2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        made.x = 3
    with pytest.raises(dataclasses.FrozenInstanceError):
        del made.y
    assert dataclasses.is_dataclass(made)
    assert [f.name for f in dataclasses.fields(made)] == ["x", "y", "tag"]
    assert dataclasses.replace(made, y=5) == Point(1, 5)
    assert pickle.loads(pickle.dumps(made)) == made
    assert made != DataPoint(1, 2) and made != (1, 2)


@pytest.mark.parametrize(
    "args, kwargs, message",
    [((), {}, "missing required arguments: 'x'"), ((1, 2, "a", 4), {}, "takes 3 arguments but 4"), ((1,), {"x": 2}, "multiple values"), ((1,), {"z": 2}, "unexpected keyword")],
)
def test_bad_arguments_are_type_errors(args, kwargs, message):
    with pytest.raises(TypeError, match=message):
        Point(*args, **kwargs)


def test_a_diagnostic_takes_its_codes_severity_and_stays_a_frozen_value():
    """`Diagnostic` is a record that fills in its code's severity when none is given (as the
    dataclass's `__post_init__` did), through `replace` and pickling too."""
    from schedc.lang.diagnostics import Diagnostic
    from schedc.lang.span import Span

    made = Diagnostic("W0101", "unused `let`", Span(1, 1, 1, 4, 0, 3))
    assert made.severity == "warning" and not made.is_error
    assert Diagnostic("E0001", "x", severity="warning").severity == "warning"
    moved = made.in_file("f.sched")
    assert (moved.file, moved.severity, moved.message) == ("f.sched", "warning", made.message)
    assert dataclasses.replace(made, code="E0101").severity == "warning"  # given, so kept
    assert pickle.loads(pickle.dumps(made)) == made and hash(made) == hash(Diagnostic("W0101", "unused `let`", Span(1, 1, 1, 4, 0, 3)))
    assert made != moved
    with pytest.raises(dataclasses.FrozenInstanceError):
        made.severity = "error"
