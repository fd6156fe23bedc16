"""``prodigy dlq list|show|stats|analyze|export`` and dispatch (spec 08 §2.10, 05 §13).

The entries are read with :mod:`prodigy_effects.dlq_store`; ``purge`` (alias ``clear``)
lives in :mod:`prodigy_cli.cmd_dlq_purge`.  ``retry`` is registered but not available
yet.  Scope (spec 08 §1.5): the DLQ of the repository of ``-p DIR`` or the current
directory (``dlq/<repo name>/``; jobs whose index records another repository path are
left out); ``--all-repos``, or running outside a repository, shows every repository.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
from collections import Counter
from datetime import UTC
from pathlib import Path
from typing import Any, TextIO

import attrs

from prodigy_cli.cli_support import E_USAGE, parse_time, table, write_json
from prodigy_core.reprs import value_class
from prodigy_effects.dlq_store import (
    DlqEntry,
    error_type_label,
    list_entries,
    read_index,
)
from prodigy_effects.fsutil import rfc3339_ms
from prodigy_effects.storage import Storage, StorageError, resolve_storage_root
from prodigy_effects.worktree_admin import repo_of, same_path

__all__ = ["E_DLQ_ITEM", "Scope", "dispatch", "select_entries", "when"]

#: DLQ item not found or ambiguous (spec 10 §8.2).
E_DLQ_ITEM = "E6011"
_EMPTY = "No items in the DLQ."


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class Scope:
    """Which DLQ a command reads.  ``repo``/``root``: the repository shown (``None``: all);
    ``current``: the repository the command runs in, even with ``--all-repos``."""

    repo: str | None
    root: str | None
    current: tuple[str, str] | None

    @property
    def everywhere(self) -> bool:
        return self.repo is None


def _scope(args: argparse.Namespace, cwd: str, err: TextIO) -> Scope | None:
    project = Path(cwd) / args.path if getattr(args, "path", None) else Path(cwd)
    if not project.is_dir():
        err.write(f"error[{E_USAGE}]: no such directory: {project}\n")
        return None
    current = repo_of(project)
    if getattr(args, "all_repos", False) or current is None:
        return Scope(repo=None, root=None, current=current)
    return Scope(repo=current[1], root=current[0], current=current)


def select_entries(storage: Storage, scope: Scope, job_id: str | None) -> list[DlqEntry]:
    """The entries in ``scope`` (of one job); warnings go to ``storage.warnings``."""
    entries = list_entries(storage, scope.repo, job_id)
    if scope.root is None:
        return entries
    foreign: dict[tuple[str, str], bool] = {}
    kept = []
    for entry in entries:
        key = (entry.repo, entry.job_id)
        if key not in foreign:
            recorded = (read_index(storage, entry.repo, entry.job_id) or {}).get("repo_path")
            foreign[key] = (isinstance(recorded, str) and bool(recorded)
                            and not same_path(recorded, scope.root))
        if not foreign[key]:
            kept.append(entry)
    return kept


def _check_job_id(job_id: str | None, err: TextIO) -> bool:
    if job_id is not None and (not job_id or "/" in job_id or job_id.startswith(".")
                               or "\\" in job_id or "\0" in job_id):
        err.write(f"error[{E_USAGE}]: invalid job id {job_id!r}\n")
        return False
    return True


def _flush_warnings(storage: Storage, err: TextIO) -> None:
    for text in storage.warnings:
        code, _, rest = text.partition(": ")
        err.write(f"warning[{code}]: {rest}\n")
    storage.warnings.clear()


def dispatch(args: argparse.Namespace, *, out: TextIO, err: TextIO, environ: dict[str, str],
             cwd: str) -> int:
    action = getattr(args, "action", None)
    if action is None:
        err.write(f"error[{E_USAGE}]: `prodigy dlq` needs a subcommand (list, show, retry, "
                  "purge, stats, analyze, export); see `prodigy dlq --help`\n")
        return 2
    if action == "retry":
        from prodigy_cli.cmd_dlq_retry import cmd_dlq_retry

        return cmd_dlq_retry(args, out=out, err=err, environ=environ, cwd=cwd)
    home = Path(environ.get("HOME") or Path.home())
    storage = Storage(resolve_storage_root(environ, home))
    job = getattr(args, "job_id", None)
    if action == "clear" and getattr(args, "job", None):
        if job is not None and job != args.job:
            err.write(f"error[{E_USAGE}]: two different job ids given: {args.job} and {job}\n")
            return 2
        job = args.job_id = args.job
    if not _check_job_id(job, err):
        return 2
    scope = _scope(args, cwd, err)
    if scope is None:
        return 2
    try:
        if action == "list":
            return dlq_list(args, storage, scope, out)
        if action in ("show", "inspect"):
            return dlq_show(args, storage, scope, out, err)
        if action == "stats":
            return dlq_stats(args, storage, scope, out)
        if action == "analyze":
            return dlq_analyze(args, storage, scope, out, err, cwd)
        if action == "export":
            return dlq_export(args, storage, scope, out, err, cwd)
        from prodigy_cli.cmd_dlq_purge import purge

        return purge(args, storage, scope, out, err)
    except StorageError as exc:
        err.write(f"error[{exc.code}]: {exc}\n")
        return 2
    except KeyboardInterrupt:
        err.write("Interrupted.\n")
        return 130
    finally:
        _flush_warnings(storage, err)


# ----------------------------------------------------------------------------- helpers


def when(value: Any) -> str:
    """``2025-03-14 09:15:02`` (UTC) for an RFC 3339 timestamp, ``-`` when unknown."""
    moment = parse_time(value)
    return "-" if moment is None else moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def _first_line(text: str, width: int | None = None) -> str:
    line = next((part.strip() for part in text.splitlines() if part.strip()), "")
    if width is not None and len(line) > width:
        line = line[: width - 1] + "…"
    return line


def _newest_first(entries: list[DlqEntry]) -> list[DlqEntry]:
    def key(entry: DlqEntry) -> float:
        moment = parse_time(entry.last_attempt)
        return 0.0 if moment is None else moment.timestamp()

    return sorted(entries, key=key, reverse=True)  # stable: ties keep job/item order


def _listed(entry: DlqEntry) -> dict[str, Any]:
    """An entry for JSON listings: the document with ``repo`` and ``job_id`` added."""
    return {"repo": entry.repo, "job_id": entry.job_id, **entry.doc}


# -------------------------------------------------------------------------------- list


def dlq_list(args: argparse.Namespace, storage: Storage, scope: Scope, out: TextIO) -> int:
    entries = select_entries(storage, scope, args.job_id)
    if args.eligible:
        entries = [e for e in entries if e.eligible]
    entries = _newest_first(entries)
    total = len(entries)
    if args.limit:
        entries = entries[: args.limit]
    if args.json:
        write_json([_listed(e) for e in entries], out)
        return 0
    if not entries:
        out.write(f"{_EMPTY}\n")
        return 0
    repo = scope.everywhere  # a REPO column after JOB
    rows: list[tuple[str, ...]] = [
        ("ITEM", "JOB", *(("REPO",) if repo else ()), "LAST ATTEMPT", "FAILURES",
         "ERROR TYPE", "SIGNATURE", "ELIGIBLE", "ERROR")]
    for e in entries:
        rows.append((e.item_id, e.job_id, *((e.repo,) if repo else ()), when(e.last_attempt),
                     str(e.failure_count), e.error_type_name, e.signature or "-",
                     "yes" if e.eligible else "no", _first_line(e.error_message, 60) or "-"))
    table(rows, out)
    if total > len(entries):
        out.write(f"Showing {len(entries)} of {total} items; use --limit to see more.\n")
    return 0


# -------------------------------------------------------------------------------- show


def dlq_show(args: argparse.Namespace, storage: Storage, scope: Scope, out: TextIO,
             err: TextIO) -> int:
    matches = [e for e in select_entries(storage, scope, args.job_id)
               if e.item_id == args.item_id]
    if not matches:
        where = f" of job {args.job_id}" if args.job_id else ""
        err.write(f"error[{E_DLQ_ITEM}]: no DLQ item {args.item_id!r}{where}\n"
                  "  See `prodigy dlq list` for the items in the DLQ.\n")
        return 2
    if len(matches) > 1:
        err.write(f"error[{E_DLQ_ITEM}]: DLQ item {args.item_id!r} is in several jobs; "
                  "choose one with --job-id:\n")
        for e in matches:
            err.write(f"  {e.job_id}" + (f" ({e.repo})" if scope.everywhere else "") + "\n")
        return 2
    entry = matches[0]
    if args.json:
        write_json(entry.doc, out)
        return 0
    _show(entry, out)
    return 0


def _show(entry: DlqEntry, out: TextIO) -> None:
    doc = entry.doc
    review = "manual review required" if entry.manual_review else (
        "eligible for retry" if entry.eligible else "not eligible for retry")
    lines = [
        f"Item:         {entry.item_id}",
        f"Job:          {entry.job_id}",
        f"Repository:   {entry.repo}",
        f"Failures:     {entry.failure_count} (first {when(entry.first_attempt)}, "
        f"last {when(entry.last_attempt)})",
        f"Error type:   {error_type_label(entry.error_type)}",
        f"Signature:    {entry.signature or '-'}",
        f"Status:       {review}",
    ]
    artifacts = entry.artifacts
    if entry.branch or artifacts.get("worktree_path"):
        lines.append(f"Branch kept:  {entry.branch or '-'}")
        if artifacts.get("worktree_path"):
            lines.append(f"Worktree:     {artifacts.get('worktree_path')}")
    lines.append(f"File:         {entry.path}" + ("  (original tool's location)"
                                                   if entry.legacy else ""))
    lines.append("Item data:")
    lines.extend("  " + line for line in json.dumps(doc.get("item_data"), indent=2,
                                                    ensure_ascii=False).splitlines())
    lines.append("Failure history:")
    history = doc.get("failure_history")
    for record in history if isinstance(history, list) else []:
        if not isinstance(record, dict):
            continue
        head = (f"  #{record.get('attempt_number', '?')}  {when(record.get('timestamp'))}  "
                f"{error_type_label(record.get('error_type'))}")
        if record.get("agent_id"):
            head += f"  agent {record['agent_id']}"
        lines.append(head)
        if record.get("step_failed"):
            index = record.get("step_index")
            lines.append(f"      step: {record['step_failed']}"
                         + ("" if index is None else f" (step {index})"))
        if isinstance(record.get("duration_ms"), int | float):
            lines.append(f"      duration: {record['duration_ms'] / 1000:.1f}s")
        message = str(record.get("error_message") or "")
        for i, line in enumerate(message.splitlines() or [""]):
            lines.append(("      error: " if i == 0 else "             ") + line)
        for key, label in (("conflicting_files", "conflicting files"),
                           ("error_context", "context")):
            if isinstance(record.get(key), list) and record[key]:
                lines.append(f"      {label}: " + ", ".join(map(str, record[key])))
        if record.get("json_log_location"):
            lines.append(f"      log: {record['json_log_location']}")
        if record.get("stack_trace"):
            lines.append("      stack trace:")
            lines.extend("        " + s for s in str(record["stack_trace"]).splitlines())
    out.write("\n".join(lines) + "\n")


# ------------------------------------------------------------------------------- stats


def _stats(entries: list[DlqEntry]) -> dict[str, Any]:
    firsts = [t for e in entries if (t := parse_time(e.first_attempt or e.last_attempt))]
    lasts = [t for e in entries if (t := parse_time(e.last_attempt))]
    signatures: dict[str, dict[str, Any]] = {}
    for e in entries:
        group = signatures.setdefault(e.signature or "-", {
            "count": 0, "error_type": e.error_type_name,
            "message": _first_line(e.error_message)})
        group["count"] += 1
    return {
        "total": len(entries),
        "eligible": sum(1 for e in entries if e.eligible),
        "manual_review": sum(1 for e in entries if e.manual_review),
        "oldest_failure": rfc3339_ms(min(firsts)) if firsts else None,
        "newest_failure": rfc3339_ms(max(lasts)) if lasts else None,
        "by_job": dict(Counter(e.job_id for e in entries).most_common()),
        "by_error_type": dict(Counter(e.error_type_name for e in entries).most_common()),
        "by_signature": dict(sorted(signatures.items(), key=lambda kv: -kv[1]["count"])),
    }


def dlq_stats(args: argparse.Namespace, storage: Storage, scope: Scope, out: TextIO) -> int:
    entries = select_entries(storage, scope, args.job_id)
    report = _stats(entries)
    if args.json:
        write_json(report, out)
        return 0
    if not entries:
        out.write(f"{_EMPTY}\n")
        return 0
    where = f"job {args.job_id}" if args.job_id else (
        "all repositories" if scope.everywhere else f"repository {scope.repo}")
    out.write(f"DLQ statistics ({where})\n")
    out.write(f"  Total items:    {report['total']}\n")
    out.write(f"  Eligible:       {report['eligible']}\n")
    out.write(f"  Manual review:  {report['manual_review']}\n")
    out.write(f"  Oldest failure: {when(report['oldest_failure'])}\n")
    out.write(f"  Newest failure: {when(report['newest_failure'])}\n")
    out.write("By job:\n")
    table([("  JOB", "ITEMS"), *(("  " + k, str(v)) for k, v in report["by_job"].items())],
          out)
    out.write("By error type:\n")
    table([("  ERROR TYPE", "ITEMS"),
           *(("  " + k, str(v)) for k, v in report["by_error_type"].items())], out)
    out.write("By signature:\n")
    table([("  SIGNATURE", "ITEMS", "ERROR TYPE", "MESSAGE"),
           *(("  " + k, str(v["count"]), v["error_type"], _first_line(v["message"], 60) or "-")
             for k, v in report["by_signature"].items())], out)
    return 0


# ----------------------------------------------------------------------------- analyze


def _analysis(entries: list[DlqEntry]) -> dict[str, Any]:
    groups: dict[str, list[DlqEntry]] = {}
    for e in entries:
        groups.setdefault(e.signature or "-", []).append(e)
    patterns: list[dict[str, Any]] = []
    for signature, members in groups.items():
        firsts = sorted(t for e in members if (t := parse_time(e.first_attempt or
                                                               e.last_attempt)))
        lasts = sorted(t for e in members if (t := parse_time(e.last_attempt)))
        newest = _newest_first(members)[0]
        patterns.append({
            "signature": signature, "count": len(members),
            "error_type": newest.error_type_name,
            "first_occurrence": rfc3339_ms(firsts[0]) if firsts else None,
            "last_occurrence": rfc3339_ms(lasts[-1]) if lasts else None,
            "sample_items": [f"{e.job_id}/{e.item_id}" for e in members[:5]],
            "message": newest.error_message,
        })
    patterns.sort(key=lambda p: -int(p["count"]))
    return {"total": len(entries), "patterns": patterns,
            "by_error_type": dict(Counter(e.error_type_name for e in entries).most_common())}


def dlq_analyze(args: argparse.Namespace, storage: Storage, scope: Scope, out: TextIO,
                err: TextIO, cwd: str) -> int:
    report = _analysis(select_entries(storage, scope, args.job_id))
    if args.export:
        target = Path(cwd) / args.export
        try:
            target.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n",
                              encoding="utf-8")
        except OSError as exc:
            err.write(f"error[E5001]: cannot write {target} ({exc.strerror or exc})\n")
            return 1
        (err if args.json else out).write(f"Analysis written to {target}\n")
    if args.json:
        write_json(report, out)
        return 0
    if not report["total"]:
        out.write(f"{_EMPTY}\n")
        return 0
    out.write(f"{report['total']} DLQ item(s), {len(report['patterns'])} error pattern(s)\n")
    for p in report["patterns"]:
        out.write(f"\n{p['signature']}  {p['count']} item(s)  {p['error_type']}\n")
        out.write(f"  First: {when(p['first_occurrence'])}   "
                  f"Last: {when(p['last_occurrence'])}\n")
        out.write(f"  Items: {', '.join(p['sample_items'])}"
                  + (" …" if p["count"] > len(p["sample_items"]) else "") + "\n")
        out.write(f"  Message: {_first_line(p['message']) or '-'}\n")
    out.write("\nBy error type:\n")
    for name, count in report["by_error_type"].items():
        out.write(f"  {name}: {count}\n")
    return 0


# ------------------------------------------------------------------------------ export

_CSV_COLUMNS = ("repo", "job_id", "item_id", "failure_count", "first_attempt", "last_attempt",
                "error_type", "error_signature", "reprocess_eligible",
                "manual_review_required", "branch_name", "error_message", "item_data")


def dlq_export(args: argparse.Namespace, storage: Storage, scope: Scope, out: TextIO,
               err: TextIO, cwd: str) -> int:
    entries = select_entries(storage, scope, args.job_id)
    if args.format == "json":
        text = json.dumps([_listed(e) for e in entries], indent=2, ensure_ascii=False) + "\n"
    else:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(_CSV_COLUMNS)
        for e in entries:
            writer.writerow([e.repo, e.job_id, e.item_id, e.failure_count, e.first_attempt or "",
                             e.last_attempt or "", e.error_type_name, e.signature,
                             str(e.eligible).lower(), str(e.manual_review).lower(),
                             e.branch or "", e.error_message,
                             json.dumps(e.doc.get("item_data"), ensure_ascii=False)])
        text = buffer.getvalue()
    target = Path(cwd) / args.output
    try:
        target.write_text(text, encoding="utf-8")
    except OSError as exc:
        err.write(f"error[E5001]: cannot write {target} ({exc.strerror or exc})\n")
        return 1
    out.write(f"Exported {len(entries)} DLQ item(s) to {os.fspath(target)}\n")
    return 0
