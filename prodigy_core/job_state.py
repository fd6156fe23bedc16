"""The state of a MapReduce job (``prodigy_core.job_machine`` explains the machine).

``JobState`` holds everything the job machine knows: the phase, the setup and reduce step
machines, the final item list with each item's status, the running agents (each with its
own step machine), the items waiting for their retry delay, the merge queue, the agent
results, the circuit breakers shared by every scope, the job circuit breaker that pauses
dispatch (``DispatchBreaker``), the job's own timers, the worktree pool of its agents
(``PoolWorktree``, ``prodigy_core.job_pool``) and the final merge.  Everything is
immutable (attrs frozen classes, tuples, pyrsistent maps); transitions use
``attrs.evolve``.
"""

from __future__ import annotations

from collections.abc import ItemsView, Iterator, KeysView, Mapping, ValuesView
from typing import Literal

import attrs
from pyrsistent import PMap, pmap

from prodigy_core import merge_machine
from prodigy_core.breakers import Breakers
from prodigy_core.context import RunContext
from prodigy_core.interpolate import Var
from prodigy_core.json_values import JSON
from prodigy_core.model import Workflow
from prodigy_core.reprs import value_class
from prodigy_core.step_frames import Stepper
from prodigy_core.work_items import FailureKind

JobPhase = Literal["worktree", "env", "setup", "items", "map", "reduce", "merge", "done"]
ItemStatus = Literal["pending", "running", "merging", "succeeded", "failed"]
AgentStage = Literal["create", "steps", "measure", "release"]
BreakerStatus = Literal["closed", "open", "half_open"]
# what a job-level ``Sleep`` is for: a phase limit (spec 05 §4.2, §12.3) or the open
# period of the job circuit breaker (spec 05 §10.5)
TimerUse = Literal["setup", "reduce", "breaker"]


@value_class
@attrs.frozen(repr=False, eq=False)
class ItemStates:
    """The status of every item, with the number of items in each status kept up to date
    (the job machine asks for those counts on every event; counting a job's thousands of
    items each time made a job's CPU time per item grow with its size).

    Read like the mapping it wraps (``get``, ``items``, ``values``, ``[index]``, ``in``,
    iteration, ``len``); ``set`` gives a new one; ``of`` makes one from a mapping.
    """

    statuses: PMap[int, ItemStatus] = pmap()
    tally: PMap[str, int] = pmap()

    @classmethod
    def of(cls, statuses: Mapping[int, ItemStatus]) -> ItemStates:
        tally: dict[str, int] = {}
        for status in statuses.values():
            tally[status] = tally.get(status, 0) + 1
        return cls(pmap(statuses), pmap(tally))

    def set(self, index: int, status: ItemStatus) -> ItemStates:
        old = self.statuses.get(index)
        if old == status:
            return self
        tally = self.tally
        if old is not None:  # no zero counts: equal statuses, equal tallies
            tally = tally.set(old, tally[old] - 1) if tally[old] > 1 else tally.discard(old)
        tally = tally.set(status, tally.get(status, 0) + 1)
        return ItemStates(self.statuses.set(index, status), tally)

    def count(self, status: ItemStatus) -> int:
        return self.tally.get(status, 0)

    def get(self, index: int, default: ItemStatus | None = None) -> ItemStatus | None:
        return self.statuses.get(index, default)

    def items(self) -> ItemsView[int, ItemStatus]:
        return self.statuses.items()

    def values(self) -> ValuesView[ItemStatus]:
        return self.statuses.values()

    def keys(self) -> KeysView[int]:
        return self.statuses.keys()

    def __getitem__(self, index: int) -> ItemStatus:
        return self.statuses[index]

    def __contains__(self, index: object) -> bool:
        return index in self.statuses

    def __iter__(self) -> Iterator[int]:
        return iter(self.statuses)

    def __len__(self) -> int:
        return len(self.statuses)


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class JobConfig:
    """Where a job keeps its things (decided by the caller, who knows the storage root).

    ``job_dir`` is ``<storage>/state/<repo>/mapreduce/jobs/<job_id>``; ``agents_dir`` is
    ``<storage>/worktrees/<session id>`` (agent worktrees, spec 06 §5.1).
    """

    job_id: str
    job_dir: str
    agents_dir: str
    repo_lock: str = ""
    # ``<storage>/worktrees/<repo>/.pool``: the repository's pool (``reuse``, spec 06 §9.2)
    pool_dir: str = ""
    # a DLQ reprocess job (spec 05 §17): its items keep the ids of the original job, a
    # success removes the item's DLQ entry, and the final merge only happens when the job
    # made its own session worktree
    reprocess_of: str | None = None
    final_merge: bool = True


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class Failure:
    """Why an item failed (the structured cause of spec 05 §13.2)."""

    kind: FailureKind
    message: str
    exit_code: int | None = None
    step: str | None = None
    step_index: int | None = None
    conflicting_files: tuple[str, ...] = ()
    branch: str | None = None
    # the failed agent's worktree, kept for inspection (``keep_failed``, ``dedicated``)
    kept_worktree: str | None = None


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class Agent:
    """One attempt of one item: its worktree, its step machine and its progress."""

    index: int
    agent_id: str
    attempt: int
    path: str
    branch: str
    # the worktree's name: ``mapreduce-agent-<agent_id>``, or ``pool-<n>`` of a pool
    worktree: str = ""
    # the job pool's worktree it holds (``pooled``), or the lock file of the repository
    # pool's worktree (``reuse``)
    slot: str | None = None
    lock_file: str | None = None
    # decided when its steps end: the pool worktree goes back to the pool; the worktree
    # kept for inspection (spec 06 §9)
    slot_back: bool = False
    kept: str | None = None
    stage: AgentStage = "create"
    pending: int | None = None
    base: str | None = None
    step_index: int = 0
    stepper: Stepper = Stepper()
    timer: int | None = None
    started_at: str = ""
    mono_start: float | None = None
    duration: float = 0.0
    # stopped by the job (its timeout, or a resource limit): ``failure`` says why and
    # whatever its commands report next, no retry, handler or next step starts
    stopped: bool = False
    # a stopped (or interrupted) agent's commands that have reported since: it is released
    # once every command it had running has reported (parallel ``foreach`` lanes)
    reported: frozenset[int] = frozenset()
    cancelled: bool = False
    failure: Failure | None = None
    outputs: tuple[str, ...] = ()
    transcript: str | None = None


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class PoolWorktree:
    """A worktree of the job's pool (``allocation_strategy: pooled``, spec 06 §9.2).

    ``user`` is the item whose agent holds it (None: idle); ``born`` the ``monotonic``
    reading when this process created or first took it, ``idle_since`` when it was last
    given back (both 0.0 when no reading was known yet).
    """

    name: str
    path: str
    user: int | None = None
    born: float = 0.0
    idle_since: float = 0.0


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class Queued:
    """An agent branch waiting for (or in) the merge queue (spec 05 §8)."""

    index: int
    agent_id: str
    branch: str
    path: str
    commits: tuple[str, ...] = ()
    files: tuple[str, ...] = ()
    uncommitted: tuple[str, ...] = ()
    duration: float = 0.0
    attempt: int = 1
    output: str = ""
    transcript: str | None = None
    cost: float = 0.0


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class DispatchBreaker:
    """The job circuit breaker (``prodigy_core.job_breaker`` explains it).

    ``failures`` counts consecutive item failures while closed, ``successes`` consecutive
    successes while half-open; ``timer`` is the ``Sleep`` of the open period; ``trials``
    are the items started while half-open whose result is not in yet.
    """

    status: BreakerStatus = "closed"
    failures: int = 0
    successes: int = 0
    timer: int | None = None
    trials: frozenset[int] = frozenset()


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class JobState:
    workflow: Workflow
    ctx: RunContext
    config: JobConfig
    # the ``cache: true`` env entry being computed before setup (``step_env``)
    env_index: int = 0
    phase: JobPhase = "worktree"
    status: Literal["running", "completed", "failed", "interrupted"] = "running"
    next_id: int = 1
    pending: int | None = None  # the one request of the worktree/items phases
    resumed: bool = False
    # setup (spec 05 §4)
    setup_index: int = 0
    setup: Stepper = Stepper()
    setup_base: str | None = None
    variables: PMap[str, Var] = pmap()  # captured in setup: visible to agents and reduce
    # items (spec 05 §5); ``item_ids`` overrides ``item_<index>`` (reprocess jobs)
    items: tuple[JSON, ...] = ()
    item_ids: tuple[str, ...] = ()
    items_loaded: bool = False
    item_state: ItemStates = ItemStates()
    attempts: PMap[int, int] = pmap()
    results: PMap[int, dict[str, JSON]] = pmap()
    # agents and merges (spec 05 §7–§8)
    agents: PMap[int, Agent] = pmap()
    # pending items waiting for their retry delay (spec 05 §10.4): index → ``Sleep`` id;
    # not saved (after a resume such an item is simply pending)
    backoff: PMap[int, int] = pmap()
    # the step circuit breakers of the job (spec 10 §3.3), shared by setup, every agent,
    # reduce and the final merge's steps; not saved (a resumed job starts them closed)
    breakers: Breakers = Breakers()
    queue: tuple[Queued, ...] = ()
    merging: Queued | None = None
    merge_request: int | None = None
    saved_finals: int = 0  # final items at the last job state version
    failed_this_run: int = 0
    finished_this_run: int = 0
    stop_reason: str | None = None
    # agent worktrees (spec 06 §9.3): made, recycled from a pool, most held at once; and
    # the job's pool (``pooled``) by worktree name
    worktrees_created: int = 0
    worktrees_reused: int = 0
    max_in_use: int = 0
    pool: PMap[str, PoolWorktree] = pmap()
    # reduce (spec 05 §12)
    reduce_index: int = 0
    reduce: Stepper = Stepper()
    # the end
    merge: merge_machine.MergeMachine | None = None
    merge_outcome: merge_machine.MergeOutcome | None = None
    cancel_signal: str | None = None
    error: str | None = None
    error_code: str | None = None
    cost: float = 0.0
    started_at: str = ""
    last_time: str = ""
    mono: float = 0.0
    # progress (spec 05 §18): a ticker while agents run
    ticker: int | None = None
    map_started: float | None = None
    agent_started: PMap[int, float] = pmap()
    # the job's own ``Sleep`` timers still outstanding, by id; one whose end means nothing
    # any more (its phase is over) stays here until its ``Slept`` is ignored
    timers: PMap[int, TimerUse] = pmap()
    # the limit of the running setup or reduce phase (spec 05 §4.2, §12.3): its timer,
    # and whether it expired (the phase's command was cancelled; the job fails next)
    phase_timer: int | None = None
    phase_timed_out: bool = False
    # the job circuit breaker (spec 05 §10.5); not saved: a resumed job starts closed
    dispatch_breaker: DispatchBreaker = DispatchBreaker()
    # ``error_collection: batched:N`` (spec 05 §10.6): failures not printed yet, and how
    # many were printed so far
    unreported: tuple[str, ...] = ()
    reported: int = 0

    @property
    def total(self) -> int:
        return len(self.items)

    def item_id(self, index: int) -> str:
        if index < len(self.item_ids):
            return self.item_ids[index]
        return f"item_{index}"

    def count(self, status: ItemStatus) -> int:
        return self.item_state.count(status)

    @property
    def finished(self) -> bool:
        return self.status != "running" and self.phase == "done"
