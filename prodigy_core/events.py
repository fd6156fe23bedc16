"""Events: facts the interpreter reports back to the core.

Events are past tense.  They carry everything the core needs from the world —
exit codes, output, timestamps and durations — so that the core never reads a clock
and a recorded run can be replayed exactly.  Frozen, keyword-only attrs classes; the
tag strings in ``EVENT_TAGS`` are stable.
"""

from __future__ import annotations

import attrs

from prodigy_core.reprs import value_class


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class CommandFinished:
    """A ``RunCommand`` ended (exited, was killed by its timeout, or was cancelled).

    Emitted by the command performer; consumed by the step machine.  ``exit_code`` is
    the exit status, ``128 + N`` for a signal N, ``-1`` for a timeout.  ``started_at`` and
    ``finished_at`` are RFC 3339 UTC strings; ``duration`` is in seconds; ``monotonic``
    is the environment clock reading at the end (for retry budgets).
    """

    command_id: int
    exit_code: int
    stdout: str = ""
    stderr: str = ""
    timed_out: bool = False
    cancelled: bool = False
    duration: float = 0.0
    started_at: str = ""
    finished_at: str = ""
    monotonic: float = 0.0
    truncated: bool = False
    planned: bool = False
    # stopped above its memory limit (``RunCommand.memory_limit_mb``): what was seen
    exhausted: str = ""


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class CommandNotStarted:
    """A ``RunCommand`` could not be started (missing working directory, no ``sh``…).

    Emitted by the command performer; consumed by the step machine.  ``reason`` is
    ``cwd_missing`` or ``spawn_failed``.
    """

    command_id: int
    reason: str
    message: str
    finished_at: str = ""
    monotonic: float = 0.0


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class FileWritten:
    """A ``WriteFile`` succeeded; ``size`` bytes were written to ``path``."""

    command_id: int
    path: str
    size: int
    finished_at: str = ""
    monotonic: float = 0.0
    planned: bool = False


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class FileWriteFailed:
    """A ``WriteFile`` failed (bad format, missing parent, I/O error)."""

    command_id: int
    message: str
    finished_at: str = ""
    monotonic: float = 0.0


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class FileRead:
    """Answer to ``ReadFile``: the file's text, or None when it could not be read.

    Emitted by the file performer; consumed by the step machine.  ``planned`` in a dry
    run (nothing was read).  ``monotonic`` is the clock reading at the end.
    """

    command_id: int
    content: str | None
    message: str = ""
    monotonic: float = 0.0
    planned: bool = False


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class GitHeadRead:
    """Answer to ``ReadGitHead``: the commit sha, or None outside a repository."""

    command_id: int
    sha: str | None
    planned: bool = False


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class ChangesCommitted:
    """Answer to ``CommitChanges``: the new commit and the paths it contains.

    ``sha`` is None when nothing (after ``include``/``exclude``) was left to commit.
    ``planned`` in a dry run (nothing was committed).
    """

    command_id: int
    sha: str | None
    files: tuple[str, ...] = ()
    planned: bool = False


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class CommitsListed:
    """Answer to ``ListCommits``.

    ``head`` is the current ``HEAD``; ``commits`` are ``(sha, message)`` of the new
    commits, oldest first; the file lists are repository-relative, sorted, without
    duplicates (renames count as deletion plus addition).  ``insertions`` and
    ``deletions`` are line totals over tracked files between ``since`` and the working
    tree (binary files count 0; spec 03 §7.3).  ``planned`` in a dry run.
    """

    command_id: int
    head: str | None
    commits: tuple[tuple[str, str], ...] = ()
    files_added: tuple[str, ...] = ()
    files_modified: tuple[str, ...] = ()
    files_deleted: tuple[str, ...] = ()
    insertions: int = 0
    deletions: int = 0
    planned: bool = False


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class CommitsSquashed:
    """Answer to ``SquashCommits``: the sha of the single replacing commit."""

    command_id: int
    sha: str | None
    planned: bool = False


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class GitFailed:
    """A git effect (``CommitChanges``, ``ListCommits``, ``SquashCommits``) failed.

    ``operation`` is the effect's tag; ``message`` git's error output.
    """

    command_id: int
    operation: str
    message: str


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class Slept:
    """A ``Sleep`` ended.  ``monotonic`` is the clock reading at the end."""

    command_id: int
    monotonic: float = 0.0


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class CancelRequested:
    """The user asked Prodigy to stop (SIGINT or SIGTERM).

    Emitted by the interpreter's signal handler; consumed by the run machine.
    """

    signal: str
    at: str = ""


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class ClaudeLine:
    """One stdout line of a running Claude call, as it arrived.

    Emitted by the Claude performer while the call runs (any number, in order, all
    before the call's ``ClaudeFinished``); consumed by the step machine, which folds it
    into the call's summary.  It does not complete the call.
    """

    command_id: int
    line: str


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class ClaudeFinished:
    """A ``RunClaude`` ended.

    Emitted by the Claude performer; consumed by the step machine.  ``exit_code`` as for
    commands; ``idle`` is true when the idle watchdog stopped the call; ``not_started``
    says why the CLI could not be started; ``transcript`` is the transcript's path.
    """

    command_id: int
    exit_code: int
    stderr: str = ""
    timed_out: bool = False
    idle: bool = False
    cancelled: bool = False
    not_started: str | None = None
    transcript: str = ""
    duration: float = 0.0
    started_at: str = ""
    finished_at: str = ""
    monotonic: float = 0.0
    planned: bool = False
    exhausted: str = ""  # as for ``CommandFinished``


from prodigy_core.job_ops import (  # noqa: E402  (members of the union)
    AgentReleased,
    WorkItemsFailed,
    WorkItemsLoaded,
    WorktreeMeasured,
)
from prodigy_core.worktree_ops import (  # noqa: E402  (members of the union)
    BranchMerged,
    MergeConcluded,
    MergeConflicted,
    MergeFailed,
    MergeInspected,
    MergeVerified,
    UserAnswered,
    WorktreeCreated,
    WorktreeFailed,
    WorktreeRemoved,
)

Event = (
    CommandFinished
    | ClaudeLine
    | ClaudeFinished
    | CommandNotStarted
    | FileWritten
    | FileWriteFailed
    | FileRead
    | GitHeadRead
    | ChangesCommitted
    | CommitsListed
    | CommitsSquashed
    | GitFailed
    | Slept
    | CancelRequested
    | WorktreeCreated
    | WorktreeFailed
    | MergeInspected
    | UserAnswered
    | BranchMerged
    | MergeConflicted
    | MergeFailed
    | MergeConcluded
    | MergeVerified
    | WorktreeRemoved
    | WorkItemsLoaded
    | WorkItemsFailed
    | AgentReleased
    | WorktreeMeasured
)

EVENT_TAGS: dict[type, str] = {
    CommandFinished: "command_finished",
    ClaudeLine: "claude_line",
    ClaudeFinished: "claude_finished",
    CommandNotStarted: "command_not_started",
    FileWritten: "file_written",
    FileWriteFailed: "file_write_failed",
    FileRead: "file_read",
    GitHeadRead: "git_head_read",
    ChangesCommitted: "changes_committed",
    CommitsListed: "commits_listed",
    CommitsSquashed: "commits_squashed",
    GitFailed: "git_failed",
    Slept: "slept",
    CancelRequested: "cancel_requested",
    WorktreeCreated: "worktree_created",
    WorktreeFailed: "worktree_failed",
    MergeInspected: "merge_inspected",
    UserAnswered: "user_answered",
    BranchMerged: "branch_merged",
    MergeConflicted: "merge_conflicted",
    MergeFailed: "merge_failed",
    MergeConcluded: "merge_concluded",
    MergeVerified: "merge_verified",
    WorktreeRemoved: "worktree_removed",
    WorkItemsLoaded: "work_items_loaded",
    WorkItemsFailed: "work_items_failed",
    AgentReleased: "agent_released",
    WorktreeMeasured: "worktree_measured",
}
