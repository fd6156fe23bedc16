"""How a MapReduce job ends (spec 05 §3 steps 9–10, §10.3, §15, §19), and its summaries.

``job_completed`` logs the end of the job's work and hands the session worktree to the
final merge (``prodigy_core.merge_machine``), whose answers ``on_merge_event`` feeds until
the job finishes; a reprocess job working in the original job's worktree finishes at once.
``job_failed`` (setup, input, a stopped map phase, reduce, a phase limit) and
``interrupted`` (CancelRequested, once nothing runs any more) save the job state so that
``prodigy resume-job`` can go on, and finish the run.  ``summary`` and ``session_doc`` are
the documents the run leaves behind (the job state document is ``job_docs.job_doc``).
"""

from __future__ import annotations

import attrs
from pyrsistent import pmap

from prodigy_core import job_pool, job_report, merge_machine
from prodigy_core.analytics import Usage
from prodigy_core.effects import CancelCommands, Effect, Finish, LogEvent, Print, SaveSession
from prodigy_core.events import CancelRequested, Event
from prodigy_core.job_docs import job_doc
from prodigy_core.job_ops import SaveJobState
from prodigy_core.job_state import ItemStates, ItemStatus, JobState
from prodigy_core.json_values import JSON
from prodigy_core.problems import InvalidTransition
from prodigy_core.step_frames import Stepper
from prodigy_core.worktree_ops import SaveWorktreeMeta

Moves = tuple[JobState, list[Effect]]


def exit_code(state: JobState) -> int:
    return 3 if state.count("failed") else 0


def job_completed(state: JobState) -> Moves:
    ok, failed = state.count("succeeded"), state.count("failed")
    state = attrs.evolve(state, status="completed")
    state, pool = job_pool.cleanup(state)  # the agents' worktree pool goes (spec 06 §9)
    effects: list[Effect] = [
        *pool,
        LogEvent(event_type="job_completed", fields=(
            ("duration_ms", 0), ("success_count", ok), ("failure_count", failed),
            ("job_id", state.config.job_id))),
        SaveJobState(doc=job_doc(state)),
        Print(text="MapReduce job completed" + (f" ({failed} failed)" if failed else ""),
              level="result"),
        *job_report.summary_prints(state),
    ]
    if not state.config.final_merge:
        # a reprocess job working in the original job's session worktree: that worktree
        # is merged with the original job (or `prodigy worktree merge`), not here
        code = exit_code(state)
        state = attrs.evolve(state, phase="done")
        return state, [*effects, SaveSession(session=session_doc(state)),
                       Finish(outcome=summary(state, code), exit_code=code)]
    machine = merge_machine.MergeMachine(
        ctx=state.ctx, workflow=state.workflow, ask=not state.ctx.auto_yes,
        stepper=Stepper(vars=state.variables, next_id=state.next_id),
        breakers=state.breakers)
    moved = merge_machine.begin(machine)
    state = attrs.evolve(state, phase="merge", merge=moved.machine)
    state, more = _after_merge(state, list(moved.effects))
    return state, [*effects, *more]


def on_merge_event(state: JobState, event: Event) -> Moves:
    machine = state.merge
    if machine is None:
        raise InvalidTransition("merge phase without a merge machine")
    moved = merge_machine.on_event(machine, event)
    state = attrs.evolve(state, merge=moved.machine)
    return _after_merge(state, list(moved.effects))


def _after_merge(state: JobState, effects: list[Effect]) -> Moves:
    machine = state.merge
    if machine is None or machine.outcome is None:
        return state, effects
    outcome = machine.outcome
    state = attrs.evolve(state, merge_outcome=outcome, phase="done",
                         next_id=machine.stepper.next_id, breakers=machine.breakers)
    code = 1 if outcome.failed else exit_code(state)
    if outcome.failed:
        state = attrs.evolve(state, error=outcome.error, error_code=outcome.error_code)
    if state.cancel_signal is not None and not outcome.merged:
        code = 143 if state.cancel_signal == "SIGTERM" else 130
    effects += [
        LogEvent(event_type="merge_finished", fields=(
            ("merged", outcome.merged), ("target", outcome.target),
            ("reason", outcome.reason), ("error_code", outcome.error_code))),
        SaveSession(session=session_doc(state)),
        Finish(outcome=summary(state, code), exit_code=code),
    ]
    return state, effects


def job_failed(state: JobState, error: str, code: str,
               effects: list[Effect] | None = None, exit_code: int = 1) -> Moves:
    state, flushed = job_report.flush_failures(state)
    state = attrs.evolve(state, status="failed", phase="done", error=error, error_code=code)
    state, pool = job_pool.cleanup(state)  # the agents' worktree pool goes (spec 06 §9)
    wt = state.ctx.worktree
    done = state.count("succeeded") + state.count("failed")
    out = [*(effects or []), *flushed, *pool]
    out += [
        LogEvent(event_type="job_failed", fields=(
            ("error", error), ("error_code", code), ("partial_results", done),
            ("job_id", state.config.job_id))),
        SaveJobState(doc=job_doc(state)),
        SaveWorktreeMeta(doc=merge_machine.meta_doc(state.ctx, "failed", error=error)
                         | {"job_id": state.config.job_id}),
        SaveSession(session=session_doc(state)),
        Print(text=f"error[{code}]: {error}", level="result", stream="err"),
        Print(text=f"Resume with: prodigy resume-job {state.config.job_id}", level="result",
              stream="err"),
    ]
    if wt is not None:
        out.append(Print(text=f"The worktree is kept at {wt.path}", stream="err"))
    out += [*job_report.summary_prints(state),
            Finish(outcome=summary(state, exit_code), exit_code=exit_code)]
    return state, out


def on_cancel(state: JobState, event: CancelRequested) -> Moves:
    if state.cancel_signal is not None:
        return state, []
    state = attrs.evolve(state, cancel_signal=event.signal)
    if state.phase == "merge" and state.merge is not None:
        state = attrs.evolve(state, merge=merge_machine.cancel(state.merge))
        return state, [CancelCommands()]
    if state.phase in ("worktree", "items", "env"):
        return state, []  # the answer comes; then the job stops
    if state.phase == "map" and not state.agents and state.merging is None:
        return interrupted(state)
    return state, [CancelCommands()]


def interrupted(state: JobState) -> Moves:
    state, flushed = job_report.flush_failures(state)
    signal = state.cancel_signal or "SIGINT"
    code = 143 if signal == "SIGTERM" else 130
    # running items go back to pending (the attempt is not counted)
    back: dict[int, ItemStatus] = {i: ("pending" if s == "running" else s)
                                   for i, s in state.item_state.items()}
    item_state = ItemStates.of(back)
    attempts = state.attempts
    for index in state.agents:
        attempts = attempts.set(index, max(0, attempts.get(index, 1) - 1))
    state = attrs.evolve(state, status="interrupted", phase="done", item_state=item_state,
                         attempts=attempts, agents=pmap(), backoff=pmap())
    state, pool = job_pool.cleanup(state)  # the agents' worktree pool goes (spec 06 §9)
    job = state.config.job_id
    return state, [
        *flushed,
        *pool,
        LogEvent(event_type="job_paused", fields=(("checkpoint_version", 0),
                                                  ("reason", "interrupted"),
                                                  ("job_id", job))),
        SaveJobState(doc=job_doc(state)),
        SaveWorktreeMeta(doc=merge_machine.meta_doc(
            state.ctx, "interrupted",
            interruption="termination" if signal == "SIGTERM" else "user_interrupt")
            | {"job_id": job}),
        SaveSession(session=session_doc(state)),
        Print(text=f"Job interrupted. Resume with: prodigy resume-job {job}", level="result",
              stream="err"),
        Finish(outcome=summary(state, code), exit_code=code),
    ]


# --- documents -----------------------------------------------------------------------


def summary(state: JobState, code: int) -> dict[str, JSON]:
    status = {"completed": "completed", "failed": "failed",
              "interrupted": "interrupted"}.get(state.status, "failed")
    wt = state.ctx.worktree
    merge: dict[str, JSON] = state.merge_outcome.to_json() if state.merge_outcome else \
        {"target": None, "merged": False, "reason": None}
    return {
        "status": status, "exit_code": code, "session_id": state.ctx.session_id,
        "job_id": state.config.job_id, "workflow": state.ctx.workflow_path,
        "worktree": None if wt is None else {"name": wt.name, "path": wt.path,
                                             "branch": wt.branch},
        "merge": merge, "steps": None,
        "items": {"total": state.total, "successful": state.count("succeeded"),
                  "failed": state.count("failed"), "pending": state.count("pending")},
        "cost_usd": round(state.cost, 6), "duration_ms": 0,
        "error": state.error, "error_code": state.error_code,
    }


def session_doc(state: JobState) -> dict[str, JSON]:
    ctx = state.ctx
    wt = ctx.worktree
    status = {"running": "Running", "completed": "Completed", "failed": "Failed",
              "interrupted": "Paused"}[state.status]
    if state.status == "completed" and state.merge_outcome is None:
        status = "Running"
    return {
        "id": ctx.session_id, "session_type": "MapReduce", "status": status,
        "started_at": state.started_at,
        "completed_at": state.last_time if status == "Completed" else None,
        "repo_name": ctx.repo_name, "repo_path": ctx.repo_root,
        "worktree": None if wt is None else {
            "name": wt.name, "path": wt.path, "branch": wt.branch,
            "original_branch": wt.original_branch, "base_commit": wt.base_commit,
            "named": wt.named, "subdir": wt.subdir},
        "metadata": {"workflow_type": "mapreduce", "job_id": state.config.job_id},
        "timings": {}, "error": state.error,
        "workflow_data": {"workflow_id": ctx.session_id, "workflow_name": state.workflow.name,
                          "workflow_path": ctx.workflow_path, "current_step": 0,
                          "total_steps": 0, "completed_steps": [],
                          "iterations_completed": 0, "files_changed": 0,
                          "worktree_name": wt.name if wt else None},
        "mapreduce_data": {"job_id": state.config.job_id, "total_items": state.total,
                           "successful": state.count("succeeded"),
                           "failed": state.count("failed"),
                           "pending": state.count("pending"), "phase": state.phase},
        "merge": state.merge_outcome.to_json() if state.merge_outcome else
        {"target": None, "merged": False, "reason": None},
        "analytics": Usage().to_json() | {"total_cost_usd": round(state.cost, 6)},
        "dry_run": ctx.dry_run,
    }
