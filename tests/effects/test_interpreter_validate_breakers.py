"""Layer 2: completeness ``validate`` and circuit breakers through the trio interpreter
and ``FakeEnv``, on trio's autojump mock clock.

The validation command is scripted to write its result file into the fake file system
(``MemoryFiles``), so the ``ReadFile`` effect is performed for real by the fake.  Circuit
breakers take their time from the events, so the mock clock drives them.
"""

from __future__ import annotations

import json
from typing import Any

import attrs
import trio

from prodigy_core import run_machine
from prodigy_core.context import RunContext
from prodigy_core.effects import LogEvent, ReadFile, RunCommand
from prodigy_core.model import (
    Backoff,
    CircuitBreakerSpec,
    OnIncomplete,
    RetrySpec,
    Step,
    ValidateSpec,
    Workflow,
)
from prodigy_effects.fake import FakeEnv, MemoryFiles, Scripted, command_text
from prodigy_effects.interpreter import interpret

CTX = RunContext(session_id="workflow-1", workflow_name="t", workflow_path="t.yml",
                 project_dir="/repo", repo_root="/repo")


def shell(command: str, **fields: Any) -> Step:
    return Step(kind="shell", command=command, **fields)


async def test_result_file_loop_through_the_fake_environment(autojump_clock: Any) -> None:
    files = MemoryFiles()
    done: list[str] = []

    def script(effect: RunCommand) -> Scripted:
        text = command_text(effect)
        if text == "check":
            assert dict(effect.env)["PRODIGY_VALIDATION"] == "true"
            pct = 100 if "fix x" in done else 60
            files.files["/repo/v.json"] = json.dumps({"completion_percentage": pct,
                                                      "missing": ["x"] if pct < 100 else []})
        done.append(text)
        return Scripted()

    env = attrs.evolve(FakeEnv(script), files=files)
    step = shell("work", validate=ValidateSpec(
        commands=(shell("check"),), result_file="v.json", threshold=90,
        on_incomplete=OnIncomplete(commands=(shell("fix ${validation.missing}"),))))
    result = await interpret(run_machine.start(Workflow(name="t", steps=(step,)), CTX),
                             run_machine.step, env, record=True)
    assert result.exit_code == 0
    assert done == ["work", "check", "fix x", "check"]
    reads = [e for e in result.trace if isinstance(e, ReadFile)]
    assert [(r.cwd, r.path) for r in reads] == [("/repo", "v.json")] * 2
    lines = env.console.lines  # type: ignore[attr-defined]
    assert "Validation incomplete: 60.0% complete (threshold: 90.0%)" in lines
    assert "Validation attempt 1/2: 100.0% complete" in lines
    completed = [e for e in result.trace if isinstance(e, LogEvent)
                 and e.event_type == "step_completed" and dict(e.fields).get("top_level")]
    assert dict(completed[0].fields)["status"] == "succeeded"
    checkpoint = env.store.checkpoints[-1]  # type: ignore[attr-defined]
    assert checkpoint["variable_state"]["validation.completion"] == 100.0


async def test_circuit_breaker_time_comes_from_the_fake_clock(autojump_clock: Any) -> None:
    """A breaker opened by two failures rejects until its recovery timeout has passed on
    the (mock) clock; the backoff ``Sleep`` is what lets that time pass."""
    env = FakeEnv({"exit 1": Scripted(exit_code=1, duration=0.5)})
    step = shell("exit 1", retry=RetrySpec(
        attempts=5, backoff=Backoff(kind="fixed"), initial_delay=10.0,
        circuit_breaker=CircuitBreakerSpec(name="api", failure_threshold=2,
                                           recovery_timeout=15.0)))
    start = trio.current_time()
    result = await interpret(run_machine.start(Workflow(name="t", steps=(step,)), CTX),
                             run_machine.step, env, record=True)
    assert result.exit_code == 1
    # t=0.5 fail, 10.5 → 11 fail (open at 11), 21 rejected, 31 half-open → 31.5 fail
    # (open again), 41.5 rejected
    assert trio.current_time() - start == 41.5
    assert len(env.commands.calls) == 3  # type: ignore[attr-defined]
    moved = [(e["from"], e["to"]) for e in env.journal.events  # type: ignore[attr-defined]
             if e["event_type"] == "circuit_breaker_state_changed"]
    assert moved == [("closed", "open"), ("open", "half_open"), ("half_open", "open")]
    assert result.outcome["error_code"] == "E3009"
