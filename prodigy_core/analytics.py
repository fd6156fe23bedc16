"""Cost, token, turn and tool accounting for Claude calls (spec 14).

``Usage`` is an immutable running total; ``add_call`` folds one finished call into it.
A run keeps one for the whole session and the step machine one per step, so the step
record, the session record, the run summary and ``prodigy analytics`` all read the same
numbers.
"""

from __future__ import annotations

import attrs
from pyrsistent import PMap, pmap

from prodigy_core.claude_stream import ClaudeCall
from prodigy_core.json_values import JSON
from prodigy_core.reprs import value_class


def _int(value: JSON | None) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class Usage:
    claude_calls: int = 0
    failed_calls: int = 0
    total_cost_usd: float = 0.0
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_input_tokens: int = 0
    cache_creation_input_tokens: int = 0
    num_turns: int = 0
    duration_ms: int = 0
    tool_uses: PMap[str, int] = pmap()
    tool_errors: PMap[str, int] = pmap()

    def to_json(self) -> dict[str, JSON]:
        return {
            "claude_calls": self.claude_calls,
            "failed_calls": self.failed_calls,
            "total_cost_usd": round(self.total_cost_usd, 6),
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cache_read_input_tokens": self.cache_read_input_tokens,
            "cache_creation_input_tokens": self.cache_creation_input_tokens,
            "num_turns": self.num_turns,
            "tool_uses": dict(sorted(self.tool_uses.items())),
            "tool_errors": dict(sorted(self.tool_errors.items())),
            "duration_ms": self.duration_ms,
        }


def _merge(a: PMap[str, int], b: PMap[str, int]) -> PMap[str, int]:
    out = a
    for key, value in b.items():
        out = out.set(key, out.get(key, 0) + value)
    return out


def add_call(usage: Usage, call: ClaudeCall, *, passed: bool, duration: float) -> Usage:
    result = call.result_map
    tokens = result.get("usage")
    tokens = tokens if isinstance(tokens, dict) else {}
    return Usage(
        claude_calls=usage.claude_calls + 1,
        failed_calls=usage.failed_calls + (0 if passed else 1),
        total_cost_usd=usage.total_cost_usd + call.cost_usd,
        input_tokens=usage.input_tokens + _int(tokens.get("input_tokens")),
        output_tokens=usage.output_tokens + _int(tokens.get("output_tokens")),
        cache_read_input_tokens=usage.cache_read_input_tokens
        + _int(tokens.get("cache_read_input_tokens")),
        cache_creation_input_tokens=usage.cache_creation_input_tokens
        + _int(tokens.get("cache_creation_input_tokens")),
        num_turns=usage.num_turns + _int(result.get("num_turns")),
        duration_ms=usage.duration_ms + int(duration * 1000),
        tool_uses=_merge(usage.tool_uses, call.tool_uses),
        tool_errors=_merge(usage.tool_errors, call.tool_errors),
    )


def combine(a: Usage, b: Usage) -> Usage:
    return Usage(
        claude_calls=a.claude_calls + b.claude_calls,
        failed_calls=a.failed_calls + b.failed_calls,
        total_cost_usd=a.total_cost_usd + b.total_cost_usd,
        input_tokens=a.input_tokens + b.input_tokens,
        output_tokens=a.output_tokens + b.output_tokens,
        cache_read_input_tokens=a.cache_read_input_tokens + b.cache_read_input_tokens,
        cache_creation_input_tokens=a.cache_creation_input_tokens
        + b.cache_creation_input_tokens,
        num_turns=a.num_turns + b.num_turns,
        duration_ms=a.duration_ms + b.duration_ms,
        tool_uses=_merge(a.tool_uses, b.tool_uses),
        tool_errors=_merge(a.tool_errors, b.tool_errors),
    )


def from_json(doc: object) -> Usage:
    """Restore a total from a session record or checkpoint (resume)."""
    if not isinstance(doc, dict):
        return Usage()

    def counts(value: object) -> PMap[str, int]:
        if not isinstance(value, dict):
            return pmap()
        return pmap({str(k): v for k, v in value.items() if isinstance(v, int)})

    cost = doc.get("total_cost_usd")
    return Usage(
        claude_calls=_int(doc.get("claude_calls")),
        failed_calls=_int(doc.get("failed_calls")),
        total_cost_usd=float(cost) if isinstance(cost, int | float) else 0.0,
        input_tokens=_int(doc.get("input_tokens")),
        output_tokens=_int(doc.get("output_tokens")),
        cache_read_input_tokens=_int(doc.get("cache_read_input_tokens")),
        cache_creation_input_tokens=_int(doc.get("cache_creation_input_tokens")),
        num_turns=_int(doc.get("num_turns")),
        duration_ms=_int(doc.get("duration_ms")),
        tool_uses=counts(doc.get("tool_uses")),
        tool_errors=counts(doc.get("tool_errors")),
    )
