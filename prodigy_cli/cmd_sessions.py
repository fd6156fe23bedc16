"""``prodigy sessions clean`` (spec 08 §2.11, 09 §6).

Removes finished sessions older than ``--older-than`` (default 7 days, measured from
``completed_at``, else ``updated_at``, else ``started_at``): by default only
``Completed`` ones; with ``--all`` also ``Failed``, ``Paused`` and ``Cancelled`` ones.
Running or initialising sessions and sessions whose lock is held by a live process are
never removed. For each session it deletes, in this order so that an interrupted clean
can simply be run again: the Claude transcripts its events refer to, its event
directories, its state directory (checkpoint and snapshot), a stale lock, and finally
the session record. Worktrees are not touched (`prodigy worktree clean`).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
from pathlib import Path
from typing import Any, TextIO

import attrs

from prodigy_cli.cli_support import (
    Confirm,
    age_of,
    describe_lock,
    live_lock,
    now_utc,
    repo_filter,
    write_json,
)
from prodigy_core.reprs import value_class
from prodigy_effects.journal import read_events
from prodigy_effects.storage import Storage

__all__ = ["sessions_clean"]

_DEFAULT_STATUSES = frozenset({"Completed"})
_ALL_STATUSES = frozenset({"Completed", "Failed", "Paused", "Cancelled"})


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class _Doomed:
    """A session to delete and every path that goes with it (deleted in this order)."""

    session_id: str
    status: str
    finished_at: str
    paths: tuple[Path, ...]


def _run_ids(doc: dict[str, Any]) -> list[str]:
    ids = [str(doc.get("id"))]
    job = (doc.get("mapreduce_data") or {}).get("job_id") if isinstance(
        doc.get("mapreduce_data"), dict) else None
    if isinstance(job, str) and job and job not in ids:
        ids.append(job)
    return ids


def _event_dirs(storage: Storage, run_id: str) -> list[Path]:
    base = storage.root / "events"
    try:
        repos = sorted(e.name for e in os.scandir(base) if e.is_dir())
    except OSError:
        return []
    return [base / repo / run_id for repo in repos if (base / repo / run_id).is_dir()]


def _locations(value: Any, found: list[str]) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "json_log_location" and isinstance(item, str):
                found.append(item)
            else:
                _locations(item, found)
    elif isinstance(value, list):
        for item in value:
            _locations(item, found)


def _transcripts(storage: Storage, event_dirs: list[Path]) -> list[Path]:
    """Transcript files under the storage root that the runs' events refer to."""
    root = storage.transcripts_dir().resolve()
    found: list[str] = []
    for d in event_dirs:
        for envelope in read_events(d):
            _locations(envelope.get("event"), found)
    paths = []
    for text in dict.fromkeys(found):
        path = Path(text).resolve()
        if path.is_file() and path.is_relative_to(root) and path not in paths:
            paths.append(path)
    return paths


def _plan(storage: Storage, doc: dict[str, Any]) -> _Doomed:
    sid = str(doc.get("id"))
    dirs = [d for run_id in _run_ids(doc) for d in _event_dirs(storage, run_id)]
    paths: list[Path] = [*_transcripts(storage, dirs), *dirs]
    repo = doc.get("repo_name")
    job = _run_ids(doc)[1:]
    if job and isinstance(repo, str) and repo:
        paths.append(storage.root / "state" / repo / "mapreduce" / "jobs" / job[0])
    paths.append(storage.state_dir(sid))
    for run_id in _run_ids(doc):
        with contextlib.suppress(ValueError):
            paths.append(storage.lock_file(run_id))  # only stale ones reach here
    paths.append(storage.session_file(sid))
    finished = doc.get("completed_at") or doc.get("updated_at") or doc.get("started_at")
    return _Doomed(session_id=sid, status=str(doc.get("status")), finished_at=str(finished),
                   paths=tuple(p for p in paths if p.exists()))


def _delete(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def sessions_clean(args: argparse.Namespace, storage: Storage, out: TextIO, err: TextIO,
                   cwd: str) -> int:
    repo_path, _ = repo_filter(args, cwd)
    statuses = _ALL_STATUSES if args.all else _DEFAULT_STATUSES
    now = now_utc()
    sessions, warnings = storage.scan_sessions(repo_path)
    for warning in warnings:
        err.write(f"{warning}\n")
    doomed: list[_Doomed] = []
    skipped: list[dict[str, str]] = []
    for doc in sessions:
        sid = str(doc.get("id"))
        if str(doc.get("status")) not in statuses:
            continue
        age = age_of(doc.get("completed_at") or doc.get("updated_at") or doc.get("started_at"),
                     now)
        if age is None or age < args.older_than:
            continue
        locks = [lock for run_id in _run_ids(doc) if (lock := live_lock(storage, run_id))]
        if locks:
            skipped.append({"id": sid, "reason": describe_lock(locks[0])})
            err.write(f"Skipping {sid}: {describe_lock(locks[0])}\n")
            continue
        doomed.append(_plan(storage, doc))
    human = err if args.json else out
    report: dict[str, Any] = {
        "dry_run": bool(args.dry_run),
        "sessions": [{"id": d.session_id, "status": d.status, "finished_at": d.finished_at,
                      "paths": [str(p) for p in d.paths]} for d in doomed],
        "deleted": [],
        "skipped": skipped,
    }
    if not doomed:
        which = "finished" if args.all else "completed"
        human.write(f"No {which} sessions older than {_age_text(args.older_than)} to clean.\n")
    else:
        prefix = "Would delete" if args.dry_run else "Delete"
        for d in doomed:
            human.write(f"{prefix} session {d.session_id} ({d.status}, finished "
                        f"{d.finished_at}; {len(d.paths)} path(s))\n")
        if args.dry_run:
            human.write(f"Dry run: {len(doomed)} session(s) would be deleted; nothing was "
                        "changed.\n")
        else:
            answer = Confirm.from_args(args, err).ask(f"Delete {len(doomed)} session(s)?")
            if answer is None:
                return 2
            if answer:
                code = _apply(doomed, report, human, err)
                if code:
                    if args.json:
                        write_json(report, out)
                    return code
    if args.json:
        write_json(report, out)
    return 0


def _apply(doomed: list[_Doomed], report: dict[str, Any], human: TextIO, err: TextIO) -> int:
    for d in doomed:
        try:
            for path in d.paths:
                _delete(path)
        except OSError as exc:
            err.write(f"error[E5001]: cannot delete {exc.filename or d.session_id} "
                      f"({exc.strerror or exc}); the session record was kept so that "
                      "`prodigy sessions clean` can be run again\n")
            return 1
        report["deleted"].append(d.session_id)
    human.write(f"Deleted {len(doomed)} session(s).\n")
    return 0


def _age_text(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"
