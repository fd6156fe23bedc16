"""The step machine's state: the frames, the stack that holds them, and ``Tx``.

``Stepper`` is the state of one scope's step machine (``prodigy_core.stepper`` explains
the machine): the scope's variables and a stack of frames, a ``StepFrame`` per step in
progress (its ``stage`` says what it waits for) and a ``SeqFrame`` per list of handler
steps.  ``Outcome`` is how a step ended.  ``Tx`` lives for one pure transition: it holds
the evolving ``Stepper`` and the run's circuit ``Breakers`` while the machine's functions
push, replace and pop frames, and gathers the effects they emit.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import attrs
from pyrsistent import PMap, pmap

from prodigy_core.analytics import Usage
from prodigy_core.breakers import Breakers
from prodigy_core.claude_stream import ClaudeCall
from prodigy_core.context import RunContext
from prodigy_core.effects import Effect, LogEvent
from prodigy_core.interpolate import Var
from prodigy_core.json_values import JSON
from prodigy_core.model import RetrySpec, Step
from prodigy_core.reprs import value_class
from prodigy_core.results import ExecResult

Status = Literal["succeeded", "recovered", "failed", "failed_allowed", "skipped"]


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
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
    # the retry history (spec 10 §2.8): the first line of each failed execution's error
    # and the attempts the step's retry allowed
    failures: tuple[str, ...] = ()
    max_attempts: int = 1

    @property
    def ok(self) -> bool:
        return self.status != "failed"


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class GoalState:
    """A ``goal_seek`` execution in progress (``step_goal``).

    ``history`` holds ``(attempt, score, command_success, duration_ms)`` per attempt;
    ``elapsed`` is the summed duration of the attempts' commands and validations (the
    core reads no clock).
    """

    attempt: int = 0
    history: tuple[tuple[int, float, bool, int], ...] = ()
    output: str = ""
    gaps: JSON = None
    elapsed: float = 0.0
    command_ok: bool = False
    command_duration: float = 0.0


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class Lane:
    """One ``foreach`` item whose ``do`` steps are running, with its own step machine."""

    index: int
    stepper: Stepper
    locals: PMap[str, Var] = pmap()


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class ForeachState:
    """A ``foreach`` execution in progress (``step_foreach``).

    ``results`` maps an item index to ``(success, error)``; ``restored`` are the indexes
    finished before a resume (not run again).  ``stopping``: an item failed without
    ``continue_on_error`` (or the step's time ran out), so no new item starts.
    ``timer`` is the ``Sleep`` of the step's ``timeout`` while it runs; when it fires
    the running items' commands are cancelled and their answers, still due, are
    ``draining``.  ``span`` is the monotonic interval the step's events covered.
    """

    items: tuple[JSON, ...] = ()
    next: int = 0
    lanes: tuple[Lane, ...] = ()
    results: PMap[int, tuple[bool, str]] = pmap()
    restored: frozenset[int] = frozenset()
    stopping: bool = False
    first_failure: int | None = None
    elapsed: float = 0.0
    timer: int | None = None
    timed_out: bool = False
    closing: bool = False
    draining: frozenset[int] = frozenset()
    span: tuple[float, float] | None = None


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
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
    # completeness ``validate`` (step_validation): handler rounds run, the command
    # running, and the verdict of the latest validation
    val_round: int = 0
    val_index: int = 0
    val_completion: float = 0.0
    val_passed: bool = False
    # the circuit breaker that admitted the execution in progress ("" when none)
    breaker: str = ""
    claude: ClaudeCall | None = None
    transcript: str = ""
    # the directory a validation command inherits (None: the scope's directory); before
    # preparation ``env`` and ``timeout`` hold the defaults inherited from the parent
    base_cwd: str | None = None
    # git context (``step_git``): preflight tasks left, the ``HEAD`` recorded before a
    # top-level step executed, and the outcome held back while ``step.*`` is listed
    git_todo: tuple[str, ...] = ()
    git_started: bool = False
    git_start: str | None = None
    ending: Outcome | None = None
    ending_print: bool = False
    failures: tuple[str, ...] = ()
    # a nested step whose output is shown like a top-level step's (``foreach`` items,
    # ``goal_seek`` attempts)
    show_output: bool = False
    # ``goal_seek`` and ``foreach`` executions in progress (``step_goal``, ``step_foreach``)
    goal: GoalState | None = None
    each: ForeachState | None = None
    # the workflow env entries computed for this step (``step_env``; spec 11 §2.2, §2.3):
    # the values so far, the next entry of ``RunContext.late_env``, and whether all are in
    wf_env: tuple[tuple[str, str], ...] = ()
    env_index: int = 0
    env_ready: bool = False


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class SeqFrame:
    steps: tuple[Step, ...]
    paths: tuple[str, ...]
    locals: PMap[str, Var] = pmap()
    default_timeout: float | None = None
    index: int = 0
    failed: bool = False
    last_output: str = ""
    # the environment and directory the steps inherit (a ``foreach`` item's ``do`` steps),
    # and whether their output is shown like a top-level step's
    base_env: tuple[tuple[str, str], ...] = ()
    base_cwd: str | None = None
    show_output: bool = False
    error: str | None = None
    duration: float = 0.0


Frame = StepFrame | SeqFrame


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class Stepper:
    """The step machine's state for one scope."""

    vars: PMap[str, Var] = pmap()
    stack: tuple[Frame, ...] = ()
    next_id: int = 1
    assigned: PMap[str, Var] = pmap()
    iteration: int = 1
    input_index: int | None = None
    step_number: str = ""
    usage: Usage = Usage()
    step_usage: Usage = Usage()
    # git context (``step_git``): ``step.*`` of the most recent executed top-level step
    # (None until the scope's first step begins), and the scope's start commit when the
    # run has no worktree start commit (``git_base_read`` once it was read)
    git_step: PMap[str, Var] | None = None
    git_base: str | None = None
    git_base_read: bool = False
    # a resumed run's finished ``foreach`` items: ``(index, success, error, item key)`` of
    # the step at the checkpoint's position, consumed when that step's ``foreach`` starts
    foreach_done: tuple[tuple[int, bool, str, str], ...] = ()

    @property
    def busy(self) -> bool:
        return bool(self.stack)

    @property
    def pending(self) -> int | None:
        """The one outstanding command, or the first of several (parallel ``foreach``)."""
        ids = self.pending_ids
        return ids[0] if ids else None

    @property
    def pending_ids(self) -> tuple[int, ...]:
        """Every outstanding command: the top frame's, or its ``foreach`` lanes'."""
        if not self.stack:
            return ()
        top = self.stack[-1]
        if not isinstance(top, StepFrame):
            return ()
        if top.each is not None and top.stage == "foreach":
            each = top.each
            ids = [cid for lane in each.lanes for cid in lane.stepper.pending_ids]
            ids.extend(sorted(each.draining))
            if each.timer is not None:
                ids.append(each.timer)
            return tuple(ids)
        return () if top.pending is None else (top.pending,)


class Tx:
    """Accumulates effects during one transition (local to a pure call)."""

    def __init__(self, st: Stepper, ctx: RunContext, base: PMap[str, Var],
                 breakers: Breakers | None = None) -> None:
        self.st = st
        self.ctx = ctx
        self.base = base
        self.breakers = breakers if breakers is not None else Breakers()
        self.effects: list[Effect] = []
        self.done: Outcome | None = None

    def emit(self, effect: Effect) -> None:
        self.effects.append(effect)

    def new_id(self) -> int:
        cid = self.st.next_id
        self.st = attrs.evolve(self.st, next_id=cid + 1)
        return cid

    def visible(self) -> PMap[str, Var]:
        git = self.st.git_step
        base = self.base
        for frame in self.st.stack:
            if isinstance(frame, StepFrame) and frame.wf_env:
                # workflow env values computed for a step replace those of the start
                base = base.update({name: Var(value=value) for name, value in frame.wf_env})
        merged = (base.update(git) if git else base).update(self.st.vars)
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


def fail_outcome(message: str, code: str, error_class: str, exit_code: int | None) -> Outcome:
    return Outcome(status="failed", exit_code=exit_code, error=message, error_code=code,
                   error_class=error_class)


def last_result(frame: StepFrame) -> ExecResult:
    assert frame.last is not None
    return frame.last


def retry_spec(tx: Tx, step: Step) -> RetrySpec | None:
    return step.retry if step.retry is not None else tx.ctx.retry_defaults


SCOPES = ("setup", "agent_template", "reduce", "merge_conflicts", "merge")


def scope_of(path: str) -> str:
    """The scope of a step path (``merge[0]`` → ``merge``; ``steps[2]`` → ``workflow``)."""
    for scope in SCOPES:
        if path.startswith(scope):
            return "merge" if scope == "merge_conflicts" else scope
    return "workflow"


def log_step(tx: Tx, frame: StepFrame, event_type: str, **extra: JSON) -> None:
    fields: dict[str, JSON] = {
        "scope": scope_of(frame.path),
        "step_path": frame.path,
        "display": frame.display,
        "kind": frame.step.kind,
        "attempt": max(frame.executions, 1),
    }
    fields.update(extra)
    tx.emit(LogEvent(event_type=event_type, fields=tuple(fields.items())))
