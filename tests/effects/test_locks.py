"""Session/job locks (spec 09 §4.7, 08 §5.2)."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from prodigy_effects.locks import LockHeld, acquire_lock, is_stale, pid_alive, read_lock
from prodigy_effects.storage import Storage, StorageError

NOW = datetime(2025, 3, 14, 9, 15, 2, 113000, tzinfo=UTC)
SID = "workflow-1710407702113"


def dead_pid() -> int:
    proc = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    pid = int(proc.stdout)
    assert not pid_alive(pid)
    return pid


def write_foreign_lock(storage: Storage, pid: int, host: str) -> Path:
    path = storage.lock_file(SID)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        json.dumps(
            {
                "job_id": SID,
                "process_id": pid,
                "hostname": host,
                "acquired_at": "2025-03-14T08:00:00.000Z",
            }
        )
    )
    return path


def test_acquire_writes_lock_content(tmp_path: Path) -> None:
    storage = Storage(tmp_path)
    handle = acquire_lock(storage, SID, now=NOW)
    assert handle.path == tmp_path / "resume_locks" / f"{SID}.lock"
    assert handle.warnings == ()
    content = json.loads(handle.path.read_text())
    assert content == {
        "job_id": SID,
        "process_id": os.getpid(),
        "hostname": socket.gethostname(),
        "acquired_at": "2025-03-14T09:15:02.113Z",
    }
    assert stat.S_IMODE(handle.path.stat().st_mode) == 0o600
    info = read_lock(handle.path)
    assert info is not None and info.process_id == os.getpid() and info.job_id == SID
    assert [p.name for p in handle.path.parent.iterdir()] == [f"{SID}.lock"]  # no temp left
    assert handle.release() is True
    assert not handle.path.exists()
    assert read_lock(handle.path) is None


def test_second_acquire_raises_lock_held_with_pid_and_host(tmp_path: Path) -> None:
    storage = Storage(tmp_path)
    with acquire_lock(storage, SID, now=NOW) as handle:
        with pytest.raises(LockHeld) as info:
            acquire_lock(storage, SID)
        err = info.value
        assert isinstance(err, StorageError)
        assert err.code == "E5004"
        assert err.message == (
            f"Resume already in progress for job {SID}\n"
            f"Lock held by: PID {os.getpid()} on {socket.gethostname()} "
            "(acquired 2025-03-14T09:15:02.113Z)\n"
            f"If no such process exists, delete {handle.path}"
        )
        assert str(err) == err.message
        assert handle.path.exists()
    assert not handle.path.exists()  # released by the context manager


def test_lock_of_a_live_process_on_this_host_is_held(tmp_path: Path) -> None:
    storage = Storage(tmp_path)
    write_foreign_lock(storage, 1, socket.gethostname())  # PID 1 is always alive
    with pytest.raises(LockHeld) as info:
        acquire_lock(storage, SID)
    assert "PID 1 on " in info.value.message


def test_stale_lock_of_a_finished_process_is_taken_with_w5002(tmp_path: Path) -> None:
    storage = Storage(tmp_path)
    pid = dead_pid()
    path = write_foreign_lock(storage, pid, socket.gethostname())
    info = read_lock(path)
    assert info is not None and is_stale(info)
    handle = acquire_lock(storage, SID)
    assert len(handle.warnings) == 1
    warning = handle.warnings[0]
    assert warning.startswith("W5002")
    assert str(pid) in warning and str(path) in warning
    assert json.loads(path.read_text())["process_id"] == os.getpid()
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]
    handle.release()


def test_dead_pid_on_another_host_is_not_stale(tmp_path: Path) -> None:
    storage = Storage(tmp_path)
    pid = dead_pid()
    path = write_foreign_lock(storage, pid, "some-other-host")
    with pytest.raises(LockHeld) as info:
        acquire_lock(storage, SID)
    assert f"PID {pid} on some-other-host" in info.value.message
    assert path.exists()


def test_unreadable_lock_is_held(tmp_path: Path) -> None:
    storage = Storage(tmp_path)
    path = storage.lock_file(SID)
    path.parent.mkdir(parents=True)
    path.write_text("")
    with pytest.raises(LockHeld) as info:
        acquire_lock(storage, SID)
    assert f"delete {path}" in info.value.message
    lock = read_lock(path)
    assert lock is not None and not lock.readable


def test_release_only_removes_our_own_lock(tmp_path: Path) -> None:
    storage = Storage(tmp_path)
    handle = acquire_lock(storage, SID)
    # Someone removed our lock and another process took it.
    handle.path.unlink()
    other = write_foreign_lock(storage, 1, "elsewhere")
    before = other.read_bytes()
    assert handle.release() is False
    assert other.read_bytes() == before
    assert handle.release() is False  # idempotent


def test_lock_under_a_file_gives_e5001(tmp_path: Path) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    with pytest.raises(StorageError) as info:
        acquire_lock(Storage(blocker), SID)
    assert info.value.code == "E5001"
    assert str(blocker) in info.value.message
