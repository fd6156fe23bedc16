"""Analytics reports built from per-call records (spec 14 §2–§4 and §6).

Theory of operation
-------------------
The unit of every report is the ``CallRecord``: one finished Claude call, made from its
``claude_call_completed`` event and what the other ``claude_*`` events of the same call
said (API retries and their HTTP statuses, Bash commands).  The shell reads a run's
journal and hands the envelopes to ``calls_from_events``; everything else here is a
pure function from a tuple of records to a table: ``totals``, ``group_by`` (cost per
session, job, step, item, model or day), ``tool_stats``, ``top_steps``,
``recommendations`` and ``project`` (the remaining cost and time of a job).  There is
no clock and no file here, so the reports are rebuilt from the events alone (§3.4).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Literal

import attrs

from prodigy_core.json_values import JSON
from prodigy_core.reprs import shows_fields, value_class

GroupBy = Literal["session", "job", "step", "item", "model", "day"]
GROUPS: tuple[GroupBy, ...] = ("session", "job", "step", "item", "model", "day")
TIMEOUT_CODES = frozenset({"E7005", "E3002"})
_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


def _int(value: object) -> int:
    if isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value):
        return int(value)
    return 0


def _float(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0.0
    return float(value) if math.isfinite(value) else 0.0


def _str(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _counts(value: object) -> tuple[tuple[str, int], ...]:
    if not isinstance(value, Mapping):
        return ()
    return tuple(sorted((str(k), _int(v)) for k, v in value.items() if _int(v) > 0))


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class CallRecord:
    """One Claude call (spec 14 §2) with the Prodigy context it ran in."""

    run_id: str
    session_id: str
    repo: str = ""
    job_id: str | None = None
    step_path: str = ""
    agent_id: str | None = None
    item_id: str | None = None
    timestamp: str = ""
    claude_session_id: str | None = None
    model: str | None = None
    success: bool = False
    is_error: bool = False
    subtype: str | None = None
    exit_code: int | None = None
    error_code: str | None = None
    duration_ms: int = 0
    duration_api_ms: int = 0
    num_turns: int = 0
    cost_usd: float = 0.0
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_input_tokens: int = 0
    cache_creation_input_tokens: int = 0
    tool_uses: tuple[tuple[str, int], ...] = ()
    tool_errors: tuple[tuple[str, int], ...] = ()
    api_retries: int = 0
    api_retry_statuses: tuple[int, ...] = ()
    partial: bool = False
    json_log_location: str | None = None
    bash_commands: tuple[str, ...] = ()

    @property
    def where(self) -> str:
        """The item of an agent call, else the step path."""
        return f"item {self.item_id}" if self.item_id else (self.step_path or "-")

    @property
    def outcome(self) -> str:
        if self.success:
            return "success"
        return self.subtype if self.subtype and self.subtype != "success" else (
            self.error_code or "failed")

    def to_json(self) -> dict[str, JSON]:
        """The per-call record of spec 14 §2, one object of ``analytics export``."""
        return {
            "session_id": self.claude_session_id, "model": self.model,
            "success": self.success, "is_error": self.is_error, "subtype": self.subtype,
            "exit_code": self.exit_code, "error_code": self.error_code,
            "duration_ms": self.duration_ms, "duration_api_ms": self.duration_api_ms,
            "num_turns": self.num_turns, "cost_usd": round(self.cost_usd, 6),
            "usage": {"input_tokens": self.input_tokens, "output_tokens": self.output_tokens,
                      "cache_read_input_tokens": self.cache_read_input_tokens,
                      "cache_creation_input_tokens": self.cache_creation_input_tokens},
            "tool_uses": dict(self.tool_uses), "tool_errors": dict(self.tool_errors),
            "api_retries": {"count": self.api_retries,
                            "statuses": list(self.api_retry_statuses)},
            "partial": self.partial,
            "step_path": self.step_path, "agent_id": self.agent_id, "item_id": self.item_id,
            "json_log_location": self.json_log_location,
            "prodigy_session_id": self.session_id, "job_id": self.job_id,
            "run_id": self.run_id, "repo": self.repo, "timestamp": self.timestamp,
        }


# --------------------------------------------------------------------------- from events


@shows_fields
@attrs.define(repr=False)
class _Pending:
    statuses: list[int] = attrs.field(factory=list)
    retries: int = 0
    bash: list[str] = attrs.field(factory=list)


def bash_command(parameters: object) -> str | None:
    """The ``command`` of a Bash tool input, as journaled (a JSON text, maybe cut at 2 KiB)."""
    if isinstance(parameters, Mapping):
        command = parameters.get("command")
        return command if isinstance(command, str) else None
    if not isinstance(parameters, str):
        return None
    try:
        doc = json.loads(parameters)
    except ValueError:
        match = re.search(r'"command":\s*"((?:[^"\\]|\\.)*)', parameters)
        if match is None:
            return None
        try:
            value = json.loads(f'"{match.group(1)}"')
        except ValueError:
            return match.group(1)
        return value if isinstance(value, str) else None
    return bash_command(doc) if isinstance(doc, Mapping) else None


def calls_from_events(envelopes: Iterable[Mapping[str, object]], *, run_id: str,
                      session_id: str, repo: str = "") -> tuple[CallRecord, ...]:
    """One record per ``claude_call_completed`` event of one run's journal, in order.

    ``session_id`` is the Prodigy session the run belongs to (the ``session_id`` field
    of the Claude events names the Claude session).
    """
    pending: dict[tuple[str, str], _Pending] = {}
    records: list[CallRecord] = []
    for envelope in envelopes:
        body = envelope.get("event")
        if not isinstance(body, Mapping):
            continue
        kind = body.get("event_type")
        key = (str(body.get("step_path") or ""), str(body.get("agent_id") or ""))
        if kind == "claude_session_started":
            pending[key] = _Pending()
        elif kind == "claude_api_retry":
            slot = pending.setdefault(key, _Pending())
            slot.retries += 1
            status = body.get("error_status")
            if isinstance(status, int) and not isinstance(status, bool):
                slot.statuses.append(status)
        elif kind == "claude_tool_invoked" and body.get("tool_name") == "Bash":
            command = bash_command(body.get("parameters"))
            if command is not None:
                pending.setdefault(key, _Pending()).bash.append(command)
        elif kind == "claude_call_completed":
            slot = pending.pop(key, _Pending())
            records.append(_record(envelope, body, slot, run_id=run_id,
                                   session_id=session_id, repo=repo))
    return tuple(records)


def _record(envelope: Mapping[str, object], body: Mapping[str, object], slot: _Pending, *,
            run_id: str, session_id: str, repo: str) -> CallRecord:
    usage = body.get("usage")
    tokens: Mapping[str, object] = usage if isinstance(usage, Mapping) else {}
    retries = body.get("api_retries")
    count, statuses = slot.retries, tuple(slot.statuses)
    if isinstance(retries, Mapping):  # a writer that counts them itself
        count = max(count, _int(retries.get("count")))
        listed = retries.get("statuses")
        if isinstance(listed, list) and not statuses:
            statuses = tuple(_int(s) for s in listed)
    exit_code = body.get("exit_code")
    partial = body.get("partial")
    if not isinstance(partial, bool):
        partial = body.get("num_turns") is None and body.get("subtype") is None
    return CallRecord(
        run_id=run_id, session_id=session_id, repo=repo,
        job_id=_str(body.get("job_id")), step_path=str(body.get("step_path") or ""),
        agent_id=_str(body.get("agent_id")), item_id=_str(body.get("item_id")),
        timestamp=str(envelope.get("timestamp") or ""),
        claude_session_id=_str(body.get("session_id")), model=_str(body.get("model")),
        success=body.get("success") is True, is_error=body.get("is_error") is True,
        subtype=_str(body.get("subtype")),
        exit_code=exit_code if isinstance(exit_code, int) and not isinstance(exit_code, bool)
        else None,
        error_code=_str(body.get("error_code")), duration_ms=_int(body.get("duration_ms")),
        duration_api_ms=_int(body.get("duration_api_ms")), num_turns=_int(body.get("num_turns")),
        cost_usd=_float(body.get("cost_usd")), input_tokens=_int(tokens.get("input_tokens")),
        output_tokens=_int(tokens.get("output_tokens")),
        cache_read_input_tokens=_int(tokens.get("cache_read_input_tokens")),
        cache_creation_input_tokens=_int(tokens.get("cache_creation_input_tokens")),
        tool_uses=_counts(body.get("tool_uses")), tool_errors=_counts(body.get("tool_errors")),
        api_retries=count, api_retry_statuses=statuses, partial=partial,
        json_log_location=_str(body.get("json_log_location")), bash_commands=tuple(slot.bash),
    )


# --------------------------------------------------------------------------- totals


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class Totals:
    runs: int = 0
    calls: int = 0
    failed_calls: int = 0
    num_turns: int = 0
    cost_usd: float = 0.0
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_input_tokens: int = 0
    cache_creation_input_tokens: int = 0
    duration_ms: int = 0
    api_duration_ms: int = 0
    api_retries: int = 0

    @property
    def cache_hit_ratio(self) -> float | None:
        """Spec 14 §3.3; ``None`` when no input tokens were counted."""
        whole = self.input_tokens + self.cache_read_input_tokens + self.cache_creation_input_tokens
        return None if whole == 0 else self.cache_read_input_tokens / whole

    def to_json(self) -> dict[str, JSON]:
        ratio = self.cache_hit_ratio
        return {
            "runs": self.runs, "claude_calls": self.calls, "failed_calls": self.failed_calls,
            "num_turns": self.num_turns, "total_cost_usd": round(self.cost_usd, 6),
            "input_tokens": self.input_tokens, "output_tokens": self.output_tokens,
            "cache_read_input_tokens": self.cache_read_input_tokens,
            "cache_creation_input_tokens": self.cache_creation_input_tokens,
            "cache_hit_ratio": None if ratio is None else round(ratio, 4),
            "duration_ms": self.duration_ms, "api_duration_ms": self.api_duration_ms,
            "api_retries": self.api_retries,
        }


def totals(records: Iterable[CallRecord], *, runs: int = 0) -> Totals:
    out = Totals(runs=runs)
    for r in records:
        out = Totals(
            runs=runs, calls=out.calls + 1, failed_calls=out.failed_calls + (not r.success),
            num_turns=out.num_turns + r.num_turns, cost_usd=out.cost_usd + r.cost_usd,
            input_tokens=out.input_tokens + r.input_tokens,
            output_tokens=out.output_tokens + r.output_tokens,
            cache_read_input_tokens=out.cache_read_input_tokens + r.cache_read_input_tokens,
            cache_creation_input_tokens=out.cache_creation_input_tokens
            + r.cache_creation_input_tokens,
            duration_ms=out.duration_ms + r.duration_ms,
            api_duration_ms=out.api_duration_ms + r.duration_api_ms,
            api_retries=out.api_retries + r.api_retries,
        )
    return out


# --------------------------------------------------------------------------- grouping


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class GroupRow:
    """One row of ``analytics cost``; ``scope`` is the run of a step or item."""

    key: str
    scope: str | None = None
    calls: int = 0
    failed_calls: int = 0
    cost_usd: float = 0.0
    input_tokens: int = 0
    output_tokens: int = 0
    num_turns: int = 0
    duration_ms: int = 0

    def to_json(self) -> dict[str, JSON]:
        return {"key": self.key, "scope": self.scope, "calls": self.calls,
                "failed_calls": self.failed_calls, "cost_usd": round(self.cost_usd, 6),
                "input_tokens": self.input_tokens, "output_tokens": self.output_tokens,
                "num_turns": self.num_turns, "duration_ms": self.duration_ms}


def group_key(record: CallRecord, by: GroupBy) -> tuple[str, str | None] | None:
    """(key, scope) of a record for ``by``; ``None`` when it has no such key (``item``)."""
    if by == "session":
        return record.session_id, None
    if by == "job":
        return record.job_id or record.run_id, None
    if by == "step":
        return record.step_path or "-", record.run_id
    if by == "item":
        return (record.item_id, record.job_id or record.run_id) if record.item_id else None
    if by == "model":
        return record.model or "unknown", None
    return (record.timestamp[:10] or "unknown"), None


def group_by(records: Iterable[CallRecord], by: GroupBy) -> tuple[GroupRow, ...]:
    """Rows grouped by ``by``: most expensive first (``day``: oldest first)."""
    rows: dict[tuple[str, str | None], GroupRow] = {}
    for r in records:
        key = group_key(r, by)
        if key is None:
            continue
        row = rows.get(key) or GroupRow(key=key[0], scope=key[1])
        rows[key] = attrs.evolve(
            row, calls=row.calls + 1, failed_calls=row.failed_calls + (not r.success),
            cost_usd=row.cost_usd + r.cost_usd, input_tokens=row.input_tokens + r.input_tokens,
            output_tokens=row.output_tokens + r.output_tokens,
            num_turns=row.num_turns + r.num_turns, duration_ms=row.duration_ms + r.duration_ms)
    if by == "day":
        return tuple(sorted(rows.values(), key=lambda g: g.key))
    return tuple(sorted(rows.values(), key=lambda g: (-g.cost_usd, g.key, g.scope or "")))


def top_steps(records: Iterable[CallRecord], *, n: int = 5,
              by: Literal["cost", "duration"] = "cost") -> tuple[GroupRow, ...]:
    """The ``n`` most expensive (or slowest) steps or items, each within its run."""
    rows: dict[tuple[str, str], GroupRow] = {}
    for r in records:
        key = (r.where, r.job_id or r.run_id)
        row = rows.get(key) or GroupRow(key=key[0], scope=key[1])
        rows[key] = attrs.evolve(
            row, calls=row.calls + 1, failed_calls=row.failed_calls + (not r.success),
            cost_usd=row.cost_usd + r.cost_usd, input_tokens=row.input_tokens + r.input_tokens,
            output_tokens=row.output_tokens + r.output_tokens,
            num_turns=row.num_turns + r.num_turns, duration_ms=row.duration_ms + r.duration_ms)
    if by == "cost":
        ordered = sorted(rows.values(), key=lambda g: (-g.cost_usd, g.key, g.scope or ""))
    else:
        ordered = sorted(rows.values(), key=lambda g: (-g.duration_ms, g.key, g.scope or ""))
    return tuple(ordered[:n])


# --------------------------------------------------------------------------- tools


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class ToolRow:
    name: str
    uses: int = 0
    errors: int = 0
    commands: tuple[tuple[str, int], ...] = ()

    @property
    def error_rate(self) -> float:
        return self.errors / self.uses if self.uses else 0.0

    def to_json(self) -> dict[str, JSON]:
        doc: dict[str, JSON] = {"tool": self.name, "uses": self.uses, "errors": self.errors,
                                "error_rate": round(self.error_rate, 4)}
        if self.commands:
            doc["top_commands"] = [{"command": c, "count": k} for c, k in self.commands]
        return doc


def first_word(command: str) -> str | None:
    """The program a shell command starts with, after ``VAR=value`` assignments."""
    for word in command.strip().split():
        if not _ASSIGNMENT.match(word):
            return word.lstrip("(") or None
    return None


def tool_stats(records: Iterable[CallRecord], *, top_commands: int = 10) -> tuple[ToolRow, ...]:
    """Per tool: uses, errors; for ``Bash`` the most frequent first words (most used first)."""
    uses: dict[str, int] = {}
    errors: dict[str, int] = {}
    words: dict[str, int] = {}
    for r in records:
        for name, count in r.tool_uses:
            uses[name] = uses.get(name, 0) + count
        for name, count in r.tool_errors:
            errors[name] = errors.get(name, 0) + count
        for command in r.bash_commands:
            word = first_word(command)
            if word:
                words[word] = words.get(word, 0) + 1
    ranked = sorted(words.items(), key=lambda kv: (-kv[1], kv[0]))[:top_commands]
    rows = [ToolRow(name=name, uses=uses.get(name, 0), errors=errors.get(name, 0),
                    commands=tuple(ranked) if name == "Bash" else ())
            for name in set(uses) | set(errors)]
    return tuple(sorted(rows, key=lambda t: (-t.uses, t.name)))


# --------------------------------------------------------------------------- statistics


def percentile(values: Sequence[float], pct: float) -> float:
    """Linear-interpolated percentile (``pct`` in 0..100) of a non-empty sequence."""
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * pct / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def item_costs(records: Iterable[CallRecord]) -> dict[tuple[str, str], float]:
    """Cost per (run, item) for the agent calls."""
    costs: dict[tuple[str, str], float] = {}
    for r in records:
        if r.item_id:
            key = (r.job_id or r.run_id, r.item_id)
            costs[key] = costs.get(key, 0.0) + r.cost_usd
    return costs


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class Projection:
    """Forecast for the unfinished items of a job (spec 14 §4, ``cost --project``)."""

    finished_items: int
    remaining_items: int
    median_cost_usd: float
    p90_cost_usd: float
    remaining_cost_usd: float
    remaining_cost_high_usd: float
    median_duration_ms: int | None
    p90_duration_ms: int | None
    remaining_time_ms: int | None

    def to_json(self) -> dict[str, JSON]:
        return {"finished_items": self.finished_items, "remaining_items": self.remaining_items,
                "median_cost_usd": round(self.median_cost_usd, 6),
                "p90_cost_usd": round(self.p90_cost_usd, 6),
                "remaining_cost_usd": round(self.remaining_cost_usd, 6),
                "remaining_cost_high_usd": round(self.remaining_cost_high_usd, 6),
                "median_duration_ms": self.median_duration_ms,
                "p90_duration_ms": self.p90_duration_ms,
                "remaining_time_ms": self.remaining_time_ms}


def project(costs: Sequence[float], durations_ms: Sequence[int], *, remaining: int,
            max_parallel: int) -> Projection | None:
    """Remaining cost = remaining × median cost per finished item (up to the 90th
    percentile); remaining time = ⌈remaining ÷ max_parallel⌉ × median duration.
    ``None`` when no item has finished."""
    if not costs:
        return None
    remaining = max(0, remaining)
    median, p90 = percentile(costs, 50), percentile(costs, 90)
    med_ms = p90_ms = time_ms = None
    if durations_ms:
        med_ms = int(percentile([float(d) for d in durations_ms], 50))
        p90_ms = int(percentile([float(d) for d in durations_ms], 90))
        time_ms = math.ceil(remaining / max(1, max_parallel)) * med_ms
    return Projection(finished_items=len(costs), remaining_items=remaining,
                      median_cost_usd=median, p90_cost_usd=p90,
                      remaining_cost_usd=remaining * median, remaining_cost_high_usd=remaining * p90,
                      median_duration_ms=med_ms, p90_duration_ms=p90_ms,
                      remaining_time_ms=time_ms)


# --------------------------------------------------------------------------- recommendations


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class Recommendation:
    code: str
    message: str
    detail: str

    def to_json(self) -> dict[str, JSON]:
        return {"code": self.code, "message": self.message, "detail": self.detail}


def recommendations(records: Sequence[CallRecord]) -> tuple[Recommendation, ...]:
    """The rule-based hints of spec 14 §6 whose condition holds, with their numbers."""
    hints: list[Recommendation] = []
    total = totals(records)
    ratio = total.cache_hit_ratio
    if total.calls >= 10 and ratio is not None and ratio < 0.2:
        hints.append(Recommendation(
            code="cache", message="Prompt caching is rarely used; keep long prompt prefixes "
            "identical between calls.",
            detail=f"cache hit ratio {ratio:.0%} over {total.calls} calls"))
    for tool in tool_stats(records):
        if tool.uses >= 10 and tool.error_rate > 0.2:
            hints.append(Recommendation(
                code="tool_errors", message=f"{tool.name} fails often; check permissions "
                "(`permission_denials`) or the environment.",
                detail=f"{tool.errors} errors in {tool.uses} uses ({tool.error_rate:.0%})"))
    costs = item_costs(records)
    if costs:
        median = percentile(list(costs.values()), 50)
        outliers = sorted(((c, item) for (_, item), c in costs.items()
                           if median > 0 and c > 3 * median), reverse=True)[:5]
        if outliers:
            shown = ", ".join(f"{item} (${c:.4f})" for c, item in outliers)
            hints.append(Recommendation(
                code="outlier_items", message="Some items cost far more than the others; "
                "review them.", detail=f"median item ${median:.4f}; over 3×: {shown}"))
    timed_out = [r for r in records if r.error_code in TIMEOUT_CODES]
    if timed_out:
        idle = sum(1 for r in timed_out if r.error_code == "E7005")
        hints.append(Recommendation(
            code="timeouts", message="Calls were stopped by the idle watchdog or a timeout; "
            "raise `idle_timeout_secs` / `timeout`, or split the step.",
            detail=f"{len(timed_out)} calls ({idle} idle watchdog, "
                   f"{len(timed_out) - idle} step timeout)"))
    limited = [s for r in records for s in r.api_retry_statuses if s in (429, 529)]
    if limited:
        shown = ", ".join(f"{s} ×{limited.count(s)}" for s in sorted(set(limited)))
        hints.append(Recommendation(
            code="rate_limits", message="Rate limits or overload were hit; lower "
            "`max_parallel` or add a circuit breaker.", detail=f"API retries with status {shown}"))
    max_turns = sum(1 for r in records if r.subtype == "error_max_turns")
    if max_turns:
        hints.append(Recommendation(
            code="max_turns", message="Calls ran out of turns; simplify the prompt or allow "
            "more turns through `extra_args`.",
            detail=f"{max_turns} calls ended with error_max_turns"))
    return tuple(hints)


def summary(records: Sequence[CallRecord], *, runs: int, top: int = 5) -> dict[str, JSON]:
    """The ``analytics summary`` document (spec 14 §4, acceptance example 7)."""
    return {
        "totals": totals(records, runs=runs).to_json(),
        "tools": [t.to_json() for t in tool_stats(records)[:top]],
        "most_expensive": [g.to_json() for g in top_steps(records, n=top, by="cost")],
        "slowest": [g.to_json() for g in top_steps(records, n=top, by="duration")],
        "recommendations": [h.to_json() for h in recommendations(records)],
    }
