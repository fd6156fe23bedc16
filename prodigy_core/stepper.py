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
``env``          waiting for a dynamic workflow env command (``step_env``), before the
                 step's condition and preparation
``validation_file`` waiting for the ``result_file`` of a completeness ``validate``
                 (``step_validation``; its commands and ``on_incomplete`` handlers run
                 as children with roles ``validate`` and ``on_incomplete``)
``squash``       waiting for the squash of the new commits (``CommitsSquashed``)
``backoff``      waiting for a retry delay (``Slept``)
``child``        a handler frame above is running; ``child_role`` says which one
``output_file``  waiting for ``output_file`` to be written
``git_*``        git context variables (``step_git``): ``git_base``, ``git_workflow``,
                 ``git_step`` before preparation, ``git_start`` before the first
                 execution, ``git_end`` after the step finished

After an execution, ``step_checks`` walks the stages ``commit`` → ``head_after`` →
``changes`` → ``validate`` → ``squash``, starting each one that applies
(``prodigy_core.commits`` decides), and then hands the result to the attempt loop.

Variables set by any step of the scope live in ``Stepper.vars``; handler-local
variables (``error.*``, ``test.*``) live in the frame that introduced them and are
visible to every frame above it.

Modules
-------
``stepper``        the entry points (``begin``, ``on_event``), starting a step (condition,
                   preparation), executing it, and the attempt loop (retries, exhaustion)
``step_checks``    the result of an execution and the checks after it
``step_handlers``  after the attempts: ``on_exit_code``, ``on_failure`` (handlers, fix
                   loop), ``on_success``, ``output_file``; finishing a frame
``step_validation`` the completeness ``validate`` after a pass (spec 12 §2)
``step_git``       git context variables ``step.*`` / ``workflow.*`` (spec 03 §7)
``step_env``       workflow env values computed per step (spec 11 §2.2, §2.3)
``step_report``    the dry-run description of a step and the report of a failure
``step_frames``    the state: ``Stepper``, the frames, ``Outcome``, the transition ``Tx``

A finished frame resumes the frame below it, which may start another step, so
``stepper``, ``step_checks`` and ``step_handlers`` call one another recursively; they
import each other as modules and look names up at call time.
"""

from __future__ import annotations

import attrs
from pyrsistent import PMap, pmap

from prodigy_core import breakers as breakers_mod
from prodigy_core import (
    commits,
    gitvars,
    step_checks,
    step_claude,
    step_foreach,
    step_git,
    step_goal,
    step_handlers,
    step_report,
    step_validation,
)
from prodigy_core import retry as retry_math
from prodigy_core import step_env as late_env
from prodigy_core.analytics import Usage
from prodigy_core.breakers import Breakers
from prodigy_core.context import RunContext, child_environment, resolve_dir
from prodigy_core.display import display_name
from prodigy_core.effects import (
    DescribeStep,
    Effect,
    LogEvent,
    Print,
    ReadGitHead,
    RegisterSecret,
    RunCommand,
    Sleep,
    WriteFile,
)
from prodigy_core.events import (
    ChangesCommitted,
    ClaudeFinished,
    ClaudeLine,
    CommandFinished,
    CommandNotStarted,
    CommitsListed,
    CommitsSquashed,
    Event,
    FileRead,
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
from prodigy_core.model import CircuitBreakerSpec, RetrySpec, Step
from prodigy_core.problems import InvalidTransition
from prodigy_core.reprs import value_class
from prodigy_core.results import ExecResult
from prodigy_core.step_frames import (
    Frame,
    Outcome,
    SeqFrame,
    Status,
    StepFrame,
    Stepper,
    Tx,
    fail_outcome,
    last_result,
    log_step,
    retry_spec,
)

__all__ = [
    "SCRIPT_LIMIT",
    "Frame",
    "Outcome",
    "SeqFrame",
    "Status",
    "StepFrame",
    "Stepped",
    "Stepper",
    "begin",
    "begin_seq",
    "display_name",
    "on_event",
]


SCRIPT_LIMIT = 100_000
ENV_VALUE_LIMIT = 65536  # spec 03 §9.2: larger values are not exported (W3004)


# --- public entry points ------------------------------------------------------------


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class Stepped:
    """What one call of the step machine returns to its scope machine."""

    stepper: Stepper
    effects: tuple[Effect, ...]
    outcome: Outcome | None
    breakers: Breakers


def begin(
    st: Stepper, ctx: RunContext, base: PMap[str, Var], step: Step, path: str,
    breakers: Breakers | None = None,
) -> Stepped:
    """Start a top-level step of a scope.  ``breakers`` are the run's circuit breakers."""
    if st.stack:
        raise InvalidTransition("begin() while a step is still running")
    st = attrs.evolve(st, assigned=pmap(), step_usage=Usage())
    if step.git is not None and step.git.record_end and st.git_step is None \
            and not ctx.dry_run:
        st = attrs.evolve(st, git_step=gitvars.EMPTY_STEP)  # before the scope's first step
    tx = Tx(st, ctx, base, breakers)
    start_step(tx, step, path, pmap(), root=True)
    return Stepped(stepper=tx.st, effects=tuple(tx.effects), outcome=tx.done,
                   breakers=tx.breakers)


def begin_seq(
    st: Stepper, ctx: RunContext, base: PMap[str, Var], steps: tuple[Step, ...],
    paths: tuple[str, ...], breakers: Breakers, *,
    base_env: tuple[tuple[str, str], ...] = (), base_cwd: str | None = None,
) -> Stepped:
    """Start a list of steps run one at a time, stopping at the first failure (a
    ``foreach`` item's ``do`` list); the outcome is the list's."""
    if st.stack:
        raise InvalidTransition("begin_seq() while a step is still running")
    tx = Tx(st, ctx, base, breakers)
    step_handlers.start_seq(tx, steps, paths, pmap(), base_env=base_env, base_cwd=base_cwd,
                            show_output=True)
    return Stepped(stepper=tx.st, effects=tuple(tx.effects), outcome=tx.done,
                   breakers=tx.breakers)


def on_event(
    st: Stepper, ctx: RunContext, base: PMap[str, Var], event: Event,
    breakers: Breakers | None = None,
) -> Stepped:
    """Feed a completion event to the frame that waits for it."""
    if not st.stack:
        raise InvalidTransition(f"step machine is idle but received {type(event).__name__}")
    top = st.stack[-1]
    if isinstance(top, StepFrame) and top.stage == "foreach" and top.each is not None:
        tx = Tx(st, ctx, base, breakers or Breakers())
        step_foreach.on_event(tx, top, event)
        return Stepped(stepper=tx.st, effects=tuple(tx.effects), outcome=tx.done,
                       breakers=tx.breakers)
    if not isinstance(top, StepFrame) or top.pending is None:
        raise InvalidTransition(f"no frame waits for {type(event).__name__}")
    if getattr(event, "command_id", None) != top.pending:
        raise InvalidTransition(
            f"{type(event).__name__} for command {getattr(event, 'command_id', None)}"
            f" but command {top.pending} is outstanding"
        )
    if isinstance(event, ClaudeLine):
        if top.stage != "exec":
            raise InvalidTransition(f"stage {top.stage!r} cannot receive ClaudeLine")
        tx = Tx(st, ctx, base, breakers or Breakers())
        step_claude.on_line(tx, top, event)
        return Stepped(stepper=tx.st, effects=tuple(tx.effects), outcome=None,
                       breakers=tx.breakers)
    tx = Tx(st, ctx, base, breakers_mod.observe(
        breakers or Breakers(), getattr(event, "monotonic", None)))
    frame = attrs.evolve(top, pending=None)
    tx.replace_top(frame)
    if frame.stage == "exec" and isinstance(event, ClaudeFinished):
        step_claude.on_finished(tx, frame, event)
    elif frame.stage == "exec" and isinstance(event, CommandFinished | CommandNotStarted):
        step_checks.on_command(tx, frame, event)
    elif frame.stage == "exec" and isinstance(event, FileWritten | FileWriteFailed):
        step_checks.on_file(tx, frame, event)
    elif frame.stage == "head_before" and isinstance(event, GitHeadRead):
        frame = attrs.evolve(frame, head_before=event.sha)
        if frame.step.git is not None:
            frame = step_git.note_head(tx, frame, event.sha)
        tx.replace_top(frame)
        execute(tx)
    elif frame.stage == "head_after" and isinstance(event, GitHeadRead):
        step_checks.on_head_after(tx, frame, event)
    elif frame.stage == "commit" and isinstance(event, ChangesCommitted | GitFailed):
        step_checks.on_git(
            tx, frame, commits.after_commit(last_result(frame), event, frame.display))
    elif frame.stage == "changes" and isinstance(event, CommitsListed | GitFailed):
        step_checks.on_changes(tx, frame, event)
    elif frame.stage == "squash" and isinstance(event, CommitsSquashed | GitFailed):
        step_checks.on_git(
            tx, frame, commits.after_squash(last_result(frame), event, len(frame.new_commits)))
    elif frame.stage == "validate" and isinstance(event, CommandFinished | CommandNotStarted):
        step_checks.on_validate(tx, frame, event)
    elif frame.stage == "env" and isinstance(event, CommandFinished | CommandNotStarted):
        late_env.on_command(tx, frame, event)
    elif frame.stage == "backoff" and isinstance(event, Slept):
        execute(tx)
    elif frame.stage == "validation_file" and isinstance(event, FileRead):
        step_validation.on_file(tx, frame, event)
    elif frame.stage == "output_file" and isinstance(event, FileWritten | FileWriteFailed):
        step_handlers.on_output_file(tx, frame, event)
    elif frame.stage == "goal_validate":
        step_goal.on_validated(tx, frame, event)
    elif frame.stage == "foreach_items":
        step_foreach.on_items(tx, frame, event)
    elif frame.stage.startswith("git_"):
        step_git.on_event(tx, frame, event)
    else:
        raise InvalidTransition(f"stage {frame.stage!r} cannot receive {type(event).__name__}")
    return Stepped(stepper=tx.st, effects=tuple(tx.effects), outcome=tx.done,
                   breakers=tx.breakers)


# --- starting a step ----------------------------------------------------------------


def start_step(
    tx: Tx, step: Step, path: str, locals_: PMap[str, Var], *, root: bool = False,
    default_timeout: float | None = None, base_env: tuple[tuple[str, str], ...] = (),
    base_cwd: str | None = None, show_output: bool = False,
) -> None:
    """Push a frame for ``step`` and start it.

    ``base_env`` (already interpolated) lies under the step's own ``env`` and
    ``base_cwd`` replaces the scope directory as its default working directory: a
    validation command runs in the environment and directory of the step it validates.
    A step that reads git context variables first reads them (``step_git``).
    """
    display = display_name(step)
    if step.commit_required and commits.commit_checks_disabled(tx.ctx.environ_map):
        step = attrs.evolve(step, commit_required=False)  # warned once at the run's start
    frame = StepFrame(step=step, path=path, display=display, locals=locals_, root=root,
                      timeout=default_timeout, env=base_env, base_cwd=base_cwd,
                      show_output=show_output)
    tx.push(frame)
    if step.git is not None and step_git.preflight(tx, frame):
        return
    prepare(tx)


def prepare(tx: Tx) -> None:
    """Stages 1 and 2 of spec 02 §8 for the top frame: its condition, then interpolation.

    The workflow env values computed per step (``step_env``) come first: the condition
    and the interpolation see them.
    """
    frame = tx.top
    assert isinstance(frame, StepFrame)
    if tx.ctx.late_env and not frame.env_ready:
        if late_env.evaluate(tx):
            return  # a dynamic env command runs first
        frame = tx.top
        assert isinstance(frame, StepFrame)
    step, display = frame.step, frame.display
    visible = tx.visible()
    # 1. condition
    if step.when is not None and step.when is not True:
        run: bool
        if step.when is False:
            run = False
        else:
            parsed = parse_when(step.when)
            if isinstance(parsed, ExprError):
                step_handlers.finish(
                    tx, fail_outcome(parsed.message, "E3004", "command_failed", None),
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
                    step_handlers.finish(
                        tx, fail_outcome(value.message, "E3004", "command_failed", None),
                        print_failure=True)
                    return
                run = True
            else:
                run = value or (tx.ctx.dry_run and unknown)
        if not run:
            log_step(tx, frame, "step_skipped", reason="when condition is false")
            tx.emit(Print(text="  Skipped: when condition is false"))
            step_handlers.finish(
                tx, Outcome(status="skipped", output="Skipped: when condition is false"))
            return
    # 2. prepare
    strict = tx.ctx.strict_vars
    unresolved: list[str] = []
    step_env: dict[str, str] = dict(frame.env)
    for name, raw in step.env:
        res = interpolate(raw, visible, environ=tx.ctx.environ_map)
        unresolved.extend(res.unresolved)
        step_env[name] = res.text
        if is_sensitive(name) and len(res.text) >= 4 and res.text not in tx.ctx.secret_values:
            tx.emit(RegisterSecret(value=res.text))  # masked from now on (spec 11 §9.1)
        elif is_sensitive(name) and 0 < len(res.text) < 4 and res.text != raw:
            # a literal value is warned about at start; this one came from interpolation
            tx.emit(Print(text=f"warning[W1013]: the value of '{name}' in '{display}' is "
                               "shorter than 4 characters and cannot be masked",
                          stream="err"))
    wd = None
    if step.working_dir is not None:
        res = interpolate(step.working_dir, visible, environ=tx.ctx.environ_map)
        unresolved.extend(res.unresolved)
        wd = res.text
    cwd = frame.base_cwd if wd is None and frame.base_cwd is not None \
        else resolve_dir(tx.ctx, wd)
    if wd is not None and not tx.ctx.dry_run and not _inside(cwd, tx.ctx.project_dir):
        tx.emit(Print(text=f"warning[W3002]: working_dir '{cwd}' of '{display}' is outside "
                           "the worktree; commits made there are not checked", stream="err"))
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
    timeout = step.timeout if step.timeout is not None else frame.timeout
    for name, env_value in step_env.items():
        value_shown = REDACTED if is_sensitive(name) else env_value
        tx.emit(Print(text=f"    env {name}={value_shown}", level="debug"))
    frame = attrs.evolve(frame, cwd=cwd, text=text, content=content, timeout=timeout,
                         env=tuple({**dict(frame.wf_env), **step_env}.items()))
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
        step_handlers.finish(tx, fail_outcome(message, "E2001", "command_failed", None),
                             print_failure=True)
        return
    if step.kind == "write_file" and _escapes(text):
        message = (f"write_file path '{text}' of step '{display}' is absolute or leaves the "
                   "working directory (a '..' component); write inside the worktree")
        step_handlers.finish(tx, fail_outcome(message, "E3005", "command_failed", 1),
                             print_failure=True)
        return
    if step.kind not in ("shell", "write_file", "claude", "goal_seek", "foreach"):
        message = (
            f"'{step.kind}' steps are not supported by this version of Prodigy yet "
            f"(step '{display}')"
        )
        code = "E7001" if step.kind == "claude" else "E1016"
        step_handlers.finish(tx, fail_outcome(message, code, "command_failed", None),
                             print_failure=True)
        return
    if tx.ctx.dry_run and frame.root:
        tx.emit(DescribeStep(info=step_report.describe(tx, frame)))
    log_step(tx, frame, "step_started")
    if commits.needs_head(step):
        read_head(tx, "head_before")
    elif step.git is not None and step_git.records(tx, frame):
        read_head(tx, "git_start")
    else:
        execute(tx)


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def _escapes(path: str) -> bool:
    """An interpolated ``write_file`` path that is absolute or has a ``..`` part."""
    return path.startswith(("/", "~")) or ".." in path.replace("\\", "/").split("/")


def read_head(tx: Tx, stage: str) -> None:
    frame = tx.top
    assert isinstance(frame, StepFrame)
    cid = tx.new_id()
    tx.replace_top(attrs.evolve(frame, stage=stage, pending=cid))
    tx.emit(ReadGitHead(command_id=cid, cwd=frame.cwd))


def execute(tx: Tx) -> None:
    frame = tx.top
    assert isinstance(frame, StepFrame)
    step = frame.step
    attempt = frame.attempt + 1
    executions = frame.executions + 1
    breaker = _breaker(tx, frame)
    if breaker is not None and not _admitted(tx, frame, breaker):
        # an open breaker: the execution fails at once (spec 10 §3.2)
        result = ExecResult(exit_code=-1, passed=False, error_class="circuit_open",
                            error_code="E3009",
                            message=f"Circuit breaker '{breaker[0]}' is open")
        tx.emit(Print(text=f"  Circuit breaker '{breaker[0]}' is open; '{frame.display}' "
                           "was not started", stream="err"))
        tx.replace_top(attrs.evolve(frame, stage="running", attempt=attempt,
                                    executions=executions, last=result, breaker=""))
        after_exec(tx, result, monotonic=tx.breakers.now, duration=0.0)
        return
    if step.kind in ("goal_seek", "foreach"):
        frame = attrs.evolve(frame, stage="running", pending=None, attempt=attempt,
                             executions=executions, new_commits=(), found_outputs=(),
                             breaker=breaker[0] if breaker is not None else "")
        tx.replace_top(frame)
        if step.kind == "goal_seek":
            step_goal.execute(tx, frame)
        else:
            step_foreach.execute(tx, frame)
        return
    cid = tx.new_id()
    frame = attrs.evolve(frame, stage="exec", pending=cid, attempt=attempt, executions=executions,
                         new_commits=(), found_outputs=(),
                         breaker=breaker[0] if breaker is not None else "")
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
    if executions == 1:
        for name in sorted({n for n, v in (*tx.ctx.workflow_env, *frame.env)
                            if len(v.encode("utf-8", "replace")) > ENV_VALUE_LIMIT}):
            tx.emit(Print(text=f"warning[W3004]: environment value '{name}' is larger than "
                               f"64 KiB and is not exported to '{frame.display}'",
                          stream="err"))
    if step.kind == "claude":
        step_claude.execute(tx, frame, cid, env)
        return
    long_text = len(frame.text.encode("utf-8", "replace")) > SCRIPT_LIMIT
    tx.emit(RunCommand(
        command_id=cid,
        argv=("sh",) if long_text else ("sh", "-c", frame.text),
        script=frame.text if long_text else None,
        cwd=frame.cwd, env=env, timeout=frame.timeout, stream_output=True,
        display=frame.display, step_path=frame.path, prefix=tx.ctx.output_prefix,
        memory_limit_mb=tx.ctx.memory_limit_mb,
    ))


def _breaker(tx: Tx, frame: StepFrame) -> tuple[str, CircuitBreakerSpec] | None:
    spec = retry_spec(tx, frame.step)
    if spec is None or spec.circuit_breaker is None or tx.ctx.dry_run:
        return None
    return spec.circuit_breaker.name or frame.path, spec.circuit_breaker


def _admitted(tx: Tx, frame: StepFrame, breaker: tuple[str, CircuitBreakerSpec]) -> bool:
    name, spec = breaker
    tx.breakers, ok, changes = breakers_mod.admit(tx.breakers, name, spec)
    _log_changes(tx, frame, changes)
    return ok


def _log_changes(tx: Tx, frame: StepFrame, changes: tuple[breakers_mod.Change, ...]) -> None:
    for name, old, new in changes:
        tx.emit(Print(text=f"  Circuit breaker '{name}': {old} -> {new}"))
        tx.emit(LogEvent(event_type="circuit_breaker_state_changed", fields=(
            ("name", name), ("from", old), ("to", new), ("step_path", frame.path),
            ("session_id", tx.ctx.session_id))))


def _record_breaker(tx: Tx, frame: StepFrame, result: ExecResult) -> StepFrame:
    """Tell the breaker that admitted this execution how it ended."""
    breaker = _breaker(tx, frame)
    if not frame.breaker or breaker is None:
        return frame
    tx.breakers, changes = breakers_mod.record(tx.breakers, frame.breaker, breaker[1],
                                               result.passed)
    _log_changes(tx, frame, changes)
    return attrs.evolve(frame, breaker="")


def _mode(text: str) -> int:
    try:
        return int(text, 8)
    except ValueError:
        return 0o644


# --- the attempt loop ------------------------------------------------------------------


def after_exec(tx: Tx, result: ExecResult, *, monotonic: float, duration: float) -> None:
    frame = tx.top
    assert isinstance(frame, StepFrame)
    frame = attrs.evolve(frame, total_duration=frame.total_duration + result.duration)
    if not result.passed and not result.planned:
        first = (result.message or f"exit code {result.exit_code}").split("\n", 1)[0]
        frame = attrs.evolve(frame, failures=(*frame.failures, first))
    frame = _record_breaker(tx, frame, result)
    if frame.budget_start is None:
        frame = attrs.evolve(frame, budget_start=monotonic - duration)
    tx.replace_top(frame)
    if result.passed:
        if frame.attempt > 1:
            tx.emit(Print(text=f"  '{frame.display}' succeeded after {frame.attempt} attempts"))
        step_handlers.attempts_done(tx, result)
        return
    spec = retry_spec(tx, frame.step)
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
            first = (result.message or "").split("\n", 1)[0]
            tx.emit(Print(text=f"  Failed '{frame.display}' after {frame.attempt} attempts: "
                               f"{first}", stream="err"))
            # E3008 is a note on the underlying error (spec 10 §2.5, §8.2)
            result = attrs.evolve(result, error_code="E3008",
                                  message=f"{result.message or first} (Retry budget exhausted)")
            frame = attrs.evolve(frame, last=result)
            tx.replace_top(frame)
            _exhausted(tx, frame, spec, result)
            return
        tx.emit(Print(text=f"  Retrying {frame.display} (attempt {frame.attempt + 1}/"
                           f"{spec.attempts}) after {retry_math.format_delay(delay)}"))
        log_step(tx, frame, "step_retrying", attempt=frame.attempt + 1,
                 delay_ms=int(delay * 1000), error=result.message or "",
                 error_code=result.error_code)
        cid = tx.new_id()
        tx.replace_top(attrs.evolve(frame, stage="backoff", pending=cid))
        tx.emit(Sleep(command_id=cid, seconds=delay))
        return
    if spec is not None and frame.attempt > 1:
        first = (result.message or "").split("\n", 1)[0]
        tx.emit(Print(text=f"  Failed '{frame.display}' after {frame.attempt} attempts: {first}",
                      stream="err"))
    _exhausted(tx, frame, spec, result)


def _exhausted(tx: Tx, frame: StepFrame, spec: RetrySpec | None, result: ExecResult) -> None:
    if spec is not None and spec.exhausted == "continue":
        tx.replace_top(attrs.evolve(frame, allowed=True))
        step_handlers.attempts_done(tx, result)
        return
    if spec is not None and spec.exhausted == "fallback" and spec.fallback_command \
            and not frame.fallback_done:
        handler = gitvars.mark(
            _command_step(spec.fallback_command, frame.path + ".retry.on_failure.fallback"))
        tx.replace_top(attrs.evolve(frame, stage="child", child_role="fallback",
                                    fallback_done=True))
        start_step(tx, handler, handler.source, pmap())
        return
    step_handlers.attempts_done(tx, result)


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
