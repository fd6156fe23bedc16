"""Shared ``__repr__``, ``__eq__`` and ``__hash__`` for the attrs classes of Prodigy.

attrs writes the source of these methods for every class it builds and compiles it; with
some 230 classes that was a quarter of the start-up of every ``prodigy`` command.  The
classes are declared with ``repr=False`` (and the frozen value classes with ``eq=False``)
and decorated here instead:

- :func:`shows_fields` installs the one shared ``__repr__``: the text attrs would write
  (``Name(field=value, …)``, fields declared with ``repr=False`` left out, a callable
  ``repr`` used for its field);
- :func:`value_class` installs that ``__repr__`` and an ``__eq__``/``__hash__`` pair built
  without compiling anything: instances of the same class are equal when the tuples of
  their compared fields (those not declared ``eq=False``) are equal, and the hash is that
  tuple's, salted with the class — as attrs does, except that tuple comparison takes a
  value as equal to itself (a ``nan`` field included).
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any, TypeVar, cast

import attrs

T = TypeVar("T", bound=type)


def _fields_repr(self: Any) -> str:
    cls = type(self)
    parts = []
    for field in attrs.fields(cls):
        if not field.repr:
            continue
        value = getattr(self, field.name, attrs.NOTHING)
        shown = field.repr(value) if callable(field.repr) else repr(value)
        parts.append(f"{field.name}={shown}")
    name = cls.__qualname__.rsplit(">.", 1)[-1]
    return f"{name}({', '.join(parts)})"


def shows_fields(cls: T) -> T:
    """Give an attrs class (declared with ``repr=False``) the shared ``__repr__``,
    unless it defines its own."""
    if "__repr__" not in cls.__dict__:
        cls.__repr__ = _fields_repr  # type: ignore[assignment]
    return cls


def _key_of(cls: type) -> Callable[[Any], tuple[Any, ...]]:
    names = []
    for field in attrs.fields(cls):
        if field.eq_key is not None:
            raise TypeError(f"{cls.__qualname__}.{field.name}: value_class does not support "
                            "a field compared by a key function")
        if field.eq:
            names.append(field.name)
    if not names:
        return lambda _obj: ()
    if len(names) == 1:
        name = names[0]
        return lambda obj: (getattr(obj, name),)
    getter: Callable[[Any], tuple[Any, ...]] = operator.attrgetter(*names)
    return getter


def value_class(cls: T) -> T:
    """Give a frozen attrs class declared with ``repr=False, eq=False`` the shared
    ``__repr__`` and value ``__eq__``/``__hash__`` (see the module's description)."""
    if not attrs.has(cast(Any, cls)):  # (a cast: the check would narrow `cls` itself)
        raise TypeError(f"{cls.__qualname__} is not an attrs class")
    generated = getattr(cls.__dict__.get("__eq__"), "__code__", None)
    if generated is not None and generated.co_filename.startswith("<attrs generated"):
        raise TypeError(f"{cls.__qualname__}: declare it with eq=False (value_class gives "
                        "it __eq__ and __hash__; attrs would compile its own for nothing)")
    key = _key_of(cls)
    salt = hash(f"prodigy value class {cls.__module__}.{cls.__qualname__}")

    def __eq__(self: Any, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return key(self) == key(other)

    def __hash__(self: Any) -> int:
        return hash((salt, *key(self)))

    __eq__.__qualname__ = f"{cls.__qualname__}.__eq__"
    __hash__.__qualname__ = f"{cls.__qualname__}.__hash__"
    for name, method in (("__eq__", __eq__), ("__hash__", __hash__)):
        setattr(cls, name, method)
    return shows_fields(cls)
