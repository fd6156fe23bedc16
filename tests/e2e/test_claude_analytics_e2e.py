"""`prodigy analytics` and `prodigy logs` after a real `claude:` step: the real Claude
Code CLI talking to the scripted fake Anthropic API on 127.0.0.1 (spec 14, spec 08 §2.15)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import Project
from tests.fakeapi.cli import claude_env, find_claude

pytestmark = pytest.mark.e2e


@pytest.fixture
def env(project: Project, fake_anthropic: Any, tmp_path: Path) -> dict[str, str]:
    environment = claude_env(project.env, fake_anthropic.url, home=tmp_path / "claude-home")
    environment["PRODIGY_HOME"] = str(project.home)
    environment["PRODIGY_CLAUDE_PATH"] = find_claude()
    return environment


def test_analytics_and_logs_after_a_claude_step(project: Project, env: dict[str, str]) -> None:
    project.write("wf.yml", "- claude: 'FAKE: bash echo hi > x.txt'\n")
    ran = project.run("run", "wf.yml", env=env, timeout=120)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    # Claude worked in the session worktree; its uncommitted file keeps that worktree
    assert (project.worktree(ran) / "x.txt").read_text().strip() == "hi"
    assert not (project.root / "x.txt").exists()

    out = project.run("analytics", "--json", env=env)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    totals = doc["totals"]
    assert totals["runs"] == 1 and totals["claude_calls"] == 1 and totals["failed_calls"] == 0
    assert totals["total_cost_usd"] > 0 and totals["input_tokens"] > 0
    assert doc["tools"][0]["tool"] == "Bash" and doc["tools"][0]["uses"] == 1
    session = project.sessions()[0]
    assert totals["total_cost_usd"] == pytest.approx(session["analytics"]["total_cost_usd"])

    out = project.run("analytics", "tools", env=env)
    assert out.returncode == 0 and "Bash" in out.stdout and "echo" in out.stdout

    out = project.run("logs", env=env)
    assert out.returncode == 0, out.stderr
    assert session["id"] in out.stdout and "steps[0]" in out.stdout
    assert "success" in out.stdout and "claude-streaming" in out.stdout

    out = project.run("logs", "--latest", env=env)
    assert out.returncode == 0, out.stderr
    assert "🔧 Bash: echo hi > x.txt" in out.stdout and "✅ done in" in out.stdout

    calls = json.loads(project.run("analytics", "sessions", "--json", env=env).stdout)
    assert len(calls) == 1 and calls[0]["claude_session_id"]
    assert calls[0]["claude_log"] and Path(calls[0]["claude_log"]).is_file()
    out = project.run("analytics", "replay", calls[0]["claude_session_id"], env=env)
    assert out.returncode == 0, out.stderr
    entries = [line for line in out.stdout.splitlines() if line.startswith("#")]
    assert "⚙ init" in entries[0] and "🔧 Bash: echo hi > x.txt" in out.stdout
    assert "✅ result: success" in entries[-1]
