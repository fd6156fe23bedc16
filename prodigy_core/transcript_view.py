"""Reading a Claude transcript back for people (spec 07 §4.3 and §8, spec 14 §4 replay).

Theory of operation
-------------------
A transcript is the stream-json output of one call, line by line (spec 07 §8).
``entries`` turns its lines into a flat timeline of ``Entry`` values — one per thing
that happened: the session started, the model said something, a tool was called, a
tool answered, the API was retried, the call ended.  Two renderers read that
timeline: ``summarised`` gives the console-echo form of spec 07 §4.3 (``🔧``, ``💬``,
``✅``/``❌``) used by ``prodigy logs``, and ``replay_lines`` gives the numbered
timeline of ``analytics replay`` with the time elapsed since the first timestamp.
``call_record`` folds the same lines into a per-call record (spec 14 §2), marked
``partial`` when the call never produced a ``result``.  All pure: lines in, text out.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Literal

import attrs

from prodigy_core.analytics_report import CallRecord, bash_command
from prodigy_core.claude_stream import ClaudeCall, fold, main_input
from prodigy_core.json_values import JSON
from prodigy_core.reprs import value_class

EntryKind = Literal["prompt", "init", "system", "retry", "text", "tool", "tool_result",
                    "result", "unparsed"]
_TIME = re.compile(r"^(\d{4})-(\d\d)-(\d\d)[T ](\d\d):(\d\d):(\d\d(?:\.\d+)?)"
                   r"(Z|[+-]\d\d:?\d\d)?$")
_EXIT = re.compile(r"^\s*Exit code (-?\d+)\s*")


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class Entry:
    """One event of a transcript; ``seconds`` is its timestamp as epoch seconds, if any."""

    kind: EntryKind
    text: str
    seconds: float | None = None
    failed: bool = False
    turns: str = ""
    cost: str = ""


def epoch_seconds(text: str) -> float | None:
    """Seconds since 1970 of an RFC 3339 timestamp (``None`` when it is not one)."""
    match = _TIME.match(text.strip())
    if match is None:
        return None
    year, month, day, hour, minute = (int(match.group(i)) for i in range(1, 6))
    if not (1 <= month <= 12 and 1 <= day <= 31):
        return None
    second = float(match.group(6))
    # days from civil (Howard Hinnant's algorithm)
    y = year - (1 if month <= 2 else 0)
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + day - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    days = era * 146097 + doe - 719468
    offset = 0
    zone = match.group(7)
    if zone and zone != "Z":
        sign = -1 if zone[0] == "-" else 1
        digits = zone[1:].replace(":", "")
        offset = sign * (int(digits[:2]) * 3600 + int(digits[2:]) * 60)
    return days * 86400 + hour * 3600 + minute * 60 + second - offset


def _one_line(text: str, limit: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _first_line(text: str, limit: int) -> str:
    for line in text.splitlines():
        if line.strip():
            return _one_line(line, limit)
    return ""


def _content_text(content: object) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [str(b.get("text")) for b in content
                 if isinstance(b, Mapping) and isinstance(b.get("text"), str)]
        return "\n".join(parts)
    return ""


def _blocks(message: Mapping[str, object]) -> list[Mapping[str, object]]:
    body = message.get("message")
    content = body.get("content") if isinstance(body, Mapping) else None
    return [b for b in content if isinstance(b, Mapping)] if isinstance(content, list) else []


def _money(value: object) -> str:
    return f"${float(value):.4f}" if isinstance(value, int | float) and not isinstance(
        value, bool) else "$0.0000"


def _line_entries(message: Mapping[str, object], seconds: float | None) -> list[Entry]:
    kind, subtype = message.get("type"), message.get("subtype")
    if kind == "prodigy_prompt":
        digest = str(message.get("sha256") or "")[:12]
        return [Entry(kind="prompt", seconds=seconds,
                      text=f"prompt on stdin: {message.get('bytes')} bytes, sha256 {digest}")]
    if kind == "system" and subtype == "init":
        tools = message.get("tools")
        count = len(tools) if isinstance(tools, list) else 0
        return [Entry(kind="init", seconds=seconds,
                      text=f"init  model={message.get('model') or '?'}  tools={count}")]
    if kind == "system" and subtype == "api_retry":
        error = _one_line(str(message.get("error") or ""), 120)
        return [Entry(kind="retry", seconds=seconds, failed=True,
                      text=f"API retry {message.get('attempt')}/{message.get('max_retries')} "
                           f"({message.get('error_status')}){': ' + error if error else ''}")]
    if kind == "system":
        return [Entry(kind="system", seconds=seconds, text=str(subtype or "system"))]
    if kind == "assistant":
        found: list[Entry] = []
        for block in _blocks(message):
            if block.get("type") == "text" and isinstance(block.get("text"), str):
                text = _one_line(str(block["text"]), 200)
                if text:
                    found.append(Entry(kind="text", text=text, seconds=seconds))
            elif block.get("type") == "tool_use":
                name = str(block.get("name") or "?")
                shown = _first_line(main_input(name, _plain(block.get("input"))), 100)
                found.append(Entry(kind="tool", text=f"{name}: {shown}", seconds=seconds))
        return found
    if kind == "user":
        found = []
        for block in _blocks(message):
            if block.get("type") != "tool_result":
                continue
            text = _content_text(block.get("content"))
            if block.get("is_error") is True:
                match = _EXIT.match(text)
                label = f"error (exit {match.group(1)})" if match else "error"
                rest = text[match.end():] if match else text
                found.append(Entry(kind="tool_result", failed=True, seconds=seconds,
                                   text=f"{label}: {_first_line(rest, 120)}".rstrip(": ")))
            else:
                found.append(Entry(kind="tool_result", seconds=seconds,
                                   text=f"ok: {_first_line(text, 120)}".rstrip(": ")))
        return found
    if kind == "result":
        failed = message.get("is_error") is True or (
            isinstance(subtype, str) and subtype != "success")
        turns = message.get("num_turns")
        cost = _money(message.get("total_cost_usd"))
        first = _first_line(str(message.get("result") or ""), 200)
        return [Entry(kind="result", failed=failed, seconds=seconds, cost=cost,
                      turns=str(turns) if turns is not None else "?",
                      text=f"{subtype or 'error'}: {first}" if failed else str(subtype))]
    return []


def _plain(value: object) -> JSON:
    """A JSON value for ``main_input`` (which only looks at a few string fields)."""
    try:
        plain: JSON = json.loads(json.dumps(value, default=str))
    except (TypeError, ValueError):
        return str(value)
    return plain


def entries(lines: Sequence[str]) -> tuple[Entry, ...]:
    """The timeline of a transcript, in transcript order; blank lines are skipped."""
    found: list[Entry] = []
    for line in lines:
        if not line.strip():
            continue
        try:
            message = json.loads(line)
        except ValueError:
            message = None
        if not isinstance(message, Mapping):
            found.append(Entry(kind="unparsed", text=_one_line(line, 100)))
            continue
        stamp = message.get("timestamp")
        seconds = epoch_seconds(stamp) if isinstance(stamp, str) else None
        found.extend(_line_entries(message, seconds))
    return tuple(found)


def summarised(lines: Sequence[str], *, prefix: str = "") -> tuple[str, ...]:
    """The console-echo form of spec 07 §4.3, one string per shown event."""
    shown: list[str] = []
    for entry in entries(lines):
        if entry.kind == "tool":
            shown.append(f"{prefix}🔧 {entry.text}")
        elif entry.kind == "text":
            shown.append(f"{prefix}💬 {entry.text}")
        elif entry.kind == "retry":
            shown.append(f"{prefix}⏳ {entry.text}")
        elif entry.kind == "result":
            if entry.failed:
                shown.append(f"{prefix}❌ {entry.text}".rstrip(": "))
            else:
                shown.append(f"{prefix}✅ done in {entry.turns} turns, {entry.cost}")
    return tuple(shown)


_ICONS: dict[EntryKind, str] = {"prompt": "📝", "init": "⚙", "system": "⚙", "retry": "⏳",
                                "text": "💬", "tool": "🔧", "tool_result": "↳",
                                "result": "✅", "unparsed": "·"}


def _clock(seconds: float) -> str:
    whole = max(0, int(seconds))
    hours, rest = divmod(whole, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else \
        f"{rest // 60:02d}:{rest % 60:02d}"


def replay_lines(lines: Sequence[str], *, start: int = 1,
                 limit: int | None = None) -> tuple[str, ...]:
    """The numbered timeline of ``analytics replay`` (spec 14 §4), from entry ``start``.

    When the transcript has timestamps, each entry shows the time since the first one
    (an entry without its own timestamp shows the last time known before it).
    """
    timeline = entries(lines)
    first = next((e.seconds for e in timeline if e.seconds is not None), None)
    shown: list[str] = []
    last = first
    for number, entry in enumerate(timeline, start=1):
        if entry.seconds is not None:
            last = entry.seconds
        if number < start:
            continue
        if limit is not None and len(shown) >= limit:
            break
        icon = "❌" if entry.kind == "result" and entry.failed else _ICONS[entry.kind]
        text = entry.text
        if entry.kind == "result":
            subtype, _, detail = entry.text.partition(": ")
            text = f"result: {subtype}, {entry.turns} turns, {entry.cost}"
            if detail:
                text += f": {detail}"
        stamp = "" if first is None or last is None else f"[{_clock(last - first)}]  "
        shown.append(f"#{number:<3} {stamp}{icon} {text}")
    return tuple(shown)


def call_record(lines: Sequence[str], *, run_id: str = "", session_id: str = "",
                json_log_location: str | None = None) -> CallRecord:
    """A per-call record (spec 14 §2) from the transcript alone.

    Without a ``result`` message the record is ``partial``: cost 0, usage summed from
    the assistant messages, turns = the number of assistant messages.
    """
    call = ClaudeCall()
    usage = {"input_tokens": 0, "output_tokens": 0, "cache_read_input_tokens": 0,
             "cache_creation_input_tokens": 0}
    bash: list[str] = []
    retries: list[int] = []
    for line in lines:
        call, _ = fold(call, line)
        try:
            message = json.loads(line)
        except ValueError:
            continue
        if not isinstance(message, Mapping):
            continue
        if message.get("type") == "assistant":
            body = message.get("message")
            tokens = body.get("usage") if isinstance(body, Mapping) else None
            if isinstance(tokens, Mapping):
                for key in usage:
                    value = tokens.get(key)
                    if isinstance(value, int) and not isinstance(value, bool):
                        usage[key] += value
            for block in _blocks(message):
                if block.get("type") == "tool_use" and block.get("name") == "Bash":
                    command = bash_command(block.get("input"))
                    if command is not None:
                        bash.append(command)
        elif message.get("type") == "system" and message.get("subtype") == "api_retry":
            status = message.get("error_status")
            retries.append(status if isinstance(status, int) else 0)
    result = call.result_map
    partial = call.result is None
    if not partial:
        tokens = result.get("usage")
        if isinstance(tokens, dict):
            usage = {k: v if isinstance(v := tokens.get(k), int) else 0 for k in usage}

    def num(key: str) -> int:
        value = result.get(key)
        return value if isinstance(value, int) and not isinstance(value, bool) else 0

    subtype = result.get("subtype")
    return CallRecord(
        run_id=run_id, session_id=session_id, claude_session_id=call.session_id,
        model=call.model, success=not partial and result.get("is_error") is not True,
        is_error=result.get("is_error") is True,
        subtype=subtype if isinstance(subtype, str) else None,
        duration_ms=num("duration_ms"), duration_api_ms=num("duration_api_ms"),
        num_turns=call.turns_seen if partial else num("num_turns"), cost_usd=call.cost_usd,
        input_tokens=usage["input_tokens"], output_tokens=usage["output_tokens"],
        cache_read_input_tokens=usage["cache_read_input_tokens"],
        cache_creation_input_tokens=usage["cache_creation_input_tokens"],
        tool_uses=tuple(sorted(call.tool_uses.items())),
        tool_errors=tuple(sorted(call.tool_errors.items())),
        api_retries=len(retries), api_retry_statuses=tuple(s for s in retries if s),
        partial=partial, json_log_location=json_log_location, bash_commands=tuple(bash))
