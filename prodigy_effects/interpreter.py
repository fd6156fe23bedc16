"""The trio interpreter: the one loop that owns a machine's state.

Theory of operation
-------------------
``interpret(transition, step, env)`` holds the current state in a local variable and
is the only caller of ``step``.  It performs the effects of each transition in order:
short effects (journal, checkpoint, session record, console, a new secret to mask) are
awaited inline; long ones (commands, file writes and reads, git reads and commits,
sleeps) are started in a nursery and report back over a memory channel as events.
The core decides how many long effects are outstanding; the interpreter never starts
anything on its own.

SIGINT and SIGTERM become ``CancelRequested`` events.  ``CancelCommands`` sets the
cancel flag of every outstanding long effect; each of them still reports its normal
completion event (a cancelled command reports ``CommandFinished(cancelled=True)``).
The loop ends when the core emits ``Finish``.
"""

from __future__ import annotations

import math
import signal as signal_module
import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any, Protocol, TypeVar, assert_never

import attrs
import trio

from prodigy_core.effects import (
    CancelCommands,
    CommitChanges,
    DescribeStep,
    Effect,
    Finish,
    ListCommits,
    LogEvent,
    Print,
    ReadFile,
    ReadGitHead,
    RegisterSecret,
    RunClaude,
    RunCommand,
    SaveCheckpoint,
    SaveSession,
    Sleep,
    SquashCommits,
    WriteFile,
)
from prodigy_core.events import (
    CancelRequested,
    ClaudeFinished,
    ClaudeLine,
    Event,
    GitHeadRead,
    Slept,
)
from prodigy_core.job_ops import (
    AgentReleased,
    FinishAgent,
    ForgetDLQ,
    LoadWorkItems,
    MeasureWorktree,
    RecordDLQ,
    SaveJobFile,
    SaveJobState,
    WorkItemsFailed,
    WorktreeMeasured,
)
from prodigy_core.reprs import value_class
from prodigy_core.worktree_ops import (
    AskUser,
    ConcludeMerge,
    CreateWorktree,
    InspectMerge,
    MergeBranch,
    MergeConcluded,
    MergeFailed,
    MergeVerified,
    RemovePool,
    RemoveWorktree,
    SaveWorktreeMeta,
    UserAnswered,
    VerifyMerged,
    WorktreeCreated,
    WorktreeFailed,
    WorktreeRemoved,
)
from prodigy_effects.env import Env

S = TypeVar("S")


class _Transition(Protocol[S]):  # pragma: no cover - structural type only
    @property
    def state(self) -> S: ...

    @property
    def effects(self) -> tuple[Effect, ...]: ...


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class RunResult:
    exit_code: int
    outcome: Any
    state: Any
    trace: tuple[Effect, ...] = ()


async def interpret(
    transition: Any,
    step: Callable[[Any, Event], Any],
    env: Env,
    *,
    handle_signals: bool = False,
    record: bool = False,
) -> RunResult:
    """Run a machine to completion and return its ``Finish``."""
    send, receive = trio.open_memory_channel[Event](math.inf)
    cancels: dict[int, trio.Event] = {}
    trace: list[Effect] = []
    state = transition.state
    effects: tuple[Effect, ...] = transition.effects
    finish: Finish | None = None
    interrupts = 0

    sig_ctx: AbstractContextManager[Any] = (
        trio.open_signal_receiver(signal_module.SIGINT, signal_module.SIGTERM)
        if handle_signals
        else nullcontext(None)
    )
    # the signal receiver outlives the nursery: every task (the signal watcher too) has
    # ended before the receiver closes, so none can iterate a closed receiver
    with sig_ctx as signals:
        async with trio.open_nursery() as nursery:
            if signals is not None:

                async def watch_signals(
                    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
                ) -> None:
                    nonlocal interrupts
                    task_status.started()
                    async for signum in signals:
                        interrupts += 1
                        name = "SIGTERM" if signum == signal_module.SIGTERM else "SIGINT"
                        if interrupts > 1:
                            env.console.show(Print(text="Stopping now (second interrupt)",
                                                   stream="err"))
                            env.commands.hurry()
                            if env.claude is not None:
                                env.claude.hurry()
                        await send.send(CancelRequested(signal=name, at=env.clock.now_iso()))

                await nursery.start(watch_signals)

            while True:
                for effect in effects:
                    if record:
                        trace.append(effect)
                    result = await _perform(effect, env, nursery, send, cancels,
                                            lambda: interrupts)
                    if result is not None:
                        finish = result
                if finish is not None:
                    break
                event = await receive.receive()
                cid = getattr(event, "command_id", None)
                if cid is not None and not isinstance(event, ClaudeLine):
                    cancels.pop(cid, None)  # the effect is over (a line is not the end)
                transition = step(state, event)
                state = transition.state
                effects = transition.effects
            for flag in cancels.values():
                flag.set()
            nursery.cancel_scope.cancel()
    return RunResult(exit_code=finish.exit_code, outcome=finish.outcome, state=state,
                     trace=tuple(trace))


async def _perform(
    effect: Effect,
    env: Env,
    nursery: trio.Nursery,
    send: trio.MemorySendChannel[Event],
    cancels: dict[int, trio.Event],
    interrupts: Callable[[], int],
) -> Finish | None:
    """The one exhaustive dispatch over the effect union."""
    match effect:
        case RunCommand():
            flag = trio.Event()
            cancels[effect.command_id] = flag
            nursery.start_soon(perform_run_command, effect, env, send, flag)
        case RunClaude():
            flag = trio.Event()
            cancels[effect.command_id] = flag
            nursery.start_soon(perform_run_claude, effect, env, send, flag)
        case WriteFile():
            nursery.start_soon(perform_write_file, effect, env, send)
        case ReadFile():
            nursery.start_soon(perform_read_file, effect, env, send)
        case ReadGitHead():
            nursery.start_soon(perform_read_git_head, effect, env, send)
        case CommitChanges():
            nursery.start_soon(perform_commit_changes, effect, env, send)
        case ListCommits():
            nursery.start_soon(perform_list_commits, effect, env, send)
        case SquashCommits():
            nursery.start_soon(perform_squash_commits, effect, env, send)
        case Sleep():
            flag = trio.Event()
            cancels[effect.command_id] = flag
            nursery.start_soon(perform_sleep, effect, env, send, flag)
        case CancelCommands():
            perform_cancel_commands(cancels, effect.command_ids)
        case LogEvent():
            perform_log_event(effect, env)
        case SaveCheckpoint():
            perform_save_checkpoint(effect, env)
        case SaveSession():
            perform_save_session(effect, env)
        case Print():
            env.console.show(effect)
        case DescribeStep():
            env.console.describe(effect.info)
        case Finish():
            return effect
        case RegisterSecret():
            if env.secrets is not None:
                env.secrets.add(effect.value)
        case CreateWorktree() | InspectMerge() | MergeBranch() | ConcludeMerge() | \
                VerifyMerged() | RemoveWorktree():
            nursery.start_soon(perform_worktree_effect, effect, env, send)
        case AskUser():
            flag = trio.Event()
            cancels[effect.command_id] = flag
            nursery.start_soon(perform_ask_user, effect, env, send, flag)
        case SaveWorktreeMeta():
            if env.worktrees is not None:
                env.worktrees.save_meta(dict(effect.doc))
        case RemovePool():
            await perform_remove_pool(effect, env)
        case LoadWorkItems() | FinishAgent() | MeasureWorktree():
            nursery.start_soon(perform_job_effect, effect, env, send)
        case SaveJobState():
            if env.jobs is not None:
                env.journal.sync()
                doc = dict(effect.doc)
                doc["last_event_seq"] = env.journal.last_seq
                env.jobs.save_state(doc)
        case SaveJobFile():
            if env.jobs is not None:
                env.jobs.save_file(effect.name, effect.content, durable=effect.durable)
        case RecordDLQ():
            if env.jobs is not None:
                env.jobs.record_dlq(effect)
        case ForgetDLQ():
            if env.jobs is not None:
                env.jobs.forget_dlq(effect.item_id)
        case _:
            assert_never(effect)
    return None


WorktreeEffect = (CreateWorktree | InspectMerge | MergeBranch | ConcludeMerge | VerifyMerged
                  | RemoveWorktree)


async def perform_worktree_effect(effect: WorktreeEffect, env: Env,
                                  send: trio.MemorySendChannel[Event]) -> None:
    """Spawned; completes with the answer of ``env.worktrees`` (spec 06)."""
    wt = env.worktrees
    cid = effect.command_id
    missing = "this environment has no git worktrees"
    event: Event
    match effect:
        case CreateWorktree():
            event = await wt.create(effect) if wt is not None else WorktreeFailed(
                command_id=cid, code="E4003", message=missing)
        case InspectMerge():
            event = await wt.inspect(effect) if wt is not None else MergeFailed(
                command_id=cid, code="E4005", message=missing)
        case MergeBranch():
            event = await wt.merge(effect) if wt is not None else MergeFailed(
                command_id=cid, code="E4005", message=missing)
        case ConcludeMerge():
            event = await wt.conclude(effect) if wt is not None else MergeConcluded(
                command_id=cid, accepted=False, reason=missing)
        case VerifyMerged():
            event = await wt.verify(effect) if wt is not None else MergeVerified(
                command_id=cid, merged=False)
        case RemoveWorktree():
            event = await wt.remove(effect) if wt is not None else WorktreeRemoved(
                command_id=cid, warning=missing)
        case _:
            assert_never(effect)
    if isinstance(event, WorktreeCreated) and not event.monotonic:
        event = attrs.evolve(event, monotonic=env.clock.monotonic())
    await send.send(event)


async def perform_job_effect(effect: LoadWorkItems | FinishAgent | MeasureWorktree, env: Env,
                             send: trio.MemorySendChannel[Event]) -> None:
    """Spawned; completes with the answer of ``env.jobs`` / ``env.worktrees``."""
    event: Event
    match effect:
        case LoadWorkItems():
            event = await env.jobs.load_items(effect) if env.jobs is not None else \
                WorkItemsFailed(command_id=effect.command_id, code="E6003",
                                message="this environment cannot load work items")
        case FinishAgent():
            event = await env.worktrees.finish_agent(effect) if env.worktrees is not None \
                else AgentReleased(command_id=effect.command_id,
                                   warning="this environment has no git worktrees")
        case MeasureWorktree():
            event = await env.worktrees.measure(effect) if env.worktrees is not None \
                else WorktreeMeasured(command_id=effect.command_id,
                                      message="this environment has no git worktrees")
        case _:
            assert_never(effect)
    if isinstance(event, AgentReleased) and not event.monotonic:
        event = attrs.evolve(event, monotonic=env.clock.monotonic())
    await send.send(event)


async def perform_remove_pool(effect: RemovePool, env: Env) -> None:
    """Inline, in order: a job's worktree pool goes (spec 06 §9); failures are W4005."""
    if env.worktrees is None:
        return
    for warning in await env.worktrees.remove_pool(effect):
        env.console.show(Print(text=f"warning[W4005]: {warning}", stream="err"))


async def perform_ask_user(effect: AskUser, env: Env, send: trio.MemorySendChannel[Event],
                           cancel: trio.Event) -> None:
    """Spawned; ``CancelCommands`` ends the question as unanswered."""
    if env.prompter is None:
        await send.send(UserAnswered(command_id=effect.command_id, answer=None,
                                     terminal=False))
        return
    await send.send(await env.prompter.ask(effect, cancel))


async def perform_run_claude(
    effect: RunClaude, env: Env, send: trio.MemorySendChannel[Event], cancel: trio.Event
) -> None:
    """Lines go to the core as ``ClaudeLine`` events as they arrive, before the end."""
    if env.claude is None:
        await send.send(ClaudeFinished(command_id=effect.command_id, exit_code=-1,
                                       not_started="no Claude runner in this environment"))
        return

    def on_line(line: str) -> None:
        send.send_nowait(ClaudeLine(command_id=effect.command_id, line=line))

    event = await env.claude.run(effect, cancel, on_line)
    await send.send(event)


async def perform_run_command(
    effect: RunCommand, env: Env, send: trio.MemorySendChannel[Event], cancel: trio.Event
) -> None:
    def on_output(stream: str, line: str) -> None:
        if effect.stream_output:
            env.console.output_line(effect.display, stream, effect.prefix + line)

    event = await env.commands.run(effect, cancel, on_output)
    await send.send(event)


async def perform_write_file(
    effect: WriteFile, env: Env, send: trio.MemorySendChannel[Event]
) -> None:
    await send.send(await env.files.write(effect))


async def perform_read_file(
    effect: ReadFile, env: Env, send: trio.MemorySendChannel[Event]
) -> None:
    await send.send(await env.files.read(effect))


async def perform_read_git_head(
    effect: ReadGitHead, env: Env, send: trio.MemorySendChannel[Event]
) -> None:
    sha = await env.git.head(effect.cwd)
    await send.send(GitHeadRead(command_id=effect.command_id, sha=sha))


async def perform_commit_changes(
    effect: CommitChanges, env: Env, send: trio.MemorySendChannel[Event]
) -> None:
    await send.send(await env.git.commit_changes(effect))


async def perform_list_commits(
    effect: ListCommits, env: Env, send: trio.MemorySendChannel[Event]
) -> None:
    await send.send(await env.git.list_commits(effect))


async def perform_squash_commits(
    effect: SquashCommits, env: Env, send: trio.MemorySendChannel[Event]
) -> None:
    await send.send(await env.git.squash_commits(effect))


async def perform_sleep(
    effect: Sleep, env: Env, send: trio.MemorySendChannel[Event], cancel: trio.Event
) -> None:
    await env.clock.sleep(effect.seconds, cancel)
    await send.send(Slept(command_id=effect.command_id, monotonic=env.clock.monotonic()))


def perform_cancel_commands(cancels: dict[int, trio.Event],
                            only: tuple[int, ...] = ()) -> None:
    for cid, flag in cancels.items():
        if not only or cid in only:
            flag.set()


def perform_log_event(effect: LogEvent, env: Env) -> None:
    env.journal.append(effect.as_dict())


def perform_save_checkpoint(effect: SaveCheckpoint, env: Env) -> None:
    env.journal.sync()
    doc = dict(effect.checkpoint) if isinstance(effect.checkpoint, dict) else {}
    now = env.clock.now_iso()
    doc.setdefault("timestamp", now)
    state = doc.get("execution_state")
    if isinstance(state, dict):
        state = dict(state)
        state["last_checkpoint"] = now
        doc["execution_state"] = state
    doc["last_event_seq"] = env.journal.last_seq
    env.store.save_checkpoint(doc)


def perform_save_session(effect: SaveSession, env: Env) -> None:
    doc = dict(effect.session) if isinstance(effect.session, dict) else {}
    doc["updated_at"] = env.clock.now_iso()
    if not doc.get("started_at"):
        doc["started_at"] = doc["updated_at"]
    env.store.save_session(doc)


def new_event_id() -> str:
    return str(uuid.uuid4())
