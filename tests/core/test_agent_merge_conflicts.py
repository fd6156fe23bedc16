"""Layer 1: Claude conflict resolution of agent merges (spec 06 §6.1–§6.3, §11 #9–#10).

The job machine is driven by hand through ``JobDriver``, with a small model of git in the
session worktree: an item listed in ``conflicts`` conflicts when its branch is merged,
until a resolution of it was accepted (then merging it again merges nothing, as with git).
Claude calls, ``ConcludeMerge`` and the ``verify`` command answer as each test says.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs
import pytest

from prodigy_core import agent_merges as am
from prodigy_core import merge_machine as mm
from prodigy_core.effects import (
    CancelCommands,
    Effect,
    LogEvent,
    RunClaude,
    RunCommand,
    Sleep,
)
from prodigy_core.events import CancelRequested, ClaudeFinished, ClaudeLine
from prodigy_core.job_ops import FinishAgent, LoadWorkItems, RecordDLQ, SaveJobState
from prodigy_core.model import Workflow
from prodigy_core.support import runtime_gaps, uses_claude
from prodigy_core.worktree_ops import (
    BranchMerged,
    ConcludeMerge,
    CreateWorktree,
    InspectMerge,
    MergeBranch,
    MergeConcluded,
    MergeConflicted,
    RemoveWorktree,
    WorktreeRemoved,
)
from tests.core._job_driver import BRANCH, HEAD, PATH, SESSION, JobDriver, item_of
from tests.core._machine_driver import command_text
from tests.core._parse_helpers import load
from tests.core.test_merge_machine import CLAUDE_VERIFY, claude_conflict

RESOLVED = "e" * 40
MERGED = "d" * 40
PROMPT = ("/resolve ${merge.source_branch} into ${merge.target_branch} in ${merge.worktree} "
          "(${merge.session_id}): ${merge.conflicting_files}")
RESULT_LINE = ('{"type": "result", "subtype": "success", "is_error": false, '
               '"result": "resolved", "total_cost_usd": 0.25, "num_turns": 3, '
               '"session_id": "claude-1"}')


def job(*, verify: str | None = None, strategy: str = "claude",
        max_parallel: int = 2) -> Workflow:
    text = f"""
name: job
mode: mapreduce
map:
  input: items.json
  max_parallel: {max_parallel}
  agent_template:
    - shell: "echo ${{item}}"
merge_conflicts:
  strategy: {strategy}
  timeout: 10m
  claude: "{PROMPT}"
"""
    if verify is not None:
        text += f'  verify: "{verify}"\n'
    outcome = load(text)
    assert outcome.workflow is not None, outcome.problems
    assert not [p for p in outcome.problems if p.severity == "error"], outcome.problems
    return outcome.workflow


@attrs.define
class Git:
    """How the session worktree answers: which items conflict, what Claude does."""

    conflicts: set[int] = attrs.Factory(set)
    claude_ok: bool = True
    accept: bool = True
    reject_reason: str = "conflict markers remain in shared.txt"
    verify_exit: int = 0
    resolved: set[int] = attrs.Factory(set)
    busy_batches: list[tuple[Effect, ...]] = attrs.Factory(list)


def answer(d: JobDriver, git: Git, effect: Effect) -> tuple[Effect, ...]:
    """Answer one outstanding effect; record the batches after which a resolution owns
    the session worktree."""
    out: tuple[Effect, ...]
    if isinstance(effect, CreateWorktree):
        out = d.agent_created(effect) if effect.mode == "agent" else d.session_created()
    elif isinstance(effect, LoadWorkItems):
        out = d.items_loaded([0, 1, 2])
    elif isinstance(effect, RunCommand):
        code = git.verify_exit if command_text(effect) == "make test" else 0
        out = d.command(effect, code)
    elif isinstance(effect, FinishAgent):
        out = d.released(effect, ("1" * 40,))
    elif isinstance(effect, MergeBranch):
        index = item_of(effect.source)
        if index in git.conflicts and index not in git.resolved:
            out = d.send(MergeConflicted(command_id=effect.command_id, paths=("shared.txt",),
                                         merge_dir=PATH, pre=HEAD,
                                         aborted=not effect.keep_conflict))
        else:
            out = d.send(BranchMerged(command_id=effect.command_id,
                                      sha=RESOLVED if index in git.resolved else MERGED,
                                      merge_dir=PATH))
    elif isinstance(effect, RunClaude):
        out = ()
        if git.claude_ok:
            out += d.send(ClaudeLine(command_id=effect.command_id, line=RESULT_LINE))
        out += d.send(ClaudeFinished(command_id=effect.command_id,
                                     exit_code=0 if git.claude_ok else 1,
                                     transcript="/logs/resolve.jsonl"))
    elif isinstance(effect, ConcludeMerge):
        if effect.action == "accept" and git.accept:
            git.resolved.add(item_of(effect.source))
            out = d.send(MergeConcluded(command_id=effect.command_id, accepted=True,
                                        sha=RESOLVED))
        else:
            reason = git.reject_reason if effect.action == "accept" else "rolled back"
            git.resolved.discard(item_of(effect.source))
            out = d.send(MergeConcluded(command_id=effect.command_id, accepted=False,
                                        reason=reason))
    elif isinstance(effect, InspectMerge):
        out = d.final_merge()
    elif isinstance(effect, RemoveWorktree):
        out = d.send(WorktreeRemoved(command_id=effect.command_id))
    elif isinstance(effect, Sleep):
        out = d.timer(effect)
    else:
        raise AssertionError(f"unexpected effect {effect}")
    if d.state is not None and am.busy(d.state):
        git.busy_batches.append(out)
    return out


def drive(d: JobDriver, git: Git, until: Callable[[JobDriver], bool] | None = None,
          limit: int = 300) -> None:
    """Answer the oldest outstanding effect (timers last) until ``until`` or the end."""
    for _ in range(limit):
        if d.finished or (until is not None and until(d)):
            return
        waiting = [e for _, e in sorted(d.outstanding.items()) if not isinstance(e, Sleep)]
        assert waiting, f"nothing to answer: {d.outstanding}"
        answer(d, git, waiting[0])
    raise AssertionError("the job did not finish")


def statuses(d: JobDriver) -> dict[int, str]:
    assert d.state is not None
    return dict(d.state.item_state)


def dlq(d: JobDriver) -> dict[str, Any]:
    return {e.item_id: e.failure for e in d.of(RecordDLQ)}


def branch(d: JobDriver, index: int) -> str:
    return next(e.branch for e in d.of(CreateWorktree)
                if e.mode == "agent" and item_of(e.path) == index)


def journal(d: JobDriver) -> list[str]:
    return [r["event"]["event_type"] for r in d.journal()]


def nothing_started_or_saved_while_resolving(git: Git) -> None:
    """No agent branches off the session HEAD and no job state version is written
    while a resolution owns the session worktree."""
    for batch in git.busy_batches:
        for effect in batch:
            assert not (isinstance(effect, CreateWorktree) and effect.mode == "agent"), batch
            assert not isinstance(effect, SaveJobState), batch


# --- accepted -------------------------------------------------------------------------------


def test_an_accepted_resolution_merges_the_item_and_deletes_its_branch() -> None:
    git = Git(conflicts={1})
    d = JobDriver(job(max_parallel=1))
    drive(d, git)
    assert d.finish.exit_code == 0
    assert statuses(d) == {0: "succeeded", 1: "succeeded", 2: "succeeded"}
    assert dlq(d) == {}
    b1 = branch(d, 1)
    # every agent merge keeps its conflict for Claude, in the session worktree
    merges = d.of(MergeBranch)
    assert all(m.keep_conflict and m.into_worktree == PATH for m in merges)
    # item 1: the conflicted merge, then the same merge again after the resolution
    assert [item_of(m.source) for m in merges] == [0, 1, 1, 2]
    (call,) = d.of(RunClaude)
    assert call.cwd == PATH
    assert call.argv[1:3] == ("-p", f"/resolve {b1} into {BRANCH} in {SESSION} ({SESSION}): "
                                    f"shared.txt")
    (conclude,) = d.of(ConcludeMerge)
    assert (conclude.action, conclude.merge_dir, conclude.source, conclude.pre,
            conclude.conflicting, conclude.temp_path) == (
        "accept", PATH, b1, HEAD, ("shared.txt",), "")
    # journaled: the conflict (with PRE) before Claude, the resolution before the merge
    kinds = journal(d)
    assert kinds.count("merge_conflict") == 1 and kinds.count("merge_conflict_resolved") == 1
    (conflict,) = d.logs("merge_conflict")
    assert (conflict["strategy"], conflict["pre"], conflict["source_branch"],
            conflict["target_branch"], conflict["conflicting_files"]) == (
        "claude", HEAD, b1, BRANCH, ["shared.txt"])
    (resolved,) = d.logs("merge_conflict_resolved")
    assert (resolved["resolver"], resolved["json_log_location"], resolved["merge_commit"],
            resolved["agent_id"]) == ("claude", "/logs/resolve.jsonl", RESOLVED,
                                      conflict["agent_id"])
    merged = [e for e in d.logs("worktree_merged") if e["source_branch"] == b1]
    assert [e["merge_commit"] for e in merged] == [RESOLVED]
    assert kinds.index("merge_conflict_resolved") < kinds.index("worktree_merged", kinds.index(
        "merge_conflict_resolved"))
    # the resolving step is a step of the merge scope; its cost counts for the job
    steps = [e for e in d.logs("step_completed") if e.get("scope") == "merge"]
    assert [e["step_path"] for e in steps] == ["merge_conflicts.claude"]
    assert d.finish.outcome["cost_usd"] == pytest.approx(0.25)  # type: ignore[index]
    nothing_started_or_saved_while_resolving(git)
    assert git.busy_batches  # (the resolution did overlap the other agents)


def test_verify_runs_in_the_session_worktree_after_acceptance() -> None:
    git = Git(conflicts={0})
    d = JobDriver(job(verify="make test"))
    drive(d, git)
    assert d.finish.exit_code == 0
    (verify,) = [e for e in d.of(RunCommand) if command_text(e) == "make test"]
    assert verify.cwd == PATH
    kinds = journal(d)
    assert kinds.index("merge_conflict") < kinds.index("merge_conflict_resolved")
    steps = [e["step_path"] for e in d.logs("step_completed") if e.get("scope") == "merge"]
    assert steps == ["merge_conflicts.claude", "merge_conflicts.verify"]
    nothing_started_or_saved_while_resolving(git)


def test_the_abort_strategy_aborts_at_once() -> None:
    git = Git(conflicts={1})
    d = JobDriver(job(strategy="abort"))
    drive(d, git)
    assert not any(m.keep_conflict for m in d.of(MergeBranch))
    assert not d.of(RunClaude) and not d.of(ConcludeMerge)
    assert dlq(d)["item_1"]["error_type"] == "MergeConflict"
    assert [e["strategy"] for e in d.logs("merge_conflict")] == ["abort"]


# --- rejected: the item goes to the DLQ as MergeConflict --------------------------------


REJECTIONS = [
    ("markers left", Git(conflicts={1}, accept=False), None, ["accept"]),
    ("verify fails", Git(conflicts={1}, verify_exit=1), "make test", ["accept", "rollback"]),
    ("claude fails", Git(conflicts={1}, claude_ok=False), None, ["rollback"]),
]


@pytest.mark.parametrize(("name", "git", "verify", "actions"), REJECTIONS,
                         ids=[r[0] for r in REJECTIONS])
def test_a_rejected_resolution_sends_the_item_to_the_dlq(
        name: str, git: Git, verify: str | None, actions: list[str]) -> None:
    git = attrs.evolve(git)  # (a fresh copy per run)
    d = JobDriver(job(verify=verify))
    drive(d, git)
    assert d.finish.exit_code == 3
    assert statuses(d) == {0: "succeeded", 1: "failed", 2: "succeeded"}
    b1 = branch(d, 1)
    concludes = d.of(ConcludeMerge)
    assert [c.action for c in concludes] == actions
    assert all((c.merge_dir, c.pre, c.source) == (PATH, HEAD, b1) for c in concludes)
    # once merged, never merged again: the branch is kept for the DLQ entry
    assert [item_of(m.source) for m in d.of(MergeBranch)].count(1) == 1
    entry = dlq(d)["item_1"]
    assert entry["error_type"] == "MergeConflict"
    assert entry["conflicting_files"] == ["shared.txt"]
    (record,) = d.of(RecordDLQ)
    assert record.worktree_artifacts["branch_name"] == b1
    assert not d.logs("merge_conflict_resolved")
    assert [e["strategy"] for e in d.logs("merge_conflict")] == ["claude"]  # logged once
    (failed,) = [e for e in d.logs("agent_failed") if e["item_id"] == "item_1"]
    assert failed["error"] == "merge conflict in: shared.txt"
    assert "resolution" in d.printed
    nothing_started_or_saved_while_resolving(git)


# --- interruption and crashes ----------------------------------------------------------


def resolving(d: JobDriver) -> bool:
    return bool(d.waiting(RunClaude))


def test_sigint_during_the_resolution_rolls_back_and_keeps_the_merge_pending() -> None:
    git = Git(conflicts={0})
    d = JobDriver(job(max_parallel=1))
    drive(d, git, until=resolving)
    assert d.send(CancelRequested(signal="SIGINT")) == (CancelCommands(),)
    call = d.one(RunClaude)
    effects = d.send(ClaudeFinished(command_id=call.command_id, exit_code=130,
                                    cancelled=True))
    (rollback,) = [e for e in effects if isinstance(e, ConcludeMerge)]
    assert rollback.action == "rollback" and not d.finished
    drive(d, git)
    assert d.finish.exit_code == 130
    assert statuses(d)[0] == "merging" and dlq(d) == {}
    doc = d.of(SaveJobState)[-1].doc
    assert [m["item_id"] for m in doc["pending_merges"]][:1] == ["item_0"]
    # resume-job merges it again from the start: conflict, resolution, merge
    d.resume()
    drive(d, git)
    assert d.finish.exit_code == 0
    assert statuses(d) == {0: "succeeded", 1: "succeeded", 2: "succeeded"}
    assert [e["item_id"] for e in d.logs("agent_completed")].count("item_0") == 1


def test_sigint_while_the_resolution_is_checked_starts_no_verify() -> None:
    git = Git(conflicts={0})
    d = JobDriver(job(verify="make test", max_parallel=1))
    drive(d, git, until=lambda d: bool(d.waiting(ConcludeMerge)))
    d.send(CancelRequested(signal="SIGINT"))
    effects = answer(d, git, d.one(ConcludeMerge))  # accepted, but not verified
    (rollback,) = [e for e in effects if isinstance(e, ConcludeMerge)]
    assert rollback.action == "rollback"
    drive(d, git)
    assert not [e for e in d.of(RunCommand) if command_text(e) == "make test"]
    assert d.finish.exit_code == 130
    assert statuses(d)[0] == "merging" and not d.logs("merge_conflict_resolved")


def test_a_conflict_after_sigint_is_rolled_back_without_claude() -> None:
    git = Git(conflicts={0})
    d = JobDriver(job(max_parallel=1))
    drive(d, git, until=lambda d: bool(d.waiting(MergeBranch)))
    d.send(CancelRequested(signal="SIGINT"))
    effects = answer(d, git, d.one(MergeBranch))
    (rollback,) = [e for e in effects if isinstance(e, ConcludeMerge)]
    assert (rollback.action, rollback.pre) == ("rollback", HEAD)
    drive(d, git)
    assert not d.of(RunClaude)
    assert d.finish.exit_code == 130
    assert statuses(d)[0] == "merging" and dlq(d) == {}


def test_a_crash_during_the_resolution_restores_pre_before_anything_else() -> None:
    git = Git(conflicts={1})
    d = JobDriver(job(max_parallel=1))
    drive(d, git, until=resolving)
    d.crash(len(d.batches[-1]))  # killed while Claude works in the session worktree
    d.resume()
    d.session_created()
    (rollback,) = d.waiting(ConcludeMerge)
    assert (rollback.action, rollback.merge_dir, rollback.pre) == ("rollback", PATH, HEAD)
    # nothing merges or starts before the session worktree is back at PRE
    assert not d.waiting(MergeBranch) and not d.waiting(CreateWorktree)
    git.resolved.clear()
    drive(d, git)
    assert d.finish.exit_code == 0
    assert statuses(d) == {0: "succeeded", 1: "succeeded", 2: "succeeded"}
    # item 1 is resolved again and merged once
    assert len(d.logs("merge_conflict_resolved")) == 1
    b1 = branch(d, 1)
    assert len([e for e in d.logs("worktree_merged") if e["source_branch"] == b1]) == 1


@pytest.mark.parametrize("cut", [0, 1])
def test_a_crash_after_acceptance_merges_without_rolling_back(cut: int) -> None:
    git = Git(conflicts={1})
    d = JobDriver(job(max_parallel=1))
    drive(d, git, until=lambda d: bool(d.logs("merge_conflict_resolved")))
    batch = d.batches[-1]
    at = next(i for i, e in enumerate(batch)
              if isinstance(e, LogEvent) and e.event_type == "merge_conflict_resolved")
    d.crash(at + 1 + cut)  # the resolution is journaled; its merge may not have run
    d.resume()
    drive(d, git)
    assert d.finish.exit_code == 0
    assert not [c for c in d.of(ConcludeMerge) if c.action == "rollback"]
    assert statuses(d) == {0: "succeeded", 1: "succeeded", 2: "succeeded"}


def test_sigint_while_the_resumed_job_finds_its_worktree_still_restores_pre() -> None:
    git = Git(conflicts={1})
    d = JobDriver(job(max_parallel=1))
    drive(d, git, until=resolving)
    d.crash(len(d.batches[-1]))
    d.resume()
    assert d.send(CancelRequested(signal="SIGINT")) == (CancelCommands(),)
    d.session_created()
    (rollback,) = d.waiting(ConcludeMerge)
    assert not d.finished
    answer(d, git, rollback)
    assert d.finish.exit_code == 130
    # the next resume has nothing to restore: the rollback is done and saved
    d.resume()
    d.session_created()
    assert not d.waiting(ConcludeMerge)


def test_recovery_reads_the_unfinished_resolution_from_the_journal() -> None:
    def rec(event_type: str, **fields: Any) -> dict[str, Any]:
        return {"seq": 1, "event": {"event_type": event_type, **fields}}

    conflict = rec("merge_conflict", strategy="claude", agent_id="a1", item_index=1,
                   pre=HEAD, source_branch="b1")
    assert am.recovery([conflict]) == am.Unfinished(agent_id="a1", branch="b1",
                                                    item_index=1, pre=HEAD)
    assert am.recovery([conflict, rec("merge_conflict_resolved", agent_id="a1")]) is None
    assert am.recovery([conflict, rec("agent_failed", item_index=1)]) is None
    assert am.recovery([conflict, rec("agent_completed", item_index=2)]) is not None
    assert am.recovery([rec("merge_conflict", strategy="abort", agent_id="a1",
                            item_index=1, pre=HEAD)]) is None


def test_an_interrupted_final_merge_does_not_verify_either() -> None:
    d = claude_conflict(CLAUDE_VERIFY)
    d.claude()
    d.machine = mm.cancel(d.machine)
    d.concluded(accepted=True)
    assert d.pending(ConcludeMerge).action == "rollback"
    assert "interrupted before it was verified" in d.printed
    d.concluded(accepted=False)
    assert d.outcome.error_code == "E4004" and not d.of(RunCommand)


# --- the workflow is accepted -------------------------------------------------------------


def test_claude_resolution_of_agent_merges_is_no_runtime_gap() -> None:
    workflow = job(verify="make test")
    assert runtime_gaps(workflow) == ()
    assert uses_claude(workflow)  # the Claude CLI is checked before the job starts
