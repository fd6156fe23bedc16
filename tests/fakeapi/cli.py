"""Running the real `claude` CLI against the fake API: where it is, its environment, its stream."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
LOCAL_CLAUDE = REPO_ROOT / ".tools" / "node_modules" / ".bin" / "claude"
INSTALL_HINT = "install it with: npm install --prefix .tools @anthropic-ai/claude-code"
DUMMY_API_KEY = "sk-test-dummy"
# The CLI refuses --dangerously-skip-permissions as root; this works for root and non-root.
PERMISSION_ARGS = ("--permission-mode", "acceptEdits",
                   "--allowedTools", "Bash,Edit,Write,Read,Glob,Grep")
# Variables of the caller's environment that must not reach the CLI under test: real
# credentials, other providers, proxies (the CLI must talk to 127.0.0.1 only), telemetry.
_DROPPED_PREFIXES = ("ANTHROPIC_", "CLAUDE", "OTEL_", "AWS_BEARER_TOKEN_BEDROCK")
_DROPPED = frozenset({"HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy",
                      "all_proxy", "NODE_OPTIONS", "DISABLE_PROMPT_CACHING"})


def find_claude() -> str:
    """The Claude Code CLI under test: `$PRODIGY_TEST_CLAUDE`, else the project-local install.

    Fails the test (never skips) when it is missing.
    """
    configured = os.environ.get("PRODIGY_TEST_CLAUDE")
    if configured:
        if os.path.isfile(configured) and os.access(configured, os.X_OK):
            return configured
        pytest.fail(f"PRODIGY_TEST_CLAUDE={configured} is not an executable file", pytrace=False)
    if LOCAL_CLAUDE.exists() and os.access(LOCAL_CLAUDE, os.X_OK):
        return str(LOCAL_CLAUDE)
    pytest.fail(f"the Claude Code CLI is missing at {LOCAL_CLAUDE.relative_to(REPO_ROOT)}; "
                f"{INSTALL_HINT}", pytrace=False)


def claude_env(base_env: Mapping[str, str], url: str, *, home: Path | None = None,
               max_retries: int | None = 2) -> dict[str, str]:
    """The environment for the CLI to talk only to the fake API at `url`.

    `home` (created if needed; a fresh temp dir when None) becomes HOME and the CLI's config
    dir, so no user settings, credentials, commands or sessions leak in or out.
    `max_retries` bounds the CLI's API retries (its default is 10 with exponential backoff).
    """
    if home is None:
        home = Path(tempfile.mkdtemp(prefix="claude-home-"))
    home.mkdir(parents=True, exist_ok=True)
    for sub in (".claude", ".config", ".cache", ".local/share", ".local/state", "tmp"):
        (home / sub).mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in base_env.items()
           if k not in _DROPPED and not k.startswith(_DROPPED_PREFIXES)}
    env.update({
        "ANTHROPIC_BASE_URL": url,
        "ANTHROPIC_API_KEY": DUMMY_API_KEY,
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "DISABLE_AUTOUPDATER": "1",
        "DISABLE_TELEMETRY": "1",
        "DISABLE_ERROR_REPORTING": "1",
        "DISABLE_INSTALLATION_CHECKS": "1",
        "HOME": str(home),
        "CLAUDE_CONFIG_DIR": str(home / ".claude"),
        "CLAUDE_CODE_TMPDIR": str(home / "tmp"),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "XDG_CACHE_HOME": str(home / ".cache"),
        "XDG_DATA_HOME": str(home / ".local/share"),
        "XDG_STATE_HOME": str(home / ".local/state"),
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
    })
    if max_retries is not None:
        env["CLAUDE_CODE_MAX_RETRIES"] = str(max_retries)
    # The private HOME hides the user's git identity; tool calls that commit need one.
    env.setdefault("GIT_AUTHOR_NAME", "Fake Claude")
    env.setdefault("GIT_AUTHOR_EMAIL", "fake-claude@example.invalid")
    env.setdefault("GIT_COMMITTER_NAME", "Fake Claude")
    env.setdefault("GIT_COMMITTER_EMAIL", "fake-claude@example.invalid")
    return env


def claude_argv(prompt: str | None, *extra: str, claude: str | None = None) -> list[str]:
    """The command line Prodigy uses (spec 07 §1) with the root-safe permission arguments.

    With `prompt=None` the prompt is left out (Prodigy then writes it to standard input).
    """
    return [claude or find_claude(), "-p", *([] if prompt is None else [prompt]),
            "--output-format", "stream-json", "--verbose", *PERMISSION_ARGS, *extra]


def init_git_repo(path: Path) -> Path:
    """A git repository with one empty commit (identity given on the command line)."""
    path.mkdir(parents=True, exist_ok=True)
    ident = ["-c", "user.name=Test", "-c", "user.email=test@example.invalid"]
    subprocess.run(["git", "init", "-q", "-b", "main", str(path)], check=True)
    subprocess.run(["git", *ident, "-C", str(path), "commit", "-q", "--allow-empty", "-m",
                    "initial"], check=True)
    return path


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True,
                          text=True).stdout


def parse_stream(stdout: str) -> tuple[list[dict[str, Any]], list[str]]:
    """The stream-json messages, and the lines that are not JSON objects."""
    messages: list[dict[str, Any]] = []
    unparsed: list[str] = []
    for line in stdout.splitlines():
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except ValueError:
            unparsed.append(line)
            continue
        if isinstance(value, dict):
            messages.append(value)
        else:
            unparsed.append(line)
    return messages, unparsed


@dataclass
class ClaudeRun:
    """One finished CLI run and its parsed stream."""

    argv: list[str]
    returncode: int
    stdout: str
    stderr: str
    seconds: float
    messages: list[dict[str, Any]] = field(default_factory=list)
    unparsed: list[str] = field(default_factory=list)

    def of_type(self, type_: str, subtype: str | None = None) -> list[dict[str, Any]]:
        return [m for m in self.messages
                if m.get("type") == type_ and (subtype is None or m.get("subtype") == subtype)]

    @property
    def init(self) -> dict[str, Any]:
        found = self.of_type("system", "init")
        assert found, f"no system/init message:\n{self.describe()}"
        return found[0]

    @property
    def result(self) -> dict[str, Any]:
        found = self.of_type("result")
        assert found, f"no result message:\n{self.describe()}"
        return found[-1]

    def blocks(self, role: str, block_type: str) -> list[dict[str, Any]]:
        return [block for m in self.of_type(role)
                for block in (m.get("message", {}).get("content") or [])
                if isinstance(block, dict) and block.get("type") == block_type]

    @property
    def tool_uses(self) -> list[dict[str, Any]]:
        return self.blocks("assistant", "tool_use")

    @property
    def tool_results(self) -> list[dict[str, Any]]:
        return self.blocks("user", "tool_result")

    @property
    def assistant_texts(self) -> list[str]:
        return [b["text"] for b in self.blocks("assistant", "text")]

    def describe(self) -> str:
        return (f"argv: {self.argv[:3]}…\nexit: {self.returncode}\nstdout:\n{self.stdout[-4000:]}"
                f"\nstderr:\n{self.stderr[-2000:]}")


def run_claude(prompt: str | None, cwd: Path, env: Mapping[str, str], *extra: str,
               timeout: float = 60, input: str | None = None) -> ClaudeRun:
    """Run the CLI to completion and parse its stream.

    Standard input is closed, or carries `input` (use `prompt=None` to send the prompt there).
    """
    argv = claude_argv(prompt, *extra)
    start = time.monotonic()
    done = subprocess.run(argv, cwd=cwd, env=dict(env), capture_output=True, text=True,
                          timeout=timeout, input=input,
                          stdin=subprocess.DEVNULL if input is None else None)
    messages, unparsed = parse_stream(done.stdout)
    return ClaudeRun(argv, done.returncode, done.stdout, done.stderr,
                     time.monotonic() - start, messages, unparsed)


class LiveClaude:
    """A running CLI whose standard output is read line by line with timeouts.

    Started in its own process group; `kill()` (also on context exit) ends the group and
    joins the reader thread.
    """

    def __init__(self, prompt: str, cwd: Path, env: Mapping[str, str], *extra: str) -> None:
        self.argv = claude_argv(prompt, *extra)
        self.proc = subprocess.Popen(self.argv, cwd=cwd, env=dict(env), stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     start_new_session=True)
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        self._reader = threading.Thread(target=self._read, name="claude-stdout", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def next_line(self, timeout: float) -> str | None:
        """The next line of output; None at end of output; raises queue.Empty on timeout."""
        line = self.lines.get(timeout=timeout)
        if line is not None:
            self.seen.append(line)
        return line

    def next_message(self, timeout: float) -> dict[str, Any]:
        line = self.next_line(timeout)
        assert line is not None, "the CLI closed its output"
        value: dict[str, Any] = json.loads(line)
        return value

    def kill(self) -> int:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        code = self.proc.wait(timeout=10)
        self._reader.join(timeout=10)
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()
        return code

    def __enter__(self) -> LiveClaude:
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()


def make_command(repo: Path, name: str, body: str) -> Path:
    """Write a project slash command `.claude/commands/<name>.md`."""
    path = repo / ".claude" / "commands" / f"{name}.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(body, encoding="utf-8")
    return path

