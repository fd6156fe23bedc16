"""The dry-run environment: the same interpreter loop, performing nothing.

Commands are not started, files are not written, nothing is committed or stored.  Each command and
file write answers at once as if it had passed, marked ``planned`` so the core knows
its output is unknown (captures stay unresolved and show as ``${…}`` later in the
plan).  The console collects ``DescribeStep`` records and prints the plan.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any, TextIO

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
from prodigy_core.reprs import shows_fields
from prodigy_effects.env import Env, OutputSink, SecretRegistry


@shows_fields
@attrs.define(repr=False)
class PlannedRunner:
    def hurry(self) -> None:
        return None

    async def run(
        self, effect: RunCommand, cancel: trio.Event, on_output: OutputSink
    ) -> CommandFinished | CommandNotStarted:
        return CommandFinished(command_id=effect.command_id, exit_code=0, planned=True)


@shows_fields
@attrs.define(repr=False)
class PlannedFiles:
    async def write(self, effect: WriteFile) -> FileWritten | FileWriteFailed:
        return FileWritten(command_id=effect.command_id, path=effect.path, size=0, planned=True)

    async def read(self, effect: ReadFile) -> FileRead:
        return FileRead(command_id=effect.command_id, content=None, planned=True)


@shows_fields
@attrs.define(repr=False)
class PlannedGit:
    """Reads nothing and commits nothing; every answer is ``planned``."""

    async def head(self, cwd: str) -> str | None:
        return None

    async def commit_changes(self, effect: CommitChanges) -> ChangesCommitted | GitFailed:
        return ChangesCommitted(command_id=effect.command_id, sha=None, planned=True)

    async def list_commits(self, effect: ListCommits) -> CommitsListed | GitFailed:
        return CommitsListed(command_id=effect.command_id, head=None, planned=True)

    async def squash_commits(self, effect: SquashCommits) -> CommitsSquashed | GitFailed:
        return CommitsSquashed(command_id=effect.command_id, sha=None, planned=True)


@shows_fields
@attrs.define(repr=False)
class NoClock:
    def now_iso(self) -> str:
        return ""

    def monotonic(self) -> float:
        return 0.0

    async def sleep(self, seconds: float, cancel: trio.Event) -> None:
        return None


@shows_fields
@attrs.define(repr=False)
class NoStore:
    def save_checkpoint(self, doc: dict[str, Any]) -> None:
        return None

    def save_session(self, doc: dict[str, Any]) -> None:
        return None


@shows_fields
@attrs.define(repr=False)
class NoJournal:
    def append(self, event: dict[str, Any]) -> int:
        return 0

    def sync(self) -> None:
        return None

    @property
    def last_seq(self) -> int:
        return 0


@shows_fields
@attrs.define(repr=False)
class PlanConsole:
    """Collects the plan; prints it as text as it goes, or as JSON at the end."""

    out: TextIO = sys.stdout
    json_mode: bool = False
    mask: Any = attrs.field(default=lambda text: text)
    steps: list[Any] = attrs.field(factory=list)

    def show(self, effect: Print) -> None:
        return None

    def output_line(self, display: str, stream: str, line: str) -> None:
        return None

    def describe(self, info: Any) -> None:
        self.steps.append(info)
        if self.json_mode or not isinstance(info, dict):
            return
        lines = [f"  {info.get('index')}  {info.get('display')}"]
        lines.append(f"      command: {info.get('command')}")
        if info.get("argv"):
            lines.append(f"      argv:    {json.dumps(info.get('argv'))}")
        for key in ("timeout", "retry", "when"):
            if info.get(key) is not None:
                lines.append(f"      {key}: {info.get(key)}")
        for flag in ("commit_required", "auto_commit"):
            if info.get(flag):
                lines.append(f"      {flag}: true")
        if info.get("outputs"):
            lines.append(f"      outputs: {', '.join(info.get('outputs', []))}")
        if info.get("handlers"):
            lines.append(f"      handlers: {', '.join(info.get('handlers', []))}")
        for line in info.get("details") or ():
            lines.append(f"      {line}")
        plan = info.get("validate")
        if isinstance(plan, dict):
            source = f", result_file {plan['result_file']}" if plan.get("result_file") else ""
            lines.append(f"      validate: {'; '.join(plan.get('commands', []))} "
                         f"(threshold {plan.get('threshold')}%{source}; not run in a dry run)")
        self.out.write(self.mask("\n".join(lines)) + "\n")

    def plan_command(self, effect: RunCommand | WriteFile) -> None:
        return None


@shows_fields
@attrs.define(repr=False)
class PlannedClaude:
    """Claude is never started in a dry run; the plan shows its argv instead."""

    def hurry(self) -> None:
        return None

    async def run(self, effect: RunClaude, cancel: trio.Event,
                  on_line: Callable[[str], None]) -> ClaudeFinished:
        return ClaudeFinished(command_id=effect.command_id, exit_code=0, planned=True)


def DryRunEnv(console: PlanConsole, secrets: SecretRegistry | None = None) -> Env:
    """``secrets``: the plan's live masker (the console's ``mask``), extended by
    ``RegisterSecret``."""
    return Env(commands=PlannedRunner(), files=PlannedFiles(), git=PlannedGit(),
               clock=NoClock(), store=NoStore(), journal=NoJournal(), console=console,
               claude=PlannedClaude(), secrets=secrets)
