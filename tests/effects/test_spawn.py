"""``prodigy_effects.spawn``: children started without trio's worker threads, for real."""

from __future__ import annotations

import gc
import os
import subprocess

import pytest
import trio

from prodigy_effects import spawn

needs_pidfd = pytest.mark.skipif(not spawn.PIDFD, reason="needs pidfd_open (Linux 5.3+)")


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@needs_pidfd
def test_run_process_captures_output_and_status() -> None:
    done = trio.run(lambda: spawn.run_process(
        ["sh", "-c", "cat; echo err >&2; exit 3"], stdin=b"in\n"))
    assert (done.returncode, done.stdout, done.stderr) == (3, b"in\n", b"err\n")


@needs_pidfd
def test_returncode_is_seen_without_waiting_and_wait_is_shared() -> None:
    async def main() -> None:
        proc = await spawn.open_process(["sh", "-c", "exit 7"])
        results: list[int] = []
        async with trio.open_nursery() as nursery:  # two waiters at once
            for _ in range(2):
                nursery.start_soon(lambda: _append(proc, results))
        assert results == [7, 7] and proc.returncode == 7
        quick = await spawn.open_process(["true"])
        with trio.move_on_after(5):
            while quick.returncode is None:  # polled: no wait() needed to see it end
                await trio.sleep(0.01)
        assert quick.returncode == 0

    async def _append(proc: spawn.LeanProcess, into: list[int]) -> None:
        into.append(await proc.wait())

    trio.run(main)


@needs_pidfd
def test_a_cancelled_run_stops_and_reaps_the_child_and_leaks_no_descriptor() -> None:
    before = open_fds()

    async def main() -> None:
        for _ in range(5):
            with trio.move_on_after(0.05):
                await spawn.run_process(["sleep", "30"])

    trio.run(main)
    gc.collect()
    assert open_fds() <= before
    zombies = subprocess.run(["ps", "-o", "stat=", "--ppid", str(os.getpid())],
                             capture_output=True, text=True).stdout.split()
    assert not [z for z in zombies if z.startswith("Z")]


@needs_pidfd
def test_an_abandoned_process_gives_its_pidfd_back() -> None:
    before = open_fds()

    async def main() -> None:
        for _ in range(5):
            proc = await spawn.open_process(["sleep", "0.2"], stdout=subprocess.DEVNULL)
            with trio.move_on_after(0.01):
                await proc.wait()  # never completed
            spawn.close_streams(proc)
            del proc

    trio.run(main)
    gc.collect()
    assert open_fds() <= before


def test_a_missing_program_is_an_os_error() -> None:
    with pytest.raises(OSError):
        trio.run(lambda: spawn.run_process(["no-such-program-here"]))
