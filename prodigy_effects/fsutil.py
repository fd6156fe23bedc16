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
from json.encoder import encode_basestring as _encode_str
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


def atomic_write_bytes(path: Path, data: bytes, mode: int = FILE_MODE, *,
                       durable: bool = True) -> None:
    """Replace ``path`` with ``data`` atomically (temp file, fsync, rename, fsync dir).

    On any error the temporary file is removed and the target is untouched.
    ``durable`` false skips both fsyncs: still all-or-nothing for every reader, but a
    power cut may lose it (for copies of data kept durably elsewhere).
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
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp_name, path)
        replaced = True
    finally:
        if not replaced:
            with contextlib.suppress(OSError):
                os.unlink(tmp_name)
    if durable:
        fsync_dir(path.parent)


_ENCODED: dict[int, tuple[Any, str]] = {}
_ENCODED_LIMIT = 100_000


def _compact(value: Any) -> str:
    # the common scalars without building an encoder each time (a checkpoint has
    # hundreds of them); the same text ``json.dumps(ensure_ascii=False)`` gives
    kind = type(value)
    if kind is str:
        return _encode_str(value)
    if value is None:
        return "null"
    if kind is bool:
        return "true" if value else "false"
    if kind is int:
        return int.__repr__(value)
    return json.dumps(value, ensure_ascii=False, separators=(", ", ": "))


def _key(name: Any) -> str:
    text = _KEYS.get(name)
    if text is None:
        text = _encode_str(str(name))
        if len(_KEYS) < 10_000:
            _KEYS[name] = text
    return text


_KEYS: dict[Any, str] = {}


def _compact_cached(value: Any) -> str:
    """Compact JSON of a record, remembered by identity.

    Checkpoints are rewritten after every step and repeat the same (never mutated)
    step records each time; encoding each record once keeps a run linear instead of
    quadratic.  The cache holds a reference to the object, so its id cannot be reused.
    """
    hit = _ENCODED.get(id(value))
    if hit is not None and hit[0] is value:
        return hit[1]
    text = _compact(value)
    if isinstance(value, dict):
        if len(_ENCODED) >= _ENCODED_LIMIT:
            _ENCODED.clear()
        _ENCODED[id(value)] = (value, text)
    return text


def _pretty(value: Any, indent: str, depth: int) -> str:
    """Pretty-print two levels deep; deeper values (and list records) go on one line.

    ``json.dumps(indent=…)`` falls back to the pure-Python encoder, which made a
    checkpoint per step the dominant cost of a run; this keeps the C encoder for the
    bulk of the data while the file stays readable (one key or record per line).
    """
    inner = indent + "  "
    if isinstance(value, dict) and value and depth < 2:
        items = [f"{inner}{_key(k)}: {_pretty(v, inner, depth + 1)}"
                 for k, v in value.items()]
        return "{\n" + ",\n".join(items) + "\n" + indent + "}"
    if isinstance(value, list) and value and depth < 2 and any(
        isinstance(v, dict | list) for v in value
    ):
        items = [inner + _compact_cached(v) for v in value]
        return "[\n" + ",\n".join(items) + "\n" + indent + "]"
    return _compact(value)


def dumps_json(doc: Any) -> str:
    """Serialise ``doc`` the way every state file is written: 2-space indent, newline."""
    return _pretty(doc, "", 0) + "\n"


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
