"""``prodigy dlq retry <job_id>`` (spec 05 §17, spec 08 §2.10).

Selects the job's DLQ entries, then runs them as a reprocess job
(``<job_id>-reprocess-<unix seconds>``, with its own job state, event log and lock) with the
job's agent template and setup variables, merging through the merge queue.  The target is
the job's session worktree while it exists and has not been merged; otherwise a new session
worktree from the repository's ``HEAD``, which ends with the normal merge.  A success
removes the item's DLQ entry (and the branch it kept); a failure counts one more failure.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any, TextIO

import attrs

from prodigy_effects.storage import StorageError

E_USAGE = "E8001"


def _select(entries: list[Any], args: argparse.Namespace, err: TextIO
            ) -> tuple[list[Any], list[tuple[Any, str]]] | None:
    from prodigy_core import work_items as wi
    from prodigy_core.model import MapSpec

    chosen: list[Any] = []
    skipped: list[tuple[Any, str]] = []
    for entry in entries:
        if args.item and entry.item_id not in args.item:
            continue
        if args.error_type and entry.error_type_name != args.error_type:
            continue
        if args.signature and entry.signature != args.signature:
            continue
        if args.filter:
            kept = wi.select_items([entry.doc.get("item_data")],
                                   MapSpec(input="-", filter=args.filter))
            if isinstance(kept, wi.ItemsError):
                err.write(f"error[{kept.code}]: --filter: {kept.message}\n")
                return None
            if not kept:
                continue
        if not args.force and not entry.eligible:
            skipped.append((entry, "needs manual review (not eligible for reprocessing)"))
            continue
        if not args.force and entry.failure_count > args.max_retries:
            skipped.append((entry, f"failed {entry.failure_count} times "
                                   f"(--max-retries {args.max_retries})"))
            continue
        chosen.append(entry)
    return chosen, skipped


def cmd_dlq_retry(args: argparse.Namespace, *, out: TextIO, err: TextIO,
                  environ: dict[str, str], cwd: str) -> int:
    from prodigy_cli.cmd_jobs import find_job
    from prodigy_cli.commands import _claude_settings, _stored_worktree, _verbosity, storage_for
    from prodigy_core import job_machine
    from prodigy_core import work_items as wi
    from prodigy_effects import dlq_store, job_runner, runner
    from prodigy_effects.jobs import read_newest
    from prodigy_effects.workflow_io import load_workflow_file, load_workflow_text

    storage = storage_for(environ)
    job_id: str = args.job_id
    directory = find_job(storage, job_id)
    if directory is None:
        err.write(f"error[E6010]: no MapReduce job {job_id} under {storage.root / 'state'}\n")
        return 2
    repo_name = directory.parents[2].name
    doc, warnings = read_newest(directory)
    for warning in warnings:
        code, _, rest = warning.partition(": ")
        err.write(f"warning[{code}]: {rest}\n")
    if doc is None:
        err.write(f"error[E5003]: job {job_id} has no readable job state in {directory}\n")
        return 2
    entries = dlq_store.list_entries(storage, repo_name, job_id)
    selected = _select(entries, args, err)
    if selected is None:
        return 2
    chosen, skipped = selected
    human = err if args.json else out
    for entry, reason in skipped:
        human.write(f"Skipping {entry.item_id}: {reason} (use --force to retry it anyway)\n")
    if not chosen:
        human.write(f"Nothing to retry in the DLQ of {job_id}.\n")
        if args.json:
            out.write(json.dumps({"job_id": job_id, "selected": 0,
                                  "skipped": len(skipped)}) + "\n")
        return 2
    human.write(f"Selected {len(chosen)} item(s) of {job_id}: "
                f"{', '.join(e.item_id for e in chosen)}\n")
    if args.dry_run:
        human.write("Nothing was run (dry run).\n")
        if args.json:
            out.write(json.dumps({"job_id": job_id, "selected": [e.item_id for e in chosen],
                                  "skipped": [e.item_id for e, _ in skipped]}) + "\n")
        return 0
    session_id = str(doc.get("session_id") or "")
    try:
        session = storage.read_session(session_id)
    except (StorageError, ValueError) as exc:
        err.write(f"error[E5005]: the session {session_id} of job {job_id} is unknown: {exc}\n")
        return 2
    wf_path = Path(str(doc.get("workflow_path") or ""))
    if wf_path.is_file():
        loaded = load_workflow_file(wf_path, display_path=str(wf_path), environ=environ)
        text = loaded.text or ""
    else:
        try:
            snapshot: Any = json.loads((directory / "workflow.snapshot.json").read_text())
        except (OSError, ValueError):
            err.write(f"error[E5007]: workflow {wf_path} is gone and the job has no "
                      "snapshot\n")
            return 2
        text = str(snapshot.get("source_text", ""))
        loaded = load_workflow_text(text, display_path=str(wf_path), stem=wf_path.stem,
                                    environ=environ, filename=wf_path.name or "wf.yml")
    if loaded.workflow is None or any(p.is_error for p in loaded.problems) or \
            loaded.workflow.map is None:
        err.write(f"error[E1001]: cannot load the job's workflow {wf_path}\n")
        return 2
    workflow = loaded.workflow
    assert workflow.map is not None
    if args.parallel:
        workflow = attrs.evolve(workflow, map=attrs.evolve(workflow.map,
                                                           max_parallel=args.parallel))
    repo_root = str(session.get("repo_path") or "")
    repo = runner.Repo(root=repo_root, name=repo_name, is_git=True)
    resolved = runner.resolve_env(workflow, repo_root=repo_root, project_dir=repo_root,
                                  environ=environ, profile=None, args=(), file=str(wf_path),
                                  positions=loaded.positions)
    from prodigy_cli.commands import print_env_problems

    if print_env_problems(resolved, workflow, environ, err, warnings=False):
        return 2
    verbosity, quiet = _verbosity(args)
    req = runner.RunRequest(workflow=workflow, workflow_path=str(wf_path), workflow_text=text,
                            project_dir=Path(repo_root), environ=environ,
                            auto_yes=args.yes, verbosity=verbosity, quiet=quiet,
                            json_mode=args.json)
    claude = _claude_settings(workflow, environ, repo_root, dry_run=False, err=err)
    if claude is None:
        return 2
    new_session = job_runner.new_session_id()
    stored = _stored_worktree(session, storage, repo_name, environ)
    merged = bool((session.get("merge") or {}).get("merged"))
    reuse = stored is not None and Path(stored.path).is_dir() and not merged
    if reuse:
        worktree = stored
    else:
        try:
            checkout = runner.git_checkout(Path(repo_root))
        except runner.RunError as exc:
            err.write(f"error[{exc.code}]: {exc.message}\n")
            return exc.exit_code
        worktree = runner.worktree_spec(storage, checkout, new_session, named=False,
                                        environ=environ)
    ctx = runner.build_context(req, session_id=new_session, repo=repo, resolved=resolved,
                               inputs=[], claude=claude, worktree=worktree)
    ctx = attrs.evolve(ctx, progress_interval=1.0)
    reprocess_id = wi.reprocess_job_id(job_id, int(time.time()))
    config = attrs.evolve(job_runner.job_config(storage, repo_name, reprocess_id, new_session),
                          reprocess_of=job_id, final_merge=not reuse)
    from prodigy_core.job_docs import restore_variables

    variables = restore_variables(doc)
    items = [e.doc.get("item_data") for e in chosen]
    ids = [e.item_id for e in chosen]
    human.write(f"Reprocessing as job {reprocess_id}"
                + (f" in the job's worktree {worktree.path}" if reuse and worktree else "")
                + "\n")
    storage.ensure()
    transition = job_machine.start_reprocess(workflow, ctx, config, items=items,
                                             item_ids=ids, variables=variables,
                                             reuse_worktree=reuse)
    started = time.monotonic()
    try:
        result = job_runner.execute_job(transition, ctx, config, storage,
                                        verbosity=verbosity, quiet=quiet,
                                        json_mode=args.json, out=out, err=err,
                                        dlq_job=job_id)
    except StorageError as exc:
        err.write(f"error[{exc.code}]: {exc}\n")
        return 1 if exc.code == "E5004" else 2
    after = {e.item_id: e for e in dlq_store.list_entries(storage, repo_name, job_id)}
    failed = [i for i in ids if i in after]
    ok = [i for i in ids if i not in after]
    report = {"job_id": job_id, "reprocess_job_id": reprocess_id, "selected": len(ids),
              "successful": len(ok), "failed": len(failed), "skipped": len(skipped),
              "duration_secs": round(time.monotonic() - started, 3),
              "failed_items": failed[:5],
              "failures_by_signature": _by_signature([after[i] for i in failed])}
    human.write(f"DLQ retry of {job_id}: {len(ids)} selected, {len(ok)} successful, "
                f"{len(failed)} failed, {len(skipped)} skipped "
                f"({report['duration_secs']}s)\n")
    if failed:
        human.write(f"  still failing: {', '.join(failed[:5])}"
                    + (" …" if len(failed) > 5 else "") + "\n")
        for signature, count in report["failures_by_signature"].items():  # type: ignore[union-attr]
            human.write(f"  {count} × {signature}\n")
    if args.json:
        out.write(json.dumps(report) + "\n")
    if result.exit_code not in (0, 3):
        return result.exit_code
    return 3 if failed else 0


def _by_signature(entries: list[Any]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for entry in entries:
        counts[entry.signature] = counts.get(entry.signature, 0) + 1
    return counts
