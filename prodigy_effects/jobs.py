"""The production ``Jobs``: MapReduce inputs and the job's files under the storage root.

``load_items`` performs ``LoadWorkItems`` (spec 05 §4.4, §5.1–§5.3); the other methods are
the job store: job state versions (``checkpoint-v<N>.json`` with ``metadata.json``, the
newest three kept; spec 09 §4.3), job files (``items/<item_id>.json``,
``map-results.json``) and the DLQ (``prodigy_effects.dlq_store``).  Every document is
masked before it is written, so secret values never reach disk.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import trio

from prodigy_core.job_ops import LoadWorkItems, RecordDLQ, WorkItemsFailed, WorkItemsLoaded
from prodigy_core.reprs import shows_fields
from prodigy_effects import spawn
from prodigy_effects.fsutil import atomic_write_bytes, dumps_json, ensure_dir, read_json

KEEP_VERSIONS = 3
COMMAND_TIMEOUT = 300.0
_FILE_LIKE = re.compile(r"^\S+\.(json|jsonl|ndjson)$")


def job_dir(root: Path, repo: str, job_id: str) -> Path:
    return root / "state" / repo / "mapreduce" / "jobs" / job_id


def versions(directory: Path) -> list[tuple[int, Path]]:
    """The job state versions in ``directory``, newest first."""
    found: list[tuple[int, Path]] = []
    if not directory.is_dir():
        return found
    for path in directory.glob("checkpoint-v*.json"):
        number = path.stem.removeprefix("checkpoint-v")
        if number.isdigit():
            found.append((int(number), path))
    return sorted(found, reverse=True)


def read_newest(directory: Path) -> tuple[dict[str, Any] | None, list[str]]:
    """The newest job state that parses, and warnings (W5001) about those that do not."""
    warnings: list[str] = []
    for number, path in versions(directory):
        try:
            doc = read_json(path)
        except (OSError, ValueError) as exc:
            warnings.append(f"W5001: job state version {number} ({path}) is unreadable "
                            f"({exc}); using the previous one")
            continue
        if isinstance(doc, dict):
            doc["checkpoint_version"] = number
            return doc, warnings
    return None, warnings


async def _generated_input(cwd: str, base: str | None) -> list[str]:
    """Files in the worktree root named ``*work-items.json`` that setup created."""
    from prodigy_effects.worktrees import git

    names: set[str] = set()
    others = await git(cwd, "ls-files", "--others", "--exclude-standard", "-z", check=False)
    names.update(p for p in others.stdout.decode("utf-8", "surrogateescape").split("\0") if p)
    if base:
        added = await git(cwd, "diff", "--name-only", "-z", "--diff-filter=A", base, "HEAD",
                          "--", check=False)
        names.update(p for p in added.stdout.decode("utf-8", "surrogateescape").split("\0")
                     if p)
    return sorted(n for n in names if "/" not in n and n.endswith("work-items.json"))


@shows_fields
@attrs.define(repr=False)
class RealJobs:
    """Loads map inputs and keeps a job's files in ``directory``."""

    directory: Path
    mask: Callable[[str], str] = attrs.field(default=lambda text: text)
    dlq: Any = None  # a ``prodigy_effects.dlq_store``-like writer: record(effect), forget(id)
    clock: Callable[[], str] | None = None
    version: int = 0

    async def load_items(self, effect: LoadWorkItems) -> WorkItemsLoaded | WorkItemsFailed:
        cid = effect.command_id
        text = effect.input.strip()
        path = Path(effect.cwd) / text
        if text and path.is_file():
            return self._read(cid, path, text, generated=False)
        if _FILE_LIKE.match(text):
            generated = await _generated_input(effect.cwd, effect.setup_base) \
                if effect.setup_base is not None else []
            if len(generated) == 1:
                return self._read(cid, Path(effect.cwd) / generated[0], generated[0],
                                  generated=True)
            return WorkItemsFailed(command_id=cid, code="E6001",
                                   message=f"map input file not found: {text}")
        return await self._command(effect)

    def _read(self, cid: int, path: Path, name: str, *,
              generated: bool) -> WorkItemsLoaded | WorkItemsFailed:
        try:
            data = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            return WorkItemsFailed(command_id=cid, code="E6002",
                                   message=f"cannot read map input {name}: {exc}")
        return WorkItemsLoaded(command_id=cid, kind="file", text=data, name=name,
                               generated=generated)

    async def _command(self, effect: LoadWorkItems) -> WorkItemsLoaded | WorkItemsFailed:
        cid = effect.command_id
        with trio.move_on_after(COMMAND_TIMEOUT) as scope:
            try:
                result = await spawn.run_process(
                    ["sh", "-c", effect.input], cwd=effect.cwd, env=dict(effect.env))
            except OSError as exc:
                return WorkItemsFailed(command_id=cid, code="E6003",
                                       message=f"map input command could not start: {exc}")
        if scope.cancelled_caught:
            return WorkItemsFailed(command_id=cid, code="E6003",
                                   message=f"map input command timed out after "
                                           f"{COMMAND_TIMEOUT:g} s: {effect.input}")
        stderr = result.stderr.decode("utf-8", "replace").strip()
        if result.returncode != 0:
            return WorkItemsFailed(
                command_id=cid, code="E6003",
                message=f"map input command failed with exit code {result.returncode}: "
                        f"{effect.input}" + (f"\n{stderr}" if stderr else ""))
        return WorkItemsLoaded(command_id=cid, kind="command",
                               text=result.stdout.decode("utf-8", "replace"),
                               name=effect.input)

    # --- the job store ---------------------------------------------------------------

    def _write(self, path: Path, doc: Any, *, durable: bool = True) -> None:
        ensure_dir(path.parent)
        atomic_write_bytes(path, self.mask(dumps_json(doc)).encode("utf-8"), durable=durable)

    def save_state(self, doc: dict[str, Any]) -> None:
        if not self.version:
            known = versions(self.directory)
            self.version = known[0][0] if known else 0
        self.version += 1
        out = dict(doc)
        out["checkpoint_version"] = self.version
        now = self.clock() if self.clock is not None else ""
        out["updated_at"] = now
        path = self.directory / f"checkpoint-v{self.version}.json"
        self._write(path, out)
        self._write(self.directory / "metadata.json", {
            "path": path.name, "version": self.version, "created_at": now,
            "size_bytes": path.stat().st_size})
        for number, old in versions(self.directory)[KEEP_VERSIONS:]:
            del number
            with contextlib.suppress(OSError):
                os.unlink(old)

    def save_file(self, name: str, content: Any, *, durable: bool = True) -> None:
        self._write(self.directory / name, content, durable=durable)

    def record_dlq(self, effect: RecordDLQ) -> None:
        if self.dlq is not None:
            self.dlq.record(effect)

    def forget_dlq(self, item_id: str) -> None:
        if self.dlq is not None:
            self.dlq.forget(item_id)


def as_json(doc: Any) -> str:
    return json.dumps(doc)
