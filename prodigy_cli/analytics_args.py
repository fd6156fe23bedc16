"""Arguments of ``prodigy analytics`` (spec 14 §4) and ``prodigy logs`` (spec 08 §2.15).

``prodigy analytics [SESSION]`` runs ``summary``: a first word that is not a
subcommand is taken as the session id. The common options are accepted before and
after the subcommand; on the subcommand parsers their default is ``SUPPRESS`` so a
value given before the subcommand is not overwritten by a default.
"""

from __future__ import annotations

import argparse
from typing import Any

from prodigy_cli.cli_support import duration_arg

__all__ = ["ACTIONS", "add_analytics_parser", "add_logs_parser"]

ACTIONS = ("summary", "cost", "tools", "sessions", "replay", "export")
_HELP = {
    "summary": "totals, top tools, most expensive and slowest steps, recommendations",
    "cost": "cost grouped by session, job, step, item, model or day",
    "tools": "uses, errors and error rate per tool; frequent Bash commands",
    "sessions": "the Claude calls, with their transcripts",
    "replay": "one call's transcript as a numbered timeline",
    "export": "the per-call records as JSON or CSV",
}


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid count {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"invalid count {text!r}: it must not be negative")
    return value


def _positive(text: str) -> int:
    value = _count(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"invalid number {text!r}: it starts at 1")
    return value


class _AnyChoice(dict[str, Any]):
    """Subparser choices that accept any word, so that ``analytics SESSION`` parses."""

    def __contains__(self, key: object) -> bool:
        return True


class _DefaultSummary(argparse._SubParsersAction):  # type: ignore[type-arg]
    """``analytics <word>`` where ``<word>`` is no subcommand means ``summary <word>``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.choices = _AnyChoice(self._name_parser_map)

    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = super().add_parser(name, **kwargs)
        self.choices = _AnyChoice(self._name_parser_map)
        return parser

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        if values and values[0] not in self._name_parser_map:
            values = ["summary", *values]
        super().__call__(parser, namespace, values, option_string)


def _common(p: argparse.ArgumentParser, *, suppress: bool) -> None:
    default: Any = argparse.SUPPRESS if suppress else None
    flag: Any = argparse.SUPPRESS if suppress else False
    p.add_argument("--session", default=default, metavar="ID", help="one Prodigy session")
    p.add_argument("--job", default=default, metavar="ID", help="one MapReduce job")
    p.add_argument("--since", type=duration_arg, default=default, metavar="DURATION",
                   help="only calls of the last DURATION (30s, 10m, 1h, 7d)")
    p.add_argument("--all-repos", action="store_true", default=flag,
                   help="data of every repository under the storage root")
    p.add_argument("-p", "--path", default=default,
                   help="project directory (default: current directory)")
    p.add_argument("--json", action="store_true", default=flag, help="one JSON document")


def add_analytics_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    analytics = sub.add_parser(
        "analytics", parents=[common], help="report Claude cost, tokens and tool usage",
        description="Claude cost, tokens and tool usage, rebuilt from the event logs. "
        "`prodigy analytics [SESSION]` shows the summary.")
    if not isinstance(analytics, argparse.ArgumentParser):
        return  # another command runs: only the name was registered
    _common(analytics, suppress=False)
    analytics.set_defaults(action=None, target=None, by=None, project=False, limit=None,
                           start=None, interactive=False, format=None, output=None, step=None)
    actions = analytics.add_subparsers(dest="action", metavar="{" + ",".join(ACTIONS) + "}",
                                       action=_DefaultSummary,
                                       parser_class=type(analytics))
    for name in ACTIONS:
        p = actions.add_parser(name, parents=[common], help=_HELP[name], description=_HELP[name])
        _common(p, suppress=True)
        if name == "replay":
            p.add_argument("target", nargs="?", metavar="REF",
                           help="a Claude session id, a transcript path or file name "
                           "(or use --session ID --step STEP_PATH)")
            p.add_argument("--step", metavar="STEP_PATH", help="with --session: the step")
            p.add_argument("--from", dest="start", type=_positive, metavar="N",
                           help="start at entry N")
            p.add_argument("--limit", type=_count, metavar="N", help="show at most N entries")
            p.add_argument("--interactive", action="store_true",
                           help="step through the entries (not available yet)")
            continue
        p.add_argument("target", nargs="?", metavar="SESSION", help="same as --session")
        if name == "cost":
            from prodigy_core.analytics_report import GROUPS  # only for this command

            p.add_argument("--by", choices=GROUPS, default="session")
            p.add_argument("--project", action="store_true",
                           help="with --job: forecast the cost and time of unfinished items")
        elif name == "sessions":
            p.add_argument("--limit", type=_count, default=50, metavar="N",
                           help="the newest N calls (default 50; 0 = all)")
        elif name == "export":
            p.add_argument("--format", choices=("json", "csv"), default="json")
            p.add_argument("--output", metavar="FILE", help="write to FILE instead of stdout")


def add_logs_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    logs = sub.add_parser(
        "logs", parents=[common], help="list and show Claude transcripts",
        description="Without an id: the 20 most recent Claude transcripts of the repository. "
        "With an id (transcript file name, Claude session id or Prodigy session id) or "
        "--latest: that transcript, summarised.")
    logs.add_argument("id", nargs="?", help="transcript file name, Claude or Prodigy session id")
    logs.add_argument("--latest", action="store_true", help="the most recent transcript")
    logs.add_argument("--tail", action="store_true",
                      help="follow the transcript while it grows (Ctrl-C to stop)")
    logs.add_argument("--summary", action="store_true", help="the call's analytics")
    logs.add_argument("--job-id", metavar="J", help="only transcripts of this job or session")
    logs.add_argument("--limit", type=_count, default=20, metavar="N",
                      help="how many transcripts to list (default 20; 0 = all)")
    logs.add_argument("--all-repos", action="store_true",
                      help="transcripts of every repository")
    logs.add_argument("-p", "--path", help="project directory (default: current directory)")
    logs.add_argument("--json", action="store_true", help="JSON output")
