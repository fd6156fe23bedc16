"""Event journal: envelope, seq continuity, torn lines, legacy names, masking (spec 09 §5)."""

from __future__ import annotations

import json
import os
import stat
import threading
import time
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from prodigy_effects.journal import (
    JournalReadStats,
    JournalWriter,
    event_files,
    follow,
    last_seq,
    list_run_dirs,
    normalise_event_type,
    read_events,
)
from prodigy_effects.storage import Storage, StorageError

T0 = datetime(2025, 3, 14, 9, 15, 2, 113000, tzinfo=UTC)
RUN = "workflow-1710407702113"


def append(writer: JournalWriter, event_type: str, **fields: Any) -> int:
    seq = writer.next_seq
    return writer.append(
        {"event_type": event_type, "session_id": RUN, **fields},
        correlation_id=RUN,
        timestamp="2025-03-14T09:16:44.021Z",
        event_id=f"id-{seq}",
    )


def test_writer_creates_named_file_and_writes_envelope(tmp_path: Path) -> None:
    run_dir = tmp_path / "events" / "shop" / RUN
    writer = JournalWriter.open(run_dir, 1, T0, host="box", pid=4242, version="9.9")
    assert writer.path == run_dir / "events-20250314_091502.jsonl"
    assert stat.S_IMODE(writer.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(run_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "events").stat().st_mode) == 0o700

    assert append(writer, "workflow_started", workflow_name="fix") == 1
    # Flushed immediately: visible before sync/close.
    lines = writer.path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 1
    envelope = json.loads(lines[0])
    assert envelope == {
        "id": "id-1",
        "seq": 1,
        "timestamp": "2025-03-14T09:16:44.021Z",
        "correlation_id": RUN,
        "event": {"event_type": "workflow_started", "session_id": RUN, "workflow_name": "fix"},
        "metadata": {"host": "box", "pid": 4242, "prodigy_version": "9.9"},
    }
    seq = writer.append(
        {"event_type": "agent_started"},
        correlation_id=RUN,
        timestamp="t",
        event_id="x",
        thread="agent-3",
    )
    assert seq == 2
    writer.sync()
    writer.close()
    writer.close()  # idempotent
    assert json.loads(writer.path.read_text().splitlines()[1])["metadata"]["thread"] == "agent-3"
    with pytest.raises(ValueError):
        append(writer, "late")


def test_file_name_uses_utc_and_defaults(tmp_path: Path) -> None:
    local = datetime(2025, 3, 14, 11, 15, 2, tzinfo=timezone(timedelta(hours=2)))
    with JournalWriter.open(tmp_path, 1, local) as writer:
        assert writer.path.name == "events-20250314_091502.jsonl"
        append(writer, "x")
    meta = json.loads(writer.path.read_text())["metadata"]
    assert meta["pid"] == os.getpid()
    assert isinstance(meta["host"], str) and meta["host"]
    assert isinstance(meta["prodigy_version"], str)


def test_seq_continues_across_writer_files_in_the_same_second(tmp_path: Path) -> None:
    run_dir = tmp_path / RUN
    with JournalWriter.open(run_dir, 1, T0) as first:
        for name in ("workflow_started", "step_started", "step_completed"):
            append(first, name)
    assert last_seq(run_dir) == 3
    with JournalWriter.open(run_dir, last_seq(run_dir) + 1, T0) as second:
        assert second.path.name == f"events-20250314_091502-{os.getpid()}.jsonl"
        append(second, "workflow_resumed")
        append(second, "workflow_completed")
    # A third writer in the same second, same PID, still gets its own file.
    with JournalWriter.open(run_dir, last_seq(run_dir) + 1, T0) as third:
        assert third.path != second.path
        append(third, "step_started")

    assert len(event_files(run_dir)) == 3
    assert event_files(run_dir)[0] == first.path  # not plain name order
    events = list(read_events(run_dir))
    seqs = [e["seq"] for e in events]
    assert seqs == [1, 2, 3, 4, 5, 6]
    assert [e["event"]["event_type"] for e in events][3] == "workflow_resumed"
    assert last_seq(run_dir) == 6


def test_later_file_is_read_after_earlier_file(tmp_path: Path) -> None:
    with JournalWriter.open(tmp_path, 1, T0) as first:
        append(first, "a")
    with JournalWriter.open(tmp_path, 2, T0 + timedelta(hours=1)) as second:
        append(second, "b")
    assert [e["event"]["event_type"] for e in read_events(tmp_path)] == ["a", "b"]


def test_last_seq_is_zero_without_events(tmp_path: Path) -> None:
    assert last_seq(tmp_path / "missing") == 0
    JournalWriter.open(tmp_path, 1, T0).close()  # an empty file
    assert last_seq(tmp_path) == 0
    assert list(read_events(tmp_path / "missing")) == []


def test_last_seq_skips_an_empty_newest_file(tmp_path: Path) -> None:
    with JournalWriter.open(tmp_path, 1, T0) as first:
        append(first, "a")
        append(first, "b")
    JournalWriter.open(tmp_path, 3, T0 + timedelta(seconds=5)).close()
    assert last_seq(tmp_path) == 2


def test_torn_last_line_is_skipped_and_counted(tmp_path: Path) -> None:
    with JournalWriter.open(tmp_path, 1, T0) as writer:
        append(writer, "step_started")
        append(writer, "step_completed")
    with open(writer.path, "ab") as handle:
        handle.write(b'{"id": "torn", "seq": 3, "event": {"event_ty')
    stats = JournalReadStats()
    events = list(read_events(tmp_path, stats=stats))
    assert [e["seq"] for e in events] == [1, 2]
    assert stats.torn_lines == 1
    assert stats.bad_lines == 0
    assert stats.events == 2
    assert str(writer.path) in stats.problems[0]
    assert last_seq(tmp_path) == 2
    # A resume continues after the torn line in a new file.
    with JournalWriter.open(tmp_path, last_seq(tmp_path) + 1, T0 + timedelta(seconds=1)) as w2:
        append(w2, "workflow_resumed")
    assert [e["seq"] for e in read_events(tmp_path)] == [1, 2, 3]


def test_corrupt_middle_line_is_skipped_and_counted(tmp_path: Path) -> None:
    path = tmp_path / "events-20250314_091502.jsonl"
    path.write_text(
        '{"seq": 1, "event": {"event_type": "a"}}\nnot json\n[1]\n'
        '{"seq": 2, "event": {"event_type": "b"}}\n'
    )
    stats = JournalReadStats()
    assert [e["seq"] for e in read_events(tmp_path, stats=stats)] == [1, 2]
    assert stats.bad_lines == 2
    assert stats.torn_lines == 0


def test_legacy_dlq_event_names_are_normalised(tmp_path: Path) -> None:
    path = tmp_path / "events-20240101_000000.jsonl"
    lines = [
        {
            "id": "1",
            "timestamp": "t",
            "correlation_id": "job",
            "event": {"event_type": "d_l_q_item_added", "item_id": "item_4"},
        },
        {
            "id": "2",
            "timestamp": "t",
            "correlation_id": "job",
            "event": {"event_type": "d_l_q_items_reprocessed", "count": 2},
        },
        {
            "id": "3",
            "timestamp": "t",
            "correlation_id": "job",
            "event": {"event_type": "agent_completed"},
        },
    ]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    types = [e["event"]["event_type"] for e in read_events(tmp_path)]
    assert types == ["dlq_item_added", "dlq_items_reprocessed", "agent_completed"]
    assert normalise_event_type("d_l_q_analysis_generated") == "dlq_analysis_generated"
    assert normalise_event_type("dlq_item_removed") == "dlq_item_removed"


def test_mask_keeps_secrets_off_disk(tmp_path: Path) -> None:
    secret = "ghp_abcdefSECRET123"

    def mask(text: str) -> str:
        return text.replace(secret, "***REDACTED***")

    with JournalWriter.open(tmp_path, 1, T0, mask=mask) as writer:
        append(writer, "step_completed", output=f"token is {secret}\n", variables={"T": secret})
    raw = writer.path.read_bytes()
    assert secret.encode() not in raw
    (event,) = read_events(tmp_path)
    assert event["event"]["output"] == "token is ***REDACTED***\n"
    assert event["event"]["variables"] == {"T": "***REDACTED***"}


def test_unwritable_events_dir_gives_e5001(tmp_path: Path) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    with pytest.raises(StorageError) as info:
        JournalWriter.open(blocker / "events" / RUN, 1, T0)
    assert info.value.code == "E5001"
    assert str(blocker) in info.value.message


def test_list_run_dirs(tmp_path: Path) -> None:
    storage = Storage(tmp_path)
    for repo, run in [("shop", "b"), ("shop", "a"), ("other", "c")]:
        JournalWriter.open(storage.events_dir(repo, run), 1, T0).close()
    assert list_run_dirs(storage, "shop") == [
        storage.events_dir("shop", "a"),
        storage.events_dir("shop", "b"),
    ]
    assert list_run_dirs(storage) == [
        storage.events_dir("other", "c"),
        storage.events_dir("shop", "a"),
        storage.events_dir("shop", "b"),
    ]
    assert list_run_dirs(storage, "missing") == []
    assert list_run_dirs(Storage(tmp_path / "nothing")) == []


def test_follow_yields_existing_and_new_events_including_new_files(tmp_path: Path) -> None:
    with JournalWriter.open(tmp_path, 1, T0) as first:
        append(first, "workflow_started")
    done = threading.Event()

    def produce() -> None:
        with JournalWriter.open(tmp_path, 2, T0) as writer:  # same second: second file name
            append(writer, "step_started")
            time.sleep(0.05)
            # Write a line in two pieces: follow must not yield half a line.
            line = json.dumps({"seq": 3, "event": {"event_type": "step_completed"}})
            with open(writer.path, "ab") as handle:
                handle.write(line[:10].encode())
                handle.flush()
                time.sleep(0.05)
                handle.write(line[10:].encode() + b"\n")
        with JournalWriter.open(tmp_path, 4, T0 + timedelta(seconds=3)) as later:
            append(later, "d_l_q_item_added")
        done.set()

    thread = threading.Thread(target=produce)
    seen: list[dict[str, Any]] = []
    thread.start()
    try:
        for event in follow(tmp_path, 0.01, done.is_set):
            seen.append(event)
    finally:
        thread.join()
    assert [e["seq"] for e in seen] == [1, 2, 3, 4]
    assert seen[-1]["event"]["event_type"] == "dlq_item_added"


def test_follow_stops_on_empty_dir(tmp_path: Path) -> None:
    assert list(follow(tmp_path / "none", 0.001, lambda: True)) == []


def test_a_just_opened_empty_file_sorts_after_files_with_events(tmp_path: Path) -> None:
    with JournalWriter.open(tmp_path, 1, T0) as first:
        append(first, "a")
    second = JournalWriter.open(tmp_path, 2, T0)  # same second, still empty
    try:
        assert event_files(tmp_path) == [first.path, second.path]
    finally:
        second.close()
