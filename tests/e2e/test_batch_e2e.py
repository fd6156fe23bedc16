"""`prodigy batch` end to end (spec 08 §2.3): one command over the tracked files that match
a pattern, as a MapReduce job in a real repository, merged automatically."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from io import StringIO
from pathlib import Path

import pytest

from prodigy_cli import cmd_batch
from prodigy_cli.main import main
from tests.e2e.conftest import Project

COMMIT_EACH = "echo done >> ${item}.log && git add -A && git commit -qm ${item}"


def _seen(path: Path) -> list[str]:
    return sorted(path.read_text().splitlines()) if path.exists() else []


def test_batch_runs_the_command_on_each_matching_file_and_merges(project: Project) -> None:
    project.write("a.py", "a\n")
    project.write("sub/b.py", "b\n")
    project.write("c.txt", "c\n")
    project.commit()
    result = project.run("batch", "*.py", "--command", COMMIT_EACH, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Executing command on 2 file(s) matching *.py" in result.stdout
    assert "Map phase completed: 2 successful, 0 failed (total: 2)" in result.stdout
    assert "Worktree changes merged successfully!" in result.stdout  # -y is implied
    # both .py files were processed and their logs merged into the user's checkout
    assert (project.root / "a.py.log").read_text() == "done\n"
    assert (project.root / "sub" / "b.py.log").read_text() == "done\n"
    assert not (project.root / "c.txt.log").exists()
    subjects = project.git("log", "--format=%s").splitlines()
    assert "a.py" in subjects and "sub/b.py" in subjects
    assert project.git("status", "--porcelain") == ""
    # the generated workflow carries the items; nothing was written to the repository
    [session] = project.sessions()
    assert session["status"] == "Completed"


def test_a_pattern_with_a_slash_matches_repository_paths(project: Project,
                                                         tmp_path: Path) -> None:
    for name in ("src/x.ts", "src/deep/er/y.ts", "src/w.js", "other/z.ts", "x.ts"):
        project.write(name, "t\n")
    project.commit()
    seen = tmp_path / "seen.txt"
    result = project.run("batch", "src/**/*.ts", "--command", f"echo ${{item}} >> {seen}",
                         "--parallel", "2", timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert _seen(seen) == ["src/deep/er/y.ts", "src/x.ts"]
    seen.unlink()
    # `*` does not cross directories, and no directory rule applies
    result = project.run("batch", "src/*", "--command", f"echo ${{item}} >> {seen}",
                         timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert _seen(seen) == ["src/w.js", "src/x.ts"]


def test_only_files_committed_at_head_are_items(project: Project, tmp_path: Path) -> None:
    project.write("kept.md", "k\n")
    project.commit()
    project.write("new.md", "uncommitted\n")
    seen = tmp_path / "seen.txt"
    result = project.run("batch", "*.md", "--command", f"echo ${{item}} >> {seen}",
                         timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert _seen(seen) == ["README.md", "kept.md"]


def test_items_are_repository_paths_also_from_a_subdirectory(project: Project,
                                                             tmp_path: Path) -> None:
    project.write("a.py", "a\n")
    project.write("sub/b.py", "b\n")
    project.commit()
    seen = tmp_path / "seen.txt"
    result = project.run("batch", "*.py", "-p", "sub", "--command", f"cat ${{item}} >> {seen}",
                         timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert _seen(seen) == ["a", "b"]  # agents run at the worktree root, where the paths resolve


def test_no_matching_files_is_not_an_error(project: Project) -> None:
    result = project.run("batch", "*.rs", "--command", "false")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "No files match *.rs"
    assert project.sessions() == []
    as_json = project.run("batch", "*.rs", "--command", "false", "--json")
    assert as_json.returncode == 0
    doc = json.loads(as_json.stdout)  # exactly one document
    assert doc["status"] == "completed" and doc["items"]["total"] == 0
    assert "No files match *.rs" in as_json.stderr


def test_the_item_is_appended_when_the_command_does_not_use_it(project: Project,
                                                                tmp_path: Path) -> None:
    # names the shell and the interpolation must both leave alone
    odd = "it's $HOME x.py"
    project.write(odd, "o\n")
    project.write("a.py", "a\n")
    project.commit()
    seen = tmp_path / "seen.txt"
    result = project.run("batch", "*.py", "--command", f"echo seen >> {seen}", timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert _seen(seen) == ["seen a.py", f"seen {odd}"]


def test_json_prints_exactly_one_document(project: Project) -> None:
    project.write("a.py", "a\n")
    project.write("sub/b.py", "b\n")
    project.commit()
    result = project.run("batch", "*.py", "--command", COMMIT_EACH, "--json", timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    doc = json.loads(result.stdout)
    assert doc["status"] == "completed" and doc["exit_code"] == 0
    assert doc["job_id"].startswith("mapreduce-")
    assert doc["items"] == {"total": 2, "successful": 2, "failed": 0, "pending": 0}
    assert doc["merge"]["merged"] is True
    assert "Executing command on 2 file(s)" in result.stderr


def test_retry_and_failures(project: Project, tmp_path: Path) -> None:
    project.write("a.py", "a\n")
    project.write("b.py", "b\n")
    project.commit()
    tries = tmp_path / "tries"
    # the first attempt of each item fails, the second succeeds
    command = f"echo ${{item}} >> {tries} && test $(grep -c -x ${{item}} {tries}) -ge 2"
    result = project.run("batch", "*.py", "--command", command, "--retry", "2", timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert sorted(tries.read_text().splitlines()) == ["a.py", "a.py", "b.py", "b.py"]
    # without retries one of them fails: exit 3 (completed with failures)
    failing = project.run("batch", "*.py", "--command", "test ${item} = a.py", timeout=120)
    assert failing.returncode == 3, failing.stdout + failing.stderr
    assert "Map phase completed: 1 successful, 1 failed (total: 2)" in failing.stdout


@pytest.mark.parametrize("argv", [
    ["batch", "*.py"],                                     # --command is required
    ["batch", "--command", "true"],                        # the pattern is required
    ["batch", "*.py", "--command", "true", "--parallel", "0"],
    ["batch", "*.py", "--command", "true", "--retry", "0"],
])
def test_usage_errors(project: Project, argv: list[str]) -> None:
    result = project.run(*argv)
    assert result.returncode == 2, result.stdout + result.stderr


def test_a_long_item_list_is_printed_from_the_pinned_commit(
        project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Past the size one shell argument may have, the input command re-lists the files of
    the commit the batch started from (`python -P -m prodigy_effects.batch_items`)."""
    project.write("a.py", "a\n")
    project.write("sub dir/b.py", "b\n")
    project.commit()
    head = project.git("rev-parse", "HEAD").strip()
    listed = subprocess.run([sys.executable, "-P", "-m", "prodigy_effects.batch_items", head,
                             "*.py"], cwd=project.root, capture_output=True, text=True,
                            check=True, env=project.env)
    assert json.loads(listed.stdout) == ["a.py", "sub dir/b.py"]
    command = cmd_batch.batch_input(["a.py", "sub dir/b.py"], commit=head, pattern="*.py",
                                    limit=10)
    assert "prodigy_effects.batch_items" in command and head in command
    # a whole run in-process with the limit lowered
    monkeypatch.setattr(cmd_batch, "INLINE_LIMIT", 10)
    seen = tmp_path / "seen.txt"
    out, err = StringIO(), StringIO()
    environ = {**os.environ, **project.env}
    code = main(["batch", "*.py", "--command", f"echo ${{item}} >> {seen}"], out=out, err=err,
                environ=environ, cwd=str(project.root))
    assert code == 0, out.getvalue() + err.getvalue()
    assert _seen(seen) == ["a.py", "sub dir/b.py"]


def test_the_generated_workflow() -> None:
    text = cmd_batch.batch_workflow("/add-hints", "printf x", parallel=3, retry=2,
                                    timeout="10m")
    doc = json.loads(text)
    assert doc["mode"] == "mapreduce" and "reduce" not in doc and "setup" not in doc
    assert doc["map"] == {"input": "printf x", "max_parallel": 3, "agent_timeout_secs": "10m",
                          "agent_template": [{"claude": "/add-hints ${item}",
                                              "retry": {"attempts": 2}}]}
    shell = json.loads(cmd_batch.batch_workflow("shell: wc -l ${item} | tee x", "i",
                                                parallel=5, retry=1, timeout=None))
    assert shell["map"]["agent_template"] == [{"shell": "wc -l ${item} | tee x"}]
    assert "agent_timeout_secs" not in shell["map"]
    # `$` in the paths is doubled, so the interpolation of `input` gives it back unchanged
    command = cmd_batch.batch_input(["$x.py", "a'b.py"], commit="c", pattern="*.py")
    assert command == "printf '%s\\n' '[\"$$x.py\", \"a'\"'\"'b.py\"]'"
