"""`prodigy worktree ls | clean | clean-orphaned | merge`, in-process, against real git
repositories and real worktrees in temp dirs (spec 06 §8, 08 §1.4, §2.7, 09 §4.6)."""

from __future__ import annotations

import io
import json
import os
import shutil
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest

from prodigy_cli.main import main
from prodigy_effects.locks import acquire_lock
from prodigy_effects.storage import Storage
from prodigy_effects.worktree_admin import (
    ahead_count,
    has_uncommitted,
    is_merged,
    read_all_meta,
    remove_meta,
    remove_worktree,
    repo_of,
    save_meta,
    uncommitted_count,
)

NOW = "2030-01-01T00:00:00.000Z"
OLD = "2020-01-01T00:00:00.000Z"


class Tty(io.StringIO):
    """Answers on a terminal."""

    def isatty(self) -> bool:
        return True


def git(cwd: Path, *args: str) -> str:
    result = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True)
    return result.stdout


class Repo:
    def __init__(self, root: Path, home: Path) -> None:
        self.root = root
        self.home = home
        self.storage = Storage(home)
        self.environ = dict(os.environ, PRODIGY_HOME=str(home))
        self.environ.pop("PRODIGY_PROFILE", None)

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

    def path(self, name: str, scope: str | None = None) -> Path:
        return self.home / "worktrees" / (scope or self.name) / name

    def add(self, name: str, *, scope: str | None = None, commits: int = 0,
            dirty: bool = False, meta: bool = True, branch: str | None = None,
            **fields: Any) -> Path:
        """A real worktree `prodigy-<name>` at `<storage>/worktrees/<scope>/<name>`."""
        path = self.path(name, scope)
        path.parent.mkdir(parents=True, exist_ok=True)
        branch = branch or f"prodigy-{name}"
        git(self.root, "worktree", "add", "-q", "-b", branch, str(path))
        for i in range(commits):
            (path / f"{name}-{i}.txt").write_text(f"{i}\n")
            git(path, "add", "-A")
            git(path, "commit", "-qm", f"{name} {i}")
        if dirty:
            (path / "README.md").write_text("changed\n")
        if meta:
            self.meta(name, scope=scope, branch=branch, path=str(path), **fields)
        return path

    def meta(self, name: str, *, scope: str | None = None, **fields: Any) -> None:
        doc: dict[str, Any] = {
            "session_id": f"workflow-{abs(hash(name)) % 10**9}", "worktree_name": name,
            "branch": f"prodigy-{name}", "original_branch": "main", "created_at": NOW,
            "updated_at": NOW, "status": "completed",
            "iterations": {"completed": 1, "max": 1},
            "stats": {"files_changed": 0, "commits": 0, "last_commit_sha": None},
            "merged": False, "merged_at": None, "error": None, "merge_prompt_shown": False,
            "merge_prompt_response": None, "interrupted_at": None, "interruption_type": None,
            "resumable": True, "path": str(self.path(name, scope)),
            "repo_path": str(self.root), "workflow_path": str(self.root / "wf.yml"),
            "kind": "session", "job_id": None,
        }
        doc.update(fields)
        save_meta(self.storage, scope or self.name, doc)

    def meta_file(self, name: str, scope: str | None = None) -> Path:
        return self.home / "worktrees" / (scope or self.name) / ".metadata" / f"{name}.json"

    def branches(self) -> list[str]:
        return git(self.root, "branch", "--list", "--format=%(refname:short)").split()

    def worktrees(self) -> list[str]:
        lines = git(self.root, "worktree", "list", "--porcelain").splitlines()
        return [os.path.realpath(x.removeprefix("worktree ")) for x in lines
                if x.startswith("worktree ")]


def _init(root: Path) -> None:
    root.mkdir(parents=True)
    git(root, "init", "-q", "-b", "main")
    git(root, "config", "user.email", "t@example.com")
    git(root, "config", "user.name", "Test")
    (root / "README.md").write_text("demo\n")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "init")


@pytest.fixture
def repo(tmp_path: Path) -> Repo:
    _init(tmp_path / "shop")
    return Repo(tmp_path / "shop", tmp_path / "home")


def _rows(out: str) -> dict[str, list[str]]:
    lines = out.splitlines()
    assert lines[0] == "Active Prodigy worktrees:"
    assert lines[1].split() == ["NAME", "BRANCH", "TARGET", "STATUS", "AHEAD", "CREATED"]
    rows: dict[str, list[str]] = {}
    for line in lines[2:]:
        if not line.strip() or line.startswith("  "):
            break
        cells = line.split()
        rows[cells[0]] = cells
    return rows


# ----------------------------------------------------------------------------------- ls


def test_ls_without_worktrees(repo: Repo) -> None:
    code, out, err = repo("worktree", "ls")
    assert (code, out, err) == (0, "No active Prodigy worktrees found.\n", "")
    code, out, _ = repo("worktree", "list", "--json")
    assert code == 0 and json.loads(out) == []


def test_ls_table_and_json(repo: Repo) -> None:
    repo.add("done", status="completed")
    repo.add("ahead", commits=2, status="failed")
    repo.meta("merged-gone", status="merged", merged=True)  # no directory: not active
    repo.meta("failed-gone", status="failed")  # no directory but still interesting
    repo.add("stray", meta=False)  # a directory without metadata
    code, out, _ = repo("worktree", "ls")
    assert code == 0
    rows = _rows(out)
    assert set(rows) == {"done", "ahead", "failed-gone", "stray"}
    assert rows["done"][:5] == ["done", "prodigy-done", "main", "completed", "0"]
    assert rows["ahead"][:5] == ["ahead", "prodigy-ahead", "main", "failed", "2"]
    assert rows["stray"][:5] == ["stray", "prodigy-stray", "main", "unknown", "0"]
    assert rows["failed-gone"][3:5] == ["failed", "(missing)"]
    assert rows["done"][5:] == ["2030-01-01", "00:00"]

    code, out, _ = repo("worktree", "ls", "--json")
    docs = {d["worktree_name"]: d for d in json.loads(out)}
    assert set(docs) == {"done", "ahead", "failed-gone", "stray"}
    assert docs["ahead"]["ahead"] == 2 and docs["done"]["ahead"] == 0
    assert docs["ahead"]["path"] == str(repo.path("ahead"))
    assert docs["ahead"]["session_id"] and docs["ahead"]["iterations"] == {"completed": 1,
                                                                            "max": 1}
    assert docs["stray"]["status"] == "unknown" and docs["stray"]["path"] == str(
        repo.path("stray"))
    assert docs["failed-gone"]["ahead"] is None  # its branch does not exist


def test_ls_detailed(repo: Repo) -> None:
    repo.add("broken", commits=1, dirty=True, status="failed", session_id="workflow-77")
    repo.add("fine", status="completed", session_id="workflow-78")
    code, out, _ = repo("worktree", "ls", "--detailed")
    assert code == 0
    block = out.split("\nbroken\n", 1)[1].split("\n\n", 1)[0]
    assert f"Path:        {repo.path('broken')}" in block
    assert f"Workflow:    {repo.root / 'wf.yml'}" in block
    assert "Last commit:" in block and "broken 0" in block
    assert "Uncommitted: 1 change(s)" in block
    assert "Resume with: prodigy resume workflow-77" in block
    fine = out.split("\nfine\n", 1)[1]
    assert "Uncommitted: 0 change(s)" in fine and "prodigy resume" not in fine
    code, out, _ = repo("worktree", "ls", "--detailed", "--json")
    docs = {d["worktree_name"]: d for d in json.loads(out)}
    assert docs["broken"]["uncommitted_changes"] == 1
    assert docs["broken"]["resume_command"] == "prodigy resume workflow-77"
    assert docs["fine"]["resume_command"] is None


def test_ls_from_a_linked_worktree_uses_the_main_repository(repo: Repo) -> None:
    path = repo.add("inner", commits=1)
    for argv in (["worktree", "ls", "-p", str(path)], ["worktree", "ls"]):
        code, out, _ = repo(*argv, cwd=path if argv == ["worktree", "ls"] else None)
        assert code == 0 and set(_rows(out)) == {"inner"}
    assert repo_of(path) == (os.path.realpath(repo.root), "shop")
    assert repo_of(repo.root / ".git") is None


def test_ls_keeps_repositories_with_the_same_name_apart(repo: Repo, tmp_path: Path) -> None:
    _init(tmp_path / "other" / "shop")
    other = Repo(tmp_path / "other" / "shop", repo.home)
    other.add("theirs", commits=1)
    repo.add("ours")
    code, out, _ = repo("worktree", "ls")
    assert code == 0 and set(_rows(out)) == {"ours"}
    code, out, _ = other("worktree", "ls")
    assert code == 0 and set(_rows(out)) == {"theirs"}
    code, out, _ = repo("worktree", "ls", "--all-repos")
    assert code == 0
    lines = out.splitlines()
    assert lines[1].split()[-1] == "REPO"
    assert {line.split()[0] for line in lines[2:]} == {"ours", "theirs"}
    # outside a repository: as --all-repos (spec 08 §1.5)
    _, out, _ = repo("worktree", "ls", "--json", cwd=tmp_path)
    assert {d["worktree_name"] for d in json.loads(out)} == {"ours", "theirs"}


def test_ls_skips_a_corrupt_metadata_file_with_a_warning(repo: Repo) -> None:
    repo.add("good")
    bad = repo.meta_file("bad")
    bad.write_text("{not json")
    code, out, err = repo("worktree", "ls")
    assert code == 0 and set(_rows(out)) == {"good"}
    assert "warning[W5003]" in err and str(bad) in err


# -------------------------------------------------------------------------------- clean


def test_clean_without_a_selector(repo: Repo) -> None:
    repo.add("keep")
    code, out, err = repo("worktree", "clean")
    assert code == 2 and out == ""
    assert "No worktrees specified for cleanup. Use --all or specify a worktree name." in err
    assert repo.path("keep").is_dir()


def test_clean_named_merged_worktree(repo: Repo) -> None:
    repo.add("one")
    repo.add("two")
    code, out, err = repo("worktree", "clean", "one", "-y")
    assert code == 0, err
    assert "Removed one" in out
    assert not repo.path("one").exists() and not repo.meta_file("one").exists()
    assert "prodigy-one" not in repo.branches()
    assert os.path.realpath(repo.path("one")) not in repo.worktrees()
    assert repo.path("two").is_dir() and "prodigy-two" in repo.branches()


def test_clean_skips_unmerged_and_dirty_worktrees_unless_forced(repo: Repo) -> None:
    repo.add("clean")
    repo.add("ahead", commits=1)
    repo.add("dirty", dirty=True)
    code, out, err = repo("worktree", "clean", "--all", "-y")
    assert code == 0, err
    assert "Skipping ahead: prodigy-ahead has 1 commit(s) not on main" in out
    assert "Skipping dirty: it has 1 uncommitted change(s)" in out
    assert not repo.path("clean").exists() and "prodigy-clean" not in repo.branches()
    assert repo.path("ahead").is_dir() and repo.path("dirty").is_dir()
    assert repo.meta_file("ahead").exists() and repo.meta_file("dirty").exists()

    # a named worktree that is skipped makes the command fail
    code, out, _ = repo("worktree", "clean", "ahead", "-y")
    assert code == 1 and "Skipping ahead" in out and repo.path("ahead").is_dir()

    code, out, err = repo("worktree", "clean", "--all", "--force")
    assert code == 0, err
    for name in ("ahead", "dirty"):
        assert not repo.path(name).exists() and not repo.meta_file(name).exists()
        assert f"prodigy-{name}" not in repo.branches()
    assert repo.branches() == ["main"] and repo.worktrees() == [os.path.realpath(repo.root)]


def test_clean_merged_only(repo: Repo) -> None:
    repo.add("merged")
    path = repo.add("was-ahead", commits=1)
    git(repo.root, "merge", "-q", "--no-ff", "-m", "merge", "prodigy-was-ahead")
    repo.add("unmerged", commits=1)
    repo.add("dirty-merged", dirty=True)
    code, out, err = repo("worktree", "clean", "--merged-only", "-y")
    assert code == 0, err
    assert not repo.path("merged").exists() and not path.exists()
    assert "prodigy-was-ahead" not in repo.branches()
    assert repo.path("unmerged").is_dir() and "Skipping unmerged" not in out
    assert repo.path("dirty-merged").is_dir() and "Skipping dirty-merged" in out


def test_clean_dry_run_changes_nothing(repo: Repo) -> None:
    repo.add("a")
    repo.add("b", commits=1)
    before = (repo.branches(), repo.worktrees(), sorted(repo.home.rglob("*.json")))
    code, out, _ = repo("worktree", "clean", "--all", "--force", "--dry-run")
    assert code == 0
    assert f"Would remove a: worktree {repo.path('a')}, branch prodigy-a" in out
    assert "Would remove b: worktree" in out and "branch prodigy-b (not merged)" in out
    assert "nothing was changed" in out
    assert (repo.branches(), repo.worktrees(), sorted(repo.home.rglob("*.json"))) == before
    code, out, _ = repo("worktree", "clean", "--all", "--dry-run", "--json")
    report = json.loads(out)
    assert report["dry_run"] and report["would_remove"] == ["a"]
    assert report["skipped"][0]["name"] == "b"


def test_clean_never_touches_a_worktree_held_by_a_running_session(repo: Repo) -> None:
    repo.add("busy", session_id="workflow-1", status="in_progress")
    repo.add("idle", session_id="workflow-2", status="interrupted")
    with acquire_lock(repo.storage, "workflow-1"):
        code, out, _ = repo("worktree", "clean", "busy", "--force")
        assert code == 1
        assert f"Skipping busy: in use by a running session (PID {os.getpid()}" in out
        assert repo.path("busy").is_dir() and repo.meta_file("busy").exists()
        code, out, _ = repo("worktree", "clean", "--all", "-f")
        assert code == 0 and "Skipping busy" in out
        assert repo.path("busy").is_dir() and not repo.path("idle").exists()
    # a stale lock (this host, process gone) does not keep it
    dead = subprocess.Popen(["true"])
    dead.wait()
    acquire_lock(repo.storage, "workflow-1", pid=dead.pid)
    code, _, err = repo("worktree", "clean", "busy", "-y")
    assert code == 0, err
    assert not repo.path("busy").exists()


def test_clean_asks_for_confirmation(repo: Repo) -> None:
    repo.add("x")
    code, _, err = repo("worktree", "clean", "x")
    assert code == 2 and "use --yes to confirm" in err and repo.path("x").is_dir()
    code, _, err = repo("worktree", "clean", "x", stdin=Tty("n\n"))
    assert code == 0 and "(y/N)" in err and repo.path("x").is_dir()
    code, out, err = repo("worktree", "clean", "x", stdin=Tty("y\n"))
    assert code == 0 and "Removed x" in out and not repo.path("x").exists()


def test_clean_unknown_name(repo: Repo) -> None:
    repo.add("real")
    code, out, err = repo("worktree", "clean", "real", "ghost", "-y")
    assert code == 2 and "E4006" in err and "ghost" in err and out == ""
    assert repo.path("real").is_dir()
    code, _, err = repo("worktree", "clean", "real", "--all")
    assert code == 2 and "E8001" in err


def test_clean_older_than(repo: Repo) -> None:
    repo.add("old", created_at=OLD)
    repo.add("new", created_at="2999-01-01T00:00:00.000Z")
    code, _, _ = repo("worktree", "clean", "--older-than", "soon")
    assert code == 2
    code, _, err = repo("worktree", "clean", "--older-than", "7d", "-y")
    assert code == 0, err
    assert not repo.path("old").exists() and repo.path("new").is_dir()


def test_clean_removes_metadata_of_a_worktree_whose_directory_is_gone(repo: Repo) -> None:
    repo.meta("gone", status="merged", merged=True)
    path = repo.add("deleted")
    shutil.rmtree(path)  # git still lists it until pruned
    code, _, err = repo("worktree", "clean", "gone", "deleted", "-y")
    assert code == 0, err
    assert not repo.meta_file("gone").exists() and not repo.meta_file("deleted").exists()
    assert "prodigy-deleted" not in repo.branches()
    assert os.path.realpath(path) not in repo.worktrees()


def test_clean_not_a_repository(repo: Repo, tmp_path: Path) -> None:
    code, _, err = repo("worktree", "clean", "--all", "-y", cwd=tmp_path)
    assert code == 2 and "E4001" in err


# ---------------------------------------------------------------------------- mapreduce


def test_mapreduce_worktrees(repo: Repo) -> None:
    repo.add("s1")
    scope = "session-1234"
    repo.add("mapreduce-agent-1", scope=scope, kind="agent", job_id="mapreduce-1",
             session_id=scope, original_branch="prodigy-s1")
    repo.add("mapreduce-agent-2", scope="session-999", kind="agent", job_id="mapreduce-2",
             session_id="session-999", original_branch="prodigy-s1")
    code, out, _ = repo("worktree", "ls")
    assert set(_rows(out)) == {"s1"}
    code, out, _ = repo("worktree", "ls", "--mapreduce")
    assert set(_rows(out)) == {"s1", "mapreduce-agent-1", "mapreduce-agent-2"}

    with acquire_lock(repo.storage, "mapreduce-2"):  # job 2 is running
        code, out, err = repo("worktree", "clean", "--mapreduce", "-y")
        assert code == 0, err
        assert "Skipping mapreduce-agent-2: in use by a running session" in out
    assert not repo.path("mapreduce-agent-1", scope).exists()
    assert not (repo.home / "worktrees" / scope).exists()  # the empty scope is gone
    assert "prodigy-mapreduce-agent-1" not in repo.branches()
    assert repo.path("mapreduce-agent-2", "session-999").is_dir()
    assert repo.path("s1").is_dir()  # session worktrees are not --mapreduce's business

    code, out, err = repo("worktree", "clean", "--job-id", "mapreduce-2", "-y")
    assert code == 0, err
    assert not (repo.home / "worktrees" / "session-999").exists()
    assert repo.path("s1").is_dir()


# ----------------------------------------------------------------------- clean-orphaned


def test_clean_orphaned(repo: Repo, tmp_path: Path) -> None:
    live = repo.add("live")
    pruned = repo.add("pruned")
    shutil.rmtree(pruned)  # gone, but still registered with git
    stray = repo.path("stray")
    (stray / "sub").mkdir(parents=True)
    (stray / "sub" / "file.txt").write_text("x")
    repo.meta("no-dir", status="failed")
    repo.meta_file("corrupt").write_text("{")
    _init(tmp_path / "other" / "shop")
    other = Repo(tmp_path / "other" / "shop", repo.home)
    theirs = other.add("theirs")  # same repository name, different repository

    code, out, err = repo("worktree", "clean-orphaned", "--dry-run")
    assert code == 0, err
    assert f"Would remove directory {stray}" in out
    assert f"Would remove metadata {repo.meta_file('no-dir')}" in out
    assert f"Would remove metadata {repo.meta_file('corrupt')}" in out
    assert f"Keeping {theirs}: it belongs to the repository at" in out
    assert stray.exists() and os.path.realpath(pruned) in repo.worktrees()

    code, _, err = repo("worktree", "clean-orphaned")
    assert code == 2 and "use --yes to confirm" in err and stray.exists()

    code, out, err = repo("worktree", "clean-orphaned", "-f")
    assert code == 0, err
    assert not stray.exists()
    assert not repo.meta_file("no-dir").exists() and not repo.meta_file("corrupt").exists()
    # the metadata of `pruned` refers to a directory that is gone: removed as well
    assert not repo.meta_file("pruned").exists()
    assert os.path.realpath(pruned) not in repo.worktrees()  # git worktree prune ran
    assert live.is_dir() and repo.meta_file("live").exists()
    assert theirs.is_dir() and os.path.realpath(theirs) in other.worktrees()
    assert "prodigy-pruned" in repo.branches()  # branches are not clean-orphaned's business

    code, out, _ = repo("worktree", "clean-orphaned", "-f")
    assert code == 0 and "No orphaned worktrees found." in out


# ------------------------------------------------------------------------ other commands


def test_worktree_needs_a_subcommand(repo: Repo) -> None:
    code, _, err = repo("worktree")
    assert code == 2 and "needs a subcommand" in err


def test_merge_needs_a_name_or_all_and_an_existing_worktree(repo: Repo) -> None:
    code, out, err = repo("worktree", "merge")
    assert code == 2 and "error[E8001]: name a worktree to merge, or use --all" in err
    code, out, err = repo("worktree", "merge", "x")
    assert code == 2 and out == ""
    assert "error[E4006]: no session worktree named 'x'" in err
    code, out, err = repo("worktree", "merge", "--all")
    assert code == 0 and "No session worktrees to merge." in out


# ----------------------------------------------------------------------- library helpers


def test_metadata_documents(repo: Repo) -> None:
    repo.meta("a", status="failed")
    path = repo.meta_file("a")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(path.read_text())["status"] == "failed"
    (path.parent / "b.json").write_text("[1]")
    (path.parent / "c.json").write_text(json.dumps({"status": "merged"}))
    docs = read_all_meta(repo.storage, repo.name)
    assert [d["worktree_name"] for d in docs] == ["a", "c"]
    assert any("b.json" in w and w.startswith("W5003") for w in repo.storage.warnings)
    assert remove_meta(repo.storage, repo.name, "a") and not path.exists()
    assert not remove_meta(repo.storage, repo.name, "a")
    with pytest.raises(ValueError):
        save_meta(repo.storage, repo.name, {"worktree_name": "../escape"})


def test_git_helpers(repo: Repo) -> None:
    path = repo.add("h", commits=2)
    root = str(repo.root)
    assert ahead_count(root, "prodigy-h", "main") == 2
    assert ahead_count(root, "main", "prodigy-h") == 0
    assert ahead_count(root, "no-such-branch", "main") is None
    assert is_merged(root, "main", "prodigy-h") and not is_merged(root, "prodigy-h", "main")
    assert uncommitted_count(path) == 0 and not has_uncommitted(path)
    (path / "new.txt").write_text("untracked\n")
    assert uncommitted_count(path) == 1 and has_uncommitted(path)
    assert has_uncommitted(repo.home / "nowhere")  # unknown counts as dirty


def test_remove_worktree_reports_failures_as_w4005(repo: Repo) -> None:
    plain = repo.path("plain")
    plain.mkdir(parents=True)
    result = remove_worktree(repo.storage, repo.name, str(repo.root), plain, None,
                             force=False, delete_branch=False)
    assert not result.removed and plain.is_dir()
    assert result.warnings and result.warnings[0].startswith(f"W4005: could not remove "
                                                             f"worktree {plain}: ")
    path = repo.add("dirty", dirty=True)
    result = remove_worktree(repo.storage, repo.name, str(repo.root), path, "prodigy-dirty",
                             force=False, delete_branch=True)
    assert not result.removed and not result.branch_deleted and path.is_dir()
    assert "prodigy-dirty" in repo.branches()
    # -d refuses an unmerged branch; the worktree is still removed
    path = repo.add("ahead", commits=1)
    result = remove_worktree(repo.storage, repo.name, str(repo.root), path, "prodigy-ahead",
                             force=False, delete_branch=True, merged_into="main")
    assert result.removed and not result.branch_deleted and not path.exists()
    assert "prodigy-ahead" in repo.branches() and "W4005" in result.warnings[0]
    # a branch merged into its target (not into the root's HEAD) goes with -D
    path = repo.add("side", commits=1)
    git(repo.root, "branch", "target", "prodigy-side")
    result = remove_worktree(repo.storage, repo.name, str(repo.root), path, "prodigy-side",
                             force=False, delete_branch=True, merged_into="target")
    assert result.removed and result.branch_deleted and result.warnings == ()
