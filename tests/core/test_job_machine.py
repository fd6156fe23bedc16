"""Layer 1: the MapReduce job machine, table-driven (spec 05 §3–§16), no I/O.

Events are fed by hand through ``JobDriver``: the session worktree, the item list, agent
worktrees, commands, releases, merges and timers; then the final merge (``-y``, nothing
ahead).  The last part pins down interruption, timers and crash/resume behaviour.
"""

from __future__ import annotations

from typing import Any

import attrs
import pytest

from prodigy_core import job_machine
from prodigy_core.effects import CancelCommands, LogEvent, RunCommand, Sleep
from prodigy_core.events import CancelRequested
from prodigy_core.job_ops import (
    FinishAgent,
    ForgetDLQ,
    LoadWorkItems,
    RecordDLQ,
    SaveJobFile,
    SaveJobState,
)
from prodigy_core.model import ErrorPolicy, ItemRetry, RetrySpec
from prodigy_core.problems import InvalidTransition
from prodigy_core.worktree_ops import CreateWorktree, InspectMerge, MergeBranch
from tests.core._job_driver import CONFIG, JOB, PATH, JobDriver, item_of, mapreduce
from tests.core._machine_driver import command_text, shell

ECHO = (shell("echo ${item}"),)
STOP = ErrorPolicy(on_item_failure="stop")


def agents_created(d: JobDriver) -> list[int]:
    return [item_of(e.path) for e in d.of(CreateWorktree) if e.mode == "agent"]


def dlq(d: JobDriver) -> dict[str, Any]:
    return {e.item_id: e.failure["error_type"] for e in d.of(RecordDLQ)}


def statuses(d: JobDriver) -> dict[int, str]:
    assert d.state is not None
    return dict(d.state.item_state)


def last_doc(d: JobDriver) -> dict[str, Any]:
    return d.of(SaveJobState)[-1].doc  # type: ignore[no-any-return]


# --- the main paths -----------------------------------------------------------------------

CASES: list[tuple[str, dict[str, Any], dict[str, Any], int, dict[int, str], dict[str, Any]]] = [
    ("all succeed, nothing committed", {}, {}, 0,
     {0: "succeeded", 1: "succeeded", 2: "succeeded"}, {}),
    ("all succeed and are merged", {}, {"commits": True}, 0,
     {0: "succeeded", 1: "succeeded", 2: "succeeded"}, {}),
    ("one command fails", {}, {"exits": {"echo 1": 3}}, 3,
     {0: "succeeded", 1: "failed", 2: "succeeded"},
     {"item_1": {"CommandFailed": {"exit_code": 3}}}),
    ("one merge conflicts", {}, {"commits": True, "merges": {1: "conflicted"}}, 3,
     {0: "succeeded", 1: "failed", 2: "succeeded"}, {"item_1": "MergeConflict"}),
    ("one merge fails", {}, {"commits": True, "merges": {2: "failed"}}, 3,
     {0: "succeeded", 1: "succeeded", 2: "failed"}, {"item_2": "WorktreeError"}),
    ("skip: failed, no DLQ entry", {"error_policy": ErrorPolicy(on_item_failure="skip")},
     {"exits": {"echo 0": 3}}, 3, {0: "failed", 1: "succeeded", 2: "succeeded"}, {}),
    ("stop: the rest stays pending", {"error_policy": STOP, "max_parallel": 1},
     {"exits": {"echo 0": 1}}, 1, {0: "failed", 1: "pending", 2: "pending"},
     {"item_0": {"CommandFailed": {"exit_code": 1}}}),
    ("max_failures: 1", {"error_policy": ErrorPolicy(max_failures=1), "max_parallel": 1},
     {"exits": {"echo 1": 2}}, 1, {0: "succeeded", 1: "failed", 2: "pending"},
     {"item_1": {"CommandFailed": {"exit_code": 2}}}),
    ("retry: fails for good after max_attempts",
     {"error_policy": ErrorPolicy(on_item_failure="retry",
                                  retry_config=ItemRetry(max_attempts=2))},
     {"exits": {"echo 2": 4}}, 3, {0: "succeeded", 1: "succeeded", 2: "failed"},
     {"item_2": {"CommandFailed": {"exit_code": 4}}}),
]


@pytest.mark.parametrize(("name", "wf", "run", "code", "final", "entries"), CASES,
                         ids=[c[0] for c in CASES])
def test_main_paths(name: str, wf: dict[str, Any], run: dict[str, Any], code: int,
                    final: dict[int, str], entries: dict[str, Any]) -> None:
    d = JobDriver(mapreduce(ECHO, **wf))
    finish = d.run([0, 1, 2], **run)
    assert finish.exit_code == code
    assert statuses(d) == final
    assert dlq(d) == entries
    assert d.state is not None and d.state.max_in_use <= wf.get("max_parallel", 2)
    completed = sorted(e["item_id"] for e in d.logs("agent_completed"))
    assert completed == [f"item_{i}" for i, s in final.items() if s == "succeeded"]
    if code != 1:
        assert "Map phase completed" in d.printed
        assert d.of(InspectMerge)  # the final merge ran


def test_agent_worktrees_use_the_repository_lock_but_merges_into_the_session_do_not(
        ) -> None:
    """Creating and releasing agent worktrees touches ``.git/worktrees`` (serialised by
    the repository lock); merging an agent branch changes only the job's own session
    worktree and branch, so it does not wait behind other agents' worktree operations
    (docs/decisions.md, "Performance")."""
    config = attrs.evolve(CONFIG, repo_lock="/store/resume_locks/git-repo.lock")
    d = JobDriver(mapreduce(ECHO, max_parallel=2), config=config)
    d.run([0, 1, 2], commits=True)
    creates = [e for e in d.of(CreateWorktree) if e.mode == "agent"]
    assert len(creates) == 3 and all(e.lock_path == config.repo_lock for e in creates)
    assert all(e.lock_path == config.repo_lock for e in d.of(FinishAgent))
    merges = d.of(MergeBranch)
    assert [item_of(e.source) for e in merges] == [0, 1, 2]
    assert all(e.into_worktree == PATH and e.lock_path == "" for e in merges)


def test_item_files_are_copies_not_synced_and_map_results_are_synced() -> None:
    d = JobDriver(mapreduce(ECHO, max_parallel=2, reduce=(shell("echo done"),)))
    d.run([0, 1, 2], commits=True)
    files = {e.name: e.durable for e in d.of(SaveJobFile)}
    assert files["items/item_0.json"] is False and files["items/item_2.json"] is False
    assert files["map-results.json"] is True


def test_all_succeed_in_item_order_with_max_parallel_agents() -> None:
    d = JobDriver(mapreduce(ECHO, max_parallel=2))
    d.session_created()
    d.items_loaded([0, 1, 2])
    assert agents_created(d) == [0, 1]  # two at once, in item order
    d.run(commits=True)
    assert agents_created(d) == [0, 1, 2]
    assert [command_text(e) for e in d.of(RunCommand)] == ["echo 0", "echo 1", "echo 2"]
    assert [item_of(e.source) for e in d.of(MergeBranch)] == [0, 1, 2]
    assert all(e.into_worktree == PATH for e in d.of(MergeBranch))
    assert d.finish.exit_code == 0
    outcome: Any = d.finish.outcome
    assert outcome["items"] == {"total": 3, "successful": 3, "failed": 0, "pending": 0}
    assert last_doc(d)["status"] == "completed"


def test_a_failed_command_is_recorded_in_the_dlq() -> None:
    d = JobDriver(mapreduce((shell("echo ${item}"), shell("never ${item}"))))
    d.run([0, 1], exits={"echo 1": 3})
    assert "never 1" not in [command_text(e) for e in d.of(RunCommand)]  # no further step
    (entry,) = d.of(RecordDLQ)
    assert entry.item_id == "item_1" and entry.item_data == 1
    assert entry.failure["error_type"] == {"CommandFailed": {"exit_code": 3}}
    assert entry.failure["exit_code"] == 3 and entry.failure["step_index"] == 0
    assert entry.worktree_artifacts is None and not entry.manual_review_required
    (failed,) = d.logs("agent_failed")
    assert failed["retry_eligible"] is False
    assert failed["result"]["status"] == {"Failed": failed["error"]}
    assert d.finish.exit_code == 3
    assert "1 failed items are in the DLQ" in d.printed


def test_a_merge_conflict_keeps_the_branch_in_the_dlq() -> None:
    d = JobDriver(mapreduce(ECHO))
    d.run([0, 1], commits=True, merges={1: "conflicted"})
    (entry,) = d.of(RecordDLQ)
    branch = f"prodigy-mapreduce-agent-{JOB}_agent_1"
    assert entry.failure["error_type"] == "MergeConflict"
    assert entry.failure["conflicting_files"] == ["a.py", "b.py"]
    assert entry.failure["step_failed"] == "merge"
    artifacts: Any = entry.worktree_artifacts
    assert artifacts["branch_name"] == branch
    (conflict,) = d.logs("merge_conflict")
    assert conflict["source_branch"] == branch
    (failed,) = d.logs("agent_failed")
    assert failed["error"] == "merge conflict in: a.py, b.py"


def test_stop_policy_leaves_the_other_items_pending() -> None:
    d = JobDriver(mapreduce(ECHO, max_parallel=1, error_policy=STOP,
                            reduce=(shell("summary"),)))
    finish = d.run(list(range(10)), exits={"echo 0": 1})
    assert agents_created(d) == [0]
    assert finish.exit_code == 1
    assert d.state is not None and d.state.error_code == "E6008"
    assert "map phase stopped" in (d.state.error or "")
    assert "summary" not in [command_text(e) for e in d.of(RunCommand)]  # no reduce
    assert not d.of(InspectMerge)  # no merge prompt
    doc = last_doc(d)
    assert doc["status"] == "stopped"
    assert doc["pending_items"] == [f"item_{i}" for i in range(1, 10)]


def test_agent_timeout_cancels_that_agents_command() -> None:
    d = JobDriver(mapreduce(ECHO, max_parallel=2, agent_timeout_secs=5))
    d.session_created()
    d.items_loaded([0, 1])
    sleeps = d.waiting(Sleep)
    assert [s.seconds for s in sleeps] == [5, 5]
    for create in d.waiting(CreateWorktree):
        d.agent_created(create)
    first, second = d.waiting(RunCommand)
    effects = d.timer(sleeps[0])
    assert CancelCommands(command_ids=(first.command_id,)) in effects
    d.command(first, 143, cancelled=True)
    d.command(second, 0)
    d.run()
    assert dlq(d) == {"item_0": "Timeout"}
    (entry,) = d.of(RecordDLQ)
    assert entry.failure["error_message"] == "Agent timed out after 5 seconds"
    assert not entry.manual_review_required  # reprocess eligible
    (failed,) = d.logs("agent_failed")
    assert failed["result"]["status"] == "Timeout"
    assert statuses(d) == {0: "failed", 1: "succeeded"}
    assert d.finish.exit_code == 3


def test_a_timed_out_agent_does_not_retry_its_step() -> None:
    d = JobDriver(mapreduce((shell("slow ${item}", retry=RetrySpec(attempts=3)),),
                            max_parallel=1, agent_timeout_secs=5))
    d.session_created()
    d.items_loaded([0])
    d.agent_created(d.one(CreateWorktree))
    command = d.one(RunCommand)
    d.timer(d.one(Sleep))
    effects = d.command(command, 143, cancelled=True)
    assert not [e for e in effects if isinstance(e, RunCommand | Sleep)]
    d.run()
    assert dlq(d) == {"item_0": "Timeout"}


def test_zero_items_skip_map_and_reduce() -> None:
    d = JobDriver(mapreduce(ECHO, reduce=(shell("summary"),)))
    finish = d.run([])
    assert "No work items to process" in d.printed
    assert not agents_created(d)
    assert not d.of(RunCommand)
    assert finish.exit_code == 0
    assert d.of(InspectMerge)


def test_setup_failure_fails_the_job() -> None:
    d = JobDriver(mapreduce(ECHO, setup=(shell("make items"),)))
    finish = d.run(exits={"make items": 2})
    assert finish.exit_code == 1
    assert not d.of(LoadWorkItems)
    assert d.state is not None and d.state.status == "failed"
    assert "Setup phase failed" in (d.state.error or "")
    assert "Setup phase failed" in d.printed


def test_setup_runs_before_the_items_are_loaded() -> None:
    d = JobDriver(mapreduce(ECHO, setup=(shell("make items"),)))
    d.run([0])
    kinds = [type(e).__name__ for e in d.effects if isinstance(e, RunCommand | LoadWorkItems)]
    assert kinds == ["RunCommand", "LoadWorkItems", "RunCommand"]
    assert d.of(LoadWorkItems)[0].setup_base is not None


def test_reduce_sees_the_map_variables() -> None:
    d = JobDriver(mapreduce(ECHO, reduce=(
        shell("echo ${map.total} ${map.successful} ${map.failed}"),)))
    finish = d.run([0, 1, 2], exits={"echo 2": 1})
    assert command_text(d.of(RunCommand)[-1]) == "echo 3 2 1"
    assert "Reduce phase completed" in d.printed
    assert finish.exit_code == 3


def test_retry_runs_a_failed_item_again_as_a_new_attempt() -> None:
    policy = ErrorPolicy(on_item_failure="retry", retry_config=ItemRetry(max_attempts=3))
    d = JobDriver(mapreduce(ECHO, max_parallel=1, error_policy=policy))
    d.session_created()
    d.items_loaded(["x"])
    d.agent_created(d.one(CreateWorktree))
    d.command(d.one(RunCommand), 1)
    d.released(d.one(FinishAgent))
    assert not d.waiting(CreateWorktree)  # the retry delay first (spec 05 §10.4)
    d.timer(d.one(Sleep))
    create = d.one(CreateWorktree)
    assert create.path.endswith(f"{JOB}_agent_0_attempt_2")
    d.run()
    assert not d.of(RecordDLQ)
    assert [e.item_id for e in d.of(ForgetDLQ)] == ["item_0"]
    assert [e["retry_eligible"] for e in d.logs("agent_failed")] == [True]
    assert d.finish.exit_code == 0


# --- interruption, timers, crashes --------------------------------------------------------


def test_sigint_puts_running_agents_back_even_when_their_timers_report() -> None:
    """CancelCommands() cancels the agent timers too, and a cancelled Sleep still reports
    Slept: that must not turn the interrupted agents into timeouts."""
    d = JobDriver(mapreduce(ECHO, max_parallel=2, agent_timeout_secs=60))
    d.session_created()
    d.items_loaded([0, 1, 2])
    for create in d.waiting(CreateWorktree):
        d.agent_created(create)
    assert d.send(CancelRequested(signal="SIGINT")) == (CancelCommands(),)
    for sleep in d.waiting(Sleep):
        d.timer(sleep)
    for command in d.waiting(RunCommand):
        d.command(command, 143, cancelled=True)
    releases = d.waiting(FinishAgent)
    assert [r.discard for r in releases] == [True, True]
    for release in releases:
        d.released(release)
    assert d.finish.exit_code == 130
    assert not d.of(RecordDLQ) and not d.logs("agent_failed")
    assert statuses(d) == {0: "pending", 1: "pending", 2: "pending"}
    assert last_doc(d)["pending_items"] == ["item_0", "item_1", "item_2"]
    assert last_doc(d)["item_retry_counts"] == {"item_0": 0, "item_1": 0}


def test_a_command_that_ends_well_after_sigint_starts_no_next_step() -> None:
    d = JobDriver(mapreduce((shell("one ${item}"), shell("two ${item}")), max_parallel=1))
    d.session_created()
    d.items_loaded([0])
    d.agent_created(d.one(CreateWorktree))
    d.send(CancelRequested(signal="SIGTERM"))
    effects = d.command(d.one(RunCommand), 0)
    assert not [e for e in effects if isinstance(e, RunCommand)]
    d.released(d.one(FinishAgent), ("1" * 40,))
    assert not d.of(MergeBranch)
    assert d.finish.exit_code == 143
    assert statuses(d) == {0: "pending"}


@pytest.mark.parametrize("phase", ["setup", "reduce"])
def test_sigint_stops_a_setup_or_reduce_step_that_would_retry(phase: str) -> None:
    flaky = shell("flaky", retry=RetrySpec(attempts=3))
    d = JobDriver(mapreduce(ECHO, setup=(flaky,) if phase == "setup" else (),
                            reduce=(flaky,) if phase == "reduce" else ()))
    d.session_created()
    if phase == "reduce":
        d.items_loaded([0])
        d.agent_created(d.one(CreateWorktree))
        d.command(d.one(RunCommand))
        d.released(d.one(FinishAgent))
    command = d.one(RunCommand)
    assert command_text(command) == "flaky"
    assert d.send(CancelRequested(signal="SIGINT")) == (CancelCommands(),)
    effects = d.command(command, 143, cancelled=True)
    assert not [e for e in effects if isinstance(e, RunCommand | Sleep)]  # no retry
    assert d.finish.exit_code == 130
    assert d.state is not None and d.state.status == "interrupted"


def test_a_worktree_failure_after_sigint_is_no_item_failure() -> None:
    d = JobDriver(mapreduce(ECHO, max_parallel=1))
    d.session_created()
    d.items_loaded([0])
    d.send(CancelRequested(signal="SIGINT"))
    d.agent_creation_failed(d.one(CreateWorktree))
    assert d.finish.exit_code == 130
    assert statuses(d) == {0: "pending"}
    assert not d.of(RecordDLQ)


def test_the_agent_timeout_counts_from_worktree_creation() -> None:
    d = JobDriver(mapreduce(ECHO, max_parallel=1, agent_timeout_secs=5))
    d.session_created()
    d.items_loaded([0])
    d.timer(d.one(Sleep))  # the worktree is still being created
    effects = d.agent_created(d.one(CreateWorktree))
    assert not [e for e in effects if isinstance(e, RunCommand)]
    d.run()
    assert dlq(d) == {"item_0": "Timeout"}
    assert d.finish.exit_code == 3


def test_a_late_agent_timer_in_reduce_is_ignored() -> None:
    d = JobDriver(mapreduce(ECHO, max_parallel=1, agent_timeout_secs=60,
                            reduce=(shell("summary"),)))
    d.session_created()
    d.items_loaded([0])
    d.agent_created(d.one(CreateWorktree))
    d.command(d.one(RunCommand))
    d.released(d.one(FinishAgent))
    reduce = d.one(RunCommand)
    assert command_text(reduce) == "summary"
    assert d.timer(d.one(Sleep)) == ()
    d.command(reduce)
    d.run()
    assert d.finish.exit_code == 0


def test_a_late_agent_timer_during_the_final_merge_is_ignored() -> None:
    d = JobDriver(mapreduce(ECHO, max_parallel=1, agent_timeout_secs=60))
    d.session_created()
    d.items_loaded([0])
    d.agent_created(d.one(CreateWorktree))
    d.command(d.one(RunCommand))
    d.released(d.one(FinishAgent))
    assert d.waiting(InspectMerge)
    assert d.timer(d.one(Sleep)) == ()
    d.run()
    assert d.finish.exit_code == 0


def test_sigint_keeps_queued_merges_for_the_resumed_job() -> None:
    d = JobDriver(mapreduce(ECHO, max_parallel=2))
    d.session_created()
    d.items_loaded([0, 1])
    for create in d.waiting(CreateWorktree):
        d.agent_created(create)
    for command in d.waiting(RunCommand):
        d.command(command)
    for release in d.waiting(FinishAgent):
        d.released(release, ("1" * 40,))
    (merge,) = d.waiting(MergeBranch)  # item 1 waits behind item 0
    assert d.send(CancelRequested(signal="SIGINT")) == (CancelCommands(),)
    effects = d.merge(merge)  # the merge in progress finishes
    assert not [e for e in effects if isinstance(e, MergeBranch)]
    assert d.finish.exit_code == 130
    assert statuses(d) == {0: "succeeded", 1: "merging"}
    doc = last_doc(d)
    assert [m["item_id"] for m in doc["pending_merges"]] == ["item_1"]
    # resume-job merges it first and runs nothing again
    d.resume()
    d.session_created()
    assert [item_of(m.source) for m in d.waiting(MergeBranch)] == [1]
    d.run()
    assert agents_created(d) == [0, 1]
    assert statuses(d) == {0: "succeeded", 1: "succeeded"}
    assert d.finish.exit_code == 0


def test_sigint_while_the_items_load_stops_before_any_agent() -> None:
    d = JobDriver(mapreduce(ECHO))
    d.session_created()
    assert d.send(CancelRequested(signal="SIGINT")) == ()
    d.items_loaded([])
    assert d.finish.exit_code == 130
    assert not d.of(InspectMerge)
    assert d.state is not None and d.state.status == "interrupted"


def test_the_dlq_entry_is_written_before_the_final_failure_is_logged() -> None:
    d = JobDriver(mapreduce(ECHO))
    d.run([0], exits={"echo 0": 3})
    (batch,) = [b for b in d.batches if any(isinstance(e, RecordDLQ) for e in b)]
    kinds = [e.event_type if isinstance(e, LogEvent) else type(e).__name__ for e in batch]
    assert kinds.index("RecordDLQ") < kinds.index("agent_failed")


def test_a_completion_logged_before_a_crash_is_never_run_again() -> None:
    d = JobDriver(mapreduce(ECHO, max_parallel=1))
    d.session_created()
    d.items_loaded([0, 1])
    d.agent_created(d.one(CreateWorktree))
    d.command(d.one(RunCommand))
    batch = d.released(d.one(FinishAgent))
    assert isinstance(batch[0], LogEvent) and batch[0].event_type == "agent_completed"
    d.crash(1)  # agent_completed is in the journal, the checkpoint after it is not
    d.resume()
    d.session_created()
    assert [item_of(e.path) for e in d.waiting(CreateWorktree)] == [1]
    d.run()
    assert statuses(d) == {0: "succeeded", 1: "succeeded"}
    assert [e["item_id"] for e in d.logs("agent_completed")] == ["item_0", "item_1"]


def test_resume_continues_a_stopped_job_with_its_pending_items() -> None:
    d = JobDriver(mapreduce(ECHO, max_parallel=1, error_policy=STOP))
    d.run([0, 1, 2], exits={"echo 0": 1})
    assert d.finish.exit_code == 1
    d.resume()
    finish = d.run()
    assert agents_created(d) == [0, 1, 2]
    assert statuses(d) == {0: "failed", 1: "succeeded", 2: "succeeded"}
    assert finish.exit_code == 3
    assert "Completed: 0" in d.printed and "Failed: 1" in d.printed
    # the resumed run names what is left, not every item
    assert "Processing 3 items with 1 parallel agents" in d.printed
    assert "Processing 2 of 3 items with 1 parallel agents" in d.printed


def test_a_finished_job_receives_no_more_events() -> None:
    d = JobDriver(mapreduce(ECHO))
    d.run([0])
    assert d.state is not None
    with pytest.raises(InvalidTransition):
        job_machine.step(d.state, CancelRequested(signal="SIGINT"))
