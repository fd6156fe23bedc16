"""A pure driver for the MapReduce job machine: events are fed by hand, no I/O.

``JobDriver`` keeps the job machine's state, every effect batch it returned, the spawned
effects still outstanding (by ``command_id``) and a *durable history*: the effects the
interpreter would have performed, in order, across crashes and resumes.  From that
history it derives what a restarted process would find on disk: the journal (every
``LogEvent``, numbered like journal records ``{"seq": n, "event": {...}}``), the job
state checkpoints (every ``SaveJobState``, with ``last_event_seq``) and the DLQ
(``RecordDLQ``/``ForgetDLQ``).

``crash(cut)`` models a process that dies after performing only the first ``cut``
effects of the last batch; ``resume()`` then calls ``job_machine.resume`` with the newest
checkpoint and the journal records written after it, like ``prodigy resume-job``.
"""

from __future__ import annotations

import json
from typing import Any

import attrs

from prodigy_core import job_machine
from prodigy_core.context import RunContext, WorktreeSpec
from prodigy_core.effects import (
    SPAWNED,
    CancelCommands,
    Effect,
    Finish,
    LogEvent,
    Print,
    RunCommand,
    Sleep,
)
from prodigy_core.events import CommandFinished, Event, Slept
from prodigy_core.job_ops import (
    AgentReleased,
    FinishAgent,
    ForgetDLQ,
    LoadWorkItems,
    MeasureWorktree,
    RecordDLQ,
    SaveJobState,
    WorkItemsLoaded,
    WorktreeMeasured,
)
from prodigy_core.job_state import JobConfig, JobState
from prodigy_core.model import MapSpec, Step, StepList, Workflow
from prodigy_core.worktree_ops import (
    BranchMerged,
    CreateWorktree,
    InspectMerge,
    MergeBranch,
    MergeConflicted,
    MergeFailed,
    MergeInspected,
    RemoveWorktree,
    WorktreeCreated,
    WorktreeFailed,
    WorktreeRemoved,
)
from tests.core._machine_driver import command_text, make_ctx, shell

SESSION = "session-1"
JOB = "mapreduce-20260101_000000"
PATH = f"/store/worktrees/repo/{SESSION}"
BRANCH = f"prodigy-{SESSION}"
BASE = "a" * 40
HEAD = "c" * 40
AGENT_HEAD = "b" * 40
AGENTS_DIR = f"/store/worktrees/{SESSION}"
JOB_DIR = f"/store/state/repo/mapreduce/jobs/{JOB}"

# the ``CreateWorktree`` modes of agent worktrees (fresh, job pool, repository pool)
AGENT_MODES = ("agent", "pool", "shared_pool")

WT = WorktreeSpec(name=SESSION, path=PATH, branch=BRANCH, base_commit=BASE,
                  original_branch="main", user_dir="/home/u/repo")
CONFIG = JobConfig(job_id=JOB, job_dir=JOB_DIR, agents_dir=AGENTS_DIR)


def job_ctx(*, auto_yes: bool = True) -> RunContext:
    return make_ctx(session_id=SESSION, worktree=WT, project_dir=PATH, repo_root="/repo",
                    auto_yes=auto_yes)


def mapreduce(template: tuple[Step, ...] = (shell("echo ${item}"),), *,
              setup: tuple[Step, ...] = (), reduce: tuple[Step, ...] = (),
              **map_fields: Any) -> Workflow:
    values: dict[str, Any] = {"input": "items", "max_parallel": 2,
                              "agent_template": template}
    policy = map_fields.pop("error_policy", None)
    values.update(map_fields)
    wf = Workflow(name="job", mode="mapreduce", map=MapSpec(**values),
                  setup=StepList(steps=setup) if setup else None,
                  reduce=StepList(steps=reduce) if reduce else None)
    return attrs.evolve(wf, error_policy=policy) if policy is not None else wf


def item_of(path_or_id: str) -> int:
    """The item index in an agent id, branch or worktree path (``…_agent_<n>[_attempt_k]``)."""
    tail = path_or_id.rsplit("_agent_", 1)[1]
    return int(tail.split("_", 1)[0])


def roundtrip(value: Any) -> Any:
    return json.loads(json.dumps(value))


class JobDriver:
    def __init__(self, workflow: Workflow, ctx: RunContext | None = None,
                 config: JobConfig = CONFIG) -> None:
        self.workflow = workflow
        self.ctx = ctx or job_ctx()
        self.config = config
        self.state: JobState | None = None
        self.batches: list[tuple[Effect, ...]] = []
        self.outstanding: dict[int, Effect] = {}
        self.cancel_marked: set[int] = set()
        self.finished: list[Finish] = []
        self.history: list[Effect] = []   # performed effects, across crashes and resumes
        self.last_batch_start = 0
        self.runs = 1
        self._journal: list[dict[str, Any]] = []
        self._docs: list[dict[str, Any]] = []
        self._scanned = 0
        self._take(job_machine.start(workflow, self.ctx, config))

    # --- bookkeeping ---------------------------------------------------------------

    def _take(self, transition: job_machine.Transition) -> tuple[Effect, ...]:
        self.state = transition.state
        self.batches.append(transition.effects)
        self.last_batch_start = len(self.history)
        for effect in transition.effects:
            self.history.append(effect)
            if isinstance(effect, SPAWNED):
                assert effect.command_id not in self.outstanding, effect
                self.outstanding[effect.command_id] = effect
            if isinstance(effect, CancelCommands):
                ids = effect.command_ids or tuple(
                    cid for cid, e in self.outstanding.items() if isinstance(e, RunCommand | Sleep))
                self.cancel_marked.update(ids)
            if isinstance(effect, Finish):
                self.finished.append(effect)
        return transition.effects

    def send(self, event: Event) -> tuple[Effect, ...]:
        assert self.state is not None
        cid = getattr(event, "command_id", None)
        transition = job_machine.step(self.state, event)
        if cid is not None:
            self.outstanding.pop(cid, None)
            self.cancel_marked.discard(cid)
        return self._take(transition)

    @property
    def effects(self) -> list[Effect]:
        return [e for batch in self.batches for e in batch]

    def of(self, kind: type | tuple[type, ...]) -> list[Any]:
        return [e for e in self.effects if isinstance(e, kind)]

    def logs(self, event_type: str | None = None) -> list[dict[str, Any]]:
        return [e.as_dict() for e in self.of(LogEvent)
                if event_type is None or e.event_type == event_type]

    @property
    def printed(self) -> str:
        return "\n".join(e.text for e in self.of(Print))

    @property
    def finish(self) -> Finish:
        assert len(self.finished) == 1, self.finished
        return self.finished[0]

    def waiting(self, kind: type | tuple[type, ...], pred: Any = None) -> list[Any]:
        return [e for _, e in sorted(self.outstanding.items())
                if isinstance(e, kind) and (pred is None or pred(e))]

    def one(self, kind: type | tuple[type, ...], pred: Any = None) -> Any:
        found = self.waiting(kind, pred)
        assert found, f"no outstanding {kind}: {self.outstanding}"
        return found[0]

    # --- the durable history -------------------------------------------------------

    def _scan(self) -> None:
        """Bring the journal and checkpoint views up to date with the history."""
        if self._scanned > len(self.history):  # a crash cut the history: start again
            self._journal, self._docs, self._scanned = [], [], 0
        for effect in self.history[self._scanned:]:
            if isinstance(effect, LogEvent):
                self._journal.append({"seq": len(self._journal) + 1,
                                      "event": roundtrip(effect.as_dict())})
            elif isinstance(effect, SaveJobState):
                self._docs.append(roundtrip(effect.doc) |
                                  {"last_event_seq": len(self._journal)})
        self._scanned = len(self.history)

    def journal(self) -> list[dict[str, Any]]:
        """The journal records written so far (``seq`` from 1)."""
        self._scan()
        return list(self._journal)

    def checkpoints(self) -> list[dict[str, Any]]:
        """Every job state document written, with the ``last_event_seq`` it includes."""
        self._scan()
        return list(self._docs)

    def dlq(self) -> set[str]:
        entries: set[str] = set()
        for effect in self.history:
            if isinstance(effect, RecordDLQ):
                entries.add(effect.item_id)
            elif isinstance(effect, ForgetDLQ):
                entries.discard(effect.item_id)
        return entries

    def crash(self, cut: int) -> None:
        """The process dies having performed only ``cut`` effects of the last batch."""
        del self.history[self.last_batch_start + cut:]
        self._journal, self._docs, self._scanned = [], [], 0
        self.last_batch_start = len(self.history)
        self.state = None
        self.outstanding.clear()
        self.cancel_marked.clear()

    def resumable(self) -> dict[str, Any] | None:
        docs = self.checkpoints()
        if not docs or docs[-1].get("is_complete"):
            return None
        return docs[-1]

    def resume(self) -> tuple[Effect, ...]:
        doc = self.resumable()
        assert doc is not None
        later = [r for r in self.journal() if r["seq"] > doc["last_event_seq"]]
        self.state = None
        self.outstanding.clear()
        self.cancel_marked.clear()
        self.finished.clear()
        self.runs += 1
        return self._take(job_machine.resume(self.workflow, self.ctx, self.config, doc, later))

    # --- answering one effect ------------------------------------------------------

    def session_created(self) -> tuple[Effect, ...]:
        effect = self.one(CreateWorktree, lambda e: e.mode not in AGENT_MODES)
        return self.send(WorktreeCreated(command_id=effect.command_id, path=effect.path,
                                         branch=effect.branch, head=HEAD,
                                         created=effect.mode == "create"))

    def items_loaded(self, items: list[Any]) -> tuple[Effect, ...]:
        effect = self.one(LoadWorkItems)
        return self.send(WorkItemsLoaded(command_id=effect.command_id, kind="command",
                                         text=json.dumps(items)))

    def agent_created(self, effect: CreateWorktree) -> tuple[Effect, ...]:
        return self.send(WorktreeCreated(command_id=effect.command_id, path=effect.path,
                                         branch=effect.branch, head=AGENT_HEAD))

    def agent_creation_failed(self, effect: CreateWorktree) -> tuple[Effect, ...]:
        return self.send(WorktreeFailed(command_id=effect.command_id, code="E4001",
                                        message="fatal: cannot create worktree"))

    def command(self, effect: RunCommand, exit_code: int = 0, *, stdout: str = "",
                stderr: str = "", cancelled: bool = False) -> tuple[Effect, ...]:
        return self.send(CommandFinished(command_id=effect.command_id, exit_code=exit_code,
                                         stdout=stdout, stderr=stderr, cancelled=cancelled,
                                         finished_at="2026-01-01T00:00:01.000Z"))

    def released(self, effect: FinishAgent, commits: tuple[str, ...] = ()) -> tuple[Effect, ...]:
        files = ("f.py",) if commits else ()
        return self.send(AgentReleased(command_id=effect.command_id, commits=commits,
                                       files=files))

    def merge(self, effect: MergeBranch, outcome: str = "merged") -> tuple[Effect, ...]:
        cid = effect.command_id
        if outcome == "merged":
            return self.send(BranchMerged(command_id=cid, sha="d" * 40, merge_dir=PATH))
        if outcome == "conflicted":
            return self.send(MergeConflicted(command_id=cid, paths=("a.py", "b.py"),
                                             merge_dir=PATH, pre=HEAD))
        return self.send(MergeFailed(command_id=cid, code="E4005", message="merge refused"))

    def timer(self, effect: Sleep) -> tuple[Effect, ...]:
        return self.send(Slept(command_id=effect.command_id))

    def final_merge(self) -> tuple[Effect, ...]:
        """Answer the final merge: nothing to merge (``ahead=0``), then the cleanup."""
        effect = self.one(InspectMerge)
        out = self.send(MergeInspected(command_id=effect.command_id, target="main", ahead=0))
        for remove in self.waiting(RemoveWorktree):
            out += self.send(WorktreeRemoved(command_id=remove.command_id))
        return out

    def run(self, items: list[Any] | None = None, *, exits: dict[str, int] | None = None,
            commits: bool = False, merges: dict[int, str] | None = None,
            sizes: dict[str, int | str] | None = None, exhausted: dict[str, str] | None = None,
            limit: int = 500) -> Finish:
        """Answer everything in order until ``Finish``: commands exit 0 unless listed in
        ``exits`` (by command text), agents commit when ``commits``, merges succeed unless
        listed in ``merges`` (by item index), a command listed in ``exhausted`` (by text)
        is stopped above its memory limit with that message, worktrees measure ``sizes``
        (by path, else 0; a text: cannot be measured), timers never fire — except the retry delays
        of items (``state.backoff``) and the job breaker's open period, when nothing else
        is left to answer."""
        for _ in range(limit):
            if self.finished:
                return self.finish
            busy: dict[int, Effect] = {cid: e for cid, e in sorted(self.outstanding.items())
                                       if not isinstance(e, Sleep)}
            if not busy and self.state is not None:
                # retry delays, and the open period of the job circuit breaker
                delays = set(self.state.backoff.values()) | {
                    cid for cid, use in self.state.timers.items() if use == "breaker"}
                busy = {cid: e for cid, e in sorted(self.outstanding.items())
                        if cid in delays}
            assert busy, f"nothing to answer: {self.outstanding}"
            effect = next(iter(busy.values()))
            if isinstance(effect, CreateWorktree):
                if effect.mode in AGENT_MODES:
                    self.agent_created(effect)
                else:
                    self.session_created()
            elif isinstance(effect, LoadWorkItems):
                self.items_loaded(items if items is not None else [0, 1, 2])
            elif isinstance(effect, RunCommand) and command_text(effect) in (exhausted or {}):
                self.send(CommandFinished(command_id=effect.command_id, exit_code=-1,
                                          exhausted=(exhausted or {})[command_text(effect)]))
            elif isinstance(effect, RunCommand):
                self.command(effect, (exits or {}).get(command_text(effect), 0))
            elif isinstance(effect, MeasureWorktree):
                size = (sizes or {}).get(effect.path, 0)
                self.send(WorktreeMeasured(command_id=effect.command_id, message=size)
                          if isinstance(size, str) else
                          WorktreeMeasured(command_id=effect.command_id, size_bytes=size))
            elif isinstance(effect, FinishAgent):
                self.released(effect, ("1" * 40,) if commits else ())
            elif isinstance(effect, MergeBranch):
                self.merge(effect, (merges or {}).get(item_of(effect.source), "merged"))
            elif isinstance(effect, InspectMerge):
                self.final_merge()
            elif isinstance(effect, RemoveWorktree):
                self.send(WorktreeRemoved(command_id=effect.command_id))
            elif isinstance(effect, Sleep):
                self.timer(effect)
            else:
                raise AssertionError(f"unexpected effect {effect}")
        raise AssertionError("the job did not finish")
