"""The per-repository git lock (spec 06 §10, issue: several runs at once in one repository).

Git's own commands that change shared repository state (``worktree add``/``remove``/
``prune``, creating and deleting branches, merging into the user's branch) fail when two
of them run at once on one repository (``.git/config.lock``, ``index.lock``,
``.git/worktrees/…``).  Every such operation Prodigy performs goes through this lock:
an exclusive ``flock`` on ``<storage>/resume_locks/git-<repo>.lock``.

A lock held by a process that was killed (even with ``kill -9``) is released by the
kernel when the process dies, so a stale lock can never block later runs; the file only
records the last holder (pid, host, time) for messages.  Waiting is cooperative with
trio (a non-blocking attempt every 20 ms), so a cancelled run stops waiting at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path

import trio

from prodigy_effects.fsutil import ensure_dir

POLL_SECONDS = 0.02


def _open(path: Path) -> int:
    ensure_dir(path.parent)
    return os.open(path, os.O_RDWR | os.O_CREAT, 0o600)


_RECORD_SIZE = 256


def _record(fd: int) -> None:
    """Write the holder over the file's first 256 bytes, padded with spaces (valid JSON).

    A fixed size needs no ``ftruncate`` — a journaled metadata change that cost more than
    the rest of taking the lock, which happens several times per MapReduce agent.
    """
    info = {"process_id": os.getpid(), "hostname": socket.gethostname(),
            "acquired_at": datetime.now(UTC).isoformat().replace("+00:00", "Z")}
    data = json.dumps(info).encode()
    with contextlib.suppress(OSError):
        if len(data) >= _RECORD_SIZE or os.fstat(fd).st_size > _RECORD_SIZE:
            os.ftruncate(fd, 0)
        os.pwrite(fd, data.ljust(max(_RECORD_SIZE, len(data)), b" "), 0)


def _try(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


_LOCAL: trio.lowlevel.RunVar[dict[str, trio.Lock]] = trio.lowlevel.RunVar("repo_locks")


def _local(path: Path) -> trio.Lock:
    """The in-process lock for ``path`` in the current trio run.

    Tasks of one process queue here first (a released lock goes to the next task at once,
    without waiting for a poll); only the task at the head polls the ``flock`` shared with
    other processes.
    """
    try:
        locks = _LOCAL.get()
    except LookupError:
        locks = {}
        _LOCAL.set(locks)
    lock = locks.get(str(path))
    if lock is None:
        lock = locks[str(path)] = trio.Lock()
    return lock


@contextlib.asynccontextmanager
async def open_repo_lock(path: Path) -> AsyncIterator[None]:
    """Hold the repository lock at ``path`` for the body (trio, cancellable)."""
    async with _local(path):
        fd = _open(path)
        try:
            while not _try(fd):
                await trio.sleep(POLL_SECONDS)
            try:
                _record(fd)
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)


@contextlib.contextmanager
def repo_lock(path: Path, timeout: float | None = None) -> Iterator[None]:
    """Hold the repository lock at ``path`` (blocking; for synchronous CLI commands).

    With ``timeout``, raise ``TimeoutError`` when the lock is still held after it.
    """
    fd = _open(path)
    try:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not _try(fd):
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"the repository lock {path} is held by another process")
            time.sleep(POLL_SECONDS)
        try:
            _record(fd)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
