"""Step overhead: 300 trivial shell steps through `prodigy run` vs. the same 300 `sh -c` in bash.

Both are measured in the same invocation, so the ratio is meaningful on any machine.
Targets (issue 2): ratio <= 2.0 with a checkpoint after every step; `prodigy --version`
start-up under 150 ms more than `python -c pass`.

    python benchmarks/step_overhead.py [--steps N] [--repeat K]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def timed(argv: list[str], cwd: Path, env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, cwd=cwd, env=env, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    prodigy = shutil.which("prodigy")
    prodigy_argv = [prodigy] if prodigy else [sys.executable, "-m", "prodigy_cli"]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp) / "repo"
        work.mkdir()
        env = dict(os.environ, PRODIGY_HOME=str(Path(tmp) / "home"))
        subprocess.run(["git", "init", "-q"], cwd=work, check=True)
        steps = [f"echo step {i} > /dev/null" for i in range(args.steps)]
        wf = work / "wf.yml"
        wf.write_text("".join(f"- shell: \"{s}\"\n" for s in steps))
        script = work / "same.sh"
        script.write_text("set -e\n" + "".join(f"sh -c '{s}'\n" for s in steps))
        # a run needs a commit to start its session worktree from (spec 06 §3)
        for argv in (["git", "config", "user.email", "bench@example.com"],
                     ["git", "config", "user.name", "bench"], ["git", "add", "-A"],
                     ["git", "commit", "-qm", "bench"]):
            subprocess.run(argv, cwd=work, check=True)
        prodigy_times, bash_times = [], []
        for _ in range(args.repeat):
            bash_times.append(timed(["bash", str(script)], work, env))
            prodigy_times.append(timed([*prodigy_argv, "run", "wf.yml", "-q"], work, env))
        p, b = statistics.median(prodigy_times), statistics.median(bash_times)
        print(f"{args.steps} steps: prodigy run {p:.3f}s, bash {b:.3f}s, ratio {p / b:.2f} "
              f"(target <= 2.0)")
        versions, bare = [], []
        for _ in range(5):
            versions.append(timed([*prodigy_argv, "--version"], work, env))
            bare.append(timed([sys.executable, "-c", "pass"], work, env))
        v, c = statistics.median(versions), statistics.median(bare)
        print(f"start-up: prodigy --version {v * 1000:.0f} ms, python -c pass {c * 1000:.0f} ms,"
              f" difference {(v - c) * 1000:.0f} ms (target < 150 ms)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
