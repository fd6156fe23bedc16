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

from prodigy_core.effects import Print, RunCommand, WriteFile
from prodigy_core.events import CommandFinished, CommandNotStarted, FileWriteFailed, FileWritten
from prodigy_effects.env import Env, OutputSink


@attrs.frozen(kw_only=True)
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


@attrs.define
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


@attrs.define
class MemoryFiles:
    files: dict[str, str] = attrs.field(factory=dict)

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


@attrs.define
class FakeGit:
    heads: list[str | None] = attrs.field(factory=list)
    current: str | None = "0" * 40

    async def head(self, cwd: str) -> str | None:
        if self.heads:
            self.current = self.heads.pop(0)
        return self.current


@attrs.define
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


@attrs.define
class MemoryStore:
    checkpoints: list[dict[str, Any]] = attrs.field(factory=list)
    sessions: list[dict[str, Any]] = attrs.field(factory=list)

    def save_checkpoint(self, doc: dict[str, Any]) -> None:
        self.checkpoints.append(json.loads(json.dumps(doc)))

    def save_session(self, doc: dict[str, Any]) -> None:
        self.sessions.append(json.loads(json.dumps(doc)))


@attrs.define
class RecordingJournal:
    events: list[dict[str, Any]] = attrs.field(factory=list)
    syncs: int = 0

    def append(self, event: dict[str, Any]) -> int:
        self.events.append(json.loads(json.dumps(event)))
        return len(self.events)

    def sync(self) -> None:
        self.syncs += 1

    @property
    def last_seq(self) -> int:
        return len(self.events)

    def types(self) -> list[str]:
        return [e["event_type"] for e in self.events]


@attrs.define
class RecordingConsole:
    lines: list[str] = attrs.field(factory=list)
    described: list[Any] = attrs.field(factory=list)

    def show(self, effect: Print) -> None:
        self.lines.append(effect.text)

    def output_line(self, display: str, stream: str, line: str) -> None:
        return None

    def describe(self, info: Any) -> None:
        self.described.append(info)

    def plan_command(self, effect: RunCommand | WriteFile) -> None:
        return None

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


def FakeEnv(
    script: Script | None = None,
    *,
    heads: list[str | None] | None = None,
    grace_seconds: float = 5.0,
) -> Env:
    """An ``Env`` whose parts are all in memory and scripted."""
    return Env(
        commands=ScriptedRunner(script=script if script is not None else {}),
        files=MemoryFiles(),
        git=FakeGit(heads=list(heads or [])),
        clock=TrioClock(),
        store=MemoryStore(),
        journal=RecordingJournal(),
        console=RecordingConsole(),
        grace_seconds=grace_seconds,
    )
