"""MapReduce policies end to end (spec 05 §4.2–§4.3, §10.5–§10.6, §20 #20): real `prodigy
run` in real repositories — the job circuit breaker pausing dispatch, a setup phase limit,
``setup.capture_outputs`` reaching agents and reduce, and ``error_collection``."""

from __future__ import annotations

import json
import time
from datetime import datetime
from typing import Any

import pytest

from tests.e2e.conftest import Project
from tests.e2e.test_mapreduce_e2e import commit_all, dlq_entries, git, job_id_of

pytestmark = pytest.mark.e2e


def records(project: Project, job_id: str) -> list[dict[str, Any]]:
    """The job's journal records (envelopes with ``timestamp``), in order."""
    directory = project.home / "events" / "repo" / job_id
    found: list[dict[str, Any]] = []
    for path in sorted(directory.glob("*.jsonl")):
        found += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return found


def at(record: dict[str, Any]) -> float:
    return datetime.fromisoformat(record["timestamp"].replace("Z", "+00:00")).timestamp()


BREAKER = """\
name: pause
mode: mapreduce
error_policy:
  circuit_breaker: {failure_threshold: 2, timeout: "1s"}
map:
  input: "echo '[0, 1, 2, 3]'"
  max_parallel: 1
  agent_template:
    - shell: "test ${item} -ge 2"
"""


def test_the_job_breaker_pauses_dispatch_for_its_timeout(project: Project) -> None:
    project.write("mr.yml", BREAKER)
    commit_all(project)
    result = project.run("run", "mr.yml", "-y", timeout=120)
    assert result.returncode == 3, result.stdout + result.stderr
    assert "⏸ circuit breaker open: pausing new agents for 1s" in result.stdout
    assert "Map phase completed: 2 successful, 2 failed (total: 4)" in result.stdout
    job = job_id_of(result.stdout)
    journal = records(project, job)
    moves = [r for r in journal if r["event"]["event_type"] == "circuit_breaker_state_changed"]
    assert [(r["event"]["from"], r["event"]["to"]) for r in moves][:2] == [
        ("closed", "open"), ("open", "half_open")]
    assert moves[0]["event"]["name"] == "job"
    opened = at(moves[0])
    starts = {r["event"]["item_id"]: at(r) for r in journal
              if r["event"]["event_type"] == "agent_started"}
    assert set(starts) == {"item_0", "item_1", "item_2", "item_3"}
    # items 2 and 3 start only after the open period
    for item in ("item_2", "item_3"):
        assert starts[item] - opened >= 0.9, (item, starts[item] - opened)
    # the failed items are in the DLQ as usual
    assert set(dlq_entries(project, job)) == {"item_0", "item_1"}


def test_a_setup_phase_limit_stops_setup_and_fails_the_job(project: Project) -> None:
    project.write("mr.yml", """\
name: slow-setup
mode: mapreduce
setup:
  timeout: 1s
  commands:
    - shell: "sleep 30"
    - shell: "touch never"
map:
  input: "echo '[1]'"
  agent_template:
    - shell: "touch agent-ran"
""")
    commit_all(project)
    started = time.monotonic()
    result = project.run("run", "mr.yml", "-y", timeout=120)
    assert time.monotonic() - started < 20
    assert result.returncode == 1, result.stdout + result.stderr
    assert "error[E6005]: Setup phase timed out after 1 seconds" in result.stderr
    job = job_id_of(result.stdout)
    kinds = [r["event"]["event_type"] for r in records(project, job)]
    assert "job_failed" in kinds and "agent_started" not in kinds
    worktree = project.worktree(result)
    assert not (worktree / "never").exists()
    # the job can be resumed at the stopped setup step
    state = project.home / "state" / "repo" / "mapreduce" / "jobs" / job
    docs = sorted(state.glob("checkpoint-v*.json"))
    assert docs, list(state.iterdir())
    doc = json.loads(docs[-1].read_text())
    assert doc["phase"] == "setup" and doc["setup_state"]["completed_steps"] == []


CAPTURE = """\
name: capture
mode: mapreduce
setup:
  commands:
    - shell: "git rev-parse --short HEAD"
    - shell: "echo '{\\"hot\\": [\\"a.py\\", \\"b.py\\"]}'; echo 'summary: 2 hot' >&2"
  capture_outputs:
    SHA: 0
    HOT:
      command_index: 1
      json_path: "$.hot[*]"
    SUMMARY:
      command_index: 1
      source: stderr
      pattern: "summary: (.*)"
    MISSING:
      command_index: 1
      pattern: "nope (.*)"
      default: none
map:
  input: "echo '[\\"x\\"]'"
  agent_template:
    - shell: >-
        printf '%s|%s|%s|%s|%s\\n' "${item}" "${SHA}" "${SUMMARY}" "${MISSING}" "${HOT}"
        > out.txt && git add out.txt && git commit -qm out
reduce:
  - shell: "echo reduce sees ${SHA} and ${SUMMARY}"
"""


def test_capture_outputs_reach_agents_and_reduce(project: Project) -> None:
    project.write("mr.yml", CAPTURE)
    commit_all(project)
    head = git(project.root, "rev-parse", "--short", "HEAD")
    result = project.run("run", "mr.yml", "-y", timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"reduce sees {head} and 2 hot" in result.stdout
    item, sha, summary, missing, hot = \
        (project.root / "out.txt").read_text().rstrip("\n").split("|")
    assert (item, sha, summary, missing) == ("x", head, "2 hot", "none")
    assert "a.py" in hot and "b.py" in hot
    # stored with the setup variables (a resumed job or `dlq retry` sees them too)
    job = job_id_of(result.stdout)
    state = project.home / "state" / "repo" / "mapreduce" / "jobs" / job
    doc = json.loads(sorted(state.glob("checkpoint-v*.json"))[-1].read_text())
    assert doc["variables"]["SHA"] == head
    assert doc["variables"]["HOT"] == ["a.py", "b.py"]


def test_a_capture_that_finds_nothing_fails_setup_with_e6004(project: Project) -> None:
    project.write("mr.yml", """\
name: nothing
mode: mapreduce
setup:
  commands:
    - shell: "echo no numbers here"
  capture_outputs:
    COUNT: {command_index: 0, pattern: "count=(\\\\d+)"}
map:
  input: "echo '[1]'"
  agent_template:
    - shell: "echo ${COUNT}"
""")
    commit_all(project)
    result = project.run("run", "mr.yml", timeout=120)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "error[E6004]: Setup phase failed: capture_outputs 'COUNT': pattern" in \
        result.stderr


def test_immediate_error_collection_prints_each_failure(project: Project) -> None:
    project.write("mr.yml", """\
name: loud
mode: mapreduce
error_policy:
  error_collection: immediate
map:
  input: "echo '[0, 1]'"
  max_parallel: 1
  agent_template:
    - shell: "echo broken ${item} >&2; exit 4"
""")
    commit_all(project)
    result = project.run("run", "mr.yml", timeout=120)
    assert result.returncode == 3, result.stdout + result.stderr
    assert "item_0 failed (CommandFailed):" in result.stderr
    assert "item_1 failed (CommandFailed):" in result.stderr
    assert "Failed items:" not in result.stdout


def test_retried_attempts_leave_no_branch_behind(project: Project) -> None:
    project.write("mr.yml", """\
name: kr
mode: mapreduce
map:
  input: "printf 'a\\\\nb\\\\n'"
  max_parallel: 1
  agent_template:
    - shell: |
        echo ${item} > out_${item}.txt; git add .; git commit -qm "x ${item}"
        test ${item} = b || echo $PRODIGY_AGENT_ID | grep -q attempt_3
error_policy:
  on_item_failure: retry
  retry_config: {max_attempts: 3, backoff: fixed, initial_delay: 0s}
""")
    commit_all(project)
    out = project.run("run", "mr.yml", "-y")
    assert out.returncode == 0, out.stdout + out.stderr
    assert (project.root / "out_a.txt").read_text() == "a\n"  # the third attempt merged
    assert git(project.root, "branch", "--list", "*agent*") == ""  # none of the attempts'
    assert "retrying (attempt 3)" in out.stderr


def test_agent_output_is_prefixed_with_the_item_id_at_v(project: Project) -> None:
    project.write("mr.yml", """\
name: pf
mode: mapreduce
map:
  input: "printf 'a\\\\nb\\\\n'"
  agent_template:
    - shell: "echo hello ${item}"
""")
    commit_all(project)
    out = project.run("run", "mr.yml", "-y", "-v")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "    [item_0] hello a\n" in out.stdout and "    [item_1] hello b\n" in out.stdout


def test_skipped_setup_and_reduce_steps_keep_their_labels(project: Project) -> None:
    project.write("mr.yml", """\
name: sk
mode: mapreduce
setup:
  - shell: "echo s0"
  - shell: "echo s1"
    when: "false"
  - shell: "echo s2"
map:
  input: "printf 'a\\\\n'"
  agent_template:
    - shell: "true"
reduce:
  - shell: "echo r0"
  - shell: "echo r1"
    when: "false"
  - shell: "echo r2"
""")
    commit_all(project)
    out = project.run("run", "mr.yml", "-y")
    assert out.returncode == 0, out.stdout + out.stderr
    assert ("Setup [2/3]: shell: echo s1\n  Skipped: when condition is false\n"
            "Setup [3/3]: shell: echo s2\n") in out.stdout
    assert ("Reduce phase: Executing step 2/3: shell: echo r1\n"
            "  Skipped: when condition is false\n"
            "Reduce phase: Executing step 3/3: shell: echo r2\n") in out.stdout
