"""The production ``Git``: plain ``git`` subprocesses, argument vectors only, never a shell.

Every command runs non-interactively (``GIT_TERMINAL_PROMPT=0``, ``GIT_EDITOR=true``,
``GIT_MERGE_AUTOEDIT=no``; spec 06 §1.2) in the repository's top-level directory, so
every path it reads or writes is repository-relative.  Path lists go to git on stdin,
NUL-separated and literal (``--pathspec-from-file``, ``GIT_LITERAL_PATHSPECS``), so no
file name is ever parsed as an option, a glob or a shell word.  Commits Prodigy makes use
the repository's identity; a missing ``user.name``/``user.email`` is supplied with
``-c user.name=Prodigy -c user.email=prodigy@localhost`` for that command only.
"""

from __future__ import annotations

import os
import re
import subprocess

import attrs

from prodigy_core.effects import EFFECT_TAGS, CommitChanges, ListCommits, SquashCommits
from prodigy_core.events import ChangesCommitted, CommitsListed, CommitsSquashed, GitFailed
from prodigy_core.globs import select_paths
from prodigy_core.reprs import shows_fields
from prodigy_effects import spawn

_GIT_ENV = {"GIT_TERMINAL_PROMPT": "0", "GIT_EDITOR": "true", "GIT_MERGE_AUTOEDIT": "no"}
_FALLBACK_IDENTITY = {"user.name": "Prodigy", "user.email": "prodigy@localhost"}
_AUTHOR = re.compile(r"^\s*(.*?)\s*<([^<>]*)>\s*$")


class _GitError(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


async def _git(cwd: str, *args: str, stdin: bytes | None = None,
               env: dict[str, str] | None = None, check: bool = True,
               ) -> subprocess.CompletedProcess[bytes]:
    full_env = {**os.environ, **_GIT_ENV, **(env or {})}
    try:
        result = await spawn.run_process(
            ["git", *args], cwd=cwd, stdin=stdin if stdin is not None else b"", env=full_env)
    except OSError as exc:
        raise _GitError(f"cannot run git: {exc}") from exc
    if check and result.returncode != 0:
        err = result.stderr.decode("utf-8", "replace").strip()
        out = result.stdout.decode("utf-8", "replace").strip()
        raise _GitError(f"git {args[0]} failed ({result.returncode}): {err or out}")
    return result


def _nul_split(data: bytes) -> list[str]:
    return [part.decode("utf-8", "surrogateescape") for part in data.split(b"\0") if part]


def _nul_join(paths: tuple[str, ...]) -> bytes:
    return b"".join(p.encode("utf-8", "surrogateescape") + b"\0" for p in paths)


async def _toplevel(cwd: str) -> str:
    if not os.path.isdir(cwd):
        raise _GitError(f"working directory does not exist: {cwd}")
    result = await _git(cwd, "rev-parse", "--show-toplevel", check=False)
    top = result.stdout.decode("utf-8", "surrogateescape").strip()
    if result.returncode != 0 or not top:
        raise _GitError(f"not a git repository: {cwd}")
    return top


async def _head(root: str) -> str | None:
    result = await _git(root, "rev-parse", "--verify", "-q", "HEAD", check=False)
    if result.returncode != 0:
        return None
    return result.stdout.decode().strip() or None


async def _identity(root: str) -> list[str]:
    """``-c`` options for the parts of the committer identity the repository lacks."""
    options: list[str] = []
    for key, value in _FALLBACK_IDENTITY.items():
        found = await _git(root, "config", "--get", key, check=False)
        if found.returncode != 0 or not found.stdout.strip():
            options += ["-c", f"{key}={value}"]
    return options


async def _changed_paths(root: str) -> list[str]:
    """Modified/deleted tracked paths and untracked, not ignored files (repo-relative)."""
    result = await _git(root, "status", "--porcelain=v1", "-z", "--untracked-files=all",
                        "--no-renames")
    return [entry[3:] for entry in _nul_split(result.stdout) if len(entry) > 3]


def _failed(effect: CommitChanges | ListCommits | SquashCommits, error: _GitError) -> GitFailed:
    return GitFailed(command_id=effect.command_id, operation=EFFECT_TAGS[type(effect)],
                     message=error.message)


@shows_fields
@attrs.define(repr=False)
class RealGit:
    """Answers the git effects with the ``git`` on ``PATH``."""

    async def head(self, cwd: str) -> str | None:
        try:
            result = await spawn.run_process(["git", "rev-parse", "HEAD"], cwd=cwd)
        except OSError:
            return None
        if result.returncode != 0:
            return None
        return result.stdout.decode().strip() or None

    async def commit_changes(self, effect: CommitChanges) -> ChangesCommitted | GitFailed:
        try:
            root = await _toplevel(effect.cwd)
            paths = select_paths(await _changed_paths(root), effect.include, effect.exclude)
            if not paths:
                return ChangesCommitted(command_id=effect.command_id, sha=None)
            literal = {"GIT_LITERAL_PATHSPECS": "1"}
            await _git(root, "add", "-A", "--pathspec-from-file=-", "--pathspec-file-nul",
                       stdin=_nul_join(paths), env=literal)
            args = [*await _identity(root), "commit", "-q", "--no-edit", "-m", effect.message]
            if effect.author:
                args.append(f"--author={effect.author}")
            if effect.sign:
                args.append("-S")
            # with paths, commit takes exactly these (``--only``), whatever else is staged
            args += ["--pathspec-from-file=-", "--pathspec-file-nul"]
            await _git(root, *args, stdin=_nul_join(paths), env=literal)
            sha = await _head(root)
        except _GitError as error:
            return _failed(effect, error)
        return ChangesCommitted(command_id=effect.command_id, sha=sha, files=paths)

    async def list_commits(self, effect: ListCommits) -> CommitsListed | GitFailed:
        try:
            root = await _toplevel(effect.cwd)
            head = await _head(root)
            base = effect.since or head
            commits: list[tuple[str, str]] = []
            added: set[str] = set()
            modified: set[str] = set()
            deleted: set[str] = set()
            insertions = deletions = 0
            if effect.since is not None and head is not None:
                log = await _git(root, "log", "-z", "--reverse", "--format=%H%n%B",
                                 f"{effect.since}..{head}", "--")
                for entry in _nul_split(log.stdout):
                    sha, _, message = entry.partition("\n")
                    commits.append((sha, message.rstrip("\n")))
            if base is not None:
                # one call: raw entries (":<modes> <shas> <status>", path) for the file
                # lists, then numstat entries ("<plus>\t<minus>\t<path>") for the line
                # totals over tracked files (a binary file shows "-" and counts 0)
                diff = await _git(root, "diff", "--raw", "--numstat", "-z", "--no-renames",
                                  base, "--")
                fields = iter(_nul_split(diff.stdout))
                for field in fields:
                    if field.startswith(":"):
                        kind = field.rsplit(" ", 1)[-1][:1]
                        target = added if kind == "A" else deleted if kind == "D" else modified
                        target.add(next(fields, ""))
                        continue
                    plus, minus, _path = field.split("\t", 2)
                    insertions += int(plus) if plus.isdigit() else 0
                    deletions += int(minus) if minus.isdigit() else 0
            untracked = await _git(root, "ls-files", "--others", "--exclude-standard", "-z")
            added.update(_nul_split(untracked.stdout))
        except _GitError as error:
            return _failed(effect, error)
        return CommitsListed(
            command_id=effect.command_id, head=head, commits=tuple(commits),
            files_added=tuple(sorted(added)), files_modified=tuple(sorted(modified - added)),
            files_deleted=tuple(sorted(deleted - added)), insertions=insertions,
            deletions=deletions)

    async def squash_commits(self, effect: SquashCommits) -> CommitsSquashed | GitFailed:
        try:
            root = await _toplevel(effect.cwd)
            head = await _head(root)
            if head is None:
                raise _GitError("the repository has no HEAD")
            env: dict[str, str] = {}
            if effect.author:
                match = _AUTHOR.match(effect.author)
                if match is None:
                    raise _GitError(f"author is not 'Name <email>': {effect.author}")
                env = {"GIT_AUTHOR_NAME": match.group(1), "GIT_AUTHOR_EMAIL": match.group(2)}
            args = [*await _identity(root), "commit-tree", f"{head}^{{tree}}",
                    "-p", effect.since, "-m", effect.message]
            if effect.sign:
                args.append("-S")
            made = await _git(root, *args, env=env)
            sha = made.stdout.decode().strip()
            # move the branch (HEAD follows), only if nobody moved it meanwhile
            await _git(root, "update-ref", "-m", "prodigy: squash", "HEAD", sha, head)
        except _GitError as error:
            return _failed(effect, error)
        return CommitsSquashed(command_id=effect.command_id, sha=sha)
