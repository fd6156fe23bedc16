"""The pure analytics functions (spec 14 §2, §3.3, §4, §6) and transcript views (07 §4.3)."""

from __future__ import annotations

import json

import pytest

from prodigy_core import analytics_report as report
from prodigy_core.analytics_report import CallRecord
from prodigy_core.transcript_view import call_record, epoch_seconds, replay_lines, summarised


def _env(body: dict[str, object], stamp: str = "2025-03-14T09:00:00.000Z") -> dict[str, object]:
    return {"timestamp": stamp, "event": body}


def test_calls_from_events_attach_retries_and_bash_commands_to_their_call() -> None:
    events = [
        _env({"event_type": "claude_session_started", "step_path": "steps[0]"}),
        _env({"event_type": "claude_api_retry", "step_path": "steps[0]", "error_status": 429}),
        _env({"event_type": "claude_tool_invoked", "step_path": "steps[0]", "tool_name": "Bash",
              "parameters": json.dumps({"command": "make test"})}),
        _env({"event_type": "claude_call_completed", "step_path": "steps[0]", "session_id": "c1",
              "success": True, "subtype": "success", "num_turns": 2, "cost_usd": 0.0123,
              "usage": {"input_tokens": 100, "output_tokens": 20},
              "tool_uses": {"Bash": 2, "Edit": 1}, "tool_errors": {"Edit": 1}}),
        _env({"event_type": "claude_session_started", "step_path": "steps[1]"}),
        _env({"event_type": "claude_call_completed", "step_path": "steps[1]", "session_id": "c2",
              "success": False, "error_code": "E7005", "cost_usd": 0}),
    ]
    first, second = report.calls_from_events(events, run_id="r", session_id="s")
    assert first.cost_usd == 0.0123 and first.input_tokens == 100 and first.output_tokens == 20
    assert first.tool_uses == (("Bash", 2), ("Edit", 1)) and first.tool_errors == (("Edit", 1),)
    assert first.api_retries == 1 and first.api_retry_statuses == (429,)
    assert first.bash_commands == ("make test",) and not first.partial
    assert second.partial and second.api_retries == 0 and second.outcome == "E7005"
    hints = {h.code for h in report.recommendations([first, second])}
    assert hints == {"rate_limits", "timeouts"}


def test_a_cut_bash_parameter_still_gives_its_command() -> None:
    cut = json.dumps({"command": "pytest -q " + "x" * 3000})[:2048] + "…"
    assert (report.bash_command(cut) or "").startswith("pytest -q xxx")
    assert report.first_word("A=1 B=2 ./run.sh --fast") == "./run.sh"


def test_totals_cache_ratio_and_grouping() -> None:
    calls = [CallRecord(run_id="r", session_id="s", model="m", cost_usd=0.5, input_tokens=60,
                        cache_read_input_tokens=30, cache_creation_input_tokens=10,
                        timestamp="2025-03-14T09:00:00Z", success=True),
             CallRecord(run_id="r2", session_id="s2", model="m", cost_usd=1.0,
                        timestamp="2025-03-15T09:00:00Z")]
    total = report.totals(calls, runs=2)
    assert total.cache_hit_ratio == pytest.approx(0.3) and total.failed_calls == 1
    assert [g.key for g in report.group_by(calls, "session")] == ["s2", "s"]
    assert [g.key for g in report.group_by(calls, "day")] == ["2025-03-14", "2025-03-15"]
    assert report.group_by(calls, "item") == ()
    assert report.totals([]).cache_hit_ratio is None


def test_projection_matches_acceptance_example_5() -> None:
    p = report.project([0.1] * 9 + [0.2], [60000] * 10, remaining=30, max_parallel=4)
    assert p is not None
    assert p.remaining_cost_usd == pytest.approx(3.0)
    assert p.remaining_cost_high_usd == pytest.approx(30 * report.percentile([0.1] * 9 + [0.2],
                                                                              90))
    assert p.remaining_time_ms == 8 * 60000
    assert report.project([], [], remaining=3, max_parallel=1) is None


def test_outlier_items_and_cache_hint() -> None:
    calls = [CallRecord(run_id="j", session_id="s", item_id=f"i{n}", success=True,
                        input_tokens=100, cost_usd=1.0 if n == 0 else 0.1) for n in range(10)]
    hints = {h.code: h for h in report.recommendations(calls)}
    assert set(hints) == {"cache", "outlier_items"} and "i0 ($1.0000)" in hints["outlier_items"].detail


STREAM = [
    json.dumps({"type": "system", "subtype": "init", "session_id": "c", "model": "m",
                "tools": ["Bash"]}),
    json.dumps({"type": "assistant", "message": {"usage": {"input_tokens": 7, "output_tokens": 3},
                "content": [{"type": "text", "text": "Running\nthe tests"},
                            {"type": "tool_use", "id": "t1", "name": "Bash",
                             "input": {"command": "pytest"}}]},
                "timestamp": "2025-03-14T09:00:00Z"}),
    "not json",
    json.dumps({"type": "user", "timestamp": "2025-03-14T09:01:05Z", "message": {"content": [
        {"type": "tool_result", "tool_use_id": "t1", "is_error": True,
         "content": [{"type": "text", "text": "Exit code 2\nboom"}]}]}}),
]


def test_a_transcript_without_result_is_a_partial_record() -> None:
    record = call_record(STREAM)
    assert record.partial and record.cost_usd == 0 and record.num_turns == 1
    assert record.input_tokens == 7 and record.tool_errors == (("Bash", 1),)


def test_summarised_and_replay_forms() -> None:
    failed = json.dumps({"type": "result", "subtype": "error_max_turns", "is_error": True,
                         "num_turns": 9, "total_cost_usd": 0.5, "result": "too long\nmore"})
    assert summarised([*STREAM, failed], prefix="[a] ") == (
        "[a] 💬 Running the tests", "[a] 🔧 Bash: pytest", "[a] ❌ error_max_turns: too long")
    lines = replay_lines([*STREAM, failed])
    assert lines[0].startswith("#1") and "⚙ init  model=m  tools=1" in lines[0]
    assert "[01:05]  ↳ error (exit 2): boom" in lines[4] and "· not json" in lines[3]
    assert lines[-1].endswith("❌ result: error_max_turns, 9 turns, $0.5000: too long")
    assert replay_lines(STREAM, start=2, limit=1)[0].startswith("#2")
    assert epoch_seconds("1970-01-01T01:00:00+01:00") == 0
    assert epoch_seconds("yesterday") is None
