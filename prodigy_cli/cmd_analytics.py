"""``prodigy analytics``: cost, tokens, tools and replays of Claude calls (spec 14 §4).

The records are rebuilt from the event logs of the scope on every call
(``prodigy_effects.analytics_data``) and turned into tables by the pure functions of
``prodigy_core.analytics_report``; this module only chooses the scope and renders.
Scope (spec 08 §1.5): the current repository, or ``--all-repos``; ``--session`` /
``--job`` (or a positional session id) select one run wherever it is stored.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal, TextIO

import attrs

from prodigy_cli.cli_support import E_USAGE, now_utc, parse_time, repo_filter, table, write_json
from prodigy_core import analytics_report as report
from prodigy_core.analytics_report import CallRecord, GroupBy
from prodigy_core.reprs import value_class
from prodigy_core.transcript_view import replay_lines
from prodigy_effects.analytics_data import (
    Run,
    Transcript,
    claude_project_log,
    list_transcripts,
    load_runs,
    read_lines,
    transcript_info,
)
from prodigy_effects.storage import Storage, StorageError

__all__ = ["Scope", "cmd_analytics", "resolve_transcripts", "select"]


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class Scope:
    """The runs and calls a report covers, and how to describe them."""

    runs: tuple[Run, ...]
    records: tuple[CallRecord, ...]
    label: str
    repo_root: str | None
    repo_name: str | None


class ScopeError(Exception):
    """An unknown session or job id (exit 2); the message is ready to print."""


def money(value: float) -> str:
    return f"${value:.4f}"


def tokens(n: int) -> str:
    if n >= 1_000_000:
        return f"{n / 1_000_000:.1f}M"
    if n >= 10_000:
        return f"{n // 1000}k"
    if n >= 1000:
        return f"{n / 1000:.1f}k"
    return str(n)


def duration(ms: int | None) -> str:
    if ms is None:
        return "-"
    secs = ms / 1000
    if secs < 60:
        return f"{secs:.1f}s"
    whole = int(secs)
    if whole < 3600:
        return f"{whole // 60}m {whole % 60}s"
    return f"{whole // 3600}h {whole % 3600 // 60}m"


def _known_session(storage: Storage, session_id: str) -> bool:
    try:
        storage.read_session(session_id)
    except (StorageError, ValueError):
        return False
    return True


def select(args: argparse.Namespace, storage: Storage, cwd: str, *,
           session: str | None = None, job: str | None = None) -> Scope:
    """The runs and records selected by the common options (``ScopeError`` if unknown)."""
    repo_root, repo_name = repo_filter(args, cwd)
    since = getattr(args, "since", None)
    if session or job:
        runs = load_runs(storage, None)
        if session:
            runs = [r for r in runs if session in (r.session_id, r.run_id)]
            if not runs and not _known_session(storage, session):
                raise ScopeError(f"error[E5005]: session {session} not found\n"
                                 "  hint: `prodigy sessions ls` lists the sessions\n")
        if job:
            runs = [r for r in runs if job in (r.job_id, r.run_id)]
            if not runs and not _known_session(storage, job):
                raise ScopeError(f"error[E6010]: job {job} not found\n"
                                 "  hint: `prodigy sessions ls` lists the sessions and jobs\n")
        label = " ".join(x for x in (f"session {session}" if session else "",
                                     f"job {job}" if job else "") if x)
    else:
        runs = load_runs(storage, repo_name)
        label = f"repository {repo_name}" if repo_name else "all repositories"
    records = [rec for r in runs for rec in r.records]
    if since is not None:
        cutoff = now_utc() - timedelta(seconds=since)
        records = [rec for rec in records if _after(rec.timestamp, cutoff)]
        runs = [r for r in runs if _after(r.last_timestamp, cutoff)]
        label += f", since {cutoff.isoformat(timespec='seconds').replace('+00:00', 'Z')}"
    records.sort(key=lambda r: (r.timestamp, r.run_id))
    return Scope(runs=tuple(runs), records=tuple(records), label=label, repo_root=repo_root,
                 repo_name=repo_name)


def _after(stamp: str, cutoff: Any) -> bool:
    moment = parse_time(stamp)
    return moment is not None and moment >= cutoff


def cmd_analytics(args: argparse.Namespace, *, storage: Storage, out: TextIO, err: TextIO,
                  environ: dict[str, str], cwd: str) -> int:
    action = args.action or "summary"
    if action != "replay" and args.target:
        if args.session and args.session != args.target:
            err.write(f"error[{E_USAGE}]: two sessions given ({args.target} and --session "
                      f"{args.session})\n")
            return 2
        args.session = args.target
    if action == "replay":
        return replay(args, storage, out, err, cwd)
    if action == "cost" and args.project and not args.job:
        err.write(f"error[{E_USAGE}]: --project needs --job ID (the job to forecast)\n")
        return 2
    try:
        scope = select(args, storage, cwd, session=args.session, job=args.job)
    except ScopeError as exc:
        err.write(str(exc))
        return 2
    if getattr(args, "output", None):
        args.output = str(Path(cwd) / args.output)
    handlers = {"summary": summary, "cost": cost, "tools": tools, "sessions": sessions,
                "export": export}
    return handlers[action](args, scope, out, err, environ)


# --------------------------------------------------------------------------- summary


def summary(args: argparse.Namespace, scope: Scope, out: TextIO, err: TextIO,
            environ: dict[str, str]) -> int:
    records = scope.records
    doc = report.summary(records, runs=len(scope.runs))
    if args.json:
        write_json({"scope": scope.label, **doc}, out)
        return 0
    total = report.totals(records, runs=len(scope.runs))
    out.write(f"Claude analytics for {scope.label}\n")
    out.write(f"  Runs: {total.runs}\n")
    out.write(f"  Claude calls: {total.calls} ({total.failed_calls} failed), "
              f"{total.num_turns} turns\n")
    out.write(f"  Cost: {money(total.cost_usd)}\n")
    ratio = total.cache_hit_ratio
    hit = "-" if ratio is None else f"{ratio:.0%}"
    out.write(f"  Tokens: input {tokens(total.input_tokens)}, output "
              f"{tokens(total.output_tokens)}, cache read {tokens(total.cache_read_input_tokens)}, "
              f"cache write {tokens(total.cache_creation_input_tokens)} (cache hit {hit})\n")
    out.write(f"  Time: {duration(total.duration_ms)} in calls, "
              f"{duration(total.api_duration_ms)} API; {total.api_retries} API retries\n")
    if not records:
        out.write("No Claude calls found.\n")
        return 0
    rows = report.tool_stats(records)[:5]
    if rows:
        out.write("Top tools:\n")
        for t in rows:
            out.write(f"  {t.name:<12} {t.uses:>5} uses  {t.errors:>4} errors "
                      f"({t.error_rate:.0%})\n")
    orders: tuple[tuple[str, Literal["cost", "duration"]], ...] = (
        ("Most expensive", "cost"), ("Slowest", "duration"))
    for title, by in orders:
        top = report.top_steps(records, n=5, by=by)
        out.write(f"{title}:\n")
        for g in top:
            out.write(f"  {money(g.cost_usd):>10}  {duration(g.duration_ms):>8}  {g.key}  "
                      f"({g.scope}, {g.calls} calls)\n")
    hints = report.recommendations(records)
    out.write("Recommendations:\n" if hints else "Recommendations: none\n")
    for h in hints:
        out.write(f"  ⚠️  {h.message}\n      ({h.detail})\n")
    return 0


# --------------------------------------------------------------------------- cost


def _projection(scope: Scope) -> tuple[report.Projection | None, str | None]:
    runs = [r for r in scope.runs if r.total_items is not None]
    if not runs:
        return None, "the job's event log has no job_started event with the item count"
    run = runs[-1]
    done = dict(run.finished_items)
    costs_by_item = {item: c for (_, item), c in report.item_costs(run.records).items()}
    costs = [costs_by_item.get(item, 0.0) for item in done]
    remaining = (run.total_items or 0) - len(done)
    projection = report.project(costs, [d for d in done.values() if d > 0],
                                remaining=remaining, max_parallel=run.max_parallel or 1)
    if projection is None:
        return None, "no item has finished yet"
    return projection, None


def cost(args: argparse.Namespace, scope: Scope, out: TextIO, err: TextIO,
         environ: dict[str, str]) -> int:
    by: GroupBy = args.by or "session"
    rows = report.group_by(scope.records, by)
    projection, why = _projection(scope) if args.project else (None, None)
    if args.json:
        doc: dict[str, Any] = {"scope": scope.label, "by": by,
                               "rows": [g.to_json() for g in rows],
                               "total": report.totals(scope.records,
                                                      runs=len(scope.runs)).to_json()}
        if args.project:
            doc["projection"] = projection.to_json() if projection else None
            if why:
                doc["projection_note"] = why
        write_json(doc, out)
        return 0
    out.write(f"Claude cost by {by} for {scope.label}\n")
    if not rows:
        out.write("No Claude calls found.\n")
    else:
        head = by.upper()
        scoped = by in ("step", "item")
        grid: list[tuple[str, ...]] = [(head, *(("RUN",) if scoped else ()), "CALLS", "FAILED", "TURNS", "INPUT",
                 "OUTPUT", "COST")]
        for g in rows:
            grid.append((g.key, *((g.scope or "-",) if scoped else ()), str(g.calls),
                         str(g.failed_calls), str(g.num_turns), tokens(g.input_tokens),
                         tokens(g.output_tokens), money(g.cost_usd)))
        total = report.totals(scope.records)
        grid.append(("TOTAL", *(("",) if scoped else ()), str(total.calls),
                     str(total.failed_calls), str(total.num_turns), tokens(total.input_tokens),
                     tokens(total.output_tokens), money(total.cost_usd)))
        table(grid, out)
    if args.project:
        if projection is None:
            out.write(f"Projection: not available ({why}).\n")
        else:
            p = projection
            out.write(f"Projection: {p.remaining_items} items remaining after "
                      f"{p.finished_items} finished\n")
            out.write(f"  Remaining cost: {money(p.remaining_cost_usd)} (up to "
                      f"{money(p.remaining_cost_high_usd)} at the 90th percentile; median item "
                      f"{money(p.median_cost_usd)})\n")
            out.write(f"  Remaining time: {duration(p.remaining_time_ms)}\n")
    return 0


# --------------------------------------------------------------------------- tools


def tools(args: argparse.Namespace, scope: Scope, out: TextIO, err: TextIO,
          environ: dict[str, str]) -> int:
    rows = report.tool_stats(scope.records)
    if args.json:
        write_json({"scope": scope.label, "tools": [t.to_json() for t in rows]}, out)
        return 0
    if not rows:
        out.write(f"No tool uses found for {scope.label}.\n")
        return 0
    grid: list[tuple[str, ...]] = [("TOOL", "USES", "ERRORS", "ERROR RATE")]
    grid += [(t.name, str(t.uses), str(t.errors), f"{t.error_rate:.0%}") for t in rows]
    table(grid, out)
    bash = next((t for t in rows if t.name == "Bash" and t.commands), None)
    if bash is not None:
        out.write("Most frequent Bash commands:\n")
        for word, count in bash.commands:
            out.write(f"  {count:>5}  {word}\n")
    return 0


# --------------------------------------------------------------------------- sessions


def sessions(args: argparse.Namespace, scope: Scope, out: TextIO, err: TextIO,
             environ: dict[str, str]) -> int:
    records = list(scope.records)
    records.reverse()  # newest first
    if args.limit:
        records = records[: args.limit]
    docs = []
    for r in records:
        docs.append({"claude_session_id": r.claude_session_id, "run_id": r.run_id,
                     "session_id": r.session_id, "where": r.where, "step_path": r.step_path,
                     "item_id": r.item_id, "model": r.model, "num_turns": r.num_turns,
                     "cost_usd": round(r.cost_usd, 6), "outcome": r.outcome,
                     "timestamp": r.timestamp, "transcript": r.json_log_location,
                     "claude_log": claude_project_log(r.claude_session_id, environ)})
    if args.json:
        write_json(docs, out)
        return 0
    if not docs:
        out.write(f"No Claude calls found for {scope.label}.\n")
        return 0
    grid: list[tuple[str, ...]] = [("CLAUDE SESSION", "RUN", "STEP/ITEM", "MODEL", "TURNS", "COST", "OUTCOME",
             "TRANSCRIPT")]
    for r, d in zip(records, docs, strict=True):
        grid.append((str(d["claude_session_id"] or "-"), str(d["run_id"]), str(d["where"]),
                     str(d["model"] or "-"), str(d["num_turns"]), money(r.cost_usd),
                     str(d["outcome"]), str(d["transcript"] or "-")))
    table(grid, out)
    logs = [d for d in docs if d["claude_log"]]
    if logs:
        out.write("Claude Code logs:\n")
        for d in logs:
            out.write(f"  {d['claude_session_id']}  {d['claude_log']}\n")
    return 0


# --------------------------------------------------------------------------- export


def export(args: argparse.Namespace, scope: Scope, out: TextIO, err: TextIO,
           environ: dict[str, str]) -> int:
    docs = [r.to_json() for r in scope.records]
    if args.format == "csv":
        text = _csv(docs)
    else:
        text = json.dumps(docs, indent=2, ensure_ascii=False) + "\n"
    if args.output:
        path = Path(args.output)
        try:
            path.write_text(text, encoding="utf-8")
        except OSError as exc:
            err.write(f"error[{E_USAGE}]: cannot write {path} ({exc.strerror or exc})\n")
            return 2
        (err if args.json else out).write(f"Wrote {len(docs)} records to {path}\n")
        return 0
    out.write(text)
    return 0


_CSV_FIELDS = ("timestamp", "repo", "run_id", "prodigy_session_id", "job_id", "step_path",
               "agent_id", "item_id", "session_id", "model", "success", "is_error", "subtype",
               "exit_code", "error_code", "duration_ms", "duration_api_ms", "num_turns",
               "cost_usd", "input_tokens", "output_tokens", "cache_read_input_tokens",
               "cache_creation_input_tokens", "tool_uses", "tool_errors", "api_retries",
               "api_retry_statuses", "partial", "json_log_location")


def _csv(docs: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=_CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    for doc in docs:
        row = {k: doc.get(k) for k in _CSV_FIELDS}
        row.update(doc["usage"])
        row["tool_uses"] = json.dumps(doc["tool_uses"], sort_keys=True)
        row["tool_errors"] = json.dumps(doc["tool_errors"], sort_keys=True)
        row["api_retries"] = doc["api_retries"]["count"]
        row["api_retry_statuses"] = " ".join(str(s) for s in doc["api_retries"]["statuses"])
        writer.writerow(row)
    return buffer.getvalue()


# --------------------------------------------------------------------------- replay


def resolve_transcripts(ref: str, storage: Storage, cwd: str,
                        records: list[CallRecord]) -> list[Transcript] | None:
    """Transcripts named by ``ref``: a path, a file name (with or without ``.jsonl``), a
    Claude session id or a Prodigy session/run id. ``None`` when nothing matches."""
    direct = Path(ref) if Path(ref).is_absolute() else Path(cwd) / ref
    by_path = {str(Path(r.json_log_location)): r for r in records if r.json_log_location}
    directory = storage.transcripts_dir()
    candidates = [directory / ref, directory / f"{ref}.jsonl"]
    if "/" in ref or ref.endswith(".jsonl"):
        candidates.insert(0, direct)
    for candidate in candidates:
        if candidate.is_file():
            return [transcript_info(candidate, by_path.get(str(candidate)))]
    matched = [r for r in records if ref == r.claude_session_id and r.json_log_location]
    if not matched:
        matched = [r for r in records if ref in (r.session_id, r.run_id) and r.json_log_location]
    if matched:
        return [transcript_info(Path(r.json_log_location or ""), r) for r in matched
                if Path(r.json_log_location or "").is_file()]
    for info in list_transcripts(storage, [], repo_root=None, repo_name=None):
        if info.claude_session_id == ref:
            return [info]
    return None


def replay(args: argparse.Namespace, storage: Storage, out: TextIO, err: TextIO,
           cwd: str) -> int:
    if args.interactive:
        err.write(f"error[{E_USAGE}]: `analytics replay --interactive` is not available yet "
                  "in this version of Prodigy; use --from N and --limit N\n")
        return 2
    if not args.target and not (args.session and args.step):
        err.write(f"error[{E_USAGE}]: replay needs a Claude session id, a transcript path or "
                  "file name, or --session ID --step STEP_PATH\n")
        return 2
    records = [rec for run in load_runs(storage, None) for rec in run.records]
    if args.target:
        found = resolve_transcripts(args.target, storage, cwd, records)
        if found is None:
            err.write(f"error[E5005]: no Claude transcript matches '{args.target}'\n"
                      "  hint: `prodigy analytics sessions` lists the calls and transcripts\n")
            return 2
    else:
        chosen = [r for r in records if args.session in (r.session_id, r.run_id)
                  and r.step_path == args.step and r.json_log_location]
        if not chosen:
            err.write(f"error[E5005]: no Claude call of session {args.session} at step "
                      f"{args.step}\n  hint: `prodigy analytics sessions --session "
                      f"{args.session}` lists its calls\n")
            return 2
        found = [transcript_info(Path(r.json_log_location or ""), r) for r in chosen]
    if not found:
        err.write(f"error[E5005]: the transcripts of '{args.target}' no longer exist\n")
        return 2
    if len(found) > 1:
        err.write(f"{len(found)} calls match; replaying the last one (name a transcript to "
                  "pick another):\n")
        for info in found:
            err.write(f"  {info.path.name}\n")
    chosen_one = found[-1]
    try:
        lines = read_lines(chosen_one.path)
    except OSError as exc:
        err.write(f"error[E5005]: cannot read {chosen_one.path} ({exc.strerror or exc})\n")
        return 2
    shown = replay_lines(lines, start=args.start or 1, limit=args.limit)
    if args.json:
        write_json({"transcript": str(chosen_one.path),
                    "claude_session_id": chosen_one.claude_session_id,
                    "entries": list(shown)}, out)
        return 0
    record = chosen_one.record
    where = f"  {record.session_id} {record.where}" if record else ""
    out.write(f"Transcript {chosen_one.path}{where}\n")
    for line in shown:
        out.write(line + "\n")
    if not shown:
        out.write("(no entries)\n")
    return 0
