"""MapReduce jobs end to end (spec 05 §20): real repositories, real agents in worktrees."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from tests.e2e.conftest import Project


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True,
                          check=True).stdout.strip()


def commit_all(project: Project, message: str = "files") -> None:
    git(project.root, "add", "-A")
    git(project.root, "commit", "-qm", message)


def job_id_of(out: str) -> str:
    found = re.search(r"Job: (mapreduce-\S+)", out)
    assert found, out
    return found.group(1)


def events(project: Project, job_id: str) -> list[dict[str, Any]]:
    directory = project.home / "events" / "repo" / job_id
    found: list[dict[str, Any]] = []
    for path in sorted(directory.glob("*.jsonl")):
        found += [json.loads(line)["event"] for line in path.read_text().splitlines()
                  if line.strip()]
    return found


def dlq_entries(project: Project, job_id: str) -> dict[str, dict[str, Any]]:
    items = project.home / "dlq" / "repo" / job_id / "items"
    return {p.stem: json.loads(p.read_text()) for p in sorted(items.glob("*.json"))}


SETUP_ITEMS = """\
name: three
mode: mapreduce
setup:
  - shell: "printf '{\\"items\\": [{\\"id\\": 1}, {\\"id\\": 2}, {\\"id\\": 3}]}' > work-items.json"
map:
  input: work-items.json
  json_path: "$.items[*]"
  max_parallel: 2
  agent_template:
    - shell: "echo ${item.id} > out_${item_index}.txt && git add -A && git commit -qm item-${item.id}"
reduce:
  - shell: "echo reduced ${map.total} ${map.successful} ${map.failed}"
"""


def test_setup_items_agents_merge_and_reduce(project: Project) -> None:
    project.write("mr.yml", SETUP_ITEMS)
    commit_all(project)
    result = project.run("run", "mr.yml", "-y", timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "reduced 3 3 0" in result.stdout
    assert "Map phase completed: 3 successful, 0 failed (total: 3)" in result.stdout
    for i in range(3):
        assert (project.root / f"out_{i}.txt").read_text() == f"{i + 1}\n"
    # agent branches and worktrees are gone, and so is the (empty) agents' directory
    assert git(project.root, "branch", "--list", "prodigy-mapreduce-agent-*") == ""
    assert [p.name for p in (project.home / "worktrees").iterdir()] == ["repo"]
    job = job_id_of(result.stdout)
    kinds = [e["event_type"] for e in events(project, job)]
    assert kinds.count("agent_started") == 3 and kinds.count("agent_completed") == 3
    assert kinds.index("job_completed") < kinds.index("merge_finished")
    results = json.loads((project.home / "state" / "repo" / "mapreduce" / "jobs" / job /
                          "map-results.json").read_text())
    assert [r["item_id"] for r in results] == ["item_0", "item_1", "item_2"]
    assert all(r["status"] == "Success" for r in results)


def test_command_input_lines_and_numbers(project: Project) -> None:
    project.write("lines.yml", """\
name: lines
mode: mapreduce
map:
  input: "printf 'a.py\\\\nb.py\\\\n'"
  agent_template:
    - shell: "echo got ${item}"
""")
    project.write("nums.yml", """\
name: nums
mode: mapreduce
map:
  input: "echo '[1, 2, 3]'"
  agent_template:
    - shell: "echo num ${item}"
""")
    commit_all(project)
    lines = project.run("run", "lines.yml", "-v", timeout=120)
    assert lines.returncode == 0, lines.stdout + lines.stderr
    assert "got a.py" in lines.stdout and "got b.py" in lines.stdout
    nums = project.run("run", "nums.yml", "-v", timeout=120)
    assert nums.returncode == 0, nums.stdout + nums.stderr
    for n in (1, 2, 3):
        assert f"num {n}" in nums.stdout


def test_never_more_than_max_parallel_agents(project: Project, tmp_path: Path) -> None:
    log = tmp_path / "spans.log"
    project.write("mr.yml", f"""\
name: parallel
mode: mapreduce
map:
  input: "echo '[0, 1, 2, 3, 4, 5]'"
  max_parallel: 2
  agent_template:
    - shell: "echo start ${{item}} >> {log} && sleep 0.4 && echo end ${{item}} >> {log}"
""")
    commit_all(project)
    result = project.run("run", "mr.yml", timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    running = most = 0
    for line in log.read_text().splitlines():
        running += 1 if line.startswith("start") else -1
        most = max(most, running)
    assert most == 2
    assert len(log.read_text().splitlines()) == 12
    # no terminal: plain progress lines (spec 05 §18), no control characters
    assert re.search(r"^Map: \d+/6 done, \d+ failed, \d+ running, \d+ pending",
                     result.stdout, re.M)
    assert "\x1b" not in result.stdout and "\r" not in result.stdout


def test_failures_go_to_the_dlq_and_the_run_exits_3(project: Project) -> None:
    project.write("mr.yml", """\
name: failing
mode: mapreduce
map:
  input: "echo '[1, 2, 3]'"
  agent_template:
    - shell: "test ${item} -ne 2"
    - shell: "echo ${item} > ok_${item}.txt && git add -A && git commit -qm ok-${item}"
reduce:
  - shell: "echo reduce ${map.successful}/${map.total} failed=${map.failed}"
""")
    commit_all(project)
    result = project.run("run", "mr.yml", "-y", timeout=120)
    assert result.returncode == 3, result.stdout + result.stderr
    assert "reduce 2/3 failed=1" in result.stdout
    job = job_id_of(result.stdout)
    entries = dlq_entries(project, job)
    assert list(entries) == ["item_1"]
    entry = entries["item_1"]
    assert entry["failure_count"] == 1 and entry["item_data"] == 2
    assert entry["failure_history"][0]["error_type"] == {"CommandFailed": {"exit_code": 1}}
    assert entry["reprocess_eligible"] is True
    assert (project.root / "ok_1.txt").exists() and (project.root / "ok_3.txt").exists()
    assert not (project.root / "ok_2.txt").exists()  # the second step never ran
    listed = project.run("dlq", "list", "--job-id", job, "--json")
    assert [e["item_id"] for e in json.loads(listed.stdout)] == ["item_1"]


def test_conflicting_agents_first_merges_second_goes_to_the_dlq(project: Project,
                                                                tmp_path: Path) -> None:
    barrier = tmp_path / "started"
    project.write("shared.txt", "base\n")
    # both agents start from the same commit (each waits until both have started)
    project.write("mr.yml", f"""\
name: conflict
mode: mapreduce
map:
  input: "echo '[\\"one\\", \\"two\\"]'"
  max_parallel: 2
  agent_template:
    - shell: "touch {barrier}-${{item}}; while [ ! -e {barrier}-one ] || [ ! -e {barrier}-two ]; do sleep 0.05; done"
    - shell: "echo ${{item}} > shared.txt && git commit -qam ${{item}}"
""")
    commit_all(project)
    result = project.run("run", "mr.yml", timeout=120)
    assert result.returncode == 3, result.stdout + result.stderr
    job = job_id_of(result.stdout)
    entries = dlq_entries(project, job)
    assert len(entries) == 1  # whichever merged second
    loser = next(iter(entries))
    entry = entries[loser]
    last = entry["failure_history"][-1]
    assert last["error_type"] == "MergeConflict"
    assert last["conflicting_files"] == ["shared.txt"]
    branch = entry["worktree_artifacts"]["branch_name"]
    assert git(project.root, "branch", "--list", branch) != ""
    session_wt = Path(re.search(r"Created worktree at: (\S+)", result.stdout).group(1))
    assert git(session_wt, "status", "--porcelain") == ""
    winner = {"item_0": "two", "item_1": "one"}[loser]
    assert (session_wt / "shared.txt").read_text() == f"{winner}\n"


def test_agent_timeout_is_a_timeout_in_the_dlq(project: Project) -> None:
    project.write("mr.yml", """\
name: slow
mode: mapreduce
map:
  input: "echo '[1]'"
  agent_timeout_secs: 1
  agent_template:
    - shell: "sleep 30"
""")
    commit_all(project)
    started = time.monotonic()
    result = project.run("run", "mr.yml", timeout=120)
    assert time.monotonic() - started < 25
    assert result.returncode == 3, result.stdout + result.stderr
    entry = dlq_entries(project, job_id_of(result.stdout))["item_0"]
    assert entry["failure_history"][-1]["error_type"] == "Timeout"
    assert entry["reprocess_eligible"] is True


def test_stop_policy_leaves_the_rest_pending(project: Project) -> None:
    project.write("mr.yml", """\
name: stop
mode: mapreduce
on_item_failure: stop
map:
  input: "echo '[0, 1, 2, 3, 4]'"
  max_parallel: 1
  agent_template:
    - shell: "test ${item} -ne 0"
reduce:
  - shell: "echo never reduced"
""")
    commit_all(project)
    result = project.run("run", "mr.yml", timeout=120)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "never reduced" not in result.stdout
    assert "E6008" in result.stderr
    job = job_id_of(result.stdout)
    kinds = [e["event_type"] for e in events(project, job)]
    assert kinds.count("agent_started") == 1


def test_max_failures_stops_after_exactly_that_many(project: Project) -> None:
    project.write("mr.yml", """\
name: maxfail
mode: mapreduce
max_failures: 2
map:
  input: "echo '[0, 1, 2, 3, 4]'"
  max_parallel: 1
  agent_template:
    - shell: "exit 1"
""")
    commit_all(project)
    result = project.run("run", "mr.yml", timeout=120)
    assert result.returncode == 1
    kinds = [e["event_type"] for e in events(project, job_id_of(result.stdout))]
    assert kinds.count("agent_started") == 2


def test_setup_capture_reaches_agents_and_reduce_sees_results(project: Project) -> None:
    project.write("mr.yml", """\
name: capture
mode: mapreduce
setup:
  - shell: "echo p"
    capture: prefix
map:
  input: "echo '[\\"a\\", \\"b\\"]'"
  agent_template:
    - shell: "echo ${prefix}-${item}"
reduce:
  - write_file:
      path: results.json
      format: json
      content: '${map.results}'
  - shell: "git add results.json && git commit -qm results"
""")
    commit_all(project)
    result = project.run("run", "mr.yml", "-v", "-y", timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "p-a" in result.stdout and "p-b" in result.stdout
    results = json.loads((project.root / "results.json").read_text())
    assert [r["item_index"] for r in results] == [0, 1]
    assert [r["status"] for r in results] == ["Success", "Success"]


def test_zero_items_and_missing_input(project: Project) -> None:
    project.write("none.yml", """\
name: none
mode: mapreduce
map:
  input: "echo '[1, 2]'"
  filter: "item > 5"
  agent_template:
    - shell: "echo never"
reduce:
  - shell: "echo never reduced"
""")
    project.write("missing.yml", """\
name: missing
mode: mapreduce
map:
  input: missing.json
  agent_template:
    - shell: "true"
""")
    commit_all(project)
    none = project.run("run", "none.yml", timeout=120)
    assert none.returncode == 0, none.stdout + none.stderr
    assert "No work items to process" in none.stdout
    assert "never" not in none.stdout
    missing = project.run("run", "missing.yml", timeout=120)
    assert missing.returncode == 1
    assert "E6001" in missing.stderr and "map input file not found: missing.json" in \
        missing.stderr


def test_uncommitted_agent_files_are_reported(project: Project) -> None:
    project.write("mr.yml", """\
name: leftovers
mode: mapreduce
map:
  input: "echo '[1]'"
  agent_template:
    - shell: "echo x > untracked.txt"
""")
    commit_all(project)
    result = project.run("run", "mr.yml", timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "warning[W6004]" in result.stderr and "untracked.txt" in result.stderr
    job = job_id_of(result.stdout)
    done = [e for e in events(project, job) if e["event_type"] == "agent_completed"]
    assert done[0]["result"]["uncommitted_files"] == ["untracked.txt"]


def test_interrupt_then_resume_job_runs_only_the_rest(project: Project,
                                                      tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    project.write("mr.yml", f"""\
name: resumable
mode: mapreduce
map:
  input: "echo '[0, 1, 2, 3, 4]'"
  max_parallel: 1
  agent_template:
    - shell: "if [ ${{item}} -ge 2 ]; then touch {gate}.${{item}}; while [ ! -e {gate} ]; do sleep 0.05; done; fi"
    - shell: "echo ${{item}} > r_${{item}}.txt && git add -A && git commit -qm r${{item}}"
reduce:
  - shell: "echo reduced ${{map.successful}}"
""")
    commit_all(project)
    proc = project.popen("run", "mr.yml", "-y")
    deadline = time.monotonic() + 60
    while not Path(f"{gate}.2").exists():
        assert time.monotonic() < deadline and proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, out + err
    job = job_id_of(out)
    assert f"Resume with: prodigy resume-job {job}" in err or \
        f"prodigy resume-job {job}" in err
    gate.touch()
    resumed = project.run("resume-job", job, "-y", timeout=120)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "reduced 5" in resumed.stdout
    assert "MapReduce Resume Summary\n  Total: 5, successful: 5, failed: 0, reduce: " \
           "completed\n" in resumed.stdout
    started = [e["item_id"] for e in events(project, job) if e["event_type"] ==
               "agent_started"]
    # items 0 and 1 ran once; item 2 was interrupted and ran again; 3 and 4 once
    assert sorted(started) == ["item_0", "item_1", "item_2", "item_2", "item_3", "item_4"]
    for i in range(5):
        assert (project.root / f"r_{i}.txt").exists()


def test_kill_9_then_resume_job_never_repeats_a_merged_item(project: Project,
                                                            tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    project.write("mr.yml", f"""\
name: killed
mode: mapreduce
map:
  input: "echo '[0, 1, 2, 3]'"
  max_parallel: 1
  agent_template:
    - shell: "if [ ${{item}} -ge 2 ]; then touch {gate}.${{item}}; while [ ! -e {gate} ]; do sleep 0.05; done; fi"
    - shell: "echo ${{item}} > k_${{item}}.txt && git add -A && git commit -qm k${{item}}"
""")
    commit_all(project)
    proc = project.popen("run", "mr.yml", "-y")
    deadline = time.monotonic() + 60
    # item 2 waits at the gate; item 1's merge (and so its agent_completed) may still be
    # in the queue then: kill only once both earlier items are logged as completed
    while True:
        assert time.monotonic() < deadline and proc.poll() is None, proc.communicate()
        logged = [e for d in (project.home / "events" / "repo").glob("mapreduce-*")
                  for f in d.glob("*.jsonl") for e in f.read_text().splitlines()
                  if '"agent_completed"' in e]
        if Path(f"{gate}.2").exists() and len(logged) >= 2:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    out, _ = proc.communicate(timeout=30)
    job = job_id_of(out)
    gate.touch()
    listed = project.run("events", "ls", "--job", job, "--json", "--limit", "0")
    assert listed.returncode == 0, listed.stderr
    assert sum(1 for line in listed.stdout.splitlines()
               if json.loads(line)["event"]["event_type"] == "agent_completed") == 2
    resumed = project.run("resume-job", job, "-y", timeout=120)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    started = [e["item_id"] for e in events(project, job) if e["event_type"] ==
               "agent_started"]
    assert started.count("item_0") == 1 and started.count("item_1") == 1
    merges = git(project.root, "log", "--merges", "--format=%s").splitlines()
    agent_merges = [m for m in merges if m.startswith("Merge agent")]
    assert len(agent_merges) == 4  # every item merged exactly once
    for i in range(4):
        assert (project.root / f"k_{i}.txt").exists()
    # no agent worktree or branch is left behind
    assert git(project.root, "branch", "--list", "prodigy-mapreduce-agent-*") == ""


RETRYABLE = """\
name: retryable
mode: mapreduce
map:
  input: "echo '[1, 2, 3]'"
  agent_template:
    - shell: "test ! -e {block}-${{item}}"
    - shell: "echo ${{item}} > r_${{item}}.txt && git add -A && git commit -qm r${{item}}"
"""


def test_dlq_retry_runs_the_failed_items_again_and_empties_the_dlq(
        project: Project, tmp_path: Path) -> None:
    block = tmp_path / "block"
    project.write("mr.yml", RETRYABLE.format(block=block))
    commit_all(project)
    Path(f"{block}-2").touch()
    Path(f"{block}-3").touch()
    first = project.run("run", "mr.yml", "-y", timeout=120)
    assert first.returncode == 3, first.stdout + first.stderr
    job = job_id_of(first.stdout)
    assert sorted(dlq_entries(project, job)) == ["item_1", "item_2"]
    dry = project.run("dlq", "retry", job, "--dry-run")
    assert dry.returncode == 0 and "item_1, item_2" in dry.stdout
    assert sorted(dlq_entries(project, job)) == ["item_1", "item_2"]
    Path(f"{block}-2").unlink()  # item_1 (value 2) is fixed; item_2 (value 3) still fails
    retried = project.run("dlq", "retry", job, "-y", "--json", timeout=120)
    assert retried.returncode == 3, retried.stdout + retried.stderr
    report = json.loads(retried.stdout)
    assert (report["selected"], report["successful"], report["failed"]) == (2, 1, 1)
    entries = dlq_entries(project, job)
    assert list(entries) == ["item_2"] and entries["item_2"]["failure_count"] == 2
    assert (project.root / "r_2.txt").exists() and not (project.root / "r_3.txt").exists()
    Path(f"{block}-3").unlink()
    again = project.run("dlq", "retry", job, "-y", timeout=120)
    assert again.returncode == 0, again.stdout + again.stderr
    assert dlq_entries(project, job) == {} and (project.root / "r_3.txt").exists()
    nothing = project.run("dlq", "retry", job)
    assert nothing.returncode == 2 and "Nothing to retry" in nothing.stdout


def test_resume_job_retry_failed_reruns_failed_items(project: Project,
                                                     tmp_path: Path) -> None:
    block = tmp_path / "block"
    project.write("mr.yml", "max_failures: 1\n" + RETRYABLE.format(block=block).replace(
        "  agent_template:", "  max_parallel: 1\n  agent_template:") + "reduce:\n"
                  "  - shell: \"echo reduced ${map.successful} ${map.failed}\"\n")
    commit_all(project)
    Path(f"{block}-2").touch()
    first = project.run("run", "mr.yml", timeout=120)
    assert first.returncode == 1 and "E6008" in first.stderr, first.stdout + first.stderr
    job = job_id_of(first.stdout)
    Path(f"{block}-2").unlink()
    # the stopped job goes on: the failed item runs again, then the pending one, reduce
    resumed = project.run("resume-job", job, "--retry-failed", "-y", timeout=120)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "reduced 3 0" in resumed.stdout
    assert dlq_entries(project, job) == {}
    for i in (1, 2, 3):
        assert (project.root / f"r_{i}.txt").exists()
