"""Production implementations of the environment protocols: real processes, files, git.

Commands run as leaders of their own process group with stdin from /dev/null.  A
timeout or a cancellation sends SIGTERM to the group, waits the grace period, then
sends SIGKILL, so no grandchild outlives its step.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import attrs
import trio
import yaml

from prodigy_core.effects import Print, ReadFile, RunCommand, WriteFile
from prodigy_core.events import (
    CommandFinished,
    CommandNotStarted,
    FileRead,
    FileWriteFailed,
    FileWritten,
)
from prodigy_core.reprs import shows_fields
from prodigy_effects import spawn
from prodigy_effects.env import OutputSink
from prodigy_effects.fsutil import atomic_write_bytes
from prodigy_effects.gitrepo import RealGit as RealGit  # re-exported
from prodigy_effects.journal import JournalWriter
from prodigy_effects.resources import MEMORY_SAMPLE_SECONDS, watch_memory
from prodigy_effects.storage import Storage

OUTPUT_CAP = 10 * 1024 * 1024


PROGRESS_EVERY = 15.0  # seconds between plain progress lines when not on a terminal


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class _Capture:
    """Keeps up to ``OUTPUT_CAP`` bytes: the head and the tail, dropping the middle."""

    def __init__(self) -> None:
        self.head = bytearray()
        self.tail = bytearray()
        self.dropped = 0
        self.partial = b""

    def add(self, data: bytes) -> None:
        half = OUTPUT_CAP // 2
        if len(self.head) < half:
            take = half - len(self.head)
            self.head += data[:take]
            data = data[take:]
        if data:
            self.tail += data
            if len(self.tail) > half:
                extra = len(self.tail) - half
                self.dropped += extra
                del self.tail[:extra]

    def text(self) -> str:
        if self.dropped:
            middle = f"\n…[truncated {self.dropped} bytes]…\n".encode()
            return (bytes(self.head) + middle + bytes(self.tail)).decode("utf-8", "replace")
        return (bytes(self.head) + bytes(self.tail)).decode("utf-8", "replace")


async def _pump(stream: trio.abc.ReceiveStream | None, capture: _Capture, name: str,
                on_output: OutputSink) -> None:
    if stream is None:
        return
    pending = b""
    while True:
        chunk = await stream.receive_some(65536)
        if not chunk:
            break
        capture.add(chunk)
        pending += chunk
        while b"\n" in pending:
            line, pending = pending.split(b"\n", 1)
            on_output(name, line.decode("utf-8", "replace"))
    if pending:
        on_output(name, pending.decode("utf-8", "replace"))


def _killpg(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def _exit_status(returncode: int | None) -> int:
    if returncode is None:
        return -1
    if returncode < 0:
        return 128 + (-returncode)
    return returncode


@shows_fields
@attrs.define(repr=False)
class ProcessRunner:
    """Runs ``RunCommand`` effects as real subprocesses."""

    grace_seconds: float = 5.0
    drain_seconds: float = 2.0
    memory_interval: float = MEMORY_SAMPLE_SECONDS
    hurried: trio.Event = attrs.field(factory=trio.Event)

    def hurry(self) -> None:
        """A second interrupt: stop waiting for processes to end by themselves."""
        self.hurried.set()

    async def run(
        self, effect: RunCommand, cancel: trio.Event, on_output: OutputSink
    ) -> CommandFinished | CommandNotStarted:
        started_at = now_iso()
        start = trio.current_time()
        if not os.path.isdir(effect.cwd):
            return CommandNotStarted(
                command_id=effect.command_id, reason="cwd_missing",
                message=f"working directory does not exist: {effect.cwd}",
                finished_at=now_iso(), monotonic=trio.current_time())
        script_path: str | None = None
        argv = list(effect.argv)
        if effect.script is not None:
            fd, script_path = tempfile.mkstemp(prefix="prodigy-step-", suffix=".sh")
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(effect.script)
            argv = [*argv, script_path]
        try:
            proc = await spawn.open_process(
                argv, cwd=effect.cwd, env=dict(effect.env), stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, process_group=0,
            )
        except OSError as exc:
            if script_path:
                os.unlink(script_path)
            return CommandNotStarted(command_id=effect.command_id, reason="spawn_failed",
                                     message=f"could not start {argv[0]}: {exc}",
                                     finished_at=now_iso(), monotonic=trio.current_time())
        out, err = _Capture(), _Capture()
        timed_out = False
        cancelled = False
        exhausted = ""
        pumps_done = trio.Event()
        try:
            async with trio.open_nursery() as nursery:

                async def pumps() -> None:
                    async with trio.open_nursery() as inner:
                        inner.start_soon(_pump, proc.stdout, out, "stdout", on_output)
                        inner.start_soon(_pump, proc.stderr, err, "stderr", on_output)
                    pumps_done.set()

                nursery.start_soon(pumps)
                stop = trio.CancelScope()
                limit = effect.memory_limit_mb
                watching = trio.CancelScope()
                if limit is not None:

                    async def watch_limit(limit_mb: int) -> None:
                        nonlocal exhausted
                        with watching:
                            exhausted = await watch_memory(proc.pid, limit_mb,
                                                           self.memory_interval)
                            stop.cancel()  # stopped as for a timeout (spec 06 §9.4)

                    nursery.start_soon(watch_limit, limit)

                async def watch_cancel() -> None:
                    nonlocal cancelled
                    await cancel.wait()
                    cancelled = True
                    stop.cancel()

                nursery.start_soon(watch_cancel)
                deadline = float("inf") if effect.timeout is None else start + effect.timeout
                with stop:
                    with trio.move_on_at(deadline) as scope:
                        await proc.wait()
                    if scope.cancelled_caught:
                        timed_out = True
                if proc.returncode is not None:
                    watching.cancel()  # it ended by itself: a left-over child is no reason
                if proc.returncode is None:
                    _killpg(proc.pid, signal.SIGTERM)
                    with trio.move_on_after(self.grace_seconds):
                        while proc.returncode is None and not self.hurried.is_set():
                            with trio.move_on_after(0.05):
                                await proc.wait()
                    if proc.returncode is None:
                        _killpg(proc.pid, signal.SIGKILL)
                        await proc.wait()
                # a background child left behind may hold the pipes open: stop reading
                # after a short while instead of waiting for it
                with trio.move_on_after(self.drain_seconds):
                    await pumps_done.wait()
                nursery.cancel_scope.cancel()
        finally:
            spawn.close_streams(proc)
            if script_path:
                with contextlib.suppress(OSError):
                    os.unlink(script_path)
        end = trio.current_time()
        exit_code = -1 if timed_out or exhausted else _exit_status(proc.returncode)
        return CommandFinished(
            command_id=effect.command_id, exit_code=exit_code, stdout=out.text(),
            stderr=err.text(), timed_out=timed_out, cancelled=cancelled, exhausted=exhausted,
            duration=round(end - start, 6), started_at=started_at, finished_at=now_iso(),
            monotonic=end, truncated=bool(out.dropped or err.dropped),
        )


@shows_fields
@attrs.define(repr=False)
class RealFiles:
    """Performs ``WriteFile`` on the real file system, atomically, and ``ReadFile``."""

    async def write(self, effect: WriteFile) -> FileWritten | FileWriteFailed:
        target = Path(effect.cwd) / effect.path
        content = effect.content
        try:
            if effect.format == "json":
                try:
                    content = json.dumps(json.loads(content), indent=2, ensure_ascii=False) + "\n"
                except ValueError as exc:
                    return _fail(effect, f"content is not valid JSON: {exc}")
            elif effect.format == "yaml":
                try:
                    data = yaml.safe_load(content)
                except yaml.YAMLError as exc:
                    return _fail(effect, f"content is not valid YAML: {exc}")
                content = yaml.safe_dump(data, default_flow_style=False, sort_keys=False,
                                         allow_unicode=True)
            if not target.parent.exists():
                if effect.create_dirs:
                    target.parent.mkdir(parents=True, exist_ok=True)
                else:
                    return _fail(effect, f"parent directory does not exist: {target.parent}"
                                         " (set create_dirs: true)")
            data_bytes = content.encode("utf-8")
            atomic_write_bytes(target, data_bytes, mode=effect.mode)
        except OSError as exc:
            return _fail(effect, f"could not write {effect.path}: {exc.strerror or exc}")
        return FileWritten(command_id=effect.command_id, path=effect.path, size=len(data_bytes),
                           finished_at=now_iso(), monotonic=trio.current_time())


    async def read(self, effect: ReadFile) -> FileRead:
        target = Path(effect.cwd) / effect.path
        try:
            with target.open("rb") as handle:
                data = handle.read(OUTPUT_CAP)
        except OSError as exc:
            return FileRead(command_id=effect.command_id, content=None,
                            message=f"could not read {effect.path}: {exc.strerror or exc}",
                            monotonic=trio.current_time())
        return FileRead(command_id=effect.command_id, content=data.decode("utf-8", "replace"),
                        monotonic=trio.current_time())


def _fail(effect: WriteFile, message: str) -> FileWriteFailed:
    return FileWriteFailed(command_id=effect.command_id, message=message,
                           finished_at=now_iso(), monotonic=trio.current_time())


@shows_fields
@attrs.define(repr=False)
class RealClock:
    def now_iso(self) -> str:
        return now_iso()

    def monotonic(self) -> float:
        return trio.current_time()

    async def sleep(self, seconds: float, cancel: trio.Event) -> None:
        with trio.move_on_after(seconds):
            await cancel.wait()


@shows_fields
@attrs.define(repr=False)
class StorageStore:
    storage: Storage
    session_id: str

    def save_checkpoint(self, doc: dict[str, Any]) -> None:
        self.storage.write_checkpoint(self.session_id, doc)

    def save_session(self, doc: dict[str, Any]) -> None:
        self.storage.write_session(doc)


@shows_fields
@attrs.define(repr=False)
class JournalAdapter:
    writer: JournalWriter
    correlation_id: str
    clock: Callable[[], str] = now_iso

    def append(self, event: dict[str, Any]) -> int:
        import uuid

        return self.writer.append(event, correlation_id=self.correlation_id,
                                  timestamp=self.clock(), event_id=str(uuid.uuid4()))

    def sync(self) -> None:
        self.writer.sync()

    @property
    def last_seq(self) -> int:
        return self.writer.next_seq - 1


@shows_fields
@attrs.define(repr=False)
class TerminalConsole:
    """Renders ``Print`` effects and live output for people (plain lines, masked)."""

    out: TextIO = sys.stdout
    err: TextIO = sys.stderr
    verbosity: int = 0
    quiet: bool = False
    json_mode: bool = False
    mask: Callable[[str], str] = lambda text: text

    def _stream(self, name: str) -> TextIO:
        if name == "err" or self.json_mode:
            return self.err
        return self.out

    status_active: bool = False
    last_progress: float = 0.0

    def _is_tty(self, stream: TextIO) -> bool:
        try:
            return stream.isatty()
        except (AttributeError, ValueError):
            return False

    def _clear_status(self, stream: TextIO) -> None:
        if self.status_active:
            stream.write("\r\x1b[K")
            self.status_active = False

    def show(self, effect: Print) -> None:
        level = effect.level
        if level == "debug" and self.verbosity < 2:
            return
        if level == "verbose" and (self.verbosity >= 1 or self.quiet):
            # with -v the output was streamed live already; -q hides it
            return
        if level == "detail" and (self.verbosity < 1 or self.quiet):
            return
        if level == "info" and self.quiet and effect.stream == "out":
            return
        stream = self._stream(effect.stream)
        if level == "progress":
            if self.quiet or self.json_mode:
                return
            if not self._is_tty(stream) or self.verbosity >= 2:
                # no terminal: a plain line now and then (spec 05 §18)
                now = time.monotonic()
                if now - self.last_progress < PROGRESS_EVERY:
                    return
                self.last_progress = now
                self._clear_status(stream)
                stream.write(self.mask(effect.text) + "\n")
                stream.flush()
                return
            level = "status"
        if level == "status":
            # one live line, rewritten in place; never on a pipe or file (no control
            # characters there), nor with -q, -vv (raw lines) or --json
            if self.quiet or self.verbosity >= 2 or not self._is_tty(stream):
                return
            stream.write("\r\x1b[K" + self.mask(effect.text))
            stream.flush()
            self.status_active = True
            return
        self._clear_status(self.out if self._is_tty(self.out) else stream)
        stream.write(self.mask(effect.text) + "\n")
        stream.flush()

    def output_line(self, display: str, stream: str, line: str) -> None:
        if self.verbosity < 1 or self.quiet:
            return
        target = self.err if self.json_mode else self.out
        target.write("    " + self.mask(line) + "\n")
        target.flush()

    def describe(self, info: Any) -> None:
        return None

    def plan_command(self, effect: RunCommand | WriteFile) -> None:
        return None
