"""Layer 1: the completeness ``validate`` in the step machine (spec 12 §2).

Each case runs one workflow through ``run_machine`` with hand-fed events (``Driver``):
validation commands are shell steps answered from a script, a ``result_file`` is
answered from a table of file contents.  The assertions are on the commands run in
order, what was printed, the error code and the ``validation.*`` variables.
"""

from __future__ import annotations

import json
from typing import Any

import attrs
import pytest

from prodigy_core import run_machine
from prodigy_core.effects import DescribeStep, LogEvent, ReadFile, RunCommand
from prodigy_core.events import CommandFinished
from prodigy_core.model import OnFailure, OnIncomplete, Step, ValidateSpec, Workflow
from prodigy_core.parse.step_parts import freeze
from prodigy_core.support import runtime_gaps, uses_claude
from prodigy_core.validation_result import judge, schema_problem
from tests.core._machine_driver import Driver, R, make_ctx, shell


def wf(*steps: Step) -> Workflow:
    return Workflow(name="t", steps=steps)


def drive(*steps: Step, **ctx: Any) -> Driver:
    return Driver(run_machine.start(wf(*steps), make_ctx(**ctx)))


def result(pct: float | None = None, **more: Any) -> R:
    doc: dict[str, Any] = dict(more)
    if pct is not None:
        doc["completion_percentage"] = pct
    return R(stdout=json.dumps(doc) + "\n")


def validate(*commands: str, **options: Any) -> ValidateSpec:
    return ValidateSpec(commands=tuple(shell(c) for c in commands), **options)


def incomplete(*commands: str, **options: Any) -> OnIncomplete:
    return OnIncomplete(commands=tuple(shell(c) for c in commands), **options)


SCHEMA = freeze({"type": "object", "required": ["completion_percentage"],
                 "properties": {"completion_percentage": {"type": "number"},
                                "status": {"enum": ["complete", "incomplete"]},
                                "missing": {"type": "array", "items": {"type": "string"}}}})


@attrs.frozen(kw_only=True)
class Case:
    id: str
    step: Step
    script: dict[str, Any] = attrs.field(factory=dict)
    files: dict[str, list[str | None]] = attrs.field(factory=dict)
    exit_code: int = 0
    commands: tuple[str, ...] | None = None
    printed: tuple[str, ...] = ()
    not_printed: tuple[str, ...] = ()
    error_code: str | None = None
    vars: tuple[tuple[str, Any], ...] = ()
    status: str = "succeeded"


CASES = [
    Case(id="passes the threshold",
         step=shell("work", validate=validate("check", threshold=90)),
         script={"check": result(95, status="incomplete", implemented=["a"], missing=["b"])},
         commands=("work", "check"),
         printed=("Validation passed: 95.0% complete (threshold: 90.0%)",),
         vars=(("validation.completion", 95.0), ("validation.completion_percentage", 95.0),
               ("validation.status", "incomplete"), ("validation.passed", True),
               ("validation.implemented", ["a"]), ("validation.missing", ["b"]),
               ("validation.missing_count", 1), ("validation.attempt", 1))),
    Case(id="incomplete without on_incomplete fails with E3010",
         step=shell("work", validate=validate("check", threshold=90)),
         script={"check": result(60)}, exit_code=1, error_code="E3010", status="failed",
         commands=("work", "check"),
         printed=("Validation incomplete: 60.0% complete (threshold: 90.0%)",
                  "error[E3010]: Validation failed after 1 attempts. Completion: 60.0%"),
         vars=(("validation.passed", False), ("validation.status", "incomplete"))),
    Case(id="default threshold is 100",
         step=shell("work", validate=validate("check")),
         script={"check": result(99.5)}, exit_code=1, error_code="E3010", status="failed",
         printed=("Validation incomplete: 99.5% complete (threshold: 100.0%)",)),
    Case(id="on_incomplete fixes it on the second attempt",
         step=shell("work", validate=validate(
             "check", threshold=90,
             on_incomplete=incomplete("fix ${validation.missing} ${validation.gaps}",
                                      max_attempts=3))),
         script={"check": [result(60, missing=["x", "y"], gaps={"x": {"severity": "high"}}),
                           result(80), result(100)]},
         commands=("work", "check", "fix 'x, y' '{\"x\":{\"severity\":\"high\"}}'", "check",
                   "fix  '{}'", "check"),
         printed=("Validation incomplete: 60.0% complete (threshold: 90.0%)",
                  "Validation attempt 1/3: 80.0% complete",
                  "Validation attempt 2/3: 100.0% complete",
                  "Validation passed: 100.0% complete (threshold: 90.0%)"),
         vars=(("validation.attempt", 3), ("validation.passed", True),
               ("validation.status", "complete"))),
    Case(id="on_incomplete exhausted fails with E3010",
         step=shell("work", validate=validate("check", threshold=90,
                                              on_incomplete=incomplete("fix"))),
         script={"check": [result(40), result(50), result(70)]},
         exit_code=1, error_code="E3010", status="failed",
         commands=("work", "check", "fix", "check", "fix", "check"),
         printed=("Validation attempt 2/2: 70.0% complete",
                  "error[E3010]: Validation failed after 2 attempts. Completion: 70.0%")),
    Case(id="on_incomplete fail_workflow false accepts with W3003",
         step=shell("work", validate=validate(
             "check", on_incomplete=incomplete("fix", max_attempts=1, fail_workflow=False))),
         script={"check": result(30)},
         commands=("work", "check", "fix", "check"),
         printed=("warning[W3003]: Validation failed after 1 attempts. Completion: 30.0%",),
         vars=(("validation.passed", False),)),
    Case(id="ignore_validation_failure accepts with W3003",
         step=shell("work", ignore_validation_failure=True, validate=validate("check")),
         script={"check": result(10)}, commands=("work", "check"),
         printed=("warning[W3003]",), vars=(("validation.passed", False),)),
    Case(id="a failing handler ends the loop",
         step=shell("work", validate=validate("check", on_incomplete=incomplete(
             "fix", "never", max_attempts=5))),
         script={"check": result(10), "fix": R(exit_code=2)},
         exit_code=1, error_code="E3010", status="failed",
         commands=("work", "check", "fix"),
         printed=("on_incomplete handler of 'shell: work' failed",
                  "Validation failed after 1 attempts")),
    Case(id="non-JSON output is complete with W3005",
         step=shell("work", validate=validate("check", threshold=90)),
         script={"check": R(stdout="all good\n")},
         printed=("warning[W3005]: validation output is not JSON; treating as complete",
                  "Validation passed: 100.0% complete (threshold: 90.0%)"),
         vars=(("validation.completion", 100.0), ("validation.status", "complete"))),
    Case(id="a JSON array is not a result object",
         step=shell("work", validate=validate("check")), script={"check": R(stdout="[1]")},
         printed=("warning[W3005]",)),
    Case(id="status complete without a percentage is 100",
         step=shell("work", validate=validate("check")),
         script={"check": result(None, status="complete")},
         vars=(("validation.completion", 100.0),)),
    Case(id="status failed never passes",
         step=shell("work", validate=validate("check", threshold=0)),
         script={"check": result(100, status="failed")}, exit_code=1, error_code="E3010",
         status="failed"),
    Case(id="a failing validation command gives failed with completion 0",
         step=shell("work", validate=validate("check1", "check2", threshold=0)),
         script={"check1": R(stdout="{}"), "check2": R(exit_code=3, stderr="boom\nmore\n")},
         exit_code=1, error_code="E3010", status="failed", commands=("work", "check1", "check2"),
         printed=("Validation step 2 failed: boom\nmore",
                  "Validation failed after 1 attempts. Completion: 0.0%"),
         vars=(("validation.status", "failed"), ("validation.completion", 0.0))),
    Case(id="several commands: the last one's output is the result",
         step=shell("work", validate=validate("prepare", "report", threshold=50)),
         script={"prepare": R(stdout="not json"), "report": result(75)},
         commands=("work", "prepare", "report"), not_printed=("W3005",),
         vars=(("validation.completion", 75.0),)),
    Case(id="result_file is read after the commands",
         step=shell("work", validate=validate("check", result_file=".v-${ARG}.json",
                                              threshold=90)),
         script={"check": R(stdout="ignored")}, files={".v-x.json": [json.dumps(
             {"completion_percentage": 91, "status": "incomplete"})]},
         printed=("Validation passed: 91.0% complete (threshold: 90.0%)",)),
    Case(id="a missing result_file fails the validation",
         step=shell("work", validate=validate("check", result_file="r.json")),
         exit_code=1, error_code="E3010", status="failed",
         printed=("validation result file: no such file",),
         vars=(("validation.status", "failed"),)),
    Case(id="expected_schema mismatch counts as failed",
         step=shell("work", validate=validate("check", threshold=0, expected_schema=SCHEMA)),
         script={"check": result(100, missing=["a", 2])}, exit_code=1, error_code="E3010",
         status="failed",
         printed=("validation result does not match expected_schema: $.missing[1] should be "
                  "string",)),
    Case(id="expected_schema satisfied",
         step=shell("work", validate=validate("check", expected_schema=SCHEMA)),
         script={"check": result(100, status="complete", missing=[])}),
    Case(id="skip_validation skips it",
         step=shell("work", skip_validation=True, validate=validate("check")),
         commands=("work",)),
    Case(id="a failed step is not validated",
         step=shell("work", validate=validate("check")), script={"work": R(exit_code=1)},
         exit_code=1, error_code="E3001", status="failed", commands=("work",)),
    Case(id="validated after a fix-loop re-run",
         step=shell("work", validate=validate("check"),
                    on_failure=OnFailure(commands=(shell("repair"),), max_attempts=2)),
         script={"work": [R(exit_code=1), R()], "check": result(100)},
         commands=("work", "repair", "work", "check"), status="recovered"),
    Case(id="validation runs before on_success",
         step=shell("work", validate=validate("check"), on_success=shell("after")),
         script={"check": result(100)}, commands=("work", "check", "after")),
    Case(id="an incomplete validation skips on_success and on_failure",
         step=shell("work", validate=validate("check"), on_success=shell("after"),
                    on_failure=OnFailure(commands=(shell("repair"),))),
         script={"check": result(1)}, exit_code=1, error_code="E3010", status="failed",
         commands=("work", "check")),
    Case(id="allow_failure turns E3010 into an allowed failure",
         step=shell("work", allow_failure=True, validate=validate("check")),
         script={"check": result(1)}, status="failed_allowed", commands=("work", "check")),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_validate_table(case: Case) -> None:
    d = drive(case.step, args=("x",))
    finish = d.run(case.script, files=case.files)
    assert finish.exit_code == case.exit_code, d.printed
    if case.commands is not None:
        assert tuple(d.commands) == case.commands
    for text in case.printed:
        assert text in d.printed, d.printed
    for text in case.not_printed:
        assert text not in d.printed
    if case.error_code is not None:
        assert finish.outcome["error_code"] == case.error_code  # type: ignore[index]
    for name, value in case.vars:
        assert d.vars[name] == value, name
    assert d.statuses == [case.status]


def test_validation_commands_run_in_the_steps_directory_and_environment() -> None:
    step = shell("work", working_dir="sub", env=(("MODE", "${ARG}"),),
                 validate=validate("check", timeout=7.0))
    d = drive(step, args=("x",))
    d.run({"check": result(100)})
    work, check = d.of(RunCommand)
    assert check.cwd == work.cwd == "/repo/sub"
    env = dict(check.env)
    assert env["PRODIGY_VALIDATION"] == "true" and env["MODE"] == "x"
    assert "PRODIGY_VALIDATION" not in dict(work.env)
    assert check.timeout == 7.0
    assert check.step_path == "steps[0].validate.commands[0]"


def test_result_file_is_read_in_the_working_directory() -> None:
    d = drive(shell("work", working_dir="sub", validate=validate("check", result_file="r.json")))
    d.finish_command()
    d.finish_command()
    read = d.pending(ReadFile)
    assert (read.cwd, read.path) == ("/repo/sub", "r.json")
    d.file_read('{"completion_percentage": 100}')
    assert d.finish.exit_code == 0


def test_on_incomplete_logs_handler_started() -> None:
    d = drive(shell("work", validate=validate("check", on_incomplete=incomplete("fix"))))
    d.run({"check": [result(0), result(100)]})
    started = [e.as_dict() for e in d.of(LogEvent) if e.event_type == "handler_started"]
    assert [(e["handler"], e["step_path"]) for e in started] == [("on_incomplete", "steps[0]")]
    paths = [e.as_dict()["step_path"] for e in d.of(LogEvent) if e.event_type == "step_started"]
    assert "steps[0].validate.on_incomplete.commands[0]" in paths


def test_dry_run_does_not_validate_but_plans_it() -> None:
    d = Driver(run_machine.start(wf(shell("work", validate=validate(
        "check", threshold=80, on_incomplete=incomplete("fix")))), make_ctx(dry_run=True)))
    command = d.pending(RunCommand)
    d.send(CommandFinished(command_id=command.command_id, exit_code=0, planned=True))
    assert d.finish.exit_code == 0
    assert d.commands == ["work"]
    (describe,) = d.of(DescribeStep)
    plan = describe.info["validate"]
    assert plan["commands"] == ["shell: check"] and plan["threshold"] == 80
    assert plan["on_incomplete"]["max_attempts"] == 2


def test_claude_validation_commands_can_run() -> None:
    spec = ValidateSpec(commands=(Step(kind="claude", command="/check", source="$[0].validate"),))
    workflow = wf(shell("work", validate=spec, source="$[0]"))
    assert not runtime_gaps(workflow)
    assert uses_claude(workflow)


@pytest.mark.parametrize(("text", "threshold", "completion", "status", "passed"), [
    ('{"completion_percentage": 90}', 90, 90.0, "incomplete", True),
    ('{"completion_percentage": 100}', 100, 100.0, "complete", True),
    ('{"status": "incomplete"}', 0, 0.0, "incomplete", True),
    ('{"status": "skipped", "completion_percentage": 50}', 40, 50.0, "skipped", True),
    ('{"completion_percentage": "80"}', 50, 0.0, "incomplete", False),
    ("", 100, 100.0, "complete", True),
])
def test_judge(text: str, threshold: float, completion: float, status: str,
               passed: bool) -> None:
    verdict = judge(text, threshold=threshold)
    assert (verdict.completion, verdict.status, verdict.passed) == (completion, status, passed)


@pytest.mark.parametrize(("value", "schema", "problem"), [
    ({"a": 1}, {"type": "object"}, None),
    ([1], {"type": "object"}, "$ should be object"),
    ({"a": 1}, {"required": ["b"]}, "$ is missing required property 'b'"),
    ({"a": "x"}, {"properties": {"a": {"type": ["number", "null"]}}},
     "$.a should be number or null"),
    ({"a": 2}, {"properties": {"a": {"type": "integer"}}}, None),
    ({"a": True}, {"properties": {"a": {"type": "number"}}}, "$.a should be number"),
    ({"s": "done"}, {"properties": {"s": {"enum": ["complete", "incomplete"]}}},
     "$.s is not one of the allowed values"),
    ({"g": {"k": 1}}, {"properties": {"g": {"enum": [{"k": 1}]}}}, None),
    ({"l": [{"d": 1}, {}]}, {"properties": {"l": {"items": {"required": ["d"]}}}},
     "$.l[1] is missing required property 'd'"),
])
def test_schema_subset(value: Any, schema: dict[str, Any], problem: str | None) -> None:
    assert schema_problem(value, freeze(schema), "$") == problem
