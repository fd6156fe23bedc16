"""What this version can validate but not yet run, reported before a run starts.

The spec's principle 1: nothing in a workflow file is silently ignored.  Features that
validation accepts but the executor does not implement yet are listed here as E1016
problems, so `prodigy run` refuses the workflow up front with the field's path instead
of skipping the field.
"""

from __future__ import annotations

from collections.abc import Iterator

from prodigy_core.merge_conflicts import strategy
from prodigy_core.model import OnFailure, Step, Workflow
from prodigy_core.problems import Problem


def walk(steps: tuple[Step, ...]) -> Iterator[Step]:
    """Every step of ``steps`` and, depth first, every handler and validation step."""
    for step in steps:
        yield step
        if step.on_success is not None:
            yield from walk((step.on_success,))
        if isinstance(step.on_failure, OnFailure):
            yield from walk(step.on_failure.commands)
        yield from walk(tuple(handler for _, handler in step.on_exit_code))
        if step.goal_seek is not None:
            yield from walk((step.goal_seek.command,))
        if step.foreach is not None:
            yield from walk(step.foreach.do)
        if step.validate is not None:
            yield from walk(step.validate.commands)
            if step.validate.on_incomplete is not None:
                yield from walk(step.validate.on_incomplete.commands)


def _gap(path: str, what: str, file: str) -> Problem:
    return Problem(severity="error", code="E1016", file=file, path=path,
                   message=f"{what} is not supported by this version of Prodigy yet",
                   help="remove it, or run this workflow with a later version")


def runtime_gaps(workflow: Workflow, *, file: str = "") -> tuple[Problem, ...]:
    """E1016 problems for every feature of ``workflow`` this version cannot run yet."""
    found: list[Problem] = []
    found += _worktree_config_gaps(workflow, file)
    return tuple(found)


def _worktree_config_gaps(workflow: Workflow, file: str) -> list[Problem]:
    """``worktree_config`` (spec 06 §9) configures MapReduce agents only."""
    cfg = workflow.worktree_config
    if cfg is None or workflow.mode == "mapreduce":
        return []
    return [_gap("$.worktree_config", "`worktree_config` in a standard workflow (it "
                 "configures the worktrees of MapReduce agents)", file)]


def all_steps(workflow: Workflow) -> Iterator[Step]:
    """Every step of every scope (standard, setup, agent template, reduce, merge)."""
    yield from walk(workflow.steps)
    for phase in (workflow.setup, workflow.reduce, workflow.merge):
        if phase is not None:
            yield from walk(phase.steps)
    if workflow.map is not None:
        yield from walk(workflow.map.agent_template)


def uses_claude(workflow: Workflow) -> bool:
    """Whether the workflow can run Claude anywhere (spec 07 §10): a Claude step in any
    scope, or Claude conflict resolution (``merge_conflicts.strategy: claude``)."""
    return any(step.kind == "claude" for step in all_steps(workflow)) or \
        strategy(workflow) == "claude"


def claude_config(workflow: Workflow) -> dict[str, object]:
    """The workflow's ``claude_config`` block as a plain mapping."""
    for key, value in workflow.extra:
        if key == "claude_config" and isinstance(value, tuple):
            return {str(k): (list(v) if isinstance(v, tuple) else v) for k, v in value}
    return {}
