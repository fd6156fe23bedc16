"""The Claude process runner with small stub executables (the real CLI is tested end to end)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import trio

from prodigy_effects.claude_runner import ClaudeProcessRunner


def stub(tmp_path: Path, body: str) -> str:
    path = tmp_path / "claude-stub"
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return str(path)


async def run(tmp_path: Path, body: str, **kw: object) -> tuple[object, list[str], Path]:
    lines: list[str] = []
    transcript = tmp_path / "logs" / "t.jsonl"
    result = await ClaudeProcessRunner(grace_seconds=1.0).run(
        argv=(stub(tmp_path, body), "-p", "x"), stdin=kw.get("stdin"),  # type: ignore[arg-type]
        cwd=str(tmp_path), env=dict(os.environ), timeout=kw.get("timeout"),  # type: ignore[arg-type]
        idle_timeout=kw.get("idle"), transcript=transcript,  # type: ignore[arg-type]
        mask=lambda t: t.replace("s3cret", "***REDACTED***"), cancel=trio.Event(),
        on_line=lines.append,
    )
    return result, lines, transcript


async def test_lines_arrive_and_are_kept_in_the_transcript(tmp_path: Path) -> None:
    body = 'echo \'{"type":"system","subtype":"init"}\'\necho \'{"note":"s3cret"}\'\necho oops >&2\n'
    result, lines, transcript = await run(tmp_path, body)
    assert result.exit_code == 0 and "oops" in result.stderr  # type: ignore[attr-defined]
    assert json.loads(lines[0])["subtype"] == "init"
    text = transcript.read_text()
    assert "s3cret" not in text and "***REDACTED***" in text and len(text.splitlines()) == 2


async def test_prompt_on_stdin(tmp_path: Path) -> None:
    _result, lines, _ = await run(tmp_path, "cat\n", stdin="-p looks like an option")
    assert lines == ["-p looks like an option"]


async def test_idle_watchdog_kills_the_group(tmp_path: Path) -> None:
    marker = tmp_path / "late"
    body = f"echo start\n(sleep 3; touch {marker}) &\nsleep 30\n"
    start = trio.current_time()
    result, lines, _ = await run(tmp_path, body, idle=1.0)
    assert result.idle and lines == ["start"]  # type: ignore[attr-defined]
    assert trio.current_time() - start < 10
    await trio.sleep(3.5)
    assert not marker.exists()


async def test_missing_executable(tmp_path: Path) -> None:
    result = await ClaudeProcessRunner().run(
        argv=(str(tmp_path / "nope"), "-p", "x"), stdin=None, cwd=str(tmp_path),
        env=dict(os.environ), timeout=None, idle_timeout=None, transcript=tmp_path / "t",
        mask=lambda t: t, cancel=trio.Event(), on_line=lambda line: None)
    assert result.not_started is not None


async def test_a_call_above_its_memory_limit_is_stopped(tmp_path: Path) -> None:
    import sys

    body = (f"echo started\nexec {sys.executable} -c 'import time; b = bytearray(80 << 20); "
            "b[::4096] = bytes(len(b[::4096])); time.sleep(30)'\n")
    start = trio.current_time()
    result = await ClaudeProcessRunner(grace_seconds=1.0, memory_interval=0.1).run(
        argv=(stub(tmp_path, body), "-p", "x"), stdin=None, cwd=str(tmp_path),
        env=dict(os.environ), timeout=None, idle_timeout=None,
        transcript=tmp_path / "t.jsonl", mask=lambda t: t, cancel=trio.Event(),
        on_line=lambda line: None, memory_limit_mb=40)
    assert trio.current_time() - start < 15
    assert "above resource_limits.max_memory_mb (40 MB)" in result.exhausted
    assert result.exit_code == -1 and not result.timed_out
