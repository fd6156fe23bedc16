"""A scripted fake Anthropic Messages API served on 127.0.0.1 for the real `claude` CLI."""

from __future__ import annotations

import contextlib
import hashlib
import json
import socket
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from . import sse
from .scenario import (
    ApiError,
    DirectiveModel,
    Hang,
    Malformed,
    Reply,
    Respond,
    Script,
    Turn,
    prompt_texts,
    text,
)
from .sse import JSON

HIDDEN_HEADERS = frozenset({"x-api-key", "authorization"})
EXHAUSTED_TEXT = "fake-anthropic: nothing scripted for this request"


@dataclass(frozen=True)
class RecordedRequest:
    """One request the server received.

    kind: `main` (a Messages request with tools: the agent conversation), `side` (a Messages
    request without tools: titles, summaries…), `count_tokens`, `probe` (HEAD/GET /), `other`.
    answer: what was sent back, e.g. `reply(text)`, `reply(Bash)`, `error(529)`, `hang(5)`.
    source: `script`, `directive`, `exhausted` (main requests) or `generic`.
    headers: lower-cased names; `x-api-key` and `authorization` are left out.
    """

    time: float
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: Any
    kind: str
    answer: str
    source: str
    status: int

    @property
    def json(self) -> JSON:
        assert isinstance(self.body, dict), f"request body is not a JSON object: {self.body!r}"
        return self.body

    def last_user_text(self) -> str:
        """The text of the last user message (text blocks and tool results)."""
        for message in reversed(self.json.get("messages", [])):
            if message.get("role") == "user":
                return _flatten(message.get("content"))
        return ""


def _flatten(content: Any) -> str:
    if isinstance(content, str):
        return content
    parts: list[str] = []
    for block in content or []:
        if block.get("type") == "text":
            parts.append(block["text"])
        elif block.get("type") == "tool_result":
            parts.append(_flatten(block.get("content")))
    return "\n".join(parts)


class _Server(ThreadingHTTPServer):
    daemon_threads = False  # server_close() joins every handler thread
    block_on_close = True
    allow_reuse_address = True

    def __init__(self, fake: FakeAnthropic) -> None:
        self.fake = fake
        self.stopping = threading.Event()
        self.connections: set[socket.socket] = set()
        self.conn_lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _Handler)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server
    timeout = 30  # an idle keep-alive connection is closed after this many seconds

    # -- plumbing -----------------------------------------------------------------------------

    def handle(self) -> None:
        with self.server.conn_lock:
            self.server.connections.add(self.connection)
        try:
            super().handle()
        except (ConnectionError, TimeoutError, OSError):
            pass
        finally:
            with self.server.conn_lock:
                self.server.connections.discard(self.connection)

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _read_body(self) -> Any:
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b""
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            return raw.decode("utf-8", "replace")

    def _record(self, body: Any, kind: str, answer: str, source: str, status: int) -> None:
        path, _, query = self.path.partition("?")
        headers = {k.lower(): v for k, v in self.headers.items()
                   if k.lower() not in HIDDEN_HEADERS}
        self.server.fake._record(RecordedRequest(time.time(), self.command, path, query, headers,
                                                 body, kind, answer, source, status))

    def _send_json(self, status: int, payload: JSON, extra: dict[str, str] | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.send_header("request-id", sse.new_id("req"))
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _start_stream(self, content_type: str = "text/event-stream; charset=utf-8") -> None:
        self.send_response(200)
        self.send_header("content-type", content_type)
        self.send_header("cache-control", "no-cache")
        self.send_header("transfer-encoding", "chunked")
        self.send_header("request-id", sse.new_id("req"))
        self.end_headers()

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _end_stream(self) -> None:
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    # -- routes -------------------------------------------------------------------------------

    def do_HEAD(self) -> None:
        self._probe()

    def do_GET(self) -> None:
        self._probe()

    def _probe(self) -> None:
        path = self.path.partition("?")[0]
        if path == "/":
            self._record(None, "probe", "ok", "generic", 200)
            self._send_json(200, {"ok": True})
        else:
            self._record(None, "other", "not_found", "generic", 404)
            self._send_json(404, sse.error_json(404, f"fake-anthropic: no route {path}"))

    def do_POST(self) -> None:
        body = self._read_body()
        path = self.path.partition("?")[0]
        if path == "/v1/messages/count_tokens" and isinstance(body, dict):
            self._record(body, "count_tokens", "count", "generic", 200)
            self._send_json(200, {"input_tokens": sse.estimate_tokens(body)})
        elif path == "/v1/messages" and isinstance(body, dict):
            if body.get("tools"):
                self._main(body)
            else:
                self._side(body)
        else:
            self._record(body, "other", "not_found", "generic", 404)
            self._send_json(404, sse.error_json(404, f"fake-anthropic: no route {path}"))

    def _side(self, body: JSON) -> None:
        fake = self.server.fake
        turn = text(fake.side_text)
        self._record(body, "side", turn.describe(), "generic", 200)
        self._serve(turn, body)

    def _main(self, body: JSON) -> None:
        fake = self.server.fake
        turn: Turn | None = fake.current_script.pop()
        source = "script"
        if turn is None:
            turn, found = fake.directives.turn_for(body, _conversation_key(self.headers, body))
            source = "directive" if found else "exhausted"
            if not found:
                turn = text(EXHAUSTED_TEXT)
        while isinstance(turn, Respond):
            turn = turn.fn(body)
        status = turn.status if isinstance(turn, ApiError) else 200
        self._record(body, "main", turn.describe(), source, status)
        self._serve(turn, body)

    # -- answers ------------------------------------------------------------------------------

    def _serve(self, turn: Turn, body: JSON) -> None:
        model = str(body.get("model", "claude-fake"))
        tokens_in = sse.estimate_tokens(body)
        if isinstance(turn, Reply):
            content = list(turn.content)
            tokens_out = max(1, len(json.dumps(content)) // 4)
            stop = turn.resolved_stop_reason()
            if body.get("stream"):
                self._start_stream()
                for event in sse.stream_events(model, content, stop, tokens_in, tokens_out,
                                               self.server.fake.chunk):
                    self._chunk(event)
                self._end_stream()
            else:
                self._send_json(200, sse.message_json(model, content, stop, tokens_in,
                                                      tokens_out))
        elif isinstance(turn, ApiError):
            headers: dict[str, str] = {}
            if turn.retry_after is not None:
                headers["retry-after"] = str(int(turn.retry_after))
                headers["retry-after-ms"] = str(int(turn.retry_after * 1000))
            if turn.should_retry is not None:
                headers["x-should-retry"] = "true" if turn.should_retry else "false"
            self._send_json(turn.status, sse.error_json(turn.status, turn.message,
                                                        turn.error_type), headers)
        elif isinstance(turn, Hang):
            self._start_stream()
            self._chunk(sse.message_start_event(sse.new_id("msg"), model, tokens_in))
            self.server.stopping.wait(turn.seconds)
            self.close_connection = True
        elif isinstance(turn, Malformed):
            self._malformed(turn.kind, model, tokens_in)
        else:  # pragma: no cover - Respond is resolved before
            raise TypeError(f"cannot serve {turn!r}")

    def _malformed(self, kind: str, model: str, tokens_in: int) -> None:
        self.close_connection = True
        if kind == "not_sse":
            data = b"<html><body>502 Bad Gateway (fake)</body></html>"
            self.send_response(200)
            self.send_header("content-type", "text/html")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        self._start_stream()
        if kind == "garbage":
            self._chunk(b"event: message_start\ndata: {this is not json\n\n")
            self._chunk(b"event: content_block_delta\ndata: }}}{{{\n\n")
            self._end_stream()
        else:  # truncated: a stream cut off in the middle of a content block
            self._chunk(sse.message_start_event(sse.new_id("msg"), model, tokens_in))
            self._chunk(sse.event("content_block_start", {
                "type": "content_block_start", "index": 0,
                "content_block": {"type": "text", "text": ""}}))
            self._chunk(sse.event("content_block_delta", {
                "type": "content_block_delta", "index": 0,
                "delta": {"type": "text_delta", "text": "cut off"}}))
            # no terminating chunk: the connection just closes


def _conversation_key(headers: Any, body: JSON) -> str:
    """The CLI session plus the user's prompt (cache_control markers move between requests,
    so only the text counts)."""
    session = str(headers.get("x-claude-code-session-id") or "")
    prompt = "\n".join(prompt_texts(body))
    return session + ":" + hashlib.sha256(prompt.encode()).hexdigest()[:16]


class FakeAnthropic:
    """The fake API server.  Use as a context manager (or `start()` / `stop()`).

    `script(*turns)` sets the turns main-conversation requests consume in order; when none is
    left, the prompt's `FAKE:` directives are followed.  `requests` is the log.
    """

    def __init__(self, *turns: Turn, side_text: str = "Fake side answer", chunk: int = 24
                 ) -> None:
        self.current_script = Script.of(turns)
        self.directives = DirectiveModel()
        self.side_text = side_text
        self.chunk = chunk
        self._requests: list[RecordedRequest] = []
        self._log_lock = threading.Condition()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ----------------------------------------------------------------------------

    @property
    def url(self) -> str:
        assert self._server is not None, "the fake API server is not running"
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> FakeAnthropic:
        assert self._server is None, "already started"
        self._server = _Server(self)
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05},
                                        name="fake-anthropic", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        server.stopping.set()  # wakes hanging answers
        server.shutdown()
        with server.conn_lock:
            connections = list(server.connections)
        for conn in connections:  # unblock handlers waiting on idle keep-alive connections
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        server.server_close()  # joins the handler threads
        thread.join(timeout=10)
        self._server = None
        self._thread = None

    def __enter__(self) -> FakeAnthropic:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- scenario -----------------------------------------------------------------------------

    def script(self, *turns: Turn) -> Script:
        """Replace the script: each main-conversation request consumes the next turn."""
        self.current_script = Script.of(turns)
        return self.current_script

    def add(self, *turns: Turn) -> None:
        """Append turns to the current script."""
        self.current_script.extend(turns)

    @property
    def remaining(self) -> int:
        return self.current_script.remaining

    # -- log ----------------------------------------------------------------------------------

    def _record(self, request: RecordedRequest) -> None:
        with self._log_lock:
            self._requests.append(request)
            self._log_lock.notify_all()

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._log_lock:
            return list(self._requests)

    def of_kind(self, *kinds: str) -> list[RecordedRequest]:
        return [r for r in self.requests if r.kind in kinds]

    @property
    def main_requests(self) -> list[RecordedRequest]:
        return self.of_kind("main")

    def wait_for(self, count: int, kinds: Iterable[str] = ("main",), timeout: float = 30
                 ) -> list[RecordedRequest]:
        """Block until `count` requests of the kinds arrived (or fail after `timeout`)."""
        wanted = set(kinds)
        deadline = time.monotonic() + timeout
        with self._log_lock:
            while True:
                found = [r for r in self._requests if r.kind in wanted]
                if len(found) >= count:
                    return found
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"expected {count} {sorted(wanted)} requests within {timeout}s, got "
                        f"{len(found)}: {[(r.kind, r.answer) for r in self._requests]}")
                self._log_lock.wait(left)

    def summary(self) -> list[tuple[str, str, str, int]]:
        """(kind, path, answer, status) of every request, for assertion messages."""
        return [(r.kind, r.path, r.answer, r.status) for r in self.requests]


@contextlib.contextmanager
def serve(*turns: Turn) -> Iterator[FakeAnthropic]:
    with FakeAnthropic(*turns) as fake:
        yield fake
