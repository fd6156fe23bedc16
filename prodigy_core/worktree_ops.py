"""Effects and events of session worktrees and merges (spec 06 §3, §4, §7).

These classes are members of the ``Effect`` union (``prodigy_core.effects``) and the
``Event`` union (``prodigy_core.events``); they live here to keep those modules small.
Every effect is emitted by the run machine (``prodigy_core.run_machine``) or the merge
machine (``prodigy_core.merge_machine``) and performed *spawned* by the environment's
``Git`` (production: ``prodigy_effects.worktrees``), except ``AskUser`` (the console),
``SaveWorktreeMeta`` (the store, inline, in order) and ``RemovePool`` (inline, in
order).  The job machine emits ``CreateWorktree`` for agents and ``RemovePool``.  Every
git operation that changes shared repository state (worktrees, branches, the merge into
the user's branch) is performed while holding the per-repository lock at ``lock_path``.
"""

from __future__ import annotations

from typing import Literal

import attrs

from prodigy_core.json_values import JSON
from prodigy_core.reprs import value_class

# ---------------------------------------------------------------------------- effects


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class CreateWorktree:
    """Create (or reuse, or find again) the session worktree.

    ``mode``: ``create`` runs ``git worktree add -b <branch> <path> <base_commit>`` in
    ``repo_root``; ``reuse`` (a named worktree) uses ``path`` as it is when it exists and
    creates it otherwise; ``resume`` uses ``path`` when it exists, recreates it from
    ``branch`` when only the branch is left, and fails with E4006 when both are gone;
    ``agent`` (MapReduce, spec 06 §5.1) creates ``branch`` at the ``HEAD`` of
    ``repo_root`` — the session worktree — replacing a stale one of an interrupted
    attempt; ``head`` of the answer is that base commit.
    ``pool`` (``allocation_strategy: pooled``, spec 06 §9.2) recycles the pool worktree at
    ``path`` when it is one — ``git checkout --detach``, ``git reset --hard``,
    ``git clean -fd`` (``-fdx`` with ``clean_ignored``), then ``git checkout -b <branch>``
    at the ``HEAD`` of ``repo_root`` — and answers ``created`` false; otherwise (absent,
    broken, or ``fresh``: idle too long) it removes what is there and creates it as
    ``agent`` does.  A stale ``branch`` of an interrupted attempt is replaced, also when
    another pool worktree still has it checked out (that one is detached first).
    ``shared_pool`` (``reuse``) takes a worktree of the repository's pool in the
    directory ``path``: first removing unlocked ones idle longer than
    ``idle_timeout_secs`` or older than ``max_age_secs`` (0: no limit), then locking the
    first free one (a lock file ``<name>.lock`` next to it naming this process; one whose
    process is gone is free) and recycling it as ``pool`` does, or creating and locking a
    new ``pool-<n>``; the answer's ``path`` is the worktree taken and ``lock_file`` its lock.
    ``user_dir`` is the user's checkout, inspected for uncommitted changes (W4001).
    Completes with ``WorktreeCreated`` or ``WorktreeFailed``.
    """

    command_id: int
    repo_root: str
    path: str
    branch: str
    base_commit: str
    mode: Literal["create", "reuse", "resume", "agent", "pool", "shared_pool"] = "create"
    user_dir: str = ""
    lock_path: str = ""
    clean_ignored: bool = False
    fresh: bool = False
    idle_timeout_secs: float = 0.0
    max_age_secs: float = 0.0
    owner: str = ""


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class InspectMerge:
    """Gather what the final merge needs to decide (read-only git).

    Finds the merge target (spec 06 §4.3: ``original_branch`` if it still exists, else
    the default branch), counts the commits of ``branch`` not on it, lists uncommitted
    changes in ``worktree_path`` (§7.2) and, with ``details``, the commits and modified
    files of §7.7.  Completes with ``MergeInspected`` (``target`` None when there is
    none) or ``MergeFailed``.
    """

    command_id: int
    repo_root: str
    worktree_path: str
    branch: str
    original_branch: str | None
    details: bool = False


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class AskUser:
    """Ask the user a yes/no question on the terminal (the merge prompt, spec 06 §7.4).

    Performed *spawned* by the console: when standard input and output are terminals,
    print ``question`` and read one line; completes with ``UserAnswered`` (``answer``
    None at end of input; ``terminal`` false when there is no terminal to ask on).
    """

    command_id: int
    question: str


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class MergeBranch:
    """Merge ``source`` into ``target`` with ``git merge --no-ff -m <message>``.

    For the final merge (``into_worktree`` None) the merge runs in the working tree
    where ``target`` is checked out (refused with E4005 when it is in the middle of a
    merge, rebase, cherry-pick or bisect), or in a temporary worktree at ``temp_path``
    when the target is checked out nowhere.  With ``into_worktree`` (agent merges) it runs
    there.  An unexpected merge in progress is aborted first (W4003).  Nothing is ever
    stashed, reset or discarded.  On conflict the merge is aborted unless ``keep_conflict``
    (Claude resolution follows).  Completes with ``BranchMerged``, ``MergeConflicted`` or
    ``MergeFailed``.
    """

    command_id: int
    repo_root: str
    source: str
    target: str
    message: str
    temp_path: str = ""
    into_worktree: str | None = None
    keep_conflict: bool = False
    lock_path: str = ""


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class ConcludeMerge:
    """Accept or roll back a conflicted merge after a resolution attempt (spec 06 §6.3).

    ``accept``: stage the formerly conflicting files and ``git commit --no-edit`` while
    ``MERGE_HEAD`` exists; accepted only when no unmerged path and no conflict marker is
    left, ``HEAD``'s first parent is ``pre`` and ``source`` is an ancestor.  A rejected
    resolution is rolled back.  ``rollback``: ``git merge --abort`` while a merge is in
    progress, else ``git reset --keep <pre>``.  A temporary merge worktree is removed
    afterwards.  Completes with ``MergeConcluded``.
    """

    command_id: int
    merge_dir: str
    repo_root: str
    source: str
    pre: str
    conflicting: tuple[str, ...] = ()
    action: Literal["accept", "rollback"] = "accept"
    temp_path: str = ""
    lock_path: str = ""


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class VerifyMerged:
    """Is ``source`` an ancestor of ``target`` (``git merge-base --is-ancestor``)?

    Completes with ``MergeVerified``.
    """

    command_id: int
    repo_root: str
    source: str
    target: str


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class RemoveWorktree:
    """Remove a worktree and its branch (``git worktree remove``; ``git branch -d``).

    Never forced (spec 06 §8.3): the branch is deleted only when it is merged into
    ``target`` (``git branch -d`` where ``target`` is checked out, else a verified
    ``git update-ref -d``).  ``git worktree prune`` follows.  A failure is a warning
    (W4005), never a failure of the run.  Completes with ``WorktreeRemoved``.
    """

    command_id: int
    repo_root: str
    path: str
    branch: str
    target: str | None = None
    lock_path: str = ""


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class RemovePool:
    """Remove the job's worktree pool (``pooled`` with ``cleanup_on_complete``, spec 06 §9).

    Emitted by the job machine when the job ends (completed, failed or interrupted).
    Performed *inline, in order* by the environment's ``Git``: every ``pool-<n>``
    directory in ``directory`` — also ones a crashed earlier process left — is removed
    with ``git worktree remove --force`` (pool worktrees are the job's alone; their
    agents' branches were detached when released), then ``git worktree prune``, under the
    per-repository lock.  A failure is a warning (W4005) printed by the interpreter;
    nothing is reported back.
    """

    repo_root: str
    directory: str
    lock_path: str = ""


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class SaveWorktreeMeta:
    """Write the worktree's metadata document (spec 09 §4.6) atomically.

    Performed inline, in order, by the store (under ``worktrees/<repo>/.metadata/``),
    which sets ``updated_at`` to the time of writing, keeps ``created_at`` of an existing
    document, and sets ``merged_at`` to that time when ``merged`` is true and it is unset.
    """

    doc: dict[str, JSON]


# ----------------------------------------------------------------------------- events


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class WorktreeCreated:
    """Answer to ``CreateWorktree``.

    ``head`` is the worktree's ``HEAD``; ``created`` false when an existing worktree was
    used (or a pool worktree recycled); ``recreated`` true when a resume rebuilt it from
    its branch; ``dirty`` lists uncommitted paths of the user's checkout (W4001);
    ``lock_file`` is the lock taken on a repository pool worktree (``shared_pool``).
    ``planned`` in a dry run.
    """

    command_id: int
    path: str
    branch: str
    head: str | None = None
    created: bool = True
    recreated: bool = False
    dirty: tuple[str, ...] = ()
    planned: bool = False
    lock_file: str = ""
    # the environment clock when it was made (pool ages, spec 06 §9.1)
    monotonic: float = 0.0


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class WorktreeFailed:
    """The worktree could not be created or found (``code`` E4001–E4006)."""

    command_id: int
    code: str
    message: str


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class MergeInspected:
    """Answer to ``InspectMerge`` (see there).

    ``target_warning`` is W4002's text when the original branch is gone;
    ``commits``/``modified_files`` are the JSON lists of spec 06 §7.7 (capped at 100 and
    500), ``commit_count``/``file_count`` the uncapped counts.
    """

    command_id: int
    target: str | None
    ahead: int = 0
    target_warning: str | None = None
    uncommitted: tuple[str, ...] = ()
    commits: tuple[JSON, ...] = ()
    commit_count: int = 0
    modified_files: tuple[JSON, ...] = ()
    file_count: int = 0
    details_failed: str | None = None
    planned: bool = False


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class UserAnswered:
    """Answer to ``AskUser``: the line read (None at end of input), or no terminal."""

    command_id: int
    answer: str | None
    terminal: bool = True


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class BranchMerged:
    """``MergeBranch`` succeeded and was verified: ``sha`` is the merge commit."""

    command_id: int
    sha: str
    merge_dir: str
    warnings: tuple[str, ...] = ()


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class MergeConflicted:
    """``MergeBranch`` stopped with conflicts in ``paths``.

    ``aborted`` true when the merge was already aborted (``pre`` restored); otherwise the
    conflicted merge is left in ``merge_dir`` for a resolution and ``ConcludeMerge``.
    """

    command_id: int
    paths: tuple[str, ...]
    merge_dir: str
    pre: str
    aborted: bool = True
    warnings: tuple[str, ...] = ()


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class MergeFailed:
    """A merge could not be done; nothing was changed (``code`` E4005/E4007, git's message)."""

    command_id: int
    code: str
    message: str
    reason: str = "refused"


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class MergeConcluded:
    """Answer to ``ConcludeMerge``: ``accepted`` with the merge commit, or why not."""

    command_id: int
    accepted: bool
    sha: str | None = None
    reason: str = ""


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class MergeVerified:
    """Answer to ``VerifyMerged``."""

    command_id: int
    merged: bool


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class WorktreeRemoved:
    """Answer to ``RemoveWorktree``; ``warning`` (W4005) when something was left."""

    command_id: int
    warning: str | None = None
