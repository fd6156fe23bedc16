"""Layer 1: properties of the run machine (hypothesis).

(a) For any state reached by a valid run and any event — every event class, random
    ids, random fields — ``run_machine.step`` returns a ``Transition`` or raises
    ``InvalidTransition``, never anything else.
(b) A ``RuleBasedStateMachine`` runs random workflows: it completes, fails and times out
    commands, answers sleeps and ``HEAD`` reads, sends ``CancelRequested``, replays stale
    events, and crashes (dropping the tail of the last effect batch) and resumes from the
    last checkpoint that was written plus the journal records written after it.  The
    invariants are those of DESIGN.md "Testing in layers" for a sequential run.
"""

from __future__ import annotations

import copy
import json
import re
from typing import Any

import attrs
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from prodigy_core import run_machine
from prodigy_core.context import InputSpec, RunContext
from prodigy_core.effects import (
    CancelCommands,
    CommitChanges,
    Effect,
    Finish,
    ListCommits,
    LogEvent,
    ReadFile,
    ReadGitHead,
    RunCommand,
    SaveCheckpoint,
    Sleep,
    SquashCommits,
    WriteFile,
)
from prodigy_core.events import (
    CancelRequested,
    ChangesCommitted,
    CommandFinished,
    CommandNotStarted,
    CommitsListed,
    CommitsSquashed,
    Event,
    FileRead,
    FileWriteFailed,
    FileWritten,
    GitFailed,
    GitHeadRead,
    Slept,
)
from prodigy_core.model import (
    Backoff,
    CircuitBreakerSpec,
    CommitConfig,
    OnFailure,
    OnIncomplete,
    RetryMatcher,
    RetrySpec,
    Step,
    ValidateSpec,
    Workflow,
    WriteFileSpec,
)
from prodigy_core.problems import InvalidTransition
from tests.core._machine_driver import SPAWNED, STEP_END_EVENTS, make_ctx

# --- strategies ---------------------------------------------------------------------------

breakers = st.sampled_from([
    None, None,
    CircuitBreakerSpec(name="shared", failure_threshold=1, recovery_timeout=2.0),
    CircuitBreakerSpec(failure_threshold=2, recovery_timeout=1.0, success_threshold=2),
])

retries = st.one_of(
    st.none(),
    st.builds(
        lambda attempts, delay, exhausted, on, breaker: RetrySpec(
            attempts=attempts, backoff=Backoff(kind="fixed"), initial_delay=delay,
            exhausted=exhausted, fallback_command="fb" if exhausted == "fallback" else None,
            retry_on=on, circuit_breaker=breaker),
        st.integers(1, 3), st.sampled_from([0.0, 1.5]),
        st.sampled_from(["stop", "continue", "fallback"]),
        st.sampled_from([(), (RetryMatcher(kind="timeout"),),
                         (RetryMatcher(kind="exit_code", exit_codes=(2,)),)]),
        breakers,
    ),
)

validations = st.sampled_from([
    None, None, None,
    ValidateSpec(commands=(Step(kind="shell", command="check"),), threshold=50),
    ValidateSpec(commands=(Step(kind="shell", command="check"),
                           Step(kind="shell", command="check2")),
                 result_file="v.json",
                 on_incomplete=OnIncomplete(commands=(Step(kind="shell", command="more"),),
                                            fail_workflow=False)),
    ValidateSpec(commands=(Step(kind="shell", command="check"),),
                 on_incomplete=OnIncomplete(commands=(Step(kind="shell", command="more"),),
                                            max_attempts=3)),
])


@st.composite
def on_failures(draw: st.DrawFn, index: int) -> OnFailure | None:
    kind = draw(st.sampled_from(["none", "allow", "handlers", "fix"]))
    if kind == "none":
        return None
    if kind == "allow":
        return OnFailure(allow=True)
    count = draw(st.integers(1, 2))
    nested = st.sampled_from([None, OnFailure(commands=(Step(kind="shell",
                                                             command=f"n{index}"),))])
    commands = tuple(Step(kind="shell", command=f"h{index}_{j} ${{error.exit_code}}",
                          allow_failure=draw(st.booleans()), retry=draw(retries),
                          on_failure=draw(nested)) for j in range(count))
    return OnFailure(
        commands=commands,
        strategy=draw(st.sampled_from(["recovery", "fallback", "cleanup"])),
        max_attempts=draw(st.integers(2, 3)) if kind == "fix" else None,
        fail_workflow=draw(st.sampled_from([None, True, False])),
        handler_failure_fatal=draw(st.booleans()),
    )


@st.composite
def steps(draw: st.DrawFn, index: int) -> Step:
    if draw(st.integers(0, 9)) == 0:
        return Step(kind="write_file", write_file=WriteFileSpec(path=f"f{index}.txt",
                                                                 content="${c0}"),
                    allow_failure=draw(st.booleans()))
    return Step(
        kind="shell",
        command=f"cmd{index}",
        allow_failure=draw(st.booleans()),
        retry=draw(retries),
        on_failure=draw(on_failures(index)),
        when=draw(st.sampled_from([None, None, True, False, "${missing}", "${c0.success}"])),
        capture=f"c{index}" if draw(st.booleans()) else None,
        capture_format=draw(st.sampled_from(["string", "string", "json", "number"])),
        on_success=draw(st.sampled_from([None, Step(kind="shell", command=f"ok{index}")])),
        on_exit_code=draw(st.sampled_from([(), ((2, Step(kind="shell", command=f"ec{index}")),)])),
        timeout=draw(st.sampled_from([None, 5.0])),
        commit_required=draw(st.integers(0, 5)) == 0,
        auto_commit=draw(st.integers(0, 4)) == 0,
        id=f"s{index}",
        outputs=draw(st.sampled_from([(), (), (("f", "*.md"),)])),
        commit_config=draw(st.sampled_from([None, None, CommitConfig(message_pattern="^ok"),
                                            CommitConfig(squash=True)])),
        validate=draw(validations),
    )


@st.composite
def workflows(draw: st.DrawFn) -> Workflow:
    count = draw(st.integers(1, 4))
    return Workflow(name="prop", steps=tuple(draw(steps(i)) for i in range(count)))


@st.composite
def contexts(draw: st.DrawFn) -> RunContext:
    inputs = draw(st.sampled_from([(), (InputSpec(arg="a"), InputSpec(arg="b"))]))
    return make_ctx(
        inputs=inputs,
        fail_fast=draw(st.booleans()),
        max_iterations=draw(st.sampled_from([1, 1, 2])),
        retry_defaults=draw(st.sampled_from([None, RetrySpec(attempts=2, initial_delay=0)])),
        strict_vars=draw(st.integers(0, 5)) == 0,
    )


outputs = st.sampled_from(["", "x\n", '{"a": 1}\n', "not json", "12\n",
                           '{"completion_percentage": 60}', '{"status": "complete"}'])
results = st.sampled_from([None, "", "[]", '{"completion_percentage": 40}',
                           '{"completion_percentage": 100, "status": "complete"}',
                           '{"status": "failed"}'])


GIT_EFFECTS = (CommitChanges, ListCommits, SquashCommits)


def git_answer(data: st.DataObject, effect: Effect) -> Event:
    """A random, valid answer to a git effect (including a failure)."""
    assert isinstance(effect, GIT_EFFECTS)
    cid = effect.command_id
    if data.draw(st.integers(0, 7), label="git_fails") == 0:
        return GitFailed(command_id=cid, operation="x", message="fatal")
    if isinstance(effect, CommitChanges):
        return ChangesCommitted(command_id=cid, sha=data.draw(st.sampled_from([None, "c1"])))
    if isinstance(effect, ListCommits):
        return CommitsListed(
            command_id=cid, head="s2",
            commits=data.draw(st.sampled_from([(), (("c1", "ok"),),
                                               (("c1", "ok"), ("c2", "no"))])),
            files_added=data.draw(st.sampled_from([(), ("a.md",), ("b.txt",)])))
    return CommitsSquashed(command_id=cid, sha="c3")


def valid_answer(data: st.DataObject, effect: Effect, now: float) -> Event:
    """A random, valid completion of an outstanding spawned effect."""
    if isinstance(effect, RunCommand):
        kind = data.draw(st.sampled_from(["exit", "exit", "exit", "timeout", "not_started"]))
        if kind == "not_started":
            return CommandNotStarted(command_id=effect.command_id, reason="spawn_failed",
                                     message="no sh", monotonic=now)
        if kind == "timeout":
            return CommandFinished(command_id=effect.command_id, exit_code=-1, timed_out=True,
                                   duration=effect.timeout or 1.0, monotonic=now)
        return CommandFinished(command_id=effect.command_id,
                               exit_code=data.draw(st.sampled_from([0, 0, 1, 2])),
                               stdout=data.draw(outputs), monotonic=now, finished_at=f"t{now}")
    if isinstance(effect, Sleep):
        return Slept(command_id=effect.command_id, monotonic=now + effect.seconds)
    if isinstance(effect, ReadGitHead):
        return GitHeadRead(command_id=effect.command_id,
                           sha=data.draw(st.sampled_from(["s1", "s2", None])))
    if isinstance(effect, GIT_EFFECTS):
        return git_answer(data, effect)
    if isinstance(effect, ReadFile):
        return FileRead(command_id=effect.command_id, content=data.draw(results), monotonic=now)
    assert isinstance(effect, WriteFile)
    if data.draw(st.booleans()):
        return FileWritten(command_id=effect.command_id, path=effect.path, size=1)
    return FileWriteFailed(command_id=effect.command_id, message="disk full")


def any_event(ids: st.SearchStrategy[int]) -> st.SearchStrategy[Event]:
    text = st.text(max_size=5)
    return st.one_of(
        st.builds(CommandFinished, command_id=ids, exit_code=st.integers(-2, 300),
                  stdout=st.sampled_from(["", "1\n", "{}", "{", "true"]), stderr=text,
                  timed_out=st.booleans(), cancelled=st.booleans(),
                  duration=st.floats(0, 1e6), monotonic=st.floats(-1e6, 1e6),
                  truncated=st.booleans(), planned=st.booleans()),
        st.builds(CommandNotStarted, command_id=ids,
                  reason=st.sampled_from(["cwd_missing", "spawn_failed", "other"]),
                  message=text),
        st.builds(FileWritten, command_id=ids, path=text, size=st.integers(0, 10),
                  planned=st.booleans()),
        st.builds(FileWriteFailed, command_id=ids, message=text),
        st.builds(FileRead, command_id=ids, content=results, planned=st.booleans()),
        st.builds(GitHeadRead, command_id=ids, sha=st.sampled_from([None, "s1", "s2"]),
                  planned=st.booleans()),
        st.builds(Slept, command_id=ids, monotonic=st.floats(-10, 1e6)),
        st.builds(ChangesCommitted, command_id=ids, sha=st.sampled_from([None, "c1"]),
                  planned=st.booleans()),
        st.builds(CommitsListed, command_id=ids, head=st.sampled_from([None, "s1"]),
                  commits=st.sampled_from([(), (("c1", "ok"), ("c2", "no"))]),
                  files_added=st.sampled_from([(), ("a.md",)]), planned=st.booleans()),
        st.builds(CommitsSquashed, command_id=ids, sha=st.sampled_from([None, "c3"]),
                  planned=st.booleans()),
        st.builds(GitFailed, command_id=ids, operation=text, message=text),
        st.builds(CancelRequested, signal=st.sampled_from(["SIGINT", "SIGTERM", "?"])),
    )


def spawned(effects: tuple[Effect, ...]) -> list[Any]:
    return [e for e in effects if isinstance(e, SPAWNED)]


# --- (a) every (state, event) pair is handled or a bug error ------------------------------


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(wf=workflows(), ctx=contexts(), data=st.data())
def test_step_returns_a_transition_or_raises_invalid_transition(
    wf: Workflow, ctx: RunContext, data: st.DataObject
) -> None:
    transition = run_machine.start(wf, ctx)
    outstanding = {e.command_id: e for e in spawned(transition.effects)}
    finished = any(isinstance(e, Finish) for e in transition.effects)
    now = 0.0
    for _ in range(data.draw(st.integers(0, 30), label="prefix")):
        if finished:
            break
        if data.draw(st.integers(0, 15)) == 0:
            event: Event = CancelRequested(signal="SIGINT")
        else:
            assert len(outstanding) == 1
            (effect,) = outstanding.values()
            event = valid_answer(data, effect, now)
            now += 1.0
            del outstanding[effect.command_id]
        transition = run_machine.step(transition.state, event)
        outstanding.update({e.command_id: e for e in spawned(transition.effects)})
        finished = any(isinstance(e, Finish) for e in transition.effects)
    state = transition.state
    pending = next(iter(outstanding), 0)
    ids = st.one_of(st.just(pending), st.integers(-1, pending + 3))
    before = copy.deepcopy(state)
    event = data.draw(any_event(ids), label="event")
    try:
        result = run_machine.step(state, event)
    except InvalidTransition:
        pass
    else:
        assert isinstance(result, run_machine.Transition)
        assert all(isinstance(e, Effect.__args__) for e in result.effects)  # type: ignore[attr-defined]
        assert not finished, "a finished run accepted an event"
    assert state == before  # the old state is untouched


# --- (b) the rule-based machine -----------------------------------------------------------


STEP_PATH = re.compile(r"^steps\[(\d+)\]$")


@attrs.define
class Process:
    """One process of a run: from ``start``/``resume`` to ``Finish`` or a crash."""

    state: run_machine.RunState
    outstanding: dict[int, Effect] = attrs.field(factory=dict)
    used_ids: set[int] = attrs.field(factory=set)
    completed_ids: set[int] = attrs.field(factory=set)
    finishes: list[Finish] = attrs.field(factory=list)
    cancelled: bool = False
    last_batch: tuple[Effect, ...] = ()

    @property
    def finished(self) -> bool:
        return bool(self.finishes)


class RunMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.performed: list[Effect] = []  # every effect performed, all processes
        self.emitted_checkpoints = 0
        self.emitted_step_ends = 0
        self.completed_keys: set[tuple[int, int, int]] = set()
        self.resume_inputs: list[tuple[dict[str, Any], str]] = []
        self.now = 0.0
        self.processes = 0

    @initialize(wf=workflows(), ctx=contexts())
    def begin(self, wf: Workflow, ctx: RunContext) -> None:
        self.wf = wf
        self.ctx = ctx
        self.wf_snapshot = copy.deepcopy(wf)
        self.ctx_snapshot = copy.deepcopy(ctx)
        self._new_process(run_machine.start(wf, ctx))

    # --- bookkeeping -------------------------------------------------------------------

    def _new_process(self, transition: run_machine.Transition) -> None:
        self.proc = Process(state=transition.state)
        self.processes += 1
        self._absorb(transition)

    def _absorb(self, transition: run_machine.Transition) -> tuple[Effect, ...]:
        proc = self.proc
        assert not proc.finished, "a finished process produced effects"
        effects = transition.effects
        proc.state = transition.state
        proc.last_batch = effects
        for i, effect in enumerate(effects):
            if isinstance(effect, SPAWNED):
                assert effect.command_id not in proc.used_ids, "command id reused"
                proc.used_ids.add(effect.command_id)
                proc.outstanding[effect.command_id] = effect
            elif isinstance(effect, Finish):
                assert i == len(effects) - 1, "Finish is not the last effect"
                proc.finishes.append(effect)
                assert effect.exit_code in (0, 1, 130, 143)
            elif isinstance(effect, SaveCheckpoint):
                self.emitted_checkpoints += 1
                self._check_checkpoint(effect.checkpoint)  # type: ignore[arg-type]
            elif isinstance(effect, LogEvent):
                fields = dict(effect.fields)
                if effect.event_type in STEP_END_EVENTS and fields.get("top_level") is True:
                    self.emitted_step_ends += 1
                    if fields["status"] != "failed":
                        # the record is followed at once by the checkpoint
                        assert isinstance(effects[i + 1], SaveCheckpoint), effects[i:i + 2]
                started = STEP_PATH.match(str(fields.get("step_path")))
                if effect.event_type == "step_started" and started:
                    self._check_not_completed(int(started.group(1)), effects[i + 1:])
            self._note_completion(effect)
        self.performed.extend(effects)
        assert len(proc.outstanding) <= 1, proc.outstanding  # a sequential run: max 1
        return effects

    def _note_completion(self, effect: Effect) -> None:
        if isinstance(effect, LogEvent) and effect.event_type in STEP_END_EVENTS:
            fields = dict(effect.fields)
            if fields.get("top_level") is True and fields["status"] != "failed":
                self.completed_keys.add((int(fields["input_index"]),  # type: ignore[arg-type]
                                         int(fields["iteration"]),  # type: ignore[arg-type]
                                         int(fields["step_index"])))  # type: ignore[arg-type]

    def _check_not_completed(self, index: int, rest: tuple[Effect, ...]) -> None:
        """A top-level step that starts must not have completed before.

        Its position is that of its own end record when it ends in the same batch (a
        skipped step, an open breaker, an unresolved variable: several steps, even several
        inputs, can go by in one batch); otherwise it is still running at the end of the
        batch and the run's cursor is its position.
        """
        end = next((dict(e.fields) for e in rest if isinstance(e, LogEvent)
                    and e.event_type in STEP_END_EVENTS
                    and dict(e.fields).get("top_level") is True), None)
        if end is not None:
            assert end["step_index"] == index, (end, index)
            key = (int(end["input_index"]), int(end["iteration"]), index)  # type: ignore[arg-type]
        else:
            state = self.proc.state
            assert index == state.step_index
            key = (state.input_index, state.iteration, index)
        assert key not in self.completed_keys, f"completed step {key} started again"

    def _check_checkpoint(self, doc: dict[str, Any]) -> None:
        text = json.dumps(doc)
        loaded = json.loads(text)
        assert loaded == doc, "checkpoint does not round-trip through JSON"
        transition = run_machine.resume(self.wf, self.ctx, loaded)
        assert isinstance(transition, run_machine.Transition)
        assert json.loads(text) == loaded

    def _send(self, event: Event) -> tuple[Effect, ...]:
        proc = self.proc
        cid = getattr(event, "command_id", None)
        if cid is not None:
            assert cid in proc.outstanding
            assert cid not in proc.completed_ids, "command completed twice"
            del proc.outstanding[cid]
            proc.completed_ids.add(cid)
        return self._absorb(run_machine.step(proc.state, event))

    def _tick(self, seconds: float = 1.0) -> float:
        self.now += seconds
        return self.now

    # --- rules -------------------------------------------------------------------------

    @precondition(lambda self: bool(self.proc.outstanding))
    @rule(data=st.data())
    def answer(self, data: st.DataObject) -> None:
        """Complete the outstanding effect: exit, time out, fail to start, sleep, read…"""
        (effect,) = self.proc.outstanding.values()
        cancelled = self.proc.cancelled
        if isinstance(effect, RunCommand):
            how = data.draw(st.sampled_from(["exit", "exit", "exit", "timeout", "not_started"]))
            if how == "timeout" and not cancelled:
                limit = effect.timeout if effect.timeout is not None else 3600.0
                self._send(CommandFinished(command_id=effect.command_id, exit_code=-1,
                                           timed_out=True, duration=limit,
                                           monotonic=self._tick(limit)))
            elif how == "not_started" and not cancelled:
                reason = data.draw(st.sampled_from(["cwd_missing", "spawn_failed"]))
                self._send(CommandNotStarted(command_id=effect.command_id, reason=reason,
                                             message="cannot start", monotonic=self._tick(0)))
            else:
                exit_code = data.draw(st.sampled_from([0, 0, 1, 2, 3]), label="exit_code")
                duration = data.draw(st.sampled_from([0.0, 0.5, 2.0]), label="duration")
                self._send(CommandFinished(
                    command_id=effect.command_id, exit_code=130 if cancelled else exit_code,
                    stdout=data.draw(outputs, label="stdout"), duration=duration,
                    cancelled=cancelled, monotonic=self._tick(duration),
                    finished_at=f"t{self.now}"))
        elif isinstance(effect, Sleep):
            self._send(Slept(command_id=effect.command_id, monotonic=self._tick(effect.seconds)))
        elif isinstance(effect, ReadGitHead):
            sha = data.draw(st.sampled_from(["s1", "s2", "s3", None]), label="sha")
            self._send(GitHeadRead(command_id=effect.command_id, sha=sha))
        elif isinstance(effect, GIT_EFFECTS):
            self._send(git_answer(data, effect))
        elif isinstance(effect, ReadFile):
            self._send(FileRead(command_id=effect.command_id, content=data.draw(results),
                                monotonic=self._tick(0)))
        else:
            assert isinstance(effect, WriteFile)
            done: Event = (FileWritten(command_id=effect.command_id, path=effect.path, size=3)
                           if data.draw(st.booleans(), label="written")
                           else FileWriteFailed(command_id=effect.command_id, message="no"))
            self._send(done)

    @precondition(lambda self: not self.proc.finished)
    @rule(signal=st.sampled_from(["SIGINT", "SIGTERM"]))
    def cancel(self, signal: str) -> None:
        proc = self.proc
        was_cancelled = proc.cancelled
        had_outstanding = bool(proc.outstanding)
        effects = self._send(CancelRequested(signal=signal))
        proc.cancelled = True
        if was_cancelled:
            assert effects == ()
        elif had_outstanding:
            assert effects == (CancelCommands(),)
        else:
            assert proc.finished and proc.finishes[0].exit_code in (130, 143)

    @rule(data=st.data())
    def bogus_event(self, data: st.DataObject) -> None:
        """A second completion, an unknown id, anything after Finish: always a bug."""
        proc = self.proc
        if proc.finished:
            event = data.draw(any_event(st.integers(-1, max(proc.used_ids, default=0) + 2)))
        else:
            fresh = max(proc.used_ids, default=0) + data.draw(st.integers(1, 3))
            cid = data.draw(st.sampled_from(sorted({*proc.completed_ids, fresh})), label="id")
            event = data.draw(st.sampled_from([
                CommandFinished(command_id=cid, exit_code=0),
                CommandNotStarted(command_id=cid, reason="spawn_failed", message=""),
                Slept(command_id=cid),
                GitHeadRead(command_id=cid, sha="s1"),
                ChangesCommitted(command_id=cid, sha=None),
                CommitsListed(command_id=cid, head=None),
                CommitsSquashed(command_id=cid, sha=None),
                GitFailed(command_id=cid, operation="x", message=""),
                FileWritten(command_id=cid, path="p", size=0),
                FileWriteFailed(command_id=cid, message=""),
            ]), label="event")
        before = copy.deepcopy(proc.state)
        try:
            run_machine.step(proc.state, event)
        except InvalidTransition:
            pass
        else:
            raise AssertionError(f"{event} was accepted")
        assert proc.state == before

    @precondition(lambda self: self.proc.finished and not self._resumable())
    @rule()
    def start_a_new_run(self) -> None:
        self.performed = []
        self.completed_keys = set()
        self._new_process(run_machine.start(self.wf, self.ctx))

    @precondition(lambda self: self._resumable())
    @rule(data=st.data())
    def crash_and_resume(self, data: st.DataObject) -> None:
        # the process dies somewhere inside its last batch of effects
        batch = self.proc.last_batch
        if not self.proc.finished and batch:
            # favour the window between a step's record and its checkpoint
            records = [i + 1 for i, e in enumerate(batch) if isinstance(e, LogEvent)
                       and e.event_type in STEP_END_EVENTS]
            cut = data.draw(st.sampled_from(records) if records and data.draw(st.booleans())
                            else st.integers(0, len(batch)), label="cut")
            dropped = len(batch) - cut
            if dropped:
                del self.performed[len(self.performed) - dropped:]
                self.completed_keys = set()
                for effect in self.performed:
                    self._note_completion(effect)
        doc = self._last_checkpoint()
        if doc is None or doc["execution_state"]["status"] == "Completed":
            return
        checkpoint = json.loads(json.dumps(doc))
        later = self._later_events()
        snapshot = json.dumps(checkpoint, sort_keys=True)
        later_snapshot = json.dumps(later, sort_keys=True)
        self.resume_inputs.append((checkpoint, snapshot))
        event(f"resumed from {doc['execution_state']['status']}")
        if any(e["event"]["event_type"] in STEP_END_EVENTS for e in later):
            event("resumed with a step record newer than the checkpoint")
        transition = run_machine.resume(self.wf, self.ctx, checkpoint, later)
        assert json.dumps(later, sort_keys=True) == later_snapshot
        self._new_process(transition)

    def _resumable(self) -> bool:
        doc = self._last_checkpoint()
        if doc is None:
            return False
        if self.proc.finished:
            return bool(doc["execution_state"]["status"] != "Completed")
        return True

    def _last_checkpoint(self) -> dict[str, Any] | None:
        for effect in reversed(self.performed):
            if isinstance(effect, SaveCheckpoint):
                return effect.checkpoint  # type: ignore[return-value]
        return None

    def _later_events(self) -> list[dict[str, Any]]:
        index = max(i for i, e in enumerate(self.performed) if isinstance(e, SaveCheckpoint))
        out = []
        for seq, effect in enumerate(self.performed[index + 1:], start=index + 1):
            if isinstance(effect, LogEvent):
                out.append({"seq": seq, "timestamp": f"ts{seq}",
                            "event": json.loads(json.dumps(effect.as_dict()))})
        return out

    # --- invariants --------------------------------------------------------------------

    @invariant()
    def inputs_are_never_mutated(self) -> None:
        assert self.wf == self.wf_snapshot
        assert self.ctx == self.ctx_snapshot
        for doc, snapshot in self.resume_inputs:
            assert json.dumps(doc, sort_keys=True) == snapshot

    @invariant()
    def checkpoints_cover_finished_steps(self) -> None:
        assert self.emitted_checkpoints >= self.emitted_step_ends

    @invariant()
    def one_outstanding_effect_at_most(self) -> None:
        assert len(self.proc.outstanding) <= 1
        if not self.proc.finished:
            # a running process always waits for exactly one thing
            assert len(self.proc.outstanding) == 1
        else:
            assert len(self.proc.finishes) == 1

    def teardown(self) -> None:
        if not hasattr(self, "proc"):
            return
        for _ in range(500):
            if self.proc.finished:
                break
            (effect,) = self.proc.outstanding.values()
            if isinstance(effect, RunCommand):
                self._send(CommandFinished(command_id=effect.command_id,
                                           exit_code=130 if self.proc.cancelled else 0))
            elif isinstance(effect, Sleep):
                self._send(Slept(command_id=effect.command_id))
            elif isinstance(effect, ReadGitHead):
                self._send(GitHeadRead(command_id=effect.command_id, sha="s1"))
            elif isinstance(effect, GIT_EFFECTS):
                self._send(GitFailed(command_id=effect.command_id, operation="x", message=""))
            elif isinstance(effect, ReadFile):
                self._send(FileRead(command_id=effect.command_id, content=None))
            else:
                self._send(FileWritten(command_id=effect.command_id, path="p", size=0))
        assert len(self.proc.finishes) == 1, "the run did not end with exactly one Finish"
        event(f"processes: {min(self.processes, 3)}")
        assert self.proc.outstanding == {}
        try:
            run_machine.step(self.proc.state, CancelRequested(signal="SIGINT"))
        except InvalidTransition:
            pass
        else:
            raise AssertionError("a finished run accepted CancelRequested")


RunMachine.TestCase.settings = settings(
    max_examples=120, stateful_step_count=40, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestRunMachine = RunMachine.TestCase
