"""Immutable value classes whose methods are not generated per class: `@record class X(Record)`.

A `@dataclass(frozen=True)` costs ~4 M instructions (~1.3 ms) to create: the standard library
writes and compiles `__init__`, `__repr__`, `__eq__`, `__hash__`, `__setattr__` and
`__delattr__` for it at import, in every process; and `dataclasses` itself, with the `inspect`
it imports, ~40 M more (docs/performance.md, "Lint start"). A record's methods come from the
one base class `Record`, told which fields the class has (its annotations, in order; defaults
as class attributes or `field(default=..., repr=..., compare=...)`): built from its fields in
order, positionally or by name; equal (and hashed) by the class and the fields compared; repr of
the fields shown; immutable; `replace` and `as_dict` as `dataclasses` has them. Defaults are
constants (no `default_factory`) and there is no `__post_init__`. A record subclass of a record has its
base's fields first, as a dataclass's has. The syntax tree's nodes are records.

A record is still a dataclass for any code that asks (`dataclasses.fields`, `replace`, `asdict`,
`is_dataclass`; for type checkers `record` is a `dataclass_transform`): the first look at its
`__dataclass_fields__` imports `dataclasses` and makes the class one, as
`dataclass(init=False, repr=False, eq=False)` makes it, with the same fields. A `schedc check`
never asks, so it never imports `dataclasses`.
"""

from __future__ import annotations

import _thread
from operator import attrgetter

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import dataclass_transform
else:  # (typing is not imported for it: `schedc check` never imports typing)

    def dataclass_transform(**_):
        return lambda decorator: decorator


MISSING = object()  # a field without a default


class field:  # noqa: N801  (named as `dataclasses.field`, which it stands for)
    """A field's default and options: `x: int = field(default=0, repr=False, compare=False)`."""

    def __init__(self, *, default=MISSING, repr: bool = True, compare: bool = True) -> None:
        self.default, self.options = default, {"repr": repr, "compare": compare}


class Record:
    """What every record shares (see `record`)."""

    _record_fields: dict[str, tuple] = {}  # name -> (default or MISSING, {"repr": ..., "compare": ...})
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
        from dataclasses import FrozenInstanceError  # (the error a frozen dataclass raises)

        raise FrozenInstanceError(f"cannot assign to field {name!r}")

    def __delattr__(self, name: str) -> None:
        from dataclasses import FrozenInstanceError

        raise FrozenInstanceError(f"cannot delete field {name!r}")


@dataclass_transform(eq_default=True, frozen_default=True, field_specifiers=(field,))
def record(cls: type) -> type:
    """Make `cls` (a subclass of `Record` with annotated fields) a record: told which fields it has,
    its defaults class attributes (as a dataclass's)."""
    declared = dict(cls._record_fields)  # name -> (default, options): a base record's first (as a dataclass's)
    for name in cls.__dict__.get("__annotations__", {}):
        value = cls.__dict__.get(name, MISSING)
        spec = value if isinstance(value, field) else field(default=value)
        declared[name] = (spec.default, spec.options)
        if spec.default is MISSING:
            if name in cls.__dict__:
                delattr(cls, name)
        else:
            setattr(cls, name, spec.default)
    cls._record_fields = declared
    cls._init_names = tuple(declared)
    if cls.__doc__ is None:  # (as `dataclass` writes one)
        cls.__doc__ = f"{cls.__name__}({', '.join(cls._init_names)})"
    cls._defaults = {name: default for name, (default, _) in declared.items() if default is not MISSING}
    cls._repr_names = tuple(name for name, (_, options) in declared.items() if options["repr"])
    compared = [name for name, (_, options) in declared.items() if options["compare"]]
    if compared:
        cls._key = staticmethod(attrgetter(*compared) if len(compared) > 1 else _one_tuple(compared[0]))
    cls.__match_args__ = cls._init_names
    cls.__dataclass_fields__ = _AsDataclass(cls)
    return cls


def replace(obj: Record, **changes) -> Record:
    """`obj` with the fields `changes` names set to new values (as `dataclasses.replace`)."""
    unknown = set(changes) - set(obj._init_names)
    if unknown:
        raise TypeError(f"{type(obj).__name__} has no field {min(unknown)!r}")
    return type(obj)(*[changes[name] if name in changes else getattr(obj, name) for name in obj._init_names])


def as_dict(value):
    """A record as a dict of its fields, records within it too, recursively through lists, tuples
    and dicts (as `dataclasses.asdict`)."""
    if isinstance(value, Record):
        return {name: as_dict(getattr(value, name)) for name in value._init_names}
    if isinstance(value, (list, tuple)):
        return type(value)(as_dict(v) for v in value)
    if isinstance(value, dict):
        return {as_dict(k): as_dict(v) for k, v in value.items()}
    return value


_made_dataclass = _thread.RLock()


class _AsDataclass:
    """A record class's `__dataclass_fields__` until something asks for it: then the class is made a
    dataclass (`dataclass(init=False, repr=False, eq=False)`, its methods still `Record`'s) with
    the fields `record` found, and the standard library's fields are the answer (a subclass that is
    no record of its own has its record base's, as a dataclass's subclass has)."""

    def __init__(self, record_class: type) -> None:
        self.record_class = record_class

    def __get__(self, obj, cls: type) -> dict:
        import dataclasses

        made = self.record_class
        with _made_dataclass:
            if made.__dict__.get("__dataclass_fields__") is self:  # (not made by another thread meanwhile)
                for name in made.__dict__.get("__annotations__", {}):  # (its own: the bases' are made from theirs)
                    default, options = made._record_fields[name]
                    setattr(made, name, dataclasses.field(**({} if default is MISSING else {"default": default}), **options))
                dataclasses.dataclass(init=False, repr=False, eq=False, match_args=False)(made)
        return made.__dict__["__dataclass_fields__"]


def _one_tuple(name: str):
    """The key of a record with one compared field: a 1-tuple, as a dataclass compares it."""
    get = attrgetter(name)
    return lambda record: (get(record),)
