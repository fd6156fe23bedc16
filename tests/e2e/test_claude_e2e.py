"""`claude:` steps end to end: `prodigy run` drives the real Claude Code CLI against the
scripted fake Anthropic API served by the test suite on 127.0.0.1."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import Project
from tests.fakeapi import error, hang, text
from tests.fakeapi.cli import claude_env, find_claude

pytestmark = pytest.mark.e2e


@pytest.fixture
def env(project: Project, fake_anthropic: Any, tmp_path: Path) -> dict[str, str]:
    environment = claude_env(project.env, fake_anthropic.url, home=tmp_path / "claude-home")
    environment["PRODIGY_HOME"] = str(project.home)
    environment["PRODIGY_CLAUDE_PATH"] = find_claude()
    return environment


def events(project: Project, env: dict[str, str]) -> list[dict[str, Any]]:
    sid = project.sessions()[0]["id"]
    out = project.run("events", "ls", "--job-id", sid, "--json", "--limit", "0", env=env)
    return [json.loads(line)["event"] for line in out.stdout.splitlines()]


def test_slash_command_runs_tools_and_sets_claude_variables(project: Project,
                                                             env: dict[str, str]) -> None:
    project.write(".claude/commands/make-file.md",
                  "Make the file.\nFAKE: bash echo $ARGUMENTS > out.txt\nFAKE: say made it\n")
    project.commit("commands")
    project.write("wf.yml", "- claude: '/make-file hello'\n  capture: said\n"
                            "- shell: \"echo got ${said} ${claude.session_id:-none}\"\n")
    out = project.run("run", "wf.yml", "-v", env=env, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    # the committed command file is in the session worktree, where Claude ran
    assert (project.worktree(out) / "out.txt").read_text().strip() == "hello"
    assert "got made it" in out.stdout and "got made it none" not in out.stdout
    assert "🔧 Bash: echo hello > out.txt" in out.stdout
    assert "Claude: 1 calls" in out.stdout
    kinds = [e["event_type"] for e in events(project, env)]
    for kind in ("claude_session_started", "claude_tool_invoked", "claude_token_usage",
                 "claude_call_completed"):
        assert kind in kinds
    tool = next(e for e in events(project, env) if e["event_type"] == "claude_tool_invoked")
    assert tool["tool_name"] == "Bash"
    session = project.sessions()[0]
    assert session["analytics"]["claude_calls"] == 1
    assert session["analytics"]["tool_uses"] == {"Bash": 1}
    transcripts = list((project.home / "logs" / "claude-streaming").glob("*.jsonl"))
    assert len(transcripts) == 1
    lines = [json.loads(x) for x in transcripts[0].read_text().splitlines()]
    assert lines[0]["type"] == "system" and lines[-1]["type"] == "result"


def test_commit_required_with_claude(project: Project, env: dict[str, str]) -> None:
    project.write("wf.yml", "- claude: 'FAKE: bash echo a > a.txt && git add a.txt && "
                            "git commit -qm from-claude'\n  commit_required: true\n"
                            "- claude: 'FAKE: say nothing to commit'\n  commit_required: true\n")
    out = project.run("run", "wf.yml", env=env, timeout=120)
    assert out.returncode == 1
    # Claude's commit is on the session branch; the failed run merged nothing
    log = project.git("log", "--format=%s", cwd=project.worktree(out)).split()
    assert log[:2] == ["from-claude", "init"]
    assert project.git("log", "--format=%s").split() == ["init"]
    assert "has commit_required=true but no commits were created" in out.stderr
    assert "Transcript: " in out.stderr


def test_fix_loop_with_a_claude_handler(project: Project, env: dict[str, str]) -> None:
    project.write("wf.yml", "- shell: 'test -f fixed'\n  on_failure:\n"
                            "    claude: 'FAKE: bash touch fixed'\n    max_attempts: 3\n")
    out = project.run("run", "wf.yml", env=env, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Attempt 1/3 failed; running on_failure handler" in out.stdout
    assert (project.worktree(out) / "fixed").exists()


def test_an_api_error_fails_the_step_and_keeps_the_transcript(
    project: Project, env: dict[str, str], fake_anthropic: Any
) -> None:
    fake_anthropic.script(error(400, "bad request from the fake"))
    project.write("wf.yml", "- claude: 'do something'\n")
    out = project.run("run", "wf.yml", env=env, timeout=120)
    assert out.returncode == 1
    assert "E7002" in out.stderr or "E7003" in out.stderr
    transcript = out.stderr.split("Transcript: ", 1)[1].split()[0]
    assert Path(transcript).exists()


def test_idle_watchdog_stops_a_hung_call(project: Project, env: dict[str, str],
                                         fake_anthropic: Any) -> None:
    fake_anthropic.script(hang(60))
    project.write("wf.yml", "- claude: 'hang please'\n")
    out = project.run("run", "wf.yml", env={**env, "PRODIGY_CLAUDE_IDLE_TIMEOUT": "3"},
                      timeout=120)
    assert out.returncode == 1
    assert "E7005" in out.stderr and "no output for 3 seconds" in out.stderr


def test_secrets_are_masked_in_transcripts(project: Project, env: dict[str, str]) -> None:
    secret = "tok-9f8e7d6c5b4a"
    project.write("wf.yml", "secrets:\n  API_TOKEN: MY_TOKEN\nsteps:\n"
                            "  - claude: 'FAKE: say the token is ${API_TOKEN}'\n")
    out = project.run("run", "wf.yml", env={**env, "MY_TOKEN": secret}, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    transcripts = list((project.home / "logs" / "claude-streaming").glob("*.jsonl"))
    assert transcripts and "***REDACTED***" in transcripts[0].read_text()
    for path in project.storage_files():
        assert secret not in path.read_text(errors="replace"), path
    assert secret not in out.stdout + out.stderr


def test_api_retries_are_understood(project: Project, env: dict[str, str],
                                    fake_anthropic: Any) -> None:
    fake_anthropic.script(error(529, "Overloaded"), text("fine after a retry"))
    project.write("wf.yml", "- claude: 'anything'\n  capture: answer\n"
                            "- shell: \"echo answer=${answer}\"\n")
    out = project.run("run", "wf.yml", env=env, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "answer=fine after a retry" in out.stdout
    retry = [e for e in events(project, env) if e["event_type"] == "claude_api_retry"]
    assert retry and retry[0]["error_status"] == 529


def test_huge_and_dash_prompts_go_through_stdin(project: Project, env: dict[str, str],
                                                fake_anthropic: Any) -> None:
    fake_anthropic.script(text("read it all"), text("dash ok"))
    project.write("wf.yml", "- shell: \"head -c 1000000 /dev/zero | tr '\\\\0' a\"\n"
                            "  capture: big\n"
                            "- claude: '${big}'\n"
                            "- claude: '-starts-with-a-dash'\n")
    out = project.run("run", "wf.yml", env=env, timeout=180)
    assert out.returncode == 0, out.stdout + out.stderr
    first = fake_anthropic.main_requests[0].body["messages"]
    assert "a" * 1000 in json.dumps(first)
    notes = []
    for path in (project.home / "logs" / "claude-streaming").glob("*.jsonl"):
        head = json.loads(path.read_text().splitlines()[0])
        if head.get("type") == "prodigy_prompt":
            notes.append(head["bytes"])
    assert sorted(notes) == [len("-starts-with-a-dash"), 1_000_000]
