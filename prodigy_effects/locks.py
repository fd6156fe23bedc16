"""Session and job locks: ``<storage>/resume_locks/<id>.lock`` (spec 09 §4.7, 08 §5.2).

Theory of operation
-------------------
A run holds the lock of its session (and job) for its whole duration. The lock file
is created exclusively and appears with its full content at once: the JSON is written
and ``fsync``-ed to a private temporary file which is then hard-linked to the lock
path (``link`` fails if the path exists, like ``O_CREAT|O_EXCL``, but a reader can
never see a half-written lock). Where hard links are not supported the file is
created with ``O_CREAT|O_EXCL`` directly.

If the lock exists and names this host and a process that is no longer running (or
is a zombie), it is stale: it is moved aside, checked to still be the same stale
content, removed (warning W5002, reported through the handle) and the lock is taken.
Otherwise :class:`LockHeld` (E5004) is raised with the three-line message of §4.7.
:meth:`LockHandle.release` removes the file only if it still holds our content.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import uuid
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

import attrs

from prodigy_core.reprs import value_class
from prodigy_effects.fsutil import ensure_dir, fsync_dir, rfc3339_ms
from prodigy_effects.storage import (
    E_LOCK_HELD,
    E_NOT_WRITABLE,
    W_STALE_LOCK,
    Storage,
    StorageError,
)

__all__ = [
    "LockHandle",
    "LockHeld",
    "LockInfo",
    "acquire_lock",
    "is_stale",
    "pid_alive",
    "read_lock",
]

_MAX_ATTEMPTS = 5


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class LockInfo:
    """The content of a lock file. ``readable`` is false when it could not be parsed;
    then the other fields are ``None``."""

    path: Path
    job_id: str | None
    process_id: int | None
    hostname: str | None
    acquired_at: str | None
    readable: bool = True


class LockHeld(StorageError):
    """E5004: another process holds the lock. ``message`` is the three lines of §4.7."""

    def __init__(self, lock_id: str, info: LockInfo) -> None:
        self.lock_id = lock_id
        self.info = info
        pid = "unknown" if info.process_id is None else str(info.process_id)
        host = info.hostname or "unknown host"
        acquired = info.acquired_at or "unknown time"
        message = (
            f"Resume already in progress for job {lock_id}\n"
            f"Lock held by: PID {pid} on {host} (acquired {acquired})\n"
            f"If no such process exists, delete {info.path}"
        )
        super().__init__(E_LOCK_HELD, message, path=info.path)


def pid_alive(pid: int) -> bool:
    """Whether a process with this PID exists on this host and is not a zombie."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    # Format: "pid (comm) state ..."; comm may contain spaces and parentheses.
    state = stat.rpartition(")")[2].split()[:1]
    return state != ["Z"]


def _parse_lock(path: Path, raw: bytes) -> LockInfo:
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        doc = None
    if not isinstance(doc, dict):
        return LockInfo(
            path=path, job_id=None, process_id=None, hostname=None, acquired_at=None, readable=False
        )
    pid = doc.get("process_id")
    return LockInfo(
        path=path,
        job_id=_str_or_none(doc.get("job_id")),
        process_id=pid if isinstance(pid, int) and not isinstance(pid, bool) else None,
        hostname=_str_or_none(doc.get("hostname")),
        acquired_at=_str_or_none(doc.get("acquired_at")),
    )


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def read_lock(path: Path) -> LockInfo | None:
    """The lock at ``path``, or ``None`` when there is none."""
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        return None
    return _parse_lock(Path(path), raw)


def is_stale(info: LockInfo, hostname: str | None = None) -> bool:
    """A lock of this host whose process is no longer running (spec 09 §4.7).

    An unreadable lock is never considered stale: its owner is unknown.
    """
    host = socket.gethostname() if hostname is None else hostname
    return (
        info.readable
        and info.hostname == host
        and info.process_id is not None
        and not pid_alive(info.process_id)
    )


class LockHandle:
    """A held lock. ``warnings`` carries W5002 text if a stale lock was removed."""

    def __init__(
        self, *, path: Path, lock_id: str, content: bytes, warnings: tuple[str, ...]
    ) -> None:
        self.path = path
        self.lock_id = lock_id
        self.content = content
        self.warnings = warnings
        self._released = False

    @property
    def released(self) -> bool:
        return self._released

    def release(self) -> bool:
        """Remove the lock file if it still holds our content; return whether it did."""
        if self._released:
            return False
        self._released = True
        try:
            if self.path.read_bytes() != self.content:
                return False
            self.path.unlink()
        except FileNotFoundError:
            return False
        return True

    def __enter__(self) -> LockHandle:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def _create_exclusive(path: Path, content: bytes) -> bool:
    """Create ``path`` with ``content`` if it does not exist; False if it does."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        try:
            os.write(fd, content)
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
                raise
            return _create_exclusive_direct(path, content)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
    fsync_dir(path.parent)
    return True


def _create_exclusive_direct(path: Path, content: bytes) -> bool:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    try:
        os.write(fd, content)
        os.fsync(fd)
    finally:
        os.close(fd)
    return True


def _remove_if_unchanged(path: Path, stale_raw: bytes) -> bool:
    """Remove the lock at ``path`` only if it still holds ``stale_raw``.

    The file is first renamed to a private name, so two processes cleaning the same
    stale lock cannot remove a fresh lock taken by one of them in between.
    """
    aside = path.with_name(f".{path.name}.stale.{os.getpid()}.{uuid.uuid4().hex}")
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return True  # someone else removed it; just try again
    try:
        raw = aside.read_bytes()
    except OSError:
        raw = b""
    if raw == stale_raw:
        aside.unlink()
        return True
    # We moved someone's fresh lock; put it back unless yet another one appeared.
    with contextlib.suppress(FileExistsError):
        os.link(aside, path)
    aside.unlink()
    return False


def acquire_lock(
    storage: Storage,
    lock_id: str,
    *,
    now: datetime | None = None,
    hostname: str | None = None,
    pid: int | None = None,
) -> LockHandle:
    """Take ``<storage>/resume_locks/<lock_id>.lock`` or raise :class:`LockHeld` (E5004).

    A stale lock (this host, process gone) is removed and reported as W5002 in
    ``handle.warnings``. I/O failures raise ``StorageError`` E5001.
    """
    path = storage.lock_file(lock_id)
    host = socket.gethostname() if hostname is None else hostname
    content = (
        json.dumps(
            {
                "job_id": lock_id,
                "process_id": os.getpid() if pid is None else pid,
                "hostname": host,
                "acquired_at": rfc3339_ms(now or datetime.now(UTC)),
            },
            indent=2,
        )
        + "\n"
    ).encode("utf-8")
    warnings: list[str] = []
    try:
        ensure_dir(path.parent)
        for _ in range(_MAX_ATTEMPTS):
            if _create_exclusive(path, content):
                return LockHandle(
                    path=path, lock_id=lock_id, content=content, warnings=tuple(warnings)
                )
            try:
                raw = path.read_bytes()
            except FileNotFoundError:
                continue  # released meanwhile
            info = _parse_lock(path, raw)
            if not is_stale(info, host):
                raise LockHeld(lock_id, info)
            if _remove_if_unchanged(path, raw):
                warnings.append(
                    f"{W_STALE_LOCK}: removed stale lock {path} left by PID {info.process_id} "
                    f"on {info.hostname} (acquired {info.acquired_at}); that process is no "
                    "longer running"
                )
    except OSError as exc:
        raise StorageError(
            E_NOT_WRITABLE,
            f"cannot create lock {path} ({exc.strerror or exc})",
            hint="check that the storage root is a writable directory with free space",
            path=path,
        ) from exc
    info = read_lock(path) or LockInfo(
        path=path, job_id=None, process_id=None, hostname=None, acquired_at=None, readable=False
    )
    raise LockHeld(lock_id, info)
