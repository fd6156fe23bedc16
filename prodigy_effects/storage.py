"""The storage root: session records, standard checkpoints and workflow snapshots.

Theory of operation
-------------------
Everything Prodigy records lives under one root (spec 09 §1, §2). This module owns the
paths under it and reads and writes the JSON documents a separate codec produces from
core model objects. Documents are plain JSON-ready dicts here.

Versioned formats. Every document written carries ``"format"`` (``prodigy.checkpoint``,
``prodigy.session``, ``prodigy.workflow_snapshot``) and an integer ``"format_version"``.
On read, a document without ``format`` (written by the original tool) is format version
0; older versions are upgraded one step at a time through dict-to-dict migrations
(``MIGRATIONS``, ``SESSION_MIGRATIONS``); a version newer than this code understands is
an error and the file is never touched. Reading never rewrites a file: the upgraded
document is written in the current format by the next ordinary save. Unknown fields are
kept as they are (spec 09 §3.4).

Crash safety. Writes are atomic (:func:`prodigy_effects.fsutil.atomic_write_bytes`).
Before a checkpoint is replaced, the current file — if it parses — is kept as
``<name>.prev`` (a hard link, so no data is copied). If the newest checkpoint is
corrupt, the reader falls back to ``.prev`` and reports warning W5001.

Errors. Every failure is a :class:`StorageError` carrying a spec code (E5001…E5007), a
message naming the file, and a hint saying what to do. Warnings are returned as strings
that start with their code (``"W5001: …"``).
"""

from __future__ import annotations

import contextlib
import copy
import errno
import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import attrs

from prodigy_core.reprs import value_class
from prodigy_effects.fsutil import (
    atomic_write_bytes,
    dumps_json,
    ensure_dir,
)

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_FORMAT_VERSION",
    "E_CHECKPOINT_CORRUPT",
    "E_CHECKPOINT_NOT_FOUND",
    "E_COMPLETED",
    "E_LOCK_HELD",
    "E_NOT_WRITABLE",
    "E_SESSION_NOT_FOUND",
    "E_WORKFLOW_CHANGED",
    "MIGRATIONS",
    "SESSION_FORMAT",
    "SESSION_FORMAT_VERSION",
    "SESSION_MIGRATIONS",
    "SNAPSHOT_FORMAT",
    "SNAPSHOT_FORMAT_VERSION",
    "W_CHECKPOINT_FALLBACK",
    "W_STALE_LOCK",
    "W_UNREADABLE_FILE",
    "Migration",
    "Storage",
    "StorageError",
    "resolve_storage_root",
]

# Error codes (spec 10 §8.2) and warning codes (§8.3) used by the storage layer.
E_NOT_WRITABLE = "E5001"
E_CHECKPOINT_CORRUPT = "E5002"
E_CHECKPOINT_NOT_FOUND = "E5003"
E_LOCK_HELD = "E5004"
E_SESSION_NOT_FOUND = "E5005"
E_COMPLETED = "E5006"
E_WORKFLOW_CHANGED = "E5007"
W_CHECKPOINT_FALLBACK = "W5001"
W_STALE_LOCK = "W5002"
#: Not in spec 10 §8.3 yet: a state file that cannot be read was skipped by a listing.
W_UNREADABLE_FILE = "W5003"

CHECKPOINT_FORMAT = "prodigy.checkpoint"
CHECKPOINT_FORMAT_VERSION = 1
SESSION_FORMAT = "prodigy.session"
SESSION_FORMAT_VERSION = 1
SNAPSHOT_FORMAT = "prodigy.workflow_snapshot"
SNAPSHOT_FORMAT_VERSION = 1

Migration = Callable[[dict[str, Any]], dict[str, Any]]


class StorageError(Exception):
    """A storage operation failed; ``code`` is the spec error code (E5001…E5007).

    ``message`` says what is wrong and names the file; ``hint`` says what to do.
    ``str(error)`` is ``"<message>; <hint>"``.
    """

    def __init__(
        self,
        code: str,
        message: str,
        *,
        hint: str | None = None,
        path: str | os.PathLike[str] | None = None,
    ) -> None:
        self.code = code
        self.message = message
        self.hint = hint
        self.path = None if path is None else os.fspath(path)
        super().__init__(self.__str__())

    def __str__(self) -> str:
        return self.message if self.hint is None else f"{self.message}; {self.hint}"


def resolve_storage_root(environ: Mapping[str, str], home: Path) -> Path:
    """``$PRODIGY_HOME``, else ``$PRODIGY_STORAGE_DIR``, else ``<home>/.prodigy`` (09 §1.1).

    Empty values count as unset.
    """
    for name in ("PRODIGY_HOME", "PRODIGY_STORAGE_DIR"):
        value = environ.get(name)
        if value:
            return Path(value).expanduser()
    return Path(home) / ".prodigy"


# --------------------------------------------------------------------------- migrations


def _stamp(doc: dict[str, Any], fmt: str, version: int) -> dict[str, Any]:
    """A copy of ``doc`` with ``format``/``format_version`` first and set to the values."""
    rest = {k: v for k, v in doc.items() if k not in ("format", "format_version")}
    return {"format": fmt, "format_version": version, **rest}


def _checkpoint_v0_to_v1(doc: dict[str, Any]) -> dict[str, Any]:
    """Original tool's checkpoint → format 1: stamp it and default the new fields (09 §4.2)."""
    new = _stamp(copy.deepcopy(doc), CHECKPOINT_FORMAT, 1)
    new.setdefault("version", 1)
    new.setdefault("session_id", new.get("workflow_id"))
    new.setdefault("variable_state", {})
    new.setdefault("mapreduce_state", None)
    new.setdefault("inputs", {"args": [], "map_patterns": [], "current_input_index": 0})
    new.setdefault("profile", None)
    new.setdefault("parameters", {})
    new.setdefault("foreach_state", None)
    new.setdefault("nested_state", {})
    new.setdefault("last_event_seq", 0)
    steps = new.get("completed_steps")
    if steps is None:
        new["completed_steps"] = []
    elif isinstance(steps, list):
        for step in steps:
            if isinstance(step, dict):
                step.setdefault("status", "succeeded" if step.get("success") else "failed")
                step.setdefault("exit_code", None)
    else:
        raise TypeError("completed_steps is not a list")
    return new


def _session_v0_to_v1(doc: dict[str, Any]) -> dict[str, Any]:
    """Original tool's session record → format 1: stamp it and default the new fields (09 §4.1)."""
    new = _stamp(copy.deepcopy(doc), SESSION_FORMAT, 1)
    new.setdefault("repo_name", None)
    new.setdefault("repo_path", None)
    new.setdefault("worktree", None)
    new.setdefault("merge", {"target": None, "merged": False, "reason": None})
    new.setdefault("analytics", None)
    new.setdefault("checkpoints", [])
    new.setdefault("timings", {})
    new.setdefault("error", None)
    new.setdefault("workflow_data", None)
    new.setdefault("mapreduce_data", None)
    new.setdefault("completed_at", None)
    return new


def _snapshot_v0_to_v1(doc: dict[str, Any]) -> dict[str, Any]:
    return _stamp(copy.deepcopy(doc), SNAPSHOT_FORMAT, 1)


#: Checkpoint migrations: ``MIGRATIONS[k]`` turns format version k into k + 1.
MIGRATIONS: dict[int, Migration] = {0: _checkpoint_v0_to_v1}
#: Session record migrations, same convention.
SESSION_MIGRATIONS: dict[int, Migration] = {0: _session_v0_to_v1}
SNAPSHOT_MIGRATIONS: dict[int, Migration] = {0: _snapshot_v0_to_v1}


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class _Kind:
    """How one kind of document is named, versioned and migrated."""

    label: str
    format: str
    current: int
    migrations: Mapping[int, Migration]


_CHECKPOINT = _Kind(
    label="checkpoint",
    format=CHECKPOINT_FORMAT,
    current=CHECKPOINT_FORMAT_VERSION,
    migrations=MIGRATIONS,
)
_SESSION = _Kind(
    label="session record",
    format=SESSION_FORMAT,
    current=SESSION_FORMAT_VERSION,
    migrations=SESSION_MIGRATIONS,
)
_SNAPSHOT = _Kind(
    label="workflow snapshot",
    format=SNAPSHOT_FORMAT,
    current=SNAPSHOT_FORMAT_VERSION,
    migrations=SNAPSHOT_MIGRATIONS,
)


class _Corrupt(Exception):
    """Internal: the file exists but does not hold a usable document; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _parse(raw: bytes) -> dict[str, Any]:
    if not raw.strip():
        raise _Corrupt("the file is empty")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _Corrupt(f"not valid UTF-8 at byte {exc.start}") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _Corrupt(
            f"not valid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from None
    if not isinstance(doc, dict):
        raise _Corrupt(f"expected a JSON object, found {type(doc).__name__}")
    return doc


def _too_new(kind: _Kind, path: Path, version: int) -> StorageError:
    return StorageError(
        E_CHECKPOINT_CORRUPT,
        f"{kind.label} {path} was written by a newer Prodigy (format version {version}, "
        f"this version understands up to {kind.current})",
        hint="upgrade Prodigy; the file was left unchanged",
        path=path,
    )


def _upgrade(doc: dict[str, Any], kind: _Kind, path: Path) -> dict[str, Any]:
    """Check the format stamp and migrate ``doc`` to ``kind.current``.

    Raises ``_Corrupt`` for a foreign or malformed stamp or a failing migration, and
    ``StorageError`` for a version newer than this code understands.
    """
    version = 0
    if "format" in doc:
        if doc["format"] != kind.format:
            raise _Corrupt(f"format is {doc['format']!r}, expected {kind.format!r}")
        stamped = doc.get("format_version")
        if not isinstance(stamped, int) or isinstance(stamped, bool) or stamped < 0:
            raise _Corrupt(f"format_version is {stamped!r}, expected a non-negative integer")
        version = stamped
    if version > kind.current:
        raise _too_new(kind, path, version)
    while version < kind.current:
        migrate = kind.migrations.get(version)
        if migrate is None:
            raise _Corrupt(f"no migration from format version {version}")
        try:
            doc = migrate(doc)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise _Corrupt(
                f"cannot upgrade from format version {version}: {type(exc).__name__}: {exc}"
            ) from None
        version += 1
        doc["format_version"] = version
    return doc


def _os_reason(exc: OSError) -> str:
    reasons = {
        errno.ENOSPC: "no space left on device",
        errno.EDQUOT: "disk quota exceeded",
        errno.EACCES: "permission denied",
        errno.EPERM: "operation not permitted",
        errno.EROFS: "read-only file system",
        errno.ENOTDIR: "a component of the path is not a directory",
        errno.EEXIST: "a file is in the way",
        errno.EISDIR: "it is a directory",
    }
    reason = reasons.get(exc.errno or 0) or exc.strerror or str(exc)
    if exc.filename is not None:
        reason = f"{reason}: {exc.filename}"
    return reason


def _prev_path(path: Path) -> Path:
    return path.with_name(path.name + ".prev")


def _check_id(value: str, what: str) -> str:
    if (
        not value
        or value in (".", "..")
        or "/" in value
        or "\\" in value
        or "\0" in value
        or value.startswith(".")
    ):
        raise ValueError(f"invalid {what} {value!r}: it must be a plain file name")
    return value


def _identity(text: str) -> str:
    return text


def _signature(path: Path) -> tuple[int, int, int] | None:
    """Identity of a file's current content (inode, size, mtime), None if missing."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


class Storage:
    """The storage root and the documents under it (spec 09 §2, §4.1, §4.2, §4.8).

    ``mask`` is applied to the serialised text of every document written, so that
    secret values never reach disk (spec 11 §9). ``warnings`` collects warnings from
    listings (``list_sessions``); callers may read and clear it.
    """

    def __init__(self, root: Path, *, mask: Callable[[str], str] | None = None) -> None:
        self.root = Path(root)
        self.mask: Callable[[str], str] = mask or _identity
        self.warnings: list[str] = []
        self._written: dict[Path, tuple[int, int, int] | None] = {}

    def __repr__(self) -> str:
        return f"Storage({str(self.root)!r})"

    def with_mask(self, mask: Callable[[str], str]) -> Storage:
        """A view of the same root that masks with ``mask``."""
        return Storage(self.root, mask=mask)

    # ------------------------------------------------------------------ paths

    def session_file(self, session_id: str) -> Path:
        return self.root / "sessions" / f"{_check_id(session_id, 'session id')}.json"

    def state_dir(self, session_id: str) -> Path:
        return self.root / "state" / _check_id(session_id, "session id")

    def checkpoint_file(self, session_id: str) -> Path:
        sid = _check_id(session_id, "session id")
        return self.state_dir(sid) / "checkpoints" / f"{sid}.checkpoint.json"

    def snapshot_file(self, session_id: str) -> Path:
        return self.state_dir(session_id) / "workflow.snapshot.json"

    def events_dir(self, repo: str, run_id: str) -> Path:
        return (
            self.root / "events" / _check_id(repo, "repository name") / _check_id(run_id, "run id")
        )

    def lock_file(self, lock_id: str) -> Path:
        return self.root / "resume_locks" / f"{_check_id(lock_id, 'lock id')}.lock"

    def worktrees_dir(self, repo: str) -> Path:
        """``worktrees/<repo>/``: session and named worktrees of a repository."""
        return self.root / "worktrees" / _check_id(repo, "repository name")

    def worktree_path(self, repo: str, name: str) -> Path:
        return self.worktrees_dir(repo) / _check_id(name, "worktree name")

    def worktree_meta_file(self, repo: str, name: str) -> Path:
        """``worktrees/<repo>/.metadata/<name>.json`` (spec 09 §4.6)."""
        return self.worktrees_dir(repo) / ".metadata" / f"{_check_id(name, 'worktree name')}.json"

    def repo_lock_file(self, repo: str) -> Path:
        """The per-repository lock that serialises git operations on shared state."""
        return self.root / "resume_locks" / f"git-{_check_id(repo, 'repository name')}.lock"

    def transcripts_dir(self) -> Path:
        return self.root / "logs" / "claude-streaming"

    # ------------------------------------------------------------------ root

    def ensure(self) -> None:
        """Create the root (mode 0700) if missing and prove it is writable (E5001 if not)."""
        try:
            if self.root.exists() and not self.root.is_dir():
                raise NotADirectoryError(errno.ENOTDIR, "not a directory", str(self.root))
            ensure_dir(self.root)
            probe = self.root / f".write-test-{os.getpid()}"
            fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.write(fd, b"ok")
                os.fsync(fd)
            finally:
                os.close(fd)
                with contextlib.suppress(OSError):
                    os.unlink(probe)
        except OSError as exc:
            raise StorageError(
                E_NOT_WRITABLE,
                f"storage root {self.root} is not writable ({_os_reason(exc)})",
                hint="make it a writable directory with free space, or point PRODIGY_HOME at one",
                path=self.root,
            ) from exc

    # ------------------------------------------------------------------ low level

    def _write_error(self, path: Path, exc: OSError, label: str) -> StorageError:
        return StorageError(
            E_NOT_WRITABLE,
            f"cannot write {label} {path} ({_os_reason(exc)}); the previous content, if any, "
            "was left unchanged",
            hint=f"check that the storage root {self.root} is a writable directory with free "
            "space, or point PRODIGY_HOME at one",
            path=path,
        )

    def _write_doc(self, path: Path, doc: dict[str, Any], label: str) -> None:
        data = self.mask(dumps_json(doc)).encode("utf-8")
        try:
            atomic_write_bytes(path, data)
        except OSError as exc:
            raise self._write_error(path, exc, label) from exc

    @staticmethod
    def _load(path: Path, kind: _Kind) -> dict[str, Any]:
        """Read, parse and upgrade one document.

        ``FileNotFoundError`` when missing, ``_Corrupt`` when unusable,
        ``StorageError`` when too new.
        """
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            raise
        except NotADirectoryError:
            raise FileNotFoundError(errno.ENOENT, "not found", str(path)) from None
        except OSError as exc:
            raise _Corrupt(f"cannot be read: {_os_reason(exc)}") from None
        return _upgrade(_parse(raw), kind, path)

    # ------------------------------------------------------------------ sessions

    def write_session(self, doc: Mapping[str, Any]) -> Path:
        """Write a session record atomically to ``sessions/<doc["id"]>.json``."""
        session_id = doc.get("id")
        if not isinstance(session_id, str):
            raise ValueError(f"session record has no string 'id': {session_id!r}")
        path = self.session_file(session_id)
        self._write_doc(path, _stamp(dict(doc), SESSION_FORMAT, SESSION_FORMAT_VERSION), "session")
        return path

    def _session_not_found(self, session_id: str) -> StorageError:
        return StorageError(
            E_SESSION_NOT_FOUND,
            f"session {session_id} not found (no {self.root / 'sessions' / session_id}.json)",
            hint="run `prodigy sessions ls` to see the sessions",
            path=self.root / "sessions",
        )

    def read_session(self, session_id: str) -> dict[str, Any]:
        """Read one session record (E5005 when missing, E5002 when unreadable or too new)."""
        try:
            path = self.session_file(session_id)
        except ValueError:
            raise self._session_not_found(session_id) from None
        try:
            return self._load(path, _SESSION)
        except FileNotFoundError:
            raise self._session_not_found(session_id) from None
        except _Corrupt as exc:
            raise StorageError(
                E_CHECKPOINT_CORRUPT,
                f"session record {path} is corrupt ({exc.reason})",
                hint="fix or delete the file",
                path=path,
            ) from None

    def scan_sessions(self, repo_path: str | None = None) -> tuple[list[dict[str, Any]], list[str]]:
        """All readable session records (of ``repo_path`` if given), newest first.

        Unreadable files are skipped and reported in the returned warnings (W5003).
        """
        directory = self.root / "sessions"
        sessions: list[dict[str, Any]] = []
        warnings: list[str] = []
        try:
            names = sorted(os.listdir(directory))
        except FileNotFoundError:
            return [], []
        except OSError as exc:
            return [], [f"{W_UNREADABLE_FILE}: cannot list {directory} ({_os_reason(exc)})"]
        for name in names:
            if name.startswith(".") or not name.endswith(".json"):
                continue
            path = directory / name
            try:
                doc = self._load(path, _SESSION)
            except FileNotFoundError:
                continue  # removed while listing
            except _Corrupt as exc:
                warnings.append(
                    f"{W_UNREADABLE_FILE}: skipped session record {path} ({exc.reason})"
                )
                continue
            except StorageError as exc:
                warnings.append(f"{W_UNREADABLE_FILE}: skipped {exc}")
                continue
            if repo_path is not None and doc.get("repo_path") != repo_path:
                continue
            sessions.append(doc)
        sessions.sort(key=lambda d: (str(d.get("started_at") or ""), str(d.get("id") or "")))
        sessions.reverse()
        return sessions, warnings

    def list_sessions(self, repo_path: str | None = None) -> list[dict[str, Any]]:
        """Like :meth:`scan_sessions`; the warnings are appended to ``self.warnings``."""
        sessions, warnings = self.scan_sessions(repo_path)
        self.warnings.extend(warnings)
        return sessions

    def find_session(self, prefix_or_id: str) -> dict[str, Any]:
        """The session with this id, else the only one whose id starts with it (E5005)."""
        try:
            if self.session_file(prefix_or_id).exists():
                return self.read_session(prefix_or_id)
        except ValueError:
            raise self._session_not_found(prefix_or_id) from None
        directory = self.root / "sessions"
        try:
            names = os.listdir(directory)
        except OSError:
            names = []
        matches = sorted(
            name[: -len(".json")]
            for name in names
            if name.endswith(".json") and not name.startswith(".") and name.startswith(prefix_or_id)
        )
        if not matches:
            raise self._session_not_found(prefix_or_id)
        if len(matches) > 1:
            shown = ", ".join(matches[:5]) + (", …" if len(matches) > 5 else "")
            raise StorageError(
                E_SESSION_NOT_FOUND,
                f"session id prefix {prefix_or_id!r} is ambiguous: it matches {shown}",
                hint="give more of the id; `prodigy sessions ls` shows them",
                path=directory,
            )
        return self.read_session(matches[0])

    # ------------------------------------------------------------------ checkpoints

    def _keep_previous(self, path: Path) -> None:
        """Keep the current checkpoint as ``<name>.prev`` if it parses as JSON.

        A corrupt current file is not kept, so ``.prev`` stays the last good one.
        """
        known = self._written.get(path)
        if known is not None and known == _signature(path):
            # we wrote this very file ourselves, atomically, a moment ago: it parses
            raw = b""
        else:
            try:
                raw = path.read_bytes()
            except OSError:
                return
            try:
                _parse(raw)
            except _Corrupt:
                return
        prev = _prev_path(path)
        tmp = path.with_name(f".{prev.name}.{os.getpid()}.tmp")
        try:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            try:
                os.link(path, tmp)
            except OSError:
                # No hard links here: copy the bytes instead.
                atomic_write_bytes(prev, raw or path.read_bytes())
            else:
                # no directory fsync: the previous version is a convenience, and the
                # rename of the new checkpoint that follows syncs the directory anyway
                os.replace(tmp, prev)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise self._write_error(prev, exc, "checkpoint") from exc

    def write_checkpoint(self, session_id: str, doc: Mapping[str, Any]) -> Path:
        """Stamp ``doc`` with the current format and write it atomically.

        The file it replaces is kept as ``<name>.prev`` for fallback (W5001).
        """
        path = self.checkpoint_file(session_id)
        stamped = _stamp(dict(doc), CHECKPOINT_FORMAT, CHECKPOINT_FORMAT_VERSION)
        self._keep_previous(path)
        self._write_doc(path, stamped, "checkpoint")
        self._written[path] = _signature(path)
        return path

    def read_checkpoint(self, session_id: str) -> tuple[dict[str, Any], list[str]]:
        """Read the session's checkpoint, upgraded to the current format.

        Returns ``(doc, warnings)``. Falls back to ``<name>.prev`` (W5001) when the
        newest file is corrupt. Missing → E5003; no usable version → E5002; written by
        a newer Prodigy → E5002 and the file is left untouched.
        """
        path = self.checkpoint_file(session_id)
        prev = _prev_path(path)
        hint = f"run `prodigy checkpoints validate {session_id} --repair` or delete it"
        current_problem: _Corrupt | None
        try:
            return self._load(path, _CHECKPOINT), []
        except FileNotFoundError:
            current_problem = None
        except _Corrupt as exc:
            current_problem = exc
        try:
            doc = self._load(prev, _CHECKPOINT)
        except FileNotFoundError:
            if current_problem is None:
                raise StorageError(
                    E_CHECKPOINT_NOT_FOUND,
                    f"no checkpoint for session {session_id} (expected {path})",
                    hint="run `prodigy checkpoints ls` to see the checkpoints",
                    path=path,
                ) from None
            raise StorageError(
                E_CHECKPOINT_CORRUPT,
                f"checkpoint {path} is corrupt ({current_problem.reason}) and there is no "
                "previous version to fall back to",
                hint=hint,
                path=path,
            ) from None
        except _Corrupt as prev_problem:
            if current_problem is None:
                message = (
                    f"checkpoint {path} is missing and its previous version {prev} is corrupt "
                    f"({prev_problem.reason})"
                )
            else:
                message = (
                    f"checkpoint {path} is corrupt ({current_problem.reason}) and its previous "
                    f"version {prev} is corrupt too ({prev_problem.reason})"
                )
            raise StorageError(E_CHECKPOINT_CORRUPT, message, hint=hint, path=path) from None
        what = "is missing" if current_problem is None else f"is corrupt ({current_problem.reason})"
        warning = (
            f"{W_CHECKPOINT_FALLBACK}: checkpoint {path} {what}; using the previous version {prev}"
        )
        return doc, [warning]

    # ------------------------------------------------------------------ snapshots

    def write_snapshot(self, session_id: str, doc: Mapping[str, Any]) -> Path:
        """Write the composed-workflow snapshot (spec 09 §4.8) atomically."""
        path = self.snapshot_file(session_id)
        self._write_doc(
            path, _stamp(dict(doc), SNAPSHOT_FORMAT, SNAPSHOT_FORMAT_VERSION), "snapshot"
        )
        return path

    def read_snapshot(self, session_id: str) -> dict[str, Any]:
        """Read the snapshot (E5003 when missing, E5002 when corrupt or too new)."""
        path = self.snapshot_file(session_id)
        try:
            return self._load(path, _SNAPSHOT)
        except FileNotFoundError:
            raise StorageError(
                E_CHECKPOINT_NOT_FOUND,
                f"workflow snapshot {path} not found for session {session_id}",
                hint="the workflow file itself is needed to resume this session",
                path=path,
            ) from None
        except _Corrupt as exc:
            raise StorageError(
                E_CHECKPOINT_CORRUPT,
                f"workflow snapshot {path} is corrupt ({exc.reason})",
                hint="resume with the workflow file present, or delete the snapshot",
                path=path,
            ) from None
