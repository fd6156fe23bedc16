"""``prodigy``: argument parsing and dispatch.  ``main(argv) -> int`` for in-process tests."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import TextIO

from prodigy_cli import VERSION

NOT_YET = {
    "exec": "runs one command as a one-step workflow",
    "batch": "runs one command over many files as a MapReduce job",
    "resume-job": "resumes a MapReduce job",
    "goal-seek": "runs a goal-seeking loop",
    "worktree": "manages session worktrees",
    "init": "installs Claude command templates",
    "dlq": "inspects and retries failed MapReduce items",
    "analytics": "reports Claude cost and usage",
    "logs": "shows Claude transcripts",
}


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser that exits 2 with a usage message (never a traceback)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        sys.stderr.write(f"error[E8001]: {message}\n")
        raise SystemExit(2)


def _globals(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    default = argparse.SUPPRESS if suppress else None
    parser.add_argument("-v", "--verbose", action="count",
                        default=argparse.SUPPRESS if suppress else 0,
                        help="more output (-v step output, -vv debug, -vvv trace)")
    parser.add_argument("-q", "--quiet", action="store_true",
                        default=argparse.SUPPRESS if suppress else False,
                        help="only warnings, errors and final results")
    del default


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="prodigy", description="Reproducible development pipelines of "
                     "Claude Code and shell steps.")
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    _globals(parser, suppress=False)
    common = _Parser(add_help=False)
    _globals(common, suppress=True)
    sub = parser.add_subparsers(dest="command", parser_class=_Parser)

    run = sub.add_parser("run", parents=[common], help="run a workflow")
    run.add_argument("workflow")
    run.add_argument("-p", "--path", help="project directory (default: current directory)")
    run.add_argument("-n", "--max-iterations", type=int, default=1)
    run.add_argument("--args", action="append", default=[], metavar="VALUE")
    run.add_argument("--map", action="append", default=[], metavar="PATTERN")
    run.add_argument("--fail-fast", action="store_true")
    run.add_argument("-y", "--yes", action="store_true")
    run.add_argument("--resume", metavar="ID")
    run.add_argument("--dry-run", action="store_true")
    run.add_argument("--param", action="append", default=[], metavar="KEY=VALUE")
    run.add_argument("--param-file")
    run.add_argument("--profile")
    run.add_argument("--worktree")
    run.add_argument("--strict", action="store_true")
    run.add_argument("--strict-vars", action="store_true")
    run.add_argument("--json", action="store_true")

    resume = sub.add_parser("resume", parents=[common], help="resume an interrupted session")
    resume.add_argument("id", nargs="?")
    resume.add_argument("--from-checkpoint")
    resume.add_argument("--force", action="store_true")
    resume.add_argument("-y", "--yes", action="store_true")
    resume.add_argument("-p", "--path")
    resume.add_argument("--json", action="store_true")

    validate = sub.add_parser("validate", parents=[common], help="check a workflow file")
    validate.add_argument("workflow")
    validate.add_argument("--strict", action="store_true")
    validate.add_argument("--json", action="store_true")
    validate.add_argument("--param", action="append", default=[])
    validate.add_argument("--param-file")
    validate.add_argument("--profile")

    sessions = sub.add_parser("sessions", parents=[common], help="list and inspect sessions")
    ssub = sessions.add_subparsers(dest="action", parser_class=_Parser)
    for name in ("ls", "list"):
        p = ssub.add_parser(name, parents=[common])
        p.add_argument("--status")
        p.add_argument("--limit", type=int, default=50)
        p.add_argument("--all-repos", action="store_true")
        p.add_argument("--json", action="store_true")
        p.add_argument("-p", "--path")
    p = ssub.add_parser("show", parents=[common])
    p.add_argument("id")
    p.add_argument("--json", action="store_true")

    checkpoints = sub.add_parser("checkpoints", parents=[common], help="inspect checkpoints")
    csub = checkpoints.add_subparsers(dest="action", parser_class=_Parser)
    for name in ("ls", "list"):
        p = csub.add_parser(name, parents=[common])
        p.add_argument("--workflow-id")
        p.add_argument("--all-repos", action="store_true")
        p.add_argument("--json", action="store_true")
        p.add_argument("-p", "--path")
    p = csub.add_parser("show", parents=[common])
    p.add_argument("id")
    p.add_argument("--version", type=int)
    p.add_argument("--json", action="store_true")

    events = sub.add_parser("events", parents=[common], help="read event logs")
    esub = events.add_subparsers(dest="action", parser_class=_Parser)
    for name in ("ls", "follow"):
        p = esub.add_parser(name, parents=[common])
        p.add_argument("--job-id")
        p.add_argument("--file")
        p.add_argument("--all-repos", action="store_true")
        p.add_argument("--json", action="store_true")
        p.add_argument("--event-type", action="append", default=[])
        p.add_argument("-p", "--path")
        if name == "ls":
            p.add_argument("--limit", type=int, default=100)
            p.add_argument("--agent-id")
            p.add_argument("--item-id")

    for name, text in NOT_YET.items():
        p = sub.add_parser(name, help=f"(not available yet) {text}", add_help=True)
        p.add_argument("rest", nargs=argparse.REMAINDER)
    return parser


def main(argv: Sequence[str] | None = None, *, out: TextIO | None = None,
         err: TextIO | None = None, environ: dict[str, str] | None = None,
         cwd: str | None = None) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    env = dict(os.environ if environ is None else environ)
    parser = build_parser()
    try:
        args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    except SystemExit as exc:
        return int(exc.code) if isinstance(exc.code, int) else 2
    if args.version:
        out.write(f"prodigy {VERSION}\n")
        return 0
    if args.command is None:
        parser.print_help(out)
        return 0
    if args.command in NOT_YET:
        err.write(f"error[E8001]: `prodigy {args.command}` {NOT_YET[args.command]}, but it does "
                  "not exist yet in this version of Prodigy.\n")
        return 2
    from prodigy_cli import commands

    try:
        return commands.dispatch(args, out=out, err=err, environ=env, cwd=cwd or os.getcwd())
    except Exception as exc:  # a bug: report it plainly instead of a traceback
        import traceback

        detail = "".join(traceback.format_exception(exc))
        err.write(f"error[E9001]: internal error: {type(exc).__name__}: {exc}\n"
                  "  This is a bug in Prodigy. Please report it with the event log "
                  "(`prodigy events ls --json`).\n")
        if env.get("PRODIGY_DEBUG"):
            err.write(detail)
        return 1


def entry() -> None:
    raise SystemExit(main())
