"""Claude invocation and stream handling, pure parts (spec 07 §1, §2, §4–§6)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prodigy_core.claude_config import (
    ClaudeSettings,
    SettingsError,
    invocation,
    resolve_settings,
)
from prodigy_core.claude_stream import ClaudeCall, classify, conclude, fold


def test_argv_as_non_root_is_exact() -> None:
    inv = invocation(ClaudeSettings(), "/lint src", model=None, is_root=False)
    assert inv.argv == ("claude", "-p", "/lint src", "--output-format", "stream-json",
                        "--verbose", "--dangerously-skip-permissions")
    assert inv.stdin is None


def test_argv_as_root_uses_the_root_safe_default() -> None:
    inv = invocation(ClaudeSettings(), "/x", model=None, is_root=True)
    assert inv.argv[-4:] == ("--permission-mode", "acceptEdits", "--allowedTools",
                             "Bash,Edit,Write,Read,Glob,Grep,NotebookEdit")


def test_environment_beats_workflow_and_model_goes_before_permissions() -> None:
    s = resolve_settings(environ={"PRODIGY_CLAUDE_PERMISSION_ARGS": "--permission-mode acceptEdits"},
                         workflow={"permission_args": ["--x"], "model": "sonnet"})
    assert s.permission_args == ("--permission-mode", "acceptEdits")
    inv = invocation(s, "/y", model="haiku", is_root=True)
    i = inv.argv.index("--model")
    assert inv.argv[i + 1] == "haiku" and inv.argv.index("--permission-mode") > i


def test_long_or_dash_prompts_go_on_stdin() -> None:
    big = "x" * 300_000
    inv = invocation(ClaudeSettings(), big, model=None, is_root=False)
    assert big not in inv.argv and inv.stdin == big
    dash = invocation(ClaudeSettings(), "-not-an-option", model=None, is_root=False)
    assert dash.stdin == "-not-an-option" and "-not-an-option" not in dash.argv


def test_bad_settings_name_their_source() -> None:
    with pytest.raises(SettingsError, match="PRODIGY_CLAUDE_IDLE_TIMEOUT"):
        resolve_settings(environ={"PRODIGY_CLAUDE_IDLE_TIMEOUT": "soon"})


def lines(*messages: dict) -> list[str]:
    return [json.dumps(m) for m in messages]


INIT = {"type": "system", "subtype": "init", "session_id": "s-1", "model": "m", "tools": ["Bash"]}
TEXT = {"type": "assistant", "message": {"content": [{"type": "text", "text": "thinking"}]}}
TOOL = {"type": "assistant", "message": {"content": [
    {"type": "tool_use", "id": "t1", "name": "Bash", "input": {"command": "echo hi > x"}}]}}
TOOL_ERR = {"type": "user", "message": {"content": [
    {"type": "tool_result", "tool_use_id": "t1", "is_error": True}]}}
RESULT = {"type": "result", "subtype": "success", "is_error": False, "result": "All good",
          "total_cost_usd": 0.01, "num_turns": 2, "session_id": "s-1",
          "usage": {"input_tokens": 5, "output_tokens": 7}}


def run(*messages: dict) -> tuple[ClaudeCall, list[str]]:
    call = ClaudeCall()
    kinds: list[str] = []
    for line in lines(*messages):
        call, notices = fold(call, line)
        kinds += [n.kind for n in notices]
    return call, kinds


def test_a_successful_stream() -> None:
    call, kinds = run(INIT, TEXT, TOOL, TOOL_ERR, RESULT)
    assert kinds == ["session_started", "assistant_text", "tool_invoked", "tool_result", "result"]
    assert call.session_id == "s-1" and call.cost_usd == 0.01
    assert dict(call.tool_uses) == {"Bash": 1} and dict(call.tool_errors) == {"Bash": 1}
    outcome = conclude(call, exit_code=0, stderr="", prompt="/x", transcript="t.jsonl")
    assert outcome.passed and outcome.output == "All good"


@pytest.mark.parametrize(("messages", "exit_code", "code"), [
    ((INIT, {**RESULT, "is_error": True, "subtype": "error_during_execution"}), 0, "E7003"),
    ((), 0, "E7004"),
    ((INIT,), 2, "E7002"),
])
def test_failures(messages: tuple[dict, ...], exit_code: int, code: str) -> None:
    call, _ = run(*messages)
    outcome = conclude(call, exit_code=exit_code, stderr="boom", prompt="/fix it",
                       transcript="/t/x.jsonl")
    assert not outcome.passed and outcome.error_code == code
    assert outcome.message is not None and "Transcript: /t/x.jsonl" in outcome.message
    if code == "E7002":
        assert "Claude command '/fix it' failed with exit code 2" in outcome.message


def test_idle_watchdog_and_missing_cli() -> None:
    idle = conclude(ClaudeCall(), exit_code=-1, stderr="", prompt="p", transcript="t",
                    idle_timeout=2)
    assert idle.error_code == "E7005" and "no output for 2 seconds" in (idle.message or "")
    missing = conclude(ClaudeCall(), exit_code=-1, stderr="", prompt="p", transcript="t",
                       not_started="No such file", executable="/nope/claude")
    assert missing.error_code == "E7001" and "/nope/claude" in (missing.message or "")


def test_classification() -> None:
    assert "rate_limit" in classify("429 Too Many Requests", 429)
    assert "server_error" in classify("Overloaded", 529)
    assert "network" in classify("connect ECONNREFUSED 127.0.0.1", None)
    assert classify("invalid api key", 401) == ()


@settings(max_examples=80, deadline=None)
@given(st.lists(st.one_of(st.text(), st.builds(json.dumps, st.dictionaries(
    st.sampled_from(["type", "subtype", "message", "result", "is_error"]),
    st.one_of(st.text(), st.booleans(), st.none(), st.integers()))))))
def test_any_line_sequence_is_folded_without_error(raw: list[str]) -> None:
    call = ClaudeCall()
    for line in raw:
        call, _ = fold(call, line)
    assert call.lines == len(raw)
    conclude(call, exit_code=0, stderr="", prompt="p", transcript="t")
