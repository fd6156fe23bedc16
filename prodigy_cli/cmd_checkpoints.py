"""``prodigy checkpoints show --version|validate|delete|clean|mapreduce`` (spec 08 §2.12).

A standard checkpoint has two versions on disk (spec 09 §4.2 and the storage module):
version 1 is ``<id>.checkpoint.json`` (the current one), version 2 is
``<id>.checkpoint.json.prev`` (the one it replaced). ``validate`` parses each version
the way the storage layer does (format stamp, migrations) and checks that it is
consistent (indexes in range, counts add up, the id matches, the session's worktree
exists while it can still be resumed). ``--repair`` removes the versions that are
corrupt or inconsistent; when the current one goes and the previous one is good, the
previous one is renamed into place so it is read without a fallback warning.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
from pathlib import Path
from typing import Any, TextIO

import attrs

from prodigy_cli.cli_support import (
    Confirm,
    describe_lock,
    live_lock,
    repo_filter,
    write_json,
)
from prodigy_core.reprs import value_class
from prodigy_effects.storage import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_FORMAT_VERSION,
    E_CHECKPOINT_CORRUPT,
    E_CHECKPOINT_NOT_FOUND,
    E_LOCK_HELD,
    MIGRATIONS,
    Storage,
    StorageError,
)

__all__ = ["checkpoint_show_version", "dispatch"]

_VERSION_NAMES = {1: "current", 2: "previous"}


def dispatch(action: str, args: argparse.Namespace, storage: Storage, out: TextIO,
             err: TextIO, cwd: str) -> int:
    if action == "validate":
        return checkpoints_validate(args, storage, out, err)
    if action == "delete":
        return checkpoints_delete(args, storage, out, err)
    if action == "clean":
        return checkpoints_clean(args, storage, out, err, cwd)
    if action == "mapreduce":
        err.write("error[E8001]: `prodigy checkpoints mapreduce` lists the checkpoint versions "
                  "of a MapReduce job, but it does not exist yet in this version of Prodigy "
                  "(MapReduce jobs cannot run yet).\n")
        return 2
    return 2


# --------------------------------------------------------------------------- loading


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class Version:
    """One version of a checkpoint on disk and what validation found."""

    number: int
    path: Path
    status: str  # valid | corrupt | inconsistent | too_new | missing
    problems: tuple[str, ...] = ()
    doc: dict[str, Any] | None = None

    @property
    def usable(self) -> bool:
        return self.status == "valid"

    @property
    def removable(self) -> bool:
        return self.status in ("corrupt", "inconsistent")

    def as_json(self) -> dict[str, Any]:
        return {"version": self.number, "name": _VERSION_NAMES[self.number],
                "path": str(self.path), "status": self.status, "problems": list(self.problems)}


def _paths(storage: Storage, sid: str) -> tuple[Path, Path] | None:
    try:
        current = storage.checkpoint_file(sid)
    except ValueError:
        return None
    return current, current.with_name(current.name + ".prev")


def _not_found(sid: str, err: TextIO) -> int:
    err.write(f"error[{E_CHECKPOINT_NOT_FOUND}]: no checkpoint for session {sid}\n"
              "  hint: run `prodigy checkpoints ls` to see the checkpoints\n")
    return 2


def _parse(path: Path) -> tuple[dict[str, Any] | None, str, str | None]:
    """(doc, status, reason) for one file, upgraded like the storage layer does."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None, "missing", None
    except OSError as exc:
        return None, "corrupt", f"cannot be read: {exc.strerror or exc}"
    if not raw.strip():
        return None, "corrupt", "the file is empty"
    try:
        doc = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        return None, "corrupt", f"not valid UTF-8 at byte {exc.start}"
    except json.JSONDecodeError as exc:
        return None, "corrupt", f"not valid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
    if not isinstance(doc, dict):
        return None, "corrupt", f"expected a JSON object, found {type(doc).__name__}"
    version = 0
    if "format" in doc:
        if doc["format"] != CHECKPOINT_FORMAT:
            return None, "corrupt", f"format is {doc['format']!r}, expected {CHECKPOINT_FORMAT!r}"
        stamped = doc.get("format_version")
        if not isinstance(stamped, int) or isinstance(stamped, bool) or stamped < 0:
            return None, "corrupt", f"format_version is {stamped!r}"
        version = stamped
    if version > CHECKPOINT_FORMAT_VERSION:
        return None, "too_new", (f"written by a newer Prodigy (format version {version}, this "
                                 f"version understands up to {CHECKPOINT_FORMAT_VERSION})")
    while version < CHECKPOINT_FORMAT_VERSION:
        migrate = MIGRATIONS.get(version)
        if migrate is None:
            return None, "corrupt", f"no migration from format version {version}"
        try:
            doc = migrate(doc)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            return None, "corrupt", f"cannot upgrade from format version {version}: {exc}"
        version += 1
    return doc, "valid", None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def consistency_problems(doc: dict[str, Any], sid: str) -> list[str]:
    """What is inconsistent in a parsed standard checkpoint (empty when it is fine)."""
    problems: list[str] = []
    wid = doc.get("workflow_id")
    if wid is not None and wid != sid:
        problems.append(f"workflow_id is {wid!r}, expected {sid!r}")
    total = _int(doc.get("total_steps"))
    if "total_steps" in doc and (total is None or total < 0):
        problems.append(f"total_steps is {doc.get('total_steps')!r}, expected a count")
    state = doc.get("execution_state")
    if state is not None and not isinstance(state, dict):
        problems.append("execution_state is not an object")
        state = None
    state = state or {}
    state_total = _int(state.get("total_steps"))
    if total is None:
        total = state_total
    elif state_total is not None and state_total != total:
        problems.append(f"execution_state.total_steps is {state_total}, but total_steps is "
                        f"{total}")
    index = state.get("current_step_index")
    if index is not None:
        number = _int(index)
        if number is None or number < 0 or (total is not None and number > total):
            problems.append(f"current_step_index {index!r} is out of range 0..{total}")
    iteration, iterations = (_int(state.get("current_iteration")),
                             _int(state.get("total_iterations")))
    if iteration is not None and iterations is not None and iterations > 0 and not (
            0 <= iteration <= iterations):
        problems.append(f"current_iteration {iteration} is out of range 0..{iterations}")
    steps = doc.get("completed_steps", [])
    if not isinstance(steps, list):
        problems.append("completed_steps is not a list")
        steps = []
    for n, step in enumerate(steps):
        if not isinstance(step, dict):
            problems.append(f"completed_steps[{n}] is not an object")
            continue
        at = _int(step.get("step_index"))
        if at is None or at < 0 or (total is not None and at >= total):
            problems.append(f"completed_steps[{n}].step_index {step.get('step_index')!r} is out "
                            f"of range 0..{'?' if total is None else total - 1}")
    seq = doc.get("last_event_seq")
    if seq is not None and (_int(seq) is None or seq < 0):
        problems.append(f"last_event_seq is {seq!r}, expected a non-negative integer")
    problems.extend(_foreach_problems(doc.get("foreach_state"), total))
    return problems


def _foreach_problems(state: Any, total: int | None) -> list[str]:
    if state is None:
        return []
    if not isinstance(state, dict):
        return ["foreach_state is not an object"]
    problems = []
    at = _int(state.get("step_index"))
    if at is None or at < 0 or (total is not None and at >= total):
        problems.append(f"foreach_state.step_index {state.get('step_index')!r} is out of range")
    done, failed = state.get("completed_items", []), state.get("failed_items", [])
    if not isinstance(done, list) or not isinstance(failed, list):
        return [*problems, "foreach_state item lists are not lists"]
    if any(_int(i) is None or i < 0 for i in [*done, *failed]):
        problems.append("foreach_state holds an item index that is not a non-negative integer")
    elif set(done) & set(failed):
        problems.append("foreach_state lists an item as both completed and failed")
    return problems


def inspect_versions(storage: Storage, sid: str) -> list[Version] | None:
    """Both versions of ``sid``'s checkpoint, ``None`` when the id is not a valid name."""
    paths = _paths(storage, sid)
    if paths is None:
        return None
    versions = []
    for number, path in enumerate(paths, start=1):
        doc, status, reason = _parse(path)
        problems: list[str] = [] if reason is None else [reason]
        if doc is not None:
            problems = consistency_problems(doc, sid)
            if problems:
                status = "inconsistent"
        versions.append(Version(number=number, path=path, status=status,
                                problems=tuple(problems), doc=doc))
    return versions


def _session_problems(storage: Storage, sid: str, doc: dict[str, Any] | None) -> list[str]:
    """Problems outside the checkpoint: the worktree a resumable session needs."""
    if doc is None:
        return []
    status = str((doc.get("execution_state") or {}).get("status") or "")
    if status == "Completed":
        return []
    try:
        record = storage.read_session(sid)
    except StorageError:
        return []  # no record (or an unreadable one): nothing to check against
    worktree = record.get("worktree")
    if (isinstance(worktree, dict) and worktree.get("path")
            and not Path(str(worktree["path"])).exists()):
        return [f"worktree {worktree['path']} of the session does not exist, so it cannot "
                "be resumed"]
    return []


# --------------------------------------------------------------------------- show --version


def checkpoint_show_version(sid: str, number: int, storage: Storage,
                            err: TextIO) -> dict[str, Any] | None:
    """The parsed version ``number`` (1 current, 2 previous); ``None`` after an error."""
    paths = _paths(storage, sid)
    if paths is None:
        _not_found(sid, err)
        return None
    if number not in _VERSION_NAMES:
        err.write(f"error[{E_CHECKPOINT_NOT_FOUND}]: checkpoint {sid} has no version {number}; "
                  "a standard checkpoint keeps two: 1 (current) and 2 (previous)\n")
        return None
    path = paths[number - 1]
    doc, status, reason = _parse(path)
    if status == "missing":
        if not any(p.exists() for p in paths):
            _not_found(sid, err)
        else:
            err.write(f"error[{E_CHECKPOINT_NOT_FOUND}]: version {number} "
                      f"({_VERSION_NAMES[number]}) of checkpoint {sid} does not exist ({path})\n")
        return None
    if doc is None:
        err.write(f"error[{E_CHECKPOINT_CORRUPT}]: version {number} of checkpoint {sid} "
                  f"({path}) is unusable: {reason}\n"
                  f"  hint: run `prodigy checkpoints validate {sid} --repair`\n")
        return None
    return doc


# --------------------------------------------------------------------------- validate


def _promote(prev: Path, current: Path) -> None:
    os.replace(prev, current)


def checkpoints_validate(args: argparse.Namespace, storage: Storage, out: TextIO,
                         err: TextIO) -> int:
    sid = args.id
    versions = inspect_versions(storage, sid)
    if versions is None or all(v.status == "missing" for v in versions):
        return _not_found(sid, err)
    human = err if args.json else out
    actions: list[str] = []
    orphan_prev = versions[0].status == "missing" and versions[1].usable
    if args.repair and (orphan_prev or any(v.removable for v in versions)):
        lock = live_lock(storage, sid)
        if lock is not None:
            err.write(f"error[{E_LOCK_HELD}]: cannot repair checkpoint {sid}: it is "
                      f"{describe_lock(lock)}\n")
            return 1
        current, prev = versions
        if not any(v.usable for v in versions):
            actions.append("nothing removed: no valid version would be left; delete the "
                           f"checkpoint with `prodigy checkpoints delete {sid}`")
        else:
            if current.removable:
                current.path.unlink(missing_ok=True)
                actions.append(f"removed the {current.status} current version {current.path}")
            if prev.removable:
                prev.path.unlink(missing_ok=True)
                actions.append(f"removed the {prev.status} previous version {prev.path}")
            if prev.usable and current.status in ("missing", "corrupt", "inconsistent"):
                _promote(prev.path, current.path)
                actions.append(f"the previous version is now the checkpoint ({current.path})")
            versions = inspect_versions(storage, sid) or versions
    chosen = next((v for v in versions if v.usable), None)
    session_problems = _session_problems(storage, sid, None if chosen is None else chosen.doc)
    present = [v for v in versions if v.status != "missing"]
    valid = bool(present) and all(v.usable for v in present) and not session_problems
    human.write(f"Checkpoint {sid}\n")
    for v in versions:
        if v.status == "missing":
            continue
        detail = _progress(v.doc) if v.usable else "; ".join(v.problems)
        human.write(f"  version {v.number} ({_VERSION_NAMES[v.number]}) {v.path}: "
                    f"{v.status.replace('_', ' ')}{' - ' + detail if detail else ''}\n")
    for problem in session_problems:
        human.write(f"  problem: {problem}\n")
    for action in actions:
        human.write(f"  repair: {action}\n")
    if valid:
        human.write("Result: valid\n")
    else:
        hint = "" if args.repair else (f" (run `prodigy checkpoints validate {sid} --repair` "
                                       "to remove corrupt versions)")
        human.write(f"Result: invalid{hint}\n")
    if args.json:
        write_json({"id": sid, "valid": valid,
                    "versions": [v.as_json() for v in versions if v.status != "missing"],
                    "problems": session_problems, "repairs": actions}, out)
    return 0 if valid else 1


def _progress(doc: dict[str, Any] | None) -> str:
    state = (doc or {}).get("execution_state") or {}
    return (f"step {state.get('current_step_index', 0)}/{state.get('total_steps', '?')}, "
            f"{state.get('status', '?')}, saved {(doc or {}).get('timestamp', '?')}")


# --------------------------------------------------------------------------- delete / clean


def _files_of(storage: Storage, sid: str) -> list[Path]:
    paths = _paths(storage, sid)
    return [] if paths is None else [p for p in paths if p.exists()]


def _remove(storage: Storage, sid: str) -> int:
    files = _files_of(storage, sid)
    for path in files:
        path.unlink(missing_ok=True)
    if files:
        with contextlib.suppress(OSError):
            files[0].parent.rmdir()  # only when empty
    return len(files)


def checkpoints_delete(args: argparse.Namespace, storage: Storage, out: TextIO,
                       err: TextIO) -> int:
    sid = args.id
    if not _files_of(storage, sid):
        return _not_found(sid, err)
    lock = live_lock(storage, sid)
    if lock is not None:
        err.write(f"error[{E_LOCK_HELD}]: checkpoint {sid} is in use: {describe_lock(lock)}\n")
        return 1
    answer = Confirm.from_args(args, err).ask(f"Delete the checkpoint of {sid}?")
    if answer is None:
        return 2
    if not answer:
        return 0
    count = _remove(storage, sid)
    human = err if args.json else out
    human.write(f"Deleted checkpoint {sid} ({count} file(s)).\n")
    if args.json:
        write_json({"deleted": [sid], "files": count}, out)
    return 0


def _ids_in_scope(storage: Storage, repo_path: str | None) -> list[str]:
    if repo_path is not None:
        ids = [str(d.get("id")) for d in storage.list_sessions(repo_path)]
    else:
        try:
            ids = sorted(e.name for e in os.scandir(storage.root / "state") if e.is_dir())
        except OSError:
            ids = []
    return [sid for sid in ids if _files_of(storage, sid)]


def checkpoints_clean(args: argparse.Namespace, storage: Storage, out: TextIO, err: TextIO,
                      cwd: str) -> int:
    if not args.workflow_id and not args.all:
        err.write("error[E8001]: Please specify --workflow-id or --all\n")
        return 2
    if args.workflow_id:
        if not _files_of(storage, args.workflow_id):
            return _not_found(args.workflow_id, err)
        ids = [args.workflow_id]
    else:
        repo_path, _ = repo_filter(args, cwd)
        ids = _ids_in_scope(storage, repo_path)
    human = err if args.json else out
    chosen: list[str] = []
    skipped: list[dict[str, str]] = []
    for sid in ids:
        lock = live_lock(storage, sid)
        if lock is None:
            chosen.append(sid)
        else:
            skipped.append({"id": sid, "reason": describe_lock(lock)})
            err.write(f"Skipping {sid}: {describe_lock(lock)}\n")
    report: dict[str, Any] = {"dry_run": bool(args.dry_run), "deleted": [], "skipped": skipped}
    if not chosen:
        human.write("No checkpoints to clean.\n")
    elif args.dry_run:
        for sid in chosen:
            human.write(f"Would delete checkpoint {sid}\n")
        report["would_delete"] = chosen
    else:
        answer = Confirm.from_args(args, err).ask(f"Delete {len(chosen)} checkpoint(s)?")
        if answer is None:
            return 2
        if answer:
            for sid in chosen:
                _remove(storage, sid)
                human.write(f"Deleted checkpoint {sid}\n")
            report["deleted"] = chosen
            human.write(f"Deleted {len(chosen)} checkpoint(s).\n")
    if args.json:
        write_json(report, out)
    return 0
