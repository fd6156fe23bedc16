"""Layer 1: worktrees of MapReduce agents, ``worktree_config`` (spec 06 §9), no I/O.

The job machine is driven through ``JobDriver`` with a small model of the disk: which
agent worktrees exist (``disk``), and which agent holds each one (``holders``), so the
tests can check that a pool worktree is never given to two agents at once, that a pool
never grows beyond the concurrency limit, and that nothing is left when the job ends —
also across crashes and resumes.
"""

from __future__ import annotations

import random
from typing import Any

import attrs
import pytest

from prodigy_core import job_machine
from prodigy_core.effects import Effect, RunCommand, Sleep
from prodigy_core.events import CancelRequested, CommandFinished, Slept
from prodigy_core.job_ops import FinishAgent, RecordDLQ, SaveJobState
from prodigy_core.job_state import JobConfig
from prodigy_core.model import ErrorPolicy, ItemRetry, PoolCleanup, ResourceLimits, WorktreeConfig
from prodigy_core.support import runtime_gaps
from prodigy_core.worktree_ops import (
    CreateWorktree,
    InspectMerge,
    MergeBranch,
    RemovePool,
    WorktreeCreated,
)
from tests.core._job_driver import (
    AGENT_HEAD,
    AGENTS_DIR,
    CONFIG,
    JOB,
    JobDriver,
    item_of,
    mapreduce,
)
from tests.core._machine_driver import shell
from tests.core._parse_helpers import load

ECHO = (shell("echo ${item}"),)
POOL_DIR = "/store/worktrees/repo/.pool"


def pooled(**cleanup: Any) -> WorktreeConfig:
    return WorktreeConfig(allocation_strategy="pooled", cleanup_policy=PoolCleanup(**cleanup))


def workflow(config: WorktreeConfig, **map_fields: Any) -> Any:
    return attrs.evolve(mapreduce(ECHO, **map_fields), worktree_config=config)


class PoolDriver(JobDriver):
    """``JobDriver`` with the agent worktrees on disk and who holds them."""

    def __init__(self, wf: Any, config: JobConfig = CONFIG) -> None:
        self.disk: set[str] = set()
        self.holders: dict[str, int] = {}
        self.most_on_disk = 0
        super().__init__(wf, config=config)

    def _take(self, transition: job_machine.Transition) -> tuple[Effect, ...]:
        self._removal: tuple[int, str] | None = None
        effects = super()._take(transition)
        for position, effect in enumerate(effects):
            if isinstance(effect, RemovePool):
                # performed in order: only if the process lives that long (see ``crash``)
                self._removal = (position, effect.directory)
                if self.finished:
                    self._remove_pool(len(effects))
        return effects

    def _remove_pool(self, performed: int) -> None:
        removal, self._removal = getattr(self, "_removal", None), None
        if removal is not None and removal[0] < performed:
            self.disk = {p for p in self.disk if not p.startswith(f"{removal[1]}/pool-")}

    def send(self, event: Any) -> tuple[Effect, ...]:
        self._remove_pool(len(self.batches[-1]))
        return super().send(event)

    def agent_created(self, effect: CreateWorktree) -> tuple[Effect, ...]:
        path, lock = effect.path, ""
        if effect.mode == "shared_pool":
            n = 0
            while f"{effect.path}/pool-{n}" in self.holders:
                n += 1
            path, lock = f"{effect.path}/pool-{n}", f"{effect.path}/pool-{n}.lock"
        assert path not in self.holders, f"{path} is used by two agents at once"
        created = effect.mode == "agent" or effect.fresh or path not in self.disk
        self.disk.add(path)
        self.holders[path] = item_of(effect.branch)
        self.most_on_disk = max(self.most_on_disk,
                                len([p for p in self.disk if "/pool-" in p]))
        return self.send(WorktreeCreated(command_id=effect.command_id, path=path,
                                         branch=effect.branch, head=AGENT_HEAD,
                                         created=created, lock_file=lock))

    def released(self, effect: FinishAgent, commits: tuple[str, ...] = ()) -> tuple[Effect, ...]:
        self.holders.pop(effect.path, None)
        if not effect.keep:
            self.disk.discard(effect.path)
        elif effect.move_to:
            self.disk.discard(effect.path)
            self.disk.add(effect.move_to)
        return super().released(effect, commits)

    def crash(self, cut: int) -> None:
        self._remove_pool(cut)
        super().crash(cut)
        self.holders.clear()  # the process is gone; the worktrees stay

    def pool_on_disk(self) -> set[str]:
        return {p for p in self.disk if p.startswith(f"{AGENTS_DIR}/pool-")}


def doc(d: JobDriver) -> dict[str, Any]:
    return d.of(SaveJobState)[-1].doc  # type: ignore[no-any-return]


# --- pooled: acceptance example 14 --------------------------------------------------------


def test_pooled_two_at_once_six_items_creates_two_and_reuses_four() -> None:
    d = PoolDriver(workflow(pooled(), max_parallel=2))
    finish = d.run(list(range(6)), commits=True)
    assert finish.exit_code == 0
    creates = d.of(CreateWorktree)[1:]
    assert {c.mode for c in creates} == {"pool"}
    assert {c.path for c in creates} == {f"{AGENTS_DIR}/pool-0", f"{AGENTS_DIR}/pool-1"}
    assert not any(c.fresh for c in creates)
    assert [e["worktree_name"] for e in d.logs("worktree_created")][1:] == ["pool-0", "pool-1"]
    reused = d.logs("worktree_reused")
    assert len(reused) == 4 and {e["worktree_name"] for e in reused} <= {"pool-0", "pool-1"}
    assert doc(d)["worktree_stats"] == {"worktrees_created": 2, "worktrees_reused": 4,
                                        "max_worktrees_in_use": 2}
    # released worktrees are detached (their branches merge and go), never removed
    assert all(f.keep and f.detach and not f.discard for f in d.of(FinishAgent))
    # the pool goes when the job ends, before the final merge
    kinds = [type(e).__name__ for e in d.effects]
    assert kinds.count("RemovePool") == 1
    assert kinds.index("RemovePool") < kinds.index("InspectMerge")
    assert d.pool_on_disk() == set() and d.most_on_disk == 2


def test_each_agent_gets_a_new_branch_in_the_recycled_worktree() -> None:
    d = PoolDriver(workflow(pooled(clean_ignored=True), max_parallel=1))
    d.run([0, 1, 2])
    creates = d.of(CreateWorktree)[1:]
    assert [c.path for c in creates] == [f"{AGENTS_DIR}/pool-0"] * 3
    assert [item_of(c.branch) for c in creates] == [0, 1, 2]
    assert all(c.clean_ignored for c in creates)
    agents = [e["worktree"] for e in d.logs("agent_started")]
    assert agents == [f"{AGENTS_DIR}/pool-0"] * 3


def test_parallel_worktrees_caps_the_agents_running_at_once() -> None:
    d = PoolDriver(workflow(WorktreeConfig(parallel_worktrees=2), max_parallel=5))
    d.session_created()
    d.items_loaded(list(range(5)))
    assert len(d.waiting(CreateWorktree)) == 2
    assert "Processing 5 items with 2 parallel agents" in d.printed
    d.run()
    assert d.state is not None and d.state.max_in_use == 2
    assert not d.of(RemovePool)  # on_demand: no pool


def test_cleanup_on_complete_false_keeps_the_pool() -> None:
    d = PoolDriver(workflow(pooled(cleanup_on_complete=False), max_parallel=2))
    d.run([0, 1, 2])
    assert not d.of(RemovePool)
    assert d.pool_on_disk() == {f"{AGENTS_DIR}/pool-0", f"{AGENTS_DIR}/pool-1"}


def _finish_command(d: JobDriver, effect: RunCommand, *, exit_code: int = 0,
                    monotonic: float) -> None:
    d.send(CommandFinished(command_id=effect.command_id, exit_code=exit_code,
                           finished_at="2026-01-01T00:00:01.000Z", monotonic=monotonic))


def test_a_pool_worktree_older_than_max_age_is_removed_when_released() -> None:
    d = PoolDriver(workflow(pooled(max_age_secs=60), max_parallel=1))
    d.session_created()
    d.items_loaded([0, 1, 2])
    d.agent_created(d.one(CreateWorktree))
    _finish_command(d, d.one(RunCommand), monotonic=100.0)
    first = d.one(FinishAgent)
    assert first.keep and first.detach  # born now: young
    d.released(first)
    second = d.one(CreateWorktree)
    assert second.path == f"{AGENTS_DIR}/pool-0" and not second.fresh
    d.agent_created(second)
    _finish_command(d, d.one(RunCommand), monotonic=200.0)
    old = d.one(FinishAgent)
    assert not old.keep  # 100 s old: removed instead of recycled
    d.released(old)
    third = d.one(CreateWorktree)
    d.agent_created(third)
    assert d.logs("worktree_created")[-1]["worktree_name"] == "pool-0"
    d.run()
    assert d.pool_on_disk() == set()


def test_the_age_of_a_pool_worktree_counts_from_its_creation() -> None:
    d = PoolDriver(workflow(pooled(max_age_secs=60), max_parallel=1))
    d.session_created()
    d.items_loaded([0, 1])
    create = d.one(CreateWorktree)
    d.send(WorktreeCreated(command_id=create.command_id, path=create.path,
                           branch=create.branch, head=AGENT_HEAD, monotonic=10.0))
    _finish_command(d, d.one(RunCommand), monotonic=100.0)
    release = d.one(FinishAgent)
    assert not release.keep  # made at 10, released at 100: too old at its first release
    assert d.run().exit_code == 0


def test_an_idle_pool_worktree_past_idle_timeout_is_made_anew() -> None:
    retry = ErrorPolicy(on_item_failure="retry",
                        retry_config=ItemRetry(max_attempts=2, initial_delay=30.0))
    d = PoolDriver(workflow(pooled(idle_timeout_secs=10), max_parallel=1,
                            error_policy=retry))
    d.session_created()
    d.items_loaded([0])
    d.agent_created(d.one(CreateWorktree))
    _finish_command(d, d.one(RunCommand), exit_code=1, monotonic=100.0)
    d.released(d.one(FinishAgent))
    delay = d.one(Sleep)
    d.send(Slept(command_id=delay.command_id, monotonic=140.0))
    again = d.one(CreateWorktree)
    assert again.path == f"{AGENTS_DIR}/pool-0" and again.fresh
    d.agent_created(again)
    assert d.logs("worktree_created")[-1]["worktree_name"] == "pool-0"
    d.run()
    assert doc(d)["worktree_stats"]["worktrees_created"] == 2


def test_keep_failed_takes_the_worktree_out_of_the_pool() -> None:
    d = PoolDriver(workflow(pooled(keep_failed=True), max_parallel=1))
    finish = d.run([0, 1], exits={"echo 0": 3})
    assert finish.exit_code == 3
    failed = d.of(FinishAgent)[0]
    kept = f"{AGENTS_DIR}/mapreduce-agent-{JOB}_agent_0"
    assert failed.keep and failed.move_to == kept and not failed.detach
    (entry,) = d.of(RecordDLQ)
    artifacts: Any = entry.worktree_artifacts
    assert artifacts["worktree_path"] == kept
    assert artifacts["branch_name"] == f"prodigy-mapreduce-agent-{JOB}_agent_0"
    # the next agent gets pool-0 anew; the kept worktree survives the pool's removal
    assert [e["worktree_name"] for e in d.logs("worktree_created")][1:] == ["pool-0", "pool-0"]
    assert d.disk == {kept}


# --- interruption and crashes -------------------------------------------------------------


def test_sigint_drops_the_agents_work_and_removes_the_pool() -> None:
    d = PoolDriver(workflow(pooled(), max_parallel=2))
    d.session_created()
    d.items_loaded([0, 1, 2])
    for create in d.waiting(CreateWorktree):
        d.agent_created(create)
    d.send(CancelRequested(signal="SIGINT"))
    for command in d.waiting(RunCommand):
        d.command(command, 130, cancelled=True)
    releases = d.waiting(FinishAgent)
    assert all(r.discard and r.keep and r.detach for r in releases)
    for release in releases:
        d.released(release)
    assert d.finish.exit_code == 130
    assert len(d.of(RemovePool)) == 1 and d.pool_on_disk() == set()


def test_a_resumed_job_recycles_the_pool_a_crash_left() -> None:
    d = PoolDriver(workflow(pooled(), max_parallel=2))
    d.session_created()
    d.items_loaded([0, 1, 2, 3])
    for create in d.waiting(CreateWorktree):
        d.agent_created(create)
    d.command(d.waiting(RunCommand)[0])
    d.released(d.one(FinishAgent))  # item 0 done; item 2 starts in pool-0
    d.crash(len(d.batches[-1]))
    assert d.pool_on_disk() == {f"{AGENTS_DIR}/pool-0", f"{AGENTS_DIR}/pool-1"}
    d.resume()
    d.session_created()
    creates = d.waiting(CreateWorktree)
    assert [item_of(c.branch) for c in creates] == [1, 2]
    d.run()
    # item 0 finished before the crash and never runs again
    assert [e["item_id"] for e in d.logs("agent_completed")] == \
        ["item_0", "item_1", "item_2", "item_3"]
    stats = doc(d)["worktree_stats"]
    assert stats["worktrees_created"] == 2 and stats["worktrees_reused"] >= 3
    assert d.pool_on_disk() == set() and d.most_on_disk == 2


@pytest.mark.parametrize("seed", range(25))
def test_random_crashes_never_leak_share_or_rerun(seed: int) -> None:
    """Crash anywhere, resume, repeat: every item succeeds once, no pool worktree is
    ever held by two agents (the driver asserts it), none is left at the end, and the
    pool never has more worktrees than agents run at once."""
    rng = random.Random(seed)
    d = PoolDriver(workflow(pooled(), max_parallel=3))
    d.session_created()
    d.items_loaded(list(range(8)))
    for _ in range(rng.randint(0, 3)):
        for _ in range(rng.randint(1, 25)):
            if d.finished or not d.outstanding:
                break
            _answer_one(d, rng)
        if d.finished or d.resumable() is None:
            break
        d.crash(rng.randint(0, len(d.batches[-1])))
        if d.resumable() is None:
            return  # died before the first job state: nothing to resume
        d.resume()
    d.run(commits=True)
    # the durable journal (what the processes really did): each item completed once
    completed = [r["event"]["item_id"] for r in d.journal()
                 if r["event"]["event_type"] == "agent_completed"]
    assert sorted(completed) == sorted(f"item_{i}" for i in range(8))
    assert d.pool_on_disk() == set()
    assert d.most_on_disk <= 3


def _answer_one(d: PoolDriver, rng: random.Random) -> None:
    effect = rng.choice([e for e in d.outstanding.values() if not isinstance(e, Sleep)])
    if isinstance(effect, CreateWorktree):
        if effect.mode == "pool":
            d.agent_created(effect)
        else:
            d.session_created()
    elif isinstance(effect, RunCommand):
        d.command(effect)
    elif isinstance(effect, FinishAgent):
        d.released(effect, ("1" * 40,))
    elif isinstance(effect, MergeBranch):
        d.merge(effect)
    elif isinstance(effect, InspectMerge):
        d.final_merge()
    else:
        raise AssertionError(f"unexpected {effect}")


# --- dedicated, on_demand, reuse ----------------------------------------------------------


def test_dedicated_keeps_every_agent_worktree() -> None:
    d = PoolDriver(workflow(WorktreeConfig(allocation_strategy="dedicated"), max_parallel=2))
    finish = d.run([0, 1, 2], exits={"echo 1": 2}, commits=True)
    assert finish.exit_code == 3
    creates = d.of(CreateWorktree)[1:]
    assert {c.mode for c in creates} == {"agent"}
    by_item = {item_of(f.path): f for f in d.of(FinishAgent)}
    assert by_item[0].keep and by_item[0].detach   # succeeded: its branch merges and goes
    assert by_item[1].keep and not by_item[1].detach  # failed: kept as it is
    (entry,) = d.of(RecordDLQ)
    artifacts: Any = entry.worktree_artifacts
    assert artifacts["worktree_path"] == f"{AGENTS_DIR}/mapreduce-agent-{JOB}_agent_1"
    assert not d.of(RemovePool)
    assert len(d.disk) == 3
    assert doc(d)["worktree_stats"]["worktrees_created"] == 3


def test_on_demand_keep_failed_lists_the_kept_worktree_in_the_dlq() -> None:
    cfg = WorktreeConfig(cleanup_policy=PoolCleanup(keep_failed=True))
    d = PoolDriver(workflow(cfg, max_parallel=1))
    d.run([0, 1], exits={"echo 0": 1})
    first, second = d.of(FinishAgent)
    assert first.keep and not first.move_to and not second.keep
    (entry,) = d.of(RecordDLQ)
    artifacts: Any = entry.worktree_artifacts
    assert artifacts["worktree_path"] == first.path and artifacts["branch_name"]


def test_reuse_takes_worktrees_from_the_repository_pool() -> None:
    config = attrs.evolve(CONFIG, pool_dir=POOL_DIR)
    cfg = WorktreeConfig(allocation_strategy="reuse",
                         cleanup_policy=PoolCleanup(idle_timeout_secs=50, max_age_secs=70))
    d = PoolDriver(workflow(cfg, max_parallel=2), config=config)
    d.run([0, 1, 2])
    creates = d.of(CreateWorktree)[1:]
    assert {(c.mode, c.path, c.owner) for c in creates} == {("shared_pool", POOL_DIR, JOB)}
    assert all(c.idle_timeout_secs == 50 and c.max_age_secs == 70 for c in creates)
    releases = d.of(FinishAgent)
    assert all(r.keep and r.detach and r.lock_file.startswith(f"{POOL_DIR}/pool-")
               for r in releases)
    assert all(r.path.startswith(f"{POOL_DIR}/pool-") for r in releases)
    started = [e["worktree"] for e in d.logs("agent_started")]
    assert all(p.startswith(f"{POOL_DIR}/pool-") for p in started)
    assert not d.of(RemovePool)  # the repository pool outlives the job


# --- the workflow file ---------------------------------------------------------------------

MR = "name: m\nmode: mapreduce\nmap:\n  input: x.json\n  agent_template: [{shell: x}]\n"


def test_worktree_config_parses_into_its_model() -> None:
    outcome = load(MR + "worktree_config:\n  parallel_worktrees: 3\n"
                        "  allocation_strategy: Pooled\n"
                        "  cleanup_policy: {idle_timeout_secs: 5m, max_age_secs: 7200,\n"
                        "                   clean_ignored: true, cleanup_on_complete: false}\n")
    assert outcome.problems == ()
    assert outcome.workflow is not None
    assert outcome.workflow.worktree_config == WorktreeConfig(
        parallel_worktrees=3, allocation_strategy="pooled",
        cleanup_policy=PoolCleanup(idle_timeout_secs=300.0, max_age_secs=7200.0,
                                   clean_ignored=True, cleanup_on_complete=False))
    assert runtime_gaps(outcome.workflow) == ()


@pytest.mark.parametrize(("text", "code", "path"), [
    ("  parallel_worktrees: 0\n", "E1005", "$.worktree_config.parallel_worktrees"),
    ("  parallel_worktrees: two\n", None, "$.worktree_config.parallel_worktrees"),
    ("  allocation_strategy: lazy\n", "E1005", "$.worktree_config.allocation_strategy"),
    ("  cleanup_policy: {idle_timeout_secs: soon}\n", "E1011",
     "$.worktree_config.cleanup_policy.idle_timeout_secs"),
    ("  cleanup_policy: {keep_failed: 3}\n", None, "$.worktree_config.cleanup_policy.keep_failed"),
    ("  resource_limits: {max_disk_mb: 0}\n", "E1005",
     "$.worktree_config.resource_limits.max_disk_mb"),
    ("  parallel_worktree: 2\n", "W1001", "$.worktree_config.parallel_worktree"),
])
def test_bad_worktree_config_values_are_reported_with_their_path(
        text: str, code: str | None, path: str) -> None:
    outcome = load(MR + "worktree_config:\n" + text)
    found = [p for p in outcome.problems if p.path == path]
    assert found, outcome.problems
    if code is not None:
        assert found[0].code == code
    assert found[0].line > 0


def test_resource_limits_run_and_standard_workflows_are_refused_by_name() -> None:
    with_limits = load(MR + "worktree_config: {resource_limits: {max_memory_mb: 512}}\n")
    assert with_limits.workflow is not None
    assert runtime_gaps(with_limits.workflow) == ()
    assert ResourceLimits(max_memory_mb=512) == \
        with_limits.workflow.worktree_config.resource_limits  # type: ignore[union-attr]
    standard = load("worktree_config: {parallel_worktrees: 2}\nsteps: [{shell: x}]\n")
    assert standard.workflow is not None
    (gap,) = runtime_gaps(standard.workflow)
    assert (gap.code, gap.path) == ("E1016", "$.worktree_config")
