"""The per-repository git lock: mutual exclusion, and recovery from a killed holder."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import trio

from prodigy_effects.repolock import open_repo_lock, repo_lock

HOLD = """
import sys, time
from pathlib import Path
from prodigy_effects.repolock import repo_lock
with repo_lock(Path(sys.argv[1])):
    Path(sys.argv[2]).touch()
    time.sleep(60)
"""


def _holder(lock: Path, ready: Path) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(lock), str(ready)])
    deadline = time.monotonic() + 30
    while not ready.exists():
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.02)
    return proc


def test_a_held_lock_blocks_and_a_killed_holder_releases_it(tmp_path: Path) -> None:
    lock = tmp_path / "locks" / "git-repo.lock"
    proc = _holder(lock, tmp_path / "ready")
    try:
        try:
            with repo_lock(lock, timeout=0.3):
                raise AssertionError("the lock was taken while another process held it")
        except TimeoutError:
            pass
        proc.send_signal(signal.SIGKILL)  # a killed holder leaves the file behind
        proc.wait(timeout=10)
        assert lock.exists()
        with repo_lock(lock, timeout=5):
            assert '"process_id"' in lock.read_text()
    finally:
        proc.kill()


async def test_the_async_lock_serialises_tasks(tmp_path: Path) -> None:
    lock = tmp_path / "git-repo.lock"
    inside = 0
    most = 0

    async def worker() -> None:
        nonlocal inside, most
        async with open_repo_lock(lock):
            inside += 1
            most = max(most, inside)
            await trio.sleep(0.05)
            inside -= 1

    async with trio.open_nursery() as nursery:
        for _ in range(4):
            nursery.start_soon(worker)
    assert most == 1


async def test_waiting_for_the_lock_can_be_cancelled(tmp_path: Path) -> None:
    lock = tmp_path / "git-repo.lock"
    proc = _holder(lock, tmp_path / "ready")
    try:
        with trio.move_on_after(0.3) as scope:
            async with open_repo_lock(lock):
                raise AssertionError("taken while held")
        assert scope.cancelled_caught
    finally:
        proc.kill()
