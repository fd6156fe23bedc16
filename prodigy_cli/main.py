"""``prodigy``: argument parsing and dispatch.  ``main(argv) -> int`` for in-process tests."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Sequence
from typing import Any, TextIO

from prodigy_cli import VERSION

NOT_YET: dict[str, str] = {}


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


def _nonneg_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid count {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"invalid count {text!r}: it must not be negative")
    return value


def _scope(p: argparse.ArgumentParser) -> None:
    p.add_argument("--all-repos", action="store_true",
                   help="data of every repository under the storage root")
    p.add_argument("-p", "--path", help="project directory (default: current directory)")


def _confirm_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("-f", "--force", action="store_true", help="do not ask for confirmation")
    p.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")


def _inspect_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    """``sessions``, ``checkpoints`` and ``events`` (spec 08 §2.9, §2.11, §2.12)."""
    from prodigy_cli.cli_support import duration_arg, size_arg

    week = 7 * 86400.0
    sessions = sub.add_parser("sessions", parents=[common], help="list, inspect and clean sessions")
    ssub = sessions.add_subparsers(dest="action", parser_class=_Parser)
    for name in ("ls", "list"):
        p = ssub.add_parser(name, parents=[common], help="list sessions, newest first")
        p.add_argument("--status")
        p.add_argument("--limit", type=_nonneg_int, default=50)
        p.add_argument("--json", action="store_true")
        _scope(p)
    p = ssub.add_parser("show", parents=[common], help="show one session")
    p.add_argument("id")
    p.add_argument("--json", action="store_true")
    p = ssub.add_parser("clean", parents=[common], help="delete old finished sessions")
    p.add_argument("--older-than", type=duration_arg, default=week, metavar="DURATION",
                   help="only sessions finished longer ago than this (default 7d)")
    p.add_argument("--all", action="store_true",
                   help="also Failed, Paused and Cancelled sessions (default: Completed only)")
    p.add_argument("--dry-run", action="store_true", help="show what would be deleted")
    p.add_argument("--json", action="store_true")
    _confirm_flags(p)
    _scope(p)

    checkpoints = sub.add_parser("checkpoints", parents=[common],
                                 help="inspect, validate and clean checkpoints")
    csub = checkpoints.add_subparsers(dest="action", parser_class=_Parser)
    for name in ("ls", "list"):
        p = csub.add_parser(name, parents=[common], help="list checkpoints")
        p.add_argument("--workflow-id")
        p.add_argument("--json", action="store_true")
        _scope(p)
    p = csub.add_parser("show", parents=[common], help="show one checkpoint")
    p.add_argument("id")
    p.add_argument("--version", type=int, metavar="N", dest="checkpoint_version",
                   help="1 = the current version, 2 = the previous one")
    p.add_argument("--json", action="store_true")
    p = csub.add_parser("validate", parents=[common], help="check a checkpoint's versions")
    p.add_argument("id")
    p.add_argument("--repair", action="store_true",
                   help="remove corrupt versions so the newest valid one is used")
    p.add_argument("--json", action="store_true")
    p = csub.add_parser("delete", parents=[common], help="delete a checkpoint")
    p.add_argument("id")
    p.add_argument("--json", action="store_true")
    _confirm_flags(p)
    p = csub.add_parser("clean", parents=[common], help="delete checkpoints")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--workflow-id", metavar="ID")
    which.add_argument("--all", action="store_true")
    p.add_argument("--dry-run", action="store_true")
    p.add_argument("--json", action="store_true")
    _confirm_flags(p)
    _scope(p)
    p = csub.add_parser("mapreduce", parents=[common],
                        help="(not available yet) checkpoint versions of a MapReduce job")
    p.add_argument("job_id")
    p.add_argument("--detailed", action="store_true")
    p.add_argument("--json", action="store_true")

    events = sub.add_parser("events", parents=[common], help="read and maintain event logs")
    esub = events.add_subparsers(dest="action", parser_class=_Parser)
    helps = {"ls": "list events", "follow": "print events as they are appended",
             "stats": "count events per group", "search": "find events by regular expression",
             "clean": "delete or archive old events", "export": "write events as json/csv/md"}
    for name, text in helps.items():
        p = esub.add_parser(name, parents=[common], help=text)
        p.add_argument("--job-id", "--job", dest="job_id",
                       help="a job id or a session id")
        if name != "clean":
            p.add_argument("--file", help="read one specific event file")
        p.add_argument("--json", action="store_true")
        p.add_argument("--event-type", action="append", default=[], metavar="T")
        _scope(p)
        if name in ("ls", "stats", "search", "export"):
            p.add_argument("--agent-id")
            p.add_argument("--item-id")
            p.add_argument("--since", type=duration_arg, metavar="DURATION",
                           help="only events of the last DURATION (30s, 5m, 1h, 7d)")
        if name == "ls":
            p.add_argument("--limit", type=_nonneg_int, default=100,
                           help="the last N matching events (default 100; 0 = all)")
        elif name == "stats":
            p.add_argument("--group-by", choices=("event_type", "job_id", "agent_id"),
                           default="event_type")
        elif name == "search":
            p.add_argument("pattern", metavar="REGEX")
            p.add_argument("--fields", metavar="F1,F2",
                           help="match only these fields (dotted paths) instead of the JSON text")
        elif name == "clean":
            p.add_argument("--older-than", type=duration_arg, default=week, metavar="DURATION",
                           help="remove events older than this (default 7d)")
            p.add_argument("--max-events", type=_nonneg_int, metavar="N",
                           help="keep at most the newest N events of each run")
            p.add_argument("--max-size", type=size_arg, metavar="SIZE",
                           help="keep at most SIZE bytes (e.g. 10MB) of each run's log")
            p.add_argument("--archive", action="store_true",
                           help="move removed events to the archive instead of deleting them")
            p.add_argument("--archive-path", metavar="DIR",
                           help="archive directory (default <storage>/archive/events)")
            p.add_argument("--dry-run", action="store_true")
            _confirm_flags(p)
        elif name == "export":
            p.add_argument("--format", choices=("json", "csv", "markdown"), default="json")
            p.add_argument("--output", metavar="FILE")


class _Skipped:
    """Stands in for the parser of a command this invocation does not run: every call
    (``add_argument``, ``add_subparsers``…) is accepted and forgotten."""

    def __getattr__(self, name: str) -> Any:
        return self._ignore

    def _ignore(self, *args: Any, **kwargs: Any) -> _Skipped:
        return self


class _LazySubparsers:
    """``add_subparsers()`` that fully builds only the command being run.

    Building all 50-odd command parsers took a noticeable part of every start-up.  The
    other commands are still registered (bare), so the list of choices, ``--help`` and
    the "invalid choice" error stay the same.
    """

    def __init__(self, real: Any, wanted: str | None) -> None:
        self.real = real
        self.wanted = wanted

    def add_parser(self, name: str, **kwargs: Any) -> Any:
        aliases = tuple(kwargs.get("aliases", ()))
        if self.wanted is None or self.wanted == name or self.wanted in aliases:
            return self.real.add_parser(name, **kwargs)
        bare = {k: v for k, v in kwargs.items() if k in ("help", "aliases")}
        self.real.add_parser(name, add_help=False, **bare)
        return _Skipped()


def command_word(words: Sequence[str]) -> str | None:
    """The command of a command line (the first word that is not an option), if any.

    The global options (``-v``, ``-q``, ``--version``, ``-h``) take no value, so the
    first other word is the command.
    """
    for word in words:
        if word == "--":
            return None
        if not word.startswith("-"):
            return word
    return None


def build_parser(wanted: str | None = None) -> argparse.ArgumentParser:
    """The parser; with ``wanted`` only that command's parser is complete (see
    ``_LazySubparsers``), with ``None`` all of them (``prodigy --help``)."""
    parser = _Parser(prog="prodigy", description="Reproducible development pipelines of "
                     "Claude Code and shell steps.")
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    _globals(parser, suppress=False)
    common = _Parser(add_help=False)
    _globals(common, suppress=True)
    sub: Any = _LazySubparsers(parser.add_subparsers(dest="command", parser_class=_Parser),
                               wanted)

    run = sub.add_parser("run", parents=[common], help="run a workflow")
    run.add_argument("workflow", nargs="?", help="the workflow file (YAML or JSON)")
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

    exe = sub.add_parser("exec", parents=[common],
                         help="run one command as a one-step workflow (merged automatically)")
    exe.add_argument("exec_command", metavar="COMMAND",
                     help="'/slash-command …' or 'claude: …' for Claude, else a shell command")
    exe.add_argument("--retry", type=int, default=1, metavar="N",
                     help="total attempts (default 1)")
    exe.add_argument("--timeout", metavar="DURATION", help="step timeout, e.g. 30s, 10m")
    exe.add_argument("--model", metavar="NAME", help="model for a Claude command")
    exe.add_argument("-p", "--path", help="project directory (default: current directory)")
    exe.add_argument("--json", action="store_true")

    batch = sub.add_parser("batch", parents=[common],
                           help="run one command over many tracked files as a MapReduce job")
    batch.add_argument("pattern", metavar="PATTERN",
                       help="files tracked at HEAD: '*.py' (file names in any directory) or "
                            "'src/**/*.ts' (paths)")
    batch.add_argument("--command", required=True, dest="batch_command", metavar="CMD",
                       help="the command for each file (${item} is its path; appended if "
                            "absent); '/…' or 'claude: …' for Claude, else a shell command")
    batch.add_argument("--parallel", type=int, default=5, metavar="N",
                       help="agents at once (default 5)")
    batch.add_argument("--retry", type=int, default=1, metavar="N",
                       help="total attempts per agent step (default 1)")
    batch.add_argument("--timeout", metavar="DURATION", help="agent timeout, e.g. 30s, 10m")
    batch.add_argument("-p", "--path", help="project directory (default: current directory)")
    batch.add_argument("--json", action="store_true")

    rjob = sub.add_parser("resume-job", parents=[common], help="resume a MapReduce job")
    rjob.add_argument("job_id")
    rjob.add_argument("--retry-failed", action="store_true",
                      help="also run failed items again")
    rjob.add_argument("--max-retries", type=int, default=2)
    rjob.add_argument("--force", action="store_true",
                      help="resume even if the workflow file changed")
    rjob.add_argument("-y", "--yes", action="store_true")
    rjob.add_argument("-p", "--path")
    rjob.add_argument("--json", action="store_true")

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

    _inspect_commands(sub, common)
    from prodigy_cli.analytics_args import add_analytics_parser, add_logs_parser

    add_analytics_parser(sub, common)
    add_logs_parser(sub, common)
    from prodigy_cli.cmd_init import add_parser as _init_parser

    _init_parser(sub, common)
    from prodigy_cli.worktree_args import add_parser as _worktree_parser

    _worktree_parser(sub, common, _Parser)
    from prodigy_cli.dlq_args import add_parser as _dlq_parser

    _dlq_parser(sub, common, _Parser)
    from prodigy_cli.cmd_goal_seek import add_parser as _goal_parser

    _goal_parser(sub, common)

    for name, text in NOT_YET.items():
        p = sub.add_parser(name, help=f"(not available yet) {text}", add_help=True)
        p.add_argument("rest", nargs=argparse.REMAINDER)
    return parser


def main(argv: Sequence[str] | None = None, *, out: TextIO | None = None,
         err: TextIO | None = None, environ: dict[str, str] | None = None,
         cwd: str | None = None, stdin: TextIO | None = None) -> int:
    """Run ``prodigy``; ``stdin`` answers confirmation questions (a terminal if
    ``stdin.isatty()``), default ``sys.stdin``."""
    out = out or sys.stdout
    err = err or sys.stderr
    env = dict(os.environ if environ is None else environ)
    words = list(sys.argv[1:] if argv is None else argv)
    if words == ["--version"]:
        # answered before the full parser (and the modules it imports) is built
        out.write(f"prodigy {VERSION}\n")
        return 0
    parser = build_parser(command_word(words))
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            args = parser.parse_args(words)
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
    args.stdin = sys.stdin if stdin is None else stdin
    try:
        if args.command == "worktree":
            from prodigy_cli import cmd_worktree

            return cmd_worktree.dispatch(args, out=out, err=err, environ=env,
                                         cwd=cwd or os.getcwd())
        if args.command == "goal-seek":
            from prodigy_cli import cmd_goal_seek

            return cmd_goal_seek.cmd_goal_seek(args, out=out, err=err, environ=env,
                                               cwd=cwd or os.getcwd())
        if args.command == "dlq":
            from prodigy_cli import cmd_dlq

            return cmd_dlq.dispatch(args, out=out, err=err, environ=env, cwd=cwd or os.getcwd())
        from prodigy_cli import commands

        return commands.dispatch(args, out=out, err=err, environ=env, cwd=cwd or os.getcwd())
    except BrokenPipeError:
        # the reader went away (`prodigy events ls | head`): stop quietly, as CLI tools do
        with contextlib.suppress(OSError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        return 0
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
    """The ``prodigy`` console script: run, then leave without tearing the interpreter
    down.  Everything Prodigy writes is closed (and synced where it must be) before
    ``main`` returns; what is left — freeing every module and object one by one — took
    about 0.1 s per run.  Exit handlers still run first (``logging``, a coverage tool),
    and the standard streams are flushed."""
    code = main()
    import atexit

    run_exit_handlers = getattr(atexit, "_run_exitfuncs", None)
    if run_exit_handlers is None:  # not CPython: the ordinary way out
        raise SystemExit(code)
    run_exit_handlers()
    import contextlib

    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe: nothing to say
            stream.flush()
    os._exit(code)
