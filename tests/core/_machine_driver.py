"""A pure driver for the run machine: events are fed by hand, no interpreter, no I/O.

``Driver`` keeps the machine's state, every effect batch it returned and the spawned
effects still outstanding (by ``command_id``).  Tests either answer the outstanding
effect one event at a time (``finish_command``, ``sleep_done``, ``head``…) or let
``run`` answer everything from a script until the machine emits ``Finish``.  Git effects
(``CommitChanges``, ``ListCommits``, ``SquashCommits``) are answered by ``git`` when given,
else with "nothing to commit", "nothing new" and a fixed squash sha; ``ReadFile`` by
``files``.  The driver keeps its own monotonic clock: a command of ``duration`` seconds
and a ``Sleep`` of ``seconds`` advance it, and it is reported in every event.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import attrs

from prodigy_core import run_machine
from prodigy_core.context import RunContext
from prodigy_core.effects import (
    SPAWNED,
    CommitChanges,
    Effect,
    Finish,
    ListCommits,
    LogEvent,
    Print,
    ReadFile,
    ReadGitHead,
    RunCommand,
    SaveCheckpoint,
    Sleep,
    SquashCommits,
    WriteFile,
)
from prodigy_core.events import (
    ChangesCommitted,
    CommandFinished,
    CommitsListed,
    CommitsSquashed,
    Event,
    FileRead,
    FileWritten,
    GitHeadRead,
    Slept,
)
from prodigy_core.model import Step

GitAnswer = Callable[[Effect], Event]
STEP_END_EVENTS = ("step_completed", "step_failed", "step_skipped")


def make_ctx(**overrides: Any) -> RunContext:
    values: dict[str, Any] = {
        "session_id": "workflow-1",
        "workflow_name": "t",
        "workflow_path": "t.yml",
        "project_dir": "/repo",
        "repo_root": "/repo",
        "started_at": "2026-01-01T00:00:00.000Z",
    }
    values.update(overrides)
    return RunContext(**values)


def shell(command: str, **fields: Any) -> Step:
    return Step(kind="shell", command=command, **fields)


@attrs.frozen(kw_only=True)
class R:
    """The scripted answer to one command."""

    exit_code: int = 0
    stdout: str = ""
    stderr: str = ""
    duration: float = 0.0
    timed_out: bool = False


Script = Mapping[str, "R | list[R]"] | Callable[[RunCommand], R]


def command_text(effect: RunCommand) -> str:
    return effect.script if effect.script is not None else effect.argv[-1]


def default_git(effect: Effect) -> Event:
    if isinstance(effect, CommitChanges):
        return ChangesCommitted(command_id=effect.command_id, sha=None)
    if isinstance(effect, ListCommits):
        return CommitsListed(command_id=effect.command_id, head=effect.since)
    assert isinstance(effect, SquashCommits), effect
    return CommitsSquashed(command_id=effect.command_id, sha="f" * 40)


class Driver:
    def __init__(self, transition: run_machine.Transition, *, now: float = 0.0) -> None:
        self.state = transition.state
        self.batches: list[tuple[Effect, ...]] = []
        self.outstanding: dict[int, Effect] = {}
        self.finished: list[Finish] = []
        self.now = now
        self._take(transition)

    # --- bookkeeping ---------------------------------------------------------------

    def _take(self, transition: run_machine.Transition) -> tuple[Effect, ...]:
        self.state = transition.state
        self.batches.append(transition.effects)
        for effect in transition.effects:
            if isinstance(effect, SPAWNED):
                assert effect.command_id not in self.outstanding, effect
                self.outstanding[effect.command_id] = effect
            if isinstance(effect, Finish):
                self.finished.append(effect)
        return transition.effects

    @property
    def effects(self) -> list[Effect]:
        return [e for batch in self.batches for e in batch]

    @property
    def finish(self) -> Finish:
        assert len(self.finished) == 1, self.finished
        return self.finished[0]

    def pending(self, kind: type | tuple[type, ...] = SPAWNED) -> Any:
        assert len(self.outstanding) == 1, self.outstanding
        (effect,) = self.outstanding.values()
        assert isinstance(effect, kind), effect
        return effect

    # --- feeding events ------------------------------------------------------------

    def send(self, event: Event) -> tuple[Effect, ...]:
        cid = getattr(event, "command_id", None)
        if cid is not None:
            self.outstanding.pop(cid, None)
        return self._take(run_machine.step(self.state, event))

    def finish_command(self, exit_code: int = 0, stdout: str = "", stderr: str = "", *,
                       duration: float = 0.0, timed_out: bool = False,
                       cancelled: bool = False) -> tuple[Effect, ...]:
        command = self.pending(RunCommand)
        self.now += duration
        return self.send(CommandFinished(
            command_id=command.command_id, exit_code=-1 if timed_out else exit_code,
            stdout=stdout, stderr=stderr, timed_out=timed_out, cancelled=cancelled,
            duration=duration, started_at=f"t{self.now - duration}",
            finished_at=f"t{self.now}", monotonic=self.now,
        ))

    def sleep_done(self) -> tuple[Effect, ...]:
        sleep = self.pending(Sleep)
        self.now += sleep.seconds
        return self.send(Slept(command_id=sleep.command_id, monotonic=self.now))

    def head(self, sha: str | None) -> tuple[Effect, ...]:
        read = self.pending(ReadGitHead)
        return self.send(GitHeadRead(command_id=read.command_id, sha=sha))

    def file_written(self) -> tuple[Effect, ...]:
        write = self.pending(WriteFile)
        return self.send(FileWritten(command_id=write.command_id, path=write.path,
                                     size=len(write.content.encode()), monotonic=self.now))

    def file_read(self, content: str | None) -> tuple[Effect, ...]:
        read = self.pending(ReadFile)
        return self.send(FileRead(command_id=read.command_id, content=content,
                                  message="" if content is not None else "no such file",
                                  monotonic=self.now))

    def answer_git(self, event: Event) -> tuple[Effect, ...]:
        self.pending((CommitChanges, ListCommits, SquashCommits))
        return self.send(event)

    def run(self, script: Script | None = None, *, heads: Iterable[str | None] = (),
            git: GitAnswer | None = None, files: Mapping[str, list[str | None]] | None = None,
            limit: int = 500) -> Finish:
        """Answer every outstanding effect from ``script`` until the machine finishes.

        ``ReadFile`` is answered from ``files`` (path → contents, consumed in order; the
        last one repeats), None or an unknown path meaning "no such file".
        """
        contents = {k: list(v) for k, v in (files or {}).items()}
        table: dict[str, Any] = {}
        answer: Callable[[RunCommand], R]
        if callable(script):
            answer = script
        else:
            table = {k: (list(v) if isinstance(v, list) else v) for k, v in (script or {}).items()}

            def answer(effect: RunCommand) -> R:
                entry = table.get(command_text(effect), R())
                if isinstance(entry, list):
                    return entry.pop(0) if len(entry) > 1 else entry[0]
                return entry
        shas = list(heads)
        for _ in range(limit):
            if self.finished:
                return self.finish
            effect = self.pending()
            if isinstance(effect, RunCommand):
                r = answer(effect)
                self.finish_command(r.exit_code, r.stdout, r.stderr, duration=r.duration,
                                    timed_out=r.timed_out)
            elif isinstance(effect, Sleep):
                self.sleep_done()
            elif isinstance(effect, ReadGitHead):
                self.head(shas.pop(0) if shas else "a" * 40)
            elif isinstance(effect, ReadFile):
                queue = contents.get(effect.path, [None])
                self.file_read(queue.pop(0) if len(queue) > 1 else queue[0])
            elif isinstance(effect, CommitChanges | ListCommits | SquashCommits):
                self.answer_git(git(effect) if git is not None else default_git(effect))
            else:
                self.file_written()
        raise AssertionError("the run did not finish")

    # --- views ---------------------------------------------------------------------

    def of(self, kind: type) -> list[Any]:
        return [e for e in self.effects if isinstance(e, kind)]

    @property
    def commands(self) -> list[str]:
        return [command_text(e) for e in self.of(RunCommand)]

    @property
    def sleeps(self) -> list[float]:
        return [e.seconds for e in self.of(Sleep)]

    @property
    def printed(self) -> str:
        return "\n".join(e.text for e in self.of(Print))

    def logs(self, event_type: str | None = None) -> list[dict[str, Any]]:
        return [e.as_dict() for e in self.of(LogEvent)
                if event_type is None or e.event_type == event_type]

    @property
    def statuses(self) -> list[str]:
        """Status of every top-level step that ended, in order."""
        return [str(e["status"]) if "status" in e else "skipped"
                for e in self.logs() if e["event_type"] in STEP_END_EVENTS
                and e.get("top_level") is True]

    @property
    def checkpoints(self) -> list[dict[str, Any]]:
        return [e.checkpoint for e in self.of(SaveCheckpoint)]  # type: ignore[misc]

    @property
    def vars(self) -> dict[str, Any]:
        return {k: v.value for k, v in self.state.stepper.vars.items()}
