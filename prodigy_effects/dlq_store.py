"""The dead letter queue on disk (spec 09 §2, §3, §4.5; 05 §13, §17).

Theory of operation
-------------------
A MapReduce job's failed items live in ``<storage>/dlq/<repo>/<job_id>/``: one JSON
document per item in ``items/<item_id>.json`` (the entry of spec 09 §4.5) and
``index.json`` (``{"job_id", "item_count", "item_ids", "updated_at"}``, plus the
optional ``repo_path`` of the repository, see below), rewritten after every change.
Entries the original tool stored at ``<job dir>/mapreduce/dlq/<job_id>/items/`` are read
too; when both places hold the same item, the new one wins.  An entry found only in
the legacy place is moved to the new place the next time it changes.

Writes are atomic (:func:`prodigy_effects.fsutil.atomic_write_bytes`) and the text of
every document passes through a ``mask`` (default ``storage.mask``) so that secret
values never reach disk.  A read-modify-write of one job's DLQ (adding a failure,
removing an item, rewriting the index) holds ``<storage>/resume_locks/dlq-<job_id>.lock``
(an ``flock``: a run adding failures and a ``dlq purge`` never interleave).

Reading is tolerant: a file that is not a JSON object, or whose ``item_id`` does not
match its name, is skipped and reported as warning W5003; listings return those
warnings (``scan_entries``) or append them to ``storage.warnings`` (``list_entries``).

Error types are the JSON forms of spec 05 §13.2 (``"Timeout"``,
``{"CommandFailed": {"exit_code": 1}}``, …) exactly as callers give them;
:func:`error_type_name` reduces one to its name for filtering and grouping.
:func:`error_signature` and :func:`needs_manual_review` apply spec 05 §13.3/§13.4 (the
rules live in :mod:`prodigy_core.work_items`); :func:`add_failure` uses them when the
caller gives no value.

Removing an item also means discarding the branch (and a worktree kept with
``keep_failed``) recorded in its ``worktree_artifacts`` and logging ``dlq_item_removed``:
:mod:`prodigy_effects.dlq_cleanup` does those.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import attrs

from prodigy_core import work_items
from prodigy_core.reprs import value_class
from prodigy_effects.fsutil import atomic_write_bytes, dumps_json, rfc3339_ms
from prodigy_effects.repolock import repo_lock
from prodigy_effects.storage import (
    E_CHECKPOINT_CORRUPT,
    W_UNREADABLE_FILE,
    Storage,
    StorageError,
    _check_id,
)

__all__ = [
    "ERROR_TYPE_NAMES",
    "UNSET",
    "DlqEntry",
    "add_failure",
    "entry_file",
    "error_signature",
    "error_type_label",
    "error_type_name",
    "index_file",
    "job_dir",
    "last_failure",
    "legacy_entry_file",
    "list_entries",
    "list_jobs",
    "needs_manual_review",
    "prune_job",
    "read_entry",
    "read_index",
    "remove",
    "scan_entries",
    "write_index",
]

#: The error type names of spec 05 §13.2.
ERROR_TYPE_NAMES = (
    "Timeout", "CommandFailed", "CommitValidationFailed", "WorktreeError", "MergeConflict",
    "ValidationFailed", "ResourceExhausted", "Unknown",
)

_ENTRY_FIELDS = (
    "item_id", "item_data", "first_attempt", "last_attempt", "failure_count",
    "failure_history", "error_signature", "worktree_artifacts", "reprocess_eligible",
    "manual_review_required",
)
_ARTIFACT_FIELDS = ("worktree_path", "branch_name", "uncommitted_changes", "error_logs")
_NATURAL = re.compile(r"^(.*?)(\d+)$")
#: Default of arguments whose omission means "look it up" (see ``dlq_cleanup``).
UNSET: Any = object()


def _now() -> str:
    return rfc3339_ms(datetime.now(UTC))


# ------------------------------------------------------------------------ error types


def error_type_name(error_type: Any) -> str:
    """``"Timeout"`` → ``"Timeout"``; ``{"CommandFailed": {...}}`` → ``"CommandFailed"``.

    Anything that is neither a string nor a one-key object gives ``"Unknown"``.
    """
    if isinstance(error_type, str) and error_type:
        return error_type
    if isinstance(error_type, Mapping) and len(error_type) == 1:
        (name,) = error_type
        if isinstance(name, str) and name:
            return name
    return "Unknown"


def error_type_label(error_type: Any) -> str:
    """A short human label: the name, with the exit code for ``CommandFailed``."""
    name = error_type_name(error_type)
    if isinstance(error_type, Mapping):
        detail = error_type.get(name)
        if isinstance(detail, Mapping) and detail.get("exit_code") is not None:
            return f"{name} (exit {detail['exit_code']})"
    return name


def error_signature(error_type: Any, message: str) -> str:
    """The error signature of spec 05 §13.3 (16 hex digits of a SHA-256).

    Delegates to :func:`prodigy_core.work_items.error_signature` with the type's name,
    so the store and the job machine never disagree.
    """
    return work_items.error_signature(error_type_name(error_type), message or "")


def needs_manual_review(error_type: Any, message: str) -> bool:
    """Spec 05 §13.4: ``ValidationFailed``, or a message about permissions or corruption."""
    return work_items.manual_review_required(error_type_name(error_type), message or "")


def last_failure(entry: Mapping[str, Any]) -> Mapping[str, Any]:
    """The entry's newest ``failure_history`` record (``{}`` when there is none)."""
    history = entry.get("failure_history")
    if isinstance(history, list):
        for record in reversed(history):
            if isinstance(record, Mapping):
                return record
    return {}


# ------------------------------------------------------------------------------ paths


def job_dir(storage: Storage, repo: str, job_id: str) -> Path:
    """``<storage>/dlq/<repo>/<job_id>/``."""
    return (storage.root / "dlq" / _check_id(repo, "repository name")
            / _check_id(job_id, "job id"))


def entry_file(storage: Storage, repo: str, job_id: str, item_id: str) -> Path:
    """``dlq/<repo>/<job_id>/items/<item_id>.json`` (spec 09 §4.5)."""
    return job_dir(storage, repo, job_id) / "items" / f"{_check_id(item_id, 'item id')}.json"


def _legacy_items_dir(storage: Storage, repo: str, job_id: str) -> Path:
    return job_dir(storage, repo, job_id) / "mapreduce" / "dlq" / job_id / "items"


def legacy_entry_file(storage: Storage, repo: str, job_id: str, item_id: str) -> Path:
    """Where the original tool kept the entry: ``…/<job_id>/mapreduce/dlq/<job_id>/items/``."""
    return _legacy_items_dir(storage, repo, job_id) / f"{_check_id(item_id, 'item id')}.json"


def index_file(storage: Storage, repo: str, job_id: str) -> Path:
    return job_dir(storage, repo, job_id) / "index.json"


def _lock_file(storage: Storage, job_id: str) -> Path:
    return storage.root / "resume_locks" / f"dlq-{_check_id(job_id, 'job id')}.lock"


def _natural(item_id: str) -> tuple[str, int, str]:
    match = _NATURAL.match(item_id)
    if match is None:
        return (item_id, -1, item_id)
    return (match.group(1), int(match.group(2)), item_id)


def _subdirs(path: Path) -> list[str]:
    try:
        return sorted(e.name for e in os.scandir(path)
                      if e.is_dir() and not e.name.startswith("."))
    except (FileNotFoundError, NotADirectoryError):
        return []


def _item_files(directory: Path) -> dict[str, Path]:
    try:
        names = os.listdir(directory)
    except (FileNotFoundError, NotADirectoryError):
        return {}
    return {name[: -len(".json")]: directory / name for name in names
            if name.endswith(".json") and not name.startswith(".")}


# ----------------------------------------------------------------------------- reading


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class DlqEntry:
    """One DLQ entry as found on disk: where it is and its document (spec 09 §4.5).

    ``legacy`` is true for an entry read from the original tool's doubled path.
    """

    repo: str
    job_id: str
    item_id: str
    path: Path
    legacy: bool
    doc: dict[str, Any]

    @property
    def last(self) -> Mapping[str, Any]:
        """The newest failure record (``{}`` when the history is empty)."""
        return last_failure(self.doc)

    @property
    def error_type(self) -> Any:
        return self.last.get("error_type")

    @property
    def error_type_name(self) -> str:
        return error_type_name(self.error_type)

    @property
    def error_message(self) -> str:
        message = self.last.get("error_message")
        return message if isinstance(message, str) else ""

    @property
    def failure_count(self) -> int:
        count = self.doc.get("failure_count")
        if isinstance(count, int) and not isinstance(count, bool):
            return count
        history = self.doc.get("failure_history")
        return len(history) if isinstance(history, list) else 0

    @property
    def signature(self) -> str:
        value = self.doc.get("error_signature")
        return value if isinstance(value, str) else ""

    @property
    def eligible(self) -> bool:
        return self.doc.get("reprocess_eligible") is not False

    @property
    def manual_review(self) -> bool:
        return self.doc.get("manual_review_required") is True

    @property
    def first_attempt(self) -> str | None:
        value = self.doc.get("first_attempt")
        return value if isinstance(value, str) else None

    @property
    def last_attempt(self) -> str | None:
        value = self.doc.get("last_attempt") or self.last.get("timestamp")
        return value if isinstance(value, str) else self.first_attempt

    @property
    def artifacts(self) -> Mapping[str, Any]:
        value = self.doc.get("worktree_artifacts")
        return value if isinstance(value, Mapping) else {}

    @property
    def branch(self) -> str | None:
        value = self.artifacts.get("branch_name")
        return value if isinstance(value, str) and value else None


class _Corrupt(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _load(path: Path, item_id: str) -> dict[str, Any]:
    """Read an entry; ``FileNotFoundError`` when missing, ``_Corrupt`` when unusable."""
    raw = path.read_bytes()
    if not raw.strip():
        raise _Corrupt("the file is empty")
    try:
        doc = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise _Corrupt(f"not valid UTF-8 at byte {exc.start}") from None
    except json.JSONDecodeError as exc:
        raise _Corrupt(f"not valid JSON at line {exc.lineno} column {exc.colno}: "
                       f"{exc.msg}") from None
    if not isinstance(doc, dict):
        raise _Corrupt(f"expected a JSON object, found {type(doc).__name__}")
    named = doc.get("item_id")
    if named is None:
        doc["item_id"] = item_id
    elif named != item_id:
        raise _Corrupt(f"it names item {named!r}, not {item_id!r}")
    return doc


def _job_entries(storage: Storage, repo: str, job_id: str,
                 warnings: list[str]) -> list[DlqEntry]:
    found: dict[str, DlqEntry] = {}
    places = ((_legacy_items_dir(storage, repo, job_id), True),
              (job_dir(storage, repo, job_id) / "items", False))
    for directory, legacy in places:  # new after legacy: the new entry wins
        for item_id, path in _item_files(directory).items():
            try:
                _check_id(item_id, "item id")
                doc = _load(path, item_id)
            except FileNotFoundError:
                continue  # removed while listing
            except (ValueError, _Corrupt) as exc:
                reason = exc.reason if isinstance(exc, _Corrupt) else str(exc)
                warnings.append(f"{W_UNREADABLE_FILE}: skipped DLQ entry {path} ({reason})")
                continue
            except OSError as exc:
                warnings.append(f"{W_UNREADABLE_FILE}: skipped DLQ entry {path} "
                                f"({exc.strerror or exc})")
                continue
            found[item_id] = DlqEntry(repo=repo, job_id=job_id, item_id=item_id, path=path,
                                      legacy=legacy, doc=doc)
    return [found[k] for k in sorted(found, key=_natural)]


def list_jobs(storage: Storage, repo: str | None = None) -> list[tuple[str, str]]:
    """``(repo, job_id)`` of every job directory under ``dlq/`` (of one repository)."""
    base = storage.root / "dlq"
    repos = [_check_id(repo, "repository name")] if repo is not None else _subdirs(base)
    return [(r, job) for r in repos for job in _subdirs(base / r)]


def scan_entries(storage: Storage, repo: str | None = None,
                 job_id: str | None = None) -> tuple[list[DlqEntry], list[str]]:
    """Every readable entry (of one repository, of one job), and warnings (W5003).

    Ordered by repository, job id, then item id (``item_2`` before ``item_10``).  A
    ``job_id`` that is not a plain name raises ``ValueError``.
    """
    warnings: list[str] = []
    if job_id is not None:
        _check_id(job_id, "job id")
    entries: list[DlqEntry] = []
    for r, job in list_jobs(storage, repo):
        if job_id is None or job == job_id:
            entries.extend(_job_entries(storage, r, job, warnings))
    return entries, warnings


def list_entries(storage: Storage, repo: str | None = None,
                 job_id: str | None = None) -> list[DlqEntry]:
    """Like :func:`scan_entries`; the warnings are appended to ``storage.warnings``."""
    entries, warnings = scan_entries(storage, repo, job_id)
    storage.warnings.extend(warnings)
    return entries


def read_entry(storage: Storage, repo: str, job_id: str, item_id: str) -> DlqEntry | None:
    """The item's entry (new place first, then the legacy one), ``None`` when it has none.

    A corrupt file raises :class:`StorageError` (E5002) naming it.
    """
    for path, legacy in ((entry_file(storage, repo, job_id, item_id), False),
                         (legacy_entry_file(storage, repo, job_id, item_id), True)):
        try:
            doc = _load(path, item_id)
        except FileNotFoundError:
            continue
        except _Corrupt as exc:
            raise StorageError(E_CHECKPOINT_CORRUPT, f"DLQ entry {path} is corrupt "
                               f"({exc.reason})", hint="repair or delete the file",
                               path=path) from None
        return DlqEntry(repo=repo, job_id=job_id, item_id=item_id, path=path, legacy=legacy,
                        doc=doc)
    return None


def read_index(storage: Storage, repo: str, job_id: str) -> dict[str, Any] | None:
    """The job's ``index.json``, ``None`` when missing or unreadable."""
    try:
        doc = json.loads(index_file(storage, repo, job_id).read_bytes().decode("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return doc if isinstance(doc, dict) else None


# ----------------------------------------------------------------------------- writing


@contextlib.contextmanager
def _job_lock(storage: Storage, job_id: str) -> Iterator[None]:
    with repo_lock(_lock_file(storage, job_id)):
        yield


def _write(path: Path, doc: Mapping[str, Any], mask: Callable[[str], str]) -> None:
    atomic_write_bytes(path, mask(dumps_json(doc)).encode("utf-8"))


def write_index(storage: Storage, repo: str, job_id: str, *, now: str | None = None,
                repo_path: str | None = None,
                mask: Callable[[str], str] | None = None) -> dict[str, Any]:
    """Rewrite ``index.json`` from the entries on disk (new and legacy places).

    ``repo_path`` (not in spec 09 §4.5; kept from the previous index when not given)
    records which repository the job belongs to, so that listings can tell apart two
    repositories with the same name and a purge knows where to delete branches.
    """
    mask = mask or storage.mask
    ids = set(_item_files(job_dir(storage, repo, job_id) / "items"))
    ids |= set(_item_files(_legacy_items_dir(storage, repo, job_id)))
    item_ids = sorted(ids, key=_natural)
    previous = read_index(storage, repo, job_id) or {}
    doc: dict[str, Any] = {"job_id": job_id, "item_count": len(item_ids), "item_ids": item_ids,
                           "updated_at": now or _now()}
    kept_path = repo_path if repo_path is not None else previous.get("repo_path")
    if isinstance(kept_path, str) and kept_path:
        doc["repo_path"] = kept_path
    _write(index_file(storage, repo, job_id), doc, mask)
    return doc


def _record(*, attempt_number: int, timestamp: str, error_type: Any, error_message: str,
            stack_trace: str | None, agent_id: str | None, step_failed: str | None,
            step_index: int | None, exit_code: int | None, duration_ms: int | None,
            error_context: Sequence[str], json_log_location: str | None,
            conflicting_files: Sequence[str]) -> dict[str, Any]:
    record: dict[str, Any] = {
        "attempt_number": attempt_number, "timestamp": timestamp, "error_type": error_type,
        "error_message": error_message, "stack_trace": stack_trace, "agent_id": agent_id,
        "step_failed": step_failed, "step_index": step_index, "exit_code": exit_code,
        "duration_ms": duration_ms,
    }
    if error_context:
        record["error_context"] = list(error_context)
    if json_log_location:
        record["json_log_location"] = json_log_location
    if conflicting_files:
        record["conflicting_files"] = list(conflicting_files)
    return record


def _artifacts(value: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if value is None:
        return None
    doc = {name: value.get(name) for name in _ARTIFACT_FIELDS}
    doc.update({k: v for k, v in value.items() if k not in doc})
    return doc


def _check_error_type(error_type: Any) -> None:
    ok = (isinstance(error_type, str) and error_type) or (
        isinstance(error_type, Mapping) and len(error_type) == 1
        and isinstance(next(iter(error_type)), str))
    if not ok:
        raise TypeError(f"error_type must be a name or a one-key object (spec 05 §13.2), "
                        f"got {error_type!r}")


def add_failure(
    storage: Storage,
    repo: str,
    job_id: str,
    *,
    item_id: str,
    item_data: Any,
    error_type: Any,
    error_message: str,
    timestamp: str | None = None,
    agent_id: str | None = None,
    step_failed: str | None = None,
    step_index: int | None = None,
    exit_code: int | None = None,
    duration_ms: int | None = None,
    stack_trace: str | None = None,
    error_context: Sequence[str] = (),
    json_log_location: str | None = None,
    conflicting_files: Sequence[str] = (),
    worktree_artifacts: Mapping[str, Any] | None = None,
    error_signature: str | None = None,
    manual_review_required: bool | None = None,
    attempt_number: int | None = None,
    repo_path: str | None = None,
    mask: Callable[[str], str] | None = None,
) -> dict[str, Any]:
    """Record a failure of ``item_id`` in the job's DLQ and return the entry written.

    A new entry gets every field of spec 09 §4.5.  When the item already has one (also in
    the legacy place), ``failure_count`` goes up by one, a ``failure_history`` record is
    appended, and ``item_data``, ``last_attempt``, ``error_signature`` and the review
    flags follow the newest failure; ``first_attempt`` is kept.  ``worktree_artifacts``
    replaces the stored value when it is a non-empty mapping; omitted or ``None`` keeps
    the stored value (a branch kept by an earlier attempt must not be forgotten); an
    empty mapping ``{}`` clears it.

    ``timestamp`` (RFC 3339) defaults to now; ``attempt_number`` to the new
    ``failure_count``; ``exit_code`` to the one in a ``CommandFailed`` error type;
    ``error_signature`` and ``manual_review_required`` are computed (spec 05 §13.3,
    §13.4) when not given, and ``reprocess_eligible`` is the negation of the latter.
    The index is rewritten.  ``mask`` (default ``storage.mask``) is applied to the text
    of every file written.  A corrupt existing entry is kept as ``<item_id>.json.corrupt``
    (warning W5003 in ``storage.warnings``) and a new entry is started.
    """
    _check_error_type(error_type)
    mask = mask or storage.mask
    when = timestamp or _now()
    if exit_code is None and isinstance(error_type, Mapping):
        detail = error_type.get(error_type_name(error_type))
        if isinstance(detail, Mapping) and isinstance(detail.get("exit_code"), int):
            exit_code = detail["exit_code"]
    signature = error_signature or _signature_of(error_type, error_message)
    review = (needs_manual_review(error_type, error_message)
              if manual_review_required is None else bool(manual_review_required))
    path = entry_file(storage, repo, job_id, item_id)
    with _job_lock(storage, job_id):
        try:
            existing = read_entry(storage, repo, job_id, item_id)
        except StorageError as exc:
            existing = None
            with contextlib.suppress(OSError):
                os.replace(exc.path or path, f"{exc.path or path}.corrupt")
            storage.warnings.append(f"{W_UNREADABLE_FILE}: {exc.message}; it was kept as "
                                    f"{exc.path or path}.corrupt and a new entry started")
        old = dict(existing.doc) if existing is not None else {}
        history = [r for r in old.get("failure_history") or [] if isinstance(r, Mapping)]
        count = (existing.failure_count if existing is not None else 0) + 1
        history.append(_record(
            attempt_number=count if attempt_number is None else attempt_number,
            timestamp=when, error_type=error_type, error_message=error_message,
            stack_trace=stack_trace, agent_id=agent_id, step_failed=step_failed,
            step_index=step_index, exit_code=exit_code, duration_ms=duration_ms,
            error_context=error_context, json_log_location=json_log_location,
            conflicting_files=conflicting_files))
        if worktree_artifacts is None:
            artifacts = old.get("worktree_artifacts")  # a branch kept earlier stays on record
        else:
            artifacts = _artifacts(worktree_artifacts) if worktree_artifacts else None
        doc: dict[str, Any] = {
            "item_id": item_id,
            "item_data": item_data,
            "first_attempt": old.get("first_attempt") or when,
            "last_attempt": when,
            "failure_count": count,
            "failure_history": history,
            "error_signature": signature,
            "worktree_artifacts": artifacts,
            "reprocess_eligible": not review,
            "manual_review_required": review,
        }
        doc.update({k: v for k, v in old.items() if k not in doc})  # unknown fields kept
        _write(path, doc, mask)
        if existing is not None and existing.legacy:
            with contextlib.suppress(OSError):
                existing.path.unlink()
        write_index(storage, repo, job_id, now=when, repo_path=repo_path, mask=mask)
    return doc


def _signature_of(error_type: Any, message: str) -> str:
    return error_signature(error_type, message)


def remove(storage: Storage, repo: str, job_id: str, item_id: str, *, now: str | None = None,
           mask: Callable[[str], str] | None = None) -> bool:
    """Delete the item's entry (new and legacy places) and rewrite the index.

    Returns whether there was an entry.  Branches are not touched
    (:func:`prodigy_effects.dlq_cleanup.remove_artifacts`), no event is logged.
    """
    paths = (entry_file(storage, repo, job_id, item_id),
             legacy_entry_file(storage, repo, job_id, item_id))
    with _job_lock(storage, job_id):
        found = False
        for path in paths:
            try:
                path.unlink()
            except FileNotFoundError:
                continue
            found = True
        if found:
            write_index(storage, repo, job_id, now=now, mask=mask)
    return found


def prune_job(storage: Storage, repo: str, job_id: str) -> bool:
    """Remove the job's DLQ directory when no entry file is left in it.

    Only ``index.json`` files and empty directories may remain (a corrupt entry keeps
    the directory).  Returns whether it was removed.
    """
    root = job_dir(storage, repo, job_id)
    with _job_lock(storage, job_id):
        if not root.is_dir():
            return False
        for _dirpath, _dirnames, filenames in os.walk(root):
            if any(name != "index.json" for name in filenames):
                return False
        shutil.rmtree(root, ignore_errors=True)
        return not root.exists()
