"""``ConcludeMerge`` rollback with a real git repository: a rollback that git refuses is
reported as such, never as done (spec 06 §6.3)."""

from __future__ import annotations

from pathlib import Path

import trio

from prodigy_core.worktree_ops import ConcludeMerge, MergeConcluded
from prodigy_effects.worktrees import RealWorktrees
from tests.effects._git import git


def repo(tmp_path: Path) -> tuple[Path, str]:
    root = tmp_path / "repo"
    root.mkdir()
    git(root, "init", "-q")
    git(root, "config", "user.email", "t@example.com")
    git(root, "config", "user.name", "T")
    (root / "a.txt").write_text("one\n")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "pre")
    pre = git(root, "rev-parse", "HEAD")
    (root / "a.txt").write_text("resolved\n")
    git(root, "commit", "-qam", "resolution")
    return root, pre


def conclude(root: Path, pre: str) -> MergeConcluded:
    effect = ConcludeMerge(command_id=1, merge_dir=str(root), repo_root=str(root),
                           source="agent", pre=pre, action="rollback")
    return trio.run(RealWorktrees().conclude, effect)


def test_rollback_restores_pre(tmp_path: Path) -> None:
    root, pre = repo(tmp_path)
    done = conclude(root, pre)
    assert done.reason == "rolled back"
    assert git(root, "rev-parse", "HEAD") == pre


def test_a_refused_rollback_is_reported_with_the_way_out(tmp_path: Path) -> None:
    root, pre = repo(tmp_path)
    (root / "a.txt").write_text("left behind by verify\n")  # blocks `reset --keep`
    done = conclude(root, pre)
    reason = str(done.reason)
    assert done.accepted is False
    assert f"the rollback did not restore {pre[:12]}" in reason
    assert f"reset --keep {pre}" in reason
    assert (root / "a.txt").read_text() == "left behind by verify\n"  # nothing destroyed
