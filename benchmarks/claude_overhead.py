"""Claude overhead: 5 `claude:` steps through `prodigy run` vs. the same 5 `claude -p` calls in bash.

Both run the real Claude Code CLI against the scripted fake Anthropic API (`tests/fakeapi`),
served by this process on 127.0.0.1, with the directive prompt `FAKE: say ok` (no script
needed). Both are measured in the same invocation, so the ratio is meaningful on any machine.
Target: ratio <= 1.15 (Prodigy adds worktree, checkpoints, event log and transcripts around
the calls, which must stay small next to the CLI itself).

    python benchmarks/claude_overhead.py [--steps N] [--repeat K]

Needs the CLI at `.tools/node_modules/.bin/claude` (or `$PRODIGY_TEST_CLAUDE`):
`npm install --prefix .tools @anthropic-ai/claude-code`.
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _prodigy import prodigy_command, prodigy_env, warm_up

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from tests.fakeapi import FakeAnthropic  # noqa: E402
from tests.fakeapi.cli import INSTALL_HINT, LOCAL_CLAUDE, claude_env  # noqa: E402

PROMPT = "FAKE: say ok"
# The arguments Prodigy passes (spec 07 §1.1, §2.2 root-safe permission arguments); set
# explicitly for both sides so the comparison does not depend on the user id.
PERMISSION_ARGS = ["--permission-mode", "acceptEdits",
                   "--allowedTools", "Bash,Edit,Write,Read,Glob,Grep,NotebookEdit"]


def find_claude() -> str:
    """`$PRODIGY_TEST_CLAUDE`, else the project-local CLI (as `tests.fakeapi.cli.find_claude`)."""
    configured = os.environ.get("PRODIGY_TEST_CLAUDE")
    if configured:
        if os.path.isfile(configured) and os.access(configured, os.X_OK):
            return configured
        raise SystemExit(f"PRODIGY_TEST_CLAUDE={configured} is not an executable file")
    if LOCAL_CLAUDE.exists() and os.access(LOCAL_CLAUDE, os.X_OK):
        return str(LOCAL_CLAUDE)
    raise SystemExit(f"the Claude Code CLI is missing at {LOCAL_CLAUDE.relative_to(REPO_ROOT)}; "
                     f"{INSTALL_HINT}")


def timed(argv: list[str], cwd: Path, env: dict[str, str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(argv, cwd=cwd, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True,
                          check=False)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{shlex.join(argv)} failed with exit code {done.returncode}:\n"
                         f"{done.stdout[-3000:]}")
    return elapsed


def init_repo(path: Path, env: dict[str, str]) -> None:
    path.mkdir(parents=True)
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=path, env=env, check=True)
    (path / ".gitignore").write_text("calls.jsonl\n")
    subprocess.run(["git", "add", ".gitignore"], cwd=path, env=env, check=True)
    subprocess.run(["git", "commit", "-qm", "initial"], cwd=path, env=env, check=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5, help="claude calls per run (default 5)")
    parser.add_argument("--repeat", type=int, default=15,
                        help="runs of each side (median; the CLI's own time varies a lot)")
    args = parser.parse_args()
    claude = find_claude()
    prodigy_argv = prodigy_command()
    with tempfile.TemporaryDirectory(prefix="claude-overhead-") as tmp, FakeAnthropic() as fake:
        base = Path(tmp)
        env = prodigy_env(claude_env(os.environ, fake.url, home=base / "claude-home"))
        warm_up(env)
        env["PRODIGY_HOME"] = str(base / "prodigy-home")
        env["PRODIGY_CLAUDE_PATH"] = claude
        env["PRODIGY_CLAUDE_PERMISSION_ARGS"] = shlex.join(PERMISSION_ARGS)
        env.pop("PRODIGY_CLAUDE_ARGS", None)
        env.pop("PRODIGY_CLAUDE_MODEL", None)
        work = base / "repo"
        init_repo(work, env)

        wf = work / "wf.yml"
        wf.write_text("".join(f"- claude: \"{PROMPT}\"\n" for _ in range(args.steps)))
        call = shlex.join([claude, "-p", PROMPT, "--output-format", "stream-json", "--verbose",
                           *PERMISSION_ARGS])
        script = base / "same.sh"
        script.write_text("set -e\n" + f"{call} </dev/null >>calls.jsonl\n" * args.steps)

        before = len(fake.main_requests)
        timed(["bash", str(script)], work, env)  # warm-up: CLI caches, page cache
        if len(fake.main_requests) - before != args.steps:
            raise SystemExit(f"expected {args.steps} API requests per run, "
                             f"got {len(fake.main_requests) - before}")
        trivial = work / "trivial.yml"
        trivial.write_text("- shell: \"true\"\n" * args.steps)
        prodigy_times: list[float] = []
        bash_times: list[float] = []
        trivial_times: list[float] = []
        def run_prodigy() -> None:
            before = len(fake.main_requests)
            prodigy_times.append(timed([*prodigy_argv, "run", "wf.yml", "-y", "-q"], work, env))
            if len(fake.main_requests) - before != args.steps:
                raise SystemExit(f"prodigy run made {len(fake.main_requests) - before} API "
                                 f"requests, expected {args.steps}")

        for index in range(args.repeat):
            trivial_times.append(timed([*prodigy_argv, "run", "trivial.yml", "-y", "-q"], work,
                                       env))
            # the two sides take turns going first, so that neither always runs in the
            # other's wake (caches warmed, the machine's load drifting one way)
            if index % 2 == 0:
                bash_times.append(timed(["bash", str(script)], work, env))
                run_prodigy()
            else:
                run_prodigy()
                bash_times.append(timed(["bash", str(script)], work, env))
        p, b = statistics.median(prodigy_times), statistics.median(bash_times)
        print(f"{args.steps} claude steps, median of {args.repeat}: prodigy run {p:.3f}s, "
              f"bash {b:.3f}s, ratio {p / b:.3f} (target <= 1.15)")
        print("  runs: prodigy " + " ".join(f"{t:.2f}" for t in prodigy_times)
              + " | bash " + " ".join(f"{t:.2f}" for t in bash_times))
        paired = statistics.median(x / y for x, y in zip(prodigy_times, bash_times, strict=True))
        print(f"  median of the per-run ratios (robust to load drift): {paired:.3f}")
        t = statistics.median(trivial_times)
        print(f"  same workflow with `shell: true` instead of claude: {t:.3f}s (Prodigy's fixed "
              f"cost: start-up, worktree, checkpoints, clean-up)")
        print(f"  per call: prodigy {p / args.steps * 1000:.0f} ms, "
              f"bash {b / args.steps * 1000:.0f} ms, "
              f"overhead {(p - b) / args.steps * 1000:.0f} ms per step")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
