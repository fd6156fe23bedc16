"""The run machine of a standard workflow: inputs × iterations × steps.

Theory of operation
-------------------
``start(workflow, ctx)`` begins a run and ``resume(workflow, ctx, checkpoint, later)``
continues one from its checkpoint; both return a ``Transition`` (new state and effects).
``step(state, event)`` feeds one event.  The interpreter is the only caller of
``step``; it performs the effects in order and feeds back what happened.

The run walks a three-level cursor: input (``--args``/``--map``; one implicit input
when there are none), iteration (``-n``), step.  Each step is executed by the step
machine (``prodigy_core.stepper``), which shares the run's circuit ``breakers``; when it
ends, the run appends the step record (``prodigy_core.run_records``), logs
``step_completed`` (or ``step_failed``/``step_skipped``), saves the checkpoint, and only
then starts the next step.  With ``-n`` > 1 the run reads ``HEAD`` before and after each
iteration and stops when an iteration made no commit.

``CancelRequested`` cancels what is running; when the outstanding command reports back,
the run saves an ``Interrupted`` checkpoint (the interrupted step is not recorded as
complete, so resume runs it again) and finishes with 130 or 143.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import attrs
from pyrsistent import PMap, pmap

from prodigy_core import analytics, commits, merge_machine, step_env, step_foreach, stepper
from prodigy_core.breakers import Breakers
from prodigy_core.context import RunContext, builtin_variables
from prodigy_core.display import display_name
from prodigy_core.effects import (
    CancelCommands,
    Effect,
    Finish,
    LogEvent,
    Print,
    ReadGitHead,
    SaveCheckpoint,
    SaveSession,
)
from prodigy_core.events import (
    CancelRequested,
    ClaudeLine,
    CommandFinished,
    CommandNotStarted,
    Event,
    GitHeadRead,
)
from prodigy_core.interpolate import Var
from prodigy_core.json_values import JSON
from prodigy_core.model import Workflow
from prodigy_core.problems import InvalidTransition
from prodigy_core.reprs import value_class
from prodigy_core.results import cut
from prodigy_core.run_docs import (
    CHECKPOINT_VERSION,
    checkpoint_doc,
    elapsed,
    needs_worktree,
    session_doc,
    summary,
    summary_prints,
    transcript_of,
)
from prodigy_core.run_records import (
    StepRecord,
    as_int,
    foreach_done,
    opt_int,
    positions,
    restore_records,
    restore_vars,
    str_list,
)
from prodigy_core.support import walk
from prodigy_core.worktree_ops import (
    CreateWorktree,
    SaveWorktreeMeta,
    WorktreeCreated,
    WorktreeFailed,
)

RunStatus = Literal["running", "completed", "failed", "interrupted"]


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class RunState:
    workflow: Workflow
    ctx: RunContext
    status: RunStatus = "running"
    input_index: int = 0
    iteration: int = 1
    step_index: int = 0
    stepper: stepper.Stepper = stepper.Stepper()
    # circuit breakers shared by every step of the run (not checkpointed: a resumed run
    # starts with every breaker closed)
    breakers: Breakers = Breakers()
    records: tuple[StepRecord, ...] = ()
    counts: PMap[str, int] = pmap({"succeeded": 0, "failed": 0, "skipped": 0})
    failed_inputs: tuple[int, ...] = ()
    # where each failed input stopped (input, iteration, step): a resume runs them again
    # from there (the iteration matters: with -n the input may fail in a later iteration)
    failed_at: tuple[tuple[int, int, int], ...] = ()
    retry_queue: tuple[tuple[int, int, int], ...] = ()
    retrying: bool = False
    head_at_iteration_start: str | None = None
    waiting_head: Literal["", "iteration_start", "iteration_end"] = ""
    head_request: int | None = None
    cancel_signal: str | None = None
    error: str | None = None
    error_code: str | None = None
    resumed: bool = False
    last_time: str = ""
    total_duration: float = 0.0
    # the monotonic span the run's events have covered (the core reads no clock): the
    # start of the first timed event and the end of the latest one
    first_mono: float | None = None
    last_mono: float = 0.0
    # ``cache: true`` env values computed before the first step (``step_env``): the
    # command outstanding and the entry it computes
    env_request: int | None = None
    env_index: int = 0
    # the session worktree (spec 06 §3): "worktree" while it is being created, "steps"
    # while steps run, "merge" while the merge machine runs (spec 06 §7)
    phase: Literal["worktree", "steps", "merge"] = "steps"
    worktree_request: int | None = None
    resume_to_merge: bool = False
    merge: merge_machine.MergeMachine | None = None
    merge_outcome: merge_machine.MergeOutcome | None = None

    @property
    def input_count(self) -> int:
        return max(1, len(self.ctx.inputs))

    @property
    def finished(self) -> bool:
        return self.status != "running" and self.phase != "merge"


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class Transition:
    state: RunState
    effects: tuple[Effect, ...]


# --- entry points ----------------------------------------------------------------------


def start(workflow: Workflow, ctx: RunContext) -> Transition:
    state = RunState(workflow=workflow, ctx=ctx, last_time=ctx.started_at)
    if needs_worktree(ctx):
        return _create_worktree(state, "reuse" if ctx.worktree and ctx.worktree.reuse
                                else "create")
    return _started(state)


def _create_worktree(state: RunState, mode: Literal["create", "reuse", "resume"]) -> Transition:
    wt = state.ctx.worktree
    if wt is None:
        raise InvalidTransition("no worktree to create")
    cid = state.stepper.next_id
    state = attrs.evolve(state, phase="worktree", worktree_request=cid,
                         stepper=attrs.evolve(state.stepper, next_id=cid + 1))
    return Transition(state=state, effects=(CreateWorktree(
        command_id=cid, repo_root=state.ctx.repo_root, path=wt.path, branch=wt.branch,
        base_commit=wt.base_commit, mode=mode, user_dir=wt.user_dir,
        lock_path=wt.repo_lock),))


def _on_worktree(state: RunState, event: Event) -> Transition:
    if isinstance(event, CancelRequested):
        return Transition(state=attrs.evolve(state, cancel_signal=event.signal), effects=())
    if not isinstance(event, WorktreeCreated | WorktreeFailed) or \
            event.command_id != state.worktree_request:
        raise InvalidTransition(f"the run waits for its worktree but received "
                                f"{type(event).__name__}")
    state = attrs.evolve(state, phase="steps", worktree_request=None)
    if isinstance(event, WorktreeFailed):
        return _worktree_failed(state, event)
    wt = state.ctx.worktree
    effects: list[Effect] = []
    if event.created or event.recreated:
        effects.append(Print(text=f"Created worktree at: {event.path}"))
    elif not state.resumed:
        effects.append(Print(text=f"Using worktree at: {event.path}"))
    if event.dirty and not state.resumed:
        start = wt.base_commit[:12] if wt is not None else "HEAD"
        effects.append(Print(
            text=f"warning[W4001]: uncommitted changes in your checkout are not part of this "
                 f"run ({len(event.dirty)} path(s), e.g. {event.dirty[0]}); it starts from "
                 f"commit {start}", stream="err"))
    if event.created or event.recreated:
        effects.append(LogEvent(event_type="worktree_created", fields=(
            ("worktree_name", wt.name if wt else ""), ("branch", event.branch),
            ("path", event.path), ("recreated", event.recreated),
            ("session_id", state.ctx.session_id))))
    effects.append(SaveWorktreeMeta(doc=merge_machine.meta_doc(
        state.ctx, "in_progress", iterations=state.iteration - 1, head=event.head)))
    if state.cancel_signal is not None:
        more = _interrupted(state)
        return Transition(state=more.state, effects=(*effects, *more.effects))
    more = _resumed(state) if state.resumed else _started(state)
    return Transition(state=more.state, effects=(*effects, *more.effects))


def _worktree_failed(state: RunState, event: WorktreeFailed) -> Transition:
    code = 2 if event.code in ("E4001", "E4002", "E4006") else 1
    state = attrs.evolve(state, status="failed", error=event.message, error_code=event.code)
    effects: list[Effect] = [
        Print(text=f"error[{event.code}]: {event.message}", level="result", stream="err"),
        SaveSession(session=session_doc(state)),
        Finish(outcome=summary(state, code), exit_code=code),
    ]
    return Transition(state=state, effects=tuple(effects))


def _started(state: RunState) -> Transition:
    workflow, ctx = state.workflow, state.ctx
    wt = ctx.worktree
    effects: list[Effect] = [
        SaveSession(session=session_doc(state)),
        LogEvent(event_type="workflow_started", fields=(
            ("workflow_name", workflow.name), ("workflow_path", ctx.workflow_path),
            ("mode", "standard"), ("total_steps", len(workflow.steps)),
            ("worktree_path", ctx.project_dir), ("branch", wt.branch if wt else None),
            ("original_branch", wt.original_branch if wt else None),
            ("profile", ctx.profile), ("session_id", ctx.session_id),
        )),
        Print(text=f"Executing workflow: {workflow.name} (max {ctx.max_iterations} iterations)"),
        *_start_warnings(workflow, ctx),
    ]
    state, more = _cache_env(state)
    return Transition(state=state, effects=(*effects, *more))


def _cache_env(state: RunState) -> tuple[RunState, list[Effect]]:
    """Compute the next ``cache: true`` env value not known yet (spec 11 §2.2: once per
    run, at start, in the session worktree), or go on with the steps."""
    cid = state.stepper.next_id
    found = step_env.next_cached(state.ctx, state.stepper.vars, state.env_index, cid)
    if found is not None:
        index, command = found
        state = attrs.evolve(state, env_request=cid, env_index=index,
                             stepper=attrs.evolve(state.stepper, next_id=cid + 1))
        return state, [command]
    state = attrs.evolve(state, env_request=None)
    if state.resumed and state.resume_to_merge and needs_worktree(state.ctx):
        # every step had completed; only the merge was left (spec 06 §7.1)
        state = attrs.evolve(state, status="completed")
        return _begin_merge(state)
    return _begin_position(state, resuming=state.resumed)


def _on_cached_env(state: RunState, event: Event) -> Transition:
    if state.cancel_signal is not None:
        return _interrupted(attrs.evolve(state, env_request=None))
    if not isinstance(event, CommandFinished | CommandNotStarted):
        raise InvalidTransition(f"a dynamic env command cannot end with {type(event).__name__}")
    found = step_env.dynamic_value(state.ctx, state.env_index, event)
    if isinstance(found, str):
        # a cached value that cannot be computed stops the run at its start (exit 2)
        state = attrs.evolve(state, env_request=None, status="failed", error=found,
                             error_code="E2005")
        return Transition(state=state, effects=(
            Print(text=f"error[E2005]: {found}", stream="err"),
            *_failed_effects(state, found, exit_code=2)))
    name, var = found
    state = attrs.evolve(state, env_index=state.env_index + 1, stepper=attrs.evolve(
        state.stepper, vars=state.stepper.vars.set(name, var)))
    state, effects = _cache_env(state)
    return Transition(state=state, effects=tuple(effects))


def resume(
    workflow: Workflow, ctx: RunContext, checkpoint: dict[str, JSON],
    later_events: Sequence[dict[str, JSON]] = (),
) -> Transition:
    """Continue a run from its checkpoint (spec 08 §2.4, spec 09 §5.4)."""
    exec_state = checkpoint.get("execution_state")
    if not isinstance(exec_state, dict):
        raise InvalidTransition("checkpoint has no execution_state")
    step_index = as_int(exec_state.get("current_step_index"), 0)
    iteration = as_int(exec_state.get("current_iteration"), 1)
    inputs = checkpoint.get("inputs")
    input_index = as_int(inputs.get("current_input_index"), 0) if isinstance(inputs, dict) else 0
    failed_inputs: tuple[int, ...] = ()
    if isinstance(inputs, dict) and isinstance(inputs.get("failed_inputs"), list):
        failed_inputs = tuple(as_int(i, 0) for i in inputs["failed_inputs"])  # type: ignore[union-attr]
    # the input being resumed runs again: it has not failed (yet); inputs that failed
    # earlier are queued to run again from the step where they stopped
    failed_at = positions(inputs.get("failed_at") if isinstance(inputs, dict) else None)
    queue = positions(inputs.get("retry_queue") if isinstance(inputs, dict) else None)
    known = {i for i, _, _ in failed_at}
    failed_at += tuple((i, 1, 0) for i in failed_inputs if i not in known)
    retry_queue = (*queue, *(p for p in failed_at if p[0] != input_index))
    retrying = bool(inputs.get("retrying")) if isinstance(inputs, dict) else False
    failed_inputs = ()
    variables = restore_vars(checkpoint)
    records = restore_records(checkpoint)
    # apply events written after the checkpoint (a step that finished just before a crash)
    for event in later_events:
        body = event.get("event")
        if not isinstance(body, dict) or body.get("event_type") not in (
            "step_completed", "step_skipped"
        ):
            continue
        if body.get("top_level") is not True:
            continue
        if as_int(body.get("step_index"), -1) != step_index or \
                as_int(body.get("iteration"), 1) != iteration or \
                as_int(body.get("input_index"), 0) != input_index:
            continue
        status = str(body.get("status", "succeeded"))
        if status == "failed":
            continue
        assigned = body.get("variables")
        if isinstance(assigned, dict):
            untrusted = set(str_list(body.get("untrusted")))
            variables = variables.update({
                k: Var(value=v, trusted=k not in untrusted) for k, v in assigned.items()
            })
        records = (*records, StepRecord(
            step_index=step_index, command=str(body.get("display", "")), status=status,
            exit_code=opt_int(body.get("exit_code")), output=str(body.get("output", "")),
            stderr=str(body.get("stderr", "")), duration=0.0, variables=(),
            completed_at=str(event.get("timestamp", "")),
        ))
        step_index += 1
    finished_items = foreach_done(checkpoint, later_events, step_index=step_index,
                                  iteration=iteration, input_index=input_index)
    state = RunState(
        workflow=workflow, ctx=ctx, input_index=input_index, iteration=iteration,
        step_index=step_index, records=records, failed_inputs=failed_inputs,
        retry_queue=retry_queue, retrying=retrying,
        stepper=stepper.Stepper(vars=variables, foreach_done=finished_items,
                                usage=analytics.from_json(checkpoint.get("analytics"))),
        resumed=True, last_time=ctx.started_at,
        head_at_iteration_start=exec_state.get("iteration_start_head")  # type: ignore[arg-type]
        if isinstance(exec_state.get("iteration_start_head"), str) else None,
        resume_to_merge=exec_state.get("status") == "Completed",
    )
    if needs_worktree(ctx):
        return _create_worktree(state, "resume")
    return _resumed(state)


def _resumed(state: RunState) -> Transition:
    workflow, ctx = state.workflow, state.ctx
    total = len(workflow.steps)
    effects: list[Effect] = [
        SaveSession(session=session_doc(state)),
        LogEvent(event_type="workflow_resumed", fields=(
            ("from_step", state.step_index), ("checkpoint_version", CHECKPOINT_VERSION),
            ("session_id", ctx.session_id),
        )),
        Print(text=f"Checkpoint: step {min(state.step_index + 1, total)} of {total}"),
        *_start_warnings(workflow, ctx),
    ]
    state, more = _cache_env(state)
    return Transition(state=state, effects=(*effects, *more))


def step(state: RunState, event: Event) -> Transition:
    """Feed one event to the run (the interpreter is the only caller)."""
    if state.finished:
        raise InvalidTransition(f"run is {state.status} but received {type(event).__name__}")
    mono = getattr(event, "monotonic", 0.0) or 0.0
    if mono > 0:
        first = mono - (getattr(event, "duration", 0.0) or 0.0)
        state = attrs.evolve(state, last_mono=max(state.last_mono, mono),
                             first_mono=first if state.first_mono is None
                             else min(state.first_mono, first))
    if state.phase == "worktree":
        return _on_worktree(state, event)
    if state.phase == "merge":
        return _on_merge_event(state, event)
    if isinstance(event, CancelRequested):
        return _on_cancel(state, event)
    if isinstance(event, GitHeadRead) and state.head_request is not None \
            and event.command_id == state.head_request:
        return _on_iteration_head(state, event)
    if state.env_request is not None and \
            getattr(event, "command_id", None) == state.env_request:
        return _on_cached_env(state, event)
    if not state.stepper.busy:
        raise InvalidTransition(f"no step is running but received {type(event).__name__}")
    if state.cancel_signal is not None:
        # the outstanding command ended (it was cancelled): stop here
        if getattr(event, "command_id", None) not in state.stepper.pending_ids:
            raise InvalidTransition(
                f"{type(event).__name__} for command {getattr(event, 'command_id', None)}"
                f" but command {state.stepper.pending} is outstanding")
        if isinstance(event, ClaudeLine):
            return Transition(state=state, effects=())  # still stopping: wait for the end
        return _interrupted(state)
    before = step_foreach.progress(state.stepper)
    done = stepper.on_event(state.stepper, state.ctx, _base(state), event, state.breakers)
    state = attrs.evolve(state, stepper=done.stepper, breakers=done.breakers)
    if done.outcome is None:
        after = step_foreach.progress(state.stepper)
        if after is not None and after != before and not state.ctx.dry_run:
            # a foreach item finished: remember it (spec 12 §3.5)
            return Transition(state=state, effects=(
                *done.effects, SaveCheckpoint(checkpoint=checkpoint_doc(state, "Running"))))
        return Transition(state=state, effects=done.effects)
    state, more = _step_finished(state, done.outcome, _event_time(event))
    return Transition(state=state, effects=(*done.effects, *more))


def _start_warnings(workflow: Workflow, ctx: RunContext) -> list[Effect]:
    """Warnings printed once per run (spec 02 §12.1: commit checks switched off)."""
    if commits.commit_checks_disabled(ctx.environ_map) and any(
            s.commit_required for s in walk(workflow.steps)):
        return [Print(text=commits.NO_COMMIT_VALIDATION_WARNING, stream="err")]
    return []


# --- positions -------------------------------------------------------------------------


def _base(state: RunState) -> PMap[str, Var]:
    return builtin_variables(state.ctx, iteration=state.iteration,
                             input_index=state.input_index if state.ctx.inputs else None)


def _begin_position(state: RunState, resuming: bool = False) -> tuple[RunState, list[Effect]]:
    """Start whatever comes at the current cursor (a step, an iteration, an input)."""
    effects: list[Effect] = []
    steps = state.workflow.steps
    if state.step_index == 0 and not resuming:
        if state.ctx.inputs:
            current = state.ctx.inputs[state.input_index]
            if state.iteration == 1:
                effects.append(Print(text=f"Input {state.input_index + 1}/"
                                          f"{len(state.ctx.inputs)}: {current.arg}"))
                effects.append(LogEvent(event_type="input_started", fields=(
                    ("index", state.input_index + 1), ("arg", current.arg),
                    ("session_id", state.ctx.session_id))))
        if state.ctx.max_iterations > 1:
            effects.append(Print(text=f"Starting iteration {state.iteration}/"
                                      f"{state.ctx.max_iterations}"))
            effects.append(LogEvent(event_type="iteration_started", fields=(
                ("iteration", state.iteration), ("session_id", state.ctx.session_id))))
            cid = state.stepper.next_id
            state = attrs.evolve(state, waiting_head="iteration_start", head_request=cid,
                                 stepper=attrs.evolve(state.stepper, next_id=cid + 1))
            effects.append(ReadGitHead(command_id=cid, cwd=state.ctx.project_dir))
            return state, effects
    if state.step_index >= len(steps):
        state, more = _iteration_finished(state)
        return state, [*effects, *more]
    state, more = _start_step(state)
    return state, [*effects, *more]


def _start_step(state: RunState) -> tuple[RunState, list[Effect]]:
    steps = state.workflow.steps
    index = state.step_index
    step_def = steps[index]
    effects: list[Effect] = [
        Print(text=f"Executing step {index + 1}/{len(steps)}: {display_name(step_def)}")
    ]
    st = attrs.evolve(state.stepper, iteration=state.iteration,
                      input_index=state.input_index if state.ctx.inputs else None,
                      step_number=f"{index + 1}/{len(steps)}")
    done = stepper.begin(st, state.ctx, _base(state), step_def, _step_path(state, index),
                         state.breakers)
    state = attrs.evolve(state, stepper=done.stepper, breakers=done.breakers)
    effects.extend(done.effects)
    if done.outcome is not None:
        state, after = _step_finished(state, done.outcome, state.last_time)
        effects.extend(after)
    return state, effects


def _step_path(state: RunState, index: int) -> str:
    return f"steps[{index}]"


def _step_finished(
    state: RunState, outcome: stepper.Outcome, when: str
) -> tuple[RunState, list[Effect]]:
    index = state.step_index
    step_def = state.workflow.steps[index]
    display = display_name(step_def)
    assigned = state.stepper.assigned
    record = StepRecord(
        step_index=index, command=display, status=outcome.status,
        exit_code=outcome.exit_code, output=outcome.output, stderr=outcome.stderr,
        duration=outcome.duration,
        variables=tuple((k, v.value) for k, v in sorted(assigned.items())),
        completed_at=when, error=outcome.error, attempts=max(outcome.executions, 1),
        max_attempts=outcome.max_attempts, failure_history=outcome.failures,
        step_id=step_def.id,
        analytics=state.stepper.step_usage.to_json()
        if state.stepper.step_usage.claude_calls else None,
        json_log_location=transcript_of(assigned),
    ).with_doc()
    counts = state.counts
    key = {"succeeded": "succeeded", "recovered": "succeeded", "skipped": "skipped"}.get(
        outcome.status, "failed")
    counts = counts.set(key, counts[key] + 1)
    state = attrs.evolve(state, counts=counts, last_time=when or state.last_time,
                         total_duration=state.total_duration + outcome.duration)
    event_type = {"skipped": "step_skipped", "failed": "step_failed"}.get(
        outcome.status, "step_completed")
    fields: dict[str, JSON] = {
        "scope": "workflow", "step_path": _step_path(state, index), "step_index": index,
        "display": display, "kind": step_def.kind, "attempt": max(outcome.executions, 1),
        "status": outcome.status, "exit_code": outcome.exit_code,
        "duration_ms": int(outcome.duration * 1000), "top_level": True,
        "iteration": state.iteration, "input_index": state.input_index,
        "session_id": state.ctx.session_id,
    }
    if event_type == "step_failed":
        fields.update({"error": outcome.error, "error_code": outcome.error_code,
                       "error_class": outcome.error_class})
    else:
        fields.update({
            "output": cut(outcome.output), "stderr": cut(outcome.stderr),
            "variables": {k: v.value for k, v in assigned.items()},
            "untrusted": [k for k, v in sorted(assigned.items()) if not v.trusted],
            "commits": [],
        })
    if state.stepper.step_usage.claude_calls:
        fields["cost_usd"] = round(state.stepper.step_usage.total_cost_usd, 6)
        fields["json_log_location"] = transcript_of(assigned)
    effects: list[Effect] = [LogEvent(event_type=event_type, fields=tuple(fields.items()))]
    if outcome.status == "failed":
        state = attrs.evolve(state, error=outcome.error, error_code=outcome.error_code)
        return _input_failed(state, effects)
    state = attrs.evolve(state, records=(*state.records, record), step_index=index + 1)
    effects.append(SaveCheckpoint(checkpoint=checkpoint_doc(state, "Running")))
    state, more = _begin_position(state)
    return state, [*effects, *more]


def _iteration_finished(state: RunState) -> tuple[RunState, list[Effect]]:
    if state.ctx.max_iterations > 1:
        cid = state.stepper.next_id
        state = attrs.evolve(state, waiting_head="iteration_end", head_request=cid,
                             stepper=attrs.evolve(state.stepper, next_id=cid + 1))
        return state, [ReadGitHead(command_id=cid, cwd=state.ctx.project_dir)]
    return _input_finished(state, True)


def _on_iteration_head(state: RunState, event: GitHeadRead) -> Transition:
    waiting = state.waiting_head
    state = attrs.evolve(state, waiting_head="", head_request=None)
    if state.cancel_signal is not None:
        return _interrupted(state)
    if waiting == "iteration_start":
        state = attrs.evolve(state, head_at_iteration_start=event.sha)
        state, started = _start_step(state) if state.workflow.steps else \
            _iteration_finished(state)
        return Transition(state=state, effects=tuple(started))
    effects: list[Effect] = [LogEvent(event_type="iteration_completed", fields=(
        ("iteration", state.iteration), ("session_id", state.ctx.session_id)))]
    no_change = not event.planned and event.sha == state.head_at_iteration_start
    if no_change:
        effects.append(Print(text="Stopping: No changes were made"))
    if no_change or state.iteration >= state.ctx.max_iterations:
        state, more = _input_finished(state, True)
        return Transition(state=state, effects=(*effects, *more))
    state = attrs.evolve(state, iteration=state.iteration + 1, step_index=0, records=())
    effects.append(SaveCheckpoint(checkpoint=checkpoint_doc(state, "Running")))
    state, more = _begin_position(state)
    return Transition(state=state, effects=(*effects, *more))


def _input_finished(state: RunState, success: bool) -> tuple[RunState, list[Effect]]:
    effects: list[Effect] = []
    if state.ctx.inputs:
        effects.append(LogEvent(event_type="input_completed", fields=(
            ("index", state.input_index + 1), ("arg", state.ctx.inputs[state.input_index].arg),
            ("success", success), ("session_id", state.ctx.session_id))))
    if not state.retrying and state.input_index + 1 < state.input_count:
        state = attrs.evolve(state, input_index=state.input_index + 1, iteration=1,
                             step_index=0, records=())
        effects.append(SaveCheckpoint(checkpoint=checkpoint_doc(state, "Running")))
        state, more = _begin_position(state)
        return state, [*effects, *more]
    if state.retry_queue:
        (index, iteration, at), rest = state.retry_queue[0], state.retry_queue[1:]
        state = attrs.evolve(state, input_index=index, iteration=iteration, step_index=at,
                             records=(), retry_queue=rest, retrying=True)
        effects.append(Print(text=f"Running failed input {index + 1} again from step {at + 1}"))
        effects.append(SaveCheckpoint(checkpoint=checkpoint_doc(state, "Running")))
        state, more = _begin_position(state, resuming=at > 0)
        return state, [*effects, *more]
    if state.failed_inputs:
        state = attrs.evolve(state, status="failed")
        failed = ", ".join(str(i + 1) for i in state.failed_inputs)
        return state, [*effects, *_failed_effects(
            state, f"{len(state.failed_inputs)} input(s) failed: {failed}")]
    state = attrs.evolve(state, status="completed")
    effects += _completed_effects(state)
    if needs_worktree(state.ctx):
        state, more = _begin_merge(state)
        effects += more
    return state, effects


def _input_failed(state: RunState, effects: list[Effect]) -> tuple[RunState, list[Effect]]:
    more_to_run = (not state.retrying and state.input_index + 1 < state.input_count) \
        or bool(state.retry_queue)
    if state.ctx.inputs:
        state = attrs.evolve(state, failed_at=(
            *state.failed_at, (state.input_index, state.iteration, state.step_index)))
    if state.ctx.inputs and not state.ctx.fail_fast and more_to_run:
        state = attrs.evolve(state, failed_inputs=(*state.failed_inputs, state.input_index))
        arg = state.ctx.inputs[state.input_index].arg
        effects.append(Print(text=f"Input {state.input_index + 1} ({arg}) failed; "
                                  "continuing with the next input", stream="err"))
        state, more = _input_finished(state, False)
        return state, [*effects, *more]
    if state.ctx.inputs:
        state = attrs.evolve(state, failed_inputs=(*state.failed_inputs, state.input_index))
    state = attrs.evolve(state, status="failed")
    return state, [*effects, *_failed_effects(state, state.error or "step failed")]


# --- endings ---------------------------------------------------------------------------


def _completed_effects(state: RunState) -> list[Effect]:
    effects: list[Effect] = [
        LogEvent(event_type="workflow_completed", fields=(
            ("duration_ms", int(elapsed(state) * 1000)),
            ("steps_succeeded", state.counts["succeeded"]),
            ("steps_failed", state.counts["failed"]),
            ("cost_usd", round(state.stepper.usage.total_cost_usd, 6)),
            ("session_id", state.ctx.session_id))),
        SaveCheckpoint(checkpoint=checkpoint_doc(state, "Completed")),
    ]
    if needs_worktree(state.ctx):
        # the session stays Running until the merge step is over: a crash during the
        # merge is resumed straight into the merge (which git makes idempotent)
        return [*effects, Print(text="Workflow completed successfully", level="result"),
                *summary_prints(state)]
    return [
        *effects,
        SaveSession(session=session_doc(state)),
        Print(text="Workflow completed successfully", level="result"),
        *summary_prints(state),
        Finish(outcome=summary(state, 0), exit_code=0),
    ]


# --- the merge step (spec 06 §7) ---------------------------------------------------


def _begin_merge(state: RunState) -> tuple[RunState, list[Effect]]:
    machine = merge_machine.MergeMachine(
        ctx=state.ctx, workflow=state.workflow, ask=not state.ctx.auto_yes,
        stepper=stepper.Stepper(vars=state.stepper.vars, next_id=state.stepper.next_id),
        breakers=state.breakers)  # custom merge steps share the run's breakers
    moved = merge_machine.begin(machine)
    state = attrs.evolve(state, phase="merge", merge=moved.machine)
    return _after_merge_move(state, list(moved.effects))


def _on_merge_event(state: RunState, event: Event) -> Transition:
    machine = state.merge
    if machine is None:
        raise InvalidTransition("merge phase without a merge machine")
    if isinstance(event, CancelRequested):
        if state.cancel_signal is not None:
            return Transition(state=state, effects=())
        # stop what runs (a Claude resolution, a prompt); the merge machine then ends
        # without starting anything new
        return Transition(state=attrs.evolve(state, cancel_signal=event.signal,
                                             merge=merge_machine.cancel(machine)),
                          effects=(CancelCommands(),))
    moved = merge_machine.on_event(machine, event)
    state = attrs.evolve(state, merge=moved.machine)
    state, effects = _after_merge_move(state, list(moved.effects))
    return Transition(state=state, effects=tuple(effects))


def _after_merge_move(state: RunState,
                      effects: list[Effect]) -> tuple[RunState, list[Effect]]:
    machine = state.merge
    if machine is None or machine.outcome is None:
        return state, effects
    outcome = machine.outcome
    usage = analytics.combine(state.stepper.usage, machine.stepper.usage)
    state = attrs.evolve(state, phase="steps", merge_outcome=outcome,
                         stepper=attrs.evolve(state.stepper, usage=usage,
                                              next_id=machine.stepper.next_id))
    code = 1 if outcome.failed else 0
    if outcome.failed:
        state = attrs.evolve(state, error=outcome.error, error_code=outcome.error_code)
    if state.cancel_signal is not None and not outcome.merged:
        code = 143 if state.cancel_signal == "SIGTERM" else 130
    effects += [
        LogEvent(event_type="merge_finished", fields=(
            ("merged", outcome.merged), ("target", outcome.target),
            ("reason", outcome.reason), ("error_code", outcome.error_code),
            ("session_id", state.ctx.session_id))),
        SaveSession(session=session_doc(state)),
        Finish(outcome=summary(state, code), exit_code=code),
    ]
    return state, effects


def _failed_effects(state: RunState, error: str, exit_code: int = 1) -> list[Effect]:
    sid = state.ctx.session_id
    first = error.split("\n", 1)[0]
    return [
        LogEvent(event_type="workflow_failed", fields=(
            ("error", error), ("error_code", state.error_code),
            ("step_index", state.step_index), ("session_id", sid))),
        SaveCheckpoint(checkpoint=checkpoint_doc(state, "Failed")),
        SaveSession(session=session_doc(state)),
        *_keep_worktree(state, "failed"),
        Print(text=f"Workflow failed: {first}", level="result", stream="err"),
        Print(text=f"Resume with: prodigy resume {sid}", level="result", stream="err"),
        *summary_prints(state),
        Finish(outcome=summary(state, exit_code), exit_code=exit_code),
    ]


def _keep_worktree(state: RunState, status: str) -> list[Effect]:
    """A failed or interrupted run keeps its worktree for resume (spec 06 §8.1)."""
    wt = state.ctx.worktree
    if wt is None or not needs_worktree(state.ctx):
        return []
    kind = {"SIGINT": "user_interrupt", "SIGTERM": "termination"}.get(state.cancel_signal or "") if status == "interrupted" else None
    return [
        SaveWorktreeMeta(doc=merge_machine.meta_doc(
            state.ctx, status, error=state.error, interruption=kind,
            iterations=state.iteration - 1)),
        Print(text=f"The worktree is kept at {wt.path}", level="info", stream="err"),
    ]


def _on_cancel(state: RunState, event: CancelRequested) -> Transition:
    if state.cancel_signal is not None:
        return Transition(state=state, effects=())
    state = attrs.evolve(state, cancel_signal=event.signal)
    if state.stepper.pending is None and state.head_request is None and \
            state.env_request is None:
        return _interrupted(state)
    return Transition(state=state, effects=(CancelCommands(),))


def _interrupted(state: RunState) -> Transition:
    signal = state.cancel_signal or "SIGINT"
    code = 143 if signal == "SIGTERM" else 130
    state = attrs.evolve(state, status="interrupted", head_request=None, waiting_head="")
    checkpoint = checkpoint_doc(state, "Interrupted")  # before the stack goes: foreach_state
    state = attrs.evolve(state, stepper=attrs.evolve(state.stepper, stack=()))
    sid = state.ctx.session_id
    effects: list[Effect] = [
        LogEvent(event_type="workflow_interrupted", fields=(("signal", signal),
                                                            ("session_id", sid))),
        SaveCheckpoint(checkpoint=checkpoint),
        SaveSession(session=session_doc(state)),
        *_keep_worktree(state, "interrupted"),
        Print(text=f"Session interrupted. Resume with: prodigy resume {sid}", level="result",
              stream="err"),
        *summary_prints(state),
        Finish(outcome=summary(state, code), exit_code=code),
    ]
    return Transition(state=state, effects=tuple(effects))


# --- documents -------------------------------------------------------------------------


def _event_time(event: Event) -> str:
    for name in ("finished_at", "at"):
        value = getattr(event, name, "")
        if value:
            return str(value)
    return ""
