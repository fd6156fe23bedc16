"""Layer 2: the trio interpreter against ``FakeEnv``, on trio's autojump mock clock.

Assertions are on the exact sequence of effects the interpreter performed
(``RunResult.trace``) and on the fake clock: an hour-long timeout or a long retry
backoff advances ``trio.current_time()`` by exactly the expected amount while taking
no real time.
"""

from __future__ import annotations

import signal
from typing import Any

import attrs
import trio

from prodigy_core import run_machine
from prodigy_core.context import RunContext
from prodigy_core.effects import (
    Effect,
    Finish,
    LogEvent,
    RunCommand,
    Sleep,
)
from prodigy_core.events import CancelRequested, Event
from prodigy_core.model import Backoff, OnFailure, RetrySpec, Step, Workflow
from prodigy_effects.env import Env, OutputSink
from prodigy_effects.fake import FakeEnv, Scripted, ScriptedRunner
from prodigy_effects.interpreter import RunResult, interpret

CTX = RunContext(session_id="workflow-1", workflow_name="t", workflow_path="t.yml",
                 project_dir="/repo", repo_root="/repo")


def shell(command: str, **fields: Any) -> Step:
    return Step(kind="shell", command=command, **fields)


def workflow(*steps: Step) -> Workflow:
    return Workflow(name="t", steps=steps)


async def run(wf: Workflow, env: Env, *, ctx: RunContext = CTX, step: Any = None,
              handle_signals: bool = False) -> RunResult:
    return await interpret(run_machine.start(wf, ctx), step or run_machine.step, env,
                           record=True, handle_signals=handle_signals)


def kinds(trace: tuple[Effect, ...]) -> list[str]:
    out = []
    for effect in trace:
        name = type(effect).__name__
        if isinstance(effect, LogEvent):
            name = f"LogEvent:{effect.event_type}"
        out.append(name)
    return out


async def test_exact_effect_sequence_of_a_two_step_run(autojump_clock: Any) -> None:
    env = FakeEnv({"echo a": Scripted(stdout="a\n"), "echo b": Scripted(stdout="b\n")})
    result = await run(workflow(shell("echo a"), shell("echo b")), env)
    assert result.exit_code == 0
    assert kinds(result.trace) == [
        "SaveSession",
        "LogEvent:workflow_started",
        "Print",  # Executing workflow
        "Print",  # Executing step 1/2
        "LogEvent:step_started",
        "RunCommand",
        "Print",  # output tail
        "LogEvent:step_completed",
        "SaveCheckpoint",
        "Print",  # Executing step 2/2
        "LogEvent:step_started",
        "RunCommand",
        "Print",
        "LogEvent:step_completed",
        "SaveCheckpoint",
        "LogEvent:workflow_completed",
        "SaveCheckpoint",
        "SaveSession",
        "Print",  # Workflow completed successfully
        "Print",  # Summary
        "Finish",
    ]
    commands = [e for e in result.trace if isinstance(e, RunCommand)]
    assert [c.argv for c in commands] == [("sh", "-c", "echo a"), ("sh", "-c", "echo b")]
    assert [c.argv for c in env.commands.calls] == [c.argv for c in commands]  # type: ignore[attr-defined]
    # what the fake environment recorded agrees with the trace
    assert env.journal.types() == [  # type: ignore[attr-defined]
        "workflow_started", "step_started", "step_completed", "step_started",
        "step_completed", "workflow_completed"]
    saved = env.store.checkpoints  # type: ignore[attr-defined]
    assert [c["execution_state"]["current_step_index"] for c in saved] == [1, 2, 2]
    assert [c["execution_state"]["status"] for c in saved] == ["Running", "Running",
                                                               "Completed"]
    # each checkpoint is written after the journal records before it
    assert [c["last_event_seq"] for c in saved] == [3, 5, 6]
    assert env.store.sessions[-1]["status"] == "Completed"  # type: ignore[attr-defined]
    assert "Workflow completed successfully" in env.console.lines  # type: ignore[attr-defined]
    assert result.trace[-1] == Finish(outcome=result.outcome, exit_code=0)


async def test_failed_run_effect_sequence(autojump_clock: Any) -> None:
    env = FakeEnv({"exit 3": Scripted(exit_code=3, stderr="boom\n")})
    result = await run(workflow(shell("exit 3"), shell("echo never")), env)
    assert result.exit_code == 1
    tail = kinds(result.trace)[5:]
    assert tail == [
        "RunCommand", "Print", "Print", "Print",  # failed with exit code 3, header, stderr
        "LogEvent:step_failed", "LogEvent:workflow_failed", "SaveCheckpoint", "SaveSession", "Print", "Print", "Print", "Finish",
    ]
    assert "error[E3001]: Step 'shell: exit 3' failed with exit code 3" in env.console.lines  # type: ignore[attr-defined]
    assert env.store.checkpoints[-1]["execution_state"]["status"] == "Failed"  # type: ignore[attr-defined]
    assert [c.argv[-1] for c in env.commands.calls] == ["exit 3"]  # type: ignore[attr-defined]


async def test_hour_long_timeout_advances_the_fake_clock(autojump_clock: Any) -> None:
    env = FakeEnv({"sleep 7200": Scripted(hang=True)})
    start = trio.current_time()
    result = await run(workflow(shell("sleep 7200", timeout=3600.0, allow_failure=True),
                                shell("echo ${shell.exit_code}")), env)
    assert trio.current_time() - start == 3600.0
    assert result.exit_code == 0
    assert "  Step 'shell: sleep 7200' failed (allowed): Command timed out after 3600 seconds" \
        in env.console.lines  # type: ignore[attr-defined]
    assert [c.argv[-1] for c in env.commands.calls] == ["sleep 7200", "echo -1"]  # type: ignore[attr-defined]
    completed = [e for e in env.journal.events  # type: ignore[attr-defined]
                 if e["event_type"] == "step_completed"]
    assert completed[0]["status"] == "failed_allowed" and completed[0]["exit_code"] == -1
    assert completed[0]["duration_ms"] == 3_600_000


async def test_each_retry_attempt_gets_the_full_timeout(autojump_clock: Any) -> None:
    env = FakeEnv({"slow": Scripted(hang=True)})
    start = trio.current_time()
    result = await run(workflow(shell("slow", timeout=1800.0, retry=RetrySpec(
        attempts=2, initial_delay=60.0, max_delay=120.0))), env)
    assert result.exit_code == 1
    assert trio.current_time() - start == 1800.0 + 60.0 + 1800.0


async def test_retry_backoff_sleeps_advance_the_clock_exactly(autojump_clock: Any) -> None:
    started: list[float] = []
    t0 = trio.current_time()

    def script(effect: RunCommand) -> Scripted:
        started.append(trio.current_time() - t0)
        return Scripted(exit_code=1)

    env = FakeEnv(script)
    result = await run(workflow(shell("flaky", retry=RetrySpec(
        attempts=4, backoff=Backoff(kind="exponential"), initial_delay=1.0, max_delay=3.0))),
        env)
    assert result.exit_code == 1
    assert [e.seconds for e in result.trace if isinstance(e, Sleep)] == [1.0, 2.0, 3.0]
    assert started == [0.0, 1.0, 3.0, 6.0]
    assert trio.current_time() - t0 == 6.0
    assert kinds(result.trace)[5:9] == ["RunCommand", "Print", "LogEvent:step_retrying", "Sleep"]


async def test_retry_budget_uses_the_clock(autojump_clock: Any) -> None:
    env = FakeEnv({"x": Scripted(exit_code=1, duration=0.5)})
    t0 = trio.current_time()
    result = await run(workflow(shell("x", retry=RetrySpec(
        attempts=10, backoff=Backoff(kind="fixed"), initial_delay=1.0, retry_budget=3.0))), env)
    # runs at 0-0.5, 1.5-2.0 (2.0 + 1 s delay does not exceed 3 s), 3.0-3.5 (3.5 + 1 does)
    assert len(env.commands.calls) == 3  # type: ignore[attr-defined]
    assert trio.current_time() - t0 == 3.5
    assert "  Retry budget exhausted for 'shell: x'" in env.console.lines  # type: ignore[attr-defined]
    assert result.exit_code == 1


async def test_fix_loop_under_the_interpreter(autojump_clock: Any) -> None:
    env = FakeEnv({"test -f fixed": [Scripted(exit_code=1), Scripted(exit_code=0)]})
    result = await run(workflow(shell("test -f fixed", on_failure=OnFailure(
        commands=(shell("touch fixed"),), max_attempts=3))), env)
    assert result.exit_code == 0
    assert [c.argv[-1] for c in env.commands.calls] == [  # type: ignore[attr-defined]
        "test -f fixed", "touch fixed", "test -f fixed"]


def cancel_when_started(command: str, signal_name: str = "SIGINT") -> Any:
    """Wrap ``run_machine.step``: CancelRequested arrives as soon as ``command`` starts."""

    def step(state: Any, event: Event) -> run_machine.Transition:
        transition = run_machine.step(state, event)
        if any(isinstance(e, RunCommand) and e.argv[-1] == command
               for e in transition.effects):
            cancelled = run_machine.step(transition.state, CancelRequested(signal=signal_name))
            return run_machine.Transition(state=cancelled.state,
                                          effects=(*transition.effects, *cancelled.effects))
        return transition

    return step


async def test_hanging_command_and_cancel_request(autojump_clock: Any) -> None:
    env = FakeEnv({"sleep forever": Scripted(hang=True)})
    wf = workflow(shell("echo a"), shell("sleep forever"), shell("echo never"))
    t0 = trio.current_time()
    result = await run(wf, env, step=cancel_when_started("sleep forever"))
    assert result.exit_code == 130
    assert trio.current_time() == t0  # nothing waited for the hanging command
    names = kinds(result.trace)
    i = names.index("CancelCommands")
    assert names[i - 1] == "RunCommand"
    assert names[i + 1:] == ["LogEvent:workflow_interrupted", "SaveCheckpoint", "SaveSession",
                             "Print", "Print", "Finish"]
    checkpoint = env.store.checkpoints[-1]  # type: ignore[attr-defined]
    assert checkpoint["execution_state"]["status"] == "Interrupted"
    assert checkpoint["execution_state"]["current_step_index"] == 1
    assert [s["step_index"] for s in checkpoint["completed_steps"]] == [0]
    assert env.store.sessions[-1]["status"] == "Paused"  # type: ignore[attr-defined]
    assert [c.argv[-1] for c in env.commands.calls] == ["echo a", "sleep forever"]  # type: ignore[attr-defined]


async def test_cancel_during_backoff_sleep(autojump_clock: Any) -> None:
    env = FakeEnv({"x": Scripted(exit_code=1)})

    def step(state: Any, event: Event) -> run_machine.Transition:
        transition = run_machine.step(state, event)
        if any(isinstance(e, Sleep) for e in transition.effects):
            cancelled = run_machine.step(transition.state, CancelRequested(signal="SIGTERM"))
            return run_machine.Transition(state=cancelled.state,
                                          effects=(*transition.effects, *cancelled.effects))
        return transition

    t0 = trio.current_time()
    result = await run(workflow(shell("x", retry=RetrySpec(attempts=3, initial_delay=3600.0))),
                       env, step=step)
    assert result.exit_code == 143
    assert trio.current_time() == t0  # the hour-long backoff was cut short
    assert len(env.commands.calls) == 1  # type: ignore[attr-defined]
    assert env.store.checkpoints[-1]["execution_state"]["status"] == "Interrupted"  # type: ignore[attr-defined]


@attrs.define
class SignalAfter:
    """A command runner that raises a real signal ``after`` seconds into ``command``."""

    inner: ScriptedRunner
    command: str
    signum: int
    after: float

    async def run(self, effect: RunCommand, cancel: trio.Event, on_output: OutputSink) -> Any:
        if effect.argv[-1] == self.command:
            await trio.sleep(self.after)
            # only raise it when trio's receiver is installed (never hit pytest itself)
            assert signal.getsignal(self.signum) not in (signal.SIG_DFL,
                                                         signal.default_int_handler)
            signal.raise_signal(self.signum)
        return await self.inner.run(effect, cancel, on_output)


async def test_real_signal_cancels_a_hanging_command(autojump_clock: Any) -> None:
    base = FakeEnv({"sleep forever": Scripted(hang=True)})
    runner = SignalAfter(inner=base.commands, command="sleep forever",  # type: ignore[arg-type]
                         signum=signal.SIGINT, after=10.0)
    env = attrs.evolve(base, commands=runner)
    t0 = trio.current_time()
    result = await run(workflow(shell("sleep forever"), shell("echo never")), env,
                       handle_signals=True)
    assert result.exit_code == 130
    assert trio.current_time() - t0 == 10.0
    assert "CancelCommands" in kinds(result.trace)
    assert env.journal.types()[-1] == "workflow_interrupted"  # type: ignore[attr-defined]
    assert env.store.checkpoints[-1]["execution_state"]["status"] == "Interrupted"  # type: ignore[attr-defined]
    assert [c.argv[-1] for c in base.commands.calls] == ["sleep forever"]  # type: ignore[attr-defined]


async def test_checkpoint_is_saved_before_the_next_command_starts(autojump_clock: Any) -> None:
    seen: list[int] = []
    env_box: list[Env] = []

    def script(effect: RunCommand) -> Scripted:
        seen.append(len(env_box[0].store.checkpoints))  # type: ignore[attr-defined]
        return Scripted()

    env = FakeEnv(script)
    env_box.append(env)
    await run(workflow(shell("a"), shell("b"), shell("c")), env)
    assert seen == [0, 1, 2]


async def test_trace_is_only_recorded_on_request(autojump_clock: Any) -> None:
    env = FakeEnv()
    result = await interpret(run_machine.start(workflow(shell("a")), CTX), run_machine.step, env)
    assert result.trace == () and result.exit_code == 0
    assert isinstance(result.state, run_machine.RunState) and result.state.status == "completed"

