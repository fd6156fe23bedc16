"""``goal_seek``, ``prodigy goal-seek`` and ``foreach`` end to end (spec 12 §4), with real
git repositories, real subprocesses and a real kill -9 in the middle of a ``foreach``."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import time
from pathlib import Path
from typing import Any

from tests.e2e.conftest import Project
from tests.fakeapi.cli import claude_env, find_claude


def session_id(text: str) -> str:
    found = re.search(r"Starting session: (\S+)", text)
    assert found, text
    return found.group(1)


def test_goal_seek_achieves_then_later_steps_see_the_verdict(project: Project) -> None:
    project.write("wf.yml", """\
name: goal
steps:
  - goal_seek:
      goal: "two lines"
      shell: "echo x >> n && git add n && git commit -qm n"
      validate: "echo score: $(( $(wc -l < n) * 40 ))"
      threshold: 80
      max_attempts: 5
  - shell: "echo ${goal_seek.status}/${goal_seek.attempts}/${goal_seek.score} > verdict"
  - shell: "git add verdict && git commit -qm verdict"
""")
    project.commit()
    out = project.run("run", "wf.yml", "-y")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Attempt 1/5: score 40% (threshold 80%)" in out.stdout
    assert "Goal 'two lines' achieved in 2 attempts (80%)" in out.stdout
    assert (project.root / "verdict").read_text() == "achieved/2/80\n"
    assert (project.root / "n").read_text() == "x\nx\n"


def test_goal_not_reached_is_allowed_unless_fail_on_incomplete(project: Project) -> None:
    body = """\
name: stuck
steps:
  - goal_seek:
      goal: "stuck"
      shell: "echo $PRODIGY_VALIDATION_SCORE >> seen"
      validate: "echo score: 50"
      threshold: 80
      max_attempts: 5{extra}
  - shell: "cp seen after && git add after && git commit -qm after"
"""
    project.write("wf.yml", body.format(extra=""))
    project.write("strict.yml", body.format(extra="\n      fail_on_incomplete: true"))
    project.commit()
    out = project.run("run", "wf.yml", "-y")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "converged after 3 attempts, best 50%" in out.stderr
    assert (project.root / "after").read_text() == "\n50\n50\n"  # attempt 1 has no score yet
    strict = project.run("run", "strict.yml", "-y")
    assert strict.returncode == 1
    assert "E3012" in strict.stderr or "E3012" in strict.stdout


def test_goal_seek_command_exit_codes(project: Project) -> None:
    ok = project.run("goal-seek", "two commits", "-c",
                     "echo x >> g && git add g && git commit -qm g", "--validate",
                     'echo "score: $(( $(wc -l < g) * 50 ))"', "-t", "100", "-m", "4", "-y")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "Attempt 2/4: score 100% (threshold 100%)" in ok.stdout
    assert (project.root / "g").read_text() == "x\nx\n"  # merged back
    never = project.run("goal-seek", "never", "-c", "true", "--validate", "echo 10%", "-m",
                        "2", "-y")
    assert never.returncode == 1
    assert "Goal not achieved (max_attempts)" in never.stdout
    summary = project.run("goal-seek", "never", "-c", "true", "--validate", "echo 10%", "-m",
                          "1", "-y", "--json")
    assert summary.returncode == 1
    doc = json.loads(summary.stdout)
    assert (doc["status"], doc["exit_code"], doc["goal"]["status"]) == \
        ("completed_with_failures", 1, "max_attempts")
    late = project.run("goal-seek", "x", "-c", "true", "--validate", "true", "--timeout", "abc")
    assert late.returncode == 2 and "--timeout 'abc' is not a duration" in late.stderr
    bad = project.run("goal-seek", "x", "-c", "true", "--validate", "true", "-t", "120")
    assert bad.returncode == 2 and "--threshold must be between 0 and 100" in bad.stderr


def test_foreach_sequential_failure_and_continue_on_error(project: Project) -> None:
    project.write("wf.yml", """\
name: each
steps:
  - foreach:
      foreach: ["a", "b", "c"]
      do:
        - shell: "echo ${index}:${item}/${total} >> log"
  - foreach:
      foreach: "printf '1\\\\n2\\\\n3\\\\n4\\\\n'"
      continue_on_error: true
      do:
        - shell: "test ${item} != 2 && echo ${item} >> kept"
  - shell: "echo failed=${foreach.failed} >> log && git add log kept && git commit -qm done"
  - foreach:
      foreach: [1, 2, 3, 4]
      do:
        - shell: "echo ${item} >> stopped && test ${item} != 2"
""")
    project.commit()
    out = project.run("run", "wf.yml", "-y")
    assert out.returncode == 1, out.stdout + out.stderr
    assert "foreach: 1 of 4 items failed; first failure: item 2/4" in out.stderr
    wt = project.session_worktree(session_id(out.stdout))  # a failed run keeps it
    assert (wt / "log").read_text() == "0:a/3\n1:b/3\n2:c/3\nfailed=1\n"
    assert (wt / "kept").read_text() == "1\n3\n4\n"
    assert (wt / "stopped").read_text() == "1\n2\n"  # items 3 and 4 never started


def test_parallel_foreach_runs_at_most_n_items_at_once(project: Project,
                                                      tmp_path: Path) -> None:
    probe = tmp_path / "running"
    probe.mkdir()
    project.write("wf.yml", f"""\
name: parallel
steps:
  - foreach:
      foreach: ["a", "b", "c", "d"]
      parallel: 2
      do:
        - shell: "touch {probe}/${{item}}; ls {probe} | wc -l >> {tmp_path}/counts; sleep 1; rm {probe}/${{item}}"
""")
    project.commit()
    out = project.run("run", "wf.yml", "-y")
    assert out.returncode == 0, out.stdout + out.stderr
    counts = [int(x) for x in (tmp_path / "counts").read_text().split()]
    assert len(counts) == 4
    assert max(counts) == 2  # two items overlapped, never three
    assert "Foreach completed: 4 total, 4 successful, 0 failed" in out.stdout


def test_kill_9_in_foreach_then_resume_runs_only_unfinished_items(
        project: Project, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    reached = tmp_path / "reached"
    project.write("wf.yml", f"""\
name: interrupted
steps:
  - foreach:
      foreach: [1, 2, 3, 4, 5]
      do:
        - shell: "echo ${{item}} >> {tmp_path}/ran"
        - shell: "if [ ${{item}} = 3 ] && [ ! -e {gate} ]; then echo $$$$ > {tmp_path}/pid; touch {reached}; sleep 30; fi"
""")
    project.commit()
    proc = project.popen("run", "wf.yml", "-y")
    deadline = time.monotonic() + 30
    while not reached.exists():
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    out, _ = proc.communicate(timeout=30)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(os.getpgid(int((tmp_path / "pid").read_text())), signal.SIGKILL)
    sid = session_id(out)
    gate.touch()
    resumed = project.run("resume", sid, "-y", "--force")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "2 finished before the resume" in resumed.stdout
    # items 1 and 2 ran once; item 3 was interrupted and ran again from its first step
    assert (tmp_path / "ran").read_text().split() == ["1", "2", "3", "3", "4", "5"]
    assert "Foreach completed: 5 total, 5 successful, 0 failed" in resumed.stdout


def test_goal_seek_with_real_claude_against_the_fake_api(
        project: Project, fake_anthropic: Any, tmp_path: Path) -> None:
    env = claude_env(project.env, fake_anthropic.url, home=tmp_path / "claude-home")
    env["PRODIGY_CLAUDE_PATH"] = find_claude()
    project.write("wf.yml", """\
name: claude-goal
steps:
  - goal_seek:
      goal: "two commits by Claude"
      claude: "FAKE: bash echo x >> n && git add n && git commit -qm attempt-${goal_seek.attempt}"
      validate: "echo score: $(( $(wc -l < n) * 50 ))"
      threshold: 100
      max_attempts: 3
""")
    project.commit()
    out = project.run("run", "wf.yml", "-y", env=env, timeout=180)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Goal 'two commits by Claude' achieved in 2 attempts (100%)" in out.stdout
    log = project.git("log", "--format=%s").splitlines()
    assert "attempt-1" in log and "attempt-2" in log
    assert (project.root / "n").read_text() == "x\nx\n"
