"""Layer 1: properties of the MapReduce job machine (hypothesis, no I/O).

A ``RuleBasedStateMachine`` drives ``job_machine`` through random workflows (items,
``max_parallel``, one or two template steps, optional setup and reduce, agent timeout,
setup and reduce limits, error policy including the job circuit breaker) and any
interleaving of: answering any outstanding effect (session
worktree, items, agent worktree created or failed, command exit 0 / non-zero / cancelled,
agent released with or without commits, merge merged / conflicted / failed, timers,
the final merge), ``CancelRequested``, stale events, and crashes — the process dies
after performing only a prefix of the last effect batch — followed by
``job_machine.resume`` from the newest job state document plus the journal records
written after it (as ``prodigy resume-job`` does, spec 05 §14–§16).

Invariants (DESIGN.md "Testing in layers", spec 05 §7–§16):

* never more than ``max_parallel`` agents (``state.agents`` and the agents that have an
  outstanding worktree creation, command or release);
* every item has one of the five statuses and the counts add up to the total; ``running``
  items are exactly the agents; ``merging`` items are exactly the merge queue;
* across the whole durable history (all runs, crashes included) an item reaches a final
  status (``agent_completed`` or ``agent_failed`` with ``retry_eligible`` false) at most
  once, and is never started again after that;
* a failed item is in the DLQ (policy ``dlq``/``stop``/``retry``), a succeeded one is not;
* an agent whose timer fired before its steps were over never succeeds;
* while the job circuit breaker is open no agent starts, and half-open it runs at most
  ``half_open_requests`` trials;
* the job state document round-trips through JSON and ``restore``;
* ``Finish`` comes once per run, with no agent work outstanding, and every item final —
  or pending / waiting in ``pending_merges`` when the job was interrupted or stopped.
"""

from __future__ import annotations

from typing import Any

import attrs
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from prodigy_core.effects import Finish, LogEvent, RunCommand, Sleep
from prodigy_core.events import CancelRequested, CommandFinished, Slept
from prodigy_core.job_docs import job_doc, restore
from prodigy_core.job_ops import FinishAgent, LoadWorkItems
from prodigy_core.job_state import ItemStatus, JobState
from prodigy_core.model import ErrorPolicy, ItemRetry, JobBreaker, OnFailure, RetrySpec, StepList
from prodigy_core.problems import InvalidTransition
from prodigy_core.worktree_ops import (
    CreateWorktree,
    InspectMerge,
    MergeBranch,
    RemoveWorktree,
    WorktreeFailed,
    WorktreeRemoved,
)
from tests.core._job_driver import AGENTS_DIR, JobDriver, item_of, mapreduce, roundtrip
from tests.core._machine_driver import shell

STATUSES: tuple[ItemStatus, ...] = ("pending", "running", "merging", "succeeded", "failed")
AGENT_WORK = (CreateWorktree, RunCommand, FinishAgent)


def _agent_path(effect: Any) -> str | None:
    """The agent worktree an outstanding effect belongs to (None: not agent work)."""
    if isinstance(effect, CreateWorktree) and effect.mode == "agent":
        return effect.path
    if isinstance(effect, FinishAgent):
        return effect.path
    if isinstance(effect, RunCommand) and effect.cwd.startswith(AGENTS_DIR + "/"):
        return effect.cwd
    return None


def _is_final(event: dict[str, Any]) -> bool:
    kind = event.get("event_type")
    return kind == "agent_completed" or (kind == "agent_failed" and
                                         event.get("retry_eligible") is False)


class JobMachine(RuleBasedStateMachine):
    d: JobDriver

    @initialize(
        n_items=st.integers(0, 5),
        max_parallel=st.integers(1, 3),
        steps=st.integers(1, 2),
        timeout=st.sampled_from([None, 10.0]),
        policy=st.sampled_from(["dlq", "skip", "stop", "retry", "max_failures", "breaker"]),
        with_setup=st.booleans(),
        with_reduce=st.booleans(),
        recovery=st.sampled_from(["none", "retry", "handler"]),
        limits=st.booleans(),
    )
    def begin(self, n_items: int, max_parallel: int, steps: int, timeout: float | None,
              policy: str, with_setup: bool, with_reduce: bool, recovery: str,
              limits: bool) -> None:
        extras: dict[str, dict[str, Any]] = {
            "none": {},
            "retry": {"retry": RetrySpec(attempts=2, initial_delay=1.0)},
            "handler": {"on_failure": OnFailure(commands=(shell("fix it"),))},
        }
        extra = extras[recovery]
        template = tuple(shell(f"step{k} ${{item}}", **(extra if k == 0 else {}))
                         for k in range(steps))
        error_policy = {
            "dlq": ErrorPolicy(),
            "skip": ErrorPolicy(on_item_failure="skip"),
            "stop": ErrorPolicy(on_item_failure="stop"),
            "retry": ErrorPolicy(on_item_failure="retry",
                                 retry_config=ItemRetry(max_attempts=2)),
            "max_failures": ErrorPolicy(max_failures=2),
            "breaker": ErrorPolicy(circuit_breaker=JobBreaker(
                failure_threshold=1, success_threshold=1, half_open_requests=1)),
        }[policy]
        wf = mapreduce(template, max_parallel=max_parallel, agent_timeout_secs=timeout,
                       setup=(shell("make items", **extra),) if with_setup else (),
                       reduce=(shell("echo ${map.successful}/${map.total}", **extra),)
                       if with_reduce else (),
                       error_policy=error_policy)
        if limits:
            wf = attrs.evolve(wf, setup=wf.setup and StepList(steps=wf.setup.steps, timeout=30),
                              reduce=wf.reduce and StepList(steps=wf.reduce.steps, timeout=30))
        self.items = list(range(n_items))
        self.max_parallel = max_parallel
        self.policy = policy
        self.d = JobDriver(wf)
        self.timed_out: set[str] = set()     # agent ids whose timer expired in time
        self.stale: list[Any] = []           # events already answered
        self.interrupted: set[str] = set()   # agents running steps when the job was cancelled
        self.cancel_seq = 0
        self.cancel_batch: int | None = None  # the first batch after CancelRequested
        self.run_start = 0                    # the first batch of the current run

    # --- helpers -----------------------------------------------------------------------

    @property
    def state(self) -> JobState:
        assert self.d.state is not None
        return self.d.state

    def live(self) -> bool:
        return self.d.state is not None and not self.d.finished

    def _send(self, event: Any) -> None:
        self.d.send(event)
        self.stale.append(event)

    def _pick(self, data: st.DataObject, kind: type | tuple[type, ...],
              pred: Any = None) -> Any:
        return data.draw(st.sampled_from(self.d.waiting(kind, pred)))

    def _has(self, kind: type | tuple[type, ...], pred: Any = None) -> bool:
        return self.live() and bool(self.d.waiting(kind, pred))

    # --- answering effects -------------------------------------------------------------

    @precondition(lambda self: self._has(CreateWorktree, lambda e: e.mode != "agent"))
    @rule(ok=st.sampled_from([True] * 9 + [False]))
    def session_worktree(self, ok: bool) -> None:
        effect = self.d.one(CreateWorktree, lambda e: e.mode != "agent")
        if ok:
            self.d.session_created()
        else:
            self._send(WorktreeFailed(command_id=effect.command_id, code="E4001",
                                      message="cannot create the session worktree"))

    @precondition(lambda self: self._has(LoadWorkItems))
    @rule()
    def load_items(self) -> None:
        self.d.items_loaded(self.items)

    @precondition(lambda self: self._has(CreateWorktree, lambda e: e.mode == "agent"))
    @rule(data=st.data(), ok=st.sampled_from([True, True, True, False]))
    def agent_worktree(self, data: st.DataObject, ok: bool) -> None:
        effect = self._pick(data, CreateWorktree, lambda e: e.mode == "agent")
        if ok:
            self.d.agent_created(effect)
        else:
            self.d.agent_creation_failed(effect)

    @precondition(lambda self: self._has(RunCommand))
    @rule(data=st.data())
    def command(self, data: st.DataObject) -> None:
        effect = self._pick(data, RunCommand)
        choices = ["ok", "ok", "fail"]
        if effect.command_id in self.d.cancel_marked:
            choices += ["cancelled", "cancelled", "cancelled"]
        outcome = data.draw(st.sampled_from(choices))
        event = CommandFinished(command_id=effect.command_id,
                                exit_code={"ok": 0, "fail": 3, "cancelled": 143}[outcome],
                                cancelled=outcome == "cancelled")
        self._send(event)

    @precondition(lambda self: self._has(FinishAgent))
    @rule(data=st.data(), commits=st.booleans())
    def release(self, data: st.DataObject, commits: bool) -> None:
        effect = self._pick(data, FinishAgent)
        self.d.released(effect, ("1" * 40,) if commits else ())

    @precondition(lambda self: self._has(MergeBranch))
    @rule(data=st.data(), outcome=st.sampled_from(["merged", "merged", "conflicted", "failed"]))
    def merge(self, data: st.DataObject, outcome: str) -> None:
        effect = self._pick(data, MergeBranch)
        self.d.merge(effect, outcome)

    @precondition(lambda self: self._has(Sleep))
    @rule(data=st.data())
    def timer(self, data: st.DataObject) -> None:
        effect = self._pick(data, Sleep)
        state = self.state
        for agent in state.agents.values():
            if agent.timer == effect.command_id and agent.failure is None and \
                    state.cancel_signal is None and effect.command_id not in \
                    self.d.cancel_marked and agent.stage in ("create", "steps"):
                self.timed_out.add(agent.agent_id)
        self._send(Slept(command_id=effect.command_id))

    @precondition(lambda self: self._has(InspectMerge))
    @rule()
    def final_merge(self) -> None:
        self.d.final_merge()

    @precondition(lambda self: self._has(RemoveWorktree))
    @rule()
    def removed(self) -> None:
        effect = self.d.one(RemoveWorktree)
        self.d.send(WorktreeRemoved(command_id=effect.command_id))

    # --- signals, stale events, crashes ------------------------------------------------

    @precondition(lambda self: self.live() and self.state.cancel_signal is None and
                  self.state.phase != "worktree")
    @rule(signal=st.sampled_from(["SIGINT", "SIGTERM"]))
    def cancel(self, signal: str) -> None:
        state = self.state
        if state.cancel_signal is None:
            self.interrupted = {a.agent_id for a in state.agents.values()
                                if a.stage in ("create", "steps") and a.failure is None}
            self.cancel_seq = len(self.d.journal())
            self.cancel_batch = len(self.d.batches)
        self.d.send(CancelRequested(signal=signal))

    @precondition(lambda self: self.live() and bool(self.stale))
    @rule(data=st.data())
    def stale_event(self, data: st.DataObject) -> None:
        """An event nobody waits for is a bug (``InvalidTransition``); a late timer of an
        agent that is gone is ignored."""
        event = data.draw(st.sampled_from(self.stale))
        if self.d.finished or not isinstance(event, Slept):
            with pytest.raises(InvalidTransition):
                self.d.send(event)
            return
        try:
            effects = self.d.send(event)
        except InvalidTransition:
            return
        assert effects == (), effects

    @precondition(lambda self: not self.live() and (
        self.d.state is None or self.d.resumable() is None))
    @rule()
    def over(self) -> None:
        """The job is over for good (completed, or failed before any checkpoint)."""

    @precondition(lambda self: self.d.state is not None and bool(self.d.checkpoints()) and
                  (bool(self.d.finished) or len(self.d.batches) - self.run_start >= 6))
    @rule(data=st.data())
    def crash_and_resume(self, data: st.DataObject) -> None:
        last = len(self.d.history) - self.d.last_batch_start
        cut = data.draw(st.integers(0, last))
        self.d.crash(cut)
        self.stale.clear()
        self.interrupted.clear()
        self.timed_out.clear()  # a resumed job may use the same agent ids again
        self.cancel_batch = None
        if self.d.resumable() is None:
            return  # the job completed: resume-job refuses it (E5006)
        self.d.resume()
        self.run_start = len(self.d.batches)

    # --- invariants ----------------------------------------------------------------------

    @invariant()
    def parallelism(self) -> None:
        if self.d.state is None:
            return
        assert len(self.state.agents) <= self.max_parallel
        working = {p for e in self.d.outstanding.values() if (p := _agent_path(e))}
        assert len(working) <= self.max_parallel, working
        assert self.state.max_in_use <= self.max_parallel

    @invariant()
    def breaker_holds_dispatch(self) -> None:
        if self.d.state is None or self.policy != "breaker" or not self.d.batches:
            return
        breaker = self.state.dispatch_breaker
        assert len(breaker.trials) <= 1
        if breaker.status == "open":
            assert not [e for e in self.d.batches[-1]
                        if isinstance(e, CreateWorktree) and e.mode == "agent"]

    @invariant()
    def item_statuses(self) -> None:
        if self.d.state is None:
            return
        state = self.state
        assert set(state.item_state.values()) <= set(STATUSES)
        # the counts kept up to date are the counts of the statuses
        for status in STATUSES:
            assert state.count(status) == sum(1 for s in state.item_state.values()
                                              if s == status), status
        if state.items_loaded:
            assert set(state.item_state) == set(range(state.total))
            assert sum(state.count(s) for s in STATUSES) == state.total
        running = {i for i, s in state.item_state.items() if s == "running"}
        assert running == set(state.agents)
        merging = {i for i, s in state.item_state.items() if s == "merging"}
        queued = [q.index for q in state.queue] + \
            ([state.merging.index] if state.merging else [])
        assert sorted(queued) == sorted(merging), (queued, merging)

    @invariant()
    def final_once(self) -> None:
        final: dict[str, int] = {}
        for record in self.d.journal():
            event = record["event"]
            item = event.get("item_id")
            if event["event_type"] in ("agent_started", "agent_completed", "agent_failed"):
                assert item not in final, f"{item} {event['event_type']} after its final event"
            if _is_final(event):
                final[item] = record["seq"]
        # no worktree is even created for an item whose final event was logged
        finished: set[int] = set()
        for effect in self.d.history:
            if isinstance(effect, LogEvent) and _is_final(effect.as_dict()):
                finished.add(int(str(dict(effect.fields)["item_index"])))
            if isinstance(effect, CreateWorktree) and effect.mode == "agent":
                assert item_of(effect.path) not in finished, effect.path

    @invariant()
    def dlq_matches(self) -> None:
        outcome: dict[str, str] = {}
        for record in self.d.journal():
            event = record["event"]
            if _is_final(event):
                outcome[event["item_id"]] = event["event_type"]
        dlq = self.d.dlq()
        for item, kind in outcome.items():
            if kind == "agent_failed" and self.policy != "skip":
                assert item in dlq, f"{item} failed but is not in the DLQ {dlq}"
            if kind == "agent_completed":
                assert item not in dlq, f"{item} succeeded but is still in the DLQ"

    @invariant()
    def timeouts_never_succeed(self) -> None:
        for record in self.d.journal():
            event = record["event"]
            if event["event_type"] == "agent_completed":
                assert event["agent_id"] not in self.timed_out, event["agent_id"]

    @invariant()
    def interrupted_agents_go_back(self) -> None:
        """Agents stopped by ``CancelRequested`` put their items back to pending (§15.1):
        no result, no DLQ entry, whatever their commands report afterwards."""
        for record in self.d.journal()[self.cancel_seq:]:
            event = record["event"]
            if event["event_type"] in ("agent_completed", "agent_failed"):
                assert event.get("agent_id") not in self.interrupted, event

    @invariant()
    def nothing_new_after_cancel(self) -> None:
        """After ``CancelRequested`` no command, agent, item load or merge starts (§15.1);
        only the releases of the agents that were running."""
        if self.cancel_batch is None:
            return
        for batch in self.d.batches[self.cancel_batch:]:
            for effect in batch:
                assert not isinstance(effect, RunCommand | LoadWorkItems | MergeBranch |
                                      InspectMerge), effect
                assert not (isinstance(effect, CreateWorktree) and effect.mode == "agent"), \
                    effect

    @invariant()
    def job_doc_round_trips(self) -> None:
        if self.d.state is None:
            return
        state = self.state
        doc = roundtrip(job_doc(state))
        back = restore(JobState(workflow=state.workflow, ctx=state.ctx, config=state.config),
                       doc)
        assert back.items_loaded == state.items_loaded
        expected = {i: ("pending" if s == "running" else s)
                    for i, s in state.item_state.items()}
        assert dict(back.item_state) == expected
        assert [q.index for q in back.queue] == \
            [q.index for q in ((state.merging,) if state.merging else ()) + state.queue]
        assert {i: r.get("status") for i, r in back.results.items()} == \
            {i: r.get("status") for i, r in state.results.items()}

    @invariant()
    def finish(self) -> None:
        if self.d.state is None or not self.d.finished:
            return
        state = self.state
        fin: Finish = self.d.finish
        busy = [e for e in self.d.outstanding.values() if not isinstance(e, Sleep)]
        assert not busy, busy
        assert not state.agents
        assert state.merging is None
        statuses = set(state.item_state.values())
        if state.status == "completed":
            assert statuses <= {"succeeded", "failed"}
            expected = 3 if "failed" in statuses else 0
            merged = state.merge_outcome is not None and state.merge_outcome.merged
            if state.cancel_signal is not None and not merged:  # stopped in the final merge
                expected = 143 if state.cancel_signal == "SIGTERM" else 130
            assert fin.exit_code == expected
        elif state.status == "interrupted":
            assert statuses <= {"succeeded", "failed", "pending", "merging"}
            assert fin.exit_code in (130, 143)
        else:
            assert state.status == "failed"
            assert fin.exit_code in (1, 2)
            if state.stop_reason is not None:
                assert statuses <= {"succeeded", "failed", "pending"}
                assert state.error_code == "E6008"
        if "merging" in statuses:
            # interrupted with branches waiting: they are saved for the resumed job
            doc = self.d.checkpoints()[-1]
            waiting = {m["item_id"] for m in doc["pending_merges"]}
            assert waiting == {f"item_{i}" for i, s in state.item_state.items()
                               if s == "merging"}


JobMachine.TestCase.settings = settings(
    max_examples=150, stateful_step_count=60, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestJobMachine = JobMachine.TestCase
