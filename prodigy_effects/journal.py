"""The run journal: append-only JSON-lines event logs (spec 09 §5).

Theory of operation
-------------------
A run's log is the directory ``<storage>/events/<repo>/<run_id>/``. Each process that
writes events for the run opens its own new file ``events-<YYYYMMDD_HHMMSS>.jsonl``
(UTC start time, ``-<pid>`` appended when the name is taken) through one
:class:`JournalWriter`. Each event is one line holding the envelope of §5.3, written
with a single ``write`` on an ``O_APPEND`` descriptor as it happens (no batching);
:meth:`JournalWriter.sync` ``fsync``-s the file, which the interpreter does before
each checkpoint. ``seq`` is strictly increasing across all files of a run: a new
writer starts at ``last_seq(run_dir) + 1``. The serialised line passes through a
``mask`` callable so secret values never reach disk.

Readers take the files in order (start time, then first ``seq``), skip a torn last
line left by a crash (counting it in :class:`JournalReadStats`), and normalise the
original tool's DLQ event names ``d_l_q_*`` to ``dlq_*`` (§5.6).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import attrs

from prodigy_core import __version__
from prodigy_core.reprs import shows_fields
from prodigy_effects.fsutil import ensure_dir, fsync_dir
from prodigy_effects.storage import E_NOT_WRITABLE, StorageError

if TYPE_CHECKING:
    from prodigy_effects.storage import Storage

__all__ = [
    "JournalReadStats",
    "JournalWriter",
    "event_files",
    "follow",
    "last_seq",
    "list_run_dirs",
    "normalise_envelope",
    "normalise_event_type",
    "prodigy_version",
    "read_events",
]

_FILE_RE = re.compile(r"^events-(\d{8}_\d{6})(?:-(.+))?\.jsonl$")
_LEGACY_DLQ_PREFIX = "d_l_q_"
# Files whose first line has no seq (empty: just opened; or written by the original tool)
# sort after those that have one within the same start second.
_NO_SEQ = sys.maxsize


def prodigy_version() -> str:
    """The Prodigy version (``prodigy_core.__version__``)."""
    return __version__


def _identity(text: str) -> str:
    return text


def _write_failed(path: Path, exc: OSError, what: str) -> StorageError:
    return StorageError(
        E_NOT_WRITABLE,
        f"cannot {what} event log {path} ({exc.strerror or exc})",
        hint="check that the storage root is a writable directory with free space, or point "
        "PRODIGY_HOME at one",
        path=path,
    )


class JournalWriter:
    """The single event-log writer of this process for one run (spec 09 §5.2).

    Create it with :meth:`open`; it is also a context manager that closes the file.
    """

    def __init__(
        self,
        *,
        path: Path,
        fd: int,
        start_seq: int,
        mask: Callable[[str], str],
        host: str,
        pid: int,
        version: str,
    ) -> None:
        self.path = path
        self._fd: int | None = fd
        self._next_seq = start_seq
        self._mask = mask
        self._host = host
        self._pid = pid
        self._version = version

    @classmethod
    def open(
        cls,
        events_dir: Path,
        start_seq: int,
        clock_now: datetime,
        *,
        mask: Callable[[str], str] | None = None,
        host: str | None = None,
        pid: int | None = None,
        version: str | None = None,
    ) -> JournalWriter:
        """Create a new log file in ``events_dir``; the first event gets ``start_seq``.

        ``clock_now`` names the file (UTC; a naive datetime is taken as UTC). ``mask``
        is applied to every serialised line before it is written.
        """
        if start_seq < 1:
            raise ValueError(f"start_seq must be at least 1, got {start_seq}")
        events_dir = Path(events_dir)
        pid = os.getpid() if pid is None else pid
        moment = clock_now if clock_now.tzinfo is not None else clock_now.replace(tzinfo=UTC)
        stamp = moment.astimezone(UTC).strftime("%Y%m%d_%H%M%S")
        candidates = [f"events-{stamp}.jsonl", f"events-{stamp}-{pid}.jsonl"]
        candidates += [f"events-{stamp}-{pid}-{n}.jsonl" for n in range(2, 100)]
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | getattr(os, "O_CLOEXEC", 0)
        path = events_dir / candidates[0]
        try:
            ensure_dir(events_dir)
            for name in candidates:
                path = events_dir / name
                try:
                    fd = os.open(path, flags, 0o600)
                except FileExistsError:
                    continue
                break
            else:
                raise FileExistsError(17, "too many event files with this start time", str(path))
            fsync_dir(events_dir)
        except OSError as exc:
            raise _write_failed(path, exc, "create") from exc
        return cls(
            path=path,
            fd=fd,
            start_seq=start_seq,
            mask=mask or _identity,
            host=socket.gethostname() if host is None else host,
            pid=pid,
            version=prodigy_version() if version is None else version,
        )

    @property
    def next_seq(self) -> int:
        """The ``seq`` the next appended event will get."""
        return self._next_seq

    @property
    def closed(self) -> bool:
        return self._fd is None

    def append(
        self,
        event: dict[str, Any],
        *,
        correlation_id: str,
        timestamp: str,
        event_id: str,
        thread: str | None = None,
    ) -> int:
        """Write one event line (envelope of spec 09 §5.3) and return its ``seq``.

        The line is written with one ``write`` call and not buffered.
        """
        if self._fd is None:
            raise ValueError(f"event log {self.path} is closed")
        seq = self._next_seq
        meta: dict[str, Any] = {"host": self._host, "pid": self._pid}
        if thread is not None:
            meta["thread"] = thread
        meta["prodigy_version"] = self._version
        envelope = {
            "id": event_id,
            "seq": seq,
            "timestamp": timestamp,
            "correlation_id": correlation_id,
            "event": event,
            "metadata": meta,
        }
        line = self._mask(json.dumps(envelope, ensure_ascii=False, separators=(",", ":")))
        if "\n" in line or "\r" in line:
            raise ValueError("the mask introduced a line break into an event line")
        data = memoryview((line + "\n").encode("utf-8"))
        try:
            while data:
                written = os.write(self._fd, data)
                data = data[written:]
        except OSError as exc:
            raise _write_failed(self.path, exc, "append to") from exc
        self._next_seq = seq + 1
        return seq

    def sync(self) -> None:
        """``fsync`` the log, so a checkpoint never refers to events not on disk."""
        if self._fd is None:
            return
        try:
            os.fsync(self._fd)
        except OSError as exc:
            raise _write_failed(self.path, exc, "sync") from exc

    def close(self) -> None:
        """Sync and close the file (idempotent)."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            with contextlib.suppress(OSError):
                os.fsync(fd)
        finally:
            os.close(fd)

    def __enter__(self) -> JournalWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


# ----------------------------------------------------------------------------- reading


@shows_fields
@attrs.define(repr=False)
class JournalReadStats:
    """What a read skipped: ``torn_lines`` (an incomplete last line, left by a crash)
    and ``bad_lines`` (other lines that are not JSON objects), with descriptions."""

    files: int = 0
    events: int = 0
    torn_lines: int = 0
    bad_lines: int = 0
    problems: list[str] = attrs.field(factory=list)


def normalise_event_type(name: str) -> str:
    """``d_l_q_item_added`` → ``dlq_item_added`` (spec 09 §5.6); other names unchanged."""
    if name.startswith(_LEGACY_DLQ_PREFIX):
        return "dlq_" + name[len(_LEGACY_DLQ_PREFIX) :]
    return name


def normalise_envelope(envelope: dict[str, Any]) -> dict[str, Any]:
    """Return ``envelope`` with legacy event names normalised (a copy if anything changed)."""
    event = envelope.get("event")
    if isinstance(event, dict):
        name = event.get("event_type")
        if isinstance(name, str) and name.startswith(_LEGACY_DLQ_PREFIX):
            envelope = {**envelope, "event": {**event, "event_type": normalise_event_type(name)}}
    name = envelope.get("event_type")
    if isinstance(name, str) and name.startswith(_LEGACY_DLQ_PREFIX):
        envelope = {**envelope, "event_type": normalise_event_type(name)}
    return envelope


def _parse_line(line: bytes) -> dict[str, Any] | None:
    try:
        doc = json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    return doc if isinstance(doc, dict) else None


def _first_seq(path: Path) -> int | None:
    try:
        with open(path, "rb") as handle:
            line = handle.readline()
    except OSError:
        return None
    doc = _parse_line(line.rstrip(b"\r\n")) if line.strip() else None
    seq = None if doc is None else doc.get("seq")
    return seq if isinstance(seq, int) and not isinstance(seq, bool) else None


def event_files(run_dir: Path) -> list[Path]:
    """The run's event files in reading order: start time, then first ``seq``, then name.

    (Plain name order would put ``events-T-<pid>.jsonl`` before ``events-T.jsonl``.)
    """
    try:
        names = os.listdir(run_dir)
    except (FileNotFoundError, NotADirectoryError):
        return []
    keyed: list[tuple[str, int, bool, str]] = []
    for name in names:
        match = _FILE_RE.match(name)
        if match is None:
            continue
        first = _first_seq(Path(run_dir) / name)
        keyed.append(
            (match.group(1), _NO_SEQ if first is None else first, match.group(2) is not None, name)
        )
    keyed.sort()
    return [Path(run_dir) / key[3] for key in keyed]


def _read_file(path: Path, stats: JournalReadStats) -> Iterator[dict[str, Any]]:
    try:
        handle = open(path, "rb")  # noqa: SIM115 - closed by the with below
    except FileNotFoundError:
        return
    with handle:
        stats.files += 1
        number = 0
        for raw in handle:
            number += 1
            complete = raw.endswith(b"\n")
            line = raw.rstrip(b"\r\n")
            if not line.strip():
                continue
            doc = _parse_line(line)
            if doc is None:
                if complete:
                    stats.bad_lines += 1
                    stats.problems.append(f"{path}:{number}: not a JSON object; skipped")
                else:
                    stats.torn_lines += 1
                    stats.problems.append(f"{path}:{number}: incomplete last line; skipped")
                continue
            stats.events += 1
            yield normalise_envelope(doc)


def read_events(
    run_dir: Path, *, stats: JournalReadStats | None = None
) -> Iterator[dict[str, Any]]:
    """Every event envelope of the run, file by file in order (see :func:`event_files`).

    A torn last line and other unparseable lines are skipped and counted in ``stats``.
    """
    stats = JournalReadStats() if stats is None else stats
    for path in event_files(run_dir):
        yield from _read_file(path, stats)


def last_seq(run_dir: Path) -> int:
    """The largest ``seq`` in the run's log, 0 when there is none."""
    for path in reversed(event_files(run_dir)):
        best = 0
        for envelope in _read_file(path, JournalReadStats()):
            seq = envelope.get("seq")
            if isinstance(seq, int) and not isinstance(seq, bool) and seq > best:
                best = seq
        if best:
            return best
    return 0


def list_run_dirs(storage: Storage, repo: str | None = None) -> list[Path]:
    """Run directories ``events/<repo>/<run_id>`` (of one repository, or all), sorted."""
    base = storage.root / "events"
    repos = [repo] if repo is not None else _subdirs(base)
    found: list[Path] = []
    for name in repos:
        found.extend(base / name / run for run in _subdirs(base / name))
    return found


def _subdirs(path: Path) -> list[str]:
    try:
        return sorted(entry.name for entry in os.scandir(path) if entry.is_dir())
    except (FileNotFoundError, NotADirectoryError):
        return []


def follow(
    run_dir: Path,
    poll_interval: float,
    stop: Callable[[], bool],
    *,
    stats: JournalReadStats | None = None,
) -> Iterator[dict[str, Any]]:
    """Yield the run's events, then new ones as they are appended, until ``stop()``.

    Files created later (a resume) are picked up. Only complete lines are yielded; when
    ``stop()`` returns true, whatever is already on disk is yielded and the iterator
    ends. Blocks with ``time.sleep`` between polls.
    """
    stats = JournalReadStats() if stats is None else stats
    offsets: dict[Path, int] = {}
    pending: dict[Path, bytes] = {}
    line_numbers: dict[Path, int] = {}

    def drain() -> Iterator[dict[str, Any]]:
        for path in event_files(run_dir):
            offset = offsets.get(path, 0)
            try:
                with open(path, "rb") as handle:
                    handle.seek(offset)
                    data = handle.read()
            except FileNotFoundError:
                continue
            if not data:
                continue
            if path not in offsets:
                stats.files += 1
            offsets[path] = offset + len(data)
            lines = (pending.pop(path, b"") + data).split(b"\n")
            rest = lines.pop()
            if rest:
                pending[path] = rest
            for line in lines:
                line_numbers[path] = line_numbers.get(path, 0) + 1
                if not line.strip():
                    continue
                doc = _parse_line(line.rstrip(b"\r"))
                if doc is None:
                    stats.bad_lines += 1
                    stats.problems.append(
                        f"{path}:{line_numbers[path]}: not a JSON object; skipped"
                    )
                    continue
                stats.events += 1
                yield normalise_envelope(doc)

    while True:
        before = stats.events + stats.bad_lines
        yield from drain()
        if stop():
            yield from drain()
            return
        if stats.events + stats.bad_lines == before:
            time.sleep(poll_interval)
