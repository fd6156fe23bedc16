"""``prodigy goal-seek <goal>`` (spec 08 §2.6): ``run`` of a one-step ``goal_seek`` workflow.

The step is built from the options (spec 12 §1.5) as JSON text and loaded like any
workflow file, so it is validated, journaled, checkpointed and merged as ``run`` does.
The exit code is 0 only when the goal was achieved: without ``--fail-on-incomplete`` a
goal not reached still completes the run (its commits are merged) but exits 1.
"""

from __future__ import annotations

import argparse
import json
from typing import Any, TextIO

GOAL_PATH = "<goal-seek>"


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    goal = sub.add_parser("goal-seek", parents=[common],
                          help="repeat a command until a validation score reaches a threshold")
    goal.add_argument("goal", metavar="GOAL", help="what the loop is trying to achieve")
    goal.add_argument("-c", "--command", required=True, dest="goal_command", metavar="CMD",
                      help="command run each attempt: '/slash-command …' or 'claude: …' for "
                           "Claude, else a shell command")
    goal.add_argument("--validate", required=True, metavar="CMD",
                      help="shell command that prints the score (e.g. 'score: 85')")
    goal.add_argument("-t", "--threshold", type=float, default=80.0, metavar="N",
                      help="score needed, 0–100 (default 80)")
    goal.add_argument("-m", "--max-attempts", type=int, default=5, metavar="N",
                      help="maximum attempts (default 5)")
    goal.add_argument("--timeout", metavar="DURATION",
                      help="time budget for all attempts, e.g. 30m")
    goal.add_argument("--fail-on-incomplete", action="store_true",
                      help="a goal not reached fails the run (nothing is merged)")
    goal.add_argument("-y", "--yes", action="store_true", help="merge without asking")
    goal.add_argument("-p", "--path", help="project directory (default: current directory)")
    goal.add_argument("--json", action="store_true")


def goal_workflow(args: argparse.Namespace) -> str:
    """The one-step workflow of ``prodigy goal-seek`` as JSON text."""
    step: dict[str, Any] = {
        "goal": args.goal, "command": args.goal_command, "validate": args.validate,
        "threshold": args.threshold, "max_attempts": args.max_attempts,
        "fail_on_incomplete": bool(args.fail_on_incomplete),
    }
    if args.timeout:
        step["timeout_seconds"] = args.timeout
    return json.dumps({"name": "goal-seek", "commands": [{"goal_seek": step}]}, indent=2)


def cmd_goal_seek(args: argparse.Namespace, *, out: TextIO, err: TextIO,
                  environ: dict[str, str], cwd: str) -> int:
    from prodigy_cli.commands import cmd_run, front_end_run_args
    from prodigy_core.parse.durations import parse_duration
    from prodigy_effects.workflow_io import load_workflow_text

    if not 0 <= args.threshold <= 100:
        err.write(f"error[E8001]: --threshold must be between 0 and 100 (got "
                  f"{args.threshold:g})\n")
        return 2
    if args.max_attempts < 1:
        err.write(f"error[E8001]: --max-attempts must be at least 1 (got "
                  f"{args.max_attempts})\n")
        return 2
    if args.timeout is not None and parse_duration(args.timeout) is None:
        err.write(f"error[E8001]: --timeout {args.timeout!r} is not a duration (e.g. 90s, "
                  "30m, 1h)\n")
        return 2
    loaded = load_workflow_text(goal_workflow(args), display_path=GOAL_PATH, stem="goal-seek",
                                environ=environ)
    (err if args.json else out).write(f"Goal: {args.goal}\n")
    verdict: dict[str, Any] = {}

    def keep(outcome: Any) -> Any:
        if not isinstance(outcome, dict):
            return outcome
        verdict.update(outcome)
        goal = outcome.get("goal")
        if outcome.get("exit_code") == 0 and not (
                isinstance(goal, dict) and goal.get("status") == "achieved"):
            # the run completed, but the goal was not reached: exit 1 (spec 08 §2.6)
            return {**outcome, "status": "completed_with_failures", "exit_code": 1}
        return outcome

    run_args = front_end_run_args(args, GOAL_PATH, yes=args.yes, on_outcome=keep)
    code = cmd_run(run_args, out=out, err=err, environ=environ, cwd=cwd, preloaded=loaded)
    if code != 0:
        return code
    goal = verdict.get("goal")
    status = goal.get("status") if isinstance(goal, dict) else None
    if status != "achieved":
        (err if args.json else out).write(f"Goal not achieved ({status or 'unknown'})\n")
        return 1
    return 0
