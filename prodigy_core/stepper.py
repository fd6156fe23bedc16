"""The step machine: one step, in any scope, through the algorithm of spec 02 §8.

Theory of operation
-------------------
A step may run other steps (``on_failure`` handlers, the fix loop, ``on_exit_code``,
``on_success``, a retry fallback), which are full steps themselves.  The machine keeps
a *stack of frames*: a ``StepFrame`` per step in progress and a ``SeqFrame`` per list of
handler steps.  Only the top frame ever waits for the world, and it waits for at most
one spawned effect (``pending``).  When a frame finishes it is popped and its
``Outcome`` is handed to the frame below, which continues; when the last frame
finishes, the outcome goes back to the scope machine (a run, an agent…).

Stages of a ``StepFrame``:

``head_before``  waiting for ``HEAD`` before an execution (``commit_required``,
                 ``outputs``, ``message_pattern``, ``squash``)
``exec``         waiting for the command (``CommandFinished``/``FileWritten``…)
``commit``       waiting for the ``auto_commit`` (``ChangesCommitted``)
``head_after``   waiting for ``HEAD`` after a passing execution
``changes``      waiting for the new commits and changed files (``CommitsListed``)
``validate``     waiting for ``step_validate`` command ``validate_index``
``squash``       waiting for the squash of the new commits (``CommitsSquashed``)
``backoff``      waiting for a retry delay (``Slept``)
``child``        a handler frame above is running; ``child_role`` says which one
``output_file``  waiting for ``output_file`` to be written

After an execution, ``_checks`` walks the stages ``commit`` → ``head_after`` →
``changes`` → ``validate`` → ``squash``, starting each one that applies
(``prodigy_core.commits`` decides), and then hands the result to the attempt loop.

Variables set by any step of the scope live in ``Stepper.vars``; handler-local
variables (``error.*``, ``test.*``) live in the frame that introduced them and are
visible to every frame above it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import attrs
from pyrsistent import PMap, pmap

from prodigy_core import commits
from prodigy_core import retry as retry_math
from prodigy_core.context import RunContext, child_environment, resolve_dir
from prodigy_core.display import display_name
from prodigy_core.effects import (
    DescribeStep,
    Effect,
    LogEvent,
    Print,
    ReadGitHead,
    RunCommand,
    Sleep,
    WriteFile,
)
from prodigy_core.events import (
    ChangesCommitted,
    CommandFinished,
    CommandNotStarted,
    CommitsListed,
    CommitsSquashed,
    Event,
    FileWriteFailed,
    FileWritten,
    GitFailed,
    GitHeadRead,
    Slept,
)
from prodigy_core.expressions import MISSING, ExprError, Missing, eval_when, parse_when
from prodigy_core.interpolate import Var, interpolate, lookup
from prodigy_core.json_values import JSON
from prodigy_core.masking import REDACTED, is_sensitive
from prodigy_core.model import OnFailure, RetrySpec, Step
from prodigy_core.problems import InvalidTransition
from prodigy_core.results import (
    ExecResult,
    capture_variables,
    error_excerpt,
    result_variables,
    tail_lines,
)

Status = Literal["succeeded", "recovered", "failed", "failed_allowed", "skipped"]
SCRIPT_LIMIT = 100_000


@attrs.frozen(kw_only=True)
class Outcome:
    """How a step ended (spec 02 §8 stage 8)."""

    status: Status
    exit_code: int | None = None
    output: str = ""
    stderr: str = ""
    error: str | None = None
    error_code: str | None = None
    error_class: str | None = None
    fatal: bool = False
    duration: float = 0.0
    executions: int = 0

    @property
    def ok(self) -> bool:
        return self.status != "failed"


@attrs.frozen(kw_only=True)
class StepFrame:
    step: Step
    path: str
    display: str
    locals: PMap[str, Var] = pmap()
    root: bool = False
    stage: str = "start"
    pending: int | None = None
    cwd: str = ""
    env: tuple[tuple[str, str], ...] = ()
    text: str = ""
    content: str = ""
    timeout: float | None = None
    attempt: int = 0
    executions: int = 0
    runs: int = 1
    in_fix_loop: bool = False
    budget_start: float | None = None
    head_before: str | None = None
    last: ExecResult | None = None
    mono: float = 0.0
    new_commits: tuple[tuple[str, str], ...] = ()
    found_outputs: tuple[tuple[str, str], ...] = ()
    validate_index: int = 0
    allowed: bool = False
    fallback_done: bool = False
    child_role: str = ""
    final_status: Status | None = None
    total_duration: float = 0.0


@attrs.frozen(kw_only=True)
class SeqFrame:
    steps: tuple[Step, ...]
    paths: tuple[str, ...]
    locals: PMap[str, Var] = pmap()
    default_timeout: float | None = None
    index: int = 0
    failed: bool = False
    last_output: str = ""


Frame = StepFrame | SeqFrame


@attrs.frozen(kw_only=True)
class Stepper:
    """The step machine's state for one scope."""

    vars: PMap[str, Var] = pmap()
    stack: tuple[Frame, ...] = ()
    next_id: int = 1
    assigned: PMap[str, Var] = pmap()
    iteration: int = 1
    input_index: int | None = None
    step_number: str = ""

    @property
    def busy(self) -> bool:
        return bool(self.stack)

    @property
    def pending(self) -> int | None:
        if not self.stack:
            return None
        top = self.stack[-1]
        return top.pending if isinstance(top, StepFrame) else None


class _Tx:
    """Accumulates effects during one transition (local to a pure call)."""

    def __init__(self, st: Stepper, ctx: RunContext, base: PMap[str, Var]) -> None:
        self.st = st
        self.ctx = ctx
        self.base = base
        self.effects: list[Effect] = []
        self.done: Outcome | None = None

    def emit(self, effect: Effect) -> None:
        self.effects.append(effect)

    def new_id(self) -> int:
        cid = self.st.next_id
        self.st = attrs.evolve(self.st, next_id=cid + 1)
        return cid

    def visible(self) -> PMap[str, Var]:
        merged = self.base.update(self.st.vars)
        for frame in self.st.stack:
            if frame.locals:
                merged = merged.update(frame.locals)
        result: PMap[str, Var] = merged
        return result

    def assign(self, values: Mapping[str, Var]) -> None:
        if not values:
            return
        self.st = attrs.evolve(
            self.st, vars=self.st.vars.update(values), assigned=self.st.assigned.update(values)
        )

    @property
    def top(self) -> Frame:
        return self.st.stack[-1]

    def replace_top(self, frame: Frame) -> None:
        self.st = attrs.evolve(self.st, stack=(*self.st.stack[:-1], frame))

    def push(self, frame: Frame) -> None:
        self.st = attrs.evolve(self.st, stack=(*self.st.stack, frame))

    def pop(self) -> Frame:
        frame = self.st.stack[-1]
        self.st = attrs.evolve(self.st, stack=self.st.stack[:-1])
        return frame


# --- public entry points ------------------------------------------------------------


def begin(
    st: Stepper, ctx: RunContext, base: PMap[str, Var], step: Step, path: str
) -> tuple[Stepper, tuple[Effect, ...], Outcome | None]:
    """Start a top-level step of a scope."""
    if st.stack:
        raise InvalidTransition("begin() while a step is still running")
    tx = _Tx(attrs.evolve(st, assigned=pmap()), ctx, base)
    _start_step(tx, step, path, pmap(), root=True)
    return tx.st, tuple(tx.effects), tx.done


def on_event(
    st: Stepper, ctx: RunContext, base: PMap[str, Var], event: Event
) -> tuple[Stepper, tuple[Effect, ...], Outcome | None]:
    """Feed a completion event to the frame that waits for it."""
    if not st.stack:
        raise InvalidTransition(f"step machine is idle but received {type(event).__name__}")
    top = st.stack[-1]
    if not isinstance(top, StepFrame) or top.pending is None:
        raise InvalidTransition(f"no frame waits for {type(event).__name__}")
    if getattr(event, "command_id", None) != top.pending:
        raise InvalidTransition(
            f"{type(event).__name__} for command {getattr(event, 'command_id', None)}"
            f" but command {top.pending} is outstanding"
        )
    tx = _Tx(st, ctx, base)
    frame = attrs.evolve(top, pending=None)
    tx.replace_top(frame)
    if frame.stage == "exec" and isinstance(event, CommandFinished | CommandNotStarted):
        _on_command(tx, frame, event)
    elif frame.stage == "exec" and isinstance(event, FileWritten | FileWriteFailed):
        _on_file(tx, frame, event)
    elif frame.stage == "head_before" and isinstance(event, GitHeadRead):
        tx.replace_top(attrs.evolve(frame, head_before=event.sha))
        _execute(tx)
    elif frame.stage == "head_after" and isinstance(event, GitHeadRead):
        _on_head_after(tx, frame, event)
    elif frame.stage == "commit" and isinstance(event, ChangesCommitted | GitFailed):
        _on_git(tx, frame, commits.after_commit(_last(frame), event, frame.display))
    elif frame.stage == "changes" and isinstance(event, CommitsListed | GitFailed):
        _on_changes(tx, frame, event)
    elif frame.stage == "squash" and isinstance(event, CommitsSquashed | GitFailed):
        _on_git(tx, frame, commits.after_squash(_last(frame), event, len(frame.new_commits)))
    elif frame.stage == "validate" and isinstance(event, CommandFinished | CommandNotStarted):
        _on_validate(tx, frame, event)
    elif frame.stage == "backoff" and isinstance(event, Slept):
        _execute(tx)
    elif frame.stage == "output_file" and isinstance(event, FileWritten | FileWriteFailed):
        _on_output_file(tx, frame, event)
    else:
        raise InvalidTransition(f"stage {frame.stage!r} cannot receive {type(event).__name__}")
    return tx.st, tuple(tx.effects), tx.done


# --- starting a step ----------------------------------------------------------------


def _start_step(
    tx: _Tx, step: Step, path: str, locals_: PMap[str, Var], *, root: bool = False,
    default_timeout: float | None = None,
) -> None:
    display = display_name(step)
    frame = StepFrame(step=step, path=path, display=display, locals=locals_, root=root)
    tx.push(frame)
    visible = tx.visible()
    # 1. condition
    if step.when is not None and step.when is not True:
        run: bool
        if step.when is False:
            run = False
        else:
            parsed = parse_when(step.when)
            if isinstance(parsed, ExprError):
                _finish(tx, _fail_outcome(parsed.message, "E3004", "command_failed", None),
                        print_failure=True)
                return
            unknown = False

            def resolve(name: str) -> JSON | Missing:
                nonlocal unknown
                var = lookup(name, visible, tx.ctx.environ_map)
                if var is None:
                    unknown = True
                    return MISSING
                return var.value

            value = eval_when(parsed, resolve)
            if isinstance(value, ExprError):
                if not (tx.ctx.dry_run and unknown):
                    _finish(tx, _fail_outcome(value.message, "E3004", "command_failed", None),
                            print_failure=True)
                    return
                run = True
            else:
                run = value or (tx.ctx.dry_run and unknown)
        if not run:
            _log(tx, frame, "step_skipped", reason="when condition is false")
            tx.emit(Print(text="  Skipped: when condition is false"))
            _finish(tx, Outcome(status="skipped", output="Skipped: when condition is false"))
            return
    # 2. prepare
    strict = tx.ctx.strict_vars
    unresolved: list[str] = []
    step_env: dict[str, str] = {}
    for name, raw in step.env:
        res = interpolate(raw, visible, environ=tx.ctx.environ_map)
        unresolved.extend(res.unresolved)
        step_env[name] = res.text
    wd = None
    if step.working_dir is not None:
        res = interpolate(step.working_dir, visible, environ=tx.ctx.environ_map)
        unresolved.extend(res.unresolved)
        wd = res.text
    cwd = resolve_dir(tx.ctx, wd)
    text = ""
    content = ""
    if step.kind == "shell":
        res = interpolate(step.command, visible, shell=True, environ=tx.ctx.environ_map)
        unresolved.extend(res.unresolved)
        text = res.text
    elif step.kind == "write_file" and step.write_file is not None:
        res = interpolate(step.write_file.path, visible, environ=tx.ctx.environ_map)
        unresolved.extend(res.unresolved)
        text = res.text
        res = interpolate(step.write_file.content, visible, environ=tx.ctx.environ_map)
        unresolved.extend(res.unresolved)
        content = res.text
    else:
        res = interpolate(step.command, visible, environ=tx.ctx.environ_map)
        text = res.text
    timeout = step.timeout if step.timeout is not None else default_timeout
    for name, env_value in step_env.items():
        value_shown = REDACTED if is_sensitive(name) else env_value
        tx.emit(Print(text=f"    env {name}={value_shown}", level="debug"))
    frame = attrs.evolve(frame, cwd=cwd, text=text, content=content, timeout=timeout,
                         env=tuple(step_env.items()))
    tx.replace_top(frame)
    if strict and unresolved and not tx.ctx.dry_run:
        names = sorted(set(unresolved))
        available = sorted(visible.keys())
        listed = available[:50]
        more = f", … ({len(available) - 50} more)" if len(available) > 50 else ""
        message = (
            f"unresolved variable in step '{display}'\n  unresolved: {', '.join(names)}\n"
            f"  available: {', '.join(listed)}{more}"
        )
        _finish(tx, _fail_outcome(message, "E2001", "command_failed", None), print_failure=True)
        return
    if step.kind not in ("shell", "write_file"):
        message = (
            f"'{step.kind}' steps are not supported by this version of Prodigy yet "
            f"(step '{display}')"
        )
        code = "E7001" if step.kind == "claude" else "E1016"
        _finish(tx, _fail_outcome(message, code, "command_failed", None), print_failure=True)
        return
    if tx.ctx.dry_run and frame.root:
        tx.emit(DescribeStep(info=_describe(tx, frame)))
    _log(tx, frame, "step_started")
    if commits.needs_head(step):
        _read_head(tx, "head_before")
    else:
        _execute(tx)


def _describe(tx: _Tx, frame: StepFrame) -> JSON:
    step = frame.step
    spec = _retry_spec(tx, step)
    handlers: list[str] = []
    if step.on_failure is not None:
        handlers.append("on_failure")
    if step.on_success is not None:
        handlers.append("on_success")
    if step.on_exit_code:
        handlers.append("on_exit_code")
    argv: list[JSON] = []
    if step.kind == "shell":
        argv = ["sh", "-c", frame.text]
    return {
        "scope": "workflow",
        "index": tx.st.step_number,
        "display": frame.display,
        "kind": step.kind,
        "command": frame.text if step.kind != "write_file" else f"write {frame.text}",
        "argv": argv,
        "cwd": frame.cwd,
        "timeout": step.timeout,
        "retry": None if spec is None else {"attempts": spec.attempts},
        "when": step.when if isinstance(step.when, str) else None,
        "commit_required": step.commit_required,
        "auto_commit": step.auto_commit,
        "outputs": [name for name, _glob in step.outputs],
        "handlers": list(handlers),
    }


def _read_head(tx: _Tx, stage: str) -> None:
    frame = tx.top
    assert isinstance(frame, StepFrame)
    cid = tx.new_id()
    tx.replace_top(attrs.evolve(frame, stage=stage, pending=cid))
    tx.emit(ReadGitHead(command_id=cid, cwd=frame.cwd))


def _execute(tx: _Tx) -> None:
    frame = tx.top
    assert isinstance(frame, StepFrame)
    step = frame.step
    cid = tx.new_id()
    attempt = frame.attempt + 1
    executions = frame.executions + 1
    frame = attrs.evolve(frame, stage="exec", pending=cid, attempt=attempt, executions=executions,
                         new_commits=(), found_outputs=())
    tx.replace_top(frame)
    if step.kind == "write_file" and step.write_file is not None:
        tx.emit(WriteFile(command_id=cid, cwd=frame.cwd, path=frame.text, content=frame.content,
                          format=step.write_file.format, mode=_mode(step.write_file.mode),
                          create_dirs=step.write_file.create_dirs, display=frame.display,
                          step_path=frame.path))
        return
    env = child_environment(
        tx.ctx, step_env=dict(frame.env), clear=step.clear_env, iteration=tx.st.iteration,
        attempt=executions, input_index=tx.st.input_index, timeout=frame.timeout,
    )
    long_text = len(frame.text.encode("utf-8", "replace")) > SCRIPT_LIMIT
    tx.emit(RunCommand(
        command_id=cid,
        argv=("sh",) if long_text else ("sh", "-c", frame.text),
        script=frame.text if long_text else None,
        cwd=frame.cwd, env=env, timeout=frame.timeout, stream_output=True,
        display=frame.display, step_path=frame.path,
    ))


def _mode(text: str) -> int:
    try:
        return int(text, 8)
    except ValueError:
        return 0o644


# --- results of an execution ----------------------------------------------------------


def _on_command(tx: _Tx, frame: StepFrame, event: CommandFinished | CommandNotStarted) -> None:
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
            message=f"Command timed out after {_num(secs)} seconds",
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


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _on_file(tx: _Tx, frame: StepFrame, event: FileWritten | FileWriteFailed) -> None:
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


def _record_result(
    tx: _Tx, frame: StepFrame, result: ExecResult, extra: dict[str, JSON] | None = None
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


def _on_head_after(tx: _Tx, frame: StepFrame, event: GitHeadRead) -> None:
    result = frame.last
    assert result is not None
    if not event.planned and event.sha == frame.head_before:
        result = attrs.evolve(
            result, passed=False, error_class="commit_required", error_code="E3003",
            message=f"Step '{frame.display}' has commit_required=true but no commits were created",
        )
        tx.replace_top(attrs.evolve(frame, last=result))
    _checks(tx, "head_after")


def _last(frame: StepFrame) -> ExecResult:
    assert frame.last is not None
    return frame.last


_CHECKS = ("commit", "head_after", "changes", "validate", "squash")


def _checks(tx: _Tx, done: str | None) -> None:
    """Start the first check after ``done`` that applies; none left → the attempt loop."""
    frame = tx.top
    assert isinstance(frame, StepFrame)
    result = _last(frame)
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
            _read_head(tx, stage)
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
    _after_exec(tx, result, monotonic=frame.mono, duration=result.duration)


def _on_git(tx: _Tx, frame: StepFrame, answer: tuple[ExecResult, tuple[Print, ...]]) -> None:
    result, prints = answer
    for line in prints:
        tx.emit(line)
    tx.replace_top(attrs.evolve(frame, last=result))
    _checks(tx, frame.stage)


def _on_changes(tx: _Tx, frame: StepFrame, event: CommitsListed | GitFailed) -> None:
    checked = commits.check_changes(frame.step, frame.display, _last(frame), event)
    for line in checked.prints:
        tx.emit(line)
    tx.replace_top(attrs.evolve(frame, last=checked.result, new_commits=checked.commits,
                                found_outputs=checked.outputs))
    _checks(tx, "changes")


def _start_validation(tx: _Tx, frame: StepFrame) -> bool:
    spec = frame.step.step_validate
    if spec is None or frame.step.skip_validation or not spec.commands:
        return False
    _run_validation(tx, frame, 0)
    return True


def _run_validation(tx: _Tx, frame: StepFrame, index: int) -> None:
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
                       display=f"{frame.display} (validate {index + 1})", step_path=frame.path))


def _on_validate(tx: _Tx, frame: StepFrame, event: CommandFinished | CommandNotStarted) -> None:
    spec = frame.step.step_validate
    assert spec is not None and frame.last is not None
    ok = isinstance(event, CommandFinished) and event.exit_code == 0 and not event.timed_out
    if ok and frame.validate_index + 1 < len(spec.commands):
        _run_validation(tx, frame, frame.validate_index + 1)
        return
    result = frame.last
    if not ok:
        output = ""
        if isinstance(event, CommandFinished):
            output = (event.stderr or event.stdout).strip()
        else:
            output = event.message
        message = f"step_validate command {frame.validate_index + 1} failed: {output}"
        if frame.step.ignore_validation_failure:
            tx.emit(Print(text=f"warning[W3003]: {message}", stream="err"))
        else:
            result = attrs.evolve(result, passed=False, error_class="validation_failed",
                                  error_code="E3010", message=message)
    tx.replace_top(attrs.evolve(frame, last=result, mono=event.monotonic))
    _checks(tx, "validate")


# --- the attempt loop ------------------------------------------------------------------


def _retry_spec(tx: _Tx, step: Step) -> RetrySpec | None:
    return step.retry if step.retry is not None else tx.ctx.retry_defaults


def _after_exec(tx: _Tx, result: ExecResult, *, monotonic: float, duration: float) -> None:
    frame = tx.top
    assert isinstance(frame, StepFrame)
    frame = attrs.evolve(frame, total_duration=frame.total_duration + result.duration)
    if frame.budget_start is None:
        frame = attrs.evolve(frame, budget_start=monotonic - duration)
    tx.replace_top(frame)
    if result.passed:
        if frame.attempt > 1:
            tx.emit(Print(text=f"  '{frame.display}' succeeded after {frame.attempt} attempts"))
        _attempts_done(tx, result)
        return
    spec = _retry_spec(tx, frame.step)
    text = _error_text(result)
    if (
        spec is not None
        and frame.attempt < spec.attempts
        and retry_math.should_retry(spec, error_class=result.error_class or "command_failed",
                                    exit_code=result.exit_code, text=text)
    ):
        delay = retry_math.delay_for(spec, frame.attempt, seed=tx.ctx.seed,
                                     key=f"{frame.path}:{frame.runs}")
        start = frame.budget_start if frame.budget_start is not None else monotonic
        if spec.retry_budget is not None and (monotonic - start) + delay > spec.retry_budget:
            tx.emit(Print(text=f"  Retry budget exhausted for '{frame.display}'", stream="err"))
            _exhausted(tx, frame, spec, result)
            return
        tx.emit(Print(text=f"  Retrying {frame.display} (attempt {frame.attempt + 1}/"
                           f"{spec.attempts}) after {retry_math.format_delay(delay)}"))
        _log(tx, frame, "step_retrying", attempt=frame.attempt + 1,
             delay_ms=int(delay * 1000), error=result.message or "")
        cid = tx.new_id()
        tx.replace_top(attrs.evolve(frame, stage="backoff", pending=cid))
        tx.emit(Sleep(command_id=cid, seconds=delay))
        return
    if spec is not None and frame.attempt > 1:
        first = (result.message or "").split("\n", 1)[0]
        tx.emit(Print(text=f"  Failed '{frame.display}' after {frame.attempt} attempts: {first}",
                      stream="err"))
    _exhausted(tx, frame, spec, result)


def _exhausted(tx: _Tx, frame: StepFrame, spec: RetrySpec | None, result: ExecResult) -> None:
    if spec is not None and spec.exhausted == "continue":
        tx.replace_top(attrs.evolve(frame, allowed=True))
        _attempts_done(tx, result)
        return
    if spec is not None and spec.exhausted == "fallback" and spec.fallback_command \
            and not frame.fallback_done:
        handler = _command_step(spec.fallback_command, frame.path + ".retry.on_failure.fallback")
        tx.replace_top(attrs.evolve(frame, stage="child", child_role="fallback",
                                    fallback_done=True))
        _start_step(tx, handler, handler.source, pmap())
        return
    _attempts_done(tx, result)


def _command_step(text: str, source: str) -> Step:
    """A handler given as a plain string: ``/x`` or ``claude:`` → Claude, else shell."""
    stripped = text.strip()
    if stripped.startswith("claude:"):
        return Step(kind="claude", command=stripped[len("claude:"):].strip(), source=source)
    if stripped.startswith("/"):
        return Step(kind="claude", command=stripped, source=source)
    if stripped.startswith("shell:"):
        return Step(kind="shell", command=stripped[len("shell:"):].strip(), source=source)
    return Step(kind="shell", command=text, source=source)


def _error_text(result: ExecResult) -> str:
    return "\n".join(p for p in (result.message or "", result.stderr, result.stdout) if p)


def _exit_handler(step: Step, code: int) -> Step | None:
    for key, handler in step.on_exit_code:
        if key == code:
            return handler
    return None


def _attempts_done(tx: _Tx, result: ExecResult) -> None:
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
        _log(tx, frame, "handler_started", handler="on_exit_code", mode="handler")
        _start_step(tx, handler, f"{frame.path}.on_exit_code.{result.exit_code}", locals_)
        return
    if result.passed:
        _success(tx, "succeeded")
        return
    _failure(tx, frame, result)


def _error_locals(tx: _Tx, frame: StepFrame, result: ExecResult) -> PMap[str, Var]:
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


def _failure(tx: _Tx, frame: StepFrame, result: ExecResult) -> None:
    spec = frame.step.on_failure
    if spec is None or (not spec.commands and not spec.allow):
        _finish_failed(tx, frame, result)
        return
    if spec.allow:
        _finish_failed(tx, frame, result, allowed=True)
        return
    if spec.max_attempts is not None and spec.max_attempts >= 2:
        if spec.strategy_given and spec.strategy != "recovery":
            tx.emit(Print(text="warning[W1012]: `strategy` has no effect in a fix loop",
                          stream="err"))
        tx.replace_top(attrs.evolve(frame, in_fix_loop=True, runs=1))
        _fix_iterate(tx)
        return
    _log(tx, frame, "handler_started", handler="on_failure", mode="handler")
    tx.replace_top(attrs.evolve(frame, stage="child", child_role="on_failure"))
    _start_seq(tx, spec, frame.path, _error_locals(tx, frame, result))


def _start_seq(tx: _Tx, spec: OnFailure, path: str, locals_: PMap[str, Var]) -> None:
    paths = tuple(f"{path}.on_failure.commands[{i}]" for i in range(len(spec.commands)))
    seq = SeqFrame(steps=spec.commands, paths=paths, locals=locals_,
                   default_timeout=spec.timeout)
    tx.push(seq)
    _seq_next(tx)


def _seq_next(tx: _Tx) -> None:
    seq = tx.top
    assert isinstance(seq, SeqFrame)
    if seq.failed or seq.index >= len(seq.steps):
        tx.pop()
        _child_done(tx, Outcome(status="failed" if seq.failed else "succeeded",
                                output=seq.last_output))
        return
    _start_step(tx, seq.steps[seq.index], seq.paths[seq.index], pmap(),
                default_timeout=seq.default_timeout)


def _fix_iterate(tx: _Tx) -> None:
    frame = tx.top
    assert isinstance(frame, StepFrame) and frame.last is not None
    spec = frame.step.on_failure
    assert spec is not None and spec.max_attempts is not None
    if frame.runs >= spec.max_attempts:
        tx.emit(Print(text=f"  Step '{frame.display}' still failing after "
                           f"{spec.max_attempts} attempts", stream="err"))
        _finish_failed(tx, frame, frame.last)
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
    _log(tx, frame, "handler_started", handler="on_failure", mode="fix_loop")
    tx.replace_top(attrs.evolve(frame, stage="child", child_role="fix"))
    _start_seq(tx, spec, frame.path, locals_)


def _success(tx: _Tx, status: Status) -> None:
    frame = tx.top
    assert isinstance(frame, StepFrame)
    if frame.step.on_success is not None and not (frame.last and frame.last.planned):
        tx.replace_top(attrs.evolve(frame, stage="child", child_role="on_success",
                                    final_status=status))
        _log(tx, frame, "handler_started", handler="on_success", mode="handler")
        _start_step(tx, frame.step.on_success, f"{frame.path}.on_success", pmap())
        return
    _finish_pass(tx, status)


def _finish_pass(tx: _Tx, status: Status) -> None:
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


def _on_output_file(tx: _Tx, frame: StepFrame, event: FileWritten | FileWriteFailed) -> None:
    if isinstance(event, FileWriteFailed):
        assert frame.last is not None
        result = attrs.evolve(frame.last, passed=False, error_code="E3005",
                              error_class="command_failed",
                              message=f"could not write output_file: {event.message}")
        _finish_failed(tx, frame, result)
        return
    _finish_frame(tx, frame.final_status or "succeeded")


def _finish_frame(tx: _Tx, status: Status) -> None:
    frame = tx.top
    assert isinstance(frame, StepFrame)
    last = frame.last or ExecResult(exit_code=0, passed=True)
    outcome = Outcome(status=status, exit_code=last.exit_code, output=last.stdout,
                      stderr=last.stderr, duration=frame.total_duration,
                      executions=frame.executions)
    if frame.step.kind == "shell" and frame.root and not last.planned:
        lines, more = tail_lines(last.stdout, 20)
        if lines:
            text = "\n".join(f"    {line}" for line in lines)
            if more:
                text = f"    (… {more} more lines)\n" + text
            tx.emit(Print(text=text, level="verbose"))
    _finish(tx, outcome)


def _finish_failed(tx: _Tx, frame: StepFrame, result: ExecResult, *, allowed: bool = False,
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
    _finish(tx, outcome, print_failure=True)


def _fail_outcome(message: str, code: str, error_class: str, exit_code: int | None) -> Outcome:
    return Outcome(status="failed", exit_code=exit_code, error=message, error_code=code,
                   error_class=error_class)


def _finish(tx: _Tx, outcome: Outcome, *, print_failure: bool = False) -> None:
    """Pop the top step frame and hand its outcome to the frame below."""
    frame = tx.top
    assert isinstance(frame, StepFrame)
    if not frame.root and outcome.status != "skipped":
        kind = "step_failed" if outcome.status == "failed" else "step_completed"
        _log(tx, frame, kind, status=outcome.status, exit_code=outcome.exit_code,
             error=outcome.error, error_code=outcome.error_code)
    tx.pop()
    if print_failure and outcome.status in ("failed", "failed_allowed"):
        _print_failure(tx, frame, outcome)
    if tx.st.stack:
        _child_done(tx, outcome)
    else:
        tx.done = outcome


def _print_failure(tx: _Tx, frame: StepFrame, outcome: Outcome) -> None:
    if outcome.status == "failed_allowed":
        first = (outcome.error or "").split("\n", 1)[0]
        tx.emit(Print(text=f"  Step '{frame.display}' failed (allowed): {first}", stream="err"))
        return
    if outcome.error_code == "E3001" and outcome.exit_code not in (None, 0):
        tx.emit(Print(text=f"Step '{frame.display}' failed with exit code {outcome.exit_code}",
                      stream="err"))
    else:
        tx.emit(Print(text=f"error[{outcome.error_code}]: {outcome.error}", stream="err"))
    if outcome.stderr.strip():
        body, label = outcome.stderr, "stderr"
    else:
        body, label = outcome.output, "stdout"
    if body.strip():
        tx.emit(Print(text=f"=== Error Output ({label}) ===", stream="err"))
        tx.emit(Print(text="\n".join(error_excerpt(body)), stream="err"))


def _child_done(tx: _Tx, outcome: Outcome) -> None:
    parent = tx.top
    if isinstance(parent, SeqFrame):
        failed = outcome.status == "failed"
        tx.replace_top(attrs.evolve(parent, index=parent.index + 1, failed=failed,
                                    last_output=outcome.output))
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
            _finish_failed(tx, parent, result, fatal=fatal)
            return
        frame = attrs.evolve(parent, runs=parent.runs + 1, attempt=0)
        tx.replace_top(frame)
        if commits.needs_head(parent.step):
            _read_head(tx, "head_before")
        else:
            _execute(tx)
    elif role == "on_exit_code":
        if outcome.status == "failed":
            _finish_failed(tx, parent, attrs.evolve(
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
            _finish(tx, Outcome(status="failed_allowed" if parent.step.allow_failure else
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
            _success(tx, "recovered")
        else:
            _attempts_done(tx, last)
    else:
        raise InvalidTransition(f"child finished for unknown role {role!r}")


def _after_handlers(tx: _Tx, frame: StepFrame, outcome: Outcome) -> None:
    spec = frame.step.on_failure
    assert spec is not None
    last = frame.last or ExecResult(exit_code=1)
    ok = outcome.status != "failed"
    if spec.capture:
        tx.assign({spec.capture: Var(value=outcome.output, trusted=False)})
    if not ok and spec.handler_failure_fatal:
        _finish_failed(tx, frame, attrs.evolve(
            last, error_code="E3007",
            message=f"on_failure handler of '{frame.display}' failed"), fatal=True)
        return
    strategy = spec.strategy
    if ok and strategy in ("recovery", "custom") and spec.fail_workflow is not True:
        _finish(tx, Outcome(status="recovered", exit_code=last.exit_code, output=last.stdout,
                            stderr=last.stderr, duration=frame.total_duration,
                            executions=frame.executions))
        return
    if ok and strategy == "fallback":
        if frame.step.capture:
            tx.assign({frame.step.capture: Var(value=outcome.output, trusted=False)})
        _finish(tx, Outcome(status="recovered", exit_code=0, output=outcome.output,
                            duration=frame.total_duration, executions=frame.executions))
        return
    _finish_failed(tx, frame, last)


def _log(tx: _Tx, frame: StepFrame, event_type: str, **extra: JSON) -> None:
    fields: dict[str, JSON] = {
        "scope": "workflow",
        "step_path": frame.path,
        "display": frame.display,
        "kind": frame.step.kind,
        "attempt": max(frame.executions, 1),
    }
    fields.update(extra)
    tx.emit(LogEvent(event_type=event_type, fields=tuple(fields.items())))
