"""The job state document (spec 09 §4.3) and restoring a job from it (spec 05 §14–§16).

``job_doc(state)`` is what ``SaveJobState`` writes (``checkpoint`` says when a map-phase
transition writes a new version); ``restore(state, doc, later)`` rebuilds
the machine's state from the newest document and the events logged after it: an
``agent_completed`` or final ``agent_failed`` event written just before a crash counts, so
its item never runs again.  Items that were running (their agents are gone) are pending;
agent branches that were waiting for the merge queue (``pending_merges``) are merged first.
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs
from pyrsistent import PMap, pmap

from prodigy_core.interpolate import Var
from prodigy_core.job_ops import SaveJobState
from prodigy_core.job_state import ItemStates, ItemStatus, JobState, Queued
from prodigy_core.json_values import JSON

FORMAT_VERSION = 1


def job_doc(state: JobState) -> dict[str, JSON]:
    spec = state.workflow.map
    ok = [state.item_id(i) for i, s in sorted(state.item_state.items()) if s == "succeeded"]
    failed: dict[str, JSON] = {}
    for i, s in sorted(state.item_state.items()):
        if s == "failed":
            result = state.results.get(i, {})
            failed[state.item_id(i)] = {"item_id": state.item_id(i),
                                     "attempts": state.attempts.get(i, 1),
                                     "last_error": result.get("error"),
                                     "last_attempt": state.last_time}
    pending = [state.item_id(i) for i, s in sorted(state.item_state.items())
               if s in ("pending", "running")]
    merges: list[JSON] = [{"item_id": state.item_id(q.index), "agent_id": q.agent_id,
                           "branch": q.branch, "path": q.path,
                           "commits": list(q.commits), "files": list(q.files),
                           "attempt": q.attempt}
                          for q in ((state.merging,) if state.merging else ()) + state.queue]
    phase = {"worktree": "setup", "setup": "setup", "items": "setup", "map": "map",
             "reduce": "reduce", "merge": "complete", "done": "complete"}[state.phase]
    if state.phase == "done" and state.status in ("failed", "interrupted"):
        # where the job stopped, not "complete"
        unfinished = any(s in ("pending", "running", "merging")
                         for s in state.item_state.values())
        if not state.items_loaded:
            phase = "setup"
        elif unfinished or state.stop_reason:
            phase = "map"
        else:
            phase = "reduce"
    status = {"running": "running", "failed": "failed", "interrupted": "paused",
              "completed": "completed_with_failures" if state.count("failed")
              else "completed"}[state.status]
    if state.stop_reason is not None and state.status == "failed":
        status = "stopped"
    return {
        "format": "prodigy-job-state",
        "job_id": state.config.job_id,
        "checkpoint_format_version": FORMAT_VERSION,
        "config": {"input": spec.input if spec else None,
                   "json_path": spec.json_path if spec else None,
                   "max_parallel": spec.max_parallel if spec else None,
                   "agent_timeout_secs": spec.agent_timeout_secs if spec else None,
                   "continue_on_failure": state.workflow.error_policy.continue_on_failure,
                   "batch_size": None, "enable_checkpoints": True,
                   "max_items": spec.max_items if spec else None,
                   "offset": spec.offset if spec else None},
        "started_at": state.started_at,
        "status": status,
        "phase": phase,
        "session_id": state.ctx.session_id,
        "workflow_path": state.ctx.workflow_path,
        "workflow_hash": state.ctx.workflow_hash,
        "parent_worktree": state.ctx.worktree.path if state.ctx.worktree else None,
        "work_items": list(state.items) if state.items_loaded else [],
        "item_ids": list(state.item_ids),
        "reprocess_of": state.config.reprocess_of,
        "final_merge": state.config.final_merge,
        "items_loaded": state.items_loaded,
        "total_items": state.total,
        "agent_results": {state.item_id(i): r for i, r in sorted(state.results.items())},
        "completed_agents": ok,  # type: ignore[dict-item]
        "failed_agents": failed,
        "pending_items": pending,  # type: ignore[dict-item]
        "pending_merges": merges,
        "successful_count": len(ok),
        "failed_count": len(failed),
        "is_complete": state.status == "completed",
        "setup_completed": state.items_loaded or state.setup_index >= len(
            state.workflow.setup.steps if state.workflow.setup else ()),
        "setup_state": {"completed_steps": list(range(state.setup_index)),
                        "base": state.setup_base},
        "setup_output": None,
        "variables": {k: v.value for k, v in sorted(state.variables.items())},
        "variable_meta": {"untrusted": [k for k, v in sorted(state.variables.items())
                                        if not v.trusted]},
        "agent_template": [],
        "reduce_commands": [],
        "reduce_phase_state": {"started": state.reduce_index > 0,
                               "completed": state.status == "completed",
                               "executed_commands": list(range(state.reduce_index)),
                               "output": None, "error": None, "started_at": None,
                               "completed_at": None},
        "item_retry_counts": {state.item_id(i): n for i, n in sorted(state.attempts.items())},
        # agents running when this was written: after a crash their attempt does not
        # count, so the item runs again as the same agent id, whose creation replaces the
        # stale worktree and branch (spec 05 §15.2)
        "running_agents": [{"item_id": state.item_id(a.index), "agent_id": a.agent_id,
                            "path": a.path, "branch": a.branch}
                           for a in sorted(state.agents.values(), key=lambda a: a.index)],
        "stop_reason": state.stop_reason,
        "worktree_stats": {"worktrees_created": state.worktrees_created,
                           "worktrees_reused": state.worktrees_reused,
                           "max_worktrees_in_use": state.max_in_use},
        "positional_args": list(state.ctx.args),
        "profile": state.ctx.profile,
        "parameters": {},
        "cost_usd": round(state.cost, 6),
    }


def checkpoint_stride(total: int) -> int:
    """Item transitions between job state versions in the map phase.

    Small jobs save after every transition (spec 05 §14).  Large ones save every few
    items: the document holds every item and result, so saving it after each of 2,000
    items would write gigabytes.  Nothing is lost in between — every final status is in
    the journal first, and resume applies the completion events logged after the newest
    version; an agent branch that was waiting for the merge queue when the process died
    is run again.
    """
    return max(1, min(25, total // 50))


def checkpoint(state: JobState) -> tuple[JobState, list[SaveJobState]]:
    """A new job state version after an item transition of the map phase, if it is due."""
    finals = state.count("succeeded") + state.count("failed")
    quiet = not state.agents and not state.queue and state.merging is None
    if quiet or finals - state.saved_finals >= checkpoint_stride(state.total) or \
            checkpoint_stride(state.total) == 1:
        state = attrs.evolve(state, saved_finals=finals)
        return state, [SaveJobState(doc=job_doc(state))]
    return state, []


def _index(item_id: object, ids: dict[str, int] | None = None) -> int | None:
    if ids and isinstance(item_id, str) and item_id in ids:
        return ids[item_id]
    if isinstance(item_id, str) and item_id.startswith("item_"):
        try:
            return int(item_id[len("item_"):])
        except ValueError:
            return None
    return None


def _ints(value: object) -> list[int]:
    if not isinstance(value, list):
        return []
    return [v for v in value if isinstance(v, int) and not isinstance(v, bool)]


def restore_variables(doc: dict[str, JSON]) -> PMap[str, Var]:
    """The setup variables of a job state document, with their trust restored."""
    variables = doc.get("variables")
    meta = doc.get("variable_meta")
    listed = meta.get("untrusted") if isinstance(meta, dict) else None
    untrusted = {str(k) for k in listed} if isinstance(listed, list) else set()
    if not isinstance(variables, dict):
        return pmap()
    return pmap({str(k): Var(value=v, trusted=k not in untrusted)
                 for k, v in variables.items()})


def restore(state: JobState, doc: dict[str, JSON],
            later: Sequence[dict[str, JSON]] = ()) -> JobState:
    items_raw = doc.get("work_items")
    items = tuple(items_raw) if isinstance(items_raw, list) else ()
    ids_raw = doc.get("item_ids")
    item_ids = tuple(str(x) for x in ids_raw) if isinstance(ids_raw, list) else ()
    ids = {name: i for i, name in enumerate(item_ids)}
    loaded = bool(doc.get("items_loaded", bool(items)))
    status: dict[int, ItemStatus] = {i: "pending" for i in range(len(items))}
    results: dict[int, dict[str, JSON]] = {}
    agent_results = doc.get("agent_results")
    if isinstance(agent_results, dict):
        for key, result in agent_results.items():
            index = _index(key, ids)
            if index is None or index >= len(items) or not isinstance(result, dict):
                continue
            results[index] = result
            status[index] = "succeeded" if result.get("status") == "Success" else "failed"
    attempts: dict[int, int] = {}
    counts = doc.get("item_retry_counts")
    if isinstance(counts, dict):
        for key, n in counts.items():
            index = _index(key, ids)
            if index is not None and isinstance(n, int):
                attempts[index] = n
    running = doc.get("running_agents")
    if isinstance(running, list):
        for entry in running:
            index = _index(entry.get("item_id"), ids) if isinstance(entry, dict) else None
            if index is not None and index in attempts:
                attempts[index] = max(0, attempts[index] - 1)
    # completion events logged after the document (spec 09 §5.4)
    for record in later:
        body = record.get("event")
        if not isinstance(body, dict):
            continue
        kind = body.get("event_type")
        result = body.get("result")
        position = body.get("item_index")
        if not isinstance(position, int) or position >= len(items) or \
                not isinstance(result, dict):
            continue
        index = position
        if kind == "agent_completed":
            results[index] = result
            status[index] = "succeeded"
        elif kind == "agent_failed" and body.get("retry_eligible") is False:
            results[index] = result
            status[index] = "failed"
    queue: list[Queued] = []
    merges = doc.get("pending_merges")
    if isinstance(merges, list):
        for entry in merges:
            if not isinstance(entry, dict):
                continue
            index = _index(entry.get("item_id"), ids)
            if index is None or index >= len(items) or status.get(index) in (
                    "succeeded", "failed"):
                continue
            commits = entry.get("commits")
            files = entry.get("files")
            queue.append(Queued(
                index=index, agent_id=str(entry.get("agent_id", "")),
                branch=str(entry.get("branch", "")), path=str(entry.get("path", "")),
                commits=tuple(str(c) for c in commits) if isinstance(commits, list) else (),
                files=tuple(str(f) for f in files) if isinstance(files, list) else (),
                attempt=int(entry.get("attempt") or 1)  # type: ignore[arg-type]
                if isinstance(entry.get("attempt"), int) else 1))
            status[index] = "merging"
    bound = restore_variables(doc)
    setup = doc.get("setup_state")
    setup_index = len(_ints(setup.get("completed_steps"))) if isinstance(setup, dict) else 0
    base = setup.get("base") if isinstance(setup, dict) else None
    reduce = doc.get("reduce_phase_state")
    reduce_index = len(_ints(reduce.get("executed_commands"))) \
        if isinstance(reduce, dict) else 0
    cost = doc.get("cost_usd")
    state = _restore_worktree_stats(state, doc.get("worktree_stats"))
    return attrs.evolve(
        state, items=items, items_loaded=loaded, item_state=ItemStates.of(status),
        results=pmap(results), attempts=pmap(attempts), queue=tuple(queue),
        variables=bound, setup_index=setup_index,
        setup_base=base if isinstance(base, str) else None, reduce_index=reduce_index,
        cost=float(cost) if isinstance(cost, int | float) else 0.0,
        started_at=str(doc.get("started_at") or state.started_at), item_ids=item_ids)


def _restore_worktree_stats(state: JobState, stats: JSON) -> JobState:
    """The agent worktree counters go on across resumes (spec 06 §9.3)."""
    counts: dict[str, int] = {}
    if isinstance(stats, dict):
        counts = {k: v for k, v in stats.items() if isinstance(v, int)}
    return attrs.evolve(state, worktrees_created=counts.get("worktrees_created", 0),
                        worktrees_reused=counts.get("worktrees_reused", 0),
                        max_in_use=counts.get("max_worktrees_in_use", 0))
