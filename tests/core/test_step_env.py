"""Workflow env values computed per step, masking of step env values, and the located
problems of the environment at start (spec 11 §2.2, §2.3, §3, §4.1, §9.1; spec 01 §7)."""

from __future__ import annotations

from typing import Any

import pytest

from prodigy_core import run_machine
from prodigy_core.effects import RegisterSecret, RunCommand
from prodigy_core.envresolve import (
    conditional_value,
    env_file_problems,
    late_entries,
    resolve_environment,
)
from prodigy_core.events import CommandFinished
from prodigy_core.interpolate import Var
from prodigy_core.masking import known_secrets
from prodigy_core.model import (
    EnvConditional,
    EnvDynamic,
    EnvFile,
    EnvStatic,
    Profile,
    SecretSource,
    Step,
    Workflow,
)
from prodigy_core.problems import InvalidTransition, Problem
from prodigy_core.step_env import CACHE_PREFIX
from tests.core._machine_driver import Driver, R, command_text, make_ctx, shell

MODE = EnvConditional(condition="${KIND} == 'prod'", when_true="strict", when_false="lax")
POSITIONS = {"$": (1, 1), "$.env_files": (2, 1), "$.env_files[0]": (3, 5),
             "$.env_files[1]": (4, 5), "$.secrets": (5, 1), "$.secrets.TOKEN": (6, 10),
             "$.env": (7, 1), "$.env.D": (8, 5)}


def wf(*steps: Step, env: tuple[tuple[str, Any], ...] = (), **fields: Any) -> Workflow:
    return Workflow(name="t", steps=steps, env=env, **fields)


def start(workflow: Workflow, environ: dict[str, str] | None = None, **ctx: Any) -> Driver:
    resolved = resolve_environment(workflow, environ=environ or {}, profile=None)
    context = make_ctx(workflow_env=resolved.values, late_env=resolved.late,
                       environ=tuple(sorted((environ or {}).items())), **ctx)
    return Driver(run_machine.start(workflow, context))


def env_of(effect: RunCommand) -> dict[str, str]:
    return dict(effect.env)


# --- which entries are computed per step ---------------------------------------------------


def test_late_entries_are_the_final_conditional_or_dynamic_definitions() -> None:
    dyn = EnvDynamic(command="date")
    workflow = wf(env=(("A", MODE), ("B", dyn), ("C", EnvDynamic(command="x", cache=True)),
                       ("TOKEN", dyn)),
                  secrets=(("TOKEN", SecretSource(provider="env", key="T")),))
    assert late_entries(workflow) == (("A", MODE), ("B", dyn),
                                      ("C", EnvDynamic(command="x", cache=True)))
    # a later static value (here: the active profile's) replaces a conditional one
    fixed = Profile(name="p", values=(("A", EnvStatic(value="fixed")),))
    assert late_entries(workflow, fixed) == (("B", dyn),
                                             ("C", EnvDynamic(command="x", cache=True)))


def test_dynamic_values_are_not_run_at_start_without_a_runner() -> None:
    workflow = wf(env=(("D", EnvDynamic(command="echo 4", cache=True)),
                       ("E", EnvDynamic(command="echo 5"))))
    resolved = resolve_environment(workflow, environ={}, profile=None)
    assert resolved.values == () and resolved.cached == ()
    ran: list[str] = []

    def run(command: str, env: Any) -> str:
        ran.append(command)
        return command[-1]

    known = resolve_environment(workflow, environ={}, profile=None, run_dynamic=run,
                                known_cache={"D": "from-before"})
    assert ran == ["echo 5"]  # the cached value is known: it does not run again
    assert dict(known.values) == {"D": "from-before", "E": "5"}
    assert known.cached == (("D", "from-before"),)


def test_conditional_value_uses_the_variables_given() -> None:
    assert conditional_value(MODE, {}, {}) == "lax"
    assert conditional_value(MODE, {"KIND": Var(value="prod")}, {}) == "strict"


# --- the step machine ------------------------------------------------------------------------


def test_conditional_values_follow_the_variables_of_each_step() -> None:
    workflow = wf(shell("echo ${MODE}"), shell("echo prod", capture="KIND"),
                  shell("echo ${MODE}"), env=(("MODE", MODE),))
    d = start(workflow)
    finish = d.run({"echo prod": R(stdout="prod\n")})
    assert finish.exit_code == 0
    first, _, third = d.of(RunCommand)
    assert command_text(first) == "echo lax" and env_of(first)["MODE"] == "lax"
    assert command_text(third) == "echo strict" and env_of(third)["MODE"] == "strict"


def test_uncached_dynamic_values_run_for_every_step_in_the_worktree() -> None:
    workflow = wf(shell("echo ${WHEN}"), shell("echo $$WHEN"),
                  env=(("WHEN", EnvDynamic(command="date +%s")),))
    d = start(workflow, project_dir="/wt/session")
    answers = iter(["1\n", "2\n\n"])

    def script(effect: RunCommand) -> R:
        return R(stdout=next(answers)) if command_text(effect) == "date +%s" else R()

    assert d.run(script).exit_code == 0
    commands = d.of(RunCommand)
    assert [command_text(c) for c in commands] == ["date +%s", "echo 1", "date +%s",
                                                   "echo $WHEN"]
    dynamic = commands[0]
    assert dynamic.cwd == "/wt/session" and dynamic.timeout == 60
    assert not dynamic.stream_output and dynamic.step_path == "steps[0].env.WHEN"
    assert env_of(commands[3])["WHEN"] == "2"  # trailing newlines removed


def test_cached_dynamic_value_runs_once_and_is_kept_in_the_checkpoint() -> None:
    workflow = wf(shell("echo ${N}"), shell("echo $$N"),
                  env=(("N", EnvDynamic(command="nproc", cache=True)),))
    d = start(workflow)
    assert d.run({"nproc": R(stdout="4\n")}).exit_code == 0
    assert d.commands == ["nproc", "echo 4", "echo $N"]
    assert env_of(d.of(RunCommand)[2])["N"] == "4"
    assert d.checkpoints[-1]["variable_state"][CACHE_PREFIX + "N"] == "4"
    # a resumed run takes the value from the checkpoint and does not run the command
    checkpoint = dict(d.checkpoints[0])
    resolved = resolve_environment(workflow, environ={}, profile=None)
    ctx = make_ctx(late_env=resolved.late)
    again = Driver(run_machine.resume(workflow, ctx, checkpoint))
    assert again.run().exit_code == 0
    assert again.commands == ["echo $N"]
    assert env_of(again.of(RunCommand)[0])["N"] == "4"


def test_cached_value_known_before_the_run_is_not_run() -> None:
    workflow = wf(shell("echo ${N}"), env=(("N", EnvDynamic(command="nproc", cache=True)),))
    d = start(workflow, env_cache=(("N", "8"),))
    assert d.run().exit_code == 0
    assert d.commands == ["echo 8"]


def test_a_failing_dynamic_command_fails_the_step_with_e2005() -> None:
    workflow = wf(shell("echo ${D}"), env=(("D", EnvDynamic(command="exit 3")),))
    d = start(workflow)
    finish = d.run({"exit 3": R(exit_code=3, stderr="no luck\n")})
    assert finish.exit_code == 1
    assert d.commands == ["exit 3"]
    assert "E2005" in d.printed and "no luck" in d.printed
    assert d.state.error_code == "E2005"
    timed = start(workflow)
    timed.run({"exit 3": R(timed_out=True)})
    assert "timed out after 60 s" in timed.printed


def test_the_env_stage_accepts_only_the_command_it_waits_for() -> None:
    workflow = wf(shell("echo ${D}"), env=(("D", EnvDynamic(command="x")),))
    d = start(workflow)
    pending = d.pending(RunCommand)
    with pytest.raises(InvalidTransition):
        d.send(CommandFinished(command_id=pending.command_id + 7, exit_code=0))


def test_no_dynamic_command_runs_in_a_dry_run() -> None:
    workflow = wf(shell("echo ${D}"), env=(("D", EnvDynamic(command="x")), ("M", MODE)))
    d = start(workflow, dry_run=True)
    d.run()
    assert "x" not in d.commands


# --- masking step env values (spec 11 §9.1) --------------------------------------------------


def test_a_sensitive_step_env_value_built_by_interpolation_becomes_a_secret() -> None:
    step = shell("use", env=(("MY_TOKEN", "${env.RAW}"), ("PLAIN", "${env.RAW}"),
                             ("API_KEY", "known-secret")))
    d = start(wf(step), environ={"RAW": "raw-value-1234"}, secret_values=("known-secret",))
    d.run()
    registered = d.of(RegisterSecret)
    assert [e.value for e in registered] == ["raw-value-1234"]
    # registered before the command that could print it
    effects = d.effects
    assert effects.index(registered[0]) < effects.index(d.of(RunCommand)[0])


# --- located problems (spec 01 §8.1) ---------------------------------------------------------


def test_problems_at_start_carry_file_line_column_and_path() -> None:
    workflow = wf(env=(("D", EnvDynamic(command="boom", cache=True)),),
                  env_files=(EnvFile(path=".env"), EnvFile(path=".req", required=True)),
                  secrets=(("TOKEN", SecretSource(provider="env", key="NOPE")),))

    def fail(command: str, env: Any) -> Problem:
        return Problem(severity="error", code="E2005", message=f"{command} failed")

    resolved = resolve_environment(workflow, environ={}, profile=None, run_dynamic=fail,
                                   env_file_contents={".env": None, ".req": None},
                                   file="wf.yml", positions=POSITIONS)
    found = {(p.code, p.path): (p.file, p.line, p.column)
             for p in (*resolved.problems, *resolved.warnings)}
    assert found == {
        ("W1005", "$.env_files[0]"): ("wf.yml", 3, 5),
        ("E2004", "$.env_files[1]"): ("wf.yml", 4, 5),
        ("E2005", "$.env.D"): ("wf.yml", 8, 5),
        ("E2003", "$.secrets.TOKEN"): ("wf.yml", 6, 10),
    }


def test_validation_reports_every_missing_env_file_as_w1005() -> None:
    workflow = wf(env_files=(EnvFile(path=".env"), EnvFile(path=".req", required=True),
                             EnvFile(path="present")))
    errors, warnings = env_file_problems(workflow, {"present": "A=1"}, file="wf.yml",
                                         positions=POSITIONS, validating=True)
    assert errors == ()
    assert [(p.code, p.path, p.line) for p in warnings] == [
        ("W1005", "$.env_files[0]", 3), ("W1005", "$.env_files[1]", 4)]
    assert "E2004" in warnings[1].message


def test_known_secrets_before_resolution() -> None:
    workflow = wf(shell("x", env=(("API_KEY", "literal-key"),)),
                  env=(("S", EnvStatic(value="lit-secret", secret=True)),),
                  secrets=(("TOKEN", SecretSource(provider="env", key="SRC")),),
                  profiles=(Profile(name="p", values=(
                      ("P", EnvStatic(value="profile-secret", secret=True)),)),))
    assert set(known_secrets(workflow, {"SRC": "from-environ"})) == {
        "from-environ", "lit-secret", "profile-secret", "literal-key"}


def test_a_cached_value_is_computed_at_start_before_any_step() -> None:
    workflow = wf(shell("echo ${N}", when="false"), shell("echo ${N}"),
                  env=(("N", EnvDynamic(command="nproc", cache=True)),))
    d = start(workflow)
    first = d.pending(RunCommand)
    assert command_text(first) == "nproc" and first.timeout == 60.0
    assert not d.logs("step_started")  # before any step, also a skipped one
    assert d.run({"nproc": R(stdout="2\n")}).exit_code == 0
    assert d.commands == ["nproc", "echo 2"]


def test_a_failing_cached_command_stops_the_run_at_start_with_exit_2() -> None:
    workflow = wf(shell("never"), env=(("N", EnvDynamic(command="boom", cache=True)),))
    d = start(workflow)
    finish = d.run({"boom": R(exit_code=1, stderr="nope\n")})
    assert finish.exit_code == 2
    assert d.commands == ["boom"]
    assert "error[E2005]: dynamic env 'N' command failed with exit code 1: boom" in d.printed
    assert d.state.error_code == "E2005"


def test_a_short_sensitive_value_from_interpolation_warns_w1013() -> None:
    workflow = wf(shell("echo ${short}", capture="short"),
                  shell("x", env=(("API_TOKEN", "${short}"),)))
    d = start(workflow)
    d.run({"echo ${short}": R(stdout="ab\n")})
    assert "warning[W1013]: the value of 'API_TOKEN' in 'shell: x' is shorter than 4 " \
           "characters and cannot be masked" in d.printed
    assert not d.of(RegisterSecret)


# --- profiles (spec 11 §5; docs/decisions.md "Profiles") ------------------------------------


def test_a_profile_value_takes_the_place_of_the_workflow_value_it_replaces() -> None:
    workflow = wf(
        env=(("APP_ENV", EnvStatic(value="staging")),
             ("API_URL", EnvStatic(value="https://${APP_ENV}.example.com")),
             ("MODE", MODE)),
        profiles=(Profile(name="prod", values=(
            ("APP_ENV", EnvStatic(value="prod")),
            ("KIND", EnvStatic(value="prod-${APP_ENV}")),
            ("TAG", EnvStatic(value="${API_URL}#${KIND}")))),))
    plain = dict(resolve_environment(workflow, environ={}, profile=None).values)
    assert plain == {"APP_ENV": "staging", "API_URL": "https://staging.example.com",
                     "MODE": "lax"}
    prod = resolve_environment(workflow, environ={}, profile="prod")
    assert dict(prod.values) == {
        "APP_ENV": "prod", "API_URL": "https://prod.example.com", "MODE": "lax",
        "KIND": "prod-prod", "TAG": "https://prod.example.com#prod-prod"}
    # the conditional stays the final definition of MODE and is computed per step
    assert [name for name, _ in prod.late] == ["MODE"]
    sources = dict(prod.sources)
    assert sources["MODE"].endswith("at $.env.MODE")


def test_a_profile_static_value_replaces_a_conditional_one_in_its_place() -> None:
    workflow = wf(env=(("MODE", MODE), ("LABEL", EnvStatic(value="mode=${MODE}"))),
                  profiles=(Profile(name="p", values=(("MODE", EnvStatic(value="fixed")),)),))
    resolved = resolve_environment(workflow, environ={}, profile="p")
    assert dict(resolved.values) == {"MODE": "fixed", "LABEL": "mode=fixed"}
    assert resolved.late == ()
    assert late_entries(workflow, workflow.profiles[0]) == ()
