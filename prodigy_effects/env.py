"""The environment an interpreter performs effects against: a bundle of narrow protocols.

Production implementations live in ``prodigy_effects.production``; ``FakeEnv``
(``prodigy_effects.fake``) and the dry-run environment (``prodigy_effects.dryrun``)
implement the same protocols.  The interpreter only ever talks to these.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import attrs
import trio

from prodigy_core.effects import (
    CommitChanges,
    ListCommits,
    Print,
    ReadFile,
    RunClaude,
    RunCommand,
    SquashCommits,
    WriteFile,
)
from prodigy_core.events import (
    ChangesCommitted,
    ClaudeFinished,
    CommandFinished,
    CommandNotStarted,
    CommitsListed,
    CommitsSquashed,
    FileRead,
    FileWriteFailed,
    FileWritten,
    GitFailed,
)
from prodigy_core.job_ops import (
    AgentReleased,
    FinishAgent,
    LoadWorkItems,
    MeasureWorktree,
    RecordDLQ,
    WorkItemsFailed,
    WorkItemsLoaded,
    WorktreeMeasured,
)
from prodigy_core.reprs import value_class
from prodigy_core.worktree_ops import (
    AskUser,
    BranchMerged,
    ConcludeMerge,
    CreateWorktree,
    InspectMerge,
    MergeBranch,
    MergeConcluded,
    MergeConflicted,
    MergeFailed,
    MergeInspected,
    MergeVerified,
    RemovePool,
    RemoveWorktree,
    UserAnswered,
    VerifyMerged,
    WorktreeCreated,
    WorktreeFailed,
    WorktreeRemoved,
)

OutputSink = Callable[[str, str], None]
"""Receives ``(stream, line)`` for live output ("stdout"/"stderr")."""


class CommandRunner(Protocol):
    async def run(
        self, effect: RunCommand, cancel: trio.Event, on_output: OutputSink
    ) -> CommandFinished | CommandNotStarted: ...

    def hurry(self) -> None:
        """A second interrupt: skip the grace period of cancelled commands."""


class FileWriter(Protocol):
    """Files the core asks for: ``write`` performs ``WriteFile``, ``read`` ``ReadFile``."""

    async def write(self, effect: WriteFile) -> FileWritten | FileWriteFailed: ...

    async def read(self, effect: ReadFile) -> FileRead: ...


class Git(Protocol):
    """Git as the core needs it: read ``HEAD``, commit, list and squash a step's commits.

    Each method answers its effect with the completion event (see the effect's
    docstring); a failing git command is a ``GitFailed`` answer, never an exception.
    """

    async def head(self, cwd: str) -> str | None: ...

    async def commit_changes(self, effect: CommitChanges) -> ChangesCommitted | GitFailed: ...

    async def list_commits(self, effect: ListCommits) -> CommitsListed | GitFailed: ...

    async def squash_commits(self, effect: SquashCommits) -> CommitsSquashed | GitFailed: ...


LineSink = Callable[[str], None]
"""Receives each stdout line of a running Claude call as it arrives."""


class ClaudeRunner(Protocol):
    """Runs ``RunClaude``: streams lines to ``on_line``, answers with ``ClaudeFinished``."""

    async def run(
        self, effect: RunClaude, cancel: trio.Event, on_line: LineSink
    ) -> ClaudeFinished: ...

    def hurry(self) -> None:
        """A second interrupt: skip the grace period of cancelled calls."""


class Clock(Protocol):
    def now_iso(self) -> str: ...

    def monotonic(self) -> float: ...

    async def sleep(self, seconds: float, cancel: trio.Event) -> None: ...


class Store(Protocol):
    def save_checkpoint(self, doc: dict[str, Any]) -> None: ...

    def save_session(self, doc: dict[str, Any]) -> None: ...


class Journal(Protocol):
    def append(self, event: dict[str, Any]) -> int: ...

    def sync(self) -> None: ...

    @property
    def last_seq(self) -> int: ...


class Console(Protocol):
    def show(self, effect: Print) -> None: ...

    def output_line(self, display: str, stream: str, line: str) -> None: ...

    def describe(self, info: Any) -> None: ...

    def plan_command(self, effect: RunCommand | WriteFile) -> None: ...


class SecretRegistry(Protocol):
    """Values to mask from now on (``RegisterSecret``; ``prodigy_effects.masker.Masker``)."""

    def add(self, value: str) -> None: ...


class Worktrees(Protocol):
    """Session worktrees and merges (``prodigy_core.worktree_ops``; spec 06)."""

    async def create(self, effect: CreateWorktree) -> WorktreeCreated | WorktreeFailed: ...

    async def inspect(self, effect: InspectMerge) -> MergeInspected | MergeFailed: ...

    async def merge(self, effect: MergeBranch
                    ) -> BranchMerged | MergeConflicted | MergeFailed: ...

    async def conclude(self, effect: ConcludeMerge) -> MergeConcluded: ...

    async def verify(self, effect: VerifyMerged) -> MergeVerified: ...

    async def remove(self, effect: RemoveWorktree) -> WorktreeRemoved: ...

    def save_meta(self, doc: dict[str, Any]) -> None: ...

    async def finish_agent(self, effect: FinishAgent) -> AgentReleased: ...

    async def measure(self, effect: MeasureWorktree) -> WorktreeMeasured: ...

    async def remove_pool(self, effect: RemovePool) -> tuple[str, ...]:
        """Remove a job's worktree pool; the warnings (W4005) of what was left."""
        ...


class Jobs(Protocol):
    """A MapReduce job's input and files (``prodigy_core.job_ops``; spec 05, spec 09)."""

    async def load_items(self, effect: LoadWorkItems) -> WorkItemsLoaded | WorkItemsFailed: ...

    def save_state(self, doc: dict[str, Any]) -> None: ...

    def save_file(self, name: str, content: Any, *, durable: bool = True) -> None: ...

    def record_dlq(self, effect: RecordDLQ) -> None: ...

    def forget_dlq(self, item_id: str) -> None: ...


class Prompter(Protocol):
    """Asks the user a question (the merge prompt)."""

    async def ask(self, effect: AskUser, cancel: trio.Event) -> UserAnswered: ...


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class Env:
    """Everything an interpreter needs from the world."""

    commands: CommandRunner
    files: FileWriter
    git: Git
    clock: Clock
    store: Store
    journal: Journal
    console: Console
    claude: ClaudeRunner | None = None
    grace_seconds: float = 5.0
    # None: this environment has no worktrees (worktree effects fail, nothing is asked)
    worktrees: Worktrees | None = None
    prompter: Prompter | None = None
    jobs: Jobs | None = None
    # the live masker of the run (None: nothing is masked, ``RegisterSecret`` is ignored)
    secrets: SecretRegistry | None = None
