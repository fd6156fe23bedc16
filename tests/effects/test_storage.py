"""Storage layer: atomic writes, versioned checkpoints and session records (spec 09)."""

from __future__ import annotations

import errno
import json
import os
import random
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

import prodigy_effects.fsutil as fsutil
from prodigy_effects.fsutil import atomic_write_json, read_json, rfc3339_ms
from prodigy_effects.storage import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_FORMAT_VERSION,
    MIGRATIONS,
    SESSION_FORMAT,
    Storage,
    StorageError,
    resolve_storage_root,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
SID = "workflow-1710407702113"


def checkpoint_doc(**extra: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "workflow_id": SID,
        "version": 1,
        "timestamp": "2025-03-14T09:15:02.113Z",
        "workflow_name": "fix",
        "workflow_path": "/repo/fix.yml",
        "workflow_hash": "9f2c",
        "total_steps": 4,
        "execution_state": {"current_step_index": 2, "total_steps": 4, "status": "Running"},
        "completed_steps": [],
        "variable_state": {},
        "mapreduce_state": None,
        "session_id": SID,
        "inputs": {"args": [], "map_patterns": [], "current_input_index": 0},
        "profile": None,
        "parameters": {},
        "foreach_state": None,
        "nested_state": {},
        "last_event_seq": 57,
    }
    doc.update(extra)
    return doc


def session_doc(session_id: str, started_at: str, repo_path: str = "/repo/shop") -> dict[str, Any]:
    return {
        "id": session_id,
        "session_type": "Workflow",
        "status": "Running",
        "started_at": started_at,
        "updated_at": started_at,
        "completed_at": None,
        "repo_name": "shop",
        "repo_path": repo_path,
    }


def no_temp_files(directory: Path) -> bool:
    return not [p for p in directory.iterdir() if p.name.endswith(".tmp")]


# ----------------------------------------------------------------------------- root


def test_resolve_storage_root_precedence(tmp_path: Path) -> None:
    home = tmp_path / "home"
    assert resolve_storage_root({}, home) == home / ".prodigy"
    assert resolve_storage_root({"PRODIGY_STORAGE_DIR": "/b"}, home) == Path("/b")
    env = {"PRODIGY_HOME": "/a", "PRODIGY_STORAGE_DIR": "/b"}
    assert resolve_storage_root(env, home) == Path("/a")
    assert resolve_storage_root({"PRODIGY_HOME": ""}, home) == home / ".prodigy"


def test_ensure_creates_root_with_mode_0700(tmp_path: Path) -> None:
    root = tmp_path / "a" / "b" / "storage"
    Storage(root).ensure()
    assert root.is_dir()
    assert stat.S_IMODE(root.stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "a").stat().st_mode) == 0o700
    assert list(root.iterdir()) == []  # the write probe is cleaned up


def test_ensure_fails_with_e5001_when_parent_is_a_file(tmp_path: Path) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("not a directory")
    root = blocker / "storage"
    with pytest.raises(StorageError) as info:
        Storage(root).ensure()
    err = info.value
    assert err.code == "E5001"
    assert str(root) in err.message
    assert err.path == str(root)
    assert err.hint is not None and "PRODIGY_HOME" in err.hint


def test_ensure_fails_with_e5001_when_root_is_a_file(tmp_path: Path) -> None:
    root = tmp_path / "storage"
    root.write_text("oops")
    with pytest.raises(StorageError) as info:
        Storage(root).ensure()
    assert info.value.code == "E5001"
    assert str(root) in str(info.value)


def test_ensure_fails_in_an_unwritable_proc_directory() -> None:
    root = Path("/proc/self/prodigy-storage")
    with pytest.raises(StorageError) as info:
        Storage(root).ensure()
    assert info.value.code == "E5001"
    assert str(root) in info.value.message


def test_write_into_a_storage_root_under_a_file_gives_e5001(tmp_path: Path) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    storage = Storage(blocker / "storage")
    with pytest.raises(StorageError) as info:
        storage.write_checkpoint(SID, checkpoint_doc())
    assert info.value.code == "E5001"
    assert str(storage.checkpoint_file(SID)) in info.value.message


def test_disk_full_gives_e5001_and_leaves_old_content(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = Storage(tmp_path)
    path = storage.write_checkpoint(SID, checkpoint_doc(last_event_seq=1))
    before = path.read_bytes()

    def full(fd: int, data: Any) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(fsutil.os, "write", full)
    with pytest.raises(StorageError) as info:
        storage.write_checkpoint(SID, checkpoint_doc(last_event_seq=2))
    monkeypatch.undo()
    assert info.value.code == "E5001"
    assert "no space left on device" in info.value.message
    assert str(path) in info.value.message
    assert path.read_bytes() == before
    assert no_temp_files(path.parent)


# ----------------------------------------------------------------------------- fsutil


def test_atomic_write_json_format_and_modes(tmp_path: Path) -> None:
    target = tmp_path / "new" / "dir" / "doc.json"
    atomic_write_json(target, {"b": "é", "a": [1, 2]})
    text = target.read_text(encoding="utf-8")
    # top-level keys one per line with 2-space indent; short scalar lists stay compact
    assert text == '{\n  "b": "é",\n  "a": [1, 2]\n}\n'
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert stat.S_IMODE(target.parent.stat().st_mode) == 0o700
    assert read_json(target) == {"b": "é", "a": [1, 2]}
    assert no_temp_files(target.parent)


def test_rfc3339_ms() -> None:
    from datetime import UTC, datetime, timedelta, timezone

    moment = datetime(2025, 3, 14, 10, 15, 2, 113999, tzinfo=timezone(timedelta(hours=1)))
    assert rfc3339_ms(moment) == "2025-03-14T09:15:02.113Z"
    assert rfc3339_ms(datetime(2025, 1, 1, tzinfo=UTC)) == "2025-01-01T00:00:00.000Z"


FAULT_SCRIPT = textwrap.dedent(
    """
    import sys
    from pathlib import Path

    def make_doc(n):
        return {
            "workflow_id": "sess", "version": 1, "n": n,
            "completed_steps": [
                {"step_index": k, "success": True, "status": "succeeded",
                 "output": f"output of step {k} in version {n} " * 20}
                for k in range(3000)
            ],
        }

    if __name__ == "__main__":
        from prodigy_effects.storage import Storage
        storage = Storage(Path(sys.argv[1]))
        n = int(sys.argv[2])
        while True:
            n += 1
            storage.write_checkpoint("sess", make_doc(n))
            if n == int(sys.argv[2]) + 1:
                print("ready", flush=True)
    """
)


def test_sigkill_during_checkpoint_writes_never_leaves_a_partial_file(tmp_path: Path) -> None:
    script = tmp_path / "writer.py"
    script.write_text(FAULT_SCRIPT)
    namespace: dict[str, Any] = {}
    exec(compile(FAULT_SCRIPT, str(script), "exec"), namespace)
    make_doc = namespace["make_doc"]
    assert len(json.dumps(make_doc(1))) > 1_000_000  # big enough to be caught mid-write

    root = tmp_path / "storage"
    storage = Storage(root)
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    rng = random.Random(20250314)
    last = 0
    for _ in range(5):
        proc = subprocess.Popen(
            [sys.executable, str(script), str(root), str(last)],
            stdout=subprocess.PIPE,
            env=env,
        )
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == b"ready"
        time.sleep(rng.uniform(0.0, 0.3))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()

        path = storage.checkpoint_file("sess")
        on_disk = json.loads(path.read_text(encoding="utf-8"))  # never partial
        n = on_disk["n"]
        assert n > last
        expected = {
            "format": CHECKPOINT_FORMAT,
            "format_version": CHECKPOINT_FORMAT_VERSION,
            **make_doc(n),
        }
        assert on_disk == expected
        doc, warnings = storage.read_checkpoint("sess")
        assert warnings == []
        assert doc == expected
        prev_path = path.with_name(path.name + ".prev")
        if prev_path.exists():  # killed before the second write of the first run: none yet
            prev = json.loads(prev_path.read_text(encoding="utf-8"))
            assert prev["n"] <= n  # equal when killed between keeping .prev and the write
            assert prev == {**expected, **make_doc(prev["n"])}
        last = n


# ----------------------------------------------------------------------------- sessions


def test_session_round_trip_is_stamped_and_masked(tmp_path: Path) -> None:
    storage = Storage(tmp_path, mask=lambda text: text.replace("hunter2", "***REDACTED***"))
    doc = session_doc(SID, "2025-03-14T09:15:02.113Z")
    doc["error"] = "password hunter2 rejected"
    path = storage.write_session(doc)
    assert path == tmp_path / "sessions" / f"{SID}.json"
    assert "hunter2" not in path.read_text()
    assert "format" not in doc  # the caller's dict is not modified
    loaded = storage.read_session(SID)
    assert loaded["format"] == SESSION_FORMAT
    assert loaded["format_version"] == 1
    assert loaded["error"] == "password ***REDACTED*** rejected"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_read_missing_session_gives_e5005_with_hint(tmp_path: Path) -> None:
    with pytest.raises(StorageError) as info:
        Storage(tmp_path).read_session("nope")
    assert info.value.code == "E5005"
    assert "session nope not found" in info.value.message
    assert info.value.hint is not None and "prodigy sessions ls" in info.value.hint


def test_original_tool_session_record_is_migrated(tmp_path: Path) -> None:
    storage = Storage(tmp_path)
    legacy = {
        "id": "s1",
        "session_type": "Workflow",
        "status": "Completed",
        "started_at": "2024-01-01T00:00:00Z",
        "unknown_field": 42,
    }
    atomic_write_json(storage.session_file("s1"), legacy)
    loaded = storage.read_session("s1")
    assert loaded["format"] == SESSION_FORMAT and loaded["format_version"] == 1
    assert loaded["unknown_field"] == 42
    assert loaded["repo_path"] is None
    assert loaded["merge"] == {"target": None, "merged": False, "reason": None}
    assert read_json(storage.session_file("s1")) == legacy  # reading never rewrites


def test_list_sessions_newest_first_filtered_and_tolerant(tmp_path: Path) -> None:
    storage = Storage(tmp_path)
    storage.write_session(session_doc("s-old", "2025-01-01T00:00:00.000Z"))
    storage.write_session(session_doc("s-new", "2025-03-01T00:00:00.000Z"))
    storage.write_session(session_doc("s-mid", "2025-02-01T00:00:00.000Z"))
    storage.write_session(session_doc("s-other", "2025-04-01T00:00:00.000Z", "/elsewhere/shop"))
    (tmp_path / "sessions" / "broken.json").write_text('{"id": "broken", ')
    (tmp_path / "sessions" / "future.json").write_text(
        json.dumps({"format": SESSION_FORMAT, "format_version": 99, "id": "future"})
    )
    (tmp_path / "sessions" / ".s-x.json.123.tmp").write_text("{")

    ids = [d["id"] for d in storage.list_sessions("/repo/shop")]
    assert ids == ["s-new", "s-mid", "s-old"]
    assert len(storage.warnings) == 2
    assert any("broken.json" in w and w.startswith("W5003") for w in storage.warnings)
    assert any("future.json" in w and "newer Prodigy" in w for w in storage.warnings)

    everything, warnings = storage.scan_sessions()
    assert [d["id"] for d in everything] == ["s-other", "s-new", "s-mid", "s-old"]
    assert len(warnings) == 2
    assert Storage(tmp_path / "empty").list_sessions() == []


def test_find_session_by_id_and_prefix(tmp_path: Path) -> None:
    storage = Storage(tmp_path)
    storage.write_session(session_doc("workflow-111", "2025-01-01T00:00:00.000Z"))
    storage.write_session(session_doc("workflow-1112", "2025-01-01T00:00:00.000Z"))
    storage.write_session(session_doc("mapreduce-9", "2025-01-01T00:00:00.000Z"))
    assert storage.find_session("workflow-111")["id"] == "workflow-111"  # exact wins
    assert storage.find_session("map")["id"] == "mapreduce-9"
    with pytest.raises(StorageError) as ambiguous:
        storage.find_session("workflow-")
    assert ambiguous.value.code == "E5005"
    assert "ambiguous" in ambiguous.value.message
    assert "workflow-1112" in ambiguous.value.message
    with pytest.raises(StorageError) as missing:
        storage.find_session("zzz")
    assert missing.value.code == "E5005"
    with pytest.raises(StorageError) as traversal:
        storage.find_session("../etc")
    assert traversal.value.code == "E5005"


def test_paths_follow_the_layout(tmp_path: Path) -> None:
    storage = Storage(tmp_path)
    assert storage.session_file("s") == tmp_path / "sessions/s.json"
    assert storage.state_dir("s") == tmp_path / "state/s"
    assert storage.checkpoint_file("s") == tmp_path / "state/s/checkpoints/s.checkpoint.json"
    assert storage.snapshot_file("s") == tmp_path / "state/s/workflow.snapshot.json"
    assert storage.events_dir("shop", "s") == tmp_path / "events/shop/s"
    assert storage.lock_file("s") == tmp_path / "resume_locks/s.lock"
    assert storage.transcripts_dir() == tmp_path / "logs/claude-streaming"
    with pytest.raises(ValueError):
        storage.session_file("../x")


# ----------------------------------------------------------------------------- checkpoints


def test_checkpoint_round_trip_and_stamp(tmp_path: Path) -> None:
    storage = Storage(tmp_path)
    doc = checkpoint_doc()
    path = storage.write_checkpoint(SID, doc)
    assert path == tmp_path / "state" / SID / "checkpoints" / f"{SID}.checkpoint.json"
    assert "format" not in doc
    on_disk = json.loads(path.read_text())
    assert list(on_disk)[:2] == ["format", "format_version"]
    assert on_disk["format"] == "prodigy.checkpoint"
    assert on_disk["format_version"] == 1
    assert on_disk["version"] == 1  # the spec's own field is kept
    loaded, warnings = storage.read_checkpoint(SID)
    assert warnings == []
    assert loaded == {"format": "prodigy.checkpoint", "format_version": 1, **doc}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


def test_second_write_keeps_previous_version(tmp_path: Path) -> None:
    storage = Storage(tmp_path)
    path = storage.write_checkpoint(SID, checkpoint_doc(last_event_seq=1))
    prev = path.with_name(path.name + ".prev")
    assert not prev.exists()
    storage.write_checkpoint(SID, checkpoint_doc(last_event_seq=2))
    assert json.loads(prev.read_text())["last_event_seq"] == 1
    assert json.loads(path.read_text())["last_event_seq"] == 2
    assert no_temp_files(path.parent)


def test_corrupt_checkpoint_falls_back_to_prev_with_w5001(tmp_path: Path) -> None:
    storage = Storage(tmp_path)
    storage.write_checkpoint(SID, checkpoint_doc(last_event_seq=1))
    path = storage.write_checkpoint(SID, checkpoint_doc(last_event_seq=2))
    path.write_text('{\n  "workflow_id": "x",\n  "version": \n')
    doc, warnings = storage.read_checkpoint(SID)
    assert doc["last_event_seq"] == 1
    assert len(warnings) == 1
    assert warnings[0].startswith("W5001")
    assert str(path) in warnings[0]
    assert "line 4" in warnings[0]

    # The next save must not replace the good .prev with the corrupt file.
    storage.write_checkpoint(SID, checkpoint_doc(last_event_seq=3))
    prev = path.with_name(path.name + ".prev")
    assert json.loads(prev.read_text())["last_event_seq"] == 1
    assert storage.read_checkpoint(SID)[0]["last_event_seq"] == 3


def test_both_versions_corrupt_gives_e5002_naming_the_file(tmp_path: Path) -> None:
    storage = Storage(tmp_path)
    storage.write_checkpoint(SID, checkpoint_doc(last_event_seq=1))
    path = storage.write_checkpoint(SID, checkpoint_doc(last_event_seq=2))
    path.write_text("{\n\n  garbage")
    path.with_name(path.name + ".prev").write_text("")
    with pytest.raises(StorageError) as info:
        storage.read_checkpoint(SID)
    err = info.value
    assert err.code == "E5002"
    assert f"checkpoint {path} is corrupt (not valid JSON at line 3" in err.message
    assert "empty" in err.message
    assert err.hint == f"run `prodigy checkpoints validate {SID} --repair` or delete it"
    assert str(err).endswith("or delete it")


def test_corrupt_checkpoint_without_prev_gives_e5002(tmp_path: Path) -> None:
    storage = Storage(tmp_path)
    path = storage.write_checkpoint(SID, checkpoint_doc())
    path.write_bytes(b"\xff\xfe not utf-8")
    with pytest.raises(StorageError) as info:
        storage.read_checkpoint(SID)
    assert info.value.code == "E5002"
    assert str(path) in info.value.message
    assert "UTF-8" in info.value.message


def test_missing_checkpoint_gives_e5003(tmp_path: Path) -> None:
    with pytest.raises(StorageError) as info:
        Storage(tmp_path).read_checkpoint(SID)
    assert info.value.code == "E5003"
    assert SID in info.value.message


def test_newer_format_version_is_an_error_and_file_is_untouched(tmp_path: Path) -> None:
    storage = Storage(tmp_path)
    storage.write_checkpoint(SID, checkpoint_doc(last_event_seq=1))
    path = storage.checkpoint_file(SID)
    future = {"format": "prodigy.checkpoint", "format_version": 7, "new_thing": [1, 2]}
    path.write_text(json.dumps(future, indent=4))
    before = path.read_bytes()
    prev_before = path.with_name(path.name + ".prev").exists()
    with pytest.raises(StorageError) as info:
        storage.read_checkpoint(SID)
    err = info.value
    assert err.code == "E5002"
    assert (
        f"checkpoint {path} was written by a newer Prodigy (format version 7, "
        "this version understands up to 1)"
    ) in err.message
    assert "upgrade Prodigy" in str(err)
    assert path.read_bytes() == before
    assert path.with_name(path.name + ".prev").exists() == prev_before


def test_original_tool_checkpoint_is_migrated_from_version_0(tmp_path: Path) -> None:
    storage = Storage(tmp_path)
    legacy = {
        "workflow_id": SID,
        "version": 1,
        "timestamp": "2024-05-01T00:00:00Z",
        "workflow_name": "fix",
        "total_steps": 2,
        "execution_state": {"current_step_index": 1, "total_steps": 2, "status": "Interrupted"},
        "completed_steps": [
            {
                "step_index": 0,
                "command": "shell: make",
                "success": True,
                "output": "ok",
                "captured_variables": {},
                "duration": {"secs": 1, "nanos": 0},
            },
            {"step_index": 1, "command": "shell: false", "success": False},
        ],
        "variable_state": {"x": "1"},
        "legacy_only": "kept",
    }
    path = storage.checkpoint_file(SID)
    atomic_write_json(path, legacy)
    before = path.read_bytes()
    doc, warnings = storage.read_checkpoint(SID)
    assert warnings == []
    assert doc["format"] == "prodigy.checkpoint"
    assert doc["format_version"] == 1
    assert doc["version"] == 1
    assert doc["session_id"] == SID
    assert doc["inputs"] == {"args": [], "map_patterns": [], "current_input_index": 0}
    assert doc["profile"] is None
    assert doc["parameters"] == {}
    assert doc["last_event_seq"] == 0
    assert doc["nested_state"] == {}
    assert doc["foreach_state"] is None
    assert [s["status"] for s in doc["completed_steps"]] == ["succeeded", "failed"]
    assert doc["completed_steps"][0]["exit_code"] is None
    assert doc["legacy_only"] == "kept"
    assert doc["variable_state"] == {"x": "1"}
    assert path.read_bytes() == before  # reading never rewrites
    assert MIGRATIONS[0](legacy)["format_version"] == 1
    assert "format" not in legacy  # migrations do not mutate their input


def test_foreign_format_is_corrupt(tmp_path: Path) -> None:
    storage = Storage(tmp_path)
    path = storage.checkpoint_file(SID)
    atomic_write_json(path, {"format": "prodigy.session", "format_version": 1})
    with pytest.raises(StorageError) as info:
        storage.read_checkpoint(SID)
    assert info.value.code == "E5002"
    assert "prodigy.session" in info.value.message


def test_checkpoint_write_is_masked(tmp_path: Path) -> None:
    storage = Storage(tmp_path).with_mask(lambda t: t.replace("s3cr3t-value", "***REDACTED***"))
    path = storage.write_checkpoint(SID, checkpoint_doc(variable_state={"TOKEN": "s3cr3t-value"}))
    assert b"s3cr3t-value" not in path.read_bytes()
    assert storage.read_checkpoint(SID)[0]["variable_state"] == {"TOKEN": "***REDACTED***"}


# ----------------------------------------------------------------------------- snapshots


def test_snapshot_round_trip_and_missing(tmp_path: Path) -> None:
    storage = Storage(tmp_path)
    with pytest.raises(StorageError) as info:
        storage.read_snapshot(SID)
    assert info.value.code == "E5003"
    doc = {"workflow": {"steps": [{"shell": "make"}]}, "source_text": "- shell: make\n"}
    path = storage.write_snapshot(SID, doc)
    assert path == tmp_path / "state" / SID / "workflow.snapshot.json"
    loaded = storage.read_snapshot(SID)
    assert loaded["format"] == "prodigy.workflow_snapshot"
    assert loaded["workflow"] == doc["workflow"]
    assert loaded["source_text"] == doc["source_text"]
    path.write_text("[1")
    with pytest.raises(StorageError) as corrupt:
        storage.read_snapshot(SID)
    assert corrupt.value.code == "E5002"
    assert str(path) in corrupt.value.message


def test_session_ids_started_in_the_same_millisecond_differ(tmp_path: Path,
                                                           monkeypatch: Any) -> None:
    import time as time_module

    from prodigy_effects import runner

    monkeypatch.setattr(time_module, "time", lambda: 1_700_000_000.123)
    storage = Storage(tmp_path / "home")
    ids = [runner.new_session_id(storage) for _ in range(4)]
    assert ids == [f"workflow-{1_700_000_000_123 + i}" for i in range(4)]
    assert runner.new_session_id() == "workflow-1700000000123"  # without storage: no check


def test_a_write_that_need_not_be_durable_is_still_atomic(tmp_path: Path,
                                                          monkeypatch: Any) -> None:
    """Copies of data kept elsewhere (a job's item files) skip the fsyncs only."""
    import os

    from prodigy_effects import fsutil

    synced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(fsutil.os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd)))
    target = tmp_path / "items" / "item_0.json"
    fsutil.atomic_write_bytes(target, b'{"a": 1}\n', durable=False)
    assert target.read_bytes() == b'{"a": 1}\n' and synced == []
    assert sorted(p.name for p in target.parent.iterdir()) == ["item_0.json"]
    fsutil.atomic_write_bytes(target, b'{"a": 2}\n')
    assert target.read_bytes() == b'{"a": 2}\n' and len(synced) == 2  # file and directory
