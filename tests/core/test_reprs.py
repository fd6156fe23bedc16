"""The shared ``__repr__``/``__eq__``/``__hash__`` of Prodigy's attrs classes (prodigy_core.reprs).

The value classes must behave exactly as attrs' generated methods would (except that a
field value is equal to itself), and no class of the three packages may fall back to
attrs' compiled methods: that is what keeps ``prodigy`` starting quickly.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

import prodigy_cli
import prodigy_core
import prodigy_effects
from prodigy_core import reprs
from prodigy_core.reprs import shows_fields, value_class


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class Ours:
    a: int
    b: str = "x"
    note: int = attrs.field(default=0, eq=False)
    hidden: str = attrs.field(default="", repr=False)


@attrs.frozen(kw_only=True)
class Theirs:
    a: int
    b: str = "x"
    note: int = attrs.field(default=0, eq=False)
    hidden: str = attrs.field(default="", repr=False)


@value_class
@attrs.frozen(repr=False, eq=False)
class One:
    value: Any


@value_class
@attrs.frozen(repr=False, eq=False)
class Nothing:
    pass


values = st.builds(dict, a=st.integers(-3, 3), b=st.sampled_from(["x", "y"]),
                   note=st.integers(0, 2), hidden=st.sampled_from(["", "h"]))


@given(values, values)
def test_equality_and_hash_are_those_attrs_would_give(x: dict[str, Any],
                                                      y: dict[str, Any]) -> None:
    ours_x, ours_y = Ours(**x), Ours(**y)
    theirs_x, theirs_y = Theirs(**x), Theirs(**y)
    assert (ours_x == ours_y) == (theirs_x == theirs_y)
    assert (ours_x != ours_y) == (theirs_x != theirs_y)
    if ours_x == ours_y:
        assert hash(ours_x) == hash(ours_y)
    assert repr(ours_x) == repr(theirs_x).replace("Theirs(", "Ours(")


def test_other_classes_are_never_equal_and_one_field_classes_compare_their_value() -> None:
    assert Ours(a=1) != Theirs(a=1)
    assert Ours(a=1).__eq__(Theirs(a=1)) is NotImplemented
    assert One(1) == One(1) and One(1) != One(2)
    assert hash(One((1, 2))) == hash(One((1, 2)))
    assert Nothing() == Nothing() and hash(Nothing()) == hash(Nothing())
    assert repr(One([1])) == "One(value=[1])"
    assert {One(1): "a"}[One(1)] == "a"
    with pytest.raises(TypeError, match="unhashable"):
        hash(One([1]))


def test_value_class_refuses_what_it_cannot_do() -> None:
    class Plain:
        pass

    with pytest.raises(TypeError, match="not an attrs class"):
        value_class(Plain)
    with pytest.raises(TypeError, match="key function"):

        @value_class
        @attrs.frozen(repr=False, eq=False)
        class Keyed:
            name: str = attrs.field(eq=str.lower)

    with pytest.raises(TypeError, match="eq=False"):

        @value_class
        @attrs.frozen(repr=False)
        class Compiled:
            name: str

    @shows_fields
    @attrs.frozen(repr=False, eq=False)
    class Identity:
        name: str

    first = Identity("a")
    assert first == first and first != Identity("a") and repr(first) == "Identity(name='a')"


def _attrs_classes() -> list[type]:
    found: dict[str, type] = {}
    for package in (prodigy_core, prodigy_effects, prodigy_cli):
        for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            if info.name.endswith("__main__"):
                continue
            module = importlib.import_module(info.name)
            for value in vars(module).values():
                if isinstance(value, type) and attrs.has(value) \
                        and value.__module__ == module.__name__:
                    found[f"{value.__module__}.{value.__qualname__}"] = value
    return list(found.values())


def test_no_class_of_prodigy_carries_methods_compiled_by_attrs() -> None:
    classes = _attrs_classes()
    assert len(classes) > 150
    compiled = []
    for cls in classes:
        for name in ("__repr__", "__eq__", "__hash__"):
            method = cls.__dict__.get(name)
            code = getattr(method, "__code__", None)
            if code is not None and code.co_filename.startswith("<attrs generated"):
                compiled.append(f"{cls.__module__}.{cls.__qualname__}.{name}")
    # the mutable classes keep attrs' generated __eq__ (they are few, and not values)
    mutable = {f"{c.__module__}.{c.__qualname__}.__eq__" for c in classes
               if c.__setattr__ is object.__setattr__}
    assert sorted(set(compiled) - mutable) == []
    # a value class's __eq__ is its own (a subclass left undecorated would compare only
    # the fields of its parent)
    borrowed = [cls.__qualname__ for cls in classes
                if getattr(cls.__eq__, "__module__", None) == reprs.__name__
                and cls.__eq__.__qualname__ != f"{cls.__qualname__}.__eq__"]
    assert borrowed == []
