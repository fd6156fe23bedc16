"""Commits end to end: ``commit_required``, ``auto_commit``, ``commit_config``, ``outputs``.

The installed ``prodigy`` runs in a real git repository (spec 02 §12, §13; the numbers
are spec 02 §16 examples).  Every workflow file is git-ignored so that only what the
steps do shows up in the repository.  The steps run in the session worktree (spec 06 §3):
the tests look at its branch, or pass ``-y`` and look at what was merged into the checkout.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.conftest import Project

pytestmark = pytest.mark.e2e


def git(project: Project, *args: str, cwd: Path | None = None) -> str:
    return project.git(*args, cwd=cwd)


def head(project: Project, cwd: Path | None = None) -> str:
    return git(project, "rev-parse", "HEAD", cwd=cwd).strip()


def new_commits(project: Project, since: str, cwd: Path | None = None) -> list[str]:
    return git(project, "rev-list", "--reverse", f"{since}..HEAD", cwd=cwd).split()


def files_of(project: Project, sha: str) -> list[str]:
    return git(project, "show", "--name-only", "--format=", sha).split()


def message_of(project: Project, sha: str) -> str:
    return git(project, "log", "-1", "--format=%B", sha).strip()


@pytest.fixture
def repo(project: Project) -> Project:
    project.write(".gitignore", "*.yml\n")
    git(project, "add", ".gitignore")
    git(project, "commit", "-qm", "ignore workflow files")
    return project


def test_08_commit_required_without_a_commit_fails(repo: Project) -> None:
    repo.write("wf.yml", "- {shell: 'true', commit_required: true}\n")
    out = repo.run("run", "wf.yml")
    assert out.returncode == 1
    assert "error[E3003]: Step 'shell: true' has commit_required=true but no commits were " \
        "created" in out.stderr


def test_09_auto_commit_makes_the_required_commit(repo: Project) -> None:
    start = head(repo)
    repo.write("wf.yml", "- {shell: 'date > d.txt', auto_commit: true, commit_required: true}\n")
    out = repo.run("run", "wf.yml", "-y")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Worktree changes merged successfully!" in out.stdout
    worktree = repo.worktree(out)
    # the session branch came back in one merge commit ...
    assert message_of(repo, head(repo)) == f"Merge prodigy-{worktree.name} into {repo.branch()}"
    # ... holding exactly the one commit auto_commit made
    (sha,) = git(repo, "rev-list", "--no-merges", f"{start}..HEAD").split()
    assert files_of(repo, sha) == ["d.txt"]
    assert message_of(repo, sha) == "prodigy: shell: date > d.txt"
    # nothing was left uncommitted: the worktree was removed after the merge (spec 06 §7.8)
    assert not worktree.exists()
    assert git(repo, "status", "--porcelain") == ""
    assert (repo.root / "d.txt").is_file()


def test_15_outputs_feed_the_next_step(repo: Project) -> None:
    repo.write("wf.yml", "\n".join([
        "- id: s",
        "  shell: 'mkdir -p specs && echo x > specs/a.md && git add -A && git commit -qm s'",
        "  outputs: {f: {file_pattern: 'specs/*.md'}}",
        "- shell: 'cat ${s.f}'",
    ]) + "\n")
    out = repo.run("run", "wf.yml")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "    x\n" in out.stdout


def test_missing_output_fails_with_e3015(repo: Project) -> None:
    repo.write("wf.yml", "- id: spec\n  shell: 'echo x > notes.txt'\n"
                         "  outputs: {file: {file_pattern: 'specs/*.md'}}\n")
    out = repo.run("run", "wf.yml")
    assert out.returncode == 1
    assert "error[E3015]: step did not produce output 'file' matching specs/*.md" in out.stderr


def test_commit_config_exclude_author_and_template(repo: Project) -> None:
    start = head(repo)
    repo.write("wf.yml", "\n".join([
        "- shell: 'echo a > keep.txt && echo b > skip.tmp && mkdir -p sub "
        "&& echo c > sub/x.tmp && echo d >> README.md'",
        "  auto_commit: true",
        "  commit_config:",
        "    exclude_files: ['*.tmp']",
        "    author: 'Bot <bot@example.com>'",
        "    message_template: \"chore: ${ARG} $(touch pwned) 'q'\"",
    ]) + "\n")
    out = repo.run("run", "wf.yml", "--args", "it's")
    assert out.returncode == 0, out.stdout + out.stderr
    worktree = repo.worktree(out)
    (sha,) = new_commits(repo, start, cwd=worktree)
    assert sorted(files_of(repo, sha)) == ["README.md", "keep.txt"]
    assert message_of(repo, sha) == "chore: it's $(touch pwned) 'q'"
    assert git(repo, "log", "-1", "--format=%an <%ae>", cwd=worktree).strip() == \
        "Bot <bot@example.com>"
    assert not (worktree / "pwned").exists() and not (repo.root / "pwned").exists()
    status = git(repo, "status", "--porcelain", "--untracked-files=all", cwd=worktree)
    assert sorted(line[3:] for line in status.splitlines()) == ["skip.tmp", "sub/x.tmp"]
    # without -y and a terminal nothing is merged; the excluded files keep the worktree
    assert f"To merge later: prodigy worktree merge {worktree.name}" in out.stdout
    assert head(repo) == start


def test_message_pattern_violation_fails_with_e3014(repo: Project) -> None:
    repo.write("wf.yml", "\n".join([
        "- shell: 'git commit -q --allow-empty -m \"feat: ok\" && "
        "git commit -q --allow-empty -m wip'",
        "  commit_config: {message_pattern: '^feat'}",
    ]) + "\n")
    out = repo.run("run", "wf.yml")
    assert out.returncode == 1
    assert "E3014" in out.stderr and "has message 'wip'" in out.stderr
    assert "commit_config.message_pattern '^feat'" in out.stderr


def test_squash_replaces_the_new_commits(repo: Project) -> None:
    start = head(repo)
    repo.write("wf.yml", "\n".join([
        "- shell: 'echo 1 > a && git add a && git commit -qm \"feat: a\" && "
        "echo 2 > b && git add b && git commit -qm \"feat: b\"'",
        "  commit_config: {squash: true}",
    ]) + "\n")
    out = repo.run("run", "wf.yml")
    assert out.returncode == 0, out.stdout + out.stderr
    worktree = repo.worktree(out)
    (sha,) = new_commits(repo, start, cwd=worktree)
    assert message_of(repo, sha) == "feat: a"
    assert sorted(files_of(repo, sha)) == ["a", "b"]
    assert head(repo) == start  # not merged: no -y and no terminal


@pytest.mark.parametrize("workflow", [
    "- {shell: 'date > d.txt', auto_commit: true, commit_required: true}\n",
    "- id: s\n  shell: 'mkdir -p specs && echo x > specs/a.md && git add -A && git commit -qm s'\n"
    "  outputs: {f: {file_pattern: 'specs/*.md'}}\n- shell: 'cat ${s.f}'\n",
    "- shell: 'echo a > keep.txt'\n  auto_commit: true\n"
    "  commit_config: {exclude_files: ['*.tmp'], message_pattern: '^never', squash: true}\n",
], ids=["auto_commit", "outputs", "commit_config"])
def test_dry_run_creates_no_commit(repo: Project, workflow: str) -> None:
    start = head(repo)
    repo.write("wf.yml", workflow)
    out = repo.run("run", "wf.yml", "--dry-run")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Nothing was run (dry run)." in out.stdout
    assert not repo.worktrees_dir.exists()  # no session worktree, so no commit anywhere
    assert head(repo) == start
    assert git(repo, "status", "--porcelain", "--untracked-files=all") == ""


def test_no_commit_validation_env_disables_the_check(repo: Project) -> None:
    repo.write("wf.yml", "- {shell: 'true', commit_required: true}\n"
                         "- {shell: 'true', commit_required: true}\n")
    env = dict(repo.env, PRODIGY_NO_COMMIT_VALIDATION="true")
    out = repo.run("run", "wf.yml", env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stderr.count("commit_required checks are disabled") == 1
