"""Git state read without running git (fewer processes per agent), checked against git."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from prodigy_effects import gitobjects
from prodigy_effects.worktrees import _merged_head, agent_work, loose_head, loose_parents
from tests.effects._git import git


def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    git(root, "config", "user.email", "t@example.com")
    git(root, "config", "user.name", "T")
    git(root, "commit", "-q", "--allow-empty", "-m", "one")
    return root


def test_loose_head_agrees_with_git_or_gives_up(tmp_path: Path) -> None:
    root = repo(tmp_path)
    wt = tmp_path / "wt"
    git(root, "worktree", "add", "-q", "-B", "agent", str(wt), "HEAD")
    assert loose_head(str(root)) == git(root, "rev-parse", "HEAD")
    git(wt, "commit", "-q", "--allow-empty", "-m", "two")
    assert loose_head(str(wt)) == git(wt, "rev-parse", "HEAD") != loose_head(str(root))
    git(root, "pack-refs", "--all")  # refs only in packed-refs: ask git instead
    assert loose_head(str(wt)) is None
    git(wt, "checkout", "-q", "--detach")
    assert loose_head(str(wt)) is None
    assert loose_head(str(tmp_path / "nowhere")) is None


def test_merged_head_is_the_merge_commit_or_a_verified_ancestor(tmp_path: Path) -> None:
    root = repo(tmp_path)
    git(root, "checkout", "-q", "-b", "topic")
    git(root, "commit", "-q", "--allow-empty", "-m", "topic work")
    git(root, "checkout", "-q", "main")
    git(root, "merge", "-q", "--no-ff", "-m", "merge", "topic")
    assert trio.run(_merged_head, str(root), "topic") == git(root, "rev-parse", "HEAD")
    # already merged: no new merge commit, but the source is an ancestor
    git(root, "commit", "-q", "--allow-empty", "-m", "later")
    assert trio.run(_merged_head, str(root), "topic") == git(root, "rev-parse", "HEAD")


def test_agent_work_agrees_with_rev_list_and_diff(tmp_path: Path) -> None:
    root = repo(tmp_path)
    base = git(root, "rev-parse", "HEAD")
    script = {
        "none": "git branch none",
        "one": "git checkout -q -b one && echo x > 'a b.txt' && mkdir d && echo y > d/c && "
               "git add -A && git commit -qm one",
        "empty": "git checkout -q -b empty && git commit -q --allow-empty -m e",
        "two": "git checkout -q -b two && echo x > f && git add f && git commit -qm 1 && "
               "git rm -q f && echo z > g && git add g && git commit -qm 2",
        "merged": "git checkout -q -b side && echo s > s && git add s && git commit -qm s && "
                  "git checkout -q -b merged main && echo m > m && git add m && "
                  "git commit -qm m && git merge -q --no-ff -m mm side",
        "newline": "git checkout -q -b newline && printf x > \"$(printf 'new\\nline')\" && "
                   "git add -A && git commit -qm nl",
    }
    for command in script.values():
        subprocess.run(command + " && git checkout -q main", shell=True, cwd=root, check=True,
                       capture_output=True)
    for branch in script:
        listed = tuple(git(root, "rev-list", "--reverse", f"{base}..refs/heads/{branch}")
                       .split())
        names = subprocess.run(["git", "diff", "--name-only", "-z", base,
                                f"refs/heads/{branch}", "--"], cwd=root, check=True,
                               capture_output=True, text=True).stdout
        expected = (listed, tuple(sorted(n for n in names.split("\0") if n)) if listed else ())
        assert trio.run(agent_work, str(root), base, branch) == expected, branch
    # "two" changed f and then removed it: only g is the branch's change
    assert trio.run(agent_work, str(root), base, "two")[1] == ("g",)
    assert trio.run(agent_work, str(root), base, "missing") == ((), ())


def test_the_checkout_read_from_files_matches_git_in_every_kind_of_repository(
        tmp_path: Path) -> None:
    from prodigy_effects.runner import git_checkout

    root = repo(tmp_path)
    (root / "sub").mkdir()
    linked = tmp_path / "linked"
    git(root, "worktree", "add", "-q", "-b", "side", str(linked))
    detached = tmp_path / "detached"
    git(root, "worktree", "add", "-q", "--detach", str(detached))
    packed = tmp_path / "packed"
    subprocess.run(["git", "clone", "-q", str(root), str(packed)], check=True)
    git(packed, "pack-refs", "--all")
    for where, branch in ((root, "main"), (root / "sub", "main"), (linked, "side"),
                          (detached, "main"), (packed, "main")):  # detached: the default
        found = git_checkout(where)
        assert found.head == git(where, "rev-parse", "HEAD"), where
        assert found.branch == branch, where
        assert found.top == git(where, "rev-parse", "--show-toplevel"), where
    assert git_checkout(linked).root == str(root.resolve())


def test_loose_parents_agree_with_git_or_give_up(tmp_path: Path) -> None:
    root = repo(tmp_path)
    git(root, "checkout", "-q", "-b", "topic")
    git(root, "commit", "-q", "--allow-empty", "-m", "topic work")
    git(root, "checkout", "-q", "main")
    git(root, "merge", "-q", "--no-ff", "-m", "merge", "topic")
    head = git(root, "rev-parse", "HEAD")
    assert loose_parents(str(root), head) == tuple(git(root, "rev-parse", "HEAD^1",
                                                       "HEAD^2").split())
    first = git(root, "rev-list", "--max-parents=0", "HEAD")
    assert loose_parents(str(root), first) == ()
    tree = git(root, "rev-parse", "HEAD^{tree}")
    assert loose_parents(str(root), tree) is None  # not a commit
    git(root, "gc", "-q")  # everything packed: ask git
    assert loose_parents(str(root), head) is None


# --- the commits and files of an agent branch, read from loose objects ---------------

# one change to the working tree of a branch: (kind, path, content)
CHANGE = st.tuples(
    st.sampled_from(["write", "write", "remove", "chmod", "link", "mkdir"]),
    st.sampled_from(["a", "b.txt", "d/c", "d/e/f", "d/e/g h", "x/y"]),
    st.sampled_from(["1", "2", "3"]),
)


def _apply(root: Path, kind: str, path: str, content: str) -> None:
    target = root / path
    if kind == "remove":
        if target.is_file() or target.is_symlink():
            target.unlink()
        return
    if kind == "mkdir":  # a file becomes a directory (or a directory gains a file)
        if target.is_file() or target.is_symlink():
            target.unlink()
        target.mkdir(parents=True, exist_ok=True)
        (target / "inner").write_text(content)
        return
    if target.is_dir():
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    if kind == "link":
        if target.exists() or target.is_symlink():
            target.unlink()
        target.symlink_to(content)
    elif kind == "chmod" and target.is_file() and not target.is_symlink():
        target.chmod(target.stat().st_mode ^ 0o111)
    elif kind in ("write", "chmod"):
        target.write_text(content)


@settings(max_examples=25, deadline=None)
@given(commits=st.lists(st.lists(CHANGE, min_size=0, max_size=4), min_size=1, max_size=3))
def test_branch_work_from_loose_objects_agrees_with_git(tmp_path_factory: Any,
                                                        commits: list[Any]) -> None:
    root = repo(tmp_path_factory.mktemp("bw"))
    (root / "d").mkdir()
    (root / "d" / "c").write_text("0")
    (root / "a").write_text("0")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "base")
    base = git(root, "rev-parse", "HEAD")
    git(root, "checkout", "-q", "-b", "agent")
    for changes in commits:
        for change in changes:
            _apply(root, *change)
        git(root, "add", "-A")
        git(root, "commit", "-q", "--allow-empty", "-m", "work")
    listed = tuple(git(root, "rev-list", "--reverse", f"{base}..refs/heads/agent").split())
    names = subprocess.run(["git", "diff", "--name-only", "-z", base, "refs/heads/agent",
                            "--"], cwd=root, check=True, capture_output=True,
                           text=True).stdout
    expected = (listed, tuple(sorted(n for n in names.split("\0") if n)))
    known = gitobjects.branch_work(str(root / ".git"), base, "agent")
    assert known is None or known == expected
    assert trio.run(agent_work, str(root), base, "agent") == expected


def test_branch_work_reads_the_usual_agent_branch_and_gives_up_on_the_rest(
        tmp_path: Path) -> None:
    root = repo(tmp_path)
    base = git(root, "rev-parse", "HEAD")
    common = str(root / ".git")
    git(root, "checkout", "-q", "-b", "agent")
    (root / "src").mkdir()
    (root / "src" / "new.py").write_text("x")
    (root / "out.txt").write_text("y")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "one")
    one = git(root, "rev-parse", "HEAD")
    assert gitobjects.branch_work(common, base, "agent") == ((one,), ("out.txt",
                                                                       "src/new.py"))
    assert gitobjects.branch_work(common, one, "agent") == ((), ())
    (root / "out.txt").unlink()
    (root / "moved.txt").write_text("y")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "a rename, maybe")
    assert gitobjects.branch_work(common, one, "agent") is None  # git decides renames
    assert trio.run(agent_work, str(root), one, "agent")[1] == ("moved.txt",)  # renamed
    assert gitobjects.branch_work(common, base, "agent")[1] == ("moved.txt", "src/new.py")
    assert gitobjects.branch_work(common, base, "nothing") is None  # no loose ref
    git(root, "gc", "-q")  # packed: ask git
    assert gitobjects.branch_work(common, base, "agent") is None
    assert trio.run(agent_work, str(root), base, "agent")[1] == ("moved.txt", "src/new.py")


def test_a_missing_or_old_git_is_refused_clearly(tmp_path: Path, monkeypatch: Any) -> None:
    """git's version is only asked when `rev-parse --path-format` (git 2.31) fails."""
    from prodigy_effects.runner import RunError, git_checkout

    root = repo(tmp_path)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", str(bin_dir))  # no git at all
    try:
        git_checkout(root)
        raise AssertionError("no error without git")
    except RunError as error:
        assert error.code == "E4001" and "not installed" in error.message
    old = bin_dir / "git"
    old.write_text("#!/bin/sh\n[ \"$1\" = --version ] && echo 'git version 2.20.1' && "
                   "exit 0\necho \"unknown option\" >&2; exit 129\n")
    old.chmod(0o755)
    try:
        git_checkout(root)
        raise AssertionError("no error with git 2.20")
    except RunError as error:
        assert error.code == "E4001" and "2.20.1 is too old" in error.message


def test_a_submodule_change_is_left_to_git(tmp_path: Path) -> None:
    """git may leave gitlinks out (diff.ignoreSubmodules): the files cannot say."""
    root = repo(tmp_path)
    base = git(root, "rev-parse", "HEAD")
    git(root, "checkout", "-q", "-b", "agent")
    git(root, "update-index", "--add", "--cacheinfo", f"160000,{base},sm")
    git(root, "commit", "-q", "-m", "a gitlink")
    assert gitobjects.branch_work(str(root / ".git"), base, "agent") is None
    git(root, "config", "diff.ignoreSubmodules", "all")
    assert trio.run(agent_work, str(root), base, "agent")[1] == ()


def test_a_missing_project_directory_is_a_clear_error(tmp_path: Path) -> None:
    from prodigy_effects.runner import RunError, git_checkout

    try:
        git_checkout(tmp_path / "gone")
        raise AssertionError("no error")
    except RunError as error:
        assert error.code == "E4001" and "does not exist" in error.message
