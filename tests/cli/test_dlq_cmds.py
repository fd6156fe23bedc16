"""The DLQ store and `prodigy dlq list|show|stats|analyze|export|purge|clear`, in-process,
against real git repositories in temp dirs (spec 05 §13, 08 §1.4, §2.10, 09 §4.5)."""

from __future__ import annotations

import io
import json
import os
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from prodigy_cli.main import main
from prodigy_effects import dlq_store
from prodigy_effects.dlq_store import (
    add_failure,
    error_signature,
    error_type_name,
    needs_manual_review,
    read_entry,
    scan_entries,
)
from prodigy_effects.fsutil import rfc3339_ms
from prodigy_effects.journal import read_events
from prodigy_effects.locks import acquire_lock
from prodigy_effects.storage import Storage

JOB = "mapreduce-20250314_091502"
JOB2 = "mapreduce-20250315_101010"
T1 = "2025-03-14T09:15:02.113Z"
T2 = "2025-03-14T10:00:00.000Z"
FAILED = {"CommandFailed": {"exit_code": 1}}


class Tty(io.StringIO):
    """Answers on a terminal."""

    def isatty(self) -> bool:
        return True


def git(cwd: Path, *args: str) -> str:
    result = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True)
    return result.stdout


def _init(root: Path) -> None:
    root.mkdir(parents=True)
    git(root, "init", "-q", "-b", "main")
    git(root, "config", "user.email", "t@example.com")
    git(root, "config", "user.name", "Test")
    (root / "README.md").write_text("demo\n")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "init")


class Repo:
    def __init__(self, root: Path, home: Path) -> None:
        self.root = root
        self.home = home
        self.storage = Storage(home)
        self.environ = dict(os.environ, PRODIGY_HOME=str(home))

    def __call__(self, *argv: str, stdin: io.StringIO | None = None,
                 cwd: Path | None = None) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        code = main(list(argv), out=out, err=err, environ=self.environ,
                    cwd=str(cwd or self.root),
                    stdin=stdin if stdin is not None else io.StringIO(""))
        assert "Traceback" not in err.getvalue()
        assert "E9001" not in err.getvalue(), err.getvalue()
        return code, out.getvalue(), err.getvalue()

    @property
    def name(self) -> str:
        return self.root.name

    def fail(self, item: int, *, job: str = JOB, error_type: Any = FAILED,
             message: str | None = None, timestamp: str = T1, branch: bool = False,
             **fields: Any) -> dict[str, Any]:
        """Record a failure of `item_<item>` with add_failure (optionally keeping a real
        agent branch with one commit)."""
        agent = f"{job}_agent_{item}"
        if branch:
            name = f"prodigy-mapreduce-agent-{agent}"
            git(self.root, "branch", name)
            fields.setdefault("worktree_artifacts", {"worktree_path": None, "branch_name": name})
        fields.setdefault("repo_path", str(self.root))
        return add_failure(
            self.storage, self.name, job, item_id=f"item_{item}",
            item_data={"path": f"src/m{item}.py"}, error_type=error_type,
            error_message=message or f"Step 'shell: mypy src/m{item}.py' failed with exit code 1",
            timestamp=timestamp, agent_id=agent, step_failed="shell: mypy ${item.path}",
            step_index=1, duration_ms=73000, **fields)

    def job_dir(self, job: str = JOB) -> Path:
        return self.home / "dlq" / self.name / job

    def index(self, job: str = JOB) -> dict[str, Any]:
        return json.loads((self.job_dir(job) / "index.json").read_text())

    def branches(self) -> list[str]:
        return git(self.root, "branch", "--list", "--format=%(refname:short)").split()


@pytest.fixture
def repo(tmp_path: Path) -> Repo:
    _init(tmp_path / "shop")
    return Repo(tmp_path / "shop", tmp_path / "home")


def _rows(out: str) -> dict[str, list[str]]:
    lines = out.splitlines()
    assert lines[0].split()[:4] == ["ITEM", "JOB", "LAST", "ATTEMPT"]
    return {line.split()[0]: line.split() for line in lines[1:] if line.strip()}


# ------------------------------------------------------------------------------ store


def test_add_failure_writes_every_field_and_the_index(repo: Repo) -> None:
    repo.fail(4, branch=True)
    path = repo.job_dir() / "items" / "item_4.json"
    doc = json.loads(path.read_text())
    assert list(doc) == ["item_id", "item_data", "first_attempt", "last_attempt",
                         "failure_count", "failure_history", "error_signature",
                         "worktree_artifacts", "reprocess_eligible", "manual_review_required"]
    assert doc["item_id"] == "item_4" and doc["item_data"] == {"path": "src/m4.py"}
    assert doc["first_attempt"] == doc["last_attempt"] == T1
    assert doc["failure_count"] == 1
    assert doc["failure_history"] == [{
        "attempt_number": 1, "timestamp": T1, "error_type": FAILED,
        "error_message": "Step 'shell: mypy src/m4.py' failed with exit code 1",
        "stack_trace": None, "agent_id": f"{JOB}_agent_4",
        "step_failed": "shell: mypy ${item.path}", "step_index": 1, "exit_code": 1,
        "duration_ms": 73000}]
    assert doc["error_signature"] == error_signature(FAILED, doc["failure_history"][0][
        "error_message"])
    assert len(doc["error_signature"]) == 16
    assert doc["worktree_artifacts"] == {
        "worktree_path": None, "branch_name": f"prodigy-mapreduce-agent-{JOB}_agent_4",
        "uncommitted_changes": None, "error_logs": None}
    assert doc["reprocess_eligible"] is True and doc["manual_review_required"] is False
    assert repo.index() == {"job_id": JOB, "item_count": 1, "item_ids": ["item_4"],
                            "updated_at": T1, "repo_path": str(repo.root)}
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]


def test_repeated_failure_increments_count_and_appends_history(repo: Repo) -> None:
    repo.fail(4, branch=True)
    repo.fail(10)
    repo.fail(2)
    doc = repo.fail(4, error_type="Timeout", message="Agent timed out after 2 seconds",
                    timestamp=T2, conflicting_files=["a.py"], json_log_location="/l.jsonl")
    assert doc["failure_count"] == 2
    assert [r["attempt_number"] for r in doc["failure_history"]] == [1, 2]
    second = doc["failure_history"][1]
    assert second["error_type"] == "Timeout" and second["exit_code"] is None
    assert second["conflicting_files"] == ["a.py"] and second["json_log_location"] == "/l.jsonl"
    assert "error_context" not in second  # optional fields are omitted when empty
    assert doc["first_attempt"] == T1 and doc["last_attempt"] == T2
    assert doc["error_signature"] == error_signature("Timeout", "Agent timed out after 2 seconds")
    # the kept branch is still on record (artifacts omitted → kept)
    assert doc["worktree_artifacts"]["branch_name"].endswith("_agent_4")
    on_disk = read_entry(repo.storage, repo.name, JOB, "item_4")
    assert on_disk is not None and on_disk.doc == doc and on_disk.failure_count == 2
    # natural order in the index: item_2 before item_10
    assert repo.index()["item_ids"] == ["item_2", "item_4", "item_10"]
    assert repo.index()["item_count"] == 3 and repo.index()["updated_at"] == T2
    # None keeps the record too; an empty mapping clears it; a new one replaces it
    doc = repo.fail(4, worktree_artifacts=None)
    assert doc["failure_count"] == 3 and doc["worktree_artifacts"]["branch_name"]
    doc = repo.fail(4, worktree_artifacts={"branch_name": "b2"})
    assert doc["worktree_artifacts"] == {"worktree_path": None, "branch_name": "b2",
                                         "uncommitted_changes": None, "error_logs": None}
    doc = repo.fail(4, worktree_artifacts={})
    assert doc["failure_count"] == 5 and doc["worktree_artifacts"] is None


def test_error_types_signatures_and_review_flags() -> None:
    assert error_type_name("Timeout") == "Timeout"
    assert error_type_name({"CommandFailed": {"exit_code": 2}}) == "CommandFailed"
    assert error_type_name(None) == "Unknown" and error_type_name({"a": 1, "b": 2}) == "Unknown"
    assert dlq_store.error_type_label(FAILED) == "CommandFailed (exit 1)"
    # digits, hex ids, case and spacing do not change the signature; the type does
    a = error_signature(FAILED, "Merge of 4f1c2e0d9a failed at line 12\nmore")
    b = error_signature(FAILED, "merge  of 77aa88bb99 failed at line 345")
    assert a == b and a != error_signature("Timeout", "Merge of 4f1c2e0d9a failed at line 12")
    assert needs_manual_review("ValidationFailed", "score 40 < 80")
    assert needs_manual_review(FAILED, "bash: ./x: Permission denied")
    assert needs_manual_review("Unknown", "database CORRUPT")
    assert not needs_manual_review(FAILED, "exit code 1")


def test_review_flags_and_mask_reach_the_entry(repo: Repo) -> None:
    doc = repo.fail(1, error_type="ValidationFailed", message="token s3cr3t rejected: access denied",
                    mask=lambda text: text.replace("s3cr3t", "***"))
    assert doc["manual_review_required"] is True and doc["reprocess_eligible"] is False
    text = (repo.job_dir() / "items" / "item_1.json").read_text()
    assert "s3cr3t" not in text and "token *** rejected" in text


def test_legacy_location_is_read_and_migrated_on_change(repo: Repo) -> None:
    legacy = repo.job_dir() / "mapreduce" / "dlq" / JOB / "items"
    legacy.mkdir(parents=True)
    (legacy / "item_7.json").write_text(json.dumps({
        "item_id": "item_7", "item_data": "a.py", "first_attempt": T1, "last_attempt": T1,
        "failure_count": 1, "failure_history": [
            {"attempt_number": 1, "timestamp": T1, "error_type": "WorktreeError",
             "error_message": "could not create worktree", "stack_trace": None,
             "agent_id": f"{JOB}_agent_7", "step_failed": "worktree"}],
        "error_signature": "0123456789abcdef", "worktree_artifacts": None,
        "reprocess_eligible": True, "manual_review_required": False, "original_extra": 5}))
    code, out, _ = repo("dlq", "list")
    assert code == 0 and _rows(out)["item_7"][1] == JOB
    assert _rows(out)["item_7"][5] == "WorktreeError"
    code, out, _ = repo("dlq", "show", "item_7", "--json")
    assert code == 0 and json.loads(out)["original_extra"] == 5
    entry = read_entry(repo.storage, repo.name, JOB, "item_7")
    assert entry is not None and entry.legacy
    # a new failure moves it to the new place, with the history continued
    doc = repo.fail(7, timestamp=T2)
    assert doc["failure_count"] == 2 and doc["first_attempt"] == T1
    assert doc["original_extra"] == 5
    assert not (legacy / "item_7.json").exists()
    assert (repo.job_dir() / "items" / "item_7.json").exists()
    assert repo.index()["item_ids"] == ["item_7"]


def test_corrupt_entry_is_a_warning_not_a_traceback(repo: Repo) -> None:
    repo.fail(1)
    repo.fail(2)
    (repo.job_dir() / "items" / "item_2.json").write_text("{not json")
    (repo.job_dir() / "items" / "item_3.json").write_text('{"item_id": "item_9"}')
    entries, warnings = scan_entries(repo.storage, repo.name)
    assert [e.item_id for e in entries] == ["item_1"]
    assert len(warnings) == 2 and all(w.startswith("W5003: ") for w in warnings)
    code, out, err = repo("dlq", "list")
    assert code == 0 and set(_rows(out)) == {"item_1"}
    assert "warning[W5003]" in err and "item_2.json" in err and "not valid JSON" in err
    code, _, err = repo("dlq", "show", "item_2")
    assert code == 2 and "E6011" in err
    code, out, err = repo("dlq", "stats", "--json")
    assert code == 0 and json.loads(out)["total"] == 1 and "W5003" in err
    # a new failure of the corrupt item starts a new entry and keeps the bad file aside
    doc = repo.fail(2)
    assert doc["failure_count"] == 1
    assert (repo.job_dir() / "items" / "item_2.json.corrupt").exists()


# ------------------------------------------------------------------------ list / show


def test_list_table_json_and_filters(repo: Repo) -> None:
    code, out, _ = repo("dlq", "list")
    assert (code, out) == (0, "No items in the DLQ.\n")
    repo.fail(1)
    repo.fail(2, error_type="ValidationFailed", message="score 40 below 80", timestamp=T2)
    repo.fail(1, job=JOB2)
    code, out, _ = repo("dlq", "list")
    lines = out.splitlines()
    assert lines[0].split() == ["ITEM", "JOB", "LAST", "ATTEMPT", "FAILURES", "ERROR", "TYPE",
                                "SIGNATURE", "ELIGIBLE", "ERROR"]
    assert lines[1].split()[:2] == ["item_2", JOB]  # newest first
    assert len(lines) == 4
    code, out, _ = repo("dlq", "list", "--job-id", JOB)
    rows = _rows(out)
    assert set(rows) == {"item_1", "item_2"}
    assert rows["item_1"][2:9] == ["2025-03-14", "09:15:02", "1", "CommandFailed",
                                   rows["item_1"][6], "yes", "Step"]
    assert rows["item_2"][5] == "ValidationFailed" and rows["item_2"][7] == "no"
    code, out, _ = repo("dlq", "list", "--job-id", JOB, "--eligible")
    assert set(_rows(out)) == {"item_1"}
    code, out, _ = repo("dlq", "list", "--limit", "1")
    assert "Showing 1 of 3 items" in out
    code, out, err = repo("dlq", "list", "--json")
    docs = json.loads(out)
    assert code == 0 and err == "" and len(docs) == 3
    assert {(d["job_id"], d["item_id"]) for d in docs} == {(JOB, "item_1"), (JOB, "item_2"),
                                                           (JOB2, "item_1")}
    assert all(d["repo"] == "shop" and d["failure_count"] == 1 for d in docs)
    code, out, _ = repo("dlq", "list", "--job-id", "mapreduce-unknown")
    assert (code, out) == (0, "No items in the DLQ.\n")
    code, _, err = repo("dlq", "list", "--job-id", "../x")
    assert code == 2 and "E8001" in err


def test_show_human_json_and_ambiguity(repo: Repo) -> None:
    repo.fail(1, branch=True)
    repo.fail(1, job=JOB2)
    code, _, err = repo("dlq", "show", "item_1")
    assert code == 2 and "E6011" in err and JOB in err and JOB2 in err and "--job-id" in err
    code, out, _ = repo("dlq", "show", "item_1", "--job-id", JOB, "--json")
    assert code == 0
    assert json.loads(out) == json.loads((repo.job_dir() / "items" / "item_1.json").read_text())
    code, out, _ = repo("dlq", "inspect", "item_1", "--job-id", JOB)
    assert code == 0
    assert "Item:         item_1" in out and f"Job:          {JOB}" in out
    assert "Error type:   CommandFailed (exit 1)" in out
    assert f"Branch kept:  prodigy-mapreduce-agent-{JOB}_agent_1" in out
    assert "#1  2025-03-14 09:15:02  CommandFailed (exit 1)" in out
    assert "error: Step 'shell: mypy src/m1.py' failed with exit code 1" in out
    assert '"path": "src/m1.py"' in out
    code, _, err = repo("dlq", "show", "item_99")
    assert code == 2 and "error[E6011]: no DLQ item 'item_99'" in err


def test_scope_other_repositories(repo: Repo, tmp_path: Path) -> None:
    repo.fail(1)
    _init(tmp_path / "other")
    other = Repo(tmp_path / "other", repo.home)
    other.fail(5, job=JOB2)
    # a same-named repository elsewhere: its job's index records another path
    _init(tmp_path / "x" / "shop")
    twin = Repo(tmp_path / "x" / "shop", repo.home)
    twin.fail(6, job="mapreduce-twin")
    code, out, _ = repo("dlq", "list")
    assert set(_rows(out)) == {"item_1"}
    code, out, _ = repo("dlq", "list", "--all-repos")
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["ITEM", "JOB", "REPO"]
    assert {line.split()[0] for line in lines[1:]} == {"item_1", "item_5", "item_6"}
    code, out, _ = repo("dlq", "list", "-p", str(other.root))
    assert set(_rows(out)) == {"item_5"}
    code, out, _ = repo("dlq", "list", cwd=tmp_path)  # outside a repository: everything
    assert len(out.splitlines()) == 4
    code, _, err = repo("dlq", "list", "-p", "missing-dir")
    assert code == 2 and "no such directory" in err


def test_stats_analyze_and_export(repo: Repo, tmp_path: Path) -> None:
    code, out, _ = repo("dlq", "stats")
    assert (code, out) == (0, "No items in the DLQ.\n")
    repo.fail(1)
    repo.fail(2, timestamp=T2)
    repo.fail(3, error_type="ValidationFailed", message="score 40 below 80")
    repo.fail(1, job=JOB2, error_type="Timeout", message="Agent timed out after 5 seconds")
    code, out, _ = repo("dlq", "stats", "--json")
    report = json.loads(out)
    assert report["total"] == 4 and report["eligible"] == 3 and report["manual_review"] == 1
    assert report["by_job"] == {JOB: 3, JOB2: 1}
    assert report["by_error_type"] == {"CommandFailed": 2, "ValidationFailed": 1, "Timeout": 1}
    mypy = error_signature(FAILED, "Step 'shell: mypy src/m1.py' failed with exit code 1")
    assert report["by_signature"][mypy]["count"] == 2
    assert report["oldest_failure"] == T1 and report["newest_failure"] == T2
    code, out, _ = repo("dlq", "stats")
    assert "Total items:    4" in out and "Manual review:  1" in out
    by_job = out.split("By job:\n", 1)[1].split("By error type:\n")[0]
    assert [line.split() for line in by_job.splitlines()[1:]] == [[JOB, "3"], [JOB2, "1"]]
    by_type = out.split("By error type:\n", 1)[1].split("By signature:\n")[0]
    assert [line.split() for line in by_type.splitlines()[1:]] == [
        ["CommandFailed", "2"], ["ValidationFailed", "1"], ["Timeout", "1"]]
    assert mypy in out.split("By signature:\n", 1)[1]
    code, out, _ = repo("dlq", "stats", "--job-id", JOB2, "--json")
    assert json.loads(out)["by_job"] == {JOB2: 1}

    code, out, _ = repo("dlq", "analyze", "--json", "--export", "analysis.json")
    report = json.loads(out)
    assert report["patterns"][0]["signature"] == mypy and report["patterns"][0]["count"] == 2
    assert report["patterns"][0]["sample_items"] == [f"{JOB}/item_1", f"{JOB}/item_2"]
    assert json.loads((repo.root / "analysis.json").read_text()) == report
    code, out, _ = repo("dlq", "analyze")
    assert code == 0 and "4 DLQ item(s), 3 error pattern(s)" in out

    code, out, _ = repo("dlq", "export", str(tmp_path / "dlq.csv"), "--format", "csv")
    assert code == 0 and "Exported 4 DLQ item(s)" in out
    lines = (tmp_path / "dlq.csv").read_text().splitlines()
    assert lines[0].startswith("repo,job_id,item_id,failure_count") and len(lines) == 5
    code, out, _ = repo("dlq", "export", str(tmp_path / "dlq.json"), "--job-id", JOB2)
    assert [d["item_id"] for d in json.loads((tmp_path / "dlq.json").read_text())] == ["item_1"]


def test_retry_of_an_unknown_job_and_a_bare_dlq(repo: Repo) -> None:
    # the DLQ holds entries of JOB, but no job state exists for it: nothing to run
    code, out, err = repo("dlq", "retry", JOB, "--item", "item_1", "--dry-run")
    assert (code, out) == (2, "")
    assert f"error[E6010]: no MapReduce job {JOB}" in err
    code, _, err = repo("dlq")
    assert code == 2 and "needs a subcommand" in err


# ------------------------------------------------------------------------------- purge


def _removed_events(repo: Repo, job: str = JOB) -> list[dict[str, Any]]:
    run_dir = repo.home / "events" / repo.name / job
    return [e["event"] for e in read_events(run_dir)
            if e["event"]["event_type"] == "dlq_item_removed"]


def test_purge_needs_confirmation(repo: Repo) -> None:
    repo.fail(1, branch=True)
    code, out, err = repo("dlq", "purge", "--job-id", JOB)
    assert code == 2 and "use --yes to confirm" in err
    assert "item_1" in out  # the plan was shown
    assert (repo.job_dir() / "items" / "item_1.json").exists()
    assert f"prodigy-mapreduce-agent-{JOB}_agent_1" in repo.branches()
    code, out, err = repo("dlq", "purge", "--job-id", JOB, stdin=Tty("n\n"))
    assert code == 0 and "(y/N)" in err and "Cancelled" in err
    assert (repo.job_dir() / "items" / "item_1.json").exists()
    code, out, err = repo("dlq", "purge", "--job-id", JOB, stdin=Tty("y\n"))
    assert code == 0 and "Purged 1 DLQ item(s); deleted 1 branch(es)." in out
    assert not repo.job_dir().exists()  # nothing left of the job's DLQ
    assert repo.branches() == ["main"]


def test_purge_item_deletes_branch_rewrites_index_and_logs(repo: Repo) -> None:
    repo.fail(1, branch=True)
    repo.fail(2, branch=True)
    repo.fail(3)
    keep = f"prodigy-mapreduce-agent-{JOB}_agent_2"
    code, out, err = repo("dlq", "purge", "--job-id", JOB, "--item", "item_1",
                          "--item", "item_3", "-y")
    assert code == 0, err
    assert "Purged 2 DLQ item(s); deleted 1 branch(es)." in out
    assert git(repo.root, "branch", "--list", f"prodigy-mapreduce-agent-{JOB}_agent_1") == ""
    assert git(repo.root, "branch", "--list", keep).strip() == keep
    assert sorted(p.name for p in (repo.job_dir() / "items").iterdir()) == ["item_2.json"]
    index = repo.index()
    assert index["item_count"] == 1 and index["item_ids"] == ["item_2"]
    assert index["updated_at"] != T1  # rewritten now
    events = _removed_events(repo)
    assert [(e["item_id"], e["reason"], e["job_id"]) for e in events] == [
        ("item_1", "purged", JOB), ("item_3", "purged", JOB)]
    # --yes long form; the last item goes and the job directory with it
    code, out, _ = repo("dlq", "purge", "--yes")
    assert code == 0 and not repo.job_dir().exists() and repo.branches() == ["main"]
    seqs = [e["seq"] for e in read_events(repo.home / "events" / repo.name / JOB)]
    assert seqs == [1, 2, 3]


def test_purge_item_needs_job_when_ambiguous_and_must_exist(repo: Repo) -> None:
    repo.fail(1)
    repo.fail(1, job=JOB2)
    code, _, err = repo("dlq", "purge", "--item", "item_1", "-y")
    assert code == 2 and "E6011" in err and JOB in err and JOB2 in err
    code, _, err = repo("dlq", "purge", "--item", "item_9", "-y")
    assert code == 2 and "no DLQ item 'item_9'" in err
    assert len(scan_entries(repo.storage, repo.name)[0]) == 2
    code, out, _ = repo("dlq", "purge", "--item", "item_1", "--job-id", JOB2, "-y")
    assert code == 0 and "Purged 1" in out
    assert [(e.job_id, e.item_id) for e in scan_entries(repo.storage)[0]] == [(JOB, "item_1")]


def test_purge_older_than_days(repo: Repo) -> None:
    repo.fail(1, timestamp="2020-01-01T00:00:00.000Z")
    repo.fail(2, timestamp=rfc3339_ms(datetime.now(UTC)))
    code, out, _ = repo("dlq", "purge", "--older-than-days", "30", "-y")
    assert code == 0 and "Purged 1 DLQ item(s)" in out
    assert repo.index()["item_ids"] == ["item_2"]
    code, out, _ = repo("dlq", "purge", "--older-than-days", "30", "-y")
    assert (code, out) == (0, "No items in the DLQ match.\n")


def test_clear_alias_with_positional_job(repo: Repo) -> None:
    repo.fail(1)
    repo.fail(2, job=JOB2)
    code, out, _ = repo("dlq", "clear", JOB2, "-y")
    assert code == 0 and "Purged 1" in out
    assert not repo.job_dir(JOB2).exists() and repo.job_dir(JOB).exists()
    code, _, err = repo("dlq", "clear", JOB, "--job-id", JOB2, "-y")
    assert code == 2 and "two different job ids" in err


def test_purge_removes_a_kept_worktree_and_its_branch(repo: Repo) -> None:
    agent = f"{JOB}_agent_3"
    branch = f"prodigy-mapreduce-agent-{agent}"
    path = repo.home / "worktrees" / "session-1" / f"mapreduce-agent-{agent}"
    path.parent.mkdir(parents=True)
    git(repo.root, "worktree", "add", "-q", "-b", branch, str(path))
    (path / "new.txt").write_text("x\n")
    git(path, "add", "-A")
    git(path, "commit", "-qm", "agent work")
    repo.fail(3, worktree_artifacts={"worktree_path": str(path), "branch_name": branch,
                                     "uncommitted_changes": None, "error_logs": None})
    code, out, err = repo("dlq", "purge", "-y")
    assert code == 0, err
    assert f"worktree {path}" in out
    assert not path.exists() and repo.branches() == ["main"]
    assert str(path) not in git(repo.root, "worktree", "list")


def test_purge_keeps_entry_when_branch_cannot_be_deleted(repo: Repo, tmp_path: Path) -> None:
    agent = f"{JOB}_agent_5"
    branch = f"prodigy-mapreduce-agent-{agent}"
    outside = tmp_path / "elsewhere"  # a worktree outside the storage root: never removed
    git(repo.root, "worktree", "add", "-q", "-b", branch, str(outside))
    repo.fail(5, worktree_artifacts={"worktree_path": str(outside), "branch_name": branch})
    repo.fail(6)
    code, out, err = repo("dlq", "purge", "-y")
    assert code == 1
    assert "warning[W4005]: could not delete branch" in err and branch in err
    assert "Purged 1 DLQ item(s)" in out
    assert outside.exists() and branch in repo.branches()
    assert repo.index()["item_ids"] == ["item_5"]


def test_purge_skips_a_running_job(repo: Repo) -> None:
    repo.fail(1)
    repo.fail(2, job=JOB2)
    with acquire_lock(repo.storage, JOB):
        code, out, err = repo("dlq", "purge", "-y")
    assert code == 0
    assert f"Skipping 1 item(s) of job {JOB}: the job is running" in err
    assert "Purged 1" in out
    assert repo.job_dir(JOB).exists() and not repo.job_dir(JOB2).exists()


def test_purge_outside_the_repository_keeps_branches_it_cannot_reach(
        repo: Repo, tmp_path: Path) -> None:
    repo.fail(1, branch=True, repo_path=None)
    # the index has no repository path, and the purge runs outside any repository
    index = repo.index()
    assert "repo_path" not in index
    code, _, err = repo("dlq", "purge", "-y", cwd=tmp_path)
    assert code == 1 and "not known here" in err
    assert (repo.job_dir() / "items" / "item_1.json").exists()
    # with the repository path recorded, it works from anywhere
    index["repo_path"] = str(repo.root)
    (repo.job_dir() / "index.json").write_text(json.dumps(index))
    code, out, err = repo("dlq", "purge", "-y", cwd=tmp_path)
    assert code == 0, err
    assert "deleted 1 branch(es)" in out
    assert repo.branches() == ["main"] and not repo.job_dir().exists()
