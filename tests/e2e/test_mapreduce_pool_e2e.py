"""Worktrees of MapReduce agents end to end (spec 06 §9, acceptance example 14).

Real `prodigy run` on real repositories in temp dirs: a `pooled` job recycles two pool
worktrees for six items (ignored files survive recycling) and removes the pool at the
end; a `dedicated` job keeps every agent's worktree until `prodigy worktree clean
--mapreduce`; a job killed with SIGKILL leaves its pool to `resume-job`, which reuses it
and removes it at the end.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

from tests.e2e.conftest import Project
from tests.e2e.test_mapreduce_e2e import commit_all, events, git, job_id_of


def job_state(project: Project, job_id: str) -> dict[str, Any]:
    directory = project.home / "state" / "repo" / "mapreduce" / "jobs" / job_id
    newest = max(directory.glob("checkpoint-v*.json"),
                 key=lambda p: int(p.stem.removeprefix("checkpoint-v")))
    doc: dict[str, Any] = json.loads(newest.read_text())
    return doc


def agent_worktrees(project: Project) -> dict[str, list[str]]:
    """Directories under `<storage>/worktrees/<session id>/`, by session."""
    found: dict[str, list[str]] = {}
    for scope in sorted((project.home / "worktrees").iterdir()):
        if scope.name.startswith("session-"):
            found[scope.name] = sorted(p.name for p in scope.iterdir()
                                       if not p.name.startswith("."))
    return found


def registered(project: Project) -> list[str]:
    out = git(project.root, "worktree", "list", "--porcelain")
    return [line.removeprefix("worktree ") for line in out.splitlines()
            if line.startswith("worktree ")]


POOLED = """\
name: pooled
mode: mapreduce
worktree_config:
  allocation_strategy: pooled
map:
  input: "echo '[0, 1, 2, 3, 4, 5]'"
  max_parallel: 2
  agent_template:
    - shell: "mkdir -p cache && ls cache > {seen}/seen_${{item}}.txt && pwd > {seen}/where_${{item}}.txt && touch cache/from_${{item}} && sleep 0.2"
    - shell: "echo ${{item}} > out_${{item}}.txt && git add -A && git commit -qm item-${{item}}"
"""


def test_pooled_recycles_two_worktrees_for_six_items(project: Project, tmp_path: Path) -> None:
    seen = tmp_path / "seen"
    seen.mkdir()
    project.write(".gitignore", "cache/\n")
    project.write("mr.yml", POOLED.format(seen=seen))
    commit_all(project)
    result = project.run("run", "mr.yml", "-y", timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    job = job_id_of(result.stdout)
    # every agent's commit was merged, and nothing ignored came along
    for i in range(6):
        assert (project.root / f"out_{i}.txt").read_text() == f"{i}\n"
    assert not (project.root / "cache").exists()
    # at most two pool worktrees were ever created: two created, four recycled
    stats = job_state(project, job)["worktree_stats"]
    assert stats == {"worktrees_created": 2, "worktrees_reused": 4,
                     "max_worktrees_in_use": 2}, stats
    log = events(project, job)
    created = [e for e in log if e["event_type"] == "worktree_created" and e.get("agent_id")]
    reused = [e for e in log if e["event_type"] == "worktree_reused"]
    assert sorted(e["worktree_name"] for e in created) == ["pool-0", "pool-1"]
    assert len(reused) == 4 and {e["worktree_name"] for e in reused} <= {"pool-0", "pool-1"}
    # the ignored file item 0 made is still there for a later item in the same worktree
    where = {i: (seen / f"where_{i}.txt").read_text().strip() for i in range(6)}
    assert Path(where[0]).name in ("pool-0", "pool-1")
    later = [i for i in range(1, 6) if where[i] == where[0]]
    assert later, where
    assert "from_0" in (seen / f"seen_{later[0]}.txt").read_text().split()
    # each item started in a clean tree: no tracked leftovers of earlier agents
    for i in later:
        assert not any(n.startswith("out_") for n in (seen / f"seen_{i}.txt").read_text().split())
    # the pool is gone with the job: no pool directory, no registered worktree, no branch
    assert not Path(where[0]).exists()
    assert agent_worktrees(project) == {}
    assert registered(project) == [str(project.root)]
    assert git(project.root, "branch", "--list", "prodigy-mapreduce-agent-*") == ""


DEDICATED = """\
name: dedicated
mode: mapreduce
worktree_config:
  allocation_strategy: dedicated
map:
  input: "echo '[0, 1, 2]'"
  max_parallel: 2
  agent_template:
    - shell: "test ${item} != 1 || exit 4"
    - shell: "echo ${item} > out_${item}.txt && git add -A && git commit -qm item-${item}"
"""


def test_dedicated_worktrees_stay_until_worktree_clean(project: Project) -> None:
    project.write("mr.yml", DEDICATED)
    commit_all(project)
    result = project.run("run", "mr.yml", "-y", timeout=180)
    assert result.returncode == 3, result.stdout + result.stderr
    job = job_id_of(result.stdout)
    assert (project.root / "out_0.txt").exists() and (project.root / "out_2.txt").exists()
    ((session, names),) = agent_worktrees(project).items()
    assert names == [f"mapreduce-agent-{job}_agent_{i}" for i in range(3)]
    scope = project.home / "worktrees" / session
    # the successful agents' worktrees are detached: their branches were merged and deleted
    for i in (0, 2):
        path = scope / f"mapreduce-agent-{job}_agent_{i}"
        assert (path / f"out_{i}.txt").exists()
        assert subprocess.run(["git", "symbolic-ref", "-q", "HEAD"], cwd=path).returncode != 0
    failed = scope / f"mapreduce-agent-{job}_agent_1"
    assert git(failed, "symbolic-ref", "--short", "HEAD") == \
        f"prodigy-mapreduce-agent-{job}_agent_1"
    entry = json.loads((project.home / "dlq" / "repo" / job / "items" / "item_1.json")
                       .read_text())
    assert entry["worktree_artifacts"]["worktree_path"] == str(failed)
    assert job_state(project, job)["worktree_stats"]["worktrees_created"] == 3
    # `prodigy worktree clean --mapreduce` removes them
    cleaned = project.run("worktree", "clean", "--mapreduce", "-y", timeout=120)
    assert cleaned.returncode == 0, cleaned.stdout + cleaned.stderr
    assert agent_worktrees(project) == {}
    assert registered(project) == [str(project.root)]


KILLED = """\
name: killed
mode: mapreduce
worktree_config:
  allocation_strategy: pooled
map:
  input: "echo '[0, 1, 2, 3, 4, 5]'"
  max_parallel: 2
  agent_template:
    - shell: "echo ${{item}} >> {log}; if [ ${{item}} -ge 2 ]; then touch {gate}.${{item}}; while [ ! -e {gate} ]; do sleep 0.05; done; fi"
    - shell: "echo ${{item}} > out_${{item}}.txt && git add -A && git commit -qm item-${{item}}"
"""


def _completed(project: Project) -> int:
    return sum(1 for d in (project.home / "events" / "repo").glob("mapreduce-*")
               for f in d.glob("*.jsonl") for line in f.read_text().splitlines()
               if '"agent_completed"' in line)


def test_a_killed_pooled_job_resumes_in_its_pool_and_leaves_nothing(
        project: Project, tmp_path: Path) -> None:
    log, gate = tmp_path / "ran.log", tmp_path / "gate"
    project.write("mr.yml", KILLED.format(log=log, gate=gate))
    commit_all(project)
    proc = project.popen("run", "mr.yml", "-y")
    deadline = time.monotonic() + 60
    # items 0 and 1 are merged; items 2 and 3 wait at the gate in the two pool worktrees
    while True:
        assert time.monotonic() < deadline and proc.poll() is None, proc.communicate()
        if Path(f"{gate}.2").exists() and Path(f"{gate}.3").exists() and \
                _completed(project) >= 2:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    out, _ = proc.communicate(timeout=30)
    job = job_id_of(out)
    gate.touch()  # the orphaned agent commands end
    ((_, names),) = agent_worktrees(project).items()
    assert names == ["pool-0", "pool-1"]
    resumed = project.run("resume-job", job, "-y", timeout=180)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    ran = log.read_text().split()
    assert sorted(ran) == ["0", "1", "2", "2", "3", "3", "4", "5"], ran  # 0, 1 never again
    for i in range(6):
        assert (project.root / f"out_{i}.txt").read_text() == f"{i}\n"
    log_events = events(project, job)
    started = [e["item_id"] for e in log_events if e["event_type"] == "agent_started"]
    assert started.count("item_0") == 1 and started.count("item_1") == 1
    # the resumed job took over the two pool worktrees the killed process left
    assert job_state(project, job)["worktree_stats"]["worktrees_created"] == 2
    assert agent_worktrees(project) == {}
    assert registered(project) == [str(project.root)]
    assert git(project.root, "branch", "--list", "prodigy-mapreduce-agent-*") == ""


REUSE = """\
name: reuse-{run}
mode: mapreduce
worktree_config:
  allocation_strategy: reuse
  cleanup_policy: {{idle_timeout_secs: {idle}}}
map:
  input: "echo '[0, 1, 2]'"
  max_parallel: 2
  agent_template:
    - shell: "mkdir -p cache && ls cache > {seen}/{run}_seen_${{item}}.txt && touch cache/{run}_${{item}}"
    - shell: "echo ${{item}} > {run}_${{item}}.txt && git add -A && git commit -qm {run}-${{item}}"
"""


def test_reuse_keeps_a_repository_pool_for_later_jobs(project: Project, tmp_path: Path) -> None:
    seen = tmp_path / "seen"
    seen.mkdir()
    project.write(".gitignore", "cache/\n")
    for run, idle in (("one", 600), ("two", 600), ("three", 1)):
        project.write(f"{run}.yml", REUSE.format(run=run, idle=idle, seen=seen))
    commit_all(project)
    pool = project.worktrees_dir / ".pool"

    def run_job(name: str) -> dict[str, Any]:
        result = project.run("run", f"{name}.yml", "-y", timeout=180)
        assert result.returncode == 0, result.stdout + result.stderr
        # the pool outlives the job, unlocked; nothing under the session's directory
        assert sorted(p.name for p in pool.iterdir() if not p.name.endswith(".json")) == \
            ["pool-0", "pool-1"]
        assert agent_worktrees(project) == {}
        return job_state(project, job_id_of(result.stdout))["worktree_stats"]

    first = run_job("one")
    assert (first["worktrees_created"], first["worktrees_reused"]) == (2, 1)
    second = run_job("two")
    assert (second["worktrees_created"], second["worktrees_reused"]) == (0, 3)
    # the later job found the ignored files the earlier one left in the pool
    assert any("one_" in (seen / f"two_seen_{i}.txt").read_text() for i in range(3))
    time.sleep(1.5)
    third = run_job("three")  # idle longer than 1 s: the pool is made anew
    assert (third["worktrees_created"], third["worktrees_reused"]) == (2, 1)
    assert not any("one_" in (seen / f"three_seen_{i}.txt").read_text() for i in range(3))
    for run in ("one", "two", "three"):
        for i in range(3):
            assert (project.root / f"{run}_{i}.txt").exists()
    assert git(project.root, "branch", "--list", "prodigy-mapreduce-agent-*") == ""
    # `prodigy worktree clean --mapreduce` removes the repository pool too, except a
    # worktree whose lock names a live process (a job using it)
    (pool / "pool-1.lock").write_text(json.dumps({
        "job_id": "other", "process_id": os.getpid(), "hostname": socket.gethostname()}))
    dry = project.run("worktree", "clean", "--mapreduce", "--dry-run", timeout=60)
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert ".pool/pool-0" in dry.stdout and (pool / "pool-0").is_dir()
    cleaned = project.run("worktree", "clean", "--mapreduce", "-y", timeout=120)
    assert cleaned.returncode == 0, cleaned.stdout + cleaned.stderr
    assert "in use by a running job" in cleaned.stdout + cleaned.stderr
    assert sorted(p.name for p in pool.iterdir()) == ["pool-1", "pool-1.json", "pool-1.lock"]
    assert registered(project) == [str(project.root), str(pool / "pool-1")]
    (pool / "pool-1.lock").unlink()
    cleaned = project.run("worktree", "clean", "--mapreduce", "-y", timeout=120)
    assert cleaned.returncode == 0, cleaned.stdout + cleaned.stderr
    assert not pool.exists()
    assert registered(project) == [str(project.root)]


KEEP_FAILED = """\
name: keep-failed
mode: mapreduce
worktree_config:
  cleanup_policy: {{keep_failed: true}}
map:
  input: "echo '[0]'"
  agent_template:
    - shell: "test -e {marker} && echo ok > ok.txt && git add ok.txt && git commit -qm ok"
"""


def test_a_kept_failed_worktree_goes_with_its_dlq_entry(project: Project,
                                                        tmp_path: Path) -> None:
    marker = tmp_path / "now-it-works"
    project.write("mr.yml", KEEP_FAILED.format(marker=marker))
    commit_all(project)
    result = project.run("run", "mr.yml", "-y", timeout=120)
    assert result.returncode == 3, result.stdout + result.stderr
    job = job_id_of(result.stdout)
    ((session, names),) = agent_worktrees(project).items()
    assert len(names) == 1  # the failed agent's worktree is kept for inspection
    marker.touch()
    retried = project.run("dlq", "retry", job, "-y", timeout=120)
    assert retried.returncode == 0, retried.stdout + retried.stderr
    assert (project.root / "ok.txt").exists()
    # the kept worktree went with the entry, and so did its now empty session directory
    assert not (project.home / "worktrees" / session).exists()
    assert registered(project) == [str(project.root)]
