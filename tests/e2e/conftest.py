"""End-to-end fixtures: the installed `prodigy` in real git repositories in temp dirs."""

from __future__ import annotations

import json
import os
import re
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

    def git(self, *args: str, cwd: Path | None = None) -> str:
        """Run git in the project (or in `cwd`, e.g. a session worktree); return stdout."""
        out = subprocess.run(["git", *args], cwd=cwd or self.root, check=True,
                             capture_output=True, text=True)
        return out.stdout

    def commit(self, message: str = "test files") -> str:
        """Commit everything in the checkout (a run starts from HEAD: uncommitted files are
        not in its session worktree); return the new HEAD."""
        self.git("add", "-A")
        self.git("commit", "-qm", message)
        return self.git("rev-parse", "HEAD").strip()

    def branch(self) -> str:
        return self.git("symbolic-ref", "--short", "HEAD").strip()

    @property
    def worktrees_dir(self) -> Path:
        """Where session worktrees of this repository live (spec 06 §3.1)."""
        return self.home / "worktrees" / self.root.name

    @staticmethod
    def worktree(out: subprocess.CompletedProcess[str] | str) -> Path:
        """The session worktree a `prodigy run` announced with `Created worktree at:`."""
        text = out if isinstance(out, str) else out.stdout + out.stderr
        paths = re.findall(r"^Created worktree at: (.+)$", text, re.MULTILINE)
        assert len(paths) == 1, text
        return Path(paths[0])

    def session_worktree(self, session_id: str) -> Path:
        """The session worktree recorded in the session (also after a resume)."""
        out = self.run("sessions", "show", session_id, "--json")
        assert out.returncode == 0, out.stderr
        return Path(json.loads(out.stdout)["worktree"]["path"])

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
