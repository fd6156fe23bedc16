"""Arguments of ``prodigy dlq list|show|retry|purge|stats|analyze|export`` (spec 08 §2.10).

Kept apart from :mod:`prodigy_cli.cmd_dlq` so that building the parser imports no
storage or git code; the command module is imported only when a ``dlq`` command runs.
"""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["add_parser"]


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
        raise argparse.ArgumentTypeError(f"invalid count {text!r}: it must be at least 1")
    return value


def _scope(p: argparse.ArgumentParser) -> None:
    p.add_argument("-p", "--path", help="project directory (default: current directory)")
    p.add_argument("--all-repos", action="store_true",
                   help="DLQ items of every repository under the storage root")


def add_parser(sub: Any, common: argparse.ArgumentParser, parser_class: type) -> None:
    """The ``dlq`` command and its subcommands."""
    dlq = sub.add_parser("dlq", parents=[common],
                         help="inspect, retry and purge failed MapReduce items")
    dsub = dlq.add_subparsers(dest="action", parser_class=parser_class)

    p = dsub.add_parser("list", parents=[common], help="list DLQ items")
    p.add_argument("--job-id", metavar="J", help="only this job's items")
    p.add_argument("--eligible", action="store_true", help="only items eligible for retry")
    p.add_argument("--limit", type=_count, default=50, metavar="N",
                   help="show at most N items, newest first (default 50; 0 = all)")
    p.add_argument("--json", action="store_true")
    _scope(p)

    for name in ("show", "inspect"):
        p = dsub.add_parser(name, parents=[common], help="show one DLQ item in full")
        p.add_argument("item_id", metavar="ITEM_ID")
        p.add_argument("--job-id", metavar="J",
                       help="the job (needed when the item id is in several jobs)")
        p.add_argument("--json", action="store_true", help="the entry document itself")
        _scope(p)

    p = dsub.add_parser("retry", parents=[common],
                        help="run a job's DLQ items again")
    p.add_argument("job_id", metavar="JOB_ID")
    p.add_argument("--item", action="append", default=[], metavar="ID")
    p.add_argument("--filter", metavar="EXPR")
    p.add_argument("--error-type", metavar="T")
    p.add_argument("--signature", metavar="S")
    p.add_argument("--max-retries", type=_count, default=3, metavar="N")
    p.add_argument("--parallel", "--max-parallel", type=_positive, metavar="N")
    p.add_argument("--force", action="store_true")
    p.add_argument("--dry-run", action="store_true")
    p.add_argument("-y", "--yes", action="store_true")
    p.add_argument("-p", "--path", help="project directory (default: current directory)")
    p.add_argument("--json", action="store_true")

    for name in ("purge", "clear"):
        text = ("delete DLQ items and the branches they kept" if name == "purge"
                else "same as purge")
        p = dsub.add_parser(
            name, parents=[common], help=text,
            description="Delete the selected DLQ items (all of the repository's by default) "
            "and the agent branches they kept; logs dlq_item_removed. Asks for confirmation.")
        if name == "clear":
            p.add_argument("job", nargs="?", metavar="JOB_ID", help="same as --job-id")
        p.add_argument("--job-id", metavar="J", help="only this job's items")
        p.add_argument("--item", action="append", default=[], metavar="ID",
                       help="only this item (repeatable)")
        p.add_argument("--older-than-days", type=_count, metavar="N",
                       help="only items whose last failure is at least N days old")
        p.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")
        _scope(p)

    p = dsub.add_parser("stats", parents=[common], help="DLQ totals and counts")
    p.add_argument("--job-id", metavar="J")
    p.add_argument("--json", action="store_true")
    _scope(p)

    p = dsub.add_parser("analyze", parents=[common], help="group DLQ items by error signature")
    p.add_argument("--job-id", metavar="J")
    p.add_argument("--export", metavar="FILE", help="also write the analysis as JSON to FILE")
    p.add_argument("--json", action="store_true")
    _scope(p)

    p = dsub.add_parser("export", parents=[common], help="write DLQ items to a file")
    p.add_argument("output", metavar="OUTPUT")
    p.add_argument("--job-id", metavar="J")
    p.add_argument("--format", choices=("json", "csv"), default="json")
    _scope(p)
