"""Map fan-out: a MapReduce job of N committing agents vs. the same git work in bash.

Prodigy side: `prodigy run wf.yml -y` of a `mode: mapreduce` workflow whose N items come
from `seq`; every agent writes one file and commits it in its own worktree, at most P
agents at once; each agent branch is merged into the session worktree, and the session
branch is merged into `main` at the end (`-y`).

Bash side, the same git work without Prodigy: a session worktree; for each item
`git worktree add -b <branch> <path> HEAD` from the session worktree, write + commit, P at
a time (`xargs -P`; concurrent `git worktree add`s race on `.git/worktrees/`, so they are
serialised with `flock`, as Prodigy serialises them with its repository lock); then a
serial loop of `git merge --no-ff` of every agent branch into the session worktree; remove
the agent worktrees and branches; merge the session branch into `main` and remove the
session worktree and branch.

Each run of either side starts from a fresh repository with one commit (and a fresh
`PRODIGY_HOME`); the minimum of R runs is taken for each side, both measured in the same
invocation, so the ratio is meaningful on any machine. Target: ratio <= 1.3.

    python benchmarks/map_fanout.py [--items N] [--parallel P] [--repeat R]
"""

from __future__ import annotations

import argparse
import os
import resource
import shlex
import subprocess
import tempfile
import time
from pathlib import Path

from _prodigy import prodigy_command, prodigy_env, warm_up

WORKFLOW = """\
name: fanout
mode: mapreduce
map:
  input: "seq 0 {last} | paste -sd, - | sed 's/.*/[&]/'"
  max_parallel: {parallel}
  agent_template:
    - shell: "echo ${{item}} > out_${{item}}.txt && git add out_${{item}}.txt && git commit -qm item-${{item}}"
"""

# $1 = repository, $2 = directory for the worktrees, $3 = items, $4 = parallelism
BASELINE = r"""set -e
repo=$1 wt=$2 n=$3 p=$4
cd "$repo"
git worktree add -q -b bench-session "$wt/session" HEAD
cd "$wt/session"
export WT=$wt
seq 0 $((n - 1)) | xargs -P "$p" -I{} sh -c '
  set -e
  flock "$WT/add.lock" git worktree add -q -b "bench-agent-$1" "$WT/agent-$1" HEAD
  cd "$WT/agent-$1"
  echo "$1" > "out_$1.txt" && git add "out_$1.txt" && git commit -qm "item-$1"
' _ {}
for i in $(seq 0 $((n - 1))); do
  git merge --no-ff -q -m "Merge agent $i" "bench-agent-$i"
done
for i in $(seq 0 $((n - 1))); do
  git worktree remove --force "$WT/agent-$i"
  git branch -q -D "bench-agent-$i"
done
cd "$repo"
git merge --no-ff -q -m "Merge session" bench-session
git worktree remove --force "$wt/session"
git branch -q -D bench-session
"""

GIT_IDENTITY = {"GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "bench@example.invalid",
                "GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "bench@example.invalid"}


def init_repo(path: Path, env: dict[str, str], workflow: str) -> None:
    path.mkdir(parents=True)
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=path, env=env, check=True)
    (path / "wf.yml").write_text(workflow)
    subprocess.run(["git", "add", "wf.yml"], cwd=path, env=env, check=True)
    subprocess.run(["git", "commit", "-qm", "initial"], cwd=path, env=env, check=True)


CPU: dict[str, list[float]] = {"prodigy": [], "bash": []}


def timed(argv: list[str], cwd: Path, env: dict[str, str], side: str = "") -> float:
    """Wall time of ``argv``; its CPU time (with all its children) goes to ``CPU[side]``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(argv, cwd=cwd, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True,
                          check=False)
    elapsed = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if side:
        CPU[side].append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
    if done.returncode != 0:
        raise SystemExit(f"{shlex.join(argv)} failed with exit code {done.returncode}:\n"
                         f"{done.stdout[-3000:]}")
    return elapsed


def check_result(repo: Path, env: dict[str, str], items: int, side: str) -> None:
    """Both sides must leave the same thing on `main`: every file, one merge per agent."""
    files = subprocess.run(["git", "ls-tree", "--name-only", "HEAD"], cwd=repo, env=env,
                           check=True, capture_output=True, text=True).stdout.split()
    outs = [f for f in files if f.startswith("out_")]
    merges = subprocess.run(["git", "rev-list", "--merges", "--count", "HEAD"], cwd=repo,
                            env=env, check=True, capture_output=True, text=True).stdout
    branches = subprocess.run(["git", "branch", "--list"], cwd=repo, env=env, check=True,
                              capture_output=True, text=True).stdout.split()
    if len(outs) != items or int(merges) != items + 1 or branches != ["*", "main"]:
        raise SystemExit(f"{side}: expected {items} files, {items + 1} merges and only "
                         f"`main`; got {len(outs)} files, {merges.strip()} merges, "
                         f"branches {branches}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=100, help="work items (default 100)")
    parser.add_argument("--parallel", type=int, default=4, help="max_parallel (default 4)")
    parser.add_argument("--repeat", type=int, default=3,
                        help="runs of each side; the minimum is reported (default 3)")
    args = parser.parse_args()
    prodigy_argv = prodigy_command()
    workflow = WORKFLOW.format(last=args.items - 1, parallel=args.parallel)
    with tempfile.TemporaryDirectory(prefix="map-fanout-") as tmp:
        base = Path(tmp)
        script = base / "same.sh"
        script.write_text(BASELINE)
        env = prodigy_env(dict(os.environ, **GIT_IDENTITY))
        warm_up(env)
        for name in ("PRODIGY_PROFILE", "PRODIGY_ARG"):
            env.pop(name, None)
        prodigy_times: list[float] = []
        bash_times: list[float] = []
        for run in range(args.repeat):
            repo = base / f"bash-{run}" / "repo"
            init_repo(repo, env, workflow)
            bash_times.append(timed(["bash", str(script), str(repo), str(repo.parent / "wt"),
                                     str(args.items), str(args.parallel)], repo, env,
                                    "bash"))
            check_result(repo, env, args.items, "bash")

            repo = base / f"prodigy-{run}" / "repo"
            init_repo(repo, env, workflow)
            run_env = dict(env, PRODIGY_HOME=str(repo.parent / "home"))
            prodigy_times.append(timed([*prodigy_argv, "run", "wf.yml", "-y"], repo, run_env,
                                       "prodigy"))
            check_result(repo, env, args.items, "prodigy run")
        p, b = min(prodigy_times), min(bash_times)
        print(f"{args.items} committing agents, max_parallel {args.parallel}, min of "
              f"{args.repeat}: prodigy run {p:.3f}s, bash {b:.3f}s, ratio {p / b:.2f} "
              f"(target <= 1.3)")
        print("  runs: prodigy " + " ".join(f"{t:.2f}" for t in prodigy_times)
              + " | bash " + " ".join(f"{t:.2f}" for t in bash_times))
        print(f"  per item: prodigy {p / args.items * 1000:.0f} ms, "
              f"bash {b / args.items * 1000:.0f} ms, "
              f"overhead {(p - b) / args.items * 1000:.0f} ms per item")
        cpu_p, cpu_b = min(CPU["prodigy"]), min(CPU["bash"])
        print(f"  CPU time (user + system, with every git and sh process): prodigy "
              f"{cpu_p:.1f}s, bash {cpu_b:.1f}s, ratio {cpu_p / cpu_b:.2f}; this machine has "
              f"{os.cpu_count()} CPUs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
