"""The result of a completeness ``validate`` (spec 12 §2.2, §2.3): parsing and judging.

Pure functions.  A validation's text (the last command's output or the ``result_file``)
becomes a ``Verdict``: completion percentage, status, the lists the variables expose,
and whether it passes the threshold.  Text that is not a JSON object counts as complete
(warning W3005).  ``expected_schema`` is checked with a small subset of JSON Schema
(``type``, ``properties``, ``required``, ``items``, ``enum``); a result that does not
satisfy it counts as ``failed``.
"""

from __future__ import annotations

import json
import math

import attrs

from prodigy_core.interpolate import Var
from prodigy_core.json_values import JSON
from prodigy_core.reprs import value_class

W3005 = "warning[W3005]: validation output is not JSON; treating as complete"


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class Verdict:
    """One validation's judged result."""

    completion: float
    status: str
    passed: bool
    implemented: tuple[JSON, ...] = ()
    missing: tuple[JSON, ...] = ()
    gaps: JSON = None
    not_json: bool = False
    problem: str | None = None


def failed(message: str) -> Verdict:
    """A validation command failed, or its result could not be read: status ``failed``."""
    return Verdict(completion=0.0, status="failed", passed=False, problem=message)


def judge(text: str, *, threshold: float, schema: object = None) -> Verdict:
    """Parse a validation result text and compare it with ``threshold``."""
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        return Verdict(completion=100.0, status="complete", passed=True, not_json=True)
    status_raw = data.get("status")
    status = status_raw if isinstance(status_raw, str) else None
    raw = data.get("completion_percentage")
    completion: float
    if isinstance(raw, int | float) and not isinstance(raw, bool) and math.isfinite(raw):
        completion = float(raw)
    else:
        completion = 100.0 if status == "complete" else 0.0
    if status is None:
        status = "complete" if completion >= 100.0 else "incomplete"
    problem = None
    if schema is not None:
        problem = schema_problem(data, schema, "$")
        if problem is not None:
            status = "failed"
            problem = f"validation result does not match expected_schema: {problem}"
    implemented = data.get("implemented")
    missing = data.get("missing")
    return Verdict(
        completion=completion, status=status,
        passed=status != "failed" and completion >= threshold,
        implemented=tuple(implemented) if isinstance(implemented, list) else (),
        missing=tuple(missing) if isinstance(missing, list) else (),
        gaps=data.get("gaps") if isinstance(data.get("gaps"), dict) else {},
        problem=problem,
    )


def variables(verdict: Verdict, attempt: int) -> dict[str, Var]:
    """The ``validation.*`` variables (spec 12 §2.3); text from the result is data."""
    completion: JSON = verdict.completion
    return {
        "validation.completion": Var(value=completion),
        "validation.completion_percentage": Var(value=completion),
        "validation.status": Var(value=verdict.status, trusted=False),
        "validation.passed": Var(value=verdict.passed),
        "validation.implemented": Var(value=list(verdict.implemented), trusted=False),
        "validation.missing": Var(value=list(verdict.missing), trusted=False),
        "validation.missing_count": Var(value=len(verdict.missing)),
        "validation.gaps": Var(value=verdict.gaps if verdict.gaps is not None else {},
                               trusted=False),
        "validation.attempt": Var(value=attempt),
    }


def pct(value: float) -> str:
    return f"{value:.1f}%"


# --- the expected_schema subset -------------------------------------------------------
# The parser stores the schema frozen: a mapping is a tuple of (key, value) pairs, a list
# a tuple.  Keywords say which is which, so the schema is read by keyword.


def _mapping(frozen: object) -> dict[str, object]:
    if isinstance(frozen, dict):
        return {str(k): v for k, v in frozen.items()}
    if isinstance(frozen, tuple | list):
        out: dict[str, object] = {}
        for pair in frozen:
            if isinstance(pair, tuple | list) and len(pair) == 2 and isinstance(pair[0], str):
                out[pair[0]] = pair[1]
        return out
    return {}


def _items(frozen: object) -> tuple[object, ...]:
    return tuple(frozen) if isinstance(frozen, tuple | list) else (frozen,)


def _freeze(value: JSON) -> object:
    if isinstance(value, dict):
        return tuple((k, _freeze(v)) for k, v in value.items())
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    return value


def _is_type(value: JSON, name: object) -> bool:
    if name == "object":
        return isinstance(value, dict)
    if name == "array":
        return isinstance(value, list)
    if name == "string":
        return isinstance(value, str)
    if name == "boolean":
        return isinstance(value, bool)
    if name == "null":
        return value is None
    if name == "integer":
        return (isinstance(value, int) and not isinstance(value, bool)) or (
            isinstance(value, float) and value.is_integer())
    if name == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    return True  # an unknown type name constrains nothing


def schema_problem(value: JSON, schema: object, where: str) -> str | None:
    """The first way ``value`` breaks ``schema`` (``type``…``enum``), or None."""
    rules = _mapping(schema)
    if "type" in rules:
        names = _items(rules["type"])
        if not any(_is_type(value, n) for n in names):
            wanted = " or ".join(str(n) for n in names)
            return f"{where} should be {wanted}"
    if "enum" in rules:
        allowed = _items(rules["enum"])
        if _freeze(value) not in allowed:
            return f"{where} is not one of the allowed values"
    if isinstance(value, dict):
        for name in _items(rules.get("required", ())):
            if isinstance(name, str) and name not in value:
                return f"{where} is missing required property '{name}'"
        for name, sub in _mapping(rules.get("properties", ())).items():
            if name in value:
                problem = schema_problem(value[name], sub, f"{where}.{name}")
                if problem is not None:
                    return problem
    if isinstance(value, list) and "items" in rules:
        for i, element in enumerate(value):
            problem = schema_problem(element, rules["items"], f"{where}[{i}]")
            if problem is not None:
                return problem
    return None
