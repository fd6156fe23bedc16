"""The original tool's example workflows give the outcomes of the spec's compat table."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time

import pytest

from tests.e2e.conftest import COMPAT, Project, prodigy_argv

pytestmark = pytest.mark.e2e


def copy(project: Project, name: str) -> str:
    shutil.copy(COMPAT / name, project.root / name)
    return name


def test_every_example_loads_without_a_crash(project: Project) -> None:
    names = sorted(p.name for p in COMPAT.glob("*.yml"))
    assert len(names) == 9
    for name in names:
        out = project.run("validate", str(COMPAT / name))
        assert out.returncode in (0, 1), (name, out.stderr)
        assert "Traceback" not in out.stderr + out.stdout


def test_standard_workflow_runs_all_steps(project: Project) -> None:
    out = project.run("run", copy(project, "standard-workflow.yml"))
    assert out.returncode == 0, out.stderr
    assert "Executing step 7/7" in out.stdout
    assert "Workflow complete" in out.stdout


def test_resume_example_fails_at_step_3_then_force_resume_runs_3_to_5(project: Project) -> None:
    name = copy(project, "test-resume.yml")
    out = project.run("run", name)
    assert out.returncode == 1
    assert "Executing step 3/5" in out.stdout and "Executing step 4/5" not in out.stdout
    sid = project.sessions()[0]["id"]
    path = project.root / name
    path.write_text(path.read_text().replace("- shell: exit 1", "- shell: echo fixed"))
    refused = project.run("resume", sid)
    assert refused.returncode == 2 and "E5007" in refused.stderr
    out = project.run("resume", sid, "--force")
    assert out.returncode == 0, out.stderr
    assert "Executing step 1/5" not in out.stdout and "Executing step 2/5" not in out.stdout
    for i in (3, 4, 5):
        assert f"Executing step {i}/5" in out.stdout


def test_sensitive_masking_example_with_debug_output(project: Project) -> None:
    out = project.run("run", copy(project, "test-sensitive-masking.yml"), "-vv")
    assert out.returncode == 0, out.stderr
    text = out.stdout + out.stderr
    for name in ("PASSWORD", "API_KEY", "AUTH_TOKEN"):
        assert f"{name}=***REDACTED***" in text
    assert "USERNAME=john_doe" in text and "NORMAL_VAR=this_is_visible" in text
    for secret in ("super_secret_password", "sk_test_123456789", "ghp_abcdefghijklmnop"):
        assert secret not in text
        for path in project.storage_files():
            assert secret not in path.read_text(errors="replace")


def test_capture_conditional_flow_fails_at_step_8(project: Project) -> None:
    out = project.run("run", copy(project, "capture-conditional-flow.yml"))
    assert out.returncode == 1
    assert out.stderr.count("W1003") >= 3
    assert "Executing step 8/10" in out.stdout and "Executing step 9/10" not in out.stdout
    assert "Bad substitution" in out.stderr or "bad substitution" in out.stderr


def test_capture_json_processing_fails_at_step_5_with_e3006(project: Project) -> None:
    out = project.run("run", copy(project, "capture-json-processing.yml"))
    assert out.returncode == 1
    assert "Package: test v1.0.0" in out.stdout
    assert "Executing step 5/6" in out.stdout and "Executing step 6/6" not in out.stdout
    assert "E3006" in out.stderr


def test_mapreduce_examples_validate_and_run(project: Project) -> None:
    ok = project.run("validate", str(COMPAT / "capture-output-custom-vars.yml"))
    assert ok.returncode == 0
    bad = project.run("validate", str(COMPAT / "mapreduce-json-input.yml"))
    assert bad.returncode == 1 and "E1001" in bad.stderr and ":30:" in bad.stderr
    yaml_error = project.run("validate", str(COMPAT / "capture-parallel-analysis.yml"))
    assert yaml_error.returncode == 1 and "E1001" in yaml_error.stderr
    # command input: the found .rs paths are string items; awk's $1/$2 reach awk
    project.write("src/a.rs", "fn a() {}\nfn b() {}\n")
    project.write("src/b.rs", "fn c() {}\n")
    name = copy(project, "mapreduce-command-input.yml")
    subprocess.run(["git", "add", "-A"], cwd=project.root, check=True)
    subprocess.run(["git", "commit", "-qm", "rust files"], cwd=project.root, check=True)
    run = project.run("run", name, "-v", timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "Lines in ./src/a.rs: 2" in run.stdout and "Lines in ./src/b.rs: 1" in run.stdout
    assert "Analyzing ./src/a.rs" in run.stdout
    # the JSON input example runs once its line 30 is quoted
    text = (COMPAT / "mapreduce-json-input.yml").read_text()
    line = '    - shell: echo "Processing item ${item.id}: ${item.task} for ${item.file}"'
    assert line in text
    line48 = '  - shell: echo "Successful: ${map.successful}, Failed: ${map.failed}"'
    assert line48 in text  # the same problem again, in reduce
    text = text.replace(line, "    - shell: 'echo \"Processing item ${item.id}: ${item.task} "
                              "for ${item.file}\"'")
    text = text.replace(line48, "  - shell: 'echo \"Successful: ${map.successful}, Failed: "
                                "${map.failed}\"'")
    project.write("json-input.yml", text)
    run = project.run("run", "json-input.yml", "-v", timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "Processed 3 items" in run.stdout and "Successful: 3, Failed: 0" in run.stdout
    assert "Processing item 2: refactor for src/lib.rs" in run.stdout
    # custom variables: without an items.json the run fails with E6001 after setup (its
    # agents would run Claude, so the real CLI must be found first)
    from tests.fakeapi.cli import find_claude

    env = {**project.env, "PRODIGY_CLAUDE_PATH": find_claude()}
    run = project.run("run", copy(project, "capture-output-custom-vars.yml"), timeout=120,
                      env=env)
    assert run.returncode == 1 and "E6001" in run.stderr, run.stdout + run.stderr


def test_events_follow_prints_events_as_they_happen(project: Project) -> None:
    project.write("wf.yml", "- shell: 'echo a'\n- shell: 'touch go-on; sleep 1'\n")
    runner = project.popen("run", "wf.yml")
    runner.wait(timeout=30)
    sid = project.sessions()[0]["id"]
    follower = subprocess.Popen([*prodigy_argv(), "events", "follow", "--job-id", sid,
                                 "--json"], cwd=project.root, env=project.env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(1.5)
    follower.send_signal(signal.SIGINT)
    stdout, _ = follower.communicate(timeout=10)
    assert follower.returncode == 0
    types = [json.loads(line)["event"]["event_type"] for line in stdout.splitlines()]
    # the session worktree is created first; the merge decision is the last event
    assert types[:2] == ["worktree_created", "workflow_started"]
    assert "workflow_completed" in types and types[-1] == "merge_finished"
