"""Helpers shared by the inspection and maintenance commands.

Argument types (durations, sizes), the confirmation question of destructive commands
(spec 08 §1.4), the repository scope of listings (§1.5), lock liveness and small
rendering helpers. Nothing here decides what to delete; the command modules do.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from prodigy_effects.locks import LockInfo, is_stale, read_lock
from prodigy_effects.storage import Storage

__all__ = [
    "E_CONFIRM",
    "E_USAGE",
    "Confirm",
    "age_of",
    "describe_lock",
    "duration_arg",
    "live_lock",
    "now_utc",
    "parse_size",
    "parse_time",
    "repo_filter",
    "size_arg",
    "table",
    "write_json",
]

E_USAGE = "E8001"
E_CONFIRM = "E8003"

_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?i?b?)\s*", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


def duration_arg(text: str) -> float:
    """argparse type: a duration (spec 01 §4.1: ``30s``, ``5m``, ``1h``, ``7d``, ``1h 30m``)."""
    from prodigy_core.parse.durations import parse_duration  # lazy: keeps start-up fast

    seconds = parse_duration(text)
    if seconds is None:
        raise argparse.ArgumentTypeError(
            f"invalid duration {text!r}; use forms like 30s, 10m, 1h, 7d or 1h30m")
    return seconds


def parse_size(text: str) -> int | None:
    """Bytes for ``1024``, ``512KB``, ``10MB``, ``1.5GiB`` (units are powers of 1024)."""
    match = _SIZE.fullmatch(text)
    if match is None:
        return None
    unit = match.group(2).lower().rstrip("b").rstrip("i")
    if unit not in _SIZE_UNITS:
        return None
    return int(float(match.group(1)) * _SIZE_UNITS[unit])


def size_arg(text: str) -> int:
    """argparse type: a size such as ``10MB``."""
    size = parse_size(text)
    if size is None:
        raise argparse.ArgumentTypeError(
            f"invalid size {text!r}; use forms like 1048576, 512KB, 10MB or 1GB")
    return size


def parse_time(value: Any) -> datetime | None:
    """An RFC 3339 timestamp as an aware datetime, ``None`` when absent or malformed."""
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def age_of(value: Any, now: datetime) -> float | None:
    """Seconds between the timestamp ``value`` and ``now`` (``None`` when unknown)."""
    moment = parse_time(value)
    return None if moment is None else (now - moment).total_seconds()


def repo_filter(args: argparse.Namespace, cwd: str) -> tuple[str | None, str | None]:
    """(repo_path, repo_name) of the current repository, or (None, None) for all (§1.5)."""
    if getattr(args, "all_repos", False):
        return None, None
    from prodigy_effects.runner import find_repo

    project = Path(cwd)
    if getattr(args, "path", None):
        project = project / args.path
    repo = find_repo(project)
    if not repo.is_git:
        return None, None
    return repo.root, repo.name


def live_lock(storage: Storage, run_id: str) -> LockInfo | None:
    """The lock held on ``run_id`` by a live process, else ``None``.

    A lock that cannot be read counts as live: its owner is unknown.
    """
    try:
        path = storage.lock_file(run_id)
    except ValueError:
        return None
    info = read_lock(path)
    if info is None or is_stale(info):
        return None
    return info


def describe_lock(info: LockInfo) -> str:
    pid = "unknown" if info.process_id is None else str(info.process_id)
    return f"locked by PID {pid} on {info.hostname or 'unknown host'}"


def table(rows: list[tuple[str, ...]], out: TextIO) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        out.write("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() + "\n")


def write_json(doc: Any, out: TextIO) -> None:
    out.write(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")


class Confirm:
    """Asks ``… (y/N)`` before a destructive action (spec 08 §1.4).

    ``stdin`` is the input stream; the terminal check is ``stdin.isatty()`` unless
    ``interactive`` says otherwise. ``assume_yes`` (from ``-y``/``--yes``/``-f``) skips
    the question. Without a terminal the action is refused with E8003.
    """

    def __init__(self, *, stdin: TextIO | None, err: TextIO, assume_yes: bool,
                 interactive: bool | None = None) -> None:
        self.stdin = sys.stdin if stdin is None else stdin
        self.err = err
        self.assume_yes = assume_yes
        self.interactive = interactive

    @classmethod
    def from_args(cls, args: argparse.Namespace, err: TextIO) -> Confirm:
        yes = bool(getattr(args, "yes", False) or getattr(args, "force", False))
        return cls(stdin=getattr(args, "stdin", None), err=err, assume_yes=yes,
                   interactive=getattr(args, "interactive", None))

    def _is_terminal(self) -> bool:
        if self.interactive is not None:
            return self.interactive
        try:
            return bool(self.stdin.isatty())
        except (AttributeError, ValueError, OSError):
            return False

    def ask(self, question: str) -> bool | None:
        """True to go ahead, False when the user declined, None when refused (no terminal).

        On ``None`` the E8003 error has already been written; the caller exits 2.
        """
        if self.assume_yes:
            return True
        if not self._is_terminal():
            self.err.write(f"error[{E_CONFIRM}]: confirmation needed ({question}) but there "
                           "is no terminal to ask; use --yes to confirm\n")
            return None
        self.err.write(f"{question} (y/N) ")
        self.err.flush()
        try:
            answer = self.stdin.readline()
        except (OSError, ValueError, KeyboardInterrupt):
            answer = ""
        if answer.strip().lower() in ("y", "yes"):
            return True
        self.err.write("Cancelled; nothing was changed.\n")
        return False


def now_utc() -> datetime:
    return datetime.now(UTC)
