"""``goal_seek`` and ``foreach`` on the pure run machine (spec 12 §1, §3, §4 examples).

Events are fed by hand through ``Driver``; parallel ``foreach`` items are answered in
chosen orders from the driver's outstanding effects.
"""

from __future__ import annotations

import json
from typing import Any

from prodigy_core import run_machine
from prodigy_core.effects import CancelCommands, RunCommand, SaveCheckpoint, Sleep
from prodigy_core.events import CancelRequested, CommandFinished
from prodigy_core.model import (
    Backoff,
    ForeachSpec,
    GoalSeekSpec,
    OnFailure,
    RetrySpec,
    Step,
    Workflow,
)
from tests.core._machine_driver import Driver, R, command_text, make_ctx, shell


def goal(command: str = "work", validate: str = "score", *, threshold: float = 80,
         attempts: int = 5, **options: Any) -> Step:
    fields = {k: options.pop(k) for k in list(options) if k in (
        "validator", "timeout_seconds", "fail_on_incomplete")}
    spec = GoalSeekSpec(goal="g", command=shell(command), validate=validate,
                        threshold=threshold, max_attempts=attempts, **fields)
    return Step(kind="goal_seek", command="g", goal_seek=spec, **options)


def each(items: list[Any] | str, *do: Step, **options: Any) -> Step:
    if isinstance(items, list):
        spec = ForeachSpec(do=do, items_json=json.dumps(items), **options)
    else:
        spec = ForeachSpec(do=do, source=items, **options)
    return Step(kind="foreach", command="f", foreach=spec)


def drive(*steps: Step) -> Driver:
    return Driver(run_machine.start(Workflow(name="t", steps=steps), make_ctx()))


def scores(*values: str) -> Any:
    """A script: ``score`` prints the next value, ``work`` passes."""
    queue = list(values)

    def answer(effect: RunCommand) -> R:
        if command_text(effect) == "score":
            return R(stdout=queue.pop(0) if len(queue) > 1 else queue[0], duration=1.0)
        return R(duration=2.0)
    return answer


# --- goal_seek ---------------------------------------------------------------------------


def test_achieved_at_the_second_attempt() -> None:  # spec 12 §4 #1
    d = drive(goal(), shell("echo ${goal_seek.status} ${goal_seek.score} ${goal_seek.attempts}"))
    d.run(scores("score: 40", "score: 80"))
    assert d.commands == ["work", "score", "work", "score", "echo achieved 80 2"]
    assert "Goal 'g' achieved in 2 attempts (80%)" in d.printed
    assert "Attempt 1/5: score 40% (threshold 80%)" in d.printed
    history = d.vars["goal_seek.history"]
    assert [h["score"] for h in history] == [40, 80]
    assert history[0] == {"attempt": 1, "score": 40, "command_success": True,
                          "duration_ms": 3000}
    assert d.finish.exit_code == 0


def test_converged_is_an_allowed_failure() -> None:  # spec 12 §4 #2
    d = drive(goal(), shell("next"))
    d.run(scores("score: 50"))
    assert d.commands.count("work") == 3
    assert d.vars["goal_seek.status"] == "converged"
    assert d.statuses == ["failed_allowed", "succeeded"]
    assert "not achieved: converged after 3 attempts, best 50%" in d.printed
    assert d.finish.exit_code == 0


def test_fail_on_incomplete_fails_the_run_with_e3012() -> None:  # spec 12 §4 #3
    d = drive(goal(fail_on_incomplete=True), shell("never"))
    d.run(scores("score: 50"))
    assert "never" not in d.commands
    assert d.statuses == ["failed"]
    assert d.finish.exit_code == 1
    failed = d.logs("step_failed")[-1]
    assert failed["error_code"] == "E3012"


def test_fail_on_incomplete_lets_on_failure_and_retry_apply() -> None:
    d = drive(goal(attempts=1, fail_on_incomplete=True,
                   retry=RetrySpec(attempts=2, backoff=Backoff(kind="fixed"),
                                   initial_delay=0.0),
                   on_failure=OnFailure(commands=(shell("handler"),))))
    d.run(scores("score: 10"))
    assert d.commands == ["work", "score", "work", "score", "handler"]


def test_previous_attempt_reaches_the_next_command() -> None:  # spec 12 §4 #4
    d = drive(goal("work ${goal_seek.attempt} ${goal_seek.score} ${goal_seek.gaps}"))
    d.run(lambda e: R(stdout='{"score": 30, "gaps": ["a"]}') if command_text(e) == "score"
          else R())
    works = [e for e in d.of(RunCommand) if command_text(e).startswith("work")]
    assert command_text(works[0]) == "work 1 ${goal_seek.score} ${goal_seek.gaps}"
    assert command_text(works[1]) == "work 2 30 a"  # a list of strings joins (spec 03 §4.1)
    env = dict(works[1].env)
    assert env["PRODIGY_VALIDATION_SCORE"] == "30"
    assert env["PRODIGY_VALIDATION_GAPS"] == '["a"]'
    assert env["PRODIGY_VALIDATION_OUTPUT"] == '{"score": 30, "gaps": ["a"]}'
    assert "PRODIGY_VALIDATION_SCORE" not in dict(works[0].env)
    validate = next(e for e in d.of(RunCommand) if command_text(e) == "score")
    assert dict(validate.env)["PRODIGY_VALIDATION"] == "true"


def test_exit_code_validator() -> None:  # spec 12 §4 #5
    codes = [1, 0]
    d = drive(goal(validator="exit_code", threshold=100))
    d.run(lambda e: R(exit_code=codes.pop(0)) if command_text(e) == "score" else R())
    assert d.vars["goal_seek.score"] == 100 and d.vars["goal_seek.attempts"] == 2


def test_score_reading_rules() -> None:
    from prodigy_core.step_goal import read_score

    assert read_score("score", "Score: 72.5 of things", 1) == (72.5, None)
    assert read_score("score", "coverage 64%", 0)[0] == 64
    assert read_score("score", "31/100", 0)[0] == 31
    assert read_score("score", "17 out of 100", 0)[0] == 17
    assert read_score("score", "nothing", 0)[0] == 0
    assert read_score("score", '{"gaps": 1}', 0) == (0, 1)
    assert read_score("score", "score: 250", 0)[0] == 100
    assert read_score("json", '{"completion_percentage": 44}', 0)[0] == 44
    assert read_score("json", "score: 90", 0)[0] == 0
    assert read_score("exit_code", "out", 3) == (0, "out")


def test_timeout_seconds_stops_before_the_next_attempt() -> None:
    d = drive(goal(timeout_seconds=5.0, attempts=10))
    d.run(scores("score: 10", "score: 20", "score: 30"))  # each attempt takes 3 s
    assert d.commands.count("work") == 2
    assert d.vars["goal_seek.status"] == "timeout"
    work = [e for e in d.of(RunCommand) if command_text(e) == "work"]
    assert work[0].timeout == 5.0 and work[1].timeout == 2.0  # capped by what is left


def test_step_timeout_fails_the_execution() -> None:
    d = drive(goal(attempts=10, timeout=4.0))
    d.run(scores("score: 10", "score: 20", "score: 30"))
    failed = d.logs("step_failed")[-1]
    assert failed["error_code"] == "E3002"


def test_failed_command_is_recorded_and_scored() -> None:
    d = drive(goal(attempts=1))
    d.run(lambda e: R(exit_code=2) if command_text(e) == "work" else R(stdout="score: 90"))
    assert d.vars["goal_seek.history"][0]["command_success"] is False
    assert d.vars["goal_seek.status"] == "achieved"


# --- foreach -----------------------------------------------------------------------------


def test_items_index_total() -> None:  # spec 12 §4 #11
    d = drive(each(["a", "b", "c"], shell("echo ${index}:${item}/${total}")))
    d.run()
    assert d.commands == ["echo 0:a/3", "echo 1:b/3", "echo 2:c/3"]
    assert d.vars["foreach.total"] == 3 and d.vars["foreach.successful"] == 3
    assert d.vars["foreach.output"] == "Foreach completed: 3 total, 3 successful, 0 failed"


def test_items_from_a_command() -> None:  # spec 12 §4 #12
    d = drive(each("list", shell("do ${item}")))
    d.run({"list": R(stdout="x\ny\n\n{\"k\": 1}\n")})
    assert d.commands == ["list", "do x", "do y", "do '{\"k\":1}'"]


def test_a_failing_item_command_fails_with_e3011() -> None:
    d = drive(each("list", shell("do ${item}")))
    d.run({"list": R(exit_code=3, stderr="boom")})
    failed = d.logs("step_failed")[-1]
    assert failed["error_code"] == "E3011" and "exit code 3: boom" in failed["error"]


def test_items_from_a_list_variable() -> None:
    d = drive(shell("produce", capture="files", capture_format="lines"),
              each("${files}", shell("do ${item}")))
    d.run({"produce": R(stdout="p\nq\n")})
    assert d.commands == ["produce", "do p", "do q"]


def test_first_failure_stops_new_items() -> None:  # spec 12 §4 #13
    d = drive(each(["1", "2", "3", "4"], shell("item ${item}")), shell("after"))
    d.run({"item 2": R(exit_code=1)})
    assert d.commands == ["item 1", "item 2"]
    failed = d.logs("step_failed")[-1]
    assert failed["error_code"] == "E3011"
    assert failed["error"].startswith("foreach: 1 of 4 items failed; first failure: item 2/4:")
    assert d.finish.exit_code == 1


def test_continue_on_error_runs_everything() -> None:  # spec 12 §4 #14
    d = drive(each(["1", "2", "3", "4"], shell("item ${item}"), shell("second ${item}"),
                   continue_on_error=True), shell("after ${foreach.failed}"))
    d.run({"item 2": R(exit_code=1)})
    assert d.commands == ["item 1", "second 1", "item 2", "item 3", "second 3", "item 4",
                          "second 4", "after 1"]
    results = d.vars["foreach.results"]
    assert [r["success"] for r in results] == [True, False, True, True]
    assert "warning[W3007]: foreach 'foreach: f': 1 of 4 items failed (continue_on_error): " \
           "item(s) 2" in d.printed


def test_parallel_never_exceeds_the_limit() -> None:  # spec 12 §4 #15
    d = drive(each(["a", "b", "c", "d"], shell("sleep ${item}"), parallel=2))
    finished = []
    most = 0
    while not d.finished:
        running = [e for e in d.outstanding.values() if isinstance(e, RunCommand)]
        most = max(most, len(running))
        last = running[-1]  # answer the newest first: order must not matter
        d.outstanding.pop(last.command_id)
        d.send(CommandFinished(command_id=last.command_id, exit_code=0, duration=1.0,
                               monotonic=d.now))
        finished.append(command_text(last))
    assert most == 2
    assert sorted(finished) == ["sleep a", "sleep b", "sleep c", "sleep d"]
    assert d.vars["foreach.successful"] == 4


def test_nested_item_access_and_local_captures() -> None:  # spec 12 §4 #16
    d = drive(each([{"f": "a.md"}], shell("echo ${item.f}", capture="local")),
              shell("echo ${local:-none}"))
    d.run()
    assert d.commands == ["echo a.md", "echo none"]


def test_interrupt_and_resume_runs_only_unfinished_items() -> None:  # spec 12 §4 #17
    d = drive(each(["1", "2", "3", "4", "5"], shell("item ${item}")))
    d.finish_command()
    d.finish_command()
    saved = d.checkpoints[-1]
    assert saved["foreach_state"]["completed_items"] == [0, 1]
    d.send(CancelRequested(signal="SIGINT"))
    d.finish_command(cancelled=True, exit_code=-1)
    final = d.checkpoints[-1]
    assert final["foreach_state"]["completed_items"] == [0, 1]
    workflow = Workflow(name="t", steps=(each(["1", "2", "3", "4", "5"],
                                              shell("item ${item}")),))
    resumed = Driver(run_machine.resume(workflow, make_ctx(), final))
    resumed.run()
    assert resumed.commands == ["item 3", "item 4", "item 5"]
    assert resumed.vars["foreach.successful"] == 5


def test_resume_applies_items_logged_after_the_checkpoint() -> None:
    workflow = Workflow(name="t", steps=(each(["1", "2", "3"], shell("item ${item}")),))
    d = Driver(run_machine.start(workflow, make_ctx()))
    first = d.checkpoints[-1] if d.checkpoints else None
    d.finish_command()
    logged = d.logs("foreach_item_finished")
    assert logged and logged[0]["index"] == 0
    base = first or {"execution_state": {"current_step_index": 0}}
    later = [{"event": e} for e in logged]
    resumed = Driver(run_machine.resume(workflow, make_ctx(), base, later))
    resumed.run()
    assert resumed.commands == ["item 2", "item 3"]


def test_checkpoint_written_when_an_item_finishes() -> None:
    d = drive(each(["a", "b"], shell("x ${item}")))
    before = len(d.of(SaveCheckpoint))
    d.finish_command()
    assert len(d.of(SaveCheckpoint)) == before + 1


def test_dry_run_plans_without_running_anything() -> None:
    from prodigy_core.effects import DescribeStep

    workflow = Workflow(name="t", steps=(goal(), each("ls *.md", shell("lint ${item}"),
                                                      parallel=3)))
    d = Driver(run_machine.start(workflow, make_ctx(dry_run=True)))
    d.run()
    assert d.commands == []  # neither attempts, validation nor the item command
    plans = [e.info for e in d.of(DescribeStep)]
    assert plans[0]["details"][1] == "each attempt: shell: work"
    assert "threshold 80%, up to 5 attempts" in plans[0]["details"][2]
    assert plans[1]["details"][0] == "items from: ls *.md (known at run time)"
    assert plans[1]["details"][1] == "per item (3 at once): shell: lint ${item}"


# --- retry history and budget (spec 10 §2.5, §2.8) --------------------------------------


def test_retry_state_records_the_failure_history() -> None:
    d = drive(shell("flaky", retry=RetrySpec(attempts=3, backoff=Backoff(kind="fixed"),
                                             initial_delay=0.0)))
    d.run({"flaky": [R(exit_code=1), R(exit_code=2), R()]})
    state = d.checkpoints[-1]["completed_steps"][0]["retry_state"]
    assert state["current_attempt"] == 3 and state["max_attempts"] == 3
    assert state["failure_history"] == ["Step 'shell: flaky' failed with exit code 1",
                                        "Step 'shell: flaky' failed with exit code 2"]


def test_retry_budget_exhaustion_is_e3008_on_the_underlying_error() -> None:
    d = drive(shell("slow", retry=RetrySpec(attempts=5, backoff=Backoff(kind="fixed"),
                                            initial_delay=2.0, retry_budget=5.0)))
    d.run({"slow": R(exit_code=1, duration=2.0)})
    assert d.commands == ["slow", "slow"]
    failed = d.logs("step_failed")[-1]
    assert failed["error_code"] == "E3008"
    assert failed["error"] == ("Step 'shell: slow' failed with exit code 1 "
                               "(Retry budget exhausted)")
    assert "Failed 'shell: slow' after 2 attempts" in d.printed


def test_w3002_working_dir_outside_and_w3004_oversized_env_value() -> None:
    big = "x" * 70000
    d = drive(shell("a", working_dir="/elsewhere"), shell("b", env=(("BIG", big),)),
              shell("c", working_dir="sub"))
    d.run()
    assert "warning[W3002]: working_dir '/elsewhere' of 'shell: a' is outside" in d.printed
    assert "working_dir '/repo/sub'" not in d.printed
    assert "warning[W3004]: environment value 'BIG' is larger than 64 KiB" in d.printed
    b = next(e for e in d.of(RunCommand) if command_text(e) == "b")
    assert "BIG" not in dict(b.env)


def test_validation_without_a_score_warns_w3006() -> None:
    d = drive(goal(attempts=1))
    d.run(scores("all good"))
    assert "warning[W3006]: validate of 'goal_seek: g' printed no score (validator score); counted " \
           "as 0: all good" in d.printed
    assert d.vars["goal_seek.score"] == 0
    quiet = drive(goal(attempts=1))
    quiet.run(scores("score: 3"))
    assert "W3006" not in quiet.printed


# --- fixes after a fresh-eyes review ----------------------------------------------------


def _send(d: Driver, effect: Any, **fields: Any) -> None:
    from prodigy_core.events import Slept

    d.outstanding.pop(effect.command_id)
    if isinstance(effect, Sleep):
        d.send(Slept(command_id=effect.command_id, monotonic=d.now))
    else:
        d.send(CommandFinished(command_id=effect.command_id, monotonic=d.now, **fields))


def test_foreach_timeout_stops_running_items_with_e3002() -> None:
    d = drive(Step(kind="foreach", command="f", timeout=5.0, foreach=ForeachSpec(
        do=(shell("slow ${item}"),), items_json='["a", "b"]', parallel=2)), shell("never"))
    timer = next(e for e in d.outstanding.values() if isinstance(e, Sleep))
    assert timer.seconds == 5.0
    d.now = 5.0
    _send(d, timer)
    cancel = d.of(CancelCommands)[-1]
    running = sorted(e.command_id for e in d.outstanding.values())
    assert sorted(cancel.command_ids) == running and len(running) == 2
    for effect in list(d.outstanding.values()):
        _send(d, effect, exit_code=-1, cancelled=True)
    assert d.finish.exit_code == 1
    failed = d.logs("step_failed")[-1]
    assert failed["error_code"] == "E3002" and "timed out after 5 seconds" in failed["error"]
    assert "never" not in d.commands


def test_foreach_within_its_timeout_cancels_the_timer_then_passes() -> None:
    d = drive(Step(kind="foreach", command="f", timeout=60.0, foreach=ForeachSpec(
        do=(shell("quick"),), items_json='["a"]')), shell("after"))
    command = next(e for e in d.outstanding.values() if isinstance(e, RunCommand))
    _send(d, command, exit_code=0, duration=1.0)
    timer = next(e for e in d.outstanding.values() if isinstance(e, Sleep))
    assert d.of(CancelCommands)[-1].command_ids == (timer.command_id,)
    _send(d, timer)
    d.run()
    assert d.commands == ["quick", "after"] and d.finish.exit_code == 0


def test_parallel_foreach_duration_is_the_span_not_the_sum() -> None:
    d = drive(each(["a", "b"], shell("x ${item}"), parallel=2))
    first, second = [e for e in d.outstanding.values() if isinstance(e, RunCommand)]
    d.now = 3.0
    _send(d, first, exit_code=0, duration=3.0)
    _send(d, second, exit_code=0, duration=3.0)
    done = d.logs("step_completed")[-1]
    assert done["status"] == "succeeded"
    assert d.checkpoints[-1]["completed_steps"][0]["duration"]["secs"] == 3


def test_resume_finds_finished_items_by_value_when_a_command_lists_them_anew() -> None:
    workflow = Workflow(name="t", steps=(each("ls in", shell("do ${item}")),))
    d = Driver(run_machine.start(workflow, make_ctx()))
    d.finish_command(stdout="b\nc\nd\n")
    d.finish_command()  # b
    d.finish_command()  # c
    d.send(CancelRequested(signal="SIGINT"))
    d.finish_command(cancelled=True, exit_code=-1)
    resumed = Driver(run_machine.resume(workflow, make_ctx(), d.checkpoints[-1]))
    resumed.run({"ls in": R(stdout="a0\na1\nb\nc\nd\n")})  # two new files sort first
    assert resumed.commands == ["ls in", "do a0", "do a1", "do d"]


def test_goal_validate_is_limited_by_the_time_budget() -> None:
    d = drive(goal(timeout_seconds=5.0))
    d.finish_command(duration=2.0)  # the command
    validate = d.pending(RunCommand)
    assert command_text(validate) == "score" and validate.timeout == 3.0
    d.finish_command(timed_out=True, duration=3.0)
    assert d.vars["goal_seek.status"] == "timeout"
    assert "validate ran out of time" in d.printed


def test_goal_text_is_interpolated_and_nested_output_is_shown() -> None:
    step = Step(kind="goal_seek", command="fill ${who}", goal_seek=GoalSeekSpec(
        goal="fill ${who}", command=shell("echo attempt"), validate="score", threshold=50,
        max_attempts=2))
    d = drive(shell("echo me", capture="who"), step,
              each(["a"], shell("echo item ${item}")))
    d.run(lambda e: R(stdout="score: 60") if command_text(e) == "score" else
          R(stdout=command_text(e).removeprefix("echo ") + "\n"))
    assert "Goal 'fill me' achieved in 1 attempts (60%)" in d.printed
    assert "    attempt" in d.printed and "    item a" in d.printed


def test_quiet_failures_make_the_failure_report_detail() -> None:
    from prodigy_core.effects import Print

    for quiet, level in ((True, "detail"), (False, "info")):
        d = Driver(run_machine.start(Workflow(name="t", steps=(shell("bad"),)),
                                     make_ctx(quiet_failures=quiet)))
        d.run({"bad": R(exit_code=2, stderr="boom\n")})
        report = [e for e in d.of(Print) if e.text.startswith("error[E3001]")
                  or e.text.startswith("=== Error Output")]
        assert report and {e.level for e in report} == {level}
