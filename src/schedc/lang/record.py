"""Immutable value classes whose methods are not generated per class: `@record class X(Record)`.

A `@dataclass(frozen=True)` costs ~4 M instructions (~1.3 ms) to create: the standard library
writes and compiles `__init__`, `__repr__`, `__eq__`, `__hash__`, `__setattr__` and
`__delattr__` for it at import, in every process (docs/performance.md, "Lint start"). A record is
still a dataclass (`dataclasses.fields`, `replace`, `asdict` and `is_dataclass` work; for type
checkers `record` is a `dataclass_transform`), made with `dataclass(init=False, repr=False,
eq=False)`, and those six methods come from the one base class `Record`, told which fields the
class has: built from its fields in order, positionally or by name; equal (and hashed) by the
class and the fields compared; repr of the fields shown; immutable. Defaults are constants (no
`default_factory`) and there is no `__post_init__`. The syntax tree's nodes are records.
"""

from __future__ import annotations

from dataclasses import MISSING, FrozenInstanceError, dataclass, field, fields
from operator import attrgetter

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import dataclass_transform
else:  # (typing is not imported for it: rendering diagnostics from the result cache imports this module)

    def dataclass_transform(**_):
        return lambda decorator: decorator


class Record:
    """What every record shares (see `record`)."""

    _init_names: tuple[str, ...] = ()  # the `__init__` parameters, in order
    _defaults: dict[str, object] = {}
    _repr_names: tuple[str, ...] = ()

    def __init__(self, *args, **kwargs) -> None:
        if kwargs or len(args) != len(self._init_names):
            args = self._bind(args, kwargs)
        self.__dict__.update(zip(self._init_names, args))  # not setattr: the record is frozen

    def _bind(self, args: tuple, kwargs: dict) -> list:
        """The arguments of a call that gave some by name or left some out, in field order."""
        names, cls = self._init_names, type(self).__name__
        if len(args) > len(names):
            raise TypeError(f"{cls}() takes {len(names)} arguments but {len(args)} were given")
        given = dict(zip(names, args))
        for name, value in kwargs.items():
            if name not in names:
                raise TypeError(f"{cls}() got an unexpected keyword argument {name!r}")
            if name in given:
                raise TypeError(f"{cls}() got multiple values for argument {name!r}")
            given[name] = value
        missing = [name for name in names if name not in given and name not in self._defaults]
        if missing:
            raise TypeError(f"{cls}() missing required arguments: {', '.join(map(repr, missing))}")
        return [given[name] if name in given else self._defaults[name] for name in names]

    @staticmethod
    def _key(record) -> tuple:  # replaced per class by `record`: the values of the compared fields
        return ()

    def __eq__(self, other) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return self._key(self) == self._key(other)

    def __hash__(self) -> int:
        return hash(self._key(self))

    def __repr__(self) -> str:
        shown = ", ".join(f"{name}={getattr(self, name)!r}" for name in self._repr_names)
        return f"{type(self).__qualname__}({shown})"

    def __setattr__(self, name: str, value) -> None:
        raise FrozenInstanceError(f"cannot assign to field {name!r}")

    def __delattr__(self, name: str) -> None:
        raise FrozenInstanceError(f"cannot delete field {name!r}")


@dataclass_transform(eq_default=True, frozen_default=True, field_specifiers=(field,))
def record(cls: type) -> type:
    """Make `cls` (a subclass of `Record` with annotated fields) a record: a dataclass whose methods
    are `Record`'s, told which fields it has."""
    if cls.__doc__ is None:  # else `dataclass` writes one with `inspect.signature`, at a cost
        cls.__doc__ = f"{cls.__name__}({', '.join(cls.__annotations__)})"
    cls = dataclass(init=False, repr=False, eq=False)(cls)
    declared = fields(cls)
    assert all(f.default_factory is MISSING for f in declared), "a record's defaults are constants"
    assert "__post_init__" not in vars(cls), "a record has no __post_init__"
    cls._init_names = tuple(f.name for f in declared if f.init)
    cls._defaults = {f.name: f.default for f in declared if f.default is not MISSING}
    cls._repr_names = tuple(f.name for f in declared if f.repr)
    compared = [f.name for f in declared if f.compare]
    if compared:
        cls._key = staticmethod(attrgetter(*compared) if len(compared) > 1 else _one_tuple(compared[0]))
    return cls


def _one_tuple(name: str):
    """The key of a record with one compared field: a 1-tuple, as a dataclass compares it."""
    get = attrgetter(name)
    return lambda record: (get(record),)
