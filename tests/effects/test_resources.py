"""The measurements behind ``resource_limits`` (spec 06 §9.4), on the real system."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from prodigy_effects.resources import group_rss_bytes, tree_size, watch_memory


def test_tree_size_counts_files_but_not_git_data_or_symlink_targets(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_bytes(b"x" * 1000)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.bin").write_bytes(b"y" * 500)
    (tmp_path / ".git").write_text("gitdir: /elsewhere\n" + "z" * 5000)
    (tmp_path / "sub" / ".git").mkdir()  # only the top-level .git is git's own data
    (tmp_path / "sub" / ".git" / "c").write_bytes(b"w" * 7)
    big = tmp_path.parent / f"{tmp_path.name}-outside.bin"
    big.write_bytes(b"o" * 10_000)
    (tmp_path / "link").symlink_to(big)
    assert tree_size(tmp_path) == 1000 + 500 + 7


def test_tree_size_of_a_missing_directory_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        tree_size(tmp_path / "gone")


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="needs /proc (Linux)")
def test_group_rss_sums_the_whole_process_group() -> None:
    code = "import time; b = bytearray(60 * 1024 * 1024); b[::4096] = b'1' * len(b[::4096]); " \
           "print('ready', flush=True); time.sleep(30)"
    proc = subprocess.Popen(  # a group of two: sh and python holding 60 MB
        ["sh", "-c", f"{sys.executable} -c \"{code}\"; true"], process_group=0,
        stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
        rss = group_rss_bytes(proc.pid)
        assert rss is not None and rss > 60 * 1024 * 1024
        assert group_rss_bytes(proc.pid + 10_000_000) == 0  # no such group
        message = trio.run(watch_memory, proc.pid, 50, 0.05)
        assert "above resource_limits.max_memory_mb (50 MB)" in message
    finally:
        os.killpg(proc.pid, 9)
        proc.wait()


def test_without_proc_the_limit_is_not_watched(tmp_path: Path) -> None:
    assert group_rss_bytes(1, proc=str(tmp_path / "none")) is None
