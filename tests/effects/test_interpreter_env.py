"""Layer 2: the workflow environment per step and the live masker, against ``FakeEnv``
and the production wiring (spec 11 §2.2, §2.3, §9)."""

from __future__ import annotations

import io
import json
from datetime import datetime
from pathlib import Path
from typing import Any

from prodigy_core import run_machine
from prodigy_core.context import RunContext
from prodigy_core.effects import Effect, LogEvent, RegisterSecret, RunCommand
from prodigy_core.envresolve import resolve_environment
from prodigy_core.model import EnvConditional, EnvDynamic, Step, Workflow
from prodigy_effects.codec import dump_effect, load_effect
from prodigy_effects.fake import FakeEnv, Scripted
from prodigy_effects.interpreter import RunResult, interpret
from prodigy_effects.journal import JournalWriter
from prodigy_effects.masker import Masker
from prodigy_effects.runner import masked_outcome, masker_for, production_env
from prodigy_effects.storage import Storage

RAW = "raw-secret-value-42"


def ctx_for(workflow: Workflow, environ: dict[str, str], **fields: Any) -> RunContext:
    resolved = resolve_environment(workflow, environ=environ, profile=None)
    fields.setdefault("secret_values", resolved.secret_values)
    return RunContext(session_id="workflow-1", workflow_name="t", workflow_path="t.yml",
                      project_dir="/wt/session", repo_root="/repo",
                      environ=tuple(sorted(environ.items())), workflow_env=resolved.values,
                      late_env=resolved.late, **fields)


async def run(workflow: Workflow, env: Any, ctx: RunContext) -> RunResult:
    return await interpret(run_machine.start(workflow, ctx), run_machine.step, env,
                           record=True)


def kinds(trace: tuple[Effect, ...]) -> list[str]:
    return [f"LogEvent:{e.event_type}" if isinstance(e, LogEvent) else type(e).__name__
            for e in trace]


def test_register_secret_round_trips_with_its_stable_tag() -> None:
    data = dump_effect(RegisterSecret(value="abcd"))
    assert data == {"type": "register_secret", "value": "abcd"}
    assert load_effect(data) == RegisterSecret(value="abcd")


def test_masker_learns_values_and_masks_their_json_form() -> None:
    masker = Masker(["first-secret"])
    masker.add('quo"ted-secret')
    masker.add("abc")  # too short to mask (W1013)
    text = 'first-secret {"v": "quo\\"ted-secret"} abc'
    assert masker(text) == '***REDACTED*** {"v": "***REDACTED***"} abc'
    assert masker.values == ("first-secret", 'quo"ted-secret', "abc")
    assert Masker(credentials=True)("ghp_abcdefghij12") == "***REDACTED***"
    assert masked_outcome({"error": "x first-secret", "n": [1, "first-secret"]}, masker) == {
        "error": "x ***REDACTED***", "n": [1, "***REDACTED***"]}


async def test_an_interpolated_sensitive_step_env_value_is_masked_everywhere(
        autojump_clock: Any) -> None:
    step = Step(kind="shell", command="show", env=(("MY_TOKEN", "${env.RAW}"),))
    workflow = Workflow(name="t", steps=(step,))
    env = FakeEnv({"show": Scripted(exit_code=1, stdout=f"token is {RAW}\n",
                                    stderr=f"bad {RAW}\n")})
    result = await run(workflow, env, ctx_for(workflow, {"RAW": RAW}))
    assert result.exit_code == 1
    trace = kinds(result.trace)
    assert trace.index("RegisterSecret") < trace.index("RunCommand")
    command = next(e for e in result.trace if isinstance(e, RunCommand))
    assert dict(command.env)["MY_TOKEN"] == RAW  # the process gets the value itself
    assert env.secrets is not None and RAW in env.secrets.values  # type: ignore[attr-defined]
    shown = "\n".join(env.console.lines)  # type: ignore[attr-defined]
    stored = json.dumps([env.journal.events, env.store.checkpoints,  # type: ignore[attr-defined]
                         env.store.sessions])  # type: ignore[attr-defined]
    assert "***REDACTED***" in shown
    assert RAW not in shown and RAW not in stored


async def test_dynamic_and_conditional_values_per_step(autojump_clock: Any) -> None:
    workflow = Workflow(name="t", steps=(
        Step(kind="shell", command="echo ${MODE} ${STAMP}"),
        Step(kind="shell", command="echo prod", capture="KIND"),
        Step(kind="shell", command="echo ${MODE} ${STAMP}")),
        env=(("MODE", EnvConditional(condition="${KIND} == 'prod'", when_true="strict",
                                     when_false="lax")),
             ("STAMP", EnvDynamic(command="stamp"))))
    env = FakeEnv({"stamp": [Scripted(stdout="s1\n"), Scripted(stdout="s2\n"),
                             Scripted(stdout="s3\n")],
                   "echo prod": Scripted(stdout="prod\n")})
    result = await run(workflow, env, ctx_for(workflow, {}))
    assert result.exit_code == 0
    commands = [e for e in result.trace if isinstance(e, RunCommand)]
    assert [c.argv[-1] for c in commands] == ["stamp", "echo lax s1", "stamp", "echo prod",
                                              "stamp", "echo strict s3"]
    assert all(c.cwd == "/wt/session" for c in commands)
    assert dict(commands[-1].env)["MODE"] == "strict"


async def test_a_failing_dynamic_command_shows_no_secret(autojump_clock: Any) -> None:
    workflow = Workflow(name="t", steps=(Step(kind="shell", command="echo ${D}"),),
                        env=(("D", EnvDynamic(command="leak", cache=True)),))
    ctx = ctx_for(workflow, {}, secret_values=(RAW,))
    env = FakeEnv({"leak": Scripted(exit_code=1, stderr=f"dyn-{RAW}\n")},
                  secrets=Masker(ctx.secret_values))
    result = await run(workflow, env, ctx)
    assert result.exit_code == 2  # a cached value is computed at start (spec 11 §2.2)
    shown = "\n".join(env.console.lines)  # type: ignore[attr-defined]
    assert "E2005" in shown and "dyn-***REDACTED***" in shown and RAW not in shown
    assert RAW not in json.dumps(env.journal.events)  # type: ignore[attr-defined]


def test_production_writers_share_one_live_masker(tmp_path: Path) -> None:
    workflow = Workflow(name="t", steps=())
    ctx = ctx_for(workflow, {}, secret_values=("start-secret",))
    storage = Storage(tmp_path)
    masker = masker_for(ctx)
    journal = JournalWriter.open(tmp_path / "events", 1, datetime(2026, 1, 1), mask=masker)
    try:
        env = production_env(ctx, storage, journal, 0, False, False, io.StringIO(),
                             io.StringIO(), masker=masker)
        assert env.secrets is masker
        env.secrets.add("later-secret")
        console = env.console
        assert console.mask("later-secret start-secret") == (  # type: ignore[attr-defined]
            "***REDACTED*** ***REDACTED***")
        assert env.store.storage.mask is masker  # type: ignore[attr-defined]
        assert env.claude.mask is masker  # type: ignore[union-attr]
        assert env.worktrees.mask is masker  # type: ignore[union-attr]
        env.journal.append({"event_type": "x", "value": "later-secret"})
    finally:
        journal.close()
    text = "".join(p.read_text() for p in (tmp_path / "events").rglob("*.jsonl"))
    assert "later-secret" not in text and "***REDACTED***" in text
