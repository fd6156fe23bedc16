"""Layer 1: the run machine's worktree phase and merge phase (spec 06 §3, §7, §8.1).

A run whose ``RunContext.worktree`` is set first asks for its session worktree
(``CreateWorktree``) and nothing else; the steps start when ``WorktreeCreated`` arrives;
after the last step the merge machine runs and ``Finish`` comes only after it.  Events
are fed by hand through ``Driver``; no interpreter, no I/O.
"""

from __future__ import annotations

from typing import Any

import attrs
import pytest

from prodigy_core import run_machine
from prodigy_core.context import RunContext, WorktreeSpec
from prodigy_core.effects import (
    CancelCommands,
    Effect,
    Finish,
    LogEvent,
    Print,
    RunCommand,
    SaveSession,
)
from prodigy_core.events import CancelRequested
from prodigy_core.model import Workflow
from prodigy_core.problems import InvalidTransition
from prodigy_core.worktree_ops import (
    AskUser,
    BranchMerged,
    CreateWorktree,
    InspectMerge,
    MergeBranch,
    MergeConflicted,
    MergeFailed,
    MergeInspected,
    RemoveWorktree,
    SaveWorktreeMeta,
    UserAnswered,
    WorktreeCreated,
    WorktreeFailed,
    WorktreeRemoved,
)
from tests.core._machine_driver import Driver, make_ctx, shell

NAME = "session-1"
PATH = f"/store/worktrees/repo/{NAME}"
BRANCH = f"prodigy-{NAME}"
BASE = "a" * 40
HEAD = "c" * 40
LOCK = "/store/locks/repo.lock"

WT = WorktreeSpec(name=NAME, path=PATH, branch=BRANCH, base_commit=BASE,
                  original_branch="feature", repo_lock=LOCK, user_dir="/home/u/repo")

WF = Workflow(name="t", steps=(shell("echo one"), shell("echo two")))


def ctx(*, auto_yes: bool = True, **wt: Any) -> RunContext:
    return make_ctx(session_id=NAME, worktree=attrs.evolve(WT, **wt), project_dir=PATH,
                    repo_root="/repo", auto_yes=auto_yes)


def start(workflow: Workflow = WF, **options: Any) -> Driver:
    return Driver(run_machine.start(workflow, ctx(**options)))


def created(d: Driver, **fields: Any) -> tuple[Effect, ...]:
    effect = d.pending(CreateWorktree)
    values: dict[str, Any] = {"path": effect.path, "branch": effect.branch, "head": HEAD}
    values.update(fields)
    return d.send(WorktreeCreated(command_id=effect.command_id, **values))


def index_of(effects: tuple[Effect, ...] | list[Effect], pred: Any) -> int:
    for i, effect in enumerate(effects):
        if pred(effect):
            return i
    raise AssertionError(f"no such effect in {effects}")


def metas(d: Driver) -> list[dict[str, Any]]:
    return [e.doc for e in d.of(SaveWorktreeMeta)]


def merged_through(d: Driver) -> None:
    """Answer the default merge: inspected (1 commit ahead), merged, removed."""
    inspect = d.pending(InspectMerge)
    d.send(MergeInspected(command_id=inspect.command_id, target="feature", ahead=1))
    merge = d.pending(MergeBranch)
    d.send(BranchMerged(command_id=merge.command_id, sha="d" * 40, merge_dir="/home/u/repo"))
    remove = d.pending(RemoveWorktree)
    d.send(WorktreeRemoved(command_id=remove.command_id))


# --- the worktree phase -----------------------------------------------------------------


def test_start_emits_exactly_one_create_worktree() -> None:
    d = start()
    assert d.effects == [CreateWorktree(
        command_id=1, repo_root="/repo", path=PATH, branch=BRANCH, base_commit=BASE,
        mode="create", user_dir="/home/u/repo", lock_path=LOCK)]
    assert d.state.phase == "worktree" and not d.finished


def test_a_reused_named_worktree_is_asked_for_in_reuse_mode() -> None:
    d = start(named=True, reuse=True)
    assert [e.mode for e in d.of(CreateWorktree)] == ["reuse"]


def test_a_dry_run_creates_no_worktree() -> None:
    d = Driver(run_machine.start(WF, attrs.evolve(ctx(), dry_run=True)))
    assert not d.of(CreateWorktree)
    assert d.of(RunCommand)


def test_worktree_created_then_the_usual_start() -> None:
    d = start()
    after = created(d)
    assert isinstance(after[0], Print) and after[0].text == f"Created worktree at: {PATH}"
    meta = index_of(after, lambda e: isinstance(e, SaveWorktreeMeta))
    session = index_of(after, lambda e: isinstance(e, SaveSession))
    started = index_of(after, lambda e: isinstance(e, LogEvent)
                       and e.event_type == "workflow_started")
    command = index_of(after, lambda e: isinstance(e, RunCommand))
    assert 0 < meta < session < started < command
    doc = metas(d)[0]
    assert (doc["status"], doc["resumable"], doc["path"], doc["branch"]) == \
        ("in_progress", True, PATH, BRANCH)
    assert doc["stats"]["last_commit_sha"] == HEAD
    step = d.pending(RunCommand)
    assert step.argv[-1] == "echo one" and step.cwd == PATH
    fields = d.logs("workflow_started")[0]
    assert (fields["worktree_path"], fields["branch"], fields["original_branch"]) == \
        (PATH, BRANCH, "feature")
    assert d.state.phase == "steps"


def test_an_existing_worktree_is_used() -> None:
    d = start(named=True, reuse=True)
    created(d, created=False)
    assert f"Using worktree at: {PATH}" in d.printed
    assert "Created worktree at" not in d.printed


def test_uncommitted_changes_in_the_users_checkout_warn_w4001() -> None:
    d = start()
    created(d, dirty=("notes.txt", "src/x.py"))
    assert "warning[W4001]: uncommitted changes in your checkout are not part of this run " \
           "(2 path(s), e.g. notes.txt); it starts from commit aaaaaaaaaaaa" in d.printed


@pytest.mark.parametrize(("code", "exit_code"), [("E4006", 2), ("E4001", 2), ("E4002", 2),
                                                 ("E4003", 1)])
def test_worktree_failed_finishes_without_steps(code: str, exit_code: int) -> None:
    d = start()
    effect = d.pending(CreateWorktree)
    d.send(WorktreeFailed(command_id=effect.command_id, code=code, message="it is gone"))
    assert f"error[{code}]: it is gone" in d.printed
    assert d.finish.exit_code == exit_code
    assert d.finish.outcome["error_code"] == code
    assert d.finish.outcome["status"] == "failed"
    assert not d.of(RunCommand) and not d.of(InspectMerge)


def test_the_worktree_phase_rejects_other_events() -> None:
    d = start()
    with pytest.raises(InvalidTransition):
        d.send(WorktreeCreated(command_id=99, path=PATH, branch=BRANCH))
    with pytest.raises(InvalidTransition):
        d.send(MergeFailed(command_id=1, code="E4005", message="x"))


@pytest.mark.parametrize(("signal", "exit_code", "kind"),
                         [("SIGINT", 130, "user_interrupt"), ("SIGTERM", 143, "termination")])
def test_cancel_during_the_worktree_phase_interrupts_after_the_answer(
        signal: str, exit_code: int, kind: str) -> None:
    d = start()
    assert d.send(CancelRequested(signal=signal, at="t1")) == ()
    assert not d.finished
    created(d)
    assert d.finish.exit_code == exit_code
    assert d.finish.outcome["status"] == "interrupted"
    assert not d.of(RunCommand) and not d.of(InspectMerge)
    assert d.logs("workflow_interrupted")
    assert [m["status"] for m in metas(d)] == ["in_progress", "interrupted"]
    assert metas(d)[-1]["interruption_type"] == kind
    assert d.checkpoints[-1]["execution_state"]["status"] == "Interrupted"
    assert f"The worktree is kept at {PATH}" in d.printed


def test_cancel_then_worktree_failed_is_the_failure() -> None:
    d = start()
    d.send(CancelRequested(signal="SIGINT", at="t1"))
    effect = d.pending(CreateWorktree)
    d.send(WorktreeFailed(command_id=effect.command_id, code="E4006", message="gone"))
    assert d.finish.exit_code == 2


# --- steps, then the merge ----------------------------------------------------------------


def test_a_failed_step_keeps_the_worktree_and_does_not_merge() -> None:
    d = start()
    created(d)
    d.finish_command(3)
    assert d.finish.exit_code == 1
    assert [m["status"] for m in metas(d)] == ["in_progress", "failed"]
    assert metas(d)[-1]["resumable"] is True
    assert f"The worktree is kept at {PATH}" in d.printed
    assert not d.of(InspectMerge) and not d.of(MergeBranch)
    merge = d.finish.outcome["merge"]
    assert (merge["target"], merge["merged"]) == (None, False)  # type: ignore[index]


def test_completion_runs_the_merge_before_finish() -> None:
    d = start()
    created(d)
    d.finish_command(0)
    after = d.finish_command(0)
    completed = index_of(after, lambda e: isinstance(e, LogEvent)
                         and e.event_type == "workflow_completed")
    inspect = index_of(after, lambda e: isinstance(e, InspectMerge))
    assert completed < inspect
    assert not any(isinstance(e, Finish) for e in after)
    # the session stays Running while the merge is not over
    assert all(s.session["status"] == "Running" for s in d.of(SaveSession))  # type: ignore[index]
    assert d.checkpoints[-1]["execution_state"]["status"] == "Completed"
    assert d.state.phase == "merge"
    merged_through(d)
    tail = d.batches[-1]
    assert [type(e).__name__ for e in tail[-3:]] == ["LogEvent", "SaveSession", "Finish"]
    assert d.logs("merge_finished") == [{
        "event_type": "merge_finished", "merged": True, "target": "feature", "reason": None,
        "error_code": None, "session_id": NAME}]
    session = d.of(SaveSession)[-1].session
    assert session["status"] == "Completed"
    assert session["merge"] == {"target": "feature", "merged": True, "reason": None}
    assert d.finish.exit_code == 0
    assert d.finish.outcome["merge"] == {"target": "feature", "merged": True, "reason": None}
    assert d.finish.outcome["status"] == "completed"
    kinds = [type(e).__name__ for e in d.effects if isinstance(
        e, CreateWorktree | RunCommand | InspectMerge | MergeBranch | RemoveWorktree | Finish)]
    assert kinds == ["CreateWorktree", "RunCommand", "RunCommand", "InspectMerge",
                     "MergeBranch", "RemoveWorktree", "Finish"]
    assert [m["status"] for m in metas(d)] == ["in_progress", "merged"]


def test_the_merge_prompt_without_yes() -> None:
    d = start(auto_yes=False)
    created(d)
    d.finish_command(0)
    d.finish_command(0)
    inspect = d.pending(InspectMerge)
    d.send(MergeInspected(command_id=inspect.command_id, target="feature", ahead=3))
    ask = d.pending(AskUser)
    assert ask.question == f"Merge {NAME} to feature [Y/n]: "
    d.send(UserAnswered(command_id=ask.command_id, answer="n"))
    assert d.finish.exit_code == 0
    assert d.finish.outcome["merge"] == {"target": "feature", "merged": False,
                                         "reason": "declined"}
    assert not d.of(MergeBranch)


@pytest.mark.parametrize(("answer", "code"), [
    (lambda cid: MergeFailed(command_id=cid, code="E4005", message="refused"), "E4005"),
    (lambda cid: MergeConflicted(command_id=cid, paths=("a",), merge_dir="/home/u/repo",
                                 pre="b" * 40), "E4004"),
], ids=["refused", "conflict"])
def test_a_failed_merge_exits_1(answer: Any, code: str) -> None:
    d = start()
    created(d)
    d.finish_command(0)
    d.finish_command(0)
    inspect = d.pending(InspectMerge)
    d.send(MergeInspected(command_id=inspect.command_id, target="feature", ahead=1))
    d.send(answer(d.pending(MergeBranch).command_id))
    assert d.finish.exit_code == 1
    assert d.finish.outcome["error_code"] == code
    assert d.finish.outcome["merge"]["merged"] is False  # type: ignore[index]
    assert d.finish.outcome["status"] == "completed"
    assert not d.of(RemoveWorktree)


def test_cancel_during_the_merge_prompt() -> None:
    d = start(auto_yes=False)
    created(d)
    d.finish_command(0)
    d.finish_command(0)
    inspect = d.pending(InspectMerge)
    d.send(MergeInspected(command_id=inspect.command_id, target="feature", ahead=1))
    ask = d.pending(AskUser)
    assert d.send(CancelRequested(signal="SIGINT", at="t")) == (CancelCommands(),)
    assert d.send(CancelRequested(signal="SIGINT", at="t")) == ()
    d.send(UserAnswered(command_id=ask.command_id, answer=None))
    assert d.finish.exit_code == 130
    # not merged, and not "declined": the question was never answered
    assert d.finish.outcome["merge"] == {  # type: ignore[index]
        "target": "feature", "merged": False, "reason": None}
    assert not [e for e in d.effects if isinstance(e, MergeBranch)]


def test_cancel_while_the_merge_is_inspected_never_merges_even_with_yes() -> None:
    d = start(auto_yes=True)
    created(d)
    d.finish_command(0)
    d.finish_command(0)
    inspect = d.pending(InspectMerge)
    assert d.send(CancelRequested(signal="SIGTERM", at="t")) == (CancelCommands(),)
    d.send(MergeInspected(command_id=inspect.command_id, target="feature", ahead=1))
    assert d.finish.exit_code == 143
    assert not [e for e in d.effects if isinstance(e, MergeBranch | AskUser)]
    assert any("skipped: the run was interrupted" in e.text for e in d.effects
               if isinstance(e, Print))


# --- resume --------------------------------------------------------------------------------


def completed_checkpoint() -> dict[str, Any]:
    d = start()
    created(d)
    d.finish_command(0)
    d.finish_command(0)
    checkpoint = d.checkpoints[-1]
    assert checkpoint["execution_state"]["status"] == "Completed"
    return checkpoint


def test_resume_of_a_completed_run_goes_straight_to_the_merge() -> None:
    checkpoint = completed_checkpoint()
    d = Driver(run_machine.resume(WF, ctx(), checkpoint))
    assert [e.mode for e in d.effects if isinstance(e, CreateWorktree)] == ["resume"]
    assert len(d.effects) == 1
    created(d, created=False)
    assert "Created worktree at" not in d.printed and "Using worktree at" not in d.printed
    assert d.logs("workflow_resumed")
    assert not d.of(RunCommand)
    d.pending(InspectMerge)
    merged_through(d)
    assert d.finish.exit_code == 0
    assert d.finish.outcome["merge"]["merged"] is True  # type: ignore[index]


def test_resume_of_a_recreated_worktree_says_so() -> None:
    d = Driver(run_machine.resume(WF, ctx(), completed_checkpoint()))
    created(d, created=False, recreated=True)
    assert f"Created worktree at: {PATH}" in d.printed
    assert d.logs("worktree_created")[0]["recreated"] is True


def test_resume_of_a_failed_run_runs_the_steps_again_then_merges() -> None:
    d = start()
    created(d)
    d.finish_command(0)
    d.finish_command(1)
    checkpoint = d.checkpoints[-1]
    assert checkpoint["execution_state"]["status"] == "Failed"
    r = Driver(run_machine.resume(WF, ctx(), checkpoint))
    created(r, created=False)
    assert r.pending(RunCommand).argv[-1] == "echo two"
    r.finish_command(0)
    merged_through(r)
    assert r.finish.exit_code == 0


def test_resume_when_the_worktree_is_gone_fails_with_exit_2() -> None:
    d = Driver(run_machine.resume(WF, ctx(), completed_checkpoint()))
    effect = d.pending(CreateWorktree)
    d.send(WorktreeFailed(command_id=effect.command_id, code="E4006",
                          message="worktree and branch are gone"))
    assert d.finish.exit_code == 2
    assert not d.of(InspectMerge)


def test_no_worktree_summary_merge_field() -> None:
    d = Driver(run_machine.start(WF, make_ctx()))
    d.run()
    assert d.finish.outcome["merge"] == {"target": None, "merged": False,
                                         "reason": "no_worktree"}
    assert not d.of(SaveWorktreeMeta) and not d.of(CreateWorktree)
