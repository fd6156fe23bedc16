"""Arguments of ``prodigy worktree ls|merge|clean|clean-orphaned`` (spec 08 §2.7).

Kept apart from :mod:`prodigy_cli.cmd_worktree` so that building the parser imports no
git or trio code; the command module is imported only when a worktree command runs.
"""

from __future__ import annotations

import argparse
from typing import Any

from prodigy_cli.cli_support import duration_arg

__all__ = ["add_parser"]


def add_parser(sub: Any, common: argparse.ArgumentParser, parser_class: type) -> None:
    """The ``worktree`` command and its subcommands."""
    worktree = sub.add_parser("worktree", parents=[common], help="list, merge and clean "
                              "session worktrees")
    wsub = worktree.add_subparsers(dest="action", parser_class=parser_class)
    for name in ("ls", "list"):
        p = wsub.add_parser(name, parents=[common], help="list the repository's worktrees")
        p.add_argument("--json", action="store_true", help="a JSON list of metadata objects")
        p.add_argument("--detailed", action="store_true",
                       help="also path, workflow, last commit and uncommitted changes")
        p.add_argument("--mapreduce", action="store_true",
                       help="also agent and pool worktrees of MapReduce jobs")
        p.add_argument("--all-repos", action="store_true",
                       help="worktrees of every repository under the storage root")
        p.add_argument("-p", "--path", help="project directory (default: current directory)")
    p = wsub.add_parser("merge", parents=[common], help="merge kept session worktrees")
    p.add_argument("name", nargs="?", help="the worktree to merge")
    p.add_argument("--all", action="store_true", help="merge every kept session worktree")
    p.add_argument("-p", "--path", help="project directory (default: current directory)")
    p.add_argument("--json", action="store_true")
    p = wsub.add_parser(
        "clean", parents=[common], help="remove worktrees and their branches",
        description="Remove the selected worktrees, their metadata, and their branches when "
        "merged into their target (or with --force). Worktrees held by a running session "
        "are always skipped; worktrees with uncommitted changes or unmerged commits are "
        "skipped unless --force.")
    p.add_argument("names", nargs="*", metavar="NAME", help="worktrees to remove")
    p.add_argument("--all", action="store_true", help="every worktree of the repository")
    p.add_argument("--merged-only", action="store_true",
                   help="only worktrees whose branch is merged into its target")
    p.add_argument("--older-than", type=duration_arg, metavar="DURATION",
                   help="only worktrees created longer ago than this (30m, 12h, 7d)")
    p.add_argument("--mapreduce", action="store_true",
                   help="agent and pool worktrees of MapReduce jobs that are not running")
    p.add_argument("--job-id", metavar="ID", help="with --mapreduce: only this job's")
    p.add_argument("--dry-run", action="store_true", help="show what would be removed")
    p.add_argument("-f", "--force", action="store_true",
                   help="also remove worktrees with uncommitted changes or unmerged commits, "
                        "and their branches; do not ask")
    p.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")
    p.add_argument("--json", action="store_true", help="print a JSON report")
    p.add_argument("-p", "--path", help="project directory (default: current directory)")
    p = wsub.add_parser(
        "clean-orphaned", parents=[common],
        help="remove left-over worktree directories and metadata",
        description="Remove what is left over under <storage>/worktrees/<repo>/: directories "
        "that git no longer knows as worktrees of this repository (a directory that "
        "belongs to another repository is kept), metadata files whose worktree directory "
        "is gone; then run `git worktree prune`. Branches are never deleted.")
    p.add_argument("--dry-run", action="store_true", help="show what would be removed")
    p.add_argument("-f", "--force", action="store_true", help="do not ask for confirmation")
    p.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")
    p.add_argument("--json", action="store_true", help="print a JSON report")
    p.add_argument("-p", "--path", help="project directory (default: current directory)")
