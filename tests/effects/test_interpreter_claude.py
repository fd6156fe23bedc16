"""Claude steps and Claude handlers through the interpreter with FakeEnv's scripted Claude."""

from __future__ import annotations

import json
from typing import Any

from prodigy_core import run_machine
from prodigy_core.context import RunContext
from prodigy_core.effects import LogEvent, RunClaude
from prodigy_core.model import OnFailure, Step, Workflow
from prodigy_effects.fake import ClaudeScript, FakeEnv, Scripted, ScriptedClaude
from prodigy_effects.interpreter import RunResult, interpret

CTX = RunContext(session_id="workflow-1", workflow_name="t", workflow_path="t.yml",
                 project_dir="/repo", repo_root="/repo", is_root=True)


def result_line(text: str, *, is_error: bool = False, cost: float = 0.25) -> str:
    return json.dumps({"type": "result", "subtype": "success", "is_error": is_error,
                       "result": text, "total_cost_usd": cost, "num_turns": 2,
                       "session_id": "sess-1",
                       "usage": {"input_tokens": 100, "output_tokens": 20}})


TOOL = json.dumps({"type": "assistant", "message": {"content": [
    {"type": "tool_use", "id": "t1", "name": "Edit", "input": {"file_path": "a.py"}}]}})


def answer(text: str, **kw: Any) -> ClaudeScript:
    return ClaudeScript(lines=(TOOL, result_line(text, **kw)))


async def run(steps: tuple[Step, ...], claude: ScriptedClaude,
              shell: dict[str, Any] | None = None) -> tuple[RunResult, Any]:
    env = FakeEnv(shell or {}, claude=claude)
    result = await interpret(run_machine.start(Workflow(name="t", steps=steps), CTX),
                             run_machine.step, env, record=True)
    return result, env


def prompts(result: RunResult) -> list[str]:
    return [e.argv[2] for e in result.trace if isinstance(e, RunClaude)]


async def test_claude_step_output_variables_and_usage(autojump_clock: Any) -> None:
    claude = ScriptedClaude(script={"/review": answer("looks fine")})
    steps = (Step(kind="claude", command="/review", capture="r"),
             Step(kind="shell", command="echo ${r} ${claude.cost_usd} ${claude.session_id}"))
    result, env = await run(steps, claude)
    assert result.exit_code == 0
    assert env.commands.calls[0].argv[-1] == "echo 'looks fine' 0.25 sess-1"
    assert result.outcome["cost_usd"] == 0.25
    types = [e.event_type for e in result.trace if isinstance(e, LogEvent)]
    assert "claude_tool_invoked" in types and "claude_call_completed" in types
    session = env.store.sessions[-1]
    assert session["analytics"]["tool_uses"] == {"Edit": 1}
    assert session["analytics"]["input_tokens"] == 100


async def test_claude_handlers_in_every_form(autojump_clock: Any) -> None:
    claude = ScriptedClaude(script={
        "/fix 4 shell: exit 4": answer("fixed"),
        "/two": answer("handled two"),
        "/after": answer("after"),
    })
    steps = (
        Step(kind="shell", command="exit 4",
             on_failure=OnFailure(commands=(Step(kind="claude",
                                                 command="/fix ${error.exit_code} ${error.step}"),))),
        Step(kind="shell", command="exit 2",
             on_exit_code=((2, Step(kind="claude", command="/two")),)),
        Step(kind="shell", command="true", on_success=Step(kind="claude", command="/after")),
    )
    shell = {"exit 4": Scripted(exit_code=4), "exit 2": Scripted(exit_code=2)}
    result, _ = await run(steps, claude, shell)
    assert result.exit_code == 0, result.outcome
    assert prompts(result) == ["/fix 4 shell: exit 4", "/two", "/after"]


async def test_fix_loop_with_a_failing_claude_handler_stops(autojump_clock: Any) -> None:
    claude = ScriptedClaude(script={"/fix": answer("could not", is_error=True)})
    steps = (Step(kind="shell", command="make",
                  on_failure=OnFailure(commands=(Step(kind="claude", command="/fix"),),
                                       max_attempts=3)),)
    result, env = await run(steps, claude, {"make": Scripted(exit_code=1)})
    assert result.exit_code == 1
    assert len(env.commands.calls) == 1 and prompts(result) == ["/fix"]


async def test_claude_failure_codes_reach_the_error_variables(autojump_clock: Any) -> None:
    claude = ScriptedClaude(script={"/x": ClaudeScript(lines=(), exit_code=0)})
    steps = (Step(kind="claude", command="/x",
                  on_failure=OnFailure(commands=(Step(kind="shell",
                                                      command="echo ${error.type}"),))),)
    result, env = await run(steps, claude)
    assert result.exit_code == 0  # recovered by the handler
    assert env.commands.calls[0].argv[-1] == "echo claude_error"
