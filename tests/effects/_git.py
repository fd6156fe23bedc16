"""Running real git in the effects tests."""

from __future__ import annotations

import subprocess
from pathlib import Path


def git(cwd: Path | str, *args: str) -> str:
    """Run ``git args`` in ``cwd`` (it must succeed); its standard output, stripped."""
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True,
                          text=True).stdout.strip()
