"""Step circuit breakers end to end (spec 10 §3, §9 #18): real shell steps, real time.

A failing step retries every second; its breaker opens after two failures and stays
open for 1.5 s, so the third attempt is rejected (E3009) and the fourth runs half-open.
The journal, read back with ``prodigy events ls --json``, shows the transitions.
"""

from __future__ import annotations

import json

import pytest

from tests.e2e.conftest import Project

pytestmark = pytest.mark.e2e

WORKFLOW = """\
- shell: 'echo run >> runs.txt; exit 1'
  retry:
    attempts: 5
    backoff: fixed
    initial_delay: 1s
    circuit_breaker: {name: flaky-api, failure_threshold: 2, recovery_timeout: 1500ms}
- shell: 'touch never'
"""


def test_breaker_opens_rejects_and_half_opens(project: Project) -> None:
    project.write("wf.yml", WORKFLOW)
    out = project.run("run", "wf.yml")
    assert out.returncode == 1
    assert "error[E3009]: Circuit breaker 'flaky-api' is open" in out.stderr
    assert "Circuit breaker 'flaky-api' is open; 'shell: echo run >> runs.txt; exit 1' was " \
        "not started" in out.stderr
    # the steps ran in the session worktree, which the failed run keeps (spec 06 §8.1)
    worktree = project.worktree(out)
    assert worktree.is_dir() and worktree != project.root
    # executions 1, 2 (opens), 4 (half-open, opens again); 3 and 5 rejected
    assert (worktree / "runs.txt").read_text() == "run\n" * 3
    assert not (worktree / "never").exists()
    assert not (project.root / "runs.txt").exists()  # the checkout is untouched

    listed = project.run("events", "ls", "--json")
    assert listed.returncode == 0, listed.stderr
    events = [json.loads(line)["event"] for line in listed.stdout.splitlines()]
    moved = [(e["name"], e["from"], e["to"]) for e in events
             if e["event_type"] == "circuit_breaker_state_changed"]
    assert moved == [("flaky-api", "closed", "open"), ("flaky-api", "open", "half_open"),
                     ("flaky-api", "half_open", "open")]
    retried = [e["error_code"] for e in events if e["event_type"] == "step_retrying"]
    assert retried == ["E3001", "E3001", "E3009", "E3001"]
    (failed,) = [e for e in events if e["event_type"] == "step_failed"]
    assert (failed["error_code"], failed["error_class"]) == ("E3009", "circuit_open")
