"""Layer 2: git context variables ``step.*`` / ``workflow.*`` through the trio interpreter.

``FakeGit`` is changed by the scripted commands; the assertions are on the exact effects
performed, the commands the steps ran and, for the dry run, the printed plan (spec 03 §7).
"""

from __future__ import annotations

import io
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prodigy_core import gitvars, run_machine
from prodigy_core.context import RunContext
from prodigy_core.effects import Effect, ListCommits, LogEvent, Print
from prodigy_core.events import CommitsListed
from prodigy_core.model import OnFailure, Step, Workflow
from prodigy_effects.dryrun import DryRunEnv, PlanConsole
from prodigy_effects.env import Env
from prodigy_effects.fake import ROOT_SHA, FakeEnv, FakeGit, Scripted
from prodigy_effects.interpreter import RunResult, interpret
from prodigy_effects.production import RealGit

CTX = RunContext(session_id="workflow-1", workflow_name="t", workflow_path="t.yml",
                 project_dir="/repo", repo_root="/repo")


def shell(command: str, **fields: Any) -> Step:
    return Step(kind="shell", command=command, **fields)


async def run(env: Env, *steps: Step, ctx: RunContext = CTX) -> RunResult:
    workflow = gitvars.annotate(Workflow(name="t", steps=steps))
    return await interpret(run_machine.start(workflow, ctx), run_machine.step, env,
                           record=True)


def spawned(trace: tuple[Effect, ...]) -> list[str]:
    return [type(e).__name__ for e in trace
            if not isinstance(e, LogEvent | Print) and type(e).__name__ not in (
                "SaveCheckpoint", "SaveSession", "Finish", "DescribeStep")]


def scripted(git: FakeGit, actions: dict[str, Callable[[FakeGit], object]],
             exit_codes: dict[str, int] | None = None) -> Any:
    def answer(effect: Any) -> Scripted:
        text = effect.argv[-1]
        if text in actions:
            actions[text](git)
        return Scripted(stdout=f"{text}\n", exit_code=(exit_codes or {}).get(text, 0))

    return answer


def ran(env: FakeEnv) -> list[str]:
    return [c.argv[-1] for c in env.commands.calls]  # type: ignore[attr-defined]


async def test_step_and_workflow_variables(autojump_clock: Any) -> None:
    git = FakeGit(tracked={"README.md"})
    env = FakeEnv(scripted(git, {
        "mk": lambda g: g.commit("docs", ("a.md", "b.txt")),
        "edit": lambda g: g.touch("README.md", "new.md"),
    }), git=git)
    result = await run(
        env,
        shell("mk"),
        shell("echo ${step.files_added:*.md} ${step.commit_count} ${step.insertions}"),
        shell("edit"),
        shell("echo ${step.files_changed:csv} / ${workflow.commit_count} "
              "${workflow.files_added:json}"),
    )
    assert result.exit_code == 0
    assert ran(env) == [
        "mk", "echo a.md 1 2", "edit",
        # uncommitted changes count too; workflow.* cover the whole run so far
        "echo README.md,new.md / 1 '[\"a.md\",\"b.txt\",\"new.md\"]'",
    ]
    # HEAD before each step, its changes after it; the HEAD read before the first step is
    # also the start of workflow.*, listed before the last step is interpolated
    step = ["ReadGitHead", "RunCommand", "ListCommits"]
    assert spawned(result.trace) == [*step, *step, *step, "ListCommits", *step]
    listings = [e for e in result.trace if isinstance(e, ListCommits)]
    assert listings[0].since == ROOT_SHA and listings[-2].since == ROOT_SHA


async def test_handler_sees_its_own_step(autojump_clock: Any) -> None:
    git = FakeGit()
    env = FakeEnv(scripted(git, {"build": lambda g: g.touch("half.o")}, {"build": 2}), git=git)
    handler = shell("echo cleaning ${step.files_added}")
    result = await run(env, shell("build", on_failure=OnFailure(commands=(handler,))))
    assert ran(env) == ["build", "echo cleaning half.o"]
    assert spawned(result.trace) == ["ReadGitHead", "RunCommand", "ListCommits", "RunCommand"]
    assert result.exit_code == 0  # recovered by the handler


async def test_unreferenced_workflow_has_no_git_effects(autojump_clock: Any) -> None:
    env = FakeEnv(git=FakeGit())
    result = await run(env, shell("make"), shell("echo ${workflow.name} ${workflow.iteration}"))
    assert spawned(result.trace) == ["RunCommand", "RunCommand"]
    assert ran(env) == ["make", "echo t 1"]


async def test_dry_run_plan_shows_the_references() -> None:
    out = io.StringIO()
    console = PlanConsole(out=out)
    env = DryRunEnv(console)
    ctx = RunContext(session_id="workflow-1", workflow_name="t", workflow_path="t.yml",
                     project_dir="/repo", repo_root="/repo", dry_run=True)
    result = await run(env, shell("mk"),
                       shell("echo ${step.files_added:*.md} ${workflow.commit_count}"), ctx=ctx)
    assert result.exit_code == 0
    assert spawned(result.trace) == ["RunCommand", "RunCommand"]
    assert console.steps[1]["command"] == "echo ${step.files_added:*.md} ${workflow.commit_count}"
    assert "${step.files_added:*.md}" in out.getvalue()


async def test_real_git_line_totals(tmp_path: Path) -> None:
    """``insertions``/``deletions`` count tracked text files only (binary files count 0)."""

    def sh(*argv: str) -> None:
        subprocess.run(argv, cwd=tmp_path, check=True, capture_output=True)

    sh("git", "init", "-q")
    sh("git", "config", "user.email", "t@example.com")
    sh("git", "config", "user.name", "Test")
    (tmp_path / "keep.txt").write_text("1\n2\n3\n")
    (tmp_path / "gone.txt").write_text("x\ny\n")
    (tmp_path / "blob.bin").write_bytes(b"\0\1\2")
    sh("git", "add", "-A")
    sh("git", "commit", "-qm", "init")
    start = subprocess.run(["git", "rev-parse", "HEAD"], cwd=tmp_path, check=True,
                           capture_output=True, text=True).stdout.strip()
    (tmp_path / "keep.txt").write_text("1\ntwo\n3\n4\n")  # +2 -1, committed
    (tmp_path / "blob.bin").write_bytes(b"\0\3")  # binary: 0
    (tmp_path / "new.md").write_text("a\nb\n")  # +2, committed
    sh("git", "add", "-A")
    sh("git", "commit", "-qm", "change")
    (tmp_path / "gone.txt").unlink()  # -2, uncommitted
    (tmp_path / "untracked.txt").write_text("many\nlines\nhere\n")  # untracked: 0
    listed = await RealGit().list_commits(ListCommits(command_id=1, cwd=str(tmp_path),
                                                      since=start))
    assert isinstance(listed, CommitsListed)
    assert (listed.insertions, listed.deletions) == (4, 3)
    assert listed.files_added == ("new.md", "untracked.txt")
    assert listed.files_modified == ("blob.bin", "keep.txt")
    assert listed.files_deleted == ("gone.txt",)
    assert len(listed.commits) == 1
