"""After the attempts: handlers, the fix loop, and finishing a step (spec 02 §8 stages 4–8).

Theory of operation
-------------------
``attempts_done`` receives the last result of a step whose attempts are over and decides
what runs next: a matching ``on_exit_code`` entry, else the completeness ``validate``
(``step_validation``) and ``on_success`` after a pass, or ``on_failure`` after a failure.  A handler runs as a child frame pushed above the step's
frame, which waits in stage ``child``; its ``child_role`` (``on_exit_code``,
``on_failure``, ``fix``, ``on_success`` or ``fallback``, the last started by the attempt
loop; ``validate`` and ``on_incomplete`` for ``step_validation``) tells ``_child_done``
how to continue when the child finishes.  A list of handler
commands runs in a ``SeqFrame``, one step at a time, stopping at the first failure.  The
fix loop (``on_failure.max_attempts`` ≥ 2) alternates running the handlers and executing
the step again.  A passing step writes its ``output_file`` last.  ``finish`` pops a
finished step frame and hands its ``Outcome`` to the frame below, or, when it was the
last frame, to the scope machine (``Tx.done``).
"""

from __future__ import annotations

import attrs
from pyrsistent import PMap, pmap

from prodigy_core import commits, step_git, step_goal, step_report, step_validation, stepper
from prodigy_core.effects import Print, WriteFile
from prodigy_core.events import FileWriteFailed, FileWritten
from prodigy_core.interpolate import Var, interpolate
from prodigy_core.model import OnFailure, Step
from prodigy_core.problems import InvalidTransition
from prodigy_core.results import ExecResult, capture_variables, result_variables, tail_lines
from prodigy_core.step_frames import (
    Outcome,
    SeqFrame,
    Status,
    StepFrame,
    Tx,
    log_step,
    retry_spec,
)


def _exit_handler(step: Step, code: int) -> Step | None:
    for key, handler in step.on_exit_code:
        if key == code:
            return handler
    return None


def attempts_done(tx: Tx, result: ExecResult) -> None:
    frame = tx.top
    assert isinstance(frame, StepFrame)
    step = frame.step
    if frame.in_fix_loop:
        if result.passed:
            _success(tx, "recovered")
        else:
            _fix_iterate(tx)
        return
    handler = _exit_handler(step, result.exit_code) if not result.planned else None
    if handler is not None:
        locals_ = _error_locals(tx, frame, result) if result.exit_code != 0 else pmap()
        tx.replace_top(attrs.evolve(frame, stage="child", child_role="on_exit_code"))
        log_step(tx, frame, "handler_started", handler="on_exit_code", mode="handler")
        stepper.start_step(tx, handler, f"{frame.path}.on_exit_code.{result.exit_code}", locals_)
        return
    if result.passed:
        _success(tx, "succeeded")
        return
    _failure(tx, frame, result)


def _error_locals(tx: Tx, frame: StepFrame, result: ExecResult) -> PMap[str, Var]:
    message = result.stderr.strip() or result.stdout.strip() or (result.message or "")
    values: dict[str, Var] = {
        "error.message": Var(value=message, trusted=False),
        "error.exit_code": Var(value=result.exit_code),
        "error.stdout": Var(value=result.stdout, trusted=False),
        "error.stderr": Var(value=result.stderr, trusted=False),
        "error.step": Var(value=frame.display, trusted=False),
        "error.type": Var(value=result.error_class or "command_failed"),
        "error.attempt": Var(value=frame.executions),
        "error.timestamp": Var(value=result.finished_at),
    }
    return pmap(values)


def _failure(tx: Tx, frame: StepFrame, result: ExecResult) -> None:
    spec = frame.step.on_failure
    if spec is None or (not spec.commands and not spec.allow):
        finish_failed(tx, frame, result)
        return
    if spec.allow:
        finish_failed(tx, frame, result, allowed=True)
        return
    if spec.max_attempts is not None and spec.max_attempts >= 2:
        if spec.strategy_given and spec.strategy != "recovery":
            tx.emit(Print(text="warning[W1012]: `strategy` has no effect in a fix loop",
                          stream="err"))
        tx.replace_top(attrs.evolve(frame, in_fix_loop=True, runs=1))
        _fix_iterate(tx)
        return
    log_step(tx, frame, "handler_started", handler="on_failure", mode="handler")
    tx.replace_top(attrs.evolve(frame, stage="child", child_role="on_failure"))
    _start_seq(tx, spec, frame.path, _error_locals(tx, frame, result))


def _start_seq(tx: Tx, spec: OnFailure, path: str, locals_: PMap[str, Var]) -> None:
    paths = tuple(f"{path}.on_failure.commands[{i}]" for i in range(len(spec.commands)))
    start_seq(tx, spec.commands, paths, locals_, spec.timeout)


def start_seq(tx: Tx, steps: tuple[Step, ...], paths: tuple[str, ...], locals_: PMap[str, Var],
              default_timeout: float | None = None, *,
              base_env: tuple[tuple[str, str], ...] = (), base_cwd: str | None = None,
              show_output: bool = False) -> None:
    """Run ``steps`` one at a time above the top frame, stopping at the first failure."""
    tx.push(SeqFrame(steps=steps, paths=paths, locals=locals_, default_timeout=default_timeout,
                     base_env=base_env, base_cwd=base_cwd, show_output=show_output))
    _seq_next(tx)


def _seq_next(tx: Tx) -> None:
    seq = tx.top
    assert isinstance(seq, SeqFrame)
    if seq.failed or seq.index >= len(seq.steps):
        tx.pop()
        outcome = Outcome(status="failed" if seq.failed else "succeeded",
                          output=seq.last_output, error=seq.error,
                          duration=seq.duration)
        if tx.st.stack:
            _child_done(tx, outcome)
        else:
            tx.done = outcome  # a list run on its own (``stepper.begin_seq``)
        return
    stepper.start_step(tx, seq.steps[seq.index], seq.paths[seq.index], pmap(),
                       default_timeout=seq.default_timeout, base_env=seq.base_env,
                       base_cwd=seq.base_cwd, show_output=seq.show_output)


def _fix_iterate(tx: Tx) -> None:
    frame = tx.top
    assert isinstance(frame, StepFrame) and frame.last is not None
    spec = frame.step.on_failure
    assert spec is not None and spec.max_attempts is not None
    if frame.runs >= spec.max_attempts:
        tx.emit(Print(text=f"  Step '{frame.display}' still failing after "
                           f"{spec.max_attempts} attempts", stream="err"))
        finish_failed(tx, frame, frame.last)
        return
    tx.emit(Print(text=f"  Attempt {frame.runs}/{spec.max_attempts} failed; running "
                       "on_failure handler"))
    result = frame.last
    locals_ = _error_locals(tx, frame, result)
    test_output = f"STDOUT:\n{result.stdout}\n\nSTDERR:\n{result.stderr}"
    locals_ = locals_.update({
        "test.attempt": Var(value=frame.runs),
        "test.exit_code": Var(value=result.exit_code),
        "test.output": Var(value=test_output, trusted=False),
    })
    log_step(tx, frame, "handler_started", handler="on_failure", mode="fix_loop")
    tx.replace_top(attrs.evolve(frame, stage="child", child_role="fix"))
    _start_seq(tx, spec, frame.path, locals_)


def _success(tx: Tx, status: Status) -> None:
    """The command passed (stage 6): the completeness ``validate``, then ``on_success``."""
    frame = tx.top
    assert isinstance(frame, StepFrame)
    if step_validation.wanted(frame):
        step_validation.start(tx, status)
        return
    after_validation(tx, status)


def after_validation(tx: Tx, status: Status) -> None:
    frame = tx.top
    assert isinstance(frame, StepFrame)
    if frame.step.on_success is not None and not (frame.last and frame.last.planned):
        tx.replace_top(attrs.evolve(frame, stage="child", child_role="on_success",
                                    final_status=status))
        log_step(tx, frame, "handler_started", handler="on_success", mode="handler")
        stepper.start_step(tx, frame.step.on_success, f"{frame.path}.on_success", pmap())
        return
    _finish_pass(tx, status)


def _finish_pass(tx: Tx, status: Status) -> None:
    frame = tx.top
    assert isinstance(frame, StepFrame) and frame.last is not None
    step = frame.step
    tx.assign(commits.output_variables(step, frame.found_outputs))
    if step.output_file and not frame.last.planned:
        path = interpolate(step.output_file, tx.visible(), environ=tx.ctx.environ_map).text
        cid = tx.new_id()
        tx.replace_top(attrs.evolve(frame, stage="output_file", pending=cid,
                                    final_status=status))
        tx.emit(WriteFile(command_id=cid, cwd=frame.cwd, path=path, content=frame.last.stdout,
                          create_dirs=True, display=frame.display, step_path=frame.path))
        return
    _finish_frame(tx, status)


def on_output_file(tx: Tx, frame: StepFrame, event: FileWritten | FileWriteFailed) -> None:
    if isinstance(event, FileWriteFailed):
        assert frame.last is not None
        result = attrs.evolve(frame.last, passed=False, error_code="E3005",
                              error_class="command_failed",
                              message=f"could not write output_file: {event.message}")
        finish_failed(tx, frame, result)
        return
    _finish_frame(tx, frame.final_status or "succeeded")


def _finish_frame(tx: Tx, status: Status) -> None:
    frame = tx.top
    assert isinstance(frame, StepFrame)
    last = frame.last or ExecResult(exit_code=0, passed=True)
    outcome = Outcome(status=status, exit_code=last.exit_code, output=last.stdout,
                      stderr=last.stderr, duration=frame.total_duration,
                      executions=frame.executions)
    if frame.step.kind == "shell" and (frame.root or frame.show_output) and not last.planned:
        lines, more = tail_lines(last.stdout, 20)
        if lines:
            text = "\n".join(f"    {line}" for line in lines)
            if more:
                text = f"    (… {more} more lines)\n" + text
            tx.emit(Print(text=text, level="verbose"))
    finish(tx, outcome)


def finish_failed(tx: Tx, frame: StepFrame, result: ExecResult, *, allowed: bool = False,
                   fatal: bool = False) -> None:
    spec = frame.step.on_failure
    allow = (
        allowed
        or frame.allowed
        or frame.step.allow_failure
        or (spec is not None and spec.fail_workflow is False)
    ) and not fatal
    outcome = Outcome(
        status="failed_allowed" if allow else "failed",
        exit_code=result.exit_code,
        output=result.stdout,
        stderr=result.stderr,
        error=result.message,
        error_code=result.error_code,
        error_class=result.error_class,
        fatal=fatal,
        duration=frame.total_duration,
        executions=frame.executions,
    )
    finish(tx, outcome, print_failure=True)


def finish(tx: Tx, outcome: Outcome, *, print_failure: bool = False) -> None:
    """Pop the top step frame and hand its outcome to the frame below."""
    frame = tx.top
    assert isinstance(frame, StepFrame)
    if frame.git_started and step_git.finishing(tx, frame, outcome, print_failure):
        return  # listing the step's changes for ``step.*`` first
    spec = retry_spec(tx, frame.step)
    outcome = attrs.evolve(outcome, failures=frame.failures,
                           max_attempts=spec.attempts if spec is not None else 1)
    if not frame.root and outcome.status != "skipped":
        kind = "step_failed" if outcome.status == "failed" else "step_completed"
        log_step(tx, frame, kind, status=outcome.status, exit_code=outcome.exit_code,
                 error=outcome.error, error_code=outcome.error_code)
    tx.pop()
    if print_failure and outcome.status in ("failed", "failed_allowed"):
        step_report.print_failure(tx, frame, outcome)
    if tx.st.stack:
        _child_done(tx, outcome)
    else:
        tx.done = outcome


def _child_done(tx: Tx, outcome: Outcome) -> None:
    parent = tx.top
    if isinstance(parent, SeqFrame):
        failed = outcome.status == "failed"
        tx.replace_top(attrs.evolve(parent, index=parent.index + 1, failed=failed,
                                    last_output=outcome.output,
                                    error=outcome.error if failed else parent.error,
                                    duration=parent.duration + outcome.duration))
        _seq_next(tx)
        return
    role = parent.child_role
    tx.replace_top(attrs.evolve(parent, stage="running", child_role=""))
    last = parent.last or ExecResult(exit_code=0)
    if role == "on_failure":
        _after_handlers(tx, parent, outcome)
    elif role == "fix":
        spec = parent.step.on_failure
        assert spec is not None
        if outcome.status == "failed":
            fatal = spec.handler_failure_fatal
            result = last
            if fatal:
                result = attrs.evolve(last, error_code="E3007",
                                      message=f"on_failure handler of '{parent.display}' failed")
            finish_failed(tx, parent, result, fatal=fatal)
            return
        frame = attrs.evolve(parent, runs=parent.runs + 1, attempt=0)
        tx.replace_top(frame)
        if commits.needs_head(parent.step):
            stepper.read_head(tx, "head_before")
        else:
            stepper.execute(tx)
    elif role == "on_exit_code":
        if outcome.status == "failed":
            finish_failed(tx, parent, attrs.evolve(
                last, message=outcome.error or last.message, error_code=outcome.error_code
                or last.error_code))
        else:
            tx.replace_top(attrs.evolve(parent, last=attrs.evolve(last, passed=True)))
            # spec 02 §8 stage 4: the entry runs instead of on_success / on_failure
            _finish_pass(tx, "succeeded" if last.exit_code == 0 else "recovered")
    elif role == "on_success":
        if outcome.status == "failed":
            result = attrs.evolve(last, passed=False, error_code=outcome.error_code,
                                  error_class=outcome.error_class,
                                  message=f"on_success handler of '{parent.display}' failed: "
                                          f"{outcome.error}")
            finish(tx, Outcome(status="failed_allowed" if parent.step.allow_failure else
                               "failed", exit_code=last.exit_code, output=last.stdout,
                               stderr=last.stderr, error=result.message,
                               error_code=result.error_code, error_class=result.error_class,
                               duration=parent.total_duration,
                               executions=parent.executions), print_failure=True)
        else:
            _finish_pass(tx, parent.final_status or "succeeded")
    elif role == "fallback":
        if outcome.status in ("succeeded", "recovered"):
            result = ExecResult(exit_code=0, stdout=outcome.output, passed=True)
            step = parent.step
            values: dict[str, Var] = {}
            if step.capture_output:
                values.update(result_variables(step.kind, result, {}))
            captured = capture_variables(step, result)
            if isinstance(captured, dict):
                values.update(captured)
            tx.assign(values)
            tx.replace_top(attrs.evolve(parent, last=result))
            # a fallback result is not the command passing: no completeness validation
            after_validation(tx, "recovered")
        else:
            attempts_done(tx, last)
    elif role == "validate":
        step_validation.command_done(tx, parent, outcome)
    elif role == "goal_command":
        step_goal.command_done(tx, parent, outcome)
    elif role == "on_incomplete":
        step_validation.handlers_done(tx, parent, outcome)
    else:
        raise InvalidTransition(f"child finished for unknown role {role!r}")


def _after_handlers(tx: Tx, frame: StepFrame, outcome: Outcome) -> None:
    spec = frame.step.on_failure
    assert spec is not None
    last = frame.last or ExecResult(exit_code=1)
    ok = outcome.status != "failed"
    if spec.capture:
        tx.assign({spec.capture: Var(value=outcome.output, trusted=False)})
    if not ok and spec.handler_failure_fatal:
        finish_failed(tx, frame, attrs.evolve(
            last, error_code="E3007",
            message=f"on_failure handler of '{frame.display}' failed"), fatal=True)
        return
    strategy = spec.strategy
    if ok and strategy in ("recovery", "custom") and spec.fail_workflow is not True:
        finish(tx, Outcome(status="recovered", exit_code=last.exit_code, output=last.stdout,
                           stderr=last.stderr, duration=frame.total_duration,
                           executions=frame.executions))
        return
    if ok and strategy == "fallback":
        if frame.step.capture:
            tx.assign({frame.step.capture: Var(value=outcome.output, trusted=False)})
        finish(tx, Outcome(status="recovered", exit_code=0, output=outcome.output,
                           duration=frame.total_duration, executions=frame.executions))
        return
    finish_failed(tx, frame, last)
