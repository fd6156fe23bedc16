"""MapReduce work items: loading, selecting, naming and reporting them (spec 05).

Theory of operation
-------------------
The data path of a map phase is a chain of pure functions.  The interpreter supplies
text (the input file, or the stdout of the input command) and a UTC stamp; the rest is
decided here:

1. ``parse_input_document`` and ``parse_command_output`` turn the text into one JSON
   document (§5.2, §5.3).  Line-based command output already *is* the item list, so it
   is selected with ``apply_json_path=False``.
2. ``select`` runs the fixed pipeline json_path → filter → sort_by → distinct → offset →
   max_items (spec 04 §7.3) and returns the items together with the warnings the
   engine prints (W6001–W6003); ``select_items`` is the same without the warnings.
   Item indexes and ids are assigned on the final list by the caller.
3. ``item_variables`` binds one item for its agent (spec 03 §5.4).  Identifiers
   (``item_id``, ``agent_id``, ``job_id_for`` …, §2) are derived, never drawn.
4. When an agent ends, ``agent_result`` builds its §9 record; a failure is classified
   from a structured ``ItemFailure`` (``error_type``, ``error_signature``,
   ``manual_review_required``, §13).  ``map_variables`` binds the records for reduce.

``json_path`` is jsonpath-ng's extended dialect, compiled once per expression text
(``prodigy_core.json_path``).  The compiled tree is adapted to the guaranteed subset of spec
04 §8.2 in three places: filters accept ``&&`` and ``||`` (the library knows only ``&``)
and compare with the rules of spec 04 §3 (the library truncates floats to ints and
raises on null); ``[*]`` and ``.*`` iterate array elements and object member values
alike; ``[i]`` indexes arrays only (the library indexes strings and raises on a
negative index past the start).  Nothing here raises on an odd document: a failure is
an ``ItemsError`` value, and a type error inside a filter makes it false for that item.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Collection, Mapping, Sequence
from typing import Final, Literal, TypeAlias

import attrs

from prodigy_core.expressions import (
    ExprError,
    distinct_items,
    eval_filter,
    parse_filter,
    parse_sort_by,
    sort_items,
)
from prodigy_core.interpolate import Var, lookup
from prodigy_core.json_path import ItemsError, check_json_path
from prodigy_core.json_path import apply_json_path as json_path_items
from prodigy_core.json_values import JSON, MISSING, PATH_RE, Missing, dumps_compact
from prodigy_core.model import MapSpec
from prodigy_core.reprs import value_class

__all__ = [
    "AgentStatus",
    "FailureKind",
    "ItemFailure",
    "ItemsError",
    "ItemsWarning",
    "Selection",
    "agent_branch",
    "agent_id",
    "agent_result",
    "agent_worktree_name",
    "check_json_path",
    "duration_json",
    "error_signature",
    "error_type",
    "error_type_name",
    "item_id",
    "item_variables",
    "job_id_for",
    "manual_review_required",
    "map_variables",
    "merge_conflict_failure",
    "parse_command_output",
    "parse_input_document",
    "reprocess_job_id",
    "select",
    "select_items",
    "success_rate",
]


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class ItemsWarning:
    """A warning while selecting items: W6001 (json_path ignored for line input),
    W6002 (filter type error), W6003 (json_path matched nothing)."""

    code: str
    message: str


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class Selection:
    """The final item list of §5.4 and the warnings produced on the way."""

    items: tuple[JSON, ...]
    warnings: tuple[ItemsWarning, ...] = ()


# --------------------------------------------------------------------------- input text


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class _Unparsed:
    message: str
    line: int
    column: int


class _BadConstant(ValueError):
    pass


def _reject_constant(name: str) -> JSON:
    raise _BadConstant(name)


def _position(text: str, offset: int) -> tuple[int, int]:
    line = text.count("\n", 0, offset) + 1
    return line, offset - (text.rfind("\n", 0, offset) + 1) + 1


def _loads(text: str) -> JSON | _Unparsed:
    """Strict JSON (no NaN/Infinity); a failure carries line and column (1-based)."""
    try:
        value: JSON = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        return _Unparsed(message=exc.msg, line=exc.lineno, column=exc.colno)
    except _BadConstant as exc:
        line, column = _position(text, max(text.find(str(exc)), 0))
        return _Unparsed(message=f"'{exc}' is not valid JSON", line=line, column=column)
    except RecursionError:
        return _Unparsed(message="JSON nested too deeply", line=1, column=1)
    return value


def _e6002(name: str, failure: _Unparsed, line: int) -> ItemsError:
    return ItemsError(
        code="E6002",
        message=(
            f"map input not parseable: {name}: {failure.message} "
            f"(line {line}, column {failure.column})"
        ),
        line=line,
        column=failure.column,
    )


def parse_input_document(text: str, name: str) -> JSON | ItemsError:
    """The JSON document of a map input file (spec 05 §5.2).

    One JSON document; if that fails and ``name`` ends with ``.jsonl`` or ``.ndjson``, the
    list of the non-empty lines parsed one by one.  Otherwise E6002 with line and column
    (of the failing line, for line-delimited files).  A leading BOM is ignored.
    """
    text = text.removeprefix("\ufeff")
    whole = _loads(text)
    if not isinstance(whole, _Unparsed):
        return whole
    if not name.lower().endswith((".jsonl", ".ndjson")):
        return _e6002(name, whole, whole.line)
    values: list[JSON] = []
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        value = _loads(line)
        if isinstance(value, _Unparsed):
            return _e6002(name, value, number)
        values.append(value)
    return values


def parse_command_output(stdout: str) -> tuple[JSON, bool]:
    """The document of a map input command's stdout and whether json_path applies (§5.3).

    The whole stdout as one JSON document → ``(document, True)``; otherwise one item per
    non-empty stripped line (JSON if it starts with ``{``/``[`` and parses, else the
    string) → ``(items, False)``.
    """
    if stdout.strip():
        whole = _loads(stdout)
        if not isinstance(whole, _Unparsed):
            return whole, True
    return output_lines(stdout), False


def output_lines(stdout: str) -> list[JSON]:
    """One item per non-empty stripped line: JSON if it starts with ``{``/``[`` and
    parses, else the string (spec 05 §5.3, spec 12 §3.2)."""
    items: list[JSON] = []
    for raw in stdout.split("\n"):
        line = raw.strip()
        if not line:
            continue
        if line[0] in "{[":
            value = _loads(line)
            if not isinstance(value, _Unparsed):
                items.append(value)
                continue
        items.append(line)
    return items


# --------------------------------------------------------------------------- pipeline


def _blank(text: str | None) -> bool:
    return text is None or not text.strip()


def _e1009(kind: str, text: str, err: ExprError) -> ItemsError:
    where = f" (at column {err.column} of the expression)" if err.column > 0 else ""
    return ItemsError(
        code="E1009",
        message=f"invalid {kind} expression '{text}': {err.message}{where}",
        column=err.column or None,
    )


def _apply_filter(
    items: tuple[JSON, ...], text: str, variables: Mapping[str, Var]
) -> tuple[tuple[JSON, ...], ItemsWarning | None] | ItemsError:
    expr = parse_filter(text)
    if isinstance(expr, ExprError):
        return _e1009("filter", text, expr)

    def resolve(path: str) -> JSON | Missing:
        var = lookup(path, variables)
        return MISSING if var is None else var.value

    kept: list[JSON] = []
    failed = 0
    first = ""
    for position, item in enumerate(items):
        result = eval_filter(expr, item, resolve)
        if isinstance(result, ExprError):
            if result.code == "E2001":
                return ItemsError(code="E2001", message=result.message)
            failed += 1
            first = first or f"first at position {position}: {result.message}"
        elif result:
            kept.append(item)
    warning = None
    if failed:
        warning = ItemsWarning(
            code="W6002",
            message=f"filter '{text}' is false for {failed} item(s) after a type error; {first}",
        )
    return tuple(kept), warning


def select(
    document: JSON,
    spec: MapSpec,
    *,
    apply_json_path: bool = True,
    variables: Mapping[str, Var] | None = None,
) -> Selection | ItemsError:
    """The final item list of spec 05 §5.4, with warnings.

    ``variables`` are those at the end of setup, for ``${name}`` in ``filter``.  Without
    a json_path (or for line input) an array document yields its elements and any other
    value one item (spec 04 §8.3).
    """
    warnings: list[ItemsWarning] = []
    path = (spec.json_path or "").strip()
    items: tuple[JSON, ...]
    if path and apply_json_path:
        found = json_path_items(document, path)
        if isinstance(found, ItemsError):
            return found
        if not found:
            warnings.append(
                ItemsWarning(code="W6003", message=f"json_path '{path}' matched nothing")
            )
        items = found
    else:
        if path:
            warnings.append(
                ItemsWarning(code="W6001", message=f"json_path '{path}' ignored for line input")
            )
        items = tuple(document) if isinstance(document, list) else (document,)
    if not _blank(spec.filter):
        assert spec.filter is not None
        filtered = _apply_filter(items, spec.filter, variables or {})
        if isinstance(filtered, ItemsError):
            return filtered
        items, warning = filtered
        if warning is not None:
            warnings.append(warning)
    if not _blank(spec.sort_by):
        assert spec.sort_by is not None
        keys = parse_sort_by(spec.sort_by)
        if isinstance(keys, ExprError):
            return _e1009("sort_by", spec.sort_by, keys)
        items = sort_items(items, keys)
    if not _blank(spec.distinct):
        assert spec.distinct is not None
        field = spec.distinct.strip()
        if not PATH_RE.fullmatch(field):
            return ItemsError(code="E1009", message=f"invalid distinct field path '{field}'")
        items = distinct_items(items, field)
    items = items[max(spec.offset or 0, 0) :]
    if spec.max_items is not None:
        items = items[: max(spec.max_items, 0)]
    return Selection(items=items, warnings=tuple(warnings))


def select_items(
    document: JSON,
    spec: MapSpec,
    *,
    apply_json_path: bool = True,
    variables: Mapping[str, Var] | None = None,
) -> tuple[JSON, ...] | ItemsError:
    """``select`` without the warnings."""
    result = select(document, spec, apply_json_path=apply_json_path, variables=variables)
    return result if isinstance(result, ItemsError) else result.items


# --------------------------------------------------------------------------- variables


def item_binding(item: JSON) -> dict[str, Var]:
    """``item`` and ``item_json`` for one item (untrusted data); see ``item_variables``."""
    text = dumps_compact(item)
    out: dict[str, Var] = {}
    if isinstance(item, list) and all(isinstance(e, str) for e in item):
        out["item"] = Var(value=text, trusted=False)
        for i, element in enumerate(item):
            out[f"item[{i}]"] = Var(value=element, trusted=False)
            out[f"item[{i - len(item)}]"] = Var(value=element, trusted=False)
    else:
        out["item"] = Var(value=item, trusted=False)
    out["item_json"] = Var(value=text, trusted=False)
    return out


def item_variables(
    item: JSON,
    *,
    index: int,
    total: int,
    item_id: str,
    item_file: str,
    agent_id: str,
    job_id: str,
) -> dict[str, Var]:
    """The agent variables of one item (spec 03 §5.4).

    ``item`` is bound to the item itself, so ``${item.a.b}`` walks it and ``${item}``
    renders with spec 03 §4.1.  The one case where that rendering is not compact JSON —
    an array of strings, which §4.1 joins with ", " — binds ``item`` to the JSON text and
    each ``item[i]`` / ``item[-i]`` explicitly.  Item data is untrusted (shell-escaped).
    """
    out = item_binding(item)
    out["item_id"] = Var(value=item_id)
    out["item_index"] = Var(value=index)
    out["item_total"] = Var(value=total)
    out["item_file"] = Var(value=item_file)
    out["agent_id"] = Var(value=agent_id)
    out["job.id"] = Var(value=job_id)
    return out


def success_rate(successful: int, total: int) -> int | float:
    """``successful / total × 100`` to 2 decimals, an int when whole, 0 for no items."""
    if total <= 0:
        return 0
    rate = round(successful * 100 / total, 2)
    return int(rate) if rate == int(rate) else rate


def map_variables(
    results: Sequence[Mapping[str, JSON]],
    results_file: str,
    *,
    total: int | None = None,
    duration_secs: float | None = None,
    job_id: str | None = None,
) -> dict[str, Var]:
    """The reduce variables of spec 03 §5.5 from the agent results (§9).

    ``map.results`` is the compact JSON text of the results ordered by ``item_index``
    (untrusted).  ``total`` defaults to the number of results; ``map.duration`` and
    ``job.id`` are bound when given.
    """
    ordered = sorted(results, key=lambda r: _index_key(r.get("item_index")))
    successful = sum(1 for r in ordered if r.get("status") == "Success")
    count = len(ordered) if total is None else total
    text = dumps_compact([dict(r) for r in ordered])
    cost = 0.0
    for r in ordered:
        value = r.get("cost_usd")
        if isinstance(value, int | float) and not isinstance(value, bool):
            cost += value
    out = {
        "map.total": Var(value=count),
        "map.successful": Var(value=successful),
        "map.failed": Var(value=len(ordered) - successful),
        "map.success_rate": Var(value=success_rate(successful, count)),
        "map.results": Var(value=text, trusted=False),
        "map.results_json": Var(value=text, trusted=False),
        "map.results_file": Var(value=results_file),
        "map.cost_usd": Var(value=cost),
    }
    if duration_secs is not None:
        out["map.duration"] = Var(value=float(duration_secs))
    if job_id is not None:
        out["job.id"] = Var(value=job_id)
    return out


def _index_key(value: JSON | None) -> tuple[int, int]:
    if isinstance(value, int) and not isinstance(value, bool):
        return (0, value)
    return (1, 0)


# --------------------------------------------------------------------------- identifiers

_STAMP_RE: Final = re.compile(r"[0-9]{8}_[0-9]{6}")


def item_id(index: int) -> str:
    """``item_<index>`` (spec 05 §2)."""
    return f"item_{index}"


def agent_id(job_id: str, index: int, attempt: int = 1) -> str:
    """``<job_id>_agent_<index>``, with ``_attempt_<n>`` for attempts n ≥ 2."""
    if attempt < 1:
        raise ValueError(f"attempt must be >= 1, got {attempt}")
    base = f"{job_id}_agent_{index}"
    return base if attempt == 1 else f"{base}_attempt_{attempt}"


def agent_branch(agent_id: str) -> str:
    """``prodigy-mapreduce-agent-<agent_id>``."""
    return f"prodigy-mapreduce-agent-{agent_id}"


def agent_worktree_name(agent_id: str) -> str:
    """``mapreduce-agent-<agent_id>`` (spec 06 §5)."""
    return f"mapreduce-agent-{agent_id}"


def job_id_for(utc_stamp: str, existing: Collection[str]) -> str:
    """``mapreduce-<YYYYMMDD_HHMMSS>``, or the first free ``-2``, ``-3``, … variant."""
    if not _STAMP_RE.fullmatch(utc_stamp):
        raise ValueError(f"expected a YYYYMMDD_HHMMSS stamp, got {utc_stamp!r}")
    base = f"mapreduce-{utc_stamp}"
    if base not in existing:
        return base
    n = 2
    while f"{base}-{n}" in existing:
        n += 1
    return f"{base}-{n}"


def reprocess_job_id(job_id: str, unix_seconds: int) -> str:
    """``<job_id>-reprocess-<unix seconds>`` (DLQ retry job, §2)."""
    return f"{job_id}-reprocess-{unix_seconds}"


# --------------------------------------------------------------------------- DLQ

FailureKind: TypeAlias = Literal[
    "timeout",
    "command_failed",
    "commit_required",
    "merge_conflict",
    "worktree",
    "validation",
    "resource",
    "unknown",
]


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class ItemFailure:
    """The structured cause of an item failure (spec 05 §13.2).

    ``exit_code`` is meaningful for ``command_failed`` (``-1`` when unknown);
    ``conflicting_files`` for ``merge_conflict``.
    """

    kind: FailureKind
    message: str = ""
    exit_code: int | None = None
    conflicting_files: tuple[str, ...] = ()


_TYPE_NAMES: Final[Mapping[FailureKind, str]] = {
    "timeout": "Timeout",
    "command_failed": "CommandFailed",
    "commit_required": "CommitValidationFailed",
    "merge_conflict": "MergeConflict",
    "worktree": "WorktreeError",
    "validation": "ValidationFailed",
    "resource": "ResourceExhausted",
    "unknown": "Unknown",
}
_HEX_RUN_RE: Final = re.compile(r"(?<![0-9a-z])[0-9a-f]{7,}(?![0-9a-z])")
_DIGITS_RE: Final = re.compile(r"[0-9]+")
_MANUAL_RE: Final = re.compile(r"permission denied|access denied|corrupt", re.IGNORECASE)


def merge_conflict_failure(conflicting_files: Sequence[str]) -> ItemFailure:
    """The failure of a conflicting merge, message ``merge conflict in: a, b`` (§8.2)."""
    return ItemFailure(
        kind="merge_conflict",
        message="merge conflict in: " + ", ".join(conflicting_files),
        conflicting_files=tuple(conflicting_files),
    )


def error_type(cause: ItemFailure) -> JSON:
    """The DLQ ``error_type`` JSON of a cause: ``"Timeout"``,
    ``{"CommandFailed": {"exit_code": n}}``, ``"MergeConflict"``, …"""
    if cause.kind == "command_failed":
        code = -1 if cause.exit_code is None else cause.exit_code
        return {"CommandFailed": {"exit_code": code}}
    return _TYPE_NAMES[cause.kind]


def error_type_name(error_type_value: JSON) -> str:
    """The name of an ``error_type`` JSON value (``"CommandFailed"`` for the object form)."""
    if isinstance(error_type_value, str):
        return error_type_value
    if isinstance(error_type_value, dict) and len(error_type_value) == 1:
        return next(iter(error_type_value))
    return "Unknown"


def error_signature(type_name: str, message: str) -> str:
    """First 16 hex digits of SHA-256 of ``<type>: <normalised first line>`` (§13.3).

    The first line is lower-cased; runs of 7+ hex characters (standing alone, so SHAs
    but not words such as "succeeded") and then runs of digits become ``#``;
    whitespace runs collapse to one space and the ends are trimmed.
    """
    first = message.split("\n", 1)[0].lower()
    first = _DIGITS_RE.sub("#", _HEX_RUN_RE.sub("#", first))
    first = " ".join(first.split())
    return hashlib.sha256(f"{type_name}: {first}".encode()).hexdigest()[:16]


def manual_review_required(type_name: str, message: str) -> bool:
    """True for ``ValidationFailed`` and messages naming permission/access/corruption (§13.4)."""
    return type_name == "ValidationFailed" or _MANUAL_RE.search(message) is not None


# --------------------------------------------------------------------------- agent result

AgentStatus: TypeAlias = Literal["success", "failed", "timeout"]


def duration_json(seconds: float) -> dict[str, JSON]:
    """``{"secs": s, "nanos": n}`` (the original's duration form); negative → zero."""
    total = max(round(seconds * 1_000_000_000), 0)
    secs, nanos = divmod(total, 1_000_000_000)
    return {"secs": secs, "nanos": nanos}


def agent_result(
    *,
    item_id: str,
    item_index: int,
    status: AgentStatus,
    duration_secs: float,
    error: str | None = None,
    output: str = "",
    commits: Sequence[str] = (),
    files_modified: Sequence[str] = (),
    worktree_path: str | None = None,
    branch_name: str | None = None,
    worktree_session_id: str | None = None,
    json_log_location: str | None = None,
    cost_usd: float | None = None,
    attempts: int = 1,
    uncommitted_files: Sequence[str] = (),
) -> dict[str, JSON]:
    """The agent result object of spec 05 §9, optional fields omitted when empty.

    ``status`` becomes ``"Success"``, ``{"Failed": error}`` or ``"Timeout"``; ``error``
    is kept for failed and timed-out results only.
    """
    status_json: JSON
    if status == "success":
        status_json = "Success"
    elif status == "failed":
        status_json = {"Failed": error or ""}
    else:
        status_json = "Timeout"
    result: dict[str, JSON] = {"item_id": item_id, "item_index": item_index, "status": status_json}
    optional: list[tuple[str, JSON]] = [
        ("output", output),
        ("commits", list(commits)),
        ("files_modified", list(files_modified)),
        ("duration", duration_json(duration_secs)),
        ("error", error if status != "success" else None),
        ("worktree_path", worktree_path),
        ("branch_name", branch_name),
        ("worktree_session_id", worktree_session_id),
        ("json_log_location", json_log_location),
        ("cost_usd", cost_usd),
        ("attempts", attempts),
        ("uncommitted_files", list(uncommitted_files)),
    ]
    for key, value in optional:
        if value is not None and value != "" and value != []:
            result[key] = value
    return result
