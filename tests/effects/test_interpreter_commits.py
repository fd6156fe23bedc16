"""Layer 2: ``auto_commit``, ``commit_config`` and ``outputs`` through the trio interpreter.

``FakeEnv``'s ``FakeGit`` is a small in-memory repository: scripted commands change it
(``touch`` leaves an uncommitted file, ``commit`` stands for a commit the step made), and
the assertions are on the exact effects performed, the calls ``FakeGit`` recorded and the
repository afterwards.  The dry-run environment performs the same effects and changes
nothing.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

from prodigy_core import run_machine
from prodigy_core.context import RunContext
from prodigy_core.effects import (
    CommitChanges,
    Effect,
    ListCommits,
    LogEvent,
    Print,
    SquashCommits,
)
from prodigy_core.model import CommitConfig, Step, Workflow
from prodigy_effects.dryrun import DryRunEnv, PlanConsole
from prodigy_effects.env import Env
from prodigy_effects.fake import ROOT_SHA, FakeCommit, FakeEnv, FakeGit, Scripted
from prodigy_effects.interpreter import RunResult, interpret

CTX = RunContext(session_id="workflow-1", workflow_name="t", workflow_path="t.yml",
                 project_dir="/repo", repo_root="/repo")


def shell(command: str, **fields: Any) -> Step:
    return Step(kind="shell", command=command, **fields)


async def run(env: Env, *steps: Step, ctx: RunContext = CTX) -> RunResult:
    return await interpret(run_machine.start(Workflow(name="t", steps=steps), ctx),
                           run_machine.step, env, record=True)


def spawned(trace: tuple[Effect, ...]) -> list[str]:
    return [type(e).__name__ for e in trace
            if not isinstance(e, LogEvent | Print) and type(e).__name__ not in (
                "SaveCheckpoint", "SaveSession", "Finish", "DescribeStep")]


def scripted(git: FakeGit, actions: dict[str, Callable[[FakeGit], object]]) -> Any:
    """A command script whose commands change the fake repository."""

    def answer(effect: Any) -> Scripted:
        text = effect.argv[-1]
        if text in actions:
            actions[text](git)
        return Scripted(stdout=f"{text}\n")

    return answer


async def test_auto_commit_and_commit_required(autojump_clock: Any) -> None:
    git = FakeGit()
    env = FakeEnv(scripted(git, {"date > d.txt": lambda g: g.touch("d.txt")}), git=git)
    result = await run(env, shell("date > d.txt", auto_commit=True, commit_required=True))
    assert result.exit_code == 0
    assert spawned(result.trace) == ["ReadGitHead", "RunCommand", "CommitChanges",
                                     "ReadGitHead"]
    assert git.history == [FakeCommit(sha=git.current or "", message="prodigy: shell: date > d.txt",
                                      files=("d.txt",))]
    assert git.dirty == []
    assert git.calls == [e for e in result.trace if isinstance(e, CommitChanges)]


async def test_auto_commit_honours_include_and_exclude(autojump_clock: Any) -> None:
    git = FakeGit()
    env = FakeEnv(scripted(git, {"gen": lambda g: g.touch("src/a.py", "src/b.tmp", "x.py")}),
                  git=git)
    config = CommitConfig(include_files=("src/**",), exclude_files=("*.tmp",),
                          message_template="chore: ${shell.output}", author="Bot <b@x>",
                          sign=True)
    result = await run(env, shell("gen", auto_commit=True, commit_config=config))
    assert result.exit_code == 0
    (commit,) = git.history
    # the template sees the variables of the moment (not shell-escaped)
    assert commit == FakeCommit(sha=commit.sha, message="chore: gen\n", files=("src/a.py",),
                                author="Bot <b@x>", signed=True)
    assert sorted(git.dirty) == ["src/b.tmp", "x.py"]


async def test_nothing_to_commit_fails_commit_required(autojump_clock: Any) -> None:
    env = FakeEnv()
    result = await run(env, shell("true", auto_commit=True, commit_required=True))
    assert result.exit_code == 1
    assert "error[E3003]: Step 'shell: true' has commit_required=true but no commits were " \
        "created" in env.console.lines  # type: ignore[attr-defined]


async def test_outputs_from_a_commit_the_step_made(autojump_clock: Any) -> None:
    git = FakeGit(tracked={"specs/old.md"})
    env = FakeEnv(scripted(git, {"mk": lambda g: g.commit("s", ("specs/old.md",
                                                                  "specs/a.md"))}), git=git)
    result = await run(env, shell("mk", id="s", outputs=(("f", "specs/*.md"),)),
                       shell("cat ${s.f}"))
    assert result.exit_code == 0
    assert spawned(result.trace) == ["ReadGitHead", "RunCommand", "ListCommits", "RunCommand"]
    listing = next(e for e in result.trace if isinstance(e, ListCommits))
    assert listing.since == ROOT_SHA
    assert [c.argv[-1] for c in env.commands.calls] == ["mk", "cat specs/a.md"]  # type: ignore[attr-defined]
    completed = [e for e in env.journal.events  # type: ignore[attr-defined]
                 if e["event_type"] == "step_completed"]
    assert completed[0]["variables"]["s.f"] == "specs/a.md"
    assert "s.f" in completed[0]["untrusted"]


async def test_missing_output_and_message_pattern(autojump_clock: Any) -> None:
    git = FakeGit()
    env = FakeEnv(scripted(git, {"mk": lambda g: g.touch("notes.txt")}), git=git)
    result = await run(env, shell("mk", id="spec", outputs=(("file", "specs/*.md"),)))
    assert result.exit_code == 1
    assert "error[E3015]: step did not produce output 'file' matching specs/*.md" \
        in env.console.lines  # type: ignore[attr-defined]

    git = FakeGit()
    env = FakeEnv(scripted(git, {"c": lambda g: g.commit("wip", ("a",))}), git=git)
    result = await run(env, shell("c", commit_config=CommitConfig(message_pattern=r"^feat:")))
    assert result.exit_code == 1
    assert any("E3014" in line and "'wip'" in line
               for line in env.console.lines)  # type: ignore[attr-defined]


async def test_squash(autojump_clock: Any) -> None:
    git = FakeGit()

    def two_commits(g: FakeGit) -> None:
        g.commit("feat: a", ("a",))
        g.commit("feat: b", ("b",))

    env = FakeEnv(scripted(git, {"work": two_commits}), git=git)
    result = await run(env, shell("work", commit_config=CommitConfig(squash=True)))
    assert result.exit_code == 0
    assert spawned(result.trace)[-2:] == ["ListCommits", "SquashCommits"]
    (squash,) = [e for e in result.trace if isinstance(e, SquashCommits)]
    assert squash.since == ROOT_SHA and squash.message == "feat: a"
    assert [(c.message, c.files) for c in git.history] == [("feat: a", ("a", "b"))]


async def test_git_failure_fails_the_step(autojump_clock: Any) -> None:
    git = FakeGit(dirty=["x"], fail={"commit_changes": "error: gpg failed to sign the data"})
    env = FakeEnv(git=git)
    result = await run(env, shell("x", auto_commit=True, commit_config=CommitConfig(sign=True)))
    assert result.exit_code == 1
    assert "error[E3001]: auto_commit failed: error: gpg failed to sign the data" \
        in env.console.lines  # type: ignore[attr-defined]
    assert git.history == []


async def test_dry_run_answers_planned_and_commits_nothing() -> None:
    out = io.StringIO()
    console = PlanConsole(out=out)
    env = DryRunEnv(console)
    step = shell("mk", id="s", auto_commit=True, commit_required=True,
                 outputs=(("f", "*.md"),), commit_config=CommitConfig(squash=True,
                                                                       message_pattern="x"))
    ctx = RunContext(session_id="workflow-1", workflow_name="t", workflow_path="t.yml",
                     project_dir="/repo", repo_root="/repo", dry_run=True)
    result = await run(env, step, shell("cat ${s.f}"), ctx=ctx)
    assert result.exit_code == 0
    assert spawned(result.trace) == ["ReadGitHead", "RunCommand", "RunCommand"]
    assert "auto_commit: true" in out.getvalue() and "outputs: f" in out.getvalue()
    assert console.steps[1]["command"] == "cat ${s.f}"
    planned = await env.git.commit_changes(CommitChanges(command_id=1, cwd="/", message="m"))
    assert planned.planned  # type: ignore[union-attr]
