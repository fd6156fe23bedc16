"""Layer 1: the job circuit breaker, ``error_collection``, phase limits and
``setup.capture_outputs`` (spec 05 §4.2–§4.3, §10.5–§10.6, §12.3; spec 10 §3.4).

Events are fed by hand through ``JobDriver``; timers are ``Sleep`` effects answered with
``Slept`` when a test says so.  Nobody sleeps.
"""

from __future__ import annotations

from typing import Any

import attrs
import pytest
from pyrsistent import pmap

from prodigy_core.effects import CancelCommands, Print, RunCommand, Sleep
from prodigy_core.events import CancelRequested
from prodigy_core.job_capture import Miss, capture, extract, thaw
from prodigy_core.job_ops import FinishAgent, LoadWorkItems, SaveJobState
from prodigy_core.model import (
    CaptureOutputSpec,
    ErrorPolicy,
    ItemRetry,
    JobBreaker,
    MapSpec,
    RetrySpec,
    StepList,
    Workflow,
)
from prodigy_core.step_frames import Outcome
from prodigy_core.support import runtime_gaps
from prodigy_core.worktree_ops import CreateWorktree, MergeBranch
from tests.core._job_driver import JobDriver, item_of, mapreduce
from tests.core._machine_driver import command_text, shell

WORK = (shell("work ${item}"),)


def breaker(**cfg: Any) -> ErrorPolicy:
    return ErrorPolicy(circuit_breaker=JobBreaker(**cfg))


def started(d: JobDriver) -> list[int]:
    """Items whose agents were started, in order."""
    return [item_of(e.path) for e in d.of(CreateWorktree) if e.mode == "agent"]


def begin(d: JobDriver, *indexes: int) -> None:
    """The worktrees of these items' agents are made: their steps start."""
    for index in indexes:
        d.agent_created(d.one(CreateWorktree,
                              lambda e, i=index: e.mode == "agent" and item_of(e.path) == i))


def finish_agent(d: JobDriver, index: int, exit_code: int = 0, *,
                 commits: bool = False) -> None:
    """Item ``index``'s agent: worktree (unless made), its one command, release (and
    merge)."""
    if d.waiting(CreateWorktree, lambda e: e.mode == "agent" and item_of(e.path) == index):
        begin(d, index)
    d.command(d.one(RunCommand, lambda e: "_agent_" in e.cwd and item_of(e.cwd) == index),
              exit_code)
    d.released(d.one(FinishAgent, lambda e: item_of(e.path) == index),
               ("1" * 40,) if commits else ())
    if commits and exit_code == 0:
        d.merge(d.one(MergeBranch, lambda e: item_of(e.source) == index))


def changes(d: JobDriver) -> list[tuple[str, str]]:
    return [(e["from"], e["to"]) for e in d.logs("circuit_breaker_state_changed")]


def breaker_timer(d: JobDriver) -> Sleep:
    assert d.state is not None and d.state.dispatch_breaker.timer is not None
    timer: Sleep = d.one(Sleep, lambda e: e.command_id == d.state.dispatch_breaker.timer)
    return timer


# --- the job circuit breaker (spec 05 §10.5) -----------------------------------------------


def test_acceptance_20_two_failures_pause_dispatch_until_the_timer_fires() -> None:
    d = JobDriver(mapreduce(WORK, max_parallel=2,
                            error_policy=breaker(failure_threshold=2, timeout=3.0)))
    d.session_created()
    d.items_loaded(list(range(6)))
    assert started(d) == [0, 1]
    begin(d, 0, 1)
    finish_agent(d, 0, 1)
    assert started(d) == [0, 1, 2]  # one failure: still closed
    begin(d, 2)
    finish_agent(d, 1, 1)
    assert changes(d) == [("closed", "open")]
    assert "⏸ circuit breaker open: pausing new agents for 3s" in d.printed
    timer = breaker_timer(d)
    assert timer.seconds == 3.0
    # item 2 keeps running (never interrupted); nothing new starts while open
    assert not d.of(CancelCommands)
    finish_agent(d, 2, 0)
    assert started(d) == [0, 1, 2]
    assert d.state is not None and d.state.phase == "map" and not d.finished
    d.timer(timer)
    assert changes(d) == [("closed", "open"), ("open", "half_open")]
    assert started(d) == [0, 1, 2, 3, 4]  # half-open: up to 3 trials, max_parallel 2
    for index in (3, 4, 5):
        finish_agent(d, index, 0)
    assert changes(d)[-1] == ("half_open", "closed")
    assert d.run().exit_code == 3
    assert started(d) == [0, 1, 2, 3, 4, 5]
    record = d.logs("circuit_breaker_state_changed")[0]
    assert record["name"] == "job" and record["job_id"] == d.config.job_id


def test_an_agent_whose_worktree_arrives_after_the_breaker_opened_does_not_start() -> None:
    d = JobDriver(mapreduce(WORK, max_parallel=2,
                            error_policy=breaker(failure_threshold=1, timeout=3.0)))
    d.session_created()
    d.items_loaded([0, 1, 2])
    assert started(d) == [0, 1]
    finish_agent(d, 0, 1)  # opens the breaker; item 1's worktree is still being made
    assert changes(d) == [("closed", "open")]
    create = d.one(CreateWorktree, lambda e: e.mode == "agent" and item_of(e.path) == 1)
    d.agent_created(create)
    assert not d.waiting(RunCommand, lambda e: e.cwd == create.path)  # no step starts
    release = d.one(FinishAgent, lambda e: e.path == create.path)
    assert release.discard
    d.released(release)
    assert d.state is not None and d.state.item_state.get(1) == "pending"
    d.timer(breaker_timer(d))
    assert started(d) == [0, 1, 1, 2]  # item 1 runs again once the breaker half-opens
    assert d.run().exit_code == 3
    assert [e["item_id"] for e in d.logs("agent_completed")] == ["item_1", "item_2"]


def test_a_success_resets_the_consecutive_failure_count() -> None:
    d = JobDriver(mapreduce(WORK, max_parallel=1, error_policy=breaker(failure_threshold=2)))
    d.session_created()
    d.items_loaded(list(range(5)))
    for index, code in enumerate((1, 0, 1, 0, 1)):
        finish_agent(d, index, code)
    assert changes(d) == []
    assert d.run().exit_code == 3


def test_a_failure_while_half_open_opens_it_again() -> None:
    d = JobDriver(mapreduce(WORK, max_parallel=1,
                            error_policy=breaker(failure_threshold=1, timeout=10.0)))
    d.session_created()
    d.items_loaded([0, 1, 2])
    finish_agent(d, 0, 1)
    first = breaker_timer(d)
    d.timer(first)
    finish_agent(d, 1, 1)  # the trial fails
    assert changes(d) == [("closed", "open"), ("open", "half_open"), ("half_open", "open")]
    second = breaker_timer(d)
    assert second.command_id != first.command_id and second.seconds == 10.0
    assert started(d) == [0, 1]
    d.timer(second)
    finish_agent(d, 2, 0)
    assert d.run().exit_code == 3


def test_half_open_runs_at_most_half_open_requests_trials_at_once() -> None:
    policy = breaker(failure_threshold=1, success_threshold=2, half_open_requests=1)
    d = JobDriver(mapreduce(WORK, max_parallel=4, error_policy=policy))
    d.session_created()
    d.items_loaded(list(range(6)))
    assert started(d) == [0, 1, 2, 3]
    begin(d, 0, 1, 2, 3)
    finish_agent(d, 0, 1)  # opens; 1, 2, 3 keep running
    for index in (1, 2, 3):
        finish_agent(d, index, 0)  # results while open change nothing
    assert changes(d) == [("closed", "open")]
    d.timer(breaker_timer(d))
    assert started(d) == [0, 1, 2, 3, 4]  # one trial, although 4 slots are free
    finish_agent(d, 4, 0)  # one success of two: still half-open, the next trial starts
    assert changes(d)[-1] == ("open", "half_open")
    assert started(d) == [0, 1, 2, 3, 4, 5]
    finish_agent(d, 5, 0)
    assert changes(d)[-1] == ("half_open", "closed")
    assert d.run().exit_code == 3


def test_trials_wait_for_the_merge_of_their_item() -> None:
    policy = breaker(failure_threshold=1, success_threshold=1, half_open_requests=1)
    d = JobDriver(mapreduce(WORK, max_parallel=2, error_policy=policy))
    d.session_created()
    d.items_loaded([0, 1, 2])
    begin(d, 0, 1)
    finish_agent(d, 0, 1)
    finish_agent(d, 1, 0)
    d.timer(breaker_timer(d))
    assert started(d) == [0, 1, 2]
    assert d.run(commits=True).exit_code == 3
    assert changes(d)[-1] == ("half_open", "closed")


def test_every_failed_attempt_counts_also_one_that_is_retried() -> None:
    policy = ErrorPolicy(on_item_failure="retry",
                         retry_config=ItemRetry(max_attempts=2, initial_delay=0.0),
                         circuit_breaker=JobBreaker(failure_threshold=2, timeout=5.0))
    d = JobDriver(mapreduce(WORK, max_parallel=1, error_policy=policy))
    d.session_created()
    d.items_loaded([0, 1])
    finish_agent(d, 0, 1)  # attempt 1 fails; retried at once
    create = d.one(CreateWorktree, lambda e: e.mode == "agent")
    assert create.path.endswith("_attempt_2")
    d.agent_created(create)
    d.command(d.one(RunCommand), 1)
    d.released(d.one(FinishAgent))
    assert changes(d) == [("closed", "open")]
    assert not d.waiting(CreateWorktree)
    d.timer(breaker_timer(d))
    assert d.run().exit_code == 3


def test_an_interrupted_trial_is_no_result() -> None:
    d = JobDriver(mapreduce(WORK, max_parallel=1, error_policy=breaker(failure_threshold=1)))
    d.session_created()
    d.items_loaded([0, 1])
    finish_agent(d, 0, 1)
    d.timer(breaker_timer(d))
    assert d.state is not None and d.state.dispatch_breaker.trials == {1}
    create = d.one(CreateWorktree)
    d.agent_created(create)
    d.send(CancelRequested(signal="SIGINT"))
    d.command(d.one(RunCommand), 143, cancelled=True)
    d.released(d.one(FinishAgent))
    assert d.finish.exit_code == 130
    assert d.state.dispatch_breaker.trials == frozenset()
    assert changes(d) == [("closed", "open"), ("open", "half_open")]


def test_cancel_while_open_stops_at_once() -> None:
    d = JobDriver(mapreduce(WORK, max_parallel=1, error_policy=breaker(failure_threshold=1)))
    d.session_created()
    d.items_loaded([0, 1])
    finish_agent(d, 0, 1)
    breaker_timer(d)
    d.send(CancelRequested(signal="SIGINT"))
    assert d.finish.exit_code == 130
    assert d.state is not None and dict(d.state.item_state) == {0: "failed", 1: "pending"}


def test_the_open_period_ending_after_the_map_phase_means_nothing() -> None:
    d = JobDriver(mapreduce(WORK, max_parallel=2, reduce=(shell("summary"),),
                            error_policy=breaker(failure_threshold=2)))
    d.session_created()
    d.items_loaded([0, 1])
    finish_agent(d, 0, 1)
    finish_agent(d, 1, 1)  # opens; nothing is pending: the map phase is over
    timer = breaker_timer(d)
    assert CancelCommands(command_ids=(timer.command_id,)) in d.effects
    assert d.state is not None and d.state.phase == "reduce"
    assert d.timer(timer) == ()
    assert d.run().exit_code == 3
    assert command_text(d.of(RunCommand)[-1]) == "summary"


def test_no_open_period_once_the_map_phase_stops() -> None:
    policy = ErrorPolicy(on_item_failure="stop", circuit_breaker=JobBreaker(failure_threshold=1))
    d = JobDriver(mapreduce(WORK, max_parallel=1, error_policy=policy))
    d.session_created()
    d.items_loaded([0, 1])
    finish_agent(d, 0, 1)
    assert changes(d) == [("closed", "open")]
    assert not d.of(Sleep)
    assert d.finish.exit_code == 1


def test_a_resumed_job_starts_with_the_breaker_closed() -> None:
    d = JobDriver(mapreduce(WORK, max_parallel=1, error_policy=breaker(failure_threshold=1)))
    d.session_created()
    d.items_loaded([0, 1, 2])
    finish_agent(d, 0, 1)
    breaker_timer(d)
    d.crash(len(d.batches[-1]))
    d.resume()
    d.session_created()
    assert d.state is not None and d.state.dispatch_breaker.status == "closed"
    assert started(d)[-1] == 1  # dispatch at once
    assert d.run().exit_code == 3


# --- error_collection (spec 05 §10.6) ------------------------------------------------------


def collecting(mode: str, **policy: Any) -> JobDriver:
    d = JobDriver(mapreduce(WORK, max_parallel=1,
                            error_policy=ErrorPolicy(error_collection=mode, **policy)))
    d.session_created()
    d.items_loaded(list(range(5)))
    return d


def err_prints(d: JobDriver) -> list[str]:
    return [e.text for e in d.of(Print) if e.stream == "err"]


def test_aggregate_lists_the_failures_in_the_summary() -> None:
    d = collecting("aggregate")
    d.run(exits={"work 1": 2, "work 3": 4})
    summary = next(e.text for e in d.of(Print) if e.text.startswith("Summary"))
    assert "  Failed items:\n    item_1: " in summary and "    item_3: " in summary
    assert not any("failed (CommandFailed)" in t for t in err_prints(d))


def test_immediate_prints_each_failure_when_it_happens() -> None:
    d = collecting("immediate")
    finish_agent(d, 0, 0)
    finish_agent(d, 1, 2)
    (detail,) = [t for t in err_prints(d) if "item_1 failed" in t]
    assert detail == ("item_1 failed (CommandFailed):\n"
                      "    Step 'shell: work ${item}' failed with exit code 2")
    d.run(exits={"work 3": 4})
    assert [t.split(" ")[0] for t in err_prints(d) if " failed (" in t] == ["item_1", "item_3"]
    summary = next(e.text for e in d.of(Print) if e.text.startswith("Summary"))
    assert "Failed items" not in summary


def test_batched_prints_failures_n_at_a_time_and_the_rest_at_the_end() -> None:
    d = collecting("batched:2")
    finish_agent(d, 0, 1)
    assert not [t for t in err_prints(d) if t.startswith("Failure")]
    finish_agent(d, 1, 1)
    (block,) = [t for t in err_prints(d) if t.startswith("Failure")]
    assert block.startswith("Failures 1–2:\nitem_0 failed") and "\nitem_1 failed" in block
    d.run(exits={"work 2": 1})
    blocks = [t for t in err_prints(d) if t.startswith("Failure")]
    assert blocks[-1].startswith("Failure 3:\nitem_2 failed")
    map_done = next(i for i, e in enumerate(d.effects)
                    if isinstance(e, Print) and e.text.startswith("Map phase completed"))
    last_block = max(i for i, e in enumerate(d.effects)
                     if isinstance(e, Print) and e.text.startswith("Failure 3"))
    assert last_block < map_done


def test_batched_failures_are_printed_when_the_job_is_interrupted() -> None:
    d = collecting("batched:5")
    finish_agent(d, 0, 1)
    d.send(CancelRequested(signal="SIGINT"))
    d.run()
    assert d.finish.exit_code == 130
    assert [t for t in err_prints(d) if t.startswith("Failure 1:\nitem_0 failed")]


def test_a_retried_attempt_is_not_reported_as_a_failure() -> None:
    d = collecting("immediate", on_item_failure="retry",
                   retry_config=ItemRetry(max_attempts=2, initial_delay=0.0))
    d.run(exits={"work 0": 1})
    details = [t for t in err_prints(d) if " failed (" in t]
    assert details == [details[0]] and details[0].startswith(
        "item_0 failed (CommandFailed), attempt 2:")


# --- phase limits (spec 05 §4.2, §12.3) ----------------------------------------------------


def limited(setup: tuple[Any, ...] = (), reduce: tuple[Any, ...] = (), *,
            setup_timeout: float | None = None, reduce_timeout: float | None = None,
            captures: tuple[tuple[str, CaptureOutputSpec], ...] = ()) -> Workflow:
    wf = mapreduce(WORK)
    return attrs.evolve(
        wf, setup=StepList(steps=setup, timeout=setup_timeout, capture_outputs=captures)
        if setup else None,
        reduce=StepList(steps=reduce, timeout=reduce_timeout) if reduce else None)


def phase_timer(d: JobDriver) -> Sleep:
    assert d.state is not None and d.state.phase_timer is not None
    timer: Sleep = d.one(Sleep, lambda e: e.command_id == d.state.phase_timer)
    return timer


def test_setup_timeout_cancels_the_step_and_fails_the_job() -> None:
    d = JobDriver(limited((shell("slow setup"), shell("never")), setup_timeout=5.0))
    d.session_created()
    timer = phase_timer(d)
    assert timer.seconds == 5.0
    command = d.one(RunCommand)
    effects = d.timer(timer)
    assert CancelCommands(command_ids=(command.command_id,)) in effects
    assert not d.finished
    d.command(command, 143, cancelled=True)
    assert d.finish.exit_code == 1
    assert d.state is not None and d.state.error_code == "E6005"
    assert d.state.error == "Setup phase timed out after 5 seconds"
    assert "error[E6005]: Setup phase timed out after 5 seconds" in d.printed
    assert [command_text(e) for e in d.of(RunCommand)] == ["slow setup"]
    assert not d.of(LoadWorkItems)
    doc = d.of(SaveJobState)[-1].doc
    assert doc["phase"] == "setup" and doc["setup_state"]["completed_steps"] == []


def test_a_step_that_would_retry_after_the_setup_timeout_does_not() -> None:
    flaky = shell("flaky", retry=RetrySpec(attempts=3))
    d = JobDriver(limited((flaky,), setup_timeout=1.0))
    d.session_created()
    command = d.one(RunCommand)
    d.timer(phase_timer(d))
    effects = d.command(command, 143, cancelled=True)
    assert not [e for e in effects if isinstance(e, RunCommand)]
    assert d.finish.exit_code == 1
    assert d.state is not None and d.state.error_code == "E6005"


def test_the_setup_limit_is_disarmed_and_ignored_when_setup_ends_in_time() -> None:
    d = JobDriver(limited((shell("quick"),), setup_timeout=60.0))
    d.session_created()
    timer = phase_timer(d)
    effects = d.command(d.one(RunCommand))
    assert CancelCommands(command_ids=(timer.command_id,)) in effects
    assert d.state is not None and d.state.phase == "items"
    assert d.timer(timer) == ()  # the cancelled Sleep still reports: nothing happens
    assert d.run([0]).exit_code == 0


def test_cancel_during_a_limited_setup_is_an_interruption() -> None:
    d = JobDriver(limited((shell("slow"),), setup_timeout=60.0))
    d.session_created()
    timer = phase_timer(d)
    command = d.one(RunCommand)
    d.send(CancelRequested(signal="SIGINT"))
    assert d.timer(timer) == ()  # cancelled with everything else
    d.command(command, 130, cancelled=True)
    assert d.finish.exit_code == 130


def test_a_resumed_setup_runs_under_a_new_limit() -> None:
    d = JobDriver(limited((shell("one"), shell("two")), setup_timeout=30.0))
    d.session_created()
    d.command(d.one(RunCommand))  # step one done and saved
    d.crash(len(d.batches[-1]))
    d.resume()
    d.session_created()
    assert command_text(d.one(RunCommand)) == "two"
    assert phase_timer(d).seconds == 30.0


def test_reduce_timeout_fails_the_job_with_e6009() -> None:
    d = JobDriver(limited(reduce=(shell("reduce slowly"),), reduce_timeout=2.5))
    d.session_created()
    d.items_loaded([0])
    finish_agent(d, 0)
    timer = phase_timer(d)
    assert timer.seconds == 2.5
    command = d.one(RunCommand)
    assert command_text(command) == "reduce slowly"
    d.timer(timer)
    d.command(command, 143, cancelled=True)
    assert d.finish.exit_code == 1
    assert d.state is not None and d.state.error_code == "E6009"
    assert d.state.error == "Reduce phase timed out after 2.5 seconds"
    assert d.of(SaveJobState)[-1].doc["phase"] == "reduce"


def test_reduce_ending_in_time_disarms_its_limit() -> None:
    d = JobDriver(limited(reduce=(shell("reduce"),), reduce_timeout=60.0))
    assert d.run([0]).exit_code == 0
    timer = next(e for e in d.of(Sleep) if e.seconds == 60.0)
    assert CancelCommands(command_ids=(timer.command_id,)) in d.effects


def test_phase_limits_and_the_rest_are_no_longer_runtime_gaps() -> None:
    wf = attrs.evolve(
        limited((shell("a"),), (shell("b"),), setup_timeout=1.0, reduce_timeout=1.0,
                captures=(("X", CaptureOutputSpec(command_index=0)),)),
        error_policy=ErrorPolicy(error_collection="batched:3",
                                 circuit_breaker=JobBreaker()))
    assert runtime_gaps(wf) == ()


# --- setup.capture_outputs (spec 05 §4.3) --------------------------------------------------


def cap(**fields: Any) -> CaptureOutputSpec:
    return CaptureOutputSpec(**({"command_index": 0} | fields))


@pytest.mark.parametrize(("spec", "stdout", "stderr", "value"), [
    (cap(), "abc123\n", "", "abc123"),
    (cap(), "a\nb\n\n", "", "a\nb\n"),  # one trailing newline only
    (cap(source="stderr"), "out\n", "err\n", "err"),
    (cap(source="both"), "out\n", "err\n", "out\nerr"),
    (cap(source="both"), "", "err\n", "err"),
    (cap(pattern=r"summary: (.*)"), "x\nsummary: 3 hot\ny", "", "3 hot"),
    (cap(pattern=r"\d+"), "v 42 and 7", "", "42"),
    (cap(json_path="$.hot[*].path"), '{"hot": [{"path": "a"}, {"path": "b"}]}', "",
     ["a", "b"]),
    (cap(json_path="$.n"), '{"n": 3}', "", 3),
    (cap(json_path="$.o"), '{"o": {"k": [1]}}', "", {"k": [1]}),
    (cap(multiline="join"), "a\nb\nc\n", "", "a b c"),
    (cap(multiline="first_line"), "a\nb\n", "", "a"),
    (cap(multiline="last_line"), "a\nb\n", "", "b"),
    (cap(multiline="array"), "a\nb\n", "", ["a", "b"]),
    (cap(multiline="array"), "", "", []),
    (cap(pattern=r"sha=(\w+)", multiline="first_line"), "sha=abc\n", "", "abc"),
])
def test_extract(spec: CaptureOutputSpec, stdout: str, stderr: str, value: Any) -> None:
    assert extract(spec, stdout, stderr) == (value, False)


@pytest.mark.parametrize(("spec", "stdout", "reason"), [
    (cap(pattern=r"summary: (.*)"), "nothing", "did not match"),
    (cap(json_path="$.a"), "not json", "not JSON"),
    (cap(json_path="$.missing"), '{"a": 1}', "matched nothing"),
])
def test_extraction_failures(spec: CaptureOutputSpec, stdout: str, reason: str) -> None:
    found = extract(spec, stdout, "")
    assert isinstance(found, Miss) and reason in found.reason


def test_max_size_cuts_bytes_never_inside_a_character() -> None:
    assert extract(cap(max_size=4), "abcdef", "") == ("abcd", True)
    assert extract(cap(max_size=3), "aéé", "") == ("aé", True)  # é is 2 bytes
    assert extract(cap(max_size=6), "abcdef", "") == ("abcdef", False)


def test_defaults_replace_failed_extractions_and_keep_their_shape() -> None:
    frozen = pmap({"a": (1, pmap({"b": None}))})
    entries = (("X", cap(pattern="nope", default="none", has_default=True)),
               ("Y", cap(json_path="$.q", default=frozen, has_default=True)),
               ("Z", cap(command_index=1)))
    outcome = Outcome(status="succeeded", output="text")
    got = capture(entries, 0, outcome)
    assert got.error is None
    assert [(n, v.value, v.trusted) for n, v in got.values] == [
        ("X", "none", True), ("Y", {"a": [1, {"b": None}]}, True)]
    assert thaw((1, "x")) == [1, "x"]
    skipped = capture((("X", cap()),), 0, Outcome(status="skipped"))
    assert skipped.error == "capture_outputs 'X': setup step 0 was skipped"


def one_at_a_time(template: tuple[Any, ...]) -> MapSpec:
    spec = mapreduce(template, max_parallel=1).map
    assert spec is not None
    return spec


def answer_setup(d: JobDriver, *outputs: str) -> None:
    for out in outputs:
        d.command(d.one(RunCommand), stdout=out)


CAPTURES = (("SHA", CaptureOutputSpec(command_index=0)),
            ("HOT", CaptureOutputSpec(command_index=1, json_path="$.hot[*]")))


def test_captured_variables_reach_later_setup_steps_agents_and_reduce() -> None:
    wf = attrs.evolve(limited((shell("rev"), shell("scan ${SHA}")), (shell("sum ${SHA}"),),
                              captures=CAPTURES),
                      map=one_at_a_time((shell("use ${SHA} ${HOT} ${item}"),)))
    d = JobDriver(wf)
    d.session_created()
    answer_setup(d, "abc123\n")
    assert command_text(d.one(RunCommand)) == "scan abc123"
    answer_setup(d, '{"hot": ["a.py", "b.py"]}')
    assert d.state is not None
    assert d.state.variables["HOT"].value == ["a.py", "b.py"]
    assert not d.state.variables["SHA"].trusted
    doc = d.of(SaveJobState)[-1].doc
    assert doc["variables"]["SHA"] == "abc123" and "SHA" in doc["variable_meta"]["untrusted"]
    assert d.run([7]).exit_code == 0
    texts = [command_text(e) for e in d.of(RunCommand)]
    assert texts[2].startswith("use abc123 ") and texts[2].endswith(" 7")
    assert texts[-1] == "sum abc123"


def test_a_failed_extraction_without_default_fails_setup_with_e6004() -> None:
    captures = (("N", CaptureOutputSpec(command_index=0, pattern=r"count=(\d+)")),)
    d = JobDriver(limited((shell("count"), shell("never")), captures=captures))
    d.session_created()
    answer_setup(d, "no count here\n")
    assert d.finish.exit_code == 1
    assert d.state is not None and d.state.error_code == "E6004"
    assert d.state.error == ("Setup phase failed: capture_outputs 'N': pattern "
                             "'count=(\\d+)' did not match")
    assert [command_text(e) for e in d.of(RunCommand)] == ["count"]


def test_a_cut_value_warns_w6005() -> None:
    captures = (("BIG", CaptureOutputSpec(command_index=0, max_size=3)),)
    d = JobDriver(limited((shell("big"),), captures=captures))
    d.session_created()
    answer_setup(d, "abcdef\n")
    assert "warning[W6005]: capture_outputs 'BIG' was cut to 3 bytes" in d.printed
    assert d.state is not None and d.state.variables["BIG"].value == "abc"


def test_captured_variables_survive_a_resume() -> None:
    captures = (("SHA", CaptureOutputSpec(command_index=0)),)
    wf = attrs.evolve(limited((shell("rev"),), captures=captures),
                      map=one_at_a_time((shell("use ${SHA}"),)))
    d = JobDriver(wf)
    d.session_created()
    answer_setup(d, "abc\n")
    d.items_loaded([0])
    d.crash(0)  # dies before the agent starts
    d.resume()
    d.session_created()
    assert d.state is not None and d.state.variables["SHA"].value == "abc"
    assert not d.state.variables["SHA"].trusted
    assert d.run().exit_code == 0
    assert command_text(d.of(RunCommand)[-1]) == "use abc"


def test_a_parsed_default_keeps_mappings_and_lists_apart() -> None:
    from tests.core._parse_helpers import load

    outcome = load("name: m\nmode: mapreduce\nsetup:\n  commands:\n    - shell: scan\n"
                   "  capture_outputs:\n"
                   "    A: {command_index: 0, pattern: 'x', default: {k: [1, {z: null}]}}\n"
                   "    B: {command_index: 0, pattern: 'x', default: [[k, 1]]}\n"
                   "    C: {command_index: 0, pattern: 'x', default: {}}\n"
                   "map:\n  input: items.json\n  agent_template:\n    - shell: echo\n")
    assert outcome.workflow is not None and outcome.workflow.setup is not None
    got = capture(outcome.workflow.setup.capture_outputs, 0,
                  Outcome(status="succeeded", output="no match"))
    assert [(n, v.value) for n, v in got.values] == [
        ("A", {"k": [1, {"z": None}]}), ("B", [["k", 1]]), ("C", {})]


def test_failure_text_names_the_step_unless_the_message_does() -> None:
    from prodigy_core.job_report import failure_text

    assert failure_text("item_2", "Timeout", "Agent timed out after 5 seconds",
                        step="shell: make", attempt=1) == (
        "item_2 failed (Timeout) in step 'shell: make':\n    Agent timed out after 5 seconds")
    long = "\n".join(f"line {n}" for n in range(25))
    text = failure_text("item_0", "Unknown", long, step=None, attempt=3)
    assert text.startswith("item_0 failed (Unknown), attempt 3:\n    line 0\n")
    assert text.endswith("    line 19\n    … 5 more lines")
