"""`prodigy run` / `resume` end to end: real processes, real files, real signals.

Every run works in its own session worktree (spec 06 §3), so the files the steps write are
looked for there; a failed or interrupted run keeps its worktree and `resume` continues in
it (spec 06 §8.1).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import Project

pytestmark = pytest.mark.e2e


def wait_for(path: Path, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise AssertionError(f"{path} did not appear")
        time.sleep(0.05)


def wait_in_worktree(project: Project, name: str, timeout: float = 20.0) -> Path:
    """Wait until a step created `name` in a session worktree; return that worktree."""
    deadline = time.monotonic() + timeout
    while not (found := sorted(project.worktrees_dir.glob(f"*/{name}"))):
        if time.monotonic() > deadline:
            raise AssertionError(f"{name} did not appear in {project.worktrees_dir}")
        time.sleep(0.05)
    return found[0].parent


def kill_group_of(pid_file: Path) -> None:
    """SIGKILL the process group of the step whose shell wrote its pid to `pid_file`."""
    with contextlib.suppress(ProcessLookupError):
        group = os.getpgid(int(pid_file.read_text()))
        assert group != os.getpgrp()
        os.killpg(group, signal.SIGKILL)


def events_of(project: Project, session_id: str) -> list[dict]:
    out = project.run("events", "ls", "--job-id", session_id, "--json", "--limit", "0")
    assert out.returncode == 0, out.stderr
    return [json.loads(line) for line in out.stdout.splitlines() if line.strip()]


def only_session(project: Project) -> dict:
    sessions = project.sessions()
    assert len(sessions) == 1, sessions
    return sessions[0]


def test_successful_run_records_session_checkpoint_and_events(project: Project) -> None:
    project.write("wf.yml", "steps:\n  - shell: 'echo one'\n  - shell: 'echo two'\n"
                            "  - shell: 'echo three'\n")
    out = project.run("run", "wf.yml")
    assert out.returncode == 0, out.stderr
    assert "Starting session: workflow-" in out.stdout
    assert "Executing step 2/3: shell: echo two" in out.stdout
    assert "Workflow completed successfully" in out.stdout
    session = only_session(project)
    assert session["status"] == "Completed"
    sid = session["id"]
    worktree = project.worktree(out)
    assert session["worktree"]["path"] == str(worktree)
    assert session["worktree"]["branch"] == f"prodigy-{sid}"
    # the steps committed nothing: no merge, and the worktree is gone (spec 06 §7.3)
    assert f"No new commits in worktree '{sid}', skipping merge" in out.stdout
    assert session["merge"] == {"target": project.branch(), "merged": False,
                                "reason": "no_commits"}
    assert not worktree.exists()
    assert project.git("branch", "--list", f"prodigy-{sid}") == ""
    cp = json.loads(project.run("checkpoints", "show", sid, "--json").stdout)
    assert [s["status"] for s in cp["completed_steps"]] == ["succeeded"] * 3
    assert cp["completed_steps"][1]["output"] == "two\n"
    events = events_of(project, sid)
    seqs = [e["seq"] for e in events]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    types = [e["event"]["event_type"] for e in events]
    assert types[:2] == ["worktree_created", "workflow_started"]
    assert types[types.index("workflow_completed"):] == [
        "workflow_completed", "worktree_cleaned", "merge_finished"]
    assert types.count("step_started") == 3 and types.count("step_completed") == 3
    assert events[-2]["event"]["worktree_name"] == sid
    merge = events[-1]["event"]
    assert (merge["merged"], merge["reason"]) == (False, "no_commits")


def test_failed_step_then_resume_runs_only_unfinished_steps(project: Project) -> None:
    project.write("wf.yml", "\n".join([
        "- shell: 'echo s1 >> log.txt'",
        "- shell: 'echo s2 >> log.txt'",
        "- shell: 'echo s3 >> log.txt; test -f fixed'",
        "- shell: 'echo s4 >> log.txt'",
        "- shell: 'echo s5 >> log.txt'",
    ]) + "\n")
    out = project.run("run", "wf.yml")
    assert out.returncode == 1
    assert "failed with exit code 1" in out.stderr
    sid = only_session(project)["id"]
    assert f"Resume with: prodigy resume {sid}" in out.stderr
    worktree = project.worktree(out)
    assert project.session_worktree(sid) == worktree
    (worktree / "fixed").touch()
    out = project.run("resume", sid, "-y")
    assert out.returncode == 0, out.stdout + out.stderr
    assert (worktree / "log.txt").read_text().split() == ["s1", "s2", "s3", "s3", "s4", "s5"]
    assert "warning[W4004]" in out.stderr  # log.txt is not committed, so it is not merged
    assert not (project.root / "log.txt").exists()
    again = project.run("resume", sid)
    assert again.returncode == 2
    assert "E5006" in again.stderr


def test_kill_9_in_the_middle_of_a_step_then_resume(project: Project) -> None:
    project.write("wf.yml", "\n".join([
        "- shell: 'echo s1 >> log.txt'",
        "- shell: 'echo s2 >> log.txt; [ -f resumed ] || "
        "{ echo $$$$ > pid.tmp && mv pid.tmp started; sleep 60; }'",  # $$$$: the shell's $$
        "- shell: 'echo s3 >> log.txt'",
    ]) + "\n")
    proc = project.popen("run", "wf.yml")
    try:
        worktree = wait_in_worktree(project, "started")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    # the orphaned `sleep 60` keeps running in its own process group: stop that group
    kill_group_of(worktree / "started")
    session = only_session(project)
    assert session["status"] == "Running"
    assert project.session_worktree(session["id"]) == worktree
    (worktree / "resumed").touch()
    out = project.run("resume", session["id"])
    assert out.returncode == 0, out.stdout + out.stderr
    assert "W5002" in out.stderr  # the dead process's lock was stale and was taken over
    assert (worktree / "log.txt").read_text().split() == ["s1", "s2", "s2", "s3"]


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_stops_the_step_saves_and_resume_continues(
    project: Project, sig: signal.Signals, code: int
) -> None:
    project.write("wf.yml", "\n".join([
        "- shell: 'echo s1 >> log.txt'",
        "- shell: 'echo s2 >> log.txt; [ -f resumed ] || { touch started; sleep 30; touch late; }'",
        "- shell: 'echo s3 >> log.txt'",
        "- shell: 'echo s4 >> log.txt'",
    ]) + "\n")
    proc = project.popen("run", "wf.yml")
    worktree = wait_in_worktree(project, "started")
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=20)
    assert proc.returncode == code, stdout + stderr
    session = only_session(project)
    assert "Session interrupted. Resume with: prodigy resume " + session["id"] in stderr
    assert session["status"] == "Paused"
    cp = json.loads(project.run("checkpoints", "show", session["id"], "--json").stdout)
    assert cp["execution_state"]["status"] == "Interrupted"
    assert cp["execution_state"]["current_step_index"] == 1
    assert project.session_worktree(session["id"]) == worktree  # kept for the resume
    time.sleep(0.5)
    assert not (worktree / "late").exists()  # the whole process group was stopped
    (worktree / "resumed").touch()
    out = project.run("resume", session["id"])
    assert out.returncode == 0, out.stderr
    assert (worktree / "log.txt").read_text().split() == ["s1", "s2", "s2", "s3", "s4"]


def test_dry_run_has_no_side_effects_and_prints_the_plan(project: Project) -> None:
    project.write("wf.yml", "env:\n  NAME: world\n  DYN:\n    command: 'touch dyn-ran; echo d'\n"
                            "steps:\n"
                            "  - shell: 'touch marker && echo hi ${NAME}'\n"
                            "    capture: out\n"
                            "  - shell: 'echo ${out}'\n")
    out = project.run("run", "wf.yml", "--dry-run")
    assert out.returncode == 0, out.stderr
    assert "touch marker && echo hi world" in out.stdout
    assert "echo ${out}" in out.stdout  # only known at run time: stays a placeholder
    assert not (project.root / "marker").exists()
    assert not (project.root / "dyn-ran").exists()  # dynamic env commands do not run
    assert not project.home.exists()
    js = project.run("run", "wf.yml", "--dry-run", "--json")
    plan = json.loads(js.stdout)
    assert [s["command"] for s in plan["steps"]] == ["touch marker && echo hi world",
                                                    "echo ${out}"]
    assert not project.home.exists()


def test_timeout_kills_the_whole_process_group(project: Project) -> None:
    project.write("wf.yml", "- shell: \"sh -c 'sleep 3; touch late' & sleep 30\"\n"
                            "  timeout: 1\n")
    started = time.monotonic()
    out = project.run("run", "wf.yml")
    assert out.returncode == 1
    assert "Command timed out after 1 seconds" in out.stderr
    assert time.monotonic() - started < 20
    worktree = project.worktree(out)
    assert worktree.is_dir()
    time.sleep(3.5)
    assert not (worktree / "late").exists()


def test_secrets_never_reach_output_or_storage(project: Project) -> None:
    secret = "abcd1234efgh"
    project.write("wf.yml", "secrets:\n  TOKEN: MY_TOKEN\nsteps:\n"
                            "  - shell: 'echo token=$TOKEN; echo again ${TOKEN}'\n"
                            "    capture: seen\n")
    env = dict(project.env, MY_TOKEN=secret)
    out = project.run("run", "wf.yml", "-v", env=env)
    assert out.returncode == 0, out.stderr
    assert secret not in out.stdout + out.stderr
    assert "***REDACTED***" in out.stdout
    files = project.storage_files()
    assert files
    for path in files:
        assert secret not in path.read_text(errors="replace"), path
    missing = project.run("run", "wf.yml")
    assert missing.returncode == 2
    assert "E2003" in missing.stderr and "MY_TOKEN" in missing.stderr


def test_input_mode_runs_the_steps_once_per_input(project: Project) -> None:
    project.write("specs/1-a.md", "a\n")
    project.write("specs/2-b.md", "b\n")
    project.write("wf.yml", "- shell: 'echo ${ARG}:${FILE:-none}:${INDEX}/${TOTAL} >> log.txt'\n")
    project.commit("specs")
    out = project.run("run", "wf.yml", "--args", "x", "--map", "specs/*.md")
    assert out.returncode == 0, out.stderr
    assert (project.worktree(out) / "log.txt").read_text().split() == [
        "x:none:1/3", "1:1-a.md:2/3", "2:2-b.md:3/3"]
    nothing = project.run("run", "wf.yml", "--map", "nope/*.md")
    assert nothing.returncode == 2 and "E8002" in nothing.stderr


def test_iterations_stop_when_nothing_was_committed(project: Project) -> None:
    project.write("wf.yml", "- shell: 'echo ${ITERATION} >> iterations.txt'\n")
    out = project.run("run", "wf.yml", "-n", "3")
    assert out.returncode == 0, out.stderr
    assert "Stopping: No changes were made" in out.stdout
    assert (project.worktree(out) / "iterations.txt").read_text().split() == ["1"]
    project.write("commit.yml", "- shell: 'echo ${ITERATION} >> it.txt && git add it.txt && "
                                "git commit -qm it'\n")
    out = project.run("run", "commit.yml", "-n", "3", "-y")
    assert out.returncode == 0, out.stderr
    assert "Stopping: No changes were made" not in out.stdout
    # the three iterations' commits came back with the merge into the checkout
    assert (project.root / "it.txt").read_text().split() == ["1", "2", "3"]
    # (--topo-order: commits made within the same second as "init" tie by date otherwise)
    assert project.git("log", "--topo-order", "--no-merges", "--format=%s").split() == [
        "it", "it", "it", "init"]


def test_json_summary_is_the_only_stdout(project: Project) -> None:
    project.write("wf.yml", "- shell: 'echo hi'\n")
    out = project.run("run", "wf.yml", "--json", "-y")
    assert out.returncode == 0
    summary = json.loads(out.stdout)
    assert summary["status"] == "completed"
    assert summary["steps"] == {"total": 1, "succeeded": 1, "failed": 0, "skipped": 0}


def test_concurrent_resume_is_refused_with_the_lock_holder(project: Project) -> None:
    project.write("wf.yml", "- shell: 'test -f go'\n"
                            "- shell: 'touch started; sleep 5'\n")
    ran = project.run("run", "wf.yml")
    assert ran.returncode == 1
    sid = only_session(project)["id"]
    worktree = project.worktree(ran)
    (worktree / "go").touch()
    first = project.popen("resume", sid)
    try:
        wait_for(worktree / "started")
        second = project.run("resume", sid)
        assert second.returncode == 1, second.stderr
        assert f"Resume already in progress for job {sid}" in second.stderr
        assert f"PID {first.pid}" in second.stderr
    finally:
        first.communicate(timeout=30)
    assert first.returncode == 0


def test_a_second_sigint_skips_the_grace_period(project: Project) -> None:
    project.write("wf.yml", "- shell: 'trap \"\" TERM; touch started; sleep 30'\n")
    proc = project.popen("run", "wf.yml")
    wait_in_worktree(project, "started")
    proc.send_signal(signal.SIGINT)
    time.sleep(0.5)
    sent = time.monotonic()
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=20)
    assert proc.returncode == 130, stderr
    assert "Stopping now (second interrupt)" in stderr
    assert time.monotonic() - sent < 3.0  # not the 5 s grace period
