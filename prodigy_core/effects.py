"""Effects: descriptions of work the core asks the interpreter to do.

Effects are imperative nouns.  They are inert data (frozen, keyword-only attrs classes,
no callables, no handles).  The interpreter performs them against an injected
environment; long effects report back with an event (see ``prodigy_core.events``).

Each class's docstring says who emits it, who consumes it and how it is performed.
The tag strings in ``EFFECT_TAGS`` are stable: journals and replay files refer to them.
"""

from __future__ import annotations

from typing import Literal

import attrs

from prodigy_core.json_values import JSON
from prodigy_core.reprs import value_class


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class RunCommand:
    """Run one process.

    Emitted by the step machine for each execution of a ``shell`` step, each
    ``step_validate`` command and each shell handler.  Performed *spawned*: the performer
    starts ``argv`` (never through a shell of ours: shell steps use ``("sh", "-c", text)``
    or ``("sh", script_file)`` for very long text) as the leader of a new process group,
    with stdin from /dev/null, in ``cwd``, with exactly ``env`` as its environment.  It
    enforces ``timeout`` (SIGTERM to the group, 5 s grace, SIGKILL) and completes with
    ``CommandFinished`` or ``CommandNotStarted``.  ``script`` is set instead of a long
    ``argv[-1]`` when the text exceeds 100 000 bytes; the performer writes it to a
    temporary file and runs ``sh <file>``.
    """

    command_id: int
    argv: tuple[str, ...]
    cwd: str
    env: tuple[tuple[str, str], ...]
    timeout: float | None = None
    script: str | None = None
    stream_output: bool = False
    display: str = ""
    step_path: str = ""
    # put before each streamed output line (``[<item_id>] `` in a MapReduce agent)
    prefix: str = ""
    # MapReduce ``resource_limits.max_memory_mb`` (spec 06 §9.4): the resident memory of
    # the process group is sampled every 5 s; above it the command is stopped as for a
    # timeout and finishes with ``exhausted`` set
    memory_limit_mb: int | None = None


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class WriteFile:
    """Write a file for a ``write_file`` step or ``output_file``.

    Emitted by the step machine.  Performed *spawned* (it is short, but it reports a
    result): the performer resolves ``path`` against ``cwd``, checks the format
    (``json`` content must parse and is pretty-printed; ``yaml`` must parse and is
    written in block style), creates parents when ``create_dirs``, writes atomically with
    ``mode`` and completes with ``FileWritten`` or ``FileWriteFailed``.
    """

    command_id: int
    cwd: str
    path: str
    content: str
    format: Literal["text", "json", "yaml"] = "text"
    mode: int = 0o644
    create_dirs: bool = False
    display: str = ""
    step_path: str = ""


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class ReadFile:
    """Read a text file (the ``result_file`` of a completeness ``validate``).

    Emitted by the step machine after the validation commands passed.  Performed
    *spawned*: the performer resolves ``path`` against ``cwd`` and reads it as UTF-8
    (invalid bytes replaced, at most 10 MiB); completes with ``FileRead`` (``content``
    None when the file does not exist or cannot be read).
    """

    command_id: int
    cwd: str
    path: str


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class ReadGitHead:
    """Find ``HEAD`` of the repository containing ``cwd`` (read-only git).

    Emitted before a step that needs commit tracking and around iterations.  Performed
    *spawned*; completes with ``GitHeadRead`` (``sha`` None outside a repository).
    """

    command_id: int
    cwd: str


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class CommitChanges:
    """Commit what a step left uncommitted (``auto_commit``, spec 02 §12.2).

    Emitted by the step machine after an execution that exited 0, when the step has
    ``auto_commit: true``.  Performed *spawned* by ``Git.commit_changes``: in the
    repository containing ``cwd`` it lists the changed paths (modified or deleted tracked
    files, untracked files that are not ignored; repository-relative), keeps those that
    match ``include`` (all when empty) and match no ``exclude`` glob
    (``prodigy_core.globs.select_paths``), stages and commits exactly those with
    ``message`` as given (argument vectors only, never a shell), ``author``
    (``Name <email>``) and ``-S`` when ``sign``.  Completes with ``ChangesCommitted``
    (``sha`` None when nothing was left to commit) or ``GitFailed``.
    """

    command_id: int
    cwd: str
    message: str
    author: str | None = None
    sign: bool = False
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    display: str = ""
    step_path: str = ""


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class ListCommits:
    """Describe what changed in the repository containing ``cwd`` since ``since``.

    Emitted by the step machine after a passing execution of a step with ``outputs``,
    ``commit_config.message_pattern`` or ``commit_config.squash`` (read-only git).
    Performed *spawned* by ``Git.list_commits``; completes with ``CommitsListed``: the
    new commits ``since..HEAD`` oldest first, and the files added / modified / deleted
    between ``since`` and the working tree (committed and uncommitted changes, untracked
    files that are not ignored; spec 03 §7.3), or ``GitFailed``.
    """

    command_id: int
    cwd: str
    since: str | None


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class SquashCommits:
    """Replace the commits ``since..HEAD`` by one commit (``commit_config.squash``).

    Emitted by the step machine after a passing execution that created more than one
    commit.  Performed *spawned* by ``Git.squash_commits``: a new commit with the tree of
    ``HEAD``, parent ``since``, ``message``, ``author`` and ``-S`` when ``sign`` becomes
    ``HEAD``; the index and the working tree are not touched.  Completes with
    ``CommitsSquashed`` or ``GitFailed``.
    """

    command_id: int
    cwd: str
    since: str
    message: str
    author: str | None = None
    sign: bool = False


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class Sleep:
    """Wait ``seconds``: the core's only timer.

    Emitted for retry backoff between attempts (step machine), a ``foreach`` step's time
    limit, agent timeouts, item retry delays, setup/reduce phase limits, the job circuit
    breaker's open period and the MapReduce progress ticker.  Performed *spawned* on the
    environment's clock; completes with ``Slept`` (also when cancelled by
    ``CancelCommands``).
    """

    command_id: int
    seconds: float


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class CancelCommands:
    """Stop every running command (SIGTERM to its group, grace period, SIGKILL).

    Emitted by the run machine on ``CancelRequested``, and by the job machine for one
    agent whose time is up (``command_ids``).  Performed *inline*: the interpreter
    cancels the outstanding spawned effects (all of them, or those of ``command_ids``);
    each of them still completes with its normal event (``CommandFinished`` with
    ``cancelled=True``).
    """

    command_ids: tuple[int, ...] = ()


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class LogEvent:
    """Append one record to the run's journal (the event log).

    NOTE: despite the name this is an *effect*, not an input event: the core asks for a
    fact to be written down.  Emitted by every machine for each state change.  Performed
    *inline, in order*: the performer adds the envelope (id, seq, timestamp), masks
    secrets and appends one JSON line, flushed at once.
    """

    event_type: str
    fields: tuple[tuple[str, JSON], ...] = ()

    def as_dict(self) -> dict[str, JSON]:
        out: dict[str, JSON] = {"event_type": self.event_type}
        out.update(dict(self.fields))
        return out


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class SaveCheckpoint:
    """Write the run's checkpoint atomically.

    Emitted after every completed step, at completion, on failure and on interruption.
    Performed *inline, in order*: the performer fsyncs the journal first, then encodes
    ``checkpoint`` with the versioned codec and writes it (temp file, fsync, rename).
    """

    checkpoint: JSON


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class SaveSession:
    """Write the session record (``sessions/<id>.json``).

    Emitted at start, on every status change and at the end.  Performed *inline, in
    order*, atomically.
    """

    session: JSON


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class Print:
    """Show a line to the person running Prodigy.

    Emitted by the machines for the messages the spec quotes.  Performed *inline, in
    order* by the console, which masks secrets and honours ``-q``/``-v``: ``level``
    ``result`` is always shown, ``info`` unless quiet, ``verbose`` only without ``-v``
    (a summary of output that ``-v`` streamed live), ``detail`` with ``-v``, ``debug``
    with ``-vv``, ``status`` is a transient status line shown only on a terminal, and
    ``progress`` (MapReduce) is that live line on a terminal and, elsewhere, a plain line
    at most every ``PROGRESS_EVERY`` seconds.  ``stream`` ``err`` is for warnings and
    errors.
    """

    text: str
    level: Literal["result", "info", "verbose", "detail", "status", "progress",
                   "debug"] = "info"
    stream: Literal["out", "err"] = "out"


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class DescribeStep:
    """Describe a step about to run, for the dry-run plan.

    Emitted for every step when the run is a dry run.  Performed *inline*: the dry-run
    console collects it into the plan; production environments ignore it.
    """

    info: JSON


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class Finish:
    """The run is over; the interpreter returns ``outcome`` to its caller.

    Emitted exactly once, last.  Performed *inline*.
    """

    outcome: JSON
    exit_code: int


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class RunClaude:
    """Run one Claude Code CLI call (spec 07).

    Emitted by the step machine for each execution of a ``claude`` step (in any scope,
    handlers included).  Performed *spawned*: the performer starts ``argv`` (an argument
    vector, never a shell) in ``cwd`` with exactly ``env``, as the leader of a new process
    group; writes ``stdin`` (the prompt, when it is long or starts with ``-``) and closes
    it; writes every stdout line, masked, to a new transcript file and reports it at once
    as a ``ClaudeLine`` event; enforces ``timeout`` and the ``idle_timeout`` watchdog
    (SIGTERM, grace, SIGKILL); and completes with ``ClaudeFinished``.
    """

    command_id: int
    argv: tuple[str, ...]
    cwd: str
    env: tuple[tuple[str, str], ...]
    stdin: str | None = None
    timeout: float | None = None
    idle_timeout: float | None = None
    memory_limit_mb: int | None = None  # as for ``RunCommand``
    display: str = ""
    step_path: str = ""


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class RegisterSecret:
    """Mask one more value from now on (spec 11 §9.1).

    Emitted by the step machine when a step ``env`` entry whose name looks sensitive
    (spec 11 §9.3) gets a value by interpolation (``MY_TOKEN: "${env.RAW}"``) that is not
    among the run's secret values already; it comes before any effect that could show
    the value.  Performed *inline, in order*: the interpreter adds ``value`` to the live
    masker shared by the console, the journal, the checkpoint and session writers and the
    Claude transcripts (``Env.secrets``).  Nothing is reported back.
    """

    value: str


from prodigy_core.job_ops import (  # noqa: E402  (members of the union)
    FinishAgent,
    ForgetDLQ,
    LoadWorkItems,
    MeasureWorktree,
    RecordDLQ,
    SaveJobFile,
    SaveJobState,
)
from prodigy_core.worktree_ops import (  # noqa: E402  (members of the union)
    AskUser,
    ConcludeMerge,
    CreateWorktree,
    InspectMerge,
    MergeBranch,
    RemovePool,
    RemoveWorktree,
    SaveWorktreeMeta,
    VerifyMerged,
)

Effect = (
    RunCommand
    | RunClaude
    | WriteFile
    | ReadFile
    | ReadGitHead
    | CommitChanges
    | ListCommits
    | SquashCommits
    | Sleep
    | CancelCommands
    | LogEvent
    | SaveCheckpoint
    | SaveSession
    | Print
    | DescribeStep
    | Finish
    | RegisterSecret
    | CreateWorktree
    | InspectMerge
    | AskUser
    | MergeBranch
    | ConcludeMerge
    | VerifyMerged
    | RemoveWorktree
    | RemovePool
    | SaveWorktreeMeta
    | LoadWorkItems
    | FinishAgent
    | MeasureWorktree
    | SaveJobState
    | SaveJobFile
    | RecordDLQ
    | ForgetDLQ
)

SPAWNED = (RunCommand, RunClaude, WriteFile, ReadFile, ReadGitHead, CommitChanges, ListCommits,
           SquashCommits, Sleep, CreateWorktree, InspectMerge, AskUser, MergeBranch,
           ConcludeMerge, VerifyMerged, RemoveWorktree, LoadWorkItems, FinishAgent,
           MeasureWorktree)

EFFECT_TAGS: dict[type, str] = {
    RunCommand: "run_command",
    RunClaude: "run_claude",
    WriteFile: "write_file",
    ReadFile: "read_file",
    ReadGitHead: "read_git_head",
    CommitChanges: "commit_changes",
    ListCommits: "list_commits",
    SquashCommits: "squash_commits",
    Sleep: "sleep",
    CancelCommands: "cancel_commands",
    LogEvent: "log_event",
    SaveCheckpoint: "save_checkpoint",
    SaveSession: "save_session",
    Print: "print",
    DescribeStep: "describe_step",
    Finish: "finish",
    RegisterSecret: "register_secret",
    CreateWorktree: "create_worktree",
    InspectMerge: "inspect_merge",
    AskUser: "ask_user",
    MergeBranch: "merge_branch",
    ConcludeMerge: "conclude_merge",
    VerifyMerged: "verify_merged",
    RemoveWorktree: "remove_worktree",
    RemovePool: "remove_pool",
    SaveWorktreeMeta: "save_worktree_meta",
    LoadWorkItems: "load_work_items",
    FinishAgent: "finish_agent",
    MeasureWorktree: "measure_worktree",
    SaveJobState: "save_job_state",
    SaveJobFile: "save_job_file",
    RecordDLQ: "record_dlq",
    ForgetDLQ: "forget_dlq",
}
