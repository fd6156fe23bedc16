"""Git state read without running git (fewer processes per agent), checked against git."""

from __future__ import annotations

import subprocess
from pathlib import Path

import trio

from prodigy_effects.worktrees import _merged_head, loose_head


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True,
                          text=True).stdout.strip()


def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    git(root, "config", "user.email", "t@example.com")
    git(root, "config", "user.name", "T")
    git(root, "commit", "-q", "--allow-empty", "-m", "one")
    return root


def test_loose_head_agrees_with_git_or_gives_up(tmp_path: Path) -> None:
    root = repo(tmp_path)
    wt = tmp_path / "wt"
    git(root, "worktree", "add", "-q", "-B", "agent", str(wt), "HEAD")
    assert loose_head(str(root)) == git(root, "rev-parse", "HEAD")
    git(wt, "commit", "-q", "--allow-empty", "-m", "two")
    assert loose_head(str(wt)) == git(wt, "rev-parse", "HEAD") != loose_head(str(root))
    git(root, "pack-refs", "--all")  # refs only in packed-refs: ask git instead
    assert loose_head(str(wt)) is None
    git(wt, "checkout", "-q", "--detach")
    assert loose_head(str(wt)) is None
    assert loose_head(str(tmp_path / "nowhere")) is None


def test_merged_head_is_the_merge_commit_or_a_verified_ancestor(tmp_path: Path) -> None:
    root = repo(tmp_path)
    git(root, "checkout", "-q", "-b", "topic")
    git(root, "commit", "-q", "--allow-empty", "-m", "topic work")
    git(root, "checkout", "-q", "main")
    git(root, "merge", "-q", "--no-ff", "-m", "merge", "topic")
    assert trio.run(_merged_head, str(root), "topic") == git(root, "rev-parse", "HEAD")
    # already merged: no new merge commit, but the source is an ancestor
    git(root, "commit", "-q", "--allow-empty", "-m", "later")
    assert trio.run(_merged_head, str(root), "topic") == git(root, "rev-parse", "HEAD")
