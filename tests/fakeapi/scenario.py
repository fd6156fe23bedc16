"""What the fake model answers: scripted turns, and directives read from the prompt.

A *turn* answers one main-conversation request.  Build turns with the factory functions
(`text`, `tool_use`, `bash`, `write`, `edit`, `reply`, `error`, `hang`, `malformed`,
`respond`) and hand them to `FakeAnthropic.script(...)`.

When the script has no turn left, the fake model follows *directives*: lines of the form
`FAKE: <verb> <arguments>` in the user's prompt (after the CLI expanded a slash command).
See README.md for the syntax.
"""

from __future__ import annotations

import json
import re
import shlex
import threading
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeAlias

from .sse import JSON, new_id

# ---------------------------------------------------------------------------------------------
# Turns


@dataclass(frozen=True)
class Reply:
    """A normal assistant message: text and/or tool_use blocks."""

    content: tuple[JSON, ...]
    stop_reason: str | None = None  # None: "tool_use" if a tool is used, else "end_turn"

    def resolved_stop_reason(self) -> str:
        if self.stop_reason is not None:
            return self.stop_reason
        return "tool_use" if any(b["type"] == "tool_use" for b in self.content) else "end_turn"

    def describe(self) -> str:
        parts = [b["name"] if b["type"] == "tool_use" else "text" for b in self.content]
        return "reply(" + ",".join(parts) + ")"


@dataclass(frozen=True)
class ApiError:
    """An HTTP error reply with the API's error JSON body."""

    status: int
    message: str
    error_type: str | None = None
    retry_after: float | None = None  # seconds, sent as `retry-after` / `retry-after-ms`
    should_retry: bool | None = None  # sent as `x-should-retry` when not None

    def describe(self) -> str:
        return f"error({self.status})"


@dataclass(frozen=True)
class Hang:
    """Send the status line, headers and `message_start`, then nothing for `seconds`."""

    seconds: float

    def describe(self) -> str:
        return f"hang({self.seconds})"


@dataclass(frozen=True)
class Malformed:
    """A 200 reply that is not a valid stream.

    kinds: `garbage` (event data that is not JSON), `truncated` (message_start and half a
    content block, then the connection closes), `not_sse` (a text/plain body).
    """

    kind: str = "garbage"

    def describe(self) -> str:
        return f"malformed({self.kind})"


@dataclass(frozen=True)
class Respond:
    """A turn computed from the request body at the time it arrives."""

    fn: Callable[[JSON], Turn]

    def describe(self) -> str:
        return "respond"


Turn: TypeAlias = Reply | ApiError | Hang | Malformed | Respond


def text(message: str) -> Reply:
    """A final text answer (stop_reason `end_turn`)."""
    return Reply(({"type": "text", "text": message},))


def tool_use(name: str, input: JSON, *, id: str | None = None, say: str | None = None) -> Reply:
    """One tool call, optionally preceded by a text block."""
    block: JSON = {"type": "tool_use", "id": id or new_id("toolu"), "name": name, "input": input}
    pre: tuple[JSON, ...] = ({"type": "text", "text": say},) if say else ()
    return Reply((*pre, block))


def bash(command: str, description: str = "Run a scripted command") -> Reply:
    return tool_use("Bash", {"command": command, "description": description})


def write(file_path: str, content: str) -> Reply:
    """A Write tool call.  The CLI wants an absolute `file_path`."""
    return tool_use("Write", {"file_path": file_path, "content": content})


def edit(file_path: str, old_string: str, new_string: str) -> Reply:
    """An Edit tool call.  The CLI refuses to edit a file it has not Read in the session."""
    return tool_use("Edit", {"file_path": file_path, "old_string": old_string,
                             "new_string": new_string})


def read(file_path: str) -> Reply:
    return tool_use("Read", {"file_path": file_path})


def reply(*blocks: str | JSON | Reply, stop_reason: str | None = None) -> Reply:
    """Several blocks in one message; strings are text blocks, Replies are flattened."""
    content: list[JSON] = []
    for block in blocks:
        if isinstance(block, str):
            content.append({"type": "text", "text": block})
        elif isinstance(block, Reply):
            content.extend(block.content)
        else:
            content.append(block)
    return Reply(tuple(content), stop_reason)


def error(status: int, message: str | None = None, *, error_type: str | None = None,
          retry_after: float | None = 0, should_retry: bool | None = None) -> ApiError:
    """An API error.  `retry_after` (default 0 s) makes the CLI's retry immediate."""
    return ApiError(status, message or f"fake error {status}", error_type, retry_after,
                    should_retry)


def hang(seconds: float) -> Hang:
    return Hang(seconds)


def malformed(kind: str = "garbage") -> Malformed:
    if kind not in ("garbage", "truncated", "not_sse"):
        raise ValueError(f"unknown malformed kind {kind!r}")
    return Malformed(kind)


def respond(fn: Callable[[JSON], Turn]) -> Respond:
    return Respond(fn)


# ---------------------------------------------------------------------------------------------
# Script


@dataclass
class Script:
    """Turns consumed in order, one per main-conversation request (thread-safe)."""

    turns: deque[Turn] = field(default_factory=deque)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def of(cls, turns: Iterable[Turn]) -> Script:
        return cls(deque(turns))

    def pop(self) -> Turn | None:
        with self._lock:
            return self.turns.popleft() if self.turns else None

    def extend(self, turns: Iterable[Turn]) -> None:
        with self._lock:
            self.turns.extend(turns)

    @property
    def remaining(self) -> int:
        with self._lock:
            return len(self.turns)


# ---------------------------------------------------------------------------------------------
# Directives

DIRECTIVE = re.compile(r"^\s*FAKE:\s*(?P<verb>[a-z_]+)\b[ \t]?(?P<rest>.*)$", re.MULTILINE)
DEFAULT_FINAL_TEXT = "Done."


def unescape(value: str) -> str:
    r"""Turn `\n`, `\t` and `\\` in a directive argument into the characters."""
    return re.sub(r"\\([nt\\])", lambda m: {"n": "\n", "t": "\t", "\\": "\\"}[m.group(1)], value)


@dataclass(frozen=True)
class Action:
    """One step of a directive program.

    `tool` actions produce one assistant message with a tool_use (texts from preceding
    `say` lines go in the same message); control actions (error/hang/malformed) answer a
    request without adding to the conversation and are used up after `times` requests.
    """

    texts: tuple[str, ...] = ()
    tool: tuple[str, JSON] | None = None
    control: Turn | None = None
    times: int = 1


def prompt_texts(body: JSON) -> list[str]:
    """The user's own text in the conversation: user messages before the first assistant reply,
    excluding `<system-reminder>` context the CLI adds."""
    texts: list[str] = []
    for message in body.get("messages", []):
        role = message.get("role")
        if role == "assistant":
            break
        if role != "user":
            continue
        content = message.get("content")
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content
        for block in blocks or []:
            if block.get("type") == "text" and not block["text"].lstrip().startswith(
                    "<system-reminder>"):
                texts.append(block["text"])
    return texts


def working_directory(body: JSON) -> str | None:
    system = body.get("system")
    joined = system if isinstance(system, str) else "\n".join(
        b.get("text", "") for b in system or [] if isinstance(b, dict))
    found = re.search(r"Primary working directory: (.+)", joined)
    return found.group(1).strip() if found else None


def _absolute(path: str, cwd: str | None) -> str:
    if path.startswith("/") or cwd is None:
        return path
    return f"{cwd.rstrip('/')}/{path}"


def parse_directives(body: JSON) -> list[Action]:
    """The directive program in the request's prompt."""
    cwd = working_directory(body)
    actions: list[Action] = []
    pending: list[str] = []
    for prompt in prompt_texts(body):
        for match in DIRECTIVE.finditer(prompt):
            verb, rest = match.group("verb"), match.group("rest").strip()
            tool: tuple[str, JSON] | None = None
            if verb == "say":
                pending.append(unescape(rest))
                continue
            if verb == "bash":
                tool = ("Bash", {"command": rest, "description": "Run a scripted command"})
            elif verb == "write":
                path, _, content = rest.partition(" ")
                tool = ("Write", {"file_path": _absolute(path, cwd), "content": unescape(content)})
            elif verb == "edit":
                path, _, change = rest.partition(" ")
                old, sep, new = change.partition(" => ")
                if not sep:
                    raise ValueError(f"FAKE: edit needs '<path> <old> => <new>': {rest!r}")
                tool = ("Edit", {"file_path": _absolute(path, cwd), "old_string": unescape(old),
                                 "new_string": unescape(new)})
            elif verb == "read":
                tool = ("Read", {"file_path": _absolute(rest, cwd)})
            elif verb == "tool":
                name, _, raw = rest.partition(" ")
                tool = (name, json.loads(raw) if raw.strip() else {})
            elif verb == "error":
                actions.append(_error_action(rest))
                continue
            elif verb == "hang":
                actions.append(Action(control=Hang(float(rest or "3600"))))
                continue
            elif verb == "malformed":
                actions.append(Action(control=malformed(rest or "garbage")))
                continue
            else:
                raise ValueError(f"unknown FAKE directive {verb!r}")
            actions.append(Action(texts=tuple(pending), tool=tool))
            pending = []
    actions.append(Action(texts=tuple(pending) or (DEFAULT_FINAL_TEXT,)))
    return actions


def _error_action(rest: str) -> Action:
    """`error <status> [x<times>] [message]`."""
    words = shlex.split(rest) if rest else []
    if not words or not words[0].isdigit():
        raise ValueError(f"FAKE: error needs a status: {rest!r}")
    status, times, message = int(words[0]), 1, None
    tail = words[1:]
    if tail and re.fullmatch(r"x\d+", tail[0]):
        times, tail = int(tail[0][1:]), tail[1:]
    if tail:
        message = " ".join(tail)
    return Action(control=error(status, message), times=times)


class DirectiveModel:
    """Answers a request from the directives in its prompt.

    Progress is read from the conversation itself (the number of tool calls already made),
    and control actions are counted per conversation, so the CLI's retries work naturally.
    """

    def __init__(self) -> None:
        self._served: dict[tuple[str, int], int] = {}
        self._lock = threading.Lock()

    def turn_for(self, body: JSON, conversation: str) -> tuple[Turn, bool]:
        """The turn for this request, and whether the prompt had any directive at all."""
        actions = parse_directives(body)
        has_directives = len(actions) > 1 or actions[0].texts != (DEFAULT_FINAL_TEXT,)
        tool_calls_made = sum(
            1
            for message in body.get("messages", [])
            if message.get("role") == "assistant" and isinstance(message.get("content"), list)
            for block in message["content"]
            if block.get("type") == "tool_use"
        )
        seen = 0
        for index, action in enumerate(actions):
            if action.control is not None:
                with self._lock:
                    count = self._served.get((conversation, index), 0)
                    if count < action.times:
                        self._served[(conversation, index)] = count + 1
                        return action.control, has_directives
                continue
            if action.tool is not None:
                if seen < tool_calls_made:
                    seen += 1
                    continue
                name, tool_input = action.tool
                blocks: list[Any] = [*action.texts, tool_use(name, tool_input)]
                return reply(*blocks), has_directives
            return reply(*action.texts), has_directives
        raise AssertionError("a directive program always ends with a final text")
