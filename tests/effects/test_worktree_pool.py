"""The pool performer against real git (spec 06 §9): recycling, rebuilding, releasing,
locking, sweeping — including the leftovers a crashed process leaves behind.

Each test has a repository with a session worktree (the base of agent worktrees) in a
temp dir, and drives ``RealWorktrees`` directly with the effects the job machine emits.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from prodigy_core.job_ops import AgentReleased, FinishAgent
from prodigy_core.worktree_ops import CreateWorktree, RemovePool, WorktreeCreated
from prodigy_effects.worktrees import RealWorktrees
from tests.effects._git import git


@pytest.fixture
def repo(tmp_path: Path) -> dict[str, Path]:
    root = tmp_path / "repo"
    root.mkdir()
    git(root, "init", "-q")
    git(root, "config", "user.email", "t@example.com")
    git(root, "config", "user.name", "Test")
    (root / ".gitignore").write_text("cache/\n")
    (root / "a.txt").write_text("a\n")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "init")
    session = tmp_path / "store" / "worktrees" / "repo" / "session-1"
    git(root, "worktree", "add", "-q", "-b", "prodigy-session-1", str(session))
    return {"root": root, "session": session, "agents": tmp_path / "store" / "worktrees" /
            "session-1", "pool": tmp_path / "store" / "worktrees" / "repo" / ".pool",
            "lock": tmp_path / "store" / "git.lock"}


def create(repo: dict[str, Path], path: Path, branch: str, **fields: object) -> CreateWorktree:
    values: dict[str, object] = {"command_id": 1, "repo_root": str(repo["session"]),
                                 "path": str(path), "branch": branch, "base_commit": "",
                                 "mode": "pool", "lock_path": str(repo["lock"])}
    values.update(fields)
    return CreateWorktree(**values)  # type: ignore[arg-type]


def finish(repo: dict[str, Path], path: Path | str, branch: str, base: str,
           **fields: object) -> FinishAgent:
    values: dict[str, object] = {"command_id": 2, "repo_root": str(repo["session"]),
                                 "path": str(path), "branch": branch, "base": base,
                                 "keep": True, "detach": True, "lock_path": str(repo["lock"])}
    values.update(fields)
    return FinishAgent(**values)  # type: ignore[arg-type]


def branches(root: Path) -> list[str]:
    return git(root, "branch", "--format=%(refname:short)").split()


async def test_a_released_pool_worktree_is_recycled_and_keeps_ignored_files(
        repo: dict[str, Path]) -> None:
    wt = RealWorktrees()
    pool0 = repo["agents"] / "pool-0"
    first = await wt.create(create(repo, pool0, "agent-0"))
    assert isinstance(first, WorktreeCreated) and first.created
    (pool0 / "cache").mkdir()
    (pool0 / "cache" / "dep").write_text("x")
    (pool0 / "junk.txt").write_text("untracked")
    (pool0 / "a.txt").write_text("changed\n")
    (pool0 / "b.txt").write_text("b\n")
    git(pool0, "add", "b.txt")
    git(pool0, "commit", "-qm", "agent 0")
    released = await wt.finish_agent(finish(repo, pool0, "agent-0", first.head or ""))
    assert isinstance(released, AgentReleased) and len(released.commits) == 1
    assert git(pool0, "rev-parse", "--abbrev-ref", "HEAD") == "HEAD"  # detached
    assert "agent-0" in branches(repo["root"])  # it has commits: kept for the merge
    # the session moves on; the next agent's worktree starts at the session's HEAD
    (repo["session"] / "s.txt").write_text("s\n")
    git(repo["session"], "add", "s.txt")
    git(repo["session"], "commit", "-qm", "session")
    second = await wt.create(create(repo, pool0, "agent-1"))
    assert isinstance(second, WorktreeCreated) and not second.created
    assert second.head == git(repo["session"], "rev-parse", "HEAD")
    assert git(pool0, "symbolic-ref", "--short", "HEAD") == "agent-1"
    assert (pool0 / "cache" / "dep").exists()  # ignored: survives
    assert not (pool0 / "junk.txt").exists() and not (pool0 / "b.txt").exists()
    assert (pool0 / "a.txt").read_text() == "a\n"
    # with clean_ignored, ignored files go too
    await wt.finish_agent(finish(repo, pool0, "agent-1", second.head or ""))
    third = await wt.create(create(repo, pool0, "agent-2", clean_ignored=True))
    assert isinstance(third, WorktreeCreated) and not third.created
    assert not (pool0 / "cache").exists()
    assert "agent-1" not in branches(repo["root"])  # no commits: deleted on release


async def test_fresh_broken_and_stale_leftovers_are_made_anew(repo: dict[str, Path]) -> None:
    wt = RealWorktrees()
    pool0, pool1 = repo["agents"] / "pool-0", repo["agents"] / "pool-1"
    # a crash left agent-7's branch checked out in pool-1; the rerun gets pool-0
    made = await wt.create(create(repo, pool1, "agent-7"))
    assert isinstance(made, WorktreeCreated)
    again = await wt.create(create(repo, pool0, "agent-7"))
    assert isinstance(again, WorktreeCreated) and again.created
    assert git(pool0, "symbolic-ref", "--short", "HEAD") == "agent-7"
    assert git(pool1, "rev-parse", "--abbrev-ref", "HEAD") == "HEAD"  # detached there
    # fresh: removed and made anew, ignored files and all
    (pool1 / "cache").mkdir()
    fresh = await wt.create(create(repo, pool1, "agent-8", fresh=True))
    assert isinstance(fresh, WorktreeCreated) and fresh.created
    assert not (pool1 / "cache").exists()
    # a directory that is no worktree any more (a crash during `git worktree add`)
    await wt.remove_pool(RemovePool(repo_root=str(repo["session"]),
                                    directory=str(repo["agents"]), lock_path=""))
    pool0.mkdir(parents=True)
    (pool0 / "half").write_text("")
    rebuilt = await wt.create(create(repo, pool0, "agent-9"))
    assert isinstance(rebuilt, WorktreeCreated) and rebuilt.created
    assert (pool0 / "a.txt").exists() and not (pool0 / "half").exists()


async def test_remove_pool_removes_every_pool_worktree_and_nothing_else(
        repo: dict[str, Path]) -> None:
    wt = RealWorktrees()
    for n in range(3):
        await wt.create(create(repo, repo["agents"] / f"pool-{n}", f"agent-{n}"))
    kept = repo["agents"] / "mapreduce-agent-x"
    git(repo["session"], "worktree", "add", "-q", "--detach", str(kept))
    (repo["agents"] / "pool-1" / "cache").mkdir()
    (repo["agents"] / "pool-1" / "dirty.txt").write_text("x")
    warnings = await wt.remove_pool(RemovePool(repo_root=str(repo["session"]),
                                               directory=str(repo["agents"]),
                                               lock_path=str(repo["lock"])))
    assert warnings == ()
    assert sorted(p.name for p in repo["agents"].iterdir()) == ["mapreduce-agent-x"]
    listed = git(repo["root"], "worktree", "list", "--porcelain")
    assert "pool-" not in listed and "mapreduce-agent-x" in listed


async def test_keep_failed_moves_the_worktree_out_of_the_pool(repo: dict[str, Path]) -> None:
    wt = RealWorktrees()
    pool0 = repo["agents"] / "pool-0"
    made = await wt.create(create(repo, pool0, "agent-0"))
    assert isinstance(made, WorktreeCreated)
    (pool0 / "evidence.txt").write_text("x")
    kept = repo["agents"] / "mapreduce-agent-0"
    released = await wt.finish_agent(finish(repo, pool0, "agent-0", made.head or "",
                                            detach=False, move_to=str(kept)))
    assert released.warning is None
    assert not pool0.exists() and (kept / "evidence.txt").exists()
    assert git(kept, "symbolic-ref", "--short", "HEAD") == "agent-0"


async def test_the_repository_pool_locks_recycles_and_sweeps(repo: dict[str, Path]) -> None:
    wt = RealWorktrees()
    pool = repo["pool"]

    def shared(branch: str, **fields: object) -> CreateWorktree:
        return create(repo, pool, branch, mode="shared_pool", owner="job-1", **fields)

    a = await wt.create(shared("agent-a"))
    b = await wt.create(shared("agent-b"))
    assert isinstance(a, WorktreeCreated) and isinstance(b, WorktreeCreated)
    assert (Path(a.path).name, Path(b.path).name) == ("pool-0", "pool-1")
    assert a.created and a.lock_file == f"{a.path}.lock" and Path(a.lock_file).exists()
    assert json.loads(Path(a.lock_file).read_text())["process_id"] == os.getpid()
    # released: unlocked, and the next agent gets it back, recycled
    (Path(a.path) / "cache").mkdir()
    await wt.finish_agent(finish(repo, a.path, "agent-a", a.head or "", lock_file=a.lock_file))
    assert not Path(a.lock_file).exists()
    c = await wt.create(shared("agent-c"))
    assert isinstance(c, WorktreeCreated) and c.path == a.path and not c.created
    assert (Path(c.path) / "cache").exists()
    # a lock whose process is gone is stale: that worktree is free again
    Path(b.lock_file).write_text(json.dumps({"process_id": 999999999,
                                             "hostname": os.uname().nodename}))
    d = await wt.create(shared("agent-d"))
    assert isinstance(d, WorktreeCreated) and d.path == b.path and not d.created
    # an unreadable lock is held: a new worktree is made
    Path(d.lock_file).write_text("{")
    e = await wt.create(shared("agent-e"))
    assert isinstance(e, WorktreeCreated) and Path(e.path).name == "pool-2" and e.created
    # too old when released: removed instead of going back
    meta = Path(f"{e.path}.json")
    meta.write_text(json.dumps({"created": time.time() - 100}))
    await wt.finish_agent(finish(repo, e.path, "agent-e", e.head or "", lock_file=e.lock_file,
                                 max_age_secs=50))
    assert not Path(e.path).exists() and not Path(e.lock_file).exists()
    # idle too long: swept when a worktree is taken (locked ones stay)
    await wt.finish_agent(finish(repo, c.path, "agent-c", c.head or "", lock_file=c.lock_file))
    Path(f"{c.path}.json").write_text(json.dumps({"created": time.time(),
                                                  "released": time.time() - 100}))
    f = await wt.create(shared("agent-f", idle_timeout_secs=10))
    assert isinstance(f, WorktreeCreated) and f.created and Path(f.path).name == "pool-0"
    assert Path(d.path).exists()  # its lock is unreadable: held, never swept
