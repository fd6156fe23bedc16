"""Reading what analytics and ``prodigy logs`` report on (spec 14 §3.4, spec 07 §8).

The per-call records are rebuilt from the event logs every time (no cache): each run
directory ``events/<repo>/<run_id>/`` is read and its ``claude_call_completed`` events
become :class:`~prodigy_core.analytics_report.CallRecord` values. Transcripts live in
one directory for all repositories (``logs/claude-streaming/``); a transcript belongs
to a repository when one of its calls' events names it, or — for a call still running
or never journaled — when the ``cwd`` of its ``init`` message lies in the repository or
in one of its worktrees.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import attrs

from prodigy_core.analytics_report import CallRecord, calls_from_events
from prodigy_core.reprs import value_class
from prodigy_effects.journal import list_run_dirs, read_events
from prodigy_effects.storage import Storage

__all__ = [
    "Run",
    "Transcript",
    "claude_project_log",
    "job_sessions",
    "list_transcripts",
    "load_runs",
    "read_lines",
    "transcript_info",
]


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class Run:
    """One run directory: its records, plus what its other events say about the job."""

    run_id: str
    repo: str
    session_id: str
    first_timestamp: str
    last_timestamp: str
    records: tuple[CallRecord, ...]
    job_id: str | None = None
    total_items: int | None = None
    max_parallel: int | None = None
    finished_items: tuple[tuple[str, int], ...] = ()  # (item id, duration ms)


def job_sessions(storage: Storage) -> dict[str, str]:
    """MapReduce job id → the id of its session (from the session records)."""
    found: dict[str, str] = {}
    for doc in storage.list_sessions(None):
        data = doc.get("mapreduce_data")
        job = data.get("job_id") if isinstance(data, dict) else None
        if isinstance(job, str) and job:
            found[job] = str(doc.get("id"))
    return found


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _read_run(run_dir: Path, sessions: Mapping[str, str]) -> Run:
    envelopes = list(read_events(run_dir))
    run_id, repo = run_dir.name, run_dir.parent.name
    session_id = sessions.get(run_id, run_id)
    job_id: str | None = None
    total = parallel = None
    finished: dict[str, int] = {}
    stamps = [str(e.get("timestamp")) for e in envelopes if e.get("timestamp")]
    for envelope in envelopes:
        body = envelope.get("event")
        if not isinstance(body, dict):
            continue
        kind = body.get("event_type")
        if isinstance(body.get("job_id"), str):
            job_id = body["job_id"]
        if kind == "job_started":
            total = _int(body.get("total_items"))
            config = body.get("config")
            if isinstance(config, dict):
                parallel = _int(config.get("max_parallel"))
        elif kind in ("agent_completed", "agent_failed") and body.get("item_id") is not None:
            finished[str(body["item_id"])] = _int(body.get("duration_ms")) or 0
    records = calls_from_events(envelopes, run_id=run_id, session_id=session_id, repo=repo)
    if job_id is not None:
        records = tuple(r if r.job_id else attrs.evolve(r, job_id=job_id) for r in records)
    return Run(run_id=run_id, repo=repo, session_id=session_id,
               first_timestamp=min(stamps, default=""), last_timestamp=max(stamps, default=""),
               records=records, job_id=job_id, total_items=total, max_parallel=parallel,
               finished_items=tuple(sorted(finished.items())))


def load_runs(storage: Storage, repo: str | None) -> list[Run]:
    """Every run of the repository ``repo`` (all repositories when ``None``)."""
    sessions = job_sessions(storage)
    return [_read_run(d, sessions) for d in list_run_dirs(storage, repo)]


# --------------------------------------------------------------------------- transcripts


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class Transcript:
    """A transcript file and the journaled call it belongs to (``None`` if not journaled)."""

    path: Path
    started_at: str
    record: CallRecord | None = None
    claude_session_id: str | None = None
    cwd: str | None = None


def read_lines(path: Path) -> list[str]:
    """The lines of a transcript (a torn last line is kept; it is shown as unparsed)."""
    return path.read_text(encoding="utf-8", errors="replace").splitlines()


def _started_at(path: Path) -> str:
    """The UTC start time from ``<YYYYMMDD_HHMMSS>-<uuid>.jsonl``, else the file time."""
    stamp = path.name.split("-", 1)[0]
    try:
        moment = datetime.strptime(stamp, "%Y%m%d_%H%M%S").replace(tzinfo=UTC)
    except ValueError:
        try:
            moment = datetime.fromtimestamp(path.stat().st_mtime, UTC)
        except OSError:
            return ""
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def transcript_info(path: Path, record: CallRecord | None = None) -> Transcript:
    """A transcript with the session id and ``cwd`` of its ``init`` message."""
    session = cwd = None
    with contextlib.suppress(OSError), open(path, encoding="utf-8", errors="replace") as handle:
        for _, line in zip(range(5), handle, strict=False):
            try:
                doc = json.loads(line)
            except ValueError:
                continue
            if isinstance(doc, dict) and doc.get("type") == "system" and \
                    doc.get("subtype") == "init":
                session = doc.get("session_id") if isinstance(doc.get("session_id"), str) \
                    else None
                cwd = doc.get("cwd") if isinstance(doc.get("cwd"), str) else None
                break
    return Transcript(path=path, started_at=_started_at(path), record=record,
                      claude_session_id=session or (record.claude_session_id if record else None),
                      cwd=cwd)


def _inside(path: str, root: str) -> bool:
    try:
        Path(path).resolve().relative_to(Path(root).resolve())
    except (ValueError, OSError):
        return False
    return True


def list_transcripts(storage: Storage, records: Iterable[CallRecord], *,
                     repo_root: str | None, repo_name: str | None,
                     include_unjournaled: bool = True) -> list[Transcript]:
    """Transcripts of the calls in ``records``, newest first.

    With ``include_unjournaled``, files no event refers to (a call still running, or
    killed before its event) are added when their ``init`` ``cwd`` lies in
    ``repo_root`` or in the repository's worktrees — or always when ``repo_root`` is
    ``None`` (``--all-repos``).
    """
    directory = storage.transcripts_dir()
    by_path: dict[str, CallRecord] = {}
    for record in records:
        if record.json_log_location:
            by_path[str(Path(record.json_log_location))] = record
    found: dict[str, Transcript] = {}
    for location, record in by_path.items():
        if Path(location).is_file():
            found[location] = transcript_info(Path(location), record)
    if include_unjournaled:
        try:
            names = os.listdir(directory)
        except OSError:
            names = []
        worktrees = str(storage.root / "worktrees" / repo_name) if repo_name else None
        known = set(found) | set(by_path)
        for name in names:
            path = directory / name
            if not name.endswith(".jsonl") or str(path) in known:
                continue
            info = transcript_info(path)
            if repo_root is not None:
                cwd = info.cwd or ""
                if not cwd or not (_inside(cwd, repo_root) or
                                   (worktrees is not None and _inside(cwd, worktrees))):
                    continue
            found[str(path)] = info
    return sorted(found.values(), key=lambda t: (t.started_at, t.path.name), reverse=True)


def claude_project_log(claude_session_id: str | None, environ: Mapping[str, str]) -> str | None:
    """Claude Code's own log ``projects/*/<session_id>.jsonl`` if it exists."""
    if not claude_session_id or "/" in claude_session_id:
        return None
    bases: list[Path] = []
    if environ.get("CLAUDE_CONFIG_DIR"):
        bases.append(Path(environ["CLAUDE_CONFIG_DIR"]) / "projects")
    home = environ.get("HOME")
    bases.append((Path(home) if home else Path.home()) / ".claude" / "projects")
    for base in bases:
        with contextlib.suppress(OSError):
            for hit in base.glob(f"*/{claude_session_id}.jsonl"):
                return str(hit)
    return None


def record_docs(records: Iterable[CallRecord]) -> list[dict[str, Any]]:
    return [r.to_json() for r in records]
