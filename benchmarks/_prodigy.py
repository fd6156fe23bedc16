"""How the benchmarks start Prodigy: the way an installed `prodigy` starts for a user.

`prodigy_command()` is the console script installed beside the running interpreter (a
PATH lookup could find a version manager's shim — pyenv's is a bash script that costs
about 100 ms per start — which is not Prodigy's cost), else `python -m prodigy_cli`.
`prodigy_env()` drops PYTHONDONTWRITEBYTECODE: an installed Prodigy has its bytecode
compiled (pip does it), so a benchmark must not make it compile every module on each
start; `warm_up()` runs `prodigy --help` once so the bytecode exists before timing.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path


def prodigy_command() -> list[str]:
    script = Path(sys.executable).parent / "prodigy"
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    return [sys.executable, "-m", "prodigy_cli"]


def prodigy_env(env: Mapping[str, str]) -> dict[str, str]:
    cleaned = dict(env)
    cleaned.pop("PYTHONDONTWRITEBYTECODE", None)
    return cleaned


def warm_up(env: Mapping[str, str]) -> None:
    subprocess.run([*prodigy_command(), "--help"], env=prodigy_env(env),
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
