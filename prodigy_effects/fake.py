"""``FakeEnv``: a scripted, in-memory environment for tests and for library users.

Nothing here touches the world.  Commands are answered by a script (a callable or a
table from command text to result); files, checkpoints, sessions and journal records
are kept in memory; the clock is trio's (use ``trio.testing.MockClock(autojump_threshold=0)``
to make hour-long timeouts pass in milliseconds).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

import attrs
import trio

from prodigy_core.effects import (
    EFFECT_TAGS,
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
from prodigy_core.globs import select_paths
from prodigy_core.job_ops import MeasureWorktree, WorktreeMeasured
from prodigy_core.reprs import shows_fields, value_class
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
from prodigy_effects.env import Env, OutputSink, Prompter, Worktrees
from prodigy_effects.masker import Masker


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class Scripted:
    """The scripted answer to one command."""

    exit_code: int = 0
    stdout: str = ""
    stderr: str = ""
    duration: float = 0.0
    hang: bool = False


Script = Callable[[RunCommand], Scripted] | Mapping[str, Scripted | list[Scripted]]


def command_text(effect: RunCommand) -> str:
    if effect.script is not None:
        return effect.script
    return effect.argv[-1] if effect.argv else ""


@shows_fields
@attrs.define(repr=False)
class ScriptedRunner:
    """Answers ``RunCommand`` from a script; records every call."""

    script: Script = attrs.field(factory=dict)
    calls: list[RunCommand] = attrs.field(factory=list)
    default: Scripted = Scripted()

    def _answer(self, effect: RunCommand) -> Scripted:
        if callable(self.script):
            return self.script(effect)
        entry = self.script.get(command_text(effect))
        if entry is None:
            return self.default
        if isinstance(entry, list):
            if not entry:
                return self.default
            return entry.pop(0) if len(entry) > 1 else entry[0]
        return entry

    def hurry(self) -> None:
        return None

    async def run(
        self, effect: RunCommand, cancel: trio.Event, on_output: OutputSink
    ) -> CommandFinished | CommandNotStarted:
        self.calls.append(effect)
        answer = self._answer(effect)
        start = trio.current_time()
        timed_out = False
        cancelled = False
        wait = float("inf") if answer.hang else answer.duration
        with trio.move_on_after(effect.timeout if effect.timeout is not None else float("inf")) \
                as scope:
            with trio.move_on_after(wait):
                await cancel.wait()
                cancelled = True
        if scope.cancelled_caught:
            timed_out = True
        for line in answer.stdout.splitlines():
            on_output("stdout", line)
        end = trio.current_time()
        return CommandFinished(
            command_id=effect.command_id,
            exit_code=-1 if timed_out else (130 if cancelled else answer.exit_code),
            stdout=answer.stdout, stderr=answer.stderr, timed_out=timed_out,
            cancelled=cancelled, duration=end - start, started_at=f"t{start}",
            finished_at=f"t{end}", monotonic=end,
        )


@shows_fields
@attrs.define(repr=False)
class MemoryFiles:
    """Files in memory, keyed by ``<cwd>/<path>`` (what ``WriteFile`` wrote, or tests put)."""

    files: dict[str, str] = attrs.field(factory=dict)

    async def read(self, effect: ReadFile) -> FileRead:
        key = effect.path if effect.path.startswith("/") else f"{effect.cwd}/{effect.path}"
        content = self.files.get(key)
        return FileRead(command_id=effect.command_id, content=content,
                        message="" if content is not None else f"no such file: {effect.path}",
                        monotonic=trio.current_time())

    async def write(self, effect: WriteFile) -> FileWritten | FileWriteFailed:
        content = effect.content
        if effect.format == "json":
            try:
                content = json.dumps(json.loads(content), indent=2) + "\n"
            except ValueError as exc:
                return FileWriteFailed(command_id=effect.command_id,
                                       message=f"content is not valid JSON: {exc}")
        self.files[f"{effect.cwd}/{effect.path}"] = content
        return FileWritten(command_id=effect.command_id, path=effect.path,
                           size=len(content.encode()), monotonic=trio.current_time())


ROOT_SHA = "0" * 40


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class FakeCommit:
    sha: str
    message: str
    files: tuple[str, ...] = ()
    author: str | None = None
    signed: bool = False


GitEffect = CommitChanges | ListCommits | SquashCommits


@shows_fields
@attrs.define(repr=False)
class FakeGit:
    """An in-memory repository: a linear ``history`` on top of ``ROOT_SHA``.

    ``dirty`` holds the uncommitted changed paths (``touch`` adds one; a scripted command
    can call it, or ``commit`` to stand for a commit the step made).  ``tracked`` are the
    paths that existed before the history, so changes to them count as modifications.
    ``head`` answers from the scripted ``heads`` first (consumed in order), then the tip.
    ``fail`` maps an effect tag (``commit_changes``…) to a message: that effect then
    answers ``GitFailed``.  ``calls`` records every git effect performed.
    """

    heads: list[str | None] = attrs.field(factory=list)
    current: str | None = ROOT_SHA
    history: list[FakeCommit] = attrs.field(factory=list)
    dirty: list[str] = attrs.field(factory=list)
    tracked: set[str] = attrs.field(factory=set)
    fail: dict[str, str] = attrs.field(factory=dict)
    calls: list[GitEffect] = attrs.field(factory=list)

    async def head(self, cwd: str) -> str | None:
        if self.heads:
            self.current = self.heads.pop(0)
        return self.current

    # --- changing the fake repository (for scripts and tests) --------------------------

    def touch(self, *paths: str) -> None:
        self.dirty.extend(p for p in paths if p not in self.dirty)

    def commit(self, message: str, files: tuple[str, ...] | list[str] = (), *,
               author: str | None = None, signed: bool = False) -> str:
        sha = f"{len(self.history) + 1:040x}"
        self.history.append(FakeCommit(sha=sha, message=message, files=tuple(files),
                                       author=author, signed=signed))
        self.dirty = [p for p in self.dirty if p not in files]
        self.current = sha
        return sha

    def _since(self, since: str | None) -> list[FakeCommit]:
        shas = [c.sha for c in self.history]
        if since is None:
            return []
        return self.history[shas.index(since) + 1:] if since in shas else list(self.history)

    def _failed(self, effect: GitEffect) -> GitFailed | None:
        self.calls.append(effect)
        tag = EFFECT_TAGS[type(effect)]
        if tag in self.fail:
            return GitFailed(command_id=effect.command_id, operation=tag,
                             message=self.fail[tag])
        return None

    # --- the Git protocol ---------------------------------------------------------------

    async def commit_changes(self, effect: CommitChanges) -> ChangesCommitted | GitFailed:
        if failed := self._failed(effect):
            return failed
        paths = select_paths(self.dirty, effect.include, effect.exclude)
        if not paths:
            return ChangesCommitted(command_id=effect.command_id, sha=None)
        sha = self.commit(effect.message, paths, author=effect.author, signed=effect.sign)
        return ChangesCommitted(command_id=effect.command_id, sha=sha, files=paths)

    async def list_commits(self, effect: ListCommits) -> CommitsListed | GitFailed:
        if failed := self._failed(effect):
            return failed
        new = self._since(effect.since)
        known = set(self.tracked)
        for commit in self.history[:len(self.history) - len(new)]:
            known.update(commit.files)
        committed = {p for c in new for p in c.files}
        changed = committed | set(self.dirty)
        # every change writes a one-line file: an added tracked file is one insertion, a
        # modified one an insertion and a deletion; untracked files count nothing
        modified = changed & known
        return CommitsListed(
            command_id=effect.command_id, head=self.current,
            commits=tuple((c.sha, c.message) for c in new),
            files_added=tuple(sorted(changed - known)),
            files_modified=tuple(sorted(modified)),
            insertions=len(committed - known) + len(modified), deletions=len(modified))

    async def squash_commits(self, effect: SquashCommits) -> CommitsSquashed | GitFailed:
        if failed := self._failed(effect):
            return failed
        new = self._since(effect.since)
        self.history = self.history[:len(self.history) - len(new)]
        files = tuple(sorted({p for c in new for p in c.files}))
        sha = self.commit(effect.message, files, author=effect.author, signed=effect.sign)
        return CommitsSquashed(command_id=effect.command_id, sha=sha)


@shows_fields
@attrs.define(repr=False)
class TrioClock:
    """Wall time is a counter; monotonic time and sleeps are trio's (mockable)."""

    ticks: int = 0

    def now_iso(self) -> str:
        self.ticks += 1
        return f"2026-01-01T00:00:{self.ticks % 60:02d}.000Z"

    def monotonic(self) -> float:
        return trio.current_time()

    async def sleep(self, seconds: float, cancel: trio.Event) -> None:
        with trio.move_on_after(seconds):
            await cancel.wait()


def _identity(text: str) -> str:
    return text


@shows_fields
@attrs.define(repr=False)
class MemoryStore:
    """Checkpoints and session records, kept as JSON data after ``mask``."""

    checkpoints: list[dict[str, Any]] = attrs.field(factory=list)
    sessions: list[dict[str, Any]] = attrs.field(factory=list)
    mask: Callable[[str], str] = _identity

    def save_checkpoint(self, doc: dict[str, Any]) -> None:
        self.checkpoints.append(json.loads(self.mask(json.dumps(doc))))

    def save_session(self, doc: dict[str, Any]) -> None:
        self.sessions.append(json.loads(self.mask(json.dumps(doc))))


@shows_fields
@attrs.define(repr=False)
class RecordingJournal:
    """Journal records, kept as JSON data after ``mask``."""

    events: list[dict[str, Any]] = attrs.field(factory=list)
    syncs: int = 0
    mask: Callable[[str], str] = _identity

    def append(self, event: dict[str, Any]) -> int:
        self.events.append(json.loads(self.mask(json.dumps(event))))
        return len(self.events)

    def sync(self) -> None:
        self.syncs += 1

    @property
    def last_seq(self) -> int:
        return len(self.events)

    def types(self) -> list[str]:
        return [e["event_type"] for e in self.events]


@shows_fields
@attrs.define(repr=False)
class RecordingConsole:
    """The ``Print`` texts shown (after ``mask``) and the plan descriptions."""

    lines: list[str] = attrs.field(factory=list)
    described: list[Any] = attrs.field(factory=list)
    mask: Callable[[str], str] = _identity

    def show(self, effect: Print) -> None:
        self.lines.append(self.mask(effect.text))

    def output_line(self, display: str, stream: str, line: str) -> None:
        return None

    def describe(self, info: Any) -> None:
        self.described.append(info)

    def plan_command(self, effect: RunCommand | WriteFile) -> None:
        return None

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


@shows_fields
@attrs.define(repr=False)
class ScriptedClaude:
    """Answers ``RunClaude`` with scripted stream lines; records every call.

    ``script`` maps a prompt (the argv's prompt, or stdin) to a ``ClaudeScript`` (or a
    list consumed in order); unknown prompts get ``default``.
    """

    script: dict[str, ClaudeScript | list[ClaudeScript]] = attrs.field(factory=dict)
    default: ClaudeScript = attrs.field(factory=lambda: ClaudeScript())
    calls: list[RunClaude] = attrs.field(factory=list)

    def _answer(self, prompt: str) -> ClaudeScript:
        entry = self.script.get(prompt)
        if entry is None:
            return self.default
        if isinstance(entry, list):
            return entry.pop(0) if len(entry) > 1 else entry[0]
        return entry

    def hurry(self) -> None:
        return None

    async def run(self, effect: RunClaude, cancel: trio.Event,
                  on_line: Callable[[str], None]) -> ClaudeFinished:
        self.calls.append(effect)
        prompt = effect.stdin if effect.stdin is not None else effect.argv[2]
        answer = self._answer(prompt)
        start = trio.current_time()
        for line in answer.lines:
            on_line(line)
        cancelled = timed_out = False
        if answer.hang:
            with trio.move_on_after(effect.timeout if effect.timeout is not None
                                    else float("inf")) as scope:
                await cancel.wait()
                cancelled = True
            timed_out = scope.cancelled_caught
        end = trio.current_time()
        return ClaudeFinished(command_id=effect.command_id,
                              exit_code=-1 if timed_out else answer.exit_code,
                              stderr=answer.stderr, timed_out=timed_out, cancelled=cancelled,
                              transcript=f"memory://transcript/{len(self.calls)}",
                              duration=end - start, monotonic=end)


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class ClaudeScript:
    lines: tuple[str, ...] = (
        '{"type":"system","subtype":"init","session_id":"fake-session","model":"fake"}',
        '{"type":"result","subtype":"success","is_error":false,"result":"ok",'
        '"total_cost_usd":0.0,"num_turns":1,"session_id":"fake-session"}',
    )
    exit_code: int = 0
    stderr: str = ""
    hang: bool = False


def FakeEnv(
    script: Script | None = None,
    *,
    heads: list[str | None] | None = None,
    git: FakeGit | None = None,
    claude: ScriptedClaude | None = None,
    grace_seconds: float = 5.0,
    worktrees: Worktrees | None = None,
    prompter: Prompter | None = None,
    secrets: Masker | None = None,
) -> Env:
    """An ``Env`` whose parts are all in memory and scripted.

    ``worktrees`` (e.g. ``FakeWorktrees``) and ``prompter`` (e.g. ``FakePrompter``) are
    absent by default, as in an environment without git worktrees or a terminal.  Like
    production, the console, journal and store share one live ``Masker`` (``secrets``;
    empty unless given), which ``RegisterSecret`` extends.
    """
    masker = secrets if secrets is not None else Masker()
    return Env(
        commands=ScriptedRunner(script=script if script is not None else {}),
        files=MemoryFiles(),
        git=git if git is not None else FakeGit(heads=list(heads or [])),
        clock=TrioClock(),
        store=MemoryStore(mask=masker),
        journal=RecordingJournal(mask=masker),
        console=RecordingConsole(mask=masker),
        secrets=masker,
        claude=claude if claude is not None else ScriptedClaude(),
        grace_seconds=grace_seconds,
        worktrees=worktrees,
        prompter=prompter,
    )


# --- session worktrees and the merge prompt (spec 06 §3, §7) ---------------------------

WorktreeEffect = (CreateWorktree | InspectMerge | MergeBranch | ConcludeMerge | VerifyMerged
                  | RemoveWorktree | RemovePool)


@shows_fields
@attrs.define(repr=False)
class FakeWorktrees:
    """Scripted session worktrees and merges (the ``Worktrees`` protocol); no git at all.

    Answers are configured up front: ``create_failure`` ``(code, message)`` makes
    ``CreateWorktree`` fail, else it answers ``WorktreeCreated`` at ``head`` (``created``
    false when ``exists``; ``dirty`` are the user's uncommitted paths).  ``InspectMerge``
    reports ``target`` (by default the effect's original branch, else ``main``; with
    ``no_target`` none at all), ``target_warning``, ``ahead``, ``uncommitted`` and, when
    details are asked for, ``commits`` and ``modified_files`` (or ``MergeFailed`` with
    ``inspect_failure``).
    ``MergeBranch`` is refused with E4005 and ``refuse`` when set, conflicts in
    ``conflicts`` when non-empty (aborted unless the effect keeps the conflict), else it
    merges.  ``ConcludeMerge(action=accept)`` is accepted when ``accept``; a rollback is
    never accepted.  ``VerifyMerged`` answers ``verified``; ``RemoveWorktree`` (and
    ``RemovePool``) warns ``remove_warning``.  ``calls`` records every effect received,
    ``metas`` every document given to ``save_meta``.
    """

    target: str | None = None
    no_target: bool = False
    target_warning: str | None = None
    ahead: int = 1
    uncommitted: tuple[str, ...] = ()
    commits: tuple[Any, ...] = ()
    modified_files: tuple[Any, ...] = ()
    inspect_failure: str | None = None
    conflicts: tuple[str, ...] = ()
    refuse: str | None = None
    accept: bool = True
    verified: bool = True
    remove_warning: str | None = None
    create_failure: tuple[str, str] | None = None
    exists: bool = False
    dirty: tuple[str, ...] = ()
    head: str = "c" * 40
    merge_dir: str = "/repo"
    merge_sha: str = "d" * 40
    pre: str = "b" * 40
    # ``MeasureWorktree`` answers these sizes by path (0 for others)
    sizes: dict[str, int] = attrs.field(factory=dict)
    calls: list[WorktreeEffect | MeasureWorktree] = attrs.field(factory=list)
    metas: list[dict[str, Any]] = attrs.field(factory=list)

    async def create(self, effect: CreateWorktree) -> WorktreeCreated | WorktreeFailed:
        self.calls.append(effect)
        await trio.lowlevel.checkpoint()
        if self.create_failure is not None:
            code, message = self.create_failure
            return WorktreeFailed(command_id=effect.command_id, code=code, message=message)
        return WorktreeCreated(command_id=effect.command_id, path=effect.path,
                               branch=effect.branch, head=self.head,
                               created=not self.exists, dirty=self.dirty)

    async def inspect(self, effect: InspectMerge) -> MergeInspected | MergeFailed:
        self.calls.append(effect)
        await trio.lowlevel.checkpoint()
        if self.inspect_failure is not None:
            return MergeFailed(command_id=effect.command_id, code="E4005",
                               message=self.inspect_failure)
        details = effect.details
        target = None if self.no_target else (
            self.target or effect.original_branch or "main")
        return MergeInspected(
            command_id=effect.command_id, target=target, ahead=self.ahead,
            target_warning=self.target_warning, uncommitted=self.uncommitted,
            commits=self.commits if details else (),
            commit_count=len(self.commits) if details else 0,
            modified_files=self.modified_files if details else (),
            file_count=len(self.modified_files) if details else 0)

    async def merge(self, effect: MergeBranch
                    ) -> BranchMerged | MergeConflicted | MergeFailed:
        self.calls.append(effect)
        await trio.lowlevel.checkpoint()
        if self.refuse is not None:
            return MergeFailed(command_id=effect.command_id, code="E4005",
                               message=self.refuse)
        if self.conflicts:
            return MergeConflicted(command_id=effect.command_id, paths=self.conflicts,
                                   merge_dir=self.merge_dir, pre=self.pre,
                                   aborted=not effect.keep_conflict)
        return BranchMerged(command_id=effect.command_id, sha=self.merge_sha,
                            merge_dir=self.merge_dir)

    async def conclude(self, effect: ConcludeMerge) -> MergeConcluded:
        self.calls.append(effect)
        await trio.lowlevel.checkpoint()
        if effect.action == "accept" and self.accept:
            return MergeConcluded(command_id=effect.command_id, accepted=True,
                                  sha=self.merge_sha)
        reason = "rolled back" if effect.action == "rollback" else "conflict markers remain"
        return MergeConcluded(command_id=effect.command_id, accepted=False, reason=reason)

    async def verify(self, effect: VerifyMerged) -> MergeVerified:
        self.calls.append(effect)
        await trio.lowlevel.checkpoint()
        return MergeVerified(command_id=effect.command_id, merged=self.verified)

    async def remove(self, effect: RemoveWorktree) -> WorktreeRemoved:
        self.calls.append(effect)
        await trio.lowlevel.checkpoint()
        return WorktreeRemoved(command_id=effect.command_id, warning=self.remove_warning)

    async def measure(self, effect: MeasureWorktree) -> WorktreeMeasured:
        self.calls.append(effect)
        await trio.lowlevel.checkpoint()
        return WorktreeMeasured(command_id=effect.command_id,
                                size_bytes=self.sizes.get(effect.path, 0))

    async def remove_pool(self, effect: RemovePool) -> tuple[str, ...]:
        self.calls.append(effect)
        await trio.lowlevel.checkpoint()
        return (self.remove_warning,) if self.remove_warning else ()

    def save_meta(self, doc: dict[str, Any]) -> None:
        self.metas.append(json.loads(json.dumps(doc)))

    def kinds(self) -> list[str]:
        """The tags of the effects received, in order (``create_worktree``…)."""
        return [EFFECT_TAGS[type(e)] for e in self.calls]


@shows_fields
@attrs.define(repr=False)
class FakePrompter:
    """Answers ``AskUser`` from ``answers`` in order (None: end of input); records questions.

    With ``terminal`` false every question answers "no terminal".  When the answers run
    out the question answers end of input, or with ``hang`` it waits until it is cancelled
    (then answers end of input).
    """

    answers: list[str | None] = attrs.field(factory=list)
    terminal: bool = True
    hang: bool = False
    questions: list[str] = attrs.field(factory=list)

    async def ask(self, effect: AskUser, cancel: trio.Event) -> UserAnswered:
        self.questions.append(effect.question)
        await trio.lowlevel.checkpoint()
        if not self.terminal:
            return UserAnswered(command_id=effect.command_id, answer=None, terminal=False)
        if self.answers:
            return UserAnswered(command_id=effect.command_id, answer=self.answers.pop(0))
        if self.hang:
            await cancel.wait()
        return UserAnswered(command_id=effect.command_id, answer=None)
