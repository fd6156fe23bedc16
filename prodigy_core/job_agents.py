"""Agents and the merge queue of a MapReduce job (spec 05 §7–§10, spec 06 §5–§6).

Theory of operation
-------------------
``dispatch`` starts agents for pending items, in item order, while fewer than
``max_parallel`` (capped by ``parallel_worktrees``) run (the core alone decides how many
run).  An agent moves through
three stages, each waiting for one answer:

``create``   ``CreateWorktree`` from the session worktree's ``HEAD``: a fresh worktree or
             one of a pool (``prodigy_core.job_pool`` decides, per ``worktree_config``)
``steps``    the agent template, one step at a time, on the agent's own step machine
             (every step event is routed to it by command id)
``release``  ``FinishAgent``: its commits, files and leftovers; the worktree is removed,
             kept, or goes back to its pool

A successful agent with commits joins the merge queue; one ``MergeBranch`` runs at a
time, into the session worktree, in the order agents finished.  An item reaches a final
status (``succeeded``/``failed``) exactly once: its result is recorded, a failure goes
to the DLQ (unless ``skip``), and the job state is saved.  The agent timeout is a
``Sleep`` timer; when it fires while steps run, the agent's command is cancelled.

A failed item that ``on_item_failure: retry`` runs again is pending at once, but waits
in ``backoff`` for a ``Sleep`` of the ``retry_config`` delay (``prodigy_core.retry``,
jitter from the run's seed) before ``dispatch`` may start it; other items run meanwhile.
The wait is not saved: after a resume the item is simply pending.

The job circuit breaker (``prodigy_core.job_breaker``) may hold ``dispatch`` back: it is
told of every agent run that ends, and says how many agents may start.  How a final
failure is shown on the terminal is ``error_collection`` (``prodigy_core.job_report``).

Every agent runs its steps with the job's circuit ``breakers`` (spec 10 §3.3), so a
breaker named by a template step — or the step's path, the same in every agent — is one
breaker for all agents.  An agent's commands see the variables of spec 11 §7
(``PRODIGY_AGENT_ID``, ``PRODIGY_ITEM_ID``, ``PRODIGY_ITEM_INDEX``, ``PRODIGY_ITEM_FILE``).
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs
from pyrsistent import PMap

from prodigy_core import job_breaker as jb
from prodigy_core import job_pool as jp
from prodigy_core import job_report
from prodigy_core import stepper as stepper_mod
from prodigy_core import work_items as wi
from prodigy_core.context import RunContext, WorktreeSpec, builtin_variables
from prodigy_core.display import display_name
from prodigy_core.effects import CancelCommands, Effect, LogEvent, Print, Sleep
from prodigy_core.events import ClaudeLine, Event, Slept
from prodigy_core.interpolate import Var
from prodigy_core.job_ops import (
    AgentReleased,
    ForgetDLQ,
    MeasureWorktree,
    RecordDLQ,
    WorktreeMeasured,
)
from prodigy_core.job_state import Agent, Failure, JobState, Queued
from prodigy_core.json_values import JSON
from prodigy_core.model import ItemRetry, ResourceLimits
from prodigy_core.model import Step as ModelStep
from prodigy_core.problems import InvalidTransition
from prodigy_core.retry import delay_for, format_delay
from prodigy_core.step_frames import Outcome, Stepper
from prodigy_core.worktree_ops import (
    BranchMerged,
    MergeBranch,
    MergeConflicted,
    MergeFailed,
    WorktreeCreated,
    WorktreeFailed,
)

Step = tuple[JobState, list[Effect]]


def _id(state: JobState) -> tuple[JobState, int]:
    return attrs.evolve(state, next_id=state.next_id + 1), state.next_id


def max_parallel(state: JobState) -> int:
    """Agents at once: ``max_parallel``, capped by ``worktree_config.parallel_worktrees``."""
    return jp.concurrency(state)


def agent_timeout(state: JobState) -> float | None:
    spec = state.workflow.map
    if spec is None:
        return None
    cfg = spec.timeout_config
    if cfg is not None and cfg.timeout_policy == "per_command":
        return None
    if cfg is not None and cfg.agent_timeout_secs is not None:
        return cfg.agent_timeout_secs
    return spec.agent_timeout_secs


def _wt(state: JobState) -> WorktreeSpec:
    if state.ctx.worktree is None:
        raise InvalidTransition("a MapReduce job needs a session worktree")
    return state.ctx.worktree


# --- dispatch ------------------------------------------------------------------------


def can_start(state: JobState) -> bool:
    return state.stop_reason is None and state.cancel_signal is None


def dispatch(state: JobState) -> Step:
    """Start agents for pending items while slots are free (spec 05 §7.1) and the job
    circuit breaker allows it (spec 05 §10.5)."""
    effects: list[Effect] = []
    if not can_start(state):
        return state, effects
    allowed = jb.allowance(state)
    for index in range(state.total):
        if len(state.agents) >= max_parallel(state) or allowed == 0:
            break
        if state.item_state.get(index, "pending") != "pending" or index in state.backoff:
            continue
        state, more = _start_agent(state, index)
        state = jb.started(state, index)
        allowed = None if allowed is None else allowed - 1
        effects += more
    return state, effects


def _start_agent(state: JobState, index: int) -> Step:
    attempt = state.attempts.get(index, 0) + 1
    agent_id = wi.agent_id(state.config.job_id, index, attempt)
    branch = wi.agent_branch(agent_id)
    state, cid = _id(state)
    agent = Agent(index=index, agent_id=agent_id, attempt=attempt, path="", branch=branch,
                  pending=cid, started_at=state.last_time)
    # its worktree: a fresh one, or one of a pool (``prodigy_core.job_pool``)
    state, agent, create = jp.claim(state, agent, cid)
    state = attrs.evolve(
        state, agents=state.agents.set(index, agent),
        item_state=state.item_state.set(index, "running"),
        attempts=state.attempts.set(index, attempt),
        max_in_use=max(state.max_in_use, len(state.agents) + 1))
    effects: list[Effect] = [create]
    timeout = agent_timeout(state)
    if timeout is not None:
        state, tid = _id(state)
        state = attrs.evolve(state, agents=state.agents.set(
            index, attrs.evolve(agent, timer=tid)))
        effects.append(Sleep(command_id=tid, seconds=timeout))
    return state, effects


# --- routing -------------------------------------------------------------------------


def owner(state: JobState, command_id: int | None) -> int | None:
    """The item index of the agent waiting for ``command_id`` (None: no agent)."""
    if command_id is None:
        return None
    for index, agent in state.agents.items():
        if agent.pending == command_id or agent.timer == command_id:
            return index
        if agent.stage == "steps" and command_id in agent.stepper.pending_ids:
            return index
    return None


def on_agent_event(state: JobState, index: int, event: Event) -> Step:
    agent = state.agents[index]
    cid = getattr(event, "command_id", None)
    if agent.timer is not None and cid == agent.timer and isinstance(event, Slept):
        return _timer_fired(state, index, event)
    if agent.stage == "create" and cid == agent.pending:
        if isinstance(event, WorktreeCreated):
            return _created(state, index, event)
        if isinstance(event, WorktreeFailed):
            state = jp.lost(state, agent)
        if isinstance(event, WorktreeFailed) and state.cancel_signal is not None:
            # interrupted (git may have got the signal too): back to pending (§15.1)
            return _back_to_pending(state, index, [])
        if isinstance(event, WorktreeFailed):
            failure = Failure(kind="worktree", message=event.message)
            agent = attrs.evolve(agent, pending=None, failure=failure)
            return _item_failed(_put(state, agent), agent, failure, release=False)
    if agent.stage == "steps":
        return _on_step_event(state, index, event)
    if agent.stage == "measure" and cid == agent.pending and \
            isinstance(event, WorktreeMeasured):
        return _measured(state, index, event)
    if agent.stage == "release" and cid == agent.pending and isinstance(event, AgentReleased):
        return _released(state, index, event)
    raise InvalidTransition(f"agent {agent.agent_id} in stage {agent.stage!r} cannot receive "
                            f"{type(event).__name__}")


def _put(state: JobState, agent: Agent) -> JobState:
    return attrs.evolve(state, agents=state.agents.set(agent.index, agent))


def _timer_fired(state: JobState, index: int, event: Slept) -> Step:
    agent = attrs.evolve(state.agents[index], timer=None)
    state = _put(state, agent)
    # after CancelRequested the timer was cancelled with everything else (a cancelled
    # Sleep still reports Slept): the agent is being interrupted, not timed out (§15.1)
    if agent.stage == "release" or agent.failure is not None or \
            state.cancel_signal is not None:
        return state, []
    seconds = agent_timeout(state) or 0
    failure = Failure(kind="timeout", message=f"Agent timed out after {seconds:g} seconds")
    agent = attrs.evolve(agent, stopped=True, failure=failure)
    state = _put(state, agent)
    # still in ``create``: the limit runs from worktree creation (§11.1), no step starts
    pending = agent.stepper.pending_ids if agent.stage == "steps" else ()
    effects: list[Effect] = [Print(text=f"[{state.item_id(index)}] agent timed out after "
                                        f"{seconds:g} s", stream="err")]
    if pending:
        effects.append(CancelCommands(command_ids=pending))
    return state, effects


def item_file(state: JobState, index: int) -> str:
    return f"{state.config.job_dir}/items/{state.item_id(index)}.json"


def _agent_ctx(state: JobState, agent: Agent) -> RunContext:
    wt = WorktreeSpec(name=agent.worktree or wi.agent_worktree_name(agent.agent_id),
                      path=agent.path, branch=agent.branch, base_commit=agent.base or "")
    env = (*state.ctx.extra_env,
           ("PRODIGY_AGENT_ID", agent.agent_id),
           ("PRODIGY_ITEM_ID", state.item_id(agent.index)),
           ("PRODIGY_ITEM_INDEX", str(agent.index)),
           ("PRODIGY_ITEM_FILE", item_file(state, agent.index)))
    quiet = state.workflow.error_policy.error_collection != "immediate"
    limits = _limits(state)
    return attrs.evolve(state.ctx, project_dir=agent.path, worktree=wt,
                        worktree_name=wt.name, extra_env=env, quiet_failures=quiet,
                        output_prefix=f"[{state.item_id(agent.index)}] ",
                        memory_limit_mb=limits.max_memory_mb if limits is not None else None)


def item_vars(state: JobState, agent: Agent) -> PMap[str, Var]:
    index = agent.index
    iid = state.item_id(index)
    base = builtin_variables(state.ctx, iteration=1, input_index=None)
    base = base.update(state.variables)
    extra = wi.item_variables(
        state.items[index], index=index, total=state.total, item_id=iid,
        item_file=item_file(state, index), agent_id=agent.agent_id,
        job_id=state.config.job_id)
    merged: PMap[str, Var] = base.update(extra)
    return merged


def _created(state: JobState, index: int, event: WorktreeCreated) -> Step:
    agent = state.agents[index]
    agent = attrs.evolve(agent, stage="steps", pending=None, base=event.head,
                         stepper=Stepper(next_id=state.next_id))
    state, agent, logged = jp.created(state, agent, event)
    state = _put(state, agent)
    if not can_start(state) or state.dispatch_breaker.status == "open":
        # the job is stopping, or the job breaker opened while the worktree was being
        # made: this agent never starts its steps; its item is pending again
        state = _put(state, attrs.evolve(agent, cancelled=True))
        state, more = _release(state, index)
        return state, [*logged, *more]
    effects: list[Effect] = [LogEvent(event_type="agent_started", fields=(
        ("agent_id", agent.agent_id), ("item_id", state.item_id(index)),
        ("worktree", agent.path), ("attempt", agent.attempt),
        ("session_id", state.ctx.session_id))), *logged]
    state, more = _next_step(state, index)
    return state, [*effects, *more]


def _template(state: JobState) -> tuple[ModelStep, ...]:
    return state.workflow.map.agent_template if state.workflow.map is not None else ()


def _with_command_timeout(state: JobState, step: ModelStep) -> ModelStep:
    spec = state.workflow.map
    cfg = spec.timeout_config if spec is not None else None
    if cfg is None or step.timeout is not None or cfg.timeout_policy == "per_agent":
        return step
    by = dict(cfg.command_timeouts)
    value = by.get(step.id or "") if step.id else None
    if value is None:
        value = by.get(step.kind)
    return attrs.evolve(step, timeout=value) if value is not None else step


def _next_step(state: JobState, index: int) -> Step:
    agent = state.agents[index]
    steps = _template(state)
    if agent.step_index >= len(steps) or agent.failure is not None:
        return _release(state, index)
    step = _with_command_timeout(state, steps[agent.step_index])
    st = attrs.evolve(agent.stepper, next_id=state.next_id)
    done = stepper_mod.begin(st, _agent_ctx(state, agent), item_vars(state, agent), step,
                             f"agent_template[{agent.step_index}]", state.breakers)
    agent = attrs.evolve(agent, stepper=done.stepper)
    state = attrs.evolve(_put(state, agent), next_id=done.stepper.next_id,
                         breakers=done.breakers)
    effects = list(done.effects)
    if done.outcome is not None:
        state, more = _step_done(state, index, done.outcome)
        effects += more
    return state, effects


def _on_step_event(state: JobState, index: int, event: Event) -> Step:
    agent = state.agents[index]
    if agent.stopped or state.cancel_signal is not None:
        # its commands were cancelled (time is up, a limit was hit, or the job stops):
        # whatever they report, no retry, handler or next step starts — the agent ends
        # once the last of them has reported
        if isinstance(event, ClaudeLine):
            return state, []
        if not agent.stopped:
            agent = attrs.evolve(agent, cancelled=True)
        return _stopping(_put(state, agent), index, getattr(event, "command_id", None))
    exhausted = getattr(event, "exhausted", "")
    if isinstance(exhausted, str) and exhausted:
        return _exhausted(state, index, exhausted, getattr(event, "command_id", None))
    st = attrs.evolve(agent.stepper, next_id=state.next_id)
    done = stepper_mod.on_event(st, _agent_ctx(state, agent), item_vars(state, agent), event,
                                state.breakers)
    agent = attrs.evolve(agent, stepper=done.stepper)
    state = attrs.evolve(_put(state, agent), next_id=done.stepper.next_id,
                         breakers=done.breakers)
    effects = list(done.effects)
    if done.outcome is not None:
        state, more = _step_done(state, index, done.outcome)
        effects += more
    return state, effects


def _failure_of(outcome: Outcome, display: str, step_index: int) -> Failure:
    cls = outcome.error_class or ""
    kinds: dict[str, wi.FailureKind] = {
        "timeout": "timeout", "commit_required": "commit_required",
        "validation": "validation", "output_missing": "validation"}
    kind: wi.FailureKind = kinds.get(cls) or (
        "command_failed" if outcome.exit_code is not None else "unknown")
    return Failure(kind=kind, message=outcome.error or f"step '{display}' failed",
                   exit_code=outcome.exit_code, step=display, step_index=step_index)


def _step_done(state: JobState, index: int, outcome: Outcome) -> Step:
    agent = state.agents[index]
    steps = _template(state)
    display = display_name(steps[agent.step_index])
    outputs = agent.outputs
    if outcome.output.strip():
        outputs = (*outputs, outcome.output.strip())
    log = agent.stepper.assigned.get("claude.json_log_location")
    transcript = log.value if log is not None and isinstance(log.value, str) \
        else agent.transcript
    agent = attrs.evolve(agent, outputs=outputs, transcript=transcript,
                         duration=agent.duration + outcome.duration)
    if outcome.status == "failed" and state.cancel_signal is not None and not agent.stopped:
        # interrupted: the item goes back to pending, its partial work is dropped (§15.1)
        return _release(_put(state, attrs.evolve(agent, cancelled=True)), index)
    if outcome.status == "failed":
        failure = agent.failure if agent.stopped and agent.failure is not None else \
            _failure_of(outcome, display, agent.step_index)
        agent = attrs.evolve(agent, failure=failure)
        return _release(_put(state, agent), index)
    agent = attrs.evolve(agent, step_index=agent.step_index + 1)
    limits = _limits(state)
    if limits is not None and limits.max_disk_mb is not None:
        # measured after each step (spec 06 §9.4); the next one starts when it fits
        state, cid = _id(state)
        agent = attrs.evolve(agent, stage="measure", pending=cid)
        return _put(state, agent), [MeasureWorktree(command_id=cid, path=agent.path)]
    return _next_step(_put(state, agent), index)


def _measured(state: JobState, index: int, event: WorktreeMeasured) -> Step:
    agent = attrs.evolve(state.agents[index], stage="steps", pending=None)
    state = _put(state, agent)
    if state.cancel_signal is not None and not agent.stopped:
        return _release(_put(state, attrs.evolve(agent, cancelled=True)), index)
    limits = _limits(state)
    limit = limits.max_disk_mb if limits is not None else None
    if agent.stopped or limit is None:
        return _next_step(state, index)
    if event.message:
        effects: list[Effect] = [Print(
            text=f"warning[W4005]: [{state.item_id(index)}] could not measure the worktree "
                 f"for resource_limits.max_disk_mb: {event.message}", stream="err")]
        state, more = _next_step(state, index)
        return state, [*effects, *more]
    if event.size_bytes > limit * _MB:
        used = event.size_bytes / _MB
        failure = Failure(
            kind="resource",
            message=f"worktree uses {used:.1f} MB, above resource_limits.max_disk_mb "
                    f"({limit} MB)",
            step=display_name(_template(state)[agent.step_index - 1]),
            step_index=agent.step_index - 1)
        agent = attrs.evolve(agent, stopped=True, failure=failure)
        return _release(_put(state, agent), index)
    return _next_step(state, index)


_MB = 1024 * 1024


def _limits(state: JobState) -> ResourceLimits | None:
    cfg = state.workflow.worktree_config
    return cfg.resource_limits if cfg is not None else None


def _exhausted(state: JobState, index: int, what: str, done: int | None) -> Step:
    """A command of the agent was stopped above ``max_memory_mb``: the agent fails."""
    agent = state.agents[index]
    steps = _template(state)
    display = display_name(steps[agent.step_index]) if agent.step_index < len(steps) else ""
    failure = Failure(kind="resource", message=what, step=display,
                      step_index=agent.step_index)
    agent = attrs.evolve(agent, stopped=True, failure=failure)
    state = _put(state, agent)
    pending = tuple(cid for cid in agent.stepper.pending_ids if cid != done)
    effects: list[Effect] = [Print(text=f"[{state.item_id(index)}] {what}", stream="err")]
    if pending:
        # the agent's other commands (foreach lanes) stop too
        effects.append(CancelCommands(command_ids=pending))
    state, more = _stopping(state, index, done)
    return state, [*effects, *more]


def _stopping(state: JobState, index: int, reported: int | None) -> Step:
    """A command of a stopped agent reported: release it when none is left running."""
    agent = state.agents[index]
    seen = agent.reported | ({reported} if reported is not None else set())
    agent = attrs.evolve(agent, reported=frozenset(seen))
    state = _put(state, agent)
    if any(cid not in seen for cid in agent.stepper.pending_ids):
        return state, []
    return _release(state, index)


def _release(state: JobState, index: int) -> Step:
    agent = state.agents[index]
    state, cid = _id(state)
    # removed, kept, or back to the pool (``prodigy_core.job_pool``)
    agent, finish = jp.finish(state, agent, cid)
    agent = attrs.evolve(agent, stage="release", pending=cid)
    state = _put(state, agent)
    return state, [finish]


def _released(state: JobState, index: int, event: AgentReleased) -> Step:
    agent = state.agents[index]
    effects: list[Effect] = []
    if event.warning:
        effects.append(Print(text=f"warning[W4005]: {event.warning}", stream="err"))
    state = jp.released(state, agent)
    if agent.cancelled:
        return _back_to_pending(state, index, effects)
    state = attrs.evolve(state, agents=state.agents.remove(index))
    if agent.failure is not None:
        failure = agent.failure
        if (event.commits and failure.kind != "timeout") or agent.kept:
            failure = attrs.evolve(failure, branch=agent.branch)
        if agent.kept:
            failure = attrs.evolve(failure, kept_worktree=agent.kept)
        state, more = _item_failed(state, agent, failure, release=False)
        return state, [*effects, *more]
    if event.uncommitted:
        listed = ", ".join(event.uncommitted[:10])
        effects.append(Print(text=f"warning[W6004]: {state.item_id(index)} left uncommitted "
                                  f"changes that are discarded: {listed}", stream="err"))
    queued = Queued(index=index, agent_id=agent.agent_id, branch=agent.branch,
                    path=agent.path, commits=event.commits, files=event.files,
                    uncommitted=event.uncommitted, duration=agent.duration,
                    attempt=agent.attempt, output=_output(agent.outputs),
                    transcript=agent.transcript, cost=agent.stepper.usage.total_cost_usd)
    state = attrs.evolve(state, cost=state.cost + queued.cost)
    if not event.commits:
        state, more = _item_succeeded(state, queued, merged_sha=None)
        return state, [*effects, *more]
    state = attrs.evolve(state, queue=(*state.queue, queued),
                         item_state=state.item_state.set(index, "merging"))
    state, more = next_merge(state)
    return state, [*effects, *more]


def _back_to_pending(state: JobState, index: int, effects: list[Effect]) -> Step:
    """An interrupted agent is gone: its item is pending again, the attempt not counted."""
    agent = state.agents[index]
    attempts = max(0, state.attempts.get(index, 1) - 1)
    state = attrs.evolve(state, agents=state.agents.remove(index),
                         item_state=state.item_state.set(index, "pending"),
                         attempts=state.attempts.set(index, attempts))
    state = jb.forget(state, index)
    return state, [*effects, LogEvent(event_type="agent_interrupted", fields=(
        ("agent_id", agent.agent_id), ("item_id", state.item_id(index))))]


def _output(outputs: Sequence[str]) -> str:
    text = "\n".join(outputs)
    return text[-65536:]


# --- the merge queue -----------------------------------------------------------------


def next_merge(state: JobState) -> Step:
    """Start the next merge when none runs (spec 05 §8, spec 06 §6).

    After ``CancelRequested`` none starts: the branches waiting are kept as
    ``pending_merges`` for the resumed job (spec 05 §15.1).
    """
    if state.merging is not None or not state.queue or state.cancel_signal is not None:
        return state, []
    head, rest = state.queue[0], state.queue[1:]
    state, cid = _id(state)
    wt = _wt(state)
    state = attrs.evolve(state, queue=rest, merging=head, merge_request=cid)
    # no repository lock: the merge changes only the job's own session worktree and
    # branch (git's ref locks cover deleting the agent branch), so it never waits behind
    # the worktree creations and removals of the agents still running
    return state, [MergeBranch(command_id=cid, repo_root=wt.path, source=head.branch,
                               target=wt.branch, message=f"Merge agent {head.branch}",
                               into_worktree=wt.path)]


def on_merge_event(state: JobState, event: Event) -> Step:
    queued = state.merging
    if queued is None:
        raise InvalidTransition(f"no merge runs but received {type(event).__name__}")
    state = attrs.evolve(state, merging=None, merge_request=None)
    effects: list[Effect] = []
    if isinstance(event, BranchMerged):
        effects += [Print(text=f"warning[W4003]: {w}", stream="err") for w in event.warnings]
        effects.append(LogEvent(event_type="worktree_merged", fields=(
            ("source_branch", queued.branch), ("target_branch", _wt(state).branch),
            ("merge_commit", event.sha), ("agent_id", queued.agent_id))))
        state, more = _item_succeeded(state, queued, merged_sha=event.sha)
    elif isinstance(event, MergeConflicted):
        paths = ", ".join(event.paths)
        failure = Failure(kind="merge_conflict", message=f"merge conflict in: {paths}",
                          conflicting_files=event.paths, branch=queued.branch)
        effects.append(LogEvent(event_type="merge_conflict", fields=(
            ("source_branch", queued.branch), ("target_branch", _wt(state).branch),
            ("conflicting_files", list(event.paths)), ("strategy", "abort"),
            ("agent_id", queued.agent_id))))
        state, more = _queued_failed(state, queued, failure)
    elif isinstance(event, MergeFailed):
        failure = Failure(kind="worktree", message=event.message, branch=queued.branch)
        state, more = _queued_failed(state, queued, failure)
    else:
        raise InvalidTransition(f"the merge queue cannot receive {type(event).__name__}")
    effects += more
    state, more = next_merge(state)
    return state, [*effects, *more]


def _queued_failed(state: JobState, queued: Queued, failure: Failure) -> Step:
    agent = Agent(index=queued.index, agent_id=queued.agent_id, attempt=queued.attempt,
                  path=queued.path, branch=queued.branch, duration=queued.duration,
                  outputs=(queued.output,) if queued.output else (),
                  transcript=queued.transcript)
    # its cost was counted when the agent was released
    return _item_failed(state, agent, failure, release=False, commits=queued.commits,
                        cost=queued.cost)


# --- final statuses ------------------------------------------------------------------


def _result(state: JobState, index: int, *, status: wi.AgentStatus, duration: float,
            attempt: int,
            output: str = "", commits: Sequence[str] = (), files: Sequence[str] = (),
            error: str | None = None, agent_path: str = "", branch: str = "",
            transcript: str | None = None, cost: float = 0.0,
            uncommitted: Sequence[str] = ()) -> dict[str, JSON]:
    return wi.agent_result(
        item_id=state.item_id(index), item_index=index, status=status, output=output,
        commits=list(commits), files_modified=list(files), duration_secs=duration,
        worktree_path=agent_path, branch_name=branch,
        worktree_session_id=state.ctx.session_id, json_log_location=transcript,
        cost_usd=cost, attempts=attempt, error=error,
        uncommitted_files=list(uncommitted))


def _item_succeeded(state: JobState, queued: Queued, *, merged_sha: str | None) -> Step:
    index = queued.index
    iid = state.item_id(index)
    result = _result(state, index, status="success", duration=queued.duration,
                     attempt=queued.attempt, output=queued.output, commits=queued.commits,
                     files=queued.files, agent_path=queued.path, branch=queued.branch,
                     transcript=queued.transcript, cost=queued.cost,
                     uncommitted=queued.uncommitted)
    state = attrs.evolve(state, results=state.results.set(index, result),
                         item_state=state.item_state.set(index, "succeeded"),
                         finished_this_run=state.finished_this_run + 1)
    done = state.count("succeeded") + state.count("failed")
    effects: list[Effect] = [
        LogEvent(event_type="agent_completed", fields=(
            ("agent_id", queued.agent_id), ("item_id", iid),
            ("duration_ms", int(queued.duration * 1000)), ("commits", list(queued.commits)),
            ("json_log_location", queued.transcript), ("result", result),
            ("item_index", index), ("session_id", state.ctx.session_id))),
        Print(text=f"[{done}/{state.total}] ✅ {iid} ({_secs(queued.duration)})"),
    ]
    if queued.attempt > 1 or state.resumed or state.config.reprocess_of is not None:
        # out of the DLQ before ``agent_completed`` is logged (see ``_item_failed``)
        effects.insert(0, ForgetDLQ(item_id=iid))
    state, more = jb.record(state, index, passed=True)
    return state, [*effects, *more]


def _secs(seconds: float) -> str:
    return f"{seconds:.1f}s"


def _item_failed(state: JobState, agent: Agent, failure: Failure, *, release: bool,
                 commits: Sequence[str] = (), cost: float | None = None) -> Step:
    """``cost`` is given when it was counted already (a failed merge)."""
    del release
    index = agent.index
    iid = state.item_id(index)
    state = attrs.evolve(state, agents=state.agents.discard(index))
    if cost is None:
        cost = agent.stepper.usage.total_cost_usd
        state = attrs.evolve(state, cost=state.cost + cost)
    policy = state.workflow.error_policy
    timeout_action = _timeout_action(state) if failure.kind == "timeout" else None
    status: wi.AgentStatus = "timeout" if failure.kind == "timeout" else "failed"
    result = _result(state, index, status=status, duration=agent.duration,
                     attempt=agent.attempt, output=_output(agent.outputs),
                     commits=commits, error=failure.message, agent_path=agent.path,
                     branch=failure.branch or "", transcript=agent.transcript, cost=cost)
    error_type = wi.error_type(wi.ItemFailure(
        kind=failure.kind, message=failure.message, exit_code=failure.exit_code,
        conflicting_files=failure.conflicting_files))
    type_name = wi.error_type_name(error_type)
    manual = wi.manual_review_required(type_name, failure.message)
    can_retry = jp.will_retry(state, agent.attempt, failure)
    effects: list[Effect] = [LogEvent(event_type="agent_failed", fields=(
        ("agent_id", agent.agent_id), ("item_id", iid), ("error", failure.message),
        ("error_type", error_type), ("retry_eligible", can_retry), ("result", result),
        ("item_index", index), ("session_id", state.ctx.session_id)))]
    if can_retry:
        state = attrs.evolve(state, item_state=state.item_state.set(index, "pending"))
        delay = retry_delay(state, index, agent.attempt)
        effects.append(LogEvent(event_type="agent_retrying", fields=(
            ("agent_id", agent.agent_id), ("item_id", iid), ("attempt", agent.attempt + 1),
            ("backoff_ms", round(delay * 1000)))))
        after = f" after {format_delay(delay)}" if delay > 0 else ""
        first = failure.message.splitlines()[0] if failure.message else "failed"
        effects.append(Print(text=f"[{iid}] failed: {first}; "
                                  f"retrying (attempt {agent.attempt + 1}){after}",
                             stream="err"))
        if delay > 0 and can_start(state):
            # after CancelRequested or a stop nothing starts again: no need to wait
            state, tid = _id(state)
            state = attrs.evolve(state, backoff=state.backoff.set(index, tid))
            effects.append(Sleep(command_id=tid, seconds=delay))
        state, more = jb.record(state, index, passed=False)
        return state, [*effects, *more]
    state = attrs.evolve(state, results=state.results.set(index, result),
                         item_state=state.item_state.set(index, "failed"),
                         failed_this_run=state.failed_this_run + 1,
                         finished_this_run=state.finished_this_run + 1)
    done = state.count("succeeded") + state.count("failed")
    first = failure.message.splitlines()[0] if failure.message else "failed"
    effects.append(Print(text=f"[{done}/{state.total}] ❌ {iid}: {first}"))
    state, more = job_report.item_failed(state, job_report.failure_text(
        iid, type_name, failure.message, step=failure.step, attempt=agent.attempt))
    effects += more
    skip = policy.on_item_failure == "skip" or timeout_action == "skip"
    if not skip:
        artifacts: JSON = None
        if failure.branch or failure.kept_worktree:
            artifacts = {"worktree_path": failure.kept_worktree or agent.path,
                         "branch_name": failure.branch,
                         "uncommitted_changes": None, "error_logs": None}
        signature = wi.error_signature(type_name, failure.message)
        # into the DLQ before the final ``agent_failed`` is logged: after a crash between
        # the two, a failed item is never left without its DLQ entry (spec 05 §13.1)
        effects.insert(0, RecordDLQ(
            item_id=iid, item_data=state.items[index], worktree_artifacts=artifacts,
            error_signature=signature, manual_review_required=manual,
            failure={"attempt_number": agent.attempt, "timestamp": state.last_time,
                     "error_type": error_type, "error_message": failure.message,
                     "stack_trace": None, "agent_id": agent.agent_id,
                     "step_failed": failure.step or ("merge" if failure.kind ==
                                                     "merge_conflict" else "worktree"),
                     "step_index": failure.step_index, "exit_code": failure.exit_code,
                     "duration_ms": int(agent.duration * 1000),
                     "json_log_location": agent.transcript,
                     "conflicting_files": list(failure.conflicting_files)}))
    stop = _stop_reason(state, failure, timeout_action)
    if stop is not None and state.stop_reason is None:
        state = attrs.evolve(state, stop_reason=stop)
        effects.append(Print(text=f"Stopping the map phase: {stop}", stream="err"))
    state, more = jb.record(state, index, passed=False)
    return state, [*effects, *more]


def retry_delay(state: JobState, index: int, attempt: int) -> float:
    """The wait before running item ``index`` again after its ``attempt``-th run failed
    (retry k = ``attempt``, spec 05 §10.4 with spec 10 §2.2–§2.3)."""
    cfg = state.workflow.error_policy.retry_config or ItemRetry()
    return delay_for(cfg, attempt, seed=state.ctx.seed, key=f"item:{state.item_id(index)}")


def waits_for_backoff(state: JobState, command_id: int | None) -> int | None:
    """The item whose retry delay is the ``Sleep`` ``command_id`` (None: no such item)."""
    for index, timer in state.backoff.items():
        if timer == command_id:
            return index
    return None


def backoff_over(state: JobState, index: int) -> Step:
    """The retry delay of item ``index`` is over: ``dispatch`` may start it again."""
    return attrs.evolve(state, backoff=state.backoff.remove(index)), []


def _timeout_action(state: JobState) -> str:
    spec = state.workflow.map
    cfg = spec.timeout_config if spec is not None else None
    return cfg.timeout_action if cfg is not None else "dlq"


def _stop_reason(state: JobState, failure: Failure, timeout_action: str | None) -> str | None:
    policy = state.workflow.error_policy
    if policy.on_item_failure == "stop" or not policy.continue_on_failure:
        return f"item failed and on_item_failure is stop ({failure.message.splitlines()[0]})"
    if timeout_action == "fail":
        return "an agent timed out and timeout_action is fail"
    if policy.max_failures is not None and state.failed_this_run >= policy.max_failures:
        return f"{state.failed_this_run} items failed (max_failures: {policy.max_failures})"
    if policy.failure_threshold is not None and state.finished_this_run and \
            state.failed_this_run / state.finished_this_run >= policy.failure_threshold:
        return (f"{state.failed_this_run} of {state.finished_this_run} finished items failed "
                f"(failure_threshold: {policy.failure_threshold})")
    return None


def results_in_order(state: JobState) -> list[dict[str, JSON]]:
    return [state.results[i] for i in sorted(state.results)]
