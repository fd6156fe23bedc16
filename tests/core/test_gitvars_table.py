"""Layer 1: git context variables ``step.*`` / ``workflow.*`` (spec 03 §7), pure.

The static scan (``prodigy_core.gitvars``) is tested on texts and parsed workflows; the
step machine on hand-fed events (``Driver``), git effects answered by a scripted
repository (``Listing``).  The assertions are on the spawned effects in order, the
``since`` of each listing and the commands the steps ran.
"""

from __future__ import annotations

from typing import Any

import attrs
import pytest
from pyrsistent import pmap

from prodigy_core import gitvars, run_machine, stepper
from prodigy_core.context import WorktreeSpec
from prodigy_core.effects import Effect, ListCommits, Print, ReadGitHead, RunCommand
from prodigy_core.events import CommandFinished, CommitsListed, Event, GitFailed
from prodigy_core.interpolate import Var, interpolate
from prodigy_core.model import GitUse, OnFailure, Step, Workflow
from tests.core._machine_driver import Driver, R, make_ctx, shell
from tests.core._parse_helpers import load

SHA_A, SHA_B = "a" * 40, "b" * 40


# --- the static scan ------------------------------------------------------------------


@pytest.mark.parametrize(("text", "groups"), [
    ("echo ${step.files_added:*.md}", {"step"}),
    ("echo ${workflow.files_modified:src/*:csv}", {"workflow"}),
    ("echo ${workflow.commit_count} ${step.commits[0]}", {"step", "workflow"}),
    ("${step.insertions} > 0 && ${step.deletions} == 0", {"step"}),
    ("echo ${workflow.name} ${workflow.id} ${workflow.path} ${workflow.iteration}", set()),
    ("echo ${workflow.profile} ${step_files_added} ${my.step.commits}", set()),
    ("echo ${step.files_addedx} ${workflow.commitsy}", set()),
    ("echo plain", set()),
])
def test_groups_in(text: str, groups: set[str]) -> None:
    assert gitvars.groups_in([text]) == groups


def test_a_workflow_without_references_is_returned_unchanged() -> None:
    steps = (shell("echo ${workflow.name}", on_failure=OnFailure(commands=(shell("x"),))),
             shell("make"))
    workflow = Workflow(name="t", steps=steps)
    assert gitvars.annotate(workflow) is workflow
    assert gitvars.annotate_steps(steps) is steps


def test_marks_of_a_scope() -> None:
    handler = shell("echo ${step.files_changed}")
    steps = gitvars.annotate_steps((
        shell("make", on_failure=OnFailure(commands=(handler,))),
        shell("echo ${workflow.commit_count}"),
    ))
    first, second = steps
    scope = {"record_start": True, "record_end": False, "scope_workflow": True}
    assert first.git == GitUse(**scope)
    assert second.git == GitUse(workflow=True, **scope)
    assert first.on_failure is not None
    assert first.on_failure.commands[0].git == GitUse(step=True)


def test_parsing_marks_the_steps() -> None:
    outcome = load("""
- shell: "touch a.md"
- shell: "echo ${step.files_added:*.md}"
  when: "${workflow.commit_count} >= 0"
""")
    assert outcome.workflow is not None
    first, second = outcome.workflow.steps
    assert first.git == GitUse(record_start=True, record_end=True, scope_workflow=True)
    assert second.git == GitUse(step=True, workflow=True, record_start=True, record_end=True,
                                scope_workflow=True)
    plain = load("- shell: 'echo ${workflow.name}'\n")
    assert plain.workflow is not None and plain.workflow.steps[0].git is None


def test_variables_of_a_listing() -> None:
    listed = CommitsListed(command_id=1, head=SHA_B, commits=((SHA_A, "one"), (SHA_B, "two")),
                           files_added=("z.md", "a.md"), files_modified=("m.py",),
                           files_deleted=("old.txt",), insertions=7, deletions=2)
    values = gitvars.variables("workflow", listed)
    assert {k: v.value for k, v in values.items()} == {
        "workflow.files_added": ["a.md", "z.md"],
        "workflow.files_modified": ["m.py"],
        "workflow.files_deleted": ["old.txt"],
        "workflow.files_changed": ["a.md", "m.py", "old.txt", "z.md"],
        "workflow.commits": [SHA_A, SHA_B],
        "workflow.commit_count": 2,
        "workflow.insertions": 7,
        "workflow.deletions": 2,
    }
    assert values["workflow.files_added"] == Var(value=["a.md", "z.md"], trusted=False,
                                                 git_list=True)
    assert {k: v.value for k, v in gitvars.EMPTY_STEP.items()} == {
        "step.files_added": [], "step.files_modified": [], "step.files_deleted": [],
        "step.files_changed": [], "step.commits": [], "step.commit_count": 0,
        "step.insertions": 0, "step.deletions": 0}


@pytest.mark.parametrize(("template", "shell_text", "expected"), [
    ("${x.files_added}", True, "a.md 'b c.md'"),
    ("${x.files_added:*.md}", False, "a.md b c.md"),
    ("${x.files_added:json}", False, '["a.md","b c.md"]'),
    ("${x.files_changed:csv}", False, "a.md,b c.md,src/m.py"),
    ("${x.files_changed:src/*:lines}", False, "src/m.py"),
    ("${x.commit_count}", True, "0"),
])
def test_rendering(template: str, shell_text: bool, expected: str) -> None:
    listed = CommitsListed(command_id=1, head=None, files_added=("a.md", "b c.md"),
                           files_modified=("src/m.py",))
    values = gitvars.variables("x", listed)
    assert interpolate(template, values, shell=shell_text).text == expected


# --- the step machine -----------------------------------------------------------------


@attrs.define
class Listing:
    """Answers ``ListCommits`` with one scripted listing per call (the last repeats)."""

    answers: list[CommitsListed | str]
    seen: list[ListCommits] = attrs.field(factory=list)

    def __call__(self, effect: Effect) -> Event:
        assert isinstance(effect, ListCommits), effect
        self.seen.append(effect)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, str):
            return GitFailed(command_id=effect.command_id, operation="list_commits",
                             message=answer)
        return attrs.evolve(answer, command_id=effect.command_id)


def listed(*added: str, commits: int = 0, modified: tuple[str, ...] = ()) -> CommitsListed:
    shas = tuple((f"{i:040x}", f"c{i}") for i in range(1, commits + 1))
    return CommitsListed(command_id=0, head=None, files_added=added, files_modified=modified,
                         commits=shas, insertions=len(added), deletions=0)


def drive(*steps: Step, answers: list[CommitsListed | str] | None = None,
          heads: tuple[str, ...] = (SHA_A, SHA_B, "c" * 40), script: Any = None,
          **ctx: Any) -> tuple[Driver, Listing]:
    listing = Listing(answers=list(answers or [listed()]))
    workflow = gitvars.annotate(Workflow(name="t", steps=steps))
    d = Driver(run_machine.start(workflow, make_ctx(**ctx)))
    d.run(script, heads=heads, git=listing)
    return d, listing


def spawned(d: Driver) -> list[str]:
    kinds = (RunCommand, ReadGitHead, ListCommits)
    return [type(e).__name__ for e in d.effects if isinstance(e, kinds)]


def test_no_reference_no_git_work() -> None:
    d, _ = drive(shell("make"), shell("echo ${workflow.name} ${workflow.id}"))
    assert spawned(d) == ["RunCommand", "RunCommand"]
    assert d.commands == ["make", "echo t workflow-1"]


def test_step_variables_describe_the_previous_step() -> None:
    d, listing = drive(
        shell("make"),
        shell("echo ${step.files_added:*.md} ${step.commit_count}"),
        answers=[listed("a.md", "b.txt", commits=1), listed()])
    assert spawned(d) == ["ReadGitHead", "RunCommand", "ListCommits",
                          "ReadGitHead", "RunCommand", "ListCommits"]
    assert [e.since for e in listing.seen] == [SHA_A, SHA_B]
    assert d.commands == ["make", "echo a.md 1"]
    assert d.finish.exit_code == 0
    # not a result variable of any step: not checkpointed, not in the step records
    assert "step.files_added" not in d.vars
    assert not any(k.startswith("step.") for k in d.checkpoints[-1]["variable_state"])


def test_before_any_step_empty_lists_and_zeros() -> None:
    d, _ = drive(shell("echo [${step.files_added}] ${step.commit_count} '${step.commits:json}'"))
    assert d.commands == ["echo [] 0 '[]'"]
    assert spawned(d) == ["ReadGitHead", "RunCommand", "ListCommits"]


def test_a_skipped_step_leaves_step_variables_alone() -> None:
    d, _ = drive(
        shell("make"),
        shell("never", when=False),
        shell("echo ${step.files_added}"),
        answers=[listed("a.md"), listed("z.md")])
    assert d.commands == ["make", "echo a.md"]
    assert spawned(d) == ["ReadGitHead", "RunCommand", "ListCommits",
                          "ReadGitHead", "RunCommand", "ListCommits"]


def test_workflow_variables_since_the_head_read_before_the_first_step() -> None:
    d, listing = drive(
        shell("make"),
        shell("echo ${workflow.commit_count} ${workflow.files_changed:json}"),
        answers=[listed("a.md", commits=1, modified=("README.md",))])
    # no worktree: HEAD is read once, before the scope's first step
    assert spawned(d) == ["ReadGitHead", "RunCommand", "ListCommits", "RunCommand"]
    assert [e.since for e in listing.seen] == [SHA_A]
    assert d.commands == ["make", "echo 1 '[\"README.md\",\"a.md\"]'"]


def test_workflow_variables_since_the_worktree_start_commit() -> None:
    # the step machine alone (the run machine would create the worktree first)
    worktree = WorktreeSpec(name="s", path="/wt/s", branch="prodigy-s", base_commit="f" * 40)
    ctx = make_ctx(worktree=worktree)
    (first, second) = gitvars.annotate_steps((shell("make"), shell("echo ${workflow.commits}")))
    st = stepper.Stepper()
    effects: list[Effect] = []
    for i, step in enumerate((first, second)):
        done = stepper.begin(st, ctx, pmap(), step, f"steps[{i}]")
        effects.extend(done.effects)
        while done.outcome is None:
            (pending,) = [e for e in done.effects if isinstance(e, ListCommits | RunCommand)]
            event: Event = (
                attrs.evolve(listed(commits=2), command_id=pending.command_id)
                if isinstance(pending, ListCommits)
                else CommandFinished(command_id=pending.command_id, exit_code=0))
            done = stepper.on_event(done.stepper, ctx, pmap(), event)
            effects.extend(done.effects)
        st = done.stepper
    assert [type(e).__name__ for e in effects if isinstance(e, ListCommits | RunCommand
                                                           | ReadGitHead)] == \
        ["RunCommand", "ListCommits", "RunCommand"]
    assert [e.since for e in effects if isinstance(e, ListCommits)] == ["f" * 40]
    assert [e.argv[-1] for e in effects if isinstance(e, RunCommand)] == \
        ["make", f"echo {1:040x} {2:040x}"]


def test_workflow_variables_in_a_condition() -> None:
    d, _ = drive(shell("make"),
                       shell("echo changed", when="${workflow.commit_count} > 0"),
                       shell("echo unchanged", when="${workflow.commit_count} == 0"),
                       answers=[listed(commits=1)])
    assert d.commands == ["make", "echo changed"]
    assert spawned(d) == ["ReadGitHead", "RunCommand", "ListCommits", "RunCommand",
                          "ListCommits"]


def test_handlers_see_the_step_itself() -> None:
    handler = shell("echo fixing ${step.files_changed}")
    d, listing = drive(
        shell("make", on_failure=OnFailure(commands=(handler,))),
        answers=[listed("half.c")], script={"make": R(exit_code=2)})
    # HEAD recorded before the step; the handler lists since then; no listing at the end
    # because no top-level step reads step.*
    assert spawned(d) == ["ReadGitHead", "RunCommand", "ListCommits", "RunCommand"]
    assert [e.since for e in listing.seen] == [SHA_A]
    assert d.commands == ["make", "echo fixing half.c"]


def test_commit_checks_head_serves_as_the_recorded_start() -> None:
    d, listing = drive(shell("make", commit_required=True),
                       shell("echo ${step.commit_count}"),
                       answers=[listed("a.md", commits=1), listed()])
    assert spawned(d) == ["ReadGitHead", "RunCommand", "ReadGitHead", "ListCommits",
                          "ReadGitHead", "RunCommand", "ListCommits"]
    assert listing.seen[0].since == SHA_A
    assert d.commands == ["make", "echo 1"]


def test_a_failed_listing_warns_and_leaves_the_reference() -> None:
    d, _ = drive(shell("make"), shell("echo ${workflow.files_added}"),
                       answers=["fatal: not a git repository"])
    assert d.commands == ["make", "echo ${workflow.files_added}"]
    assert "warning: cannot read the git context of 'shell: echo ${workflow.files_added}': " \
        "fatal: not a git repository" in d.printed


def test_a_failed_listing_is_unresolved_in_strict_mode() -> None:
    d, _ = drive(shell("make"), shell("echo ${step.files_added}"),
                       answers=["fatal: bad revision"], strict_vars=True)
    assert d.commands == ["make"]
    assert d.finish.exit_code == 1
    assert "unresolved: step.files_added" in d.printed


def test_dry_run_does_no_git_work_and_shows_the_reference() -> None:
    d, _ = drive(shell("make"), shell("echo ${step.files_added:*.md} ${workflow.commits}"),
                       dry_run=True)
    assert spawned(d) == ["RunCommand", "RunCommand"]
    assert d.commands == ["make", "echo ${step.files_added:*.md} ${workflow.commits}"]
    assert not [e for e in d.effects if isinstance(e, Print) and "warning" in e.text]
