"""``prodigy batch <pattern> --command CMD`` (spec 08 §2.3).

Like ``exec``, ``batch`` builds a workflow (here a MapReduce workflow without setup or
reduce) and hands it to ``cmd_run`` with the merge confirmed.  The items are the files
tracked at ``HEAD`` that match the pattern; they reach the job through ``map.input`` as one
JSON array, printed by a ``printf`` command that carries the list itself, so nothing is
written to the repository or the storage root (docs/decisions.md, "batch").
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

BATCH_PATH = "(batch)"
ITEM = "${item}"
# One argument of a process (the script of ``sh -c``) may hold at most 128 KiB on Linux; a
# longer list is printed by ``prodigy_effects.batch_items`` from the pinned commit instead.
INLINE_LIMIT = 100_000


def batch_input(paths: Sequence[str], *, commit: str, pattern: str,
                limit: int | None = None) -> str:
    """The map ``input`` command that prints ``paths`` as one JSON array (``$`` doubled, so
    that interpolation gives the shell the text unchanged)."""
    command = "printf '%s\\n' " + shlex.quote(json.dumps(list(paths)))
    if len(command.encode("utf-8", "surrogateescape")) > (limit or INLINE_LIMIT):
        command = shlex.join([sys.executable, "-P", "-m", "prodigy_effects.batch_items",
                              commit, pattern])
    return command.replace("$", "$$")


def batch_workflow(command: str, items_input: str, *, parallel: int, retry: int,
                   timeout: str | None) -> str:
    """The MapReduce workflow of ``prodigy batch``, as JSON text."""
    from prodigy_cli.commands import step_kind

    kind, body = step_kind(command)
    if ITEM not in body:
        body = f"{body.rstrip()} {ITEM}"
    step: dict[str, Any] = {kind: body}
    if retry > 1:
        step["retry"] = {"attempts": retry}
    spec: dict[str, Any] = {"input": items_input, "max_parallel": parallel,
                            "agent_template": [step]}
    if timeout:
        spec["agent_timeout_secs"] = timeout
    return json.dumps({"name": "batch", "mode": "mapreduce", "map": spec}, indent=2)


def _nothing_to_do(pattern: str, *, as_json: bool, out: TextIO, err: TextIO) -> int:
    (err if as_json else out).write(f"No files match {pattern}\n")
    if as_json:
        out.write(json.dumps({
            "status": "completed", "exit_code": 0, "session_id": None, "job_id": None,
            "workflow": BATCH_PATH, "worktree": None, "merge": None, "steps": None,
            "items": {"total": 0, "successful": 0, "failed": 0, "pending": 0},
            "cost_usd": 0.0, "duration_ms": 0}) + "\n")
    return 0


def cmd_batch(args: argparse.Namespace, *, out: TextIO, err: TextIO, environ: dict[str, str],
              cwd: str) -> int:
    """``prodigy batch``: ``run`` of a generated MapReduce workflow; the merge is automatic."""
    from prodigy_cli.commands import _abs, _run_error, cmd_run, front_end_run_args
    from prodigy_effects import runner
    from prodigy_effects.batch_items import matching_files
    from prodigy_effects.workflow_io import load_workflow_text

    for option, value in (("--parallel", args.parallel), ("--retry", args.retry)):
        if value < 1:
            err.write(f"error[E8001]: {option} must be at least 1 (got {value})\n")
            return 2
    if not args.pattern.strip():
        err.write("error[E8001]: the file pattern is empty\n")
        return 2
    project = _abs(cwd, args.path) if args.path else Path(cwd)
    if not project.is_dir():
        err.write(f"error[E8001]: project directory {project} does not exist\n")
        return 2
    try:
        checkout = runner.git_checkout(project)
    except runner.RunError as exc:
        _run_error(exc, err)
        return exc.exit_code
    paths = matching_files(project, args.pattern, checkout.head)
    if paths is None:
        err.write(f"error[E4001]: cannot list the files of {checkout.head} in {project}\n")
        return 2
    if not paths:
        return _nothing_to_do(args.pattern, as_json=args.json, out=out, err=err)
    items_input = batch_input(paths, commit=checkout.head, pattern=args.pattern)
    text = batch_workflow(args.batch_command, items_input, parallel=args.parallel,
                          retry=args.retry, timeout=args.timeout)
    loaded = load_workflow_text(text, display_path=BATCH_PATH, stem="batch", environ=environ)
    (err if args.json else out).write(
        f"Executing command on {len(paths)} file(s) matching {args.pattern}: "
        f"{args.batch_command}\n")
    run_args = front_end_run_args(args, BATCH_PATH, yes=True)
    return cmd_run(run_args, out=out, err=err, environ=environ, cwd=cwd, preloaded=loaded)
