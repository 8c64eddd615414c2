"""A swept number: every setting's value of a `$placeholder` or `let` at once, for a sweep's front end.

A sweep of N settings checks and resolves its program once with each swept name bound to a
`Swept` (`surface.sweep`): a float whose own value is setting 0's, carrying every setting's
value beside it. Arithmetic on it computes every setting's result (float64, as Python's float
arithmetic does); a comparison, a truth test or a conversion to an int gives its answer only
when every setting gives the same one, and otherwise raises `Diverged`. So a check and resolve
that run through without `Diverged` took, for every setting, the branches they took for
setting 0: they would find the same problems and build the same Plan, with each setting's
numbers where setting 0's are (`settings_of(tree)(i)` puts them there). Anything else, a value that
leaves the arithmetic (`float()` of a value that differs between settings, a non-finite
result), raises `Diverged` too, and the sweep checks and resolves each setting on its own.

JAX-free; numpy is imported when a Swept is made (never by `schedc check`); nothing outside a
sweep ever sees a Swept.
"""

from __future__ import annotations

import math
import operator


class Diverged(BaseException):
    """Settings of a sweep that a check or resolve would treat differently (or a value it cannot follow).

    A BaseException: no `except Exception` in the checks may swallow it and go on down one branch.
    """


def _values(x):
    return x.values if isinstance(x, Swept) else x


class Swept(float):
    """Setting 0's value as a float; `values`: every setting's (float64, finite)."""

    values: "np.ndarray"  # noqa: F821 (numpy, imported when one is made)

    def __new__(cls, values):
        import numpy as np

        values = np.asarray(values, np.float64)
        if values.ndim != 1 or not values.size or not np.all(np.isfinite(values)):
            raise Diverged("a swept number is a non-empty list of finite numbers")
        self = super().__new__(cls, float(values[0]))
        self.values = values
        return self

    # ---- arithmetic: every setting's result

    def _apply(self, op, other, reflected: bool = False):
        import numpy as np

        if isinstance(other, bool) or not isinstance(other, (int, float)):
            return NotImplemented
        left, right = (_values(other), self.values) if reflected else (self.values, _values(other))
        with np.errstate(all="ignore"):
            result = op(np.asarray(left, np.float64), np.asarray(right, np.float64))
        if not np.all(np.isfinite(result)):  # Python raises or folds to nan/inf: not followed
            raise Diverged(f"a non-finite {op.__name__} of swept numbers")
        return Swept(np.broadcast_to(result, self.values.shape))

    def _arithmetic(op):  # (`self op other`, `other op self`): every setting's result
        return (lambda self, other: self._apply(op, other), lambda self, other: self._apply(op, other, True))

    __add__, __radd__ = _arithmetic(operator.add)
    __sub__, __rsub__ = _arithmetic(operator.sub)
    __mul__, __rmul__ = _arithmetic(operator.mul)
    __truediv__, __rtruediv__ = _arithmetic(operator.truediv)
    __pow__, __rpow__ = _arithmetic(operator.pow)  # of float64 arrays: numpy's power
    del _arithmetic

    def __neg__(self):
        return Swept(-self.values)

    def __pos__(self):
        return self

    def __abs__(self):
        import numpy as np

        return Swept(np.abs(self.values))

    # ---- what decides a branch: one answer for every setting, or Diverged

    def _same(self, answers):
        import numpy as np

        answers = np.asarray(answers)
        if not np.all(answers == answers.flat[0]):
            raise Diverged("settings of a sweep decide differently")
        return answers.flat[0].item()

    def _compare(self, op, other):
        if isinstance(other, bool) or not isinstance(other, (int, float)):
            return NotImplemented
        return bool(self._same(op(self.values, _values(other))))

    def _comparison(op):
        return lambda self, other: self._compare(op, other)

    __lt__, __le__ = _comparison(operator.lt), _comparison(operator.le)
    __gt__, __ge__ = _comparison(operator.gt), _comparison(operator.ge)
    __eq__, __ne__ = _comparison(operator.eq), _comparison(operator.ne)
    del _comparison

    __hash__ = float.__hash__  # setting 0's: equal Swepts (every setting equal) hash alike

    def __bool__(self):
        return bool(self._same(self.values != 0))

    def __int__(self):
        import numpy as np

        return int(self._same(np.trunc(self.values)))

    __trunc__ = __int__

    def __round__(self, ndigits=None):
        import numpy as np

        if ndigits is not None:
            raise Diverged("round() to digits of a swept number")
        return int(self._same(np.asarray([round(v) for v in self.values.tolist()])))

    def __floor__(self):
        import numpy as np

        return int(self._same(np.floor(self.values)))

    def __ceil__(self):
        import numpy as np

        return int(self._same(np.ceil(self.values)))

    def is_integer(self) -> bool:
        import numpy as np

        return bool(self._same(self.values == np.trunc(self.values)))

    def __float__(self):  # leaves the arithmetic: only a value every setting shares
        return float(self._same(self.values))

    def as_integer_ratio(self):  # (`float(self)`: only a value every setting shares)
        return float(self).as_integer_ratio()

    def __format__(self, spec):  # a message about the value: only one every setting shares
        return format(float(self), spec)

    def __repr__(self):  # setting 0's: the text of a Number node, which `settings_of` rewrites per setting
        return repr(float(self.values[0]))

    __str__ = __repr__

    def __reduce__(self):  # copies and pickles of a Plan keep every setting
        return (Swept, (self.values,))


def tracked_float(value):
    """`float(value)` as the resolver stores a number, keeping a Swept's settings (a plain
    `float()` of one whose settings differ raises Diverged)."""
    return value if isinstance(value, Swept) else float(value)


def settings_of(tree):
    """`tree` (a Plan, its nodes, tuples, dicts) for each setting of the Swepts in it: a function
    i -> `tree` with every Swept replaced by setting i's value (a plain float; a `Number` holding
    one gets the text a number written as that value has). What holds no Swept is shared, not
    copied: only the paths to them are rebuilt."""
    paths: dict[int, list] = {}  # id of an object holding Swepts -> the keys of its children that do
    _holds(tree, paths, set())
    return lambda i: _at(tree, i, paths, {})


def _children(obj):
    """(field name or index, value) of a container the Plan is made of: tuples, dicts, dataclasses
    (their compared fields: spans and the parameter tree hold no numbers of a setting)."""
    if isinstance(obj, tuple) and not hasattr(obj, "_fields"):
        return enumerate(obj)
    if isinstance(obj, dict):
        return obj.items()
    from dataclasses import fields, is_dataclass  # (here: `schedc check` imports this module, and no dataclasses)

    if is_dataclass(obj) and not isinstance(obj, type):
        return ((f.name, getattr(obj, f.name)) for f in fields(obj) if f.compare)
    return ()


def _holds(obj, paths: dict, seen: set) -> bool:
    """Whether `obj` holds a Swept; records in `paths` which children of each holding object do."""
    if isinstance(obj, Swept):
        return True
    if isinstance(obj, (str, int, float, bool, type(None))) or id(obj) in seen:
        return id(obj) in paths
    seen.add(id(obj))
    keys = [key for key, value in _children(obj) if _holds(value, paths, seen)]
    if keys:
        paths[id(obj)] = keys
    return bool(keys)


def _at(obj, i: int, paths: dict, memo: dict):
    if isinstance(obj, Swept):
        return float(obj.values[i])
    keys = paths.get(id(obj))
    if keys is None:
        return obj
    if id(obj) in memo:
        return memo[id(obj)]
    if isinstance(obj, (tuple, dict)):
        changed = {key: _at(obj[key], i, paths, memo) for key in keys}
        out = tuple(changed.get(k, v) for k, v in enumerate(obj)) if isinstance(obj, tuple) else {**obj, **changed}
    else:
        changed = {key: _at(getattr(obj, key), i, paths, memo) for key in keys}
        if "value" in changed and hasattr(obj, "text"):  # a Number: the text of its value
            changed["text"] = repr(changed["value"])
        out = object.__new__(type(obj))  # `replace` without `__init__`: frozen, and no field derives from another
        out.__dict__.update(obj.__dict__, **changed)
    memo[id(obj)] = out
    return out


def finite(values) -> bool:
    """Whether every value is a finite float (what a Swept can carry)."""
    return all(isinstance(v, float) and math.isfinite(v) for v in values)
