"""Every workflow in examples/ validates and runs (the README points newcomers there)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.e2e.conftest import Project

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.yml"))


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_validates_and_runs(project: Project, example: Path) -> None:
    shutil.copy(example, project.root / example.name)
    project.commit()
    assert project.run("validate", example.name).returncode == 0
    out = project.run("run", example.name, "-y")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Workflow completed successfully" in out.stdout
