"""``prodigy events``: read, summarise, search, export and clean event logs (spec 08 §2.9).

Reading: the event logs of the current repository (or ``--all-repos``, ``--job-id``,
``--file``), filtered by event type, agent, item and age, ordered by time and ``seq``.

Cleaning works per run directory (``events/<repo>/<run_id>``) and per event line. An
event is removed when it is older than ``--older-than``, or when it is among the
oldest beyond ``--max-events`` / ``--max-size`` of its run. A file whose every line is
removed is deleted (or moved to the archive); a file that keeps some lines is
rewritten atomically with them (the removed lines go to the archive). Runs whose lock
is held by a live process are never touched.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import os
import re
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

import attrs

from prodigy_cli.cli_support import (
    E_USAGE,
    Confirm,
    describe_lock,
    live_lock,
    now_utc,
    parse_time,
    repo_filter,
    table,
    write_json,
)
from prodigy_core.reprs import value_class
from prodigy_effects.fsutil import atomic_write_bytes, ensure_dir
from prodigy_effects.journal import event_files, follow, list_run_dirs, normalise_envelope
from prodigy_effects.journal import read_events as journal_read_events
from prodigy_effects.storage import Storage

__all__ = ["dispatch"]

def dispatch(action: str, args: argparse.Namespace, storage: Storage, out: TextIO,
             err: TextIO, cwd: str) -> int:
    handlers = {"ls": events_ls, "follow": events_follow, "stats": events_stats,
                "search": events_search, "clean": events_clean, "export": events_export}
    return handlers[action](args, storage, out, err, cwd)


# --------------------------------------------------------------------------- reading


def _body(e: dict[str, Any]) -> dict[str, Any]:
    body = e.get("event")
    return body if isinstance(body, dict) else {}


def _event_type(e: dict[str, Any]) -> str:
    return str(_body(e).get("event_type") or e.get("event_type") or "?")


def _run_dirs(args: argparse.Namespace, storage: Storage, cwd: str) -> list[Path]:
    if getattr(args, "file", None):
        return [Path(cwd) / args.file]
    _, repo_name = repo_filter(args, cwd)
    dirs = list_run_dirs(storage, repo_name)
    if getattr(args, "job_id", None):
        dirs = [d for d in dirs if d.name == args.job_id]
    return dirs


def _read_path(path: Path) -> list[dict[str, Any]]:
    if path.is_file():
        events = []
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                doc = json.loads(line)
            except ValueError:
                continue
            if isinstance(doc, dict):
                events.append(normalise_envelope(doc))
        return events
    return list(journal_read_events(path))


def _match(e: dict[str, Any], args: argparse.Namespace, since: datetime | None) -> bool:
    body = _body(e)
    if getattr(args, "event_type", None) and _event_type(e) not in args.event_type:
        return False
    if getattr(args, "agent_id", None) and body.get("agent_id") != args.agent_id:
        return False
    if getattr(args, "item_id", None) and body.get("item_id") != args.item_id:
        return False
    if since is not None:
        moment = parse_time(e.get("timestamp"))
        if moment is None or moment < since:
            return False
    return True


def _since(args: argparse.Namespace) -> datetime | None:
    seconds = getattr(args, "since", None)
    if seconds is None:
        return None
    from datetime import timedelta

    return now_utc() - timedelta(seconds=seconds)


def _collect(args: argparse.Namespace, storage: Storage, err: TextIO,
             cwd: str) -> list[dict[str, Any]] | None:
    """Matching events in time order; ``None`` (after an error message) when the
    ``--job-id`` or ``--file`` given does not exist."""
    if getattr(args, "file", None) and not (Path(cwd) / args.file).exists():
        err.write(f"error[{E_USAGE}]: event file {args.file} does not exist\n")
        return None
    dirs = _run_dirs(args, storage, cwd)
    if getattr(args, "job_id", None) and not dirs:
        err.write(f"error[E6010]: no events found for '{args.job_id}'\n"
                  "  hint: `prodigy events stats --group-by job_id --all-repos` lists the runs\n")
        return None
    since = _since(args)
    events: list[dict[str, Any]] = []
    for d in dirs:
        events.extend(e for e in _read_path(d) if _match(e, args, since))
    events.sort(key=lambda e: (str(e.get("timestamp", "")), _seq(e)))
    return events


def _seq(e: dict[str, Any]) -> int:
    seq = e.get("seq")
    return seq if isinstance(seq, int) and not isinstance(seq, bool) else 0


def _who(e: dict[str, Any]) -> str:
    body = _body(e)
    return str(body.get("agent_id") or body.get("item_id") or body.get("step_path") or "-")


def _summary(e: dict[str, Any]) -> str:
    body = _body(e)
    keys = ("display", "status", "error", "workflow_name", "signal", "exit_code")
    return " ".join(f"{k}={body[k]}" for k in keys if body.get(k) not in (None, ""))


def _run_of(e: dict[str, Any]) -> str:
    body = _body(e)
    return str(e.get("correlation_id") or body.get("job_id") or body.get("session_id") or "-")


def _line(e: dict[str, Any]) -> str:
    return (f"{e.get('timestamp', '')} {_event_type(e)} {_run_of(e)} {_who(e)} "
            f"{_summary(e)}").rstrip()


def _emit(events: list[dict[str, Any]], args: argparse.Namespace, out: TextIO) -> None:
    for e in events:
        out.write((json.dumps(e, ensure_ascii=False) if args.json else _line(e)) + "\n")


def events_ls(args: argparse.Namespace, storage: Storage, out: TextIO, err: TextIO,
              cwd: str) -> int:
    events = _collect(args, storage, err, cwd)
    if events is None:
        return 2
    if args.limit:  # 0 means no limit
        events = events[-args.limit:]
    _emit(events, args, out)
    if not events and not args.json:
        out.write("No events found.\n")
    return 0


def events_follow(args: argparse.Namespace, storage: Storage, out: TextIO, err: TextIO,
                  cwd: str) -> int:
    dirs = _run_dirs(args, storage, cwd)
    if not dirs:
        err.write("error[E6010]: no event log to follow (give --job-id or --file)\n")
        return 2
    target = dirs[-1]
    try:
        for e in follow(target, 0.2, lambda: False):
            if _match(e, args, None):
                out.write((json.dumps(e) if args.json else _line(e)) + "\n")
                out.flush()
    except KeyboardInterrupt:
        return 0
    return 0


# --------------------------------------------------------------------------- stats


def _group_key(e: dict[str, Any], group_by: str) -> str:
    body = _body(e)
    if group_by == "job_id":
        return str(body.get("job_id") or body.get("session_id") or e.get("correlation_id")
                   or "(none)")
    if group_by == "agent_id":
        return str(body.get("agent_id") or "(none)")
    return _event_type(e)


def events_stats(args: argparse.Namespace, storage: Storage, out: TextIO, err: TextIO,
                 cwd: str) -> int:
    events = _collect(args, storage, err, cwd)
    if events is None:
        return 2
    counts = Counter(_group_key(e, args.group_by) for e in events)
    groups = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    stamps = sorted(str(e["timestamp"]) for e in events if e.get("timestamp"))
    first, last = (stamps[0], stamps[-1]) if stamps else (None, None)
    if args.json:
        write_json({"group_by": args.group_by,
                    "groups": [{"key": k, "count": n} for k, n in groups],
                    "total": len(events), "first": first, "last": last}, out)
        return 0
    if not events:
        out.write("No events found.\n")
        return 0
    out.write(f"Events by {args.group_by}:\n")
    table([(args.group_by.upper(), "COUNT"), *((k, str(n)) for k, n in groups)], out)
    out.write(f"Total: {len(events)}\n")
    out.write(f"Time range: {first} .. {last}\n")
    return 0


# --------------------------------------------------------------------------- search


def _field(e: dict[str, Any], name: str) -> Any:
    """A dotted field looked up in the event body first, then in the envelope."""
    for root in (_body(e), e):
        value: Any = root
        for part in name.split("."):
            if isinstance(value, dict) and part in value:
                value = value[part]
            else:
                value = _MISSING
                break
        if value is not _MISSING:
            return value
    return _MISSING


_MISSING = object()


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def events_search(args: argparse.Namespace, storage: Storage, out: TextIO, err: TextIO,
                  cwd: str) -> int:
    try:
        pattern = re.compile(args.pattern)
    except re.error as exc:
        err.write(f"error[{E_USAGE}]: invalid regular expression {args.pattern!r}: {exc}\n")
        return 2
    fields = [f.strip() for f in (args.fields or "").split(",") if f.strip()]
    events = _collect(args, storage, err, cwd)
    if events is None:
        return 2
    found = []
    for e in events:
        if fields:
            values = [_field(e, f) for f in fields]
            texts = [_text(v) for v in values if v is not _MISSING]
        else:
            texts = [json.dumps(e, ensure_ascii=False)]
        if any(pattern.search(t) for t in texts):
            found.append(e)
    _emit(found, args, out)
    if not args.json:
        out.write(f"{len(found)} matching event(s).\n" if found else "No matching events.\n")
    return 0


# --------------------------------------------------------------------------- export

_CSV_COLUMNS = ("seq", "timestamp", "event_type", "run_id", "session_id", "job_id",
                "agent_id", "item_id", "step_path", "summary", "event")


def _csv(events: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(_CSV_COLUMNS)
    for e in events:
        body = _body(e)
        writer.writerow([e.get("seq", ""), e.get("timestamp", ""), _event_type(e), _run_of(e),
                         body.get("session_id") or "", body.get("job_id") or "",
                         body.get("agent_id") or "", body.get("item_id") or "",
                         body.get("step_path") or "", _summary(e),
                         json.dumps(body, ensure_ascii=False)])
    return buffer.getvalue()


def _md_cell(value: str) -> str:
    return value.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _markdown(events: list[dict[str, Any]]) -> str:
    lines = ["| Seq | Time | Event | Run | Agent/Step | Summary |",
             "|---|---|---|---|---|---|"]
    for e in events:
        cells = [str(e.get("seq", "")), str(e.get("timestamp", "")), _event_type(e),
                 _run_of(e), _who(e), _summary(e)]
        lines.append("| " + " | ".join(_md_cell(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def events_export(args: argparse.Namespace, storage: Storage, out: TextIO, err: TextIO,
                  cwd: str) -> int:
    events = _collect(args, storage, err, cwd)
    if events is None:
        return 2
    fmt = "json" if args.json else args.format
    if fmt == "csv":
        text = _csv(events)
    elif fmt == "markdown":
        text = _markdown(events)
    else:
        text = json.dumps(events, indent=2, ensure_ascii=False) + "\n"
    if not args.output:
        out.write(text)
        err.write(f"Exported {len(events)} event(s).\n")
        return 0
    target = Path(cwd) / args.output
    try:
        target.write_text(text, encoding="utf-8")
    except OSError as exc:
        err.write(f"error[{E_USAGE}]: cannot write {target} ({exc.strerror or exc})\n")
        return 2
    out.write(f"Exported {len(events)} event(s) to {target}\n")
    return 0


# --------------------------------------------------------------------------- clean


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class _Line:
    raw: bytes
    moment: datetime | None


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class _RunPlan:
    """What cleaning does to one run: per file, the line numbers to remove."""

    run_dir: Path
    files: tuple[tuple[Path, tuple[_Line, ...], frozenset[int]], ...]

    @property
    def events_removed(self) -> int:
        return sum(len(drop) for _, _, drop in self.files)

    @property
    def files_removed(self) -> int:
        return sum(1 for _, lines, drop in self.files if drop and len(drop) == len(lines))

    @property
    def files_rewritten(self) -> int:
        return sum(1 for _, lines, drop in self.files if drop and len(drop) < len(lines))

    @property
    def bytes_removed(self) -> int:
        return sum(len(lines[i].raw) for _, lines, drop in self.files for i in drop)


def _read_lines(path: Path) -> tuple[_Line, ...]:
    try:
        data = path.read_bytes()
        fallback = datetime.fromtimestamp(path.stat().st_mtime, tz=now_utc().tzinfo)
    except OSError:
        return ()
    lines = []
    for raw in data.splitlines(keepends=True):
        if not raw.strip():
            continue
        moment = None
        try:
            doc = json.loads(raw.decode("utf-8"))
            if isinstance(doc, dict):
                moment = parse_time(doc.get("timestamp"))
        except (UnicodeDecodeError, ValueError):
            pass
        lines.append(_Line(raw=raw if raw.endswith(b"\n") else raw + b"\n",
                           moment=moment or fallback))
    return tuple(lines)


def _plan_run(run_dir: Path, args: argparse.Namespace, now: datetime) -> _RunPlan:
    from datetime import timedelta

    cutoff = now - timedelta(seconds=args.older_than)
    files = [(path, _read_lines(path)) for path in event_files(run_dir)]
    order = [(fi, li) for fi, (_, lines) in enumerate(files) for li in range(len(lines))]
    drop: set[tuple[int, int]] = set()
    for fi, li in order:
        moment = files[fi][1][li].moment
        if moment is not None and moment < cutoff:
            drop.add((fi, li))
    kept = [key for key in order if key not in drop]
    if args.max_events is not None and len(kept) > args.max_events:
        excess = len(kept) - args.max_events
        drop.update(kept[:excess])
        kept = kept[excess:]
    if args.max_size is not None:
        remaining = sum(len(files[fi][1][li].raw) for fi, li in kept)
        for fi, li in kept:
            if remaining <= args.max_size:
                break
            drop.add((fi, li))
            remaining -= len(files[fi][1][li].raw)
    return _RunPlan(run_dir=run_dir, files=tuple(
        (path, lines, frozenset(li for f, li in drop if f == fi))
        for fi, (path, lines) in enumerate(files)))


def _archive(target_dir: Path, name: str, lines: list[bytes]) -> None:
    ensure_dir(target_dir)
    with open(target_dir / name, "ab") as handle:
        handle.write(b"".join(lines))
        handle.flush()
        os.fsync(handle.fileno())


def _apply(plan: _RunPlan, archive_dir: Path | None) -> None:
    for path, lines, drop in plan.files:
        if not drop:
            continue
        if archive_dir is not None:
            _archive(archive_dir, path.name, [lines[i].raw for i in sorted(drop)])
        if len(drop) == len(lines):
            path.unlink(missing_ok=True)
        else:
            kept = b"".join(line.raw for i, line in enumerate(lines) if i not in drop)
            atomic_write_bytes(path, kept)
    with contextlib.suppress(OSError):
        if not any(plan.run_dir.iterdir()):
            plan.run_dir.rmdir()


def events_clean(args: argparse.Namespace, storage: Storage, out: TextIO, err: TextIO,
                 cwd: str) -> int:
    dirs = _run_dirs(args, storage, cwd)
    if getattr(args, "job_id", None) and not dirs:
        err.write(f"error[E6010]: no events found for '{args.job_id}'\n")
        return 2
    now = now_utc()
    archive_root: Path | None = None
    if args.archive or args.archive_path:
        archive_root = (Path(cwd) / args.archive_path if args.archive_path
                        else storage.root / "archive" / "events")
    plans: list[_RunPlan] = []
    skipped: list[dict[str, str]] = []
    for run_dir in dirs:
        lock = live_lock(storage, run_dir.name)
        if lock is not None:
            skipped.append({"run_id": run_dir.name, "reason": describe_lock(lock)})
            err.write(f"Skipping {run_dir.name}: {describe_lock(lock)}\n")
            continue
        plan = _plan_run(run_dir, args, now)
        if plan.events_removed:
            plans.append(plan)
    total = sum(p.events_removed for p in plans)
    verb = "archive" if archive_root is not None else "remove"
    report = {
        "dry_run": bool(args.dry_run),
        "archive_path": None if archive_root is None else str(archive_root),
        "runs": [{"run_id": p.run_dir.name, "repo": p.run_dir.parent.name,
                  "events_removed": p.events_removed, "files_removed": p.files_removed,
                  "files_rewritten": p.files_rewritten, "bytes_removed": p.bytes_removed}
                 for p in plans],
        "skipped": skipped,
        "total_events_removed": total if not args.dry_run else 0,
        "total_events_matched": total,
    }
    human = err if args.json else out
    if not plans:
        human.write("No events to clean.\n")
        if args.json:
            write_json(report, out)
        return 0
    for p in plans:
        human.write(f"{'Would ' + verb if args.dry_run else 'To ' + verb}: "
                    f"{p.events_removed} event(s) of {p.run_dir.parent.name}/{p.run_dir.name} "
                    f"({p.files_removed} file(s) whole, {p.files_rewritten} trimmed)\n")
    if args.dry_run:
        human.write(f"Dry run: {total} event(s) would be {verb}d; nothing was changed.\n")
        if args.json:
            write_json(report, out)
        return 0
    answer = Confirm.from_args(args, err).ask(
        f"{verb.capitalize()} {total} event(s) of {len(plans)} run(s)?")
    if answer is None:
        return 2
    if not answer:
        report["total_events_removed"] = 0
        report["cancelled"] = True
        if args.json:
            write_json(report, out)
        return 0
    for p in plans:
        target = None if archive_root is None else (
            archive_root / p.run_dir.parent.name / p.run_dir.name)
        try:
            _apply(p, target)
        except OSError as exc:
            err.write(f"error[E5001]: cannot clean {p.run_dir} ({exc.strerror or exc})\n")
            return 1
    where = "" if archive_root is None else f" to {archive_root}"
    human.write(f"{verb.capitalize()}d {total} event(s){where}.\n")
    if args.json:
        write_json(report, out)
    return 0
