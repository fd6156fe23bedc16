"""Layer 2: runs with a session worktree through the trio interpreter and ``FakeEnv``.

``FakeWorktrees`` answers the worktree and merge effects from its configuration and
records them; ``FakePrompter`` answers the merge prompt.  Assertions are on the order of
the effects the interpreter performed (``RunResult.trace``), on what the fakes received
and on the exit code.
"""

from __future__ import annotations

from typing import Any

import trio

from prodigy_core import run_machine
from prodigy_core.context import RunContext, WorktreeSpec
from prodigy_core.effects import Effect, LogEvent, Print
from prodigy_core.events import CancelRequested, Event
from prodigy_core.model import Step, Workflow
from prodigy_core.worktree_ops import AskUser, InspectMerge
from prodigy_effects.env import Env
from prodigy_effects.fake import (
    FakeEnv,
    FakePrompter,
    FakeWorktrees,
    Scripted,
    ScriptedClaude,
)
from prodigy_effects.interpreter import RunResult, interpret

NAME = "session-1"
PATH = f"/store/worktrees/repo/{NAME}"
BRANCH = f"prodigy-{NAME}"
WT = WorktreeSpec(name=NAME, path=PATH, branch=BRANCH, base_commit="a" * 40,
                  original_branch="feature", repo_lock="/store/locks/repo.lock",
                  user_dir="/home/u/repo")


def ctx(*, auto_yes: bool = False) -> RunContext:
    return RunContext(session_id=NAME, workflow_name="t", workflow_path="t.yml",
                      project_dir=PATH, repo_root="/repo", worktree=WT, auto_yes=auto_yes,
                      started_at="2026-01-01T00:00:00.000Z")


def shell(command: str) -> Step:
    return Step(kind="shell", command=command)


WF = Workflow(name="t", steps=(shell("echo a"), shell("echo b")))


async def run(env: Env, *, workflow: Workflow = WF, auto_yes: bool = False,
              step: Any = None) -> RunResult:
    return await interpret(run_machine.start(workflow, ctx(auto_yes=auto_yes)),
                           step or run_machine.step, env, record=True)


def structure(trace: tuple[Effect, ...]) -> list[str]:
    """The effect kinds performed, without console output and journal records."""
    return [type(e).__name__ for e in trace if not isinstance(e, Print | LogEvent)]


def journal(trace: tuple[Effect, ...], *types: str) -> list[str]:
    return [e.event_type for e in trace if isinstance(e, LogEvent) and e.event_type in types]


def console(env: Env) -> str:
    return env.console.text  # type: ignore[attr-defined, no-any-return]


async def test_a_run_in_a_worktree_asks_merges_and_cleans_up(autojump_clock: Any) -> None:
    worktrees = FakeWorktrees()
    prompter = FakePrompter(answers=["y"])
    env = FakeEnv({"echo a": Scripted(stdout="a\n")}, worktrees=worktrees, prompter=prompter)
    result = await run(env)
    assert result.exit_code == 0
    assert structure(result.trace) == [
        "CreateWorktree",
        "SaveWorktreeMeta",
        "SaveSession",
        "RunCommand", "SaveCheckpoint",
        "RunCommand", "SaveCheckpoint",
        "SaveCheckpoint",  # Completed
        "InspectMerge",
        "AskUser",
        "MergeBranch",
        "SaveWorktreeMeta",
        "RemoveWorktree",
        "SaveSession",
        "Finish",
    ]
    assert journal(result.trace, "workflow_started", "workflow_completed",
                   "worktree_merged", "merge_finished") == [
        "workflow_started", "workflow_completed", "worktree_merged", "merge_finished"]
    assert worktrees.kinds() == ["create_worktree", "inspect_merge", "merge_branch",
                                 "remove_worktree"]
    create = worktrees.calls[0]
    assert (create.path, create.branch, create.repo_root) == (PATH, BRANCH, "/repo")
    assert [c.cwd for c in env.commands.calls] == [PATH, PATH]  # type: ignore[attr-defined]
    assert prompter.questions == [f"Merge {NAME} to feature [Y/n]: "]
    assert [m["status"] for m in worktrees.metas] == ["in_progress", "merged"]
    assert worktrees.metas[-1]["merge_prompt_response"] == "y"
    assert f"Created worktree at: {PATH}" in console(env)
    assert "Worktree changes merged successfully!" in console(env)
    assert result.outcome["merge"] == {"target": "feature", "merged": True, "reason": None}
    assert env.store.sessions[-1]["status"] == "Completed"  # type: ignore[attr-defined]


async def test_with_yes_nothing_is_asked(autojump_clock: Any) -> None:
    worktrees = FakeWorktrees()
    prompter = FakePrompter()
    env = FakeEnv(worktrees=worktrees, prompter=prompter)
    result = await run(env, auto_yes=True)
    assert result.exit_code == 0
    assert prompter.questions == []
    assert "AskUser" not in structure(result.trace)
    assert result.outcome["merge"]["merged"] is True


async def test_a_declined_merge_keeps_the_worktree(autojump_clock: Any) -> None:
    worktrees = FakeWorktrees()
    prompter = FakePrompter(answers=["perhaps", "n"])
    env = FakeEnv(worktrees=worktrees, prompter=prompter)
    result = await run(env)
    assert result.exit_code == 0
    assert len(prompter.questions) == 2
    assert worktrees.kinds() == ["create_worktree", "inspect_merge"]
    assert f"Worktree {NAME} was not merged into feature." in console(env)
    assert result.outcome["merge"] == {"target": "feature", "merged": False,
                                       "reason": "declined"}


async def test_without_a_terminal_or_prompter_nothing_is_merged(autojump_clock: Any) -> None:
    for prompter in (FakePrompter(terminal=False), None):
        worktrees = FakeWorktrees()
        env = FakeEnv(worktrees=worktrees, prompter=prompter)
        result = await run(env)
        assert result.exit_code == 0
        assert result.outcome["merge"]["reason"] == "no_tty"
        assert "merge_branch" not in worktrees.kinds()


async def test_nothing_to_merge(autojump_clock: Any) -> None:
    worktrees = FakeWorktrees(ahead=0)
    env = FakeEnv(worktrees=worktrees, prompter=FakePrompter())
    result = await run(env)
    assert result.exit_code == 0
    assert worktrees.kinds() == ["create_worktree", "inspect_merge", "remove_worktree"]
    assert f"No new commits in worktree '{NAME}', skipping merge" in console(env)


async def test_a_conflict_resolved_by_claude(autojump_clock: Any) -> None:
    from tests.core._parse_helpers import load

    loaded = load("""
name: t
commands:
  - shell: "echo a"
merge_conflicts:
  strategy: claude
  verify: "make test"
""")
    assert loaded.workflow is not None
    worktrees = FakeWorktrees(conflicts=("src/a.py",), merge_dir="/home/u/repo")
    claude = ScriptedClaude()
    env = FakeEnv(worktrees=worktrees, claude=claude)
    result = await run(env, workflow=loaded.workflow, auto_yes=True)
    assert result.exit_code == 0
    assert worktrees.kinds() == ["create_worktree", "inspect_merge", "merge_branch",
                                 "conclude_merge", "remove_worktree"]
    merge, conclude = worktrees.calls[2], worktrees.calls[3]
    assert merge.keep_conflict is True  # type: ignore[union-attr]
    assert conclude.action == "accept"  # type: ignore[union-attr]
    assert [c.cwd for c in claude.calls] == ["/home/u/repo"]
    assert [c.argv[-1] for c in env.commands.calls] == ["echo a", "make test"]  # type: ignore[attr-defined]
    assert env.commands.calls[-1].cwd == "/home/u/repo"  # type: ignore[attr-defined]
    assert journal(result.trace, "merge_conflict", "merge_conflict_resolved",
                   "worktree_merged") == ["merge_conflict", "merge_conflict_resolved",
                                          "worktree_merged"]
    (resolved,) = [e for e in result.trace if isinstance(e, LogEvent)
                   and e.event_type == "merge_conflict_resolved"]
    assert dict(resolved.fields)["json_log_location"] == "memory://transcript/1"


async def test_an_aborted_conflict_exits_1(autojump_clock: Any) -> None:
    worktrees = FakeWorktrees(conflicts=("a.py", "b.py"))
    env = FakeEnv(worktrees=worktrees)
    result = await run(env, auto_yes=True)
    assert result.exit_code == 1
    assert result.outcome["error_code"] == "E4004"
    assert "Merge of prodigy-session-1 into feature has conflicts in: a.py, b.py" \
        in console(env)
    assert "remove_worktree" not in worktrees.kinds()


async def test_a_refused_merge_exits_1(autojump_clock: Any) -> None:
    worktrees = FakeWorktrees(refuse="local changes would be overwritten")
    env = FakeEnv(worktrees=worktrees)
    result = await run(env, auto_yes=True)
    assert result.exit_code == 1
    assert result.outcome["error_code"] == "E4005"
    assert "error[E4005]: local changes would be overwritten" in console(env)


async def test_no_merge_target_exits_1(autojump_clock: Any) -> None:
    worktrees = FakeWorktrees(no_target=True)
    env = FakeEnv(worktrees=worktrees, prompter=FakePrompter(answers=["y"]))
    result = await run(env)
    assert result.exit_code == 1
    assert result.outcome["error_code"] == "E4007"
    assert worktrees.kinds() == ["create_worktree", "inspect_merge"]
    assert env.prompter.questions == []  # type: ignore[union-attr]


async def test_a_failed_step_does_not_merge(autojump_clock: Any) -> None:
    worktrees = FakeWorktrees()
    env = FakeEnv({"echo b": Scripted(exit_code=1)}, worktrees=worktrees,
                  prompter=FakePrompter(answers=["y"]))
    result = await run(env)
    assert result.exit_code == 1
    assert worktrees.kinds() == ["create_worktree"]
    assert [m["status"] for m in worktrees.metas] == ["in_progress", "failed"]


async def test_a_worktree_that_cannot_be_created_exits_2(autojump_clock: Any) -> None:
    worktrees = FakeWorktrees(create_failure=("E4006", "the worktree and its branch are gone"))
    env = FakeEnv(worktrees=worktrees)
    result = await run(env)
    assert result.exit_code == 2
    assert structure(result.trace) == ["CreateWorktree", "SaveSession", "Finish"]
    assert env.commands.calls == []  # type: ignore[attr-defined]


async def test_without_worktrees_create_worktree_answers_worktree_failed(
        autojump_clock: Any) -> None:
    env = FakeEnv()
    assert env.worktrees is None and env.prompter is None
    result = await run(env)
    assert result.exit_code == 1
    assert result.outcome["error_code"] == "E4003"
    assert "error[E4003]: this environment has no git worktrees" in console(env)
    assert structure(result.trace) == ["CreateWorktree", "SaveSession", "Finish"]
    assert env.commands.calls == []  # type: ignore[attr-defined]


async def test_cancel_during_the_merge_prompt(autojump_clock: Any) -> None:
    worktrees = FakeWorktrees()
    prompter = FakePrompter(hang=True)

    def step(state: Any, event: Event) -> run_machine.Transition:
        transition = run_machine.step(state, event)
        if any(isinstance(e, AskUser) for e in transition.effects):
            cancelled = run_machine.step(transition.state, CancelRequested(signal="SIGINT"))
            return run_machine.Transition(state=cancelled.state,
                                          effects=(*transition.effects, *cancelled.effects))
        return transition

    t0 = trio.current_time()
    env = FakeEnv(worktrees=worktrees, prompter=prompter)
    result = await run(env, step=step)
    assert trio.current_time() == t0  # the question did not wait
    assert result.exit_code == 130
    assert prompter.questions == [f"Merge {NAME} to feature [Y/n]: "]
    names = structure(result.trace)
    assert names[names.index("AskUser") + 1] == "CancelCommands"
    assert "merge_branch" not in worktrees.kinds()
    assert result.outcome["merge"]["reason"] is None  # never answered: not "declined"


async def test_the_fake_answers_inspect_details_only_when_asked() -> None:
    worktrees = FakeWorktrees(commits=({"short_id": "1"},), modified_files=({"path": "a"},))
    plain = await worktrees.inspect(InspectMerge(
        command_id=1, repo_root="/repo", worktree_path=PATH, branch=BRANCH,
        original_branch="feature"))
    detailed = await worktrees.inspect(InspectMerge(
        command_id=2, repo_root="/repo", worktree_path=PATH, branch=BRANCH,
        original_branch="feature", details=True))
    assert (plain.commits, plain.commit_count) == ((), 0)  # type: ignore[union-attr]
    assert (detailed.commit_count, detailed.file_count) == (1, 1)  # type: ignore[union-attr]
