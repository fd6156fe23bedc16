"""Starting child processes with less overhead than ``trio.lowlevel.open_process``.

Trio starts every process from a worker thread (``subprocess.Popen`` in
``trio.to_thread``) and waits for it from another, which costs about a millisecond per
process — more than the process itself for the trivial shell steps and the dozen git
commands a MapReduce agent needs.  Where Linux offers ``pidfd_open`` this module starts
the process directly (``Popen`` uses ``vfork``, so the event loop is held only until the
child has called ``exec``), waits for it by polling its pidfd in the event loop, and
reads and writes its pipes as trio ``FdStream``s.  Elsewhere it falls back to trio's own
functions; both give objects with the same surface: ``pid``, ``returncode``, ``stdin``,
``stdout``, ``stderr`` (trio streams or None) and ``await wait()``.

``run_process`` is the lean counterpart of ``trio.run_process(capture_stdout=True,
capture_stderr=True, check=False)``: on cancellation the process gets SIGTERM, then
SIGKILL after 5 seconds, and is always reaped.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Mapping, Sequence
from typing import Any

import trio

KILL_AFTER = 5.0


def _pidfd_works() -> bool:
    opener = getattr(os, "pidfd_open", None)
    if opener is None:
        return False
    try:
        fd = opener(os.getpid())
    except OSError:
        return False
    os.close(fd)
    return True


PIDFD = _pidfd_works()


def _stream(handle: Any) -> trio.lowlevel.FdStream | None:
    """A trio stream owning (a duplicate of) ``handle``'s descriptor; ``handle`` closed."""
    if handle is None:
        return None
    fd = os.dup(handle.fileno())
    handle.close()
    return trio.lowlevel.FdStream(fd)


class LeanProcess:
    """A child started by :func:`open_process` (the part of ``trio.Process`` we use)."""

    def __init__(self, popen: subprocess.Popen[bytes], pidfd: int) -> None:
        self._popen = popen
        self._pidfd: int | None = pidfd
        self._waiter: trio.Event | None = None
        self.stdin = self.stdout = self.stderr = None
        try:
            self.stdin = _stream(popen.stdin)
            self.stdout = _stream(popen.stdout)
            self.stderr = _stream(popen.stderr)
        except BaseException:
            for stream in (self.stdin, self.stdout, self.stderr):
                if stream is not None:
                    stream.close()
            self._close_pidfd(notify=False)
            popen.kill()
            popen.wait()
            raise
        popen.stdin = popen.stdout = popen.stderr = None

    def __del__(self) -> None:
        # never waited for to the end (its waiter was cancelled): the pidfd goes, and
        # ``Popen``'s own finaliser reaps the child later
        self._close_pidfd(notify=False)

    @property
    def pid(self) -> int:
        return self._popen.pid

    @property
    def returncode(self) -> int | None:
        """The exit status once the child has exited (checked without blocking)."""
        if self._popen.returncode is None:
            self._popen.poll()
        return self._popen.returncode

    async def wait(self) -> int:
        """Wait until the child has exited and reap it; its exit status (``-N``: signal N)."""
        if self._popen.returncode is not None:
            return self._popen.returncode
        if self._waiter is not None:  # another task waits already: wait for it
            await self._waiter.wait()
            return await self.wait()
        self._waiter = trio.Event()
        try:
            assert self._pidfd is not None
            await trio.lowlevel.wait_readable(self._pidfd)
            self._popen.wait()  # it has exited: this reaps it at once
            self._close_pidfd()
        finally:
            waiter, self._waiter = self._waiter, None
            waiter.set()
        assert self._popen.returncode is not None
        return self._popen.returncode

    def _close_pidfd(self, *, notify: bool = True) -> None:
        if self._pidfd is not None:
            fd, self._pidfd = self._pidfd, None
            if notify:
                trio.lowlevel.notify_closing(fd)
            os.close(fd)

    def send_signal(self, sig: int) -> None:
        if self._popen.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._popen.pid, sig)


async def open_process(argv: Sequence[str], *, cwd: str | None = None,
                       env: Mapping[str, str] | None = None, stdin: int | None = None,
                       stdout: int | None = None, stderr: int | None = None,
                       process_group: int | None = None) -> Any:
    """Start ``argv`` (arguments as for ``subprocess.Popen``); OSError when it cannot."""
    if not PIDFD:
        return await trio.lowlevel.open_process(
            list(argv), cwd=cwd, env=env, stdin=stdin, stdout=stdout, stderr=stderr,
            process_group=process_group)
    popen = subprocess.Popen(list(argv), cwd=cwd, env=env, stdin=stdin, stdout=stdout,
                             stderr=stderr, process_group=process_group)
    try:
        pidfd = os.pidfd_open(popen.pid)
    except OSError:
        popen.kill()
        popen.wait()
        raise
    return LeanProcess(popen, pidfd)


def close_streams(proc: Any) -> None:
    """Close a child's pipes now (synchronously: also while being cancelled)."""
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream is not None:
            with contextlib.suppress(OSError, trio.ClosedResourceError):
                stream.close()


async def _read_all(stream: Any, into: bytearray) -> None:
    while True:
        chunk = await stream.receive_some(65536)
        if not chunk:
            return
        into.extend(chunk)


async def run_process(argv: Sequence[str], *, cwd: str | None = None,
                      env: Mapping[str, str] | None = None,
                      stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    """Run ``argv`` to the end, its output captured (``trio.run_process`` semantics)."""
    if not PIDFD:
        return await trio.run_process(list(argv), cwd=cwd, env=env, stdin=stdin,
                                      capture_stdout=True, capture_stderr=True, check=False)
    proc = await open_process(argv, cwd=cwd, env=env,
                              stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = bytearray(), bytearray()

    async def feed() -> None:
        assert proc.stdin is not None
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await proc.stdin.send_all(stdin)
        await proc.stdin.aclose()

    try:
        async with trio.open_nursery() as nursery:
            if stdin:
                nursery.start_soon(feed)
            nursery.start_soon(_read_all, proc.stdout, out)
            nursery.start_soon(_read_all, proc.stderr, err)
            await proc.wait()
    except BaseException:
        # cancelled (or failed): stop the child as trio would, and never leave a zombie
        with trio.CancelScope(shield=True):
            proc.send_signal(signal.SIGTERM)
            with trio.move_on_after(KILL_AFTER):
                await proc.wait()
            if proc.returncode is None:
                proc.send_signal(signal.SIGKILL)
                await proc.wait()
        raise
    finally:
        close_streams(proc)
    return subprocess.CompletedProcess(list(argv), proc.returncode, bytes(out), bytes(err))
