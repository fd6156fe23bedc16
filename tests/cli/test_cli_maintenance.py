"""Maintenance subcommands of `events`, `sessions` and `checkpoints`, run in-process
against real workflows in a real git repository (spec 08 §1.4, §2.9, §2.11, §2.12)."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from prodigy_cli.cli_support import parse_size
from prodigy_cli.main import main
from prodigy_effects.locks import acquire_lock
from prodigy_effects.storage import Storage

OLD = "2020-01-01T00:00:00.000Z"


class Tty(io.StringIO):
    """Answers on a terminal."""

    def isatty(self) -> bool:
        return True


class Cli:
    def __init__(self, root: Path, home: Path) -> None:
        self.root = root
        self.home = home
        self.storage = Storage(home)
        self.environ = dict(os.environ, PRODIGY_HOME=str(home))
        self.environ.pop("PRODIGY_PROFILE", None)

    def __call__(self, *argv: str, stdin: io.StringIO | None = None) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        code = main(list(argv), out=out, err=err, environ=self.environ, cwd=str(self.root),
                    stdin=stdin if stdin is not None else io.StringIO(""))
        assert "Traceback" not in err.getvalue()
        assert "E9001" not in err.getvalue()
        return code, out.getvalue(), err.getvalue()

    def run(self, *steps: str, fail: bool = False) -> str:
        """Run a workflow of shell steps; return its session id."""
        text = "".join(f"- shell: {json.dumps(s)}\n" for s in steps)
        (self.root / "wf.yml").write_text(text, encoding="utf-8")
        code, out, err = self("run", "wf.yml", "-y")
        assert code == (1 if fail else 0), out + err
        match = re.search(r"Starting session: (\S+)", out + err)
        assert match, out
        return match.group(1)

    def event_dir(self, sid: str) -> Path:
        return self.home / "events" / self.root.name / sid

    def event_lines(self, sid: str) -> list[str]:
        return [line for f in sorted(self.event_dir(sid).glob("*.jsonl"))
                for line in f.read_text().splitlines() if line.strip()]

    def backdate(self, sid: str) -> None:
        """Make the session and all its events look finished long ago."""
        path = self.home / "sessions" / f"{sid}.json"
        doc = json.loads(path.read_text())
        doc["started_at"] = doc["updated_at"] = doc["completed_at"] = OLD
        path.write_text(json.dumps(doc, indent=2))
        for f in self.event_dir(sid).glob("*.jsonl"):
            lines = [json.loads(x) for x in f.read_text().splitlines() if x.strip()]
            for line in lines:
                line["timestamp"] = OLD
            f.write_text("".join(json.dumps(x) + "\n" for x in lines))


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    root = tmp_path / "repo"
    root.mkdir()
    for argv in (["init", "-q", "-b", "main"], ["config", "user.email", "t@example.com"],
                 ["config", "user.name", "Test"]):
        subprocess.run(["git", *argv], cwd=root, check=True)
    (root / "README.md").write_text("demo\n", encoding="utf-8")
    subprocess.run(["git", "add", "-A"], cwd=root, check=True)
    # every run starts its worktree from a commit (E4002 without one)
    subprocess.run(["git", "commit", "-qm", "init"], cwd=root, check=True)
    return Cli(root, tmp_path / "home")


@pytest.fixture
def done(cli: Cli) -> str:
    return cli.run("echo one", "echo two")


# --------------------------------------------------------------------------- arguments


def test_durations_and_sizes_are_checked_before_any_work(cli: Cli) -> None:
    for argv in (["events", "ls", "--since", "soon"], ["sessions", "clean", "--older-than", "x"],
                 ["events", "clean", "--max-size", "lots"], ["events", "clean", "--max-events",
                                                             "-1"]):
        code, out, err = cli(*argv)
        assert code == 2 and "E8001" in err and out == "", argv
    assert parse_size("10MB") == 10 * 1024**2
    assert parse_size("512kb") == 512 * 1024 and parse_size("100") == 100
    assert parse_size("1.5GiB") == int(1.5 * 1024**3) and parse_size("ten") is None


# --------------------------------------------------------------------------- events


def test_events_ls_since(cli: Cli, done: str) -> None:
    code, out, _ = cli("events", "ls", "--since", "1h", "--json")
    assert code == 0 and len(out.splitlines()) == len(cli.event_lines(done))
    code, out, _ = cli("events", "ls", "--since", "1h30m")
    assert code == 0 and "workflow_completed" in out
    cli.backdate(done)
    code, out, _ = cli("events", "ls", "--since", "7d")
    assert code == 0 and out == "No events found.\n"


def test_events_stats(cli: Cli, done: str) -> None:
    total = len(cli.event_lines(done))
    code, out, _ = cli("events", "stats", "--json")
    assert code == 0
    doc = json.loads(out)
    assert doc["total"] == total and doc["group_by"] == "event_type"
    counts = {g["key"]: g["count"] for g in doc["groups"]}
    assert counts["step_completed"] == 2 and counts["workflow_started"] == 1
    assert doc["first"] <= doc["last"]
    code, out, _ = cli("events", "stats", "--group-by", "job_id", "--json")
    assert json.loads(out)["groups"] == [{"key": done, "count": total}]
    code, out, _ = cli("events", "stats", "--group-by", "agent_id")
    assert code == 0 and f"Total: {total}" in out and "Time range:" in out
    code, _, err = cli("events", "stats", "--job-id", "no-such-run")
    assert code == 2 and "E6010" in err
    code, _, _ = cli("events", "stats", "--group-by", "colour")
    assert code == 2


def test_events_search(cli: Cli, done: str) -> None:
    code, out, _ = cli("events", "search", "echo tw[o]", "--json")
    assert code == 0 and out
    found = [json.loads(line) for line in out.splitlines()]
    assert all("echo two" in json.dumps(e) for e in found)
    code, out, _ = cli("events", "search", "^step_(started|completed)$", "--fields",
                       "event_type", "--json")
    kinds = [json.loads(line)["event"]["event_type"] for line in out.splitlines()]
    assert sorted(set(kinds)) == ["step_completed", "step_started"] and len(kinds) == 4
    code, out, _ = cli("events", "search", "succeeded", "--fields", "display,metadata.host")
    assert code == 0 and out == "No matching events.\n"
    code, out, err = cli("events", "search", "(unclosed")
    assert code == 2 and "E8001" in err and out == ""


def test_events_export_formats(cli: Cli, done: str) -> None:
    total = len(cli.event_lines(done))
    code, out, _ = cli("events", "export")
    assert code == 0 and len(json.loads(out)) == total
    code, out, _ = cli("events", "export", "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    journal = [json.loads(line)["event"]["event_type"] for line in cli.event_lines(done)]
    assert [row["event_type"] for row in rows] == journal  # one row per event, in order
    assert journal[0] == "worktree_created" and "workflow_started" in journal
    assert rows[0]["run_id"] == done
    code, out, _ = cli("events", "export", "--format", "markdown")
    assert out.startswith("| Seq |") and len(out.splitlines()) == total + 2
    code, out, _ = cli("events", "export", "--format", "csv", "--output", "ev.csv")
    assert code == 0 and "Exported" in out
    assert len((cli.root / "ev.csv").read_text().splitlines()) == total + 1
    code, _, err = cli("events", "export", "--output", "missing-dir/x.json")
    assert code == 2 and "cannot write" in err


def test_events_clean_default_keeps_recent_events(cli: Cli, done: str) -> None:
    code, out, _ = cli("events", "clean", "-f")
    assert code == 0 and "No events to clean." in out
    assert cli.event_lines(done)


def test_events_clean_needs_confirmation_without_a_terminal(cli: Cli, done: str) -> None:
    cli.backdate(done)
    code, out, err = cli("events", "clean")
    assert code == 2 and "use --yes to confirm" in err and "E8003" in err
    assert cli.event_lines(done)
    code, _, err = cli("events", "clean", stdin=Tty("n\n"))
    assert code == 0 and "(y/N)" in err and cli.event_lines(done)
    code, out, err = cli("events", "clean", stdin=Tty("y\n"))
    assert code == 0 and "Removed" in out
    assert not cli.event_dir(done).exists()


def test_events_clean_dry_run_deletes_nothing(cli: Cli, done: str) -> None:
    before = cli.event_lines(done)
    code, out, _ = cli("events", "clean", "--older-than", "0s", "--dry-run", "--json")
    report = json.loads(out)
    assert code == 0 and report["dry_run"] and report["total_events_matched"] == len(before)
    assert cli.event_lines(done) == before


def test_events_clean_max_events_trims_the_oldest(cli: Cli, done: str) -> None:
    before = cli.event_lines(done)
    code, _, err = cli("events", "clean", "--max-events", "2", "-y")
    assert code == 0, err
    assert cli.event_lines(done) == before[-2:]
    code, _, _ = cli("events", "clean", "--max-size", "1", "--yes")
    assert cli.event_lines(done) == []


def test_events_clean_archive(cli: Cli, done: str) -> None:
    before = cli.event_lines(done)
    archive = cli.root.parent / "archive"
    code, out, _ = cli("events", "clean", "--older-than", "0s", "--archive-path", str(archive),
                       "-f")
    assert code == 0 and "Archived" in out
    assert not cli.event_dir(done).exists()
    kept = [x for f in (archive / cli.root.name / done).glob("*.jsonl")
            for x in f.read_text().splitlines()]
    assert kept == before


def test_events_clean_never_touches_a_locked_run(cli: Cli, done: str) -> None:
    before = cli.event_lines(done)
    with acquire_lock(cli.storage, done):
        code, _out, err = cli("events", "clean", "--older-than", "0s", "-f")
        assert code == 0 and f"Skipping {done}" in err
        assert cli.event_lines(done) == before


# --------------------------------------------------------------------------- sessions


def test_sessions_clean_removes_old_completed_sessions(cli: Cli, done: str) -> None:
    failed = cli.run("echo a", "exit 3", fail=True)
    transcript = cli.storage.transcripts_dir() / "20200101_000000-abc.jsonl"
    transcript.parent.mkdir(parents=True)
    transcript.write_text("{}\n")
    with open(next(cli.event_dir(done).glob("*.jsonl")), "a") as handle:
        handle.write(json.dumps({"seq": 99, "timestamp": OLD, "event": {
            "event_type": "claude_call_completed", "json_log_location": str(transcript)}}) + "\n")
    code, out, _ = cli("sessions", "clean", "-f")
    assert code == 0 and "No completed sessions older than 7d" in out
    cli.backdate(done)
    cli.backdate(failed)
    code, out, err = cli("sessions", "clean", "-f", "--json")
    assert code == 0, err
    assert json.loads(out)["deleted"] == [done]
    assert not (cli.home / "sessions" / f"{done}.json").exists()
    assert not cli.storage.state_dir(done).exists()
    assert not cli.event_dir(done).exists()
    assert not transcript.exists()
    assert (cli.home / "sessions" / f"{failed}.json").exists()  # Failed needs --all
    code, out, _ = cli("sessions", "clean", "--all", "--yes")
    assert code == 0 and failed in out
    assert not (cli.home / "sessions" / f"{failed}.json").exists()
    code, out, _ = cli("sessions", "ls", "--json")
    assert json.loads(out) == []


def test_sessions_clean_refusals(cli: Cli, done: str) -> None:
    code, _, err = cli("sessions", "clean", "--older-than", "0s")
    assert code == 2 and "use --yes to confirm" in err
    code, out, _ = cli("sessions", "clean", "--older-than", "0s", "--dry-run")
    assert code == 0 and f"Would delete session {done}" in out
    assert (cli.home / "sessions" / f"{done}.json").exists() and cli.event_lines(done)
    with acquire_lock(cli.storage, done):
        code, out, err = cli("sessions", "clean", "--older-than", "0s", "-f")
        assert code == 0 and f"Skipping {done}" in err
    assert (cli.home / "sessions" / f"{done}.json").exists()
    assert cli.storage.checkpoint_file(done).exists()
    code, _, err = cli("sessions", "clean", "--older-than", "0s", stdin=Tty("yes\n"))
    assert code == 0 and not (cli.home / "sessions" / f"{done}.json").exists()


def test_sessions_show_unknown_id(cli: Cli) -> None:
    for sid in ("workflow-404", "../etc"):
        code, _out, err = cli("sessions", "show", sid)
        assert code == 2 and "E5005" in err and "prodigy sessions ls" in err


# --------------------------------------------------------------------------- checkpoints


def test_checkpoints_validate_valid(cli: Cli, done: str) -> None:
    code, out, _ = cli("checkpoints", "validate", done)
    assert code == 0 and "Result: valid" in out
    code, out, _ = cli("checkpoints", "validate", done, "--json")
    doc = json.loads(out)
    assert doc["valid"] and [v["status"] for v in doc["versions"]] == ["valid", "valid"]


def test_checkpoints_validate_repair_falls_back_to_prev(cli: Cli) -> None:
    # The previous version is the checkpoint of a running session, which needs its worktree;
    # an uncommitted file keeps the worktree after the run (spec 06 §7.2), so it stays valid.
    done = cli.run("echo one > one.txt", "echo two")
    assert (cli.home / "worktrees" / cli.root.name / done / "one.txt").exists()
    current = cli.storage.checkpoint_file(done)
    prev = current.with_name(current.name + ".prev")
    good = json.loads(prev.read_text())
    current.write_text('{"workflow_id": ')
    code, out, _ = cli("checkpoints", "validate", done)
    assert code == 1 and "corrupt" in out and "--repair" in out
    code, out, _ = cli("checkpoints", "validate", done, "--repair")
    assert code == 0, out
    assert "Result: valid" in out and not prev.exists()
    doc, warnings = cli.storage.read_checkpoint(done)
    assert warnings == [] and doc["timestamp"] == good["timestamp"]


def test_checkpoints_validate_inconsistent_and_hopeless(cli: Cli, done: str) -> None:
    current = cli.storage.checkpoint_file(done)
    prev = current.with_name(current.name + ".prev")
    doc = json.loads(current.read_text())
    doc["execution_state"]["current_step_index"] = 9
    doc["completed_steps"][0]["step_index"] = 5
    current.write_text(json.dumps(doc))
    code, out, _ = cli("checkpoints", "validate", done, "--json")
    report = json.loads(out)
    assert code == 1 and report["versions"][0]["status"] == "inconsistent"
    assert any("current_step_index 9" in p for p in report["versions"][0]["problems"])
    prev.write_text("[]")
    code, out, _ = cli("checkpoints", "validate", done, "--repair")
    assert code == 1 and "no valid version would be left" in out
    assert current.exists() and prev.exists()


def test_checkpoints_validate_unknown_id(cli: Cli) -> None:
    for sid in ("workflow-404", "../x"):
        code, _out, err = cli("checkpoints", "validate", sid)
        assert code == 2 and "E5003" in err and "prodigy checkpoints ls" in err


def test_checkpoints_show_version(cli: Cli, done: str) -> None:
    code, out, _ = cli("checkpoints", "show", done, "--version", "2", "--json")
    assert code == 0 and json.loads(out)["workflow_id"] == done
    code, out, _ = cli("checkpoints", "show", done, "--version", "1")
    assert code == 0 and f"Checkpoint: {done}" in out
    code, _, err = cli("checkpoints", "show", done, "--version", "3")
    assert code == 2 and "E5003" in err and "previous" in err
    code, _, err = cli("checkpoints", "show", "../x")
    assert code == 2 and "E5003" in err


def test_checkpoints_delete(cli: Cli, done: str) -> None:
    current = cli.storage.checkpoint_file(done)
    code, _, err = cli("checkpoints", "delete", done)
    assert code == 2 and "use --yes to confirm" in err and current.exists()
    with acquire_lock(cli.storage, done):
        code, _, err = cli("checkpoints", "delete", done, "--force")
        assert code == 1 and "E5004" in err and current.exists()
    code, out, _ = cli("checkpoints", "delete", done, "--force")
    assert code == 0 and "Deleted checkpoint" in out and not current.parent.exists()
    code, _, err = cli("checkpoints", "delete", done, "--force")
    assert code == 2 and "E5003" in err


def test_checkpoints_clean(cli: Cli, done: str) -> None:
    other = cli.run("echo three")
    code, _, err = cli("checkpoints", "clean")
    assert code == 2 and "Please specify --workflow-id or --all" in err
    code, _, _ = cli("checkpoints", "clean", "--all", "--workflow-id", done)
    assert code == 2
    code, _, err = cli("checkpoints", "clean", "--all")
    assert code == 2 and "use --yes to confirm" in err
    code, out, _ = cli("checkpoints", "clean", "--workflow-id", done, "-f")
    assert code == 0 and not cli.storage.checkpoint_file(done).exists()
    assert cli.storage.checkpoint_file(other).exists()
    with acquire_lock(cli.storage, other):
        code, out, err = cli("checkpoints", "clean", "--all", "-f", "--json")
        assert code == 0 and json.loads(out)["deleted"] == [] and f"Skipping {other}" in err
    code, out, _ = cli("checkpoints", "clean", "--all", "-f", "--json")
    assert code == 0 and json.loads(out)["deleted"] == [other]
    code, out, _ = cli("checkpoints", "ls")
    assert out == "No checkpoints found.\n"


def test_checkpoints_mapreduce_does_not_exist_yet(cli: Cli) -> None:
    code, out, err = cli("checkpoints", "mapreduce", "mapreduce-1")
    assert code == 2 and "does not exist yet" in err and out == ""


def test_checkpoints_ls_table_and_repair_of_a_corrupt_prev(cli: Cli, done: str) -> None:
    code, out, _ = cli("checkpoints", "ls")
    assert code == 0 and done in out and "Completed" in out
    current = cli.storage.checkpoint_file(done)
    prev = current.with_name(current.name + ".prev")
    prev.write_bytes(b"\x00garbage")
    code, out, _ = cli("checkpoints", "validate", done)
    assert code == 1 and "version 2 (previous)" in out
    code, out, _ = cli("checkpoints", "validate", done, "--repair", "--json")
    assert code == 0 and json.loads(out)["valid"] and not prev.exists() and current.exists()


def test_events_ls_limit_zero_means_all(cli: Cli, done: str) -> None:
    code, out, _ = cli("events", "ls", "--limit", "0", "--json")
    assert code == 0 and len(out.splitlines()) == len(cli.event_lines(done))
    code, out, _ = cli("events", "ls", "--limit", "1", "--json")
    assert json.loads(out)["event"]["event_type"] == "merge_finished"  # the journal's last
