"""Layer 1: ``worktree_config.resource_limits`` of MapReduce agents (spec 06 §9.4), no I/O."""

from __future__ import annotations

import json
from typing import Any

import attrs
import pytest

from prodigy_core.effects import CancelCommands, RunClaude, RunCommand, Sleep
from prodigy_core.events import CancelRequested, CommandFinished
from prodigy_core.job_ops import FinishAgent, MeasureWorktree, RecordDLQ
from prodigy_core.model import ForeachSpec, ResourceLimits, Step, WorktreeConfig
from prodigy_core.worktree_ops import CreateWorktree
from tests.core._job_driver import AGENTS_DIR, JobDriver, mapreduce
from tests.core._machine_driver import command_text, shell

MB = 1024 * 1024
TWO_STEPS = (shell("echo one ${item}"), shell("echo two ${item}"))


def limited(template: tuple[Step, ...] = TWO_STEPS, **limits: Any) -> Any:
    wf = mapreduce(template, max_parallel=1)
    return attrs.evolve(wf, worktree_config=WorktreeConfig(
        resource_limits=ResourceLimits(**limits)))


def dlq(d: JobDriver) -> dict[str, dict[str, Any]]:
    return {e.item_id: e.failure for e in d.of(RecordDLQ)}


def texts(d: JobDriver) -> list[str]:
    return [command_text(c) for c in d.of(RunCommand)]


def test_each_step_is_followed_by_a_measure_of_the_agents_own_worktree() -> None:
    d = JobDriver(limited(max_disk_mb=10))
    assert d.run([0, 1, 2], sizes={}).exit_code == 0
    measured = d.of(MeasureWorktree)
    assert len(measured) == 6  # two steps, three agents
    agent_dirs = {c.cwd for c in d.of(RunCommand) if c.cwd.startswith(AGENTS_DIR)}
    assert {m.path for m in measured} == agent_dirs and len(agent_dirs) == 3
    assert not d.of(RecordDLQ)


def test_an_agent_whose_worktree_grows_above_the_limit_fails_with_resource_exhausted() -> None:
    d = JobDriver(limited(max_disk_mb=10))
    d.run([0, 1])  # a first run shows the agent paths
    paths = sorted({m.path for m in d.of(MeasureWorktree)})
    d = JobDriver(limited(max_disk_mb=10))
    d.run([0, 1], sizes={paths[0]: 11 * MB, paths[1]: 10 * MB})
    # item 0 stops after its first step; item 1 is exactly at the limit and goes on
    assert "echo two 0" not in texts(d) and "echo two 1" in texts(d)
    failures = dlq(d)
    assert set(failures) == {"item_0"}
    failure = failures["item_0"]
    assert failure["error_type"] == "ResourceExhausted"
    assert failure["error_message"] == ("worktree uses 11.0 MB, above "
                                        "resource_limits.max_disk_mb (10 MB)")
    assert failure["step_failed"] == "shell: echo one ${item}"


def test_a_worktree_that_cannot_be_measured_warns_and_the_agent_goes_on() -> None:
    d = JobDriver(limited(max_disk_mb=10))
    d.run([0])
    (path,) = {m.path for m in d.of(MeasureWorktree)}
    d = JobDriver(limited(max_disk_mb=10))
    assert d.run([0], sizes={path: f"{path}: No such file or directory"}).exit_code == 0
    assert "echo two 0" in texts(d)
    assert "W4005" in d.printed and "could not measure" in d.printed
    assert not d.of(RecordDLQ)


def test_the_memory_limit_travels_with_every_agent_command_and_only_those() -> None:
    d = JobDriver(limited(max_memory_mb=100))
    assert d.run([0, 1]).exit_code == 0
    assert not d.of(MeasureWorktree)  # no disk limit: nothing measured
    agent = [c for c in d.of(RunCommand) if c.cwd.startswith(AGENTS_DIR)]
    assert len(agent) == 4 and all(c.memory_limit_mb == 100 for c in agent)
    others = [c for c in d.of(RunCommand) if not c.cwd.startswith(AGENTS_DIR)]
    assert all(c.memory_limit_mb is None for c in others)


def test_a_command_stopped_above_its_memory_limit_fails_its_agent_at_once() -> None:
    on_failure = Step(kind="shell", command="echo one ${item}",
                      on_failure=shell("echo repair ${item}"))
    d = JobDriver(limited((on_failure, shell("echo two ${item}")), max_memory_mb=64))
    message = ("resident memory 80.0 MB is above resource_limits.max_memory_mb (64 MB); "
               "the command was stopped")
    d.run([0, 1], exhausted={"echo one 0": message})
    # no handler, no next step for item 0; item 1 is not affected
    assert "echo repair 0" not in texts(d) and "echo two 0" not in texts(d)
    assert "echo two 1" in texts(d)
    failures = dlq(d)
    assert set(failures) == {"item_0"}
    assert failures["item_0"]["error_type"] == "ResourceExhausted"
    assert failures["item_0"]["error_message"] == message
    assert f"[item_0] {message}" in d.printed


def test_claude_calls_of_agents_carry_the_memory_limit() -> None:
    d = JobDriver(limited((Step(kind="claude", command="/fix ${item}"),), max_memory_mb=256))
    with pytest.raises(AssertionError, match="unexpected effect RunClaude"):
        d.run([0])
    (call,) = d.waiting(RunClaude)
    assert call.memory_limit_mb == 256


def lanes_workflow(**map_fields: Any) -> Any:
    spec = ForeachSpec(do=(shell("lane ${item}"),), items_json=json.dumps(["a", "b", "c"]),
                       parallel=3)
    wf = mapreduce((Step(kind="foreach", command="f", foreach=spec),), max_parallel=1,
                   **map_fields)
    return attrs.evolve(wf, worktree_config=WorktreeConfig(
        resource_limits=ResourceLimits(max_memory_mb=64)))


def start_lanes(d: JobDriver) -> list[RunCommand]:
    d.session_created()
    d.items_loaded([0])
    d.agent_created(d.one(CreateWorktree, lambda e: e.mode == "agent"))
    lanes = d.waiting(RunCommand)
    assert len(lanes) == 3
    return lanes


def test_a_stopped_agent_with_parallel_lanes_ends_after_its_last_lane_reports() -> None:
    d = JobDriver(lanes_workflow())
    lanes = start_lanes(d)
    message = "resident memory 99.0 MB is above resource_limits.max_memory_mb (64 MB)"
    d.send(CommandFinished(command_id=lanes[0].command_id, exit_code=-1, exhausted=message))
    cancel = d.of(CancelCommands)[-1]
    assert set(cancel.command_ids) == {lanes[1].command_id, lanes[2].command_id}
    d.command(lanes[1], 143, cancelled=True)
    assert not d.waiting(FinishAgent)  # one lane still runs: not released yet
    d.command(lanes[2], 143, cancelled=True)
    d.released(d.one(FinishAgent))
    assert d.run().exit_code == 3
    assert dlq(d)["item_0"]["error_type"] == "ResourceExhausted"


def test_an_agent_timeout_with_parallel_lanes_waits_for_every_lane() -> None:
    d = JobDriver(lanes_workflow(agent_timeout_secs=5))
    lanes = start_lanes(d)
    timer = d.one(Sleep)
    d.timer(timer)
    for lane in lanes[:2]:
        d.command(lane, 143, cancelled=True)
        assert not d.waiting(FinishAgent)
    d.command(lanes[2], 143, cancelled=True)
    d.released(d.one(FinishAgent))
    assert d.run().exit_code == 3
    assert dlq(d)["item_0"]["error_type"] == "Timeout"


def test_an_interrupted_agent_with_parallel_lanes_waits_for_every_lane() -> None:
    d = JobDriver(lanes_workflow())
    lanes = start_lanes(d)
    d.send(CancelRequested(signal="SIGINT"))
    for lane in lanes[:2]:
        d.command(lane, 130, cancelled=True)
        assert not d.waiting(FinishAgent)
    d.command(lanes[2], 130, cancelled=True)
    d.released(d.one(FinishAgent))
    assert d.finish.exit_code == 130
    assert d.state is not None and d.state.item_state.get(0) == "pending"
