"""Records (schedc.lang.record) behave as the frozen dataclasses they replace: built positionally or
by name with defaults, equal and hashed by the compared fields, the same repr, immutable, and
`dataclasses.fields`, `replace`, `asdict` and pickling work; the records' own `replace` and
`as_dict` do as `dataclasses`' do, and a record class is made a dataclass only when asked."""

from __future__ import annotations

import dataclasses
import pickle

import pytest

import schedc.lang.record as rec
from schedc.lang.record import Record, field, record


@record
class Point(Record):
    x: int
    y: int = 0
    tag: str = field(default="", compare=False, repr=False)


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
    assert dataclasses.asdict(made) == dataclasses.asdict(data) == rec.as_dict(made)
    assert rec.replace(made, y=7, tag="c") == dataclasses.replace(made, y=7, tag="c") and rec.replace(made, tag="c").tag == "c"
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


def test_made_a_dataclass_only_when_asked(tmp_path):
    """Making and using records imports no `dataclasses`; the first look at a class's fields makes it one."""
    import subprocess
    import sys

    code = """
import sys
from schedc.lang.record import Record, field, record, replace, as_dict
@record
class P(Record):
    x: int
    span: object = field(default=None, compare=False, repr=False)
p = replace(P(1), x=2)
before = "dataclasses" in sys.modules
import dataclasses
print(before, dataclasses.is_dataclass(p), [(f.name, f.compare, f.repr, f.default is dataclasses.MISSING) for f in dataclasses.fields(P)], as_dict(p), P.span, P.__match_args__)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False True [('x', True, True, True), ('span', False, False, False)] {'x': 2, 'span': None} None ('x', 'span')"


def test_replace_refuses_an_unknown_field():
    with pytest.raises(TypeError, match="no field 'z'"):
        rec.replace(Point(1), z=2)


def _parsed():
    from schedc.lang import syntax

    return syntax.parse("let w = cosine(0.1 -> 1e-3)\nphase warm 10 lr w < free a.*; stop when loss < 1e-3 over 5 >\n")


def _records():
    """Records the project copies and pickles: a point, a diagnostic (severity filled in), a source
    (its `lines` made from its text), a parsed file (nodes, spans) and a whole parse."""
    from schedc.lang.diagnostics import Diagnostic, Source

    parsed = _parsed()
    return [Point(1, 2, "t"), Diagnostic("W0101", "unused", parsed.file.span), Source("f.sched", "a\nb"), parsed.file, parsed]


@pytest.mark.parametrize("made", range(5), ids=["point", "diagnostic", "source", "file", "parse"])
@pytest.mark.parametrize("how", ["copy", "deepcopy", "pickle"])
def test_copies_and_pickles_are_equal_with_every_attribute(made, how):
    import copy

    from test_syntax_kept_parser import spans

    value = _records()[made]
    again = {"copy": copy.copy, "deepcopy": copy.deepcopy, "pickle": lambda v: pickle.loads(pickle.dumps(v))}[how](value)
    assert again == value and type(again) is type(value) and vars(again) == vars(value)
    assert how == "copy" or again is not value
    if made >= 3:  # nodes: spans are not compared by `==`
        assert spans(getattr(again, "file", again)) == spans(getattr(value, "file", value))
    with pytest.raises(dataclasses.FrozenInstanceError):
        again.x = 1


def test_equal_and_hashed_alike_before_and_after_made_a_dataclass():
    """Making a record class a dataclass changes none of its instances' equality, hash or repr."""

    @record
    class Late(Record):
        x: int
        y: tuple = ()
        note: str = field(default="", compare=False)

    made = Late(1, (2,), "n")
    before = (hash(made), repr(made), made == Late(1, (2,)), made != Late(2), made.__match_args__)
    assert "__dataclass_fields__" not in Late.__dict__ or isinstance(Late.__dict__["__dataclass_fields__"], rec._AsDataclass)
    assert [f.name for f in dataclasses.fields(Late)] == ["x", "y", "note"]
    after = (hash(made), repr(made), made == Late(1, (2,)), made != Late(2), made.__match_args__)
    assert before == after == (hash((1, (2,))), f"{Late.__qualname__}(x=1, y=(2,), note='n')", True, True, ("x", "y", "note"))
    assert Late(3).y == () and Late.y == ()


@record
class Base(Record):
    x: int
    y: int = 0


@record
class Child(Base):
    z: str = "z"
    y: int = 5  # (a default overridden: the field keeps its place)


class Plain(Base):
    """A subclass that is no record of its own."""


@dataclasses.dataclass(frozen=True)
class DataBase:
    x: int
    y: int = 0


@dataclasses.dataclass(frozen=True)
class DataChild(DataBase):
    z: str = "z"
    y: int = 5


def test_a_record_of_a_record_has_its_bases_fields_as_a_dataclass_has():
    made, data = Child(1, 2, "a"), DataChild(1, 2, "a")
    assert repr(made) == repr(data).replace("DataChild", "Child") and Child.__match_args__ == DataChild.__match_args__
    assert rec.as_dict(Child(1)) == dataclasses.asdict(DataChild(1)) and rec.replace(made, x=3) == Child(3, 2, "a")
    assert [(f.name, f.default) for f in dataclasses.fields(Child)] == [(f.name, f.default) for f in dataclasses.fields(DataChild)]
    assert (Child.y, Base.y, Child(x=1).y) == (5, 0, 5) and made != Base(1, 2) and hash(made) == hash(data)
    assert dataclasses.is_dataclass(Plain(1)) and [f.name for f in dataclasses.fields(Plain)] == ["x", "y"] and Plain(1) == Plain(1, 0)
    assert Child.__doc__ == "Child(x, y, z)"
