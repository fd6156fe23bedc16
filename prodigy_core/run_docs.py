"""The documents a run writes: its summary, checkpoint and session record (spec 08
§2.1.4, spec 09 §4.1–§4.2), and the end-of-run summary lines (spec 14 §5).

Pure functions of ``RunState`` (``prodigy_core.run_machine``), split out of the run
machine so that each module stays readable; the run machine calls them when it saves or
finishes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pyrsistent import PMap

from prodigy_core import step_foreach
from prodigy_core.context import RunContext
from prodigy_core.effects import Effect, Print
from prodigy_core.interpolate import Var
from prodigy_core.json_values import JSON

if TYPE_CHECKING:
    from prodigy_core.run_machine import RunState

CHECKPOINT_VERSION = 1


def needs_worktree(ctx: RunContext) -> bool:
    return ctx.worktree is not None and not ctx.dry_run


def summary(state: RunState, exit_code: int) -> dict[str, JSON]:
    status = {"completed": "completed", "failed": "failed", "interrupted": "interrupted"}.get(
        state.status, "failed")
    return {
        "status": status,
        "exit_code": exit_code,
        "session_id": state.ctx.session_id,
        "job_id": None,
        "workflow": state.ctx.workflow_path,
        "worktree": worktree_json(state.ctx),
        "merge": merge_json(state),
        "steps": {"total": max(len(state.workflow.steps), sum(state.counts.values())),
                  "succeeded": state.counts["succeeded"], "failed": state.counts["failed"],
                  "skipped": state.counts["skipped"]},
        "items": None,
        "cost_usd": round(state.stepper.usage.total_cost_usd, 6),
        "duration_ms": int(elapsed(state) * 1000),
        "error": state.error,
        "error_code": state.error_code,
        "goal": _goal_json(state),
    }


def elapsed(state: RunState) -> float:
    """The run's duration: the span of its timed events (sleeps and waits included), at
    least the sum of its steps' durations."""
    span = state.last_mono - state.first_mono if state.first_mono is not None else 0.0
    return max(state.total_duration, span)


def _goal_json(state: RunState) -> JSON:
    """The latest ``goal_seek`` step's verdict (an extension of spec 08 §2.1.4)."""
    found = {name: state.stepper.vars.get(f"goal_seek.{name}")
             for name in ("status", "score", "attempts")}
    if found["status"] is None:
        return None
    return {name: var.value if var is not None else None for name, var in found.items()}


def worktree_json(ctx: RunContext) -> dict[str, JSON] | None:
    wt = ctx.worktree
    if wt is None:
        return None
    return {"name": wt.name, "path": wt.path, "branch": wt.branch,
            "original_branch": wt.original_branch, "base_commit": wt.base_commit,
            "named": wt.named, "subdir": wt.subdir}


def merge_json(state: RunState) -> dict[str, JSON]:
    if state.ctx.worktree is None:
        return {"target": None, "merged": False, "reason": "no_worktree"}
    if state.merge_outcome is not None:
        return state.merge_outcome.to_json()
    # not merged because the run did not complete (or is a dry run): no merge reason
    return {"target": None, "merged": False, "reason": None}


def _tokens(n: int) -> str:
    if n >= 1_000_000:
        return f"{n / 1_000_000:.1f}M"
    if n >= 1000:
        return f"{n // 1000}k"
    return str(n)


def summary_prints(state: RunState) -> list[Effect]:
    """The end-of-run summary of spec 14 §5 (info level: hidden by -q)."""
    secs = int(elapsed(state))
    lines = ["Summary", f"  Duration: {secs // 60}m {secs % 60}s",
             f"  Steps: {state.counts['succeeded']} succeeded, {state.counts['skipped']} "
             f"skipped, {state.counts['failed']} failed"]
    usage = state.stepper.usage
    if usage.claude_calls:
        cached = usage.cache_read_input_tokens
        total_in = usage.input_tokens + cached + usage.cache_creation_input_tokens
        hit = f", cache hit {round(100 * cached / total_in)}%" if total_in else ""
        lines.append(f"  Claude: {usage.claude_calls} calls, {usage.num_turns} turns, "
                     f"${usage.total_cost_usd:.2f} (input {_tokens(usage.input_tokens)}, "
                     f"output {_tokens(usage.output_tokens)} tokens{hit})")
        if usage.tool_uses:
            top = sorted(usage.tool_uses.items(), key=lambda kv: (-kv[1], kv[0]))
            errors = sum(usage.tool_errors.values())
            tools = ", ".join(f"{name} {count}" for name, count in top[:5])
            lines.append(f"  Tools: {tools}" + (f" ({errors} errors)" if errors else ""))
    return [Print(text="\n".join(lines))]


def transcript_of(assigned: PMap[str, Var]) -> str | None:
    var = assigned.get("claude.json_log_location")
    return var.value if var is not None and isinstance(var.value, str) else None


def checkpoint_doc(state: RunState, status: str) -> dict[str, JSON]:
    """The standard checkpoint (spec 09 §4.2) as JSON-ready data."""
    ctx = state.ctx
    variables = state.stepper.vars
    return {
        "workflow_id": ctx.session_id,
        "version": CHECKPOINT_VERSION,
        "workflow_name": state.workflow.name,
        "workflow_path": ctx.workflow_path,
        "workflow_hash": ctx.workflow_hash,
        "total_steps": len(state.workflow.steps),
        "execution_state": {
            "current_step_index": state.step_index,
            "total_steps": len(state.workflow.steps),
            "status": status,
            "start_time": ctx.started_at,
            "current_iteration": state.iteration,
            "total_iterations": ctx.max_iterations,
            "iteration_start_head": state.head_at_iteration_start,
        },
        "completed_steps": [r.checkpoint_json() for r in state.records],
        "variable_state": {k: v.value for k, v in sorted(variables.items())},
        "variable_meta": {"untrusted": [k for k, v in sorted(variables.items())
                                        if not v.trusted]},
        "mapreduce_state": None,
        "session_id": ctx.session_id,
        "inputs": {"args": list(ctx.args),
                   "map_patterns": [i.file_path for i in ctx.inputs if i.file_path],
                   "current_input_index": state.input_index,
                   "failed_inputs": list(state.failed_inputs),
                   "failed_at": [list(p) for p in state.failed_at],
                   "retry_queue": [list(p) for p in state.retry_queue],
                   "retrying": state.retrying,
                   "fail_fast": ctx.fail_fast},
        "profile": ctx.profile,
        "parameters": {},
        "foreach_state": _foreach_state(state),
        "nested_state": {},
        "analytics": state.stepper.usage.to_json(),
        "error": state.error,
        "error_code": state.error_code,
    }


def _foreach_state(state: RunState) -> JSON:
    """The items of a running top-level ``foreach`` step that finished (spec 09 §4.2)."""
    done = step_foreach.progress(state.stepper)
    if done is None:
        return None
    return {"step_index": state.step_index, "iteration": state.iteration,
            "input_index": state.input_index,
            "completed_items": [i for i, ok, _, _ in done if ok],
            "failed_items": [i for i, ok, _, _ in done if not ok],
            "errors": {str(i): err for i, ok, err, _ in done if not ok},
            "item_keys": {str(i): key for i, _, _, key in done}}


def session_doc(state: RunState) -> dict[str, JSON]:
    ctx = state.ctx
    status = {"running": "Running", "completed": "Completed", "failed": "Failed",
              "interrupted": "Paused"}[state.status]
    if state.phase == "merge" or (state.status == "completed" and state.merge_outcome is None
                                  and needs_worktree(ctx)):
        status = "Running"  # the merge step is not over yet
    return {
        "id": ctx.session_id,
        "session_type": "Workflow",
        "status": status,
        "started_at": ctx.started_at,
        "completed_at": state.last_time if state.status == "completed" else None,
        "repo_name": ctx.repo_name,
        "repo_path": ctx.repo_root,
        "worktree": worktree_json(ctx),
        "metadata": {"workflow_type": "standard", "total_steps": len(state.workflow.steps),
                     "current_step": state.step_index},
        "timings": {},
        "error": state.error,
        "workflow_data": {
            "workflow_id": ctx.session_id, "workflow_name": state.workflow.name,
            "workflow_path": ctx.workflow_path, "current_step": state.step_index,
            "total_steps": len(state.workflow.steps),
            "completed_steps": [r.step_index for r in state.records],
            "iterations_completed": state.iteration - 1, "files_changed": 0,
            "worktree_name": ctx.worktree.name if ctx.worktree else None,
        },
        "mapreduce_data": None,
        "merge": merge_json(state),
        "analytics": state.stepper.usage.to_json(),
        "dry_run": ctx.dry_run,
    }
