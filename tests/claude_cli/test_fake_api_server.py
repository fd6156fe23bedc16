"""The fake Anthropic API server on its own (plain HTTP clients, no CLI)."""

from __future__ import annotations

import http.client
import json
import threading
import time
from typing import Any

import pytest

from tests.fakeapi import FakeAnthropic, bash, error, hang, malformed, reply, text
from tests.fakeapi.scenario import DirectiveModel, parse_directives

TOOLS = [{"name": "Bash", "description": "run", "input_schema": {"type": "object"}}]


def post(url: str, path: str, body: dict[str, Any], timeout: float = 10
         ) -> tuple[int, dict[str, str], bytes]:
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        conn.request("POST", path, json.dumps(body), {"content-type": "application/json",
                                                      "x-api-key": "sk-test-dummy"})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def sse_events(raw: bytes) -> list[tuple[str, dict[str, Any]]]:
    events = []
    for frame in raw.decode().split("\n\n"):
        if not frame.strip():
            continue
        fields = dict(line.split(": ", 1) for line in frame.splitlines())
        events.append((fields["event"], json.loads(fields["data"])))
    return events


def messages_body(prompt: str, *, stream: bool, tools: bool = True) -> dict[str, Any]:
    body: dict[str, Any] = {"model": "claude-test", "max_tokens": 100, "stream": stream,
                            "messages": [{"role": "user", "content": prompt}]}
    if tools:
        body["tools"] = TOOLS
    return body


def test_count_tokens_is_answered_and_recorded() -> None:
    with FakeAnthropic() as fake:
        status, _, data = post(fake.url, "/v1/messages/count_tokens?beta=true",
                               messages_body("count these words please", stream=False))
        assert status == 200
        assert json.loads(data)["input_tokens"] > 0
        [request] = fake.requests
        assert (request.kind, request.path, request.query) == (
            "count_tokens", "/v1/messages/count_tokens", "beta=true")
        assert "x-api-key" not in {k.lower() for k in request.headers}


def test_streaming_reply_is_the_messages_api_event_sequence() -> None:
    command = "echo " + "long text " * 10 + "> x.txt"
    with FakeAnthropic(reply("Running it.", bash(command))) as fake:
        status, headers, data = post(fake.url, "/v1/messages", messages_body("go", stream=True))
    assert status == 200
    assert headers["content-type"].startswith("text/event-stream")
    events = sse_events(data)
    names = [name for name, _ in events]
    assert names[:2] == ["message_start", "ping"]
    assert names[-2:] == ["message_delta", "message_stop"]
    assert all(name == data["type"] for name, data in events)
    starts = [d["content_block"] for n, d in events if n == "content_block_start"]
    assert [b["type"] for b in starts] == ["text", "tool_use"]
    assert starts[1]["name"] == "Bash" and starts[1]["id"].startswith("toolu_")
    deltas = [d for n, d in events if n == "content_block_delta"]
    text_out = "".join(d["delta"]["text"] for d in deltas if d["index"] == 0)
    json_parts = [d["delta"]["partial_json"] for d in deltas if d["index"] == 1]
    assert {d["delta"]["type"] for d in deltas if d["index"] == 1} == {"input_json_delta"}
    assert len(json_parts) > 1, "tool input is streamed in several input_json_delta chunks"
    assert text_out == "Running it."
    assert json.loads("".join(json_parts))["command"] == command
    assert names.count("content_block_stop") == 2
    message_delta = next(d for n, d in events if n == "message_delta")
    assert message_delta["delta"]["stop_reason"] == "tool_use"
    assert message_delta["usage"]["output_tokens"] > 0


def test_non_streaming_reply_is_one_message_object() -> None:
    with FakeAnthropic(text("plain answer")) as fake:
        status, _, data = post(fake.url, "/v1/messages", messages_body("q", stream=False))
    message = json.loads(data)
    assert status == 200
    assert message["type"] == "message" and message["role"] == "assistant"
    assert message["content"] == [{"type": "text", "text": "plain answer"}]
    assert message["stop_reason"] == "end_turn"
    assert message["usage"]["input_tokens"] > 0


def test_side_requests_do_not_consume_the_script() -> None:
    with FakeAnthropic(text("main answer")) as fake:
        _, _, data = post(fake.url, "/v1/messages",
                          messages_body("title?", stream=False, tools=False))
        assert json.loads(data)["content"][0]["text"] == fake.side_text
        assert fake.remaining == 1
        _, _, data = post(fake.url, "/v1/messages", messages_body("q", stream=False))
        assert json.loads(data)["content"][0]["text"] == "main answer"
        assert [r.kind for r in fake.requests] == ["side", "main"]
        assert [r.source for r in fake.requests] == ["generic", "script"]


@pytest.mark.parametrize(("status", "error_type"), [
    (429, "rate_limit_error"), (529, "overloaded_error"), (500, "api_error"),
    (401, "authentication_error")])
def test_error_replies_carry_the_api_error_body(status: int, error_type: str) -> None:
    with FakeAnthropic(error(status, "scripted failure", retry_after=2)) as fake:
        got, headers, data = post(fake.url, "/v1/messages", messages_body("q", stream=True))
    assert got == status
    assert json.loads(data)["error"] == {"type": error_type, "message": "scripted failure"}
    assert headers["retry-after"] == "2" and headers["retry-after-ms"] == "2000"


def test_malformed_stream_is_not_json() -> None:
    with FakeAnthropic(malformed()) as fake:
        status, _, data = post(fake.url, "/v1/messages", messages_body("q", stream=True))
    assert status == 200
    with pytest.raises(ValueError):
        sse_events(data)


def test_unknown_routes_get_404_and_the_root_probe_200() -> None:
    with FakeAnthropic() as fake:
        status, _, data = post(fake.url, "/v1/unknown", {"x": 1})
        assert status == 404 and json.loads(data)["type"] == "error"
        host, port = fake.url.removeprefix("http://").split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=5)
        conn.request("HEAD", "/")
        assert conn.getresponse().status == 200
        conn.close()
        assert [r.kind for r in fake.requests] == ["other", "probe"]


def test_stop_ends_a_hanging_answer_and_joins_every_thread() -> None:
    before = set(threading.enumerate())
    fake = FakeAnthropic(hang(120)).start()
    outcome: list[object] = []

    def client() -> None:
        try:
            outcome.append(post(fake.url, "/v1/messages", messages_body("q", stream=True),
                                timeout=30))
        except Exception as exc:
            outcome.append(exc)

    thread = threading.Thread(target=client)
    thread.start()
    fake.wait_for(1, timeout=10)
    started = time.monotonic()
    fake.stop()
    thread.join(timeout=10)
    assert time.monotonic() - started < 5
    assert not thread.is_alive() and outcome
    assert set(threading.enumerate()) <= before


def test_directives_are_read_from_the_prompt_and_advance_with_the_conversation() -> None:
    prompt = ("<command-args>x</command-args>\n"
              "FAKE: say first\nFAKE: bash echo hi > a.txt\nFAKE: error 529 x2 busy\n"
              "FAKE: write b.txt one\\ntwo\nFAKE: say bye\n")
    body: dict[str, Any] = {
        "system": [{"type": "text", "text": " - Primary working directory: /repo\n"}],
        "messages": [{"role": "user", "content": [
            {"type": "text", "text": "<system-reminder>\nFAKE: bash ignored\n</system-reminder>"},
            {"type": "text", "text": prompt}]}]}
    actions = parse_directives(body)
    assert [a.tool[0] if a.tool else type(a.control).__name__ if a.control else "final"
            for a in actions] == ["Bash", "ApiError", "Write", "final"]
    assert actions[0].texts == ("first",)
    assert actions[2].tool == ("Write", {"file_path": "/repo/b.txt", "content": "one\ntwo"})
    assert actions[3].texts == ("bye",)

    model = DirectiveModel()
    turn, found = model.turn_for(body, "s")
    assert found and turn.describe() == "reply(text,Bash)"
    body["messages"] += [
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "Bash",
                                           "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1",
                                      "content": ""}]}]
    assert [model.turn_for(body, "s")[0].describe() for _ in range(3)] == [
        "error(529)", "error(529)", "reply(Write)"]
    body["messages"] += [
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t2", "name": "Write",
                                           "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t2",
                                      "content": ""}]}]
    final, _ = model.turn_for(body, "s")
    assert final == text("bye")


def test_an_exhausted_script_without_directives_says_so() -> None:
    with FakeAnthropic() as fake:
        _, _, data = post(fake.url, "/v1/messages", messages_body("no directives", stream=False))
        assert "nothing scripted" in json.loads(data)["content"][0]["text"]
        assert fake.requests[0].source == "exhausted"
