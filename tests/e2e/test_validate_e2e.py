"""Completeness ``validate`` end to end (spec 12 §2): the installed ``prodigy`` in a real
git repository, validation commands and handlers as real shell scripts."""

from __future__ import annotations

import json

import pytest

from tests.e2e.conftest import Project

pytestmark = pytest.mark.e2e

CHECK = """#!/bin/sh
# 60% until the handler has run, then 100%
test "$PRODIGY_VALIDATION" = true || exit 9
if [ -f fixed ]; then pct=100; missing='[]'; else pct=60; missing='["retry", "docs"]'; fi
printf '{"completion_percentage": %s, "status": "incomplete", "missing": %s}' "$pct" "$missing" \\
  > .validation.json
"""


@pytest.fixture
def repo(project: Project) -> Project:
    project.write("check.sh", CHECK)
    project.commit("validation script")  # the steps run in a worktree made from HEAD
    return project


def test_on_incomplete_handler_completes_the_step(repo: Project) -> None:
    repo.write("wf.yml", "\n".join([
        "- shell: 'echo working'",
        "  validate:",
        "    shell: 'sh check.sh'",
        "    result_file: .validation.json",
        "    threshold: 90",
        "    on_incomplete:",
        "      shell: 'echo \"${validation.missing}\" > gaps.txt && touch fixed'",
        "      max_attempts: 3",
        "- shell: 'echo after ${validation.completion} ${validation.passed}'",
    ]) + "\n")
    out = repo.run("run", "wf.yml")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Validation incomplete: 60.0% complete (threshold: 90.0%)" in out.stdout
    assert "Validation attempt 1/3: 100.0% complete" in out.stdout
    assert "Validation passed: 100.0% complete (threshold: 90.0%)" in out.stdout
    assert (repo.worktree(out) / "gaps.txt").read_text() == "retry, docs\n"
    assert "after 100.0 true" in out.stdout


def test_threshold_passes(repo: Project) -> None:
    repo.write("wf.yml", "- shell: 'true'\n  validate: {shell: 'sh check.sh', "
                         "result_file: .validation.json, threshold: 50}\n")
    out = repo.run("run", "wf.yml")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Validation passed: 60.0% complete (threshold: 50.0%)" in out.stdout


def test_threshold_fails_with_e3010(repo: Project) -> None:
    repo.write("wf.yml", "- shell: 'true'\n  validate: {shell: 'sh check.sh', "
                         "result_file: .validation.json, threshold: 90}\n- shell: 'touch never'\n")
    out = repo.run("run", "wf.yml")
    assert out.returncode == 1
    assert "Validation incomplete: 60.0% complete (threshold: 90.0%)" in out.stdout
    assert "error[E3010]: Validation failed after 1 attempts. Completion: 60.0%" in out.stderr
    worktree = repo.worktree(out)
    assert (worktree / ".validation.json").is_file()  # the validation did run there
    assert not (worktree / "never").exists()


def test_handler_that_does_not_help_fails_after_max_attempts(repo: Project) -> None:
    repo.write("wf.yml", "\n".join([
        "- shell: 'true'",
        "  validate:",
        "    shell: 'sh check.sh'",
        "    result_file: .validation.json",
        "    on_incomplete: {shell: 'echo trying', max_attempts: 2}",
    ]) + "\n")
    out = repo.run("run", "wf.yml", "--json")
    assert out.returncode == 1
    assert "Validation attempt 2/2: 60.0% complete" in out.stderr
    assert "error[E3010]: Validation failed after 2 attempts. Completion: 60.0%" in out.stderr
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert summary["error_code"] == "E3010"


def test_fail_workflow_false_accepts_with_w3003(repo: Project) -> None:
    repo.write("wf.yml", "\n".join([
        "- shell: 'true'",
        "  validate:",
        "    shell: 'sh check.sh'",
        "    result_file: .validation.json",
        "    on_incomplete: {shell: 'true', max_attempts: 1, fail_workflow: false}",
        "- shell: 'echo passed=${validation.passed}'",
    ]) + "\n")
    out = repo.run("run", "wf.yml")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "warning[W3003]" in out.stderr
    assert "passed=false" in out.stdout


def test_non_json_output_is_complete_with_w3005(repo: Project) -> None:
    repo.write("wf.yml", "- shell: 'true'\n  validate: 'echo looks fine'\n")
    out = repo.run("run", "wf.yml")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "warning[W3005]: validation output is not JSON; treating as complete" in out.stderr
    assert "Validation passed: 100.0% complete (threshold: 100.0%)" in out.stdout


def test_dry_run_plans_but_does_not_validate(repo: Project) -> None:
    repo.write("wf.yml", "- shell: 'true'\n  validate: {shell: 'sh check.sh', "
                         "result_file: .validation.json, threshold: 90}\n")
    out = repo.run("run", "wf.yml", "--dry-run")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "validate: shell: sh check.sh (threshold 90.0%, result_file .validation.json" \
        in out.stdout
    assert not (repo.root / ".validation.json").exists()
    assert not repo.worktrees_dir.exists()  # nothing ran in a session worktree either
