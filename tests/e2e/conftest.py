"""End-to-end fixtures: the installed `prodigy` in real git repositories in temp dirs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest

COMPAT = Path(__file__).resolve().parents[2].parent / "shared" / "compat" / "original-examples"


def prodigy_argv() -> list[str]:
    exe = shutil.which("prodigy")
    return [exe] if exe else [sys.executable, "-m", "prodigy_cli"]


@attrs.define
class Project:
    root: Path
    home: Path

    @property
    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PRODIGY_HOME"] = str(self.home)
        env.pop("PRODIGY_PROFILE", None)
        env.pop("PRODIGY_ARG", None)
        return env

    def write(self, name: str, text: str) -> Path:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        return path

    def run(self, *args: str, timeout: float = 60, env: dict[str, str] | None = None,
            input: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*prodigy_argv(), *args], cwd=self.root, env=env or self.env,
                              capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL if input is None else None,
                              input=input)

    def popen(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen([*prodigy_argv(), *args], cwd=self.root, env=self.env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                stdin=subprocess.DEVNULL)

    def sessions(self) -> list[dict[str, Any]]:
        out = self.run("sessions", "ls", "--json")
        assert out.returncode == 0, out.stderr
        docs: list[dict[str, Any]] = json.loads(out.stdout)
        return docs

    def storage_files(self) -> list[Path]:
        return sorted(p for p in self.home.rglob("*") if p.is_file()) if self.home.exists() \
            else []


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Project]:
    root = tmp_path / "repo"
    root.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    subprocess.run(["git", "config", "user.email", "t@example.com"], cwd=root, check=True)
    subprocess.run(["git", "config", "user.name", "Test"], cwd=root, check=True)
    (root / "README.md").write_text("demo\n")
    subprocess.run(["git", "add", "-A"], cwd=root, check=True)
    subprocess.run(["git", "commit", "-qm", "init"], cwd=root, check=True)
    yield Project(root=root, home=tmp_path / "home")
