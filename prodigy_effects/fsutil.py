"""Small file-system helpers shared by the storage layer (spec 09 §3).

Every JSON state file is written atomically: a temporary file is created in the
target's own directory, written, flushed and ``fsync``-ed, renamed over the target
with ``os.replace`` and finally the directory itself is ``fsync``-ed, so a reader
(or a process restarted after ``SIGKILL``) sees either the old or the new content,
never a mix. Files are created with mode 0600 and directories with 0700 (§3.3).

These helpers raise plain ``OSError``; :mod:`prodigy_effects.storage` turns those
into ``StorageError`` values that name the file and say what to do.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

__all__ = [
    "DIR_MODE",
    "FILE_MODE",
    "atomic_write_bytes",
    "atomic_write_json",
    "dumps_json",
    "ensure_dir",
    "fsync_dir",
    "read_json",
    "rfc3339_ms",
]

FILE_MODE = 0o600
DIR_MODE = 0o700


def ensure_dir(path: Path, mode: int = DIR_MODE) -> None:
    """Create ``path`` and every missing parent with ``mode`` (0700 by default).

    ``os.makedirs`` only applies its mode to the leaf directory, so each missing
    component is created one by one. Existing directories are left as they are.
    """
    path = Path(path)
    missing: list[Path] = []
    current = path
    while not current.is_dir():
        missing.append(current)
        parent = current.parent
        if parent == current:
            break
        current = parent
    for directory in reversed(missing):
        try:
            directory.mkdir(mode=mode)
        except FileExistsError:
            if not directory.is_dir():
                raise
        else:
            # The process umask may have removed bits; 0700 is what we promise.
            os.chmod(directory, mode)


def fsync_dir(path: Path) -> None:
    """``fsync`` a directory so a rename inside it is durable (no-op where unsupported)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes, mode: int = FILE_MODE) -> None:
    """Replace ``path`` with ``data`` atomically (temp file, fsync, rename, fsync dir).

    On any error the temporary file is removed and the target is untouched.
    """
    path = Path(path)
    ensure_dir(path.parent)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    replaced = False
    try:
        try:
            os.fchmod(fd, mode)
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp_name, path)
        replaced = True
    finally:
        if not replaced:
            with contextlib.suppress(OSError):
                os.unlink(tmp_name)
    fsync_dir(path.parent)


def dumps_json(doc: Any) -> str:
    """Serialise ``doc`` the way every state file is written: 2-space indent, newline."""
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


def atomic_write_json(path: Path, doc: Any) -> None:
    """Write ``doc`` as pretty-printed UTF-8 JSON, atomically (spec 09 §3.1, §3.2)."""
    atomic_write_bytes(path, dumps_json(doc).encode("utf-8"))


def read_json(path: Path) -> Any:
    """Read and parse a UTF-8 JSON file.

    Raises ``FileNotFoundError`` (and other ``OSError``), ``UnicodeDecodeError`` or
    ``json.JSONDecodeError``; callers decide what those mean.
    """
    with open(path, "rb") as handle:
        raw = handle.read()
    return json.loads(raw.decode("utf-8"))


def rfc3339_ms(moment: datetime) -> str:
    """Format ``moment`` as RFC 3339 UTC with milliseconds and ``Z`` (spec 09 §3.2).

    A naive datetime is taken to be UTC already.
    """
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
