"""Layer 1: item retry delays, MapReduce environment variables and shared step breakers.

* ``retry_config`` backoff (spec 05 §10.4, spec 10 §2.2–§2.3): a retried item waits for a
  ``Sleep`` of the computed delay before it is dispatched again; other items run meanwhile;
  ``agent_retrying`` carries the delay; jitter is deterministic from the run's seed.
* The variables Prodigy sets in MapReduce scopes (spec 11 §7).
* Step circuit breakers shared by every agent of a job (spec 10 §3.3, acceptance #18).

Events are fed by hand through ``JobDriver``; nobody sleeps.
"""

from __future__ import annotations

from typing import Any

import attrs
import pytest

from prodigy_core.effects import CancelCommands, RunCommand, Sleep
from prodigy_core.events import CancelRequested, CommandFinished
from prodigy_core.job_ops import FinishAgent, LoadWorkItems
from prodigy_core.model import (
    Backoff,
    CircuitBreakerSpec,
    ErrorPolicy,
    ItemRetry,
    RetrySpec,
)
from prodigy_core.retry import delay_for
from prodigy_core.worktree_ops import CreateWorktree
from tests.core._job_driver import JOB, JOB_DIR, JobDriver, item_of, job_ctx, mapreduce
from tests.core._machine_driver import command_text, shell

FAIL = (shell("work ${item}"),)


def retrying(**cfg: Any) -> ErrorPolicy:
    return ErrorPolicy(on_item_failure="retry", retry_config=ItemRetry(**cfg))


def agent_creations(d: JobDriver) -> list[str]:
    return [e.path for e in d.of(CreateWorktree) if e.mode == "agent"]


def fail_item_until_delay(d: JobDriver) -> Sleep:
    """The one running agent fails; return the retry delay it waits for."""
    d.agent_created(d.one(CreateWorktree, lambda e: e.mode == "agent"))
    d.command(d.one(RunCommand), 1)
    d.released(d.one(FinishAgent))
    assert not d.waiting(CreateWorktree), "dispatched again before the delay was over"
    sleep: Sleep = d.one(Sleep)
    return sleep


# --- retry delays ---------------------------------------------------------------------------


@pytest.mark.parametrize(("cfg", "delays"), [
    ({"max_attempts": 4, "backoff": Backoff(kind="exponential"), "initial_delay": 2.0,
      "max_delay": 5.0}, [2.0, 4.0, 5.0]),
    ({"max_attempts": 3, "backoff": Backoff(kind="fixed"), "initial_delay": 3.0},
     [3.0, 3.0]),
    ({"max_attempts": 4, "backoff": Backoff(kind="linear", increment=1.5),
      "initial_delay": 1.0}, [1.0, 2.5, 4.0]),
    ({"max_attempts": 3}, [1.0, 2.0]),  # the defaults: exponential from 1 s
], ids=["exponential capped", "fixed", "linear", "defaults"])
def test_a_retried_item_waits_for_its_backoff(cfg: dict[str, Any], delays: list[float]) -> None:
    d = JobDriver(mapreduce(FAIL, max_parallel=1, error_policy=retrying(**cfg)))
    d.session_created()
    d.items_loaded(["x"])
    seen: list[float] = []
    for attempt in range(1, len(delays) + 1):
        sleep = fail_item_until_delay(d)
        seen.append(sleep.seconds)
        assert d.state is not None
        assert d.state.item_state[0] == "pending" and d.state.backoff == {0: sleep.command_id}
        d.timer(sleep)
        (create,) = d.waiting(CreateWorktree)
        assert create.path.endswith(f"{JOB}_agent_0_attempt_{attempt + 1}")
    assert seen == delays
    assert [e["backoff_ms"] for e in d.logs("agent_retrying")] == [int(s * 1000) for s in delays]
    assert [e["attempt"] for e in d.logs("agent_retrying")] == list(range(2, len(delays) + 2))
    # the last attempt fails for good: no more waiting
    d.agent_created(d.one(CreateWorktree))
    d.command(d.one(RunCommand), 1)
    d.released(d.one(FinishAgent))
    assert not d.waiting(Sleep)
    finish = d.run()
    assert finish.exit_code == 3
    assert [e["retry_eligible"] for e in d.logs("agent_failed")] == \
        [True] * len(delays) + [False]


def test_the_retry_message_names_the_delay() -> None:
    d = JobDriver(mapreduce(FAIL, max_parallel=1, error_policy=retrying(initial_delay=2.5)))
    d.session_created()
    d.items_loaded(["x"])
    fail_item_until_delay(d)
    assert "retrying (attempt 2) after 2.50s" in d.printed


def test_a_zero_delay_retries_at_once() -> None:
    d = JobDriver(mapreduce(FAIL, max_parallel=1,
                            error_policy=retrying(backoff=Backoff(kind="fixed"),
                                                  initial_delay=0.0)))
    d.session_created()
    d.items_loaded(["x"])
    d.agent_created(d.one(CreateWorktree))
    d.command(d.one(RunCommand), 1)
    d.released(d.one(FinishAgent))
    assert not d.waiting(Sleep)
    assert d.one(CreateWorktree).path.endswith("_attempt_2")
    assert [e["backoff_ms"] for e in d.logs("agent_retrying")] == [0]


def test_other_items_run_while_one_waits() -> None:
    d = JobDriver(mapreduce(FAIL, max_parallel=1, error_policy=retrying(initial_delay=10.0)))
    d.session_created()
    d.items_loaded([0, 1, 2])
    d.agent_created(d.one(CreateWorktree))
    d.command(d.one(RunCommand), 1)  # item 0 fails
    d.released(d.one(FinishAgent))
    sleep = d.one(Sleep)
    assert sleep.seconds == 10.0
    # the free slot goes to item 1 at once, not to the waiting item 0
    assert [item_of(p) for p in agent_creations(d)] == [0, 1]
    d.agent_created(d.one(CreateWorktree))
    d.command(d.one(RunCommand), 0)
    d.released(d.one(FinishAgent))
    assert [item_of(p) for p in agent_creations(d)] == [0, 1, 2]
    d.agent_created(d.one(CreateWorktree))
    d.command(d.one(RunCommand), 0)
    d.released(d.one(FinishAgent))
    # only item 0 is left, waiting: the map phase is not over
    assert d.state is not None and d.state.phase == "map" and not d.finished
    assert d.state.item_state[0] == "pending"
    d.timer(sleep)
    assert d.one(CreateWorktree).path.endswith(f"{JOB}_agent_0_attempt_2")
    assert d.run().exit_code == 0
    assert [command_text(e) for e in d.of(RunCommand)] == ["work 0", "work 1", "work 2",
                                                           "work 0"]


def test_jitter_is_deterministic_from_the_seed() -> None:
    cfg = ItemRetry(max_attempts=3, backoff=Backoff(kind="fixed"), initial_delay=10.0,
                    jitter=True)

    def first_delay(seed: int) -> float:
        ctx = attrs.evolve(job_ctx(), seed=seed)
        policy = ErrorPolicy(on_item_failure="retry", retry_config=cfg)
        d = JobDriver(mapreduce(FAIL, max_parallel=1, error_policy=policy), ctx=ctx)
        d.session_created()
        d.items_loaded(["x"])
        return fail_item_until_delay(d).seconds

    a, again, other = first_delay(7), first_delay(7), first_delay(8)
    assert a == again
    assert a != other
    for value in (a, other):
        assert 8.5 <= value <= 11.5 and value != 10.0  # 10 s ± 15 %
    assert a == delay_for(cfg, 1, seed=7, key="item:item_0")


def test_an_item_waiting_for_its_delay_is_pending_after_a_crash() -> None:
    d = JobDriver(mapreduce(FAIL, max_parallel=1, error_policy=retrying(initial_delay=60.0)))
    d.session_created()
    d.items_loaded(["x"])
    fail_item_until_delay(d)
    d.crash(len(d.batches[-1]))
    doc = d.resumable()
    assert doc is not None and doc["pending_items"] == ["item_0"]
    d.resume()
    d.session_created()
    # no delay after a resume: the item is simply pending, and runs as attempt 2
    assert d.state is not None and d.state.backoff == {}
    assert d.one(CreateWorktree, lambda e: e.mode == "agent").path.endswith("_attempt_2")
    assert d.run().exit_code == 0


def test_cancel_while_an_item_waits() -> None:
    d = JobDriver(mapreduce(FAIL, max_parallel=1, error_policy=retrying(initial_delay=60.0)))
    d.session_created()
    d.items_loaded(["x"])
    fail_item_until_delay(d)
    d.send(CancelRequested(signal="SIGINT"))
    assert d.finish.exit_code == 130
    assert d.state is not None and dict(d.state.item_state) == {0: "pending"}
    assert d.state.backoff == {}


def test_no_delay_is_armed_once_the_job_stops() -> None:
    """An agent failing after CancelRequested (its timer fired) is eligible for a retry,
    but nothing starts again: its item is pending, with no Sleep to wait for."""
    d = JobDriver(mapreduce(FAIL, max_parallel=1, agent_timeout_secs=5,
                            error_policy=retrying(initial_delay=60.0)))
    d.session_created()
    d.items_loaded(["x"])
    d.agent_created(d.one(CreateWorktree))
    d.send(CancelRequested(signal="SIGINT"))
    assert d.batches[-1] == (CancelCommands(),)
    d.command(d.one(RunCommand), 143, cancelled=True)
    d.released(d.one(FinishAgent))
    assert d.finish.exit_code == 130
    assert d.state is not None and d.state.backoff == {}


# --- environment variables (spec 11 §7) -----------------------------------------------------


def env_of(effect: Any) -> dict[str, str]:
    return dict(effect.env)


def test_every_scope_sees_the_job_id_and_its_own_variables() -> None:
    wf = mapreduce((shell("echo ${item}"),), max_parallel=2,
                   setup=(shell("make items"),), reduce=(shell("summarize"),))
    d = JobDriver(wf)
    d.run([0, 1, 2], exits={"echo 2": 1})
    by_text = {command_text(e): env_of(e) for e in d.of(RunCommand)}
    setup, reduce = by_text["make items"], by_text["summarize"]
    assert env_of(d.of(LoadWorkItems)[0])["PRODIGY_JOB_ID"] == JOB
    assert setup["PRODIGY_JOB_ID"] == JOB
    assert not any(k.startswith(("PRODIGY_ITEM", "PRODIGY_AGENT", "PRODIGY_MAP"))
                   for k in setup)
    for index in range(3):
        env = by_text[f"echo {index}"]
        assert env["PRODIGY_JOB_ID"] == JOB
        assert env["PRODIGY_AGENT_ID"] == f"{JOB}_agent_{index}"
        assert env["PRODIGY_ITEM_ID"] == f"item_{index}"
        assert env["PRODIGY_ITEM_INDEX"] == str(index)
        assert env["PRODIGY_ITEM_FILE"] == f"{JOB_DIR}/items/item_{index}.json"
        assert not any(k.startswith("PRODIGY_MAP") for k in env)
    assert reduce["PRODIGY_JOB_ID"] == JOB
    assert reduce["PRODIGY_MAP_RESULTS_FILE"] == f"{JOB_DIR}/map-results.json"
    assert (reduce["PRODIGY_MAP_TOTAL"], reduce["PRODIGY_MAP_SUCCESSFUL"],
            reduce["PRODIGY_MAP_FAILED"]) == ("3", "2", "1")
    assert not any(k.startswith(("PRODIGY_ITEM", "PRODIGY_AGENT")) for k in reduce)


def test_prodigy_variables_win_over_the_step_env() -> None:
    step = shell("echo ${item}", env=(("PRODIGY_ITEM_ID", "mine"), ("OTHER", "kept")))
    d = JobDriver(mapreduce((step,)))
    d.run(["a"])
    env = env_of(d.of(RunCommand)[0])
    assert env["PRODIGY_ITEM_ID"] == "item_0" and env["OTHER"] == "kept"


def test_a_retried_agent_sees_its_new_agent_id() -> None:
    d = JobDriver(mapreduce(FAIL, max_parallel=1, error_policy=retrying(max_attempts=2)))
    d.run(["x"], exits={"work x": 1})
    ids = [env_of(e)["PRODIGY_AGENT_ID"] for e in d.of(RunCommand)]
    assert ids == [f"{JOB}_agent_0", f"{JOB}_agent_0_attempt_2"]


def test_a_resumed_job_keeps_the_job_id_in_the_environment() -> None:
    d = JobDriver(mapreduce((shell("echo ${item}"),), max_parallel=1))
    d.session_created()
    d.items_loaded([0, 1])
    d.crash(len(d.batches[-1]))
    d.resume()
    d.run()
    assert {env_of(e)["PRODIGY_JOB_ID"] for e in d.of(RunCommand)} == {JOB}


# --- circuit breakers shared by agents (spec 10 §3.3) --------------------------------------


def breaker_changes(d: JobDriver) -> list[tuple[str, str, str]]:
    return [(e["name"], e["from"], e["to"]) for e in d.logs("circuit_breaker_state_changed")]


def finished(d: JobDriver, effect: RunCommand, exit_code: int, at: float) -> None:
    d.send(CommandFinished(command_id=effect.command_id, exit_code=exit_code,
                           monotonic=at, finished_at="2026-01-01T00:00:01.000Z"))


def guarded(text: str, **spec: Any) -> Any:
    return shell(text, retry=RetrySpec(attempts=1, circuit_breaker=CircuitBreakerSpec(**spec)))


def test_four_agents_share_one_breaker() -> None:
    template = (guarded("call ${item}", name="api", failure_threshold=2,
                        recovery_timeout=5.0),)
    d = JobDriver(mapreduce(template, max_parallel=2))
    d.session_created()
    d.items_loaded([0, 1, 2, 3])
    for create in d.waiting(CreateWorktree):
        d.agent_created(create)
    for command in d.waiting(RunCommand):
        finished(d, command, 1, at=1.0)  # two consecutive failures: the breaker opens
    assert breaker_changes(d) == [("api", "closed", "open")]
    for release in d.waiting(FinishAgent):
        d.released(release)
    for create in d.waiting(CreateWorktree):
        d.agent_created(create)
    # the 3rd and 4th executions are rejected at once: no command runs
    assert [command_text(e) for e in d.of(RunCommand)] == ["call 0", "call 1"]
    assert "Circuit breaker 'api' is open" in d.printed
    finish = d.run()
    assert finish.exit_code == 3
    failed = {e["item_id"]: e["error"] for e in d.logs("agent_failed")}
    assert set(failed) == {"item_0", "item_1", "item_2", "item_3"}
    assert "E3009" in failed["item_2"] or "is open" in failed["item_2"]
    assert "is open" in failed["item_3"]
    assert d.state is not None and d.state.breakers.get("api").status == "open"


def test_an_unnamed_breaker_is_the_template_step_and_half_opens_after_the_timeout() -> None:
    template = (shell("prep ${item}"),
                guarded("call ${item}", failure_threshold=2, recovery_timeout=5.0))
    d = JobDriver(mapreduce(template, max_parallel=2))
    d.session_created()
    d.items_loaded([0, 1, 2, 3, 4])

    def round_of(at: float, exit_code: int) -> None:
        for create in d.waiting(CreateWorktree):
            d.agent_created(create)
        for command in d.waiting(RunCommand, lambda e: command_text(e).startswith("prep")):
            finished(d, command, 0, at=at)
        for command in d.waiting(RunCommand, lambda e: command_text(e).startswith("call")):
            finished(d, command, exit_code, at=at)
        for release in d.waiting(FinishAgent):
            d.released(release)

    round_of(1.0, 1)   # items 0 and 1 fail: open at t=1
    round_of(2.0, 0)   # items 2 and 3: rejected (t=2 < 1+5)
    round_of(7.0, 0)   # item 4 after the recovery timeout: half-open, passes, closes
    calls = [command_text(e) for e in d.of(RunCommand) if command_text(e).startswith("call")]
    assert calls == ["call 0", "call 1", "call 4"]
    name = "agent_template[1]"
    assert breaker_changes(d) == [(name, "closed", "open"), (name, "open", "half_open"),
                                  (name, "half_open", "closed")]
    assert d.run().exit_code == 3
    ok = sorted(e["item_id"] for e in d.logs("agent_completed"))
    assert ok == ["item_4"]


def test_setup_and_reduce_share_the_job_breakers() -> None:
    spec: dict[str, Any] = {"name": "svc", "failure_threshold": 1, "recovery_timeout": 60.0}
    wf = mapreduce((shell("echo ${item}"),),
                   setup=(shell("probe", retry=RetrySpec(
                       attempts=1, exhausted="continue",
                       circuit_breaker=CircuitBreakerSpec(**spec))),),
                   reduce=(guarded("report", **spec),))
    d = JobDriver(wf)
    finish = d.run([0], exits={"probe": 1})
    # setup's failure (allowed) opened "svc": reduce's execution is rejected
    assert "report" not in [command_text(e) for e in d.of(RunCommand)]
    assert finish.exit_code == 1
    assert breaker_changes(d) == [("svc", "closed", "open")]
