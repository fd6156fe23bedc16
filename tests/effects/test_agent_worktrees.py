"""Agent and session worktrees made and removed by Prodigy itself, checked against git.

``RealWorktrees`` makes an agent worktree by writing git's administrative files itself
(under the repository lock) and running ``git update-ref`` and ``git reset --hard``
outside it, and removes one by deleting its files and then its administrative directory
— what ``git worktree add``/``remove --force`` do.  These tests show that git sees the
result as its own, and that git is left to do it whenever it would do more.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from prodigy_core.job_ops import AgentReleased, FinishAgent
from prodigy_core.worktree_ops import (
    CreateWorktree,
    RemoveWorktree,
    WorktreeCreated,
    WorktreeFailed,
    WorktreeRemoved,
)
from prodigy_effects.worktrees import RealWorktrees
from tests.effects._git import git


@pytest.fixture
def repo(tmp_path: Path) -> dict[str, Path]:
    root = tmp_path / "repo"
    (root / "src").mkdir(parents=True)
    git(root, "init", "-q", "-b", "main")
    git(root, "config", "user.email", "t@example.com")
    git(root, "config", "user.name", "Test")
    (root / "a.txt").write_text("a\n")
    (root / "src" / "m.py").write_text("x = 1\n")
    os.chmod(root / "src" / "m.py", 0o755)
    git(root, "add", "-A")
    git(root, "commit", "-qm", "init")
    session = tmp_path / "store" / "worktrees" / "repo" / "session-1"
    git(root, "worktree", "add", "-q", "-b", "prodigy-session-1", str(session))
    return {"root": root, "session": session,
            "agents": tmp_path / "store" / "worktrees" / "session-1",
            "lock": tmp_path / "store" / "git.lock"}


def create(repo: dict[str, Path], path: Path, branch: str) -> CreateWorktree:
    return CreateWorktree(command_id=1, repo_root=str(repo["session"]), path=str(path),
                          branch=branch, base_commit="", mode="agent",
                          lock_path=str(repo["lock"]))


def finish(repo: dict[str, Path], path: Path, branch: str, base: str) -> FinishAgent:
    return FinishAgent(command_id=2, repo_root=str(repo["session"]), path=str(path),
                       branch=branch, base=base, lock_path=str(repo["lock"]))


def listed(root: Path) -> dict[str, str]:
    """``git worktree list``: path → branch (or "detached")."""
    out: dict[str, str] = {}
    for block in git(root, "worktree", "list", "--porcelain").split("\n\n"):
        fields = dict(line.split(" ", 1) if " " in line else (line, "")
                      for line in block.splitlines())
        out[fields["worktree"]] = fields.get("branch", "detached").removeprefix("refs/heads/")
    return out


def admin_names(common: Path, name: str) -> set[str]:
    return {str(p.relative_to(common / "worktrees" / name))
            for p in (common / "worktrees" / name).rglob("*") if p.is_file()}


async def test_an_agent_worktree_is_one_git_knows_and_is_removed_without_a_trace(
        repo: dict[str, Path]) -> None:
    wt = RealWorktrees()
    # the session has moved on: agents start at its HEAD
    (repo["session"] / "s.txt").write_text("s\n")
    git(repo["session"], "add", "s.txt")
    git(repo["session"], "commit", "-qm", "session work")
    path = repo["agents"] / "mapreduce-agent-job_agent_0"
    made = await wt.create(create(repo, path, "prodigy-agent-job_agent_0"))
    assert isinstance(made, WorktreeCreated)
    assert made.head == git(repo["session"], "rev-parse", "HEAD")
    assert listed(repo["root"])[str(path.resolve())] == "prodigy-agent-job_agent_0"
    assert git(path, "status", "--porcelain", "--untracked-files=all") == ""
    assert (path / "s.txt").read_text() == "s\n"
    assert os.access(path / "src" / "m.py", os.X_OK)  # modes checked out as git does
    assert git(repo["root"], "worktree", "prune", "--dry-run", "--verbose") == ""
    # the same administrative files as a worktree `git worktree add` makes
    reference = repo["agents"] / "made-by-git"
    git(repo["session"], "worktree", "add", "-q", "--no-track", "-B", "by-git",
        str(reference), "HEAD")
    common = repo["root"] / ".git"
    assert admin_names(common, path.name) == admin_names(common, reference.name)
    assert (common / "worktrees" / path.name / "commondir").read_text() == \
        (common / "worktrees" / reference.name / "commondir").read_text()
    # the agent works in it like in any worktree
    (path / "b.txt").write_text("b\n")
    git(path, "add", "b.txt")
    git(path, "commit", "-qm", "agent work")
    work = git(path, "rev-parse", "HEAD")
    released = await wt.finish_agent(finish(repo, path, "prodigy-agent-job_agent_0",
                                            made.head or ""))
    assert isinstance(released, AgentReleased) and released.warning is None
    assert released.commits == (work,) and released.files == ("b.txt",)
    assert not path.exists() and not (common / "worktrees" / path.name).exists()
    assert str(path.resolve()) not in listed(repo["root"])
    assert git(repo["root"], "worktree", "prune", "--dry-run", "--verbose") == ""
    assert git(repo["root"], "rev-parse", "prodigy-agent-job_agent_0") == work  # kept


async def test_git_makes_the_worktree_when_a_post_checkout_hook_would_run(
        repo: dict[str, Path]) -> None:
    hook = repo["root"] / ".git" / "hooks" / "post-checkout"
    hook.write_text("#!/bin/sh\necho ran > hook-ran\n")
    hook.chmod(0o755)
    path = repo["agents"] / "agent-hooked"
    made = await RealWorktrees().create(create(repo, path, "hooked"))
    assert isinstance(made, WorktreeCreated)
    assert (path / "hook-ran").read_text() == "ran\n"  # git ran the hook, as always


async def test_leftovers_of_a_crash_are_replaced(repo: dict[str, Path]) -> None:
    wt = RealWorktrees()
    path = repo["agents"] / "agent-again"
    first = await wt.create(create(repo, path, "again"))
    assert isinstance(first, WorktreeCreated)
    (path / "junk").write_text("half done")
    # a crash left the worktree: the rerun of the same agent replaces it
    again = await wt.create(create(repo, path, "again"))
    assert isinstance(again, WorktreeCreated) and not (path / "junk").exists()
    # a crash between deleting the files and the administrative directory
    for item in sorted(path.rglob("*"), reverse=True):
        item.unlink() if item.is_file() or item.is_symlink() else item.rmdir()
    path.rmdir()
    third = await wt.create(create(repo, path, "again"))
    assert isinstance(third, WorktreeCreated)
    assert listed(repo["root"])[str(path.resolve())] == "again"
    assert git(path, "status", "--porcelain") == ""
    # a kill -9 during the checkout: the worktree is still locked ("initializing")
    (repo["root"] / ".git" / "worktrees" / path.name / "locked").write_text("initializing")
    (repo["root"] / ".git" / "worktrees" / path.name / "index").unlink()
    fourth = await wt.create(create(repo, path, "again"))
    assert isinstance(fourth, WorktreeCreated)
    assert not (repo["root"] / ".git" / "worktrees" / path.name / "locked").exists()
    assert git(path, "status", "--porcelain") == ""


async def test_a_locked_agent_worktree_is_left_to_git_which_refuses(
        repo: dict[str, Path]) -> None:
    wt = RealWorktrees()
    path = repo["agents"] / "agent-locked"
    made = await wt.create(create(repo, path, "locked"))
    assert isinstance(made, WorktreeCreated)
    git(repo["root"], "worktree", "lock", "--reason", "inspecting", str(path))
    released = await wt.finish_agent(finish(repo, path, "locked", made.head or ""))
    assert isinstance(released, AgentReleased)
    assert released.warning is not None and "locked" in released.warning
    assert path.exists() and str(path.resolve()) in listed(repo["root"])


# --- session worktrees: made the same way; removed only when clean, branch only merged --


def session(repo: dict[str, Path], name: str) -> CreateWorktree:
    return CreateWorktree(command_id=3, repo_root=str(repo["root"]),
                          path=str(repo["agents"].parent / "repo" / name),
                          branch=f"prodigy-{name}",
                          base_commit=git(repo["root"], "rev-parse", "HEAD"), mode="create",
                          lock_path=str(repo["lock"]))


def remove(repo: dict[str, Path], made: CreateWorktree) -> RemoveWorktree:
    return RemoveWorktree(command_id=4, repo_root=made.repo_root, path=made.path,
                          branch=made.branch, target="main", lock_path=str(repo["lock"]))


async def test_a_session_worktree_is_made_and_removed_as_git_would(
        repo: dict[str, Path]) -> None:
    wt = RealWorktrees()
    effect = session(repo, "session-2")
    made = await wt.create(effect)
    assert isinstance(made, WorktreeCreated) and made.created
    assert made.head == effect.base_commit
    path = Path(effect.path)
    assert listed(repo["root"])[str(path.resolve())] == effect.branch
    assert git(path, "status", "--porcelain", "--untracked-files=all") == ""
    # the branch is new: a second session of the same name is refused, nothing left over
    again = await wt.create(session(repo, "session-2"))
    assert isinstance(again, WorktreeFailed)
    # clean, and its branch holds nothing the target lacks: both go
    gone = await wt.remove(remove(repo, effect))
    assert isinstance(gone, WorktreeRemoved) and gone.warning is None
    assert not path.exists() and str(path.resolve()) not in listed(repo["root"])
    assert effect.branch not in git(repo["root"], "branch", "--format=%(refname:short)")
    assert git(repo["root"], "worktree", "prune", "--dry-run", "--verbose") == ""


async def test_a_session_worktree_with_work_in_it_is_kept(repo: dict[str, Path]) -> None:
    wt = RealWorktrees()
    dirty, unmerged = session(repo, "dirty"), session(repo, "unmerged")
    for effect in (dirty, unmerged):
        assert isinstance(await wt.create(effect), WorktreeCreated)
    (Path(dirty.path) / "notes.txt").write_text("untracked\n")  # not committed
    (Path(unmerged.path) / "work.txt").write_text("w\n")
    git(unmerged.path, "add", "work.txt")
    git(unmerged.path, "commit", "-qm", "work the target lacks")
    kept = await wt.remove(remove(repo, dirty))
    assert kept.warning is not None and "untracked" in kept.warning
    assert (Path(dirty.path) / "notes.txt").exists()
    assert str(Path(dirty.path).resolve()) in listed(repo["root"])
    merged_not = await wt.remove(remove(repo, unmerged))
    assert merged_not.warning is not None and "not fully merged" in merged_not.warning
    assert not Path(unmerged.path).exists()  # the worktree was clean: removed
    assert git(repo["root"], "rev-parse", unmerged.branch)  # its unmerged branch stays


async def test_a_branch_still_checked_out_or_configured_is_left_to_git(
        repo: dict[str, Path]) -> None:
    wt = RealWorktrees()
    locked, tracked = session(repo, "locked"), session(repo, "tracked")
    for effect in (locked, tracked):
        assert isinstance(await wt.create(effect), WorktreeCreated)
    git(repo["root"], "worktree", "lock", locked.path)
    kept = await wt.remove(remove(repo, locked))
    assert kept.warning is not None and "locked" in kept.warning
    # the worktree stays, and so does the branch it has checked out (git branch -d refuses)
    assert git(locked.path, "symbolic-ref", "--short", "HEAD") == locked.branch
    assert git(repo["root"], "rev-parse", "--verify", "-q", locked.branch)
    # a branch with configuration: deleted by git, which removes the configuration too
    git(repo["root"], "config", f"branch.{tracked.branch}.remote", "origin")
    gone = await wt.remove(remove(repo, tracked))
    assert gone.warning is None
    assert tracked.branch not in git(repo["root"], "branch", "--format=%(refname:short)")
    config = subprocess.run(["git", "config", "--get", f"branch.{tracked.branch}.remote"],
                            cwd=repo["root"], capture_output=True, text=True)
    assert config.returncode == 1 and config.stdout == ""


async def test_a_failed_checkout_leaves_nothing_behind(repo: dict[str, Path]) -> None:
    (repo["root"] / ".gitattributes").write_text("*.txt filter=broken\n")
    git(repo["root"], "add", ".gitattributes")
    git(repo["root"], "commit", "-qm", "attributes")
    git(repo["root"], "config", "filter.broken.smudge", "false")
    git(repo["root"], "config", "filter.broken.required", "true")
    effect = session(repo, "broken")
    failed = await RealWorktrees().create(effect)
    assert isinstance(failed, WorktreeFailed) and failed.code == "E4003"
    assert not Path(effect.path).exists()
    assert str(Path(effect.path).resolve()) not in listed(repo["root"])
    assert not (repo["root"] / ".git" / "worktrees" / "broken").exists()
    assert effect.branch not in git(repo["root"], "branch", "--format=%(refname:short)")


async def test_a_worktree_path_that_is_not_utf8(repo: dict[str, Path]) -> None:
    wt = RealWorktrees()
    odd = repo["agents"] / os.fsdecode(b"caf\xe9")
    made = await wt.create(create(repo, odd / "agent-0", "agent-0"))
    assert isinstance(made, WorktreeCreated)
    assert git(odd / "agent-0", "status", "--porcelain") == ""
    released = await wt.finish_agent(finish(repo, odd / "agent-0", "agent-0",
                                            made.head or ""))
    assert isinstance(released, AgentReleased) and released.warning is None
    assert not (odd / "agent-0").exists()
    assert git(repo["root"], "worktree", "prune", "--dry-run", "--verbose") == ""


def test_worktree_ids_git_would_rename_are_left_to_git() -> None:
    from prodigy_effects.worktrees import _WORKTREE_ID

    assert _WORKTREE_ID.match("mapreduce-agent-mapreduce-20260101_000000_agent_3")
    assert _WORKTREE_ID.match("session-1.2")
    for name in ("x..y", "z.lock", ".hidden", "sp ace", ""):
        assert not _WORKTREE_ID.match(name), name
