"""Pool worktrees of MapReduce agents with plain ``git`` (spec 06 §9).

Performs the pool parts of ``CreateWorktree`` (modes ``pool`` and ``shared_pool``),
``FinishAgent`` (kept worktrees: detach, move; unlock) and ``RemovePool`` for
``prodigy_effects.worktrees.RealWorktrees``.  Everything that changes worktrees or
branches runs while the caller holds the per-repository lock (``prodigy_effects.repolock``),
so git never sees two of these at once, and the lock files of the repository pool are
only ever created, read and removed under it.

The job pool (``pooled``) is ``<storage>/worktrees/<session id>/pool-<n>``; the core
says which ``n``.  Recycling a pool worktree: ``git checkout --detach``,
``git reset --hard``, ``git clean -fd`` (``-fdx`` with ``clean_ignored``), then
``git checkout -b <branch> <session HEAD>``.  Ignored files survive.  When a step of
that fails, the worktree is removed and made anew (a crash can leave anything behind).

The repository pool (``reuse``) is ``<storage>/worktrees/<repo>/.pool/pool-<n>``, with
``pool-<n>.lock`` (JSON naming the process holding it: pid, host, job) and
``pool-<n>.json`` (``created`` and ``released``, Unix seconds) next to each worktree.  A
lock naming a process of this host that is gone is stale: the worktree is free.  A
lock that cannot be read is treated as held.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import time
from pathlib import Path
from typing import Any

from prodigy_core.job_ops import FinishAgent
from prodigy_core.worktree_ops import CreateWorktree, RemovePool, WorktreeCreated
from prodigy_effects.fsutil import atomic_write_bytes, dumps_json, ensure_dir, read_json
from prodigy_effects.locks import pid_alive

POOL_NAME = re.compile(r"^pool-(\d+)$")


class PoolError(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


async def _git(cwd: str, *args: str, check: bool = True) -> Any:
    from prodigy_effects.worktrees import git

    return await git(cwd, *args, check=check)


def _text(result: Any) -> str:
    return str(result.stdout.decode("utf-8", "surrogateescape").strip())


def _message(result: Any) -> str:
    err = result.stderr.decode("utf-8", "replace").strip()
    return str(err or result.stdout.decode("utf-8", "replace").strip())


async def is_worktree(path: str) -> bool:
    """Is ``path`` the top of a git working tree?"""
    if not os.path.isdir(path) or not os.path.exists(os.path.join(path, ".git")):
        return False
    result = await _git(path, "rev-parse", "--show-toplevel", check=False)
    return result.returncode == 0 and os.path.realpath(_text(result)) == os.path.realpath(path)


async def drop(repo_root: str, path: str) -> str | None:
    """Remove the pool worktree at ``path`` (it is ours alone): a warning, or None."""
    problem: str | None = None
    if os.path.lexists(path):
        gone = await _git(repo_root, "worktree", "remove", "--force", path, check=False)
        if gone.returncode != 0 and os.path.lexists(path):
            try:
                shutil.rmtree(path)
            except OSError as exc:
                problem = f"{path}: {_message(gone) or exc}"
    await _git(repo_root, "worktree", "prune", check=False)
    return problem


async def _free_branch(repo_root: str, branch: str) -> None:
    """Delete a stale ``branch`` of an interrupted attempt, detaching the worktree that
    still has it checked out (a pool worktree a crash left behind)."""
    from prodigy_effects.worktrees import branch_exists, worktree_of_branch

    if not await branch_exists(repo_root, branch):
        return
    where = await worktree_of_branch(repo_root, branch)
    if where is not None and os.path.isdir(where):
        await _git(where, "checkout", "-q", "--detach", check=False)
    await _git(repo_root, "branch", "-D", "-q", branch, check=False)


async def _session_head(repo_root: str) -> str:
    result = await _git(repo_root, "rev-parse", "--verify", "-q", "HEAD", check=False)
    sha = _text(result)
    if result.returncode != 0 or not sha:
        raise PoolError(f"the session worktree {repo_root} has no HEAD")
    return sha


async def recycle(path: str, branch: str, base: str, *, clean_ignored: bool) -> bool:
    """Make the pool worktree at ``path`` ready for the next agent; false when a step
    failed (the caller then makes it anew)."""
    steps: list[tuple[str, ...]] = [
        ("checkout", "-q", "--detach"),
        ("reset", "-q", "--hard"),
        ("clean", "-fdxq" if clean_ignored else "-fdq"),
        ("checkout", "-q", "-b", branch, base),
    ]
    for args in steps:
        done = await _git(path, *args, check=False)
        if done.returncode != 0:
            return False
    return True


async def make(repo_root: str, path: str, branch: str, base: str) -> None:
    """A new worktree at ``path`` on a new ``branch`` at ``base``."""
    ensure_dir(Path(path).parent)
    added = await _git(repo_root, "worktree", "add", "-q", "-b", branch, path, base,
                       check=False)
    if added.returncode != 0:
        raise PoolError(_message(added) or f"git worktree add {path} failed")


async def take(effect: CreateWorktree, path: str) -> bool:
    """Prepare the pool worktree at ``path`` for ``effect.branch`` (lock held); true
    when it was made anew, false when an existing one was recycled."""
    base = await _session_head(effect.repo_root)
    await _free_branch(effect.repo_root, effect.branch)
    if not effect.fresh and await is_worktree(path) and \
            await recycle(path, effect.branch, base, clean_ignored=effect.clean_ignored):
        return False
    problem = await drop(effect.repo_root, path)
    if problem is not None:
        raise PoolError(f"cannot remove the old pool worktree: {problem}")
    await _free_branch(effect.repo_root, effect.branch)
    await make(effect.repo_root, path, effect.branch, base)
    return True


async def head(path: str) -> str | None:
    result = await _git(path, "rev-parse", "--verify", "-q", "HEAD", check=False)
    return _text(result) or None if result.returncode == 0 else None


async def keep(effect: FinishAgent) -> list[str]:
    """A kept agent worktree (lock held by the caller): detached, so that its branch is
    free to be merged and deleted, or moved out of its pool; the warnings."""
    if not effect.keep or not os.path.isdir(effect.path):
        return []
    if effect.move_to:
        if os.path.lexists(effect.move_to):  # a stale one of an interrupted attempt
            await drop(effect.repo_root, effect.move_to)
        ensure_dir(Path(effect.move_to).parent)
        moved = await _git(effect.repo_root, "worktree", "move", effect.path, effect.move_to,
                           check=False)
        return [] if moved.returncode == 0 else [
            f"cannot move {effect.path} to {effect.move_to}: {_message(moved)}"]
    if effect.detach:
        detached = await _git(effect.path, "checkout", "-q", "--detach", check=False)
        if detached.returncode != 0:
            return [f"cannot detach HEAD in {effect.path}: {_message(detached)}"]
    return []


# --- the repository pool (``reuse``) ------------------------------------------------


def _lock_of(path: str) -> str:
    return f"{path}.lock"


def _meta_of(path: str) -> str:
    return f"{path}.json"


def _read(path: str) -> dict[str, Any] | None:
    try:
        doc = read_json(Path(path))
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def held(lock: str) -> bool:
    """Is the pool worktree of the lock file ``lock`` in use by a live process?"""
    if not os.path.lexists(lock):
        return False
    info = _read(lock)
    if info is None:
        return True  # unreadable: keep away
    pid, host = info.get("process_id"), info.get("hostname")
    if host != socket.gethostname() or not isinstance(pid, int):
        return True
    return pid_alive(pid)


def take_lock(lock: str, owner: str) -> bool:
    """Take the lock file of a repository pool worktree (call under the repository lock)."""
    if held(lock):
        return False
    with contextlib.suppress(FileNotFoundError):
        os.unlink(lock)  # stale: its process is gone
    content = json.dumps({"job_id": owner, "process_id": os.getpid(),
                          "hostname": socket.gethostname(),
                          "acquired_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    try:
        fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(content)
        handle.flush()
        os.fsync(handle.fileno())
    return True


def release_lock(lock: str) -> None:
    """Remove our own lock (never another process's)."""
    info = _read(lock)
    if info is not None and info.get("process_id") == os.getpid() and \
            info.get("hostname") == socket.gethostname():
        with contextlib.suppress(FileNotFoundError):
            os.unlink(lock)


def _stamp(path: str, **times: float) -> None:
    doc = _read(_meta_of(path)) or {}
    doc.update(times)
    atomic_write_bytes(Path(_meta_of(path)), dumps_json(doc).encode("utf-8"))


def _members(directory: str) -> list[str]:
    try:
        names = [e.name for e in os.scandir(directory)
                 if e.is_dir(follow_symlinks=False) and POOL_NAME.match(e.name)]
    except OSError:
        return []
    return [os.path.join(directory, n) for n in
            sorted(names, key=lambda n: int(n.removeprefix("pool-")))]


def _expired(path: str, *, idle: float, age: float, now: float) -> bool:
    doc = _read(_meta_of(path)) or {}
    created = doc.get("created")
    released = doc.get("released")
    if age > 0 and isinstance(created, int | float) and now - created > age:
        return True
    return idle > 0 and isinstance(released, int | float) and now - released > idle


async def sweep(repo_root: str, directory: str, *, idle: float, age: float) -> list[str]:
    """Remove unlocked pool worktrees idle or old beyond the limits; warnings."""
    problems: list[str] = []
    now = time.time()
    for path in _members(directory):
        lock = _lock_of(path)
        if held(lock) or not _expired(path, idle=idle, age=age, now=now):
            continue
        problem = await drop(repo_root, path)
        if problem is not None:
            problems.append(problem)
            continue
        for extra in (lock, _meta_of(path)):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(extra)
    return problems


async def take_shared(effect: CreateWorktree) -> WorktreeCreated:
    """A worktree of the repository pool in ``effect.path``, locked for this process."""
    directory = effect.path
    ensure_dir(Path(directory))
    await sweep(effect.repo_root, directory, idle=effect.idle_timeout_secs,
                age=effect.max_age_secs)
    members = _members(directory)
    chosen: str | None = None
    for path in members:
        if take_lock(_lock_of(path), effect.owner):
            chosen = path
            break
    if chosen is None:
        taken = {os.path.basename(p) for p in members}
        n = 0
        while f"pool-{n}" in taken or os.path.lexists(os.path.join(directory, f"pool-{n}.lock")):
            n += 1
        chosen = os.path.join(directory, f"pool-{n}")
        if not take_lock(_lock_of(chosen), effect.owner):
            raise PoolError(f"cannot lock the pool worktree {chosen}")
    taken = False
    try:
        made = await take(effect, chosen)
        if made:
            _stamp(chosen, created=time.time())
        taken = True
    finally:
        if not taken:  # nobody will use it: the lock goes
            release_lock(_lock_of(chosen))
    return WorktreeCreated(command_id=effect.command_id, path=chosen, branch=effect.branch,
                           head=await head(chosen), created=made, lock_file=_lock_of(chosen))


async def give_back(effect: FinishAgent) -> list[str]:
    """Return a repository pool worktree (lock held by the caller): too old → removed;
    then unlocked, and the pool's idle worktrees swept."""
    problems: list[str] = []
    path, lock = effect.path, effect.lock_file
    now = time.time()
    if effect.move_to or not os.path.isdir(path):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(_meta_of(path))
    elif _expired(path, idle=0, age=effect.max_age_secs, now=now):
        problem = await drop(effect.repo_root, path)
        if problem is not None:
            problems.append(problem)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(_meta_of(path))
    else:
        _stamp(path, released=now)
    release_lock(lock)
    problems += await sweep(effect.repo_root, os.path.dirname(path),
                            idle=effect.idle_timeout_secs, age=effect.max_age_secs)
    return problems


async def remove_pool(effect: RemovePool) -> list[str]:
    """Every ``pool-<n>`` worktree in ``effect.directory`` goes (lock held by the caller)."""
    problems: list[str] = []
    for path in _members(effect.directory):
        problem = await drop(effect.repo_root, path)
        if problem is not None:
            problems.append(problem)
    return problems
