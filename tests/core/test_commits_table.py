"""Layer 1: ``auto_commit``, ``commit_config`` and ``outputs`` in the step machine.

Each case runs one workflow through ``run_machine`` with hand-fed events (``Driver``);
git effects are answered by a small scripted repository (``Repo``).  The assertions are
on the spawned effects in order, the error code, what was printed and the variables.
Spec 02 §6, §8, §12, §13 (numbers in the case ids are spec 02 §16 examples).
"""

from __future__ import annotations

from typing import Any

import attrs
import pytest

from prodigy_core import run_machine
from prodigy_core.effects import (
    CommitChanges,
    Effect,
    ListCommits,
    ReadGitHead,
    RunCommand,
    SquashCommits,
    WriteFile,
)
from prodigy_core.events import (
    ChangesCommitted,
    CommandFinished,
    CommitsListed,
    CommitsSquashed,
    Event,
    GitFailed,
)
from prodigy_core.model import (
    CommitConfig,
    OnFailure,
    Step,
    StepValidate,
    Workflow,
    WriteFileSpec,
)
from prodigy_core.problems import InvalidTransition
from tests.core._machine_driver import Driver, R, make_ctx, shell


@attrs.define
class Repo:
    """Scripted answers to the git effects of one run."""

    commit: list[tuple[str | None, tuple[str, ...]]] = attrs.field(factory=list)
    commits: tuple[tuple[str, str], ...] = ()
    added: tuple[str, ...] = ()
    modified: tuple[str, ...] = ()
    fail: dict[str, str] = attrs.field(factory=dict)
    seen: list[Effect] = attrs.field(factory=list)

    def __call__(self, effect: Effect) -> Event:
        self.seen.append(effect)
        cid = effect.command_id  # type: ignore[union-attr]
        tag = {CommitChanges: "commit_changes", ListCommits: "list_commits",
               SquashCommits: "squash_commits"}[type(effect)]
        if tag in self.fail:
            return GitFailed(command_id=cid, operation=tag, message=self.fail[tag])
        if isinstance(effect, CommitChanges):
            sha, files = self.commit.pop(0) if self.commit else (None, ())
            return ChangesCommitted(command_id=cid, sha=sha, files=files)
        if isinstance(effect, ListCommits):
            return CommitsListed(command_id=cid, head="h1", commits=self.commits,
                                 files_added=self.added, files_modified=self.modified)
        return CommitsSquashed(command_id=cid, sha="9" * 40)


def wf(*steps: Step) -> Workflow:
    return Workflow(name="t", steps=steps)


def kinds(d: Driver) -> list[str]:
    spawned = (RunCommand, WriteFile, ReadGitHead, CommitChanges, ListCommits, SquashCommits)
    return [type(e).__name__ for e in d.effects if isinstance(e, spawned)]


COMMIT = (RunCommand.__name__, CommitChanges.__name__)
HEADS = ("h0", "h1")
C1 = (("c" * 40, "feat: one"),)
C2 = (("c" * 40, "feat: one\n\nbody"), ("d" * 40, "feat: two"))


@attrs.frozen(kw_only=True)
class Case:
    id: str
    steps: tuple[Step, ...]
    repo: Repo = attrs.field(factory=Repo)
    script: dict[str, Any] = attrs.field(factory=dict)
    heads: tuple[str, ...] = HEADS
    effects: tuple[str, ...]
    exit_code: int = 0
    error_code: str | None = None
    printed: tuple[str, ...] = ()
    not_printed: tuple[str, ...] = ()
    vars: tuple[tuple[str, Any], ...] = ()
    commands: tuple[str, ...] | None = None


cfg = CommitConfig

CASES = [
    Case(id="auto_commit after exit 0", steps=(shell("date > d.txt", auto_commit=True),),
         repo=Repo(commit=[("c" * 40, ("d.txt",))]), effects=COMMIT,
         printed=("auto_commit: committed 1 file as cccccccccccc",)),
    Case(id="02#9 auto_commit satisfies commit_required",
         steps=(shell("date > d.txt", auto_commit=True, commit_required=True),),
         repo=Repo(commit=[("c" * 40, ("d.txt",))]),
         effects=("ReadGitHead", *COMMIT, "ReadGitHead")),
    Case(id="auto_commit with nothing to commit fails commit_required",
         steps=(shell("true", auto_commit=True, commit_required=True),), heads=("h0", "h0"),
         effects=("ReadGitHead", *COMMIT, "ReadGitHead"), exit_code=1, error_code="E3003",
         printed=("error[E3003]: Step 'shell: true' has commit_required=true but no commits "
                  "were created",)),
    Case(id="no auto_commit after a failed execution",
         steps=(shell("exit 3", auto_commit=True),), script={"exit 3": R(exit_code=3)},
         effects=("RunCommand",), exit_code=1, error_code="E3001"),
    Case(id="auto_commit before a failing capture (the execution exited 0)",
         steps=(shell("echo no", auto_commit=True, capture="j", capture_format="json"),),
         script={"echo no": R(stdout="no\n")}, effects=COMMIT, exit_code=1,
         error_code="E3006"),
    Case(id="auto_commit on a write_file step",
         steps=(Step(kind="write_file", write_file=WriteFileSpec(path="a.txt", content="a"),
                     auto_commit=True),),
         effects=("WriteFile", "CommitChanges")),
    Case(id="a failed auto_commit fails the execution",
         steps=(shell("touch x", auto_commit=True),),
         repo=Repo(fail={"commit_changes": "gpg failed to sign the data"}), effects=COMMIT,
         exit_code=1, error_code="E3001",
         printed=("error[E3001]: auto_commit failed: gpg failed to sign the data",),
         not_printed=("failed with exit code 0",)),
    Case(id="message_pattern: every new commit matches",
         steps=(shell("commit", commit_config=cfg(message_pattern="^feat")),),
         repo=Repo(commits=C2), effects=("ReadGitHead", "RunCommand", "ListCommits")),
    Case(id="message_pattern: search semantics",
         steps=(shell("commit", commit_config=cfg(message_pattern="two")),),
         repo=Repo(commits=(("d" * 40, "feat: two"),)),
         effects=("ReadGitHead", "RunCommand", "ListCommits")),
    Case(id="message_pattern: one commit does not match (E3014)",
         steps=(shell("commit", commit_config=cfg(message_pattern="^feat")),),
         repo=Repo(commits=(*C1, ("e" * 40, "wip\n\nfeat"))),
         effects=("ReadGitHead", "RunCommand", "ListCommits"), exit_code=1,
         error_code="E3014",
         printed=("commit eeeeeeeeeeee of step 'shell: commit' has message 'wip', which does "
                  "not match commit_config.message_pattern '^feat'",)),
    Case(id="message_pattern checks the auto_commit too",
         steps=(shell("x", auto_commit=True, commit_config=cfg(message_pattern="^feat")),),
         repo=Repo(commit=[("c" * 40, ("x",))], commits=(("c" * 40, "prodigy: shell: x"),)),
         effects=("ReadGitHead", *COMMIT, "ListCommits"), exit_code=1, error_code="E3014"),
    Case(id="02#15 outputs: the path becomes ${s.f}",
         steps=(shell("mk", id="s", outputs=(("f", "specs/*.md"),)), shell("cat ${s.f}")),
         repo=Repo(commits=C1, added=("docs/x.md", "specs/b.md"), modified=("specs/a.md",)),
         effects=("ReadGitHead", "RunCommand", "ListCommits", "RunCommand"),
         vars=(("s.f", "specs/a.md"),), commands=("mk", "cat specs/a.md")),
    Case(id="outputs: a pattern without / matches the name in any directory",
         steps=(shell("mk", id="s", outputs=(("doc", "*.md"), ("py", "src/*.py"))),),
         repo=Repo(added=("docs/x.md", "src/a/b.py", "src/m.py")),
         effects=("ReadGitHead", "RunCommand", "ListCommits"),
         vars=(("s.doc", "docs/x.md"), ("s.py", "src/m.py"))),
    Case(id="outputs: nothing matches (E3015)",
         steps=(shell("mk", id="spec", outputs=(("file", "specs/*.md"),)),),
         repo=Repo(added=("specs/sub/a.md", "a.md")),
         effects=("ReadGitHead", "RunCommand", "ListCommits"), exit_code=1,
         error_code="E3015",
         printed=("error[E3015]: step did not produce output 'file' matching specs/*.md",)),
    Case(id="outputs: listing failed (E3015)",
         steps=(shell("mk", id="s", outputs=(("f", "*.md"),)),),
         repo=Repo(fail={"list_commits": "fatal: bad object"}),
         effects=("ReadGitHead", "RunCommand", "ListCommits"), exit_code=1,
         error_code="E3015", printed=("fatal: bad object",)),
    Case(id="outputs are set only when the step passes",
         steps=(shell("mk", id="s", outputs=(("f", "*.md"),),
                      step_validate=StepValidate(commands=("check",)), allow_failure=True),),
         script={"check": R(exit_code=1)}, repo=Repo(added=("a.md",)),
         effects=("ReadGitHead", "RunCommand", "ListCommits", "RunCommand"),
         vars=(("s.f", None),)),
    Case(id="squash: more than one commit, first message",
         steps=(shell("work", commit_config=cfg(squash=True, author="B <b@x>", sign=True)),),
         repo=Repo(commits=C2),
         effects=("ReadGitHead", "RunCommand", "ListCommits", "SquashCommits"),
         printed=("squashed 2 commits into 999999999999",)),
    Case(id="squash: one commit is left alone",
         steps=(shell("work", commit_config=cfg(squash=True)),), repo=Repo(commits=C1),
         effects=("ReadGitHead", "RunCommand", "ListCommits")),
    Case(id="squash: not after a failed validation",
         steps=(shell("work", commit_config=cfg(squash=True),
                      step_validate=StepValidate(commands=("check",))),),
         script={"check": R(exit_code=1)}, repo=Repo(commits=C2),
         effects=("ReadGitHead", "RunCommand", "ListCommits", "RunCommand"), exit_code=1,
         error_code="E3010"),
    Case(id="squash failure fails the execution",
         steps=(shell("work", commit_config=cfg(squash=True)),),
         repo=Repo(commits=C2, fail={"squash_commits": "cannot lock ref"}),
         effects=("ReadGitHead", "RunCommand", "ListCommits", "SquashCommits"), exit_code=1,
         error_code="E3001", printed=("commit_config.squash failed: cannot lock ref",)),
    Case(id="the whole pipeline in order",
         steps=(shell("work", id="w", auto_commit=True, commit_required=True,
                      outputs=(("f", "*.txt"),), step_validate=StepValidate(commands=("v",)),
                      commit_config=cfg(squash=True, message_pattern=".")),),
         repo=Repo(commit=[("d" * 40, ("b.txt",))], commits=C2, added=("b.txt",)),
         effects=("ReadGitHead", "RunCommand", "CommitChanges", "ReadGitHead",
                  "ListCommits", "RunCommand", "SquashCommits"),
         vars=(("w.f", "b.txt"),)),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_commit_case(case: Case) -> None:
    d = Driver(run_machine.start(wf(*case.steps), make_ctx()))
    finish = d.run(dict(case.script), heads=case.heads, git=case.repo)
    assert kinds(d) == list(case.effects)
    assert finish.exit_code == case.exit_code, d.printed
    if case.error_code is not None:
        assert d.state.error_code == case.error_code
    for text in case.printed:
        assert text in d.printed
    for text in case.not_printed:
        assert text not in d.printed
    for name, value in case.vars:
        assert d.vars.get(name) == value
        if value is not None:
            assert not d.state.stepper.vars[name].trusted
    if case.commands is not None:
        assert tuple(d.commands) == case.commands


# --- the effects' contents -----------------------------------------------------------------


def run_one(step: Step, repo: Repo, **ctx: Any) -> Driver:
    d = Driver(run_machine.start(wf(step), make_ctx(**ctx)))
    d.run(heads=HEADS, git=repo)
    return d


def test_commit_changes_carries_the_config() -> None:
    step = shell("x", auto_commit=True, commit_config=cfg(
        message_template="chore: ${ARG} $(rm -rf /) 'q'", author="Bot <bot@x>", sign=True,
        include_files=("src/**",), exclude_files=("*.tmp",)))
    repo = Repo()
    run_one(step, repo, args=("it's",))
    (effect,) = repo.seen
    assert effect == CommitChanges(
        command_id=effect.command_id, cwd="/repo",  # type: ignore[union-attr]
        message="chore: it's $(rm -rf /) 'q'", author="Bot <bot@x>", sign=True,
        include=("src/**",), exclude=("*.tmp",), display="shell: x", step_path="steps[0]")


def test_default_message_is_the_display_name() -> None:
    repo = Repo()
    run_one(shell("date > d.txt", auto_commit=True), repo)
    assert isinstance(repo.seen[0], CommitChanges)
    assert repo.seen[0].message == "prodigy: shell: date > d.txt"
    repo = Repo()
    run_one(shell("x", name="Regenerate", auto_commit=True), repo)
    assert repo.seen[0].message == "prodigy: Regenerate"  # type: ignore[union-attr]


def test_list_commits_since_the_recorded_head() -> None:
    repo = Repo(added=("a.md",))
    run_one(shell("x", id="s", outputs=(("f", "*.md"),), working_dir="sub"), repo)
    assert repo.seen == [ListCommits(command_id=repo.seen[0].command_id,  # type: ignore[union-attr]
                                     cwd="/repo/sub", since="h0")]


@pytest.mark.parametrize(("template", "message"), [
    (None, "feat: one\n\nbody"), ("squashed ${shell.exit_code}", "squashed 0")])
def test_squash_message(template: str | None, message: str) -> None:
    repo = Repo(commits=C2)
    run_one(shell("x", commit_config=cfg(squash=True, message_template=template,
                                          author="B <b@x>")), repo)
    squash = repo.seen[-1]
    assert squash == SquashCommits(command_id=squash.command_id,  # type: ignore[union-attr]
                                   cwd="/repo", since="h0", message=message, author="B <b@x>")


def test_outputs_retry_reads_the_changes_again() -> None:
    step = shell("mk", id="s", outputs=(("f", "*.md"),),
                 on_failure=OnFailure(commands=(shell("fix"),), max_attempts=2))
    answers = iter([(), ("a.md",)])

    def git(effect: Effect) -> Event:
        assert isinstance(effect, ListCommits)
        return CommitsListed(command_id=effect.command_id, head="h", files_added=next(answers))

    d = Driver(run_machine.start(wf(step), make_ctx()))
    finish = d.run(heads=("h0", "h1"), git=git)
    assert finish.exit_code == 0
    assert d.commands == ["mk", "fix", "mk"]
    assert [type(e).__name__ for e in d.effects if isinstance(e, ReadGitHead)] == \
        ["ReadGitHead", "ReadGitHead"]  # HEAD recorded again before the fix-loop re-run
    assert d.vars["s.f"] == "a.md"
    assert d.statuses == ["recovered"]


# --- dry run and planned answers -------------------------------------------------------------


def test_dry_run_skips_every_git_check() -> None:
    step = shell("mk", id="s", auto_commit=True, commit_required=True,
                 outputs=(("f", "*.md"),), commit_config=cfg(squash=True, message_pattern="x"))
    d = Driver(run_machine.start(wf(step, shell("cat ${s.f}")), make_ctx(dry_run=True)))
    d.head(None)
    command = d.pending(RunCommand)
    d.send(CommandFinished(command_id=command.command_id, exit_code=0, planned=True))
    command = d.pending(RunCommand)
    assert command.argv[-1] == "cat ${s.f}"  # unresolved in the plan
    d.send(CommandFinished(command_id=command.command_id, exit_code=0, planned=True))
    assert d.finish.exit_code == 0
    assert not d.of(CommitChanges) and not d.of(ListCommits) and not d.of(SquashCommits)


def test_planned_commit_answer_is_not_checked() -> None:
    step = shell("x", auto_commit=True, commit_required=True)
    d = Driver(run_machine.start(wf(step), make_ctx()))
    d.head("h0")
    d.finish_command()
    commit = d.pending(CommitChanges)
    d.send(ChangesCommitted(command_id=commit.command_id, sha=None, planned=True))
    d.head("h0")  # commit_required is still checked: only the commit was planned
    assert d.finish.exit_code == 1


def test_planned_listing_is_not_checked() -> None:
    step = shell("x", id="s", outputs=(("f", "*.md"),),
                 commit_config=cfg(message_pattern="^never"))
    d = Driver(run_machine.start(wf(step), make_ctx()))
    d.head("h0")
    d.finish_command()
    listing = d.pending(ListCommits)
    d.send(CommitsListed(command_id=listing.command_id, head=None,
                         commits=(("a" * 40, "nope"),), planned=True))
    assert d.finish.exit_code == 0
    assert "s.f" not in d.vars


# --- bugs ------------------------------------------------------------------------------------


def test_the_wrong_git_answer_is_a_bug() -> None:
    d = Driver(run_machine.start(wf(shell("x", auto_commit=True)), make_ctx()))
    d.finish_command()
    commit = d.pending(CommitChanges)
    with pytest.raises(InvalidTransition):
        run_machine.step(d.state, CommitsListed(command_id=commit.command_id, head="h"))
    with pytest.raises(InvalidTransition):
        run_machine.step(d.state, ChangesCommitted(command_id=commit.command_id + 1, sha=None))
    d.send(GitFailed(command_id=commit.command_id, operation="commit_changes", message="x"))
    assert d.finish.exit_code == 1


@pytest.mark.parametrize("value", ["true", "TRUE"])
def test_no_commit_validation_disables_commit_required_with_one_warning(value: str) -> None:
    steps = (shell("true", commit_required=True), shell("echo b", commit_required=True,
                                                        on_failure=OnFailure(commands=(
                                                            shell("x", commit_required=True),))))
    d = Driver(run_machine.start(wf(*steps), make_ctx(
        environ=(("PRODIGY_NO_COMMIT_VALIDATION", value),))))
    assert d.run(heads=["h0"] * 4).exit_code == 0
    assert kinds(d) == ["RunCommand", "RunCommand"]  # HEAD is not even read
    warning = "warning: PRODIGY_NO_COMMIT_VALIDATION=true: commit_required checks are disabled"
    assert d.printed.count(warning) == 1


@pytest.mark.parametrize("environ", [(), (("PRODIGY_NO_COMMIT_VALIDATION", "false"),)])
def test_commit_required_is_checked_otherwise(environ: tuple[tuple[str, str], ...]) -> None:
    d = Driver(run_machine.start(wf(shell("true", commit_required=True)),
                                 make_ctx(environ=environ)))
    finish = d.run(heads=["h0", "h0"])
    assert finish.outcome["error_code"] == "E3003"  # type: ignore[index]
    assert "PRODIGY_NO_COMMIT_VALIDATION" not in d.printed


def test_no_commit_validation_warns_only_when_a_step_requires_commits() -> None:
    d = Driver(run_machine.start(wf(shell("true")), make_ctx(
        environ=(("PRODIGY_NO_COMMIT_VALIDATION", "true"),))))
    d.run()
    assert "PRODIGY_NO_COMMIT_VALIDATION" not in d.printed
