"""Running the Claude Code CLI: stream lines as they arrive, transcript, idle watchdog.

The process is started with an argument vector (never through a shell) as the leader of
a new process group.  Every stdout line is written (masked) to the transcript and handed
to ``on_line`` at once; the interpreter turns it into an event for the core.  Standard
error is collected (the last 1 MiB).  Any output resets the idle timer; when it runs out,
or the step timeout passes, or the run is cancelled, the group gets SIGTERM, a grace
period, then SIGKILL.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import attrs
import trio

from prodigy_core.effects import RunClaude
from prodigy_core.events import ClaudeFinished
from prodigy_core.reprs import shows_fields, value_class
from prodigy_effects import spawn
from prodigy_effects.resources import MEMORY_SAMPLE_SECONDS, watch_memory

STDERR_LIMIT = 1024 * 1024


@value_class
@attrs.frozen(kw_only=True, repr=False, eq=False)
class ClaudeProcessResult:
    exit_code: int
    stderr: str = ""
    timed_out: bool = False
    idle: bool = False
    cancelled: bool = False
    not_started: str | None = None
    exhausted: str = ""
    duration: float = 0.0
    monotonic: float = 0.0
    started_at: str = ""
    finished_at: str = ""


def transcript_path(directory: Path, now: datetime | None = None) -> Path:
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    return directory / f"{moment.strftime('%Y%m%d_%H%M%S')}-{uuid.uuid4()}.jsonl"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def resolve_executable(executable: str, env: dict[str, str]) -> str | None:
    if os.sep in executable:
        return executable if os.access(executable, os.X_OK) and os.path.isfile(executable) \
            else None
    return shutil.which(executable, path=env.get("PATH"))


@shows_fields
@attrs.define(repr=False)
class ClaudeProcessRunner:
    grace_seconds: float = 5.0
    memory_interval: float = MEMORY_SAMPLE_SECONDS
    hurried: trio.Event = attrs.field(factory=trio.Event)

    def hurry(self) -> None:
        self.hurried.set()

    async def run(
        self,
        *,
        argv: tuple[str, ...],
        stdin: str | None,
        cwd: str,
        env: dict[str, str],
        timeout: float | None,
        idle_timeout: float | None,
        transcript: Path,
        mask: Callable[[str], str],
        cancel: trio.Event,
        on_line: Callable[[str], None],
        prompt_note: str | None = None,
        memory_limit_mb: int | None = None,
    ) -> ClaudeProcessResult:
        started_at = _now()
        start = trio.current_time()
        exe = resolve_executable(argv[0], env)
        if exe is None:
            return ClaudeProcessResult(exit_code=-1, not_started="not found or not executable",
                                       started_at=started_at, finished_at=_now(),
                                       monotonic=trio.current_time())
        if not os.path.isdir(cwd):
            return ClaudeProcessResult(exit_code=-1,
                                       not_started=f"working directory {cwd} does not exist",
                                       started_at=started_at, finished_at=_now(),
                                       monotonic=trio.current_time())
        transcript.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(transcript, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        log = os.fdopen(fd, "w", encoding="utf-8", buffering=1)
        if prompt_note is not None:
            log.write(prompt_note + "\n")
        try:
            proc = await spawn.open_process(
                [exe, *argv[1:]], cwd=cwd, env=env,
                stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, process_group=0,
            )
        except OSError as exc:
            log.close()
            return ClaudeProcessResult(exit_code=-1, not_started=str(exc.strerror or exc),
                                       started_at=started_at, finished_at=_now(),
                                       monotonic=trio.current_time())
        err_buf = bytearray()
        last_output = trio.current_time()
        idle = timed_out = cancelled = False
        exhausted = ""
        done = trio.Event()

        async def feed_stdin() -> None:
            if proc.stdin is None or stdin is None:
                return
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await proc.stdin.send_all(stdin.encode("utf-8"))
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await proc.stdin.aclose()

        async def read_stdout() -> None:
            nonlocal last_output
            assert proc.stdout is not None
            pending = b""
            while True:
                chunk = await proc.stdout.receive_some(65536)
                if not chunk:
                    break
                last_output = trio.current_time()
                pending += chunk
                while b"\n" in pending:
                    raw, pending = pending.split(b"\n", 1)
                    line = raw.decode("utf-8", "replace").rstrip("\r")
                    log.write(mask(line) + "\n")
                    on_line(line)
            if pending:
                line = pending.decode("utf-8", "replace")
                log.write(mask(line) + "\n")
                on_line(line)

        async def read_stderr() -> None:
            nonlocal last_output
            assert proc.stderr is not None
            while True:
                chunk = await proc.stderr.receive_some(65536)
                if not chunk:
                    break
                last_output = trio.current_time()
                err_buf.extend(chunk)
                if len(err_buf) > STDERR_LIMIT:
                    del err_buf[: len(err_buf) - STDERR_LIMIT]

        watch_scope = trio.CancelScope()

        async def watch() -> None:
            with watch_scope:
                await _watch()

        async def _watch() -> None:
            nonlocal idle, timed_out, cancelled
            deadline = float("inf") if timeout is None else start + timeout
            while not done.is_set():
                now = trio.current_time()
                if cancel.is_set():
                    cancelled = True
                    break
                if now >= deadline:
                    timed_out = True
                    break
                if idle_timeout and now - last_output >= idle_timeout:
                    idle = True
                    break
                if exhausted:
                    break
                wake = min(deadline, last_output + idle_timeout if idle_timeout else deadline,
                           now + 0.25)
                with trio.move_on_at(wake):
                    await cancel.wait()
            if not done.is_set():
                _killpg(proc.pid, signal.SIGTERM)
                with trio.move_on_after(self.grace_seconds):
                    while not done.is_set() and not self.hurried.is_set():
                        with trio.move_on_after(0.05):
                            await done.wait()
                if not done.is_set():
                    _killpg(proc.pid, signal.SIGKILL)

        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(feed_stdin)
                nursery.start_soon(watch)
                watching = trio.CancelScope()
                if memory_limit_mb is not None:

                    async def watch_limit(limit_mb: int) -> None:
                        nonlocal exhausted
                        with watching:
                            exhausted = await watch_memory(proc.pid, limit_mb,
                                                           self.memory_interval)

                    nursery.start_soon(watch_limit, memory_limit_mb)
                readers_done = trio.Event()

                async def readers() -> None:
                    async with trio.open_nursery() as inner:
                        inner.start_soon(read_stdout)
                        inner.start_soon(read_stderr)
                    readers_done.set()

                async with trio.open_nursery() as reading:
                    reading.start_soon(readers)
                    await proc.wait()
                    if not exhausted:
                        watching.cancel()  # it has ended: nothing left to watch
                    # a background child may keep the pipes open: stop reading soon after
                    with trio.move_on_after(2.0):
                        await readers_done.wait()
                    reading.cancel_scope.cancel()
                done.set()
                watch_scope.cancel()  # the process is gone: nothing left to watch
                nursery.cancel_scope.cancel()
        finally:
            log.close()
            spawn.close_streams(proc)
        end = trio.current_time()
        code = proc.returncode if proc.returncode is not None else -1
        if code < 0:
            code = 128 - code
        return ClaudeProcessResult(
            exit_code=-1 if timed_out or exhausted else code,
            stderr=err_buf.decode("utf-8", "replace"), timed_out=timed_out, idle=idle,
            cancelled=cancelled, exhausted=exhausted, duration=round(end - start, 6), monotonic=end,
            started_at=started_at, finished_at=_now(),
        )


def _killpg(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


@shows_fields
@attrs.define(repr=False)
class ClaudeEffectRunner:
    """Performs ``RunClaude`` with the real CLI; transcripts go under ``directory``."""

    directory: Path
    mask: Callable[[str], str] = attrs.field(default=lambda text: text)
    process: ClaudeProcessRunner = attrs.field(factory=ClaudeProcessRunner)

    def hurry(self) -> None:
        self.process.hurry()

    async def run(self, effect: RunClaude, cancel: trio.Event,
                  on_line: Callable[[str], None]) -> ClaudeFinished:
        path = transcript_path(self.directory)
        note = None
        if effect.stdin is not None:
            digest = hashlib.sha256(effect.stdin.encode("utf-8")).hexdigest()
            note = json.dumps({"type": "prodigy_prompt",
                               "bytes": len(effect.stdin.encode("utf-8")), "sha256": digest})
        result = await self.process.run(
            argv=effect.argv, stdin=effect.stdin, cwd=effect.cwd, env=dict(effect.env),
            timeout=effect.timeout, idle_timeout=effect.idle_timeout, transcript=path,
            mask=self.mask, cancel=cancel, on_line=on_line, prompt_note=note,
            memory_limit_mb=effect.memory_limit_mb,
        )
        return ClaudeFinished(
            command_id=effect.command_id, exit_code=result.exit_code, stderr=result.stderr,
            timed_out=result.timed_out, idle=result.idle, cancelled=result.cancelled,
            not_started=result.not_started, exhausted=result.exhausted,
            transcript=str(path), duration=result.duration,
            started_at=result.started_at, finished_at=result.finished_at,
            monotonic=result.monotonic,
        )
