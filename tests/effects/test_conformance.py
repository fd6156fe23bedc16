"""One contract, two implementations: the fakes must behave like the real ones.

Each contract test runs against `ProcessRunner` (real `sh`) and `ScriptedRunner` (from
`FakeEnv`) scripted with what the real command does, so the fake stays honest about the
shape of what it reports: ids, exit codes, streams, timeouts, cancellation, live lines.
The git contract runs `RealGit` in a temporary repository and `FakeGit` in memory through
the same changes: commit with include/exclude, list the new commits and files, squash.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import trio

from prodigy_core.effects import CommitChanges, ListCommits, RunCommand, SquashCommits
from prodigy_core.events import ChangesCommitted, CommandFinished, CommitsListed, CommitsSquashed
from prodigy_effects.env import CommandRunner, Git
from prodigy_effects.fake import FakeGit, Scripted, ScriptedRunner
from prodigy_effects.production import ProcessRunner, RealGit

FAILING = "printf 'a\\nb\\n'; echo err >&2; exit 3"
HANGING = "sleep 30"

SCRIPT = {
    FAILING: Scripted(exit_code=3, stdout="a\nb\n", stderr="err\n"),
    HANGING: Scripted(hang=True),
    "true": Scripted(),
}

RUNNERS: dict[str, Callable[[], CommandRunner]] = {
    "real": lambda: ProcessRunner(grace_seconds=1.0),
    "fake": lambda: ScriptedRunner(script=dict(SCRIPT)),
}


def effect(text: str, cid: int = 7, timeout: float | None = None) -> RunCommand:
    return RunCommand(command_id=cid, argv=("sh", "-c", text), cwd=os.getcwd(),
                      env=tuple(os.environ.items()), timeout=timeout)


@pytest.fixture(params=sorted(RUNNERS))
def runner(request: pytest.FixtureRequest) -> CommandRunner:
    return RUNNERS[request.param]()


async def test_exit_code_and_streams(runner: CommandRunner) -> None:
    lines: list[tuple[str, str]] = []
    event = await runner.run(effect(FAILING), trio.Event(), lambda s, line: lines.append((s, line)))
    assert isinstance(event, CommandFinished)
    assert event.command_id == 7
    assert (event.exit_code, event.stdout) == (3, "a\nb\n")
    assert event.stderr == "err\n" and not event.timed_out and not event.cancelled
    assert ("stdout", "a") in lines and ("stdout", "b") in lines


async def test_timeout_reports_minus_one(runner: CommandRunner) -> None:
    started = trio.current_time()
    event = await runner.run(effect(HANGING, timeout=0.3), trio.Event(), lambda s, line: None)
    assert isinstance(event, CommandFinished)
    assert event.timed_out and event.exit_code == -1
    assert trio.current_time() - started >= 0.3


async def test_cancel_stops_the_command(runner: CommandRunner) -> None:
    cancel = trio.Event()
    result: list[CommandFinished] = []

    async def go() -> None:
        event = await runner.run(effect(HANGING), cancel, lambda s, line: None)
        assert isinstance(event, CommandFinished)
        result.append(event)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(go)
        await trio.sleep(0.2)
        cancel.set()
    assert result[0].cancelled and not result[0].timed_out
    assert result[0].exit_code != 0


async def test_success_is_exit_zero(runner: CommandRunner) -> None:
    event = await runner.run(effect("true", cid=1), trio.Event(), lambda s, line: None)
    assert isinstance(event, CommandFinished)
    assert event.command_id == 1 and event.exit_code == 0 and event.duration >= 0


# --- git: the in-memory FakeGit must answer like the real git -------------------------------


class Repo:
    """A repository seen through one ``Git``: what a step would do to it, and the effects."""

    def __init__(self, git: Git, cwd: str, touch: Callable[[str], None],
                 commit: Callable[[str, tuple[str, ...]], None]) -> None:
        self.git, self.cwd, self.touch, self.commit = git, cwd, touch, commit


def _real_repo(root: Path) -> Repo:
    def sh(*argv: str) -> None:
        subprocess.run(argv, cwd=root, check=True, capture_output=True)

    sh("git", "init", "-q")
    sh("git", "config", "user.email", "t@example.com")
    sh("git", "config", "user.name", "Test")
    (root / "README.md").write_text("demo\n")
    sh("git", "add", "-A")
    sh("git", "commit", "-qm", "init")

    def touch(path: str) -> None:
        target = root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(f"changed {path}\n")

    def commit(message: str, paths: tuple[str, ...]) -> None:
        for path in paths:
            touch(path)
        sh("git", "add", "--", *paths)
        sh("git", "commit", "-qm", message)

    return Repo(RealGit(), str(root), touch, commit)


def _fake_repo(root: Path) -> Repo:
    fake = FakeGit(tracked={"README.md"})

    def commit(message: str, paths: tuple[str, ...]) -> None:
        fake.commit(message, paths)

    return Repo(fake, str(root), fake.touch, commit)


@pytest.fixture(params=["real", "fake"])
def repo(request: pytest.FixtureRequest, tmp_path: Path) -> Repo:
    return (_real_repo if request.param == "real" else _fake_repo)(tmp_path)


async def test_git_commit_changes_selects_paths(repo: Repo) -> None:
    git = repo.git
    nothing = await git.commit_changes(CommitChanges(command_id=1, cwd=repo.cwd, message="m"))
    assert nothing == ChangesCommitted(command_id=1, sha=None)
    start = await git.head(repo.cwd)
    for path in ("a.txt", "b.tmp", "sub/c.tmp", "src/d.py", "README.md"):
        repo.touch(path)
    made = await git.commit_changes(CommitChanges(
        command_id=2, cwd=repo.cwd, message="chore: $(x) 'q'", exclude=("*.tmp",),
        include=("*.txt", "src/**")))
    assert isinstance(made, ChangesCommitted) and made.sha is not None
    assert made.files == ("a.txt", "src/d.py")
    assert await git.head(repo.cwd) == made.sha
    listed = await git.list_commits(ListCommits(command_id=3, cwd=repo.cwd, since=start))
    assert listed == CommitsListed(
        command_id=3, head=made.sha, commits=((made.sha, "chore: $(x) 'q'"),),
        files_added=("a.txt", "b.tmp", "src/d.py", "sub/c.tmp"), files_modified=("README.md",),
        insertions=3, deletions=1)  # untracked files count no lines


async def test_git_list_and_squash(repo: Repo) -> None:
    git = repo.git
    start = await git.head(repo.cwd)
    assert start is not None
    repo.commit("feat: one", ("one.md",))
    repo.commit("feat: two", ("specs/two.md",))
    listed = await git.list_commits(ListCommits(command_id=4, cwd=repo.cwd, since=start))
    assert isinstance(listed, CommitsListed)
    assert [m for _, m in listed.commits] == ["feat: one", "feat: two"]
    assert listed.files_added == ("one.md", "specs/two.md") and listed.files_modified == ()
    squashed = await git.squash_commits(SquashCommits(command_id=5, cwd=repo.cwd, since=start,
                                                      message="feat: both"))
    assert isinstance(squashed, CommitsSquashed) and squashed.sha is not None
    assert await git.head(repo.cwd) == squashed.sha
    after = await git.list_commits(ListCommits(command_id=6, cwd=repo.cwd, since=start))
    assert after == CommitsListed(command_id=6, head=squashed.sha,
                                  commits=((squashed.sha, "feat: both"),),
                                  files_added=("one.md", "specs/two.md"), insertions=2)


# --- files: ReadFile answers alike from disk and from memory ---------------------------------


@pytest.mark.parametrize("kind", ["real", "fake"])
async def test_read_file_contract(kind: str, tmp_path: Path) -> None:
    from prodigy_core.effects import ReadFile
    from prodigy_effects.fake import MemoryFiles
    from prodigy_effects.production import RealFiles

    files: RealFiles | MemoryFiles
    if kind == "real":
        (tmp_path / "sub").mkdir()
        (tmp_path / "sub" / "r.json").write_text('{"a": 1}', encoding="utf-8")
        files = RealFiles()
    else:
        files = MemoryFiles(files={f"{tmp_path}/sub/r.json": '{"a": 1}'})
    found = await files.read(ReadFile(command_id=3, cwd=str(tmp_path), path="sub/r.json"))
    assert (found.command_id, found.content, found.planned) == (3, '{"a": 1}', False)
    missing = await files.read(ReadFile(command_id=4, cwd=str(tmp_path), path="nope.json"))
    assert missing.command_id == 4 and missing.content is None and missing.message
