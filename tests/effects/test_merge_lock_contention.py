"""Merging into the user's checkout while another git process holds one of git's lock
files (prodigy_effects/worktrees.py, ``_run_merge``), with real git.

Git makes the merge commit, cannot move the branch, and leaves ``MERGE_HEAD`` behind; the
next run into that checkout would then refuse ("a merge is in progress"). Prodigy aborts
the half-made merge and tries again; if the lock never goes, the merge fails and the
checkout is left as it was.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from prodigy_core.worktree_ops import BranchMerged, MergeBranch, MergeFailed
from prodigy_effects import worktrees
from prodigy_effects.worktrees import RealWorktrees
from tests.effects._git import git


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    git(root, "commit", "-q", "--allow-empty", "-m", "init")
    git(root, "checkout", "-q", "-b", "prodigy-work")
    (root / "work.txt").write_text("done\n")
    git(root, "add", "work.txt")
    git(root, "commit", "-q", "-m", "work")
    git(root, "checkout", "-q", "main")
    return root


def merge_effect(root: Path) -> MergeBranch:
    return MergeBranch(command_id=1, repo_root=str(root), source="prodigy-work",
                       target="main", message="Merge prodigy-work into main",
                       lock_path=str(root.parent / "git.lock"))


async def test_a_lock_held_for_a_moment_delays_the_merge(checkout: Path) -> None:
    held = checkout / ".git" / "refs" / "heads" / "main.lock"
    held.write_text("")
    before = git(checkout, "rev-parse", "HEAD")

    async def release() -> None:
        await trio.sleep(0.25)
        held.unlink()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(release)
        result = await RealWorktrees().merge(merge_effect(checkout))
    assert isinstance(result, BranchMerged), result
    assert git(checkout, "rev-parse", "HEAD^1") == before
    assert (checkout / "work.txt").read_text() == "done\n"
    assert not (checkout / ".git" / "MERGE_HEAD").exists()
    assert git(checkout, "status", "--porcelain") == ""


async def test_a_lock_that_stays_fails_the_merge_and_leaves_the_checkout_as_it_was(
        checkout: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(worktrees, "MERGE_LOCK_RETRIES", (0.05, 0.05))
    (checkout / ".git" / "refs" / "heads" / "main.lock").write_text("")
    before = git(checkout, "rev-parse", "HEAD")
    result = await RealWorktrees().merge(merge_effect(checkout))
    assert isinstance(result, MergeFailed) and result.code == "E4005", result
    assert "main.lock" in result.message
    assert git(checkout, "rev-parse", "HEAD") == before
    assert not (checkout / ".git" / "MERGE_HEAD").exists()
    assert not (checkout / "work.txt").exists()
    assert git(checkout, "status", "--porcelain", "--untracked-files=no") == ""
