"""Claude resolves a conflicting agent merge of a MapReduce job (spec 06 §6.2–§6.3, §11
#9–#10): real git repositories, the installed `prodigy`, and the real Claude Code CLI
talking to the scripted fake Anthropic API on 127.0.0.1.

Two agents write different text to the same line of `shared.txt`; both start from the same
session `HEAD`, so whichever is merged second conflicts.  The resolving prompt carries the
fake model's directives: record the `merge.*` variables, then resolve and commit.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import Project
from tests.fakeapi.cli import claude_env, find_claude

pytestmark = pytest.mark.e2e

WORKFLOW = """\
name: conflicting-agents
mode: mapreduce
merge_conflicts:
  strategy: claude
  timeout: 5m
  verify: "{verify}"
  claude: |
    FAKE: bash echo "${{merge.source_branch}} ${{merge.target_branch}} ${{merge.conflicting_files}} ${{merge.worktree}} ${{merge.session_id}}" > {seen}
    FAKE: bash echo both > shared.txt && git add shared.txt && git commit -q --no-edit
map:
  input: items.json
  json_path: "$.items[*]"
  max_parallel: 2
  agent_template:
    - shell: "echo ${{item.name}} > shared.txt && git commit -qam item-${{item.name}}"
reduce:
  - shell: "echo reduced ${{map.successful}} of ${{map.total}}"
"""


@pytest.fixture
def env(project: Project, fake_anthropic: Any, tmp_path: Path) -> dict[str, str]:
    environment = claude_env(project.env, fake_anthropic.url, home=tmp_path / "claude-home")
    environment["PRODIGY_HOME"] = str(project.home)
    environment["PRODIGY_CLAUDE_PATH"] = find_claude()
    return environment


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True,
                          check=True).stdout.strip()


def events(project: Project, job_id: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for path in sorted((project.home / "events" / "repo" / job_id).glob("*.jsonl")):
        found += [json.loads(line)["event"] for line in path.read_text().splitlines()
                  if line.strip()]
    return found


def run_job(project: Project, env: dict[str, str], tmp_path: Path,
            verify: str) -> tuple[subprocess.CompletedProcess[str], str, Path, Path]:
    """Run the job without `-y` (no terminal: the session worktree is kept to inspect)."""
    seen = tmp_path / "merge-vars.txt"
    project.write("shared.txt", "base\n")
    project.write("items.json", json.dumps({"items": [{"name": "a"}, {"name": "b"}]}) + "\n")
    project.write("mr.yml", WORKFLOW.format(verify=verify, seen=seen))
    project.commit("shared file, items and workflow")
    out = project.run("run", "mr.yml", env=env, timeout=240)
    found = re.search(r"Job: (mapreduce-\S+)", out.stdout)
    assert found, out.stdout + out.stderr
    return out, found.group(1), Project.worktree(out), seen


def test_claude_resolves_the_conflicting_agent_merge(project: Project, env: dict[str, str],
                                                     tmp_path: Path) -> None:
    out, job, session, seen = run_job(project, env, tmp_path, "grep -q both shared.txt")
    text = out.stdout + out.stderr
    assert out.returncode == 0, text
    assert "Map phase completed: 2 successful, 0 failed (total: 2)" in out.stdout, text
    assert "merge conflicts in: shared.txt; asking Claude to resolve them" in out.stdout
    assert "reduced 2 of 2" in out.stdout

    kinds = [e["event_type"] for e in events(project, job)]
    (conflict,) = [e for e in events(project, job) if e["event_type"] == "merge_conflict"]
    (resolved,) = [e for e in events(project, job)
                   if e["event_type"] == "merge_conflict_resolved"]
    assert conflict["strategy"] == "claude" and conflict["conflicting_files"] == ["shared.txt"]
    assert kinds.index("merge_conflict") < kinds.index("merge_conflict_resolved")
    branch, pre = conflict["source_branch"], conflict["pre"]
    session_branch = git(session, "rev-parse", "--abbrev-ref", "HEAD")
    assert resolved["source_branch"] == branch and resolved["resolver"] == "claude"
    assert Path(resolved["json_log_location"]).is_file()

    # the resolving Claude call saw the merge.* variables, in the session worktree
    assert seen.read_text().split() == [branch, session_branch, "shared.txt", session.name,
                                        conflict["session_id"]]

    # HEAD of the session worktree: Claude's merge commit, first parent the previous HEAD
    head = git(session, "rev-parse", "HEAD")
    assert head == resolved["merge_commit"]
    assert git(session, "rev-parse", "HEAD^1") == pre
    assert git(session, "log", "-1", "--format=%s") == f"Merge agent {branch}"
    assert (session / "shared.txt").read_text() == "both\n"
    assert git(session, "status", "--porcelain") == ""
    # both agents' commits are in, and their branches are gone (merged, deleted)
    subjects = git(session, "log", "--format=%s").splitlines()
    assert subjects.count("item-a") == 1 and subjects.count("item-b") == 1
    assert git(project.root, "branch", "--list", "prodigy-mapreduce-agent-*") == ""

    results = json.loads((project.home / "state" / "repo" / "mapreduce" / "jobs" / job /
                          "map-results.json").read_text())
    assert [r["status"] for r in results] == ["Success", "Success"]
    listed = project.run("dlq", "list", "--job-id", job, "--json", env=env)
    assert listed.returncode == 0 and json.loads(listed.stdout) == []


def test_a_resolution_that_fails_verify_sends_the_item_to_the_dlq(
        project: Project, env: dict[str, str], tmp_path: Path) -> None:
    out, job, session, seen = run_job(project, env, tmp_path, "grep -q neither shared.txt")
    text = out.stdout + out.stderr
    assert out.returncode == 3, text
    assert "Map phase completed: 1 successful, 1 failed (total: 2)" in out.stdout, text
    assert "merge_conflicts.verify failed" in out.stderr
    assert seen.exists()  # Claude did run and commit; verify rejected it
    assert "reduced 1 of 2" in out.stdout

    all_events = events(project, job)
    (conflict,) = [e for e in all_events if e["event_type"] == "merge_conflict"]
    assert not [e for e in all_events if e["event_type"] == "merge_conflict_resolved"]
    branch, pre = conflict["source_branch"], conflict["pre"]
    (merged,) = [e for e in all_events if e["event_type"] == "worktree_merged"]

    # the session worktree is back at PRE — the other agent's merge — and clean
    assert git(session, "rev-parse", "HEAD") == pre == merged["merge_commit"]
    assert git(session, "status", "--porcelain") == ""
    assert not (Path(git(session, "rev-parse", "--absolute-git-dir")) / "MERGE_HEAD").exists()
    winner = "a" if merged["source_branch"].endswith("_agent_0") else "b"
    assert (session / "shared.txt").read_text() == f"{winner}\n"

    # the item is in the DLQ as a merge conflict, its branch kept
    assert git(project.root, "branch", "--list", branch) != ""
    listed = project.run("dlq", "list", "--job-id", job, "--json", env=env)
    assert listed.returncode == 0, listed.stderr
    (entry,) = json.loads(listed.stdout)
    record = entry["failure_history"][-1]
    assert record["error_type"] == "MergeConflict"
    assert record["conflicting_files"] == ["shared.txt"]
    assert entry["worktree_artifacts"]["branch_name"] == branch
