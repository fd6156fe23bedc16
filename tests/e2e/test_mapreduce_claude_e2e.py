"""MapReduce agents with `claude:` steps: the real Claude Code CLI against the scripted fake
Anthropic API on 127.0.0.1 (spec 05 §7, §9, §13; spec 07)."""

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

GOOD = ("a", "b", "c")
# item objects: `do` is the fake model's directive for that agent's Claude call
ITEMS = [{"name": n, "do": f"bash echo {n} > c_{n}.txt && git add -A && git commit -qm claude-{n}"}
         for n in GOOD] + [{"name": "d", "do": "say nothing to commit here"}]


@pytest.fixture
def env(project: Project, fake_anthropic: Any, tmp_path: Path) -> dict[str, str]:
    environment = claude_env(project.env, fake_anthropic.url, home=tmp_path / "claude-home")
    environment["PRODIGY_HOME"] = str(project.home)
    environment["PRODIGY_CLAUDE_PATH"] = find_claude()
    return environment


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True,
                          check=True).stdout.strip()


def test_claude_agents_commit_merge_and_report_cost(project: Project,
                                                    env: dict[str, str]) -> None:
    project.write("items.json", json.dumps({"items": ITEMS}, indent=2) + "\n")
    project.write("mr.yml", """\
name: claude-agents
mode: mapreduce
map:
  input: items.json
  json_path: "$.items[*]"
  max_parallel: 2
  agent_template:
    - claude: "FAKE: ${item.do}"
      commit_required: true
    - shell: "test \\"$(cat c_${item.name}.txt)\\" = ${item.name} && echo checked ${item.name}"
reduce:
  - shell: "echo reduced ${map.successful} of ${map.total}"
""")
    project.commit("items and workflow")
    out = project.run("run", "mr.yml", "-y", "-v", env=env, timeout=180)
    text = out.stdout + out.stderr
    assert out.returncode == 3, text
    assert "reduced 3 of 4" in out.stdout, text
    for name in GOOD:
        assert f"checked {name}" in out.stdout
    assert "checked d" not in out.stdout  # the second step of the failed agent never ran
    assert "Map phase completed: 3 successful, 1 failed (total: 4)" in out.stdout

    # Claude's commits reached the user's checkout, each once
    subjects = git(project.root, "log", "--format=%s").splitlines()
    for name in GOOD:
        assert (project.root / f"c_{name}.txt").read_text() == f"{name}\n"
        assert subjects.count(f"claude-{name}") == 1
    assert not (project.root / "c_d.txt").exists()
    assert git(project.root, "status", "--porcelain") == ""
    assert git(project.root, "branch", "--list", "prodigy-mapreduce-agent-*") == ""

    # the summary shows what the Claude calls cost
    found = re.search(r"^\s*Claude: \$(\d+\.\d\d)$", out.stdout, re.M)
    assert found, out.stdout

    # agent results: a transcript and a cost for every item, Claude ran in all four
    job = re.search(r"Job: (mapreduce-\S+)", out.stdout)
    assert job, out.stdout
    job_dir = project.home / "state" / "repo" / "mapreduce" / "jobs" / job.group(1)
    results = json.loads((job_dir / "map-results.json").read_text())
    assert [r["item_id"] for r in results] == ["item_0", "item_1", "item_2", "item_3"]
    spent: dict[str, float] = {}  # what each agent's Claude call cost, per its transcript
    for result in results:
        log = Path(result["json_log_location"])
        assert log.is_file() and log.parent == project.home / "logs" / "claude-streaming"
        lines = [json.loads(x) for x in log.read_text().splitlines() if x.strip()]
        assert lines[-1]["type"] == "result"
        assert lines[-1]["total_cost_usd"] > 0
        spent[str(log)] = lines[-1]["total_cost_usd"]
    assert len(spent) == 4  # one transcript per agent
    # `cost_usd` is the sum of the agent's Claude costs (spec 05 §9), failed agents included
    for result in results:
        assert result["cost_usd"] == pytest.approx(spent[result["json_log_location"]]), \
            result["item_id"]
    for result in results[:3]:
        assert result["status"] == "Success"
        assert len(result["commits"]) == 1
    assert [r["files_modified"] for r in results[:3]] == [[f"c_{n}.txt"] for n in GOOD]
    assert "Failed" in results[3]["status"]
    # the job's cost counts every Claude call, also the failed agent's
    assert float(found.group(1)) == pytest.approx(sum(spent.values()), abs=0.0051)

    # the item whose Claude call committed nothing is in the DLQ
    listed = project.run("dlq", "list", "--job-id", job.group(1), "--json", env=env)
    assert listed.returncode == 0, listed.stderr
    entries = json.loads(listed.stdout)
    assert [e["item_id"] for e in entries] == ["item_3"]
    entry = entries[0]
    assert entry["item_data"] == ITEMS[3]
    record = entry["failure_history"][-1]
    assert record["error_type"] == "CommitValidationFailed"
    assert "commit_required" in record["error_message"]
    assert record["json_log_location"] == results[3]["json_log_location"]
    assert entry["reprocess_eligible"] is True
