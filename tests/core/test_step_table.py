"""Layer 1: table-driven tests of the run and step machines, without the interpreter.

Every test builds a ``Workflow`` from model objects, calls ``run_machine.start`` (or
``resume``) and feeds events by hand through ``Driver``; the assertions are on the
effects the machine returned.  The cases follow spec 02 §16 and spec 10 §9 (numbers in
the case ids); where an example needs a Claude step (10 #13) a shell handler stands in,
since only the handler's count matters there.
"""

from __future__ import annotations

import json
from typing import Any

import attrs
import pytest

from prodigy_core import run_machine
from prodigy_core.context import InputSpec
from prodigy_core.effects import (
    CancelCommands,
    Finish,
    LogEvent,
    Print,
    ReadGitHead,
    RunCommand,
    SaveCheckpoint,
    SaveSession,
    Sleep,
)
from prodigy_core.events import CancelRequested, CommandFinished, GitHeadRead, Slept
from prodigy_core.model import Backoff, OnFailure, RetryMatcher, RetrySpec, Step, Workflow
from prodigy_core.problems import InvalidTransition
from tests.core._machine_driver import Driver, R, make_ctx, shell


def wf(*steps: Step) -> Workflow:
    return Workflow(name="t", steps=steps)


def drive(*steps: Step, **ctx: Any) -> Driver:
    return Driver(run_machine.start(wf(*steps), make_ctx(**ctx)))


def handlers(*commands: str, **options: Any) -> OnFailure:
    return OnFailure(commands=tuple(shell(c) for c in commands), **options)


def fixed(attempts: int, delay: float = 0.0, **more: Any) -> RetrySpec:
    return RetrySpec(attempts=attempts, backoff=Backoff(kind="fixed"), initial_delay=delay,
                     **more)


FAIL = R(exit_code=1)


# --- the table ---------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class Case:
    id: str
    steps: tuple[Step, ...]
    script: dict[str, Any] = attrs.field(factory=dict)
    exit_code: int = 0
    commands: tuple[str, ...] | None = None
    statuses: tuple[str, ...] | None = None
    sleeps: tuple[float, ...] | None = None
    printed: tuple[str, ...] = ()
    not_printed: tuple[str, ...] = ()
    error_code: str | None = None
    ctx: tuple[tuple[str, Any], ...] = ()


CASES = [
    Case(id="success", steps=(shell("echo a"), shell("echo b")),
         commands=("echo a", "echo b"), statuses=("succeeded", "succeeded"),
         printed=("Executing step 1/2: shell: echo a", "Executing step 2/2: shell: echo b",
                  "Workflow completed successfully")),
    Case(id="02#1 exit 3 fails the run", steps=(shell("exit 3"),), script={"exit 3": R(exit_code=3)},
         exit_code=1, commands=("exit 3",), statuses=("failed",), error_code="E3001",
         printed=("Step 'shell: exit 3' failed with exit code 3", "Workflow failed")),
    Case(id="02#2 allow_failure continues",
         steps=(shell("exit 3", allow_failure=True), shell("echo after")),
         script={"exit 3": R(exit_code=3)}, commands=("exit 3", "echo after"),
         statuses=("failed_allowed", "succeeded"),
         printed=("Step 'shell: exit 3' failed (allowed)",)),
    Case(id="02#4 timeout", steps=(shell("sleep 30", timeout=1.0),),
         script={"sleep 30": R(timed_out=True, duration=1.0)}, exit_code=1,
         statuses=("failed",), error_code="E3002",
         printed=("error[E3002]: Command timed out after 1 seconds",)),
    Case(id="02#5 capture json path",
         steps=(shell("echo '{\"a\":{\"b\":[7]}}'", capture="j", capture_format="json"),
                shell("echo ${j.a.b[0]}")),
         script={"echo '{\"a\":{\"b\":[7]}}'": R(stdout='{"a":{"b":[7]}}\n')},
         commands=("echo '{\"a\":{\"b\":[7]}}'", "echo 7")),
    Case(id="02#6 capture number renders 10",
         steps=(shell("echo 10", capture="n", capture_format="number"), shell("echo ${n}")),
         script={"echo 10": R(stdout="10\n")}, commands=("echo 10", "echo 10")),
    Case(id="02#7 invalid json is E3006",
         steps=(shell("echo not-json", capture="j", capture_format="json"), shell("echo next")),
         script={"echo not-json": R(stdout="not-json\n")}, exit_code=1,
         commands=("echo not-json",), statuses=("failed",), error_code="E3006",
         printed=("captured output is not valid JSON",)),
    Case(id="02#10 when undefined is skipped",
         steps=(shell("echo x", when="${undefined_var}"), shell("echo y")),
         commands=("echo y",), statuses=("skipped", "succeeded"),
         printed=("Skipped: when condition is false",)),
    Case(id="when false is skipped", steps=(shell("echo x", when=False),),
         commands=(), statuses=("skipped",)),
    Case(id="when true runs", steps=(shell("echo x", capture="v"), shell("echo y", when="${v} == 'x'")),
         script={"echo x": R(stdout="x\n")}, commands=("echo x", "echo y")),
    Case(id="02#16 failing on_success fails the step, on_failure does not run",
         steps=(shell("true", on_success=shell("exit 1"), on_failure=handlers("echo fix")),
                shell("echo next")),
         script={"exit 1": FAIL}, exit_code=1, commands=("true", "exit 1"),
         statuses=("failed",)),
    Case(id="10#1 executed exactly 3 times",
         steps=(shell("exit 1", retry=fixed(3)),), script={"exit 1": FAIL}, exit_code=1,
         commands=("exit 1",) * 3, sleeps=(0.0, 0.0), statuses=("failed",),
         printed=("Failed 'shell: exit 1' after 3 attempts",)),
    Case(id="10#2 passes on the 3rd execution",
         steps=(shell("flaky", retry=RetrySpec(attempts=3, initial_delay=0)),),
         script={"flaky": [FAIL, FAIL, R()]}, commands=("flaky",) * 3,
         statuses=("succeeded",), printed=("'shell: flaky' succeeded after 3 attempts",
                                           "Retrying shell: flaky (attempt 2/3) after 0s")),
    Case(id="10#3 exponential capped",
         steps=(shell("exit 1", retry=RetrySpec(attempts=4, backoff=Backoff(kind="exponential"),
                                                initial_delay=1.0, max_delay=3.0)),),
         script={"exit 1": FAIL}, exit_code=1, commands=("exit 1",) * 4,
         sleeps=(1.0, 2.0, 3.0)),
    Case(id="10#4 fibonacci",
         steps=(shell("exit 1", retry=RetrySpec(attempts=5, backoff=Backoff(kind="fibonacci",
                                                                            initial=1.0))),),
         script={"exit 1": FAIL}, exit_code=1, commands=("exit 1",) * 5,
         sleeps=(1.0, 1.0, 2.0, 3.0)),
    Case(id="linear and custom backoff",
         steps=(shell("a", retry=RetrySpec(attempts=4, backoff=Backoff(kind="linear",
                                                                       increment=2.0),
                                           initial_delay=1.0, max_delay=60),
                      allow_failure=True),
                shell("b", retry=RetrySpec(attempts=4, backoff=Backoff(
                    kind="custom", delays=(5.0, 7.0)), max_delay=9.0))),
         script={"a": FAIL, "b": FAIL}, exit_code=1, sleeps=(1.0, 3.0, 5.0, 5.0, 7.0, 9.0)),
    Case(id="10#5 retry_on exit_code does not match",
         steps=(shell("exit 1", retry=RetrySpec(attempts=3, initial_delay=0, retry_on=(
             RetryMatcher(kind="exit_code", exit_codes=(75,)),))),),
         script={"exit 1": FAIL}, exit_code=1, commands=("exit 1",), sleeps=()),
    Case(id="retry_on exit_code matches",
         steps=(shell("exit 75", retry=RetrySpec(attempts=2, initial_delay=0, retry_on=(
             RetryMatcher(kind="exit_code", exit_codes=(75,)),))),),
         script={"exit 75": R(exit_code=75)}, exit_code=1, commands=("exit 75",) * 2),
    Case(id="10#6 retry_on timeout",
         steps=(shell("sleep 5", timeout=1.0, retry=RetrySpec(
             attempts=2, initial_delay=0, retry_on=(RetryMatcher(kind="timeout"),))),),
         script={"sleep 5": R(timed_out=True, duration=1.0)}, exit_code=1,
         commands=("sleep 5",) * 2, error_code="E3002"),
    Case(id="retry_on pattern is case-sensitive",
         steps=(shell("net", retry=RetrySpec(attempts=3, initial_delay=0, retry_on=(
             RetryMatcher(kind="pattern", pattern="Flaky"),))),),
         script={"net": R(exit_code=1, stderr="flaky")}, exit_code=1, commands=("net",)),
    Case(id="retry_on network matches the error text",
         steps=(shell("net", retry=RetrySpec(attempts=2, initial_delay=0, retry_on=(
             RetryMatcher(kind="network"),))),),
         script={"net": R(exit_code=7, stderr="Connection REFUSED")}, exit_code=1,
         commands=("net", "net")),
    Case(id="10#7 retry budget",
         steps=(shell("exit 1", retry=fixed(10, 1.0, retry_budget=2.0)),),
         script={"exit 1": FAIL}, exit_code=1, commands=("exit 1",) * 3, sleeps=(1.0, 1.0),
         printed=("Retry budget exhausted",)),
    Case(id="10#8 retry fallback",
         steps=(shell("exit 1", retry=RetrySpec(attempts=2, initial_delay=0, exhausted="fallback",
                                                fallback_command="echo fallback")),),
         script={"exit 1": FAIL, "echo fallback": R(stdout="fallback\n")},
         commands=("exit 1", "exit 1", "echo fallback"), statuses=("recovered",)),
    Case(id="retry fallback failing fails the step",
         steps=(shell("exit 1", retry=RetrySpec(attempts=1, exhausted="fallback",
                                                fallback_command="shell: fb")),),
         script={"exit 1": FAIL, "fb": FAIL}, exit_code=1, commands=("exit 1", "fb"),
         statuses=("failed",)),
    Case(id="retry on_failure continue",
         steps=(shell("exit 1", retry=fixed(2, exhausted="continue"),
                      on_failure=handlers("echo h", strategy="cleanup")), shell("echo next")),
         script={"exit 1": FAIL}, commands=("exit 1", "exit 1", "echo h", "echo next"),
         statuses=("failed_allowed", "succeeded")),
    Case(id="10#9 on_failure recovers",
         steps=(shell("exit 1", on_failure=handlers("echo cleaned")), shell("echo next")),
         script={"exit 1": FAIL}, commands=("exit 1", "echo cleaned", "echo next"),
         statuses=("recovered", "succeeded")),
    Case(id="10#10 fail_workflow true",
         steps=(shell("exit 1", on_failure=handlers("echo x", fail_workflow=True)),
                shell("echo next")),
         script={"exit 1": FAIL}, exit_code=1, commands=("exit 1", "echo x"),
         statuses=("failed",)),
    Case(id="10#11 cleanup fails the workflow",
         steps=(shell("exit 1", on_failure=handlers("echo c", strategy="cleanup")),
                shell("echo next")),
         script={"exit 1": FAIL}, exit_code=1, commands=("exit 1", "echo c"),
         statuses=("failed",)),
    Case(id="cleanup with fail_workflow false is allowed",
         steps=(shell("exit 1", on_failure=handlers("echo c", strategy="cleanup",
                                                    fail_workflow=False)), shell("echo next")),
         script={"exit 1": FAIL}, commands=("exit 1", "echo c", "echo next"),
         statuses=("failed_allowed", "succeeded")),
    Case(id="recovery handler failing fails the step",
         steps=(shell("exit 1", on_failure=handlers("h1", "h2")), shell("echo next")),
         script={"exit 1": FAIL, "h1": FAIL}, exit_code=1, commands=("exit 1", "h1"),
         statuses=("failed",)),
    Case(id="allowed handler failure does not stop the sequence",
         steps=(shell("exit 1", on_failure=OnFailure(commands=(
             shell("h1", allow_failure=True), shell("h2")))),),
         script={"exit 1": FAIL, "h1": FAIL}, commands=("exit 1", "h1", "h2"),
         statuses=("recovered",)),
    Case(id="on_failure true allows without handlers",
         steps=(shell("exit 1", on_failure=OnFailure(allow=True)), shell("echo next")),
         script={"exit 1": FAIL}, commands=("exit 1", "echo next"),
         statuses=("failed_allowed", "succeeded")),
    Case(id="on_failure false fails", steps=(shell("exit 1", on_failure=OnFailure()),),
         script={"exit 1": FAIL}, exit_code=1, commands=("exit 1",), statuses=("failed",)),
    Case(id="10#12 fix loop recovers",
         steps=(shell("test -f fixed", on_failure=handlers("touch fixed", max_attempts=3)),),
         script={"test -f fixed": [FAIL, R()]},
         commands=("test -f fixed", "touch fixed", "test -f fixed"), statuses=("recovered",),
         printed=("Attempt 1/3 failed; running on_failure handler",)),
    Case(id="10#13 exhausted fix loop fails",
         steps=(shell("exit 1", on_failure=handlers("fix", max_attempts=3)),
                shell("echo next")),
         script={"exit 1": FAIL}, exit_code=1,
         commands=("exit 1", "fix", "exit 1", "fix", "exit 1"), statuses=("failed",),
         printed=("Step 'shell: exit 1' still failing after 3 attempts",)),
    Case(id="10#14 exhausted fix loop with fail_workflow false",
         steps=(shell("exit 1", on_failure=handlers("fix", max_attempts=3,
                                                    fail_workflow=False)),
                shell("echo next")),
         script={"exit 1": FAIL},
         commands=("exit 1", "fix", "exit 1", "fix", "exit 1", "echo next"),
         statuses=("failed_allowed", "succeeded")),
    Case(id="fix loop stops when the handler fails",
         steps=(shell("exit 1", on_failure=handlers("fix", max_attempts=4)),),
         script={"exit 1": FAIL, "fix": FAIL}, exit_code=1, commands=("exit 1", "fix"),
         statuses=("failed",)),
    Case(id="fix loop re-runs use the step retry",
         steps=(shell("exit 1", retry=fixed(2), on_failure=handlers("fix", max_attempts=2)),),
         script={"exit 1": FAIL}, exit_code=1,
         commands=("exit 1", "exit 1", "fix", "exit 1", "exit 1"), sleeps=(0.0, 0.0)),
    Case(id="10#15 handler_failure_fatal",
         steps=(shell("exit 1", on_failure=handlers("exit 1", "echo after",
                                                    handler_failure_fatal=True,
                                                    fail_workflow=False)),
                shell("echo next")),
         script={"exit 1": FAIL}, exit_code=1, commands=("exit 1", "exit 1"),
         statuses=("failed",), error_code="E3007", not_printed=("echo after",)),
    Case(id="10#16 error variables in the handler",
         steps=(shell("exit 4", on_failure=handlers("echo '${error.exit_code} ${error.step}'")),),
         script={"exit 4": R(exit_code=4)},
         commands=("exit 4", "echo '4 shell: exit 4'"), statuses=("recovered",)),
    Case(id="10#17 on_exit_code instead of on_failure",
         steps=(shell("exit 2", on_exit_code=((2, shell("echo two")),),
                      on_failure=handlers("echo no")),),
         script={"exit 2": R(exit_code=2)}, commands=("exit 2", "echo two"),
         statuses=("recovered",)),
    Case(id="on_exit_code without a matching entry uses on_failure",
         steps=(shell("exit 3", on_exit_code=((2, shell("echo two")),),
                      on_failure=handlers("echo h")),),
         script={"exit 3": R(exit_code=3)}, commands=("exit 3", "echo h"),
         statuses=("recovered",)),
    Case(id="on_exit_code 0 replaces on_success",
         steps=(shell("ok", on_exit_code=((0, shell("echo zero")),),
                      on_success=shell("echo success")),),
         commands=("ok", "echo zero"), statuses=("succeeded",)),
    Case(id="failing on_exit_code handler fails the step",
         steps=(shell("exit 2", on_exit_code=((2, shell("bad")),),
                      on_failure=handlers("echo no")),),
         script={"exit 2": R(exit_code=2), "bad": FAIL}, exit_code=1,
         commands=("exit 2", "bad"), statuses=("failed",)),
    Case(id="10#19 retry_defaults",
         steps=(shell("exit 1"),), script={"exit 1": FAIL}, exit_code=1,
         commands=("exit 1",) * 2, ctx=(("retry_defaults", RetrySpec(attempts=2,
                                                                     initial_delay=0)),)),
    Case(id="10#20 retry attempts 1 overrides retry_defaults",
         steps=(shell("exit 1", retry=RetrySpec(attempts=1)),), script={"exit 1": FAIL},
         exit_code=1, commands=("exit 1",),
         ctx=(("retry_defaults", RetrySpec(attempts=2, initial_delay=0)),)),
    Case(id="retry_defaults apply to handler steps",
         steps=(shell("exit 1", retry=RetrySpec(attempts=1), on_failure=handlers("h")),),
         script={"exit 1": FAIL, "h": [FAIL, R()]}, commands=("exit 1", "h", "h"),
         statuses=("recovered",),
         ctx=(("retry_defaults", RetrySpec(attempts=2, initial_delay=0)),)),
    Case(id="strict vars E2001", steps=(shell("echo ${nope}"),), exit_code=1, commands=(),
         statuses=("failed",), error_code="E2001", ctx=(("strict_vars", True),),
         printed=("unresolved variable in step 'shell: echo ${nope}'",)),
    Case(id="non-strict leaves unresolved text", steps=(shell("echo ${nope}"),),
         commands=("echo ${nope}",)),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_step_table(case: Case) -> None:
    d = drive(*case.steps, **dict(case.ctx))
    finish = d.run(case.script)
    assert finish.exit_code == case.exit_code, d.printed
    assert d.effects[-1] is finish
    if case.commands is not None:
        assert tuple(d.commands) == case.commands
    if case.statuses is not None:
        assert tuple(d.statuses) == case.statuses
    if case.sleeps is not None:
        assert tuple(d.sleeps) == case.sleeps
    for text in case.printed:
        assert text in d.printed
    for text in case.not_printed:
        assert text not in d.commands
    if case.error_code is not None:
        assert finish.outcome["error_code"] == case.error_code  # type: ignore[index]
    assert_checkpoint_discipline(d)
    final = d.checkpoints[-1]["execution_state"]["status"]
    assert final == ("Completed" if case.exit_code == 0 else "Failed")


def assert_checkpoint_discipline(d: Driver) -> None:
    """Each finished top-level step: its log record, then at once the checkpoint."""
    effects = d.effects
    for i, effect in enumerate(effects):
        if isinstance(effect, LogEvent) and dict(effect.fields).get("top_level") is True:
            if dict(effect.fields)["status"] == "failed":
                rest = effects[i + 1:]
                kinds = [type(e) for e in rest]
                assert RunCommand not in kinds
                assert SaveCheckpoint in kinds and kinds[-1] is Finish
            else:
                assert isinstance(effects[i + 1], SaveCheckpoint), effects[i:i + 3]
    # a checkpoint always precedes the next step's command
    last_kind: type | None = None
    for effect in effects:
        if isinstance(effect, LogEvent) and dict(effect.fields).get("top_level") is True:
            last_kind = LogEvent
        elif isinstance(effect, SaveCheckpoint):
            last_kind = SaveCheckpoint
        elif isinstance(effect, RunCommand):
            assert last_kind is not LogEvent


# --- exact effect sequences ---------------------------------------------------------------


def test_two_step_success_effect_sequence() -> None:
    d = drive(shell("echo a"), shell("echo b"))
    start = [type(e) for e in d.effects]
    assert start == [SaveSession, LogEvent, Print, Print, LogEvent, RunCommand]
    first = d.pending(RunCommand)
    assert first.argv == ("sh", "-c", "echo a")
    assert first.cwd == "/repo" and first.timeout is None
    env = dict(first.env)
    assert env["PRODIGY_AUTOMATION"] == "true" and env["PRODIGY_ATTEMPT"] == "1"
    assert env["PRODIGY_SESSION_ID"] == "workflow-1"
    out = d.finish_command(0, "a\n")
    assert [type(e) for e in out] == [Print, LogEvent, SaveCheckpoint, Print, LogEvent,
                                      RunCommand]
    assert out[1].event_type == "step_completed"  # type: ignore[union-attr]
    checkpoint = out[2].checkpoint  # type: ignore[union-attr]
    assert checkpoint["execution_state"]["current_step_index"] == 1
    assert checkpoint["execution_state"]["status"] == "Running"
    assert [s["step_index"] for s in checkpoint["completed_steps"]] == [0]
    assert checkpoint["completed_steps"][0]["output"] == "a\n"
    assert out[5].argv == ("sh", "-c", "echo b")  # type: ignore[union-attr]
    out = d.finish_command(0, "")
    assert [type(e) for e in out] == [LogEvent, SaveCheckpoint, LogEvent, SaveCheckpoint,
                                      SaveSession, Print, Print, Finish]
    assert out[6].text.startswith("Summary\n")  # type: ignore[union-attr]
    assert out[2].event_type == "workflow_completed"  # type: ignore[union-attr]
    assert out[4].session["status"] == "Completed"  # type: ignore[union-attr]
    assert d.finish.exit_code == 0
    assert d.finish.outcome["steps"] == {"total": 2, "succeeded": 2, "failed": 0,  # type: ignore[index]
                                         "skipped": 0}
    assert d.outstanding == {}


def test_failure_effects_and_session_status() -> None:
    d = drive(shell("exit 3"), shell("echo never"))
    out = d.finish_command(3, "", "boom\n")
    kinds = [type(e) for e in out]
    assert kinds[-7:] == [LogEvent, SaveCheckpoint, SaveSession, Print, Print, Print, Finish]
    failed = [e for e in out if isinstance(e, LogEvent) and e.event_type == "step_failed"]
    assert dict(failed[0].fields)["error_code"] == "E3001"
    texts = [e.text for e in out if isinstance(e, Print)]
    assert "error[E3001]: Step 'shell: exit 3' failed with exit code 3" in texts
    assert "=== Error Output (stderr) ===" in texts and "boom" in texts
    assert any(t.startswith("Resume with: prodigy resume workflow-1") for t in texts)
    session = next(e for e in out if isinstance(e, SaveSession)).session
    assert session["status"] == "Failed"  # type: ignore[index]
    checkpoint = next(e for e in out if isinstance(e, SaveCheckpoint)).checkpoint
    assert checkpoint["execution_state"]["status"] == "Failed"  # type: ignore[index]
    assert checkpoint["execution_state"]["current_step_index"] == 0  # type: ignore[index]
    assert checkpoint["error_code"] == "E3001"  # type: ignore[index]
    assert d.finish.exit_code == 1


def test_timeout_sets_shell_exit_code_minus_one() -> None:
    d = drive(shell("sleep 30", timeout=1.0, allow_failure=True), shell("echo ${shell.exit_code}"))
    command = d.pending(RunCommand)
    assert command.timeout == 1.0
    assert dict(command.env)["PRODIGY_COMMAND_TIMEOUT"] == "1"
    d.finish_command(timed_out=True, duration=1.0)
    assert "Command timed out after 1 seconds" in d.printed
    assert d.vars["shell.exit_code"] == -1
    assert d.pending(RunCommand).argv[-1] == "echo -1"


def test_capture_companions_and_values() -> None:
    d = drive(shell("echo 10", capture="n", capture_format="number"),
              shell("echo x", capture="lines", capture_format="lines"))
    d.run({"echo 10": R(stdout="10\n", duration=1.25), "echo x": R(stdout="a\nb\n")})
    v = d.vars
    assert v["n"] == 10 and isinstance(v["n"], int)
    assert v["n.exit_code"] == 0 and v["n.success"] is True and v["n.duration"] == 1.25
    assert v["lines"] == ["a", "b"]
    assert v["shell.output"] == "a\nb\n" and v["last.success"] is True


def test_retry_fallback_replaces_the_result() -> None:
    """10 #8: the fallback's result replaces the step's (``${shell.output}`` is its stdout)."""
    d = drive(shell("exit 1", retry=RetrySpec(attempts=2, initial_delay=0, exhausted="fallback",
                                              fallback_command="echo fallback")))
    d.run({"exit 1": FAIL, "echo fallback": R(stdout="fallback\n")})
    assert d.statuses == ["recovered"]
    assert d.vars["shell.output"].rstrip("\n") == "fallback"
    assert d.vars["shell.exit_code"] == 0


# --- retry details ------------------------------------------------------------------------


def test_retry_sleep_is_an_effect_between_attempts() -> None:
    d = drive(shell("x", retry=RetrySpec(attempts=3, initial_delay=2.0)))
    out = d.finish_command(1)
    assert isinstance(out[-1], Sleep) and out[-1].seconds == 2.0
    assert not any(isinstance(e, RunCommand) for e in out)
    retrying = d.logs("step_retrying")
    assert retrying[0]["attempt"] == 2 and retrying[0]["delay_ms"] == 2000
    assert "Retrying shell: x (attempt 2/3) after 2s" in d.printed
    out = d.sleep_done()
    command = out[-1]
    assert isinstance(command, RunCommand) and dict(command.env)["PRODIGY_ATTEMPT"] == "2"
    out = d.finish_command(1)
    assert isinstance(out[-1], Sleep) and out[-1].seconds == 4.0


def test_jitter_is_deterministic_and_bounded() -> None:
    spec = RetrySpec(attempts=4, backoff=Backoff(kind="fixed"), initial_delay=10.0, jitter=True,
                     jitter_factor=0.5)
    runs = []
    for _ in range(2):
        d = drive(shell("x", retry=spec))
        d.run({"x": FAIL})
        runs.append(d.sleeps)
    assert runs[0] == runs[1] and len(runs[0]) == 3
    assert all(7.5 <= s <= 12.5 for s in runs[0])
    d = drive(shell("x", retry=spec), seed=99)
    d.run({"x": FAIL})
    assert d.sleeps != runs[0]


# --- handlers -----------------------------------------------------------------------------


def test_error_variables_in_the_handler_command() -> None:
    handler = ("echo ${error.exit_code}/${error.type}/${error.attempt}/${error.message}/"
               "${error.stdout}/${error.stderr}/${error.timestamp}")
    d = drive(shell("build", retry=fixed(2), on_failure=handlers(handler)),
              shell("echo ${error.exit_code}"))
    d.run({"build": R(exit_code=5, stdout="out", stderr="boom")})
    assert d.commands[2] == "echo 5/command_failed/2/boom/out/boom/t0.0"
    # error.* exist only while the handler runs
    assert d.commands[3] == "echo ${error.exit_code}"
    assert not any(k.startswith("error.") for k in d.vars)


def test_error_variables_for_a_timeout() -> None:
    d = drive(shell("slow", timeout=1.0,
                    on_failure=handlers("echo ${error.exit_code} ${error.type} ${error.message}")))
    d.run({"slow": R(timed_out=True, duration=1.0)})
    assert d.commands[1] == "echo -1 timeout 'Command timed out after 1 seconds'"


def test_error_message_falls_back_to_stdout() -> None:
    d = drive(shell("x", on_failure=handlers("echo ${error.message}")))
    d.run({"x": R(exit_code=1, stdout="only-out\n")})
    assert d.commands[1] == "echo only-out"


def test_fix_loop_variables_and_counts() -> None:
    d = drive(shell("pytest", on_failure=handlers(
        "fix ${test.attempt} ${test.exit_code} ${error.attempt}", max_attempts=4)))
    d.run({"pytest": [R(exit_code=2, stdout="o", stderr="e"), R(exit_code=3), R()]})
    # error.attempt counts the executions so far (spec 03 §5.7)
    assert d.commands == ["pytest", "fix 1 2 1", "pytest", "fix 2 3 2", "pytest"]
    assert d.statuses == ["recovered"]
    started = d.logs("handler_started")
    assert [e["mode"] for e in started] == ["fix_loop", "fix_loop"]


def test_fix_loop_test_output() -> None:
    d = drive(shell("t", on_failure=handlers("echo \"${test.output}\"", max_attempts=2)))
    d.run({"t": R(exit_code=1, stdout="O", stderr="E")})
    assert d.commands[1] == 'echo "STDOUT:\nO\n\nSTDERR:\nE"'


@pytest.mark.parametrize("runs", [2, 3, 5])
def test_fix_loop_runs_shell_n_times_and_handler_n_minus_1(runs: int) -> None:
    d = drive(shell("check", on_failure=handlers("fix", max_attempts=runs)))
    d.run({"check": FAIL})
    assert d.commands.count("check") == runs
    assert d.commands.count("fix") == runs - 1
    assert d.finish.exit_code == 1


def test_fix_loop_strategy_warning() -> None:
    d = drive(shell("x", on_failure=handlers("fix", max_attempts=2, strategy="cleanup",
                                             strategy_given=True)))
    d.run({"x": [FAIL, R()]})
    assert "warning[W1012]" in d.printed
    assert d.statuses == ["recovered"]


def test_fallback_strategy_uses_the_handler_output() -> None:
    d = drive(shell("primary", capture="res", on_failure=handlers("alt", strategy="fallback")),
              shell("echo ${res}"))
    d.run({"primary": FAIL, "alt": R(stdout="from-alt")})
    assert d.statuses == ["recovered", "succeeded"]
    assert d.commands[-1] == "echo from-alt"


def test_on_failure_capture_stores_the_handler_output() -> None:
    d = drive(shell("x", on_failure=handlers("h", capture="hout")), shell("echo ${hout}"))
    d.run({"x": FAIL, "h": R(stdout="H")})
    assert d.commands[-1] == "echo H"


def test_handler_default_timeout() -> None:
    d = drive(shell("x", on_failure=OnFailure(commands=(shell("a"), shell("b", timeout=9.0)),
                                              timeout=3.0)))
    d.run({"x": FAIL})
    timeouts = [e.timeout for e in d.of(RunCommand)]
    assert timeouts == [None, 3.0, 9.0]


def test_on_exit_code_sets_error_variables_for_non_zero() -> None:
    d = drive(shell("exit 2", on_exit_code=((2, shell("echo ${error.exit_code}")),)))
    d.run({"exit 2": R(exit_code=2)})
    assert d.commands == ["exit 2", "echo 2"]


def test_on_success_runs_after_pass_and_sees_results() -> None:
    d = drive(shell("build", capture="b", on_success=shell("echo ${b}")))
    d.run({"build": R(stdout="v1\n")})
    assert d.commands == ["build", "echo v1"]
    assert d.statuses == ["succeeded"]


def test_on_success_after_fix_loop_recovery() -> None:
    d = drive(shell("t", on_failure=handlers("fix", max_attempts=2), on_success=shell("ok")))
    d.run({"t": [FAIL, R()]})
    assert d.commands == ["t", "fix", "t", "ok"]
    assert d.statuses == ["recovered"]


def test_handler_events_are_logged() -> None:
    d = drive(shell("x", on_failure=handlers("h")))
    d.run({"x": FAIL})
    started = d.logs("handler_started")
    assert started[0]["handler"] == "on_failure" and started[0]["mode"] == "handler"
    nested = [e for e in d.logs("step_completed") if e.get("top_level") is not True]
    assert nested[0]["step_path"] == "steps[0].on_failure.commands[0]"


# --- inputs and iterations ------------------------------------------------------------------


INPUTS = (InputSpec(arg="a"), InputSpec(arg="b"))


def test_input_mode_runs_each_input() -> None:
    d = drive(shell("echo ${ARG} ${INDEX}/${TOTAL}"), inputs=INPUTS)
    d.run()
    assert d.commands == ["echo a 1/2", "echo b 2/2"]
    assert [dict(e.env)["ARG"] for e in d.of(RunCommand)] == ["a", "b"]
    assert "Input 1/2: a" in d.printed and "Input 2/2: b" in d.printed
    assert [e["success"] for e in d.logs("input_completed")] == [True, True]
    assert d.finish.exit_code == 0


def test_input_mode_continues_after_a_failed_input() -> None:
    d = drive(shell("run ${ARG}"), shell("after ${ARG}"), inputs=INPUTS)
    d.run({"run a": FAIL})
    assert d.commands == ["run a", "run b", "after b"]
    assert "Input 1 (a) failed; continuing with the next input" in d.printed
    assert d.finish.exit_code == 1
    assert "Workflow failed: 1 input(s) failed: 1" in d.printed
    assert d.checkpoints[-1]["inputs"]["failed_inputs"] == [0]


def test_input_mode_fail_fast_stops() -> None:
    d = drive(shell("run ${ARG}"), inputs=INPUTS, fail_fast=True)
    d.run({"run a": FAIL})
    assert d.commands == ["run a"]
    assert d.finish.exit_code == 1


def test_iterations_stop_when_nothing_changed() -> None:
    d = drive(shell("improve"), max_iterations=3)
    read = d.pending(ReadGitHead)
    assert read.cwd == "/repo"
    assert "Starting iteration 1/3" in d.printed
    out = d.head("s1")
    assert isinstance(out[-1], RunCommand)
    out = d.finish_command()
    assert isinstance(out[-1], ReadGitHead)
    out = d.head("s1")
    assert Print(text="Stopping: No changes were made") in out
    assert d.commands == ["improve"]
    assert d.finish.exit_code == 0


def test_iterations_continue_while_commits_are_made() -> None:
    d = drive(shell("improve ${ITERATION}"), max_iterations=3)
    d.run(heads=["s1", "s2", "s2", "s3", "s3", "s4"])
    assert d.commands == ["improve 1", "improve 2", "improve 3"]
    assert [e["iteration"] for e in d.logs("iteration_completed")] == [1, 2, 3]
    assert "Stopping: No changes were made" not in d.printed
    assert [dict(e.env)["PRODIGY_ITERATION"] for e in d.of(RunCommand)] == ["1", "2", "3"]
    between = [c for c in d.checkpoints if c["execution_state"]["current_step_index"] == 0]
    assert [c["execution_state"]["current_iteration"] for c in between] == [2, 3]


def test_iteration_head_with_wrong_id_is_a_bug() -> None:
    d = drive(shell("improve"), max_iterations=2)
    read = d.pending(ReadGitHead)
    with pytest.raises(InvalidTransition):
        run_machine.step(d.state, GitHeadRead(command_id=read.command_id + 5, sha="x"))


# --- commit_required ----------------------------------------------------------------------


def test_commit_required_reads_head_around_the_execution() -> None:
    d = drive(shell("true", commit_required=True))
    d.head("h1")
    d.finish_command()
    out = d.head("h1")
    assert d.finish.exit_code == 1
    assert any(isinstance(e, Print) and "has commit_required=true but no commits were created"
               in e.text for e in out)
    d = drive(shell("commit", commit_required=True))
    d.run(heads=["h1", "h2"])
    assert d.finish.exit_code == 0


# --- cancellation ---------------------------------------------------------------------------


@pytest.mark.parametrize(("signal", "code"), [("SIGINT", 130), ("SIGTERM", 143)])
def test_cancel_while_a_command_runs(signal: str, code: int) -> None:
    d = drive(shell("echo a"), shell("sleep 100"), shell("echo never"))
    d.finish_command()
    command = d.pending(RunCommand)
    out = d.send(CancelRequested(signal=signal))
    assert out == (CancelCommands(),)
    assert d.send(CancelRequested(signal=signal)) == ()  # a second request changes nothing
    d.outstanding[command.command_id] = command
    out = d.finish_command(130, cancelled=True)
    assert [type(e) for e in out] == [LogEvent, SaveCheckpoint, SaveSession, Print, Print,
                                      Finish]
    checkpoint = out[1].checkpoint  # type: ignore[union-attr]
    assert checkpoint["execution_state"]["status"] == "Interrupted"
    assert checkpoint["execution_state"]["current_step_index"] == 1
    assert [s["step_index"] for s in checkpoint["completed_steps"]] == [0]
    assert out[2].session["status"] == "Paused"  # type: ignore[union-attr]
    assert d.finish.exit_code == code
    assert "echo never" not in d.commands
    with pytest.raises(InvalidTransition):
        run_machine.step(d.state, CommandFinished(command_id=command.command_id, exit_code=0))


def test_cancel_during_backoff() -> None:
    d = drive(shell("x", retry=fixed(3, 60.0)))
    d.finish_command(1)
    sleep = d.pending(Sleep)
    assert d.send(CancelRequested(signal="SIGINT")) == (CancelCommands(),)
    d.outstanding[sleep.command_id] = sleep
    d.send(Slept(command_id=sleep.command_id, monotonic=1.0))
    assert d.finish.exit_code == 130
    assert d.commands == ["x"]


def test_cancel_while_reading_the_iteration_head() -> None:
    d = drive(shell("x"), max_iterations=2)
    read = d.pending(ReadGitHead)
    assert d.send(CancelRequested(signal="SIGTERM")) == (CancelCommands(),)
    d.outstanding[read.command_id] = read
    d.head("s")
    assert d.finish.exit_code == 143
    assert d.commands == []


def test_stale_event_after_cancel_is_a_bug() -> None:
    d = drive(shell("sleep 100"))
    command = d.pending(RunCommand)
    d.send(CancelRequested(signal="SIGINT"))
    with pytest.raises(InvalidTransition):
        run_machine.step(d.state, CommandFinished(command_id=command.command_id + 1,
                                                  exit_code=0))


def test_events_for_other_commands_are_bugs() -> None:
    d = drive(shell("x"))
    command = d.pending(RunCommand)
    with pytest.raises(InvalidTransition):
        run_machine.step(d.state, CommandFinished(command_id=command.command_id + 1,
                                                  exit_code=0))
    with pytest.raises(InvalidTransition):
        run_machine.step(d.state, Slept(command_id=command.command_id))
    d.run()
    with pytest.raises(InvalidTransition):
        run_machine.step(d.state, CancelRequested(signal="SIGINT"))


# --- resume -------------------------------------------------------------------------------


RESUME_STEPS = (
    shell("echo a", capture="x"),
    shell("echo ${x}-b", capture="y"),
    shell("echo ${y}-c"),
)
RESUME_SCRIPT = {"echo a": R(stdout="a\n"), "echo a-b": R(stdout="ab\n")}


def roundtrip(doc: Any) -> dict[str, Any]:
    return json.loads(json.dumps(doc))


def test_resume_continues_at_the_first_unfinished_step() -> None:
    d = drive(*RESUME_STEPS)
    d.finish_command(0, "a\n")
    checkpoint = roundtrip(d.checkpoints[-1])
    frozen = json.dumps(checkpoint, sort_keys=True)
    r = Driver(run_machine.resume(wf(*RESUME_STEPS), make_ctx(), checkpoint))
    assert json.dumps(checkpoint, sort_keys=True) == frozen  # the input is not mutated
    assert r.logs("workflow_resumed")[0]["from_step"] == 1
    assert "Checkpoint: step 2 of 3" in r.printed
    assert "Executing step 2/3: shell: echo ${x}-b" in r.printed
    r.run(RESUME_SCRIPT)
    assert r.commands == ["echo a-b", "echo ab-c"]  # step 1 never runs again
    final = r.checkpoints[-1]
    assert final["execution_state"]["status"] == "Completed"
    assert [s["step_index"] for s in final["completed_steps"]] == [0, 1, 2]
    assert r.finish.exit_code == 0


def test_resume_after_failure_reruns_only_the_failed_step() -> None:
    d = drive(*RESUME_STEPS)
    d.run({"echo a": R(stdout="a\n"), "echo a-b": FAIL})
    assert d.finish.exit_code == 1
    checkpoint = roundtrip(d.checkpoints[-1])
    assert checkpoint["execution_state"]["status"] == "Failed"
    r = Driver(run_machine.resume(wf(*RESUME_STEPS), make_ctx(), checkpoint))
    r.run(RESUME_SCRIPT)
    assert r.commands == ["echo a-b", "echo ab-c"]
    assert r.finish.exit_code == 0


def test_resume_after_interrupt() -> None:
    d = drive(*RESUME_STEPS)
    d.finish_command(0, "a\n")
    command = d.pending(RunCommand)
    d.send(CancelRequested(signal="SIGINT"))
    d.outstanding[command.command_id] = command
    d.finish_command(130, cancelled=True)
    checkpoint = roundtrip(d.checkpoints[-1])
    r = Driver(run_machine.resume(wf(*RESUME_STEPS), make_ctx(), checkpoint))
    r.run(RESUME_SCRIPT)
    assert r.commands == ["echo a-b", "echo ab-c"]


def envelopes(d: Driver, after_checkpoint: int, seq: int = 100) -> list[dict[str, Any]]:
    """Journal envelopes of the LogEvents performed after checkpoint number ``after``."""
    effects = d.effects
    positions = [i for i, e in enumerate(effects) if isinstance(e, SaveCheckpoint)]
    start = positions[after_checkpoint] + 1
    out = []
    for e in effects[start:]:
        if isinstance(e, LogEvent):
            seq += 1
            out.append({"seq": seq, "timestamp": f"ts{seq}", "event": roundtrip(e.as_dict())})
    return out


def test_resume_reconciles_a_step_completed_after_the_checkpoint() -> None:
    d = drive(*RESUME_STEPS)
    d.finish_command(0, "a\n")
    d.finish_command(0, "ab\n")
    # crash: step 2's step_completed reached the journal, its checkpoint did not
    checkpoint = roundtrip(d.checkpoints[0])
    later = envelopes(d, 0)
    assert [e["event"]["event_type"] for e in later] == ["step_started", "step_completed",
                                                         "step_started"]
    r = Driver(run_machine.resume(wf(*RESUME_STEPS), make_ctx(), checkpoint, later))
    assert r.logs("workflow_resumed")[0]["from_step"] == 2
    r.run()
    assert r.commands == ["echo ab-c"]  # y was restored from the journal record
    assert [s["step_index"] for s in r.checkpoints[-1]["completed_steps"]] == [0, 1, 2]


def test_resume_ignores_later_records_that_do_not_complete_the_step() -> None:
    d = drive(*RESUME_STEPS)
    d.finish_command(0, "a\n")
    d.finish_command(1)
    checkpoint = roundtrip(d.checkpoints[0])
    later = envelopes(d, 0)
    assert "step_failed" in [e["event"]["event_type"] for e in later]
    r = Driver(run_machine.resume(wf(*RESUME_STEPS), make_ctx(), checkpoint, later))
    assert r.pending(RunCommand).argv[-1] == "echo a-b"
    # a completed record of another iteration is ignored too
    other = roundtrip(later)
    for e in other:
        e["event"]["iteration"] = 7
        e["event"]["status"] = "succeeded"
        e["event"]["event_type"] = "step_completed"
    r = Driver(run_machine.resume(wf(*RESUME_STEPS), make_ctx(), checkpoint, other))
    assert r.pending(RunCommand).argv[-1] == "echo a-b"


def test_resume_restores_input_and_iteration() -> None:
    d = drive(shell("run ${ARG}"), shell("then ${ARG}"), inputs=INPUTS)
    d.run({"then b": FAIL})
    checkpoint = roundtrip(d.checkpoints[-1])
    assert checkpoint["inputs"]["current_input_index"] == 1
    r = Driver(run_machine.resume(wf(shell("run ${ARG}"), shell("then ${ARG}")),
                                  make_ctx(inputs=INPUTS), checkpoint))
    r.run()
    assert r.commands == ["then b"]
    assert r.finish.exit_code == 0


def test_resume_rejects_a_corrupt_checkpoint() -> None:
    with pytest.raises(InvalidTransition):
        run_machine.resume(wf(shell("x")), make_ctx(), {"version": 1})


def test_checkpoint_variables_and_untrusted_meta_round_trip() -> None:
    d = drive(*RESUME_STEPS)
    d.finish_command(0, "a\n")
    checkpoint = roundtrip(d.checkpoints[-1])
    assert checkpoint["variable_state"]["x"] == "a"
    assert "x" in checkpoint["variable_meta"]["untrusted"]
    r = run_machine.resume(wf(*RESUME_STEPS), make_ctx(), checkpoint)
    var = r.state.stepper.vars["x"]
    assert var.value == "a" and var.trusted is False


def test_resume_retries_the_current_input_then_earlier_failed_ones() -> None:
    three = (InputSpec(arg="a"), InputSpec(arg="b"), InputSpec(arg="c"))
    steps = (shell("run ${ARG}"),)
    d = drive(*steps, inputs=three)
    d.run({"run a": FAIL, "run c": FAIL})
    assert d.commands == ["run a", "run b", "run c"]
    checkpoint = roundtrip(d.checkpoints[-1])
    assert checkpoint["inputs"]["failed_inputs"] == [0, 2]
    r = Driver(run_machine.resume(wf(*steps), make_ctx(inputs=three), checkpoint))
    r.run()
    # the failed inputs run again from the step where they stopped; b never runs again
    assert r.commands == ["run c", "run a"]
    assert "Workflow completed successfully" in r.printed
    assert r.checkpoints[-1]["inputs"]["failed_inputs"] == []
