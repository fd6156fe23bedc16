"""The completeness ``validate`` of a step that passed (spec 12 §2, spec 02 §8 stage 6).

Theory of operation
-------------------
``start`` is called by ``step_handlers`` when the command passed and the step has a
``validate`` (not in a dry run, not after ``skip_validation``).  The step's frame
records the status it would end with (``final_status``) and runs the validation
commands one at a time as child steps (role ``validate``, index ``val_index``) in the
step's working directory and environment plus ``PRODIGY_VALIDATION=true``.  The first
failing command gives the result ``failed`` with completion 0.  When they all pass, the
result text is the ``result_file`` (read with ``ReadFile``, stage ``validation_file``)
or the last command's output; ``validation_result.judge`` turns it into a ``Verdict``,
which sets ``validation.*``.

A verdict that passes resumes the step (``step_handlers.after_validation``: ``on_success``,
outputs).  One that does not runs ``on_incomplete`` rounds while fewer than
``max_attempts`` have run: the handlers as a ``SeqFrame`` (role ``on_incomplete``; a
failing handler ends the loop), then the commands again.  When no round is left the
step is accepted (``fail_workflow: false`` or ``ignore_validation_failure``, warning
W3003) or fails with E3010.  ``prompt`` is never asked: there is no ``Prompt`` effect
yet, so it counts as declined (docs/decisions.md).
"""

from __future__ import annotations

import attrs
from pyrsistent import pmap

from prodigy_core import step_handlers, stepper
from prodigy_core.effects import Print, ReadFile
from prodigy_core.events import FileRead
from prodigy_core.interpolate import interpolate
from prodigy_core.model import ValidateSpec
from prodigy_core.results import ExecResult
from prodigy_core.step_frames import Outcome, Status, StepFrame, Tx, log_step
from prodigy_core.validation_result import W3005, Verdict, failed, judge, pct, variables


def wanted(frame: StepFrame) -> bool:
    spec = frame.step.validate
    return (spec is not None and bool(spec.commands) and not frame.step.skip_validation
            and not (frame.last is not None and frame.last.planned))


def _spec(frame: StepFrame) -> ValidateSpec:
    assert frame.step.validate is not None
    return frame.step.validate


def start(tx: Tx, status: Status) -> None:
    frame = tx.top
    assert isinstance(frame, StepFrame)
    tx.replace_top(attrs.evolve(frame, final_status=status, val_round=0))
    _run_command(tx, 0)


def _run_command(tx: Tx, index: int) -> None:
    frame = tx.top
    assert isinstance(frame, StepFrame)
    spec = _spec(frame)
    tx.replace_top(attrs.evolve(frame, stage="child", child_role="validate", val_index=index))
    env = (*frame.env, ("PRODIGY_VALIDATION", "true"))
    stepper.start_step(tx, spec.commands[index], f"{frame.path}.validate.commands[{index}]",
                       pmap(), default_timeout=spec.timeout, base_env=env,
                       base_cwd=frame.cwd)


def command_done(tx: Tx, frame: StepFrame, outcome: Outcome) -> None:
    """A validation command ended: the next one, the result file, or the verdict."""
    spec = _spec(frame)
    if outcome.status == "failed":
        text = (outcome.stderr.strip() or outcome.output.strip() or outcome.error or "")
        first = "\n".join(text.splitlines()[:3])
        _verdict(tx, frame, failed(f"Validation step {frame.val_index + 1} failed: {first}"))
        return
    if frame.val_index + 1 < len(spec.commands):
        _run_command(tx, frame.val_index + 1)
        return
    if spec.result_file is not None:
        path = interpolate(spec.result_file, tx.visible(), environ=tx.ctx.environ_map).text
        cid = tx.new_id()
        tx.replace_top(attrs.evolve(frame, stage="validation_file", pending=cid))
        tx.emit(ReadFile(command_id=cid, cwd=frame.cwd, path=path))
        return
    _verdict(tx, frame, judge(outcome.output, threshold=spec.threshold,
                              schema=spec.expected_schema))


def on_file(tx: Tx, frame: StepFrame, event: FileRead) -> None:
    spec = _spec(frame)
    if event.content is None:
        message = event.message or f"could not read {spec.result_file}"
        _verdict(tx, frame, failed(f"validation result file: {message}"))
        return
    _verdict(tx, frame, judge(event.content, threshold=spec.threshold,
                              schema=spec.expected_schema))


def _verdict(tx: Tx, frame: StepFrame, verdict: Verdict) -> None:
    spec = _spec(frame)
    tx.assign(variables(verdict, frame.val_round + 1))
    frame = attrs.evolve(frame, stage="running", val_completion=verdict.completion,
                         val_passed=verdict.passed)
    tx.replace_top(frame)
    if verdict.not_json:
        tx.emit(Print(text=W3005, stream="err"))
    if verdict.problem is not None:
        tx.emit(Print(text=f"  {verdict.problem}", stream="err"))
    limit = spec.on_incomplete.max_attempts if spec.on_incomplete is not None else 0
    if frame.val_round > 0:
        tx.emit(Print(text=f"Validation attempt {frame.val_round}/{limit}: "
                           f"{pct(verdict.completion)} complete"))
    threshold = pct(spec.threshold)
    if verdict.passed:
        tx.emit(Print(text=f"Validation passed: {pct(verdict.completion)} complete "
                           f"(threshold: {threshold})"))
        step_handlers.after_validation(tx, frame.final_status or "succeeded")
        return
    if frame.val_round == 0:
        tx.emit(Print(text=f"Validation incomplete: {pct(verdict.completion)} complete "
                           f"(threshold: {threshold})"))
    handlers = spec.on_incomplete
    if handlers is not None and handlers.commands and frame.val_round < handlers.max_attempts:
        _run_handlers(tx, frame)
        return
    _not_passed(tx, frame)


def _run_handlers(tx: Tx, frame: StepFrame) -> None:
    handlers = _spec(frame).on_incomplete
    assert handlers is not None
    log_step(tx, frame, "handler_started", handler="on_incomplete", mode="handler")
    tx.replace_top(attrs.evolve(frame, stage="child", child_role="on_incomplete"))
    base = f"{frame.path}.validate.on_incomplete.commands"
    paths = tuple(f"{base}[{i}]" for i in range(len(handlers.commands)))
    step_handlers.start_seq(tx, handlers.commands, paths, pmap())


def handlers_done(tx: Tx, frame: StepFrame, outcome: Outcome) -> None:
    """An ``on_incomplete`` round ended: validate again, or stop after a failing handler."""
    frame = attrs.evolve(frame, val_round=frame.val_round + 1)
    tx.replace_top(frame)
    if outcome.status == "failed":
        tx.emit(Print(text=f"  on_incomplete handler of '{frame.display}' failed",
                      stream="err"))
        _not_passed(tx, frame)
        return
    _run_command(tx, 0)


def _not_passed(tx: Tx, frame: StepFrame) -> None:
    """No round left (spec 12 §2.4): accept the step with W3003, or fail it (E3010)."""
    spec = _spec(frame)
    handlers = spec.on_incomplete
    rounds = frame.val_round if handlers is not None and frame.val_round > 0 else 1
    message = (f"Validation failed after {rounds} attempts. "
               f"Completion: {pct(frame.val_completion)}")
    if handlers is not None and handlers.prompt is not None:
        tx.emit(Print(text="  on_incomplete prompt cannot be asked by this version; "
                           "treated as declined", stream="err"))
    fail = handlers.fail_workflow if handlers is not None else True
    if frame.step.ignore_validation_failure or not fail:
        tx.emit(Print(text=f"warning[W3003]: {message} (accepted)", stream="err"))
        step_handlers.after_validation(tx, frame.final_status or "succeeded")
        return
    last = frame.last or ExecResult(exit_code=0, passed=True)
    step_handlers.finish_failed(tx, frame, attrs.evolve(
        last, passed=False, error_class="validation_failed", error_code="E3010",
        message=message))
