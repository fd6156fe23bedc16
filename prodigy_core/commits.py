"""Commits a step makes or is checked for: ``auto_commit``, ``commit_config``, ``outputs``.

Theory of operation
-------------------
After an execution the step machine (``prodigy_core.stepper``) runs a short pipeline
of checks, each one effect and one answering event (spec 02 §6, §8 stage 3, §12, §13):

``commit``      ``auto_commit`` on an execution that exited 0: ``CommitChanges`` →
                ``ChangesCommitted`` (a commit, or nothing to commit) / ``GitFailed``
``head_after``  ``commit_required``: ``ReadGitHead``, compared with the ``HEAD``
                recorded before the execution (E3003)
``changes``     ``message_pattern``, ``squash`` or ``outputs``: ``ListCommits`` →
                ``CommitsListed`` — every new commit's message must match (E3014), and
                each output picks the first added/modified path matching its glob (E3015)
``validate``    ``step_validate`` (in the step machine)
``squash``      more than one new commit: ``SquashCommits`` → ``CommitsSquashed``

This module holds the pure decisions: whether a stage applies, the effect it emits,
and what its answer does to the execution's ``ExecResult``.  In a dry run the commands
are only planned, so no stage applies; a ``planned`` answer is never checked either.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import attrs

from prodigy_core.effects import CommitChanges, ListCommits, Print, SquashCommits
from prodigy_core.events import ChangesCommitted, CommitsListed, CommitsSquashed, GitFailed
from prodigy_core.globs import path_matches
from prodigy_core.interpolate import Var, interpolate
from prodigy_core.model import CommitConfig, Step
from prodigy_core.reprs import value_class
from prodigy_core.results import ExecResult

NO_CONFIG = CommitConfig()


def config(step: Step) -> CommitConfig:
    return step.commit_config if step.commit_config is not None else NO_CONFIG


NO_COMMIT_VALIDATION = "PRODIGY_NO_COMMIT_VALIDATION"
NO_COMMIT_VALIDATION_WARNING = (
    f"warning: {NO_COMMIT_VALIDATION}=true: commit_required checks are disabled for this run")


def commit_checks_disabled(environ: Mapping[str, str]) -> bool:
    """``PRODIGY_NO_COMMIT_VALIDATION=true`` in Prodigy's environment (spec 02 §12.1)."""
    return environ.get(NO_COMMIT_VALIDATION, "").strip().lower() == "true"


def needs_head(step: Step) -> bool:
    """Does the step need ``HEAD`` recorded before each execution (spec 02 §8 stage 2)?"""
    return step.commit_required or wants_changes(step)


def wants_changes(step: Step) -> bool:
    """Does a passing execution need the list of new commits and changed files?"""
    cfg = config(step)
    return bool(step.outputs) or cfg.message_pattern is not None or cfg.squash


def wants_commit(step: Step, result: ExecResult) -> bool:
    """``auto_commit`` applies after an execution that exited 0 (spec 02 §12.2)."""
    return step.auto_commit and not result.planned and result.exit_code == 0 \
        and result.error_class != "timeout"


def wants_squash(step: Step, result: ExecResult, since: str | None,
                 commits: tuple[tuple[str, str], ...]) -> bool:
    return (config(step).squash and result.passed and not result.planned
            and since is not None and len(commits) > 1)


def _message(step: Step, fallback: str, visible: Mapping[str, Var],
             environ: Mapping[str, str]) -> str:
    template = config(step).message_template
    if template is None:
        return fallback
    # a commit message is an argument, never shell text: no escaping
    return interpolate(template, visible, environ=environ).text


def commit_effect(step: Step, *, command_id: int, cwd: str, display: str, path: str,
                  visible: Mapping[str, Var], environ: Mapping[str, str]) -> CommitChanges:
    cfg = config(step)
    return CommitChanges(
        command_id=command_id, cwd=cwd,
        message=_message(step, f"prodigy: {display}", visible, environ),
        author=cfg.author, sign=cfg.sign, include=cfg.include_files,
        exclude=cfg.exclude_files, display=display, step_path=path,
    )


def _git_failure(result: ExecResult, what: str, event: GitFailed, code: str,
                 error_class: str) -> ExecResult:
    message = f"{what} failed: {event.message.strip() or event.operation}"
    return attrs.evolve(result, passed=False, error_class=error_class, error_code=code,
                        message=message)


def after_commit(result: ExecResult, event: ChangesCommitted | GitFailed,
                 display: str) -> tuple[ExecResult, tuple[Print, ...]]:
    """The execution after its ``auto_commit``; a failed commit fails the execution."""
    if isinstance(event, GitFailed):
        return _git_failure(result, "auto_commit", event, "E3001", "command_failed"), ()
    if event.planned or event.sha is None:
        return result, ()
    count = len(event.files)
    noun = "file" if count == 1 else "files"
    return result, (Print(text=f"  auto_commit: committed {count} {noun} as {event.sha[:12]}",
                          level="verbose"),)


def list_effect(*, command_id: int, cwd: str, since: str | None) -> ListCommits:
    return ListCommits(command_id=command_id, cwd=cwd, since=since)


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class Checked:
    """What ``CommitsListed`` did to an execution."""

    result: ExecResult
    commits: tuple[tuple[str, str], ...] = ()
    outputs: tuple[tuple[str, str], ...] = ()
    prints: tuple[Print, ...] = ()


def check_changes(step: Step, display: str, result: ExecResult,
                  event: CommitsListed | GitFailed) -> Checked:
    """Criteria E3014 (``message_pattern``) then E3015 (``outputs``), spec 02 §6."""
    cfg = config(step)
    if isinstance(event, GitFailed):
        if cfg.message_pattern is not None:
            return Checked(result=_git_failure(result, "listing the step's commits", event,
                                               "E3014", "commit_required"))
        if step.outputs:
            return Checked(result=_git_failure(result, "listing the step's changes", event,
                                               "E3015", "output_missing"))
        warning = f"warning: cannot squash the commits of '{display}': {event.message.strip()}"
        return Checked(result=result, prints=(Print(text=warning, stream="err"),))
    if event.planned:
        return Checked(result=result)
    if cfg.message_pattern is not None:
        pattern = re.compile(cfg.message_pattern)
        for sha, message in event.commits:
            if pattern.search(message) is None:
                subject = message.split("\n", 1)[0]
                text = (f"commit {sha[:12]} of step '{display}' has message '{subject}', "
                        f"which does not match commit_config.message_pattern "
                        f"'{cfg.message_pattern}'")
                return Checked(result=attrs.evolve(
                    result, passed=False, error_class="commit_required", error_code="E3014",
                    message=text), commits=event.commits)
    found: list[tuple[str, str]] = []
    candidates = sorted(set(event.files_added) | set(event.files_modified))
    for name, glob in step.outputs:
        match = next((p for p in candidates if path_matches(glob, p)), None)
        if match is None:
            text = f"step did not produce output '{name}' matching {glob}"
            return Checked(result=attrs.evolve(
                result, passed=False, error_class="output_missing", error_code="E3015",
                message=text), commits=event.commits)
        found.append((name, match))
    return Checked(result=result, commits=event.commits, outputs=tuple(found))


def output_variables(step: Step, found: tuple[tuple[str, str], ...]) -> dict[str, Var]:
    """``${<id>.<output>}`` for the outputs a passing execution produced (stage 7)."""
    if step.id is None:
        return {}
    return {f"{step.id}.{name}": Var(value=path, trusted=False) for name, path in found}


def squash_effect(step: Step, *, command_id: int, cwd: str, since: str,
                  commits: tuple[tuple[str, str], ...], visible: Mapping[str, Var],
                  environ: Mapping[str, str]) -> SquashCommits:
    cfg = config(step)
    first = commits[0][1] if commits else ""
    return SquashCommits(command_id=command_id, cwd=cwd, since=since,
                         message=_message(step, first, visible, environ),
                         author=cfg.author, sign=cfg.sign)


def after_squash(result: ExecResult, event: CommitsSquashed | GitFailed,
                 count: int) -> tuple[ExecResult, tuple[Print, ...]]:
    if isinstance(event, GitFailed):
        return _git_failure(result, "commit_config.squash", event, "E3001",
                            "command_failed"), ()
    if event.planned or event.sha is None:
        return result, ()
    return result, (Print(text=f"  squashed {count} commits into {event.sha[:12]}",
                          level="verbose"),)
