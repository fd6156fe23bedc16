"""The ``merge_conflicts`` settings (spec 06 §6.2) and the steps of a Claude resolution.

Shared by the two places a conflicted merge can be resolved by Claude (spec 06 §6.3):
the final merge (``prodigy_core.merge_machine``) and the agent merges of a MapReduce job
(``prodigy_core.agent_merges``, which runs the merge machine's resolution phases on the
session worktree).  The workflow keeps the block as frozen pairs in ``Workflow.extra``;
the parser has already checked its keys and turned ``timeout`` into seconds.
"""

from __future__ import annotations

from collections.abc import Mapping

from prodigy_core.model import Step, Workflow

DEFAULT_RESOLVE_PROMPT = (
    "The git merge of branch ${merge.source_branch} into ${merge.target_branch} stopped "
    "with conflicts in: ${merge.conflicting_files}. Resolve every conflict, keeping the "
    "intent of both sides. Stage the resolved files and finish the merge with "
    "`git commit --no-edit`. Do not abort the merge, reset, rebase or switch branches.")

DEFAULT_TIMEOUT = 900.0  # 15m (spec 06 §6.2)


def settings(workflow: Workflow) -> Mapping[str, object]:
    """The ``merge_conflicts`` block as a plain mapping (empty when absent)."""
    for key, value in workflow.extra:
        if key == "merge_conflicts" and isinstance(value, tuple):
            return {str(k): v for k, v in value}
    return {}


def strategy(workflow: Workflow) -> str:
    """``abort`` (the default) or ``claude``."""
    return str(settings(workflow).get("strategy", "abort"))


def verify_command(workflow: Workflow) -> str | None:
    """The ``verify`` shell command, when set."""
    verify = settings(workflow).get("verify")
    return verify if isinstance(verify, str) and verify else None


def resolve_step(workflow: Workflow) -> Step:
    """The resolving Claude call (its prompt is interpolated with the ``merge.*``
    variables by the step machine)."""
    found = settings(workflow)
    prompt = str(found.get("claude") or DEFAULT_RESOLVE_PROMPT)
    timeout = found.get("timeout")
    return Step(kind="claude", command=prompt, name="resolve merge conflicts",
                timeout=float(timeout) if isinstance(timeout, int | float) else DEFAULT_TIMEOUT,
                source="$.merge_conflicts.claude")


def verify_step(command: str) -> Step:
    return Step(kind="shell", command=command, name="verify merge resolution",
                source="$.merge_conflicts.verify")
