"""Map scale: a MapReduce job of N trivial agents (`shell: "true"`, nothing to merge).

Two runs of the same workflow, each in a fresh repository with one commit and a fresh
`PRODIGY_HOME`:

1. `prodigy run wf.yml -y` to the end. Reports
   (a) bytes of the job's event log (`<home>/events/<repo>/<job_id>/`) plus the newest job
       state (`<home>/state/<repo>/mapreduce/jobs/<job_id>/checkpoint-v*.json`) per item
       at the end of the run (target < 4 KB/item);
   (b) the peak RSS of the prodigy process (`ru_maxrss` of `os.wait4`, i.e. the largest of
       prodigy and the processes it waited for; target < 200 MB), with RSS samples on
       the way;
   Also: the time from the first event to the first `agent_started` (loading and saving
   the items), and how the cost per item develops over the run, per tenth of the items:
   wall time (from the `agent_completed` timestamps) and CPU time of the prodigy process
   itself (`/proc/<pid>/stat`, sampled every 0.25 s; git and the agents' shells are not
   in it, so it is the less noisy sign of a per-item cost that grows with the number of
   items).
2. The same run killed with SIGKILL once half of the items have an `agent_completed`
   event, then `prodigy resume-job <job_id> -y`: (c) the time from starting the resume to
   the first newly started agent (a new `agent_started` event in the log; target < 2 s),
   next to the time of a `resume-job` of an unknown job (process start-up and imports
   only) measured just before. The resumed run is then waited for and checked (exit 0,
   every item done once), unless `--no-finish` stops it right after the measurement.

On a shared machine the wall times vary with the load; run it twice when in doubt.

    python benchmarks/map_scale.py [--items N] [--parallel P] [--no-finish] [--keep]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from _prodigy import prodigy_command, prodigy_env, warm_up

WORKFLOW = """\
name: scale
mode: mapreduce
map:
  input: "seq 0 {last} | paste -sd, - | sed 's/.*/[&]/'"
  max_parallel: {parallel}
  agent_template:
    - shell: "true"
"""

GIT_IDENTITY = {"GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "bench@example.invalid",
                "GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "bench@example.invalid"}
POLL = 0.002  # seconds between looks at the event log


class EventLog:
    """Follows the event log of the one job in a fresh `PRODIGY_HOME`, incrementally."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.offsets: dict[Path, int] = {}
        self.partial: dict[Path, bytes] = {}
        self.counts: dict[str, int] = {}
        self.completed_at: list[str] = []  # timestamps of `agent_completed`, in log order
        self.first_event: float | None = None  # timestamp of the first event
        self.first_agent: float | None = None  # … and of the first `agent_started`

    def job_dir(self) -> Path | None:
        found = sorted((self.home / "events").glob("*/mapreduce-*"))
        return found[0] if found else None

    def poll(self) -> None:
        directory = self.job_dir()
        if directory is None:
            return
        for path in sorted(directory.glob("*.jsonl")):
            offset = self.offsets.get(path, 0)
            with open(path, "rb") as handle:
                handle.seek(offset)
                data = handle.read()
            if not data:
                continue
            self.offsets[path] = offset + len(data)
            data = self.partial.pop(path, b"") + data
            *lines, rest = data.split(b"\n")
            if rest:
                self.partial[path] = rest
            for line in lines:
                if not line.strip():
                    continue
                record = json.loads(line)
                kind = record["event"]["event_type"]
                self.counts[kind] = self.counts.get(kind, 0) + 1
                if self.first_event is None:
                    self.first_event = parse_ts(record["timestamp"])
                if kind == "agent_started" and self.first_agent is None:
                    self.first_agent = parse_ts(record["timestamp"])
                if kind == "agent_completed":
                    self.completed_at.append(record["timestamp"])

    def count(self, kind: str) -> int:
        return self.counts.get(kind, 0)


def init_repo(path: Path, env: dict[str, str], workflow: str) -> None:
    path.mkdir(parents=True)
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=path, env=env, check=True)
    (path / "wf.yml").write_text(workflow)
    subprocess.run(["git", "add", "wf.yml"], cwd=path, env=env, check=True)
    subprocess.run(["git", "commit", "-qm", "initial"], cwd=path, env=env, check=True)


def rss_kb(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of a live process in KB, (0, 0) when it is gone."""
    rss = hwm = 0
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1])
                elif line.startswith("VmHWM:"):
                    hwm = int(line.split()[1])
    except OSError:
        pass
    return rss, hwm


def cpu_seconds(pid: int) -> float | None:
    """utime + stime of a live process itself (not its children), in seconds."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def reap(proc: subprocess.Popen[bytes]) -> tuple[int, int]:
    """Wait for `proc` with `os.wait4`: (exit code, ru_maxrss in KB)."""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, usage.ru_maxrss


def tail(path: Path, lines: int = 30) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def parse_ts(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def dir_bytes(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.rglob("*") if p.is_file())


def newest_checkpoint(state_dir: Path) -> Path:
    versions = sorted(state_dir.glob("checkpoint-v*.json"),
                      key=lambda p: int(p.stem.removeprefix("checkpoint-v")))
    if not versions:
        raise SystemExit(f"no checkpoint-v*.json in {state_dir}")
    return versions[-1]


class Setup:
    def __init__(self, base: Path, name: str, argv: list[str], workflow: str) -> None:
        self.repo = base / name / "repo"
        self.home = base / name / "home"
        self.env = prodigy_env(dict(os.environ, **GIT_IDENTITY, PRODIGY_HOME=str(self.home)))
        for key in ("PRODIGY_PROFILE", "PRODIGY_ARG"):
            self.env.pop(key, None)
        self.argv = argv
        self.log = base / name / "prodigy.log"
        init_repo(self.repo, self.env, workflow)

    def start(self, *args: str, log: Path | None = None) -> subprocess.Popen[bytes]:
        out = open(log or self.log, "ab")  # noqa: SIM115 - closed by the child's exit
        try:
            return subprocess.Popen([*self.argv, *args], cwd=self.repo, env=self.env,
                                    stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL)
        finally:
            out.close()


def full_run(setup: Setup, items: int) -> dict[str, Any]:
    """Run 1: the whole job; storage, peak RSS and the time per item over the run."""
    log = EventLog(setup.home)
    started = time.perf_counter()
    proc = setup.start("run", "wf.yml", "-y")
    samples: list[tuple[int, int, float]] = []  # (items done, VmRSS KB, CPU seconds)
    hwm = 0
    next_sample = 0.0
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            maxrss = usage.ru_maxrss
            break
        now = time.perf_counter()
        if now >= next_sample:
            log.poll()
            rss, high = rss_kb(proc.pid)
            cpu = cpu_seconds(proc.pid)
            if rss and cpu is not None:
                samples.append((log.count("agent_completed"), rss, cpu))
                hwm = max(hwm, high)
            next_sample = now + 0.25
        time.sleep(0.02)
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"prodigy run exited {proc.returncode}:\n{tail(setup.log)}")
    log.poll()
    if log.count("agent_completed") != items:
        raise SystemExit(f"expected {items} agent_completed events, got "
                         f"{log.count('agent_completed')}")
    job_events = log.job_dir()
    assert job_events is not None
    job_id = job_events.name
    state_dir = setup.home / "state" / job_events.parent.name / "mapreduce" / "jobs" / job_id
    checkpoint = newest_checkpoint(state_dir)
    return {"elapsed": elapsed, "first_agent": log.first_agent - log.first_event
            if log.first_agent is not None and log.first_event is not None else None,
            "events_bytes": dir_bytes(job_events),
            "checkpoint_bytes": checkpoint.stat().st_size,
            "state_dir_bytes": dir_bytes(state_dir), "maxrss_kb": maxrss, "hwm_kb": hwm,
            "samples": samples, "completed_at": [parse_ts(t) for t in log.completed_at],
            "counts": dict(log.counts)}


def kill_and_resume(setup: Setup, items: int, finish: bool) -> dict[str, Any]:
    """Run 2: SIGKILL at 50% done, then time `resume-job` to its first new agent."""
    log = EventLog(setup.home)
    started = time.perf_counter()
    proc = setup.start("run", "wf.yml", "-y")
    half = (items + 1) // 2
    while log.count("agent_completed") < half:
        if proc.poll() is not None:
            raise SystemExit(f"prodigy run ended ({proc.returncode}) before half of the "
                             f"items were done:\n{tail(setup.log)}")
        time.sleep(POLL)
        log.poll()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    to_half = time.perf_counter() - started
    log.poll()
    done_at_kill = log.count("agent_completed")
    starts_before = log.count("agent_started")
    job_events = log.job_dir()
    assert job_events is not None
    job_id = job_events.name

    # the fixed cost in the same conditions: start-up, imports, arguments, job look-up
    unknown = []
    for _ in range(3):
        begin = time.perf_counter()
        subprocess.run([*setup.argv, "resume-job", "mapreduce-00000000_000000", "-y"],
                       cwd=setup.repo, env=setup.env, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, check=False)
        unknown.append(time.perf_counter() - begin)

    resume_log = setup.log.with_name("resume.log")
    wall_start = time.time()
    started = time.perf_counter()
    resumed = setup.start("resume-job", job_id, "-y", log=resume_log)
    latency = None
    while True:
        log.poll()
        if log.count("agent_started") > starts_before:
            latency = time.perf_counter() - started
            break
        if resumed.poll() is not None:
            raise SystemExit(f"prodigy resume-job exited {resumed.returncode} before any "
                             f"agent started:\n{tail(resume_log)}")
        time.sleep(POLL)
    first_start = _first_new_start(job_events, starts_before)
    result: dict[str, Any] = {"to_half": to_half, "done_at_kill": done_at_kill,
                              "unknown_job": sorted(unknown)[1],
                              "latency": latency, "job_id": job_id,
                              "latency_by_timestamp": first_start - wall_start
                              if first_start else None}
    if not finish:
        resumed.send_signal(signal.SIGKILL)
        resumed.wait()
        return result
    code, maxrss = reap(resumed)
    result["resume_total"] = time.perf_counter() - started
    result["resume_maxrss_kb"] = maxrss
    if code != 0:
        raise SystemExit(f"prodigy resume-job exited {code}:\n{tail(resume_log)}")
    log.poll()
    result["completed"] = log.count("agent_completed")
    if log.count("agent_completed") != items:
        raise SystemExit(f"after the resume: {log.count('agent_completed')} agent_completed "
                         f"events for {items} items (an item ran twice or never)")
    return result


def _first_new_start(job_events: Path, skip: int) -> float | None:
    """Timestamp of the (skip+1)-th `agent_started` event of the log."""
    seen = 0
    for path in sorted(job_events.glob("*.jsonl")):
        with open(path, "rb") as handle:
            for line in handle:
                if b'"agent_started"' not in line:
                    continue
                record = json.loads(line)
                if record["event"]["event_type"] != "agent_started":
                    continue
                seen += 1
                if seen > skip:
                    return parse_ts(record["timestamp"])
    return None


def report_full(run: dict[str, Any], items: int, parallel: int) -> None:
    events, checkpoint = run["events_bytes"], run["checkpoint_bytes"]
    per_item = (events + checkpoint) / items
    print(f"{items} trivial agents, max_parallel {parallel}: prodigy run {run['elapsed']:.1f}s "
          f"({run['elapsed'] / items * 1000:.1f} ms per item)")
    print(f"  (a) journal + job state per item: {per_item / 1024:.2f} KB (target < 4 KB); "
          f"event log {events / 1024:.0f} KB ({events / items:.0f} B/item), newest "
          f"checkpoint {checkpoint / 1024:.0f} KB ({checkpoint / items:.0f} B/item); whole job "
          f"state directory {run['state_dir_bytes'] / 1024:.0f} KB")
    print(f"  (b) peak RSS {run['maxrss_kb'] / 1024:.0f} MB (target < 200 MB; prodigy's own "
          f"VmHWM seen {run['hwm_kb'] / 1024:.0f} MB)")
    samples = [s for s in run["samples"] if s[0]]  # from the first item on: not the shim
    if samples:
        marks = []
        for fraction in (0.25, 0.5, 0.75, 1.0):
            want = fraction * items
            done, rss, _ = _nearest(samples, want)
            marks.append(f"{done} done {rss / 1024:.0f} MB")
        print("      RSS on the way: " + ", ".join(marks))
    if run["first_agent"] is not None:
        print(f"  from the first event to the first agent_started: {run['first_agent']:.2f}s "
              f"(worktree, items loaded and saved)")
    stamps = run["completed_at"]
    if len(stamps) >= 20:
        tenth = len(stamps) // 10
        rates = []
        for k in range(10):
            lo = stamps[k * tenth - 1] if k else stamps[0]
            hi = stamps[min((k + 1) * tenth, len(stamps)) - 1]
            count = tenth if k else tenth - 1
            rates.append((hi - lo) / count * 1000)
        print("  wall time per item by tenth of the items (ms): "
              + " ".join(f"{r:.0f}" for r in rates)
              + f"; last/first {rates[-1] / rates[0]:.2f}")
    cpu = _cpu_by_tenth(samples, items)
    if cpu:
        print("  CPU time of the prodigy process (not git/sh) per item by tenth (ms): "
              + " ".join(f"{c:.1f}" for c in cpu) + f"; last/first {cpu[-1] / cpu[0]:.2f}")


def _nearest(samples: list[tuple[int, int, float]], done: float) -> tuple[int, int, float]:
    return min(samples, key=lambda s: abs(s[0] - done))


def _cpu_by_tenth(samples: list[tuple[int, int, float]], items: int) -> list[float]:
    """CPU ms per item between the samples nearest to each tenth of the items done."""
    if items < 20 or len(samples) < 20:
        return []
    marks = [samples[0]] + [_nearest(samples, k * items / 10) for k in range(1, 11)]
    out = []
    for a, b in itertools.pairwise(marks):
        if b[0] <= a[0]:
            return []
        out.append((b[2] - a[2]) / (b[0] - a[0]) * 1000)
    return out


def report_resume(run: dict[str, Any], items: int) -> None:
    stamp = run["latency_by_timestamp"]
    print(f"  (c) killed (SIGKILL) at {run['done_at_kill']}/{items} done after "
          f"{run['to_half']:.1f}s; resume-job to the first new agent: {run['latency']:.3f}s"
          f" (target < 2 s)" + (f"; by event timestamp {stamp:.3f}s" if stamp else ""))
    print(f"      for comparison, `resume-job` of an unknown job (start-up, imports, look-up "
          f"only): {run['unknown_job']:.3f}s")
    if "resume_total" in run:
        print(f"      the resumed run finished the remaining "
              f"{items - run['done_at_kill']} items in {run['resume_total']:.1f}s, peak RSS "
              f"{run['resume_maxrss_kb'] / 1024:.0f} MB, {run['completed']} items done once")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=2000, help="work items (default 2000)")
    parser.add_argument("--parallel", type=int, default=8, help="max_parallel (default 8)")
    parser.add_argument("--no-finish", action="store_true",
                        help="stop the resumed run once its first agent started")
    parser.add_argument("--keep", action="store_true",
                        help="keep the temporary directory (printed) for inspection")
    args = parser.parse_args()
    argv = prodigy_command()
    warm_up(os.environ)
    workflow = WORKFLOW.format(last=args.items - 1, parallel=args.parallel)
    tmp = tempfile.mkdtemp(prefix="map-scale-")
    try:
        base = Path(tmp)
        full = full_run(Setup(base, "full", argv, workflow), args.items)
        report_full(full, args.items, args.parallel)
        resumed = kill_and_resume(Setup(base, "killed", argv, workflow), args.items,
                                  not args.no_finish)
        report_resume(resumed, args.items)
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
