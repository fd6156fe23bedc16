"""The final merge: the session branch back into the branch the run started from.

Theory of operation
-------------------
After a successful run (spec 06 §7) the run machine hands over to this machine; the
``prodigy worktree merge`` command drives it alone.  ``begin(m)`` returns the first
effects, ``on_event(m, event)`` feeds one answer; ``m.outcome`` is set when it is done.

::

    inspect ──► (no target: E4007) ──────────────────────────────┐
       │ ahead == 0: "No new commits…" ──► cleanup                │
       ▼                                                          │
    ask ([Y/n], unless -y) ── no / no terminal ──► kept ──────────┤
       ▼                                                          │
    merge (git merge --no-ff)            custom (merge: steps)    │
       │ conflict + strategy claude        │ then verify ancestry  │
       ▼                                   ▼                      │
    resolve (Claude step) ─► conclude ─► verify (shell) ─► …      │
       ▼                                                          ▼
    cleanup (remove worktree + branch unless named / dirty / PRODIGY_AUTO_CLEANUP=false)

Every phase waits for exactly one answer (``pending``); steps (the custom workflow, the
resolving Claude call, ``verify``) run on the ordinary step machine, so they have the
full step schema, transcripts and usage accounting.  Nothing here touches the user's
checkout except ``MergeBranch``, which is plain ``git merge`` (spec 06 §10).

A MapReduce job also uses this machine for the *agent* merges that conflict under
``merge_conflicts.strategy: claude`` (``prodigy_core.agent_merges``): ``source`` is then
the agent branch, the target the session branch, and only the phases ``resolve`` →
``conclude`` → ``verify`` (or ``rollback``) run, entered with ``begin_resolution``; the
outcome says merged or not and the job does everything else (``begin_rollback`` restores
the session worktree after a resolution that a crash interrupted).
"""

from __future__ import annotations

from typing import Literal

import attrs
from pyrsistent import PMap

from prodigy_core import stepper as stepper_mod
from prodigy_core.breakers import Breakers
from prodigy_core.context import RunContext, WorktreeSpec, builtin_variables
from prodigy_core.display import display_name
from prodigy_core.effects import CancelCommands, Effect, Finish, LogEvent, Print
from prodigy_core.events import CancelRequested, Event
from prodigy_core.interpolate import Var
from prodigy_core.json_values import JSON
from prodigy_core.merge_conflicts import (
    resolve_step,
    strategy,
    verify_command,
    verify_step,
)
from prodigy_core.merge_docs import merge_variables as _merge_variables
from prodigy_core.merge_docs import meta_doc
from prodigy_core.model import Step, Workflow
from prodigy_core.problems import InvalidTransition
from prodigy_core.reprs import value_class
from prodigy_core.results import cut
from prodigy_core.worktree_ops import (
    AskUser,
    BranchMerged,
    ConcludeMerge,
    InspectMerge,
    MergeBranch,
    MergeConcluded,
    MergeConflicted,
    MergeFailed,
    MergeInspected,
    MergeVerified,
    RemoveWorktree,
    SaveWorktreeMeta,
    UserAnswered,
    VerifyMerged,
    WorktreeRemoved,
)

Phase = Literal["idle", "inspect", "ask", "merge", "custom", "custom_verify", "resolve",
                "conclude", "verify", "finalize", "rollback", "cleanup", "done"]

__all__ = ["MergeMachine", "MergeOutcome", "Moved", "begin", "begin_resolution",
           "begin_rollback", "cancel", "merge_variables", "meta_doc", "on_event",
           "start_alone", "step_alone", "strategy"]


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class MergeOutcome:
    """How the merge step ended (``reason`` as in spec 08 §1.2 ``merge.reason``)."""

    merged: bool
    target: str | None
    reason: str | None = None
    error: str | None = None
    error_code: str | None = None
    removed: bool = False

    @property
    def failed(self) -> bool:
        return self.error_code is not None

    def to_json(self) -> dict[str, JSON]:
        return {"target": self.target, "merged": self.merged, "reason": self.reason}


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class MergeMachine:
    ctx: RunContext
    workflow: Workflow
    ask: bool = True
    phase: Phase = "idle"
    pending: int | None = None
    stepper: stepper_mod.Stepper = stepper_mod.Stepper()
    info: MergeInspected | None = None
    target: str | None = None
    keep: bool = False
    conflict: MergeConflicted | None = None
    custom_index: int = 0
    prompt_shown: bool = False
    prompt_response: str | None = None
    merged_sha: str | None = None
    # the transcript of the resolving Claude call (``merge_conflict_resolved``, spec 09)
    transcript: str | None = None
    outcome: MergeOutcome | None = None
    pending_outcome: MergeOutcome | None = None
    step_path: str = ""
    step_display: str = ""
    # the run was interrupted: finish what runs, start nothing new
    cancelled: bool = False
    # the run's circuit breakers (spec 10 §3), handed over by the run or job machine and
    # shared with the steps of the merge (the custom workflow, resolve, verify)
    breakers: Breakers = Breakers()
    # an agent merge of a MapReduce job: the agent branch merged into the session branch
    # (``target``) in the session worktree; None for the final merge
    source: str | None = None

    @property
    def source_branch(self) -> str:
        """The branch being merged: the agent branch, or the session branch."""
        return self.source if self.source is not None else self.wt.branch

    @property
    def for_agent(self) -> bool:
        return self.source is not None

    @property
    def wt(self) -> WorktreeSpec:
        if self.ctx.worktree is None:
            raise InvalidTransition("the merge needs a session worktree")
        return self.ctx.worktree

    @property
    def done(self) -> bool:
        return self.outcome is not None


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class Moved:
    machine: MergeMachine
    effects: tuple[Effect, ...]


# --- helpers -------------------------------------------------------------------------


def _next(m: MergeMachine) -> tuple[MergeMachine, int]:
    cid = m.stepper.next_id
    return attrs.evolve(m, stepper=attrs.evolve(m.stepper, next_id=cid + 1), pending=cid), cid


def merge_variables(m: MergeMachine, conflicting: tuple[str, ...] = ()) -> dict[str, Var]:
    """The ``merge.*`` variables of spec 06 §7.7, as this merge sees them."""
    return _merge_variables(m.ctx, m.info, source=m.source_branch, target=m.target,
                            conflicting=conflicting)


def _base(m: MergeMachine, conflicting: tuple[str, ...] = ()) -> PMap[str, Var]:
    base: PMap[str, Var] = builtin_variables(m.ctx, iteration=1, input_index=None)
    merged: PMap[str, Var] = base.update(merge_variables(m, conflicting))
    return merged


def _finish(m: MergeMachine, outcome: MergeOutcome,
            effects: list[Effect]) -> tuple[MergeMachine, list[Effect]]:
    return attrs.evolve(m, phase="done", pending=None, outcome=outcome), effects


def _kept_message(m: MergeMachine) -> Print:
    return Print(text=f"Worktree kept at {m.wt.path}. Remove it with: "
                      f"prodigy worktree clean {m.wt.name}", level="info")


# --- entry points ----------------------------------------------------------------------


def begin(m: MergeMachine) -> Moved:
    m, cid = _next(m)
    details = m.workflow.merge is not None or strategy(m.workflow) == "claude"
    m = attrs.evolve(m, phase="inspect")
    return Moved(machine=m, effects=(InspectMerge(
        command_id=cid, repo_root=m.ctx.repo_root, worktree_path=m.wt.path,
        branch=m.wt.branch, original_branch=m.wt.original_branch, details=details),))


def on_event(m: MergeMachine, event: Event) -> Moved:
    if m.done:
        raise InvalidTransition(f"the merge is done but received {type(event).__name__}")
    if m.phase in ("custom", "resolve", "verify") and m.stepper.busy:
        return _on_step_event(m, event)
    if getattr(event, "command_id", None) != m.pending:
        raise InvalidTransition(
            f"{type(event).__name__} for command {getattr(event, 'command_id', None)} "
            f"but the merge waits for {m.pending}")
    m = attrs.evolve(m, pending=None)
    effects: list[Effect] = []
    match (m.phase, event):
        case ("inspect", MergeInspected()):
            m, effects = _inspected(m, event)
        case ("inspect", MergeFailed()):
            m, effects = _failed(m, event.code, event.message, "refused")
        case ("ask", UserAnswered()):
            m, effects = _answered(m, event)
        case ("merge", BranchMerged()):
            m, effects = _merged(m, event.sha, event.warnings)
        case ("merge", MergeConflicted()):
            m, effects = _conflicted(m, event)
        case ("merge", MergeFailed()):
            m, effects = _failed(m, event.code, event.message, "refused")
        case ("custom_verify", MergeVerified()):
            if event.merged:
                m, effects = _merged(m, None, ())
            else:
                m, effects = _failed(
                    m, "E4005", f"custom merge workflow finished but {m.wt.branch} is not "
                                f"merged into {m.target}", "custom_failed")
        case ("conclude", MergeConcluded()):
            m, effects = _concluded(m, event)
        case ("finalize", MergeConcluded()):
            m, effects = _resolved(m) if event.accepted else _conflict_outcome(m, m.conflict)
        case ("rollback", MergeConcluded()):
            m, effects = _conflict_outcome(m, m.conflict)
        case ("cleanup", WorktreeRemoved()):
            if event.warning:
                effects.append(Print(text=f"warning[W4005]: {event.warning}", stream="err"))
            else:
                effects.append(LogEvent(event_type="worktree_cleaned", fields=(
                    ("worktree_name", m.wt.name), ("session_id", m.ctx.session_id))))
            outcome = attrs.evolve(m.pending_outcome or MergeOutcome(
                merged=False, target=m.target), removed=event.warning is None)
            m, effects = _finish(m, outcome, effects)
        case _:
            raise InvalidTransition(
                f"merge phase {m.phase!r} cannot receive {type(event).__name__}")
    return Moved(machine=m, effects=tuple(effects))


# --- phases ----------------------------------------------------------------------------


def cancel(m: MergeMachine) -> MergeMachine:
    """The run was interrupted: the merge stops before its next step (no new git merge)."""
    return attrs.evolve(m, cancelled=True)


def _stopped(m: MergeMachine) -> tuple[MergeMachine, list[Effect]]:
    return _finish(m, MergeOutcome(merged=False, target=m.target, reason=None), [
        Print(text=f"Merge of {m.wt.name} skipped: the run was interrupted. "
                   f"To merge later: prodigy worktree merge {m.wt.name}", level="result",
              stream="err")])


def _inspected(m: MergeMachine, event: MergeInspected) -> tuple[MergeMachine, list[Effect]]:
    if m.cancelled:
        return _stopped(attrs.evolve(m, info=event, target=event.target))
    effects: list[Effect] = []
    m = attrs.evolve(m, info=event, target=event.target)
    if event.uncommitted:
        listed = ", ".join(event.uncommitted[:20])
        extra = f" (and {len(event.uncommitted) - 20} more)" \
            if len(event.uncommitted) > 20 else ""
        effects.append(Print(text=f"warning[W4004]: uncommitted changes in the worktree "
                                  f"'{m.wt.name}' are not committed and will not be merged: "
                                  f"{listed}{extra}", stream="err"))
        m = attrs.evolve(m, keep=True)
    if event.details_failed:
        effects.append(Print(text=f"warning[W4006]: cannot list the commits or files to "
                                  f"merge: {event.details_failed}", stream="err"))
    if event.target is None:
        return _failed(m, "E4007", f"no branch to merge into: the original branch "
                                   f"'{m.wt.original_branch}' no longer exists and the "
                                   f"repository has no default branch", "refused",
                       effects)
    if event.target_warning:
        effects.append(Print(text=f"warning[W4002]: {event.target_warning}", stream="err"))
    if event.ahead == 0:
        effects.append(Print(text=f"No new commits in worktree '{m.wt.name}', skipping merge "
                                  f"(already in sync with '{event.target}')"))
        outcome = MergeOutcome(merged=False, target=event.target, reason="no_commits")
        m, more = _cleanup(m, outcome, status="completed")
        return m, [*effects, *more]
    if m.ask:
        m, more = _ask(m)
        return m, [*effects, *more]
    m, more = _start_merge(m)
    return m, [*effects, _prompted(m, "auto"), *more]


def _ask(m: MergeMachine) -> tuple[MergeMachine, list[Effect]]:
    m, cid = _next(m)
    m = attrs.evolve(m, phase="ask", prompt_shown=True)
    return m, [AskUser(command_id=cid, question=f"Merge {m.wt.name} to {m.target} [Y/n]: ")]


def _prompted(m: MergeMachine, answer: str) -> LogEvent:
    return LogEvent(event_type="merge_prompted", fields=(
        ("worktree_name", m.wt.name), ("target_branch", m.target), ("answer", answer),
        ("session_id", m.ctx.session_id)))


def _answered(m: MergeMachine, event: UserAnswered) -> tuple[MergeMachine, list[Effect]]:
    if m.cancelled:
        return _stopped(m)
    if not event.terminal:
        m, effects = _not_merged(attrs.evolve(m, prompt_shown=False), "no_tty")
        return m, [_prompted(m, "no_tty"), *effects]
    if event.answer is None:
        m, effects = _not_merged(attrs.evolve(m, prompt_response="eof"), "declined")
        return m, [_prompted(m, "no"), *effects]
    answer = event.answer.strip().lower()
    if answer in ("", "y", "yes"):
        m, effects = _start_merge(attrs.evolve(m, prompt_response=answer or "y"))
        return m, [_prompted(m, "yes"), *effects]
    if answer in ("n", "no"):
        m, effects = _not_merged(attrs.evolve(m, prompt_response=answer), "declined")
        return m, [_prompted(m, "no"), *effects]
    return _ask(m)


def _not_merged(m: MergeMachine, reason: str) -> tuple[MergeMachine, list[Effect]]:
    effects: list[Effect] = [
        Print(text=f"Worktree {m.wt.name} was not merged into {m.target}.\n"
                   f"To merge later: prodigy worktree merge {m.wt.name}", level="result"),
        SaveWorktreeMeta(doc=meta_doc(m.ctx, "completed", prompt_shown=m.prompt_shown,
                                      prompt_response=m.prompt_response)),
    ]
    return _finish(m, MergeOutcome(merged=False, target=m.target, reason=reason), effects)


def _start_merge(m: MergeMachine) -> tuple[MergeMachine, list[Effect]]:
    if m.workflow.merge is not None:
        effects: list[Effect] = [Print(
            text=f"Executing custom merge workflow for '{m.wt.name}' into '{m.target}'...")]
        m = attrs.evolve(m, phase="custom", custom_index=0)
        m, more = _next_custom(m)
        return m, [*effects, *more]
    m, cid = _next(m)
    m = attrs.evolve(m, phase="merge")
    target = m.target or ""
    return m, [MergeBranch(
        command_id=cid, repo_root=m.ctx.repo_root, source=m.wt.branch, target=target,
        message=f"Merge {m.wt.branch} into {target}",
        temp_path=_temp_path(m), keep_conflict=strategy(m.workflow) == "claude",
        lock_path=_lock(m))]


def _temp_path(m: MergeMachine) -> str:
    if m.for_agent:
        return ""  # an agent merge happens in the session worktree itself
    parent = m.wt.path.rsplit("/", 1)[0]
    return f"{parent}/.merge-{m.wt.name}"


def _lock(m: MergeMachine) -> str:
    return m.wt.repo_lock


def _merged(m: MergeMachine, sha: str | None,
            warnings: tuple[str, ...]) -> tuple[MergeMachine, list[Effect]]:
    effects: list[Effect] = [Print(text=f"warning[W4003]: {w}", stream="err") for w in warnings]
    effects += [
        LogEvent(event_type="worktree_merged", fields=(
            ("source_branch", m.wt.branch), ("target_branch", m.target),
            ("merge_commit", sha), ("session_id", m.ctx.session_id))),
        LogEvent(event_type="merge_completed", fields=(
            ("worktree_name", m.wt.name), ("target_branch", m.target),
            ("method", _method(m)), ("session_id", m.ctx.session_id))),
        Print(text="Worktree changes merged successfully!", level="result"),
    ]
    m = attrs.evolve(m, merged_sha=sha)
    outcome = MergeOutcome(merged=True, target=m.target)
    m, more = _cleanup(m, outcome, status="merged")
    return m, [*effects, *more]


def _method(m: MergeMachine) -> str:
    return "custom" if m.workflow.merge is not None else "git"


def _merge_failed_event(m: MergeMachine, error: str) -> LogEvent:
    return LogEvent(event_type="merge_failed", fields=(
        ("worktree_name", m.wt.name), ("target_branch", m.target), ("method", _method(m)),
        ("error", error), ("session_id", m.ctx.session_id)))


def _cleanup(m: MergeMachine, outcome: MergeOutcome,
             status: str) -> tuple[MergeMachine, list[Effect]]:
    """Spec 06 §7.8: remove the worktree and branch unless it must be kept."""
    removable = outcome.merged or outcome.reason == "no_commits"
    effects: list[Effect] = [SaveWorktreeMeta(doc=meta_doc(
        m.ctx, status, merged=outcome.merged, prompt_shown=m.prompt_shown,
        prompt_response=m.prompt_response))]
    if m.wt.named or m.keep or not m.wt.auto_cleanup or not removable:
        if outcome.merged or outcome.reason == "no_commits":
            effects.append(_kept_message(m))
        return _finish(m, outcome, effects)
    m, cid = _next(m)
    m = attrs.evolve(m, phase="cleanup", pending_outcome=outcome)
    effects.append(RemoveWorktree(command_id=cid, repo_root=m.ctx.repo_root, path=m.wt.path,
                                  branch=m.wt.branch, target=m.target, lock_path=_lock(m)))
    return m, effects


def _failed(m: MergeMachine, code: str, message: str, reason: str,
            effects: list[Effect] | None = None) -> tuple[MergeMachine, list[Effect]]:
    out = list(effects or [])
    out += [
        _merge_failed_event(m, message),
        Print(text=f"error[{code}]: {message}", level="result", stream="err"),
        Print(text=f"The worktree is kept at {m.wt.path}.", level="result", stream="err"),
        SaveWorktreeMeta(doc=meta_doc(m.ctx, "completed", error=message,
                                      prompt_shown=m.prompt_shown,
                                      prompt_response=m.prompt_response)),
    ]
    return _finish(m, MergeOutcome(merged=False, target=m.target, reason=reason,
                                   error=message, error_code=code), out)


def _conflicted(m: MergeMachine, event: MergeConflicted) -> tuple[MergeMachine, list[Effect]]:
    effects: list[Effect] = [Print(text=f"warning[W4003]: {w}", stream="err")
                             for w in event.warnings]
    effects.append(LogEvent(event_type="merge_conflict", fields=(
        ("source_branch", m.wt.branch), ("target_branch", m.target),
        ("conflicting_files", list(event.paths)), ("strategy", strategy(m.workflow)),
        ("session_id", m.ctx.session_id))))
    if event.aborted:
        m, more = _conflict_outcome(attrs.evolve(m, conflict=event), event)
        return m, [*effects, *more]
    effects.append(Print(text=f"Merge conflicts in: {', '.join(event.paths)}; asking Claude "
                              f"to resolve them"))
    m, more = _resolve(m, event)
    return m, [*effects, *more]


def _resolve(m: MergeMachine, event: MergeConflicted) -> tuple[MergeMachine, list[Effect]]:
    """Claude resolution (spec 06 §6.3), in the directory where the merge stopped."""
    m = attrs.evolve(m, conflict=event, phase="resolve")
    return _begin_step(m, resolve_step(m.workflow), "merge_conflicts.claude")


def begin_resolution(m: MergeMachine, event: MergeConflicted) -> Moved:
    """Resolve a conflicted merge left in ``event.merge_dir`` (not aborted): the entry
    of agent merges, whose ``MergeBranch`` the job issued itself."""
    if event.aborted:
        raise InvalidTransition("an aborted merge has nothing to resolve")
    m, effects = _resolve(m, event)
    return Moved(machine=m, effects=tuple(effects))


def begin_rollback(m: MergeMachine, merge_dir: str, pre: str) -> Moved:
    """Restore ``merge_dir`` to ``pre`` (``git merge --abort`` while a merge is in
    progress, else ``git reset --keep``): a resolution there was cut short by a crash."""
    m, cid = _next(m)
    conflict = MergeConflicted(command_id=0, paths=(), merge_dir=merge_dir, pre=pre,
                               aborted=False)
    m = attrs.evolve(m, conflict=conflict, phase="rollback")
    return Moved(machine=m, effects=(ConcludeMerge(
        command_id=cid, merge_dir=merge_dir, repo_root=m.ctx.repo_root,
        source=m.source_branch, pre=pre, action="rollback", temp_path=_temp_path(m),
        lock_path=_lock(m)),))


def _conflict_outcome(m: MergeMachine,
                      event: MergeConflicted | None) -> tuple[MergeMachine, list[Effect]]:
    paths = ", ".join(event.paths) if event is not None else ""
    if m.for_agent:  # the job records the item's failure
        return _finish(m, MergeOutcome(merged=False, target=m.target, reason="conflict",
                                       error=f"merge conflict in {paths}",
                                       error_code="E4004"), [])
    target = m.target or ""
    text = (f"Merge of {m.wt.branch} into {target} has conflicts in: {paths}\n"
            f"The merge was aborted; {target} is unchanged. The worktree is kept at "
            f"{m.wt.path}.\n"
            f"To merge by hand: git checkout {target} && git merge --no-ff {m.wt.branch}")
    effects: list[Effect] = [
        _merge_failed_event(m, f"merge conflict in {paths}"),
        Print(text=text, level="result", stream="err"),
        SaveWorktreeMeta(doc=meta_doc(m.ctx, "completed", error=f"merge conflict in {paths}",
                                      prompt_shown=m.prompt_shown,
                                      prompt_response=m.prompt_response)),
    ]
    return _finish(m, MergeOutcome(merged=False, target=m.target, reason="conflict",
                                   error=f"merge conflict in {paths}", error_code="E4004"),
                   effects)


def _concluded(m: MergeMachine, event: MergeConcluded) -> tuple[MergeMachine, list[Effect]]:
    if not event.accepted:
        effects: list[Effect] = [Print(text=f"The conflict resolution was not accepted: "
                                            f"{event.reason}", stream="err")]
        m, more = _conflict_outcome(m, m.conflict)
        return m, [*effects, *more]
    m = attrs.evolve(m, merged_sha=event.sha)
    verify = verify_command(m.workflow)
    if verify is not None and m.cancelled and m.conflict is not None:
        # interrupted: nothing new starts, and an unverified resolution is not accepted
        return _rollback(m, m.conflict, "the run was interrupted before it was verified")
    if verify is not None:
        m = attrs.evolve(m, phase="verify")
        return _begin_step(m, verify_step(verify), "merge_conflicts.verify")
    return _resolved(m)


def _resolved(m: MergeMachine) -> tuple[MergeMachine, list[Effect]]:
    if m.for_agent:  # the job logs the resolution and completes the item
        return _finish(m, MergeOutcome(merged=True, target=m.target), [])
    effects: list[Effect] = [LogEvent(event_type="merge_conflict_resolved", fields=(
        ("source_branch", m.wt.branch), ("target_branch", m.target), ("resolver", "claude"),
        ("json_log_location", m.transcript), ("session_id", m.ctx.session_id)))]
    m, more = _merged(m, m.merged_sha, ())
    return m, [*effects, *more]


# --- steps inside the merge ----------------------------------------------------------


def _step_ctx(m: MergeMachine) -> RunContext:
    if m.phase in ("resolve", "verify") and m.conflict is not None:
        return attrs.evolve(m.ctx, project_dir=m.conflict.merge_dir)
    return m.ctx


def _begin_step(m: MergeMachine, step: Step, path: str) -> tuple[MergeMachine, list[Effect]]:
    conflicting = m.conflict.paths if m.conflict is not None else ()
    m = attrs.evolve(m, step_path=path, step_display=display_name(step))
    done = stepper_mod.begin(m.stepper, _step_ctx(m), _base(m, conflicting), step, path,
                             m.breakers)
    m = attrs.evolve(m, stepper=done.stepper, breakers=done.breakers)
    effects = list(done.effects)
    if done.outcome is not None:
        m, more = _step_done(m, done.outcome)
        effects += more
    return m, effects


def _next_custom(m: MergeMachine) -> tuple[MergeMachine, list[Effect]]:
    steps = m.workflow.merge.steps if m.workflow.merge is not None else ()
    if m.custom_index >= len(steps):
        m, cid = _next(m)
        m = attrs.evolve(m, phase="custom_verify")
        return m, [VerifyMerged(command_id=cid, repo_root=m.ctx.repo_root,
                                source=m.wt.branch, target=m.target or "")]
    step = steps[m.custom_index]
    timeout = m.workflow.merge.timeout if m.workflow.merge is not None else None
    if step.timeout is None and timeout is not None:
        step = attrs.evolve(step, timeout=timeout)
    effects: list[Effect] = [Print(
        text=f"Executing merge step {m.custom_index + 1}/{len(steps)}: {display_name(step)}")]
    m, more = _begin_step(m, step, f"merge[{m.custom_index}]")
    return m, [*effects, *more]


def _on_step_event(m: MergeMachine, event: Event) -> Moved:
    conflicting = m.conflict.paths if m.conflict is not None else ()
    done = stepper_mod.on_event(m.stepper, _step_ctx(m), _base(m, conflicting), event,
                                m.breakers)
    m = attrs.evolve(m, stepper=done.stepper, breakers=done.breakers)
    effects = list(done.effects)
    if done.outcome is not None:
        m, more = _step_done(m, done.outcome)
        effects += more
    return Moved(machine=m, effects=tuple(effects))


def _step_logged(m: MergeMachine, outcome: stepper_mod.Outcome, path: str,
                 display: str) -> LogEvent:
    """``step_completed``/``step_failed`` of a step of the merge scope (spec 09 §5.5)."""
    event_type = {"skipped": "step_skipped", "failed": "step_failed"}.get(
        outcome.status, "step_completed")
    fields: dict[str, JSON] = {
        "scope": "merge", "step_path": path, "display": display,
        "attempt": max(outcome.executions, 1), "status": outcome.status,
        "exit_code": outcome.exit_code, "duration_ms": int(outcome.duration * 1000),
        "session_id": m.ctx.session_id}
    if event_type == "step_failed":
        fields.update({"error": outcome.error, "error_code": outcome.error_code,
                       "error_class": outcome.error_class})
    else:
        fields.update({"output": cut(outcome.output), "stderr": cut(outcome.stderr)})
    return LogEvent(event_type=event_type, fields=tuple(fields.items()))


def _step_done(m: MergeMachine,
               outcome: stepper_mod.Outcome) -> tuple[MergeMachine, list[Effect]]:
    # logged before ``_step_outcome``, which may begin the next step (its path and display)
    logged = _step_logged(m, outcome, m.step_path, m.step_display)
    m, effects = _step_outcome(m, outcome)
    return m, [logged, *effects]


def _step_outcome(m: MergeMachine,
                  outcome: stepper_mod.Outcome) -> tuple[MergeMachine, list[Effect]]:
    passed = outcome.status != "failed"
    if m.phase == "custom":
        if not passed:
            return _failed(m, "E4005", f"custom merge workflow failed at step "
                                       f"{m.custom_index + 1}: {outcome.error or 'failed'}",
                           "custom_failed")
        m = attrs.evolve(m, custom_index=m.custom_index + 1)
        return _next_custom(m)
    conflict = m.conflict
    if conflict is None:
        raise InvalidTransition(f"merge step ended in phase {m.phase!r} without a conflict")
    if m.phase == "resolve":
        log = m.stepper.assigned.get("claude.json_log_location")
        if log is not None and isinstance(log.value, str):
            m = attrs.evolve(m, transcript=log.value)
        m, cid = _next(m)
        action: Literal["accept", "rollback"] = "accept" if passed else "rollback"
        m = attrs.evolve(m, phase="conclude" if passed else "rollback")
        effects: list[Effect] = []
        if not passed:
            effects.append(Print(text=f"The conflict resolution failed: "
                                      f"{outcome.error or 'Claude call failed'}", stream="err"))
        # a temporary merge worktree must outlive ``verify``, which runs in it
        keep_temp = passed and verify_command(m.workflow) is not None
        effects.append(ConcludeMerge(
            command_id=cid, merge_dir=conflict.merge_dir, repo_root=m.ctx.repo_root,
            source=m.source_branch, pre=conflict.pre, conflicting=conflict.paths, action=action,
            temp_path="" if keep_temp else _temp_path(m), lock_path=_lock(m)))
        return m, effects
    if m.phase == "verify":
        if passed and conflict.merge_dir == _temp_path(m):
            # accepting again is harmless (the merge commit exists); it drops the
            # temporary worktree
            m, cid = _next(m)
            m = attrs.evolve(m, phase="finalize")
            return m, [ConcludeMerge(
                command_id=cid, merge_dir=conflict.merge_dir, repo_root=m.ctx.repo_root,
                source=m.source_branch, pre=conflict.pre, action="accept",
                temp_path=_temp_path(m), lock_path=_lock(m))]
        if passed:
            return _resolved(m)
        return _rollback(m, conflict, "merge_conflicts.verify failed")
    raise InvalidTransition(f"merge step ended in phase {m.phase!r}")


def _rollback(m: MergeMachine, conflict: MergeConflicted,
              why: str) -> tuple[MergeMachine, list[Effect]]:
    """Undo an accepted resolution (its merge commit) that is rejected after all."""
    m, cid = _next(m)
    m = attrs.evolve(m, phase="rollback")
    return m, [
        Print(text=f"The conflict resolution was rejected: {why}", stream="err"),
        ConcludeMerge(command_id=cid, merge_dir=conflict.merge_dir, repo_root=m.ctx.repo_root,
                      source=m.source_branch, pre=conflict.pre, conflicting=conflict.paths,
                      action="rollback", temp_path=_temp_path(m), lock_path=_lock(m))]


# --- the merge alone (``prodigy worktree merge``) ------------------------------------


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class MergeTransition:
    state: MergeMachine
    effects: tuple[Effect, ...]


def start_alone(m: MergeMachine) -> MergeTransition:
    """Merge a kept session worktree on its own; ends with ``Finish`` (exit 0 or 1)."""
    moved = begin(attrs.evolve(m, ask=False))
    return _alone(moved)


def step_alone(m: MergeMachine, event: Event) -> MergeTransition:
    if isinstance(event, CancelRequested):
        return MergeTransition(state=m, effects=(CancelCommands(),))
    return _alone(on_event(m, event))


def _alone(moved: Moved) -> MergeTransition:
    m = moved.machine
    effects = list(moved.effects)
    if m.outcome is not None:
        code = 1 if m.outcome.failed else 0
        effects.append(Finish(outcome=m.outcome.to_json() | {
            "error": m.outcome.error, "error_code": m.outcome.error_code,
            "removed": m.outcome.removed}, exit_code=code))
    return MergeTransition(state=m, effects=tuple(effects))
