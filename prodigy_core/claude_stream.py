"""Reading the Claude Code CLI's stream-json output, one line at a time (spec 07 §4–§6).

Theory of operation
-------------------
The interpreter hands every line the CLI prints to the core as it arrives.  ``fold``
takes the call's running summary (``ClaudeCall``) and one line, and returns the new
summary plus the *notices* the line gives rise to (a session started, a tool was
invoked, the API is being retried, the model said something) — the step machine turns
those into journal records and the live status line.  When the process has ended,
``conclude`` decides the call's outcome from the summary, the exit status and the tail
of standard error: the output text, the error code and message of spec 07 §5.3, and the
retry classes of §6.  Everything here is pure; unknown messages and fields are ignored,
and a line that is not JSON only counts as unparsed.
"""

from __future__ import annotations

import json
import re
from typing import Literal

import attrs
from pyrsistent import PMap, pmap

from prodigy_core.json_values import JSON
from prodigy_core.reprs import value_class
from prodigy_core.results import seconds_text

NoticeKind = Literal["session_started", "tool_invoked", "api_retry", "assistant_text",
                     "tool_result", "result"]
TOOL_INPUT_LIMIT = 2048


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class Notice:
    """Something a stream line told us, for the journal and the console."""

    kind: NoticeKind
    fields: tuple[tuple[str, JSON], ...] = ()
    text: str = ""


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class ClaudeCall:
    """The running summary of one call's stream."""

    session_id: str | None = None
    model: str | None = None
    tools: tuple[str, ...] = ()
    last_text: str | None = None
    tool_uses: PMap[str, int] = pmap()
    tool_errors: PMap[str, int] = pmap()
    tool_names: PMap[str, str] = pmap()
    last_api_retry: tuple[tuple[str, JSON], ...] = ()
    result: tuple[tuple[str, JSON], ...] | None = None
    lines: int = 0
    unparsed: int = 0
    turns_seen: int = 0

    @property
    def result_map(self) -> dict[str, JSON]:
        return dict(self.result) if self.result is not None else {}

    @property
    def cost_usd(self) -> float:
        value = self.result_map.get("total_cost_usd")
        return float(value) if isinstance(value, int | float) else 0.0


def _first(text: str, limit: int) -> str:
    line = text.strip().split("\n", 1)[0]
    return line if len(line) <= limit else line[: limit - 1] + "…"


def main_input(name: str, tool_input: JSON) -> str:
    """The most telling part of a tool's input (the Bash command, the file path…)."""
    if isinstance(tool_input, dict):
        for key in ("command", "file_path", "path", "pattern", "url", "prompt", "query"):
            value = tool_input.get(key)
            if isinstance(value, str):
                return value
        return json.dumps(tool_input, ensure_ascii=False)[:200]
    return str(tool_input)


def fold(call: ClaudeCall, line: str) -> tuple[ClaudeCall, tuple[Notice, ...]]:
    """Take one stdout line of the CLI into the call summary."""
    call = attrs.evolve(call, lines=call.lines + 1)
    try:
        message = json.loads(line)
    except ValueError:
        return attrs.evolve(call, unparsed=call.unparsed + 1), ()
    if not isinstance(message, dict):
        return attrs.evolve(call, unparsed=call.unparsed + 1), ()
    kind = message.get("type")
    subtype = message.get("subtype")
    if kind == "system" and subtype == "init":
        tools = message.get("tools")
        tool_names = tuple(t for t in tools if isinstance(t, str)) if isinstance(tools, list) \
            else ()
        session = message.get("session_id")
        model = message.get("model")
        call = attrs.evolve(
            call,
            session_id=session if isinstance(session, str) else call.session_id,
            model=model if isinstance(model, str) else call.model,
            tools=tool_names,
        )
        return call, (Notice(kind="session_started", fields=(
            ("session_id", call.session_id), ("model", call.model),
            ("tools", list(tool_names)))),)
    if kind == "system" and subtype == "api_retry":
        keys = ("attempt", "max_retries", "retry_delay_ms", "error_status", "error")
        fields = tuple((k, _json(message.get(k))) for k in keys)
        return attrs.evolve(call, last_api_retry=fields), (
            Notice(kind="api_retry", fields=fields),)
    if kind == "assistant":
        return _assistant(call, message)
    if kind == "user":
        return _user(call, message)
    if kind == "result":
        fields = tuple((str(k), _json(v)) for k, v in message.items())
        session = message.get("session_id")
        call = attrs.evolve(call, result=fields,
                            session_id=session if isinstance(session, str) else call.session_id)
        return call, (Notice(kind="result", fields=fields),)
    return call, ()


def _json(value: object) -> JSON:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list):
        return [_json(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _json(v) for k, v in value.items()}
    return str(value)


def _blocks(message: dict[str, object]) -> list[dict[str, object]]:
    body = message.get("message")
    content = body.get("content") if isinstance(body, dict) else None
    if not isinstance(content, list):
        return []
    return [b for b in content if isinstance(b, dict)]


def _assistant(call: ClaudeCall, message: dict[str, object]) -> tuple[ClaudeCall, tuple[Notice, ...]]:
    notices: list[Notice] = []
    for block in _blocks(message):
        if block.get("type") == "text" and isinstance(block.get("text"), str):
            text = str(block["text"])
            call = attrs.evolve(call, last_text=text)
            notices.append(Notice(kind="assistant_text", text=text))
        elif block.get("type") == "tool_use":
            name = str(block.get("name", "?"))
            tool_id = str(block.get("id", ""))
            tool_input = _json(block.get("input"))
            shown = json.dumps(tool_input, ensure_ascii=False)
            if len(shown.encode("utf-8")) > TOOL_INPUT_LIMIT:
                shown = shown.encode("utf-8")[:TOOL_INPUT_LIMIT].decode("utf-8", "ignore") + "…"
            call = attrs.evolve(
                call,
                tool_uses=call.tool_uses.set(name, call.tool_uses.get(name, 0) + 1),
                tool_names=call.tool_names.set(tool_id, name) if tool_id else call.tool_names,
            )
            notices.append(Notice(kind="tool_invoked", fields=(
                ("tool_name", name), ("tool_id", tool_id), ("parameters", shown)),
                text=_first(main_input(name, tool_input), 100)))
    return attrs.evolve(call, turns_seen=call.turns_seen + 1), tuple(notices)


def _user(call: ClaudeCall, message: dict[str, object]) -> tuple[ClaudeCall, tuple[Notice, ...]]:
    notices: list[Notice] = []
    for block in _blocks(message):
        if block.get("type") != "tool_result":
            continue
        tool_id = str(block.get("tool_use_id", ""))
        name = call.tool_names.get(tool_id, "?")
        failed = block.get("is_error") is True
        if failed:
            call = attrs.evolve(call, tool_errors=call.tool_errors.set(
                name, call.tool_errors.get(name, 0) + 1))
        notices.append(Notice(kind="tool_result", fields=(("tool_name", name),
                                                          ("is_error", failed))))
    return call, tuple(notices)


# --- the outcome -----------------------------------------------------------------------


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class ClaudeOutcome:
    passed: bool
    output: str
    error_code: str | None = None
    message: str | None = None
    classes: tuple[str, ...] = ()
    subtype: str | None = None


_RATE = re.compile(r"rate limit|too many requests|temporarily limiting|\b429\b", re.I)
_SERVER = re.compile(r"overloaded|server error|internal error|\b5\d\d\b|\b529\b", re.I)
_NETWORK = re.compile(r"ECONNREFUSED|ECONNRESET|ENOTFOUND|network|connection|unreachable",
                      re.I)
_TIMEOUT = re.compile(r"timed out|timeout", re.I)


def classify(text: str, status: int | None, *, timed_out: bool = False) -> tuple[str, ...]:
    """Retry classes of a failed call (spec 07 §6)."""
    classes: list[str] = []
    if status == 429 or _RATE.search(text):
        classes.append("rate_limit")
    if (status is not None and (500 <= status <= 599)) or _SERVER.search(text):
        classes.append("server_error")
    if _NETWORK.search(text):
        classes.append("network")
    if timed_out or _TIMEOUT.search(text):
        classes.append("timeout")
    if status in (401, 403) or re.search(r"invalid api key|authentication", text, re.I):
        return tuple(c for c in classes if c == "timeout")
    return tuple(classes)


def conclude(call: ClaudeCall, *, exit_code: int, stderr: str, prompt: str,
             transcript: str, idle_timeout: float | None = None,
             not_started: str | None = None, executable: str = "claude") -> ClaudeOutcome:
    """The outcome of a finished call (spec 07 §5.3)."""
    result = call.result_map
    output_value = result.get("result")
    output = output_value if isinstance(output_value, str) else (call.last_text or "")
    tail = "\n".join(stderr.rstrip("\n").split("\n")[-20:]) if stderr.strip() else ""
    suffix = (f"\n{tail}" if tail else "") + f"\nTranscript: {transcript}"
    retry = dict(call.last_api_retry)
    status_value = retry.get("error_status")
    status = status_value if isinstance(status_value, int) else None
    evidence = "\n".join(str(x) for x in (output_value or "", retry.get("error") or "", stderr))
    subtype = result.get("subtype")
    subtype_text = subtype if isinstance(subtype, str) else None
    if not_started is not None:
        return ClaudeOutcome(passed=False, output="", error_code="E7001",
                             message=f"Claude CLI is not available: {executable} "
                                     f"({not_started})")
    if idle_timeout is not None:
        return ClaudeOutcome(
            passed=False, output=output, error_code="E7005",
            message=f"Claude produced no output for {seconds_text(idle_timeout)} seconds{suffix}",
            classes=("timeout",))
    if "dangerously-skip-permissions" in stderr and "root" in stderr:
        return ClaudeOutcome(
            passed=False, output=output, error_code="E7006",
            message="Claude refused the permission arguments: --dangerously-skip-permissions "
                    "cannot be used with root privileges; set PRODIGY_CLAUDE_PERMISSION_ARGS or "
                    f"claude_config.permission_args (see the permission settings){suffix}")
    first = _first(prompt, 80)
    if exit_code != 0:
        return ClaudeOutcome(
            passed=False, output=output, error_code="E7002",
            message=f"Claude command '{first}' failed with exit code {exit_code}{suffix}",
            classes=classify(evidence, status), subtype=subtype_text)
    if call.result is None:
        return ClaudeOutcome(passed=False, output=output, error_code="E7004",
                             message=f"Claude produced no result message{suffix}",
                             classes=classify(evidence, status))
    if result.get("is_error") is True:
        text = output_value if isinstance(output_value, str) else ""
        return ClaudeOutcome(
            passed=False, output=output, error_code="E7003",
            message=f"Claude reported an error ({subtype_text or 'error'}): {text[:500]}{suffix}",
            classes=classify(evidence, status), subtype=subtype_text)
    return ClaudeOutcome(passed=True, output=output, subtype=subtype_text)
