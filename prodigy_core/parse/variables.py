"""Checks of interpolated text: E1012, W1003 (spec 03 §1) and W1004 (spec 03 §6)."""

from __future__ import annotations

import re

from prodigy_core.interpolate import check_template, references
from prodigy_core.parse.context import Ctx, Phase

ITEM_NAMES = frozenset(
    {"item", "item_json", "item_id", "item_index", "item_total", "item_file", "agent_id"}
)
MAP_NAMES = frozenset(
    {
        "total",
        "successful",
        "failed",
        "success_rate",
        "results",
        "results_json",
        "results_file",
        "duration",
        "cost_usd",
    }
)
MERGE_NAMES = frozenset(
    {
        "worktree",
        "worktree_path",
        "repo_path",
        "source_branch",
        "target_branch",
        "session_id",
        "commits",
        "commit_count",
        "commit_ids",
        "modified_files",
        "file_count",
        "file_list",
        "conflicting_files",
    }
)
_SEGMENT = re.compile(r"[A-Za-z0-9_\-]+")


def check_text(ctx: Ctx, text: str, path: str, phase: Phase | None) -> None:
    """Report malformed interpolation in ``text`` and, given a phase, W1004 references."""
    for problem in check_template(text):
        line, column = ctx.locate(path, text, problem.offset)
        if problem.code.startswith("E"):
            ctx.error(problem.code, problem.message, path, at=(line, column))
        else:
            ctx.warning(problem.code, problem.message, path, at=(line, column))
    if phase is None:
        return
    for ref in references(text):
        if not ref.braced:
            continue  # unbraced $NAME is usually shell syntax (spec 03 §3.2)
        reason = foreign_reason(ref.path, phase)
        if reason is None:
            continue
        at = ctx.locate(path, text, ref.start)
        message = f"variable '{ref.path}' cannot exist in {_phase_text(phase)}: {reason}"
        if ctx.strict_variables:
            ctx.problem("error", "W1004", message, path, at=at)
        else:
            ctx.problem("warning", "W1004", message, path, at=at)


def foreign_reason(ref_path: str, phase: Phase) -> str | None:
    """Why ``ref_path`` clearly belongs to another phase, or ``None`` if it may exist here."""
    segments = _SEGMENT.findall(ref_path)
    if not segments:
        return None
    root = segments[0]
    second = segments[1] if len(segments) > 1 else None
    if root in ITEM_NAMES and phase != "agent":
        return "item variables exist only in map agents (agent_template)"
    if root == "map" and second in MAP_NAMES and phase != "reduce":
        return "map.* variables exist only in the reduce phase"
    if root == "merge" and second in MERGE_NAMES and phase != "merge":
        return "merge.* variables exist only in a merge workflow"
    if root == "job" and second == "id" and phase == "workflow":
        return "job.id exists only in MapReduce workflows"
    return None


def _phase_text(phase: Phase) -> str:
    return {
        "workflow": "a standard workflow",
        "setup": "the setup phase",
        "agent": "the agent template",
        "reduce": "the reduce phase",
        "merge": "a merge workflow",
    }[phase]
