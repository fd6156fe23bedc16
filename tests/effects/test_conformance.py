"""One contract, two implementations: the scripted runner must behave like the real one.

Each contract test runs against `ProcessRunner` (real `sh`) and `ScriptedRunner` (from
`FakeEnv`) scripted with what the real command does, so the fake stays honest about the
shape of what it reports: ids, exit codes, streams, timeouts, cancellation, live lines.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest
import trio

from prodigy_core.effects import RunCommand
from prodigy_core.events import CommandFinished
from prodigy_effects.env import CommandRunner
from prodigy_effects.fake import Scripted, ScriptedRunner
from prodigy_effects.production import ProcessRunner

FAILING = "printf 'a\\nb\\n'; echo err >&2; exit 3"
HANGING = "sleep 30"

SCRIPT = {
    FAILING: Scripted(exit_code=3, stdout="a\nb\n", stderr="err\n"),
    HANGING: Scripted(hang=True),
    "true": Scripted(),
}

RUNNERS: dict[str, Callable[[], CommandRunner]] = {
    "real": lambda: ProcessRunner(grace_seconds=1.0),
    "fake": lambda: ScriptedRunner(script=dict(SCRIPT)),
}


def effect(text: str, cid: int = 7, timeout: float | None = None) -> RunCommand:
    return RunCommand(command_id=cid, argv=("sh", "-c", text), cwd=os.getcwd(),
                      env=tuple(os.environ.items()), timeout=timeout)


@pytest.fixture(params=sorted(RUNNERS))
def runner(request: pytest.FixtureRequest) -> CommandRunner:
    return RUNNERS[request.param]()


async def test_exit_code_and_streams(runner: CommandRunner) -> None:
    lines: list[tuple[str, str]] = []
    event = await runner.run(effect(FAILING), trio.Event(), lambda s, line: lines.append((s, line)))
    assert isinstance(event, CommandFinished)
    assert event.command_id == 7
    assert (event.exit_code, event.stdout) == (3, "a\nb\n")
    assert event.stderr == "err\n" and not event.timed_out and not event.cancelled
    assert ("stdout", "a") in lines and ("stdout", "b") in lines


async def test_timeout_reports_minus_one(runner: CommandRunner) -> None:
    started = trio.current_time()
    event = await runner.run(effect(HANGING, timeout=0.3), trio.Event(), lambda s, line: None)
    assert isinstance(event, CommandFinished)
    assert event.timed_out and event.exit_code == -1
    assert trio.current_time() - started >= 0.3


async def test_cancel_stops_the_command(runner: CommandRunner) -> None:
    cancel = trio.Event()
    result: list[CommandFinished] = []

    async def go() -> None:
        event = await runner.run(effect(HANGING), cancel, lambda s, line: None)
        assert isinstance(event, CommandFinished)
        result.append(event)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(go)
        await trio.sleep(0.2)
        cancel.set()
    assert result[0].cancelled and not result[0].timed_out
    assert result[0].exit_code != 0


async def test_success_is_exit_zero(runner: CommandRunner) -> None:
    event = await runner.run(effect("true", cid=1), trio.Event(), lambda s, line: None)
    assert isinstance(event, CommandFinished)
    assert event.command_id == 1 and event.exit_code == 0 and event.duration >= 0
