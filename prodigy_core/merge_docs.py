"""What a merge shows the world: the worktree metadata document and the ``merge.*``
variables.

``meta_doc`` is the document of spec 09 §4.6, written by the run, the job and the merge
machine whenever a session worktree changes status.  ``merge_variables`` are the
variables of spec 06 §7.7 that custom merge workflows and conflict resolutions see
(``prodigy_core.merge_machine`` supplies the machine's view of them).
"""

from __future__ import annotations

from prodigy_core.context import RunContext
from prodigy_core.interpolate import Var
from prodigy_core.json_values import JSON, dumps_compact
from prodigy_core.problems import InvalidTransition
from prodigy_core.worktree_ops import MergeInspected


def meta_doc(ctx: RunContext, status: str, *, merged: bool = False,
             merged_at: str | None = None, error: str | None = None,
             prompt_shown: bool = False, prompt_response: str | None = None,
             interruption: str | None = None, iterations: int = 0,
             head: str | None = None) -> dict[str, JSON]:
    """The worktree metadata document (spec 09 §4.6); ``updated_at`` is set by the store."""
    wt = ctx.worktree
    if wt is None:
        raise InvalidTransition("worktree metadata without a worktree")
    return {
        "session_id": ctx.session_id, "worktree_name": wt.name, "branch": wt.branch,
        "original_branch": wt.original_branch, "created_at": ctx.started_at,
        "updated_at": ctx.started_at, "status": status,
        "iterations": {"completed": iterations, "max": ctx.max_iterations},
        "stats": {"files_changed": 0, "commits": 0, "last_commit_sha": head},
        "merged": merged, "merged_at": merged_at, "error": error,
        "merge_prompt_shown": prompt_shown, "merge_prompt_response": prompt_response,
        "interrupted_at": None, "interruption_type": interruption,
        "resumable": status in ("in_progress", "failed", "interrupted"),
        "path": wt.path, "repo_path": ctx.repo_root, "workflow_path": ctx.workflow_path,
        "kind": "named" if wt.named else "session", "job_id": None,
        "base_commit": wt.base_commit,
    }


def merge_variables(ctx: RunContext, info: MergeInspected | None, *, source: str,
                    target: str | None, conflicting: tuple[str, ...] = ()) -> dict[str, Var]:
    """The ``merge.*`` variables of spec 06 §7.7 for merging ``source`` into ``target``
    from the session worktree of ``ctx`` (``info``: what ``InspectMerge`` found)."""
    wt = ctx.worktree
    if wt is None:
        raise InvalidTransition("merge variables without a worktree")
    commits = list(info.commits) if info is not None else []
    files = list(info.modified_files) if info is not None else []
    out: dict[str, Var] = {
        "merge.worktree": Var(value=wt.name),
        "merge.worktree_path": Var(value=wt.path),
        "merge.repo_path": Var(value=ctx.repo_root),
        "merge.source_branch": Var(value=source),
        "merge.target_branch": Var(value=target or "", trusted=False),
        "merge.session_id": Var(value=ctx.session_id),
        "merge.commits": Var(value=dumps_compact(commits), trusted=False),
        "merge.commit_count": Var(value=info.commit_count if info is not None else 0),
        "merge.commit_ids": Var(value=", ".join(
            str(c.get("short_id", "")) for c in commits if isinstance(c, dict)),
            trusted=False),
        "merge.modified_files": Var(value=dumps_compact(files), trusted=False),
        "merge.file_count": Var(value=info.file_count if info is not None else 0),
        "merge.file_list": Var(value=", ".join(
            str(f.get("path", "")) for f in files if isinstance(f, dict)), trusted=False),
    }
    if conflicting:
        out["merge.conflicting_files"] = Var(value=list(conflicting), trusted=False,
                                             git_list=True)
    return out
