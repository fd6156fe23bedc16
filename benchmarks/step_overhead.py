"""Step overhead: 300 trivial shell steps through `prodigy run` vs. the same 300 `sh -c` in bash.

Both are measured in the same invocation, so the ratio is meaningful on any machine.
Targets (issue 2): ratio <= 2.0 with a checkpoint after every step; `prodigy --version`
start-up under 150 ms more than `python -c pass`.

    python benchmarks/step_overhead.py [--steps N] [--repeat K]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _prodigy import prodigy_command, prodigy_env, warm_up


def timed(argv: list[str], cwd: Path, env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, cwd=cwd, env=env, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def floor(tmp: Path, steps: int, bash_seconds: float) -> None:
    """What this machine charges any program that does what spec 09 asks per step.

    Per completed step Prodigy must start the process and make three things durable:
    the event log (fsync), the new checkpoint file (fsync) and its rename (directory
    fsync).  Measured here: spawning `sh -c` from Python (no shell of its own) and one
    fsync of a small file; their sum bounds the ratio from below before any Prodigy
    code runs.
    """
    probe = tmp / "fsync-probe"
    fd = os.open(probe, os.O_WRONLY | os.O_CREAT, 0o600)
    syncs = []
    try:
        for _ in range(50):
            os.write(fd, b"x" * 200)
            start = time.perf_counter()
            os.fsync(fd)
            syncs.append(time.perf_counter() - start)
    finally:
        os.close(fd)
    start = time.perf_counter()
    for i in range(steps):
        subprocess.run(["sh", "-c", f"echo step {i} > /dev/null"], check=True)
    spawn = (time.perf_counter() - start) / steps
    sync = statistics.median(syncs)
    least = steps * (spawn + 3 * sync)
    print(f"  floor on this machine: spawn from Python {spawn * 1000:.2f} ms + 3 fsyncs x "
          f"{sync * 1000:.2f} ms per step = {least:.3f}s for {steps} steps, ratio "
          f"{least / bash_seconds:.2f} before any Prodigy code")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    prodigy_argv = prodigy_command()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp) / "repo"
        work.mkdir()
        env = prodigy_env(dict(os.environ, PRODIGY_HOME=str(Path(tmp) / "home")))
        warm_up(env)
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
        floor(Path(tmp), args.steps, b)
        one = work / "one.yml"
        one.write_text('- shell: "true"\n')
        fixed = statistics.median(timed([*prodigy_argv, "run", "one.yml", "-q"], work, env)
                                  for _ in range(args.repeat))
        print(f"  fixed cost of a run (one step): {fixed:.3f}s (start-up, session worktree, "
              f"merge back, clean-up); per step beyond it: "
              f"{(p - fixed) / max(1, args.steps - 1) * 1000:.1f} ms")
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
