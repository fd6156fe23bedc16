"""Secrets never leak (spec 11 §9; issue 6 requirement 4).

Workflows print, capture, fail on and pass two secrets around — one from the
environment, one from a file — through shell steps, handlers, retries, a Claude call
(real Claude Code CLI against the fake API, so a transcript is written), goal_seek,
foreach and a MapReduce job whose failing agents land in the DLQ.  Then every file under
the storage root and every output captured (runs, `sessions show`, `events ls`,
`checkpoints show`, `dlq show`, `analytics`) is searched for the values.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import Project
from tests.fakeapi.cli import claude_env, find_claude

pytestmark = pytest.mark.e2e

ENV_SECRET = "envSecret-9f3k2-value"
FILE_SECRET = "fileSecret-q8w7-value"

STANDARD = """\
name: leaky
secrets:
  TOKEN: LEAK_TOKEN
  KEY: {provider: file, key: key.txt}
steps:
  - shell: "echo token=$TOKEN key=${KEY}"
    capture: seen
  - shell: "echo passed ${seen} >&2"
  - shell: "echo failing with $TOKEN >&2; exit 3"
    retry: {attempts: 2, backoff: fixed, initial_delay: 0s}
    on_failure:
      - shell: "echo handler saw ${error.message} ${error.stderr}"
    allow_failure: true
  - claude: "FAKE: say the token is ${TOKEN} and the key is ${KEY}"
  - goal_seek:
      goal: "leak ${KEY}"
      shell: "echo $TOKEN"
      validate: "echo score: 10 $KEY"
      threshold: 90
      max_attempts: 2
  - foreach:
      foreach: ["${TOKEN}", "plain"]
      do:
        - shell: "echo item ${item} $KEY"
  - shell: "echo final ${seen}; echo ${TOKEN} >&2; exit 1"
"""

MAPREDUCE = """\
name: leaky-mr
mode: mapreduce
secrets:
  TOKEN: LEAK_TOKEN
setup:
  - shell: "echo setup $TOKEN"
map:
  input: items.json
  json_path: "$[*]"
  agent_template:
    - shell: "echo agent ${item} $TOKEN; echo $TOKEN >&2; exit 1"
  max_parallel: 2
reduce:
  - shell: "echo reduce ${map.failed} $TOKEN"
error_policy:
  on_item_failure: dlq
  continue_on_failure: true
"""


def _all_text(project: Project) -> list[tuple[Path, str]]:
    return [(p, p.read_text(errors="replace")) for p in project.storage_files()]


def test_secrets_never_reach_output_storage_transcripts_or_the_dlq(
        project: Project, fake_anthropic: Any, tmp_path: Path) -> None:
    env = claude_env(project.env, fake_anthropic.url, home=tmp_path / "claude-home")
    env["PRODIGY_CLAUDE_PATH"] = find_claude()
    env["LEAK_TOKEN"] = ENV_SECRET
    project.write("key.txt", FILE_SECRET + "\n")
    project.write("wf.yml", STANDARD)
    project.write("mr.yml", MAPREDUCE)
    project.write("items.json", json.dumps(["a", "b"]))
    project.commit()
    outputs: list[subprocess.CompletedProcess[str]] = []
    run = project.run("run", "wf.yml", "-vv", "-y", env=env, timeout=240)
    outputs.append(run)
    assert run.returncode == 1, run.stdout + run.stderr
    shown = run.stdout + run.stderr
    assert "***REDACTED***" in shown
    assert "handler saw" in shown and "item plain" in shown  # the steps really ran
    transcripts = [p for p in project.storage_files() if "claude-streaming" in str(p)]
    assert transcripts, "the Claude call wrote no transcript"
    assert any("the token is ***REDACTED***" in p.read_text() for p in transcripts)
    as_json = project.run("run", "wf.yml", "--json", "-y", env=env, timeout=240)
    outputs.append(as_json)
    assert as_json.returncode == 1
    job = project.run("run", "mr.yml", "-v", "-y", env=env, timeout=240)
    outputs.append(job)
    assert job.returncode != 0 or "reduce" in job.stdout
    sessions = json.loads(project.run("sessions", "ls", "--json", env=env).stdout)
    assert sessions
    for doc in sessions:
        outputs.append(project.run("sessions", "show", doc["id"], "--json", env=env))
        outputs.append(project.run("events", "ls", doc["id"], "--json", env=env))
        outputs.append(project.run("checkpoints", "show", doc["id"], env=env))
        outputs.append(project.run("analytics", doc["id"], "--json", env=env))
    dlq = project.run("dlq", "list", "--json", env=env)
    outputs.append(dlq)
    for entry in json.loads(dlq.stdout or "[]"):
        job_id = entry.get("job_id") if isinstance(entry, dict) else None
        if job_id:
            outputs.append(project.run("dlq", "show", job_id, "--json", env=env))
    assert any("/dlq/" in str(p) and "/items/" in str(p) for p in project.storage_files()), \
        "no DLQ entry was written"
    assert len(outputs) > 12 and '"item_id"' in dlq.stdout
    for secret in (ENV_SECRET, FILE_SECRET):
        for out in outputs:
            assert secret not in out.stdout + out.stderr, (out.args, secret)
        for path, text in _all_text(project):
            if "/worktrees/" in str(path) and "/.metadata/" not in str(path):
                continue  # the workflow's own files in its worktree (key.txt is committed)
            assert secret not in text, (path, secret)
