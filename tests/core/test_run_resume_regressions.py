"""Regressions of the run machine's resume logic, as exact event sequences.

Each case feeds a run a fixed list of actions — answers to the one outstanding effect,
``CancelRequested``, and crash-and-resume (from the last checkpoint written plus the
journal records written after it, as ``prodigy resume`` does, spec 08 §2.4 and spec 09
§5.4) — and checks where every top-level step started.  The invariant is that of
``tests/core/test_machine_properties.py``: a step that completed — key (input, iteration,
step) — never starts again.

Found by ``TestRunMachine`` (input mode with ``-n 2``): an input that failed in iteration 2
was recorded as ``failed_at`` (input, step) without its iteration, so the resume ran it
again from iteration 1 and re-ran steps of iteration 1 that had completed.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import attrs
import pytest

from prodigy_core import run_machine
from prodigy_core.context import InputSpec, RunContext
from prodigy_core.effects import (
    SPAWNED,
    Effect,
    Finish,
    LogEvent,
    ReadGitHead,
    RunCommand,
    SaveCheckpoint,
    WriteFile,
)
from prodigy_core.events import (
    CancelRequested,
    CommandFinished,
    Event,
    FileWriteFailed,
    FileWritten,
    GitHeadRead,
)
from prodigy_core.model import OnFailure, Step, Workflow, WriteFileSpec
from tests.core._machine_driver import STEP_END_EVENTS, make_ctx, shell

Key = tuple[int, int, int]  # (input_index, iteration, step_index)
Action = tuple[Any, ...]
# ("head", sha) | ("cmd", exit_code) | ("write", ok) | ("cancel", signal) | ("resume",)
# | ("finish",): answer everything with success (HEAD "s1") until the run finishes

INPUTS = (InputSpec(arg="a"), InputSpec(arg="b"))


@attrs.define
class Run:
    """Every process of one run: the effects performed and the step keys started."""

    wf: Workflow
    ctx: RunContext
    state: run_machine.RunState | None = None
    outstanding: dict[int, Effect] = attrs.field(factory=dict)
    performed: list[Effect] = attrs.field(factory=list)
    completed: set[Key] = attrs.field(factory=set)
    started: list[Key] = attrs.field(factory=list)
    finishes: list[Finish] = attrs.field(factory=list)

    def take(self, transition: run_machine.Transition) -> None:
        self.state = transition.state
        effects = transition.effects
        for i, effect in enumerate(effects):
            if isinstance(effect, SPAWNED):
                self.outstanding[effect.command_id] = effect
            elif isinstance(effect, Finish):
                self.finishes.append(effect)
            elif isinstance(effect, LogEvent):
                fields = dict(effect.fields)
                if effect.event_type == "step_started" and \
                        str(fields["step_path"]).startswith("steps["):
                    key = self._key(int(str(fields["step_path"])[6:-1]), effects[i + 1:])
                    assert key not in self.completed, f"completed step {key} started again"
                    self.started.append(key)
                if effect.event_type in STEP_END_EVENTS and fields.get("top_level") is True \
                        and fields["status"] != "failed":
                    self.completed.add((int(fields["input_index"]), int(fields["iteration"]),
                                        int(fields["step_index"])))
            self.performed.append(effect)

    def _key(self, index: int, rest: Sequence[Effect]) -> Key:
        # the step's own end record when it ends in the same batch, else the run's cursor
        for effect in rest:
            fields = dict(effect.fields) if isinstance(effect, LogEvent) else {}
            if isinstance(effect, LogEvent) and effect.event_type in STEP_END_EVENTS \
                    and fields.get("top_level") is True:
                assert fields["step_index"] == index
                return int(fields["input_index"]), int(fields["iteration"]), index
        assert self.state is not None and self.state.step_index == index
        return self.state.input_index, self.state.iteration, index

    def send(self, event: Event) -> None:
        assert self.state is not None
        cid = getattr(event, "command_id", None)
        if cid is not None:
            del self.outstanding[cid]
        self.take(run_machine.step(self.state, event))

    def last_checkpoint(self) -> tuple[int, dict[str, Any]]:
        last = max(i for i, e in enumerate(self.performed) if isinstance(e, SaveCheckpoint))
        return last, self.performed[last].checkpoint  # type: ignore[union-attr]

    def resume(self) -> None:
        """The process dies after its last batch; a new one resumes the run."""
        last, checkpoint = self.last_checkpoint()
        later = [{"seq": seq, "timestamp": f"ts{seq}",
                  "event": json.loads(json.dumps(e.as_dict()))}
                 for seq, e in enumerate(self.performed[last + 1:], start=last + 1)
                 if isinstance(e, LogEvent)]
        self.outstanding = {}
        self.finishes = []
        self.take(run_machine.resume(self.wf, self.ctx, json.loads(json.dumps(checkpoint)),
                                     later))

    def act(self, action: Action) -> None:
        kind = action[0]
        if kind == "resume":
            self.resume()
            return
        if kind == "cancel":
            self.send(CancelRequested(signal=action[1]))
            return
        if kind == "finish":
            for _ in range(200):
                if self.finishes:
                    return
                self.act(self._success())
            raise AssertionError("the run did not finish")
        (effect,) = self.outstanding.values()
        cid = effect.command_id  # type: ignore[attr-defined]
        if kind == "head":
            assert isinstance(effect, ReadGitHead), effect
            self.send(GitHeadRead(command_id=cid, sha=action[1]))
        elif kind == "cmd":
            assert isinstance(effect, RunCommand), effect
            self.send(CommandFinished(command_id=cid, exit_code=action[1]))
        else:
            assert kind == "write" and isinstance(effect, WriteFile), (action, effect)
            self.send(FileWritten(command_id=cid, path=effect.path, size=1) if action[1]
                      else FileWriteFailed(command_id=cid, message="no"))

    def _success(self) -> Action:
        (effect,) = self.outstanding.values()
        if isinstance(effect, ReadGitHead):
            return ("head", "s1")
        if isinstance(effect, RunCommand):
            return ("cmd", 0)
        return ("write", True)


# the workflow of the shrunk hypothesis example: a skipped step with a handler, a
# write_file step, another skipped step
HYPOTHESIS_WF = Workflow(name="prop", steps=(
    shell("cmd0", id="s0", when=False, on_failure=OnFailure(commands=(
        shell("h0_0 ${error.exit_code}"), shell("h0_1 ${error.exit_code}")))),
    Step(kind="write_file", write_file=WriteFileSpec(path="f1.txt", content="${c0}")),
    shell("cmd2", id="s2", when=False),
))
ARG_WF = Workflow(name="args", steps=(shell("run ${ARG}"), shell("then ${ARG}")))

CASES = [
    pytest.param(
        HYPOTHESIS_WF,
        [("cancel", "SIGINT"), ("head", "s1"),      # interrupted before the first step
         ("resume",),
         ("write", True), ("head", "s1"),           # a, iteration 1 completes
         ("head", "s1"), ("write", False),          # a fails in iteration 2 at step 1
         ("head", "s1"), ("write", False),          # b fails in iteration 1: run failed
         ("resume",),
         ("write", False),                          # b fails again; then a runs again
         ("finish",)],
        # (skipped steps log no step_started)
        [(0, 1, 1), (0, 2, 1), (1, 1, 1),
         (1, 1, 1),
         (0, 2, 1)],                                # a: from iteration 2, not 1
        1,                                          # b failed
        id="hypothesis-example",
    ),
    pytest.param(
        ARG_WF,
        [("head", "h0"), ("cmd", 0), ("cmd", 0), ("head", "h1"),    # a, iteration 1
         ("head", "h1"), ("cmd", 0), ("cmd", 1),                    # a fails in iter 2
         ("head", "h1"), ("cmd", 0), ("cmd", 1),                    # b fails: run failed
         ("resume",),
         ("finish",)],
        [(0, 1, 0), (0, 1, 1), (0, 2, 0), (0, 2, 1), (1, 1, 0), (1, 1, 1),
         (1, 1, 1), (1, 2, 0), (1, 2, 1),                           # b goes on
         (0, 2, 1)],                                                # a: iteration 2
        0,
        id="failed-in-iteration-2",
    ),
    pytest.param(
        ARG_WF,
        [("head", "h0"), ("cmd", 0), ("cmd", 0), ("head", "h1"),
         ("head", "h1"), ("cmd", 0), ("cmd", 1),
         ("head", "h1"), ("cmd", 0), ("cmd", 1),
         ("resume",),
         ("cmd", 0), ("head", "s1"),                                # b, iteration 1
         ("head", "s1"), ("cmd", 0), ("cmd", 0), ("head", "s2"),    # b, iteration 2
         ("resume",),                                               # crash: a retrying
         ("finish",)],
        [(0, 1, 0), (0, 1, 1), (0, 2, 0), (0, 2, 1), (1, 1, 0), (1, 1, 1),
         (1, 1, 1), (1, 2, 0), (1, 2, 1),
         (0, 2, 1),                    # a runs again from where it failed…
         (0, 2, 1)],                   # …and again after the crash (it had not completed)
        0,
        id="crash-while-retrying-in-iteration-2",
    ),
]


@pytest.mark.parametrize(("wf", "actions", "started", "exit_code"), CASES)
def test_resume_never_restarts_a_completed_step(
    wf: Workflow, actions: list[Action], started: list[Key], exit_code: int
) -> None:
    run = Run(wf=wf, ctx=make_ctx(inputs=INPUTS, max_iterations=2))
    run.take(run_machine.start(run.wf, run.ctx))
    for action in actions:
        run.act(action)
    assert run.started == started
    assert [f.exit_code for f in run.finishes] == [exit_code]


def test_failed_at_keeps_the_iteration_and_reads_old_pairs() -> None:
    run = Run(wf=ARG_WF, ctx=make_ctx(inputs=INPUTS, max_iterations=2))
    run.take(run_machine.start(run.wf, run.ctx))
    for action in [("head", "h0"), ("cmd", 0), ("cmd", 0), ("head", "h1"),
                   ("head", "h1"), ("cmd", 0), ("cmd", 1),
                   ("head", "h1"), ("cmd", 0), ("cmd", 1)]:
        run.act(action)
    checkpoint = json.loads(json.dumps(run.last_checkpoint()[1]))
    assert checkpoint["execution_state"]["status"] == "Failed"
    assert checkpoint["inputs"]["failed_at"] == [[0, 2, 1], [1, 1, 1]]
    # a checkpoint written before the iteration was kept: the input runs from iteration 1
    checkpoint["inputs"]["failed_at"] = [[0, 1], [1, 1]]
    state = run_machine.resume(ARG_WF, run.ctx, checkpoint).state
    assert state.retry_queue == ((0, 1, 1),)
