"""A 30-item MapReduce job killed with SIGKILL mid-run, then resumed (spec 05 §8, §13-§16).

Items that are multiples of 7 fail, items 24 and 25 change the same line of the same file
(the second to merge goes to the DLQ as `MergeConflict` with its branch kept), every other
item commits a file of its own. The process is killed once ~12 items have a final event; the
resumed job must finish the rest without running any of those 12 again.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

from tests.e2e.conftest import Project

TOTAL = 30
FAILING = {i for i in range(TOTAL) if i % 7 == 0}          # 0, 7, 14, 21, 28
PAIR = (24, 25)                                            # conflict on shared.txt
SUCCEEDING = set(range(TOTAL)) - FAILING - set(PAIR)
FINAL = ("agent_completed", "agent_failed")
KILL_AFTER = 12

# The agent's work: fail, commit a file of its own, or (for the pair) wait until the other
# half of the pair has its worktree too (so both branch off the same commit), then change
# the same line of shared.txt. The barrier is bounded so a broken run cannot hang.
AGENT_SH = """\
#!/bin/sh
item=$1
barrier=$2
sleep 0.2
case "$item" in
  0|7|14|21|28) echo "item $item is broken" >&2; exit 1 ;;
  24|25)
    touch "$barrier.$item"
    other=$((49 - item))
    n=0
    while [ ! -e "$barrier.$other" ] && [ $n -lt 600 ]; do sleep 0.05; n=$((n + 1)); done
    echo "written by $item" > shared.txt
    git commit -qam "conflict-$item"
    exit 0 ;;
esac
echo "item $item" > "f_$item.txt"
git add "f_$item.txt"
git commit -qm "item-$item"
"""


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True,
                          check=True).stdout.strip()


def job_id_of(out: str) -> str:
    found = re.search(r"Job: (mapreduce-\S+)", out)
    assert found, out
    return found.group(1)


def job_events(project: Project, job_id: str) -> list[dict[str, Any]]:
    """Every complete event of the job's log (a line cut by the kill is skipped)."""
    found: list[dict[str, Any]] = []
    for path in sorted((project.home / "events" / "repo" / job_id).glob("*.jsonl")):
        for line in path.read_text(errors="replace").splitlines():
            try:
                found.append(json.loads(line)["event"])
            except (ValueError, KeyError):
                continue
    return found


def running_job_id(project: Project) -> str | None:
    directory = project.home / "events" / "repo"
    jobs = sorted(p.name for p in directory.glob("mapreduce-*")) if directory.exists() else []
    return jobs[0] if jobs else None


def item_number(item_id: str) -> int:
    return int(item_id.removeprefix("item_"))


def test_thirty_items_killed_mid_run_then_resumed(project: Project, tmp_path: Path) -> None:
    barrier = tmp_path / "barrier"
    project.write("shared.txt", "base\n")
    project.write("agent.sh", AGENT_SH)
    project.write("big.yml", f"""\
name: big
mode: mapreduce
map:
  input: "echo '{json.dumps(list(range(TOTAL)))}'"
  max_parallel: 4
  agent_template:
    - shell: "echo start ${{item_id}}"
    - shell: "sh agent.sh ${{item}} {barrier}"
reduce:
  - shell: "echo reduced ${{map.successful}}/${{map.total}} failed=${{map.failed}}"
""")
    base = project.commit("workflow and agent script")
    branch = project.branch()

    # ---- run, and kill -9 once ~12 items have a final event
    proc = project.popen("run", "big.yml", "-y")
    deadline = time.monotonic() + 60
    job: str | None = None
    finished = 0
    while finished < KILL_AFTER:
        assert time.monotonic() < deadline, "the job never got far enough"
        assert proc.poll() is None, proc.communicate()
        job = job or running_job_id(project)
        if job:
            finished = sum(1 for e in job_events(project, job) if e["event_type"] in FINAL)
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert job is not None and job_id_of(out) == job
    before = job_events(project, job)
    done_before = {e["item_id"] for e in before if e["event_type"] in FINAL}
    assert KILL_AFTER <= len(done_before) < TOTAL, sorted(done_before)
    in_flight = {e["item_id"] for e in before if e["event_type"] == "agent_started"} \
        - done_before
    assert in_flight, "the kill must land while agents are running"
    # the pair can only start after the kill: at most 4 agents run beyond the finished ones
    assert not {f"item_{i}" for i in PAIR} & {e["item_id"] for e in before
                                              if e["event_type"] == "agent_started"}
    # nothing reached the user's branch yet
    assert git(project.root, "rev-parse", "HEAD") == base

    # ---- resume
    resumed = project.run("resume-job", job, "-y", timeout=120)
    text = resumed.stdout + resumed.stderr
    assert resumed.returncode == 3, text
    assert f"Job has {TOTAL} total items" in resumed.stdout
    assert f"reduced {len(SUCCEEDING) + 1}/{TOTAL} failed={len(FAILING) + 1}" in \
        resumed.stdout, text

    # ---- every succeeding item's work is in the checkout exactly once
    assert project.branch() == branch
    subjects = Counter(git(project.root, "log", "--format=%s").splitlines())
    for i in SUCCEEDING:
        assert (project.root / f"f_{i}.txt").read_text() == f"item {i}\n"
        assert subjects[f"item-{i}"] == 1, i
    for i in FAILING:
        assert not (project.root / f"f_{i}.txt").exists()
        assert subjects[f"item-{i}"] == 0
    merged_pair = [i for i in PAIR if subjects[f"conflict-{i}"] == 1]
    assert len(merged_pair) == 1, subjects
    winner = merged_pair[0]
    loser = PAIR[1] if winner == PAIR[0] else PAIR[0]
    assert (project.root / "shared.txt").read_text() == f"written by {winner}\n"
    agent_merges = [s for s, n in subjects.items() for _ in range(n)
                    if s.startswith("Merge agent")]
    assert len(agent_merges) == len(SUCCEEDING) + 1
    assert git(project.root, "status", "--porcelain") == ""

    # ---- nothing that had finished before the kill ran again
    after = job_events(project, job)
    started = Counter(e["item_id"] for e in after if e["event_type"] == "agent_started")
    assert set(started) == {f"item_{i}" for i in range(TOTAL)}
    for item in done_before:
        assert started[item] == 1, (item, started[item])
    for item, count in started.items():
        assert count <= 2, (item, count)  # at most: running at the kill, then once more
    finals = Counter(e["item_id"] for e in after if e["event_type"] in FINAL)
    for item, count in finals.items():
        assert count == 1, (item, count)  # one final outcome per item
    assert len(finals) == TOTAL

    # ---- the DLQ: five command failures and one merge conflict
    listed = project.run("dlq", "list", "--job-id", job, "--json")
    assert listed.returncode == 0, listed.stderr
    entries = {e["item_id"]: e for e in json.loads(listed.stdout)}
    assert set(entries) == {f"item_{i}" for i in FAILING | {loser}}
    for i in FAILING:
        entry = entries[f"item_{i}"]
        assert entry["job_id"] == job
        assert entry["item_data"] == i
        assert entry["failure_count"] == 1
        assert entry["failure_history"][-1]["error_type"] == {"CommandFailed":
                                                              {"exit_code": 1}}
        assert entry["reprocess_eligible"] is True
    conflict = entries[f"item_{loser}"]
    last = conflict["failure_history"][-1]
    assert last["error_type"] == "MergeConflict"
    assert last["conflicting_files"] == ["shared.txt"]
    kept = conflict["worktree_artifacts"]["branch_name"]
    assert kept.startswith("prodigy-mapreduce-agent-")
    assert git(project.root, "branch", "--list", kept) != ""
    assert git(project.root, "log", "-1", "--format=%s", kept) == f"conflict-{loser}"

    # ---- no agent worktree, no agent branch but the kept one
    branches = git(project.root, "branch", "--list", "prodigy-mapreduce-agent-*",
                   "--format=%(refname:short)").splitlines()
    assert branches == [kept]
    session = project.sessions()[0]["id"]
    agent_dirs = [p for p in project.home.joinpath("worktrees").rglob("mapreduce-agent-*")
                  if p.is_dir()]
    assert agent_dirs == [], agent_dirs
    session_dir = project.home / "worktrees" / session
    assert not session_dir.exists() or not any(session_dir.iterdir()), \
        list(session_dir.iterdir())
    registered = git(project.root, "worktree", "list", "--porcelain")
    assert "mapreduce-agent-" not in registered, registered
