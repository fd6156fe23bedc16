"""Claude executions inside the step machine (spec 07 with spec 02 §3).

Theory of operation
-------------------
A ``claude`` step's execution is one ``RunClaude`` effect.  While it runs, the
interpreter feeds every stdout line back as ``ClaudeLine``; ``on_line`` folds it into the
frame's ``ClaudeCall`` summary and turns what it learned into journal records
(``claude_session_started``, ``claude_tool_invoked``, ``claude_api_retry``) and console
lines (a status line; assistant text and tool calls with ``-v``; raw JSON with ``-vv``).
The frame keeps waiting for the same command.  ``on_finished`` concludes the call, logs
``claude_token_usage`` and ``claude_call_completed``, adds the call to the scope's usage
totals, and hands an ``ExecResult`` to the common checks (captures, commit checks,
validation, retries, handlers), exactly as a shell execution does.
"""

from __future__ import annotations

import attrs

from prodigy_core import analytics, step_checks
from prodigy_core.claude_config import invocation
from prodigy_core.claude_stream import ClaudeCall, conclude, fold
from prodigy_core.effects import LogEvent, Print, RunClaude
from prodigy_core.events import ClaudeFinished, ClaudeLine
from prodigy_core.interpolate import interpolate
from prodigy_core.json_values import JSON
from prodigy_core.results import ExecResult
from prodigy_core.step_frames import StepFrame, Tx

# words that the retry matchers of spec 10 §2.4 recognise, one per Claude failure class
_CLASS_WORDS = {"rate_limit": "rate limit", "server_error": "server error",
                "network": "network", "timeout": "timed out"}


def execute(tx: Tx, frame: StepFrame, cid: int, env: tuple[tuple[str, str], ...]) -> None:
    step = frame.step
    model = None
    if step.model:
        model = interpolate(step.model, tx.visible(), environ=tx.ctx.environ_map).text
    inv = invocation(tx.ctx.claude, frame.text, model=model, is_root=tx.ctx.is_root)
    idle = tx.ctx.claude.idle_timeout
    tx.replace_top(attrs.evolve(frame, claude=ClaudeCall(), transcript=""))
    tx.emit(RunClaude(command_id=cid, argv=inv.argv, stdin=inv.stdin, cwd=frame.cwd, env=env,
                      timeout=frame.timeout, idle_timeout=idle if idle > 0 else None,
                      display=frame.display, step_path=frame.path,
                      memory_limit_mb=tx.ctx.memory_limit_mb))


def _log(tx: Tx, frame: StepFrame, event_type: str, fields: dict[str, JSON]) -> None:
    fields = {"step_path": frame.path, "session_id": tx.ctx.session_id, **fields}
    tx.emit(LogEvent(event_type=event_type, fields=tuple(fields.items())))


def on_line(tx: Tx, frame: StepFrame, event: ClaudeLine) -> None:
    """One line of the running call; the frame keeps waiting for the call to end."""
    call, notices = fold(frame.claude or ClaudeCall(), event.line)
    tx.replace_top(attrs.evolve(frame, claude=call))
    tx.emit(Print(text=f"    {event.line}", level="debug"))
    for notice in notices:
        fields = dict(notice.fields)
        if notice.kind == "session_started":
            _log(tx, frame, "claude_session_started", fields)
        elif notice.kind == "tool_invoked":
            _log(tx, frame, "claude_tool_invoked", fields)
            tx.emit(Print(text=f"    🔧 {fields.get('tool_name')}: {notice.text}",
                          level="detail"))
        elif notice.kind == "api_retry":
            _log(tx, frame, "claude_api_retry", fields)
            tx.emit(Print(text=f"    ⏳ API retry {fields.get('attempt')}/"
                               f"{fields.get('max_retries')} ({fields.get('error_status')})",
                          level="detail"))
        elif notice.kind == "assistant_text":
            text = notice.text.strip().replace("\n", " ")
            if text:
                tx.emit(Print(text=f"    💬 {text[:200]}", level="detail"))
    tools = sum(call.tool_uses.values())
    tx.emit(Print(text=f"  claude: {call.turns_seen} turns, {tools} tool calls, "
                       f"${call.cost_usd:.4f}", level="status"))


def on_finished(tx: Tx, frame: StepFrame, event: ClaudeFinished) -> None:
    if event.planned:
        result = ExecResult(exit_code=0, passed=True, planned=True)
        tx.replace_top(attrs.evolve(frame, last=result, mono=event.monotonic))
        step_checks.after_result(tx, frame, result, event.monotonic)
        return
    call = frame.claude or ClaudeCall()
    settings = tx.ctx.claude
    outcome = conclude(call, exit_code=event.exit_code, stderr=event.stderr, prompt=frame.text,
                       transcript=event.transcript,
                       idle_timeout=settings.idle_timeout if event.idle else None,
                       not_started=event.not_started, executable=settings.executable)
    error_class = None if outcome.passed else "claude_error"
    message = outcome.message
    code = outcome.error_code
    classes = outcome.classes
    if event.timed_out:
        secs = frame.timeout if frame.timeout is not None else 0
        shown = int(secs) if float(secs).is_integer() else secs
        error_class, code = "timeout", "E3002"
        message = f"Command timed out after {shown} seconds\nTranscript: {event.transcript}"
        classes = ("timeout",)
    elif event.idle:
        error_class = "timeout"
    words = " ".join(_CLASS_WORDS[c] for c in classes if c in _CLASS_WORDS)
    if message and words:
        message = f"{message}\n(classes: {words})"
    result = ExecResult(
        exit_code=-1 if (event.timed_out or event.idle) else event.exit_code,
        stdout=outcome.output, stderr=event.stderr, duration=event.duration,
        passed=outcome.passed and not event.timed_out, error_class=error_class,
        error_code=code, message=message, finished_at=event.finished_at,
    )
    usage = analytics.add_call(analytics.Usage(), call, passed=result.passed,
                               duration=event.duration)
    tx.st = attrs.evolve(tx.st, usage=analytics.combine(tx.st.usage, usage),
                         step_usage=analytics.combine(tx.st.step_usage, usage))
    tokens = call.result_map.get("usage")
    tokens = tokens if isinstance(tokens, dict) else {}
    _log(tx, frame, "claude_token_usage", {
        "input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens,
        "cache_tokens": usage.cache_read_input_tokens + usage.cache_creation_input_tokens,
        "cache_read_input_tokens": usage.cache_read_input_tokens,
        "cache_creation_input_tokens": usage.cache_creation_input_tokens,
        "cost_usd": call.cost_usd})
    result_map = call.result_map
    _log(tx, frame, "claude_call_completed", {
        "session_id": call.session_id, "model": call.model, "success": result.passed,
        "is_error": result_map.get("is_error") is True, "subtype": outcome.subtype,
        "exit_code": event.exit_code, "error_code": code, "duration_ms": int(event.duration * 1000),
        "duration_api_ms": result_map.get("duration_api_ms"),
        "num_turns": result_map.get("num_turns"), "cost_usd": call.cost_usd,
        "usage": tokens, "tool_uses": dict(call.tool_uses),
        "tool_errors": dict(call.tool_errors), "json_log_location": event.transcript})
    turns = result_map.get("num_turns", call.turns_seen)
    if result.passed:
        tx.emit(Print(text=f"    ✅ done in {turns} turns, ${call.cost_usd:.4f}"))
    else:
        first = (outcome.output or message or "").strip().split("\n", 1)[0][:200]
        tx.emit(Print(text=f"    ❌ {outcome.subtype or code}: {first}"))
    tx.emit(Print(text=f"    Claude transcript: {event.transcript}", level="detail"))
    result = step_checks.record_claude(tx, frame, result, {
        "session_id": call.session_id, "cost_usd": call.cost_usd,
        "json_log_location": event.transcript})
    top = tx.top
    assert isinstance(top, StepFrame)
    tx.replace_top(attrs.evolve(top, last=result, mono=event.monotonic,
                                transcript=event.transcript))
    step_checks.after_result(tx, frame, result, event.monotonic)
