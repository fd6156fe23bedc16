"""Resource limits of MapReduce agents (spec 06 §9.4): worktree size and process memory.

``tree_size`` measures a worktree (``MeasureWorktree``); ``watch_memory`` samples the
resident memory of a command's process group (``RunCommand.memory_limit_mb`` and
``RunClaude.memory_limit_mb``) and returns what it saw once the limit is passed.  Memory
is read from ``/proc``; where there is none (not Linux) the limit cannot be watched and
``watch_memory`` waits forever.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import trio

MEMORY_SAMPLE_SECONDS = 5.0
_MB = 1024 * 1024


def tree_size(path: str | Path) -> int:
    """Bytes of the regular files under ``path``, without git's data (``.git`` at the top).

    Symbolic links are not followed; files that vanish while walking are skipped.
    Raises ``OSError`` when ``path`` itself cannot be read.
    """
    total = 0
    stack = [os.fspath(path)]
    top = True
    while stack:
        directory = stack.pop()
        try:
            entries = list(os.scandir(directory))
        except OSError:
            if top:
                raise
            continue
        for entry in entries:
            if top and entry.name == ".git":
                continue
            try:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
                elif entry.is_file(follow_symlinks=False):
                    total += entry.stat(follow_symlinks=False).st_size
            except OSError:
                continue
        top = False
    return total


def group_rss_bytes(pgid: int, proc: str = "/proc") -> int | None:
    """Resident memory of every process in process group ``pgid`` (None: no ``/proc``)."""
    groups = _rss_by_group(proc)
    return None if groups is None else groups.get(pgid, 0)


def _rss_by_group(proc: str) -> dict[int, int] | None:
    """Resident bytes by process group, from one pass over ``proc``."""
    try:
        names = os.listdir(proc)
    except OSError:
        return None
    page = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
    groups: dict[int, int] = {}
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(f"{proc}/{name}/stat", "rb") as handle:
                raw = handle.read()
        except OSError:
            continue
        # "pid (comm) state ppid pgrp … rss …": comm may hold spaces and parentheses
        fields = raw[raw.rfind(b")") + 2:].split()
        if len(fields) > 21:
            group = int(fields[2])
            groups[group] = groups.get(group, 0) + int(fields[21]) * page
    return groups


class _Sampler:
    """One pass over ``/proc`` serves every watch that samples within a second of it:
    with many agents running, each would otherwise read every process's ``stat``."""

    def __init__(self) -> None:
        self.taken = float("-inf")
        self.groups: dict[int, int] | None = None

    def rss(self, pgid: int) -> int | None:
        now = time.monotonic()
        if now - self.taken > 1.0:
            self.groups = _rss_by_group("/proc")
            self.taken = now
        return None if self.groups is None else self.groups.get(pgid, 0)


_SAMPLER = _Sampler()


def memory_message(rss: int, limit_mb: int) -> str:
    return (f"resident memory {rss / _MB:.1f} MB is above resource_limits.max_memory_mb "
            f"({limit_mb} MB); the command was stopped")


async def watch_memory(pgid: int, limit_mb: int,
                       interval: float = MEMORY_SAMPLE_SECONDS) -> str:
    """Sample the group every ``interval`` seconds; return the message once above the limit.

    Runs until cancelled when the limit is never passed (or cannot be measured).
    """
    while True:
        await trio.sleep(interval)
        rss = _SAMPLER.rss(pgid)
        if rss is None:
            await trio.sleep_forever()
        if rss is not None and rss > limit_mb * _MB:
            return memory_message(rss, limit_mb)
