"""Claude conflict resolution for agent merges (spec 06 §6.1–§6.3, spec 05 §8).

Theory of operation
-------------------
The merge queue (``prodigy_core.job_agents``) merges one agent branch at a time into the
session worktree with ``MergeBranch``.  Under ``merge_conflicts.strategy: claude`` that
merge keeps a conflict instead of aborting it (``keep_conflicts``), and this module takes
its ``MergeConflicted`` answer over:

1. ``merge_conflict`` is journaled with ``pre`` (the session ``HEAD`` before the merge);
   then the merge machine (``prodigy_core.merge_machine`` with ``source`` = the agent
   branch, target = the session branch) runs its resolution phases in the session
   worktree, exactly as for the final merge: the Claude call with the ``merge.*``
   variables, ``ConcludeMerge`` (accepted only without unmerged paths and conflict
   markers, as a merge commit on ``pre`` that contains the branch), then ``verify``; a
   rejection restores ``pre``.  The machine lives in ``JobState.merge`` while the map
   phase runs (the final merge uses that field only afterwards); the item stays
   ``merging`` and the queue waits.
2. Accepted: ``merge_conflict_resolved`` is journaled and the queue's ``MergeBranch`` is
   issued again.  The branch is merged already, so git merges nothing, verifies the
   ancestry and deletes the branch; the queue completes the item as after any merge.
3. Rejected: the queue gets the conflict as if the merge had been aborted, so the item
   fails with ``MergeConflict`` and its paths (DLQ entry, branch kept).

While a resolution runs, the session worktree is not at a commit the job may build on:
no agent starts (agents branch off its ``HEAD``) and no job state is saved — what
happens meanwhile is in the journal, which resume applies.  So when the process dies
during a resolution, its ``merge_conflict`` record is among the records logged after the
newest job state, and ``recovery`` finds it: the resumed job first restores the session
worktree to ``pre`` (``merge_machine.begin_rollback``; again with no agent starting and
no job state saved), then merges the branch again from the start.  A resolution that was
accepted (``merge_conflict_resolved``) is never rolled back: merging its branch again
merges nothing, so no agent is merged twice.

``CancelRequested`` stops the Claude call or ``verify`` (a conflict that arises after it
is rolled back at once); after the rollback the branch goes back to the head of the
queue and is saved as a pending merge for the resumed job.
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs

from prodigy_core import job_agents as ja
from prodigy_core import job_docs, merge_machine
from prodigy_core.effects import CancelCommands, Effect, LogEvent, Print
from prodigy_core.events import CancelRequested, Event
from prodigy_core.job_state import JobState
from prodigy_core.json_values import JSON
from prodigy_core.merge_conflicts import strategy
from prodigy_core.problems import InvalidTransition
from prodigy_core.reprs import value_class
from prodigy_core.step_frames import Stepper
from prodigy_core.worktree_ops import MergeBranch, MergeConflicted

Moves = tuple[JobState, list[Effect]]


def enabled(state: JobState) -> bool:
    return strategy(state.workflow) == "claude"


def keep_conflicts(state: JobState, effects: Sequence[Effect]) -> tuple[Effect, ...]:
    """Agent merges keep their conflict for Claude under ``strategy: claude``.

    The queue issues its ``MergeBranch`` without knowing the strategy; the job machine
    passes every batch of effects through here.
    """
    if not enabled(state):
        return tuple(effects)
    return tuple(attrs.evolve(e, keep_conflict=True)
                 if isinstance(e, MergeBranch) and e.into_worktree is not None
                 and not e.keep_conflict else e for e in effects)


def busy(state: JobState) -> bool:
    """A resolution (or the rollback of a crashed one) owns the session worktree."""
    return state.merge is not None and state.merge.for_agent and state.merge.outcome is None


def owns(state: JobState, command_id: int | None) -> bool:
    m = state.merge
    return busy(state) and m is not None and command_id is not None and (
        command_id == m.pending or command_id in m.stepper.pending_ids)


def _session(state: JobState) -> tuple[str, str]:
    wt = state.ctx.worktree
    if wt is None:
        raise InvalidTransition("a MapReduce job needs a session worktree")
    return wt.path, wt.branch


def _machine(state: JobState, source: str) -> merge_machine.MergeMachine:
    _, branch = _session(state)
    return merge_machine.MergeMachine(
        ctx=state.ctx, workflow=state.workflow, ask=False, source=source, target=branch,
        stepper=Stepper(vars=state.variables, next_id=state.next_id),
        breakers=state.breakers)


# --- a conflicted agent merge ----------------------------------------------------------


def on_merge_event(state: JobState, event: Event) -> Moves:
    """The queue's ``MergeBranch`` answered: a conflict left in the session worktree is
    resolved here; everything else is the queue's (``job_agents.on_merge_event``)."""
    if isinstance(event, MergeConflicted) and not event.aborted:
        return _on_conflict(state, event)
    return ja.on_merge_event(state, event)


def _on_conflict(state: JobState, event: MergeConflicted) -> Moves:
    queued = state.merging
    if queued is None:
        raise InvalidTransition("a merge conflict but no merge runs")
    _, target = _session(state)
    iid = state.item_id(queued.index)
    effects: list[Effect] = [Print(text=f"warning[W4003]: {w}", stream="err")
                             for w in event.warnings]
    # journaled before Claude touches the session worktree: ``recovery`` reads it
    effects.append(LogEvent(event_type="merge_conflict", fields=(
        ("source_branch", queued.branch), ("target_branch", target),
        ("conflicting_files", list(event.paths)), ("strategy", "claude"),
        ("agent_id", queued.agent_id), ("item_index", queued.index), ("pre", event.pre),
        ("session_id", state.ctx.session_id))))
    machine = _machine(state, queued.branch)
    if state.cancel_signal is not None:  # stopping: no Claude call, just undo the merge
        moved = merge_machine.begin_rollback(machine, event.merge_dir, event.pre)
        return _moved(state, moved, effects)
    effects.append(Print(text=f"[{iid}] merge conflicts in: {', '.join(event.paths)}; "
                              f"asking Claude to resolve them"))
    return _moved(state, merge_machine.begin_resolution(machine, event), effects)


def on_event(state: JobState, event: Event) -> Moves:
    """An answer for the resolution (its steps, ``ConcludeMerge``)."""
    m = state.merge
    if m is None:
        raise InvalidTransition(f"no resolution waits for {type(event).__name__}")
    m = attrs.evolve(m, stepper=attrs.evolve(m.stepper, next_id=state.next_id),
                     breakers=state.breakers)
    return _moved(state, merge_machine.on_event(m, event), [])


def on_cancel(state: JobState, event: CancelRequested) -> Moves:
    """Stop the Claude call or ``verify`` (none starts any more); the job is interrupted
    once the session worktree is restored (``_map_maybe_done`` waits for ``busy``)."""
    if state.cancel_signal is not None or state.merge is None:
        return state, []
    state = attrs.evolve(state, cancel_signal=event.signal,
                         merge=merge_machine.cancel(state.merge))
    return state, [CancelCommands()]


def _moved(state: JobState, moved: merge_machine.Moved, effects: list[Effect]) -> Moves:
    m = moved.machine
    state = attrs.evolve(state, merge=m, next_id=m.stepper.next_id, breakers=m.breakers)
    effects = [*effects, *moved.effects]
    if m.outcome is None:
        return state, effects
    state = attrs.evolve(state, merge=None, cost=state.cost + m.stepper.usage.total_cost_usd)
    queued = state.merging
    if queued is None:  # the rollback of a resolution cut short by a crash is done
        state, more = ja.next_merge(state)
        return state, [*effects, *more]
    path, target = _session(state)
    if m.outcome.merged:
        state, cid = _id(state)
        state = attrs.evolve(state, merge_request=cid)
        return state, [*effects, LogEvent(event_type="merge_conflict_resolved", fields=(
            ("source_branch", queued.branch), ("target_branch", target),
            ("resolver", "claude"), ("json_log_location", m.transcript),
            ("merge_commit", m.merged_sha), ("agent_id", queued.agent_id),
            ("item_index", queued.index), ("session_id", state.ctx.session_id))),
            # merges nothing (the branch is in HEAD): verifies it and deletes the branch
            MergeBranch(command_id=cid, repo_root=path, source=queued.branch, target=target,
                        message=f"Merge agent {queued.branch}", into_worktree=path,
                        lock_path=state.config.repo_lock)]
    if state.cancel_signal is not None:
        # interrupted: the branch waits at the head of the queue for the resumed job
        state = attrs.evolve(state, merging=None, merge_request=None,
                             queue=(queued, *state.queue))
        return state, effects
    conflict = m.conflict
    if conflict is None or state.merge_request is None:
        raise InvalidTransition("a rejected resolution without its conflict")
    aborted = MergeConflicted(command_id=state.merge_request, paths=conflict.paths,
                              merge_dir=conflict.merge_dir, pre=conflict.pre, aborted=True)
    state, more = ja.on_merge_event(state, aborted)
    # ``merge_conflict`` was journaled when the conflict arose, with strategy claude
    return state, [*effects, *(e for e in more if not (
        isinstance(e, LogEvent) and e.event_type == "merge_conflict"))]


def checkpoint(state: JobState) -> Moves:
    """A job state version, if due — never while a resolution owns the session worktree:
    its ``merge_conflict`` record must stay after the newest version (``recovery``)."""
    if busy(state):
        return state, []
    state, saved = job_docs.checkpoint(state)
    return state, list(saved)


def _id(state: JobState) -> tuple[JobState, int]:
    return attrs.evolve(state, next_id=state.next_id + 1), state.next_id


# --- resume ----------------------------------------------------------------------------


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class Unfinished:
    """A resolution that had begun but had not ended when the job stopped."""

    agent_id: str
    branch: str
    item_index: int
    pre: str


def recovery(later: Sequence[dict[str, JSON]]) -> Unfinished | None:
    """The resolution cut short by a crash, from the journal records logged after the
    newest job state (None: there was none, or it ended)."""
    found: Unfinished | None = None
    for record in later:
        body = record.get("event")
        if not isinstance(body, dict):
            continue
        kind = body.get("event_type")
        agent, index, pre = body.get("agent_id"), body.get("item_index"), body.get("pre")
        if kind == "merge_conflict" and body.get("strategy") == "claude" and \
                isinstance(agent, str) and isinstance(index, int) and isinstance(pre, str):
            found = Unfinished(agent_id=agent, branch=str(body.get("source_branch", "")),
                               item_index=index, pre=pre)
        elif found is not None and (
                (kind == "merge_conflict_resolved" and agent == found.agent_id)
                or (kind in ("agent_completed", "agent_failed") and index == found.item_index)):
            found = None
    return found


def prepare(state: JobState, unfinished: Unfinished | None) -> JobState:
    """Remember the rollback that must come before anything else of the map phase."""
    if unfinished is None:
        return state
    m = attrs.evolve(_machine(state, unfinished.branch), conflict=MergeConflicted(
        command_id=0, paths=(), merge_dir="", pre=unfinished.pre, aborted=False))
    return attrs.evolve(state, merge=m)


def start_recovery(state: JobState) -> Moves:
    """Restore the session worktree to ``pre`` when a crash cut a resolution short."""
    m = state.merge
    if not busy(state) or m is None or m.phase != "idle" or m.conflict is None:
        return state, []
    path, _ = _session(state)
    pre = m.conflict.pre
    state = attrs.evolve(state, phase="map")
    m = attrs.evolve(m, stepper=attrs.evolve(m.stepper, next_id=state.next_id))
    moved = merge_machine.begin_rollback(m, path, pre)
    return _moved(state, moved, [Print(
        text=f"Restoring the session worktree to {pre[:12]}: the resolution of the merge "
             f"conflict of {m.source_branch} was interrupted", stream="err")])
