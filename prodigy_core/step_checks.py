"""The result of one execution and the checks after it (spec 02 §8 stage 3).

Theory of operation
-------------------
The answer to an execution (``CommandFinished``/``CommandNotStarted`` for a command,
``FileWritten``/``FileWriteFailed`` for ``write_file``) becomes the frame's ``last``
``ExecResult``; the step's result variables and captures are set from it.  ``_checks``
then walks the stages ``commit`` → ``head_after`` → ``changes`` → ``validate`` →
``squash``, starting the first stage after the one just answered that applies
(``prodigy_core.commits`` decides and builds the effect).  The frame waits in that stage
for its one answering event, which may turn the result into a failure.  ``step_validate``
commands run one at a time and stop at the first failure.  When no stage is left the
result goes to the attempt loop (``stepper.after_exec``).
"""

from __future__ import annotations

import attrs

from prodigy_core import commits, stepper
from prodigy_core.context import child_environment
from prodigy_core.effects import Print, RunCommand
from prodigy_core.events import (
    CommandFinished,
    CommandNotStarted,
    CommitsListed,
    FileWriteFailed,
    FileWritten,
    GitFailed,
    GitHeadRead,
)
from prodigy_core.interpolate import Var, interpolate
from prodigy_core.json_values import JSON
from prodigy_core.results import (
    ExecResult,
    capture_variables,
    result_variables,
    seconds_text,
)
from prodigy_core.step_frames import StepFrame, Tx, last_result


def on_command(tx: Tx, frame: StepFrame, event: CommandFinished | CommandNotStarted) -> None:
    if isinstance(event, CommandNotStarted):
        code = "E3013" if event.reason == "cwd_missing" else "E3001"
        result = ExecResult(exit_code=-1, passed=False, error_class="command_failed",
                            error_code=code, message=event.message,
                            finished_at=event.finished_at)
        tx.replace_top(attrs.evolve(frame, last=result, mono=event.monotonic))
        _checks(tx, None)
        return
    if event.timed_out:
        secs = frame.timeout if frame.timeout is not None else 0
        result = ExecResult(
            exit_code=-1, stdout=event.stdout, stderr=event.stderr, duration=event.duration,
            passed=False, error_class="timeout", error_code="E3002",
            message=f"Command timed out after {seconds_text(secs)} seconds",
            finished_at=event.finished_at,
        )
    elif event.exit_code != 0:
        result = ExecResult(
            exit_code=event.exit_code, stdout=event.stdout, stderr=event.stderr,
            duration=event.duration, passed=False, error_class="command_failed",
            error_code="E3001",
            message=f"Step '{frame.display}' failed with exit code {event.exit_code}",
            finished_at=event.finished_at,
        )
    else:
        result = ExecResult(exit_code=0, stdout=event.stdout, stderr=event.stderr,
                            duration=event.duration, passed=True,
                            finished_at=event.finished_at, planned=event.planned)
    if event.truncated:
        tx.emit(Print(text=f"warning[W3001]: output of '{frame.display}' was truncated",
                      stream="err"))
    result = _record_result(tx, frame, result)
    top = tx.top
    assert isinstance(top, StepFrame)
    tx.replace_top(attrs.evolve(top, last=result, mono=event.monotonic))
    _checks(tx, None)



def on_file(tx: Tx, frame: StepFrame, event: FileWritten | FileWriteFailed) -> None:
    if isinstance(event, FileWritten):
        out = f"Wrote {event.size} bytes to {event.path}"
        result = ExecResult(exit_code=0, stdout=out, passed=True, finished_at=event.finished_at,
                            planned=event.planned)
    else:
        result = ExecResult(exit_code=1, stdout="", stderr=event.message, passed=False,
                            error_class="command_failed", error_code="E3005",
                            message=event.message, finished_at=event.finished_at)
    result = _record_result(tx, frame, result, extra={"path": frame.text})
    top = tx.top
    assert isinstance(top, StepFrame)
    tx.replace_top(attrs.evolve(top, last=result, mono=event.monotonic))
    _checks(tx, None)


def record_claude(tx: Tx, frame: StepFrame, result: ExecResult,
                  extra: dict[str, JSON]) -> ExecResult:
    """Result variables and captures of a Claude execution."""
    return _record_result(tx, frame, result, extra=extra)


def record(tx: Tx, frame: StepFrame, result: ExecResult, extra: dict[str, JSON]) -> ExecResult:
    """Result variables and captures of a ``goal_seek`` or ``foreach`` execution."""
    return _record_result(tx, frame, result, extra=extra)


def after_result(tx: Tx, frame: StepFrame, result: ExecResult, monotonic: float) -> None:
    """The execution's result is on the top frame: run the checks that follow it."""
    _checks(tx, None)


def _record_result(
    tx: Tx, frame: StepFrame, result: ExecResult, extra: dict[str, JSON] | None = None
) -> ExecResult:
    """Set result variables and captures from one execution (spec 02 §8 stage 3)."""
    if result.planned:
        return result
    step = frame.step
    values: dict[str, Var] = {}
    if step.capture_output:
        values.update(result_variables(step.kind, result, extra or {}))
    if step.legacy_test:
        values["test.output"] = Var(value=result.stdout, trusted=False)
        values["test.exit_code"] = Var(value=result.exit_code, trusted=False)
    captured = capture_variables(step, result)
    if isinstance(captured, dict):
        values.update(captured)
    tx.assign(values)
    if not isinstance(captured, dict):
        return attrs.evolve(result, passed=False, error_class="command_failed",
                            error_code=captured.code, message=captured.message)
    return result


def on_head_after(tx: Tx, frame: StepFrame, event: GitHeadRead) -> None:
    result = frame.last
    assert result is not None
    if not event.planned and event.sha == frame.head_before:
        result = attrs.evolve(
            result, passed=False, error_class="commit_required", error_code="E3003",
            message=f"Step '{frame.display}' has commit_required=true but no commits were created"
            + (f"\nTranscript: {frame.transcript}" if frame.transcript else ""),
        )
        tx.replace_top(attrs.evolve(frame, last=result))
    _checks(tx, "head_after")


_CHECKS = ("commit", "head_after", "changes", "validate", "squash")


def _checks(tx: Tx, done: str | None) -> None:
    """Start the first check after ``done`` that applies; none left → the attempt loop."""
    frame = tx.top
    assert isinstance(frame, StepFrame)
    result = last_result(frame)
    step = frame.step
    live = result.passed and not result.planned
    for stage in _CHECKS[_CHECKS.index(done) + 1 if done else 0:]:
        if stage == "commit" and commits.wants_commit(step, result):
            cid = tx.new_id()
            tx.replace_top(attrs.evolve(frame, stage=stage, pending=cid))
            tx.emit(commits.commit_effect(step, command_id=cid, cwd=frame.cwd,
                                          display=frame.display, path=frame.path,
                                          visible=tx.visible(), environ=tx.ctx.environ_map))
            return
        if stage == "head_after" and live and step.commit_required:
            stepper.read_head(tx, stage)
            return
        if stage == "changes" and live and commits.wants_changes(step):
            cid = tx.new_id()
            tx.replace_top(attrs.evolve(frame, stage=stage, pending=cid))
            tx.emit(commits.list_effect(command_id=cid, cwd=frame.cwd, since=frame.head_before))
            return
        if stage == "validate" and live and _start_validation(tx, frame):
            return
        if stage == "squash" and frame.head_before is not None and commits.wants_squash(
                step, result, frame.head_before, frame.new_commits):
            cid = tx.new_id()
            tx.replace_top(attrs.evolve(frame, stage=stage, pending=cid))
            tx.emit(commits.squash_effect(step, command_id=cid, cwd=frame.cwd,
                                          since=frame.head_before, commits=frame.new_commits,
                                          visible=tx.visible(), environ=tx.ctx.environ_map))
            return
    stepper.after_exec(tx, result, monotonic=frame.mono, duration=result.duration)


def on_git(tx: Tx, frame: StepFrame, answer: tuple[ExecResult, tuple[Print, ...]]) -> None:
    result, prints = answer
    for line in prints:
        tx.emit(line)
    tx.replace_top(attrs.evolve(frame, last=result))
    _checks(tx, frame.stage)


def on_changes(tx: Tx, frame: StepFrame, event: CommitsListed | GitFailed) -> None:
    checked = commits.check_changes(frame.step, frame.display, last_result(frame), event)
    for line in checked.prints:
        tx.emit(line)
    tx.replace_top(attrs.evolve(frame, last=checked.result, new_commits=checked.commits,
                                found_outputs=checked.outputs))
    _checks(tx, "changes")


def _start_validation(tx: Tx, frame: StepFrame) -> bool:
    spec = frame.step.step_validate
    if spec is None or frame.step.skip_validation or not spec.commands:
        return False
    _run_validation(tx, frame, 0)
    return True


def _run_validation(tx: Tx, frame: StepFrame, index: int) -> None:
    spec = frame.step.step_validate
    assert spec is not None
    visible = tx.visible()
    text = interpolate(spec.commands[index], visible, shell=True,
                       environ=tx.ctx.environ_map).text
    env = dict(child_environment(tx.ctx, step_env=dict(frame.env), clear=frame.step.clear_env,
                                 iteration=tx.st.iteration, attempt=frame.executions,
                                 input_index=tx.st.input_index, timeout=None))
    env["PRODIGY_VALIDATION"] = "true"
    timeout = spec.timeout if spec.timeout is not None else frame.step.validation_timeout
    cid = tx.new_id()
    tx.replace_top(attrs.evolve(frame, stage="validate", pending=cid, validate_index=index))
    tx.emit(RunCommand(command_id=cid, argv=("sh", "-c", text), cwd=frame.cwd,
                       env=tuple(sorted(env.items())), timeout=timeout,
                       display=f"{frame.display} (validate {index + 1})", step_path=frame.path,
                       memory_limit_mb=tx.ctx.memory_limit_mb))


def on_validate(tx: Tx, frame: StepFrame, event: CommandFinished | CommandNotStarted) -> None:
    spec = frame.step.step_validate
    assert spec is not None and frame.last is not None
    ok = isinstance(event, CommandFinished) and event.exit_code == 0 and not event.timed_out
    if ok and frame.validate_index + 1 < len(spec.commands):
        _run_validation(tx, frame, frame.validate_index + 1)
        return
    result = frame.last
    if not ok:
        command = spec.commands[frame.validate_index]
        if isinstance(event, CommandFinished):
            output = (event.stderr or event.stdout).strip()
            how = "timed out" if event.timed_out else f"exited with {event.exit_code}"
        else:
            output, how = event.message, "could not start"
        message = f"step_validate command {frame.validate_index + 1} failed: `{command}` {how}"
        if output:
            message += f": {output}"
        if frame.step.ignore_validation_failure:
            tx.emit(Print(text=f"warning[W3003]: {message}", stream="err"))
        else:
            result = attrs.evolve(result, passed=False, error_class="validation_failed",
                                  error_code="E3010", message=message)
    tx.replace_top(attrs.evolve(frame, last=result, mono=event.monotonic))
    _checks(tx, "validate")
