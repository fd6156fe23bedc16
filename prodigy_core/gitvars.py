"""Git context variables ``step.*`` and ``workflow.*`` (spec 03 §7): the static part.

Theory of operation
-------------------
A listing of the repository costs git processes, so the step machine does git work for
these variables only when a scope references them.  ``annotate`` scans every text of a
workflow's steps that is interpolated at run time, once, when the workflow is parsed,
and marks the steps that need something with a ``GitUse`` (``prodigy_core.model``):
which groups (``step``, ``workflow``) the step's own texts read and, on the top-level
steps of a scope, what the scope as a whole needs recorded.  A step whose
``git`` is None costs nothing, and a workflow without references is returned unchanged.
``workflow.name``, ``workflow.id`` and the other built-ins of spec 03 §5.1 are not git
variables.

``step_git`` (the step machine) uses the marks and the answers of ``ListCommits``;
``variables`` turns such an answer into the eight variables of a group.  A dry run does
no git work: the references stay unresolved and show as written in the plan.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from typing import Final

import attrs
from pyrsistent import PMap, pmap

from prodigy_core.events import CommitsListed
from prodigy_core.interpolate import Var
from prodigy_core.model import GitUse, Step, StepList, Workflow
from prodigy_core.support import walk

FIELDS: Final = ("files_added", "files_modified", "files_deleted", "files_changed", "commits",
                 "commit_count", "insertions", "deletions")
GROUPS: Final = ("step", "workflow")

# a reference to ``step.<f>`` / ``workflow.<f>`` in any form (``${step.files_added:*.md}``,
# ``${workflow.commits[0]}``, a ``when`` expression); never ``workflow.name`` and the like
_REFERENCE: Final = re.compile(
    r"(?<![\w.])(step|workflow)\.(" + "|".join(FIELDS) + r")(?![\w])")


def groups_in(texts: Iterable[str]) -> frozenset[str]:
    """The groups (``step``, ``workflow``) that ``texts`` reference."""
    found: set[str] = set()
    for text in texts:
        if "step." in text or "workflow." in text:
            found.update(m.group(1) for m in _REFERENCE.finditer(text))
    return frozenset(found)


def own_texts(step: Step) -> Iterator[str]:
    """Every text of ``step`` itself (not of its handlers) interpolated at run time."""
    yield step.command
    if isinstance(step.when, str):
        yield step.when
    for _name, value in step.env:
        yield value
    for optional in (step.working_dir, step.output_file, step.model):
        if optional is not None:
            yield optional
    if step.write_file is not None:
        yield step.write_file.path
        yield step.write_file.content
    if step.commit_config is not None and step.commit_config.message_template is not None:
        yield step.commit_config.message_template
    if step.step_validate is not None:
        yield from step.step_validate.commands
    if step.validate is not None and step.validate.result_file is not None:
        yield step.validate.result_file


def _use(step: Step) -> GitUse | None:
    found = groups_in(own_texts(step))
    if not found:
        return None
    return GitUse(step="step" in found, workflow="workflow" in found)


def mark(step: Step) -> Step:
    """``step`` and its handlers, each with the ``GitUse`` of its own texts."""
    on_success = mark(step.on_success) if step.on_success is not None else None
    on_failure = step.on_failure
    if on_failure is not None and on_failure.commands:
        commands = _mark_all(on_failure.commands)
        if commands is not on_failure.commands:
            on_failure = attrs.evolve(on_failure, commands=commands)
    on_exit_code = tuple((code, mark(handler)) for code, handler in step.on_exit_code)
    if all(new is old for (_, new), (_, old) in zip(on_exit_code, step.on_exit_code,
                                                    strict=True)):
        on_exit_code = step.on_exit_code
    validate = step.validate
    if validate is not None:
        incomplete = validate.on_incomplete
        if incomplete is not None:
            handlers = _mark_all(incomplete.commands)
            if handlers is not incomplete.commands:
                incomplete = attrs.evolve(incomplete, commands=handlers)
        checks = _mark_all(validate.commands)
        if checks is not validate.commands or incomplete is not validate.on_incomplete:
            validate = attrs.evolve(validate, commands=checks, on_incomplete=incomplete)
    use = _use(step)
    if (use is None and on_success is step.on_success and on_failure is step.on_failure
            and on_exit_code is step.on_exit_code and validate is step.validate):
        return step
    return attrs.evolve(step, on_success=on_success, on_failure=on_failure,
                        on_exit_code=on_exit_code, validate=validate, git=use)


def _mark_all(steps: tuple[Step, ...]) -> tuple[Step, ...]:
    marked = tuple(mark(s) for s in steps)
    return steps if all(new is old for new, old in zip(marked, steps, strict=True)) else marked


def annotate_steps(steps: tuple[Step, ...], extra: Iterable[str] = ()) -> tuple[Step, ...]:
    """Mark the steps of one scope; ``extra`` are more handler texts run in the scope.

    Returns ``steps`` itself when no step, handler or retry fallback command of the scope
    (and no ``extra`` text) references a git context variable.
    """
    marked = _mark_all(steps)
    top_step = any(s.git is not None and s.git.step for s in marked)
    anywhere: set[str] = set(groups_in(extra))
    for step in walk(marked):
        if step.git is not None:
            anywhere.update(g for g in GROUPS if getattr(step.git, g))
        if step.retry is not None and step.retry.fallback_command is not None:
            anywhere.update(groups_in((step.retry.fallback_command,)))
    if not anywhere:
        return steps
    return tuple(
        attrs.evolve(step, git=attrs.evolve(
            step.git or GitUse(), record_start="step" in anywhere, record_end=top_step,
            scope_workflow="workflow" in anywhere))
        for step in marked)


def _phase(phase: StepList | None, extra: tuple[str, ...]) -> StepList | None:
    if phase is None:
        return None
    steps = annotate_steps(phase.steps, extra)
    return phase if steps is phase.steps else attrs.evolve(phase, steps=steps)


def annotate(workflow: Workflow) -> Workflow:
    """``workflow`` with every scope's steps marked (each phase is its own scope)."""
    retry = workflow.retry_defaults
    extra = (retry.fallback_command,) if retry is not None and retry.fallback_command else ()
    steps = annotate_steps(workflow.steps, extra)
    setup = _phase(workflow.setup, extra)
    reduce = _phase(workflow.reduce, extra)
    merge = _phase(workflow.merge, extra)
    map_spec = workflow.map
    if map_spec is not None:
        agent = annotate_steps(map_spec.agent_template, extra)
        if agent is not map_spec.agent_template:
            map_spec = attrs.evolve(map_spec, agent_template=agent)
    if (steps is workflow.steps and setup is workflow.setup and reduce is workflow.reduce
            and merge is workflow.merge and map_spec is workflow.map):
        return workflow
    return attrs.evolve(workflow, steps=steps, setup=setup, reduce=reduce, merge=merge,
                        map=map_spec)


def variables(group: str, listed: CommitsListed) -> dict[str, Var]:
    """The eight variables of ``group`` (``step``/``workflow``) from one listing (§7.3).

    Paths are data (escaped in shell text) and render space-joined (§7.4); counts are
    integers.
    """
    added = sorted(set(listed.files_added))
    modified = sorted(set(listed.files_modified))
    deleted = sorted(set(listed.files_deleted))
    changed = sorted({*added, *modified, *deleted})
    commits = [sha for sha, _message in listed.commits]
    lists: dict[str, list[str]] = {"files_added": added, "files_modified": modified,
                                   "files_deleted": deleted, "files_changed": changed,
                                   "commits": commits}
    out: dict[str, Var] = {
        f"{group}.{name}": Var(value=list(values), trusted=False, git_list=True)
        for name, values in lists.items()
    }
    out[f"{group}.commit_count"] = Var(value=len(commits))
    out[f"{group}.insertions"] = Var(value=listed.insertions)
    out[f"{group}.deletions"] = Var(value=listed.deletions)
    return out


EMPTY_STEP: Final[PMap[str, Var]] = pmap(variables("step", CommitsListed(command_id=0,
                                                                         head=None)))
"""``step.*`` before any step of the scope has run: empty lists and zeros."""
