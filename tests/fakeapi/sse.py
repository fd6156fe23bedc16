"""Wire format of the Anthropic Messages API: message JSON and server-sent events."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

JSON = dict[str, Any]

# Error type the real API uses for each HTTP status.
ERROR_TYPES: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}


def new_id(prefix: str) -> str:
    return f"{prefix}_fake{uuid.uuid4().hex[:20]}"


def estimate_tokens(body: JSON) -> int:
    """A cheap, deterministic stand-in for the tokenizer (about 4 characters a token)."""
    size = len(json.dumps(body.get("messages", []))) + len(json.dumps(body.get("system", "")))
    return max(1, size // 4)


def usage(input_tokens: int, output_tokens: int) -> JSON:
    return {
        "input_tokens": input_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "output_tokens": output_tokens,
        "service_tier": "standard",
    }


def message_json(model: str, content: list[JSON], stop_reason: str,
                 input_tokens: int, output_tokens: int) -> JSON:
    """A complete (non-streaming) Messages API reply."""
    return {
        "id": new_id("msg"),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": usage(input_tokens, output_tokens),
    }


def error_json(status: int, message: str, error_type: str | None = None) -> JSON:
    return {
        "type": "error",
        "error": {"type": error_type or ERROR_TYPES.get(status, "api_error"), "message": message},
        "request_id": new_id("req"),
    }


def event(name: str, data: JSON) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()


def _chunks(text: str, size: int) -> Iterator[str]:
    for start in range(0, len(text), size):
        yield text[start:start + size]


def message_start_event(message_id: str, model: str, input_tokens: int) -> bytes:
    return event("message_start", {
        "type": "message_start",
        "message": {
            "id": message_id, "type": "message", "role": "assistant", "model": model,
            "content": [], "stop_reason": None, "stop_sequence": None,
            "usage": usage(input_tokens, 1),
        },
    })


def ping_event() -> bytes:
    return event("ping", {"type": "ping"})


def stream_events(model: str, content: list[JSON], stop_reason: str,
                  input_tokens: int, output_tokens: int, chunk: int = 24) -> Iterator[bytes]:
    """The full SSE sequence the real API sends for one message, deltas split into chunks."""
    yield message_start_event(new_id("msg"), model, input_tokens)
    yield ping_event()
    for index, block in enumerate(content):
        if block["type"] == "text":
            yield event("content_block_start", {
                "type": "content_block_start", "index": index,
                "content_block": {"type": "text", "text": ""}})
            for part in _chunks(block["text"], chunk):
                yield event("content_block_delta", {
                    "type": "content_block_delta", "index": index,
                    "delta": {"type": "text_delta", "text": part}})
        elif block["type"] == "tool_use":
            yield event("content_block_start", {
                "type": "content_block_start", "index": index,
                "content_block": {"type": "tool_use", "id": block["id"], "name": block["name"],
                                  "input": {}}})
            for part in _chunks(json.dumps(block["input"]), chunk):
                yield event("content_block_delta", {
                    "type": "content_block_delta", "index": index,
                    "delta": {"type": "input_json_delta", "partial_json": part}})
        else:
            raise ValueError(f"unsupported content block type {block['type']!r}")
        yield event("content_block_stop", {"type": "content_block_stop", "index": index})
    yield event("message_delta", {
        "type": "message_delta",
        "delta": {"stop_reason": stop_reason, "stop_sequence": None},
        "usage": {"output_tokens": output_tokens},
    })
    yield event("message_stop", {"type": "message_stop"})
