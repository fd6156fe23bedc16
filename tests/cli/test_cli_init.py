"""`prodigy init` (spec 08 §2.8), run in-process in temporary directories."""

from __future__ import annotations

import io
import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from prodigy_cli.cmd_init import bundled_templates
from prodigy_cli.main import main
from tests.fakeapi import text
from tests.fakeapi.cli import init_git_repo
from tests.fakeapi.fixtures import FakeAnthropicFixture

REQUIRED = ("prodigy-merge-worktree", "prodigy-resolve-conflicts")


def prodigy(cwd: Path, *argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    environ = dict(os.environ, PRODIGY_HOME=str(cwd / ".prodigy-home-unused"))
    code = main(list(argv), out=out, err=err, environ=environ, cwd=str(cwd),
                stdin=io.StringIO(""))
    assert "Traceback" not in err.getvalue()
    return code, out.getvalue(), err.getvalue()


def installed(project: Path) -> set[str]:
    return {p.name for p in (project / ".claude" / "commands").glob("*.md")}


def test_bundled_templates_are_slash_commands() -> None:
    templates = {t.name: t.content for t in bundled_templates()}
    assert set(REQUIRED) <= set(templates)
    assert len(templates) >= 4
    for name, body in templates.items():
        front = re.match(r"---\n(.*?)\n---\n", body, re.DOTALL)
        assert front, f"{name}: no YAML front matter"
        meta = yaml.safe_load(front.group(1))
        assert isinstance(meta, dict) and meta.get("description"), name
        assert "argument-hint" in meta, name
        assert "$ARGUMENTS" in body, name
    merge = templates["prodigy-merge-worktree"]
    assert "git worktree list --porcelain" in merge
    assert "--no-ff" in merge and "merge-base --is-ancestor" in merge
    resolve = templates["prodigy-resolve-conflicts"]
    assert "MERGE_HEAD" in resolve and "git commit --no-edit" in resolve
    assert "--diff-filter=U" in resolve


def test_fresh_directory_is_git_inited_and_gets_every_command(tmp_path: Path) -> None:
    project = tmp_path / "fresh"
    project.mkdir()
    code, out, err = prodigy(project, "init")
    assert code == 0, out + err
    assert f"Initializing Prodigy commands in: {project.resolve()}" in out
    assert (project / ".git").is_dir()
    names = {t.name for t in bundled_templates()}
    assert installed(project) == {f"{n}.md" for n in names}
    for name in names:
        assert f"Installed command: {name}" in out
    assert ".claude/commands" in out and "commit" in out.lower()
    shipped = {t.name: t.content for t in bundled_templates()}
    text = (project / ".claude" / "commands" / "prodigy-merge-worktree.md").read_text()
    assert text == shipped["prodigy-merge-worktree"]


def test_existing_repository_is_not_reinitialised(tmp_path: Path) -> None:
    project = tmp_path / "repo"
    subprocess.run(["git", "init", "-q", str(project)], check=True)
    sub = project / "pkg"
    sub.mkdir()
    code, out, err = prodigy(tmp_path, "init", "-p", "repo/pkg", "-c", "prodigy-lint")
    assert code == 0, out + err
    assert not (sub / ".git").exists()
    assert installed(sub) == {"prodigy-lint.md"}
    assert f"Initializing Prodigy commands in: {sub.resolve()}" in out


def test_commands_subset(tmp_path: Path) -> None:
    code, out, err = prodigy(tmp_path, "init", "--commands",
                             "prodigy-merge-worktree, prodigy-resolve-conflicts.md")
    assert code == 0, out + err
    assert installed(tmp_path) == {"prodigy-merge-worktree.md", "prodigy-resolve-conflicts.md"}
    assert out.count("Installed command:") == 2


def test_existing_file_is_kept_without_force_and_overwritten_with_it(tmp_path: Path) -> None:
    commands = tmp_path / ".claude" / "commands"
    commands.mkdir(parents=True)
    mine = commands / "prodigy-lint.md"
    mine.write_text("my own lint command\n")
    code, out, err = prodigy(tmp_path, "init")
    assert code == 0, out + err
    assert "Command 'prodigy-lint' already exists. Use --force to overwrite." in out + err
    assert "Installed command: prodigy-lint" not in out
    assert "Installed command: prodigy-merge-worktree" in out
    assert mine.read_text() == "my own lint command\n"

    code, out, err = prodigy(tmp_path, "init", "-f", "-c", "prodigy-lint")
    assert code == 0, out + err
    assert "Installed command: prodigy-lint" in out
    assert "already exists" not in out + err
    assert mine.read_text() == {t.name: t.content for t in bundled_templates()}["prodigy-lint"]


@pytest.mark.parametrize("names", ["prodigy-nope", "prodigy-lint,nope", ","])
def test_unknown_command_name_is_a_usage_error(tmp_path: Path, names: str) -> None:
    code, _, err = prodigy(tmp_path, "init", "-c", names)
    assert code == 2
    assert "prodigy-merge-worktree" in err and "prodigy-resolve-conflicts" in err
    assert not (tmp_path / ".claude").exists()
    assert not (tmp_path / ".git").exists()


def test_missing_directory_is_a_usage_error(tmp_path: Path) -> None:
    code, _, err = prodigy(tmp_path, "init", "-p", "does-not-exist")
    assert code == 2
    assert "does-not-exist" in err


def test_installed_commands_are_slash_commands_of_the_real_cli(
        fake_anthropic: FakeAnthropicFixture, tmp_path: Path) -> None:
    """The real Claude Code CLI lists the installed files and expands them with $ARGUMENTS."""
    project = init_git_repo(tmp_path / "repo")
    code, out, err = prodigy(project, "init")
    assert code == 0, out + err
    fake_anthropic.script(text("merged"))
    run = fake_anthropic.run("/prodigy-merge-worktree prodigy-feature main", project)
    assert run.returncode == 0, run.describe()
    assert {t.name for t in bundled_templates()} <= set(run.init["slash_commands"])
    prompt = fake_anthropic.main_requests[0].last_user_text()
    assert "Arguments: `prodigy-feature main`" in prompt
    assert "git worktree list --porcelain" in prompt
    assert "argument-hint" not in prompt  # the front matter was parsed, not sent as text
