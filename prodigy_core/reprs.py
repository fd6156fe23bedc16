"""One shared ``__repr__`` for the attrs classes of Prodigy.

attrs compiles a ``__repr__`` for every class it builds; with some 230 classes that was
a tenth of the start-up of every ``prodigy`` command.  The classes are declared with
``repr=False`` and decorated with :func:`shows_fields`, which installs this one function:
the same text attrs would write (``Name(field=value, …)``, fields declared with
``repr=False`` left out, a callable ``repr`` used for its field).
"""

from __future__ import annotations

from typing import Any, TypeVar

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
