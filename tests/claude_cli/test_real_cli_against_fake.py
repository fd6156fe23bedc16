"""The real Claude Code CLI (`.tools/node_modules/.bin/claude`) against the fake API.

These tests pin down what the CLI really does, so that Prodigy's reading of its stream
(spec 07) is tested against the real thing: the stream messages, tool calls that change the
worktree, API retries, permanent errors, hangs, malformed replies and slash commands.
"""

from __future__ import annotations

import queue
import time
from pathlib import Path

import pytest

from tests.fakeapi import bash, edit, error, hang, malformed, read, reply, text, write
from tests.fakeapi.cli import git, init_git_repo, make_command
from tests.fakeapi.fixtures import FakeAnthropicFixture


@pytest.fixture
def repo(tmp_path: Path, claude_bin: str) -> Path:
    return init_git_repo(tmp_path / "repo")


def test_text_answer_gives_init_assistant_and_result(fake_anthropic: FakeAnthropicFixture,
                                                     repo: Path) -> None:
    fake_anthropic.script(text("Hello from the fake model"))
    run = fake_anthropic.run("Say hello", repo)

    assert run.returncode == 0, run.describe()
    init = run.init
    assert init["cwd"] == str(repo)
    assert init["session_id"] and init["permissionMode"] == "acceptEdits"
    assert {"Bash", "Write", "Edit", "Read"} <= set(init["tools"])
    assert run.assistant_texts == ["Hello from the fake model"]
    result = run.result
    assert result["subtype"] == "success"
    assert result["is_error"] is False
    assert result["result"] == "Hello from the fake model"
    assert result["total_cost_usd"] > 0
    assert result["usage"]["input_tokens"] > 0 and result["usage"]["output_tokens"] > 0
    assert result["num_turns"] == 1
    assert result["session_id"] == init["session_id"]
    assert run.messages[0] is init and run.messages[-1] is result

    # What the CLI sent: a streaming Messages request with tools and our prompt.
    [main] = fake_anthropic.main_requests
    assert main.path == "/v1/messages" and main.json["stream"] is True
    assert "Say hello" in main.last_user_text()
    assert main.headers.get("anthropic-version") == "2023-06-01"
    assert main.headers.get("x-claude-code-session-id") == init["session_id"]
    assert {r.kind for r in fake_anthropic.requests} <= {"main", "probe"}
    assert fake_anthropic.remaining == 0


def test_bash_tool_calls_change_the_worktree_and_commit(fake_anthropic: FakeAnthropicFixture,
                                                        repo: Path) -> None:
    fake_anthropic.script(
        reply("Creating x.txt", bash("echo hi > x.txt", "Write x.txt")),
        bash("git add -A && git commit -q -m x", "Commit"),
        text("Committed x.txt"),
    )
    run = fake_anthropic.run("Create x.txt and commit it", repo)

    assert run.returncode == 0, run.describe()
    assert (repo / "x.txt").read_text() == "hi\n"
    assert git(repo, "log", "-1", "--format=%s").strip() == "x"
    assert git(repo, "show", "--name-only", "--format=", "HEAD").split() == ["x.txt"]
    assert git(repo, "status", "--porcelain") == ""

    uses = run.tool_uses
    assert [u["name"] for u in uses] == ["Bash", "Bash"]
    assert uses[0]["input"]["command"] == "echo hi > x.txt"
    results = run.tool_results
    assert [r["tool_use_id"] for r in results] == [u["id"] for u in uses]
    assert not any(r.get("is_error") for r in results)
    # A message with text and tool_use comes out as one assistant line per content block.
    assert run.assistant_texts == ["Creating x.txt", "Committed x.txt"]
    assert run.result["result"] == "Committed x.txt"
    assert run.result["num_turns"] == 3
    # The tool result went back to the model in the next request.
    second = fake_anthropic.main_requests[1]
    assert second.json["messages"][-1]["content"][0]["tool_use_id"] == uses[0]["id"]


def test_write_read_and_edit_tools(fake_anthropic: FakeAnthropicFixture, repo: Path) -> None:
    target = repo / "notes" / "todo.md"
    fake_anthropic.script(
        write(str(target), "- first item\n"),
        read(str(target)),
        edit(str(target), "first", "only"),
        text("Wrote and edited todo.md"),
    )
    run = fake_anthropic.run("Make a todo list", repo)

    assert run.returncode == 0, run.describe()
    assert target.read_text() == "- only item\n"
    assert [u["name"] for u in run.tool_uses] == ["Write", "Read", "Edit"]
    assert not any(r.get("is_error") for r in run.tool_results)
    assert run.result["is_error"] is False


def test_edit_without_read_is_a_tool_error_not_a_failure(fake_anthropic: FakeAnthropicFixture,
                                                         repo: Path) -> None:
    (repo / "f.txt").write_text("old\n")
    fake_anthropic.script(edit(str(repo / "f.txt"), "old", "new"), text("gave up"))
    run = fake_anthropic.run("Edit f.txt", repo)

    assert run.returncode == 0, run.describe()
    assert (repo / "f.txt").read_text() == "old\n"
    [result] = run.tool_results
    assert result["is_error"] is True
    assert run.result["is_error"] is False and run.result["result"] == "gave up"


@pytest.mark.parametrize(("status", "kind", "retry_after"),
                         [(529, "overloaded", 0), (429, "rate_limit", 1)])
def test_retryable_error_then_success_reports_api_retry(fake_anthropic: FakeAnthropicFixture,
                                                        repo: Path, status: int, kind: str,
                                                        retry_after: float) -> None:
    fake_anthropic.script(error(status, "try again later", retry_after=retry_after),
                          text("Recovered"))
    run = fake_anthropic.run("hi", repo)

    assert run.returncode == 0, run.describe()
    [retry] = run.of_type("system", "api_retry")
    assert retry["attempt"] == 1
    assert retry["max_retries"] == 2  # CLAUDE_CODE_MAX_RETRIES from claude_env
    assert retry["error_status"] == status
    assert retry["error"] == kind
    if retry_after:  # a `retry-after` header sets the delay; without one the CLI backs off
        assert retry["retry_delay_ms"] == retry_after * 1000
    else:
        assert 0 < retry["retry_delay_ms"] < 5000
    assert run.result["is_error"] is False and run.result["result"] == "Recovered"
    assert [r.status for r in fake_anthropic.main_requests] == [status, 200]


def test_retries_exhausted_is_an_error_result_and_exit_1(fake_anthropic: FakeAnthropicFixture,
                                                         repo: Path) -> None:
    fake_anthropic.script(*[error(529, "Overloaded")] * 2, text("never seen"))
    run = fake_anthropic.run("hi", repo, env=fake_anthropic.env(max_retries=1))

    assert run.returncode == 1, run.describe()
    assert [m["attempt"] for m in run.of_type("system", "api_retry")] == [1]
    result = run.result
    assert result["is_error"] is True
    assert result["subtype"] == "success"  # sic: the CLI keeps subtype "success" here
    assert result["api_error_status"] == 529
    assert "529" in result["result"] and "Overloaded" in result["result"]
    # The error text also comes as a synthetic assistant message before the result.
    [synthetic] = [m for m in run.of_type("assistant") if m["message"]["model"] == "<synthetic>"]
    assert synthetic["message"]["content"][0]["text"] == result["result"]
    assert len(fake_anthropic.main_requests) == 2 and fake_anthropic.remaining == 1


def test_authentication_error_fails_after_retries(fake_anthropic: FakeAnthropicFixture,
                                                  repo: Path) -> None:
    # Without `x-should-retry: false` the CLI retries even a 401.
    fake_anthropic.script(*[error(401, "invalid x-api-key")] * 3)
    run = fake_anthropic.run("hi", repo, env=fake_anthropic.env(max_retries=1))

    assert run.returncode == 1, run.describe()
    assert [m["error_status"] for m in run.of_type("system", "api_retry")] == [401]
    assert run.result["is_error"] is True
    assert run.result["api_error_status"] == 401
    assert run.result["result"].startswith("Invalid API key")
    assert run.result["total_cost_usd"] == 0
    assert len(fake_anthropic.main_requests) == 2


def test_permanent_error_is_not_retried(fake_anthropic: FakeAnthropicFixture,
                                        repo: Path) -> None:
    fake_anthropic.script(error(400, "messages.0: unexpected field"), text("never seen"))
    run = fake_anthropic.run("hi", repo)

    assert run.returncode == 1, run.describe()
    assert run.of_type("system", "api_retry") == []
    assert run.result["is_error"] is True
    assert run.result["api_error_status"] == 400
    assert run.result["result"] == "API Error: 400 messages.0: unexpected field"
    assert len(fake_anthropic.main_requests) == 1


def test_hang_leaves_the_cli_silent_until_killed(fake_anthropic: FakeAnthropicFixture,
                                                 repo: Path) -> None:
    fake_anthropic.script(hang(60))
    silence = 4.0
    with fake_anthropic.start("hi", repo) as live:
        init = live.next_message(timeout=30)
        assert (init["type"], init["subtype"]) == ("system", "init")
        fake_anthropic.wait_for(1, timeout=30)
        started = time.monotonic()
        with pytest.raises(queue.Empty):
            line = live.next_line(timeout=silence)
            pytest.fail(f"the CLI printed {line!r} while the API hung")
        assert time.monotonic() - started >= silence - 0.1
        assert live.proc.poll() is None, "the CLI is still waiting on the API"
        code = live.kill()
    assert code != 0
    [request] = fake_anthropic.main_requests
    assert request.answer == "hang(60)"


def test_malformed_stream_then_non_streaming_fallback_fails(
        fake_anthropic: FakeAnthropicFixture, repo: Path) -> None:
    fake_anthropic.script(malformed("garbage"), malformed("garbage"), text("never seen"))
    run = fake_anthropic.run("hi", repo)

    assert run.returncode == 1, run.describe()
    assert run.result["is_error"] is True
    assert "malformed response" in run.result["result"]
    assert "Could not parse message into JSON" in run.stderr
    # After a broken stream the CLI repeats the request without streaming.
    assert [r.json.get("stream") for r in fake_anthropic.main_requests] == [True, None]


def test_truncated_stream_recovers_through_the_non_streaming_fallback(
        fake_anthropic: FakeAnthropicFixture, repo: Path) -> None:
    fake_anthropic.script(malformed("truncated"), text("answer via fallback"))
    run = fake_anthropic.run("hi", repo)

    assert run.returncode == 0, run.describe()
    assert run.result["is_error"] is False
    assert run.result["result"] == "answer via fallback"
    assert [r.json.get("stream") for r in fake_anthropic.main_requests] == [True, None]


def test_slash_command_directives(fake_anthropic: FakeAnthropicFixture, repo: Path) -> None:
    make_command(repo, "make-file", "FAKE: bash echo $ARGUMENTS > out.txt\n")
    run = fake_anthropic.run("/make-file hello", repo)

    assert run.returncode == 0, run.describe()
    assert (repo / "out.txt").read_text() == "hello\n"
    assert run.tool_uses[0]["input"]["command"] == "echo hello > out.txt"
    assert run.result["is_error"] is False
    assert [r.source for r in fake_anthropic.main_requests] == ["directive", "directive"]
    assert "make-file" in run.init["slash_commands"]


def test_slash_command_with_retry_write_edit_and_commit(fake_anthropic: FakeAnthropicFixture,
                                                        repo: Path) -> None:
    make_command(repo, "change", "\n".join([
        "---",
        "description: scripted change",
        "---",
        "FAKE: error 529",
        "FAKE: say Writing $ARGUMENTS",
        "FAKE: write src/$ARGUMENTS.txt version one\\n",
        "FAKE: read src/$ARGUMENTS.txt",
        "FAKE: edit src/$ARGUMENTS.txt one => two",
        "FAKE: bash git add -A && git commit -q -m 'change $ARGUMENTS'",
        "FAKE: say Changed $ARGUMENTS",
        "",
    ]))
    run = fake_anthropic.run("/change widget", repo)

    assert run.returncode == 0, run.describe()
    assert (repo / "src" / "widget.txt").read_text() == "version two\n"
    assert git(repo, "log", "-1", "--format=%s").strip() == "change widget"
    assert [m["error_status"] for m in run.of_type("system", "api_retry")] == [529]
    assert [u["name"] for u in run.tool_uses] == ["Write", "Read", "Edit", "Bash"]
    assert run.assistant_texts == ["Writing widget", "Changed widget"]
    assert run.result["result"] == "Changed widget"
    assert run.result["num_turns"] == 5


def test_prompt_on_stdin_and_model_flag(fake_anthropic: FakeAnthropicFixture,
                                        repo: Path) -> None:
    long_prompt = "-starts with a dash\n" + "context line\n" * 2000
    fake_anthropic.script(text("read it"))
    run = fake_anthropic.run(None, repo, "--model", "haiku", input=long_prompt)

    assert run.returncode == 0, run.describe()
    assert run.result["result"] == "read it"
    [main] = fake_anthropic.main_requests
    assert "haiku" in main.json["model"]
    assert "haiku" in run.init["model"]
    assert "-starts with a dash" in main.last_user_text()
    assert main.last_user_text().count("context line") == 2000
