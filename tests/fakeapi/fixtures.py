"""pytest fixtures: `fake_anthropic`, a running fake API plus helpers to run the real CLI.

Registered for the whole suite by `pytest_plugins` in tests/conftest.py.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

import pytest

from .cli import ClaudeRun, LiveClaude, claude_env, find_claude, run_claude
from .scenario import Script, Turn
from .server import FakeAnthropic, RecordedRequest


class FakeAnthropicFixture:
    """What `fake_anthropic` gives a test: the server, its script and log, the CLI's env."""

    def __init__(self, server: FakeAnthropic, home: Path) -> None:
        self.server = server
        self.home = home

    @property
    def url(self) -> str:
        return self.server.url

    def script(self, *turns: Turn) -> Script:
        """Each main-conversation request consumes the next turn; then directives apply."""
        return self.server.script(*turns)

    def add(self, *turns: Turn) -> None:
        self.server.add(*turns)

    @property
    def remaining(self) -> int:
        return self.server.remaining

    @property
    def requests(self) -> list[RecordedRequest]:
        return self.server.requests

    @property
    def main_requests(self) -> list[RecordedRequest]:
        return self.server.main_requests

    def of_kind(self, *kinds: str) -> list[RecordedRequest]:
        return self.server.of_kind(*kinds)

    def wait_for(self, count: int, kinds: Iterable[str] = ("main",), timeout: float = 30
                 ) -> list[RecordedRequest]:
        return self.server.wait_for(count, kinds, timeout)

    def summary(self) -> list[tuple[str, str, str, int]]:
        return self.server.summary()

    def env(self, base_env: Mapping[str, str] | None = None, *, max_retries: int | None = 2,
            **extra: str) -> dict[str, str]:
        """`claude_env` for this server with the test's private HOME, plus `extra` vars."""
        env = claude_env(os.environ if base_env is None else base_env, self.url,
                         home=self.home, max_retries=max_retries)
        env.update(extra)
        return env

    def run(self, prompt: str | None, cwd: Path, *extra_args: str,
            env: Mapping[str, str] | None = None, timeout: float = 60,
            input: str | None = None) -> ClaudeRun:
        """Run the real CLI to completion against this server (`prompt=None` + `input`: the
        prompt goes on standard input)."""
        return run_claude(prompt, cwd, env or self.env(), *extra_args, timeout=timeout,
                          input=input)

    def start(self, prompt: str, cwd: Path, *extra_args: str,
              env: Mapping[str, str] | None = None) -> LiveClaude:
        """Start the real CLI and read its output live (use as a context manager)."""
        return LiveClaude(prompt, cwd, env or self.env(), *extra_args)


@pytest.fixture
def claude_bin() -> str:
    """The Claude Code CLI under test (fails, never skips, when it is not installed)."""
    return find_claude()


@pytest.fixture
def fake_anthropic(tmp_path: Path) -> Iterator[FakeAnthropicFixture]:
    """A fake Anthropic API on 127.0.0.1, stopped (all threads joined) after the test."""
    with FakeAnthropic() as server:
        yield FakeAnthropicFixture(server, tmp_path / "claude-home")
