"""The MapReduce job machine (spec 05): setup, items, agents, merge queue, reduce, merge.

Theory of operation
-------------------
``start(workflow, ctx, config)`` begins a job and ``resume(workflow, ctx, config, doc,
later)`` continues one from its job state; ``step(state, event)`` feeds one event.  The
job walks its phases:

``worktree``  create (or, on resume, find) the session worktree (spec 06 §3)
``setup``     the setup steps, one at a time, in the session worktree (scope ``setup``)
``items``     ``LoadWorkItems`` → the pure item pipeline of ``prodigy_core.work_items``;
              the final list is saved (job state and ``items/<item_id>.json``)
``map``       agents and the merge queue (``prodigy_core.job_agents``; Claude resolves
              a conflict in ``prodigy_core.agent_merges``) until every item is final
              — or no agent runs any more after the phase was stopped
``reduce``    the reduce steps in the session worktree, with ``map.*`` (scope ``reduce``)
``merge``     the final merge of the session worktree (``prodigy_core.merge_machine``)

Every state change is logged (``LogEvent``) before the job state is saved
(``SaveJobState``), so a resumed job applies the completion events written after its last
checkpoint and never runs a finished item again.  ``CancelRequested`` stops dispatch and
the running commands; items that were running go back to pending.

Every scope of the job (setup, item loading, agents, reduce, the final merge's steps) runs
with ``PRODIGY_JOB_ID`` in its environment, and reduce with the map counts (spec 11 §7);
all of them share the job's circuit ``breakers``, whose clock is the ``monotonic`` reading
of the latest event.

The job's own timers are ``Sleep``s in ``state.timers``: the setup and reduce limits
(``prodigy_core.job_timers``) and the open period of the job circuit breaker, which pauses
dispatch (``prodigy_core.job_breaker``).  ``setup.capture_outputs`` binds variables after
each setup step (``prodigy_core.job_capture``).  How a job ends is
``prodigy_core.job_endings``; what it prints while it runs, ``prodigy_core.job_report``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import attrs
from pyrsistent import PMap

from prodigy_core import agent_merges as am
from prodigy_core import job_agents as ja
from prodigy_core import job_breaker as jb
from prodigy_core import job_capture, job_report, merge_machine, step_env
from prodigy_core import job_timers as jt
from prodigy_core import stepper as stepper_mod
from prodigy_core import work_items as wi
from prodigy_core.breakers import observe
from prodigy_core.context import RunContext, builtin_variables, child_environment
from prodigy_core.display import display_name
from prodigy_core.effects import (
    CancelCommands,
    Effect,
    Finish,
    LogEvent,
    Print,
    SaveSession,
)
from prodigy_core.events import (
    CancelRequested,
    ClaudeLine,
    CommandFinished,
    CommandNotStarted,
    Event,
    Slept,
)
from prodigy_core.interpolate import Var, interpolate
from prodigy_core.job_docs import job_doc
from prodigy_core.job_endings import (
    exit_code,
    interrupted,
    job_completed,
    job_failed,
    on_cancel,
    on_merge_event,
    session_doc,
    summary,
)
from prodigy_core.job_ops import (
    LoadWorkItems,
    SaveJobFile,
    SaveJobState,
    WorkItemsFailed,
    WorkItemsLoaded,
)
from prodigy_core.job_state import ItemStates, ItemStatus, JobConfig, JobState
from prodigy_core.json_values import JSON
from prodigy_core.model import Step, Workflow
from prodigy_core.problems import InvalidTransition
from prodigy_core.reprs import value_class
from prodigy_core.step_frames import Outcome, Stepper
from prodigy_core.worktree_ops import (
    BranchMerged,
    CreateWorktree,
    MergeConflicted,
    MergeFailed,
    SaveWorktreeMeta,
    WorktreeCreated,
    WorktreeFailed,
)

__all__ = ["Transition", "exit_code", "job_doc", "resume", "session_doc", "start",
           "start_reprocess", "step", "summary"]

FORMAT_VERSION = 1
Moves = tuple[JobState, list[Effect]]


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class Transition:
    state: JobState
    effects: tuple[Effect, ...]


def _t(moves: Moves) -> Transition:
    return Transition(state=moves[0], effects=am.keep_conflicts(*moves))


def _id(state: JobState) -> tuple[JobState, int]:
    return attrs.evolve(state, next_id=state.next_id + 1), state.next_id


# --- entry points ----------------------------------------------------------------------


def _job_ctx(ctx: RunContext, config: JobConfig) -> RunContext:
    """The job's context: ``PRODIGY_JOB_ID`` in every scope (spec 11 §7)."""
    env = tuple((k, v) for k, v in ctx.extra_env if k != "PRODIGY_JOB_ID")
    return attrs.evolve(ctx, extra_env=(*env, ("PRODIGY_JOB_ID", config.job_id)))


def start(workflow: Workflow, ctx: RunContext, config: JobConfig) -> Transition:
    ctx = _job_ctx(ctx, config)
    state = JobState(workflow=workflow, ctx=ctx, config=config, started_at=ctx.started_at,
                     last_time=ctx.started_at)
    return _t(_create_worktree(state, "create"))


def resume(workflow: Workflow, ctx: RunContext, config: JobConfig, doc: dict[str, JSON],
           later: Sequence[dict[str, JSON]] = (), *,
           retry_failed: int | None = None) -> Transition:
    """Continue a job from its saved state and the events logged after it (spec 05 §16).

    With ``retry_failed`` N, failed items that have run at most N times run again.
    """
    from prodigy_core.job_docs import restore

    ctx = _job_ctx(ctx, config)
    state = restore(JobState(workflow=workflow, ctx=ctx, config=config, resumed=True,
                             started_at=ctx.started_at, last_time=ctx.started_at),
                    doc, later)
    if retry_failed is not None:
        again = [i for i, s in state.item_state.items()
                 if s == "failed" and state.attempts.get(i, 1) <= retry_failed]
        item_state, results = state.item_state, state.results
        for index in again:
            item_state = item_state.set(index, "pending")
            results = results.discard(index)
        state = attrs.evolve(state, item_state=item_state, results=results)
    state = am.prepare(state, am.recovery(later))  # roll back a crashed resolution first
    return _t(_create_worktree(state, "resume"))


def start_reprocess(workflow: Workflow, ctx: RunContext, config: JobConfig, *,
                    items: Sequence[JSON], item_ids: Sequence[str],
                    variables: PMap[str, Var], reuse_worktree: bool) -> Transition:
    """A DLQ reprocess job (spec 05 §17): the selected items with the job's agent template
    and setup variables; no setup and no reduce."""
    plain = attrs.evolve(workflow, setup=None, reduce=None)
    ctx = _job_ctx(ctx, config)
    fresh: dict[int, ItemStatus] = {i: "pending" for i in range(len(items))}
    state = JobState(workflow=plain, ctx=ctx, config=config, started_at=ctx.started_at,
                     last_time=ctx.started_at, items=tuple(items), item_ids=tuple(item_ids),
                     items_loaded=True, item_state=ItemStates.of(fresh), variables=variables)
    return _t(_create_worktree(state, "resume" if reuse_worktree else "create"))


def step(state: JobState, event: Event) -> Transition:
    if state.finished:
        raise InvalidTransition(f"the job is over but received {type(event).__name__}")
    state = _clock(state, event)
    if isinstance(event, CancelRequested):
        return _t(am.on_cancel(state, event) if am.busy(state) else on_cancel(state, event))
    if isinstance(event, Slept) and state.ticker is not None and \
            event.command_id == state.ticker:
        return _t(job_report.on_tick(state))
    if isinstance(event, Slept) and event.command_id in state.timers:
        return _t(_on_job_timer(state, event.command_id))
    if isinstance(event, Slept) and _late_agent_timer(state, event.command_id):
        return Transition(state=state, effects=())
    match state.phase:
        case "worktree":
            return _t(_on_worktree(state, event))
        case "env":
            return _t(_on_cached_env(state, event))
        case "setup":
            return _t(_on_setup_event(state, event))
        case "items":
            return _t(_on_items(state, event))
        case "map":
            return _t(_on_map_event(state, event))
        case "reduce":
            return _t(_on_reduce_event(state, event))
        case "merge":
            return _t(on_merge_event(state, event))
    raise InvalidTransition(f"phase {state.phase!r} cannot receive {type(event).__name__}")


def _on_job_timer(state: JobState, command_id: int) -> Moves:
    """A phase limit or the breaker's open period ended; one whose phase is over, or
    that CancelRequested cancelled, means nothing."""
    use = state.timers[command_id]
    state = attrs.evolve(state, timers=state.timers.remove(command_id))
    if use == "breaker":
        if state.phase != "map" or not jb.owns(state, command_id) or \
                state.cancel_signal is not None:
            return state, []
        state, effects = jb.timer_over(state)
        return _map_settle(state, effects)
    if not jt.live(state, command_id):
        return state, []
    return jt.expired(state)


def _late_agent_timer(state: JobState, command_id: int) -> bool:
    """An agent's timeout ``Sleep`` outlives the agent (spec 05 §11); when it fires after
    the map phase, nobody in reduce or in the final merge waits for it."""
    if state.phase == "reduce":
        return command_id not in state.reduce.pending_ids
    if state.phase == "merge" and state.merge is not None:
        return command_id != state.merge.pending and \
            command_id not in state.merge.stepper.pending_ids
    return False


def _clock(state: JobState, event: Event) -> JobState:
    when = getattr(event, "finished_at", "") or getattr(event, "at", "")
    mono = getattr(event, "monotonic", 0.0) or 0.0
    if when:
        state = attrs.evolve(state, last_time=str(when))
    if mono:
        state = attrs.evolve(state, mono=float(mono),
                             breakers=observe(state.breakers, float(mono)))
    return state


# --- the session worktree --------------------------------------------------------------


def _create_worktree(state: JobState, mode: Literal["create", "resume"]) -> Moves:
    wt = state.ctx.worktree
    if wt is None:
        raise InvalidTransition("a MapReduce job needs a session worktree")
    state, cid = _id(state)
    state = attrs.evolve(state, phase="worktree", pending=cid)
    return state, [CreateWorktree(command_id=cid, repo_root=state.ctx.repo_root, path=wt.path,
                                  branch=wt.branch, base_commit=wt.base_commit, mode=mode,
                                  user_dir=wt.user_dir, lock_path=wt.repo_lock)]


def _on_worktree(state: JobState, event: Event) -> Moves:
    if not isinstance(event, WorktreeCreated | WorktreeFailed) or \
            event.command_id != state.pending:
        raise InvalidTransition(f"the job waits for its worktree, not {type(event).__name__}")
    state = attrs.evolve(state, pending=None)
    if isinstance(event, WorktreeFailed):
        code = 2 if event.code in ("E4001", "E4002", "E4006") else 1
        state = attrs.evolve(state, status="failed", phase="done", error=event.message,
                             error_code=event.code)
        return state, [Print(text=f"error[{event.code}]: {event.message}", level="result",
                             stream="err"),
                       SaveSession(session=session_doc(state)),
                       Finish(outcome=summary(state, code), exit_code=code)]
    wt = state.ctx.worktree
    effects: list[Effect] = []
    if event.created or event.recreated:
        effects.append(Print(text=f"Created worktree at: {event.path}"))
        effects.append(LogEvent(event_type="worktree_created", fields=(
            ("worktree_name", wt.name if wt else ""), ("branch", event.branch),
            ("path", event.path))))
    if event.dirty and not state.resumed:
        effects.append(Print(
            text=f"warning[W4001]: uncommitted changes in your checkout are not part of this "
                 f"run ({len(event.dirty)} path(s), e.g. {event.dirty[0]})", stream="err"))
    effects.append(SaveWorktreeMeta(doc=merge_machine.meta_doc(
        state.ctx, "in_progress", head=event.head) | {"job_id": state.config.job_id}))
    if state.setup_base is None:
        state = attrs.evolve(state, setup_base=event.head)
    effects += [
        Print(text=f"Executing MapReduce workflow: {state.workflow.name}"),
        Print(text=f"Job: {state.config.job_id}"),
    ]
    if state.resumed:
        effects += _resume_banner(state)
    else:
        effects += [LogEvent(event_type="job_created", fields=(
            ("workflow_name", state.workflow.name), ("session_id", state.ctx.session_id),
            ("job_id", state.config.job_id))),
            LogEvent(event_type="workflow_started", fields=(
                ("workflow_name", state.workflow.name),
                ("workflow_path", state.ctx.workflow_path), ("mode", "mapreduce"),
                ("total_steps", 0), ("worktree_path", event.path),
                ("branch", event.branch),
                ("original_branch", wt.original_branch if wt else None),
                ("profile", state.ctx.profile)))]
    effects.append(SaveSession(session=session_doc(state)))
    if state.cancel_signal is not None:
        # (after restoring the session worktree, if a crash cut a resolution short)
        state, more = am.start_recovery(state) if am.busy(state) else interrupted(state)
        return state, [*effects, *more]
    state, more = _continue(state)
    return state, [*effects, *more]


def _resume_banner(state: JobState) -> list[Effect]:
    done = state.count("succeeded")
    failed = state.count("failed")
    return [
        LogEvent(event_type="job_resumed", fields=(
            ("checkpoint_version", 0), ("pending_items", state.total - done - failed),
            ("job_id", state.config.job_id))),
        Print(text=f"Job has {state.total} total items"),
        Print(text=f"Completed: {done}"),
        Print(text=f"Failed: {failed}"),
        Print(text=f"Remaining: {state.total - done - failed}"),
    ]


def _continue(state: JobState) -> Moves:
    """Go on with whatever comes next, from the state (start and resume alike)."""
    found = step_env.next_cached(state.ctx, state.variables, state.env_index, state.next_id)
    if found is not None and not state.items_loaded:
        # a ``cache: true`` env value: once per job, in the session worktree, before
        # setup (spec 11 §2.2); kept with the job's variables, so resume-job reuses it
        index, command = found
        state = attrs.evolve(state, phase="env", env_index=index, pending=command.command_id,
                             next_id=state.next_id + 1)
        return state, [command]
    setup = state.workflow.setup.steps if state.workflow.setup is not None else ()
    if state.setup_index < len(setup) and not state.items_loaded:
        state, effects = jt.arm(attrs.evolve(state, phase="setup"), "setup")
        if state.setup_index == 0:
            effects = [Print(text="Running setup phase..."),
                       LogEvent(event_type="phase_started", fields=(("phase", "setup"),)),
                       *effects]
        state, more = _start_setup_step(state)
        return state, [*effects, *more]
    if not state.items_loaded:
        return _load_items(state)
    return _enter_map(state)


def _on_cached_env(state: JobState, event: Event) -> Moves:
    if not isinstance(event, CommandFinished | CommandNotStarted) or \
            event.command_id != state.pending:
        raise InvalidTransition(f"the job waits for a dynamic env command, not "
                                f"{type(event).__name__}")
    state = attrs.evolve(state, pending=None)
    if state.cancel_signal is not None:
        return interrupted(state)
    found = step_env.dynamic_value(state.ctx, state.env_index, event)
    if isinstance(found, str):
        return job_failed(state, found, "E2005", exit_code=2)
    name, var = found
    state = attrs.evolve(state, env_index=state.env_index + 1,
                         variables=state.variables.set(name, var))
    return _continue(state)


# --- setup ---------------------------------------------------------------------------


def _base(state: JobState) -> PMap[str, Var]:
    base: PMap[str, Var] = builtin_variables(state.ctx, iteration=1, input_index=None)
    merged: PMap[str, Var] = base.update(step_env.cached_names(state.variables))
    merged = merged.update(state.variables)
    return merged


def _stopping(state: JobState, event: Event, outcome: Outcome | None) -> bool:
    """The cancelled command of a setup or reduce step ended but the step would go on (a
    retry, a handler): after CancelRequested nothing new starts; the job stops here."""
    return state.cancel_signal is not None and outcome is None and \
        not isinstance(event, ClaudeLine)


def _setup_steps(state: JobState) -> tuple[Step, ...]:
    return state.workflow.setup.steps if state.workflow.setup is not None else ()


def _start_setup_step(state: JobState) -> Moves:
    steps = _setup_steps(state)
    step_def = steps[state.setup_index]
    header = f"Setup [{state.setup_index + 1}/{len(steps)}]: {display_name(step_def)}"
    return _phase_step(state, "setup", step_def, f"setup[{state.setup_index}]",
                       _base(state), _setup_step_done, header)


def _on_setup_event(state: JobState, event: Event) -> Moves:
    return _phase_event(state, "setup", event, _base(state), _setup_step_done)


# setup and reduce run their steps one at a time on one step machine each
_Done = Callable[[JobState, Outcome], Moves]


def _with_stepper(state: JobState, phase: Literal["setup", "reduce"], st: Stepper) -> JobState:
    if phase == "setup":
        return attrs.evolve(state, setup=st, next_id=st.next_id)
    return attrs.evolve(state, reduce=st, next_id=st.next_id)


def _phase_ctx(state: JobState, phase: Literal["setup", "reduce"]) -> RunContext:
    return _reduce_ctx(state) if phase == "reduce" else state.ctx


def _phase_step(state: JobState, phase: Literal["setup", "reduce"], step_def: Step,
                path: str, base: PMap[str, Var], on_done: _Done, header: str) -> Moves:
    """Start a setup or reduce step; ``header`` is printed first (a step that ends at once,
    e.g. skipped, starts the next one in this same call)."""
    current = state.setup if phase == "setup" else state.reduce
    st = attrs.evolve(current, vars=state.variables, next_id=state.next_id)
    done = stepper_mod.begin(st, _phase_ctx(state, phase), base, step_def, path,
                             state.breakers)
    state = attrs.evolve(_with_stepper(state, phase, done.stepper), breakers=done.breakers)
    effects: list[Effect] = [Print(text=header), *done.effects]
    if done.outcome is not None:
        state, more = on_done(state, done.outcome)
        effects += more
    return state, effects


def _phase_event(state: JobState, phase: Literal["setup", "reduce"], event: Event,
                 base: PMap[str, Var], on_done: _Done) -> Moves:
    current = state.setup if phase == "setup" else state.reduce
    st = attrs.evolve(current, next_id=state.next_id)
    done = stepper_mod.on_event(st, _phase_ctx(state, phase), base, event, state.breakers)
    state = attrs.evolve(_with_stepper(state, phase, done.stepper), breakers=done.breakers)
    if _stopping(state, event, done.outcome):
        return interrupted(state)
    if state.phase_timed_out and state.cancel_signal is None:
        # the phase's limit expired and its command was cancelled: whatever the step
        # would do next (a retry, a handler, the next step), the job fails here
        if isinstance(event, ClaudeLine):
            return state, []
        usage = done.stepper.step_usage.total_cost_usd
        return jt.failed(attrs.evolve(state, cost=state.cost + usage))
    effects = list(done.effects)
    if done.outcome is not None:
        state, more = on_done(state, done.outcome)
        effects += more
    return state, effects


def _setup_step_done(state: JobState, outcome: Outcome) -> Moves:
    state = attrs.evolve(state, variables=state.setup.vars,
                         cost=state.cost + state.setup.step_usage.total_cost_usd)
    if outcome.status == "failed":
        if state.cancel_signal is not None:
            return interrupted(state)
        error = outcome.error or "setup step failed"
        return job_failed(state, f"Setup phase failed: {error}", outcome.error_code or "E6004")
    effects: list[Effect] = []
    setup = state.workflow.setup
    if setup is not None and setup.capture_outputs:
        captured = job_capture.capture(setup.capture_outputs, state.setup_index, outcome)
        effects += [Print(text=f"warning[W6005]: {w}", stream="err")
                    for w in captured.warnings]
        state = attrs.evolve(state, variables=job_capture.bind(state.variables, captured))
        if captured.error is not None:
            return job_failed(state, f"Setup phase failed: {captured.error}", "E6004",
                              effects)
    state = attrs.evolve(state, setup_index=state.setup_index + 1)
    effects.append(SaveJobState(doc=job_doc(state)))
    if state.cancel_signal is not None:
        state, more = interrupted(state)
        return state, [*effects, *more]
    if state.setup_index < len(_setup_steps(state)):
        state, more = _start_setup_step(state)
        return state, [*effects, *more]
    state, more = jt.disarm(state)
    effects += [*more, LogEvent(event_type="phase_completed", fields=(("phase", "setup"),))]
    state, more = _load_items(state)
    return state, [*effects, *more]


# --- items ---------------------------------------------------------------------------


def _load_items(state: JobState) -> Moves:
    spec = state.workflow.map
    if spec is None:
        raise InvalidTransition("a MapReduce workflow without map")
    text = interpolate(spec.input, _base(state), environ=state.ctx.environ_map).text
    cached = {name: str(var.value) for name, var in
              step_env.cached_names(state.variables).items()}
    env = child_environment(state.ctx, step_env=cached, clear=False, iteration=1, attempt=1,
                            input_index=None, timeout=300)
    state, cid = _id(state)
    state = attrs.evolve(state, phase="items", pending=cid)
    return state, [LoadWorkItems(command_id=cid, cwd=state.ctx.project_dir, input=text,
                                 env=env, setup_base=state.setup_base
                                 if state.workflow.setup is not None else None)]


def _on_items(state: JobState, event: Event) -> Moves:
    if not isinstance(event, WorkItemsLoaded | WorkItemsFailed) or \
            event.command_id != state.pending:
        raise InvalidTransition(f"the job waits for its items, not {type(event).__name__}")
    state = attrs.evolve(state, pending=None)
    if isinstance(event, WorkItemsFailed):
        return job_failed(state, event.message, event.code)
    spec = state.workflow.map
    assert spec is not None
    effects: list[Effect] = []
    if event.generated:
        effects.append(Print(text=f"Using work items generated by setup: {event.name}"))
    if event.kind == "file":
        document = wi.parse_input_document(event.text, event.name)
        apply_path = True
    else:
        document, apply_path = wi.parse_command_output(event.text)
    if isinstance(document, wi.ItemsError):
        return job_failed(state, document.message, document.code, effects)
    selected = wi.select_items(document, spec, apply_json_path=apply_path,
                               variables=_base(state))
    if isinstance(selected, wi.ItemsError):
        return job_failed(state, selected.message, selected.code, effects)
    items = tuple(selected)
    fresh: dict[int, ItemStatus] = {i: "pending" for i in range(len(items))}
    state = attrs.evolve(state, items=items, items_loaded=True, item_state=ItemStates.of(fresh))
    effects += [SaveJobFile(name=f"items/{state.item_id(i)}.json", content=item,
                            durable=False) for i, item in enumerate(items)]
    effects += [
        LogEvent(event_type="job_started", fields=(
            ("config", {"input": spec.input, "json_path": spec.json_path,
                        "max_parallel": spec.max_parallel}),
            ("total_items", len(items)), ("job_id", state.config.job_id))),
        SaveJobState(doc=job_doc(state)),
    ]
    if state.cancel_signal is not None:
        # CancelRequested came while the items were loading: stop now (the list is saved)
        state, more = interrupted(state)
        return state, [*effects, *more]
    if not items:
        effects.append(Print(text="No work items to process"))
        state, more = job_completed(state)
        return state, [*effects, *more]
    state, more = _enter_map(state)
    return state, [*effects, *more]


# --- map -----------------------------------------------------------------------------


def _enter_map(state: JobState) -> Moves:
    state = attrs.evolve(state, phase="map")
    pending = state.count("pending") + state.count("running")
    effects: list[Effect] = []
    if pending or state.queue:
        # a resumed job names what is left (items merged or in the DLQ do not run again)
        count = f"{state.total}" if pending >= state.total else f"{pending} of {state.total}"
        effects.append(Print(text=f"Processing {count} items with "
                                  f"{ja.max_parallel(state)} parallel agents"))
        effects.append(LogEvent(event_type="phase_started", fields=(("phase", "map"),)))
    # agents that were running when the job stopped start again (their work is gone)
    again: dict[int, ItemStatus] = {i: ("pending" if s == "running" else s)
                                    for i, s in state.item_state.items()}
    state = attrs.evolve(state, item_state=ItemStates.of(again))
    state, more = am.start_recovery(state)
    effects += more
    if not am.busy(state):
        state, more = ja.next_merge(state)
        effects += more
        state, more = ja.dispatch(state)
        effects += more
    state = attrs.evolve(state, map_started=state.mono if state.mono else None)
    state = job_report.note_starts(state)
    state, more = job_report.arm_ticker(state)
    effects += more
    state, more = _map_maybe_done(state)
    return state, [*effects, *more]


def _on_map_event(state: JobState, event: Event) -> Moves:
    cid = getattr(event, "command_id", None)
    waiting = ja.waits_for_backoff(state, cid) if isinstance(event, Slept) else None
    if waiting is not None:
        state, effects = ja.backoff_over(state, waiting)
    elif am.owns(state, cid):
        state, effects = am.on_event(state, event)
        state, more = am.checkpoint(state)
        effects += more
    elif state.merge_request is not None and cid == state.merge_request and \
            isinstance(event, BranchMerged | MergeConflicted | MergeFailed):
        state, effects = am.on_merge_event(state, event)
        state, more = am.checkpoint(state)
        effects += more
    else:
        index = ja.owner(state, cid)
        if index is None:
            if isinstance(event, Slept):
                return state, []  # the timer of an agent that already finished
            raise InvalidTransition(f"no agent waits for {type(event).__name__} {cid}")
        before = state.item_state.get(index)
        state, effects = ja.on_agent_event(state, index, event)
        if state.item_state.get(index) != before and \
                state.item_state.get(index) in ("succeeded", "failed", "merging", "pending"):
            state, more = am.checkpoint(state)
            effects += more
    return _map_settle(state, effects)


def _map_settle(state: JobState, effects: list[Effect]) -> Moves:
    """After any change in the map phase: start what may start (no agent while a
    conflict resolution owns the session worktree); end the phase when done."""
    if not am.busy(state):
        state, more = ja.dispatch(state)
        effects += more
    state = job_report.note_starts(state)
    if state.ctx.progress_interval is not None and \
            any(isinstance(e, LogEvent) and e.event_type in ("agent_completed", "agent_failed")
                for e in effects):
        effects.append(Print(text=job_report.progress_line(state), level="progress"))
    state, more = _map_maybe_done(state)
    return state, [*effects, *more]


def _map_maybe_done(state: JobState) -> Moves:
    if state.agents or state.merging is not None or am.busy(state):
        return state, []
    if state.cancel_signal is not None:
        return interrupted(state)  # the queue, if any, is saved as pending_merges
    if state.queue:
        return state, []  # cannot happen: next_merge starts it
    pending = state.count("pending")
    if pending and state.stop_reason is None:
        # items waiting for their retry delay, or for the job circuit breaker's open
        # period to end (dispatch starts the rest)
        return state, []
    state, effects = job_report.flush_failures(state)
    timer = state.dispatch_breaker.timer
    if timer is not None and timer in state.timers:
        effects.append(CancelCommands(command_ids=(timer,)))  # nothing waits for it now
    ok, failed = state.count("succeeded"), state.count("failed")
    effects += [
        Print(text=f"Map phase completed: {ok} successful, {failed} failed (total: "
                   f"{state.total})"),
        LogEvent(event_type="phase_completed", fields=(
            ("phase", "map"), ("counts", {"successful": ok, "failed": failed,
                                          "pending": pending}))),
    ]
    if state.stop_reason is not None:
        state, more = job_failed(state, f"map phase stopped: {state.stop_reason}", "E6008")
        return state, [*effects, *more]
    if failed:
        effects.append(Print(text=f"{failed} failed items are in the DLQ: prodigy dlq list "
                                  f"--job-id {state.config.job_id}"))
    state, more = _enter_reduce(state)
    return state, [*effects, *more]


# --- reduce --------------------------------------------------------------------------


def _reduce_steps(state: JobState) -> tuple[Step, ...]:
    return state.workflow.reduce.steps if state.workflow.reduce is not None else ()


def _results_file(state: JobState) -> str:
    return f"{state.config.job_dir}/map-results.json"


def _reduce_base(state: JobState) -> PMap[str, Var]:
    results = ja.results_in_order(state)
    merged: PMap[str, Var] = _base(state).update(
        wi.map_variables(results, _results_file(state)))
    return merged


def _reduce_ctx(state: JobState) -> RunContext:
    """Reduce commands see the results file and the map counts (spec 11 §7)."""
    # the counts of ``map.total`` / ``map.successful`` / ``map.failed`` (spec 03 §5.5)
    total = len(state.results)
    ok = sum(1 for r in state.results.values() if r.get("status") == "Success")
    env = (*state.ctx.extra_env,
           ("PRODIGY_MAP_RESULTS_FILE", _results_file(state)),
           ("PRODIGY_MAP_TOTAL", str(total)),
           ("PRODIGY_MAP_SUCCESSFUL", str(ok)),
           ("PRODIGY_MAP_FAILED", str(total - ok)))
    return attrs.evolve(state.ctx, extra_env=env)


def _enter_reduce(state: JobState) -> Moves:
    steps = _reduce_steps(state)
    if state.reduce_index >= len(steps):
        return job_completed(state)
    state = attrs.evolve(state, phase="reduce")
    effects: list[Effect] = []
    if state.reduce_index == 0:
        results: list[JSON] = list(ja.results_in_order(state))
        effects += [SaveJobFile(name="map-results.json", content=results),
                    LogEvent(event_type="phase_started", fields=(("phase", "reduce"),))]
    state, more = jt.arm(state, "reduce")
    effects += more
    state, more = _start_reduce_step(state)
    return state, [*effects, *more]


def _start_reduce_step(state: JobState) -> Moves:
    steps = _reduce_steps(state)
    step_def = steps[state.reduce_index]
    header = (f"Reduce phase: Executing step {state.reduce_index + 1}/{len(steps)}: "
              f"{display_name(step_def)}")
    return _phase_step(state, "reduce", step_def, f"reduce[{state.reduce_index}]",
                       _reduce_base(state), _reduce_step_done, header)


def _on_reduce_event(state: JobState, event: Event) -> Moves:
    return _phase_event(state, "reduce", event, _reduce_base(state), _reduce_step_done)


def _reduce_step_done(state: JobState, outcome: Outcome) -> Moves:
    state = attrs.evolve(state, cost=state.cost + state.reduce.step_usage.total_cost_usd)
    if outcome.status == "failed":
        if state.cancel_signal is not None:
            return interrupted(state)
        return job_failed(state, f"Reduce phase failed: {outcome.error or 'step failed'}",
                          outcome.error_code or "E6009")
    state = attrs.evolve(state, reduce_index=state.reduce_index + 1)
    effects: list[Effect] = [SaveJobState(doc=job_doc(state))]
    if state.cancel_signal is not None:
        state, more = interrupted(state)
        return state, [*effects, *more]
    if state.reduce_index < len(_reduce_steps(state)):
        state, more = _start_reduce_step(state)
        return state, [*effects, *more]
    state, more = jt.disarm(state)
    effects += [*more, Print(text="Reduce phase completed"),
                LogEvent(event_type="phase_completed", fields=(("phase", "reduce"),))]
    state, more = job_completed(state)
    return state, [*effects, *more]
