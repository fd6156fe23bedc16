"""Git context variables end to end (spec 03 §7, acceptance example 13).

The installed ``prodigy`` runs in a real git repository.  The assertions are on what the
steps printed (the run may execute in a session worktree, so files in the project
directory prove nothing).
"""

from __future__ import annotations

import subprocess

import pytest

from tests.e2e.conftest import Project

pytestmark = pytest.mark.e2e

WORKFLOW = """\
- shell: "printf '# a\\\\n' > a.md && printf 'b\\\\n' > b.txt && git add a.md b.txt && git commit -qm 'add a and b'"
- shell: "echo md=${step.files_added:*.md}"
- shell: "echo count=${workflow.commit_count}"
- shell: "echo \\"all=[${step.files_added}] n=${step.commit_count} lines=${step.insertions}\\""
"""


@pytest.fixture
def repo(project: Project) -> Project:
    project.write(".gitignore", "*.yml\n")
    subprocess.run(["git", "add", ".gitignore"], cwd=project.root, check=True)
    subprocess.run(["git", "commit", "-qm", "ignore workflow files"], cwd=project.root,
                   check=True)
    return project


def test_step_and_workflow_variables(repo: Project) -> None:
    repo.write("wf.yml", WORKFLOW)
    out = repo.run("run", "wf.yml")
    assert out.returncode == 0, out.stderr
    lines = [line.strip() for line in out.stdout.splitlines()]
    assert "md=a.md" in lines
    assert "count=1" in lines
    # step 3 made no change: step.* now describe it
    assert "all=[] n=0 lines=0" in lines


def test_dry_run_shows_the_references(repo: Project) -> None:
    repo.write("wf.yml", WORKFLOW)
    out = repo.run("run", "wf.yml", "--dry-run")
    assert out.returncode == 0, out.stderr
    assert "echo md=${step.files_added:*.md}" in out.stdout
    assert "echo count=${workflow.commit_count}" in out.stdout
