"""``prodigy logs``: list and show Claude transcripts (spec 08 §2.15, spec 07 §4.3, §8).

Without an id: the most recent transcripts of the repository (those its events refer
to, plus unjournaled ones — a call still running — whose ``init`` ``cwd`` lies in the
repository). With an id (transcript path or file name, Claude session id, Prodigy
session id) or ``--latest``: the transcript in the summarised console form; ``--tail``
keeps following it until the call's ``result`` arrives or Ctrl-C; ``--summary`` prints
the call's analytics record (spec 14 §2) instead.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any, TextIO

from prodigy_cli.cli_support import repo_filter, table, write_json
from prodigy_cli.cmd_analytics import duration, money, resolve_transcripts, tokens
from prodigy_core.analytics_report import CallRecord
from prodigy_core.transcript_view import call_record, summarised
from prodigy_effects.analytics_data import Transcript, list_transcripts, load_runs, read_lines
from prodigy_effects.storage import Storage, StorageError

__all__ = ["POLL_SECONDS", "cmd_logs"]

POLL_SECONDS = 0.2
_IDLE_CHECK_SECONDS = 2.0


def _prefix(record: CallRecord | None) -> str:
    return f"[{record.item_id}] " if record is not None and record.item_id else ""


def _known_session(storage: Storage, session_id: str) -> bool:
    try:
        storage.read_session(session_id)
    except (StorageError, ValueError):
        return False
    return True


def cmd_logs(args: argparse.Namespace, *, storage: Storage, out: TextIO, err: TextIO,
             environ: dict[str, str], cwd: str) -> int:
    repo_root, repo_name = repo_filter(args, cwd)
    explicit = bool(args.id or args.job_id)
    runs = load_runs(storage, None if explicit else repo_name)
    if args.job_id:
        runs = [r for r in runs if args.job_id in (r.run_id, r.job_id, r.session_id)]
        if not runs:
            if _known_session(storage, args.job_id):
                out.write(f"No Claude transcripts for {args.job_id}.\n")
                return 0
            err.write(f"error[E6010]: no job or session '{args.job_id}' found\n"
                      "  hint: `prodigy sessions ls` lists the sessions\n")
            return 2
    records = [rec for run in runs for rec in run.records]
    if args.id:
        found = resolve_transcripts(args.id, storage, cwd, records)
        if found is None:
            if _known_session(storage, args.id):
                out.write(f"Session {args.id} made no Claude calls.\n")
                return 0
            err.write(f"error[E5005]: no Claude transcript matches '{args.id}'\n"
                      "  hint: `prodigy logs` lists the recent transcripts; an id is a "
                      "transcript file name, a Claude session id or a Prodigy session id\n")
            return 2
        if not found:
            err.write(f"error[E5005]: the transcripts of '{args.id}' no longer exist\n")
            return 2
    else:
        listed = list_transcripts(storage, records,
                                  repo_root=None if explicit else repo_root,
                                  repo_name=None if explicit else repo_name,
                                  include_unjournaled=not args.job_id)
        if not (args.latest or args.tail or args.summary):
            return _list(args, listed, out)
        if not listed:
            err.write("error[E5005]: no Claude transcripts found for "
                      f"{'this repository' if repo_name and not explicit else 'this scope'}\n")
            return 2
        found = [listed[0]]
    if args.summary:
        return _summaries(args, found, out)
    if args.tail:
        for info in found[:-1]:
            _show(info, out, json_mode=args.json)
        return _tail(found[-1], storage, out, json_mode=args.json)
    if args.json:
        write_json([_show_doc(info) for info in found], out)
        return 0
    for info in found:
        _show(info, out, json_mode=False)
    return 0


# --------------------------------------------------------------------------- listing


def _row(info: Transcript) -> dict[str, Any]:
    record = info.record
    outcome = record.outcome if record else "unfinished"
    cost = record.cost_usd if record else None
    if record is None:
        try:
            partial = call_record(read_lines(info.path))
        except OSError:
            partial = None
        if partial is not None and not partial.partial:
            outcome = partial.outcome
            cost = partial.cost_usd
    return {"time": info.started_at, "session_id": record.session_id if record else None,
            "claude_session_id": info.claude_session_id,
            "step": record.where if record else None, "outcome": outcome,
            "cost_usd": None if cost is None else round(cost, 6), "path": str(info.path)}


def _list(args: argparse.Namespace, listed: list[Transcript], out: TextIO) -> int:
    shown = listed[: args.limit] if args.limit else listed
    rows = [_row(info) for info in shown]
    if args.json:
        write_json(rows, out)
        return 0
    if not rows:
        out.write("No Claude transcripts found.\n")
        return 0
    grid: list[tuple[str, ...]] = [("TIME", "SESSION", "STEP/ITEM", "OUTCOME", "COST", "PATH")]
    for r in rows:
        grid.append((r["time"], r["session_id"] or "-", r["step"] or "-", r["outcome"],
                     "-" if r["cost_usd"] is None else money(r["cost_usd"]), r["path"]))
    table(grid, out)
    if len(listed) > len(shown):
        out.write(f"({len(listed) - len(shown)} older transcripts not shown; --limit 0 "
                  "shows all)\n")
    return 0


# --------------------------------------------------------------------------- showing


def _header(info: Transcript) -> str:
    record = info.record
    parts = [f"── {info.path.name}"]
    if record is not None:
        parts.append(f"session {record.session_id}, {record.where}, {record.outcome}, "
                     f"{money(record.cost_usd)}")
    elif info.claude_session_id:
        parts.append(f"Claude session {info.claude_session_id}")
    return "  ".join(parts)


def _show_doc(info: Transcript) -> dict[str, Any]:
    return {"path": str(info.path), "claude_session_id": info.claude_session_id,
            "record": info.record.to_json() if info.record else None,
            "lines": list(summarised(read_lines(info.path), prefix=_prefix(info.record)))}


def _show(info: Transcript, out: TextIO, *, json_mode: bool) -> None:
    lines = summarised(read_lines(info.path), prefix=_prefix(info.record))
    if json_mode:
        for line in lines:
            out.write(json.dumps(line, ensure_ascii=False) + "\n")
        return
    out.write(_header(info) + "\n")
    for line in lines:
        out.write(line + "\n")
    if not lines:
        out.write("(nothing yet)\n")


def _record_of(info: Transcript) -> CallRecord:
    if info.record is not None:
        return info.record
    return call_record(read_lines(info.path), json_log_location=str(info.path))


def _summaries(args: argparse.Namespace, found: list[Transcript], out: TextIO) -> int:
    records = [_record_of(info) for info in found]
    if args.json:
        docs = [r.to_json() for r in records]
        write_json(docs[0] if len(docs) == 1 else docs, out)
        return 0
    for info, r in zip(found, records, strict=True):
        errors = dict(r.tool_errors)
        tools = ", ".join(f"{name} {count}" + (f" ({errors[name]} errors)" if errors.get(name)
                                                else "") for name, count in r.tool_uses)
        statuses = ", ".join(str(s) for s in r.api_retry_statuses)
        exit_text = "" if r.exit_code is None else f", exit {r.exit_code}"
        out.write(f"Transcript:      {info.path}\n")
        out.write(f"Claude session:  {r.claude_session_id or '-'}\n")
        if r.session_id:
            out.write(f"Prodigy session: {r.session_id}  ({r.where})\n")
        out.write(f"Model:           {r.model or '-'}\n")
        out.write(f"Outcome:         {r.outcome}{exit_text}"
                  f"{' (partial: no result message)' if r.partial else ''}\n")
        out.write(f"Turns:           {r.num_turns}\n")
        out.write(f"Cost:            {money(r.cost_usd)}\n")
        out.write(f"Tokens:          input {tokens(r.input_tokens)}, output "
                  f"{tokens(r.output_tokens)}, cache read {tokens(r.cache_read_input_tokens)}, "
                  f"cache write {tokens(r.cache_creation_input_tokens)}\n")
        out.write(f"Duration:        {duration(r.duration_ms)} (API "
                  f"{duration(r.duration_api_ms)})\n")
        out.write(f"Tools:           {tools or 'none'}\n")
        out.write(f"API retries:     {r.api_retries}{f' ({statuses})' if statuses else ''}\n")
    return 0


# --------------------------------------------------------------------------- following


def _journaled(storage: Storage, info: Transcript) -> bool:
    """Whether a ``claude_call_completed`` event now names this transcript."""
    target = str(info.path)
    return any(rec.json_log_location == target
               for run in load_runs(storage, None) for rec in run.records)


def _tail(info: Transcript, storage: Storage, out: TextIO, *, json_mode: bool) -> int:
    """Print the transcript summarised, then each new line as it arrives.

    Stops when the ``result`` message has been printed, when the call's completion is
    journaled (a call killed without a result), or on Ctrl-C (exit 0).
    """
    if not json_mode:
        out.write(_header(info) + "\n")
    offset = 0
    pending = b""
    idle_since = time.monotonic()
    last_check = 0.0
    try:
        while True:
            try:
                with open(info.path, "rb") as handle:
                    handle.seek(offset)
                    data = handle.read()
            except OSError:
                data = b""
            finished = False
            if data:
                offset += len(data)
                idle_since = time.monotonic()
                chunks = (pending + data).split(b"\n")
                pending = chunks.pop()
                for raw in chunks:
                    line = raw.decode("utf-8", errors="replace")
                    for shown in summarised([line], prefix=_prefix(info.record)):
                        out.write((json.dumps(shown, ensure_ascii=False) if json_mode
                                   else shown) + "\n")
                    finished = finished or _is_result(line)
                out.flush()
            if finished:
                return 0
            now = time.monotonic()
            if now - idle_since >= _IDLE_CHECK_SECONDS and now - last_check >= \
                    _IDLE_CHECK_SECONDS:
                last_check = now
                if info.record is not None or _journaled(storage, info):
                    return 0
            time.sleep(POLL_SECONDS)
    except KeyboardInterrupt:
        return 0


def _is_result(line: str) -> bool:
    try:
        doc = json.loads(line)
    except ValueError:
        return False
    return isinstance(doc, dict) and doc.get("type") == "result"
